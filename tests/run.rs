//! `s3bundler run`: group and bundle in one process, and resume after being killed.

mod common;

use std::collections::BTreeMap;

use common::*;
use s3bundler::archive::records::parse_index;
use s3bundler_testkit::generate::{csv_report_with_objects, rows, InventorySpec};

/// An inventory of `objects` objects with the objects themselves on the fast local server.
async fn inventory_with_objects(objects: u64) -> (aws_sdk_s3::Client, InventorySpec, String, u64) {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "run").await;
    // The local server stores objects as files: no 1,024-byte keys, no storage classes.
    let spec = InventorySpec {
        long_keys: false,
        ..InventorySpec::new(&bucket, objects)
    };
    let report = csv_report_with_objects(&client, &spec, 32, false).await;
    (client, spec, report.manifest_uri, report.expected.selected)
}

/// How many times each key appears across every index under `prefix`.
async fn archived_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for key in list_keys(client, bucket, prefix)
        .await
        .into_iter()
        .filter(|k| k.ends_with(".index"))
    {
        for row in parse_index(&get_object(client, bucket, &key).await, &key)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            *seen.entry(row.key).or_insert(0) += 1;
        }
    }
    seen
}

fn selected_keys(spec: &InventorySpec) -> Vec<String> {
    rows(spec, false)
        .filter(|r| r.selected_by_default())
        .map(|r| r.key)
        .collect()
}

#[tokio::test]
async fn run_bundles_every_selected_object_once_and_a_rerun_skips_finished_manifests() {
    let (client, spec, uri, selected) = inventory_with_objects(1500).await;
    let endpoint = &LocalS3::shared().endpoint;
    let bucket = spec.source_bucket.clone();
    let args = [
        "run",
        "-m",
        &uri,
        "-b",
        &bucket,
        "-c",
        "300",
        "--archive-prefix",
        "archives",
        "--json",
    ];
    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.json();
    let manifests = selected.div_ceil(300);
    assert_eq!(summary["objects_archived"], selected);
    assert_eq!(summary["manifests"], manifests);
    assert_eq!(
        summary["archives"].as_array().map(Vec::len),
        Some(manifests as usize)
    );
    let seen = archived_keys(&client, &bucket, "archives/").await;
    assert_eq!(seen.len(), selected_keys(&spec).len());
    assert!(
        selected_keys(&spec).iter().all(|k| seen.get(k) == Some(&1)),
        "every selected object exactly once"
    );

    let again = s3bundler(endpoint, &args).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["manifests_skipped"], manifests);
    assert_eq!(again.json()["objects_archived"], 0);
}

/// Running again with other thresholds would regroup the inventory under the same manifest
/// names, which the archives describe: the run stops before it bundles anything. Fails on the
/// old code, which replaced the manifests and bundled the new third one.
#[tokio::test]
async fn a_rerun_with_other_thresholds_stops_before_bundling_anything() {
    let (client, spec, uri, selected) = inventory_with_objects(400).await;
    let endpoint = &LocalS3::shared().endpoint;
    let bucket = spec.source_bucket.clone();
    let run = |count: &'static str| {
        let (uri, bucket) = (uri.clone(), bucket.clone());
        async move {
            let mut args = vec!["run", "-m", &uri, "-b", &bucket, "-c", count];
            args.extend(["--archive-prefix", "archives", "--json"]);
            s3bundler(endpoint, &args).await
        }
    };
    let first = run("200").await;
    assert_eq!(first.code, 0, "{first:?}");
    let manifests = selected.div_ceil(200);
    assert!(selected.div_ceil(150) > manifests);
    let snapshot = || async {
        let mut keys = list_keys(&client, &bucket, "archives/").await;
        keys.extend(list_keys(&client, &bucket, "s3grouper-output/").await);
        let mut objects = BTreeMap::new();
        for key in keys {
            let body = get_object(&client, &bucket, &key).await;
            objects.insert(key, body);
        }
        objects
    };
    let before = snapshot().await;

    let again = run("200").await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["manifests_skipped"], manifests);

    let other = run("150").await;
    assert_eq!(other.code, 2, "{other:?}");
    assert!(
        other.stderr.contains("manifest.0.index") && other.stderr.contains("grouped with -c 200"),
        "{}",
        other.stderr
    );
    assert!(
        snapshot().await == before,
        "no manifest replaced or added, nothing bundled"
    );
}

