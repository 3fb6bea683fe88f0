//! Failure semantics: a record is never lost, a healthy object never lands in the DLQ, a
//! failure of the caller fails the manifest instead of its objects, and every phase can be
//! interrupted without leaving an upload behind. Each test causes the failure (the fault
//! proxy, a signal, a second worker) and checks what is left in S3. Each failed on the main
//! branch before these rules (issue 14): the comment of each says how.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use s3bundler::archive::records::{parse_dlq, parse_index, DlqReason, IndexRow};
use s3bundler::bundle::ARCHIVE_ETAG_METADATA;
use s3bundler::manifest::ManifestWriter;
use s3bundler_testkit::faults::{FailAfter, FaultPlan, FaultProxy};

/// The account moto answers for: sent as `--expected-bucket-owner`.
const MOTO_ACCOUNT: &str = "123456789012";

/// Old main: with half of all GETs answered 503 SlowDown, a quarter of the objects ended in the
/// DLQ as `Retry` once the SDK's shared retry quota ran dry (exit 1).
#[tokio::test]
async fn a_throttling_storm_sends_no_healthy_object_to_the_dlq() {
    let (_client, bucket, manifest) = local_objects("storm", 2_000, 1024).await;
    let storm = proxy(
        &LocalS3::shared().endpoint,
        FaultPlan {
            get_503_every: 2,
            slowdown_first_tries: 3,
            ..FaultPlan::default()
        },
    );
    // One SDK attempt per request: the patience is the tool's own, not the SDK's.
    let out = s3bundler_with_env(
        &storm.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ],
        &[("AWS_MAX_ATTEMPTS", "1")],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["objects_archived"], 2_000, "{report}");
    let throttled = storm
        .counts
        .injected_503
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        throttled >= 6_000,
        "every object was throttled: {throttled}"
    );
    assert!(
        out.stderr.contains("lowered the GETs in flight"),
        "the adaptation is logged: {}",
        out.stderr
    );
}

/// Old main: credentials expiring mid-manifest gave 450 DLQ rows, an index and exit 1.
#[tokio::test]
async fn expired_credentials_fail_the_manifest_and_commit_nothing() {
    let plan = FaultPlan {
        gets_fail_after: Some(FailAfter::new(150, 400, "ExpiredToken")),
        ..FaultPlan::default()
    };
    assert_refused("expired", 600, plan, "ExpiredToken").await;
}

/// Old main: a role denied the whole bucket filled the DLQ with AccessDenied rows (exit 1).
#[tokio::test]
async fn a_bucket_that_denies_every_object_fails_the_manifest() {
    let plan = FaultPlan {
        // The manifest's two passes are the first GetObjects: every object after them is
        // denied.
        gets_fail_after: Some(FailAfter::new(2, 403, "AccessDenied")),
        ..FaultPlan::default()
    };
    assert_refused("denied", 120, plan, "lack access to the bucket").await;
}

/// The index and archive of a bundle report, read back: (index rows, archive bytes).
async fn read_outputs(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    report: &serde_json::Value,
) -> (Vec<IndexRow>, Vec<u8>) {
    let key = |field: &str| {
        report[field]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_string()
    };
    let index = parse_index(&get_object(client, bucket, &key("index")).await, "index")
        .unwrap_or_else(|e| panic!("{e}"));
    (index, get_object(client, bucket, &key("archive")).await)
}

