//! Parquet inventory data files: read one row group at a time, only the columns s3bundler
//! uses, decoded by [`super::columnar`]. Pure: takes any [`RowGroupSource`] (bytes in memory
//! in tests, [`RangeSource`] for S3).
//!
//! From S3, each used column of a row group is read through its own window of
//! [`COLUMN_WINDOW`] bytes (all columns' first windows fetched at once), so memory depends on
//! the window and the page size, not on how large the writer made its row groups.

use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::columnar::{decode_batches, guarded, used_columns, BatchColumns};
use super::inflation::{inflated_size, page_sizes, Codec, PageSizes};
use super::ranges::{RangeRead, RangeSource};
use super::{InventoryRow, RowPosition};
use crate::error::{Error, Result};

/// Rows decoded at a time.
pub const BATCH_ROWS: usize = 8192;

/// Bytes fetched per ranged GET of one column of a row group; one more is fetched ahead.
pub const COLUMN_WINDOW: u64 = 2 << 20;

/// Where a Parquet file's row groups come from.
pub trait RowGroupSource: ChunkReader + 'static {
    /// A reader for one row group whose used column chunks are `chunks` (start, end), sorted.
    fn row_group(&self, chunks: &[(u64, u64)]) -> parquet::errors::Result<RowGroupReader>;
}

/// In memory (tests): the used columns' bytes, sliced.
impl RowGroupSource for Bytes {
    fn row_group(&self, chunks: &[(u64, u64)]) -> parquet::errors::Result<RowGroupReader> {
        let start = chunks.first().map_or(0, |c| c.0);
        let end = chunks.iter().map(|c| c.1).max().unwrap_or(start);
        Ok(RowGroupReader::Whole(RowGroupBytes {
            offset: start,
            bytes: self.get_bytes(start, (end - start) as usize)?,
            len: self.len() as u64,
        }))
    }
}

/// On S3: a window per column.
impl RowGroupSource for RangeSource {
    fn row_group(&self, chunks: &[(u64, u64)]) -> parquet::errors::Result<RowGroupReader> {
        let spans = chunks
            .iter()
            .map(|&(start, end)| (start, end, self.span(start, end, COLUMN_WINDOW)))
            .collect();
        Ok(RowGroupReader::Columns {
            spans,
            len: self.len(),
        })
    }
}
fn parquet_error(file: &str, error: impl std::fmt::Display) -> Error {
    Error::bad_input(
        file,
        format!("cannot read as Parquet: {error} (the file is truncated, corrupt or not Parquet)"),
    )
}

/// Reads every row of a Parquet data file, calling `on_row` for each. Row groups are read one
/// at a time: the byte range of the used columns of a row group is fetched in one read (the
/// row-by-row page reads of the Parquet reader then come from memory), decoded, and dropped.
pub fn read_parquet<R: RowGroupSource>(
    reader: R,
    file: &str,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let metadata = guarded(|| ArrowReaderMetadata::load(&reader, ArrowReaderOptions::default()))
        .map_err(|e| parquet_error(file, e))?;
    let used = used_columns(metadata.schema(), file)?;
    let parquet_schema = metadata.metadata().file_metadata().schema_descr_ptr();
    let mask = ProjectionMask::roots(&parquet_schema, used.iter().copied());
    let mut rows = 0u64;
    for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
        let mut columns: Vec<(u64, u64, Compression)> = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| used.contains(&parquet_schema.get_column_root_idx(*leaf)))
            .map(|(_, column)| (column.byte_range(), column.compression()))
            .filter(|&((_, length), _)| length > 0)
            .map(|((offset, length), codec)| (offset, offset.saturating_add(length), codec))
            .collect();
        if columns.is_empty() {
            continue;
        }
        columns.sort_unstable_by_key(|&(start, end, _)| (start, end));
        let chunks: Vec<(u64, u64)> = columns
            .iter()
            .map(|&(start, end, _)| (start, end))
            .collect();
        let group_reader = PageGuard::new(
            reader
                .row_group(&chunks)
                .map_err(|e| parquet_error(file, e))?,
            &columns,
        );
        let batches = guarded(|| {
            ParquetRecordBatchReaderBuilder::new_with_metadata(group_reader, metadata.clone())
                .with_projection(mask.clone())
                .with_row_groups(vec![index])
                .with_batch_size(BATCH_ROWS)
                .build()
        })
        .map_err(|e| parquet_error(file, e))?;
        let columns = BatchColumns::new(&arrow_array::RecordBatchReader::schema(&batches), file)?;
        let on_group_row = |row: &InventoryRow<'_>, position: RowPosition<'_>| {
            on_row(
                row,
                RowPosition {
                    file: position.file,
                    row: rows + position.row,
                },
            )
        };
        decode_batches(
            batches,
            &columns,
            file,
            |e| parquet_error(file, e),
            on_group_row,
        )?;
        rows += group.num_rows() as u64;
    }
    Ok(())
}

/// The largest page s3bundler decodes, uncompressed: the decoder allocates what a page header
/// claims before it inflates the page. Writers cut pages at about 1 MiB.
pub const MAX_PAGE: u64 = 16 << 20;

