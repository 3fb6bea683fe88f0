//! Realistic S3 Inventory reports of any size, deterministic from a seed: odd keys (spaces, `+`,
//! `%`, `&`, quotes, commas, unicode, newlines, tabs, deep paths, 1,024-byte keys), several
//! storage classes, versioned rows with noncurrent versions and delete markers, and, when asked,
//! the matching objects.

use std::io::Write;

use flate2::write::GzEncoder;
use md5::{Digest, Md5};

/// What to generate.
#[derive(Debug, Clone)]
pub struct InventorySpec {
    pub source_bucket: String,
    /// Distinct keys.
    pub objects: u64,
    /// A versioned report: VersionId, IsLatest and IsDeleteMarker columns, noncurrent versions
    /// and delete markers.
    pub versioned: bool,
    pub data_files: usize,
    pub seed: u64,
    /// Include keys containing a newline (moto refuses to store those).
    pub newline_keys: bool,
    /// Include 1,024-byte keys (the local s3s server cannot store keys over ~150 bytes: it
    /// names a file after the base64 of the key).
    pub long_keys: bool,
    /// Largest object size.
    pub max_object_size: u64,
    /// Rows per Parquet row group (the parquet crate's default: 1,048,576).
    pub row_group_rows: usize,
}

impl InventorySpec {
    pub fn new(source_bucket: &str, objects: u64) -> Self {
        InventorySpec {
            source_bucket: source_bucket.to_string(),
            objects,
            versioned: false,
            data_files: 1,
            seed: 1,
            newline_keys: true,
            long_keys: true,
            max_object_size: 64 << 10,
            row_group_rows: 1 << 20,
        }
    }
}

/// One generated inventory row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub version_id: Option<String>,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    pub size: u64,
    pub last_modified: String,
    pub etag: String,
    pub storage_class: &'static str,
    pub access_tier: Option<&'static str>,
}

impl Row {
    /// Selected by `group` with default options.
    pub fn selected_by_default(&self) -> bool {
        !self.is_delete_marker && self.is_latest && !self.needs_restore()
    }

    pub fn needs_restore(&self) -> bool {
        matches!(self.storage_class, "GLACIER" | "DEEP_ARCHIVE")
            || matches!(
                self.access_tier,
                Some("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS")
            )
    }
}

/// Counts that tests compare with `group`'s summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub rows: u64,
    pub selected: u64,
    pub bytes_selected: u64,
    pub delete_markers: u64,
    pub noncurrent: u64,
    pub needs_restore: u64,
}

impl Expected {
    pub fn count(&mut self, row: &Row) {
        self.rows += 1;
        if row.is_delete_marker {
            self.delete_markers += 1;
        } else if !row.is_latest {
            self.noncurrent += 1;
        } else if row.needs_restore() {
            self.needs_restore += 1;
        } else {
            self.selected += 1;
            self.bytes_selected += row.size;
        }
    }
}

/// splitmix64: a fast, well-mixed hash of (seed, i).
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of object `i`: mostly ordinary paths, every 50th an odd one.
pub fn key_for(spec: &InventorySpec, i: u64) -> String {
    if i % 50 != 7 {
        return format!("data/{:02}/{:05}/obj-{i:09}.json", i % 97, i / 1000);
    }
    let odd = [
        format!("odd/with space {i}.txt"),
        format!("odd/plus+sign+{i}"),
        format!("odd/percent%20literal%{i}"),
        format!("odd/amp&and=eq;{i}?q#frag"),
        format!("odd/quote\"comma,{i}'s"),
        format!("odd/unicode/caf\u{e9}-\u{65e5}\u{672c}-\u{1F600}-{i}"),
        format!("odd/tab\tkey {i}"),
        format!("odd/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/{i}"),
        {
            // 1,024 bytes in segments a filesystem-backed server can store (at most 255 each).
            let mut key = format!("odd/long/{i}/");
            while key.len() < 1024 {
                let segment = (1024 - key.len()).min(200);
                key.push_str(&"x".repeat(segment));
                if key.len() < 1023 {
                    key.push('/');
                }
            }
            key
        },
        format!("odd/newline\nin key {i}"),
    ];
    let choices = if spec.newline_keys {
        odd.len()
    } else {
        odd.len() - 1
    };
    let pick = ((i / 50) as usize) % choices;
    if pick == 8 && !spec.long_keys {
        return format!("odd/short-instead-of-long/{i}");
    }
    odd[pick].clone()
}

