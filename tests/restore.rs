//! `restore`: cold archives (DEEP_ARCHIVE on moto, or made cold by the fault proxy, which also
//! plays restores in progress, throttling and Intelligent-Tiering archive tiers) are named by
//! `cat` and `extract` with the command to run, priced by a dry run that requests nothing,
//! restored once by `--yes` (again: nothing more), followed by `--status` and `--wait`, then
//! read back byte for byte.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use s3bundler_testkit::faults::{Cold, FaultPlan, FaultProxy};

/// Objects archived per bundle.
const OBJECTS: usize = 6;

/// A bundle of OBJECTS small objects, its manifest at `manifests/<name>.0.index` in the archive
/// bucket, bundled (`-p bundles`) with `extra` on `endpoint`.
struct Bundled {
    client: aws_sdk_s3::Client,
    src: String,
    arch: String,
    /// `s3://ARCH/…/NAME.tar`.
    archive: String,
    /// The first object's key and bytes.
    key: String,
    bytes: Vec<u8>,
}

impl Bundled {
    async fn new(endpoint: &str, name: &str, extra: &[&str]) -> Bundled {
        let client = s3_client(endpoint);
        let src = new_bucket(&client, "thawsrc").await;
        let arch = new_bucket(&client, "thawarch").await;
        let mut entries = Vec::new();
        for i in 0..OBJECTS {
            let key = format!("logs/{i}.log");
            let data = text(200 + i * 31, i);
            entries.push(entry(&src, &key, data.len() as u64, None));
            put_object(&client, &src, &key, data).await;
        }
        let manifest = write_manifest(
            &client,
            &arch,
            &format!("manifests/{name}.0.index"),
            &entries,
        )
        .await;
        let mut args = vec![
            "bundle", "-m", &manifest, "-b", &arch, "-p", "bundles", "--json",
        ];
        args.extend_from_slice(extra);
        let out = s3bundler(endpoint, &args).await;
        assert_eq!(out.code, 0, "{out:?}");
        let archive = out.json()["archive"]
            .as_str()
            .unwrap_or_else(|| panic!("no archive: {out:?}"))
            .to_string();
        Bundled {
            client,
            src,
            arch,
            archive,
            key: "logs/0.log".to_string(),
            bytes: text(200, 0),
        }
    }

    /// The archive key, without `s3://ARCH/`.
    fn archive_key(&self) -> String {
        key_of(&serde_json::Value::from(self.archive.clone()), &self.arch)
    }

    /// A proxy in front of the local server with the archive cold as `cold` says.
    fn proxy(&self, cold: Cold, restore_503_first: u64) -> FaultProxy {
        proxy(
            &LocalS3::shared().endpoint,
            FaultPlan {
                cold: Some(cold),
                restore_503_first,
                ..FaultPlan::default()
            },
        )
    }

    /// `restore ARCHIVE EXTRA --json` through `endpoint`.
    async fn restore(&self, endpoint: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = vec!["restore", self.archive.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out = s3bundler(endpoint, &args).await;
        let json = out.json();
        (out, json)
    }

    /// `cat` of the first object must give its exact bytes.
    async fn assert_cat_reads(&self, endpoint: &str) {
        let out = s3bundler(endpoint, &["cat", &self.archive, &self.key]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.as_bytes(), self.bytes.as_slice());
    }

    /// `cat` exits 3 with `needle` in its message, never a bare InvalidObjectState.
    async fn assert_cat_refused(&self, endpoint: &str, needle: &str) {
        let out = s3bundler(endpoint, &["cat", &self.archive, &self.key]).await;
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains(needle), "{needle} in {}", out.stderr);
        assert!(!out.stderr.contains("InvalidObjectState"), "{}", out.stderr);
    }
}

/// `size` bytes of text (cat's output is compared as a string).
fn text(size: usize, seed: usize) -> Vec<u8> {
    (0..size).map(|j| b'a' + ((j + seed) % 26) as u8).collect()
}

fn restore_requests(faults: &FaultProxy) -> u64 {
    faults
        .counts
        .operations()
        .get("RestoreObject")
        .copied()
        .unwrap_or(0)
}

fn state(json: &serde_json::Value) -> &str {
    json["archives"][0]["state"].as_str().unwrap_or_default()
}

