//! The window search of the online checker: from every state a key may be
//! in when a window of its operations opens, every state it may be in when
//! the window closes (Wing & Gong's search, exploring every order instead of
//! stopping at the first, with a memo of visited nodes).
//!
//! Operations of unknown outcome (`ret` = ∞) may take effect at any instant
//! after their call, or never, so they outlive the window they were called
//! in: a possible state carries which of the key's pending unknown SETs and
//! DELs have taken effect. One that has not can still take effect later or
//! never, so a state with fewer of them applied allows everything one with
//! more allows: only the minimal sets are kept.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::super::search::{ABSENT, Outcome, cancelled, linearize_from, step};
use super::super::{Action, KeyOp};
use crate::history::ValueId;

/// A state the key may be in at a cut: the register (see
/// [`super::super::search::ABSENT`]) and which of the key's pending unknown
/// operations took effect (bit `i`: the `i`-th pending one).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Possible {
    pub(crate) state: u64,
    pub(crate) applied: u32,
}

/// What a window does to the possible states.
#[derive(Debug)]
pub(crate) enum Advance {
    /// The states the key may be in after the window.
    Possible(Vec<Possible>),
    /// No order of the window's operations is legal from any state.
    Illegal,
    /// The search grew past its bound; the key is unknown, for this reason.
    TooBig(String),
}

/// Pending unknown SETs and DELs one key may carry (bits of
/// [`Possible::applied`]).
pub(crate) const MAX_PENDING: usize = 32;
/// Nodes one window's exhaustive search may visit before the window is
/// decided one end state at a time instead (see [`by_end_state`]).
pub(crate) const MAX_NODES: usize = 1 << 16;
/// Successors per node allowed (each a model step and a memo probe): bounds
/// the work on windows of very many overlapping operations.
const TRIES_PER_NODE: usize = 8;
/// Nodes between looks at the check's cancel flag.
const CANCEL_EVERY: usize = 1 << 8;
/// Possible states one key may carry across a cut.
pub(crate) const MAX_FRONTIER: usize = 4096;

/// Advances `frontier` over one window: `infos` are the key's unknown SETs
/// and DELs (earlier windows' first, then this window's, each with its
/// call), `ops` the window's completed operations sorted by call.
pub(crate) fn advance(
    frontier: &[Possible],
    infos: &[KeyOp],
    ops: &[KeyOp],
    max_nodes: usize,
) -> Advance {
    debug_assert!(infos.len() <= MAX_PENDING);
    let all_applied = if infos.is_empty() {
        0
    } else {
        u32::MAX >> (32 - infos.len())
    };
    let sequential = ops.windows(2).all(|w| w[0].ret < w[1].call);
    let mut out: Vec<Possible> = Vec::new();
    let mut general: Vec<Possible> = Vec::new();
    for &start in frontier {
        if sequential && start.applied == all_applied {
            // One order only, and nothing unknown left to place.
            let mut state = Some(start.state);
            for op in ops {
                state = state.and_then(|s| step(s, op));
            }
            if let Some(state) = state {
                out.push(Possible { state, ..start });
            }
        } else {
            general.push(start);
        }
    }
    if !general.is_empty() {
        match search(&general, infos, ops, max_nodes) {
            Ok(found) => out.extend(found),
            Err(reason) => return Advance::TooBig(reason),
        }
    }
    let out = minimal(out);
    if out.is_empty() {
        Advance::Illegal
    } else if out.len() > MAX_FRONTIER {
        Advance::TooBig(format!(
            "more than {MAX_FRONTIER} states were possible between two windows of its operations"
        ))
    } else {
        Advance::Possible(out)
    }
}

