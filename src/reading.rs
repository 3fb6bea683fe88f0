//! Reading archives back: the bytes of a range GET, or of a whole compressed archive
//! decompressed on a blocking thread while it downloads, arrive as [`Chunks`] of the
//! uncompressed tar stream. Memory stays bounded: a few chunks in flight.

use std::io::Read;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::archive::layout::Compression;
use crate::error::RemoteFailure;
use crate::s3::{error_chain, GetStream, S3};
use crate::s3uri::S3Uri;

/// Decompressed bytes handed over at a time.
const CHUNK: usize = 1 << 20;
/// Chunks buffered between the download, the decoder and the consumer.
const IN_FLIGHT: usize = 8;

/// Why the bytes stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The connection dropped mid-body: reading again may succeed.
    #[error("body cut off: {0}")]
    Cut(String),
    /// The compressed stream does not decode: the archive is damaged.
    #[error("{0}")]
    Corrupt(String),
}

/// Bytes of a tar stream, in order.
pub enum Chunks {
    Body(ByteStream),
    Channel(mpsc::Receiver<Result<Bytes, ReadError>>),
}

impl Chunks {
    /// The next bytes; `None` at the end; an error when the body was cut or did not decode.
    pub async fn next(&mut self) -> Option<Result<Bytes, ReadError>> {
        match self {
            Chunks::Body(body) => body
                .next()
                .await
                .map(|r| r.map_err(|e| ReadError::Cut(error_chain(&e)))),
            Chunks::Channel(receiver) => receiver.recv().await,
        }
    }
}

/// A blocking reader over chunks sent from the async side. A cut body surfaces as an I/O error
/// of kind `ConnectionAborted`, which the decoders pass through, so it stays a [`ReadError::Cut`].
struct ChannelReader {
    receiver: mpsc::Receiver<Result<Bytes, ReadError>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        e.to_string(),
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A blocking reader over `body`, which downloads on the runtime meanwhile (a few chunks
/// ahead). Create it on the runtime; read it on a blocking thread.
pub fn blocking_reader(body: ByteStream) -> impl Read + Send + 'static {
    let (raw_tx, raw_rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let mut raw = Chunks::Body(body);
        while let Some(chunk) = raw.next().await {
            let failed = chunk.is_err();
            if raw_tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    ChannelReader {
        receiver: raw_rx,
        current: Bytes::new(),
    }
}

/// Times a table's download is resumed where its body was cut off.
const RESUMES: u32 = 4;

/// A blocking reader over the object whose GET `got` is, read to its end: where the body is cut
/// off, the download resumes with a range GET from the byte it stopped at (the SDK retries
/// failed requests, not cut bodies), of the same version only (`If-Match` on the first GET's
/// ETag): a table replaced mid-read fails, never yields half of each. Create it on the
/// runtime; read it on a blocking thread.
pub fn resumed_reader(s3: S3, uri: S3Uri, got: GetStream) -> impl Read + Send + 'static {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let (mut body, size, etag) = (got.body, got.size, got.etag);
        let (mut offset, mut resumes) = (0u64, 0);
        loop {
            let message = match body.next().await {
                None => return,
                Some(Ok(bytes)) => {
                    offset += bytes.len() as u64;
                    Ok(bytes)
                }
                Some(Err(e)) if resumes < RESUMES && offset < size => {
                    resumes += 1;
                    tracing::debug!("{uri}: body cut off ({}); reading on", error_chain(&e));
                    match s3.get_from(&uri, offset, etag.as_deref()).await {
                        Ok(next) => {
                            body = next.body;
                            continue;
                        }
                        Err(RemoteFailure::PreconditionFailed) => Err(ReadError::Corrupt(
                            "the object was replaced while it was being read; run again"
                                .to_string(),
                        )),
                        Err(failure) => Err(ReadError::Cut(failure.to_string())),
                    }
                }
                Some(Err(e)) => Err(ReadError::Cut(error_chain(&e))),
            };
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });
    ChannelReader {
        receiver: rx,
        current: Bytes::new(),
    }
}

/// Rows handed over at a time by a [`RowStream`].
const ROW_BATCH: usize = 1024;

/// The rows of a table (an index, a DLQ, a manifest) parsed on a blocking thread while it
/// downloads, handed over in batches: a few batches are held, whatever the table's length.
pub struct RowStream<T> {
    batches: mpsc::Receiver<crate::error::Result<Vec<T>>>,
    current: std::vec::IntoIter<T>,
}

impl<T: Send + 'static> RowStream<T> {
    /// Parses the object `got` is the GET of with `rows` (given a blocking reader of it) on a
    /// blocking thread. Call it on the runtime.
    pub fn start<I, F>(s3: &S3, uri: &S3Uri, got: GetStream, rows: F) -> Self
    where
        I: Iterator<Item = crate::error::Result<T>>,
        F: FnOnce(Box<dyn Read + Send>) -> crate::error::Result<I> + Send + 'static,
    {
        let reader: Box<dyn Read + Send> = Box::new(resumed_reader(s3.clone(), uri.clone(), got));
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let rows = match rows(reader) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut batch = Vec::with_capacity(ROW_BATCH);
            for row in rows {
                match row {
                    Ok(row) => batch.push(row),
                    Err(e) => {
                        if !batch.is_empty() {
                            let _ = tx.blocking_send(Ok(std::mem::take(&mut batch)));
                        }
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                if batch.len() == ROW_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(ROW_BATCH));
                    if tx.blocking_send(Ok(full)).is_err() {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(Ok(batch));
            }
        });
        RowStream {
            batches: rx,
            current: Vec::new().into_iter(),
        }
    }

