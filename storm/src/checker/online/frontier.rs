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

use std::collections::HashSet;

use super::super::KeyOp;
use super::super::search::{cancelled, step};

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
/// Nodes one window's search may visit.
const MAX_NODES: usize = 1 << 20;
/// Successors one window's search may try (each a model step and a memo
/// probe): bounds the work on windows of very many overlapping operations.
const MAX_TRIES: usize = 1 << 23;
/// Nodes between looks at the check's cancel flag.
const CANCEL_EVERY: usize = 1 << 8;
/// Possible states one key may carry across a cut.
pub(crate) const MAX_FRONTIER: usize = 4096;

/// Advances `frontier` over one window: `infos` are the key's unknown SETs
/// and DELs (earlier windows' first, then this window's, each with its
/// call), `ops` the window's completed operations sorted by call.
pub(crate) fn advance(frontier: &[Possible], infos: &[KeyOp], ops: &[KeyOp]) -> Advance {
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
        match search(&general, infos, ops) {
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

fn search(starts: &[Possible], infos: &[KeyOp], ops: &[KeyOp]) -> Result<Vec<Possible>, String> {
    let n = ops.len();
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
        if seen.len() > MAX_NODES || tries > MAX_TRIES {
            return Err(format!(
                "the search of one window of {n} overlapping operations visited more than {MAX_NODES} states"
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
        for (i, op) in ops.iter().enumerate().take(end).skip(first) {
            if node.placed.has(i) || op.call > horizon {
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
    use super::super::super::Action;
    use super::super::super::search::ABSENT;
    use super::*;
    use crate::history::{Event, ValueId};

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
        let mut got: Vec<u64> = states(advance(&FROM_ABSENT, &[], &ops))
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
        assert!(matches!(advance(&FROM_ABSENT, &[], &ops), Advance::Illegal));
        // From the state a holds, it is legal and keeps it.
        let from_a = [Possible {
            state: a.0,
            applied: 0,
        }];
        assert_eq!(states(advance(&from_a, &[], &ops)), from_a);
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
}
