//! The index (one row per archived member) and the DLQ (one row per object that could not be
//! archived), both CSV (RFC 4180) with a header row.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

pub const INDEX_HEADER: [&str; 14] = [
    "bucket",
    "key",
    "version_id",
    "size",
    "last_modified",
    "etag",
    "md5",
    "storage_class",
    "content_type",
    "metadata",
    "tags",
    "member",
    "header_offset",
    "data_offset",
];

pub const DLQ_HEADER: [&str; 7] = [
    "bucket",
    "key",
    "version_id",
    "size",
    "last_modified",
    "reason",
    "detail",
];

/// The deletion log `prune` writes beside each manifest (`<manifest key>.pruned`).
pub const PRUNED_HEADER: [&str; 6] = ["bucket", "key", "version_id", "size", "etag", "deleted_at"];

/// One archived object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexRow {
    pub bucket: String,
    /// Decoded.
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    /// RFC 3339 UTC.
    pub last_modified: String,
    pub etag: String,
    /// Lowercase hex MD5 of the bytes archived.
    pub md5: String,
    pub storage_class: String,
    pub content_type: String,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// The tar member name, or the copy's key for big objects.
    pub member: String,
    /// Offsets into the uncompressed tar stream; `None` for big-object copies.
    pub header_offset: Option<u64>,
    pub data_offset: Option<u64>,
}

/// Why an object went to the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum DlqReason {
    /// Deleted since the inventory.
    NoSuchKey,
    /// InvalidObjectState: needs a restore.
    Glacier,
    AccessDenied,
    /// Throttling or 5xx that outlasted the retries.
    Retry,
    ChecksumMismatch,
    /// Size differs from the manifest.
    Changed,
    /// SSE-C: readable only with the customer-provided key it was written with.
    SseC,
    /// S3 refused the object with an error s3bundler does not know (a 4xx it does not retry);
    /// the detail gives S3's code.
    Unexpected,
}

impl DlqReason {
    pub const ALL: [DlqReason; 8] = [
        DlqReason::NoSuchKey,
        DlqReason::Glacier,
        DlqReason::AccessDenied,
        DlqReason::Retry,
        DlqReason::ChecksumMismatch,
        DlqReason::Changed,
        DlqReason::SseC,
        DlqReason::Unexpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DlqReason::NoSuchKey => "NoSuchKey",
            DlqReason::Glacier => "Glacier",
            DlqReason::AccessDenied => "AccessDenied",
            DlqReason::Retry => "Retry",
            DlqReason::ChecksumMismatch => "ChecksumMismatch",
            DlqReason::Changed => "Changed",
            DlqReason::SseC => "SseC",
            DlqReason::Unexpected => "Unexpected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for DlqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object that could not be archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqRow {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub last_modified: Option<String>,
    pub reason: DlqReason,
    pub detail: String,
}

fn json_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

/// A CSV table with a header row, built in memory.
struct Table {
    csv: csv::Writer<Vec<u8>>,
    rows: u64,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = csv.write_record(header);
        Table { csv, rows: 0 }
    }

    fn push(&mut self, record: &[&str]) {
        let _ = self.csv.write_record(record);
        self.rows += 1;
    }

    fn finish(self) -> Vec<u8> {
        self.csv.into_inner().unwrap_or_default()
    }

    fn buffered(&self) -> usize {
        self.csv.get_ref().len()
    }

    fn take(&mut self) -> Vec<u8> {
        let fresh = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        std::mem::replace(&mut self.csv, fresh)
            .into_inner()
            .unwrap_or_default()
    }
}

/// `Spill` for a writer around a [`Table`].
macro_rules! spill_through_table {
    ($($writer:ty),*) => {$(
        impl Spill for $writer {
            fn buffered(&self) -> usize {
                self.0.buffered()
            }

            fn take(&mut self) -> Vec<u8> {
                self.0.take()
            }

            fn rows(&self) -> u64 {
                self.0.rows
            }
        }
    )*};
}

spill_through_table!(IndexWriter, DlqWriter);

/// A table uploaded while it grows (`bundle`'s index and DLQ): its bytes so far are taken out
/// in parts, so it never has to be held whole.
pub trait Spill {
    /// Bytes written and not yet taken (give or take the CSV writer's own small buffer).
    fn buffered(&self) -> usize;
    /// Takes every byte written so far (the header row too, the first time).
    fn take(&mut self) -> Vec<u8>;
    fn rows(&self) -> u64;
}

/// Accumulates index rows.
pub struct IndexWriter(Table);

