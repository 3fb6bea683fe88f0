//! Reading a manifest's outputs back from S3 and checking them: the manifest, its index and
//! DLQ, the archive (its length, and every member's header by range GETs of windows of the
//! archive, or one decompressed pass for a compressed one; with `deep`, every member's MD5 and
//! the source's ETag where it is a plain MD5), and the big-object copies.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use tracing::debug;

use super::spill::{Partition, Partitions};
use super::{reconcile, BigCopy, ManifestReport, Outputs, Status};
use crate::archive::layout::{big_object_key, is_bundle_output, BundleLayout, Compression, CopyOf};
use crate::archive::pax::END_OF_ARCHIVE;
use crate::archive::records::{dlq_rows, index_rows, parse_index, DlqRow, IndexRow};
use crate::archive::scan::{layout, plan_windows, Scanner, Span, Window};
use crate::bundle::copy::{SOURCE_ETAG_METADATA, SOURCE_VERSION_METADATA};
use crate::bundle::{
    ARCHIVE_ETAG_METADATA, ARCHIVE_SIZE_METADATA, ARCHIVE_VERSION_METADATA, ATTEMPT_METADATA,
};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::{manifest_entries, parse_manifest, ManifestEntry};
use crate::reading::{decompressed, Chunks, ReadError, RowStream};
use crate::redrive::{entry_object, ObjectId};
use crate::s3::{ObjectHead, S3};
use crate::s3uri::S3Uri;

/// Limit on the size of a manifest, index, DLQ or `.metadata` read whole.
const TABLE_LIMIT: u64 = 4 << 30;
/// A window read with one range GET: at most this many bytes…
const MAX_WINDOW: u64 = 8 << 20;
/// …reading through gaps (other members' data) of at most this many bytes.
const MAX_GAP: u64 = 256 << 10;

/// What to check and where.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub archive_bucket: String,
    pub prefix: String,
    /// Re-read every member and check its MD5 (and the source's ETag).
    pub deep: bool,
    /// Requests in flight.
    pub concurrency: usize,
    /// Objects bigger than this were copied to bigobjects/ (bundle's `-s`).
    pub max_size: u64,
}

/// One manifest, checked.
#[derive(Debug, Clone, Default)]
pub struct ManifestCheck {
    pub report: ManifestReport,
    pub manifest: Option<S3Uri>,
    pub entries: Vec<ManifestEntry<'static>>,
    pub statuses: Vec<Status>,
    pub index: Vec<IndexRow>,
    pub big: Vec<BigCopy>,
    pub dlq: Vec<DlqRow>,
    /// The archive, the index and every copy check out: nothing wrong but objects that are
    /// missing or in the DLQ.
    pub archive_sound: bool,
}

/// The bundle manifests under `uri`: keys ending `.index`, except staged ones and the indexes
/// `bundle` wrote under `prefix` (when the manifests share the archive bucket).
pub async fn list_manifests(
    s3: &S3,
    uri: &S3Uri,
    archive_bucket: &str,
    prefix: &str,
) -> Result<Vec<S3Uri>> {
    let keys = s3
        .list(uri)
        .await
        .map_err(|f| Error::reading("ListObjectsV2", uri.to_string(), f))?;
    let same_bucket = uri.bucket == archive_bucket;
    Ok(keys
        .into_iter()
        .filter(|(key, _)| key.ends_with(".index") && !key.contains("_staging/"))
        .filter(|(key, _)| !(same_bucket && is_bundle_output(prefix, key)))
        .map(|(key, _)| S3Uri::new(uri.bucket.clone(), key))
        .collect())
}

/// The objects the manifests `later` list (a manifest's later redrives): small manifests of DLQ
/// rows, read whole.
pub async fn redriven_objects(s3: &S3, later: &[S3Uri]) -> Result<HashSet<ObjectId>> {
    let mut objects = HashSet::new();
    for uri in later {
        if let Some(bytes) = get_optional(s3, uri).await? {
            let entries = parse_manifest(&bytes, &uri.to_string())?;
            objects.extend(entries.iter().map(entry_object));
        }
    }
    Ok(objects)
}

