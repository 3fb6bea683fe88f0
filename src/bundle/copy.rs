//! Objects too big for an archive are copied server-side to `bigobjects/`, keeping content
//! headers, user metadata and tags, with their index row in a `.metadata` object beside them.
//! Up to the multipart threshold (5 GiB, S3's CopyObject limit) one CopyObject does it; above,
//! UploadPartCopy ranges of a multipart upload whose headers, metadata and tags are set
//! explicitly (a multipart copy does not carry them over by itself).

use std::collections::BTreeMap;

use aws_sdk_s3::types::{CompletedPart, MetadataDirective, StorageClass, TaggingDirective};
use tracing::{debug, info};

use super::commit::{complete_once, put_once, Identity};
use super::object::{check_size, entry_uri, fetch_tags, object_head, ObjectInfo, ReadFailure};
use super::upload::{abort_upload, part_size_for};
use crate::archive::layout::{big_object_key, CopyOf};
use crate::archive::records::{DlqReason, IndexRow, IndexWriter};
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::ManifestEntry;
use crate::retry::retrying;
use crate::s3::{
    copy_source, failure, with_object_headers, Learn, ObjectHead, ObjectHeaders, Put, S3,
};
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
    /// When this attempt started (seconds since the epoch): a multipart copy to the same
    /// target started before it belongs to an attempt that stopped.
    pub attempt_started: i64,
}

/// HeadObject and GetObjectTagging: what the copy must keep. A 404 is explained by a GET
/// too: NoSuchBucket fails the manifest, where NoSuchKey is one row.
async fn describe(s3: &S3, entry: &ManifestEntry<'_>) -> Result<ObjectInfo, ReadFailure> {
    let uri = entry_uri(entry);
    let version_id = entry.version_id.as_deref().map(str::to_string);
    let head = s3
        .head_once(&uri, version_id.as_deref(), Learn::NotFoundToo)
        .await
        .map_err(|f| ReadFailure::from_remote_for(f, &uri))?;
    let mut info = ObjectInfo::from_head(&object_head!(head), entry, &version_id);
    check_size(&info, entry)?;
    info.tags = fetch_tags(s3, &uri, info.version_id.as_deref()).await?;
    Ok(info)
}

/// User metadata of a big-object copy (and of its `.metadata`): the source version and ETag
/// it holds, so that `verify` can prove it, and a second writer recognises a copy of the same
/// contents as its own.
pub const SOURCE_ETAG_METADATA: &str = "s3bundler-source-etag";
pub const SOURCE_VERSION_METADATA: &str = "s3bundler-source-version-id";
/// S3's limit on user metadata (keys and values, UTF-8 bytes).
const MAX_USER_METADATA: usize = 2048;

/// The source contents a copy holds: its identity as a write-once record.
fn source_identity(info: &ObjectInfo) -> Identity {
    let mut entries = vec![(SOURCE_ETAG_METADATA.to_string(), info.etag.clone())];
    if let Some(version) = &info.version_id {
        entries.push((SOURCE_VERSION_METADATA.to_string(), version.clone()));
    }
    Identity::new(entries)
}

/// The copy's content headers, user metadata and tags: the source's, with the source identity
/// added when S3's metadata limit leaves room for it (the `.metadata` beside the copy records
/// it either way).
fn copy_headers(info: &ObjectInfo, identity: &Identity) -> ObjectHeaders {
    let with_identity: BTreeMap<String, String> = info
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(identity.entries())
        .collect();
    let size: usize = with_identity.iter().map(|(k, v)| k.len() + v.len()).sum();
    let metadata = if size <= MAX_USER_METADATA {
        with_identity
    } else {
        info.metadata.clone()
    };
    ObjectHeaders {
        content_type: info.content_type.clone(),
        content_encoding: info.content_encoding.clone(),
        content_language: info.content_language.clone(),
        content_disposition: info.content_disposition.clone(),
        cache_control: info.cache_control.clone(),
        expires: info.expires.as_deref().and_then(|e| {
            aws_sdk_s3::primitives::DateTime::from_str(
                e,
                aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
            )
            .ok()
        }),
        metadata,
        tags: info.tags.clone(),
    }
}

