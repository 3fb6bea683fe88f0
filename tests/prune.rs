//! `s3bundler prune` on moto: a dry run deletes nothing; `--yes` deletes exactly the verified,
//! unchanged originals and logs them; objects overwritten since, objects in a DLQ and every
//! object of a manifest whose archive is damaged are kept; a second run deletes nothing more.

mod common;

use common::*;
use s3bundler::archive::records::parse_pruned;

async fn bundle(endpoint: &str, manifest: &str, arch: &str) -> serde_json::Value {
    let out = s3bundler(
        endpoint,
        &[
            "bundle", "-m", manifest, "-b", arch, "-p", "bundles", "-s", "2KiB", "--json",
        ],
    )
    .await;
    assert!(out.code == 0 || out.code == 1, "{out:?}");
    out.json()
}

async fn prune(endpoint: &str, arch: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    check_command(endpoint, "prune", arch, extra).await
}

#[tokio::test]
async fn prune_deletes_exactly_the_verified_unchanged_objects_once() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "psrc").await;
    let arch = new_bucket(&client, "parch").await;

    // Manifest a: six small objects, one overwritten later, one in the DLQ, one big copy.
    let mut a = Vec::new();
    for i in 0..6 {
        let key = format!("logs/a-{i}");
        put_object(&client, &src, &key, body(50 + i, i as u8)).await;
        a.push(entry(&src, &key, 50 + i as u64, None));
    }
    put_object(&client, &src, "logs/overwritten", body(40, 1)).await;
    a.push(entry(&src, "logs/overwritten", 40, None));
    put_object(&client, &src, "dlq/changed", body(10, 2)).await;
    a.push(entry(&src, "dlq/changed", 3, None));
    put_object(&client, &src, "big/copied.bin", body(3000, 3)).await;
    a.push(entry(&src, "big/copied.bin", 3000, None));
    let manifest_a = write_manifest(&client, &arch, "manifests/a-manifest.0.index", &a).await;
    // Manifest b: four objects whose archive gets damaged.
    let mut b = Vec::new();
    for i in 0..4 {
        let key = format!("other/b-{i}");
        put_object(&client, &src, &key, body(70, i as u8)).await;
        b.push(entry(&src, &key, 70, None));
    }
    let manifest_b = write_manifest(&client, &arch, "manifests/b-manifest.0.index", &b).await;

    let report_a = bundle(endpoint, &manifest_a, &arch).await;
    assert_eq!(report_a["failed"]["Changed"], 1, "{report_a}");
    assert_eq!(report_a["objects_copied"], 1, "{report_a}");
    let report_b = bundle(endpoint, &manifest_b, &arch).await;
    put_object(&client, &src, "logs/overwritten", body(40, 99)).await;
    let archive_b = report_b["archive"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(&format!("s3://{arch}/"))
        .to_string();
    let tar = get_object(&client, &arch, &archive_b).await;
    put_object(&client, &arch, &archive_b, tar[..tar.len() - 1536].to_vec()).await;
    let all = list_keys(&client, &src, "").await;
    assert_eq!(all.len(), 13);

    // Dry run: counts, nothing deleted.
    let (out, json) = prune(endpoint, &arch, &[]).await;
    assert_eq!(out.code, 1, "b's archive fails verification: {out:?}");
    assert_eq!(json["dry_run"], true, "{json}");
    assert_eq!(json["deleted"]["objects"], 7, "{json}");
    assert_eq!(
        json["by_prefix"][format!("{src}/logs/")]["objects"],
        6,
        "{json}"
    );
    assert_eq!(
        json["by_prefix"][format!("{src}/big/")]["bytes"],
        3000,
        "{json}"
    );
    assert_eq!(json["kept"]["Changed"], 1, "{json}");
    assert_eq!(json["kept"]["InDlq"], 1, "{json}");
    assert_eq!(json["kept"]["ArchiveDamaged"], 4, "{json}");
    assert_eq!(
        list_keys(&client, &src, "").await,
        all,
        "a dry run deletes nothing"
    );
    let text = s3bundler(
        endpoint,
        &[
            "prune",
            "--manifests",
            &format!("s3://{arch}/manifests/"),
            "-b",
            &arch,
            "-p",
            "bundles",
            "-s",
            "2KiB",
        ],
    )
    .await;
    assert!(
        text.stdout.contains("would delete 7 objects") && text.stdout.contains("--yes"),
        "{}",
        text.stdout
    );

    // For real.
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 7, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    let mut left = list_keys(&client, &src, "").await;
    left.sort();
    assert_eq!(
        left,
        vec![
            "dlq/changed",
            "logs/overwritten",
            "other/b-0",
            "other/b-1",
            "other/b-2",
            "other/b-3"
        ]
    );
    let log = get_object(&client, &arch, "manifests/a-manifest.0.index.pruned").await;
    let logged = parse_pruned(&log, "log").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logged.len(), 7);
    assert!(logged
        .iter()
        .any(|r| r.key == "big/copied.bin" && r.size == 3000));
    assert!(
        list_keys(&client, &arch, "manifests/b-manifest.0.index.pruned")
            .await
            .is_empty()
    );

    // Again: nothing more.
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 0, "{json}");
    assert_eq!(json["already_pruned"], 7, "{json}");
    assert_eq!(list_keys(&client, &src, "").await, left);
}

