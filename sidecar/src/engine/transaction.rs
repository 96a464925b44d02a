//! The engine side of `MULTI`/`EXEC`/`WATCH`: what a transaction will touch,
//! and the flag a watched key's change raises.
//!
//! An engine runs a transaction with every shard it touches locked, taken in
//! the same ascending order as every multi-key operation takes them, so no
//! other client can see a transaction half done and two transactions cannot
//! deadlock. Watched keys' shards are locked too: the check that no watched
//! key changed and the commands that rely on it are one atomic step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The keys a transaction's commands name, or the whole keyspace when one of
/// them reaches every key (`SCAN`, `KEYS`, `FLUSHALL`, `DBSIZE`, `RANDOMKEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Footprint<'a> {
    Keys(Vec<&'a [u8]>),
    Everything,
}

/// One client's `WATCH`: raised by the engine when a watched key is written,
/// deleted, expires or is flushed, by anyone. A client starts a new watcher
/// after each `EXEC`, `DISCARD` or `UNWATCH`.
#[derive(Debug, Default)]
pub struct Watcher {
    dirty: AtomicBool,
}

impl Watcher {
    pub fn new() -> Arc<Self> {
        Arc::new(Watcher::default())
    }

    /// Whether a watched key changed since it was watched.
    pub fn is_dirty(&self) -> bool {
        // Raised and read under the lock of the key's shard; the atomic only
        // lets the flag be shared.
        self.dirty.load(Ordering::Relaxed)
    }

    pub(crate) fn raise(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
}
