//! How the operator is run: what `mapchaos operator` parses its flags into,
//! and the connection to the API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use kube::Client;

use crate::error::Error;
use crate::policy::Guardrails;
use crate::webhook::WebhookConfig;

/// The operator's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The storm-signing key (a mounted Secret).
    pub signing_key_file: PathBuf,
    /// Watch only these namespaces; empty watches all.
    pub namespaces: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Where the kill switch and the leader Lease live; the client's default
    /// namespace when unset.
    pub operator_namespace: Option<String>,
    /// Run the controllers only while holding the leader Lease.
    pub leader_election: bool,
    /// This replica's name in the Lease and in Events (the pod's name).
    pub identity: String,
    /// The sidecar-injection webhook; served by every replica, leader or not.
    pub webhook: Option<WebhookConfig>,
    /// Where storms may go and how big a run may be, checked when a run
    /// starts (and by the admission webhook); `None` checks nothing at
    /// reconcile. The operator's namespace is filled in at start.
    pub guardrails: Option<Guardrails>,
}

/// A client from the in-cluster service account or the local kubeconfig.
pub async fn connect() -> Result<Client, Error> {
    Client::try_default()
        .await
        .map_err(|error| Error::KubeConfig(error.to_string()))
}
