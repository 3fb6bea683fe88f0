//! Reading a report's data files several at a time. Each file is downloaded and decoded on its
//! own thread into batches; the consumer takes the batches in inventory order, so what it makes
//! of them never depends on which file was read faster.
//!
//! Memory is bounded by the files in flight (at most `parallel`, each holding a permit until the
//! consumer has finished it) times what one file's reader holds plus [`BATCHES_AHEAD`] batches.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::columns::ColumnMap;
use super::fetch::{open_data_file, read_data_file};
use super::{DataFile, FileFormat, InventoryManifest, InventoryRow};
use crate::error::{Error, Result};
use crate::s3::S3;
use crate::s3uri::S3Uri;

/// What a reader thread makes of a data file's rows, one batch at a time.
pub trait RowBatch: Send + 'static {
    fn add(&mut self, row: &InventoryRow<'_>);
    /// True once the batch should be handed to the consumer.
    fn is_full(&self) -> bool;
}

/// Batches a file's reader may have ready before the consumer takes them.
const BATCHES_AHEAD: usize = 4;

/// Most data files read at once: beyond four, memory grows and the single consumer (splitting
/// and uploading manifests) is the limit anyway.
const MOST_PARALLEL: usize = 4;

/// One file read at a time per core, between 1 and [`MOST_PARALLEL`].
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, MOST_PARALLEL)
}

/// A data file being read, in inventory order.
struct FileInFlight<B> {
    location: String,
    batches: mpsc::Receiver<B>,
    reader: JoinHandle<Result<()>>,
    /// Held until the consumer has taken the file's last batch.
    _permit: OwnedSemaphorePermit,
}

/// The batches of every data file of a report, in inventory order.
pub struct OrderedBatches<B> {
    files: mpsc::Receiver<FileInFlight<B>>,
    current: Option<FileInFlight<B>>,
    opener: JoinHandle<()>,
    runtime: Handle,
}

/// How to read the files of one report.
pub struct ReadPlan {
    pub s3: S3,
    /// Bucket that holds the data files (the manifest.json's bucket).
    pub bucket: String,
    /// The CSV `fileSchema` (ORC and Parquet files carry their own).
    pub columns: Option<ColumnMap>,
    pub parallel: usize,
    /// Counts the bytes downloaded.
    pub progress: indicatif::ProgressBar,
}

impl<B: RowBatch> OrderedBatches<B> {
    /// Starts reading `inventory`'s data files, `plan.parallel` at a time, each into batches
    /// made by `new_batch`. Call it on the runtime.
    pub fn start(
        plan: ReadPlan,
        inventory: &InventoryManifest,
        new_batch: impl Fn() -> B + Send + Sync + 'static,
    ) -> Self {
        let parallel = plan.parallel.max(1);
        let (files_tx, files_rx) = mpsc::channel(parallel);
        let permits = Arc::new(Semaphore::new(parallel));
        let new_batch = Arc::new(new_batch);
        let files = inventory.files.clone();
        let format = inventory.file_format;
        let columns = Arc::new(plan.columns);
        let opener = tokio::spawn(async move {
            for file in files {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let uri = S3Uri::new(plan.bucket.clone(), file.key.clone());
                let reader = FileReader {
                    file,
                    format,
                    columns: columns.clone(),
                    location: uri.to_string(),
                };
                let in_flight =
                    reader.start(&plan.s3, uri, new_batch.clone(), &plan.progress, permit);
                if files_tx.send(in_flight).await.is_err() {
                    return;
                }
            }
        });
        OrderedBatches {
            files: files_rx,
            current: None,
            opener,
            runtime: Handle::current(),
        }
    }

    /// The next batch in inventory order, `None` after the last one. A file's error comes after
    /// the batches it made before failing. Blocking: call it from a blocking thread.
    pub fn next_blocking(&mut self) -> Result<Option<B>> {
        loop {
            if let Some(file) = &mut self.current {
                if let Some(batch) = file.batches.blocking_recv() {
                    return Ok(Some(batch));
                }
                if let Some(file) = self.current.take() {
                    let location = file.location;
                    self.runtime.block_on(file.reader).unwrap_or_else(|join| {
                        Err(Error::bad_input(
                            location,
                            format!("the reader of this data file crashed: {join}"),
                        ))
                    })?;
                }
                continue;
            }
            match self.files.blocking_recv() {
                Some(file) => self.current = Some(file),
                None => return Ok(None),
            }
        }
    }
}

impl<B> Drop for OrderedBatches<B> {
    /// No new file is opened once the consumer is gone; readers of open files stop at their
    /// next batch.
    fn drop(&mut self) {
        self.opener.abort();
    }
}

/// One data file's reader: what it needs on its thread.
struct FileReader {
    file: DataFile,
    format: FileFormat,
    columns: Arc<Option<ColumnMap>>,
    location: String,
}

impl FileReader {
    /// Starts the download and the decoding thread.
    fn start<B: RowBatch>(
        self,
        s3: &S3,
        uri: S3Uri,
        new_batch: Arc<impl Fn() -> B + Send + Sync + 'static>,
        progress: &indicatif::ProgressBar,
        permit: OwnedSemaphorePermit,
    ) -> FileInFlight<B> {
        let (source, download) =
            open_data_file(s3.clone(), uri, &self.file, self.format, progress.clone());
        let (batches_tx, batches_rx) = mpsc::channel(BATCHES_AHEAD);
        let location = self.location.clone();
        let runtime = Handle::current();
        let reader = tokio::task::spawn_blocking(move || {
            let mut batch = new_batch();
            let parsed = read_data_file(
                source,
                self.format,
                self.columns.as_ref().as_ref(),
                &self.file,
                &self.location,
                |row, _| {
                    batch.add(row);
                    if batch.is_full() {
                        let full = std::mem::replace(&mut batch, new_batch());
                        // The consumer is gone: stop reading.
                        batches_tx
                            .blocking_send(full)
                            .map_err(|_| Error::Interrupted)?;
                    }
                    Ok(())
                },
            );
            // A failed download explains a truncated or unreadable stream.
            runtime.block_on(download).unwrap_or_else(|join| {
                Err(Error::Remote {
                    operation: "GetObject",
                    location: self.location.clone(),
                    detail: join.to_string(),
                })
            })?;
            parsed?;
            batches_tx
                .blocking_send(batch)
                .map_err(|_| Error::Interrupted)
        });
        FileInFlight {
            location,
            batches: batches_rx,
            reader,
            _permit: permit,
        }
    }
}
