//! Reading a manifest's outputs back from S3 and checking them: the manifest, its index and
//! DLQ, the archive (its length, and every member's header by range GETs of windows of the
//! archive, or one decompressed pass for a compressed one; with `deep`, every member's MD5 and
//! the source's ETag where it is a plain MD5), and the big-object copies.

use std::sync::Arc;

use futures_util::{stream, StreamExt};
use tracing::debug;

use super::{reconcile, BigCopy, ManifestReport, Outputs, Status};
use crate::archive::layout::{big_object_key, is_bundle_output, BundleLayout, Compression};
use crate::archive::records::{parse_dlq, parse_index, DlqRow, IndexRow};
use crate::archive::scan::{layout, plan_windows, Scanner, Span, Window};
use crate::bundle::{ARCHIVE_ETAG_METADATA, ARCHIVE_VERSION_METADATA, ATTEMPT_METADATA};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::{parse_manifest, ManifestEntry};
use crate::reading::{decompressed, Chunks, ReadError};
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
/// `bundle` wrote (when the manifests share the archive bucket).
pub async fn list_manifests(s3: &S3, uri: &S3Uri, settings: &CheckSettings) -> Result<Vec<S3Uri>> {
    let keys = s3
        .list(uri)
        .await
        .map_err(|f| Error::reading("ListObjectsV2", uri.to_string(), f))?;
    let same_bucket = uri.bucket == settings.archive_bucket;
    Ok(keys
        .into_iter()
        .filter(|(key, _)| key.ends_with(".index") && !key.contains("_staging/"))
        .filter(|(key, _)| !(same_bucket && is_bundle_output(&settings.prefix, key)))
        .map(|(key, _)| S3Uri::new(uri.bucket.clone(), key))
        .collect())
}

/// Reads a small object whole; `None` when it does not exist.
pub async fn get_optional(s3: &S3, uri: &S3Uri) -> Result<Option<bytes::Bytes>> {
    match s3.get_bytes(uri, TABLE_LIMIT).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(RemoteFailure::NotFound) => Ok(None),
        Err(failure) => Err(Error::reading("GetObject", uri.to_string(), failure)),
    }
}

