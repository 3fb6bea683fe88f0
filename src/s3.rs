//! S3 access: a thin wrapper over the SDK client that applies the write settings (SSE,
//! expected bucket owner) to every request and turns SDK errors into [`RemoteFailure`]s.

use std::str::FromStr;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;
use futures_util::TryFutureExt;

use crate::error::RemoteFailure;
use crate::s3uri::S3Uri;

/// `--sse`: the server-side encryption requested for everything written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sse {
    Aes256,
    Kms,
}

impl FromStr for Sse {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "AES256" => Ok(Sse::Aes256),
            "aws:kms" => Ok(Sse::Kms),
            other => Err(format!(
                "`{other}` is not a server-side encryption: use AES256 or aws:kms"
            )),
        }
    }
}

/// Settings applied to requests.
#[derive(Debug, Clone, Default)]
pub struct WriteSettings {
    pub sse: Option<Sse>,
    pub sse_kms_key_id: Option<String>,
    pub expected_bucket_owner: Option<String>,
    /// SHA-256-sign PutObject and UploadPart bodies (see `--sign-payload`).
    pub sign_payload: bool,
    /// How long transient failures are tried again (`--retry-for`).
    pub retry: crate::retry::RetryPolicy,
}

/// Sends a PutObject or UploadPart request, its body signed only if `settings` say so.
#[macro_export]
macro_rules! send_upload {
    ($request:expr, $settings:expr) => {
        if $settings.sign_payload {
            $request.send().await
        } else {
            $request.customize().disable_payload_signing().send().await
        }
    };
}

impl WriteSettings {
    pub fn encryption(&self) -> Option<ServerSideEncryption> {
        self.sse.map(|sse| match sse {
            Sse::Aes256 => ServerSideEncryption::Aes256,
            Sse::Kms => ServerSideEncryption::AwsKms,
        })
    }
}

/// What HeadObject tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// RFC 3339 UTC, as the index records it.
    pub last_modified: Option<String>,
    /// SSE-KMS, DSSE-KMS or SSE-C: the ETag is then not the MD5 of the bytes.
    pub opaque_etag: bool,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// `x-amz-storage-class` (S3 sends none for STANDARD).
    pub storage_class: Option<String>,
    /// Its bytes cannot be read without a restore (see [`is_cold`]).
    pub cold: bool,
    /// `x-amz-restore`: a restore in progress or finished (`None` when none was asked, or the
    /// header could not be read: see [`crate::thaw::parse_restore`]).
    pub restore: Option<crate::thaw::RestoreState>,
    /// `x-amz-archive-status`: ARCHIVE_ACCESS or DEEP_ARCHIVE_ACCESS (Intelligent-Tiering).
    pub archive_status: Option<String>,
}

/// Whether an object's bytes cannot be read without a restore: it is in GLACIER or
/// DEEP_ARCHIVE, or in an Intelligent-Tiering archive tier (`x-amz-archive-status`), and no
/// restore has finished (`x-amz-restore: ongoing-request="false", …`). GLACIER_IR is read at
/// once, like STANDARD.
pub fn is_cold(
    storage_class: Option<&str>,
    archive_status: Option<&str>,
    restore: Option<&str>,
) -> bool {
    let archived = matches!(storage_class, Some("GLACIER" | "DEEP_ARCHIVE"))
        || matches!(
            archive_status,
            Some("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS")
        );
    let restored = restore.is_some_and(|r| r.contains("ongoing-request=\"false\""));
    archived && !restored
}

impl ObjectHead {
    /// The ETag without quotes, when it is the MD5 of the object's bytes.
    pub fn plain_md5(&self) -> Option<String> {
        let etag = self.etag.as_deref()?.trim_matches('"');
        (!self.opaque_etag && is_plain_md5(etag)).then(|| etag.to_ascii_lowercase())
    }
}

/// What S3 answered a RestoreObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restoring {
    /// Accepted (202), or a finished restore's copy extended (200).
    Requested,
    /// A restore of the object was under way already (409 RestoreAlreadyInProgress).
    AlreadyInProgress,
}

/// Which HeadObject refusals [`S3::head_once`] asks a GET to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Those without a code: 400, 403 and other statuses S3 sends without one.
    Unexplained,
    /// Those and 404 too, which may be NoSuchBucket rather than NoSuchKey.
    NotFoundToo,
}

