//! The agent's pod loop: watches the pods bound to this node and gives each its own worker,
//! feeding it every update of its object; also owns the context all workers share.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::container::pod_key;
use crate::image::ImageMap;
use crate::network::{AddressPool, Cidr};
use crate::pod;

/// This node's allocatable resources (also the downward API's default limits).
#[derive(Clone, Copy, Debug)]
pub struct NodeResources {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    pub pods: u32,
}

/// What every pod worker needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub node_name: String,
    /// The node's address (the bridge's), reported as hostIP.
    pub node_ip: Ipv4Addr,
    pub bridge: String,
    pub cidr: Cidr,
    pub pool: Mutex<AddressPool>,
    pub state_dir: PathBuf,
    pub images: ImageMap,
    /// Where pods reach the API server (see the KUBERNETES_SERVICE_* note in container.rs).
    pub api_host: String,
    pub api_port: u16,
    pub resources: NodeResources,
}

struct Worker {
    updates: watch::Sender<Arc<Pod>>,
    gone: CancellationToken,
}

/// Runs until `shutdown`; then stops every pod quickly and waits for the workers.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    listed.insert(uid.clone());
                    let p = Arc::new(p);
                    match workers.get(&uid) {
                        Some(w) => { w.updates.send_replace(p); }
                        None => {
                            info!(pod = %pod_key(&p), %uid, "pod bound to this node");
                            let (tx, rx) = watch::channel(p);
                            let gone = CancellationToken::new();
                            workers.insert(uid.clone(), Worker { updates: tx, gone: gone.clone() });
                            let (ctx, done, stop) = (ctx.clone(), done_tx.clone(), shutdown.clone());
                            tasks.spawn(async move {
                                pod::run(ctx, rx, gone, stop).await;
                                let _ = done.send(uid);
                            });
                        }
                    }
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if let Some(w) = workers.get(&uid) {
                        info!(pod = %pod_key(&p), "pod object removed");
                        w.updates.send_replace(Arc::new(p));
                        w.gone.cancel();
                    }
                }
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods deleted while the watch was down never send a Delete.
                    for (uid, w) in &workers {
                        if !listed.contains(uid) {
                            w.gone.cancel();
                        }
                    }
                }
                Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
                None => anyhow::bail!("pod watch ended"),
            },
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
            _ = shutdown.cancelled() => break,
        }
    }
    info!(pods = workers.len(), "stopping all pods");
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(20), all_done)
        .await
        .is_err()
    {
        warn!("pods did not stop in time");
    }
    Ok(())
}
