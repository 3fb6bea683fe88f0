//! The pure decode layer shared by the ORC and Parquet readers: Arrow record batches become the
//! same [`InventoryRow`]s the CSV reader produces. Columns are found by name (`key`,
//! `version_id`, `last_modified_date`, or camelCase), checked for type once per file, and read
//! without copying; keys are literal (not URL-encoded as in CSV) and timestamps are written as
//! S3 Inventory's CSV does (`2024-05-06T22:37:48.000Z`).

use std::borrow::Cow;
use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt64Type,
};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};

use super::columns::ColumnMap;
use super::{InventoryRow, RowPosition};
use crate::error::{Error, Result};

/// Root columns (by index in `schema`) that hold fields s3bundler uses: what to read.
pub fn used_columns(schema: &Schema, file: &str) -> Result<Vec<usize>> {
    let map = column_map(schema, file)?;
    let mut used: Vec<usize> = [map.bucket, map.key, map.size]
        .into_iter()
        .chain(map.version_id)
        .chain(map.is_latest)
        .chain(map.is_delete_marker)
        .chain(map.last_modified)
        .chain(map.etag)
        .chain(map.storage_class)
        .chain(map.intelligent_tiering_access_tier)
        .collect();
    used.sort_unstable();
    used.dedup();
    Ok(used)
}

fn column_map(schema: &Schema, file: &str) -> Result<ColumnMap> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    ColumnMap::from_names(&names, file)
}

/// Columns of a (projected) batch schema, with their types checked.
#[derive(Debug, Clone)]
pub struct BatchColumns {
    map: ColumnMap,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Boolean,
    Integer,
    /// A timestamp, or text holding one.
    Time,
}

fn type_fits(kind: Kind, data_type: &DataType) -> bool {
    let text = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    match kind {
        Kind::Text => text,
        Kind::Boolean => matches!(data_type, DataType::Boolean),
        Kind::Integer => matches!(
            data_type,
            DataType::Int64 | DataType::Int32 | DataType::UInt64
        ),
        Kind::Time => text || matches!(data_type, DataType::Timestamp(_, _)),
    }
}

impl BatchColumns {
    /// Finds the columns in `schema` and checks their types; `file` names the data file.
    pub fn new(schema: &Schema, file: &str) -> Result<Self> {
        let map = column_map(schema, file)?;
        let checks = [
            (Some(map.bucket), Kind::Text, "a string"),
            (Some(map.key), Kind::Text, "a string"),
            (Some(map.size), Kind::Integer, "an integer"),
            (map.version_id, Kind::Text, "a string"),
            (map.is_latest, Kind::Boolean, "a boolean"),
            (map.is_delete_marker, Kind::Boolean, "a boolean"),
            (map.last_modified, Kind::Time, "a timestamp"),
            (map.etag, Kind::Text, "a string"),
            (map.storage_class, Kind::Text, "a string"),
            (map.intelligent_tiering_access_tier, Kind::Text, "a string"),
        ];
        for (index, kind, expected) in checks {
            let Some(index) = index else { continue };
            let field = schema.field(index);
            if !type_fits(kind, field.data_type()) {
                return Err(Error::bad_input(
                    file,
                    format!(
                        "column `{}` has type {}, expected {expected}",
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
        }
        Ok(BatchColumns { map })
    }
}

/// A string column of any Arrow string layout.
enum Text<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> Text<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Text::Utf8(array.as_string::<i32>())),
            DataType::LargeUtf8 => Some(Text::Large(array.as_string::<i64>())),
            DataType::Utf8View => Some(Text::View(array.as_string_view())),
            _ => None,
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        let (valid, value) = match self {
            Text::Utf8(a) => (a.is_valid(row), a.value(row)),
            Text::Large(a) => (a.is_valid(row), a.value(row)),
            Text::View(a) => (a.is_valid(row), a.value(row)),
        };
        valid.then_some(value)
    }

    fn optional(&self, row: usize) -> Option<&'a str> {
        self.get(row).filter(|s| !s.is_empty())
    }
}