#[tokio::test]
async fn in_a_versioned_bucket_prune_deletes_the_archived_versions_only() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "pvsrc").await;
    let arch = new_bucket(&client, "pvarch").await;
    enable_versioning(&client, &src).await;
    let mut entries = Vec::new();
    for key in ["v/one", "v/two", "v/three"] {
        put_object(&client, &src, key, body(30, 1)).await;
        entries.push(entry(&src, key, 30, None));
    }
    let manifest = write_manifest(&client, &arch, "manifests/v-manifest.0.index", &entries).await;
    bundle(endpoint, &manifest, &arch).await;
    // A new version of v/three (same bytes): not the version archived, so it is kept.
    put_object(&client, &src, "v/three", body(30, 1)).await;
    let (out, json) = prune(endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 2, "{json}");
    assert_eq!(json["kept"]["Changed"], 1, "{json}");
    let versions = client
        .list_object_versions()
        .bucket(&src)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let keys: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
    assert_eq!(
        keys,
        vec!["v/three", "v/three"],
        "archived versions deleted, no others"
    );
    assert!(
        versions.delete_markers().is_empty(),
        "exact versions, no delete markers"
    );
}

/// A proxy in front of moto that answers DeleteObjects the way S3 does with conditional
/// deletes, which moto 5.2.5 does not (it ignores each object's ETag there, but honours
/// If-Match on DeleteObject): every object of the batch is deleted by a DeleteObject with
/// If-Match on the ETag sent for it, and a refusal comes back as a PreconditionFailed entry.
/// Before the first batch it overwrites `race_key`: a write landing between prune's check of
/// the object and its delete. Every other request is passed through, one per connection.
mod conditional_deletes {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// (key, ETag) of every object DeleteObjects was asked to delete.
    pub type Sent = Arc<Mutex<Vec<(String, Option<String>)>>>;

    pub struct Proxy {
        pub endpoint: String,
        pub sent: Sent,
    }

    struct State {
        upstream: String,
        moto: aws_sdk_s3::Client,
        race: Mutex<Option<(String, String, Vec<u8>)>>,
        sent: Sent,
    }

