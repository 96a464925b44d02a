//! The named detectors: linear-time (after sorting) checks for the anomaly
//! kinds of CHECKER.md, each with a short witness.
//!
//! Every detector is sound: it fires only on a pattern that no order of the
//! key's operations can explain, so everything it flags is also
//! nonlinearizable. The arguments use only real-time precedence
//! (`a → b` iff `a.ret < b.call`), which every linearization respects, and
//! treat an unknown operation (`ret` = ∞) as possibly taking effect at any
//! instant after its call, or never: it never precedes anything, so it can
//! always be placed between any two operations it overlaps. Whatever a
//! detector is too narrow to see is left to the full search.

use std::collections::HashMap;

use mapchaos_api::AnomalyKind;

use super::witness::{op_phrase, value_phrase};
use super::{Action, Finding, KeyOp};
use crate::history::{KeyId, ValueId};

/// "Among the entries whose sort time is below (or at most) x, which has
/// the largest value time?", answered by binary search over a running maximum.
struct PrefixMax {
    keys: Vec<u64>,
    best: Vec<(u64, usize)>,
}

impl PrefixMax {
    fn new(mut entries: Vec<(u64, u64, usize)>) -> PrefixMax {
        entries.sort_unstable_by_key(|e| e.0);
        let mut best: Vec<(u64, usize)> = Vec::with_capacity(entries.len());
        for &(_, value, index) in &entries {
            let top = match best.last() {
                Some(&prev) if prev.0 >= value => prev,
                _ => (value, index),
            };
            best.push(top);
        }
        PrefixMax {
            keys: entries.iter().map(|e| e.0).collect(),
            best,
        }
    }

    /// The largest value (and its op) among entries with key < x.
    fn below(&self, x: u64) -> Option<(u64, usize)> {
        let n = self.keys.partition_point(|&k| k < x);
        n.checked_sub(1).map(|i| self.best[i])
    }

    /// The largest value (and its op) among entries with key <= x.
    fn at_most(&self, x: u64) -> Option<(u64, usize)> {
        let n = self.keys.partition_point(|&k| k <= x);
        n.checked_sub(1).map(|i| self.best[i])
    }
}

/// Like [`PrefixMax`] but keeping the three largest, so a query can leave
/// out up to two given operations.
struct PrefixTop3 {
    keys: Vec<u64>,
    top: Vec<[(u64, usize); 3]>,
}

const NONE: (u64, usize) = (0, usize::MAX);

impl PrefixTop3 {
    fn new(mut entries: Vec<(u64, u64, usize)>) -> PrefixTop3 {
        entries.sort_unstable_by_key(|e| e.0);
        let mut top = Vec::with_capacity(entries.len());
        let mut current = [NONE; 3];
        for &(_, value, index) in &entries {
            let mut slot = (value, index);
            for held in &mut current {
                if held.1 == usize::MAX || slot.0 > held.0 {
                    std::mem::swap(held, &mut slot);
                    if slot.1 == usize::MAX {
                        break;
                    }
                }
            }
            top.push(current);
        }
        PrefixTop3 {
            keys: entries.iter().map(|e| e.0).collect(),
            top,
        }
    }

    /// The largest value among entries with key <= x, leaving out `skip`.
    fn at_most_without(&self, x: u64, skip: [usize; 2]) -> Option<u64> {
        let n = self.keys.partition_point(|&k| k <= x);
        let top = self.top.get(n.checked_sub(1)?)?;
        top.iter()
            .find(|e| e.1 != usize::MAX && !skip.contains(&e.1))
            .map(|e| e.0)
    }
}

/// The per-key indexes every detector queries.
struct Index<'a> {
    ops: &'a [KeyOp],
    /// The SET of each value (values are unique in a history).
    writer: HashMap<ValueId, usize>,
    /// Completed DELs by return: latest call.
    dels: PrefixMax,
    /// Completed reads that saw the key absent, by return: latest call.
    absent_reads: PrefixMax,
    /// Completed operations after which the key is absent (DELs, absent
    /// reads), by return: latest call.
    absent_makers: PrefixMax,
    /// All SETs by call: latest return (∞ for unknown ones).
    sets_by_call: PrefixMax,
    /// Completed SETs by return: latest call.
    completed_sets: PrefixMax,
    /// All SETs and DELs by call: the latest returns.
    mutators: PrefixTop3,
    /// The latest return of any SET (∞ if one is unknown).
    last_set_ret: Option<u64>,
}

