//! Reading members back out of an archive: the index beside it says where each member is. An
//! uncompressed archive gives each member with one range GET of its header and data; a
//! compressed one is streamed once, decompressed, and the members taken in passing. Every
//! member's header must name it and its bytes must have the index's MD5.
//!
//! Destinations: S3 (content headers, metadata and tags restored), a local folder (names that
//! would escape it refused, attributes as `user.s3.*` xattrs), or stdout (`cat`).

pub mod local;
pub mod path;

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::archive::layout::{index_key_for_archive, Compression};
use crate::archive::pax::{parse_member_header, MemberHeader};
use crate::archive::records::{index_rows, IndexRow};
use crate::archive::scan::{span, Span};
use crate::bundle::budget::BudgetPermit;
use crate::bundle::upload::MultipartUpload;
use crate::error::{Error, Result};
use crate::manifest::join_prefix;
use crate::reading::{decompressed, Chunks, ReadError, RowStream};
use crate::s3::{with_object_headers, ObjectHeaders, S3};
use crate::s3uri::S3Uri;

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
/// those under `prefix`, or all.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub keys: Vec<String>,
    pub prefix: Option<String>,
}

impl Selection {
    pub fn wants(&self, row: &IndexRow) -> bool {
        (self.keys.is_empty() || self.keys.iter().any(|k| *k == row.key || *k == row.member))
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| row.key.starts_with(p))
    }

    /// Marks the keys `row` answers in `found` (one flag per key).
    pub fn mark_found(&self, row: &IndexRow, found: &mut [bool]) {
        for (key, seen) in self.keys.iter().zip(found.iter_mut()) {
            *seen |= *key == row.key || *key == row.member;
        }
    }

    /// The keys whose flag in `found` is still false.
    pub fn not_found(&self, found: &[bool]) -> Vec<&str> {
        self.keys
            .iter()
            .zip(found)
            .filter(|(_, seen)| !**seen)
            .map(|(key, _)| key.as_str())
            .collect()
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

/// An S3 object: one PutObject when it fits a part, else a multipart upload.
struct S3Sink {
    s3: S3,
    target: S3Uri,
    /// PART_SIZE, or more so that the member fits in 10,000 parts.
    part_size: usize,
    headers: ObjectHeaders,
    buffer: Vec<u8>,
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
    /// Completes the object; returns its new version ID.
    async fn finish(mut self) -> Result<Option<String>> {
        match self.upload.take() {
            Some(mut upload) => {
                let completed = async {
                    if !self.buffer.is_empty() {
                        let body = Bytes::from(std::mem::take(&mut self.buffer));
                        upload
                            .send_part(self.next_part, body, BudgetPermit::default())
                            .await?;
                    }
                    upload.complete().await
                }
                .await;
                if completed.is_err() {
                    upload.abort().await;
                }
                completed.map(|done| done.version_id)
            }
            None => {
                let request = self
                    .s3
                    .client()
                    .put_object()
                    .bucket(&self.target.bucket)
                    .key(&self.target.key)
                    .body(Bytes::from(std::mem::take(&mut self.buffer)).into());
                let request = with_object_headers!(request, &self.headers, self.s3.settings());
                let output = crate::send_upload!(request, self.s3.settings()).map_err(|e| {
                    Error::writing("PutObject", self.target.to_string(), crate::s3::failure(e))
                })?;
                Ok(output.version_id().map(str::to_string))
            }
        }
    }

    async fn abort(mut self) {
        if let Some(mut upload) = self.upload.take() {
            upload.abort().await;
        }
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

/// Where extracted members go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Bucket and key prefix (empty: the original keys).
    S3(S3Uri),
    Local(PathBuf),
}

/// One member restored.
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
}

/// Restored members whose upload runs in the background.
pub type Background = tokio::task::JoinSet<Result<Restored>>;

/// Restores one member read from `cursor` to `destination`.
pub async fn restore(
    s3: &S3,
    cursor: &mut Cursor,
    row: &IndexRow,
    destination: &Destination,
) -> Result<Restored> {
    let mut none = None;
    match restore_in(s3, cursor, row, destination, &mut none).await? {
        Some(restored) => Ok(restored),
        // Without a background set every upload is finished here.
        None => Err(Error::Interrupted),
    }
}

/// Restores one member read from `cursor`. With `background`, a member that fits one PutObject
/// is uploaded by a task added there (the caller bounds how many run), and `None` is returned:
/// a single pass over a compressed archive then keeps reading while small objects upload.
pub async fn restore_in(
    s3: &S3,
    cursor: &mut Cursor,
    row: &IndexRow,
    destination: &Destination,
    background: &mut Option<&mut Background>,
) -> Result<Option<Restored>> {
    let header = cursor.header(row).await?;
    let mut restored = Restored {
        key: row.key.clone(),
        size: row.size,
        target: String::new(),
        archived_version_id: row.version_id.clone(),
        new_version_id: None,
    };
    match destination {
        Destination::S3(to) => {
            let target = S3Uri::new(to.bucket.clone(), join_prefix(&to.key, &row.key));
            restored.target = target.to_string();
            let part_size = crate::bundle::upload::part_size_for(row.size, PART_SIZE as u64);
            let mut sink = S3Sink {
                s3: s3.clone(),
                target,
                part_size: usize::try_from(part_size).unwrap_or(PART_SIZE),
                headers: object_headers(row, &header),
                buffer: Vec::new(),
                upload: None,
                next_part: 1,
            };
            if let Err(e) = cursor.data(row, &mut sink).await {
                sink.abort().await;
                return Err(e);
            }
            match background {
                Some(tasks) if sink.upload.is_none() => {
                    tasks.spawn(async move {
                        restored.new_version_id = sink.finish().await?;
                        Ok(restored)
                    });
                    return Ok(None);
                }
                _ => restored.new_version_id = sink.finish().await?,
            }
        }
        Destination::Local(root) => {
            let relative = path::local_path(&row.member)
                .map_err(|e| Error::bad_input(cursor.location.clone(), e.to_string()))?;
            let (file_path, file) = local::open(root, &relative)?;
            restored.target = file_path.display().to_string();
            if let Some(file) = file {
                let mut sink = FileSink(file, file_path.clone());
                if let Err(e) = cursor.data(row, &mut sink).await {
                    // Never leave a file with the wrong bytes behind.
                    drop(sink);
                    let _ = std::fs::remove_file(&file_path);
                    return Err(e);
                }
            }
            local::write_xattrs(&file_path, &header.attributes);
        }
    }
    Ok(Some(restored))
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
            prefix: None,
        };
        assert_eq!(chosen(&by_key), ["img/c", "logs/b"], "keys or member names");
        let with_missing = Selection {
            keys: vec!["logs/a".into(), "nope".into()],
            prefix: None,
        };
        let mut found = vec![false; 2];
        for row in rows() {
            with_missing.mark_found(&row, &mut found);
        }
        assert_eq!(with_missing.not_found(&found), ["nope"]);
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
