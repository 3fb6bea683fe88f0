//! `s3bundler bundle -m` end to end: archives read back by independent readers (Python's
//! tarfile, GNU tar, bsdtar), index offsets checked with range GETs, big-object copies, the DLQ,
//! and failures.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_s3::types::Tag;
use common::*;
use s3bundler::archive::records::{parse_dlq, parse_index, DlqReason};
use s3bundler::manifest::ManifestWriter;

fn run_tool(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tarcheck(command: &str, target: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tarcheck.py");
    let (ok, stdout, stderr) = run_tool("python3", &[script, command, &target.to_string_lossy()]);
    assert!(ok, "tarcheck {command} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("tarcheck output: {e}"))
}

/// Extracts with GNU tar or bsdtar into a fresh folder (no warnings allowed) and returns the
/// extended attributes each file got.
fn extract_with(program: &str, archive: &Path, scratch: &Path) -> serde_json::Value {
    let dir = scratch.join(program);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = run_tool(program, &["-tvf", &archive.to_string_lossy()]);
    assert!(ok && stderr.is_empty(), "{program} -tvf: {stderr}");
    let args: Vec<String> = if program == "tar" {
        vec![
            "--xattrs".into(),
            "--xattrs-include=user.*".into(),
            "-xf".into(),
            archive.to_string_lossy().into(),
            "-C".into(),
            dir.to_string_lossy().into(),
        ]
    } else {
        vec![
            "-xf".into(),
            archive.to_string_lossy().into(),
            "-C".into(),
            dir.to_string_lossy().into(),
        ]
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = run_tool(program, &args);
    assert!(ok && stderr.is_empty(), "{program} -x: {stderr}");
    tarcheck("xattrs", &dir)
}

fn has_tool(program: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(std::env::var("CI").is_err(), "CI must have {program}");
        eprintln!("skipped {program} checks: not installed");
    }
    found
}

#[tokio::test]
async fn archive_holds_every_object_with_metadata_tags_and_checksums_through_moto() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "src").await;
    let arch = new_bucket(&client, "arch").await;
    enable_versioning(&client, &src).await;

    // 1,024 bytes, in segments a local filesystem can extract (at most 255 bytes each).
    let long_key: String = format!("odd/long/{}", "k".repeat(1024 - "odd/long/".len()))
        .char_indices()
        .map(|(i, c)| if i % 200 == 199 { '/' } else { c })
        .collect();
    assert_eq!(long_key.len(), 1024);
    let archived = vec![
        Source {
            key: "zero".into(),
            ..Source::default()
        },
        Source {
            key: "exact512".into(),
            body: body(512, 1),
            ..Source::default()
        },
        with_metadata("text/plain"),
        Source {
            key: "big/tagged-9MiB.bin".into(),
            body: body(9 << 20, 2),
            tags: BTreeMap::from([("size".into(), "large".into())]),
            ..Source::default()
        },
        Source {
            key: "multi/part.bin".into(),
            body: body((5 << 20) + 1000, 3),
            multipart: Some(5 << 20),
            ..Source::default()
        },
        Source {
            key: "odd/caf\u{e9} \u{65e5}\u{672c} +plus %percent &amp.txt".into(),
            body: b"odd".to_vec(),
            ..Source::default()
        },
        Source {
            key: long_key.clone(),
            body: b"long".to_vec(),
            ..Source::default()
        },
    ];
    let mut entries = Vec::new();
    let mut versions = BTreeMap::new();
    for source in &archived {
        let version = put(&client, &src, source).await;
        entries.push(entry(&src, &source.key, source.body.len() as u64, None));
        versions.insert(source.key.clone(), version);
    }
    // A specific older version: the archive must hold it, not the newer one.
    let old = Source {
        key: "ver/doc.txt".into(),
        body: b"first version".to_vec(),
        ..Source::default()
    };
    let old_version = put(&client, &src, &old).await;
    put(
        &client,
        &src,
        &Source {
            body: b"second, longer version".to_vec(),
            ..old.clone()
        },
    )
    .await;
    entries.push(entry(
        &src,
        &old.key,
        old.body.len() as u64,
        old_version.as_deref(),
    ));

    // Failures: archived in GLACIER, deleted since the manifest, changed size.
    put(
        &client,
        &src,
        &Source {
            key: "cold/obj".into(),
            body: b"cold".to_vec(),
            storage_class: Some("GLACIER"),
            ..Source::default()
        },
    )
    .await;
    entries.push(entry(&src, "cold/obj", 4, None));
    entries.push(entry(&src, "gone/obj", 3, None));
    put(
        &client,
        &src,
        &Source {
            key: "changed/obj".into(),
            body: body(20, 4),
            ..Source::default()
        },
    )
    .await;
    entries.push(entry(&src, "changed/obj", 10, None));

    // Too big to bundle: one CopyObject, one multipart UploadPartCopy; both keep tags.
    let huge = Source {
        key: "huge/copied.bin".into(),
        body: body(13 << 20, 5),
        content_type: Some("application/x-huge"),
        metadata: BTreeMap::from([("kind".into(), "huge".into())]),
        tags: BTreeMap::from([("keep".into(), "me".into())]),
        ..Source::default()
    };
    let huger = Source {
        key: "huge/multipart-copied.bin".into(),
        body: body(14 << 20, 6),
        ..huge.clone()
    };
    for big in [&huge, &huger] {
        put(&client, &src, big).await;
        entries.push(entry(&src, &big.key, big.body.len() as u64, None));
    }

    let manifest =
        write_manifest(&client, &arch, "manifests/test-manifest.0.index", &entries).await;
    let out = s3bundler(
        endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &arch,
            "-p",
            "bundles",
            "-s",
            "12MiB",
            "--multipart-copy-threshold",
            "13MiB",
            "--storage-class",
            "STANDARD_IA",
            "--sse",
            "AES256",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "some objects went to the DLQ: {out:?}");
    let report = out.json();
    assert_eq!(report["objects_archived"], archived.len() + 1, "{report}");
    assert_eq!(report["objects_copied"], 2, "{report}\n{}", out.stderr);
    assert_eq!(report["failed"]["Glacier"], 1, "{report}\n{}", out.stderr);
    assert_eq!(report["failed"]["NoSuchKey"], 1, "{report}\n{}", out.stderr);
    assert_eq!(report["failed"]["Changed"], 1, "{report}\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("begin processing {manifest}"))
            && out.stderr.contains("successfully archived"),
        "{}",
        out.stderr
    );

    // The archive, read by independent readers.
    let archive_key = report["archive"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{arch}/"))
        .to_string();
    assert!(
        archive_key.starts_with("bundles/")
            && archive_key.ends_with(&format!("/{src}/test-manifest.0.tar")),
        "{archive_key}"
    );
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let archive_path = scratch.path().join("archive.tar");
    let archive_bytes = get_object(&client, &arch, &archive_key).await;
    std::fs::write(&archive_path, &archive_bytes).unwrap_or_else(|e| panic!("{e}"));
    let head = client
        .head_object()
        .bucket(&arch)
        .key(&archive_key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(
        head.server_side_encryption().map(|c| c.as_str()),
        Some("AES256")
    );
    let members = tarcheck("members", &archive_path);
    let members = members.as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), archived.len() + 1);
    let mut expected: BTreeMap<String, &Source> = archived
        .iter()
        .map(|s| (format!("{src}/{}", s.key), s))
        .collect();
    expected.insert(format!("{src}/ver/doc.txt"), &old);
    for member in &members {
        let name = member["name"].as_str().unwrap_or("");
        let source = expected
            .get(name)
            .unwrap_or_else(|| panic!("unexpected member {name}"));
        assert_eq!(member["size"], source.body.len(), "{name}");
        assert_eq!(
            member["md5"].as_str(),
            Some(hex::encode(md5_of(&source.body)).as_str()),
            "{name} bytes"
        );
        assert_eq!(member["mode"], 0o644);
        // mtime is the object's LastModified.
        let head = client
            .head_object()
            .bucket(&src)
            .key(&source.key)
            .set_version_id(if source.key == old.key {
                old_version.clone()
            } else {
                None
            })
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            member["mtime"].as_i64(),
            head.last_modified().map(|t| t.secs()),
            "{name} mtime"
        );
        assert_eq!(member["type"], "0");
        let pax = &member["pax"];
        assert!(
            pax["SCHILY.xattr.user.s3.etag"].is_string(),
            "{name}: {pax}"
        );
        for (k, v) in &source.metadata {
            assert_eq!(
                pax[format!("SCHILY.xattr.user.s3.meta.{k}")].as_str(),
                Some(v.as_str()),
                "{name}: {pax}"
            );
        }
        for (k, v) in &source.tags {
            let k = k.replace('%', "%25").replace('=', "%3D");
            assert_eq!(
                pax[format!("SCHILY.xattr.user.s3.tag.{k}")].as_str(),
                Some(v.as_str()),
                "{name}: {pax}"
            );
        }
        if let Some(ct) = source.content_type {
            assert_eq!(pax["SCHILY.xattr.user.s3.content-type"].as_str(), Some(ct));
        }
    }
    let versioned = members
        .iter()
        .find(|m| m["name"] == format!("{src}/ver/doc.txt"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        versioned["pax"]["SCHILY.xattr.user.s3.version-id"].as_str(),
        old_version.as_deref()
    );

    // GNU tar and bsdtar list it without a warning and restore metadata and tags as xattrs.
    for program in ["tar", "bsdtar"] {
        if !has_tool(program) {
            continue;
        }
        let xattrs = extract_with(program, &archive_path, scratch.path());
        let file = &xattrs[format!("{src}/meta/with metadata.txt")];
        assert_eq!(file["user.s3.meta.owner"], "ops", "{program}: {xattrs}");
        assert_eq!(file["user.s3.tag.team"], "data", "{program}");
        // GNU tar decodes %3D and %25 in attribute names (its own encoding); bsdtar keeps them.
        let escaped_tag = if program == "tar" {
            "user.s3.tag.a=b"
        } else {
            "user.s3.tag.a%3Db"
        };
        assert_eq!(file[escaped_tag], "x y", "{program}: {file}");
        assert_eq!(file["user.s3.content-type"], "text/plain", "{program}");
        assert_eq!(file["user.s3.cache-control"], "max-age=60", "{program}");
    }

    // The index: one row per member, offsets that a range GET honours, MD5s of the bytes.
    let index_key = report["index"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{arch}/"))
        .to_string();
    let index = parse_index(&get_object(&client, &arch, &index_key).await, &index_key)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.len(), members.len());
    for row in &index {
        let source = expected
            .get(&row.member)
            .unwrap_or_else(|| panic!("index names {}", row.member));
        assert_eq!(row.key, source.key);
        assert_eq!(row.md5, hex::encode(md5_of(&source.body)));
        let data_offset = row.data_offset.unwrap_or(0);
        if row.size > 0 {
            let range = client
                .get_object()
                .bucket(&arch)
                .key(&archive_key)
                .range(format!(
                    "bytes={}-{}",
                    data_offset,
                    data_offset + row.size - 1
                ))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            let bytes = range
                .body
                .collect()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            assert!(
                bytes == source.body,
                "range GET of {} at {data_offset}",
                row.key
            );
        }
        let header_offset = row.header_offset.unwrap_or(u64::MAX) as usize;
        assert!(header_offset < data_offset as usize && header_offset.is_multiple_of(512));
        assert_eq!(row.tags, source.tags);
        assert_eq!(row.metadata, source.metadata);
    }
    let multipart_row = index
        .iter()
        .find(|r| r.key == "multi/part.bin")
        .cloned()
        .unwrap_or_default();
    assert!(
        multipart_row.etag.ends_with("-2"),
        "multipart ETag: {}",
        multipart_row.etag
    );
    assert!(index.iter().any(|r| r.key == long_key));

    // Big objects: copied with content type, metadata and tags, with a .metadata beside.
    for big in [&huge, &huger] {
        let copies = list_keys(&client, &arch, "bundles/").await;
        let copy_key = copies
            .iter()
            .find(|k| k.ends_with(&format!("/{src}/bigobjects/{}", big.key)))
            .unwrap_or_else(|| panic!("no copy of {} in {copies:?}", big.key))
            .clone();
        let head = client
            .head_object()
            .bucket(&arch)
            .key(&copy_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(head.content_length(), Some(big.body.len() as i64));
        assert_eq!(head.content_type(), big.content_type);
        assert_eq!(
            head.metadata()
                .and_then(|m| m.get("kind"))
                .map(String::as_str),
            Some("huge")
        );
        let tags = client
            .get_object_tagging()
            .bucket(&arch)
            .key(&copy_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let tags: Vec<(String, String)> = tags
            .tag_set()
            .iter()
            .map(|t: &Tag| (t.key().to_string(), t.value().to_string()))
            .collect();
        assert_eq!(
            tags,
            vec![("keep".to_string(), "me".to_string())],
            "{}",
            big.key
        );
        let metadata = parse_index(
            &get_object(&client, &arch, &format!("{copy_key}.metadata")).await,
            "m",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(metadata.len(), 1);
        assert_eq!(metadata[0].member, copy_key);
        assert_eq!(get_object(&client, &arch, &copy_key).await, big.body);
    }

    // The DLQ, beside the manifest.
    let dlq = parse_dlq(
        &get_object(&client, &arch, "manifests/test-manifest.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reasons: BTreeMap<String, DlqReason> =
        dlq.iter().map(|r| (r.key.clone(), r.reason)).collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("changed/obj".to_string(), DlqReason::Changed),
            ("cold/obj".to_string(), DlqReason::Glacier),
            ("gone/obj".to_string(), DlqReason::NoSuchKey),
        ])
    );
    assert_eq!(
        incomplete_uploads(&client, &arch).await,
        0,
        "incomplete uploads left"
    );
}

/// A source bucket on moto with `count` objects of 1 MiB, an empty archive bucket, and a
/// manifest of those objects at `m/<name>.0.index`: (client, source, archive, manifest URI).
async fn moto_mib_objects(
    count: usize,
    name: &str,
) -> (aws_sdk_s3::Client, String, String, String) {
    let client = s3_client(moto::endpoint());
    let src = new_bucket(&client, "src").await;
    let arch = new_bucket(&client, "arch").await;
    let mut entries = Vec::new();
    for i in 0..count {
        let key = format!("obj/{i}");
        put_object(&client, &src, &key, body(1 << 20, i as u8)).await;
        entries.push(entry(&src, &key, 1 << 20, None));
    }
    let manifest = write_manifest(&client, &src, &format!("m/{name}.0.index"), &entries).await;
    (client, src, arch, manifest)
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(bytes).into()
}

#[tokio::test]
async fn original_three_column_manifests_are_bundled() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "three").await;
    put_object(&client, &bucket, "a dir/file one.txt", b"one".to_vec()).await;
    put_object(&client, &bucket, "b+c", b"two!".to_vec()).await;
    let manifest = format!("{bucket},a+dir/file+one.txt,3\n{bucket},b%2Bc,4\n");
    put_object(&client, &bucket, "m/original.3", manifest.into_bytes()).await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle",
            "-m",
            &format!("s3://{bucket}/m/original.3"),
            "-b",
            &bucket,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    assert_eq!(report["objects_archived"], 2);
    // A base name ending in a digit is the whole NAME.
    assert!(
        report["archive"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("/{bucket}/original.3.tar")),
        "{report}"
    );
}

