//! Generated inventories written as ORC (orc-rust's writer, ZLIB) and Parquet (the parquet
//! crate's ArrowWriter, SNAPPY) with the column names, types and order AWS uses: snake_case,
//! `size` int64, timestamps in milliseconds, keys literal (not URL-encoded as in CSV).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::generate::{
    rows, rows_per_file, DataFormat, Expected, GeneratedReport, InventorySpec, Row,
};

/// Rows written per batch (and so at most held in memory while generating).
const BATCH_ROWS: usize = 65_536;

/// (name, type) of each column, in AWS's order.
fn columns(spec: &InventorySpec) -> Vec<(&'static str, &'static str)> {
    let mut columns = vec![("bucket", "string"), ("key", "string")];
    if spec.versioned {
        columns.extend([
            ("version_id", "string"),
            ("is_latest", "boolean"),
            ("is_delete_marker", "boolean"),
        ]);
    }
    columns.extend([
        ("size", "bigint"),
        ("last_modified_date", "timestamp"),
        ("e_tag", "string"),
        ("storage_class", "string"),
        ("is_multipart_uploaded", "boolean"),
        ("replication_status", "string"),
        ("encryption_status", "string"),
        ("object_lock_retain_until_date", "timestamp"),
        ("object_lock_mode", "string"),
        ("object_lock_legal_hold_status", "string"),
        ("intelligent_tiering_access_tier", "string"),
        ("bucket_key_status", "string"),
        ("checksum_algorithm", "string"),
    ]);
    columns
}

/// The manifest's `fileSchema` as AWS writes it for `format`.
pub fn file_schema(spec: &InventorySpec, format: DataFormat) -> String {
    let columns = columns(spec);
    if format == DataFormat::Orc {
        let fields: Vec<String> = columns.iter().map(|(n, t)| format!("{n}:{t}")).collect();
        return format!("struct<{}>", fields.join(","));
    }
    let fields: String = columns
        .iter()
        .map(|(name, kind)| {
            let required = if matches!(*name, "bucket" | "key") {
                "required"
            } else {
                "optional"
            };
            let physical = match *kind {
                "string" => "binary",
                "boolean" => "boolean",
                _ => "int64",
            };
            let logical = match *kind {
                "string" => " (STRING)",
                "timestamp" => " (TIMESTAMP(MILLIS,true))",
                _ => "",
            };
            format!("  {required} {physical} {name}{logical};")
        })
        .collect();
    format!("message s3.inventory {{{fields}}}")
}

