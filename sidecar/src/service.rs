//! The sidecar process: binds the RESP and HTTP listeners, runs active expiry
//! and compaction in the background, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::DeleteAudit;
use crate::audit::log::DeleteLog;
use crate::config::{EngineKind, SidecarArgs};
use crate::control_api::{self, Verifier};
use crate::engine::{Clock, LaggingEngine, MapEngine, ShardedEngine};
use crate::fd_budget;
use crate::http::{self, HttpState};
use crate::http_listener;
use crate::memory::{self, HeapRelease};
use crate::metrics::SidecarMetrics;
use crate::server;
use crate::storms::{StormBudget, Storms, StormsConfig};

/// How often active expiry runs, how many keys one pass may remove, and how
/// many passes one tick may chain while each finds a full budget of expired
/// keys (so a burst of expiries is cleared fast but never starves the map).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);
const EXPIRY_BUDGET: usize = 2_000;
const EXPIRY_PASSES_PER_TICK: usize = 16;
/// How often the engine checks whether most of what it holds is dead space.
const COMPACT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the RSS is compared with what the map and the finished storms
/// hold, to hand freed heap back to the kernel (see `memory::HeapRelease`).
const HEAP_RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// Run the sidecar until `shutdown` is cancelled, then drain and return.
pub async fn run(args: SidecarArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let metrics = Arc::new(SidecarMetrics::new());
    let delete_log = args
        .delete_log_config()
        .map(|config| DeleteLog::start(config, metrics.delete_log_dropped.clone()))
        .transpose()
        .context("--delete-log")?;
    let audit = DeleteAudit::new(&metrics.registry, delete_log);
    let engine: Arc<dyn MapEngine> = {
        let sharded =
            Arc::new(ShardedEngine::new(args.shards, Clock::System).with_delete_sink(audit));
        match args.engine {
            EngineKind::Sharded => sharded as Arc<dyn MapEngine>,
            EngineKind::Lagging => {
                warn!(
                    lag_ms = args.lag_ms,
                    "serving reads from a lagging snapshot: this engine is broken on purpose"
                );
                LaggingEngine::new(sharded, Duration::from_millis(args.lag_ms))
            }
        }
    };
    let mut server_config = args.server_config();
    server_config.max_clients = descriptor_budget(&args)?;

    let resp_listener = TcpListener::bind(args.resp_addr)
        .await
        .with_context(|| format!("cannot listen for RESP on {} (--resp-addr)", args.resp_addr))?;
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {} (--http-addr)", args.http_addr))?;
    info!(
        resp = %resp_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        engine = engine.name(),
        shards = args.shards,
        "mapchaos sidecar listening"
    );

    let identity = args.pod_identity().map_err(anyhow::Error::msg)?;
    match (&args.operator_public_key, &identity) {
        (None, _) => warn!("no --operator-public-key: the storm API (/v1/storms) is disabled"),
        (Some(_), None) => warn!(
            "no pod identity (MAPCHAOS_POD_NAMESPACE, MAPCHAOS_POD_NAME): the storm API \
             (/v1/storms) refuses every request, since it cannot tell which pod a request \
             was signed for"
        ),
        (Some(_), Some(pod)) if pod.uid.is_empty() => warn!(
            pod = %pod.target(),
            "no MAPCHAOS_POD_UID: signed requests are checked against the pod's name only"
        ),
        (Some(_), Some(pod)) => {
            info!(pod = %pod.target(), uid = %pod.uid, "storm API on for this pod")
        }
    }
    let verifier = Verifier::new(args.operator_public_key.as_deref(), identity)
        .map_err(|e| anyhow::anyhow!("--operator-public-key: {e}"))?;
    let storms = Storms::with_config(
        engine.clone(),
        metrics.clone(),
        StormsConfig {
            finished_max_bytes: args.finished_storms_max_bytes,
            storm_budget: StormBudget {
                ceiling: args.storm_memory_budget,
                ..StormBudget::default()
            },
        },
    );
    let http_state = Arc::new(HttpState {
        engine: Some(engine.clone()),
        metrics: metrics.clone(),
        ready: false.into(),
    });
    let http_shutdown = CancellationToken::new();
    let http_task = tokio::spawn(http_listener::serve(
        http_listener,
        http::router(http_state.clone()).merge(control_api::router(storms.clone(), verifier)),
        args.http_limits(),
        metrics.clone(),
        http_shutdown.clone(),
    ));
    let housekeeping = tokio::spawn(housekeeping(
        engine.clone(),
        storms.clone(),
        shutdown.clone(),
    ));

    let resp_task = tokio::spawn(server::serve_with_probe(
        resp_listener,
        engine.clone(),
        metrics.clone(),
        server_config,
        storms.app_probe(),
        shutdown.clone(),
    ));
    http_state.ready.store(true, Ordering::Release);

    shutdown.cancelled().await;
    http_state.ready.store(false, Ordering::Release);
    // A storm must not outlive its sidecar's service: stop it, and let its
    // check and restore finish before the process exits.
    storms.stop_all();
    info!("shutting down: draining RESP connections");
    let drain = Duration::from_secs(args.drain_timeout_secs);
    match tokio::time::timeout(drain, resp_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "RESP server ended with an error"),
        Ok(Err(error)) => warn!(%error, "RESP server task failed"),
        Err(_) => warn!(
            seconds = args.drain_timeout_secs,
            "drain timed out; closing anyway"
        ),
    }
    let waiting = storms.clone();
    let drained = tokio::task::spawn_blocking(move || wait_for_storm(&waiting, drain)).await;
    if !matches!(drained, Ok(true)) {
        warn!(
            seconds = args.drain_timeout_secs,
            "a storm was still finishing at exit"
        );
    }
    http_shutdown.cancel();
    if let Err(error) = http_task.await {
        warn!(%error, "HTTP listener task failed");
    }
    housekeeping.abort();
    info!("sidecar stopped");
    Ok(())
}

