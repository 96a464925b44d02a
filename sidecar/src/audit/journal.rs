//! A storm's delete journal: the existing keys its workers deleted, gathered
//! by each engine client on its own (no lock shared on the storm's hot path)
//! and merged when the client is dropped; then, once the storm has ended,
//! what became of each key.

use std::collections::HashSet;

use parking_lot::Mutex;

/// The keys one storm deleted so far.
#[derive(Debug, Default)]
pub struct JournalRecorder {
    deleted: Mutex<HashSet<Box<[u8]>>>,
}

impl JournalRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add what one client deleted.
    pub(crate) fn merge(&self, keys: HashSet<Box<[u8]>>) {
        let mut deleted = self.deleted.lock();
        if deleted.is_empty() {
            *deleted = keys;
        } else {
            deleted.extend(keys);
        }
    }

    /// Every key deleted, in byte order.
    pub fn deleted(&self) -> Vec<Box<[u8]>> {
        let mut keys: Vec<_> = self.deleted.lock().iter().cloned().collect();
        keys.sort_unstable();
        keys
    }
}
