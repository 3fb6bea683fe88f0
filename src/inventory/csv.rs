//! Gzipped CSV inventory data files: no header, every field quoted, keys URL-encoded.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::columns::ColumnMap;
use super::{InventoryRow, RowPosition};
use crate::error::{Error, Result};
use crate::key_encoding::decode_key;

fn optional(field: &str) -> Option<&str> {
    (!field.is_empty()).then_some(field)
}

fn parse_bool(field: &[u8], column: &str, position: RowPosition<'_>) -> Result<Option<bool>> {
    match field {
        b"" => Ok(None),
        b"true" | b"TRUE" | b"True" => Ok(Some(true)),
        b"false" | b"FALSE" | b"False" => Ok(Some(false)),
        other => Err(Error::bad_input(
            position.to_string(),
            format!(
                "{column} is `{}`, expected true or false",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// Reads the rows of one gzipped CSV data file, calling `on_row` for each. `file` names the data
/// file in errors. Stops at the first malformed row or a damaged gzip stream. Decompression runs
/// on a second thread, so that inflating and parsing each get a core.
pub fn read_gzip_csv<R: Read + Send>(
    compressed: R,
    columns: &ColumnMap,
    file: &str,
    on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<R> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        let inflater = scope.spawn(move || {
            let mut decoder = MultiGzDecoder::new(compressed);
            loop {
                let mut block = vec![0u8; DECOMPRESSED_BLOCK];
                match read_full(&mut decoder, &mut block) {
                    Ok(0) => break,
                    Ok(n) => {
                        block.truncate(n);
                        if sender.send(Ok(block)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        break;
                    }
                }
            }
            decoder.into_inner()
        });
        let parsed = read_csv(
            BlockReader {
                blocks: receiver,
                current: Vec::new(),
                position: 0,
            },
            columns,
            file,
            on_row,
        );
        let compressed = inflater
            .join()
            .map_err(|_| Error::bad_input(file, "the decompressor thread panicked"))?;
        parsed.map(|()| compressed)
    })
}

/// Decompressed bytes handed from the inflater thread to the parser at a time.
const DECOMPRESSED_BLOCK: usize = 256 * 1024;

/// Fills `buf` as far as the reader allows; 0 only at the end.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A `Read` over blocks from the inflater thread.
struct BlockReader {
    blocks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => {
                    self.current = block?;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// The most bytes one row may take. An inventory row is a few KiB at most (a key is at most
/// 1,024 bytes, three times that URL-encoded); a damaged file with an unclosed quote or no line
/// ends must not be read into memory as one endless row.
pub const MAX_ROW: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("a row longer than {MAX_ROW} bytes (an unclosed quote, or not an S3 Inventory CSV file)")]
struct RowTooLong;

/// Counts bytes read, failing with [`RowTooLong`] once the row in progress passes [`MAX_ROW`]
/// (plus what the CSV reader buffers ahead).
struct RowLimit<R> {
    inner: R,
    read: u64,
    row_start: u64,
}

impl<R: Read> Read for RowLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read - self.row_start > MAX_ROW {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RowTooLong,
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads the rows of one uncompressed CSV data file.
pub fn read_csv<R: Read>(
    reader: R,
    columns: &ColumnMap,
    file: &str,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(RowLimit {
            inner: reader,
            read: 0,
            row_start: 0,
        });
    // One UTF-8 check per record, instead of one per field.
    let mut record = ::csv::StringRecord::new();
    let mut row_number = 0u64;
    loop {
        let position = RowPosition {
            file,
            row: row_number + 1,
        };
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(read_error(e, position)),
        }
        row_number += 1;
        let next_row = csv.position().byte();
        csv.get_mut().row_start = next_row;
        if record.len() != columns.width {
            return Err(Error::bad_input(
                position.to_string(),
                format!(
                    "row has {} fields but fileSchema names {} columns",
                    record.len(),
                    columns.width
                ),
            ));
        }
        let row = parse_record(&record, columns, position)?;
        on_row(&row, position)?;
    }
}

fn read_error(error: ::csv::Error, position: RowPosition<'_>) -> Error {
    match error.kind() {
        ::csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|e| e.is::<RowTooLong>()) => {
            Error::bad_input(position.to_string(), io.to_string())
        }
        ::csv::ErrorKind::Io(io) => Error::bad_input(
            position.file,
            format!(
                "cannot decompress near row {}: {io} (the gzip stream is truncated or corrupt)",
                position.row
            ),
        ),
        _ => Error::bad_input(position.to_string(), format!("malformed CSV: {error}")),
    }
}

fn parse_record<'r>(
    record: &'r ::csv::StringRecord,
    columns: &ColumnMap,
    position: RowPosition<'_>,
) -> Result<InventoryRow<'r>> {
    let field = |index: usize| record.get(index).unwrap_or("");
    let optional_field = |index: Option<usize>| index.map(field).and_then(optional);
    let bucket = field(columns.bucket);
    let key = decode_key(field(columns.key).as_bytes())
        .map_err(|e| Error::bad_input(position.to_string(), format!("Key: {e}")))?;
    let is_delete_marker = match columns.is_delete_marker {
        Some(i) => parse_bool(field(i).as_bytes(), "IsDeleteMarker", position)?.unwrap_or(false),
        None => false,
    };
    let size_field = field(columns.size).as_bytes();
    let size = if size_field.is_empty() {
        if !is_delete_marker {
            return Err(Error::bad_input(
                position.to_string(),
                "Size is empty for an object that is not a delete marker",
            ));
        }
        None
    } else {
        Some(parse_u64(size_field).ok_or_else(|| {
            Error::bad_input(
                position.to_string(),
                format!(
                    "Size `{}` is not a whole number",
                    String::from_utf8_lossy(size_field)
                ),
            )
        })?)
    };
    Ok(InventoryRow {
        bucket,
        key,
        version_id: optional_field(columns.version_id),
        is_latest: match columns.is_latest {
            Some(i) => parse_bool(field(i).as_bytes(), "IsLatest", position)?,
            None => None,
        },
        is_delete_marker,
        size,
        last_modified: optional_field(columns.last_modified),
        etag: optional_field(columns.etag),
        storage_class: optional_field(columns.storage_class),
        intelligent_tiering_access_tier: optional_field(columns.intelligent_tiering_access_tier),
    })
}

fn parse_u64(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    field.iter().try_fold(0u64, |acc, &b| {
        let digit = (b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;

    use super::*;

    const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass";

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        encoder.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    /// (key, size, is_delete_marker, is_latest) of each row.
    type Summary = (String, Option<u64>, bool, Option<bool>);

    fn rows(data: &[u8]) -> Result<Vec<Summary>> {
        let columns = ColumnMap::from_csv_schema(SCHEMA, "m")?;
        let mut out = Vec::new();
        read_gzip_csv(data, &columns, "data.csv.gz", |row, _| {
            out.push((
                row.key.to_string(),
                row.size,
                row.is_delete_marker,
                row.is_latest,
            ));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn reads_quoted_rows_and_decodes_keys() {
        let data = gzip(concat!(
            "\"b\",\"dir/a+b%2C%22c%22\",\"v1\",\"true\",\"false\",\"12\",\"2024-05-06T22:37:48.000Z\",\"e\",\"STANDARD\"\n",
            "\"b\",\"gone\",\"v2\",\"true\",\"true\",\"\",\"2024-05-06T22:37:48.000Z\",\"\",\"\"\n",
        ));
        let got = rows(&data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got[0],
            ("dir/a b,\"c\"".to_string(), Some(12), false, Some(true))
        );
        assert_eq!(got[1], ("gone".to_string(), None, true, Some(true)));
    }

    fn error_of(data: &[u8]) -> String {
        match rows(data) {
            Ok(r) => panic!("accepted {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_named() {
        let data = gzip("\"b\",\"k\",\"v\",\"true\",\"false\",\"1\",\"t\",\"e\",\"STANDARD\"\n\"b\",\"k2\",\"1\"\n");
        let err = error_of(&data);
        assert!(
            err.contains("data.csv.gz row 2")
                && err.contains("3 fields")
                && err.contains("9 columns"),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_is_reported_not_silently_shortened() {
        let text =
            "\"b\",\"k\",\"v\",\"true\",\"false\",\"1\",\"t\",\"e\",\"STANDARD\"\n".repeat(2000);
        let data = gzip(&text);
        let err = error_of(&data[..data.len() / 2]);
        assert!(
            err.contains("data.csv.gz") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn bad_sizes_and_booleans_are_named() {
        assert!(error_of(&gzip(
            "\"b\",\"k\",\"v\",\"true\",\"false\",\"12x\",\"t\",\"e\",\"S\"\n"
        ))
        .contains("Size `12x`"));
        assert!(error_of(&gzip(
            "\"b\",\"k\",\"v\",\"yes\",\"false\",\"1\",\"t\",\"e\",\"S\"\n"
        ))
        .contains("IsLatest is `yes`"));
        assert!(error_of(&gzip(
            "\"b\",\"k\",\"v\",\"true\",\"false\",\"\",\"t\",\"e\",\"S\"\n"
        ))
        .contains("Size is empty"));
        assert!(error_of(&gzip(
            "\"b\",\"%FF\",\"v\",\"true\",\"false\",\"1\",\"t\",\"e\",\"S\"\n"
        ))
        .contains("UTF-8"));
    }

    /// An unclosed quote (or a file with no line ends) made the whole rest of the file one
    /// row, held in memory: a gzip bomb of a few KiB could take gigabytes. Found reviewing the
    /// parsers for the property tests (their inputs are too small to show memory).
    #[test]
    fn an_endless_row_is_refused_not_held_in_memory() {
        let mut text =
            String::from("\"b\",\"k\",\"v\",\"true\",\"false\",\"1\",\"t\",\"e\",\"S\"\n\"b\",\"");
        text.push_str(&"x\n".repeat(3 << 20));
        let err = error_of(&gzip(&text));
        assert!(
            err.contains("data.csv.gz row 2") && err.contains("longer than"),
            "{err}"
        );
        let rows = "\"b\",\"k\",\"v\",\"true\",\"false\",\"1\",\"t\",\"e\",\"S\"\n".repeat(100_000);
        assert_eq!(
            rows_of(&gzip(&rows)).len(),
            100_000,
            "many short rows are fine"
        );
    }

    fn rows_of(data: &[u8]) -> Vec<Summary> {
        rows(data).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn not_gzip_at_all_is_an_error() {
        assert!(error_of(b"plain text, not gzip").contains("data.csv.gz"));
    }
}

#[cfg(test)]
mod proptests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, odd_text, ok_or_names};
    use crate::key_encoding::encode_key;

    const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = encoder.write_all(bytes);
        encoder.finish().unwrap_or_default()
    }

    /// (bucket, key, size) of a row.
    type Row = (String, String, Option<u64>);

    /// A valid CSV data file as S3 Inventory writes it, every field quoted, keys URL-encoded.
    fn valid_rows() -> impl Strategy<Value = Vec<Row>> {
        proptest::collection::vec(
            (odd_text(), odd_text(), proptest::option::of(any::<u64>())),
            0..6,
        )
    }

    fn csv_text(rows: &[Row]) -> Vec<u8> {
        let mut out = Vec::new();
        for (bucket, key, size) in rows {
            let quoted = bucket.replace('"', "\"\"");
            let (size, delete_marker) = match size {
                Some(n) => (n.to_string(), "false"),
                None => (String::new(), "true"),
            };
            let line = format!(
                "\"{quoted}\",\"{}\",\"v\",\"true\",\"{delete_marker}\",\"{size}\",\"2024-05-06T22:37:48.000Z\",\"e\",\"STANDARD\"\n",
                encode_key(key)
            );
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    fn read(data: &[u8], gzipped: bool) -> Result<Vec<Row>> {
        let columns = ColumnMap::from_csv_schema(SCHEMA, "m")?;
        let mut out = Vec::new();
        let on_row = |row: &InventoryRow<'_>, _: RowPosition<'_>| {
            out.push((row.bucket.to_string(), row.key.to_string(), row.size));
            Ok(())
        };
        if gzipped {
            read_gzip_csv(data, &columns, "data.csv.gz", on_row).map(drop)
        } else {
            read_csv(data, &columns, "data.csv.gz", on_row)
        }?;
        Ok(out)
    }

    fn named(result: Result<Vec<Row>>) -> bool {
        ok_or_names(&result, "data.csv.gz")
    }

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn odd_inventory_rows_round_trip(rows in valid_rows()) {
            let got = read(&gzip(&csv_text(&rows)), true);
            prop_assert_eq!(got.ok(), Some(rows));
        }

        #[test]
        fn garbage_inventory_rows_never_panic(bytes in garbage()) {
            prop_assert!(named(read(&bytes, false)));
            prop_assert!(named(read(&gzip(&bytes), true)));
        }

        #[test]
        fn garbage_gzip_never_panics(bytes in garbage()) {
            prop_assert!(named(read(&bytes, true)));
        }

        #[test]
        fn mutated_inventory_rows_never_panic(text in mutated(valid_rows().prop_map(|r| csv_text(&r)))) {
            prop_assert!(named(read(&gzip(&text), true)));
        }

        #[test]
        fn mutated_gzip_streams_never_panic(data in mutated(valid_rows().prop_map(|r| gzip(&csv_text(&r))))) {
            prop_assert!(named(read(&data, true)));
        }
    }
}
