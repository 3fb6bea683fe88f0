//! `s3bundler extract` and `cat`: round trips through moto (bytes, content headers, metadata,
//! tags, versions) for plain, gzip and zstd archives, and local extraction (escaping names
//! refused, xattrs written) from archives crafted on the local server.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use md5::{Digest, Md5};
use s3bundler::archive::pax::{member_header, padding, END_OF_ARCHIVE};
use s3bundler::archive::records::{IndexRow, IndexWriter};

fn sources() -> Vec<Source> {
    vec![
        Source {
            key: "zero".into(),
            ..Source::default()
        },
        with_metadata("text/plain; charset=utf-8"),
        Source {
            key: "odd/caf\u{e9} \u{65e5}\u{672c} +plus %percent &amp;\"q\",c.txt".into(),
            body: b"odd".to_vec(),
            content_type: Some("application/x-odd"),
            ..Source::default()
        },
        Source {
            key: "multi/part.bin".into(),
            body: body((5 << 20) + 1000, 3),
            multipart: Some(5 << 20),
            metadata: BTreeMap::from([("parts".into(), "2".into())]),
            ..Source::default()
        },
        Source {
            key: "big/streamed-9MiB.bin".into(),
            body: body(9 << 20, 2),
            tags: BTreeMap::from([("size".into(), "large".into())]),
            ..Source::default()
        },
    ]
}

