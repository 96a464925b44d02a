//! A storm's delete journal: a restore storm on existing keys lists exactly
//! the keys it deleted, each with what became of it — restored, or left
//! because the application wrote it since — and `GET /v1/storms/{id}/audit`
//! serves it only to a signed request.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use mapchaos_api::audit::DeletedKeyOutcome;
use mapchaos_api::signing::{PodIdentity, hex};
use mapchaos_api::spec::{CheckSpec, KeySource, OpMix, StormSpec};
use mapchaos_api::storm::MemorySnapshot;
use mapchaos_sidecar::app_probe::AppProbe;
use mapchaos_sidecar::audit::journal::JournalRecorder;
use mapchaos_sidecar::control_api::{self, Verifier};
use mapchaos_sidecar::engine::{Clock, MapEngine, SetOptions, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve_with_probe};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_sidecar::storms::Storms;
use mapchaos_storm::Op;
use mapchaos_storm::app_traffic::AppTap;
use mapchaos_storm::client::{ClientError, MapClient};
use mapchaos_storm::runner::{self, StormControl, StormPlan, StormTarget};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const KEY: [u8; 32] = [11; 32];
const KEYS: usize = 60;

/// The pod the sidecar under test is.
fn this_pod() -> PodIdentity {
    PodIdentity::new("shop", "cart-0", "")
}

fn original(i: usize) -> String {
    format!("original-{i}")
}

fn preload(engine: &dyn MapEngine) {
    for i in 0..KEYS {
        engine.set(
            Bytes::from(format!("app:{i}")),
            Bytes::from(original(i)),
            SetOptions::default(),
        );
    }
}

fn restore_storm() -> StormSpec {
    let mut storm = StormSpec {
        workers: 4,
        mix: OpMix {
            del: 60,
            get: 20,
            set: 20,
            exists: 0,
            scan: 0,
        },
        restore: true,
        ..StormSpec::default()
    };
    storm.keys.source = KeySource::Existing;
    storm.keys.pattern = Some("app:*".into());
    storm.keys.count = KEYS as u64;
    storm
}

/// The keys a history shows a storm worker removing.
fn deleted_in(history: &mapchaos_storm::History) -> BTreeSet<String> {
    history
        .events()
        .iter()
        .filter_map(|e| match e.op {
            Op::Del { key, removed: true } if e.ret != mapchaos_storm::Event::NO_RETURN => {
                Some(String::from_utf8(history.keys()[key as usize].clone()).unwrap())
            }
            _ => None,
        })
        .collect()
}

/// A target that runs `between` once the workers have stopped and before
/// the check and the restore (the runner reads the memory then).
struct BetweenStormAndRestore<'a> {
    inner: EngineTarget,
    memory_reads: AtomicU32,
    between: &'a (dyn Fn() + Sync),
}

impl StormTarget for BetweenStormAndRestore<'_> {
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        self.inner.connect()
    }

    fn memory(&self) -> MemorySnapshot {
        if self.memory_reads.fetch_add(1, Ordering::SeqCst) == 1 {
            (self.between)();
        }
        self.inner.memory()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn app_tap(&self) -> Option<&dyn AppTap> {
        self.inner.app_tap()
    }
}

#[test]
fn the_journal_lists_exactly_the_deleted_keys_and_a_key_the_app_wrote_is_left_to_it() {
    let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(8, Clock::System));
    preload(engine.as_ref());
    let probe = AppProbe::new();
    let (runtime, listener, port) = common::runtime_with_listener(2);
    let shutdown = CancellationToken::new();
    runtime.spawn(serve_with_probe(
        listener,
        engine.clone(),
        Arc::new(SidecarMetrics::new()),
        ServerConfig::default(),
        probe.clone(),
        shutdown.clone(),
    ));
    let app = Mutex::new(
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap(),
    );
    // The application writes one key the storm deleted, after the storm's
    // last operation and before its restore.
    let app_wrote: Mutex<Option<String>> = Mutex::new(None);
    let between = || {
        let mut app = app.lock();
        for i in 0..KEYS {
            let key = format!("app:{i}");
            let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut *app).unwrap();
            if exists == 0 {
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("written-by-app")
                    .query(&mut *app)
                    .unwrap();
                *app_wrote.lock() = Some(key);
                return;
            }
        }
    };
    let journal = Arc::new(JournalRecorder::new());
    let target = BetweenStormAndRestore {
        inner: EngineTarget::new(engine.clone())
            .with_app_probe(probe.clone())
            .with_audit("journal-1", Some(journal.clone())),
        memory_reads: AtomicU32::new(0),
        between: &between,
    };
    let plan = StormPlan {
        storm: restore_storm(),
        check: CheckSpec::default(),
        abort: Default::default(),
        duration: Duration::from_millis(400),
        seed: 9,
        check_threads: 1,
        check_memory: None,
    };
    let outcome = runner::run(&plan, &target, &StormControl::new()).unwrap();
    shutdown.cancel();
    let history = outcome.history.as_ref().expect("recorded");
    assert!(!history.is_truncated());
    let app_key = app_wrote
        .lock()
        .clone()
        .expect("the storm left a key deleted");

    let audit = journal.journal("journal-1", true);
    let listed: BTreeSet<String> = audit.keys.iter().map(|k| k.key.clone().unwrap()).collect();
    let mut expected = deleted_in(history);
    // Its history may leave out the key the application wrote.
    expected.insert(app_key.clone());
    assert!(expected.len() >= 5, "the storm deleted keys: {expected:?}");
    assert_eq!(listed, expected, "exactly the keys the storm deleted");
    for entry in &audit.keys {
        let key = entry.key.as_deref().unwrap();
        let now = engine.get(key.as_bytes());
        if key == app_key {
            assert_eq!(entry.outcome, DeletedKeyOutcome::AppWrote, "{key}");
            assert_eq!(
                now.as_deref(),
                Some(&b"written-by-app"[..]),
                "the app's write stays"
            );
        } else {
            assert_eq!(entry.outcome, DeletedKeyOutcome::Restored, "{key}");
            let i: usize = key["app:".len()..].parse().unwrap();
            assert_eq!(
                now.as_deref(),
                Some(original(i).as_bytes()),
                "{key} put back"
            );
        }
    }
    assert_eq!(audit.summary.deleted, expected.len() as u64);
    assert_eq!(audit.summary.count(DeletedKeyOutcome::AppWrote), 1);
}

