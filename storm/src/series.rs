//! The storm's time series (throughput, errors and latency per operation
//! per second), recorded by the workers themselves: each counts into the
//! bucket of the instant its round ended and hands a bucket over to the
//! shared series when its clock moves past it, so the shared lock is taken
//! about once per bucket per worker. Exposures per bucket come from the
//! history afterwards.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mapchaos_api::timeline::{OpSeries, StormSeries};

use crate::history::{History, Op};
use crate::workload::StormOp;

/// The most buckets a series holds: longer storms get wider buckets.
pub const MAX_BUCKETS: u64 = 3600;
/// Log-histogram resolution: sub-buckets per power of two (about 19% wide,
/// so a percentile is within about 10% of its bucket's middle).
const SUB: u32 = 4;
/// Enough powers of two for latencies up to about 9 minutes in nanoseconds.
const SLOTS: usize = 40 * SUB as usize;
const OPS: usize = StormOp::ALL.len();

fn slot(nanos: u64) -> usize {
    let v = nanos.max(1);
    let octave = 63 - v.leading_zeros();
    let sub = if octave >= 2 {
        (v >> (octave - 2)) & u64::from(SUB - 1)
    } else {
        (v << (2 - octave)) & u64::from(SUB - 1)
    };
    ((octave * SUB) as usize + sub as usize).min(SLOTS - 1)
}

/// The middle of a slot, in nanoseconds.
fn slot_middle(slot: usize) -> f64 {
    let octave = (slot / SUB as usize) as i32;
    let sub = (slot % SUB as usize) as f64;
    let lo = 2f64.powi(octave) * (1.0 + sub / f64::from(SUB));
    let hi = 2f64.powi(octave) * (1.0 + (sub + 1.0) / f64::from(SUB));
    (lo + hi) / 2.0
}

#[derive(Clone)]
struct Bucket {
    ops: [u64; OPS],
    errors: [u64; OPS],
    latency: [[u32; SLOTS]; OPS],
}

impl Bucket {
    fn empty() -> Box<Bucket> {
        Box::new(Bucket {
            ops: [0; OPS],
            errors: [0; OPS],
            latency: [[0; SLOTS]; OPS],
        })
    }

    fn add(&mut self, other: &Bucket) {
        for op in 0..OPS {
            self.ops[op] += other.ops[op];
            self.errors[op] += other.errors[op];
            for (mine, theirs) in self.latency[op].iter_mut().zip(&other.latency[op]) {
                *mine = mine.saturating_add(*theirs);
            }
        }
    }

    /// The `q` quantile of an op's latency in microseconds (0: none ran).
    fn quantile_micros(&self, op: usize, q: f64) -> u64 {
        let counts = &self.latency[op];
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (slot, &count) in counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return (slot_middle(slot) / 1000.0).ceil() as u64;
            }
        }
        0
    }
}

/// The shared series of one storm.
pub struct SeriesSink {
    bucket: Duration,
    buckets: Mutex<Vec<Bucket>>,
}

impl SeriesSink {
    /// A series for a storm of `duration`: one-second buckets, wider (whole
    /// seconds) when that would make more than [`MAX_BUCKETS`].
    pub fn new(duration: Duration) -> SeriesSink {
        let seconds = duration.as_secs().div_ceil(MAX_BUCKETS).max(1);
        SeriesSink {
            bucket: Duration::from_secs(seconds),
            buckets: Mutex::new(Vec::new()),
        }
    }

    /// A worker's recorder; bucket 0 starts at `start`.
    pub fn worker(&self, start: Instant) -> WorkerSeries<'_> {
        WorkerSeries {
            sink: self,
            start,
            index: 0,
            current: Bucket::empty(),
            dirty: false,
        }
    }

    fn merge(&self, index: usize, bucket: &Bucket) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        while buckets.len() <= index {
            buckets.push(*Bucket::empty());
        }
        buckets[index].add(bucket);
    }

    /// The series as the report carries it, with exposures per bucket when
    /// the history was checked.
    pub fn finish(self, exposures: Vec<u64>) -> StormSeries {
        let buckets = self.buckets.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut by_op = BTreeMap::new();
        for op in StormOp::ALL {
            let i = op.index();
            if buckets.iter().all(|b| b.ops[i] == 0) {
                continue;
            }
            by_op.insert(
                op.name().to_owned(),
                OpSeries {
                    ops: buckets.iter().map(|b| b.ops[i]).collect(),
                    errors: buckets.iter().map(|b| b.errors[i]).collect(),
                    p50_micros: buckets.iter().map(|b| b.quantile_micros(i, 0.5)).collect(),
                    p99_micros: buckets.iter().map(|b| b.quantile_micros(i, 0.99)).collect(),
                },
            );
        }
        StormSeries {
            bucket_millis: self.bucket.as_millis() as u64,
            by_op,
            exposures,
        }
    }

    /// The bucket width in nanoseconds.
    pub fn bucket_nanos(&self) -> u64 {
        self.bucket.as_nanos() as u64
    }
}

