//! This node's presence in the cluster: the Node object (capacity, addresses, Ready), and
//! the heartbeat that keeps it Ready: its Lease in kube-node-lease and its conditions.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::NodeResources;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Reads the machine's CPU count and memory from /proc.
pub fn machine_resources(pods: u32) -> anyhow::Result<NodeResources> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("MemTotal in /proc/meminfo")?;
    Ok(NodeResources {
        cpu_cores: cpus as f64,
        memory_bytes: kib * 1024.0,
        pods,
    })
}

/// Keeps a Node registered and Ready.
pub struct Registration {
    client: Client,
    name: String,
    ip: String,
    resources: NodeResources,
    since: Timestamp,
}

impl Registration {
    pub fn new(client: Client, name: String, ip: String, resources: NodeResources) -> Self {
        Self {
            client,
            name,
            ip,
            resources,
            since: Timestamp::now(),
        }
    }

    /// Creates the Node (or adopts an existing one) and posts its first status.
    pub async fn register(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", std::env::consts::ARCH),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", std::env::consts::ARCH),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => info!(node = %self.name, "node registered"),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                info!(node = %self.name, "node already registered; taking it over");
            }
            Err(e) => return Err(e).context("creating the Node"),
        }
        self.post_status().await
    }

    async fn post_status(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let status = self.status(Timestamp::now());
        nodes
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .context("posting node status")?;
        Ok(())
    }

    fn status(&self, now: Timestamp) -> NodeStatus {
        let r = self.resources;
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", format!("{}", r.cpu_cores)),
            ("memory", format!("{}Ki", (r.memory_bytes / 1024.0) as u64)),
            ("pods", r.pods.to_string()),
            ("ephemeral-storage", "100Gi".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v)))
        .collect();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(self.since)),
        };
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: self.ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: self.name.clone(),
                },
            ]),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "mapchaos-node has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "mapchaos-node has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "mapchaos-node has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "mapchaos-node is posting ready status",
                ),
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints::default()),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.to_owned(),
                operating_system: "linux".to_owned(),
                boot_id: read("/proc/sys/kernel/random/boot_id"),
                machine_id: read("/etc/machine-id"),
                system_uuid: read("/etc/machine-id"),
                kernel_version: read("/proc/sys/kernel/osrelease"),
                os_image: "mapchaos e2e (processes in namespaces)".to_owned(),
                container_runtime_version: format!("mapchaos-node://{}", env!("CARGO_PKG_VERSION")),
                kubelet_version: "v1.20.2".to_owned(),
                kube_proxy_version: "v1.20.2".to_owned(),
                swap: None,
            }),
            ..NodeStatus::default()
        }
    }

    async fn renew_lease(&self) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let spec = LeaseSpec {
            holder_identity: Some(self.name.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        };
        if leases.get_opt(&self.name).await?.is_some() {
            leases
                .patch(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "spec": spec })),
                )
                .await
                .context("renewing the node lease")?;
            return Ok(());
        }
        // Owned by the Node, as the kubelet does, so the lease goes when the node does.
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.name)
            .await?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(LEASE_NAMESPACE.to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "Node".to_owned(),
                    name: self.name.clone(),
                    uid: node.metadata.uid.unwrap_or_default(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        leases
            .create(&PostParams::default(), &lease)
            .await
            .context("creating the node lease")?;
        Ok(())
    }

    /// Renews the lease and the conditions every 10s until `shutdown`.
    pub async fn heartbeat(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.renew_lease().await {
                warn!(node = %self.name, error = %format!("{e:#}"), "lease renewal failed");
            }
            if let Err(e) = self.post_status().await {
                warn!(node = %self.name, error = %format!("{e:#}"), "node status update failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
