//! The online checker against the offline one: the same verdict, counts,
//! exposures and anomaly kinds per key (every witness, keyed) on histories
//! from the correct map, the stale-snapshot map and the hand-written anomaly
//! histories; and what it does when a key outgrows its bounds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mapchaos_api::{AnomalyKind, CheckReport, Verdict};
use proptest::prelude::*;

use super::super::tests::{
    Correct, Rng, Shape, Snapshot, lost_delete_of_absent_key, lost_delete_of_present_key,
    lost_write, options, phantom_read, read_from_the_future, resurrection, scan_miss, scan_phantom,
    simulate, stale_read,
};
use super::super::{CheckOptions, check};
use super::{OnlineOptions, check_online, check_online_with};
use crate::history::{Event, History, Op, ValueId};

fn every_witness() -> CheckOptions {
    CheckOptions {
        max_witnesses: 100_000,
        ..options()
    }
}

/// Each witness as (key, kind): with every witness kept, the kinds found
/// on each key.
fn kinds_by_key(report: &CheckReport) -> Vec<(String, AnomalyKind)> {
    report
        .witnesses
        .iter()
        .map(|w| (w.key.clone(), w.kind))
        .collect()
}

/// Online and offline say the same of `history`; returns the report.
fn assert_agree(history: &History) -> CheckReport {
    let offline = check(history, &every_witness());
    let online = check_online(history, &every_witness());
    assert!(online.online && !offline.online);
    assert_eq!(online.verdict, offline.verdict, "{online:#?}\n{offline:#?}");
    assert_eq!(online.keys, offline.keys, "{online:#?}\n{offline:#?}");
    assert_eq!(
        online.anomalies, offline.anomalies,
        "{online:#?}\n{offline:#?}"
    );
    assert_eq!(kinds_by_key(&online), kinds_by_key(&offline));
    // Every witness comes with its key's timeline, as offline.
    assert!(
        online.witnesses.iter().all(|w| w.timeline.is_some()),
        "{online:#?}"
    );
    assert_eq!(online.exposures, offline.exposures);
    assert_eq!(online.max_overlap, offline.max_overlap);
    assert_eq!(
        (online.ops_checked, online.ops_known),
        (offline.ops_checked, offline.ops_known)
    );
    assert_eq!(online.scan_duplicates, offline.scan_duplicates);
    // The witnesses a report keeps (the first ten) name the same keys too.
    let first = |r: &CheckReport| -> Vec<(String, AnomalyKind)> {
        kinds_by_key(r).into_iter().take(10).collect()
    };
    let online_default = check_online(history, &options());
    assert_eq!(first(&online_default), first(&offline));
    assert_eq!(
        online_default.witnesses.len(),
        offline.witnesses.len().min(10)
    );
    // With every window past the exhaustive search's bound, decided one end
    // state at a time (only without unknown outcomes pending: with them the
    // key is given up instead).
    if !history.events().iter().any(Event::is_info) {
        let by_end_state = check_online_with(history, &with_window_nodes(1, &every_witness()));
        assert_eq!(by_end_state.verdict, offline.verdict);
        assert_eq!(by_end_state.keys, offline.keys, "{by_end_state:#?}");
        assert_eq!(by_end_state.anomalies, offline.anomalies);
        assert_eq!(kinds_by_key(&by_end_state), kinds_by_key(&offline));
    }
    online
}

fn history(keys: usize, events: Vec<Event>) -> History {
    let keys = (0..keys).map(|k| format!("k{k}").into_bytes()).collect();
    History::new(keys, 0, false, events).expect("valid history")
}

#[test]
fn every_hand_written_anomaly_and_its_repair_agree() {
    type Case = fn(bool) -> Vec<Event>;
    let cases: [(Case, usize, AnomalyKind); 9] = [
        (stale_read, 1, AnomalyKind::StaleRead),
        (resurrection, 1, AnomalyKind::Resurrection),
        (lost_delete_of_present_key, 1, AnomalyKind::LostDelete),
        (lost_delete_of_absent_key, 1, AnomalyKind::LostDelete),
        (lost_write, 1, AnomalyKind::LostWrite),
        (phantom_read, 1, AnomalyKind::PhantomRead),
        (scan_miss, 2, AnomalyKind::ScanMiss),
        (scan_phantom, 2, AnomalyKind::ScanPhantom),
        (read_from_the_future, 1, AnomalyKind::Nonlinearizable),
    ];
    for (case, keys, kind) in cases {
        let broken = assert_agree(&history(keys, case(false)));
        assert_eq!(broken.verdict, Verdict::Fail, "{kind:?}");
        assert!(broken.anomalies[&kind] > 0, "{kind:?}: {broken:#?}");
        let repaired = assert_agree(&history(keys, case(true)));
        assert_eq!(repaired.verdict, Verdict::Pass, "{kind:?}: {repaired:#?}");
    }
}

