//! `mapchaos operator`: the command line of the MapChaos controller. Every
//! flag has an environment variable so a Deployment can set it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use mapchaos_operator::Config;
use mapchaos_sidecar::config::LogFormat;
use tokio_util::sync::CancellationToken;

/// `mapchaos operator`: reconcile MapChaos resources into storms.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// The Ed25519 private key storm requests are signed with (PEM PKCS#8 or
    /// 64 hex characters); mount the Secret holding it here.
    #[arg(long, env = "MAPCHAOS_SIGNING_KEY_FILE")]
    pub signing_key_file: PathBuf,

    /// Watch MapChaos resources and pods only in this namespace; repeat for
    /// several. Without it, every namespace.
    #[arg(long = "namespace", env = "MAPCHAOS_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "MAPCHAOS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// The operator's own namespace: the kill-switch ConfigMap and the leader
    /// Lease live there. Defaults to the client's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,

    /// Run the controller only while holding the Lease `mapchaos-operator`
    /// (for more than one replica).
    #[arg(long, env = "MAPCHAOS_LEADER_ELECTION")]
    pub leader_election: bool,

    /// This replica's name in the leader Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Log format.
    #[arg(long, env = "MAPCHAOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (for example `info` or
    /// `mapchaos_operator=debug`).
    #[arg(long, env = "MAPCHAOS_LOG", default_value = "info")]
    pub log: String,
}

impl OperatorArgs {
    fn config(self) -> Config {
        let identity = self
            .identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("mapchaos-operator-{}", std::process::id()));
        Config {
            signing_key_file: self.signing_key_file,
            namespaces: self.namespaces,
            metrics_addr: self.metrics_addr,
            operator_namespace: self.operator_namespace,
            leader_election: self.leader_election,
            identity,
        }
    }
}

pub async fn run(args: OperatorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = args.config();
    // Checked before connecting, so a missing key is the error shown.
    mapchaos_operator::signing_key::StormSigner::from_file(&config.signing_key_file)?;
    let client = mapchaos_operator::config::connect().await?;
    mapchaos_operator::controller::run(client, config, shutdown)
        .await
        .context("the operator stopped")
}