/// Reads a small object whole; `None` when it does not exist.
pub async fn get_optional(s3: &S3, uri: &S3Uri) -> Result<Option<bytes::Bytes>> {
    match s3.get_bytes(uri, TABLE_LIMIT).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(RemoteFailure::NotFound) => Ok(None),
        Err(failure) => Err(Error::reading("GetObject", uri.to_string(), failure)),
    }
}

/// Index rows checked against the archive at a time. The index is read as it downloads, never
/// whole; `bundle` writes it in archive order, so each chunk's members follow the previous
/// chunk's (a row that goes back is reported as overlapping the member before it).
const CHUNK_ROWS: usize = 8192;

/// Reads an object as it downloads; `None` when it does not exist.
async fn get_stream_optional(s3: &S3, uri: &S3Uri) -> Result<Option<crate::s3::GetStream>> {
    match s3.get_stream(uri).await {
        Ok(got) => Ok(Some(got)),
        Err(RemoteFailure::NotFound) => Ok(None),
        Err(failure) => Err(Error::reading("GetObject", uri.to_string(), failure)),
    }
}

/// A table that could not be read to its end: a download that kept failing is the command's
/// error; damage is a problem of the manifest.
fn table_problem(report: &mut ManifestReport, error: Error) -> Result<()> {
    match error {
        Error::Remote { .. } => Err(error),
        damaged => {
            report.manifest_problem(damaged.to_string());
            Ok(())
        }
    }
}

/// Checks one manifest's outputs. The manifest, its index and its DLQ stream through: the index
/// in chunks against the archive, then everything spilled by (bucket, key) to [`Partitions`]
/// and matched one partition at a time. With `keep_rows`, the entries, statuses and rows are
/// kept in the result too (for `prune`), which then grows with the manifest.
/// `redriven`: the objects the later redrive manifests of its family list (see
/// [`redriven_objects`]); its DLQ rows for them are [`Status::Redriven`].
pub async fn check_manifest(
    s3: &S3,
    manifest_uri: &S3Uri,
    settings: &CheckSettings,
    keep_rows: bool,
    redriven: &HashSet<ObjectId>,
) -> Result<ManifestCheck> {
    let mut check = ManifestCheck {
        report: ManifestReport {
            manifest: manifest_uri.to_string(),
            ..ManifestReport::default()
        },
        manifest: Some(manifest_uri.clone()),
        ..ManifestCheck::default()
    };
    let Some(got) = get_stream_optional(s3, manifest_uri).await? else {
        check.report.manifest_problem("the manifest does not exist");
        return Ok(check);
    };
    let mut partitions = Partitions::for_manifest(got.size)?;
    let location = manifest_uri.to_string();
    let mut entries = RowStream::start(s3, manifest_uri, got, move |reader| {
        Ok(manifest_entries(reader, &location))
    });
    let (mut source, mut objects) = (None, 0usize);
    while let Some(entry) = entries.next().await {
        match entry {
            Ok(entry) => {
                source.get_or_insert_with(|| entry.bucket.to_string());
                partitions.entry(objects, &entry)?;
                objects += 1;
            }
            Err(e) => {
                table_problem(&mut check.report, e)?;
                return Ok(check);
            }
        }
    }
    let Some(source) = source else {
        check.archive_sound = true;
        return Ok(check);
    };
    let layout_keys = BundleLayout::new(
        &settings.prefix,
        &source,
        &manifest_uri.key,
        Compression::None,
    );
    let index_uri = S3Uri::new(
        settings.archive_bucket.clone(),
        layout_keys.index_key.clone(),
    );
    let dlq_uri = S3Uri::new(manifest_uri.bucket.clone(), layout_keys.dlq_key.clone());
    if let Some(got) = get_stream_optional(s3, &index_uri).await? {
        let claimed = ArchiveClaim::of_index(s3, &index_uri).await?;
        check.report.index = Some(index_uri.to_string());
        let location = index_uri.to_string();
        let mut rows = RowStream::start(s3, &index_uri, got, move |reader| {
            index_rows(reader, &location)
        });
        let mut archive = ArchiveScan::default();
        let mut number = 0usize;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            let mut failed = None;
            while chunk.len() < CHUNK_ROWS {
                match rows.next().await {
                    Some(Ok(row)) => chunk.push(row),
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let full = chunk.len() == CHUNK_ROWS;
            if !chunk.is_empty() {
                if archive.found.is_none() {
                    archive
                        .find(
                            s3,
                            &mut check.report,
                            &source,
                            manifest_uri,
                            settings,
                            &claimed,
                        )
                        .await?;
                }
                let (chunk, problems) = archive.check(s3, chunk, settings).await?;
                for (row, problem) in chunk.iter().zip(&problems) {
                    partitions.index(number, row, problem.as_deref())?;
                    number += 1;
                }
            }
            match failed {
                Some(e) => {
                    table_problem(&mut check.report, e)?;
                    break;
                }
                None if !full => break,
                None => {}
            }
        }
        archive.finish(&mut check.report).await;
    }
    if let Some(got) = get_stream_optional(s3, &dlq_uri).await? {
        check.report.dlq = Some(dlq_uri.to_string());
        let location = dlq_uri.to_string();
        let mut rows =
            RowStream::start(s3, &dlq_uri, got, move |reader| dlq_rows(reader, &location));
        let mut number = 0usize;
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) => {
                    partitions.dlq(number, &row)?;
                    number += 1;
                }
                Err(e) => {
                    table_problem(&mut check.report, e)?;
                    break;
                }
            }
        }
    }
    for partition in partitions.read_back()? {
        reconcile_partition(s3, &mut check, partition?, settings, keep_rows, redriven).await?;
    }
    check.archive_sound = check.report.counts.manifest_problems == 0
        && check.report.counts.mismatched == 0
        && check.report.counts.unexpected == 0;
    Ok(check)
}