/// moto stores DEEP_ARCHIVE and refuses its GETs until restored: cat and extract name the
/// restore command; the dry run prices it and requests nothing; `--yes` requests once, a second
/// `--yes` nothing; `--status` (also found from the manifests, the uncommitted one skipped)
/// says ready; then cat and extract read the exact bytes.
#[tokio::test]
async fn a_deep_archive_bundle_on_moto_is_priced_restored_once_then_read() {
    let endpoint = moto::endpoint();
    let bundled = Bundled::new(endpoint, "deep", &["--storage-class", "DEEP_ARCHIVE"]).await;
    let faults = proxy(endpoint, FaultPlan::default());
    let command = format!("s3bundler restore {} --yes", bundled.archive);
    bundled.assert_cat_refused(&faults.endpoint, &command).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().to_string_lossy().to_string();
    let extract = ["extract", bundled.archive.as_str(), "-C", folder.as_str()];
    let out = s3bundler(&faults.endpoint, &extract).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(&command), "{}", out.stderr);

    let (out, dry) = bundled.restore(&faults.endpoint, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        (dry["dry_run"].as_bool(), state(&dry)),
        (Some(true), "needed"),
        "{dry}"
    );
    let deep = &dry["classes"]["DEEP_ARCHIVE"];
    assert_eq!(deep["to_request"], 1, "{dry}");
    assert_eq!(deep["time"], "within 48 hours", "{dry}");
    assert!(dry["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{dry}");
    assert_eq!(restore_requests(&faults), 0, "a dry run requests nothing");
    let text = s3bundler(&faults.endpoint, &["restore", &bundled.archive]).await;
    assert!(
        text.stdout.contains("would request 1") && text.stdout.contains("add --yes"),
        "{}",
        text.stdout
    );

    let (out, done) = bundled.restore(&faults.endpoint, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(state(&done), "requested", "{done}");
    assert_eq!(restore_requests(&faults), 1);
    let (out, again) = bundled.restore(&faults.endpoint, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(state(&again), "ready", "moto restores at once: {again}");
    assert_eq!(
        restore_requests(&faults),
        1,
        "a ready archive is not requested again"
    );

    let manifests = format!("s3://{}/manifests/", bundled.arch);
    let archives = format!("s3://{}/bundles/", bundled.arch);
    let uncommitted = "manifests/never-bundled.0.index";
    let never = [entry("thawsrc-none", "k", 1, None)];
    write_manifest(&bundled.client, &bundled.arch, uncommitted, &never).await;
    let out = s3bundler(
        &faults.endpoint,
        &[
            "restore",
            "--manifests",
            &manifests,
            "--archives",
            &archives,
            "--status",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let status = out.json();
    assert_eq!(
        status["archives"][0]["archive"],
        bundled.archive.as_str(),
        "{status}"
    );
    assert_eq!(state(&status), "ready", "{status}");
    assert!(status["archives"][0]["until"].is_string(), "{status}");
    let skipped = status["skipped"].as_array().expect("skipped");
    assert!(
        skipped.len() == 1
            && skipped[0]
                .as_str()
                .is_some_and(|s| s.contains("not committed")),
        "{status}"
    );

    bundled.assert_cat_reads(&faults.endpoint).await;
    let out = s3bundler(&faults.endpoint, &extract).await;
    assert_eq!(out.code, 0, "{out:?}");
    let written = dir.path().join(&bundled.src).join(&bundled.key);
    assert_eq!(std::fs::read(written).expect("extracted"), bundled.bytes);
}

/// A restore S3 throttles twice (503 SlowDown) is tried again and lands once; it stays in
/// progress for three HEADs: `--status` and cat say so, `--wait` polls until it is ready, and
/// cat then reads it.
#[tokio::test]
async fn throttled_restores_are_retried_and_wait_polls_until_ready() {
    let bundled = Bundled::new(&LocalS3::shared().endpoint, "waited", &[]).await;
    let cold = Cold::new(&bundled.archive_key(), "DEEP_ARCHIVE").restoring_for(3);
    let faults = bundled.proxy(cold, 2);
    let (out, done) = bundled.restore(&faults.endpoint, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(state(&done), "requested", "{done}");
    assert_eq!(faults.counts.throttled_restores.load(Ordering::Relaxed), 2);
    let landed = || {
        faults
            .counts
            .restore_requests
            .lock()
            .map(|r| r.len())
            .unwrap_or(0)
    };
    assert_eq!(landed(), 1);

    let (out, status) = bundled.restore(&faults.endpoint, &["--status"]).await;
    assert_eq!((out.code, state(&status)), (0, "in_progress"), "{status}");
    bundled
        .assert_cat_refused(&faults.endpoint, "a restore of it is in progress")
        .await;
    let (out, waited) = bundled
        .restore(
            &faults.endpoint,
            &["--status", "--wait", "--poll-every", "0.05s"],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(state(&waited), "ready", "{waited}");
    let (_, again) = bundled.restore(&faults.endpoint, &["--yes"]).await;
    assert_eq!(state(&again), "ready", "{again}");
    assert_eq!(landed(), 1, "nothing requested again");
    bundled.assert_cat_reads(&faults.endpoint).await;
}

/// `--wait` stops on SIGINT, exits 130 and lists what is still restoring.
#[tokio::test]
async fn wait_stops_on_sigint_and_lists_what_is_still_restoring() {
    let bundled = Bundled::new(&LocalS3::shared().endpoint, "stopped", &[]).await;
    let cold = Cold::new(&bundled.archive_key(), "GLACIER").restoring_for(u64::MAX);
    let faults = bundled.proxy(cold, 0);
    let args = [
        "restore",
        bundled.archive.as_str(),
        "--yes",
        "--wait",
        "--poll-every",
        "0.02s",
    ];
    let child = spawn_s3bundler(&faults.endpoint, &args);
    let heads = || {
        faults
            .counts
            .operations()
            .get("HeadObject")
            .copied()
            .unwrap_or(0)
    };
    // The first HEAD, then polls: once three HEADs came, it is waiting.
    let waiting = async {
        while heads() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), waiting)
        .await
        .unwrap_or_else(|_| panic!("restore --wait never polled"));
    send_signal(&child, "INT");
    let out = finish(child, std::time::Duration::from_secs(60)).await;
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("still restoring: {}", bundled.archive)),
        "{}",
        out.stdout
    );
}

/// Expedited is not offered from DEEP_ARCHIVE: refused before any request (exit 2). A missing
/// archive is a problem (exit 1), not a crash.
#[tokio::test]
async fn expedited_from_deep_archive_is_refused_and_a_missing_archive_is_reported() {
    let bundled = Bundled::new(&LocalS3::shared().endpoint, "expedited", &[]).await;
    let faults = bundled.proxy(Cold::new(&bundled.archive_key(), "DEEP_ARCHIVE"), 0);
    let out = s3bundler(
        &faults.endpoint,
        &["restore", &bundled.archive, "--tier", "Expedited", "--yes"],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&bundled.archive) && out.stderr.contains("--tier Standard or Bulk"),
        "{}",
        out.stderr
    );
    assert_eq!(restore_requests(&faults), 0);

    let missing = format!("s3://{}/bundles/nowhere/gone.tar", bundled.arch);
    let out = s3bundler(&faults.endpoint, &["restore", &missing, "--yes", "--json"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(state(&out.json()), "missing", "{}", out.stdout);
    assert_eq!(restore_requests(&faults), 0);
}

/// Intelligent-Tiering archive tiers refuse Days: the request carries the tier and no Days;
/// once restored, cat reads the archive.
#[tokio::test]
async fn an_intelligent_tiering_archive_tier_is_restored_without_days() {
    let bundled = Bundled::new(&LocalS3::shared().endpoint, "tiered", &[]).await;
    let cold = Cold::in_archive_tier(&bundled.archive_key(), "DEEP_ARCHIVE_ACCESS");
    let faults = bundled.proxy(cold, 0);
    bundled
        .assert_cat_refused(&faults.endpoint, "INTELLIGENT_TIERING/DEEP_ARCHIVE_ACCESS")
        .await;
    let (out, dry) = bundled.restore(&faults.endpoint, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(dry["cost_usd"], 0.0, "no retrieval charge: {dry}");
    let (out, done) = bundled
        .restore(&faults.endpoint, &["--yes", "--tier", "Standard"])
        .await;
    assert_eq!((out.code, state(&done)), (0, "requested"), "{out:?}");
    let requests = faults
        .counts
        .restore_requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("<Tier>Standard</Tier>") && !requests[0].contains("<Days>"),
        "{}",
        requests[0]
    );
    bundled.assert_cat_reads(&faults.endpoint).await;
}
