//! What a storm will cost in memory, estimated from its spec before any work
//! starts, and the check of that estimate against a memory budget: a field
//! that would make the storm outgrow its budget is refused by name, with the
//! largest value that would fit.
//!
//! The per-unit costs below were measured, not guessed: the `storm_footprint`
//! test of the sidecar crate runs in-process storms of several sizes, reads
//! the process's peak resident memory (`VmHWM`, reset before each run) and
//! divides the growth by keys, recorded operations, scanned keys and workers.
//! Each constant is the measured cost rounded up with room for allocator
//! rounding, and that test fails if a real storm ever uses more than the
//! estimate (or far less, so the estimate cannot drift into uselessness).

use std::fmt;
use std::time::Duration;

use crate::bytesize::ByteSize;
use crate::spec::{CheckSpec, KeySource, StormSpec};

/// Measured (debug build, sharded engine, history written as JSON): 1M
/// keys of 64 bytes grew the peak by 383 MiB (about 400 bytes a key, the
/// estimate 460); 906k recorded operations by 133 MiB (154 bytes each, the
/// estimate 200); 256 workers by 469 MiB (1.8 MiB each, the estimate 2 MiB).
///
/// The storm's key table, per key, besides the key's bytes: the key list,
/// its index (a hash map to the key id) and the history's copy of the list,
/// each an allocation with its header, plus the checker's per-key state.
pub const KEY_TABLE_BYTES: u64 = 240;
/// Copies of a key's bytes the storm holds (list, index, history).
pub const KEY_COPIES: u64 = 3;
/// One key in the map engine, besides its key and value bytes (its B-tree
/// share, two allocations, the shard's bookkeeping).
pub const MAP_ENTRY_BYTES: u64 = 96;
/// One recorded operation through its whole life: the worker's event buffer
/// (grown by doubling), the merged history, the checker's per-key copies and
/// the JSON written for `--history` or `GET …/history`.
pub const RECORDED_OP_BYTES: u64 = 200;
/// One key id of a SCAN a worker is running (4 bytes in a buffer that grows
/// by doubling). Recorded SCANs are paid for by `check.maxOps`: the history
/// charges a SCAN one operation per 16 keys it returned.
pub const SCANNED_KEY_BYTES: u64 = 8;
/// One worker: its thread's stack in use, latency histograms (five per
/// worker, one for the p99 window, one shared slot, 1 ns to 1 h at 3
/// significant digits: 264 KiB each when every bucket is touched) and its
/// connection's buffers.
pub const WORKER_BYTES: u64 = 2 * 1024 * 1024;
/// Per request a worker may have in flight, besides the value bytes: the
/// request and reply buffers.
pub const IN_FLIGHT_BYTES: u64 = 256;
/// Copies of a value a worker holds per request in flight (its value
/// buffer, the request encoding, the reply).
pub const IN_FLIGHT_VALUE_COPIES: u64 = 3;
/// The linearizability search's memo is bounded per key (the checker stops a
/// key at its bound and calls it unknown), and it needs at least this much
/// to decide a contended key.
pub const MIN_CHECK_MEMORY: u64 = 32 * 1024 * 1024;
/// The largest memo one checker thread uses (its bound per key) when the
/// budget leaves more.
pub const MAX_CHECK_MEMORY_PER_THREAD: u64 = 1 << 30;
/// Fixed costs of any storm: runtime, report, the checker's tables.
pub const BASE_BYTES: u64 = 16 * 1024 * 1024;
/// A rate-paced storm's workers may overshoot the rate by a round each;
/// recorded operations are estimated with this much slack over rate ×
/// duration.
const RATE_SLACK: f64 = 1.1;

/// Where the storm runs, which decides what counts against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormSite {
    /// The map is in this process (the embedded engine of `mapchaos run`,
    /// or the sidecar), so the storm's keys count against the budget too.
    pub map_in_process: bool,
    /// For `keys.source: existing`: an upper bound on the bytes of the keys
    /// and values the storm may copy (what the map holds), if known.
    pub existing_bytes: Option<u64>,
}

impl StormSite {
    /// The embedded engine, or a sidecar: the map shares the budget.
    pub const IN_PROCESS: StormSite = StormSite {
        map_in_process: true,
        existing_bytes: None,
    };
}