#[tokio::test]
async fn empty_manifest_writes_nothing() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "empty").await;
    put_object(&client, &bucket, "m/empty.0.index", Vec::new()).await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle",
            "-m",
            &format!("s3://{bucket}/m/empty.0.index"),
            "-b",
            &bucket,
            "-p",
            "out",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("lists no objects"), "{}", out.stderr);
    assert_eq!(list_keys(&client, &bucket, "").await, ["m/empty.0.index"]);
}

#[tokio::test]
async fn malformed_manifest_line_exit_2_and_nothing_written() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "bad").await;
    put_object(&client, &bucket, "obj", b"x".to_vec()).await;
    put_object(
        &client,
        &bucket,
        "m/bad.0.index",
        format!("{bucket},obj,1\n{bucket},obj,not-a-size\n").into_bytes(),
    )
    .await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle",
            "-m",
            &format!("s3://{bucket}/m/bad.0.index"),
            "-b",
            &bucket,
            "-p",
            "out",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("m/bad.0.index line 2") && out.stderr.contains("not-a-size"),
        "{}",
        out.stderr
    );
    assert!(list_keys(&client, &bucket, "out/").await.is_empty());
}

#[tokio::test]
async fn missing_archive_bucket_fails_with_exit_4_and_leaves_no_index_or_upload() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "src").await;
    put_object(&client, &src, "obj", body(1000, 7)).await;
    let manifest = write_manifest(
        &client,
        &src,
        "m/fatal.0.index",
        &[entry(&src, "obj", 1000, None)],
    )
    .await;
    let out = s3bundler(
        endpoint,
        &["bundle", "-m", &manifest, "-b", "no-such-archive-bucket"],
    )
    .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("no-such-archive-bucket") && out.stderr.contains("ERROR"),
        "{}",
        out.stderr
    );
    assert_eq!(
        list_keys(&client, &src, "").await,
        ["m/fatal.0.index", "obj"],
        "no DLQ, no index"
    );
}

