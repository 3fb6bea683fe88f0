//! Reading one source object for an archive: a GET pinned to the manifest's version, the size
//! check, tags when the object has any, an MD5 computed while the bytes stream, and a body cut
//! mid-stream resumed with a range GET pinned to the same object (If-Match on its ETag), so
//! that partial bytes never reach the archive. A body is resumed as long as it makes progress,
//! and given up once it has made none for `--retry-for`, as a failing small object is.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures_util::TryFutureExt;
use md5::{Digest, Md5};

use crate::archive::records::DlqReason;
use crate::error::{Error, RemoteFailure};
use crate::manifest::ManifestEntry;
use crate::retry::{retrying, Retrier};
use crate::s3::{error_chain, failure, is_plain_md5, S3};
use crate::s3uri::S3Uri;

/// What S3 says about an object, as the index and the pax records keep it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    pub version_id: Option<String>,
    /// Without quotes.
    pub etag: String,
    /// RFC 3339 UTC.
    pub last_modified: String,
    /// Seconds since the epoch, for the tar header.
    pub mtime: u64,
    pub size: u64,
    pub storage_class: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// SSE-KMS, DSSE-KMS or SSE-C: the ETag is then not the MD5 of the bytes.
    pub opaque_etag: bool,
}

impl ObjectInfo {
    /// The description an answer's headers give (a lean GET's, or the SDK's through
    /// `object_head!`); tags come separately.
    pub fn from_head(
        head: &crate::get_object::ObjectHead,
        entry: &ManifestEntry<'_>,
        requested_version: &Option<String>,
    ) -> Self {
        ObjectInfo {
            version_id: head
                .version_id
                .clone()
                .or_else(|| requested_version.clone()),
            etag: head
                .etag
                .as_deref()
                .unwrap_or("")
                .trim_matches('"')
                .to_string(),
            last_modified: head
                .last_modified
                .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok())
                .unwrap_or_default(),
            mtime: head
                .last_modified
                .map_or(0, |t| u64::try_from(t.secs()).unwrap_or(0)),
            size: head.size,
            storage_class: head
                .storage_class
                .clone()
                .or_else(|| entry.storage_class.as_deref().map(str::to_string))
                .unwrap_or_else(|| "STANDARD".to_string()),
            content_type: head.content_type.clone(),
            content_encoding: head.content_encoding.clone(),
            content_language: head.content_language.clone(),
            content_disposition: head.content_disposition.clone(),
            cache_control: head.cache_control.clone(),
            expires: head.expires.clone(),
            metadata: head.metadata.clone(),
            tags: BTreeMap::new(),
            opaque_etag: matches!(head.sse.as_deref(), Some("aws:kms" | "aws:kms:dsse"))
                || head.sse_customer_algorithm.is_some(),
        }
    }

    /// True when the ETag is the MD5 of the bytes, so the computed MD5 must equal it.
    pub fn md5_checkable(&self) -> bool {
        !self.opaque_etag && is_plain_md5(&self.etag)
    }

    /// The pax attributes (`user.s3.<field>`) that let the archive alone restore the object.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let mut out = vec![("etag".to_string(), self.etag.clone())];
        let optional = [
            ("version-id", &self.version_id),
            ("content-type", &self.content_type),
            ("content-encoding", &self.content_encoding),
            ("content-language", &self.content_language),
            ("content-disposition", &self.content_disposition),
            ("cache-control", &self.cache_control),
            ("expires", &self.expires),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_string(), value.clone()?))),
        );
        out.extend(
            self.metadata
                .iter()
                .map(|(k, v)| (format!("meta.{k}"), v.clone())),
        );
        out.extend(
            self.tags
                .iter()
                .map(|(k, v)| (format!("tag.{k}"), v.clone())),
        );
        out
    }
}

