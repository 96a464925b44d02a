//! The checker's proof: one hand-written history per anomaly kind (and its
//! one-operation repair), soundness on correct maps under simulated
//! concurrency, detection of a stale-snapshot map, detectors and search
//! against a brute-force oracle, and unknown never passing as ok.

use std::time::{Duration, Instant};

use mapchaos_api::{AnomalyKind, CheckReport, Verdict};
use proptest::prelude::*;

use super::detect::detect;
use super::search::{self, Outcome};
use super::{Action, CheckOptions, KeyOp, check};
use crate::history::{Event, History, KeyId, Op, ValueId};

const INF: u64 = Event::NO_RETURN;

fn v(n: u32) -> ValueId {
    ValueId::new(0, n)
}

fn ev(client: u32, call: u64, ret: u64, op: Op) -> Event {
    Event {
        client,
        call,
        ret,
        op,
    }
}

fn set(client: u32, call: u64, ret: u64, key: KeyId, value: ValueId) -> Event {
    ev(client, call, ret, Op::Set { key, value })
}

fn get(client: u32, call: u64, ret: u64, key: KeyId, read: Option<ValueId>) -> Event {
    ev(client, call, ret, Op::Get { key, read })
}

fn del(client: u32, call: u64, ret: u64, key: KeyId, removed: bool) -> Event {
    ev(client, call, ret, Op::Del { key, removed })
}

fn exists(client: u32, call: u64, ret: u64, key: KeyId, present: bool) -> Event {
    ev(client, call, ret, Op::Exists { key, present })
}

fn scan(client: u32, call: u64, ret: u64, found: &[KeyId]) -> Event {
    ev(
        client,
        call,
        ret,
        Op::Scan {
            found: found.into(),
        },
    )
}

fn options() -> CheckOptions {
    CheckOptions {
        per_key_budget: Duration::from_secs(30),
        threads: 2,
        max_witnesses: 10,
        cancel: None,
        memory: None,
    }
}

fn run(keys: usize, events: Vec<Event>) -> CheckReport {
    let keys = (0..keys).map(|k| format!("k{k}").into_bytes()).collect();
    let history = History::new(keys, 0, false, events).expect("valid history");
    check(&history, &options())
}

/// The report flags exactly `kind`, once, with a witness naming it.
fn assert_only(report: &CheckReport, kind: AnomalyKind) {
    let flagged: Vec<(AnomalyKind, u64)> = report
        .anomalies
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (*k, *n))
        .collect();
    assert_eq!(flagged, [(kind, 1)], "witnesses: {:#?}", report.witnesses);
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.witnesses.len(), 1);
    assert_eq!(report.witnesses[0].kind, kind);
    assert!(!report.witnesses[0].operations.is_empty());
    assert!(report.witnesses[0].to_string().contains(kind.as_str()));
}

/// The repaired history passes: no anomaly, every key ok, and it raced.
fn assert_passes(report: &CheckReport) {
    assert_eq!(
        report.total_anomalies(),
        0,
        "witnesses: {:#?}",
        report.witnesses
    );
    assert_eq!(report.keys.illegal + report.keys.unknown, 0);
    assert!(report.total_exposures() > 0);
    assert_eq!(report.verdict, Verdict::Pass);
}

// Each case: the anomalous history, then the same with one result or one
// timing changed, which a correct map could have produced.

fn stale_read(repaired: bool) -> Vec<Event> {
    let last = if repaired { None } else { Some(v(1)) };
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        del(2, 20, 30, 0, true),
        get(3, 40, 50, 0, last),
    ]
}

#[test]
fn stale_read_is_flagged_and_its_repair_passes() {
    assert_only(&run(1, stale_read(false)), AnomalyKind::StaleRead);
    assert_passes(&run(1, stale_read(true)));
}

