//! ECS task scale-in protection for the queue worker.
//!
//! The bundler service scales in when the queue looks empty, but a message being bundled is
//! invisible, so ECS may pick a task in the middle of a long manifest: the task is stopped, its
//! upload aborted, and another task redoes the manifest from the start. While it holds a
//! manifest, a worker inside ECS (where the agent sets `ECS_AGENT_URI`) therefore asks the ECS
//! agent to protect its task from scale-in (`PUT $ECS_AGENT_URI/task-protection/v1/state`),
//! renews the protection before it expires while the manifest runs, and clears it once the
//! queue has nothing more for it. Protection is only an optimization: a call that fails is
//! logged at WARN and the work goes on, since without protection a scale-in makes the work be
//! redone, never lost. Outside ECS nothing is called.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The variable the ECS agent sets in every container of a task.
pub const AGENT_URI_VARIABLE: &str = "ECS_AGENT_URI";

/// How long one call to the agent may take; the agent answers within a few seconds (it calls
/// ECS's UpdateTaskProtection), and a worker never waits longer than this for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's limits on `ExpiresInMinutes`.
pub const MAX_MINUTES: u64 = 2880;

/// Why a protection call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error("{AGENT_URI_VARIABLE} {uri:?} is not an http:// URL the agent can be reached at")]
    BadUri { uri: String },
    #[error("the ECS agent at {url} could not be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the ECS agent at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// ECS answered with a failure for the task (e.g. TASK_NOT_VALID for a task outside a service).
    #[error("ECS refused to change the task's protection: {reason}{}", detail_suffix(.detail))]
    Failure { reason: String, detail: String },
    /// The agent or ECS answered with an error (e.g. AccessDeniedException when the task role
    /// lacks ecs:UpdateTaskProtection).
    #[error("the ECS agent answered HTTP {status}: {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the ECS agent answered HTTP {status} with an unexpected body: {body}")]
    Unexpected { status: u16, body: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// How long protection lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectionPolicy {
    /// `ExpiresInMinutes` of each request, 1 to 2880.
    pub minutes: u64,
    /// Time between renewals while a manifest runs; shorter than the protection.
    pub renew_every: Duration,
}

impl ProtectionPolicy {
    /// `minutes` of protection renewed every `renew_every` (default: half of it). `minutes` of
    /// 0 means no protection at all.
    pub fn new(minutes: u64, renew_every: Option<Duration>) -> Option<ProtectionPolicy> {
        if minutes == 0 {
            return None;
        }
        let minutes = minutes.min(MAX_MINUTES);
        let lasts = Duration::from_secs(minutes * 60);
        let renew_every = renew_every
            .unwrap_or(lasts / 2)
            .clamp(Duration::from_secs(1), lasts / 2);
        Some(ProtectionPolicy {
            minutes,
            renew_every,
        })
    }
}

/// A client of the agent's task-protection endpoint.
#[derive(Clone, Debug)]
struct Agent {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

impl Agent {
    fn new(agent_uri: &str) -> Result<Agent, ProtectionError> {
        let base = agent_uri.trim_end_matches('/');
        let url = format!("{base}/task-protection/v1/state");
        if !base.starts_with("http://") || url.parse::<http::Uri>().is_err() {
            return Err(ProtectionError::BadUri {
                uri: agent_uri.to_string(),
            });
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Agent { client, url })
    }

