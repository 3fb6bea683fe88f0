//! A fault-injecting HTTP proxy on 127.0.0.1 in front of a local S3 server: it answers some
//! requests with 503 SlowDown or 500 InternalError, cuts some response bodies in the middle,
//! fails some part uploads, and can slow every GET down, so tests can show that every object still ends archived intact
//! or in the DLQ, never lost. Faults are chosen by a counter per request kind, so runs repeat.
//! It can also reject chosen PUTs, GETs and copies with any S3 error, stall an error answer's body,
//! run its clock ahead of the client's, expire the credentials after some GETs, hold a commit or
//! copy back long enough for a test to stop the process, record requests missing a required
//! header, and put chosen objects in a cold storage class (restored or not).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat as Format};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Which requests fail. `every_n` of 0 disables a fault; 3 means the 3rd, 6th, 9th… request of
/// that kind fails.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// GetObject answered 503 SlowDown.
    pub get_503_every: u64,
    /// GetObject answered 500 InternalError.
    pub get_500_every: u64,
    /// GetObject whose body is cut after half its bytes.
    pub get_cut_every: u64,
    /// The first this many GetObjects have their body cut after half its bytes: a read whose
    /// resumption must then go through.
    pub get_cut_first: u64,
    /// The first GetObject of each key containing this text sends half its body, then nothing
    /// more while the connection stays open: a stalled body, which only a read timeout ends.
    pub stall_keys_containing: Option<String>,
    /// Every GetObject of keys containing this text has its body cut after half its bytes: a
    /// connection that keeps dropping, each resumed read getting half of what is left.
    pub cut_keys_containing: Option<String>,
    /// UploadPart answered 500 InternalError.
    pub upload_part_500_every: u64,
    /// GetObject of keys containing this text always answers 503.
    pub always_fail_keys_containing: Option<String>,
    /// GetObject of keys containing this text returns the body with its first byte changed;
    /// `get_503_every` and `get_500_every` pass such reads by, so that what the client reports
    /// for them is the corruption, whatever order the reads come in.
    pub corrupt_keys_containing: Option<String>,
    /// Every GetObject waits this long before it is forwarded: a slow manifest, for tests that
    /// stop or outlast a worker mid-manifest.
    pub get_delay: Option<Duration>,
    /// With `get_delay`: only GetObject of keys containing this text waits.
    pub delay_keys_containing: Option<String>,
    /// PutObject of keys ending with a suffix answered with an error: a commit step (a bundle's
    /// index, a report) that fails, once or always, so a test sees what is left and what a re-run does.
    pub fail_put_keys_ending_with: Option<FailPut>,
    /// GetObject answered with an error once some GetObjects went through: credentials that
    /// expire or lose access in the middle of a run.
    pub gets_fail_after: Option<FailAfter>,
    /// The first this many GetObject attempts of each key answered 503 SlowDown, then it is
    /// served: a healthy object throttled many times in a row must still end archived.
    pub slowdown_first_tries: u64,
    /// Headers (name, value) every request S3 accepts them on must carry with this value (see
    /// `header_required`): requests are still forwarded, each miss is recorded in
    /// `FaultCounts::header_violations`, so a test shows a setting reaches every request.
    pub require_headers: Vec<(String, String)>,
    /// PutObject and CompleteMultipartUpload wait this long before they are forwarded: a commit
    /// in flight, for tests that stop a worker during it.
    pub put_delay: Option<Duration>,
    /// With `put_delay`: only keys ending with this text wait.
    pub delay_put_keys_ending_with: Option<String>,
    /// Every CompleteMultipartUpload waits this long before it is forwarded (or `put_delay` if
    /// that applies and is longer): a test stops a worker while an upload finishes.
    pub complete_delay: Option<Duration>,
    /// Every UploadPartCopy and CopyObject waits this long before it is forwarded: a test stops a
    /// worker during a copy.
    pub upload_part_copy_delay: Option<Duration>,
    /// Every request waits at least this long before it is forwarded: the round trip of a real
    /// S3 endpoint, which the local servers do not have.
    pub latency: Option<Duration>,
    /// S3's write-once condition where the local server lacks it: a PutObject or
    /// CompleteMultipartUpload with `If-None-Match: *` on a key that exists is answered 412
    /// PreconditionFailed (moto and s3s-fs ignore it on CompleteMultipartUpload).
    pub write_once: bool,
    /// PutObject or CreateMultipartUpload of keys ending with a suffix is forwarded (the write
    /// happens, the upload is created), then answered with an error instead of the server's
    /// answer: an answer lost on the way back, which the client's retry meets as its own write,
    /// or which leaves an upload the client never heard of.
    pub lose_answers_ending_with: Option<FailPut>,
    /// Requests after the first this many are held, never answered: the moment for a test to
    /// kill the client between two requests (a crash at a chosen point).
    pub hold_after: Option<u64>,
    /// GetObject of keys containing a text answered with an error of the test's choice
    /// (NoSuchBucket, 301 PermanentRedirect, 409 ConditionalRequestConflict, a KMS
    /// AccessDenied, a code s3bundler does not know); the first rule that matches answers.
    pub get_errors: Vec<FailMatching>,
    /// HeadObject of keys containing a text answered with an error; as S3's, the answer has
    /// no body, so the client sees the status alone.
    pub head_errors: Vec<FailMatching>,
    /// CopyObject and UploadPartCopy whose source (`x-amz-copy-source`) contains a text
    /// answered with an error: a source that went to GLACIER after the inventory (403
    /// InvalidObjectState), one the role may not read.
    pub copy_errors: Vec<FailMatching>,
    /// The first GetObject of each key containing this text is answered 503 SlowDown with an
    /// error body that stops after its first bytes while the connection stays open: only a
    /// timeout on reading error bodies ends it.
    pub stall_error_keys_containing: Option<String>,
    /// The proxy's clock runs this far ahead of the client's, as a server's whose time differs:
    /// every answer's Date header says the proxy's time, and a request whose x-amz-date is more
    /// than 15 minutes off it is answered 403 RequestTimeTooSkewed, as S3 does. Only a client
    /// that corrects its clock from the Date header gets through.
    pub clock_ahead: Option<Duration>,
    /// Objects whose key contains a text are in a cold storage class, as after a lifecycle
    /// transition: their GetObject is answered 403 InvalidObjectState and their HeadObject
    /// reports the class (`x-amz-storage-class`), as S3 does for GLACIER and DEEP_ARCHIVE.
    pub cold: Option<Cold>,
    /// The first this many RestoreObject requests answered 503 SlowDown: throttled restores
    /// must be tried again.
    pub restore_503_first: u64,
}

