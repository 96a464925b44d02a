//! The reconciler's pure step: from a MapChaos and what was observed of its
//! pods and storms, the status it should have and the actions that get it
//! there. No I/O and no clock: time and the kill switch come in as inputs,
//! so every decision is unit-tested here.
//!
//! A run's life: the finalizer goes on first; then the targets are chosen
//! (seeded) and fixed for the run, each gets a storm (`PUT`, retried with
//! the same id until the sidecar confirms it), leases are renewed while
//! storms run, and the run finishes when every target is final. A pause
//! (spec, annotation or kill switch) stops running storms; lifting a spec or
//! annotation pause starts the stopped run again as a new run, the kill
//! switch's stop is final. Deletion stops the storms and removes the
//! finalizer. A spec change does not touch a run in progress: targets and
//! storm requests are fixed when the run starts.
//!
//! Without `spec.schedule` an experiment runs once; with it, a run starts
//! each time the schedule fires (UTC), and `concurrencyPolicy` decides what
//! happens when the previous run is still going. Targets carry their run's
//! number, so overlapping runs (`Allow`) are observed side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use mapchaos_api::probe::{ProbeStage, ProbeStatus, combined_verdict, failed_names};
use mapchaos_api::resource::{
    CREATED_BY_ANNOTATION, ExperimentPhase, FINALIZER, LatencyMicros, MapChaosStatus,
    PAUSE_ANNOTATION, RunRecord, Summary, TargetPhase, TargetStatus, UPDATED_BY_ANNOTATION,
};
use mapchaos_api::schedule::Schedule;
use mapchaos_api::spec::ConcurrencyPolicy;
use mapchaos_api::storm::{
    DEFAULT_LEASE, StopReason, StormPhase, StormReport, StormRequest, StormStatus,
};
use mapchaos_api::{GoDuration, MapChaos, Verdict};

use crate::choice::{choose, run_seed, seed_from_uid, storm_id, target_count};
use crate::error::Error;
use crate::policy::RunGuard;
use crate::probes::{self, ProbeNeeds, ProbeResults};
use crate::selector::{self, CandidatePod};

/// How often running storms are polled and their leases renewed: a third
/// of the lease, so two renewals may fail before a storm stops itself.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(DEFAULT_LEASE.0.as_secs() / 3);
/// How soon to look again at storms sent but not yet confirmed.
pub const PENDING_POLL: Duration = Duration::from_secs(2);
/// How often to look again for pods when none can be stormed.
pub const NO_TARGETS_RETRY: Duration = Duration::from_secs(30);
/// How late a scheduled run may start: a time the schedule fired that could
/// not run within this (operator down, or `Forbid` waiting for the previous
/// run) is skipped, with an Event.
pub const SCHEDULE_DEADLINE: Duration = Duration::from_secs(300);
/// How soon to look again while a `Replace` waits for the old run to stop.
pub const REPLACE_POLL: Duration = Duration::from_secs(2);
/// A scheduled reconcile wakes this long after the time it fires, so the
/// time has surely passed.
const SCHEDULE_SLACK: Duration = Duration::from_millis(500);

/// The condition types, as `kubectl describe` shows them.
pub mod condition {
    pub const VALID: &str = "Valid";
    pub const SELECTED: &str = "Selected";
    pub const ALL_INJECTED: &str = "AllInjected";
    pub const ALL_RECOVERED: &str = "AllRecovered";
    pub const PAUSED: &str = "Paused";
    /// Some namespace the selector reaches gets no new storms (the
    /// guardrails: opt-in label, protection, existing keys forbidden).
    pub const NAMESPACES_ALLOWED: &str = "NamespacesAllowed";
    /// The last run that tried to start was within the blast-radius caps.
    pub const WITHIN_LIMITS: &str = "WithinLimits";
}

/// What became of one storm when the observe step asked its sidecar.
#[derive(Debug, Clone, PartialEq)]
pub enum StormObservation {
    /// The sidecar answered `GET /v1/storms/{id}`.
    Found(Box<StormStatus>),
    /// The sidecar answered 404: it has no storm with this id.
    NotFound,
    /// The sidecar did not answer (or not sensibly); the text says how.
    Unreachable(String),
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub experiment: &'a MapChaos,
    /// Every pod in [`namespaces_to_observe`], eligible or not.
    pub pods: &'a [CandidatePod],
    /// The storms of the current run's unfinished targets, by storm id; a
    /// target missing here counts as unreachable.
    pub storms: &'a BTreeMap<String, StormObservation>,
    pub now: Timestamp,
    /// The operator's cluster-wide kill switch is on.
    pub kill_switch: bool,
    /// What the guardrails refuse when a run starts.
    pub guard: &'a RunGuard,
    /// The steady-state probe attempts made for this reconcile.
    pub probes: &'a ProbeResults,
}

/// Where to reach a target's sidecar, and which pod it is (storm requests
/// are signed for that pod only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub pod: String,
    /// The pod's uid; empty when unknown.
    pub uid: String,
    pub ip: String,
}

impl Endpoint {
    /// The pod, as requests to its sidecar are signed for it.
    pub fn identity(&self) -> mapchaos_api::signing::PodIdentity {
        mapchaos_api::signing::PodIdentity::new(&self.namespace, &self.pod, &self.uid)
    }
}

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// An Event to record on the MapChaos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// CamelCase, bounded (see [`reason`]).
    pub reason: &'static str,
    pub message: String,
    /// The target pod the Event is about (the Event's `related` object), so
    /// each target's Events stay apart.
    pub pod: Option<PodRef>,
}

/// A pod, as an Event's related object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// Empty when unknown.
    pub uid: String,
}

/// The Event reasons.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SPEC_VALID: &str = "SpecValid";
    pub const NO_TARGETS: &str = "NoTargets";
    pub const RUN_STARTED: &str = "RunStarted";
    pub const DRY_RUN: &str = "DryRun";
    pub const STORM_STARTED: &str = "StormStarted";
    pub const STORM_COMPLETED: &str = "StormCompleted";
    pub const STORM_ABORTED: &str = "StormAborted";
    pub const STORM_FAILED: &str = "StormFailed";
    pub const TARGET_LOST: &str = "TargetLost";
    pub const SIDECAR_UNREACHABLE: &str = "SidecarUnreachable";
    pub const RUN_FINISHED: &str = "RunFinished";
    pub const SCHEDULE_SKIPPED: &str = "ScheduleSkipped";
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const DELETING: &str = "Deleting";
    pub const NAMESPACE_SKIPPED: &str = "NamespaceSkipped";
    pub const RUN_REFUSED: &str = "RunRefused";
    /// A steady-state probe failed (before: the run did not start).
    pub const PROBE_FAILED: &str = "ProbeFailed";
}

