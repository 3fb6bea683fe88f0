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

    // A key whose manifest is not bundled yet is not archived, and says so.
    let waiting = manifest_keys(&client, &source, &manifests[1]).await[0].clone();
    let out = locate(moto::endpoint(), &source, &waiting, &archive, &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.json()["not_bundled"],
        serde_json::json!([manifests[1]]),
        "{}",
        out.stdout
    );
}
