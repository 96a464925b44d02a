//! SCAN judgement: Redis promises that a full iteration returns every key
//! present from its first call to its last return (else `scan_miss`) and no
//! key absent for all that time (else `scan_phantom`). Anything in between —
//! duplicates, keys that came or went during the scan — is allowed.
//!
//! Per key we derive intervals in which the key is certainly present (or
//! certainly absent) in every order that explains its operations; a SCAN
//! lying entirely inside one is then bound by the promise. A sweep over
//! SCANs in call order with bitsets over the keyspace keeps this
//! O(events · log + SCANs · keys / 64 + returned keys).

use mapchaos_api::AnomalyKind;

use super::witness::event_phrase;
use super::{Action, Finding, KeyOp};
use crate::history::{History, KeyId, Op};

/// A half-open time span `[lo, hi)` in which the key is certainly present
/// (or absent), and the operation that made it so (none: the initial state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval {
    lo: u64,
    hi: u64,
    cause: Option<u32>,
}

/// One key's certain-presence and certain-absence intervals, each sorted
/// and disjoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyIntervals {
    present: Vec<Interval>,
    absent: Vec<Interval>,
}

/// "The earliest call among the entries that return at or after x",
/// answered by binary search over a suffix minimum.
struct SuffixMinCall {
    rets: Vec<u64>,
    min_call: Vec<u64>,
}

impl SuffixMinCall {
    fn new(mut entries: Vec<(u64, u64)>) -> SuffixMinCall {
        entries.sort_unstable();
        let mut min_call = vec![u64::MAX; entries.len() + 1];
        for i in (0..entries.len()).rev() {
            min_call[i] = min_call[i + 1].min(entries[i].1);
        }
        SuffixMinCall {
            rets: entries.iter().map(|e| e.0).collect(),
            min_call,
        }
    }

    fn returning_from(&self, x: u64) -> u64 {
        self.min_call[self.rets.partition_point(|&r| r < x)]
    }
}

impl KeyIntervals {
    /// After a completed SET W the key is present from W's return until the
    /// first call of a DEL that W does not precede-by-return (a DEL that
    /// returned before W's call is ordered before W). After a completed op
    /// that leaves it absent (DEL, nil GET, EXISTS 0) it is absent from its
    /// return until the first call of a SET it does not precede. Keys start
    /// absent, until the first SET call. Linearization points lie inside
    /// [call, ret], so these hold in every order; touching intervals merge.
    pub(crate) fn of(ops: &[KeyOp]) -> KeyIntervals {
        let mut dels = Vec::new();
        let mut sets = Vec::new();
        for op in ops {
            match op.action {
                Action::Del(_) => dels.push((op.ret, op.call)),
                Action::Set(_) => sets.push((op.ret, op.call)),
                _ => {}
            }
        }
        let first_set_call = sets.iter().map(|s| s.1).min().unwrap_or(u64::MAX);
        let dels = SuffixMinCall::new(dels);
        let sets = SuffixMinCall::new(sets);
        let mut present = Vec::new();
        let mut absent = vec![Interval {
            lo: 0,
            hi: first_set_call,
            cause: None,
        }];
        for op in ops {
            if op.is_info() {
                continue;
            }
            let lo = op.ret.saturating_add(1);
            let (target, hi) = match op.action {
                Action::Set(_) => (&mut present, dels.returning_from(op.call)),
                Action::Del(_) | Action::Get(None) | Action::Exists(false) => {
                    (&mut absent, sets.returning_from(op.call))
                }
                Action::Get(Some(_)) | Action::Exists(true) => continue,
            };
            if lo < hi {
                target.push(Interval {
                    lo,
                    hi,
                    cause: Some(op.event),
                });
            }
        }
        KeyIntervals {
            present: merge(present),
            absent: merge(absent),
        }
    }
}

impl KeyIntervals {
    /// The certainly-present spans as `(lo, hi)` nanosecond pairs.
    pub(crate) fn present(&self) -> Vec<(u64, u64)> {
        self.present.iter().map(|s| (s.lo, s.hi)).collect()
    }

    /// The certainly-absent spans as `(lo, hi)` nanosecond pairs.
    pub(crate) fn absent(&self) -> Vec<(u64, u64)> {
        self.absent.iter().map(|s| (s.lo, s.hi)).collect()
    }
}

fn merge(mut spans: Vec<Interval>) -> Vec<Interval> {
    spans.sort_unstable_by_key(|s| (s.lo, s.hi));
    let mut merged: Vec<Interval> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.lo <= last.hi => last.hi = last.hi.max(span.hi),
            _ => merged.push(span),
        }
    }
    merged
}

/// What judging the SCANs found.
pub(crate) struct ScanJudgement {
    /// At most one finding per key and kind.
    pub(crate) findings: Vec<Finding>,
    pub(crate) duplicates: u64,
}

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, k: usize) -> bool {
        let was = self.0[k / 64] >> (k % 64) & 1 == 1;
        self.0[k / 64] |= 1 << (k % 64);
        was
    }
    fn clear(&mut self, k: usize) {
        self.0[k / 64] &= !(1 << (k % 64));
    }
}