#[tokio::test]
async fn injected_faults_never_lose_an_object() {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
    use std::sync::atomic::Ordering;

    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let src = new_bucket(&client, "faulty").await;
    let mut entries = Vec::new();
    let mut bodies = BTreeMap::new();
    // Small objects (buffered), 3 MiB ones (buffered, cut and resumed), 9 MiB ones (streamed
    // through the writer with a 32 MiB budget, cut and resumed), one that always fails.
    let sizes = (0..120)
        .map(|i| (format!("small/{i}"), 100 + i * 37))
        .chain((0..3).map(|i| (format!("mid/{i}"), 3 << 20)))
        .chain((0..2).map(|i| (format!("large/{i}"), 9 << 20)));
    // One always fails; one comes back with a changed byte every time it is read.
    let doomed = [
        ("always-fail/obj".to_string(), 10),
        ("corrupt/obj".to_string(), 1000),
    ];
    for (n, (key, size)) in sizes.chain(doomed).enumerate() {
        let data = body(size, n as u8);
        put_object(&client, &src, &key, data.clone()).await;
        entries.push(entry(&src, &key, size as u64, None));
        bodies.insert(key, data);
    }
    let manifest = write_manifest(&client, &src, "m/faulty.0.index", &entries).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            get_503_every: 7,
            get_500_every: 11,
            get_cut_every: 5,
            upload_part_500_every: 2,
            always_fail_keys_containing: Some("always-fail".into()),
            corrupt_keys_containing: Some("corrupt/".into()),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = s3bundler_with_env(
        &proxy.endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &src,
            "-p",
            "out",
            "--max-in-flight",
            "32MiB",
            "--concurrency",
            "8",
            // The always-failing object is given up after this (the default is minutes).
            "--retry-for",
            "3s",
            "--json",
        ],
        &[("AWS_MAX_ATTEMPTS", "3")],
    )
    .await;
    assert_eq!(
        out.code, 1,
        "the always-failing object is in the DLQ: {out:?}"
    );
    let counts = &proxy.counts;
    assert!(
        counts.injected_503.load(Ordering::Relaxed) > 3,
        "{counts:?}"
    );
    assert!(
        counts.injected_500.load(Ordering::Relaxed) > 0,
        "{counts:?}"
    );
    assert!(counts.cut_bodies.load(Ordering::Relaxed) > 3, "{counts:?}");
    assert!(
        counts.failed_parts.load(Ordering::Relaxed) > 0,
        "{counts:?}"
    );

    // Every object exactly once: archived with its exact bytes, or in the DLQ as Retry.
    let report = out.json();
    let archive_key = report["archive"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{src}/"))
        .to_string();
    let index_key = report["index"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{src}/"))
        .to_string();
    let archive = get_object(&client, &src, &archive_key).await;
    let index = parse_index(&get_object(&client, &src, &index_key).await, "index")
        .unwrap_or_else(|e| panic!("{e}"));
    let dlq = parse_dlq(
        &get_object(&client, &src, "m/faulty.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = BTreeMap::new();
    for row in &index {
        let start = row.data_offset.unwrap_or(0) as usize;
        let bytes = &archive[start..start + row.size as usize];
        assert!(
            bytes == bodies[&row.key].as_slice(),
            "archived bytes of {} differ",
            row.key
        );
        assert_eq!(row.md5, hex::encode(md5_of(bytes)));
        *seen.entry(row.key.clone()).or_insert(0) += 1;
    }
    for row in &dlq {
        // Corrupted bytes are read twice, then reported; everything else outlasted the retries.
        let want = if row.key == "corrupt/obj" {
            DlqReason::ChecksumMismatch
        } else {
            DlqReason::Retry
        };
        assert_eq!(row.reason, want, "{row:?}");
        *seen.entry(row.key.clone()).or_insert(0) += 1;
    }
    assert!(dlq.iter().any(|r| r.key == "always-fail/obj"));
    assert!(
        dlq.iter().any(|r| r.key == "corrupt/obj"),
        "{dlq:?} {counts:?}"
    );
    assert!(
        counts.corrupted.load(Ordering::Relaxed) >= 2,
        "read, then read again: {counts:?}"
    );
    assert_eq!(
        counts.tagging_gets.load(Ordering::Relaxed),
        0,
        "no object has tags, so no GetObjectTagging"
    );
    assert_eq!(seen.len(), bodies.len(), "every object accounted for");
    assert!(seen.values().all(|&n| n == 1), "no object twice: {seen:?}");
    let members = tarcheck("members", &{
        let path = std::env::temp_dir().join(format!("faulty-{}.tar", std::process::id()));
        std::fs::write(&path, &archive).unwrap_or_else(|e| panic!("{e}"));
        path
    });
    assert_eq!(members.as_array().map(Vec::len), Some(index.len()));
}

/// Writes `objects` straight into the local server's files, puts their manifest at
/// `m/<name>.0.index`, bundles it in a measured process with `extra` arguments, checks that
/// everything was archived and that the peak RSS stays under `bound_mib`.
async fn assert_bundled_within(
    name: &str,
    objects: impl Iterator<Item = (String, Vec<u8>)>,
    extra: &[&str],
    bound_mib: f64,
) -> f64 {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, name).await;
    let mut manifest = ManifestWriter::default();
    for (key, data) in objects {
        server
            .write_object_file(&bucket, &key, &data)
            .unwrap_or_else(|e| panic!("{e}"));
        manifest.push(&entry(&bucket, &key, data.len() as u64, None));
    }
    let count = manifest.objects();
    put_object(
        &client,
        &bucket,
        &format!("m/{name}.0.index"),
        manifest.finish(),
    )
    .await;
    let mut args: Vec<String> = [
        "bundle",
        "-m",
        &format!("s3://{bucket}/m/{name}.0.index"),
        "-b",
        &bucket,
        "-p",
        "out",
        "--json",
    ]
    .map(String::from)
    .into();
    args.extend(extra.iter().map(|s| s.to_string()));
    let endpoint = server.endpoint.clone();
    let usage = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_s3bundler"));
        command
            .args(&args)
            .envs(s3bundler_testkit::cli_env(&endpoint));
        s3bundler_testkit::measure::measure(&mut command)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(usage.status.success(), "{}", usage.stdout);
    let report: serde_json::Value = serde_json::from_str(&usage.stdout).unwrap_or_default();
    assert_eq!(report["objects_archived"], count);
    let rss = usage.max_rss_mib;
    eprintln!("{name}: {count} objects, peak RSS {rss:.1} MiB");
    assert!(
        rss < bound_mib,
        "peak RSS {rss:.1} MiB exceeds {bound_mib} MiB"
    );
    rss
}

/// Old main held the whole manifest and the whole index until the commit: 457 MiB at
/// 1,000,000 objects, several hundred bytes more per object. Ten times the objects must now
/// take (almost) no more memory. The limit, 16 MiB (93 bytes an object), leaves room for
/// glibc's per-thread arenas, which vary by several MiB between runs at the default 256 GETs in
/// flight (CI saw +7.3 and +12.3 MiB for the same pair).
#[tokio::test]
async fn memory_does_not_grow_with_the_manifest() {
    let objects = |count: usize| {
        (0..count).map(|i| (format!("d{:03}/o{i}", i % 500), body(64 + i % 512, i as u8)))
    };
    let small = assert_bundled_within("flat-20k", objects(20_000), &[], 200.0).await;
    let large = assert_bundled_within("flat-200k", objects(200_000), &[], 200.0).await;
    eprintln!("peak RSS: 20,000 objects {small:.1} MiB, 200,000 objects {large:.1} MiB");
    assert!(
        large - small < 16.0,
        "memory grew by {:.1} MiB from 20,000 to 200,000 objects",
        large - small
    );
}

/// Keys as long as S3 allows (1,024 bytes), so that a few thousand index or DLQ rows fill a
/// part of 8 MiB.
fn long_key(prefix: &str, i: usize) -> String {
    let segment = "s".repeat(240);
    let key = format!("{prefix}/{segment}/{segment}/{segment}/{segment}/{i}");
    key[..key.len().min(1024)].to_string()
}

/// Old main held the index and the DLQ in memory and put each whole. Now a table past a part
/// is a multipart upload created with the attempt's id, which the archive carries too.
#[tokio::test]
async fn an_index_and_a_dlq_bigger_than_a_part_are_uploaded_in_parts() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "tables").await;
    let mut manifest = ManifestWriter::default();
    // 5,000 index rows of 2 KiB (key and member name), 9,000 DLQ rows of 1 KiB.
    for i in 0..9_000 {
        if i < 5_000 {
            let key = long_key("here", i);
            server
                .write_object_file(&bucket, &key, b"tiny")
                .unwrap_or_else(|e| panic!("{e}"));
            manifest.push(&entry(&bucket, &key, 4, None));
        }
        manifest.push(&entry(&bucket, &long_key("gone", i), 4, None));
    }
    put_object(&client, &bucket, "m/tables.0.index", manifest.finish()).await;
    let manifest = format!("s3://{bucket}/m/tables.0.index");
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["objects_archived"], 5_000);
    assert_eq!(report["failed"]["NoSuchKey"], 9_000);
    let index_uri = report["index"].as_str().unwrap_or_default();
    let index_key = index_uri.trim_start_matches(&format!("s3://{bucket}/"));
    let archive_key = report["archive"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(&format!("s3://{bucket}/"));
    let index_head = head(&client, &bucket, index_key).await;
    let archive_head = head(&client, &bucket, archive_key).await;
    let dlq_head = head(&client, &bucket, "m/tables.0.index.dlq").await;
    for (what, head) in [("index", &index_head), ("DLQ", &dlq_head)] {
        assert!(
            head.e_tag().unwrap_or_default().contains('-'),
            "the {what} was uploaded in parts: {:?}",
            head.e_tag()
        );
    }
    let attempt = |h: &aws_sdk_s3::operation::head_object::HeadObjectOutput| {
        h.metadata()
            .and_then(|m| m.get("s3bundler-attempt"))
            .cloned()
    };
    assert!(attempt(&index_head).is_some());
    assert_eq!(attempt(&index_head), attempt(&archive_head));
    assert!(
        dlq_head
            .metadata()
            .is_none_or(|m| !m.contains_key("s3bundler-final")),
        "objects were archived: the index is the commit marker"
    );
    let index = parse_index(&get_object(&client, &bucket, index_key).await, "index")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.len(), 5_000);
    assert!(index.iter().all(|row| row.key.starts_with("here/")));
    let dlq = parse_dlq(
        &get_object(&client, &bucket, "m/tables.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dlq.len(), 9_000);
    assert!(dlq.iter().all(|row| row.key.starts_with("gone/")));
    let manifests = format!("s3://{bucket}/m/");
    let verify = [
        "verify",
        "--manifests",
        &manifests,
        "-b",
        &bucket,
        "-p",
        "out",
        "--json",
    ];
    const REPLACED: &str = "not the archive its index was committed for";
    let verified = s3bundler(&server.endpoint, &verify).await;
    assert!(!verified.stdout.contains(REPLACED), "{}", verified.stdout);
    // The same bytes put again by something else: only the attempt id tells them apart, since
    // an index uploaded in parts cannot carry the archive's ETag.
    let archive = get_object(&client, &bucket, archive_key).await;
    put_object(&client, &bucket, archive_key, archive).await;
    let verified = s3bundler(&server.endpoint, &verify).await;
    assert!(verified.stdout.contains(REPLACED), "{}", verified.stdout);
}

/// A DLQ is the commit marker when nothing was archived; one uploaded in parts was created
/// before that was known, and is final because it lists every object of its manifest.
#[tokio::test]
async fn a_dlq_in_parts_that_is_the_only_output_is_final_without_being_rewritten() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "dlqonly").await;
    let entries: Vec<_> = (0..9_000)
        .map(|i| entry(&bucket, &long_key("gone", i), 4, None))
        .collect();
    let manifest = write_manifest(&client, &bucket, "m/dlqonly.0.index", &entries).await;
    let args = [
        "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
    ];
    let out = s3bundler(&server.endpoint, &args).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let head = || async {
        client
            .head_object()
            .bucket(&bucket)
            .key("m/dlqonly.0.index.dlq")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
    };
    let first = head().await;
    assert!(first.e_tag().unwrap_or_default().contains('-'), "{first:?}");
    // Written once: a multipart upload's metadata is fixed when it starts, so the DLQ is final
    // because it lists every object (the old code copied it onto itself to add a marker).
    let again = s3bundler(&server.endpoint, &args).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["already_done"], true, "{}", again.stdout);
    assert_eq!(head().await.e_tag(), first.e_tag());
}

