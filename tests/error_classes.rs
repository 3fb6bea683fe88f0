//! Every error answer has one exact outcome, and no wait is without a bound: what S3 says of
//! an object is a DLQ row with its own reason, what it says of the caller (its clock, its
//! bucket, its credentials) fails the manifest with nothing committed, and what may pass is
//! tried again. Each test causes the answer with the fault proxy; the comment of each says
//! what main did before these rules (issue 24).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use s3bundler::archive::records::{parse_dlq, DlqReason, DlqRow};
use s3bundler_testkit::faults::{FailAfter, FailMatching, FaultCounts, FaultPlan, FaultProxy};

/// A bundle of objects of the local server through the fault proxy.
struct Run {
    client: aws_sdk_s3::Client,
    bucket: String,
    faults: FaultProxy,
    out: Output,
}

impl Run {
    /// Bundles the objects `sizes` (manifest `m/<name>.0.index`, outputs under `out/`) through
    /// a proxy with `plan`, with `extra` arguments and `env`, bounded in time: a hang fails the
    /// test instead of holding it.
    async fn local(
        name: &str,
        sizes: &[(String, usize)],
        plan: FaultPlan,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let (client, bucket, manifest) = local_keys(name, sizes).await;
        let faults = proxy(&LocalS3::shared().endpoint, plan);
        let mut args = vec![
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ];
        args.extend_from_slice(extra);
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            s3bundler_with_env(&faults.endpoint, &args, env),
        )
        .await
        .unwrap_or_else(|_| panic!("bundle still runs after 120 s"));
        Run {
            client,
            bucket,
            faults,
            out,
        }
    }

    /// The run's exit code, and its report.
    fn report(&self) -> (i32, serde_json::Value) {
        let out = &self.out;
        let report = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.code, report)
    }

    /// How many times the proxy did what `counter` counts.
    fn count(&self, counter: impl Fn(&FaultCounts) -> &AtomicU64) -> u64 {
        counter(&self.faults.counts).load(Ordering::Relaxed)
    }

    /// The DLQ rows of manifest `name`.
    async fn dlq(&self, name: &str) -> Vec<DlqRow> {
        dlq_rows(&self.client, &self.bucket, name).await
    }
}

/// The DLQ rows of the manifest `m/<name>.0.index` in `bucket`.
async fn dlq_rows(client: &aws_sdk_s3::Client, bucket: &str, name: &str) -> Vec<DlqRow> {
    let key = format!("m/{name}.0.index.dlq");
    parse_dlq(&get_object(client, bucket, &key).await, "dlq").unwrap_or_else(|e| panic!("{e}"))
}

/// Main waited forever on a 503 whose error body stopped after a few bytes (the lean GET
/// timed out only the headers), while the lease kept the manifest held. The SDK's reads (the
/// manifest's, here stalled too) end by their attempt timeout.
#[tokio::test]
async fn a_stalled_error_answer_is_timed_out_and_tried_again() {
    let plan = FaultPlan {
        // Every key, the manifest's too: its first GetObject stalls.
        stall_error_keys_containing: Some(String::new()),
        ..FaultPlan::default()
    };
    let timeout = [("S3BUNDLER_REQUEST_TIMEOUT", "2")];
    let objects = keys("objects", 4, 1024);
    let run = Run::local("stallerr", &objects, plan, &[], &timeout).await;
    let (code, report) = run.report();
    assert_eq!(code, 0, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 4, "{report}");
    let stalled = run.count(|c| &c.stalled_errors);
    assert_eq!(stalled, 5, "the manifest's and every object's first answer");
}