impl<'a> Index<'a> {
    fn build(ops: &'a [KeyOp]) -> Index<'a> {
        let mut writer = HashMap::new();
        let (mut dels, mut absent_reads, mut absent_makers) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sets_by_call, mut completed_sets, mut mutators) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut last_set_ret = None;
        for (i, op) in ops.iter().enumerate() {
            let done = !op.is_info();
            match op.action {
                Action::Set(value) => {
                    writer.insert(value, i);
                    sets_by_call.push((op.call, op.ret, i));
                    mutators.push((op.call, op.ret, i));
                    last_set_ret = last_set_ret.max(Some(op.ret));
                    if done {
                        completed_sets.push((op.ret, op.call, i));
                    }
                }
                Action::Del(_) => {
                    mutators.push((op.call, op.ret, i));
                    if done {
                        dels.push((op.ret, op.call, i));
                        absent_makers.push((op.ret, op.call, i));
                    }
                }
                Action::Get(None) | Action::Exists(false) if done => {
                    absent_reads.push((op.ret, op.call, i));
                    absent_makers.push((op.ret, op.call, i));
                }
                Action::Get(_) | Action::Exists(_) => {}
            }
        }
        Index {
            ops,
            writer,
            dels: PrefixMax::new(dels),
            absent_reads: PrefixMax::new(absent_reads),
            absent_makers: PrefixMax::new(absent_makers),
            sets_by_call: PrefixMax::new(sets_by_call),
            completed_sets: PrefixMax::new(completed_sets),
            mutators: PrefixTop3::new(mutators),
            last_set_ret,
        }
    }

    /// The SET that must be the last write before op `i`, if one must be:
    /// a completed SET W → i such that every other SET or DEL either
    /// precedes W or follows i. Only the SET with the latest call among those
    /// completed before i can qualify (any earlier one overlaps or precedes it).
    fn sole_last_writer(&self, i: usize) -> Option<usize> {
        let op = &self.ops[i];
        let (w_call, w) = self.completed_sets.below(op.call)?;
        match self.mutators.at_most_without(op.ret, [w, i]) {
            Some(latest_ret) if latest_ret >= w_call => None,
            _ => Some(w),
        }
    }
}

/// Runs every named detector on one key's operations (sorted by call) and
/// returns at most one finding per kind: the first in call order.
pub(crate) fn detect(key: KeyId, ops: &[KeyOp]) -> Vec<Finding> {
    let index = Index::build(ops);
    let mut findings: Vec<Finding> = Vec::new();
    for i in 0..ops.len() {
        // A cancelled check stops here too: what was found stands, and the
        // search that follows gives up at once (the key is unknown).
        if i % 32 == 0 && super::search::cancelled() {
            break;
        }
        if ops[i].is_info() {
            continue;
        }
        let Some((kind, involved, explanation)) = judge(&index, i) else {
            continue;
        };
        if findings.iter().any(|f| f.kind == kind) {
            continue;
        }
        let mut events: Vec<u32> = involved.iter().map(|&j| ops[j].event).collect();
        events.sort_unstable();
        events.dedup();
        findings.push(Finding {
            kind,
            key,
            events,
            culprit: Some(ops[i].event),
            explanation,
            prefix: None,
        });
    }
    findings
}

type Verdict = (AnomalyKind, Vec<usize>, String);

/// The one anomaly completed op `i` proves, if any, most specific kind first.
fn judge(index: &Index<'_>, i: usize) -> Option<Verdict> {
    let op = &index.ops[i];
    match op.action {
        Action::Set(_) => None,
        Action::Get(Some(value)) => {
            let Some(&w) = index.writer.get(&value) else {
                return Some((
                    AnomalyKind::PhantomRead,
                    vec![i],
                    format!(
                        "The GET returned {}, which no SET of this key wrote.",
                        value_phrase(value)
                    ),
                ));
            };
            present_after_absent(index, i, Some(w), index.ops[w].ret)
                .or_else(|| lost_write(index, i))
        }
        Action::Exists(true) => {
            let last = index.last_set_ret?;
            present_after_absent(index, i, None, last)
        }
        Action::Get(None) | Action::Exists(false) => lost_write(index, i),
        Action::Del(true) => removed_from_absent(index, i),
        Action::Del(false) => {
            let w = index.sole_last_writer(i)?;
            Some((
                AnomalyKind::LostDelete,
                vec![w, i],
                format!(
                    "The DEL returned 0, but the {} finished before it started and no other SET or DEL could come between them, so the key was present.",
                    op_phrase(&index.ops[w])
                ),
            ))
        }
    }
}

