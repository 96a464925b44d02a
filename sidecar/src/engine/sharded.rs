//! The sharded engine: keys hashed to a 63-bit position, shards of B-trees
//! ordered by that position (so a `SCAN` cursor is just "the next position"),
//! and a per-shard deadline heap for active expiry.
//!
//! Position `h` lies in `1..=2^63`, so cursor `0` can mean both "start" and
//! "done". Shard `i` owns one contiguous run of positions (the top bits of
//! `h - 1`), which makes the whole engine one ordered sequence: a `SCAN` page
//! is every bucket in `[cursor, next)`, read one shard lock at a time. A key
//! never changes position, so a key present throughout an iteration is
//! returned exactly once, and a key absent throughout is never returned.
//!
//! Keys and values are copied into exact-size allocations of their own: a
//! `Bytes` sliced from a network read buffer would pin the whole buffer, make
//! the memory report a guess, and keep deleted keys' memory alive.

mod held;
mod watch;

use std::cmp::Reverse;
use std::collections::btree_map;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{BuildHasher, RandomState};
use std::io::Write as _;
use std::mem::size_of;
use std::num::NonZeroU64;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    Clock, DeleteSink, ExpireCondition, Footprint, IncrError, KeyExpiry, Keyspace, MapEngine,
    MemoryReport, Millis, Pattern, Removal, RestoreWrite, ScanPage, SetCondition, SetExpiry,
    SetOptions, SetOutcome, Ttl, Watcher,
};
use held::Held;
use watch::Watches;

/// The highest position a key can hash to.
const MAX_POSITION: u64 = 1 << 63;
/// Enough shards for any core count; keeps the shard shift in range.
const MAX_SHARDS: usize = 1 << 16;
const DEFAULT_SHARDS: usize = 64;

/// `std`'s B-tree node capacity (`2 * B - 1` with `B = 6`).
const BTREE_NODE_CAPACITY: usize = 11;
/// Average keys per B-tree node assumed for memory estimates: random inserts
/// leave nodes about ln 2 full, and `std` merges nodes that fall below 5, so a
/// tree of `n` entries holds about `n / 8` leaves whatever its history.
const BTREE_ASSUMED_FILL: usize = 8;
/// A leaf: parent pointer, parent index and length, then the key and value arrays.
const BTREE_LEAF_BYTES: usize = 16 + BTREE_NODE_CAPACITY * (size_of::<u64>() + size_of::<Bucket>());
/// An internal node: a leaf plus its child pointers; about one per
/// `BTREE_ASSUMED_FILL` nodes of the level below.
const BTREE_INTERNAL_BYTES: usize =
    BTREE_LEAF_BYTES + (BTREE_NODE_CAPACITY + 1) * size_of::<usize>();
/// Each entry's share of the B-tree's nodes.
const BTREE_BYTES_PER_ENTRY: usize =
    (BTREE_LEAF_BYTES + BTREE_INTERNAL_BYTES / BTREE_ASSUMED_FILL) / BTREE_ASSUMED_FILL;
/// glibc's per-allocation header plus average rounding to 16 bytes; each
/// entry owns two allocations (key and value).
const ALLOCATION_OVERHEAD: usize = 16;
/// What the engine spends per entry besides the key and value bytes.
const ENTRY_OVERHEAD: usize = BTREE_BYTES_PER_ENTRY + 2 * ALLOCATION_OVERHEAD;
/// One item of an expiry heap: (deadline, position).
const EXPIRY_ITEM_BYTES: usize = size_of::<Reverse<(Millis, u64)>>();
/// Stale heap items tolerated beyond twice the live TTL count before a shard
/// rebuilds its heap on the next push; keeps small shards from rebuilding often.
const STALE_EXPIRY_SLACK: u64 = 1024;
/// Heap pops one `expire_cycle` may spend per key of budget, so a run of
/// stale items cannot hold a shard lock for long.
const EXPIRY_WORK_PER_BUDGET: usize = 4;

/// One key: its bytes, its value, and when it expires (never zero: a deadline
/// at or before "now" removes the key instead of being stored).
///
/// Plain boxes rather than `Bytes`: reads copy the value out (as Redis copies
/// into its reply buffer), which keeps an entry at 40 bytes and two exact
/// allocations. A stored `Bytes` would be 32 bytes each and would grow a
/// shared header on its first clone, so the memory report would depend on
/// which keys happen to have been read.
#[derive(Debug)]
struct Entry {
    key: Box<[u8]>,
    value: Box<[u8]>,
    deadline: Option<NonZeroU64>,
}

impl Entry {
    fn new(key: &[u8], value: &[u8], deadline: Option<NonZeroU64>) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            deadline,
        }
    }

    fn is_expired(&self, now: Millis) -> bool {
        self.deadline.is_some_and(|deadline| deadline.get() <= now)
    }

    fn data_bytes(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }
}

/// The entries at one position: almost always one; several only when two
/// keys share all 63 bits of hash.
#[derive(Debug)]
enum Bucket {
    One(Entry),
    /// Two or more entries; empty only transiently, while being removed.
    Many(Vec<Entry>),
}

impl Bucket {
    fn entries(&self) -> &[Entry] {
        match self {
            Bucket::One(entry) => std::slice::from_ref(entry),
            Bucket::Many(entries) => entries,
        }
    }

    fn entries_mut(&mut self) -> &mut [Entry] {
        match self {
            Bucket::One(entry) => std::slice::from_mut(entry),
            Bucket::Many(entries) => entries,
        }
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        self.entries().iter().position(|entry| &*entry.key == key)
    }

    /// Bytes of collision vector beyond the bucket itself.
    fn spill_bytes(&self) -> u64 {
        match self {
            Bucket::One(_) => 0,
            Bucket::Many(entries) => (entries.capacity() * size_of::<Entry>()) as u64,
        }
    }

    fn push(&mut self, entry: Entry) {
        let bucket = std::mem::replace(self, Bucket::Many(Vec::new()));
        *self = match bucket {
            Bucket::One(first) => Bucket::Many(vec![first, entry]),
            Bucket::Many(mut entries) => {
                entries.push(entry);
                Bucket::Many(entries)
            }
        };
    }

    /// Take out the entry at `position`, leaving `Many(vec![])` when it was
    /// the last one (the caller then drops the bucket from the tree).
    fn take(&mut self, position: usize) -> Entry {
        match self {
            Bucket::Many(entries) => {
                let taken = entries.swap_remove(position);
                if entries.len() == 1 {
                    if let Some(last) = entries.pop() {
                        *self = Bucket::One(last);
                    }
                } else {
                    entries.shrink_to_fit();
                }
                taken
            }
            Bucket::One(_) => match std::mem::replace(self, Bucket::Many(Vec::new())) {
                Bucket::One(entry) => entry,
                Bucket::Many(_) => unreachable!("matched Bucket::One just above"),
            },
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Bucket::Many(entries) if entries.is_empty())
    }
}

/// The engine's [`DeleteSink`], if it has one; every shard holds a handle so
/// each removal is reported under the lock that made it.
#[derive(Clone, Default)]
struct Sink(Option<Arc<dyn DeleteSink>>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sink(Some)"
        } else {
            "Sink(None)"
        })
    }
}

impl Sink {
    fn deleted(&self, key: &[u8], how: Removal, removed: bool) {
        if let Some(sink) = &self.0 {
            sink.deleted(key, how, removed);
        }
    }
}

/// One lock's worth of the map, with the counters the memory report needs.
#[derive(Debug, Default)]
struct Shard {
    map: BTreeMap<u64, Bucket>,
    /// Min-heap of (deadline, position). Items go stale when a key is deleted
    /// or its deadline changes; they are skipped when popped.
    expiry: BinaryHeap<Reverse<(Millis, u64)>>,
    entries: u64,
    with_ttl: u64,
    /// Sum of key and value lengths over the entries held.
    data_bytes: u64,
    /// Capacity of collision vectors, in bytes.
    spill_bytes: u64,
    /// Keys removed because they expired (lazily or actively).
    expired: u64,
    sink: Sink,
    /// Who `WATCH`es which of this shard's keys.
    watched: Watches,
}

impl Shard {
    fn find(&self, h: u64, key: &[u8]) -> Option<&Entry> {
        let bucket = self.map.get(&h)?;
        bucket.position(key).map(|i| &bucket.entries()[i])
    }

    fn find_mut(&mut self, h: u64, key: &[u8]) -> Option<&mut Entry> {
        let bucket = self.map.get_mut(&h)?;
        let i = bucket.position(key)?;
        Some(&mut bucket.entries_mut()[i])
    }

    fn live(&self, h: u64, key: &[u8], now: Millis) -> Option<&Entry> {
        self.find(h, key).filter(|entry| !entry.is_expired(now))
    }

