//! Storm and checker throughput, printed side by side (`cargo bench -p
//! mapchaos-sidecar --bench storm`). Targets (issue "storm engine"): an
//! in-process storm of at least 5M ops/s with history off and 2M ops/s with
//! it on, on a 2-core machine; the checker at least 1M history ops/s on one
//! core for storms with at most 16 overlapping operations per key, growing
//! linearly with history length. This prints; it asserts nothing.
//!
//! `MAPCHAOS_BENCH_MAX_OPS` caps the largest checked history (default 4M;
//! 10M needs about 1 GiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mapchaos_api::spec::{CheckSpec, KeyDistribution, OpMix, StormSpec};
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::runner::{self, StormControl, StormPlan};
use mapchaos_storm::{CheckOptions, check};

fn plan(workers: u32, keys: u64, history: bool, max_ops: u64, seconds: f64) -> StormPlan {
    let mut storm = StormSpec {
        workers,
        mix: OpMix {
            del: 40,
            get: 35,
            set: 20,
            exists: 5,
            scan: 0,
        },
        ..StormSpec::default()
    };
    storm.keys.count = keys;
    storm.keys.distribution = KeyDistribution::Uniform;
    StormPlan {
        storm,
        check: CheckSpec {
            history,
            max_ops,
            ..CheckSpec::default()
        },
        abort: Default::default(),
        duration: Duration::from_secs_f64(seconds),
        seed: 1,
        check_threads: 1,
        check_memory: None,
    }
}

fn engine() -> Arc<dyn MapEngine> {
    Arc::new(ShardedEngine::new(64, Clock::System))
}

/// A storm's ops/s (workers only: the check after it is not timed), and
/// its recorded history when there is one.
fn storm(plan: &StormPlan) -> (f64, Option<mapchaos_storm::History>) {
    let target = EngineTarget::new(engine());
    let outcome = runner::run(plan, &target, &StormControl::new()).expect("the storm runs");
    let rate = outcome.report.ops as f64 / (outcome.report.elapsed_millis as f64 / 1e3);
    (rate, outcome.history)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores\n");

    println!("in-process storm (uniform over 100k keys, del/get/set/exists 40/35/20/5), 3 s each");
    println!(
        "{:>8} {:>16} {:>16} {:>10}",
        "workers", "history off", "history on", "on/off"
    );
    for workers in [cores as u32, 2 * cores as u32] {
        let (off, _) = storm(&plan(workers, 100_000, false, 0, 3.0));
        let (on, _) = storm(&plan(workers, 100_000, true, 50_000_000, 3.0));
        println!(
            "{workers:>8} {:>12.2}M/s {:>12.2}M/s {:>9.2}x",
            off / 1e6,
            on / 1e6,
            on / off
        );
    }

    let max_ops: u64 = std::env::var("MAPCHAOS_BENCH_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    println!("\nchecker, one thread, on histories recorded from a 16-worker storm over 1000 keys");
    println!(
        "{:>12} {:>12} {:>10} {:>14} {:>12}",
        "ops", "max overlap", "seconds", "ops/s", "verdict"
    );
    for size in [100_000u64, 400_000, 1_000_000, 4_000_000, 10_000_000] {
        if size > max_ops {
            break;
        }
        // Long enough to fill the recording bound at a conservative 300k ops/s.
        let seconds = (size as f64 / 300_000.0).max(1.0);
        let (_, history) = storm(&plan(16, 1000, true, size, seconds));
        let history = history.expect("history was recorded");
        let started = Instant::now();
        let report = check(
            &history,
            &CheckOptions {
                threads: 1,
                ..CheckOptions::default()
            },
        );
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{:>12} {:>12} {:>10.3} {:>12.2}M/s {:>12?}",
            report.ops_checked,
            report.max_overlap,
            elapsed,
            report.ops_checked as f64 / elapsed / 1e6,
            report.verdict
        );
    }
}
