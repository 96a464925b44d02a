//! `mapchaos run --target` restoring existing keys on Debian's redis-server
//! while an application writes them: every key the application wrote keeps
//! its last write (value, value with TTL, or delete), even where the storm overwrote or
//! deleted that write afterwards, whether it wrote with SET/DEL, MSET or
//! MULTI/EXEC; keys it never touched get their original and TTL back; a
//! server that refuses MONITOR (ACL, `rename-command`) stops the storm
//! before anything is touched unless `--restore-unwatched`, and a watch
//! lost mid-storm is reported, never hidden.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Keys seeded: `app:{i}` = `orig-{i}`, every third with a 600 s TTL.
const KEYS: usize = 600;
/// `app:0..PLAIN` are written with SET and DEL, the next `MSETS` with MSET,
/// the next `TXS` inside MULTI/EXEC; the rest only by the storm.
const PLAIN: usize = 40;
const MSETS: usize = 20;
const TXS: usize = 20;
const APP_KEYS: usize = PLAIN + MSETS + TXS;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mapchaos-restore-target-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A storm of `duration` on the seeded keys, with `restore`.
fn manifest(dir: &Path, duration: &str, restore: bool) -> PathBuf {
    let path = dir.join("storm.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata:\n  name: restore-app\n\
             spec:\n  duration: {duration}\n  storm:\n    workers: 4\n    pipeline: 4\n    \
             mix: {{del: 40, get: 20, set: 40}}\n    \
             keys: {{source: existing, pattern: \"app:*\", count: {KEYS}}}\n    \
             restore: {restore}\n  check: {{history: false}}\n"
        ),
    )
    .unwrap();
    path
}

