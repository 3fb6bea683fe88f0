//! ORC inventory data files: read one stripe at a time, only the columns s3bundler uses,
//! decoded by [`super::columnar`]. Pure: takes any ORC `ChunkReader` (bytes in memory in tests,
//! [`RangeSource`] for S3).

use bytes::Bytes;
use orc_rust::projection::ProjectionMask;
use orc_rust::reader::ChunkReader;
use orc_rust::ArrowReaderBuilder;

use super::columnar::{decode_batches, guarded, used_columns, BatchColumns};
use super::parquet::BATCH_ROWS;
use super::ranges::{RangeRead, RangeSource};
use super::{InventoryRow, RowPosition};
use crate::error::{Error, Result};

fn orc_error(file: &str, error: impl std::fmt::Display) -> Error {
    Error::bad_input(
        file,
        format!("cannot read as ORC: {error} (the file is truncated, corrupt or not ORC)"),
    )
}

/// Reads every row of an ORC data file, calling `on_row` for each.
pub fn read_orc<R: ChunkReader + Send + 'static>(
    reader: R,
    file: &str,
    on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let builder =
        guarded(|| ArrowReaderBuilder::try_new(reader)).map_err(|e| orc_error(file, e))?;
    let schema = builder.schema();
    let names: Vec<String> = used_columns(&schema, file)?
        .into_iter()
        .map(|i| schema.field(i).name().clone())
        .collect();
    let mask = ProjectionMask::named_roots(builder.file_metadata().root_data_type(), &names);
    let batches = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build();
    let columns = BatchColumns::new(&arrow_array::RecordBatchReader::schema(&batches), file)?;
    decode_batches(batches, &columns, file, |e| orc_error(file, e), on_row)
}

impl ChunkReader for RangeSource {
    type T = RangeRead;

    fn len(&self) -> u64 {
        RangeSource::len(self)
    }

    fn get_read(&self, start: u64) -> std::io::Result<RangeRead> {
        Ok(self.reader_from(start))
    }

    fn get_bytes(&self, start: u64, length: u64) -> std::io::Result<Bytes> {
        self.read_at(start, length)
    }
}
