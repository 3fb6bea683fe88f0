//! Runs the local S3 server and generates inventories, for the demo and for benchmarks.

use clap::{Parser, Subcommand};
use s3bundler_testkit::generate::{create_objects, csv_report, upload_report, InventorySpec};
use s3bundler_testkit::server::LocalS3;

#[derive(Parser)]
#[command(about = "Local S3 server and inventory generator for s3bundler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve S3 from a local directory until killed (access key s3bundler-test).
    Serve {
        #[arg(long)]
        root: std::path::PathBuf,
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Write a generated CSV inventory report (and optionally its objects) to a server.
    Generate {
        #[arg(long)]
        endpoint: String,
        /// Bucket for the report (created if missing).
        #[arg(long)]
        inventory_bucket: String,
        /// Bucket the report describes (created if missing).
        #[arg(long)]
        source_bucket: String,
        #[arg(long)]
        objects: u64,
        #[arg(long, default_value_t = 1)]
        data_files: usize,
        #[arg(long)]
        versioned: bool,
        /// Also put the objects themselves into the source bucket.
        #[arg(long)]
        create_objects: bool,
        /// Another bucket to create if missing, e.g. the archive bucket (repeat for several).
        #[arg(long = "create-bucket")]
        create_buckets: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Serve { root, port } => {
            let server =
                LocalS3::start(&root, port).unwrap_or_else(|e| panic!("cannot start: {e}"));
            println!("{}", server.endpoint);
            std::future::pending::<()>().await;
        }
        Command::Generate {
            endpoint,
            inventory_bucket,
            source_bucket,
            objects,
            data_files,
            versioned,
            create_objects: with_objects,
            create_buckets,
            seed,
        } => {
            let client = s3bundler_testkit::s3_client(&endpoint);
            for bucket in [&inventory_bucket, &source_bucket]
                .into_iter()
                .chain(&create_buckets)
            {
                let _ = client.create_bucket().bucket(bucket.as_str()).send().await;
            }
            // The local server stores objects as files: no 1,024-byte keys when it must hold them.
            let spec = InventorySpec {
                versioned,
                data_files,
                seed,
                long_keys: !with_objects,
                ..InventorySpec::new(&source_bucket, objects)
            };
            let report = upload_report(
                &client,
                &inventory_bucket,
                "inventory/",
                &spec,
                csv_report(&spec, with_objects),
            )
            .await;
            if with_objects {
                let created = create_objects(&client, &spec, 32, false).await;
                eprintln!("created {created} objects in s3://{source_bucket}");
            }
            eprintln!(
                "inventory of {} rows ({} selected by default); manifest:",
                report.expected.rows, report.expected.selected
            );
            println!("{}", report.manifest_uri);
        }
    }
}