impl Default for IndexWriter {
    fn default() -> Self {
        IndexWriter(Table::new(&INDEX_HEADER))
    }
}

/// The fields of an index row, in [`INDEX_HEADER`] order, as the index holds them.
pub fn index_fields(row: &IndexRow) -> [String; 14] {
    let offset = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_default();
    [
        row.bucket.clone(),
        row.key.clone(),
        row.version_id.clone().unwrap_or_default(),
        row.size.to_string(),
        row.last_modified.clone(),
        row.etag.clone(),
        row.md5.clone(),
        row.storage_class.clone(),
        row.content_type.clone(),
        json_map(&row.metadata),
        json_map(&row.tags),
        row.member.clone(),
        offset(row.header_offset),
        offset(row.data_offset),
    ]
}

/// The fields of a DLQ row, in [`DLQ_HEADER`] order.
pub fn dlq_fields(row: &DlqRow) -> [String; 7] {
    [
        row.bucket.clone(),
        row.key.clone(),
        row.version_id.clone().unwrap_or_default(),
        row.size.to_string(),
        row.last_modified.clone().unwrap_or_default(),
        row.reason.as_str().to_string(),
        row.detail.clone(),
    ]
}

impl IndexWriter {
    pub fn push(&mut self, row: &IndexRow) {
        self.0
            .push(&index_fields(row).each_ref().map(String::as_str));
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finish()
    }
}

/// Accumulates DLQ rows.
pub struct DlqWriter(Table);

impl Default for DlqWriter {
    fn default() -> Self {
        DlqWriter(Table::new(&DLQ_HEADER))
    }
}

impl DlqWriter {
    pub fn push(&mut self, row: &DlqRow) {
        self.0.push(&dlq_fields(row).each_ref().map(String::as_str));
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finish()
    }
}

/// One original object `prune` deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRow {
    pub bucket: String,
    pub key: String,
    /// The version deleted, when the index recorded one.
    pub version_id: Option<String>,
    pub size: u64,
    pub etag: String,
    /// RFC 3339 UTC.
    pub deleted_at: String,
}

/// Accumulates deletion log rows.
pub struct PrunedWriter(Table);

impl Default for PrunedWriter {
    fn default() -> Self {
        PrunedWriter(Table::new(&PRUNED_HEADER))
    }
}

impl PrunedWriter {
    pub fn push(&mut self, row: &PrunedRow) {
        self.0.push(&[
            row.bucket.as_str(),
            &row.key,
            row.version_id.as_deref().unwrap_or(""),
            &row.size.to_string(),
            &row.etag,
            &row.deleted_at,
        ]);
    }

    pub fn rows(&self) -> u64 {
        self.0.rows
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finish()
    }
}

fn check_header<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    expected: &[&str],
    location: &str,
) -> Result<()> {
    let header = reader
        .headers()
        .map_err(|e| Error::bad_input(location, format!("no header row: {e}")))?;
    let got: Vec<&str> = header.iter().collect();
    if got != expected {
        return Err(Error::bad_input(
            location,
            format!("header is {got:?}, expected {expected:?}"),
        ));
    }
    Ok(())
}

/// Turns one record into a row; `bad` makes an error that names the table and the line.
type ParseRow<T> = fn(&csv::StringRecord, &dyn Fn(String) -> Error) -> Result<T>;

/// The rows of a CSV table, read one at a time from `R`: an index of millions of rows is never
/// held whole. Ends after the first error. Errors name the table and the line (the header is
/// line 1).
pub struct Rows<R: std::io::Read, T> {
    reader: csv::Reader<R>,
    record: csv::StringRecord,
    line: u64,
    location: String,
    parse: ParseRow<T>,
    failed: bool,
}

impl<R: std::io::Read, T> Rows<R, T> {
    fn new(reader: R, header: &[&str], location: &str, parse: ParseRow<T>) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().from_reader(reader);
        check_header(&mut reader, header, location)?;
        Ok(Rows {
            reader,
            record: csv::StringRecord::new(),
            line: 1,
            location: location.to_string(),
            parse,
            failed: false,
        })
    }
}

impl<R: std::io::Read, T> Iterator for Rows<R, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.failed {
            return None;
        }
        self.line += 1;
        let location = format!("{} line {}", self.location, self.line);
        let bad = |detail: String| Error::bad_input(location.clone(), detail);
        let row = match self.reader.read_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => (self.parse)(&self.record, &bad),
            // The body stopped coming (a download cut off), not a damaged table.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => Err(Error::Remote {
                operation: "GetObject",
                location: self.location.clone(),
                detail: format!("read cut off at line {}: {e}", self.line),
            }),
            Err(e) => Err(bad(format!("malformed CSV: {e}"))),
        };
        self.failed = row.is_err();
        Some(row)
    }
}