/// Checks one manifest's outputs.
pub async fn check_manifest(
    s3: &S3,
    manifest_uri: &S3Uri,
    settings: &CheckSettings,
) -> Result<ManifestCheck> {
    let mut check = ManifestCheck {
        report: ManifestReport {
            manifest: manifest_uri.to_string(),
            ..ManifestReport::default()
        },
        manifest: Some(manifest_uri.clone()),
        ..ManifestCheck::default()
    };
    let Some(bytes) = get_optional(s3, manifest_uri).await? else {
        check.report.manifest_problem("the manifest does not exist");
        return Ok(check);
    };
    check.entries = match parse_manifest(&bytes, &manifest_uri.to_string()) {
        Ok(entries) => entries.into_iter().map(ManifestEntry::into_owned).collect(),
        Err(e) => {
            check.report.manifest_problem(e.to_string());
            return Ok(check);
        }
    };
    let Some(source) = check.entries.first().map(|e| e.bucket.to_string()) else {
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
    let mut claimed = ArchiveClaim::default();
    if let Some(bytes) = get_optional(s3, &index_uri).await? {
        claimed = ArchiveClaim::of_index(s3, &index_uri).await?;
        check.report.index = Some(index_uri.to_string());
        match parse_index(&bytes, &index_uri.to_string()) {
            Ok(rows) => check.index = rows,
            Err(e) => check.report.manifest_problem(e.to_string()),
        }
    }
    if let Some(bytes) = get_optional(s3, &dlq_uri).await? {
        check.report.dlq = Some(dlq_uri.to_string());
        match parse_dlq(&bytes, &dlq_uri.to_string()) {
            Ok(rows) => check.dlq = rows,
            Err(e) => check.report.manifest_problem(e.to_string()),
        }
    }

    let index_problems =
        check_archive(s3, &mut check, &source, manifest_uri, settings, &claimed).await?;
    check.big = find_big_copies(s3, &check, settings).await?;
    let outputs = Outputs {
        index: &check.index,
        index_problems: &index_problems,
        big: &check.big,
        dlq: &check.dlq,
    };
    let (statuses, unclaimed) = reconcile(&check.entries, &outputs);
    check
        .report
        .record(&check.entries, &statuses, &unclaimed, &outputs);
    check.archive_sound = check.report.counts.manifest_problems == 0
        && check.report.counts.mismatched == 0
        && check.report.counts.unexpected == 0;
    check.statuses = statuses;
    Ok(check)
}

/// The archive an index was committed for: its ETag and version, from the index's metadata
/// (indexes written before they carried it claim nothing).
#[derive(Debug, Default)]
struct ArchiveClaim {
    etag: Option<String>,
    version_id: Option<String>,
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
            attempt: metadata.remove(ATTEMPT_METADATA),
        })
    }

    /// Why `head` is not the archive claimed, if it is not.
    fn mismatch(&self, archive: &S3Uri, head: &ObjectHead) -> Option<String> {
        let etag = head.etag.as_deref().unwrap_or_default().trim_matches('"');
        let replaced = |what: &str, found: &str, claimed: &str| {
            format!(
                "{archive} is not the archive its index was committed for ({what} {found}, the \
                 index names {claimed}): it was replaced since; bundle the manifest again"
            )
        };
        if let Some(claimed) = self.etag.as_deref().filter(|c| *c != etag) {
            return Some(replaced("ETag", etag, claimed));
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

/// Finds the archive, checks that it is the one its index was committed for, its length and
/// members; returns a problem per index row.
async fn check_archive(
    s3: &S3,
    check: &mut ManifestCheck,
    source: &str,
    manifest_uri: &S3Uri,
    settings: &CheckSettings,
    claimed: &ArchiveClaim,
) -> Result<Vec<Option<String>>> {
    let mut problems: Vec<Option<String>> = vec![None; check.index.len()];
    if check.index.is_empty() {
        return Ok(problems);
    }
    let mut archive = None;
    for compression in Compression::ALL {
        let key =
            BundleLayout::new(&settings.prefix, source, &manifest_uri.key, compression).archive_key;
        let uri = S3Uri::new(settings.archive_bucket.clone(), key);
        let head = s3
            .head(&uri)
            .await
            .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
        if let Some(head) = head {
            if let Some(problem) = claimed.mismatch(&uri, &head) {
                check.report.manifest_problem(problem);
            }
            archive = Some((uri, compression, head.size));
            break;
        }
    }
    let Some((archive_uri, compression, archive_size)) = archive else {
        let detail = "the index exists but its archive (.tar, .tar.gz or .tar.zst) does not";
        check.report.manifest_problem(detail);
        return Ok(vec![Some(detail.to_string()); check.index.len()]);
    };
    check.report.archive = Some(archive_uri.to_string());
    let members = layout(&check.index);
    for (row, problem) in &members.problems {
        problems[*row] = Some(problem.clone());
    }
    // Shared with the window tasks, and handed back below.
    let rows = Arc::new(std::mem::take(&mut check.index));
    let (verdicts, stream_length) = if compression == Compression::None {
        if archive_size != members.expected_length {
            check.report.manifest_problem(format!(
                "{archive_uri} is {archive_size} bytes but its index accounts for {}{}",
                members.expected_length,
                if archive_size < members.expected_length {
                    ": the archive is truncated"
                } else {
                    ""
                }
            ));
        }
        let windows = plan_windows(&members.ordered, settings.deep, MAX_WINDOW, MAX_GAP);
        let verdicts = scan_windows(
            s3,
            &archive_uri,
            archive_size,
            rows.clone(),
            &members.ordered,
            windows,
            settings,
        )
        .await;
        (verdicts, None)
    } else {
        let (verdicts, length) = scan_compressed(
            s3,
            &archive_uri,
            compression,
            rows.clone(),
            &members.ordered,
            settings,
        )
        .await?;
        (verdicts, Some(length))
    };
    if let Some(length) = stream_length {
        match length {
            Ok(length) if length != members.expected_length => {
                check.report.manifest_problem(format!(
                    "{archive_uri} decompresses to {length} bytes but its index accounts for {}",
                    members.expected_length
                ))
            }
            Ok(_) => {}
            Err(e) => check
                .report
                .manifest_problem(format!("{archive_uri} cannot be read whole: {e}")),
        }
    }
    check.index = Arc::try_unwrap(rows).unwrap_or_else(|shared| (*shared).clone());
    for (row, verdict) in verdicts {
        if let Err(problem) = verdict {
            problems[row] = Some(problem);
        }
    }
    if settings.deep {
        compare_with_sources(s3, &check.index, &mut problems, settings.concurrency).await?;
    }
    Ok(problems)
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

/// Feeds `chunks` to a scanner until it has what it wants; counts the bytes fed.
async fn feed(
    scanner: &mut Scanner<'_>,
    chunks: &mut Chunks,
    length: &mut u64,
    to_the_end: bool,
) -> Result<(), Stopped> {
    while to_the_end || scanner.wants_more() {
        match chunks.next().await {
            Some(Ok(bytes)) => {
                *length += bytes.len() as u64;
                scanner.feed(&bytes);
            }
            Some(Err(ReadError::Cut(why))) => {
                return Err(Stopped::Transient(format!("body cut off: {why}")))
            }
            Some(Err(ReadError::Corrupt(why))) => return Err(Stopped::Damaged(why)),
            None if to_the_end => return Ok(()),
            None => return Err(Stopped::Ended),
        }
    }
    Ok(())
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
                            let mut chunks = Chunks::Body(got.body);
                            feed(&mut scanner, &mut chunks, &mut 0, false).await
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

/// One pass over a compressed archive (again if the connection drops); also returns the
/// length of the decompressed stream.
async fn scan_compressed(
    s3: &S3,
    archive: &S3Uri,
    compression: Compression,
    rows: Arc<Vec<IndexRow>>,
    ordered: &[(usize, Span)],
    settings: &CheckSettings,
) -> Result<(Verdicts, Result<u64, String>)> {
    let mut attempt = 1;
    loop {
        let got = s3
            .get_stream(archive)
            .await
            .map_err(|f| Error::reading("GetObject", archive.to_string(), f))?;
        let mut chunks = decompressed(got.body, compression);
        let mut scanner = Scanner::new(&rows, ordered.to_vec(), 0, settings.deep);
        // Every byte is read, to compare the stream's length with the index.
        let mut length = 0u64;
        match feed(&mut scanner, &mut chunks, &mut length, true).await {
            Err(Stopped::Transient(why)) if attempt < READ_ATTEMPTS => {
                debug!("{archive}: {why}; reading again");
                attempt += 1;
            }
            Ok(()) => return Ok((scanner.finish("the archive ended"), Ok(length))),
            Err(stopped) => {
                let why = stopped.reason();
                return Ok((scanner.finish(&why), Err(why)));
            }
        }
    }
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
    check: &ManifestCheck,
    settings: &CheckSettings,
) -> Result<Vec<BigCopy>> {
    let placed: std::collections::HashSet<(&str, &str)> = check
        .index
        .iter()
        .map(|r| (r.bucket.as_str(), r.key.as_str()))
        .chain(
            check
                .dlq
                .iter()
                .map(|r| (r.bucket.as_str(), r.key.as_str())),
        )
        .collect();
    let mut wanted: Vec<(String, String)> = check
        .entries
        .iter()
        .filter(|e| e.size > settings.max_size || !placed.contains(&(&e.bucket, &e.key)))
        .map(|e| (e.bucket.to_string(), e.key.to_string()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let jobs = wanted.into_iter().map(|(bucket, key)| {
        let copy = S3Uri::new(
            settings.archive_bucket.clone(),
            big_object_key(&settings.prefix, &bucket, &key),
        );
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
                Some(head) => match head.plain_md5() {
                    Some(md5) if !row.md5.is_empty() && !md5.eq_ignore_ascii_case(&row.md5) => {
                        Some(format!(
                            "the copy {copy} has ETag {md5}, its .metadata records MD5 {}",
                            row.md5
                        ))
                    }
                    _ => None,
                },
            };
            BigCopy { row, problem }
        })
        .collect())
}
