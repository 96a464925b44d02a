//! The application's own RESP traffic during a storm, through the real
//! server: its latency is reported, and with `check.includeClients` its
//! GET/SET/DEL/EXISTS on the stormed keys join the history without ever
//! making the correct engine look wrong, while the lagging engine's stale
//! answers to the application are caught.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::assert_clean;
use mapchaos_api::Verdict;
use mapchaos_api::spec::{AbortSpec, CheckSpec, KeyDistribution, OpMix, StormSpec};
use mapchaos_api::storm::StormPhase;
use mapchaos_sidecar::app_probe::AppProbe;
use mapchaos_sidecar::engine::{Clock, LaggingEngine, MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve_with_probe};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::app_traffic::APP_CLIENT_BASE;
use mapchaos_storm::runner::{self, StormControl, StormOutcome, StormPlan};
use mapchaos_storm::workload::synthetic_key;
use mapchaos_storm::{Event, Op};
use tokio_util::sync::CancellationToken;

/// A sidecar's RESP server and its probe, on loopback.
struct Sidecar {
    engine: Arc<dyn MapEngine>,
    probe: Arc<AppProbe>,
    port: u16,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Runtime,
}

impl Sidecar {
    fn start(engine: Arc<dyn MapEngine>) -> Sidecar {
        let (runtime, listener, port) = common::runtime_with_listener(2);
        let probe = AppProbe::new();
        let shutdown = CancellationToken::new();
        runtime.spawn(serve_with_probe(
            listener,
            engine.clone(),
            Arc::new(SidecarMetrics::new()),
            ServerConfig::default(),
            probe.clone(),
            shutdown.clone(),
        ));
        Sidecar {
            engine,
            probe,
            port,
            shutdown,
            runtime,
        }
    }

    fn connect(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .expect("the app connects")
    }

