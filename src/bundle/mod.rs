//! Bundling one manifest: fetch its objects concurrently within a byte budget, frame them as pax
//! tar members in completion order, upload the archive as a multipart upload while it is being
//! written, copy objects too big to bundle, and commit: archive, then index, then DLQ.

pub mod budget;
pub mod copy;
pub mod object;
pub mod upload;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::types::StorageClass;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use self::budget::{BudgetPermit, ByteBudget};
use self::copy::{copy_big_object, CopySettings};
use self::object::{read_whole, ObjectInfo, ObjectReader, ReadFailure, WholeObject};
use self::upload::part_size_for;
use self::writer::ArchiveWriter;
use crate::archive::layout::{BundleLayout, Compression};
use crate::archive::pax::{member_header, padding};
use crate::archive::records::{DlqReason, DlqRow, DlqWriter, IndexRow, IndexWriter};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::{parse_manifest, ManifestEntry};
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;

/// A bundle manifest holds at most `-c` lines; refuse absurd ones rather than hold them.
const MANIFEST_LIMIT: u64 = 4 << 30;
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
    /// Object GETs in flight.
    pub concurrency: usize,
    /// Bytes of object data held in memory at most (raised to 4 parts if smaller).
    pub max_in_flight: u64,
    pub storage_class: Option<StorageClass>,
    pub multipart_copy_threshold: u64,
    /// Compression of the archive stream (`.tar.gz`, `.tar.zst`).
    pub compression: Compression,
    /// Counts objects as they are archived, copied or fail (hidden unless on a terminal).
    pub progress: indicatif::ProgressBar,
    /// Leave a manifest alone when its index (or, if every object failed, its DLQ) is at least
    /// as new as the manifest: it was bundled already (a resumed run, a message delivered twice).
    pub skip_done: bool,
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
    /// Bundled before (see `BundleSettings::skip_done`): nothing was done this time.
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

/// Outputs being assembled for one manifest.
struct Outputs {
    index: IndexWriter,
    dlq: DlqWriter,
    report: BundleReport,
    progress: indicatif::ProgressBar,
}

impl Outputs {
    fn fail(&mut self, entry: &ManifestEntry<'_>, reason: DlqReason, detail: String) {
        warn!(object = %format!("s3://{}/{}", entry.bucket, entry.key), reason = reason.as_str(), "could not archive: {detail}");
        self.dlq.push(&dlq_row(entry, reason, detail));
        *self.report.failed.entry(reason).or_default() += 1;
        self.progress.inc(1);
    }