enum Time<'a> {
    Text(Text<'a>),
    /// Whole units since the epoch, and units per second.
    Timestamp(Vec<Option<i64>>, i64),
}

impl<'a> Time<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(text) = Text::of(array) {
            return Some(Time::Text(text));
        }
        let DataType::Timestamp(unit, _) = array.data_type() else {
            return None;
        };
        let (values, per_second): (Vec<Option<i64>>, i64) = match unit {
            TimeUnit::Second => (
                array.as_primitive::<TimestampSecondType>().iter().collect(),
                1,
            ),
            TimeUnit::Millisecond => (
                array
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .collect(),
                1_000,
            ),
            TimeUnit::Microsecond => (
                array
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                1_000_000,
            ),
            TimeUnit::Nanosecond => (
                array
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
                1_000_000_000,
            ),
        };
        Some(Time::Timestamp(values, per_second))
    }
}

/// `2024-05-06T22:37:48.000Z` for a time since the Unix epoch.
pub fn format_timestamp(units: i64, per_second: i64, out: &mut String) {
    let seconds = units.div_euclid(per_second);
    let millis = units.rem_euclid(per_second) * 1000 / per_second;
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
        );
        return;
    }
    // Every row has one: digit pairs are placed directly, which measured several times faster
    // than the formatting machinery. The values are in range, so u32 arithmetic is exact.
    let (year, of_day, millis) = (year as u32, of_day as u32, millis as u32);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let pairs = [
        (0, year / 100),
        (2, year % 100),
        (5, month),
        (8, day),
        (11, of_day / 3600),
        (14, of_day / 60 % 60),
        (17, of_day % 60),
        (21, millis % 100),
    ];
    for (at, value) in pairs {
        let pair = 2 * value as usize;
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    text[20] = b'0' + (millis / 100) as u8;
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// "00" to "99".
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// Gregorian (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn integers(array: &dyn Array) -> Vec<Option<i128>> {
    match array.data_type() {
        DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Int32 => array
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::UInt64 => array
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        _ => vec![None; array.len()],
    }
}

/// How a third-party decoder (orc-rust, parquet) failed on a data file.
#[derive(Debug)]
pub enum DecodeFailure<E> {
    /// It returned an error.
    Error(E),
    /// It panicked, with this message.
    Panic(String),
}

impl<E: std::fmt::Display> std::fmt::Display for DecodeFailure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeFailure::Error(e) => e.fmt(f),
            DecodeFailure::Panic(message) => {
                write!(f, "the decoder crashed on corrupt data ({message})")
            }
        }
    }
}

thread_local! {
    /// Whether this thread is in [`guarded`]: a panic there is reported as an error, not by
    /// the panic hook.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs one step of a third-party decoder over a data file, turning a panic into
/// [`DecodeFailure::Panic`]. A last resort, and why it is needed: orc-rust 0.9 panics on most
/// damaged compressed streams (`Decompressor::read` unwraps the block decoder's error, and a
/// block header longer than its stream panics in `BytesMut::split_to`), and the parquet crate
/// asserts on bit widths out of range. The bytes reach the decoder before manifest.json's MD5
/// can tell they are damaged (both are computed in one pass), and checking every compression
/// block and page header ourselves would mean decoding the formats twice. The decoder that
/// panicked is dropped with the error (a read stops at its first error), so its broken state
/// is never used; the panic hook stays quiet, so the user sees the error naming the file, not
/// a panic message.
pub fn guarded<T, E>(
    step: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, DecodeFailure<E>> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                hook(info);
            }
        }));
    });
    let outer = GUARDED.with(|guarded| guarded.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(step));
    GUARDED.with(|guarded| guarded.set(outer));
    match result {
        Ok(result) => result.map_err(DecodeFailure::Error),
        Err(panic) => Err(DecodeFailure::Panic(
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message")
                .to_string(),
        )),
    }
}

