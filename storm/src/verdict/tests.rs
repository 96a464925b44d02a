//! Every way a storm can look good and prove nothing: stopped by an abort
//! condition, too many failed operations (the default limit included),
//! anomalies other clients may explain, no operation of known outcome.

use std::collections::BTreeMap;

use mapchaos_api::spec::AbortSpec;
use mapchaos_api::storm::{LatencySummary, MemorySnapshot, StopReason, StormReport};
use mapchaos_api::{AnomalyKind, CheckReport, ExposureKind, KeyVerdictCounts, Verdict};

use super::{Judging, apply, check_verdict, judge};

/// A check that, alone, passes: raced, every key ok.
fn passing_check() -> CheckReport {
    let exposures = ExposureKind::ALL.iter().map(|&k| (k, 50)).collect();
    let anomalies = AnomalyKind::ALL.iter().map(|&k| (k, 0)).collect();
    let keys = KeyVerdictCounts {
        ok: 16,
        illegal: 0,
        unknown: 0,
    };
    let verdict = CheckReport::verdict_from(&exposures, &anomalies, &keys, 1000);
    assert_eq!(verdict, Verdict::Pass);
    CheckReport {
        exposures,
        max_overlap: 6,
        anomalies,
        witnesses: Vec::new(),
        keys,
        ops_checked: 1000,
        ops_known: 1000,
        truncated: false,
        scan_duplicates: 0,
        verdict,
    }
}

fn report(ops: u64, errors: u64, stop: StopReason, check: Option<CheckReport>) -> StormReport {
    StormReport {
        seed: 1,
        target: "redis://127.0.0.1:6379".into(),
        workers: 8,
        elapsed_millis: 1000,
        stop_reason: stop,
        ops,
        errors,
        ops_per_second: ops as f64,
        by_op: BTreeMap::new(),
        latency: LatencySummary::default(),
        client_latency: None,
        deletes: None,
        memory_before: MemorySnapshot::default(),
        memory_after: MemorySnapshot::default(),
        check,
        series: None,
        restored_keys: 0,
        restore: None,
        keys_excluded: 0,
        verdict: Verdict::Pass,
        verdict_reason: String::new(),
    }
}

fn closed() -> Judging {
    Judging {
        max_error_rate: AbortSpec::default().error_rate_limit(),
        open_world: false,
    }
}

fn with_anomalies(mut check: CheckReport, keys: u64) -> CheckReport {
    check.anomalies.insert(AnomalyKind::StaleRead, keys);
    check.anomalies.insert(AnomalyKind::LostDelete, keys);
    check.keys.illegal = keys;
    check.verdict = Verdict::Fail;
    check
}

#[test]
fn a_clean_storm_that_ran_its_duration_passes() {
    let clean = report(1000, 0, StopReason::DurationElapsed, Some(passing_check()));
    let (verdict, reason) = judge(&clean, &closed());
    assert_eq!(verdict, Verdict::Pass, "{reason}");
}

#[test]
fn a_storm_stopped_by_an_abort_condition_is_aborted_never_pass() {
    for why in [
        "error rate 59.00% is above abort.maxErrorRate 5.00%",
        "p99 latency 40ms over the last second is above abort.maxP99Latency 10ms",
    ] {
        let stopped = report(
            1000,
            0,
            StopReason::AbortCondition(why.into()),
            Some(passing_check()),
        );
        let (verdict, reason) = judge(&stopped, &closed());
        assert_eq!(verdict, Verdict::Aborted, "{reason}");
        assert!(reason.contains(why), "{reason}");
    }
    // Without a history it is still aborted, not merely inconclusive.
    let unchecked = report(10, 0, StopReason::AbortCondition("p99".into()), None);
    assert_eq!(judge(&unchecked, &closed()).0, Verdict::Aborted);
}

#[test]
fn anomalies_found_before_an_abort_still_fail() {
    let stopped = report(
        1000,
        0,
        StopReason::AbortCondition("p99".into()),
        Some(with_anomalies(passing_check(), 3)),
    );
    let (verdict, reason) = judge(&stopped, &closed());
    assert_eq!(verdict, Verdict::Fail);
    // Keys, not key × kind: 3 keys with two kinds each.
    assert!(reason.starts_with("3 keys"), "{reason}");
}

#[test]
fn an_error_rate_over_the_default_limit_is_never_pass() {
    assert_eq!(AbortSpec::default().error_rate_limit(), 0.05);
    // The seen case: 59% of operations answered MOVED, the watcher never
    // tripped (too few operations, or they failed after its last look).
    let moved = report(
        1000,
        590,
        StopReason::DurationElapsed,
        Some(passing_check()),
    );
    let (verdict, reason) = judge(&moved, &closed());
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(reason.contains("59.00% of operations failed"), "{reason}");
    assert!(reason.contains("abort.maxErrorRate 5.00%"), "{reason}");
    // Just over the limit is over it; at the limit is not.
    let just_over = report(1000, 51, StopReason::DurationElapsed, Some(passing_check()));
    assert_eq!(judge(&just_over, &closed()).0, Verdict::Inconclusive);
    let at = report(1000, 50, StopReason::DurationElapsed, Some(passing_check()));
    assert_eq!(judge(&at, &closed()).0, Verdict::Pass);
}

