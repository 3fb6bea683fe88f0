//! Issue 15, end to end: the release binary fed damaged inputs never panics, exits with one of
//! the codes the README lists, and names the file or object its error is about. Bundle
//! manifests (`bundle -m`), inventories (`group`: manifest.json, CSV.gz, ORC, Parquet), index,
//! DLQ and archive (`verify`, `extract`) on the in-process server; queue bodies (`bundle -q`)
//! on moto.

mod common;

use std::time::Duration;

use common::*;
use s3bundler_testkit::generate::{manifest_json_as, report, DataFormat, InventorySpec};

/// The exit codes the README lists.
const EXIT_CODES: [i32; 7] = [0, 1, 2, 3, 4, 5, 130];

/// Checks one run on damaged input: no panic, a listed exit code, and an error line naming one
/// of `names` (for exit 1, objects in the DLQ or problems found, a line naming it).
fn assert_handled(out: &Output, what: &str, names: &[&str]) {
    eprintln!("{what}: exit {}", out.code);
    assert!(
        !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
        "{what}: panicked: {out:?}"
    );
    assert!(
        EXIT_CODES.contains(&out.code),
        "{what}: exit code {} (a signal is -1): {out:?}",
        out.code
    );
    if out.code != 0 {
        // Exit 1 (objects in the DLQ, problems found by verify) reports on either stream.
        let error = out.code != 1;
        let report = if error { "" } else { out.stdout.as_str() };
        assert!(
            out.stderr
                .lines()
                .chain(report.lines())
                .any(|line| names.iter().any(|n| line.contains(n))
                    && (line.contains("ERROR") || !error)),
            "{what}: no error line names {names:?}: {}{}",
            out.stderr,
            out.stdout
        );
    }
}

/// Objects in `bucket` and a bundle manifest of them in the original tools' `Bucket,Key,Size`
/// form, one line each.
async fn sources(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..3 {
        let key = format!("data/object-{i}");
        let data = body(200 + i, i as u8);
        lines.push(format!("{bucket},{key},{}\n", data.len()));
        put_object(client, bucket, &key, data).await;
    }
    lines
}

#[tokio::test]
async fn damaged_bundle_manifests_exit_with_a_listed_code_naming_the_manifest() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "badmanifest").await;
    let lines = sources(&client, &bucket).await;
    let good = lines.concat();
    let seven = format!(
        "{bucket},data%2Fobject-0,,200,2024-05-06T22:37:48.000Z,,STANDARD\n{bucket},data%2Fobject-1,,201,,,\n"
    );
    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        (
            "a line cut short",
            good.as_bytes()[..good.len() - 7].to_vec(),
        ),
        (
            "two columns",
            format!("{bucket},data/object-0\n").into_bytes(),
        ),
        (
            "nine columns",
            format!("{bucket},data%2Fobject-0,,200,,,,,x\n").into_bytes(),
        ),
        (
            "a negative size",
            format!("{bucket},data/object-0,-1\n").into_bytes(),
        ),
        (
            "a size that is text",
            format!("{bucket},data/object-0,big\n").into_bytes(),
        ),
        (
            "a size over u64",
            format!("{bucket},data/object-0,99999999999999999999999\n").into_bytes(),
        ),
        (
            "a wrong size",
            format!("{bucket},data/object-0,7\n").into_bytes(),
        ),
        ("bytes that are not UTF-8", {
            let mut bytes = good.clone().into_bytes();
            bytes.splice(10..10, [0xff, 0xc3, 0x28, 0x00]);
            bytes
        }),
        (
            "bad percent-encoding",
            seven.replace("data%2Fobject-0", "data%zz%").into_bytes(),
        ),
        (
            "an encoded NUL and a lone surrogate",
            seven
                .replace("data%2Fobject-0", "%00%ED%A0%80")
                .into_bytes(),
        ),
        ("an empty manifest", Vec::new()),
        ("only newlines", b"\n\n\r\n".to_vec()),
        (
            "an unclosed quote",
            format!("\"{bucket},data/object-0,200\n").into_bytes(),
        ),
    ];
    // A 4 MiB line: a key far over S3's 1,024 bytes, for which the SDK panicked building the
    // GET.
    let huge = format!("{bucket},{},5\n", "k".repeat(4 << 20));
    damaged.push(("a 4 MiB line", huge.into_bytes()));
    for (n, (what, manifest)) in damaged.into_iter().enumerate() {
        let key = format!("manifests/damaged-{n}.0.index");
        put_object(&client, &bucket, &key, manifest).await;
        let uri = format!("s3://{bucket}/{key}");
        let out = s3bundler(
            &server.endpoint,
            &["bundle", "-m", &uri, "-b", &bucket, "-p", "bundles"],
        )
        .await;
        assert_handled(&out, what, &[&uri]);
    }
}

