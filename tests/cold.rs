//! Cold archives (GLACIER, DEEP_ARCHIVE): bundled into a cold class on moto, or transitioned
//! after bundling (the fault proxy answers their GETs 403 InvalidObjectState and their HEADs
//! with the class, as S3 does), they are verified by a HEAD against what the index recorded
//! when they were written, and pruned; an archive whose HEAD differs from the index is not;
//! `--deep` says a restore is needed, and reads a restored one. The index, the DLQ and
//! big-object `.metadata` rows stay in STANDARD.

mod common;

use common::*;
use s3bundler::bundle::ARCHIVE_SIZE_METADATA;
use s3bundler_testkit::faults::{Cold, FaultPlan};

/// Small objects archived; with `-s 2KiB`, a big one is copied to bigobjects/, one more is in
/// the DLQ.
const SMALL: usize = 12;

/// A manifest of SMALL small objects, `big` big objects (0 or 1: the local server's
/// CopyObject does not keep copies faithful, moto's does) and one that does not exist, at
/// `manifests/<name>.0.index` in the archive bucket: (source bucket, archive bucket, manifest).
async fn manifest(client: &aws_sdk_s3::Client, name: &str, big: usize) -> (String, String, String) {
    let src = new_bucket(client, "coldsrc").await;
    let arch = new_bucket(client, "coldarch").await;
    let mut entries = Vec::new();
    for i in 0..SMALL {
        let key = format!("logs/{i}.log");
        let data = body(100 + i * 13, i as u8);
        entries.push(entry(&src, &key, data.len() as u64, None));
        put_object(client, &src, &key, data).await;
    }
    for _ in 0..big {
        put_object(client, &src, "big/huge.bin", body(3000, 7)).await;
        entries.push(entry(&src, "big/huge.bin", 3000, None));
    }
    entries.push(entry(&src, "gone/never-existed", 5, None));
    let key = format!("manifests/{name}.0.index");
    let manifest = write_manifest(client, &arch, &key, &entries).await;
    (src, arch, manifest)
}

/// `bundle` as the tests lay bundles out (`-p bundles -s 2KiB`), with `extra`: its report.
async fn bundle(endpoint: &str, manifest: &str, arch: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bundle", "-m", manifest, "-b", arch, "-p", "bundles", "-s", "2KiB", "--json",
    ];
    args.extend_from_slice(extra);
    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 1, "one object goes to the DLQ: {out:?}");
    out.json()
}

use aws_sdk_s3::operation::head_object::HeadObjectOutput;

/// A clean verify of one manifest whose archive is cold: every archived object verified by
/// HEAD, `big` objects by their copy, the missing one in the DLQ.
fn assert_verified_cold(out: &Output, json: &serde_json::Value, big: usize) {
    assert_eq!(out.code, 0, "{out:?}");
    let totals = &json["totals"];
    assert_eq!(totals["verified"], SMALL + big, "{json}");
    assert_eq!(totals["verified_cold"], SMALL, "{json}");
    assert_eq!(totals["cold_archives"], 1, "{json}");
    assert_eq!(totals["in_dlq"]["NoSuchKey"], 1, "{json}");
    assert_eq!(json["problems"], 0, "{json}");
}

/// Prunes for real and checks that every archived or copied object is gone, and nothing else.
async fn assert_pruned(
    endpoint: &str,
    client: &aws_sdk_s3::Client,
    (src, arch): (&str, &str),
    big: usize,
) {
    let (out, json) = check_command(endpoint, "prune", arch, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json["deleted"]["objects"], SMALL + big, "{json}");
    assert_eq!(json["kept"]["InDlq"], 1, "{json}");
    assert!(list_keys(client, src, "").await.is_empty(), "{json}");
}

