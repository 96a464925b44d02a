//! The application's own traffic during a storm: its latency, always, and —
//! with `check.includeClients` — its single-key GET, SET, DEL and EXISTS on
//! the stormed keys as history, each connection a client of its own. Keys
//! the application touches in ways the history cannot model are excluded
//! from the check instead, so recording it can never make a correct map look
//! wrong.
//!
//! The runner owns one [`AppTraffic`] per storm and lends it to whatever
//! serves the application (an [`AppTap`], the sidecar's RESP server), which
//! keeps one [`AppLog`] per connection and drops them all when detached.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mapchaos_api::spec::KeySource;

use crate::client::Response;
use crate::history::{ClientId, Event, KeyId, Op, RecordBudget, Recorder, ValueId};
use crate::restore::AppWrite;
use crate::runner::{Keyspace, latency_histogram};

/// The client id of the first application connection; storm workers are
/// 1..=1024 and the preparer 0, so the two never meet.
pub const APP_CLIENT_BASE: ClientId = 1_000_000;

/// Latencies a connection buffers before merging them into the storm's
/// histogram, so the shared histogram is locked once per this many commands.
const LATENCY_BATCH: usize = 256;
/// Shared latency histograms, so connections flushing at once rarely wait.
const LATENCY_SHARDS: usize = 4;
/// Shards of the table of values the application wrote.
const VALUE_SHARDS: usize = 16;
/// The longest latency recorded (1 h), as for storm operations.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

/// Where the application's traffic reaches the map. The runner attaches a
/// storm's [`AppTraffic`] before preparing and detaches it once its workers
/// stopped.
pub trait AppTap: Sync {
    /// From now on, give every connection an [`AppLog`] of `traffic`.
    fn attach(&self, traffic: Arc<AppTraffic>);

    /// Drop every connection's [`AppLog`]. It must be a consistent cut: no
    /// command may run while the logs are taken, so that every command not
    /// recorded takes effect after every recorded one completed.
    fn detach(&self);

    /// Run `f` while no application command runs: every command either
    /// completed (and was noted) before `f`, or starts after it returns.
    fn quiesce(&self, f: &mut dyn FnMut());

    /// Why the application's writes stopped being seen, once they did (a
    /// watch over the network that broke): keys restored since may revert
    /// one.
    fn lost(&self) -> Option<String> {
        None
    }

    /// Whether every application command is timed (the `app` latency row).
    fn times_commands(&self) -> bool {
        true
    }

    /// What a restore through this tap can promise, in a sentence for reports.
    fn restore_guarantee(&self) -> &'static str {
        "the application's commands seen by the map; each batch written while they wait"
    }
}

/// One of the operations the history models, as the application sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppOp<'a> {
    /// `GET key`.
    Get(&'a [u8]),
    /// `SET key value`, without options.
    Set(&'a [u8], &'a [u8]),
    /// `DEL key` or `UNLINK key`, of one key.
    Del(&'a [u8]),
    /// `EXISTS key`, of one key.
    Exists(&'a [u8]),
}

impl<'a> AppOp<'a> {
    /// The key it names.
    pub fn key(&self) -> &'a [u8] {
        match *self {
            AppOp::Get(key) | AppOp::Set(key, _) | AppOp::Del(key) | AppOp::Exists(key) => key,
        }
    }

    /// Whether it can change the key.
    pub fn writes(&self) -> bool {
        matches!(self, AppOp::Set(..) | AppOp::Del(_))
    }
}

/// A modelled operation on a stormed key, between its call and its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppPending {
    key: KeyId,
    kind: PendingKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Get,
    Set(ValueId),
    Del,
    Exists,
}

