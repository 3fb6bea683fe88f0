//! `plan --sample`: the sample's GETs at a proxy, that plan writes nothing, and the projected
//! time for one worker against the time `run` then takes, every request delayed 20 ms. A test
//! binary of its own: cargo runs test binaries one at a time, so no other test competes for
//! the cores while this one times.

mod common;

use std::collections::BTreeMap;

use common::*;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

fn diff(after: &BTreeMap<&str, u64>, before: &BTreeMap<&str, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
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

/// How far the projection may be from run's time: 20% in the optimized build that
/// `scripts/test` and CI run. In a debug build the unoptimized server in this process takes
/// most of the CPU of sample and run alike, so bundle's own work per object (the 1.2 of
/// `sample::BUNDLE_OVERHEAD`, measured optimized) hardly shows: there the projection came out
/// 10-50% long, and only a gross error is caught.
const TOLERANCE: f64 = if cfg!(debug_assertions) { 0.6 } else { 0.2 };

#[tokio::test]
async fn plan_sample_projects_the_time_run_then_takes() {
    const SAMPLE: u64 = 2000;
    let (bucket, report) = local_inventory("plansample", 10_000, 2048, &[]).await;
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
    // 2,000 GETs at $0.0004 per 1,000 or more (infrequent-access classes cost more).
    assert!(
        taken["cost"].as_f64().unwrap_or(0.0) >= 0.0008 - 1e-12,
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
        "random sample of 2000",
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
        if (projected - took).abs() <= TOLERANCE * took {
            return;
        }
    }
    panic!("projected vs run's seconds, not within {TOLERANCE}: {attempts:?}");
}
