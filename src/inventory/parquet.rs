//! Parquet inventory data files: read one row group at a time, only the columns s3bundler
//! uses, decoded by [`super::columnar`]. Pure: takes any Parquet `ChunkReader` (bytes in
//! memory in tests, [`RangeSource`] for S3).

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::reader::{ChunkReader, Length};

use super::columnar::{decode_batch, used_columns, BatchColumns};
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

/// Reads every row of a Parquet data file, calling `on_row` for each.
pub fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    file: &str,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| parquet_error(file, e))?;
    let used = used_columns(builder.schema(), file)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), used);
    let batches = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| parquet_error(file, e))?;
    let columns = BatchColumns::new(&arrow_array::RecordBatchReader::schema(&batches), file)?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch.map_err(|e| parquet_error(file, e))?;
        decode_batch(&batch, &columns, file, rows, &mut on_row)?;
        rows += batch.num_rows() as u64;
    }
    Ok(())
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