/// Decodes every batch of a file's reader (each under [`guarded`]); `read_error` turns the
/// reader's failure into our error.
pub fn decode_batches<E>(
    mut batches: impl Iterator<Item = std::result::Result<RecordBatch, E>>,
    columns: &BatchColumns,
    file: &str,
    read_error: impl Fn(DecodeFailure<E>) -> Error,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let mut rows = 0u64;
    while let Some(batch) = guarded(|| batches.next().transpose()).map_err(&read_error)? {
        decode_batch(&batch, columns, file, rows, &mut on_row)?;
        rows += batch.num_rows() as u64;
    }
    Ok(())
}

/// Calls `on_row` for every row of `batch`. `rows_before` is the number of rows of the file
/// before this batch, for row numbers in errors.
pub fn decode_batch(
    batch: &RecordBatch,
    columns: &BatchColumns,
    file: &str,
    rows_before: u64,
    mut on_row: impl FnMut(&InventoryRow<'_>, RowPosition<'_>) -> Result<()>,
) -> Result<()> {
    let map = &columns.map;
    let column = |index: usize| batch.column(index).as_ref();
    let wrong_type = |index: usize| {
        let field = batch.schema_ref().field(index).clone();
        Error::bad_input(
            file,
            format!(
                "column `{}` changed type to {} within the file",
                field.name(),
                field.data_type()
            ),
        )
    };
    let text = |index: usize| Text::of(column(index)).ok_or_else(|| wrong_type(index));
    let optional_text = |index: Option<usize>| index.map(text).transpose();
    let boolean = |index: Option<usize>| -> Result<Option<&BooleanArray>> {
        index
            .map(|i| column(i).as_boolean_opt().ok_or_else(|| wrong_type(i)))
            .transpose()
    };
    let bucket = text(map.bucket)?;
    let key = text(map.key)?;
    let version_id = optional_text(map.version_id)?;
    let etag = optional_text(map.etag)?;
    let storage_class = optional_text(map.storage_class)?;
    let tier = optional_text(map.intelligent_tiering_access_tier)?;
    let is_latest = boolean(map.is_latest)?;
    let is_delete_marker = boolean(map.is_delete_marker)?;
    let sizes = integers(column(map.size));
    let last_modified = map
        .last_modified
        .map(|i| Time::of(column(i)).ok_or_else(|| wrong_type(i)))
        .transpose()?;
    let flag = |array: Option<&BooleanArray>, row: usize| {
        array.and_then(|a| a.is_valid(row).then(|| a.value(row)))
    };
    let mut time = String::with_capacity(24);
    for row in 0..batch.num_rows() {
        let position = RowPosition {
            file,
            row: rows_before + row as u64 + 1,
        };
        let missing = |name: &str| {
            Error::bad_input(
                position.to_string(),
                format!("{name} is null, but every row needs one"),
            )
        };
        let is_delete_marker = flag(is_delete_marker, row).unwrap_or(false);
        let size = match sizes[row] {
            None if is_delete_marker => None,
            None => {
                return Err(Error::bad_input(
                    position.to_string(),
                    "size is null for an object that is not a delete marker",
                ))
            }
            Some(n) => Some(u64::try_from(n).map_err(|_| {
                Error::bad_input(position.to_string(), format!("size {n} is negative"))
            })?),
        };
        let last_modified = match &last_modified {
            None => None,
            Some(Time::Text(t)) => t.optional(row),
            Some(Time::Timestamp(values, per_second)) => match values[row] {
                None => None,
                Some(units) => {
                    time.clear();
                    format_timestamp(units, *per_second, &mut time);
                    Some(time.as_str())
                }
            },
        };
        let inventory_row = InventoryRow {
            bucket: bucket.get(row).ok_or_else(|| missing("bucket"))?,
            key: Cow::Borrowed(key.get(row).ok_or_else(|| missing("key"))?),
            version_id: version_id.as_ref().and_then(|t| t.optional(row)),
            is_latest: flag(is_latest, row),
            is_delete_marker,
            size,
            last_modified,
            etag: etag.as_ref().and_then(|t| t.optional(row)),
            storage_class: storage_class.as_ref().and_then(|t| t.optional(row)),
            intelligent_tiering_access_tier: tier.as_ref().and_then(|t| t.optional(row)),
        };
        on_row(&inventory_row, position)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::Field;
    use bytes::Bytes;
    use s3bundler_testkit::generate::{report, DataFormat, InventorySpec};

    use super::*;
    use crate::inventory::columns::ColumnMap;

    /// Every field of a row, owned.
    type Owned = (
        String,
        String,
        Option<String>,
        Option<bool>,
        bool,
        Option<u64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    fn own(row: &InventoryRow<'_>) -> Owned {
        let s = |v: Option<&str>| v.map(str::to_string);
        (
            row.bucket.to_string(),
            row.key.to_string(),
            s(row.version_id),
            row.is_latest,
            row.is_delete_marker,
            row.size,
            s(row.last_modified),
            s(row.etag),
            s(row.storage_class),
            s(row.intelligent_tiering_access_tier),
        )
    }

    fn read(format: DataFormat, data: Vec<u8>, schema: &str) -> Result<Vec<Owned>> {
        let mut out = Vec::new();
        let on_row = |row: &InventoryRow<'_>, _: RowPosition<'_>| {
            out.push(own(row));
            Ok(())
        };
        match format {
            DataFormat::Csv => {
                let columns = ColumnMap::from_csv_schema(schema, "m")?;
                crate::inventory::csv::read_gzip_csv(&data[..], &columns, "data.csv.gz", on_row)
                    .map(|_| ())?
            }
            DataFormat::Parquet => {
                crate::inventory::parquet::read_parquet(Bytes::from(data), "data.parquet", on_row)?
            }
            DataFormat::Orc => {
                crate::inventory::orc::read_orc(Bytes::from(data), "data.orc", on_row)?
            }
        }
        Ok(out)
    }

    #[test]
    fn csv_orc_and_parquet_of_one_inventory_give_the_same_rows() {
        for versioned in [true, false] {
            let spec = InventorySpec {
                versioned,
                ..InventorySpec::new("src", 3000)
            };
            let schema = if versioned {
                s3bundler_testkit::generate::VERSIONED_SCHEMA
            } else {
                s3bundler_testkit::generate::CURRENT_SCHEMA
            };
            let of = |format| {
                let mut files = report(&spec, format, false).data_files;
                read(format, files.remove(0), schema).unwrap_or_else(|e| panic!("{e}"))
            };
            let csv = of(DataFormat::Csv);
            assert!(csv.len() >= 3000);
            assert!(csv.iter().any(|r| r.1.contains('\n')));
            assert_eq!(
                of(DataFormat::Parquet),
                csv,
                "Parquet, versioned {versioned}"
            );
            assert_eq!(of(DataFormat::Orc), csv, "ORC, versioned {versioned}");
        }
    }

    fn batch(fields: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Schema::new(
            fields
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), fields.into_iter().map(|f| f.1).collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn parquet_of(batch: &RecordBatch) -> Vec<u8> {
        let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        writer.write(batch).unwrap_or_else(|e| panic!("{e}"));
        writer.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    fn error_of(format: DataFormat, data: Vec<u8>) -> String {
        match read(format, data, "") {
            Ok(rows) => panic!("accepted {rows:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), crate::error::ExitCode::BadInput, "{e}");
                e.to_string()
            }
        }
    }

    fn strings(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn a_missing_required_column_names_the_file_and_column() {
        let data = parquet_of(&batch(vec![
            ("bucket", strings(&["b"])),
            ("key", strings(&["k"])),
        ]));
        let err = error_of(DataFormat::Parquet, data);
        assert!(
            err.contains("data.parquet") && err.contains("`Size`"),
            "{err}"
        );
    }

    #[test]
    fn a_column_of_the_wrong_type_names_the_file_column_and_type() {
        let data = parquet_of(&batch(vec![
            ("bucket", strings(&["b"])),
            ("key", strings(&["k"])),
            ("size", strings(&["12"])),
        ]));
        let err = error_of(DataFormat::Parquet, data);
        assert!(
            err.contains("data.parquet") && err.contains("column `size` has type Utf8"),
            "{err}"
        );
    }

    #[test]
    fn nulls_and_negative_sizes_are_named_with_the_row() {
        let data = parquet_of(&batch(vec![
            ("bucket", strings(&["b", "b"])),
            ("key", strings(&["k", "k2"])),
            ("size", Arc::new(Int64Array::from(vec![Some(1), None]))),
        ]));
        let err = error_of(DataFormat::Parquet, data);
        assert!(
            err.contains("data.parquet row 2") && err.contains("size is null"),
            "{err}"
        );
        let data = parquet_of(&batch(vec![
            ("bucket", strings(&["b"])),
            ("key", strings(&["k"])),
            ("size", Arc::new(Int64Array::from(vec![-5]))),
        ]));
        assert!(error_of(DataFormat::Parquet, data).contains("size -5 is negative"));
    }

    #[test]
    fn truncated_or_foreign_files_are_named() {
        let spec = InventorySpec::new("src", 500);
        for format in [DataFormat::Parquet, DataFormat::Orc] {
            let mut data = report(&spec, format, false).data_files.remove(0);
            data.truncate(data.len() / 2);
            let err = error_of(format, data);
            assert!(err.contains("data.") && err.contains("truncated"), "{err}");
            let err = error_of(format, b"not a columnar file at all".to_vec());
            assert!(err.contains("cannot read as"), "{err}");
        }
    }

    #[test]
    fn timestamps_are_written_as_csv_reports_write_them() {
        let cases = [
            (1_715_035_068_000, 1000, "2024-05-06T22:37:48.000Z"),
            (
                1_715_035_068_123_456_789,
                1_000_000_000,
                "2024-05-06T22:37:48.123Z",
            ),
            (-1, 1000, "1969-12-31T23:59:59.999Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000Z"),
            // Outside years 0-9999 the slower general path writes them.
            (253_402_300_800, 1, "10000-01-01T00:00:00.000Z"),
            (-62_167_219_201, 1, "-001-12-31T23:59:59.000Z"),
        ];
        for (units, per_second, expected) in cases {
            let mut out = String::new();
            format_timestamp(units, per_second, &mut out);
            assert_eq!(out, expected, "{units} units of 1/{per_second} s");
        }
    }

    fn sample(name: &str) -> Option<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/aws-samples/orcabus-filemanager")
            .join(name);
        std::fs::read(path).ok()
    }

    #[test]
    fn the_real_aws_samples_give_the_same_rows_in_every_format() {
        let (Some(csv), Some(orc), Some(parquet)) = (
            sample("csv_inventory.csv.gz"),
            sample("orc_inventory.orc"),
            sample("parquet_inventory.parquet"),
        ) else {
            assert!(std::env::var("CI").is_err(), "CI needs the AWS samples");
            return;
        };
        let schema = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm";
        let csv = read(DataFormat::Csv, csv, schema).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(csv.len(), 5);
        let parquet = read(DataFormat::Parquet, parquet, "").unwrap_or_else(|e| panic!("{e}"));
        let orc = read(DataFormat::Orc, orc, "").unwrap_or_else(|e| panic!("{e}"));
        // The three files hold the same objects, not necessarily in the same order.
        let sorted = |mut rows: Vec<Owned>| {
            rows.sort();
            rows
        };
        assert_eq!(sorted(parquet.clone()), sorted(csv.clone()), "{parquet:#?}");
        assert_eq!(sorted(orc.clone()), sorted(csv), "{orc:#?}");
    }
}