/// Keys containing `needle` are in `storage_class`, restored or not. The proxy answers their
/// RestoreObject itself, as S3 does: 202 and a restore that HEAD shows in progress
/// (`x-amz-restore: ongoing-request="true"`) for `restore_heads` HEADs, then finished; a
/// second request meanwhile is answered 409 RestoreAlreadyInProgress, one after it 200.
#[derive(Debug, Clone)]
pub struct Cold {
    pub needle: String,
    pub storage_class: String,
    /// A restore has finished: GETs are served, and HEAD says so (`x-amz-restore`).
    pub restored: bool,
    /// `x-amz-archive-status` on HEAD until restored (Intelligent-Tiering's ARCHIVE_ACCESS,
    /// DEEP_ARCHIVE_ACCESS).
    pub archive_status: Option<String>,
    /// HEADs that see a requested restore in progress before it finishes.
    pub restore_heads: u64,
}

impl Cold {
    pub fn new(needle: &str, storage_class: &str) -> Cold {
        Cold {
            needle: needle.to_string(),
            storage_class: storage_class.to_string(),
            restored: false,
            archive_status: None,
            restore_heads: 0,
        }
    }

    /// In an Intelligent-Tiering archive tier (`ARCHIVE_ACCESS`, `DEEP_ARCHIVE_ACCESS`).
    pub fn in_archive_tier(needle: &str, status: &str) -> Cold {
        Cold {
            archive_status: Some(status.to_string()),
            ..Cold::new(needle, "INTELLIGENT_TIERING")
        }
    }

    /// A requested restore stays in progress for this many HEADs.
    pub fn restoring_for(self, heads: u64) -> Cold {
        Cold {
            restore_heads: heads,
            ..self
        }
    }

    /// The same objects, restored.
    pub fn restored(self) -> Cold {
        Cold {
            restored: true,
            ..self
        }
    }

    fn holds(&self, key: &str) -> bool {
        key.contains(&self.needle)
    }
}

/// Requests whose key (for copies, whose source) contains `needle` answered `status` with S3
/// error `code` and `message`.
#[derive(Debug, Clone)]
pub struct FailMatching {
    pub needle: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Only the first this many matching requests fail (so a retry succeeds); None: every one.
    pub times: Option<u64>,
}

impl FailMatching {
    /// Every request matching `needle` answered `status` and `code`.
    pub fn new(needle: &str, status: u16, code: &str) -> FailMatching {
        FailMatching {
            needle: needle.to_string(),
            status,
            code: code.to_string(),
            message: INJECTED_MESSAGE.to_string(),
            times: None,
        }
    }

    /// With S3's `message`, which may tell more than the code (a KMS key, SSE-C).
    pub fn saying(self, message: &str) -> FailMatching {
        FailMatching {
            message: message.to_string(),
            ..self
        }
    }
}

/// The message of an injected error, unless a rule gives one.
const INJECTED_MESSAGE: &str = "injected by the test proxy";

/// How far a request's x-amz-date may be from the server's clock (S3's limit).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// How long a cut body waits, its bytes sent, before it breaks the connection.
const CUT_AFTER: Duration = Duration::from_millis(10);

/// Bytes of a stalled error body sent before it stops.
const STALLED_ERROR_PREFIX: usize = 20;

/// PutObject of keys ending with `suffix` answered `status` with S3 error `code`.
#[derive(Debug, Clone)]
pub struct FailPut {
    pub suffix: String,
    pub status: u16,
    pub code: String,
    /// Only the first this many such PUTs fail (so a re-run succeeds); None: every one.
    pub times: Option<u64>,
}

impl FailPut {
    /// Every PutObject of keys ending with `suffix` answered 500 InternalError.
    pub fn internal_error(suffix: &str) -> FailPut {
        FailPut {
            suffix: suffix.to_string(),
            status: 500,
            code: "InternalError".to_string(),
            times: None,
        }
    }
}

/// Every GetObject after the first `after` answered `status` with S3 error `code`, such as 400
/// ExpiredToken, 403 AccessDenied or 403 InvalidAccessKeyId.
#[derive(Debug, Clone)]
pub struct FailAfter {
    pub after: u64,
    pub status: u16,
    pub code: String,
    /// HeadObject and GetObjectTagging fail too once `after` GetObjects went through.
    pub all_object_reads: bool,
}

impl FailAfter {
    /// GetObjects after the first `after` answered `status` and `code`.
    pub fn new(after: u64, status: u16, code: &str) -> FailAfter {
        FailAfter {
            after,
            status,
            code: code.to_string(),
            all_object_reads: false,
        }
    }
}

/// What the proxy did, for assertions.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub gets: AtomicU64,
    /// GetObject answered 503 SlowDown, `slowdown_first_tries` included.
    pub injected_503: AtomicU64,
    pub injected_500: AtomicU64,
    pub cut_bodies: AtomicU64,
    /// Bodies that stopped sending halfway (`stall_keys_containing`).
    pub stalled_bodies: AtomicU64,
    pub failed_parts: AtomicU64,
    pub corrupted: AtomicU64,
    /// GetObjectTagging requests seen.
    pub tagging_gets: AtomicU64,
    /// Every request forwarded or answered, by S3 operation (see `operation`).
    pub operations: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// PutObject answered with the error of `fail_put_keys_ending_with`.
    pub rejected_puts: AtomicU64,
    /// Reads answered with the error of `gets_fail_after`.
    pub injected_after: AtomicU64,
    /// Writes refused by `write_once`.
    pub refused_writes: AtomicU64,
    /// Answers replaced by `lose_answers_ending_with`.
    pub lost_answers: AtomicU64,
    /// Every request the proxy received.
    pub requests: AtomicU64,
    /// Requests held by `hold_after`.
    pub held: AtomicU64,
    /// "Operation path: problem" for each request without a header of `require_headers`.
    pub header_violations: Mutex<Vec<String>>,
    /// Requests answered by a rule of `get_errors`, `head_errors` or `copy_errors`.
    pub injected_matching: AtomicU64,
    /// Error answers whose body stalled (`stall_error_keys_containing`).
    pub stalled_errors: AtomicU64,
    /// Requests refused as RequestTimeTooSkewed (`clock_ahead`).
    pub skewed: AtomicU64,
    /// GetObjects of cold objects refused (`cold`).
    pub cold_gets: AtomicU64,
    /// The bodies of the RestoreObject requests the proxy answered for cold objects.
    pub restore_requests: Mutex<Vec<String>>,
    /// RestoreObject requests answered 503 SlowDown (`restore_503_first`).
    pub throttled_restores: AtomicU64,
    /// PutObjects and UploadParts that carried no checksum S3 verifies before it stores the
    /// bytes (no `Content-MD5`, no `x-amz-checksum-*` header or trailer).
    pub unchecked_uploads: AtomicU64,
}

