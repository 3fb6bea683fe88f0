//! `plan`: its request counts against what `run` then does on moto, counted by
//! operation at a proxy in front of it; bad price tables and classes; `--sample` on a small
//! inventory and bad input (tests/plan_sample.rs times it against `run`).

mod common;

use std::collections::BTreeMap;

use common::*;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
use s3bundler_testkit::generate::{csv_report_with_objects, InventorySpec};

fn diff(after: &BTreeMap<&str, u64>, before: &BTreeMap<&str, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn plan_counts_the_requests_run_then_makes() {
    // moto: copies keep tags, which the fast local server cannot store.
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "plan").await;
    let spec = InventorySpec {
        newline_keys: false,
        ..InventorySpec::new(&bucket, 1500)
    };
    let report = csv_report_with_objects(&client, &spec, 16, true).await;
    let proxy = FaultProxy::start(endpoint, FaultPlan::default()).unwrap_or_else(|e| panic!("{e}"));

    // Objects above 32 KiB are copied whole, so the plan has copies too.
    let grouping = ["-c", "400", "--maxsize", "32KiB"];
    let mut plan_args = vec!["plan", "-m", &report.manifest_uri, "--json"];
    plan_args.extend(grouping);
    let plan = s3bundler(&proxy.endpoint, &plan_args).await;
    assert_eq!(plan.code, 0, "{plan:?}");
    let plan = plan.json();
    let manifests = plan["manifests"].as_u64().unwrap_or(0);
    assert!(manifests >= 3, "{plan}");
    assert!(plan["objects_copied"].as_u64().unwrap_or(0) > 0, "{plan}");
    assert_eq!(
        plan["objects"].as_u64(),
        Some(report.expected.selected),
        "{plan}"
    );

    let before = proxy.counts.operations();
    let mut run_args = vec![
        "run",
        "-m",
        &report.manifest_uri,
        "-b",
        &bucket,
        "--archive-prefix",
        "archives",
        "--json",
    ];
    run_args.extend(grouping);
    let run = s3bundler(&proxy.endpoint, &run_args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let after = proxy.counts.operations();
    let did = |name| diff(&after, &before, name);
    let planned = |name: &str| plan["requests"][name].as_u64().unwrap_or(u64::MAX);

    assert_eq!(
        did("GetObject"),
        planned("object_gets") + planned("inventory_and_manifest_gets")
    );
    assert!(did("GetObjectTagging") <= planned("tagging_gets_at_most"));
    assert_eq!(did("HeadObject"), planned("heads"));
    assert_eq!(did("ListMultipartUploads"), planned("lists"));
    // Manifests are put in place with conditional PUTs, never copied.
    assert_eq!(did("CopyObject"), planned("copies"), "big objects");
    assert_eq!(
        did("PutObject") + did("CopyObject"),
        planned("other_puts") + planned("copies")
    );
    // Parts are estimated from a typical tar header size: within one part per archive.
    let archive_puts =
        did("CreateMultipartUpload") + did("UploadPart") + did("CompleteMultipartUpload");
    let archives = plan["archives"].as_u64().unwrap_or(0);
    assert_eq!(did("CreateMultipartUpload"), archives);
    assert!(
        archive_puts.abs_diff(planned("archive_puts")) <= archives,
        "archive requests {archive_puts} vs planned {}",
        planned("archive_puts")
    );
    // And the archives it planned are the ones written.
    let summary = run.json();
    assert_eq!(
        summary["objects_archived"].as_u64(),
        plan["objects_archived"].as_u64(),
        "{summary}"
    );
    assert_eq!(
        summary["objects_copied"].as_u64(),
        plan["objects_copied"].as_u64(),
        "{summary}"
    );
}

/// Old main: plan assumed DEEP_ARCHIVE (`--target-storage-class`) while bundle and run wrote
/// STANDARD (`--storage-class`): one flag, one default, and the cold classes beside it.
#[tokio::test]
async fn plan_assumes_bundles_storage_class_and_compares_the_cold_ones() {
    let (_, report) = local_inventory("planclass", 20, 512, &[]).await;
    let endpoint = &LocalS3::shared().endpoint;
    let plan = |extra: &'static [&'static str]| {
        let manifest = report.manifest_uri.clone();
        async move {
            let mut args = vec!["plan", "-m", manifest.as_str(), "--json"];
            args.extend_from_slice(extra);
            let out = s3bundler(endpoint, &args).await;
            assert_eq!(out.code, 0, "{out:?}");
            out.json()
        }
    };
    let default = plan(&[]).await;
    assert_eq!(default["target_storage_class"], "STANDARD", "{default}");
    assert!(default["compared"]["DEEP_ARCHIVE"]["monthly_bundled"].is_number());
    let deep = plan(&["--storage-class", "DEEP_ARCHIVE"]).await;
    assert_eq!(deep["target_storage_class"], "DEEP_ARCHIVE", "{deep}");
    assert_eq!(
        deep["monthly_bundled"], default["compared"]["DEEP_ARCHIVE"]["monthly_bundled"],
        "{deep}"
    );
    // Recalling from an instant class costs nothing to plan; from DEEP_ARCHIVE, per tier.
    assert_eq!(default["recall"], serde_json::json!([]), "{default}");
    let recall = deep["recall"].as_array().expect("recall");
    assert_eq!(recall.len(), 2, "1% and 100%: {deep}");
    let all = &recall[1];
    assert_eq!(all["percent"], 100, "{deep}");
    let tiers: Vec<_> = all["estimates"]
        .as_array()
        .expect("estimates")
        .iter()
        .map(|e| e["tier"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        tiers,
        ["Bulk", "Standard"],
        "no Expedited from DEEP_ARCHIVE: {deep}"
    );
    assert_eq!(all["estimates"][0]["archives"], deep["archives"], "{deep}");
    assert_eq!(
        all["estimates"][0]["bytes"], deep["archive_bytes"],
        "{deep}"
    );
    assert_eq!(all["estimates"][0]["time"], "within 48 hours", "{deep}");
    let text = s3bundler(
        endpoint,
        &[
            "plan",
            "-m",
            &report.manifest_uri,
            "--storage-class",
            "DEEP_ARCHIVE",
        ],
    )
    .await;
    assert!(
        text.stdout.contains("recall from DEEP_ARCHIVE"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn plan_refuses_unknown_classes_and_bad_price_files() {
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(
        endpoint,
        &[
            "plan",
            "-m",
            "s3://x/manifest.json",
            "--storage-class",
            "TAPE",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TAPE"), "{}", out.stderr);
    let prices = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(prices.path(), "{\"region\": 1}").unwrap_or_else(|e| panic!("{e}"));
    let path = prices.path().display().to_string();
    let out = s3bundler(
        endpoint,
        &["plan", "-m", "s3://x/manifest.json", "--prices", &path],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&path), "{}", out.stderr);
}

#[tokio::test]
async fn plan_sample_reads_every_object_when_asked_for_more_and_counts_failures() {
    let (_, report) = local_inventory("plansmall", 60, 512, &[3, 7]).await;
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(
        endpoint,
        &[
            "plan",
            "-m",
            &report.manifest_uri,
            "--sample",
            "100000",
            "--workers",
            "2,5",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let plan = out.json();
    let selected = plan["objects_archived"].as_u64().unwrap_or(0);
    assert!(selected > 10, "{plan}");
    let sample = &plan["sample"];
    assert_eq!(sample["requested"].as_u64(), Some(100_000), "{sample}");
    assert_eq!(sample["objects"].as_u64(), Some(selected), "{sample}");
    assert_eq!(sample["failed"]["NoSuchKey"].as_u64(), Some(2), "{sample}");
    assert_eq!(sample["succeeded"].as_u64(), Some(selected - 2), "{sample}");
    assert_eq!(sample["rates_are_lower_bounds"], true, "{sample}");
    assert_eq!(plan["time"]["projections"][1]["workers"].as_u64(), Some(5));

    let table = s3bundler(
        endpoint,
        &["plan", "-m", &report.manifest_uri, "--sample", "100000"],
    )
    .await;
    assert_eq!(table.code, 0, "{table:?}");
    eprintln!("{}", table.stdout);
    for needle in ["every object was read", "NoSuchKey=2", "lower bounds"] {
        assert!(table.stdout.contains(needle), "{needle}: {}", table.stdout);
    }

    for bad in [
        &["--sample", "0"][..],
        &["--sample", "-3"],
        &["--sample", "2", "--workers", "0"],
        &["--workers", "3"],
        &["--sample", "2000000"],
    ] {
        let out = s3bundler(
            endpoint,
            &[&["plan", "-m", &report.manifest_uri][..], bad].concat(),
        )
        .await;
        assert_eq!(out.code, 2, "{bad:?}: {out:?}");
    }
}
