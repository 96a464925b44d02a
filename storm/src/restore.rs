//! Putting back what a storm took from existing keys, without ever reverting
//! the application: per key, what the key should hold now (its original, or
//! the application's own last write during the storm), written only where
//! the key's current state is one the storm left (absent, or a storm value),
//! by a compare-and-set the map client makes atomic. Every key ends with an
//! explicit [`RestoreOutcome`].

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app_traffic::{AppTap, AppTraffic};
use crate::client::{ClientError, MapClient};
use crate::history::KeyId;
use crate::runner::{Keyspace, StormControl};

/// Keys decided and written per compare-and-set batch. In the sidecar the
/// application's commands wait while one batch is decided and written, so it
/// stays small.
pub const RESTORE_BATCH: usize = 256;

/// The application's last write to a key while a storm ran, as far as the
/// map's front end could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppWrite {
    /// `SET key value` without options: the key holds `value`, no TTL.
    Set(Bytes),
    /// `SET key value EX/PX/EXAT/PXAT …`, `SETEX`, `PSETEX`: the key holds
    /// `value` until this Unix time (ms, the server's clock).
    SetExpiring { value: Bytes, at_unix_ms: u64 },
    /// `DEL`/`UNLINK` (of any number of keys), `FLUSHDB`, `FLUSHALL`.
    Deleted,
    /// Any other write (SET with options, INCR, APPEND, EXPIRE…): what the
    /// key holds afterwards cannot be replayed. Should the storm overwrite or
    /// delete it afterwards, the key ends absent.
    Unknown,
}

/// What a restore wants a key to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// This value, expiring after `ttl_ms` when given.
    Value {
        value: &'a [u8],
        ttl_ms: Option<u64>,
    },
    /// Nothing.
    Absent,
}

/// One key of a compare-and-set restore batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreItem<'a> {
    pub key: &'a [u8],
    pub wanted: Wanted<'a>,
}

/// What the map client found and did for one [`RestoreItem`], atomically
/// with respect to every other client of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The key was absent or held a storm value; now it holds what was wanted.
    Written,
    /// It already held what was wanted (for a value: the same bytes).
    AlreadyThere,
    /// It holds bytes no storm wrote: someone else wrote it; left alone.
    Foreign,
    /// It kept changing under the compare-and-set; left as it is.
    Contended,
}

/// How one stormed key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RestoreOutcome {
    /// Its original value (with the TTL it had left) was put back.
    Restored,
    /// Its original value was put back while the application's writes could
    /// not be watched (over the network without `MONITOR`, or after the
    /// watch broke): an application write the storm overwrote or deleted
    /// may have been reverted.
    RestoredUnwatched,
    /// It held its original: nothing to put back.
    Untouched,
    /// Left because the application wrote it: it holds the application's
    /// value, or the application's last write was one that cannot be
    /// replayed (SET with options, INCR…).
    AppWrote,
    /// The application wrote it, then the storm overwrote or deleted that
    /// write: the application's write (its value, or its delete) was put back.
    AppWriteRestored,
    /// The application wrote it in a way that cannot be replayed, then the
    /// storm overwrote or deleted that write: the key is left absent (a
    /// storm value is removed), never given its older original back.
    AppWriteLost,
    /// Its TTL ran out during the storm: left (or made) absent.
    Expired,
    /// It kept changing under the compare-and-set: left as it is.
    Contended,
    /// The map did not answer: its state is not known.
    Failed,
}

impl RestoreOutcome {
    pub const ALL: [RestoreOutcome; 9] = [
        RestoreOutcome::Restored,
        RestoreOutcome::RestoredUnwatched,
        RestoreOutcome::Untouched,
        RestoreOutcome::AppWrote,
        RestoreOutcome::AppWriteRestored,
        RestoreOutcome::AppWriteLost,
        RestoreOutcome::Expired,
        RestoreOutcome::Contended,
        RestoreOutcome::Failed,
    ];

