//! Who `WATCH`es which of a shard's keys, and raising them when a key
//! changes. Every change to an entry goes through the shard's few mutators
//! (insert, remove, overwrite, new deadline), which report it here, so no
//! write path (a command, expiry, a flush, a storm's restore) can miss one.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Millis, Shard, Watcher};

/// One client's watch on one key.
#[derive(Debug)]
struct Watch {
    watcher: Arc<Watcher>,
    /// The key was there but already expired when it was watched. Redis
    /// counts it as absent then, so its removal is no change (and clears this).
    stale: bool,
}

#[derive(Debug)]
struct KeyWatches {
    h: u64,
    watches: Vec<Watch>,
}

/// The watched keys of one shard.
#[derive(Debug, Default)]
pub(super) struct Watches(HashMap<Box<[u8]>, KeyWatches>);

impl Shard {
    /// `key` was written or its deadline changed.
    pub(super) fn changed(&mut self, key: &[u8]) {
        if !self.watched.0.is_empty() {
            self.raise(key, false);
        }
    }

    /// `key` was removed (deleted, expired or flushed).
    pub(super) fn removed(&mut self, key: &[u8]) {
        if !self.watched.0.is_empty() {
            self.raise(key, true);
        }
    }

    #[cold]
    fn raise(&mut self, key: &[u8], removed: bool) {
        if let Some(watched) = self.watched.0.get_mut(key) {
            for watch in &mut watched.watches {
                if watch.stale && removed {
                    watch.stale = false;
                } else {
                    watch.watcher.raise();
                }
            }
        }
    }

    /// `FLUSHALL` is about to empty the shard: Redis counts it as a change of
    /// every watched key that is there (even expired, unless it already was
    /// when watched).
    pub(super) fn flushing(&mut self) {
        if self.watched.0.is_empty() {
            return;
        }
        let mut watched = std::mem::take(&mut self.watched);
        for (key, keyed) in &mut watched.0 {
            if self.find(keyed.h, key).is_none() {
                continue;
            }
            for watch in &mut keyed.watches {
                if watch.stale {
                    watch.stale = false;
                } else {
                    watch.watcher.raise();
                }
            }
        }
        self.watched = watched;
    }

    pub(super) fn add_watch(&mut self, h: u64, key: &[u8], watcher: &Arc<Watcher>, now: Millis) {
        let stale = self.find(h, key).is_some_and(|entry| entry.is_expired(now));
        let keyed = self
            .watched
            .0
            .entry(key.into())
            .or_insert_with(|| KeyWatches {
                h,
                watches: Vec::new(),
            });
        if !keyed
            .watches
            .iter()
            .any(|watch| Arc::ptr_eq(&watch.watcher, watcher))
        {
            keyed.watches.push(Watch {
                watcher: watcher.clone(),
                stale,
            });
        }
    }

    pub(super) fn remove_watch(&mut self, key: &[u8], watcher: &Arc<Watcher>) {
        let Some(keyed) = self.watched.0.get_mut(key) else {
            return;
        };
        keyed
            .watches
            .retain(|watch| !Arc::ptr_eq(&watch.watcher, watcher));
        if keyed.watches.is_empty() {
            self.watched.0.remove(key);
            if self.watched.0.is_empty() {
                // Give back what a burst of watches grew the table to.
                self.watched = Watches::default();
            }
        }
    }

    /// Redis's `isWatchedKeyExpired`: the key was live when watched and has
    /// expired since, though nothing has removed it yet.
    pub(super) fn watch_expired(
        &self,
        h: u64,
        key: &[u8],
        watcher: &Arc<Watcher>,
        now: Millis,
    ) -> bool {
        let stale = self.watched.0.get(key).is_some_and(|keyed| {
            keyed
                .watches
                .iter()
                .any(|watch| Arc::ptr_eq(&watch.watcher, watcher) && watch.stale)
        });
        !stale && self.find(h, key).is_some_and(|entry| entry.is_expired(now))
    }
}
