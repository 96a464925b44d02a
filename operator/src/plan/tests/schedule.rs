//! `spec.schedule`, `concurrencyPolicy` and `historyLimit`: when runs start,
//! wait, overlap, replace each other or are skipped.

use super::*;

/// Every 10 minutes; the resource was created at t0 (12:00:00).
fn scheduled(policy: ConcurrencyPolicy, value: usize) -> MapChaos {
    let mut spec = spec();
    spec.mode = SelectionMode::Fixed;
    spec.value = Some(value.to_string());
    spec.schedule = Some("*/10 * * * *".into());
    spec.concurrency_policy = policy;
    let mut experiment = experiment(spec);
    experiment.metadata.creation_timestamp = Some(Time(t0()));
    experiment
}

const TICK: i64 = 600;

fn completed(ids: &[String]) -> BTreeMap<String, StormObservation> {
    ids.iter()
        .map(|id| {
            (
                id.clone(),
                storm(id, StormPhase::Completed, Some(report(0, 100))),
            )
        })
        .collect()
}

fn running(ids: &[String]) -> BTreeMap<String, StormObservation> {
    ids.iter()
        .map(|id| (id.clone(), storm(id, StormPhase::Running, None)))
        .collect()
}

/// `status.runs` as (run, phase).
fn runs(plan: &Plan) -> Vec<(u32, ExperimentPhase)> {
    plan.status.runs.iter().map(|r| (r.run, r.phase)).collect()
}

fn ids_of_run(plan: &Plan, run: u32) -> Vec<String> {
    plan.status
        .targets
        .iter()
        .filter(|t| t.run == run)
        .map(|t| t.storm_id.clone())
        .collect()
}

#[test]
fn nothing_runs_before_the_schedule_fires_and_the_wake_up_is_set_for_it() {
    let experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    let plan = run(&experiment, &pods(2), &BTreeMap::new(), later(1));
    assert!(starts(&plan).is_empty());
    assert_eq!(plan.status.run, 0);
    assert_eq!(plan.status.phase, ExperimentPhase::Pending);
    assert_eq!(plan.status.next_schedule_time, Some(Time(later(TICK))));
    let wait = plan.requeue.expect("wakes for the schedule");
    assert!(
        wait >= Duration::from_secs(599) && wait <= Duration::from_secs(600),
        "{wait:?}"
    );
}

#[test]
fn each_time_the_schedule_fires_a_new_run_starts_with_its_own_ids_and_seed() {
    let pool = pods(6);
    let experiment = scheduled(ConcurrencyPolicy::Forbid, 2);
    let first = run(&experiment, &pool, &BTreeMap::new(), later(TICK));
    assert_eq!(first.status.run, 1);
    assert_eq!(first.status.last_schedule_time, Some(Time(later(TICK))));
    assert_eq!(first.status.next_schedule_time, Some(Time(later(2 * TICK))));
    assert_eq!(starts(&first).len(), 2);
    assert!(
        first.events().any(|e| e.reason == reason::RUN_STARTED
            && e.message.contains("scheduled for 2026-05-01T12:10:00Z")),
        "{:?}",
        first.actions
    );
    let run1 = ids_of_run(&first, 1);
    let experiment = applied(experiment, &first);
    let done = run(&experiment, &pool, &completed(&run1), later(TICK + 70));
    assert_eq!(done.status.phase, ExperimentPhase::Completed);
    assert!(starts(&done).is_empty(), "no new run between times");
    assert!(
        done.requeue
            .is_some_and(|w| w > Duration::from_secs(529) && w <= Duration::from_secs(531)),
        "wakes for the next time: {:?}",
        done.requeue
    );

    let experiment = applied(experiment, &done);
    let second = run(&experiment, &pool, &BTreeMap::new(), later(2 * TICK));
    assert_eq!(second.status.run, 2);
    let run2 = ids_of_run(&second, 2);
    assert_eq!(run2.len(), 2);
    assert!(run2.iter().all(|id| !run1.contains(id)));
    // Run 2 draws its own seed from the experiment's, reproducibly.
    let seeds: Vec<u64> = second
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStorm { request, .. } => Some(request.seed),
            _ => None,
        })
        .collect();
    let base = second.status.seed.unwrap();
    assert!(seeds.iter().all(|s| *s == run_seed(base, 2) && *s != base));
    // The finished run 1 lives on in status.runs, not in the targets.
    assert!(second.status.targets.iter().all(|t| t.run == 2));
    assert_eq!(
        runs(&second),
        [
            (1, ExperimentPhase::Completed),
            (2, ExperimentPhase::Running)
        ]
    );
}

