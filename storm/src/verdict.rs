//! What a storm's verdict may claim (CHECKER.md, "What a verdict may
//! claim"): the check's verdict, then everything about the storm that keeps
//! it from a pass — an abort condition that stopped it, an error rate over
//! `abort.maxErrorRate`, anomalies other clients may explain — with one
//! sentence saying why.

use mapchaos_api::storm::{StopReason, StormReport};
use mapchaos_api::{CheckReport, Verdict};

/// What the storm's verdict depends on besides its report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judging {
    /// The share of failed operations over which the storm cannot pass
    /// (`AbortSpec::error_rate_limit`).
    pub max_error_rate: f64,
    /// Other clients may write the stormed keys unseen (`--target` on
    /// existing keys without `--exclusive`), so anomalies are no evidence.
    pub open_world: bool,
}

/// The verdict `report` earns and why. A storm that proved nothing while
/// keys were left out of its check says so: they are often the reason.
pub fn judge(report: &StormReport, judging: &Judging) -> (Verdict, String) {
    let (verdict, mut reason) = judged(report, judging);
    if verdict == Verdict::Inconclusive && report.keys_excluded > 0 {
        reason.push_str(&format!(
            " {} stormed keys were left out of the check: the application changed them in \
             ways the history does not hold (check.includeClients records its writes).",
            report.keys_excluded
        ));
    }
    (verdict, reason)
}

fn judged(report: &StormReport, judging: &Judging) -> (Verdict, String) {
    let check = report.check.as_ref();
    let anomalous = check.map_or(0, CheckReport::total_anomalies);
    if anomalous > 0 && !judging.open_world {
        return (
            Verdict::Fail,
            format!("{anomalous} keys show anomalies; the witnesses are the evidence."),
        );
    }
    if let StopReason::AbortCondition(why) = &report.stop_reason {
        return (
            Verdict::Aborted,
            format!(
                "an abort condition stopped the storm ({why}); no anomaly was found in what ran, \
                 but that proves nothing."
            ),
        );
    }
    let failed = error_share(report.errors, report.ops);
    if failed > judging.max_error_rate {
        return (
            Verdict::Inconclusive,
            format!(
                "{:.2}% of operations failed ({} of {}), over abort.maxErrorRate {:.2}%: failed \
                 operations prove nothing (is the target the right server, and does it accept \
                 these commands?).",
                failed * 100.0,
                report.errors,
                report.ops,
                judging.max_error_rate * 100.0
            ),
        );
    }
    if anomalous > 0 {
        return (
            Verdict::Inconclusive,
            format!(
                "{anomalous} keys show anomalies, but other clients of the target may have \
                 written them while the storm ran, and the storm cannot see their writes. Stop \
                 the application's writes and rerun with --exclusive, or storm in the sidecar, \
                 which sees them."
            ),
        );
    }
    let Some(check) = check else {
        return (
            Verdict::Inconclusive,
            "no history was checked (spec.check.history: false).".into(),
        );
    };
    if report.ops == 0 {
        return (
            Verdict::Inconclusive,
            "no storm operation ran, so nothing was proven.".into(),
        );
    }
    if report.ops == report.errors {
        return (
            Verdict::Inconclusive,
            format!(
                "no storm operation has a known outcome (all {} errored or timed out), so \
                 nothing was proven.",
                report.ops
            ),
        );
    }
    check_verdict(check)
}

/// Set the report's verdict and its reason from [`judge`].
pub fn apply(report: &mut StormReport, judging: &Judging) {
    let (verdict, reason) = judge(report, judging);
    report.verdict = verdict;
    report.verdict_reason = reason;
}

/// The verdict of a check on its own (`mapchaos check`) and why.
pub fn check_verdict(check: &CheckReport) -> (Verdict, String) {
    if check.total_anomalies() > 0 {
        return (
            Verdict::Fail,
            format!(
                "{} keys show anomalies; the witnesses are the evidence.",
                check.total_anomalies()
            ),
        );
    }
    match check.unproven_reason() {
        Some(reason) => (Verdict::Inconclusive, reason),
        // Whatever else the check's own verdict says wins over a pass.
        None if check.verdict != Verdict::Pass => {
            (check.verdict, "the check proved nothing.".into())
        }
        None => (
            Verdict::Pass,
            "the storm raced, and every key's history is linearizable.".into(),
        ),
    }
}

fn error_share(errors: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        errors as f64 / ops as f64
    }
}

#[cfg(test)]
mod tests;
