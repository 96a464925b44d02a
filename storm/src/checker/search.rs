//! The full linearizability search for one key: Wing & Gong's backtracking
//! with Lowe's memoisation, as Porcupine does it, over a register that may
//! be absent.
//!
//! Calls and returns form one list sorted by time (calls before returns at
//! equal times, so operations touching at one instant stay concurrent). The
//! search walks it, linearizing any call whose operation the model accepts,
//! and backtracks when it reaches the return of an operation it has not
//! linearized. An unknown operation returns at +∞, accepts any output, and
//! so can be linearized anywhere after its call, including after everything
//! else, which is the same as never taking effect. The search succeeds once
//! every completed operation is linearized: the unknown rest can follow.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{Action, KeyOp};
use crate::history::ValueId;

/// The register's state when the key is absent. SETs never write
/// `ValueId::UNWRITTEN` (the same bits), so no value is confused with it.
pub(crate) const ABSENT: u64 = u64::MAX;

/// The register model: the state after `op`, or `None` if `op`'s output is
/// impossible in `state`. An unknown operation's output is accepted.
pub(crate) fn step(state: u64, op: &KeyOp) -> Option<u64> {
    let known = !op.is_info();
    let present = state != ABSENT;
    match op.action {
        Action::Set(value) => Some(value.0),
        Action::Get(read) => {
            let matches = match read {
                None => !present,
                Some(value) => present && value.0 == state,
            };
            (!known || matches).then_some(state)
        }
        Action::Del(removed) => (!known || removed == present).then_some(ABSENT),
        Action::Exists(answer) => (!known || answer == present).then_some(state),
    }
}

pub(crate) enum Outcome {
    Linearizable,
    /// No legal order exists; `prefix` is the longest legal prefix found
    /// (indices into the key's ops, in linearization order).
    Illegal {
        prefix: Vec<usize>,
    },
    OutOfBudget,
}

thread_local! {
    /// The check's cancel flag, for the searches on this thread.
    static CANCEL: std::cell::RefCell<Option<Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
}

/// The searches on this thread give up (out of budget) once `cancel` is set.
pub(crate) fn watch_cancel(cancel: Option<Arc<AtomicBool>>) {
    CANCEL.with(|slot| *slot.borrow_mut() = cancel);
}

/// Whether this thread's check was cancelled.
pub(crate) fn cancelled() -> bool {
    CANCEL.with(|slot| {
        slot.borrow()
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    })
}

/// Decides one key. A fast pass memoises 64-bit hashes of the linearized
/// set; a collision there can only prune a branch (never invent a legal
/// order), so its "linearizable" is exact, and its "illegal" is confirmed by
/// a pass that memoises the sets themselves before being reported.
#[cfg(test)]
pub(crate) fn linearize(ops: &[KeyOp], deadline: Instant) -> Outcome {
    linearize_within(ops, deadline, MAX_MEMO_BYTES)
}

/// [`linearize`] with a memo of at most `memo_bytes` (the key is out of
/// budget past it).
pub(crate) fn linearize_within(ops: &[KeyOp], deadline: Instant, memo_bytes: usize) -> Outcome {
    let limit = (memo_bytes / MEMO_BYTES_PER_WORD).max(1);
    // An unknown read changes nothing and any output is accepted, so it
    // constrains nothing: leave it out rather than let the search place it.
    let unknown_read =
        |op: &KeyOp| op.is_info() && matches!(op.action, Action::Get(_) | Action::Exists(_));
    if ops.iter().any(unknown_read) {
        let kept: Vec<usize> = (0..ops.len()).filter(|&i| !unknown_read(&ops[i])).collect();
        let sub: Vec<KeyOp> = kept.iter().map(|&i| ops[i]).collect();
        return match linearize_within(&sub, deadline, memo_bytes) {
            Outcome::Illegal { prefix } => Outcome::Illegal {
                prefix: prefix.into_iter().map(|i| kept[i]).collect(),
            },
            outcome => outcome,
        };
    }
    match run(ops, deadline, &mut Hashed::for_ops(ops.len(), limit)) {
        Outcome::Illegal { .. } => run(
            ops,
            deadline,
            &mut Exact {
                limit,
                ..Exact::default()
            },
        ),
        outcome => outcome,
    }
}

