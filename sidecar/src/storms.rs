//! The storms this sidecar runs: one at a time, each on its own threads,
//! stopped by its duration, an abort condition, a DELETE, or its lease
//! running out (the dead-man's switch that keeps chaos from outliving its
//! controller). Finished storms are kept for their report and history within
//! a byte budget (see [`crate::finished`]). A storm also sees the
//! application's RESP traffic through the sidecar's one [`AppProbe`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapchaos_api::ByteSize;
use mapchaos_api::audit::StormAudit;
use mapchaos_api::budget::{self, StormShape, StormSite};
use mapchaos_api::spec::{KeySource, MapChaosSpec, PodSelector, SelectionMode};
use mapchaos_api::storm::{StopReason, StormPhase, StormReport, StormRequest, StormStatus};
use mapchaos_api::validate::{FieldError, InvalidSpec, Limits, MemoryBudget};
use mapchaos_storm::History;
use mapchaos_storm::restore::RestoreOutcome;
use mapchaos_storm::runner::{self, StormControl, StormPlan};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::app_probe::AppProbe;
use crate::audit::journal::JournalRecorder;
use crate::engine::MapEngine;
use crate::finished::{self, Shelf, Shelved};
use crate::memory_limit::MemorySources;
use crate::metrics::SidecarMetrics;
use crate::storm_target::{EngineTarget, WithMetrics};

/// How often the lease watchdog looks.
const LEASE_CHECK: Duration = Duration::from_millis(200);

/// The longest lease a storm may ask for: past it a storm whose operator
/// is gone would go on storming the application's map.
pub const MAX_LEASE: Duration = Duration::from_secs(600);

/// How the sidecar sizes each storm's memory budget, when the storm is asked
/// for (the map's data grows and shrinks between storms).
#[derive(Debug, Clone, Default)]
pub struct StormBudget {
    /// `--storm-memory-budget`: the most one storm may use. Even then never
    /// more than the container's limit leaves over what the sidecar holds.
    pub ceiling: Option<ByteSize>,
    /// Where the container's limit and the process's memory are read.
    pub sources: MemorySources,
}

impl StormBudget {
    /// The budget a storm asked for now gets.
    pub fn now(&self) -> MemoryBudget {
        let derived = self.sources.storm_budget();
        let Some(ceiling) = self.ceiling else {
            return derived;
        };
        match (self.sources.container_limit(), self.sources.resident()) {
            (Some(limit), Some(resident)) if limit.saturating_sub(resident) < ceiling.0 => {
                MemoryBudget::new(
                    ByteSize(limit.saturating_sub(resident)),
                    format!(
                        "--storm-memory-budget {ceiling}, cut to what the container's limit of {} leaves over the {} the sidecar holds",
                        ByteSize(limit),
                        ByteSize(resident)
                    ),
                )
            }
            _ => MemoryBudget::new(ceiling, format!("--storm-memory-budget {ceiling}")),
        }
    }
}

/// The longest accepted storm id, and its alphabet: ids appear in URLs and logs.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a valid storm id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// How a storm ended: its report, history and delete journal (for a storm
/// on existing keys), or why it could not run.
type Ending = Result<(StormReport, Recorded, Option<StormAudit>), String>;

/// A finished storm's history.
enum Recorded {
    /// As served by `GET …/history`: serialised once, so the bytes held are
    /// the bytes counted.
    Json(Bytes),
    /// The storm did not record one (`check.history: false`).
    Absent,
    /// Dropped to keep finished storms within their byte budget.
    Dropped,
}

/// Fewer JSON bytes than any recorded event takes (`{"client":1,"call":…}`):
/// a history with more events than the budget has room for at this size is
/// dropped without serialising it first.
const MIN_EVENT_JSON_BYTES: u64 = 32;

impl Recorded {
    fn from(history: Option<History>, max_bytes: u64) -> Recorded {
        if let Some(history) = &history
            && history.events().len() as u64 * MIN_EVENT_JSON_BYTES > max_bytes
        {
            return Recorded::Dropped;
        }
        match history.map(|h| h.to_json()) {
            Some(Ok(json)) => Recorded::Json(Bytes::from(json)),
            Some(Err(error)) => {
                warn!(%error, "cannot serialise a storm's history; not keeping it");
                Recorded::Absent
            }
            None => Recorded::Absent,
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Recorded::Json(json) => json.len() as u64,
            Recorded::Absent | Recorded::Dropped => 0,
        }
    }
}

