//! `verify`: checks every bundle manifest under a prefix against its index, archive, big-object
//! copies and DLQ, prints a table (or `--json`) and exits 1 on any problem.

use std::time::Instant;

use aws_config::SdkConfig;
use futures_util::{stream, StreamExt};

use super::bundle::ArchiveLocation;
use crate::aws::AwsOptions;
use crate::error::{Error, ExitCode, Result};
use crate::redrive::later_members;
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::verify::check::{
    check_manifest, list_manifests, redriven_objects, CheckSettings, ManifestCheck,
};
use crate::verify::{table, VerifyReport};

/// Manifests checked at once.
const PARALLEL_MANIFESTS: usize = 2;
/// Problems listed in the table; `--json` has them all.
const TABLE_PROBLEMS: usize = 50;

/// What to verify: shared by `verify` and `prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckOptions {
    /// Every bundle manifest (`*.index`) under this prefix is checked.
    #[arg(long = "manifests", value_name = "s3://BUCKET/PREFIX/")]
    pub manifests: S3Uri,
    #[command(flatten)]
    pub archives: ArchiveLocation,
    /// Also re-read every member and check its MD5 against the index and, where the source
    /// still exists with a plain-MD5 ETag, against the source.
    #[arg(long)]
    pub deep: bool,
    /// S3 requests in flight per manifest.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

impl CheckOptions {
    fn settings(&self) -> CheckSettings {
        CheckSettings {
            archive_bucket: self.archives.place.bucket.clone(),
            prefix: self.archives.place.prefix.clone(),
            deep: self.deep,
            concurrency: self.concurrency.max(1),
            max_size: self.archives.max_size.0,
        }
    }

    /// The manifests under `--manifests`; none is bad input.
    pub async fn manifests(&self, s3: &S3) -> Result<Vec<S3Uri>> {
        let place = &self.archives.place;
        let manifests = list_manifests(s3, &self.manifests, &place.bucket, &place.prefix).await?;
        if manifests.is_empty() {
            return Err(Error::bad_input(
                self.manifests.to_string(),
                "no bundle manifests (*.index) under this prefix; give the prefix group wrote them to",
            ));
        }
        Ok(manifests)
    }
}

/// Checks `manifests` in order, a few at once, so that only those few are held in memory while
/// the caller handles each (and shows progress on a terminal).
pub struct Checks<'a> {
    inner: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ManifestCheck>> + 'a>>,
    progress: indicatif::ProgressBar,
}

impl<'a> Checks<'a> {
    /// With `keep_rows`, each check keeps its entries, statuses and rows (see
    /// [`check_manifest`]).
    pub fn new(
        s3: &'a S3,
        options: &CheckOptions,
        manifests: &'a [S3Uri],
        keep_rows: bool,
    ) -> Self {
        let settings = options.settings();
        let later = later_members(manifests);
        let inner = stream::iter(manifests.iter())
            .map(move |uri| {
                let settings = settings.clone();
                let later = later.get(&uri.key).cloned().unwrap_or_default();
                async move {
                    let redriven = redriven_objects(s3, &later).await?;
                    check_manifest(s3, uri, &settings, keep_rows, &redriven).await
                }
            })
            .buffered(PARALLEL_MANIFESTS);
        Checks {
            inner: Box::pin(inner),
            progress: crate::progress::objects_bar(Some(manifests.len() as u64), "checking"),
        }
    }

    pub async fn next(&mut self) -> Option<Result<ManifestCheck>> {
        let next = self.inner.next().await;
        match next {
            Some(_) => self.progress.inc(1),
            None => self.progress.finish_and_clear(),
        }
        next
    }
}

/// `s3bundler verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub check: CheckOptions,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(aws: &AwsOptions, config: &SdkConfig, args: &VerifyArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let s3 = aws.s3(config);
    let mut report = VerifyReport {
        deep: args.check.deep,
        ..VerifyReport::default()
    };
    let manifests = args.check.manifests(&s3).await?;
    let mut checks = Checks::new(&s3, &args.check, &manifests, false);
    while let Some(check) = checks.next().await {
        report.push(check?.report);
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    if args.json {
        super::print_json(&report);
    } else {
        print!("{}", table(&report, TABLE_PROBLEMS));
        println!(
            "elapsed {:.2}s ({:.0} objects/s)",
            report.elapsed_seconds,
            report.totals.objects as f64 / report.elapsed_seconds.max(1e-9)
        );
    }
    if report.problems > 0 {
        tracing::error!(
            "verification found {} problems under {}",
            report.problems,
            args.check.manifests
        );
        return Ok(ExitCode::Partial);
    }
    Ok(ExitCode::Success)
}
