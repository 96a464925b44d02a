//! The delete audit through the real RESP server and a real storm: every
//! path that removes a key is counted by source and cause, deletes that
//! remove nothing are logged but not counted, and the JSON log names the
//! client, the command and the key (or its hash) within its size bound.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mapchaos_api::spec::{CheckSpec, OpMix, StormSpec};
use mapchaos_sidecar::audit::log::{DeleteLog, DeleteLogConfig};
use mapchaos_sidecar::audit::{Cause, DeleteAudit, Source};
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve};
use mapchaos_sidecar::storm_target::EngineTarget;
use mapchaos_storm::runner::{self, StormControl, StormPlan};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// A RESP server on an engine whose removals go to a [`DeleteAudit`].
struct Audited {
    engine: Arc<dyn MapEngine>,
    audit: Arc<DeleteAudit>,
    metrics: Arc<SidecarMetrics>,
    port: u16,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Audited {
    fn start(log: Option<DeleteLogConfig>) -> Audited {
        let metrics = Arc::new(SidecarMetrics::new());
        let log =
            log.map(|config| DeleteLog::start(config, metrics.delete_log_dropped.clone()).unwrap());
        let audit = DeleteAudit::new(&metrics.registry, log);
        let engine: Arc<dyn MapEngine> =
            Arc::new(ShardedEngine::new(8, Clock::System).with_delete_sink(audit.clone()));
        let (runtime, listener, port) = common::runtime_with_listener(2);
        let shutdown = CancellationToken::new();
        runtime.spawn(serve(
            listener,
            engine.clone(),
            metrics.clone(),
            ServerConfig::default(),
            shutdown.clone(),
        ));
        Audited {
            engine,
            audit,
            metrics,
            port,
            shutdown,
            _runtime: runtime,
        }
    }

    fn connect(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn count(&self, source: Source, cause: Cause) -> u64 {
        self.audit.count(source, cause)
    }

    /// Every non-zero `mapchaos_deletes_total` series, as (source, cause, n).
    fn exported(&self) -> Vec<(String, String, u64)> {
        let text = self.metrics.render();
        let mut series = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("mapchaos_deletes_total{"))
        {
            let (labels, value) = line.rsplit_once(' ').unwrap();
            let label = |name: &str| {
                let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                labels[start..].split('"').next().unwrap().to_owned()
            };
            let n: u64 = value.parse().unwrap();
            if n > 0 {
                series.push((label("source"), label("cause"), n));
            }
        }
        series.sort();
        series
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Whether this sidecar knows `command` (some are newer than this test).
fn knows(con: &mut redis::Connection, command: &str) -> bool {
    let mut query = redis::cmd("COMMAND");
    query.arg("INFO").arg(command);
    match query.query::<redis::Value>(con) {
        Ok(redis::Value::Array(items)) => items.first().is_some_and(|i| *i != redis::Value::Nil),
        _ => false,
    }
}

#[test]
fn every_app_delete_path_is_counted_by_its_cause_and_a_miss_is_not() {
    let map = Audited::start(None);
    let mut con = map.connect();
    for key in ["a", "b", "c", "d", "e", "f"] {
        cmd(&mut con, &["SET", key, "v"]);
    }
    cmd(&mut con, &["DEL", "a", "b", "missing"]);
    cmd(&mut con, &["UNLINK", "c", "missing"]);
    cmd(&mut con, &["EXPIRE", "d", "-1"]);
    cmd(&mut con, &["PEXPIREAT", "e", "1"]);
    cmd(&mut con, &["SET", "f", "v", "PXAT", "1"]);
    // An overwrite is not a delete.
    cmd(&mut con, &["SET", "g", "v1"]);
    cmd(&mut con, &["SET", "g", "v2"]);
    let mut expected = vec![
        ("app", "del", 2),
        ("app", "expire", 2),
        ("app", "set", 1),
        ("app", "unlink", 1),
    ];
    if knows(&mut con, "getdel") {
        cmd(&mut con, &["GETDEL", "g"]);
        cmd(&mut con, &["GETDEL", "g"]);
        expected.push(("app", "getdel", 1));
    }
    if knows(&mut con, "rename") {
        cmd(&mut con, &["SET", "from", "v"]);
        cmd(&mut con, &["SET", "to", "old"]);
        // The source leaves; the destination is overwritten, not deleted.
        cmd(&mut con, &["RENAME", "from", "to"]);
        expected.push(("app", "rename", 1));
    }
    for i in 0..3 {
        cmd(&mut con, &["SET", &format!("flushdb:{i}"), "v"]);
    }
    let before_flush = map.engine.len();
    cmd(&mut con, &["FLUSHDB"]);
    expected.push(("app", "flushdb", before_flush));
    for i in 0..5 {
        cmd(&mut con, &["SET", &format!("flushall:{i}"), "v"]);
    }
    cmd(&mut con, &["FLUSHALL"]);
    expected.push(("app", "flushall", 5));
    cmd(&mut con, &["FLUSHALL"]);

    // Expiry: a write that finds an expired key removes it (lazy), and
    // active expiry removes what nobody touches.
    cmd(&mut con, &["SET", "lazy", "v", "PX", "30"]);
    cmd(&mut con, &["SET", "active", "v", "PX", "30"]);
    std::thread::sleep(Duration::from_millis(80));
    cmd(&mut con, &["SET", "lazy", "again"]);
    assert_eq!(map.engine.expire_cycle(100), 1);
    expected.push(("map", "expired_active", 1));
    expected.push(("map", "expired_lazy", 1));

    expected.sort();
    let expected: Vec<(String, String, u64)> = expected
        .into_iter()
        .map(|(s, c, n)| (s.to_owned(), c.to_owned(), n))
        .collect();
    assert_eq!(map.exported(), expected);
    assert_eq!(map.count(Source::App, Cause::Del), 2);
    assert_eq!(
        map.count(Source::Other, Cause::Other),
        0,
        "every delete had an actor"
    );
}

#[test]
fn a_storms_deletes_are_counted_as_the_storms_and_each_key_once() {
    let map = Audited::start(None);
    let mut storm = StormSpec {
        workers: 4,
        mix: OpMix {
            del: 100,
            get: 0,
            set: 0,
            exists: 0,
            scan: 0,
        },
        ..StormSpec::default()
    };
    storm.keys.count = 40;
    storm.keys.prefix = "audited:".into();
    storm.keys.preload = 1.0;
    let plan = StormPlan {
        storm,
        check: CheckSpec {
            history: false,
            ..CheckSpec::default()
        },
        abort: Default::default(),
        duration: Duration::from_millis(300),
        seed: 3,
        check_threads: 1,
        check_memory: None,
    };
    let target = EngineTarget::new(map.engine.clone()).with_audit("s1", None);
    let outcome = runner::run(&plan, &target, &StormControl::new()).unwrap();
    assert!(
        outcome.report.by_op["del"].ops > 40,
        "the storm deleted each key and more"
    );
    // Preloaded once, never written again: each key can be removed once.
    assert_eq!(map.count(Source::Storm, Cause::Del), 40);
    assert_eq!(map.count(Source::App, Cause::Del), 0);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapchaos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line the writer is still writing does not parse yet.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until the writer thread has written `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let found = lines(path);
        if found.len() >= n {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "fewer than {n} lines in {}: {:?}",
        path.display(),
        lines(path)
    );
}

#[test]
fn the_delete_log_names_the_client_the_command_the_key_and_whether_it_removed() {
    let dir = temp_dir("delete-log");
    let path = dir.join("deletes.jsonl");
    let map = Audited::start(Some(DeleteLogConfig {
        path: path.clone(),
        max_bytes: 1 << 20,
        rotated_files: 1,
        redact_keys: false,
    }));
    let mut con = map.connect();
    cmd(&mut con, &["CLIENT", "SETNAME", "web-1"]);
    let id = match cmd(&mut con, &["CLIENT", "ID"]) {
        redis::Value::Int(id) => id,
        other => panic!("{other:?}"),
    };
    cmd(&mut con, &["SET", "user:1", "v"]);
    cmd(&mut con, &["DEL", "user:1", "user:2"]);
    cmd(&mut con, &["SET", "k", "v"]);
    cmd(&mut con, &["FLUSHALL"]);
    let found = wait_lines(&path, 3);
    assert_eq!(found.len(), 3, "{found:?}");
    let (removed, missed, flushed) = (&found[0], &found[1], &found[2]);
    assert_eq!(removed["source"], "app");
    assert_eq!(removed["cause"], "del");
    assert_eq!(removed["command"], "del");
    assert_eq!(removed["client"]["id"], id);
    assert_eq!(removed["client"]["name"], "web-1");
    assert_eq!(removed["key"], "user:1");
    assert_eq!(removed["removed"], true);
    assert!(
        removed["time"].as_str().unwrap().ends_with('Z'),
        "{removed}"
    );
    assert_eq!(missed["key"], "user:2");
    assert_eq!(missed["removed"], false);
    assert_eq!(flushed["cause"], "flushall");
    assert_eq!(flushed["keys"], 1);
    assert_eq!(flushed["removed"], true);
    // The miss is logged, not counted.
    assert_eq!(map.count(Source::App, Cause::Del), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_redacted_delete_log_holds_key_hashes_and_never_the_keys() {
    let dir = temp_dir("delete-log-redacted");
    let path = dir.join("deletes.jsonl");
    let map = Audited::start(Some(DeleteLogConfig {
        path: path.clone(),
        max_bytes: 1 << 20,
        rotated_files: 0,
        redact_keys: true,
    }));
    let mut con = map.connect();
    cmd(&mut con, &["SET", "secret:42", "v"]);
    cmd(&mut con, &["UNLINK", "secret:42"]);
    let found = wait_lines(&path, 1);
    let digest: String = Sha256::digest(b"secret:42")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(found[0]["keySha256"], digest);
    assert_eq!(found[0]["cause"], "unlink");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret:42"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_delete_log_stays_within_its_files_and_their_size() {
    let dir = temp_dir("delete-log-bounded");
    let path = dir.join("deletes.jsonl");
    let max = 64 << 10;
    let map = Audited::start(Some(DeleteLogConfig {
        path: path.clone(),
        max_bytes: max,
        rotated_files: 2,
        redact_keys: false,
    }));
    let mut con = map.connect();
    // ~150 bytes a line: 5000 lines are ~750 KB, far over 3 × 64 KiB.
    for batch in 0..50 {
        let keys: Vec<String> = (0..100).map(|i| format!("bulk:{batch}:{i}")).collect();
        let mut del = redis::cmd("DEL");
        for key in &keys {
            del.arg(key);
        }
        let _: i64 = del.query(&mut con).unwrap();
    }
    // The writer has caught up once the last delete's line is there (or,
    // had the queue been full, once it has gone quiet).
    let last_key = |path: &Path| lines(path).last().map(|l| l["key"].clone());
    for _ in 0..500 {
        if last_key(&path).is_some_and(|k| k == "bulk:49:99") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let dropped = map.metrics.delete_log_dropped.get();
    if dropped == 0 {
        assert_eq!(last_key(&path).unwrap(), "bulk:49:99");
    }
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let len = entry.metadata().unwrap().len();
        assert!(len <= max, "{}: {len} bytes", entry.path().display());
        files += 1;
    }
    assert_eq!(files, 3, "the current file and two rotated ones");
    std::fs::remove_dir_all(&dir).unwrap();
}