/// One storm's view of the application's traffic.
pub struct AppTraffic {
    /// The storm's clock origin: app events are timed on the workers' clock.
    clock: Instant,
    /// `check.history && check.includeClients`.
    record: bool,
    source: KeySource,
    /// A Redis glob of the storm's keys, for while the keyspace is not known.
    key_pattern: Vec<u8>,
    budget: Arc<RecordBudget>,
    /// Set once preparation ended; before it the keyspace is being built.
    running: AtomicBool,
    keyspace: OnceLock<Arc<Keyspace>>,
    next_client: AtomicU32,
    next_log: AtomicUsize,
    /// Per key, each value the application wrote and the write's id.
    values: Vec<Mutex<HashMap<KeyId, HashMap<Bytes, ValueId>>>>,
    latency: Vec<Mutex<Histogram<u64>>>,
    handed_in: Mutex<HandedIn>,
    /// Set (in a consistent cut) once the workers stopped: from then on
    /// nothing goes into the history, only writes are noted for the restore.
    closed: AtomicBool,
    /// Whether the application's writes are noted (a storm that restores).
    track_writes: AtomicBool,
    writes: Mutex<NotedWrites>,
}

/// The application's last write to each key, for the restore.
#[derive(Default)]
struct NotedWrites {
    /// Orders the writes (and flushes) in the order connections ran them.
    sequence: u64,
    by_key: HashMap<Bytes, (u64, AppWrite)>,
    /// The last write of every key at once: FLUSHDB/FLUSHALL (`Deleted`),
    /// SWAPDB (`Unknown`).
    flushed: Option<(u64, AppWrite)>,
}

/// What the connections' logs left behind.
#[derive(Default)]
struct HandedIn {
    recorders: Vec<Recorder>,
    excluded: HashSet<KeyId>,
    /// Keys written while preparing, before key ids existed.
    excluded_keys: HashSet<Vec<u8>>,
    everything_excluded: bool,
}

/// What the application's traffic gives the storm's report and history.
pub struct AppFinish {
    /// One recorder per connection that recorded something.
    pub recorders: Vec<Recorder>,
    /// Keys the application touched in ways the history cannot model.
    pub excluded: HashSet<KeyId>,
    /// The latency of every application command while the storm ran (ns).
    pub latency: Histogram<u64>,
}

impl AppTraffic {
    /// The traffic of a storm whose clock started at `clock`, drawing on the
    /// storm's recording `budget`. `record` is whether app operations go into
    /// the history (`check.history && check.includeClients`).
    pub fn new(
        clock: Instant,
        record: bool,
        source: KeySource,
        key_pattern: Vec<u8>,
        budget: Arc<RecordBudget>,
    ) -> Arc<AppTraffic> {
        Arc::new(AppTraffic {
            clock,
            record,
            source,
            key_pattern,
            budget,
            running: AtomicBool::new(false),
            keyspace: OnceLock::new(),
            next_client: AtomicU32::new(APP_CLIENT_BASE),
            next_log: AtomicUsize::new(0),
            values: (0..VALUE_SHARDS).map(|_| Mutex::default()).collect(),
            latency: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
            handed_in: Mutex::default(),
            closed: AtomicBool::new(false),
            track_writes: AtomicBool::new(false),
            writes: Mutex::default(),
        })
    }

    /// Note the application's writes for the restore too; call before
    /// attaching.
    pub fn track_writes(&self) {
        self.track_writes.store(true, Ordering::Release);
    }

    /// Whether the application's writes to the storm's keys must be noted
    /// with [`AppTraffic::note_write`].
    pub fn tracks_writes(&self) -> bool {
        self.track_writes.load(Ordering::Acquire)
    }

    /// The application is about to run a write of `key` (one the storm's
    /// pattern matches) with this effect. Called in the order of the
    /// connection's commands, before each runs.
    pub fn note_write(&self, key: &[u8], write: AppWrite) {
        if !self.tracks_writes() {
            return;
        }
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.sequence += 1;
        let sequence = writes.sequence;
        match writes.by_key.get_mut(key) {
            Some(slot) => *slot = (sequence, write),
            None => {
                writes
                    .by_key
                    .insert(Bytes::copy_from_slice(key), (sequence, write));
            }
        }
    }

    /// The application is about to delete every key (FLUSHDB, FLUSHALL).
    pub fn note_flush(&self) {
        self.note_everything(AppWrite::Deleted);
    }

    /// The application is about to replace every key with contents not
    /// known here (SWAPDB).
    pub fn note_everything_unknown(&self) {
        self.note_everything(AppWrite::Unknown);
    }

    fn note_everything(&self, write: AppWrite) {
        if !self.tracks_writes() {
            return;
        }
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.sequence += 1;
        writes.flushed = Some((writes.sequence, write));
    }