/// One storm, running or finished.
struct Storm {
    id: String,
    request: StormRequest,
    /// What the budget leaves the checker's searches.
    check_memory: usize,
    control: Arc<StormControl>,
    lease_deadline: Mutex<Instant>,
    outcome: Mutex<Option<Ending>>,
}

impl Storm {
    fn status(&self) -> StormStatus {
        let live = self.control.live();
        let outcome = self.outcome.lock();
        let (phase, message, report) = match outcome.as_ref() {
            // The runner marks its last phase just before it returns the
            // outcome; until the outcome is stored here, a final phase would
            // be a final status without its report, so say it is checking.
            None if live.phase.is_final() => (StormPhase::Checking, String::new(), None),
            None => (live.phase, String::new(), None),
            Some(Err(message)) => (StormPhase::Failed, message.clone(), None),
            Some(Ok((report, _, _))) => {
                let phase = if report.stop_reason == StopReason::DurationElapsed {
                    StormPhase::Completed
                } else {
                    StormPhase::Aborted
                };
                let message = match &report.stop_reason {
                    StopReason::DurationElapsed => String::new(),
                    StopReason::AbortCondition(why) => why.clone(),
                    StopReason::Stopped => "stopped by DELETE".into(),
                    StopReason::LeaseExpired => {
                        "lease expired: no renewal from the operator".into()
                    }
                };
                (phase, message, Some(report.clone()))
            }
        };
        StormStatus {
            id: self.id.clone(),
            phase,
            message,
            ops: live.ops,
            errors: live.errors,
            // Once finished, how long the workers ran (the report's), not the time
            // since the start, which keeps growing.
            elapsed_millis: report
                .as_ref()
                .map_or(live.elapsed.as_millis() as u64, |r| r.elapsed_millis),
            report,
        }
    }

    fn is_finished(&self) -> bool {
        self.outcome.lock().is_some()
    }

    /// What the finished storm holds besides its history, as the budget
    /// counts it: its request, report and id as serialised, plus the struct.
    fn base_bytes(&self) -> u64 {
        let report = match self.outcome.lock().as_ref() {
            Some(Ok((report, _, audit))) => json_len(report) + json_len(audit),
            Some(Err(message)) => message.len() as u64,
            None => 0,
        };
        std::mem::size_of::<Storm>() as u64
            + self.id.len() as u64
            + json_len(&self.request)
            + report
    }

    fn history_bytes(&self) -> u64 {
        match self.outcome.lock().as_ref() {
            Some(Ok((_, recorded, _))) => recorded.bytes(),
            _ => 0,
        }
    }
}

/// The serialised length of a value, for the byte budget.
fn json_len(value: &impl serde::Serialize) -> u64 {
    serde_json::to_vec(value).map_or(0, |json| json.len() as u64)
}

impl Shelved for Arc<Storm> {
    fn id(&self) -> &str {
        &self.id
    }

    fn drop_history(&self) {
        if let Some(Ok((_, recorded, _))) = self.outcome.lock().as_mut() {
            *recorded = Recorded::Dropped;
        }
    }
}

/// What a PUT did.
#[derive(Debug)]
pub enum PutOutcome {
    /// A new storm started.
    Started(StormStatus),
    /// The same id was already known: its lease was renewed if it runs.
    Existing(StormStatus),
    /// Another storm is running.
    Busy { running: String },
    /// The request cannot run (or not within the memory budget).
    Invalid(InvalidSpec),
}

/// The sidecar's storms.
pub struct Storms {
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    probe: Arc<AppProbe>,
    running: Mutex<Option<Arc<Storm>>>,
    finished: Mutex<Shelf<Arc<Storm>>>,
    /// The shelf's budget, readable without its lock (which is taken after
    /// a storm's own lock never before it).
    finished_max_bytes: u64,
    budget: StormBudget,
}

/// How a [`Storms`] keeps what finished storms leave, and how much memory a
/// new storm may use.
#[derive(Debug, Clone)]
pub struct StormsConfig {
    /// The byte budget of finished storms' reports and histories
    /// (`--finished-storms-max-bytes`).
    pub finished_max_bytes: u64,
    /// The memory budget of each storm (`--storm-memory-budget`, the
    /// container's limit).
    pub storm_budget: StormBudget,
}

