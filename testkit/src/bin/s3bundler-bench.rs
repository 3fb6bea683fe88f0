//! Benchmarks that print figures (never timed asserts). Each starts the fast local S3 server in
//! this process, generates its data, runs the release `s3bundler` binary beside this one as a
//! child process, and reports wall time, CPU time and peak RSS of that child.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use s3bundler_testkit::generate::{csv_report, upload_report, InventorySpec};
use s3bundler_testkit::measure::measure;
use s3bundler_testkit::server::LocalS3;

#[derive(Parser)]
#[command(about = "s3bundler benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Group a generated CSV.gz inventory and compare with `gzip -dc` of the same files.
    Group {
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Rows per data file.
        #[arg(long, default_value_t = 1_000_000)]
        rows_per_file: u64,
    },
    /// Bundle objects of one size and compare with a plain GET of the same objects at the
    /// same concurrency (the raw ceiling).
    Bundle {
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
        /// Bytes per object.
        #[arg(long, default_value_t = 4096)]
        size: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Passed to `s3bundler bundle --compress` (gzip or zstd).
        #[arg(long)]
        compress: Option<String>,
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
}

fn s3bundler_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    exe.with_file_name("s3bundler")
}

async fn bench_group(rows: u64, rows_per_file: u64) {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = LocalS3::start(&scratch.path().join("s3"), 0).unwrap_or_else(|e| panic!("{e}"));
    let client = s3bundler_testkit::s3_client(&server.endpoint);
    let bucket = "bench-inventory";
    let _ = client.create_bucket().bucket(bucket).send().await;

    let spec = InventorySpec {
        data_files: rows.div_ceil(rows_per_file).max(1) as usize,
        ..InventorySpec::new("bench-source", rows)
    };
    let generated = Instant::now();
    let report = csv_report(&spec, false);
    let local_files: Vec<PathBuf> = report
        .data_files
        .iter()
        .enumerate()
        .map(|(n, data)| {
            let path = scratch.path().join(format!("data-{n}.csv.gz"));
            std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
            path
        })
        .collect();
    let compressed: u64 = report.data_files.iter().map(|f| f.len() as u64).sum();
    let uploaded = upload_report(&client, bucket, "inventory/", &spec, report).await;
    eprintln!(
        "generated {rows} rows ({compressed} bytes gzipped) in {:.1}s",
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
        .envs(s3bundler_testkit::cli_env(&server.endpoint));
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

    let gzip = gzip_dc(&local_files);
    let rows_f = rows as f64;
    println!("group benchmark: {rows} rows in {} CSV.gz data files ({:.1} MiB), local s3s server in the bench process", local_files.len(), compressed as f64 / 1048576.0);
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
    println!("  gzip -dc of the same files {:.2} s", gzip);
    println!(
        "  wall time / gzip -dc       {:.2}x",
        group.wall_seconds / gzip
    );
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

async fn bench_bundle(objects: u64, size: u64, concurrency: usize, compress: Option<&str>) {
    use futures::StreamExt;

    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (server, client, keys) = source_objects(scratch.path(), objects, size).await;
    let (source, archive) = (SOURCE, ARCHIVE);

    // The raw ceiling: GET every object and read its body, nothing else.
    let started = Instant::now();
    let gets = futures::stream::iter(keys.iter())
        .map(|key| {
            let client = client.clone();
            async move {
                let out = client
                    .get_object()
                    .bucket(source)
                    .key(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                out.body
                    .collect()
                    .await
                    .map(|b| b.into_bytes().len())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(concurrency);
    let read: usize = gets.fold(0, |total, n| async move { total + n }).await;
    let raw_seconds = started.elapsed().as_secs_f64();
    assert_eq!(read as u64, objects * size);

    let mut command = Command::new(s3bundler_binary());
    command
        .args([
            "bundle",
            "-m",
            &format!("s3://{archive}/{MANIFEST}"),
            "-b",
            archive,
            "--concurrency",
            &concurrency.to_string(),
            "--json",
        ])
        .envs(s3bundler_testkit::cli_env(&server.endpoint));
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

    let n = objects as f64;
    let megabytes = (objects * size) as f64 / 1e6;
    let compression = compress
        .map(|c| format!(", compressed with {c}"))
        .unwrap_or_default();
    println!("bundle benchmark: {objects} objects of {size} bytes, concurrency {concurrency}{compression}, local s3s server in the bench process");
    println!(
        "  raw GET ceiling            {:.2} s  ({:.0} objects/s, {:.1} MB/s)",
        raw_seconds,
        n / raw_seconds,
        megabytes / raw_seconds
    );
    println!(
        "  s3bundler bundle wall      {:.2} s  ({:.0} objects/s, {:.1} MB/s)",
        bundle.wall_seconds,
        n / bundle.wall_seconds,
        megabytes / bundle.wall_seconds
    );
    println!(
        "  bundle / raw ceiling       {:.0}%",
        100.0 * raw_seconds / bundle.wall_seconds
    );
    println!(
        "  s3bundler CPU              {:.2} s  ({:.1} us per object)",
        bundle.cpu_seconds,
        1e6 * bundle.cpu_seconds / n
    );
    println!("  peak RSS                   {:.1} MiB", bundle.max_rss_mib);
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

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Bench::Group {
            rows,
            rows_per_file,
        } => bench_group(rows, rows_per_file).await,
        Bench::Bundle {
            objects,
            size,
            concurrency,
            compress,
        } => bench_bundle(objects, size, concurrency, compress.as_deref()).await,
        Bench::Verify {
            objects,
            size,
            concurrency,
        } => bench_verify(objects, size, concurrency).await,
    }
}
