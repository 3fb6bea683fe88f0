//! The archive stream: tar bytes are cut into parts as they are written and each part is handed
//! to the multipart upload, which is created with the first part, so a manifest whose objects
//! all failed leaves no upload at all. With compression the tar stream goes through a gzip or
//! zstd encoder (zstd on every core) first; offsets always count the uncompressed tar stream.

use std::collections::BTreeMap;
use std::io::Write;

use aws_sdk_s3::types::StorageClass;
use bytes::Bytes;

use super::budget::BudgetPermit;
use super::commit::Identity;
use super::upload::{Completed, MultipartUpload};
use crate::archive::layout::Compression;
use crate::archive::pax::END_OF_ARCHIVE;
use crate::error::{Error, Result};
use crate::s3::{ObjectHeaders, S3};
use crate::s3uri::S3Uri;

/// The compressing stage; its output is collected in memory and moved into parts.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(compression: Compression) -> std::io::Result<Option<Encoder>> {
        Ok(match compression {
            Compression::None => None,
            Compression::Gzip => Some(Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            ))),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                let cores = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1);
                encoder.multithread(cores)?;
                Some(Encoder::Zstd(encoder))
            }
        })
    }

    /// Compresses `data`; returns what the encoder has produced so far.
    fn feed(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(encoder) => {
                encoder.write_all(data)?;
                Ok(std::mem::take(encoder.get_mut()))
            }
            Encoder::Zstd(encoder) => {
                encoder.write_all(data)?;
                Ok(std::mem::take(encoder.get_mut()))
            }
        }
    }

    /// Ends the compressed stream; returns its last bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(encoder) => encoder.finish(),
            Encoder::Zstd(encoder) => encoder.finish(),
        }
    }
}

/// Where the archive stood before a streamed member: enough to take the member back out if
/// its object fails mid-way. The bytes not yet in a part are copied (less than one part).
pub struct Checkpoint {
    offset: u64,
    buffer: Vec<u8>,
    next_part: i32,
}

/// The archive as uploaded: its size in the uncompressed tar stream and what S3 answered.
#[derive(Debug, Clone)]
pub struct FinishedArchive {
    pub tar_bytes: u64,
    /// The object's size (compressed, when it is): with the ETag, what a HEAD of a cold
    /// archive is checked against.
    pub object_bytes: u64,
    /// The class it was written in (`None`: the bucket's default, STANDARD).
    pub storage_class: Option<StorageClass>,
    pub completed: Completed,
}

pub struct ArchiveWriter {
    s3: S3,
    compression: Compression,
    encoder: Option<Encoder>,
    /// Content type and metadata (the attempt that wrote it).
    headers: ObjectHeaders,
    target: S3Uri,
    storage_class: Option<StorageClass>,
    concurrent_parts: usize,
    part_size: usize,
    buffer: Vec<u8>,
    /// Permits of the bytes in `buffer`, released when its part is acknowledged.
    held: BudgetPermit,
    upload: Option<MultipartUpload>,
    next_part: i32,
    /// Bytes of each part sent (part `n` at `n - 1`), those taken back by a rollback removed.
    part_bytes: Vec<u64>,
    offset: u64,
}

impl ArchiveWriter {
    pub fn new(
        s3: &S3,
        target: S3Uri,
        compression: Compression,
        storage_class: Option<StorageClass>,
        part_size: u64,
        concurrent_parts: usize,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        let encoder = Encoder::new(compression).map_err(|source| Error::Io {
            location: format!("the {compression:?} encoder for {target}"),
            source,
        })?;
        let content_type = match compression {
            Compression::None => "application/x-tar",
            Compression::Gzip => "application/gzip",
            Compression::Zstd => "application/zstd",
        };
        Ok(ArchiveWriter {
            s3: s3.clone(),
            compression,
            encoder,
            headers: ObjectHeaders {
                content_type: Some(content_type.to_string()),
                metadata,
                ..ObjectHeaders::default()
            },
            target,
            storage_class,
            concurrent_parts,
            part_size,
            buffer: Vec::new(),
            held: BudgetPermit::default(),
            upload: None,
            next_part: 1,
            part_bytes: Vec::new(),
            offset: 0,
        })
    }