/// One worker's current bucket.
pub struct WorkerSeries<'a> {
    sink: &'a SeriesSink,
    start: Instant,
    index: usize,
    current: Box<Bucket>,
    dirty: bool,
}

impl WorkerSeries<'_> {
    /// Moves to the bucket of `at` (the end of the round about to be
    /// counted), handing the previous one over when it changes.
    pub fn advance(&mut self, at: Instant) {
        let since = at.saturating_duration_since(self.start);
        // Bounded even if a storm overran its duration by far: the tail
        // lands in the last bucket.
        let index = (since.as_nanos() / self.sink.bucket.as_nanos().max(1))
            .min(u128::from(MAX_BUCKETS)) as usize;
        if index != self.index {
            self.flush();
            self.index = index;
        }
    }

    /// Counts one operation into the current bucket.
    pub fn record(&mut self, op: StormOp, ok: bool, latency: Duration) {
        let i = op.index();
        self.current.ops[i] += 1;
        self.current.errors[i] += u64::from(!ok);
        let s = slot(latency.as_nanos() as u64);
        self.current.latency[i][s] = self.current.latency[i][s].saturating_add(1);
        self.dirty = true;
    }

    /// Hands the current bucket over (also when the worker ends).
    pub fn flush(&mut self) {
        if self.dirty {
            self.sink.merge(self.index, &self.current);
            *self.current = *Bucket::empty();
            self.dirty = false;
        }
    }
}

/// Race exposures per bucket: for every key, pairs of concurrent
/// operations of known outcome with at least one DEL or SET, each pair
/// counted in the bucket of its later call. The same counting as the
/// checker's totals (DEL–SCAN pairs aside), but with time attached.
pub fn exposures_by_bucket(history: &History, storm_start: u64, bucket_nanos: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    each_exposure(history, |_, call, pairs| {
        if call >= storm_start {
            let bucket = ((call - storm_start) / bucket_nanos.max(1)).min(MAX_BUCKETS) as usize;
            if out.len() <= bucket {
                out.resize(bucket + 1, 0);
            }
            out[bucket] += pairs;
        }
    });
    out
}

/// Race exposures per key id, counted as [`exposures_by_bucket`] does (for
/// the per-node counts of a Redis Cluster storm).
pub fn exposures_by_key(history: &History) -> Vec<u64> {
    let mut out = vec![0u64; history.keys().len()];
    each_exposure(history, |key, _, pairs| {
        if let Some(n) = out.get_mut(key as usize) {
            *n += pairs;
        }
    });
    out
}