#[test]
fn times_missed_while_the_operator_was_down_fold_into_one_run() {
    let experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    let plan = run(
        &experiment,
        &pods(2),
        &BTreeMap::new(),
        later(3 * TICK + 30),
    );
    assert_eq!(starts(&plan).len(), 1, "one run, not three");
    assert_eq!(plan.status.last_schedule_time, Some(Time(later(3 * TICK))));
}

#[test]
fn a_time_missed_by_more_than_the_deadline_is_skipped_with_a_warning() {
    let experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    let mut experiment = applied(
        experiment.clone(),
        &run(&experiment, &pods(1), &BTreeMap::new(), later(TICK)),
    );
    let run1 = ids(&run(
        &experiment,
        &pods(1),
        &BTreeMap::new(),
        later(TICK + 1),
    ));
    // Run 1 is still going when the next time comes, and long after.
    let waiting = run(&experiment, &pods(1), &running(&run1), later(2 * TICK + 10));
    assert!(starts(&waiting).is_empty(), "Forbid waits");
    assert_eq!(waiting.status.last_schedule_time, Some(Time(later(TICK))));
    experiment = applied(experiment, &waiting);
    let late = 2 * TICK + SCHEDULE_DEADLINE.as_secs() as i64 + 1;
    let skipped = run(&experiment, &pods(1), &running(&run1), later(late));
    assert!(starts(&skipped).is_empty());
    assert_eq!(
        skipped.status.last_schedule_time,
        Some(Time(later(2 * TICK)))
    );
    let event = skipped
        .events()
        .find(|e| e.reason == reason::SCHEDULE_SKIPPED)
        .expect("a ScheduleSkipped event");
    assert_eq!(event.kind, EventKind::Warning);
    assert!(
        event.message.contains("concurrencyPolicy Forbid"),
        "{}",
        event.message
    );
    assert_eq!(skipped.status.run, 1);
}

#[test]
fn forbid_starts_a_waiting_time_as_soon_as_the_previous_run_ends() {
    let pool = pods(1);
    let experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    let first = run(&experiment, &pool, &BTreeMap::new(), later(TICK));
    let run1 = ids_of_run(&first, 1);
    let experiment = applied(experiment, &first);
    let waiting = run(&experiment, &pool, &running(&run1), later(2 * TICK + 5));
    assert!(starts(&waiting).is_empty());
    // The running storm keeps its lease meanwhile.
    assert_eq!(
        count(&waiting, |a| matches!(a, Action::RenewLease { .. })),
        1
    );
    let experiment = applied(experiment, &waiting);
    let next = run(&experiment, &pool, &completed(&run1), later(2 * TICK + 60));
    assert_eq!(next.status.run, 2);
    assert_eq!(starts(&next).len(), 1);
    assert_eq!(next.status.last_schedule_time, Some(Time(later(2 * TICK))));
    assert_eq!(next.status.runs[0].phase, ExperimentPhase::Completed);
}

#[test]
fn allow_overlaps_runs_on_pods_the_running_one_is_not_storming() {
    let pool = pods(3);
    let experiment = scheduled(ConcurrencyPolicy::Allow, 2);
    let first = run(&experiment, &pool, &BTreeMap::new(), later(TICK));
    let run1 = ids_of_run(&first, 1);
    let busy: Vec<String> = first.status.targets.iter().map(|t| t.pod.clone()).collect();
    let experiment = applied(experiment, &first);

    let second = run(&experiment, &pool, &running(&run1), later(2 * TICK));
    assert_eq!(second.status.run, 2);
    let started = starts(&second);
    assert_eq!(started.len(), 1, "only one pod is free: {started:?}");
    assert!(!busy.contains(&started[0].0));
    assert_eq!(ids_of_run(&second, 1), run1, "run 1 is still observed");
    assert_eq!(
        count(&second, |a| matches!(a, Action::RenewLease { .. })),
        2
    );
    let summary = second.status.summary.as_ref().unwrap();
    assert_eq!(summary.targets, 1, "the summary is the newest run's");

    // Run 1 finishing is recorded on its own; its targets leave.
    let experiment = applied(experiment, &second);
    let run2 = ids_of_run(&second, 2);
    let mut storms = completed(&run1);
    storms.extend(running(&run2));
    let later_plan = run(&experiment, &pool, &storms, later(2 * TICK + 60));
    assert!(later_plan.status.targets.iter().all(|t| t.run == 2));
    assert_eq!(
        runs(&later_plan),
        [
            (1, ExperimentPhase::Completed),
            (2, ExperimentPhase::Running)
        ]
    );
    assert_eq!(later_plan.status.phase, ExperimentPhase::Running);
    assert!(
        later_plan
            .events()
            .any(|e| e.reason == reason::RUN_FINISHED && e.message.starts_with("run 1 "))
    );

    // With every pod busy, Allow has nothing to start and says why.
    let experiment = scheduled(ConcurrencyPolicy::Allow, 3);
    let first = run(&experiment, &pool, &BTreeMap::new(), later(TICK));
    let run1 = ids_of_run(&first, 1);
    let full = run(
        &applied(experiment, &first),
        &pool,
        &running(&run1),
        later(2 * TICK),
    );
    assert!(starts(&full).is_empty());
    assert_eq!(full.status.run, 1);
    assert!(
        condition(&full.status, condition::SELECTED)
            .message
            .contains("still being stormed by an earlier run")
    );
}

