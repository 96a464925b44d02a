//! A witness's timeline: the anomalous key's operations around the anomaly,
//! bounded, with the longest legal prefix and the culprit marked and the
//! key's value before and after each operation, so a report can draw it.

use std::collections::HashSet;

use mapchaos_api::timeline::{KeyTimeline, OpRole, Presence, PresenceSpan, TimelineOp};

use super::scan::KeyIntervals;
use super::search::{self, ABSENT};
use super::witness::{value_phrase, witness_op};
use super::{Action, Finding, KeyOp};
use crate::history::History;

/// How many bars a timeline holds at most: the witness's own operations
/// always, then the key's nearest others in time.
pub(crate) const TIMELINE_OPS: usize = 32;
/// How many presence spans a SCAN timeline holds at most.
const PRESENCE_SPANS: usize = 16;
/// How many of the prefix's last operations are always drawn.
const PREFIX_SHOWN: usize = 5;

fn state_text(state: u64) -> String {
    if state == ABSENT {
        "absent".to_owned()
    } else {
        value_phrase(crate::history::ValueId(state))
    }
}

/// The value before and after `op`, as the operation itself observed it.
fn observed(op: &KeyOp) -> (String, String) {
    let unknown = || "unknown".to_owned();
    let absent = || "absent".to_owned();
    if op.is_info() {
        return match op.action {
            Action::Set(v) => (unknown(), format!("{v} or unchanged")),
            Action::Del(_) => (unknown(), "absent or unchanged".to_owned()),
            _ => (unknown(), unknown()),
        };
    }
    match op.action {
        Action::Get(Some(v)) => (value_phrase(v), value_phrase(v)),
        Action::Get(None) | Action::Exists(false) | Action::Del(false) => (absent(), absent()),
        Action::Exists(true) => ("present".to_owned(), "present".to_owned()),
        Action::Set(v) => (unknown(), value_phrase(v)),
        Action::Del(true) => ("present".to_owned(), absent()),
    }
}

/// The timeline of `finding`, from the key's operations `ops` (sorted by
/// call, SCANs excluded) and, for SCAN anomalies, the key's intervals.
pub(crate) fn build(
    history: &History,
    ops: &[KeyOp],
    finding: &Finding,
    intervals: Option<&KeyIntervals>,
) -> KeyTimeline {
    let events = history.events();
    let index_of = |event: u32| ops.binary_search_by_key(&event, |o| o.event).ok();
    let involved: HashSet<u32> = finding.events.iter().copied().collect();
    let mut must: Vec<u32> = finding.events.clone();
    must.extend(finding.culprit);
    // The prefix's states, event by event, in its order.
    let mut placed = std::collections::HashMap::new();
    if let Some((order, _)) = &finding.prefix {
        let mut state = ABSENT;
        for &event in order {
            if let Some(i) = index_of(event) {
                let after = search::step(state, &ops[i]).unwrap_or(state);
                placed.insert(event, (state_text(state), state_text(after)));
                state = after;
            }
        }
        must.extend(&order[order.len().saturating_sub(PREFIX_SHOWN)..]);
    }
    must.sort_unstable();
    must.dedup();

    // The window the witness spans; the other operations closest to it fill
    // the remaining bars.
    let lo = must
        .iter()
        .map(|&e| events[e as usize].call)
        .min()
        .unwrap_or(0);
    let hi = must
        .iter()
        .map(|&e| {
            let e = &events[e as usize];
            if e.is_info() { e.call } else { e.ret }
        })
        .max()
        .unwrap_or(0);
    let mut others: Vec<(u64, u32)> = ops
        .iter()
        .filter(|o| !must.contains(&o.event))
        .map(|o| {
            let ret = if o.is_info() { o.call } else { o.ret };
            let gap = if ret < lo {
                lo - ret
            } else {
                o.call.saturating_sub(hi)
            };
            (gap, o.event)
        })
        .collect();
    let room = TIMELINE_OPS.saturating_sub(must.len());
    if others.len() > room {
        others.select_nth_unstable(room);
        others.truncate(room);
    }
    let mut chosen: Vec<u32> = must.clone();
    chosen.extend(others.iter().map(|&(_, e)| e));
    chosen.sort_unstable();
    let shown_key_ops = chosen.iter().filter(|&&e| index_of(e).is_some()).count();

    let ops_out = chosen
        .iter()
        .map(|&event| {
            let role = if finding.culprit == Some(event) {
                OpRole::Culprit
            } else if involved.contains(&event) {
                OpRole::Witness
            } else {
                OpRole::Context
            };
            let (before, after) = match (placed.get(&event), index_of(event)) {
                (Some(states), _) => states.clone(),
                (None, Some(i)) => observed(&ops[i]),
                // A SCAN: it reads the keyspace, it does not change the key.
                (None, None) => ("—".to_owned(), "—".to_owned()),
            };
            TimelineOp {
                op: witness_op(history, &events[event as usize], finding.key),
                role,
                in_prefix: placed.contains_key(&event),
                before,
                after,
            }
        })
        .collect();
    let presence = intervals.map_or_else(Vec::new, |k| presence(history, k, lo, hi));
    KeyTimeline {
        ops: ops_out,
        omitted: (ops.len() - shown_key_ops) as u64,
        presence,
    }
}

/// The key's certain spans overlapping the window, nearest first, in time order.
fn presence(history: &History, intervals: &KeyIntervals, lo: u64, hi: u64) -> Vec<PresenceSpan> {
    let micros = |t: u64| t.saturating_sub(history.start()) / 1_000;
    let mut spans: Vec<(u64, PresenceSpan)> = [
        (Presence::Present, intervals.present()),
        (Presence::Absent, intervals.absent()),
    ]
    .into_iter()
    .flat_map(|(presence, spans)| {
        spans.into_iter().map(move |(from, to)| {
            let gap = if to <= lo {
                lo - to
            } else {
                from.saturating_sub(hi)
            };
            (
                gap,
                PresenceSpan {
                    presence,
                    from_us: micros(from),
                    to_us: (to != u64::MAX).then(|| micros(to)),
                },
            )
        })
    })
    .collect();
    spans.sort_by_key(|(gap, s)| (*gap, s.from_us));
    spans.truncate(PRESENCE_SPANS);
    let mut spans: Vec<PresenceSpan> = spans.into_iter().map(|(_, s)| s).collect();
    spans.sort_by_key(|s| s.from_us);
    spans
}
