//! The restore never reverts the application: a real client writes the
//! stormed keys while the storm runs (SET, DEL, SET with options), on the
//! sidecar's own engine (the storm in-process, the app through the RESP
//! server). After
//! the restore, every key the application wrote holds the application's last
//! write (or, for a write that cannot be replayed, the app's value or
//! nothing), none holds its pre-storm original again, and every key the
//! application did not touch holds its original with its TTL.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mapchaos_api::spec::{AbortSpec, CheckSpec, KeyDistribution, KeySource, OpMix, StormSpec};
use mapchaos_api::storm::StormPhase;
use mapchaos_sidecar::app_probe::AppProbe;
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve_with_probe};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::restore::RestoreOutcome;
use mapchaos_storm::runner::{self, StormControl, StormOutcome, StormPlan, StormTarget};
use redis::Commands;
use tokio_util::sync::CancellationToken;

const KEYS: usize = 600;
/// Keys the application SETs (plain), DELs, and SETs with `EX`.
const SET_KEYS: std::ops::Range<usize> = 0..60;
const DEL_KEYS: std::ops::Range<usize> = 60..80;
const OPTION_KEYS: std::ops::Range<usize> = 80..90;

fn key(i: usize) -> String {
    format!("app:{i}")
}

fn original(i: usize) -> String {
    format!("orig-{i}")
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .expect("the app connects")
}

fn seed(port: u16) {
    let mut connection = connect(port);
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        if i % 3 == 0 {
            pipe.cmd("SET")
                .arg(key(i))
                .arg(original(i))
                .arg("EX")
                .arg(600);
        } else {
            pipe.cmd("SET").arg(key(i)).arg(original(i));
        }
        pipe.ignore();
    }
    pipe.query::<()>(&mut connection).unwrap();
}

fn plan(seed: u64) -> StormPlan {
    let mut storm = StormSpec {
        workers: 4,
        mix: OpMix {
            del: 50,
            get: 20,
            set: 30,
            exists: 0,
            scan: 0,
        },
        restore: true,
        ..StormSpec::default()
    };
    storm.keys.source = KeySource::Existing;
    storm.keys.pattern = Some("app:*".into());
    storm.keys.count = KEYS as u64;
    storm.keys.distribution = KeyDistribution::Uniform;
    StormPlan {
        storm,
        check: CheckSpec {
            history: false,
            ..CheckSpec::default()
        },
        abort: AbortSpec::default(),
        duration: Duration::from_millis(1_500),
        seed,
        check_threads: 1,
        check_memory: None,
    }
}

/// What the application last wrote and had acknowledged, per key index.
#[derive(Default)]
struct AppWrites {
    set: HashMap<usize, String>,
    with_options: HashMap<usize, String>,
}

/// Storm `target` (whose keys are served on `port`) while two application
/// connections write: until 700 ms into the storm (so the storm then
/// overwrites and deletes their last writes), or, with `through_restore`,
/// until the storm returned — its restore included.
fn storm_with_writers(
    target: &dyn StormTarget,
    port: u16,
    seed_value: u64,
    through_restore: bool,
) -> (StormOutcome, AppWrites) {
    seed(port);
    let plan = plan(seed_value);
    let control = StormControl::new();
    let finished = AtomicBool::new(false);
    let mut sets = connect(port);
    let mut others = connect(port);
    let wait_running = |control: &StormControl| {
        while control.live().phase != StormPhase::Running {
            std::thread::sleep(Duration::from_micros(200));
        }
        Instant::now()
    };
    let writing = |started: Instant| {
        if through_restore {
            !finished.load(Ordering::Acquire)
        } else {
            started.elapsed() < Duration::from_millis(700)
        }
    };
    std::thread::scope(|scope| {
        let setter = scope.spawn(|| {
            let started = wait_running(&control);
            let mut last = HashMap::new();
            let mut round = 0;
            while writing(started) {
                for i in SET_KEYS {
                    let value = format!("app-{i}-{round}");
                    let () = sets.set(key(i), &value).expect("the app's SET");
                    last.insert(i, value);
                }
                round += 1;
            }
            last
        });
        let other = scope.spawn(|| {
            let started = wait_running(&control);
            let mut last = HashMap::new();
            let mut round = 0;
            while writing(started) {
                for i in DEL_KEYS {
                    let _: i64 = others.del(key(i)).expect("the app's DEL");
                }
                for i in OPTION_KEYS {
                    let value = format!("opt-{i}-{round}");
                    let () = redis::cmd("SET")
                        .arg(key(i))
                        .arg(&value)
                        .arg("EX")
                        .arg(300)
                        .query(&mut others)
                        .expect("the app's SET EX");
                    last.insert(i, value);
                }
                round += 1;
            }
            last
        });
        let outcome = runner::run(&plan, target, &control).expect("the storm runs");
        finished.store(true, Ordering::Release);
        let writes = AppWrites {
            set: setter.join().unwrap(),
            with_options: other.join().unwrap(),
        };
        (outcome, writes)
    })
}

