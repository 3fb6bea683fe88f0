//! Benchmarks that print figures (never timed asserts). Each starts the fast local S3 server in
//! this process, generates its data, runs the release `s3bundler` binary beside this one as a
//! child process, and reports wall time, CPU time and peak RSS of that child.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use s3bundler_testkit::generate::{report, upload_report, DataFormat, InventorySpec};
use s3bundler_testkit::measure::measure;
use s3bundler_testkit::memory::{peak_pairs, Measured, COUNT_THRESHOLD};
use s3bundler_testkit::server::LocalS3;

#[derive(Parser)]
#[command(about = "s3bundler benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Group a generated inventory (CSV.gz, ORC or Parquet); for CSV, compare with `gzip -dc`
    /// of the same files.
    Group {
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// csv, orc or parquet.
        #[arg(long, default_value = "csv", value_parser = parse_format)]
        format: DataFormat,
        /// Rows per data file.
        #[arg(long, default_value_t = 1_000_000)]
        rows_per_file: u64,
        /// Data files s3bundler reads at once (its default: one per core, at most 4).
        #[arg(long)]
        readers: Option<u16>,
        /// Rows per Parquet row group.
        #[arg(long, default_value_t = 1 << 20)]
        row_group_rows: usize,
    },
    /// Bundle objects of one size and compare with a plain GET of the same objects at the
    /// same concurrency (the raw ceiling).
    Bundle {
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
        /// Bytes per object.
        #[arg(long, default_value_t = 4096)]
        size: u64,
        /// GETs in flight for both (default: s3bundler's own default, and the raw loop at
        /// each of 64, 128, 256 and 512, its best being the ceiling).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Passed to `s3bundler bundle --compress` (gzip or zstd).
        #[arg(long)]
        compress: Option<String>,
        /// Delay every request by this much at a proxy in front of the server (e.g. 20ms): the
        /// round trip of real S3, which a local server does not have.
        #[arg(long, value_parser = parse_latency)]
        latency: Option<std::time::Duration>,
    },
    /// The raw ceiling, run as its own process so that its CPU time and memory are measured
    /// exactly like s3bundler's: GET every key listed in a file (one per line), read the body,
    /// nothing else.
    #[command(hide = true)]
    RawGet {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        concurrency: usize,
        /// Without the SDK: each GET signed with aws-sigv4 and sent on a hyper client, what a
        /// leaner GetObject path would cost (no retries, no timeouts, no response parsing).
        #[arg(long)]
        lean: bool,
    },
    /// Instructions per object of the raw SDK GET loop, the lean GET loop (`raw-get --lean`)
    /// and `s3bundler bundle`, counted by
    /// valgrind (callgrind): unlike CPU time, the count does not move with what else the
    /// machine is doing. Each runs over `objects` and twice as many objects; the difference
    /// leaves out start-up.
    Instructions {
        #[arg(long, default_value_t = 2000)]
        objects: u64,
        /// Bytes per object.
        #[arg(long, default_value_t = 4096)]
        size: u64,
    },
    /// Bundle one manifest of small objects, then time `verify` of it, shallow and `--deep`,
    /// and `extract` of every object to another bucket.
    Verify {
        #[arg(long, default_value_t = 65_000)]
        objects: u64,
        /// Bytes per object.
        #[arg(long, default_value_t = 1024)]
        size: u64,
        /// `extract --concurrency`.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Peak RSS of `group`, `plan`, `verify`, `extract` and `bundle` over a small and a large
    /// input (inventory rows; manifest and index rows of one bundle; the objects of one
    /// manifest), side by side.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        small: u64,
        #[arg(long, default_value_t = 1_000_000)]
        large: u64,
        /// The inventory's format: csv, orc or parquet.
        #[arg(long, default_value = "csv", value_parser = parse_format)]
        format: DataFormat,
        /// Measure only these commands (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',', value_parser = parse_measured)]
        only: Vec<Measured>,
    },
}

fn parse_measured(name: &str) -> Result<Measured, String> {
    Measured::ALL
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| format!("unknown command `{name}`"))
}

fn parse_latency(text: &str) -> Result<std::time::Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(millis) => (millis, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| std::time::Duration::from_secs_f64(n * scale))
        .ok_or_else(|| format!("{text} is not a duration like 20ms or 0.5s"))
}

fn parse_format(name: &str) -> Result<DataFormat, String> {
    DataFormat::parse(name).ok_or_else(|| format!("unknown format `{name}`: csv, orc or parquet"))
}

