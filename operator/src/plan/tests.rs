//! The planner's decisions, one behaviour per test, without a cluster.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use mapchaos_api::report::{CheckReport, KeyVerdictCounts};
use mapchaos_api::spec::{MapChaosSpec, PodSelector, SelectionMode};
use mapchaos_api::storm::{LatencySummary, MemorySnapshot, StopReason, StormReport};
use mapchaos_api::{AnomalyKind, ExposureKind};

use super::*;

const UID: &str = "5b0f6a2e-1111-4c8e-9c1e-2f9d3b7a0c44";

fn t0() -> Timestamp {
    "2026-05-01T12:00:00Z".parse().unwrap()
}

fn later(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn spec() -> MapChaosSpec {
    let mut spec: MapChaosSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.selector = PodSelector {
        label_selectors: BTreeMap::from([("app".into(), "cart".into())]),
        ..PodSelector::default()
    };
    spec
}

fn experiment(spec: MapChaosSpec) -> MapChaos {
    let mut experiment = MapChaos::new("storm", spec);
    experiment.metadata = ObjectMeta {
        name: Some("storm".into()),
        namespace: Some("shop".into()),
        uid: Some(UID.into()),
        generation: Some(1),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    experiment
}

fn pod(name: &str) -> CandidatePod {
    CandidatePod {
        name: name.into(),
        namespace: "shop".into(),
        uid: format!("uid-{name}"),
        labels: BTreeMap::from([("app".into(), "cart".into())]),
        phase: "Running".into(),
        ready: true,
        has_sidecar: true,
        pod_ip: Some(format!("10.0.0.{}", name.len())),
        ..CandidatePod::default()
    }
}

fn pods(n: usize) -> Vec<CandidatePod> {
    (0..n).map(|i| pod(&format!("cart-{i}"))).collect()
}

/// One reconcile at `now`.
fn run(
    experiment: &MapChaos,
    pods: &[CandidatePod],
    storms: &BTreeMap<String, StormObservation>,
    now: Timestamp,
) -> Plan {
    plan(&Observation {
        experiment,
        pods,
        storms,
        now,
        kill_switch: false,
        guard: &RunGuard::default(),
        probes: &Default::default(),
    })
    .unwrap()
}

/// The resource after the act step wrote the plan's status.
fn applied(mut experiment: MapChaos, plan: &Plan) -> MapChaos {
    experiment.status = Some(plan.status.clone());
    experiment
}

fn starts(plan: &Plan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStorm { endpoint, id, .. } => Some((endpoint.pod.clone(), id.clone())),
            _ => None,
        })
        .collect()
}

fn count(plan: &Plan, pick: fn(&Action) -> bool) -> usize {
    plan.actions.iter().filter(|a| pick(a)).count()
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events().map(|e| e.reason).collect()
}

fn condition<'a>(status: &'a MapChaosStatus, kind: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {:?}", status.conditions))
}

fn storm(id: &str, phase: StormPhase, report: Option<StormReport>) -> StormObservation {
    StormObservation::Found(Box::new(StormStatus {
        id: id.into(),
        phase,
        message: String::new(),
        ops: 500,
        errors: 0,
        elapsed_millis: 1000,
        report,
    }))
}

fn report(anomalies: u64, p99_micros: u64) -> StormReport {
    let exposures = BTreeMap::from([(ExposureKind::DelDel, 40), (ExposureKind::DelGet, 2)]);
    let anomaly_counts = BTreeMap::from([(AnomalyKind::StaleRead, anomalies)]);
    let keys = KeyVerdictCounts {
        ok: 10,
        illegal: anomalies,
        unknown: 0,
    };
    let verdict = CheckReport::verdict_from(&exposures, &anomaly_counts, &keys, 1000);
    StormReport {
        seed: 1,
        target: "in-process:sharded".into(),
        workers: 4,
        elapsed_millis: 60_000,
        stop_reason: StopReason::DurationElapsed,
        ops: 1000,
        errors: 1,
        ops_per_second: 16.6,
        by_op: BTreeMap::new(),
        latency: LatencySummary {
            count: 1000,
            p50_micros: 100,
            p90_micros: 200,
            p99_micros,
            p999_micros: p99_micros * 2,
            max_micros: p99_micros * 3,
        },
        client_latency: None,
        memory_before: MemorySnapshot::default(),
        memory_after: MemorySnapshot::default(),
        check: Some(CheckReport {
            exposures,
            max_overlap: 3,
            anomalies: anomaly_counts,
            witnesses: vec![],
            keys,
            ops_checked: 1000,
            ops_known: 1000,
            truncated: false,
            scan_duplicates: 0,
            verdict,
        }),
        series: None,
        restored_keys: 0,
        restore: None,
        deletes: None,
        keys_excluded: 0,
        verdict,
        verdict_reason: "the storm raced, and every key's history is linearizable.".into(),
    }
}

/// A resource whose run 1 has started on `n` of `pool` pods (mode fixed).
fn started(n: usize, pool: &[CandidatePod]) -> (MapChaos, Plan) {
    let mut spec = spec();
    spec.mode = SelectionMode::Fixed;
    spec.value = Some(n.to_string());
    let experiment = experiment(spec);
    let plan = run(&experiment, pool, &BTreeMap::new(), t0());
    (applied(experiment, &plan), plan)
}

fn ids(plan: &Plan) -> Vec<String> {
    plan.status
        .targets
        .iter()
        .map(|t| t.storm_id.clone())
        .collect()
}

#[test]
fn nothing_is_injected_before_the_finalizer_is_on() {
    let mut experiment = experiment(spec());
    experiment.metadata.finalizers = None;
    let plan = run(&experiment, &pods(3), &BTreeMap::new(), t0());
    assert_eq!(plan.actions, [Action::AddFinalizer]);
    assert_eq!(plan.status, MapChaosStatus::default());
}