impl FaultCounts {
    /// How many requests of each operation the proxy saw.
    pub fn operations(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.operations
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }

    /// The requests that lacked a header of `require_headers`, or had another value.
    pub fn header_violations(&self) -> Vec<String> {
        self.header_violations
            .lock()
            .map(|violations| violations.clone())
            .unwrap_or_default()
    }
}

/// Whether a request of `operation` must carry `header` when a test requires it, as S3 accepts
/// it: server-side encryption settings only on requests that create an object (UploadPart and
/// CompleteMultipartUpload take them from CreateMultipartUpload), the expected bucket owner and any
/// other header on every request.
fn header_required(operation: &str, header: &str) -> bool {
    match header.to_ascii_lowercase().as_str() {
        "x-amz-server-side-encryption"
        | "x-amz-server-side-encryption-aws-kms-key-id"
        | "x-amz-server-side-encryption-context"
        | "x-amz-server-side-encryption-bucket-key-enabled" => matches!(
            operation,
            "PutObject" | "CreateMultipartUpload" | "CopyObject"
        ),
        _ => true,
    }
}

/// The S3 operation of a path-style request, from its method, query and headers.
pub fn operation(
    method: &http::Method,
    path: &str,
    query: &str,
    copy_source: bool,
) -> &'static str {
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair == name || pair.starts_with(&format!("{name}=")))
    };
    // `/bucket/` (how a listing may be addressed) names no object.
    let on_object = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    match *method {
        http::Method::GET if has("tagging") => "GetObjectTagging",
        http::Method::GET if has("uploads") => "ListMultipartUploads",
        http::Method::GET if has("uploadId") => "ListParts",
        http::Method::GET if on_object => "GetObject",
        http::Method::GET if has("versions") => "ListObjectVersions",
        http::Method::GET => "ListObjects",
        http::Method::HEAD if on_object => "HeadObject",
        http::Method::HEAD => "HeadBucket",
        http::Method::PUT if has("partNumber") && copy_source => "UploadPartCopy",
        http::Method::PUT if has("partNumber") => "UploadPart",
        http::Method::PUT if has("tagging") => "PutObjectTagging",
        http::Method::PUT if copy_source => "CopyObject",
        http::Method::PUT if on_object => "PutObject",
        http::Method::PUT => "CreateBucket",
        http::Method::POST if has("uploads") => "CreateMultipartUpload",
        http::Method::POST if has("uploadId") => "CompleteMultipartUpload",
        http::Method::POST if has("delete") => "DeleteObjects",
        http::Method::POST if has("restore") => "RestoreObject",
        http::Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        http::Method::DELETE if on_object => "DeleteObject",
        _ => "Other",
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    pub counts: Arc<FaultCounts>,
}

/// An answer the proxy gives instead of the upstream server's.
struct Injected<'a> {
    status: StatusCode,
    code: &'a str,
    message: &'a str,
    /// The body stops after its first bytes, the connection left open.
    stalls: bool,
}

impl<'a> Injected<'a> {
    fn new(status: StatusCode, code: &'a str) -> Self {
        Injected {
            status,
            code,
            message: INJECTED_MESSAGE,
            stalls: false,
        }
    }

    /// The error a plan chose by number; a number that is no HTTP status becomes 500.
    fn chosen(status: u16, code: &'a str) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Injected::new(status, code)
    }