/// The end states of a window whose search outgrew its bounds, found one
/// at a time by the offline search (which stops at the first legal order)
/// instead of exploring every order: a state is possible exactly when the
/// window is linearizable from some start with a read of that state placed
/// after everything. The last mutation of any legal order is one nothing
/// mutating was called after, so only those mutations' effects (or, with
/// no mutation, the starts) are candidates, and the read of a SET's value
/// pins that SET last, which keeps each search short. Only for windows with
/// no operation of unknown outcome pending (every state then has nothing
/// applied). Each search's memo is at most `memo_bytes`; all of them end
/// at `deadline`, past which the window is `TooBig`.
pub(crate) fn by_end_state(
    frontier: &[Possible],
    ops: &[KeyOp],
    deadline: Instant,
    memo_bytes: usize,
) -> Advance {
    debug_assert!(ops.iter().all(|o| !o.is_info()));
    let mutation = |o: &&KeyOp| matches!(o.action, Action::Set(_) | Action::Del(_));
    let last_call = ops.iter().filter(mutation).map(|o| o.call).max();
    let mut candidates: Vec<u64> = match last_call {
        Some(last) => ops
            .iter()
            .filter(mutation)
            .filter(|o| o.ret >= last)
            .map(|o| match o.action {
                Action::Set(value) => value.0,
                _ => ABSENT,
            })
            .collect(),
        None => frontier.iter().map(|p| p.state).collect(),
    };
    candidates.sort_unstable();
    candidates.dedup();
    let end = ops.iter().map(|o| o.ret).max().unwrap_or(0);
    let mut with_read: Vec<KeyOp> = ops.to_vec();
    with_read.push(KeyOp {
        call: end + 1,
        ret: end + 2,
        action: Action::Exists(false),
        event: ops.len() as u32,
    });
    let mut out = Vec::new();
    for state in candidates {
        *with_read.last_mut().expect("the read was pushed") = KeyOp {
            action: if state == ABSENT {
                Action::Exists(false)
            } else {
                Action::Get(Some(ValueId(state)))
            },
            ..with_read[ops.len()]
        };
        for start in frontier {
            match linearize_from(&with_read, start.state, deadline, memo_bytes) {
                Outcome::Linearizable => {
                    out.push(Possible { state, applied: 0 });
                    break;
                }
                Outcome::Illegal { .. } => {}
                Outcome::OutOfBudget => {
                    return Advance::TooBig(if cancelled() {
                        "the check was cut short before this key was decided".to_owned()
                    } else {
                        format!(
                            "one window of {} overlapping operations was past what its search may spend (timeoutPerKey, or the check's memory)",
                            ops.len()
                        )
                    });
                }
            }
        }
    }
    if out.is_empty() {
        Advance::Illegal
    } else if out.len() > MAX_FRONTIER {
        Advance::TooBig(format!(
            "more than {MAX_FRONTIER} states were possible between two windows of its operations"
        ))
    } else {
        Advance::Possible(out)
    }
}

/// Dedupes, and drops a state whose applied set strictly contains another's
/// with the same register.
fn minimal(mut states: Vec<Possible>) -> Vec<Possible> {
    states.sort_unstable_by_key(|p| (p.state, p.applied.count_ones(), p.applied));
    states.dedup();
    let mut kept: Vec<Possible> = Vec::with_capacity(states.len());
    let mut group = 0;
    for p in states {
        if kept.get(group).is_none_or(|g| g.state != p.state) {
            group = kept.len();
        }
        if !kept[group..]
            .iter()
            .any(|k| k.applied & p.applied == k.applied)
        {
            kept.push(p);
        }
    }
    kept
}

/// The placed completed operations, compactly: every one below word
/// `base` is placed, none past the words given. The search places them
/// roughly in call order, so this stays a word or two however long the
/// window.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct Placed {
    base: u32,
    words: Box<[u64]>,
}

impl Placed {
    fn has(&self, i: usize) -> bool {
        let w = i / 64;
        let base = self.base as usize;
        w < base
            || self
                .words
                .get(w - base)
                .is_some_and(|word| word >> (i % 64) & 1 == 1)
    }

    /// The first operation not placed.
    fn first(&self) -> usize {
        let base = self.base as usize * 64;
        match self.words.first() {
            Some(word) => base + word.trailing_ones() as usize,
            None => base,
        }
    }

    fn with(&self, i: usize) -> Placed {
        let base = self.base as usize;
        let w = i / 64;
        let mut words: Vec<u64> = self.words.to_vec();
        if words.len() <= w - base {
            words.resize(w - base + 1, 0);
        }
        words[w - base] |= 1 << (i % 64);
        let full = words.iter().take_while(|&&word| word == u64::MAX).count();
        words.drain(..full);
        while words.last() == Some(&0) {
            words.pop();
        }
        Placed {
            base: (base + full) as u32,
            words: words.into_boxed_slice(),
        }
    }
}

/// A node of the search: which completed operations are placed, which
/// unknown ones took effect, and the register.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Node {
    placed: Placed,
    applied: u32,
    state: u64,
}

