//! A bundle manifest read as a stream of entries, so that memory does not grow with the
//! manifest. `bundle` reads a manifest in passes (a summary first, then the objects to archive,
//! then those to copy); every pass after the first asks for the first one's ETag, so all read
//! one version, and a body cut mid-way is read on from where it stopped.

use aws_sdk_s3::primitives::ByteStream;
use tracing::debug;

use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::{ManifestChunks, ManifestEntry};
use crate::retry::Retrier;
use crate::s3::{error_chain, S3};
use crate::s3uri::S3Uri;

pub struct ManifestStream {
    s3: S3,
    uri: S3Uri,
    etag: Option<String>,
    body: ByteStream,
    /// Bytes read so far: where a cut body is read on from.
    offset: u64,
    chunks: ManifestChunks,
    ended: bool,
}

impl ManifestStream {
    /// Starts reading the manifest; with `etag`, exactly that version of it.
    pub async fn open(s3: &S3, uri: &S3Uri, etag: Option<&str>) -> Result<Self> {
        let stream = s3
            .get_from(uri, 0, etag)
            .await
            .map_err(|f| read_error(uri, f))?;
        Ok(ManifestStream {
            s3: s3.clone(),
            uri: uri.clone(),
            etag: etag.map(str::to_string).or(stream.etag),
            body: stream.body,
            offset: 0,
            chunks: ManifestChunks::new(uri.to_string()),
            ended: false,
        })
    }

    /// The version read, for the passes after this one.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The next entries, in manifest order; `None` once the manifest has been read.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<ManifestEntry<'static>>>> {
        let mut retrier = Retrier::new(self.s3.settings().retry);
        while !self.ended {
            match self.body.try_next().await {
                Ok(Some(chunk)) => {
                    self.offset += chunk.len() as u64;
                    let entries = self.chunks.feed(&chunk)?;
                    if !entries.is_empty() {
                        return Ok(Some(entries));
                    }
                }
                Ok(None) => {
                    self.ended = true;
                    let entries = self.chunks.finish()?;
                    if !entries.is_empty() {
                        return Ok(Some(entries));
                    }
                }
                Err(e) => {
                    let failure =
                        RemoteFailure::Transient(format!("body cut off: {}", error_chain(&e)));
                    if !retrier.again(&failure).await {
                        return Err(read_error(&self.uri, retrier.gave_up(&failure)));
                    }
                    debug!(
                        "{}: cut off after {} bytes; reading on from there",
                        self.uri, self.offset
                    );
                    self.body = self
                        .s3
                        .get_from(&self.uri, self.offset, self.etag.as_deref())
                        .await
                        .map_err(|f| read_error(&self.uri, f))?
                        .body;
                }
            }
        }
        Ok(None)
    }
}

fn read_error(uri: &S3Uri, failure: RemoteFailure) -> Error {
    let failure = match failure {
        RemoteFailure::PreconditionFailed => RemoteFailure::Permanent(
            "the manifest was replaced while it was being bundled; nothing is committed, and \
             the new version is bundled when the manifest is put back (or the message comes \
             back)"
                .into(),
        ),
        other => other,
    };
    Error::reading("GetObject", uri.to_string(), failure)
}
