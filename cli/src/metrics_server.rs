//! Serves the sidecar's `/metrics` (and health) while a local storm runs, on
//! a small runtime of its own so the storm's threads are left alone.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mapchaos_sidecar::engine::MapEngine;
use mapchaos_sidecar::http::{self, HttpState};
use mapchaos_sidecar::metrics::SidecarMetrics;

/// Stops serving when dropped.
pub struct MetricsServer {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub fn start(
    addr: SocketAddr,
    engine: Option<Arc<dyn MapEngine>>,
    metrics: Arc<SidecarMetrics>,
) -> anyhow::Result<MetricsServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("metrics-http")
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr} (--metrics-addr)"))?;
    let state = Arc::new(HttpState {
        engine,
        metrics,
        ready: true.into(),
    });
    runtime.spawn(async move {
        let _ = axum::serve(listener, http::router(state)).await;
    });
    Ok(MetricsServer {
        runtime: Some(runtime),
    })
}