    /// PUTs the protection state; `Some(minutes)` protects, `None` clears.
    async fn put(&self, minutes: Option<u64>) -> Result<(), ProtectionError> {
        let body = match minutes {
            Some(minutes) => {
                serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": minutes})
            }
            None => serde_json::json!({"ProtectionEnabled": false}),
        };
        let request = http::Request::put(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ProtectionError::BadUri {
                uri: format!("{} ({e})", self.url),
            })?;
        let call =
            async {
                let response = self.client.request(request).await.map_err(|e| {
                    ProtectionError::Unreachable {
                        url: self.url.clone(),
                        detail: error_chain(&e),
                    }
                })?;
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ProtectionError::Unreachable {
                        url: self.url.clone(),
                        detail: error_chain(&e),
                    })?
                    .to_bytes();
                Ok::<_, ProtectionError>((status, body))
            };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ProtectionError::Timeout {
                url: self.url.clone(),
                timeout: CALL_TIMEOUT,
            })??;
        interpret(status, &body)
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A member of a JSON object by name, whatever its case (the agent writes `protection` and
/// `ExpirationDate`).
fn member<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

fn text(object: &Value, name: &str) -> String {
    member(object, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The agent answers `{"protection": {...}}` on success, `{"failure": {"Arn", "Reason",
/// "Detail"}}` when ECS refused the change for the task, and `{"error": {"Code", "Message"}}`
/// when the request failed (with a 4xx or 5xx status). Agents from before the `protection`
/// wrapper answered the protection object itself.
fn interpret(status: u16, body: &[u8]) -> Result<(), ProtectionError> {
    let shown = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.len() > 300 {
            format!("{}…", &text[..text.floor_char_boundary(300)])
        } else if text.is_empty() {
            "(empty)".to_string()
        } else {
            text.to_string()
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(answer) = &parsed {
        if let Some(failure) = member(answer, "failure").filter(|f| !f.is_null()) {
            return Err(ProtectionError::Failure {
                reason: text(failure, "Reason"),
                detail: text(failure, "Detail"),
            });
        }
        if let Some(error) = member(answer, "error").filter(|e| !e.is_null()) {
            return Err(ProtectionError::Rejected {
                status,
                code: text(error, "Code"),
                message: text(error, "Message"),
            });
        }
        let protected = member(answer, "protection").is_some_and(Value::is_object)
            || member(answer, "ProtectionEnabled").is_some();
        if (200..300).contains(&status) && protected {
            return Ok(());
        }
    }
    Err(ProtectionError::Unexpected {
        status,
        body: shown(),
    })
}

#[derive(Debug, Default)]
struct State {
    /// When protection was last set successfully: it lasts `minutes` from then.
    renewed_at: Option<Instant>,
    /// Protection may be on (a request to set it was sent, whatever the answer): clear it once
    /// the queue is empty.
    may_be_on: bool,
}

/// The worker's task protection: does nothing outside ECS or when turned off.
#[derive(Clone, Debug)]
pub struct TaskProtection {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    agent: Agent,
    policy: ProtectionPolicy,
    state: Mutex<State>,
}

impl TaskProtection {
    /// Protection through the agent at `ECS_AGENT_URI` when it is set (inside ECS).
    pub fn from_environment(policy: Option<ProtectionPolicy>) -> TaskProtection {
        let uri = std::env::var(AGENT_URI_VARIABLE).unwrap_or_default();
        Self::new(&uri, policy)
    }

    /// Protection through the agent at `agent_uri`; an empty URI or no policy turns it off.
    pub fn new(agent_uri: &str, policy: Option<ProtectionPolicy>) -> TaskProtection {
        let (Some(policy), false) = (policy, agent_uri.trim().is_empty()) else {
            return TaskProtection { inner: None };
        };
        match Agent::new(agent_uri.trim()) {
            Ok(agent) => {
                info!(
                    "task scale-in protection through the ECS agent: {} minutes while a manifest \
                     is bundled, renewed every {:?}",
                    policy.minutes, policy.renew_every
                );
                TaskProtection {
                    inner: Some(Arc::new(Inner {
                        agent,
                        policy,
                        state: Mutex::default(),
                    })),
                }
            }
            Err(error) => {
                warn!("{error}; the task runs without scale-in protection");
                TaskProtection { inner: None }
            }
        }
    }

    /// A protection that never calls anything.
    pub fn off() -> TaskProtection {
        TaskProtection { inner: None }
    }

    pub fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// Protects the task before a manifest is bundled (unless it was protected recently enough
    /// to last), then keeps renewing it until the returned guard is dropped. Never fails: a
    /// failed call is logged at WARN and bundling goes on.
    pub async fn hold(&self) -> Renewal {
        let Some(inner) = &self.inner else {
            return Renewal { task: None };
        };
        let fresh = inner
            .state()
            .renewed_at
            .is_some_and(|at| at.elapsed() < inner.policy.renew_every);
        if !fresh {
            inner.set(true).await;
        }
        let renewing = inner.clone();
        let task = tokio::spawn(async move { renewing.keep_renewing().await });
        Renewal { task: Some(task) }
    }

    /// Clears the protection once the queue is empty (if it may be on), so that the task can be
    /// scaled in. A failed call is logged at WARN; the protection then lapses by itself.
    pub async fn release(&self) {
        let Some(inner) = &self.inner else { return };
        if !inner.state().may_be_on {
            return;
        }
        match inner.agent.put(None).await {
            Ok(()) => info!("task scale-in protection cleared: the queue is empty"),
            Err(error) => warn!(
                "could not clear the task's scale-in protection: {error}; it lapses by itself \
                 within {} minutes of its last renewal",
                inner.policy.minutes
            ),
        }
        *inner.state() = State::default();
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets protection for `policy.minutes`; `first` tells a new hold from a renewal in logs.
    async fn set(&self, first: bool) -> bool {
        self.state().may_be_on = true;
        let minutes = self.policy.minutes;
        match self.agent.put(Some(minutes)).await {
            Ok(()) => {
                self.state().renewed_at = Some(Instant::now());
                if first {
                    info!("task scale-in protection enabled for {minutes} minutes");
                } else {
                    debug!("task scale-in protection renewed for {minutes} minutes");
                }
                true
            }
            Err(error) => {
                warn!(
                    "could not {} the task's scale-in protection: {error}; bundling goes on \
                     (a scale-in may stop this task, and the manifest is then redone by another)",
                    if first { "enable" } else { "renew" }
                );
                false
            }
        }
    }

    async fn keep_renewing(&self) {
        // After a failure, try again sooner than a full interval, while the last protection
        // (if any) still holds.
        let retry = (self.policy.renew_every / 4).max(Duration::from_secs(1));
        loop {
            let due = match self.state().renewed_at {
                Some(at) => at + self.policy.renew_every,
                None => Instant::now() + retry,
            };
            tokio::time::sleep_until(due).await;
            if !self.set(false).await {
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// Renews the protection while a manifest is bundled; stops renewing when dropped.
pub struct Renewal {
    task: Option<JoinHandle<()>>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_protection_succeed_whatever_the_case_of_their_members() {
        let current = br#"{"requestID":"r","protection":{"ExpirationDate":"2026-01-01T00:00:00Z","ProtectionEnabled":true,"TaskArn":"arn:aws:ecs:us-east-1:1:task/c/t"}}"#;
        assert!(interpret(200, current).is_ok());
        let early =
            br#"{"ExpirationDate":"2022-09-22T07:29:05Z","ProtectionEnabled":true,"TaskArn":"t"}"#;
        assert!(interpret(200, early).is_ok());
        let cleared = br#"{"protection":{"protectionEnabled":false,"taskArn":"t"}}"#;
        assert!(interpret(200, cleared).is_ok());
    }

    #[test]
    fn failures_errors_and_other_answers_are_told_apart() {
        let failure =
            br#"{"failure":{"Arn":"t","Reason":"TASK_NOT_VALID","Detail":"not in a service"}}"#;
        assert!(matches!(
            interpret(200, failure),
            Err(ProtectionError::Failure { reason, detail }) if reason == "TASK_NOT_VALID" && detail == "not in a service"
        ));
        let denied = br#"{"requestID":"r","error":{"Arn":"t","Code":"AccessDeniedException","Message":"no ecs:UpdateTaskProtection"}}"#;
        let error = interpret(400, denied).expect_err("denied");
        assert!(
            error
                .to_string()
                .contains("HTTP 400: AccessDeniedException"),
            "{error}"
        );
        assert!(matches!(
            interpret(500, b"oops"),
            Err(ProtectionError::Unexpected { status: 500, .. })
        ));
        assert!(matches!(
            interpret(500, br#"{"protection":{"ProtectionEnabled":true}}"#),
            Err(ProtectionError::Unexpected { .. })
        ));
        assert!(matches!(
            interpret(200, b"{}"),
            Err(ProtectionError::Unexpected { .. })
        ));
        let long = vec![b'x'; 5000];
        let shown = interpret(502, &long).expect_err("long").to_string();
        assert!(shown.len() < 500, "{shown}");
    }

    #[test]
    fn renewal_comes_before_the_protection_lapses() {
        let policy = ProtectionPolicy::new(60, None).expect("on");
        assert_eq!(policy.renew_every, Duration::from_secs(30 * 60));
        let short = ProtectionPolicy::new(1, Some(Duration::from_secs(2))).expect("on");
        assert_eq!(short.renew_every, Duration::from_secs(2));
        let too_slow = ProtectionPolicy::new(10, Some(Duration::from_secs(3600))).expect("on");
        assert_eq!(too_slow.renew_every, Duration::from_secs(300));
        assert_eq!(
            ProtectionPolicy::new(9999, None).map(|p| p.minutes),
            Some(MAX_MINUTES)
        );
        assert_eq!(ProtectionPolicy::new(0, None), None);
    }

    #[test]
    fn outside_ecs_or_with_a_bad_uri_nothing_is_called() {
        let policy = ProtectionPolicy::new(60, None);
        assert!(!TaskProtection::new("", policy).is_active());
        assert!(!TaskProtection::new("https://agent", policy).is_active());
        assert!(!TaskProtection::new("http://127.0.0.1:1/api/t", None).is_active());
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_a_warning_not_a_stall() {
        let protection = TaskProtection::new(
            "http://127.0.0.1:1/api/task",
            ProtectionPolicy::new(1, Some(Duration::from_secs(1))),
        );
        assert!(protection.is_active());
        let started = std::time::Instant::now();
        let renewal = protection.hold().await;
        drop(renewal);
        protection.release().await;
        assert!(started.elapsed() < CALL_TIMEOUT, "{:?}", started.elapsed());
    }
}