fn resurrection(repaired: bool) -> Vec<Event> {
    let last = if repaired { None } else { Some(v(1)) };
    vec![
        set(0, 0, 10, 0, v(1)),
        del(1, 5, 100, 0, true),
        get(2, 20, 30, 0, None),
        get(3, 40, 50, 0, last),
    ]
}

#[test]
fn resurrection_is_flagged_and_its_repair_passes() {
    assert_only(&run(1, resurrection(false)), AnomalyKind::Resurrection);
    assert_passes(&run(1, resurrection(true)));
}

fn lost_delete_of_present_key(repaired: bool) -> Vec<Event> {
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 5, 8, 0, Some(v(1))),
        del(2, 20, 30, 0, repaired),
    ]
}

#[test]
fn del_returning_0_on_a_present_key_is_a_lost_delete_and_its_repair_passes() {
    assert_only(
        &run(1, lost_delete_of_present_key(false)),
        AnomalyKind::LostDelete,
    );
    assert_passes(&run(1, lost_delete_of_present_key(true)));
}

fn lost_delete_of_absent_key(repaired: bool) -> Vec<Event> {
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 5, 8, 0, Some(v(1))),
        del(2, 20, 30, 0, true),
        del(3, 40, 50, 0, !repaired),
    ]
}

#[test]
fn del_returning_1_on_an_absent_key_is_a_lost_delete_and_its_repair_passes() {
    assert_only(
        &run(1, lost_delete_of_absent_key(false)),
        AnomalyKind::LostDelete,
    );
    assert_passes(&run(1, lost_delete_of_absent_key(true)));
}

fn lost_write(repaired: bool) -> Vec<Event> {
    let last = if repaired { Some(v(1)) } else { None };
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        get(2, 20, 30, 0, last),
    ]
}

#[test]
fn lost_write_is_flagged_and_its_repair_passes() {
    assert_only(&run(1, lost_write(false)), AnomalyKind::LostWrite);
    assert_passes(&run(1, lost_write(true)));
}

fn phantom_read(repaired: bool) -> Vec<Event> {
    let last = if repaired { v(1) } else { ValueId::UNWRITTEN };
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        get(2, 20, 30, 0, Some(last)),
    ]
}

#[test]
fn phantom_read_is_flagged_and_its_repair_passes() {
    assert_only(&run(1, phantom_read(false)), AnomalyKind::PhantomRead);
    assert_passes(&run(1, phantom_read(true)));
}

#[test]
fn reading_a_value_written_only_to_another_key_is_a_phantom_read() {
    let events = vec![
        set(0, 0, 10, 1, v(1)),
        get(1, 2, 4, 0, None),
        get(2, 20, 30, 0, Some(v(1))),
    ];
    assert_only(&run(2, events), AnomalyKind::PhantomRead);
}

fn scan_miss(repaired: bool) -> Vec<Event> {
    let found: &[KeyId] = if repaired { &[0] } else { &[] };
    vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        scan(2, 20, 30, found),
    ]
}

#[test]
fn scan_miss_is_flagged_and_its_repair_passes() {
    assert_only(&run(2, scan_miss(false)), AnomalyKind::ScanMiss);
    assert_passes(&run(2, scan_miss(true)));
}

fn scan_phantom(repaired: bool) -> Vec<Event> {
    let found: &[KeyId] = if repaired { &[1] } else { &[1, 0] };
    vec![
        set(0, 0, 10, 1, v(1)),
        get(1, 2, 4, 1, None),
        set(3, 0, 5, 0, v(2)),
        del(4, 6, 8, 0, true),
        scan(2, 20, 30, found),
    ]
}

#[test]
fn scan_phantom_is_flagged_and_its_repair_passes() {
    assert_only(&run(2, scan_phantom(false)), AnomalyKind::ScanPhantom);
    assert_passes(&run(2, scan_phantom(true)));
}