/// How an object is written by [`S3::put`].
#[derive(Debug, Clone, Default)]
pub struct Put {
    pub content_type: &'static str,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Write only if the object's ETag is this one (S3 conditional writes).
    pub if_match: Option<String>,
    /// Write only if no object has this key.
    pub if_none_match: bool,
    /// Give up transient failures sooner than `--retry-for` (a lease renewal must land before
    /// the lease expires).
    pub retry_for: Option<std::time::Duration>,
}

impl Put {
    pub fn new(content_type: &'static str) -> Self {
        Put {
            content_type,
            ..Put::default()
        }
    }
}

/// One key of a DeleteObjects batch that S3 did not delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteError {
    pub key: String,
    pub version_id: Option<String>,
    pub code: String,
    pub message: String,
}

impl DeleteError {
    /// Throttling, an internal error or a conditional delete racing another write: worth
    /// another try.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "SlowDown"
                | "InternalError"
                | "ServiceUnavailable"
                | "RequestTimeout"
                | "Throttling"
                | "ConditionalRequestConflict"
        )
    }

    /// S3 refused a conditional delete: the object's ETag is no longer the one given.
    pub fn is_precondition_failed(&self) -> bool {
        self.code == "PreconditionFailed"
    }
}

/// One object of a DeleteObjects request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTarget {
    pub key: String,
    pub version_id: Option<String>,
    /// Delete only while the object's ETag is this one (S3 conditional delete, evaluated on
    /// the current version); `None` deletes unconditionally.
    pub if_match: Option<String>,
}

