//! The online checker (CHECKER.md, "The whole storm, not a prefix"): the
//! storm's workers feed each operation as it returns, and each key's
//! operations are judged in windows as soon as nothing still to come can be
//! ordered among them, then dropped.
//!
//! A window of a key closes at a cut: an instant by which every operation of
//! it called earlier has returned and that every operation called later
//! follows (no operation is in flight across it), and before which every
//! worker has fed all it called (its watermark). A closed window is checked
//! from every state the earlier windows may have left the key in, and only
//! the states it may leave are kept: the history is linearizable exactly
//! when every window is legal from some state the previous one allows, since
//! every operation of a window precedes every operation of the next.
//! Exposures are counted per window (no concurrent pair spans a cut).
//!
//! Memory is bounded by the open windows and the keyspace, not by the
//! storm's length: per key its open window (at most [`MAX_WINDOW`]
//! operations, past which the key is `unknown`), at most [`frontier::MAX_FRONTIER`]
//! possible states and [`frontier::MAX_PENDING`] operations of unknown
//! outcome, and a bounded share of its operations kept to name an anomaly
//! (see [`key::KeyState`]: when a key with one possible state outgrows it,
//! what is kept is replaced by the one operation that left that state).
//! SCANs: a SCAN is judged once every worker's watermark passes its return;
//! until then each key keeps its certain present/absent intervals that end
//! after the earliest SCAN still to be judged, and the DELs that may overlap
//! it, so what SCANs need is bounded by the SCANs in flight.

mod frontier;
mod key;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mapchaos_api::{AnomalyKind, CheckReport, ExposureKind, KeyVerdictCounts, Witness};

use super::exposure::KeyExposure;
use super::{CheckOptions, KeyVerdict, search};
use crate::history::{ClientId, Event, History, KeyId, Op};
use key::{Health, KeyState, Limits};

/// Operations one open window may hold before its key is given up.
pub const MAX_WINDOW: usize = 100_000;
/// Operations kept in all (for naming anomalies as the offline checker
/// does) before keys start anchoring: shared out over the keyspace.
const RETAIN_TOTAL: usize = 1 << 18;
/// Bounds of the per-key share of [`RETAIN_TOTAL`].
const RETAIN_MIN: usize = 64;
const RETAIN_MAX: usize = 1 << 16;
/// Operations a worker buffers before it sends them.
const FLUSH_OPS: usize = 512;
/// The longest a worker holds operations (ns), and how often an idle one
/// still reports its watermark.
const FLUSH_NS: u64 = 2_000_000;
const HEARTBEAT_NS: u64 = 20_000_000;
/// Batches in flight to one shard before workers wait for it.
const CHANNEL_BOUND: usize = 256;

/// How an online check runs.
#[derive(Clone, Debug)]
pub struct OnlineOptions {
    /// Threads checking (keys are split among them by id).
    pub threads: usize,
    /// What the offline search may spend on one key when naming an
    /// illegal key's anomalies.
    pub per_key_budget: Duration,
    /// How many witnesses the report keeps.
    pub max_witnesses: usize,
    /// When set, the final judging stops soon after: undecided keys are unknown.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Keys found anomalous so far, counted as they are found.
    pub anomalies: Arc<AtomicU64>,
    /// Operations kept in all for naming anomalies (see [`RETAIN_TOTAL`]).
    pub retain_total: usize,
    /// The most memory the searches naming anomalies may hold at once,
    /// shared by the threads (`None`: 1 GiB per thread).
    pub memory: Option<usize>,
    /// Nodes one window's search for every state it may leave may visit;
    /// past it the window is decided one end state at a time.
    pub window_nodes: usize,
}

impl OnlineOptions {
    /// The options of an offline check, for the same judgement online.
    pub fn from_check(options: &CheckOptions) -> OnlineOptions {
        OnlineOptions {
            threads: options.threads,
            per_key_budget: options.per_key_budget,
            max_witnesses: options.max_witnesses,
            cancel: options.cancel.clone(),
            anomalies: Arc::new(AtomicU64::new(0)),
            retain_total: RETAIN_TOTAL,
            memory: options.memory,
            window_nodes: frontier::MAX_NODES,
        }
    }
}

