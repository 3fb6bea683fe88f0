//! Reading members back out of an archive: the index beside it says where each member is. An
//! uncompressed archive gives each member with one range GET of its header and data; a
//! compressed one is streamed once, decompressed, and the members taken in passing. Every
//! member's header must name it and its bytes must have the index's MD5.
//!
//! Destinations: S3 (content headers, metadata and tags restored), a local folder (names that
//! would escape it refused, attributes as `user.s3.*` xattrs), or stdout (`cat`).

pub mod local;
pub mod path;
pub mod plan;

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::archive::layout::{index_key_for_archive, Compression};
use crate::archive::pax::{parse_member_header, MemberHeader};
use crate::archive::records::{index_rows, IndexRow};
use crate::archive::scan::{span, Span};
use crate::bundle::budget::BudgetPermit;
use crate::bundle::upload::{Completed, MultipartUpload};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::join_prefix;
use crate::reading::{decompressed, Chunks, ReadError, RowStream};
use crate::s3::{with_object_headers, ObjectHead, ObjectHeaders, S3};
use crate::s3uri::S3Uri;
use plan::Member;

/// Members up to this size are restored to S3 with one PutObject; larger ones are streamed in
/// parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// An archive and where its index is.
pub struct Archive {
    pub uri: S3Uri,
    pub index_uri: S3Uri,
    pub compression: Compression,
}

impl Archive {
    /// The archive at `uri` and its index beside it (`…/NAME.tar` has `…/NAME.index`).
    pub fn at(uri: &S3Uri) -> Result<Archive> {
        let (index_key, compression) = index_key_for_archive(&uri.key).ok_or_else(|| {
            Error::Usage(format!(
                "{uri} is not an archive: expected a key ending .tar, .tar.gz or .tar.zst"
            ))
        })?;
        Ok(Archive {
            uri: uri.clone(),
            index_uri: S3Uri::new(uri.bucket.clone(), index_key),
            compression,
        })
    }

    /// Refuses an archive that cannot be read without a restore, with the `restore` command to
    /// run (or word that one is in progress) rather than GETs refused as InvalidObjectState.
    /// One HEAD; a missing archive is left to the reads, which say so.
    pub async fn check_readable(&self, s3: &S3) -> Result<()> {
        check_readable(s3, &self.uri).await
    }

    /// The index's rows in its order (the archive's: `bundle` writes a member's row when it
    /// appends the member), read as the index downloads: never held whole.
    pub async fn index(&self, s3: &S3) -> Result<RowStream<IndexRow>> {
        let got = s3
            .get_stream(&self.index_uri)
            .await
            .map_err(|f| Error::reading("GetObject", self.index_uri.to_string(), f))?;
        let location = self.index_uri.to_string();
        Ok(RowStream::start(s3, &self.index_uri, got, move |reader| {
            index_rows(reader, &location)
        }))
    }
}

/// Which members to restore: `keys` (each must be in the index; a member name works too),
/// those under `prefix`, or all; of those, with `versions`, only these version IDs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub keys: Vec<String>,
    pub prefix: Option<String>,
    pub versions: Vec<String>,
}

impl Selection {
    pub fn wants(&self, row: &IndexRow) -> bool {
        (self.keys.is_empty() || self.keys.iter().any(|k| *k == row.key || *k == row.member))
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| row.key.starts_with(p))
            && (self.versions.is_empty() || self.versions.iter().any(|v| is_version(row, v)))
    }

    /// Marks the keys and then the versions `row` answers in `found` (one flag per key, then
    /// one per version): a version only on a row that is wanted.
    pub fn mark_found(&self, row: &IndexRow, found: &mut [bool]) {
        let (keys, versions) = found.split_at_mut(self.keys.len().min(found.len()));
        for (key, seen) in self.keys.iter().zip(keys) {
            *seen |= *key == row.key || *key == row.member;
        }
        let wanted = self.wants(row);
        for (version, seen) in self.versions.iter().zip(versions) {
            *seen |= wanted && is_version(row, version);
        }
    }

    /// The flags `mark_found` needs, all false.
    pub fn none_found(&self) -> Vec<bool> {
        vec![false; self.keys.len() + self.versions.len()]
    }

    /// The keys and versions whose flag in `found` is still false.
    pub fn not_found(&self, found: &[bool]) -> Vec<&str> {
        self.keys
            .iter()
            .chain(&self.versions)
            .zip(found)
            .filter(|(_, seen)| !**seen)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

fn is_version(row: &IndexRow, version: &str) -> bool {
    row.version_id.as_deref() == Some(version)
}

/// Refuses an archive or big-object copy that cannot be read without a restore, with the
/// `restore` command to run (or word that one is in progress). One HEAD; a missing object is
/// left to the reads, which say so.
pub async fn check_readable(s3: &S3, uri: &S3Uri) -> Result<()> {
    let head = s3
        .head(uri)
        .await
        .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))?;
    let need = head.as_ref().map(crate::thaw::Need::of);
    match need.and_then(|need| crate::thaw::advice(uri, &need)) {
        Some(advice) => Err(Error::NeedsRestore {
            archive: uri.to_string(),
            advice,
        }),
        None => Ok(()),
    }
}

