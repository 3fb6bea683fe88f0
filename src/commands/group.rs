//! `group`: read an S3 Inventory report and write bundle manifests.
//!
//! Data files are read from S3 several at a time (`inventory::ordered`), their rows selected and
//! written as manifest lines on the readers' threads, and cut into manifests in inventory order
//! on one thread; closed manifests are uploaded to a staging area while reading goes on. Only when every data file has been read and verified
//! are the manifests committed under their final names (so a damaged report leaves no manifest
//! that a bundler could pick up), unchanged ones left alone, and their queue messages sent.
//! A manifest in place is never replaced: an archive may describe it.

use std::sync::Arc;
use std::time::Instant;

use aws_config::SdkConfig;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::aws::AwsOptions;
use crate::catalog::store::Catalog;
use crate::catalog::{CatalogEntry, Keys};
use crate::error::{Error, RemoteFailure, Result};
use crate::group::{ClosedManifest, GroupStats, Increment, SelectedRows, Selection, Splitter};
use crate::incremental::{prepare, Grouped, Prepared};
use crate::inventory::columns::ColumnMap;
use crate::inventory::manifest::verify_checksum;
use crate::inventory::ordered::{default_parallelism, OrderedBatches, ReadPlan};
use crate::inventory::{FileFormat, InventoryManifest};
use crate::manifest::{bundle_manifest_key, bundle_manifest_stem, join_prefix};
use crate::s3::{is_plain_md5, Put, S3};
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::{human_bytes, ByteSize};
use crate::sqs::Queue;

/// manifest.json files are small; refuse anything absurd rather than hold it in memory.
const MANIFEST_JSON_LIMIT: u64 = 256 << 20;

/// User metadata of each bundle manifest: the thresholds it was cut with, so that a later run
/// that finds it with other content can say how it was grouped.
const COUNT_THRESHOLD_METADATA: &str = "s3bundler-count-threshold";
const SIZE_THRESHOLD_METADATA: &str = "s3bundler-size-threshold";

/// Selection, splitting and reading options, shared with `run` and `plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupingOptions {
    /// Close a bundle manifest when its objects' total size reaches this.
    #[arg(
        short = 's',
        long = "size-threshold",
        value_name = "SIZE",
        default_value = "4GiB",
        value_parser = at_least_one_byte
    )]
    pub size_threshold: ByteSize,
    /// Close a bundle manifest when it holds this many objects.
    #[arg(
        short = 'c',
        long = "count-threshold",
        value_name = "COUNT",
        default_value_t = 65000,
        value_parser = at_least_one_object
    )]
    pub count_threshold: u64,
    /// Keep only keys that start with this prefix.
    #[arg(short = 'i', long = "include-prefix", value_name = "PREFIX")]
    pub include_prefix: Option<String>,
    /// Select only objects in GLACIER or DEEP_ARCHIVE (skipped otherwise), into `.glacier.index`
    /// manifests.
    #[arg(short = 'g', long = "glacier")]
    pub glacier: bool,
    /// Bundle noncurrent versions too (versioned inventories); by default only the latest.
    #[arg(long)]
    pub all_versions: bool,
    /// Group every selected object, not only those the latest earlier inventory of this
    /// source, configuration and selection did not group (its state is not read).
    #[arg(long)]
    pub full: bool,
    /// S3 Inventory is eventually consistent: objects modified within this long before an
    /// inventory was created are remembered one by one, so that the next inventory groups
    /// those this one missed (`2d`, `36h`, `90m`, `600s`).
    #[arg(long, value_name = "DURATION", default_value = "2d", value_parser = crate::incremental::parse_margin)]
    pub margin: std::time::Duration,
    /// Inventory data files read at once [default: one per core, at most 4]. Each holds a few
    /// tens of MiB while it is read; the manifests do not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub readers: Option<u16>,
}

/// `-c`: a manifest holds at least one object, so zero can only be a mistake.
fn at_least_one_object(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("the count threshold must be at least 1 object, e.g. 65000".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("`{text}` is not a whole number of objects")),
    }
}

