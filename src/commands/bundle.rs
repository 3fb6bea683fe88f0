//! `bundle -m`: bundle one manifest.

use aws_config::SdkConfig;
use aws_sdk_s3::types::StorageClass;

use crate::archive::layout::Compression;
use crate::aws::AwsOptions;
use crate::bundle::{bundle_manifest, BundleReport, BundleSettings};
use crate::error::{ExitCode, Result};
use crate::metrics::{self, Counts, MetricsFormat};
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::{human_bytes, ByteSize};

/// Options shared by `bundle` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct BundleOptions {
    /// Object GETs in flight (default: 128 per core, 64 to 1024, growing up to four times that
    /// while S3 answers as fast as with fewer). Real S3 answers a small GET in 10-30 ms, so a
    /// core kept busy needs about that many waiting; `--max-in-flight` still bounds the bytes
    /// they hold. A value given here is kept (lowered only while S3 throttles).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Compress the archive: `.tar.gz` or `.tar.zst` (zstd uses every core). Index offsets
    /// still count the uncompressed tar stream.
    #[arg(long, value_enum, value_name = "gzip|zstd")]
    pub compress: Option<CompressArg>,
    /// Print CloudWatch Embedded Metric Format lines on stderr (default: emf inside ECS, none
    /// elsewhere).
    #[arg(long, value_enum)]
    pub metrics: Option<MetricsFormat>,
    /// Bytes of object data held in memory at most, from GET until uploaded in a part.
    #[arg(long, value_name = "SIZE", default_value = "192MiB")]
    pub max_in_flight: ByteSize,
    /// Storage class of archives and big-object copies (e.g. DEEP_ARCHIVE, GLACIER, STANDARD_IA);
    /// plan's default too. Indexes, DLQs and `.metadata` rows stay STANDARD.
    #[arg(long, value_name = "CLASS", default_value = "STANDARD")]
    pub storage_class: String,
    /// Objects above this size are copied with multipart UploadPartCopy (S3 allows CopyObject up
    /// to 5 GiB).
    #[arg(long, value_name = "SIZE", default_value = "5GiB", hide = true)]
    pub multipart_copy_threshold: ByteSize,
    /// Seconds a worker's lease on a manifest lasts unless renewed (it is renewed every quarter
    /// of that): how long a manifest whose worker was killed waits before another takes it.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, hide = true,
          value_parser = clap::value_parser!(u64).range(4..))]
    pub lease_seconds: u64,
}

/// GETs in flight per core by default: at 20 ms a request, one core's worth of GETs (about
/// 150 µs of CPU each) needs about 130 in flight.
const CONCURRENCY_PER_CORE: usize = 128;

/// The default `--concurrency`: enough GETs in flight to keep every core busy at real S3's
/// latency, within 64..=1024.
pub fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (CONCURRENCY_PER_CORE * cores).clamp(64, 1024)
}

/// How far the default GETs in flight may grow while S3's answers stay as fast as at the
/// start: at 20 ms a request, 256 in flight cap a worker at 12,800 objects a second, where two
/// cores can GET about 30,000 small objects a second on the lean GET path.
pub fn default_concurrency_ceiling() -> usize {
    (default_concurrency() * 4).min(4096)
}

/// The archive bucket and prefix: `-b`, `-p`.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchivePlace {
    /// Bucket of the archives, indexes and big-object copies.
    #[arg(short = 'b', long = "bucket", value_name = "ARCHIVE_BUCKET", value_parser = crate::s3uri::parse_bucket)]
    pub bucket: String,
    /// Key prefix in the archive bucket.
    #[arg(short = 'p', long = "prefix", default_value = "")]
    pub prefix: String,
}

/// Where archives go (`bundle`) or were put (`verify`, `prune`): `-b`, `-p`, `-s`.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveLocation {
    #[command(flatten)]
    pub place: ArchivePlace,
    /// Objects bigger than this are copied server-side to bigobjects/ instead of archived (give
    /// `verify` and `prune` the value `bundle` ran with).
    #[arg(
        short = 's',
        long = "maxsize",
        value_name = "SIZE",
        default_value = "2GiB"
    )]
    pub max_size: ByteSize,
}

