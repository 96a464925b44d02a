//! Witnesses: turning a finding into the evidence a person reads — the
//! operations with their times relative to the storm's start, the longest
//! legal prefix, and one sentence.

use mapchaos_api::{AnomalyKind, LinearizablePrefix, OpName, Witness, WitnessOp};

use super::search::{self, ABSENT};
use super::{Action, Finding, KeyOp};
use crate::history::{Event, History, KeyId, Op, ValueId};

/// How many of the prefix's last operations a witness shows.
const PREFIX_TAIL: usize = 5;
/// How many operations a nonlinearizable witness lists.
const FRONTIER: usize = 10;

pub(crate) fn value_phrase(value: ValueId) -> String {
    value.to_string()
}

fn state_phrase(state: Option<ValueId>) -> String {
    state.map_or_else(|| "absent".to_owned(), |v| format!("holding {v}"))
}

/// A short name for an operation in an explanation, e.g. "GET returning nil".
pub(crate) fn op_phrase(op: &KeyOp) -> String {
    if op.is_info() {
        return match op.action {
            Action::Get(_) => "GET (outcome unknown)".to_owned(),
            Action::Set(v) => format!("SET of {v} (outcome unknown)"),
            Action::Del(_) => "DEL (outcome unknown)".to_owned(),
            Action::Exists(_) => "EXISTS (outcome unknown)".to_owned(),
        };
    }
    match op.action {
        Action::Get(Some(v)) => format!("GET returning {v}"),
        Action::Get(None) => "GET returning nil".to_owned(),
        Action::Set(v) => format!("SET of {v}"),
        Action::Del(removed) => format!("DEL returning {}", u8::from(removed)),
        Action::Exists(present) => format!("EXISTS returning {}", u8::from(present)),
    }
}

/// [`op_phrase`] for a single-key history event.
pub(crate) fn event_phrase(event: &Event) -> String {
    let action = match event.op {
        Op::Get { read, .. } => Action::Get(read),
        Op::Set { value, .. } => Action::Set(value),
        Op::Del { removed, .. } => Action::Del(removed),
        Op::Exists { present, .. } => Action::Exists(present),
        Op::Scan { .. } => return "SCAN".to_owned(),
    };
    op_phrase(&KeyOp {
        call: event.call,
        ret: event.ret,
        action,
        event: 0,
    })
}

fn micros(history: &History, t: u64) -> u64 {
    t.saturating_sub(history.start()) / 1_000
}

/// One event as a witness entry; `key` says which key a SCAN is judged for.
pub(crate) fn witness_op(history: &History, event: &Event, key: KeyId) -> WitnessOp {
    let (op, argument, result) = match &event.op {
        Op::Get { read, .. } => (
            OpName::Get,
            None,
            read.map_or_else(|| "nil".to_owned(), value_phrase),
        ),
        Op::Set { value, .. } => (OpName::Set, Some(value_phrase(*value)), "OK".to_owned()),
        Op::Del { removed, .. } => (OpName::Del, None, u8::from(*removed).to_string()),
        Op::Exists { present, .. } => (OpName::Exists, None, u8::from(*present).to_string()),
        Op::Scan { found } => {
            let has = if found.contains(&key) {
                "included"
            } else {
                "not included"
            };
            (
                OpName::Scan,
                None,
                format!("{} keys, this key {has}", found.len()),
            )
        }
    };
    WitnessOp {
        client: event.client,
        op,
        argument,
        result: (!event.is_info()).then_some(result),
        call_us: micros(history, event.call),
        ret_us: (!event.is_info()).then(|| micros(history, event.ret)),
    }
}

/// The report's witness for a finding.
pub(crate) fn build(
    history: &History,
    ops: &[KeyOp],
    finding: &Finding,
    intervals: Option<&super::scan::KeyIntervals>,
) -> Witness {
    let events = history.events();
    let operations = finding
        .events
        .iter()
        .map(|&e| witness_op(history, &events[e as usize], finding.key))
        .collect();
    let longest_prefix = finding
        .prefix
        .as_ref()
        .map(|(order, state)| LinearizablePrefix {
            length: order.len() as u64,
            tail: order[order.len().saturating_sub(PREFIX_TAIL)..]
                .iter()
                .map(|&e| witness_op(history, &events[e as usize], finding.key))
                .collect(),
            state: state_phrase(*state),
        });
    Witness {
        kind: finding.kind,
        key: history.printable_key(finding.key),
        operations,
        longest_prefix,
        explanation: finding.explanation.clone(),
        timeline: Some(super::timeline::build(history, ops, finding, intervals)),
    }
}

/// The finding for a key the search proved nonlinearizable: the longest
/// legal prefix it found, and the operations that could have come next,
/// among which the search found no legal continuation.
pub(crate) fn nonlinearizable(key: KeyId, ops: &[KeyOp], prefix: &[usize]) -> Finding {
    let mut placed = vec![false; ops.len()];
    let mut state = ABSENT;
    for &i in prefix {
        placed[i] = true;
        state = search::step(state, &ops[i]).unwrap_or(state);
    }
    // The completed operation that returned first among the unplaced ones
    // bounds what could come next: anything called after it returned cannot.
    let blocker = (0..ops.len())
        .filter(|&i| !placed[i] && !ops[i].is_info())
        .min_by_key(|&i| (ops[i].ret, i));
    let horizon = blocker.map_or(u64::MAX, |b| ops[b].ret);
    let mut next: Vec<usize> = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].call <= horizon)
        .collect();
    if next.len() > FRONTIER {
        next.truncate(FRONTIER);
        if let Some(b) = blocker
            && !next.contains(&b)
        {
            next[FRONTIER - 1] = b;
        }
    }
    let state = (state != ABSENT).then_some(ValueId(state));
    let explanation = match blocker {
        Some(b) => format!(
            "No order of this key's operations is legal: the longest legal prefix orders {} of them, leaving the key {}, and from there no order of the operations that could come next ({} listed) explains the {}.",
            prefix.len(),
            state_phrase(state),
            next.len(),
            op_phrase(&ops[b])
        ),
        None => "No order of this key's operations is legal.".to_owned(),
    };
    Finding {
        kind: AnomalyKind::Nonlinearizable,
        key,
        events: next.iter().map(|&i| ops[i].event).collect(),
        culprit: blocker.map(|b| ops[b].event),
        explanation,
        prefix: Some((prefix.iter().map(|&i| ops[i].event).collect(), state)),
    }
}