#[test]
fn scans_may_repeat_keys_and_may_return_or_miss_keys_that_change_during_them() {
    let events = vec![
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        // Key 1 is written during the scan, key 0 deleted during it.
        set(3, 22, 25, 1, v(2)),
        del(4, 24, 26, 0, true),
        scan(2, 20, 30, &[1, 1]),
        scan(5, 21, 31, &[0]),
    ];
    let report = run(2, events);
    assert_passes(&report);
    assert_eq!(report.scan_duplicates, 1);
}

fn read_from_the_future(repaired: bool) -> Vec<Event> {
    let early_ret = if repaired { 15 } else { 5 };
    vec![
        get(0, 0, early_ret, 0, Some(v(1))),
        set(1, 10, 20, 0, v(1)),
        get(2, 12, 14, 0, None),
    ]
}

#[test]
fn what_no_detector_names_the_search_finds_as_nonlinearizable_with_its_prefix() {
    let report = run(1, read_from_the_future(false));
    assert_only(&report, AnomalyKind::Nonlinearizable);
    let witness = &report.witnesses[0];
    assert!(witness.longest_prefix.is_some());
    assert!(witness.to_string().contains("longest legal prefix"));
    assert_passes(&run(1, read_from_the_future(true)));
}

/// 20 concurrent SETs, then two sequential reads that no order of them
/// explains; refuting that takes the search exponentially many steps.
fn hard_to_refute() -> Vec<Event> {
    let mut events: Vec<Event> = (0..20)
        .map(|i| set(i, u64::from(i), 1_000, 0, v(i)))
        .collect();
    events.push(get(30, 3_000, 3_001, 0, Some(v(1))));
    events.push(get(31, 3_002, 3_003, 0, Some(v(0))));
    events
}

#[test]
fn a_key_that_runs_out_of_budget_is_unknown_and_the_verdict_inconclusive() {
    let keys = vec![b"k0".to_vec()];
    let history = History::new(keys, 0, false, hard_to_refute()).unwrap();
    let tiny = CheckOptions {
        per_key_budget: Duration::ZERO,
        ..options()
    };
    let report = check(&history, &tiny);
    assert_eq!(report.keys.unknown, 1);
    assert_eq!(report.keys.ok, 0);
    assert_eq!(report.total_anomalies(), 0);
    assert!(report.total_exposures() > 0);
    assert_eq!(report.verdict, Verdict::Inconclusive);
}