/// An FxHash-style hasher: the memo keys are already well mixed.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.add(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<Fx>;

/// The memo of (linearized set, register state) pairs already explored.
trait Visited {
    /// Records the pair; false if it was already there.
    fn insert(&mut self, linearized: &Linearized, state: u64) -> bool;
    /// Whether the memo has grown past what one key may use.
    fn exhausted(&self) -> bool;
}

/// Memoises one 64-bit word per pair: the set's Zobrist hash mixed with
/// the state. Half the memory of keeping them apart, which is what decides
/// the speed on hot keys (the memo outgrows the caches).
struct Hashed(HashSet<u64, FxBuild>, usize);

impl Hashed {
    fn for_ops(n: usize, limit: usize) -> Hashed {
        Hashed(
            HashSet::with_capacity_and_hasher(n.saturating_mul(2).min(limit), FxBuild::default()),
            limit,
        )
    }
}

impl Visited for Hashed {
    fn insert(&mut self, linearized: &Linearized, state: u64) -> bool {
        self.0.insert(linearized.hash ^ mix_state(state))
    }

    fn exhausted(&self) -> bool {
        self.0.len() > self.1
    }
}

/// Memoises the sets themselves, as the window of words that are neither
/// all ones nor all zeros (see [`Linearized::window`]): usually a word or
/// two, since the search linearizes roughly in call order.
#[derive(Default)]
struct Exact {
    set: HashSet<(u32, Box<[u64]>, u64), FxBuild>,
    words: usize,
    limit: usize,
}

impl Visited for Exact {
    fn insert(&mut self, linearized: &Linearized, state: u64) -> bool {
        let (low, window) = linearized.window();
        let inserted = self.set.insert((low, window.into(), state));
        if inserted {
            self.words += window.len() + 4;
        }
        inserted
    }

    fn exhausted(&self) -> bool {
        self.words > self.limit
    }
}

/// The set of linearized operations: a bitset with its Zobrist hash, the
/// first word that is not all ones and the last that is not all zeros kept
/// up to date, so memo keys stay small and cheap.
struct Linearized {
    words: Vec<u64>,
    hash: u64,
    low: usize,
    high: usize,
}

impl Linearized {
    fn new(n: usize) -> Linearized {
        Linearized {
            words: vec![0; n.div_ceil(64).max(1)],
            hash: 0,
            low: 0,
            high: 0,
        }
    }

    fn insert(&mut self, op: usize) {
        let w = op / 64;
        self.words[w] |= 1 << (op % 64);
        self.hash ^= zobrist(op);
        self.high = self.high.max(w);
        while self.low < self.words.len() && self.words[self.low] == u64::MAX {
            self.low += 1;
        }
    }

    fn remove(&mut self, op: usize) {
        let w = op / 64;
        self.words[w] &= !(1 << (op % 64));
        self.hash ^= zobrist(op);
        self.low = self.low.min(w);
        while self.high > 0 && self.words[self.high] == 0 {
            self.high -= 1;
        }
    }

    /// The set, exactly: every op below word `low` is in it, none above
    /// word `high`, and the words between are given.
    fn window(&self) -> (u32, &[u64]) {
        let window = if self.low <= self.high {
            &self.words[self.low..=self.high]
        } else {
            &[]
        };
        (self.low as u32, window)
    }
}

/// The memo's default memory bound per key: past it the key is unknown
/// rather than the process out of memory.
pub(crate) const MAX_MEMO_BYTES: usize = 1 << 30;
/// What one memoised word costs at the worst moment: a hash set of `u64`
/// at its lowest load (7/16 after doubling) is 9 bytes per bucket, and while
/// it doubles the old table is still there (3 tables' worth of buckets per
/// entry-and-a-bit); the exact memo's boxed windows cost about the same per
/// word. So a bound of N bytes admits N / 32 words.
const MEMO_BYTES_PER_WORD: usize = 32;

