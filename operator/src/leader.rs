//! Leader election over the Lease `mapchaos-operator` in the operator's
//! namespace (kube-lease-manager): only the holder runs the controllers, so
//! two replicas never drive the same storms. A leader that loses the Lease
//! stops its controllers and the process exits, to be restarted as a
//! standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// The Lease's name.
pub const LEASE: &str = "mapchaos-operator";
/// How long a holder's claim lasts without renewal.
const LEASE_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
const GRACE_SECONDS: u64 = 5;
/// How long releasing the Lease may take on the way out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Holding the Lease.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

fn failed(error: impl std::fmt::Display) -> Error {
    Error::LeaderElection {
        lease: LEASE.to_owned(),
        reason: error.to_string(),
    }
}

/// Wait for the Lease; `None` when `shutdown` came first.
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Leadership>, Error> {
    let manager = LeaseManagerBuilder::new(client, LEASE)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .map_err(failed)?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = LEASE, %namespace, %identity, "waiting for leadership");
    let leading = tokio::select! {
        _ = shutdown.cancelled() => None,
        leading = state.wait_for(|leading| *leading) => Some(leading.is_ok()),
    };
    match leading {
        None => {
            drop(state);
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, task).await;
            Ok(None)
        }
        Some(false) => Err(failed("the lease manager stopped")),
        Some(true) => {
            tracing::info!(lease = LEASE, %identity, "leading");
            Ok(Some(Leadership { state, task }))
        }
    }
}

impl Leadership {
    /// Cancel `leading` if the Lease is lost; the flag tells it was.
    pub fn on_loss(&self, leading: CancellationToken) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let mut state = self.state.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = leading.cancelled() => {}
                _ = state.wait_for(|leading| !*leading) => {
                    tracing::error!(lease = LEASE, "lost leadership; stopping the controllers");
                    flag.store(true, Ordering::Release);
                    leading.cancel();
                }
            }
        });
        lost
    }

    /// Give the Lease up so a standby takes over at once.
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(RELEASE_TIMEOUT, self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!(lease = LEASE, "released"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, lease = LEASE, "cannot release"),
            Ok(Err(error)) => tracing::warn!(%error, lease = LEASE, "the lease task failed"),
            Err(_) => tracing::warn!(lease = LEASE, "releasing timed out; it expires by itself"),
        }
    }
}
