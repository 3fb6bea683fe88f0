//! How long one attempt of an AWS request may take before it is abandoned (and retried), so
//! that a server that accepts a request and never answers cannot hold a fetch slot, budget or
//! the whole job forever.
//!
//! What the SDK covers and what it does not: stalled-stream protection (on by default) ends
//! an upload body that stops moving and a response body that stops arriving, GetObject's
//! streamed body included, but nothing ends the wait for the response itself. Its attempt
//! timeout (and its read timeout) both run from the start of the request, the upload of the
//! request body included; for operations whose output is not streamed they also cover reading
//! that output, during which S3 may work for minutes (CopyObject, UploadPartCopy and
//! CompleteMultipartUpload answer 200 at once and then send whitespace until they are done).
//! One fixed value would either cut a healthy 5 GiB UploadPart or let a GET hang for hours, so
//! each request gets `--request-timeout` plus what the data it moves needs at a slow but
//! healthy rate.

use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// `--request-timeout` when not given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The slowest rate at which a healthy request is assumed to upload its body or S3 to copy
/// data server-side: each request gets one more second per MiB it moves.
pub const MIN_TRANSFER_RATE: u64 = 1 << 20;

/// The largest object CopyObject copies; a CopyObject request does not say how big its source
/// is, so it gets the time this much needs.
const MAX_COPY_OBJECT: u64 = 5 << 30;

/// CompleteMultipartUpload "could take several minutes" (S3 API reference).
const COMPLETE_ALLOWANCE: Duration = Duration::from_secs(15 * 60);

/// The longest wait of an SQS ReceiveMessage long poll.
const LONG_POLL_ALLOWANCE: Duration = Duration::from_secs(20);

/// What decides how long one request may take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestShape {
    /// Bytes of the request body.
    pub body: u64,
    /// Bytes S3 copies server-side (UploadPartCopy's range, CopyObject's largest source).
    pub copied: u64,
    /// CompleteMultipartUpload.
    pub completes_upload: bool,
    /// SQS ReceiveMessage, which waits up to 20 s for messages.
    pub long_poll: bool,
}

impl RequestShape {
    /// The shape of an HTTP request, from its method, URI and headers; `header` looks one up
    /// (case-insensitive).
    pub fn of<'a>(
        method: &str,
        uri: &str,
        body: Option<u64>,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let has_param = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        // aws-chunked bodies say their length before encoding apart.
        let body = [
            body,
            number("content-length"),
            number("x-amz-decoded-content-length"),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let copied = match header("x-amz-copy-source") {
            None => 0,
            Some(_) => header("x-amz-copy-source-range")
                .and_then(range_length)
                .unwrap_or(MAX_COPY_OBJECT),
        };
        RequestShape {
            body,
            copied,
            completes_upload: method.eq_ignore_ascii_case("POST") && has_param("uploadId"),
            long_poll: header("x-amz-target").is_some_and(|t| t.ends_with(".ReceiveMessage")),
        }
    }
}

/// The length of `bytes=FIRST-LAST`.
fn range_length(range: &str) -> Option<u64> {
    let (first, last) = range.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
    last.checked_sub(first).map(|n| n + 1)
}

/// The attempt timeout of a request of `shape`: `base`, plus a second per MiB it uploads or
/// copies, plus the time S3 may take to complete a multipart upload or SQS to long-poll.
pub fn attempt_timeout(base: Duration, shape: &RequestShape) -> Duration {
    let moved = shape.body.saturating_add(shape.copied);
    let mut timeout = base + Duration::from_secs(moved.div_ceil(MIN_TRANSFER_RATE));
    if shape.completes_upload {
        timeout += COMPLETE_ALLOWANCE;
    }
    if shape.long_poll {
        timeout += LONG_POLL_ALLOWANCE;
    }
    timeout
}

/// Parses `--request-timeout`: seconds, fractions allowed (`90`, `2.5`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("`{text}` is not a number of seconds greater than 0 (e.g. 60 or 2.5)")
        })
}

/// Sets each request's attempt timeout from its shape, before the SDK's retry loop starts.
/// The same interceptor serves the S3, SQS and ECS clients.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeouts {
    pub base: Duration,
}