/// Why an object could not be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The object goes to the DLQ with this reason and detail.
    Dlq(DlqReason, String),
    /// AccessDenied that does not say whose: the object's (a DLQ row) or the bucket's (the
    /// manifest fails); `bundle::access` asks the bucket.
    Denied(String),
    /// The object changed while it was being read (If-Match failed on a resume).
    ChangedDuringRead,
    /// The bytes did not match a checksum S3 sent with them (the SDK checks the CRC32/SHA
    /// checksums of responses that carry one).
    Corrupt(String),
    /// Throttled, a 5xx answer, a timeout or a cut: worth another try after a pause. Becomes a
    /// `Retry` DLQ row only once the retry policy's time is up.
    Transient(RemoteFailure),
    /// Not the object's fault: the whole manifest fails (bad credentials, for instance).
    Fatal(Error),
}

impl ReadFailure {
    /// Classifies a failure reading the source object `uri`.
    pub fn from_remote_for(failure: RemoteFailure, uri: &S3Uri) -> Self {
        match failure {
            RemoteFailure::NotFound => {
                ReadFailure::Dlq(DlqReason::NoSuchKey, "the object no longer exists".into())
            }
            RemoteFailure::InvalidObjectState => ReadFailure::Dlq(
                DlqReason::Glacier,
                "the object is archived and must be restored first".into(),
            ),
            RemoteFailure::AccessDenied => ReadFailure::Denied("access denied".into()),
            denied @ RemoteFailure::ObjectDenied(_) => {
                ReadFailure::Dlq(DlqReason::AccessDenied, denied.to_string())
            }
            sse_c @ RemoteFailure::CustomerKey(_) => {
                ReadFailure::Dlq(DlqReason::SseC, sse_c.to_string())
            }
            RemoteFailure::PreconditionFailed => ReadFailure::ChangedDuringRead,
            transient @ (RemoteFailure::Transient(_) | RemoteFailure::Throttled(_)) => {
                ReadFailure::Transient(transient)
            }
            RemoteFailure::Permanent(detail) => ReadFailure::Dlq(DlqReason::Unexpected, detail),
            RemoteFailure::Bucket(detail) => ReadFailure::Fatal(Error::Refused {
                operation: "GetObject",
                location: format!("s3://{}/", uri.bucket),
                detail,
            }),
            caller @ (RemoteFailure::Credentials(_) | RemoteFailure::ClockSkew(_)) => {
                ReadFailure::Fatal(Error::reading("GetObject", uri.to_string(), caller))
            }
        }
    }
}

/// The object a manifest entry names.
pub fn entry_uri(entry: &ManifestEntry<'_>) -> S3Uri {
    S3Uri::new(entry.bucket.as_ref(), entry.key.as_ref())
}

/// What HeadObject and GetObject both say of an object, as the lean GET reads it off the
/// headers, through the accessors the SDK's two outputs share: one mapping,
/// [`ObjectInfo::from_head`], then serves every path. The tag count and checksums are left
/// out: HeadObject has no tag count, and only the lean path checks checksums itself.
macro_rules! object_head {
    ($output:expr) => {{
        let output = &$output;
        crate::get_object::ObjectHead {
            size: output
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            etag: output.e_tag().map(str::to_string),
            last_modified: output.last_modified().copied(),
            version_id: output.version_id().map(str::to_string),
            storage_class: output.storage_class().map(|c| c.as_str().to_string()),
            content_type: output.content_type().map(str::to_string),
            content_encoding: output.content_encoding().map(str::to_string),
            content_language: output.content_language().map(str::to_string),
            content_disposition: output.content_disposition().map(str::to_string),
            cache_control: output.cache_control().map(str::to_string),
            expires: output.expires_string().map(str::to_string),
            metadata: output
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            sse: output
                .server_side_encryption()
                .map(|s| s.as_str().to_string()),
            sse_customer_algorithm: output.sse_customer_algorithm().map(str::to_string),
            ..Default::default()
        }
    }};
}
pub(crate) use object_head;

