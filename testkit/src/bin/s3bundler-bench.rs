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

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Bench::Group {
            rows,
            rows_per_file,
        } => bench_group(rows, rows_per_file).await,
    }
}