/// The control API on loopback.
struct Api {
    port: u16,
    engine: Arc<dyn MapEngine>,
    _runtime: tokio::runtime::Runtime,
}

impl Api {
    fn start() -> Api {
        let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(8, Clock::System));
        let storms = Storms::new(engine.clone(), Arc::new(SidecarMetrics::new()));
        let public = hex(SigningKey::from_bytes(&KEY).verifying_key().as_bytes());
        let verifier = Verifier::new(Some(&public), Some(this_pod())).unwrap();
        let (runtime, listener, port) = common::runtime_with_listener(1);
        runtime.spawn(async move {
            axum::serve(listener, control_api::router(storms, verifier))
                .await
                .unwrap();
        });
        Api {
            port,
            engine,
            _runtime: runtime,
        }
    }

    /// One request; signed with `sign` when given.
    fn call(&self, method: &str, path: &str, body: &str, sign: Option<[u8; 32]>) -> (u16, Value) {
        let headers = sign
            .map(|key| common::signed_now(&key, &this_pod(), (method, path, body)))
            .unwrap_or_default();
        let (status, body) = common::http_request(self.port, method, path, &headers, body);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    fn signed(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.call(method, path, body, Some(KEY))
    }

    fn run(&self, id: &str, storm: &StormSpec) -> Value {
        let body = json!({"storm": storm, "duration": "400ms", "seed": 4, "lease": "30s"});
        let (status, answer) = self.signed("PUT", &format!("/v1/storms/{id}"), &body.to_string());
        assert_eq!(status, 201, "{answer}");
        for _ in 0..600 {
            let (_, status) = self.signed("GET", &format!("/v1/storms/{id}"), "");
            if ["Completed", "Aborted", "Failed"].contains(&status["phase"].as_str().unwrap()) {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("storm {id} did not finish");
    }
}

#[test]
fn the_audit_endpoint_serves_the_journal_signed_only_and_the_report_counts_it() {
    let api = Api::start();
    preload(api.engine.as_ref());
    let status = api.run("audited", &restore_storm());
    assert_eq!(status["phase"], "Completed", "{status}");

    assert_eq!(api.call("GET", "/v1/storms/audited/audit", "", None).0, 401);
    let (status_code, forged) = api.call("GET", "/v1/storms/audited/audit", "", Some([3; 32]));
    assert_eq!(status_code, 401, "{forged}");
    let (code, audit) = api.signed("GET", "/v1/storms/audited/audit", "");
    assert_eq!(code, 200, "{audit}");

    let (code, history) = api.signed("GET", "/v1/storms/audited/history", "");
    assert_eq!(code, 200);
    let keys = history["keys"].as_array().unwrap();
    let deleted: BTreeSet<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "del" && e["removed"] == true && !e["ret"].is_null())
        .map(|e| {
            keys[e["key"].as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let listed: BTreeSet<String> = audit["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["outcome"], "restored", "no application wrote: {k}");
            k["key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(deleted.len() >= 5, "{deleted:?}");
    assert_eq!(listed, deleted);
    assert_eq!(audit["id"], "audited");
    assert_eq!(audit["summary"]["deleted"], deleted.len());
    assert_eq!(status["report"]["deletes"], audit["summary"], "{status}");

    // A storm on its own synthetic keys deletes no application key.
    let mut synthetic = restore_storm();
    synthetic.keys.source = KeySource::Synthetic;
    synthetic.keys.pattern = None;
    synthetic.restore = false;
    api.run("synthetic", &synthetic);
    let (code, answer) = api.signed("GET", "/v1/storms/synthetic/audit", "");
    assert_eq!(code, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no delete journal"),
        "{answer}"
    );
    assert_eq!(api.signed("GET", "/v1/storms/never/audit", "").0, 404);
}
