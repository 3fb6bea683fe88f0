//! ORC inventory data files: read one stripe at a time, only the columns s3bundler uses,
//! decoded by [`super::columnar`]. Pure: takes any ORC `ChunkReader` (bytes in memory in tests,
//! [`RangeSource`] for S3).

use bytes::Bytes;
use orc_rust::projection::ProjectionMask;
use orc_rust::proto::{CompressionKind, Footer, PostScript};
use orc_rust::reader::ChunkReader;
use orc_rust::ArrowReaderBuilder;
use prost::Message;

use super::columnar::{decode_batches, guarded, used_columns, BatchColumns};
use super::inflation::{check_orc_region, Codec};
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
    let reader = InflationGuard::new(reader).map_err(|e| orc_error(file, e))?;
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

/// The block size ORC writers use when the postscript gives none.
const DEFAULT_BLOCK: u64 = 256 << 10;

/// ORC's chunk headers hold 23-bit lengths: no block is larger.
const MAX_BLOCK: u64 = (8 << 20) - 1;

/// What the footer, the metadata or one stripe footer may inflate to: each is decoded whole,
/// and real ones are KiBs.
const MAX_INFLATED_TAIL: u64 = 64 << 20;

/// Reads the tail a file's postscript ends, at most: orc-rust reads its first 16 KiB.
const TAIL_READ: u64 = 16 << 10;

/// A `ChunkReader` that checks every compressed region orc-rust reads before it inflates it
/// (see [`super::inflation`]): every block within the postscript's block size, and the footer,
/// the metadata and each stripe footer, which orc-rust inflates whole, within
/// [`MAX_INFLATED_TAIL`]. Streams are inflated one block at a time, so their blocks are bounded
/// and their total is not.
struct InflationGuard<R> {
    inner: R,
    /// `None` for an uncompressed file.
    codec: Option<Codec>,
    block: u64,
    /// Where the metadata and the footer begin: reads from there on were checked up front.
    tail_start: u64,
    /// (offset, length) of each stripe's footer.
    stripe_footers: Vec<(u64, u64)>,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl<R: ChunkReader> InflationGuard<R> {
    /// Reads the postscript, and checks the metadata and the footer.
    fn new(inner: R) -> Result<Self, String> {
        let len = inner.len();
        let tail_len = len.min(TAIL_READ);
        let tail = inner
            .get_bytes(len - tail_len, tail_len)
            .map_err(|e| e.to_string())?;
        let Some((&postscript_len, rest)) = tail.split_last() else {
            return Err("the file is empty".to_string());
        };
        let postscript = rest
            .len()
            .checked_sub(usize::from(postscript_len))
            .map(|start| &rest[start..])
            .ok_or("the file is shorter than its postscript")?;
        let postscript =
            PostScript::decode(postscript).map_err(|e| format!("the postscript: {e}"))?;
        let codec = match postscript.compression() {
            CompressionKind::None => None,
            CompressionKind::Zlib => Some(Codec::Deflate),
            CompressionKind::Snappy => Some(Codec::Snappy),
            CompressionKind::Lz4 => Some(Codec::Lz4),
            CompressionKind::Zstd => Some(Codec::Zstd),
            CompressionKind::Lzo => {
                return Err("LZO-compressed ORC is not read (S3 Inventory writes ZLIB)".into())
            }
        };
        let block = postscript.compression_block_size.unwrap_or(DEFAULT_BLOCK);
        if codec.is_some() && !(1..=MAX_BLOCK).contains(&block) {
            return Err(format!(
                "the postscript's compression block size {block} is not between 1 and {MAX_BLOCK}"
            ));
        }
        let metadata_len = postscript.metadata_length.unwrap_or(0);
        let footer_len = postscript.footer_length.unwrap_or(0);
        let tail_start = metadata_len
            .checked_add(footer_len)
            .and_then(|tail| {
                len.checked_sub(1 + u64::from(postscript_len))?
                    .checked_sub(tail)
            })
            .ok_or("the postscript declares a footer longer than the file")?;
        let mut guard = InflationGuard {
            inner,
            codec,
            block,
            tail_start,
            stripe_footers: Vec::new(),
        };
        if metadata_len + footer_len > MAX_INFLATED_TAIL {
            return Err(format!(
                "the footer and metadata take {} bytes, more than {MAX_INFLATED_TAIL}",
                metadata_len + footer_len
            ));
        }
        let regions = guard
            .inner
            .get_bytes(tail_start, metadata_len + footer_len)
            .map_err(|e| e.to_string())?;
        let (metadata, footer) = regions.split_at(metadata_len as usize);
        guard
            .check(metadata, Some(MAX_INFLATED_TAIL))
            .map_err(|e| format!("the metadata: {e}"))?;
        let footer = guard
            .inflate(footer)
            .map_err(|e| format!("the footer: {e}"))?;
        let footer = Footer::decode(footer.as_slice()).map_err(|e| format!("the footer: {e}"))?;
        guard.stripe_footers = footer
            .stripes
            .iter()
            .filter_map(|stripe| {
                let start = stripe
                    .offset()
                    .checked_add(stripe.index_length())?
                    .checked_add(stripe.data_length())?;
                Some((start, stripe.footer_length()))
            })
            .collect();
        Ok(guard)
    }

    fn check(&self, region: &[u8], total_limit: Option<u64>) -> Result<u64, String> {
        match self.codec {
            Some(codec) => check_orc_region(region, codec, self.block, total_limit, None),
            None => Ok(region.len() as u64),
        }
    }

    /// The footer's bytes, inflated within [`MAX_INFLATED_TAIL`].
    fn inflate(&self, region: &[u8]) -> Result<Vec<u8>, String> {
        let Some(codec) = self.codec else {
            return Ok(region.to_vec());
        };
        let mut inflated = Vec::new();
        check_orc_region(
            region,
            codec,
            self.block,
            Some(MAX_INFLATED_TAIL),
            Some(&mut inflated),
        )?;
        Ok(inflated)
    }
}

impl<R: ChunkReader> ChunkReader for InflationGuard<R> {
    type T = R::T;

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn get_read(&self, start: u64) -> std::io::Result<R::T> {
        self.inner.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: u64) -> std::io::Result<Bytes> {
        let bytes = self.inner.get_bytes(start, length)?;
        if start.saturating_add(length) <= self.tail_start {
            let total_limit = self
                .stripe_footers
                .contains(&(start, length))
                .then_some(MAX_INFLATED_TAIL);
            self.check(&bytes, total_limit)
                .map_err(|e| invalid(format!("bytes {start}..+{length}: {e}")))?;
        }
        Ok(bytes)
    }
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
