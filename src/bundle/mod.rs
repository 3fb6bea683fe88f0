//! Bundling one manifest: fetch its objects concurrently within a byte budget, frame them as pax
//! tar members in completion order, upload the archive as a multipart upload while it is being
//! written, copy objects too big to bundle, and commit in an order that never loses a record:
//! archive, then DLQ (or removal of an earlier one), then the index, written last as the commit
//! marker. A lease keeps a second worker off the same manifest meanwhile.

pub mod access;
pub mod budget;
pub mod commit;
pub mod copy;
pub mod lease;
pub mod manifest_stream;
pub mod object;
pub mod pacer;
pub mod table_upload;
pub mod upload;
pub mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::types::StorageClass;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use self::access::BucketAccess;
use self::budget::{budget_for, BudgetPermit, ByteBudget};
use self::commit::{Attempt, Places, State};
use self::copy::{copy_big_object, CopySettings};
use self::lease::Lease;
use self::manifest_stream::ManifestStream;
use self::object::{read_whole, ObjectInfo, ObjectReader, ReadFailure, WholeObject};
use self::pacer::Pacer;
use self::table_upload::TableUpload;
use self::upload::{abort_upload, part_size_for};
use self::writer::ArchiveWriter;
use crate::archive::layout::{BundleLayout, Compression};
use crate::archive::pax::{member_header, padding};
use crate::archive::records::{DlqReason, DlqRow, DlqWriter, IndexRow, IndexWriter};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::ManifestEntry;
use crate::retry::{Retrier, RetryPolicy};
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;

pub use self::commit::{
    ARCHIVE_CLASS_METADATA, ARCHIVE_ETAG_METADATA, ARCHIVE_SIZE_METADATA, ARCHIVE_VERSION_METADATA,
    ATTEMPT_METADATA, DLQ_FINAL_METADATA, MANIFEST_ETAG_METADATA, MANIFEST_METADATA,
};

/// Parts of the index and the DLQ, each uploaded as soon as it is full.
const TABLE_PART_SIZE: u64 = 8 << 20;
/// Tar overhead allowance per member for the part-size estimate (pax records with metadata and
/// tags, ustar header, padding).
const MEMBER_OVERHEAD: u64 = 10 << 10;
/// Big objects copied at once.
const CONCURRENT_COPIES: usize = 4;
/// Archive parts uploaded at once.
const CONCURRENT_PARTS: usize = 4;

/// How to bundle.
#[derive(Debug, Clone)]
pub struct BundleSettings {
    pub archive_bucket: String,
    pub prefix: String,
    /// Objects bigger than this are copied to `bigobjects/` instead of archived.
    pub max_size: u64,
    /// Object GETs in flight at first (fewer while S3 throttles).
    pub concurrency: usize,
    /// How far the GETs in flight may grow while S3 answers as fast as it did with fewer:
    /// `concurrency` itself when the user chose it.
    pub concurrency_ceiling: usize,
    /// Bytes of object data held in memory at most; at least two archive parts.
    pub max_in_flight: u64,
    pub storage_class: Option<StorageClass>,
    pub multipart_copy_threshold: u64,
    /// Compression of the archive stream (`.tar.gz`, `.tar.zst`).
    pub compression: Compression,
    /// Counts objects as they are archived, copied or fail (hidden unless on a terminal).
    pub progress: indicatif::ProgressBar,
    /// How long a worker's lease on a manifest lasts without renewal: how soon another worker
    /// may take over a manifest whose worker died.
    pub lease_ttl: Duration,
}

/// What bundling one manifest did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleReport {
    pub manifest: String,
    pub archive: Option<String>,
    pub index: Option<String>,
    pub dlq: Option<String>,
    pub objects_archived: u64,
    pub bytes_archived: u64,
    pub archive_bytes: u64,
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub failed: BTreeMap<DlqReason, u64>,
    pub elapsed_seconds: f64,
    /// Committed before (its index, or its final DLQ, exists): nothing was done this time.
    pub already_done: bool,
}

impl BundleReport {
    /// The metrics of this manifest.
    pub fn counts(&self) -> crate::metrics::Counts {
        if self.already_done {
            return crate::metrics::Counts::default();
        }
        crate::metrics::Counts {
            objects_archived: self.objects_archived,
            bytes_archived: self.bytes_archived,
            objects_copied: self.objects_copied,
            objects_failed: self.failed.clone(),
            manifests_completed: 1,
            errors: 0,
        }
    }

