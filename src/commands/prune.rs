//! `prune`: deletes the original objects that verification proves archived and that are still
//! the objects archived. A dry run unless `--yes`; deletions go to `<manifest key>.pruned`.
//! Every delete is conditional on the ETag verified (If-Match), so an object overwritten
//! between its check and its delete is kept.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use futures_util::{stream, StreamExt};
use tracing::{error, info, warn};

use super::verify::{CheckOptions, Checks};
use crate::archive::records::{parse_pruned, IndexRow, PrunedRow, PrunedWriter};
use crate::aws::AwsOptions;
use crate::error::{Error, ExitCode, RemoteFailure, Result};
use crate::prune::{decide, pruned_key, triage, Decision, KeptReason, PruneSummary, Triage};
use crate::s3::{DeleteError, DeleteTarget, S3};
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::human_bytes;
use crate::verify::check::{get_optional, ManifestCheck};

/// DeleteObjects takes at most this many keys.
const BATCH: usize = 1000;
/// Rounds for keys S3 answered with throttling or an internal error.
const DELETE_ROUNDS: u32 = 5;

/// `s3bundler prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub check: CheckOptions,
    /// Delete. Without it, only print what would be deleted.
    #[arg(long)]
    pub yes: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// An object kept, and why, as the output lists it.
