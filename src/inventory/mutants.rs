//! Mutation tests of the ORC and Parquet readers (issue 15: no input can crash any parser).
//! Valid files (generated here, and the real AWS samples when present) are damaged in their
//! footer and metadata and in their data pages: bits flipped, runs overwritten, bytes spliced
//! in from elsewhere, inserted or deleted, the file cut short, the declared footer length
//! changed. Every mutant must read, or fail with a bad-input error naming the file; never
//! panic, hang (each has [`HANG`]) or allocate without bound (no single allocation over
//! [`MAX_ALLOCATION`]). Seeds are fixed, so a failure names a mutant that fails again.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use s3bundler_testkit::generate::{report, DataFormat, InventorySpec};

use super::{InventoryRow, RowPosition};
use crate::error::{ExitCode, Result};
use crate::fuzzing::largest_allocation;

/// A data file in memory, read as [`super::ranges::RangeSource`] reads one from S3: a read
/// past the end is an error, not a panic or an allocation of whatever length was asked.
struct InMemory(Bytes);

impl orc_rust::reader::ChunkReader for InMemory {
    type T = bytes::buf::Reader<Bytes>;

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn get_read(&self, start: u64) -> std::io::Result<Self::T> {
        self.get_bytes(start, self.len().saturating_sub(start))
            .map(bytes::Buf::reader)
    }

    fn get_bytes(&self, start: u64, length: u64) -> std::io::Result<Bytes> {
        let end = start.saturating_add(length);
        if end > self.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes {start}..{end} are past the end"),
            ));
        }
        Ok(self.0.slice(start as usize..end as usize))
    }
}

/// The name errors must give.
const FILE: &str = "s3://inventory/data/mutant";

/// Reads every row of `data`; the number of rows read.
fn read(format: DataFormat, data: Vec<u8>) -> Result<u64> {
    let mut rows = 0u64;
    let on_row = |_: &InventoryRow<'_>, _: RowPosition<'_>| {
        rows += 1;
        Ok(())
    };
    match format {
        DataFormat::Orc => super::orc::read_orc(InMemory(Bytes::from(data)), FILE, on_row)?,
        _ => super::parquet::read_parquet(Bytes::from(data), FILE, on_row)?,
    }
    Ok(rows)
}

/// The largest single allocation reading a sample or a mutant may make: the samples are tens
/// of KiB, and a valid one needs at most about 50 KiB at once.
const MAX_ALLOCATION: usize = 16 << 20;

