//! Ctrl-C and SIGTERM: commands stop taking work, clean up what they started (abort a multipart
//! upload, remove staged manifests, release a queue message) and exit with code 130, or 0 for a
//! queue worker that released its message on SIGTERM (what ECS expects of a stopped task).

use tokio::sync::watch;

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT, Ctrl-C: a person stopped it.
    Interrupt,
    /// SIGTERM: the platform stopped it (ECS scale-in, spot interruption, `docker stop`).
    Terminate,
}

/// A handle that resolves once a stop was requested. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: watch::Receiver<Option<StopSignal>>,
}

impl Shutdown {
    /// Listens for SIGINT and SIGTERM for the rest of the process.
    pub fn on_signals() -> Shutdown {
        let (sender, requested) = watch::channel(None);
        tokio::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::warn!("stop requested ({signal:?}): cleaning up and exiting");
            let _ = sender.send(Some(signal));
            // Keep the sender alive so receivers keep seeing the signal rather than a closed channel.
            std::future::pending::<()>().await;
        });
        Shutdown { requested }
    }

    /// A handle that never fires, for library callers and tests.
    pub fn never() -> Shutdown {
        let (sender, requested) = watch::channel(None);
        std::mem::forget(sender);
        Shutdown { requested }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.borrow().is_some()
    }

    /// The signal that asked to stop, if any did.
    pub fn signal(&self) -> Option<StopSignal> {
        *self.requested.borrow()
    }

    /// Resolves when a stop is requested.
    pub async fn requested(&mut self) {
        while self.requested.borrow_and_update().is_none() {
            if self.requested.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Shutdown {
    /// A handle that fires when this one does, or when the returned [`Stopper`] is used: one
    /// piece of work (a queue message) can then be stopped alone, cleaning up as on a signal.
    pub fn child(&self) -> (Shutdown, Stopper) {
        let (sender, requested) = watch::channel(self.signal());
        let sender = std::sync::Arc::new(sender);
        let mut parent = self.clone();
        let forward = sender.clone();
        let task = tokio::spawn(async move {
            parent.requested().await;
            let _ = forward.send(parent.signal());
        });
        (Shutdown { requested }, Stopper { sender, task })
    }
}

/// Stops a [`Shutdown::child`] handle.
#[derive(Debug)]
pub struct Stopper {
    sender: std::sync::Arc<watch::Sender<Option<StopSignal>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stopper {
    pub fn stop(&self) {
        let _ = self.sender.send(Some(StopSignal::Interrupt));
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for_signal() -> StopSignal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    StopSignal::Interrupt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_fires_alone_or_with_its_parent() {
        let parent = Shutdown::never();
        let (mut child, stopper) = parent.child();
        assert!(!child.is_requested());
        stopper.stop();
        tokio::time::timeout(std::time::Duration::from_secs(5), child.requested())
            .await
            .unwrap_or_else(|_| panic!("the child did not fire"));
        assert!(
            !parent.is_requested(),
            "the parent is not stopped by its child"
        );
    }

    #[tokio::test]
    async fn never_does_not_fire() {
        let mut shutdown = Shutdown::never();
        assert!(!shutdown.is_requested());
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), shutdown.requested()).await;
        assert!(waited.is_err());
    }
}
