//! What one command may do to the keys, whether it runs on its own (straight
//! on the engine) or inside a transaction (on the shards `EXEC` holds): the
//! command handlers see only this, so every command means the same in both.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    Clock, ExpireCondition, IncrError, KeyExpiry, MapEngine, MemoryReport, Millis, Pattern,
    ScanPage, SetOptions, SetOutcome, Ttl,
};

/// The data operations of [`MapEngine`], with the same meaning.
pub trait Keyspace {
    fn get(&self, key: &[u8]) -> Option<Bytes>;
    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>>;
    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome;
    fn mset(&self, pairs: Vec<(Bytes, Bytes)>);
    fn del(&self, keys: &[Bytes]) -> u64;
    fn exists(&self, keys: &[Bytes]) -> u64;
    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError>;
    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool;
    fn ttl(&self, key: &[u8]) -> Ttl;
    fn expiry(&self, key: &[u8]) -> KeyExpiry;
    fn persist(&self, key: &[u8]) -> bool;
    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage;
    fn keys(&self, pattern: &Pattern) -> Vec<Bytes>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn clear(&self);
    fn memory(&self) -> MemoryReport;
    fn clock(&self) -> &Clock;
    fn name(&self) -> &'static str;
}

/// A command on its own: straight on the engine.
impl Keyspace for Arc<dyn MapEngine> {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        (**self).get(key)
    }
    fn mget(&self, keys: &[Bytes]) -> Vec<Option<Bytes>> {
        (**self).mget(keys)
    }
    fn set(&self, key: Bytes, value: Bytes, options: SetOptions) -> SetOutcome {
        (**self).set(key, value, options)
    }
    fn mset(&self, pairs: Vec<(Bytes, Bytes)>) {
        (**self).mset(pairs)
    }
    fn del(&self, keys: &[Bytes]) -> u64 {
        (**self).del(keys)
    }
    fn exists(&self, keys: &[Bytes]) -> u64 {
        (**self).exists(keys)
    }
    fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        (**self).incr_by(key, delta)
    }
    fn expire_at(&self, key: &[u8], deadline: Millis, condition: ExpireCondition) -> bool {
        (**self).expire_at(key, deadline, condition)
    }
    fn ttl(&self, key: &[u8]) -> Ttl {
        (**self).ttl(key)
    }
    fn expiry(&self, key: &[u8]) -> KeyExpiry {
        (**self).expiry(key)
    }
    fn persist(&self, key: &[u8]) -> bool {
        (**self).persist(key)
    }
    fn scan(&self, cursor: u64, pattern: Option<&Pattern>, count: usize) -> ScanPage {
        (**self).scan(cursor, pattern, count)
    }
    fn keys(&self, pattern: &Pattern) -> Vec<Bytes> {
        (**self).keys(pattern)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn clear(&self) {
        (**self).clear()
    }
    fn memory(&self) -> MemoryReport {
        (**self).memory()
    }
    fn clock(&self) -> &Clock {
        (**self).clock()
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}