#[test]
fn an_invalid_spec_is_reported_once_and_never_retried_hot() {
    let mut spec = spec();
    spec.storm.workers = 0;
    let experiment = experiment(spec);
    let plan = run(&experiment, &pods(3), &BTreeMap::new(), t0());
    assert_eq!(plan.status.phase, ExperimentPhase::Failed);
    let valid = condition(&plan.status, condition::VALID);
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        valid.message.contains("spec.storm.workers"),
        "{}",
        valid.message
    );
    assert_eq!(reasons(&plan), [reason::INVALID_SPEC]);
    assert_eq!(plan.events().next().unwrap().kind, EventKind::Warning);
    assert!(starts(&plan).is_empty());
    assert_eq!(plan.requeue, None, "waits for a spec change");

    let again = run(
        &applied(experiment, &plan),
        &pods(3),
        &BTreeMap::new(),
        later(60),
    );
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert_eq!(
        again.status, plan.status,
        "nothing changed, nothing to patch"
    );
}

#[test]
fn a_fixed_spec_says_so_once() {
    let mut spec = spec();
    spec.storm.workers = 0;
    let broken = experiment(spec);
    let plan = run(&broken, &pods(3), &BTreeMap::new(), t0());
    let mut fixed = applied(broken, &plan);
    fixed.spec.storm.workers = 8;
    fixed.metadata.generation = Some(2);
    let plan = run(&fixed, &pods(3), &BTreeMap::new(), later(5));
    assert_eq!(reasons(&plan), [reason::SPEC_VALID, reason::RUN_STARTED]);
    assert_eq!(condition(&plan.status, condition::VALID).status, "True");
    assert_eq!(plan.status.observed_generation, Some(2));
}

#[test]
fn a_run_starts_one_storm_per_chosen_eligible_pod() {
    let mut pool = pods(5);
    pool[0].ready = false;
    pool[1].has_sidecar = false;
    let (_, plan) = started(2, &pool);
    let started = starts(&plan);
    assert_eq!(started.len(), 2);
    for (pod, id) in &started {
        assert!(
            !["cart-0", "cart-1"].contains(&pod.as_str()),
            "{pod} is not eligible"
        );
        assert!(id.starts_with(&format!("{UID}-1-")), "{id}");
    }
    assert_eq!(plan.status.phase, ExperimentPhase::Running);
    assert_eq!(plan.status.run, 1);
    assert_eq!(plan.status.seed, Some(crate::choice::seed_from_uid(UID)));
    assert_eq!(plan.status.started_at, Some(Time(t0())));
    assert!(
        plan.status
            .targets
            .iter()
            .all(|t| t.phase == TargetPhase::Pending)
    );
    assert_eq!(
        plan.requeue,
        Some(PENDING_POLL),
        "a storm just sent is looked at again soon"
    );
    assert_eq!(reasons(&plan), [reason::RUN_STARTED]);
    let selected = condition(&plan.status, condition::SELECTED);
    assert_eq!(selected.status, "True");
    assert_eq!(
        selected.message,
        "2 of 3 eligible pods (5 matching), mode fixed 2"
    );
    assert_eq!(
        condition(&plan.status, condition::ALL_INJECTED).status,
        "False"
    );
    let request = plan.actions.iter().find_map(|a| match a {
        Action::StartStorm { request, .. } => Some(request),
        _ => None,
    });
    let request = request.unwrap();
    assert_eq!(request.seed, plan.status.seed.unwrap());
    assert_eq!(request.lease, DEFAULT_LEASE);
    assert_eq!(request.duration, GoDuration::from_secs(60));
}

#[test]
fn a_retried_reconcile_resends_the_same_storm_ids() {
    let pool = pods(5);
    let (experiment, first) = started(3, &pool);
    // The PUTs' fate is unknown: the sidecars have not confirmed anything.
    let not_found = ids(&first)
        .into_iter()
        .map(|id| (id, StormObservation::NotFound))
        .collect();
    let retry = run(&experiment, &pool, &not_found, later(5));
    assert_eq!(starts(&retry), starts(&first));
    assert_eq!(ids(&retry), ids(&first));
    assert!(retry.events().next().is_none(), "{:?}", reasons(&retry));
    // A restarted operator starting over from the stored status does the same.
    let restarted = run(&experiment, &pool, &BTreeMap::new(), later(6));
    assert_eq!(starts(&restarted), starts(&first));
}

#[test]
fn the_choice_follows_the_seed_not_the_resource() {
    let pool = pods(8);
    let mut spec = spec();
    spec.mode = SelectionMode::Fixed;
    spec.value = Some("3".into());
    spec.seed = Some(1234);
    let one = experiment(spec.clone());
    let mut other = experiment(spec);
    other.metadata.uid = Some("another-uid".into());
    let mut shuffled = pool.clone();
    shuffled.reverse();
    let a = run(&one, &pool, &BTreeMap::new(), t0());
    let b = run(&other, &shuffled, &BTreeMap::new(), t0());
    let chosen = |plan: &Plan| {
        let mut pods: Vec<String> = plan.status.targets.iter().map(|t| t.pod.clone()).collect();
        pods.sort();
        pods
    };
    assert_eq!(chosen(&a), chosen(&b));
    assert_eq!(a.status.seed, Some(1234));
    assert_ne!(ids(&a), ids(&b), "storm ids belong to the resource");
}

#[test]
fn targets_are_fixed_for_the_run_when_pods_come_and_go() {
    let pool = pods(4);
    let (experiment, first) = started(2, &pool);
    let mut more = pods(10);
    more.retain(|p| {
        first.status.targets.iter().any(|t| t.pod == p.name) || p.name.as_str() > "cart-5"
    });
    let next = run(&experiment, &more, &BTreeMap::new(), later(5));
    assert_eq!(ids(&next), ids(&first));
}

