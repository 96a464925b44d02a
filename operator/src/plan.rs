//! The reconciler's pure step: from a MapChaos and what was observed of its
//! pods and storms, the status it should have and the actions that get it
//! there. No I/O and no clock: time and the kill switch come in as inputs,
//! so every decision is unit-tested here.
//!
//! A run's life: the finalizer goes on first; then the targets are chosen
//! (seeded) and fixed for the run, each gets a storm (`PUT`, retried with
//! the same id until the sidecar confirms it), leases are renewed while
//! storms run, and the run finishes when every target is final. A pause
//! (spec, annotation or kill switch) stops running storms; deletion stops
//! them and removes the finalizer. A spec change does not touch a run in
//! progress: targets and storm requests are fixed when the run starts.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use mapchaos_api::resource::{
    ExperimentPhase, FINALIZER, LatencyMicros, MapChaosStatus, PAUSE_ANNOTATION, RunRecord,
    Summary, TargetPhase, TargetStatus,
};
use mapchaos_api::storm::{DEFAULT_LEASE, StormPhase, StormRequest, StormStatus};
use mapchaos_api::{GoDuration, MapChaos, Verdict};

use crate::choice::{choose, seed_from_uid, storm_id, target_count};
use crate::error::Error;
use crate::selector::{self, CandidatePod};

/// How often running storms are polled and their leases renewed: a third
/// of the lease, so two renewals may fail before a storm stops itself.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(DEFAULT_LEASE.0.as_secs() / 3);
/// How often to look again for pods when none can be stormed.
pub const NO_TARGETS_RETRY: Duration = Duration::from_secs(30);
/// Finished runs kept in `status.runs`.
pub const RUNS_KEPT: usize = 10;

/// The condition types, as `kubectl describe` shows them.
pub mod condition {
    pub const VALID: &str = "Valid";
    pub const SELECTED: &str = "Selected";
    pub const ALL_INJECTED: &str = "AllInjected";
    pub const ALL_RECOVERED: &str = "AllRecovered";
    pub const PAUSED: &str = "Paused";
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
}

/// Where to reach a target's sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
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
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const DELETING: &str = "Deleting";
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
}

