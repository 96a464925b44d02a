//! Runs one storm against a [`StormTarget`]: prepares the keys, runs the
//! workers (closed loop, or open loop at a fixed rate with latency measured
//! from each operation's intended start), watches the abort conditions,
//! then checks the history and builds the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mapchaos_api::spec::{AbortSpec, CheckSpec, KeySource, StormSpec};
use mapchaos_api::storm::{
    LatencySummary, MemorySnapshot, OpStats, StopReason, StormPhase, StormReport,
};
use mapchaos_api::{CheckReport, Verdict};
use rand::RngExt;

use crate::app_traffic::{AppFinish, AppTap, AppTraffic};
use crate::client::{ClientError, MapClient, Request, Response};
use crate::history::{Event, History, KeyId, Op, RecordBudget, Recorder, ValueId};
use crate::restore::{self, AppWrites, RestoreSummary};
use crate::series::{self, SeriesSink, WorkerSeries};
use crate::verdict::{self, Judging};
use crate::workload::{
    KeyChooser, OpChooser, StormOp, decode_value, synthetic_key, worker_rng, write_value,
};
use crate::{CheckOptions, check};

/// The client id of the preparation step (preload, reading existing keys).
/// Storm workers are 1..=workers.
const PREPARER: u32 = 0;
/// Requests per pipelined batch while preparing and restoring.
const PREPARE_BATCH: usize = 512;
/// A keyspace this big is freed off the caller's thread.
const BIG_KEYSPACE: usize = 100_000;
/// Keys generated or indexed between looks at the stop flag.
const STOP_EVERY: usize = 16_384;
/// Keys asked per SCAN page.
const SCAN_COUNT: usize = 64;
/// How often the watcher looks at the clock and the abort conditions.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// The window the p99 abort condition looks at.
const P99_WINDOW: Duration = Duration::from_secs(1);
/// Operations a worker completes between publishing its counters.
const PUBLISH_EVERY: u64 = 64;
/// The error-rate condition waits for this many operations before judging.
const MIN_OPS_FOR_ERROR_RATE: u64 = 200;
/// Latency histograms cover 1 ns to 1 h at 3 significant digits.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

/// A map a storm can run against.
pub trait StormTarget: Sync {
    /// A new connection for one worker (workers never share one).
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError>;
    /// The map's size and memory now.
    fn memory(&self) -> MemorySnapshot;
    /// What this is, for the report (`in-process:sharded`, `redis://…`).
    fn describe(&self) -> String;
    /// A per-worker sink for live metrics, if the caller wants them.
    fn observer(&self) -> Option<Box<dyn OpObserver>> {
        None
    }
    /// Where the application's own traffic to this map can be watched
    /// (the sidecar's RESP server), if anywhere.
    fn app_tap(&self) -> Option<&dyn AppTap> {
        None
    }
    /// The Redis Cluster behind this target, whose report counts per node.
    fn cluster(&self) -> Option<&crate::cluster::ClusterTarget> {
        None
    }
}

/// Sees every storm operation as it completes (for live metrics). Called on
/// the worker's thread; implementations batch their own publishing.
pub trait OpObserver: Send {
    fn observe(&mut self, op: StormOp, ok: bool, latency: Duration);
}

/// One storm, fully resolved.
#[derive(Debug, Clone)]
pub struct StormPlan {
    pub storm: StormSpec,
    pub check: CheckSpec,
    pub abort: AbortSpec,
    pub duration: Duration,
    pub seed: u64,
    /// Worker threads for the checker (0: one per core).
    pub check_threads: usize,
    /// The most memory the checker's searches may hold at once, shared by
    /// its threads (`None`: 1 GiB per thread); what the storm's memory
    /// budget leaves them.
    pub check_memory: Option<usize>,
}

/// Shared between a running storm and whoever watches or stops it.
#[derive(Debug, Default)]
pub struct StormControl {
    stop: AtomicBool,
    /// Set by [`StormControl::interrupt`]: the check is cut short too.
    interrupted: Arc<AtomicBool>,
    reason: Mutex<Option<StopReason>>,
    /// Sleepers (the open-loop rate limiter) wait here, woken by a stop.
    sleepers: Mutex<()>,
    wake: Condvar,
    phase: AtomicU8,
    ops: AtomicU64,
    errors: AtomicU64,
    started: Mutex<Option<Instant>>,
    /// Keys the restore has handled, and how many it has to.
    restore_done: AtomicU64,
    restore_total: AtomicU64,
}