#[test]
fn replace_stops_the_running_run_then_starts_the_new_one() {
    let pool = pods(2);
    let experiment = scheduled(ConcurrencyPolicy::Replace, 2);
    let first = run(&experiment, &pool, &BTreeMap::new(), later(TICK));
    let run1 = ids_of_run(&first, 1);
    let experiment = applied(experiment, &first);

    let stopping = run(&experiment, &pool, &running(&run1), later(2 * TICK));
    assert!(
        starts(&stopping).is_empty(),
        "waits for the old storms to stop"
    );
    assert_eq!(
        count(&stopping, |a| matches!(a, Action::StopStorm { .. })),
        2
    );
    assert_eq!(stopping.requeue, Some(REPLACE_POLL));
    assert_eq!(stopping.status.last_schedule_time, Some(Time(later(TICK))));

    let experiment = applied(experiment, &stopping);
    let mut stopped = report(0, 100);
    stopped.stop_reason = StopReason::Stopped;
    let storms: BTreeMap<String, StormObservation> = run1
        .iter()
        .map(|id| {
            (
                id.clone(),
                storm(id, StormPhase::Aborted, Some(stopped.clone())),
            )
        })
        .collect();
    let replaced = run(&experiment, &pool, &storms, later(2 * TICK + 3));
    assert_eq!(replaced.status.run, 2);
    assert_eq!(starts(&replaced).len(), 2);
    assert_eq!(replaced.status.runs[0].phase, ExperimentPhase::Aborted);
    assert!(
        !replaced.status.interrupted,
        "a replaced run is not resumed"
    );
    assert_eq!(
        replaced.status.last_schedule_time,
        Some(Time(later(2 * TICK)))
    );
}

#[test]
fn a_pause_skips_the_times_it_covers_without_making_them_up() {
    let pool = pods(1);
    let mut experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    experiment.spec.paused = true;
    let paused = run(&experiment, &pool, &BTreeMap::new(), later(TICK + 5));
    assert!(starts(&paused).is_empty());
    assert_eq!(paused.status.last_schedule_time, Some(Time(later(TICK))));
    assert_eq!(paused.status.phase, ExperimentPhase::Paused);
    let mut experiment = applied(experiment, &paused);
    experiment.spec.paused = false;
    let resumed = run(&experiment, &pool, &BTreeMap::new(), later(TICK + 60));
    assert!(
        starts(&resumed).is_empty(),
        "the covered time is not run late"
    );
    let next = run(
        &applied(experiment, &resumed),
        &pool,
        &BTreeMap::new(),
        later(2 * TICK),
    );
    assert_eq!(starts(&next).len(), 1);
}

#[test]
fn history_keeps_the_newest_finished_runs_up_to_the_limit() {
    let pool = pods(1);
    let mut experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    experiment.spec.history_limit = 2;
    for n in 1..=4 {
        let started = run(&experiment, &pool, &BTreeMap::new(), later(n * TICK));
        assert_eq!(started.status.run as i64, n);
        let ids = ids_of_run(&started, n as u32);
        experiment = applied(experiment, &started);
        let done = run(&experiment, &pool, &completed(&ids), later(n * TICK + 60));
        experiment = applied(experiment, &done);
    }
    let runs: Vec<u32> = experiment
        .status
        .as_ref()
        .unwrap()
        .runs
        .iter()
        .map(|r| r.run)
        .collect();
    assert_eq!(runs, [3, 4]);
}

#[test]
fn a_scheduled_dry_run_reports_each_time_without_storming() {
    let mut experiment = scheduled(ConcurrencyPolicy::Forbid, 1);
    experiment.spec.dry_run = true;
    let plan = run(&experiment, &pods(2), &BTreeMap::new(), later(TICK));
    assert!(starts(&plan).is_empty());
    assert_eq!(plan.status.run, 1);
    assert_eq!(plan.status.runs[0].phase, ExperimentPhase::Completed);
    assert!(plan.status.runs[0].finished_at.is_some());
    let next = run(
        &applied(experiment, &plan),
        &pods(2),
        &BTreeMap::new(),
        later(2 * TICK),
    );
    assert_eq!(next.status.run, 2);
    assert_eq!(reasons(&next), [reason::DRY_RUN]);
}