/// `-s`: a manifest closes once its objects' sizes reach it, so zero would mean one object
/// per manifest (whatever `-c` says), surely not what was meant.
fn at_least_one_byte(text: &str) -> Result<ByteSize, String> {
    match text.parse::<ByteSize>()? {
        ByteSize(0) => Err("the size threshold must be at least 1 byte, e.g. 4GiB".into()),
        size => Ok(size),
    }
}

impl GroupingOptions {
    pub fn selection(&self) -> Selection {
        Selection {
            include_prefix: self.include_prefix.clone(),
            all_versions: self.all_versions,
            glacier: self.glacier,
        }
    }

    pub fn incremental(&self) -> crate::incremental::Options {
        crate::incremental::Options {
            full: self.full,
            margin: self.margin,
        }
    }

    /// Finds what earlier inventories grouped (see [`crate::incremental`]); the state is kept
    /// under `PREFIX` of the manifests' bucket.
    pub(crate) async fn prepare_increment(
        &self,
        s3: &S3,
        bucket: &str,
        prefix: &str,
        inventory_uri: &S3Uri,
        inventory: &InventoryManifest,
    ) -> Result<Prepared> {
        let selection = self.selection();
        let options = self.incremental();
        prepare(
            s3,
            bucket,
            prefix,
            inventory_uri,
            inventory,
            &selection,
            options,
        )
        .await
    }

    /// The thresholds as options: `-c 65000 -s 4GiB`.
    fn thresholds(&self) -> String {
        format!(
            "-c {} -s {}",
            self.count_threshold,
            self.size_threshold.as_argument()
        )
    }

    /// The thresholds as a manifest's user metadata.
    fn threshold_metadata(&self) -> std::collections::BTreeMap<String, String> {
        [
            (COUNT_THRESHOLD_METADATA, self.count_threshold.to_string()),
            (SIZE_THRESHOLD_METADATA, self.size_threshold.as_argument()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }
}

/// The inventory to read (`-m`): shared by `group`, `run` and `plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryArg {
    /// The inventory report's manifest.json (or manifest.checksum, which is then verified).
    #[arg(
        short = 'm',
        long = "manifest",
        value_name = "s3://BUCKET/…/manifest.json"
    )]
    pub manifest: S3Uri,
}

/// `s3bundler group`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Bucket to write the bundle manifests to.
    #[arg(short = 'b', long = "bucket", value_name = "BUCKET", value_parser = crate::s3uri::parse_bucket)]
    pub bucket: String,
    /// Key prefix for the bundle manifests.
    #[arg(short = 'p', long = "prefix", default_value = "s3grouper-output")]
    pub prefix: String,
    /// Name part of each bundle manifest: `<folders>-<KEY>.<N>.index`.
    #[arg(short = 'k', long = "key", default_value = "manifest")]
    pub key: String,
    #[command(flatten)]
    pub grouping: GroupingOptions,
    /// Send one SQS message `{"Bucket":…,"Key":…}` per manifest to this queue (name or URL).
    #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A bundle manifest in its final place.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenManifest {
    pub uri: String,
    pub objects: u64,
    pub bytes: u64,
    /// False when an identical manifest was already there and was left alone.
    pub written: bool,
}

/// What `group` did.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    pub inventory: String,
    /// The bucket the inventory describes: SOURCE in the archive layout.
    pub source_bucket: String,
    #[serde(flatten)]
    pub stats: GroupStats,
    /// The state of the earlier inventory this run grouped against: objects it grouped were
    /// skipped.
    pub earlier_state: Option<String>,
    /// Where this run recorded what it grouped.
    pub state: Option<String>,
    /// Where this run recorded the key range of each manifest, for `locate`.
    pub catalog: Option<String>,
    pub manifests: Vec<WrittenManifest>,
    pub elapsed_seconds: f64,
}

/// `s3bundler group`: groups and prints the summary.
pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &GroupArgs,
    shutdown: Shutdown,
) -> Result<GroupOutcome> {
    let outcome = group_inventory(aws, config, args, shutdown).await?;
    print_summary(&outcome, args.json);
    Ok(outcome)
}