    pub async fn start(
        upstream: &str,
        race_bucket: &str,
        race_key: &str,
        overwrite: Vec<u8>,
    ) -> Proxy {
        let (listener, endpoint) = super::local_listener().await;
        let sent = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            upstream: upstream.trim_start_matches("http://").to_string(),
            moto: s3bundler_testkit::s3_client(upstream),
            race: Mutex::new(Some((race_bucket.into(), race_key.into(), overwrite))),
            sent: sent.clone(),
        });
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, state.clone()));
            }
        });
        Proxy { endpoint, sent }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// The head (up to the blank line) and the body of one request.
    async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
        let mut data = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        let end = loop {
            if let Some(end) = find(&data, b"\r\n\r\n") {
                break end + 4;
            }
            let n = socket.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = data[end..].to_vec();
        while body.len() < length {
            let n = socket.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            body.extend_from_slice(&chunk[..n]);
        }
        Some((head, body))
    }

    /// `head` with its Connection header replaced by `Connection: close`.
    fn closing(head: &str) -> String {
        let mut lines: Vec<&str> = head
            .trim_end()
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .collect();
        lines.push("Connection: close");
        format!("{}\r\n\r\n", lines.join("\r\n"))
    }

    async fn serve(mut socket: TcpStream, state: Arc<State>) {
        let Some((head, body)) = read_request(&mut socket).await else {
            return;
        };
        let request_line = head.lines().next().unwrap_or("").to_string();
        let target = request_line.split(' ').nth(1).unwrap_or("");
        let response = match target.split_once('?') {
            Some((path, query))
                if request_line.starts_with("POST ")
                    && query.split('&').any(|p| p == "delete" || p == "delete=") =>
            {
                let bucket = path.trim_matches('/').to_string();
                delete_objects(&state, &bucket, &String::from_utf8_lossy(&body)).await
            }
            _ => pass_through(&state.upstream, &head, &body).await,
        };
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
    }

    async fn pass_through(upstream: &str, head: &str, body: &[u8]) -> Vec<u8> {
        let mut moto = TcpStream::connect(upstream)
            .await
            .unwrap_or_else(|e| panic!("{upstream}: {e}"));
        let mut request = closing(head).into_bytes();
        request.extend_from_slice(body);
        moto.write_all(&request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut response = Vec::new();
        moto.read_to_end(&mut response)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let end = find(&response, b"\r\n\r\n").map_or(response.len(), |e| e + 4);
        let mut out = closing(&String::from_utf8_lossy(&response[..end])).into_bytes();
        out.extend_from_slice(&response[end..]);
        out
    }

    fn unescape(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    fn element(xml: &str, name: &str) -> Option<String> {
        let open = format!("<{name}>");
        let start = xml.find(&open)? + open.len();
        let end = xml[start..].find(&format!("</{name}>"))? + start;
        Some(unescape(&xml[start..end]))
    }

    async fn delete_objects(state: &State, bucket: &str, xml: &str) -> Vec<u8> {
        let race = state.race.lock().ok().and_then(|mut r| r.take());
        if let Some((race_bucket, key, body)) = race {
            s3bundler_testkit::put_object(&state.moto, &race_bucket, &key, body).await;
        }
        let mut errors = String::new();
        for object in xml.split("<Object>").skip(1) {
            let object = object.split("</Object>").next().unwrap_or("");
            let key = element(object, "Key").unwrap_or_default();
            let version = element(object, "VersionId");
            let etag = element(object, "ETag");
            if let Ok(mut sent) = state.sent.lock() {
                sent.push((key.clone(), etag.clone()));
            }
            let result = state
                .moto
                .delete_object()
                .bucket(bucket)
                .key(&key)
                .set_version_id(version.clone())
                .set_if_match(etag)
                .send()
                .await;
            if let Err(e) = result {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = if status == Some(412) {
                    "PreconditionFailed".to_string()
                } else {
                    format!("Unexpected{}", status.unwrap_or(0))
                };
                let version = version
                    .map(|v| format!("<VersionId>{}</VersionId>", escape(&v)))
                    .unwrap_or_default();
                errors.push_str(&format!(
                    "<Error><Key>{}</Key>{version}<Code>{code}</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>",
                    escape(&key)
                ));
            }
        }
        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{errors}</DeleteResult>");
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    }
}

/// An object overwritten between prune's check and its delete is kept: every DeleteObjects
/// entry carries the ETag archived and verified, S3 refuses the overwritten one with
/// PreconditionFailed, and prune reports it as changed, neither deleted nor failed. Fails on
/// the old code, which sent no ETag: the proxy, like S3, then deleted the new object.
#[tokio::test]
async fn an_object_overwritten_after_verification_is_never_deleted() {
    use md5::{Digest, Md5};
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let src = new_bucket(&client, "pisrc").await;
    let arch = new_bucket(&client, "piarch").await;
    let mut entries = Vec::new();
    let mut etags = Vec::new();
    for (i, key) in ["a/one", "a/two", "a/raced"].into_iter().enumerate() {
        let bytes = body(60, i as u8);
        etags.push((key.to_string(), hex::encode(Md5::digest(&bytes))));
        put_object(&client, &src, key, bytes).await;
        entries.push(entry(&src, key, 60, None));
    }
    let manifest = write_manifest(&client, &arch, "manifests/i-manifest.0.index", &entries).await;
    bundle(endpoint, &manifest, &arch).await;

    let newer = body(60, 200);
    let proxy = conditional_deletes::start(endpoint, &src, "a/raced", newer.clone()).await;
    let (out, json) = prune(&proxy.endpoint, &arch, &["--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json["deleted"]["objects"], 2, "{json}");
    assert_eq!(json["kept"]["Changed"], 1, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(
        json["changed"][0]["object"],
        format!("s3://{src}/a/raced"),
        "{json}"
    );
    assert!(!out.stderr.contains("ERROR"), "{}", out.stderr);

    let mut sent: Vec<(String, String)> = proxy
        .sent
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(key, etag)| (key, etag.unwrap_or_default().trim_matches('"').to_string()))
        .collect();
    sent.sort();
    etags.sort();
    assert_eq!(
        sent, etags,
        "each delete is conditional on the ETag archived"
    );
    assert_eq!(list_keys(&client, &src, "").await, vec!["a/raced"]);
    assert_eq!(get_object(&client, &src, "a/raced").await, newer);
    let log = get_object(&client, &arch, "manifests/i-manifest.0.index.pruned").await;
    let logged = parse_pruned(&log, "log").unwrap_or_else(|e| panic!("{e}"));
    let mut keys: Vec<&str> = logged.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["a/one", "a/two"]);
}