fn s3bundler_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    exe.with_file_name("s3bundler")
}

async fn bench_group(
    format: DataFormat,
    rows: u64,
    rows_per_file: u64,
    readers: Option<u16>,
    row_group_rows: usize,
) {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = LocalS3::start(&scratch.path().join("s3"), 0).unwrap_or_else(|e| panic!("{e}"));
    let client = s3bundler_testkit::s3_client(&server.endpoint);
    let bucket = "bench-inventory";
    let _ = client.create_bucket().bucket(bucket).send().await;

    let spec = InventorySpec {
        data_files: rows.div_ceil(rows_per_file).max(1) as usize,
        row_group_rows,
        ..InventorySpec::new("bench-source", rows)
    };
    let generated = Instant::now();
    let report = report(&spec, format, false);
    let local_files: Vec<PathBuf> = report
        .data_files
        .iter()
        .enumerate()
        .map(|(n, data)| {
            let path = scratch.path().join(format!("data-{n}"));
            std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
            path
        })
        .collect();
    let compressed: u64 = report.data_files.iter().map(|f| f.len() as u64).sum();
    let uploaded = upload_report(&client, bucket, "inventory/", &spec, report).await;
    eprintln!(
        "generated {rows} rows ({compressed} bytes of {}) in {:.1}s",
        format.manifest_name(),
        generated.elapsed().as_secs_f64()
    );

    let mut command = Command::new(s3bundler_binary());
    command
        .args([
            "group",
            "-m",
            &uploaded.manifest_uri,
            "-b",
            bucket,
            "--json",
        ])
        .args(readers.map(|n| format!("--readers={n}")))
        .envs(s3bundler_testkit::cli_env(&server.endpoint))
        // As over HTTPS to AWS, where bodies are not SHA-256-signed.
        .env("S3BUNDLER_SIGN_PAYLOAD", "never");
    let group = measure(&mut command);
    assert!(
        group.status.success(),
        "s3bundler group failed: {}",
        group.stdout
    );
    let summary: serde_json::Value = serde_json::from_str(&group.stdout).unwrap_or_default();
    assert_eq!(
        summary["rows_seen"].as_u64(),
        Some(uploaded.expected.rows),
        "group read every row"
    );

    let rows_f = rows as f64;
    let name = match format {
        DataFormat::Csv => "CSV.gz",
        other => other.manifest_name(),
    };
    let readers = readers.map_or("default".to_string(), |n| n.to_string());
    let groups = if format == DataFormat::Parquet {
        format!(", {row_group_rows}-row row groups")
    } else {
        String::new()
    };
    println!("group benchmark: {rows} rows in {} {name} data files ({:.1} MiB{groups}), {readers} readers, local s3s server in the bench process", local_files.len(), compressed as f64 / 1048576.0);
    println!(
        "  s3bundler group wall       {:.2} s  ({:.0} rows/s)",
        group.wall_seconds,
        rows_f / group.wall_seconds
    );
    println!(
        "  s3bundler group CPU        {:.2} s  ({:.0} rows per CPU-second)",
        group.cpu_seconds,
        rows_f / group.cpu_seconds
    );
    if format == DataFormat::Csv {
        let gzip = gzip_dc(&local_files);
        println!("  gzip -dc of the same files {:.2} s", gzip);
        println!(
            "  wall time / gzip -dc       {:.2}x",
            group.wall_seconds / gzip
        );
    }
    println!("  peak RSS                   {:.1} MiB", group.max_rss_mib);
}

/// Wall seconds of `gzip -dc` over the files, one after another.
fn gzip_dc(files: &[PathBuf]) -> f64 {
    let started = Instant::now();
    for file in files {
        let status = Command::new("gzip")
            .arg("-dc")
            .arg(Path::new(file))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("gzip: {e}"));
        assert!(status.success());
    }
    started.elapsed().as_secs_f64()
}

/// The raw loop's concurrencies tried when none is given: its best is the ceiling.
const RAW_CONCURRENCIES: [usize; 4] = [64, 128, 256, 512];