/// An object whose size is not the manifest's has changed since the inventory.
pub(crate) fn check_size(info: &ObjectInfo, entry: &ManifestEntry<'_>) -> Result<(), ReadFailure> {
    if info.size == entry.size {
        return Ok(());
    }
    Err(ReadFailure::Dlq(
        DlqReason::Changed,
        format!(
            "the object has {} bytes but the manifest says {}",
            info.size, entry.size
        ),
    ))
}

/// An open object: its description and a body that resumes after a cut.
pub struct ObjectReader {
    s3: S3,
    uri: S3Uri,
    version_id: Option<String>,
    /// The ETag as S3 sent it (quoted), for If-Match on resumes.
    if_match: Option<String>,
    body: ByteStream,
    received: u64,
    size: u64,
    /// Since the body was last cut after making progress: the patience left for resumes, and
    /// the bytes received when it began.
    cuts: Option<(Retrier, u64)>,
    md5: Md5,
    /// The full-object checksum to check the body against (lean GETs only).
    checksum: Option<crate::get_object::BodyChecksum>,
    /// How long a lean body may send nothing before it is resumed; the SDK's stalled-stream
    /// protection covers its own bodies.
    stall: Option<std::time::Duration>,
    /// How long the GET took to answer with its headers: the round trip the GET gate watches.
    answered_in: std::time::Duration,
}

