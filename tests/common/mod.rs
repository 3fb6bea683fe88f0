//! Shared helpers for the integration tests: run the real `s3bundler` binary against a local
//! server and read what it wrote.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub mod faults;
pub mod queues;
pub mod sources;
pub use faults::*;
pub use queues::*;
pub use sources::*;

pub use s3bundler_testkit::{
    get_object, list_keys, moto, new_bucket, put_object, s3_client, server::LocalS3,
};

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A TCP listener on a free port of 127.0.0.1, and its endpoint URL, for servers a test plays.
pub async fn local_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (listener, format!("http://{address}"))
}

/// Runs `s3bundler ARGS` with credentials and endpoint for `endpoint`, logs as JSON.
pub async fn s3bundler(endpoint: &str, args: &[&str]) -> Output {
    s3bundler_with_env(endpoint, args, &[]).await
}

pub async fn s3bundler_with_env(
    endpoint: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
    let mut command = command(endpoint, args);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run s3bundler: {e}"));
    output_of(output)
}

/// `s3bundler ARGS` with only PATH, credentials and the endpoint in its environment.
fn command(endpoint: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3bundler"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    for (name, value) in s3bundler_testkit::cli_env(endpoint) {
        command.env(name, value);
    }
    command
}

/// Starts `s3bundler ARGS` without waiting for it, for processes a test stops or kills.
pub fn spawn_s3bundler(endpoint: &str, args: &[&str]) -> tokio::process::Child {
    command(endpoint, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run s3bundler: {e}"))
}

/// Waits for a spawned s3bundler (at most `limit`) and collects what it printed.
pub async fn finish(child: tokio::process::Child, limit: std::time::Duration) -> Output {
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("s3bundler did not exit within {limit:?}"))
        .unwrap_or_else(|e| panic!("waiting for s3bundler: {e}"));
    output_of(output)
}

/// Sends `signal` (`TERM`, `INT`…) to a process with kill(1).
pub fn send_signal(child: &tokio::process::Child, signal: &str) {
    let pid = child
        .id()
        .unwrap_or_else(|| panic!("the process already exited"));
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill -{signal} {pid} failed");
}

fn output_of(output: std::process::Output) -> Output {
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `s3bundler COMMAND --manifests s3://ARCH/manifests/ -b ARCH -p bundles -s 2KiB --json
/// EXTRA` (verify or prune, as the tests lay bundles out) and parses its JSON.
pub async fn check_command(
    endpoint: &str,
    command: &str,
    arch: &str,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let manifests = format!("s3://{arch}/manifests/");
    let mut args = vec![
        command,
        "--manifests",
        &manifests,
        "-b",
        arch,
        "-p",
        "bundles",
        "-s",
        "2KiB",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = s3bundler(endpoint, &args).await;
    let json = out.json();
    (out, json)
}

/// HeadObject of an object that must exist.
pub async fn head(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD s3://{bucket}/{key}: {e:?}"))
}

/// The key of an `s3://BUCKET/KEY` in a JSON report, in `bucket`.
pub fn key_of(uri: &serde_json::Value, bucket: &str) -> String {
    uri.as_str()
        .unwrap_or_else(|| panic!("no URI in {uri}"))
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string()
}

/// The real AWS inventory samples, or `None` (with a note) in a clone without `../shared`.
/// CI must have them: there a missing folder fails the test.
pub fn aws_samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/aws-samples");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI needs ../shared/fixtures/aws-samples beside the clone"
    );
    eprintln!(
        "skipped: {} is missing (it sits beside the repository in CI)",
        dir.display()
    );
    None
}

/// Multipart uploads started and neither completed nor aborted in `bucket`.
pub async fn incomplete_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .uploads()
        .len()
}
