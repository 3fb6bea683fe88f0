//! The archive's multipart upload: parts are uploaded concurrently (a bounded number at once)
//! while the archive is still being written; each part carries the budget permits of the bytes
//! it holds and releases them once S3 has acknowledged it. An upload that cannot complete is
//! aborted, so no incomplete upload is left behind.

use std::sync::Arc;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use futures_util::TryFutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::budget::BudgetPermit;
use super::commit::{complete_once, Identity};
use crate::error::{Error, RemoteFailure, Result};
use crate::retry::retrying;
use crate::s3::{failure, with_object_headers, ObjectHeaders, S3};
use crate::s3uri::S3Uri;

/// S3's limits.
pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// A part size that fits `estimated_bytes` in at most 9,000 parts (leaving room for estimates
/// that fall short), never below `minimum`, rounded up to a MiB.
pub fn part_size_for(estimated_bytes: u64, minimum: u64) -> u64 {
    let needed = estimated_bytes.div_ceil(9_000);
    needed
        .max(minimum)
        .max(MIN_PART_SIZE)
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .min(MAX_PART_SIZE)
}

/// What CompleteMultipartUpload answered: the index records it, so that `verify` can prove the
/// index and the archive belong together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    /// As S3 sent it, with quotes.
    pub etag: Option<String>,
    /// When the bucket is versioned.
    pub version_id: Option<String>,
}

pub struct MultipartUpload {
    s3: S3,
    target: S3Uri,
    upload_id: String,
    slots: Arc<Semaphore>,
    running: JoinSet<Result<CompletedPart>>,
    done: Vec<CompletedPart>,
    /// Completed or aborted: nothing is left to clean up.
    closed: bool,
}