/// One thing the act step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put [`FINALIZER`] on the resource (before any storm starts).
    AddFinalizer,
    /// Take it off (deletion, after the storms were told to stop).
    RemoveFinalizer,
    /// `PUT /v1/storms/{id}` for a storm not yet confirmed.
    StartStorm {
        endpoint: Endpoint,
        id: String,
        request: Box<StormRequest>,
    },
    /// `PUT /v1/storms/{id}` again for a running storm: the sidecar renews
    /// its lease (the same request, so it is idempotent).
    RenewLease {
        endpoint: Endpoint,
        id: String,
        request: Box<StormRequest>,
    },
    /// `DELETE /v1/storms/{id}`: stop it and restore.
    StopStorm {
        endpoint: Endpoint,
        id: String,
    },
    Event(Event),
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status the resource should have (patched only when it differs).
    pub status: MapChaosStatus,
    pub actions: Vec<Action>,
    /// When to reconcile again without a watch event; `None` waits for one.
    pub requeue: Option<Duration>,
    /// Probes to run before this plan is final: the reconciler runs them
    /// and plans again with their attempts.
    pub probe_needs: ProbeNeeds,
}

impl Plan {
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.actions.iter().filter_map(|action| match action {
            Action::Event(event) => Some(event),
            _ => None,
        })
    }
}

/// The namespaces the observe step lists pods in: the selector's and those
/// of the current targets (a spec edit must not make them look deleted).
pub fn namespaces_to_observe(experiment: &MapChaos) -> Vec<String> {
    let own = experiment.metadata.namespace.as_deref().unwrap_or_default();
    let mut namespaces = selector::namespaces(&experiment.spec.selector, own);
    if let Some(status) = &experiment.status {
        namespaces.extend(status.targets.iter().map(|t| t.namespace.clone()));
    }
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// The storms the observe step asks about: the current run's unfinished
/// targets, as (endpoint, storm id).
pub fn storms_to_observe(experiment: &MapChaos) -> Vec<(Endpoint, String)> {
    let Some(status) = &experiment.status else {
        return Vec::new();
    };
    status
        .targets
        .iter()
        .filter(|t| !t.phase.is_final() && !t.ip.is_empty())
        .map(|t| (endpoint(t), t.storm_id.clone()))
        .collect()
}

fn endpoint(target: &TargetStatus) -> Endpoint {
    Endpoint {
        namespace: target.namespace.clone(),
        pod: target.pod.clone(),
        uid: target.pod_uid.clone(),
        ip: target.ip.clone(),
    }
}

/// Decide.
pub fn plan(input: &Observation<'_>) -> Result<Plan, Error> {
    let experiment = input.experiment;
    let metadata = &experiment.metadata;
    let uid = metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingMetadata("uid"))?;
    let namespace = metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let old = experiment.status.clone().unwrap_or_default();
    let mut planner = Planner {
        input,
        uid,
        namespace,
        generation: metadata.generation,
        now: Time(input.now),
        status: old.clone(),
        actions: Vec::new(),
        requeue: None,
        needs: ProbeNeeds::default(),
    };
    let has_finalizer = metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);

    if metadata.deletion_timestamp.is_some() {
        planner.clean_up(has_finalizer);
    } else if !has_finalizer {
        // Nothing else happens until the finalizer is on, so no storm can
        // ever run without one; adding it triggers the next reconcile.
        planner.actions.push(Action::AddFinalizer);
    } else {
        planner.reconcile();
    }
    Ok(Plan {
        status: planner.status,
        actions: planner.actions,
        requeue: planner.requeue,
        probe_needs: planner.needs,
    })
}

struct Planner<'a> {
    input: &'a Observation<'a>,
    uid: &'a str,
    namespace: &'a str,
    generation: Option<i64>,
    now: Time,
    status: MapChaosStatus,
    actions: Vec<Action>,
    requeue: Option<Duration>,
    needs: ProbeNeeds,
}