    /// Remove the key if it has expired, so a write treats it as absent.
    fn reap(&mut self, h: u64, key: &[u8], now: Millis) {
        if self.find(h, key).is_some_and(|entry| entry.is_expired(now)) {
            self.take_entry(h, key);
            self.expired += 1;
            self.sink.deleted(key, Removal::ExpiredLazily, true);
        }
    }

    fn insert(&mut self, h: u64, entry: Entry) {
        self.changed(&entry.key);
        self.entries += 1;
        self.data_bytes += entry.data_bytes();
        let deadline = entry.deadline;
        match self.map.entry(h) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(Bucket::One(entry));
            }
            btree_map::Entry::Occupied(mut slot) => {
                let bucket = slot.get_mut();
                let spill_before = bucket.spill_bytes();
                bucket.push(entry);
                self.spill_bytes = self.spill_bytes - spill_before + bucket.spill_bytes();
            }
        }
        if let Some(deadline) = deadline {
            self.with_ttl += 1;
            self.schedule(deadline.get(), h);
        }
    }

    /// Remove the key for a command (reported to the sink as a delete,
    /// whether or not it was there).
    fn remove(&mut self, h: u64, key: &[u8]) -> Option<Entry> {
        let entry = self.take_entry(h, key);
        self.sink.deleted(key, Removal::Deleted, entry.is_some());
        entry
    }

    /// Remove the key without reporting it: for the callers that report
    /// the removal as what it was (an expiry).
    fn take_entry(&mut self, h: u64, key: &[u8]) -> Option<Entry> {
        let position = self.map.get(&h)?.position(key)?;
        Some(self.remove_at(h, position))
    }

    /// Remove the entry at `position` of the bucket at `h` (both must exist).
    fn remove_at(&mut self, h: u64, position: usize) -> Entry {
        let btree_map::Entry::Occupied(mut slot) = self.map.entry(h) else {
            unreachable!("remove_at is only called for a bucket just found");
        };
        let bucket = slot.get_mut();
        let spill_before = bucket.spill_bytes();
        let entry = bucket.take(position);
        self.spill_bytes = self.spill_bytes - spill_before + bucket.spill_bytes();
        if bucket.is_empty() {
            slot.remove();
        }
        self.entries -= 1;
        self.data_bytes -= entry.data_bytes();
        if entry.deadline.is_some() {
            self.with_ttl -= 1;
        }
        self.removed(&entry.key);
        entry
    }

    /// Store `value` under `key` (overwriting it if present) with `deadline`;
    /// returns the value it replaced. The caller has reaped the key.
    fn put(
        &mut self,
        h: u64,
        key: &[u8],
        value: &[u8],
        deadline: Option<NonZeroU64>,
    ) -> Option<Box<[u8]>> {
        match self.find_mut(h, key) {
            Some(entry) => {
                let previous = std::mem::replace(&mut entry.value, value.into());
                let before = std::mem::replace(&mut entry.deadline, deadline);
                self.data_bytes = self.data_bytes - previous.len() as u64 + value.len() as u64;
                self.track_deadline(h, before, deadline);
                self.changed(key);
                Some(previous)
            }
            None => {
                self.insert(h, Entry::new(key, value, deadline));
                None
            }
        }
    }

    /// Change a present key's deadline.
    fn set_deadline(&mut self, h: u64, key: &[u8], deadline: Option<NonZeroU64>) {
        if let Some(entry) = self.find_mut(h, key) {
            let before = std::mem::replace(&mut entry.deadline, deadline);
            self.track_deadline(h, before, deadline);
            self.changed(key);
        }
    }

    fn track_deadline(&mut self, h: u64, before: Option<NonZeroU64>, after: Option<NonZeroU64>) {
        match (before, after) {
            (None, Some(_)) => self.with_ttl += 1,
            (Some(_), None) => self.with_ttl -= 1,
            _ => {}
        }
        if let Some(deadline) = after
            && before != after
        {
            self.schedule(deadline.get(), h);
        }
    }

    fn schedule(&mut self, deadline: Millis, h: u64) {
        self.expiry.push(Reverse((deadline, h)));
        if self.expiry.len() as u64 > 2 * self.with_ttl + STALE_EXPIRY_SLACK {
            self.rebuild_expiry();
        }
    }

    /// Replace the heap by one holding exactly the live deadlines.
    fn rebuild_expiry(&mut self) {
        let mut items: Vec<_> = self
            .map
            .iter()
            .flat_map(|(&h, bucket)| {
                bucket.entries().iter().filter_map(move |entry| {
                    entry.deadline.map(|deadline| Reverse((deadline.get(), h)))
                })
            })
            .collect();
        items.shrink_to_fit();
        self.expiry = BinaryHeap::from(items);
    }

    fn has_due(&self, now: Millis) -> bool {
        self.expiry
            .peek()
            .is_some_and(|Reverse((deadline, _))| *deadline <= now)
    }

    /// Pop due heap items and remove the keys they point at, until `budget`
    /// keys are gone, the heap has nothing due, or `work` pops are spent.
    fn expire_due(&mut self, now: Millis, budget: usize, work: &mut usize) -> usize {
        let mut removed = 0;
        while removed < budget && *work > 0 && self.has_due(now) {
            let Some(Reverse((_, h))) = self.expiry.pop() else {
                break;
            };
            *work -= 1;
            // A collision bucket may hold several due entries; each also has
            // its own heap item, so stopping at the budget loses none.
            while removed < budget {
                let due = self.map.get(&h).and_then(|bucket| {
                    bucket
                        .entries()
                        .iter()
                        .position(|entry| entry.is_expired(now))
                });
                let Some(position) = due else { break };
                let entry = self.remove_at(h, position);
                self.expired += 1;
                self.sink
                    .deleted(&entry.key, Removal::ExpiredActively, true);
                removed += 1;
            }
        }
        removed
    }

    fn live_bytes(&self) -> u64 {
        self.data_bytes
            + self.entries * ENTRY_OVERHEAD as u64
            + self.with_ttl * EXPIRY_ITEM_BYTES as u64
    }

    fn held_bytes(&self) -> u64 {
        size_of::<RwLock<Shard>>() as u64
            + self.data_bytes
            + self.entries * ENTRY_OVERHEAD as u64
            + (self.expiry.capacity() * EXPIRY_ITEM_BYTES) as u64
            + self.spill_bytes
    }

    /// Whether the expiry heap is mostly stale items or spare capacity.
    fn expiry_is_bloated(&self) -> bool {
        self.expiry.capacity() as u64 > 2 * self.with_ttl + 64
    }
}

/// The per-shard core of the operations that do more than look a key up, so
/// a command does the same on its own and inside a transaction.
impl Shard {
    fn set_entry(
        &mut self,
        h: u64,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now: Millis,
    ) -> SetOutcome {
        self.reap(h, key, now);
        let current = self.find(h, key);
        let refused = match options.condition {
            SetCondition::Always => false,
            SetCondition::IfAbsent => current.is_some(),
            SetCondition::IfPresent => current.is_none(),
        };
        if refused {
            let previous = current.map(|entry| Bytes::copy_from_slice(&entry.value));
            return SetOutcome {
                written: false,
                previous,
            };
        }
        let deadline = match options.expiry {
            SetExpiry::Persist => None,
            SetExpiry::Keep => current.and_then(|entry| entry.deadline),
            SetExpiry::At(deadline) if deadline <= now => {
                // Redis 7 answers OK and deletes: the write happened, and
                // the key expired the instant it did.
                let previous = self.remove(h, key).map(|entry| Bytes::from(entry.value));
                return SetOutcome {
                    written: true,
                    previous,
                };
            }
            SetExpiry::At(deadline) => NonZeroU64::new(deadline),
        };
        let previous = self.put(h, key, value, deadline).map(Bytes::from);
        SetOutcome {
            written: true,
            previous,
        }
    }

    fn incr_entry(
        &mut self,
        h: u64,
        key: &[u8],
        delta: i64,
        now: Millis,
    ) -> Result<i64, IncrError> {
        self.reap(h, key, now);
        let (current, deadline) = match self.find(h, key) {
            Some(entry) => (
                parse_strict_i64(&entry.value).ok_or(IncrError::NotInteger)?,
                entry.deadline,
            ),
            None => (0, None),
        };
        let next = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let mut buffer = [0; 20];
        self.put(h, key, decimal(next, &mut buffer), deadline);
        Ok(next)
    }