/// What a watcher sees of a running storm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveStats {
    pub phase: StormPhase,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl StormControl {
    pub fn new() -> Arc<Self> {
        Arc::new(StormControl::default())
    }

    /// Ask the storm to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.stop.store(true, Ordering::Release);
        // Under the sleepers' lock, so a sleeper that saw no stop is already
        // waiting when it is woken.
        let _sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stop everything that can be cut short — preparation, the workers, the
    /// check (its unfinished keys stay unknown) — but not the restore: the
    /// process is going away (a signal, the sidecar shutting down).
    pub fn interrupt(&self, reason: StopReason) {
        self.interrupted.store(true, Ordering::Release);
        self.stop(reason);
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    /// The flag [`StormControl::interrupt`] sets, for the checker to watch.
    pub fn interrupted_flag(&self) -> Arc<AtomicBool> {
        self.interrupted.clone()
    }

    /// While restoring: the keys handled so far and the keys to handle.
    pub fn restore_progress(&self) -> (u64, u64) {
        (
            self.restore_done.load(Ordering::Acquire),
            self.restore_total.load(Ordering::Acquire),
        )
    }

    pub(crate) fn set_restore_progress(&self, done: u64, total: u64) {
        self.restore_total.store(total, Ordering::Release);
        self.restore_done.store(done, Ordering::Release);
    }

    /// Sleep for `duration` unless the storm stops first; `false` if it did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        let (_sleepers, _) = self
            .wake
            .wait_timeout_while(sleepers, duration, |_| !self.is_stopping())
            .unwrap_or_else(|e| e.into_inner());
        !self.is_stopping()
    }

    pub fn live(&self) -> LiveStats {
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|s| s.elapsed())
            .unwrap_or_default();
        LiveStats {
            phase: phase_from_u8(self.phase.load(Ordering::Acquire)),
            ops: self.ops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            elapsed,
        }
    }

    fn set_phase(&self, phase: StormPhase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn take_reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn phase_from_u8(value: u8) -> StormPhase {
    [
        StormPhase::Preparing,
        StormPhase::Running,
        StormPhase::Checking,
        StormPhase::Restoring,
        StormPhase::Completed,
        StormPhase::Aborted,
        StormPhase::Failed,
    ]
    .get(usize::from(value))
    .copied()
    .unwrap_or(StormPhase::Failed)
}

/// Why a storm could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the spec cannot run: {0}")]
    Spec(String),
    #[error("cannot reach the map: {0}")]
    Connect(#[from] ClientError),
    #[error("no existing key matches {pattern:?}; nothing to storm")]
    NoKeys { pattern: String },
    #[error(transparent)]
    History(#[from] crate::Error),
}

/// A finished storm: its report, its history when recorded, and how each
/// stormed key ended when it restored.
#[derive(Debug)]
pub struct StormOutcome {
    pub report: StormReport,
    pub history: Option<History>,
    pub restore: Option<RestoreSummary>,
    /// Per-node counts, when the target is a Redis Cluster.
    pub cluster: Option<crate::cluster::report::ClusterReport>,
}

/// The keys a storm owns and what they held before it.
pub(crate) struct Keyspace {
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) index: HashMap<Vec<u8>, KeyId>,
    scan_pattern: Vec<u8>,
    /// For existing keys: the value and remaining TTL (ms) each had.
    pub(crate) originals: Vec<Option<(Bytes, Option<u64>)>>,
    /// When those TTLs were read.
    pub(crate) originals_read_at: Option<Instant>,
}

impl Keyspace {
    pub(crate) fn new(keys: Vec<Vec<u8>>, scan_pattern: Vec<u8>) -> Self {
        Self::new_unless(keys, scan_pattern, &|| false)
    }

    /// The same, given up (keeping the keys indexed so far) once `stop`
    /// says so: a big keyspace takes a while to index.
    fn new_unless(mut keys: Vec<Vec<u8>>, scan_pattern: Vec<u8>, stop: &dyn Fn() -> bool) -> Self {
        let mut index = HashMap::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            if i % STOP_EVERY == 0 && stop() {
                break;
            }
            index.insert(key.clone(), i as KeyId);
        }
        keys.truncate(index.len());
        Keyspace {
            keys,
            index,
            scan_pattern,
            originals: Vec::new(),
            originals_read_at: None,
        }
    }

    /// What a read of `key` returned, as a write id of the storm.
    pub(crate) fn value_id(&self, key: KeyId, value: &[u8]) -> Option<ValueId> {
        if let Some(id) = decode_value(value) {
            return Some(ValueId(id));
        }
        match self.originals.get(key as usize) {
            Some(Some((original, _))) if original.as_ref() == value => {
                Some(ValueId::new(PREPARER, key))
            }
            _ => None,
        }
    }
}

/// A Redis glob matching every key `spec` may storm.
fn key_pattern(spec: &mapchaos_api::spec::KeySpec) -> Vec<u8> {
    match spec.source {
        KeySource::Synthetic => {
            let mut pattern = glob_literal(&spec.prefix);
            pattern.push(b'*');
            pattern
        }
        KeySource::Existing => spec.pattern.clone().unwrap_or_default().into_bytes(),
    }
}

/// A storm's [`AppTraffic`] while it is attached to the target's tap; detached
/// when finished or dropped (a storm that fails early).
struct AppAttachment<'a> {
    tap: &'a dyn AppTap,
    traffic: Arc<AppTraffic>,
    attached: bool,
}

impl<'a> AppAttachment<'a> {
    fn attach(tap: &'a dyn AppTap, traffic: Arc<AppTraffic>) -> Self {
        tap.attach(traffic.clone());
        AppAttachment {
            tap,
            traffic,
            attached: true,
        }
    }