async fn bench_bundle(
    objects: u64,
    size: u64,
    concurrency: Option<usize>,
    compress: Option<&str>,
    latency: Option<std::time::Duration>,
) {
    use s3bundler_testkit::faults::{FaultPlan, FaultProxy};
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (server, _client, keys) = source_objects(scratch.path(), objects, size).await;
    let proxy = latency.map(|latency| {
        FaultProxy::start(
            &server.endpoint,
            FaultPlan {
                latency: Some(latency),
                ..FaultPlan::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    });
    let endpoint = proxy.as_ref().map_or(&server.endpoint, |p| &p.endpoint);

    let keys_file = scratch.path().join("keys");
    std::fs::write(&keys_file, keys.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    let n = objects as f64;
    let megabytes = (objects * size) as f64 / 1e6;
    let compression = compress
        .map(|c| format!(", compressed with {c}"))
        .unwrap_or_default();
    let delay = latency
        .map(|l| format!(", {} ms added to every request at a proxy", l.as_millis()))
        .unwrap_or_default();
    let settings = concurrency.map_or("default settings".to_string(), |c| {
        format!("concurrency {c}")
    });
    println!("bundle benchmark: {objects} objects of {size} bytes, s3bundler at {settings}{compression}{delay}, local s3s server in the bench process, upload bodies unsigned as over HTTPS");
    let mut best: Option<(usize, s3bundler_testkit::measure::ChildUsage)> = None;
    for raw_concurrency in concurrency.map_or(RAW_CONCURRENCIES.to_vec(), |c| vec![c]) {
        let raw = measure(&mut raw_get_command(
            endpoint,
            &keys_file,
            raw_concurrency,
            false,
        ));
        check_raw_read(&raw, objects * size);
        println!(
            "  raw GET, {raw_concurrency:>3} in flight    {:.2} s  ({:.0} objects/s, {:.1} MB/s), client CPU {:.1} us per object, peak RSS {:.1} MiB",
            raw.wall_seconds,
            n / raw.wall_seconds,
            megabytes / raw.wall_seconds,
            1e6 * raw.cpu_seconds / n,
            raw.max_rss_mib
        );
        if best
            .as_ref()
            .is_none_or(|(_, b)| raw.wall_seconds < b.wall_seconds)
        {
            best = Some((raw_concurrency, raw));
        }
    }
    let Some((best_concurrency, raw)) = best else {
        return;
    };
    println!(
        "  raw GET ceiling            {:.2} s  ({:.0} objects/s at {best_concurrency} in flight, {:.1} MB/s)",
        raw.wall_seconds,
        n / raw.wall_seconds,
        megabytes / raw.wall_seconds
    );
    print_load("raw GET", &raw);
    let lean = measure(&mut raw_get_command(
        endpoint,
        &keys_file,
        best_concurrency,
        true,
    ));
    check_raw_read(&lean, objects * size);
    println!(
        "  lean GET loop (no SDK)     {:.2} s  ({:.0} objects/s at {best_concurrency} in flight), client CPU {:.1} us per object, {:.2}x the raw loop's",
        lean.wall_seconds,
        n / lean.wall_seconds,
        1e6 * lean.cpu_seconds / n,
        lean.cpu_seconds / raw.cpu_seconds.max(1e-9)
    );

    let mut command = bundle_command(endpoint);
    if let Some(concurrency) = concurrency {
        command.args(["--concurrency", &concurrency.to_string()]);
    }
    if let Some(compression) = compress {
        command.args(["--compress", compression]);
    }
    let bundle = measure(&mut command);
    assert!(
        bundle.status.success(),
        "s3bundler bundle failed: {}",
        bundle.stdout
    );
    let report: serde_json::Value = serde_json::from_str(&bundle.stdout).unwrap_or_default();
    assert_eq!(
        report["objects_archived"].as_u64(),
        Some(objects),
        "every object archived"
    );
    println!(
        "  s3bundler bundle wall      {:.2} s  ({:.0} objects/s, {:.1} MB/s)",
        bundle.wall_seconds,
        n / bundle.wall_seconds,
        megabytes / bundle.wall_seconds
    );
    println!(
        "  bundle / raw ceiling       {:.0}%",
        100.0 * raw.wall_seconds / bundle.wall_seconds
    );
    println!(
        "  s3bundler CPU              {:.2} s  ({:.1} us per object, {:.2}x the raw loop's at its best)",
        bundle.cpu_seconds,
        1e6 * bundle.cpu_seconds / n,
        bundle.cpu_seconds / raw.cpu_seconds.max(1e-9)
    );
    println!("  peak RSS                   {:.1} MiB", bundle.max_rss_mib);
    print_load("bundle", &bundle);
}

/// How busy the machine's cores were during a phase: client plus in-process server CPU over
/// the wall time of all cores. Near 100% the ceiling is the machine, not the client.
fn print_load(phase: &str, usage: &s3bundler_testkit::measure::ChildUsage) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  {phase:<26} server CPU {:.2} s; client+server use {:.0}% of {cores} cores",
        usage.own_cpu_seconds,
        100.0 * (usage.cpu_seconds + usage.own_cpu_seconds) / (usage.wall_seconds * cores)
    );
}

/// GETs every key and prints the number of body bytes read.
async fn raw_get(endpoint: &str, bucket: &str, keys: &Path, concurrency: usize) {
    use futures::StreamExt;

    let client = s3bundler_testkit::s3_client(endpoint);
    let keys = std::fs::read_to_string(keys).unwrap_or_else(|e| panic!("{e}"));
    let gets = futures::stream::iter(keys.lines())
        .map(|key| {
            let client = client.clone();
            async move {
                s3bundler_testkit::get_bytes(&client, bucket, key)
                    .await
                    .len()
            }
        })
        .buffer_unordered(concurrency);
    let read: usize = gets.fold(0, |total, n| async move { total + n }).await;
    println!("{read}");
}

/// `s3bundler bundle` of the benchmark's manifest into its archive bucket, printing JSON.
fn bundle_command(endpoint: &str) -> Command {
    let mut command = Command::new(s3bundler_binary());
    command
        .args(["bundle", "-m", &format!("s3://{ARCHIVE}/{MANIFEST}")])
        .args(["-b", ARCHIVE, "--json"])
        .envs(s3bundler_testkit::cli_env(endpoint))
        // As over HTTPS to AWS, where bodies are not SHA-256-signed (the raw loop uploads none).
        .env("S3BUNDLER_SIGN_PAYLOAD", "never");
    command
}

/// GETs in flight for every side of the instruction count: valgrind runs one thread at a time.
const COUNTED_CONCURRENCY: usize = 64;

/// This binary's raw GET loop over the keys in `keys_file`, with the SDK or without (`lean`).
fn raw_get_command(endpoint: &str, keys_file: &Path, concurrency: usize, lean: bool) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")));
    command
        .args(["raw-get", "--endpoint", endpoint, "--bucket", SOURCE])
        .arg("--keys")
        .arg(keys_file)
        .args(["--concurrency", &concurrency.to_string()]);
    if lean {
        command.arg("--lean");
    }
    command
}

