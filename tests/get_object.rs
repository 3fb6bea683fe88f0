//! The lean GetObject path next to the SDK's GetObject of the same objects: against the
//! in-process S3 server (odd keys) and moto (versions, tags, encryption, storage classes).

mod common;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use http_body_util::BodyExt;
use s3bundler::error::RemoteFailure;
use s3bundler::get_object::{
    resolve_endpoint, BodyChecksum, Conditions, EndpointSettings, LeanGet, ObjectHead,
};
use s3bundler_testkit::server::LocalS3;

fn lean() -> LeanGet {
    LeanGet::new(
        SharedCredentialsProvider::new(Credentials::new(
            s3bundler_testkit::ACCESS_KEY,
            s3bundler_testkit::SECRET_KEY,
            None,
            None,
            "test",
        )),
        std::time::Duration::from_secs(60),
    )
    .expect("a client")
}

#[tokio::test]
async fn the_lean_get_reads_what_the_sdk_reads_and_classifies_a_missing_key() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = LocalS3::start(dir.path(), 0).expect("the server");
    let client = s3bundler_testkit::s3_client(&server.endpoint);
    client
        .create_bucket()
        .bucket("lean-get")
        .send()
        .await
        .expect("a bucket");
    let keys = ["plain", "a b/ü+%/x~y", "dots/../kept"];
    for (i, key) in keys.iter().enumerate() {
        client
            .put_object()
            .bucket("lean-get")
            .key(*key)
            .content_type("text/plain")
            .metadata("owner", "alice")
            .body(vec![i as u8; 1000 + i].into())
            .send()
            .await
            .expect("a PUT");
    }
    let settings = EndpointSettings {
        region: s3bundler_testkit::REGION.into(),
        endpoint_url: Some(server.endpoint.clone()),
        force_path_style: true,
        ..EndpointSettings::default()
    };
    let endpoint = resolve_endpoint(&settings, "lean-get")
        .await
        .expect("an endpoint");
    let lean = lean();
    for key in keys {
        let sdk = client
            .get_object()
            .bucket("lean-get")
            .key(key)
            .send()
            .await
            .expect("the SDK's GET");
        let (head, body) = lean
            .get(&endpoint, key, Conditions::default())
            .await
            .unwrap_or_else(|e| panic!("the lean GET of {key}: {e}"));
        assert_eq!(head.etag.as_deref(), sdk.e_tag(), "{key}");
        assert_eq!(Some(head.size as i64), sdk.content_length(), "{key}");
        assert_eq!(head.last_modified.as_ref(), sdk.last_modified(), "{key}");
        assert_eq!(head.content_type.as_deref(), sdk.content_type(), "{key}");
        assert_eq!(
            Some(&head.metadata.into_iter().collect()),
            sdk.metadata(),
            "{key}"
        );
        let lean_bytes = body.collect().await.expect("the body").to_bytes();
        let sdk_bytes = sdk
            .body
            .collect()
            .await
            .expect("the SDK's body")
            .into_bytes();
        assert_eq!(lean_bytes, sdk_bytes, "{key}");
    }
    let missing = lean.get(&endpoint, "missing", Conditions::default()).await;
    assert!(
        matches!(missing, Err(RemoteFailure::NotFound)),
        "{:?}",
        missing.err()
    );
}