/// stale_read and resurrection: read `i` saw the key present, and every SET
/// that could have made it so (the writer `w` of the value read, or for
/// EXISTS any SET) returned by `supplier_ret`. If an acknowledged DEL D, or a
/// read R1 that saw the key absent, started after `supplier_ret` and finished
/// before `i` started, then D (or R1) is ordered after every possible supplier
/// and before `i`, so the key is absent between them and nothing can write it
/// again: `i` is unexplainable.
fn present_after_absent(
    index: &Index<'_>,
    i: usize,
    w: Option<usize>,
    supplier_ret: u64,
) -> Option<Verdict> {
    let op = &index.ops[i];
    let what = match w {
        Some(w) => format!("the {}", op_phrase(&index.ops[w])),
        None => "every SET of this key".to_owned(),
    };
    if let Some((d_call, d)) = index.dels.below(op.call)
        && d_call > supplier_ret
    {
        let mut involved = vec![d, i];
        involved.extend(w);
        return Some((
            AnomalyKind::StaleRead,
            involved,
            format!(
                "The {} saw the key present, but {what} finished before an acknowledged DEL started, and that DEL finished before the read started.",
                op_phrase(op)
            ),
        ));
    }
    if let Some((r_call, r1)) = index.absent_reads.below(op.call)
        && r_call > supplier_ret
    {
        let mut involved = vec![r1, i];
        involved.extend(w);
        return Some((
            AnomalyKind::Resurrection,
            involved,
            format!(
                "The {} saw the key absent after {what} had finished, yet the later {} saw it present again, with nothing to write it.",
                op_phrase(&index.ops[r1]),
                op_phrase(op)
            ),
        ));
    }
    None
}

/// lost_write: read `i` has a sole last writer W (see
/// [`Index::sole_last_writer`]), so the register holds W's value at `i`
/// in every order, yet `i` returned something else.
fn lost_write(index: &Index<'_>, i: usize) -> Option<Verdict> {
    let w = index.sole_last_writer(i)?;
    let op = &index.ops[i];
    let Action::Set(written) = index.ops[w].action else {
        return None;
    };
    let consistent = match op.action {
        Action::Get(read) => read == Some(written),
        Action::Exists(present) => present,
        Action::Set(_) | Action::Del(_) => true,
    };
    (!consistent).then(|| {
        (
            AnomalyKind::LostWrite,
            vec![w, i],
            format!(
                "The {} finished before the {} started and no other SET or DEL could come between them, yet the read did not see {}.",
                op_phrase(&index.ops[w]),
                op_phrase(op),
                value_phrase(written)
            ),
        )
    })
}

/// lost_delete (returned 1): the key must have been absent at DEL `i`. Either
/// no SET was called by the time `i` returned (keys start absent), or some
/// completed op X → i left the key absent (a DEL, or a read that saw it
/// absent) after every SET that could precede `i` had returned, so no SET
/// fits between X and `i`.
fn removed_from_absent(index: &Index<'_>, i: usize) -> Option<Verdict> {
    let op = &index.ops[i];
    match index.sets_by_call.at_most(op.ret) {
        None => Some((
            AnomalyKind::LostDelete,
            vec![i],
            "The DEL returned 1, but no SET of this key had been called before it returned, so there was nothing to remove.".to_owned(),
        )),
        Some((latest_set_ret, _)) => {
            let (x_call, x) = index.absent_makers.below(op.call)?;
            (x_call > latest_set_ret).then(|| {
                (
                    AnomalyKind::LostDelete,
                    vec![x, i],
                    format!(
                        "The DEL returned 1, but the {} left the key absent after every SET that could precede the DEL had finished, and finished before the DEL started.",
                        op_phrase(&index.ops[x])
                    ),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_top3_leaves_out_the_skipped_ops() {
        let top = PrefixTop3::new(vec![(1, 50, 0), (2, 70, 1), (3, 60, 2), (4, 10, 3)]);
        assert_eq!(top.at_most_without(4, [9, 9]), Some(70));
        assert_eq!(top.at_most_without(4, [1, 9]), Some(60));
        assert_eq!(top.at_most_without(4, [1, 2]), Some(50));
        assert_eq!(top.at_most_without(1, [0, 9]), None);
        assert_eq!(top.at_most_without(0, [9, 9]), None);
    }

    #[test]
    fn prefix_max_answers_strict_and_inclusive_bounds() {
        let max = PrefixMax::new(vec![(5, 1, 0), (7, 9, 1), (9, 3, 2)]);
        assert_eq!(max.below(5), None);
        assert_eq!(max.at_most(5), Some((1, 0)));
        assert_eq!(max.below(100), Some((9, 1)));
    }
}
