//! `s3bundler group` end to end: real AWS samples through moto, generated inventories through
//! the fast local server, and every kind of bad input.

mod common;

use common::*;
use s3bundler::manifest::parse_manifest;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
use s3bundler_testkit::generate::{
    csv_report, report, rows, upload_report, DataFormat, InventorySpec, UploadedReport,
};

const FIXTURE_MANIFEST_KEY: &str = "inventory/filemanager-inventory-test/cfg/2024-05-06T01-00Z";

/// Uploads one of the orcabus sample reports: data file at its bare key (as its manifest
/// says), manifest and checksum under an inventory-style folder. Returns the manifest URI.
async fn upload_sample(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    stem: &str,
    data: &str,
) -> Option<String> {
    let dir = aws_samples()?.join("orcabus-filemanager");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    put_object(client, bucket, data, read(data)).await;
    for suffix in ["manifest.json", "manifest.checksum"] {
        let name = format!("{stem}_{suffix}");
        put_object(
            client,
            bucket,
            &format!("{FIXTURE_MANIFEST_KEY}/{name}"),
            read(&name),
        )
        .await;
    }
    Some(format!(
        "s3://{bucket}/{FIXTURE_MANIFEST_KEY}/{stem}_manifest.json"
    ))
}

fn manifest_key(n: u64) -> String {
    format!("s3grouper-output/inventory-filemanager-inventory-test-cfg-2024-05-06T01-00Z-manifest.{n}.index")
}

/// The bundle manifest of the versioned samples' latest versions (the same in every format).
const SAMPLE_LATEST_MANIFEST: &str = "filemanager-inventory-test,inventory-test/,0,,d41d8cd98f00b204e9800998ecf8427e,2024-05-06T22:37:48.000Z,STANDARD\n\
     filemanager-inventory-test,inventory-test/key1,5,tpinzcbxOfWpZsmjvVgdHEvSohsY4TA0,d8e8fca2dc0f896fd7cb4cb0031ba249,2024-05-06T22:44:22.000Z,STANDARD\n";

/// Groups one of the versioned samples (5 rows: 2 latest, 2 noncurrent, 1 delete marker)
/// through moto, from its manifest.json or its manifest.checksum, and checks the exact manifest.
async fn group_versioned_sample(stem: &str, data: &str, through_checksum: bool) {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "inv").await;
    let Some(uri) = upload_sample(&client, &bucket, stem, data).await else {
        return;
    };
    let given = if through_checksum {
        uri.replace("manifest.json", "manifest.checksum")
    } else {
        uri.clone()
    };
    let out = s3bundler(endpoint, &["group", "-m", &given, "-b", &bucket, "--json"]).await;
    assert_eq!(out.code, 0, "{data}: {out:?}");
    let summary = out.json();
    assert_eq!(summary["rows_seen"], 5, "{data}");
    assert_eq!(summary["objects_selected"], 2, "{data}");
    assert_eq!(summary["skipped"]["delete_marker"], 1, "{data}");
    assert_eq!(summary["skipped"]["noncurrent_version"], 2, "{data}");
    let body = get_object(&client, &bucket, &manifest_key(0)).await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        SAMPLE_LATEST_MANIFEST,
        "{data}"
    );
    assert!(
        out.stderr.contains(&format!("begin processing {given}")),
        "{}",
        out.stderr
    );

    // --all-versions keeps the noncurrent versions, never the delete marker.
    let out = s3bundler(
        endpoint,
        &[
            "group",
            "-m",
            &uri,
            "-b",
            &bucket,
            "-p",
            "all",
            "--all-versions",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{data}: {out:?}");
    assert_eq!(out.json()["objects_selected"], 4, "{data}");
    // key1's noncurrent version was written before versioning was enabled: its empty VersionId
    // is the null version, named `null` so that bundle reads it and not the current key1
    // (the old code left it empty).
    let body = get_object(
        &client,
        &bucket,
        &manifest_key(0).replace("s3grouper-output", "all"),
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("filemanager-inventory-test,inventory-test/key1,0,null,d41d8cd98f00b204e9800998ecf8427e,"),
        "{data}: {body}"
    );
    assert!(
        body.contains(
            "filemanager-inventory-test,inventory-test/key2,5,zl_C7NLxrkBsMFD5HQUdybrmuV9VpvkN,"
        ),
        "{data}: {body}"
    );
}

#[tokio::test]
async fn real_versioned_csv_sample_groups_latest_versions_through_moto() {
    group_versioned_sample("csv_inventory", "csv_inventory.csv.gz", false).await;
}

/// The real ORC and Parquet samples hold the same 5 rows as the CSV one (literal keys, snake_case
/// columns, timestamp columns): the same manifest, byte for byte.
#[tokio::test]
async fn real_orc_and_parquet_samples_group_like_the_csv_sample_through_moto() {
    group_versioned_sample("orc_inventory", "orc_inventory.orc", true).await;
    group_versioned_sample("parquet_inventory", "parquet_inventory.parquet", true).await;
}

#[tokio::test]
async fn real_current_version_sample_read_through_its_checksum_file() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "inv").await;
    let Some(uri) = upload_sample(
        &client,
        &bucket,
        "csv_inventory_no_version",
        "csv_inventory_no_version.csv.gz",
    )
    .await
    else {
        return;
    };
    let checksum_uri = uri.replace("manifest.json", "manifest.checksum");
    let out = s3bundler(
        endpoint,
        &["group", "-m", &checksum_uri, "-b", &bucket, "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_selected"], 2);
    let body = get_object(&client, &bucket, &manifest_key(0)).await;
    let entries = parse_manifest(&body, "m").unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_ref()).collect();
    assert_eq!(keys, ["inventory-test/", "inventory-test/key1"]);
    assert_eq!(entries[1].version_id, None);
}