fn field(record: &csv::StringRecord, i: usize) -> String {
    record.get(i).unwrap_or("").to_string()
}

fn optional_field(record: &csv::StringRecord, i: usize) -> Option<String> {
    Some(field(record, i)).filter(|v| !v.is_empty())
}

fn size_field(record: &csv::StringRecord, i: usize, bad: &dyn Fn(String) -> Error) -> Result<u64> {
    let text = field(record, i);
    text.parse()
        .map_err(|_| bad(format!("size `{text}` is not a number")))
}

fn offset_field(
    record: &csv::StringRecord,
    i: usize,
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<u64>> {
    let text = field(record, i);
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| bad(format!("{} `{text}` is not a number", INDEX_HEADER[i])))
}

/// Parses an index (or a big object's `.metadata`).
pub fn parse_index(bytes: &[u8], location: &str) -> Result<Vec<IndexRow>> {
    index_rows(bytes, location)?.collect()
}

/// The rows of an index (or a big object's `.metadata`) as they are read.
pub fn index_rows<R: std::io::Read>(reader: R, location: &str) -> Result<Rows<R, IndexRow>> {
    Rows::new(reader, &INDEX_HEADER, location, index_row)
}

pub fn index_row(record: &csv::StringRecord, bad: &dyn Fn(String) -> Error) -> Result<IndexRow> {
    let map = |i: usize| -> Result<BTreeMap<String, String>> {
        serde_json::from_str(record.get(i).unwrap_or("{}")).map_err(|e| {
            bad(format!(
                "{} is not a JSON object of strings: {e}",
                INDEX_HEADER[i]
            ))
        })
    };
    let (key, version_id) = (field(record, 1), optional_field(record, 2));
    if let Some(why) = crate::s3::over_s3_limits(&key, version_id.as_deref()) {
        return Err(bad(why));
    }
    Ok(IndexRow {
        bucket: field(record, 0),
        key,
        version_id,
        size: size_field(record, 3, bad)?,
        last_modified: field(record, 4),
        etag: field(record, 5),
        md5: field(record, 6),
        storage_class: field(record, 7),
        content_type: field(record, 8),
        metadata: map(9)?,
        tags: map(10)?,
        member: field(record, 11),
        header_offset: offset_field(record, 12, bad)?,
        data_offset: offset_field(record, 13, bad)?,
    })
}

/// Parses a DLQ.
pub fn parse_dlq(bytes: &[u8], location: &str) -> Result<Vec<DlqRow>> {
    dlq_rows(bytes, location)?.collect()
}

/// The rows of a DLQ as they are read.
pub fn dlq_rows<R: std::io::Read>(reader: R, location: &str) -> Result<Rows<R, DlqRow>> {
    Rows::new(reader, &DLQ_HEADER, location, dlq_row)
}

pub fn dlq_row(record: &csv::StringRecord, bad: &dyn Fn(String) -> Error) -> Result<DlqRow> {
    Ok(DlqRow {
        bucket: field(record, 0),
        key: field(record, 1),
        version_id: optional_field(record, 2),
        size: size_field(record, 3, bad)?,
        last_modified: optional_field(record, 4),
        reason: DlqReason::parse(&field(record, 5))
            .ok_or_else(|| bad(format!("unknown reason `{}`", field(record, 5))))?,
        detail: field(record, 6),
    })
}

/// Parses a deletion log.
pub fn parse_pruned(bytes: &[u8], location: &str) -> Result<Vec<PrunedRow>> {
    Rows::new(bytes, &PRUNED_HEADER, location, pruned_row)?.collect()
}