    pub fn objects_failed(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// An entry shared between the scheduler, its fetch task and the writer.
type Entry = Arc<ManifestEntry<'static>>;

/// What the fetchers hand to the archive writer, in completion order.
enum Ready {
    Member(Entry, Box<WholeObject>, BudgetPermit),
    Failed(Entry, ReadFailure),
    /// Bigger than a buffered fetch may be: the writer streams it itself.
    Stream(Entry),
    /// Bigger than `--max-size`: copied on its own, or failed.
    Copied(Entry, Box<std::result::Result<IndexRow, ReadFailure>>),
}

fn dlq_row(entry: &ManifestEntry<'_>, reason: DlqReason, detail: String) -> DlqRow {
    DlqRow {
        bucket: entry.bucket.to_string(),
        key: entry.key.to_string(),
        version_id: entry.version_id.as_deref().map(str::to_string),
        size: entry.size,
        last_modified: entry.last_modified.as_deref().map(str::to_string),
        reason,
        detail,
    }
}

/// The outcomes so far: what the report says, and what the accounting checks.
struct Tally {
    report: BundleReport,
    progress: indicatif::ProgressBar,
}

impl Tally {
    fn new(progress: indicatif::ProgressBar) -> Self {
        Tally {
            report: BundleReport::default(),
            progress,
        }
    }

    /// Counts a failed object (whether a denial is the bucket's is `access`'s to say).
    fn failed(&mut self, reason: DlqReason) {
        *self.report.failed.entry(reason).or_default() += 1;
        self.progress.inc(1);
    }

    fn archived(&mut self, size: u64) {
        self.report.objects_archived += 1;
        self.report.bytes_archived += size;
        self.progress.inc(1);
    }

    fn copied(&mut self, size: u64) {
        self.report.objects_copied += 1;
        self.report.bytes_copied += size;
        self.progress.inc(1);
    }

    /// Every object of the manifest must be archived, copied or in the DLQ before anything is
    /// committed: an object unaccounted for would be lost once the originals are pruned.
    fn check_accounted(&self, manifest: &S3Uri, entries: u64) -> Result<()> {
        let report = &self.report;
        let failed = report.failed.values().sum::<u64>();
        let accounted = report.objects_archived + report.objects_copied + failed;
        if accounted == entries {
            return Ok(());
        }
        Err(Error::Incomplete {
            manifest: manifest.to_string(),
            detail: format!(
                "{} archived + {} copied + {failed} failed = {accounted}, but the manifest lists \
                 {entries} objects",
                report.objects_archived, report.objects_copied
            ),
        })
    }
}

/// Outputs being assembled for one manifest: the tally, and the index and the DLQ, uploaded
/// as they grow.
pub(crate) struct Outputs {
    tally: Tally,
    index: TableUpload<IndexWriter>,
    dlq: TableUpload<DlqWriter>,
}

impl Outputs {
    fn new(s3: &S3, places: &Places, attempt: &Attempt, progress: indicatif::ProgressBar) -> Self {
        Outputs {
            tally: Tally::new(progress),
            index: TableUpload::new(
                s3,
                places.index.clone(),
                IndexWriter::default(),
                attempt.metadata(),
                TABLE_PART_SIZE,
            ),
            dlq: TableUpload::new(
                s3,
                places.dlq.clone(),
                DlqWriter::default(),
                attempt.metadata(),
                TABLE_PART_SIZE,
            ),
        }
    }

    async fn fail(
        &mut self,
        entry: &ManifestEntry<'_>,
        reason: DlqReason,
        detail: String,
    ) -> Result<()> {
        warn!(object = %format!("s3://{}/{}", entry.bucket, entry.key), reason = reason.as_str(), "could not archive: {detail}");
        self.dlq.table().push(&dlq_row(entry, reason, detail));
        self.tally.failed(reason);
        self.dlq.spill_if_full().await
    }

    async fn archived(&mut self, row: IndexRow) -> Result<()> {
        self.tally.archived(row.size);
        self.index.table().push(&row);
        self.index.spill_if_full().await
    }

    /// Aborts the uploads of the index and the DLQ, if they were started.
    async fn abort(&mut self) {
        self.index.abort().await;
        self.dlq.abort().await;
    }
}

fn index_row(
    entry: &ManifestEntry<'_>,
    info: &ObjectInfo,
    md5: String,
    member: String,
    header_offset: u64,
    data_offset: u64,
) -> IndexRow {
    IndexRow {
        bucket: entry.bucket.to_string(),
        key: entry.key.to_string(),
        version_id: info.version_id.clone(),
        size: info.size,
        last_modified: info.last_modified.clone(),
        etag: info.etag.clone(),
        md5,
        storage_class: info.storage_class.clone(),
        content_type: info.content_type.clone().unwrap_or_default(),
        metadata: info.metadata.clone(),
        tags: info.tags.clone(),
        member,
        header_offset: Some(header_offset),
        data_offset: Some(data_offset),
    }
}

fn member_name(entry: &ManifestEntry<'_>) -> String {
    format!("{}/{}", entry.bucket, entry.key)
}

/// Bundles the manifest at `manifest_uri`.
/// On `shutdown` every upload is aborted and nothing is committed.
pub async fn bundle_manifest(
    s3: &S3,
    manifest_uri: &S3Uri,
    settings: &BundleSettings,
    shutdown: Shutdown,
) -> Result<BundleReport> {
    let started = Instant::now();
    info!("begin processing {manifest_uri}");
    let mut stop = shutdown.clone();
    let read = tokio::select! {
        read = read_manifest(s3, manifest_uri, settings) => read?,
        _ = stop.requested() => return Err(Error::Interrupted),
    };
    let report = BundleReport {
        manifest: manifest_uri.to_string(),
        ..BundleReport::default()
    };
    let (summary, places) = match read {
        Read::Empty => return Ok(report),
        Read::Done(marker) => return Ok(already_done(report, marker)),
        Read::ToDo(todo) => *todo,
    };
    // Refused before anything is written: the budget cannot hold the parts this archive needs.
    budget_for(settings.max_in_flight, summary.part_size())
        .map_err(|e| Error::Usage(format!("{manifest_uri}: {e}")))?;
    let mut lease = Lease::acquire(s3, places.lease(), settings.lease_ttl, manifest_uri).await?;
    let bundled = match prepare_leased(s3, &summary, &places).await {
        Ok(None) => bundle_leased(s3, &summary, settings, &places, &mut lease, shutdown).await,
        Ok(Some(marker)) => {
            lease.release().await;
            return Ok(already_done(report, marker));
        }
        Err(error) => Err(error),
    };
    lease.release().await;
    let mut report = BundleReport {
        manifest: report.manifest,
        ..bundled?
    };
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    info!(
        objects = report.objects_archived,
        bytes = report.bytes_archived,
        copied = report.objects_copied,
        failed = report.objects_failed(),
        "successfully archived {manifest_uri} to {}",
        report
            .archive
            .as_deref()
            .unwrap_or("(no archive: nothing could be read)")
    );
    Ok(report)
}

/// A manifest as read, before its lease.
enum Read {
    Empty,
    /// Committed already: its index, or its final DLQ.
    Done(S3Uri),
    ToDo(Box<(ManifestSummary, Places)>),
}

/// What a first pass over a manifest learns, without holding its entries: enough to name the
/// outputs, size the archive's parts and account for every object. Every line is parsed, so
/// a bad one is reported before anything is written.
struct ManifestSummary {
    entries: u64,
    /// Objects over `--max-size`, copied rather than archived.
    big: u64,
    /// The tar bytes the archived objects will take, roughly.
    archive_estimate: u64,
    first_bucket: String,
    /// The version read: the later passes read exactly this one.
    etag: Option<String>,
}

impl ManifestSummary {
    async fn read(s3: &S3, uri: &S3Uri, max_size: u64) -> Result<Self> {
        let mut stream = ManifestStream::open(s3, uri, None).await?;
        let mut summary = ManifestSummary {
            entries: 0,
            big: 0,
            // The end-of-archive blocks.
            archive_estimate: 1024,
            first_bucket: String::new(),
            etag: None,
        };
        while let Some(batch) = stream.next_batch().await? {
            if let (0, Some(first)) = (summary.entries, batch.first()) {
                summary.first_bucket = first.bucket.to_string();
            }
            for entry in batch {
                summary.entries += 1;
                if entry.size > max_size {
                    summary.big += 1;
                } else {
                    summary.archive_estimate = summary
                        .archive_estimate
                        .saturating_add(entry.size.saturating_add(MEMBER_OVERHEAD));
                }
            }
        }
        summary.etag = stream.etag().map(str::to_string);
        Ok(summary)
    }

    /// The archive's part size: 8 MiB, or more so that it fits 10,000 parts.
    fn part_size(&self) -> u64 {
        part_size_for(self.archive_estimate, 8 << 20)
    }

    /// What this manifest's records say (see [`commit::inspect`]).
    async fn inspect(&self, s3: &S3, places: &Places) -> Result<State> {
        commit::inspect(s3, places, self.etag.as_deref(), self.entries).await
    }
}

/// Reads the manifest's summary, and checks whether it was committed already. Committed
/// records are never written again, whatever their dates say; a record of another manifest
/// at one of this manifest's places is refused before anything is written.
async fn read_manifest(s3: &S3, manifest_uri: &S3Uri, settings: &BundleSettings) -> Result<Read> {
    let summary = ManifestSummary::read(s3, manifest_uri, settings.max_size).await?;
    if summary.entries == 0 {
        warn!("{manifest_uri} lists no objects; nothing to bundle, nothing written");
        return Ok(Read::Empty);
    }
    let layout = BundleLayout::new(
        &settings.prefix,
        &summary.first_bucket,
        &manifest_uri.key,
        settings.compression,
    );
    let places = Places::new(&settings.archive_bucket, manifest_uri, &layout);
    match summary.inspect(s3, &places).await? {
        State::Committed(marker) => Ok(Read::Done(marker)),
        State::Open(_) => Ok(Read::ToDo(Box::new((summary, places)))),
    }
}

/// Under the lease: another worker may have committed the manifest meanwhile (its marker is
/// returned), and what attempts that stopped left behind is the holder's to remove before it
/// writes anything.
async fn prepare_leased(
    s3: &S3,
    summary: &ManifestSummary,
    places: &Places,
) -> Result<Option<S3Uri>> {
    match summary.inspect(s3, places).await? {
        State::Committed(marker) => Ok(Some(marker)),
        State::Open(leftovers) => {
            commit::remove_leftovers(s3, &leftovers).await?;
            Ok(None)
        }
    }
}

fn already_done(mut report: BundleReport, marker: S3Uri) -> BundleReport {
    info!(
        "skipping {}: already bundled ({marker} exists, and committed records are never \
         replaced)",
        report.manifest
    );
    report.already_done = true;
    report.index = Some(marker.to_string());
    report
}

/// Bundles a manifest whose lease this worker holds, then commits it.
async fn bundle_leased(
    s3: &S3,
    summary: &ManifestSummary,
    settings: &BundleSettings,
    places: &Places,
    lease: &mut Lease,
    shutdown: Shutdown,
) -> Result<BundleReport> {
    let started_at = epoch_seconds();
    let budget = ByteBudget::new(settings.max_in_flight);
    // Only the lease holder gets here: uploads of these outputs started earlier belong to an
    // attempt that stopped.
    abort_earlier_attempts(s3, places, started_at).await;
    let attempt = Attempt::new(&places.manifest, summary.etag.as_deref());
    let mine = attempt.identity();
    let mut writer = ArchiveWriter::new(
        s3,
        places.archive.clone(),
        settings.compression,
        settings.storage_class.clone(),
        summary.part_size(),
        CONCURRENT_PARTS,
        attempt.metadata(),
    )?;
    let mut outputs = Outputs::new(s3, places, &attempt, settings.progress.clone());
    let fetching = Fetching {
        s3: s3.clone(),
        policy: s3.settings().retry,
        pacer: Pacer::new(settings.concurrency, settings.concurrency_ceiling),
        access: Arc::default(),
    };
    let open_copies = OpenUploads::default();
    let copy_lane = CopyLane {
        fetching: fetching.clone(),
        settings: CopySettings {
            bucket: settings.archive_bucket.clone(),
            prefix: settings.prefix.clone(),
            storage_class: settings.storage_class.clone(),
            multipart_threshold: settings.multipart_copy_threshold,
            open_uploads: open_copies.clone(),
            attempt_started: started_at,
        },
        max_size: settings.max_size,
    };
    let mut copies = JoinSet::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>(settings.concurrency.max(1));
    let mut scheduler = tokio::spawn(schedule(
        fetching.clone(),
        Pass::new(&places.manifest, summary),
        settings.max_size,
        budget.clone(),
        settings.concurrency_ceiling,
        ready_tx.clone(),
    ));
    let copying = copy_lane.run(
        (summary.big > 0).then(|| Pass::new(&places.manifest, summary)),
        &mut copies,
        ready_tx,
    );
    let mut members = Members {
        fetching: &fetching,
        writer: &mut writer,
        outputs: &mut outputs,
        shutdown,
    };
    let archived = async {
        tokio::try_join!(members.write_all(ready_rx, lease), copying)?;
        // Every fetch has reported: the scheduler ends now, or it failed (a task panicked).
        match (&mut scheduler).await {
            Ok(result) => result?,
            Err(e) => return Err(lost_task(&places.manifest, "the fetch scheduler", e)),
        }
        members
            .outputs
            .tally
            .check_accounted(&places.manifest, summary.entries)?;
        lease.ensure_held()?;
        tokio::select! {
            finished = members.writer.finish(&mine) => finished,
            _ = members.shutdown.requested() => Err(Error::Interrupted),
        }
    }
    .await;
    let committed = match archived {
        Ok(finished) => commit::commit(s3, places, lease, &mut outputs, finished, &mine).await,
        Err(error) => Err(error),
    };
    if committed.is_err() {
        scheduler.abort();
        copies.abort_all();
        while copies.join_next().await.is_some() {}
        open_copies.abort_all(s3).await;
        writer.abort().await;
        outputs.abort().await;
    }
    // Still the lease holder: any upload open at these places now is one of this attempt's
    // whose CreateMultipartUpload answer was lost (its retry opened another).
    abort_earlier_attempts(s3, places, i64::MAX).await;
    committed
}

fn lost_task(manifest: &S3Uri, what: &str, error: tokio::task::JoinError) -> Error {
    Error::Incomplete {
        manifest: manifest.to_string(),
        detail: format!("{what} ended without reporting its objects ({error})"),
    }
}

fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A worker killed mid-manifest leaves its multipart uploads behind (the archive, and the
/// index or DLQ when they had grown past a part); the next holder of the manifest's lease aborts
/// those started before `before` so no storage is billed for them (the bucket's lifecycle rule
/// is the backstop for archives never attempted again). Best effort: a failure is only logged.
/// The two listings run at once: each is a round trip every manifest waits for before its
/// first GET.
async fn abort_earlier_attempts(s3: &S3, places: &Places, before: i64) {
    let groups = [vec![&places.archive, &places.index], vec![&places.dlq]];
    futures_util::future::join_all(groups.iter().map(|targets| async move {
        match s3.abort_uploads_before(targets, before).await {
            Ok(0) => {}
            Ok(n) => info!(
                "aborted {n} incomplete upload(s) of {} left by an earlier attempt",
                targets[0]
            ),
            Err(failure) => debug!(
                "could not list earlier uploads of {}: {failure}",
                targets[0]
            ),
        }
    }))
    .await;
}

/// What every fetch shares: the client, the retry policy and the adaptive GET gate.
#[derive(Clone)]
struct Fetching {
    s3: S3,
    policy: RetryPolicy,
    pacer: Arc<Pacer>,
    /// Whose each AccessDenied is, the object's or its bucket's.
    access: Arc<BucketAccess>,
}

impl Fetching {
    /// Runs one read of an object through the GET gate, trying it again while it fails
    /// transiently (throttled answers also lower the gate's limit) until the retry policy's
    /// time is up; then it is a `Retry` DLQ row.
    async fn patiently<T, F, Fut>(&self, mut read: F) -> std::result::Result<T, ReadFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, ReadFailure>>,
    {
        let mut retrier = Retrier::new(self.policy);
        loop {
            let slot = self.pacer.acquire().await;
            // Boxed: an SDK request's future is about 10 KiB, and every future holding it
            // inline was copied whole each time it moved (into a spawned task, out of a join);
            // that was 14% of bundle's instructions per small object.
            let outcome = Box::pin(read()).await;
            drop(slot);
            match outcome {
                Ok(value) => {
                    self.pacer.succeeded();
                    return Ok(value);
                }
                Err(ReadFailure::Transient(failure)) => {
                    if matches!(failure, RemoteFailure::Throttled(_)) {
                        self.pacer.throttled();
                    }
                    if !retrier.again(&failure).await {
                        return Err(ReadFailure::Dlq(
                            DlqReason::Retry,
                            retrier.gave_up(&failure).to_string(),
                        ));
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// One more pass over the manifest, of the version its summary read.
struct Pass {
    uri: S3Uri,
    etag: Option<String>,
}

impl Pass {
    fn new(uri: &S3Uri, summary: &ManifestSummary) -> Self {
        Pass {
            uri: uri.clone(),
            etag: summary.etag.clone(),
        }
    }

    async fn open(&self, s3: &S3) -> Result<ManifestStream> {
        ManifestStream::open(s3, &self.uri, self.etag.as_deref()).await
    }
}

/// Starts fetches of the objects to archive, in manifest order, reading the manifest as it
/// goes: each waits for its bytes in the budget and a task slot; its GETs go through the
/// adaptive gate. Objects too big to buffer are passed to the writer to stream. Ends when
/// every fetch has handed its result over, or when the writer stops listening; a fetch task
/// that panicked fails the manifest.
async fn schedule(
    fetching: Fetching,
    pass: Pass,
    max_size: u64,
    budget: ByteBudget,
    concurrency: usize,
    ready: mpsc::Sender<Ready>,
) -> Result<()> {
    // A third: at the default budget, three 64 MiB objects are fetched at once.
    let stream_threshold = budget.capacity() / 3;
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut fetches = JoinSet::new();
    let failed_task = |e: tokio::task::JoinError| Error::Incomplete {
        manifest: pass.uri.to_string(),
        detail: format!("a fetch task ended without reporting its object ({e})"),
    };
    let mut manifest = pass.open(&fetching.s3).await?;
    while let Some(batch) = manifest.next_batch().await? {
        for entry in batch.into_iter().filter(|e| e.size <= max_size) {
            let entry = Arc::new(entry);
            if entry.size > stream_threshold {
                if ready.send(Ready::Stream(entry)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            let permit = budget.acquire(entry.size).await;
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return Ok(());
            };
            if ready.is_closed() {
                return Ok(());
            }
            let (fetching, ready) = (fetching.clone(), ready.clone());
            fetches.spawn(async move {
                let outcome = fetching
                    .patiently(|| read_whole(&fetching.s3, &entry))
                    .await;
                drop(slot);
                if let Ok(object) = &outcome {
                    fetching.pacer.answered(object.answered_in);
                }
                let message = match outcome {
                    Ok(object) => Ready::Member(entry, Box::new(object), permit),
                    Err(failure) => Ready::Failed(entry, failure),
                };
                let _ = ready.send(message).await;
            });
            while let Some(joined) = fetches.try_join_next() {
                joined.map_err(failed_task)?;
            }
        }
    }
    while let Some(joined) = fetches.join_next().await {
        joined.map_err(failed_task)?;
    }
    Ok(())
}

/// Copies the objects over `--max-size` (a few at once) as a pass over the manifest finds
/// them, and hands each outcome to the writer. The copy tasks live in the caller's set, so
/// that a manifest that stops can wait for them before it aborts their uploads.
struct CopyLane {
    fetching: Fetching,
    settings: CopySettings,
    max_size: u64,
}

impl CopyLane {
    async fn run(
        self,
        pass: Option<Pass>,
        copies: &mut JoinSet<()>,
        ready: mpsc::Sender<Ready>,
    ) -> Result<()> {
        let Some(pass) = pass else { return Ok(()) };
        let slots = Arc::new(Semaphore::new(CONCURRENT_COPIES));
        let settings = Arc::new(self.settings);
        let failed_task = |e| lost_task(&pass.uri, "a big-object copy", e);
        let mut manifest = pass.open(&self.fetching.s3).await?;
        while let Some(batch) = manifest.next_batch().await? {
            for entry in batch.into_iter().filter(|e| e.size > self.max_size) {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return Ok(());
                };
                let (fetching, settings, ready) =
                    (self.fetching.clone(), settings.clone(), ready.clone());
                let entry = Arc::new(entry);
                copies.spawn(async move {
                    let result = fetching
                        .patiently(|| copy_big_object(&fetching.s3, &entry, &settings))
                        .await;
                    drop(slot);
                    let _ = ready.send(Ready::Copied(entry, Box::new(result))).await;
                });
                while let Some(joined) = copies.try_join_next() {
                    joined.map_err(failed_task)?;
                }
            }
        }
        while let Some(joined) = copies.join_next().await {
            joined.map_err(failed_task)?;
        }
        Ok(())
    }
}

async fn record_failure(
    fetching: &Fetching,
    entry: &ManifestEntry<'_>,
    failure: ReadFailure,
    outputs: &mut Outputs,
) -> Result<()> {
    let (reason, detail) = match failure {
        ReadFailure::Dlq(reason, detail) => (reason, detail),
        ReadFailure::Denied(detail) => fetching.access.judge(&fetching.s3, entry, detail).await?,
        ReadFailure::ChangedDuringRead => (
            DlqReason::Changed,
            "the object changed while it was being read".into(),
        ),
        ReadFailure::Corrupt(detail) => (DlqReason::ChecksumMismatch, detail),
        ReadFailure::Transient(failure) => (DlqReason::Retry, failure.to_string()),
        ReadFailure::Fatal(error) => return Err(error),
    };
    outputs.fail(entry, reason, detail).await
}

/// Where a member's header and data start in the tar stream.
struct MemberStart {
    name: String,
    header_offset: u64,
    data_offset: u64,
}

/// Writes a member's pax and ustar headers.
async fn begin_member(
    writer: &mut ArchiveWriter,
    entry: &ManifestEntry<'_>,
    info: &ObjectInfo,
) -> Result<MemberStart> {
    let name = member_name(entry);
    let header_offset = writer.offset();
    writer
        .write(&member_header(
            &name,
            info.size,
            info.mtime,
            &info.attributes(),
        ))
        .await?;
    Ok(MemberStart {
        name,
        header_offset,
        data_offset: writer.offset(),
    })
}

/// Pads the member's data to a whole block; returns its index row.
async fn end_member(
    writer: &mut ArchiveWriter,
    entry: &ManifestEntry<'_>,
    info: &ObjectInfo,
    md5: String,
    start: MemberStart,
) -> Result<IndexRow> {
    writer
        .write(&[0u8; 512][..padding(info.size) as usize])
        .await?;
    Ok(index_row(
        entry,
        info,
        md5,
        start.name,
        start.header_offset,
        start.data_offset,
    ))
}

/// The archive writer's side of a manifest: members in completion order, then the copies.
struct Members<'a> {
    fetching: &'a Fetching,
    writer: &'a mut ArchiveWriter,
    outputs: &'a mut Outputs,
    shutdown: Shutdown,
}

impl Members<'_> {
    /// Writes every fetched member until the fetchers are done. Stops on a stop request or
    /// when the lease is lost.
    async fn write_all(
        &mut self,
        mut ready_rx: mpsc::Receiver<Ready>,
        lease: &mut Lease,
    ) -> Result<()> {
        let mut stop = self.shutdown.clone();
        loop {
            let ready = tokio::select! {
                ready = ready_rx.recv() => ready,
                _ = stop.requested() => return Err(Error::Interrupted),
                _ = lease.lost() => return Err(lease.lost_error()),
            };
            let Some(ready) = ready else { return Ok(()) };
            // A stop request is honoured inside a member too (a streamed object, a part
            // upload waiting for its turn): the upload is aborted, so no half member remains.
            // The rare arms are boxed: this future is built for every member, and inline
            // their SDK requests made it kilobytes to copy each time.
            let written = async {
                match ready {
                    Ready::Member(entry, object, permit) => {
                        self.append(&entry, *object).await?;
                        self.writer.hold(permit);
                        Ok(())
                    }
                    Ready::Failed(entry, failure) => {
                        Box::pin(record_failure(self.fetching, &entry, failure, self.outputs)).await
                    }
                    Ready::Stream(entry) => Box::pin(self.stream(&entry)).await,
                    Ready::Copied(entry, copied) => match *copied {
                        Ok(row) => {
                            info!(object = %format!("s3://{}/{}", entry.bucket, entry.key), "copied to {}", row.member);
                            self.outputs.tally.copied(row.size);
                            Ok(())
                        }
                        Err(failure) => {
                            Box::pin(record_failure(self.fetching, &entry, failure, self.outputs))
                                .await
                        }
                    },
                }
            };
            tokio::select! {
                written = written => written?,
                _ = stop.requested() => return Err(Error::Interrupted),
            }
        }
    }

    async fn append(&mut self, entry: &ManifestEntry<'_>, object: WholeObject) -> Result<()> {
        let WholeObject {
            info, data, md5, ..
        } = object;
        let start = begin_member(self.writer, entry, &info).await?;
        self.writer.write_owned(Bytes::from(data)).await?;
        let row = end_member(self.writer, entry, &info, md5, start).await?;
        self.outputs.archived(row).await
    }

    /// Streams an object too big to buffer straight into the archive. If it fails for good
    /// mid-way (cut beyond its resumes, changed, an MD5 that differs from its ETag), the member
    /// is taken back out of the archive and the object goes to the DLQ; the manifest goes on.
    async fn stream(&mut self, entry: &ManifestEntry<'_>) -> Result<()> {
        let s3 = &self.fetching.s3;
        let opened = self
            .fetching
            .patiently(|| ObjectReader::open(s3, entry))
            .await;
        let (info, reader) = match opened {
            Ok(opened) => opened,
            Err(failure) => {
                return record_failure(self.fetching, entry, failure, self.outputs).await
            }
        };
        let checkpoint = self.writer.checkpoint().await?;
        match self.stream_body(entry, &info, reader).await {
            Ok(row) => self.outputs.archived(row).await,
            Err(ReadFailure::Fatal(error)) => Err(error),
            Err(failure) => {
                self.writer.rollback(checkpoint).await?;
                debug!(object = %format!("s3://{}/{}", entry.bucket, entry.key), "taken back out of the archive");
                record_failure(self.fetching, entry, failure, self.outputs).await
            }
        }
    }

    async fn stream_body(
        &mut self,
        entry: &ManifestEntry<'_>,
        info: &ObjectInfo,
        mut reader: ObjectReader,
    ) -> std::result::Result<IndexRow, ReadFailure> {
        let start = begin_member(self.writer, entry, info)
            .await
            .map_err(ReadFailure::Fatal)?;
        while let Some(chunk) = reader.next_chunk().await? {
            self.writer
                .write(&chunk)
                .await
                .map_err(ReadFailure::Fatal)?;
        }
        let md5 = reader.md5_hex();
        if info.md5_checkable() && md5 != info.etag.to_ascii_lowercase() {
            return Err(ReadFailure::Dlq(
                DlqReason::ChecksumMismatch,
                format!("read MD5 {md5} differs from the ETag {}", info.etag),
            ));
        }
        end_member(self.writer, entry, info, md5, start)
            .await
            .map_err(ReadFailure::Fatal)
    }
}

/// Multipart uploads started for big-object copies and not yet completed or aborted: when a
/// manifest stops (a failure, a stop request), its copy tasks are cancelled wherever they are,
/// and these are aborted so that no upload is left behind. A copy cancelled while its
/// CreateMultipartUpload was in flight (or whose answer was lost) has an upload nobody knows
/// the id of: its target is remembered from before the request, and listed.
#[derive(Clone, Default, Debug)]
pub struct OpenUploads(Arc<Mutex<Open>>);

#[derive(Default, Debug)]
struct Open {
    /// Upload id → target.
    known: BTreeMap<String, S3Uri>,
    /// Targets whose CreateMultipartUpload was sent and not answered yet.
    creating: Vec<S3Uri>,
}

impl OpenUploads {
    /// Before CreateMultipartUpload of `target`.
    pub fn creating(&self, target: &S3Uri) {
        if let Ok(mut open) = self.0.lock() {
            open.creating.push(target.clone());
        }
    }

    pub fn opened(&self, target: &S3Uri, upload_id: &str) {
        if let Ok(mut open) = self.0.lock() {
            if let Some(at) = open.creating.iter().position(|t| t == target) {
                open.creating.swap_remove(at);
            }
            open.known.insert(upload_id.to_string(), target.clone());
        }
    }

    pub fn closed(&self, upload_id: &str) {
        if let Ok(mut open) = self.0.lock() {
            open.known.remove(upload_id);
        }
    }

    async fn abort_all(&self, s3: &S3) {
        let open = self
            .0
            .lock()
            .map(|mut open| std::mem::take(&mut *open))
            .unwrap_or_default();
        for (upload_id, target) in open.known {
            abort_upload(s3, &target, &upload_id).await;
        }
        for target in open.creating {
            if let Err(failure) = s3.abort_uploads_before(&[&target], i64::MAX).await {
                warn!("could not list the uploads of {target} to abort them: {failure}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_committed_unless_every_object_is_accounted_for() {
        let manifest = S3Uri::new("m", "a.0.index");
        let mut tally = Tally::new(indicatif::ProgressBar::hidden());
        tally.archived(10);
        tally.copied(20);
        tally.failed(DlqReason::NoSuchKey);
        assert!(tally.check_accounted(&manifest, 3).is_ok());
        // A fetch that vanished leaves one object without an outcome.
        let error = tally.check_accounted(&manifest, 4).err();
        assert!(
            matches!(&error, Some(Error::Incomplete { detail, .. }) if detail.contains("lists 4")),
            "{error:?}"
        );
    }
}
