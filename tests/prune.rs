//! `s3bundler prune` on moto: a dry run deletes nothing; `--yes` deletes exactly the verified,
//! unchanged originals and logs them; objects overwritten since, objects in a DLQ and every
//! object of a manifest whose archive is damaged are kept; a second run deletes nothing more.

mod common;

use common::*;
use s3bundler::archive::records::parse_pruned;

async fn bundle(endpoint: &str, manifest: &str, arch: &str) -> serde_json::Value {
    let out = s3bundler(
        endpoint,
        &[
            "bundle", "-m", manifest, "-b", arch, "-p", "bundles", "-s", "2KiB", "--json",
        ],
    )
    .await;
    assert!(out.code == 0 || out.code == 1, "{out:?}");
    out.json()
}

async fn prune(endpoint: &str, arch: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    check_command(endpoint, "prune", arch, extra).await
}

#[tokio::test]
async fn prune_deletes_exactly_the_verified_unchanged_objects_once() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "psrc").await;
    let arch = new_bucket(&client, "parch").await;

    // Manifest a: six small objects, one overwritten later, one in the DLQ, one big copy.
    let mut a = Vec::new();
    for i in 0..6 {
        let key = format!("logs/a-{i}");
        put_object(&client, &src, &key, body(50 + i, i as u8)).await;
        a.push(entry(&src, &key, 50 + i as u64, None));
    }
    put_object(&client, &src, "logs/overwritten", body(40, 1)).await;
    a.push(entry(&src, "logs/overwritten", 40, None));
    put_object(&client, &src, "dlq/changed", body(10, 2)).await;
    a.push(entry(&src, "dlq/changed", 3, None));
    put_object(&client, &src, "big/copied.bin", body(3000, 3)).await;
    a.push(entry(&src, "big/copied.bin", 3000, None));
    let manifest_a = write_manifest(&client, &arch, "manifests/a-manifest.0.index", &a).await;
    // Manifest b: four objects whose archive gets damaged.
    let mut b = Vec::new();
    for i in 0..4 {
        let key = format!("other/b-{i}");
        put_object(&client, &src, &key, body(70, i as u8)).await;
        b.push(entry(&src, &key, 70, None));
    }
    let manifest_b = write_manifest(&client, &arch, "manifests/b-manifest.0.index", &b).await;

    let report_a = bundle(endpoint, &manifest_a, &arch).await;
    assert_eq!(report_a["failed"]["Changed"], 1, "{report_a}");
    assert_eq!(report_a["objects_copied"], 1, "{report_a}");
    let report_b = bundle(endpoint, &manifest_b, &arch).await;
    put_object(&client, &src, "logs/overwritten", body(40, 99)).await;
    let archive_b = report_b["archive"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{arch}/"))
        .to_string();
    let tar = get_object(&client, &arch, &archive_b).await;
    put_object(&client, &arch, &archive_b, tar[..tar.len() - 1536].to_vec()).await;
    let all = list_keys(&client, &src, "").await;
    assert_eq!(all.len(), 13);

    // Dry run: counts, nothing deleted.
    let (out, json) = prune(endpoint, &arch, &[]).await;
    assert_eq!(out.code, 1, "b's archive fails verification: {out:?}");
    assert_eq!(json["dry_run"], true, "{json}");
    assert_eq!(json["deleted"]["objects"], 7, "{json}");
    assert_eq!(
        json["by_prefix"][format!("{src}/logs/")]["objects"],
        6,
        "{json}"
    );
    assert_eq!(
        json["by_prefix"][format!("{src}/big/")]["bytes"],
        3000,
        "{json}"
    );
    assert_eq!(json["kept"]["Changed"], 1, "{json}");
    assert_eq!(json["kept"]["InDlq"], 1, "{json}");
    assert_eq!(json["kept"]["ArchiveDamaged"], 4, "{json}");
    assert_eq!(
        list_keys(&client, &src, "").await,
        all,
        "a dry run deletes nothing"
    );
    let text = s3bundler(
        endpoint,
        &[
            "prune",
            "--manifests",
            &format!("s3://{arch}/manifests/"),
            "-b",
            &arch,
            "-p",
            "bundles",
            "-s",
            "2KiB",
        ],
    )
    .await;
    assert!(
        text.stdout.contains("would delete 7 objects") && text.stdout.contains("--yes"),
        "{}",
        text.stdout
    );

    // For real.
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 7, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    let mut left = list_keys(&client, &src, "").await;
    left.sort();
    assert_eq!(
        left,
        vec![
            "dlq/changed",
            "logs/overwritten",
            "other/b-0",
            "other/b-1",
            "other/b-2",
            "other/b-3"
        ]
    );
    let log = get_object(&client, &arch, "manifests/a-manifest.0.index.pruned").await;
    let logged = parse_pruned(&log, "log").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logged.len(), 7);
    assert!(logged
        .iter()
        .any(|r| r.key == "big/copied.bin" && r.size == 3000));
    assert!(
        list_keys(&client, &arch, "manifests/b-manifest.0.index.pruned")
            .await
            .is_empty()
    );

    // Again: nothing more.
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 0, "{json}");
    assert_eq!(json["already_pruned"], 7, "{json}");
    assert_eq!(list_keys(&client, &src, "").await, left);
}

#[tokio::test]
async fn in_a_versioned_bucket_prune_deletes_the_archived_versions_only() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "pvsrc").await;
    let arch = new_bucket(&client, "pvarch").await;
    enable_versioning(&client, &src).await;
    let mut entries = Vec::new();
    for key in ["v/one", "v/two", "v/three"] {
        put_object(&client, &src, key, body(30, 1)).await;
        entries.push(entry(&src, key, 30, None));
    }
    let manifest = write_manifest(&client, &arch, "manifests/v-manifest.0.index", &entries).await;
    bundle(endpoint, &manifest, &arch).await;
    // A new version of v/three (same bytes): not the version archived, so it is kept.
    put_object(&client, &src, "v/three", body(30, 1)).await;
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 2, "{json}");
    assert_eq!(json["kept"]["Changed"], 1, "{json}");
    let versions = client
        .list_object_versions()
        .bucket(&src)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let keys: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
    assert_eq!(
        keys,
        vec!["v/three", "v/three"],
        "archived versions deleted, no others"
    );
    assert!(
        versions.delete_markers().is_empty(),
        "exact versions, no delete markers"
    );
}
