//! Objects too big for an archive are copied server-side to `bigobjects/`, keeping content
//! headers, user metadata and tags, with their index row in a `.metadata` object beside them.
//! Up to the multipart threshold (5 GiB, S3's CopyObject limit) one CopyObject does it; above,
//! UploadPartCopy ranges of a multipart upload whose headers, metadata and tags are set
//! explicitly (a multipart copy does not carry them over by itself).

use aws_sdk_s3::types::{CompletedPart, MetadataDirective, StorageClass, TaggingDirective};

use super::object::{
    check_size, entry_uri, fetch_tags, object_head, send_for_object, ObjectInfo, ReadFailure,
};
use super::upload::{abort_upload, complete_upload, part_size_for};
use crate::archive::layout::big_object_key;
use crate::archive::records::{DlqReason, IndexRow, IndexWriter};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::ManifestEntry;
use crate::retry::retrying;
use crate::s3::{copy_source, failure, with_object_headers, ObjectHeaders, S3};
use crate::s3uri::S3Uri;
use futures_util::TryFutureExt;

/// Where and how big objects are copied.
#[derive(Debug, Clone)]
pub struct CopySettings {
    pub bucket: String,
    pub prefix: String,
    pub storage_class: Option<StorageClass>,
    /// Objects larger than this are copied with UploadPartCopy.
    pub multipart_threshold: u64,
    /// Multipart copies under way, so that a stopped manifest aborts them.
    pub open_uploads: super::OpenUploads,
}

/// HeadObject and GetObjectTagging: what the copy must keep.
async fn describe(s3: &S3, entry: &ManifestEntry<'_>) -> Result<ObjectInfo, ReadFailure> {
    let uri = entry_uri(entry);
    let version_id = entry.version_id.as_deref().map(str::to_string);
    let head = send_for_object!(s3.client().head_object(), s3, uri, version_id)?;
    let mut info = ObjectInfo::from_head(&object_head!(head), entry, &version_id);
    check_size(&info, entry)?;
    info.tags = fetch_tags(s3, &uri, info.version_id.as_deref()).await?;
    Ok(info)
}

/// Copies one big object and writes its `.metadata`; returns its index row.
pub async fn copy_big_object(
    s3: &S3,
    entry: &ManifestEntry<'_>,
    settings: &CopySettings,
) -> Result<IndexRow, ReadFailure> {
    let source = entry_uri(entry);
    let info = describe(s3, entry).await?;
    let target = S3Uri::new(
        settings.bucket.clone(),
        big_object_key(&settings.prefix, &source.bucket, &source.key),
    );
    if info.size > settings.multipart_threshold {
        multipart_copy(s3, &source, &info, &target, settings).await?;
    } else {
        retrying(s3.settings().retry, &target, || {
            s3.client()
                .copy_object()
                .copy_source(copy_source(&source, info.version_id.as_deref()))
                .copy_source_if_match(format!("\"{}\"", info.etag))
                .bucket(&target.bucket)
                .key(&target.key)
                .metadata_directive(MetadataDirective::Copy)
                .tagging_directive(TaggingDirective::Copy)
                .set_storage_class(settings.storage_class.clone())
                .set_server_side_encryption(s3.settings().encryption())
                .set_ssekms_key_id(s3.settings().sse_kms_key_id.clone())
                .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
                .set_expected_source_bucket_owner(s3.settings().expected_bucket_owner.clone())
                .send()
                .map_err(failure)
        })
        .await
        .map_err(|f| copy_failure(f, &target))?;
    }
    let row = IndexRow {
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        version_id: info.version_id.clone(),
        size: info.size,
        last_modified: info.last_modified.clone(),
        md5: if info.md5_checkable() {
            info.etag.to_ascii_lowercase()
        } else {
            String::new()
        },
        etag: info.etag.clone(),
        storage_class: info.storage_class.clone(),
        content_type: info.content_type.clone().unwrap_or_default(),
        metadata: info.metadata.clone(),
        tags: info.tags.clone(),
        member: target.key.clone(),
        header_offset: None,
        data_offset: None,
    };
    let mut metadata = IndexWriter::default();
    metadata.push(&row);
    let metadata_uri = S3Uri::new(target.bucket.clone(), format!("{}.metadata", target.key));
    s3.put_bytes(&metadata_uri, metadata.finish().into(), "text/csv")
        .await
        .map_err(|f| {
            ReadFailure::Fatal(Error::writing("PutObject", metadata_uri.to_string(), f))
        })?;
    Ok(row)
}

