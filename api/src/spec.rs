//! The `MapChaos` spec: what to storm, how hard, how to judge it and when to
//! stop. The doc comments here become `kubectl explain` text, so they are
//! written for users.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bytesize::ByteSize;
use crate::duration::GoDuration;
use crate::resource::MapChaosStatus;

// Deriving `CustomResource` makes `MapChaos`, the resource itself; its status
// types live in `crate::resource`. Clippy reads the repeated `printcolumn`
// keys as duplicated attributes; they are one column each.
/// The desired state of a MapChaos experiment.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mapchaos.io",
    version = "v1alpha1",
    kind = "MapChaos",
    singular = "mapchaos",
    plural = "mapchaos",
    shortname = "mc",
    category = "chaos",
    namespaced,
    status = "MapChaosStatus",
    derive = "PartialEq",
    doc = "A concurrent-delete chaos experiment: storms the shared map in the selected pods' mapchaos sidecars and reports races, anomalies and latency.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Targets",
        type_ = "integer",
        description = "Pods stormed in the current run",
        json_path = ".status.summary.targets"
    ),
    printcolumn(
        name = "Exposures",
        type_ = "integer",
        description = "Truly concurrent operation pairs observed",
        json_path = ".status.summary.totalExposures"
    ),
    printcolumn(
        name = "Anomalies",
        type_ = "integer",
        description = "Anomalies the race checker proved",
        json_path = ".status.summary.totalAnomalies"
    ),
    printcolumn(
        name = "P99",
        type_ = "string",
        description = "Worst target's p99 storm latency",
        json_path = ".status.summary.p99"
    ),
    printcolumn(
        name = "Created-By",
        type_ = "string",
        description = "The user who created it, as the admission webhook recorded",
        json_path = ".status.createdBy",
        priority = 1
    ),
    printcolumn(
        name = "Updated-By",
        type_ = "string",
        description = "The user of the last change, as the admission webhook recorded",
        json_path = ".status.updatedBy",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapChaosSpec {
    /// Which pods to storm. Field names follow Chaos Mesh's selector.
    #[serde(default)]
    pub selector: PodSelector,
    /// How many of the selected pods to storm: `one`, `all`, `fixed` (`value`
    /// pods), `fixed-percent` (`value` percent, rounded down, at least one) or
    /// `random-max-percent` (a random percentage between 0 and `value`).
    #[serde(default)]
    pub mode: SelectionMode,
    /// The number or percentage that `mode` needs, as a string (e.g. "50").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub value: Option<String>,
    /// How long each storm runs, as a Go duration ("60s", "5m", "1h30m").
    #[serde(default = "default_duration")]
    pub duration: GoDuration,
    /// The workload each target's sidecar runs.
    #[serde(default)]
    pub storm: StormSpec,
    /// How the storm's history is checked for races.
    #[serde(default)]
    pub check: CheckSpec,
    /// Conditions that stop a storm early.
    #[serde(default)]
    pub abort: AbortSpec,
    /// Steady-state probes: what the application must keep doing (an HTTP
    /// endpoint answering, a Prometheus query within bounds) before, during
    /// and after the storms. A run's verdict is Pass only when the map held
    /// and every probe passed; a `before` probe that fails means no storm
    /// starts. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<crate::probe::Probe>,
    /// Run repeatedly on this cron schedule: five fields (minute hour
    /// day-of-month month day-of-week, e.g. "*/30 * * * *") or a nickname
    /// (@hourly, @daily, @weekly, @monthly, @yearly), in UTC. The first run
    /// starts at the first time the schedule fires after the resource is
    /// created; a time missed by more than 5 minutes (the operator was down,
    /// or `concurrencyPolicy: Forbid` kept it waiting) is skipped with an
    /// Event. Without a schedule the experiment runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What a scheduled run does when an earlier run is still going:
    /// `Forbid` (wait for it, up to 5 minutes, else skip), `Allow` (run
    /// both, the new one on pods the old one is not storming) or `Replace`
    /// (stop the old run's storms, then start).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How many finished runs `status.runs` keeps (1–100).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = crate::validate::MAX_HISTORY_LIMIT))]
    pub history_limit: u32,
    /// Select and report targets without storming them.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop running storms and start no new ones until set back to false.
    #[serde(default)]
    pub paused: bool,
    /// A fixed seed for target choice and workload; when absent one is
    /// derived from the resource's uid (so it differs between resources) and
    /// recorded in status. At most 2^53-1, so it survives every JSON parser
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = crate::resource::MAX_SEED))]
    pub seed: Option<u64>,
}

fn default_history_limit() -> u32 {
    10
}

/// How a scheduled run treats an earlier run that is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Wait for the earlier run to finish; skip this time if it takes more
    /// than 5 minutes.
    #[default]
    Forbid,
    /// Start anyway, on pods the earlier run is not storming.
    Allow,
    /// Stop the earlier run's storms (they restore), then start.
    Replace,
}