impl Planner<'_> {
    fn event(&mut self, kind: EventKind, reason: &'static str, message: impl Into<String>) {
        self.actions.push(Action::Event(Event {
            kind,
            reason,
            message: message.into(),
            pod: None,
        }));
    }

    /// Set a condition; `lastTransitionTime` moves only when its status
    /// does. Returns the previous status ("" when absent).
    fn condition(&mut self, kind: &str, status: &str, reason: &str, message: String) -> String {
        // Kubernetes 1.20's server-side apply turns an empty string into null, which the
        // CRD's `message: string` then rejects (the whole status patch fails): never send "".
        let message = if message.is_empty() {
            reason.to_owned()
        } else {
            message
        };
        let generation = self.generation;
        let now = self.now.clone();
        let conditions = &mut self.status.conditions;
        let fresh = Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        };
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(existing) => {
                let previous = existing.status.clone();
                let transition = if previous == status {
                    existing.last_transition_time.clone()
                } else {
                    fresh.last_transition_time.clone()
                };
                *existing = Condition {
                    last_transition_time: transition,
                    ..fresh
                };
                previous
            }
            None => {
                conditions.push(fresh);
                String::new()
            }
        }
    }

    fn condition_message(&self, kind: &str) -> Option<&str> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| c.message.as_str())
    }

    /// Deletion: tell every unfinished storm to stop (the sidecar restores
    /// on its own; an unreachable one stops at its lease), then let go.
    fn clean_up(&mut self, has_finalizer: bool) {
        let running: Vec<(Endpoint, String)> = self
            .status
            .targets
            .iter()
            .filter(|t| !t.phase.is_final() && !t.ip.is_empty())
            .map(|t| (endpoint(t), t.storm_id.clone()))
            .collect();
        if !has_finalizer {
            return;
        }
        if !running.is_empty() {
            self.event(
                EventKind::Normal,
                reason::DELETING,
                format!(
                    "stopping {} storm(s) and restoring before deletion",
                    running.len()
                ),
            );
        }
        for (endpoint, id) in running {
            self.actions.push(Action::StopStorm { endpoint, id });
        }
        self.actions.push(Action::RemoveFinalizer);
    }

    fn reconcile(&mut self) {
        let input = self.input;
        let spec = &input.experiment.spec;
        self.status.observed_generation = self.generation;
        let seed = spec
            .seed
            .or(self.status.seed)
            .unwrap_or_else(|| seed_from_uid(self.uid));
        self.status.seed = Some(seed);
        let annotation = |key: &str| {
            input
                .experiment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        self.status.created_by = annotation(CREATED_BY_ANNOTATION);
        self.status.updated_by = annotation(UPDATED_BY_ANNOTATION);

        let valid = self.validate();
        self.namespaces_condition();
        let paused = self.pause();
        let schedule = spec
            .schedule
            .as_deref()
            .filter(|_| valid)
            .and_then(|text| Schedule::parse(text).ok());
        let owed = schedule.as_ref().and_then(|s| self.owed_tick(s));
        let policy = spec.concurrency_policy;

        // Stop what must stop: everything on a pause; the running runs when
        // the schedule fired and they are to be replaced.
        let active = self.any_active();
        let probe_stop = self.during_probes();
        let stop = if paused.is_some() {
            Some(Stop::Pause)
        } else if owed.is_some() && active && policy == ConcurrencyPolicy::Replace {
            Some(Stop::Replace)
        } else if probe_stop {
            Some(Stop::Probe)
        } else {
            None
        };
        if active {
            // Remember a pause's stop now: the pause may be lifted before
            // the stopped storms are seen to end, and the run must still
            // run again.
            if stop == Some(Stop::Pause) && paused != Some(KILL_SWITCH) {
                self.status.interrupted = true;
            }
            self.observe_targets(stop);
        }
        self.finish_runs();

        // Start what may start.
        let active = self.any_active();
        match (owed, paused.is_some()) {
            (Some(tick), false) => self.take_tick(tick, active, policy, seed),
            // A pause skips the times it covers; they are not made up later.
            (Some(tick), true) => self.status.last_schedule_time = Some(Time(tick)),
            (None, _) => {}
        }
        let active = self.any_active();
        if valid && paused.is_none() && !active {
            if self.status.interrupted {
                self.start_run(seed, "resuming the run the pause stopped");
            } else if self.status.run == 0 && schedule.is_none() {
                self.start_run(seed, "");
            }
        }
        self.finish_runs();

        let active = self.any_active();
        let current = self.current_targets();
        self.status.summary = (self.status.run > 0).then(|| {
            let mut summary = summarise(&current);
            summary.verdict = self.probed_verdict(self.status.run, summary.verdict);
            summary
        });
        self.status.phase = if active {
            if paused.is_some() {
                ExperimentPhase::Paused
            } else {
                ExperimentPhase::Running
            }
        } else if paused.is_some() && (self.status.run == 0 || self.status.interrupted) {
            ExperimentPhase::Paused
        } else if self.status.run > 0 {
            run_phase(&current)
        } else if !valid {
            ExperimentPhase::Failed
        } else {
            ExperimentPhase::Pending
        };
        self.run_conditions();
        if active {
            self.requeue_within(RENEW_INTERVAL);
            if let Some(interval) = probes::during_interval(spec) {
                self.requeue_within(interval);
            }
        }
        if !self.needs.is_empty() {
            self.requeue_within(PENDING_POLL);
        }
        // A storm just sent is confirmed within moments: look again soon, so
        // the status does not say Pending for a whole renewal interval.
        if paused.is_none()
            && self
                .status
                .targets
                .iter()
                .any(|t| t.phase == TargetPhase::Pending)
        {
            self.requeue_within(PENDING_POLL);
        }
        self.status.next_schedule_time = None;
        if let Some(schedule) = &schedule
            && let Some(next) = schedule.next_after(input.now)
        {
            self.status.next_schedule_time = Some(Time(next));
            let wait = input.now.duration_until(next).unsigned_abs() + SCHEDULE_SLACK;
            self.requeue_within(wait);
        }
    }

    fn any_active(&self) -> bool {
        self.status.targets.iter().any(|t| !t.phase.is_final())
    }

    /// The targets of the newest run.
    fn current_targets(&self) -> Vec<TargetStatus> {
        let run = self.status.run;
        self.status
            .targets
            .iter()
            .filter(|t| run_of(t, run) == run)
            .cloned()
            .collect()
    }

    fn requeue_within(&mut self, wait: Duration) {
        self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
    }

    /// The time the schedule last fired, if this reconcile still owes it a
    /// run: after the last time dealt with (or the resource's creation) and
    /// not after now.
    fn owed_tick(&self, schedule: &Schedule) -> Option<Timestamp> {
        let metadata = &self.input.experiment.metadata;
        let since = self
            .status
            .last_schedule_time
            .as_ref()
            .or(metadata.creation_timestamp.as_ref())
            .map_or(self.input.now, |t| t.0);
        schedule.latest_between(since, self.input.now)
    }

    /// The schedule fired at `tick`: start a run, wait for the running one
    /// (`Forbid`, or `Replace` while its storms stop), or skip the time
    /// when it is too late.
    fn take_tick(&mut self, tick: Timestamp, active: bool, policy: ConcurrencyPolicy, seed: u64) {
        let at = Time(tick);
        if !active || policy == ConcurrencyPolicy::Allow {
            self.status.last_schedule_time = Some(at);
            self.start_run(seed, &format!("scheduled for {tick}"));
            return;
        }
        let late = tick.duration_until(self.input.now).unsigned_abs();
        if late > SCHEDULE_DEADLINE {
            self.status.last_schedule_time = Some(at);
            let why = match policy {
                ConcurrencyPolicy::Replace => "the running run's storms did not stop in time",
                _ => "the previous run was still going (concurrencyPolicy Forbid)",
            };
            self.event(
                EventKind::Warning,
                reason::SCHEDULE_SKIPPED,
                format!(
                    "skipped the run scheduled for {tick}: {why} for over {}",
                    GoDuration(SCHEDULE_DEADLINE)
                ),
            );
        } else if policy == ConcurrencyPolicy::Replace {
            self.requeue_within(REPLACE_POLL);
        }
    }

    fn validate(&mut self) -> bool {
        let verdict = self.input.experiment.spec.validate();
        let (status, reason, message) = match &verdict {
            Ok(()) => ("True", "SpecValid", String::new()),
            Err(invalid) => ("False", reason::INVALID_SPEC, invalid.to_string()),
        };
        let changed_message = self.condition_message(condition::VALID) != Some(message.as_str());
        let previous = self.condition(condition::VALID, status, reason, message.clone());
        match verdict {
            Err(_) if changed_message || previous != "False" => {
                self.event(EventKind::Warning, reason::INVALID_SPEC, message);
            }
            Ok(()) if previous == "False" => {
                self.event(
                    EventKind::Normal,
                    reason::SPEC_VALID,
                    "the spec is valid again",
                );
            }
            _ => {}
        }
        verdict.is_ok()
    }

    /// Why the experiment is paused, if it is.
    fn pause(&mut self) -> Option<&'static str> {
        let input = self.input;
        let experiment = input.experiment;
        let annotated = experiment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSE_ANNOTATION))
            .is_some_and(|v| v == "true");
        let why = if self.input.kill_switch {
            Some((KILL_SWITCH, "the operator's kill switch is on"))
        } else if experiment.spec.paused {
            Some(("SpecPaused", "spec.paused is true"))
        } else if annotated {
            Some(("PauseAnnotation", "annotated mapchaos.io/pause=true"))
        } else {
            None
        };
        let previous = match why {
            Some((why, message)) => self.condition(condition::PAUSED, "True", why, message.into()),
            None => self.condition(condition::PAUSED, "False", "NotPaused", String::new()),
        };
        match why {
            Some((_, message)) if previous != "True" => {
                self.event(
                    EventKind::Normal,
                    reason::PAUSED,
                    format!("paused: {message}; running storms are stopped"),
                );
            }
            None if previous == "True" => {
                self.event(EventKind::Normal, reason::RESUMED, "no longer paused");
            }
            _ => {}
        }
        why.map(|(why, _)| why)
    }

    fn storm_request(&self, seed: u64) -> StormRequest {
        let spec = &self.input.experiment.spec;
        StormRequest {
            storm: spec.storm.clone(),
            check: spec.check.clone(),
            abort: spec.abort.clone(),
            duration: spec.duration,
            seed,
            lease: DEFAULT_LEASE,
        }
    }

    /// Choose the targets of the next run and start it; `why` says what
    /// started it ("" for the first run of an unscheduled experiment).
    /// Pods an overlapping run is still storming are not chosen.
    fn start_run(&mut self, base_seed: u64, why: &str) {
        let input = self.input;
        let spec = &input.experiment.spec;
        let run = self.status.run + 1;
        let seed = run_seed(base_seed, run);
        let busy = |pod: &CandidatePod| {
            self.status
                .targets
                .iter()
                .any(|t| !t.phase.is_final() && t.namespace == pod.namespace && t.pod == pod.name)
        };
        // No new storm in a namespace the guardrails refuse; running ones
        // (earlier runs) go on.
        let refused = &input.guard.refused_namespaces;
        let (matching, skipped): (Vec<&CandidatePod>, Vec<&CandidatePod>) = input
            .pods
            .iter()
            .filter(|pod| selector::matches(&spec.selector, self.namespace, pod))
            .partition(|pod| !refused.contains_key(&pod.namespace));
        let eligible: Vec<&CandidatePod> = matching
            .iter()
            .copied()
            .filter(|pod| selector::ineligible(pod).is_none())
            .collect();
        let free: Vec<&CandidatePod> = eligible.iter().copied().filter(|p| !busy(p)).collect();
        let count = target_count(spec.mode, spec.value.as_deref(), free.len(), seed);
        if count == 0 {
            let message = if free.len() < eligible.len() {
                format!(
                    "all {} eligible pods are still being stormed by an earlier run",
                    eligible.len()
                )
            } else if matching.is_empty() && !skipped.is_empty() {
                format!(
                    "the {} matching pod(s) are all in namespaces the guardrails skip (see the \
                     NamespacesAllowed condition)",
                    skipped.len()
                )
            } else {
                no_targets_message(&matching)
            };
            let previous = self.condition(
                condition::SELECTED,
                "False",
                reason::NO_TARGETS,
                message.clone(),
            );
            if previous != "False" {
                self.event(EventKind::Warning, reason::NO_TARGETS, message);
            }
            self.requeue_within(NO_TARGETS_RETRY);
            return;
        }
        let chosen = choose(&free, count, seed);
        if !self.within_limits(&chosen) {
            return;
        }
        let dry_run = spec.dry_run;
        let mut probe_statuses = probes::fresh(spec);
        if !dry_run && !probes::in_stage(spec, ProbeStage::Before).is_empty() {
            let Some(attempts) = &input.probes.before else {
                // The reconciler makes the `before` attempts and plans again.
                self.needs.before = true;
                return;
            };
            let failed = probes::fold(
                &mut probe_statuses,
                spec,
                ProbeStage::Before,
                attempts,
                &self.now,
            );
            if !failed.is_empty() {
                self.refuse_run(run, probe_statuses, &failed);
                return;
            }
        }
        self.status.run = run;
        self.status.started_at = Some(self.now.clone());
        self.status.finished_at = None;
        self.status.interrupted = false;
        self.condition(
            condition::SELECTED,
            "True",
            "TargetsSelected",
            format!(
                "{count} of {} eligible pods ({} matching), mode {}",
                eligible.len(),
                matching.len(),
                mode_text(spec.mode, spec.value.as_deref())
            ),
        );
        let request = self.storm_request(seed);
        // Finished targets of earlier runs live on in `status.runs`.
        self.status.targets.retain(|t| !t.phase.is_final());
        let first_new = self.status.targets.len();
        self.status
            .targets
            .extend(chosen.iter().map(|pod| TargetStatus {
                pod: pod.name.clone(),
                namespace: pod.namespace.clone(),
                pod_uid: pod.uid.clone(),
                ip: pod.pod_ip.clone().unwrap_or_default(),
                run,
                storm_id: storm_id(self.uid, run, pod),
                phase: if dry_run {
                    TargetPhase::DryRun
                } else {
                    TargetPhase::Pending
                },
                message: if dry_run {
                    "dry run: not stormed".into()
                } else {
                    String::new()
                },
                ..TargetStatus::default()
            }));
        self.status.runs.push(RunRecord {
            run,
            started_at: Some(self.now.clone()),
            finished_at: None,
            phase: ExperimentPhase::Running,
            targets: count as u32,
            anomalies: 0,
            verdict: None,
            probes: probe_statuses,
        });
        let new = &self.status.targets[first_new..];
        let pods = new
            .iter()
            .map(|t| format!("{}/{}", t.namespace, t.pod))
            .collect::<Vec<_>>()
            .join(", ");
        if dry_run {
            self.event(
                EventKind::Normal,
                reason::DRY_RUN,
                format!("dry run: would storm {pods}"),
            );
            return;
        }
        let starts: Vec<Action> = new
            .iter()
            .map(|t| Action::StartStorm {
                endpoint: endpoint(t),
                id: t.storm_id.clone(),
                request: Box::new(request.clone()),
            })
            .collect();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        self.event(
            EventKind::Normal,
            reason::RUN_STARTED,
            format!(
                "run {run}{why}: storming {pods} for {} (seed {seed})",
                spec.duration
            ),
        );
        self.actions.extend(starts);
    }

    /// The guardrails' refused namespaces as the `NamespacesAllowed`
    /// condition (set once any was refused), with a `NamespaceSkipped` Event
    /// for each newly refused one.
    fn namespaces_condition(&mut self) {
        let refused: Vec<String> = self
            .input
            .guard
            .refused_namespaces
            .values()
            .cloned()
            .collect();
        let before = self
            .condition_message(condition::NAMESPACES_ALLOWED)
            .map(str::to_owned);
        if refused.is_empty() {
            if before.is_some() {
                self.condition(
                    condition::NAMESPACES_ALLOWED,
                    "True",
                    "NamespacesAllowed",
                    "every namespace the selector reaches allows storms".into(),
                );
            }
            return;
        }
        let previous = self.condition(
            condition::NAMESPACES_ALLOWED,
            "False",
            "NamespacesSkipped",
            refused.join("; "),
        );
        for why in refused {
            let known = previous == "False"
                && before
                    .as_deref()
                    .is_some_and(|m| m.split("; ").any(|part| part == why));
            if !known {
                self.event(
                    EventKind::Warning,
                    reason::NAMESPACE_SKIPPED,
                    format!("no new storms there: {why}"),
                );
            }
        }
    }

    /// Whether a run of `chosen` is within the blast-radius caps; when not,
    /// the `WithinLimits` condition and a `RunRefused` Event say why, and
    /// the run is tried again later.
    fn within_limits(&mut self, chosen: &[&CandidatePod]) -> bool {
        let input = self.input;
        match input
            .guard
            .run_refusal(chosen, input.pods, &self.status.targets)
        {
            Some(why) => {
                let same = self.condition_message(condition::WITHIN_LIMITS) == Some(why.as_str());
                let previous =
                    self.condition(condition::WITHIN_LIMITS, "False", "OverLimit", why.clone());
                if previous != "False" || !same {
                    self.event(
                        EventKind::Warning,
                        reason::RUN_REFUSED,
                        format!("run not started: {why}"),
                    );
                }
                self.requeue_within(NO_TARGETS_RETRY);
                false
            }
            None => {
                if self.condition_message(condition::WITHIN_LIMITS).is_some() {
                    self.condition(
                        condition::WITHIN_LIMITS,
                        "True",
                        "WithinLimits",
                        "the run is within the blast-radius caps".into(),
                    );
                }
                true
            }
        }
    }

    /// Fold the observations into the unfinished targets and decide what
    /// each needs next.
    fn observe_targets(&mut self, stop: Option<Stop>) {
        let lease_secs = DEFAULT_LEASE.0.as_secs() as i64;
        let now = self.input.now;
        let current_run = self.status.run;
        let seed = self.status.seed.unwrap_or_default();
        let requests: BTreeMap<u32, StormRequest> = self
            .status
            .targets
            .iter()
            .map(|t| run_of(t, current_run))
            .map(|run| (run, self.storm_request(run_seed(seed, run))))
            .collect();
        let started: BTreeMap<u32, Time> = self
            .status
            .runs
            .iter()
            .filter_map(|r| Some((r.run, r.started_at.clone()?)))
            .chain(self.status.started_at.clone().map(|at| (current_run, at)))
            .collect();
        let mut events = Vec::new();
        let mut actions = Vec::new();
        for target in self
            .status
            .targets
            .iter_mut()
            .filter(|t| !t.phase.is_final())
        {
            let before = target.phase;
            let pod = self
                .input
                .pods
                .iter()
                .find(|p| p.namespace == target.namespace && p.name == target.pod);
            match pod {
                None => {
                    target.phase = TargetPhase::PodGone;
                    target.message = "the pod was deleted".into();
                }
                Some(pod) if !target.pod_uid.is_empty() && pod.uid != target.pod_uid => {
                    target.phase = TargetPhase::PodGone;
                    target.message = "the pod was replaced by a new one of the same name".into();
                }
                // A pod being deleted: a storm that already ran to its end
                // keeps its result; one that ends now ends because the pod
                // goes (the sidecar stops it on SIGTERM).
                Some(pod) if pod.terminating => {
                    let observation = self.input.storms.get(&target.storm_id);
                    apply_observation(target, observation, 0, lease_secs, stop, &self.now);
                    if target.phase != TargetPhase::Completed {
                        target.phase = TargetPhase::PodGone;
                        target.message = "the pod is being deleted; its storm stopped".into();
                    }
                }
                Some(_) => {
                    let observation = self.input.storms.get(&target.storm_id);
                    let since = target
                        .last_seen
                        .as_ref()
                        .or(started.get(&run_of(target, current_run)));
                    let silent_secs = since.map_or(i64::MAX, |t| now.as_second() - t.0.as_second());
                    apply_observation(
                        target,
                        observation,
                        silent_secs,
                        lease_secs,
                        stop,
                        &self.now,
                    );
                }
            }
            if target.phase != before {
                events.push(transition_event(target, before));
            }
            if target.phase.is_final() {
                continue;
            }
            let endpoint = endpoint(target);
            let id = target.storm_id.clone();
            let request = Box::new(requests[&run_of(target, current_run)].clone());
            actions.push(if stop.is_some() {
                Action::StopStorm { endpoint, id }
            } else if target.phase == TargetPhase::Pending {
                Action::StartStorm {
                    endpoint,
                    id,
                    request,
                }
            } else {
                Action::RenewLease {
                    endpoint,
                    id,
                    request,
                }
            });
        }
        self.actions
            .extend(events.into_iter().flatten().map(Action::Event));
        self.actions.extend(actions);
    }

    /// Record every run whose targets are all final and is not recorded
    /// as finished yet, and let go of older runs' finished targets.
    fn finish_runs(&mut self) {
        let current = self.status.run;
        let mut runs: Vec<u32> = self
            .status
            .targets
            .iter()
            .map(|t| run_of(t, current))
            .collect();
        runs.sort_unstable();
        runs.dedup();
        for run in runs {
            let targets: Vec<TargetStatus> = self
                .status
                .targets
                .iter()
                .filter(|t| run_of(t, current) == run)
                .cloned()
                .collect();
            let recorded = self
                .status
                .runs
                .iter()
                .find(|r| r.run == run)
                .map_or(run == current && self.status.finished_at.is_some(), |r| {
                    r.finished_at.is_some()
                });
            if !recorded && targets.iter().all(|t| t.phase.is_final()) && self.after_probes(run) {
                self.finish_run(run, &targets);
            }
        }
        let current = self.status.run;
        self.status
            .targets
            .retain(|t| run_of(t, current) == current || !t.phase.is_final());
    }

    fn finish_run(&mut self, run: u32, targets: &[TargetStatus]) {
        let now = self.now.clone();
        let phase = run_phase(targets);
        let summary = summarise(targets);
        if run == self.status.run {
            self.status.finished_at = Some(now.clone());
            // A spec or annotation pause stopped it (the flag was set when
            // the stop went out): it runs again on resume, unless every
            // storm ran to its end anyway.
            self.status.interrupted =
                self.status.interrupted && targets.iter().any(|t| t.phase == TargetPhase::Aborted);
        }
        let index = match self.status.runs.iter().position(|r| r.run == run) {
            Some(index) => index,
            None => {
                self.status.runs.push(RunRecord {
                    run,
                    started_at: (run == self.status.run)
                        .then(|| self.status.started_at.clone())
                        .flatten(),
                    finished_at: None,
                    phase,
                    targets: 0,
                    anomalies: 0,
                    verdict: None,
                    probes: Vec::new(),
                });
                self.status.runs.sort_by_key(|r| r.run);
                self.status
                    .runs
                    .iter()
                    .position(|r| r.run == run)
                    .expect("just pushed")
            }
        };
        let record = &mut self.status.runs[index];
        record.finished_at = Some(now);
        record.phase = phase;
        record.targets = summary.targets;
        record.anomalies = summary.total_anomalies;
        record.probes.iter_mut().for_each(ProbeStatus::finish);
        record.verdict = combined_verdict(summary.verdict, &record.probes);
        let verdict = record.verdict;
        let failed_probes = failed_names(&record.probes).join(", ");
        self.trim_runs();
        if self.input.experiment.spec.dry_run {
            return;
        }
        let kind = if phase == ExperimentPhase::Completed && verdict != Some(Verdict::Fail) {
            EventKind::Normal
        } else {
            EventKind::Warning
        };
        let probes = if failed_probes.is_empty() {
            String::new()
        } else {
            format!(" (failed probes: {failed_probes})")
        };
        // A failed run names its first evidence, so the Event alone tells
        // which key broke and how.
        let evidence = targets
            .iter()
            .find_map(|t| t.first_anomaly.as_ref().map(|a| (t, a)))
            .filter(|_| summary.verdict == Some(Verdict::Fail))
            .map_or_else(String::new, |(t, a)| {
                format!("; first anomaly, on pod {}/{}: {a}", t.namespace, t.pod)
            });
        // A run that proved nothing says why, in the first such target's words.
        let unproven = targets
            .iter()
            .find(|t| t.verdict == Some(Verdict::Inconclusive))
            .and_then(|t| t.verdict_reason.as_ref().map(|why| (t, why)))
            .filter(|_| summary.verdict == Some(Verdict::Inconclusive))
            .map_or_else(String::new, |(t, why)| {
                format!("; inconclusive on pod {}/{}: {why}", t.namespace, t.pod)
            });
        self.event(
            kind,
            reason::RUN_FINISHED,
            format!(
                "run {run} {phase:?}: {} ops, {} exposures, {} keys with anomalies, verdict {}{probes}{evidence}{unproven}",
                summary.ops,
                summary.total_exposures,
                summary.total_anomalies,
                verdict.map_or_else(|| "none".to_owned(), |v| format!("{v:?}")),
            ),
        );
    }

    /// Keep the newest `historyLimit` finished runs, and every running one.
    fn trim_runs(&mut self) {
        let limit = self.input.experiment.spec.history_limit.max(1) as usize;
        let mut finished = self
            .status
            .runs
            .iter()
            .filter(|r| r.finished_at.is_some())
            .count();
        self.status.runs.retain(|r| {
            if r.finished_at.is_some() && finished > limit {
                finished -= 1;
                false
            } else {
                true
            }
        });
    }

    /// A run whose `before` probe failed: recorded as Failed with verdict
    /// Fail and no targets; no storm starts.
    fn refuse_run(&mut self, run: u32, probes: Vec<ProbeStatus>, failed: &[(String, String)]) {
        self.status.run = run;
        self.status.started_at = Some(self.now.clone());
        self.status.finished_at = Some(self.now.clone());
        self.status.interrupted = false;
        self.status.targets.retain(|t| !t.phase.is_final());
        let verdict = combined_verdict(None, &probes);
        self.status.runs.push(RunRecord {
            run,
            started_at: Some(self.now.clone()),
            finished_at: Some(self.now.clone()),
            phase: ExperimentPhase::Failed,
            targets: 0,
            anomalies: 0,
            verdict,
            probes,
        });
        self.trim_runs();
        for (name, message) in failed {
            self.event(
                EventKind::Warning,
                reason::PROBE_FAILED,
                format!("run {run} not started: probe {name} failed before the storms ({message})"),
            );
        }
    }

    /// Fold this reconcile's `during` attempts into the runs still going,
    /// with a `ProbeFailed` Event for each probe that fails now; whether a
    /// failed `stopOnFailure` probe stops the storms.
    fn during_probes(&mut self) -> bool {
        let spec = &self.input.experiment.spec;
        let mut events = Vec::new();
        for ((run, name), attempt) in &self.input.probes.during {
            let Some(record) = self
                .status
                .runs
                .iter_mut()
                .find(|r| r.run == *run && r.finished_at.is_none())
            else {
                continue;
            };
            let attempts = BTreeMap::from([(name.clone(), vec![attempt.clone()])]);
            for (name, message) in probes::fold(
                &mut record.probes,
                spec,
                ProbeStage::During,
                &attempts,
                &self.now,
            ) {
                let stops = spec
                    .probes
                    .iter()
                    .any(|p| p.name == name && p.stop_on_failure);
                events.push(format!(
                    "run {run}: probe {name} failed during the storms ({message}){}",
                    if stops {
                        "; stopping the storms (stopOnFailure)"
                    } else {
                        ""
                    }
                ));
            }
        }
        for message in events {
            self.event(EventKind::Warning, reason::PROBE_FAILED, message);
        }
        let status = &self.status;
        status
            .runs
            .iter()
            .filter(|r| r.finished_at.is_none())
            .any(|r| {
                let storming = status
                    .targets
                    .iter()
                    .any(|t| run_of(t, status.run) == r.run && !t.phase.is_final());
                storming && probes::stops_storms(spec, &r.probes).is_some()
            })
    }

    /// Whether run `run` may finish: it has no `after` probes, or their
    /// attempts are here (folded in now); otherwise the reconciler is asked
    /// to make them.
    fn after_probes(&mut self, run: u32) -> bool {
        let spec = &self.input.experiment.spec;
        if spec.dry_run || probes::in_stage(spec, ProbeStage::After).is_empty() {
            return true;
        }
        let Some(record) = self.status.runs.iter_mut().find(|r| r.run == run) else {
            return true;
        };
        let Some(attempts) = self.input.probes.after.get(&run) else {
            if !self.needs.after.contains(&run) {
                self.needs.after.push(run);
            }
            return false;
        };
        let failed = probes::fold(
            &mut record.probes,
            spec,
            ProbeStage::After,
            attempts,
            &self.now,
        );
        for (name, message) in failed {
            self.event(
                EventKind::Warning,
                reason::PROBE_FAILED,
                format!("run {run}: probe {name} failed after the storms ({message})"),
            );
        }
        true
    }

    /// A run's verdict with its probes': combined once the run finished.
    fn probed_verdict(&self, run: u32, map: Option<Verdict>) -> Option<Verdict> {
        match self.status.runs.iter().find(|r| r.run == run) {
            Some(record) if record.finished_at.is_some() => combined_verdict(map, &record.probes),
            _ => map,
        }
    }

    fn run_conditions(&mut self) {
        if self.status.run == 0 {
            return;
        }
        let targets = &self.status.targets.clone();
        let total = targets.len();
        if self.input.experiment.spec.dry_run {
            self.condition(
                condition::ALL_INJECTED,
                "False",
                "DryRun",
                "dry run: nothing injected".into(),
            );
            self.condition(
                condition::ALL_RECOVERED,
                "True",
                "DryRun",
                "dry run: nothing to recover".into(),
            );
            return;
        }
        let injected = targets.iter().filter(|t| t.last_seen.is_some()).count();
        let finished = targets.iter().all(|t| t.phase.is_final());
        let injected_condition = if injected == total {
            (
                "True",
                "AllInjected",
                format!("{total} of {total} storms confirmed"),
            )
        } else if finished {
            (
                "False",
                "NotInjected",
                format!(
                    "{} of {total} storms never started: {}",
                    total - injected,
                    pods_where(targets, |t| t.last_seen.is_none())
                ),
            )
        } else {
            (
                "False",
                "Injecting",
                format!("{injected} of {total} storms confirmed"),
            )
        };
        let (status, why, message) = injected_condition;
        self.condition(condition::ALL_INJECTED, status, why, message);

        let unconfirmed = |t: &TargetStatus| {
            !matches!(t.phase, TargetPhase::Completed | TargetPhase::Aborted)
                && t.last_seen.is_some()
        };
        let recovered = if !finished {
            (
                "False",
                "StormsRunning",
                "storms are still running or restoring".to_owned(),
            )
        } else if targets.iter().any(unconfirmed) {
            (
                "False",
                "RecoveryUnconfirmed",
                format!(
                    "cannot confirm the storm ended and restored on: {}",
                    pods_where(targets, unconfirmed)
                ),
            )
        } else {
            (
                "True",
                "StormsEnded",
                "every started storm ended and restored".to_owned(),
            )
        };
        let (status, why, message) = recovered;
        self.condition(condition::ALL_RECOVERED, status, why, message);
    }
}

