//! What the storm test suites share: the judgement that a storm on a correct
//! map came out clean.

use mapchaos_api::Verdict;
use mapchaos_storm::runner::StormOutcome;

/// A correct map: checked, no anomaly, not failed, no storm operation failed.
pub fn assert_clean(outcome: &StormOutcome, what: &str) {
    let check = outcome.report.check.as_ref().expect("history was checked");
    assert_eq!(
        check.total_anomalies(),
        0,
        "{what}: a correct map was reported anomalous:\n{}",
        mapchaos_storm::report::render(&outcome.report)
    );
    assert_ne!(outcome.report.verdict, Verdict::Fail, "{what}");
    assert_eq!(outcome.report.errors, 0, "{what}: storm operations failed");
}
