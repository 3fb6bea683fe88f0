//! SQS helpers for the queue-worker tests (moto): queues with a redrive policy, messages
//! sent and received, and the worker's command line.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use s3bundler::s3uri::S3Uri;

pub fn sqs(endpoint: &str) -> aws_sdk_sqs::Client {
    s3bundler_testkit::sqs_client(endpoint)
}

/// A queue with `visibility` seconds of visibility timeout and, when `dead_letter` is given,
/// a redrive policy sending a message there after `max_receives` deliveries. Returns its URL.
pub async fn create_queue(
    endpoint: &str,
    name: &str,
    visibility: u32,
    dead_letter: Option<(&str, u32)>,
) -> String {
    let mut request = sqs(endpoint).create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        visibility.to_string(),
    );
    if let Some((dlq_url, max_receives)) = dead_letter {
        let arn = queue_arn(endpoint, dlq_url).await;
        request = request.attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives.to_string()})
                .to_string(),
        );
    }
    let out = request.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    out.queue_url().unwrap_or_default().to_string()
}

/// A dead-letter queue and a queue of `visibility` seconds that moves a message there after
/// `max_receives` receives: (dead-letter queue, queue).
pub async fn queue_with_dead_letter(
    endpoint: &str,
    name: &str,
    visibility: u32,
    max_receives: u32,
) -> (String, String) {
    let dead = create_queue(
        endpoint,
        &s3bundler_testkit::unique_name(&format!("{name}dead")),
        30,
        None,
    )
    .await;
    let queue = create_queue(
        endpoint,
        &s3bundler_testkit::unique_name(name),
        visibility,
        Some((&dead, max_receives)),
    )
    .await;
    (dead, queue)
}

pub async fn queue_arn(endpoint: &str, url: &str) -> String {
    let out = sqs(endpoint)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default()
}

/// Messages waiting plus messages received but not deleted.
pub async fn messages_left(endpoint: &str, url: &str) -> u64 {
    count_messages(
        endpoint,
        url,
        &[
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ],
    )
    .await
}

/// Messages sent with a delay that has not passed yet.
pub async fn messages_delayed(endpoint: &str, url: &str) -> u64 {
    count_messages(
        endpoint,
        url,
        &[QueueAttributeName::ApproximateNumberOfMessagesDelayed],
    )
    .await
}

/// The sum of the queue's `counts` attributes.
async fn count_messages(endpoint: &str, url: &str, counts: &[QueueAttributeName]) -> u64 {
    let out = sqs(endpoint)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let attributes = out.attributes().cloned().unwrap_or_default();
    counts
        .iter()
        .map(|name| {
            attributes
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Waits until a worker holds the queue's only message.
pub async fn wait_until_received(endpoint: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = sqs(endpoint)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let held = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
            .is_some_and(|v| v != "0");
        if held {
            return;
        }
        assert!(Instant::now() < deadline, "no worker received the message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn send(endpoint: &str, url: &str, body: &str) {
    sqs(endpoint)
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
}

/// Bodies received from a queue within `wait`, left invisible for a minute.
pub async fn receive_bodies(endpoint: &str, url: &str, wait: i32) -> Vec<String> {
    let out = sqs(endpoint)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait)
        .visibility_timeout(60)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.messages()
        .iter()
        .filter_map(|m| m.body().map(str::to_string))
        .collect()
}

pub fn bucket_key_message(uri: &str) -> String {
    let uri: S3Uri = uri.parse().unwrap_or_else(|e| panic!("{e}"));
    serde_json::json!({"Bucket": uri.bucket, "Key": uri.key}).to_string()
}

pub fn worker_args<'a>(queue: &'a str, bucket: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bundle",
        "-q",
        queue,
        "-b",
        bucket,
        "-p",
        "archives",
        "--wait-time",
        "1",
    ];
    args.extend_from_slice(extra);
    args
}
