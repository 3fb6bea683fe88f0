//! `run`: group an inventory and bundle every manifest in one process. A manifest whose index
//! already exists is skipped, so an interrupted run resumes where it stopped.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_config::SdkConfig;
use futures_util::StreamExt;
use serde::Serialize;
use tracing::error;

use super::bundle::BundleOptions;
use super::group::{group_inventory, GroupArgs, GroupOutcome, GroupingOptions, InventoryArg};
use crate::archive::records::DlqReason;
use crate::aws::AwsOptions;
use crate::bundle::{bundle_manifest, BundleReport, BundleSettings};
use crate::error::{Error, ExitCode, Result};
use crate::metrics::{self, Counts};
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::{human_bytes, ByteSize};

/// `s3bundler run`. Group options keep their short forms (`-p -k -s -c -i -g`); bundle options
/// that would clash with them are long only (`--archive-prefix`, `--maxsize`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Bucket for archives, indexes, big-object copies and (unless --manifest-bucket) the bundle
    /// manifests.
    #[arg(short = 'b', long = "bucket", value_name = "ARCHIVE_BUCKET", value_parser = crate::s3uri::parse_bucket)]
    pub bucket: String,
    /// Bucket for the bundle manifests (default: the archive bucket).
    #[arg(long, value_name = "BUCKET", value_parser = crate::s3uri::parse_bucket)]
    pub manifest_bucket: Option<String>,
    /// Key prefix for the bundle manifests.
    #[arg(short = 'p', long = "prefix", default_value = "s3grouper-output")]
    pub prefix: String,
    /// Name part of each bundle manifest: `<folders>-<KEY>.<N>.index`.
    #[arg(short = 'k', long = "key", default_value = "manifest")]
    pub key: String,
    #[command(flatten)]
    pub grouping: GroupingOptions,
    /// Key prefix for archives, indexes and big-object copies.
    #[arg(long, default_value = "")]
    pub archive_prefix: String,
    /// Objects bigger than this are copied server-side to bigobjects/ instead of archived.
    #[arg(long = "maxsize", value_name = "SIZE", default_value = "2GiB")]
    pub max_size: ByteSize,
    #[command(flatten)]
    pub options: BundleOptions,
    /// Manifests bundled at once (each with its own --concurrency and --max-in-flight).
    #[arg(long, default_value_t = 2)]
    pub parallel_manifests: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `run` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub inventory: String,
    pub objects_selected: u64,
    /// Skipped because earlier runs grouped them, as `earlier_state` records.
    pub objects_already_grouped: u64,
    pub bytes_already_grouped: u64,
    pub earlier_state: Option<String>,
    pub manifests: u64,
    /// Manifests whose index already existed (done by an earlier run).
    pub manifests_skipped: u64,
    pub manifests_failed: u64,
    pub objects_archived: u64,
    pub bytes_archived: u64,
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub failed: BTreeMap<DlqReason, u64>,
    pub archives: Vec<String>,
    pub elapsed_seconds: f64,
}

/// How one manifest ended.
enum ManifestOutcome {
    AlreadyDone,
    Bundled(BundleReport),
    Failed(Error),
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &RunArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let started = Instant::now();
    let group_args = GroupArgs {
        inventory: args.inventory.clone(),
        bucket: args
            .manifest_bucket
            .clone()
            .unwrap_or_else(|| args.bucket.clone()),
        prefix: args.prefix.clone(),
        key: args.key.clone(),
        grouping: args.grouping.clone(),
        queue: None,
        json: false,
    };
    let grouped = group_inventory(aws, config, &group_args, shutdown.clone()).await?;
    let s3 = aws.s3(config);
    let mut settings = args
        .options
        .settings(&args.bucket, &args.archive_prefix, args.max_size);
    settings.progress =
        crate::progress::objects_bar(Some(grouped.stats.objects_selected), "bundling");
    let outcomes: Vec<(String, ManifestOutcome)> =
        futures_util::stream::iter(grouped.manifests.iter())
            .map(|manifest| {
                let (s3, settings, shutdown) = (&s3, &settings, shutdown.clone());
                async move {
                    let outcome = bundle_unless_done(s3, &manifest.uri, settings, shutdown).await;
                    if matches!(outcome, ManifestOutcome::AlreadyDone) {
                        settings.progress.inc(manifest.objects);
                    }
                    (manifest.uri.clone(), outcome)
                }
            })
            .buffer_unordered(args.parallel_manifests.max(1))
            .collect()
            .await;
    settings.progress.finish_and_clear();
    let (summary, first_error) = summarize(&grouped, outcomes, started);
    print_summary(&summary, args.json);
    let counts = Counts {
        objects_archived: summary.objects_archived,
        bytes_archived: summary.bytes_archived,
        objects_copied: summary.objects_copied,
        objects_failed: summary.failed.clone(),
        manifests_completed: summary.manifests
            - summary.manifests_skipped
            - summary.manifests_failed,
        errors: summary.manifests_failed,
    };
    metrics::emit(args.options.metrics_format(), &counts);
    match first_error {
        Some(error) => Err(error),
        None if summary.failed.values().sum::<u64>() > 0 => Ok(ExitCode::Partial),
        None => Ok(ExitCode::Success),
    }
}