fn storage_class(h: u64) -> (&'static str, Option<&'static str>) {
    match h % 100 {
        0..=69 => ("STANDARD", None),
        70..=77 => ("STANDARD_IA", None),
        78..=82 => ("INTELLIGENT_TIERING", Some("FREQUENT_ACCESS")),
        83 => ("INTELLIGENT_TIERING", Some("ARCHIVE_ACCESS")),
        84..=88 => ("GLACIER_IR", None),
        89..=93 => ("GLACIER", None),
        94..=97 => ("DEEP_ARCHIVE", None),
        _ => ("ONEZONE_IA", None),
    }
}

fn size_for(spec: &InventorySpec, h: u64) -> u64 {
    if h % 100 < 4 {
        return 0;
    }
    let size = (16u64 << ((h >> 8) % 13)) + (h >> 20) % 1000;
    size.min(spec.max_object_size)
}

fn timestamp(h: u64) -> String {
    let day = 1 + h % 28;
    let (hour, minute, second) = ((h >> 8) % 24, (h >> 16) % 60, (h >> 24) % 60);
    format!(
        "2025-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.000Z",
        1 + (h >> 32) % 12
    )
}

fn version_id(seed: u64, i: u64, n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    let mut h = mix(seed ^ 0x5555, i * 8 + n);
    (0..32)
        .map(|k| {
            if k % 10 == 9 {
                h = mix(h, k);
            }
            ALPHABET[(h >> ((k % 10) * 6)) as usize & 63] as char
        })
        .collect()
}

/// Deterministic object contents for a key.
pub fn body_for(key: &str, size: u64) -> Vec<u8> {
    let h = mix(
        7,
        key.bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    (0..size)
        .map(|k| b"abcdefghijklmnopqrstuvwxyz0123456789"[((h.wrapping_add(k * 7)) % 36) as usize])
        .collect()
}

fn fake_etag(h: u64) -> String {
    format!("{:016x}{:016x}", mix(h, 1), mix(h, 2))
}

/// Every row of the report, in inventory order (a key's versions together, latest first).
pub fn rows(spec: &InventorySpec, real_etags: bool) -> impl Iterator<Item = Row> + '_ {
    (0..spec.objects).flat_map(move |i| {
        let h = mix(spec.seed, i);
        let key = key_for(spec, i);
        let (class, tier) = storage_class(h >> 3);
        let size = size_for(spec, h >> 11);
        let etag = if real_etags {
            hex::encode(Md5::digest(body_for(&key, size)))
        } else {
            fake_etag(h)
        };
        let mut out = Vec::with_capacity(3);
        let current = Row {
            key: key.clone(),
            version_id: spec.versioned.then(|| version_id(spec.seed, i, 0)),
            is_latest: true,
            is_delete_marker: false,
            size,
            last_modified: timestamp(h),
            etag,
            storage_class: class,
            access_tier: tier,
        };
        if spec.versioned && h.is_multiple_of(33) {
            out.push(Row {
                version_id: Some(version_id(spec.seed, i, 2)),
                is_delete_marker: true,
                size: 0,
                etag: String::new(),
                storage_class: "",
                access_tier: None,
                ..current.clone()
            });
            out.push(Row {
                is_latest: false,
                ..current
            });
        } else if spec.versioned && h % 10 == 1 {
            let old_size = size_for(spec, h >> 17);
            out.push(current.clone());
            out.push(Row {
                version_id: Some(version_id(spec.seed, i, 1)),
                is_latest: false,
                size: old_size,
                etag: fake_etag(h ^ 1),
                ..current
            });
        } else {
            out.push(current);
        }
        out
    })
}