/// What the SDK's GetObject says of an object, in the lean path's terms.
fn head_of(sdk: &aws_sdk_s3::operation::get_object::GetObjectOutput) -> ObjectHead {
    let checksums = [
        ("crc64nvme", sdk.checksum_crc64_nvme()),
        ("crc32c", sdk.checksum_crc32_c()),
        ("crc32", sdk.checksum_crc32()),
        ("sha1", sdk.checksum_sha1()),
        ("sha256", sdk.checksum_sha256()),
    ];
    ObjectHead {
        size: sdk.content_length().unwrap_or(0) as u64,
        etag: sdk.e_tag().map(str::to_string),
        last_modified: sdk.last_modified().copied(),
        version_id: sdk.version_id().map(str::to_string),
        storage_class: sdk.storage_class().map(|c| c.as_str().to_string()),
        content_type: sdk.content_type().map(str::to_string),
        content_encoding: sdk.content_encoding().map(str::to_string),
        content_language: sdk.content_language().map(str::to_string),
        content_disposition: sdk.content_disposition().map(str::to_string),
        cache_control: sdk.cache_control().map(str::to_string),
        expires: sdk.expires_string().map(str::to_string),
        metadata: sdk
            .metadata()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default(),
        tag_count: sdk.tag_count().unwrap_or(0) as u32,
        sse: sdk.server_side_encryption().map(|s| s.as_str().to_string()),
        sse_customer_algorithm: sdk.sse_customer_algorithm().map(str::to_string),
        checksums: checksums
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), value?.to_string())))
            .collect(),
        checksum_type: sdk.checksum_type().map(|t| t.as_str().to_string()),
    }
}

/// Objects on moto with every header bundle reads (versions, tags, encryption, storage classes,
/// content headers, UTF-8 metadata, checksums), the endpoint settings of moto, and each
/// object's (key, version, size).
async fn objects_with_every_header(
    name: &str,
) -> (
    aws_sdk_s3::Client,
    String,
    EndpointSettings,
    Vec<(String, Option<String>, u64)>,
) {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption, StorageClass};
    let endpoint_url = s3bundler_testkit::moto::endpoint();
    let client = s3bundler_testkit::s3_client(endpoint_url);
    let bucket = s3bundler_testkit::new_bucket(&client, name).await;
    common::enable_versioning(&client, &bucket).await;
    let put = |key: &str, size: usize| {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(vec![size as u8; size].into())
    };
    let mut versions = Vec::new();
    let cases = [
        put("plain", 10),
        put("tagged", 11).tagging("team=a&purpose=b%20c"),
        put("aes", 12).server_side_encryption(ServerSideEncryption::Aes256),
        put("ia", 13).storage_class(StorageClass::StandardIa),
        put("instant", 14).storage_class(StorageClass::GlacierIr),
        put("headers/é ü", 15)
            .content_type("application/x-thing")
            .content_encoding("identity")
            .content_language("fr")
            .content_disposition("attachment; filename=\"x y\"")
            .cache_control("max-age=60")
            .expires(aws_sdk_s3::primitives::DateTime::from_secs(2_000_000_000))
            .metadata("owner", "alice")
            .metadata("Mixed-Case", "v a l")
            .metadata("note", "café"),
        put("crc32c", 16).checksum_algorithm(ChecksumAlgorithm::Crc32C),
        put("sha256", 17).checksum_algorithm(ChecksumAlgorithm::Sha256),
        put("plain", 18),
    ];
    for request in cases {
        let key = request.get_key().clone().unwrap_or_default();
        let size = request
            .get_body()
            .as_ref()
            .map_or(0, |b| b.bytes().map_or(0, <[u8]>::len));
        let output = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        versions.push((key, output.version_id().map(str::to_string), size as u64));
    }
    let settings = EndpointSettings {
        region: s3bundler_testkit::REGION.into(),
        endpoint_url: Some(endpoint_url.to_string()),
        force_path_style: true,
        ..EndpointSettings::default()
    };
    (client, bucket, settings, versions)
}