    fn response(&self) -> Response<ProxyBody> {
        let body = Bytes::from(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>", self.code, self.message));
        let body = if self.stalls {
            stalled_body(body.slice(..STALLED_ERROR_PREFIX.min(body.len())))
        } else {
            Full::new(body).map_err(|never| match never {}).boxed()
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/xml"),
        );
        response
    }
}

/// `first`, then nothing, forever, with the connection open.
fn stalled_body(first: Bytes) -> ProxyBody {
    let stream = futures::stream::once(async move { Ok(Frame::data(first)) })
        .chain(futures::stream::pending());
    BodyExt::boxed(StreamBody::new(stream))
}

fn hits(counter: u64, every: u64) -> bool {
    every > 0 && counter.is_multiple_of(every)
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`) on its own thread.
    pub fn start(upstream: &str, plan: FaultPlan) -> std::io::Result<FaultProxy> {
        let upstream: http::Uri = upstream.parse().map_err(std::io::Error::other)?;
        let counts = Arc::new(FaultCounts::default());
        let state = Arc::new(State {
            plan,
            counts: counts.clone(),
            upstream: Some(crate::s3_client(&upstream.to_string())),
            ..State::default()
        });
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let address = crate::http_server::serve("fault-proxy", move |request| {
            let (client, upstream, state) = (client.clone(), upstream.clone(), state.clone());
            async move { handle(request, &client, &upstream, &state).await }
        })?;
        Ok(FaultProxy {
            endpoint: format!("http://{address}"),
            counts,
        })
    }
}

/// The plan, what happened, and the counters that pick the faults.
#[derive(Default)]
struct State {
    plan: FaultPlan,
    counts: Arc<FaultCounts>,
    /// GetObjects seen.
    gets: AtomicU64,
    /// UploadParts and UploadPartCopys seen.
    parts: AtomicU64,
    /// PutObjects of keys `fail_put_keys_ending_with` matches seen.
    failing_puts: AtomicU64,
    /// Requests `lose_answers_ending_with` matches seen.
    lost_answers_seen: AtomicU64,
    /// A client of the upstream server, for `write_once`.
    upstream: Option<aws_sdk_s3::Client>,
    /// GetObject attempts by bucket/key, for `slowdown_first_tries`.
    tries: Mutex<HashMap<String, u64>>,
    /// Keys whose body was stalled once (`stall_keys_containing`).
    stalled: Mutex<HashSet<String>>,
    /// Keys whose error answer stalled once (`stall_error_keys_containing`).
    stalled_errors: Mutex<HashSet<String>>,
    /// Requests each rule of `get_errors`, `head_errors` and `copy_errors` answered, by list
    /// and position.
    rule_hits: Mutex<HashMap<(&'static str, usize), u64>>,
    /// RestoreObject requests seen.
    restores_seen: AtomicU64,
    /// Cold keys whose restore was requested, with the HEADs left before it finishes.
    restoring: Mutex<HashMap<String, u64>>,
}

/// Where the restore of a cold object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thaw {
    Cold,
    InProgress,
    Restored,
}

/// How to spoil the body of a forwarded GetObject's answer.
#[derive(Default)]
struct Spoil {
    /// Only the first half of the body is sent.
    half: Option<HalfEnd>,
    corrupt: bool,
}

impl State {
    /// An injected answer to a request of `operation` on `key` (bucket/key; a copy's source is
    /// `copy_source`), or how to spoil the answer of the upstream server.
    fn decide(
        &self,
        operation: &str,
        key: &str,
        copy_source: Option<&str>,
    ) -> Result<Spoil, Injected<'_>> {
        let copied = |source| self.matching("copy", &self.plan.copy_errors, source);
        let injected = match (operation, copy_source) {
            ("GetObject", _) => return self.get_object(key),
            ("HeadObject", _) => self
                .matching("head", &self.plan.head_errors, key)
                .or_else(|| self.failed_after(self.gets.load(Ordering::Relaxed), false)),
            ("GetObjectTagging", _) => self.failed_after(self.gets.load(Ordering::Relaxed), false),
            ("UploadPartCopy", Some(source)) => copied(source).or_else(|| self.failed_part()),
            ("CopyObject", Some(source)) => copied(source),
            ("UploadPart" | "UploadPartCopy", _) => self.failed_part(),
            ("PutObject", _) => self.rejected_put(key),
            _ => None,
        };
        injected.map_or(Ok(Spoil::default()), Err)
    }

    /// The answer of the first rule of `rules` (the list `list`) whose needle `text` contains
    /// and that has not answered its `times` yet.
    fn matching<'s>(
        &'s self,
        list: &'static str,
        rules: &'s [FailMatching],
        text: &str,
    ) -> Option<Injected<'s>> {
        let mut hits = self.rule_hits.lock().ok()?;
        let rule = rules.iter().enumerate().find_map(|(position, rule)| {
            let answered = hits.entry((list, position)).or_default();
            let due = text.contains(&rule.needle) && rule.times.is_none_or(|t| *answered < t);
            *answered += u64::from(due);
            due.then_some(rule)
        })?;
        self.counts
            .injected_matching
            .fetch_add(1, Ordering::Relaxed);
        Some(Injected {
            message: &rule.message,
            ..Injected::chosen(rule.status, &rule.code)
        })
    }

    /// 403 RequestTimeTooSkewed for a request signed more than 15 minutes off the proxy's
    /// clock (`clock_ahead`).
    fn skewed(&self, headers: &http::HeaderMap) -> Option<Injected<'static>> {
        let now = SystemTime::now() + self.plan.clock_ahead?;
        let signed = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .and_then(amz_date)?;
        let off = now
            .duration_since(signed)
            .or_else(|_| signed.duration_since(now))
            .unwrap_or_default();
        if off <= MAX_SKEW {
            return None;
        }
        self.counts.skewed.fetch_add(1, Ordering::Relaxed);
        Some(Injected {
            message: "The difference between the request time and the current time is too large.",
            ..Injected::new(StatusCode::FORBIDDEN, "RequestTimeTooSkewed")
        })
    }

    fn get_object(&self, key: &str) -> Result<Spoil, Injected<'_>> {
        let (plan, counts) = (&self.plan, &self.counts);
        let n = self.gets.fetch_add(1, Ordering::Relaxed) + 1;
        counts.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(response) = self.failed_after(n - 1, true) {
            return Err(response);
        }
        if let Some(response) = self.matching("get", &plan.get_errors, key) {
            return Err(response);
        }
        if matches!(self.thaw(key, false), Some(Thaw::Cold | Thaw::InProgress)) {
            counts.cold_gets.fetch_add(1, Ordering::Relaxed);
            return Err(Injected {
                message: "The operation is not valid for the object's storage class",
                ..Injected::new(StatusCode::FORBIDDEN, "InvalidObjectState")
            });
        }
        if self.first_time(&plan.stall_error_keys_containing, &self.stalled_errors, key) {
            counts.stalled_errors.fetch_add(1, Ordering::Relaxed);
            return Err(Injected {
                stalls: true,
                ..Injected::new(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
            });
        }
        let corrupt = plan
            .corrupt_keys_containing
            .as_deref()
            .is_some_and(|needle| key.contains(needle));
        if self.throttled_try(key)
            || plan
                .always_fail_keys_containing
                .as_deref()
                .is_some_and(|needle| key.contains(needle))
            || (hits(n, plan.get_503_every) && !corrupt)
        {
            counts.injected_503.fetch_add(1, Ordering::Relaxed);
            return Err(Injected::new(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
        }
        if hits(n, plan.get_500_every) && !corrupt {
            counts.injected_500.fetch_add(1, Ordering::Relaxed);
            return Err(Injected::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
            ));
        }
        Ok(Spoil {
            half: if self.first_time(&plan.stall_keys_containing, &self.stalled, key) {
                Some(HalfEnd::Stall)
            } else if hits(n, plan.get_cut_every)
                || n <= plan.get_cut_first
                || plan
                    .cut_keys_containing
                    .as_deref()
                    .is_some_and(|needle| key.contains(needle))
            {
                Some(HalfEnd::Cut)
            } else {
                None
            },
            corrupt,
        })
    }

    /// Where the restore of `key` stands, `None` when it is not cold; a HEAD (`head`) of a
    /// restore in progress counts towards its end.
    fn thaw(&self, key: &str, head: bool) -> Option<Thaw> {
        let cold = self.plan.cold.as_ref().filter(|c| c.holds(key))?;
        if cold.restored {
            return Some(Thaw::Restored);
        }
        let mut restoring = self.restoring.lock().ok()?;
        Some(match restoring.get_mut(key) {
            None => Thaw::Cold,
            Some(0) => Thaw::Restored,
            Some(left) => {
                *left -= u64::from(head);
                Thaw::InProgress
            }
        })
    }

    /// The answer to a RestoreObject of `key`: throttled (`restore_503_first`), or for a cold
    /// key the proxy's own (the upstream server holds it in STANDARD); `None` to forward it.
    fn restore(&self, key: &str, body: Option<&[u8]>) -> Option<Response<ProxyBody>> {
        let n = self.restores_seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= self.plan.restore_503_first {
            self.counts
                .throttled_restores
                .fetch_add(1, Ordering::Relaxed);
            return Some(Injected::new(StatusCode::SERVICE_UNAVAILABLE, "SlowDown").response());
        }
        let cold = self.plan.cold.as_ref().filter(|c| c.holds(key))?;
        if let Ok(mut requests) = self.counts.restore_requests.lock() {
            requests.push(String::from_utf8_lossy(body.unwrap_or_default()).into_owned());
        }
        let status = match self.thaw(key, false)? {
            Thaw::InProgress => {
                return Some(
                    Injected::new(StatusCode::CONFLICT, "RestoreAlreadyInProgress").response(),
                )
            }
            Thaw::Restored => StatusCode::OK,
            Thaw::Cold => {
                self.restoring
                    .lock()
                    .ok()?
                    .insert(key.to_string(), cold.restore_heads);
                StatusCode::ACCEPTED
            }
        };
        let mut response = Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        Some(response)
    }

    /// The error of `gets_fail_after` for a read that comes after `gets_before` GetObjects.
    fn failed_after(&self, gets_before: u64, get_object: bool) -> Option<Injected<'_>> {
        let fail = self.plan.gets_fail_after.as_ref()?;
        if gets_before < fail.after || !(get_object || fail.all_object_reads) {
            return None;
        }
        self.counts.injected_after.fetch_add(1, Ordering::Relaxed);
        Some(Injected::chosen(fail.status, &fail.code))
    }

    /// Whether this GetObject of `key` is one of its first `slowdown_first_tries`.
    fn throttled_try(&self, key: &str) -> bool {
        let limit = self.plan.slowdown_first_tries;
        if limit == 0 {
            return false;
        }
        let Ok(mut tries) = self.tries.lock() else {
            return false;
        };
        let tried = tries.entry(key.to_string()).or_default();
        *tried += 1;
        *tried <= limit
    }

    /// True for the first GetObject of a key that contains `needle`, by the keys `seen`.
    fn first_time(
        &self,
        needle: &Option<String>,
        seen: &Mutex<HashSet<String>>,
        key: &str,
    ) -> bool {
        let Some(needle) = needle.as_deref() else {
            return false;
        };
        key.contains(needle)
            && seen
                .lock()
                .is_ok_and(|mut seen| seen.insert(key.to_string()))
    }

    fn failed_part(&self) -> Option<Injected<'static>> {
        let n = self.parts.fetch_add(1, Ordering::Relaxed) + 1;
        if !hits(n, self.plan.upload_part_500_every) {
            return None;
        }
        self.counts.failed_parts.fetch_add(1, Ordering::Relaxed);
        Some(Injected::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
        ))
    }

    fn rejected_put(&self, key: &str) -> Option<Injected<'_>> {
        let fail = self
            .plan
            .fail_put_keys_ending_with
            .as_ref()
            .filter(|fail| key.ends_with(&fail.suffix))?;
        let n = self.failing_puts.fetch_add(1, Ordering::Relaxed) + 1;
        if fail.times.is_some_and(|times| n > times) {
            return None;
        }
        self.counts.rejected_puts.fetch_add(1, Ordering::Relaxed);
        Some(Injected::chosen(fail.status, &fail.code))
    }

    /// The error that replaces the answer to a PutObject or CreateMultipartUpload of `key` once
    /// it was forwarded.
    fn lost_answer(&self, key: &str) -> Option<Injected<'_>> {
        let lose = self
            .plan
            .lose_answers_ending_with
            .as_ref()
            .filter(|lose| key.ends_with(&lose.suffix))?;
        let n = self.lost_answers_seen.fetch_add(1, Ordering::Relaxed) + 1;
        if lose.times.is_some_and(|times| n > times) {
            return None;
        }
        self.counts.lost_answers.fetch_add(1, Ordering::Relaxed);
        Some(Injected::chosen(lose.status, &lose.code))
    }

    /// With `write_once`: true when a write that must not replace anything would, i.e. an
    /// object exists at `key` (`bucket/key`, decoded).
    async fn refuses_write(&self, operation: &str, key: &str, headers: &http::HeaderMap) -> bool {
        let conditional = headers
            .get("if-none-match")
            .is_some_and(|value| value.as_bytes() == b"*");
        let (Some(client), true, true) = (
            self.upstream.as_ref(),
            self.plan.write_once && conditional,
            matches!(operation, "PutObject" | "CompleteMultipartUpload"),
        ) else {
            return false;
        };
        let Some((bucket, key)) = key.trim_start_matches('/').split_once('/') else {
            return false;
        };
        let exists = client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .is_ok();
        if exists {
            self.counts.refused_writes.fetch_add(1, Ordering::Relaxed);
        }
        exists
    }

    /// How long a request of `operation` on `key` waits before it is forwarded.
    fn delay(&self, operation: &str, key: &str) -> Option<Duration> {
        let plan = &self.plan;
        let commit = plan.put_delay.filter(|_| {
            plan.delay_put_keys_ending_with
                .as_deref()
                .is_none_or(|suffix| key.ends_with(suffix))
        });
        let delay = match operation {
            "GetObject" => plan.get_delay.filter(|_| {
                plan.delay_keys_containing
                    .as_deref()
                    .is_none_or(|needle| key.contains(needle))
            }),
            "PutObject" => commit,
            "CompleteMultipartUpload" => commit.max(plan.complete_delay),
            "UploadPartCopy" | "CopyObject" => plan.upload_part_copy_delay,
            _ => None,
        };
        delay.max(plan.latency)
    }

    /// Records each header of `require_headers` this request should carry with its value and
    /// does not.
    fn check_headers(&self, operation: &str, path: &str, headers: &http::HeaderMap) {
        for (name, expected) in &self.plan.require_headers {
            if !header_required(operation, name) {
                continue;
            }
            let problem = match headers.get(name.as_str()) {
                None => format!("missing {name}"),
                Some(value) if value.as_bytes() == expected.as_bytes() => continue,
                Some(value) => format!(
                    "{name} is {:?}, not {expected:?}",
                    String::from_utf8_lossy(value.as_bytes())
                ),
            };
            if let Ok(mut violations) = self.counts.header_violations.lock() {
                violations.push(format!("{operation} {path}: {problem}"));
            }
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    client: &Client<HttpConnector, Incoming>,
    upstream: &http::Uri,
    state: &State,
) -> Response<ProxyBody> {
    let Some(ahead) = state.plan.clock_ahead else {
        return answer(request, client, upstream, state).await;
    };
    let mut response = match state.skewed(request.headers()) {
        Some(refused) => refused.response(),
        None => answer(request, client, upstream, state).await,
    };
    let now = DateTime::from(SystemTime::now() + ahead);
    if let Some(date) = now
        .fmt(Format::HttpDate)
        .ok()
        .and_then(|date| http::HeaderValue::from_str(&date).ok())
    {
        response.headers_mut().insert("date", date);
    }
    response
}

/// The time of an x-amz-date header (`20260102T030405Z`).
fn amz_date(text: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| text.get(range);
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    SystemTime::try_from(DateTime::from_str(&rfc3339, Format::DateTime).ok()?).ok()
}

/// The answer to one request: injected, or the upstream server's, maybe spoiled.
async fn answer(
    request: Request<Incoming>,
    client: &Client<HttpConnector, Incoming>,
    upstream: &http::Uri,
    state: &State,
) -> Response<ProxyBody> {
    let counts = &state.counts;
    let query = request.uri().query().unwrap_or("").to_string();
    let path = request.uri().path().to_string();
    let name = operation(
        request.method(),
        &path,
        &query,
        request.headers().contains_key("x-amz-copy-source"),
    );
    if let Ok(mut operations) = counts.operations.lock() {
        *operations.entry(name).or_default() += 1;
    }
    let number = counts.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if state.plan.hold_after.is_some_and(|after| number > after) {
        counts.held.fetch_add(1, Ordering::Relaxed);
        return futures::future::pending().await;
    }
    if name == "GetObjectTagging" {
        counts.tagging_gets.fetch_add(1, Ordering::Relaxed);
    }
    state.check_headers(name, &path, request.headers());
    if matches!(name, "PutObject" | "UploadPart") && !carries_checksum(request.headers()) {
        counts.unchecked_uploads.fetch_add(1, Ordering::Relaxed);
    }
    let key = percent_decode(&path);
    let copy_source = request
        .headers()
        .get("x-amz-copy-source")
        .map(|source| percent_decode(&String::from_utf8_lossy(source.as_bytes())));
    if name == "RestoreObject" {
        if state.plan.cold.as_ref().is_some_and(|c| c.holds(&key)) {
            let collected = request.into_body().collect().await;
            let body = collected.map(|b| b.to_bytes()).unwrap_or_default();
            return state.restore(&key, Some(&body)).unwrap_or_else(|| {
                Injected::new(StatusCode::INTERNAL_SERVER_ERROR, "ProxyRestoreState").response()
            });
        }
        if let Some(response) = state.restore(&key, None) {
            return response;
        }
    }
    let spoil = match state.decide(name, &key, copy_source.as_deref()) {
        Ok(spoil) => spoil,
        Err(injected) => return injected.response(),
    };
    if let Some(delay) = state.delay(name, &key) {
        tokio::time::sleep(delay).await;
    }
    if state.refuses_write(name, &key, request.headers()).await {
        return Injected::new(StatusCode::PRECONDITION_FAILED, "PreconditionFailed").response();
    }
    let (mut parts_of_request, body) = request.into_parts();
    let mut uri = http::uri::Parts::from(parts_of_request.uri.clone());
    uri.scheme = upstream.scheme().cloned();
    uri.authority = upstream.authority().cloned();
    parts_of_request.uri = match http::Uri::from_parts(uri) {
        Ok(uri) => uri,
        Err(_) => return Injected::new(StatusCode::BAD_REQUEST, "BadProxyUri").response(),
    };
    let response = match client
        .request(Request::from_parts(parts_of_request, body))
        .await
    {
        Ok(response) => response,
        Err(_) => return Injected::new(StatusCode::BAD_GATEWAY, "BadGateway").response(),
    };
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (mut head, body) = response.into_parts();
    if let Some(cold) = state.plan.cold.as_ref().filter(|c| c.holds(&key)) {
        if let (true, Ok(class)) = (
            name == "HeadObject" && head.status.is_success(),
            http::HeaderValue::from_str(&cold.storage_class),
        ) {
            head.headers.insert("x-amz-storage-class", class);
            let thaw = state.thaw(&key, true);
            let restore = match thaw {
                Some(Thaw::Restored) => {
                    Some("ongoing-request=\"false\", expiry-date=\"Fri, 01 Jan 2100 00:00:00 GMT\"")
                }
                Some(Thaw::InProgress) => Some("ongoing-request=\"true\""),
                _ => None,
            };
            if let Some(restore) = restore {
                head.headers
                    .insert("x-amz-restore", http::HeaderValue::from_static(restore));
            }
            let status = cold
                .archive_status
                .as_deref()
                .filter(|_| thaw != Some(Thaw::Restored))
                .and_then(|s| http::HeaderValue::from_str(s).ok());
            if let Some(status) = status {
                head.headers.insert("x-amz-archive-status", status);
            }
        }
    }
    if matches!(name, "PutObject" | "CreateMultipartUpload") && head.status.is_success() {
        if let Some(lost) = state.lost_answer(&key) {
            return lost.response();
        }
    }
    if spoil.corrupt && head.status.is_success() {
        counts.corrupted.fetch_add(1, Ordering::Relaxed);
        return Response::from_parts(head, corrupt_body(body));
    }
    match (length, spoil.half) {
        (Some(length), Some(end)) if head.status.is_success() && length > 1 => {
            let counted = match end {
                HalfEnd::Cut => &counts.cut_bodies,
                HalfEnd::Stall => &counts.stalled_bodies,
            };
            counted.fetch_add(1, Ordering::Relaxed);
            Response::from_parts(head, half_body(body, length / 2, end))
        }
        _ => Response::from_parts(
            head,
            body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed(),
        ),
    }
}

/// Whether an upload carries a checksum of its body that S3 checks: Content-MD5, an
/// `x-amz-checksum-<algorithm>` header, or one announced as a trailer of a chunked body.
fn carries_checksum(headers: &http::HeaderMap) -> bool {
    headers.contains_key("content-md5")
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("x-amz-checksum-"))
        || headers
            .get("x-amz-trailer")
            .is_some_and(|t| t.as_bytes().starts_with(b"x-amz-checksum-"))
}

/// What a spoiled body does after its first half.
#[derive(Clone, Copy)]
enum HalfEnd {
    /// An error, which ends the connection mid-body.
    Cut,
    /// Nothing more, with the connection left open.
    Stall,
}

/// The first `keep` bytes of a body, then `end`.
fn half_body(body: Incoming, keep: u64, end: HalfEnd) -> ProxyBody {
    let stream = futures::stream::unfold((body, keep), move |(mut body, left)| async move {
        if left == 0 {
            match end {
                HalfEnd::Stall => futures::future::pending::<()>().await,
                // A pause first, so that the bytes sent reach the client before the connection
                // breaks, as on a real network (hyper drops what it has not flushed).
                HalfEnd::Cut => tokio::time::sleep(CUT_AFTER).await,
            }
            let error: Box<dyn std::error::Error + Send + Sync> =
                "body cut by the test proxy".into();
            return Some((Err(error), (body, 0)));
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let take = (data.len() as u64).min(left);
                    let data = data.split_to(take as usize);
                    Some((Ok(Frame::data(data)), (body, left - take)))
                }
                Err(_) => Some((Ok(Frame::data(Bytes::new())), (body, left))),
            },
            Some(Err(e)) => Some((
                Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                (body, 0),
            )),
            None => None,
        }
    });
    // After the error the stream is not polled again.
    BodyExt::boxed(StreamBody::new(stream))
}

/// The body with its first byte changed (same length, so only a checksum can tell).
fn corrupt_body(body: Incoming) -> ProxyBody {
    let mut first = true;
    body.map_frame(move |frame| match frame.into_data() {
        Ok(data) if first && !data.is_empty() => {
            first = false;
            let mut changed = data.to_vec();
            changed[0] ^= 0xff;
            Frame::data(Bytes::from(changed))
        }
        Ok(data) => Frame::data(data),
        Err(frame) => frame,
    })
    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    .boxed()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_headers_are_required_only_where_objects_are_created() {
        let creating = ["PutObject", "CreateMultipartUpload", "CopyObject"];
        let others = [
            "UploadPart",
            "UploadPartCopy",
            "CompleteMultipartUpload",
            "AbortMultipartUpload",
            "ListMultipartUploads",
            "GetObject",
            "HeadObject",
            "GetObjectTagging",
            "DeleteObject",
            "DeleteObjects",
            "ListObjects",
        ];
        for operation in creating.iter().chain(&others) {
            assert!(header_required(operation, "x-amz-expected-bucket-owner"));
            assert!(header_required(operation, "X-Amz-Expected-Bucket-Owner"));
            for sse in [
                "x-amz-server-side-encryption",
                "x-amz-server-side-encryption-aws-kms-key-id",
            ] {
                assert_eq!(
                    header_required(operation, sse),
                    creating.contains(operation),
                    "{operation} {sse}"
                );
            }
        }
    }

    #[test]
    fn commits_and_copies_wait_as_planned() {
        let second = Duration::from_secs(1);
        let state = State {
            plan: FaultPlan {
                put_delay: Some(second),
                delay_put_keys_ending_with: Some(".index".into()),
                complete_delay: Some(2 * second),
                upload_part_copy_delay: Some(3 * second),
                ..FaultPlan::default()
            },
            ..State::default()
        };
        let cases = [
            ("PutObject", "b/x.index", Some(second)),
            ("PutObject", "b/x.tar", None),
            ("CompleteMultipartUpload", "b/x.tar", Some(2 * second)),
            ("CompleteMultipartUpload", "b/x.index", Some(2 * second)),
            ("UploadPartCopy", "b/x.tar", Some(3 * second)),
            ("CopyObject", "b/x.index", Some(3 * second)),
            ("UploadPart", "b/x.index", None),
            ("GetObject", "b/x.index", None),
        ];
        for (operation, key, expected) in cases {
            assert_eq!(state.delay(operation, key), expected, "{operation} {key}");
        }
    }

    #[test]
    fn chosen_errors_answer_matching_keys_and_copy_sources_until_their_times_are_up() {
        let state = State {
            plan: FaultPlan {
                get_errors: vec![
                    FailMatching {
                        times: Some(1),
                        ..FailMatching::new("a/", 409, "OperationAborted")
                    },
                    FailMatching::new("a/", 404, "NoSuchBucket").saying("gone"),
                ],
                copy_errors: vec![FailMatching::new("src/big", 403, "InvalidObjectState")],
                ..FaultPlan::default()
            },
            ..State::default()
        };
        let answer = |operation, key, source| {
            state
                .decide(operation, key, source)
                .err()
                .map(|i| format!("{} {} {}", i.status.as_u16(), i.code, i.message))
        };
        let aborted = format!("409 OperationAborted {INJECTED_MESSAGE}");
        assert_eq!(answer("GetObject", "b/a/1", None), Some(aborted));
        assert_eq!(
            answer("GetObject", "b/a/1", None).as_deref(),
            Some("404 NoSuchBucket gone")
        );
        assert_eq!(answer("GetObject", "b/c/1", None), None);
        let archived = format!("403 InvalidObjectState {INJECTED_MESSAGE}");
        assert_eq!(
            answer("UploadPartCopy", "arch/x", Some("src/big/1")),
            Some(archived)
        );
        assert_eq!(answer("CopyObject", "arch/x", Some("src/small/1")), None);
        assert_eq!(state.counts.injected_matching.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_clock_ahead_refuses_requests_signed_more_than_15_minutes_off_it() {
        let state = State {
            plan: FaultPlan {
                clock_ahead: Some(Duration::from_secs(3600)),
                ..FaultPlan::default()
            },
            ..State::default()
        };
        let signed_at = |time: SystemTime| {
            let text = DateTime::from(time)
                .fmt(Format::DateTime)
                .unwrap_or_default()
                .replace(['-', ':'], "");
            let mut headers = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_str(&text) {
                headers.insert("x-amz-date", value);
            }
            headers
        };
        let now = SystemTime::now();
        let refused = state.skewed(&signed_at(now)).map(|i| i.code);
        assert_eq!(refused, Some("RequestTimeTooSkewed"));
        let corrected = now + Duration::from_secs(3600 - 60);
        assert!(state.skewed(&signed_at(corrected)).is_none());
        assert!(state.skewed(&http::HeaderMap::new()).is_none(), "unsigned");
        assert_eq!(state.counts.skewed.load(Ordering::Relaxed), 1);
    }

    /// The S3 error code of a failed request, or "ok".
    fn code<T, E, R>(result: Result<T, aws_sdk_s3::error::SdkError<E, R>>) -> String
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata,
    {
        match result {
            Ok(_) => "ok".into(),
            Err(error) => error
                .as_service_error()
                .and_then(|error| error.code())
                .unwrap_or("unknown")
                .into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_fail_then_pass_gets_expire_and_missing_headers_are_recorded() {
        let server = crate::server::LocalS3::shared();
        let bucket = crate::new_bucket(&crate::s3_client(&server.endpoint), "faults").await;
        let owner = "123456789012";
        let proxy = FaultProxy::start(
            &server.endpoint,
            FaultPlan {
                fail_put_keys_ending_with: Some(FailPut {
                    times: Some(1),
                    ..FailPut::internal_error(".index")
                }),
                gets_fail_after: Some(FailAfter {
                    all_object_reads: true,
                    ..FailAfter::new(2, 400, "ExpiredToken")
                }),
                slowdown_first_tries: 1,
                require_headers: vec![
                    ("x-amz-expected-bucket-owner".into(), owner.into()),
                    ("x-amz-server-side-encryption".into(), "AES256".into()),
                ],
                ..FaultPlan::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let client = aws_sdk_s3::Client::from_conf(
            crate::s3_client(&proxy.endpoint)
                .config()
                .to_builder()
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
                .build(),
        );
        let put = |key: &str| {
            client
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(b"body".to_vec().into())
                .send()
        };
        assert_eq!(code(put("a.index").await), "InternalError");
        assert_eq!(code(put("a.index").await), "ok");
        assert_eq!(code(put("a.tar").await), "ok");
        let get = || {
            client
                .get_object()
                .bucket(&bucket)
                .key("a.tar")
                .expected_bucket_owner(owner)
                .send()
        };
        assert_eq!(code(get().await), "SlowDown");
        assert_eq!(code(get().await), "ok");
        assert_eq!(code(get().await), "ExpiredToken");
        let head = client.head_object().bucket(&bucket).key("a.tar").send();
        assert!(head.await.is_err());
        let counts = &proxy.counts;
        assert_eq!(counts.rejected_puts.load(Ordering::Relaxed), 1);
        assert_eq!(counts.injected_503.load(Ordering::Relaxed), 1);
        assert_eq!(counts.injected_after.load(Ordering::Relaxed), 2);
        let path = format!("/{bucket}/a.tar");
        assert_eq!(
            counts.header_violations(),
            [
                format!("PutObject /{bucket}/a.index: missing x-amz-expected-bucket-owner"),
                format!("PutObject /{bucket}/a.index: missing x-amz-server-side-encryption"),
                format!("PutObject /{bucket}/a.index: missing x-amz-expected-bucket-owner"),
                format!("PutObject /{bucket}/a.index: missing x-amz-server-side-encryption"),
                format!("PutObject {path}: missing x-amz-expected-bucket-owner"),
                format!("PutObject {path}: missing x-amz-server-side-encryption"),
                format!("HeadObject {path}: missing x-amz-expected-bucket-owner"),
            ]
        );
    }

    #[test]
    fn requests_are_named_by_s3_operation() {
        use http::Method;
        let cases = [
            (Method::GET, "/b/k", "", false, "GetObject"),
            (Method::GET, "/b/k", "tagging", false, "GetObjectTagging"),
            (
                Method::GET,
                "/b",
                "uploads&prefix=a",
                false,
                "ListMultipartUploads",
            ),
            (
                Method::GET,
                "/b",
                "list-type=2&prefix=a",
                false,
                "ListObjects",
            ),
            (Method::HEAD, "/b/k", "", false, "HeadObject"),
            (
                Method::PUT,
                "/b/k",
                "partNumber=1&uploadId=x",
                false,
                "UploadPart",
            ),
            (
                Method::PUT,
                "/b/k",
                "partNumber=1&uploadId=x",
                true,
                "UploadPartCopy",
            ),
            (Method::PUT, "/b/k", "", true, "CopyObject"),
            (Method::PUT, "/b/k", "x-id=PutObject", false, "PutObject"),
            (
                Method::POST,
                "/b/k",
                "uploads",
                false,
                "CreateMultipartUpload",
            ),
            (
                Method::POST,
                "/b/k",
                "uploadId=x",
                false,
                "CompleteMultipartUpload",
            ),
            (
                Method::DELETE,
                "/b/k",
                "uploadId=x",
                false,
                "AbortMultipartUpload",
            ),
            (
                Method::DELETE,
                "/b/k",
                "x-id=DeleteObject",
                false,
                "DeleteObject",
            ),
        ];
        for (method, path, query, copy, expected) in cases {
            assert_eq!(
                operation(&method, path, query, copy),
                expected,
                "{method} {path}?{query}"
            );
        }
    }
}
