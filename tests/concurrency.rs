//! The GETs in flight at real S3 latency: a test binary of its own, so that no other test
//! competes for the cores and slows the answers it watches.

mod common;

use common::*;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

/// At 100 ms a request, the default GETs in flight (128 per core) cap a worker at 1,280
/// objects a second per core whatever its CPU could do: while S3 answers as fast as with
/// fewer, bundle raises them. A `--concurrency` the user chose is kept.
#[tokio::test]
async fn the_gets_in_flight_grow_while_answers_stay_fast_unless_chosen() {
    const OBJECTS: usize = 3000;
    let server = LocalS3::shared();
    let (_client, bucket, manifest) = local_objects("grow", OBJECTS, 1024).await;
    let slow = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            latency: Some(std::time::Duration::from_millis(100)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bundle = |prefix: &'static str, extra: &'static [&'static str]| {
        let args: Vec<&str> = [
            "bundle", "-m", &manifest, "-b", &bucket, "-p", prefix, "--json",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        let endpoint = slow.endpoint.clone();
        async move { s3bundler(&endpoint, &args).await }
    };
    let grown = bundle("default", &[]).await;
    assert_eq!(grown.code, 0, "{}", grown.stderr);
    assert_eq!(grown.json()["objects_archived"], OBJECTS);
    assert!(
        grown.stderr.contains("raised the GETs in flight from"),
        "the default grew: {}",
        grown.stderr
    );
    // The archive holds every object once more under another prefix: a fresh run.
    let chosen = bundle("chosen", &["--concurrency", "64"]).await;
    assert_eq!(chosen.code, 0, "{}", chosen.stderr);
    assert_eq!(chosen.json()["objects_archived"], OBJECTS);
    assert!(
        !chosen.stderr.contains("raised the GETs in flight"),
        "a chosen --concurrency is kept: {}",
        chosen.stderr
    );
}