    /// The application's last write to `key` since the storm attached.
    pub(crate) fn app_write(&self, _key_id: KeyId, key: &[u8]) -> Option<AppWrite> {
        let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let noted = writes.by_key.get(key);
        match (noted, &writes.flushed) {
            (Some((at, _)), Some((flushed, all))) if flushed > at => Some(all.clone()),
            (Some((_, write)), _) => Some(write.clone()),
            (None, Some((_, all))) => Some(all.clone()),
            (None, None) => None,
        }
    }

    /// Close the history: call in a consistent cut ([`AppTap::quiesce`])
    /// once the workers stopped. Later commands are not recorded, timed or
    /// excluded; their writes are still noted.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the history is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A Redis glob matching every key the storm may own.
    pub fn key_pattern(&self) -> &[u8] {
        &self.key_pattern
    }

    /// Whether app operations go into the history.
    pub fn records(&self) -> bool {
        self.record
    }

    /// Whether preparation ended and the workers run (or ran).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Preparation ended: from now on operations on `keyspace` are recorded.
    /// Every command that sees this started after the keys were prepared.
    pub(crate) fn start_running(&self, keyspace: Arc<Keyspace>) {
        let _ = self.keyspace.set(keyspace);
        self.running.store(true, Ordering::Release);
    }

    fn nanos(&self, at: Instant) -> u64 {
        // A command that began before the storm's clock can only have taken
        // effect before every recorded operation: time 0 is as good.
        at.saturating_duration_since(self.clock).as_nanos() as u64
    }

    fn key_id(&self, key: &[u8]) -> Option<KeyId> {
        self.keyspace.get()?.index.get(key).copied()
    }

    /// Whether `key` is one of the storm's keys (once they are known).
    pub(crate) fn is_stormed(&self, key: &[u8]) -> bool {
        self.key_id(key).is_some()
    }

