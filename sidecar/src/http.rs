//! The sidecar's HTTP listener: Prometheus metrics and health probes. (The
//! storm control API joins it here.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::engine::MapEngine;
use crate::metrics::SidecarMetrics;

/// What the HTTP handlers read.
pub struct HttpState {
    /// The map whose size and memory `/metrics` reports; `None` when this
    /// process only drives a storm against a remote map.
    pub engine: Option<Arc<dyn MapEngine>>,
    pub metrics: Arc<SidecarMetrics>,
    /// True once the RESP listener accepts connections and until draining starts.
    pub ready: AtomicBool,
}

/// The routes: `/metrics`, `/healthz`, `/readyz`.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    refresh_map_gauges(&state);
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
}

/// Gauges describing the map are read at scrape time, so they are never stale
/// and cost nothing between scrapes.
fn refresh_map_gauges(state: &HttpState) {
    let Some(engine) = &state.engine else { return };
    let memory = engine.memory();
    let metrics = &state.metrics;
    metrics.keys.set(saturating_i64(memory.keys));
    metrics
        .map_memory
        .with_label_values(&["live"])
        .set(saturating_i64(memory.live_bytes));
    metrics
        .map_memory
        .with_label_values(&["held"])
        .set(saturating_i64(memory.held_bytes));
    if let Some(rss) = crate::memory::resident_bytes() {
        metrics
            .map_memory
            .with_label_values(&["rss"])
            .set(saturating_i64(rss));
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