/// On moto, every header bundle reads (versions, tags, encryption, storage classes, content
/// headers, metadata, checksums) comes out of the lean GET as the SDK's GetObject gives it,
/// and archived, missing and changed objects fail as the SDK path classifies them.
#[tokio::test]
async fn the_lean_get_reads_every_header_the_sdk_reads_on_moto() {
    use aws_sdk_s3::types::{ChecksumMode, StorageClass};
    let (client, bucket, settings, versions) = objects_with_every_header("leanmoto").await;
    let endpoint = resolve_endpoint(&settings, &bucket)
        .await
        .expect("an endpoint");
    let lean = lean();
    for (key, version, _) in &versions {
        let sdk = client
            .get_object()
            .bucket(&bucket)
            .key(key)
            .set_version_id(version.clone())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the SDK's GET of {key}: {e:?}"));
        let conditions = Conditions {
            version_id: version.as_deref(),
            ..Conditions::default()
        };
        let (head, body) = lean
            .get(&endpoint, key, conditions)
            .await
            .unwrap_or_else(|e| panic!("the lean GET of {key}: {e}"));
        assert_eq!(head, head_of(&sdk), "{key} {version:?}");
        let bytes = body.collect().await.expect("the body").to_bytes();
        assert_eq!(bytes.len(), head.size as usize, "{key}");
        if let Some(mut checksum) = BodyChecksum::for_answer(&head) {
            checksum.update(&bytes);
            checksum.verify().unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }
    let (tagged, _) = lean
        .get(&endpoint, "tagged", Conditions::default())
        .await
        .expect("tagged");
    assert_eq!(tagged.tag_count, 2);
    let (old, _) = lean
        .get(
            &endpoint,
            "plain",
            Conditions {
                version_id: versions[0].1.as_deref(),
                ..Conditions::default()
            },
        )
        .await
        .expect("the first version");
    assert_eq!(old.size, 10, "the version asked for, not the latest");

    client
        .put_object()
        .bucket(&bucket)
        .key("archived")
        .body(vec![19; 19].into())
        .storage_class(StorageClass::Glacier)
        .send()
        .await
        .expect("an archived object");
    let failures = [
        ("archived", Conditions::default()),
        (
            "plain",
            Conditions {
                version_id: Some("no-such-version"),
                ..Conditions::default()
            },
        ),
        (
            "plain",
            Conditions {
                if_match: Some("\"0123456789abcdef0123456789abcdef\""),
                ..Conditions::default()
            },
        ),
    ];
    let classes: Vec<_> = futures_util::future::join_all(
        failures
            .iter()
            .map(|(key, conditions)| lean.get(&endpoint, key, *conditions)),
    )
    .await
    .into_iter()
    .map(|answer| answer.err())
    .collect();
    assert!(
        matches!(
            classes.as_slice(),
            [
                Some(RemoteFailure::InvalidObjectState),
                Some(RemoteFailure::NotFound),
                Some(RemoteFailure::PreconditionFailed),
            ]
        ),
        "{classes:?}"
    );
}

/// bundle's reader describes an object the same (every field its index row and pax records
/// keep) and reads the same bytes, whether the lean GET read it or, for a bucket the lean
/// path leaves alone, the SDK's GetObject: both go through `ObjectInfo::from_head`.
#[tokio::test]
async fn the_reader_describes_objects_alike_through_the_lean_get_and_the_sdk() {
    use s3bundler::bundle::object::ObjectReader;
    use s3bundler::get_object::LeanObjects;
    use s3bundler::s3::{WriteSettings, S3};

    let (client, bucket, settings, objects) = objects_with_every_header("leanreader").await;
    let through_sdk = S3::new(client.clone(), WriteSettings::default());
    let through_lean = S3::new(client.clone(), WriteSettings::default())
        .with_lean(LeanObjects::new(lean(), settings));
    for (key, version, size) in &objects {
        let entry = common::entry(&bucket, key, *size, version.as_deref());
        let mut read = Vec::new();
        for s3 in [&through_sdk, &through_lean] {
            let (info, mut reader) = ObjectReader::open(s3, &entry)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"));
            let mut bytes = Vec::new();
            while let Some(chunk) = reader
                .next_chunk()
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"))
            {
                bytes.extend_from_slice(&chunk);
            }
            read.push((info, bytes, reader.md5_hex()));
        }
        assert_eq!(read[0], read[1], "{key} {version:?}: SDK, then lean");
    }
    let tagged = ObjectReader::open(&through_sdk, &common::entry(&bucket, "tagged", 11, None))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    assert_eq!(tagged.tags.len(), 2, "{tagged:?}");
}