/// A batch of one worker's operations for one shard.
struct Batch {
    client: ClientId,
    events: Vec<Event>,
    scans: Vec<Arc<Event>>,
    /// Every operation this worker feeds later is called at or after this.
    watermark: u64,
}

/// A running online check.
pub struct OnlineChecker {
    senders: Vec<SyncSender<Batch>>,
    shards: Vec<JoinHandle<ShardResult>>,
    anomalies: Arc<AtomicU64>,
    max_witnesses: usize,
}

/// One worker's way into the online checker. Operations must be fed in the
/// order the worker issued them; dropping it says the worker is done.
pub struct Feeder {
    client: ClientId,
    senders: Vec<SyncSender<Batch>>,
    events: Vec<Vec<Event>>,
    scans: Vec<Arc<Event>>,
    pending: usize,
    last_flush: u64,
}

impl Feeder {
    /// Feeds one returned (or failed: `ret` = [`Event::NO_RETURN`]) operation.
    pub fn feed(&mut self, call: u64, ret: u64, op: &Op) {
        let event = Event {
            client: self.client,
            call,
            ret,
            op: op.clone(),
        };
        match op.key() {
            Some(key) => self.events[key as usize % self.senders.len()].push(event),
            None => self.scans.push(Arc::new(event)),
        }
        self.pending += 1;
        if self.pending >= FLUSH_OPS {
            // Operations of one pipelined round share their call.
            self.flush(call);
        }
    }

    /// Sends what is buffered if it has waited long enough; `now` bounds the
    /// call of every operation this worker has still to feed.
    pub fn tick(&mut self, now: u64) {
        let waited = now.saturating_sub(self.last_flush);
        if (self.pending > 0 && waited >= FLUSH_NS) || waited >= HEARTBEAT_NS {
            self.flush(now);
        }
    }

    fn flush(&mut self, watermark: u64) {
        for (shard, sender) in self.senders.iter().enumerate() {
            let batch = Batch {
                client: self.client,
                events: std::mem::take(&mut self.events[shard]),
                scans: self.scans.clone(),
                watermark,
            };
            // A checker that is gone (finished early) needs nothing more.
            let _ = sender.send(batch);
        }
        self.scans.clear();
        self.pending = 0;
        self.last_flush = watermark;
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.flush(u64::MAX);
    }
}

impl OnlineChecker {
    /// Starts checking a storm over `keys` whose clients are `0..clients`;
    /// `start` is the storm's start instant (the origin of witness times).
    pub fn start(
        keys: Arc<Vec<Vec<u8>>>,
        start: u64,
        clients: u32,
        options: &OnlineOptions,
    ) -> OnlineChecker {
        let threads = options.threads.clamp(1, keys.len().max(1));
        let retain = (options.retain_total / keys.len().max(1)).clamp(RETAIN_MIN, RETAIN_MAX);
        let mut senders = Vec::with_capacity(threads);
        let mut shards = Vec::with_capacity(threads);
        for index in 0..threads {
            let (sender, receiver) = sync_channel(CHANNEL_BOUND);
            senders.push(sender);
            let shard = Shard {
                index,
                count: threads,
                keys: keys.clone(),
                states: HashMap::new(),
                watermarks: vec![0; clients as usize],
                scans: Vec::new(),
                dirty: Vec::new(),
                limits: Limits {
                    retain,
                    max_window: MAX_WINDOW,
                    window_nodes: options.window_nodes,
                    per_key_budget: options.per_key_budget,
                    memo_bytes: options
                        .memory
                        .map_or(search::MAX_MEMO_BYTES, |memory| memory / threads),
                    start,
                },
                anomalies: options.anomalies.clone(),
                max_witnesses: options.max_witnesses,
                scan_ops: 0,
                scan_known: 0,
                last_watermark: 0,
                fresh: false,
            };
            let cancel = options.cancel.clone();
            shards.push(
                thread::Builder::new()
                    .name(format!("check-{index}"))
                    .spawn(move || {
                        search::watch_cancel(cancel);
                        shard.run(receiver)
                    })
                    .expect("spawn an online checker thread"),
            );
        }
        OnlineChecker {
            senders,
            shards,
            anomalies: options.anomalies.clone(),
            max_witnesses: options.max_witnesses,
        }
    }

