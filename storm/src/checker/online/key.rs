//! One key's state in the online checker: its open window, the possible
//! states at the last cut, its certain present/absent intervals while SCANs
//! may still need them, and (bounded) the operations kept to name its
//! anomalies and build their witnesses the way the offline checker does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mapchaos_api::timeline::KeyTimeline;
use mapchaos_api::{AnomalyKind, Witness};

use super::super::exposure::{self, KeyExposure};
use super::super::scan::{self, Interval};
use super::super::search::{ABSENT, cancelled};
use super::super::timeline;
use super::super::witness::{self, event_phrase, witness_op_at};
use super::super::{Action, Finding, KeyOp, KeyVerdict, check_key, split_by_key};
use super::frontier::{self, Advance, MAX_PENDING, Possible};
use crate::history::{ClientId, Event, History, KeyId, Op, ValueId, printable_key};

/// How many operations a witness of a failed window lists.
const WINDOW_WITNESS_OPS: usize = 10;

/// How a key stands so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Every window so far is legal from some state the last left.
    Healthy,
    /// A window no possible state explains.
    Illegal,
    /// The check of this key gave up, for this reason.
    Unknown(String),
}

/// A certain-presence (or absence) interval, with the operation that made
/// it so kept whole (the window it came from is gone).
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: u64,
    hi: u64,
    cause: Option<(ClientId, KeyOp)>,
}

/// What the key's operations kept for naming anomalies.
#[derive(Debug)]
enum Kept {
    /// Every operation since the anchor (the first one, if any, stands for
    /// everything before it: see [`KeyState::anchor`]).
    Ops(Vec<Event>),
    /// Too long to keep; a failure is witnessed by its window alone.
    Dropped,
    /// Judged early (an illegal key that outgrew what is kept).
    Judged(Judged),
}

/// A key's anomalies, named, with witnesses when asked for.
#[derive(Debug, Default)]
pub(crate) struct Judged {
    pub(crate) verdict: Option<KeyVerdict>,
    pub(crate) kinds: Vec<AnomalyKind>,
    pub(crate) witnesses: Vec<(AnomalyKind, Witness)>,
}

/// Limits and context shared by a shard's keys.
pub(crate) struct Limits {
    /// Operations kept per key for naming anomalies before anchoring.
    pub(crate) retain: usize,
    /// Operations one open window may hold without a cut.
    pub(crate) max_window: usize,
    /// Nodes a window's exhaustive search may visit.
    pub(crate) window_nodes: usize,
    pub(crate) per_key_budget: Duration,
    /// The memo bytes the offline search may hold naming one key's anomalies.
    pub(crate) memo_bytes: usize,
    /// The storm's start instant, the origin of witness times.
    pub(crate) start: u64,
}

#[derive(Debug)]
pub(crate) struct KeyState {
    /// Operations fed and not yet in a closed window.
    pub(crate) buf: Vec<Event>,
    /// No window can close before the watermark passes this (the latest
    /// return in `buf` when the last try found no cut).
    blocked_until: Option<u64>,
    /// Unknown SETs and DELs that may still take effect (bits of `frontier`).
    infos: Vec<KeyOp>,
    frontier: Vec<Possible>,
    pub(crate) health: Health,
    /// Counted in the live anomaly total.
    pub(crate) counted: bool,
    pub(crate) exposure: KeyExposure,
    present: Vec<Span>,
    absent: Vec<Span>,
    /// A window was dropped unchecked, so no SCAN is judged on this key.
    intervals_lost: bool,
    /// The earliest unknown SET and DEL: one may take effect at any later
    /// instant, so no later span of absence (presence) is certain.
    unknown_mutators: [Option<KeyOp>; 2],
    /// Completed DELs a SCAN not judged yet may overlap.
    dels: VecDeque<(u64, u64)>,
    pub(crate) del_scan: u64,
    pub(crate) scan_duplicates: u64,
    scan_reported: [bool; 2],
    pub(crate) scan_findings: Vec<(AnomalyKind, Witness)>,
    kept: Kept,
    /// The failed window (its first operations) and the states it started from.
    failure: Option<(Vec<Event>, String)>,
    pub(crate) ops: u64,
    pub(crate) known: u64,
    /// What the offline search has spent on windows too big to explore.
    searched: Duration,
}