pub const VERSIONED_SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm";
pub const CURRENT_SCHEMA: &str = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm";

/// URL-encodes a key as S3 Inventory does in CSV reports (form style; `/` kept).
pub fn inventory_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One CSV row, every field quoted, as S3 writes it.
pub fn csv_line(spec: &InventorySpec, row: &Row, out: &mut Vec<u8>) {
    let size = if row.is_delete_marker {
        String::new()
    } else {
        row.size.to_string()
    };
    let flag = |b: bool| if b { "true" } else { "false" };
    let tier = row.access_tier.unwrap_or("");
    let encryption = if row.is_delete_marker { "" } else { "SSE-S3" };
    let fields: Vec<&str> = if spec.versioned {
        vec![
            &spec.source_bucket,
            "",
            row.version_id.as_deref().unwrap_or(""),
            flag(row.is_latest),
            flag(row.is_delete_marker),
            &size,
            &row.last_modified,
            &row.etag,
            row.storage_class,
            if row.is_delete_marker { "" } else { "false" },
            "",
            encryption,
            "",
            "",
            "",
            tier,
            "DISABLED",
            "",
        ]
    } else {
        vec![
            &spec.source_bucket,
            "",
            &size,
            &row.last_modified,
            &row.etag,
            row.storage_class,
            "false",
            "",
            encryption,
            "",
            "",
            "",
            tier,
            "DISABLED",
            "",
        ]
    };
    let key = inventory_encode(&row.key);
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(if n == 1 {
            key.as_bytes()
        } else {
            field.as_bytes()
        });
        out.push(b'"');
    }
    out.push(b'\n');
}

/// The `fileFormat` of a generated report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Csv,
    Orc,
    Parquet,
}

impl DataFormat {
    pub const ALL: [DataFormat; 3] = [DataFormat::Csv, DataFormat::Orc, DataFormat::Parquet];

    /// As manifest.json's `fileFormat` spells it.
    pub fn manifest_name(self) -> &'static str {
        match self {
            DataFormat::Csv => "CSV",
            DataFormat::Orc => "ORC",
            DataFormat::Parquet => "Parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            DataFormat::Csv => "csv.gz",
            DataFormat::Orc => "orc",
            DataFormat::Parquet => "parquet",
        }
    }

    /// Parses `csv`, `orc` or `parquet`.
    pub fn parse(name: &str) -> Option<Self> {
        DataFormat::ALL
            .into_iter()
            .find(|f| f.manifest_name().eq_ignore_ascii_case(name))
    }
}

/// A generated report in memory: its data files and the counts to expect.
pub struct GeneratedReport {
    pub format: DataFormat,
    pub data_files: Vec<Vec<u8>>,
    pub expected: Expected,
}

/// Builds the report's data files in `format`.
pub fn report(spec: &InventorySpec, format: DataFormat, real_etags: bool) -> GeneratedReport {
    match format {
        DataFormat::Csv => csv_report(spec, real_etags),
        columnar => crate::columnar::columnar_report(spec, columnar, real_etags),
    }
}

/// Rows per data file when the report's rows are split over `spec.data_files` files.
pub(crate) fn rows_per_file(spec: &InventorySpec) -> u64 {
    let total_rows: u64 = rows(spec, false).count() as u64;
    total_rows.div_ceil(spec.data_files.max(1) as u64).max(1)
}

/// Builds the gzipped CSV data files.
pub fn csv_report(spec: &InventorySpec, real_etags: bool) -> GeneratedReport {
    csv_report_of(spec, rows(spec, real_etags), rows_per_file(spec))
}