#[test]
fn a_key_whose_search_outgrows_its_memory_share_is_unknown() {
    let keys = vec![b"k0".to_vec()];
    let history = History::new(keys, 0, false, hard_to_refute()).unwrap();
    // Time enough for hours of search: only the memory bound can stop it.
    let cramped = CheckOptions {
        per_key_budget: Duration::from_secs(3600),
        memory: Some(2 * 64 * 1024),
        ..options()
    };
    let started = std::time::Instant::now();
    let report = check(&history, &cramped);
    assert_eq!(report.keys.unknown, 1);
    assert_eq!(report.keys.illegal + report.keys.ok, 0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped by its memory bound, not its time: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_storm_without_exposure_is_inconclusive_even_when_legal() {
    let events = vec![set(0, 0, 10, 0, v(1)), get(1, 20, 30, 0, Some(v(1)))];
    let report = run(1, events);
    assert_eq!(report.total_anomalies(), 0);
    assert_eq!(report.keys.ok, 1);
    assert_eq!(report.verdict, Verdict::Inconclusive);
}

#[test]
fn reads_of_a_write_in_flight_and_unknown_deletes_are_legal() {
    let events = vec![
        set(0, 0, 100, 0, v(1)),
        get(1, 10, 20, 0, Some(v(1))),
        get(2, 30, 40, 0, Some(v(1))),
        // A timed-out DEL may take effect late or not at all.
        del(3, 101, INF, 0, true),
        get(4, 110, 120, 0, Some(v(1))),
        exists(5, 130, 140, 0, false),
        // A timed-out SET may take effect any time after its call.
        set(6, 150, INF, 0, v(2)),
        get(7, 500, 510, 0, None),
        get(8, 600, 610, 0, Some(v(2))),
        exists(9, 700, 710, 0, true),
    ];
    assert_passes(&run(1, events));
}

#[test]
fn truncation_is_reported() {
    let keys = vec![b"k0".to_vec()];
    let history = History::new(keys, 0, true, stale_read(true)).unwrap();
    assert!(check(&history, &options()).truncated);
}

// ---- Simulation: histories from a sequential model under concurrency ----

/// A small deterministic generator (splitmix64), so a failing case is a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A map being simulated: applies one operation at its linearization point.
trait Map {
    fn apply(&mut self, key: usize, kind: Kind, value: ValueId) -> Action;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Get,
    Set,
    Del,
    Exists,
    Scan,
}

/// The correct map: a register per key.
struct Correct(Vec<Option<ValueId>>);

impl Map for Correct {
    fn apply(&mut self, key: usize, kind: Kind, value: ValueId) -> Action {
        let slot = &mut self.0[key];
        match kind {
            Kind::Get => Action::Get(*slot),
            Kind::Set => {
                *slot = Some(value);
                Action::Set(value)
            }
            Kind::Del => Action::Del(slot.take().is_some()),
            Kind::Exists | Kind::Scan => Action::Exists(slot.is_some()),
        }
    }
}

/// The broken map of CHECKER.md: writes go to the primary, reads are served
/// from a snapshot refreshed every `every` operations.
struct Snapshot {
    primary: Vec<Option<ValueId>>,
    snapshot: Vec<Option<ValueId>>,
    every: u64,
    applied: u64,
}

impl Map for Snapshot {
    fn apply(&mut self, key: usize, kind: Kind, value: ValueId) -> Action {
        self.applied += 1;
        if self.applied.is_multiple_of(self.every) {
            self.snapshot = self.primary.clone();
        }
        match kind {
            Kind::Get => Action::Get(self.snapshot[key]),
            Kind::Exists | Kind::Scan => Action::Exists(self.snapshot[key].is_some()),
            Kind::Set => {
                self.primary[key] = Some(value);
                Action::Set(value)
            }
            Kind::Del => Action::Del(self.primary[key].take().is_some()),
        }
    }
}

struct Shape {
    ops: usize,
    keys: usize,
    clients: u32,
    /// Longest operation, in clock ticks.
    max_len: u64,
    info_percent: u64,
    scan_percent: u64,
}

/// Planned operation: who, what, when, and when it takes effect (`None`:
/// never, for an unknown op that did not happen, and for SCANs).
struct Planned {
    client: u32,
    key: usize,
    kind: Kind,
    value: ValueId,
    call: u64,
    ret: u64,
    point: Option<u64>,
}

/// Clients issue operations one after another with random lengths; each
/// takes effect at a random point inside [call, ret] (an unknown one at any
/// point after its call, or never), and results come from executing `map`
/// in point order. SCAN results honour Redis's guarantees, with the freedom
/// it allows exercised at random.
fn simulate(rng: &mut Rng, shape: &Shape, map: &mut dyn Map) -> History {
    let mut clock = vec![0u64; shape.clients as usize];
    let mut seq = vec![0u32; shape.clients as usize];
    let mut planned = Vec::with_capacity(shape.ops);
    for _ in 0..shape.ops {
        let client = rng.below(u64::from(shape.clients)) as u32;
        let roll = rng.below(100);
        let kind = if roll < shape.scan_percent {
            Kind::Scan
        } else {
            [
                Kind::Get,
                Kind::Set,
                Kind::Del,
                Kind::Exists,
                Kind::Get,
                Kind::Set,
                Kind::Del,
            ][rng.below(7) as usize]
        };
        let call = clock[client as usize] + rng.below(3);
        let len = rng.below(shape.max_len + 1);
        let info = rng.percent(shape.info_percent);
        let ret = if info { INF } else { call + len };
        let point = match kind {
            Kind::Scan => None,
            _ if info => rng
                .percent(50)
                .then(|| call + rng.below(3 * shape.max_len + 1)),
            _ => Some(call + rng.below(len + 1)),
        };
        clock[client as usize] = call + len + 1;
        let value = ValueId::new(client, seq[client as usize]);
        seq[client as usize] += 1;
        let key = rng.below(shape.keys as u64) as usize;
        planned.push(Planned {
            client,
            key,
            kind,
            value,
            call,
            ret,
            point,
        });
    }
    // Execute at the points; remember each key's state changes for SCANs.
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].point.is_some())
        .collect();
    order.sort_by_key(|&i| (planned[i].point, i));
    let mut results = vec![None; planned.len()];
    let mut changes: Vec<Vec<(u64, bool)>> = vec![Vec::new(); shape.keys];
    for i in order {
        let p = &planned[i];
        let action = map.apply(p.key, p.kind, p.value);
        match p.kind {
            Kind::Set => changes[p.key].push((p.point.unwrap_or(0), true)),
            Kind::Del => changes[p.key].push((p.point.unwrap_or(0), false)),
            _ => {}
        }
        results[i] = Some(action);
    }
    let events = planned
        .iter()
        .zip(results)
        .map(|(p, result)| {
            let key = p.key as KeyId;
            let op = match (p.kind, result) {
                (Kind::Scan, _) => Op::Scan {
                    found: scan_result(rng, &changes, p).into(),
                },
                (Kind::Set, _) => Op::Set {
                    key,
                    value: p.value,
                },
                (_, Some(Action::Get(read))) => Op::Get { key, read },
                (_, Some(Action::Del(removed))) => Op::Del { key, removed },
                (_, Some(Action::Exists(present))) => Op::Exists { key, present },
                // Never took effect, so never returned: any output will do.
                (Kind::Get, _) => Op::Get {
                    key,
                    read: Some(ValueId::UNWRITTEN),
                },
                (Kind::Del, _) => Op::Del {
                    key,
                    removed: rng.percent(50),
                },
                _ => Op::Exists {
                    key,
                    present: rng.percent(50),
                },
            };
            ev(p.client, p.call, p.ret, op)
        })
        .collect();
    let keys = (0..shape.keys)
        .map(|k| format!("sim:{k}").into_bytes())
        .collect();
    History::new(keys, 0, false, events).expect("simulated history is valid")
}