/// What a storm's parts will hold at most, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The storm's table of keys.
    pub keyspace: u64,
    /// The storm's keys and values in the map (when the map is in process).
    pub map: u64,
    /// The copy of existing keys' values kept to restore and judge them.
    pub originals: u64,
    /// Workers: threads, histograms, buffers for requests in flight.
    pub workers: u64,
    /// The recorded history, merged, checked and written out.
    pub history: u64,
    /// The key ids of the SCANs the workers are running.
    pub scans: u64,
    /// The least the checker's search needs, plus fixed costs.
    pub base: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        [
            self.keyspace,
            self.map,
            self.originals,
            self.workers,
            self.history,
            self.scans,
            self.base,
        ]
        .iter()
        .fold(0u64, |sum, part| sum.saturating_add(*part))
    }

    /// The parts as "name size", biggest first, for messages.
    pub fn breakdown(&self) -> String {
        let mut parts = [
            ("keyspace", self.keyspace),
            ("map", self.map),
            ("originals", self.originals),
            ("workers", self.workers),
            ("history", self.history),
            ("scans", self.scans),
            ("base", self.base),
        ];
        parts.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        parts
            .iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(name, bytes)| format!("{name} {}", ByteSize(*bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The inputs of an estimate: a storm's workload, check and duration.
#[derive(Debug, Clone, PartialEq)]
pub struct StormShape {
    pub storm: StormSpec,
    pub check: CheckSpec,
    pub duration: Duration,
}

/// The longest key of a synthetic keyspace: the prefix and the largest index.
fn synthetic_key_len(prefix: &str, count: u64) -> u64 {
    let digits = count.saturating_sub(1).max(1).ilog10() as u64 + 1;
    prefix.len() as u64 + digits
}

fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

impl StormShape {
    /// The most operations the history can record: `check.maxOps`, and with
    /// a rate no more than rate × duration (with slack).
    pub fn recorded_ops(&self) -> u64 {
        if !self.check.history {
            return 0;
        }
        let mut ops = self.check.max_ops;
        if self.storm.rate > 0 {
            let paced = self.storm.rate as f64 * self.duration.as_secs_f64() * RATE_SLACK
                + f64::from(self.storm.workers) * f64::from(self.storm.pipeline);
            ops = ops.min(paced.min(u64::MAX as f64) as u64);
        }
        ops
    }

    /// The estimate at `site`.
    pub fn footprint(&self, site: StormSite) -> Footprint {
        let storm = &self.storm;
        let keys = &storm.keys;
        let count = keys.count;
        let (key_len, map) = match keys.source {
            KeySource::Synthetic => {
                let key_len = synthetic_key_len(&keys.prefix, count);
                // SETs fill the whole keyspace whatever the preload.
                let map = if site.map_in_process {
                    mul(
                        count,
                        MAP_ENTRY_BYTES + key_len + u64::from(keys.value_size.max(1)),
                    )
                } else {
                    0
                };
                (key_len, map)
            }
            // Existing keys' names are what the application chose; their
            // bytes are in `originals`.
            KeySource::Existing => (0, 0),
        };
        let keyspace = mul(count, KEY_TABLE_BYTES + mul(KEY_COPIES, key_len));
        let originals = match (keys.source, site.existing_bytes) {
            (KeySource::Synthetic, _) => 0,
            // Keys and values copied once, key names twice more (index,
            // history).
            (KeySource::Existing, Some(bytes)) => mul(bytes, KEY_COPIES),
            (KeySource::Existing, None) => 0,
        };
        let in_flight = mul(
            u64::from(storm.pipeline),
            IN_FLIGHT_BYTES + mul(IN_FLIGHT_VALUE_COPIES, u64::from(keys.value_size) + key_len),
        );
        let workers = mul(u64::from(storm.workers), WORKER_BYTES + in_flight);
        let recorded = self.recorded_ops();
        let history = mul(recorded, RECORDED_OP_BYTES);
        let scans = if storm.mix.scan == 0 {
            0
        } else {
            mul(mul(u64::from(storm.workers), count), SCANNED_KEY_BYTES)
        };
        Footprint {
            keyspace,
            map,
            originals,
            workers,
            history,
            scans,
            base: BASE_BYTES + MIN_CHECK_MEMORY,
        }
    }
}

/// What the checker's searches may hold when the storm fits `budget`: what
/// the rest of the storm leaves, at most [`MAX_CHECK_MEMORY_PER_THREAD`] per
/// thread, at least [`MIN_CHECK_MEMORY`].
pub fn check_memory(footprint: &Footprint, budget: u64, threads: usize) -> u64 {
    let rest = footprint.total().saturating_sub(MIN_CHECK_MEMORY);
    budget
        .saturating_sub(rest)
        .min(MAX_CHECK_MEMORY_PER_THREAD.saturating_mul(threads.max(1) as u64))
        .max(MIN_CHECK_MEMORY)
}

/// A field that makes a storm outgrow its budget, with the largest value
/// that fits when the rest of the spec stays as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// The field's path under `spec.` (`storm.keys.count`).
    pub field: &'static str,
    /// Its value now.
    pub value: u64,
    /// The largest value that fits, if any does.
    pub limit: Option<u64>,
}

/// The fields an estimate depends on, each with the smallest value it may
/// take, how to read it and how to set it.
type Knob = (
    &'static str,
    u64,
    fn(&StormShape) -> u64,
    fn(&mut StormShape, u64),
);

const KNOBS: [Knob; 7] = [
    (
        "storm.keys.count",
        1,
        |s| s.storm.keys.count,
        |s, v| s.storm.keys.count = v,
    ),
    (
        "storm.keys.valueSize",
        crate::validate::MIN_VALUE_SIZE as u64,
        |s| u64::from(s.storm.keys.value_size),
        |s, v| s.storm.keys.value_size = v as u32,
    ),
    (
        "storm.keys.prefix",
        1,
        |s| s.storm.keys.prefix.len() as u64,
        |s, v| s.storm.keys.prefix = "p".repeat(v as usize),
    ),
    (
        "storm.workers",
        1,
        |s| u64::from(s.storm.workers),
        |s, v| s.storm.workers = v as u32,
    ),
    (
        "storm.pipeline",
        1,
        |s| u64::from(s.storm.pipeline),
        |s, v| s.storm.pipeline = v as u32,
    ),
    (
        "check.maxOps",
        1,
        |s| s.check.max_ops,
        |s, v| s.check.max_ops = v,
    ),
    ("storm.rate", 1, |s| s.storm.rate, |s, v| s.storm.rate = v),
];

impl StormShape {
    /// Every field whose value makes the estimate exceed `budget`, with the
    /// largest value of it that would fit (the others unchanged). Empty when
    /// the storm fits. A prefix counts by its length; `storm.rate` only when
    /// it paces the storm below `check.maxOps`.
    pub fn over_budget(&self, site: StormSite, budget: u64) -> Vec<OverBudget> {
        if self.footprint(site).total() <= budget {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (field, min, get, set) in KNOBS {
            let value = get(self);
            if value <= min {
                continue;
            }
            if field == "storm.rate" && (self.storm.rate == 0 || !self.check.history) {
                continue;
            }
            if field == "storm.keys.prefix" && self.storm.keys.source == KeySource::Existing {
                continue;
            }
            let fits = |v: u64| {
                let mut shape = self.clone();
                set(&mut shape, v);
                shape.footprint(site).total() <= budget
            };
            // Only a field whose lowering changes the estimate is at fault.
            let mut lowest = self.clone();
            set(&mut lowest, min);
            if lowest.footprint(site).total() == self.footprint(site).total() {
                continue;
            }
            let limit = if fits(min) {
                // The estimate grows with every field: bisect for the largest fit.
                let (mut low, mut high) = (min, value);
                while high - low > 1 {
                    let mid = low + (high - low) / 2;
                    if fits(mid) {
                        low = mid;
                    } else {
                        high = mid;
                    }
                }
                Some(low)
            } else {
                None
            };
            found.push(OverBudget {
                field,
                value,
                limit,
            });
        }
        found
    }
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.field == "storm.keys.prefix" {
            format!("a {}-byte prefix", self.value)
        } else {
            self.value.to_string()
        };
        match self.limit {
            Some(limit) if self.field == "storm.keys.prefix" => {
                write!(f, "{what} is over the limit of {limit} bytes")
            }
            Some(limit) => write!(f, "{what} is over the limit of {limit}"),
            None => write!(f, "{what} does not fit even at its smallest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> StormShape {
        StormShape {
            storm: StormSpec::default(),
            check: CheckSpec::default(),
            duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_default_storm_fits_a_default_budget() {
        let footprint = shape().footprint(StormSite::IN_PROCESS);
        assert!(
            footprint.total() < crate::validate::DEFAULT_MEMORY_BUDGET.0,
            "{}",
            footprint.breakdown()
        );
        assert!(
            shape()
                .over_budget(
                    StormSite::IN_PROCESS,
                    crate::validate::DEFAULT_MEMORY_BUDGET.0
                )
                .is_empty()
        );
    }

    #[test]
    fn a_billion_keys_are_refused_with_the_count_that_fits() {
        let mut big = shape();
        big.storm.keys.count = 1_000_000_000;
        big.storm.mix.scan = 0;
        let budget = ByteSize::gib(1).0;
        let over = big.over_budget(StormSite::IN_PROCESS, budget);
        let count = over
            .iter()
            .find(|o| o.field == "storm.keys.count")
            .expect("the count is named");
        let limit = count.limit.expect("some count fits");
        let mut fitted = big.clone();
        fitted.storm.keys.count = limit;
        assert!(fitted.footprint(StormSite::IN_PROCESS).total() <= budget);
        fitted.storm.keys.count = limit + 1;
        assert!(fitted.footprint(StormSite::IN_PROCESS).total() > budget);
    }

    #[test]
    fn each_field_that_sizes_memory_is_named_when_it_alone_is_too_big() {
        let budget = ByteSize::gib(1).0;
        let site = StormSite::IN_PROCESS;
        type Case = (&'static str, fn(&mut StormShape));
        let cases: [Case; 7] = [
            ("storm.keys.count", |s| s.storm.keys.count = 100_000_000),
            ("storm.keys.valueSize", |s| {
                s.storm.keys.count = 1_000_000;
                s.storm.keys.value_size = 1 << 20
            }),
            ("storm.keys.prefix", |s| {
                s.storm.keys.prefix = "x".repeat(100_000)
            }),
            ("storm.workers", |s| s.storm.workers = 1024),
            ("storm.pipeline", |s| {
                s.storm.keys.count = 100;
                s.storm.workers = 4;
                s.storm.keys.value_size = 1 << 20;
                s.storm.pipeline = 1024
            }),
            ("check.maxOps", |s| s.check.max_ops = 100_000_000),
            ("storm.rate", |s| {
                s.check.max_ops = 1 << 40;
                s.storm.rate = 10_000_000
            }),
        ];
        for (field, make) in cases {
            let mut s = shape();
            s.storm.mix.scan = 0;
            make(&mut s);
            let over = s.over_budget(site, budget);
            assert!(
                over.iter().any(|o| o.field == field && o.limit.is_some()),
                "{field}: {over:?} ({})",
                s.footprint(site).breakdown()
            );
        }
    }

    #[test]
    fn scans_count_the_keys_each_worker_holds_mid_scan() {
        let mut s = shape();
        s.storm.keys.count = 1_000_000;
        let with_scans = s.footprint(StormSite::IN_PROCESS);
        assert_eq!(with_scans.scans, 32 * 1_000_000 * SCANNED_KEY_BYTES);
        s.storm.mix.scan = 0;
        assert_eq!(s.footprint(StormSite::IN_PROCESS).scans, 0);
    }

    #[test]
    fn the_checker_gets_what_the_storm_leaves() {
        let footprint = shape().footprint(StormSite::IN_PROCESS);
        let budget = footprint.total() + (100 << 20);
        assert_eq!(
            check_memory(&footprint, budget, 4),
            MIN_CHECK_MEMORY + (100 << 20)
        );
        assert_eq!(
            check_memory(&footprint, u64::MAX, 2),
            2 * MAX_CHECK_MEMORY_PER_THREAD
        );
        assert_eq!(check_memory(&footprint, 0, 2), MIN_CHECK_MEMORY);
    }

    #[test]
    fn a_rate_bounds_what_is_recorded() {
        let mut s = shape();
        s.storm.rate = 100;
        s.duration = Duration::from_secs(10);
        assert!(s.recorded_ops() < 2_000);
        s.storm.rate = 0;
        assert_eq!(s.recorded_ops(), s.check.max_ops);
    }

    #[test]
    fn a_remote_map_does_not_count_its_keys_here() {
        let mut s = shape();
        s.storm.keys.count = 10_000_000;
        let remote = StormSite {
            map_in_process: false,
            existing_bytes: None,
        };
        assert_eq!(s.footprint(remote).map, 0);
        assert!(s.footprint(StormSite::IN_PROCESS).map > 1 << 30);
    }
}