/// The gzipped CSV data files of `rows` (rows of `spec`'s shape, e.g. a later inventory's),
/// `per_file` rows a file.
pub fn csv_report_of(
    spec: &InventorySpec,
    rows: impl Iterator<Item = Row>,
    per_file: u64,
) -> GeneratedReport {
    let mut expected = Expected::default();
    let mut files = Vec::new();
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut line = Vec::with_capacity(2048);
    let mut in_file = 0u64;
    for row in rows {
        expected.count(&row);
        line.clear();
        csv_line(spec, &row, &mut line);
        let _ = encoder.write_all(&line);
        in_file += 1;
        if in_file == per_file {
            let done = std::mem::replace(
                &mut encoder,
                GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            );
            files.push(done.finish().unwrap_or_default());
            in_file = 0;
        }
    }
    if in_file > 0 || files.is_empty() {
        files.push(encoder.finish().unwrap_or_default());
    }
    GeneratedReport {
        format: DataFormat::Csv,
        data_files: files,
        expected,
    }
}

/// manifest.json of a CSV report whose data files are stored at `keys`, in the whitespace
/// style AWS uses.
pub fn manifest_json(
    spec: &InventorySpec,
    destination_bucket: &str,
    keys: &[String],
    files: &[Vec<u8>],
) -> String {
    manifest_json_as(DataFormat::Csv, spec, destination_bucket, keys, files)
}

/// manifest.json of a report in `format`.
pub fn manifest_json_as(
    format: DataFormat,
    spec: &InventorySpec,
    destination_bucket: &str,
    keys: &[String],
    files: &[Vec<u8>],
) -> String {
    manifest_json_created(format, spec, destination_bucket, keys, files, FIRST_CREATED)
}

/// The `creationTimestamp` of generated reports (2025-11-22T01:00Z), in ms since the epoch.
pub const FIRST_CREATED: u64 = 1_763_773_200_000;

/// manifest.json of a report in `format` created at `created` (ms since the epoch).
pub fn manifest_json_created(
    format: DataFormat,
    spec: &InventorySpec,
    destination_bucket: &str,
    keys: &[String],
    files: &[Vec<u8>],
    created: u64,
) -> String {
    let entries: Vec<String> = keys
        .iter()
        .zip(files)
        .map(|(key, data)| {
            format!(
                "{{\n    \"key\" : {},\n    \"size\" : {},\n    \"MD5checksum\" : \"{}\"\n  }}",
                serde_json::Value::String(key.clone()),
                data.len(),
                hex::encode(Md5::digest(data))
            )
        })
        .collect();
    let schema = match format {
        DataFormat::Csv if spec.versioned => VERSIONED_SCHEMA.to_string(),
        DataFormat::Csv => CURRENT_SCHEMA.to_string(),
        columnar => crate::columnar::file_schema(spec, columnar),
    };
    let file_format = format.manifest_name();
    format!(
        "{{\n  \"sourceBucket\" : \"{}\",\n  \"destinationBucket\" : \"arn:aws:s3:::{destination_bucket}\",\n  \"version\" : \"2016-11-30\",\n  \"creationTimestamp\" : \"{created}\",\n  \"fileFormat\" : \"{file_format}\",\n  \"fileSchema\" : \"{schema}\",\n  \"files\" : [ {} ]\n}}\n",
        spec.source_bucket,
        entries.join(", ")
    )
}

/// Where a report was written.
pub struct UploadedReport {
    /// `s3://bucket/…/manifest.json`
    pub manifest_uri: String,
    pub manifest_key: String,
    pub data_keys: Vec<String>,
    pub expected: Expected,
}

/// A CSV report of `spec` (real ETags) uploaded under `inventory/` of its source bucket, and
/// its objects created (`concurrency` PUTs at a time; storage classes only where the server
/// keeps them).
pub async fn csv_report_with_objects(
    client: &aws_sdk_s3::Client,
    spec: &InventorySpec,
    concurrency: usize,
    storage_classes: bool,
) -> UploadedReport {
    let report = csv_report(spec, true);
    let uploaded = upload_report(client, &spec.source_bucket, "inventory/", spec, report).await;
    create_objects(client, spec, concurrency, storage_classes).await;
    uploaded
}