/// Main signed lean GETs with the local clock and never corrected it: every object was
/// refused `RequestTimeTooSkewed` and filed as `AccessDenied`. Now the clock offset is taken
/// from the refusal's Date header, as the SDK does, and every object is archived.
#[tokio::test]
async fn a_clock_off_by_an_hour_is_corrected_from_s3_s_date() {
    let (client, src, arch, manifest) = moto_objects("skewed", &keys("o", 20, 1024)).await;
    let skewed = proxy(
        moto::endpoint(),
        FaultPlan {
            clock_ahead: Some(Duration::from_secs(3600)),
            ..FaultPlan::default()
        },
    );
    let out = s3bundler(
        &skewed.endpoint,
        &["bundle", "-m", &manifest, "-b", &arch, "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["objects_archived"], 20, "{}", out.stdout);
    let refused = skewed.counts.skewed.load(Ordering::Relaxed);
    assert!(refused >= 1, "the proxy refused the uncorrected clock");
    assert!(
        !list_keys(&client, &src, "m/")
            .await
            .iter()
            .any(|k| k.ends_with(".dlq")),
        "no DLQ"
    );
}

/// Main: after 150 GETs answered `403 RequestTimeTooSkewed`, 450 objects went to the DLQ as
/// `AccessDenied` and an index was committed (exit 1). A clock still refused once corrected
/// is the caller's: the manifest fails.
#[tokio::test]
async fn a_clock_skew_that_persists_fails_the_manifest() {
    let plan = FaultPlan {
        gets_fail_after: Some(FailAfter::new(150, 403, "RequestTimeTooSkewed")),
        ..FaultPlan::default()
    };
    assert_refused("persistent", 600, plan, "clock").await;
}

/// Main filed a missing bucket as `NoSuchKey` rows and a bucket of another region as `Retry`
/// or `AccessDenied` rows, one per object, and committed an index for the rest.
#[tokio::test]
async fn a_missing_bucket_or_another_region_fails_even_a_manifest_of_three() {
    let answers = [
        (404, "NoSuchBucket", "NoSuchBucket"),
        (301, "PermanentRedirect", "region"),
        (400, "AuthorizationHeaderMalformed", "region"),
    ];
    for (status, code, expected) in answers {
        let plan = FaultPlan {
            get_errors: vec![FailMatching::new("o/1", status, code)],
            ..FaultPlan::default()
        };
        assert_refused(&format!("bucket{status}"), 3, plan, expected).await;
    }
}

/// Main: when every object of a manifest was denied, the manifest failed only once 50 were;
/// three denied objects were three `AccessDenied` rows and an empty commit.
#[tokio::test]
async fn a_denied_bucket_fails_even_a_manifest_of_three() {
    let plan = FaultPlan {
        // The manifest's two passes are the first GetObjects.
        gets_fail_after: Some(FailAfter::new(2, 403, "AccessDenied")),
        ..FaultPlan::default()
    };
    assert_refused("denied3", 3, plan, "lack access to the bucket").await;
}

/// S3's message when the role may not use the KMS key an object is encrypted with.
const KMS_DENIED: &str = "User: arn:aws:sts::123456789012:assumed-role/bundler/task is not \
    authorized to perform: kms:Decrypt on the resource associated with this ciphertext because \
    no identity-based policy allows the kms:Decrypt action";

/// Main took 50 denied objects in a row for a denied bucket and failed the manifest (exit 5),
/// on every attempt, though each was denied for its own KMS key.
#[tokio::test]
async fn objects_denied_their_kms_key_are_dlq_rows_even_sixty_in_a_row() {
    let sizes = [keys("kms", 60, 512), keys("plain", 10, 512)].concat();
    let plan = FaultPlan {
        get_errors: vec![FailMatching::new("kms/", 403, "AccessDenied").saying(KMS_DENIED)],
        ..FaultPlan::default()
    };
    let run = Run::local("kms", &sizes, plan, &["--concurrency", "4"], &[]).await;
    let (code, report) = run.report();
    assert_eq!(code, 1, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 10, "{report}");
    assert_eq!(report["failed"]["AccessDenied"], 60, "{report}");
    assert!(report["index"].is_string(), "{report}");
    let rows = run.dlq("kms").await;
    assert_eq!(rows.len(), 60);
    assert!(
        rows.iter()
            .all(|r| r.reason == DlqReason::AccessDenied && r.detail.contains("kms:Decrypt")),
        "{:?}",
        rows.first()
    );
}

/// An object denied in a bucket the role can read (a probe beside it is answered NoSuchKey)
/// is one `AccessDenied` row; the rest is archived.
#[tokio::test]
async fn one_object_denied_in_a_readable_bucket_is_one_dlq_row() {
    let plan = FaultPlan {
        get_errors: vec![FailMatching::new("objects/3", 403, "AccessDenied")],
        ..FaultPlan::default()
    };
    let objects = keys("objects", 5, 512);
    let run = Run::local("onedenied", &objects, plan, &[], &[]).await;
    let (code, report) = run.report();
    assert_eq!(code, 1, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 4, "{report}");
    let rows = run.dlq("onedenied").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].key.as_str(), rows[0].reason),
        ("objects/3", DlqReason::AccessDenied)
    );
}

/// Main filed a 409 as a `Retry` row without trying again: S3 answers it to a request that
/// raced another on the same object, and the next try goes through.
#[tokio::test]
async fn conflicts_are_tried_again() {
    let plan = FaultPlan {
        get_errors: vec![
            FailMatching {
                times: Some(3),
                ..FailMatching::new("objects/", 409, "ConditionalRequestConflict")
            },
            FailMatching {
                times: Some(3),
                ..FailMatching::new("objects/", 409, "OperationAborted")
            },
        ],
        ..FaultPlan::default()
    };
    let objects = keys("objects", 6, 512);
    let run = Run::local("conflict", &objects, plan, &[], &[]).await;
    let (code, report) = run.report();
    assert_eq!(code, 0, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 6, "{report}");
    assert_eq!(run.count(|c| &c.injected_matching), 6);
}