async fn bundle_unless_done(
    s3: &S3,
    manifest: &str,
    settings: &BundleSettings,
    shutdown: Shutdown,
) -> ManifestOutcome {
    let uri: S3Uri = match manifest.parse() {
        Ok(uri) => uri,
        Err(e) => return ManifestOutcome::Failed(Error::Usage(e)),
    };
    match bundle_manifest(s3, &uri, settings, shutdown).await {
        Ok(report) if report.already_done => ManifestOutcome::AlreadyDone,
        Ok(report) => ManifestOutcome::Bundled(report),
        Err(failure) => {
            error!("{manifest} was not bundled: {failure}");
            ManifestOutcome::Failed(failure)
        }
    }
}

fn summarize(
    grouped: &GroupOutcome,
    outcomes: Vec<(String, ManifestOutcome)>,
    started: Instant,
) -> (RunSummary, Option<Error>) {
    let mut summary = RunSummary {
        inventory: grouped.inventory.clone(),
        objects_selected: grouped.stats.objects_selected,
        objects_already_grouped: grouped.stats.objects_already_grouped,
        bytes_already_grouped: grouped.stats.bytes_already_grouped,
        earlier_state: grouped.earlier_state.clone(),
        manifests: outcomes.len() as u64,
        ..RunSummary::default()
    };
    let mut first_error = None;
    for (_, outcome) in outcomes {
        match outcome {
            ManifestOutcome::AlreadyDone => summary.manifests_skipped += 1,
            ManifestOutcome::Failed(error) => {
                summary.manifests_failed += 1;
                first_error.get_or_insert(error);
            }
            ManifestOutcome::Bundled(report) => {
                summary.objects_archived += report.objects_archived;
                summary.bytes_archived += report.bytes_archived;
                summary.objects_copied += report.objects_copied;
                summary.bytes_copied += report.bytes_copied;
                for (reason, n) in report.failed {
                    *summary.failed.entry(reason).or_default() += n;
                }
                summary.archives.extend(report.archive);
            }
        }
    }
    summary.archives.sort();
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    (summary, first_error)
}

fn print_summary(summary: &RunSummary, json: bool) {
    if json {
        super::print_json(summary);
        return;
    }
    let failed = super::counts_line(&summary.failed);
    let rate = (summary.objects_archived + summary.objects_copied) as f64
        / summary.elapsed_seconds.max(1e-9);
    println!("ran {}", summary.inventory);
    println!(
        "  selected   {} objects in {} manifests",
        summary.objects_selected, summary.manifests
    );
    if let Some(earlier) = &summary.earlier_state {
        println!(
            "  skipped    {} objects ({}) already grouped, as {earlier} records",
            summary.objects_already_grouped,
            human_bytes(summary.bytes_already_grouped)
        );
    }
    println!(
        "  manifests  {} bundled, {} already done, {} failed",
        summary.manifests - summary.manifests_skipped - summary.manifests_failed,
        summary.manifests_skipped,
        summary.manifests_failed
    );
    println!(
        "  archived   {} objects ({}) in {} archives",
        summary.objects_archived,
        human_bytes(summary.bytes_archived),
        summary.archives.len()
    );
    println!(
        "  copied     {} big objects ({})",
        summary.objects_copied,
        human_bytes(summary.bytes_copied)
    );
    println!("  failed     {failed}");
    println!(
        "  elapsed    {:.2}s ({rate:.0} objects/s)",
        summary.elapsed_seconds
    );
}