fn action(op: &Op) -> Option<Action> {
    Some(match *op {
        Op::Get { read, .. } => Action::Get(read),
        Op::Set { value, .. } => Action::Set(value),
        Op::Del { removed, .. } => Action::Del(removed),
        Op::Exists { present, .. } => Action::Exists(present),
        Op::Scan { .. } => return None,
    })
}

fn key_op(event: &Event, index: usize) -> KeyOp {
    KeyOp {
        call: event.call,
        ret: event.ret,
        action: action(&event.op).unwrap_or(Action::Exists(false)),
        event: index as u32,
    }
}

/// The history event of a key operation.
fn event_of(key: KeyId, client: ClientId, op: &KeyOp) -> Event {
    let op_ = match op.action {
        Action::Get(read) => Op::Get { key, read },
        Action::Set(value) => Op::Set { key, value },
        Action::Del(removed) => Op::Del { key, removed },
        Action::Exists(present) => Op::Exists { key, present },
    };
    Event {
        client,
        call: op.call,
        ret: op.ret,
        op: op_,
    }
}

fn rekey(event: &Event, key: KeyId) -> Event {
    let op = match event.op {
        Op::Get { read, .. } => Op::Get { key, read },
        Op::Set { value, .. } => Op::Set { key, value },
        Op::Del { removed, .. } => Op::Del { key, removed },
        Op::Exists { present, .. } => Op::Exists { key, present },
        Op::Scan { .. } => event.op.clone(),
    };
    Event {
        op,
        ..event.clone()
    }
}

fn push_merged(list: &mut Vec<Span>, span: Span) {
    match list.last_mut() {
        Some(last) if span.lo <= last.hi => last.hi = last.hi.max(span.hi),
        _ => list.push(span),
    }
}

/// The span of `list` (sorted, disjoint) covering `[call, ret]`, if any.
fn covering(list: &[Span], call: u64, ret: u64) -> Option<&Span> {
    let i = list.partition_point(|s| s.lo <= call).checked_sub(1)?;
    let span = &list[i];
    (span.hi > call && span.hi > ret).then_some(span)
}

impl KeyState {
    pub(crate) fn new() -> KeyState {
        KeyState {
            buf: Vec::new(),
            blocked_until: None,
            infos: Vec::new(),
            frontier: vec![Possible {
                state: ABSENT,
                applied: 0,
            }],
            health: Health::Healthy,
            counted: false,
            exposure: KeyExposure::default(),
            present: Vec::new(),
            // Keys start absent, until their first SET is called.
            absent: vec![Span {
                lo: 0,
                hi: u64::MAX,
                cause: None,
            }],
            intervals_lost: false,
            unknown_mutators: [None; 2],
            dels: VecDeque::new(),
            del_scan: 0,
            scan_duplicates: 0,
            scan_reported: [false; 2],
            scan_findings: Vec::new(),
            kept: Kept::Ops(Vec::new()),
            failure: None,
            ops: 0,
            known: 0,
            searched: Duration::ZERO,
        }
    }

