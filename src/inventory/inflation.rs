//! Bounds on how far the compressed bytes of ORC and Parquet files may inflate (issue 15: no
//! input may take unbounded memory). The decoders trust the sizes a file declares and inflate
//! whole blocks with `read_to_end`, so a crafted block of a few KiB could become gigabytes
//! before any check of theirs runs. These checks read the compressed bytes first, inflating
//! into a small stack buffer and stopping one byte past the limit. Pure.

use std::io::{self, Read};

/// How a block is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Raw deflate (ORC's ZLIB).
    Deflate,
    /// Gzip members (Parquet's GZIP).
    Gzip,
    Snappy,
    /// LZ4 block format (ORC's LZ4).
    Lz4,
    Zstd,
}

/// The largest zstd window a block may ask for (16 MiB; ORC blocks are at most 8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// How many bytes `compressed` inflates to, if at most `limit`; otherwise an error saying so.
/// Reads at most `limit + 1` inflated bytes, and allocates nothing sized by the input except
/// for LZ4, whose scratch is `limit` bytes (callers keep `limit` small: one block).
pub fn inflated_size(codec: Codec, compressed: &[u8], limit: u64) -> Result<u64, String> {
    inflate(codec, compressed, limit, None)
}

/// [`inflated_size`], appending the inflated bytes to `out` when given.
pub fn inflate(
    codec: Codec,
    compressed: &[u8],
    limit: u64,
    out: Option<&mut Vec<u8>>,
) -> Result<u64, String> {
    let size = match codec {
        Codec::Deflate => counted(flate2::read::DeflateDecoder::new(compressed), limit, out),
        Codec::Gzip => counted(flate2::read::MultiGzDecoder::new(compressed), limit, out),
        Codec::Zstd => {
            zstd::stream::read::Decoder::with_buffer(compressed).and_then(|mut decoder| {
                // The frame header sizes the decoder's window; a block needs no more than itself.
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                counted(decoder, limit, out)
            })
        }
        Codec::Snappy => snap::raw::decompress_len(compressed)
            .map_err(io::Error::other)
            .and_then(|len| match out {
                Some(out) if len as u64 <= limit => {
                    let inflated = snap::raw::Decoder::new()
                        .decompress_vec(compressed)
                        .map_err(io::Error::other)?;
                    out.extend_from_slice(&inflated);
                    Ok(inflated.len() as u64)
                }
                _ => Ok(len as u64),
            }),
        Codec::Lz4 => {
            let mut scratch = vec![0u8; usize::try_from(limit).unwrap_or(usize::MAX)];
            match lz4_flex::block::decompress_into(compressed, &mut scratch) {
                Ok(len) => {
                    if let Some(out) = out {
                        out.extend_from_slice(&scratch[..len]);
                    }
                    Ok(len as u64)
                }
                Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => Ok(limit + 1),
                Err(e) => Err(io::Error::other(e)),
            }
        }
    }
    .map_err(|e| format!("a compressed block cannot be inflated: {e}"))?;
    if size > limit {
        return Err(format!(
            "a compressed block of {} bytes inflates past {limit} bytes, more than the file declares",
            compressed.len()
        ));
    }
    Ok(size)
}

/// Inflated bytes read from `decoder`, up to `limit + 1`, into `out` or counted only.
fn counted(decoder: impl Read, limit: u64, out: Option<&mut Vec<u8>>) -> io::Result<u64> {
    let mut bounded = decoder.take(limit.saturating_add(1));
    match out {
        Some(out) => io::copy(&mut bounded, out),
        None => io::copy(&mut bounded, &mut io::sink()),
    }
}

/// ORC's chunk header: 3 little-endian bytes, the low bit set when the chunk is stored as is.
const ORC_CHUNK_HEADER: usize = 3;

