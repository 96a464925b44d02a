//! `mapchaos run`'s steady-state probes (`spec.probes`), with the operator's
//! semantics: `before` probes gate the storm, `during` probes run at their
//! interval while the workers storm (a failed `stopOnFailure` probe stops
//! the storm, which restores), `after` probes run once it ended; the run's
//! verdict passes only when the map and every probe passed. The calls are
//! the operator's prober; the judging and tallying are the API's.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mapchaos_api::Verdict;
use mapchaos_api::probe::{
    Probe, ProbeAttempt, ProbePhase, ProbeStage, ProbeStatus, combined_verdict, failed_names,
};
use mapchaos_api::storm::{StopReason, StormPhase, StormReport};
use mapchaos_operator::probe_client::{self, HttpProber, ProbeRunner};
use mapchaos_storm::runner::StormControl;
use parking_lot::Mutex;

/// A storm's probes and their results so far.
pub struct LocalProbes {
    probes: Vec<Probe>,
    statuses: Arc<Mutex<Vec<ProbeStatus>>>,
    runtime: tokio::runtime::Runtime,
    prober: Arc<HttpProber>,
}

/// The `during` probes' task, until the storm's workers stop.
pub struct DuringProbes {
    task: tokio::task::JoinHandle<()>,
}

impl LocalProbes {
    /// `None` without probes.
    pub fn new(probes: &[Probe]) -> std::io::Result<Option<LocalProbes>> {
        if probes.is_empty() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mapchaos-probes")
            .enable_all()
            .build()?;
        let prober = runtime.block_on(async { Arc::new(HttpProber::new()) });
        Ok(Some(LocalProbes {
            probes: probes.to_vec(),
            statuses: Arc::new(Mutex::new(
                probes.iter().map(|p| ProbeStatus::new(&p.name)).collect(),
            )),
            runtime,
            prober,
        }))
    }

    fn in_stage(&self, stage: ProbeStage) -> Vec<Probe> {
        self.probes
            .iter()
            .filter(|p| p.mode.covers(stage))
            .cloned()
            .collect()
    }

    /// Run a once-stage (`before` or `after`): each probe up to its
    /// `failureThreshold` times, `interval` apart, until an attempt passes.
    /// Returns the probes that failed, with their last message.
    pub fn once(&self, stage: ProbeStage) -> Vec<(String, String)> {
        let probes = self.in_stage(stage);
        if probes.is_empty() {
            return Vec::new();
        }
        let prober = self.prober.clone();
        let attempts = self
            .runtime
            .block_on(async move { probe_client::stage(&*prober, &probes).await });
        let mut failed = Vec::new();
        let mut statuses = self.statuses.lock();
        for (name, tries) in attempts {
            for attempt in tries {
                if let Some(message) = fold(&mut statuses, &self.probes, &name, &attempt, stage) {
                    failed.push((name.clone(), message));
                }
            }
        }
        failed
    }