    /// The feeder of client `client` (one per client, on its thread).
    pub fn feeder(&self, client: ClientId) -> Feeder {
        Feeder {
            client,
            senders: self.senders.clone(),
            events: self.senders.iter().map(|_| Vec::new()).collect(),
            scans: Vec::new(),
            pending: 0,
            last_flush: 0,
        }
    }

    /// Keys found anomalous so far.
    pub fn anomalous_keys(&self) -> u64 {
        self.anomalies.load(Ordering::Relaxed)
    }

    /// Waits for every feeder to be dropped, judges what is left and
    /// reports, leaving out the keys in `excluded` as the offline check of
    /// a history without them would.
    pub fn finish(self, excluded: &HashSet<KeyId>) -> CheckReport {
        drop(self.senders);
        let results: Vec<ShardResult> = self
            .shards
            .into_iter()
            .map(|h| h.join().expect("an online checker thread panicked"))
            .collect();
        let mut exposures: std::collections::BTreeMap<ExposureKind, u64> =
            ExposureKind::ALL.iter().map(|&k| (k, 0)).collect();
        let mut anomalies: std::collections::BTreeMap<AnomalyKind, u64> =
            AnomalyKind::ALL.iter().map(|&k| (k, 0)).collect();
        let mut counts = KeyVerdictCounts::default();
        let mut witnesses: Vec<(KeyId, AnomalyKind, Witness)> = Vec::new();
        let (mut max_overlap, mut ops, mut known, mut duplicates, mut del_scan) = (0, 0, 0, 0, 0);
        let mut unknown_reasons: Vec<String> = Vec::new();
        for result in results {
            ops += result.scan_ops;
            known += result.scan_known;
            for k in result.keys {
                if excluded.contains(&k.key) {
                    continue;
                }
                for (kind, n) in k.exposure.by_kind() {
                    *exposures.entry(kind).or_default() += n;
                }
                max_overlap = max_overlap.max(k.exposure.max_overlap);
                del_scan += k.del_scan;
                duplicates += k.duplicates;
                ops += k.ops;
                known += k.known;
                for &kind in &k.judged.kinds {
                    *anomalies.entry(kind).or_default() += 1;
                }
                match k.judged.verdict {
                    Some(KeyVerdict::Ok) => counts.ok += 1,
                    Some(KeyVerdict::Illegal) => counts.illegal += 1,
                    Some(KeyVerdict::Unknown) => counts.unknown += 1,
                    None => {}
                }
                if let Some(reason) = k.unknown_reason
                    && !unknown_reasons.contains(&reason)
                    && unknown_reasons.len() < 3
                {
                    unknown_reasons.push(reason);
                }
                witnesses.extend(
                    k.judged
                        .witnesses
                        .into_iter()
                        .map(|(kind, w)| (k.key, kind, w)),
                );
            }
        }
        *exposures.entry(ExposureKind::DelScan).or_default() += del_scan;
        witnesses.sort_by_key(|(key, kind, _)| (*key, *kind));
        witnesses.truncate(self.max_witnesses);
        let verdict = CheckReport::verdict_from(&exposures, &anomalies, &counts, known);
        CheckReport {
            exposures,
            max_overlap,
            anomalies,
            witnesses: witnesses.into_iter().map(|(_, _, w)| w).collect(),
            keys: counts,
            ops_checked: ops,
            ops_known: known,
            truncated: false,
            scan_duplicates: duplicates,
            verdict,
            // Its findings are not judged for an open world: never proof there.
            open_world_anomalies: 0,
            online: true,
            unknown_reasons,
        }
    }
}