    /// Close the history in a consistent cut; writes are still noted.
    fn close_history(&self) {
        let traffic = &self.traffic;
        self.tap.quiesce(&mut || traffic.close());
    }

    fn finish(mut self) -> AppFinish {
        self.tap.detach();
        self.attached = false;
        self.traffic.finish()
    }
}

impl Drop for AppAttachment<'_> {
    fn drop(&mut self) {
        if self.attached {
            self.tap.detach();
        }
    }
}

/// Escape glob metacharacters so a prefix matches only itself.
fn glob_literal(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for byte in text.bytes() {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out
}

/// Run `plan` against `target` until its duration ends or `control` stops it.
pub fn run(
    plan: &StormPlan,
    target: &dyn StormTarget,
    control: &StormControl,
) -> Result<StormOutcome, RunError> {
    let ops_chooser = OpChooser::new(&plan.storm.mix)
        .ok_or_else(|| RunError::Spec("spec.storm.mix: every weight is 0".into()))?;
    // The default limit applies without `spec.abort` too: a storm whose
    // operations mostly fail proves nothing, so it should not run on.
    let max_error_rate = plan.abort.error_rate_limit();
    control.set_phase(StormPhase::Preparing);
    let clock = Instant::now();
    let now_ns = move || clock.elapsed().as_nanos() as u64;

    let budget = RecordBudget::new(usize::try_from(plan.check.max_ops).unwrap_or(usize::MAX));
    // Attached before preparing, so the application's writes during
    // preparation are seen (and their keys excluded).
    let restores = plan.storm.restore && plan.storm.keys.source == KeySource::Existing;
    let app = target.app_tap().map(|tap| {
        let traffic = AppTraffic::new(
            clock,
            plan.check.history && plan.check.include_clients,
            plan.storm.keys.source,
            key_pattern(&plan.storm.keys),
            budget.clone(),
        );
        if restores {
            // From before the originals are read: an application write
            // racing that read must win over the original too.
            traffic.track_writes();
        }
        AppAttachment::attach(tap, traffic)
    });
    let mut preparer_log = Recorder::new(PREPARER, budget.clone());
    let mut client = target.connect()?;
    let keyspace = Arc::new(prepare(
        plan,
        client.as_mut(),
        &mut preparer_log,
        &now_ns,
        control,
    )?);
    if let Some(app) = &app {
        app.traffic.start_running(keyspace.clone());
    }
    let memory_before = target.memory();
    let key_chooser = KeyChooser::new(&plan.storm.keys, keyspace.keys.len() as u64);

    let workers = plan.storm.workers.max(1);
    let window_slots: Vec<Mutex<Histogram<u64>>> = (0..workers)
        .map(|_| Mutex::new(latency_histogram()))
        .collect();
    let series = SeriesSink::new(plan.duration);
    let start_ns = now_ns();
    let start = Instant::now();
    *control.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(start);
    let deadline = start + plan.duration;

    let shared = WorkerShared {
        plan,
        keyspace: &keyspace,
        app: app.as_ref().map(|a| &*a.traffic),
        ops: &ops_chooser,
        keys: &key_chooser,
        control,
        budget: &budget,
        windows: &window_slots,
        series: &series,
        start,
        epoch: clock,
        clock: &now_ns,
    };
    // Stopped while preparing: no worker starts (nothing was stormed).
    let storming = !control.is_stopping();
    let results: Vec<Result<WorkerResult, ClientError>> = if !storming {
        Vec::new()
    } else {
        control.set_phase(StormPhase::Running);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=workers)
                .map(|worker| {
                    let shared = &shared;
                    std::thread::Builder::new()
                        .name(format!("storm-{worker}"))
                        .spawn_scoped(scope, move || run_worker(shared, target, worker))
                        .expect("spawn a storm worker")
                })
                .collect();
            watch(
                control,
                deadline,
                max_error_rate,
                plan.abort.max_p99_latency.map(|d| d.0),
                &window_slots,
            );
            handles
                .into_iter()
                .map(|h| h.join().expect("a storm worker panicked"))
                .collect()
        })
    };
    let elapsed = start.elapsed();
    let stop_reason = control.take_reason().unwrap_or(StopReason::DurationElapsed);
    if let Some(app) = &app {
        app.close_history();
    }
    let memory_after = target.memory();

    // Restored before the check: the application gets its keys back as soon
    // as the workers stop, and a long check cut short by a signal cannot
    // delay it. Never interrupted: the restore is what a stop waits for.
    let mut restore_summary = None;
    if restores && storming {
        control.set_phase(StormPhase::Restoring);
        let writes = app.as_ref().map(|a| AppWrites {
            tap: a.tap,
            traffic: &a.traffic,
        });
        restore_summary = Some(restore::restore(
            client.as_mut(),
            &keyspace,
            writes,
            control,
        ));
    }
    let app = app.map(AppAttachment::finish);

    let mut merged = WorkerResult::empty(PREPARER, budget.clone());
    let mut recorders = vec![preparer_log];
    let mut first_error = None;
    for result in results {
        match result {
            Ok(mut result) => {
                recorders.push(std::mem::replace(
                    &mut result.recorder,
                    Recorder::new(0, budget.clone()),
                ));
                merged.absorb(result);
            }
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    if merged.ops == 0
        && let Some(error) = first_error
    {
        control.set_phase(StormPhase::Failed);
        return Err(RunError::Connect(error));
    }

    let mut excluded = std::mem::take(&mut merged.foreign_keys);
    let mut client_latency = None;
    if let Some(app) = app {
        recorders.extend(app.recorders);
        excluded.extend(app.excluded);
        // A tap that only watches writes (MONITOR) times nothing.
        if target.app_tap().is_some_and(|tap| tap.times_commands()) {
            client_latency = Some(summary(&app.latency));
        }
    }

    control.set_phase(StormPhase::Checking);
    let (history, check_report) = if plan.check.history && !control.is_interrupted() {
        let history = History::from_recorders(keyspace.keys.clone(), start_ns, &budget, recorders)?;
        let history = without_keys(history, &excluded)?;
        let options = CheckOptions {
            per_key_budget: plan.check.timeout_per_key.0,
            threads: plan.check_threads,
            cancel: Some(control.interrupted_flag()),
            memory: plan.check_memory,
            ..CheckOptions::default()
        };
        let report = check(&history, &options);
        (Some(history), Some(report))
    } else {
        (None, None)
    };
    // A stop wants its report now; the totals are in the check already.
    let exposures = match &history {
        Some(h) if !control.is_interrupted() => {
            series::exposures_by_bucket(h, start_ns, series.bucket_nanos())
        }
        _ => Vec::new(),
    };

    let mut report = build_report(
        plan,
        target,
        &merged,
        elapsed,
        stop_reason.clone(),
        memory_before,
        memory_after,
        check_report,
        restore_summary.as_ref(),
        excluded.len() as u64,
        client_latency,
    );
    report.series = Some(series.finish(exposures));
    let cluster = target.cluster().map(|c| {
        let history = history.as_ref().filter(|_| !control.is_interrupted());
        c.report(&keyspace.keys, history)
    });
    control.set_phase(if stop_reason == StopReason::DurationElapsed {
        StormPhase::Completed
    } else {
        StormPhase::Aborted
    });
    // Millions of keys take seconds to free in a slow build: not on the
    // path of a caller that is stopping.
    if keyspace.keys.len() >= BIG_KEYSPACE {
        let _ = std::thread::Builder::new()
            .name("storm-free".into())
            .spawn(move || drop(keyspace));
    }
    Ok(StormOutcome {
        report,
        history,
        restore: restore_summary,
        cluster,
    })
}

/// Drop the events of keys whose history is incomplete (the application
/// wrote them in ways the storm did not record), so they cannot be misjudged.
fn without_keys(history: History, excluded: &HashSet<KeyId>) -> Result<History, crate::Error> {
    if excluded.is_empty() {
        return Ok(history);
    }
    let events = history
        .events()
        .iter()
        .filter(|e| e.op.key().is_none_or(|k| !excluded.contains(&k)))
        .map(|e| match &e.op {
            Op::Scan { found } => Event {
                op: Op::Scan {
                    found: found
                        .iter()
                        .copied()
                        .filter(|k| !excluded.contains(k))
                        .collect(),
                },
                ..e.clone()
            },
            _ => e.clone(),
        })
        .collect();
    History::new(
        history.keys().to_vec(),
        history.start(),
        history.is_truncated(),
        events,
    )
}

/// Build the key table: preload the synthetic keyspace, or read the existing
/// keys and what they hold. Everything written is recorded as history.
fn prepare(
    plan: &StormPlan,
    client: &mut dyn MapClient,
    log: &mut Recorder,
    now_ns: &dyn Fn() -> u64,
    control: &StormControl,
) -> Result<Keyspace, RunError> {
    let spec = &plan.storm.keys;
    match spec.source {
        KeySource::Synthetic => {
            let mut keys = Vec::new();
            for i in 0..spec.count {
                if i % STOP_EVERY as u64 == 0 && control.is_stopping() {
                    break;
                }
                keys.push(synthetic_key(&spec.prefix, i));
            }
            let keyspace = Keyspace::new_unless(keys, key_pattern(spec), &|| control.is_stopping());
            // Start from a clean slate: keys left by an earlier storm would
            // hold values this history never wrote.
            let mut rng = worker_rng(plan.seed, PREPARER);
            let mut values: Vec<Vec<u8>> = Vec::new();
            let mut responses = Vec::new();
            for chunk in (0..keyspace.keys.len())
                .collect::<Vec<_>>()
                .chunks(PREPARE_BATCH)
            {
                // Stopped while preloading: no worker will run, and the keys
                // preloaded so far are the storm's own.
                if control.is_stopping() {
                    break;
                }
                values.clear();
                let mut wanted = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let present = rng.random::<f64>() < spec.preload;
                    if present {
                        let mut value = Vec::new();
                        write_value(
                            &mut value,
                            ValueId::new(PREPARER, i as u32).0,
                            spec.value_size as usize,
                        );
                        values.push(value);
                    }
                    wanted.push(present);
                }
                let mut next_value = values.iter();
                let requests: Vec<Request<'_>> = chunk
                    .iter()
                    .zip(&wanted)
                    .map(|(&i, &present)| {
                        let key = keyspace.keys[i].as_slice();
                        if present {
                            Request::Set(key, next_value.next().expect("one value per present key"))
                        } else {
                            Request::Del(key)
                        }
                    })
                    .collect();
                responses.clear();
                let call = now_ns();
                client.execute(&requests, &mut responses);
                let ret = now_ns();
                for ((&i, &present), response) in chunk.iter().zip(&wanted).zip(responses.drain(..))
                {
                    let key = i as KeyId;
                    let (ret, op) = match (present, response) {
                        (true, Ok(_)) => (
                            ret,
                            Op::Set {
                                key,
                                value: ValueId::new(PREPARER, key),
                            },
                        ),
                        (true, Err(_)) => (
                            Event::NO_RETURN,
                            Op::Set {
                                key,
                                value: ValueId::new(PREPARER, key),
                            },
                        ),
                        (false, Ok(Response::Count(n))) => (
                            ret,
                            Op::Del {
                                key,
                                removed: n > 0,
                            },
                        ),
                        (false, _) => (
                            Event::NO_RETURN,
                            Op::Del {
                                key,
                                removed: false,
                            },
                        ),
                    };
                    log.record(call, ret, op);
                }
            }
            Ok(keyspace)
        }
        KeySource::Existing => {
            let pattern = spec.pattern.clone().unwrap_or_default();
            let mut found = Vec::new();
            let mut seen = HashSet::new();
            let mut cursor = 0;
            loop {
                if control.is_stopping() {
                    // Nothing was written yet: an empty storm, nothing to restore.
                    break;
                }
                let (next, keys) = client.scan_page(cursor, pattern.as_bytes(), 1000)?;
                for key in keys {
                    if (found.len() as u64) < spec.count && seen.insert(key.clone()) {
                        found.push(key.to_vec());
                    }
                }
                cursor = next;
                if cursor == 0 || found.len() as u64 >= spec.count {
                    break;
                }
            }
            // Before the TTLs are read, so the ones put back are never longer.
            let read_at = Instant::now();
            let mut originals = Vec::with_capacity(found.len());
            let mut responses = Vec::new();
            for chunk in found.chunks(PREPARE_BATCH / 2) {
                if control.is_stopping() {
                    break;
                }
                let requests: Vec<Request<'_>> = chunk
                    .iter()
                    .flat_map(|k| [Request::Get(k), Request::Pttl(k)])
                    .collect();
                responses.clear();
                client.execute(&requests, &mut responses);
                for pair in responses.chunks(2) {
                    originals.push(match pair {
                        [Ok(Response::Value(Some(value))), Ok(Response::Ttl(ttl))] => {
                            Some((value.clone(), u64::try_from(*ttl).ok()))
                        }
                        _ => None,
                    });
                }
            }
            let (keys, originals): (Vec<Vec<u8>>, Vec<_>) = found
                .into_iter()
                .zip(originals)
                .filter(|(_, o)| o.is_some())
                .unzip();
            if keys.is_empty() && !control.is_stopping() {
                return Err(RunError::NoKeys { pattern });
            }
            let mut keyspace = Keyspace::new(keys, pattern.into_bytes());
            keyspace.originals = originals;
            keyspace.originals_read_at = Some(read_at);
            // The values were there before the storm: record them as writes
            // that completed before it started.
            let ret = now_ns();
            for key in 0..keyspace.keys.len() as KeyId {
                log.record(
                    0,
                    ret,
                    Op::Set {
                        key,
                        value: ValueId::new(PREPARER, key),
                    },
                );
            }
            Ok(keyspace)
        }
    }
}

