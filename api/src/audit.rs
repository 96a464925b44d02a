//! A storm's delete journal: the existing keys a storm in the sidecar deleted
//! and what became of each once it ended, as `GET /v1/storms/{id}/audit`
//! serves it, and its counts as the storm report and the MapChaos status
//! carry them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What became of one existing key a storm deleted. The snake_case names
/// are the ones logs and summaries show, so they never change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeletedKeyOutcome {
    /// Put back as it was before the storm (with the TTL it had left).
    Restored,
    /// Left as it is: the application wrote it after the storm deleted it.
    AppWrote,
    /// The application wrote it, the storm then overwrote or deleted that
    /// write, and the restore put the application's write back.
    AppWriteRestored,
    /// Its TTL ran out during the storm: left absent, as it would have been.
    Expired,
    /// It held its original value at the end: nothing to put back.
    Untouched,
    /// It kept changing under the restore's compare-and-set: left as it is.
    Contended,
    /// The restore could not reach the map for it: its state is not known.
    Failed,
    /// Not restored: the storm ran with `restore: false`, or ended before
    /// its restore.
    NotRestored,
}

impl DeletedKeyOutcome {
    pub const ALL: [DeletedKeyOutcome; 8] = [
        DeletedKeyOutcome::Restored,
        DeletedKeyOutcome::AppWrote,
        DeletedKeyOutcome::AppWriteRestored,
        DeletedKeyOutcome::Expired,
        DeletedKeyOutcome::Untouched,
        DeletedKeyOutcome::Contended,
        DeletedKeyOutcome::Failed,
        DeletedKeyOutcome::NotRestored,
    ];

    /// Its snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletedKeyOutcome::Restored => "restored",
            DeletedKeyOutcome::AppWrote => "app_wrote",
            DeletedKeyOutcome::AppWriteRestored => "app_write_restored",
            DeletedKeyOutcome::Expired => "expired",
            DeletedKeyOutcome::Untouched => "untouched",
            DeletedKeyOutcome::Contended => "contended",
            DeletedKeyOutcome::Failed => "failed",
            DeletedKeyOutcome::NotRestored => "not_restored",
        }
    }
}

/// The journal's counts: how many existing keys the storm deleted, and how
/// many of them ended each way (outcomes with no key left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteJournalSummary {
    /// Distinct existing keys the storm's workers deleted.
    pub deleted: u64,
    /// Those keys by what became of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<DeletedKeyOutcome, u64>,
}

impl DeleteJournalSummary {
    /// Add another target's counts (for a run's summary).
    pub fn add(&mut self, other: &DeleteJournalSummary) {
        self.deleted += other.deleted;
        for (outcome, n) in &other.outcomes {
            *self.outcomes.entry(*outcome).or_default() += n;
        }
    }

    /// Keys that ended with `outcome`.
    pub fn count(&self, outcome: DeletedKeyOutcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }
}

/// One key of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedKey {
    /// The key, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hex: Option<String>,
    pub outcome: DeletedKeyOutcome,
}

impl DeletedKey {
    pub fn new(key: &[u8], outcome: DeletedKeyOutcome) -> Self {
        match std::str::from_utf8(key) {
            Ok(text) => DeletedKey {
                key: Some(text.to_owned()),
                key_hex: None,
                outcome,
            },
            Err(_) => DeletedKey {
                key: None,
                key_hex: Some(key.iter().map(|b| format!("{b:02x}")).collect()),
                outcome,
            },
        }
    }
}

/// `GET /v1/storms/{id}/audit`: every existing key the storm deleted, in
/// byte order, with what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StormAudit {
    /// The storm's id.
    pub id: String,
    pub summary: DeleteJournalSummary,
    pub keys: Vec<DeletedKey>,
}

impl StormAudit {
    /// The journal of storm `id` from its keys and their outcomes.
    pub fn new(id: &str, keys: Vec<DeletedKey>) -> Self {
        let mut summary = DeleteJournalSummary {
            deleted: keys.len() as u64,
            outcomes: BTreeMap::new(),
        };
        for key in &keys {
            *summary.outcomes.entry(key.outcome).or_default() += 1;
        }
        StormAudit {
            id: id.to_owned(),
            summary,
            keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_keys_outcome_and_adds_up_across_targets() {
        let audit = StormAudit::new(
            "s",
            vec![
                DeletedKey::new(b"a", DeletedKeyOutcome::Restored),
                DeletedKey::new(b"b", DeletedKeyOutcome::AppWrote),
                DeletedKey::new(&[0xff], DeletedKeyOutcome::Restored),
            ],
        );
        assert_eq!(audit.summary.deleted, 3);
        assert_eq!(audit.summary.count(DeletedKeyOutcome::Restored), 2);
        assert_eq!(audit.keys[2].key_hex.as_deref(), Some("ff"));
        let json = serde_json::to_value(&audit).unwrap();
        assert_eq!(json["summary"]["outcomes"]["app_wrote"], 1);
        assert_eq!(json["keys"][1]["key"], "b");
        let mut total = DeleteJournalSummary::default();
        total.add(&audit.summary);
        total.add(&audit.summary);
        assert_eq!(total.deleted, 6);
        assert_eq!(total.count(DeletedKeyOutcome::AppWrote), 2);
        for outcome in DeletedKeyOutcome::ALL {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                outcome.as_str(),
                "{outcome:?}"
            );
        }
    }
}