/// `"etag"`: an ETag in the quoted form S3 gives it, whether it was stored with quotes or not.
pub fn quoted_etag(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

/// The body of a DeleteObjects request (quiet: S3 answers with the failures only).
pub fn delete_request(
    objects: &[DeleteTarget],
) -> Result<aws_sdk_s3::types::Delete, RemoteFailure> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let identifiers = objects
        .iter()
        .map(|target| {
            ObjectIdentifier::builder()
                .key(&target.key)
                .set_version_id(target.version_id.clone())
                .set_e_tag(target.if_match.as_deref().map(quoted_etag))
                .build()
                .map_err(|e| RemoteFailure::Permanent(format!("key `{}`: {e}", target.key)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Delete::builder()
        .set_objects(Some(identifiers))
        .quiet(true)
        .build()
        .map_err(|e| RemoteFailure::Permanent(e.to_string()))
}

/// Content headers, user metadata and tags an object is written with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<aws_sdk_s3::primitives::DateTime>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Sets [`ObjectHeaders`] and the configured encryption on a PutObject or
/// CreateMultipartUpload request builder (they share these setters but no trait).
macro_rules! with_object_headers {
    ($builder:expr, $headers:expr, $settings:expr) => {{
        let headers: &$crate::s3::ObjectHeaders = $headers;
        let settings: &$crate::s3::WriteSettings = $settings;
        $builder
            .set_content_type(headers.content_type.clone())
            .set_content_encoding(headers.content_encoding.clone())
            .set_content_language(headers.content_language.clone())
            .set_content_disposition(headers.content_disposition.clone())
            .set_cache_control(headers.cache_control.clone())
            .set_expires(headers.expires)
            .set_metadata(Some(headers.metadata.clone().into_iter().collect()))
            .set_tagging($crate::s3::tagging_header(&headers.tags))
            .set_server_side_encryption(settings.encryption())
            .set_ssekms_key_id(settings.sse_kms_key_id.clone())
            .set_expected_bucket_owner(settings.expected_bucket_owner.clone())
    }};
}
pub(crate) use with_object_headers;

/// The `x-amz-tagging` value for `tags` (URL-encoded query string), `None` when there are none.
pub(crate) fn tagging_header(tags: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, KEEP).to_string();
    Some(
        tags.iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// True for an ETag that is the plain MD5 of the object (not multipart, not SSE-KMS/SSE-C).
pub fn is_plain_md5(etag: &str) -> bool {
    let etag = etag.trim_matches('"');
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A streaming GET.
pub struct GetStream {
    pub body: ByteStream,
    pub size: u64,
    pub etag: Option<String>,
    /// Its content headers as (name, value): `content-type`, `content-encoding`,
    /// `content-language`, `content-disposition`, `cache-control`, `expires`.
    pub content_headers: Vec<(&'static str, String)>,
}

/// Classifies an SDK error after its own retries.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
    status: Option<u16>,
) -> RemoteFailure {
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            classify_answer(
                err.code().unwrap_or(""),
                err.message().unwrap_or(""),
                status,
            )
        }
        SdkError::TimeoutError(_) => RemoteFailure::Transient(
            "no answer within the request timeout (--request-timeout, S3BUNDLER_REQUEST_TIMEOUT)"
                .into(),
        ),
        SdkError::DispatchFailure(dispatch) if dispatch.is_user() || dispatch.is_other() => {
            let chain = error_chain(error);
            if chain.contains("credential") {
                RemoteFailure::Credentials(chain)
            } else if dispatch.is_other() {
                // The connector files hyper's own failures here, among them a pooled
                // connection the server closed as the request went out ("connection closed
                // before message completed"): asking again on a new connection succeeds.
                RemoteFailure::Transient(format!("connection failed: {chain}"))
            } else {
                RemoteFailure::Permanent(chain)
            }
        }
        SdkError::DispatchFailure(_) => {
            RemoteFailure::Transient(format!("connection failed: {}", error_chain(error)))
        }
        SdkError::ResponseError(_) => {
            RemoteFailure::Transient(format!("bad response: {}", error_chain(error)))
        }
        other => RemoteFailure::Permanent(error_chain(other)),
    }
}

/// Classifies an S3 error answer by its code, message and HTTP status. The code decides
/// before the status: S3 answers 403 for an archived object and a skewed clock alike, and an
/// answer without a code (a HEAD's) is classified by its status alone.
pub fn classify_answer(code: &str, message: &str, status: Option<u16>) -> RemoteFailure {
    let detail = || {
        let status = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
        format!("{status}{code} {message}").trim().to_string()
    };
    match (code, status) {
        ("InvalidObjectState", _) => RemoteFailure::InvalidObjectState,
        (code, _) if is_caller_refused(code) => RemoteFailure::Credentials(detail()),
        ("RequestTimeTooSkewed", _) => RemoteFailure::ClockSkew(detail()),
        ("NoSuchBucket", _) => {
            RemoteFailure::Bucket(format!("the bucket does not exist ({})", detail()))
        }
        (
            "PermanentRedirect"
            | "TemporaryRedirect"
            | "Redirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException",
            _,
        )
        | (_, Some(300..=399)) => RemoteFailure::Bucket(format!(
            "the bucket is in another region than the one the request was sent to ({}); set \
             the bucket's region (AWS_REGION, --region)",
            detail()
        )),
        ("NoSuchKey" | "NotFound" | "NoSuchVersion" | "NoSuchUpload", _) | (_, Some(404)) => {
            RemoteFailure::NotFound
        }
        // The object's own key, never the bucket's access (`KMS.DisabledException`…).
        (code, _) if code.starts_with("KMS.") => RemoteFailure::ObjectDenied(detail()),
        ("AccessDenied" | "AllAccessDisabled", _)
            if message.to_ascii_lowercase().contains("kms") =>
        {
            RemoteFailure::ObjectDenied(detail())
        }
        ("AccessDenied" | "AllAccessDisabled", _) | ("", Some(403)) => RemoteFailure::AccessDenied,
        ("InvalidRequest", _) if message.contains("Server Side Encryption") => {
            RemoteFailure::CustomerKey(detail())
        }
        ("PreconditionFailed", _) | (_, Some(412)) => RemoteFailure::PreconditionFailed,
        // The server lacks the operation: asking again will not add it.
        ("NotImplemented", _) | (_, Some(501)) => RemoteFailure::Permanent(detail()),
        ("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded", _)
        | (_, Some(429 | 503)) => RemoteFailure::Throttled(detail()),
        // A request that raced another on the same object (409): the next try goes through.
        (
            "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "ConditionalRequestConflict"
            | "OperationAborted",
            _,
        ) => RemoteFailure::Transient(detail()),
        (_, Some(s)) if s >= 500 => RemoteFailure::Transient(detail()),
        _ => RemoteFailure::Permanent(detail()),
    }
}

/// Error codes that refuse the caller rather than the object: every other request with the
/// same credentials fails the same way, so no object is to blame.
pub fn is_caller_refused(code: &str) -> bool {
    matches!(
        code,
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "AccountProblem"
            | "InvalidSecurity"
            | "NotSignedUp"
    )
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

pub(crate) fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> RemoteFailure {
    let status = error.raw_response().map(|r| r.status().as_u16());
    classify(&error, status)
}

/// The longest key S3 holds, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

/// Why S3 cannot hold this key or version ID, if it cannot: longer than S3 allows. Checked on
/// outside data before a request is built for it, since the SDK panics ("valid request")
/// building a request whose URI is over 64 KiB.
pub fn over_s3_limits(key: &str, version_id: Option<&str>) -> Option<String> {
    [
        ("key", key.len()),
        ("version ID", version_id.map_or(0, str::len)),
    ]
    .into_iter()
    .find(|&(_, length)| length > MAX_KEY_BYTES)
    .map(|(what, length)| {
        format!("the {what} is {length} bytes, longer than the {MAX_KEY_BYTES} bytes S3 allows")
    })
}

fn check_lengths(uri: &S3Uri, version_id: Option<&str>) -> Result<(), RemoteFailure> {
    over_s3_limits(&uri.key, version_id).map_or(Ok(()), |why| Err(RemoteFailure::Permanent(why)))
}

/// The S3 client with this run's settings.
#[derive(Clone, Debug)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    settings: WriteSettings,
    /// Whole-object GETs without the SDK's per-request machinery, where a bucket allows it.
    lean: Option<std::sync::Arc<crate::get_object::LeanObjects>>,
}

impl S3 {
    pub fn new(client: aws_sdk_s3::Client, settings: WriteSettings) -> Self {
        S3 {
            client,
            settings,
            lean: None,
        }
    }

    pub fn with_lean(mut self, lean: crate::get_object::LeanObjects) -> Self {
        self.lean = Some(std::sync::Arc::new(lean));
        self
    }

    pub fn lean(&self) -> Option<&crate::get_object::LeanObjects> {
        self.lean.as_deref()
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn settings(&self) -> &WriteSettings {
        &self.settings
    }

    /// Starts a streaming GET.
    pub async fn get_stream(&self, uri: &S3Uri) -> Result<GetStream, RemoteFailure> {
        self.get(uri, None, None).await
    }

    /// Starts a streaming GET from byte `offset` to the end, of exactly the object whose ETag
    /// is `etag` when one is given (else `PreconditionFailed`): a file read in several passes,
    /// or resumed after a cut, is then one version throughout.
    pub async fn get_from(
        &self,
        uri: &S3Uri,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<GetStream, RemoteFailure> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        self.get(uri, range, etag).await
    }

    /// Starts a streaming GET of bytes `first..=last`.
    pub async fn get_range(
        &self,
        uri: &S3Uri,
        first: u64,
        last: u64,
    ) -> Result<GetStream, RemoteFailure> {
        self.get(uri, Some(format!("bytes={first}-{last}")), None)
            .await
    }

    async fn get(
        &self,
        uri: &S3Uri,
        range: Option<String>,
        etag: Option<&str>,
    ) -> Result<GetStream, RemoteFailure> {
        check_lengths(uri, None)?;
        let output = crate::retry::retrying(self.settings.retry, uri, || {
            self.client
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .set_range(range.clone())
                .set_if_match(etag.map(str::to_string))
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                .send()
                .map_err(failure)
        })
        .await?;
        let content_headers = [
            ("content-type", output.content_type()),
            ("content-encoding", output.content_encoding()),
            ("content-language", output.content_language()),
            ("content-disposition", output.content_disposition()),
            ("cache-control", output.cache_control()),
            ("expires", output.expires_string()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?.to_string())))
        .collect();
        Ok(GetStream {
            size: output
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            etag: output.e_tag().map(str::to_string),
            content_headers,
            body: output.body,
        })
    }

    /// Reads `length` bytes of an object from `start` into one buffer of that size
    /// (collecting and then joining the chunks would hold the range twice).
    pub async fn get_range_bytes(
        &self,
        uri: &S3Uri,
        start: u64,
        length: u64,
    ) -> Result<Bytes, RemoteFailure> {
        let mut stream = self
            .get_range(uri, start, start + length.max(1) - 1)
            .await?;
        let mut buffer = bytes::BytesMut::with_capacity(length as usize);
        while let Some(chunk) =
            stream.body.try_next().await.map_err(|e| {
                RemoteFailure::Transient(format!("body cut off: {}", error_chain(&e)))
            })?
        {
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    /// Reads a small object whole; refuses one larger than `limit` bytes. A body cut off
    /// mid-way is read again (the SDK retries failed requests, not cut bodies).
    pub async fn get_bytes(&self, uri: &S3Uri, limit: u64) -> Result<Bytes, RemoteFailure> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            let stream = self.get_stream(uri).await?;
            if stream.size > limit {
                return Err(RemoteFailure::Permanent(format!(
                    "object is {} bytes, more than the {limit} expected for this kind of file",
                    stream.size
                )));
            }
            match stream.body.collect().await {
                Ok(collected) => return Ok(collected.into_bytes()),
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!("{uri}: body cut off ({}); reading again", error_chain(&e));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(RemoteFailure::Transient(format!(
                        "body cut off: {}",
                        error_chain(&e)
                    )))
                }
            }
        }
    }

    /// HeadObject; `None` when the object does not exist.
    pub async fn head(&self, uri: &S3Uri) -> Result<Option<ObjectHead>, RemoteFailure> {
        self.head_version(uri, None).await
    }

    /// HeadObject of one version (the current one when `None`); `None` when it does not exist.
    pub async fn head_version(
        &self,
        uri: &S3Uri,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectHead>, RemoteFailure> {
        let Some(output) = self.head_output(uri, version_id).await? else {
            return Ok(None);
        };
        Ok(Some(ObjectHead {
            size: output
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            etag: output.e_tag().map(str::to_string),
            version_id: output.version_id().map(str::to_string),
            last_modified: output
                .last_modified()
                .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
            opaque_etag: matches!(
                output.server_side_encryption(),
                Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
            ) || output.sse_customer_algorithm().is_some(),
            metadata: output
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            storage_class: output.storage_class().map(|c| c.as_str().to_string()),
            cold: is_cold(
                output.storage_class().map(|c| c.as_str()),
                output.archive_status().map(|a| a.as_str()),
                output.restore(),
            ),
            restore: output.restore().and_then(|header| {
                crate::thaw::parse_restore(header)
                    .map_err(|why| tracing::warn!("{uri}: {why}; taken as no restore"))
                    .ok()
            }),
            archive_status: output.archive_status().map(|a| a.as_str().to_string()),
        }))
    }

    /// RestoreObject: a temporary copy of an archived object for `days` (none for
    /// Intelligent-Tiering archive tiers, which refuse Days), at `tier`. Throttling and 5xx
    /// are tried again within the retry policy; a restore already under way (409
    /// RestoreAlreadyInProgress) is no failure.
    pub async fn restore_object(
        &self,
        uri: &S3Uri,
        tier: crate::thaw::Tier,
        days: Option<i32>,
    ) -> Result<Restoring, RemoteFailure> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        check_lengths(uri, None)?;
        let parameters = GlacierJobParameters::builder()
            .tier(Tier::from(tier.name()))
            .build()
            .map_err(|e| RemoteFailure::Permanent(e.to_string()))?;
        let request = RestoreRequest::builder()
            .set_days(days)
            .glacier_job_parameters(parameters)
            .build();
        crate::retry::retrying(self.settings.retry, uri, || async {
            let sent = self
                .client
                .restore_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .restore_request(request.clone())
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                .send()
                .await;
            match sent {
                Ok(_) => Ok(Restoring::Requested),
                Err(e)
                    if e.as_service_error().and_then(|s| s.code())
                        == Some("RestoreAlreadyInProgress") =>
                {
                    Ok(Restoring::AlreadyInProgress)
                }
                Err(e) => Err(failure(e)),
            }
        })
        .await
    }

    /// HeadObject's whole answer, tried again within the retry policy; `None` when the object
    /// does not exist.
    async fn head_output(
        &self,
        uri: &S3Uri,
        version_id: Option<&str>,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, RemoteFailure> {
        check_lengths(uri, version_id)?;
        let result = crate::retry::retrying(self.settings.retry, uri, || {
            self.head_once(uri, version_id, Learn::Unexplained)
        })
        .await;
        match result {
            Ok(output) => Ok(Some(output)),
            Err(RemoteFailure::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Whether an object (one version of it) can be read now: not in GLACIER or DEEP_ARCHIVE
    /// nor an Intelligent-Tiering archive tier, or restored (`x-amz-restore` says the restore
    /// finished). `None` when it does not exist.
    pub async fn readable_now(
        &self,
        uri: &S3Uri,
        version_id: Option<&str>,
    ) -> Result<Option<bool>, RemoteFailure> {
        Ok(self
            .head_version(uri, version_id)
            .await?
            .map(|head| !head.cold))
    }

    /// One HeadObject, with the configured expected owner. A HEAD answer has no body, so a
    /// refusal carries no error code (the SDK names a 404 `NotFound` itself), and a status
    /// alone cannot tell expired credentials, a skewed clock or a missing bucket from a denied
    /// object: the code of such a refusal (as `learn` says) is learnt from a one-byte GET of the
    /// same object, whose error answer has a body.
    pub async fn head_once(
        &self,
        uri: &S3Uri,
        version_id: Option<&str>,
        learn: Learn,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, RemoteFailure> {
        let error = match self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_version_id(version_id.map(str::to_string))
            .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
            .send()
            .await
        {
            Ok(output) => return Ok(output),
            Err(error) => error,
        };
        let status = error.raw_response().map(|r| r.status().as_u16());
        let unexplained = match error.as_service_error().and_then(|e| e.code()) {
            None => status.is_some_and(|s| (400..500).contains(&s)),
            Some("NotFound") => learn == Learn::NotFoundToo,
            Some(_) => false,
        };
        let by_status = classify(&error, status);
        if !unexplained {
            return Err(by_status);
        }
        let probe = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_version_id(version_id.map(str::to_string))
            .range("bytes=0-0")
            .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
            .send()
            .await;
        Err(match probe {
            Err(error) if error.as_service_error().and_then(|e| e.code()).is_some() => {
                failure(error)
            }
            _ => by_status,
        })
    }

    /// PutObject of an in-memory body, with the configured encryption. Returns the ETag.
    pub async fn put_bytes(
        &self,
        uri: &S3Uri,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<Option<String>, RemoteFailure> {
        self.put(uri, body, &Put::new(content_type)).await
    }

    /// PutObject of an in-memory body with user metadata and a condition, with the configured
    /// encryption; a transient failure is tried again within the retry policy. Returns the ETag.
    pub async fn put(
        &self,
        uri: &S3Uri,
        body: Bytes,
        put: &Put,
    ) -> Result<Option<String>, RemoteFailure> {
        let policy = match put.retry_for {
            Some(limit) => crate::retry::RetryPolicy {
                max_elapsed: limit.min(self.settings.retry.max_elapsed),
                ..self.settings.retry
            },
            None => self.settings.retry,
        };
        let output = crate::retry::retrying(policy, uri, || {
            let request = self
                .client
                .put_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .content_type(put.content_type)
                .set_metadata(
                    Some(put.metadata.clone().into_iter().collect())
                        .filter(|m: &std::collections::HashMap<_, _>| !m.is_empty()),
                )
                .set_if_match(put.if_match.clone())
                .set_if_none_match(put.if_none_match.then(|| "*".to_string()))
                .body(ByteStream::from(body.clone()))
                .set_server_side_encryption(self.settings.encryption())
                .set_ssekms_key_id(self.settings.sse_kms_key_id.clone())
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone());
            async move { crate::send_upload!(request, self.settings).map_err(failure) }
        })
        .await?;
        Ok(output.e_tag().map(str::to_string))
    }

    /// Every key under `uri.key` with its size, in key order.
    pub async fn list(&self, uri: &S3Uri) -> Result<Vec<(String, u64)>, RemoteFailure> {
        // A listing cut by a failure is started again whole, within the retry policy.
        crate::retry::retrying(self.settings.retry, uri, || async {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&uri.bucket)
                .prefix(&uri.key)
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(failure)?;
                keys.extend(page.contents().iter().filter_map(|o| {
                    Some((
                        o.key()?.to_string(),
                        o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    ))
                }));
            }
            Ok(keys)
        })
        .await
    }

    /// DeleteObjects of up to 1,000 objects of one bucket, each only while its ETag is the one
    /// given; returns the keys S3 did not delete, with its reason. The request as a whole
    /// failing is an error.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        objects: &[DeleteTarget],
    ) -> Result<Vec<DeleteError>, RemoteFailure> {
        let output = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete_request(objects)?)
            .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(failure)?;
        Ok(output
            .errors()
            .iter()
            .map(|e| DeleteError {
                key: e.key().unwrap_or("").to_string(),
                version_id: e.version_id().map(str::to_string),
                code: e.code().unwrap_or("").to_string(),
                message: e.message().unwrap_or("").to_string(),
            })
            .collect())
    }

    /// DeleteObject, tried again while it fails transiently. Deleting a key that does not
    /// exist succeeds (S3 answers 204).
    pub async fn delete(&self, uri: &S3Uri) -> Result<(), RemoteFailure> {
        self.delete_if(uri, None).await
    }

    /// DeleteObject only if the object's ETag is `if_match` (when given).
    pub async fn delete_if(
        &self,
        uri: &S3Uri,
        if_match: Option<&str>,
    ) -> Result<(), RemoteFailure> {
        crate::retry::retrying(self.settings.retry, uri, || {
            self.client
                .delete_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .set_if_match(if_match.map(str::to_string))
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                .send()
                .map_err(failure)
        })
        .await?;
        Ok(())
    }

    /// Aborts the multipart uploads to exactly the keys of `targets` (all in one bucket) that
    /// started before `before` (seconds since the epoch): what a killed attempt at the same
    /// outputs left behind. One listing, of the keys' common prefix. Returns how many were
    /// aborted.
    pub async fn abort_uploads_before(
        &self,
        targets: &[&S3Uri],
        before: i64,
    ) -> Result<usize, RemoteFailure> {
        let Some(first) = targets.first() else {
            return Ok(0);
        };
        let prefix = targets.iter().fold(first.key.as_str(), |common, target| {
            let shared = common
                .char_indices()
                .zip(target.key.chars())
                .find(|((_, a), b)| a != b)
                .map_or(common.len().min(target.key.len()), |((i, _), _)| i);
            &common[..shared]
        });
        let listing = S3Uri::new(first.bucket.clone(), prefix.to_string());
        let mut aborted = 0;
        // Every page: a prefix with more than 1,000 uploads in progress lists in several.
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = crate::retry::retrying(self.settings.retry, &listing, || {
                self.client
                    .list_multipart_uploads()
                    .bucket(&first.bucket)
                    .prefix(prefix)
                    .set_key_marker(markers.0.clone())
                    .set_upload_id_marker(markers.1.clone())
                    .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                    .send()
                    .map_err(failure)
            })
            .await?;
            for upload in page.uploads() {
                let started = upload.initiated().map_or(i64::MAX, |t| t.secs());
                let target = targets
                    .iter()
                    .find(|t| upload.key() == Some(t.key.as_str()));
                let (Some(target), Some(id)) = (target, upload.upload_id()) else {
                    continue;
                };
                if started >= before {
                    continue;
                }
                self.abort_upload(target, id).await?;
                aborted += 1;
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if page.is_truncated() != Some(true) || next.0.is_none() || next == markers {
                return Ok(aborted);
            }
            markers = next;
        }
    }

    /// AbortMultipartUpload, with the expected bucket owner like every other request, tried
    /// again while it fails transiently.
    pub async fn abort_upload(&self, target: &S3Uri, upload_id: &str) -> Result<(), RemoteFailure> {
        crate::retry::retrying(self.settings.retry, target, || {
            self.client
                .abort_multipart_upload()
                .bucket(&target.bucket)
                .key(&target.key)
                .upload_id(upload_id)
                .set_expected_bucket_owner(self.settings.expected_bucket_owner.clone())
                .send()
                .map_err(failure)
        })
        .await?;
        Ok(())
    }
}

/// `bucket/key[?versionId=…]` for x-amz-copy-source, with the key percent-encoded.
pub(crate) fn copy_source(uri: &S3Uri, version_id: Option<&str>) -> String {
    let key = crate::key_encoding::request_path_key(&uri.key);
    match version_id {
        Some(version) => format!("{}/{key}?versionId={version}", uri.bucket),
        None => format!("{}/{key}", uri.bucket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_archive_classes_and_tiers_not_yet_restored_are_cold() {
        assert!(is_cold(Some("DEEP_ARCHIVE"), None, None));
        assert!(is_cold(
            Some("GLACIER"),
            None,
            Some("ongoing-request=\"true\"")
        ));
        assert!(is_cold(
            Some("INTELLIGENT_TIERING"),
            Some("ARCHIVE_ACCESS"),
            None
        ));
        assert!(!is_cold(
            Some("GLACIER"),
            None,
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")
        ));
        assert!(!is_cold(Some("GLACIER_IR"), None, None));
        assert!(!is_cold(Some("INTELLIGENT_TIERING"), None, None));
        assert!(!is_cold(None, None, None));
    }

    /// Fails on the old code, which took every connector error of kind "other" as permanent:
    /// at 256 GETs in flight, objects whose pooled connection the server had just closed went
    /// to the DLQ without a second try.
    #[test]
    fn a_connection_closed_before_the_answer_is_transient() {
        use aws_sdk_s3::error::ConnectorError;
        let closed =
            SdkError::<aws_sdk_s3::operation::get_object::GetObjectError, ()>::dispatch_failure(
                ConnectorError::other(
                    "client error (SendRequest): connection closed before message completed".into(),
                    None,
                ),
            );
        assert!(
            matches!(classify(&closed, None), RemoteFailure::Transient(_)),
            "{:?}",
            classify(&closed, None)
        );
        let no_credentials =
            SdkError::<aws_sdk_s3::operation::get_object::GetObjectError, ()>::dispatch_failure(
                ConnectorError::other("failed to load credentials".into(), None),
            );
        assert!(matches!(
            classify(&no_credentials, None),
            RemoteFailure::Credentials(_)
        ));
    }

    /// Each failed on the old code, which took NoSuchBucket for a missing key, any 403 for a
    /// denied object, a refused clock for AccessDenied and every other 4xx (409s included) for
    /// a permanent failure of the object.
    #[test]
    fn error_answers_are_classified_by_code_before_status() {
        let class = |code: &str, message: &str, status: u16| {
            let failure = classify_answer(code, message, Some(status));
            let name = format!("{failure:?}");
            name[..name.find('(').unwrap_or(name.len())].to_string()
        };
        let cases = [
            ("RequestTimeTooSkewed", "", 403, "ClockSkew"),
            ("NoSuchBucket", "", 404, "Bucket"),
            ("PermanentRedirect", "", 301, "Bucket"),
            ("", "", 301, "Bucket"),
            (
                "AuthorizationHeaderMalformed",
                "the region 'us-east-1' is wrong; expecting 'eu-west-1'",
                400,
                "Bucket",
            ),
            ("IllegalLocationConstraintException", "", 400, "Bucket"),
            ("NoSuchKey", "", 404, "NotFound"),
            (
                "AccessDenied",
                "not authorized to perform: kms:Decrypt",
                403,
                "ObjectDenied",
            ),
            ("KMS.DisabledException", "", 400, "ObjectDenied"),
            ("AccessDenied", "Access Denied", 403, "AccessDenied"),
            ("", "", 403, "AccessDenied"),
            (
                "InvalidRequest",
                "The object was stored using a form of Server Side Encryption.",
                400,
                "CustomerKey",
            ),
            ("InvalidRequest", "Something else", 400, "Permanent"),
            ("ConditionalRequestConflict", "", 409, "Transient"),
            ("OperationAborted", "", 409, "Transient"),
            ("BucketNotEmpty", "", 409, "Permanent"),
            ("SomethingS3AddedLater", "", 400, "Permanent"),
            ("SomethingS3AddedLater", "", 403, "Permanent"),
            ("InvalidObjectState", "", 403, "InvalidObjectState"),
            ("ExpiredToken", "", 400, "Credentials"),
            ("SlowDown", "", 503, "Throttled"),
        ];
        for (code, message, status, expected) in cases {
            assert_eq!(class(code, message, status), expected, "{status} {code}");
        }
        assert_eq!(
            classify_answer("SomethingS3AddedLater", "why", Some(400)),
            RemoteFailure::Permanent("HTTP 400 SomethingS3AddedLater why".into()),
            "the code is in the detail"
        );
    }

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(
            copy_source(&S3Uri::new("b", "a dir/k+1%?.txt"), None),
            "b/a%20dir/k%2B1%25%3F.txt"
        );
        assert_eq!(
            copy_source(&S3Uri::new("b", "k"), Some("v1")),
            "b/k?versionId=v1"
        );
    }

    /// Fails on the old code, which sent no ETag, so that S3 deleted an object overwritten
    /// after prune had verified it.
    #[test]
    fn delete_requests_carry_the_etag_each_object_must_still_have() {
        let targets = [
            DeleteTarget {
                key: "a".into(),
                version_id: None,
                if_match: Some("0123abc".into()),
            },
            DeleteTarget {
                key: "b".into(),
                version_id: Some("v1".into()),
                if_match: Some("\"4567def\"".into()),
            },
            DeleteTarget {
                key: "c".into(),
                version_id: None,
                if_match: None,
            },
        ];
        let delete = delete_request(&targets).unwrap_or_else(|e| panic!("{e}"));
        let sent: Vec<(&str, Option<&str>, Option<&str>)> = delete
            .objects()
            .iter()
            .map(|o| (o.key(), o.version_id(), o.e_tag()))
            .collect();
        assert_eq!(
            sent,
            vec![
                ("a", None, Some("\"0123abc\"")),
                ("b", Some("v1"), Some("\"4567def\"")),
                ("c", None, None),
            ]
        );
        assert_eq!(delete.quiet(), Some(true));
        let refused = DeleteError {
            key: "a".into(),
            version_id: None,
            code: "PreconditionFailed".into(),
            message: String::new(),
        };
        assert!(refused.is_precondition_failed() && !refused.is_transient());
    }

    #[test]
    fn sse_names() {
        assert_eq!("AES256".parse::<Sse>(), Ok(Sse::Aes256));
        assert_eq!("aws:kms".parse::<Sse>(), Ok(Sse::Kms));
        assert!("kms".parse::<Sse>().is_err());
    }
}