/// Every key as the application must find it; panics naming each key that
/// is not, with the number of application writes reverted to the original.
fn assert_app_writes_kept(port: u16, outcome: &StormOutcome, writes: &AppWrites, what: &str) {
    let summary = outcome.restore.as_ref().expect("the storm restored");
    let mut connection = connect(port);
    let mut wrong = Vec::new();
    let mut reverted = 0;
    for i in 0..KEYS {
        let now: Option<String> = connection.get(key(i)).unwrap();
        let ttl: i64 = connection.pttl(key(i)).unwrap();
        let app_wrote = SET_KEYS.contains(&i) || DEL_KEYS.contains(&i) || OPTION_KEYS.contains(&i);
        if app_wrote && now.as_deref() == Some(original(i).as_str()) {
            reverted += 1;
        }
        let fine = if SET_KEYS.contains(&i) {
            now.as_ref() == writes.set.get(&i)
        } else if DEL_KEYS.contains(&i) {
            now.is_none()
        } else if OPTION_KEYS.contains(&i) {
            now.is_none() || now.as_ref() == writes.with_options.get(&i)
        } else {
            now.as_deref() == Some(original(i).as_str())
                && if i % 3 == 0 { ttl > 500_000 } else { ttl == -1 }
        };
        if !fine {
            wrong.push(format!("{} = {now:?} (pttl {ttl})", key(i)));
        }
    }
    assert_eq!(
        reverted,
        0,
        "{what}: {reverted} application writes reverted to the original; restore: {}",
        summary.describe()
    );
    assert!(
        wrong.is_empty(),
        "{what}: {} keys not as the application left them or not restored: {:?}; restore: {}",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        summary.describe()
    );
    assert_eq!(summary.count(RestoreOutcome::Failed), 0, "{what}");
    assert_eq!(
        summary.outcomes.len(),
        KEYS,
        "{what}: every key has an outcome"
    );
    assert!(
        summary.count(RestoreOutcome::Restored) > 0,
        "{what}: the storm took keys and the restore put them back: {}",
        summary.describe()
    );
}

/// A sidecar RESP server with its probe, on loopback.
struct Sidecar {
    engine: Arc<dyn MapEngine>,
    probe: Arc<AppProbe>,
    port: u16,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Sidecar {
    fn start() -> Sidecar {
        let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(16, Clock::System));
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
            _runtime: runtime,
        }
    }

    fn target(&self) -> EngineTarget {
        EngineTarget::new(self.engine.clone()).with_app_probe(self.probe.clone())
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn in_the_sidecar_the_restore_keeps_every_app_write_the_storm_overwrote() {
    for seed in [1, 2] {
        let sidecar = Sidecar::start();
        let (outcome, writes) = storm_with_writers(&sidecar.target(), sidecar.port, seed, false);
        assert_app_writes_kept(sidecar.port, &outcome, &writes, "sidecar");
        let summary = outcome.restore.as_ref().unwrap();
        // The storm ran on after the writes stopped, so it overwrote or
        // deleted some of them: the restore put the app's writes back.
        assert!(
            summary.count(RestoreOutcome::AppWriteRestored) > 0,
            "seed {seed}: {}",
            summary.describe()
        );
    }
}

#[test]
fn in_the_sidecar_app_writes_during_the_restore_are_never_overwritten() {
    let sidecar = Sidecar::start();
    let (outcome, writes) = storm_with_writers(&sidecar.target(), sidecar.port, 3, true);
    assert_app_writes_kept(
        sidecar.port,
        &outcome,
        &writes,
        "sidecar, writes through restore",
    );
}