impl Default for StormsConfig {
    fn default() -> Self {
        StormsConfig {
            finished_max_bytes: finished::DEFAULT_MAX_BYTES,
            storm_budget: StormBudget::default(),
        }
    }
}

/// Why a `GET` finds no storm, or no history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Never seen here (or dropped so long ago it is forgotten).
    Unknown,
    /// The storm still runs.
    Running,
    /// The storm did not record a history.
    NotRecorded,
    /// The storm keeps no delete journal: it was not on existing keys, or
    /// it failed before running.
    NoJournal,
    /// Dropped to keep finished storms within the byte budget.
    DroppedForMemory { max_bytes: u64 },
    /// The storm failed before it ran, so it has no report: why.
    NoReport(String),
}

impl Storms {
    /// Storms budgeted from the container's memory limit.
    pub fn new(engine: Arc<dyn MapEngine>, metrics: Arc<SidecarMetrics>) -> Arc<Self> {
        Self::with_config(engine, metrics, StormsConfig::default())
    }

    /// Storms held to `budget`, finished storms kept as by default.
    pub fn with_budget(
        engine: Arc<dyn MapEngine>,
        metrics: Arc<SidecarMetrics>,
        budget: StormBudget,
    ) -> Arc<Self> {
        Self::with_config(
            engine,
            metrics,
            StormsConfig {
                storm_budget: budget,
                ..StormsConfig::default()
            },
        )
    }

    pub fn with_config(
        engine: Arc<dyn MapEngine>,
        metrics: Arc<SidecarMetrics>,
        config: StormsConfig,
    ) -> Arc<Self> {
        Arc::new(Storms {
            engine,
            metrics,
            budget: config.storm_budget,
            probe: AppProbe::new(),
            running: Mutex::new(None),
            finished: Mutex::new(Shelf::new(config.finished_max_bytes)),
            finished_max_bytes: config.finished_max_bytes,
        })
    }

    /// Bytes finished storms hold, as their budget counts them.
    pub fn finished_bytes(&self) -> u64 {
        self.finished.lock().held_bytes()
    }

    /// Why there is no storm `id` to show: unknown, or dropped for memory.
    pub fn missing(&self, id: &str) -> Missing {
        if self.finished.lock().was_dropped(id) {
            Missing::DroppedForMemory {
                max_bytes: self.finished_max_bytes,
            }
        } else {
            Missing::Unknown
        }
    }

    /// Where the RESP server registers the application's connections, so
    /// the running storm measures (and, with `check.includeClients`,
    /// records) their traffic.
    pub fn app_probe(&self) -> Arc<AppProbe> {
        self.probe.clone()
    }

    fn find(&self, id: &str) -> Option<Arc<Storm>> {
        if let Some(storm) = self.running.lock().as_ref().filter(|s| s.id == id) {
            return Some(storm.clone());
        }
        self.finished.lock().find(id)
    }

    /// `PUT /v1/storms/{id}`: start the storm, or renew its lease.
    pub fn put(self: &Arc<Self>, id: &str, request: StormRequest) -> PutOutcome {
        if let Some(storm) = self.find(id) {
            *storm.lease_deadline.lock() = Instant::now() + storm.request.lease.0;
            return PutOutcome::Existing(storm.status());
        }
        let check_memory = match self.validate(&request) {
            Ok(check_memory) => check_memory,
            Err(invalid) => return PutOutcome::Invalid(invalid),
        };
        let mut running = self.running.lock();
        if let Some(other) = running.as_ref() {
            return PutOutcome::Busy {
                running: other.id.clone(),
            };
        }
        let storm = Arc::new(Storm {
            id: id.to_owned(),
            lease_deadline: Mutex::new(Instant::now() + request.lease.0),
            request,
            check_memory,
            control: StormControl::new(),
            outcome: Mutex::new(None),
        });
        *running = Some(storm.clone());
        drop(running);
        self.metrics.storm_active.set(1);
        info!(storm = id, "storm starting");
        let storms = self.clone();
        let runner_storm = storm.clone();
        std::thread::Builder::new()
            .name("storm".into())
            .spawn(move || storms.run(runner_storm))
            .expect("spawn the storm thread");
        let watched = storm.clone();
        std::thread::Builder::new()
            .name("storm-lease".into())
            .spawn(move || watch_lease(&watched))
            .expect("spawn the lease watchdog");
        PutOutcome::Started(storm.status())
    }