/// Spreads a register state over 64 bits, independently of [`zobrist`].
fn mix_state(state: u64) -> u64 {
    let z = (state ^ 0xd6e8_feb8_6659_fd93).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (z ^ (z >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Zobrist key of an operation, for the incremental hash of the linearized set.
fn zobrist(op: usize) -> u64 {
    let mut z = (op as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const NIL: u32 = u32::MAX;
/// How many steps run between two looks at the clock.
const CLOCK_EVERY: u64 = 1 << 10;
/// Steps between looks at the check's cancel flag (one relaxed load).
const CANCEL_EVERY: u64 = 1 << 6;

/// The doubly linked list of call and return entries: entry `2i` is op
/// `i`'s call, `2i + 1` its return; the head sentinel is entry `2n`.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    head: u32,
}

impl Entries {
    fn new(ops: &[KeyOp]) -> Entries {
        let n = ops.len() as u32;
        let mut order: Vec<u32> = (0..2 * n).collect();
        order.sort_unstable_by_key(|&e| {
            let op = &ops[(e / 2) as usize];
            let is_return = e % 2;
            (if is_return == 1 { op.ret } else { op.call }, is_return, e)
        });
        let head = 2 * n;
        let mut next = vec![NIL; 2 * n as usize + 1];
        let mut prev = vec![NIL; 2 * n as usize + 1];
        let mut last = head;
        for &e in &order {
            next[last as usize] = e;
            prev[e as usize] = last;
            last = e;
        }
        Entries { next, prev, head }
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        if n != NIL {
            self.prev[n as usize] = e;
        }
    }

    /// Takes a linearized operation's call and return out of the list.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(call + 1);
    }

    /// Puts them back, in the reverse order of [`Entries::lift`].
    fn unlift(&mut self, call: u32) {
        self.relink(call + 1);
        self.relink(call);
    }
}

/// No SET wrote the state (the key is absent).
const NO_WRITER: u32 = u32::MAX;

/// Per SET, how many completed GETs of its value are not linearized yet,
/// and for each completed GET, the SET whose value it read (if any).
fn readers(ops: &[KeyOp]) -> (Vec<u32>, Vec<u32>) {
    let writer: HashMap<ValueId, u32> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op.action {
            Action::Set(value) => Some((value, i as u32)),
            _ => None,
        })
        .collect();
    let mut pending = vec![0u32; ops.len()];
    let mut source = vec![NO_WRITER; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        if let (Action::Get(Some(value)), false) = (op.action, op.is_info())
            && let Some(&w) = writer.get(&value)
        {
            pending[w as usize] += 1;
            source[i] = w;
        }
    }
    (pending, source)
}

fn run(ops: &[KeyOp], deadline: Instant, visited: &mut impl Visited) -> Outcome {
    let completed = ops.iter().filter(|op| !op.is_info()).count();
    let (mut pending_reads, read_source) = readers(ops);
    let mut list = Entries::new(ops);
    let mut linearized = Linearized::new(ops.len());
    let mut state = ABSENT;
    let mut writer = NO_WRITER;
    let mut done = 0usize;
    // The linearized calls, with the state (and its writer) before each and
    // whether the choice was forced (see below).
    let mut stack: Vec<(u32, u64, u32, bool)> = Vec::new();
    // The deepest stack seen, for the witness. Its first `agree` entries
    // are still the live stack's, so a new deepest copies only what changed
    // and the copying costs no more than the pushes.
    let mut longest: Vec<usize> = Vec::new();
    let mut agree = 0usize;
    let mut entry = list.next[list.head as usize];
    let mut steps = 0u64;
    while done < completed {
        steps += 1;
        if (steps.is_multiple_of(CLOCK_EVERY)
            && (Instant::now() >= deadline || visited.exhausted()))
            || (steps.is_multiple_of(CANCEL_EVERY) && cancelled())
        {
            return Outcome::OutOfBudget;
        }
        if entry != NIL && entry.is_multiple_of(2) {
            let i = (entry / 2) as usize;
            let mutator = matches!(ops[i].action, Action::Set(_) | Action::Del(_));
            // Values are unique: once the state moves off a SET's value it
            // never comes back, so while a completed GET of the current value
            // is still to be placed, no SET or DEL may go next.
            let pins = writer != NO_WRITER && pending_reads[writer as usize] > 0;
            let after = if mutator && pins {
                None
            } else {
                step(state, &ops[i])
            };
            let Some(after) = after else {
                entry = list.next[entry as usize];
                continue;
            };
            // A completed op the model accepts without a state change (GET,
            // EXISTS, DEL of an absent key) may as well go first: moving it
            // to the front of any legal continuation keeps that continuation
            // legal, since nothing still pending must precede it and it
            // changes nothing. So if placing it now fails, so does everything
            // else from here: the choice is forced.
            let forced = after == state && !ops[i].is_info();
            linearized.insert(i);
            if visited.insert(&linearized, after) {
                stack.push((entry, state, writer, forced));
                state = after;
                match ops[i].action {
                    Action::Set(_) => writer = i as u32,
                    Action::Del(_) => writer = NO_WRITER,
                    Action::Get(_) | Action::Exists(_) => {}
                }
                if read_source[i] != NO_WRITER {
                    pending_reads[read_source[i] as usize] -= 1;
                }
                done += usize::from(!ops[i].is_info());
                list.lift(entry);
                entry = list.next[list.head as usize];
                continue;
            }
            linearized.remove(i);
            if !forced {
                entry = list.next[entry as usize];
                continue;
            }
            // Already explored from here, and it failed: so does this node.
        }
        // This node fails (an unlinearized op's return was reached, or a
        // forced choice failed): undo choices up to the last free one,
        // after remembering the stack if it is the deepest seen.
        if stack.len() > longest.len() {
            longest.truncate(agree);
            longest.extend(stack[agree..].iter().map(|&(e, ..)| (e / 2) as usize));
            agree = stack.len();
        }
        loop {
            let Some((call, before, before_writer, forced)) = stack.pop() else {
                return Outcome::Illegal { prefix: longest };
            };
            agree = agree.min(stack.len());
            let i = (call / 2) as usize;
            linearized.remove(i);
            state = before;
            writer = before_writer;
            if read_source[i] != NO_WRITER {
                pending_reads[read_source[i] as usize] += 1;
            }
            done -= usize::from(!ops[i].is_info());
            list.unlift(call);
            entry = list.next[call as usize];
            if !forced {
                break;
            }
        }
    }
    Outcome::Linearizable
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_read_of_a_write_still_in_flight_is_legal() {
        let v = ValueId::new(1, 1);
        let ops = [op(0, 100, Action::Set(v)), op(10, 20, Action::Get(Some(v)))];
        assert!(matches!(linearize(&ops, far()), Outcome::Linearizable));
    }

    #[test]
    fn an_unknown_del_may_take_effect_late_or_never() {
        let v = ValueId::new(1, 1);
        let ops = [
            op(0, 5, Action::Set(v)),
            op(6, Event::NO_RETURN, Action::Del(true)),
            op(10, 20, Action::Get(Some(v))),
            op(30, 40, Action::Get(None)),
            op(50, 60, Action::Exists(false)),
        ];
        assert!(matches!(linearize(&ops, far()), Outcome::Linearizable));
        let never = [
            op(0, 5, Action::Set(v)),
            op(6, Event::NO_RETURN, Action::Del(false)),
        ];
        assert!(matches!(linearize(&never, far()), Outcome::Linearizable));
    }

    #[test]
    fn a_read_from_the_future_is_illegal_with_the_legal_prefix_as_witness() {
        let v = ValueId::new(1, 1);
        let ops = [
            op(0, 5, Action::Del(false)),
            op(10, 20, Action::Get(Some(v))),
            op(30, 40, Action::Set(v)),
        ];
        match linearize(&ops, far()) {
            Outcome::Illegal { prefix } => assert_eq!(prefix, [0]),
            _ => panic!("a read before its write was accepted"),
        }
    }

    #[test]
    fn a_spent_deadline_is_out_of_budget_not_linearizable() {
        // 24 concurrent SETs and a read of none of them: exponential to refute.
        let mut ops: Vec<KeyOp> = (0..24)
            .map(|i| op(i, 1_000, Action::Set(ValueId::new(i as u32, 0))))
            .collect();
        ops.push(op(500, 2_000, Action::Get(Some(ValueId::new(99, 0)))));
        ops.push(op(3_000, 3_001, Action::Get(Some(ValueId::new(0, 0)))));
        ops.push(op(3_002, 3_003, Action::Get(Some(ValueId::new(1, 0)))));
        assert!(matches!(
            linearize(&ops, Instant::now()),
            Outcome::OutOfBudget
        ));
    }
}