    fn expire_entry(
        &mut self,
        h: u64,
        key: &[u8],
        deadline: Millis,
        condition: ExpireCondition,
        now: Millis,
    ) -> bool {
        self.reap(h, key, now);
        let Some(entry) = self.find(h, key) else {
            return false;
        };
        let current = entry.deadline.map(NonZeroU64::get);
        // Redis 7 checks the condition before looking at whether the new
        // deadline is already past; no TTL counts as an infinite one.
        let allowed = match (condition, current) {
            (ExpireCondition::Always, _) => true,
            (ExpireCondition::IfNoTtl, current) => current.is_none(),
            (ExpireCondition::IfTtl, current) => current.is_some(),
            (ExpireCondition::IfGreater, None) => false,
            (ExpireCondition::IfGreater, Some(current)) => deadline > current,
            (ExpireCondition::IfLess, None) => true,
            (ExpireCondition::IfLess, Some(current)) => deadline < current,
        };
        if !allowed {
            return false;
        }
        if deadline <= now {
            self.remove(h, key);
        } else {
            self.set_deadline(h, key, NonZeroU64::new(deadline));
        }
        true
    }

    fn ttl_of(&self, h: u64, key: &[u8], now: Millis) -> Ttl {
        match self.live(h, key, now) {
            None => Ttl::Missing,
            Some(Entry { deadline: None, .. }) => Ttl::Persistent,
            Some(Entry {
                deadline: Some(deadline),
                ..
            }) => Ttl::Remaining(deadline.get() - now),
        }
    }

    fn expiry_of(&self, h: u64, key: &[u8], now: Millis) -> KeyExpiry {
        match self.live(h, key, now) {
            None => KeyExpiry::Missing,
            Some(Entry { deadline: None, .. }) => KeyExpiry::Persistent,
            Some(Entry {
                deadline: Some(deadline),
                ..
            }) => KeyExpiry::At(deadline.get()),
        }
    }

    fn persist_entry(&mut self, h: u64, key: &[u8], now: Millis) -> bool {
        self.reap(h, key, now);
        match self.find(h, key) {
            Some(entry) if entry.deadline.is_some() => {
                self.set_deadline(h, key, None);
                true
            }
            _ => false,
        }
    }

    /// `FLUSHALL` of this shard; its expiry count, delete sink and watchers
    /// stay. The caller reports the flush to the engine's sink.
    fn clear_all(&mut self) {
        self.flushing();
        let expired = self.expired;
        let sink = std::mem::take(&mut self.sink);
        let watched = std::mem::take(&mut self.watched);
        *self = Shard {
            expired,
            sink,
            watched,
            ..Shard::default()
        };
    }
}

/// What `shards` hold, for the memory report.
fn memory_of<G: Deref<Target = Shard>>(shards: &[G]) -> MemoryReport {
    let mut report = MemoryReport {
        held_bytes: size_of::<ShardedEngine>() as u64,
        ..MemoryReport::default()
    };
    for shard in shards {
        report.keys += shard.entries;
        report.keys_with_ttl += shard.with_ttl;
        report.live_bytes += shard.live_bytes();
        report.held_bytes += shard.held_bytes();
    }
    report
}

/// Where a key lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    h: u64,
    shard: usize,
}

/// Locks on several shards, taken in ascending shard order.
struct Locked<G> {
    shards: Vec<usize>,
    guards: Vec<G>,
}

impl<G> Locked<G> {
    fn index(&self, shard: usize) -> usize {
        self.shards
            .binary_search(&shard)
            .expect("every key's shard was locked")
    }
}

impl<'a> Locked<RwLockReadGuard<'a, Shard>> {
    fn shard(&self, shard: usize) -> &Shard {
        &self.guards[self.index(shard)]
    }
}

impl<'a> Locked<RwLockWriteGuard<'a, Shard>> {
    fn shard_mut(&mut self, shard: usize) -> &mut Shard {
        let i = self.index(shard);
        &mut self.guards[i]
    }
}

/// A map split into `2^k` shards by hash position, each behind a
/// `parking_lot::RwLock`. See the module docs for the layout.
pub struct ShardedEngine {
    shards: Box<[RwLock<Shard>]>,
    /// `h - 1` shifted right by this gives the shard index.
    shard_shift: u32,
    hasher: RandomState,
    /// Which hash bits are kept; all 63 except in tests that force collisions.
    hash_mask: u64,
    clock: Clock,
    /// Where the next `expire_cycle` starts, so no shard is always last.
    expiry_start: AtomicUsize,
    sink: Sink,
}