#[tokio::test]
async fn a_killed_run_resumes_and_archives_every_object_exactly_once() {
    let (client, spec, uri, selected) = inventory_with_objects(3000).await;
    let endpoint = LocalS3::shared().endpoint.clone();
    let bucket = spec.source_bucket.clone();
    let args = [
        "run",
        "-m",
        &uri,
        "-b",
        &bucket,
        "-c",
        "200",
        "--archive-prefix",
        "archives",
        "--parallel-manifests",
        "1",
        "--concurrency",
        "2",
    ];
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3bundler"))
        .args(args)
        .envs(s3bundler_testkit::cli_env(&endpoint))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Kill it without warning once a few manifests are done and before all of them are.
    let manifests = selected.div_ceil(200) as usize;
    let mut done = 0;
    for _ in 0..600 {
        done = list_keys(&client, &bucket, "archives/")
            .await
            .iter()
            .filter(|k| k.ends_with(".index"))
            .count();
        if done >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = child.kill().await;
    assert!(
        done >= 2 && done < manifests,
        "killed after {done} of {manifests} manifests"
    );

    let out = s3bundler(
        &endpoint,
        &args[..args.len()]
            .iter()
            .copied()
            .chain(["--json"])
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.json();
    assert!(
        summary["manifests_skipped"].as_u64().unwrap_or(0) >= done as u64,
        "{summary}"
    );
    let seen = archived_keys(&client, &bucket, "archives/").await;
    let want = selected_keys(&spec);
    assert_eq!(seen.len(), want.len());
    assert!(
        want.iter().all(|k| seen.get(k) == Some(&1)),
        "every selected object exactly once after the resume"
    );
}

/// Over HTTPS s3bundler sends bodies as UNSIGNED-PAYLOAD; the local server checks signatures,
/// so this proves such PutObject and UploadPart requests are well formed.
#[tokio::test]
async fn unsigned_upload_bodies_are_accepted() {
    let (client, spec, uri, selected) = inventory_with_objects(400).await;
    let bucket = spec.source_bucket.clone();
    let mut args = vec!["run", "-m", &uri, "-b", &bucket];
    args.extend(["-c", "200", "--archive-prefix", "unsigned", "--json"]);
    let out = s3bundler_with_env(
        &LocalS3::shared().endpoint,
        &args,
        &[("S3BUNDLER_SIGN_PAYLOAD", "never")],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_archived"], selected);
    let seen = archived_keys(&client, &bucket, "unsigned/").await;
    assert!(selected_keys(&spec).iter().all(|k| seen.get(k) == Some(&1)));
}

/// An object written before versioning was enabled and overwritten since: the inventory lists
/// its null version as noncurrent with an empty VersionId. With --all-versions both versions are
/// archived, each with its own bytes. Fails on the old code, which wrote the null version to the
/// manifest without a version id, so `bundle` read the current version in its place (and sent
/// it to the DLQ as changed, its size being another).
#[tokio::test]
async fn all_versions_archives_a_noncurrent_null_version_itself() {
    use md5::{Digest, Md5};
    let md5_hex = |bytes: &[u8]| hex::encode(Md5::digest(bytes));

    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "nullv").await;
    let old = b"written before versioning was enabled".to_vec();
    let new = b"the current version".to_vec();
    put_object(&client, &bucket, "k", old.clone()).await;
    enable_versioning(&client, &bucket).await;
    let current = Some(put_version(&client, &bucket, "k", new.clone()).await);
    assert!(current.as_deref().is_some_and(|v| v != "null"));
    let uri = versioned_inventory(
        &client,
        &bucket,
        &[
            Version {
                version_id: current.clone(),
                latest: true,
                body: new.clone(),
                modified: "2026-11-21T10:00:00.000Z",
            },
            Version {
                version_id: None,
                latest: false,
                body: old.clone(),
                modified: "2026-11-20T10:00:00.000Z",
            },
        ],
    )
    .await;

    let out = s3bundler(
        endpoint,
        &[
            "run",
            "-m",
            &uri,
            "-b",
            &bucket,
            "--all-versions",
            "--archive-prefix",
            "archives",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_archived"], 2, "{out:?}");
    let mut archived = Vec::new();
    let mut tars = 0;
    for key in list_keys(&client, &bucket, "archives/").await {
        if key.ends_with(".index") {
            let index = get_object(&client, &bucket, &key).await;
            for row in parse_index(&index, &key).unwrap_or_else(|e| panic!("{e}")) {
                archived.push((row.version_id, row.md5));
            }
        } else if key.ends_with(".tar") {
            tars += 1;
            let tar = get_object(&client, &bucket, &key).await;
            for body in [&old, &new] {
                assert!(
                    tar.windows(body.len()).any(|w| w == body.as_slice()),
                    "{key} lacks {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
    assert_eq!(tars, 1);
    archived.sort();
    let mut want = vec![
        (current, md5_hex(&new)),
        (Some("null".to_string()), md5_hex(&old)),
    ];
    want.sort();
    assert_eq!(archived, want);
}