/// Keys present from before the SCAN's call to after its return must be
/// returned, keys absent all that time must not be; the rest are a coin flip,
/// and some returned keys come twice.
fn scan_result(rng: &mut Rng, changes: &[Vec<(u64, bool)>], p: &Planned) -> Vec<KeyId> {
    let mut found = Vec::new();
    for (key, changes) in changes.iter().enumerate() {
        let before = changes.iter().rfind(|c| c.0 < p.call).is_some_and(|c| c.1);
        let during: Vec<bool> = changes
            .iter()
            .filter(|c| c.0 >= p.call && c.0 <= p.ret)
            .map(|c| c.1)
            .collect();
        let include = if before && during.iter().all(|&present| present) {
            true
        } else if !before && during.iter().all(|&present| !present) {
            false
        } else {
            rng.percent(50)
        };
        if include || (p.ret == INF && rng.percent(30)) {
            found.push(key as KeyId);
            if rng.percent(10) {
                found.push(key as KeyId);
            }
        }
    }
    found
}

fn events_sorted_by_call(history: &History) -> bool {
    history.events().windows(2).all(|w| w[0].call <= w[1].call)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// False positives are the worst bug: a correct map under any simulated
    /// concurrency, with unknown operations and SCANs, is never flagged.
    #[test]
    fn a_correct_map_under_concurrency_is_never_flagged(
        seed in any::<u64>(),
        ops in 1usize..80,
        keys in 1usize..4,
        clients in 1u32..8,
        max_len in 0u64..40,
    ) {
        let shape = Shape { ops, keys, clients, max_len, info_percent: 10, scan_percent: 8 };
        let history = simulate(&mut Rng(seed), &shape, &mut Correct(vec![None; keys]));
        prop_assert!(events_sorted_by_call(&history));
        let report = check(&history, &options());
        prop_assert_eq!(report.total_anomalies(), 0, "witnesses: {:#?}", report.witnesses);
        prop_assert_eq!(report.keys.illegal + report.keys.unknown, 0);
        prop_assert_ne!(report.verdict, Verdict::Fail);
    }

    /// With operations one after another there is exactly one order, so the
    /// stale-snapshot map is caught exactly when one of its answers differs
    /// from the correct map's.
    #[test]
    fn a_stale_snapshot_map_is_caught_whenever_it_answers_differently(
        seed in any::<u64>(),
        ops in 1usize..60,
        keys in 1usize..3,
        every in 2u64..6,
    ) {
        let shape = Shape { ops, keys, clients: 1, max_len: 5, info_percent: 0, scan_percent: 0 };
        let buggy = simulate(&mut Rng(seed), &shape, &mut Snapshot {
            primary: vec![None; keys],
            snapshot: vec![None; keys],
            every,
            applied: 0,
        });
        let correct = simulate(&mut Rng(seed), &shape, &mut Correct(vec![None; keys]));
        let differs = buggy.events() != correct.events();
        let report = check(&buggy, &options());
        prop_assert_eq!(report.total_anomalies() > 0, differs, "witnesses: {:#?}", report.witnesses);
    }
}

