//! moto, the AWS service emulator, for tests that need S3 fidelity (tags, versions, storage
//! classes, notifications) and SQS. `S3BUNDLER_TEST_MOTO` names a running server (the test
//! script starts one); otherwise one is started from the project's `.venv` for this process.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The moto endpoint shared by every test of this process.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(url) = std::env::var("S3BUNDLER_TEST_MOTO") {
            if !url.is_empty() {
                return url;
            }
        }
        start().unwrap_or_else(|e| panic!("{e}"))
    })
}

fn moto_server_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
}

/// Starts moto on a free port, watched by a shell that stops it when this process exits.
fn start() -> Result<String, String> {
    let server = moto_server_path();
    if !server.exists() {
        return Err(format!(
            "moto is not installed at {}: run scripts/test (it creates the venv with moto[server]==5.2.5), or set S3BUNDLER_TEST_MOTO to a running moto",
            server.display()
        ));
    }
    let port = crate::free_port();
    let watchdog = format!(
        "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & child=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $child",
        server.display(),
        std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start moto: {e}"))?;
    if !crate::wait_for_port(port, Duration::from_secs(60)) {
        return Err(format!("moto did not start on port {port} within 60 s"));
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

/// The subnets and security groups of moto's default VPC, for ECS tasks with awsvpc
/// networking (moto checks that they exist). Asked with EC2's query API: the project has no
/// EC2 SDK, and moto does not check signatures.
pub async fn default_network(endpoint: &str) -> (Vec<String>, Vec<String>) {
    let subnets = ec2_ids(endpoint, "DescribeSubnets", "subnetId").await;
    let groups = ec2_ids(endpoint, "DescribeSecurityGroups", "groupId").await;
    (subnets, groups)
}

async fn ec2_ids(endpoint: &str, action: &str, element: &str) -> Vec<String> {
    use http_body_util::BodyExt;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "Action={action}&Version=2016-11-15"
        ))))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("EC2 {action}: {e}"));
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("EC2 {action}: {e}"))
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let (open, close) = (format!("<{element}>"), format!("</{element}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next())
        .map(str::to_string)
        .collect()
}