/// Old main: on moto, which refuses GETs of DEEP_ARCHIVE and GLACIER objects as S3 does,
/// verify reported every member of such an archive as mismatched, and prune deleted nothing.
#[tokio::test]
async fn bundle_into_a_cold_class_then_verify_and_prune_every_object_on_moto() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    for class in ["DEEP_ARCHIVE", "GLACIER"] {
        let (src, arch, manifest) = manifest(&client, &class.to_lowercase(), 1).await;
        let report = bundle(endpoint, &manifest, &arch, &["--storage-class", class]).await;
        let archive = key_of(&report["archive"], &arch);
        let archive_head = head(&client, &arch, &archive).await;
        assert_eq!(
            archive_head.storage_class().map(|c| c.as_str()),
            Some(class)
        );
        let index_head = head(&client, &arch, &key_of(&report["index"], &arch)).await;
        assert_eq!(
            index_head
                .metadata()
                .and_then(|m| m.get(ARCHIVE_SIZE_METADATA))
                .cloned(),
            archive_head.content_length().map(|l| l.to_string()),
            "the index records the archive's size"
        );
        let (out, json) = check_command(endpoint, "verify", &arch, &[]).await;
        assert_verified_cold(&out, &json, 1);
        assert_eq!(json["manifests"][0]["cold"], class, "{json}");
        assert_pruned(endpoint, &client, (&src, &arch), 1).await;
    }
}

/// Indexes, DLQs and big-object `.metadata` rows are read at once by verify, prune, extract
/// and a re-run: whatever `--storage-class` the archives and copies get, they stay STANDARD.
#[tokio::test]
async fn the_index_dlq_and_metadata_rows_stay_standard_whatever_the_archive_class() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let (_, arch, manifest) = manifest(&client, "records", 1).await;
    let report = bundle(
        endpoint,
        &manifest,
        &arch,
        &["--storage-class", "DEEP_ARCHIVE"],
    )
    .await;
    let keys = list_keys(&client, &arch, "").await;
    let copy = keys
        .iter()
        .find(|k| k.ends_with("bigobjects/big/huge.bin"))
        .unwrap_or_else(|| panic!("no big-object copy in {keys:?}"));
    let class = |head: &HeadObjectOutput| head.storage_class().map(|c| c.as_str().to_string());
    assert_eq!(
        class(&head(&client, &arch, copy).await).as_deref(),
        Some("DEEP_ARCHIVE"),
        "the copy is an archive"
    );
    let records = [
        key_of(&report["index"], &arch),
        key_of(&report["dlq"], &arch),
        format!("{copy}.metadata"),
    ];
    for key in &records {
        let class = class(&head(&client, &arch, key).await);
        assert!(
            class.is_none() || class.as_deref() == Some("STANDARD"),
            "{key} is in {class:?}"
        );
    }
}

/// A cold archive's proof rests on S3 having checked every part as it landed: each part (and
/// each record put whole) carries a CRC S3 verifies before it stores the bytes. The SDK's
/// default; the proxy's count is shown to catch uploads without one.
#[tokio::test]
async fn every_part_and_record_is_uploaded_with_a_checksum_s3_verifies() {
    let endpoint = &LocalS3::shared().endpoint;
    let client = s3_client(endpoint);
    for (env, checked) in [
        (&[][..], true),
        (
            &[("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")][..],
            false,
        ),
    ] {
        let (_, arch, manifest) = manifest(&client, "checked", 0).await;
        let faults = proxy(endpoint, FaultPlan::default());
        let args = [
            "bundle", "-m", &manifest, "-b", &arch, "-p", "bundles", "-s", "2KiB",
        ];
        let out = s3bundler_with_env(&faults.endpoint, &args, env).await;
        assert_eq!(out.code, 1, "{out:?}");
        let operations = faults.counts.operations();
        assert!(
            operations.get("UploadPart").is_some_and(|n| *n > 0),
            "{operations:?}"
        );
        let unchecked = faults
            .counts
            .unchecked_uploads
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            unchecked == 0,
            checked,
            "{env:?}: {unchecked} uploads without a checksum"
        );
    }
}

/// An archive bundled in STANDARD, then transitioned to DEEP_ARCHIVE (by the proxy): local
/// server, objects, manifest, the archive key, and a proxy in front that makes it cold.
struct Transitioned {
    client: aws_sdk_s3::Client,
    src: String,
    arch: String,
    archive: String,
    index: String,
}

impl Transitioned {
    async fn new() -> Transitioned {
        let endpoint = &LocalS3::shared().endpoint;
        let client = s3_client(endpoint);
        let (src, arch, manifest) = manifest(&client, "transitioned", 0).await;
        let report = bundle(endpoint, &manifest, &arch, &[]).await;
        Transitioned {
            archive: key_of(&report["archive"], &arch),
            index: key_of(&report["index"], &arch),
            client,
            src,
            arch,
        }
    }

