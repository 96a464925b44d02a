//! Race exposure: did the storm really race? Counts pairs of concurrent
//! operations on one key with at least one DEL or SET, by kind, without
//! enumerating the pairs (their number can be quadratic). Only operations
//! whose outcome is known count: an errored or timed-out one stays open
//! forever (its `ret` is infinite) and would pair with everything after it,
//! though it proves nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use mapchaos_api::ExposureKind;

use super::{Action, KeyOp};
use crate::history::{History, Op};

/// One key's exposure counts and its largest overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyExposure {
    del_del: u64,
    del_set: u64,
    del_get: u64,
    set_set: u64,
    set_get: u64,
    /// The most operations of this key in flight at one instant.
    pub(crate) max_overlap: u64,
}

impl KeyExposure {
    pub(crate) fn by_kind(&self) -> [(ExposureKind, u64); 5] {
        [
            (ExposureKind::DelDel, self.del_del),
            (ExposureKind::DelSet, self.del_set),
            (ExposureKind::DelGet, self.del_get),
            (ExposureKind::SetSet, self.set_set),
            (ExposureKind::SetGet, self.set_get),
        ]
    }
}

const DEL: usize = 0;
const SET: usize = 1;
const READ: usize = 2;

fn class(action: Action) -> usize {
    match action {
        Action::Del(_) => DEL,
        Action::Set(_) => SET,
        Action::Get(_) | Action::Exists(_) => READ,
    }
}

/// Sweeps the key's operations in call order, keeping how many of each class
/// are still open (returned at or after the current call), so each new
/// operation adds its pairs by arithmetic: O(n log n) whatever the pair count.
pub(crate) fn sweep(ops: &[KeyOp]) -> KeyExposure {
    let mut exposure = KeyExposure::default();
    let mut open = [0u64; 3];
    let mut closing: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for op in ops.iter().filter(|op| !op.is_info()) {
        // Two operations are concurrent unless one returned strictly before
        // the other was called.
        while let Some(&Reverse((ret, c))) = closing.peek() {
            if ret >= op.call {
                break;
            }
            closing.pop();
            open[c] -= 1;
        }
        match class(op.action) {
            DEL => {
                exposure.del_del += open[DEL];
                exposure.del_set += open[SET];
                exposure.del_get += open[READ];
            }
            SET => {
                exposure.del_set += open[DEL];
                exposure.set_set += open[SET];
                exposure.set_get += open[READ];
            }
            _ => {
                exposure.del_get += open[DEL];
                exposure.set_get += open[SET];
            }
        }
        let c = class(op.action);
        open[c] += 1;
        closing.push(Reverse((op.ret, c)));
        exposure.max_overlap = exposure.max_overlap.max(open.iter().sum());
    }
    exposure
}

/// DEL–SCAN pairs: every key belongs to the scanned keyspace, so each SCAN
/// pairs with every DEL concurrent with it. Counted per SCAN as "DELs called
/// by its return" minus "DELs returned before its call".
pub(crate) fn del_scan_pairs(history: &History) -> u64 {
    let mut del_calls = Vec::new();
    let mut del_rets = Vec::new();
    let known = history.events().iter().filter(|e| !e.is_info());
    for event in known.clone() {
        if let Op::Del { .. } = event.op {
            del_calls.push(event.call);
            del_rets.push(event.ret);
        }
    }
    del_calls.sort_unstable();
    del_rets.sort_unstable();
    known
        .filter(|e| matches!(e.op, Op::Scan { .. }))
        .map(|scan| {
            let called = del_calls.partition_point(|&c| c <= scan.ret);
            let finished = del_rets.partition_point(|&r| r < scan.call);
            (called - finished) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ValueId;

    fn op(call: u64, ret: u64, action: Action) -> KeyOp {
        KeyOp {
            call,
            ret,
            action,
            event: 0,
        }
    }

    /// Counts the same pairs the slow way, as the definition states them:
    /// concurrent pairs of operations whose outcome is known.
    fn brute(ops: &[KeyOp]) -> [u64; 5] {
        let ops: Vec<KeyOp> = ops.iter().copied().filter(|o| !o.is_info()).collect();
        let mut counts = [0u64; 5];
        for (i, a) in ops.iter().enumerate() {
            for b in &ops[i + 1..] {
                if a.ret < b.call || b.ret < a.call {
                    continue;
                }
                let slot = match (
                    class(a.action).min(class(b.action)),
                    class(a.action).max(class(b.action)),
                ) {
                    (DEL, DEL) => 0,
                    (DEL, SET) => 1,
                    (DEL, READ) => 2,
                    (SET, SET) => 3,
                    (SET, READ) => 4,
                    _ => continue,
                };
                counts[slot] += 1;
            }
        }
        counts
    }

    #[test]
    fn sweep_counts_every_concurrent_pair_once_and_ignores_read_pairs() {
        let v = ValueId::new(0, 0);
        let ops = vec![
            op(0, 10, Action::Del(true)),
            op(2, 4, Action::Get(None)),
            op(3, 12, Action::Set(v)),
            op(5, 6, Action::Exists(true)),
            op(10, 11, Action::Del(false)),
            op(13, 14, Action::Get(None)),
            op(13, u64::MAX, Action::Set(ValueId::new(0, 1))),
        ];
        let exposure = sweep(&ops);
        let counts: Vec<u64> = exposure.by_kind().iter().map(|&(_, n)| n).collect();
        assert_eq!(counts, brute(&ops));
        // The SET at 13 never returned: it pairs with nothing.
        assert_eq!(counts, [1, 2, 2, 0, 2]);
        assert_eq!(exposure.max_overlap, 3);
    }

    #[test]
    fn operations_without_a_known_outcome_pair_with_nothing() {
        // Every op on the key errored (MOVED, READONLY, NOAUTH, a timeout):
        // open forever, they would pair with each other and everything after.
        let v = |seq| ValueId::new(1, seq);
        let failed = [
            op(0, u64::MAX, Action::Set(v(1))),
            op(1, u64::MAX, Action::Del(false)),
            op(2, u64::MAX, Action::Get(None)),
            op(3, u64::MAX, Action::Set(v(2))),
        ];
        let exposure = sweep(&failed);
        assert_eq!(exposure, KeyExposure::default());
        // Known ops keep their pairs; the failed one among them adds none and
        // does not widen the overlap.
        let mut mixed = vec![
            op(10, 20, Action::Del(true)),
            op(11, u64::MAX, Action::Set(v(3))),
            op(12, 14, Action::Get(None)),
            op(30, 31, Action::Set(v(4))),
        ];
        mixed.extend_from_slice(&failed);
        mixed.sort_by_key(|o| o.call);
        let exposure = sweep(&mixed);
        let counts: Vec<u64> = exposure.by_kind().iter().map(|&(_, n)| n).collect();
        assert_eq!(counts, brute(&mixed));
        assert_eq!(counts, [0, 0, 1, 0, 0]);
        assert_eq!(exposure.max_overlap, 2);
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        let ops = vec![op(0, 5, Action::Del(true)), op(5, 9, Action::Del(false))];
        assert_eq!(sweep(&ops).by_kind()[0].1, 1);
        let apart = vec![op(0, 4, Action::Del(true)), op(5, 9, Action::Del(false))];
        assert_eq!(sweep(&apart).by_kind()[0].1, 0);
    }
}
