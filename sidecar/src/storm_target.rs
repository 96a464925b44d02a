//! Storms against the sidecar's own engine, in-process: workers call the
//! engine directly (no network), and their operations feed the sidecar's
//! metrics with `source="storm"` (through [`WithMetrics`], which wraps any
//! target, RESP ones included). The application's own RESP traffic to the
//! same engine reaches the storm through the target's [`AppProbe`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mapchaos_api::storm::MemorySnapshot;
use mapchaos_storm::app_traffic::AppTap;
use mapchaos_storm::client::{ClientError, MapClient, Request, Response};
use mapchaos_storm::restore::{Applied, RestoreItem, Wanted};
use mapchaos_storm::runner::{OpObserver, StormTarget};
use mapchaos_storm::workload::{StormOp, decode_value};
use prometheus::local::{LocalHistogram, LocalIntCounter};

use crate::app_probe::AppProbe;
use crate::audit::{self, journal::JournalRecorder};
use crate::engine::{MapEngine, Pattern, RestoreWrite, SetExpiry, SetOptions, Ttl};
use crate::metrics::SidecarMetrics;

/// A storm target that is this process's engine.
pub struct EngineTarget {
    engine: Arc<dyn MapEngine>,
    probe: Option<Arc<AppProbe>>,
    /// How the storm's deletes are named in the delete audit.
    audit_name: Arc<str>,
    journal: Option<Arc<JournalRecorder>>,
    next_client: AtomicU64,
}

impl EngineTarget {
    pub fn new(engine: Arc<dyn MapEngine>) -> Self {
        EngineTarget {
            engine,
            probe: None,
            audit_name: Arc::from("storm"),
            journal: None,
            next_client: AtomicU64::new(1),
        }
    }

    /// The storm's deletes are audited as `storm:{id}`; with `journal`, the
    /// keys its workers delete are also gathered there.
    pub fn with_audit(mut self, id: &str, journal: Option<Arc<JournalRecorder>>) -> Self {
        self.audit_name = Arc::from(format!("storm:{id}"));
        self.journal = journal;
        self
    }

    /// Storms on this target also watch the application's RESP traffic,
    /// served with `probe` (see `server::serve_with_probe`).
    pub fn with_app_probe(mut self, probe: Arc<AppProbe>) -> Self {
        self.probe = Some(probe);
        self
    }
}

/// Any storm target, with its storm operations counted in the sidecar's
/// metrics (`source="storm"`).
pub struct WithMetrics<T> {
    pub inner: T,
    pub metrics: Arc<SidecarMetrics>,
}

impl<T: StormTarget> StormTarget for WithMetrics<T> {
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        self.inner.connect()
    }

    fn memory(&self) -> MemorySnapshot {
        self.inner.memory()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn observer(&self) -> Option<Box<dyn OpObserver>> {
        Some(Box::new(MetricsObserver::new(&self.metrics)))
    }

    fn app_tap(&self) -> Option<&dyn AppTap> {
        self.inner.app_tap()
    }

    fn cluster(&self) -> Option<&mapchaos_storm::cluster::ClusterTarget> {
        self.inner.cluster()
    }
}

impl StormTarget for EngineTarget {
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        Ok(Box::new(EngineClient {
            engine: self.engine.clone(),
            // A name of its own, so marking its thread shares no refcount.
            audit_name: Arc::from(&*self.audit_name),
            audit_id: self.next_client.fetch_add(1, Ordering::Relaxed),
            journal: self.journal.clone(),
            deleted: HashSet::new(),
            restores: HashMap::new(),
        }))
    }

    fn memory(&self) -> MemorySnapshot {
        let memory = self.engine.memory();
        MemorySnapshot {
            keys: memory.keys,
            live_bytes: Some(memory.live_bytes),
            held_bytes: Some(memory.held_bytes),
            rss_bytes: crate::memory::resident_bytes(),
        }
    }

    fn describe(&self) -> String {
        format!("in-process:{}", self.engine.name())
    }

    fn app_tap(&self) -> Option<&dyn AppTap> {
        self.probe.as_deref().map(|probe| probe as &dyn AppTap)
    }
}

/// A worker's handle on the engine: every call is a direct method call.
struct EngineClient {
    engine: Arc<dyn MapEngine>,
    audit_name: Arc<str>,
    audit_id: u64,
    journal: Option<Arc<JournalRecorder>>,
    /// Keys this client deleted, and whether its restores wrote each key
    /// they tried, for the journal (merged on drop).
    deleted: HashSet<Box<[u8]>>,
    restores: HashMap<Box<[u8]>, bool>,
}

impl Drop for EngineClient {
    fn drop(&mut self) {
        if let Some(journal) = &self.journal {
            journal.merge(
                std::mem::take(&mut self.deleted),
                std::mem::take(&mut self.restores),
            );
        }
    }
}

