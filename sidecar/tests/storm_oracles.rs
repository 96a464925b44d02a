//! The checker's oracles (CHECKER.md): storms against a correct engine and a
//! real `redis-server` must never show an anomaly; storms against the
//! deliberately broken lagging engine must be caught whenever they raced.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, assert_clean};
use mapchaos_api::spec::{AbortSpec, CheckSpec, KeyDistribution, OpMix, StormSpec};
use mapchaos_api::{AnomalyKind, Verdict};
use mapchaos_sidecar::engine::{Clock, LaggingEngine, MapEngine, ShardedEngine};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::client::RespTarget;
use mapchaos_storm::runner::{self, StormControl, StormOutcome, StormPlan, StormTarget};
use proptest::prelude::*;

fn plan(seed: u64, workers: u32, keys: u64, mix: OpMix, millis: u64) -> StormPlan {
    let mut storm = StormSpec {
        workers,
        mix,
        ..StormSpec::default()
    };
    storm.keys.count = keys;
    storm.keys.prefix = format!("oracle:{seed}:");
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
    }
}

fn storm(plan: &StormPlan, target: &dyn StormTarget) -> StormOutcome {
    runner::run(plan, target, &StormControl::new()).expect("the storm runs")
}

fn sharded() -> Arc<dyn MapEngine> {
    Arc::new(ShardedEngine::new(8, Clock::System))
}

fn total_exposures(outcome: &StormOutcome) -> u64 {
    outcome
        .report
        .check
        .as_ref()
        .map_or(0, |c| c.total_exposures())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn random_storms_on_the_correct_engine_show_no_anomaly(
        seed in any::<u64>(),
        workers in 2u32..12,
        keys in 1u64..40,
        del in 1u32..10, get in 0u32..10, set in 0u32..10, exists in 0u32..5, scan in 0u32..3,
        pipeline in 1u32..4,
    ) {
        let mut plan = plan(seed, workers, keys, OpMix { del, get, set, exists, scan }, 150);
        plan.storm.pipeline = pipeline;
        let outcome = storm(&plan, &EngineTarget::new(sharded()));
        assert_clean(&outcome, &format!("seed {seed}"));
        prop_assert!(outcome.report.ops > 0);
    }
}

#[test]
fn a_hot_storm_on_the_correct_engine_races_and_passes() {
    let mut plan = plan(
        7,
        16,
        8,
        OpMix {
            del: 40,
            get: 30,
            set: 25,
            exists: 5,
            scan: 0,
        },
        500,
    );
    plan.storm.keys.distribution = KeyDistribution::Uniform;
    let outcome = storm(&plan, &EngineTarget::new(sharded()));
    assert_clean(&outcome, "hot storm");
    assert!(
        total_exposures(&outcome) > 0,
        "16 workers on 8 keys must race"
    );
    assert_eq!(outcome.report.verdict, Verdict::Pass);
}

#[test]
fn every_lagging_storm_that_raced_is_caught_with_a_stale_read_witness() {
    for seed in 0..5 {
        let engine = LaggingEngine::new(
            Arc::new(ShardedEngine::new(8, Clock::System)),
            Duration::from_millis(3),
        );
        let plan = plan(
            seed,
            8,
            16,
            OpMix {
                del: 40,
                get: 40,
                set: 20,
                exists: 0,
                scan: 0,
            },
            400,
        );
        let outcome = storm(&plan, &EngineTarget::new(engine));
        let check = outcome.report.check.as_ref().unwrap();
        assert!(
            check.total_exposures() > 0,
            "seed {seed}: the storm did not race"
        );
        assert_eq!(
            outcome.report.verdict,
            Verdict::Fail,
            "seed {seed}: the lagging engine passed"
        );
        assert!(
            check
                .witnesses
                .iter()
                .any(|w| w.kind == AnomalyKind::StaleRead),
            "seed {seed}: no stale-read witness among {:?}",
            check.witnesses.iter().map(|w| w.kind).collect::<Vec<_>>()
        );
    }
}

#[test]
fn storms_against_a_real_redis_server_race_and_show_no_anomaly() {
    let redis = RedisServer::start();
    let target = RespTarget::new(
        &format!("redis://127.0.0.1:{}", redis.port),
        Duration::from_secs(5),
    )
    .unwrap();
    for seed in 0..3 {
        let mut plan = plan(
            seed,
            12,
            10,
            OpMix {
                del: 40,
                get: 30,
                set: 20,
                exists: 5,
                scan: 5,
            },
            700,
        );
        plan.storm.pipeline = 1 + seed as u32;
        let outcome = storm(&plan, &target);
        assert_clean(&outcome, &format!("redis-server seed {seed}"));
        assert!(
            total_exposures(&outcome) > 0,
            "seed {seed}: the storm did not race"
        );
    }
}