fn schema(spec: &InventorySpec, format: DataFormat) -> SchemaRef {
    // orc-rust writes a UTC-zoned timestamp as ORC's `timestamp with local time zone`; AWS's
    // ORC reports use plain `timestamp`.
    let zone = (format == DataFormat::Parquet).then(|| Arc::from("UTC"));
    let fields: Vec<Field> = columns(spec)
        .into_iter()
        .map(|(name, kind)| {
            let data_type = match kind {
                "string" => DataType::Utf8,
                "boolean" => DataType::Boolean,
                "bigint" => DataType::Int64,
                _ => DataType::Timestamp(TimeUnit::Millisecond, zone.clone()),
            };
            Field::new(name, data_type, !matches!(name, "bucket" | "key"))
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Milliseconds since the epoch of `2025-01-02T03:04:05.000Z`.
pub fn epoch_millis(timestamp: &str) -> i64 {
    let number = |range: std::ops::Range<usize>| -> i64 {
        timestamp
            .get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second, millis) = (
        number(11..13),
        number(14..16),
        number(17..19),
        number(20..23),
    );
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis
}

fn batch(spec: &InventorySpec, format: DataFormat, rows: &[Row]) -> RecordBatch {
    let schema = schema(spec, format);
    let zone = (format == DataFormat::Parquet).then_some("UTC");
    let text = |value: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        let mut builder = StringBuilder::new();
        for row in rows {
            builder.append_option(value(row));
        }
        Arc::new(builder.finish())
    };
    let flag = |value: &dyn Fn(&Row) -> Option<bool>| -> ArrayRef {
        let mut builder = BooleanBuilder::new();
        for row in rows {
            builder.append_option(value(row));
        }
        Arc::new(builder.finish())
    };
    let time = |value: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
        let mut builder = TimestampMillisecondBuilder::new();
        for row in rows {
            builder.append_option(value(row));
        }
        Arc::new(builder.finish().with_timezone_opt(zone))
    };
    let live = |row: &Row, value: &str| (!row.is_delete_marker).then(|| value.to_string());
    let mut arrays: Vec<ArrayRef> = vec![
        text(&|_| Some(spec.source_bucket.clone())),
        text(&|r| Some(r.key.clone())),
    ];
    if spec.versioned {
        arrays.push(text(&|r| r.version_id.clone()));
        arrays.push(flag(&|r| Some(r.is_latest)));
        arrays.push(flag(&|r| Some(r.is_delete_marker)));
    }
    let mut sizes = Int64Builder::new();
    for row in rows {
        sizes.append_option((!row.is_delete_marker).then_some(row.size as i64));
    }
    arrays.extend([
        Arc::new(sizes.finish()) as ArrayRef,
        time(&|r| Some(epoch_millis(&r.last_modified))),
        text(&|r| live(r, &r.etag)),
        text(&|r| live(r, r.storage_class)),
        flag(&|r| (!r.is_delete_marker).then_some(false)),
        text(&|_| None),
        text(&|r| live(r, "SSE-S3")),
        time(&|_| None),
        text(&|_| None),
        text(&|_| None),
        text(&|r| r.access_tier.map(str::to_string)),
        text(&|_| Some("DISABLED".to_string())),
        text(&|_| None),
    ]);
    RecordBatch::try_new(schema, arrays).unwrap_or_else(|e| panic!("generated batch: {e}"))
}

/// A `Write` into a buffer that stays reachable after orc-rust's writer consumes it on close.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes batches of one data file.
enum Writer {
    Orc(orc_rust::ArrowWriter<SharedBuffer>, SharedBuffer),
    Parquet(parquet::arrow::ArrowWriter<Vec<u8>>),
}

impl Writer {
    fn new(spec: &InventorySpec, format: DataFormat) -> Self {
        let schema = schema(spec, format);
        if format == DataFormat::Orc {
            let buffer = SharedBuffer::default();
            let writer = orc_rust::ArrowWriterBuilder::new(buffer.clone(), schema)
                .with_compression(orc_rust::compression::CompressionType::Zlib)
                .try_build()
                .unwrap_or_else(|e| panic!("ORC writer: {e}"));
            return Writer::Orc(writer, buffer);
        }
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(spec.row_group_rows.max(1)))
            .build();
        let writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, Some(properties))
            .unwrap_or_else(|e| panic!("Parquet writer: {e}"));
        Writer::Parquet(writer)
    }

    fn write(&mut self, batch: &RecordBatch) {
        match self {
            Writer::Orc(w, _) => w.write(batch).unwrap_or_else(|e| panic!("ORC write: {e}")),
            Writer::Parquet(w) => w
                .write(batch)
                .unwrap_or_else(|e| panic!("Parquet write: {e}")),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Writer::Orc(w, buffer) => {
                w.close().unwrap_or_else(|e| panic!("ORC close: {e}"));
                let mut out = buffer.0.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *out)
            }
            Writer::Parquet(w) => w
                .into_inner()
                .unwrap_or_else(|e| panic!("Parquet close: {e}")),
        }
    }
}

/// Builds the data files of a report in ORC or Parquet.
pub fn columnar_report(
    spec: &InventorySpec,
    format: DataFormat,
    real_etags: bool,
) -> GeneratedReport {
    let per_file = rows_per_file(spec);
    let mut expected = Expected::default();
    let mut files = Vec::new();
    let mut writer = Writer::new(spec, format);
    let mut pending: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    let mut in_file = 0u64;
    for row in rows(spec, real_etags) {
        expected.count(&row);
        pending.push(row);
        in_file += 1;
        if pending.len() == BATCH_ROWS || in_file == per_file {
            writer.write(&batch(spec, format, &pending));
            pending.clear();
        }
        if in_file == per_file {
            files.push(std::mem::replace(&mut writer, Writer::new(spec, format)).finish());
            in_file = 0;
        }
    }
    if in_file > 0 || files.is_empty() {
        if !pending.is_empty() {
            writer.write(&batch(spec, format, &pending));
        }
        files.push(writer.finish());
    }
    GeneratedReport {
        format,
        data_files: files,
        expected,
    }
}