    /// Closes every window that can no longer change: all its operations
    /// returned before the next one's call and before `watermark` (every
    /// operation called before it has been fed). `prune` is the earliest
    /// instant a SCAN still to be judged may start. True when the key just
    /// turned illegal.
    pub(crate) fn close_windows(&mut self, watermark: u64, prune: u64, limits: &Limits) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        // Operations fed since were called at or after the watermark of the
        // last try, so no cut among the older ones can appear before the
        // watermark passes their latest return.
        if self.blocked_until.is_some_and(|r| watermark <= r) && self.buf.len() <= limits.max_window
        {
            return false;
        }
        self.blocked_until = None;
        self.buf.sort_by_key(|e| (e.call, e.client));
        let mut turned = false;
        let mut start = 0;
        let mut max_ret: Option<u64> = None;
        let mut buf = std::mem::take(&mut self.buf);
        // The first cut the watermark alone holds back: no window can close
        // before the watermark passes the latest return before it.
        let mut held: Option<u64> = None;
        for j in 0..=buf.len() {
            let bound = buf.get(j).map_or(watermark, |e| e.call.min(watermark));
            if j > start && max_ret.is_none_or(|r| r < bound) {
                if j - start > limits.max_window {
                    self.drop_window(&buf[start..j], limits);
                } else {
                    turned |= self.window(&buf[start..j], limits);
                }
                start = j;
                max_ret = None;
            } else if let (Some(r), Some(next)) = (max_ret, buf.get(j))
                && j > start
                && r < next.call
                && held.is_none()
            {
                held = Some(r);
            }
            if let Some(e) = buf.get(j)
                && !e.is_info()
            {
                max_ret = Some(max_ret.map_or(e.ret, |r| r.max(e.ret)));
            }
        }
        buf.drain(..start);
        if !buf.is_empty() {
            self.blocked_until = held.or(max_ret);
        }
        if buf.len() > limits.max_window {
            self.drop_window(&buf, limits);
            buf.clear();
        }
        self.buf = buf;
        self.prune(prune);
        turned
    }

    /// Gives the key up on a window too long to search (or to hold): its
    /// exposures still count, its SCANs are no longer judged.
    fn drop_window(&mut self, events: &[Event], limits: &Limits) {
        self.give_up(format!(
            "{} of its operations overlapped with no instant free of them (more than {} in one window)",
            events.len(),
            limits.max_window
        ));
        let ops: Vec<KeyOp> = events
            .iter()
            .enumerate()
            .map(|(i, e)| key_op(e, i))
            .collect();
        self.exposure.add(&exposure::sweep(&ops));
        self.ops += events.len() as u64;
        self.known += ops.iter().filter(|o| !o.is_info()).count() as u64;
        self.intervals_lost = true;
    }

    fn unknown_mutators(&self) -> Vec<KeyOp> {
        self.unknown_mutators.iter().flatten().copied().collect()
    }

    fn give_up(&mut self, reason: String) {
        if self.health == Health::Healthy {
            self.health = Health::Unknown(reason);
            self.kept = Kept::Dropped;
            self.infos.clear();
            self.frontier.clear();
        }
    }

    /// Drops what no SCAN still to be judged can need.
    fn prune(&mut self, before: u64) {
        for list in [&mut self.present, &mut self.absent] {
            let gone = list.partition_point(|s| s.hi <= before);
            list.drain(..gone);
        }
        while self.dels.front().is_some_and(|&(_, ret)| ret < before) {
            self.dels.pop_front();
        }
    }

    /// Checks one closed window (sorted by call). True when the key just
    /// turned illegal.
    fn window(&mut self, events: &[Event], limits: &Limits) -> bool {
        let ops: Vec<KeyOp> = events
            .iter()
            .enumerate()
            .map(|(i, e)| key_op(e, i))
            .collect();
        self.ops += ops.len() as u64;
        self.known += ops.iter().filter(|o| !o.is_info()).count() as u64;
        self.exposure.add(&exposure::sweep(&ops));
        if !self.intervals_lost {
            let earlier = self.unknown_mutators();
            extend_intervals(&mut self.present, &mut self.absent, &earlier, events, &ops);
        }
        for op in ops.iter().filter(|o| o.is_info()) {
            let slot = match op.action {
                Action::Set(_) => 0,
                Action::Del(_) => 1,
                _ => continue,
            };
            if self.unknown_mutators[slot].is_none() {
                self.unknown_mutators[slot] = Some(*op);
            }
        }
        for op in &ops {
            if matches!(op.action, Action::Del(_)) && !op.is_info() {
                self.dels.push_back((op.call, op.ret));
            }
        }
        let mut turned = false;
        if self.health == Health::Healthy {
            turned = self.advance(events, &ops, limits);
        }
        self.keep(events, limits);
        turned
    }

    fn advance(&mut self, events: &[Event], ops: &[KeyOp], limits: &Limits) -> bool {
        // An unknown read changes nothing and accepts anything: it
        // constrains nothing (the offline search leaves it out too).
        let completed: Vec<KeyOp> = ops.iter().copied().filter(|o| !o.is_info()).collect();
        let mut infos = self.infos.clone();
        infos.extend(
            ops.iter()
                .filter(|o| o.is_info() && matches!(o.action, Action::Set(_) | Action::Del(_))),
        );
        if infos.len() > MAX_PENDING {
            self.give_up(format!(
                "more than {MAX_PENDING} of its SETs and DELs had an unknown outcome"
            ));
            return false;
        }
        match frontier::advance(&self.frontier, &infos, &completed, limits.window_nodes) {
            outcome @ (Advance::Possible(_) | Advance::Illegal) => {
                self.settle(outcome, events, infos)
            }
            Advance::TooBig(reason) if !infos.is_empty() || cancelled() => {
                self.give_up(reason);
                false
            }
            Advance::TooBig(_) => {
                // Too many orders to explore them all: ask the offline
                // search for each possible end state instead, out of the
                // key's search budget.
                let began = Instant::now();
                let left = limits.per_key_budget.saturating_sub(self.searched);
                let outcome = frontier::by_end_state(
                    &self.frontier,
                    &completed,
                    began + left,
                    limits.memo_bytes,
                );
                self.searched += began.elapsed();
                self.settle(outcome, events, infos)
            }
        }
    }

    /// Takes a window's outcome: the states it may leave, or the failure.
    /// True when the key just turned illegal.
    fn settle(&mut self, outcome: Advance, events: &[Event], infos: Vec<KeyOp>) -> bool {
        match outcome {
            Advance::Possible(states) => {
                self.frontier = states;
                self.infos = infos;
                self.forget_applied();
                false
            }
            Advance::Illegal => {
                let from = describe(&self.frontier);
                self.failure = Some((
                    events.iter().take(WINDOW_WITNESS_OPS).cloned().collect(),
                    from,
                ));
                self.health = Health::Illegal;
                self.frontier.clear();
                self.infos.clear();
                true
            }
            Advance::TooBig(reason) => {
                self.give_up(reason);
                false
            }
        }
    }

    /// An unknown operation applied in every possible state is spent
    /// everywhere: drop it and its bit.
    fn forget_applied(&mut self) {
        let common = self
            .frontier
            .iter()
            .fold(u32::MAX, |acc, p| acc & p.applied);
        let common = if self.infos.len() < 32 {
            common & ((1u32 << self.infos.len()) - 1)
        } else {
            common
        };
        if common == 0 {
            return;
        }
        let keep: Vec<usize> = (0..self.infos.len())
            .filter(|&i| common >> i & 1 == 0)
            .collect();
        self.infos = keep.iter().map(|&i| self.infos[i]).collect();
        for p in &mut self.frontier {
            let mut applied = 0;
            for (to, &from) in keep.iter().enumerate() {
                applied |= (p.applied >> from & 1) << to;
            }
            p.applied = applied;
        }
        self.frontier.sort_unstable_by_key(|p| (p.state, p.applied));
        self.frontier.dedup();
    }

    /// Keeps the window's operations for naming anomalies, within bounds.
    fn keep(&mut self, events: &[Event], limits: &Limits) {
        let Kept::Ops(kept) = &mut self.kept else {
            return;
        };
        kept.extend_from_slice(events);
        if kept.len() <= limits.retain {
            return;
        }
        match self.health {
            Health::Healthy => {
                if !self.anchor() && self.kept_len() > 2 * limits.retain {
                    self.kept = Kept::Dropped;
                }
            }
            Health::Illegal => {
                if self.kept_len() > 2 * limits.retain {
                    let judged = self.judge(limits, true);
                    self.kept = Kept::Judged(judged);
                }
            }
            Health::Unknown(_) => self.kept = Kept::Dropped,
        }
    }

    fn kept_len(&self) -> usize {
        match &self.kept {
            Kept::Ops(ops) => ops.len(),
            _ => 0,
        }
    }

    /// With one possible state and nothing unknown pending, everything kept
    /// so far is equivalent to one completed operation that leaves that
    /// state: the SET that wrote it, or an operation that saw (or left) the
    /// key absent, shown as a DEL returning 0 if it was a DEL. Every
    /// detector is sound on the shorter history, which is linearizable
    /// exactly when the whole one is.
    fn anchor(&mut self) -> bool {
        let [only] = self.frontier.as_slice() else {
            return false;
        };
        if !self.infos.is_empty() {
            return false;
        }
        let state = only.state;
        let Kept::Ops(kept) = &mut self.kept else {
            return false;
        };
        let anchor = if state == ABSENT {
            let absent_read = kept.iter().rev().find(|e| {
                !e.is_info()
                    && matches!(
                        e.op,
                        Op::Get { read: None, .. } | Op::Exists { present: false, .. }
                    )
            });
            let del = || {
                kept.iter()
                    .filter(|e| !e.is_info() && matches!(e.op, Op::Del { .. }))
                    .max_by_key(|e| e.ret)
            };
            match absent_read.or_else(del) {
                Some(e) => Some(match e.op {
                    Op::Del { key, .. } => Event {
                        op: Op::Del {
                            key,
                            removed: false,
                        },
                        ..e.clone()
                    },
                    _ => e.clone(),
                }),
                None if !kept.iter().any(|e| matches!(e.op, Op::Set { .. })) => None,
                None => return false,
            }
        } else {
            let written = ValueId(state);
            match kept
                .iter()
                .find(|e| matches!(e.op, Op::Set { value, .. } if value == written))
            {
                Some(e) if !e.is_info() => Some(e.clone()),
                _ => return false,
            }
        };
        kept.clear();
        kept.extend(anchor);
        true
    }

    /// Judges one SCAN (its `found` holds this key `count` times) once
    /// every operation called before its return has been fed. Returns true
    /// when this is the key's first anomaly.
    pub(crate) fn judge_scan(
        &mut self,
        key: KeyId,
        scan: &Event,
        count: usize,
        start: u64,
    ) -> bool {
        self.scan_duplicates += count.saturating_sub(1) as u64;
        let concurrent = |call: u64, ret: u64| call <= scan.ret && ret >= scan.call;
        self.del_scan += self.dels.iter().filter(|&&(c, r)| concurrent(c, r)).count() as u64;
        self.del_scan += self
            .buf
            .iter()
            .filter(|e| matches!(e.op, Op::Del { .. }) && !e.is_info())
            .filter(|e| concurrent(e.call, e.ret))
            .count() as u64;
        if self.intervals_lost {
            return false;
        }
        let (kind, slot) = if count == 0 {
            (AnomalyKind::ScanMiss, 0)
        } else {
            (AnomalyKind::ScanPhantom, 1)
        };
        if self.scan_reported[slot] {
            return false;
        }
        let provisional;
        let (present, absent) = if self.buf.is_empty() {
            (&self.present, &self.absent)
        } else {
            // The open window's operations: every one called before the
            // SCAN returned is among them, so the spans they bound are final
            // up to its return.
            let (mut present, mut absent) = (self.present.clone(), self.absent.clone());
            let ops: Vec<KeyOp> = self
                .buf
                .iter()
                .enumerate()
                .map(|(i, e)| key_op(e, i))
                .collect();
            let earlier = self.unknown_mutators();
            extend_intervals(&mut present, &mut absent, &earlier, &self.buf, &ops);
            provisional = (present, absent);
            (&provisional.0, &provisional.1)
        };
        let list = if count == 0 { present } else { absent };
        let Some(span) = covering(list, scan.call, scan.ret).copied() else {
            return false;
        };
        self.scan_reported[slot] = true;
        let cause = span.cause.map(|(client, op)| event_of(key, client, &op));
        let phrase = cause.as_ref().map(event_phrase);
        let explanation = if count == 0 {
            scan::miss_explanation(phrase)
        } else {
            scan::phantom_explanation(phrase)
        };
        let operations = cause
            .iter()
            .chain([scan])
            .map(|e| witness_op_at(start, e, key))
            .collect();
        let timeline = scan_timeline(kind, cause.as_ref(), scan, key, start);
        self.scan_findings.push((
            kind,
            Witness {
                kind,
                key: String::new(),
                operations,
                longest_prefix: None,
                explanation,
                timeline,
            },
        ));
        !std::mem::replace(&mut self.counted, true)
    }

    /// The key's final verdict and its anomalies (witnesses too when
    /// `witnesses`), once everything is fed.
    pub(crate) fn finish(&mut self, key_bytes: &[u8], limits: &Limits, witnesses: bool) -> Judged {
        let mut judged = match std::mem::replace(&mut self.kept, Kept::Dropped) {
            Kept::Judged(judged) => judged,
            kept => {
                self.kept = kept;
                match self.health {
                    Health::Illegal => self.judge(limits, witnesses),
                    Health::Healthy => Judged {
                        verdict: Some(KeyVerdict::Ok),
                        ..Judged::default()
                    },
                    Health::Unknown(_) => Judged {
                        verdict: Some(KeyVerdict::Unknown),
                        ..Judged::default()
                    },
                }
            }
        };
        if self.ops == 0 {
            judged.verdict = None;
        }
        for (kind, witness) in self.scan_findings.drain(..) {
            judged.verdict = Some(KeyVerdict::Illegal);
            if !judged.kinds.contains(&kind) {
                judged.kinds.push(kind);
            }
            if witnesses {
                judged.witnesses.push((kind, witness));
            }
        }
        judged.kinds.sort();
        judged.witnesses.sort_by_key(|(kind, _)| *kind);
        let printable = printable_key(key_bytes);
        for (_, witness) in &mut judged.witnesses {
            witness.key.clone_from(&printable);
        }
        judged
    }

    /// Names an illegal key's anomalies as the offline checker does, on
    /// the operations kept (the whole history unless it was anchored), or
    /// witnesses the failed window when those were dropped.
    fn judge(&mut self, limits: &Limits, witnesses: bool) -> Judged {
        let kept = match std::mem::replace(&mut self.kept, Kept::Dropped) {
            Kept::Ops(kept) => kept,
            _ => Vec::new(),
        };
        if !kept.is_empty() {
            let events: Vec<Event> = kept.iter().map(|e| rekey(e, 0)).collect();
            if let Ok(history) = History::new(vec![Vec::new()], limits.start, false, events) {
                let ops = split_by_key(&history).pop().unwrap_or_default();
                let outcome = check_key(0, &ops, limits.per_key_budget, limits.memo_bytes, false);
                if outcome.verdict == KeyVerdict::Illegal {
                    return judged_from(&history, &outcome.findings, witnesses);
                }
            }
        }
        let (events, from) = self.failure.take().unwrap_or_default();
        let events: Vec<Event> = events.iter().map(|e| rekey(e, 0)).collect();
        let Ok(history) = History::new(vec![Vec::new()], limits.start, false, events) else {
            return Judged {
                verdict: Some(KeyVerdict::Illegal),
                kinds: vec![AnomalyKind::Nonlinearizable],
                witnesses: Vec::new(),
            };
        };
        let finding = Finding {
            kind: AnomalyKind::Nonlinearizable,
            key: 0,
            events: (0..history.events().len() as u32).collect(),
            culprit: None,
            explanation: format!(
                "No order of these operations of the key (overlapping one another, and nothing else in flight before or after them) is legal from any state its earlier operations may have left it in ({from})."
            ),
            prefix: None,
        };
        judged_from(&history, &[finding], witnesses)
    }
}