/// What workers share, read-only (the counters are atomics).
struct WorkerShared<'a> {
    plan: &'a StormPlan,
    keyspace: &'a Keyspace,
    /// The application's traffic, whose writes storm reads may see.
    app: Option<&'a AppTraffic>,
    ops: &'a OpChooser,
    keys: &'a KeyChooser,
    control: &'a StormControl,
    budget: &'a Arc<RecordBudget>,
    windows: &'a [Mutex<Histogram<u64>>],
    series: &'a SeriesSink,
    start: Instant,
    /// The origin of every history timestamp (the runner's clock).
    epoch: Instant,
    clock: &'a (dyn Fn() -> u64 + Sync),
}

impl WorkerShared<'_> {
    /// What a storm read of `key` returned, as a write id: the storm's own
    /// writes first, then the application's recorded ones.
    fn value_id(&self, key: KeyId, value: &[u8]) -> Option<ValueId> {
        self.keyspace
            .value_id(key, value)
            .or_else(|| self.app.and_then(|app| app.app_value(key, value)))
    }
}

/// One worker's totals.
struct WorkerResult {
    recorder: Recorder,
    latency: [Histogram<u64>; 5],
    errors: [u64; 5],
    ops: u64,
    foreign_keys: HashSet<KeyId>,
}