/// Matches one partition's objects with its rows and records what it found.
async fn reconcile_partition(
    s3: &S3,
    check: &mut ManifestCheck,
    partition: Partition,
    settings: &CheckSettings,
    keep_rows: bool,
    redriven: &HashSet<ObjectId>,
) -> Result<()> {
    let entries: Vec<ManifestEntry<'static>> =
        partition.entries.into_iter().map(|(_, e)| e).collect();
    let mut index_numbers = Vec::with_capacity(partition.index.len());
    let mut index = Vec::with_capacity(partition.index.len());
    let mut index_problems = Vec::with_capacity(partition.index.len());
    for (number, row, problem) in partition.index {
        index_numbers.push(number);
        index.push(row);
        index_problems.push(problem);
    }
    let (dlq_numbers, dlq): (Vec<usize>, Vec<DlqRow>) = partition.dlq.into_iter().unzip();
    let big = find_big_copies(s3, &entries, &index, &dlq, settings).await?;
    let outputs = Outputs {
        index: &index,
        index_numbers: &index_numbers,
        dlq_numbers: &dlq_numbers,
        index_problems: &index_problems,
        big: &big,
        dlq: &dlq,
    };
    let (statuses, unclaimed) = reconcile(&entries, &outputs);
    let statuses: Vec<Status> = statuses
        .into_iter()
        .zip(&entries)
        .map(|(status, entry)| match status {
            Status::InDlq(_) if redriven.contains(&entry_object(entry)) => Status::Redriven,
            other => other,
        })
        .collect();
    check
        .report
        .record(&entries, &statuses, &unclaimed, &outputs);
    if keep_rows {
        let (i, b, d) = (check.index.len(), check.big.len(), check.dlq.len());
        check
            .statuses
            .extend(statuses.into_iter().map(|s| s.after(i, b, d)));
        check.entries.extend(entries);
        check.index.extend(index);
        check.big.extend(big);
        check.dlq.extend(dlq);
    }
    Ok(())
}

/// The archive an index was committed for: its ETag, version and size, from the index's
/// metadata (indexes written before they carried it, and indexes uploaded in parts, claim less).
#[derive(Debug, Default)]
struct ArchiveClaim {
    etag: Option<String>,
    version_id: Option<String>,
    /// Its size in bytes, as written.
    size: Option<String>,
    /// The attempt that wrote the index; its archive carries the same id.
    attempt: Option<String>,
}