    /// The next row; `None` after the last; an error ends the rows.
    pub async fn next(&mut self) -> Option<crate::error::Result<T>> {
        loop {
            if let Some(row) = self.current.next() {
                return Some(Ok(row));
            }
            match self.batches.recv().await? {
                Ok(batch) => self.current = batch.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The uncompressed tar stream of a whole archive body.
pub fn decompressed(body: ByteStream, compression: Compression) -> Chunks {
    if compression == Compression::None {
        return Chunks::Body(body);
    }
    let reader = blocking_reader(body);
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut decoder: Box<dyn Read> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            _ => match zstd::stream::read::Decoder::new(reader) {
                Ok(decoder) => Box::new(decoder),
                Err(e) => {
                    let _ = tx.blocking_send(Err(ReadError::Corrupt(format!("zstd decoder: {e}"))));
                    return;
                }
            },
        };
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let message = match decoder.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    Ok(Bytes::from(buffer))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => Err(ReadError::Cut(
                    e.to_string()
                        .trim_start_matches("body cut off: ")
                        .to_string(),
                )),
                Err(e) => Err(ReadError::Corrupt(format!(
                    "cannot decompress ({compression:?}): {e}"
                ))),
            };
            let failed = message.is_err();
            if tx.blocking_send(message).is_err() || failed {
                return;
            }
        }
    });
    Chunks::Channel(rx)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    async fn collect(mut chunks: Chunks) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn gzip_and_zstd_decode_and_damage_is_an_error() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let gz = gz.finish().unwrap_or_default();
        let zst = zstd::stream::encode_all(data.as_slice(), 1).unwrap_or_default();
        for (bytes, compression) in [(gz, Compression::Gzip), (zst, Compression::Zstd)] {
            let whole = collect(decompressed(ByteStream::from(bytes.clone()), compression)).await;
            assert_eq!(
                whole.as_deref().ok(),
                Some(data.as_slice()),
                "{compression:?}"
            );
            let cut = bytes[..bytes.len() / 2].to_vec();
            let damaged = collect(decompressed(ByteStream::from(cut), compression)).await;
            assert!(
                matches!(damaged, Err(ReadError::Corrupt(_))),
                "{compression:?}: {damaged:?}"
            );
        }
        let plain = collect(decompressed(
            ByteStream::from(data.clone()),
            Compression::None,
        ))
        .await;
        assert_eq!(plain.ok(), Some(data));
    }
}
