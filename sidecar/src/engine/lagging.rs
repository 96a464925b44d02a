//! A deliberately broken engine, kept to prove the race checker catches real
//! bugs: writes go to a correct engine, but reads are served from a snapshot
//! of it refreshed every few milliseconds — the read/write-split cache design
//! often recommended for read-heavy maps — so deletes (and writes) become
//! visible late. Never use it for data you care about.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;

use super::{
    Clock, ExpireCondition, Footprint, IncrError, Keyspace, MapEngine, MemoryReport, Millis,
    Pattern, RestoreWrite, ScanPage, SetExpiry, SetOptions, SetOutcome, Ttl, Watcher,
};

/// Reads see the map as it was at the last refresh.
struct Snapshot {
    values: HashMap<Bytes, Bytes>,
    /// Keys ordered by their scan hash, so SCAN cursors work as on the real engine.
    by_hash: Vec<(u64, Bytes)>,
}

impl Snapshot {
    fn empty() -> Self {
        Snapshot {
            values: HashMap::new(),
            by_hash: Vec::new(),
        }
    }

    fn of(engine: &dyn MapEngine) -> Self {
        let keys = engine.keys(&Pattern::new(b"*"));
        let values = engine.mget(&keys);
        let values: HashMap<Bytes, Bytes> = keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        let mut by_hash: Vec<(u64, Bytes)> = values
            .keys()
            .map(|key| (scan_hash(key), key.clone()))
            .collect();
        by_hash.sort_unstable();
        Snapshot { values, by_hash }
    }
}

/// A stable hash in [1, 2^63] so that cursor 0 keeps meaning "start" and "done".
fn scan_hash(key: &[u8]) -> u64 {
    // FNV-1a: stable across snapshots, which is all a cursor needs here.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 1) + 1
}

/// Writes to a correct engine, reads from a lagging snapshot of it.
pub struct LaggingEngine {
    inner: Arc<dyn MapEngine>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl LaggingEngine {
    /// Wrap `inner`; a background thread refreshes the read snapshot every
    /// `refresh` until the engine is dropped.
    pub fn new(inner: Arc<dyn MapEngine>, refresh: Duration) -> Arc<Self> {
        let engine = Arc::new(LaggingEngine {
            snapshot: RwLock::new(Arc::new(Snapshot::of(inner.as_ref()))),
            inner,
        });
        let weak: Weak<LaggingEngine> = Arc::downgrade(&engine);
        std::thread::Builder::new()
            .name("lagging-snapshot".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.refresh();
                    drop(engine);
                    std::thread::sleep(refresh);
                }
            })
            .expect("spawn the snapshot thread");
        engine
    }

    /// Take a new read snapshot now.
    pub fn refresh(&self) {
        let fresh = Arc::new(Snapshot::of(self.inner.as_ref()));
        *self.snapshot.write() = fresh;
    }

    fn read(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }
}

