//! Ctrl-C and SIGTERM: commands stop taking work, clean up what they started (abort a multipart
//! upload, remove staged manifests) and exit with code 130.

use tokio::sync::watch;

/// A handle that resolves once a stop was requested. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Listens for SIGINT and SIGTERM for the rest of the process.
    pub fn on_signals() -> Shutdown {
        let (sender, requested) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("stop requested: cleaning up and exiting");
            let _ = sender.send(true);
            // Keep the sender alive so receivers see `true` rather than a closed channel.
            std::future::pending::<()>().await;
        });
        Shutdown { requested }
    }

    /// A handle that never fires, for library callers and tests.
    pub fn never() -> Shutdown {
        let (sender, requested) = watch::channel(false);
        std::mem::forget(sender);
        Shutdown { requested }
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves when a stop is requested.
    pub async fn requested(&mut self) {
        while !*self.requested.borrow_and_update() {
            if self.requested.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_does_not_fire() {
        let mut shutdown = Shutdown::never();
        assert!(!shutdown.is_requested());
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), shutdown.requested()).await;
        assert!(waited.is_err());
    }
}