/// Why running storms are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Pause,
    /// The schedule fired with `concurrencyPolicy: Replace`.
    Replace,
    /// A `stopOnFailure` probe failed while the storms ran.
    Probe,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::Pause => "paused",
            Stop::Replace => "replaced by the next scheduled run",
            Stop::Probe => "stopped by a failed stopOnFailure probe",
        }
    }
}

/// The pause reason of the operator's kill switch, whose stop is final.
const KILL_SWITCH: &str = "KillSwitch";

/// The run a target belongs to; statuses written before targets carried
/// their run belong to the current one.
fn run_of(target: &TargetStatus, current: u32) -> u32 {
    if target.run == 0 { current } else { target.run }
}

/// Update one target from what its sidecar said.
fn apply_observation(
    target: &mut TargetStatus,
    observation: Option<&StormObservation>,
    silent_secs: i64,
    lease_secs: i64,
    stop: Option<Stop>,
    now: &Time,
) {
    match observation {
        Some(StormObservation::Found(storm)) => {
            target.last_seen = Some(now.clone());
            target.storm_phase = Some(storm.phase);
            target.ops = storm.ops;
            target.errors = storm.errors;
            target.message = storm.message.clone();
            target.phase = match storm.phase {
                _ if !storm_settled(storm) => TargetPhase::Running,
                StormPhase::Completed => TargetPhase::Completed,
                StormPhase::Aborted => TargetPhase::Aborted,
                StormPhase::Failed => TargetPhase::Failed,
                _ => TargetPhase::Running,
            };
            if let Some(report) = &storm.report {
                target.ops = report.ops;
                target.errors = report.errors;
                target.verdict = Some(storm_verdict(report));
                target.verdict_reason = (!report.verdict_reason.is_empty())
                    .then(|| one_line(&report.verdict_reason, STATUS_LINE_BYTES));
                target.latency = Some(LatencyMicros {
                    p50: report.latency.p50_micros,
                    p99: report.latency.p99_micros,
                    p999: report.latency.p999_micros,
                    max: report.latency.max_micros,
                });
                target.deletes = report.deletes.clone();
                if let Some(check) = &report.check {
                    target.exposures = check.total_exposures();
                    target.anomalies = check.total_anomalies();
                    target.exposure_kinds =
                        nonzero(check.exposures.iter().map(|(k, n)| (k.as_str(), *n)));
                    target.anomaly_kinds =
                        nonzero(check.anomalies.iter().map(|(k, n)| (k.as_str(), *n)));
                    target.first_anomaly = check.witnesses.first().map(first_anomaly);
                }
            }
        }
        Some(StormObservation::NotFound) if target.phase == TargetPhase::Running => {
            target.phase = TargetPhase::Failed;
            target.message = "the sidecar no longer knows this storm (was it restarted?)".into();
        }
        Some(StormObservation::NotFound) if let Some(stop) = stop => {
            target.phase = TargetPhase::Aborted;
            target.message = format!("{} before the storm started", stop.as_str());
        }
        Some(StormObservation::NotFound) if silent_secs > lease_secs => {
            target.phase = TargetPhase::Failed;
            target.message = format!(
                "the sidecar did not start the storm within {lease_secs}s (busy with another \
                 storm, or refusing it: see the Events)"
            );
        }
        Some(StormObservation::NotFound) => {
            target.message = "waiting for the sidecar to start the storm".into();
        }
        Some(StormObservation::Unreachable(why)) if silent_secs > lease_secs => {
            target.phase = TargetPhase::Unreachable;
            target.message = format!(
                "the sidecar has not answered for over {lease_secs}s, so the storm has stopped \
                 itself; its result is unknown: {why}"
            );
        }
        Some(StormObservation::Unreachable(why)) => {
            target.message = format!("the sidecar is not answering: {why}");
        }
        None if silent_secs > lease_secs => {
            target.phase = TargetPhase::Unreachable;
            target.message = format!(
                "the sidecar could not be asked for over {lease_secs}s; the storm has stopped \
                 itself and its result is unknown"
            );
        }
        None => {}
    }
}