/// A generated report on the fast local server: (client, bucket, spec, manifest URI, expected
/// counts).
type Generated = (
    aws_sdk_s3::Client,
    String,
    InventorySpec,
    String,
    s3bundler_testkit::generate::Expected,
);

/// Generates a CSV report on the fast local server.
async fn generated(spec_of: impl FnOnce(&str) -> InventorySpec) -> Generated {
    generated_as(DataFormat::Csv, spec_of).await
}

/// Generates a report in `format` on the fast local server.
async fn generated_as(
    format: DataFormat,
    spec_of: impl FnOnce(&str) -> InventorySpec,
) -> Generated {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "gen").await;
    let spec = spec_of(&bucket);
    let report = upload_report(
        &client,
        &bucket,
        "inventory/",
        &spec,
        report(&spec, format, false),
    )
    .await;
    (client, bucket, spec, report.manifest_uri, report.expected)
}

/// A CSV report of `objects` objects for moto, which cannot store keys with newlines.
async fn moto_report(client: &aws_sdk_s3::Client, bucket: &str, objects: u64) -> UploadedReport {
    let spec = InventorySpec {
        newline_keys: false,
        ..InventorySpec::new(bucket, objects)
    };
    upload_report(
        client,
        bucket,
        "inventory/",
        &spec,
        csv_report(&spec, false),
    )
    .await
}

/// The keys under `prefix`, but for incremental grouping's state (`PREFIX/state/…`) and the
/// catalog (`PREFIX/_catalog/…`).
async fn manifests_under(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let keys = list_keys(client, bucket, prefix).await;
    keys.into_iter()
        .filter(|k| {
            !k.split('/')
                .any(|folder| folder == "state" || folder == "_catalog")
        })
        .collect()
}

