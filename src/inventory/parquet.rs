//! Parquet inventory data files: read one row group at a time, only the columns s3bundler
//! uses, decoded by [`super::columnar`]. Pure: takes any Parquet `ChunkReader` (bytes in
//! memory in tests, [`RangeSource`] for S3).

use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::{ChunkReader, Length};

use super::columnar::{decode_batches, used_columns, BatchColumns};
use super::ranges::{RangeRead, RangeSource};
use super::{InventoryRow, RowPosition};
use crate::error::{Error, Result};

/// Rows decoded at a time.
pub const BATCH_ROWS: usize = 8192;

fn parquet_error(file: &str, error: impl std::fmt::Display) -> Error {
    Error::bad_input(
        file,
        format!("cannot read as Parquet: {error} (the file is truncated, corrupt or not Parquet)"),
    )
}

/// Reads every row of a Parquet data file, calling `on_row` for each. Row groups are read one
/// at a time: the byte range of the used columns of a row group is fetched in one read (the
/// row-by-row page reads of the Parquet reader then come from memory), decoded, and dropped.
pub fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    file: &str,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let metadata = ArrowReaderMetadata::load(&reader, ArrowReaderOptions::default())
        .map_err(|e| parquet_error(file, e))?;
    let used = used_columns(metadata.schema(), file)?;
    let parquet_schema = metadata.metadata().file_metadata().schema_descr_ptr();
    let mask = ProjectionMask::roots(&parquet_schema, used.iter().copied());
    let mut rows = 0u64;
    for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
        let ranges = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| used.contains(&parquet_schema.get_column_root_idx(*leaf)))
            .map(|(_, column)| column.byte_range());
        let (start, end) = ranges.fold((u64::MAX, 0), |(start, end), (offset, length)| {
            (start.min(offset), end.max(offset + length))
        });
        if start >= end {
            continue;
        }
        let bytes = reader
            .get_bytes(start, (end - start) as usize)
            .map_err(|e| parquet_error(file, e))?;
        let group_bytes = RowGroupBytes {
            offset: start,
            bytes,
            len: reader.len(),
        };
        let batches =
            ParquetRecordBatchReaderBuilder::new_with_metadata(group_bytes, metadata.clone())
                .with_projection(mask.clone())
                .with_row_groups(vec![index])
                .with_batch_size(BATCH_ROWS)
                .build()
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

/// The bytes of one row group's used columns, as a `ChunkReader` over the whole file.
struct RowGroupBytes {
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
