//! The planner under the guardrails: refused namespaces get no new storm
//! (running ones go on), a run over a blast-radius cap does not start, and
//! the status names who created and changed the experiment.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;
use mapchaos_api::spec::{MapChaosSpec, PodSelector, SelectionMode};

use super::*;

fn t0() -> Timestamp {
    "2026-05-01T12:00:00Z".parse().unwrap()
}

fn experiment(namespaces: &[&str]) -> MapChaos {
    let mut spec: MapChaosSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.selector = PodSelector {
        namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        label_selectors: BTreeMap::from([("app".into(), "cart".into())]),
        ..PodSelector::default()
    };
    spec.mode = SelectionMode::All;
    let mut experiment = MapChaos::new("storm", spec);
    experiment.metadata = ObjectMeta {
        name: Some("storm".into()),
        namespace: Some("team-a".into()),
        uid: Some("5b0f6a2e-1111-4c8e-9c1e-2f9d3b7a0c44".into()),
        generation: Some(1),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    experiment
}

fn pod(namespace: &str, name: &str) -> CandidatePod {
    CandidatePod {
        name: name.into(),
        namespace: namespace.into(),
        uid: format!("uid-{namespace}-{name}"),
        labels: BTreeMap::from([("app".into(), "cart".into())]),
        phase: "Running".into(),
        ready: true,
        has_sidecar: true,
        pod_ip: Some(format!("10.0.{}.{}", namespace.len(), name.len())),
        ..CandidatePod::default()
    }
}

fn reconcile(
    experiment: &MapChaos,
    pods: &[CandidatePod],
    storms: &BTreeMap<String, StormObservation>,
    guard: &RunGuard,
    now: Timestamp,
) -> Plan {
    plan(&Observation {
        experiment,
        pods,
        storms,
        now,
        kill_switch: false,
        guard,
        probes: &Default::default(),
    })
    .unwrap()
}

fn applied(mut experiment: MapChaos, plan: &Plan) -> MapChaos {
    experiment.status = Some(plan.status.clone());
    experiment
}

fn started_pods(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStorm { endpoint, .. } => {
                Some(format!("{}/{}", endpoint.namespace, endpoint.pod))
            }
            _ => None,
        })
        .collect()
}

fn events(plan: &Plan, reason: &str) -> Vec<String> {
    plan.events()
        .filter(|e| e.reason == reason)
        .map(|e| e.message.clone())
        .collect()
}

fn condition<'a>(plan: &'a Plan, kind: &str) -> Option<&'a Condition> {
    plan.status.conditions.iter().find(|c| c.type_ == kind)
}

fn refusing(namespace: &str) -> RunGuard {
    RunGuard {
        refused_namespaces: [(
            namespace.to_owned(),
            format!("namespace {namespace} does not allow storms: it lacks the label"),
        )]
        .into(),
        ..RunGuard::default()
    }
}

#[test]
fn a_refused_namespace_gets_no_storm_a_condition_and_one_event_naming_it() {
    let experiment = experiment(&["team-a", "team-b"]);
    let pods = [pod("team-a", "a0"), pod("team-b", "b0")];
    let guard = refusing("team-b");
    let first = reconcile(&experiment, &pods, &BTreeMap::new(), &guard, t0());
    assert_eq!(started_pods(&first), ["team-a/a0"]);
    let skipped = condition(&first, condition::NAMESPACES_ALLOWED).unwrap();
    assert_eq!(skipped.status, "False");
    assert!(skipped.message.contains("team-b"), "{}", skipped.message);
    let notes = events(&first, reason::NAMESPACE_SKIPPED);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("team-b"), "{notes:?}");

    // The next reconcile says nothing new.
    let again = reconcile(
        &applied(experiment, &first),
        &pods,
        &BTreeMap::new(),
        &guard,
        t0() + SignedDuration::from_secs(2),
    );
    assert!(events(&again, reason::NAMESPACE_SKIPPED).is_empty());
}

#[test]
fn when_every_namespace_is_refused_nothing_starts_and_selection_says_why() {
    let experiment = experiment(&["team-b"]);
    let pods = [pod("team-b", "b0"), pod("team-b", "b1")];
    let plan = reconcile(
        &experiment,
        &pods,
        &BTreeMap::new(),
        &refusing("team-b"),
        t0(),
    );
    assert!(started_pods(&plan).is_empty());
    assert_eq!(plan.status.run, 0);
    let selected = condition(&plan, condition::SELECTED).unwrap();
    assert_eq!(selected.status, "False");
    assert!(
        selected.message.contains("guardrails"),
        "{}",
        selected.message
    );
}