/// One key's part of the report.
struct KeyResult {
    key: KeyId,
    judged: key::Judged,
    exposure: KeyExposure,
    del_scan: u64,
    duplicates: u64,
    ops: u64,
    known: u64,
    unknown_reason: Option<String>,
}

struct ShardResult {
    keys: Vec<KeyResult>,
    scan_ops: u64,
    scan_known: u64,
}

/// The keys `key % count == index`, checked on one thread.
struct Shard {
    index: usize,
    count: usize,
    keys: Arc<Vec<Vec<u8>>>,
    states: HashMap<KeyId, KeyState>,
    watermarks: Vec<u64>,
    /// Completed SCANs not judged yet, in call order.
    scans: Vec<Arc<Event>>,
    /// Keys with operations in an open window.
    dirty: Vec<KeyId>,
    limits: Limits,
    anomalies: Arc<AtomicU64>,
    max_witnesses: usize,
    scan_ops: u64,
    scan_known: u64,
    last_watermark: u64,
    fresh: bool,
}

impl Shard {
    fn run(mut self, receiver: Receiver<Batch>) -> ShardResult {
        loop {
            match receiver.recv_timeout(Duration::from_millis(20)) {
                Ok(batch) => {
                    self.take(batch);
                    for batch in receiver.try_iter().take(CHANNEL_BOUND) {
                        self.take(batch);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.progress();
        }
        // Every feeder is gone: everything is fed.
        self.watermarks.iter_mut().for_each(|w| *w = u64::MAX);
        self.fresh = true;
        self.progress();
        self.finish()
    }

    fn take(&mut self, batch: Batch) {
        if let Some(w) = self.watermarks.get_mut(batch.client as usize) {
            *w = (*w).max(batch.watermark);
        }
        for event in batch.events {
            let Some(key) = event.op.key() else { continue };
            let state = self.states.entry(key).or_insert_with(KeyState::new);
            if state.buf.is_empty() {
                self.dirty.push(key);
            }
            state.buf.push(event);
            self.fresh = true;
        }
        for scan in batch.scans {
            if self.index == 0 {
                self.scan_ops += 1;
                self.scan_known += u64::from(!scan.is_info());
            }
            // A SCAN that did not complete promises nothing.
            if !scan.is_info() {
                let at = self
                    .scans
                    .partition_point(|s| (s.call, s.client) <= (scan.call, scan.client));
                self.scans.insert(at, scan);
            }
            self.fresh = true;
        }
    }

    fn progress(&mut self) {
        let watermark = self.watermarks.iter().copied().min().unwrap_or(u64::MAX);
        if !self.fresh && watermark == self.last_watermark {
            return;
        }
        self.fresh = false;
        self.last_watermark = watermark;
        let prune = self
            .scans
            .first()
            .map_or(watermark, |s| s.call.min(watermark));
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(state) = self.states.get_mut(&key) else {
                continue;
            };
            if state.close_windows(watermark, prune, &self.limits) && !state.counted {
                state.counted = true;
                self.anomalies.fetch_add(1, Ordering::Relaxed);
            }
            if !state.buf.is_empty() {
                self.dirty.push(key);
            }
        }
        // In call order, each only once the ones called before it are judged.
        let mut judged = 0;
        while judged < self.scans.len() && self.scans[judged].ret < watermark {
            let scan = self.scans[judged].clone();
            self.judge_scan(&scan);
            judged += 1;
        }
        self.scans.drain(..judged);
    }

    fn judge_scan(&mut self, scan: &Event) {
        let Op::Scan { found } = &scan.op else { return };
        let mut counts: HashMap<KeyId, usize> = HashMap::new();
        for &k in found.iter() {
            if k as usize % self.count == self.index {
                *counts.entry(k).or_default() += 1;
            }
        }
        let start = self.limits.start;
        let mut key = self.index;
        while key < self.keys.len() {
            let k = key as KeyId;
            let count = counts.get(&k).copied().unwrap_or(0);
            // A key never touched is absent throughout: only a SCAN that
            // returned it needs its state.
            let state = if count > 0 {
                Some(self.states.entry(k).or_insert_with(KeyState::new))
            } else {
                self.states.get_mut(&k)
            };
            if let Some(state) = state
                && state.judge_scan(k, scan, count, start)
            {
                self.anomalies.fetch_add(1, Ordering::Relaxed);
            }
            key += self.count;
        }
    }

    fn finish(mut self) -> ShardResult {
        let mut keys: Vec<KeyId> = self.states.keys().copied().collect();
        keys.sort_unstable();
        let mut results = Vec::with_capacity(keys.len());
        let mut witnessed = 0;
        for key in keys {
            let Some(mut state) = self.states.remove(&key) else {
                continue;
            };
            let witnesses = witnessed < self.max_witnesses;
            let bytes = self
                .keys
                .get(key as usize)
                .map_or(&[][..], |k| k.as_slice());
            let judged = state.finish(bytes, &self.limits, witnesses);
            witnessed += judged.witnesses.len();
            let unknown_reason = match &state.health {
                Health::Unknown(reason) => Some(reason.clone()),
                _ => None,
            };
            results.push(KeyResult {
                key,
                judged,
                exposure: state.exposure.clone(),
                del_scan: state.del_scan,
                duplicates: state.scan_duplicates,
                ops: state.ops,
                known: state.known,
                unknown_reason,
            });
        }
        ShardResult {
            keys: results,
            scan_ops: self.scan_ops,
            scan_known: self.scan_known,
        }
    }
}

/// Checks a recorded history online, feeding each client's operations as
/// they returned (each with its worker's watermark), the way a storm's
/// workers do: for tests and benchmarks of the online path against
/// [`super::check`].
pub fn check_online(history: &History, options: &CheckOptions) -> CheckReport {
    check_online_with(history, &OnlineOptions::from_check(options))
}

/// [`check_online`] with online options.
pub fn check_online_with(history: &History, options: &OnlineOptions) -> CheckReport {
    let clients = history
        .events()
        .iter()
        .map(|e| e.client + 1)
        .max()
        .unwrap_or(1);
    let checker = OnlineChecker::start(
        Arc::new(history.keys().to_vec()),
        history.start(),
        clients,
        options,
    );
    // Each client's events in call order, replayed in the order they
    // returned (an unknown one as soon as it was called).
    let mut by_client: Vec<Vec<&Event>> = vec![Vec::new(); clients as usize];
    for event in history.events() {
        by_client[event.client as usize].push(event);
    }
    let mut order: Vec<(u64, ClientId, usize)> = Vec::new();
    for (client, events) in by_client.iter().enumerate() {
        for (i, e) in events.iter().enumerate() {
            let done = if e.is_info() { e.call } else { e.ret };
            order.push((done, client as ClientId, i));
        }
    }
    order.sort_unstable();
    let mut unfed: Vec<std::collections::BTreeSet<(u64, usize)>> = by_client
        .iter()
        .map(|events| {
            events
                .iter()
                .enumerate()
                .map(|(i, e)| (e.call, i))
                .collect()
        })
        .collect();
    let mut feeders: Vec<Option<Feeder>> = (0..clients).map(|c| Some(checker.feeder(c))).collect();
    for (_, client, i) in order {
        let e = by_client[client as usize][i];
        let Some(feeder) = feeders[client as usize].as_mut() else {
            continue;
        };
        feeder.feed(e.call, e.ret, &e.op);
        let left = &mut unfed[client as usize];
        left.remove(&(e.call, i));
        // Everything this client feeds later was called at or after this.
        match left.first() {
            Some(&(call, _)) => feeder.flush(call),
            None => feeders[client as usize] = None,
        }
    }
    drop(feeders);
    checker.finish(&HashSet::new())
}

#[cfg(test)]
mod tests;
