//! The shards a transaction holds, seen as a [`Keyspace`]: each command of
//! an `EXEC` runs on these write guards with the same per-shard logic it
//! uses on its own, and no other operation can interleave.

use std::cell::{RefCell, RefMut};

use bytes::Bytes;
use parking_lot::RwLockWriteGuard;

use super::{
    Clock, ExpireCondition, IncrError, KeyExpiry, Keyspace, MemoryReport, Millis, Pattern,
    ScanPage, SetOptions, SetOutcome, Shard, ShardedEngine, Ttl, memory_of,
};

/// Write locks on some shards of one engine, taken in ascending order.
pub(super) struct Held<'e> {
    engine: &'e ShardedEngine,
    /// Indexed by shard; `None` for shards the transaction does not touch.
    guards: Vec<Option<RefCell<RwLockWriteGuard<'e, Shard>>>>,
}

impl<'e> Held<'e> {
    /// Lock `shards`, which must be sorted and without repeats.
    pub(super) fn lock(engine: &'e ShardedEngine, shards: &[usize]) -> Self {
        let mut guards: Vec<_> = (0..engine.shards.len()).map(|_| None).collect();
        for &i in shards {
            guards[i] = Some(RefCell::new(engine.shards[i].write()));
        }
        Held { engine, guards }
    }

    /// The shard at `i`. The transaction's footprint named every key its
    /// commands reach, so a shard that is not held is a bug in that
    /// footprint; taking its lock now could deadlock, so it panics instead.
    pub(super) fn shard(&self, i: usize) -> RefMut<'_, Shard> {
        let cell = self.guards[i]
            .as_ref()
            .unwrap_or_else(|| panic!("shard {i} is outside the transaction's footprint"));
        RefMut::map(cell.borrow_mut(), |guard| &mut **guard)
    }

    /// Every shard, for the commands that reach the whole keyspace.
    fn all(&self) -> Vec<RefMut<'_, Shard>> {
        (0..self.guards.len()).map(|i| self.shard(i)).collect()
    }

    fn now(&self) -> Millis {
        self.engine.clock.now()
    }

    /// The shard of `key` and the key's position in it.
    fn slot(&self, key: &[u8]) -> (RefMut<'_, Shard>, u64) {
        let slot = self.engine.locate(key);
        (self.shard(slot.shard), slot.h)
    }
}

impl Keyspace for Held<'_> {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        let now = self.now();
        let (shard, h) = self.slot(key);
        shard
            .live(h, key, now)
            .map(|entry| Bytes::copy_from_slice(&entry.value))
    }

    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome {
        let now = self.now();
        let (mut shard, h) = self.slot(&key);
        shard.set_entry(h, &key, &value, options, now)
    }

    fn mset(&self, pairs: Vec<(Bytes, Bytes)>) {
        let now = self.now();
        for (key, value) in &pairs {
            let (mut shard, h) = self.slot(key);
            shard.reap(h, key, now);
            shard.put(h, key, value, None);
        }
    }

    fn del(&self, keys: &[Bytes]) -> u64 {
        let now = self.now();
        keys.iter()
            .map(|key| {
                let (mut shard, h) = self.slot(key);
                shard.reap(h, key, now);
                u64::from(shard.remove(h, key).is_some())
            })
            .sum()
    }

    fn exists(&self, keys: &[Bytes]) -> u64 {
        let now = self.now();
        keys.iter()
            .filter(|key| {
                let (shard, h) = self.slot(key);
                shard.live(h, key, now).is_some()
            })
            .count() as u64
    }

    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let now = self.now();
        let (mut shard, h) = self.slot(key);
        shard.incr_entry(h, key, delta, now)
    }

    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool {
        let now = self.now();
        let (mut shard, h) = self.slot(key);
        shard.expire_entry(h, key, deadline, condition, now)
    }

    fn ttl(&self, key: &[u8]) -> Ttl {
        let now = self.now();
        let (shard, h) = self.slot(key);
        shard.ttl_of(h, key, now)
    }

    fn expiry(&self, key: &[u8]) -> KeyExpiry {
        let now = self.now();
        let (shard, h) = self.slot(key);
        shard.expiry_of(h, key, now)
    }

    fn persist(&self, key: &[u8]) -> bool {
        let now = self.now();
        let (mut shard, h) = self.slot(key);
        shard.persist_entry(h, key, now)
    }

    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage {
        self.engine
            .scan_with(cursor, pattern, count, |i| self.shard(i))
    }

    fn keys(&self, pattern: &Pattern) -> Vec<Bytes> {
        self.engine.keys_in(&self.all(), pattern)
    }

    fn len(&self) -> u64 {
        self.all().iter().map(|shard| shard.entries).sum()
    }

    fn clear(&self) {
        let mut cleared = 0;
        for mut shard in self.all() {
            cleared += shard.entries;
            shard.clear_all();
        }
        if let Some(sink) = &self.engine.sink.0 {
            sink.cleared(cleared);
        }
    }

    fn memory(&self) -> MemoryReport {
        memory_of(&self.all())
    }

    fn clock(&self) -> &Clock {
        &self.engine.clock
    }

    fn name(&self) -> &'static str {
        "sharded"
    }
}
