//! A fault-injecting HTTP proxy on 127.0.0.1 in front of a local S3 server: it answers some
//! requests with 503 SlowDown or 500 InternalError, cuts some response bodies in the middle,
//! fails some part uploads, and can slow every GET down, so tests can show that every object still ends archived intact
//! or in the DLQ, never lost. Faults are chosen by a counter per request kind, so runs repeat.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

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
    /// UploadPart answered 500 InternalError.
    pub upload_part_500_every: u64,
    /// GetObject of keys containing this text always answers 503.
    pub always_fail_keys_containing: Option<String>,
    /// GetObject of keys containing this text returns the body with its first byte changed.
    pub corrupt_keys_containing: Option<String>,
    /// Every GetObject waits this long before it is forwarded: a slow manifest, for tests that
    /// stop or outlast a worker mid-manifest.
    pub get_delay: Option<std::time::Duration>,
    /// With `get_delay`: only GetObject of keys containing this text waits.
    pub delay_keys_containing: Option<String>,
}

/// What the proxy did, for assertions.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub gets: AtomicU64,
    pub injected_503: AtomicU64,
    pub injected_500: AtomicU64,
    pub cut_bodies: AtomicU64,
    pub failed_parts: AtomicU64,
    pub corrupted: AtomicU64,
    /// GetObjectTagging requests seen.
    pub tagging_gets: AtomicU64,
    /// Every request forwarded or answered, by S3 operation (see `operation`).
    pub operations: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl FaultCounts {
    /// How many requests of each operation the proxy saw.
    pub fn operations(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.operations
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
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
    let on_object = path.trim_start_matches('/').contains('/');
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
        http::Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        http::Method::DELETE if on_object => "DeleteObject",
        _ => "Other",
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    pub counts: Arc<FaultCounts>,
}

fn error_response(status: StatusCode, code: &str) -> Response<ProxyBody> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>");
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

fn hits(counter: u64, every: u64) -> bool {
    every > 0 && counter.is_multiple_of(every)
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`) on its own thread.
    pub fn start(upstream: &str, plan: FaultPlan) -> std::io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let upstream: http::Uri = upstream.parse().map_err(std::io::Error::other)?;
        let counts = Arc::new(FaultCounts::default());
        let state = Arc::new((plan, counts.clone(), AtomicU64::new(0), AtomicU64::new(0)));
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("fault proxy runtime: {e}"));
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let client: Client<HttpConnector, Incoming> =
                        Client::builder(TokioExecutor::new()).build_http();
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = socket.set_nodelay(true);
                        let (client, upstream, state) =
                            (client.clone(), upstream.clone(), state.clone());
                        let service =
                            hyper::service::service_fn(move |request: Request<Incoming>| {
                                let (client, upstream, state) =
                                    (client.clone(), upstream.clone(), state.clone());
                                async move {
                                    Ok::<_, Infallible>(
                                        handle(request, &client, &upstream, &state).await,
                                    )
                                }
                            });
                        tokio::spawn(async move {
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(socket), service)
                                    .await;
                        });
                    }
                });
            })?;
        Ok(FaultProxy {
            endpoint: format!("http://{address}"),
            counts,
        })
    }
}

type State = (FaultPlan, Arc<FaultCounts>, AtomicU64, AtomicU64);

async fn handle(
    request: Request<Incoming>,
    client: &Client<HttpConnector, Incoming>,
    upstream: &http::Uri,
    state: &State,
) -> Response<ProxyBody> {
    let (plan, counts, gets, parts) = state;
    let query = request.uri().query().unwrap_or("").to_string();
    let path = request.uri().path().to_string();
    let is_get_object = request.method() == http::Method::GET
        && !query.contains("tagging")
        && !query.contains("uploads")
        && path.matches('/').count() >= 2;
    let is_upload_part = request.method() == http::Method::PUT
        && query.contains("uploadId")
        && query.contains("partNumber");
    let name = operation(
        request.method(),
        &path,
        &query,
        request.headers().contains_key("x-amz-copy-source"),
    );
    if let Ok(mut operations) = counts.operations.lock() {
        *operations.entry(name).or_default() += 1;
    }
    let mut cut = false;
    let mut corrupt = false;
    if request.method() == http::Method::GET && query.contains("tagging") {
        counts.tagging_gets.fetch_add(1, Ordering::Relaxed);
    }
    if is_get_object {
        let n = gets.fetch_add(1, Ordering::Relaxed) + 1;
        counts.gets.fetch_add(1, Ordering::Relaxed);
        let decoded = percent_decode(&path);
        if plan
            .always_fail_keys_containing
            .as_deref()
            .is_some_and(|needle| decoded.contains(needle))
            || hits(n, plan.get_503_every)
        {
            counts.injected_503.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
        }
        if hits(n, plan.get_500_every) {
            counts.injected_500.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        }
        if let Some(delay) = plan.get_delay {
            let delayed = plan
                .delay_keys_containing
                .as_deref()
                .is_none_or(|needle| decoded.contains(needle));
            if delayed {
                tokio::time::sleep(delay).await;
            }
        }
        cut = hits(n, plan.get_cut_every);
        corrupt = plan
            .corrupt_keys_containing
            .as_deref()
            .is_some_and(|needle| decoded.contains(needle));
    }
    if is_upload_part {
        let n = parts.fetch_add(1, Ordering::Relaxed) + 1;
        if hits(n, plan.upload_part_500_every) {
            counts.failed_parts.fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        }
    }
    let (mut parts_of_request, body) = request.into_parts();
    let mut uri = http::uri::Parts::from(parts_of_request.uri.clone());
    uri.scheme = upstream.scheme().cloned();
    uri.authority = upstream.authority().cloned();
    parts_of_request.uri = match http::Uri::from_parts(uri) {
        Ok(uri) => uri,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "BadProxyUri"),
    };
    let response = match client
        .request(Request::from_parts(parts_of_request, body))
        .await
    {
        Ok(response) => response,
        Err(_) => return error_response(StatusCode::BAD_GATEWAY, "BadGateway"),
    };
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (head, body) = response.into_parts();
    if corrupt && head.status.is_success() {
        counts.corrupted.fetch_add(1, Ordering::Relaxed);
        return Response::from_parts(head, corrupt_body(body));
    }
    match length {
        Some(length) if cut && head.status.is_success() && length > 1 => {
            counts.cut_bodies.fetch_add(1, Ordering::Relaxed);
            Response::from_parts(head, cut_body(body, length / 2))
        }
        _ => Response::from_parts(
            head,
            body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed(),
        ),
    }
}

/// The first `keep` bytes of a body, then an error, which ends the connection mid-body.
fn cut_body(body: Incoming, keep: u64) -> ProxyBody {
    let stream = futures::stream::unfold((body, keep), |(mut body, left)| async move {
        if left == 0 {
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