#[test]
fn a_confirmed_storm_is_running_and_its_lease_renewed() {
    let pool = pods(3);
    let (experiment, first) = started(1, &pool);
    let id = ids(&first).remove(0);
    let storms = BTreeMap::from([(id.clone(), storm(&id, StormPhase::Running, None))]);
    let plan = run(&experiment, &pool, &storms, later(10));
    let target = &plan.status.targets[0];
    assert_eq!(target.phase, TargetPhase::Running);
    assert_eq!(target.storm_phase, Some(StormPhase::Running));
    assert_eq!(target.ops, 500);
    assert_eq!(target.last_seen, Some(Time(later(10))));
    assert_eq!(reasons(&plan), [reason::STORM_STARTED]);
    assert_eq!(count(&plan, |a| matches!(a, Action::RenewLease { .. })), 1);
    assert!(starts(&plan).is_empty());
    assert_eq!(
        condition(&plan.status, condition::ALL_INJECTED).status,
        "True"
    );
    assert_eq!(
        condition(&plan.status, condition::ALL_RECOVERED).reason,
        "StormsRunning"
    );
    assert_eq!(plan.status.summary.as_ref().unwrap().injected, 1);
    assert_eq!(plan.requeue, Some(RENEW_INTERVAL));
}

#[test]
fn a_final_phase_without_its_report_is_not_final_yet() {
    let pool = pods(1);
    let (experiment, first) = started(1, &pool);
    let id = ids(&first).remove(0);
    let early = BTreeMap::from([(id.clone(), storm(&id, StormPhase::Completed, None))]);
    let plan = run(&experiment, &pool, &early, later(61));
    assert_eq!(plan.status.targets[0].phase, TargetPhase::Running);
    assert_eq!(
        plan.status.targets[0].storm_phase,
        Some(StormPhase::Completed)
    );
    assert_eq!(plan.status.finished_at, None);
    let mut failed = storm(&id, StormPhase::Failed, None);
    if let StormObservation::Found(status) = &mut failed {
        status.message = "cannot reach the map".into();
    }
    let plan = run(
        &experiment,
        &pool,
        &BTreeMap::from([(id, failed)]),
        later(62),
    );
    assert_eq!(plan.status.targets[0].phase, TargetPhase::Failed);
    assert_eq!(plan.status.targets[0].message, "cannot reach the map");
}

