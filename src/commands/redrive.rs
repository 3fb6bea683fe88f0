//! `redrive`: turns the retryable DLQ rows of the bundle manifests under a prefix into new bundle
//! manifests with new names (see [`crate::redrive`]), so that they bundle into new archives;
//! optionally queues them like `group --queue`. A dry run unless `--yes`. Each redrive manifest
//! is written with `If-None-Match: *`, so two redrives never both write one, and a row a
//! redrive lists is never redriven again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aws_config::SdkConfig;
use futures_util::{stream, StreamExt};
use tracing::{info, warn};

use super::bundle::ArchivePlace;
use crate::archive::layout::{BundleLayout, Compression};
use crate::archive::records::{parse_dlq, DlqReason, DlqRow};
use crate::aws::AwsOptions;
use crate::bundle::commit::is_final_dlq;
use crate::catalog::store::Catalog;
use crate::catalog::{CatalogEntry, Keys};
use crate::error::{Error, ExitCode, RemoteFailure, Result};
use crate::manifest::{manifest_entries, parse_manifest, ManifestWriter};
use crate::redrive::{
    dlq_object, entry_object, entry_of, families, redrive_key, sort_row, why_not_by_default,
    ObjectId, Sorted, DEFAULT_REASONS,
};
use crate::s3::{Put, S3};
use crate::s3uri::S3Uri;
use crate::sqs::Queue;
use crate::verify::check::{get_optional, list_manifests};

/// Times a family is planned again after another redrive wrote the manifest this one meant to.
const ATTEMPTS: usize = 5;
/// HEADs in flight for `Glacier` rows.
const HEADS: usize = 16;

/// `s3bundler redrive`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The DLQs of every bundle manifest (`*.index`) under this prefix are read.
    #[arg(long = "manifests", value_name = "s3://BUCKET/PREFIX/")]
    pub manifests: S3Uri,
    /// Where the manifests were bundled: a DLQ counts only once its manifest committed.
    #[command(flatten)]
    pub archives: ArchivePlace,
    /// Redrive the rows of this reason (repeat for several). Default: Retry, AccessDenied, and
    /// Glacier for objects readable now (restored, or out of the archive classes).
    #[arg(long = "reason", value_name = "REASON", value_parser = parse_reason)]
    pub reasons: Vec<DlqReason>,
    /// Send one SQS message `{"Bucket":…,"Key":…}` per redrive manifest written to this queue
    /// (name or URL).
    #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Write the redrive manifests. Without it, only print what would be redriven.
    #[arg(long)]
    pub yes: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_reason(text: &str) -> std::result::Result<DlqReason, String> {
    DlqReason::parse(text).ok_or_else(|| {
        let names: Vec<&str> = DlqReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("not a DLQ reason; one of {}", names.join(", "))
    })
}

/// A redrive manifest written (or that would be).
#[derive(Debug, Clone, serde::Serialize)]
struct Redrive {
    manifest: String,
    objects: u64,
    bytes: u64,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    dry_run: bool,
    /// DLQs read (of committed manifests).
    dlqs: u64,
    /// Rows redriven (or that would be), by reason.
    redriven: BTreeMap<DlqReason, u64>,
    /// Rows a later redrive manifest lists already.
    already_redriven: u64,
    /// Rows left alone because their reason is not chosen, by reason.
    not_chosen: BTreeMap<DlqReason, u64>,
    /// `Glacier` rows whose objects still need a restore (or are gone).
    not_readable: u64,
    /// DLQs of manifests not committed yet (an attempt running or stopped): left alone.
    uncommitted: Vec<String>,
    manifests: Vec<Redrive>,
    /// Catalogs (manifest folder, source bucket) that recorded a redrive: compacted at the end.
    #[serde(skip)]
    catalogs: BTreeSet<(String, String)>,
}

/// The rows of one family to redrive next, and how the others were sorted.
#[derive(Default)]
struct Plan {
    rows: Vec<DlqRow>,
    report: Report,
}

pub async fn run(aws: &AwsOptions, config: &SdkConfig, args: &RedriveArgs) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let queue = match &args.queue {
        Some(name) => Some(aws.queue(config, name).await?),
        None => None,
    };
    let place = &args.archives;
    let manifests = list_manifests(&s3, &args.manifests, &place.bucket, &place.prefix).await?;
    if manifests.is_empty() {
        return Err(Error::bad_input(
            args.manifests.to_string(),
            "no bundle manifests (*.index) under this prefix; give the prefix group wrote them to",
        ));
    }
    let reasons = if args.reasons.is_empty() {
        DEFAULT_REASONS.to_vec()
    } else {
        args.reasons.clone()
    };
    let mut report = Report {
        dry_run: !args.yes,
        ..Report::default()
    };
    for (root, members) in families(&manifests) {
        redrive_family(
            &s3,
            queue.as_ref(),
            args,
            &reasons,
            &root,
            members,
            &mut report,
        )
        .await?;
    }
    for (folder, source) in &report.catalogs {
        let catalog = Catalog::new(&s3, &args.manifests.bucket, folder, source);
        if let Err(error) = catalog.compact().await {
            warn!("could not compact the catalog of {source} under {folder}: {error}; locate reads the redrives' records directly until a later run compacts it");
        }
    }
    print_report(&report, args.json);
    Ok(ExitCode::Success)
}

