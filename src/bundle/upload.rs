//! The archive's multipart upload: parts are uploaded concurrently (a bounded number at once)
//! while the archive is still being written; each part carries the budget permits of the bytes
//! it holds and releases them once S3 has acknowledged it. An upload that cannot complete is
//! aborted, so no incomplete upload is left behind.

use std::sync::Arc;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::budget::BudgetPermit;
use crate::error::{Error, Result};
use crate::s3::{failure, with_object_headers, ObjectHeaders, S3};
use crate::s3uri::S3Uri;

/// S3's limits.
pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Rounds of the SDK's retries a part gets before the upload is given up.
const PART_RETRIES: u32 = 4;

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

pub struct MultipartUpload {
    s3: S3,
    target: S3Uri,
    upload_id: String,
    slots: Arc<Semaphore>,
    running: JoinSet<Result<CompletedPart>>,
    done: Vec<CompletedPart>,
}

impl MultipartUpload {
    pub async fn create(
        s3: &S3,
        target: &S3Uri,
        content_type: &str,
        storage_class: Option<&StorageClass>,
        concurrent_parts: usize,
    ) -> Result<Self> {
        let headers = ObjectHeaders {
            content_type: Some(content_type.to_string()),
            ..ObjectHeaders::default()
        };
        Self::create_with(s3, target, &headers, storage_class, concurrent_parts).await
    }

    /// Starts an upload of an object with these content headers, metadata and tags.
    pub async fn create_with(
        s3: &S3,
        target: &S3Uri,
        headers: &ObjectHeaders,
        storage_class: Option<&StorageClass>,
        concurrent_parts: usize,
    ) -> Result<Self> {
        let request = s3
            .client()
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .set_storage_class(storage_class.cloned());
        let output = with_object_headers!(request, headers, s3.settings())
            .send()
            .await
            .map_err(|e| Error::writing("CreateMultipartUpload", target.to_string(), failure(e)))?;
        let upload_id = output.upload_id().unwrap_or_default().to_string();
        Ok(MultipartUpload {
            s3: s3.clone(),
            target: target.clone(),
            upload_id,
            slots: Arc::new(Semaphore::new(concurrent_parts.max(1))),
            running: JoinSet::new(),
            done: Vec::new(),
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
            let mut retries = 0;
            let output = loop {
                let request = s3
                    .client()
                    .upload_part()
                    .bucket(&target.bucket)
                    .key(&target.key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body.clone().into())
                    .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone());
                let sent = crate::send_upload!(request, s3.settings());
                match sent.map_err(failure) {
                    Ok(output) => break output,
                    // A whole archive is at stake: a transient failure gets more patience than
                    // the SDK's own retries before the manifest is given up.
                    Err(failure) if failure.is_transient() && retries < PART_RETRIES => {
                        retries += 1;
                        tracing::debug!(
                            "part {number} of {target} failed ({failure}); retry {retries}"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(250 << retries)).await;
                    }
                    Err(failure) => {
                        return Err(Error::writing(
                            "UploadPart",
                            format!("{target} part {number}"),
                            failure,
                        ))
                    }
                }
            };
            drop((slot, permit));
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_string))
                .build())
        });
        Ok(())
    }

    fn reap_finished(&mut self) -> Result<()> {
        while let Some(joined) = self.running.try_join_next() {
            self.done.push(joined.map_err(|e| {
                Error::writing(
                    "UploadPart",
                    self.target.to_string(),
                    crate::error::RemoteFailure::Permanent(e.to_string()),
                )
            })??);
        }
        Ok(())
    }

    /// Waits for every part and completes the upload; returns the new object's version ID.
    pub async fn complete(mut self) -> Result<Option<String>> {
        while let Some(joined) = self.running.join_next().await {
            let part = joined.map_err(|e| {
                Error::writing(
                    "UploadPart",
                    self.target.to_string(),
                    crate::error::RemoteFailure::Permanent(e.to_string()),
                )
            });
            match part {
                Ok(Ok(part)) => self.done.push(part),
                Ok(Err(error)) | Err(error) => {
                    self.abort().await;
                    return Err(error);
                }
            }
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let result = self
            .s3
            .client()
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_expected_bucket_owner(self.s3.settings().expected_bucket_owner.clone())
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.version_id().map(str::to_string)),
            Err(e) => {
                let error = Error::writing(
                    "CompleteMultipartUpload",
                    self.target.to_string(),
                    failure(e),
                );
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Stops every part and aborts the upload; failures are logged, since the lifecycle rule
    /// that aborts incomplete uploads is the backstop.
    pub async fn abort(mut self) {
        self.running.abort_all();
        while self.running.join_next().await.is_some() {}
        let result = self
            .s3
            .client()
            .abort_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .upload_id(&self.upload_id)
            .set_expected_bucket_owner(self.s3.settings().expected_bucket_owner.clone())
            .send()
            .await;
        match result {
            Ok(_) => tracing::info!("aborted the upload of {}", self.target),
            Err(e) => tracing::warn!(
                "could not abort the upload of {} ({}): {}",
                self.target,
                self.upload_id,
                failure(e)
            ),
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