#[derive(Debug, Clone, serde::Serialize)]
struct KeptObject {
    object: String,
    detail: String,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    #[serde(flatten)]
    summary: PruneSummary,
    verification_problems: u64,
    changed: Vec<KeptObject>,
    failed: Vec<KeptObject>,
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &PruneArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let started = Instant::now();
    let s3 = aws.s3(config);
    let mut report = Report {
        summary: PruneSummary {
            dry_run: !args.yes,
            ..PruneSummary::default()
        },
        ..Report::default()
    };
    // Manifest by manifest: each is verified, then pruned, then let go.
    let manifests = args.check.manifests(&s3).await?;
    // Prune decides per object from the rows verification matched.
    let mut checks = Checks::new(&s3, &args.check, &manifests, true);
    while let Some(check) = checks.next().await {
        let check = check?;
        report.verification_problems += check.report.counts.problems();
        prune_manifest(&s3, &check, args, &shutdown, &mut report).await?;
    }
    report.summary.elapsed_seconds = started.elapsed().as_secs_f64();
    print_report(&report, args.json);
    if !report.failed.is_empty() {
        return Ok(ExitCode::WriteFailed);
    }
    Ok(if report.verification_problems > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

async fn prune_manifest(
    s3: &S3,
    check: &ManifestCheck,
    args: &PruneArgs,
    shutdown: &Shutdown,
    report: &mut Report,
) -> Result<()> {
    let Some(manifest) = &check.manifest else {
        return Ok(());
    };
    report.summary.manifests += 1;
    let log_uri = S3Uri::new(manifest.bucket.clone(), format!("{}.pruned", manifest.key));
    let logged = match get_optional(s3, &log_uri).await? {
        Some(bytes) => parse_pruned(&bytes, &log_uri.to_string())?,
        None => Vec::new(),
    };
    let done: HashSet<_> = logged.iter().map(pruned_key).collect();
    let mut candidates = Vec::new();
    for triaged in triage(check, &done) {
        match triaged {
            Triage::Candidate(row) => candidates.push(row),
            Triage::AlreadyPruned => report.summary.already_pruned += 1,
            Triage::Redriven => {}
            Triage::Kept(reason) => report.summary.keep(reason),
        }
    }
    if !check.archive_sound && !candidates.is_empty() {
        warn!("{manifest}: its archive failed verification, so none of its objects is deleted");
    }
    let decisions: Vec<Result<(&IndexRow, Decision)>> = stream::iter(candidates)
        .map(|row| async move {
            let uri = S3Uri::new(row.bucket.clone(), row.key.clone());
            let head = s3
                .head(&uri)
                .await
                .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
            Ok((row, decide(row, head.as_ref())))
        })
        .buffered(args.check.concurrency.max(1))
        .collect()
        .await;
    let mut to_delete: BTreeMap<&str, Vec<(&IndexRow, Option<String>)>> = BTreeMap::new();
    for decision in decisions {
        let (row, decision) = decision?;
        match decision {
            Decision::Gone => report.summary.already_gone += 1,
            Decision::Changed(detail) => {
                report.summary.keep(KeptReason::Changed);
                report.changed.push(KeptObject {
                    object: format!("s3://{}/{}", row.bucket, row.key),
                    detail: format!("changed since it was bundled: {detail}"),
                });
            }
            Decision::Delete(version) => {
                if args.yes {
                    to_delete
                        .entry(row.bucket.as_str())
                        .or_default()
                        .push((row, version));
                } else {
                    report.summary.delete(row);
                }
            }
        }
    }
    if to_delete.is_empty() {
        return Ok(());
    }
    let mut log = PrunedWriter::default();
    for row in &logged {
        log.push(row);
    }
    let before = log.rows();
    let mut outcome = Ok(());
    for (bucket, objects) in to_delete {
        for batch in objects.chunks(BATCH) {
            if shutdown.is_requested() {
                // Stop between batches; what was deleted is logged below.
                outcome = Err(Error::Interrupted);
                break;
            }
            match delete_batch(s3, bucket, batch, report).await {
                Ok(deleted) => deleted.iter().for_each(|row| log.push(row)),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
    }
    // Whatever was deleted is logged, even when a later batch failed.
    if log.rows() > before {
        s3.put_bytes(&log_uri, log.finish().into(), "text/csv")
            .await
            .map_err(|f| Error::writing("PutObject", log_uri.to_string(), f))?;
        info!("{manifest}: deletions logged in {log_uri}");
    }
    outcome
}

/// What S3 is asked to delete for a candidate: its version (or the current object), and only
/// while its ETag is still the one archived and verified.
fn delete_target(row: &IndexRow, version: &Option<String>) -> DeleteTarget {
    DeleteTarget {
        key: row.key.clone(),
        version_id: version.clone(),
        if_match: (!row.etag.is_empty()).then(|| row.etag.clone()),
    }
}

/// Deletes one batch, each object only while it still has the ETag verified (S3 conditional
/// deletes), retrying keys S3 throttled; returns the rows deleted. An object S3 refuses because
/// it was overwritten since its check is kept and reported as changed.
async fn delete_batch(
    s3: &S3,
    bucket: &str,
    batch: &[(&IndexRow, Option<String>)],
    report: &mut Report,
) -> Result<Vec<PrunedRow>> {
    type Id = (String, Option<String>);
    let mut pending: Vec<&(&IndexRow, Option<String>)> = batch.iter().collect();
    // Why each key not deleted was refused, as its last attempt was answered.
    let mut refused: BTreeMap<Id, DeleteError> = BTreeMap::new();
    for round in 0..DELETE_ROUNDS {
        let request: Vec<DeleteTarget> = pending
            .iter()
            .map(|(row, version)| delete_target(row, version))
            .collect();
        let errors = match s3.delete_objects(bucket, &request).await {
            Ok(errors) => errors,
            Err(RemoteFailure::Transient(detail)) if round + 1 < DELETE_ROUNDS => {
                warn!("DeleteObjects on s3://{bucket} failed ({detail}); retrying");
                tokio::time::sleep(Duration::from_millis(500 << round)).await;
                continue;
            }
            Err(failure) => {
                return Err(Error::writing(
                    "DeleteObjects",
                    format!("s3://{bucket}"),
                    failure,
                ))
            }
        };
        for target in &request {
            refused.remove(&(target.key.clone(), target.version_id.clone()));
        }
        let mut retry = HashSet::new();
        for e in errors {
            let id = (e.key.clone(), e.version_id.clone());
            if e.is_transient() {
                retry.insert(id.clone());
            }
            refused.insert(id, e);
        }
        pending.retain(|(row, version)| retry.contains(&(row.key.clone(), version.clone())));
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500 << round)).await;
    }
    let now = DateTime::from(std::time::SystemTime::now())
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default();
    let mut deleted = Vec::new();
    for (row, version) in batch {
        let object = format!("s3://{bucket}/{}", row.key);
        match refused.get(&(row.key.clone(), version.clone())) {
            Some(e) if e.is_precondition_failed() => {
                warn!("{object} was overwritten after it was verified; kept");
                report.summary.keep(KeptReason::Changed);
                report.changed.push(KeptObject {
                    object,
                    detail: format!(
                        "changed since it was verified: S3 refused to delete it because its ETag is no longer {}",
                        row.etag
                    ),
                });
            }
            Some(e) => {
                let reason = format!("{} {}", e.code, e.message);
                error!("could not delete {object}: {reason}");
                report.summary.errors += 1;
                report.failed.push(KeptObject {
                    object,
                    detail: reason,
                });
            }
            None => {
                report.summary.delete(row);
                deleted.push(PrunedRow {
                    bucket: bucket.to_string(),
                    key: row.key.clone(),
                    version_id: version.clone(),
                    size: row.size,
                    etag: row.etag.clone(),
                    deleted_at: now.clone(),
                });
            }
        }
    }
    Ok(deleted)
}

fn print_report(report: &Report, json: bool) {
    if json {
        super::print_json(report);
        return;
    }
    let s = &report.summary;
    let verb = if s.dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {} objects ({}) from {} manifests{}",
        s.deleted.objects,
        human_bytes(s.deleted.bytes),
        s.manifests,
        if s.dry_run {
            " (dry run: add --yes to delete)"
        } else {
            ""
        }
    );
    for (prefix, tally) in &s.by_prefix {
        println!(
            "  {:>10} objects {:>12}  s3://{prefix}",
            tally.objects,
            human_bytes(tally.bytes)
        );
    }
    println!("  already pruned {}", s.already_pruned);
    println!("  already gone   {}", s.already_gone);
    println!("  kept           {}", super::counts_line(&s.kept));
    for kept in &report.changed {
        println!("  kept {}: {}", kept.object, kept.detail);
    }
    for failed in &report.failed {
        println!("  FAILED {}: {}", failed.object, failed.detail);
    }
    if report.verification_problems > 0 {
        println!(
            "  verification found {} problems (run verify for the details)",
            report.verification_problems
        );
    }
    println!("  elapsed        {:.2}s", s.elapsed_seconds);
}