impl WorkerResult {
    fn empty(client: u32, budget: Arc<RecordBudget>) -> Self {
        WorkerResult {
            recorder: Recorder::new(client, budget),
            latency: std::array::from_fn(|_| latency_histogram()),
            errors: [0; 5],
            ops: 0,
            foreign_keys: HashSet::new(),
        }
    }

    fn absorb(&mut self, other: WorkerResult) {
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            mine.add(theirs).expect("histograms share their bounds");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.ops += other.ops;
        self.foreign_keys.extend(other.foreign_keys);
    }
}

pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("static histogram bounds are valid")
}

/// One pending operation of a batch.
struct Slot {
    op: StormOp,
    key: KeyId,
    value: Option<ValueId>,
}

/// The request for one slot of a round.
fn request<'a>(keys: &'a [Vec<u8>], slot: &Slot, value: &'a [u8]) -> Request<'a> {
    let key = keys[slot.key as usize].as_slice();
    match slot.op {
        StormOp::Get => Request::Get(key),
        StormOp::Set => Request::Set(key, value),
        StormOp::Del => Request::Del(key),
        StormOp::Exists | StormOp::Scan => Request::Exists(key),
    }
}

fn run_worker(
    shared: &WorkerShared<'_>,
    target: &dyn StormTarget,
    worker: u32,
) -> Result<WorkerResult, ClientError> {
    let mut client = target.connect()?;
    let mut observer = target.observer();
    let plan = shared.plan;
    let mut rng = worker_rng(plan.seed, worker);
    let mut result = WorkerResult::empty(worker, shared.budget.clone());
    let mut window = latency_histogram();
    let mut per_second = shared.series.worker(shared.start);
    let mut last_window_flush = Instant::now();
    let value_size = plan.storm.keys.value_size as usize;
    let pipeline = plan.storm.pipeline.max(1) as usize;
    let workers = u64::from(plan.storm.workers.max(1));
    // Open loop: the storm as a whole sends one operation every 1/rate
    // seconds, each worker every `workers`-th round of that schedule, its
    // first at (worker-1)·pipeline/rate: a low rate is spread over its first
    // interval instead of every worker firing at the start.
    let interval = (plan.storm.rate > 0)
        .then(|| Duration::from_secs_f64(workers as f64 / plan.storm.rate as f64));
    let deadline = shared.start + plan.duration;
    let mut intended = shared.start
        + interval.map_or(Duration::ZERO, |_| {
            Duration::from_secs_f64(
                f64::from(worker - 1) * pipeline as f64 / plan.storm.rate as f64,
            )
        });
    let mut sequence: u32 = 0;
    let mut published = (0u64, 0u64);
    let mut slots: Vec<Slot> = Vec::with_capacity(pipeline);
    let mut values: Vec<Vec<u8>> = (0..pipeline).map(|_| Vec::new()).collect();
    let mut responses = Vec::with_capacity(pipeline);
    let mut total_errors = 0u64;
    let nanos_since_epoch = |at: Instant| at.duration_since(shared.epoch).as_nanos() as u64;
    let mut deferred_scan: Option<StormOp> = None;

    // The watcher stops the storm at its deadline, so the loop reads the
    // clock only twice per round: when the round starts and when it ends.
    while !shared.control.is_stopping() {
        let mut started = Instant::now();
        if interval.is_some() {
            // The schedule has no slot left before the storm's end: this
            // worker is done (sending late would run the storm past it).
            if intended >= deadline {
                break;
            }
            // Woken by a stop: at a low rate one interval can be many seconds.
            if intended > started {
                if !shared.control.sleep(intended - started) {
                    break;
                }
                started = Instant::now();
            }
        }
        let scheduled = if interval.is_some() {
            intended
        } else {
            started
        };
        let round_end;

        slots.clear();
        let first = deferred_scan
            .take()
            .unwrap_or_else(|| shared.ops.choose(&mut rng));
        if first == StormOp::Scan {
            let (ok, latency) = scan_once(shared, client.as_mut(), &mut result, scheduled);
            round_end = Instant::now();
            per_second.advance(round_end);
            account(
                &mut result,
                &mut window,
                &mut per_second,
                observer.as_deref_mut(),
                StormOp::Scan,
                ok,
                latency,
            );
            total_errors += u64::from(!ok);
        } else {
            let mut next = Some(first);
            while slots.len() < pipeline {
                let op = match next.take() {
                    Some(op) => op,
                    None => match shared.ops.choose(&mut rng) {
                        // A SCAN cannot join a pipeline; it starts the next
                        // round, so the mix keeps its share of scans.
                        StormOp::Scan => {
                            deferred_scan = Some(StormOp::Scan);
                            break;
                        }
                        op => op,
                    },
                };
                let key = shared.keys.choose(&mut rng) as KeyId;
                let value = (op == StormOp::Set).then(|| {
                    sequence = sequence.wrapping_add(1);
                    ValueId::new(worker, sequence)
                });
                if let Some(value) = value {
                    write_value(&mut values[slots.len()], value.0, value_size);
                }
                slots.push(Slot { op, key, value });
            }
            let keys = &shared.keyspace.keys;
            responses.clear();
            let call = nanos_since_epoch(started);
            if let [slot] = slots.as_slice() {
                // Unpipelined, the common case: no request list to allocate.
                client.execute(&[request(keys, slot, &values[0])], &mut responses);
            } else {
                let requests: Vec<Request<'_>> = slots
                    .iter()
                    .zip(&values)
                    .map(|(slot, value)| request(keys, slot, value))
                    .collect();
                client.execute(&requests, &mut responses);
            }
            let finished = Instant::now();
            let ret = nanos_since_epoch(finished);
            let latency = finished.duration_since(scheduled);
            round_end = finished;
            per_second.advance(round_end);
            for (slot, response) in slots.iter().zip(responses.drain(..)) {
                let op = match (slot.op, response) {
                    (StormOp::Get, Ok(Response::Value(value))) => {
                        let read = value.map(|v| {
                            shared.value_id(slot.key, &v).unwrap_or_else(|| {
                                if plan.storm.keys.source == KeySource::Existing {
                                    result.foreign_keys.insert(slot.key);
                                }
                                ValueId::UNWRITTEN
                            })
                        });
                        Some(Op::Get {
                            key: slot.key,
                            read,
                        })
                    }
                    (StormOp::Set, Ok(Response::Ok)) => Some(Op::Set {
                        key: slot.key,
                        value: slot.value.expect("a SET carries a value"),
                    }),
                    (StormOp::Del, Ok(Response::Count(n))) => Some(Op::Del {
                        key: slot.key,
                        removed: n > 0,
                    }),
                    (StormOp::Exists, Ok(Response::Count(n))) => Some(Op::Exists {
                        key: slot.key,
                        present: n > 0,
                    }),
                    _ => None,
                };
                // An error reply, no reply, or a reply of the wrong shape: the
                // outcome is unknown, and it counts as an error everywhere.
                let ok = op.is_some();
                match op {
                    Some(op) => result.recorder.record(call, ret, op),
                    None => {
                        // No usable answer: it may or may not have happened.
                        total_errors += 1;
                        let op = match slot.op {
                            StormOp::Set => Op::Set {
                                key: slot.key,
                                value: slot.value.expect("a SET carries a value"),
                            },
                            StormOp::Del => Op::Del {
                                key: slot.key,
                                removed: false,
                            },
                            StormOp::Exists => Op::Exists {
                                key: slot.key,
                                present: false,
                            },
                            StormOp::Get | StormOp::Scan => Op::Get {
                                key: slot.key,
                                read: None,
                            },
                        };
                        result.recorder.record(call, Event::NO_RETURN, op);
                    }
                }
                account(
                    &mut result,
                    &mut window,
                    &mut per_second,
                    observer.as_deref_mut(),
                    slot.op,
                    ok,
                    latency,
                );
            }
        }
        if let Some(interval) = interval {
            intended += interval * slots.len().max(1) as u32;
        }

        if result.ops - published.0 >= PUBLISH_EVERY {
            shared
                .control
                .ops
                .fetch_add(result.ops - published.0, Ordering::Relaxed);
            shared
                .control
                .errors
                .fetch_add(total_errors - published.1, Ordering::Relaxed);
            published = (result.ops, total_errors);
        }
        if round_end.duration_since(last_window_flush) >= Duration::from_millis(100) {
            flush_window(&shared.windows[(worker - 1) as usize], &mut window);
            last_window_flush = round_end;
        }
    }
    shared
        .control
        .ops
        .fetch_add(result.ops - published.0, Ordering::Relaxed);
    shared
        .control
        .errors
        .fetch_add(total_errors - published.1, Ordering::Relaxed);
    flush_window(&shared.windows[(worker - 1) as usize], &mut window);
    per_second.flush();
    Ok(result)
}