fn check_raw_read(raw: &s3bundler_testkit::measure::ChildUsage, bytes: u64) {
    assert!(raw.status.success(), "raw GET failed");
    assert_eq!(
        raw.stdout.trim(),
        bytes.to_string(),
        "raw GET read every byte"
    );
}

async fn bench_instructions(objects: u64, size: u64) {
    let mut counts = Vec::new();
    for run_objects in [objects, 2 * objects] {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (server, _client, keys) = source_objects(scratch.path(), run_objects, size).await;
        let keys_file = scratch.path().join("keys");
        std::fs::write(&keys_file, keys.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        let raw = instructions(&mut raw_get_command(
            &server.endpoint,
            &keys_file,
            COUNTED_CONCURRENCY,
            false,
        ));
        let lean = instructions(&mut raw_get_command(
            &server.endpoint,
            &keys_file,
            COUNTED_CONCURRENCY,
            true,
        ));
        let bundle = instructions(
            bundle_command(&server.endpoint)
                .args(["--concurrency", &COUNTED_CONCURRENCY.to_string()]),
        );
        counts.push([raw, lean, bundle]);
    }
    let per_object = |i: usize| counts[1][i].saturating_sub(counts[0][i]) as f64 / objects as f64;
    let (raw, lean, bundle) = (per_object(0), per_object(1), per_object(2));
    println!("instruction count: {objects} and {} objects of {size} bytes, {COUNTED_CONCURRENCY} GETs in flight, under valgrind --tool=callgrind, local s3s server in the bench process, upload bodies unsigned as over HTTPS", 2 * objects);
    println!("  raw GET loop               {raw:.0} instructions per object");
    println!(
        "  lean GET loop              {lean:.0} instructions per object, {:.2}x the raw loop's (aws-sigv4 on hyper, no SDK)",
        lean / raw.max(1.0)
    );
    println!(
        "  s3bundler bundle           {:.0} instructions per object, {:.2}x the raw loop's",
        bundle,
        bundle / raw.max(1.0)
    );
}

/// Runs `command` under callgrind and returns the instructions it executed.
fn instructions(command: &mut Command) -> u64 {
    let out = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    let mut counted = Command::new("valgrind");
    counted
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.path().display()))
        .arg(command.get_program())
        .args(command.get_args())
        .envs(
            command
                .get_envs()
                .filter_map(|(name, value)| value.map(|v| (name, v))),
        );
    let output = counted
        .output()
        .unwrap_or_else(|e| panic!("cannot run valgrind (is it installed?): {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed under valgrind: {stderr}"
    );
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output: {stderr}"))
}