/// A flip of one bit, a run overwritten, or the file cut, at a fraction of its length (the
/// footer and metadata are at the end of ORC and Parquet files, the data pages before).
fn damage(data: &[u8], how: usize) -> Vec<u8> {
    let mut data = data.to_vec();
    let len = data.len();
    match how {
        0 => data.truncate(len / 2),
        1 => data.truncate(len - 3),
        2 => data[len - 12] ^= 0x10,
        3 => data[len * 9 / 10..len * 9 / 10 + 8].fill(0xff),
        4 => data[len / 3..len / 3 + 16].fill(0),
        _ => data[len / 5] ^= 0x01,
    }
    data
}

#[tokio::test]
async fn damaged_inventories_exit_with_a_listed_code_naming_the_file() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "badinventory").await;
    let spec = InventorySpec {
        long_keys: false,
        ..InventorySpec::new(&bucket, 300)
    };
    let group = |manifest: String| {
        let endpoint = server.endpoint.clone();
        let bucket = bucket.clone();
        async move {
            s3bundler(
                &endpoint,
                &["group", "-m", &manifest, "-b", &bucket, "-p", "groups"],
            )
            .await
        }
    };
    // Each inventory under its own prefix: manifest.json, and its data file, which manifest.json
    // describes as it now is (size and MD5), so that the parser meets the damage.
    let mut case = 0;
    let mut upload = |format: DataFormat, data: Vec<u8>, json: Option<Vec<u8>>| {
        case += 1;
        let client = client.clone();
        let bucket = bucket.clone();
        let spec = spec.clone();
        async move {
            let base = format!("inv/{case}");
            let data_key = format!("{base}/data/file.{}", format.extension());
            let json = json.unwrap_or_else(|| {
                manifest_json_as(
                    format,
                    &spec,
                    &bucket,
                    std::slice::from_ref(&data_key),
                    std::slice::from_ref(&data),
                )
                .into_bytes()
            });
            put_object(&client, &bucket, &data_key, data).await;
            let manifest_key = format!("{base}/manifest.json");
            put_object(&client, &bucket, &manifest_key, json.clone()).await;
            (
                format!("s3://{bucket}/{manifest_key}"),
                format!("s3://{bucket}/{data_key}"),
                json,
            )
        }
    };

    let csv = report(&spec, DataFormat::Csv, false).data_files.remove(0);
    let (manifest, data_uri, json) = upload(DataFormat::Csv, csv.clone(), None).await;
    let data_key = data_uri.trim_start_matches(&format!("s3://{bucket}/"));
    assert_eq!(group(manifest.clone()).await.code, 0, "the valid inventory");
    // manifest.json itself: garbage, cut short, a field of the wrong type, a data file key
    // longer than S3 allows (the SDK panics building a request for a URI over 64 KiB).
    for (what, json) in [
        (
            "a data file key of 100 KB",
            String::from_utf8_lossy(&json)
                .replace(data_key, &"k".repeat(100_000))
                .into_bytes(),
        ),
        ("garbage manifest.json", b"\x00\xffnot json".to_vec()),
        ("manifest.json cut short", json[..json.len() / 2].to_vec()),
        (
            "files that is not a list",
            String::from_utf8_lossy(&json)
                .replacen("\"files\" : [", "\"files\" : 7, \"x\" : [", 1)
                .into_bytes(),
        ),
    ] {
        let (manifest, _, _) = upload(DataFormat::Csv, csv.clone(), Some(json)).await;
        // The long key's error names the data file.
        let long_key = format!("s3://{bucket}/kkkk");
        assert_handled(
            &group(manifest.clone()).await,
            what,
            &[&manifest, &long_key],
        );
    }
    // manifest.checksum that does not match manifest.json.
    let checksum = manifest.replace("manifest.json", "manifest.checksum");
    let checksum_key = checksum.trim_start_matches(&format!("s3://{bucket}/"));
    put_object(
        &client,
        &bucket,
        checksum_key,
        b"0123456789abcdef0123456789abcdef\n".to_vec(),
    )
    .await;
    // The error names manifest.json, which does not match.
    assert_handled(&group(checksum).await, "a wrong checksum", &[&manifest]);
    // Data files whose manifest.json says what they are now.
    let mut data_cases = vec![
        (
            "CSV.gz that is not gzip",
            DataFormat::Csv,
            b"plain text, not gzip".to_vec(),
        ),
        (
            "CSV.gz cut short",
            DataFormat::Csv,
            csv[..csv.len() / 2].to_vec(),
        ),
        (
            "CSV.gz with a bit flipped",
            DataFormat::Csv,
            damage(&csv, 5),
        ),
        ("CSV.gz of bad rows", DataFormat::Csv, {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(
                &mut encoder,
                b"\"a\",\"b\"\n\"x\",\"%zz\",\"-5\"\n\"unclosed\n",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            encoder.finish().unwrap_or_else(|e| panic!("{e}"))
        }),
    ];
    for format in [DataFormat::Orc, DataFormat::Parquet] {
        let valid = report(&spec, format, false).data_files.remove(0);
        for how in 0..6 {
            data_cases.push(("a damaged columnar file", format, damage(&valid, how)));
        }
    }
    // One-bit patches of AWS's samples that panicked inside orc-rust and the parquet crate
    // (src/inventory/mutants.rs), here read by ranged GETs as from S3.
    if let Some(samples) = aws_samples() {
        let sample = |name: &str, at: usize, bit: u8| {
            let path = samples.join("orcabus-filemanager").join(name);
            let mut data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            data[at] ^= bit;
            data
        };
        data_cases.extend([
            (
                "an ORC stripe footer short of column encodings",
                DataFormat::Orc,
                sample("orc_inventory.orc", 1283, 0x10),
            ),
            (
                "a Parquet bit width over the value width",
                DataFormat::Parquet,
                sample("parquet_inventory.parquet", 162, 0x40),
            ),
        ]);
    }
    for (what, format, data) in data_cases {
        let (manifest, data_uri, _) = upload(format, data, None).await;
        let out = group(manifest).await;
        assert_handled(&out, &format!("{what} ({format:?})"), &[&data_uri]);
    }
}

