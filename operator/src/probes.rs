//! Steady-state probes in the reconciler, the pure part: which probes are
//! due now, and how their attempts fold into a run's probe statuses. The
//! calls themselves are `probe_client`'s; the planner uses these to gate a
//! run's start on its `before` probes, stop its storms on a failed
//! `stopOnFailure` probe and hold its finish until its `after` probes ran.
//!
//! A run's probes live in its `status.runs[]` record. `during` attempts are
//! made by the observe step for the probes [`during_due`] names and handed
//! to the planner; `before` and `after` attempts are made when the planner
//! asks for them ([`ProbeNeeds`]), and the planner runs again with them, so
//! one reconcile both probes and decides.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mapchaos_api::MapChaos;
use mapchaos_api::probe::{Probe, ProbeAttempt, ProbePhase, ProbeStage, ProbeStatus};
use mapchaos_api::spec::MapChaosSpec;

/// Attempts by probe name.
pub type Attempts = BTreeMap<String, Vec<ProbeAttempt>>;

/// The probe attempts the planner is given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeResults {
    /// The `before` attempts for the run the planner wants to start; `None`
    /// until they were made.
    pub before: Option<Attempts>,
    /// The `after` attempts, by run.
    pub after: BTreeMap<u32, Attempts>,
    /// One `during` attempt per probe that was due, by (run, probe name).
    pub during: BTreeMap<(u32, String), ProbeAttempt>,
}

/// What the planner needs probed before it can finish deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeNeeds {
    /// The `before` probes of the run it would start.
    pub before: bool,
    /// The `after` probes of these runs, whose storms all ended.
    pub after: Vec<u32>,
}

impl ProbeNeeds {
    pub fn is_empty(&self) -> bool {
        !self.before && self.after.is_empty()
    }
}

/// The spec's probes that run in `stage`.
pub fn in_stage(spec: &MapChaosSpec, stage: ProbeStage) -> Vec<Probe> {
    spec.probes
        .iter()
        .filter(|p| p.mode.covers(stage))
        .cloned()
        .collect()
}

/// A new run's probe statuses: every probe, not run yet.
pub fn fresh(spec: &MapChaosSpec) -> Vec<ProbeStatus> {
    spec.probes
        .iter()
        .map(|p| ProbeStatus::new(&p.name))
        .collect()
}

/// Fold a stage's attempts into `statuses`; returns the probes this failed,
/// each with its last message.
pub fn fold(
    statuses: &mut [ProbeStatus],
    spec: &MapChaosSpec,
    stage: ProbeStage,
    attempts: &Attempts,
    at: &Time,
) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    for (name, tries) in attempts {
        let Some(probe) = spec.probes.iter().find(|p| &p.name == name) else {
            continue;
        };
        let Some(status) = statuses.iter_mut().find(|s| &s.name == name) else {
            continue;
        };
        for attempt in tries {
            if status.record(attempt, stage, at.clone(), probe.failure_threshold) {
                failed.push((name.clone(), status.message.clone()));
            }
        }
    }
    failed
}

/// The `during` probes due now, as (run, probe): for every run still
/// going whose storms have not all ended, each `during` or `continuous`
/// probe that has not failed and was last tried `interval` ago or more.
pub fn during_due(experiment: &MapChaos, now: Timestamp) -> Vec<(u32, Probe)> {
    let Some(status) = &experiment.status else {
        return Vec::new();
    };
    let spec = &experiment.spec;
    let mut due = Vec::new();
    for record in status.runs.iter().filter(|r| r.finished_at.is_none()) {
        let storming = status
            .targets
            .iter()
            .any(|t| (t.run == record.run || t.run == 0) && !t.phase.is_final());
        if !storming {
            continue;
        }
        for probe in in_stage(spec, ProbeStage::During) {
            let Some(probe_status) = record.probes.iter().find(|s| s.name == probe.name) else {
                continue;
            };
            if probe_status.phase == ProbePhase::Failed {
                continue;
            }
            let waited = probe_status
                .last_probe_time
                .as_ref()
                .map_or(Duration::MAX, |at| {
                    Duration::try_from(now.duration_since(at.0)).unwrap_or_default()
                });
            if waited >= probe.interval.0 {
                due.push((record.run, probe));
            }
        }
    }
    due
}

/// The shortest `interval` of the spec's `during` probes: how often the
/// reconciler must look while storms run.
pub fn during_interval(spec: &MapChaosSpec) -> Option<Duration> {
    in_stage(spec, ProbeStage::During)
        .iter()
        .map(|p| p.interval.0)
        .min()
}

/// Whether `statuses` hold a failed probe that stops the storms.
pub fn stops_storms(spec: &MapChaosSpec, statuses: &[ProbeStatus]) -> Option<String> {
    statuses
        .iter()
        .filter(|s| s.phase == ProbePhase::Failed)
        .find(|s| {
            spec.probes
                .iter()
                .any(|p| p.name == s.name && p.stop_on_failure)
        })
        .map(|s| s.name.clone())
}

#[cfg(test)]
mod tests;