impl ArchiveClaim {
    async fn of_index(s3: &S3, index: &S3Uri) -> Result<Self> {
        let head = s3
            .head(index)
            .await
            .map_err(|f| Error::reading("HeadObject", index.to_string(), f))?;
        let mut metadata = head.map(|h| h.metadata).unwrap_or_default();
        Ok(ArchiveClaim {
            etag: metadata.remove(ARCHIVE_ETAG_METADATA),
            version_id: metadata.remove(ARCHIVE_VERSION_METADATA),
            size: metadata.remove(ARCHIVE_SIZE_METADATA),
            attempt: metadata.remove(ATTEMPT_METADATA),
        })
    }

    /// Whether the index names its archive (by ETag or attempt), so that a HEAD can prove it.
    fn names_archive(&self) -> bool {
        self.etag.is_some() || self.attempt.is_some()
    }

    /// Why `head` is not the archive claimed, if it is not.
    fn mismatch(&self, archive: &S3Uri, head: &ObjectHead) -> Option<String> {
        let etag = head.etag.as_deref().unwrap_or_default().trim_matches('"');
        let replaced = |what: &str, found: &str, claimed: &str| {
            format!(
                "{archive} is not the archive its index was committed for ({what} {found}, the \
                 index names {claimed}): it was replaced since; restore the committed version \
                 (a versioned bucket keeps it) or keep the originals, which prune leaves alone"
            )
        };
        if let Some(claimed) = self.etag.as_deref().filter(|c| *c != etag) {
            return Some(replaced("ETag", etag, claimed));
        }
        let size = head.size.to_string();
        if let Some(claimed) = self.size.as_deref().filter(|c| *c != size) {
            return Some(replaced("bytes", &size, claimed));
        }
        if let Some(claimed) = self.attempt.as_deref() {
            let found = head
                .metadata
                .get(ATTEMPT_METADATA)
                .map_or("none", String::as_str);
            if found != claimed {
                return Some(replaced("written by attempt", found, claimed));
            }
        }
        // An unversioned bucket's objects have no version, or the version `null`.
        let version = head.version_id.as_deref().unwrap_or("null");
        match self.version_id.as_deref() {
            Some(claimed) if claimed != version => Some(replaced("version", version, claimed)),
            _ => None,
        }
    }
}

/// The archive of an index being checked chunk by chunk.
#[derive(Default)]
struct ArchiveScan {
    /// Looked for: the archive, or `None` when it does not exist.
    found: Option<Option<Found>>,
    /// Length of the uncompressed tar stream the rows so far imply (0 before any row).
    expected_length: u64,
}

/// The archive found, and for a compressed one, its stream being read.
struct Found {
    uri: S3Uri,
    compression: Compression,
    size: u64,
    /// Its storage class when it cannot be read without a restore: proven by its HEAD against
    /// the index's records, its rows checked for consistency, never read.
    cold: Option<String>,
    stream: Option<StreamFeed>,
    /// Why the compressed stream could not be read on, once it could not.
    stream_stopped: Option<Stopped>,
}

impl ArchiveScan {
    /// Finds the archive and checks that it is the one its index was committed for.
    async fn find(
        &mut self,
        s3: &S3,
        report: &mut ManifestReport,
        source: &str,
        manifest_uri: &S3Uri,
        settings: &CheckSettings,
        claimed: &ArchiveClaim,
    ) -> Result<()> {
        for compression in Compression::ALL {
            let key = BundleLayout::new(&settings.prefix, source, &manifest_uri.key, compression)
                .archive_key;
            let uri = S3Uri::new(settings.archive_bucket.clone(), key);
            let head = s3
                .head(&uri)
                .await
                .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
            if let Some(head) = head {
                if let Some(problem) = claimed.mismatch(&uri, &head) {
                    report.manifest_problem(problem);
                }
                let cold = head.cold.then(|| {
                    let class = head.storage_class.clone().unwrap_or_default();
                    cold_problems(report, &uri, &class, compression, claimed, settings.deep);
                    class
                });
                report.archive = Some(uri.to_string());
                report.counts.cold_archives += u64::from(cold.is_some());
                report.cold = cold.clone();
                self.found = Some(Some(Found {
                    uri,
                    compression,
                    size: head.size,
                    cold,
                    stream: None,
                    stream_stopped: None,
                }));
                return Ok(());
            }
        }
        report.manifest_problem(MISSING_ARCHIVE);
        self.found = Some(None);
        Ok(())
    }