#[test]
fn the_spec_limit_replaces_the_default_and_one_never_trips() {
    let spec = |rate: &str| AbortSpec {
        max_error_rate: Some(rate.into()),
        ..AbortSpec::default()
    };
    let judging = |rate: &str| Judging {
        max_error_rate: spec(rate).error_rate_limit(),
        open_world: false,
    };
    let some_failed = report(
        1000,
        200,
        StopReason::DurationElapsed,
        Some(passing_check()),
    );
    assert_eq!(judge(&some_failed, &judging("0.25")).0, Verdict::Pass);
    assert_eq!(
        judge(&some_failed, &judging("0.1")).0,
        Verdict::Inconclusive
    );
    assert_eq!(judge(&some_failed, &judging("1")).0, Verdict::Pass);
}

#[test]
fn no_storm_operation_of_known_outcome_is_inconclusive() {
    // Every storm operation failed (a server refusing every command), even
    // with the default limit lifted; the preload alone is no storm.
    let lifted = Judging {
        max_error_rate: 1.0,
        open_world: false,
    };
    let all_failed = report(400, 400, StopReason::DurationElapsed, Some(passing_check()));
    let (verdict, reason) = judge(&all_failed, &lifted);
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(
        reason.contains("no storm operation has a known outcome"),
        "{reason}"
    );
    let none_ran = report(0, 0, StopReason::DurationElapsed, Some(passing_check()));
    let (verdict, reason) = judge(&none_ran, &lifted);
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(reason.contains("no storm operation ran"), "{reason}");
}

#[test]
fn a_check_that_proves_nothing_says_why() {
    let mut nothing_known = passing_check();
    nothing_known.ops_known = 0;
    let (verdict, reason) = check_verdict(&nothing_known);
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(reason.contains("known outcome"), "{reason}");
    let mut no_keys = passing_check();
    no_keys.keys = KeyVerdictCounts::default();
    let (verdict, reason) = check_verdict(&no_keys);
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(reason.contains("no key was checked"), "{reason}");
    let storm = report(1000, 0, StopReason::DurationElapsed, Some(no_keys));
    assert_eq!(judge(&storm, &closed()).0, Verdict::Inconclusive);
    let unchecked = report(1000, 0, StopReason::DurationElapsed, None);
    let (verdict, reason) = judge(&unchecked, &closed());
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(reason.contains("no history was checked"), "{reason}");
}

#[test]
fn open_world_anomalies_are_inconclusive_and_apply_sets_the_reason() {
    let open = Judging {
        open_world: true,
        ..closed()
    };
    let mut found = report(
        1000,
        0,
        StopReason::DurationElapsed,
        Some(with_anomalies(passing_check(), 2)),
    );
    apply(&mut found, &open);
    assert_eq!(found.verdict, Verdict::Inconclusive);
    assert!(found.verdict_reason.contains("--exclusive"), "{found:?}");
    assert!(found.verdict_reason.starts_with("2 keys"));
    apply(&mut found, &closed());
    assert_eq!(found.verdict, Verdict::Fail);
    // Open world, nothing found: a pass is still a pass.
    let mut clean = report(1000, 0, StopReason::DurationElapsed, Some(passing_check()));
    apply(&mut clean, &open);
    assert_eq!(clean.verdict, Verdict::Pass);
}

#[test]
fn keys_left_out_of_the_check_are_named_when_nothing_was_proven() {
    let mut no_keys = passing_check();
    no_keys.keys = KeyVerdictCounts::default();
    let mut storm = report(1000, 0, StopReason::DurationElapsed, Some(no_keys));
    storm.keys_excluded = 16;
    let (verdict, reason) = judge(&storm, &closed());
    assert_eq!(verdict, Verdict::Inconclusive);
    assert!(
        reason.starts_with("no key was checked")
            && reason.contains("16 stormed keys were left out of the check")
            && reason.contains("check.includeClients"),
        "{reason}"
    );
    // A pass with a few keys left out stays a pass, its reason unchanged.
    let mut passed = report(1000, 0, StopReason::DurationElapsed, Some(passing_check()));
    passed.keys_excluded = 3;
    let (verdict, reason) = judge(&passed, &closed());
    assert_eq!(verdict, Verdict::Pass);
    assert!(!reason.contains("left out"), "{reason}");
}