impl MapClient for EngineClient {
    fn execute(
        &mut self,
        requests: &[Request<'_>],
        responses: &mut Vec<Result<Response, ClientError>>,
    ) {
        let engine = self.engine.as_ref();
        let _acting = audit::as_storm(&self.audit_name, self.audit_id, "del");
        let journal = self.journal.is_some();
        let deleted = &mut self.deleted;
        responses.extend(requests.iter().map(|request| {
            Ok(match *request {
                Request::Get(key) => Response::Value(engine.get(key)),
                Request::Set(key, value) => {
                    engine.set(
                        Bytes::copy_from_slice(key),
                        Bytes::copy_from_slice(value),
                        SetOptions::default(),
                    );
                    Response::Ok
                }
                Request::Del(key) => {
                    let removed = engine.del_one(key);
                    if removed && journal && !deleted.contains(key) {
                        deleted.insert(key.into());
                    }
                    Response::Count(u64::from(removed))
                }
                Request::Exists(key) => Response::Count(u64::from(engine.exists_one(key))),
                Request::Pttl(key) => Response::Ttl(match engine.ttl(key) {
                    Ttl::Missing => -2,
                    Ttl::Persistent => -1,
                    Ttl::Remaining(ms) => i64::try_from(ms).unwrap_or(i64::MAX),
                }),
            })
        }));
    }

    fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), ClientError> {
        let page = self
            .engine
            .scan(cursor, Some(&Pattern::new(pattern)), count);
        Ok((page.cursor, page.keys))
    }

    fn restore(
        &mut self,
        items: &[RestoreItem<'_>],
        applied: &mut Vec<Result<Applied, ClientError>>,
    ) {
        let _acting = audit::as_storm(&self.audit_name, self.audit_id, "restore");
        let replaceable = |current: &[u8]| decode_value(current).is_some();
        for item in items {
            let wanted = match item.wanted {
                Wanted::Value { value, ttl_ms } => Some((
                    Bytes::copy_from_slice(value),
                    match ttl_ms {
                        Some(ms) => SetExpiry::At(self.engine.clock().now().saturating_add(ms)),
                        None => SetExpiry::Persist,
                    },
                )),
                Wanted::Absent => None,
            };
            let done = self
                .engine
                .restore(Bytes::copy_from_slice(item.key), wanted, &replaceable);
            if self.journal.is_some() {
                self.restores
                    .insert(item.key.into(), matches!(done, RestoreWrite::Written));
            }
            applied.push(Ok(match done {
                RestoreWrite::Written => Applied::Written,
                RestoreWrite::AlreadyThere => Applied::AlreadyThere,
                RestoreWrite::Kept => Applied::Foreign,
            }));
        }
    }

    fn restore_guarantee(&self) -> &'static str {
        "in-process: each key compared and written under its shard's lock"
    }
}

/// Feeds `mapchaos_ops_total` and `mapchaos_op_duration_seconds` with
/// `source="storm"` through thread-local buffers, flushed in batches so the
/// storm's hot path never contends on shared atomics.
struct MetricsObserver {
    /// Per op kind: ok counter, error counter, latency.
    by_op: Vec<(LocalIntCounter, LocalIntCounter, LocalHistogram)>,
    pending: u32,
}

/// Observations buffered before a flush.
const FLUSH_EVERY: u32 = 1024;

impl MetricsObserver {
    fn new(metrics: &SidecarMetrics) -> Self {
        let by_op = StormOp::ALL
            .iter()
            .map(|op| {
                let name = op.name();
                (
                    metrics
                        .ops
                        .with_label_values(&[name, "storm", "ok"])
                        .local(),
                    metrics
                        .ops
                        .with_label_values(&[name, "storm", "error"])
                        .local(),
                    metrics
                        .op_duration
                        .with_label_values(&[name, "storm"])
                        .local(),
                )
            })
            .collect();
        MetricsObserver { by_op, pending: 0 }
    }

    fn flush(&mut self) {
        for (ok, error, latency) in &mut self.by_op {
            ok.flush();
            error.flush();
            latency.flush();
        }
        self.pending = 0;
    }
}

impl OpObserver for MetricsObserver {
    fn observe(&mut self, op: StormOp, ok: bool, latency: Duration) {
        let (ok_count, error_count, histogram) = &mut self.by_op[op.index()];
        if ok {
            ok_count.inc()
        } else {
            error_count.inc()
        }
        histogram.observe(latency.as_secs_f64());
        self.pending += 1;
        if self.pending >= FLUSH_EVERY {
            self.flush();
        }
    }
}

impl Drop for MetricsObserver {
    fn drop(&mut self) {
        self.flush();
    }
}