/// The raw loop without the SDK's orchestrator (configuration layers, interceptors, endpoint
/// rules, the user agent, response parsing). The bench's keys need no percent-encoding.
async fn raw_get_lean(endpoint: &str, bucket: &str, keys: &Path, concurrency: usize) {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    use futures::StreamExt;
    use http_body_util::BodyExt;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(
            s3bundler_testkit::ACCESS_KEY,
            s3bundler_testkit::SECRET_KEY,
            None,
            None,
            "bench",
        )
        .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let host = endpoint.trim_start_matches("http://");
    let keys = std::fs::read_to_string(keys).unwrap_or_else(|e| panic!("{e}"));
    let gets = futures::stream::iter(keys.lines())
        .map(|key| {
            let (client, identity, settings) = (&client, &identity, settings.clone());
            async move {
                let uri = format!("{endpoint}/{bucket}/{key}");
                let params = aws_sigv4::sign::v4::SigningParams::builder()
                    .identity(identity)
                    .region(s3bundler_testkit::REGION)
                    .name("s3")
                    .time(std::time::SystemTime::now())
                    .settings(settings)
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"))
                    .into();
                let signable = SignableRequest::new(
                    "GET",
                    uri.as_str(),
                    [("host", host)].into_iter(),
                    SignableBody::UnsignedPayload,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let (instructions, _) = sign(signable, &params)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .into_parts();
                let mut request = http::Request::get(uri.as_str())
                    .header("host", host)
                    .body(http_body_util::Empty::new())
                    .unwrap_or_else(|e| panic!("{e}"));
                instructions.apply_to_request_http1x(&mut request);
                let response = client
                    .request(request)
                    .await
                    .unwrap_or_else(|e| panic!("GET {uri}: {e}"));
                assert!(
                    response.status().is_success(),
                    "GET {uri}: {}",
                    response.status()
                );
                let body = response.into_body().collect().await;
                body.unwrap_or_else(|e| panic!("GET {uri}: {e}"))
                    .to_bytes()
                    .len()
            }
        })
        .buffer_unordered(concurrency);
    let read: usize = gets.fold(0, |total, n| async move { total + n }).await;
    println!("{read}");
}

const SOURCE: &str = "bench-source";
const ARCHIVE: &str = "bench-archive";
const MANIFEST: &str = "m/bench.0.index";

/// Starts a server under `dir` holding `objects` objects of `size` bytes in `bench-source` and
/// their manifest at `s3://bench-archive/m/bench.0.index`; returns the server, a client and the
/// keys.
async fn source_objects(
    dir: &Path,
    objects: u64,
    size: u64,
) -> (LocalS3, aws_sdk_s3::Client, Vec<String>) {
    let server = LocalS3::start(&dir.join("s3"), 0).unwrap_or_else(|e| panic!("{e}"));
    let client = s3bundler_testkit::s3_client(&server.endpoint);
    for bucket in [SOURCE, ARCHIVE] {
        let _ = client.create_bucket().bucket(bucket).send().await;
    }
    // Objects are written as files beside the server: 100,000 PUTs would take longer than the
    // benchmark itself. The manifest uses the original 3-column format.
    let keys: Vec<String> = (0..objects)
        .map(|i| format!("obj/{:04}/{i}", i / 1000))
        .collect();
    let mut manifest = String::new();
    for (i, key) in keys.iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|b| (b as u8).wrapping_add(i as u8)).collect();
        server
            .write_object_file(SOURCE, key, &body)
            .unwrap_or_else(|e| panic!("{e}"));
        manifest.push_str(&format!("{SOURCE},{key},{size}\n"));
    }
    s3bundler_testkit::put_object(&client, ARCHIVE, MANIFEST, manifest.into_bytes()).await;
    (server, client, keys)
}

