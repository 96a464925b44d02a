//! mapchaos-pod-sd: Prometheus HTTP service discovery of pods, read from the API server with
//! the same `__meta_kubernetes_pod_*` labels as `kubernetes_sd_configs` (role: pod).
//!
//! Why: Debian's `prometheus` package is built without the Kubernetes discovery plugin, so the
//! e2e Prometheus points `http_sd_configs` here instead; the relabelling rules written for
//! real clusters (keep `prometheus.io/scrape`, address from the pod IP and
//! `prometheus.io/port`) then work unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Serialize;
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "mapchaos-pod-sd",
    about = "Prometheus HTTP SD for pods (e2e only)"
)]
struct Args {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Where Prometheus fetches targets: GET /targets.
    #[arg(long, default_value = "127.0.0.1:19091")]
    listen: SocketAddr,
}

/// One entry of the HTTP SD response.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct TargetGroup {
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = Client::try_from(config)?;
    let app = Router::new()
        .route("/targets", get(targets))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    info!(listen = %args.listen, "serving pod discovery at /targets");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn targets(State(client): State<Client>) -> Result<Json<Vec<TargetGroup>>, StatusCode> {
    match Api::<Pod>::all(client).list(&ListParams::default()).await {
        Ok(pods) => Ok(Json(pods.items.iter().flat_map(target_groups).collect())),
        Err(e) => {
            warn!(error = %e, "listing pods failed");
            Err(StatusCode::BAD_GATEWAY)
        }
    }
}

/// A pod's targets as Prometheus' Kubernetes discovery builds them: one per declared
/// container port, or one bare pod IP when no container declares a port.
fn target_groups(pod: &Pod) -> Vec<TargetGroup> {
    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
        return Vec::new();
    };
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut common = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        common.insert(format!("__meta_kubernetes_{k}"), v);
    };
    put("namespace", meta.namespace.clone().unwrap_or_default());
    put("pod_name", meta.name.clone().unwrap_or_default());
    put("pod_ip", ip.clone());
    put("pod_uid", meta.uid.clone().unwrap_or_default());
    put("pod_node_name", spec.node_name.clone().unwrap_or_default());
    put("pod_host_ip", status.host_ip.clone().unwrap_or_default());
    put("pod_phase", status.phase.clone().unwrap_or_default());
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map_or("unknown".to_owned(), |c| c.status.to_lowercase());
    put("pod_ready", ready);
    for (k, v) in meta.labels.iter().flatten() {
        put(&format!("pod_label_{}", sanitize(k)), v.clone());
        put(
            &format!("pod_labelpresent_{}", sanitize(k)),
            "true".to_owned(),
        );
    }
    for (k, v) in meta.annotations.iter().flatten() {
        put(&format!("pod_annotation_{}", sanitize(k)), v.clone());
        put(
            &format!("pod_annotationpresent_{}", sanitize(k)),
            "true".to_owned(),
        );
    }
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        put("pod_controller_kind", owner.kind.clone());
        put("pod_controller_name", owner.name.clone());
    }

    let mut groups = Vec::new();
    for c in &spec.containers {
        for port in c.ports.iter().flatten() {
            let mut labels = common.clone();
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                c.name.clone(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_init".into(),
                "false".into(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_name".into(),
                port.name.clone().unwrap_or_default(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_number".into(),
                port.container_port.to_string(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_protocol".into(),
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            );
            groups.push(TargetGroup {
                targets: vec![format!("{ip}:{}", port.container_port)],
                labels,
            });
        }
    }
    if groups.is_empty() {
        let mut labels = common;
        if let Some(c) = spec.containers.first() {
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                c.name.clone(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_init".into(),
                "false".into(),
            );
        }
        groups.push(TargetGroup {
            targets: vec![ip],
            labels,
        });
    }
    groups
}

/// Prometheus label names allow `[a-zA-Z0-9_]` only.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(ip: Option<&str>, ports: &[i32]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    [
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        ("prometheus.io/port".to_string(), "9464".to_string()),
                    ]
                    .into(),
                ),
                labels: Some([("app.kubernetes.io/name".to_string(), "cart".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|p| ContainerPort {
                                container_port: *p,
                                ..ContainerPort::default()
                            })
                            .collect(),
                    ),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pods_without_an_ip_have_no_targets() {
        assert!(target_groups(&pod(None, &[80])).is_empty());
    }

    #[test]
    fn each_declared_port_is_a_target_with_sanitized_meta_labels() {
        let groups = target_groups(&pod(Some("10.213.0.5"), &[6379, 9464]));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].targets, vec!["10.213.0.5:9464"]);
        let l = &groups[0].labels;
        assert_eq!(
            l["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "true"
        );
        assert_eq!(
            l["__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "9464"
        );
        assert_eq!(
            l["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "cart"
        );
        assert_eq!(l["__meta_kubernetes_namespace"], "shop");
        assert_eq!(l["__meta_kubernetes_pod_container_port_number"], "6379");
    }

    #[test]
    fn pods_without_ports_get_one_bare_ip_target() {
        let groups = target_groups(&pod(Some("10.213.0.5"), &[]));
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, vec!["10.213.0.5"]);
    }
}
