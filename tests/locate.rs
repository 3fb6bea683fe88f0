//! `locate`: an object of a source bucket found again through the catalog beside the
//! manifests, in a handful of requests (counted at the fault proxy), across thousands of
//! manifests, incremental runs and redrives.

mod common;

use common::faults::proxy;
use common::*;
use s3bundler::manifest::parse_manifest;
use s3bundler_testkit::faults::FaultPlan;
use s3bundler_testkit::generate::{
    body_for, csv_report_of, rows, upload_report_dated, InventorySpec, Row,
};

/// Requests a lookup of one key archived by one grouping run makes: a LIST of the catalog, its
/// page table, one page, the index of the one manifest whose range holds the key, a LIST of
/// its archive's name and a HEAD of the archive.
const HANDFUL: u64 = 6;

/// A source bucket whose inventory lists `objects` plain, current objects (none created yet),
/// sorted by key as S3 Inventory lists them.
async fn inventory(client: &aws_sdk_s3::Client, objects: u64) -> (String, String, Vec<Row>) {
    let source = new_bucket(client, "loc").await;
    let spec = InventorySpec {
        newline_keys: false,
        long_keys: false,
        ..InventorySpec::new(&source, objects)
    };
    let mut listed: Vec<Row> = rows(&spec, true).filter(Row::selected_by_default).collect();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let report = csv_report_of(&spec, listed.clone().into_iter(), listed.len() as u64);
    let uploaded = upload_report_dated(
        client,
        &source,
        "inventory/",
        &spec,
        report,
        "2026-11-22T01-00Z",
        s3bundler_testkit::generate::FIRST_CREATED,
    )
    .await;
    (source, uploaded.manifest_uri, listed)
}