#[test]
fn a_failed_run_names_its_first_anomaly_in_status_and_event() {
    let pool = pods(3);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    let mut broken = report(1, 900);
    let long_key = "k\u{e9}".repeat(400);
    broken.check.as_mut().unwrap().witnesses = vec![mapchaos_api::Witness {
        kind: AnomalyKind::StaleRead,
        key: long_key.clone(),
        operations: Vec::new(),
        longest_prefix: None,
        explanation: "The GET returning c1#1 saw the key present.".into(),
        timeline: None,
    }];
    let storms = BTreeMap::from([
        (
            a.clone(),
            storm(&a, StormPhase::Completed, Some(report(0, 900))),
        ),
        (b.clone(), storm(&b, StormPhase::Completed, Some(broken))),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    let target = |id: &str| {
        plan.status
            .targets
            .iter()
            .find(|t| t.storm_id == id)
            .unwrap()
    };
    assert_eq!(target(&a).first_anomaly, None);
    let line = target(&b).first_anomaly.clone().expect("the first anomaly");
    assert!(line.starts_with("stale_read on key \"k\u{e9}k"), "{line}");
    // A long key is cut on a character boundary, within the bound.
    assert!(
        line.len() <= STATUS_LINE_BYTES && line.ends_with('…'),
        "{}",
        line.len()
    );
    let finished = plan
        .events()
        .find(|e| e.reason == reason::RUN_FINISHED)
        .unwrap();
    assert!(
        finished.message.contains("first anomaly, on pod") && finished.message.contains(&line),
        "{}",
        finished.message
    );

    // A short witness is whole.
    assert_eq!(
        first_anomaly(&mapchaos_api::Witness {
            kind: AnomalyKind::LostDelete,
            key: "k".into(),
            operations: Vec::new(),
            longest_prefix: None,
            explanation: "The DEL returned 1.".into(),
            timeline: None,
        }),
        "lost_delete on key \"k\": The DEL returned 1."
    );
}

#[test]
fn an_inconclusive_run_says_why_in_status_and_event() {
    let pool = pods(3);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    let passed = report(0, 900);
    let mut unproven = report(0, 900);
    unproven.verdict = Verdict::Inconclusive;
    unproven.verdict_reason =
        "no key was checked, so nothing was proven.\nexcluded 16 keys the application wrote".into();
    let storms = BTreeMap::from([
        (a.clone(), storm(&a, StormPhase::Completed, Some(passed))),
        (b.clone(), storm(&b, StormPhase::Completed, Some(unproven))),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    let target = |id: &str| {
        plan.status
            .targets
            .iter()
            .find(|t| t.storm_id == id)
            .unwrap()
    };
    assert_eq!(target(&b).verdict, Some(Verdict::Inconclusive));
    let why = target(&b).verdict_reason.clone().expect("the reason");
    // One line: a status field and an Event message stay readable.
    assert_eq!(
        why,
        "no key was checked, so nothing was proven. excluded 16 keys the application wrote"
    );
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Inconclusive)
    );
    let finished = plan
        .events()
        .find(|e| e.reason == reason::RUN_FINISHED)
        .unwrap();
    let pod = &target(&b).pod;
    assert!(
        finished.message.contains(&format!(
            "inconclusive on pod {}/{pod}: {why}",
            target(&b).namespace
        )),
        "{}",
        finished.message
    );
    // A pass's reason is kept too, but the Event of a passing run adds none.
    assert!(target(&a).verdict_reason.is_some());
    let storms = BTreeMap::from([
        (
            a.clone(),
            storm(&a, StormPhase::Completed, Some(report(0, 900))),
        ),
        (
            b.clone(),
            storm(&b, StormPhase::Completed, Some(report(0, 900))),
        ),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    let finished = plan
        .events()
        .find(|e| e.reason == reason::RUN_FINISHED)
        .unwrap();
    assert!(
        !finished.message.contains("inconclusive"),
        "{}",
        finished.message
    );
}

#[test]
fn a_long_reason_is_cut_on_a_character_boundary() {
    let line = one_line(&"\u{e9}".repeat(600), STATUS_LINE_BYTES);
    assert!(
        line.len() <= STATUS_LINE_BYTES && line.ends_with('…'),
        "{}",
        line.len()
    );
    assert_eq!(one_line("short", STATUS_LINE_BYTES), "short");
}

#[test]
fn a_finished_run_is_summarised_recorded_and_left_alone() {
    let pool = pods(3);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    let storms = BTreeMap::from([
        (
            a.clone(),
            storm(&a, StormPhase::Completed, Some(report(0, 900))),
        ),
        (
            b.clone(),
            storm(&b, StormPhase::Completed, Some(report(3, 1500))),
        ),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    assert_eq!(plan.status.phase, ExperimentPhase::Completed);
    assert_eq!(plan.status.finished_at, Some(Time(later(70))));
    let summary = plan.status.summary.clone().unwrap();
    assert_eq!(summary.targets, 2);
    assert_eq!(summary.finished, 2);
    assert_eq!(summary.ops, 2000);
    assert_eq!(summary.total_exposures, 84);
    assert_eq!(summary.exposures["del_del"], 80);
    assert_eq!(summary.total_anomalies, 3);
    assert_eq!(
        summary.anomalies,
        BTreeMap::from([("stale_read".to_owned(), 3)])
    );
    assert_eq!(summary.latency.unwrap().p99, 1500, "the worst target's");
    assert_eq!(summary.p99.as_deref(), Some("1500us"));
    assert_eq!(summary.verdict, Some(Verdict::Fail));
    assert_eq!(plan.status.runs.len(), 1);
    assert_eq!(plan.status.runs[0].anomalies, 3);
    assert_eq!(plan.status.runs[0].phase, ExperimentPhase::Completed);
    let finished = plan
        .events()
        .find(|e| e.reason == reason::RUN_FINISHED)
        .unwrap();
    assert_eq!(
        finished.kind,
        EventKind::Warning,
        "anomalies make it a warning"
    );
    assert_eq!(
        condition(&plan.status, condition::ALL_RECOVERED).status,
        "True"
    );
    assert_eq!(plan.requeue, None);
    assert_eq!(count(&plan, |a| matches!(a, Action::RenewLease { .. })), 0);

    let after = run(
        &applied(experiment, &plan),
        &pool,
        &BTreeMap::new(),
        later(500),
    );
    assert!(after.actions.is_empty(), "{:?}", after.actions);
    assert_eq!(after.status, plan.status);
}

/// `report` as a storm an abort condition stopped; `sidecar_verdict` is
/// what the sidecar said (an older one judged only its check: Pass).
fn aborted(mut report: StormReport, sidecar_verdict: Verdict) -> StormReport {
    report.stop_reason =
        StopReason::AbortCondition("error rate 59.00% is above abort.maxErrorRate 5.00%".into());
    report.verdict = sidecar_verdict;
    report
}

#[test]
fn a_storm_stopped_by_an_abort_condition_never_shows_pass() {
    let pool = pods(3);
    for sidecar_verdict in [Verdict::Pass, Verdict::Aborted, Verdict::Inconclusive] {
        let (experiment, first) = started(2, &pool);
        let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
        let storms = BTreeMap::from([
            (
                a.clone(),
                storm(&a, StormPhase::Completed, Some(report(0, 900))),
            ),
            (
                b.clone(),
                storm(
                    &b,
                    StormPhase::Aborted,
                    Some(aborted(report(0, 900), sidecar_verdict)),
                ),
            ),
        ]);
        let plan = run(&experiment, &pool, &storms, later(70));
        let verdicts: Vec<Option<Verdict>> =
            plan.status.targets.iter().map(|t| t.verdict).collect();
        assert!(verdicts.contains(&Some(Verdict::Pass)), "{verdicts:?}");
        assert!(verdicts.contains(&Some(Verdict::Aborted)), "{verdicts:?}");
        let summary = plan.status.summary.clone().unwrap();
        assert_eq!(
            summary.verdict,
            Some(Verdict::Aborted),
            "{sidecar_verdict:?}"
        );
        assert_eq!(plan.status.phase, ExperimentPhase::Aborted);
        assert_eq!(plan.status.runs[0].verdict, Some(Verdict::Aborted));
        let finished = plan
            .events()
            .find(|e| e.reason == reason::RUN_FINISHED)
            .unwrap();
        assert_eq!(finished.kind, EventKind::Warning);
        assert!(
            finished.message.contains("verdict Aborted"),
            "{}",
            finished.message
        );
    }
    // Anomalies found before the abort still fail the run.
    let (experiment, first) = started(1, &pool);
    let id = ids(&first).remove(0);
    let storms = BTreeMap::from([(
        id.clone(),
        storm(
            &id,
            StormPhase::Aborted,
            Some(aborted(report(2, 900), Verdict::Fail)),
        ),
    )]);
    let plan = run(&experiment, &pool, &storms, later(70));
    assert_eq!(plan.status.targets[0].verdict, Some(Verdict::Fail));
    assert_eq!(plan.status.summary.unwrap().verdict, Some(Verdict::Fail));
}

#[test]
fn anomaly_totals_count_keys_and_kinds_stay_per_kind() {
    let pool = pods(3);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    // Target a: 2 keys, one with a stale read and a lost delete, the other
    // with a stale read; target b: 1 key with all three kinds below.
    let mut two_keys = report(2, 900);
    let check = two_keys.check.as_mut().unwrap();
    check.anomalies.insert(AnomalyKind::LostDelete, 1);
    let mut one_key = report(1, 900);
    let check = one_key.check.as_mut().unwrap();
    check.anomalies.insert(AnomalyKind::LostDelete, 1);
    check.anomalies.insert(AnomalyKind::Resurrection, 1);
    let storms = BTreeMap::from([
        (a.clone(), storm(&a, StormPhase::Completed, Some(two_keys))),
        (b.clone(), storm(&b, StormPhase::Completed, Some(one_key))),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    let target = |id: &str| {
        plan.status
            .targets
            .iter()
            .find(|t| t.storm_id == id)
            .unwrap()
    };
    assert_eq!(target(&a).anomalies, 2);
    assert_eq!(target(&a).anomaly_kinds["lost_delete"], 1);
    assert_eq!(target(&a).anomaly_kinds["stale_read"], 2);
    assert_eq!(target(&b).anomalies, 1);
    assert_eq!(target(&b).anomaly_kinds.len(), 3);
    let summary = plan.status.summary.clone().unwrap();
    assert_eq!(
        summary.total_anomalies, 3,
        "keys, not key x kind (which is 6)"
    );
    assert_eq!(summary.anomalies["stale_read"], 3);
    assert_eq!(summary.anomalies["lost_delete"], 2);
    assert_eq!(summary.anomalies["resurrection"], 1);
    assert_eq!(plan.status.runs[0].anomalies, 3);
    let completed: Vec<String> = plan
        .events()
        .filter(|e| e.reason == reason::STORM_COMPLETED)
        .map(|e| e.message.clone())
        .collect();
    assert!(
        completed
            .iter()
            .any(|m| m.contains("1 keys with anomalies")),
        "{completed:?}"
    );
}

#[test]
fn each_targets_delete_journal_counts_are_in_its_status_and_summed_in_the_summary() {
    use mapchaos_api::audit::{DeleteJournalSummary, DeletedKeyOutcome};
    let pool = pods(3);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    let journal = |restored, app_wrote| {
        let mut report = report(0, 900);
        report.deletes = Some(DeleteJournalSummary {
            deleted: restored + app_wrote,
            outcomes: BTreeMap::from([
                (DeletedKeyOutcome::Restored, restored),
                (DeletedKeyOutcome::AppWrote, app_wrote),
            ]),
        });
        report
    };
    let storms = BTreeMap::from([
        (
            a.clone(),
            storm(&a, StormPhase::Completed, Some(journal(5, 1))),
        ),
        (
            b.clone(),
            storm(&b, StormPhase::Completed, Some(journal(7, 2))),
        ),
    ]);
    let plan = run(&experiment, &pool, &storms, later(70));
    let by_storm: BTreeMap<&str, &DeleteJournalSummary> = plan
        .status
        .targets
        .iter()
        .map(|t| (t.storm_id.as_str(), t.deletes.as_ref().expect("a journal")))
        .collect();
    assert_eq!(by_storm[a.as_str()].deleted, 6);
    assert_eq!(by_storm[b.as_str()].count(DeletedKeyOutcome::AppWrote), 2);
    let total = plan.status.summary.unwrap().deletes.expect("summed");
    assert_eq!(total.deleted, 15);
    assert_eq!(total.count(DeletedKeyOutcome::Restored), 12);
    assert_eq!(total.count(DeletedKeyOutcome::AppWrote), 3);
}

#[test]
fn a_vanished_pod_is_marked_and_the_others_carry_on() {
    let pool = pods(3);
    let (experiment, first) = started(3, &pool);
    let storms: BTreeMap<String, StormObservation> = ids(&first)
        .iter()
        .map(|id| (id.clone(), storm(id, StormPhase::Running, None)))
        .collect();
    let gone = first.status.targets[0].pod.clone();
    let mut remaining = pool.clone();
    remaining.retain(|p| p.name != gone);
    let plan = run(&experiment, &remaining, &storms, later(10));
    let lost = plan.status.targets.iter().find(|t| t.pod == gone).unwrap();
    assert_eq!(lost.phase, TargetPhase::PodGone);
    assert_eq!(lost.message, "the pod was deleted");
    assert!(reasons(&plan).contains(&reason::TARGET_LOST));
    assert_eq!(count(&plan, |a| matches!(a, Action::RenewLease { .. })), 2);
    assert_eq!(plan.status.phase, ExperimentPhase::Running);
}

#[test]
fn a_pod_being_deleted_is_lost_unless_its_storm_already_ran_to_its_end() {
    let pool = pods(3);
    let (experiment, first) = started(3, &pool);
    let [a, b, c]: [String; 3] = ids(&first).try_into().unwrap();
    let mut stopped = report(0, 100);
    stopped.stop_reason = StopReason::Stopped;
    // a: its sidecar stopped the storm on SIGTERM; b: finished before the
    // delete; c: still running elsewhere.
    let storms = BTreeMap::from([
        (a.clone(), storm(&a, StormPhase::Aborted, Some(stopped))),
        (
            b.clone(),
            storm(&b, StormPhase::Completed, Some(report(0, 100))),
        ),
        (c.clone(), storm(&c, StormPhase::Running, None)),
    ]);
    let mut terminating = pool.clone();
    terminating[0].terminating = true;
    terminating[1].terminating = true;
    let plan = run(&experiment, &terminating, &storms, later(10));
    let phase_of = |id: &str| {
        plan.status
            .targets
            .iter()
            .find(|t| t.storm_id == id)
            .unwrap()
            .phase
    };
    assert_eq!(
        phase_of(&a),
        TargetPhase::PodGone,
        "not Aborted: the run was not stopped"
    );
    assert_eq!(phase_of(&b), TargetPhase::Completed);
    assert_eq!(phase_of(&c), TargetPhase::Running);
    assert!(reasons(&plan).contains(&reason::TARGET_LOST));
    // When c completes, the run is Completed, not Aborted.
    let storms = BTreeMap::from([(
        c.clone(),
        storm(&c, StormPhase::Completed, Some(report(0, 100))),
    )]);
    let done = run(
        &applied(experiment, &plan),
        &terminating,
        &storms,
        later(20),
    );
    assert_eq!(done.status.phase, ExperimentPhase::Completed);
}

/// One pod's storm running, then `spec.paused` set and lifted before the
/// next look: (the resource as the pause left it, unpaused; the pool; the
/// storm id).
fn paused_then_lifted() -> (MapChaos, Vec<CandidatePod>, String) {
    let pool = pods(1);
    let (mut experiment, first) = started(1, &pool);
    let [a]: [String; 1] = ids(&first).try_into().unwrap();
    experiment.spec.paused = true;
    let running = BTreeMap::from([(a.clone(), storm(&a, StormPhase::Running, None))]);
    let pausing = run(&experiment, &pool, &running, later(5));
    assert_eq!(
        count(&pausing, |a| matches!(a, Action::StopStorm { .. })),
        1
    );
    assert!(pausing.status.interrupted);
    let mut experiment = applied(experiment, &pausing);
    experiment.spec.paused = false;
    (experiment, pool, a)
}

#[test]
fn a_pause_lifted_before_the_stop_is_seen_still_runs_again() {
    // The next look finds the storm Aborted, unpaused.
    let (experiment, pool, a) = paused_then_lifted();
    let mut stopped = report(0, 100);
    stopped.stop_reason = StopReason::Stopped;
    let storms = BTreeMap::from([(a.clone(), storm(&a, StormPhase::Aborted, Some(stopped)))]);
    let resumed = run(&experiment, &pool, &storms, later(7));
    assert_eq!(resumed.status.run, 2);
    assert_eq!(starts(&resumed).len(), 1);
    assert_eq!(resumed.status.runs[0].phase, ExperimentPhase::Aborted);
    assert!(!resumed.status.interrupted);
}

#[test]
fn a_pause_that_came_too_late_to_stop_anything_does_not_rerun() {
    let (experiment, pool, a) = paused_then_lifted();
    // The storm ran to its end before the stop reached it.
    let storms = BTreeMap::from([(
        a.clone(),
        storm(&a, StormPhase::Completed, Some(report(0, 100))),
    )]);
    let plan = run(&experiment, &pool, &storms, later(7));
    assert_eq!(plan.status.run, 1);
    assert!(starts(&plan).is_empty());
    assert!(!plan.status.interrupted);
    assert_eq!(plan.status.phase, ExperimentPhase::Completed);
}

#[test]
fn a_replaced_pod_of_the_same_name_is_not_the_target() {
    let pool = pods(1);
    let (experiment, _) = started(1, &pool);
    let mut replaced = pool.clone();
    replaced[0].uid = "a-new-pod".into();
    let plan = run(&experiment, &replaced, &BTreeMap::new(), later(10));
    assert_eq!(plan.status.targets[0].phase, TargetPhase::PodGone);
    assert!(plan.status.targets[0].message.contains("replaced"));
    assert_eq!(
        plan.status.phase,
        ExperimentPhase::Failed,
        "no target completed"
    );
    assert_eq!(
        condition(&plan.status, condition::ALL_INJECTED).reason,
        "NotInjected"
    );
}

#[test]
fn a_silent_sidecar_is_tolerated_for_a_lease_then_marked_unreachable() {
    let pool = pods(2);
    let (experiment, first) = started(2, &pool);
    let all_running: BTreeMap<String, StormObservation> = ids(&first)
        .iter()
        .map(|id| (id.clone(), storm(id, StormPhase::Running, None)))
        .collect();
    let plan = run(&experiment, &pool, &all_running, later(10));
    let experiment = applied(experiment, &plan);
    let silent_id = ids(&first)[0].clone();
    let mut storms = all_running.clone();
    storms.insert(
        silent_id.clone(),
        StormObservation::Unreachable("connection refused".into()),
    );

    let blip = run(&experiment, &pool, &storms, later(20));
    let target = &blip.status.targets[0];
    assert_eq!(target.phase, TargetPhase::Running);
    assert!(
        target.message.contains("connection refused"),
        "{}",
        target.message
    );
    assert_eq!(
        count(&blip, |a| matches!(a, Action::RenewLease { .. })),
        2,
        "keeps trying"
    );

    let experiment = applied(experiment, &blip);
    let lost = run(&experiment, &pool, &storms, later(41));
    assert_eq!(lost.status.targets[0].phase, TargetPhase::Unreachable);
    assert_eq!(lost.status.targets[1].phase, TargetPhase::Running);
    assert!(reasons(&lost).contains(&reason::SIDECAR_UNREACHABLE));
    assert_eq!(count(&lost, |a| matches!(a, Action::RenewLease { .. })), 1);
}

#[test]
fn a_storm_the_sidecar_forgot_fails_and_one_never_started_fails_after_the_lease() {
    let pool = pods(2);
    let (experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    let storms = BTreeMap::from([
        (a.clone(), storm(&a, StormPhase::Running, None)),
        (b.clone(), StormObservation::NotFound),
    ]);
    let plan = run(&experiment, &pool, &storms, later(5));
    assert_eq!(starts(&plan).len(), 1, "b is retried");
    let experiment = applied(experiment, &plan);
    let storms = BTreeMap::from([
        (a.clone(), StormObservation::NotFound),
        (b.clone(), StormObservation::NotFound),
    ]);
    let plan = run(&experiment, &pool, &storms, later(31));
    assert_eq!(plan.status.targets[0].phase, TargetPhase::Failed);
    assert!(plan.status.targets[0].message.contains("no longer knows"));
    assert_eq!(plan.status.targets[1].phase, TargetPhase::Failed);
    assert!(
        plan.status.targets[1]
            .message
            .contains("did not start the storm")
    );
    assert_eq!(plan.status.phase, ExperimentPhase::Failed);
    assert!(starts(&plan).is_empty());
}

#[test]
fn pausing_stops_running_storms_and_starts_none() {
    let pool = pods(2);
    let (mut experiment, first) = started(2, &pool);
    let [a, b]: [String; 2] = ids(&first).try_into().unwrap();
    experiment.spec.paused = true;
    let storms = BTreeMap::from([
        (a.clone(), storm(&a, StormPhase::Running, None)),
        (b.clone(), StormObservation::NotFound),
    ]);
    let plan = run(&experiment, &pool, &storms, later(5));
    assert_eq!(plan.status.phase, ExperimentPhase::Paused);
    let paused = condition(&plan.status, condition::PAUSED);
    assert_eq!(
        (paused.status.as_str(), paused.reason.as_str()),
        ("True", "SpecPaused")
    );
    let stops: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StopStorm { .. }))
        .collect();
    assert_eq!(stops.len(), 1);
    assert!(matches!(stops[0], Action::StopStorm { id, .. } if *id == a));
    assert_eq!(plan.status.targets[1].phase, TargetPhase::Aborted);
    assert!(starts(&plan).is_empty());
    assert!(reasons(&plan).contains(&reason::PAUSED));
    // Once the sidecar reports the stop, run 1 ends Aborted and the
    // experiment waits, paused, to run again.
    let experiment = applied(experiment, &plan);
    let mut stopped = report(0, 100);
    stopped.stop_reason = StopReason::Stopped;
    let storms = BTreeMap::from([(a.clone(), storm(&a, StormPhase::Aborted, Some(stopped)))]);
    let plan = run(&experiment, &pool, &storms, later(10));
    assert_eq!(plan.status.phase, ExperimentPhase::Paused);
    assert!(plan.status.interrupted);
    assert_eq!(plan.status.runs.len(), 1);
    assert_eq!(plan.status.runs[0].phase, ExperimentPhase::Aborted);
    assert!(plan.actions.iter().all(|a| matches!(a, Action::Event(_))));
    let still = run(
        &applied(experiment.clone(), &plan),
        &pool,
        &BTreeMap::new(),
        later(20),
    );
    assert!(still.actions.is_empty(), "{:?}", still.actions);

    // Lifting the pause starts the stopped run again, as run 2 with new ids.
    let mut resumed = applied(experiment, &plan);
    resumed.spec.paused = false;
    let plan = run(&resumed, &pool, &BTreeMap::new(), later(30));
    assert_eq!(plan.status.run, 2);
    assert!(!plan.status.interrupted);
    assert_eq!(plan.status.phase, ExperimentPhase::Running);
    let new_ids: Vec<String> = starts(&plan).into_iter().map(|(_, id)| id).collect();
    assert_eq!(new_ids.len(), 2);
    assert!(new_ids.iter().all(|id| id != &a && id != &b), "{new_ids:?}");
    assert!(plan.status.targets.iter().all(|t| t.run == 2));
    assert_eq!(
        reasons(&plan)[..2],
        [reason::RESUMED, reason::RUN_STARTED],
        "{:?}",
        plan.actions
    );
    assert!(
        plan.events()
            .any(|e| e.message.contains("resuming the run the pause stopped"))
    );
}

#[test]
fn the_kill_switch_stop_is_final_when_lifted() {
    let pool = pods(1);
    let (experiment, first) = started(1, &pool);
    let [a]: [String; 1] = ids(&first).try_into().unwrap();
    let on = |storms: &BTreeMap<String, StormObservation>, at| {
        plan(&Observation {
            experiment: &experiment,
            pods: &pool,
            storms,
            now: at,
            kill_switch: true,
            guard: &RunGuard::default(),
            probes: &Default::default(),
        })
        .unwrap()
    };
    let running = BTreeMap::from([(a.clone(), storm(&a, StormPhase::Running, None))]);
    let stopping = on(&running, later(5));
    assert_eq!(
        count(&stopping, |a| matches!(a, Action::StopStorm { .. })),
        1
    );
    let experiment = applied(experiment.clone(), &stopping);
    let mut stopped = report(0, 100);
    stopped.stop_reason = StopReason::Stopped;
    let storms = BTreeMap::from([(a.clone(), storm(&a, StormPhase::Aborted, Some(stopped)))]);
    let plan_off = plan(&Observation {
        experiment: &experiment,
        pods: &pool,
        storms: &storms,
        now: later(10),
        kill_switch: true,
        guard: &RunGuard::default(),
        probes: &Default::default(),
    })
    .unwrap();
    assert!(!plan_off.status.interrupted);
    let lifted = run(
        &applied(experiment, &plan_off),
        &pool,
        &BTreeMap::new(),
        later(20),
    );
    assert_eq!(lifted.status.phase, ExperimentPhase::Aborted);
    assert_eq!(lifted.status.run, 1);
    assert!(starts(&lifted).is_empty());
}

#[test]
fn the_annotation_and_the_kill_switch_pause_before_anything_starts() {
    let mut annotated = experiment(spec());
    annotated.metadata.annotations =
        Some(BTreeMap::from([(PAUSE_ANNOTATION.into(), "true".into())]));
    let plan = run(&annotated, &pods(2), &BTreeMap::new(), t0());
    assert_eq!(plan.status.phase, ExperimentPhase::Paused);
    assert_eq!(
        condition(&plan.status, condition::PAUSED).reason,
        "PauseAnnotation"
    );
    assert!(starts(&plan).is_empty());

    let plain = experiment(spec());
    let plan = plan_with_kill_switch(&plain, &pods(2));
    assert_eq!(plan.status.phase, ExperimentPhase::Paused);
    assert_eq!(
        condition(&plan.status, condition::PAUSED).reason,
        "KillSwitch"
    );
    assert!(starts(&plan).is_empty());

    // Resuming starts the run.
    let resumed = run(&applied(plain, &plan), &pods(2), &BTreeMap::new(), later(1));
    assert_eq!(starts(&resumed).len(), 1);
    assert!(reasons(&resumed).contains(&reason::RESUMED));
}

fn plan_with_kill_switch(experiment: &MapChaos, pods: &[CandidatePod]) -> Plan {
    plan(&Observation {
        experiment,
        pods,
        storms: &BTreeMap::new(),
        now: t0(),
        kill_switch: true,
        guard: &RunGuard::default(),
        probes: &Default::default(),
    })
    .unwrap()
}

#[test]
fn deletion_stops_unfinished_storms_and_lets_go_even_without_pods() {
    let pool = pods(3);
    let (mut experiment, first) = started(3, &pool);
    experiment.status.as_mut().unwrap().targets[0].phase = TargetPhase::Completed;
    experiment.metadata.deletion_timestamp = Some(Time(later(5)));
    let plan = run(&experiment, &[], &BTreeMap::new(), later(5));
    let stopped: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StopStorm { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, ids(&first)[1..]);
    assert_eq!(plan.actions.last(), Some(&Action::RemoveFinalizer));
    assert_eq!(reasons(&plan), [reason::DELETING]);

    // Without the finalizer there is nothing left to do.
    experiment.metadata.finalizers = None;
    assert!(
        run(&experiment, &[], &BTreeMap::new(), later(6))
            .actions
            .is_empty()
    );
}

#[test]
fn a_dry_run_selects_and_reports_without_storming() {
    let mut spec = spec();
    spec.dry_run = true;
    spec.mode = SelectionMode::All;
    let experiment = experiment(spec);
    let plan = run(&experiment, &pods(3), &BTreeMap::new(), t0());
    assert!(starts(&plan).is_empty());
    assert_eq!(plan.status.targets.len(), 3);
    assert!(
        plan.status
            .targets
            .iter()
            .all(|t| t.phase == TargetPhase::DryRun)
    );
    assert_eq!(plan.status.phase, ExperimentPhase::Completed);
    assert_eq!(reasons(&plan), [reason::DRY_RUN]);
    assert_eq!(plan.status.summary.as_ref().unwrap().verdict, None);
    assert_eq!(
        condition(&plan.status, condition::ALL_RECOVERED).reason,
        "DryRun"
    );
    assert_eq!(plan.requeue, None);
}

#[test]
fn no_eligible_pod_waits_and_warns_once() {
    let mut pool = pods(2);
    pool[0].phase = "Pending".into();
    pool[1].has_sidecar = false;
    let experiment = experiment(spec());
    let plan = run(&experiment, &pool, &BTreeMap::new(), t0());
    assert_eq!(plan.status.phase, ExperimentPhase::Pending);
    let selected = condition(&plan.status, condition::SELECTED);
    assert_eq!(selected.status, "False");
    assert!(
        selected.message.contains("cart-0 not Running"),
        "{}",
        selected.message
    );
    assert!(selected.message.contains("cart-1 has no mapchaos sidecar"));
    assert_eq!(reasons(&plan), [reason::NO_TARGETS]);
    assert_eq!(plan.requeue, Some(NO_TARGETS_RETRY));
    let again = run(
        &applied(experiment, &plan),
        &pool,
        &BTreeMap::new(),
        later(30),
    );
    assert!(again.events().next().is_none());
    assert_eq!(
        again.status, plan.status,
        "the condition keeps its transition time"
    );
}

#[test]
fn condition_times_move_only_on_transitions() {
    let pool = pods(1);
    let (experiment, first) = started(1, &pool);
    let id = ids(&first).remove(0);
    let storms = BTreeMap::from([(id.clone(), storm(&id, StormPhase::Running, None))]);
    let plan = run(&experiment, &pool, &storms, later(10));
    let valid_at = condition(&plan.status, condition::VALID)
        .last_transition_time
        .clone();
    assert_eq!(valid_at, Time(t0()));
    let injected_at = condition(&plan.status, condition::ALL_INJECTED)
        .last_transition_time
        .clone();
    assert_eq!(injected_at, Time(later(10)));
    let again = run(&applied(experiment, &plan), &pool, &storms, later(20));
    assert_eq!(
        condition(&again.status, condition::ALL_INJECTED).last_transition_time,
        injected_at
    );
}

#[test]
fn the_observe_step_asks_about_unfinished_targets_in_every_relevant_namespace() {
    let pool = pods(2);
    let (mut experiment, first) = started(2, &pool);
    experiment.spec.selector.namespaces = vec!["elsewhere".into()];
    assert_eq!(namespaces_to_observe(&experiment), ["elsewhere", "shop"]);
    experiment.status.as_mut().unwrap().targets[0].phase = TargetPhase::Completed;
    let asked: Vec<String> = storms_to_observe(&experiment)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(asked, ids(&first)[1..]);
}

#[test]
fn a_resource_without_a_uid_is_an_error_not_a_panic() {
    let mut experiment = experiment(spec());
    experiment.metadata.uid = None;
    let error = plan(&Observation {
        experiment: &experiment,
        pods: &[],
        storms: &BTreeMap::new(),
        now: t0(),
        kill_switch: false,
        guard: &RunGuard::default(),
        probes: &Default::default(),
    })
    .unwrap_err();
    assert_eq!(error.metric_label(), "missing_metadata");
}

#[test]
fn no_condition_is_ever_sent_with_an_empty_message() {
    // Kubernetes 1.20's server-side apply turns "" into null, which the CRD
    // rejects, failing the whole status patch: every condition must say something.
    let pool = pods(3);
    let (experiment, plan) = started(1, &pool);
    let mut paused = applied(experiment, &plan);
    paused.spec.paused = true;
    let pause = run(&paused, &pool, &BTreeMap::new(), later(1));
    for status in [&plan.status, &pause.status] {
        assert!(!status.conditions.is_empty());
        for condition in &status.conditions {
            assert!(!condition.message.is_empty(), "{condition:?}");
        }
    }
}

mod probes;
mod schedule;