    /// Its name in logs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            RestoreOutcome::Restored => "restored",
            RestoreOutcome::RestoredUnwatched => "restored_unwatched",
            RestoreOutcome::Untouched => "untouched",
            RestoreOutcome::AppWrote => "app_wrote",
            RestoreOutcome::AppWriteRestored => "app_write_restored",
            RestoreOutcome::AppWriteLost => "app_write_lost",
            RestoreOutcome::Expired => "expired",
            RestoreOutcome::Contended => "contended",
            RestoreOutcome::Failed => "failed",
        }
    }

    /// Whether the restore wrote the key.
    pub fn put_back(self) -> bool {
        matches!(
            self,
            RestoreOutcome::Restored
                | RestoreOutcome::RestoredUnwatched
                | RestoreOutcome::AppWriteRestored
        )
    }
}

/// Every stormed key's outcome, by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub keys: Vec<Vec<u8>>,
    pub outcomes: Vec<RestoreOutcome>,
    /// How the restore told the application's writes apart, for the record.
    pub guarantee: String,
}

impl RestoreSummary {
    /// How many keys ended with `outcome`.
    pub fn count(&self, outcome: RestoreOutcome) -> u64 {
        self.outcomes.iter().filter(|&&o| o == outcome).count() as u64
    }

    /// Keys the restore wrote.
    pub fn put_back(&self) -> u64 {
        self.outcomes.iter().filter(|o| o.put_back()).count() as u64
    }

    /// `restored 10, untouched 2, app_wrote 1` (outcomes with no key left out).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = RestoreOutcome::ALL
            .iter()
            .filter_map(|&o| {
                let n = self.count(o);
                (n > 0).then(|| format!("{} {n}", o.name()))
            })
            .collect();
        if parts.is_empty() {
            "no keys".into()
        } else {
            parts.join(", ")
        }
    }

    /// Keys by outcome name, outcomes no key had left out: the report's form.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        RestoreOutcome::ALL
            .iter()
            .filter_map(|&o| {
                let n = self.count(o);
                (n > 0).then(|| (o.name().to_owned(), n))
            })
            .collect()
    }
}

/// Why a key gets the value it is wanted to hold.
#[derive(Clone, Copy)]
enum Reason {
    Original,
    AppWrite,
    /// The application's write cannot be replayed: only a storm value goes.
    AppWriteUnknown,
    Expired,
}

/// Where a restore learns what the application wrote meanwhile.
pub(crate) struct AppWrites<'a> {
    pub(crate) tap: &'a dyn AppTap,
    pub(crate) traffic: &'a AppTraffic,
}

/// Restore every key of `keyspace`. With `app`, each batch is decided and
/// written while the application's commands wait (a consistent cut of its
/// writes), so none lands between the decision and the write.
pub(crate) fn restore(
    client: &mut dyn MapClient,
    keyspace: &Keyspace,
    app: Option<AppWrites<'_>>,
    control: &StormControl,
) -> RestoreSummary {
    let total = keyspace.keys.len();
    let mut outcomes = Vec::with_capacity(total);
    control.set_restore_progress(0, total as u64);
    let read_at = keyspace.originals_read_at.unwrap_or_else(Instant::now);
    for start in (0..total).step_by(RESTORE_BATCH) {
        let end = (start + RESTORE_BATCH).min(total);
        let mut batch = |outcomes: &mut Vec<RestoreOutcome>| {
            let from = outcomes.len();
            restore_batch(
                client,
                keyspace,
                app.as_ref().map(|a| a.traffic),
                start..end,
                read_at.elapsed(),
                outcomes,
            );
            // Judged after the batch's write: a watch lost meanwhile counts.
            let unwatched = match &app {
                Some(app) => app.tap.lost().is_some(),
                None => client.unwatched(),
            };
            if unwatched {
                for outcome in &mut outcomes[from..] {
                    if *outcome == RestoreOutcome::Restored {
                        *outcome = RestoreOutcome::RestoredUnwatched;
                    }
                }
            }
        };
        match &app {
            Some(app) => app.tap.quiesce(&mut || batch(&mut outcomes)),
            None => batch(&mut outcomes),
        }
        control.set_restore_progress(end as u64, total as u64);
    }
    let guarantee = match &app {
        Some(app) => match app.tap.lost() {
            Some(lost) => format!(
                "{}; then the watch was lost ({lost}): keys restored since are restored_unwatched",
                app.tap.restore_guarantee()
            ),
            None => app.tap.restore_guarantee().to_owned(),
        },
        None => client.restore_guarantee().to_owned(),
    };
    RestoreSummary {
        keys: keyspace.keys.clone(),
        outcomes,
        guarantee,
    }
}

