//! The operator's one error type; `metric_label()` is the `result` label of
//! `mapchaos_reconcile_total` for a failed reconcile.

use std::path::PathBuf;

/// What can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the MapChaos has no metadata.{0}; it was not read from the API server")]
    MissingMetadata(&'static str),

    #[error(
        "cannot read the storm signing key {path}: {source} (mount the Secret holding the \
         operator's Ed25519 private key there, or point --signing-key-file at it)"
    )]
    SigningKeyRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the storm signing key {path} is not an Ed25519 private key: {reason} (expected PEM \
         PKCS#8, as Helm's genPrivateKey \"ed25519\" writes, or 64 hex characters)"
    )]
    SigningKeyFormat { path: PathBuf, reason: String },

    #[error("storm API {method} {url}: cannot connect or send: {reason}")]
    StormTransport {
        method: &'static str,
        url: String,
        reason: String,
    },

    #[error("storm API {method} {url}: no answer within {seconds}s")]
    StormTimeout {
        method: &'static str,
        url: String,
        seconds: u64,
    },

    #[error("storm API {method} {url} answered {status}: {message}")]
    StormRefused {
        method: &'static str,
        url: String,
        status: u16,
        message: String,
    },

    #[error("storm API {method} {url}: the answer is not a storm status: {reason}")]
    StormDecode {
        method: &'static str,
        url: String,
        reason: String,
    },

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("cannot connect to the Kubernetes API server: {0}")]
    KubeConfig(String),

    #[error("cannot serve metrics and health on {addr} (--metrics-addr): {source}")]
    MetricsServe {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error("leader election on Lease {lease}: {reason}")]
    LeaderElection { lease: String, reason: String },

    #[error(
        "the webhook's TLS certificate or key {path}: {reason} (mount the webhook's TLS Secret \
         and point --webhook-cert-file and --webhook-key-file at its tls.crt and tls.key)"
    )]
    WebhookTls { path: PathBuf, reason: String },

    #[error("cannot serve the sidecar-injection webhook on {addr} (--webhook-addr): {source}")]
    WebhookServe {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error("release: {0}")]
    Release(String),
}

impl Error {
    /// A short, bounded name for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::SigningKeyRead { .. } | Error::SigningKeyFormat { .. } => "signing_key",
            Error::StormTransport { .. } | Error::StormTimeout { .. } => "storm_unreachable",
            Error::StormRefused { .. } => "storm_refused",
            Error::StormDecode { .. } => "storm_decode",
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => "conflict",
            Error::Kube(_) | Error::KubeConfig(_) => "kube_api",
            Error::MetricsServe { .. } => "metrics_serve",
            Error::LeaderElection { .. } => "leader_election",
            Error::WebhookTls { .. } | Error::WebhookServe { .. } => "webhook",
            Error::Release(_) => "release",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_names() {
        let refused = Error::StormRefused {
            method: "PUT",
            url: "http://10.0.0.1:9464/v1/storms/a".into(),
            status: 409,
            message: "busy".into(),
        };
        assert_eq!(refused.metric_label(), "storm_refused");
        assert!(refused.to_string().contains("answered 409: busy"));
        assert_eq!(
            Error::MissingMetadata("uid").metric_label(),
            "missing_metadata"
        );
    }
}