    /// Checks a chunk of index rows (following the previous chunks) against the archive: a
    /// problem per row.
    async fn check(
        &mut self,
        s3: &S3,
        chunk: Vec<IndexRow>,
        settings: &CheckSettings,
    ) -> Result<(Vec<IndexRow>, Vec<Option<String>>)> {
        let Some(Some(found)) = &mut self.found else {
            let problems = vec![Some(MISSING_ARCHIVE.to_string()); chunk.len()];
            return Ok((chunk, problems));
        };
        let previous_end = self
            .expected_length
            .saturating_sub(END_OF_ARCHIVE.len() as u64);
        let members = layout(&chunk, previous_end);
        self.expected_length = members.expected_length.max(self.expected_length);
        let mut problems: Vec<Option<String>> = vec![None; chunk.len()];
        for (row, problem) in &members.problems {
            problems[*row] = Some(problem.clone());
        }
        // Shared with the window tasks, and handed back below.
        if found.cold.is_some() {
            return Ok((chunk, problems));
        }
        let rows = Arc::new(chunk);
        let verdicts = if found.compression == Compression::None {
            let windows = plan_windows(&members.ordered, settings.deep, MAX_WINDOW, MAX_GAP);
            scan_windows(
                s3,
                &found.uri,
                found.size,
                rows.clone(),
                &members.ordered,
                windows,
                settings,
            )
            .await
        } else {
            found
                .scan_stream(s3, &rows, &members.ordered, settings.deep)
                .await?
        };
        let chunk = Arc::try_unwrap(rows).unwrap_or_else(|shared| (*shared).clone());
        for (row, verdict) in verdicts {
            if let Err(problem) = verdict {
                problems[row] = Some(problem);
            }
        }
        if settings.deep {
            compare_with_sources(s3, &chunk, &mut problems, settings.concurrency).await?;
        }
        Ok((chunk, problems))
    }

    /// After the last chunk: the archive's length against what the index accounts for.
    async fn finish(self, report: &mut ManifestReport) {
        let Some(Some(mut found)) = self.found else {
            return;
        };
        let expected = self.expected_length;
        let archive_uri = &found.uri;
        if found.compression == Compression::None {
            if found.size != expected {
                report.manifest_problem(format!(
                    "{archive_uri} is {} bytes but its index accounts for {expected}{}",
                    found.size,
                    if found.size < expected {
                        ": the archive is truncated"
                    } else {
                        ""
                    }
                ));
            }
            return;
        }
        if found.cold.is_some() {
            // Its size was checked against the index's record instead.
            return;
        }
        // Every byte is read, to compare the stream's length with the index.
        let length = match (found.stream_stopped.take(), found.stream.as_mut()) {
            (None, Some(stream)) => stream.read_to_end().await,
            (Some(Stopped::Ended), Some(stream)) => Ok(stream.position),
            (Some(stopped), _) => Err(stopped.reason()),
            (None, None) => Ok(0),
        };
        match length {
            Ok(length) if length != expected => report.manifest_problem(format!(
                "{archive_uri} decompresses to {length} bytes but its index accounts for {expected}"
            )),
            Ok(_) => {}
            Err(e) => report.manifest_problem(format!("{archive_uri} cannot be read whole: {e}")),
        }
    }
}

/// What keeps a cold archive from being proven by its HEAD: an index that does not name it or
/// its size (a compressed archive's size is not implied by the rows), or `--deep`, which
/// needs its bytes.
fn cold_problems(
    report: &mut ManifestReport,
    archive: &S3Uri,
    class: &str,
    compression: Compression,
    claimed: &ArchiveClaim,
    deep: bool,
) {
    let unprovable = if !claimed.names_archive() {
        Some("its index does not name it (no s3bundler-archive-etag or s3bundler-attempt)")
    } else if compression != Compression::None && claimed.size.is_none() {
        Some("its index does not record its size (s3bundler-archive-size)")
    } else {
        None
    };
    if let Some(why) = unprovable {
        report.manifest_problem(format!(
            "{archive} is in {class} and cannot be proven without a restore: {why}; restore it \
             (S3 RestoreObject) and verify again, or keep the originals, which prune leaves alone"
        ));
    }
    if deep {
        report.manifest_problem(format!(
            "{archive} is in {class} and not restored: --deep reads every member, which needs \
             a restore (S3 RestoreObject); restore it and run --deep again, or verify without \
             --deep, which proves it by its HEAD against its index"
        ));
    }
}