    fn run(&self, storm: Arc<Storm>) {
        let request = &storm.request;
        let plan = StormPlan {
            storm: request.storm.clone(),
            check: request.check.clone(),
            abort: request.abort.clone(),
            duration: request.duration.0,
            seed: request.seed,
            check_threads: 1,
            check_memory: Some(storm.check_memory),
        };
        // A storm on existing keys deletes the application's keys: journal them.
        let journal = (request.storm.keys.source == KeySource::Existing)
            .then(|| Arc::new(JournalRecorder::new()));
        let target = WithMetrics {
            inner: EngineTarget::new(self.engine.clone())
                .with_app_probe(self.probe.clone())
                .with_audit(&storm.id, journal.clone()),
            metrics: self.metrics.clone(),
        };
        let outcome = runner::run(&plan, &target, &storm.control)
            .map(|mut outcome| {
                let audit = journal.map(|j| j.journal(&storm.id, request.storm.restore));
                outcome.report.deletes = audit.as_ref().map(|a| a.summary.clone());
                self.metrics.record_report(&outcome.report);
                info!(
                    storm = %storm.id,
                    ops = outcome.report.ops,
                    verdict = ?outcome.report.verdict,
                    "storm finished"
                );
                if let Some(restore) = &outcome.restore {
                    let count = |o| restore.count(o);
                    info!(
                        storm = %storm.id,
                        keys = restore.outcomes.len(),
                        restored = count(RestoreOutcome::Restored),
                        untouched = count(RestoreOutcome::Untouched),
                        app_wrote = count(RestoreOutcome::AppWrote),
                        app_write_restored = count(RestoreOutcome::AppWriteRestored),
                        app_write_lost = count(RestoreOutcome::AppWriteLost),
                        expired = count(RestoreOutcome::Expired),
                        failed = count(RestoreOutcome::Failed),
                        "storm restored"
                    );
                }
                (
                    outcome.report,
                    Recorded::from(outcome.history, self.finished_max_bytes),
                    audit,
                )
            })
            .map_err(|error| {
                warn!(storm = %storm.id, %error, "storm failed");
                error.to_string()
            });
        *storm.outcome.lock() = Some(outcome);
        self.metrics.storm_active.set(0);
        let mut running = self.running.lock();
        if running.as_ref().is_some_and(|s| Arc::ptr_eq(s, &storm)) {
            *running = None;
        }
        let (base, history) = (storm.base_bytes(), storm.history_bytes());
        let mut finished = self.finished.lock();
        finished.push(storm, base, history);
        self.metrics
            .finished_storms_bytes
            .set(i64::try_from(finished.held_bytes()).unwrap_or(i64::MAX));
    }

    /// `GET /v1/storms/{id}`.
    pub fn status(&self, id: &str) -> Option<StormStatus> {
        self.find(id).map(|storm| storm.status())
    }

    /// `DELETE /v1/storms/{id}`: stop it (its keys are restored if the spec
    /// asks). `None` when unknown.
    pub fn stop(&self, id: &str) -> Option<StormStatus> {
        let storm = self.find(id)?;
        if !storm.is_finished() {
            info!(storm = id, "storm stopped by DELETE");
            storm.control.stop(StopReason::Stopped);
        }
        Some(storm.status())
    }

    /// `GET /v1/storms/{id}/history`, as JSON.
    pub fn history_json(&self, id: &str) -> Result<Bytes, Missing> {
        let Some(storm) = self.find(id) else {
            return Err(self.missing(id));
        };
        let outcome = storm.outcome.lock();
        match outcome.as_ref() {
            None => Err(Missing::Running),
            Some(Ok((_, Recorded::Json(json), _))) => Ok(json.clone()),
            Some(Ok((_, Recorded::Dropped, _))) => Err(Missing::DroppedForMemory {
                max_bytes: self.finished_max_bytes,
            }),
            Some(_) => Err(Missing::NotRecorded),
        }
    }

    /// `GET /v1/storms/{id}/report`: a finished storm's report and the
    /// request it ran, for its page (see [`crate::report_page`]).
    pub fn finished_report(&self, id: &str) -> Result<(StormReport, StormRequest), Missing> {
        let Some(storm) = self.find(id) else {
            return Err(self.missing(id));
        };
        let outcome = storm.outcome.lock();
        match outcome.as_ref() {
            None => Err(Missing::Running),
            Some(Ok((report, _, _))) => Ok((report.clone(), storm.request.clone())),
            Some(Err(message)) => Err(Missing::NoReport(message.clone())),
        }
    }