    /// A proxy in front of the local server, the archive in DEEP_ARCHIVE (restored or not).
    fn cold(&self, restored: bool) -> s3bundler_testkit::faults::FaultProxy {
        let cold = Cold::new(&self.archive, "DEEP_ARCHIVE");
        let cold = if restored { cold.restored() } else { cold };
        proxy(
            &LocalS3::shared().endpoint,
            FaultPlan {
                cold: Some(cold),
                ..FaultPlan::default()
            },
        )
    }

    /// Rewrites the index with its metadata entry `name` set to `value`.
    async fn set_index_metadata(&self, name: &str, value: &str) {
        let index = head(&self.client, &self.arch, &self.index).await;
        let mut metadata = index.metadata().cloned().unwrap_or_default();
        metadata.insert(name.to_string(), value.to_string());
        let body = get_object(&self.client, &self.arch, &self.index).await;
        self.client
            .put_object()
            .bucket(&self.arch)
            .key(&self.index)
            .body(body.into())
            .set_metadata(Some(metadata))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    }

    /// verify, then prune --yes, through `endpoint` with `extra`: both fail with `needle` in a
    /// manifest problem, and no object is deleted.
    async fn assert_unproven(&self, endpoint: &str, extra: &[&str], needle: &str) {
        let (out, json) = check_command(endpoint, "verify", &self.arch, extra).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(json["totals"]["manifest_problems"], 1, "{json}");
        assert!(out.stdout.contains(needle), "{needle} in {}", out.stdout);
        let prune = [extra, &["--yes"]].concat();
        let (out, json) = check_command(endpoint, "prune", &self.arch, &prune).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(json["deleted"]["objects"], 0, "{json}");
        assert_eq!(
            list_keys(&self.client, &self.src, "").await.len(),
            SMALL,
            "nothing pruned"
        );
    }
}

/// Old main: once the archive went cold after bundling, verify's range GETs were refused
/// (InvalidObjectState) and every member was reported mismatched.
#[tokio::test]
async fn an_archive_transitioned_after_bundling_is_verified_by_head_and_pruned() {
    let bundled = Transitioned::new().await;
    let faults = bundled.cold(false);
    let (out, json) = check_command(&faults.endpoint, "verify", &bundled.arch, &[]).await;
    assert_verified_cold(&out, &json, 0);
    let buckets = (bundled.src.as_str(), bundled.arch.as_str());
    assert_pruned(&faults.endpoint, &bundled.client, buckets, 0).await;
    assert_eq!(
        faults
            .counts
            .cold_gets
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the cold archive was never read"
    );
}

/// A cold archive is proven only by its HEAD agreeing with its index: replaced since (another
/// ETag), or of another size than the index recorded, it fails verify and prune keeps every
/// object.
#[tokio::test]
async fn a_cold_archive_whose_head_differs_from_its_index_fails_and_nothing_is_pruned() {
    let bundled = Transitioned::new().await;
    bundled.set_index_metadata(ARCHIVE_SIZE_METADATA, "1").await;
    let faults = bundled.cold(false);
    bundled
        .assert_unproven(&faults.endpoint, &[], "the index names 1")
        .await;

    let bundled = Transitioned::new().await;
    let mut tar = get_object(&bundled.client, &bundled.arch, &bundled.archive).await;
    if let Some(last) = tar.last_mut() {
        *last ^= 1;
    }
    put_object(&bundled.client, &bundled.arch, &bundled.archive, tar).await;
    let faults = bundled.cold(false);
    bundled
        .assert_unproven(
            &faults.endpoint,
            &[],
            "not the archive its index was committed for",
        )
        .await;
}

/// `--deep` needs every member's bytes: on a cold archive it names the archive and says a
/// restore is needed (exit 1, prune keeps everything); once restored, it reads it as usual.
#[tokio::test]
async fn deep_on_a_cold_archive_says_a_restore_is_needed_and_reads_a_restored_one() {
    let bundled = Transitioned::new().await;
    let faults = bundled.cold(false);
    bundled
        .assert_unproven(
            &faults.endpoint,
            &["--deep"],
            &format!("{} is in DEEP_ARCHIVE and not restored", bundled.archive),
        )
        .await;

    let restored = bundled.cold(true);
    let (out, json) = check_command(&restored.endpoint, "verify", &bundled.arch, &["--deep"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json["totals"]["verified"], SMALL, "{json}");
    assert_eq!(
        json["totals"]["verified_cold"], 0,
        "read, not proven by HEAD: {json}"
    );
}