/// Online options whose windows' exhaustive search gives up past `nodes`,
/// so windows are decided one end state at a time.
fn with_window_nodes(nodes: usize, check: &CheckOptions) -> OnlineOptions {
    OnlineOptions {
        window_nodes: nodes,
        ..OnlineOptions::from_check(check)
    }
}

fn concurrent_sets(n: u32) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            client: i,
            call: u64::from(i),
            ret: 1_000,
            op: Op::Set {
                key: 0,
                value: ValueId::new(i, 0),
            },
        })
        .collect()
}

fn read(client: u32, call: u64, value: Option<ValueId>) -> Event {
    Event {
        client,
        call,
        ret: call + 1,
        op: Op::Get {
            key: 0,
            read: value,
        },
    }
}

#[test]
fn a_window_too_big_to_explore_is_decided_one_end_state_at_a_time() {
    // Twelve concurrent SETs are thousands of orders, past a bound of 64
    // nodes: the window is decided by searching for each value that may be
    // left, and the key's verdict is the offline one, legal or not.
    let (one, zero) = (ValueId::new(1, 0), ValueId::new(0, 0));
    for (second, verdict) in [(zero, Verdict::Fail), (one, Verdict::Pass)] {
        let mut events = concurrent_sets(12);
        events.push(read(30, 3_000, Some(one)));
        events.push(read(31, 3_002, Some(second)));
        let history = history(1, events);
        let offline = check(&history, &every_witness());
        let online = check_online_with(&history, &with_window_nodes(64, &every_witness()));
        assert_eq!(offline.verdict, verdict, "{offline:#?}");
        assert_eq!(online.verdict, verdict, "{online:#?}");
        assert_eq!(online.keys, offline.keys);
        assert_eq!(online.anomalies, offline.anomalies);
    }
}

#[test]
fn a_window_past_its_search_budget_leaves_its_key_unknown_never_ok() {
    // Twenty-four concurrent SETs and, among them, a read of a value none
    // wrote: too many orders to explore, and refuting each end state takes
    // more than a spent budget.
    let mut events = concurrent_sets(24);
    events.push(Event {
        ret: 600,
        ..read(30, 500, Some(ValueId::new(99, 0)))
    });
    let spent = CheckOptions {
        per_key_budget: std::time::Duration::ZERO,
        ..options()
    };
    let report = check_online_with(&history(1, events), &with_window_nodes(64, &spent));
    assert_eq!((report.keys.ok, report.keys.unknown), (0, 1), "{report:#?}");
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert!(
        report.unknown_reasons[0].contains("timeoutPerKey"),
        "{:?}",
        report.unknown_reasons
    );
}

#[test]
fn a_stale_snapshot_map_under_concurrency_is_caught_alike() {
    let shape = Shape {
        ops: 400,
        keys: 2,
        clients: 4,
        max_len: 6,
        info_percent: 2,
        scan_percent: 3,
    };
    let mut kinds = BTreeSet::new();
    for seed in 0..20 {
        let mut map = Snapshot {
            primary: vec![None; 2],
            snapshot: vec![None; 2],
            every: 8,
            applied: 0,
        };
        let report = assert_agree(&simulate(&mut Rng(seed), &shape, &mut map));
        assert_eq!(report.verdict, Verdict::Fail, "seed {seed}");
        kinds.extend(kinds_by_key(&report).into_iter().map(|(_, k)| k));
    }
    // Named kinds, not only the search's catch-all.
    assert!(kinds.len() >= 3, "{kinds:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn online_and_offline_agree_on_a_correct_map(
        seed in any::<u64>(),
        ops in 1usize..120,
        keys in 1usize..4,
        clients in 1u32..8,
        max_len in 0u64..40,
    ) {
        // Half the histories without unknown outcomes, so that every window
        // is also decided one end state at a time (see `assert_agree`).
        let info_percent = if seed % 2 == 0 { 0 } else { 10 };
        let shape = Shape { ops, keys, clients, max_len, info_percent, scan_percent: 8 };
        let history = simulate(&mut Rng(seed), &shape, &mut Correct(vec![None; keys]));
        let report = assert_agree(&history);
        prop_assert_eq!(report.total_anomalies(), 0);
    }

    #[test]
    fn online_and_offline_agree_on_a_stale_snapshot_map(
        seed in any::<u64>(),
        ops in 1usize..150,
        keys in 1usize..4,
        clients in 1u32..8,
        max_len in 0u64..20,
        every in 2u64..10,
        info_percent in 0u64..10,
    ) {
        let shape = Shape { ops, keys, clients, max_len, info_percent, scan_percent: 6 };
        let mut map = Snapshot {
            primary: vec![None; keys],
            snapshot: vec![None; keys],
            every,
            applied: 0,
        };
        assert_agree(&simulate(&mut Rng(seed), &shape, &mut map));
    }
}