    fn archived(&mut self, row: IndexRow) {
        self.report.objects_archived += 1;
        self.report.bytes_archived += row.size;
        self.index.push(&row);
        self.progress.inc(1);
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
/// On `shutdown` the archive upload is aborted and nothing is committed.
pub async fn bundle_manifest(
    s3: &S3,
    manifest_uri: &S3Uri,
    settings: &BundleSettings,
    mut shutdown: Shutdown,
) -> Result<BundleReport> {
    let started = Instant::now();
    let started_at = epoch_seconds();
    info!("begin processing {manifest_uri}");
    let bytes = s3
        .get_bytes(manifest_uri, MANIFEST_LIMIT)
        .await
        .map_err(|f| Error::reading("GetObject", manifest_uri.to_string(), f))?;
    let entries: Vec<Entry> = parse_manifest(&bytes, &manifest_uri.to_string())?
        .into_iter()
        .map(|e| Arc::new(e.into_owned()))
        .collect();
    drop(bytes);
    let mut report = BundleReport {
        manifest: manifest_uri.to_string(),
        ..BundleReport::default()
    };
    let Some(first) = entries.first() else {
        warn!("{manifest_uri} lists no objects; nothing to bundle, nothing written");
        return Ok(report);
    };
    let layout = BundleLayout::new(
        &settings.prefix,
        &first.bucket,
        &manifest_uri.key,
        settings.compression,
    );
    if settings.skip_done {
        if let Some(marker) = done_marker(s3, manifest_uri, settings, &layout).await? {
            info!("skipping {manifest_uri}: already bundled ({marker} is not older than it)");
            report.already_done = true;
            report.index = Some(marker.to_string());
            return Ok(report);
        }
    }
    let (big, small): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| e.size > settings.max_size);

    let estimate = small.iter().map(|e| e.size + MEMBER_OVERHEAD).sum::<u64>() + 1024;
    let part_size = part_size_for(estimate, 8 << 20);
    let budget = ByteBudget::new(settings.max_in_flight.max(4 * part_size));
    let archive_uri = S3Uri::new(settings.archive_bucket.clone(), layout.archive_key.clone());
    abort_earlier_attempts(s3, &archive_uri, started_at).await;
    let mut writer = ArchiveWriter::new(
        s3,
        archive_uri.clone(),
        settings.compression,
        settings.storage_class.clone(),
        part_size,
        CONCURRENT_PARTS,
    )?;
    let mut outputs = Outputs {
        index: IndexWriter::default(),
        dlq: DlqWriter::default(),
        report: BundleReport::default(),
        progress: settings.progress.clone(),
    };

    let copy_settings = CopySettings {
        bucket: settings.archive_bucket.clone(),
        prefix: settings.prefix.clone(),
        storage_class: settings.storage_class.clone(),
        multipart_threshold: settings.multipart_copy_threshold,
    };
    let mut copies = spawn_copies(s3, big, copy_settings);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(settings.concurrency.max(1));
    let scheduler = tokio::spawn(schedule(
        s3.clone(),
        small,
        budget.clone(),
        settings.concurrency,
        ready_tx,
    ));

    let written = async {
        loop {
            let ready = tokio::select! {
                ready = ready_rx.recv() => ready,
                _ = shutdown.requested() => return Err(Error::Interrupted),
            };
            let Some(ready) = ready else { break };
            match ready {
                Ready::Member(entry, object, permit) => {
                    append_member(&mut writer, &entry, *object, &mut outputs).await?;
                    writer.hold(permit);
                }
                Ready::Failed(entry, failure) => record_failure(&entry, failure, &mut outputs)?,
                Ready::Stream(entry) => {
                    stream_member(s3, &mut writer, &entry, &mut outputs).await?
                }
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    drop(ready_rx);
    // On success every sender is gone, so the scheduler has finished; on failure it may be
    // waiting for budget the writer holds, so it is stopped with its fetches.
    scheduler.abort();
    let copied = match written {
        Ok(()) => collect_copies(&mut copies, &settings.archive_bucket, &mut outputs).await,
        Err(error) => Err(error),
    };
    if let Err(error) = copied {
        copies.abort_all();
        writer.abort().await;
        return Err(error);
    }
    let archive_bytes = writer.finish().await?;

    // Commit: the archive is complete; now the index, then the DLQ.
    report.objects_archived = outputs.report.objects_archived;
    report.bytes_archived = outputs.report.bytes_archived;
    report.objects_copied = outputs.report.objects_copied;
    report.bytes_copied = outputs.report.bytes_copied;
    report.failed = outputs.report.failed;
    if let Some(size) = archive_bytes {
        report.archive = Some(archive_uri.to_string());
        report.archive_bytes = size;
    }
    if report.objects_archived + report.objects_copied > 0 {
        let index_uri = S3Uri::new(settings.archive_bucket.clone(), layout.index_key.clone());
        s3.put_bytes(&index_uri, outputs.index.finish().into(), "text/csv")
            .await
            .map_err(|f| Error::writing("PutObject", index_uri.to_string(), f))?;
        report.index = Some(index_uri.to_string());
    }
    let dlq_uri = S3Uri::new(manifest_uri.bucket.clone(), layout.dlq_key.clone());
    if outputs.dlq.rows() > 0 {
        s3.put_bytes(&dlq_uri, outputs.dlq.finish().into(), "text/csv")
            .await
            .map_err(|f| Error::writing("PutObject", dlq_uri.to_string(), f))?;
        report.dlq = Some(dlq_uri.to_string());
    } else if let Err(failure) = s3.delete(&dlq_uri).await {
        // A DLQ left by an earlier run of this manifest would now be wrong.
        if failure != RemoteFailure::NotFound {
            warn!("could not remove the earlier DLQ {dlq_uri}: {failure}");
        }
    }
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

fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A worker killed mid-manifest leaves its multipart upload behind; the next attempt at the
/// same archive aborts it so no storage is billed for it (the bucket's lifecycle rule is the
/// backstop for archives never attempted again). Best effort: a failure is only logged.
async fn abort_earlier_attempts(s3: &S3, archive: &S3Uri, started_at: i64) {
    match s3.abort_uploads_before(archive, started_at).await {
        Ok(0) => {}
        Ok(n) => info!("aborted {n} incomplete upload(s) of {archive} left by an earlier attempt"),
        Err(failure) => debug!("could not list earlier uploads of {archive}: {failure}"),
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch(time: &str) -> Option<i64> {
    aws_sdk_s3::primitives::DateTime::from_str(
        time,
        aws_sdk_s3::primitives::DateTimeFormat::DateTime,
    )
    .ok()
    .map(|t| t.secs())
}

/// The index of an earlier bundling of this manifest, or its DLQ when every object failed,
/// if it is at least as new as the manifest (a manifest rewritten since is bundled again).
async fn done_marker(
    s3: &S3,
    manifest_uri: &S3Uri,
    settings: &BundleSettings,
    layout: &BundleLayout,
) -> Result<Option<S3Uri>> {
    let head = |uri: S3Uri| async move {
        match s3.head(&uri).await {
            Ok(found) => Ok(found.map(|head| (uri, head.last_modified.as_deref().and_then(epoch)))),
            Err(failure) => Err(Error::reading("HeadObject", uri.to_string(), failure)),
        }
    };
    let index = S3Uri::new(settings.archive_bucket.clone(), layout.index_key.clone());
    let dlq = S3Uri::new(manifest_uri.bucket.clone(), layout.dlq_key.clone());
    let marker = match head(index).await? {
        Some(found) => found,
        None => match head(dlq).await? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let manifest = head(manifest_uri.clone()).await?;
    let written = manifest.and_then(|(_, modified)| modified);
    Ok(match (marker, written) {
        ((uri, Some(marker)), Some(written)) if marker < written => {
            info!("{uri} is older than {manifest_uri}: the manifest changed, bundling it again");
            None
        }
        ((uri, _), _) => Some(uri),
    })
}

/// Starts fetches in manifest order: each waits for its bytes in the budget and a GET slot.
/// Objects too big to buffer are passed to the writer to stream. Ends when every fetch has
/// handed its result over, or when the writer stops listening.
async fn schedule(
    s3: S3,
    entries: Vec<Entry>,
    budget: ByteBudget,
    concurrency: usize,
    ready: mpsc::Sender<Ready>,
) {
    // A third: at the default budget, three 64 MiB objects are fetched at once.
    let stream_threshold = budget.capacity() / 3;
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut fetches = JoinSet::new();
    for entry in entries {
        if entry.size > stream_threshold {
            if ready.send(Ready::Stream(entry)).await.is_err() {
                return;
            }
            continue;
        }
        let permit = budget.acquire(entry.size).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if ready.is_closed() {
            return;
        }
        let (s3, ready) = (s3.clone(), ready.clone());
        fetches.spawn(async move {
            let outcome = read_whole(&s3, &entry).await;
            drop(slot);
            let message = match outcome {
                Ok(object) => Ready::Member(entry, Box::new(object), permit),
                Err(failure) => Ready::Failed(entry, failure),
            };
            let _ = ready.send(message).await;
        });
        while fetches.try_join_next().is_some() {}
    }
    while fetches.join_next().await.is_some() {}
}

fn record_failure(
    entry: &ManifestEntry<'_>,
    failure: ReadFailure,
    outputs: &mut Outputs,
) -> Result<()> {
    match failure {
        ReadFailure::Dlq(reason, detail) => outputs.fail(entry, reason, detail),
        ReadFailure::ChangedDuringRead => outputs.fail(
            entry,
            DlqReason::Changed,
            "the object changed while it was being read".into(),
        ),
        ReadFailure::Corrupt(detail) => outputs.fail(entry, DlqReason::ChecksumMismatch, detail),
        ReadFailure::Fatal(error) => return Err(error),
    }
    Ok(())
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

/// Pads the member's data to a whole block and records it in the index.
async fn end_member(
    writer: &mut ArchiveWriter,
    entry: &ManifestEntry<'_>,
    info: &ObjectInfo,
    md5: String,
    start: MemberStart,
    outputs: &mut Outputs,
) -> Result<()> {
    writer
        .write(&[0u8; 512][..padding(info.size) as usize])
        .await?;
    outputs.archived(index_row(
        entry,
        info,
        md5,
        start.name,
        start.header_offset,
        start.data_offset,
    ));
    Ok(())
}

async fn append_member(
    writer: &mut ArchiveWriter,
    entry: &ManifestEntry<'_>,
    object: WholeObject,
    outputs: &mut Outputs,
) -> Result<()> {
    let WholeObject { info, data, md5 } = object;
    let start = begin_member(writer, entry, &info).await?;
    writer.write_owned(Bytes::from(data)).await?;
    end_member(writer, entry, &info, md5, start, outputs).await
}

/// Streams an object too big to buffer straight into the archive. Once its header is written
/// its bytes cannot be taken back, so a failure past that point fails the manifest (the upload
/// is aborted) instead of leaving a damaged member.
async fn stream_member(
    s3: &S3,
    writer: &mut ArchiveWriter,
    entry: &ManifestEntry<'_>,
    outputs: &mut Outputs,
) -> Result<()> {
    let (info, mut reader) = match ObjectReader::open(s3, entry).await {
        Ok(opened) => opened,
        Err(failure) => return record_failure(entry, failure, outputs),
    };
    let uri = format!("s3://{}/{}", entry.bucket, entry.key);
    let fatal = |detail: String| Error::Remote {
        operation: "GetObject",
        location: uri.clone(),
        detail,
    };
    let midway = |failure: ReadFailure| match failure {
        ReadFailure::Fatal(error) => error,
        ReadFailure::Dlq(_, detail) => fatal(detail),
        ReadFailure::ChangedDuringRead => {
            fatal("the object changed while it was being archived; run the manifest again".into())
        }
        ReadFailure::Corrupt(detail) => fatal(format!(
            "{detail}; the member cannot be taken back out of the archive, run the manifest again"
        )),
    };
    let start = begin_member(writer, entry, &info).await?;
    while let Some(chunk) = reader.next_chunk().await.map_err(midway)? {
        writer.write(&chunk).await?;
    }
    let md5 = reader.md5_hex();
    if info.md5_checkable() && md5 != info.etag.to_ascii_lowercase() {
        return Err(fatal(format!(
            "read MD5 {md5} differs from the ETag {}; run the manifest again",
            info.etag
        )));
    }
    end_member(writer, entry, &info, md5, start, outputs).await
}

type CopyResult = (Entry, std::result::Result<IndexRow, ReadFailure>);

fn spawn_copies(s3: &S3, big: Vec<Entry>, settings: CopySettings) -> JoinSet<CopyResult> {
    let mut copies = JoinSet::new();
    let slots = Arc::new(Semaphore::new(CONCURRENT_COPIES));
    let settings = Arc::new(settings);
    for entry in big {
        let (s3, slots, settings) = (s3.clone(), slots.clone(), settings.clone());
        copies.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = copy_big_object(&s3, &entry, &settings).await;
            (entry, result)
        });
    }
    copies
}

async fn collect_copies(
    copies: &mut JoinSet<CopyResult>,
    archive_bucket: &str,
    outputs: &mut Outputs,
) -> Result<()> {
    while let Some(joined) = copies.join_next().await {
        let (entry, result) = joined.map_err(|e| Error::Remote {
            operation: "CopyObject",
            location: "a big-object copy".into(),
            detail: format!("the copy task failed: {e}"),
        })?;
        match result {
            Ok(row) => {
                info!(object = %format!("s3://{}/{}", entry.bucket, entry.key), "copied to s3://{archive_bucket}/{}", row.member);
                outputs.report.objects_copied += 1;
                outputs.progress.inc(1);
                outputs.report.bytes_copied += row.size;
            }
            Err(failure) => record_failure(&entry, failure, outputs)?,
        }
    }
    Ok(())
}