/// The manifest is read in passes as a stream now; a body cut mid-way is read on from where
/// it stopped instead of failing the manifest.
#[tokio::test]
async fn a_manifest_cut_mid_read_is_read_on_from_where_it_stopped() {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "cutmanifest").await;
    let mut manifest = ManifestWriter::default();
    for i in 0..3_000 {
        let key = format!("objects/{i}/{}", "k".repeat(60));
        server
            .write_object_file(&bucket, &key, &body(100, i as u8))
            .unwrap_or_else(|e| panic!("{e}"));
        manifest.push(&entry(&bucket, &key, 100, None));
    }
    put_object(&client, &bucket, "m/cut.0.index", manifest.finish()).await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            get_cut_every: 2,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let manifest = format!("s3://{bucket}/m/cut.0.index");
    let out = s3bundler(
        &proxy.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json", "-v",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["objects_archived"], 3_000);
    assert!(
        out.stderr.contains("reading on from there"),
        "the manifest's body was cut and read on: {}",
        out.stderr
            .lines()
            .filter(|l| l.contains("cut"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every pass over a manifest reads the version the first pass read: one replaced meanwhile
/// fails the manifest rather than mixing two versions. (Through moto: s3s-fs ignores If-Match
/// on GET.)
#[tokio::test]
async fn a_manifest_replaced_between_passes_is_refused() {
    use s3bundler::bundle::manifest_stream::ManifestStream;
    use s3bundler::s3::{WriteSettings, S3};
    use s3bundler::s3uri::S3Uri;

    let client = s3_client(moto::endpoint());
    let bucket = new_bucket(&client, "replaced").await;
    put_object(&client, &bucket, "m/r.0.index", b"src,a,1\n".to_vec()).await;
    let s3 = S3::new(client.clone(), WriteSettings::default());
    let uri = S3Uri::new(bucket.clone(), "m/r.0.index".to_string());
    let first = ManifestStream::open(&s3, &uri, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let etag = first.etag().map(str::to_string);
    put_object(&client, &bucket, "m/r.0.index", b"src,b,2\n".to_vec()).await;
    let error = ManifestStream::open(&s3, &uri, etag.as_deref())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("replaced while it was being bundled"),
        "{error}"
    );
}

#[tokio::test]
async fn memory_stays_bounded_for_objects_much_larger_than_the_budget() {
    let objects = (0..3usize).map(|i| (format!("large/{i}"), body(96 << 20, i as u8)));
    assert_bundled_within("large", objects, &["--max-in-flight", "32MiB"], 128.0).await;
}

#[tokio::test]
async fn failed_part_uploads_abort_the_archive_and_leave_no_index_or_incomplete_upload() {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

    let endpoint = moto::endpoint();
    let (client, src, arch, manifest) = moto_mib_objects(20, "doomed").await;
    // Every UploadPart fails: the multipart upload exists, then cannot get a single part in.
    let proxy = FaultProxy::start(
        endpoint,
        FaultPlan {
            upload_part_500_every: 1,
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = s3bundler_with_env(
        &proxy.endpoint,
        &["bundle", "-m", &manifest, "-b", &arch, "--retry-for", "2s"],
        &[("AWS_MAX_ATTEMPTS", "1")],
    )
    .await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("UploadPart") && out.stderr.contains("aborted the upload"),
        "{}",
        out.stderr
    );
    assert!(
        list_keys(&client, &arch, "").await.is_empty(),
        "no archive, no index"
    );
    assert_eq!(
        list_keys(&client, &src, "m/").await,
        ["m/doomed.0.index"],
        "no DLQ either"
    );
    assert_eq!(
        incomplete_uploads(&client, &arch).await,
        0,
        "incomplete uploads left"
    );
}

#[tokio::test]
async fn keys_with_newlines_and_tabs_are_archived_intact() {
    // moto refuses newlines in keys; the local server stores them.
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "newline").await;
    let keys = [
        "new\nline.txt",
        "tab\tkey",
        "caf\u{e9}/\u{1F600} \"quoted\", comma",
    ];
    let mut entries = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        put_object(&client, &bucket, key, body(100 + i, i as u8)).await;
        entries.push(entry(&bucket, key, 100 + i as u64, None));
    }
    let manifest = write_manifest(&client, &bucket, "m/newline.0.index", &entries).await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let archive_key = out.json()["archive"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = scratch.path().join("a.tar");
    std::fs::write(&path, get_object(&client, &bucket, &archive_key).await)
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = tarcheck("members", &path)
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for key in keys {
        assert!(
            names.contains(&format!("{bucket}/{key}")),
            "{key:?} not in {names:?}"
        );
    }
    let (ok, _, stderr) = run_tool("tar", &["-tf", &path.to_string_lossy()]);
    assert!(ok && stderr.is_empty(), "GNU tar: {stderr}");
}

#[tokio::test]
async fn a_manifest_whose_objects_all_failed_writes_a_dlq_and_no_archive() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "allfail").await;
    let entries = [
        entry(&bucket, "gone/one", 10, None),
        entry(&bucket, "gone/two", 20, None),
    ];
    let manifest = write_manifest(&client, &bucket, "m/allfail.0.index", &entries).await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "out", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let report = out.json();
    assert_eq!(report["failed"]["NoSuchKey"], 2);
    assert!(
        report["archive"].is_null() && report["index"].is_null(),
        "{report}"
    );
    assert!(list_keys(&client, &bucket, "out/").await.is_empty());
    let dlq = parse_dlq(
        &get_object(&client, &bucket, "m/allfail.0.index.dlq").await,
        "dlq",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dlq.len(), 2);
    assert!(dlq.iter().all(|r| r.reason == DlqReason::NoSuchKey));
}

#[tokio::test]
async fn interrupting_a_bundle_aborts_its_upload_and_exits_130() {
    let endpoint = moto::endpoint();
    let (client, _src, arch, manifest) = moto_mib_objects(60, "interrupted").await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3bundler"));
    command
        .args(["bundle", "-m", &manifest, "-b", &arch, "--concurrency", "1"])
        .envs(s3bundler_testkit::cli_env(endpoint))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{e}"));
    // Wait until the archive's multipart upload exists, then interrupt.
    let mut started = false;
    for _ in 0..300 {
        if incomplete_uploads(&client, &arch).await > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(started, "the archive upload never started");
    let pid = child.id().unwrap_or_default().to_string();
    let (ok, _, _) = run_tool("kill", &["-INT", &pid]);
    assert!(ok);
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("s3bundler did not exit within 15 s of SIGINT"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        incomplete_uploads(&client, &arch).await,
        0,
        "the upload was aborted"
    );
    assert!(
        list_keys(&client, &arch, "").await.is_empty(),
        "no archive, no index"
    );
}

/// The EMF documents among stderr's lines.
/// The EMF documents in a process's stderr, each checked against the EMF specification: an
/// `_aws` block with a millisecond timestamp and metric directives whose dimensions and
/// metrics name members of the document, with CloudWatch units.
fn emf_documents(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| {
            let doc: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("EMF line is not JSON ({e}): {l}"));
            assert_valid_emf(&doc);
            doc
        })
        .collect()
}

fn assert_valid_emf(doc: &serde_json::Value) {
    let aws = &doc["_aws"];
    assert!(
        aws["Timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{doc}"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!directives.is_empty(), "{doc}");
    for directive in directives {
        assert_eq!(directive["Namespace"], "S3Bundler", "{doc}");
        for set in directive["Dimensions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for dimension in set.as_array().cloned().unwrap_or_default() {
                let name = dimension.as_str().unwrap_or_default();
                assert!(
                    doc[name].is_string(),
                    "dimension {name} is not a member: {doc}"
                );
            }
        }
        let metrics = directive["Metrics"].as_array().cloned().unwrap_or_default();
        assert!(!metrics.is_empty(), "{doc}");
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap_or_default();
            assert!(doc[name].is_number(), "metric {name} has no value: {doc}");
            let unit = metric["Unit"].as_str().unwrap_or_default();
            assert!(["Count", "Bytes"].contains(&unit), "unit {unit}: {doc}");
        }
    }
}