/// Reads the uncompressed tar stream from some offset on.
pub struct Cursor {
    chunks: Chunks,
    position: u64,
    pending: Bytes,
    location: String,
}

impl Cursor {
    pub fn new(chunks: Chunks, position: u64, location: String) -> Self {
        Cursor {
            chunks,
            position,
            pending: Bytes::new(),
            location,
        }
    }

    fn damaged(&self, detail: impl std::fmt::Display) -> Error {
        Error::bad_input(
            self.location.clone(),
            format!(
                "{detail} (at byte {}); run verify on its manifest",
                self.position
            ),
        )
    }

    /// The next bytes, at most `limit`.
    async fn next(&mut self, limit: u64) -> Result<Bytes> {
        if self.pending.is_empty() {
            self.pending = match self.chunks.next().await {
                Some(Ok(bytes)) => bytes,
                Some(Err(ReadError::Cut(why))) => {
                    return Err(Error::Remote {
                        operation: "GetObject",
                        location: self.location.clone(),
                        detail: format!("body cut off at byte {}: {why}", self.position),
                    })
                }
                Some(Err(ReadError::Corrupt(why))) => return Err(self.damaged(why)),
                None => return Err(self.damaged("the archive ended early")),
            };
        }
        let n = (self.pending.len() as u64).min(limit) as usize;
        self.position += n as u64;
        Ok(self.pending.split_to(n))
    }

    async fn skip_to(&mut self, offset: u64) -> Result<()> {
        if offset < self.position {
            return Err(self.damaged(format!("index offsets go backwards to {offset}")));
        }
        while self.position < offset {
            self.next(offset - self.position).await?;
        }
        Ok(())
    }

    /// Reads `row`'s header blocks and checks they name the member with its size.
    async fn header(&mut self, row: &IndexRow) -> Result<MemberHeader> {
        let (Some(start), Some(data)) = (row.header_offset, row.data_offset) else {
            return Err(self.damaged(format!("index row for `{}` has no offsets", row.key)));
        };
        self.skip_to(start).await?;
        let length = data.saturating_sub(start);
        if length == 0 || length > crate::archive::scan::MAX_HEADER {
            return Err(self.damaged(format!("index offsets of `{}` are wrong", row.key)));
        }
        let mut bytes = Vec::with_capacity(length as usize);
        while (bytes.len() as u64) < length {
            let chunk = self.next(length - bytes.len() as u64).await?;
            bytes.extend_from_slice(&chunk);
        }
        let header = parse_member_header(&bytes).map_err(|e| self.damaged(e))?;
        if header.name != row.member || header.size != row.size || header.length != length {
            return Err(self.damaged(format!(
                "the header at {start} is for `{}` ({} bytes), the index says `{}` ({} bytes)",
                header.name, header.size, row.member, row.size
            )));
        }
        Ok(header)
    }

    /// Hands `row`'s data to `sink` chunk by chunk and checks its MD5 at the end.
    async fn data<S: Sink>(&mut self, row: &IndexRow, sink: &mut S) -> Result<()> {
        self.skip_to(row.data_offset.unwrap_or(0)).await?;
        let mut remaining = row.size;
        let mut md5 = Md5::new();
        while remaining > 0 {
            let chunk = self.next(remaining).await?;
            remaining -= chunk.len() as u64;
            md5.update(&chunk);
            sink.write(chunk).await?;
        }
        let computed = hex::encode(md5.finalize());
        if !row.md5.is_empty() && !computed.eq_ignore_ascii_case(&row.md5) {
            return Err(self.damaged(format!(
                "`{}` has MD5 {computed}, the index says {}",
                row.key, row.md5
            )));
        }
        Ok(())
    }
}

