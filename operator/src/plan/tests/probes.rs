//! The planner with steady-state probes: `before` gates the start, a failed
//! `stopOnFailure` probe stops the storms, `after` holds the finish, and the
//! run's verdict passes only when the map and every probe passed.

use mapchaos_api::probe::{HttpMethod, HttpProbe, Probe, ProbeAttempt, ProbeMode, ProbePhase};

use super::*;
use crate::probes::{Attempts, ProbeResults, during_due};

fn probe(name: &str, mode: ProbeMode) -> Probe {
    Probe {
        name: name.into(),
        http: Some(HttpProbe {
            url: "http://demo.shop:9464/healthz".into(),
            method: HttpMethod::Get,
            expected_status: vec![200],
            body_match: None,
            timeout: GoDuration::from_secs(2),
        }),
        prometheus: None,
        mode,
        interval: GoDuration::from_secs(5),
        failure_threshold: 1,
        stop_on_failure: false,
    }
}

fn with_probes(probes: Vec<Probe>) -> MapChaos {
    let mut spec = spec();
    spec.mode = SelectionMode::Fixed;
    spec.value = Some("2".into());
    spec.probes = probes;
    experiment(spec)
}

fn probed(
    experiment: &MapChaos,
    storms: &BTreeMap<String, StormObservation>,
    now: Timestamp,
    probes: &ProbeResults,
) -> Plan {
    plan(&Observation {
        experiment,
        pods: &pods(3),
        storms,
        now,
        kill_switch: false,
        guard: &RunGuard::default(),
        probes,
    })
    .unwrap()
}

fn attempts(pairs: &[(&str, Vec<ProbeAttempt>)]) -> Attempts {
    pairs
        .iter()
        .map(|(name, tries)| ((*name).to_owned(), tries.clone()))
        .collect()
}

fn ok() -> ProbeAttempt {
    Ok("HTTP 200".into())
}

fn down() -> ProbeAttempt {
    Err("HTTP 503, expected 200".into())
}

fn before(pairs: &[(&str, Vec<ProbeAttempt>)]) -> ProbeResults {
    ProbeResults {
        before: Some(attempts(pairs)),
        ..ProbeResults::default()
    }
}

fn all(
    ids: &[String],
    phase: StormPhase,
    report: Option<StormReport>,
) -> BTreeMap<String, StormObservation> {
    ids.iter()
        .map(|id| (id.clone(), storm(id, phase, report.clone())))
        .collect()
}

fn run_probe<'a>(status: &'a MapChaosStatus, run: u32, name: &str) -> &'a ProbeStatus {
    status
        .runs
        .iter()
        .find(|r| r.run == run)
        .and_then(|r| r.probes.iter().find(|p| p.name == name))
        .unwrap_or_else(|| panic!("no probe {name} in run {run}: {:?}", status.runs))
}

fn stops(plan: &Plan) -> usize {
    count(plan, |a| matches!(a, Action::StopStorm { .. }))
}

fn renewals(plan: &Plan) -> usize {
    count(plan, |a| matches!(a, Action::RenewLease { .. }))
}

/// Run 1 started with its `before` probes passed, its storms confirmed
/// running at `later(2)`.
fn storming(probes: Vec<Probe>) -> (MapChaos, Vec<String>) {
    let experiment = with_probes(probes);
    let names: Vec<String> = experiment
        .spec
        .probes
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let passes: Vec<(&str, Vec<ProbeAttempt>)> = names
        .iter()
        .filter(|n| {
            experiment
                .spec
                .probes
                .iter()
                .any(|p| &p.name == *n && p.mode.covers(ProbeStage::Before))
        })
        .map(|n| (n.as_str(), vec![ok()]))
        .collect();
    let first = probed(&experiment, &BTreeMap::new(), t0(), &before(&passes));
    assert_eq!(starts(&first).len(), 2, "{:?}", reasons(&first));
    let ids = ids(&first);
    let experiment = applied(experiment, &first);
    let running = all(&ids, StormPhase::Running, None);
    let second = probed(&experiment, &running, later(2), &ProbeResults::default());
    (applied(experiment, &second), ids)
}

#[test]
fn a_before_probe_is_asked_for_before_any_storm_starts() {
    let experiment = with_probes(vec![probe("health", ProbeMode::Before)]);
    let plan = probed(
        &experiment,
        &BTreeMap::new(),
        t0(),
        &ProbeResults::default(),
    );
    assert!(plan.probe_needs.before);
    assert!(starts(&plan).is_empty(), "no storm before the probe ran");
    assert_eq!(plan.status.run, 0);
    assert!(plan.requeue.is_some());
}