#[test]
fn a_stale_snapshot_map_under_concurrency_is_caught() {
    // Any run long enough to go stale across a DEL must be caught; check
    // that the simulation really produces such runs and that all are caught.
    let shape = Shape {
        ops: 400,
        keys: 2,
        clients: 4,
        max_len: 6,
        info_percent: 0,
        scan_percent: 0,
    };
    for seed in 0..20 {
        let mut map = Snapshot {
            primary: vec![None; 2],
            snapshot: vec![None; 2],
            every: 8,
            applied: 0,
        };
        let history = simulate(&mut Rng(seed), &shape, &mut map);
        let report = check(&history, &options());
        assert!(report.total_exposures() > 0);
        assert_eq!(report.verdict, Verdict::Fail, "seed {seed} not caught");
    }
}

// ---- Detectors and search against a brute-force oracle ----

/// The register model, written out again independently of the search's.
fn oracle_step(state: Option<ValueId>, op: &KeyOp) -> Option<Option<ValueId>> {
    if op.is_info() {
        // Any output is accepted; only the effect matters.
        return Some(match op.action {
            Action::Set(value) => Some(value),
            Action::Del(_) => None,
            Action::Get(_) | Action::Exists(_) => state,
        });
    }
    match op.action {
        Action::Set(value) => Some(Some(value)),
        Action::Get(read) => (read == state).then_some(state),
        Action::Del(removed) => (removed == state.is_some()).then_some(None),
        Action::Exists(present) => (present == state.is_some()).then_some(state),
    }
}