    /// `GET /v1/storms/{id}/audit`: the storm's delete journal.
    pub fn audit(&self, id: &str) -> Result<StormAudit, Missing> {
        let Some(storm) = self.find(id) else {
            return Err(self.missing(id));
        };
        let outcome = storm.outcome.lock();
        match outcome.as_ref() {
            None => Err(Missing::Running),
            Some(Ok((_, _, Some(audit)))) => Ok(audit.clone()),
            Some(_) => Err(Missing::NoJournal),
        }
    }

    /// Stop every storm (the sidecar is shutting down): its workers and its
    /// check stop at once, and its restore runs to the end.
    pub fn stop_all(&self) {
        if let Some(storm) = self.running.lock().as_ref() {
            storm.control.interrupt(StopReason::Stopped);
        }
    }

    /// The running storm's restore progress (keys done, keys to do), if it
    /// is restoring.
    pub fn restoring(&self) -> Option<(u64, u64)> {
        let running = self.running.lock();
        let storm = running.as_ref()?;
        (storm.control.live().phase == StormPhase::Restoring)
            .then(|| storm.control.restore_progress())
    }

    /// Wait until no storm runs (its check and restore included), at most
    /// `timeout`; `false` if one still runs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.running.lock().is_some() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Stop the storm when its lease runs out.
fn watch_lease(storm: &Storm) {
    while !storm.is_finished() {
        if Instant::now() > *storm.lease_deadline.lock() && !storm.control.is_stopping() {
            warn!(storm = %storm.id, "lease expired: stopping the storm");
            storm.control.stop(StopReason::LeaseExpired);
        }
        std::thread::sleep(LEASE_CHECK);
    }
}

impl Storms {
    /// The same rules as a MapChaos's storm part, within the memory budget
    /// the sidecar has now (the data already in the map is not the storm's
    /// to take); the memory that leaves the checker when it fits.
    fn validate(&self, request: &StormRequest) -> Result<usize, InvalidSpec> {
        let spec = MapChaosSpec {
            selector: PodSelector::default(),
            mode: SelectionMode::All,
            value: None,
            duration: request.duration,
            storm: request.storm.clone(),
            check: request.check.clone(),
            abort: request.abort.clone(),
            probes: Vec::new(),
            schedule: None,
            concurrency_policy: Default::default(),
            history_limit: 10,
            dry_run: false,
            paused: false,
            seed: Some(request.seed),
        };
        let sidecar = self.budget.now();
        let budget = match request.storm.memory_budget {
            Some(asked) if asked < sidecar.bytes => MemoryBudget::new(asked, "storm.memoryBudget"),
            _ => sidecar,
        };
        // Existing keys are copied from this map: at most what it holds.
        let existing_bytes = (request.storm.keys.source == KeySource::Existing)
            .then(|| self.engine.memory().live_bytes);
        let site = StormSite {
            map_in_process: true,
            existing_bytes,
        };
        let limits = Limits {
            budget: Some(budget.clone()),
            site,
            selects_pods: false,
        };
        // The request has no `spec.` level: name fields as the request does.
        let mut errors = match spec.validate_storm(&limits) {
            Ok(()) => Vec::new(),
            Err(InvalidSpec(errors)) => errors
                .into_iter()
                .map(|mut e| {
                    e.field = e.field.trim_start_matches("spec.").to_owned();
                    e
                })
                .collect(),
        };
        if request.lease.0.is_zero() {
            errors.push(FieldError {
                field: "lease".into(),
                message: "must be longer than 0s".into(),
            });
        } else if request.lease.0 > MAX_LEASE {
            errors.push(FieldError {
                field: "lease".into(),
                message: format!("{} is over the limit of 10m", request.lease),
            });
        }
        if !errors.is_empty() {
            return Err(InvalidSpec(errors));
        }
        let shape = StormShape {
            storm: request.storm.clone(),
            check: request.check.clone(),
            duration: request.duration.0,
        };
        let footprint = shape.footprint(site);
        Ok(budget::check_memory(&footprint, budget.bytes.0, 1) as usize)
    }
}