impl Intercept for AttemptTimeouts {
    fn name(&self) -> &'static str {
        "s3bundler::AttemptTimeouts"
    }

    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let headers = request.headers();
        let shape = RequestShape::of(
            request.method(),
            request.uri(),
            request.body().content_length(),
            |name| headers.get(name),
        );
        let mut config = cfg
            .load::<TimeoutConfig>()
            .cloned()
            .unwrap_or_else(|| TimeoutConfig::builder().build())
            .to_builder();
        config.set_operation_attempt_timeout(Some(attempt_timeout(self.base, &shape)));
        cfg.interceptor_state().store_put(config.build());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(method: &str, uri: &str, body: Option<u64>, headers: &[(&str, &str)]) -> RequestShape {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        RequestShape::of(method, uri, body, |name| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })
    }

    const BASE: Duration = Duration::from_secs(60);

    #[test]
    fn requests_without_data_get_the_base_timeout() {
        let get = shape("GET", "https://b.s3.amazonaws.com/k", Some(0), &[]);
        assert_eq!(get, RequestShape::default());
        assert_eq!(attempt_timeout(BASE, &get), BASE);
        let head = shape("HEAD", "/b/k?versionId=null", None, &[]);
        assert_eq!(attempt_timeout(BASE, &head), BASE);
    }

    #[test]
    fn uploads_get_a_second_per_mib_so_a_healthy_5_gib_part_is_never_cut() {
        let part = shape(
            "PUT",
            "/b/k?partNumber=3&uploadId=x",
            Some(5 << 30),
            &[("Content-Length", "5368709120")],
        );
        assert_eq!(
            attempt_timeout(BASE, &part),
            BASE + Duration::from_secs(5120)
        );
        // aws-chunked: the decoded length counts.
        let chunked = shape(
            "PUT",
            "/b/k",
            None,
            &[("x-amz-decoded-content-length", "3145728")],
        );
        assert_eq!(
            attempt_timeout(BASE, &chunked),
            BASE + Duration::from_secs(3)
        );
        let tiny = shape("PUT", "/b/k", Some(10), &[]);
        assert_eq!(attempt_timeout(BASE, &tiny), BASE + Duration::from_secs(1));
    }

    #[test]
    fn server_side_copies_and_completes_get_time_for_the_work_s3_does() {
        let range = shape(
            "PUT",
            "/b/k?partNumber=1&uploadId=x",
            Some(0),
            &[
                ("x-amz-copy-source", "src/big"),
                ("x-amz-copy-source-range", "bytes=0-536870911"),
            ],
        );
        assert_eq!(range.copied, 512 << 20);
        assert_eq!(
            attempt_timeout(BASE, &range),
            BASE + Duration::from_secs(512)
        );
        let whole = shape("PUT", "/b/k", Some(0), &[("x-amz-copy-source", "src/big")]);
        assert_eq!(whole.copied, 5 << 30);
        let complete = shape("POST", "/b/k?uploadId=x", Some(200), &[]);
        assert!(complete.completes_upload);
        assert_eq!(
            attempt_timeout(BASE, &complete),
            BASE + Duration::from_secs(1) + COMPLETE_ALLOWANCE
        );
        let create = shape("POST", "/b/k?uploads", Some(0), &[]);
        assert!(!create.completes_upload);
        let delete_objects = shape("POST", "/b?delete", Some(0), &[]);
        assert!(!delete_objects.completes_upload);
    }

    #[test]
    fn sqs_long_polls_get_their_wait_on_top() {
        let receive = shape(
            "POST",
            "https://sqs.eu-west-1.amazonaws.com/",
            Some(100),
            &[("X-Amz-Target", "AmazonSQS.ReceiveMessage")],
        );
        assert!(receive.long_poll);
        assert_eq!(
            attempt_timeout(Duration::from_secs(1), &receive),
            Duration::from_secs(22)
        );
        let send = shape(
            "POST",
            "https://sqs.eu-west-1.amazonaws.com/",
            Some(100),
            &[("X-Amz-Target", "AmazonSQS.SendMessage")],
        );
        assert!(!send.long_poll);
    }

    #[test]
    fn request_timeouts_are_positive_seconds() {
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["0", "-1", "ten", "", "inf", "NaN"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