/// Reads the inventory and writes its bundle manifests. On `shutdown`, staged manifests are
/// removed and nothing is committed.
pub async fn group_inventory(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &GroupArgs,
    shutdown: Shutdown,
) -> Result<GroupOutcome> {
    let started = Instant::now();
    let s3 = aws.s3(config);
    let queue = match &args.queue {
        Some(name) => Some(aws.queue(config, name).await?),
        None => None,
    };
    let manifest = &args.inventory.manifest;
    info!("begin processing {manifest}");
    let (inventory_uri, inventory, columns) = open_inventory(&s3, manifest).await?;
    let grouping = &args.grouping;
    let mut prepared = grouping
        .prepare_increment(&s3, &args.bucket, &args.prefix, &inventory_uri, &inventory)
        .await?;
    let increment = std::mem::take(&mut prepared.increment);
    // An incremental run's manifests hold a few changed keys each over a wide range: their
    // catalog entries keep a filter of their keys.
    let keys = match prepared.earlier_state {
        Some(_) => Keys::Filtered,
        None => Keys::RangeOnly,
    };
    let staging = Staging::new(
        &args.bucket,
        &args.prefix,
        &inventory_uri.key,
        &args.key,
        (&inventory.source_bucket, keys),
    );
    let mut sink = StagingSink {
        s3: &s3,
        staging: &staging,
        staged: Vec::new(),
    };
    let read = read_inventory(
        &s3,
        &inventory_uri,
        &inventory,
        columns,
        Rules {
            options: grouping,
            increment,
        },
        &mut sink,
        shutdown,
    )
    .await;
    let staged = sink.staged;
    let (stats, window) = match read {
        Ok(read) => read,
        Err(error) => {
            staging.discard(&s3, &staged).await;
            return Err(error);
        }
    };
    let manifests = commit(&s3, queue.as_ref(), args, &inventory_uri, &staged).await;
    staging.discard(&s3, &staged).await;
    let manifests = manifests?;
    let catalog = record_catalog(
        &s3,
        args,
        &inventory.source_bucket,
        &bundle_manifest_stem(&inventory_uri.key, &args.key),
        staged.iter().zip(&manifests),
    )
    .await?;
    let mut stats = stats;
    stats.manifests_written = manifests.iter().filter(|m| m.written).count() as u64;
    stats.manifests_unchanged = manifests.len() as u64 - stats.manifests_written;
    let selection = grouping.selection();
    let grouped = Grouped {
        inventory: &inventory_uri,
        source_bucket: &inventory.source_bucket,
        selection: &selection,
        manifests: manifests.iter().map(|m| m.uri.clone()).collect(),
        objects: stats.objects_selected,
        bytes: stats.bytes_selected,
        window,
    };
    let state = prepared.record(&s3, grouped).await?;
    Ok(GroupOutcome {
        inventory: inventory_uri.to_string(),
        source_bucket: inventory.source_bucket.clone(),
        stats,
        earlier_state: prepared.earlier_state.as_ref().map(S3Uri::to_string),
        state: state.as_ref().map(S3Uri::to_string),
        catalog: catalog.as_ref().map(S3Uri::to_string),
        manifests,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records the key range of every manifest of this run in the catalog beside them, before the
/// run's state (a run that stops in between is grouped again, identically, and records it
/// then), and compacts the catalog. A compaction that fails is only logged: the run's record is
/// read directly until another compaction takes it.
async fn record_catalog<'m>(
    s3: &S3,
    args: &GroupArgs,
    source: &str,
    label: &str,
    manifests: impl Iterator<Item = (&'m Staged, &'m WrittenManifest)>,
) -> Result<Option<S3Uri>> {
    let entries: Vec<CatalogEntry> = manifests
        .filter_map(|(staged, written)| {
            let manifest = written.uri.parse::<S3Uri>().ok()?.key;
            Some(CatalogEntry {
                manifest,
                ..staged.catalog_entry.clone()?
            })
        })
        .collect();
    if entries.is_empty() {
        return Ok(None);
    }
    let catalog = Catalog::new(s3, &args.bucket, &args.prefix, source);
    let run = catalog.record_run(label, entries).await?;
    if let Err(error) = catalog.compact().await {
        warn!("could not compact the catalog beside {run}: {error}; locate reads this run directly until a later run compacts it");
    }
    Ok(Some(run))
}

/// Reads the inventory's manifest and maps its columns; returns the manifest.json location.
pub async fn open_inventory(
    s3: &S3,
    uri: &S3Uri,
) -> Result<(S3Uri, InventoryManifest, Option<ColumnMap>)> {
    let (inventory_uri, inventory) = load_inventory_manifest(s3, uri).await?;
    // CSV columns come from fileSchema; ORC and Parquet files carry their own schema.
    let columns = match inventory.file_format {
        FileFormat::Csv => Some(ColumnMap::from_csv_schema(
            &inventory.file_schema,
            &inventory_uri.to_string(),
        )?),
        FileFormat::Orc | FileFormat::Parquet => None,
    };
    Ok((inventory_uri, inventory, columns))
}

/// Where closed manifests go: staged on S3 by `group`, counted by `plan`.
pub(crate) trait ManifestSink {
    async fn accept(&mut self, closed: ClosedManifest) -> Result<()>;
}

/// `group`'s sink: every manifest is staged, and remembered for commit or removal.
struct StagingSink<'a> {
    s3: &'a S3,
    staging: &'a Staging,
    staged: Vec<Staged>,
}

impl ManifestSink for StagingSink<'_> {
    async fn accept(&mut self, closed: ClosedManifest) -> Result<()> {
        let item = self.staging.put(self.s3, closed).await?;
        self.staged.push(item);
        Ok(())
    }
}