    /// Bytes written so far: the offset of the next byte in the uncompressed tar stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn target(&self) -> &S3Uri {
        &self.target
    }

    /// Appends tar bytes (compressed on the way when asked), uploading every part that fills up.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.offset += data.len() as u64;
        match self.encoder.as_mut() {
            None => self.append(data).await,
            Some(encoder) => {
                let compressed = encoder
                    .feed(data)
                    .map_err(|source| self.encoder_error(source))?;
                self.append(&compressed).await
            }
        }
    }

    /// Like `write`, for bytes the caller gives away: whole parts are cut out of them without a
    /// copy, so a large object is never held twice (once read, once in part buffers).
    pub async fn write_owned(&mut self, mut data: Bytes) -> Result<()> {
        if self.encoder.is_some() {
            return self.write(&data).await;
        }
        self.offset += data.len() as u64;
        while !data.is_empty() {
            if self.buffer.is_empty() && data.len() >= self.part_size {
                let part = data.split_to(self.part_size);
                Box::pin(self.send_part(part)).await?;
            } else {
                let take = (self.part_size - self.buffer.len()).min(data.len());
                self.append(&data.split_to(take)).await?;
            }
        }
        Ok(())
    }

    fn encoder_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            location: format!("compressing {}", self.target),
            source,
        }
    }

    /// Appends bytes as they go to S3.
    async fn append(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer.reserve_exact(self.part_size);
            }
            let take = (self.part_size - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.part_size {
                // Boxed, as is every upload below: the SDK's request futures are kilobytes,
                // and inline they made every small write's future that size to move.
                Box::pin(self.flush_part()).await?;
            }
        }
        Ok(())
    }

    /// Keeps `permit` until the part holding the bytes written so far is acknowledged.
    /// With compression the object's bytes are already inside the encoder, whose output is far
    /// smaller and bounded by the part buffer: the permit is released at once. Holding it until
    /// a part fills would stall a run of very compressible objects, whose parts may never fill
    /// before the budget is used up.
    pub fn hold(&mut self, permit: BudgetPermit) {
        if self.encoder.is_some() {
            drop(permit);
        } else {
            self.held.merge(permit);
        }
    }

    async fn flush_part(&mut self) -> Result<()> {
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        self.send_part(body).await
    }

    /// Uploads one part, holding the permits of the bytes written so far until it is
    /// acknowledged.
    async fn send_part(&mut self, body: Bytes) -> Result<()> {
        if self.upload.is_none() {
            let upload = MultipartUpload::create_with(
                &self.s3,
                &self.target,
                &self.headers,
                self.storage_class.as_ref(),
                self.concurrent_parts,
            )
            .await?;
            self.upload = Some(upload);
        }
        let permit = std::mem::take(&mut self.held);
        let number = self.next_part;
        self.next_part += 1;
        self.part_bytes.push(body.len() as u64);
        match self.upload.as_mut() {
            Some(upload) => upload.send_part(number, body, permit).await,
            None => Ok(()),
        }
    }

    /// Marks where the archive stands, so that what is written next can be taken back with
    /// [`ArchiveWriter::rollback`]. A compressed stream ends its frame here (gzip members and
    /// zstd frames may follow one another in one file), so it can resume from this point.
    pub async fn checkpoint(&mut self) -> Result<Checkpoint> {
        if let Some(encoder) = self.encoder.take() {
            let last = encoder
                .finish()
                .map_err(|source| self.encoder_error(source))?;
            self.append(&last).await?;
            self.encoder =
                Encoder::new(self.compression).map_err(|source| self.encoder_error(source))?;
        }
        Ok(Checkpoint {
            offset: self.offset,
            buffer: self.buffer.clone(),
            next_part: self.next_part,
        })
    }

    /// Takes back everything written since `checkpoint`: the parts uploaded since are
    /// forgotten and their numbers reused, and the unsent bytes are those of the checkpoint
    /// again (a compressed stream starts a new frame).
    pub async fn rollback(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if let Some(upload) = self.upload.as_mut() {
            upload.forget_parts_from(checkpoint.next_part).await?;
        }
        self.next_part = checkpoint.next_part;
        self.part_bytes
            .truncate(usize::try_from(checkpoint.next_part - 1).unwrap_or(0));
        self.offset = checkpoint.offset;
        self.buffer = checkpoint.buffer;
        if self.encoder.is_some() {
            self.encoder =
                Encoder::new(self.compression).map_err(|source| self.encoder_error(source))?;
        }
        Ok(())
    }

    /// Ends the archive and completes the upload as a write-once record written by `mine`;
    /// `None` when nothing was written (no archive). On failure the caller aborts the upload.
    pub async fn finish(&mut self, mine: &Identity) -> Result<Option<FinishedArchive>> {
        if self.offset == 0 {
            // Every member was taken back: parts may have been sent, none is wanted.
            self.abort().await;
            return Ok(None);
        }
        self.write(&END_OF_ARCHIVE).await?;
        if let Some(encoder) = self.encoder.take() {
            let last = encoder
                .finish()
                .map_err(|source| self.encoder_error(source))?;
            self.append(&last).await?;
        }
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        match self.upload.as_mut() {
            Some(upload) => Ok(Some(FinishedArchive {
                tar_bytes: self.offset,
                object_bytes: self.part_bytes.iter().sum(),
                storage_class: self.storage_class.clone(),
                completed: upload.complete_once(mine).await?,
            })),
            None => Ok(None),
        }
    }

    /// Aborts the upload, if one was started and not completed.
    pub async fn abort(&mut self) {
        if let Some(upload) = self.upload.as_mut() {
            upload.abort().await;
        }
    }
}