/// A `redis-server` started from a config file holding `config` lines.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, config: &str) -> Redis {
        let port = common::free_port();
        let file = dir.join("redis.conf");
        std::fs::write(
            &file,
            format!(
                "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n{config}\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian's redis-server; scripts/test.sh installs it)",
            );
        let server = Redis { child, port };
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn seed(&self) {
        let mut pipe = redis::pipe();
        for i in 0..KEYS {
            pipe.cmd("SET")
                .arg(format!("app:{i}"))
                .arg(format!("orig-{i}"));
            if i % 3 == 0 {
                pipe.arg("EX").arg(600);
            }
            pipe.ignore();
        }
        pipe.query::<()>(&mut self.connect()).unwrap();
    }

    /// Every key's value and PTTL.
    fn state(&self) -> Vec<(Option<String>, i64)> {
        let mut pipe = redis::pipe();
        for i in 0..KEYS {
            pipe.cmd("GET").arg(format!("app:{i}"));
            pipe.cmd("PTTL").arg(format!("app:{i}"));
        }
        let replies: Vec<redis::Value> = pipe.query(&mut self.connect()).unwrap();
        replies
            .chunks(2)
            .map(|pair| {
                (
                    redis::from_redis_value(pair[0].clone()).unwrap(),
                    redis::from_redis_value(pair[1].clone()).unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mapchaos run FILE --output json ARGS`, its stderr followed line by line.
struct Run {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Run {
    fn start(file: &Path, args: &[&str]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
            .arg("run")
            .arg(file)
            .args(["--output", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mapchaos");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Run {
            child,
            stderr: lines,
            lines: Vec::new(),
        }
    }

    /// Wait for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(text);
                self.lines.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("no {text:?} on stderr: {:?}", self.lines);
    }

    /// Exit status, the JSON report (if any) and all of stderr.
    fn finish(mut self) -> (Option<i32>, Option<Value>, String) {
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(line);
        }
        (
            status.code(),
            serde_json::from_str(&stdout).ok(),
            self.lines.join("\n"),
        )
    }
}

/// What the application last did to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    Set(String),
    /// With a TTL (`SET … EX`, `SETEX`): kept with a TTL.
    SetTtl(String),
    Deleted,
}

/// The application: three writers on their own keys until `stop`, each
/// returning its last write per key.
fn application(redis: &Redis, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<HashMap<usize, Last>>> {
    let spawn = |writer: fn(&mut redis::Connection, u64) -> Vec<(usize, Last)>| {
        let mut connection = redis.connect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut last = HashMap::new();
            let mut round = 0;
            while !stop.load(Ordering::Acquire) {
                round += 1;
                for (key, write) in writer(&mut connection, round) {
                    last.insert(key, write);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            last
        })
    };
    vec![
        // SET (some with a TTL, some SETEX) and DEL, one key per command;
        // every fifth write a delete.
        spawn(|connection, round| {
            let key = (round as usize * 7) % PLAIN;
            if round % 5 == 0 {
                redis::cmd("DEL")
                    .arg(format!("app:{key}"))
                    .query::<()>(connection)
                    .unwrap();
                vec![(key, Last::Deleted)]
            } else if round % 5 == 1 {
                let value = format!("ex-{round}");
                redis::cmd("SET")
                    .arg(format!("app:{key}"))
                    .arg(&value)
                    .arg("EX")
                    .arg(900)
                    .query::<()>(connection)
                    .unwrap();
                vec![(key, Last::SetTtl(value))]
            } else if round % 5 == 2 {
                let value = format!("setex-{round}");
                redis::cmd("SETEX")
                    .arg(format!("app:{key}"))
                    .arg(900)
                    .arg(&value)
                    .query::<()>(connection)
                    .unwrap();
                vec![(key, Last::SetTtl(value))]
            } else {
                let value = format!("set-{round}");
                redis::cmd("SET")
                    .arg(format!("app:{key}"))
                    .arg(&value)
                    .query::<()>(connection)
                    .unwrap();
                vec![(key, Last::Set(value))]
            }
        }),
        // MSET of three keys at once.
        spawn(|connection, round| {
            let mut command = redis::cmd("MSET");
            let mut wrote = Vec::new();
            for j in 0..3 {
                let key = PLAIN + (round as usize * 3 + j) % MSETS;
                let value = format!("mset-{round}-{j}");
                command.arg(format!("app:{key}")).arg(&value);
                wrote.push((key, Last::Set(value)));
            }
            command.query::<()>(connection).unwrap();
            wrote
        }),
        // A pipelined MULTI/EXEC: two SETs and a DEL.
        spawn(|connection, round| {
            let key = |j: usize| PLAIN + MSETS + (round as usize * 3 + j) % TXS;
            let (a, b, c) = (key(0), key(1), key(2));
            let (va, vb) = (format!("tx-{round}-a"), format!("tx-{round}-b"));
            redis::pipe()
                .atomic()
                .set(format!("app:{a}"), &va)
                .ignore()
                .set(format!("app:{b}"), &vb)
                .ignore()
                .del(format!("app:{c}"))
                .ignore()
                .query::<()>(connection)
                .unwrap();
            vec![(a, Last::Set(va)), (b, Last::Set(vb)), (c, Last::Deleted)]
        }),
    ]
}

fn outcomes(report: &Value) -> HashMap<String, u64> {
    report["restore"]["outcomes"]
        .as_object()
        .unwrap_or_else(|| panic!("no restore outcomes in {report}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Keys the application never wrote hold their original, with their TTL.
fn assert_untouched_are_back(state: &[(Option<String>, i64)], what: &str) {
    let mut wrong = Vec::new();
    for (i, (value, ttl)) in state.iter().enumerate().skip(APP_KEYS) {
        let ttl_ok = if i % 3 == 0 {
            *ttl > 500_000
        } else {
            *ttl == -1
        };
        if value.as_deref() != Some(format!("orig-{i}").as_str()) || !ttl_ok {
            wrong.push(format!("app:{i} = {value:?} (pttl {ttl})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} keys the application never wrote are not back: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn every_application_write_survives_the_restore_even_ones_the_storm_overwrote() {
    let dir = scratch("kept");
    let redis = Redis::start(&dir, "");
    redis.seed();
    let file = manifest(&dir, "3s", true);
    let stop = Arc::new(AtomicBool::new(false));
    let mut run = Run::start(&file, &["--target", &redis.url()]);
    run.wait_for("phase: storming");
    // Writing through the first half of the storm, so that the storm's
    // workers overwrite or delete most of these writes afterwards.
    let writers = application(&redis, &stop);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Release);
    let mut last = HashMap::new();
    for writer in writers {
        last.extend(writer.join().unwrap());
    }
    let (status, report, stderr) = run.finish();
    assert_eq!(
        status,
        Some(3),
        "no history checked: inconclusive; {stderr}"
    );
    let report = report.expect("a JSON report");
    let counts = outcomes(&report);
    println!("restore outcomes: {counts:?}");
    assert!(
        report["restore"]["guarantee"]
            .as_str()
            .unwrap()
            .starts_with("MONITOR"),
        "{report}"
    );
    for outcome in [
        "failed",
        "restored_unwatched",
        "contended",
        "app_write_lost",
    ] {
        assert!(!counts.contains_key(outcome), "{outcome}: {counts:?}");
    }
    // The storm overwrote or deleted application writes, and those were
    // put back: the case a restore without the watch reverts.
    assert!(
        counts.get("app_write_restored").copied().unwrap_or(0) >= APP_KEYS as u64 / 2,
        "{counts:?}"
    );
    assert!(
        counts.get("restored").copied().unwrap_or(0) > 100,
        "{counts:?}"
    );
    assert_eq!(
        last.len(),
        APP_KEYS,
        "every application key was written: {last:?}"
    );

    let state = redis.state();
    let mut reverted = Vec::new();
    for (&key, write) in &last {
        let (value, ttl) = &state[key];
        let kept = match write {
            Last::Set(v) => value.as_deref() == Some(v.as_str()) && *ttl == -1,
            Last::SetTtl(v) => {
                value.as_deref() == Some(v.as_str()) && *ttl > 800_000 && *ttl <= 900_000
            }
            Last::Deleted => value.is_none(),
        };
        if !kept {
            reverted.push(format!(
                "app:{key}: app {write:?}, now {value:?} (pttl {ttl})"
            ));
        }
    }
    assert!(
        reverted.is_empty(),
        "{} of {} application writes not kept: {reverted:?}",
        reverted.len(),
        last.len()
    );
    assert!(
        last.values().any(|w| *w == Last::Deleted)
            && last.values().any(|w| matches!(w, Last::SetTtl(_))),
        "some application writes were deletes, some had a TTL"
    );
    assert_untouched_are_back(&state, "watched");
}

/// A server that refuses MONITOR: the storm does not start and nothing is
/// touched; with `--restore-unwatched` it runs and says so key by key.
fn assert_refused_then_unwatched(redis: &Redis, url: &str, why: &str) {
    redis.seed();
    let dir = scratch(why);
    let file = manifest(&dir, "1s", true);
    let (status, report, stderr) = Run::start(&file, &["--target", url]).finish();
    assert_eq!(status, Some(4), "{why}: {stderr}");
    assert!(report.is_none(), "{why}: no storm ran");
    assert!(
        stderr.contains("cannot watch the application's writes")
            && stderr.contains("MONITOR")
            && stderr.contains("--restore-unwatched")
            && stderr.contains("nothing was touched"),
        "{why}: {stderr}"
    );
    assert_untouched_are_back(&redis.state(), &format!("{why}, refused"));
    assert!(
        redis.state()[..APP_KEYS]
            .iter()
            .enumerate()
            .all(|(i, (v, _))| v.as_deref() == Some(format!("orig-{i}").as_str())),
        "{why}: the keys were touched"
    );

    let (status, report, stderr) =
        Run::start(&file, &["--target", url, "--restore-unwatched"]).finish();
    assert_eq!(status, Some(3), "{why}: {stderr}");
    assert!(
        stderr.contains("warning: the application's writes"),
        "{stderr}"
    );
    let report = report.expect("a JSON report");
    let counts = outcomes(&report);
    assert!(
        counts.get("restored_unwatched").copied().unwrap_or(0) > 0,
        "{why}: {counts:?}"
    );
    assert!(!counts.contains_key("restored"), "{why}: {counts:?}");
    assert!(!counts.contains_key("failed"), "{why}: {counts:?}");
    let state = redis.state();
    assert_untouched_are_back(&state, why);
}

#[test]
fn an_acl_without_monitor_refuses_the_restore_before_anything_is_deleted() {
    let dir = scratch("acl");
    let redis = Redis::start(&dir, "user stormer on >pw ~* &* +@all -monitor");
    let url = format!("redis://stormer:pw@127.0.0.1:{}", redis.port);
    assert_refused_then_unwatched(&redis, &url, "acl");
}

#[test]
fn a_renamed_monitor_refuses_the_restore_before_anything_is_deleted() {
    let dir = scratch("renamed");
    let redis = Redis::start(&dir, "rename-command MONITOR \"\"");
    let url = redis.url();
    assert_refused_then_unwatched(&redis, &url, "renamed");
}

#[test]
fn a_watch_lost_mid_storm_is_reported_and_its_keys_counted_unwatched() {
    let dir = scratch("lost");
    let redis = Redis::start(&dir, "");
    redis.seed();
    let file = manifest(&dir, "2s", true);
    let mut run = Run::start(&file, &["--target", &redis.url()]);
    run.wait_for("phase: storming");
    // An operator killing the monitor connection (flags=O) mid-storm.
    let mut admin = redis.connect();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let monitor = clients
        .lines()
        .find(|line| line.split(' ').any(|f| f == "flags=O"))
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("a monitor client: {clients}"))
        .to_owned();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&monitor)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    let (status, report, stderr) = run.finish();
    assert_eq!(status, Some(3), "{stderr}");
    let report = report.expect("a JSON report");
    let counts = outcomes(&report);
    assert!(
        counts.get("restored_unwatched").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(!counts.contains_key("restored"), "{counts:?}");
    let guarantee = report["restore"]["guarantee"].as_str().unwrap();
    assert!(guarantee.contains("the watch was lost"), "{guarantee}");
    assert_untouched_are_back(&redis.state(), "lost");
}

/// What the watch costs: the same storm with and without MONITOR on the
/// same server, side by side (printed for the record). The restoring run
/// must really have watched, and still storm at a useful rate.
#[test]
fn the_cost_of_watching_side_by_side() {
    let dir = scratch("cost");
    let redis = Redis::start(&dir, "");
    let mut rates = Vec::new();
    for restore in [false, true, false, true] {
        redis.seed();
        let file = manifest(&dir, "2s", restore);
        let (_, report, stderr) = Run::start(&file, &["--target", &redis.url()]).finish();
        let report = report.unwrap_or_else(|| panic!("a JSON report: {stderr}"));
        assert_eq!(report["restore"].is_object(), restore, "{report}");
        rates.push((restore, report["opsPerSecond"].as_f64().unwrap()));
    }
    let mean = |watched: bool| {
        let picked: Vec<f64> = rates
            .iter()
            .filter(|(w, _)| *w == watched)
            .map(|(_, r)| *r)
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    let (plain, watched) = (mean(false), mean(true));
    println!(
        "storm ops/s without the watch {plain:.0}, with MONITOR {watched:.0} ({:.0}%)",
        100.0 * watched / plain
    );
    assert!(watched > plain / 10.0, "{rates:?}");
}
