//! A stand-in for the ECS agent's task-protection endpoint on 127.0.0.1: it records every
//! request (method, path, JSON body, when) and answers as the agent does
//! (`{"protection": {...}}`), or with a chosen failure, so tests can see when a worker protects
//! its task and that a broken endpoint never stops the work.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAnswer {
    /// As the agent does when ECS accepted the change.
    Protect,
    /// HTTP 500 with the agent's error body (`{"error": {"Code": "ServerException", …}}`).
    ServerError,
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
    pub at: Instant,
}

impl AgentRequest {
    /// `Some(true)` for a request that protects, `Some(false)` for one that clears.
    pub fn enables(&self) -> Option<bool> {
        self.body["ProtectionEnabled"].as_bool()
    }
}

/// The running stand-in; it stops with the test process.
pub struct AgentStandIn {
    /// The value of `ECS_AGENT_URI` for a worker using it.
    pub uri: String,
    requests: Arc<Mutex<Vec<AgentRequest>>>,
}

impl AgentStandIn {
    /// Starts the stand-in on its own thread.
    pub fn start(answer: AgentAnswer) -> std::io::Result<AgentStandIn> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let address = crate::http_server::serve("ecs-agent-stand-in", move |request| {
            let recorded = recorded.clone();
            async move { handle(request, answer, &recorded).await }
        })?;
        Ok(AgentStandIn {
            uri: format!("http://{address}/api/0123456789abcdef-task"),
            requests,
        })
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<AgentRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

const TASK_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task/s3bundler/0123456789abcdef";

async fn handle(
    request: Request<Incoming>,
    answer: AgentAnswer,
    recorded: &Mutex<Vec<AgentRequest>>,
) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let enabled = body["ProtectionEnabled"].as_bool().unwrap_or(false);
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(AgentRequest {
            method: method.clone(),
            path: path.clone(),
            body,
            at: Instant::now(),
        });
    let (status, reply) = if !path.ends_with("/task-protection/v1/state") || method != "PUT" {
        (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"Code": "NotFound", "Message": "no such path"}}),
        )
    } else if answer == AgentAnswer::ServerError {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"requestID": "stand-in", "error": {
                "Arn": TASK_ARN, "Code": "ServerException",
                "Message": "the stand-in agent fails on purpose"}}),
        )
    } else {
        (
            StatusCode::OK,
            serde_json::json!({"requestID": "stand-in", "protection": {
                "ExpirationDate": if enabled { "2030-01-01T00:00:00Z" } else { "" },
                "ProtectionEnabled": enabled,
                "TaskArn": TASK_ARN}}),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap_or_else(|e| panic!("{e}"))
}
