//! The map engines behind the RESP server: one trait, so storms, the server and
//! tests see every engine the same way.
//!
//! Every single-key operation is linearizable: it takes effect atomically at
//! some instant between its call and its return. Multi-key operations (`MGET`,
//! `MSET`, `DEL k1 k2 …`) are atomic across their keys, as in Redis.

mod clock;
mod keyspace;
mod lagging;
mod pattern;
mod sharded;
mod transaction;

pub use clock::Clock;
pub use keyspace::Keyspace;
pub use lagging::LaggingEngine;
pub use pattern::Pattern;
pub use sharded::ShardedEngine;
pub use transaction::{Footprint, Watcher};

use std::sync::Arc;

use bytes::Bytes;

/// A deadline or a duration in milliseconds on the engine's [`Clock`].
pub type Millis = u64;

/// When `SET` may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always write.
    #[default]
    Always,
    /// `NX`: only when the key is absent.
    IfAbsent,
    /// `XX`: only when the key is present.
    IfPresent,
}

/// What `SET` does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// No option given: the key becomes persistent (Redis clears any TTL).
    #[default]
    Persist,
    /// `KEEPTTL`: keep the TTL the key had, if any.
    Keep,
    /// `EX`/`PX`/`EXAT`/`PXAT`: expire at this instant of the engine clock.
    At(Millis),
}

/// What [`MapEngine::restore`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreWrite {
    /// The key now holds what was wanted.
    Written,
    /// It held it already (the same bytes, or absent for nothing).
    AlreadyThere,
    /// It holds a value `replaceable` refused: left alone.
    Kept,
}

/// The options of one `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    pub condition: SetCondition,
    pub expiry: SetExpiry,
}

/// The result of `SET`: whether it wrote, and the value the key held just
/// before (needed for `SET … GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    pub written: bool,
    pub previous: Option<Bytes>,
}

/// `EXPIRE`'s conditions (Redis 7: `NX`, `XX`, `GT`, `LT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCondition {
    #[default]
    Always,
    /// Only when the key has no TTL.
    IfNoTtl,
    /// Only when the key has a TTL.
    IfTtl,
    /// Only when the new deadline is later (a persistent key counts as infinite).
    IfGreater,
    /// Only when the new deadline is earlier (a persistent key counts as infinite).
    IfLess,
}

/// A key's time to live, as `PTTL` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (`-2`).
    Missing,
    /// The key exists and never expires (`-1`).
    Persistent,
    /// The key expires in this many milliseconds.
    Remaining(Millis),
}

/// A key's deadline, as `PEXPIRETIME` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExpiry {
    /// The key does not exist (`-2`).
    Missing,
    /// The key exists and never expires (`-1`).
    Persistent,
    /// The key expires at this instant of the engine clock.
    At(Millis),
}

/// Why `INCRBY` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IncrError {
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
}

/// One page of a `SCAN` iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The cursor to pass next; `0` when the iteration is complete.
    pub cursor: u64,
    pub keys: Vec<Bytes>,
}

/// What the engine holds, for `INFO memory` and `mapchaos_map_memory_bytes`.
///
/// `live_bytes` counts what the live keys need (keys, values and the
/// engine's per-entry bookkeeping); `held_bytes` is what the engine's
/// structures still occupy, dead space included. After a mass delete the gap
/// between them is the memory the map keeps for nothing until it compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReport {
    pub keys: u64,
    pub keys_with_ttl: u64,
    pub live_bytes: u64,
    pub held_bytes: u64,
}

/// How a key left the map, as the engine tells its [`DeleteSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A command removed it (DEL, UNLINK, a deadline already past, the
    /// source of a RENAME…); who and which command is the caller's to say.
    Deleted,
    /// It had expired and a write found it (lazy expiry).
    ExpiredLazily,
    /// It had expired and active expiry found it.
    ExpiredActively,
}

/// Told of every key the engine removes, while the shard is still locked,
/// so nothing can slip between the removal and its record. Implementations
/// must not block and must not call back into the engine.
pub trait DeleteSink: Send + Sync + 'static {
    /// `key` was named by a removal; `removed` says whether it held a value
    /// (a `DEL` of an absent key is reported with `false`).
    fn deleted(&self, key: &[u8], how: Removal, removed: bool);
    /// `FLUSHDB`/`FLUSHALL` removed `keys` keys at once.
    fn cleared(&self, keys: u64);
}