#[tokio::test]
async fn emf_metrics_count_what_happened_and_are_on_by_default_in_ecs() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "emf").await;
    let mut entries = Vec::new();
    for i in 0..3 {
        put_object(
            &client,
            &bucket,
            &format!("o/{i}"),
            body(100 * (i + 1), i as u8),
        )
        .await;
        entries.push(entry(
            &bucket,
            &format!("o/{i}"),
            100 * (i as u64 + 1),
            None,
        ));
    }
    entries.push(entry(&bucket, "o/gone", 5, None));
    let manifest = write_manifest(&client, &bucket, "m/emf.0.index", &entries).await;

    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &bucket,
            "-p",
            "a",
            "--metrics",
            "emf",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let documents = emf_documents(&out.stderr);
    let totals = documents
        .iter()
        .find(|d| d.get("ObjectsArchived").is_some())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        totals["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "S3Bundler"
    );
    assert_eq!(totals["ObjectsArchived"], 3);
    assert_eq!(totals["BytesArchived"], 600);
    assert_eq!(totals["ObjectsCopied"], 0);
    assert_eq!(totals["ManifestsCompleted"], 1);
    assert_eq!(totals["Errors"], 0);
    let failed = documents
        .iter()
        .find(|d| d.get("ObjectsFailed").is_some())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (failed["Reason"].as_str(), failed["ObjectsFailed"].as_u64()),
        (Some("NoSuchKey"), Some(1))
    );
    assert_eq!(
        failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Reason"]])
    );

    // Off by default outside ECS, on by default inside it.
    let plain = s3bundler(
        &server.endpoint,
        &["bundle", "-m", &manifest, "-b", &bucket, "-p", "b"],
    )
    .await;
    assert!(emf_documents(&plain.stderr).is_empty());
    let in_ecs = s3bundler_with_env(
        &server.endpoint,
        &["bundle", "-m", &manifest, "-b", &bucket, "-p", "c"],
        &[(
            "ECS_CONTAINER_METADATA_URI_V4",
            "http://169.254.170.2/v4/task",
        )],
    )
    .await;
    assert!(
        !emf_documents(&in_ecs.stderr).is_empty(),
        "{}",
        in_ecs.stderr
    );
}