/// Sleep until `at`, waking early when the storm stops; `false` if it did.
fn account(
    result: &mut WorkerResult,
    window: &mut Histogram<u64>,
    per_second: &mut WorkerSeries<'_>,
    observer: Option<&mut (dyn OpObserver + 'static)>,
    op: StormOp,
    ok: bool,
    latency: Duration,
) {
    let nanos = (latency.as_nanos() as u64).clamp(1, LATENCY_MAX_NS);
    result.latency[op.index()].saturating_record(nanos);
    window.saturating_record(nanos);
    per_second.record(op, ok, latency);
    result.ops += 1;
    if !ok {
        result.errors[op.index()] += 1;
    }
    if let Some(observer) = observer {
        observer.observe(op, ok, latency);
    }
}

fn flush_window(slot: &Mutex<Histogram<u64>>, window: &mut Histogram<u64>) {
    if window.is_empty() {
        return;
    }
    let mut shared = slot.lock().unwrap_or_else(|e| e.into_inner());
    shared.add(&*window).expect("histograms share their bounds");
    window.reset();
}

/// One full SCAN iteration over the storm's keys, recorded as one event.
fn scan_once(
    shared: &WorkerShared<'_>,
    client: &mut dyn MapClient,
    result: &mut WorkerResult,
    scheduled: Instant,
) -> (bool, Duration) {
    let keyspace = shared.keyspace;
    let call = (shared.clock)();
    let mut found = Vec::new();
    let mut cursor = 0;
    let ok = loop {
        match client.scan_page(cursor, &keyspace.scan_pattern, SCAN_COUNT) {
            Ok((next, keys)) => {
                found.extend(
                    keys.iter()
                        .filter_map(|k| keyspace.index.get(k.as_ref()).copied()),
                );
                cursor = next;
                if cursor == 0 {
                    break true;
                }
            }
            Err(_) => break false,
        }
        if shared.control.is_stopping() {
            // An unfinished iteration guarantees nothing; keep it out of the history.
            return (true, scheduled.elapsed());
        }
    };
    let ret = if ok {
        (shared.clock)()
    } else {
        Event::NO_RETURN
    };
    result.recorder.record(
        call,
        ret,
        Op::Scan {
            found: found.into_boxed_slice(),
        },
    );
    (ok, scheduled.elapsed())
}

/// Stop the storm at its deadline or when an abort condition trips.
fn watch(
    control: &StormControl,
    deadline: Instant,
    max_error_rate: f64,
    max_p99: Option<Duration>,
    windows: &[Mutex<Histogram<u64>>],
) {
    let mut window_start = Instant::now();
    loop {
        if control.is_stopping() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            control.stop(StopReason::DurationElapsed);
            return;
        }
        if !control.sleep(WATCH_INTERVAL.min(deadline - now)) {
            return;
        }
        let live = control.live();
        if live.ops >= MIN_OPS_FOR_ERROR_RATE {
            let rate = live.errors as f64 / live.ops as f64;
            if rate > max_error_rate {
                control.stop(StopReason::AbortCondition(format!(
                    "error rate {:.2}% is above abort.maxErrorRate {:.2}%",
                    rate * 100.0,
                    max_error_rate * 100.0
                )));
                return;
            }
        }
        if window_start.elapsed() >= P99_WINDOW {
            let mut merged = latency_histogram();
            for slot in windows {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                merged.add(&*slot).expect("histograms share their bounds");
                slot.reset();
            }
            window_start = Instant::now();
            if let Some(limit) = max_p99 {
                let p99 = Duration::from_nanos(merged.value_at_quantile(0.99));
                if !merged.is_empty() && p99 > limit {
                    control.stop(StopReason::AbortCondition(format!(
                        "p99 latency {p99:?} over the last second is above abort.maxP99Latency {limit:?}"
                    )));
                    return;
                }
            }
        }
    }
}