/// Whether a storm's status is its last word: a final phase counts only with
/// its report, or for `Failed`, the reason, so a status caught between the
/// two (as early sidecars could show) is never summarised as empty.
pub fn storm_settled(storm: &StormStatus) -> bool {
    match storm.phase {
        StormPhase::Completed | StormPhase::Aborted => storm.report.is_some(),
        StormPhase::Failed => storm.report.is_some() || !storm.message.is_empty(),
        _ => false,
    }
}

/// Most of a status field a sentence of the report may take (a first
/// anomaly, a verdict's reason): keys can be long.
const STATUS_LINE_BYTES: usize = 512;

/// A witness in one line: kind, key and sentence, cut on a character
/// boundary at [`STATUS_LINE_BYTES`].
fn first_anomaly(witness: &mapchaos_api::Witness) -> String {
    one_line(
        &format!(
            "{} on key \"{}\": {}",
            witness.kind, witness.key, witness.explanation
        ),
        STATUS_LINE_BYTES,
    )
}

/// `text` on one line, cut on a character boundary to at most `bytes`
/// (with an ellipsis when cut).
fn one_line(text: &str, bytes: usize) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > bytes {
        let mut cut = bytes - '…'.len_utf8();
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// A storm's verdict as the status shows it. A storm an abort condition
/// stopped is never a pass, even as an older sidecar (one that judged only
/// its check) reports it; anomalies still fail it.
fn storm_verdict(report: &StormReport) -> Verdict {
    match (&report.stop_reason, report.verdict) {
        (_, Verdict::Fail) => Verdict::Fail,
        (StopReason::AbortCondition(_), _) => Verdict::Aborted,
        (_, verdict) => verdict,
    }
}

fn nonzero<'k>(counts: impl Iterator<Item = (&'k str, u64)>) -> BTreeMap<String, u64> {
    counts
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
}