/// Whether some order of `ops` respects real time and the register model;
/// unknown operations may take effect anywhere after their call, or never.
fn brute_force(ops: &[KeyOp]) -> bool {
    fn go(ops: &[KeyOp], left: &mut Vec<usize>, state: Option<ValueId>) -> bool {
        if left.iter().all(|&i| ops[i].is_info()) {
            return true;
        }
        for pos in 0..left.len() {
            let i = left[pos];
            let blocked = left.iter().any(|&j| ops[j].ret < ops[i].call);
            if !blocked && let Some(after) = oracle_step(state, &ops[i]) {
                left.remove(pos);
                let ok = go(ops, left, after);
                left.insert(pos, i);
                if ok {
                    return true;
                }
            }
            if ops[i].is_info() {
                left.remove(pos);
                let ok = go(ops, left, state);
                left.insert(pos, i);
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(ops, &mut (0..ops.len()).collect(), None)
}

/// A small one-key history: simulated from the correct map, and half the
/// time with one operation's output changed, which may or may not break it.
fn small_key_history(rng: &mut Rng) -> Vec<KeyOp> {
    let shape = Shape {
        ops: 1 + rng.below(7) as usize,
        keys: 1,
        clients: 1 + rng.below(4) as u32,
        max_len: rng.below(12),
        info_percent: 15,
        scan_percent: 0,
    };
    let history = simulate(rng, &shape, &mut Correct(vec![None]));
    let by_key = super::split_by_key(&history);
    let mut ops = by_key.into_iter().next().unwrap_or_default();
    if !ops.is_empty() && rng.percent(50) {
        let i = rng.below(ops.len() as u64) as usize;
        let writes: Vec<ValueId> = ops
            .iter()
            .filter_map(|op| match op.action {
                Action::Set(value) => Some(value),
                _ => None,
            })
            .collect();
        ops[i].action = match ops[i].action {
            Action::Get(_) => Action::Get(match rng.below(writes.len() as u64 + 2) as usize {
                0 => None,
                1 => Some(ValueId::UNWRITTEN),
                n => Some(writes[n - 2]),
            }),
            Action::Del(removed) => Action::Del(!removed),
            Action::Exists(present) => Action::Exists(!present),
            Action::Set(value) => Action::Set(value),
        };
        if rng.percent(30) {
            // Or shift its timing instead, keeping call <= ret.
            let shift = rng.below(10);
            ops[i].call = ops[i].call.saturating_sub(shift);
        }
        ops.sort_by_key(|op| op.call);
    }
    ops
}

#[test]
fn detectors_fire_only_on_histories_the_brute_force_oracle_rejects_and_search_agrees_with_it() {
    let far = Instant::now() + Duration::from_secs(600);
    let mut rng = Rng(7);
    let (mut illegal, mut detected) = (0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for case in 0..20_000 {
        let ops = small_key_history(&mut rng);
        let legal = brute_force(&ops);
        let searched = match search::linearize(&ops, far) {
            Outcome::Linearizable => true,
            Outcome::Illegal { .. } => false,
            Outcome::OutOfBudget => panic!("case {case}: out of budget on {} ops", ops.len()),
        };
        assert_eq!(
            searched, legal,
            "case {case}: search disagrees with brute force on {ops:#?}"
        );
        let findings = detect(0, &ops);
        assert!(
            !legal || findings.is_empty(),
            "case {case}: {:?} fired on a legal history {ops:#?}",
            findings.first().map(|f| f.kind)
        );
        illegal += u32::from(!legal);
        detected += u32::from(!findings.is_empty());
        kinds.extend(findings.iter().map(|f| f.kind));
    }
    // The property is only worth something if both sides were exercised.
    assert!(illegal > 2_000, "only {illegal} illegal cases");
    assert!(detected > 1_000, "detectors fired only {detected} times");
    assert!(kinds.len() >= 5, "detectors exercised: {kinds:?}");
}

/// A storm-sized history from the correct map: 16 clients on 4 keys, so
/// hot keys see up to 16 overlapping operations, and some unknown
/// operations. Not a timing test: it proves a large storm checks clean.
/// Set MAPCHAOS_CHECK_OPS and MAPCHAOS_CHECK_KEYS to reshape it (e.g.
/// 1000000 ops under --release) and see the throughput it prints.
#[test]
fn a_large_correct_storm_checks_clean() {
    let from_env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let ops = from_env("MAPCHAOS_CHECK_OPS", 100_000);
    let keys = from_env("MAPCHAOS_CHECK_KEYS", 4);
    let shape = Shape {
        ops,
        keys,
        clients: 16,
        max_len: 40,
        info_percent: from_env("MAPCHAOS_CHECK_INFO", 1) as u64,
        scan_percent: 0,
    };
    let history = simulate(&mut Rng(42), &shape, &mut Correct(vec![None; keys]));
    let started = Instant::now();
    let report = check(
        &history,
        &CheckOptions {
            threads: 1,
            ..options()
        },
    );
    let elapsed = started.elapsed();
    println!(
        "checked {} ops in {:?} on one thread: {:.0} ops/s",
        report.ops_checked,
        elapsed,
        report.ops_checked as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        report.total_anomalies(),
        0,
        "witnesses: {:#?}",
        report.witnesses
    );
    assert_eq!(report.keys.unknown, 0);
    assert_eq!(report.verdict, Verdict::Pass);
}

// ---- What failed operations and several anomaly kinds do to the totals ----

#[test]
fn failed_operations_add_no_exposure_however_many_overlap() {
    // Eight clients, fifty operations each on one key, none answered (the
    // node answered MOVED, or the reply timed out).
    let mut events = Vec::new();
    for client in 1..=8u32 {
        for i in 0..50u32 {
            let call = u64::from(i * 10 + client);
            events.push(match i % 3 {
                0 => set(client, call, INF, 0, ValueId::new(client, i)),
                1 => del(client, call, INF, 0, false),
                _ => get(client, call, INF, 0, None),
            });
        }
    }
    let report = run(1, events.clone());
    assert_eq!(report.total_exposures(), 0);
    assert_eq!(report.max_overlap, 0);
    assert_eq!((report.ops_checked, report.ops_known), (400, 0));
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let reason = report.unproven_reason().unwrap();
    assert!(
        reason.contains("no operation has a known outcome"),
        "{reason}"
    );

    // Two answered operations that overlap: exactly their one pair counts,
    // and a failed SCAN and a failed DEL pair with no DEL or SCAN.
    events.push(set(9, 2_000, 2_010, 0, v(1)));
    events.push(get(10, 2_005, 2_008, 0, Some(v(1))));
    events.push(scan(11, 2_001, INF, &[]));
    events.push(del(12, 2_002, INF, 0, true));
    let report = run(1, events);
    assert_eq!(report.total_exposures(), 1);
    assert_eq!(report.exposures[&mapchaos_api::ExposureKind::SetGet], 1);
    assert_eq!(report.max_overlap, 2);
    assert_eq!(report.ops_known, 2);
}

#[test]
fn a_key_with_two_anomaly_kinds_counts_once_in_the_total() {
    let events = vec![
        // Key 0: a full SCAN misses it while present (scan_miss), and a read
        // after its acknowledged DEL sees the deleted value (stale_read).
        set(0, 0, 10, 0, v(1)),
        get(1, 2, 4, 0, None),
        scan(2, 20, 30, &[1]),
        del(3, 40, 50, 0, true),
        get(4, 60, 70, 0, Some(v(1))),
        // Key 1: present during the SCAN (it found it), then a stale read.
        set(5, 0, 10, 1, v(2)),
        get(6, 2, 4, 1, None),
        del(7, 40, 50, 1, true),
        get(8, 60, 70, 1, Some(v(2))),
    ];
    let report = run(2, events);
    let kinds: u64 = report.anomalies.values().sum();
    assert_eq!(report.anomalies[&AnomalyKind::StaleRead], 2, "{report:#?}");
    assert_eq!(report.anomalies[&AnomalyKind::ScanMiss], 1, "{report:#?}");
    assert!(kinds >= 3);
    assert_eq!(report.keys.illegal, 2);
    assert_eq!(
        report.total_anomalies(),
        2,
        "keys, not key × kind ({kinds})"
    );
    let text = crate::report::render_check(&report);
    assert!(text.contains("anomalies: 2 keys"), "{text}");
}