/// Reads manifest.json, or manifest.checksum and the manifest.json beside it.
async fn load_inventory_manifest(s3: &S3, uri: &S3Uri) -> Result<(S3Uri, InventoryManifest)> {
    let read = |uri: S3Uri| async move {
        s3.get_bytes(&uri, MANIFEST_JSON_LIMIT)
            .await
            .map_err(|failure| Error::reading("GetObject", uri.to_string(), failure))
    };
    let json_uri = match uri.key.strip_suffix(".checksum") {
        Some(stem) if uri.key.ends_with("manifest.checksum") => {
            S3Uri::new(uri.bucket.clone(), format!("{stem}.json"))
        }
        _ => uri.clone(),
    };
    let json = read(json_uri.clone()).await?;
    if json_uri != *uri {
        let checksum = read(uri.clone()).await?;
        verify_checksum(&json, &checksum, &json_uri.to_string())?;
    }
    let manifest = InventoryManifest::parse(&json, &json_uri.to_string())?;
    Ok((json_uri, manifest))
}

/// Where manifests wait until the whole report has been read.
struct Staging {
    bucket: String,
    folder: String,
    /// The inventory's bucket: the catalog records the key range of its rows, and with a
    /// filter of its keys or not.
    source: (String, Keys),
}

/// A manifest uploaded to the staging area.
/// Only the manifest's size and ETag are kept, so memory does not grow with the number of
/// manifests.
struct Staged {
    number: u64,
    objects: u64,
    bytes: u64,
    length: u64,
    etag: Option<String>,
    uri: S3Uri,
    /// Its catalog entry (named by its staged key until committed); `None` when it lists no
    /// key of the source bucket.
    catalog_entry: Option<CatalogEntry>,
}