/// Where a member's bytes go.
#[allow(async_fn_in_trait)]
pub trait Sink {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
}

/// Standard output.
pub struct Stdout;

impl Sink for Stdout {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(&chunk).map_err(|source| Error::Io {
            location: "stdout".into(),
            source,
        })
    }
}

/// A local file.
struct FileSink(std::fs::File, PathBuf);

impl Sink for FileSink {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.0.write_all(&chunk).map_err(|source| Error::Io {
            location: self.1.display().to_string(),
            source,
        })
    }
}

/// What a write to S3 may replace (S3 conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No object (`If-None-Match: *`).
    Nothing,
    /// The object with this ETag (`If-Match`).
    Etag(String),
}

impl Expect {
    fn if_match(&self) -> Option<&str> {
        match self {
            Expect::Etag(etag) => Some(etag),
            Expect::Nothing => None,
        }
    }
}

/// An S3 object: one PutObject when it fits a part, else a multipart upload.
struct S3Sink {
    s3: S3,
    target: S3Uri,
    /// PART_SIZE, or more so that the member fits in 10,000 parts.
    part_size: usize,
    headers: ObjectHeaders,
    buffer: Vec<u8>,
    /// The body of a member written with one PutObject, once read whole.
    whole: Bytes,
    upload: Option<MultipartUpload>,
    next_part: i32,
}

impl Sink for S3Sink {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= self.part_size {
            if self.upload.is_none() {
                self.upload = Some(
                    MultipartUpload::create_with(&self.s3, &self.target, &self.headers, None, 2)
                        .await?,
                );
            }
            let body = Bytes::from(std::mem::take(&mut self.buffer));
            if let Some(upload) = self.upload.as_mut() {
                upload
                    .send_part(self.next_part, body, BudgetPermit::default())
                    .await?;
            }
            self.next_part += 1;
        }
        Ok(())
    }
}

