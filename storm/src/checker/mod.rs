//! The race checker (CHECKER.md): splits a history by key, measures how hard
//! the storm raced, runs the named detectors and then the full
//! linearizability search per key in parallel, judges the SCANs, and rolls it
//! all up into a [`CheckReport`].

mod detect;
mod exposure;
mod scan;
mod search;
mod timeline;
#[cfg(test)]
pub(crate) use timeline::TIMELINE_OPS;
mod witness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mapchaos_api::{AnomalyKind, CheckReport, ExposureKind, KeyVerdictCounts};

use crate::history::{Event, History, KeyId, Op, ValueId};

/// How a check runs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Wall-clock time the search may spend on one key; a key that runs out
    /// is `unknown`, never `ok`.
    pub per_key_budget: Duration,
    /// Worker threads checking keys in parallel (at least one is used).
    pub threads: usize,
    /// How many witnesses the report keeps.
    pub max_witnesses: usize,
    /// When set, the check stops soon after (a signal, a shutdown): the keys
    /// not decided by then are `unknown`, never `ok`.
    pub cancel: Option<Arc<AtomicBool>>,
    /// The most memory the searches may hold at once, shared by the
    /// threads: a key whose search outgrows its thread's share is `unknown`.
    /// `None`: 1 GiB per thread.
    pub memory: Option<usize>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            per_key_budget: Duration::from_secs(10),
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            max_witnesses: 10,
            cancel: None,
            memory: None,
        }
    }
}

/// What a single-key operation did, as the register model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Get(Option<ValueId>),
    Set(ValueId),
    Del(bool),
    Exists(bool),
}

/// One operation of one key's sub-history, compact for the hot loops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    pub(crate) call: u64,
    pub(crate) ret: u64,
    pub(crate) action: Action,
    /// Its index in the history's events, for witnesses.
    pub(crate) event: u32,
}

impl KeyOp {
    pub(crate) fn is_info(&self) -> bool {
        self.ret == Event::NO_RETURN
    }
}

/// An anomaly found on one key, pointing at history events.
#[derive(Clone, Debug)]
pub(crate) struct Finding {
    pub(crate) kind: AnomalyKind,
    pub(crate) key: KeyId,
    /// The events involved.
    pub(crate) events: Vec<u32>,
    /// The one among them that cannot be explained, when one stands out.
    pub(crate) culprit: Option<u32>,
    pub(crate) explanation: String,
    /// For `nonlinearizable`: the longest legal prefix (events in order) and
    /// the register after it.
    pub(crate) prefix: Option<(Vec<u32>, Option<ValueId>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyVerdict {
    Ok,
    Illegal,
    Unknown,
}

/// Everything the per-key pass learns about one key.
struct KeyOutcome {
    verdict: KeyVerdict,
    exposure: exposure::KeyExposure,
    findings: Vec<Finding>,
    intervals: scan::KeyIntervals,
}

/// Judges a history: exposures, anomalies with witnesses, per-key verdicts
/// and the overall verdict.
pub fn check(history: &History, options: &CheckOptions) -> CheckReport {
    let by_key = split_by_key(history);
    let needs_intervals = history
        .events()
        .iter()
        .any(|e| matches!(e.op, Op::Scan { .. }) && !e.is_info());
    let outcomes = check_keys(&by_key, options, needs_intervals);
    let cancelled = options
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Acquire));

    let mut exposures: BTreeMap<ExposureKind, u64> =
        ExposureKind::ALL.iter().map(|&k| (k, 0)).collect();
    let mut anomalies: BTreeMap<AnomalyKind, u64> =
        AnomalyKind::ALL.iter().map(|&k| (k, 0)).collect();
    let mut findings = Vec::new();
    let mut max_overlap = 0;
    let mut verdicts = vec![None; by_key.len()];
    for (key, outcome) in outcomes.iter().enumerate() {
        let Some(outcome) = outcome else { continue };
        for (kind, n) in outcome.exposure.by_kind() {
            *exposures.entry(kind).or_default() += n;
        }
        max_overlap = max_overlap.max(outcome.exposure.max_overlap);
        verdicts[key] = Some(outcome.verdict);
        findings.extend(outcome.findings.iter().cloned());
    }
    // Keys the check was cancelled before reaching are unknown.
    for (key, ops) in by_key.iter().enumerate() {
        if verdicts[key].is_none() && !ops.is_empty() {
            verdicts[key] = Some(KeyVerdict::Unknown);
        }
    }
    let mut scan_duplicates = 0;
    if !cancelled {
        *exposures.entry(ExposureKind::DelScan).or_default() += exposure::del_scan_pairs(history);
        // A key without operations is absent throughout, which binds SCANs too.
        let untouched = scan::KeyIntervals::of(&[]);
        let intervals: Vec<&scan::KeyIntervals> = outcomes
            .iter()
            .map(|o| o.as_ref().map_or(&untouched, |o| &o.intervals))
            .collect();
        // Cancelled, the SCANs are not judged: unchecked keys have no intervals.
        let scans = scan::judge_scans(history, &intervals);
        for finding in &scans.findings {
            verdicts[finding.key as usize] = Some(KeyVerdict::Illegal);
        }
        findings.extend(scans.findings);
        scan_duplicates = scans.duplicates;
    }
    // Keys first, then kinds, so the witnesses kept are the same on every run.
    findings.sort_by_key(|f| (f.key, f.kind));
    for finding in &findings {
        *anomalies.entry(finding.kind).or_default() += 1;
    }