/// Checks an ORC compressed region (a stream, a stripe footer, the file footer or metadata):
/// every chunk whole, every compressed chunk inflating to at most `block` bytes, and all of
/// them together to at most `total_limit` when the reader inflates the region whole. Returns
/// the inflated size, and appends the inflated bytes to `out` when given.
pub fn check_orc_region(
    region: &[u8],
    codec: Codec,
    block: u64,
    total_limit: Option<u64>,
    mut out: Option<&mut Vec<u8>>,
) -> Result<u64, String> {
    let mut rest = region;
    let mut total = 0u64;
    while !rest.is_empty() {
        let at = region.len() - rest.len();
        let Some((header, after)) = rest.split_first_chunk::<ORC_CHUNK_HEADER>() else {
            return Err(format!("the compression chunk header at byte {at} is cut"));
        };
        let word = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        let (stored, length) = (word & 1 == 1, (word >> 1) as usize);
        let Some((chunk, after)) = after.split_at_checked(length) else {
            return Err(format!(
                "the compression chunk at byte {at} declares {length} bytes, more than remain"
            ));
        };
        total += if stored {
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(chunk);
            }
            length as u64
        } else {
            inflate(codec, chunk, block, out.as_deref_mut())
                .map_err(|e| format!("at byte {at}: {e}"))?
        };
        if let Some(limit) = total_limit.filter(|&limit| total > limit) {
            return Err(format!(
                "a region of {} bytes inflates past {limit} bytes",
                region.len()
            ));
        }
        rest = after;
    }
    Ok(total)
}

/// The sizes of a Parquet page, from its Thrift (compact protocol) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSizes {
    /// Bytes of the header itself.
    pub header_len: u64,
    pub uncompressed: u64,
    pub compressed: u64,
    /// Bytes at the start of the body stored as they are (a v2 data page's levels), and
    /// whether the rest is compressed.
    pub stored_prefix: u64,
    pub body_compressed: bool,
}

/// The longest page header read: headers hold sizes, encodings and small statistics.
pub const MAX_PAGE_HEADER: u64 = 1 << 20;

/// Thrift's compact protocol, as much of it as a page header needs: field sizes to skip, and
/// the few integers s3bundler checks.
struct Compact<R> {
    input: R,
    read: u64,
}

const STOP: u8 = 0;
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// Nesting past this is not a page header.
const MAX_DEPTH: u32 = 16;

