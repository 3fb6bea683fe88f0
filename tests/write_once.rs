//! Write-once records (SPEC "Write-once records"): once a manifest's index (or final DLQ)
//! exists, nothing `bundle` does replaces or deletes its archive, index, DLQ or copies; what an
//! attempt left without committing is removed before the manifest is redone; two manifests
//! with one name are refused; a retried write finds its own record; big-object copies are
//! keyed by version.

mod common;

use common::*;
use s3bundler::archive::records::parse_dlq;
use s3bundler::bundle::copy::{SOURCE_ETAG_METADATA, SOURCE_VERSION_METADATA};
use s3bundler::bundle::{ATTEMPT_METADATA, MANIFEST_METADATA};
use s3bundler_testkit::faults::{FailPut, FaultPlan, FaultProxy};
use s3bundler_testkit::server::LocalS3;

async fn bundle(endpoint: &str, manifest: &str, arch: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "bundle", "-m", manifest, "-b", arch, "-p", "bundles", "-s", "2KiB", "--json",
    ];
    args.extend_from_slice(extra);
    s3bundler(endpoint, &args).await
}

/// Text, so that `cat`'s output compares as it was written.
fn photo(i: usize) -> Vec<u8> {
    format!("photo {i} ").repeat(10 + i).into_bytes()
}

/// The headline loss of issue 24: bundle with one object missing, prune, put the missing
/// object back, bundle the same manifest again. The old code replaced the archive and index by
/// ones holding only the late object, and the pruned objects were gone.
#[tokio::test]
async fn a_rerun_after_prune_never_replaces_the_only_copy() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "wosrc").await;
    let arch = new_bucket(&client, "woarch").await;
    let mut entries = Vec::new();
    for i in 0..5 {
        let key = format!("photos/{i}.jpg");
        put_object(&client, &src, &key, photo(i)).await;
        entries.push(entry(&src, &key, photo(i).len() as u64, None));
    }
    entries.push(entry(&src, "photos/late.jpg", 77, None));
    let manifest = write_manifest(&client, &arch, "manifests/wo-manifest.0.index", &entries).await;

    let first = bundle(endpoint, &manifest, &arch, &[]).await;
    assert_eq!(first.code, 1, "one object missing: {first:?}");
    let report = first.json();
    let (archive, index) = (
        key_of(&report["archive"], &arch),
        key_of(&report["index"], &arch),
    );
    let archive_etag = head(&client, &arch, &archive).await.e_tag;
    let index_etag = head(&client, &arch, &index).await.e_tag;
    let (pruned, _) = check_command(endpoint, "prune", &arch, &["--yes"]).await;
    assert!(pruned.code <= 1, "{pruned:?}");
    assert!(list_keys(&client, &src, "photos/").await.is_empty());

    put_object(&client, &src, "photos/late.jpg", body(77, 9)).await;
    let again = bundle(endpoint, &manifest, &arch, &[]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["already_done"], true, "{again:?}");
    assert!(again.stderr.contains("already bundled"), "{again:?}");
    assert_eq!(head(&client, &arch, &archive).await.e_tag, archive_etag);
    assert_eq!(head(&client, &arch, &index).await.e_tag, index_etag);
    for i in 0..5 {
        let member = format!("photos/{i}.jpg");
        let out = s3bundler(
            endpoint,
            &[
                "cat",
                &format!("s3://{arch}/{archive}"),
                &format!("{src}/{member}"),
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.as_bytes(), photo(i), "{member}");
    }
}

/// `retry/X.0.csv` and `X.0.index` have one NAME and so one archive key: the second is refused
/// before it writes anything (the old code replaced the first one's archive and index).
#[tokio::test]
async fn two_manifests_with_one_name_are_refused_before_any_write() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let src = new_bucket(&client, "namesrc").await;
    let arch = new_bucket(&client, "namearch").await;
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..3 {
        let key = format!("a/{i}");
        put_object(&client, &src, &key, body(10, i)).await;
        first.push(entry(&src, &key, 10, None));
        let key = format!("b/{i}");
        put_object(&client, &src, &key, body(20, i)).await;
        second.push(entry(&src, &key, 20, None));
    }
    let one = write_manifest(&client, &arch, "manifests/X.0.index", &first).await;
    let other = write_manifest(&client, &arch, "manifests/retry/X.0.csv", &second).await;
    let done = bundle(&server.endpoint, &one, &arch, &[]).await;
    assert_eq!(done.code, 0, "{done:?}");
    let index = key_of(&done.json()["index"], &arch);
    let before = list_keys(&client, &arch, "").await;
    let index_etag = head(&client, &arch, &index).await.e_tag;

    let refused = bundle(&server.endpoint, &other, &arch, &[]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("manifests/X.0.index") && refused.stderr.contains("rename"),
        "names the owner and what to do: {refused:?}"
    );
    assert_eq!(
        list_keys(&client, &arch, "").await,
        before,
        "nothing written"
    );
    assert_eq!(head(&client, &arch, &index).await.e_tag, index_etag);
    let owner = head(&client, &arch, &index).await;
    assert_eq!(
        owner
            .metadata()
            .and_then(|m| m.get(MANIFEST_METADATA))
            .map(String::as_str),
        Some(format!("s3://{arch}/manifests/X.0.index").as_str())
    );
}

