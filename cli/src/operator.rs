//! `mapchaos operator`: the command line of the MapChaos controller. Every
//! flag has an environment variable so a Deployment can set it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ResourceRequirements;
use mapchaos_operator::Config;
use mapchaos_operator::policy::Guardrails;
use mapchaos_operator::webhook::WebhookConfig;
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

    /// Serve the sidecar-injection webhook (HTTPS, `POST /mutate`) here; only
    /// with --webhook-cert-file and --webhook-key-file.
    #[arg(long, env = "MAPCHAOS_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,

    /// The webhook's PEM certificate chain (`tls.crt` of its TLS Secret).
    /// Without it and --webhook-key-file, no webhook is served.
    #[arg(
        long,
        env = "MAPCHAOS_WEBHOOK_CERT_FILE",
        requires = "webhook_key_file"
    )]
    pub webhook_cert_file: Option<PathBuf>,

    /// The webhook's PEM private key (`tls.key`). Both files are read once, at
    /// start.
    #[arg(
        long,
        env = "MAPCHAOS_WEBHOOK_KEY_FILE",
        requires = "webhook_cert_file"
    )]
    pub webhook_key_file: Option<PathBuf>,

    /// The image of the injected sidecar container.
    #[arg(long, env = "MAPCHAOS_SIDECAR_IMAGE", default_value = concat!("ghcr.io/mapchaos/mapchaos:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// The injected sidecar's imagePullPolicy; the cluster's default when unset.
    #[arg(long, env = "MAPCHAOS_SIDECAR_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub sidecar_image_pull_policy: Option<String>,

    /// The injected sidecar's resources, as the JSON of a Kubernetes
    /// ResourceRequirements.
    #[arg(
        long,
        env = "MAPCHAOS_SIDECAR_RESOURCES",
        default_value = r#"{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"512Mi"}}"#,
        value_parser = parse_resources
    )]
    pub sidecar_resources: ResourceRequirements,

    /// Storm a namespace only when it is labelled `mapchaos.io/storms:
    /// allowed` (checked at admission and whenever a run starts);
    /// `--require-namespace-label=false` turns the requirement off.
    #[arg(
        long,
        env = "MAPCHAOS_REQUIRE_NAMESPACE_LABEL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub require_namespace_label: bool,

    /// Never storm this namespace (repeatable), besides kube-system,
    /// kube-public, kube-node-lease and the operator's own.
    #[arg(
        long = "protected-namespace",
        env = "MAPCHAOS_PROTECTED_NAMESPACES",
        value_delimiter = ','
    )]
    pub protected_namespaces: Vec<String>,

    /// A run that would storm more pods than this does not start.
    #[arg(long, env = "MAPCHAOS_MAX_TARGETS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_targets: Option<u32>,

    /// A run that would have more than this percentage of a namespace's
    /// sidecar pods stormed at once (counting every experiment's running
    /// storms) does not start.
    #[arg(long, env = "MAPCHAOS_MAX_NAMESPACE_SHARE_PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_namespace_share_percent: Option<u32>,

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
        let webhook = match (self.webhook_cert_file, self.webhook_key_file) {
            (Some(cert_file), Some(key_file)) => Some(WebhookConfig {
                addr: self.webhook_addr,
                cert_file,
                key_file,
                image: self.sidecar_image,
                image_pull_policy: self.sidecar_image_pull_policy,
                resources: self.sidecar_resources,
            }),
            _ => None,
        };
        Config {
            signing_key_file: self.signing_key_file,
            namespaces: self.namespaces,
            metrics_addr: self.metrics_addr,
            operator_namespace: self.operator_namespace,
            leader_election: self.leader_election,
            identity,
            webhook,
            guardrails: Some(Guardrails {
                require_namespace_label: self.require_namespace_label,
                protected_namespaces: self.protected_namespaces.into_iter().collect(),
                operator_namespace: None,
                max_targets: self.max_targets,
                max_namespace_share_percent: self.max_namespace_share_percent,
            }),
        }
    }
}

fn parse_resources(json: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(json).map_err(|e| format!("not a ResourceRequirements JSON object: {e}"))
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

/// `mapchaos release`: let go of every MapChaos before the operator is
/// uninstalled (the chart runs it as a pre-delete hook).
#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    /// The operator's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: String,

    /// The operator's Deployment: scaled to 0 first, so nothing puts the
    /// finalizers back.
    #[arg(long, env = "MAPCHAOS_OPERATOR_DEPLOYMENT")]
    pub deployment: String,

    /// Release MapChaos only in this namespace; repeat for several. Without
    /// it, every namespace.
    #[arg(long = "namespace", env = "MAPCHAOS_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How long the operator may take to stop.
    #[arg(long, default_value = "120s")]
    pub timeout: mapchaos_api::GoDuration,

    /// Delete the Validating- and MutatingWebhookConfiguration of this name
    /// first (the MapChaos admission webhooks, which refuse every MapChaos
    /// write once the operator is gone); repeatable.
    #[arg(long = "admission-webhook")]
    pub admission_webhooks: Vec<String>,

    #[arg(long, env = "MAPCHAOS_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[arg(long, env = "MAPCHAOS_LOG", default_value = "info")]
    pub log: String,
}

pub async fn release(args: ReleaseArgs, _shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = mapchaos_operator::config::connect().await?;
    let config = mapchaos_operator::release::ReleaseConfig {
        namespace: args.operator_namespace,
        deployment: args.deployment,
        watch_namespaces: args.namespaces,
        timeout: args.timeout.as_duration(),
        admission_webhooks: args.admission_webhooks,
    };
    let done = mapchaos_operator::release::release(client, &config)
        .await
        .context("cannot release the MapChaos resources")?;
    tracing::info!(
        released = done.released,
        with_running_storms = done.with_running_storms,
        "released every MapChaos; running storms stop at their lease and restore"
    );
    Ok(())
}