/// A row group's reader that reads each page header before the Parquet decoder does, and
/// refuses a page that claims more than [`MAX_PAGE`] bytes, or (GZIP, which the decoder
/// inflates without a bound) that inflates past what its header claims.
pub struct PageGuard {
    inner: RowGroupReader,
    /// (start, end, GZIP?) of each used column chunk, by start.
    columns: Vec<(u64, u64, bool)>,
    /// Where the body of the page whose header was read last starts, and its sizes.
    pending: std::sync::Mutex<Option<(u64, PageSizes)>>,
}

impl PageGuard {
    fn new(inner: RowGroupReader, columns: &[(u64, u64, Compression)]) -> Self {
        PageGuard {
            inner,
            columns: columns
                .iter()
                .map(|&(start, end, codec)| (start, end, matches!(codec, Compression::GZIP(_))))
                .collect(),
            pending: std::sync::Mutex::new(None),
        }
    }

    fn gzip_at(&self, start: u64) -> bool {
        chunk_holding(&self.columns, start).is_some_and(|&(_, _, gzip)| gzip)
    }
}

/// The entry of `chunks` ((start, end, …) column chunks sorted by start) whose bytes hold
/// byte `at`.
fn chunk_holding<T>(chunks: &[(u64, u64, T)], at: u64) -> Option<&(u64, u64, T)> {
    let index = chunks.partition_point(|chunk| chunk.0 <= at);
    let chunk = &chunks[index.checked_sub(1)?];
    (at < chunk.1).then_some(chunk)
}

/// Keeps the bytes read through it.
struct Recorded<R> {
    inner: R,
    bytes: Vec<u8>,
}

impl<R: std::io::Read> std::io::Read for Recorded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Length for PageGuard {
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl ChunkReader for PageGuard {
    type T = Box<dyn std::io::Read + Send>;

    /// The decoder reads page headers (only) through `get_read`.
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let mut recorded = Recorded {
            inner: std::io::BufReader::with_capacity(1024, self.inner.get_read(start)?),
            bytes: Vec::new(),
        };
        let sizes = page_sizes(&mut recorded)
            .map_err(|e| ParquetError::General(format!("the page at byte {start}: {e}")))?;
        if sizes.uncompressed > MAX_PAGE {
            return Err(ParquetError::General(format!(
                "the page at byte {start} claims {} bytes uncompressed, more than the {MAX_PAGE} s3bundler reads",
                sizes.uncompressed
            )));
        }
        if let Ok(mut pending) = self.pending.lock() {
            *pending = Some((start + sizes.header_len, sizes));
        }
        let Recorded { inner, bytes } = recorded;
        Ok(Box::new(std::io::Read::chain(
            std::io::Cursor::new(bytes),
            inner,
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.inner.get_bytes(start, length)?;
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.take());
        if let Some((_, sizes)) = pending
            .filter(|&(body, sizes)| body == start && sizes.body_compressed && self.gzip_at(start))
        {
            let levels = (sizes.stored_prefix as usize).min(bytes.len());
            inflated_size(
                Codec::Gzip,
                &bytes[levels..],
                sizes.uncompressed.saturating_sub(sizes.stored_prefix),
            )
            .map_err(|e| ParquetError::General(format!("the page at byte {start}: {e}")))?;
        }
        Ok(bytes)
    }
}

/// One row group's used columns, as a `ChunkReader` over the whole file.
pub enum RowGroupReader {
    Whole(RowGroupBytes),
    Columns {
        /// (start, end, window) of each used column chunk, by start.
        spans: Vec<(u64, u64, RangeSource)>,
        len: u64,
    },
}

impl RowGroupReader {
    fn span(
        spans: &[(u64, u64, RangeSource)],
        start: u64,
    ) -> parquet::errors::Result<&RangeSource> {
        chunk_holding(spans, start)
            .map(|(_, _, source)| source)
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "byte {start} is outside the row group's columns"
                ))
            })
    }
}

impl Length for RowGroupReader {
    fn len(&self) -> u64 {
        match self {
            RowGroupReader::Whole(bytes) => bytes.len,
            RowGroupReader::Columns { len, .. } => *len,
        }
    }
}

impl ChunkReader for RowGroupReader {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            RowGroupReader::Whole(bytes) => Box::new(bytes.get_read(start)?),
            RowGroupReader::Columns { spans, .. } => {
                Box::new(Self::span(spans, start)?.reader_from(start))
            }
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            RowGroupReader::Whole(bytes) => bytes.get_bytes(start, length),
            RowGroupReader::Columns { spans, .. } => Self::span(spans, start)?
                .read_at(start, length as u64)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e))),
        }
    }
}

/// The bytes of one row group's used columns, as a `ChunkReader` over the whole file.
pub struct RowGroupBytes {
    offset: u64,
    bytes: Bytes,
    len: u64,
}

impl RowGroupBytes {
    fn slice(&self, start: u64, end: u64) -> parquet::errors::Result<Bytes> {
        if start < self.offset || end > self.offset + self.bytes.len() as u64 {
            return Err(parquet::errors::ParquetError::General(format!(
                "bytes {start}..{end} are outside the row group's columns"
            )));
        }
        Ok(self
            .bytes
            .slice((start - self.offset) as usize..(end - self.offset) as usize))
    }
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let end = self.offset + self.bytes.len() as u64;
        Ok(self.slice(start, end)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, start + length as u64)
    }
}

impl Length for RangeSource {
    fn len(&self) -> u64 {
        RangeSource::len(self)
    }
}

impl ChunkReader for RangeSource {
    type T = RangeRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<RangeRead> {
        Ok(self.reader_from(start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.read_at(start, length as u64)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}
