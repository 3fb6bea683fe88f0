//! Random access to an S3 object by ranged GETs, for the columnar readers (ORC, Parquet), which
//! read a file's footer first and then one stripe or row group at a time. Blocking: call it from
//! a blocking thread; each request runs on the async runtime through `runtime`.
//!
//! Reads go through a window of at least [`WINDOW`] bytes, so the many small reads of a stripe's
//! or row group's column streams become a few large requests, and while the reader decodes one
//! window the next one is already being fetched. Memory stays bounded by two windows plus the
//! largest single read. A [`RangeSource::span`] reads one column chunk through its own window,
//! so that columns decoded side by side do not evict each other's bytes.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::error::{Error, RemoteFailure};
use crate::s3::S3;
use crate::s3uri::S3Uri;

/// Bytes fetched at least per ranged GET.
pub const WINDOW: u64 = 8 << 20;

/// Bytes fetched at least when a read reaches the end of the file (the footer).
const TAIL: u64 = 64 << 10;

/// A data file on S3 read by ranges. Cheap to clone (clones share the window).
#[derive(Clone)]
pub struct RangeSource {
    inner: Arc<Inner>,
}

struct Inner {
    s3: S3,
    uri: S3Uri,
    len: u64,
    /// Reads and fetches stay below this: the file's length, or the end of a span.
    limit: u64,
    /// Bytes fetched at least per ranged GET.
    window_size: u64,
    runtime: tokio::runtime::Handle,
    window: Mutex<Window>,
    /// The typed error of a failed request: the readers only see an `io::Error`. Shared with
    /// spans, so that the file's source can tell.
    failure: Arc<Mutex<Option<Error>>>,
}

/// The bytes fetched last, and the fetch of the bytes after them.
#[derive(Default)]
struct Window {
    offset: u64,
    bytes: Bytes,
    ahead: Option<Ahead>,
}

struct Ahead {
    offset: u64,
    length: u64,
    fetch: JoinHandle<Result<Bytes, RemoteFailure>>,
}

impl Window {
    fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }

    fn slice(&self, start: u64, end: u64) -> Option<Bytes> {
        (start >= self.offset && end <= self.end()).then(|| {
            self.bytes
                .slice((start - self.offset) as usize..(end - self.offset) as usize)
        })
    }
}

impl RangeSource {
    /// `len` is the size manifest.json gives (the MD5 pass checks it against the real object).
    pub fn new(s3: S3, uri: S3Uri, len: u64, runtime: tokio::runtime::Handle) -> Self {
        RangeSource {
            inner: Arc::new(Inner {
                s3,
                uri,
                len,
                limit: len,
                window_size: WINDOW,
                runtime,
                window: Mutex::new(Window::default()),
                failure: Arc::new(Mutex::new(None)),
            }),
        }
    }

    /// A source for bytes `start..end` only, with its own window of `window_size` bytes whose
    /// first fetch starts now: a column read sequentially beside others, each from its own
    /// window, so memory depends on the window and not on the column's length.
    pub fn span(&self, start: u64, end: u64, window_size: u64) -> RangeSource {
        let inner = &self.inner;
        let span = RangeSource {
            inner: Arc::new(Inner {
                s3: inner.s3.clone(),
                uri: inner.uri.clone(),
                len: inner.len,
                limit: end.min(inner.limit),
                window_size: window_size.max(1),
                runtime: inner.runtime.clone(),
                window: Mutex::new(Window::default()),
                failure: inner.failure.clone(),
            }),
        };
        let ahead = span.fetch_ahead(start);
        if let Ok(mut window) = span.inner.window.lock() {
            window.offset = start;
            window.ahead = ahead;
        }
        span
    }

    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Where reads must end: the file's length, or the end of a span.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The error of a failed ranged GET, if one failed: it explains a reader's error.
    pub fn take_failure(&self) -> Option<Error> {
        self.inner
            .failure
            .lock()
            .ok()
            .and_then(|mut failure| failure.take())
    }

    /// Starts fetching the window after `offset`, unless the file (or span) ends there.
    fn fetch_ahead(&self, offset: u64) -> Option<Ahead> {
        let inner = &self.inner;
        let length = inner.window_size.min(inner.limit.checked_sub(offset)?);
        if length == 0 {
            return None;
        }
        let (s3, uri) = (inner.s3.clone(), inner.uri.clone());
        let fetch = inner
            .runtime
            .spawn(async move { s3.get_range_bytes(&uri, offset, length).await });
        Some(Ahead {
            offset,
            length,
            fetch,
        })
    }

    fn failed(&self, failure: RemoteFailure) -> io::Error {
        let message = failure.to_string();
        if let Ok(mut slot) = self.inner.failure.lock() {
            *slot = Some(Error::reading(
                "GetObject",
                self.inner.uri.to_string(),
                failure,
            ));
        }
        io::Error::other(message)
    }