impl ObjectReader {
    /// GETs the object (the manifest's version when it names one), checks its size against the
    /// manifest and fetches its tags when it has any.
    pub async fn open(
        s3: &S3,
        entry: &ManifestEntry<'_>,
    ) -> Result<(ObjectInfo, ObjectReader), ReadFailure> {
        let uri = entry_uri(entry);
        let version_id = entry.version_id.as_deref().map(str::to_string);
        let started = std::time::Instant::now();
        if let Some(lean) = s3.lean() {
            let conditions = crate::get_object::Conditions {
                version_id: version_id.as_deref(),
                expected_bucket_owner: s3.settings().expected_bucket_owner.as_deref(),
                ..Default::default()
            };
            if let Some(answer) = lean.get(&uri.bucket, &uri.key, conditions).await {
                let (head, body) =
                    answer.map_err(|failure| ReadFailure::from_remote_for(failure, &uri))?;
                let answered_in = started.elapsed();
                return Self::opened_lean(s3, entry, (uri, version_id), (head, body), answered_in)
                    .await;
            }
        }
        let output = s3
            .client()
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_version_id(version_id.clone())
            .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| ReadFailure::from_remote_for(failure(e), &uri))?;
        let answered_in = started.elapsed();
        let mut info = ObjectInfo::from_head(&object_head!(output), entry, &version_id);
        check_size(&info, entry)?;
        if output.tag_count().unwrap_or(0) > 0 {
            info.tags = fetch_tags(s3, &uri, info.version_id.as_deref()).await?;
        }
        let reader = ObjectReader {
            s3: s3.clone(),
            uri,
            version_id,
            if_match: output.e_tag().map(str::to_string),
            size: info.size,
            body: output.body,
            received: 0,
            cuts: None,
            md5: Md5::new(),
            checksum: None,
            stall: None,
            answered_in,
        };
        Ok((info, reader))
    }

    /// The reader of a lean GET's answer: its body is checked against the full-object
    /// checksum S3 sent, which the SDK path leaves to the SDK.
    async fn opened_lean(
        s3: &S3,
        entry: &ManifestEntry<'_>,
        (uri, version_id): (S3Uri, Option<String>),
        (head, body): (crate::get_object::ObjectHead, hyper::body::Incoming),
        answered_in: std::time::Duration,
    ) -> Result<(ObjectInfo, ObjectReader), ReadFailure> {
        let checksum = crate::get_object::BodyChecksum::for_answer(&head);
        let mut info = ObjectInfo::from_head(&head, entry, &version_id);
        check_size(&info, entry)?;
        if head.tag_count > 0 {
            info.tags = fetch_tags(s3, &uri, info.version_id.as_deref()).await?;
        }
        let reader = ObjectReader {
            s3: s3.clone(),
            uri,
            version_id,
            if_match: head.etag.clone(),
            size: info.size,
            body: ByteStream::new(aws_smithy_types::body::SdkBody::from_body_1_x(body)),
            received: 0,
            cuts: None,
            md5: Md5::new(),
            checksum,
            stall: s3.lean().map(|lean| lean.body_stall()),
            answered_in,
        };
        Ok((info, reader))
    }

    /// The next bytes of the object, or `None` at its end. A cut body is resumed where it
    /// stopped; a body that grows past the manifest's size is refused.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ReadFailure> {
        loop {
            let next = match self.stall {
                None => self.body.try_next().await,
                Some(stall) => match tokio::time::timeout(stall, self.body.try_next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.resume(format!(
                            "the body stalled for {} s after {} bytes",
                            stall.as_secs(),
                            self.received
                        ))
                        .await?;
                        continue;
                    }
                },
            };
            match next {
                Ok(Some(chunk)) => {
                    self.received += chunk.len() as u64;
                    if self.received > self.size {
                        return Err(ReadFailure::Dlq(
                            DlqReason::Changed,
                            format!("the body is longer than {} bytes", self.size),
                        ));
                    }
                    self.md5.update(&chunk);
                    if let Some(checksum) = self.checksum.as_mut() {
                        checksum.update(&chunk);
                    }
                    return Ok(Some(chunk));
                }
                Ok(None) if self.received == self.size => {
                    if let Some(checksum) = self.checksum.take() {
                        checksum.verify().map_err(ReadFailure::Corrupt)?;
                    }
                    return Ok(None);
                }
                Ok(None) => {
                    self.resume(format!(
                        "the body ended after {} of {} bytes",
                        self.received, self.size
                    ))
                    .await?
                }
                Err(e) => {
                    let detail = error_chain(&e);
                    if detail.contains("checksum mismatch") {
                        return Err(ReadFailure::Corrupt(detail));
                    }
                    self.resume(format!(
                        "the body was cut after {} bytes: {detail}",
                        self.received
                    ))
                    .await?
                }
            }
        }
    }

    /// Reopens the object from the first byte not yet received, after a pause. A body that
    /// made progress since its last cut gets the whole retry policy again; one that made none
    /// for the policy's time is given up. The reopening GET is tried again while it fails
    /// transiently, within the retry policy.
    async fn resume(&mut self, why: String) -> Result<(), ReadFailure> {
        let (received, policy) = (self.received, self.s3.settings().retry);
        let retrier = match &mut self.cuts {
            Some((retrier, mark)) if *mark == received => retrier,
            cuts => &mut cuts.insert((Retrier::new(policy), received)).0,
        };
        let cut = RemoteFailure::Transient(why.clone());
        if !retrier.again(&cut).await {
            return Err(ReadFailure::Transient(retrier.gave_up(&cut)));
        }
        tracing::debug!(object = %self.uri, "{why}; resuming from byte {received} (try {})", retrier.attempts() + 1);
        let s3 = &self.s3;
        let output = retrying(s3.settings().retry, &self.uri, || {
            s3.client()
                .get_object()
                .bucket(&self.uri.bucket)
                .key(&self.uri.key)
                .set_version_id(self.version_id.clone())
                .set_if_match(self.if_match.clone())
                .range(format!("bytes={}-", self.received))
                .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
                .send()
                .map_err(failure)
        })
        .await
        .map_err(|f| ReadFailure::from_remote_for(f, &self.uri))?;
        self.body = output.body;
        Ok(())
    }

    /// How long the GET took to answer with its headers (tags and body not counted).
    pub fn answered_in(&self) -> std::time::Duration {
        self.answered_in
    }

    /// Lowercase hex MD5 of every byte read.
    pub fn md5_hex(self) -> String {
        hex::encode(self.md5.finalize())
    }
}

