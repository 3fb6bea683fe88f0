//! `s3bundler redrive` on moto: DLQ rows worth another try go into new bundle manifests, are
//! archived exactly once, and verify and prune count each object once across the original
//! manifest and its redrive.

mod common;

use aws_sdk_s3::types::{RestoreRequest, StorageClass};
use common::*;
use s3bundler::archive::records::{parse_dlq, DlqReason, DlqRow, DlqWriter};
use s3bundler_testkit::faults::{FailMatching, FaultPlan};

/// `redrive` of the manifests under `prefix`, bundled into `arch`, with a JSON report.
fn redrive_args<'a>(prefix: &'a str, arch: &'a str) -> [&'a str; 6] {
    ["redrive", "--manifests", prefix, "-b", arch, "--json"]
}

/// Before `redrive`, an object dead-lettered (denied, throttled, in GLACIER) could only come back
/// in a hand-written manifest, whose name could collide with the original's archive.
#[tokio::test]
async fn dead_lettered_objects_made_readable_are_archived_once_by_a_redrive() {
    let moto = moto::endpoint();
    let (client, src, arch, manifest) = moto_objects("redrive", &keys("o", 10, 1024)).await;
    // o/7 went to GLACIER (same bytes), o/9 was deleted since the inventory.
    client
        .put_object()
        .bucket(&src)
        .key("o/7")
        .body(body(1024, 7).into())
        .storage_class(StorageClass::Glacier)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    client
        .delete_object()
        .bucket(&src)
        .key("o/9")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // o/3 denied, o/4 failing with 500s past --retry-for.
    let faults = proxy(
        moto,
        FaultPlan {
            get_errors: vec![
                FailMatching::new("o/3", 403, "AccessDenied"),
                FailMatching::new("o/4", 500, "InternalError"),
            ],
            ..FaultPlan::default()
        },
    );
    let first = s3bundler(
        &faults.endpoint,
        &["bundle", "-m", &manifest, "-b", &arch, "--retry-for", "1s"],
    )
    .await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    let dlq = parse_dlq(
        &get_object(&client, &src, "m/redrive.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut reasons: Vec<(&str, DlqReason)> =
        dlq.iter().map(|r| (r.key.as_str(), r.reason)).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("o/3", DlqReason::AccessDenied),
            ("o/4", DlqReason::Retry),
            ("o/7", DlqReason::Glacier),
            ("o/9", DlqReason::NoSuchKey),
        ]
    );
    let prefix = format!("s3://{src}/m/");
    let redrive_key = "m/redrive.0.redrive1.index";
    let base = redrive_args(&prefix, &arch);
    // A dry run: the GLACIER object is not restored yet, and nothing is written.
    let dry = s3bundler(moto, &base).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let report = dry.json();
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["redriven"]["AccessDenied"], 1, "{report}");
    assert_eq!(report["redriven"]["Retry"], 1, "{report}");
    assert_eq!(report["not_readable"], 1, "{report}");
    assert_eq!(report["not_chosen"]["NoSuchKey"], 1, "{report}");
    assert!(!list_keys(&client, &src, "m/")
        .await
        .contains(&redrive_key.to_string()));
    // Restored (and, for the others, the faults gone): all three go into one redrive, queued.
    client
        .restore_object()
        .bucket(&src)
        .key("o/7")
        .restore_request(RestoreRequest::builder().days(1).build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let queue = create_queue(moto, &s3bundler_testkit::unique_name("redrive"), 30, None).await;
    let mut args = base.to_vec();
    args.extend(["--yes", "--queue", queue.as_str()]);
    let wrote = s3bundler(moto, &args).await;
    assert_eq!(wrote.code, 0, "{}", wrote.stderr);
    let report = wrote.json();
    assert_eq!(report["redriven"]["Glacier"], 1, "{report}");
    assert_eq!(report["manifests"][0]["objects"], 3, "{report}");
    let redrive = format!("s3://{src}/{redrive_key}");
    assert_eq!(report["manifests"][0]["manifest"], redrive.as_str());
    assert_eq!(
        receive_bodies(moto, &queue, 1).await,
        vec![bucket_key_message(&redrive)]
    );
    let second = s3bundler(moto, &["bundle", "-m", &redrive, "-b", &arch, "--json"]).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.json()["objects_archived"], 3, "{}", second.stdout);
    // The redrive recorded its manifest in the catalog: locate finds the object in its archive.
    let located = s3bundler(
        moto,
        &[
            "locate",
            &format!("s3://{src}/o/7"),
            "--manifests",
            &prefix,
            "--archives",
            &format!("s3://{arch}/"),
            "--json",
        ],
    )
    .await;
    assert_eq!(located.code, 0, "{located:?}");
    assert_eq!(
        located.json()["located"][0]["manifest"],
        redrive.as_str(),
        "{}",
        located.stdout
    );
    // Nothing is redriven twice.
    let again = s3bundler(moto, &[&base[..], &["--yes"][..]].concat()).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report = again.json();
    assert_eq!(report["already_redriven"], 3, "{report}");
    assert_eq!(report["manifests"].as_array().map(Vec::len), Some(0));
    assert!(!list_keys(&client, &src, "m/")
        .await
        .iter()
        .any(|k| k.contains("redrive2")));
    // A reason left out by default is redriven when chosen.
    let chosen = s3bundler(moto, &[&base[..], &["--reason", "NoSuchKey"][..]].concat()).await;
    assert_eq!(chosen.code, 0, "{}", chosen.stderr);
    assert_eq!(
        chosen.json()["redriven"]["NoSuchKey"],
        1,
        "{}",
        chosen.stdout
    );
    // Each object counted once: 6 + 3 archived, the deleted one in a DLQ, 3 redriven.
    let verify = s3bundler(
        moto,
        &["verify", "--manifests", &prefix, "-b", &arch, "--json"],
    )
    .await;
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    let totals = &verify.json()["totals"];
    assert_eq!(totals["objects"], 10, "{totals}");
    assert_eq!(totals["verified"], 9, "{totals}");
    assert_eq!(totals["redriven"], 3, "{totals}");
    assert_eq!(totals["in_dlq"]["NoSuchKey"], 1, "{totals}");
    assert_eq!(totals["in_dlq"].as_object().map(|m| m.len()), Some(1));
    // Prune deletes the redriven objects too, as the redrive's index proves them.
    let prune = s3bundler(
        moto,
        &[
            "prune",
            "--manifests",
            &prefix,
            "-b",
            &arch,
            "--yes",
            "--json",
        ],
    )
    .await;
    assert_eq!(prune.code, 0, "{}", prune.stdout);
    assert_eq!(prune.json()["deleted"]["objects"], 9, "{}", prune.stdout);
    let left = list_keys(&client, &src, "o/").await;
    assert!(left.is_empty(), "{left:?}");
}