/// Copies one big object and writes its `.metadata`; returns its index row. The copy is keyed
/// by the version (or ETag) the manifest names and written once: a copy of the same contents
/// already there (an earlier attempt's, another manifest's) is kept as it is.
pub async fn copy_big_object(
    s3: &S3,
    entry: &ManifestEntry<'_>,
    settings: &CopySettings,
) -> Result<IndexRow, ReadFailure> {
    let source = entry_uri(entry);
    let info = describe(s3, entry).await?;
    let of = CopyOf::of(entry.version_id.as_deref(), entry.etag.as_deref());
    if let CopyOf::Etag(etag) = of {
        if !etag.eq_ignore_ascii_case(&info.etag) {
            return Err(ReadFailure::Dlq(
                DlqReason::Changed,
                format!(
                    "the object's ETag is {}, the manifest says {etag}: it changed since the \
                     inventory",
                    info.etag
                ),
            ));
        }
    }
    let target = S3Uri::new(
        settings.bucket.clone(),
        big_object_key(&settings.prefix, &source.bucket, &source.key, of),
    );
    let identity = source_identity(&info);
    let job = Job {
        source: &source,
        info: &info,
        target: &target,
        identity: &identity,
    };
    let existing = s3
        .head(&target)
        .await
        .map_err(|f| ReadFailure::Fatal(Error::reading("HeadObject", target.to_string(), f)))?;
    match existing {
        Some(head) if identity.is_on(&head.metadata) || same_bytes(&head, &info) => {
            debug!(object = %source, "{target} already holds this version");
        }
        Some(head) => {
            return Err(ReadFailure::Dlq(
                DlqReason::Changed,
                format!(
                    "{target} already holds other contents of this key (ETag {}), and copies \
                     are never replaced: bundle it from a manifest that names its version or \
                     ETag (group writes both)",
                    head.etag.as_deref().unwrap_or("none").trim_matches('"')
                ),
            ))
        }
        None if info.size > settings.multipart_threshold => {
            multipart_copy(s3, &job, settings).await?
        }
        None => copy_whole(s3, &job, settings).await?,
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
    let mut put = Put::new("text/csv");
    put.metadata = identity.entries().collect();
    put_once(s3, &metadata_uri, metadata.finish().into(), put, &identity)
        .await
        .map_err(ReadFailure::Fatal)?;
    Ok(row)
}

/// A copy written before copies carried their source's identity: the same bytes if it has the
/// source's size and plain MD5.
fn same_bytes(head: &ObjectHead, info: &ObjectInfo) -> bool {
    info.md5_checkable()
        && head.size == info.size
        && head.plain_md5().as_deref() == Some(info.etag.to_ascii_lowercase().as_str())
}

/// One copy: of which source contents, to where, and the identity the copy carries.
struct Job<'a> {
    source: &'a S3Uri,
    info: &'a ObjectInfo,
    target: &'a S3Uri,
    identity: &'a Identity,
}

/// One CopyObject (up to 5 GiB), with the source's headers and the source identity; tags are
/// copied by S3. S3 has no If-None-Match on CopyObject: the target was found empty just
/// before, and any writer that races this one writes the same version's bytes there.
async fn copy_whole(s3: &S3, job: &Job<'_>, settings: &CopySettings) -> Result<(), ReadFailure> {
    let (source, info, target) = (job.source, job.info, job.target);
    let headers = ObjectHeaders {
        tags: BTreeMap::new(),
        ..copy_headers(info, job.identity)
    };
    retrying(s3.settings().retry, target, || {
        let request = s3
            .client()
            .copy_object()
            .copy_source(copy_source(source, info.version_id.as_deref()))
            .copy_source_if_match(format!("\"{}\"", info.etag))
            .bucket(&target.bucket)
            .key(&target.key)
            .metadata_directive(MetadataDirective::Replace)
            .tagging_directive(TaggingDirective::Copy)
            .set_storage_class(settings.storage_class.clone())
            .set_expected_source_bucket_owner(s3.settings().expected_bucket_owner.clone());
        with_object_headers!(request, &headers, s3.settings())
            .send()
            .map_err(failure)
    })
    .await
    .map_err(|f| copy_failure(f, source, target))?;
    Ok(())
}