impl Staging {
    fn new(
        bucket: &str,
        prefix: &str,
        inventory_key: &str,
        key_name: &str,
        (source, keys): (&str, Keys),
    ) -> Self {
        let run_id = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            std::process::id()
        );
        let stem = bundle_manifest_stem(inventory_key, key_name);
        Staging {
            bucket: bucket.to_string(),
            folder: join_prefix(prefix, &format!("_staging/{stem}.{run_id}")),
            source: (source.to_string(), keys),
        }
    }

    async fn put(&self, s3: &S3, manifest: ClosedManifest) -> Result<Staged> {
        // The suffix is not `.index`, so no bundler is notified of a staged manifest.
        let uri = S3Uri::new(
            self.bucket.clone(),
            format!("{}/{}.partial", self.folder, manifest.number),
        );
        let length = manifest.body.len() as u64;
        let (source, keys) = &self.source;
        let catalog_entry =
            CatalogEntry::of_manifest(&uri.to_string(), source, &manifest.body, *keys)?;
        let etag = s3
            .put_bytes(&uri, bytes::Bytes::from(manifest.body), "text/csv")
            .await
            .map_err(|failure| Error::writing("PutObject", uri.to_string(), failure))?;
        Ok(Staged {
            number: manifest.number,
            objects: manifest.objects,
            bytes: manifest.bytes,
            length,
            etag,
            uri,
            catalog_entry,
        })
    }

    /// Removes staged manifests; failures are only logged (a lifecycle rule can expire them).
    async fn discard(&self, s3: &S3, staged: &[Staged]) {
        for item in staged {
            if let Err(failure) = s3.delete(&item.uri).await {
                warn!("could not delete staged manifest {}: {failure}", item.uri);
            }
        }
    }
}

/// How [`read_inventory`] selects and splits: the options, and what earlier inventories
/// grouped.
pub(crate) struct Rules<'a> {
    pub options: &'a GroupingOptions,
    pub increment: Increment,
}

/// How the splitting thread ended.
enum SplitEnd {
    Done(GroupStats, Vec<u128>),
    /// The sink went away; its error is the one to report.
    Stopped,
    Failed(Error),
}

/// Reads every data file (several at a time) through selection and splitting and hands each
/// closed manifest to `sink`, in inventory order. Returns the counts and the fingerprints of
/// the rows this inventory's state remembers (see [`Increment`]).
pub(crate) async fn read_inventory<S: ManifestSink>(
    s3: &S3,
    inventory_uri: &S3Uri,
    inventory: &InventoryManifest,
    columns: Option<ColumnMap>,
    rules: Rules<'_>,
    sink: &mut S,
    mut shutdown: Shutdown,
) -> Result<(GroupStats, Vec<u128>)> {
    let Rules {
        options: grouping,
        increment,
    } = rules;
    let increment = Arc::new(increment);
    let progress = crate::progress::bytes_bar(inventory.total_data_bytes(), "reading inventory");
    let plan = ReadPlan {
        s3: s3.clone(),
        bucket: inventory_uri.bucket.clone(),
        columns,
        parallel: grouping
            .readers
            .map_or_else(default_parallelism, usize::from),
        progress: progress.clone(),
    };
    let selection = Arc::new(grouping.selection());
    let mut batches = OrderedBatches::start(plan, inventory, move || {
        SelectedRows::new(selection.clone(), increment.clone())
    });
    let (closed_tx, mut closed_rx) = mpsc::channel::<ClosedManifest>(2);
    let mut splitter = Splitter::new(grouping.count_threshold, grouping.size_threshold.0);
    let split_progress = progress.clone();
    let splitting = tokio::task::spawn_blocking(move || {
        let mut stats = GroupStats::default();
        let mut window = Vec::new();
        loop {
            let batch = match batches.next_blocking() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => return SplitEnd::Failed(error),
            };
            if closed_tx.is_closed() {
                return SplitEnd::Stopped;
            }
            stats.add(&batch.tally);
            window.extend_from_slice(&batch.window);
            split_progress.set_message(format!("{} rows", stats.rows_seen));
            for (line, size) in batch.lines() {
                if let Some(closed) = splitter.push_line(line, size) {
                    if closed_tx.blocking_send(closed).is_err() {
                        return SplitEnd::Stopped;
                    }
                }
            }
        }
        if let Some(last) = splitter.finish() {
            if closed_tx.blocking_send(last).is_err() {
                return SplitEnd::Stopped;
            }
        }
        SplitEnd::Done(stats, window)
    });

    let mut sink_error = None;
    loop {
        let closed = tokio::select! {
            closed = closed_rx.recv() => closed,
            _ = shutdown.requested() => {
                sink_error = Some(Error::Interrupted);
                break;
            }
        };
        let Some(closed) = closed else { break };
        if let Err(error) = sink.accept(closed).await {
            sink_error = Some(error);
            break;
        }
    }
    drop(closed_rx);
    progress.finish_and_clear();
    let split_end = splitting.await.unwrap_or_else(|join| {
        SplitEnd::Failed(Error::bad_input(
            inventory_uri.to_string(),
            format!("the inventory reader crashed: {join}"),
        ))
    });
    match (split_end, sink_error) {
        (SplitEnd::Failed(error), _) => Err(error),
        (_, Some(error)) => Err(error),
        (SplitEnd::Done(stats, window), None) => Ok((stats, window)),
        (SplitEnd::Stopped, None) => Err(Error::Interrupted),
    }
}