/// Old main: an object streamed through the archive (bigger than a third of the budget) whose
/// bytes turned out wrong failed the whole manifest, on every attempt (exit 5).
#[tokio::test]
async fn a_streamed_object_that_fails_midway_goes_to_the_dlq_and_the_rest_is_archived() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    for compress in [None, Some("gzip")] {
        let bucket = new_bucket(&client, "midway").await;
        let mut manifest = ManifestWriter::default();
        let objects = (0..10).map(|i| (format!("small/{i}"), 1000 + i)).chain([
            ("large/first".to_string(), 12 << 20),
            ("large/corrupt".to_string(), 12 << 20),
            ("large/last".to_string(), 12 << 20),
        ]);
        let mut bodies = std::collections::BTreeMap::new();
        for (i, (key, size)) in objects.enumerate() {
            let data = body(size, i as u8);
            put_object(&client, &bucket, &key, data.clone()).await;
            manifest.push(&entry(&bucket, &key, size as u64, None));
            bodies.insert(key, data);
        }
        put_object(&client, &bucket, "m/midway.0.index", manifest.finish()).await;
        let faults = proxy(
            &server.endpoint,
            FaultPlan {
                corrupt_keys_containing: Some("large/corrupt".into()),
                ..FaultPlan::default()
            },
        );
        let mut args = vec![
            "bundle",
            "-m",
            &format!("s3://{bucket}/m/midway.0.index"),
            "-b",
            &bucket,
            "-p",
            "out",
            "--max-in-flight",
            "32MiB",
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(compress) = compress {
            args.extend(["--compress".to_string(), compress.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = s3bundler(&faults.endpoint, &args).await;
        assert_eq!(out.code, 1, "{compress:?}: {}", out.stderr);
        let report = out.json();
        assert_eq!(report["objects_archived"], 12, "{report}");
        assert_eq!(report["failed"]["ChecksumMismatch"], 1, "{report}");
        let dlq = parse_dlq(
            &get_object(&client, &bucket, "m/midway.0.index.dlq").await,
            "dlq",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].key, "large/corrupt");
        let (index, archive) = read_outputs(&client, &bucket, &report).await;
        let tar = match compress {
            None => archive,
            Some(_) => {
                let mut tar = Vec::new();
                flate2::read::MultiGzDecoder::new(archive.as_slice())
                    .read_to_end(&mut tar)
                    .unwrap_or_else(|e| panic!("{e}"));
                tar
            }
        };
        // Every member is one of the index, with the object's exact bytes where the index says.
        let mut members = BTreeSet::new();
        let mut reader = tar::Archive::new(tar.as_slice());
        for member in reader.entries().unwrap_or_else(|e| panic!("{e}")) {
            let member = member.unwrap_or_else(|e| panic!("{e}"));
            let path = member.path().unwrap_or_else(|e| panic!("{e}"));
            members.insert(path.to_string_lossy().into_owned());
        }
        let indexed: BTreeSet<String> = index.iter().map(|r| r.member.clone()).collect();
        assert_eq!(
            members, indexed,
            "{compress:?}: the corrupt member was taken back out"
        );
        for row in &index {
            let start = row.data_offset.unwrap_or(0) as usize;
            assert!(
                tar[start..start + row.size as usize] == bodies[&row.key][..],
                "{compress:?}: bytes of {}",
                row.key
            );
        }
    }
}

/// Waits (at most 30 s) until `ready` says the phase to interrupt has begun.
async fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never began");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `bundle` through `faults` with `--sse AES256 --expected-bucket-owner`, waits until
/// `phase` has begun, sends SIGTERM and checks that it stopped within 5 s (exit 130) leaving
/// no upload, no index and no request without those headers.
async fn assert_interrupted_cleanly(
    name: &str,
    sizes: &[(String, usize)],
    plan: FaultPlan,
    extra: &[&str],
    phase: &str,
    began: impl Fn(&FaultProxy) -> bool,
) {
    let (client, _src, arch, manifest) = moto_objects(name, sizes).await;
    let faults = proxy(
        moto::endpoint(),
        FaultPlan {
            require_headers: vec![
                ("x-amz-expected-bucket-owner".into(), MOTO_ACCOUNT.into()),
                ("x-amz-server-side-encryption".into(), "AES256".into()),
            ],
            ..plan
        },
    );
    let mut args = vec![
        "bundle",
        "-m",
        &manifest,
        "-b",
        &arch,
        "--sse",
        "AES256",
        "--expected-bucket-owner",
        MOTO_ACCOUNT,
    ];
    args.extend_from_slice(extra);
    let child = spawn_s3bundler(&faults.endpoint, &args);
    wait_for(phase, || began(&faults)).await;
    send_signal(&child, "TERM");
    let stopped = Instant::now();
    let out = finish(child, Duration::from_secs(30)).await;
    assert_eq!(out.code, 130, "{phase}: {}", out.stderr);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{phase}: stopped only after {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        incomplete_uploads(&client, &arch).await,
        0,
        "{phase}: uploads left"
    );
    let left: Vec<String> = list_keys(&client, &arch, "").await;
    assert!(
        left.iter().all(|k| !k.ends_with(".index")),
        "{phase}: nothing committed: {left:?}"
    );
    assert_eq!(
        faults.counts.header_violations(),
        Vec::<String>::new(),
        "{phase}"
    );
}

fn operations_seen(faults: &FaultProxy, operation: &str) -> u64 {
    faults
        .counts
        .operations()
        .get(operation)
        .copied()
        .unwrap_or(0)
}

/// Old main: copies were collected without listening for a stop request, then committed, and
/// an aborted multipart copy went without --expected-bucket-owner.
#[tokio::test]
async fn sigterm_during_a_copy_aborts_every_upload() {
    let plan = FaultPlan {
        upload_part_copy_delay: Some(Duration::from_secs(20)),
        ..FaultPlan::default()
    };
    let sizes = [keys("small", 5, 1024), keys("big", 2, 6 << 20)].concat();
    let extra = ["-s", "1MiB", "--multipart-copy-threshold", "5MiB"];
    assert_interrupted_cleanly("copying", &sizes, plan, &extra, "a multipart copy", |f| {
        operations_seen(f, "UploadPartCopy") > 0
    })
    .await;
}

/// Old main: the archive's completion could not be interrupted and the index was written.
#[tokio::test]
async fn sigterm_while_the_archive_completes_aborts_it() {
    let plan = FaultPlan {
        complete_delay: Some(Duration::from_secs(20)),
        ..FaultPlan::default()
    };
    let sizes = keys("obj", 6, 1 << 20);
    assert_interrupted_cleanly("finishing", &sizes, plan, &[], "the completion", |f| {
        operations_seen(f, "CompleteMultipartUpload") > 0
    })
    .await;
}

/// Old main held the index in memory until the commit. Now an index past one part is a
/// multipart upload of its own while the archive is written, and a stop aborts it too.
#[tokio::test]
async fn sigterm_with_the_index_in_parts_aborts_it_too() {
    let plan = FaultPlan {
        complete_delay: Some(Duration::from_secs(20)),
        ..FaultPlan::default()
    };
    // 4,500 index rows of over 2 KiB (a 1 KiB key, twice with the member name): past 8 MiB.
    let segment = "s".repeat(240);
    let sizes: Vec<_> = (0..4_500)
        .map(|i| (format!("{segment}/{segment}/{segment}/{segment}/{i}"), 1))
        .collect();
    assert_interrupted_cleanly("tablepart", &sizes, plan, &[], "the completion", |f| {
        operations_seen(f, "CompleteMultipartUpload") > 0
            && operations_seen(f, "CreateMultipartUpload") >= 2
    })
    .await;
}

/// Old main: a stop request waited for the streamed object's GET and body to end.
#[tokio::test]
async fn sigterm_inside_a_streamed_object_aborts_the_archive() {
    let plan = FaultPlan {
        get_delay: Some(Duration::from_secs(20)),
        delay_keys_containing: Some("large/1".into()),
        ..FaultPlan::default()
    };
    let sizes = keys("large", 2, 12 << 20);
    let extra = ["--max-in-flight", "32MiB"];
    assert_interrupted_cleanly(
        "streaming",
        &sizes,
        plan,
        &extra,
        "the second object",
        |f| {
            operations_seen(f, "UploadPart") > 0
                && f.counts.gets.load(std::sync::atomic::Ordering::Relaxed) >= 3
        },
    )
    .await;
}

/// Old main: the second worker aborted the first one's upload as "left by an earlier attempt",
/// or both wrote the archive and an index that may describe the other's.
#[tokio::test]
async fn two_workers_on_one_manifest_leave_one_archive_whose_index_matches_it() {
    let (client, _src, arch, manifest) = moto_objects("twice", &keys("o", 40, 64 << 10)).await;
    let slow = proxy(
        moto::endpoint(),
        FaultPlan {
            get_delay: Some(Duration::from_millis(100)),
            ..FaultPlan::default()
        },
    );
    let args = [
        "bundle",
        "-m",
        &manifest,
        "-b",
        &arch,
        "--concurrency",
        "2",
        "--json",
    ];
    let first = spawn_s3bundler(&slow.endpoint, &args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = spawn_s3bundler(&slow.endpoint, &args);
    let (first, second) = tokio::join!(
        finish(first, Duration::from_secs(60)),
        finish(second, Duration::from_secs(60))
    );
    let mut codes = [first.code, second.code];
    codes.sort();
    assert_eq!(codes, [0, 5], "{first:?}\n{second:?}");
    let busy = if first.code == 5 { &first } else { &second };
    assert!(
        busy.stderr.contains("being bundled by another worker"),
        "{}",
        busy.stderr
    );
    let done = if first.code == 0 { &first } else { &second };
    let report = done.json();
    let archive_key = report["archive"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(&format!("s3://{arch}/"));
    let index_key = report["index"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(&format!("s3://{arch}/"));
    let head = |key: &str| client.head_object().bucket(&arch).key(key).send();
    let archive = head(archive_key).await.unwrap_or_else(|e| panic!("{e:?}"));
    let index = head(index_key).await.unwrap_or_else(|e| panic!("{e:?}"));
    let claimed = index
        .metadata()
        .and_then(|m| m.get(ARCHIVE_ETAG_METADATA))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        archive.e_tag().unwrap_or_default().trim_matches('"'),
        claimed,
        "the index names the archive it describes"
    );
    assert_eq!(incomplete_uploads(&client, &arch).await, 0);
    assert_eq!(
        list_keys(&client, &arch, "").await.len(),
        2,
        "one archive and its index; the lease is gone"
    );
}

/// Old main: an index said nothing of the archive it was written for, so an archive replaced
/// afterwards (a stray upload, a second worker) passed verification.
#[tokio::test]
async fn verify_reports_an_index_whose_archive_was_replaced() {
    let (client, bucket, manifest) = local_objects("replaced", 5, 2048).await;
    let out = s3bundler(
        &LocalS3::shared().endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verify = [
        "verify",
        "--manifests",
        &format!("s3://{bucket}/m/"),
        "-b",
        &bucket,
        "-p",
        "out",
        "--json",
    ];
    let sound = s3bundler(&LocalS3::shared().endpoint, &verify).await;
    assert_eq!(sound.code, 0, "{}", sound.stdout);
    let archive_key = out.json()["archive"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    let mut archive = get_object(&client, &bucket, &archive_key).await;
    // Same length, one byte of padding changed: only the ETag can tell.
    if let Some(last) = archive.last_mut() {
        *last ^= 1;
    }
    put_object(&client, &bucket, &archive_key, archive).await;
    let replaced = s3bundler(&LocalS3::shared().endpoint, &verify).await;
    assert_eq!(replaced.code, 1, "{}", replaced.stdout);
    assert!(
        replaced
            .stdout
            .contains("not the archive its index was committed for"),
        "{}",
        replaced.stdout
    );
}

/// An object that keeps failing is tried until `--retry-for` is up, then it is a `Retry` DLQ
/// row and the rest of the manifest is archived (old main had no such limit: it gave up after
/// the SDK's attempts).
#[tokio::test]
async fn an_object_that_never_answers_goes_to_the_dlq_once_the_retry_time_is_up() {
    let (_client, bucket, manifest) = local_objects("outage", 20, 512).await;
    let outage = proxy(
        &LocalS3::shared().endpoint,
        FaultPlan {
            always_fail_keys_containing: Some("objects/7".into()),
            ..FaultPlan::default()
        },
    );
    let started = Instant::now();
    let out = s3bundler(
        &outage.endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &bucket,
            "-p",
            "out",
            "--retry-for",
            "3s",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    let report = out.json();
    assert_eq!(report["failed"]["Retry"], 1, "{report}");
    assert_eq!(report["objects_archived"], 19, "{report}");
    let dlq = parse_dlq(
        &get_object(
            &s3_client(&LocalS3::shared().endpoint),
            &bucket,
            "m/outage.0.index.dlq",
        )
        .await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dlq[0].reason, DlqReason::Retry);
    assert!(dlq[0].detail.contains("gave up after"), "{:?}", dlq[0]);
}

/// A body that stops sending halfway while its connection stays open is read on from where it
/// stopped once it has sent nothing for the stall timeout (the request timeout here, 2 s).
/// Without that timeout the lean GET path waited on such a body forever.
#[tokio::test]
async fn a_body_that_stops_sending_is_read_on_from_where_it_stopped() {
    let (client, bucket, manifest) = local_objects("stalled", 4, 300_000).await;
    let stalling = proxy(
        &LocalS3::shared().endpoint,
        FaultPlan {
            stall_keys_containing: Some("objects/".into()),
            ..FaultPlan::default()
        },
    );
    let args = [
        "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
    ];
    let bundle = s3bundler_with_env(
        &stalling.endpoint,
        &args,
        &[("S3BUNDLER_REQUEST_TIMEOUT", "2")],
    );
    let out = tokio::time::timeout(Duration::from_secs(120), bundle)
        .await
        .unwrap_or_else(|_| panic!("bundle still waits on a stalled body after 120 s"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stalled = stalling
        .counts
        .stalled_bodies
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stalled, 4, "every object's first body stalled");
    let (index, archive) = read_outputs(&client, &bucket, &out.json()).await;
    assert_eq!(index.len(), 4, "{index:?}");
    for row in &index {
        let seed: u8 = row.key["objects/".len()..].parse().unwrap_or(255);
        let start = row.data_offset.unwrap_or(0) as usize;
        assert!(
            archive[start..start + row.size as usize] == body(300_000, seed),
            "archived bytes of {} differ",
            row.key
        );
    }
}