async fn read_manifests(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<Vec<u8>> {
    let mut keys = manifests_under(client, bucket, prefix).await;
    keys.sort_by_key(|k| {
        k.rsplit('.')
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut bodies = Vec::new();
    for key in keys {
        bodies.push(get_object(client, bucket, &key).await);
    }
    bodies
}

#[tokio::test]
async fn generated_versioned_inventory_splits_by_count_with_odd_keys_intact() {
    let (client, bucket, spec, uri, expected) = generated(|b| InventorySpec {
        versioned: true,
        data_files: 3,
        ..InventorySpec::new(b, 3000)
    })
    .await;
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(
        endpoint,
        &["group", "-m", &uri, "-b", &bucket, "-c", "500", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let summary = out.json();
    assert_eq!(summary["rows_seen"], expected.rows);
    assert_eq!(summary["objects_selected"], expected.selected);
    assert_eq!(summary["bytes_selected"], expected.bytes_selected);
    assert_eq!(summary["skipped"]["delete_marker"], expected.delete_markers);
    assert_eq!(
        summary["skipped"]["noncurrent_version"],
        expected.noncurrent
    );
    assert_eq!(
        summary["skipped"]["archived_needs_restore"],
        expected.needs_restore
    );

    let manifests = read_manifests(&client, &bucket, "s3grouper-output/").await;
    assert_eq!(
        manifests.len() as u64,
        expected.selected.div_ceil(500),
        "no staging leftovers, one per 500"
    );
    let want: Vec<_> = rows(&spec, false)
        .filter(|r| r.selected_by_default())
        .collect();
    let mut got = Vec::new();
    for (n, body) in manifests.iter().enumerate() {
        let entries = parse_manifest(body, "m").unwrap_or_else(|e| panic!("{e}"));
        if n + 1 < manifests.len() {
            assert_eq!(
                entries.len(),
                500,
                "manifest {n} closes at exactly the count"
            );
        }
        got.extend(entries.into_iter().map(|e| e.into_owned()));
    }
    assert_eq!(got.len(), want.len());
    for (entry, row) in got.iter().zip(&want) {
        assert_eq!(entry.key, row.key);
        assert_eq!(entry.size, row.size);
        assert_eq!(entry.version_id.as_deref(), row.version_id.as_deref());
        assert_eq!(entry.etag.as_deref(), Some(row.etag.as_str()));
        assert_eq!(
            entry.last_modified.as_deref(),
            Some(row.last_modified.as_str())
        );
        assert_eq!(entry.storage_class.as_deref(), Some(row.storage_class));
    }
    assert!(got.iter().any(|e| e.key.contains('\n')) && got.iter().any(|e| e.key.len() == 1024));
}

#[tokio::test]
async fn size_threshold_closes_manifests_and_a_rerun_rewrites_nothing() {
    let (client, bucket, _spec, uri, expected) = generated(|b| InventorySpec::new(b, 400)).await;
    let endpoint = &LocalS3::shared().endpoint;
    let args = ["group", "-m", &uri, "-b", &bucket, "-s", "64KiB", "--json"];
    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let manifests = out.json()["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(manifests.len() > 3);
    for (n, m) in manifests.iter().enumerate() {
        let bytes = m["bytes"].as_u64().unwrap_or(0);
        if n + 1 < manifests.len() {
            assert!(bytes >= 64 << 10, "manifest {n} closed early at {bytes}");
        }
        // It closes as soon as the threshold is reached: without its last object it was below.
    }
    assert_eq!(
        manifests
            .iter()
            .map(|m| m["objects"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        expected.selected
    );

    let again = s3bundler(endpoint, &args).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["manifests_written"], 0);
    assert_eq!(again.json()["manifests_unchanged"], manifests.len());
    let keys = manifests_under(&client, &bucket, "s3grouper-output/").await;
    assert_eq!(
        keys.len(),
        manifests.len(),
        "staging area is cleaned: {keys:?}"
    );
}

/// Every object under `prefix` with its bytes, staged ones included.
async fn objects_under(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut objects = std::collections::BTreeMap::new();
    for key in manifests_under(client, bucket, prefix).await {
        let body = get_object(client, bucket, &key).await;
        objects.insert(key, body);
    }
    objects
}

/// Grouping again with other thresholds would replace manifests that archives may describe.
/// Fails on the old code, which copied the new manifests over the old ones (and wrote the 5th).
#[tokio::test]
async fn regrouping_with_other_thresholds_replaces_no_manifest_and_writes_none() {
    let (client, bucket, _spec, uri, expected) = generated(|b| InventorySpec::new(b, 400)).await;
    let endpoint = &LocalS3::shared().endpoint;
    let group = |count: &'static str| {
        let (uri, bucket) = (uri.clone(), bucket.clone());
        async move {
            s3bundler(
                endpoint,
                &["group", "-m", &uri, "-b", &bucket, "-c", count, "--json"],
            )
            .await
        }
    };
    let first = group("100").await;
    assert_eq!(first.code, 0, "{first:?}");
    let manifests = expected.selected.div_ceil(100);
    assert!(expected.selected.div_ceil(80) > manifests);
    let before = objects_under(&client, &bucket, "s3grouper-output/").await;
    assert_eq!(before.len() as u64, manifests);

    let again = group("100").await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["manifests_unchanged"], manifests);

    let other = group("80").await;
    assert_eq!(other.code, 2, "{other:?}");
    let first_manifest = before.keys().next().map(String::as_str).unwrap_or_default();
    for needle in [
        &format!("s3://{bucket}/{first_manifest}")[..],
        "grouped with -c 100 -s 4GiB",
        "-c 80 -s 4GiB",
        "-p PREFIX",
    ] {
        assert!(
            other.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            other.stderr
        );
    }
    assert!(
        objects_under(&client, &bucket, "s3grouper-output/").await == before,
        "the manifests are unchanged byte for byte, no new one, no staging leftovers"
    );
}

/// A manifest that differs is found before any is written: a missing one before it is not
/// written either. Fails on the old code, which wrote the missing ones and replaced the other.
#[tokio::test]
async fn one_differing_manifest_stops_the_run_before_any_write() {
    let (client, bucket, _spec, uri, _) = generated(|b| InventorySpec::new(b, 400)).await;
    let endpoint = &LocalS3::shared().endpoint;
    let args = ["group", "-m", &uri, "-b", &bucket, "-c", "100"];
    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut keys = manifests_under(&client, &bucket, "s3grouper-output/").await;
    keys.sort();
    assert!(keys.len() >= 3, "{keys:?}");
    for key in &keys[..2] {
        client
            .delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
    let foreign = keys[keys.len() - 1].clone();
    put_object(&client, &bucket, &foreign, b"b,someone else's,1\n".to_vec()).await;

    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&foreign), "{}", out.stderr);
    assert!(
        out.stderr.contains("recorded no thresholds"),
        "{}",
        out.stderr
    );
    let left = objects_under(&client, &bucket, "s3grouper-output/").await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        keys[2..].to_vec(),
        "no manifest written"
    );
    assert_eq!(left[&foreign], b"b,someone else's,1\n");
}

/// Fails on the old code, which accepted zero thresholds (and cut a manifest per object).
#[tokio::test]
async fn zero_thresholds_are_refused_by_every_command_that_groups() {
    let (client, bucket, _spec, uri, _) = generated(|b| InventorySpec::new(b, 20)).await;
    let endpoint = &LocalS3::shared().endpoint;
    for command in ["group", "run", "plan"] {
        for (option, long) in [("-c", "--count-threshold"), ("-s", "--size-threshold")] {
            let mut args = vec![command, "-m", &uri, option, "0"];
            if command != "plan" {
                args.extend(["-b", &bucket]);
            }
            let out = s3bundler(endpoint, &args).await;
            assert_eq!(out.code, 2, "{args:?}: {out:?}");
            assert!(
                out.stderr.contains(long) && out.stderr.contains("at least 1"),
                "{args:?}: {}",
                out.stderr
            );
        }
    }
    assert!(manifests_under(&client, &bucket, "s3grouper-output/")
        .await
        .is_empty());
}

/// Two runs racing for one manifest: the other run's PUT lands between this run's check and
/// its write. moto refuses the conditional PUT (412); a manifest with other content is then
/// refused, an identical one is fine. Fails on the old code, whose CopyObject replaced it.
#[tokio::test]
async fn a_manifest_written_meanwhile_by_another_run_is_never_replaced() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "race").await;
    let report = moto_report(&client, &bucket, 30).await;
    let uri = report.manifest_uri;
    let reference = s3bundler(
        endpoint,
        &["group", "-m", &uri, "-b", &bucket, "-p", "reference"],
    )
    .await;
    assert_eq!(reference.code, 0, "{reference:?}");
    let reference_keys = manifests_under(&client, &bucket, "reference/").await;
    assert_eq!(reference_keys.len(), 1, "{reference_keys:?}");
    let same = get_object(&client, &bucket, &reference_keys[0]).await;
    let other = b"b,someone else's,1\n".to_vec();

    for (prefix, meanwhile, code) in [("differs", &other, 2), ("same", &same, 0)] {
        let proxy = FaultProxy::start(
            endpoint,
            FaultPlan {
                put_delay: Some(std::time::Duration::from_secs(2)),
                delay_put_keys_ending_with: Some(".0.index".into()),
                ..FaultPlan::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let child = spawn_s3bundler(
            &proxy.endpoint,
            &["group", "-m", &uri, "-b", &bucket, "-p", prefix, "--json"],
        );
        // The staged manifest's PUT, then the final one, which the proxy holds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while proxy
            .counts
            .operations()
            .get("PutObject")
            .copied()
            .unwrap_or(0)
            < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let target = reference_keys[0].replacen("reference/", &format!("{prefix}/"), 1);
        put_object(&client, &bucket, &target, meanwhile.clone()).await;
        let out = finish(child, std::time::Duration::from_secs(60)).await;
        assert_eq!(out.code, code, "{prefix}: {out:?}");
        assert_eq!(
            &get_object(&client, &bucket, &target).await,
            meanwhile,
            "{prefix}"
        );
        if code == 0 {
            assert_eq!(out.json()["manifests_unchanged"], 1, "{out:?}");
        } else {
            assert!(out.stderr.contains(&target), "{}", out.stderr);
        }
        assert_eq!(
            manifests_under(&client, &bucket, &format!("{prefix}/")).await,
            [target]
        );
    }
}

#[tokio::test]
async fn glacier_and_include_prefix_selection() {
    let (client, bucket, spec, uri, expected) = generated(|b| InventorySpec::new(b, 1000)).await;
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(
        endpoint,
        &["group", "-m", &uri, "-b", &bucket, "-g", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_selected"], expected.needs_restore);
    let keys = manifests_under(&client, &bucket, "s3grouper-output/").await;
    assert_eq!(
        keys,
        ["s3grouper-output/inventory-gen-".to_string()
            + &bucket["gen-".len()..]
            + "-daily-2026-11-22T01-00Z-manifest.0.glacier.index"]
    );

    let prefix = "odd/with space";
    let out = s3bundler(
        endpoint,
        &[
            "group", "-m", &uri, "-b", &bucket, "-i", prefix, "-p", "pfx", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let want = rows(&spec, false)
        .filter(|r| r.selected_by_default() && r.key.starts_with(prefix))
        .count();
    assert!(want > 0);
    assert_eq!(out.json()["objects_selected"], want);
}

#[tokio::test]
async fn zero_selected_objects_write_no_manifest_and_exit_0() {
    let (client, bucket, _spec, uri, _) = generated(|b| InventorySpec::new(b, 100)).await;
    let out = s3bundler(
        &LocalS3::shared().endpoint,
        &["group", "-m", &uri, "-b", &bucket, "-i", "no/such/prefix"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("no objects were selected"),
        "{}",
        out.stdout
    );
    assert!(manifests_under(&client, &bucket, "s3grouper-output/")
        .await
        .is_empty());
}

#[tokio::test]
async fn queue_gets_one_message_per_manifest() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let sqs = s3bundler_testkit::sqs_client(endpoint);
    let bucket = new_bucket(&client, "q").await;
    let queue_name = s3bundler_testkit::unique_name("manifests");
    sqs.create_queue()
        .queue_name(&queue_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let report = moto_report(&client, &bucket, 300).await;
    let out = s3bundler(
        endpoint,
        &[
            "group",
            "-m",
            &report.manifest_uri,
            "-b",
            &bucket,
            "-c",
            "100",
            "--queue",
            &queue_name,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let written: Vec<String> = out.json()["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["uri"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(written.len() as u64, report.expected.selected.div_ceil(100));

    let url = sqs
        .get_queue_url()
        .queue_name(&queue_name)
        .send()
        .await
        .ok()
        .and_then(|o| o.queue_url)
        .unwrap_or_default();
    let mut received = Vec::new();
    for _ in 0..10 {
        let batch = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let messages = batch.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body: serde_json::Value =
                serde_json::from_str(m.body().unwrap_or("")).unwrap_or_default();
            received.push(format!(
                "s3://{}/{}",
                body["Bucket"].as_str().unwrap_or(""),
                body["Key"].as_str().unwrap_or("")
            ));
        }
    }
    received.sort();
    let mut want = written.clone();
    want.sort();
    assert_eq!(received, want);
}

/// Runs group on a damaged report and checks the exit code, the message and that nothing was
/// written (neither manifests nor staged ones).
async fn assert_rejected(bucket: &str, uri: &str, code: i32, needles: &[&str]) {
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(endpoint, &["group", "-m", uri, "-b", bucket, "-c", "10"]).await;
    assert_eq!(out.code, code, "{out:?}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("ERROR"), "{}", out.stderr);
    let client = s3_client(endpoint);
    let left = manifests_under(&client, bucket, "s3grouper-output/").await;
    assert!(left.is_empty(), "manifests written for bad input: {left:?}");
}

async fn replace_manifest(
    client: &aws_sdk_s3::Client,
    uri: &str,
    edit: impl FnOnce(String) -> String,
) {
    let (bucket, key) = uri
        .trim_start_matches("s3://")
        .split_once('/')
        .unwrap_or_default();
    let json = String::from_utf8(get_object(client, bucket, key).await).unwrap_or_default();
    put_object(client, bucket, key, edit(json).into_bytes()).await;
}

/// Points the report at one data file in `format` with these (correctly checksummed) bytes.
async fn use_single_data_file(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    spec: &InventorySpec,
    format: DataFormat,
    uri: &str,
    key: &str,
    data: Vec<u8>,
) {
    let json = s3bundler_testkit::generate::manifest_json_as(
        format,
        spec,
        bucket,
        &[key.to_string()],
        std::slice::from_ref(&data),
    );
    put_object(client, bucket, key, data).await;
    replace_manifest(client, uri, |_| json).await;
}

#[tokio::test]
async fn malformed_manifest_json_missing_fields_and_unknown_format_exit_2() {
    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 50)).await;
    replace_manifest(&client, &uri, |_| "{\"sourceBucket\": ".into()).await;
    assert_rejected(
        &bucket,
        &uri,
        2,
        &["manifest.json", "not a valid S3 Inventory manifest.json"],
    )
    .await;

    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 50)).await;
    replace_manifest(&client, &uri, |j| j.replace("\"files\"", "\"nofiles\"")).await;
    assert_rejected(&bucket, &uri, 2, &["missing field `files`"]).await;

    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 50)).await;
    replace_manifest(&client, &uri, |j| j.replace("\"CSV\"", "\"Avro\"")).await;
    assert_rejected(&bucket, &uri, 2, &["unknown fileFormat `Avro`"]).await;

    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 50)).await;
    replace_manifest(&client, &uri, |j| {
        j.replace("Bucket, Key, Size", "Bucket, Key, Bytes")
    })
    .await;
    assert_rejected(&bucket, &uri, 2, &["no `Size` column"]).await;
}

#[tokio::test]
async fn checksum_file_that_does_not_match_exit_2() {
    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 50)).await;
    let checksum = uri.replace("manifest.json", "manifest.checksum");
    replace_manifest(&client, &uri, |j| j.replace("2016-11-30", "2016-11-31")).await;
    assert_rejected(&bucket, &checksum, 2, &["manifest.checksum"]).await;
}

#[tokio::test]
async fn wrong_md5_of_a_later_data_file_commits_nothing() {
    // Three data files of 40 rows and -c 10: the first file's manifests are staged before the
    // damage in the last file is found, and must not appear.
    let (client, bucket, _, uri, _) = generated(|b| InventorySpec {
        data_files: 3,
        ..InventorySpec::new(b, 120)
    })
    .await;
    let json = String::from_utf8(
        get_object(
            &client,
            &bucket,
            uri.trim_start_matches(&format!("s3://{bucket}/")),
        )
        .await,
    )
    .unwrap_or_default();
    let md5s: Vec<&str> = json
        .match_indices("\"MD5checksum\" : \"")
        .map(|(i, m)| &json[i + m.len()..i + m.len() + 32])
        .collect();
    let last = md5s.last().copied().unwrap_or_default().to_string();
    replace_manifest(&client, &uri, |j| {
        j.replace(&last, "0123456789abcdef0123456789abcdef")
    })
    .await;
    assert_rejected(
        &bucket,
        &uri,
        2,
        &["MD5", "0123456789abcdef0123456789abcdef", "-2.csv.gz"],
    )
    .await;
}

#[tokio::test]
async fn truncated_gzip_exit_2() {
    let (client, bucket, spec, uri, _) = generated(|b| InventorySpec::new(b, 2000)).await;
    let report = csv_report(&spec, false);
    let data = &report.data_files[0];
    let cut = data[..data.len() / 2].to_vec();
    use_single_data_file(
        &client,
        &bucket,
        &spec,
        DataFormat::Csv,
        &uri,
        "inventory/cut.csv.gz",
        cut,
    )
    .await;
    assert_rejected(&bucket, &uri, 2, &["inventory/cut.csv.gz", "truncated"]).await;
}

#[tokio::test]
async fn row_with_wrong_number_of_fields_exit_2() {
    let (client, bucket, spec, uri, _) = generated(|b| InventorySpec::new(b, 30)).await;
    let mut text = Vec::new();
    for row in rows(&spec, false).take(20) {
        s3bundler_testkit::generate::csv_line(&spec, &row, &mut text);
    }
    text.extend_from_slice(b"\"only\",\"three\",\"fields\"\n");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &text).unwrap_or_else(|e| panic!("{e}"));
    let data = encoder.finish().unwrap_or_default();
    use_single_data_file(
        &client,
        &bucket,
        &spec,
        DataFormat::Csv,
        &uri,
        "inventory/bad.csv.gz",
        data,
    )
    .await;
    assert_rejected(
        &bucket,
        &uri,
        2,
        &["inventory/bad.csv.gz row 21", "3 fields"],
    )
    .await;
}

