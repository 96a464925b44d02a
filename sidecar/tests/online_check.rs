//! The online checker on real storms: its verdict on the correct and the
//! lagging engine equals the offline checker's on the same storm's recorded
//! history, and `abort.maxAnomalies` stops a storm that breaks the map
//! within a second of the anomaly that crosses it, then restores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapchaos_api::spec::{AbortSpec, CheckSpec, KeySource, OpMix, StormSpec};
use mapchaos_api::storm::{StopReason, StormPhase};
use mapchaos_api::{CheckReport, Verdict};
use mapchaos_sidecar::engine::{Clock, LaggingEngine, MapEngine, ShardedEngine};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::runner::{self, StormControl, StormPlan};
use mapchaos_storm::{CheckOptions, check};

fn plan(seed: u64, workers: u32, keys: u64, millis: u64) -> StormPlan {
    let mut storm = StormSpec {
        workers,
        mix: OpMix {
            del: 40,
            get: 30,
            set: 20,
            exists: 5,
            scan: 5,
        },
        ..StormSpec::default()
    };
    storm.keys.count = keys;
    storm.keys.prefix = format!("online:{seed}:");
    StormPlan {
        storm,
        check: CheckSpec {
            timeout_per_key: mapchaos_api::GoDuration::from_secs(30),
            ..CheckSpec::default()
        },
        abort: AbortSpec::default(),
        duration: Duration::from_millis(millis),
        seed,
        check_threads: 2,
        check_memory: None,
        record_history: true,
    }
}

fn illegal_keys(check: &CheckReport) -> BTreeSet<String> {
    check.witnesses.iter().map(|w| w.key.clone()).collect()
}

#[test]
fn online_verdicts_equal_the_offline_check_of_the_same_storm() {
    let mut failed = 0;
    for seed in 0..6u64 {
        let lagging = seed % 2 == 1;
        let inner: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(8, Clock::System));
        let engine: Arc<dyn MapEngine> = if lagging {
            LaggingEngine::new(inner, Duration::from_millis(3))
        } else {
            inner
        };
        let plan = plan(seed, 8, 24, 300);
        let outcome = runner::run(&plan, &EngineTarget::new(engine), &StormControl::new())
            .expect("the storm runs");
        let online = outcome.report.check.as_ref().expect("checked");
        let history = outcome.history.as_ref().expect("recorded");
        assert!(!history.is_truncated(), "seed {seed}: raise check.maxOps");
        assert!(online.online);
        let offline = check(
            history,
            &CheckOptions {
                per_key_budget: Duration::from_secs(30),
                ..CheckOptions::default()
            },
        );
        let what = format!("seed {seed} (lagging: {lagging})");
        assert_eq!(online.verdict, offline.verdict, "{what}");
        assert_eq!(online.keys, offline.keys, "{what}");
        assert_eq!(online.exposures, offline.exposures, "{what}");
        assert_eq!(online.max_overlap, offline.max_overlap, "{what}");
        assert_eq!(online.ops_checked, offline.ops_checked, "{what}");
        assert_eq!(
            online.total_anomalies(),
            offline.total_anomalies(),
            "{what}"
        );
        assert_eq!(illegal_keys(online), illegal_keys(&offline), "{what}");
        if !lagging {
            assert_eq!(online.total_anomalies(), 0, "{what}");
        }
        failed += u32::from(online.verdict == Verdict::Fail);
    }
    assert!(failed > 0, "no lagging storm was caught");
}

#[test]
fn max_anomalies_0_stops_a_lagging_storm_within_a_second_and_restores() {
    const KEYS: usize = 40;
    let inner: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(8, Clock::System));
    let original = |i: usize| Bytes::from(format!("orig-{i}"));
    inner.mset(
        (0..KEYS)
            .map(|i| (Bytes::from(format!("app:{i}")), original(i)))
            .collect(),
    );
    let engine = LaggingEngine::new(inner.clone(), Duration::from_millis(5));
    let mut plan = plan(1, 8, KEYS as u64, 30_000);
    plan.storm.keys.source = KeySource::Existing;
    plan.storm.keys.pattern = Some("app:*".into());
    plan.storm.restore = true;
    plan.record_history = false;
    plan.abort.max_anomalies = Some(0);
    let control = StormControl::new();
    let done = AtomicBool::new(false);
    let (outcome, first_anomaly, stopped) = std::thread::scope(|scope| {
        // Watch the live status as a user would: when the first anomaly
        // shows, and when the storm stops running.
        let watcher = scope.spawn(|| {
            let (mut first, mut stopped) = (None, None);
            while !done.load(Ordering::Acquire) {
                let live = control.live();
                if first.is_none() && live.anomalies > 0 {
                    first = Some(Instant::now());
                }
                if stopped.is_none() && live.phase != StormPhase::Running && live.ops > 0 {
                    stopped = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (first, stopped)
        });
        let outcome = runner::run(&plan, &EngineTarget::new(engine.clone()), &control);
        done.store(true, Ordering::Release);
        let (first, stopped) = watcher.join().unwrap();
        (outcome.expect("the storm runs"), first, stopped)
    });
    let report = &outcome.report;
    let first = first_anomaly.expect("the live status showed the anomaly");
    let stopped = stopped.expect("the storm stopped");
    assert!(
        stopped.saturating_duration_since(first) < Duration::from_secs(1),
        "stopped {:?} after the first anomaly",
        stopped.saturating_duration_since(first)
    );
    assert!(
        report.elapsed_millis < 10_000,
        "ran {} ms",
        report.elapsed_millis
    );
    match &report.stop_reason {
        StopReason::AbortCondition(why) => assert!(why.contains("abort.maxAnomalies 0"), "{why}"),
        other => panic!("stopped for {other:?}"),
    }
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.verdict_reason);
    assert!(
        report.verdict_reason.contains("maxAnomalies"),
        "{}",
        report.verdict_reason
    );
    let check = report.check.as_ref().expect("checked");
    assert!(check.total_anomalies() > 0 && check.online);
    // Restored: every key holds its original again.
    for i in 0..KEYS {
        assert_eq!(
            inner.get(format!("app:{i}").as_bytes()),
            Some(original(i)),
            "app:{i} not restored"
        );
    }
}
