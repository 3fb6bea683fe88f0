//! `s3bundler verify` (on moto, whose CopyObject keeps big-object copies faithful): a clean
//! bundle verifies with no problems, and each kind of damage is found, each in its own test.

mod common;

use common::*;
use md5::Digest;
use s3bundler::archive::records::{
    parse_dlq, parse_index, DlqReason, DlqRow, DlqWriter, IndexRow, IndexWriter,
};

/// Small objects archived, one copied to bigobjects/ (over `-s 2KiB`), one in the DLQ.
const SMALL: usize = 30;

/// A manifest bundled on moto.
#[derive(Clone)]
struct Bundled {
    endpoint: String,
    client: aws_sdk_s3::Client,
    arch: String,
    manifest_key: String,
    index_key: String,
    archive_key: String,
    big_key: String,
}

impl Bundled {
    async fn new(compress: Option<&str>) -> Bundled {
        let endpoint = moto::endpoint();
        let client = s3_client(endpoint);
        let src = new_bucket(&client, "vsrc").await;
        let arch = new_bucket(&client, "varch").await;
        let mut entries = Vec::new();
        for i in 0..SMALL {
            let key = format!("data/obj {i}.bin");
            let data = body(100 + i * 37, i as u8);
            entries.push(entry(&src, &key, data.len() as u64, None));
            put_object(&client, &src, &key, data).await;
        }
        put_object(&client, &src, "big/huge.bin", body(3000, 9)).await;
        entries.push(entry(&src, "big/huge.bin", 3000, None));
        entries.push(entry(&src, "gone/never-existed", 5, None));
        let manifest_key = "manifests/src-manifest.0.index".to_string();
        write_manifest(&client, &arch, &manifest_key, &entries).await;
        let manifest = format!("s3://{arch}/{manifest_key}");
        let mut args = vec![
            "bundle", "-m", &manifest, "-b", &arch, "-p", "bundles", "-s", "2KiB", "--json",
        ];
        if let Some(compress) = compress {
            args.extend(["--compress", compress]);
        }
        let out = s3bundler(endpoint, &args).await;
        assert_eq!(out.code, 1, "one object goes to the DLQ: {out:?}");
        let report = out.json();
        let key_of = |field: &str| {
            report[field]
                .as_str()
                .unwrap_or("")
                .trim_start_matches(&format!("s3://{arch}/"))
                .to_string()
        };
        let big_key = list_keys(&client, &arch, "bundles/")
            .await
            .into_iter()
            .find(|k| k.ends_with("bigobjects/big/huge.bin"))
            .unwrap_or_else(|| panic!("no big-object copy: {report}"));
        Bundled {
            endpoint: endpoint.to_string(),
            arch: arch.clone(),
            index_key: key_of("index"),
            archive_key: key_of("archive"),
            manifest_key,
            big_key,
            client,
        }
    }

    async fn verify(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        check_command(&self.endpoint, "verify", &self.arch, extra).await
    }

    async fn index(&self) -> Vec<IndexRow> {
        let bytes = get_object(&self.client, &self.arch, &self.index_key).await;
        parse_index(&bytes, "index").unwrap_or_else(|e| panic!("{e}"))
    }

    async fn write_index(&self, rows: &[IndexRow]) {
        let mut writer = IndexWriter::default();
        rows.iter().for_each(|r| writer.push(r));
        put_object(&self.client, &self.arch, &self.index_key, writer.finish()).await;
    }

    async fn archive(&self) -> Vec<u8> {
        get_object(&self.client, &self.arch, &self.archive_key).await
    }

    async fn write_archive(&self, bytes: Vec<u8>) {
        put_object(&self.client, &self.arch, &self.archive_key, bytes).await;
    }