impl MultipartUpload {
    /// Starts an upload of an object with these content headers, metadata and tags.
    pub async fn create_with(
        s3: &S3,
        target: &S3Uri,
        headers: &ObjectHeaders,
        storage_class: Option<&StorageClass>,
        concurrent_parts: usize,
    ) -> Result<Self> {
        let output = retrying(s3.settings().retry, target, || {
            let request = s3
                .client()
                .create_multipart_upload()
                .bucket(&target.bucket)
                .key(&target.key)
                .set_storage_class(storage_class.cloned());
            with_object_headers!(request, headers, s3.settings())
                .send()
                .map_err(failure)
        })
        .await
        .map_err(|f| Error::writing("CreateMultipartUpload", target.to_string(), f))?;
        let upload_id = output.upload_id().unwrap_or_default().to_string();
        Ok(MultipartUpload {
            s3: s3.clone(),
            target: target.clone(),
            upload_id,
            slots: Arc::new(Semaphore::new(concurrent_parts.max(1))),
            running: JoinSet::new(),
            done: Vec::new(),
            closed: false,
        })
    }

    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Starts uploading part `number`; waits while the maximum number of parts is in flight.
    /// Returns the first failure of any part started earlier.
    pub async fn send_part(
        &mut self,
        number: i32,
        body: Bytes,
        permit: BudgetPermit,
    ) -> Result<()> {
        self.reap_finished()?;
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Interrupted)?;
        let (s3, target, upload_id) =
            (self.s3.clone(), self.target.clone(), self.upload_id.clone());
        self.running.spawn(async move {
            // A whole archive is at stake: a transient failure is tried again for as long as
            // the retry policy allows before the manifest is given up.
            let output = retrying(
                s3.settings().retry,
                format!("part {number} of {target}"),
                || {
                    let s3 = &s3;
                    let request = s3
                        .client()
                        .upload_part()
                        .bucket(&target.bucket)
                        .key(&target.key)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .body(body.clone().into())
                        .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone());
                    async move { crate::send_upload!(request, s3.settings()).map_err(failure) }
                },
            )
            .await
            .map_err(|f| Error::writing("UploadPart", format!("{target} part {number}"), f))?;
            drop((slot, permit));
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_string))
                .build())
        });
        Ok(())
    }

    /// Forgets parts `from` and later: their bytes were taken back (a streamed member that
    /// failed mid-way), and those numbers are uploaded again with other bytes. Every part in
    /// flight is waited for first, so none can land after its number was reused.
    pub async fn forget_parts_from(&mut self, from: i32) -> Result<()> {
        while let Some(joined) = self.running.join_next().await {
            let part = joined.map_err(|e| self.part_failed(e))??;
            self.done.push(part);
        }
        self.done
            .retain(|part| part.part_number().unwrap_or(0) < from);
        Ok(())
    }

    fn part_failed(&self, error: tokio::task::JoinError) -> Error {
        Error::writing(
            "UploadPart",
            self.target.to_string(),
            RemoteFailure::Permanent(format!("the part upload task failed: {error}")),
        )
    }

    fn reap_finished(&mut self) -> Result<()> {
        while let Some(joined) = self.running.try_join_next() {
            let part = joined.map_err(|e| self.part_failed(e))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Waits for every part and completes the upload. On failure the caller aborts it.
    pub async fn complete(&mut self) -> Result<Completed> {
        self.complete_if(None, false).await
    }

    /// [`Self::complete`] under S3 conditional writes: only while the object's ETag is
    /// `if_match`, or with `if_none_match` only where no object is.
    pub async fn complete_if(
        &mut self,
        if_match: Option<&str>,
        if_none_match: bool,
    ) -> Result<Completed> {
        let parts = self.all_parts().await?;
        let condition = (if_match, if_none_match);
        let output =
            complete_upload(&self.s3, &self.target, &self.upload_id, parts, condition).await?;
        self.closed = true;
        Ok(Completed {
            etag: output.e_tag().map(str::to_string),
            version_id: output.version_id().map(str::to_string),
        })
    }

    /// Waits for every part and completes the upload as a write-once record (see
    /// [`complete_once`]). On failure the caller aborts it.
    pub async fn complete_once(&mut self, mine: &Identity) -> Result<Completed> {
        let parts = self.all_parts().await?;
        let completed = complete_once(&self.s3, &self.target, &self.upload_id, parts, mine).await;
        // Completed (or found to be this writer's): nothing is left to abort. Refused: the
        // upload is still open, and the caller aborts it.
        self.closed = completed.is_ok();
        completed
    }

    /// Every part, in order, once all have been acknowledged.
    async fn all_parts(&mut self) -> Result<Vec<CompletedPart>> {
        self.forget_parts_from(i32::MAX).await?;
        let mut parts: Vec<CompletedPart> = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// Stops every part and aborts the upload (unless it completed); failures are logged,
    /// since the lifecycle rule that aborts incomplete uploads is the backstop.
    pub async fn abort(&mut self) {
        self.running.abort_all();
        while self.running.join_next().await.is_some() {}
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        abort_upload(&self.s3, &self.target, &self.upload_id).await;
    }
}

/// CompleteMultipartUpload of `parts` (in ascending order), tried again while it fails
/// transiently; a failure is the target's. Under S3 conditional writes: only while the
/// object's ETag is `if_match`, or with `if_none_match` only where no object is yet.
pub async fn complete_upload(
    s3: &S3,
    target: &S3Uri,
    upload_id: &str,
    parts: Vec<CompletedPart>,
    (if_match, if_none_match): (Option<&str>, bool),
) -> Result<aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput> {
    retrying(s3.settings().retry, target, || {
        s3.client()
            .complete_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            )
            .set_if_match(if_match.map(str::to_string))
            .set_if_none_match(if_none_match.then(|| "*".to_string()))
            .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
            .send()
            .map_err(failure)
    })
    .await
    .map_err(|f| Error::writing("CompleteMultipartUpload", target.to_string(), f))
}

/// Aborts an upload (see [`S3::abort_upload`]). A failure is logged: the lifecycle rule is the
/// backstop.
pub async fn abort_upload(s3: &S3, target: &S3Uri, upload_id: &str) {
    match s3.abort_upload(target, upload_id).await {
        Ok(()) => tracing::info!("aborted the upload of {target}"),
        Err(RemoteFailure::NotFound) => {}
        Err(failure) => {
            tracing::warn!("could not abort the upload of {target} ({upload_id}): {failure}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_so_any_archive_fits_10000_parts() {
        assert_eq!(part_size_for(0, 8 << 20), 8 << 20);
        assert_eq!(part_size_for(1 << 30, 8 << 20), 8 << 20);
        let huge = 5u64 << 40;
        let part = part_size_for(huge, 8 << 20);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % (1 << 20), 0);
        assert_eq!(part_size_for(u64::MAX / 2, 0), MAX_PART_SIZE);
    }
}