#[test]
fn a_label_removed_mid_run_stops_only_the_next_run_there() {
    let mut experiment = experiment(&["team-b"]);
    experiment.spec.schedule = Some("*/5 * * * *".into());
    experiment.metadata.creation_timestamp = Some(Time(t0() - SignedDuration::from_secs(60)));
    let pods = [pod("team-b", "b0")];
    let open = RunGuard::default();
    let tick = "2026-05-01T12:00:00.5Z".parse::<Timestamp>().unwrap();
    let first = reconcile(&experiment, &pods, &BTreeMap::new(), &open, tick);
    assert_eq!(started_pods(&first), ["team-b/b0"]);
    let running = applied(experiment, &first);

    // The label goes; the running storm is renewed, not abandoned.
    let id = first.status.targets[0].storm_id.clone();
    let storms = BTreeMap::from([(
        id.clone(),
        StormObservation::Found(Box::new(StormStatus {
            id: id.clone(),
            phase: StormPhase::Running,
            message: String::new(),
            ops: 10,
            errors: 0,
            elapsed_millis: 1000,
            report: None,
        })),
    )]);
    let guard = refusing("team-b");
    let during = reconcile(
        &running,
        &pods,
        &storms,
        &guard,
        tick + SignedDuration::from_secs(10),
    );
    assert_eq!(during.status.targets[0].phase, TargetPhase::Running);
    assert!(
        during
            .actions
            .iter()
            .any(|a| matches!(a, Action::RenewLease { .. }))
    );
    assert_eq!(
        condition(&during, condition::NAMESPACES_ALLOWED)
            .unwrap()
            .status,
        "False"
    );

    // The run ends; the next scheduled time starts nothing there.
    let mut done = applied(running, &during);
    let status = done.status.as_mut().unwrap();
    status.targets[0].phase = TargetPhase::Completed;
    let next = reconcile(
        &done,
        &pods,
        &BTreeMap::new(),
        &guard,
        "2026-05-01T12:05:01Z".parse().unwrap(),
    );
    assert!(started_pods(&next).is_empty(), "{:?}", next.actions);
    assert_eq!(next.status.run, 1);

    // Labelled again: the condition clears and the next time runs.
    let relabelled = reconcile(
        &applied(done, &next),
        &pods,
        &BTreeMap::new(),
        &open,
        "2026-05-01T12:10:01Z".parse().unwrap(),
    );
    assert_eq!(started_pods(&relabelled), ["team-b/b0"]);
    assert_eq!(
        condition(&relabelled, condition::NAMESPACES_ALLOWED)
            .unwrap()
            .status,
        "True"
    );
}

#[test]
fn a_run_over_the_target_cap_does_not_start_and_says_why_once() {
    let experiment = experiment(&["team-a"]);
    let pods: Vec<CandidatePod> = (0..4).map(|i| pod("team-a", &format!("a{i}"))).collect();
    let guard = RunGuard {
        max_targets: Some(3),
        ..RunGuard::default()
    };
    let plan = reconcile(&experiment, &pods, &BTreeMap::new(), &guard, t0());
    assert!(started_pods(&plan).is_empty());
    assert_eq!(plan.status.run, 0);
    assert!(plan.status.targets.is_empty());
    let limits = condition(&plan, condition::WITHIN_LIMITS).unwrap();
    assert_eq!(
        (limits.status.as_str(), limits.reason.as_str()),
        ("False", "OverLimit")
    );
    assert!(limits.message.contains("cap of 3"), "{}", limits.message);
    assert_eq!(events(&plan, reason::RUN_REFUSED).len(), 1);
    assert_eq!(plan.requeue, Some(NO_TARGETS_RETRY));

    let again = reconcile(
        &applied(experiment.clone(), &plan),
        &pods,
        &BTreeMap::new(),
        &guard,
        t0() + SignedDuration::from_secs(30),
    );
    assert!(events(&again, reason::RUN_REFUSED).is_empty());

    // One pod fewer: the run starts and the condition clears.
    let fewer = reconcile(
        &applied(experiment, &again),
        &pods[..3],
        &BTreeMap::new(),
        &guard,
        t0() + SignedDuration::from_secs(60),
    );
    assert_eq!(started_pods(&fewer).len(), 3);
    assert_eq!(
        condition(&fewer, condition::WITHIN_LIMITS).unwrap().status,
        "True"
    );
}

#[test]
fn the_namespace_share_counts_what_other_experiments_storm() {
    let mut experiment = experiment(&["team-a"]);
    experiment.spec.mode = SelectionMode::Fixed;
    experiment.spec.value = Some("1".into());
    let pods: Vec<CandidatePod> = (0..4).map(|i| pod("team-a", &format!("a{i}"))).collect();
    let guard = RunGuard {
        max_namespace_share_percent: Some(50),
        stormed_elsewhere: [("team-a".to_owned(), 2)].into(),
        ..RunGuard::default()
    };
    let plan = reconcile(&experiment, &pods, &BTreeMap::new(), &guard, t0());
    assert!(started_pods(&plan).is_empty());
    let limits = condition(&plan, condition::WITHIN_LIMITS).unwrap();
    assert!(limits.message.contains("3 of the 4"), "{}", limits.message);

    let quieter = RunGuard {
        stormed_elsewhere: [("team-a".to_owned(), 1)].into(),
        ..guard
    };
    let plan = reconcile(&experiment, &pods, &BTreeMap::new(), &quieter, t0());
    assert_eq!(started_pods(&plan).len(), 1);
}

#[test]
fn the_status_names_who_created_and_last_changed_the_experiment() {
    let mut experiment = experiment(&["team-a"]);
    experiment.metadata.annotations = Some(
        [
            (CREATED_BY_ANNOTATION.to_owned(), "alice".to_owned()),
            (UPDATED_BY_ANNOTATION.to_owned(), "bob".to_owned()),
        ]
        .into(),
    );
    let plan = reconcile(
        &experiment,
        &[pod("team-a", "a0")],
        &BTreeMap::new(),
        &RunGuard::default(),
        t0(),
    );
    assert_eq!(plan.status.created_by.as_deref(), Some("alice"));
    assert_eq!(plan.status.updated_by.as_deref(), Some("bob"));
}