/// Puts staged manifests in their final places, in order, leaving identical ones alone, and
/// sends their queue messages. Every final key is checked before any is written, so that a
/// manifest in place with other content stops the run with nothing written; each write is
/// conditional, so that a run racing this one cannot have its manifest replaced either.
async fn commit(
    s3: &S3,
    queue: Option<&Queue>,
    args: &GroupArgs,
    inventory_uri: &S3Uri,
    staged: &[Staged],
) -> Result<Vec<WrittenManifest>> {
    let targets: Vec<S3Uri> = staged
        .iter()
        .map(|item| {
            let key = bundle_manifest_key(
                &args.prefix,
                &inventory_uri.key,
                &args.key,
                item.number,
                args.grouping.glacier,
            );
            S3Uri::new(args.bucket.clone(), key)
        })
        .collect();
    let mut in_place = Vec::with_capacity(staged.len());
    let mut differing = Vec::new();
    for (item, target) in staged.iter().zip(&targets) {
        match existing(s3, target, item).await? {
            Existing::Nothing => in_place.push(false),
            Existing::Identical => in_place.push(true),
            Existing::Different { grouped_with } => {
                differing.push(describe_differing(target, grouped_with));
            }
        }
    }
    let refusal = |differing, written| Error::ManifestsDiffer {
        differing,
        this_run: args.grouping.thresholds(),
        written,
    };
    if !differing.is_empty() {
        return Err(refusal(differing, 0));
    }
    let metadata = args.grouping.threshold_metadata();
    let mut written: Vec<WrittenManifest> = Vec::with_capacity(staged.len());
    for ((item, target), identical) in staged.iter().zip(targets).zip(in_place) {
        let unchanged = identical
            || match put_if_absent(s3, item, &target, &metadata).await? {
                None => false,
                Some(Existing::Identical) => true,
                Some(Existing::Different { grouped_with }) => {
                    let done = written.iter().filter(|m| m.written).count() as u64;
                    let differing = vec![describe_differing(&target, grouped_with)];
                    return Err(refusal(differing, done));
                }
                // Refused because an object was there, yet none is now: deleted meanwhile.
                Some(Existing::Nothing) => {
                    return Err(Error::writing(
                        "PutObject",
                        target.to_string(),
                        RemoteFailure::PreconditionFailed,
                    ))
                }
            };
        info!(
            objects = item.objects,
            bytes = item.bytes,
            "{} bundle manifest {target}",
            if unchanged { "unchanged" } else { "wrote" }
        );
        if let Some(queue) = queue {
            let body =
                serde_json::json!({ "Bucket": target.bucket, "Key": target.key }).to_string();
            queue.send(body).await?;
        }
        written.push(WrittenManifest {
            uri: target.to_string(),
            objects: item.objects,
            bytes: item.bytes,
            written: !unchanged,
        });
    }
    Ok(written)
}

/// What a manifest's final key holds.
enum Existing {
    Nothing,
    /// Exactly the staged manifest.
    Identical,
    /// Another manifest, and the thresholds it was grouped with when it recorded them.
    Different {
        grouped_with: Option<String>,
    },
}

/// How the refusal names a manifest in place with other content.
fn describe_differing(target: &S3Uri, grouped_with: Option<String>) -> String {
    match grouped_with {
        Some(options) => format!("{target} (grouped with {options})"),
        None => format!(
            "{target} (it recorded no thresholds: written by another tool or an older s3bundler)"
        ),
    }
}