    /// Rewrites the index's metadata to name the archive as it is now.
    async fn claim_current_archive(&self) {
        use s3bundler::bundle::ARCHIVE_ETAG_METADATA;
        let head = self
            .client
            .head_object()
            .bucket(&self.arch)
            .key(&self.archive_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let etag = head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        self.client
            .copy_object()
            .copy_source(format!("{}/{}", self.arch, self.index_key))
            .bucket(&self.arch)
            .key(&self.index_key)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .metadata(ARCHIVE_ETAG_METADATA, etag)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
}

fn totals(json: &serde_json::Value) -> &serde_json::Value {
    &json["totals"]
}

fn problem_kinds(json: &serde_json::Value) -> Vec<String> {
    json["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["problems"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            format!(
                "{} {} {}",
                p["kind"].as_str().unwrap_or(""),
                p["object"].as_str().unwrap_or(""),
                p["detail"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Verifies with `extra` and expects exactly one mismatched object, whose problem mentions
/// every one of `needles`.
async fn expect_one_mismatch(bundled: &Bundled, extra: &[&str], needles: &[&str]) {
    let (out, json) = bundled.verify(extra).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(totals(&json)["mismatched"], 1, "{json}");
    let kinds = problem_kinds(&json);
    assert!(
        kinds.len() == 1 && needles.iter().all(|n| kinds[0].contains(n)),
        "{needles:?} in {kinds:?}"
    );
}

#[tokio::test]
async fn a_clean_bundle_verifies_with_zero_problems_shallow_and_deep() {
    let bundled = Bundled::new(None).await;
    for extra in [&[][..], &["--deep"][..]] {
        let (out, json) = bundled.verify(extra).await;
        assert_eq!(out.code, 0, "{extra:?}: {out:?}");
        let t = totals(&json);
        assert_eq!(t["objects"], SMALL + 2, "{json}");
        assert_eq!(t["verified"], SMALL + 1, "{json}");
        assert_eq!(t["in_dlq"]["NoSuchKey"], 1, "{json}");
        assert_eq!(json["problems"], 0, "{json}");
    }
    // The table, too; listing the whole bucket finds the manifest and not the indexes.
    let manifests = format!("s3://{}/", bundled.arch);
    let out = s3bundler(
        &bundled.endpoint,
        &[
            "verify",
            "--manifests",
            &manifests,
            "-b",
            &bundled.arch,
            "-p",
            "bundles",
            "-s",
            "2KiB",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("verified: no problems")
            && out.stdout.contains("NoSuchKey=1")
            && out.stdout.contains("TOTAL (1 manifests)"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn compressed_archives_verify_deep_and_a_cut_one_is_found() {
    for compress in ["gzip", "zstd"] {
        let bundled = Bundled::new(Some(compress)).await;
        let (out, json) = bundled.verify(&["--deep"]).await;
        assert_eq!(out.code, 0, "{compress}: {out:?}");
        assert_eq!(totals(&json)["verified"], SMALL + 1, "{json}");
        // Cut the compressed archive: its members cannot all be read.
        let archive = bundled.archive().await;
        bundled
            .write_archive(archive[..archive.len() / 2].to_vec())
            .await;
        let (out, json) = bundled.verify(&[]).await;
        assert_eq!(out.code, 1, "{compress}: {out:?}");
        assert!(
            totals(&json)["manifest_problems"].as_u64() >= Some(1),
            "{json}"
        );
    }
}

#[tokio::test]
async fn an_object_in_no_index_dlq_or_bigobjects_is_missing() {
    let bundled = Bundled::new(None).await;
    let mut rows = bundled.index().await;
    let removed = rows.remove(3);
    bundled.write_index(&rows).await;
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let t = totals(&json);
    assert_eq!(
        (t["missing"].as_u64(), t["mismatched"].as_u64()),
        (Some(1), Some(0)),
        "{json}"
    );
    let kinds = problem_kinds(&json);
    assert!(
        kinds.len() == 1 && kinds[0].starts_with("missing") && kinds[0].contains(&removed.key),
        "{kinds:?}"
    );
    assert!(out.stderr.contains("ERROR"), "{}", out.stderr);
}

#[tokio::test]
async fn an_object_in_two_places_is_duplicated() {
    let bundled = Bundled::new(None).await;
    let rows = bundled.index().await;
    let dlq_key = format!("{}.dlq", bundled.manifest_key);
    let mut dlq = parse_dlq(
        &get_object(&bundled.client, &bundled.arch, &dlq_key).await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    dlq.push(DlqRow {
        bucket: rows[4].bucket.clone(),
        key: rows[4].key.clone(),
        version_id: None,
        size: rows[4].size,
        last_modified: None,
        reason: DlqReason::Retry,
        detail: "also here".into(),
    });
    let mut writer = DlqWriter::default();
    dlq.iter().for_each(|r| writer.push(r));
    put_object(&bundled.client, &bundled.arch, &dlq_key, writer.finish()).await;
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(totals(&json)["duplicated"], 1, "{json}");
    let kinds = problem_kinds(&json);
    assert!(
        kinds.len() == 1 && kinds[0].contains("index row") && kinds[0].contains("DLQ row"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn an_index_row_with_wrong_offsets_is_mismatched() {
    let bundled = Bundled::new(None).await;
    let mut rows = bundled.index().await;
    // Point row 5 at row 6's member: a header that names another key.
    let (header, data) = (rows[6].header_offset, rows[6].data_offset);
    rows[5].header_offset = header;
    rows[5].data_offset = data;
    rows.swap(5, 6);
    bundled.write_index(&rows).await;
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(totals(&json)["mismatched"].as_u64() >= Some(1), "{json}");
    let kinds = problem_kinds(&json);
    assert!(
        kinds
            .iter()
            .any(|k| k.starts_with("mismatched") && k.contains("overlaps") || k.contains("names")),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_truncated_archive_is_found() {
    let bundled = Bundled::new(None).await;
    let archive = bundled.archive().await;
    bundled
        .write_archive(archive[..archive.len() - 3000].to_vec())
        .await;
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let t = totals(&json);
    // Truncated, and (its ETag tells) not the archive the index was committed for.
    assert_eq!(t["manifest_problems"], 2, "{json}");
    assert!(t["mismatched"].as_u64() >= Some(1), "{json}");
    let kinds = problem_kinds(&json);
    assert!(kinds.iter().any(|k| k.contains("truncated")), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|k| k.contains("not the archive its index was committed for")),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_changed_member_is_found_only_deep() {
    let bundled = Bundled::new(None).await;
    let rows = bundled.index().await;
    let mut archive = bundled.archive().await;
    let at = rows[7].data_offset.unwrap_or(0) as usize;
    archive[at] ^= 0xff;
    bundled.write_archive(archive).await;
    // The new ETag gives the replacement away; bytes changing under an unchanged ETag (the
    // case --deep is for) look like this index committed for this archive.
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(totals(&json)["manifest_problems"], 1, "{json}");
    bundled.claim_current_archive().await;
    let (out, json) = bundled.verify(&[]).await;
    assert_eq!(out.code, 0, "headers and lengths still agree: {out:?}");
    assert_eq!(json["problems"], 0, "{json}");
    expect_one_mismatch(&bundled, &["--deep"], &[&rows[7].key, "MD5"]).await;
}

#[tokio::test]
async fn a_member_changed_along_with_its_index_md5_is_caught_against_the_source_deep() {
    let bundled = Bundled::new(None).await;
    let mut rows = bundled.index().await;
    let mut archive = bundled.archive().await;
    let start = rows[8].data_offset.unwrap_or(0) as usize;
    let end = start + rows[8].size as usize;
    archive[start] ^= 0xff;
    rows[8].md5 = hex::encode(md5::Md5::digest(&archive[start..end]));
    bundled.write_archive(archive).await;
    bundled.write_index(&rows).await;
    expect_one_mismatch(&bundled, &["--deep"], &["the source", "ETag"]).await;
}

#[tokio::test]
async fn a_missing_big_object_copy_is_found() {
    let bundled = Bundled::new(None).await;
    bundled
        .client
        .delete_object()
        .bucket(&bundled.arch)
        .key(&bundled.big_key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    expect_one_mismatch(&bundled, &[], &["big/huge.bin", "does not"]).await;
}

#[tokio::test]
async fn verify_and_extract_read_again_when_bodies_are_cut_or_throttled() {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

    let bundled = Bundled::new(None).await;
    let proxy = FaultProxy::start(
        &bundled.endpoint,
        FaultPlan {
            get_503_every: 7,
            get_cut_every: 10,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let through_proxy = Bundled {
        endpoint: proxy.endpoint.clone(),
        ..bundled.clone()
    };
    for _ in 0..3 {
        let (out, json) = through_proxy.verify(&["--deep"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(totals(&json)["verified"], SMALL + 1, "{json}");
    }
    let dst = new_bucket(&bundled.client, "vfaultdst").await;
    let archive = format!("s3://{}/{}", bundled.arch, bundled.archive_key);
    let out = s3bundler(
        &proxy.endpoint,
        &[
            "extract",
            &archive,
            "--to",
            &format!("s3://{dst}"),
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(list_keys(&bundled.client, &dst, "").await.len(), SMALL);
    let counts = &proxy.counts;
    let cut = counts.cut_bodies.load(std::sync::atomic::Ordering::Relaxed);
    let throttled = counts
        .injected_503
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        cut > 0 && throttled > 0,
        "faults were injected: {cut} cut, {throttled} 503"
    );
    for row in bundled.index().await {
        let restored = get_object(&bundled.client, &dst, &row.key).await;
        assert_eq!(
            hex::encode(md5::Md5::digest(&restored)),
            row.md5,
            "{}",
            row.key
        );
    }
}

#[tokio::test]
async fn no_manifests_under_the_prefix_is_bad_input() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let arch = new_bucket(&client, "vempty").await;
    let manifests = format!("s3://{arch}/nothing/");
    let out = s3bundler(
        &server.endpoint,
        &["verify", "--manifests", &manifests, "-b", &arch],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no bundle manifests"), "{}", out.stderr);
}

/// A table (index, DLQ) whose body is cut is read on from where it stopped, but only from the
/// version the first GET read: one replaced meanwhile fails the read instead of yielding the
/// start of one version and the end of the other. (Through moto: s3s-fs ignores If-Match on
/// GET.)
#[tokio::test]
async fn a_table_replaced_while_its_cut_body_is_read_on_fails_instead_of_mixing_versions() {
    use s3bundler::s3::{WriteSettings, S3};
    use s3bundler::s3uri::S3Uri;
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
    use std::io::Read;

    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "tablereplaced").await;
    put_object(&client, &bucket, "t/x.index", b"first\n".repeat(100_000)).await;
    let proxy = FaultProxy::start(
        moto::endpoint(),
        FaultPlan {
            get_cut_first: 1,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s3 = S3::new(s3_client(&proxy.endpoint), WriteSettings::default());
    let uri = S3Uri::new(bucket.clone(), "t/x.index".to_string());
    let got = s3.get_stream(&uri).await.unwrap_or_else(|e| panic!("{e}"));
    put_object(&client, &bucket, "t/x.index", b"other\n".repeat(100_000)).await;
    let mut reader = s3bundler::reading::resumed_reader(s3, uri, got);
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    match read {
        Ok(bytes) => panic!(
            "read {} bytes, {} of them from the replacement",
            bytes.len(),
            bytes.windows(6).filter(|w| w == b"other\n").count() * 6
        ),
        Err(e) => assert!(
            e.to_string().contains("replaced while it was being read"),
            "{e}"
        ),
    }
}
