//! The evidence a report draws: one anomalous key's operations around its
//! anomaly (a bounded timeline) and the storm's per-second series
//! (throughput, errors, exposures, latency per operation).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::WitnessOp;

/// What part an operation plays in a key's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpRole {
    /// The operation that cannot be explained (for `nonlinearizable`: the
    /// first one no order can place after the longest legal prefix).
    Culprit,
    /// One of the witness's operations.
    Witness,
    /// Another operation of the key in the same time window, for context.
    Context,
}

/// One bar of a key's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineOp {
    /// The operation as the client saw it.
    #[serde(flatten)]
    pub op: WitnessOp,
    /// Its part in the anomaly.
    pub role: OpRole,
    /// Whether the longest legal prefix (`nonlinearizable` only) placed it.
    #[serde(default)]
    pub in_prefix: bool,
    /// The key's value just before it took effect (`absent`, a value, or
    /// `unknown`): from the prefix's order when the prefix placed it, else
    /// as the operation itself observed it.
    pub before: String,
    /// The key's value just after it took effect, the same way.
    pub after: String,
}

/// Whether a key was certainly present or certainly absent over a span, in
/// every order that explains its operations (what binds a SCAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Certainly present.
    Present,
    /// Certainly absent.
    Absent,
}

/// A span in which a key was certainly present or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSpan {
    /// Present or absent.
    pub presence: Presence,
    /// Start, in microseconds since the storm started.
    pub from_us: u64,
    /// End (exclusive), in microseconds since the storm started; absent
    /// when it lasts to the end of the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_us: Option<u64>,
}

/// One anomalous key's operations around its anomaly, bounded: every
/// operation of the witness and of the prefix's tail, then the nearest
/// others in time up to a cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyTimeline {
    /// The bars, ordered by call.
    pub ops: Vec<TimelineOp>,
    /// The key's operations left out of `ops` by the cap.
    #[serde(default)]
    pub omitted: u64,
    /// For SCAN anomalies: the key's certainly-present and certainly-absent
    /// spans near the SCAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<PresenceSpan>,
}

/// One operation kind's per-bucket counts and latency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpSeries {
    /// Operations completed per bucket, errors included.
    pub ops: Vec<u64>,
    /// Failed operations per bucket.
    pub errors: Vec<u64>,
    /// Median latency per bucket in microseconds (0: none ran).
    pub p50_micros: Vec<u64>,
    /// 99th-percentile latency per bucket in microseconds (0: none ran).
    pub p99_micros: Vec<u64>,
}

/// The storm's time series, recorded by its workers: bucket `i` covers
/// `[i·bucketMillis, (i+1)·bucketMillis)` after the workers started.
/// Latency percentiles come from log buckets (within about 10%).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StormSeries {
    /// The width of one bucket: one second, more for storms longer than an
    /// hour so the series stays small.
    pub bucket_millis: u64,
    /// Per operation kind (`del`, `get`, `set`, `exists`, `scan`).
    pub by_op: BTreeMap<String, OpSeries>,
    /// Race exposures per bucket (single-key pairs, by the later call;
    /// DEL–SCAN pairs are in the totals only), when the history was checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposures: Vec<u64>,
}

impl StormSeries {
    /// How many buckets the series has.
    pub fn len(&self) -> usize {
        self.by_op
            .values()
            .map(|s| s.ops.len())
            .max()
            .unwrap_or(0)
            .max(self.exposures.len())
    }

    /// Whether it has no bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Operations per bucket over every kind.
    pub fn total_ops(&self) -> Vec<u64> {
        self.sum(|s| &s.ops)
    }

    /// Failed operations per bucket over every kind.
    pub fn total_errors(&self) -> Vec<u64> {
        self.sum(|s| &s.errors)
    }

    fn sum(&self, pick: fn(&OpSeries) -> &Vec<u64>) -> Vec<u64> {
        let mut out = vec![0; self.len()];
        for series in self.by_op.values() {
            for (slot, n) in out.iter_mut().zip(pick(series)) {
                *slot += n;
            }
        }
        out
    }
}