impl MapEngine for LaggingEngine {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read().values.get(key).cloned()
    }

    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>> {
        let snapshot = self.read();
        keys.iter()
            .map(|key| snapshot.values.get(key).cloned())
            .collect()
    }

    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome {
        self.inner.set(key, value, options)
    }

    fn mset(&self, pairs: Vec<(Bytes, Bytes)>) {
        self.inner.mset(pairs)
    }

    fn del(&self, keys: &[Bytes]) -> u64 {
        self.inner.del(keys)
    }

    fn del_one(&self, key: &[u8]) -> bool {
        self.inner.del_one(key)
    }

    fn exists_one(&self, key: &[u8]) -> bool {
        self.read().values.contains_key(key)
    }

    fn exists(&self, keys: &[Bytes]) -> u64 {
        let snapshot = self.read();
        keys.iter()
            .filter(|key| snapshot.values.contains_key(key.as_ref()))
            .count() as u64
    }

    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        self.inner.incr_by(key, delta)
    }

    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool {
        self.inner.expire_at(key, deadline, condition)
    }

    fn ttl(&self, key: &[u8]) -> Ttl {
        self.inner.ttl(key)
    }

    fn persist(&self, key: &[u8]) -> bool {
        self.inner.persist(key)
    }

    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage {
        let snapshot = self.read();
        let start = snapshot.by_hash.partition_point(|(hash, _)| *hash < cursor);
        let mut keys = Vec::new();
        let mut next = 0;
        for (visited, (hash, key)) in snapshot.by_hash[start..].iter().enumerate() {
            if visited >= count.max(1) {
                next = *hash;
                break;
            }
            if pattern.is_none_or(|p| p.matches(key)) {
                keys.push(key.clone());
            }
        }
        ScanPage { cursor: next, keys }
    }

    fn keys(&self, pattern: &Pattern) -> Vec<Bytes> {
        self.read()
            .values
            .keys()
            .filter(|key| pattern.matches(key))
            .cloned()
            .collect()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn clear(&self) {
        self.inner.clear();
        *self.snapshot.write() = Arc::new(Snapshot::empty());
    }

    fn memory(&self) -> MemoryReport {
        self.inner.memory()
    }

    fn watch(&self, watcher: &Arc<Watcher>, key: &[u8]) {
        self.inner.watch(watcher, key)
    }

    fn unwatch(&self, watcher: &Arc<Watcher>, keys: &[Bytes]) {
        self.inner.unwatch(watcher, keys)
    }

    /// On the correct engine: the lag this engine models is in its reads
    /// outside transactions.
    fn transaction(
        &self,
        footprint: Footprint<'_>,
        watch: Option<(&Arc<Watcher>, &[Bytes])>,
        body: &mut dyn FnMut(&dyn Keyspace),
    ) -> bool {
        self.inner.transaction(footprint, watch, body)
    }

    fn restore(
        &self,
        key: Bytes,
        wanted: Option<(Bytes, SetExpiry)>,
        replaceable: &dyn Fn(&[u8]) -> bool,
    ) -> RestoreWrite {
        self.inner.restore(key, wanted, replaceable)
    }

    fn expired_total(&self) -> u64 {
        self.inner.expired_total()
    }

    fn expire_cycle(&self, budget: usize) -> usize {
        self.inner.expire_cycle(budget)
    }

    fn compact(&self) -> u64 {
        self.inner.compact()
    }

    fn clock(&self) -> &Clock {
        self.inner.clock()
    }

    fn name(&self) -> &'static str {
        "lagging"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ShardedEngine;

    fn lagging() -> Arc<LaggingEngine> {
        // A refresh period far longer than any test, so the test decides when
        // the snapshot moves.
        LaggingEngine::new(
            Arc::new(ShardedEngine::with_defaults()),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_deleted_key_stays_readable_until_the_next_refresh() {
        let engine = lagging();
        let key = Bytes::from_static(b"k");
        engine.set(key.clone(), Bytes::from_static(b"v"), SetOptions::default());
        assert_eq!(
            engine.get(b"k"),
            None,
            "a write is invisible before the refresh"
        );
        engine.refresh();
        assert_eq!(engine.get(b"k"), Some(Bytes::from_static(b"v")));
        assert_eq!(engine.del(std::slice::from_ref(&key)), 1);
        assert_eq!(
            engine.get(b"k"),
            Some(Bytes::from_static(b"v")),
            "the stale read"
        );
        assert_eq!(engine.exists(std::slice::from_ref(&key)), 1);
        engine.refresh();
        assert_eq!(engine.get(b"k"), None);
    }

    #[test]
    fn scan_walks_the_snapshot_with_working_cursors() {
        let engine = lagging();
        let keys: Vec<(Bytes, Bytes)> = (0..100)
            .map(|i| (Bytes::from(format!("key:{i}")), Bytes::from_static(b"v")))
            .collect();
        engine.mset(keys.clone());
        engine.refresh();
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = 0;
        loop {
            let page = engine.scan(cursor, Some(&Pattern::new(b"key:*")), 7);
            seen.extend(page.keys);
            cursor = page.cursor;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn the_refresh_thread_ends_with_the_engine() {
        let engine = LaggingEngine::new(
            Arc::new(ShardedEngine::with_defaults()),
            Duration::from_millis(1),
        );
        let weak = Arc::downgrade(&engine);
        drop(engine);
        std::thread::sleep(Duration::from_millis(50));
        assert!(weak.upgrade().is_none());
    }
}