async fn tags_of(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> BTreeMap<String, String> {
    client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("tags of {key}: {e:?}"))
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// Checks that `bucket/prefix<key>` holds `source` with its headers, metadata and tags.
async fn assert_restored(client: &aws_sdk_s3::Client, bucket: &str, key: &str, source: &Source) {
    let got = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let content_type = got.content_type().map(str::to_string);
    let cache_control = got.cache_control().map(str::to_string);
    let metadata: BTreeMap<String, String> = got
        .metadata()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let bytes = got
        .body
        .collect()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    assert!(bytes == source.body, "{key}: bytes differ");
    if let Some(expected) = source.content_type {
        assert_eq!(content_type.as_deref(), Some(expected), "{key}");
    }
    assert_eq!(cache_control.as_deref(), source.cache_control, "{key}");
    assert_eq!(metadata, source.metadata, "{key}");
    assert_eq!(tags_of(client, bucket, key).await, source.tags, "{key}");
}

/// `bundle -m MANIFEST -b ARCH -p b [--compress C]`, which must succeed; returns the archive.
async fn bundled(endpoint: &str, manifest: &str, arch: &str, compress: Option<&str>) -> String {
    let mut args = vec!["bundle", "-m", manifest, "-b", arch, "-p", "b", "--json"];
    if let Some(compress) = compress {
        args.extend(["--compress", compress]);
    }
    let out = s3bundler(endpoint, &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    out.json()["archive"].as_str().unwrap_or("").to_string()
}

/// `extract ARCHIVE --to TO --json EXTRA`.
async fn extract_to(endpoint: &str, archive: &str, to: &str, extra: &[&str]) -> Output {
    let mut args = vec!["extract", archive, "--to", to, "--json"];
    args.extend_from_slice(extra);
    s3bundler(endpoint, &args).await
}

async fn round_trip(compress: Option<&str>) {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "xsrc").await;
    let arch = new_bucket(&client, "xarch").await;
    let dst = new_bucket(&client, "xdst").await;
    enable_versioning(&client, &src).await;
    let sources = sources();
    let mut entries = Vec::new();
    let mut versions = BTreeMap::new();
    for source in &sources {
        versions.insert(source.key.clone(), put(&client, &src, source).await);
        entries.push(entry(&src, &source.key, source.body.len() as u64, None));
    }
    let manifest = write_manifest(&client, &arch, "m/x-manifest.0.index", &entries).await;
    let archive = bundled(endpoint, &manifest, &arch, compress).await;

    let to = format!("s3://{dst}/restored");
    let out = extract_to(endpoint, &archive, &to, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let restored = out.json()["objects"].clone();
    assert_eq!(
        restored.as_array().map(Vec::len),
        Some(sources.len()),
        "{restored}"
    );
    for source in &sources {
        assert_restored(&client, &dst, &format!("restored/{}", source.key), source).await;
        let listed = restored
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["key"] == source.key.as_str())
            .unwrap_or_else(|| panic!("{} not listed: {restored}", source.key));
        // S3 cannot restore a version ID: the archived one is listed beside the new one.
        assert_eq!(
            listed["archived_version_id"].as_str(),
            versions[&source.key].as_deref(),
            "{listed}"
        );
    }

    // One object back where it was, by key.
    let odd = &sources[2];
    client
        .delete_object()
        .bucket(&src)
        .key(&odd.key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let original = format!("s3://{src}");
    let out = s3bundler(
        endpoint,
        &["extract", &archive, "--key", &odd.key, "--to", &original],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("{}\t", odd.key))
            && !out.stdout.contains("=-")
            && out.stdout.contains("restored 1 objects"),
        "{}",
        out.stdout
    );
    assert_restored(&client, &src, &odd.key, odd).await;

    // cat: one object's bytes on stdout.
    let out = s3bundler(endpoint, &["cat", &archive, &sources[1].key]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.as_bytes(), sources[1].body.as_slice());
    let out = s3bundler(endpoint, &["cat", &archive, "no/such/key"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no/such/key"), "{}", out.stderr);
}

#[tokio::test]
async fn round_trip_through_an_uncompressed_archive_restores_bytes_headers_metadata_and_tags() {
    round_trip(None).await;
}

#[tokio::test]
async fn round_trip_through_tar_gz() {
    round_trip(Some("gzip")).await;
}

#[tokio::test]
async fn round_trip_through_tar_zst() {
    round_trip(Some("zstd")).await;
}

/// A member of a crafted archive: (name, data, S3 attributes).
type Crafted<'a> = (&'a str, &'a [u8], Vec<(String, String)>);

/// Puts a crafted archive and its index on the local server; returns the archive's URI.
async fn put_crafted(client: &aws_sdk_s3::Client, bucket: &str, members: &[Crafted<'_>]) -> String {
    put_crafted_with(client, bucket, members, |_, _| {}).await
}

/// [`put_crafted`], with each index row changed by `edit` (given the member's position).
async fn put_crafted_with(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    members: &[Crafted<'_>],
    edit: impl Fn(usize, &mut IndexRow),
) -> String {
    let mut tar = Vec::new();
    let mut index = IndexWriter::default();
    for (position, (name, data, attributes)) in members.iter().enumerate() {
        let header_offset = tar.len() as u64;
        tar.extend(member_header(
            name,
            data.len() as u64,
            1_700_000_000,
            attributes,
        ));
        let data_offset = tar.len() as u64;
        tar.extend_from_slice(data);
        tar.resize(tar.len() + padding(data.len() as u64) as usize, 0);
        let (bucket, key) = name.split_once('/').unwrap_or(("", name));
        let mut row = IndexRow {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: data.len() as u64,
            md5: hex::encode(Md5::digest(data)),
            member: name.to_string(),
            header_offset: Some(header_offset),
            data_offset: Some(data_offset),
            ..IndexRow::default()
        };
        edit(position, &mut row);
        index.push(&row);
    }
    tar.extend_from_slice(&END_OF_ARCHIVE);
    put_object(client, bucket, "crafted/x.tar", tar).await;
    put_object(client, bucket, "crafted/x.index", index.finish()).await;
    format!("s3://{bucket}/crafted/x.tar")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.push(
                path.strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn members_that_would_escape_the_folder_are_refused_and_nothing_is_written() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xevil").await;
    let archive = put_crafted(
        &client,
        &bucket,
        &[
            ("src/fine.txt", b"fine", vec![]),
            ("../evil", b"evil", vec![]),
            ("/abs", b"abs", vec![]),
            ("a/../../b", b"b", vec![]),
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().join("out");
    let dir_text = dir.display().to_string();
    let out = s3bundler(&server.endpoint, &["extract", &archive, "-C", &dir_text]).await;
    assert_eq!(out.code, 2, "{out:?}");
    for name in ["../evil", "/abs", "a/../../b"] {
        assert!(
            out.stderr.contains(&format!("`{name}`")),
            "{name}: {}",
            out.stderr
        );
    }
    assert_eq!(
        files_under(scratch.path()),
        Vec::<String>::new(),
        "nothing written"
    );
    assert!(!Path::new("/abs").exists());
    // Asking for the safe member alone works.
    let out = s3bundler(
        &server.endpoint,
        &["extract", &archive, "--key", "fine.txt", "-C", &dir_text],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        files_under(scratch.path()),
        vec!["out", "out/src", "out/src/fine.txt"]
    );
}

/// Reads extended attribute `name` of `path`.
fn get_xattr(path: &Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a buffer of the length given, all alive for the call.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    String::from_utf8(buffer[..n].to_vec()).ok()
}

/// True when files under `dir` can carry user extended attributes.
fn user_xattrs_supported(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let probe = dir.join(".xattr-probe");
    if std::fs::write(&probe, b"").is_err() {
        return false;
    }
    let c_path = std::ffi::CString::new(probe.as_os_str().as_bytes()).unwrap_or_default();
    // SAFETY: NUL-terminated strings and a one-byte value, all alive for the call.
    let result = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"user.probe".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    let _ = std::fs::remove_file(&probe);
    result == 0
}

#[tokio::test]
async fn local_extract_writes_files_and_s3_attributes_as_xattrs() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xlocal").await;
    let attributes = vec![
        ("etag".to_string(), "abc".to_string()),
        ("content-type".to_string(), "text/plain".to_string()),
        ("meta.owner".to_string(), "ops".to_string()),
        ("tag.a=b".to_string(), "x y".to_string()),
    ];
    let big = body(300_000, 5);
    let archive = put_crafted(
        &client,
        &bucket,
        &[
            ("src/a.txt", b"hello", attributes),
            ("src/dir/deeper/big.bin", &big, vec![]),
            ("src/empty", b"", vec![]),
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().join("out");
    let dir_text = dir.display().to_string();
    let out = s3bundler(&server.endpoint, &["extract", &archive, "-C", &dir_text]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("src/a.txt")).unwrap_or_default(),
        b"hello"
    );
    assert!(std::fs::read(dir.join("src/dir/deeper/big.bin")).unwrap_or_default() == big);
    assert_eq!(
        std::fs::metadata(dir.join("src/empty"))
            .map(|m| m.len())
            .ok(),
        Some(0)
    );
    if !user_xattrs_supported(&dir) {
        eprintln!(
            "skipped the xattr checks: the filesystem of {} does not support user extended attributes",
            dir.display()
        );
        return;
    }
    let file = dir.join("src/a.txt");
    assert_eq!(
        get_xattr(&file, "user.s3.content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        get_xattr(&file, "user.s3.meta.owner").as_deref(),
        Some("ops")
    );
    assert_eq!(get_xattr(&file, "user.s3.tag.a=b").as_deref(), Some("x y"));
    assert_eq!(get_xattr(&file, "user.s3.etag").as_deref(), Some("abc"));
}

#[tokio::test]
async fn a_damaged_member_fails_the_extract_with_exit_2() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xdamaged").await;
    let archive = put_crafted(&client, &bucket, &[("src/a.txt", b"hello", vec![])]).await;
    let mut tar = get_object(&client, &bucket, "crafted/x.tar").await;
    tar[512] = b'j';
    put_object(&client, &bucket, "crafted/x.tar", tar).await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir_text = scratch.path().display().to_string();
    let out = s3bundler(&server.endpoint, &["extract", &archive, "-C", &dir_text]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("MD5"), "{}", out.stderr);
    assert!(
        !files_under(scratch.path())
            .iter()
            .any(|f| f.ends_with("a.txt")),
        "no file with the wrong bytes is left"
    );
    let out = s3bundler(
        &server.endpoint,
        &["extract", "s3://b/not-an-archive.zip", "-C", "x"],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
}

/// A server that accepts connections and never answers: each attempt is abandoned after
/// `--request-timeout` (or S3BUNDLER_REQUEST_TIMEOUT), and `cat` fails with exit 5 naming the
/// index it was reading. Fails on the old code, which only had a connect timeout and waited
/// for the answer forever.
#[tokio::test]
async fn a_server_that_never_answers_fails_the_command_after_the_request_timeout() {
    use std::time::{Duration, Instant};
    let (listener, endpoint) = local_listener().await;
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let cat = ["cat", "s3://b/a.tar", "k"];
    for (flag, env, attempts) in [
        (&[][..], Some(("S3BUNDLER_REQUEST_TIMEOUT", "1")), 2u32),
        (&["--request-timeout", "1"][..], None, 1),
    ] {
        let mut args = cat.to_vec();
        args.extend_from_slice(flag);
        let attempts_text = attempts.to_string();
        // No patience beyond the SDK's attempts: this measures one request's timeout.
        let mut envs = vec![
            ("AWS_MAX_ATTEMPTS", attempts_text.as_str()),
            ("S3BUNDLER_RETRY_FOR", "0"),
        ];
        envs.extend(env);
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            s3bundler_with_env(&endpoint, &args, &envs),
        )
        .await
        .unwrap_or_else(|_| panic!("{args:?} {envs:?}: still waiting after 30 s"));
        let elapsed = started.elapsed();
        assert_eq!(out.code, 5, "{args:?} {envs:?}: {out:?}");
        assert!(
            out.stderr.contains("s3://b/a.index") && out.stderr.contains("--request-timeout"),
            "{}",
            out.stderr
        );
        // Each attempt waited its second; the whole command took well under 3x that.
        let budget = Duration::from_secs(u64::from(attempts));
        assert!(
            elapsed >= budget && elapsed < 3 * budget,
            "{args:?} {envs:?}: {elapsed:?}"
        );
    }
    silent.abort();
}

/// Counts in `extract --json`'s summary.
fn counts(json: &serde_json::Value) -> [u64; 4] {
    [
        "restored",
        "already_restored",
        "kept",
        "older_versions_not_written",
    ]
    .map(|field| json[field].as_u64().unwrap_or(u64::MAX))
}

/// The objects of `extract --json` with this status, by key.
fn with_status(json: &serde_json::Value, status: &str) -> Vec<String> {
    let mut keys: Vec<String> = json["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["status"] == status)
        .map(|o| o["key"].as_str().unwrap_or("").to_string())
        .collect();
    keys.sort();
    keys
}

/// Fails on the old code, which replaced whatever object was at the target: an object
/// overwritten after it was archived was rolled back to the archived bytes, exit 0.
#[tokio::test]
async fn an_object_overwritten_after_archiving_is_kept_and_listed_and_replaced_only_with_overwrite()
{
    overwritten_after_archiving(None).await;
}

/// The same through one streaming pass, small objects written in the background.
#[tokio::test]
async fn an_object_overwritten_after_archiving_is_kept_when_restored_from_tar_gz() {
    overwritten_after_archiving(Some("gzip")).await;
}

async fn overwritten_after_archiving(compress: Option<&str>) {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "xkeep").await;
    let arch = new_bucket(&client, "xkeeparch").await;
    let small = |key: &str, seed: u8| Source {
        key: key.into(),
        body: body(1000, seed),
        ..Source::default()
    };
    let big = |key: &str, seed: u8| Source {
        key: key.into(),
        body: body(9 << 20, seed),
        ..Source::default()
    };
    let archived = [
        small("same", 1),
        small("gone", 2),
        small("changed", 3),
        big("big/same", 4),
        big("big/changed", 5),
    ];
    let mut entries = Vec::new();
    for source in &archived {
        put(&client, &src, source).await;
        entries.push(entry(&src, &source.key, source.body.len() as u64, None));
    }
    let manifest = write_manifest(&client, &arch, "m/xkeep-manifest.0.index", &entries).await;
    let archive = bundled(endpoint, &manifest, &arch, compress).await;

    // After archiving: one deleted, two overwritten with other bytes of the same size.
    client
        .delete_object()
        .bucket(&src)
        .key("gone")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let newer = [small("changed", 30), big("big/changed", 50)];
    for source in &newer {
        put(&client, &src, source).await;
    }

    let to = format!("s3://{src}");
    let out = extract_to(endpoint, &archive, &to, &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let json = out.json();
    assert_eq!(counts(&json), [1, 2, 2, 0], "{json}");
    assert_eq!(with_status(&json, "kept"), ["big/changed", "changed"]);
    assert_eq!(with_status(&json, "already_restored"), ["big/same", "same"]);
    assert!(out.stderr.contains("--overwrite"), "{}", out.stderr);
    for source in &newer {
        assert!(
            get_object(&client, &src, &source.key).await == source.body,
            "{} was replaced",
            source.key
        );
    }
    assert!(get_object(&client, &src, "gone").await == archived[1].body);
    assert_eq!(incomplete_uploads(&client, &src).await, 0);
    let text = s3bundler(endpoint, &["extract", &archive, "--to", &to]).await;
    assert_eq!(text.code, 1, "{text:?}");
    assert!(
        text.stdout.contains("2 kept") && text.stdout.contains("--overwrite"),
        "{}",
        text.stdout
    );

    // --overwrite replaces them; then every object is the archived one.
    let out = extract_to(endpoint, &archive, &to, &["--overwrite"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()), [2, 3, 0, 0], "{out:?}");
    for source in &archived {
        assert!(
            get_object(&client, &src, &source.key).await == source.body,
            "{} not restored",
            source.key
        );
    }
    // Identical objects (one now multipart, its ETag no MD5: read and hashed) are counted.
    let out = extract_to(endpoint, &archive, &to, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()), [0, 5, 0, 0], "{out:?}");
}

/// Fails on the old code, which uploaded the versions of one key concurrently: the one left
/// current was whichever upload finished last (here the big oldest one).
#[tokio::test]
async fn versions_of_one_key_are_restored_oldest_first_so_the_newest_ends_current() {
    versions_oldest_first(None).await;
}

/// The same from a compressed archive, where the versions come in archive order (newest
/// first): one pass over the stream per version.
#[tokio::test]
async fn versions_from_tar_zst_are_restored_oldest_first() {
    versions_oldest_first(Some("zstd")).await;
}

async fn versions_oldest_first(compress: Option<&str>) {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "xvers").await;
    let dst = new_bucket(&client, "xversdst").await;
    enable_versioning(&client, &src).await;
    enable_versioning(&client, &dst).await;
    // Oldest big (a multipart restore, slowest), newest small; a second apart, as S3's
    // LastModified counts seconds.
    let bodies = [body(9 << 20, 1), body(3000, 2), body(10, 3)];
    let mut entries = Vec::new();
    for (i, bytes) in bodies.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let source = Source {
            key: "v".into(),
            body: bytes.clone(),
            ..Source::default()
        };
        let version = put(&client, &src, &source).await;
        entries.push(entry(&src, "v", bytes.len() as u64, version.as_deref()));
    }
    // Newest first, as an inventory lists them.
    entries.reverse();
    let manifest = write_manifest(&client, &src, "m/xvers-manifest.0.index", &entries).await;
    let archive = bundled(endpoint, &manifest, &src, compress).await;

    let to = format!("s3://{dst}");
    let out = extract_to(endpoint, &archive, &to, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        get_object(&client, &dst, "v").await == bodies[2],
        "newest is current"
    );
    assert_eq!(counts(&out.json()), [3, 0, 0, 0], "{out:?}");
    let listed = client
        .list_object_versions()
        .bucket(&dst)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // S3 lists the versions of a key newest first.
    let sizes: Vec<i64> = listed
        .versions()
        .iter()
        .rev()
        .map(|v| v.size().unwrap_or(-1))
        .collect();
    assert_eq!(
        sizes,
        bodies.iter().map(|b| b.len() as i64).collect::<Vec<_>>(),
        "written oldest first"
    );
    // Again: the newest is current, so every version counts as already restored.
    let out = extract_to(endpoint, &archive, &to, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()), [0, 3, 0, 0], "{out:?}");
}

/// Fails on the old code, which wrote `a/b`, `a//b` and `a/./b` to one file (concurrently),
/// a key and the same key with a trailing slash to one path, and exited 0.
#[tokio::test]
async fn members_that_land_on_one_local_path_are_refused_before_anything_is_written() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xsame").await;
    let archive = put_crafted(
        &client,
        &bucket,
        &[
            ("src/fine", b"fine", vec![]),
            ("src/a/b", b"1", vec![]),
            ("src/a//b", b"2", vec![]),
            ("src/a/./b", b"3", vec![]),
            ("src/t", b"file", vec![]),
            ("src/t/", b"", vec![]),
            ("src/p", b"file", vec![]),
            ("src/p/q", b"under", vec![]),
            ("src/folder/", b"", vec![]),
            ("src/folder/inside", b"ok", vec![]),
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().join("out");
    let dir_text = dir.display().to_string();
    let out = s3bundler(&server.endpoint, &["extract", &archive, "-C", &dir_text]).await;
    assert_eq!(out.code, 2, "{out:?}");
    for name in [
        "src/a/b",
        "src/a//b",
        "src/a/./b",
        "src/t",
        "src/t/",
        "src/p",
        "src/p/q",
    ] {
        assert!(
            out.stderr.contains(&format!("`{name}`")),
            "{name}: {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("`src/folder/inside`"),
        "{}",
        out.stderr
    );
    assert_eq!(files_under(scratch.path()), Vec::<String>::new());
    // One of them alone is fine.
    let out = s3bundler(
        &server.endpoint,
        &["extract", &archive, "--prefix", "a//", "-C", &dir_text],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read(dir.join("src/a/b")).unwrap_or_default(), b"2");
}

/// Fails on the old code, which truncated and rewrote an existing file.
#[tokio::test]
async fn an_existing_local_file_is_kept_unless_overwrite_and_an_identical_one_counts_as_restored() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xexist").await;
    let archive = put_crafted(
        &client,
        &bucket,
        &[
            ("src/new", b"new", vec![]),
            ("src/mine", b"archived", vec![]),
            ("src/same", b"same", vec![]),
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("src")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("src/mine"), b"my edits").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("src/same"), b"same").unwrap_or_else(|e| panic!("{e}"));
    let dir_text = dir.display().to_string();
    let out = s3bundler(
        &server.endpoint,
        &["extract", &archive, "-C", &dir_text, "--json"],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let json = out.json();
    assert_eq!(counts(&json), [1, 1, 1, 0], "{json}");
    assert_eq!(with_status(&json, "kept"), ["mine"]);
    assert_eq!(
        std::fs::read(dir.join("src/mine")).unwrap_or_default(),
        b"my edits"
    );
    assert_eq!(
        std::fs::read(dir.join("src/new")).unwrap_or_default(),
        b"new"
    );
    let out = s3bundler(
        &server.endpoint,
        &["extract", &archive, "-C", &dir_text, "--overwrite"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("src/mine")).unwrap_or_default(),
        b"archived"
    );
}

/// Fails on the old code, which wrote every version of a key to one file, concurrently: the
/// file held whichever finished last.
#[tokio::test]
async fn versions_of_one_key_to_a_folder_write_the_newest_unless_one_is_chosen() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xlocalvers").await;
    // In the archive: the newest first.
    let versions = [
        ("v3", "2024-03-01T00:00:00Z"),
        ("v1", "2024-01-01T00:00:00Z"),
        ("v2", "2024-02-01T00:00:00Z"),
    ];
    let archive = put_crafted_with(
        &client,
        &bucket,
        &[
            ("src/k", b"third", vec![]),
            ("src/k", b"first", vec![]),
            ("src/k", b"second", vec![]),
            ("src/other", b"other", vec![]),
        ],
        |position, row| {
            if let Some((version, modified)) = versions.get(position) {
                row.version_id = Some(version.to_string());
                row.last_modified = modified.to_string();
            }
        },
    )
    .await;
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().join("out");
    let dir_text = dir.display().to_string();
    let out = s3bundler(&server.endpoint, &["extract", &archive, "-C", &dir_text]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("src/k")).unwrap_or_default(),
        b"third"
    );
    assert!(
        out.stdout.contains("2 older versions") && out.stdout.contains("--version-id"),
        "{}",
        out.stdout
    );
    let chosen = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chosen_text = chosen.path().display().to_string();
    let out = s3bundler(
        &server.endpoint,
        &[
            "extract",
            &archive,
            "--key",
            "k",
            "--version-id",
            "v1",
            "-C",
            &chosen_text,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()), [1, 0, 0, 0], "{out:?}");
    assert_eq!(
        std::fs::read(chosen.path().join("src/k")).unwrap_or_default(),
        b"first"
    );
    // Two versions chosen land on one path: refused.
    let out = s3bundler(
        &server.endpoint,
        &[
            "extract",
            &archive,
            "--version-id",
            "v1",
            "--version-id",
            "v2",
            "-C",
            &chosen_text,
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        std::fs::read(chosen.path().join("src/k")).unwrap_or_default(),
        b"first"
    );
}

/// Fails on the old code, which wrote unconditionally: objects another writer created while
/// the restore's PutObject and CompleteMultipartUpload were in flight were replaced. Here S3
/// refuses the conditional writes (412), and extract keeps and lists those objects, exit 1.
#[tokio::test]
async fn an_object_written_by_another_writer_during_the_restore_is_kept() {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
    use std::time::{Duration, Instant};

    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "xrace").await;
    let big = body(9 << 20, 7);
    let archive = put_crafted(
        &client,
        &bucket,
        &[
            ("src/race/small", b"archived", vec![]),
            ("src/race/big", &big, vec![]),
        ],
    )
    .await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan {
            put_delay: Some(Duration::from_secs(3)),
            delay_put_keys_ending_with: Some("race/small".into()),
            complete_delay: Some(Duration::from_secs(3)),
            ..FaultPlan::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let to = format!("s3://{bucket}/restored");
    let child = spawn_s3bundler(
        &proxy.endpoint,
        &["extract", &archive, "--to", &to, "--json"],
    );
    // Once both writes are held by the proxy, another writer creates both objects.
    let started = Instant::now();
    while {
        let operations = proxy.counts.operations();
        operations.get("PutObject").copied().unwrap_or(0) < 1
            || operations
                .get("CompleteMultipartUpload")
                .copied()
                .unwrap_or(0)
                < 1
    } {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            proxy.counts.operations()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put_object(&client, &bucket, "restored/race/small", b"theirs".to_vec()).await;
    put_object(
        &client,
        &bucket,
        "restored/race/big",
        b"theirs too".to_vec(),
    )
    .await;
    let out = finish(child, Duration::from_secs(60)).await;
    assert_eq!(out.code, 1, "{out:?}");
    let json = out.json();
    assert_eq!(counts(&json), [0, 0, 2, 0], "{json}");
    assert_eq!(with_status(&json, "kept"), ["race/big", "race/small"]);
    assert_eq!(
        get_object(&client, &bucket, "restored/race/small").await,
        b"theirs"
    );
    assert_eq!(
        get_object(&client, &bucket, "restored/race/big").await,
        b"theirs too"
    );
}

/// `ls` lists an archive's objects from its index (text or JSON, `--prefix`); a prefix that
/// selects nothing warns, in `ls` and in `extract`, and a key that is not there names the `ls`
/// command to run.
#[tokio::test]
async fn ls_lists_an_archives_objects_and_empty_selections_say_so() {
    let server = LocalS3::shared();
    let (_client, bucket, manifest) = local_objects("ls", 5, 100).await;
    let archive = bundled(&server.endpoint, &manifest, &bucket, None).await;
    let out = s3bundler(&server.endpoint, &["ls", &archive]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut keys: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "objects/0",
            "objects/1",
            "objects/2",
            "objects/3",
            "objects/4"
        ]
    );
    let out = s3bundler(
        &server.endpoint,
        &["ls", &archive, "--prefix", "objects/3", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let listed = out.json();
    assert_eq!(
        (listed["objects"].as_u64(), listed["bytes"].as_u64()),
        (Some(1), Some(100))
    );
    assert_eq!(listed["members"][0]["key"], "objects/3", "{listed}");
    let out = s3bundler(&server.endpoint, &["ls", &archive, "--prefix", "nope/"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("nope/"),
        "{}",
        out.stderr
    );

    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.path().display().to_string();
    let out = s3bundler(
        &server.endpoint,
        &["extract", &archive, "--prefix", "nope/", "-C", &dir],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("nothing to extract"),
        "{}",
        out.stderr
    );
    let out = s3bundler(&server.endpoint, &["cat", &archive, "objects/9"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(&format!("s3bundler ls {archive}")),
        "{}",
        out.stderr
    );
}