fn with_retain(total: usize) -> OnlineOptions {
    OnlineOptions {
        retain_total: total,
        anomalies: Arc::new(AtomicU64::new(0)),
        ..OnlineOptions::from_check(&every_witness())
    }
}

#[test]
fn keys_longer_than_what_is_kept_still_get_the_same_verdicts() {
    // 64 operations kept per key (the least), histories ten times longer:
    // keys anchor on their one possible state or drop what they keep, and
    // the verdicts, the illegal keys and every count but the kinds agree.
    for seed in 0..30 {
        let shape = Shape {
            ops: 1_500,
            keys: 2,
            clients: 5,
            max_len: 8,
            info_percent: u64::from(seed % 3 == 0),
            scan_percent: 2,
        };
        let history = if seed % 2 == 0 {
            simulate(&mut Rng(seed), &shape, &mut Correct(vec![None; 2]))
        } else {
            let mut map = Snapshot {
                primary: vec![None; 2],
                snapshot: vec![None; 2],
                every: 40,
                applied: 0,
            };
            simulate(&mut Rng(seed), &shape, &mut map)
        };
        let offline = check(&history, &every_witness());
        let online = check_online_with(&history, &with_retain(1));
        assert_eq!(online.verdict, offline.verdict, "seed {seed}");
        assert_eq!(online.keys, offline.keys, "seed {seed}");
        assert_eq!(online.exposures, offline.exposures, "seed {seed}");
        let keys = |r: &CheckReport| -> BTreeSet<String> {
            r.witnesses.iter().map(|w| w.key.clone()).collect()
        };
        assert_eq!(keys(&online), keys(&offline), "seed {seed}");
        assert_eq!(online.total_anomalies(), offline.total_anomalies());
    }
}

#[test]
fn live_anomaly_count_rises_as_keys_fail() {
    let options = with_retain(1 << 18);
    let report = check_online_with(&history(1, stale_read(false)), &options);
    assert_eq!(report.keys.illegal, 1);
    assert_eq!(
        options.anomalies.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_key_with_too_many_unknown_writes_pending_is_unknown_with_the_reason() {
    // Forty SETs that all timed out, then reads: more unknown operations
    // than a possible state can track, so the key is given up, never ok.
    let mut events: Vec<Event> = (0..40u32)
        .map(|i| Event {
            client: i,
            call: u64::from(i) * 10,
            ret: Event::NO_RETURN,
            op: Op::Set {
                key: 0,
                value: ValueId::new(i, 0),
            },
        })
        .collect();
    for i in 0..5u32 {
        events.push(Event {
            client: 50 + i,
            call: 1_000 + u64::from(i) * 10,
            ret: 1_005 + u64::from(i) * 10,
            op: Op::Get {
                key: 0,
                read: Some(ValueId::new(i, 0)),
            },
        });
    }
    let report = check_online(&history(1, events), &options());
    assert_eq!(report.keys.unknown, 1, "{report:#?}");
    assert_eq!(report.keys.ok, 0);
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert!(
        report.unknown_reasons[0].contains("unknown outcome"),
        "{:?}",
        report.unknown_reasons
    );
}

#[test]
fn a_key_never_free_of_operations_in_flight_is_unknown_past_the_window_bound() {
    // Two clients whose operations always overlap: no cut ever comes.
    let n = super::MAX_WINDOW as u64 / 2 + 10;
    let mut events = Vec::new();
    for i in 0..n {
        for client in 0..2u32 {
            let call = i * 10 + u64::from(client) * 5;
            events.push(Event {
                client,
                call,
                ret: call + 7,
                op: Op::Get { key: 0, read: None },
            });
        }
    }
    let report = check_online(&history(1, events), &options());
    assert_eq!(report.keys.unknown, 1, "{report:#?}");
    assert!(report.unknown_reasons[0].contains("in one window"));
    assert_eq!(report.ops_checked, 2 * n);
}
