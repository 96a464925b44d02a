//! Runs with steady-state probes end to end in one process: the reconciler
//! against the in-memory API server and real sidecars, probing a real local
//! HTTP server whose health a test flips.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use mapchaos_api::Verdict;
use mapchaos_api::probe::ProbePhase;
use mapchaos_api::resource::{ExperimentPhase, TargetPhase};
use serde_json::{Value, json};

use super::lifecycle::{Scenario, sharded};

/// A tiny application: `/healthz` answers 200 "ok" while healthy, else 503;
/// it counts the calls.
#[derive(Clone, Default)]
struct App {
    healthy: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

async fn app(healthy: bool) -> (App, String) {
    let state = App::default();
    state.healthy.store(healthy, Ordering::SeqCst);
    let router = Router::new()
        .route(
            "/healthz",
            get(|State(app): State<App>| async move {
                app.calls.fetch_add(1, Ordering::SeqCst);
                if app.healthy.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (state, url)
}

fn spec(duration: &str, probe: Value) -> Value {
    json!({
        "duration": duration,
        "storm": {"workers": 2, "keys": {"count": 500}},
        "probes": [probe],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_before_probe_starts_no_storm_on_any_sidecar() {
    let (app, url) = app(false).await;
    let probe = json!({"name": "health", "mode": "before", "http": {"url": url}});
    let scenario = Scenario::start(41, vec![sharded(), sharded()], spec("1s", probe)).await;
    let status = scenario.until_finished().await;
    assert_eq!(status.phase, ExperimentPhase::Failed);
    assert!(status.targets.is_empty(), "{:?}", status.targets);
    assert_eq!(
        status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Fail)
    );
    let health = &status.runs[0].probes[0];
    assert_eq!(health.phase, ProbePhase::Failed);
    assert!(health.message.contains("HTTP 503"), "{}", health.message);
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
    for sidecar in &scenario.sidecars {
        assert!(sidecar.calls().is_empty(), "{:?}", sidecar.calls());
        assert!(sidecar.storms_started().is_empty());
    }
    let failed = scenario.events("ProbeFailed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .note
            .contains("probe health failed before the storms"),
        "{:?}",
        failed[0]
    );
    assert!(scenario.events("RunStarted").is_empty());
    // Later reconciles do not try again.
    scenario.reconcile().await;
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_failure_probe_stops_the_storms_long_before_their_duration() {
    let (app, url) = app(true).await;
    let probe = json!({
        "name": "health", "mode": "continuous", "interval": "1s", "stopOnFailure": true,
        "http": {"url": url},
    });
    let scenario = Scenario::start(42, vec![sharded(), sharded()], spec("5m", probe)).await;
    scenario.until_running().await;
    app.healthy.store(false, Ordering::SeqCst);
    let broke = Instant::now();
    let status = scenario
        .reconcile_until(
            "the storms stopped",
            |s| s.targets.iter().all(|t| t.phase.is_final()) && s.finished_at.is_some(),
            |_| {},
        )
        .await;
    assert!(
        broke.elapsed() < Duration::from_secs(8),
        "a 5m storm stopped early"
    );
    assert_eq!(status.phase, ExperimentPhase::Aborted);
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.phase == TargetPhase::Aborted),
        "{:?}",
        status.targets
    );
    assert_eq!(
        status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Fail)
    );
    let health = &status.runs[0].probes[0];
    assert_eq!(health.phase, ProbePhase::Failed);
    assert!(
        health.successes >= 1 && health.success_percent < 100,
        "{health:?}"
    );
    scenario.sidecars_idle().await;
    let failed = scenario.events("ProbeFailed");
    assert!(failed[0].note.contains("stopping the storms"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_continuous_probe_passes_with_the_map() {
    let (app, url) = app(true).await;
    let probe = json!({"name": "health", "interval": "1s", "http": {"url": url}});
    let scenario = Scenario::start(43, vec![sharded()], spec("2s", probe)).await;
    let status = scenario.until_finished().await;
    assert_eq!(status.phase, ExperimentPhase::Completed);
    assert_eq!(
        status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Pass)
    );
    let health = &status.runs[0].probes[0];
    assert_eq!(health.phase, ProbePhase::Passed);
    assert_eq!(health.success_percent, 100);
    assert!(health.attempts >= 3, "before, during and after: {health:?}");
    assert_eq!(health.attempts, app.calls.load(Ordering::SeqCst));
    assert!(scenario.events("ProbeFailed").is_empty());
}