/// A SCAN witness's timeline: the operation that made the key's presence
/// (or absence) certain and the SCAN (the window around them is gone), drawn
/// as the offline checker draws them, on a history of this key alone (every
/// other key the SCAN returned stands in as one other key).
fn scan_timeline(
    kind: AnomalyKind,
    cause: Option<&Event>,
    scan: &Event,
    key: KeyId,
    start: u64,
) -> Option<KeyTimeline> {
    let Op::Scan { found } = &scan.op else {
        return None;
    };
    let found: Box<[KeyId]> = found.iter().map(|&k| KeyId::from(k != key)).collect();
    let mut events: Vec<Event> = cause.map(|e| rekey(e, 0)).into_iter().collect();
    events.push(Event {
        op: Op::Scan { found },
        ..scan.clone()
    });
    let history = History::new(vec![Vec::new(), vec![0]], start, false, events).ok()?;
    let ops = split_by_key(&history)
        .into_iter()
        .next()
        .unwrap_or_default();
    let finding = Finding {
        kind,
        key: 0,
        events: (0..history.events().len() as u32).collect(),
        culprit: None,
        explanation: String::new(),
        prefix: None,
    };
    Some(timeline::build(&history, &ops, &finding, None))
}

fn judged_from(history: &History, findings: &[Finding], witnesses: bool) -> Judged {
    let mut kinds: Vec<AnomalyKind> = findings.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    Judged {
        verdict: Some(KeyVerdict::Illegal),
        kinds,
        witnesses: if witnesses {
            let ops = split_by_key(history).pop().unwrap_or_default();
            findings
                .iter()
                .map(|f| (f.kind, witness::build(history, &ops, f, None)))
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// The possible states, for a sentence.
fn describe(frontier: &[Possible]) -> String {
    let mut states: Vec<String> = frontier
        .iter()
        .map(|p| {
            if p.state == ABSENT {
                "absent".to_owned()
            } else {
                format!("holding {}", ValueId(p.state))
            }
        })
        .collect();
    states.dedup();
    let shown = states.len().min(3);
    let more = if states.len() > shown {
        format!(" or {} more", states.len() - shown)
    } else {
        String::new()
    };
    format!("{}{more}", states[..shown].join(", "))
}

/// Extends the key's intervals over one window (`events` sorted by call,
/// `ops` their key operations, `infos` the earliest unknown SET and DEL of
/// earlier windows). A span still open at the end of the earlier windows
/// ends at the first call of an operation that may undo it: any DEL (SET)
/// of a later window returns after the SET (DEL) that opened it was called.
fn extend_intervals(
    present: &mut Vec<Span>,
    absent: &mut Vec<Span>,
    infos: &[KeyOp],
    events: &[Event],
    ops: &[KeyOp],
) {
    let first_call = |want_set: bool| {
        ops.iter()
            .filter(|o| matches!(o.action, Action::Set(_)) == want_set)
            .filter(|o| matches!(o.action, Action::Set(_) | Action::Del(_)))
            .map(|o| o.call)
            .min()
    };
    for (list, closer) in [
        (&mut *present, first_call(false)),
        (&mut *absent, first_call(true)),
    ] {
        if let (Some(last), Some(call)) = (list.last_mut(), closer)
            && last.hi == u64::MAX
        {
            last.hi = call;
            if last.hi <= last.lo {
                list.pop();
            }
        }
    }
    let mut all: Vec<KeyOp> = infos
        .iter()
        .map(|o| KeyOp {
            event: u32::MAX,
            ..*o
        })
        .collect();
    all.extend_from_slice(ops);
    let (mut new_present, mut new_absent) = scan::spans(&all, false);
    for (list, spans) in [(present, &mut new_present), (absent, &mut new_absent)] {
        spans.sort_unstable_by_key(|s| (s.lo, s.hi));
        for s in spans.iter() {
            push_merged(list, span_of(s, events, ops));
        }
    }
}

fn span_of(interval: &Interval, events: &[Event], ops: &[KeyOp]) -> Span {
    Span {
        lo: interval.lo,
        hi: interval.hi,
        cause: interval
            .cause
            .and_then(|i| Some((events.get(i as usize)?.client, ops[i as usize]))),
    }
}