    /// Run `plan` in-process while `apps` connections each run `app` (given
    /// its connection, its index and the storm's keys) from the moment the
    /// workers start until they stop.
    fn storm_with_app(
        &self,
        plan: &StormPlan,
        apps: usize,
        app: impl Fn(&mut redis::Connection, usize, &[Vec<u8>], &AtomicBool) + Sync,
    ) -> StormOutcome {
        let target = EngineTarget::new(self.engine.clone()).with_app_probe(self.probe.clone());
        let control = StormControl::new();
        let done = AtomicBool::new(false);
        let keys: Vec<Vec<u8>> = (0..plan.storm.keys.count)
            .map(|i| synthetic_key(&plan.storm.keys.prefix, i))
            .collect();
        // Connected before the storm attaches, as an app's pool would be.
        let mut connections: Vec<redis::Connection> = (0..apps).map(|_| self.connect()).collect();
        std::thread::scope(|scope| {
            for (index, connection) in connections.iter_mut().enumerate() {
                let (app, keys, done, control) = (&app, &keys, &done, &control);
                scope.spawn(move || {
                    while control.live().phase != StormPhase::Running {
                        if done.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    app(connection, index, keys, done);
                });
            }
            let outcome = runner::run(plan, &target, &control).expect("the storm runs");
            done.store(true, Ordering::Release);
            outcome
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Give the server its drain before the runtime goes.
        std::thread::sleep(Duration::from_millis(20));
        let _ = &self.runtime;
    }
}

fn plan(seed: u64, prefix: &str, keys: u64, mix: OpMix, include_clients: bool) -> StormPlan {
    let mut storm = StormSpec {
        workers: 4,
        mix,
        ..StormSpec::default()
    };
    storm.keys.count = keys;
    storm.keys.prefix = format!("{prefix}:{seed}:");
    storm.keys.distribution = KeyDistribution::Uniform;
    StormPlan {
        storm,
        check: CheckSpec {
            timeout_per_key: mapchaos_api::GoDuration::from_secs(30),
            include_clients,
            ..CheckSpec::default()
        },
        abort: AbortSpec::default(),
        duration: Duration::from_millis(400),
        seed,
        check_threads: 2,
        check_memory: None,
    }
}

const MIXED: OpMix = OpMix {
    del: 30,
    get: 30,
    set: 30,
    exists: 10,
    scan: 0,
};

/// A small deterministic generator, so each app connection's choices replay.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

fn get(con: &mut redis::Connection, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(con).expect("GET answers")
}

fn app_events(outcome: &StormOutcome) -> Vec<&Event> {
    let history = outcome.history.as_ref().expect("history was recorded");
    history
        .events()
        .iter()
        .filter(|e| e.client >= APP_CLIENT_BASE)
        .collect()
}

fn is_app_value(op: &Op) -> bool {
    matches!(op, Op::Get { read: Some(v), .. } if (v.0 >> 32) as u32 >= APP_CLIENT_BASE)
}

/// GET, SET (of bytes unique to this connection), DEL and EXISTS on the
/// stormed keys until the storm ends.
fn plain_app(con: &mut redis::Connection, index: usize, keys: &[Vec<u8>], done: &AtomicBool) {
    let mut rng = index as u64 + 1;
    let mut n = 0u64;
    while !done.load(Ordering::Acquire) {
        let key = &keys[next(&mut rng) as usize % keys.len()];
        match next(&mut rng) % 4 {
            0 => {
                n += 1;
                let value = format!("app-{index}-{n}");
                let () = redis::cmd("SET").arg(key).arg(value).query(con).unwrap();
            }
            1 => {
                get(con, key);
            }
            2 => {
                let _: u64 = redis::cmd("DEL").arg(key).query(con).unwrap();
            }
            _ => {
                let _: u64 = redis::cmd("EXISTS").arg(key).query(con).unwrap();
            }
        }
    }
}

#[test]
fn app_operations_on_stormed_keys_join_the_history_and_the_correct_engine_passes() {
    let sidecar = Sidecar::start(Arc::new(ShardedEngine::new(8, Clock::System)));
    let mut storm_read_app_value = false;
    let mut app_read_own_kind = false;
    for seed in 0..3 {
        let plan = plan(seed, "appmix", 8, MIXED, true);
        let outcome = sidecar.storm_with_app(&plan, 2, plain_app);
        assert_clean(&outcome, &format!("seed {seed}"));
        assert_eq!(outcome.report.keys_excluded, 0, "seed {seed}");
        let app = app_events(&outcome);
        let clients: HashSet<u32> = app.iter().map(|e| e.client).collect();
        assert_eq!(clients.len(), 2, "seed {seed}: one client per connection");
        for kind in ["set", "get", "del", "exists"] {
            assert!(
                app.iter().any(|e| op_name(&e.op) == kind),
                "seed {seed}: no app {kind} in the history"
            );
        }
        let latency = outcome.report.client_latency.expect("app latency measured");
        assert!(
            latency.count >= app.len() as u64,
            "seed {seed}: {} app commands timed, {} recorded",
            latency.count,
            app.len()
        );
        let events = outcome.history.as_ref().unwrap().events();
        storm_read_app_value |= events
            .iter()
            .any(|e| e.client < APP_CLIENT_BASE && is_app_value(&e.op));
        app_read_own_kind |= app.iter().any(|e| is_app_value(&e.op));
        assert!(
            outcome.report.check.as_ref().unwrap().total_exposures() > 0,
            "seed {seed}: the storm did not race"
        );
    }
    assert!(
        storm_read_app_value,
        "no storm worker ever read a value the app wrote"
    );
    assert!(app_read_own_kind, "the app never read a value it wrote");
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "get",
        Op::Set { .. } => "set",
        Op::Del { .. } => "del",
        Op::Exists { .. } => "exists",
        Op::Scan { .. } => "scan",
    }
}

#[test]
fn keys_the_app_writes_in_ways_the_history_cannot_model_are_excluded() {
    let sidecar = Sidecar::start(Arc::new(ShardedEngine::new(8, Clock::System)));
    let plan = plan(11, "appexcl", 8, MIXED, true);
    let outcome = sidecar.storm_with_app(&plan, 1, |con, index, keys, done| {
        let () = redis::cmd("MSET")
            .arg(&keys[0])
            .arg("m")
            .arg("not-stormed")
            .arg("x")
            .query(con)
            .unwrap();
        for _ in 0..2 {
            let () = redis::cmd("SET")
                .arg(&keys[1])
                .arg("same")
                .query(con)
                .unwrap();
        }
        let () = redis::cmd("SET")
            .arg(&keys[2])
            .arg("expiring")
            .arg("EX")
            .arg(100)
            .query(con)
            .unwrap();
        // Storm values are no integers: the INCR fails, and still excludes.
        let _: redis::RedisResult<i64> = redis::cmd("INCR").arg(&keys[3]).query(con);
        // A multi-key read needs no exclusion.
        let _: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys[4])
            .arg(&keys[5])
            .query(con)
            .unwrap();
        plain_app(con, index, &keys[4..], done);
    });
    assert_clean(&outcome, "exclusions");
    assert_eq!(outcome.report.keys_excluded, 4);
    let history = outcome.history.as_ref().unwrap();
    assert!(
        history
            .events()
            .iter()
            .all(|e| e.op.key().is_none_or(|k| k >= 4)),
        "events of excluded keys stayed in the history"
    );
    assert!(!app_events(&outcome).is_empty());
}

#[test]
fn without_include_clients_the_app_is_timed_but_not_recorded() {
    let sidecar = Sidecar::start(Arc::new(ShardedEngine::new(8, Clock::System)));
    let plan = plan(5, "apptimed", 8, MIXED, false);
    let outcome = sidecar.storm_with_app(&plan, 2, |con, index, _, done| {
        // The app's own keys: outside the storm, yet its latency counts.
        let mut n = 0u64;
        while !done.load(Ordering::Acquire) {
            n += 1;
            let key = format!("session:{index}:{}", n % 16);
            let () = redis::cmd("SET").arg(&key).arg(n).query(con).unwrap();
            get(con, key.as_bytes());
        }
    });
    assert_clean(&outcome, "timed only");
    assert!(app_events(&outcome).is_empty());
    let latency = outcome.report.client_latency.expect("app latency measured");
    assert!(latency.count > 10, "{latency:?}");
    assert!(latency.max_micros >= latency.p50_micros);
    assert!(
        mapchaos_storm::report::render(&outcome.report).contains("  app "),
        "the text report shows the app row"
    );
}

#[test]
fn the_lagging_engine_serving_the_app_its_own_stale_writes_is_caught() {
    // A lag far above the app's SET→GET round trip, even on a loaded
    // machine, so its reads of its own writes are stale in every storm.
    let engine = LaggingEngine::new(
        Arc::new(ShardedEngine::new(8, Clock::System)),
        Duration::from_millis(50),
    );
    let sidecar = Sidecar::start(engine);
    // The workers only read: whatever goes wrong, the app's writes are in it.
    let reads = OpMix {
        del: 0,
        get: 1,
        set: 0,
        exists: 0,
        scan: 0,
    };
    for seed in 0..3 {
        let mut plan = plan(seed, "applag", 4, reads, true);
        // Start from absent keys, so the snapshot's lag can only show in
        // what the app wrote.
        plan.storm.keys.preload = 0.0;
        let outcome = sidecar.storm_with_app(&plan, 1, |con, _, keys, done| {
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) {
                n += 1;
                let key = &keys[n as usize % keys.len()];
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(format!("lag-{n}"))
                    .query(con)
                    .unwrap();
                get(con, key);
            }
        });
        let check = outcome.report.check.as_ref().unwrap();
        assert_eq!(
            outcome.report.verdict,
            Verdict::Fail,
            "seed {seed}: the lagging engine passed:\n{}",
            mapchaos_storm::report::render(&outcome.report)
        );
        assert!(
            check
                .witnesses
                .iter()
                .any(|w| w.operations.iter().any(|op| op.client >= APP_CLIENT_BASE)),
            "seed {seed}: no witness shows an app operation"
        );
    }
}

#[test]
fn without_include_clients_keys_the_app_writes_are_left_out_not_misjudged() {
    // The app's SETs and DELs on stormed keys are not recorded, so those keys'
    // histories are incomplete: judging them would blame the map for the app.
    let sidecar = Sidecar::start(Arc::new(ShardedEngine::new(8, Clock::System)));
    for seed in 0..3 {
        let plan = plan(20 + seed, "appunrec", 8, MIXED, false);
        let outcome = sidecar.storm_with_app(&plan, 2, plain_app);
        assert_clean(&outcome, &format!("seed {seed}"));
        assert!(
            app_events(&outcome).is_empty(),
            "seed {seed}: nothing recorded"
        );
        assert!(
            outcome.report.keys_excluded > 0,
            "seed {seed}: keys the app wrote must be excluded"
        );
    }
}