/// What a failed copy request means, after its retries. S3 kept failing: a `Retry` row. A
/// denial: the object's or its bucket's (`access` asks). What S3 says of the source (changed,
/// gone, archived since the inventory, its KMS or SSE-C key, the caller's credentials or clock):
/// as a GET of it would mean. Anything else may be the target's (the archive bucket cannot be
/// written): the whole manifest's.
fn copy_failure(failure: RemoteFailure, source: &S3Uri, target: &S3Uri) -> ReadFailure {
    match failure {
        RemoteFailure::AccessDenied => {
            ReadFailure::Denied(format!("copying it to {target} was denied"))
        }
        RemoteFailure::Throttled(detail) | RemoteFailure::Transient(detail) => ReadFailure::Dlq(
            DlqReason::Retry,
            format!("copying it to {target}: {detail}"),
        ),
        other @ (RemoteFailure::Permanent(_) | RemoteFailure::Bucket(_)) => {
            ReadFailure::Fatal(Error::writing("CopyObject", target.to_string(), other))
        }
        of_source => ReadFailure::from_remote_for(of_source, source),
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
    job: &Job<'_>,
    settings: &CopySettings,
) -> Result<(), ReadFailure> {
    let (info, target) = (job.info, job.target);
    let fatal = |operation: &'static str, failure: RemoteFailure| {
        ReadFailure::Fatal(Error::writing(operation, target.to_string(), failure))
    };
    let headers = copy_headers(info, job.identity);
    abort_uploads_at(
        s3,
        target,
        settings.attempt_started,
        "left by an earlier attempt",
    )
    .await;
    settings.open_uploads.creating(target);
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
    let outcome = copy_parts(s3, job, &upload_id).await;
    match &outcome {
        Ok(()) => {
            settings.open_uploads.closed(&upload_id);
            // Any upload still open at the target is a stray: one whose CreateMultipartUpload
            // answer was lost, so that the retry created another. It would hold its parts
            // until the bucket's lifecycle rule.
            abort_uploads_at(s3, target, i64::MAX, "whose creation answer was lost").await;
        }
        Err(_) => {
            abort_upload(s3, target, &upload_id).await;
            settings.open_uploads.closed(&upload_id);
        }
    }
    outcome
}

/// Aborts the uploads at `target` started before `before` (seconds since the epoch); a
/// failure to list them is only logged: the bucket's lifecycle rule is the backstop.
async fn abort_uploads_at(s3: &S3, target: &S3Uri, before: i64, whose: &str) {
    match s3.abort_uploads_before(&[target], before).await {
        Ok(0) => {}
        Ok(n) => info!("aborted {n} incomplete copy upload(s) of {target} {whose}"),
        Err(failure) => debug!("could not list the uploads of {target}: {failure}"),
    }
}

/// UploadPartCopy of every range, then CompleteMultipartUpload, only where no object is yet:
/// one that carries the same source identity is as good (a racing writer's copy).
async fn copy_parts(s3: &S3, job: &Job<'_>, upload_id: &str) -> Result<(), ReadFailure> {
    let (source, info, target) = (job.source, job.info, job.target);
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
        .map_err(|f| match f {
            // The upload was aborted under it (a lifecycle rule, or the start of another
            // attempt at the same version's copy): the copy is tried again whole, and finds
            // that attempt's copy if it completed. A source that is gone fails its HEAD then.
            RemoteFailure::NotFound => ReadFailure::Transient(RemoteFailure::Transient(format!(
                "the multipart copy to {target} was aborted"
            ))),
            other => copy_failure(other, source, target),
        })?;
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
    complete_once(s3, target, upload_id, parts, job.identity)
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
