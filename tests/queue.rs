//! `bundle -q`: queue workers on moto's S3 and SQS (event notifications, redrive policy),
//! stopped and killed mid-manifest, outlasting their visibility timeout, and messages delivered
//! twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use common::*;
use s3bundler::archive::records::{parse_dlq, parse_index};
use s3bundler::queue_message::{parse_message, Request};
use s3bundler::s3uri::S3Uri;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
use s3bundler_testkit::generate::{create_objects, csv_report, rows, upload_report, InventorySpec};

async fn versioned_bucket(client: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = new_bucket(client, prefix).await;
    enable_versioning(client, &bucket).await;
    bucket
}

/// Versions of every key under `prefix`: a key written twice has two.
async fn versions_per_key(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, usize> {
    let out = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut versions = BTreeMap::new();
    for version in out.versions() {
        *versions
            .entry(version.key().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    versions
}

/// How many times each object appears across the indexes under `archive_prefix` and the DLQs
/// under `manifest_prefix`.
async fn accounted(
    client: &aws_sdk_s3::Client,
    archive_bucket: &str,
    archive_prefix: &str,
    manifest_bucket: &str,
    manifest_prefix: &str,
) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for key in list_keys(client, archive_bucket, archive_prefix).await {
        if key.ends_with(".index") {
            let rows = parse_index(&get_object(client, archive_bucket, &key).await, &key)
                .unwrap_or_else(|e| panic!("{e}"));
            for row in rows {
                *seen.entry(row.key).or_insert(0) += 1;
            }
        }
    }
    for key in list_keys(client, manifest_bucket, manifest_prefix).await {
        if key.ends_with(".dlq") {
            let rows = parse_dlq(&get_object(client, manifest_bucket, &key).await, &key)
                .unwrap_or_else(|e| panic!("{e}"));
            for row in rows {
                *seen.entry(row.key).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// `count` objects of `size` bytes and a bundle manifest (original 3-column form) listing them.
/// Returns the manifest's URI.
async fn slow_manifest(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    count: usize,
    size: usize,
) -> String {
    let mut manifest = String::new();
    for i in 0..count {
        let key = format!("data/object-{i:03}");
        let body: Vec<u8> = (0..size).map(|b| (b + i) as u8).collect();
        put_object(client, bucket, &key, body).await;
        manifest.push_str(&format!("{bucket},{key},{size}\n"));
    }
    put_object(
        client,
        bucket,
        "manifests/slow.0.index",
        manifest.into_bytes(),
    )
    .await;
    format!("s3://{bucket}/manifests/slow.0.index")
}

/// A queued 24 MiB manifest and a proxy in front of moto that delays every GET: a worker
/// through the proxy is mid-manifest for several seconds, its upload started after 8 objects.
struct Slow {
    client: aws_sdk_s3::Client,
    bucket: String,
    manifest: String,
    queue: String,
    proxy: FaultProxy,
}

async fn slow_work(name: &str, visibility: u32, delay_ms: u64) -> Slow {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, name).await;
    let manifest = slow_manifest(&client, &bucket, 24, 1 << 20).await;
    let queue = create_queue(
        moto,
        &s3bundler_testkit::unique_name(name),
        visibility,
        None,
    )
    .await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    let proxy = FaultProxy::start(
        moto,
        FaultPlan {
            get_delay: Some(Duration::from_millis(delay_ms)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Slow {
        client,
        bucket,
        manifest,
        queue,
        proxy,
    }
}

/// Waits until the archive's multipart upload has started (the worker is mid-manifest).
async fn wait_for_upload(client: &aws_sdk_s3::Client, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while incomplete_uploads(client, bucket).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never started its upload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn every_message_shape_in_the_aws_samples_is_understood() {
    let Some(samples) = aws_samples() else { return };
    let events = samples.join("s3-events");
    let read = |path: &str| {
        std::fs::read_to_string(events.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let lambda_body = |path: &str| {
        let wrapper: serde_json::Value =
            serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        wrapper["Records"][0]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let geom = Request::Bundle(vec![S3Uri::new(
        "tns-bucket-premade",
        "compare/geom.parquet",
    )]);
    // Direct S3 -> SQS delivery, and the same through SNS (raw delivery off), byte-exact.
    assert_eq!(
        parse_message(&read("real-world/s3-event-direct-compact-real-2026.json")),
        Ok(geom.clone())
    );
    assert_eq!(
        parse_message(&read("real-world/sns-envelope-body-real-2026.json")),
        Ok(geom.clone())
    );
    assert_eq!(
        parse_message(&lambda_body(
            "real-world/lambda-sqs-record-sns-wrapped-real-2026.json"
        )),
        Ok(geom)
    );
    assert_eq!(
        parse_message(&lambda_body("powertools-python/s3SqsEvent.json")),
        Ok(Request::Bundle(vec![S3Uri::new("xxx", "test.pdf")]))
    );
    // Lambda's S3 event has the notification's shape; keys arrive URL-encoded.
    assert_eq!(
        parse_message(&read("powertools-python/s3EventDecodedKey.json")),
        Ok(Request::Bundle(vec![S3Uri::new(
            "sourcebucket",
            "Happy Face.jpg"
        )]))
    );
    assert!(matches!(
        parse_message(&read("powertools-python/s3Event.json")),
        Ok(Request::Bundle(uris)) if uris.len() == 1
    ));
    // A creation event carrying glacierEventData is still a creation.
    assert!(matches!(
        parse_message(&read("powertools-python/s3EventGlacier.json")),
        Ok(Request::Bundle(uris)) if uris.len() == 1
    ));
    // A deletion creates nothing: deleted without work.
    assert!(matches!(
        parse_message(&read("powertools-python/s3EventDeleteObject.json")),
        Ok(Request::Nothing(_))
    ));
    // An SNS notification that is not an S3 event, and EventBridge events: not for us.
    assert!(parse_message(&lambda_body("powertools-python/snsSqsEvent.json")).is_err());
    assert!(parse_message(&read(
        "powertools-python/s3EventBridgeNotificationObjectCreatedEvent.json"
    ))
    .is_err());
}

#[tokio::test]
async fn fleet_group_notifies_two_workers_that_bundle_every_object_exactly_once() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let source = new_bucket(&client, "fleet-src").await;
    let manifests = new_bucket(&client, "fleet-manifests").await;
    let archives = versioned_bucket(&client, "fleet-archives").await;
    let queue = create_queue(endpoint, &s3bundler_testkit::unique_name("fleet"), 30, None).await;

    // S3 notifies the queue of every manifest `group` commits under manifests/.
    let rules = [
        (FilterRuleName::Prefix, "manifests/"),
        (FilterRuleName::Suffix, ".index"),
    ]
    .map(|(name, value)| FilterRule::builder().name(name).value(value).build());
    client
        .put_bucket_notification_configuration()
        .bucket(&manifests)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(queue_arn(endpoint, &queue).await)
                        .events(Event::S3ObjectCreated)
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .set_filter_rules(Some(rules.to_vec()))
                                        .build(),
                                )
                                .build(),
                        )
                        .build()
                        .unwrap_or_else(|e| panic!("{e}")),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    let spec = InventorySpec {
        newline_keys: false,
        ..InventorySpec::new(&source, 400)
    };
    let report = upload_report(
        &client,
        &source,
        "inventory/",
        &spec,
        csv_report(&spec, true),
    )
    .await;
    create_objects(&client, &spec, 16, true).await;
    let grouped = s3bundler(
        endpoint,
        &[
            "group",
            "-m",
            &report.manifest_uri,
            "-b",
            &manifests,
            "-p",
            "manifests",
            "-c",
            "40",
            "--json",
        ],
    )
    .await;
    assert_eq!(grouped.code, 0, "{grouped:?}");
    let manifest_count = grouped.json()["manifests"].as_array().map_or(0, Vec::len);
    assert!(manifest_count >= 5, "{grouped:?}");

    let extra = ["--max-messages", "0", "--idle-timeout", "6", "--json"];
    let workers: Vec<_> = (0..2)
        .map(|_| spawn_s3bundler(endpoint, &worker_args(&queue, &archives, &extra)))
        .collect();
    let mut bundled = 0;
    for worker in workers {
        let out = finish(worker, Duration::from_secs(300)).await;
        assert_eq!(out.code, 0, "{out:?}");
        bundled += out.stderr.matches("successfully archived").count();
    }
    assert_eq!(bundled, manifest_count, "each manifest bundled once");

    let seen = accounted(&client, &archives, "archives/", &manifests, "manifests/").await;
    let selected: Vec<String> = rows(&spec, false)
        .filter(|r| r.selected_by_default())
        .map(|r| r.key)
        .collect();
    assert_eq!(
        seen.len(),
        selected.len(),
        "every selected object accounted for"
    );
    for key in &selected {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{key:?} in exactly one index or DLQ"
        );
    }
    assert_eq!(
        messages_left(endpoint, &queue).await,
        0,
        "every message deleted"
    );
    let versions = versions_per_key(&client, &archives, "archives/").await;
    assert_eq!(
        versions.keys().filter(|k| k.ends_with(".tar")).count(),
        manifest_count
    );
    assert!(
        versions.values().all(|&n| n == 1),
        "no archive or index written twice: {versions:?}"
    );
}

#[tokio::test]
async fn a_garbage_message_is_left_for_redrive_while_the_worker_goes_on() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "garbage").await;
    let manifest = slow_manifest(&client, &bucket, 3, 100).await;
    let (dead, queue) = queue_with_dead_letter(endpoint, "work", 1, 1).await;
    send(endpoint, &queue, "this is not JSON").await;
    send(endpoint, &queue, &bucket_key_message(&manifest)).await;

    let extra = ["--max-messages", "0", "--idle-timeout", "5"];
    let out = finish(
        spawn_s3bundler(endpoint, &worker_args(&queue, &bucket, &extra)),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("ERROR") && out.stderr.contains("is not a manifest notification"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("successfully archived"),
        "{}",
        out.stderr
    );
    assert_eq!(messages_left(endpoint, &queue).await, 0);
    assert_eq!(
        receive_bodies(endpoint, &dead, 2).await,
        vec!["this is not JSON".to_string()],
        "the garbage went to the dead-letter queue"
    );
}

#[tokio::test]
async fn sigterm_mid_manifest_aborts_the_upload_releases_the_message_and_exits_0_within_5_seconds()
{
    let moto = moto::endpoint();
    let Slow {
        client,
        bucket,
        manifest,
        queue,
        proxy,
    } = slow_work("sigterm", 60, 400).await;

    let worker = spawn_s3bundler(
        &proxy.endpoint,
        &worker_args(&queue, &bucket, &["--concurrency", "2"]),
    );
    wait_for_upload(&client, &bucket).await;
    let stopped = Instant::now();
    send_signal(&worker, "TERM");
    let out = finish(worker, Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    assert!(out.stderr.contains("message released"), "{}", out.stderr);
    assert_eq!(
        incomplete_uploads(&client, &bucket).await,
        0,
        "upload aborted"
    );
    assert!(
        !list_keys(&client, &bucket, "archives/")
            .await
            .iter()
            .any(|k| k.ends_with(".index")),
        "no index for an unfinished manifest"
    );
    // Visible again at once, not after the 60-second timeout.
    assert_eq!(
        receive_bodies(moto, &queue, 1).await,
        vec![bucket_key_message(&manifest)]
    );
}

#[tokio::test]
async fn a_killed_worker_s_message_reappears_and_the_next_worker_finishes_it_without_leftovers() {
    let moto = moto::endpoint();
    let Slow {
        client,
        bucket,
        queue,
        proxy,
        ..
    } = slow_work("sigkill", 3, 300).await;

    let mut doomed = spawn_s3bundler(
        &proxy.endpoint,
        &worker_args(&queue, &bucket, &["--concurrency", "2"]),
    );
    wait_for_upload(&client, &bucket).await;
    doomed.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = doomed.wait().await;
    assert_eq!(
        incomplete_uploads(&client, &bucket).await,
        1,
        "the dead worker's upload"
    );

    let next = finish(
        spawn_s3bundler(
            moto,
            &worker_args(
                &queue,
                &bucket,
                &["--max-messages", "1", "--idle-timeout", "30"],
            ),
        ),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(next.code, 0, "{next:?}");
    assert!(
        next.stderr.contains("left by an earlier attempt"),
        "{}",
        next.stderr
    );
    assert_eq!(
        incomplete_uploads(&client, &bucket).await,
        0,
        "orphaned upload aborted"
    );
    assert_eq!(messages_left(moto, &queue).await, 0);
    let seen = accounted(&client, &bucket, "archives/", &bucket, "manifests/").await;
    assert_eq!(seen.len(), 24);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[tokio::test]
async fn the_heartbeat_keeps_a_manifest_longer_than_the_visibility_timeout_from_a_second_worker() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = versioned_bucket(&client, "heartbeat").await;
    let manifest = slow_manifest(&client, &bucket, 12, 1000).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("heartbeat"), 2, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    // 12 GETs of 1.5 s one at a time: about 18 s, nine visibility timeouts.
    let proxy = FaultProxy::start(
        moto,
        FaultPlan {
            get_delay: Some(Duration::from_millis(1500)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let slow = spawn_s3bundler(
        &proxy.endpoint,
        &worker_args(
            &queue,
            &bucket,
            &["--concurrency", "1", "--max-messages", "1"],
        ),
    );
    wait_until_received(moto, &queue).await;
    let rival = spawn_s3bundler(
        moto,
        &worker_args(
            &queue,
            &bucket,
            &["--max-messages", "1", "--idle-timeout", "12"],
        ),
    );
    let slow = finish(slow, Duration::from_secs(120)).await;
    let rival = finish(rival, Duration::from_secs(120)).await;
    assert_eq!(slow.code, 0, "{slow:?}");
    assert!(
        slow.stderr.contains("successfully archived"),
        "{}",
        slow.stderr
    );
    assert_eq!(rival.code, 0, "{rival:?}");
    assert!(
        !rival.stderr.contains("begin processing"),
        "the second worker received the message: {}",
        rival.stderr
    );
    let versions = versions_per_key(&client, &bucket, "archives/").await;
    assert!(versions.values().all(|&n| n == 1), "{versions:?}");
    assert_eq!(messages_left(moto, &queue).await, 0);
}

/// SQS hides a received message for 12 hours at most (here, a limit of 4 s): a manifest that
/// runs past it hands its message over (a fresh copy, the old one deleted) and finishes under its
/// lease; the copy then finds the index. The old code could only let the message reappear, and
/// a second worker redid the manifest from zero, forever for a manifest longer than the limit.
#[tokio::test]
async fn a_manifest_longer_than_sqs_allows_a_message_hidden_is_handed_over_not_restarted() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = versioned_bucket(&client, "handover").await;
    let manifest = slow_manifest(&client, &bucket, 8, 1000).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("handover"), 2, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    // 8 GETs of 1 s one at a time: about 8 s, twice the limit.
    let proxy = FaultProxy::start(
        moto,
        FaultPlan {
            get_delay: Some(Duration::from_millis(1000)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let worker = s3bundler(
        &proxy.endpoint,
        &worker_args(
            &queue,
            &bucket,
            &[
                "--concurrency",
                "1",
                "--max-messages",
                "2",
                "--idle-timeout",
                "6",
                "--message-hold-limit",
                "4",
            ],
        ),
    )
    .await;
    assert_eq!(worker.code, 0, "{worker:?}");
    assert!(worker.stderr.contains("handed over"), "{}", worker.stderr);
    assert_eq!(
        worker.stderr.matches("successfully archived").count(),
        1,
        "{}",
        worker.stderr
    );
    assert!(
        worker.stderr.contains("already bundled"),
        "{}",
        worker.stderr
    );
    let versions = versions_per_key(&client, &bucket, "archives/").await;
    assert!(
        !versions.is_empty() && versions.values().all(|&n| n == 1),
        "{versions:?}"
    );
    assert_eq!(messages_left(moto, &queue).await, 0);
}

#[tokio::test]
async fn a_message_delivered_twice_is_bundled_once() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = versioned_bucket(&client, "twice").await;
    let manifest = slow_manifest(&client, &bucket, 5, 100).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("twice"), 30, None).await;
    for _ in 0..2 {
        send(moto, &queue, &bucket_key_message(&manifest)).await;
    }
    let out = finish(
        spawn_s3bundler(
            moto,
            &worker_args(&queue, &bucket, &["--max-messages", "2", "--json"]),
        ),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr.matches("successfully archived").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("already bundled"), "{}", out.stderr);
    assert_eq!(
        messages_left(moto, &queue).await,
        0,
        "both deliveries deleted"
    );
    let versions = versions_per_key(&client, &bucket, "archives/").await;
    assert_eq!(versions.len(), 2, "one archive and one index: {versions:?}");
    assert!(versions.values().all(|&n| n == 1), "{versions:?}");
}

/// Old main wrote the index before the DLQ: when the DLQ PUT failed, the index existed, the
/// redelivered message found the manifest done, and its missing objects were recorded nowhere.
#[tokio::test]
async fn a_failed_dlq_write_leaves_no_index_and_the_redelivery_records_every_object() {
    use s3bundler_testkit::faults::FailPut;

    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "dlqfail").await;
    // Ten objects to archive, twenty listed but gone.
    let mut lines = String::new();
    for i in 0..30 {
        let key = format!("data/{i:02}");
        if i < 10 {
            put_object(&client, &bucket, &key, vec![i as u8; 100]).await;
        }
        lines.push_str(&format!("{bucket},{key},100\n"));
    }
    put_object(
        &client,
        &bucket,
        "manifests/gone.0.index",
        lines.into_bytes(),
    )
    .await;
    let manifest = format!("s3://{bucket}/manifests/gone.0.index");
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("dlqfail"), 30, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    let faults = FaultProxy::start(
        moto,
        FaultPlan {
            fail_put_keys_ending_with: Some(FailPut::internal_error(".dlq")),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let args = ["--max-messages", "1", "--retry-for", "1s", "--json"];
    let first = finish(
        spawn_s3bundler(&faults.endpoint, &worker_args(&queue, &bucket, &args)),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(first.code, 5, "{}", first.stderr);
    let keys = list_keys(&client, &bucket, "").await;
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("archives/") && k.ends_with(".index")),
        "no index without its DLQ: {keys:?}"
    );
    // The failed message waits out its backoff; a second delivery of it stands for its return.
    assert!(
        receive_bodies(moto, &queue, 1).await.is_empty(),
        "released with a pause, not at once"
    );
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    let second = finish(
        spawn_s3bundler(moto, &worker_args(&queue, &bucket, &args)),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(second.code, 1, "{}", second.stderr);
    let seen = accounted(&client, &bucket, "archives/", &bucket, "manifests/").await;
    assert_eq!(seen.len(), 30, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let dlq = parse_dlq(
        &get_object(&client, &bucket, "manifests/gone.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dlq.len(), 20);
}

/// Old main had no lease: a worker handed a manifest another worker was bundling bundled it
/// too (and aborted the other's upload as if it were left by an earlier attempt).
#[tokio::test]
async fn a_manifest_another_worker_holds_is_left_alone_and_comes_back_later() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "leased").await;
    let manifest = slow_manifest(&client, &bucket, 3, 100).await;
    // Another worker's live lease beside the manifest.
    hold_lease(&client, &bucket, "manifests/slow.0.index", 60).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("leased"), 30, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    let out = finish(
        spawn_s3bundler(
            moto,
            &worker_args(&queue, &bucket, &["--max-messages", "1"]),
        ),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code, 0, "not a failure: {}", out.stderr);
    assert!(
        out.stderr.contains("being bundled by another worker") && !out.stderr.contains("ERROR"),
        "{}",
        out.stderr
    );
    assert_eq!(
        messages_left(moto, &queue).await + messages_delayed(moto, &queue).await,
        1,
        "the message is kept (as a fresh copy, delayed)"
    );
    assert!(
        receive_bodies(moto, &queue, 1).await.is_empty(),
        "hidden until the lease would expire"
    );
    let keys = list_keys(&client, &bucket, "").await;
    assert!(
        !keys.iter().any(|k| k.starts_with("archives/")),
        "nothing written: {keys:?}"
    );
    assert_eq!(incomplete_uploads(&client, &bucket).await, 0);
}

/// Writes a lease on `manifest_key` held by another worker, expiring `seconds` from now.
async fn hold_lease(client: &aws_sdk_s3::Client, bucket: &str, manifest_key: &str, seconds: u64) {
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + seconds;
    let lease = serde_json::json!({"owner": "another-worker", "expires_at": expires_at});
    put_object(
        client,
        bucket,
        &format!("{manifest_key}.lease"),
        lease.to_string().into_bytes(),
    )
    .await;
}

/// Old main hid a duplicate whose manifest another worker held until that lease would expire
/// (a few seconds, since a live worker renews it): each receive counted toward maxReceiveCount,
/// so the duplicate of a manifest bundled for longer went to the dead-letter queue and fired
/// its alarm. Put off as a fresh copy, it is received many times and never dead-lettered.
#[tokio::test]
async fn a_duplicate_of_a_held_manifest_never_reaches_the_dead_letter_queue() {
    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "dupheld").await;
    let manifest = slow_manifest(&client, &bucket, 3, 100).await;
    let (dead, queue) = queue_with_dead_letter(moto, "dupheld", 2, 2).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    // The other worker renews its 2-second lease for 12 s, then stops (its lease expires).
    let renewer = {
        let (client, bucket) = (client.clone(), bucket.clone());
        tokio::spawn(async move {
            for _ in 0..12 {
                hold_lease(&client, &bucket, "manifests/slow.0.index", 2).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let out = finish(
        spawn_s3bundler(
            moto,
            &worker_args(
                &queue,
                &bucket,
                &["--max-messages", "0", "--idle-timeout", "8"],
            ),
        ),
        Duration::from_secs(90),
    )
    .await;
    renewer.abort();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .matches("being bundled by another worker")
            .count()
            > 2,
        "received more than maxReceiveCount times while held: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("successfully archived").count(),
        1,
        "bundled once the lease ended: {}",
        out.stderr
    );
    assert_eq!(messages_left(moto, &dead).await, 0, "nothing dead-lettered");
    assert_eq!(
        messages_left(moto, &queue).await,
        0,
        "the last copy deleted"
    );
}

/// Runs a worker (until the queue has been empty for 3 s) with `ECS_AGENT_URI` set to `agent`.
async fn protected_worker(
    endpoint: &str,
    queue: &str,
    bucket: &str,
    agent: &str,
    extra: &[&str],
) -> Output {
    let mut extra_args = vec!["--max-messages", "0", "--idle-timeout", "3"];
    extra_args.extend_from_slice(extra);
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        s3bundler_with_env(
            endpoint,
            &worker_args(queue, bucket, &extra_args),
            &[("ECS_AGENT_URI", agent)],
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("the worker did not exit"));
    assert_eq!(out.code, 0, "{out:?}");
    out
}

/// Where `needle` first (or last) appears in the worker's log, for ordering its steps.
fn log_position(out: &Output, needle: &str, last: bool) -> usize {
    let found = if last {
        out.stderr.rfind(needle)
    } else {
        out.stderr.find(needle)
    };
    found.unwrap_or_else(|| panic!("{needle:?} not logged: {}", out.stderr))
}

#[tokio::test]
async fn task_protection_is_held_from_before_the_first_manifest_until_the_queue_is_empty() {
    use s3bundler_testkit::ecs_agent::{AgentAnswer, AgentStandIn};

    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "protect").await;
    let first = slow_manifest(&client, &bucket, 3, 100).await;
    let lines = get_object(&client, &bucket, "manifests/slow.0.index").await;
    put_object(&client, &bucket, "manifests/again.0.index", lines).await;
    let second = format!("s3://{bucket}/manifests/again.0.index");
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("protect"), 30, None).await;
    for manifest in [&first, &second] {
        send(moto, &queue, &bucket_key_message(manifest)).await;
    }
    let agent = AgentStandIn::start(AgentAnswer::Protect).unwrap_or_else(|e| panic!("{e}"));

    let out = protected_worker(moto, &queue, &bucket, &agent.uri, &[]).await;
    assert_eq!(
        out.stderr.matches("successfully archived").count(),
        2,
        "{}",
        out.stderr
    );
    let requests = agent.requests();
    assert!(
        requests.iter().all(|r| r.method == "PUT"
            && r.path
                .ends_with("/api/0123456789abcdef-task/task-protection/v1/state")),
        "{requests:?}"
    );
    // One protection for both manifests, back to back, and one clear: no flapping in between.
    let states: Vec<_> = requests.iter().map(|r| r.enables()).collect();
    assert_eq!(states, vec![Some(true), Some(false)], "{requests:?}");
    assert_eq!(requests[0].body["ExpiresInMinutes"], 60, "{requests:?}");
    assert!(
        log_position(&out, "task scale-in protection enabled", false)
            < log_position(&out, "begin processing", false),
        "protected before the first manifest: {}",
        out.stderr
    );
    assert!(
        log_position(&out, "successfully archived", true)
            < log_position(&out, "task scale-in protection cleared", false),
        "cleared after the last manifest: {}",
        out.stderr
    );
    assert_eq!(messages_left(moto, &queue).await, 0);
}

#[tokio::test]
async fn task_protection_is_renewed_before_it_lapses_while_a_long_manifest_runs() {
    use s3bundler_testkit::ecs_agent::{AgentAnswer, AgentStandIn};

    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "renew").await;
    let manifest = slow_manifest(&client, &bucket, 8, 100).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("renew"), 30, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    // 8 GETs of 0.75 s one at a time: 6 s of bundling, renewed every second.
    let proxy = FaultProxy::start(
        moto,
        FaultPlan {
            get_delay: Some(Duration::from_millis(750)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let agent = AgentStandIn::start(AgentAnswer::Protect).unwrap_or_else(|e| panic!("{e}"));
    let extra = [
        "--concurrency",
        "1",
        "--task-protection",
        "1",
        "--task-protection-renew",
        "1",
    ];
    let out = protected_worker(&proxy.endpoint, &queue, &bucket, &agent.uri, &extra).await;
    assert!(
        out.stderr.contains("successfully archived"),
        "{}",
        out.stderr
    );
    let requests = agent.requests();
    let (last, holds) = requests
        .split_last()
        .unwrap_or_else(|| panic!("no request"));
    assert_eq!(last.enables(), Some(false), "{requests:?}");
    assert!(
        holds.len() >= 4,
        "renewed while the manifest ran: {requests:?}"
    );
    for hold in holds {
        assert_eq!(hold.enables(), Some(true), "{requests:?}");
        assert_eq!(hold.body["ExpiresInMinutes"], 1, "{requests:?}");
    }
    for pair in holds.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(800) && gap < Duration::from_secs(5),
            "renewals a second apart: {gap:?}"
        );
    }
}

/// Protection is an optimization: an agent that fails or cannot be reached costs a WARN, never
/// a manifest.
#[tokio::test]
async fn a_failing_or_unreachable_protection_endpoint_does_not_stop_the_worker() {
    use s3bundler_testkit::ecs_agent::{AgentAnswer, AgentStandIn};

    let moto = moto::endpoint();
    let client = s3_client(moto);
    let failing = AgentStandIn::start(AgentAnswer::ServerError).unwrap_or_else(|e| panic!("{e}"));
    // Nothing listens on port 1: connections are refused.
    let agents = [
        failing.uri.clone(),
        "http://127.0.0.1:1/api/task".to_string(),
    ];
    for agent in &agents {
        let bucket = new_bucket(&client, "unprotected").await;
        let manifest = slow_manifest(&client, &bucket, 3, 100).await;
        let queue = create_queue(
            moto,
            &s3bundler_testkit::unique_name("unprotected"),
            30,
            None,
        )
        .await;
        send(moto, &queue, &bucket_key_message(&manifest)).await;
        let out = protected_worker(moto, &queue, &bucket, agent, &[]).await;
        assert!(
            out.stderr.contains("successfully archived"),
            "{}",
            out.stderr
        );
        for needle in [
            "could not enable the task's scale-in protection",
            "could not clear the task's scale-in protection",
        ] {
            let at = log_position(&out, needle, false);
            let line_start = out.stderr[..at].rfind('\n').map_or(0, |n| n + 1);
            let line = out.stderr[line_start..].lines().next().unwrap_or_default();
            assert!(line.contains("WARN"), "{line}");
        }
        assert!(!out.stderr.contains("ERROR"), "{}", out.stderr);
        assert_eq!(messages_left(moto, &queue).await, 0);
    }
    let states: Vec<_> = failing.requests().iter().map(|r| r.enables()).collect();
    assert_eq!(states, vec![Some(true), Some(false)]);
}

#[tokio::test]
async fn task_protection_0_never_calls_the_agent() {
    use s3bundler_testkit::ecs_agent::{AgentAnswer, AgentStandIn};

    let moto = moto::endpoint();
    let client = s3_client(moto);
    let bucket = new_bucket(&client, "noprotect").await;
    let manifest = slow_manifest(&client, &bucket, 2, 100).await;
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("noprotect"), 30, None).await;
    send(moto, &queue, &bucket_key_message(&manifest)).await;
    let agent = AgentStandIn::start(AgentAnswer::Protect).unwrap_or_else(|e| panic!("{e}"));
    let out = protected_worker(
        moto,
        &queue,
        &bucket,
        &agent.uri,
        &["--task-protection", "0"],
    )
    .await;
    assert!(
        out.stderr.contains("successfully archived"),
        "{}",
        out.stderr
    );
    assert!(agent.requests().is_empty(), "{:?}", agent.requests());
}