impl std::fmt::Debug for ShardedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedEngine")
            .field("shards", &self.shards.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ShardedEngine {
    /// What each entry costs besides its key and value bytes, in the memory
    /// report: its share of B-tree nodes plus two allocation headers.
    pub const ENTRY_OVERHEAD_BYTES: u64 = ENTRY_OVERHEAD as u64;

    /// An engine with `shard_count` shards (rounded up to a power of two,
    /// between 1 and 65536) measuring deadlines on `clock`.
    pub fn new(shard_count: usize, clock: Clock) -> Self {
        Self::with_hash_mask(shard_count, clock, MAX_POSITION - 1)
    }

    /// Report every removal to `sink` (see [`DeleteSink`]).
    pub fn with_delete_sink(mut self, sink: Arc<dyn DeleteSink>) -> Self {
        self.sink = Sink(Some(sink));
        for shard in self.shards.iter_mut() {
            shard.get_mut().sink = self.sink.clone();
        }
        self
    }

    /// 64 shards on the system clock.
    pub fn with_defaults() -> Self {
        Self::new(DEFAULT_SHARDS, Clock::System)
    }

    fn with_hash_mask(shard_count: usize, clock: Clock, hash_mask: u64) -> Self {
        let shard_count = shard_count.clamp(1, MAX_SHARDS).next_power_of_two();
        let shards = (0..shard_count)
            .map(|_| RwLock::new(Shard::default()))
            .collect();
        ShardedEngine {
            shards,
            shard_shift: 63 - shard_count.trailing_zeros(),
            // A fresh random seed per engine: clients cannot aim keys at one
            // shard or one long collision bucket.
            hasher: RandomState::new(),
            hash_mask,
            clock,
            expiry_start: AtomicUsize::new(0),
            sink: Sink::default(),
        }
    }

    /// Keys removed because they expired, by lazy or active expiry (`INFO
    /// stats` `expired_keys`). Keys deleted by an `EXPIRE`/`SET` with a past
    /// deadline are deletions, not expirations, as in Redis.
    pub fn expired_total(&self) -> u64 {
        self.shards.iter().map(|shard| shard.read().expired).sum()
    }

    fn locate(&self, key: &[u8]) -> Slot {
        let h = ((self.hasher.hash_one(key) >> 1) & self.hash_mask) + 1;
        Slot {
            h,
            shard: self.shard_of(h),
        }
    }

    fn shard_of(&self, h: u64) -> usize {
        ((h - 1) >> self.shard_shift) as usize
    }

    fn first_position(&self, shard: usize) -> u64 {
        ((shard as u64) << self.shard_shift) + 1
    }

    fn last_position(&self, shard: usize) -> u64 {
        (shard as u64 + 1) << self.shard_shift
    }

    fn involved(slots: &[Slot]) -> Vec<usize> {
        let mut shards: Vec<usize> = slots.iter().map(|slot| slot.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    fn read_locked(&self, shards: Vec<usize>) -> Locked<RwLockReadGuard<'_, Shard>> {
        let guards = shards.iter().map(|&i| self.shards[i].read()).collect();
        Locked { shards, guards }
    }

    fn write_locked(&self, shards: Vec<usize>) -> Locked<RwLockWriteGuard<'_, Shard>> {
        let guards = shards.iter().map(|&i| self.shards[i].write()).collect();
        Locked { shards, guards }
    }

    fn read_all(&self) -> Vec<RwLockReadGuard<'_, Shard>> {
        self.shards.iter().map(|shard| shard.read()).collect()
    }

    fn slots(&self, keys: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<Slot> {
        keys.map(|key| self.locate(key.as_ref())).collect()
    }
}

impl ShardedEngine {
    /// `SCAN` over shards read through `lock`, one at a time.
    fn scan_with<G: Deref<Target = Shard>>(
        &self,
        cursor: u64,
        pattern: Option<&Pattern>,
        count: usize,
        mut lock: impl FnMut(usize) -> G,
    ) -> ScanPage {
        if cursor > MAX_POSITION {
            // Not a cursor this engine hands out: nothing lies beyond it.
            return ScanPage {
                cursor: 0,
                keys: Vec::new(),
            };
        }
        let pattern = pattern.filter(|pattern| !pattern.matches_everything());
        let count = count.max(1);
        let mut keys = Vec::new();
        let mut visited = 0;
        let mut from = cursor.max(1);
        let mut shard_index = self.shard_of(from);
        loop {
            let shard = lock(shard_index);
            let now = self.clock.now();
            for (&h, bucket) in shard.map.range(from..=self.last_position(shard_index)) {
                // A whole bucket goes in one page: the cursor cannot point
                // inside it.
                for entry in bucket.entries() {
                    visited += 1;
                    if !entry.is_expired(now) && pattern.is_none_or(|p| p.matches(&entry.key)) {
                        keys.push(Bytes::copy_from_slice(&entry.key));
                    }
                }
                // COUNT counts entries visited, matched or not, as Redis does.
                if visited >= count {
                    let cursor = if h == MAX_POSITION { 0 } else { h + 1 };
                    return ScanPage { cursor, keys };
                }
            }
            drop(shard);
            shard_index += 1;
            if shard_index == self.shards.len() {
                return ScanPage { cursor: 0, keys };
            }
            from = self.first_position(shard_index);
        }
    }

    /// `KEYS` over shards already locked.
    fn keys_in<G: Deref<Target = Shard>>(&self, shards: &[G], pattern: &Pattern) -> Vec<Bytes> {
        let all = pattern.matches_everything();
        let now = self.clock.now();
        shards
            .iter()
            .flat_map(|shard| shard.map.values().flat_map(Bucket::entries))
            .filter(|entry| !entry.is_expired(now) && (all || pattern.matches(&entry.key)))
            .map(|entry| Bytes::copy_from_slice(&entry.key))
            .collect()
    }
}

impl Default for ShardedEngine {
    fn default() -> Self {
        Self::with_defaults()
    }
}

/// Redis's `string2ll`: optional `-`, digits, no `+`, no spaces, no leading
/// zeros (except `0` itself), at most 20 bytes, in range.
fn parse_strict_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// An integer's decimal text, without a heap allocation to format it.
fn decimal(value: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut cursor = &mut buffer[..];
    write!(cursor, "{value}").expect("an i64 fits in 20 bytes");
    let written = 20 - cursor.len();
    &buffer[..written]
}

impl MapEngine for ShardedEngine {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        let slot = self.locate(key);
        let shard = self.shards[slot.shard].read();
        let now = self.clock.now();
        shard
            .live(slot.h, key, now)
            .map(|entry| Bytes::copy_from_slice(&entry.value))
    }

    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>> {
        if let [key] = keys {
            return vec![self.get(key)];
        }
        let slots = self.slots(keys.iter());
        let locked = self.read_locked(Self::involved(&slots));
        let now = self.clock.now();
        keys.iter()
            .zip(&slots)
            .map(|(key, slot)| {
                locked
                    .shard(slot.shard)
                    .live(slot.h, key, now)
                    .map(|entry| Bytes::copy_from_slice(&entry.value))
            })
            .collect()
    }

    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome {
        let slot = self.locate(&key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.set_entry(slot.h, &key, &value, options, now)
    }

    fn restore(
        &self,
        key: Bytes,
        wanted: Option<(Bytes, SetExpiry)>,
        replaceable: &dyn Fn(&[u8]) -> bool,
    ) -> RestoreWrite {
        let slot = self.locate(&key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.reap(slot.h, &key, now);
        let current = shard.find(slot.h, &key);
        let Some((value, expiry)) = wanted else {
            return match current {
                None => RestoreWrite::AlreadyThere,
                Some(entry) if !replaceable(&entry.value) => RestoreWrite::Kept,
                Some(_) => {
                    shard.remove(slot.h, &key);
                    RestoreWrite::Written
                }
            };
        };
        match current {
            Some(entry) if *entry.value == *value => return RestoreWrite::AlreadyThere,
            Some(entry) if !replaceable(&entry.value) => return RestoreWrite::Kept,
            _ => {}
        }
        let deadline = match expiry {
            SetExpiry::Persist => None,
            SetExpiry::Keep => current.and_then(|entry| entry.deadline),
            SetExpiry::At(deadline) if deadline <= now => {
                // Already past: the key ends absent, as it would have.
                if current.is_some() {
                    shard.remove(slot.h, &key);
                }
                return RestoreWrite::Written;
            }
            SetExpiry::At(deadline) => NonZeroU64::new(deadline),
        };
        shard.put(slot.h, &key, &value, deadline);
        RestoreWrite::Written
    }

    fn expired_total(&self) -> u64 {
        ShardedEngine::expired_total(self)
    }

    fn mset(&self, pairs: Vec<(Bytes, Bytes)>) {
        if let [(key, value)] = &pairs[..] {
            let slot = self.locate(key);
            let mut shard = self.shards[slot.shard].write();
            let now = self.clock.now();
            shard.reap(slot.h, key, now);
            shard.put(slot.h, key, value, None);
            return;
        }
        let slots = self.slots(pairs.iter().map(|(key, _)| key));
        let mut locked = self.write_locked(Self::involved(&slots));
        let now = self.clock.now();
        for ((key, value), slot) in pairs.iter().zip(&slots) {
            let shard = locked.shard_mut(slot.shard);
            shard.reap(slot.h, key, now);
            shard.put(slot.h, key, value, None);
        }
    }

    fn del_one(&self, key: &[u8]) -> bool {
        let slot = self.locate(key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.reap(slot.h, key, now);
        shard.remove(slot.h, key).is_some()
    }

    fn exists_one(&self, key: &[u8]) -> bool {
        let slot = self.locate(key);
        let shard = self.shards[slot.shard].read();
        let now = self.clock.now();
        shard.live(slot.h, key, now).is_some()
    }

    fn del(&self, keys: &[Bytes]) -> u64 {
        let remove = |shard: &mut Shard, slot: Slot, key: &[u8], now: Millis| {
            shard.reap(slot.h, key, now);
            u64::from(shard.remove(slot.h, key).is_some())
        };
        if let [key] = keys {
            return u64::from(self.del_one(key));
        }
        let slots = self.slots(keys.iter());
        let mut locked = self.write_locked(Self::involved(&slots));
        let now = self.clock.now();
        keys.iter()
            .zip(&slots)
            .map(|(key, &slot)| remove(locked.shard_mut(slot.shard), slot, key, now))
            .sum()
    }

    fn exists(&self, keys: &[Bytes]) -> u64 {
        if let [key] = keys {
            return u64::from(self.exists_one(key));
        }
        let slots = self.slots(keys.iter());
        let locked = self.read_locked(Self::involved(&slots));
        let now = self.clock.now();
        keys.iter()
            .zip(&slots)
            .filter(|(key, slot)| locked.shard(slot.shard).live(slot.h, key, now).is_some())
            .count() as u64
    }

    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let slot = self.locate(key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.incr_entry(slot.h, key, delta, now)
    }

    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool {
        let slot = self.locate(key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.expire_entry(slot.h, key, deadline, condition, now)
    }

    fn ttl(&self, key: &[u8]) -> Ttl {
        let slot = self.locate(key);
        let shard = self.shards[slot.shard].read();
        let now = self.clock.now();
        shard.ttl_of(slot.h, key, now)
    }

    fn expiry(&self, key: &[u8]) -> KeyExpiry {
        let slot = self.locate(key);
        let shard = self.shards[slot.shard].read();
        let now = self.clock.now();
        shard.expiry_of(slot.h, key, now)
    }

    fn persist(&self, key: &[u8]) -> bool {
        let slot = self.locate(key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.persist_entry(slot.h, key, now)
    }

    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage {
        self.scan_with(cursor, pattern, count, |i| self.shards[i].read())
    }

    fn keys(&self, pattern: &Pattern) -> Vec<Bytes> {
        if let Some(literal) = pattern.literal() {
            return match self.exists(&[Bytes::copy_from_slice(literal)]) {
                0 => Vec::new(),
                _ => vec![Bytes::copy_from_slice(literal)],
            };
        }
        self.keys_in(&self.read_all(), pattern)
    }

    fn len(&self) -> u64 {
        self.read_all().iter().map(|shard| shard.entries).sum()
    }

    fn clear(&self) {
        let mut shards: Vec<_> = self.shards.iter().map(|shard| shard.write()).collect();
        let mut cleared = 0;
        for shard in &mut shards {
            cleared += shard.entries;
            shard.clear_all();
        }
        if let Some(sink) = &self.sink.0 {
            sink.cleared(cleared);
        }
    }

    fn memory(&self) -> MemoryReport {
        memory_of(&self.read_all())
    }

    fn expire_cycle(&self, budget: usize) -> usize {
        let shard_count = self.shards.len();
        let start = self.expiry_start.fetch_add(1, Ordering::Relaxed) % shard_count;
        let mut work = budget.saturating_mul(EXPIRY_WORK_PER_BUDGET);
        let mut removed = 0;
        for offset in 0..shard_count {
            if removed >= budget || work == 0 {
                break;
            }
            let lock = &self.shards[(start + offset) % shard_count];
            // Peek under the shared lock first: most shards have nothing due,
            // and readers should not queue behind an idle writer.
            if !lock.read().has_due(self.clock.now()) {
                continue;
            }
            let mut shard = lock.write();
            let now = self.clock.now();
            removed += shard.expire_due(now, budget - removed, &mut work);
        }
        removed
    }

    fn compact(&self) -> u64 {
        let mut released = 0;
        for lock in self.shards.iter() {
            let mut shard = lock.write();
            let before = shard.held_bytes();
            if shard.expiry_is_bloated() {
                shard.rebuild_expiry();
            }
            released += before - shard.held_bytes();
        }
        // Handing the freed heap to the kernel is `memory::HeapRelease`'s
        // job: it watches the process's RSS against what is held, so a mass
        // delete between two compactions is seen too.
        released
    }

    fn watch(&self, watcher: &Arc<Watcher>, key: &[u8]) {
        let slot = self.locate(key);
        let mut shard = self.shards[slot.shard].write();
        let now = self.clock.now();
        shard.add_watch(slot.h, key, watcher, now);
    }

    fn unwatch(&self, watcher: &Arc<Watcher>, keys: &[Bytes]) {
        for key in keys {
            let slot = self.locate(key);
            self.shards[slot.shard].write().remove_watch(key, watcher);
        }
    }

    fn transaction(
        &self,
        footprint: Footprint<'_>,
        watch: Option<(&Arc<Watcher>, &[Bytes])>,
        body: &mut dyn FnMut(&dyn Keyspace),
    ) -> bool {
        let mut shards: Vec<usize> = match footprint {
            Footprint::Everything => (0..self.shards.len()).collect(),
            Footprint::Keys(keys) => keys.iter().map(|key| self.locate(key).shard).collect(),
        };
        if let Some((_, keys)) = watch {
            shards.extend(keys.iter().map(|key| self.locate(key).shard));
        }
        shards.sort_unstable();
        shards.dedup();
        let held = Held::lock(self, &shards);
        if let Some((watcher, keys)) = watch {
            // Every change raises the watcher under its key's shard lock, and
            // all of those are held: nothing can change between this check
            // and the commands.
            let now = self.clock.now();
            let mut intact = !watcher.is_dirty();
            for key in keys {
                let slot = self.locate(key);
                let mut shard = held.shard(slot.shard);
                intact &= !shard.watch_expired(slot.h, key, watcher, now);
                shard.remove_watch(key, watcher);
            }
            if !intact {
                return false;
            }
        }
        body(&held);
        true
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }

    fn name(&self) -> &'static str {
        "sharded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::AtomicBool;

    const START: Millis = 1_000_000;

    fn engine() -> ShardedEngine {
        ShardedEngine::new(8, Clock::manual(START))
    }

    /// Every key lands on one of 16 positions, so buckets hold several keys.
    fn colliding_engine() -> ShardedEngine {
        ShardedEngine::with_hash_mask(4, Clock::manual(START), 0xF << 59)
    }

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn set(engine: &ShardedEngine, key: &str, value: &str) {
        engine.set(b(key), b(value), SetOptions::default());
    }

    fn set_with(engine: &ShardedEngine, key: &str, value: &str, options: SetOptions) -> SetOutcome {
        engine.set(b(key), b(value), options)
    }

    fn expiring_at(at: Millis) -> SetOptions {
        SetOptions {
            expiry: SetExpiry::At(at),
            ..SetOptions::default()
        }
    }

    fn get(engine: &ShardedEngine, key: &str) -> Option<String> {
        engine
            .get(key.as_bytes())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    fn scan_all(engine: &ShardedEngine, pattern: Option<&Pattern>, count: usize) -> Vec<Bytes> {
        let mut cursor = 0;
        let mut keys = Vec::new();
        loop {
            let page = engine.scan(cursor, pattern, count);
            keys.extend(page.keys);
            if page.cursor == 0 {
                return keys;
            }
            assert!(page.cursor > cursor, "cursor must move forward");
            cursor = page.cursor;
        }
    }

    /// Raises a stop flag when dropped, so that background threads in a
    /// `thread::scope` end even when the asserting thread panics.
    struct StopOnDrop<'a>(&'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn shard_count_is_rounded_up_to_a_power_of_two() {
        let clock = Clock::manual(0);
        assert_eq!(ShardedEngine::new(3, clock.clone()).shards.len(), 4);
        assert_eq!(ShardedEngine::new(0, clock.clone()).shards.len(), 1);
        assert_eq!(ShardedEngine::new(64, clock).shards.len(), 64);
        assert_eq!(ShardedEngine::with_defaults().shards.len(), 64);
        assert_eq!(ShardedEngine::with_defaults().name(), "sharded");
    }

    #[test]
    fn positions_cover_all_shards_in_order_and_never_zero() {
        let engine = ShardedEngine::new(4, Clock::manual(0));
        assert_eq!(engine.first_position(0), 1);
        assert_eq!(engine.last_position(3), MAX_POSITION);
        for shard in 0..4 {
            assert_eq!(engine.shard_of(engine.first_position(shard)), shard);
            assert_eq!(engine.shard_of(engine.last_position(shard)), shard);
        }
        for i in 0..1000 {
            let slot = engine.locate(format!("k{i}").as_bytes());
            assert!((1..=MAX_POSITION).contains(&slot.h));
        }
    }

    #[test]
    fn get_returns_what_set_stored_and_overwrite_reports_previous() {
        let engine = engine();
        assert_eq!(get(&engine, "k"), None);
        let first = set_with(&engine, "k", "v1", SetOptions::default());
        assert_eq!(
            first,
            SetOutcome {
                written: true,
                previous: None
            }
        );
        let second = set_with(&engine, "k", "v2", SetOptions::default());
        assert_eq!(
            second,
            SetOutcome {
                written: true,
                previous: Some(b("v1"))
            }
        );
        assert_eq!(get(&engine, "k").as_deref(), Some("v2"));
        assert_eq!(engine.len(), 1);
    }

    #[test]
    fn stored_bytes_do_not_share_the_callers_buffer() {
        let engine = engine();
        let buffer = Bytes::from(vec![b'x'; 4096]);
        engine.set(
            buffer.slice(0..3),
            buffer.slice(3..8),
            SetOptions::default(),
        );
        drop(buffer);
        assert_eq!(engine.get(b"xxx"), Some(b("xxxxx")));
        assert_eq!(
            engine.memory().live_bytes,
            8 + ShardedEngine::ENTRY_OVERHEAD_BYTES
        );
    }

    #[test]
    fn empty_key_and_empty_value_are_ordinary() {
        let engine = engine();
        set(&engine, "", "");
        assert_eq!(engine.get(b""), Some(Bytes::new()));
        assert_eq!(engine.keys(&Pattern::new(b"*")), vec![Bytes::new()]);
        assert_eq!(engine.del(&[Bytes::new()]), 1);
    }

    #[test]
    fn set_if_absent_writes_only_new_keys_and_reports_the_existing_value() {
        let engine = engine();
        let nx = SetOptions {
            condition: SetCondition::IfAbsent,
            ..SetOptions::default()
        };
        assert_eq!(
            set_with(&engine, "k", "a", nx),
            SetOutcome {
                written: true,
                previous: None
            }
        );
        assert_eq!(
            set_with(&engine, "k", "b", nx),
            SetOutcome {
                written: false,
                previous: Some(b("a"))
            }
        );
        assert_eq!(get(&engine, "k").as_deref(), Some("a"));
    }

    #[test]
    fn set_if_present_writes_only_existing_keys() {
        let engine = engine();
        let xx = SetOptions {
            condition: SetCondition::IfPresent,
            ..SetOptions::default()
        };
        assert_eq!(
            set_with(&engine, "k", "a", xx),
            SetOutcome {
                written: false,
                previous: None
            }
        );
        assert_eq!(get(&engine, "k"), None);
        set(&engine, "k", "a");
        assert_eq!(
            set_with(&engine, "k", "b", xx),
            SetOutcome {
                written: true,
                previous: Some(b("a"))
            }
        );
        assert_eq!(get(&engine, "k").as_deref(), Some("b"));
    }

    #[test]
    fn set_conditions_treat_an_expired_key_as_absent() {
        let engine = engine();
        set_with(&engine, "k", "old", expiring_at(START + 10));
        engine.clock().advance(10);
        let nx = SetOptions {
            condition: SetCondition::IfAbsent,
            ..SetOptions::default()
        };
        assert_eq!(
            set_with(&engine, "k", "new", nx),
            SetOutcome {
                written: true,
                previous: None
            }
        );
        assert_eq!(engine.ttl(b"k"), Ttl::Persistent);
        assert_eq!(engine.expired_total(), 1);
    }

    #[test]
    fn set_expiry_persist_clears_keep_keeps_and_at_sets() {
        let engine = engine();
        set_with(&engine, "k", "a", expiring_at(START + 500));
        assert_eq!(engine.ttl(b"k"), Ttl::Remaining(500));

        let keep = SetOptions {
            expiry: SetExpiry::Keep,
            ..SetOptions::default()
        };
        set_with(&engine, "k", "b", keep);
        assert_eq!(engine.ttl(b"k"), Ttl::Remaining(500));
        assert_eq!(get(&engine, "k").as_deref(), Some("b"));

        set_with(&engine, "k", "c", SetOptions::default());
        assert_eq!(engine.ttl(b"k"), Ttl::Persistent);
        assert_eq!(engine.memory().keys_with_ttl, 0);

        set_with(&engine, "fresh", "x", keep);
        assert_eq!(engine.ttl(b"fresh"), Ttl::Persistent);
    }

    #[test]
    fn set_with_a_past_deadline_writes_then_leaves_the_key_absent() {
        let engine = engine();
        set(&engine, "k", "a");
        let outcome = set_with(&engine, "k", "b", expiring_at(START));
        assert_eq!(
            outcome,
            SetOutcome {
                written: true,
                previous: Some(b("a"))
            }
        );
        assert_eq!(get(&engine, "k"), None);
        assert_eq!(engine.len(), 0);
        let absent = set_with(&engine, "other", "b", expiring_at(START - 5));
        assert_eq!(
            absent,
            SetOutcome {
                written: true,
                previous: None
            }
        );
        assert_eq!(engine.len(), 0);
        assert_eq!(
            engine.expired_total(),
            0,
            "a past deadline is a delete, not an expiry"
        );
    }

    #[test]
    fn mget_answers_per_key_with_missing_and_expired_as_none() {
        let engine = engine();
        set(&engine, "a", "1");
        set_with(&engine, "gone", "2", expiring_at(START + 1));
        engine.clock().advance(1);
        let values = engine.mget(&[b("a"), b("missing"), b("gone"), b("a")]);
        assert_eq!(values, vec![Some(b("1")), None, None, Some(b("1"))]);
        assert_eq!(engine.mget(&[b("a")]), vec![Some(b("1"))]);
        assert_eq!(engine.mget(&[]), Vec::<Option<Bytes>>::new());
    }

    #[test]
    fn mset_keeps_the_last_value_of_a_repeated_key_and_clears_ttls() {
        let engine = engine();
        set_with(&engine, "a", "old", expiring_at(START + 100));
        engine.mset(vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))]);
        assert_eq!(get(&engine, "a").as_deref(), Some("3"));
        assert_eq!(get(&engine, "b").as_deref(), Some("2"));
        assert_eq!(engine.ttl(b"a"), Ttl::Persistent);
        engine.mset(vec![(b("c"), b("single"))]);
        assert_eq!(get(&engine, "c").as_deref(), Some("single"));
        assert_eq!(engine.len(), 3);
    }

    #[test]
    fn del_counts_keys_that_existed_once_each() {
        let engine = engine();
        set(&engine, "a", "1");
        set(&engine, "b", "2");
        set_with(&engine, "gone", "3", expiring_at(START + 1));
        engine.clock().advance(1);
        assert_eq!(
            engine.del(&[b("a"), b("a"), b("missing"), b("gone"), b("b")]),
            2
        );
        assert_eq!(engine.len(), 0, "the expired key was removed too");
        assert_eq!(engine.expired_total(), 1);
        assert_eq!(engine.del(&[b("a")]), 0);
        set(&engine, "a", "1");
        assert_eq!(engine.del(&[b("a")]), 1);
    }

    #[test]
    fn exists_counts_a_repeated_key_each_time_and_ignores_expired_keys() {
        let engine = engine();
        set(&engine, "a", "1");
        set_with(&engine, "gone", "3", expiring_at(START + 1));
        engine.clock().advance(1);
        assert_eq!(engine.exists(&[b("a"), b("a"), b("missing"), b("gone")]), 2);
        assert_eq!(engine.exists(&[b("a")]), 1);
        assert_eq!(engine.exists(&[b("gone")]), 0);
    }

    #[test]
    fn incr_by_counts_from_zero_and_keeps_the_ttl() {
        let engine = engine();
        assert_eq!(engine.incr_by(b"n", 5), Ok(5));
        assert_eq!(engine.incr_by(b"n", -7), Ok(-2));
        assert_eq!(get(&engine, "n").as_deref(), Some("-2"));
        assert_eq!(engine.ttl(b"n"), Ttl::Persistent);

        set_with(&engine, "t", "10", expiring_at(START + 300));
        assert_eq!(engine.incr_by(b"t", 1), Ok(11));
        assert_eq!(engine.ttl(b"t"), Ttl::Remaining(300));

        engine.clock().advance(300);
        assert_eq!(
            engine.incr_by(b"t", 1),
            Ok(1),
            "an expired counter starts over"
        );
        assert_eq!(engine.ttl(b"t"), Ttl::Persistent);
    }

    #[test]
    fn incr_by_refuses_values_redis_would_not_parse() {
        let engine = engine();
        let too_long = format!("1{}", "0".repeat(20));
        let bad = [
            "",
            " 1",
            "1 ",
            "+1",
            "01",
            "-0",
            "-",
            "1a",
            "0x10",
            "1.5",
            "9223372036854775808",
            "-9223372036854775809",
            &too_long,
        ];
        for value in bad {
            set(&engine, "k", value);
            assert_eq!(
                engine.incr_by(b"k", 1),
                Err(IncrError::NotInteger),
                "{value:?}"
            );
            assert_eq!(
                get(&engine, "k").as_deref(),
                Some(value),
                "unchanged after refusal"
            );
        }
        engine.set(
            b("bin"),
            Bytes::from_static(b"\xff1"),
            SetOptions::default(),
        );
        assert_eq!(engine.incr_by(b"bin", 1), Err(IncrError::NotInteger));
    }

    #[test]
    fn incr_by_reports_overflow_and_leaves_the_value() {
        let engine = engine();
        set(&engine, "max", "9223372036854775807");
        assert_eq!(engine.incr_by(b"max", 1), Err(IncrError::Overflow));
        assert_eq!(get(&engine, "max").as_deref(), Some("9223372036854775807"));
        set(&engine, "min", "-9223372036854775808");
        assert_eq!(engine.incr_by(b"min", -1), Err(IncrError::Overflow));
        assert_eq!(engine.incr_by(b"min", 0), Ok(i64::MIN));
        assert_eq!(engine.incr_by(b"absent", i64::MIN), Ok(i64::MIN));
    }

    #[test]
    fn strict_integer_parsing_matches_string2ll() {
        assert_eq!(parse_strict_i64(b"0"), Some(0));
        assert_eq!(parse_strict_i64(b"-1"), Some(-1));
        assert_eq!(parse_strict_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_strict_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_strict_i64(b"00"), None);
        assert_eq!(parse_strict_i64(b"-01"), None);
        assert_eq!(parse_strict_i64(b"18446744073709551616"), None);
        let mut buffer = [0; 20];
        assert_eq!(decimal(i64::MIN, &mut buffer), b"-9223372036854775808");
        assert_eq!(decimal(0, &mut buffer), b"0");
    }

    #[test]
    fn expire_at_conditions_follow_redis_7() {
        use ExpireCondition::*;
        let later = START + 1000;
        let sooner = START + 100;
        // (condition, key has TTL `later`?, new deadline, expected answer)
        let cases = [
            (Always, false, sooner, true),
            (IfNoTtl, false, sooner, true),
            (IfNoTtl, true, sooner, false),
            (IfTtl, false, sooner, false),
            (IfTtl, true, sooner, true),
            (IfGreater, false, sooner, false),
            (IfGreater, true, sooner, false),
            (IfGreater, true, later, false),
            (IfGreater, true, later + 1, true),
            (IfLess, false, sooner, true),
            (IfLess, true, later, false),
            (IfLess, true, sooner, true),
        ];
        for (condition, has_ttl, deadline, expected) in cases {
            let engine = engine();
            let options = if has_ttl {
                expiring_at(later)
            } else {
                SetOptions::default()
            };
            set_with(&engine, "k", "v", options);
            let before = engine.ttl(b"k");
            assert_eq!(
                engine.expire_at(b"k", deadline, condition),
                expected,
                "{condition:?} ttl={has_ttl} deadline={deadline}"
            );
            let after = engine.ttl(b"k");
            if expected {
                assert_eq!(after, Ttl::Remaining(deadline - START));
            } else {
                assert_eq!(after, before, "a refused EXPIRE changes nothing");
            }
        }
    }

    #[test]
    fn expire_at_in_the_past_deletes_unless_the_condition_refuses() {
        let engine = engine();
        set(&engine, "k", "v");
        assert!(!engine.expire_at(b"k", START - 1, ExpireCondition::IfGreater));
        assert_eq!(get(&engine, "k").as_deref(), Some("v"));
        assert!(engine.expire_at(b"k", START, ExpireCondition::IfLess));
        assert_eq!(get(&engine, "k"), None);
        assert_eq!(engine.len(), 0);
        assert!(!engine.expire_at(b"k", START + 10, ExpireCondition::Always));
    }

    #[test]
    fn ttl_counts_down_on_the_clock() {
        let engine = engine();
        assert_eq!(engine.ttl(b"k"), Ttl::Missing);
        set(&engine, "p", "v");
        assert_eq!(engine.ttl(b"p"), Ttl::Persistent);
        set_with(&engine, "k", "v", expiring_at(START + 50));
        engine.clock().advance(49);
        assert_eq!(engine.ttl(b"k"), Ttl::Remaining(1));
        engine.clock().advance(1);
        assert_eq!(engine.ttl(b"k"), Ttl::Missing);
    }

    #[test]
    fn persist_removes_a_ttl_only_when_there_is_one() {
        let engine = engine();
        assert!(!engine.persist(b"k"));
        set(&engine, "k", "v");
        assert!(!engine.persist(b"k"));
        engine.expire_at(b"k", START + 10, ExpireCondition::Always);
        assert!(engine.persist(b"k"));
        assert_eq!(engine.ttl(b"k"), Ttl::Persistent);
        engine.clock().advance(100);
        assert_eq!(get(&engine, "k").as_deref(), Some("v"));
        assert_eq!(
            engine.expire_cycle(100),
            0,
            "the stale heap item removes nothing"
        );
    }

    #[test]
    fn lazily_expired_keys_are_invisible_but_still_counted_by_len() {
        let engine = engine();
        set_with(&engine, "k", "v", expiring_at(START + 10));
        set(&engine, "p", "v");
        engine.clock().advance(10);
        assert_eq!(get(&engine, "k"), None);
        assert_eq!(engine.exists(&[b("k")]), 0);
        assert_eq!(engine.ttl(b"k"), Ttl::Missing);
        assert!(!engine.persist(b"k"));
        assert_eq!(engine.keys(&Pattern::new(b"*")), vec![b("p")]);
        assert_eq!(engine.keys(&Pattern::new(b"k")), Vec::<Bytes>::new());
        assert_eq!(scan_all(&engine, None, 10), vec![b("p")]);
        // `persist` above reaped it under the write lock.
        assert_eq!(engine.len(), 1);
        assert_eq!(engine.expired_total(), 1);
    }

    #[test]
    fn reads_do_not_remove_expired_keys_but_expire_cycle_does() {
        let engine = engine();
        for i in 0..100 {
            set_with(
                &engine,
                &format!("k{i}"),
                "v",
                expiring_at(START + 1 + i % 2),
            );
        }
        set(&engine, "stay", "v");
        engine.clock().advance(1);
        assert_eq!(engine.get(b"k0"), None);
        assert_eq!(engine.len(), 101, "DBSIZE still counts keys nobody removed");
        assert_eq!(engine.expire_cycle(30), 30);
        assert_eq!(engine.expire_cycle(1000), 20, "only the 50 due keys go");
        assert_eq!(engine.len(), 51);
        assert_eq!(engine.expired_total(), 50);
        engine.clock().advance(1);
        assert_eq!(engine.expire_cycle(1000), 50);
        assert_eq!(engine.keys(&Pattern::new(b"*")), vec![b("stay")]);
        assert_eq!(engine.memory().keys_with_ttl, 0);
        assert_eq!(engine.expire_cycle(0), 0);
    }

    #[test]
    fn expire_cycle_skips_deleted_extended_and_rewritten_keys() {
        let engine = engine();
        for key in ["deleted", "extended", "rewritten", "shortened", "due"] {
            set_with(&engine, key, "v", expiring_at(START + 10));
        }
        engine.del(&[b("deleted")]);
        engine.expire_at(b"extended", START + 100, ExpireCondition::Always);
        set(&engine, "rewritten", "v");
        engine.expire_at(b"shortened", START + 5, ExpireCondition::Always);
        engine.clock().advance(10);
        assert_eq!(engine.expire_cycle(100), 2, "`due` and `shortened`");
        assert_eq!(get(&engine, "extended").as_deref(), Some("v"));
        assert_eq!(get(&engine, "rewritten").as_deref(), Some("v"));
        engine.clock().advance(90);
        assert_eq!(engine.expire_cycle(100), 1);
        assert_eq!(engine.len(), 1);
    }

    #[test]
    fn expiry_heap_stays_bounded_when_one_key_is_re_expired_forever() {
        let engine = ShardedEngine::new(1, Clock::manual(START));
        set(&engine, "k", "v");
        for i in 0..10_000 {
            engine.expire_at(b"k", START + 1000 + i, ExpireCondition::Always);
        }
        let heap_len = engine.shards[0].read().expiry.len() as u64;
        assert!(
            heap_len <= 2 + STALE_EXPIRY_SLACK + 1,
            "heap holds {heap_len} items"
        );
        engine.clock().advance(1000 + 10_000);
        assert_eq!(engine.expire_cycle(10), 1);
    }

    #[test]
    fn scan_returns_every_key_exactly_once_for_any_count() {
        let engine = engine();
        for i in 0..1000 {
            set(&engine, &format!("key:{i}"), "v");
        }
        for count in [1, 3, 10, 999, 5000] {
            let keys = scan_all(&engine, None, count);
            let unique: HashSet<_> = keys.iter().cloned().collect();
            assert_eq!(keys.len(), 1000, "count {count}");
            assert_eq!(unique.len(), 1000, "count {count}");
        }
    }

    #[test]
    fn scan_count_counts_visited_entries_and_match_filters_them() {
        let engine = engine();
        for i in 0..100 {
            set(
                &engine,
                &format!("{}:{i}", if i % 10 == 0 { "ten" } else { "other" }),
                "v",
            );
        }
        let first = engine.scan(0, None, 10);
        assert_eq!(first.keys.len(), 10);
        assert_ne!(first.cursor, 0);

        let pattern = Pattern::new(b"ten:*");
        let mut pages = 0;
        let mut cursor = 0;
        let mut matched = Vec::new();
        loop {
            let page = engine.scan(cursor, Some(&pattern), 10);
            pages += 1;
            matched.extend(page.keys);
            cursor = page.cursor;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(matched.len(), 10);
        assert!(
            pages >= 10,
            "COUNT 10 over 100 entries takes at least 10 pages, took {pages}"
        );
        assert_eq!(
            scan_all(&engine, Some(&Pattern::new(b"*")), 1000).len(),
            100
        );
    }

    #[test]
    fn scan_of_an_empty_map_ends_at_once_and_odd_cursors_are_harmless() {
        let engine = engine();
        assert_eq!(
            engine.scan(0, None, 10),
            ScanPage {
                cursor: 0,
                keys: Vec::new()
            }
        );
        set(&engine, "k", "v");
        assert_eq!(engine.scan(MAX_POSITION + 1, None, 10).cursor, 0);
        assert_eq!(
            engine.scan(u64::MAX, None, 10),
            ScanPage {
                cursor: 0,
                keys: Vec::new()
            }
        );
        assert_eq!(
            engine.scan(0, None, 0).keys,
            vec![b("k")],
            "COUNT 0 still makes progress"
        );
    }

    #[test]
    fn colliding_keys_share_buckets_and_behave_like_any_other() {
        let engine = colliding_engine();
        for i in 0..200 {
            set_with(
                &engine,
                &format!("k{i}"),
                &i.to_string(),
                expiring_at(START + 10 + i % 2),
            );
        }
        assert!(engine.memory().held_bytes > engine.memory().live_bytes);
        for i in 0..200 {
            assert_eq!(get(&engine, &format!("k{i}")), Some(i.to_string()));
        }
        // Pages never split a bucket, so a small COUNT still sees every key once.
        let keys = scan_all(&engine, None, 3);
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 200);
        assert_eq!(keys.len(), 200);
        assert_eq!(engine.del(&[b("k0"), b("k1"), b("k2")]), 3);
        assert_eq!(engine.incr_by(b"k3", 1), Ok(4));
        engine.clock().advance(10);
        assert_eq!(engine.expire_cycle(1000), 98, "even keys k4..k198 were due");
        engine.clock().advance(1);
        assert_eq!(engine.expire_cycle(1000), 99);
        let memory = engine.memory();
        assert_eq!((memory.keys, memory.live_bytes), (0, 0));
        assert_eq!(
            engine
                .shards
                .iter()
                .map(|s| s.read().spill_bytes)
                .sum::<u64>(),
            0
        );
    }

    #[test]
    fn keys_uses_the_pattern_and_literal_patterns_look_up_directly() {
        let engine = engine();
        for key in ["user:1", "user:2", "order:1", "user:*"] {
            set(&engine, key, "v");
        }
        let mut users = engine.keys(&Pattern::new(b"user:?"));
        users.sort();
        assert_eq!(users, vec![b("user:*"), b("user:1"), b("user:2")]);
        assert_eq!(engine.keys(&Pattern::new(br"user:\*")), vec![b("user:*")]);
        assert_eq!(engine.keys(&Pattern::new(b"order:2")), Vec::<Bytes>::new());
        assert_eq!(engine.keys(&Pattern::new(b"*")).len(), 4);
    }

    #[test]
    fn clear_empties_everything_but_keeps_the_expiry_statistic() {
        let engine = engine();
        set_with(&engine, "t", "v", expiring_at(START + 1));
        set(&engine, "p", "v");
        engine.clock().advance(1);
        engine.expire_cycle(10);
        engine.clear();
        assert_eq!(engine.len(), 0);
        assert_eq!(get(&engine, "p"), None);
        assert_eq!(engine.expired_total(), 1);
        let memory = engine.memory();
        assert_eq!(
            (memory.keys, memory.keys_with_ttl, memory.live_bytes),
            (0, 0, 0)
        );
    }

    #[test]
    fn memory_report_counts_keys_values_and_overhead() {
        let engine = engine();
        set(&engine, "abc", "12345");
        set_with(&engine, "t", "", expiring_at(START + 10));
        let memory = engine.memory();
        assert_eq!(memory.keys, 2);
        assert_eq!(memory.keys_with_ttl, 1);
        let overhead = ShardedEngine::ENTRY_OVERHEAD_BYTES;
        assert_eq!(
            memory.live_bytes,
            8 + 1 + 2 * overhead + EXPIRY_ITEM_BYTES as u64
        );
        assert!(memory.held_bytes >= memory.live_bytes);
        set(&engine, "abc", "1");
        assert_eq!(engine.memory().live_bytes, memory.live_bytes - 4);
    }

    #[test]
    fn mass_delete_drops_live_bytes_and_compact_brings_held_down_to_live() {
        let engine = ShardedEngine::new(16, Clock::manual(START));
        let value = "v".repeat(32);
        let keys: Vec<Bytes> = (0..100_000).map(|i| b(&format!("key:{i:06}"))).collect();
        for key in &keys {
            engine.set(key.clone(), b(&value), expiring_at(START + 3_600_000));
        }
        let full = engine.memory();
        assert_eq!(full.keys, 100_000);
        let per_entry = 10 + 32 + ShardedEngine::ENTRY_OVERHEAD_BYTES + EXPIRY_ITEM_BYTES as u64;
        assert_eq!(full.live_bytes, 100_000 * per_entry);

        let doomed: Vec<Bytes> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 20 != 0)
            .map(|(_, k)| k.clone())
            .collect();
        assert_eq!(engine.del(&doomed), 95_000);
        let after_delete = engine.memory();
        assert_eq!(after_delete.keys, 5_000);
        assert_eq!(after_delete.live_bytes, 5_000 * per_entry);
        assert!(
            after_delete.held_bytes > 2 * after_delete.live_bytes,
            "stale expiry items are held for nothing: {after_delete:?}"
        );

        let released = engine.compact();
        let compacted = engine.memory();
        assert_eq!(released, after_delete.held_bytes - compacted.held_bytes);
        assert!(
            compacted.held_bytes < compacted.live_bytes + compacted.live_bytes / 20,
            "held should be within 5% of live: {compacted:?}"
        );
        assert_eq!(engine.compact(), 0, "nothing left to give back");
        for key in keys.iter().step_by(20) {
            assert!(engine.get(key).is_some());
        }
    }

    #[test]
    fn scan_under_concurrent_churn_keeps_its_guarantees() {
        let engine = ShardedEngine::new(16, Clock::manual(START));
        let stable: Vec<Bytes> = (0..2000).map(|i| b(&format!("stable:{i}"))).collect();
        let dead: Vec<Bytes> = (0..500).map(|i| b(&format!("dead:{i}"))).collect();
        for key in stable.iter().chain(&dead) {
            engine.set(key.clone(), b("v"), SetOptions::default());
        }
        engine.del(&dead);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for worker in 0..2u64 {
                let (engine, stop) = (&engine, &stop);
                scope.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ worker;
                    while !stop.load(Ordering::Relaxed) {
                        // xorshift64: a fixed-seed stream, no crate needed.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let key = b(&format!("churn:{}", rng % 3000));
                        if rng & (1 << 40) == 0 {
                            engine.set(key, b("v"), SetOptions::default());
                        } else {
                            engine.del(&[key]);
                        }
                    }
                });
            }
            let _stop = StopOnDrop(&stop);
            for iteration in 0..20 {
                let mut seen: HashMap<Bytes, usize> = HashMap::new();
                for key in scan_all(&engine, None, 1 + iteration % 17) {
                    *seen.entry(key).or_default() += 1;
                }
                for key in &stable {
                    assert_eq!(seen.get(key), Some(&1), "{key:?} in iteration {iteration}");
                }
                for key in seen.keys() {
                    assert!(!key.starts_with(b"dead:"), "absent key {key:?} returned");
                    assert!(key.starts_with(b"stable:") || key.starts_with(b"churn:"));
                }
            }
        });
    }

    #[test]
    fn mset_and_del_are_atomic_across_shards() {
        let engine = engine();
        // Enough keys to span every shard, so a non-atomic MSET would leave a
        // wide window between its first and last shard.
        let mut keys: Vec<Bytes> = Vec::new();
        let mut covered = HashSet::new();
        for i in 0.. {
            if covered.len() == engine.shards.len() && keys.len() >= 32 {
                break;
            }
            let key = b(&format!("pair:{i}"));
            covered.insert(engine.locate(&key).shard);
            keys.push(key);
        }
        let all = keys.len() as u64;
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (engine, done, keys) = (&engine, &done, &keys);
            scope.spawn(move || {
                let _stop = StopOnDrop(done);
                for i in 0..3000u32 {
                    let value = Bytes::from(i.to_string());
                    engine.mset(keys.iter().map(|k| (k.clone(), value.clone())).collect());
                    if i % 3 == 0 {
                        assert_eq!(engine.del(keys), all);
                    }
                }
            });
            for _ in 0..2 {
                scope.spawn(move || {
                    let mut reads = 0;
                    while !done.load(Ordering::Relaxed) || reads < 100 {
                        let values = engine.mget(keys);
                        assert!(
                            values.iter().all(|v| *v == values[0]),
                            "MGET saw part of an MSET or DEL: {values:?}"
                        );
                        let present = engine.exists(keys);
                        assert!(
                            present == 0 || present == all,
                            "EXISTS saw {present} of {all}"
                        );
                        reads += 1;
                    }
                });
            }
        });
    }

    #[test]
    fn concurrent_incr_from_eight_threads_sums_exactly() {
        let engine = engine();
        set_with(&engine, "ttl-counter", "0", expiring_at(START + 1_000_000));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let engine = &engine;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        engine.incr_by(b"counter", 1).unwrap();
                        engine.incr_by(b"ttl-counter", 2).unwrap();
                    }
                });
            }
        });
        assert_eq!(get(&engine, "counter").as_deref(), Some("8000"));
        assert_eq!(get(&engine, "ttl-counter").as_deref(), Some("16000"));
        assert_eq!(engine.ttl(b"ttl-counter"), Ttl::Remaining(1_000_000));
    }

    #[test]
    fn concurrent_expire_cycles_and_readers_agree_on_expired_keys() {
        let engine = ShardedEngine::new(8, Clock::manual(START));
        for i in 0..5000 {
            set_with(
                &engine,
                &format!("k{i}"),
                "v",
                expiring_at(START + 1 + i % 5),
            );
        }
        engine.clock().advance(5);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| while engine.expire_cycle(64) > 0 {});
            }
            scope.spawn(|| {
                for i in 0..5000 {
                    assert_eq!(engine.get(format!("k{i}").as_bytes()), None);
                }
            });
        });
        while engine.expire_cycle(64) > 0 {}
        assert_eq!(engine.len(), 0);
        assert_eq!(engine.expired_total(), 5000);
    }
}
