//! mapchaos-node: the e2e cluster's node agent. Registers a Node and runs the pods bound to
//! it as processes in per-pod network and mount namespaces (see shared E2E.md).

mod agent;
mod container;
mod env;
mod error;
mod host;
mod image;
mod network;
mod node;
mod pod;
mod probe;
mod restart;
mod sandbox;
mod status;
mod volumes;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::agent::Context;
use crate::image::ImageMap;
use crate::network::{AddressPool, Cidr};

#[derive(Debug, Parser)]
#[command(
    name = "mapchaos-node",
    about = "Runs Kubernetes pods as local processes (e2e only)"
)]
struct Args {
    /// Kubeconfig to reach the API server (else KUBECONFIG / in-cluster / ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The Node's name.
    #[arg(long, default_value = "mapchaos-node")]
    node_name: String,
    /// The bridge pods attach to (created by e2e/cluster).
    #[arg(long, default_value = "mapchaos0")]
    bridge: String,
    /// The pod address range; its first address is the bridge's, which is also the node IP.
    #[arg(long, default_value = "10.213.0.0/24")]
    pod_cidr: Cidr,
    /// Where pod directories (volumes, logs) live.
    #[arg(long, default_value = "/tmp/mapchaos-e2e")]
    state_dir: PathBuf,
    /// The image map (YAML, see image.rs).
    #[arg(long)]
    images: PathBuf,
    /// The pods capacity to advertise.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let images = ImageMap::load(&args.images)?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let api_host = config.cluster_url.host().unwrap_or("127.0.0.1").to_owned();
    let api_port = config.cluster_url.port_u16().unwrap_or(443);
    let client = kube::Client::try_from(config)?;

    let removed = network::delete_leftovers().await?;
    if removed > 0 {
        info!(removed, "removed pod namespaces left by an earlier run");
    }
    tokio::fs::create_dir_all(args.state_dir.join("pods")).await?;

    let node_ip: Ipv4Addr = args.pod_cidr.gateway();
    let resources = node::machine_resources(args.max_pods)?;
    let registration = node::Registration::new(
        client.clone(),
        args.node_name.clone(),
        node_ip.to_string(),
        resources,
    );
    registration.register().await?;

    let shutdown = CancellationToken::new();
    let heartbeat = tokio::spawn(registration.heartbeat(shutdown.clone()));
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "mapchaos-node".to_owned(),
                instance: Some(args.node_name.clone()),
            },
        ),
        client,
        node_name: args.node_name.clone(),
        node_ip,
        bridge: args.bridge.clone(),
        cidr: args.pod_cidr,
        pool: Mutex::new(AddressPool::new(args.pod_cidr)),
        state_dir: args.state_dir.clone(),
        images,
        api_host,
        api_port,
        resources,
    });
    info!(node = %args.node_name, %node_ip, bridge = %args.bridge, images = ctx.images.images.len(), "node agent running");

    let mut term = signal(SignalKind::terminate())?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("shutting down");
        stop.cancel();
    });
    let result = agent::run(ctx, shutdown.clone()).await;
    shutdown.cancel();
    let _ = heartbeat.await;
    result
}