const MISSING_ARCHIVE: &str =
    "the index exists but its archive (.tar, .tar.gz or .tar.zst) does not";

impl Found {
    /// Checks `members` from the compressed archive's stream, read on from where the previous
    /// chunk left it (from the start, the first time; again from there when the connection
    /// drops).
    async fn scan_stream(
        &mut self,
        s3: &S3,
        rows: &[IndexRow],
        members: &[(usize, Span)],
        deep: bool,
    ) -> Result<Verdicts> {
        if let Some(stopped) = &self.stream_stopped {
            let scanner = Scanner::new(rows, members.to_vec(), 0, deep);
            return Ok(scanner.finish(&stopped.reason()));
        }
        let start = self.stream.as_ref().map_or(0, |s| s.position);
        let mut attempt = 1;
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => self
                    .stream
                    .insert(StreamFeed::open(s3, &self.uri, self.compression, start).await?),
            };
            let mut scanner = Scanner::new(rows, members.to_vec(), stream.position, deep);
            match stream.feed(&mut scanner).await {
                Err(Stopped::Transient(why)) if attempt < READ_ATTEMPTS => {
                    debug!("{}: {why}; reading again", self.uri);
                    attempt += 1;
                    self.stream = None;
                }
                Ok(()) => return Ok(scanner.finish("the archive ended")),
                Err(stopped) => {
                    let verdicts = scanner.finish(&stopped.reason());
                    self.stream_stopped = Some(stopped);
                    return Ok(verdicts);
                }
            }
        }
    }
}

/// The decompressed stream of a compressed archive, read on chunk after chunk.
struct StreamFeed {
    chunks: Chunks,
    /// Bytes read but not yet taken.
    pending: bytes::Bytes,
    /// Offset in the stream of the first pending byte.
    position: u64,
}

impl StreamFeed {
    /// The stream from `position` on (the bytes before are read and dropped).
    async fn open(
        s3: &S3,
        archive: &S3Uri,
        compression: Compression,
        position: u64,
    ) -> Result<Self> {
        let got = s3
            .get_stream(archive)
            .await
            .map_err(|f| Error::reading("GetObject", archive.to_string(), f))?;
        let mut stream = StreamFeed {
            chunks: decompressed(got.body, compression),
            pending: bytes::Bytes::new(),
            position: 0,
        };
        while stream.position < position {
            // A failure here shows again at the first read, where the caller handles it.
            if stream.fill().await.is_err() {
                break;
            }
            let skip = (position - stream.position).min(stream.pending.len() as u64);
            stream.take(skip as usize);
        }
        Ok(stream)
    }

    fn take(&mut self, n: usize) {
        let _ = self.pending.split_to(n);
        self.position += n as u64;
    }

    /// Makes sure some bytes are pending.
    async fn fill(&mut self) -> Result<(), Stopped> {
        while self.pending.is_empty() {
            self.pending = match self.chunks.next().await {
                Some(Ok(bytes)) => bytes,
                Some(Err(ReadError::Cut(why))) => {
                    return Err(Stopped::Transient(format!("body cut off: {why}")))
                }
                Some(Err(ReadError::Corrupt(why))) => return Err(Stopped::Damaged(why)),
                None => return Err(Stopped::Ended),
            };
        }
        Ok(())
    }

    /// Feeds the scanner until it has every member it wants.
    async fn feed(&mut self, scanner: &mut Scanner<'_>) -> Result<(), Stopped> {
        while scanner.wants_more() {
            self.fill().await?;
            let before = scanner.position();
            scanner.feed(&self.pending);
            let taken = scanner.position() - before;
            self.take(taken as usize);
        }
        Ok(())
    }

    /// Reads the rest; returns the stream's whole length.
    async fn read_to_end(&mut self) -> Result<u64, String> {
        loop {
            match self.fill().await {
                Ok(()) => self.take(self.pending.len()),
                Err(Stopped::Ended) => return Ok(self.position),
                Err(stopped) => return Err(stopped.reason()),
            }
        }
    }
}