async fn bench_verify(objects: u64, size: u64, concurrency: usize) {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (server, client, _keys) = source_objects(scratch.path(), objects, size).await;
    let env = s3bundler_testkit::cli_env(&server.endpoint);
    let manifest = format!("s3://{ARCHIVE}/{MANIFEST}");
    let bundle = measure(
        Command::new(s3bundler_binary())
            .args(["bundle", "-m", &manifest, "-b", ARCHIVE, "--json"])
            .envs(env.clone()),
    );
    assert!(bundle.status.success(), "bundle failed: {}", bundle.stdout);
    println!("verify benchmark: one manifest of {objects} objects of {size} bytes (bundled in {:.2} s), local s3s server in the bench process", bundle.wall_seconds);
    for deep in [false, true] {
        let mut command = Command::new(s3bundler_binary());
        command
            .args([
                "verify",
                "--manifests",
                &format!("s3://{ARCHIVE}/m/"),
                "-b",
                ARCHIVE,
                "--json",
            ])
            .envs(env.clone());
        if deep {
            command.arg("--deep");
        }
        let run = measure(&mut command);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        assert!(
            run.status.success() && report["totals"]["verified"].as_u64() == Some(objects),
            "verify failed: {}",
            run.stdout
        );
        println!(
            "  verify{:<7}  {:.2} s wall ({:.0} objects/s), {:.2} s CPU, peak RSS {:.1} MiB",
            if deep { " --deep" } else { "" },
            run.wall_seconds,
            objects as f64 / run.wall_seconds,
            run.cpu_seconds,
            run.max_rss_mib
        );
    }
    let bundled: serde_json::Value = serde_json::from_str(&bundle.stdout).unwrap_or_default();
    let archive = bundled["archive"].as_str().unwrap_or("").to_string();
    let _ = client.create_bucket().bucket("bench-restore").send().await;
    let extract = measure(
        Command::new(s3bundler_binary())
            .args(["extract", &archive, "--to", "s3://bench-restore", "--json"])
            .args(["--concurrency", &concurrency.to_string()])
            .envs(env),
    );
    assert!(extract.status.success(), "extract failed");
    println!(
        "  extract --to  {:.2} s wall ({:.0} objects/s, one range GET and one PUT each, concurrency {concurrency}), {:.2} s CPU, peak RSS {:.1} MiB",
        extract.wall_seconds,
        objects as f64 / extract.wall_seconds,
        extract.cpu_seconds,
        extract.max_rss_mib
    );
}

async fn bench_memory(small: u64, large: u64, format: DataFormat, only: &[Measured]) {
    let commands = if only.is_empty() {
        &Measured::ALL[..]
    } else {
        only
    };
    let pairs = peak_pairs(&s3bundler_binary(), commands, small, large, format).await;
    println!("memory benchmark: peak RSS at {small} and {large} rows (inventory in {}, -c {COUNT_THRESHOLD}; one bundle of members of 0-100 bytes, extract of its .tar.gz to a folder, bundle of one manifest of every member's object at default settings), local s3s server in the bench process", format.manifest_name());
    println!(
        "  {:<8} {:>12} {:>12} {:>10}  input",
        "command", "small MiB", "large MiB", "growth"
    );
    for pair in pairs {
        println!(
            "  {:<8} {:>12.1} {:>12.1} {:>+10.1}  {}",
            pair.command.name(),
            pair.small_mib,
            pair.large_mib,
            pair.growth_mib(),
            pair.command.input()
        );
    }
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Bench::Group {
            rows,
            format,
            rows_per_file,
            readers,
            row_group_rows,
        } => bench_group(format, rows, rows_per_file, readers, row_group_rows).await,
        Bench::Bundle {
            objects,
            size,
            concurrency,
            compress,
            latency,
        } => bench_bundle(objects, size, concurrency, compress.as_deref(), latency).await,
        Bench::RawGet {
            endpoint,
            bucket,
            keys,
            concurrency,
            lean: false,
        } => raw_get(&endpoint, &bucket, &keys, concurrency).await,
        Bench::RawGet {
            endpoint,
            bucket,
            keys,
            concurrency,
            lean: true,
        } => raw_get_lean(&endpoint, &bucket, &keys, concurrency).await,
        Bench::Instructions { objects, size } => bench_instructions(objects, size).await,
        Bench::Verify {
            objects,
            size,
            concurrency,
        } => bench_verify(objects, size, concurrency).await,
        Bench::Memory {
            small,
            large,
            format,
            only,
        } => bench_memory(small, large, format, &only).await,
    }
}