#[tokio::test]
async fn damaged_indexes_dlqs_and_archives_exit_with_a_listed_code_naming_the_object() {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, "badarchive").await;
    let mut lines = sources(&client, &bucket).await;
    lines.push(format!("{bucket},data/never-existed,5\n"));
    let manifest = format!("s3://{bucket}/manifests/good.0.index");
    put_object(
        &client,
        &bucket,
        "manifests/good.0.index",
        lines.concat().into_bytes(),
    )
    .await;
    let bundled = s3bundler(
        &server.endpoint,
        &[
            "bundle", "-m", &manifest, "-b", &bucket, "-p", "bundles", "--json",
        ],
    )
    .await;
    assert_eq!(bundled.code, 1, "one object goes to the DLQ: {bundled:?}");
    let report = bundled.json();
    let key_of = |field: &str| {
        report[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}: {report}"))
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_string()
    };
    let archive_uri = format!("s3://{bucket}/{}", key_of("archive"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = scratch.path().display().to_string();
    for field in ["index", "dlq", "archive"] {
        let key = key_of(field);
        let uri = format!("s3://{bucket}/{key}");
        let valid = get_object(&client, &bucket, &key).await;
        let len = valid.len();
        let replace = |at: usize, with: &[u8]| {
            let mut bytes = valid.clone();
            let at = at.min(len);
            let end = (at + with.len()).min(len);
            bytes.splice(at..end, with.iter().copied());
            bytes
        };
        let damaged = [
            ("cut short", valid[..len / 2].to_vec()),
            ("empty", Vec::new()),
            ("garbage", b"\x00\xff\xfe,\"\n%%,,,\r\n".repeat(40)),
            ("a field widened", replace(len / 2, b"\",\",\"")),
            (
                "bytes that are not UTF-8",
                replace(len / 3, b"\xff\xc3\x28"),
            ),
            (
                "digits in the offsets and sizes",
                replace(len * 3 / 4, b"99999999999999999999"),
            ),
            ("a bit flipped in the first header", {
                let mut bytes = valid.clone();
                bytes[100 % len] ^= 0x20;
                bytes
            }),
        ];
        for (what, bytes) in damaged {
            put_object(&client, &bucket, &key, bytes).await;
            let what = format!("{field} {what}");
            let verify = s3bundler(
                &server.endpoint,
                &[
                    "verify",
                    "--manifests",
                    &format!("s3://{bucket}/manifests/"),
                    "-b",
                    &bucket,
                    "-p",
                    "bundles",
                    "--deep",
                ],
            )
            .await;
            // A damaged archive is reported by the objects whose members do not check out.
            let objects = format!("s3://{bucket}/data/");
            assert_handled(&verify, &format!("verify, {what}"), &[&uri, &objects]);
            let extract =
                s3bundler(&server.endpoint, &["extract", &archive_uri, "-C", &folder]).await;
            if field != "dlq" {
                assert_handled(&extract, &format!("extract, {what}"), &[&uri]);
            }
        }
        put_object(&client, &bucket, &key, valid).await;
    }
}

/// 600 pseudo-random bytes as a message body: SQS carries only XML characters, so the others
/// (and U+FFFD, which stands for bytes that are not UTF-8) are dropped.
fn random_body() -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..600)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|&c| (c >= ' ' || c == '\n' || c == '\t') && c < '\u{fffd}')
        .collect()
}

