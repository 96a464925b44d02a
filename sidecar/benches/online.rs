//! The online checker on a long in-process storm (`cargo bench -p
//! mapchaos-sidecar --bench online`): a storm of `MAPCHAOS_BENCH_SECONDS`
//! (default 60) checked in full as it runs, printing the operations checked,
//! the resident set every second (flat: memory is bounded by the open
//! windows, not the storm's length) and its peak; then the same storm shape
//! for `MAPCHAOS_BENCH_COMPARE_SECONDS` (default 10) unchecked, checked
//! online, and recorded then checked offline (the path before the online
//! checker, a `check.maxOps` prefix), side by side, with the throughput
//! ratios. This prints; it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mapchaos_api::spec::{CheckSpec, KeyDistribution, OpMix, StormSpec};
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::runner::{self, StormControl, StormOutcome, StormPlan};
use mapchaos_storm::{CheckOptions, check};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn status_kib(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How a storm of the bench is judged.
#[derive(Clone, Copy, PartialEq)]
enum Judged {
    /// Not at all: latency, throughput and errors only.
    Unchecked,
    /// By the online checker as it runs.
    Online,
    /// Recorded, for the offline check afterwards.
    Recorded,
}

/// The quick start's storm: 16 workers on 200 zipf-hot keys, with SCANs.
fn plan(seconds: u64, judged: Judged) -> StormPlan {
    let mut storm = StormSpec {
        workers: 16,
        mix: OpMix {
            del: 40,
            get: 30,
            set: 20,
            exists: 5,
            scan: 5,
        },
        ..StormSpec::default()
    };
    storm.keys.count = 200;
    storm.keys.distribution = KeyDistribution::Zipf;
    storm.keys.prefix = "bench:online:".into();
    StormPlan {
        storm,
        check: CheckSpec {
            // The old path records and checks afterwards: only record here.
            history: judged == Judged::Online,
            ..CheckSpec::default()
        },
        abort: Default::default(),
        duration: Duration::from_secs(seconds),
        seed: 5,
        check_threads: 1,
        check_memory: None,
        record_history: judged == Judged::Recorded,
    }
}

/// Runs `plan`, sampling the resident set every second when `sample`.
fn storm(plan: &StormPlan, sample: bool) -> (StormOutcome, Vec<u64>, u64) {
    let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(16, Clock::System));
    let target = EngineTarget::new(engine);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            let started = Instant::now();
            while sample && !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if started.elapsed().as_secs() as usize > samples.len() {
                    let rss = status_kib("VmRSS");
                    println!(
                        "  t={:>3}s  rss {:>7.1} MiB",
                        samples.len() + 1,
                        rss as f64 / 1024.0
                    );
                    samples.push(rss);
                }
            }
            samples
        });
        let outcome = runner::run(plan, &target, &StormControl::new()).expect("the storm runs");
        done.store(true, Ordering::Release);
        let samples = sampler.join().unwrap();
        (outcome, samples, status_kib("VmHWM"))
    })
}

fn main() {
    let seconds = env("MAPCHAOS_BENCH_SECONDS", 60);
    println!("online check of a {seconds} s in-process storm (16 workers, 200 zipf keys):");
    let rss_before = status_kib("VmRSS");
    let (outcome, samples, peak) = storm(&plan(seconds, Judged::Online), true);
    let report = &outcome.report;
    let checked = report.check.as_ref().expect("checked online");
    println!(
        "  {} storm ops in {:.1} s ({:.0} ops/s); {} ops checked (the storm's and the 200 preloads), verdict {:?}",
        report.ops,
        report.elapsed_millis as f64 / 1000.0,
        report.ops_per_second,
        checked.ops_checked,
        report.verdict
    );
    let mid = samples.get(samples.len() / 4).copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    println!(
        "  rss before {:.1} MiB, at a quarter {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB",
        rss_before as f64 / 1024.0,
        mid as f64 / 1024.0,
        last as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    let compare = env("MAPCHAOS_BENCH_COMPARE_SECONDS", 10);
    println!(
        "\nthe same storm for {compare} s, unchecked, online, and recorded then checked offline:"
    );
    let (unchecked, _, unchecked_peak) = storm(&plan(compare, Judged::Unchecked), false);
    let (online, _, online_peak) = storm(&plan(compare, Judged::Online), false);
    let online_check = online.report.check.as_ref().expect("checked");
    let (recorded, _, recorded_peak) = storm(&plan(compare, Judged::Recorded), false);
    let history = recorded.history.as_ref().expect("recorded");
    let started = Instant::now();
    let offline = check(
        history,
        &CheckOptions {
            threads: 1,
            ..CheckOptions::default()
        },
    );
    let check_time = started.elapsed();
    println!(
        "  unchecked: {:>9.0} ops/s storming, peak rss {:.1} MiB",
        unchecked.report.ops_per_second,
        unchecked_peak as f64 / 1024.0
    );
    println!(
        "  online:    {:>9.0} ops/s storming, {} ops checked, verdict {:?}, peak rss {:.1} MiB",
        online.report.ops_per_second,
        online_check.ops_checked,
        online.report.verdict,
        online_peak as f64 / 1024.0
    );
    println!(
        "  recorded:  {:>9.0} ops/s storming, then {} ops checked in {:.2} s{}, verdict {:?}, peak rss {:.1} MiB",
        recorded.report.ops_per_second,
        offline.ops_checked,
        check_time.as_secs_f64(),
        if offline.truncated {
            " (a check.maxOps prefix)"
        } else {
            ""
        },
        offline.verdict,
        recorded_peak as f64 / 1024.0
    );
    let ratio = |a: &StormOutcome, b: &StormOutcome| {
        a.report.ops_per_second / b.report.ops_per_second.max(1.0)
    };
    println!(
        "  storm throughput online / unchecked: {:.2}x, online / recorded: {:.2}x",
        ratio(&online, &unchecked),
        ratio(&online, &recorded)
    );
}
