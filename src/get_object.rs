//! GetObject without the SDK's per-request machinery (configuration layers, interceptors,
//! endpoint rules, the user-agent header): what a whole-object GET needs, read straight off the
//! HTTP answer. `s3bundler-bench instructions` measured the SDK's GetObject at 495,000
//! instructions per 4 KiB object and SigV4 on a bare hyper client at 172,000.
//!
//! `bundle` reads whole objects through it wherever a bucket's endpoint is plain SigV4, and
//! through the SDK everywhere else (S3 Express, access points with other signers).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_smithy_types::Document;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::error::RemoteFailure;
use crate::key_encoding::request_path_key;
use crate::s3::{classify_answer, error_chain};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat as Format};
use http::HeaderMap;

/// What a GetObject answer says of the object, from its headers: the fields the SDK's
/// `GetObjectOutput` gives bundle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectHead {
    pub size: u64,
    /// As S3 sent it, quoted.
    pub etag: Option<String>,
    pub last_modified: Option<DateTime>,
    pub version_id: Option<String>,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*`, the prefix taken off, names lowercase as S3 sends them.
    pub metadata: BTreeMap<String, String>,
    pub tag_count: u32,
    pub sse: Option<String>,
    pub sse_customer_algorithm: Option<String>,
    /// `x-amz-checksum-<algorithm>` values by algorithm (`crc64nvme`, `crc32c`, …).
    pub checksums: BTreeMap<String, String>,
    /// `x-amz-checksum-type`: `FULL_OBJECT` or `COMPOSITE` (a checksum of part checksums,
    /// which the bytes alone cannot be checked against).
    pub checksum_type: Option<String>,
}

/// A header's value as UTF-8, as the SDK reads it: S3 sends metadata given in UTF-8 back
/// byte for byte, which `HeaderValue::to_str` (visible ASCII only) would refuse.
fn header_text<'h>(name: &str, value: &'h http::HeaderValue) -> Result<&'h str, String> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| format!("the {name} header is not UTF-8"))
}

const META_PREFIX: &str = "x-amz-meta-";
const CHECKSUM_PREFIX: &str = "x-amz-checksum-";

impl ObjectHead {
    /// Reads the headers of a 200 or 206 answer. A header S3 must send well-formed
    /// (Content-Length, Last-Modified, the tag count) that cannot be read is an error naming
    /// it; unknown headers are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        let text = |name: &str| -> Result<Option<String>, String> {
            headers
                .get(name)
                .map(|v| header_text(name, v).map(str::to_string))
                .transpose()
        };
        let number = |name: &str| -> Result<Option<u64>, String> {
            text(name)?
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("the {name} header is not a number: {v:?}"))
                })
                .transpose()
        };
        let last_modified = text("last-modified")?
            .map(|v| {
                DateTime::from_str(v.trim(), Format::HttpDate).map_err(|e| {
                    format!("the last-modified header is not an HTTP date ({e}): {v:?}")
                })
            })
            .transpose()?;
        let mut metadata = BTreeMap::new();
        let mut checksums = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            if let Some(key) = name.strip_prefix(META_PREFIX) {
                let value = header_text(name, value)?;
                metadata.insert(key.to_string(), value.to_string());
            } else if let Some(algorithm) = name.strip_prefix(CHECKSUM_PREFIX) {
                if algorithm == "type" || algorithm == "mode" {
                    continue;
                }
                let value = header_text(name, value)?;
                checksums.insert(algorithm.to_string(), value.to_string());
            }
        }
        Ok(ObjectHead {
            size: number("content-length")?.unwrap_or(0),
            etag: text("etag")?,
            last_modified,
            version_id: text("x-amz-version-id")?,
            storage_class: text("x-amz-storage-class")?,
            content_type: text("content-type")?,
            content_encoding: text("content-encoding")?,
            content_language: text("content-language")?,
            content_disposition: text("content-disposition")?,
            cache_control: text("cache-control")?,
            expires: text("expires")?,
            metadata,
            tag_count: number("x-amz-tagging-count")?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(0),
            sse: text("x-amz-server-side-encryption")?,
            sse_customer_algorithm: text("x-amz-server-side-encryption-customer-algorithm")?,
            checksums,
            checksum_type: text("x-amz-checksum-type")?,
        })
    }
}

/// A body that sends nothing for this long (or the request timeout, if shorter) has stalled.
const BODY_STALL: Duration = Duration::from_secs(20);

/// The lean GET for every bucket whose endpoint allows it; the others are left to the SDK.
#[derive(Debug)]
pub struct LeanObjects {
    get: LeanGet,
    settings: EndpointSettings,
    endpoints: RwLock<HashMap<String, Option<BucketEndpoint>>>,
}

impl LeanObjects {
    pub fn new(get: LeanGet, settings: EndpointSettings) -> Self {
        LeanObjects {
            get,
            settings,
            endpoints: RwLock::new(HashMap::new()),
        }
    }

    /// How long a body may send nothing before it is read again from where it stopped: what
    /// the SDK's stalled-stream protection does for its own bodies.
    pub fn body_stall(&self) -> Duration {
        self.get.body_stall()
    }

    /// GETs `key` from `bucket`, or `None` when the bucket is left to the SDK.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        conditions: Conditions<'_>,
    ) -> Option<Result<(ObjectHead, hyper::body::Incoming), RemoteFailure>> {
        let endpoint = self.endpoint(bucket).await?;
        Some(self.get.get(&endpoint, key, conditions).await)
    }

    async fn endpoint(&self, bucket: &str) -> Option<BucketEndpoint> {
        let known = self
            .endpoints
            .read()
            .ok()
            .and_then(|endpoints| endpoints.get(bucket).cloned());
        if let Some(known) = known {
            return known;
        }
        let resolved = match resolve_endpoint(&self.settings, bucket).await {
            Ok(endpoint) => Some(endpoint),
            Err(why) => {
                tracing::debug!("GETs from {bucket} go through the SDK: {why}");
                None
            }
        };
        if let Ok(mut endpoints) = self.endpoints.write() {
            endpoints.insert(bucket.to_string(), resolved.clone());
        }
        resolved
    }
}

/// The full-object checksum algorithms, in the order the SDK validates them.
const CHECKSUM_ORDER: [&str; 5] = ["crc64nvme", "crc32c", "crc32", "sha1", "sha256"];

/// Checks a body against the full-object checksum its answer carried, as the SDK's response
/// validation does. A composite checksum (`…-N`, of the parts' checksums) cannot be checked
/// against the bytes and is skipped, as the SDK skips it.
pub struct BodyChecksum {
    algorithm: &'static str,
    expected: String,
    hasher: Box<dyn aws_smithy_checksums::http::HttpChecksum>,
}

impl BodyChecksum {
    /// The check for a whole-object answer, or `None` when it carried nothing checkable.
    pub fn for_answer(head: &ObjectHead) -> Option<Self> {
        if head.checksum_type.as_deref() == Some("COMPOSITE") {
            return None;
        }
        CHECKSUM_ORDER.iter().find_map(|algorithm| {
            let expected = head.checksums.get(*algorithm)?;
            if expected.contains('-') {
                return None;
            }
            let hasher = algorithm
                .parse::<aws_smithy_checksums::ChecksumAlgorithm>()
                .ok()?
                .into_impl();
            Some(BodyChecksum {
                algorithm,
                expected: expected.clone(),
                hasher,
            })
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// The error says "checksum mismatch", the words bundle takes for a corrupt body.
    pub fn verify(self) -> Result<(), String> {
        let algorithm = self.algorithm;
        let actual = self.hasher.header_value();
        let actual = actual.to_str().unwrap_or("");
        if actual == self.expected {
            return Ok(());
        }
        Err(format!(
            "checksum mismatch: {algorithm} of the body is {actual}, S3 sent {}",
            self.expected
        ))
    }
}

/// The `<Code>` and `<Message>` of an S3 error body, when it has them.
pub fn error_code_and_message(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let length = text[start..].find(&close)?;
        Some(unescape(&text[start..start + length]))
    };
    (element("Code"), element("Message"))
}

/// XML's five predefined entities; S3 error codes and messages use no others.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The most of an error answer's body read for its code and message.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// The standard chain's credentials, kept until shortly before they expire; one task
/// refreshes them while the others wait.
#[derive(Debug)]
pub struct CredentialCache {
    provider: SharedCredentialsProvider,
    current: RwLock<Option<Credentials>>,
    refresh: tokio::sync::Mutex<()>,
}

impl CredentialCache {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialCache {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn get(&self) -> Result<Credentials, RemoteFailure> {
        if let Some(credentials) = self.cached() {
            return Ok(credentials);
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(credentials) = self.cached() {
            return Ok(credentials);
        }
        let fresh = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| RemoteFailure::Credentials(error_chain(&e)))?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(fresh.clone());
        }
        Ok(fresh)
    }

    fn cached(&self) -> Option<Credentials> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .filter(|c| {
                c.expiry()
                    .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
            })
            .cloned()
    }
}

/// Where a bucket's requests go and how they are signed, as the SDK's endpoint rules say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEndpoint {
    /// Without a trailing slash; the key's path follows it.
    pub url: String,
    pub signing_region: String,
    pub signing_name: String,
}

/// The settings the SDK's endpoint rules read, from the shared configuration.
#[derive(Debug, Clone, Default)]
pub struct EndpointSettings {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub use_fips: bool,
    pub use_dual_stack: bool,
}

/// Resolves `bucket`'s endpoint with the SDK's own rules. Only SigV4 is signed here: S3
/// Express buckets and multi-region access points (SigV4a) are left to the SDK.
pub async fn resolve_endpoint(
    settings: &EndpointSettings,
    bucket: &str,
) -> Result<BucketEndpoint, String> {
    let params = Params::builder()
        .bucket(bucket)
        .region(settings.region.clone())
        .set_endpoint(settings.endpoint_url.clone())
        .force_path_style(settings.force_path_style)
        .use_fips(settings.use_fips)
        .use_dual_stack(settings.use_dual_stack)
        .build()
        .map_err(|e| e.to_string())?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| e.to_string())?;
    let schemes = match endpoint.properties().get("authSchemes") {
        Some(Document::Array(schemes)) => schemes.as_slice(),
        _ => &[],
    };
    let field = |scheme: &HashMap<String, Document>, name: &str| match scheme.get(name) {
        Some(Document::String(value)) => Some(value.clone()),
        _ => None,
    };
    // The SDK signs with the first scheme it supports, in the rules' order; S3 Express lists
    // its session scheme first. Without schemes (a custom endpoint), it signs with SigV4 for
    // the configured region.
    let sigv4 = match schemes.first() {
        None if endpoint.properties().is_empty() => HashMap::new(),
        // Properties without schemes: S3 Express (`backend`) signs its own way.
        None => {
            return Err(format!(
                "{bucket}'s endpoint is not plain SigV4: {:?}",
                endpoint.properties()
            ))
        }
        Some(Document::Object(scheme)) if field(scheme, "name").as_deref() == Some("sigv4") => {
            scheme.clone()
        }
        Some(other) => {
            return Err(format!(
                "{bucket}'s endpoint is signed with {other:?}, not plain SigV4"
            ))
        }
    };
    Ok(BucketEndpoint {
        url: endpoint.url().trim_end_matches('/').to_string(),
        signing_region: field(&sigv4, "signingRegion").unwrap_or_else(|| settings.region.clone()),
        signing_name: field(&sigv4, "signingName").unwrap_or_else(|| "s3".to_string()),
    })
}

/// What one GET asks for besides the object.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    pub version_id: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub range: Option<&'a str>,
    pub expected_bucket_owner: Option<&'a str>,
}

/// How long a new connection may take, as `AwsOptions::load` sets it for the SDK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// GetObject signed with SigV4 on a pooled hyper client, over HTTPS or plain HTTP.
#[derive(Debug)]
pub struct LeanGet {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    credentials: CredentialCache,
    /// How long the answer's headers may take (`--request-timeout`).
    attempt_timeout: Duration,
    clock: ClockOffset,
}

/// How far S3's clock is ahead of this machine's, in milliseconds (behind when negative), as
/// the Date header of a `RequestTimeTooSkewed` refusal tells it; requests are signed at local
/// time plus this, shared by every GET, as the SDK's clock-skew correction does for its own.
#[derive(Debug, Default)]
struct ClockOffset(AtomicI64);

/// A refusal for skew is tried again with the clock it gave only if that clock differs from
/// the one signed with by more than this many milliseconds: otherwise correcting cannot help.
const SKEW_WORTH_CORRECTING: u64 = 60_000;

impl ClockOffset {
    fn now(&self) -> SystemTime {
        shifted(SystemTime::now(), self.0.load(Ordering::Relaxed))
    }

    fn millis(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes S3's time from a `RequestTimeTooSkewed` refusal's Date header, for a request sent
    /// at `sent` (local time) and signed with `signed_with`; true when signing again with it
    /// could pass.
    fn correct(
        &self,
        date: Option<&http::HeaderValue>,
        sent: SystemTime,
        signed_with: i64,
    ) -> bool {
        let Some(server) = date
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok())
            .and_then(|d| SystemTime::try_from(d).ok())
        else {
            return false;
        };
        // S3 stamped its Date halfway through the round trip, roughly.
        let midpoint = sent + SystemTime::now().duration_since(sent).unwrap_or_default() / 2;
        let offset = match server.duration_since(midpoint) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        if offset.abs_diff(signed_with) <= SKEW_WORTH_CORRECTING {
            return false;
        }
        if offset.abs_diff(self.0.swap(offset, Ordering::Relaxed)) > SKEW_WORTH_CORRECTING {
            tracing::info!(
                "this machine's clock is {} s off S3's (S3 is ahead when positive): GETs are now signed with S3's time",
                offset / 1000
            );
        }
        true
    }
}

/// `time` moved by `millis` (earlier when negative).
fn shifted(time: SystemTime, millis: i64) -> SystemTime {
    let by = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        time.checked_add(by)
    } else {
        time.checked_sub(by)
    }
    .unwrap_or(time)
}

impl LeanGet {
    pub fn new(
        provider: SharedCredentialsProvider,
        attempt_timeout: Duration,
    ) -> Result<Self, String> {
        // As the SDK's client: TCP_NODELAY, and a connect timeout of its own.
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(LeanGet {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            credentials: CredentialCache::new(provider),
            attempt_timeout,
            clock: ClockOffset::default(),
        })
    }

    /// How long a body, of an object or of an error answer, may send nothing.
    pub fn body_stall(&self) -> Duration {
        self.attempt_timeout.min(BODY_STALL)
    }

    /// GETs `key` from the bucket at `endpoint`: the object's headers and its body, or the
    /// failure classified as the SDK path classifies it. A refusal of the request's time
    /// (`RequestTimeTooSkewed`) corrects the clock from its Date header and is tried again
    /// once; refused again, it is the caller's `ClockSkew`.
    pub async fn get(
        &self,
        endpoint: &BucketEndpoint,
        key: &str,
        conditions: Conditions<'_>,
    ) -> Result<(ObjectHead, hyper::body::Incoming), RemoteFailure> {
        let mut corrected = false;
        loop {
            let signed_with = self.clock.millis();
            let sent = SystemTime::now();
            let response = self.send(endpoint, key, conditions).await?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                let head = ObjectHead::from_headers(response.headers())
                    .map_err(|e| RemoteFailure::Transient(format!("bad response: {e}")))?;
                return Ok((head, response.into_body()));
            }
            let date = response.headers().get("date").cloned();
            // An error body that stalls is cut: the status alone then classifies it.
            let body = tokio::time::timeout(
                self.body_stall(),
                http_body_util::Limited::new(response.into_body(), ERROR_BODY_LIMIT).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
            let (code, message) = error_code_and_message(&body);
            let failure = classify_answer(
                code.as_deref().unwrap_or(""),
                message.as_deref().unwrap_or(""),
                Some(status),
            );
            match failure {
                RemoteFailure::ClockSkew(_)
                    if !corrected && self.clock.correct(date.as_ref(), sent, signed_with) =>
                {
                    corrected = true;
                }
                failure => return Err(failure),
            }
        }
    }

    /// Sends one signed GET and waits for its answer's headers.
    async fn send(
        &self,
        endpoint: &BucketEndpoint,
        key: &str,
        conditions: Conditions<'_>,
    ) -> Result<http::Response<hyper::body::Incoming>, RemoteFailure> {
        let mut uri = format!("{}/{}", endpoint.url, request_path_key(key));
        if let Some(version) = conditions.version_id {
            uri.push_str("?versionId=");
            uri.push_str(&request_path_key(version).replace('/', "%2F"));
        }
        let mut request = http::Request::get(uri.as_str());
        let optional = [
            ("if-match", conditions.if_match),
            ("range", conditions.range),
            (
                "x-amz-expected-bucket-owner",
                conditions.expected_bucket_owner,
            ),
            ("x-amz-checksum-mode", Some("ENABLED")),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        let mut request = request
            .body(Empty::new())
            .map_err(|e| RemoteFailure::Permanent(format!("cannot build GET {uri}: {e}")))?;
        self.sign(&mut request, endpoint).await?;
        tokio::time::timeout(self.attempt_timeout, self.client.request(request))
            .await
            .map_err(|_| {
                RemoteFailure::Transient(
                    "no answer within the request timeout (--request-timeout, S3BUNDLER_REQUEST_TIMEOUT)"
                        .into(),
                )
            })?
            .map_err(|e| RemoteFailure::Transient(format!("connection failed: {}", error_chain(&e))))
    }

    async fn sign(
        &self,
        request: &mut http::Request<Empty<Bytes>>,
        endpoint: &BucketEndpoint,
    ) -> Result<(), RemoteFailure> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            self.credentials.get().await?.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&endpoint.signing_region)
            .name(&endpoint.signing_name)
            .time(self.clock.now())
            .settings(settings)
            .build()
            .map_err(|e| RemoteFailure::Permanent(format!("cannot sign: {e}")))?
            .into();
        let uri = request.uri().to_string();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            "GET",
            uri.as_str(),
            headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| RemoteFailure::Permanent(format!("cannot sign GET {uri}: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| RemoteFailure::Permanent(format!("cannot sign GET {uri}: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        map
    }

    #[test]
    fn a_full_answer_is_read_field_by_field() {
        let head = ObjectHead::from_headers(&headers(&[
            ("content-length", "4096"),
            ("etag", "\"0123456789abcdef0123456789abcdef\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("x-amz-version-id", "v1"),
            ("x-amz-storage-class", "STANDARD_IA"),
            ("content-type", "text/plain"),
            ("cache-control", "no-cache"),
            ("expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
            ("x-amz-meta-owner", "alice"),
            ("x-amz-meta-empty", ""),
            ("x-amz-tagging-count", "2"),
            ("x-amz-server-side-encryption", "aws:kms"),
            ("x-amz-checksum-crc64nvme", "AAAAAAAAAAA="),
            ("x-amz-checksum-type", "FULL_OBJECT"),
        ]))
        .expect("valid headers");
        assert_eq!(head.size, 4096);
        assert_eq!(
            head.etag.as_deref(),
            Some("\"0123456789abcdef0123456789abcdef\"")
        );
        assert_eq!(head.last_modified.map(|t| t.secs()), Some(1_445_412_480));
        assert_eq!(head.version_id.as_deref(), Some("v1"));
        assert_eq!(head.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(
            head.expires.as_deref(),
            Some("Thu, 01 Dec 1994 16:00:00 GMT")
        );
        assert_eq!(
            head.metadata,
            BTreeMap::from([
                ("empty".to_string(), String::new()),
                ("owner".to_string(), "alice".to_string())
            ])
        );
        assert_eq!(head.tag_count, 2);
        assert_eq!(head.sse.as_deref(), Some("aws:kms"));
        assert_eq!(
            head.checksums,
            BTreeMap::from([("crc64nvme".to_string(), "AAAAAAAAAAA=".to_string())])
        );
        assert_eq!(head.checksum_type.as_deref(), Some("FULL_OBJECT"));
    }

    #[test]
    fn malformed_required_headers_are_errors_that_name_them() {
        let error = ObjectHead::from_headers(&headers(&[("content-length", "4k")]))
            .expect_err("a bad length");
        assert!(error.contains("content-length"), "{error}");
        let error = ObjectHead::from_headers(&headers(&[("last-modified", "yesterday")]))
            .expect_err("a bad date");
        assert!(error.contains("last-modified"), "{error}");
        let error = ObjectHead::from_headers(&headers(&[("x-amz-tagging-count", "-1")]))
            .expect_err("a bad count");
        assert!(error.contains("x-amz-tagging-count"), "{error}");
    }

    #[tokio::test]
    async fn aws_endpoints_are_the_sdk_s_virtual_hosted_or_path_style_ones() {
        let settings = EndpointSettings {
            region: "us-west-2".into(),
            ..EndpointSettings::default()
        };
        let endpoint = resolve_endpoint(&settings, "my-bucket")
            .await
            .expect("resolved");
        assert_eq!(endpoint.url, "https://my-bucket.s3.us-west-2.amazonaws.com");
        assert_eq!(endpoint.signing_region, "us-west-2");
        assert_eq!(endpoint.signing_name, "s3");
        // A bucket name with dots cannot be a TLS host name: the rules fall back to a path.
        let dotted = resolve_endpoint(&settings, "my.bucket")
            .await
            .expect("resolved");
        assert_eq!(dotted.url, "https://s3.us-west-2.amazonaws.com/my.bucket");
        let fips = EndpointSettings {
            use_fips: true,
            ..settings.clone()
        };
        let endpoint = resolve_endpoint(&fips, "my-bucket")
            .await
            .expect("resolved");
        assert_eq!(
            endpoint.url,
            "https://my-bucket.s3-fips.us-west-2.amazonaws.com"
        );
        // S3 Express directory buckets sign with their own session scheme.
        let express = resolve_endpoint(&settings, "b--usw2-az1--x-s3").await;
        assert!(express.is_err(), "{express:?}");
    }

    fn checked(pairs: &[(&'static str, &str)], body: &[u8]) -> Option<Result<(), String>> {
        let head = ObjectHead::from_headers(&headers(pairs)).expect("valid headers");
        let mut check = BodyChecksum::for_answer(&head)?;
        check.update(&body[..4]);
        check.update(&body[4..]);
        Some(check.verify())
    }

    #[test]
    fn full_object_checksums_are_verified_and_composite_ones_skipped() {
        let body = b"123456789";
        // The standard check values of CRC-32 and CRC-32C over "123456789".
        assert_eq!(
            checked(&[("x-amz-checksum-crc32", "y/Q5Jg==")], body),
            Some(Ok(()))
        );
        assert_eq!(
            checked(&[("x-amz-checksum-crc32c", "4waSgw==")], body),
            Some(Ok(()))
        );
        let wrong = checked(&[("x-amz-checksum-crc32", "AAAAAA==")], body);
        assert!(
            matches!(&wrong, Some(Err(e)) if e.starts_with("checksum mismatch")),
            "{wrong:?}"
        );
        // CRC32C wins over CRC32 when both are sent, as in the SDK.
        let both = [
            ("x-amz-checksum-crc32", "AAAAAA=="),
            ("x-amz-checksum-crc32c", "4waSgw=="),
        ];
        assert_eq!(checked(&both, body), Some(Ok(())));
        assert_eq!(
            checked(&[("x-amz-checksum-crc32", "y/Q5Jg==-3")], body),
            None
        );
        let composite = [
            ("x-amz-checksum-crc32", "AAAAAA=="),
            ("x-amz-checksum-type", "COMPOSITE"),
        ];
        assert_eq!(checked(&composite, body), None);
        assert_eq!(checked(&[], body), None);
    }

    /// Fails on the old code, which never corrected the clock it signed with.
    #[test]
    fn a_skewed_clock_is_corrected_from_the_refusal_s_date_once() {
        let clock = ClockOffset::default();
        let sent = SystemTime::now();
        let date = |time: SystemTime| {
            let text = DateTime::from(time)
                .fmt(Format::HttpDate)
                .expect("an HTTP date");
            http::HeaderValue::from_str(&text).expect("a header value")
        };
        let ahead = date(sent + Duration::from_secs(3600));
        assert!(
            clock.correct(Some(&ahead), sent, 0),
            "an hour off: worth it"
        );
        let offset = clock.millis();
        assert!((3_595_000..=3_601_000).contains(&offset), "{offset}");
        let signed = clock.now();
        assert!(
            signed > sent + Duration::from_secs(3590),
            "signed with S3's time"
        );
        assert!(
            !clock.correct(Some(&ahead), sent, offset),
            "refused again with the corrected clock: correcting cannot help"
        );
        assert!(
            !clock.correct(None, sent, 0),
            "no Date, nothing to correct from"
        );
        let behind = date(sent - Duration::from_secs(1800));
        assert!(clock.correct(Some(&behind), sent, offset));
        assert!(clock.millis() < -1_795_000, "{}", clock.millis());
    }

    #[test]
    fn error_bodies_give_their_code_and_message() {
        let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate &amp; retry.</Message><RequestId>1</RequestId></Error>";
        assert_eq!(
            error_code_and_message(body),
            (
                Some("SlowDown".to_string()),
                Some("Please reduce your request rate & retry.".to_string())
            )
        );
        assert_eq!(error_code_and_message(b""), (None, None));
        assert_eq!(error_code_and_message(b"<Error><Code>Cut"), (None, None));
    }
}