/// `s3bundler bundle`: one manifest (`-m`), or a worker taking manifests from a queue (`-q`).
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["manifest", "queue"])))]
pub struct BundleArgs {
    /// The bundle manifest to archive.
    #[arg(short = 'm', long = "manifest", value_name = "s3://BUCKET/KEY")]
    pub manifest: Option<S3Uri>,
    /// Work as a queue worker: take manifests from this SQS queue (name or URL), one message at
    /// a time (S3 event notifications, the same through SNS, or {"Bucket":…,"Key":…}).
    #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
    pub queue: Option<String>,
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub archives: ArchiveLocation,
    /// Compress with gzip, like the original tools' flag (same as --compress gzip).
    #[arg(short = 'c', conflicts_with = "compress")]
    pub gzip: bool,
    #[command(flatten)]
    pub options: BundleOptions,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a queue worker (`bundle -q`) takes messages and when it stops.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// Exit 0 after this many manifest messages (0: no limit); ECS then starts a fresh task.
    #[arg(long, value_name = "N", default_value_t = 2, requires = "queue")]
    pub max_messages: u64,
    /// Seconds each ReceiveMessage long-polls (0 to 20).
    #[arg(long, value_name = "SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20), requires = "queue")]
    pub wait_time: u64,
    /// Exit 0 once the queue has given no message for this many seconds (default: wait for
    /// work forever, as an ECS service does).
    #[arg(long, value_name = "SECONDS", requires = "queue")]
    pub idle_timeout: Option<u64>,
    /// Inside ECS (ECS_AGENT_URI set): protect the task from scale-in for this many minutes
    /// while it holds a manifest, renewed at half-time until the manifest is done; cleared once
    /// the queue is empty. 0: never ask for protection.
    #[arg(long, value_name = "MINUTES", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=2880), requires = "queue")]
    pub task_protection: u64,
    /// Seconds between renewals of the task's scale-in protection while a manifest is bundled
    /// (default: half of --task-protection; at most that).
    #[arg(long, value_name = "SECONDS", hide = true, requires = "queue",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub task_protection_renew: Option<u64>,
    /// Seconds after its receipt at which a message still being worked on is handed over (a
    /// fresh copy sent, the old one deleted): SQS hides a message for 12 hours at most.
    #[arg(long, value_name = "SECONDS", hide = true, requires = "queue",
          default_value_t = crate::heartbeat::MAX_HIDDEN.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub message_hold_limit: u64,
}

impl WorkerOptions {
    /// The scale-in protection the worker asks for, if any.
    pub fn protection_policy(&self) -> Option<crate::task_protection::ProtectionPolicy> {
        crate::task_protection::ProtectionPolicy::new(
            self.task_protection,
            self.task_protection_renew
                .map(std::time::Duration::from_secs),
        )
    }
}

/// `--compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    Gzip,
    Zstd,
}

impl From<CompressArg> for Compression {
    fn from(arg: CompressArg) -> Self {
        match arg {
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Zstd => Compression::Zstd,
        }
    }
}

impl BundleOptions {
    pub fn metrics_format(&self) -> MetricsFormat {
        self.metrics
            .unwrap_or_else(MetricsFormat::default_for_environment)
    }

    pub fn settings(&self, bucket: &str, prefix: &str, max_size: ByteSize) -> BundleSettings {
        BundleSettings {
            archive_bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            max_size: max_size.0,
            concurrency: self.concurrency.unwrap_or_else(default_concurrency).max(1),
            concurrency_ceiling: self
                .concurrency
                .unwrap_or_else(default_concurrency_ceiling)
                .max(1),
            max_in_flight: self.max_in_flight.0,
            // STANDARD is S3's default: no header, as before the flag had a default.
            storage_class: (self.storage_class != "STANDARD")
                .then(|| StorageClass::from(self.storage_class.as_str())),
            multipart_copy_threshold: self.multipart_copy_threshold.0,
            progress: indicatif::ProgressBar::hidden(),
            lease_ttl: std::time::Duration::from_secs(self.lease_seconds),
            compression: self.compress.map(Compression::from).unwrap_or_default(),
        }
    }
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &BundleArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let mut settings = args.options.settings(
        &args.archives.place.bucket,
        &args.archives.place.prefix,
        args.archives.max_size,
    );
    if args.gzip {
        settings.compression = Compression::Gzip;
    }
    let Some(manifest) = &args.manifest else {
        let name = args.queue.as_deref().unwrap_or_default();
        let queue = aws.queue(config, name).await?;
        return super::worker::work(&s3, &queue, settings, args, shutdown).await;
    };
    settings.progress = crate::progress::objects_bar(None, "bundling");
    let report = bundle_manifest(&s3, manifest, &settings, shutdown).await;
    settings.progress.finish_and_clear();
    let metrics = args.options.metrics_format();
    let report = report.inspect_err(|_| report_error(metrics))?;
    metrics::emit(metrics, &report.counts());
    print_summary(&report, args.json);
    Ok(if report.objects_failed() > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

/// Counts one failed manifest in the metrics.
pub fn report_error(metrics: MetricsFormat) {
    metrics::emit(
        metrics,
        &Counts {
            errors: 1,
            ..Counts::default()
        },
    )
}

pub fn print_summary(report: &BundleReport, json: bool) {
    if json {
        super::print_json(report);
        return;
    }
    if report.already_done {
        let marker = report.index.as_deref().unwrap_or_default();
        println!("already bundled {} ({marker} exists)", report.manifest);
        return;
    }
    let failed = super::counts_line(&report.failed);
    println!("bundled {}", report.manifest);
    println!(
        "  archived   {} objects ({})",
        report.objects_archived,
        human_bytes(report.bytes_archived)
    );
    println!(
        "  copied     {} big objects ({})",
        report.objects_copied,
        human_bytes(report.bytes_copied)
    );
    println!("  failed     {failed}");
    for (what, uri) in [
        ("archive", &report.archive),
        ("index", &report.index),
        ("dlq", &report.dlq),
    ] {
        if let Some(uri) = uri {
            println!("  {what:<10} {uri}");
        }
    }
    let rate =
        (report.objects_archived + report.objects_copied) as f64 / report.elapsed_seconds.max(1e-9);
    println!(
        "  elapsed    {:.2}s ({rate:.0} objects/s)",
        report.elapsed_seconds
    );
}