fn search(
    starts: &[Possible],
    infos: &[KeyOp],
    ops: &[KeyOp],
    max_nodes: usize,
) -> Result<Vec<Possible>, String> {
    let n = ops.len();
    // The completed reads of each value, for the pin below.
    let mut reads_of: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let (Action::Get(Some(value)), false) = (op.action, op.is_info()) {
            reads_of.entry(value.0).or_default().push(i);
        }
    }
    let mut seen: HashSet<Node> = HashSet::new();
    let mut stack: Vec<(Node, usize)> = Vec::new();
    for start in starts {
        let node = Node {
            placed: Placed::default(),
            applied: start.applied,
            state: start.state,
        };
        if seen.insert(node.clone()) {
            stack.push((node, 0));
        }
    }
    let mut found = Vec::new();
    let (mut tries, mut visits) = (0usize, 0usize);
    while let Some((node, count)) = stack.pop() {
        visits += 1;
        if visits.is_multiple_of(CANCEL_EVERY) && cancelled() {
            return Err("the check was cut short before this key was decided".to_owned());
        }
        if count == n {
            // Unknown operations not applied yet stay pending: they may
            // still take effect later, or never.
            found.push(Possible {
                state: node.state,
                applied: node.applied,
            });
            continue;
        }
        if seen.len() > max_nodes || tries > max_nodes.saturating_mul(TRIES_PER_NODE) {
            return Err(format!(
                "the search of one window of {n} overlapping operations visited more than {max_nodes} states"
            ));
        }
        // The earliest return among the unplaced: nothing called after it
        // can go next. Sorted by call, the scan stops once calls pass it.
        let first = node.placed.first();
        let mut horizon = u64::MAX;
        let mut end = first;
        while end < n && ops[end].call <= horizon {
            if !node.placed.has(end) {
                horizon = horizon.min(ops[end].ret);
            }
            end += 1;
        }
        // A completed operation the state accepts without changing (a read,
        // a DEL of an absent key) may as well go first: moved to the front
        // of any legal continuation it keeps it legal and its end state the
        // same. So it is the only child to try, as in the offline search.
        let placeable = |i: usize| !node.placed.has(i) && ops[i].call <= horizon;
        let forced = (first..end).find(|&i| {
            placeable(i) && !ops[i].is_info() && step(node.state, &ops[i]) == Some(node.state)
        });
        if let Some(i) = forced {
            tries += 1;
            let child = Node {
                placed: node.placed.with(i),
                applied: node.applied,
                state: node.state,
            };
            if seen.insert(child.clone()) {
                stack.push((child, count + 1));
            }
            continue;
        }
        // Values are unique: once the register leaves a SET's value it never
        // holds it again, so while a read of the current value is still to
        // be placed nothing may change it.
        let pinned = reads_of
            .get(&node.state)
            .is_some_and(|readers| readers.iter().any(|&r| !node.placed.has(r)));
        if pinned {
            continue;
        }
        for (i, op) in ops.iter().enumerate().take(end).skip(first) {
            if !placeable(i) {
                continue;
            }
            tries += 1;
            let Some(state) = step(node.state, op) else {
                continue;
            };
            let child = Node {
                placed: node.placed.with(i),
                applied: node.applied,
                state,
            };
            if seen.insert(child.clone()) {
                stack.push((child, count + 1));
            }
        }
        for (j, info) in infos.iter().enumerate() {
            if node.applied >> j & 1 == 1 || info.call > horizon {
                continue;
            }
            let Some(state) = step(node.state, info) else {
                continue;
            };
            let child = Node {
                placed: node.placed.clone(),
                applied: node.applied | 1 << j,
                state,
            };
            if seen.insert(child.clone()) {
                stack.push((child, count));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    fn op(call: u64, ret: u64, action: Action) -> KeyOp {
        KeyOp {
            call,
            ret,
            action,
            event: 0,
        }
    }

    fn states(advance: Advance) -> Vec<Possible> {
        match advance {
            Advance::Possible(states) => states,
            other => panic!("expected states, got {other:?}"),
        }
    }

    const FROM_ABSENT: [Possible; 1] = [Possible {
        state: ABSENT,
        applied: 0,
    }];

    #[test]
    fn concurrent_sets_leave_either_value() {
        let (a, b) = (ValueId::new(1, 1), ValueId::new(2, 1));
        let ops = [op(0, 10, Action::Set(a)), op(5, 15, Action::Set(b))];
        let mut got: Vec<u64> = states(advance(&FROM_ABSENT, &[], &ops, MAX_NODES))
            .iter()
            .map(|p| p.state)
            .collect();
        got.sort();
        assert_eq!(got, [a.0, b.0]);
    }

    #[test]
    fn a_window_no_state_explains_is_illegal() {
        let a = ValueId::new(1, 1);
        let ops = [op(0, 10, Action::Get(Some(a)))];
        assert!(matches!(
            advance(&FROM_ABSENT, &[], &ops, MAX_NODES),
            Advance::Illegal
        ));
        // From the state a holds, it is legal and keeps it.
        let from_a = [Possible {
            state: a.0,
            applied: 0,
        }];
        assert_eq!(states(advance(&from_a, &[], &ops, MAX_NODES)), from_a);
    }

    #[test]
    fn an_unknown_set_may_take_effect_in_a_later_window_or_never() {
        let a = ValueId::new(1, 1);
        let infos = [op(0, Event::NO_RETURN, Action::Set(a))];
        // Before the window: absent, the SET not applied.
        let got = states(advance(
            &FROM_ABSENT,
            &infos,
            &[op(10, 20, Action::Get(Some(a)))],
            MAX_NODES,
        ));
        assert_eq!(
            got,
            [Possible {
                state: a.0,
                applied: 1
            }]
        );
        // A nil read keeps it pending: it may still take effect later.
        let got = states(advance(
            &FROM_ABSENT,
            &infos,
            &[op(10, 20, Action::Get(None))],
            MAX_NODES,
        ));
        assert_eq!(got, FROM_ABSENT);
    }

    #[test]
    fn minimal_keeps_only_the_least_applied_sets_per_state() {
        let p = |state, applied| Possible { state, applied };
        let got = minimal(vec![
            p(1, 0b11),
            p(1, 0b01),
            p(1, 0b10),
            p(2, 0b11),
            p(1, 0b01),
        ]);
        assert_eq!(got, [p(1, 0b01), p(1, 0b10), p(2, 0b11)]);
    }

    /// A random window of `n` completed operations over values `0..n`
    /// (each SET's value its own index, so values stay unique), from start
    /// states drawn from absent and values no SET here writes.
    fn random_window(seed: u64, n: usize) -> (Vec<Possible>, Vec<KeyOp>) {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        let value = |i: u64| ValueId::new(i as u32, 0);
        let mut ops: Vec<KeyOp> = (0..n as u64)
            .map(|i| {
                let call = next(40);
                let ret = call + next(30);
                let action = match next(5) {
                    0 | 1 => Action::Set(value(i)),
                    2 => Action::Del(next(2) == 0),
                    // Values past `n` are the start states'.
                    3 => Action::Get(match next(n as u64 + 3) {
                        r if r >= n as u64 + 2 => None,
                        r => Some(value(r)),
                    }),
                    _ => Action::Exists(next(2) == 0),
                };
                op(call, ret, action)
            })
            .collect();
        ops.sort_by_key(|o| o.call);
        let mut starts = vec![Possible {
            state: ABSENT,
            applied: 0,
        }];
        if next(2) == 0 {
            starts.push(Possible {
                state: value(n as u64 + next(2)).0,
                applied: 0,
            });
        }
        if next(3) == 0 {
            starts.remove(0);
        }
        (starts, ops)
    }

    fn end_states(advance: Advance) -> Option<Vec<u64>> {
        match advance {
            Advance::Possible(states) => {
                assert!(states.iter().all(|p| p.applied == 0));
                let mut states: Vec<u64> = states.iter().map(|p| p.state).collect();
                states.sort_unstable();
                Some(states)
            }
            Advance::Illegal => None,
            Advance::TooBig(reason) => panic!("a small window was too big: {reason}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        #[test]
        fn one_end_state_at_a_time_finds_what_exploring_every_order_finds(
            seed in proptest::prelude::any::<u64>(),
            n in 1usize..9,
        ) {
            let (starts, ops) = random_window(seed, n);
            let far = Instant::now() + std::time::Duration::from_secs(60);
            let every_order = end_states(advance(&starts, &[], &ops, MAX_NODES));
            let one_at_a_time = end_states(by_end_state(&starts, &ops, far, 1 << 24));
            proptest::prop_assert_eq!(every_order, one_at_a_time, "{:?} from {:?}", ops, starts);
        }
    }

    #[test]
    fn a_window_past_the_exhaustive_bound_is_decided_by_end_state() {
        // Sixteen concurrent SETs: every subset is a node, past a bound of
        // a thousand; each value may be the last written.
        let ops: Vec<KeyOp> = (0..16u32)
            .map(|i| op(u64::from(i), 1_000, Action::Set(ValueId::new(i, 0))))
            .collect();
        assert!(matches!(
            advance(&FROM_ABSENT, &[], &ops, 1_000),
            Advance::TooBig(_)
        ));
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let got = end_states(by_end_state(&FROM_ABSENT, &ops, far, 1 << 24)).unwrap();
        let mut want: Vec<u64> = (0..16).map(|i| ValueId::new(i, 0).0).collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