/// Now on the Unix clock, in milliseconds.
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn restore_batch(
    client: &mut dyn MapClient,
    keyspace: &Keyspace,
    traffic: Option<&AppTraffic>,
    range: std::ops::Range<usize>,
    since_read: Duration,
    outcomes: &mut Vec<RestoreOutcome>,
) {
    // Decided first, then written: the values are borrowed by the batch.
    let mut decided: Vec<Result<(Wanted<'_>, Reason), RestoreOutcome>> = Vec::new();
    let app_writes: Vec<Option<AppWrite>> = range
        .clone()
        .map(|i| traffic.and_then(|t| t.app_write(i as KeyId, &keyspace.keys[i])))
        .collect();
    for (i, app_write) in range.clone().zip(&app_writes) {
        decided.push(match app_write {
            Some(AppWrite::Unknown) => Ok((Wanted::Absent, Reason::AppWriteUnknown)),
            Some(AppWrite::Set(value)) => Ok((
                Wanted::Value {
                    value,
                    ttl_ms: None,
                },
                Reason::AppWrite,
            )),
            Some(AppWrite::Deleted) => Ok((Wanted::Absent, Reason::AppWrite)),
            Some(AppWrite::SetExpiring { value, at_unix_ms }) => {
                match at_unix_ms.checked_sub(unix_now_ms()) {
                    Some(left) if left > 0 => Ok((
                        Wanted::Value {
                            value,
                            ttl_ms: Some(left),
                        },
                        Reason::AppWrite,
                    )),
                    // The application's write has expired by now.
                    _ => Ok((Wanted::Absent, Reason::Expired)),
                }
            }
            None => match &keyspace.originals.get(i) {
                Some(Some((value, ttl))) => match ttl {
                    None => Ok((
                        Wanted::Value {
                            value,
                            ttl_ms: None,
                        },
                        Reason::Original,
                    )),
                    Some(ms) => match ms.checked_sub(since_read.as_millis() as u64) {
                        Some(left) if left > 0 => Ok((
                            Wanted::Value {
                                value,
                                ttl_ms: Some(left),
                            },
                            Reason::Original,
                        )),
                        // It would have expired by now: a storm value
                        // written since (with no TTL) must not outlive it.
                        _ => Ok((Wanted::Absent, Reason::Expired)),
                    },
                },
                _ => Err(RestoreOutcome::Failed),
            },
        });
    }
    let items: Vec<RestoreItem<'_>> = range
        .clone()
        .zip(&decided)
        .filter_map(|(i, d)| {
            d.as_ref().ok().map(|(wanted, _)| RestoreItem {
                key: &keyspace.keys[i],
                wanted: *wanted,
            })
        })
        .collect();
    let mut applied: Vec<Result<Applied, ClientError>> = Vec::with_capacity(items.len());
    if !items.is_empty() {
        client.restore(&items, &mut applied);
    }
    let mut applied = applied.into_iter();
    for decision in decided {
        outcomes.push(match decision {
            Err(outcome) => outcome,
            Ok((_, reason)) => match (applied.next(), reason) {
                (Some(Ok(Applied::Written)), Reason::Original) => RestoreOutcome::Restored,
                (Some(Ok(Applied::Written)), Reason::AppWrite) => RestoreOutcome::AppWriteRestored,
                (Some(Ok(Applied::AlreadyThere)), Reason::Original) => RestoreOutcome::Untouched,
                (Some(Ok(Applied::AlreadyThere)), Reason::AppWrite) => RestoreOutcome::AppWrote,
                (Some(Ok(Applied::Written | Applied::AlreadyThere)), Reason::Expired) => {
                    RestoreOutcome::Expired
                }
                (Some(Ok(Applied::Written | Applied::AlreadyThere)), Reason::AppWriteUnknown) => {
                    RestoreOutcome::AppWriteLost
                }
                (Some(Ok(Applied::Foreign)), _) => RestoreOutcome::AppWrote,
                (Some(Ok(Applied::Contended)), _) => RestoreOutcome::Contended,
                (Some(Err(_)) | None, _) => RestoreOutcome::Failed,
            },
        });
    }
}