/// Puts a staged manifest at `target` with `If-None-Match: *` (CopyObject takes no such
/// condition), holding only this manifest in memory. `None` when it was written; otherwise S3
/// refused because an object is there (a run racing this one), and this is what it holds.
async fn put_if_absent(
    s3: &S3,
    item: &Staged,
    target: &S3Uri,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Existing>> {
    let body = s3
        .get_bytes(&item.uri, item.length)
        .await
        .map_err(|f| Error::reading("GetObject", item.uri.to_string(), f))?;
    let put = Put {
        metadata: metadata.clone(),
        if_none_match: true,
        ..Put::new("text/csv")
    };
    match s3.put(target, body, &put).await {
        Ok(_) => Ok(None),
        // Also what a retried PUT whose first answer was lost gets: it then finds its own
        // manifest, identical.
        Err(RemoteFailure::PreconditionFailed) => Ok(Some(existing(s3, target, item).await?)),
        Err(failure) => Err(Error::writing("PutObject", target.to_string(), failure)),
    }
}

/// What `target` holds, compared with the staged manifest. S3 computed the staged copy's MD5
/// as its ETag; where ETags are not MD5s (SSE-KMS), the bytes are compared.
async fn existing(s3: &S3, target: &S3Uri, item: &Staged) -> Result<Existing> {
    let head = s3
        .head(target)
        .await
        .map_err(|f| Error::reading("HeadObject", target.to_string(), f))?;
    let Some(head) = head else {
        return Ok(Existing::Nothing);
    };
    let identical = head.size == item.length && {
        let existing_etag = head.etag.clone().unwrap_or_default();
        let staged_etag = item.etag.clone().unwrap_or_default();
        if is_plain_md5(&existing_etag) && is_plain_md5(&staged_etag) {
            existing_etag
                .trim_matches('"')
                .eq_ignore_ascii_case(staged_etag.trim_matches('"'))
        } else {
            let read = |uri: &S3Uri| {
                let uri = uri.clone();
                async move {
                    s3.get_bytes(&uri, item.length)
                        .await
                        .map_err(|f| Error::reading("GetObject", uri.to_string(), f))
                }
            };
            read(target).await? == read(&item.uri).await?
        }
    };
    if identical {
        return Ok(Existing::Identical);
    }
    let recorded = |name| head.metadata.get(name);
    let grouped_with = match (
        recorded(COUNT_THRESHOLD_METADATA),
        recorded(SIZE_THRESHOLD_METADATA),
    ) {
        (Some(count), Some(size)) => Some(format!("-c {count} -s {size}")),
        _ => None,
    };
    Ok(Existing::Different { grouped_with })
}

fn print_summary(outcome: &GroupOutcome, json: bool) {
    if json {
        super::print_json(outcome);
        return;
    }
    let stats = &outcome.stats;
    let skipped = super::counts_line(&stats.skipped);
    println!("grouped {}", outcome.inventory);
    println!("  rows seen          {}", stats.rows_seen);
    println!(
        "  objects selected   {} ({})",
        stats.objects_selected,
        human_bytes(stats.bytes_selected)
    );
    println!("  skipped            {skipped}");
    match &outcome.earlier_state {
        Some(earlier) => println!(
            "  already grouped    {} objects ({}) by earlier runs, as {earlier} records",
            stats.objects_already_grouped,
            human_bytes(stats.bytes_already_grouped)
        ),
        None => {
            println!("  already grouped    none: no earlier state of this selection (or --full)")
        }
    }
    if let Some(state) = &outcome.state {
        println!("  state              {state}");
    }
    if let Some(catalog) = &outcome.catalog {
        println!("  catalog            {catalog}");
    }
    println!(
        "  manifests          {} ({} written, {} unchanged)",
        outcome.manifests.len(),
        stats.manifests_written,
        stats.manifests_unchanged
    );
    let rate = stats.rows_seen as f64 / outcome.elapsed_seconds.max(1e-9);
    println!(
        "  elapsed            {:.2}s ({rate:.0} rows/s)",
        outcome.elapsed_seconds
    );
    if outcome.manifests.is_empty() {
        println!("  no objects were selected, so no manifest was written");
    }
}