    fn complete(&self, fetched: Bytes, offset: u64, wanted: u64) -> io::Result<Bytes> {
        if (fetched.len() as u64) < wanted {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "asked for {wanted} bytes at {offset}, got {}: the object is shorter than manifest.json says",
                    fetched.len()
                ),
            ));
        }
        Ok(fetched)
    }

    /// Reads `length` bytes at `start`.
    pub fn read_at(&self, start: u64, length: u64) -> io::Result<Bytes> {
        let inner = &self.inner;
        let end = start.saturating_add(length);
        if end > inner.limit {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of bytes {start}..{end} past the end of the {}-byte file or its column at {}",
                    inner.len, inner.limit
                ),
            ));
        }
        let mut window = inner
            .window
            .lock()
            .map_err(|_| io::Error::other("range window poisoned"))?;
        if let Some(bytes) = window.slice(start, end) {
            return Ok(bytes);
        }
        // The read continues into the window being fetched ahead: wait for it.
        let continues = window.ahead.as_ref().is_some_and(|ahead| {
            ahead.offset == window.end()
                && start >= window.offset
                && end <= ahead.offset + ahead.length
        });
        if let (true, Some(ahead)) = (continues, window.ahead.take()) {
            let next = inner
                .runtime
                .block_on(ahead.fetch)
                .map_err(|e| io::Error::other(format!("ranged GET task: {e}")))?
                .map_err(|f| self.failed(f))?;
            let next = self.complete(next, ahead.offset, ahead.length)?;
            if start >= ahead.offset {
                window.offset = ahead.offset;
                window.bytes = next;
            } else {
                let kept = window.bytes.slice((start - window.offset) as usize..);
                let mut joined = BytesMut::with_capacity(kept.len() + next.len());
                joined.extend_from_slice(&kept);
                joined.extend_from_slice(&next);
                window.offset = start;
                window.bytes = joined.freeze();
            }
            window.ahead = self.fetch_ahead(ahead.offset + ahead.length);
        } else {
            if let Some(ahead) = window.ahead.take() {
                ahead.fetch.abort();
            }
            // Let go of the old window before fetching the new one.
            window.bytes = Bytes::new();
            // Reads reaching the end of the file (the footer) fetch the tail; others a window
            // onwards.
            let (offset, fetch) = if end == inner.len {
                let offset = end.saturating_sub(length.max(TAIL));
                (offset, end - offset)
            } else {
                (
                    start,
                    length.max(inner.window_size).min(inner.limit - start),
                )
            };
            let fetched = inner
                .runtime
                .block_on(inner.s3.get_range_bytes(&inner.uri, offset, fetch))
                .map_err(|f| self.failed(f))?;
            window.bytes = self.complete(fetched, offset, fetch)?;
            window.offset = offset;
            // A read larger than a window is a whole row group: what follows is read the same way.
            if end != inner.limit && length < inner.window_size {
                window.ahead = self.fetch_ahead(offset + fetch);
            }
        }
        window.slice(start, end).ok_or_else(|| {
            io::Error::other(format!("internal: bytes {start}..{end} not in the window"))
        })
    }

    /// A sequential reader from `start` to the end of the file.
    pub fn reader_from(&self, start: u64) -> RangeRead {
        RangeRead {
            source: self.clone(),
            position: start,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(ahead) = self.window.get_mut().ok().and_then(|w| w.ahead.take()) {
            ahead.fetch.abort();
        }
    }
}

/// Sequential reads through a [`RangeSource`].
pub struct RangeRead {
    source: RangeSource,
    position: u64,
}

impl Read for RangeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.source.limit().saturating_sub(self.position);
        let n = (buf.len() as u64).min(left);
        if n == 0 {
            return Ok(0);
        }
        let bytes = self.source.read_at(self.position, n)?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        self.position += n;
        Ok(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use s3bundler_testkit::{new_bucket, put_object, s3_client, server::LocalS3};

    use super::*;
    use crate::s3::WriteSettings;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_span_reads_its_bytes_through_small_windows_and_stops_at_its_end() {
        let client = s3_client(&LocalS3::shared().endpoint);
        let bucket = new_bucket(&client, "ranges").await;
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        put_object(&client, &bucket, "file", data.clone()).await;
        let settings = WriteSettings {
            sse: None,
            sse_kms_key_id: None,
            expected_bucket_owner: None,
            sign_payload: true,
            retry: Default::default(),
        };
        let source = RangeSource::new(
            S3::new(client, settings),
            S3Uri::new(bucket, "file"),
            data.len() as u64,
            tokio::runtime::Handle::current(),
        );
        let checked = tokio::task::spawn_blocking(move || {
            let (start, end) = (1000u64, 2_900_000u64);
            let span = source.span(start, end, 64 << 10);
            // Reads of varied sizes: within a window, across two, larger than a window.
            let (mut at, mut size) = (start, 1u64);
            while at < end {
                let n = size.min(end - at);
                let got = span.read_at(at, n)?;
                assert_eq!(
                    got,
                    data[at as usize..(at + n) as usize],
                    "{n} bytes at {at}"
                );
                at += n;
                size = size * 3 % 200_000 + 1;
            }
            let mut all = Vec::new();
            span.reader_from(start).read_to_end(&mut all)?;
            assert!(all == data[start as usize..end as usize], "sequential read");
            assert!(span.read_at(end - 10, 20).is_err(), "past the span's end");
            Ok::<(), io::Error>(())
        })
        .await;
        checked
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