#[tokio::test]
async fn manifest_or_data_file_not_found_exit_3() {
    let (client, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 30)).await;
    assert_rejected(
        &bucket,
        &uri.replace("manifest.json", "nothing.json"),
        3,
        &["nothing.json", "not found"],
    )
    .await;
    replace_manifest(&client, &uri, |j| j.replace("/data/", "/gone/")).await;
    assert_rejected(&bucket, &uri, 3, &["/gone/", "not found"]).await;
}

/// Refused credentials concern the caller, not the manifest: exit 5, as for every command.
#[tokio::test]
async fn refused_credentials_exit_5_and_name_the_manifest() {
    let (_, bucket, _, uri, _) = generated(|b| InventorySpec::new(b, 30)).await;
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler_with_env(
        endpoint,
        &["group", "-m", &uri, "-b", &bucket],
        &[("AWS_SECRET_ACCESS_KEY", "wrong")],
    )
    .await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("credentials were refused") && out.stderr.contains(&uri),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn output_bucket_missing_exit_4_through_moto() {
    // The local s3s server creates buckets on demand; moto answers NoSuchBucket as S3 does.
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "inv").await;
    let report = moto_report(&client, &bucket, 30).await;
    let out = s3bundler(
        endpoint,
        &[
            "group",
            "-m",
            &report.manifest_uri,
            "-b",
            "no-such-output-bucket",
        ],
    )
    .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("s3://no-such-output-bucket/"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn bad_usage_exit_2() {
    let out = s3bundler(
        &LocalS3::shared().endpoint,
        &["group", "-m", "not-an-s3-uri", "-b", "x"],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not an S3 location"), "{}", out.stderr);
    let out = s3bundler(
        &LocalS3::shared().endpoint,
        &["group", "-m", "s3://a/b", "-b", "x", "-s", "4XB"],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
}

/// A KMS key given without `--sse aws:kms` would be ignored and everything written with the
/// bucket's default encryption. Fails on the old code, which accepted it and ran the command.
#[tokio::test]
async fn sse_kms_key_id_without_sse_kms_is_a_usage_error() {
    let endpoint = &LocalS3::shared().endpoint;
    let (client, bucket, _, uri, _) = generated(|bucket| InventorySpec::new(bucket, 5)).await;
    let group = ["group", "-m", &uri, "-b", &bucket];
    for sse in [&[][..], &["--sse", "AES256"][..]] {
        let mut args = group.to_vec();
        args.extend_from_slice(sse);
        args.extend(["--sse-kms-key-id", "alias/archive"]);
        let out = s3bundler(endpoint, &args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("--sse-kms-key-id") && out.stderr.contains("add --sse aws:kms"),
            "{}",
            out.stderr
        );
        assert!(
            manifests_under(&client, &bucket, "s3grouper-output/")
                .await
                .is_empty(),
            "nothing written"
        );
    }
}

/// One generated versioned inventory (odd keys, delete markers, noncurrent versions, archived
/// objects, several data files) written as CSV, ORC and Parquet gives byte-identical manifests,
/// with default options and with --all-versions.
#[tokio::test]
async fn csv_orc_and_parquet_of_one_inventory_give_identical_manifests() {
    for options in [&[][..], &["--all-versions"][..]] {
        let mut outputs = Vec::new();
        for format in DataFormat::ALL {
            let (client, bucket, _, uri, expected) = generated_as(format, |_| InventorySpec {
                versioned: true,
                data_files: 3,
                long_keys: false,
                ..InventorySpec::new("source-bucket", 3000)
            })
            .await;
            let mut args = vec!["group", "-m", &uri, "-b", &bucket, "-c", "700", "--json"];
            args.extend_from_slice(options);
            let out = s3bundler(&LocalS3::shared().endpoint, &args).await;
            assert_eq!(out.code, 0, "{format:?}: {out:?}");
            assert_eq!(out.json()["rows_seen"], expected.rows, "{format:?}");
            let manifests = read_manifests(&client, &bucket, "s3grouper-output/").await;
            assert!(
                manifests.len() > 3,
                "{format:?}: {} manifests",
                manifests.len()
            );
            outputs.push((format, manifests));
        }
        for (format, manifests) in &outputs[1..] {
            assert!(
                *manifests == outputs[0].1,
                "{format:?} manifests differ from CSV's ({options:?})"
            );
        }
    }
}

/// A one-row ORC or Parquet file with these columns.
fn columnar_file(format: DataFormat, columns: Vec<(&str, arrow_array::ArrayRef)>) -> Vec<u8> {
    let schema = arrow_schema::Schema::new(
        columns
            .iter()
            .map(|(name, a)| arrow_schema::Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = arrow_array::RecordBatch::try_new(
        std::sync::Arc::new(schema),
        columns.into_iter().map(|c| c.1).collect(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    if format == DataFormat::Orc {
        let mut out = Vec::new();
        let mut writer = orc_rust::ArrowWriterBuilder::new(&mut out, batch.schema())
            .try_build()
            .unwrap_or_else(|e| panic!("{e}"));
        writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
        writer.close().unwrap_or_else(|e| panic!("{e}"));
        return out;
    }
    let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    writer.into_inner().unwrap_or_else(|e| panic!("{e}"))
}

/// Missing columns, wrong types, truncated files and checksum mismatches in ORC and Parquet
/// reports: exit 2, the data file named, nothing written.
#[tokio::test]
async fn bad_orc_and_parquet_files_exit_2_naming_the_file() {
    use std::sync::Arc;
    let text = |v: &str| Arc::new(arrow_array::StringArray::from(vec![v])) as arrow_array::ArrayRef;
    for format in [DataFormat::Orc, DataFormat::Parquet] {
        let ext = if format == DataFormat::Orc {
            "orc"
        } else {
            "parquet"
        };
        let generate = || {
            generated_as(format, |_| InventorySpec {
                long_keys: false,
                ..InventorySpec::new("source-bucket", 2000)
            })
        };

        let (client, bucket, spec, uri, _) = generate().await;
        let key = format!("inventory/nosize.{ext}");
        let data = columnar_file(format, vec![("bucket", text("b")), ("key", text("k"))]);
        use_single_data_file(&client, &bucket, &spec, format, &uri, &key, data).await;
        assert_rejected(&bucket, &uri, 2, &[&key, "no `Size` column"]).await;

        let (client, bucket, spec, uri, _) = generate().await;
        let key = format!("inventory/textsize.{ext}");
        let data = columnar_file(
            format,
            vec![
                ("bucket", text("b")),
                ("key", text("k")),
                ("size", text("12")),
            ],
        );
        use_single_data_file(&client, &bucket, &spec, format, &uri, &key, data).await;
        assert_rejected(&bucket, &uri, 2, &[&key, "column `size` has type Utf8"]).await;

        let (client, bucket, spec, uri, _) = generate().await;
        let key = format!("inventory/cut.{ext}");
        let mut data = report(&spec, format, false).data_files.remove(0);
        data.truncate(data.len() / 2);
        use_single_data_file(&client, &bucket, &spec, format, &uri, &key, data).await;
        assert_rejected(&bucket, &uri, 2, &[&key, "truncated"]).await;

        // A later data file whose MD5 does not match: earlier manifests are not committed.
        let (client, bucket, _, uri, _) = generated_as(format, |_| InventorySpec {
            data_files: 3,
            long_keys: false,
            ..InventorySpec::new("source-bucket", 120)
        })
        .await;
        let path = uri
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_string();
        let json = String::from_utf8(get_object(&client, &bucket, &path).await).unwrap_or_default();
        let marker = "\"MD5checksum\" : \"";
        let at = json.rfind(marker).unwrap_or_default() + marker.len();
        let last = json[at..at + 32].to_string();
        replace_manifest(&client, &uri, |j| {
            j.replace(&last, "0123456789abcdef0123456789abcdef")
        })
        .await;
        assert_rejected(
            &bucket,
            &uri,
            2,
            &[
                "MD5",
                "0123456789abcdef0123456789abcdef",
                &format!("-2.{ext}"),
            ],
        )
        .await;
    }
}

/// Data files are read several at a time; a first file that arrives last must not change
/// which objects go into which manifest.
#[tokio::test]
async fn a_slow_first_data_file_does_not_change_the_manifests() {
    for format in [DataFormat::Csv, DataFormat::Parquet] {
        let (client, bucket, _, uri, expected) = generated_as(format, |b| InventorySpec {
            data_files: 4,
            ..InventorySpec::new(b, 4000)
        })
        .await;
        let inventory_key = uri.trim_start_matches(&format!("s3://{bucket}/"));
        let inventory: serde_json::Value =
            serde_json::from_slice(&get_object(&client, &bucket, inventory_key).await)
                .unwrap_or_else(|e| panic!("{e}"));
        let first_file = inventory["files"][0]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("{inventory}"))
            .to_string();
        let endpoint = &LocalS3::shared().endpoint;
        let group = |endpoint: String, prefix: &'static str, readers: &'static str| {
            let (uri, bucket) = (uri.clone(), bucket.clone());
            async move {
                let mut args = vec!["group", "-m", &uri, "-b", &bucket, "-p", prefix];
                args.extend(["-c", "300", "--readers", readers, "--json"]);
                let out = s3bundler(&endpoint, &args).await;
                assert_eq!(out.code, 0, "{format:?}: {out:?}");
                assert_eq!(out.json()["rows_seen"], expected.rows, "{format:?}");
            }
        };
        group(endpoint.clone(), "one-at-a-time", "1").await;
        let proxy = FaultProxy::start(
            endpoint,
            FaultPlan {
                get_delay: Some(std::time::Duration::from_millis(1500)),
                delay_keys_containing: Some(first_file),
                ..FaultPlan::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        group(proxy.endpoint.clone(), "first-file-last", "4").await;
        let one_at_a_time = read_manifests(&client, &bucket, "one-at-a-time/").await;
        assert!(one_at_a_time.len() > 4, "{format:?}");
        assert!(
            read_manifests(&client, &bucket, "first-file-last/").await == one_at_a_time,
            "{format:?}: the manifests depend on the order files were read in"
        );
    }
}