#[tokio::test]
async fn compressed_archives_are_readable_and_index_offsets_count_the_uncompressed_stream() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "compressed").await;
    let mut entries = Vec::new();
    let mut bodies = BTreeMap::new();
    for i in 0..50 {
        let key = format!("c/{i}.txt");
        let data = format!("line {i}\n").repeat(50 + i * 7).into_bytes();
        put_object(&client, &bucket, &key, data.clone()).await;
        entries.push(entry(&bucket, &key, data.len() as u64, None));
        bodies.insert(key, data);
    }
    let manifest = write_manifest(&client, &bucket, "m/compressed.0.index", &entries).await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (flag, extension) in [
        (vec!["-c"], "tar.gz"),
        (vec!["--compress", "zstd"], "tar.zst"),
    ] {
        let prefix = extension.replace('.', "-");
        let mut args = vec![
            "bundle",
            "-m",
            manifest.as_str(),
            "-b",
            bucket.as_str(),
            "-p",
            prefix.as_str(),
            "--json",
        ];
        args.extend(flag);
        let out = s3bundler(&server.endpoint, &args).await;
        assert_eq!(out.code, 0, "{out:?}");
        let report = out.json();
        let archive_key = report["archive"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_string();
        assert!(
            archive_key.ends_with(&format!("/compressed.0.{extension}")),
            "{archive_key}"
        );
        let compressed = get_object(&client, &bucket, &archive_key).await;
        let tar = match extension {
            "tar.gz" => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(compressed.as_slice()),
                    &mut out,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                out
            }
            _ => zstd::stream::decode_all(compressed.as_slice()).unwrap_or_else(|e| panic!("{e}")),
        };
        assert!(compressed.len() < tar.len() / 2, "{extension} compresses");
        let index_key = report["index"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_string();
        let index = parse_index(&get_object(&client, &bucket, &index_key).await, "index")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.len(), bodies.len());
        for row in &index {
            let start = row.data_offset.unwrap_or(0) as usize;
            assert!(
                tar[start..start + row.size as usize] == bodies[&row.key][..],
                "{} at {start}",
                row.key
            );
        }
        let path = scratch.path().join(format!("a.{extension}"));
        std::fs::write(&path, &compressed).unwrap_or_else(|e| panic!("{e}"));
        let reader = if extension == "tar.gz" {
            "tar"
        } else {
            "bsdtar"
        };
        if has_tool(reader) {
            let (ok, listing, stderr) = run_tool(reader, &["-tf", &path.to_string_lossy()]);
            assert!(ok && stderr.is_empty(), "{reader}: {stderr}");
            assert_eq!(listing.lines().count(), bodies.len());
        }
    }
}