/// What went wrong reading a mutant, if anything did: an allocation sized by a damaged length
/// field, an error of another kind than bad input, one that does not name the file, or a
/// panic.
fn fault(format: DataFormat, data: Vec<u8>) -> Option<String> {
    let (result, largest) = largest_allocation(|| std::panic::catch_unwind(|| read(format, data)));
    if largest > MAX_ALLOCATION {
        return Some(format!("allocated {largest} bytes at once"));
    }
    match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.exit_code() == ExitCode::BadInput && e.to_string().contains(FILE) => None,
        Ok(Err(e)) => Some(format!("error of the wrong kind: {e}")),
        Err(panic) => Some(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    }
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range` (which must not be empty).
    fn within(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + (self.next() % (range.end - range.start) as u64) as usize
    }
}

/// The parts of a valid file: its data pages, and its footer and metadata.
#[derive(Clone)]
struct Sample {
    name: String,
    format: DataFormat,
    bytes: Vec<u8>,
    /// Where the data pages end and the footer and metadata begin.
    footer_start: usize,
}

impl Sample {
    fn new(name: &str, format: DataFormat, bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        let footer_start = match format {
            // ... data pages | metadata | metadata length (u32 LE) | "PAR1"
            DataFormat::Parquet => {
                let declared = bytes
                    .get(len.saturating_sub(8)..len.saturating_sub(4))
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_le_bytes);
                len.saturating_sub(8 + declared as usize)
            }
            // "ORC" | stripes (index, data, stripe footer) | metadata | footer | postscript |
            // postscript length (u8)
            _ => {
                let mut reader = InMemory(Bytes::from(bytes.clone()));
                let metadata = orc_rust::reader::metadata::read_metadata(&mut reader)
                    .unwrap_or_else(|e| panic!("sample {name}: {e}"));
                metadata
                    .stripe_metadatas()
                    .iter()
                    .map(|s| s.footer_offset() + s.footer_length())
                    .max()
                    .unwrap_or(3) as usize
            }
        };
        assert!(
            (4..len).contains(&footer_start),
            "sample {name}: footer at {footer_start} of {len}"
        );
        assert!(
            fault(format, bytes.clone()).is_none(),
            "sample {name} does not read"
        );
        Sample {
            name: name.to_string(),
            format,
            bytes,
            footer_start,
        }
    }
}

/// One change to a file, at byte positions within it.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Overwrite {
        at: usize,
        run: Vec<u8>,
    },
    /// Copies `len` bytes from `from` over the bytes at `at`.
    Splice {
        from: usize,
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        run: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Sets the footer length the file declares at its end: Parquet's u32 before `PAR1`, or
    /// ORC's postscript length byte.
    FooterLength(u32),
}

impl Mutation {
    /// A random mutation within `region` of a `len`-byte file.
    fn random(rng: &mut Rng, len: usize, region: std::ops::Range<usize>) -> Self {
        let at = rng.within(region.clone());
        let run_len = rng.within(1..17).min(len - at);
        let run = |rng: &mut Rng| -> Vec<u8> {
            let fill = rng.within(0..4);
            (0..run_len)
                .map(|_| match fill {
                    0 => 0x00,
                    1 => 0xff,
                    2 => 0x7f,
                    _ => rng.next() as u8,
                })
                .collect()
        };
        match rng.within(0..8) {
            0 | 1 => Mutation::Flip {
                at,
                bit: 1 << rng.within(0..8),
            },
            2 => Mutation::Overwrite { at, run: run(rng) },
            3 => Mutation::Splice {
                from: rng.within(0..len),
                at,
                len: rng.within(1..65),
            },
            4 => Mutation::Insert { at, run: run(rng) },
            5 => Mutation::Delete { at, len: run_len },
            6 => Mutation::Truncate { at },
            _ => Mutation::FooterLength(match rng.within(0..3) {
                0 => rng.next() as u32,
                1 => (len as u32).wrapping_add(rng.within(0..16) as u32),
                _ => (len - region.start) as u32 ^ (1 << rng.within(0..12)),
            }),
        }
    }

    fn apply(&self, format: DataFormat, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        let clamp = |at: usize| at.min(len);
        match self {
            Mutation::Flip { at, bit } => {
                if let Some(b) = bytes.get_mut(*at) {
                    *b ^= bit;
                }
            }
            Mutation::Overwrite { at, run } => {
                let end = clamp(at + run.len());
                let at = clamp(*at);
                bytes[at..end].copy_from_slice(&run[..end - at]);
            }
            Mutation::Splice { from, at, len: n } => {
                let piece = bytes[clamp(*from)..clamp(from + n)].to_vec();
                let end = clamp(at + piece.len());
                let at = clamp(*at);
                bytes[at..end].copy_from_slice(&piece[..end - at]);
            }
            Mutation::Insert { at, run } => {
                let at = clamp(*at);
                bytes.splice(at..at, run.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                bytes.drain(clamp(*at)..clamp(at + n));
            }
            Mutation::Truncate { at } => bytes.truncate(*at),
            Mutation::FooterLength(n) => match format {
                DataFormat::Parquet if len >= 8 => {
                    bytes[len - 8..len - 4].copy_from_slice(&n.to_le_bytes());
                }
                DataFormat::Orc if len >= 1 => bytes[len - 1] = *n as u8,
                _ => {}
            },
        }
    }
}

/// A sample changed by one to three mutations, half of them in the footer and metadata.
fn mutant(sample: &Sample, seed: u64) -> (Vec<Mutation>, Vec<u8>) {
    let mut rng = Rng(seed);
    let mut bytes = sample.bytes.clone();
    let mut mutations = Vec::new();
    for _ in 0..rng.within(1..4) {
        let len = bytes.len();
        if len < 8 {
            break;
        }
        let footer = sample.footer_start.min(len - 1);
        let region = if rng.within(0..2) == 0 {
            footer..len
        } else {
            0..footer.max(1)
        };
        let mutation = Mutation::random(&mut rng, len, region);
        mutation.apply(sample.format, &mut bytes);
        mutations.push(mutation);
    }
    (mutations, bytes)
}

/// Valid files: generated ones of both formats (one Parquet file with several row groups),
/// and the real AWS samples when the fixtures are there.
fn samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for versioned in [false, true] {
        let spec = InventorySpec {
            versioned,
            long_keys: false,
            row_group_rows: 40,
            ..InventorySpec::new("src", 120)
        };
        for format in [DataFormat::Orc, DataFormat::Parquet] {
            let data = report(&spec, format, false).data_files.remove(0);
            let name = format!("generated {format:?}, versioned {versioned}");
            samples.push(Sample::new(&name, format, data));
        }
    }
    samples.extend(aws_sample("orc_inventory.orc", DataFormat::Orc));
    samples.extend(aws_sample("parquet_inventory.parquet", DataFormat::Parquet));
    samples
}

/// Mutants per sample.
const MUTANTS: u64 = 1500;

/// How long one mutant may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

#[test]
fn mutated_orc_and_parquet_files_read_or_fail_naming_the_file() {
    let (progress, mutants) = mpsc::channel();
    let checker = std::thread::spawn(move || {
        let mut faults = Vec::new();
        for sample in samples() {
            for seed in 0..MUTANTS {
                let (mutations, data) = mutant(&sample, seed);
                let label = format!("{} seed {seed}: {mutations:?}", sample.name);
                let _ = progress.send(label.clone());
                if let Some(fault) = fault(sample.format, data) {
                    faults.push(format!("{label}\n  {fault}"));
                }
            }
        }
        faults
    });
    let mut last = String::from("the samples");
    loop {
        match mutants.recv_timeout(HANG) {
            Ok(label) => last = label,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("hangs on {last}"),
        }
    }
    let faults = checker.join().unwrap_or_else(|_| panic!("after {last}"));
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

// The nastiest mutants found, each a small patch of a valid file. Before `columnar::guarded`
// each of them panicked inside the decoder.

/// The error reading `sample` with `patch` applied, which must name the file.
fn patched_error(sample: &Sample, patch: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = sample.bytes.clone();
    patch(&mut bytes);
    match read(sample.format, bytes) {
        Ok(rows) => panic!("{}: the patched file read {rows} rows", sample.name),
        Err(e) => {
            assert_eq!(e.exit_code(), ExitCode::BadInput, "{e}");
            let message = e.to_string();
            assert!(message.contains(FILE), "{message}");
            message
        }
    }
}

fn generated_orc() -> Sample {
    let spec = InventorySpec::new("src", 120);
    let data = report(&spec, DataFormat::Orc, false).data_files.remove(0);
    Sample::new("generated ORC", DataFormat::Orc, data)
}

/// Where the first stripe's footer starts (a compressed stream: 3-byte block headers, each
/// followed by its block).
fn first_stripe_footer(sample: &Sample) -> usize {
    let mut reader = InMemory(Bytes::from(sample.bytes.clone()));
    let metadata =
        orc_rust::reader::metadata::read_metadata(&mut reader).unwrap_or_else(|e| panic!("{e}"));
    metadata.stripe_metadatas()[0].footer_offset() as usize
}

/// An ORC block header: the block's length, shifted left, and 1 if it is stored uncompressed.
fn orc_block_header(length: u32, original: bool) -> [u8; 3] {
    let bytes = ((length << 1) | u32::from(original)).to_le_bytes();
    [bytes[0], bytes[1], bytes[2]]
}

#[test]
fn an_orc_block_longer_than_its_stream_is_bad_input() {
    // orc-rust's `BytesMut::split_to` past the end of the stream.
    let sample = generated_orc();
    let at = first_stripe_footer(&sample);
    let err = patched_error(&sample, |bytes| {
        bytes[at..at + 3].copy_from_slice(&orc_block_header(0x7f_ffff, false));
    });
    assert!(err.contains("cannot read as ORC"), "{err}");
}

#[test]
fn a_corrupt_deflate_block_in_an_orc_stripe_is_bad_input() {
    // orc-rust's `Decompressor::read` unwrapping flate2's "corrupt deflate stream".
    let sample = generated_orc();
    let at = first_stripe_footer(&sample);
    let header = &sample.bytes[at..at + 3];
    assert_eq!(
        header[0] & 1,
        0,
        "the stripe footer's first block is compressed"
    );
    let err = patched_error(&sample, |bytes| {
        // A deflate block of type 3, which does not exist.
        bytes[at + 3] = 0xff;
    });
    assert!(err.contains("cannot read as ORC"), "{err}");
}

/// An AWS sample, or `None` (outside CI) when the fixtures are not there.
fn aws_sample(name: &str, format: DataFormat) -> Option<Sample> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/aws-samples/orcabus-filemanager")
        .join(name);
    match std::fs::read(path) {
        Ok(data) => Some(Sample::new(name, format, data)),
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI needs the AWS samples");
            eprintln!("skipping the AWS sample {name}: {e}");
            None
        }
    }
}

#[test]
fn an_orc_stripe_footer_with_too_few_column_encodings_is_bad_input() {
    // Found by the mutation test: one bit flipped in the stripe footer of AWS's sample leaves
    // it fewer column encodings than the file has columns, and orc-rust's `Column::encoding`
    // indexed past their end.
    let Some(sample) = aws_sample("orc_inventory.orc", DataFormat::Orc) else {
        return;
    };
    patched_error(&sample, |bytes| bytes[1283] ^= 0x10);
}

#[test]
fn a_parquet_bit_width_over_the_value_width_is_bad_input() {
    // Found by the mutation test: one bit flipped in the bit width of the dictionary indices of
    // AWS's sample's first data page failed the parquet crate's `num_bits <= BIT_CAPACITY`
    // assertion.
    let Some(sample) = aws_sample("parquet_inventory.parquet", DataFormat::Parquet) else {
        return;
    };
    patched_error(&sample, |bytes| bytes[162] ^= 0x40);
}

/// Reads a crafted file that must fail as bad input naming it; its message, and the largest
/// single allocation the read made.
fn crafted_error(format: DataFormat, bytes: Vec<u8>) -> (String, usize) {
    let (result, largest) = largest_allocation(|| read(format, bytes));
    match result {
        Ok(rows) => panic!("the crafted file read {rows} rows"),
        Err(e) => {
            assert_eq!(e.exit_code(), ExitCode::BadInput, "{e}");
            let message = e.to_string();
            assert!(message.contains(FILE), "{message}");
            (message, largest)
        }
    }
}

/// `sample` with its postscript changed by `change` and its footer replaced by `footer`.
fn with_orc_tail(
    sample: &Sample,
    change: impl FnOnce(&mut orc_rust::proto::PostScript),
    footer: Option<Vec<u8>>,
) -> Vec<u8> {
    use prost::Message;
    let bytes = &sample.bytes;
    let postscript_len = usize::from(bytes[bytes.len() - 1]);
    let postscript_start = bytes.len() - 1 - postscript_len;
    let mut postscript =
        orc_rust::proto::PostScript::decode(&bytes[postscript_start..bytes.len() - 1])
            .unwrap_or_else(|e| panic!("{e}"));
    let footer_start = postscript_start - postscript.footer_length() as usize;
    let footer = footer.unwrap_or_else(|| bytes[footer_start..postscript_start].to_vec());
    postscript.footer_length = Some(footer.len() as u64);
    change(&mut postscript);
    let postscript = postscript.encode_to_vec();
    [
        &bytes[..footer_start],
        &footer,
        &postscript,
        &[postscript.len() as u8],
    ]
    .concat()
}

#[test]
fn an_orc_footer_that_inflates_to_200_mib_is_refused_without_inflating_it() {
    use std::io::Write;
    // One deflate block of 200 MiB of zeros: about 200 KiB, where orc-rust's `read_to_end`
    // would allocate all 200 MiB before any check of its own.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..200 {
        encoder.write_all(&[0u8; 1 << 20]).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    let footer = [&orc_block_header(bomb.len() as u32, false)[..], &bomb].concat();
    let crafted = with_orc_tail(&generated_orc(), |_| {}, Some(footer));
    let (error, largest) = crafted_error(DataFormat::Orc, crafted);
    assert!(
        error.contains("the footer: at byte 0:") && error.contains("inflates past 262144 bytes"),
        "{error}"
    );
    assert!(largest < 2 << 20, "allocated {largest} bytes at once");
}

#[test]
fn an_orc_stream_block_inflating_past_the_declared_block_size_is_refused() {
    // 20,000 keys make the key column's data stream several blocks of 256 KiB; a postscript
    // declaring 64 KiB blocks still fits the footer, metadata and stripe footers.
    let spec = InventorySpec::new("src", 20_000);
    let data = report(&spec, DataFormat::Orc, false).data_files.remove(0);
    let sample = Sample::new("generated ORC", DataFormat::Orc, data);
    let crafted = with_orc_tail(
        &sample,
        |postscript| postscript.compression_block_size = Some(64 << 10),
        None,
    );
    let (error, _) = crafted_error(DataFormat::Orc, crafted);
    assert!(
        error.contains("bytes ") && error.contains("inflates past 65536 bytes"),
        "{error}"
    );
}

/// A Parquet inventory file of one row group whose first page (the `bucket` column's, at byte
/// 4, no dictionary) holds `bucket_bytes` bytes, compressed with `codec`.
fn one_page_parquet(codec: parquet::basic::Compression, bucket_bytes: usize) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    const ROWS: usize = 4096;
    let bucket = "b".repeat(bucket_bytes / ROWS);
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "bucket",
            Arc::new(StringArray::from(vec![bucket.as_str(); ROWS])),
        ),
        ("key", Arc::new(StringArray::from(vec!["k"; ROWS]))),
        ("size", Arc::new(Int64Array::from(vec![1i64; ROWS]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap_or_else(|e| panic!("{e}"));
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false)
        .set_data_page_size_limit(64 << 20)
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .build();
    let mut file = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), Some(properties))
            .unwrap_or_else(|e| panic!("{e}"));
    writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    writer.close().unwrap_or_else(|e| panic!("{e}"));
    file
}

/// Sets the uncompressed size the first page's header claims; both sizes take 4 bytes.
fn claim_first_page_uncompressed(file: &mut [u8], claimed: u32) {
    // PAR1 | field 1 (type, i32) = 0 | field 2 (uncompressed size, i32) = zigzag varint
    assert_eq!(&file[4..7], &[0x15, 0x00, 0x15], "the first page header");
    assert!(file[7..10].iter().all(|b| b & 0x80 != 0) && file[10] & 0x80 == 0);
    let mut zigzag = claimed << 1;
    for byte in &mut file[7..11] {
        *byte = (zigzag & 0x7f) as u8 | 0x80;
        zigzag >>= 7;
    }
    file[10] &= 0x7f;
    assert_eq!(zigzag, 0, "{claimed} does not fit 4 bytes");
}

#[test]
fn a_parquet_page_claiming_100_mib_is_refused_before_it_is_allocated() {
    // The parquet crate allocates what the header claims, then snappy fills it.
    let mut file = one_page_parquet(parquet::basic::Compression::SNAPPY, 2 << 20);
    claim_first_page_uncompressed(&mut file, 100 << 20);
    let (error, largest) = crafted_error(DataFormat::Parquet, file);
    assert!(
        error.contains("claims 104857600 bytes uncompressed"),
        "{error}"
    );
    assert!(largest < 16 << 20, "allocated {largest} bytes at once");
}

#[test]
fn a_gzip_parquet_page_inflating_past_its_header_is_refused_without_inflating_it() {
    // The parquet crate's GZIP codec reads to the end whatever the header says.
    let mut file = one_page_parquet(
        parquet::basic::Compression::GZIP(Default::default()),
        8 << 20,
    );
    claim_first_page_uncompressed(&mut file, 1 << 20);
    let (error, largest) = crafted_error(DataFormat::Parquet, file);
    assert!(error.contains("inflates past 1048576 bytes"), "{error}");
    assert!(largest < 4 << 20, "allocated {largest} bytes at once");
}
