//! The operator's Prometheus metrics and its HTTP server: `/metrics`,
//! `/healthz` and `/readyz` (ready once every MapChaos store has synced).
//! Names and labels are a public interface (ARCHITECTURE.md); no label holds
//! a pod IP, a key or another unbounded value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use mapchaos_api::MapChaos;
use mapchaos_api::resource::{ExperimentPhase, TargetPhase};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Every metric the operator exports, in one registry.
pub struct Metrics {
    pub registry: Registry,
    /// `mapchaos_reconcile_total{result}`: `ok` or the error's `metric_label()`.
    pub reconcile: IntCounterVec,
    /// `mapchaos_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `mapchaos_experiments{namespace,phase}`.
    pub experiments: IntGaugeVec,
    /// `mapchaos_targets{state}`: the current runs' targets by phase.
    pub targets: IntGaugeVec,
    /// `mapchaos_experiment_anomalies{namespace,name}`: the current run's keys
    /// with anomalies.
    pub experiment_anomalies: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconcile = IntCounterVec::new(
            Opts::new(
                "mapchaos_reconcile_total",
                "MapChaos reconciles, by result (ok or the error kind).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mapchaos_reconcile_duration_seconds",
                "Time one MapChaos reconcile took, observing and acting included.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let experiments = IntGaugeVec::new(
            Opts::new(
                "mapchaos_experiments",
                "MapChaos resources, by namespace and phase.",
            ),
            &["namespace", "phase"],
        )
        .expect("valid metric");
        let targets = IntGaugeVec::new(
            Opts::new(
                "mapchaos_targets",
                "Target pods of the current runs, by state.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let experiment_anomalies = IntGaugeVec::new(
            Opts::new(
                "mapchaos_experiment_anomalies",
                "Keys with anomalies the checker proved in an experiment's current run (a key with several kinds counts once).",
            ),
            &["namespace", "name"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconcile.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_duration.clone()),
            Box::new(experiments.clone()),
            Box::new(targets.clone()),
            Box::new(experiment_anomalies.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            reconcile,
            reconcile_duration,
            experiments,
            targets,
            experiment_anomalies,
        }
    }

    /// Count one reconcile and how long it took.
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        self.reconcile.with_label_values(&[result]).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Set the gauges from the experiments as they are now, so a deleted
    /// experiment's series disappear with it.
    pub fn refresh(&self, experiments: &[Arc<MapChaos>]) {
        self.experiments.reset();
        self.targets.reset();
        self.experiment_anomalies.reset();
        for experiment in experiments {
            let namespace = experiment.metadata.namespace.as_deref().unwrap_or_default();
            let name = experiment.metadata.name.as_deref().unwrap_or_default();
            let status = experiment.status.clone().unwrap_or_default();
            self.experiments
                .with_label_values(&[namespace, phase_label(status.phase)])
                .inc();
            for target in &status.targets {
                self.targets
                    .with_label_values(&[target.phase.as_str()])
                    .inc();
            }
            let anomalies = status.summary.map_or(0, |s| s.total_anomalies);
            self.experiment_anomalies
                .with_label_values(&[namespace, name])
                .set(i64::try_from(anomalies).unwrap_or(i64::MAX));
        }
        // Every state is exported, zero included, so dashboards see a series.
        for phase in ALL_TARGET_PHASES {
            self.targets.with_label_values(&[phase.as_str()]).add(0);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("the text encoder writes to memory");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

const ALL_TARGET_PHASES: [TargetPhase; 8] = [
    TargetPhase::Pending,
    TargetPhase::Running,
    TargetPhase::Completed,
    TargetPhase::Aborted,
    TargetPhase::Failed,
    TargetPhase::PodGone,
    TargetPhase::Unreachable,
    TargetPhase::DryRun,
];

/// The `phase` label: the phase as `kubectl get` shows it.
fn phase_label(phase: ExperimentPhase) -> &'static str {
    match phase {
        ExperimentPhase::Pending => "Pending",
        ExperimentPhase::Running => "Running",
        ExperimentPhase::Completed => "Completed",
        ExperimentPhase::Failed => "Failed",
        ExperimentPhase::Aborted => "Aborted",
        ExperimentPhase::Paused => "Paused",
    }
}

/// What the HTTP server reads.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    /// The controllers' MapChaos stores (one per watched namespace, or one
    /// for all); empty until this replica leads.
    pub stores: Arc<parking_lot::RwLock<Vec<Store<MapChaos>>>>,
    /// Every store has synced (or this replica waits for leadership: a
    /// standby is ready to take over, so it reports ready too).
    pub ready: Arc<AtomicBool>,
}

impl ServerState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ServerState {
            metrics,
            stores: Arc::default(),
            ready: Arc::default(),
        }
    }
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    let experiments: Vec<Arc<MapChaos>> = state
        .stores
        .read()
        .iter()
        .flat_map(|store| store.state())
        .collect();
    state.metrics.refresh(&experiments);
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the MapChaos caches to sync",
        )
    }
}

/// Bind `addr` and serve until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::MetricsServe { addr, source })?;
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use mapchaos_api::MapChaosStatus;
    use mapchaos_api::resource::{Summary, TargetStatus};

    use super::*;

    fn experiment(name: &str, phase: ExperimentPhase, targets: &[TargetPhase]) -> Arc<MapChaos> {
        let spec = serde_json::from_value(serde_json::json!({})).unwrap();
        let mut experiment = MapChaos::new(name, spec);
        experiment.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        };
        experiment.status = Some(MapChaosStatus {
            phase,
            targets: targets
                .iter()
                .map(|phase| TargetStatus {
                    phase: *phase,
                    ..TargetStatus::default()
                })
                .collect(),
            summary: Some(Summary {
                total_anomalies: 3,
                ..Summary::default()
            }),
            ..MapChaosStatus::default()
        });
        Arc::new(experiment)
    }

    #[test]
    fn gauges_follow_the_experiments_and_forget_deleted_ones() {
        let metrics = Metrics::new();
        metrics.reconciled("ok", Duration::from_millis(20));
        metrics.refresh(&[
            experiment(
                "a",
                ExperimentPhase::Running,
                &[TargetPhase::Running, TargetPhase::Running],
            ),
            experiment("b", ExperimentPhase::Completed, &[TargetPhase::Completed]),
        ]);
        let text = metrics.render();
        assert!(
            text.contains("mapchaos_reconcile_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("mapchaos_reconcile_duration_seconds_count 1"));
        assert!(text.contains("mapchaos_experiments{namespace=\"shop\",phase=\"Running\"} 1"));
        assert!(text.contains("mapchaos_targets{state=\"running\"} 2"));
        assert!(text.contains("mapchaos_targets{state=\"unreachable\"} 0"));
        assert!(text.contains("mapchaos_experiment_anomalies{name=\"b\",namespace=\"shop\"} 3"));

        metrics.refresh(&[experiment("a", ExperimentPhase::Running, &[])]);
        let text = metrics.render();
        assert!(!text.contains("name=\"b\""), "{text}");
        assert!(!text.contains("phase=\"Completed\""), "{text}");
    }

    #[tokio::test]
    async fn readyz_waits_for_the_caches_and_metrics_are_served() {
        let state = ServerState::new(Arc::new(Metrics::new()));
        let shutdown = CancellationToken::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(addr, state.clone(), shutdown.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        state.ready.store(true, Ordering::Release);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get("/metrics").await;
        assert!(
            metrics.contains("mapchaos_targets{state=\"pending\"} 0"),
            "{metrics}"
        );
        shutdown.cancel();
        server.await.unwrap();
    }
}