/// A concurrent map with Redis string semantics and expiry.
///
/// Implementations must be safe to call from many threads at once and must
/// make every operation linearizable (see the module docs). Expired keys are
/// invisible to every operation (lazy expiry) whether or not
/// [`MapEngine::expire_cycle`] has removed them yet.
pub trait MapEngine: Send + Sync + 'static {
    /// `GET`.
    fn get(&self, key: &[u8]) -> Option<Bytes>;
    /// `MGET`, atomic across the keys.
    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>>;
    /// `SET` with its options.
    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome;
    /// `MSET`, atomic across the pairs; a key given twice keeps the last value.
    fn mset(&self, pairs: Vec<(Bytes, Bytes)>);
    /// `DEL`/`UNLINK`, atomic across the keys: how many existed and were removed.
    fn del(&self, keys: &[Bytes]) -> u64;
    /// `EXISTS`: how many of the keys exist (a key named twice counts twice).
    fn exists(&self, keys: &[Bytes]) -> u64;
    /// `DEL` of one key, without building a key list: whether it existed.
    fn del_one(&self, key: &[u8]) -> bool {
        self.del(&[Bytes::copy_from_slice(key)]) == 1
    }
    /// `EXISTS` of one key, without building a key list.
    fn exists_one(&self, key: &[u8]) -> bool {
        self.exists(&[Bytes::copy_from_slice(key)]) == 1
    }
    /// `INCRBY` (and `INCR`/`DECR`/`DECRBY`): the new value. An absent key counts as 0.
    /// The key's TTL is kept.
    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError>;
    /// `PEXPIREAT`-style: set the key's deadline (engine clock); `true` if set.
    /// A deadline already in the past deletes the key (and still answers `true`).
    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool;
    /// `PTTL`.
    fn ttl(&self, key: &[u8]) -> Ttl;
    /// `PEXPIRETIME`: the key's deadline itself, not a rounded remainder.
    fn expiry(&self, key: &[u8]) -> KeyExpiry {
        let now = self.clock().now();
        match self.ttl(key) {
            Ttl::Missing => KeyExpiry::Missing,
            Ttl::Persistent => KeyExpiry::Persistent,
            Ttl::Remaining(left) => KeyExpiry::At(now.saturating_add(left)),
        }
    }
    /// `PERSIST`: `true` if the key had a TTL that was removed.
    fn persist(&self, key: &[u8]) -> bool;
    /// One `SCAN` step. Guarantees (as Redis's): a key present from the first
    /// call of an iteration to its last return is returned at least once; a key
    /// absent for that whole time is never returned. `count` is a hint.
    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage;
    /// `KEYS`: every live key matching the pattern.
    fn keys(&self, pattern: &Pattern) -> Vec<Bytes>;
    /// `DBSIZE`: the number of keys (may include expired keys not yet removed,
    /// as Redis's does).
    fn len(&self) -> u64;
    /// Whether [`MapEngine::len`] is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `FLUSHDB`/`FLUSHALL`.
    fn clear(&self);
    /// What the engine holds (see [`MemoryReport`]).
    fn memory(&self) -> MemoryReport;
    /// Active expiry: remove up to `budget` expired keys; returns how many were removed.
    fn expire_cycle(&self, budget: usize) -> usize;
    /// Keys removed because they expired (lazily or actively), for `INFO`.
    fn expired_total(&self) -> u64;
    /// Make `key` hold `wanted` (a value and its expiry, or nothing) after a
    /// storm, atomically: only when the key is absent or `replaceable`
    /// accepts the value it holds now (a value a storm wrote), so a write by
    /// anyone else is never overwritten. An expiry already past writes
    /// nothing (and counts as done for `None`).
    fn restore(
        &self,
        key: Bytes,
        wanted: Option<(Bytes, SetExpiry)>,
        replaceable: &dyn Fn(&[u8]) -> bool,
    ) -> RestoreWrite;
    /// Give memory back when most of what the engine holds is dead space;
    /// returns the bytes released from the engine's own structures.
    fn compact(&self) -> u64;
    /// `WATCH`: from now on, any change to `key` (a write, a delete, an
    /// expiry, a flush; by anyone) raises `watcher`, until
    /// [`MapEngine::unwatch`] or a transaction ends the watch.
    fn watch(&self, watcher: &Arc<Watcher>, key: &[u8]);
    /// Stop telling `watcher` about changes to `keys`.
    fn unwatch(&self, watcher: &Arc<Watcher>, keys: &[Bytes]);
    /// `EXEC`: run `body` with the shards of `footprint` and of the watched
    /// keys locked, so no other operation interleaves with it. When `watch`
    /// is given, `body` runs only if none of its keys changed since it was
    /// watched (Redis also counts a key that expired in the meantime); the
    /// watch ends either way. `true` when `body` ran.
    fn transaction(
        &self,
        footprint: Footprint<'_>,
        watch: Option<(&Arc<Watcher>, &[Bytes])>,
        body: &mut dyn FnMut(&dyn Keyspace),
    ) -> bool;
    /// The clock deadlines are measured on.
    fn clock(&self) -> &Clock;
    /// The engine's name, for `INFO` and logs.
    fn name(&self) -> &'static str;
}