/// An attempt that completed its archive but not its index left the archive behind: the next
/// holder removes it before it writes, since a record is never written over (the proxy refuses
/// a conditional write on an existing key, as S3 does).
#[tokio::test]
async fn an_archive_left_without_an_index_is_removed_before_the_manifest_is_redone() {
    let server = LocalS3::shared();
    let (client, bucket, manifest) = local_objects("leftover", 6, 300).await;
    let arch = new_bucket(&client, "leftarch").await;
    // Killed while its index PUT is held: the archive is complete, the index never written.
    let held = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            write_once: true,
            put_delay: Some(std::time::Duration::from_secs(60)),
            delay_put_keys_ending_with: Some(".index".into()),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "bundle", "-m", &manifest, "-b", &arch, "-p", "bundles", "--json",
    ];
    let mut child = spawn_s3bundler(&held.endpoint, &args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let left = loop {
        let keys = list_keys(&client, &arch, "").await;
        if !keys.is_empty() {
            break keys;
        }
        assert!(std::time::Instant::now() < deadline, "no archive written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert!(
        left.len() == 1 && left[0].ends_with(".tar"),
        "the archive without its index: {left:?}"
    );
    let leftover_attempt = head(&client, &arch, &left[0]).await;
    let leftover_attempt = leftover_attempt
        .metadata()
        .and_then(|m| m.get(ATTEMPT_METADATA))
        .cloned();

    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            write_once: true,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let redone = s3bundler(&proxy.endpoint, &args).await;
    assert_eq!(redone.code, 0, "{redone:?}");
    assert!(
        redone
            .stderr
            .contains("left by an attempt that did not commit"),
        "{redone:?}"
    );
    let archive = head(&client, &arch, &left[0]).await;
    assert_ne!(
        archive
            .metadata()
            .and_then(|m| m.get(ATTEMPT_METADATA))
            .cloned(),
        leftover_attempt,
        "the archive is the new attempt's"
    );
    let manifests = format!("s3://{bucket}/m/");
    let verified = s3bundler(
        &proxy.endpoint,
        &[
            "verify",
            "--manifests",
            &manifests,
            "-b",
            &arch,
            "-p",
            "bundles",
            "--json",
        ],
    )
    .await;
    assert_eq!(verified.code, 0, "{verified:?}");
    assert_eq!(verified.json()["problems"], 0, "{verified:?}");
}

/// A DLQ that lists every object of its manifest is final even without the metadata a DLQ
/// put whole gets (one uploaded in parts cannot get it): a re-run is "already bundled". A DLQ
/// that lists fewer is what an attempt left before its index, and is redone.
#[tokio::test]
async fn a_dlq_listing_every_object_is_final_and_a_shorter_one_is_redone() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let src = new_bucket(&client, "dlqsrc").await;
    let arch = new_bucket(&client, "dlqarch").await;
    let entries: Vec<_> = (0..3)
        .map(|i| entry(&src, &format!("gone/{i}"), 5, None))
        .collect();
    let manifest = write_manifest(&client, &arch, "manifests/gone.0.index", &entries).await;
    let dlq_key = "manifests/gone.0.index.dlq";
    let header = "bucket,key,version_id,size,last_modified,reason,detail\n";
    let rows: String = (0..3)
        .map(|i| format!("{src},gone/{i},,5,,NoSuchKey,gone\n"))
        .collect();
    put_object(
        &client,
        &arch,
        dlq_key,
        format!("{header}{rows}").into_bytes(),
    )
    .await;
    let done = bundle(&server.endpoint, &manifest, &arch, &[]).await;
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(done.json()["already_done"], true, "{done:?}");

    let short: String = rows.lines().take(2).map(|l| format!("{l}\n")).collect();
    put_object(
        &client,
        &arch,
        dlq_key,
        format!("{header}{short}").into_bytes(),
    )
    .await;
    let redone = bundle(&server.endpoint, &manifest, &arch, &[]).await;
    assert_eq!(redone.code, 1, "every object missing: {redone:?}");
    let dlq = parse_dlq(&get_object(&client, &arch, dlq_key).await, dlq_key)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dlq.len(), 3);
}

