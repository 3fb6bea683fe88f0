//! Keeps a queue message hidden from other workers while its manifest is being bundled.
//!
//! Every third of the queue's visibility timeout the message's visibility is extended to a
//! full timeout from now, so a long manifest is never handed to a second worker, while a worker
//! that dies stops beating and its message reappears within one timeout.

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::sqs::{Message, Queue};

/// How often to extend a message hidden for `visibility`.
pub fn interval_for(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_secs(1))
}

/// A running heartbeat; it stops when dropped.
pub struct Heartbeat {
    task: JoinHandle<()>,
}

impl Heartbeat {
    pub fn start(queue: Queue, message: Message, visibility: Duration) -> Heartbeat {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval_for(visibility));
            // The first tick is immediate: the message was just received with a full timeout.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match queue.set_visibility(&message, visibility).await {
                    Ok(()) => {
                        debug!(message_id = %message.id, "visibility extended by {visibility:?}")
                    }
                    Err(error) => warn!(
                        message_id = %message.id,
                        "could not extend the message's visibility: {error}; another worker may \
                         receive it once the timeout passes"
                    ),
                }
            }
        });
        Heartbeat { task }
    }
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
}