/// A DLQ beside a manifest that has not committed (an attempt running, or one that stopped
/// before its index) is no record yet: the next attempt may archive those objects itself.
#[tokio::test]
async fn the_dlq_of_a_manifest_not_committed_is_left_alone() {
    let moto = moto::endpoint();
    let (client, src, arch, _) = moto_objects("pending", &keys("o", 3, 100)).await;
    let mut dlq = DlqWriter::default();
    dlq.push(&DlqRow {
        bucket: src.clone(),
        key: "o/1".into(),
        version_id: None,
        size: 100,
        last_modified: None,
        reason: DlqReason::Retry,
        detail: "throttled".into(),
    });
    put_object(&client, &src, "m/pending.0.index.dlq", dlq.finish()).await;
    let prefix = format!("s3://{src}/m/");
    let out = s3bundler(
        moto,
        &[&redrive_args(&prefix, &arch)[..], &["--yes"][..]].concat(),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(
        report["uncommitted"][0],
        format!("s3://{src}/m/pending.0.index.dlq").as_str(),
        "{report}"
    );
    assert_eq!(report["manifests"].as_array().map(Vec::len), Some(0));
    let keys = list_keys(&client, &src, "m/").await;
    assert!(!keys.iter().any(|k| k.contains("redrive")), "{keys:?}");
}