/// What a failed copy request means, after its retries. The source changed or vanished, was
/// denied, or kept failing: the object's, a DLQ row. Refused credentials or anything else
/// (the archive bucket cannot be written): the whole manifest's.
fn copy_failure(failure: RemoteFailure, target: &S3Uri) -> ReadFailure {
    match failure {
        RemoteFailure::PreconditionFailed => ReadFailure::ChangedDuringRead,
        RemoteFailure::NotFound => {
            ReadFailure::Dlq(DlqReason::NoSuchKey, "the object no longer exists".into())
        }
        RemoteFailure::AccessDenied => ReadFailure::Dlq(
            DlqReason::AccessDenied,
            format!("copying it to {target} was denied"),
        ),
        RemoteFailure::Throttled(detail) | RemoteFailure::Transient(detail) => ReadFailure::Dlq(
            DlqReason::Retry,
            format!("copying it to {target}: {detail}"),
        ),
        other => ReadFailure::Fatal(Error::writing("CopyObject", target.to_string(), other)),
    }
}

/// The byte ranges of a multipart copy.
pub fn copy_ranges(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    let part_size = part_size.max(1);
    (0..size.div_ceil(part_size))
        .map(|n| (n * part_size, ((n + 1) * part_size).min(size) - 1))
        .collect()
}

async fn multipart_copy(
    s3: &S3,
    source: &S3Uri,
    info: &ObjectInfo,
    target: &S3Uri,
    settings: &CopySettings,
) -> Result<(), ReadFailure> {
    let fatal = |operation: &'static str, failure: RemoteFailure| {
        ReadFailure::Fatal(Error::writing(operation, target.to_string(), failure))
    };
    let headers = ObjectHeaders {
        content_type: info.content_type.clone(),
        content_encoding: info.content_encoding.clone(),
        content_language: info.content_language.clone(),
        content_disposition: info.content_disposition.clone(),
        cache_control: info.cache_control.clone(),
        expires: None,
        metadata: info.metadata.clone(),
        tags: info.tags.clone(),
    };
    let created = retrying(s3.settings().retry, target, || {
        let request = s3
            .client()
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .set_storage_class(settings.storage_class.clone());
        with_object_headers!(request, &headers, s3.settings())
            .send()
            .map_err(failure)
    })
    .await
    .map_err(|f| fatal("CreateMultipartUpload", f))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    settings.open_uploads.opened(target, &upload_id);
    let outcome = copy_parts(s3, source, info, target, &upload_id).await;
    match &outcome {
        Ok(()) => settings.open_uploads.closed(&upload_id),
        Err(_) => {
            abort_upload(s3, target, &upload_id).await;
            settings.open_uploads.closed(&upload_id);
        }
    }
    outcome
}

/// UploadPartCopy of every range, then CompleteMultipartUpload.
async fn copy_parts(
    s3: &S3,
    source: &S3Uri,
    info: &ObjectInfo,
    target: &S3Uri,
    upload_id: &str,
) -> Result<(), ReadFailure> {
    let part_size = part_size_for(info.size, 512 << 20);
    let mut parts = Vec::new();
    for (n, (first, last)) in copy_ranges(info.size, part_size).into_iter().enumerate() {
        let number = n as i32 + 1;
        let output = retrying(
            s3.settings().retry,
            format!("part {number} of {target}"),
            || {
                s3.client()
                    .upload_part_copy()
                    .bucket(&target.bucket)
                    .key(&target.key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(copy_source(source, info.version_id.as_deref()))
                    .copy_source_if_match(format!("\"{}\"", info.etag))
                    .copy_source_range(format!("bytes={first}-{last}"))
                    .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
                    .set_expected_source_bucket_owner(s3.settings().expected_bucket_owner.clone())
                    .send()
                    .map_err(failure)
            },
        )
        .await
        .map_err(|f| copy_failure(f, target))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(
                    output
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .map(str::to_string),
                )
                .build(),
        );
    }
    complete_upload(s3, target, upload_id, parts)
        .await
        .map_err(ReadFailure::Fatal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::s3::tagging_header;

    #[test]
    fn ranges_cover_every_byte_once() {
        assert_eq!(copy_ranges(10, 4), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(copy_ranges(8, 4), vec![(0, 3), (4, 7)]);
        assert!(copy_ranges(0, 4).is_empty());
    }

    #[test]
    fn copy_sources_and_tagging_are_encoded() {
        let tags = BTreeMap::from([
            ("a b".to_string(), "x&y".to_string()),
            ("k".to_string(), "v".to_string()),
        ]);
        assert_eq!(tagging_header(&tags).as_deref(), Some("a%20b=x%26y&k=v"));
        assert_eq!(tagging_header(&BTreeMap::new()), None);
    }
}
