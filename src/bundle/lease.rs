//! One worker per manifest at a time. SQS may hand a manifest to two workers at once (a
//! redelivery while the first is slow, a message sent twice), and `run` may be started twice.
//! Before touching the archive, a worker takes a lease: a small object beside the manifest,
//! created with `If-None-Match: *` (S3 conditional writes), renewed with `If-Match` on its
//! ETag, taken over with `If-Match` only once it expired, and deleted with `If-Match` when the
//! work is done. A worker that finds a live lease leaves the manifest alone; a worker that
//! loses its lease (another took it over after it stopped renewing) stops before committing.
//! Only the holder aborts uploads left by earlier attempts, so no live upload is ever aborted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Error, RemoteFailure, Result};
use crate::s3::{Put, S3};
use crate::s3uri::S3Uri;

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseBody {
    pub owner: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

impl LeaseBody {
    /// Seconds left at `now`; 0 once expired. A body that cannot be read has expired.
    pub fn remaining(text: &[u8], now: u64) -> u64 {
        serde_json::from_slice::<LeaseBody>(text)
            .map(|body| body.expires_at.saturating_sub(now))
            .unwrap_or(0)
    }

    /// True when the lease was taken by another process of this host that no longer runs (a
    /// `run` killed, then started again): it is free at once instead of after its time.
    pub fn holder_is_gone(text: &[u8]) -> bool {
        let Ok(body) = serde_json::from_slice::<LeaseBody>(text) else {
            return false;
        };
        let mut parts = body.owner.split('/');
        let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Some(pid) = pid.strip_prefix("pid-").and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        host == this_host() && pid != std::process::id() as i32 && !process_runs(pid)
    }
}

fn this_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process with this ID exists (signal 0 checks without sending anything).
fn process_runs(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This process, for the lease's `owner` (and the logs of whoever finds it).
fn owner() -> String {
    format!(
        "{}/pid-{}/{:016x}",
        this_host(),
        std::process::id(),
        fastrand::u64(..)
    )
}

#[derive(Debug)]
struct Held {
    etag: String,
    expires_at: u64,
}

/// A lease this worker holds; renewed in the background until released or dropped.
pub struct Lease {
    s3: S3,
    uri: S3Uri,
    ttl: Duration,
    held: Arc<Mutex<Held>>,
    lost: watch::Receiver<bool>,
    renewer: JoinHandle<()>,
}

impl Lease {
    /// Takes the lease at `uri` for `ttl`, or says who holds it: [`Error::Busy`].
    pub async fn acquire(s3: &S3, uri: S3Uri, ttl: Duration, manifest: &S3Uri) -> Result<Lease> {
        let me = owner();
        let body = |me: &str| lease_body(me, ttl);
        let written = |failure| Error::writing("PutObject", uri.to_string(), failure);
        let create = Put {
            if_none_match: true,
            ..Put::new("application/json")
        };
        let etag = match s3.put(&uri, body(&me), &create).await {
            Ok(etag) => etag,
            Err(RemoteFailure::PreconditionFailed) => {
                let (current, etag) = read_lease(s3, &uri).await?;
                if held_by(&current, &me) {
                    // A retry of this worker's own write, whose first answer was lost.
                    debug!("the lease {uri} was written by this worker's first try");
                    return Ok(Self::held(s3, uri, ttl, me, Some(etag)));
                }
                let remaining = if LeaseBody::holder_is_gone(&current) {
                    info!("the lease {uri} belongs to a process of this host that has ended");
                    0
                } else {
                    LeaseBody::remaining(&current, now())
                };
                if remaining > 0 {
                    return Err(Error::Busy {
                        manifest: manifest.to_string(),
                        lease: uri.to_string(),
                        remaining_seconds: remaining,
                    });
                }
                let take_over = Put {
                    if_match: Some(etag),
                    ..Put::new("application/json")
                };
                match s3.put(&uri, body(&me), &take_over).await {
                    Ok(etag) => {
                        info!("took over the expired lease {uri} of an attempt that stopped");
                        etag
                    }
                    Err(RemoteFailure::PreconditionFailed | RemoteFailure::NotFound) => {
                        if let Some(etag) = written_by(s3, &uri, &me).await {
                            info!("took over the expired lease {uri} of an attempt that stopped");
                            return Ok(Self::held(s3, uri, ttl, me, Some(etag)));
                        }
                        return Err(Error::Busy {
                            manifest: manifest.to_string(),
                            lease: uri.to_string(),
                            remaining_seconds: ttl.as_secs(),
                        });
                    }
                    Err(failure) => return Err(written(failure)),
                }
            }
            Err(failure) => return Err(written(failure)),
        };
        Ok(Self::held(s3, uri, ttl, me, etag))
    }

    /// The lease this worker wrote at `uri`, renewed from now on.
    fn held(s3: &S3, uri: S3Uri, ttl: Duration, me: String, etag: Option<String>) -> Lease {
        let held = Arc::new(Mutex::new(Held {
            etag: etag.unwrap_or_default(),
            expires_at: now() + ttl.as_secs(),
        }));
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            s3.clone(),
            uri.clone(),
            ttl,
            me,
            held.clone(),
            lost_tx,
        ));
        debug!("holding the lease {uri}");
        Lease {
            s3: s3.clone(),
            uri,
            ttl,
            held,
            lost,
            renewer,
        }
    }

    /// Resolves once the lease is lost: another worker took it over.
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Fails unless the lease is held with time to spare: checked before each commit step, so
    /// that a worker that stalled past its lease never commits over another's work.
    pub fn ensure_held(&self) -> Result<()> {
        let expires_at = self.held.lock().map(|held| held.expires_at).unwrap_or(0);
        let margin = (self.ttl / 4).as_secs();
        if *self.lost.borrow() || now() + margin >= expires_at {
            return Err(self.lost_error());
        }
        Ok(())
    }

    pub fn lost_error(&self) -> Error {
        Error::Remote {
            operation: "PutObject",
            location: self.uri.to_string(),
            detail: "this worker lost its lease on the manifest (it could not renew it in time, \
                     and another worker may have taken it over); stopped without committing"
                .into(),
        }
    }

    /// Stops renewing and deletes the lease if it is still this worker's.
    pub async fn release(self) {
        self.renewer.abort();
        let etag = self.held.lock().map(|held| held.etag.clone()).ok();
        if let Err(failure) = self.s3.delete_if(&self.uri, etag.as_deref()).await {
            // It expires by itself.
            debug!("could not delete the lease {}: {failure}", self.uri);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn lease_body(owner: &str, ttl: Duration) -> Bytes {
    let body = LeaseBody {
        owner: owner.to_string(),
        expires_at: now() + ttl.as_secs(),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// True when the lease body `text` names `me` as its holder.
fn held_by(text: &[u8], me: &str) -> bool {
    serde_json::from_slice::<LeaseBody>(text).is_ok_and(|body| body.owner == me)
}

/// After a conditional write of the lease was refused: the ETag of the lease if it is this
/// worker's all the same (a retry of a write whose first answer was lost finds it there).
async fn written_by(s3: &S3, uri: &S3Uri, me: &str) -> Option<String> {
    match read_lease(s3, uri).await {
        Ok((current, etag)) if held_by(&current, me) => Some(etag),
        _ => None,
    }
}

async fn read_lease(s3: &S3, uri: &S3Uri) -> Result<(Bytes, String)> {
    let read = |failure| Error::reading("GetObject", uri.to_string(), failure);
    let stream = s3.get_stream(uri).await.map_err(read)?;
    let body = stream
        .body
        .collect()
        .await
        .map_err(|e| read(RemoteFailure::Transient(crate::s3::error_chain(&e))))?;
    Ok((body.into_bytes(), stream.etag.unwrap_or_default()))
}

/// Renews the lease every quarter of its time. A refused renewal (the ETag changed: another
/// worker took it over) or one that cannot get through before the lease expires marks it lost.
async fn renew(
    s3: S3,
    uri: S3Uri,
    ttl: Duration,
    me: String,
    held: Arc<Mutex<Held>>,
    lost: watch::Sender<bool>,
) {
    let mut ticks = tokio::time::interval((ttl / 4).max(Duration::from_millis(250)));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Ok((etag, expires_at)) = held.lock().map(|h| (h.etag.clone(), h.expires_at)) else {
            return;
        };
        let renewal = Put {
            if_match: Some(etag),
            retry_for: Some(ttl / 4),
            ..Put::new("application/json")
        };
        match s3.put(&uri, lease_body(&me, ttl), &renewal).await {
            Ok(etag) => {
                if let Ok(mut held) = held.lock() {
                    held.etag = etag.unwrap_or_default();
                    held.expires_at = now() + ttl.as_secs();
                }
            }
            Err(RemoteFailure::PreconditionFailed | RemoteFailure::NotFound) => {
                if let Some(etag) = written_by(&s3, &uri, &me).await {
                    // This renewal landed; only its answer was lost.
                    if let Ok(mut held) = held.lock() {
                        held.etag = etag;
                        held.expires_at = now() + ttl.as_secs();
                    }
                    continue;
                }
                warn!("the lease {uri} was taken over by another worker");
                let _ = lost.send(true);
                return;
            }
            Err(failure) if now() >= expires_at => {
                warn!("could not renew the lease {uri} before it expired: {failure}");
                let _ = lost.send(true);
                return;
            }
            Err(failure) => debug!("could not renew the lease {uri} yet: {failure}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_of_an_ended_process_of_this_host_is_free() {
        let body = |owner: String| {
            serde_json::to_vec(&LeaseBody {
                owner,
                expires_at: u64::MAX,
            })
            .unwrap_or_default()
        };
        let mut child = std::process::Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let ended = child.id();
        let _ = child.wait();
        let host = this_host();
        assert!(LeaseBody::holder_is_gone(&body(format!(
            "{host}/pid-{ended}/1"
        ))));
        let me = std::process::id();
        assert!(!LeaseBody::holder_is_gone(&body(format!(
            "{host}/pid-{me}/1"
        ))));
        assert!(
            !LeaseBody::holder_is_gone(&body(format!("{host}/pid-1/1"))),
            "runs"
        );
        assert!(!LeaseBody::holder_is_gone(&body(format!(
            "elsewhere/pid-{ended}/1"
        ))));
        assert!(!LeaseBody::holder_is_gone(b"garbage"));
    }

    #[test]
    fn remaining_time_reads_the_body_and_garbage_counts_as_expired() {
        let body = serde_json::to_vec(&LeaseBody {
            owner: "w".into(),
            expires_at: 1_000,
        })
        .unwrap_or_default();
        assert_eq!(LeaseBody::remaining(&body, 900), 100);
        assert_eq!(LeaseBody::remaining(&body, 1_200), 0);
        assert_eq!(LeaseBody::remaining(b"not json", 0), 0);
    }
}