fn default_duration() -> GoDuration {
    GoDuration::from_secs(60)
}

/// Which pods a MapChaos targets (Chaos Mesh-compatible field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSelector {
    /// Namespaces to select pods from; defaults to the MapChaos's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Pods must carry all of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selectors: BTreeMap<String, String>,
    /// Label requirements (`matchExpressions`): key, operator (In, NotIn,
    /// Exists, DoesNotExist) and values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression_selectors: Vec<LabelSelectorRequirement>,
    /// Pods must carry all of these annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotation_selectors: BTreeMap<String, String>,
    /// Specific pods, by namespace then names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, Vec<String>>,
}

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"]))]
    pub operator: String,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// How many selected pods are stormed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionMode {
    /// One pod, chosen by the seed.
    #[default]
    One,
    /// Every selected pod.
    All,
    /// `value` pods.
    Fixed,
    /// `value` percent of the selected pods.
    FixedPercent,
    /// A random percentage of the selected pods, at most `value`.
    RandomMaxPercent,
}

/// The concurrent-delete storm each target runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StormSpec {
    /// Concurrent workers per target, each with its own connection (1–1024).
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = crate::validate::MAX_WORKERS))]
    pub workers: u32,
    /// Target operations per second per target, spread over the workers; 0
    /// runs as fast as possible. With a rate, latency is measured from each
    /// operation's intended start, so a stalled map cannot hide its stalls.
    #[serde(default)]
    pub rate: u64,
    /// Relative weights of the operations.
    #[serde(default)]
    pub mix: OpMix,
    /// Which keys the storm hits.
    #[serde(default)]
    pub keys: KeySpec,
    /// Put back the existing keys the storm deleted when it ends (never over
    /// a value the application wrote since). Only meaningful with
    /// `keys.source: existing`.
    #[serde(default)]
    pub restore: bool,
    /// Operations each worker may have in flight at once on its connection
    /// (RESP pipelining); 1 waits for each reply before the next request.
    #[serde(default = "default_pipeline")]
    #[schemars(range(min = 1, max = crate::validate::MAX_PIPELINE))]
    pub pipeline: u32,
    /// The most memory this storm may use on its target ("512Mi", "2Gi"):
    /// its keys in the map, its key table, workers and recorded history. A
    /// storm estimated over it is refused before it starts, naming the field
    /// to shrink and the largest value that fits. A sidecar never lets a
    /// storm use more than its own budget (from its container's memory
    /// limit, less the data already in the map), whatever this says; without
    /// it the sidecar's budget applies (`mapchaos run`: `--memory-budget`,
    /// else half the memory available, else 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
}

fn default_workers() -> u32 {
    32
}

fn default_pipeline() -> u32 {
    1
}

impl Default for StormSpec {
    fn default() -> Self {
        StormSpec {
            workers: default_workers(),
            rate: 0,
            mix: OpMix::default(),
            keys: KeySpec::default(),
            restore: false,
            pipeline: default_pipeline(),
            memory_budget: None,
        }
    }
}

/// Relative weights of the storm's operations; they need not add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpMix {
    /// `DEL key`.
    #[serde(default)]
    pub del: u32,
    /// `GET key`.
    #[serde(default)]
    pub get: u32,
    /// `SET key value`, each value unique so every read names its write.
    #[serde(default)]
    pub set: u32,
    /// `EXISTS key`.
    #[serde(default)]
    pub exists: u32,
    /// A full `SCAN` iteration over the storm's keys.
    #[serde(default)]
    pub scan: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        OpMix {
            del: 60,
            get: 25,
            set: 10,
            exists: 0,
            scan: 5,
        }
    }
}

/// The keys a storm hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    /// `synthetic`: the storm's own keyspace (`prefix` + number), preloaded
    /// before it starts; `existing`: the application's keys matching `pattern`.
    #[serde(default)]
    pub source: KeySource,
    /// Prefix of the synthetic keyspace.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Number of synthetic keys (or, for `existing`, the most keys taken).
    #[serde(default = "default_key_count")]
    #[schemars(range(min = 1))]
    pub count: u64,
    /// Glob of the existing keys to storm (Redis `SCAN MATCH` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// How operations pick keys: `uniform`, `zipf` (a few hot keys take most
    /// operations) or `hotspot` (`hotspot.fraction` of keys take
    /// `hotspot.share` of operations).
    #[serde(default)]
    pub distribution: KeyDistribution,
    /// The Zipf exponent for `distribution: zipf` (> 0; 0.99 is YCSB's).
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    /// The hot set for `distribution: hotspot`.
    #[serde(default)]
    pub hotspot: Hotspot,
    /// Fraction of synthetic keys present when the storm starts (0–1).
    #[serde(default = "default_preload")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub preload: f64,
    /// Size of the values SET writes, in bytes (at least 24, to hold the
    /// unique write id).
    #[serde(default = "default_value_size")]
    #[schemars(range(min = crate::validate::MIN_VALUE_SIZE, max = crate::validate::MAX_VALUE_SIZE))]
    pub value_size: u32,
}

