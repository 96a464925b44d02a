//! A storm's delete journal: the existing keys its workers deleted, gathered
//! by each engine client on its own (no lock shared on the storm's hot path)
//! and merged when the client is dropped; then, once the storm has ended,
//! what became of each key, from what the storm's restore did to it.

use std::collections::{HashMap, HashSet};

use mapchaos_api::audit::{DeletedKey, DeletedKeyOutcome, StormAudit};
use parking_lot::Mutex;

/// What one storm deleted, and what its restore did, so far.
#[derive(Debug, Default)]
pub struct JournalRecorder {
    deleted: Mutex<HashSet<Box<[u8]>>>,
    /// Per key the restore tried: whether it wrote the key.
    restores: Mutex<HashMap<Box<[u8]>, bool>>,
}

impl JournalRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add what one client deleted and restored.
    pub(crate) fn merge(&self, deleted: HashSet<Box<[u8]>>, restores: HashMap<Box<[u8]>, bool>) {
        if !deleted.is_empty() {
            self.deleted.lock().extend(deleted);
        }
        if !restores.is_empty() {
            self.restores.lock().extend(restores);
        }
    }

    /// The journal of storm `id`, once it has ended: every key deleted, in
    /// byte order, with its outcome. `restore_asked` is the storm's
    /// `restore`: without it nothing is put back.
    pub fn journal(&self, id: &str, restore_asked: bool) -> StormAudit {
        let mut keys: Vec<Box<[u8]>> = self.deleted.lock().iter().cloned().collect();
        keys.sort_unstable();
        let restores = self.restores.lock();
        let entries = keys
            .iter()
            .map(|key| {
                let outcome = match restores.get(key) {
                    Some(true) => DeletedKeyOutcome::Restored,
                    // The map refused: the key holds a value no storm wrote.
                    Some(false) => DeletedKeyOutcome::AppWrote,
                    None if !restore_asked => DeletedKeyOutcome::NotRestored,
                    // A restore passes over only a key whose TTL ran out
                    // during the storm.
                    None => DeletedKeyOutcome::Expired,
                };
                DeletedKey::new(key, outcome)
            })
            .collect();
        StormAudit::new(id, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> HashSet<Box<[u8]>> {
        names.iter().map(|k| k.as_bytes().into()).collect()
    }

    #[test]
    fn every_deleted_key_gets_the_outcome_of_its_restore() {
        let journal = JournalRecorder::new();
        journal.merge(keys(&["b", "a"]), HashMap::new());
        journal.merge(keys(&["c", "a", "d"]), HashMap::new());
        journal.merge(
            HashSet::new(),
            HashMap::from([
                (b"a".as_slice().into(), true),
                (b"b".as_slice().into(), false),
                // Restored but never deleted (overwritten): not in the journal.
                (b"z".as_slice().into(), true),
            ]),
        );
        let audit = journal.journal("s", true);
        let got: Vec<(Option<&str>, DeletedKeyOutcome)> = audit
            .keys
            .iter()
            .map(|k| (k.key.as_deref(), k.outcome))
            .collect();
        assert_eq!(
            got,
            [
                (Some("a"), DeletedKeyOutcome::Restored),
                (Some("b"), DeletedKeyOutcome::AppWrote),
                (Some("c"), DeletedKeyOutcome::Expired),
                (Some("d"), DeletedKeyOutcome::Expired),
            ]
        );
        assert_eq!(audit.summary.deleted, 4);
        let unrestored = journal.journal("s", false);
        assert_eq!(unrestored.summary.count(DeletedKeyOutcome::NotRestored), 2);
    }
}