/// Plans one family and writes its next redrive manifest. When another redrive wrote that
/// manifest first, the family is planned again with it, so its rows count as already redriven.
async fn redrive_family(
    s3: &S3,
    queue: Option<&Queue>,
    args: &RedriveArgs,
    reasons: &[DlqReason],
    root: &str,
    mut members: Vec<(u32, S3Uri)>,
    report: &mut Report,
) -> Result<()> {
    for _ in 0..ATTEMPTS {
        let plan = plan_family(s3, args, reasons, &members).await?;
        let level = members.last().map_or(1, |(level, _)| level + 1);
        let target = S3Uri::new(args.manifests.bucket.clone(), redrive_key(root, level));
        let mut writer = ManifestWriter::default();
        for row in &plan.rows {
            writer.push(&entry_of(row));
        }
        let redrive = Redrive {
            manifest: target.to_string(),
            objects: writer.objects(),
            bytes: writer.bytes(),
        };
        if plan.rows.is_empty() || !args.yes {
            report.add(plan.report, (!plan.rows.is_empty()).then_some(redrive));
            return Ok(());
        }
        let body = bytes::Bytes::from(writer.finish());
        // Recorded before the manifest is written, so that no redrive manifest is ever missing
        // from the catalog; a record of a manifest that another redrive wrote first only widens
        // that manifest's range (see `catalog::sort_entries`).
        record_in_catalog(s3, &target, &body, &plan.rows, report).await?;
        let put = Put {
            if_none_match: true,
            ..Put::new("text/csv")
        };
        match s3.put(&target, body.clone(), &put).await {
            Ok(_) => {}
            Err(RemoteFailure::PreconditionFailed) => {
                // This PUT's own first try, whose answer was lost, or another redrive's.
                if get_optional(s3, &target).await?.as_ref() != Some(&body) {
                    info!("{target} was written by another redrive; planning again");
                    members.push((level, target));
                    continue;
                }
            }
            Err(failure) => return Err(Error::writing("PutObject", target.to_string(), failure)),
        }
        info!(objects = redrive.objects, "wrote redrive manifest {target}");
        if let Some(queue) = queue {
            let body =
                serde_json::json!({ "Bucket": target.bucket, "Key": target.key }).to_string();
            queue.send(body).await?;
        }
        report.add(plan.report, Some(redrive));
        return Ok(());
    }
    Err(Error::Remote {
        operation: "PutObject",
        location: redrive_key(root, members.last().map_or(1, |(level, _)| level + 1)),
        detail: format!(
            "other redrives wrote this family's next manifest {ATTEMPTS} times while this one \
             planned; run redrive again once they are done"
        ),
    })
}

/// Records a redrive manifest's key range in the catalog of each source bucket it lists, with a
/// filter of its keys: a redrive gathers a few failed keys from all over its family's range.
async fn record_in_catalog(
    s3: &S3,
    target: &S3Uri,
    body: &[u8],
    rows: &[DlqRow],
    report: &mut Report,
) -> Result<()> {
    let sources: BTreeSet<&str> = rows.iter().map(|row| row.bucket.as_str()).collect();
    let label = crate::archive::layout::manifest_name(&target.key);
    for source in sources {
        let Some(entry) = CatalogEntry::of_manifest(&target.key, source, body, Keys::Filtered)?
        else {
            continue;
        };
        let folder = target.folder().to_string();
        Catalog::new(s3, &target.bucket, &folder, source)
            .record_run(label, vec![entry])
            .await?;
        report.catalogs.insert((folder, source.to_string()));
    }
    Ok(())
}