/// The Event for a target that changed phase, if the change is news.
fn transition_event(target: &TargetStatus, before: TargetPhase) -> Option<Event> {
    let pod = format!("{}/{}", target.namespace, target.pod);
    let detail = |t: &TargetStatus| {
        if t.message.is_empty() {
            String::new()
        } else {
            format!(": {}", t.message)
        }
    };
    let (kind, reason, message) = match target.phase {
        TargetPhase::Running if before == TargetPhase::Pending => (
            EventKind::Normal,
            reason::STORM_STARTED,
            format!("{pod}: storm {} running", target.storm_id),
        ),
        TargetPhase::Completed => (
            if target.anomalies > 0 {
                EventKind::Warning
            } else {
                EventKind::Normal
            },
            reason::STORM_COMPLETED,
            format!(
                "{pod}: {} ops, {} exposures, {} keys with anomalies, verdict {}",
                target.ops,
                target.exposures,
                target.anomalies,
                target
                    .verdict
                    .map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
            ),
        ),
        TargetPhase::Aborted => (
            EventKind::Warning,
            reason::STORM_ABORTED,
            format!("{pod}: storm stopped early{}", detail(target)),
        ),
        TargetPhase::Failed => (
            EventKind::Warning,
            reason::STORM_FAILED,
            format!("{pod}: storm failed{}", detail(target)),
        ),
        TargetPhase::PodGone => (
            EventKind::Warning,
            reason::TARGET_LOST,
            format!("{pod}{}", detail(target)),
        ),
        TargetPhase::Unreachable => (
            EventKind::Warning,
            reason::SIDECAR_UNREACHABLE,
            format!("{pod}{}", detail(target)),
        ),
        TargetPhase::Pending | TargetPhase::Running | TargetPhase::DryRun => return None,
    };
    Some(Event {
        kind,
        reason,
        message,
        pod: Some(PodRef {
            namespace: target.namespace.clone(),
            name: target.pod.clone(),
            uid: target.pod_uid.clone(),
        }),
    })
}