fn default_prefix() -> String {
    "mapchaos:".into()
}

fn default_key_count() -> u64 {
    10_000
}

fn default_zipf_exponent() -> f64 {
    0.99
}

fn default_preload() -> f64 {
    1.0
}

fn default_value_size() -> u32 {
    32
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec {
            source: KeySource::default(),
            prefix: default_prefix(),
            count: default_key_count(),
            pattern: None,
            distribution: KeyDistribution::default(),
            zipf_exponent: default_zipf_exponent(),
            hotspot: Hotspot::default(),
            preload: default_preload(),
            value_size: default_value_size(),
        }
    }
}

/// Where a storm's keys come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeySource {
    /// The storm's own keyspace.
    #[default]
    Synthetic,
    /// The application's keys matching `pattern`.
    Existing,
}

/// How operations pick keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Zipf: key rank r is chosen with probability proportional to 1/r^s.
    #[default]
    Zipf,
    /// A hot set takes a fixed share of operations.
    Hotspot,
}

/// The hot set of a `hotspot` distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hotspot {
    /// Fraction of keys that are hot (0–1).
    #[serde(default = "default_hot_fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub fraction: f64,
    /// Fraction of operations that hit the hot keys (0–1).
    #[serde(default = "default_hot_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub share: f64,
}

fn default_hot_fraction() -> f64 {
    0.01
}

fn default_hot_share() -> f64 {
    0.9
}

impl Default for Hotspot {
    fn default() -> Self {
        Hotspot {
            fraction: default_hot_fraction(),
            share: default_hot_share(),
        }
    }
}

/// How a storm's history is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckSpec {
    /// Record the history and check it. Without it only latency, throughput
    /// and errors are reported.
    #[serde(default = "default_true")]
    pub history: bool,
    /// Most operations recorded (a SCAN counts one more for every 16 keys it
    /// returned); past it recording stops and the report says the check
    /// covers only a prefix. It sizes the storm's memory (see
    /// `storm.memoryBudget`).
    #[serde(default = "default_max_ops")]
    pub max_ops: u64,
    /// Time budget of the linearizability search for one key; a key that
    /// runs out is reported `unknown`, never `ok`.
    #[serde(default = "default_timeout_per_key")]
    pub timeout_per_key: GoDuration,
    /// Also record the application's own RESP operations on the stormed keys
    /// (needs `history`), each connection as its own client: `GET k`, `SET k
    /// v` without options, `DEL k`/`UNLINK k` and `EXISTS k` of one key,
    /// while the workers run. Keys it cannot judge are left out of the check
    /// (counted in `keysExcluded`): keys the application writes while the
    /// storm prepares them, writes with anything else (SET with options,
    /// MSET, DEL of several keys, INCR, EXPIRE, PERSIST; FLUSHDB excludes
    /// every key), the same bytes written twice to one key, bytes a storm
    /// value or the key's original could also be, and (existing keys) reads
    /// of bytes no recorded write produced. Read-only commands are not
    /// recorded and exclude nothing. Without it nothing of the application's
    /// is recorded, and every stormed key it writes is left out of the check
    /// (its history would be incomplete). The application's latency is
    /// reported (`clientLatency`) either way.
    #[serde(default)]
    pub include_clients: bool,
}

fn default_true() -> bool {
    true
}

fn default_max_ops() -> u64 {
    1_000_000
}

fn default_timeout_per_key() -> GoDuration {
    GoDuration::from_secs(10)
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            history: true,
            max_ops: default_max_ops(),
            timeout_per_key: default_timeout_per_key(),
            include_clients: false,
        }
    }
}

/// Conditions that stop a storm before its duration ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortSpec {
    /// Stop once more than this many anomalies are found (checked as the
    /// storm runs where the checker can; always at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_anomalies: Option<u64>,
    /// Stop when the share of failed operations exceeds this, as a decimal
    /// string between 0 and 1 (e.g. "0.05"); "0.05" when unset, even without
    /// `spec.abort`, and "1" never stops. A storm over it is never a pass:
    /// failed operations prove nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<String>,
    /// Stop when the p99 latency of the last second exceeds this duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency: Option<GoDuration>,
}

/// The `abort.maxErrorRate` a storm runs with when the spec gives none.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;

impl AbortSpec {
    /// The share of failed operations over which the storm stops and cannot
    /// pass: `maxErrorRate`, or [`DEFAULT_MAX_ERROR_RATE`] when it is unset
    /// (or, in a spec that skipped validation, unreadable).
    pub fn error_rate_limit(&self) -> f64 {
        self.max_error_rate
            .as_deref()
            .and_then(crate::validate::parse_fraction)
            .unwrap_or(DEFAULT_MAX_ERROR_RATE)
    }
}
