//! `bundle -q`: a queue worker. Takes one message at a time, bundles the manifests it names
//! while a heartbeat keeps it hidden, then deletes it (commit order: archive, DLQ, index,
//! message). A manifest that fails is released for another attempt after a pause that grows
//! with its receive count; one that another worker holds is sent again, to come back when that
//! worker's lease would expire; a stop request aborts the upload and releases the message at once.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::bundle::{print_summary, report_error, BundleArgs};
use crate::bundle::{bundle_manifest, BundleSettings};
use crate::error::{Error, ExitCode, Result};
use crate::heartbeat::{backoff_for, Heartbeat};
use crate::metrics;
use crate::queue_message::{parse_message, Request};
use crate::s3::S3;
use crate::shutdown::{Shutdown, StopSignal};
use crate::sqs::{Message, Queue};
use crate::task_protection::TaskProtection;

/// What became of the messages handled so far.
#[derive(Default)]
struct Tally {
    manifests: u64,
    some_objects_failed: bool,
    /// The first manifest that could not be bundled; decides the exit code.
    first_error: Option<Error>,
}

pub async fn work(
    s3: &S3,
    queue: &Queue,
    mut settings: BundleSettings,
    args: &BundleArgs,
    mut shutdown: Shutdown,
) -> Result<ExitCode> {
    let options = &args.worker;
    let visibility = queue.visibility_timeout().await?;
    // A killed worker's message reappears after one visibility timeout; its lease must have
    // expired by then, or the next worker would find the manifest still held.
    settings.lease_ttl = settings
        .lease_ttl
        .min(visibility.max(std::time::Duration::from_secs(2)));
    let wait = Duration::from_secs(options.wait_time);
    let idle_timeout = options.idle_timeout.map(Duration::from_secs);
    info!(
        queue = queue.url(),
        "waiting for manifests (visibility timeout {visibility:?}, at most {} messages)",
        if options.max_messages == 0 {
            "unlimited".to_string()
        } else {
            options.max_messages.to_string()
        }
    );
    let protection = TaskProtection::from_environment(options.protection_policy());
    let mut tally = Tally::default();
    let mut handled = 0u64;
    let mut last_message = Instant::now();
    while !shutdown.is_requested() {
        if options.max_messages > 0 && handled >= options.max_messages {
            info!("handled {handled} messages (--max-messages); exiting");
            break;
        }
        let received = tokio::select! {
            received = queue.receive(wait) => received?,
            _ = shutdown.requested() => break,
        };
        let Some(message) = received else {
            // Nothing more for this task: it may be scaled in now.
            protection.release().await;
            if idle_timeout.is_some_and(|idle| last_message.elapsed() >= idle) {
                info!(
                    "no message for {:?} (--idle-timeout); exiting",
                    last_message.elapsed()
                );
                break;
            }
            continue;
        };
        last_message = Instant::now();
        match parse_message(&message.body) {
            Err(problem) => {
                error!(
                    message_id = %message.id,
                    receive_count = message.receive_count,
                    "message {} of {} is not a manifest notification: {problem}; it is left \
                     for the queue's redrive policy (dead-letter queue)",
                    message.id,
                    queue.url()
                );
                report_error(args.options.metrics_format());
            }
            Ok(Request::TestEvent) => {
                info!(message_id = %message.id, "s3:TestEvent: deleted, nothing to do");
                queue.delete(&message).await?;
            }
            Ok(Request::Nothing(why)) => {
                warn!(message_id = %message.id, "{why}: deleted, nothing to do");
                queue.delete(&message).await?;
            }
            Ok(Request::Bundle(manifests)) => {
                handled += 1;
                // Before any work: a scale-in now would make the manifest be redone.
                let renewal = protection.hold().await;
                let (this_message, stopper) = shutdown.child();
                let heartbeat = Heartbeat::start(
                    queue.clone(),
                    message.clone(),
                    visibility,
                    Duration::from_secs(options.message_hold_limit),
                    stopper,
                );
                let outcome =
                    bundle_all(s3, &manifests, &settings, args, &this_message, &mut tally).await;
                let (lost, handed_over) = (heartbeat.lost(), heartbeat.handed_over());
                drop(heartbeat);
                // Still protected until the queue is found empty: no flapping between messages.
                drop(renewal);
                if handed_over {
                    // The message is gone; its fresh copy finds the index, or does the work.
                    match outcome {
                        Ok(()) => {}
                        Err(Error::Interrupted) => break,
                        Err(error) => {
                            tally.first_error.get_or_insert(error);
                        }
                    }
                    continue;
                }
                match outcome {
                    Ok(()) => queue.delete(&message).await?,
                    // Another worker may hold it now: leave its visibility alone.
                    Err(Error::Interrupted) if lost && !shutdown.is_requested() => {
                        report_error(args.options.metrics_format());
                        tally.first_error.get_or_insert(Error::Remote {
                            operation: "ChangeMessageVisibility",
                            location: format!("message {} of {}", message.id, queue.url()),
                            detail: "the message could not be kept hidden, so its manifest was \
                                     stopped without committing"
                                .into(),
                        });
                    }
                    Err(Error::Interrupted) => {
                        release(queue, &message, Duration::ZERO).await;
                        break;
                    }
                    Err(Error::Busy {
                        remaining_seconds, ..
                    }) => put_off(queue, &message, remaining_seconds).await,
                    Err(error) => {
                        release(queue, &message, backoff_for(message.receive_count)).await;
                        tally.first_error.get_or_insert(error);
                    }
                }
            }
        }
    }
    info!(manifests = tally.manifests, "worker stopped");
    match shutdown.signal() {
        // ECS stops a task with SIGTERM and expects it to leave cleanly.
        Some(StopSignal::Terminate) => Ok(ExitCode::Success),
        Some(StopSignal::Interrupt) => Err(Error::Interrupted),
        None => match tally.first_error {
            Some(error) => Err(error),
            None if tally.some_objects_failed => Ok(ExitCode::Partial),
            None => Ok(ExitCode::Success),
        },
    }
}