pub(crate) async fn fetch_tags(
    s3: &S3,
    uri: &S3Uri,
    version_id: Option<&str>,
) -> Result<BTreeMap<String, String>, ReadFailure> {
    let output = s3
        .client()
        .get_object_tagging()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .set_version_id(version_id.map(str::to_string))
        .set_expected_bucket_owner(s3.settings().expected_bucket_owner.clone())
        .send()
        .await
        .map_err(|e| ReadFailure::from_remote_for(failure(e), uri))?;
    Ok(output
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

/// A whole object in memory with its MD5.
pub struct WholeObject {
    pub info: ObjectInfo,
    pub data: Vec<u8>,
    pub md5: String,
    /// How long the GET that read it took to answer with its headers.
    pub answered_in: std::time::Duration,
}

/// Reads an object whole. When its ETag is a plain MD5 the computed MD5 must match; a mismatch
/// or a change during the read is retried once from the start before the object goes to the DLQ.
pub async fn read_whole(s3: &S3, entry: &ManifestEntry<'_>) -> Result<WholeObject, ReadFailure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = read_once(s3, entry).await;
        let last = attempt >= 2;
        match outcome {
            Ok(object)
                if !object.info.md5_checkable()
                    || object.md5 == object.info.etag.to_ascii_lowercase() =>
            {
                return Ok(object)
            }
            Ok(object) if last => {
                return Err(ReadFailure::Dlq(
                    DlqReason::ChecksumMismatch,
                    format!(
                        "read twice, MD5 {} both times differs from the ETag {}",
                        object.md5, object.info.etag
                    ),
                ))
            }
            Err(ReadFailure::ChangedDuringRead) if last => {
                return Err(ReadFailure::Dlq(
                    DlqReason::Changed,
                    "the object changed while it was being read".into(),
                ))
            }
            Err(ReadFailure::Corrupt(detail)) if last => {
                return Err(ReadFailure::Dlq(
                    DlqReason::ChecksumMismatch,
                    format!("read twice, corrupt both times: {detail}"),
                ))
            }
            Ok(_) | Err(ReadFailure::ChangedDuringRead | ReadFailure::Corrupt(_)) => continue,
            Err(other) => return Err(other),
        }
    }
}

async fn read_once(s3: &S3, entry: &ManifestEntry<'_>) -> Result<WholeObject, ReadFailure> {
    let (info, mut reader) = ObjectReader::open(s3, entry).await?;
    // One exact allocation: keeping the HTTP chunks instead would also keep the unused parts
    // of the read buffers they share (measured: 1.5 times the budget for 64 MiB objects).
    let mut data = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
    while let Some(chunk) = reader.next_chunk().await? {
        data.extend_from_slice(&chunk);
    }
    let answered_in = reader.answered_in();
    Ok(WholeObject {
        info,
        data,
        md5: reader.md5_hex(),
        answered_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_cover_headers_metadata_and_tags() {
        let info = ObjectInfo {
            etag: "abc".into(),
            version_id: Some("v1".into()),
            content_type: Some("text/plain".into()),
            cache_control: Some("max-age=60".into()),
            metadata: BTreeMap::from([("owner".into(), "ops".into())]),
            tags: BTreeMap::from([("team".into(), "data".into())]),
            ..ObjectInfo::default()
        };
        let attributes = info.attributes();
        for (name, value) in [
            ("etag", "abc"),
            ("version-id", "v1"),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=60"),
            ("meta.owner", "ops"),
            ("tag.team", "data"),
        ] {
            assert!(
                attributes.contains(&(name.to_string(), value.to_string())),
                "{name} missing: {attributes:?}"
            );
        }
        assert!(!attributes.iter().any(|(n, _)| n == "content-encoding"));
    }

    #[test]
    fn only_plain_unencrypted_etags_are_checked() {
        let plain = ObjectInfo {
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            ..ObjectInfo::default()
        };
        assert!(plain.md5_checkable());
        assert!(!ObjectInfo {
            etag: "d41d8cd98f00b204e9800998ecf8427e-2".into(),
            ..plain.clone()
        }
        .md5_checkable());
        assert!(!ObjectInfo {
            opaque_etag: true,
            ..plain
        }
        .md5_checkable());
    }
}