    let mut keys = KeyVerdictCounts::default();
    for verdict in verdicts.into_iter().flatten() {
        match verdict {
            KeyVerdict::Ok => keys.ok += 1,
            KeyVerdict::Illegal => keys.illegal += 1,
            KeyVerdict::Unknown => keys.unknown += 1,
        }
    }
    let witnesses = findings
        .iter()
        .take(options.max_witnesses)
        .map(|f| {
            let key = f.key as usize;
            // Presence spans are what binds a SCAN; other kinds do not need them.
            let scan = matches!(f.kind, AnomalyKind::ScanMiss | AnomalyKind::ScanPhantom);
            let intervals = outcomes[key]
                .as_ref()
                .filter(|_| scan)
                .map(|o| &o.intervals);
            witness::build(history, &by_key[key], f, intervals)
        })
        .collect();
    let ops_known = history.events().iter().filter(|e| !e.is_info()).count() as u64;
    let verdict = CheckReport::verdict_from(&exposures, &anomalies, &keys, ops_known);
    CheckReport {
        exposures,
        max_overlap,
        anomalies,
        witnesses,
        keys,
        ops_checked: history.events().len() as u64,
        ops_known,
        truncated: history.is_truncated(),
        scan_duplicates,
        verdict,
    }
}

/// Each key's operations (SCANs excluded), sorted by call.
fn split_by_key(history: &History) -> Vec<Vec<KeyOp>> {
    let mut counts = vec![0usize; history.keys().len()];
    for event in history.events() {
        if let Some(key) = event.op.key() {
            counts[key as usize] += 1;
        }
    }
    let mut by_key: Vec<Vec<KeyOp>> = counts.into_iter().map(Vec::with_capacity).collect();
    for (index, event) in history.events().iter().enumerate() {
        let (key, action) = match event.op {
            Op::Get { key, read } => (key, Action::Get(read)),
            Op::Set { key, value } => (key, Action::Set(value)),
            Op::Del { key, removed } => (key, Action::Del(removed)),
            Op::Exists { key, present } => (key, Action::Exists(present)),
            Op::Scan { .. } => continue,
        };
        // History::new bounds the event count by memory long before u32 matters,
        // but saturate rather than wrap if it ever does not.
        let event_index = u32::try_from(index).unwrap_or(u32::MAX);
        by_key[key as usize].push(KeyOp {
            call: event.call,
            ret: event.ret,
            action,
            event: event_index,
        });
    }
    by_key
}

/// Runs the per-key pass on `options.threads` threads, biggest keys first so
/// one hot key does not start last.
fn check_keys(
    by_key: &[Vec<KeyOp>],
    options: &CheckOptions,
    needs_intervals: bool,
) -> Vec<Option<KeyOutcome>> {
    let mut order: Vec<usize> = (0..by_key.len())
        .filter(|&k| !by_key[k].is_empty())
        .collect();
    order.sort_by_key(|&k| std::cmp::Reverse(by_key[k].len()));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(order.len()));
    let threads = options.threads.clamp(1, order.len().max(1));
    let memo_bytes = options
        .memory
        .map_or(search::MAX_MEMO_BYTES, |memory| memory / threads);
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                search::watch_cancel(options.cancel.clone());
                let mut local = Vec::new();
                loop {
                    if search::cancelled() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&key) = order.get(i) else { break };
                    let outcome = check_key(
                        key as KeyId,
                        &by_key[key],
                        options.per_key_budget,
                        memo_bytes,
                        needs_intervals,
                    );
                    local.push((key, outcome));
                }
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(local);
            });
        }
    });
    let mut outcomes: Vec<Option<KeyOutcome>> = by_key.iter().map(|_| None).collect();
    for (key, outcome) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        outcomes[key] = Some(outcome);
    }
    outcomes
}

fn check_key(
    key: KeyId,
    ops: &[KeyOp],
    budget: Duration,
    memo_bytes: usize,
    needs_intervals: bool,
) -> KeyOutcome {
    let exposure = exposure::sweep(ops);
    let intervals = if needs_intervals {
        scan::KeyIntervals::of(ops)
    } else {
        scan::KeyIntervals::default()
    };
    // A cancelled check leaves the key unknown before each costly step.
    let unknown = |exposure, intervals| KeyOutcome {
        verdict: KeyVerdict::Unknown,
        exposure,
        findings: Vec::new(),
        intervals,
    };
    if search::cancelled() {
        return unknown(exposure, intervals);
    }
    let mut findings = detect::detect(key, ops);
    if findings.is_empty() && search::cancelled() {
        return unknown(exposure, intervals);
    }
    let verdict = if !findings.is_empty() {
        KeyVerdict::Illegal
    } else {
        let deadline = Instant::now() + budget;
        match search::linearize_within(ops, deadline, memo_bytes) {
            search::Outcome::Linearizable => KeyVerdict::Ok,
            search::Outcome::OutOfBudget => KeyVerdict::Unknown,
            search::Outcome::Illegal { prefix } => {
                findings.push(witness::nonlinearizable(key, ops, &prefix));
                KeyVerdict::Illegal
            }
        }
    };
    KeyOutcome {
        verdict,
        exposure,
        findings,
        intervals,
    }
}

#[cfg(test)]
mod tests;
