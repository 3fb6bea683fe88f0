//! Streaming inventory data files from S3 into the synchronous readers: the download runs on the
//! async runtime and hands chunks over a bounded channel to a blocking thread, which hashes,
//! decompresses and parses them. Nothing is held whole in memory or written to disk.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use super::columns::ColumnMap;
use super::ranges::RangeSource;
use super::{DataFile, FileFormat, InventoryRow, RowPosition};
use crate::error::{Error, Result};
use crate::s3::{error_chain, S3};
use crate::s3uri::S3Uri;

/// How many downloaded chunks may wait for the parser (each a few KiB to a few MiB).
const CHUNKS_IN_FLIGHT: usize = 16;

/// A `Read` over chunks arriving on a channel; EOF when the sender is dropped.
pub struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Hashes and counts the bytes read through it.
pub struct Md5Reader<R> {
    inner: R,
    hasher: Md5,
    bytes: u64,
}

impl<R: Read> Md5Reader<R> {
    pub fn new(inner: R) -> Self {
        Md5Reader {
            inner,
            hasher: Md5::new(),
            bytes: 0,
        }
    }

    /// Reads what is left, then returns the MD5 hex and byte count of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for Md5Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Starts downloading `uri`; its bytes arrive on the returned reader. The task's result tells
/// whether the download completed; a failed download ends the reader early.
/// `progress` counts the bytes downloaded.
pub fn spawn_download(
    s3: S3,
    uri: S3Uri,
    progress: indicatif::ProgressBar,
) -> (ChannelReader, tokio::task::JoinHandle<Result<()>>) {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let task = tokio::spawn(async move {
        let mut stream = s3
            .get_stream(&uri)
            .await
            .map_err(|failure| Error::reading("GetObject", uri.to_string(), failure))?;
        loop {
            match stream.body.try_next().await {
                Ok(Some(chunk)) => {
                    progress.inc(chunk.len() as u64);
                    if sender.send(chunk).await.is_err() {
                        // The parser stopped (bad input); its error is the one to report.
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(Error::Remote {
                        operation: "GetObject",
                        location: uri.to_string(),
                        detail: format!("download cut off: {}", error_chain(&e)),
                    })
                }
            }
        }
    });
    (ChannelReader::new(receiver), task)
}

/// A data file's bytes as the parser gets them.
pub enum DataSource {
    /// Streamed whole, in order (CSV); hashed as it is parsed.
    Stream(ChannelReader),
    /// Read by ranged GETs (ORC, Parquet) while a second, streaming download of the same file
    /// computes its MD5 and size on another thread.
    Ranges {
        source: RangeSource,
        hash: tokio::task::JoinHandle<io::Result<(String, u64)>>,
    },
}

/// Starts reading one data file: a streaming download (CSV, or the MD5 pass of a columnar
/// file). The task's result tells whether the download completed. Call it on the runtime.
pub fn open_data_file(
    s3: S3,
    uri: S3Uri,
    file: &DataFile,
    format: FileFormat,
    progress: indicatif::ProgressBar,
) -> (DataSource, tokio::task::JoinHandle<Result<()>>) {
    let (reader, task) = spawn_download(s3.clone(), uri.clone(), progress);
    let source = match format {
        FileFormat::Csv => DataSource::Stream(reader),
        FileFormat::Orc | FileFormat::Parquet => DataSource::Ranges {
            source: RangeSource::new(s3, uri, file.size, tokio::runtime::Handle::current()),
            hash: tokio::task::spawn_blocking(move || Md5Reader::new(reader).finish()),
        },
    };
    (source, task)
}

/// Reads one data file, calling `on_row` for every row, then checks the file's size and MD5
/// against the manifest. `columns` is the CSV `fileSchema` (ORC and Parquet files carry their
/// own). Blocking: call it from a blocking thread.
pub fn read_data_file(
    source: DataSource,
    format: FileFormat,
    columns: Option<&ColumnMap>,
    file: &DataFile,
    location: &str,
    on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    match source {
        DataSource::Stream(reader) => {
            let hashing = Md5Reader::new(reader);
            let hashing = match (format, columns) {
                (FileFormat::Csv, Some(columns)) => {
                    super::csv::read_gzip_csv(hashing, columns, location, on_row)?
                }
                _ => {
                    return Err(Error::bad_input(
                        location,
                        "internal: a CSV reader without a fileSchema",
                    ))
                }
            };
            let (md5, bytes) = hashing
                .finish()
                .map_err(|e| Error::bad_input(location, format!("cannot read to the end: {e}")))?;
            verify(&md5, bytes, file, location)
        }
        DataSource::Ranges { source, hash } => {
            let parsed = match format {
                FileFormat::Parquet => {
                    super::parquet::read_parquet(source.clone(), location, on_row)
                }
                _ => super::orc::read_orc(source.clone(), location, on_row),
            };
            // A failed ranged GET explains the reader's error.
            let parsed = parsed.map_err(|e| source.take_failure().unwrap_or(e));
            if let Err(Error::Interrupted) = parsed {
                hash.abort();
                return parsed;
            }
            let hashed = tokio::runtime::Handle::current()
                .block_on(hash)
                .map_err(|e| Error::bad_input(location, format!("the MD5 pass failed: {e}")))?
                .map_err(|e| Error::bad_input(location, format!("cannot read to the end: {e}")))?;
            // A file that is not what manifest.json says explains any parse error.
            verify(&hashed.0, hashed.1, file, location)?;
            parsed
        }
    }
}

/// Checks the size and MD5 of what was read against manifest.json.
fn verify(md5: &str, bytes: u64, file: &DataFile, location: &str) -> Result<()> {
    if bytes != file.size {
        return Err(Error::bad_input(
            location,
            format!("data file has {bytes} bytes but manifest.json says {}: the report is incomplete or was changed", file.size),
        ));
    }
    if !md5.eq_ignore_ascii_case(&file.md5_checksum) {
        return Err(Error::bad_input(
            location,
            format!("data file has MD5 {md5} but manifest.json says {}: the report is damaged or was changed", file.md5_checksum),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_reader_hashes_everything_even_what_the_parser_left() {
        let mut reader = Md5Reader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        reader
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        let (md5, bytes) = reader.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(bytes, 11);
    }

    #[test]
    fn channel_reader_reads_chunks_then_eof() {
        let (sender, receiver) = mpsc::channel(4);
        let producer = std::thread::spawn(move || {
            for chunk in ["ab", "", "cde"] {
                let _ = sender.blocking_send(Bytes::from(chunk));
            }
        });
        let mut text = String::new();
        ChannelReader::new(receiver)
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = producer.join();
        assert_eq!(text, "abcde");
    }
}
