//! Test objects: sources with content headers, metadata, tags and multipart uploads, put
//! into a bucket, and bundle manifests listing them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, StorageClass,
    VersioningConfiguration,
};
use s3bundler::manifest::{ManifestEntry, ManifestWriter};

use s3bundler_testkit::generate::{
    body_for, csv_report, rows, upload_report, InventorySpec, UploadedReport,
};
use s3bundler_testkit::server::LocalS3;

use super::{new_bucket, put_object, s3_client};

/// One object of a test, as put into the source bucket.
#[derive(Clone, Default)]
pub struct Source {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: Option<&'static str>,
    pub cache_control: Option<&'static str>,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Uploaded in parts of this size (ETag `-N`).
    pub multipart: Option<usize>,
    pub storage_class: Option<&'static str>,
}

/// An object with content headers, user metadata (with `=` and `%`) and tags.
pub fn with_metadata(content_type: &'static str) -> Source {
    Source {
        key: "meta/with metadata.txt".into(),
        body: b"hello metadata".to_vec(),
        content_type: Some(content_type),
        cache_control: Some("max-age=60"),
        metadata: BTreeMap::from([
            ("owner".into(), "ops".into()),
            ("note".into(), "a=b%c".into()),
        ]),
        tags: BTreeMap::from([("team".into(), "data".into()), ("a=b".into(), "x y".into())]),
        ..Source::default()
    }
}

/// Turns on versioning.
pub async fn enable_versioning(client: &aws_sdk_s3::Client, bucket: &str) {
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("versioning on {bucket}: {e:?}"));
}