#[tokio::test]
async fn a_worker_fed_garbage_messages_goes_on_and_bundles_the_good_one() {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let bucket = new_bucket(&client, "badqueue").await;
    let lines = sources(&client, &bucket).await;
    put_object(
        &client,
        &bucket,
        "manifests/good.0.index",
        lines.concat().into_bytes(),
    )
    .await;
    let good = format!("s3://{bucket}/manifests/good.0.index");
    let dead = create_queue(
        endpoint,
        &s3bundler_testkit::unique_name("baddead"),
        30,
        None,
    )
    .await;
    let queue = create_queue(
        endpoint,
        &s3bundler_testkit::unique_name("badwork"),
        1,
        Some((&dead, 1)),
    )
    .await;
    let event = |object: serde_json::Value| {
        serde_json::json!({"Records": [{
            "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": object}
        }]})
        .to_string()
    };
    let valid_event = event(serde_json::json!({"key": "manifests/good.0.index"}));
    // Bodies that are no request: left for the redrive policy, which moves them to `dead`.
    let unreadable = [
        random_body(),
        valid_event[..valid_event.len() / 2].to_string(),
        serde_json::json!({"Type": "Notification", "Message": "{\"Records\": 5}"}).to_string(),
        event(serde_json::json!({"size": 5})),
    ];
    // Requests for manifests that cannot be read: released for another attempt later.
    let nowhere = format!("s3://{bucket}/manifests/nowhere.0.index");
    let too_long = format!("s3://{bucket}/{}", "k".repeat(100_000));
    for body in &unreadable {
        send(endpoint, &queue, body).await;
    }
    send(endpoint, &queue, &bucket_key_message(&nowhere)).await;
    send(endpoint, &queue, &bucket_key_message(&too_long)).await;
    send(endpoint, &queue, &bucket_key_message(&good)).await;

    let extra = ["--max-messages", "0", "--idle-timeout", "4"];
    let out = finish(
        spawn_s3bundler(endpoint, &worker_args(&queue, &bucket, &extra)),
        Duration::from_secs(60),
    )
    .await;
    // The first manifest that could not be read decides the exit code.
    assert_handled(&out, "the worker", &[&nowhere, &too_long[..40]]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("successfully archived {good}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        messages_left(endpoint, &queue).await,
        2,
        "the unreadable manifests' messages wait for another attempt"
    );
    let mut dead_bodies = receive_bodies(endpoint, &dead, 2).await;
    dead_bodies.sort();
    let mut expected = unreadable.to_vec();
    expected.sort();
    assert_eq!(
        dead_bodies, expected,
        "the garbage went to the dead-letter queue"
    );
}

/// A log piped to a file is text (`2>&1 | tee run.log` reads as on a terminal), with the level
/// once ("ERROR", never "ERROR ERROR"); in an ECS task it is JSON lines for the collector.
#[tokio::test]
async fn logs_are_text_when_piped_and_json_in_an_ecs_task() {
    let args = [
        "locate",
        "s3://some-bucket",
        "--manifests",
        "s3://m/p/",
        "--archives",
        "s3://a/p/",
    ];
    let out = s3bundler(moto::endpoint(), &args).await;
    assert_eq!(out.code, 2, "{out:?}");
    let line = out.stderr.lines().next().unwrap_or_default();
    assert!(!line.starts_with('{'), "{line}");
    assert_eq!(line.matches("ERROR").count(), 1, "{line}");
    assert!(line.contains("names no key"), "{line}");
    let ecs = [("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/x")];
    let out = s3bundler_with_env(moto::endpoint(), &args, &ecs).await;
    let line: serde_json::Value =
        serde_json::from_str(out.stderr.lines().next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stderr));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        !line["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ERROR"),
        "{line}"
    );
}

/// `-b` takes a bucket name: a URI or a bucket with a prefix is refused before any request,
/// saying where each part goes.
#[tokio::test]
async fn a_bucket_given_as_a_uri_or_with_a_prefix_is_refused_saying_where_each_part_goes() {
    for (bucket, expected) in [
        ("s3://archive", "give the bucket name alone: archive"),
        (
            "archive/manifests",
            "(archive) and the key prefix with -p (manifests)",
        ),
    ] {
        for command in [
            vec!["run", "-m", "s3://inv/manifest.json", "-b", bucket],
            vec!["group", "-m", "s3://inv/manifest.json", "-b", bucket],
            vec!["verify", "--manifests", "s3://m/p/", "-b", bucket],
        ] {
            let out = s3bundler(moto::endpoint(), &command).await;
            assert_eq!(out.code, 2, "{command:?}: {out:?}");
            assert!(out.stderr.contains(expected), "{command:?}: {}", out.stderr);
        }
    }
}