/// How a finished run ended: Aborted if any storm stopped early, Completed
/// if any ran to its end (lost targets show in the targets and conditions),
/// Failed if none did.
fn run_phase(targets: &[TargetStatus]) -> ExperimentPhase {
    if targets.iter().any(|t| t.phase == TargetPhase::Aborted) {
        ExperimentPhase::Aborted
    } else if targets
        .iter()
        .any(|t| matches!(t.phase, TargetPhase::Completed | TargetPhase::DryRun))
    {
        ExperimentPhase::Completed
    } else {
        ExperimentPhase::Failed
    }
}

/// The run's results across targets. Latency percentiles are the worst
/// target's: percentiles of different pods cannot be merged exactly.
pub fn summarise(targets: &[TargetStatus]) -> Summary {
    let mut summary = Summary {
        targets: targets.len() as u32,
        injected: targets.iter().filter(|t| t.last_seen.is_some()).count() as u32,
        finished: targets.iter().filter(|t| t.phase.is_final()).count() as u32,
        ..Summary::default()
    };
    for target in targets {
        summary.ops += target.ops;
        summary.errors += target.errors;
        summary.total_exposures += target.exposures;
        summary.total_anomalies += target.anomalies;
        for (kind, n) in &target.exposure_kinds {
            *summary.exposures.entry(kind.clone()).or_default() += n;
        }
        for (kind, n) in &target.anomaly_kinds {
            *summary.anomalies.entry(kind.clone()).or_default() += n;
        }
        if let Some(deletes) = &target.deletes {
            summary.deletes.get_or_insert_default().add(deletes);
        }
        if let Some(latency) = target.latency {
            let worst = summary.latency.get_or_insert_default();
            worst.p50 = worst.p50.max(latency.p50);
            worst.p99 = worst.p99.max(latency.p99);
            worst.p999 = worst.p999.max(latency.p999);
            worst.max = worst.max.max(latency.max);
        }
    }
    summary.p99 = summary
        .latency
        .map(|l| GoDuration(Duration::from_micros(l.p99)).to_string());
    let verdicts: Vec<Verdict> = targets.iter().filter_map(|t| t.verdict).collect();
    let all_final = targets.iter().all(|t| t.phase.is_final());
    summary.verdict = if verdicts.contains(&Verdict::Fail) {
        Some(Verdict::Fail)
    } else if !all_final || targets.iter().all(|t| t.phase == TargetPhase::DryRun) {
        None
    } else if verdicts.contains(&Verdict::Aborted) {
        Some(Verdict::Aborted)
    } else if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::Pass) {
        Some(Verdict::Pass)
    } else {
        Some(Verdict::Inconclusive)
    };
    summary
}

fn pods_where(targets: &[TargetStatus], pick: impl Fn(&TargetStatus) -> bool) -> String {
    targets
        .iter()
        .filter(|t| pick(t))
        .map(|t| format!("{}/{}", t.namespace, t.pod))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_text(mode: mapchaos_api::spec::SelectionMode, value: Option<&str>) -> String {
    let name = serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match value {
        Some(value) => format!("{name} {value}"),
        None => name,
    }
}

/// Why nothing can be stormed, naming the first few matching pods' reasons.
fn no_targets_message(matching: &[&CandidatePod]) -> String {
    if matching.is_empty() {
        return "no pod matches the selector".into();
    }
    let reasons: Vec<String> = matching
        .iter()
        .take(5)
        .filter_map(|pod| selector::ineligible(pod).map(|why| format!("{} {why}", pod.name)))
        .collect();
    format!(
        "{} pod(s) match the selector but none is Running, Ready and carrying the mapchaos \
         sidecar ({})",
        matching.len(),
        reasons.join("; ")
    )
}

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;