/// Writes a generated report to `bucket` under the layout S3 uses:
/// `<prefix><source>/<config>/data/<n>.csv.gz` and `<prefix><source>/<config>/<date>/manifest.json`
/// (plus manifest.checksum).
pub async fn upload_report(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    spec: &InventorySpec,
    report: GeneratedReport,
) -> UploadedReport {
    let first = "2026-11-22T01-00Z";
    upload_report_dated(client, bucket, prefix, spec, report, first, FIRST_CREATED).await
}

/// [`upload_report`] for the inventory of the date folder `date`, created at `created` (ms
/// since the epoch): another inventory of the same configuration, with data files of its own.
pub async fn upload_report_dated(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    spec: &InventorySpec,
    report: GeneratedReport,
    date: &str,
    created: u64,
) -> UploadedReport {
    let base = format!("{prefix}{}/daily", spec.source_bucket);
    let data_keys: Vec<String> = (0..report.data_files.len())
        .map(|n| {
            format!(
                "{base}/data/{:08x}-{n}.{}",
                mix(spec.seed, 99 ^ created.wrapping_sub(FIRST_CREATED)),
                report.format.extension()
            )
        })
        .collect();
    for (key, data) in data_keys.iter().zip(&report.data_files) {
        crate::put_object(client, bucket, key, data.clone()).await;
    }
    let files = &report.data_files;
    let json = manifest_json_created(report.format, spec, bucket, &data_keys, files, created);
    let manifest_key = format!("{base}/{date}/manifest.json");
    let checksum = format!("{}\n", hex::encode(Md5::digest(json.as_bytes())));
    crate::put_object(
        client,
        bucket,
        &manifest_key.replace(".json", ".checksum"),
        checksum.into_bytes(),
    )
    .await;
    crate::put_object(client, bucket, &manifest_key, json.into_bytes()).await;
    UploadedReport {
        manifest_uri: format!("s3://{bucket}/{manifest_key}"),
        manifest_key,
        data_keys,
        expected: report.expected,
    }
}

/// Puts every current object of an unversioned report into the source bucket, with the
/// contents whose MD5 the report's ETags hold (generate the report with `real_etags`).
/// `storage_classes`: set each object's class as the report says (moto keeps them; the local
/// s3s server refuses any).
pub async fn create_objects(
    client: &aws_sdk_s3::Client,
    spec: &InventorySpec,
    concurrency: usize,
    storage_classes: bool,
) -> u64 {
    use futures::StreamExt;
    assert!(
        !spec.versioned,
        "objects are created for unversioned reports only"
    );
    let puts = futures::stream::iter(rows(spec, false).filter(|r| !r.is_delete_marker)).map(
        |row| async move {
            client
                .put_object()
                .bucket(&spec.source_bucket)
                .key(&row.key)
                .set_storage_class(storage_classes.then(|| row.storage_class.into()))
                .body(body_for(&row.key, row.size).into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {}: {e:?}", row.key));
        },
    );
    let mut count = 0;
    let mut stream = puts.buffer_unordered(concurrency.max(1));
    while stream.next().await.is_some() {
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_the_odd_cases() {
        let spec = InventorySpec::new("src", 1000);
        let keys: Vec<String> = (0..1000).map(|i| key_for(&spec, i)).collect();
        for needle in [" ", "+", "%", "&", "\"", ",", "\u{e9}", "\n", "\t"] {
            assert!(
                keys.iter().any(|k| k.contains(needle)),
                "no key with {needle:?}"
            );
        }
        assert!(keys.iter().any(|k| k.len() == 1024));
    }

    #[test]
    fn versioned_reports_have_delete_markers_and_noncurrent_versions() {
        let spec = InventorySpec {
            versioned: true,
            ..InventorySpec::new("src", 2000)
        };
        let report = csv_report(&spec, false);
        let e = &report.expected;
        assert!(e.delete_markers > 0 && e.noncurrent > e.delete_markers && e.needs_restore > 0);
        assert_eq!(
            e.rows,
            e.selected + e.delete_markers + e.noncurrent + e.needs_restore
        );
    }
}
