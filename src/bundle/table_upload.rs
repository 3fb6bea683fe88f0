//! The index and the DLQ, uploaded while they grow so that memory does not grow with the
//! manifest: rows collect in a buffer of one part; a full buffer becomes a part of a multipart
//! upload of the table, created with the first full part. A table that never fills a part is
//! one PutObject at the commit. Either way the object exists only once the commit completes
//! it, in the order the commit requires.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::budget::BudgetPermit;
use super::commit::{put_once, Identity};
use super::upload::{Completed, MultipartUpload};
use crate::archive::records::Spill;
use crate::error::Result;
use crate::s3::{ObjectHeaders, Put, S3};
use crate::s3uri::S3Uri;

/// One part in flight while the next fills: the table holds at most two parts of memory.
const CONCURRENT_PARTS: usize = 1;

pub struct TableUpload<T> {
    s3: S3,
    target: S3Uri,
    table: T,
    /// Written with the object, from the start (a multipart upload's metadata is fixed when
    /// it is created).
    metadata: BTreeMap<String, String>,
    part_size: usize,
    upload: Option<MultipartUpload>,
    next_part: i32,
}

impl<T: Spill> TableUpload<T> {
    pub fn new(
        s3: &S3,
        target: S3Uri,
        table: T,
        metadata: BTreeMap<String, String>,
        part_size: u64,
    ) -> Self {
        TableUpload {
            s3: s3.clone(),
            target,
            table,
            metadata,
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
            upload: None,
            next_part: 1,
        }
    }

    pub fn table(&mut self) -> &mut T {
        &mut self.table
    }

    pub fn rows(&self) -> u64 {
        self.table.rows()
    }

    pub fn target(&self) -> &S3Uri {
        &self.target
    }

    /// Uploads the rows so far as a part once they fill one.
    pub async fn spill_if_full(&mut self) -> Result<()> {
        if self.table.buffered() < self.part_size {
            return Ok(());
        }
        let body = Bytes::from(self.table.take());
        // Boxed: the upload's SDK futures would otherwise make every row's future kilobytes.
        Box::pin(self.send(body)).await
    }

    async fn send(&mut self, body: Bytes) -> Result<()> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let headers = ObjectHeaders {
                    content_type: Some("text/csv".into()),
                    metadata: self.metadata.clone(),
                    ..ObjectHeaders::default()
                };
                let created = MultipartUpload::create_with(
                    &self.s3,
                    &self.target,
                    &headers,
                    None,
                    CONCURRENT_PARTS,
                )
                .await?;
                self.upload.insert(created)
            }
        };
        upload
            .send_part(self.next_part, body, BudgetPermit::default())
            .await?;
        self.next_part += 1;
        Ok(())
    }

    /// Writes the table once (nothing may be at its key yet): puts it whole with
    /// `late_metadata` added, or completes its upload (which has only the metadata it was
    /// created with). On failure the caller aborts it.
    pub async fn commit(
        &mut self,
        late_metadata: BTreeMap<String, String>,
        mine: &Identity,
    ) -> Result<Completed> {
        let rest = Bytes::from(self.table.take());
        if self.upload.is_some() && !rest.is_empty() {
            // A clone of `Bytes` shares the buffer.
            self.send(rest.clone()).await?;
        }
        match &mut self.upload {
            Some(upload) => upload.complete_once(mine).await,
            None => {
                let mut put = Put::new("text/csv");
                put.metadata = self.metadata.clone();
                put.metadata.extend(late_metadata);
                put_once(&self.s3, &self.target, rest, put, mine).await
            }
        }
    }

    /// Aborts the table's upload, if it has one: nothing of it is left behind.
    pub async fn abort(&mut self) {
        if let Some(upload) = &mut self.upload {
            upload.abort().await;
        }
    }
}