    /// Start the `during` probes: each is tried at once when the workers
    /// start storming, then every `interval`, until they stop.
    pub fn during(&self, control: Arc<StormControl>) -> DuringProbes {
        let probes = self.in_stage(ProbeStage::During);
        let statuses = self.statuses.clone();
        let all = self.probes.clone();
        let prober = self.prober.clone();
        let task = self.runtime.spawn(async move {
            let mut next: Vec<Option<Instant>> = vec![None; probes.len()];
            loop {
                let phase = control.live().phase;
                if phase != StormPhase::Preparing && phase != StormPhase::Running {
                    return;
                }
                if phase == StormPhase::Running && !control.is_stopping() {
                    let now = Instant::now();
                    let due: Vec<usize> = (0..probes.len())
                        .filter(|&i| next[i].is_none_or(|at| at <= now))
                        .filter(|&i| {
                            statuses.lock()[index(&all, &probes[i].name)].phase
                                != ProbePhase::Failed
                        })
                        .collect();
                    let calls = due.iter().map(|&i| {
                        let probe = &probes[i];
                        let prober = prober.clone();
                        async move { (i, prober.attempt(probe).await) }
                    });
                    for (i, attempt) in futures::future::join_all(calls).await {
                        next[i] = Some(now + probes[i].interval.0);
                        let probe = &probes[i];
                        let failed = fold(
                            &mut statuses.lock(),
                            &all,
                            &probe.name,
                            &attempt,
                            ProbeStage::During,
                        );
                        if let Some(message) = failed {
                            eprintln!("probe {} failed during the storm: {message}", probe.name);
                            if probe.stop_on_failure {
                                control.stop(StopReason::AbortCondition(format!(
                                    "probe {} failed ({message}); stopOnFailure",
                                    probe.name
                                )));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        DuringProbes { task }
    }

    /// Wait for the `during` probes to notice the workers stopped.
    pub fn end_during(&self, during: DuringProbes) {
        let _ = self.runtime.block_on(during.task);
    }

    /// Every probe's status so far.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.statuses.lock().clone()
    }

    /// Every probe's final status.
    pub fn finish(self) -> Vec<ProbeStatus> {
        let mut statuses = self.statuses.lock().clone();
        statuses.iter_mut().for_each(ProbeStatus::finish);
        statuses
    }
}

fn index(probes: &[Probe], name: &str) -> usize {
    probes
        .iter()
        .position(|p| p.name == name)
        .expect("a probe of the spec")
}

/// Fold one attempt; the message when it failed the probe.
fn fold(
    statuses: &mut [ProbeStatus],
    probes: &[Probe],
    name: &str,
    attempt: &ProbeAttempt,
    stage: ProbeStage,
) -> Option<String> {
    let i = index(probes, name);
    let at = Time(jiff::Timestamp::now());
    let status = &mut statuses[i];
    status
        .record(attempt, stage, at, probes[i].failure_threshold)
        .then(|| status.message.clone())
}

/// Make the report's verdict the run's: the map's verdict, failed by any
/// failed probe, and a pass only when every probe passed. Returns the
/// map's own verdict.
pub fn judge(report: &mut StormReport, statuses: &[ProbeStatus]) -> Verdict {
    let map = report.verdict;
    let run = combined_verdict(Some(map), statuses).unwrap_or(map);
    if run != map {
        let failed = failed_names(statuses);
        report.verdict_reason = if !failed.is_empty() {
            let first = statuses
                .iter()
                .find(|s| s.phase == ProbePhase::Failed)
                .map(|s| s.message.clone())
                .unwrap_or_default();
            let map_word = if map == Verdict::Pass {
                "the map held, but".to_owned()
            } else {
                format!("the map's verdict was {},", map.word())
            };
            format!("{map_word} probe(s) {} failed ({first})", failed.join(", "))
        } else {
            let unproven: Vec<&str> = statuses
                .iter()
                .filter(|s| s.phase != ProbePhase::Passed)
                .map(|s| s.name.as_str())
                .collect();
            format!(
                "the map held, but probe(s) {} never ran, so the application's steady state is unproven",
                unproven.join(", ")
            )
        };
        report.verdict = run;
    }
    map
}

/// The probes as the text report shows them, before its verdict line.
pub fn render(statuses: &[ProbeStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  steady-state probes");
    for s in statuses {
        let _ = writeln!(
            out,
            "    {:<20} {:<8} {:>3}% of {} attempts  {}",
            s.name,
            format!("{:?}", s.phase),
            s.success_percent,
            s.attempts,
            s.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, phase: ProbePhase) -> ProbeStatus {
        ProbeStatus {
            phase,
            message: "during: HTTP 503, expected 200".into(),
            ..ProbeStatus::new(name)
        }
    }

    #[test]
    fn a_failed_probe_fails_a_clean_map_and_says_so() {
        let mut report = StormReport {
            verdict: Verdict::Pass,
            ..serde_json::from_value(serde_json::json!({
                "seed": 1, "target": "t", "workers": 1, "elapsedMillis": 1,
                "stopReason": "durationElapsed", "ops": 1, "errors": 0, "opsPerSecond": 1.0,
                "byOp": {}, "latency": {"count": 0, "p50Micros": 0, "p90Micros": 0,
                "p99Micros": 0, "p999Micros": 0, "maxMicros": 0},
                "memoryBefore": {"keys": 0}, "memoryAfter": {"keys": 0}, "verdict": "Pass"
            }))
            .unwrap()
        };
        let statuses = [
            status("a", ProbePhase::Passed),
            status("health", ProbePhase::Failed),
        ];
        assert_eq!(judge(&mut report, &statuses), Verdict::Pass);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(
            report.verdict_reason,
            "the map held, but probe(s) health failed (during: HTTP 503, expected 200)"
        );
        let mut clean = report.clone();
        clean.verdict = Verdict::Pass;
        clean.verdict_reason = "fine".into();
        assert_eq!(
            judge(&mut clean, &[status("a", ProbePhase::NotRun)]),
            Verdict::Pass
        );
        assert_eq!(clean.verdict, Verdict::Inconclusive);
        assert!(
            clean.verdict_reason.contains("a never ran"),
            "{}",
            clean.verdict_reason
        );
        let mut passed = report.clone();
        passed.verdict = Verdict::Pass;
        passed.verdict_reason = "fine".into();
        judge(&mut passed, &[status("a", ProbePhase::Passed)]);
        assert_eq!(
            (passed.verdict, passed.verdict_reason.as_str()),
            (Verdict::Pass, "fine")
        );
    }
}