type Verdicts = Vec<(usize, Result<(), String>)>;

/// The members of `window`, in offset order.
fn window_members(ordered: &[(usize, Span)], window: &Window) -> Vec<(usize, Span)> {
    let wanted: std::collections::HashSet<usize> = window.rows.iter().copied().collect();
    ordered
        .iter()
        .filter(|(row, _)| wanted.contains(row))
        .copied()
        .collect()
}

/// Why the bytes a scanner wanted stopped coming.
enum Stopped {
    /// The archive (or the range) ended first.
    Ended,
    /// The connection dropped or a request kept failing: reading again may succeed.
    Transient(String),
    /// The stream cannot be read (it does not decompress).
    Damaged(String),
}

impl Stopped {
    fn reason(&self) -> String {
        match self {
            Stopped::Ended => "the archive ended".into(),
            Stopped::Transient(why) | Stopped::Damaged(why) => why.clone(),
        }
    }
}

/// Reads with one request are tried this many times when the connection drops.
const READ_ATTEMPTS: u32 = 5;

/// Range GETs of every window, `concurrency` at a time.
async fn scan_windows(
    s3: &S3,
    archive: &S3Uri,
    archive_size: u64,
    rows: Arc<Vec<IndexRow>>,
    ordered: &[(usize, Span)],
    windows: Vec<Window>,
    settings: &CheckSettings,
) -> Verdicts {
    debug!("{archive}: {} windows", windows.len());
    let jobs = windows.into_iter().map(|window| {
        let members = window_members(ordered, &window);
        let (rows, s3, archive) = (rows.clone(), s3.clone(), archive.clone());
        async move {
            let last = window.end.min(archive_size).saturating_sub(1);
            let mut attempt = 1;
            loop {
                let mut scanner = Scanner::new(&rows, members.clone(), window.start, settings.deep);
                let outcome = if window.start >= archive_size {
                    Err(Stopped::Ended)
                } else {
                    match s3.get_range(&archive, window.start, last).await {
                        Ok(got) => {
                            let mut stream = StreamFeed {
                                chunks: Chunks::Body(got.body),
                                pending: bytes::Bytes::new(),
                                position: window.start,
                            };
                            stream.feed(&mut scanner).await
                        }
                        Err(failure) => Err(Stopped::Transient(format!(
                            "GetObject of bytes {}-{last}: {failure}",
                            window.start
                        ))),
                    }
                };
                match outcome {
                    Err(Stopped::Transient(why)) if attempt < READ_ATTEMPTS => {
                        debug!(
                            "{archive} bytes {}-{last}: {why}; reading again",
                            window.start
                        );
                        attempt += 1;
                    }
                    Ok(()) => return scanner.finish(""),
                    Err(stopped) => return scanner.finish(&stopped.reason()),
                }
            }
        }
    });
    stream::iter(jobs)
        .buffer_unordered(settings.concurrency.max(1))
        .flat_map(stream::iter)
        .collect()
        .await
}

/// `--deep`: where the source still holds the object archived (same version, or the same
/// LastModified) and its ETag is a plain MD5, the archived bytes' MD5 must equal it.
async fn compare_with_sources(
    s3: &S3,
    index: &[IndexRow],
    problems: &mut [Option<String>],
    concurrency: usize,
) -> Result<()> {
    let jobs = index
        .iter()
        .enumerate()
        .filter(|(i, _)| problems[*i].is_none())
        .map(|(i, row)| async move {
            let uri = S3Uri::new(row.bucket.clone(), row.key.clone());
            let head = s3
                .head_version(&uri, row.version_id.as_deref())
                .await
                .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
            let Some(head) = head else { return Ok(None) };
            let same_object = row.version_id.is_some()
                || head.last_modified.as_deref() == Some(row.last_modified.as_str());
            Ok(match head.plain_md5() {
                Some(md5) if same_object && !md5.eq_ignore_ascii_case(&row.md5) => Some((
                    i,
                    format!(
                        "the archived bytes have MD5 {}, the source {uri} has ETag {md5}",
                        row.md5
                    ),
                )),
                _ => None,
            })
        });
    let found: Vec<Result<Option<(usize, String)>>> = stream::iter(jobs)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for result in found {
        if let Some((i, problem)) = result? {
            problems[i] = Some(problem);
        }
    }
    Ok(())
}