/// Creates the objects a manifest lists and bundles it.
async fn bundle(client: &aws_sdk_s3::Client, source: &str, manifest: &str, archive: &str) {
    let key = key_of(&serde_json::Value::String(manifest.to_string()), source);
    let body = get_object(client, source, &key).await;
    for entry in parse_manifest(&body, &key).unwrap_or_else(|e| panic!("{e}")) {
        put_object(client, source, &entry.key, body_for(&entry.key, entry.size)).await;
    }
    let out = s3bundler(
        moto::endpoint(),
        &["bundle", "-m", manifest, "-b", archive, "-p", "bundles"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
}

/// The keys a manifest lists, in its order.
async fn manifest_keys(client: &aws_sdk_s3::Client, source: &str, manifest: &str) -> Vec<String> {
    let key = key_of(&serde_json::Value::String(manifest.to_string()), source);
    let body = get_object(client, source, &key).await;
    parse_manifest(&body, &key)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|e| e.key.into_owned())
        .collect()
}

async fn locate(endpoint: &str, source: &str, key: &str, archive: &str, extra: &[&str]) -> Output {
    let object = format!("s3://{source}/{key}");
    let manifests = format!("s3://{source}/manifests/");
    let archives = format!("s3://{archive}/bundles/");
    let mut args = vec![
        "locate",
        &object,
        "--manifests",
        &manifests,
        "--archives",
        &archives,
        "--json",
    ];
    args.extend_from_slice(extra);
    s3bundler(endpoint, &args).await
}

#[tokio::test]
async fn locate_finds_any_key_among_2000_manifests_in_a_handful_of_requests() {
    let client = s3_client(moto::endpoint());
    let (source, inventory_uri, listed) = inventory(&client, 4_600).await;
    let archive = new_bucket(&client, "loc-arch").await;
    let out = s3bundler(
        moto::endpoint(),
        &[
            "group",
            "-m",
            &inventory_uri,
            "-b",
            &source,
            "-p",
            "manifests",
            "-c",
            "2",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.json();
    let manifests: Vec<String> = summary["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["uri"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(manifests.len() >= 2_000, "{} manifests", manifests.len());
    assert!(summary["catalog"].as_str().is_some(), "{summary}");

    let middle = manifests.len() / 2;
    let chosen = [0, middle, manifests.len() - 1];
    for &n in &chosen {
        bundle(&client, &source, &manifests[n], &archive).await;
    }
    let first_key = listed
        .iter()
        .map(|r| r.key.clone())
        .min()
        .unwrap_or_default();
    let last_key = listed
        .iter()
        .map(|r| r.key.clone())
        .max()
        .unwrap_or_default();
    let middle_key = manifest_keys(&client, &source, &manifests[middle]).await[1].clone();

    for key in [&first_key, &middle_key, &last_key] {
        let faults = proxy(moto::endpoint(), FaultPlan::default());
        let out = locate(&faults.endpoint, &source, key, &archive, &[]).await;
        assert_eq!(out.code, 0, "{key}: {out:?}");
        let report = out.json();
        let located = &report["located"][0];
        assert_eq!(located["key"], key.as_str(), "{report}");
        assert!(
            located["archive"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("s3://{archive}/bundles/")),
            "{report}"
        );
        assert_eq!(located["storage_class"], "STANDARD", "{report}");
        let requests = faults
            .counts
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            requests <= HANDFUL,
            "{key}: {requests} requests: {:?}",
            faults.counts.operations()
        );
        assert_eq!(
            report["requests"], requests,
            "the report counts what was sent"
        );

        // The member named is the object: cat gives its bytes.
        let out = s3bundler(
            moto::endpoint(),
            &["cat", located["archive"].as_str().unwrap_or_default(), key],
        )
        .await;
        let row = listed.iter().find(|r| &r.key == key).expect("listed");
        assert_eq!(
            out.stdout.as_bytes(),
            body_for(key, row.size).as_slice(),
            "{key}"
        );
    }

    // cat and extract take the source key too.
    let places = [
        "--manifests".to_string(),
        format!("s3://{source}/manifests/"),
        "--archives".to_string(),
        format!("s3://{archive}/bundles/"),
    ];
    let places: Vec<&str> = places.iter().map(String::as_str).collect();
    let middle_uri = format!("s3://{source}/{middle_key}");
    let middle_body = {
        let row = listed.iter().find(|r| r.key == middle_key).expect("listed");
        body_for(&middle_key, row.size)
    };
    let out = s3bundler(
        moto::endpoint(),
        &[&["cat", &middle_uri][..], &places].concat(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.as_bytes(), middle_body.as_slice());
    let back = new_bucket(&client, "loc-back").await;
    let to = format!("s3://{back}/back/");
    let out = s3bundler(
        moto::endpoint(),
        &[&["extract", &middle_uri, "--to", &to][..], &places].concat(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        get_object(&client, &back, &format!("back/{middle_key}")).await,
        middle_body
    );
    let missing = format!("s3://{source}/zzzz-never-listed");
    let out = s3bundler(
        moto::endpoint(),
        &[&["cat", &missing][..], &places].concat(),
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not archived"), "{}", out.stderr);

    // A key no manifest lists: exit 1, in even fewer requests.
    let faults = proxy(moto::endpoint(), FaultPlan::default());
    let out = locate(
        &faults.endpoint,
        &source,
        "zzzz-never-listed",
        &archive,
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["located"], serde_json::json!([]));
    assert!(
        faults
            .counts
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            <= 3
    );

    // A key whose manifest is not bundled yet is not archived, and says so, even with an
    // archive left by an attempt that stopped before its index (the commit marker).
    let waiting = manifest_keys(&client, &source, &manifests[1]).await[0].clone();
    let uncommitted = s3bundler::archive::layout::BundleLayout::new(
        "bundles",
        &source,
        &key_of(&serde_json::Value::String(manifests[1].clone()), &source),
        s3bundler::archive::layout::Compression::None,
    );
    put_object(
        &client,
        &archive,
        &uncommitted.archive_key,
        b"partial".to_vec(),
    )
    .await;
    let out = locate(moto::endpoint(), &source, &waiting, &archive, &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.json()["not_bundled"],
        serde_json::json!([manifests[1]]),
        "{}",
        out.stdout
    );
}

/// Three versions of one key in a versioned bucket (the null version written before
/// versioning, then two), all archived by `run --all-versions`: `locate` lists them oldest
/// first, `--version-id` picks exactly one (`null` too), an unknown version is not archived, and
/// `cat` by source key gives the newest bytes, or the asked version's.
#[tokio::test]
async fn each_version_of_a_key_is_located_and_read_back_by_its_version_id() {
    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "loc-ver").await;
    let bodies: Vec<Vec<u8>> = ["before versioning", "the first version", "the current one"]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect();
    put_object(&client, &bucket, "k", bodies[0].clone()).await;
    enable_versioning(&client, &bucket).await;
    let mut ids = vec!["null".to_string()];
    for body in &bodies[1..] {
        // S3 keeps last-modified times to the second: versions a second apart are ordered.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        ids.push(put_version(&client, &bucket, "k", body.clone()).await);
    }
    let modified = [
        "2026-11-19T10:00:00.000Z",
        "2026-11-20T10:00:00.000Z",
        "2026-11-21T10:00:00.000Z",
    ];
    let versions: Vec<Version> = (0..3)
        .rev()
        .map(|n| Version {
            version_id: (n > 0).then(|| ids[n].clone()),
            latest: n == 2,
            body: bodies[n].clone(),
            modified: modified[n],
        })
        .collect();
    let inventory = versioned_inventory(&client, &bucket, &versions).await;
    let out = s3bundler(
        moto::endpoint(),
        &[
            "run",
            "-m",
            &inventory,
            "-b",
            &bucket,
            "-p",
            "manifests",
            "--archive-prefix",
            "bundles",
            "--all-versions",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");

    let out = locate(moto::endpoint(), &bucket, "k", &bucket, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let located: Vec<String> = out.json()["located"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["version_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(located, ids, "oldest first: {}", out.stdout);
    for (id, body) in ids.iter().zip(&bodies) {
        let out = locate(
            moto::endpoint(),
            &bucket,
            "k",
            &bucket,
            &["--version-id", id],
        )
        .await;
        assert_eq!(out.code, 0, "{out:?}");
        let located = out.json()["located"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(located.len(), 1, "{id}: {}", out.stdout);
        assert_eq!(located[0]["version_id"], id.as_str());
        assert_eq!(located[0]["size"], body.len());
    }
    let out = locate(
        moto::endpoint(),
        &bucket,
        "k",
        &bucket,
        &["--version-id", "v-never"],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");

    let object = format!("s3://{bucket}/k");
    let places = [
        "--manifests".to_string(),
        format!("s3://{bucket}/manifests/"),
        "--archives".to_string(),
        format!("s3://{bucket}/bundles/"),
    ];
    let places: Vec<&str> = places.iter().map(String::as_str).collect();
    let out = s3bundler(moto::endpoint(), &[&["cat", &object][..], &places].concat()).await;
    assert_eq!(out.stdout.as_bytes(), bodies[2].as_slice(), "{out:?}");
    for (id, body) in ids.iter().zip(&bodies) {
        let args = [&["cat", &object, "--version-id", id][..], &places].concat();
        let out = s3bundler(moto::endpoint(), &args).await;
        assert_eq!(out.stdout.as_bytes(), body.as_slice(), "{id}: {out:?}");
    }
}

/// Objects too big to bundle are kept as copies; found by source key, `extract` writes them back
/// as it writes archive members: to S3 with their content type, metadata and tags, to a folder
/// at `BUCKET/KEY`, never over what is there, and with `--prefix --json` one report for the
/// archives and the copies together. A copy moved to DEEP_ARCHIVE names the restore to run.
#[tokio::test]
async fn big_objects_found_by_source_key_are_extracted_from_their_copies() {
    let client = s3_client(moto::endpoint());
    let (source, inventory, listed) = self::inventory(&client, 40).await;
    let big = listed
        .iter()
        .find(|row| row.size > 32 << 10)
        .expect("a row over 32 KiB")
        .clone();
    for row in &listed {
        let body = body_for(&row.key, row.size);
        if row.key == big.key {
            client
                .put_object()
                .bucket(&source)
                .key(&row.key)
                .body(body.into())
                .content_type("application/x-big")
                .metadata("owner", "ops")
                .tagging("team=a")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
        } else {
            put_object(&client, &source, &row.key, body).await;
        }
    }
    let out = s3bundler(
        moto::endpoint(),
        &[
            "run",
            "-m",
            &inventory,
            "-b",
            &source,
            "-p",
            "manifests",
            "--archive-prefix",
            "bundles",
            "--maxsize",
            "32KiB",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let places = [
        "--manifests".to_string(),
        format!("s3://{source}/manifests/"),
        "--archives".to_string(),
        format!("s3://{source}/bundles/"),
    ];
    let places: Vec<&str> = places.iter().map(String::as_str).collect();
    // locate finds the copy (indexes list only archive members; its record is beside it).
    let found = locate(moto::endpoint(), &source, &big.key, &source, &[]).await;
    assert_eq!(found.code, 0, "{found:?}");
    let copy = found.json()["located"][0].clone();
    assert_eq!(copy["copy"], true, "{copy}");
    assert!(
        copy["archive"]
            .as_str()
            .unwrap_or_default()
            .contains("/bigobjects-by-"),
        "{copy}"
    );
    let object = format!("s3://{source}/{}", big.key);
    let back = new_bucket(&client, "loc-big").await;
    let to = format!("s3://{back}/x/");
    let extract = |extra: Vec<String>| {
        let mut args = vec!["extract".to_string()];
        args.extend(extra);
        args.extend(places.iter().map(|p| p.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            s3bundler(moto::endpoint(), &args).await
        }
    };
    let out = extract(vec![
        object.clone(),
        "--to".into(),
        to.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["restored"], 1, "{}", out.stdout);
    let target = format!("x/{}", big.key);
    assert_eq!(
        get_object(&client, &back, &target).await,
        body_for(&big.key, big.size)
    );
    let head = client
        .head_object()
        .bucket(&back)
        .key(&target)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(head.content_type(), Some("application/x-big"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("ops"),
        "only the source's metadata: {:?}",
        head.metadata()
    );
    assert_eq!(
        head.metadata().map(|m| m.len()),
        Some(1),
        "{:?}",
        head.metadata()
    );
    let tags = client
        .get_object_tagging()
        .bucket(&back)
        .key(&target)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("team", "a")]);
    // Again: already there, nothing written.
    let out = extract(vec![
        object.clone(),
        "--to".into(),
        to.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["already_restored"], 1, "{}", out.stdout);

    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().display().to_string();
    let out = extract(vec![object.clone(), "-C".into(), dir]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let file = scratch.path().join(&source).join(&big.key);
    assert_eq!(
        std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
        body_for(&big.key, big.size)
    );

    // Everything under the bucket: the archives' members and the copies, one JSON report.
    let out = extract(vec![
        format!("s3://{source}"),
        "--prefix".into(),
        String::new(),
        "--to".into(),
        format!("s3://{back}/all/"),
        "--json".into(),
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    assert_eq!(report["restored"], listed.len(), "{}", out.stdout);
    assert_eq!(list_keys(&client, &back, "all/").await.len(), listed.len());

    let out = s3bundler(moto::endpoint(), &[&["cat", &object][..], &places].concat()).await;
    assert_eq!(
        out.stdout.as_bytes(),
        body_for(&big.key, big.size).as_slice()
    );

    // A copy in DEEP_ARCHIVE: the restore to run, never InvalidObjectState.
    let located = locate(moto::endpoint(), &source, &big.key, &source, &[]).await;
    let copy = located.json()["located"][0]["archive"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let copy_key = key_of(&serde_json::Value::String(copy.clone()), &source);
    client
        .copy_object()
        .bucket(&source)
        .key(&copy_key)
        .copy_source(format!("{source}/{}", urlencode(&copy_key)))
        .storage_class(aws_sdk_s3::types::StorageClass::DeepArchive)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = extract(vec![
        object,
        "-C".into(),
        scratch.path().display().to_string(),
    ])
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("s3bundler restore"), "{}", out.stderr);
}

fn entry(manifest: &str, first: &str, last: &str) -> s3bundler::catalog::CatalogEntry {
    s3bundler::catalog::CatalogEntry {
        manifest: manifest.to_string(),
        first: first.to_string(),
        last: last.to_string(),
        objects: 2,
        bytes: 20,
        filter: None,
    }
}

/// Two compactions racing for one generation (two groupers of one source finishing together):
/// the page table is written once, the loser writes nothing that stays, and every run stays
/// findable, pending until the next compaction takes it. A run recorded again adds nothing,
/// and a compaction that stopped before its page table blocks no later one.
#[tokio::test]
async fn racing_compactions_keep_every_run_findable_and_write_each_generation_once() {
    use s3bundler::catalog::store::Catalog;
    use s3bundler::catalog::KeyQuery;
    use s3bundler::s3::{WriteSettings, S3};
    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "cat").await;
    let s3 = S3::new(client.clone(), WriteSettings::default());
    let catalog = Catalog::new(&s3, &bucket, "m", "src");
    catalog
        .record_run("week1", vec![entry("m/a.0.index", "a", "c")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    catalog
        .record_run("week2", vec![entry("m/b.0.index", "b", "d")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let other = Catalog::new(&s3, &bucket, "m", "src");
    let (one, two) = tokio::join!(catalog.compact(), other.compact());
    let mut won: Vec<Option<u64>> = vec![
        one.unwrap_or_else(|e| panic!("{e}")),
        two.unwrap_or_else(|e| panic!("{e}")),
    ];
    won.sort();
    assert_eq!(
        won,
        vec![None, Some(1)],
        "one compaction wrote generation 1"
    );
    let entries = |keys: Vec<String>| {
        keys.into_iter()
            .filter(|k| k.contains("/generations/") && k.ends_with(".entries.jsonl"))
            .count()
    };
    assert_eq!(
        entries(list_keys(&client, &bucket, "m/_catalog/src/").await),
        1,
        "the loser removed its entries"
    );
    let found = catalog
        .lookup(&KeyQuery::Key("b".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let manifests: Vec<&str> = found.entries.iter().map(|e| e.manifest.as_str()).collect();
    assert_eq!(manifests, ["m/a.0.index", "m/b.0.index"]);
    assert_eq!((found.generation, found.pending_runs), (Some(1), 0));

    // A run not compacted yet is read directly; the next compaction takes it, and one that
    // stopped before its page table (an orphan entries object) is in nobody's way.
    catalog
        .record_run("week3", vec![entry("m/c.0.index", "c", "e")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    put_object(
        &client,
        &bucket,
        "m/_catalog/src/generations/0000000002.orphan.entries.jsonl",
        b"not even json".to_vec(),
    )
    .await;
    let found = catalog
        .lookup(&KeyQuery::Key("c".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.entries.len(), 3, "{:?}", found.entries);
    assert_eq!(found.pending_runs, 1);
    assert_eq!(
        catalog.compact().await.unwrap_or_else(|e| panic!("{e}")),
        Some(2)
    );
    // Recorded again (a re-run of that grouping): same name, nothing to compact.
    catalog
        .record_run("week3", vec![entry("m/c.0.index", "c", "e")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        catalog.compact().await.unwrap_or_else(|e| panic!("{e}")),
        None
    );
    let found = catalog
        .lookup(&KeyQuery::Prefix("d".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let manifests: Vec<&str> = found.entries.iter().map(|e| e.manifest.as_str()).collect();
    assert_eq!(manifests, ["m/b.0.index", "m/c.0.index"]);
    assert_eq!((found.generation, found.pending_runs), (Some(2), 0));
    // A third generation removes the first (the one before the newest is kept).
    catalog
        .record_run("week4", vec![entry("m/d.0.index", "d", "f")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        catalog.compact().await.unwrap_or_else(|e| panic!("{e}")),
        Some(3)
    );
    let keys = list_keys(&client, &bucket, "m/_catalog/src/generations/").await;
    assert!(
        !keys.iter().any(|k| k.contains("/0000000001.")),
        "generation 1 removed: {keys:?}"
    );
}

/// A year of weekly incremental runs, each changing 1% of the keys spread over the whole key
/// space: every key lies in the range of one manifest a week, but those entries keep a filter
/// of their keys, so a lookup of a key no week changed names only the full run's manifest, and
/// one a week changed names the full run's and that week's. Computed with the catalog's
/// own record, compaction and lookup, on moto.
#[tokio::test]
async fn key_filters_of_incremental_runs_leave_one_candidate_after_a_year_of_weekly_runs() {
    use s3bundler::catalog::store::Catalog;
    use s3bundler::catalog::{CatalogEntry, KeyQuery, Keys};
    use s3bundler::manifest::ManifestEntry;
    use s3bundler::s3::{WriteSettings, S3};
    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "year").await;
    let s3 = S3::new(client.clone(), WriteSettings::default());
    let catalog = Catalog::new(&s3, &bucket, "m", "src");
    let key = |n: u64| format!("photos/{n:06}.jpg");
    let entry_of = |manifest: String, keys: &[u64], filtered: Keys| {
        let keys: Vec<String> = keys.iter().map(|&n| key(n)).collect();
        let rows: Vec<ManifestEntry> = keys
            .iter()
            .map(|key| ManifestEntry::of_key("src", key, 1))
            .collect();
        CatalogEntry::of_rows(&manifest, "src", &rows, filtered).expect("rows")
    };
    let (objects, per_manifest) = (10_000u64, 50usize);
    let all: Vec<u64> = (0..objects).collect();
    let full: Vec<CatalogEntry> = all
        .chunks(per_manifest)
        .enumerate()
        .map(|(n, keys)| entry_of(format!("m/full.{n}.index"), keys, Keys::RangeOnly))
        .collect();
    catalog
        .record_run("full", full)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for week in 1..=52u64 {
        let changed: Vec<u64> = (week..objects).step_by(100).collect();
        let entries = changed
            .chunks(per_manifest)
            .enumerate()
            .map(|(n, keys)| entry_of(format!("m/week{week}.{n}.index"), keys, Keys::Filtered))
            .collect();
        catalog
            .record_run(&format!("week{week}"), entries)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        catalog.compact().await.unwrap_or_else(|e| panic!("{e}"));
    }
    // Week W changes the keys ≡ W (mod 100): 4,299 is changed by no week, 5,017 by week 17
    // and 6,101 by week 1. Without filters each would name 53 manifests.
    for (n, weeks) in [(4_299u64, vec![]), (5_017, vec![17]), (6_101, vec![1])] {
        let found = catalog
            .lookup(&KeyQuery::Key(key(n)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut holders = vec![format!("m/full.{}.index", n as usize / per_manifest)];
        for week in weeks {
            let changed = (week..objects)
                .step_by(100)
                .position(|k| k == n)
                .expect("changed");
            holders.push(format!("m/week{week}.{}.index", changed / per_manifest));
        }
        let named: Vec<String> = found.entries.iter().map(|e| e.manifest.clone()).collect();
        for holder in &holders {
            assert!(
                named.contains(holder),
                "{}: {holder} not named in {named:?}",
                key(n)
            );
        }
        // A filter's false positive (about 1%) costs one index read.
        assert!(named.len() <= holders.len() + 2, "{}: {named:?}", key(n));
        assert_eq!(found.pending_runs, 0);
        assert!(
            found.requests <= 4,
            "{} requests for {}",
            found.requests,
            key(n)
        );
    }
}

/// A generation larger than a part (8 MiB: 600 filtered entries of 22 KiB) is written in parts
/// and streamed into the next one, merged with a new run's entries: every manifest stays
/// findable, each exactly where its range is, and no upload is left open.
#[tokio::test]
async fn a_generation_larger_than_a_part_is_streamed_into_the_next_and_stays_exact() {
    use base64::Engine;
    use s3bundler::catalog::store::Catalog;
    use s3bundler::catalog::KeyQuery;
    use s3bundler::s3::{WriteSettings, S3};
    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "cat-big").await;
    let s3 = S3::new(client.clone(), WriteSettings::default());
    let catalog = Catalog::new(&s3, &bucket, "m", "src");
    // Filters that hold every key: the ranges alone decide.
    let full = format!(
        "bloom7:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(vec![0xFFu8; 16 << 10])
    );
    let wide: Vec<_> = (0..600)
        .map(|n| s3bundler::catalog::CatalogEntry {
            filter: Some(full.clone()),
            ..entry(
                &format!("m/week.{n}.index"),
                &format!("k{n:05}a"),
                &format!("k{n:05}z"),
            )
        })
        .collect();
    let record = |label: &'static str, entries| {
        let catalog = &catalog;
        async move {
            catalog
                .record_run(label, entries)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            catalog.compact().await.unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(record("week", wide).await, Some(1));
    let narrow: Vec<_> = (0..10)
        .map(|n| {
            entry(
                &format!("m/full.{n}.index"),
                &format!("k{n:05}b"),
                &format!("k{n:05}c"),
            )
        })
        .collect();
    assert_eq!(record("full", narrow).await, Some(2));
    let sizes: Vec<(String, i64)> = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("m/_catalog/src/generations/")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or(0),
            )
        })
        .collect();
    let second = sizes
        .iter()
        .find(|(key, _)| key.contains("/0000000002.") && key.ends_with(".entries.jsonl"))
        .unwrap_or_else(|| panic!("no generation 2 in {sizes:?}"));
    assert!(second.1 > 8 << 20, "{sizes:?}");
    for (key, manifests) in [
        ("k00300m", vec!["m/week.300.index"]),
        ("k00007b", vec!["m/week.7.index", "m/full.7.index"]),
        ("k00599z", vec!["m/week.599.index"]),
        ("k00600a", vec![]),
    ] {
        let found = catalog
            .lookup(&KeyQuery::Key(key.into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let named: Vec<&str> = found.entries.iter().map(|e| e.manifest.as_str()).collect();
        assert_eq!(named, manifests, "{key}");
        assert_eq!((found.generation, found.pending_runs), (Some(2), 0));
    }
    assert_eq!(incomplete_uploads(&client, &bucket).await, 0);
}

/// The whole way back on moto, which keeps storage classes, refuses GETs of DEEP_ARCHIVE
/// objects until restored and answers RestoreObject: an object archived in DEEP_ARCHIVE is
/// located, `cat` by its source key names the restore to run, `restore` prices it (requesting
/// nothing), requests it, reports it and waits for it, and then `cat` and `extract` by source key
/// give back its bytes and content type. The records beside the archive stay STANDARD.
#[tokio::test]
async fn a_deep_archive_object_is_located_restored_and_read_back_by_its_source_key() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let (source, inventory_uri, listed) = inventory(&client, 40).await;
    for row in &listed {
        put_object(&client, &source, &row.key, body_for(&row.key, row.size)).await;
    }
    let archive = new_bucket(&client, "loc-cold").await;
    let out = s3bundler(
        moto,
        &[
            "run",
            "-m",
            &inventory_uri,
            "-b",
            &archive,
            "-p",
            "manifests",
            "--archive-prefix",
            "bundles",
            "-c",
            "10",
            "--storage-class",
            "DEEP_ARCHIVE",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    // Hot records, cold archives: the catalog (like indexes and DLQs) is STANDARD.
    let catalog = list_keys(&client, &archive, "manifests/_catalog/").await;
    assert!(
        catalog.len() >= 3,
        "a run, a generation's entries and page table: {catalog:?}"
    );
    for key in catalog.iter().chain(
        list_keys(&client, &archive, "bundles/")
            .await
            .iter()
            .filter(|k| k.ends_with(".index")),
    ) {
        let class = head(&client, &archive, key)
            .await
            .storage_class()
            .map(|c| c.as_str().to_string());
        assert!(
            class.is_none() || class.as_deref() == Some("STANDARD"),
            "{key}: {class:?}"
        );
    }
    let places = [
        "--manifests".to_string(),
        format!("s3://{archive}/manifests/"),
        "--archives".to_string(),
        format!("s3://{archive}/bundles/"),
    ];
    let places: Vec<&str> = places.iter().map(String::as_str).collect();
    let row = &listed[listed.len() / 2];
    let object = format!("s3://{source}/{}", row.key);
    let body = body_for(&row.key, row.size);
    let run = |args: Vec<&str>| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let places = places.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).chain(places).collect();
            s3bundler(moto, &args).await
        }
    };

    let located = run(vec!["locate", &object, "--json"]).await;
    assert_eq!(located.code, 0, "{located:?}");
    let found = located.json()["located"][0].clone();
    assert_eq!(found["storage_class"], "DEEP_ARCHIVE", "{found}");
    assert_eq!(found["needs_restore"], true, "{found}");
    assert_eq!(found["restore"], "needed (DEEP_ARCHIVE)", "{found}");

    let refused = run(vec!["cat", &object]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("DEEP_ARCHIVE") && refused.stderr.contains("s3bundler restore"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("InvalidObjectState"),
        "{}",
        refused.stderr
    );

    let dry = run(vec!["restore", &object, "--json"]).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(dry.json()["dry_run"], true, "{}", dry.stdout);
    let still = run(vec!["locate", &object, "--json"]).await;
    assert_eq!(
        still.json()["located"][0]["restore"],
        "needed (DEEP_ARCHIVE)",
        "a dry run requests nothing"
    );

    let requested = run(vec![
        "restore", &object, "--yes", "--tier", "Bulk", "--days", "2",
    ])
    .await;
    assert_eq!(requested.code, 0, "{requested:?}");
    let status = run(vec!["restore", &object, "--status", "--json"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let waited = run(vec!["restore", &object, "--wait", "--poll-every", "0.05s"]).await;
    assert_eq!(waited.code, 0, "{waited:?}");

    let read = run(vec!["cat", &object]).await;
    assert_eq!(read.code, 0, "{read:?}");
    assert_eq!(read.stdout.as_bytes(), body.as_slice());
    let back = new_bucket(&client, "loc-cold-back").await;
    let to = format!("s3://{back}/");
    let extracted = run(vec!["extract", &object, "--to", &to]).await;
    assert_eq!(extracted.code, 0, "{extracted:?}");
    assert_eq!(get_object(&client, &back, &row.key).await, body);
    let original = head(&client, &source, &row.key).await;
    let restored = head(&client, &back, &row.key).await;
    assert_eq!(restored.content_type(), original.content_type());
}
