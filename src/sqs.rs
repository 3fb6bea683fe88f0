//! SQS access: resolving a queue given by name or URL, and sending messages.

use aws_sdk_sqs::error::ProvideErrorMetadata;

use crate::error::{Error, RemoteFailure, Result};

/// A resolved queue.
#[derive(Clone, Debug)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> RemoteFailure {
    let status = error.raw_response().map(|r| r.status().as_u16());
    match (error.code(), status) {
        (Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist"), _) => {
            RemoteFailure::NotFound
        }
        _ => crate::s3::classify(&error, status),
    }
}

impl Queue {
    /// A queue URL is used as it is; a name is looked up with GetQueueUrl.
    pub async fn resolve(client: aws_sdk_sqs::Client, name_or_url: &str) -> Result<Self> {
        if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
            return Ok(Queue {
                client,
                url: name_or_url.to_string(),
            });
        }
        let output = client
            .get_queue_url()
            .queue_name(name_or_url)
            .send()
            .await
            .map_err(|e| {
                Error::reading("GetQueueUrl", format!("queue {name_or_url}"), failure(e))
            })?;
        let url = output
            .queue_url()
            .ok_or_else(|| Error::Remote {
                operation: "GetQueueUrl",
                location: format!("queue {name_or_url}"),
                detail: "the answer had no QueueUrl".into(),
            })?
            .to_string();
        Ok(Queue { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn send(&self, body: String) -> Result<()> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                let failure = failure(e);
                tracing::debug!(queue = %self.url, "SendMessage failed: {failure}");
                Error::writing("SendMessage", format!("queue {}", self.url), failure)
            })?;
        Ok(())
    }
}