fn summary(histogram: &Histogram<u64>) -> LatencySummary {
    let micros = |q: f64| histogram.value_at_quantile(q).div_ceil(1000);
    LatencySummary {
        count: histogram.len(),
        p50_micros: micros(0.5),
        p90_micros: micros(0.9),
        p99_micros: micros(0.99),
        p999_micros: micros(0.999),
        max_micros: histogram.max().div_ceil(1000),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    plan: &StormPlan,
    target: &dyn StormTarget,
    totals: &WorkerResult,
    elapsed: Duration,
    stop_reason: StopReason,
    memory_before: MemorySnapshot,
    memory_after: MemorySnapshot,
    check: Option<CheckReport>,
    restore: Option<&RestoreSummary>,
    keys_excluded: u64,
    client_latency: Option<LatencySummary>,
) -> StormReport {
    let mut all = latency_histogram();
    let mut by_op = BTreeMap::new();
    for op in StormOp::ALL {
        let histogram = &totals.latency[op.index()];
        if histogram.is_empty() {
            continue;
        }
        all.add(histogram).expect("histograms share their bounds");
        by_op.insert(
            op.name().to_owned(),
            OpStats {
                ops: histogram.len(),
                errors: totals.errors[op.index()],
                latency: summary(histogram),
            },
        );
    }
    let errors = totals.errors.iter().sum();
    let mut report = StormReport {
        seed: plan.seed,
        target: target.describe(),
        workers: plan.storm.workers,
        elapsed_millis: elapsed.as_millis() as u64,
        stop_reason,
        ops: totals.ops,
        errors,
        ops_per_second: totals.ops as f64 / elapsed.as_secs_f64().max(1e-9),
        by_op,
        latency: summary(&all),
        client_latency,
        memory_before,
        memory_after,
        check,
        series: None,
        restored_keys: restore.map_or(0, RestoreSummary::put_back),
        restore: restore.map(|r| mapchaos_api::storm::RestoreCounts {
            outcomes: r.counts(),
            guarantee: r.guarantee.clone(),
        }),
        // The sidecar fills it from its delete journal.
        deletes: None,
        keys_excluded,
        verdict: Verdict::Inconclusive,
        verdict_reason: String::new(),
    };
    let judging = Judging {
        max_error_rate: plan.abort.error_rate_limit(),
        open_world: false,
    };
    verdict::apply(&mut report, &judging);
    report
}
