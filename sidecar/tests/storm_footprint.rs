//! The memory estimate a storm is budgeted by (`mapchaos_api::budget`),
//! against what real storms use: each test runs one in-process storm on the
//! sharded engine, the way the sidecar and `mapchaos run` do, resets the
//! process's peak resident memory first (`/proc/self/clear_refs`), and
//! compares the peak's growth with the estimate. The estimate must never be
//! below what was used (the budget would not protect the map) nor far above
//! it (the budget would refuse storms that fit). These runs are where the
//! per-unit constants come from; each test prints its measurement.
//!
//! nextest runs every test in its own process, so the peaks do not mix.

use std::sync::Arc;
use std::time::Duration;

use mapchaos_api::budget::{
    BASE_BYTES, Footprint, MIN_CHECK_MEMORY, StormShape, StormSite, check_memory,
};
use mapchaos_api::spec::{CheckSpec, KeyDistribution, OpMix, StormSpec};
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::runner::{self, StormControl, StormPlan};

fn status_kib(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
}

/// Runs the storm the way a sidecar does (the history also written out as
/// JSON, as `GET …/history` and `--history` do) and returns the estimate
/// and the growth of the peak resident set over the resting one, in bytes.
fn measure(storm: StormSpec, check: CheckSpec, duration: Duration) -> (Footprint, u64, u64) {
    let shape = StormShape {
        storm: storm.clone(),
        check: check.clone(),
        duration,
    };
    let footprint = shape.footprint(StormSite::IN_PROCESS);
    let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(64, Clock::System));
    let target = EngineTarget::new(engine.clone());
    let plan = StormPlan {
        storm,
        check,
        abort: Default::default(),
        duration,
        seed: 11,
        check_threads: 1,
        check_memory: Some(check_memory(&footprint, footprint.total(), 1) as usize),
    };
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let resting = status_kib("VmRSS") * 1024;
    let outcome = runner::run(&plan, &target, &StormControl::new()).expect("the storm runs");
    let recorded = outcome
        .history
        .as_ref()
        .map_or(0, |h| h.events().len() as u64);
    if let Some(history) = &outcome.history {
        let json = history.to_json().unwrap();
        assert!(!json.is_empty());
    }
    let peak = status_kib("VmHWM") * 1024;
    drop(outcome);
    let grown = peak.saturating_sub(resting);
    println!(
        "estimate {} MiB ({}), measured growth {} MiB, recorded {recorded} ops",
        footprint.total() >> 20,
        footprint.breakdown(),
        grown >> 20
    );
    (footprint, grown, recorded)
}

/// The estimate without its fixed part (what a storm's size changes).
fn variable(footprint: &Footprint) -> u64 {
    footprint.total() - BASE_BYTES - MIN_CHECK_MEMORY
}

fn small_mix() -> OpMix {
    OpMix {
        del: 40,
        get: 40,
        set: 20,
        exists: 0,
        scan: 0,
    }
}

fn assert_honest(footprint: &Footprint, grown: u64) {
    assert!(
        grown <= footprint.total(),
        "the storm used {} MiB, over its estimate of {} MiB ({})",
        grown >> 20,
        footprint.total() >> 20,
        footprint.breakdown()
    );
    assert!(
        variable(footprint) <= grown.saturating_mul(3),
        "the estimate {} MiB ({}) is over three times the {} MiB used",
        variable(footprint) >> 20,
        footprint.breakdown(),
        grown >> 20
    );
}

#[test]
fn a_big_keyspace_costs_what_its_estimate_says() {
    let mut storm = StormSpec {
        workers: 2,
        mix: small_mix(),
        ..StormSpec::default()
    };
    storm.keys.count = 300_000;
    storm.keys.distribution = KeyDistribution::Uniform;
    storm.keys.value_size = 64;
    let check = CheckSpec {
        history: false,
        ..CheckSpec::default()
    };
    let (footprint, grown, _) = measure(storm, check, Duration::from_millis(300));
    assert_honest(&footprint, grown);
}

#[test]
fn a_long_history_costs_what_its_estimate_says() {
    let mut storm = StormSpec {
        workers: 4,
        mix: small_mix(),
        ..StormSpec::default()
    };
    storm.keys.count = 1_000;
    storm.keys.distribution = KeyDistribution::Uniform;
    let check = CheckSpec {
        max_ops: 300_000,
        ..CheckSpec::default()
    };
    let (footprint, grown, recorded) = measure(storm, check, Duration::from_secs(20));
    assert!(
        recorded >= 250_000,
        "the storm filled its history: {recorded}"
    );
    assert_honest(&footprint, grown);
}

#[test]
fn many_workers_cost_what_their_estimate_says() {
    let mut storm = StormSpec {
        workers: 64,
        mix: small_mix(),
        ..StormSpec::default()
    };
    storm.keys.count = 1_000;
    let check = CheckSpec {
        history: false,
        ..CheckSpec::default()
    };
    let (footprint, grown, _) = measure(storm, check, Duration::from_secs(2));
    assert_honest(&footprint, grown);
}

#[test]
fn scans_of_a_big_keyspace_stay_within_the_estimate() {
    let mut storm = StormSpec {
        workers: 4,
        mix: OpMix {
            del: 10,
            get: 10,
            set: 60,
            exists: 0,
            scan: 20,
        },
        ..StormSpec::default()
    };
    storm.keys.count = 50_000;
    storm.keys.distribution = KeyDistribution::Uniform;
    let check = CheckSpec {
        max_ops: 200_000,
        ..CheckSpec::default()
    };
    let (footprint, grown, _) = measure(storm, check, Duration::from_secs(5));
    assert!(
        grown <= footprint.total(),
        "the storm used {} MiB, over its estimate of {} MiB ({})",
        grown >> 20,
        footprint.total() >> 20,
        footprint.breakdown()
    );
}
