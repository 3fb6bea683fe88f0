//! Keeps a queue message hidden from other workers while its manifest is being bundled.
//!
//! Every third of the queue's visibility timeout the message's visibility is extended to a
//! full timeout from now, so a long manifest is never handed to a second worker, while a worker
//! that dies stops beating and its message reappears within one timeout. If the extensions keep
//! failing until the message may be visible again, another worker may be handed it: the
//! manifest is then stopped (its uploads aborted, nothing committed) through its [`Stopper`].
//!
//! SQS hides a received message for at most 12 hours from its receipt. A manifest that runs
//! toward that limit keeps its work and its lease: before the limit, its message is handed
//! over, a fresh copy sent (invisible for a while) and the old one deleted. Whoever receives
//! the copy finds the manifest's lease held (and waits) or its index written (and is done).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::shutdown::Stopper;
use crate::sqs::{Message, Queue};

/// How often to extend a message hidden for `visibility`.
pub fn interval_for(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_secs(1))
}

/// How long a failed manifest's message stays hidden before it is tried again, by how many
/// times it was received: 30 s, 1, 2, 4… minutes, at most 15, so a manifest that fails for a
/// while (an expired role, a policy being fixed) does not spin through its retries at once.
pub fn backoff_for(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(10);
    (Duration::from_secs(30) * (1u32 << doublings)).min(Duration::from_secs(15 * 60))
}

/// SQS's limit on how long a received message can be kept hidden, counted from its receipt.
pub const MAX_HIDDEN: Duration = Duration::from_secs(12 * 60 * 60);

/// A running heartbeat; it stops when dropped.
pub struct Heartbeat {
    task: JoinHandle<()>,
    lost: Arc<AtomicBool>,
    handed_over: Arc<AtomicBool>,
}

/// True when a beat due `elapsed` after the receipt could not keep the message hidden until
/// the next one without going past `limit`: the message must be handed over now.
pub fn must_hand_over(elapsed: Duration, visibility: Duration, limit: Duration) -> bool {
    elapsed + visibility + interval_for(visibility) > limit
}

impl Heartbeat {
    /// Starts beating; `stopper` stops the manifest if the message cannot be kept hidden. The
    /// message is handed over before `limit` (normally [`MAX_HIDDEN`]) since its receipt.
    pub fn start(
        queue: Queue,
        message: Message,
        visibility: Duration,
        limit: Duration,
        stopper: Stopper,
    ) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let handed_over = Arc::new(AtomicBool::new(false));
        let (flag, handed) = (lost.clone(), handed_over.clone());
        let task = tokio::spawn(async move {
            let received = Instant::now();
            let interval = interval_for(visibility);
            let mut ticks = tokio::time::interval(interval);
            // The first tick is immediate: the message was just received with a full timeout.
            ticks.tick().await;
            let mut hidden_until = Instant::now() + visibility;
            loop {
                ticks.tick().await;
                if must_hand_over(received.elapsed(), visibility, limit)
                    && hand_over(&queue, &message, visibility).await
                {
                    handed.store(true, Ordering::Relaxed);
                    return;
                }
                match queue.set_visibility(&message, visibility).await {
                    Ok(()) => {
                        hidden_until = Instant::now() + visibility;
                        debug!(message_id = %message.id, "visibility extended by {visibility:?}")
                    }
                    Err(problem) if Instant::now() + interval < hidden_until => warn!(
                        message_id = %message.id,
                        "could not extend the message's visibility: {problem}; trying again"
                    ),
                    Err(problem) => {
                        error!(
                            message_id = %message.id,
                            "could not keep message {} hidden ({problem}): another worker \
                             may receive it, so this manifest is stopped without committing",
                            message.id
                        );
                        flag.store(true, Ordering::Relaxed);
                        stopper.stop();
                        return;
                    }
                }
            }
        });
        Heartbeat {
            task,
            lost,
            handed_over,
        }
    }

    /// True once the message could no longer be kept hidden and the manifest was stopped.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// True once the message was handed over (see [`MAX_HIDDEN`]): it is gone, and a fresh
    /// copy of it is on the queue, so it is neither deleted nor released.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Relaxed)
    }
}

/// Sends a fresh copy of `message`, invisible for a while (a visibility timeout, at most 15
/// minutes), then deletes the old one. False if the copy could not be sent: the old message
/// is kept and extended while SQS allows.
async fn hand_over(queue: &Queue, message: &Message, visibility: Duration) -> bool {
    let delay = visibility.min(crate::sqs::MAX_DELAY);
    if let Err(problem) = queue.resend(message, delay).await {
        warn!(
            message_id = %message.id,
            "could not hand the message over before SQS's 12-hour limit: {problem}"
        );
        return false;
    }
    info!(
        message_id = %message.id,
        "message handed over before SQS's limit on hiding it: a fresh copy is on the queue \
         (visible in {delay:?}); the manifest goes on under its lease"
    );
    true
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_three_times_per_timeout_but_not_faster_than_every_second() {
        assert_eq!(
            interval_for(Duration::from_secs(300)),
            Duration::from_secs(100)
        );
        assert_eq!(interval_for(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(interval_for(Duration::ZERO), Duration::from_secs(1));
    }

    /// Old main logged a failed extension and went on, although another worker could then
    /// receive the message and bundle the manifest at the same time.
    #[tokio::test]
    async fn a_heartbeat_that_cannot_extend_the_message_stops_its_manifest() {
        // Nothing listens there: every ChangeMessageVisibility fails at once.
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build();
        let url = "http://127.0.0.1:1/123456789012/q";
        let queue = Queue::resolve(aws_sdk_sqs::Client::from_conf(config), url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let message = Message {
            id: "m".into(),
            body: String::new(),
            receipt: "r".into(),
            receive_count: 1,
        };
        let (mut manifest, stopper) = crate::shutdown::Shutdown::never().child();
        let heartbeat =
            Heartbeat::start(queue, message, Duration::from_secs(1), MAX_HIDDEN, stopper);
        tokio::time::timeout(Duration::from_secs(10), manifest.requested())
            .await
            .unwrap_or_else(|_| panic!("the manifest was not stopped"));
        assert!(heartbeat.lost());
    }

    #[test]
    fn failed_manifests_wait_longer_each_time_they_come_back() {
        assert_eq!(backoff_for(1), Duration::from_secs(30));
        assert_eq!(backoff_for(2), Duration::from_secs(60));
        assert_eq!(backoff_for(4), Duration::from_secs(240));
        assert_eq!(backoff_for(50), Duration::from_secs(900));
        assert!(backoff_for(0) > Duration::ZERO);
    }
}