/// Call `f(key, call, pairs)` for every operation that overlaps `pairs`
/// earlier-called operations of its key in a race exposure.
fn each_exposure(history: &History, mut f: impl FnMut(crate::history::KeyId, u64, u64)) {
    let events = history.events();
    let mut order: Vec<u32> = (0..events.len() as u32)
        .filter(|&i| {
            let e = &events[i as usize];
            !e.is_info() && e.op.key().is_some()
        })
        .collect();
    // Events are sorted by call: a stable sort by key keeps each key's calls in order.
    order.sort_by_key(|&i| events[i as usize].op.key());
    // Open operations by return time, and how many of them write: each new
    // call adds its pairs by arithmetic, O(n log n) however many overlap.
    let mut closing: BinaryHeap<Reverse<(u64, bool)>> = BinaryHeap::new();
    let (mut open, mut open_writes) = (0u64, 0u64);
    let mut current_key = None;
    for &i in &order {
        let event = &events[i as usize];
        if event.op.key() != current_key {
            current_key = event.op.key();
            closing.clear();
            (open, open_writes) = (0, 0);
        }
        // Concurrent unless one returned strictly before the other's call.
        while let Some(&Reverse((ret, writes))) = closing.peek() {
            if ret >= event.call {
                break;
            }
            closing.pop();
            open -= 1;
            open_writes -= u64::from(writes);
        }
        let writes = matches!(event.op, Op::Set { .. } | Op::Del { .. });
        let pairs = if writes { open } else { open_writes };
        if pairs > 0
            && let Some(key) = current_key
        {
            f(key, event.call, pairs);
        }
        closing.push(Reverse((event.ret, writes)));
        open += 1;
        open_writes += u64::from(writes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slots_keep_percentiles_within_ten_percent() {
        for nanos in [
            1u64,
            3,
            999,
            1_500,
            20_000,
            123_456,
            9_999_999,
            2_000_000_000,
        ] {
            let middle = slot_middle(slot(nanos));
            let error = (middle - nanos as f64).abs() / nanos as f64;
            assert!(
                error <= 0.125,
                "{nanos}ns lands in a slot centred at {middle}"
            );
        }
        assert!(slot(u64::MAX) < SLOTS);
    }

    #[test]
    fn buckets_follow_the_clock_and_merge_across_workers() {
        let sink = SeriesSink::new(Duration::from_secs(3));
        let start = Instant::now();
        let mut a = sink.worker(start);
        let mut b = sink.worker(start);
        a.advance(start + Duration::from_millis(100));
        a.record(StormOp::Get, true, Duration::from_micros(10));
        a.record(StormOp::Get, false, Duration::from_micros(10));
        b.advance(start + Duration::from_millis(900));
        b.record(StormOp::Get, true, Duration::from_micros(1000));
        a.advance(start + Duration::from_millis(2100));
        a.record(StormOp::Del, true, Duration::from_micros(50));
        a.flush();
        b.flush();
        let series = sink.finish(vec![4, 0, 1]);
        assert_eq!(series.bucket_millis, 1000);
        let get = &series.by_op["get"];
        assert_eq!(get.ops, [3, 0, 0]);
        assert_eq!(get.errors, [1, 0, 0]);
        // Two of three at 10µs: the median is 10µs, the p99 the slow one.
        assert!(
            (9..=12).contains(&get.p50_micros[0]),
            "{:?}",
            get.p50_micros
        );
        assert!(
            (900..=1100).contains(&get.p99_micros[0]),
            "{:?}",
            get.p99_micros
        );
        assert_eq!(get.p50_micros[1], 0);
        assert_eq!(series.by_op["del"].ops, [0, 0, 1]);
        assert_eq!(series.total_ops(), [3, 0, 1]);
        assert_eq!(series.total_errors(), [1, 0, 0]);
        assert!(!series.by_op.contains_key("set"));
    }

    #[test]
    fn exposures_per_bucket_add_up_to_the_checkers_single_key_totals() {
        use crate::history::{Event, ValueId};
        use crate::{CheckOptions, check};
        let second = 1_000_000_000;
        let start = 5 * second;
        let ev = |client, call: u64, ret: u64, op| Event {
            client,
            call: start + call,
            ret: start + ret,
            op,
        };
        let v = |c, n| ValueId::new(c, n);
        let events = vec![
            // Second 0: a SET racing a GET and a DEL on key 0.
            ev(
                1,
                10,
                500,
                Op::Set {
                    key: 0,
                    value: v(1, 1),
                },
            ),
            ev(2, 20, 30, Op::Get { key: 0, read: None }),
            ev(
                3,
                40,
                600,
                Op::Del {
                    key: 0,
                    removed: true,
                },
            ),
            // Second 2: two SETs racing on key 1, and a read that races nothing.
            ev(
                1,
                2 * second,
                2 * second + 100,
                Op::Set {
                    key: 1,
                    value: v(1, 2),
                },
            ),
            ev(
                2,
                2 * second + 50,
                2 * second + 80,
                Op::Set {
                    key: 1,
                    value: v(2, 1),
                },
            ),
            ev(
                3,
                3 * second,
                3 * second + 10,
                Op::Get {
                    key: 1,
                    read: Some(v(1, 2)),
                },
            ),
        ];
        let history =
            History::new(vec![b"a".to_vec(), b"b".to_vec()], start, false, events).unwrap();
        let by_bucket = exposures_by_bucket(&history, start, second);
        // SET–GET and SET–DEL; the GET returned before the DEL was called.
        assert_eq!(by_bucket, [2, 0, 1]);
        let report = check(&history, &CheckOptions::default());
        let single_key: u64 = report
            .exposures
            .iter()
            .filter(|(k, _)| **k != mapchaos_api::ExposureKind::DelScan)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(by_bucket.iter().sum::<u64>(), single_key);
        // By key: key 0 has the SET–GET and SET–DEL pairs, key 1 its two SETs.
        assert_eq!(exposures_by_key(&history), [2, 1]);
    }

    #[test]
    fn long_storms_get_wider_buckets_and_an_overrun_stays_bounded() {
        let sink = SeriesSink::new(Duration::from_secs(3 * 3600));
        assert_eq!(sink.bucket_nanos(), 3_000_000_000);
        let start = Instant::now();
        let mut w = sink.worker(start);
        w.advance(start + Duration::from_secs(1_000_000));
        w.record(StormOp::Set, true, Duration::from_micros(5));
        w.flush();
        let series = sink.finish(Vec::new());
        assert_eq!(series.len(), MAX_BUCKETS as usize + 1);
    }
}