/// Main filed an error code it did not know as a `Retry` row (never retried) and an SSE-C
/// object (readable only with its customer key) as one too.
#[tokio::test]
async fn an_unknown_code_and_an_sse_c_object_get_reasons_of_their_own() {
    let plan = FaultPlan {
        get_errors: vec![
            FailMatching::new("objects/1", 400, "SomethingS3AddedLater"),
            FailMatching::new("objects/2", 400, "InvalidRequest").saying(
                "The object was stored using a form of Server Side Encryption. The correct \
                 parameters must be provided to retrieve the object.",
            ),
        ],
        ..FaultPlan::default()
    };
    let objects = keys("objects", 5, 512);
    let run = Run::local("reasons", &objects, plan, &[], &[]).await;
    let (code, report) = run.report();
    assert_eq!(code, 1, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 3, "{report}");
    let mut rows = run.dlq("reasons").await;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let reasons: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [("objects/1", "Unexpected"), ("objects/2", "SseC")]
    );
    assert!(
        rows[0].detail.contains("SomethingS3AddedLater"),
        "{:?}",
        rows[0]
    );
    assert_eq!(report["failed"]["Unexpected"], 1, "{report}");
    assert_eq!(report["failed"]["SseC"], 1, "{report}");
}

/// Main failed the manifest (exit 4, no index) on every delivery when the copy of a big
/// object was refused `InvalidObjectState` (it went to GLACIER after the inventory).
#[tokio::test]
async fn a_big_object_whose_copy_is_refused_as_archived_is_a_glacier_row() {
    let sizes = [
        keys("small", 3, 1024),
        vec![
            ("big/single".to_string(), 2 << 20),
            ("big/parts".to_string(), 6 << 20),
        ],
    ]
    .concat();
    let (client, src, arch, manifest) = moto_objects("glaciercopy", &sizes).await;
    let refusing = proxy(
        moto::endpoint(),
        FaultPlan {
            copy_errors: vec![FailMatching::new("big/", 403, "InvalidObjectState")],
            ..FaultPlan::default()
        },
    );
    let out = s3bundler(
        &refusing.endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &arch,
            "-s",
            "1MiB",
            "--multipart-copy-threshold",
            "5MiB",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["objects_archived"], 3, "{report}");
    assert_eq!(report["failed"]["Glacier"], 2, "{report}");
    assert!(report["index"].is_string(), "{report}");
    let rows = dlq_rows(&client, &src, "glaciercopy").await;
    assert!(
        rows.iter().all(|r| r.reason == DlqReason::Glacier),
        "{rows:?}"
    );
    assert_eq!(incomplete_uploads(&client, &arch).await, 0);
}

/// A HEAD answer has no body: main took a HEAD refused 400 for expired credentials as an
/// unknown error of the object (a `Retry` row per big object). The code, learnt from a GET of
/// the same object, makes it the caller's: the manifest fails.
#[tokio::test]
async fn a_caller_error_behind_a_bodiless_head_fails_the_manifest() {
    let sizes = [keys("small", 2, 1024), vec![("big/0".to_string(), 2 << 20)]].concat();
    let (client, src, arch, manifest) = moto_objects("headexpired", &sizes).await;
    let expired = FailMatching::new("big/", 400, "ExpiredToken");
    let refusing = proxy(
        moto::endpoint(),
        FaultPlan {
            head_errors: vec![expired.clone()],
            get_errors: vec![expired],
            ..FaultPlan::default()
        },
    );
    let out = s3bundler(
        &refusing.endpoint,
        &["bundle", "-m", &manifest, "-b", &arch, "-s", "1MiB"],
    )
    .await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("ExpiredToken"), "{}", out.stderr);
    assert!(list_keys(&client, &arch, "").await.is_empty());
    assert_eq!(list_keys(&client, &src, "m/").await.len(), 1, "no DLQ");
}

/// Main resumed a streamed object's cut body five times, then filed it as `Retry`: a
/// connection that drops again and again, each time after more bytes, is read to the end
/// within `--retry-for`, as a small object would be.
#[tokio::test]
async fn a_streamed_object_cut_again_and_again_is_read_to_its_end() {
    let sizes = [
        keys("small", 3, 1024),
        vec![("large/0".to_string(), 12 << 20)],
    ]
    .concat();
    let plan = FaultPlan {
        cut_keys_containing: Some("large/".into()),
        ..FaultPlan::default()
    };
    let budget = ["--max-in-flight", "32MiB"];
    let run = Run::local("cutagain", &sizes, plan, &budget, &[]).await;
    let (code, report) = run.report();
    assert_eq!(code, 0, "{}", run.out.stderr);
    assert_eq!(report["objects_archived"], 4, "{report}");
    let cuts = run.count(|c| &c.cut_bodies);
    assert!(cuts > 5, "cut {cuts} times");
}