/// The certain intervals of one kind (present or absent) of every key,
/// swept in order of their start while SCANs are visited in call order.
struct Sweep {
    spans: Vec<(Interval, KeyId)>,
    next: usize,
    active: Bits,
    current: Vec<Option<Interval>>,
}

impl Sweep {
    fn new(keys: &[&KeyIntervals], pick: fn(&KeyIntervals) -> &[Interval]) -> Sweep {
        let mut spans: Vec<(Interval, KeyId)> = Vec::new();
        for (k, intervals) in keys.iter().enumerate() {
            spans.extend(pick(intervals).iter().map(|&s| (s, k as KeyId)));
        }
        spans.sort_unstable_by_key(|(s, _)| s.lo);
        Sweep {
            spans,
            next: 0,
            active: Bits::new(keys.len()),
            current: vec![None; keys.len()],
        }
    }

    /// Activates every interval that has started by `call` and not yet ended.
    fn advance(&mut self, call: u64) {
        while let Some(&(span, key)) = self.spans.get(self.next) {
            if span.lo > call {
                break;
            }
            self.next += 1;
            if span.hi > call {
                self.active.set(key as usize);
                self.current[key as usize] = Some(span);
            }
        }
    }

    /// Keys whose active interval covers `[call, ret]`, among the words
    /// selected by `mask(active_word, found_word)`.
    fn covering(
        &mut self,
        found: &Bits,
        call: u64,
        ret: u64,
        mask: fn(u64, u64) -> u64,
        mut hit: impl FnMut(KeyId, Interval),
    ) {
        for w in 0..self.active.0.len() {
            let mut candidates = mask(self.active.0[w], found.0[w]);
            while candidates != 0 {
                let k = w * 64 + candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                let Some(span) = self.current[k] else {
                    continue;
                };
                if span.hi > ret {
                    hit(k as KeyId, span);
                } else if span.hi <= call {
                    self.active.clear(k);
                }
            }
        }
    }
}

/// Judges every completed SCAN against the keys' certain intervals.
pub(crate) fn judge_scans(history: &History, keys: &[&KeyIntervals]) -> ScanJudgement {
    let mut judgement = ScanJudgement {
        findings: Vec::new(),
        duplicates: 0,
    };
    let scans: Vec<usize> = (0..history.events().len())
        .filter(|&i| matches!(history.events()[i].op, Op::Scan { .. }))
        .collect();
    if scans.is_empty() {
        return judgement;
    }
    let mut present = Sweep::new(keys, |k| &k.present);
    let mut absent = Sweep::new(keys, |k| &k.absent);
    let mut found_bits = Bits::new(keys.len());
    let mut reported = [Bits::new(keys.len()), Bits::new(keys.len())];
    let events = history.events();
    for i in scans {
        let event = &events[i];
        let Op::Scan { found } = &event.op else {
            continue;
        };
        if event.is_info() {
            continue;
        }
        for &k in found.iter() {
            if found_bits.set(k as usize) {
                judgement.duplicates += 1;
            }
        }
        present.advance(event.call);
        absent.advance(event.call);
        let scan_event = i as u32;
        let findings = &mut judgement.findings;
        let [missed, phantom] = &mut reported;
        present.covering(&found_bits, event.call, event.ret, |a, f| a & !f, |key, span| {
            if missed.set(key as usize) {
                return;
            }
            let cause = span.cause.map_or_else(|| "SET".to_owned(), |e| event_phrase(&events[e as usize]));
            findings.push(Finding {
                kind: AnomalyKind::ScanMiss,
                key,
                events: span.cause.into_iter().chain([scan_event]).collect(),
                culprit: Some(scan_event),
                explanation: format!(
                    "The SCAN did not return the key, yet it was present from before the SCAN's first call (the {cause} had finished) until after its last return (no DEL could take effect before then)."
                ),
                prefix: None,
            });
        });
        absent.covering(&found_bits, event.call, event.ret, |a, f| a & f, |key, span| {
            if phantom.set(key as usize) {
                return;
            }
            let since = span.cause.map_or_else(
                || "from the start of the storm".to_owned(),
                |e| format!("after the {} finished", event_phrase(&events[e as usize])),
            );
            findings.push(Finding {
                kind: AnomalyKind::ScanPhantom,
                key,
                events: span.cause.into_iter().chain([scan_event]).collect(),
                culprit: Some(scan_event),
                explanation: format!(
                    "The SCAN returned the key, yet it was absent {since} until after the SCAN's last return (no SET could take effect before then)."
                ),
                prefix: None,
            });
        });
        for &k in found.iter() {
            found_bits.clear(k as usize);
        }
    }
    judgement
}