/// Reads a family's manifests and DLQs and sorts every row.
async fn plan_family(
    s3: &S3,
    args: &RedriveArgs,
    reasons: &[DlqReason],
    members: &[(u32, S3Uri)],
) -> Result<Plan> {
    // Per object, the highest level that lists it (redrives only: the root lists everything).
    let mut listed: HashMap<ObjectId, u32> = HashMap::new();
    for (level, uri) in members.iter().filter(|(level, _)| *level > 0) {
        let Some(bytes) = get_optional(s3, uri).await? else {
            continue;
        };
        for entry in parse_manifest(&bytes, &uri.to_string())? {
            let at = listed.entry(entry_object(&entry)).or_default();
            *at = (*at).max(*level);
        }
    }
    let mut plan = Plan::default();
    let mut chosen: HashSet<ObjectId> = HashSet::new();
    let mut glacier = Vec::new();
    for (level, uri) in members {
        let dlq_uri = S3Uri::new(uri.bucket.clone(), format!("{}.dlq", uri.key));
        let Some(bytes) = get_optional(s3, &dlq_uri).await? else {
            continue;
        };
        let rows = parse_dlq(&bytes, &dlq_uri.to_string())?;
        if !committed(s3, args, uri, &dlq_uri, &rows).await? {
            warn!("{dlq_uri}: its manifest has not committed (no index yet); left alone");
            plan.report.uncommitted.push(dlq_uri.to_string());
            continue;
        }
        plan.report.dlqs += 1;
        for row in rows {
            match sort_row(&row, *level, &listed, reasons) {
                Sorted::AlreadyRedriven => plan.report.already_redriven += 1,
                Sorted::NotChosen => *plan.report.not_chosen.entry(row.reason).or_default() += 1,
                // An object dead-lettered by two members goes into the redrive once.
                Sorted::Redrive if !chosen.insert(dlq_object(&row)) => {}
                Sorted::Redrive if row.reason == DlqReason::Glacier => glacier.push(row),
                Sorted::Redrive => plan.rows.push(row),
            }
        }
    }
    let readable: Vec<Result<(DlqRow, bool)>> = stream::iter(glacier)
        .map(|row| async move {
            let uri = S3Uri::new(row.bucket.clone(), row.key.clone());
            let readable = s3
                .readable_now(&uri, row.version_id.as_deref())
                .await
                .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
            Ok((row, readable == Some(true)))
        })
        .buffered(HEADS)
        .collect()
        .await;
    for outcome in readable {
        match outcome? {
            (row, true) => plan.rows.push(row),
            (_, false) => plan.report.not_readable += 1,
        }
    }
    for row in &plan.rows {
        *plan.report.redriven.entry(row.reason).or_default() += 1;
    }
    Ok(plan)
}

/// True when the manifest's records are final, so its DLQ is: its index exists, or its DLQ is
/// final (all objects failed). A DLQ without either is an attempt's that did not commit; the
/// next attempt redoes the manifest, and may archive those objects itself.
async fn committed(
    s3: &S3,
    args: &RedriveArgs,
    manifest: &S3Uri,
    dlq: &S3Uri,
    rows: &[DlqRow],
) -> Result<bool> {
    let Some(source) = rows.first().map(|row| row.bucket.as_str()) else {
        return Ok(true);
    };
    let layout = BundleLayout::new(
        &args.archives.prefix,
        source,
        &manifest.key,
        Compression::None,
    );
    let index = S3Uri::new(args.archives.bucket.clone(), layout.index_key);
    let head = |uri: S3Uri| async move {
        s3.head(&uri)
            .await
            .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))
    };
    if head(index).await?.is_some() {
        return Ok(true);
    }
    let (Some(dlq_head), Some(listed)) =
        (head(dlq.clone()).await?, get_optional(s3, manifest).await?)
    else {
        return Ok(false);
    };
    let entries = manifest_entries(listed.as_ref(), &manifest.to_string()).count() as u64;
    is_final_dlq(s3, dlq, &dlq_head, entries).await
}

impl Report {
    fn add(&mut self, family: Report, redrive: Option<Redrive>) {
        self.dlqs += family.dlqs;
        for (reason, n) in family.redriven {
            *self.redriven.entry(reason).or_default() += n;
        }
        for (reason, n) in family.not_chosen {
            *self.not_chosen.entry(reason).or_default() += n;
        }
        self.already_redriven += family.already_redriven;
        self.not_readable += family.not_readable;
        self.uncommitted.extend(family.uncommitted);
        self.manifests.extend(redrive);
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        super::print_json(report);
        return;
    }
    let verb = if report.dry_run {
        "would redrive"
    } else {
        "redrove"
    };
    println!(
        "{verb} {} objects into {} manifests, from {} DLQs{}",
        report.redriven.values().sum::<u64>(),
        report.manifests.len(),
        report.dlqs,
        if report.dry_run {
            " (dry run: add --yes to write them)"
        } else {
            ""
        }
    );
    println!(
        "  redriven          {}",
        super::counts_line(&report.redriven)
    );
    for manifest in &report.manifests {
        println!("  {:>10} objects  {}", manifest.objects, manifest.manifest);
    }
    println!("  already redriven  {}", report.already_redriven);
    println!(
        "  Glacier, not restored yet (or gone)  {}",
        report.not_readable
    );
    for (reason, n) in &report.not_chosen {
        println!(
            "  not redriven      {reason}={n}: {}",
            why_not_by_default(*reason)
        );
    }
    for dlq in &report.uncommitted {
        println!("  not committed yet (left alone): {dlq}");
    }
}