#[test]
fn a_failed_before_probe_means_no_storm_and_a_failed_run_naming_it() {
    let experiment = with_probes(vec![
        probe("health", ProbeMode::Before),
        probe("surprises", ProbeMode::During),
    ]);
    let plan = probed(
        &experiment,
        &BTreeMap::new(),
        t0(),
        &before(&[("health", vec![down()])]),
    );
    assert!(starts(&plan).is_empty());
    assert!(plan.status.targets.is_empty());
    assert_eq!(plan.status.run, 1);
    assert_eq!(plan.status.phase, ExperimentPhase::Failed);
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Fail)
    );
    let record = &plan.status.runs[0];
    assert_eq!(
        (record.phase, record.verdict, record.targets),
        (ExperimentPhase::Failed, Some(Verdict::Fail), 0)
    );
    let health = run_probe(&plan.status, 1, "health");
    assert_eq!(health.phase, ProbePhase::Failed);
    assert_eq!(health.message, "before: HTTP 503, expected 200");
    assert_eq!(
        run_probe(&plan.status, 1, "surprises").phase,
        ProbePhase::NotRun
    );
    let event = plan
        .events()
        .find(|e| e.reason == reason::PROBE_FAILED)
        .expect("a ProbeFailed Event");
    assert_eq!(event.kind, EventKind::Warning);
    assert!(
        event
            .message
            .contains("run 1 not started: probe health failed before the storms"),
        "{}",
        event.message
    );
    assert!(!reasons(&plan).contains(&reason::RUN_STARTED));

    // It stays that way: an unscheduled experiment does not try again.
    let again = probed(
        &applied(experiment, &plan),
        &BTreeMap::new(),
        later(30),
        &ProbeResults::default(),
    );
    assert!(starts(&again).is_empty() && !again.probe_needs.before);
    assert_eq!(again.status.phase, ExperimentPhase::Failed);
}

#[test]
fn a_before_probe_within_its_failure_threshold_lets_the_run_start() {
    let mut health = probe("health", ProbeMode::Continuous);
    health.failure_threshold = 3;
    let experiment = with_probes(vec![health]);
    let plan = probed(
        &experiment,
        &BTreeMap::new(),
        t0(),
        &before(&[("health", vec![down(), down(), ok()])]),
    );
    assert_eq!(starts(&plan).len(), 2);
    let status = run_probe(&plan.status, 1, "health");
    assert_eq!(
        (
            status.phase,
            status.attempts,
            status.successes,
            status.success_percent
        ),
        (ProbePhase::Running, 3, 1, 33)
    );
    assert_eq!(status.consecutive_failures, 0);
}

#[test]
fn during_probes_fall_due_at_their_interval_while_storms_run() {
    let mut fast = probe("fast", ProbeMode::During);
    fast.interval = GoDuration::from_secs(2);
    let (experiment, _) = storming(vec![fast, probe("slow", ProbeMode::Continuous)]);
    // Never tried during the storms yet: fast is due at once; slow (tried
    // before, at t0) only after its 5s.
    let due: Vec<String> = during_due(&experiment, later(3))
        .into_iter()
        .map(|(_, p)| p.name)
        .collect();
    assert_eq!(due, ["fast"]);
    let due: Vec<String> = during_due(&experiment, later(5))
        .into_iter()
        .map(|(_, p)| p.name)
        .collect();
    assert_eq!(due, ["fast", "slow"]);

    let results = ProbeResults {
        during: BTreeMap::from([((1, "fast".to_owned()), ok())]),
        ..ProbeResults::default()
    };
    let ids = ids_of(&experiment);
    let plan = probed(
        &experiment,
        &all(&ids, StormPhase::Running, None),
        later(3),
        &results,
    );
    assert!(
        plan.requeue.unwrap() <= Duration::from_secs(2),
        "{:?}",
        plan.requeue
    );
    let experiment = applied(experiment, &plan);
    assert!(
        during_due(&experiment, later(4))
            .iter()
            .all(|(_, p)| p.name != "fast")
    );
    assert!(
        during_due(&experiment, later(5))
            .iter()
            .any(|(_, p)| p.name == "fast")
    );
}

fn ids_of(experiment: &MapChaos) -> Vec<String> {
    experiment
        .status
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| t.storm_id.clone())
        .collect()
}

#[test]
fn a_failed_stop_on_failure_probe_stops_every_storm_and_keeps_them_stopping() {
    let mut health = probe("health", ProbeMode::During);
    health.stop_on_failure = true;
    let (experiment, ids) = storming(vec![health]);
    let running = all(&ids, StormPhase::Running, None);
    let results = ProbeResults {
        during: BTreeMap::from([((1, "health".to_owned()), down())]),
        ..ProbeResults::default()
    };
    let plan = probed(&experiment, &running, later(8), &results);
    assert_eq!(stops(&plan), 2, "{:?}", plan.actions);
    assert_eq!(renewals(&plan), 0);
    let event = plan
        .events()
        .find(|e| e.reason == reason::PROBE_FAILED)
        .unwrap();
    assert!(
        event
            .message
            .contains("probe health failed during the storms")
            && event.message.contains("stopping the storms"),
        "{}",
        event.message
    );
    // The storms take a moment to stop: the next look stops them again
    // rather than renewing their leases.
    let experiment = applied(experiment, &plan);
    let plan = probed(&experiment, &running, later(9), &ProbeResults::default());
    assert_eq!((stops(&plan), renewals(&plan)), (2, 0));
    assert!(
        plan.events().all(|e| e.reason != reason::PROBE_FAILED),
        "one Event per failure"
    );
    // Stopped (aborted) with a clean map: the run still fails, for the probe.
    let experiment = applied(experiment, &plan);
    let mut clean = report(0, 100);
    clean.stop_reason = StopReason::Stopped;
    let done = all(&ids, StormPhase::Aborted, Some(clean));
    let plan = probed(&experiment, &done, later(10), &ProbeResults::default());
    assert_eq!(plan.status.phase, ExperimentPhase::Aborted);
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Fail)
    );
    assert_eq!(plan.status.runs[0].verdict, Some(Verdict::Fail));
    let finished = plan
        .events()
        .find(|e| e.reason == reason::RUN_FINISHED)
        .unwrap();
    assert!(
        finished.message.contains("failed probes: health"),
        "{}",
        finished.message
    );
}