/// A lost answer to the worker's own lease PUT: the SDK's retry meets the lease it wrote
/// (412). The old code took it for another worker's and gave up (exit 5).
#[tokio::test]
async fn a_lease_write_whose_answer_was_lost_is_recognised_as_this_workers_own() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "leasesrc").await;
    let arch = new_bucket(&client, "leasearch").await;
    put_object(&client, &src, "k", body(10, 1)).await;
    let manifest = write_manifest(
        &client,
        &arch,
        "manifests/lease.0.index",
        &[entry(&src, "k", 10, None)],
    )
    .await;
    let proxy = FaultProxy::start(
        endpoint,
        FaultPlan {
            lose_answers_ending_with: Some(FailPut::internal_error(".lease")),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = bundle(&proxy.endpoint, &manifest, &arch, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        proxy
            .counts
            .lost_answers
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(list_keys(&client, &arch, "manifests/lease.0.index.lease")
        .await
        .is_empty());
}

/// Two versions of one big object get two copies, each saying which version it holds; the
/// old code copied both to one key, the later replacing the earlier.
#[tokio::test]
async fn each_version_of_a_big_object_gets_its_own_copy_that_verify_checks() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "versrc").await;
    let arch = new_bucket(&client, "verarch").await;
    enable_versioning(&client, &src).await;
    let mut versions = Vec::new();
    for seed in [1u8, 2] {
        let source = Source {
            key: "big/video.bin".into(),
            body: body(3000, seed),
            ..Source::default()
        };
        let version = put(&client, &src, &source).await;
        versions.push(version.unwrap_or_else(|| panic!("versioned")));
    }
    let entries: Vec<_> = versions
        .iter()
        .map(|v| entry(&src, "big/video.bin", 3000, Some(v)))
        .collect();
    let manifest = write_manifest(&client, &arch, "manifests/ver-manifest.0.index", &entries).await;
    let out = bundle(endpoint, &manifest, &arch, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_copied"], 2, "{out:?}");
    let copies: Vec<String> = list_keys(&client, &arch, "bundles/")
        .await
        .into_iter()
        .filter(|k| k.ends_with("/big/video.bin"))
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    for (version, seed) in versions.iter().zip([1u8, 2]) {
        let copy = copies
            .iter()
            .find(|k| k.contains(&format!("/bigobjects-by-version/{version}/")))
            .unwrap_or_else(|| panic!("no copy of {version} in {copies:?}"));
        assert_eq!(get_object(&client, &arch, copy).await, body(3000, seed));
        let said = head(&client, &arch, copy).await;
        let metadata = said.metadata().cloned().unwrap_or_default();
        assert_eq!(metadata.get(SOURCE_VERSION_METADATA), Some(version));
        assert!(metadata.contains_key(SOURCE_ETAG_METADATA));
    }
    let (verified, json) = check_command(endpoint, "verify", &arch, &[]).await;
    assert_eq!(verified.code, 0, "{verified:?}");
    assert_eq!(json["problems"], 0, "{json}");

    // A copy that holds other contents than its .metadata records is found.
    let copy = &copies[0];
    let other = client
        .copy_object()
        .bucket(&arch)
        .key(copy)
        .copy_source(format!("{arch}/{copy}"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata(SOURCE_ETAG_METADATA, "0123456789abcdef0123456789abcdef")
        .send()
        .await;
    assert!(other.is_ok(), "{other:?}");
    let (verified, json) = check_command(endpoint, "verify", &arch, &[]).await;
    assert_eq!(verified.code, 1, "{verified:?}");
    assert!(
        json.to_string().contains("holds the source's ETag"),
        "{json}"
    );
}

/// One manifest bundled through crashes: each run is killed (kill -9) once the proxy has
/// answered `after` requests, then a last run completes it. Whatever the crash points, every
/// object ends in exactly one record, and every object prune deletes can be read back.
async fn crash_and_rerun(crash_points: &[u64]) {
    // moto: the big object's copy needs tags, which s3s-fs lacks.
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "crashsrc").await;
    let arch = new_bucket(&client, "crasharch").await;
    let mut entries = Vec::new();
    for i in 0..12 {
        let key = format!("f/{i}");
        put_object(&client, &src, &key, photo(i)).await;
        entries.push(entry(&src, &key, photo(i).len() as u64, None));
    }
    put_object(&client, &src, "f/big", body(3000, 7)).await;
    entries.push(entry(&src, "f/big", 3000, None));
    entries.push(entry(&src, "f/missing", 9, None));
    let manifest = write_manifest(&client, &arch, "manifests/crash.0.index", &entries).await;
    let args = [
        "bundle",
        "-m",
        &manifest,
        "-b",
        &arch,
        "-p",
        "bundles",
        "-s",
        "2KiB",
        "--json",
        "--concurrency",
        "2",
    ];
    for &after in crash_points {
        let proxy = FaultProxy::start(
            endpoint,
            FaultPlan {
                write_once: true,
                hold_after: Some(after),
                ..FaultPlan::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut child = spawn_s3bundler(&proxy.endpoint, &args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if proxy.counts.held.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let _ = child.start_kill();
                let _ = child.wait().await;
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "run {after} hangs");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let proxy = FaultProxy::start(
        endpoint,
        FaultPlan {
            write_once: true,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let last = s3bundler(&proxy.endpoint, &args).await;
    assert!(last.code <= 1, "after {crash_points:?}: {last:?}");
    let (verified, json) = check_command(&proxy.endpoint, "verify", &arch, &[]).await;
    assert_eq!(verified.code, 0, "after {crash_points:?}: {verified:?}");
    assert_eq!(
        json["totals"]["verified"], 13,
        "after {crash_points:?}: {json} {}",
        last.stderr
    );
    assert_eq!(json["totals"]["in_dlq"]["NoSuchKey"], 1, "{json}");
    let (pruned, _) = check_command(&proxy.endpoint, "prune", &arch, &["--yes"]).await;
    assert_eq!(pruned.code, 0, "after {crash_points:?}: {pruned:?}");
    assert!(list_keys(&client, &src, "f/").await.is_empty());
    let index_key = list_keys(&client, &arch, "bundles/")
        .await
        .into_iter()
        .find(|k| k.ends_with("crash.0.index"))
        .unwrap_or_else(|| panic!("no index after {crash_points:?}"));
    let archive = format!("s3://{arch}/{}", index_key.replace(".index", ".tar"));
    for i in 0..12 {
        let out = s3bundler(&proxy.endpoint, &["cat", &archive, &format!("{src}/f/{i}")]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.as_bytes(), photo(i));
    }
    let copy = list_keys(&client, &arch, "bundles/")
        .await
        .into_iter()
        .find(|k| k.ends_with("/f/big"))
        .unwrap_or_else(|| panic!("no copy of f/big after {crash_points:?}"));
    assert_eq!(get_object(&client, &arch, &copy).await, body(3000, 7));
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 6,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Random crash points between any two requests (a clean run makes about 45), and re-runs.
    #[test]
    fn no_crash_point_loses_or_duplicates_a_record(
        crash_points in proptest::collection::vec(1u64..50, 1..4)
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(crash_and_rerun(&crash_points));
    }
}

/// A multipart copy whose CreateMultipartUpload answer was lost: the SDK's retry creates a
/// second upload and the copy completes through it. The first upload, which the client never
/// heard of, was left open until the bucket's lifecycle rule.
#[tokio::test]
async fn a_multipart_copy_whose_create_answer_was_lost_leaves_no_upload() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "strsrc").await;
    let arch = new_bucket(&client, "strarch").await;
    put_object(&client, &src, "big/movie.bin", body(6 << 20, 7)).await;
    put_object(&client, &src, "small", body(10, 1)).await;
    let manifest = write_manifest(
        &client,
        &arch,
        "manifests/stray.0.index",
        &[
            entry(&src, "big/movie.bin", 6 << 20, None),
            entry(&src, "small", 10, None),
        ],
    )
    .await;
    let proxy = FaultProxy::start(
        endpoint,
        FaultPlan {
            lose_answers_ending_with: Some(FailPut {
                times: Some(1),
                ..FailPut::internal_error("big/movie.bin")
            }),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = bundle(
        &proxy.endpoint,
        &manifest,
        &arch,
        &["--multipart-copy-threshold", "5MiB"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["objects_copied"], 1, "{}", out.stderr);
    assert_eq!(
        proxy
            .counts
            .lost_answers
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the CreateMultipartUpload answer was lost once: {:?}",
        proxy.counts.operations()
    );
    assert_eq!(
        incomplete_uploads(&client, &arch).await,
        0,
        "{}",
        out.stderr
    );
}
