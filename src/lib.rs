//! s3bundler: turns an S3 Inventory report into tar archives of small objects, each with an
//! index of where every object went.
//!
//! Pure core modules (no I/O): [`inventory`] readers, [`group`], [`manifest`], [`key_encoding`],
//! [`size`], [`s3uri`], [`queue_message`]. I/O: [`s3`], [`sqs`], [`heartbeat`], [`ecs`], [`aws`]. Commands on top: [`commands`].

pub mod archive;
pub mod aws;
pub mod bundle;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod ecs;
pub mod error;
pub mod extract;
#[cfg(test)]
mod fuzzing;
pub mod get_object;
pub mod group;
pub mod heartbeat;
pub mod incremental;
pub mod inventory;
pub mod key_encoding;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod pricing;
pub mod progress;
pub mod prune;
pub mod queue_message;
pub mod reading;
pub mod redrive;
pub mod request_timeout;
pub mod retry;
pub mod s3;
pub mod s3uri;
pub mod sample;
pub mod shutdown;
pub mod size;
pub mod sqs;
pub mod task_protection;
pub mod thaw;
pub mod verify;

pub use error::{Error, ExitCode, Result};