/// Bundles a message's manifests in order; stops at the first that fails.
async fn bundle_all(
    s3: &S3,
    manifests: &[crate::s3uri::S3Uri],
    settings: &BundleSettings,
    args: &BundleArgs,
    shutdown: &Shutdown,
    tally: &mut Tally,
) -> Result<()> {
    let metrics = args.options.metrics_format();
    for manifest in manifests {
        match bundle_manifest(s3, manifest, settings, shutdown.clone()).await {
            Ok(report) => {
                metrics::emit(metrics, &report.counts());
                print_summary(&report, args.json);
                tally.manifests += 1;
                tally.some_objects_failed |= report.objects_failed() > 0;
            }
            Err(error @ Error::Busy { .. }) => {
                info!("{error}; its message comes back later");
                return Err(error);
            }
            Err(error) => {
                if !matches!(error, Error::Interrupted) {
                    error!("{manifest} was not bundled: {error}; its message is released for another attempt");
                    report_error(metrics);
                }
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Puts off a message whose manifest another worker holds: not a failure, so it must not count
/// toward the queue's maxReceiveCount (a manifest bundled for hours would otherwise send its
/// duplicate to the dead-letter queue). A fresh copy comes back once the other worker's lease
/// would have expired (at most 15 minutes, SQS's longest delay) and is then done, taken over or
/// put off again; only if the copy cannot be sent is the received message hidden instead.
async fn put_off(queue: &Queue, message: &Message, remaining_seconds: u64) {
    let delay = Duration::from_secs(remaining_seconds + 1);
    match queue.resend(message, delay).await {
        Ok(()) => info!(
            message_id = %message.id,
            "message put off: a fresh copy is visible in {:?}",
            delay.min(crate::sqs::MAX_DELAY)
        ),
        Err(problem) => {
            warn!(message_id = %message.id, "could not resend the message: {problem}");
            release(queue, message, delay).await;
        }
    }
}

/// Makes a message visible again after `delay`, for another worker (or this one) to retry.
async fn release(queue: &Queue, message: &Message, delay: Duration) {
    match queue.set_visibility(message, delay).await {
        Ok(()) => info!(message_id = %message.id, "message released; visible again in {delay:?}"),
        Err(error) => warn!(
            message_id = %message.id,
            "could not release the message: {error}; it reappears when its visibility timeout ends"
        ),
    }
}