pub fn body(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Puts an object; returns its version ID (versioned buckets).
pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, source: &Source) -> Option<String> {
    let tagging = (!source.tags.is_empty()).then(|| {
        source
            .tags
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    let metadata = Some(source.metadata.clone().into_iter().collect());
    if let Some(part_size) = source.multipart {
        let created = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&source.key)
            .set_content_type(source.content_type.map(str::to_string))
            .set_metadata(metadata)
            .set_tagging(tagging)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let upload_id = created.upload_id().unwrap_or_default();
        let mut parts = Vec::new();
        for (n, chunk) in source.body.chunks(part_size).enumerate() {
            let number = n as i32 + 1;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(&source.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(chunk.to_vec().into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let done = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(&source.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        return done.version_id().map(str::to_string);
    }
    let out = client
        .put_object()
        .bucket(bucket)
        .key(&source.key)
        .body(source.body.clone().into())
        .set_content_type(source.content_type.map(str::to_string))
        .set_cache_control(source.cache_control.map(str::to_string))
        .set_metadata(metadata)
        .set_tagging(tagging)
        .set_storage_class(source.storage_class.map(StorageClass::from))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {}: {e:?}", source.key));
    out.version_id().map(str::to_string)
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn entry(
    bucket: &str,
    key: &str,
    size: u64,
    version_id: Option<&str>,
) -> ManifestEntry<'static> {
    ManifestEntry {
        bucket: Cow::Owned(bucket.to_string()),
        key: Cow::Owned(key.to_string()),
        size,
        version_id: version_id.map(|v| Cow::Owned(v.to_string())),
        etag: None,
        last_modified: None,
        storage_class: None,
    }
}

pub async fn write_manifest(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    entries: &[ManifestEntry<'_>],
) -> String {
    let mut writer = ManifestWriter::default();
    for e in entries {
        writer.push(e);
    }
    put_object(client, bucket, key, writer.finish()).await;
    format!("s3://{bucket}/{key}")
}

/// An inventory of `objects` objects of at most `max_size` bytes on the local server, every
/// selected object written except those whose index is in `missing`.
pub async fn local_inventory(
    name: &str,
    objects: u64,
    max_size: u64,
    missing: &[usize],
) -> (String, UploadedReport) {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, name).await;
    let spec = InventorySpec {
        newline_keys: false,
        long_keys: false,
        max_object_size: max_size,
        data_files: 2,
        ..InventorySpec::new(&bucket, objects)
    };
    for (i, row) in rows(&spec, true)
        .filter(|r| r.selected_by_default())
        .enumerate()
    {
        if !missing.contains(&i) {
            server
                .write_object_file(&bucket, &row.key, &body_for(&row.key, row.size))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let report = upload_report(
        &client,
        &bucket,
        "inventory/",
        &spec,
        csv_report(&spec, true),
    )
    .await;
    (bucket, report)
}

/// `count` objects of `size` bytes under `objects/` in a new bucket of the local server, and
/// their manifest at `m/<name>.0.index`: (client, bucket, manifest URI).
pub async fn local_objects(
    name: &str,
    count: usize,
    size: usize,
) -> (aws_sdk_s3::Client, String, String) {
    let keys: Vec<(String, usize)> = (0..count).map(|i| (format!("objects/{i}"), size)).collect();
    local_keys(name, &keys).await
}

/// Objects of the local server (`sizes` gives each key's size; the bytes are `body(size, n)`
/// for the n-th) in a new bucket, and their manifest at `m/<name>.0.index`, in that order:
/// (client, bucket, manifest URI).
pub async fn local_keys(
    name: &str,
    sizes: &[(String, usize)],
) -> (aws_sdk_s3::Client, String, String) {
    let server = LocalS3::shared();
    let client = s3_client(&server.endpoint);
    let bucket = new_bucket(&client, name).await;
    let mut manifest = ManifestWriter::default();
    for (i, (key, size)) in sizes.iter().enumerate() {
        server
            .write_object_file(&bucket, key, &body(*size, i as u8))
            .unwrap_or_else(|e| panic!("{e}"));
        manifest.push(&entry(&bucket, key, *size as u64, None));
    }
    let key = format!("m/{name}.0.index");
    put_object(&client, &bucket, &key, manifest.finish()).await;
    let manifest = format!("s3://{bucket}/{key}");
    (client, bucket, manifest)
}

/// One version of key `k` in a versioned inventory: its version ID (`None`: the null version
/// written before versioning was enabled), whether it is the latest, its body and modified time.
pub struct Version {
    pub version_id: Option<String>,
    pub latest: bool,
    pub body: Vec<u8>,
    pub modified: &'static str,
}

/// A versioned CSV inventory of `bucket` listing `versions` of key `k` (as put there); returns
/// its manifest.json URI.
pub async fn versioned_inventory(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    versions: &[Version],
) -> String {
    use md5::Digest;
    use s3bundler_testkit::generate::{csv_line, DataFormat, Expected, GeneratedReport, Row};
    use std::io::Write;
    let spec = InventorySpec {
        versioned: true,
        ..InventorySpec::new(bucket, 1)
    };
    let mut csv = Vec::new();
    for version in versions {
        let row = Row {
            key: "k".into(),
            version_id: version.version_id.clone(),
            is_latest: version.latest,
            is_delete_marker: false,
            size: version.body.len() as u64,
            last_modified: version.modified.into(),
            etag: hex::encode(md5::Md5::digest(&version.body)),
            storage_class: "STANDARD",
            access_tier: None,
        };
        csv_line(&spec, &row, &mut csv);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&csv).unwrap_or_else(|e| panic!("{e}"));
    let report = GeneratedReport {
        format: DataFormat::Csv,
        data_files: vec![gz.finish().unwrap_or_else(|e| panic!("{e}"))],
        expected: Expected::default(),
    };
    upload_report(client, bucket, "inventory/", &spec, report)
        .await
        .manifest_uri
}

/// Puts `body` as a new version of `key`; returns its version ID.
pub async fn put_version(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> String {
    s3bundler_testkit::put_object_version(client, bucket, key, body)
        .await
        .unwrap_or_else(|| panic!("{bucket} is not versioned"))
}