impl S3Sink {
    /// Writes the object if the target is as `expect` says; `None` when S3 refused the
    /// condition (412). A multipart upload is completed or aborted; a body of one PutObject is
    /// kept for another try.
    async fn finish(&mut self, expect: &Expect) -> Result<Option<Completed>> {
        let if_none_match = *expect == Expect::Nothing;
        let written = match self.upload.as_mut() {
            Some(upload) => {
                let completed = async {
                    if !self.buffer.is_empty() {
                        let body = Bytes::from(std::mem::take(&mut self.buffer));
                        upload
                            .send_part(self.next_part, body, BudgetPermit::default())
                            .await?;
                    }
                    upload.complete_if(expect.if_match(), if_none_match).await
                }
                .await;
                if completed.is_err() {
                    upload.abort().await;
                }
                completed
            }
            None => {
                if !self.buffer.is_empty() {
                    self.whole = Bytes::from(std::mem::take(&mut self.buffer));
                }
                let request = self
                    .s3
                    .client()
                    .put_object()
                    .bucket(&self.target.bucket)
                    .key(&self.target.key)
                    .set_if_match(expect.if_match().map(str::to_string))
                    .set_if_none_match(if_none_match.then(|| "*".to_string()))
                    .body(self.whole.clone().into());
                let request = with_object_headers!(request, &self.headers, self.s3.settings());
                crate::send_upload!(request, self.s3.settings())
                    .map(|output| Completed {
                        etag: output.e_tag().map(str::to_string),
                        version_id: output.version_id().map(str::to_string),
                    })
                    .map_err(|e| {
                        Error::writing("PutObject", self.target.to_string(), crate::s3::failure(e))
                    })
            }
        };
        match written {
            Ok(completed) => Ok(Some(completed)),
            Err(Error::Write {
                failure: RemoteFailure::PreconditionFailed,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn abort(mut self) {
        if let Some(mut upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}

/// Why an object or file was kept.
const DIFFERS: &str = "differs from the archived one";
const CHANGED: &str = "changed by another writer during the restore";
const OLDER_KEPT: &str = "not written: an older version of the key was kept";

/// The object at a target, and the MD5 of its bytes once known.
struct Current {
    head: ObjectHead,
    md5: Option<Option<String>>,
}

impl Current {
    /// Whether it holds `row`'s bytes: the same size and MD5, the MD5 taken from a plain ETag
    /// or else read and hashed (once).
    async fn holds(&mut self, s3: &S3, target: &S3Uri, row: &IndexRow) -> Result<bool> {
        if self.head.size != row.size || row.md5.is_empty() {
            return Ok(false);
        }
        if self.md5.is_none() {
            self.md5 = Some(match self.head.plain_md5() {
                Some(md5) => Some(md5),
                None => hash_object(s3, target, self.head.etag.as_deref()).await?,
            });
        }
        Ok(self
            .md5
            .as_ref()
            .and_then(Option::as_deref)
            .is_some_and(|md5| md5.eq_ignore_ascii_case(&row.md5)))
    }

    fn etag(&self) -> String {
        self.head.etag.clone().unwrap_or_default()
    }
}

/// The current object at `target`, if there is one.
async fn current(s3: &S3, target: &S3Uri) -> Result<Option<Current>> {
    let head = s3
        .head(target)
        .await
        .map_err(|f| Error::reading("HeadObject", target.to_string(), f))?;
    Ok(head.map(|head| Current { head, md5: None }))
}

/// The MD5 of the object with ETag `etag`; `None` when it changed or went meanwhile.
async fn hash_object(s3: &S3, target: &S3Uri, etag: Option<&str>) -> Result<Option<String>> {
    let mut got = match s3.get_from(target, 0, etag).await {
        Ok(got) => got,
        Err(RemoteFailure::PreconditionFailed | RemoteFailure::NotFound) => return Ok(None),
        Err(failure) => return Err(Error::reading("GetObject", target.to_string(), failure)),
    };
    let mut md5 = Md5::new();
    while let Some(chunk) = got.body.try_next().await.map_err(|e| Error::Remote {
        operation: "GetObject",
        location: target.to_string(),
        detail: format!("body cut off: {}", crate::s3::error_chain(&e)),
    })? {
        md5.update(&chunk);
    }
    Ok(Some(hex::encode(md5.finalize())))
}

/// What to do about a target, from what it holds now.
enum Decision {
    Write(Expect),
    Settled(Status, Option<String>, Option<String>),
}

/// Looks at `target` before writing `row` there as `expect` allows: nothing there, or the
/// object `expect` names, is written; an object with `row`'s bytes is already restored; any
/// other is kept, except the first write's with `overwrite` (then replaced, `If-Match` on the
/// ETag seen).
async fn decide(
    s3: &S3,
    target: &S3Uri,
    row: &IndexRow,
    expect: &Expect,
    overwrite: bool,
) -> Result<Decision> {
    let kept = |why: &str| Decision::Settled(Status::Kept, Some(why.to_string()), None);
    let Some(mut current) = current(s3, target).await? else {
        return Ok(match expect {
            Expect::Nothing => Decision::Write(Expect::Nothing),
            Expect::Etag(_) => kept(CHANGED),
        });
    };
    if current.holds(s3, target, row).await? {
        return Ok(Decision::Settled(
            Status::AlreadyRestored,
            None,
            Some(current.etag()),
        ));
    }
    let now = current.etag();
    Ok(match expect {
        Expect::Etag(etag) if etag.trim_matches('"') == now.trim_matches('"') => {
            Decision::Write(Expect::Etag(now))
        }
        Expect::Nothing if overwrite => Decision::Write(Expect::Etag(now)),
        Expect::Nothing => kept(DIFFERS),
        Expect::Etag(_) => kept(CHANGED),
    })
}

/// PutObjects of one member at most: a refused condition is looked at and the write tried
/// again only when the target allows it, so a target that keeps changing is kept, not
/// fought over.
const WRITE_TRIES: u32 = 3;

/// A member read and ready to be written to S3.
struct S3Write {
    sink: S3Sink,
    row: IndexRow,
    restored: Restored,
    overwrite: bool,
}

impl S3Write {
    /// Writes it as `expect` allows (see [`decide`]) and says what happened.
    async fn settle(mut self, mut expect: Expect) -> Result<Restored> {
        // The parts of a multipart upload are sent once: its completion is not tried again.
        let tries = if self.sink.upload.is_some() {
            1
        } else {
            WRITE_TRIES
        };
        for _ in 0..tries {
            if let Some(written) = self.sink.finish(&expect).await? {
                self.restored.new_version_id = written.version_id;
                self.restored.etag = written.etag;
                return Ok(self.restored);
            }
            let (s3, target) = (&self.sink.s3, &self.sink.target);
            match decide(s3, target, &self.row, &expect, self.overwrite).await? {
                Decision::Write(next) => expect = next,
                Decision::Settled(status, why, etag) => {
                    return Ok(self.restored.settled(status, why, etag))
                }
            }
        }
        Ok(self
            .restored
            .settled(Status::Kept, Some(CHANGED.to_string()), None))
    }
}

/// The content headers, metadata and tags to restore: the index's content type, metadata and
/// tags, and the member's other content headers.
pub fn object_headers(row: &IndexRow, header: &MemberHeader) -> ObjectHeaders {
    let text = |field: &str| header.attribute(field).map(str::to_string);
    ObjectHeaders {
        content_type: Some(row.content_type.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| text("content-type")),
        content_encoding: text("content-encoding"),
        content_language: text("content-language"),
        content_disposition: text("content-disposition"),
        cache_control: text("cache-control"),
        expires: header.attribute("expires").and_then(|e| {
            aws_sdk_s3::primitives::DateTime::from_str(
                e,
                aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
            )
            .ok()
        }),
        metadata: row.metadata.clone(),
        tags: row.tags.clone(),
    }
}

/// Where extracted members go, and whether an object or file that differs from the archived
/// one is replaced (`--overwrite`).
#[derive(Debug, Clone)]
pub enum Destination {
    /// Bucket and key prefix (empty: the original keys).
    S3 {
        to: S3Uri,
        overwrite: bool,
    },
    Local {
        dir: PathBuf,
        overwrite: bool,
    },
}

/// The S3 object `row` is restored to under `to`.
pub fn s3_target(to: &S3Uri, row: &IndexRow) -> S3Uri {
    S3Uri::new(to.bucket.clone(), join_prefix(&to.key, &row.key))
}

/// What became of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Written.
    Restored,
    /// The target already held the archived bytes: nothing written.
    AlreadyRestored,
    /// The target holds something else, left alone (`--overwrite` replaces it).
    Kept,
    /// To a folder, only the newest version of a key is written.
    OlderVersionNotWritten,
}

/// One member restored, or why not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub key: String,
    pub size: u64,
    /// Where it went: `s3://…` or a local path.
    pub target: String,
    /// The version the archive holds, as recorded when bundling.
    pub archived_version_id: Option<String>,
    /// The version the restore created (S3, versioned buckets).
    pub new_version_id: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The target's ETag afterwards (S3): the condition of the next version's write.
    #[serde(skip)]
    pub etag: Option<String>,
}

impl Restored {
    pub fn new(row: &IndexRow, target: String) -> Self {
        Restored {
            key: row.key.clone(),
            size: row.size,
            target,
            archived_version_id: row.version_id.clone(),
            new_version_id: None,
            status: Status::Restored,
            why: None,
            etag: None,
        }
    }

    pub fn settled(self, status: Status, why: Option<String>, etag: Option<String>) -> Self {
        Restored {
            status,
            why,
            etag,
            ..self
        }
    }
}

/// Restored members whose upload runs in the background.
pub type Background = tokio::task::JoinSet<Result<Restored>>;

/// Restores one member read from `cursor` to `destination`; to S3 only as `expect` allows.
pub async fn restore(
    s3: &S3,
    cursor: &mut Cursor,
    row: &IndexRow,
    destination: &Destination,
    expect: &Expect,
) -> Result<Restored> {
    let mut none = None;
    match restore_in(s3, cursor, row, destination, expect, &mut none).await? {
        Some(restored) => Ok(restored),
        // Without a background set every upload is finished here.
        None => Err(Error::Interrupted),
    }
}

/// Restores one member read from `cursor`. With `background`, a member that fits one PutObject
/// is uploaded by a task added there (the caller bounds how many run), and `None` is returned:
/// a single pass over a compressed archive then keeps reading while small objects upload.
///
/// Nothing is replaced: to S3 a member is written where no object is (or, by `expect`, over
/// the object this run wrote before), a file only where none is; a target that already holds
/// the member's bytes is already restored, any other is kept, unless the destination says
/// overwrite.
pub async fn restore_in(
    s3: &S3,
    cursor: &mut Cursor,
    row: &IndexRow,
    destination: &Destination,
    expect: &Expect,
    background: &mut Option<&mut Background>,
) -> Result<Option<Restored>> {
    let header = cursor.header(row).await?;
    write_member(s3, cursor, row, &header, destination, expect, background).await
}

/// A big object's copy (`copy`, its index row `row`) restored as an archive member would be:
/// its bytes streamed from the copy, its headers, metadata and tags as recorded; nothing
/// replaced unless the destination says overwrite.
pub async fn restore_copy(
    s3: &S3,
    copy: &S3Uri,
    row: &IndexRow,
    destination: &Destination,
) -> Result<Restored> {
    let got = s3
        .get_stream(copy)
        .await
        .map_err(|f| Error::reading("GetObject", copy.to_string(), f))?;
    // Named and placed as its member in an archive would be.
    let row = IndexRow {
        member: format!("{}/{}", row.bucket, row.key),
        header_offset: Some(0),
        data_offset: Some(0),
        ..row.clone()
    };
    let mut attributes = vec![("etag".to_string(), row.etag.clone())];
    attributes.extend(
        got.content_headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone())),
    );
    attributes.extend(
        row.metadata
            .iter()
            .map(|(k, v)| (format!("meta.{k}"), v.clone())),
    );
    attributes.extend(
        row.tags
            .iter()
            .map(|(k, v)| (format!("tag.{k}"), v.clone())),
    );
    let header = MemberHeader {
        name: row.member.clone(),
        size: row.size,
        attributes,
        length: 0,
    };
    let mut cursor = Cursor::new(Chunks::Body(got.body), 0, copy.to_string());
    let mut none = None;
    write_member(
        s3,
        &mut cursor,
        &row,
        &header,
        destination,
        &Expect::Nothing,
        &mut none,
    )
    .await?
    .ok_or(Error::Interrupted)
}

/// Writes a member whose header was read (`cursor` at its data) to `destination`.
async fn write_member(
    s3: &S3,
    cursor: &mut Cursor,
    row: &IndexRow,
    header: &MemberHeader,
    destination: &Destination,
    expect: &Expect,
    background: &mut Option<&mut Background>,
) -> Result<Option<Restored>> {
    match destination {
        Destination::S3 { to, overwrite } => {
            let target = s3_target(to, row);
            let restored = Restored::new(row, target.to_string());
            let part_size = crate::bundle::upload::part_size_for(row.size, PART_SIZE as u64);
            let part_size = usize::try_from(part_size).unwrap_or(PART_SIZE);
            let mut expect = expect.clone();
            // A multipart upload is sent once: the target is looked at first (S3 honours the
            // condition on its completion too, not every server does).
            if row.size >= part_size as u64 {
                match decide(s3, &target, row, &expect, *overwrite).await? {
                    Decision::Write(allowed) => expect = allowed,
                    Decision::Settled(status, why, etag) => {
                        return Ok(Some(restored.settled(status, why, etag)))
                    }
                }
            }
            let mut sink = S3Sink {
                s3: s3.clone(),
                target,
                part_size,
                headers: object_headers(row, header),
                buffer: Vec::new(),
                whole: Bytes::new(),
                upload: None,
                next_part: 1,
            };
            if let Err(e) = cursor.data(row, &mut sink).await {
                sink.abort().await;
                return Err(e);
            }
            let write = S3Write {
                sink,
                row: row.clone(),
                restored,
                overwrite: *overwrite,
            };
            match background {
                Some(tasks) if write.sink.upload.is_none() => {
                    tasks.spawn(write.settle(expect));
                    Ok(None)
                }
                _ => write.settle(expect).await.map(Some),
            }
        }
        Destination::Local { dir, overwrite } => {
            let relative = path::local_path(&row.member)
                .map_err(|e| Error::bad_input(cursor.location.clone(), e.to_string()))?;
            let (file_path, mut opened) = local::open(dir, &relative, false)?;
            let restored = Restored::new(row, file_path.display().to_string());
            if let local::Opened::Exists = opened {
                if local::holds(&file_path, row.size, &row.md5) {
                    return Ok(Some(restored.settled(Status::AlreadyRestored, None, None)));
                }
                if !overwrite {
                    let why = "a different file is there".to_string();
                    return Ok(Some(restored.settled(Status::Kept, Some(why), None)));
                }
                opened = local::open(dir, &relative, true)?.1;
            }
            if let local::Opened::File(file) = opened {
                let mut sink = FileSink(file, file_path.clone());
                if let Err(e) = cursor.data(row, &mut sink).await {
                    // Never leave a file with the wrong bytes behind.
                    drop(sink);
                    let _ = std::fs::remove_file(&file_path);
                    return Err(e);
                }
            }
            local::write_xattrs(&file_path, &header.attributes);
            Ok(Some(restored))
        }
    }
}

/// The versions of one key restored to S3 one after another, oldest first, so that the newest
/// ends current. The first written goes only where no object is, or over an object that holds
/// one of the versions (the versions up to that one are then already restored); each later one
/// over the object this run wrote before it (`If-Match` on its ETag).
pub struct VersionRun {
    members: Vec<Member>,
    target: S3Uri,
    overwrite: bool,
    next: usize,
    /// What the next write may replace; `None` until the target was looked at.
    expect: Option<Expect>,
}

impl VersionRun {
    /// `members` oldest first (see [`plan::version_runs`]), all going to `target`.
    pub fn new(members: Vec<Member>, target: S3Uri, overwrite: bool) -> Self {
        VersionRun {
            members,
            target,
            overwrite,
            next: 0,
            expect: None,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member to write next and what its write may replace, once [`Self::begin`] ran.
    pub fn due(&self) -> Option<(&Member, &Expect)> {
        Some((self.members.get(self.next)?, self.expect.as_ref()?))
    }

    pub fn begun(&self) -> bool {
        self.expect.is_some()
    }

    /// Some version is still to be written (or the target still to be looked at).
    pub fn pending(&self) -> bool {
        self.next < self.members.len()
    }

    /// Looks at the target. Returns the members settled by what it holds: those up to the
    /// version it holds (already restored), or, when it holds none and `overwrite` is off,
    /// every one (kept).
    pub async fn begin(&mut self, s3: &S3) -> Result<Vec<Restored>> {
        let target = &self.target;
        let Some(mut current) = current(s3, target).await? else {
            self.expect = Some(Expect::Nothing);
            return Ok(Vec::new());
        };
        let mut holds = None;
        for (at, member) in self.members.iter().enumerate().rev() {
            if current.holds(s3, target, &member.row).await? {
                holds = Some(at);
                break;
            }
        }
        self.expect = Some(Expect::Etag(current.etag()));
        let (settled, status, why) = match holds {
            Some(at) => (at + 1, Status::AlreadyRestored, None),
            None if self.overwrite => (0, Status::Kept, None),
            None => (self.members.len(), Status::Kept, Some(DIFFERS)),
        };
        self.next = settled;
        Ok(self.members[..settled]
            .iter()
            .map(|m| {
                Restored::new(&m.row, target.to_string()).settled(
                    status,
                    why.map(str::to_string),
                    Some(current.etag()),
                )
            })
            .collect())
    }

    /// Takes what became of the due member. When it was kept, the later versions are not
    /// written (returned, kept): the object is no longer this run's.
    pub fn advance(&mut self, outcome: &Restored) -> Vec<Restored> {
        self.next += 1;
        if outcome.status == Status::Kept {
            let rest = self.members.get(self.next..).unwrap_or_default();
            self.next = self.members.len();
            return rest
                .iter()
                .map(|m| {
                    Restored::new(&m.row, self.target.to_string()).settled(
                        Status::Kept,
                        Some(OLDER_KEPT.to_string()),
                        None,
                    )
                })
                .collect();
        }
        self.expect = Some(Expect::Etag(outcome.etag.clone().unwrap_or_default()));
        Vec::new()
    }
}

impl Archive {
    /// Where `row`'s member lies, or why its index row is unusable.
    fn span(&self, row: &IndexRow) -> Result<Span> {
        span(row).map_err(|e| {
            Error::bad_input(
                self.index_uri.to_string(),
                format!("the row for `{}`: {e}; run verify on its manifest", row.key),
            )
        })
    }
}

/// A cursor over one member of an uncompressed archive: one range GET of its header and data.
pub async fn member_cursor(s3: &S3, archive: &Archive, row: &IndexRow) -> Result<Cursor> {
    let span = archive.span(row)?;
    let got = s3
        .get_range(&archive.uri, span.header, span.end - 1)
        .await
        .map_err(|f| Error::reading("GetObject", archive.uri.to_string(), f))?;
    Ok(Cursor::new(
        Chunks::Body(got.body),
        span.header,
        archive.uri.to_string(),
    ))
}

/// A cursor over the whole (decompressed) archive, from its first byte.
pub async fn stream_cursor(s3: &S3, archive: &Archive) -> Result<Cursor> {
    let got = s3
        .get_stream(&archive.uri)
        .await
        .map_err(|f| Error::reading("GetObject", archive.uri.to_string(), f))?;
    Ok(Cursor::new(
        decompressed(got.body, archive.compression),
        0,
        archive.uri.to_string(),
    ))
}

/// `cat`: one member's bytes to stdout. An uncompressed archive takes one range GET of the
/// data alone; a compressed one is decompressed up to the member.
pub async fn cat(s3: &S3, archive: &Archive, row: &IndexRow) -> Result<()> {
    let span = archive.span(row)?;
    let mut cursor = if archive.compression != Compression::None {
        stream_cursor(s3, archive).await?
    } else if row.size == 0 {
        Cursor::new(
            Chunks::Body(aws_sdk_s3::primitives::ByteStream::from_static(b"")),
            span.data,
            archive.uri.to_string(),
        )
    } else {
        let got = s3
            .get_range(&archive.uri, span.data, span.end - 1)
            .await
            .map_err(|f| Error::reading("GetObject", archive.uri.to_string(), f))?;
        Cursor::new(Chunks::Body(got.body), span.data, archive.uri.to_string())
    };
    cursor.data(row, &mut Stdout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<IndexRow> {
        let row = |key: &str| IndexRow {
            bucket: "src".into(),
            key: key.into(),
            member: format!("src/{key}"),
            version_id: Some(format!("v-{key}")),
            ..IndexRow::default()
        };
        vec![row("img/c"), row("logs/a"), row("logs/b")]
    }

    fn chosen(selection: &Selection) -> Vec<String> {
        rows()
            .into_iter()
            .filter(|r| selection.wants(r))
            .map(|r| r.key)
            .collect()
    }

    #[test]
    fn selection_by_key_prefix_or_all() {
        assert_eq!(chosen(&Selection::default()), ["img/c", "logs/a", "logs/b"]);
        let logs = Selection {
            prefix: Some("logs/".into()),
            ..Selection::default()
        };
        assert_eq!(chosen(&logs), ["logs/a", "logs/b"]);
        let by_key = Selection {
            keys: vec!["logs/b".into(), "src/img/c".into()],
            ..Selection::default()
        };
        assert_eq!(chosen(&by_key), ["img/c", "logs/b"], "keys or member names");
        let with_missing = Selection {
            keys: vec!["logs/a".into(), "nope".into()],
            versions: vec!["v-logs/a".into(), "v-img/c".into(), "v-none".into()],
            ..Selection::default()
        };
        assert_eq!(chosen(&with_missing), ["logs/a"], "keys and versions");
        let mut found = with_missing.none_found();
        for row in rows() {
            with_missing.mark_found(&row, &mut found);
        }
        assert_eq!(
            with_missing.not_found(&found),
            ["nope", "v-img/c", "v-none"],
            "a version of a key not chosen is not found"
        );
    }

    #[test]
    fn headers_come_from_the_index_and_the_member() {
        let row = IndexRow {
            content_type: "text/plain".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
            tags: [("t".to_string(), "1".to_string())].into(),
            ..IndexRow::default()
        };
        let header = MemberHeader {
            attributes: vec![
                ("content-type".into(), "ignored/when-indexed".into()),
                ("cache-control".into(), "no-cache".into()),
                ("expires".into(), "Wed, 21 Oct 2015 07:28:00 GMT".into()),
                ("expires-bad".into(), "x".into()),
            ],
            ..MemberHeader::default()
        };
        let headers = object_headers(&row, &header);
        assert_eq!(headers.content_type.as_deref(), Some("text/plain"));
        assert_eq!(headers.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(headers.expires.map(|e| e.secs()), Some(1_445_412_480));
        assert_eq!(headers.metadata, row.metadata);
        assert_eq!(headers.tags, row.tags);
        let untyped = object_headers(&IndexRow::default(), &header);
        assert_eq!(
            untyped.content_type.as_deref(),
            Some("ignored/when-indexed")
        );
    }
}