fn pruned_row(record: &csv::StringRecord, bad: &dyn Fn(String) -> Error) -> Result<PrunedRow> {
    Ok(PrunedRow {
        bucket: field(record, 0),
        key: field(record, 1),
        version_id: optional_field(record, 2),
        size: size_field(record, 3, bad)?,
        etag: field(record, 4),
        deleted_at: field(record, 5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexRow {
        IndexRow {
            bucket: "src".into(),
            key: "odd,key \"quoted\"\nline".into(),
            version_id: Some("v1".into()),
            size: 5,
            last_modified: "2024-05-06T22:44:22Z".into(),
            etag: "\"d8e8fca2dc0f896fd7cb4cb0031ba249\"".into(),
            md5: "d8e8fca2dc0f896fd7cb4cb0031ba249".into(),
            storage_class: "STANDARD".into(),
            content_type: "text/plain".into(),
            metadata: BTreeMap::from([("a".into(), "1,2".into())]),
            tags: BTreeMap::from([("t=1".into(), "\u{e9}".into())]),
            member: "src/odd,key".into(),
            header_offset: Some(0),
            data_offset: Some(1536),
        }
    }

    #[test]
    fn index_round_trips_with_its_header() {
        let mut writer = IndexWriter::default();
        writer.push(&sample());
        writer.push(&IndexRow {
            header_offset: None,
            data_offset: None,
            version_id: None,
            ..sample()
        });
        let bytes = writer.finish();
        assert!(bytes.starts_with(b"bucket,key,version_id,size,last_modified,etag,md5,storage_class,content_type,metadata,tags,member,header_offset,data_offset\n"));
        let rows = parse_index(&bytes, "i").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows[0], sample());
        assert_eq!(rows[1].header_offset, None);
        assert_eq!(rows[1].version_id, None);
    }

    #[test]
    fn dlq_round_trips() {
        let row = DlqRow {
            bucket: "src".into(),
            key: "gone".into(),
            version_id: None,
            size: 3,
            last_modified: Some("2024-01-01T00:00:00.000Z".into()),
            reason: DlqReason::NoSuchKey,
            detail: "deleted since the inventory".into(),
        };
        let mut writer = DlqWriter::default();
        writer.push(&row);
        assert_eq!(writer.rows(), 1);
        let parsed = parse_dlq(&writer.finish(), "d").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, vec![row]);
    }

    /// `bundle` uploads a table in parts as it grows: the parts, joined, are the table.
    #[test]
    fn a_table_taken_in_parts_joins_into_the_whole_table() {
        let row = |i: usize| DlqRow {
            bucket: "src".into(),
            key: format!("k,\"{i}\"\n"),
            version_id: None,
            size: i as u64,
            last_modified: None,
            reason: DlqReason::Retry,
            detail: "x".repeat(i),
        };
        let (mut whole, mut parted) = (DlqWriter::default(), DlqWriter::default());
        let mut joined = Vec::new();
        for i in 0..500 {
            whole.push(&row(i));
            parted.push(&row(i));
            if i % 97 == 0 {
                joined.extend(parted.take());
                assert_eq!(parted.buffered(), 0);
            }
        }
        joined.extend(parted.take());
        assert_eq!(parted.rows(), 500);
        assert_eq!(joined, whole.finish());
    }

    #[test]
    fn damaged_indexes_are_named() {
        assert!(parse_index(b"wrong,header\n", "s3://a/i.index").is_err());
        let mut bytes = IndexWriter::default().finish();
        bytes.extend_from_slice(b"src,k,,x,,,,,,{},{},m,0,512\n");
        let err = parse_index(&bytes, "s3://a/i.index")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("s3://a/i.index line 2") && err.contains("size `x`"),
            "{err}"
        );
    }

    #[test]
    fn index_keys_longer_than_s3_allows_are_named_before_any_request() {
        let mut writer = IndexWriter::default();
        writer.push(&IndexRow {
            key: "k".repeat(100_000),
            ..sample()
        });
        let err = parse_index(&writer.finish(), "s3://a/i.index")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("s3://a/i.index line 2") && err.contains("key is 100000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn pruned_log_round_trips_and_names_bad_rows() {
        let row = PrunedRow {
            bucket: "src".into(),
            key: "a,b\nc".into(),
            version_id: Some("v1".into()),
            size: 7,
            etag: "d8e8fca2dc0f896fd7cb4cb0031ba249".into(),
            deleted_at: "2026-11-25T20:00:00Z".into(),
        };
        let mut writer = PrunedWriter::default();
        writer.push(&row);
        writer.push(&PrunedRow {
            version_id: None,
            ..row.clone()
        });
        assert_eq!(writer.rows(), 2);
        let bytes = writer.finish();
        assert!(bytes.starts_with(b"bucket,key,version_id,size,etag,deleted_at\n"));
        let parsed = parse_pruned(&bytes, "p").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[0], row);
        assert_eq!(parsed[1].version_id, None);
        let err = parse_pruned(
            b"bucket,key,version_id,size,etag,deleted_at\nsrc,k,,-1,,\n",
            "s3://m/x.pruned",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("s3://m/x.pruned line 2"), "{err}");
        assert!(parse_pruned(b"bucket,key\n", "p").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, odd_text, ok_or_names};

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), odd_text()]
    }

    fn optional() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(odd_text())
    }

    fn index_row() -> impl Strategy<Value = IndexRow> {
        (
            (odd_text(), odd_text(), optional(), any::<u64>(), text()),
            (text(), text(), text(), text()),
            (
                btree_map(odd_text(), text(), 0..3),
                btree_map(odd_text(), text(), 0..3),
            ),
            (text(), any::<Option<u64>>(), any::<Option<u64>>()),
        )
            .prop_map(
                |(
                    (bucket, key, version_id, size, last_modified),
                    (etag, md5, storage_class, content_type),
                    (metadata, tags),
                    (member, header_offset, data_offset),
                )| IndexRow {
                    bucket,
                    key,
                    version_id,
                    size,
                    last_modified,
                    etag,
                    md5,
                    storage_class,
                    content_type,
                    metadata,
                    tags,
                    member,
                    header_offset,
                    data_offset,
                },
            )
    }

    fn dlq_row() -> impl Strategy<Value = DlqRow> {
        (
            (odd_text(), odd_text(), optional(), any::<u64>()),
            (
                optional(),
                proptest::sample::select(DlqReason::ALL.to_vec()),
                text(),
            ),
        )
            .prop_map(
                |((bucket, key, version_id, size), (last_modified, reason, detail))| DlqRow {
                    bucket,
                    key,
                    version_id,
                    size,
                    last_modified,
                    reason,
                    detail,
                },
            )
    }

    fn pruned_row() -> impl Strategy<Value = PrunedRow> {
        (
            (odd_text(), odd_text(), optional()),
            (any::<u64>(), text(), text()),
        )
            .prop_map(
                |((bucket, key, version_id), (size, etag, deleted_at))| PrunedRow {
                    bucket,
                    key,
                    version_id,
                    size,
                    etag,
                    deleted_at,
                },
            )
    }

    fn index(rows: &[IndexRow]) -> Vec<u8> {
        let mut writer = IndexWriter::default();
        rows.iter().for_each(|r| writer.push(r));
        writer.finish()
    }

    fn dlq(rows: &[DlqRow]) -> Vec<u8> {
        let mut writer = DlqWriter::default();
        rows.iter().for_each(|r| writer.push(r));
        writer.finish()
    }

    fn pruned(rows: &[PrunedRow]) -> Vec<u8> {
        let mut writer = PrunedWriter::default();
        rows.iter().for_each(|r| writer.push(r));
        writer.finish()
    }

    /// Errors name the table.
    fn named<T>(result: &Result<T>) -> bool {
        ok_or_names(result, "s3://b/t")
    }

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn odd_index_rows_round_trip(rows in vec(index_row(), 0..6)) {
            prop_assert_eq!(parse_index(&index(&rows), "i").ok(), Some(rows));
        }

        #[test]
        fn odd_dlq_rows_round_trip(rows in vec(dlq_row(), 0..6)) {
            prop_assert_eq!(parse_dlq(&dlq(&rows), "d").ok(), Some(rows));
        }

        #[test]
        fn odd_pruned_rows_round_trip(rows in vec(pruned_row(), 0..6)) {
            prop_assert_eq!(parse_pruned(&pruned(&rows), "p").ok(), Some(rows));
        }

        #[test]
        fn garbage_tables_never_panic(bytes in garbage()) {
            let mut with_header = INDEX_HEADER.join(",").into_bytes();
            with_header.push(b'\n');
            with_header.extend_from_slice(&bytes);
            for bytes in [&bytes, &with_header] {
                prop_assert!(named(&parse_index(bytes, "s3://b/t")));
                prop_assert!(named(&parse_dlq(bytes, "s3://b/t")));
                prop_assert!(named(&parse_pruned(bytes, "s3://b/t")));
            }
        }

        #[test]
        fn mutated_indexes_never_panic(bytes in mutated(vec(index_row(), 1..4).prop_map(|r| index(&r)))) {
            prop_assert!(named(&parse_index(&bytes, "s3://b/t")));
        }

        #[test]
        fn mutated_dlqs_and_pruned_logs_never_panic(
            dlq_bytes in mutated(vec(dlq_row(), 1..4).prop_map(|r| dlq(&r))),
            pruned_bytes in mutated(vec(pruned_row(), 1..4).prop_map(|r| pruned(&r))),
        ) {
            prop_assert!(named(&parse_dlq(&dlq_bytes, "s3://b/t")));
            prop_assert!(named(&parse_pruned(&pruned_bytes, "s3://b/t")));
        }
    }
}