impl<R: Read> Compact<R> {
    fn byte(&mut self) -> Result<u8, String> {
        if self.read >= MAX_PAGE_HEADER {
            return Err(format!("the page header runs past {MAX_PAGE_HEADER} bytes"));
        }
        let mut byte = [0u8];
        self.input
            .read_exact(&mut byte)
            .map_err(|e| format!("the page header is cut: {e}"))?;
        self.read += 1;
        Ok(byte[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a page header integer is longer than 10 bytes".to_string())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    fn skip_bytes(&mut self, count: u64) -> Result<(), String> {
        for _ in 0..count {
            self.byte()?;
        }
        Ok(())
    }

    /// Skips one value of `kind`; `in_collection` because booleans there take a byte.
    fn skip(&mut self, kind: u8, in_collection: bool, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("the page header nests too deep".to_string());
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE if !in_collection => Ok(()),
            BOOL_TRUE | BOOL_FALSE | BYTE => self.skip_bytes(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.skip_bytes(8),
            BINARY => {
                let length = self.varint()?;
                self.skip_bytes(length)
            }
            LIST | SET => {
                let header = self.byte()?;
                let count = match header >> 4 {
                    15 => self.varint()?,
                    short => u64::from(short),
                };
                for _ in 0..count {
                    self.skip(header & 0x0f, true, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..count {
                        self.skip(kinds >> 4, true, depth + 1)?;
                        self.skip(kinds & 0x0f, true, depth + 1)?;
                    }
                }
                Ok(())
            }
            STRUCT => self.fields(depth + 1, |_, _, _| Ok(false)),
            other => Err(format!(
                "the page header has a field of unknown type {other}"
            )),
        }
    }

    /// Reads a struct's fields, handing each (id, kind) to `field`, which reads the value and
    /// returns true, or returns false to have it skipped.
    fn fields(
        &mut self,
        depth: u32,
        mut field: impl FnMut(&mut Self, i16, u8) -> Result<bool, String>,
    ) -> Result<(), String> {
        let mut id = 0i16;
        loop {
            let header = self.byte()?;
            let kind = header & 0x0f;
            if kind == STOP {
                return Ok(());
            }
            id = match header >> 4 {
                0 => i16::try_from(self.zigzag()?)
                    .map_err(|_| "a page header field id is out of range".to_string())?,
                delta => id.wrapping_add(i16::from(delta)),
            };
            if !field(self, id, kind)? {
                self.skip(kind, false, depth)?;
            }
        }
    }

    /// A non-negative i32 field of kind I32.
    fn size(&mut self, kind: u8, what: &str) -> Result<u64, String> {
        let value = self.zigzag()?;
        if kind != I32 || !(0..=i64::from(i32::MAX)).contains(&value) {
            return Err(format!("the page header's {what} is not a size: {value}"));
        }
        Ok(value as u64)
    }
}

/// Reads a Parquet page header from `input` for the sizes that bound its decoding.
pub fn page_sizes(input: impl Read) -> Result<PageSizes, String> {
    let mut compact = Compact { input, read: 0 };
    let mut sizes = PageSizes {
        header_len: 0,
        uncompressed: 0,
        compressed: 0,
        stored_prefix: 0,
        body_compressed: true,
    };
    let (mut uncompressed, mut compressed) = (None, None);
    compact.fields(0, |compact, id, kind| match id {
        2 => compact
            .size(kind, "uncompressed size")
            .map(|v| uncompressed = Some(v))
            .map(|()| true),
        3 => compact
            .size(kind, "compressed size")
            .map(|v| compressed = Some(v))
            .map(|()| true),
        // DataPageHeaderV2: levels are stored before the (maybe) compressed values.
        8 if kind == STRUCT => compact
            .fields(1, |compact, id, kind| match id {
                5 | 6 => compact.size(kind, "levels length").map(|v| {
                    sizes.stored_prefix += v;
                    true
                }),
                7 if matches!(kind, BOOL_TRUE | BOOL_FALSE) => {
                    sizes.body_compressed = kind == BOOL_TRUE;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .map(|()| true),
        _ => Ok(false),
    })?;
    sizes.header_len = compact.read;
    match (uncompressed, compressed) {
        (Some(uncompressed), Some(compressed)) => Ok(PageSizes {
            uncompressed,
            compressed,
            ..sizes
        }),
        _ => Err("the page header has no sizes".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn orc_chunk(stored: bool, body: &[u8]) -> Vec<u8> {
        let word = ((body.len() as u32) << 1) | u32::from(stored);
        let mut chunk = word.to_le_bytes()[..3].to_vec();
        chunk.extend_from_slice(body);
        chunk
    }

    #[test]
    fn a_deflate_bomb_is_refused_after_reading_one_byte_past_the_block() {
        let bomb = deflate(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let (result, largest) =
            crate::fuzzing::largest_allocation(|| inflated_size(Codec::Deflate, &bomb, 256 << 10));
        let error = result.unwrap_err();
        assert!(error.contains("inflates past 262144 bytes"), "{error}");
        assert!(largest < 1 << 20, "allocated {largest} bytes at once");
    }

    #[test]
    fn each_codec_measures_what_a_block_inflates_to() {
        let data = b"s3bundler ".repeat(1000);
        let zstd = zstd::bulk::compress(&data, 3).unwrap();
        let snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let lz4 = lz4_flex::block::compress(&data);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&data).unwrap();
        let gzip = gzip.finish().unwrap();
        for (codec, compressed) in [
            (Codec::Deflate, deflate(&data)),
            (Codec::Gzip, gzip),
            (Codec::Zstd, zstd),
            (Codec::Snappy, snappy),
            (Codec::Lz4, lz4),
        ] {
            assert_eq!(
                inflated_size(codec, &compressed, 10_000),
                Ok(10_000),
                "{codec:?}"
            );
            let error = inflated_size(codec, &compressed, 9_999).unwrap_err();
            assert!(error.contains("inflates past 9999"), "{codec:?}: {error}");
        }
    }

    #[test]
    fn an_orc_region_counts_stored_and_compressed_chunks() {
        let mut region = orc_chunk(true, b"stored");
        region.extend(orc_chunk(false, &deflate(&[7u8; 1000])));
        assert_eq!(
            check_orc_region(&region, Codec::Deflate, 1000, None, None),
            Ok(1006)
        );
        let mut inflated = Vec::new();
        check_orc_region(&region, Codec::Deflate, 1000, None, Some(&mut inflated)).unwrap();
        assert_eq!(inflated, [&b"stored"[..], &[7u8; 1000]].concat());
        let error = check_orc_region(&region, Codec::Deflate, 1000, Some(1005), None).unwrap_err();
        assert!(error.contains("inflates past 1005"), "{error}");
        let error = check_orc_region(&region, Codec::Deflate, 999, None, None).unwrap_err();
        assert!(error.starts_with("at byte 9:"), "{error}");
        let error = check_orc_region(
            &region[..region.len() - 1],
            Codec::Deflate,
            1000,
            None,
            None,
        )
        .unwrap_err();
        assert!(error.contains("more than remain"), "{error}");
        let error = check_orc_region(&region[..2], Codec::Deflate, 1000, None, None).unwrap_err();
        assert!(error.contains("header at byte 0 is cut"), "{error}");
    }

    /// A v1 data page header as parquet-rs writes it, and a v2 one with levels.
    #[test]
    fn page_headers_give_their_sizes() {
        // type=DATA_PAGE(0), uncompressed=1000, compressed=300, data_page_header{num_values=10,
        // encoding=0, def=3, rep=3}, then stop.
        let v1 = [
            0x15, 0x00, 0x15, 0xd0, 0x0f, 0x15, 0xd8, 0x04, 0x2c, 0x15, 0x14, 0x15, 0x00, 0x15,
            0x06, 0x15, 0x06, 0x00, 0x00,
        ];
        let sizes = page_sizes(&v1[..]).unwrap();
        assert_eq!(
            sizes,
            PageSizes {
                header_len: v1.len() as u64,
                uncompressed: 1000,
                compressed: 300,
                stored_prefix: 0,
                body_compressed: true,
            }
        );
        // type=DATA_PAGE_V2(3), sizes, then field 8: {num_values, num_nulls, num_rows,
        // encoding, def_len=4, rep_len=2, is_compressed=false}.
        let v2 = [
            0x15, 0x06, 0x15, 0xd0, 0x0f, 0x15, 0xd8, 0x04, 0x5c, 0x15, 0x14, 0x15, 0x00, 0x15,
            0x14, 0x15, 0x00, 0x15, 0x08, 0x15, 0x04, 0x12, 0x00, 0x00,
        ];
        let sizes = page_sizes(&v2[..]).unwrap();
        assert_eq!((sizes.stored_prefix, sizes.body_compressed), (6, false));
        assert_eq!(sizes.header_len, v2.len() as u64);
    }

    #[test]
    fn broken_page_headers_are_errors() {
        for (bytes, expected) in [
            (&[0x15, 0x00][..], "cut"),
            (&[0x15, 0x00, 0x00][..], "no sizes"),
            (
                &[0x15, 0x00, 0x15, 0x01, 0x15, 0x02, 0x00][..],
                "not a size: -1",
            ),
            (&[0x1d][..], "unknown type 13"),
            (&[0x19, 0xf9, 0xff, 0xff, 0xff, 0x0f][..], "cut"),
        ] {
            let error = page_sizes(bytes).unwrap_err();
            assert!(error.contains(expected), "{bytes:x?}: {error}");
        }
        let endless = [0x18u8].into_iter().chain([0xff; 8]).chain([0x0f]);
        let error = page_sizes(endless.collect::<Vec<_>>().as_slice()).unwrap_err();
        assert!(error.contains("cut"), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in crate::fuzzing::garbage()) {
            let _ = page_sizes(bytes.as_slice());
            let _ = check_orc_region(&bytes, Codec::Deflate, 1 << 16, Some(1 << 20), None);
            let _ = check_orc_region(&bytes, Codec::Zstd, 1 << 16, None, None);
            let _ = check_orc_region(&bytes, Codec::Snappy, 1 << 16, None, Some(&mut Vec::new()));
            let _ = check_orc_region(&bytes, Codec::Lz4, 1 << 16, None, Some(&mut Vec::new()));
            let _ = inflated_size(Codec::Gzip, &bytes, 1 << 16);
        }
    }
}