    /// The write a read of `value` at `key` saw, when the application made
    /// it: consulted by storm workers for bytes no storm SET wrote.
    pub(crate) fn app_value(&self, key: KeyId, value: &[u8]) -> Option<ValueId> {
        let shard = self.values[key as usize % VALUE_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.get(&key)?.get(value).copied()
    }

    /// Remember that the application's write `id` puts `value` at `key`,
    /// before it takes effect, so any read of those bytes finds it. `false`
    /// when a read of them would be ambiguous (a storm value, the key's
    /// original, or bytes the application already wrote there): the key must
    /// then be excluded.
    fn register(&self, key: KeyId, value: &[u8], id: ValueId) -> bool {
        let keyspace = self.keyspace.get().expect("registering only while running");
        if keyspace.value_id(key, value).is_some() {
            return false;
        }
        let mut shard = self.values[key as usize % VALUE_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let written = shard.entry(key).or_default();
        if written.contains_key(value) {
            return false;
        }
        written.insert(Bytes::copy_from_slice(value), id);
        true
    }

    /// What a read by the application saw: the write, `UNWRITTEN` for bytes
    /// nobody recorded writing, or `None` when such bytes mean the key was
    /// written from outside the history (existing keys) and must be excluded.
    fn resolve(&self, key: KeyId, value: &[u8]) -> Option<ValueId> {
        let keyspace = self.keyspace.get()?;
        match keyspace
            .value_id(key, value)
            .or_else(|| self.app_value(key, value))
        {
            Some(id) => Some(id),
            None if self.source == KeySource::Existing => None,
            None => Some(ValueId::UNWRITTEN),
        }
    }

    fn hand_in(&self, log: &mut AppLog) {
        log.flush_latency();
        let mut handed = self.handed_in.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(recorder) = log.recorder.take()
            && !recorder.is_empty()
        {
            handed.recorders.push(recorder);
        }
        handed.excluded.extend(log.excluded.drain());
        handed.excluded_keys.extend(log.excluded_keys.drain());
        handed.everything_excluded |= log.everything_excluded;
    }

    /// Everything the connections recorded. Call after [`AppTap::detach`].
    pub(crate) fn finish(&self) -> AppFinish {
        let mut handed =
            std::mem::take(&mut *self.handed_in.lock().unwrap_or_else(|e| e.into_inner()));
        let mut excluded = std::mem::take(&mut handed.excluded);
        if let Some(keyspace) = self.keyspace.get() {
            if handed.everything_excluded {
                excluded.extend(0..keyspace.keys.len() as KeyId);
            }
            excluded.extend(
                handed
                    .excluded_keys
                    .iter()
                    .filter_map(|key| keyspace.index.get(key.as_slice()).copied()),
            );
        }
        let mut latency = latency_histogram();
        for shard in &self.latency {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            latency.add(&*shard).expect("histograms share their bounds");
        }
        AppFinish {
            recorders: handed.recorders,
            excluded,
            latency,
        }
    }
}

/// One application connection's share of a storm: its recorder (a client of
/// its own, created at its first recorded operation), its buffered latencies
/// and the keys it made uncheckable. Handed in to the storm when dropped.
///
/// Calls must come in the order the connection's commands ran, each
/// [`AppLog::begin`] (before the command runs) followed by its
/// [`AppLog::end`].
pub struct AppLog {
    traffic: Arc<AppTraffic>,
    recorder: Option<Recorder>,
    client: ClientId,
    sequence: u32,
    latency_shard: usize,
    latencies: Vec<u64>,
    excluded: HashSet<KeyId>,
    excluded_keys: HashSet<Vec<u8>>,
    everything_excluded: bool,
}

impl AppLog {
    /// A new connection's log of `traffic`.
    pub fn new(traffic: Arc<AppTraffic>) -> AppLog {
        let latency_shard = traffic.next_log.fetch_add(1, Ordering::Relaxed) % LATENCY_SHARDS;
        AppLog {
            traffic,
            recorder: None,
            client: 0,
            sequence: 0,
            latency_shard,
            latencies: Vec::new(),
            excluded: HashSet::new(),
            excluded_keys: HashSet::new(),
            everything_excluded: false,
        }
    }

    /// The storm this log feeds.
    pub fn traffic(&self) -> &AppTraffic {
        &self.traffic
    }

    /// One command took `latency`; counted while the storm's workers run.
    pub fn latency(&mut self, latency: Duration) {
        if !self.traffic.is_running() || self.traffic.is_closed() {
            return;
        }
        self.latencies
            .push((latency.as_nanos() as u64).clamp(1, LATENCY_MAX_NS));
        if self.latencies.len() >= LATENCY_BATCH {
            self.flush_latency();
        }
    }

    fn flush_latency(&mut self) {
        if self.latencies.is_empty() {
            return;
        }
        let mut shard = self.traffic.latency[self.latency_shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &nanos in &self.latencies {
            shard.saturating_record(nanos);
        }
        self.latencies.clear();
    }

    /// A command wrote `key` in a way the history cannot model (SET with
    /// options, multi-key commands, INCR, EXPIRE…), or wrote it before the
    /// keyspace was prepared: the key is left out of the check.
    pub fn exclude_key(&mut self, key: &[u8]) {
        if self.traffic.is_closed() {
            return;
        }
        if self.traffic.is_running() {
            if let Some(id) = self.traffic.key_id(key) {
                self.excluded.insert(id);
            }
        } else if !self.excluded_keys.contains(key) {
            self.excluded_keys.insert(key.to_vec());
        }
    }

    /// A command wrote every key (FLUSHDB, FLUSHALL).
    pub fn exclude_everything(&mut self) {
        if self.traffic.is_closed() {
            return;
        }
        self.everything_excluded = true;
    }

    /// A modelled operation is about to run, called at `call`. `Some` when it
    /// goes into the history; then [`AppLog::end`] must follow. A SET's value
    /// is registered here, before it can be read.
    pub fn begin(&mut self, op: AppOp<'_>, call: Instant) -> Option<AppPending> {
        let traffic = self.traffic.clone();
        if !traffic.record || traffic.is_closed() {
            return None;
        }
        if !traffic.is_running() {
            // The keys are still being prepared; what the application writes
            // now would race the preparation itself.
            if op.writes() {
                self.exclude_key(op.key());
            }
            return None;
        }
        let key = traffic.key_id(op.key())?;
        if traffic
            .budget
            .cut()
            .is_some_and(|cut| traffic.nanos(call) >= cut)
        {
            return None;
        }
        let kind = match op {
            AppOp::Get(_) => PendingKind::Get,
            AppOp::Del(_) => PendingKind::Del,
            AppOp::Exists(_) => PendingKind::Exists,
            AppOp::Set(_, value) => {
                let client = self.client_id();
                self.sequence = self.sequence.wrapping_add(1);
                let id = ValueId::new(client, self.sequence);
                if !traffic.register(key, value, id) {
                    self.excluded.insert(key);
                }
                PendingKind::Set(id)
            }
        };
        Some(AppPending { key, kind })
    }

    /// The operation `begin` admitted returned `reply` (`None`: an error) at
    /// `ret`.
    pub fn end(
        &mut self,
        pending: AppPending,
        reply: Option<&Response>,
        call: Instant,
        ret: Instant,
    ) {
        let traffic = self.traffic.clone();
        let key = pending.key;
        let answered = match (pending.kind, reply) {
            (PendingKind::Get, Some(Response::Value(value))) => {
                let read = match value {
                    None => Some(None),
                    Some(bytes) => traffic.resolve(key, bytes).map(Some),
                };
                match read {
                    Some(read) => Some(Op::Get { key, read }),
                    None => {
                        self.excluded.insert(key);
                        Some(Op::Get { key, read: None })
                    }
                }
            }
            (PendingKind::Set(value), Some(Response::Ok)) => Some(Op::Set { key, value }),
            (PendingKind::Del, Some(Response::Count(n))) => Some(Op::Del {
                key,
                removed: *n > 0,
            }),
            (PendingKind::Exists, Some(Response::Count(n))) => Some(Op::Exists {
                key,
                present: *n > 0,
            }),
            _ => None,
        };
        let (ret, op) = match answered {
            Some(op) => (traffic.nanos(ret), op),
            // No usable answer: it may or may not have taken effect.
            None => (
                Event::NO_RETURN,
                match pending.kind {
                    PendingKind::Get => Op::Get { key, read: None },
                    PendingKind::Set(value) => Op::Set { key, value },
                    PendingKind::Del => Op::Del {
                        key,
                        removed: false,
                    },
                    PendingKind::Exists => Op::Exists {
                        key,
                        present: false,
                    },
                },
            ),
        };
        self.client_id();
        let recorder = self
            .recorder
            .as_mut()
            .expect("client_id creates the recorder");
        recorder.record(traffic.nanos(call), ret, op);
    }

    /// This connection's client id, taken at its first recorded operation.
    fn client_id(&mut self) -> ClientId {
        if self.recorder.is_none() {
            self.client = self.traffic.next_client.fetch_add(1, Ordering::Relaxed);
            self.recorder = Some(Recorder::new(self.client, self.traffic.budget.clone()));
        }
        self.client
    }
}

impl Drop for AppLog {
    fn drop(&mut self) {
        let traffic = self.traffic.clone();
        traffic.hand_in(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::History;
    use crate::workload::encode_value;

    fn keyspace(keys: &[&str], originals: Option<&[&str]>) -> Arc<Keyspace> {
        let mut keyspace = Keyspace::new(
            keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            b"k*".to_vec(),
        );
        if let Some(originals) = originals {
            keyspace.originals = originals
                .iter()
                .map(|v| Some((Bytes::copy_from_slice(v.as_bytes()), None)))
                .collect();
        }
        Arc::new(keyspace)
    }

    fn traffic(record: bool, source: KeySource) -> (Arc<AppTraffic>, Instant) {
        let clock = Instant::now();
        let traffic = AppTraffic::new(
            clock,
            record,
            source,
            b"k*".to_vec(),
            RecordBudget::new(1_000),
        );
        (traffic, clock)
    }

    fn running(record: bool) -> (Arc<AppTraffic>, Instant) {
        let (traffic, clock) = traffic(record, KeySource::Synthetic);
        traffic.start_running(keyspace(&["k0", "k1", "k2"], None));
        (traffic, clock)
    }

    /// Run one modelled operation on `log`, as the server would.
    fn run(log: &mut AppLog, op: AppOp<'_>, reply: Response) -> Option<()> {
        let call = Instant::now();
        let pending = log.begin(op, call)?;
        log.end(pending, Some(&reply), call, Instant::now());
        Some(())
    }

    /// What the traffic handed in: its exclusions and its events by call.
    fn finished(traffic: &AppTraffic) -> (HashSet<KeyId>, Vec<Event>) {
        let finish = traffic.finish();
        let history = History::from_recorders(
            vec![b"k0".to_vec(), b"k1".to_vec(), b"k2".to_vec()],
            0,
            &RecordBudget::new(1_000),
            finish.recorders,
        )
        .unwrap();
        (finish.excluded, history.events().to_vec())
    }

    #[test]
    fn each_connection_records_as_its_own_client_and_app_values_resolve_for_everyone() {
        let (traffic, _) = running(true);
        let mut writer = AppLog::new(traffic.clone());
        let mut reader = AppLog::new(traffic.clone());
        run(&mut writer, AppOp::Set(b"k0", b"hello"), Response::Ok).unwrap();
        let written = ValueId::new(APP_CLIENT_BASE, 1);
        // A storm worker reading those bytes finds the app's write.
        assert_eq!(traffic.app_value(0, b"hello"), Some(written));
        assert_eq!(traffic.app_value(1, b"hello"), None, "values are per key");
        run(
            &mut reader,
            AppOp::Get(b"k0"),
            Response::Value(Some(Bytes::from_static(b"hello"))),
        )
        .unwrap();
        run(&mut reader, AppOp::Del(b"k0"), Response::Count(1)).unwrap();
        run(&mut reader, AppOp::Exists(b"k0"), Response::Count(0)).unwrap();
        assert!(
            run(&mut reader, AppOp::Get(b"other"), Response::Value(None)).is_none(),
            "keys outside the storm are not recorded"
        );
        drop((writer, reader));
        let (excluded, events) = finished(&traffic);
        assert!(excluded.is_empty());
        let ops: Vec<(ClientId, Op)> = events.iter().map(|e| (e.client, e.op.clone())).collect();
        assert_eq!(
            ops,
            [
                (
                    APP_CLIENT_BASE,
                    Op::Set {
                        key: 0,
                        value: written
                    }
                ),
                (
                    APP_CLIENT_BASE + 1,
                    Op::Get {
                        key: 0,
                        read: Some(written)
                    }
                ),
                (
                    APP_CLIENT_BASE + 1,
                    Op::Del {
                        key: 0,
                        removed: true
                    }
                ),
                (
                    APP_CLIENT_BASE + 1,
                    Op::Exists {
                        key: 0,
                        present: false
                    }
                ),
            ]
        );
        assert!(events.iter().all(|e| !e.is_info() && e.call <= e.ret));
    }

    #[test]
    fn the_same_bytes_written_twice_to_a_key_exclude_it() {
        let (traffic, _) = running(true);
        let mut a = AppLog::new(traffic.clone());
        let mut b = AppLog::new(traffic.clone());
        run(&mut a, AppOp::Set(b"k0", b"1"), Response::Ok).unwrap();
        run(&mut b, AppOp::Set(b"k0", b"1"), Response::Ok).unwrap();
        // The same bytes on another key are no ambiguity.
        run(&mut b, AppOp::Set(b"k1", b"1"), Response::Ok).unwrap();
        drop((a, b));
        let (excluded, events) = finished(&traffic);
        assert_eq!(excluded, HashSet::from([0]));
        // Every SET still carries a value unique in the history.
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn bytes_a_read_could_take_for_a_storm_or_original_value_exclude_the_key() {
        let (traffic, _) = traffic(true, KeySource::Existing);
        traffic.start_running(keyspace(&["k0", "k1", "k2"], Some(&["o0", "o1", "o2"])));
        let mut log = AppLog::new(traffic.clone());
        let storm_value = encode_value(ValueId::new(3, 9).0, 16);
        run(&mut log, AppOp::Set(b"k0", &storm_value), Response::Ok).unwrap();
        run(&mut log, AppOp::Set(b"k1", b"o1"), Response::Ok).unwrap();
        run(&mut log, AppOp::Set(b"k2", b"o1"), Response::Ok).unwrap();
        drop(log);
        assert_eq!(traffic.finish().excluded, HashSet::from([0, 1]));
    }

    #[test]
    fn bytes_nobody_recorded_are_phantoms_on_synthetic_keys_and_exclusions_on_existing_ones() {
        let (synthetic, _) = running(true);
        let mut log = AppLog::new(synthetic.clone());
        let junk = Response::Value(Some(Bytes::from_static(b"junk")));
        run(&mut log, AppOp::Get(b"k1"), junk.clone()).unwrap();
        drop(log);
        let (excluded, events) = finished(&synthetic);
        assert!(excluded.is_empty());
        assert_eq!(
            events[0].op,
            Op::Get {
                key: 1,
                read: Some(ValueId::UNWRITTEN)
            }
        );

        let (existing, _) = traffic(true, KeySource::Existing);
        existing.start_running(keyspace(&["k0", "k1", "k2"], Some(&["o0", "o1", "o2"])));
        let mut log = AppLog::new(existing.clone());
        run(&mut log, AppOp::Get(b"k1"), junk).unwrap();
        run(
            &mut log,
            AppOp::Get(b"k2"),
            Response::Value(Some(Bytes::from_static(b"o2"))),
        )
        .unwrap();
        drop(log);
        let (excluded, events) = finished(&existing);
        assert_eq!(excluded, HashSet::from([1]));
        assert_eq!(
            events[1].op,
            Op::Get {
                key: 2,
                read: Some(ValueId::new(0, 2))
            }
        );
    }

    #[test]
    fn writes_while_preparing_exclude_their_keys_once_the_keyspace_is_known() {
        let (traffic, _) = traffic(true, KeySource::Synthetic);
        let mut log = AppLog::new(traffic.clone());
        assert!(run(&mut log, AppOp::Set(b"k2", b"v"), Response::Ok).is_none());
        assert!(run(&mut log, AppOp::Get(b"k1"), Response::Value(None)).is_none());
        log.exclude_key(b"not-stormed");
        log.latency(Duration::from_micros(5));
        traffic.start_running(keyspace(&["k0", "k1", "k2"], None));
        log.exclude_key(b"k0");
        drop(log);
        let finish = traffic.finish();
        assert_eq!(finish.excluded, HashSet::from([0, 2]));
        assert!(
            finish.recorders.is_empty(),
            "nothing is recorded while preparing"
        );
        assert!(finish.latency.is_empty(), "latency counts from the run on");
    }

    #[test]
    fn flushing_everything_excludes_every_key() {
        let (traffic, _) = running(true);
        let mut log = AppLog::new(traffic.clone());
        log.exclude_everything();
        drop(log);
        assert_eq!(traffic.finish().excluded, HashSet::from([0, 1, 2]));
    }

    #[test]
    fn without_include_clients_nothing_is_recorded_but_written_keys_are_left_out() {
        let (traffic, _) = running(false);
        let mut log = AppLog::new(traffic.clone());
        assert!(run(&mut log, AppOp::Set(b"k0", b"v"), Response::Ok).is_none());
        log.exclude_key(b"k1");
        for micros in 1..=(LATENCY_BATCH as u64 + 10) {
            log.latency(Duration::from_micros(micros));
        }
        drop(log);
        let finish = traffic.finish();
        assert!(finish.recorders.is_empty());
        // An unrecorded write leaves the key's history incomplete.
        assert!(finish.excluded.contains(&1), "{:?}", finish.excluded);
        assert_eq!(finish.latency.len(), LATENCY_BATCH as u64 + 10);
        assert_eq!(traffic.app_value(0, b"v"), None);

        let (traffic, _) = running(false);
        let mut log = AppLog::new(traffic.clone());
        log.exclude_everything();
        drop(log);
        assert_eq!(
            traffic.finish().excluded.len(),
            3,
            "FLUSHALL leaves out every key"
        );
    }

    #[test]
    fn an_operation_without_a_usable_reply_is_recorded_as_unknown() {
        let (traffic, _) = running(true);
        let mut log = AppLog::new(traffic.clone());
        let call = Instant::now();
        let pending = log.begin(AppOp::Set(b"k0", b"v"), call).unwrap();
        log.end(pending, None, call, Instant::now());
        drop(log);
        let (_, events) = finished(&traffic);
        assert!(events[0].is_info());
    }
}