#[test]
fn a_failed_probe_without_stop_on_failure_lets_the_storms_run_and_fails_the_run() {
    let mut health = probe("health", ProbeMode::During);
    health.failure_threshold = 2;
    let (experiment, ids) = storming(vec![health]);
    let running = all(&ids, StormPhase::Running, None);
    let failing = || ProbeResults {
        during: BTreeMap::from([((1, "health".to_owned()), down())]),
        ..ProbeResults::default()
    };
    let plan = probed(&experiment, &running, later(8), &failing());
    assert_eq!(
        run_probe(&plan.status, 1, "health").phase,
        ProbePhase::Running,
        "1 of 2 failures"
    );
    let experiment = applied(experiment, &plan);
    let plan = probed(&experiment, &running, later(14), &failing());
    assert_eq!(
        run_probe(&plan.status, 1, "health").phase,
        ProbePhase::Failed
    );
    assert_eq!((stops(&plan), renewals(&plan)), (0, 2), "the storms go on");
    let experiment = applied(experiment, &plan);
    let done = all(&ids, StormPhase::Completed, Some(report(0, 100)));
    let plan = probed(&experiment, &done, later(61), &ProbeResults::default());
    assert_eq!(plan.status.phase, ExperimentPhase::Completed);
    let summary = plan.status.summary.as_ref().unwrap();
    assert_eq!(summary.total_anomalies, 0, "the map held");
    assert_eq!(
        summary.verdict,
        Some(Verdict::Fail),
        "the application did not"
    );
    let health = run_probe(&plan.status, 1, "health");
    assert_eq!((health.attempts, health.success_percent), (2, 0));
}

#[test]
fn after_probes_hold_the_finish_until_they_ran() {
    let (experiment, ids) = storming(vec![probe("health", ProbeMode::Continuous)]);
    let done = all(&ids, StormPhase::Completed, Some(report(0, 100)));
    let waiting = probed(&experiment, &done, later(61), &ProbeResults::default());
    assert_eq!(waiting.probe_needs.after, [1]);
    assert!(waiting.status.runs[0].finished_at.is_none());
    assert!(!reasons(&waiting).contains(&reason::RUN_FINISHED));

    let results = ProbeResults {
        after: BTreeMap::from([(1, attempts(&[("health", vec![ok()])]))]),
        ..ProbeResults::default()
    };
    let plan = probed(&experiment, &done, later(61), &results);
    assert!(plan.probe_needs.is_empty());
    assert_eq!(plan.status.phase, ExperimentPhase::Completed);
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Pass)
    );
    let health = run_probe(&plan.status, 1, "health");
    assert_eq!(
        (
            health.phase,
            health.attempts,
            health.success_percent,
            health.stage
        ),
        (ProbePhase::Passed, 2, 100, Some(ProbeStage::After))
    );

    let results = ProbeResults {
        after: BTreeMap::from([(1, attempts(&[("health", vec![down()])]))]),
        ..ProbeResults::default()
    };
    let plan = probed(&experiment, &done, later(61), &results);
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Fail)
    );
    let event = plan
        .events()
        .find(|e| e.reason == reason::PROBE_FAILED)
        .unwrap();
    assert!(
        event
            .message
            .contains("probe health failed after the storms"),
        "{}",
        event.message
    );
}

#[test]
fn a_probe_that_never_ran_leaves_a_clean_map_inconclusive() {
    let (experiment, ids) = storming(vec![probe("health", ProbeMode::During)]);
    let done = all(&ids, StormPhase::Completed, Some(report(0, 100)));
    let plan = probed(&experiment, &done, later(61), &ProbeResults::default());
    assert_eq!(
        run_probe(&plan.status, 1, "health").phase,
        ProbePhase::NotRun
    );
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Inconclusive)
    );
}

#[test]
fn without_probes_nothing_changes() {
    let (experiment, ids) = storming(vec![]);
    let done = all(&ids, StormPhase::Completed, Some(report(0, 100)));
    let plan = probed(&experiment, &done, later(61), &ProbeResults::default());
    assert!(plan.probe_needs.is_empty());
    assert_eq!(
        plan.status.summary.as_ref().unwrap().verdict,
        Some(Verdict::Pass)
    );
    assert!(plan.status.runs[0].probes.is_empty());
}
