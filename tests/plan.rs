//! `plan`: its request counts against what `run` then does on moto, counted by
//! operation at a proxy in front of it; bad price tables and classes; `--sample`: its GETs,
//! that it writes nothing, and its projected time against `run`'s at 20 ms a request.

mod common;

use std::collections::BTreeMap;

use common::*;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
use s3bundler_testkit::generate::{
    body_for, csv_report, csv_report_with_objects, rows, upload_report, InventorySpec,
    UploadedReport,
};

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
    assert_eq!(
        did("CopyObject"),
        planned("copies") + manifests,
        "big objects and manifests"
    );
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

#[tokio::test]
async fn plan_refuses_unknown_classes_and_bad_price_files() {
    let endpoint = &LocalS3::shared().endpoint;
    let out = s3bundler(
        endpoint,
        &[
            "plan",
            "-m",
            "s3://x/manifest.json",
            "--target-storage-class",
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

/// An inventory of `objects` objects of at most `max_size` bytes on the local server, every
/// selected object written except those whose index is in `missing`.
async fn local_inventory(
    name: &str,
    objects: u64,
    max_size: u64,
    missing: &[usize],
) -> (String, UploadedReport) {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, name).await;
    let spec = InventorySpec {
        newline_keys: false,
        long_keys: false,
        max_object_size: max_size,
        data_files: 2,
        ..InventorySpec::new(&bucket, objects)
    };
    for (i, row) in rows(&spec, true)
        .filter(|r| r.selected_by_default())
        .enumerate()
    {
        if !missing.contains(&i) {
            server
                .write_object_file(&bucket, &row.key, &body_for(&row.key, row.size))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let report = upload_report(
        &client,
        &bucket,
        "inventory/",
        &spec,
        csv_report(&spec, true),
    )
    .await;
    (bucket, report)
}

/// Requests of each kind made between two readings of a proxy's counts.
fn delta<'a>(
    after: &BTreeMap<&'a str, u64>,
    before: &BTreeMap<&'a str, u64>,
) -> BTreeMap<&'a str, u64> {
    after
        .keys()
        .map(|name| (*name, diff(after, before, name)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test]
async fn plan_sample_projects_the_time_run_then_takes() {
    const SAMPLE: u64 = 600;
    let (bucket, report) = local_inventory("plansample", 5000, 2048, &[]).await;
    let proxy = FaultProxy::start(
        &LocalS3::shared().endpoint,
        FaultPlan {
            latency: Some(std::time::Duration::from_millis(20)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let before = proxy.counts.operations();
    let plain = s3bundler(
        &proxy.endpoint,
        &["plan", "-m", &report.manifest_uri, "--json"],
    )
    .await;
    assert_eq!(plain.code, 0, "{plain:?}");
    let middle = proxy.counts.operations();
    let sample = SAMPLE.to_string();
    let args = ["plan", "-m", &report.manifest_uri, "--sample", &sample];
    let sampled = s3bundler(&proxy.endpoint, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(sampled.code, 0, "{sampled:?}");
    let after = proxy.counts.operations();
    let (plain_ops, sampled_ops) = (delta(&middle, &before), delta(&after, &middle));
    // The sample adds exactly SAMPLE object GETs, and neither plan writes anything.
    assert_eq!(
        sampled_ops.get("GetObject").copied().unwrap_or(0),
        plain_ops.get("GetObject").copied().unwrap_or(0) + SAMPLE,
        "{sampled_ops:?} vs {plain_ops:?}"
    );
    for ops in [&plain_ops, &sampled_ops] {
        assert!(
            ops.keys()
                .all(|op| matches!(*op, "GetObject" | "HeadObject" | "GetObjectTagging")),
            "plan made more than reads: {ops:?}"
        );
    }
    let plan = sampled.json();
    let taken = &plan["sample"];
    assert_eq!(taken["objects"].as_u64(), Some(SAMPLE), "{taken}");
    assert_eq!(taken["succeeded"].as_u64(), Some(SAMPLE), "{taken}");
    assert_eq!(taken["failed"], serde_json::json!({}), "{taken}");
    assert_eq!(taken["rates_are_lower_bounds"], false, "{taken}");
    assert!(
        taken["latency_p50_ms"].as_f64().unwrap_or(0.0) >= 20.0,
        "{taken}"
    );
    // 600 GETs at $0.0004 per 1,000 or more (infrequent-access classes cost more).
    assert!(
        taken["cost"].as_f64().unwrap_or(0.0) >= 0.00024 - 1e-12,
        "{taken}"
    );
    let workers: Vec<u64> = plan["time"]["projections"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["workers"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(workers, [1, 10, 100], "{plan}");
    assert!(
        plan["time"]["prefixes"].as_u64().unwrap_or(0) > 90,
        "{plan}"
    );

    // The human table says the same.
    let table = s3bundler(&proxy.endpoint, &args).await;
    assert_eq!(table.code, 0, "{table:?}");
    for needle in [
        "random sample of 600",
        "p50 / p90",
        "1 worker",
        "100 workers",
    ] {
        assert!(table.stdout.contains(needle), "{needle}: {}", table.stdout);
    }

    // The projection for one worker against the time `run` takes (one manifest, so one
    // worker's work). Both are timings on a machine shared with the server and the proxy: a
    // second attempt (a fresh sample, and a run into fresh prefixes) is allowed when the
    // first is off.
    let mut attempts = Vec::new();
    for attempt in 0..2 {
        let plan = if attempt == 0 {
            plan.clone()
        } else {
            let again = s3bundler(&proxy.endpoint, &[&args[..], &["--json"]].concat()).await;
            assert_eq!(again.code, 0, "{again:?}");
            again.json()
        };
        let projected = plan["time"]["projections"][0]["seconds"]
            .as_f64()
            .unwrap_or(0.0);
        let prefix = format!("attempt{attempt}");
        let started = std::time::Instant::now();
        let run = s3bundler(
            &proxy.endpoint,
            &[
                "run",
                "-m",
                &report.manifest_uri,
                "-b",
                &bucket,
                "-p",
                &prefix,
                "--archive-prefix",
                &prefix,
                "--json",
            ],
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(
            run.json()["objects_archived"].as_u64(),
            plan["objects_archived"].as_u64()
        );
        eprintln!(
            "projected {projected:.2} s for one worker, run took {took:.2} s ({:+.0}%)\n{}\n{}",
            100.0 * (projected - took) / took,
            plan["sample"],
            plan["time"]
        );
        attempts.push((projected, took));
        if (projected - took).abs() <= 0.2 * took {
            return;
        }
    }
    panic!("projected vs run's seconds, not within 20%: {attempts:?}");
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
