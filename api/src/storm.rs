//! The storm protocol between the operator and a sidecar (`PUT/GET/DELETE
//! /v1/storms/{id}`), and the report a storm ends with — the same report
//! `mapchaos run` prints.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::report::{CheckReport, Verdict};
use crate::spec::{AbortSpec, CheckSpec, StormSpec};

/// The default time a storm keeps running without a lease renewal.
pub const DEFAULT_LEASE: GoDuration = GoDuration::from_secs(30);

/// Start (or, for the same id, confirm) a storm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StormRequest {
    /// The workload.
    pub storm: StormSpec,
    /// How the history is checked.
    #[serde(default)]
    pub check: CheckSpec,
    /// When to stop early.
    #[serde(default)]
    pub abort: AbortSpec,
    /// How long the storm runs.
    pub duration: GoDuration,
    /// The seed of the workload, so the storm can be replayed.
    pub seed: u64,
    /// The dead-man's switch: the storm stops when this long passes without a
    /// renewal (a repeated PUT of the same id).
    #[serde(default = "default_lease")]
    pub lease: GoDuration,
}

fn default_lease() -> GoDuration {
    DEFAULT_LEASE
}

/// Where a storm is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StormPhase {
    /// Writing the synthetic keyspace, or reading the existing keys.
    Preparing,
    /// Workers are running.
    Running,
    /// Workers stopped; the history is being checked.
    Checking,
    /// Putting back the existing keys the storm deleted.
    Restoring,
    /// Ended at its duration; the report is final.
    Completed,
    /// Ended early (abort condition, DELETE, or lease expiry); the report covers what ran.
    Aborted,
    /// Could not run (for example, the map could not be reached).
    Failed,
}

impl StormPhase {
    /// Whether the storm has ended and its report is final.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StormPhase::Completed | StormPhase::Aborted | StormPhase::Failed
        )
    }
}

/// Why a storm's workers stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The storm's duration elapsed.
    DurationElapsed,
    /// An abort condition tripped; the text says which.
    AbortCondition(String),
    /// A user or the operator asked it to stop (DELETE, Ctrl-C).
    Stopped,
    /// No lease renewal arrived in time: the controller is gone.
    LeaseExpired,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Operations measured.
    pub count: u64,
    pub p50_micros: u64,
    pub p90_micros: u64,
    pub p99_micros: u64,
    pub p999_micros: u64,
    pub max_micros: u64,
}

/// One operation kind's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpStats {
    /// Operations completed, errors included.
    pub ops: u64,
    /// Operations that failed or timed out.
    pub errors: u64,
    /// Their latency.
    pub latency: LatencySummary,
}

/// The map's memory at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySnapshot {
    /// Keys in the map.
    pub keys: u64,
    /// What the live keys need, when the map reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_bytes: Option<u64>,
    /// What the map's structures hold, dead space included, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_bytes: Option<u64>,
    /// The serving process's resident memory, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}

/// Everything a storm found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StormReport {
    /// The seed the workload ran with.
    pub seed: u64,
    /// What the storm ran against (`in-process:sharded`, `redis://…`).
    pub target: String,
    /// Workers that ran.
    pub workers: u32,
    /// How long the workers ran, in milliseconds.
    pub elapsed_millis: u64,
    /// Why the workers stopped.
    pub stop_reason: StopReason,
    /// Operations completed, errors included.
    pub ops: u64,
    /// Operations that failed or timed out.
    pub errors: u64,
    /// Completed operations per second.
    pub ops_per_second: f64,
    /// Totals by operation (`del`, `get`, `set`, `exists`, `scan`).
    pub by_op: BTreeMap<String, OpStats>,
    /// Latency of every storm operation together.
    pub latency: LatencySummary,
    /// Latency of the application's own commands while the storm's workers
    /// ran (server-side time of every RESP command, whatever its keys), when
    /// the storm ran inside the sidecar serving them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_latency: Option<LatencySummary>,
    /// The map before the storm (after preloading).
    pub memory_before: MemorySnapshot,
    /// The map after the storm (before restoring).
    pub memory_after: MemorySnapshot,
    /// The race check, when the history was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Throughput, errors, exposures and latency per second of the storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<crate::timeline::StormSeries>,
    /// Existing keys put back after the storm.
    #[serde(default)]
    pub restored_keys: u64,
    /// How every stormed key ended, when the storm restored existing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreCounts>,
    /// What became of the existing keys the storm deleted (its delete
    /// journal, `GET /v1/storms/{id}/audit`), when it ran in the sidecar on
    /// existing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<crate::audit::DeleteJournalSummary>,
    /// Keys left out of the check because the application changed them in
    /// ways the history does not hold: without `check.includeClients`,
    /// existing keys where a read returned a value the storm did not write;
    /// with it, the keys its doc comment lists.
    #[serde(default)]
    pub keys_excluded: u64,
    /// Pass: checked, raced, no anomaly. Fail: anomalies. Aborted: an abort
    /// condition stopped the storm. Inconclusive: nothing proven (no
    /// history, no operation of known outcome, no exposure, unknown keys, or
    /// an error rate over `abort.maxErrorRate`).
    pub verdict: Verdict,
    /// One sentence on why the verdict is what it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict_reason: String,
}

/// What a restore did, key by key, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCounts {
    /// Keys by outcome: `restored` (original back), `restored_unwatched`
    /// (original back while the application's writes could not be watched),
    /// `untouched`, `app_wrote` (left holding the application's value),
    /// `app_write_restored` (the application's last write put back over the
    /// storm's), `app_write_lost` (the application wrote a value that cannot
    /// be replayed and the storm overwrote it: left absent), `expired`,
    /// `contended`, `failed`. Outcomes no key had are left out.
    pub outcomes: BTreeMap<String, u64>,
    /// How the restore told the application's writes apart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub guarantee: String,
}

/// What `GET /v1/storms/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StormStatus {
    /// The storm's id, as given in the PUT.
    pub id: String,
    pub phase: StormPhase,
    /// A sentence on the phase (what is happening, or why it failed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Operations completed so far.
    pub ops: u64,
    /// Failed operations so far.
    pub errors: u64,
    /// Milliseconds the workers have run.
    pub elapsed_millis: u64,
    /// The final report, once the phase is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<StormReport>,
}