/// Wait for the stopped storm to end, at most `drain` — except while it
/// restores: the application's keys are never left as the storm left them,
/// so the restore is always waited for (it is in-process and fast; only a
/// SIGKILL cuts it short).
fn wait_for_storm(storms: &Storms, drain: Duration) -> bool {
    let mut waited = Duration::ZERO;
    let step = Duration::from_secs(1);
    loop {
        if storms.wait_idle(step) {
            return true;
        }
        waited += step;
        match storms.restoring() {
            Some((done, total)) => info!(done, total, "waiting for the storm's restore"),
            None if waited >= drain => return false,
            None => {}
        }
    }
}

/// The RESP port's share of the open-file limit: `--max-clients`, or fewer
/// when the limit (raised toward the hard limit first) cannot hold them
/// beside the HTTP port's `--http-max-connections` and the reserve.
fn descriptor_budget(args: &SidecarArgs) -> anyhow::Result<usize> {
    let wanted = (args.max_clients as u64)
        .saturating_add(args.http_max_connections as u64)
        .saturating_add(fd_budget::RESERVED);
    let Some(limit) = fd_budget::raise_open_files(wanted) else {
        return Ok(args.max_clients);
    };
    let clients = fd_budget::resp_clients(limit, args.max_clients, args.http_max_connections)
        .map_err(anyhow::Error::msg)?;
    if clients < args.max_clients {
        warn!(
            requested = args.max_clients,
            max_clients = clients,
            open_file_limit = limit,
            http_max_connections = args.http_max_connections,
            "--max-clients lowered to fit the open-file limit beside the HTTP port's connections"
        );
    }
    Ok(clients)
}

/// Active expiry, compaction and heap release, off the request path.
async fn housekeeping(
    engine: Arc<dyn MapEngine>,
    storms: Arc<Storms>,
    shutdown: CancellationToken,
) {
    let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
    let mut compaction = tokio::time::interval(COMPACT_INTERVAL);
    let mut heap_check = tokio::time::interval(HEAP_RELEASE_INTERVAL);
    let release = Arc::new(parking_lot::Mutex::new(HeapRelease::new(
        memory::resident_bytes().unwrap_or(0),
    )));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = expiry.tick() => {
                let engine = engine.clone();
                // Expiry takes shard write locks; keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    for _ in 0..EXPIRY_PASSES_PER_TICK {
                        if engine.expire_cycle(EXPIRY_BUDGET) < EXPIRY_BUDGET {
                            break;
                        }
                    }
                })
                .await;
            }
            _ = compaction.tick() => {
                let engine = engine.clone();
                let _ = tokio::task::spawn_blocking(move || engine.compact()).await;
            }
            _ = heap_check.tick() => {
                let (engine, storms, release) = (engine.clone(), storms.clone(), release.clone());
                // malloc_trim walks the heap: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    let accounted = engine.memory().held_bytes + storms.finished_bytes();
                    if release.lock().tick(accounted) {
                        debug!(accounted, "returned freed heap to the kernel");
                    }
                })
                .await;
            }
        }
    }
}