#[tokio::test]
async fn compressing_very_compressible_objects_beyond_the_budget_does_not_stall() {
    // 80 MiB of zeros through a 32 MiB budget: compressed, no part fills before the budget is
    // spent, so permits must not wait for parts.
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "zeros").await;
    let mut entries = Vec::new();
    for i in 0..20 {
        let key = format!("zeros/{i}");
        server
            .write_object_file(&bucket, &key, &vec![0u8; 4 << 20])
            .unwrap_or_else(|e| panic!("{e}"));
        entries.push(entry(&bucket, &key, 4 << 20, None));
    }
    let manifest = write_manifest(&client, &bucket, "m/zeros.0.index", &entries).await;
    for compression in ["gzip", "zstd"] {
        let prefix = format!("out-{compression}");
        let args = [
            "bundle",
            "-m",
            manifest.as_str(),
            "-b",
            bucket.as_str(),
            "-p",
            prefix.as_str(),
            "--compress",
            compression,
            "--max-in-flight",
            "32MiB",
            "--json",
        ];
        let run = s3bundler(&server.endpoint, &args);
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("bundle with {compression} stalled"));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.json()["objects_archived"], 20);
    }
}

/// Old main silently raised the budget to four parts, so a huge archive took memory far beyond
/// `--max-in-flight`; now it is refused before anything is read or written.
#[tokio::test]
async fn a_budget_smaller_than_two_parts_of_a_huge_archive_is_refused_before_any_write() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "hugearchive").await;
    // 100 GiB listed (the objects need not exist: nothing is fetched): 12 MiB parts.
    let entries: Vec<_> = (0..10)
        .map(|i| entry(&bucket, &format!("big/{i}"), 10 << 30, None))
        .collect();
    let manifest = write_manifest(&client, &bucket, "m/huge.0.index", &entries).await;
    let out = s3bundler(
        &server.endpoint,
        &[
            "bundle",
            "-m",
            &manifest,
            "-b",
            &bucket,
            "-p",
            "out",
            "-s",
            "20GiB",
            "--max-in-flight",
            "16MiB",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--max-in-flight") && out.stderr.contains("at least 24 MiB"),
        "{}",
        out.stderr
    );
    assert_eq!(list_keys(&client, &bucket, "").await, ["m/huge.0.index"]);
}
