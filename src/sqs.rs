//! SQS access: resolving a queue given by name or URL, sending, receiving, deleting and
//! releasing messages, and extending their visibility.

use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::error::{Error, RemoteFailure, Result};

/// The longest a sent message can stay invisible (SendMessage's DelaySeconds).
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// A received message.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub body: String,
    /// The handle that deletes it or changes its visibility (valid for this delivery only).
    pub receipt: String,
    /// How many times SQS has delivered it (1 the first time).
    pub receive_count: u32,
}

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

    /// The queue's VisibilityTimeout: how long a received message stays hidden from others.
    pub async fn visibility_timeout(&self) -> Result<Duration> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| Error::reading("GetQueueAttributes", self.location(), failure(e)))?;
        let seconds = output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        Ok(Duration::from_secs(seconds))
    }

    /// Long-polls for one message for up to `wait` (at most 20 seconds, SQS's limit).
    pub async fn receive(&self, wait: Duration) -> Result<Option<Message>> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| Error::reading("ReceiveMessage", self.location(), failure(e)))?;
        let Some(message) = output.messages.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let receive_count = message
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(Some(Message {
            id: message.message_id.unwrap_or_default(),
            body: message.body.unwrap_or_default(),
            receipt: message.receipt_handle.unwrap_or_default(),
            receive_count,
        }))
    }

    /// Deletes a handled message.
    pub async fn delete(&self, message: &Message) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| {
                Error::writing("DeleteMessage", self.message_location(message), failure(e))
            })?;
        Ok(())
    }

    /// Hides a message from other consumers for `timeout` from now; zero makes it visible at once.
    pub async fn set_visibility(&self, message: &Message, timeout: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| {
                Error::writing(
                    "ChangeMessageVisibility",
                    self.message_location(message),
                    failure(e),
                )
            })?;
        Ok(())
    }

    fn location(&self) -> String {
        format!("queue {}", self.url)
    }

    fn message_location(&self, message: &Message) -> String {
        format!("message {} of queue {}", message.id, self.url)
    }

    pub async fn send(&self, body: String) -> Result<()> {
        self.send_delayed(body, Duration::ZERO).await
    }

    /// Sends a fresh copy of `message`, invisible for `delay` (at most 15 minutes), then
    /// deletes the received one: the copy starts with a receive count of zero, so putting a
    /// message off this way never counts toward the queue's maxReceiveCount. Fails only when the
    /// copy could not be sent (the received message is then untouched); a failed delete is
    /// logged, and the old message reappears when its visibility timeout ends.
    pub async fn resend(&self, message: &Message, delay: Duration) -> Result<()> {
        self.send_delayed(message.body.clone(), delay).await?;
        if let Err(problem) = self.delete(message).await {
            tracing::warn!(message_id = %message.id, "could not delete the resent message: {problem}");
        }
        Ok(())
    }

    /// Sends a message that stays invisible for `delay` (at most 15 minutes, SQS's limit).
    pub async fn send_delayed(&self, body: String, delay: Duration) -> Result<()> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_delay_seconds(
                Some(delay.as_secs().min(MAX_DELAY.as_secs()) as i32).filter(|d| *d > 0),
            )
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