/// Big-object copies: looked for where bundle would have made one (objects bigger than
/// `max_size`) and for every object in neither the index nor the DLQ.
async fn find_big_copies(
    s3: &S3,
    entries: &[ManifestEntry<'_>],
    index: &[IndexRow],
    dlq: &[DlqRow],
    settings: &CheckSettings,
) -> Result<Vec<BigCopy>> {
    let placed: std::collections::HashSet<(&str, &str)> = index
        .iter()
        .map(|r| (r.bucket.as_str(), r.key.as_str()))
        .chain(dlq.iter().map(|r| (r.bucket.as_str(), r.key.as_str())))
        .collect();
    let mut wanted: Vec<String> = entries
        .iter()
        .filter(|e| e.size > settings.max_size || !placed.contains(&(&e.bucket, &e.key)))
        .map(|e| {
            let of = CopyOf::of(e.version_id.as_deref(), e.etag.as_deref());
            big_object_key(&settings.prefix, &e.bucket, &e.key, of)
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let jobs = wanted.into_iter().map(|key| {
        let copy = S3Uri::new(settings.archive_bucket.clone(), key);
        async move { check_big_copy(s3, copy).await }
    });
    let found: Vec<Result<Vec<BigCopy>>> = stream::iter(jobs)
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    let mut copies = Vec::new();
    for result in found {
        copies.extend(result?);
    }
    Ok(copies)
}

/// How the source a copy says it holds (its user metadata; copies written before they
/// carried it say nothing) differs from the one its `.metadata` row records, if it does.
fn copied_source_differs(head: &ObjectHead, row: &IndexRow) -> Option<String> {
    let said = |name: &str| head.metadata.get(name).map(String::as_str);
    let recorded_version = row.version_id.as_deref();
    match (said(SOURCE_ETAG_METADATA), said(SOURCE_VERSION_METADATA)) {
        (Some(etag), _) if !etag.eq_ignore_ascii_case(row.etag.trim_matches('"')) => Some(format!(
            "holds the source's ETag {etag}, its .metadata records {}",
            row.etag
        )),
        (_, Some(version)) if Some(version) != recorded_version => Some(format!(
            "holds the source's version {version}, its .metadata records {}",
            recorded_version.unwrap_or("none")
        )),
        _ => None,
    }
}

/// A copy's `.metadata` rows, each with what is wrong with the copy; none without `.metadata`.
async fn check_big_copy(s3: &S3, copy: S3Uri) -> Result<Vec<BigCopy>> {
    let metadata_uri = S3Uri::new(copy.bucket.clone(), format!("{}.metadata", copy.key));
    let Some(bytes) = get_optional(s3, &metadata_uri).await? else {
        return Ok(Vec::new());
    };
    let rows = match parse_index(&bytes, &metadata_uri.to_string()) {
        Ok(rows) => rows,
        Err(e) => {
            return Ok(vec![BigCopy {
                row: IndexRow::default(),
                problem: Some(e.to_string()),
            }])
        }
    };
    let head = s3
        .head(&copy)
        .await
        .map_err(|f| Error::reading("HeadObject", copy.to_string(), f))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let problem = match &head {
                None => Some(format!(
                    "{metadata_uri} exists but the copy {copy} does not"
                )),
                Some(head) if head.size != row.size => Some(format!(
                    "the copy {copy} has {} bytes, its .metadata says {}",
                    head.size, row.size
                )),
                Some(head) => match copied_source_differs(head, &row) {
                    Some(problem) => Some(format!("the copy {copy} {problem}")),
                    None => match head.plain_md5() {
                        Some(md5) if !row.md5.is_empty() && !md5.eq_ignore_ascii_case(&row.md5) => {
                            Some(format!(
                                "the copy {copy} has ETag {md5}, its .metadata records MD5 {}",
                                row.md5
                            ))
                        }
                        _ => None,
                    },
                },
            };
            BigCopy { row, problem }
        })
        .collect())
}