impl Planner<'_> {
    fn event(&mut self, kind: EventKind, reason: &'static str, message: impl Into<String>) {
        self.actions.push(Action::Event(Event {
            kind,
            reason,
            message: message.into(),
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

        let valid = self.validate();
        let paused = self.pause();
        let active = self.status.targets.iter().any(|t| !t.phase.is_final());

        if active {
            self.observe_targets(paused.is_some());
        } else if self.status.run == 0 && valid && paused.is_none() {
            self.start_run(seed);
        }
        if self.status.run > 0
            && self.status.finished_at.is_none()
            && self.status.targets.iter().all(|t| t.phase.is_final())
        {
            self.finish_run();
        }

        let active = self.status.targets.iter().any(|t| !t.phase.is_final());
        self.status.summary = (self.status.run > 0).then(|| summarise(&self.status.targets));
        self.status.phase = if active {
            if paused.is_some() {
                ExperimentPhase::Paused
            } else {
                ExperimentPhase::Running
            }
        } else if self.status.run > 0 {
            run_phase(&self.status.targets)
        } else if !valid {
            ExperimentPhase::Failed
        } else if paused.is_some() {
            ExperimentPhase::Paused
        } else {
            ExperimentPhase::Pending
        };
        self.run_conditions();
        if active {
            self.requeue = Some(RENEW_INTERVAL);
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
            Some(("KillSwitch", "the operator's kill switch is on"))
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

    /// Choose the targets and start run 1.
    fn start_run(&mut self, seed: u64) {
        let input = self.input;
        let spec = &input.experiment.spec;
        let matching: Vec<&CandidatePod> = input
            .pods
            .iter()
            .filter(|pod| selector::matches(&spec.selector, self.namespace, pod))
            .collect();
        let eligible: Vec<&CandidatePod> = matching
            .iter()
            .copied()
            .filter(|pod| selector::ineligible(pod).is_none())
            .collect();
        let count = target_count(spec.mode, spec.value.as_deref(), eligible.len(), seed);
        if count == 0 {
            let message = no_targets_message(&matching);
            let previous = self.condition(
                condition::SELECTED,
                "False",
                reason::NO_TARGETS,
                message.clone(),
            );
            if previous != "False" {
                self.event(EventKind::Warning, reason::NO_TARGETS, message);
            }
            self.requeue = Some(NO_TARGETS_RETRY);
            return;
        }
        let chosen = choose(&eligible, count, seed);
        let run = 1;
        self.status.run = run;
        self.status.started_at = Some(self.now.clone());
        self.status.finished_at = None;
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
        let dry_run = spec.dry_run;
        let request = self.storm_request(seed);
        self.status.targets = chosen
            .iter()
            .map(|pod| TargetStatus {
                pod: pod.name.clone(),
                namespace: pod.namespace.clone(),
                pod_uid: pod.uid.clone(),
                ip: pod.pod_ip.clone().unwrap_or_default(),
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
            })
            .collect();
        let pods = self
            .status
            .targets
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
        self.event(
            EventKind::Normal,
            reason::RUN_STARTED,
            format!(
                "run {run}: storming {pods} for {} (seed {seed})",
                spec.duration
            ),
        );
        let starts: Vec<Action> = self
            .status
            .targets
            .iter()
            .map(|t| Action::StartStorm {
                endpoint: endpoint(t),
                id: t.storm_id.clone(),
                request: Box::new(request.clone()),
            })
            .collect();
        self.actions.extend(starts);
    }

    /// Fold the observations into the unfinished targets and decide what
    /// each needs next.
    fn observe_targets(&mut self, paused: bool) {
        let lease_secs = DEFAULT_LEASE.0.as_secs() as i64;
        let now = self.input.now;
        let started = self.status.started_at.clone();
        let seed = self.status.seed.unwrap_or_default();
        let request = self.storm_request(seed);
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
                Some(_) => {
                    let observation = self.input.storms.get(&target.storm_id);
                    let since = target.last_seen.as_ref().or(started.as_ref());
                    let silent_secs = since.map_or(i64::MAX, |t| now.as_second() - t.0.as_second());
                    apply_observation(
                        target,
                        observation,
                        silent_secs,
                        lease_secs,
                        paused,
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
            actions.push(if paused {
                Action::StopStorm { endpoint, id }
            } else if target.phase == TargetPhase::Pending {
                Action::StartStorm {
                    endpoint,
                    id,
                    request: Box::new(request.clone()),
                }
            } else {
                Action::RenewLease {
                    endpoint,
                    id,
                    request: Box::new(request.clone()),
                }
            });
        }
        self.actions
            .extend(events.into_iter().flatten().map(Action::Event));
        self.actions.extend(actions);
    }

    fn finish_run(&mut self) {
        self.status.finished_at = Some(self.now.clone());
        let phase = run_phase(&self.status.targets);
        let summary = summarise(&self.status.targets);
        self.status.runs.push(RunRecord {
            run: self.status.run,
            started_at: self.status.started_at.clone(),
            finished_at: self.status.finished_at.clone(),
            phase,
            targets: summary.targets,
            anomalies: summary.total_anomalies,
            verdict: summary.verdict,
        });
        let excess = self.status.runs.len().saturating_sub(RUNS_KEPT);
        self.status.runs.drain(..excess);
        if self.input.experiment.spec.dry_run {
            return;
        }
        let kind = if phase == ExperimentPhase::Completed && summary.verdict != Some(Verdict::Fail)
        {
            EventKind::Normal
        } else {
            EventKind::Warning
        };
        self.event(
            kind,
            reason::RUN_FINISHED,
            format!(
                "run {} {phase:?}: {} ops, {} exposures, {} anomalies, verdict {}",
                self.status.run,
                summary.ops,
                summary.total_exposures,
                summary.total_anomalies,
                summary
                    .verdict
                    .map_or_else(|| "none".to_owned(), |v| format!("{v:?}")),
            ),
        );
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

/// Update one target from what its sidecar said.
fn apply_observation(
    target: &mut TargetStatus,
    observation: Option<&StormObservation>,
    silent_secs: i64,
    lease_secs: i64,
    paused: bool,
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
                target.verdict = Some(report.verdict);
                target.latency = Some(LatencyMicros {
                    p50: report.latency.p50_micros,
                    p99: report.latency.p99_micros,
                    p999: report.latency.p999_micros,
                    max: report.latency.max_micros,
                });
                if let Some(check) = &report.check {
                    target.exposures = check.total_exposures();
                    target.anomalies = check.total_anomalies();
                    target.exposure_kinds =
                        nonzero(check.exposures.iter().map(|(k, n)| (k.as_str(), *n)));
                    target.anomaly_kinds =
                        nonzero(check.anomalies.iter().map(|(k, n)| (k.as_str(), *n)));
                }
            }
        }
        Some(StormObservation::NotFound) if target.phase == TargetPhase::Running => {
            target.phase = TargetPhase::Failed;
            target.message = "the sidecar no longer knows this storm (was it restarted?)".into();
        }
        Some(StormObservation::NotFound) if paused => {
            target.phase = TargetPhase::Aborted;
            target.message = "paused before the storm started".into();
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
                "{pod}: {} ops, {} exposures, {} anomalies, verdict {}",
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
mod tests;
