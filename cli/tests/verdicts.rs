//! Verdicts and exit statuses that cannot mislead CI, as `mapchaos run` and
//! `mapchaos check` give them: a storm an abort condition stopped is ABORTED
//! (exit 5); failed operations (NOPERM for keys an ACL does not grant, READONLY
//! from a replica, NOAUTH from a server with a password) add no exposure and
//! keep the verdict from PASS; an open-loop rate is spread over the storm
//! and ends at its duration, seen in the history's timestamps.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn mapchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(args)
        .output()
        .expect("run mapchaos")
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("verdicts", name)
}

/// A MapChaos manifest whose `spec:` is `spec` (indented by two spaces).
fn manifest(dir: &Path, spec: &str) -> PathBuf {
    common::manifest(dir, "verdict", spec)
}

/// `mapchaos run FILE ARGS --quiet --output json`: the exit status and the report.
fn run_json(file: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["run", file.to_str().unwrap(), "--quiet", "--output", "json"];
    all.extend_from_slice(args);
    let output = mapchaos(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn total_exposures(report: &Value) -> u64 {
    report["check"]["exposures"]
        .as_object()
        .map_or(0, |kinds| kinds.values().filter_map(Value::as_u64).sum())
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// A throwaway `redis-server` with extra arguments, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, extra: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian's redis-server; scripts/test.sh installs it)",
            );
        let server = Redis { child, port };
        for _ in 0..200 {
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
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hot keys, a full mix: the storm a Redis Cluster node answering MOVED for
/// most keys was first seen with (a cluster seed is now stormed whole).
const HOT: &str = "duration: 2s\nstorm:\n  workers: 8\n  mix: {del: 40, get: 30, set: 30}\n  \
                   keys: {count: 200, prefix: \"verdicts:\"}\n";

#[test]
fn a_server_refusing_most_keys_is_never_a_pass() {
    let dir = scratch("most-keys");
    // An ACL user granted 10 of the storm's 200 keys: NOPERM for the rest.
    let redis = Redis::start(
        &dir,
        &["--user", "stormer", "on", ">pw", "~verdicts:1?", "+@all"],
    );
    let target = format!("redis://stormer:pw@127.0.0.1:{}", redis.port);

    // Closed loop, no spec.abort: the default maxErrorRate stops the storm.
    let file = manifest(&dir, HOT);
    let (code, report) = run_json(&file, &["--target", &target, "--seed", "3"]);
    assert_eq!(code, Some(5), "{report:#}");
    assert_eq!(report["verdict"], "Aborted");
    let reason = report["verdictReason"].as_str().unwrap();
    assert!(reason.contains("abort.maxErrorRate 5.00%"), "{reason}");
    let (ops, errors) = (u(&report["ops"]), u(&report["errors"]));
    assert!(errors * 2 > ops, "most keys are refused: {errors} of {ops}");
    // Failed operations pair with nothing: at most the 8 workers (and the
    // preparer, which has finished by then) overlap on one key.
    let overlap = u(&report["check"]["maxOverlap"]);
    assert!(overlap <= 8, "at most {overlap} ops overlapping on one key");
    let known = u(&report["check"]["opsKnown"]);
    assert!(
        total_exposures(&report) <= known * 8,
        "{} exposures from {known} operations of known outcome",
        total_exposures(&report)
    );

    // Open loop at a rate the watcher never judges (fewer than 200 ops):
    // the error rate at the end keeps it from PASS.
    let file = manifest(&dir, &format!("{HOT}  rate: 40\n"));
    let (code, report) = run_json(&file, &["--target", &target, "--seed", "4"]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["verdict"], "Inconclusive");
    assert_eq!(report["stopReason"], "durationElapsed");
    let reason = report["verdictReason"].as_str().unwrap();
    assert!(reason.contains("of operations failed"), "{reason}");

    // The text report says it in its last line, word first.
    let text = mapchaos(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--target",
        &target,
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("INCONCLUSIVE: "), "{stdout}");
    assert_eq!(text.status.code(), Some(3));
}

#[test]
fn a_read_only_replica_refusing_writes_is_never_a_pass() {
    let dir = scratch("replica");
    // A replica of a master that is not there: reads answer (stale data is
    // served), every SET and DEL is refused with READONLY.
    let absent = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let replica = Redis::start(&dir, &["--replicaof", "127.0.0.1", &absent]);
    let file = manifest(&dir, HOT);
    let (code, report) = run_json(&file, &["--target", &replica.url(), "--seed", "5"]);
    assert_eq!(code, Some(5), "{report:#}");
    assert_eq!(report["verdict"], "Aborted");

    // With the limit lifted the storm runs on: only reads have a known
    // outcome, and reads never race each other, so nothing raced.
    let lifted = format!("{HOT}abort: {{maxErrorRate: \"1\"}}\n");
    let file = manifest(&dir, &lifted);
    let (code, report) = run_json(&file, &["--target", &replica.url(), "--seed", "6"]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["verdict"], "Inconclusive");
    assert_eq!(total_exposures(&report), 0, "{report:#}");
    assert!(u(&report["errors"]) > 0);
}

#[test]
fn a_server_refusing_every_command_proves_nothing() {
    let dir = scratch("noauth");
    let locked = Redis::start(&dir, &["--requirepass", "not-given"]);
    let file = manifest(&dir, HOT);
    let (code, report) = run_json(&file, &["--target", &locked.url(), "--seed", "7"]);
    assert_eq!(code, Some(5), "{report:#}");
    assert_eq!(report["verdict"], "Aborted");

    let lifted = format!("{HOT}abort: {{maxErrorRate: \"1\"}}\n");
    let file = manifest(&dir, &lifted);
    let (code, report) = run_json(&file, &["--target", &locked.url(), "--seed", "8"]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["verdict"], "Inconclusive");
    assert_eq!(report["ops"], report["errors"], "{report:#}");
    assert_eq!(total_exposures(&report), 0, "{report:#}");
    assert_eq!(report["check"]["maxOverlap"], 0);
    assert_eq!(report["check"]["opsKnown"], 0);
    let reason = report["verdictReason"].as_str().unwrap();
    assert!(
        reason.contains("no storm operation has a known outcome"),
        "{reason}"
    );
}

#[test]
fn a_storm_an_abort_condition_stopped_is_aborted_with_exit_5() {
    let dir = scratch("p99");
    // Every second's p99 is over a nanosecond: the first look stops it.
    let spec = "duration: 5s\nstorm:\n  workers: 4\n  mix: {del: 40, get: 40, set: 20}\n  \
                keys: {count: 16, prefix: \"p99:\"}\nabort: {maxP99Latency: 1ns}\n";
    let file = manifest(&dir, spec);
    let (code, report) = run_json(&file, &["--seed", "9"]);
    assert_eq!(code, Some(5), "{report:#}");
    assert_eq!(report["verdict"], "Aborted");
    assert!(
        report["stopReason"]["abortCondition"]
            .as_str()
            .unwrap()
            .contains("abort.maxP99Latency"),
        "{report:#}"
    );
    assert!(u(&report["elapsedMillis"]) < 4000, "it stopped early");

    let text = mapchaos(&["run", file.to_str().unwrap(), "--quiet", "--seed", "9"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(5), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("ABORTED: "), "{stdout}");
    assert!(!stdout.contains("PASS"), "{stdout}");

    let help = mapchaos(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("5 aborted"), "{help}");
}

/// The storm operations' call times in ms since the storm started (the
/// preparer, client 0, left out), sorted, and how many each call time has.
fn storm_calls(history: &Path) -> Vec<f64> {
    let history: Value = serde_json::from_str(&std::fs::read_to_string(history).unwrap()).unwrap();
    let start = u(&history["start"]);
    let mut calls: Vec<f64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["client"] != 0)
        .map(|e| (u(&e["call"]) - start) as f64 / 1e6)
        .collect();
    calls.sort_by(f64::total_cmp);
    calls
}

#[test]
fn a_low_open_loop_rate_is_spread_over_the_storm_and_ends_at_its_duration() {
    let dir = scratch("rate");
    for (rate, workers, pipeline) in [(3u32, 8u32, 1u32), (5, 3, 2)] {
        let spec = format!(
            "duration: 2s\nstorm:\n  workers: {workers}\n  rate: {rate}\n  pipeline: {pipeline}\n  \
             mix: {{del: 40, get: 40, set: 20}}\n  keys: {{count: 4, prefix: \"rate:\"}}\n"
        );
        let file = manifest(&dir, &spec);
        let history = dir.join("history.json");
        let (_, report) = run_json(
            &file,
            &["--seed", "11", "--history", history.to_str().unwrap()],
        );
        let what = format!("rate {rate}, {workers} workers, pipeline {pipeline}");
        let elapsed = u(&report["elapsedMillis"]);
        assert!(
            (1950..2400).contains(&elapsed),
            "{what}: the storm ran {elapsed} ms, not its 2 s"
        );
        let calls = storm_calls(&history);
        // rate × duration operations, in rounds of `pipeline` sent together.
        let expected = (2 * rate) as usize;
        assert!(
            (expected - pipeline as usize..=expected).contains(&calls.len()),
            "{what}: {} operations, not {expected}: {calls:?}",
            calls.len()
        );
        let rounds: Vec<f64> = calls.chunks(pipeline as usize).map(|c| c[0]).collect();
        let spacing = 1000.0 * f64::from(pipeline) / f64::from(rate);
        // No burst at the start: one round in the first interval.
        assert!(
            rounds.iter().filter(|&&t| t < spacing * 0.75).count() == 1,
            "{what}: a burst at the start: {calls:?}"
        );
        // Round k is due at k × spacing: never sent before it (a burst
        // would be), and late only by what a loaded machine adds.
        for (k, &at) in rounds.iter().enumerate() {
            let due = k as f64 * spacing;
            assert!(
                at > due - 5.0 && at < due + 300.0,
                "{what}: round {k} sent at {at} ms, due at {due} ms: {calls:?}"
            );
        }
        let last = *calls.last().unwrap();
        assert!(
            last > 2000.0 - 2.0 * spacing && last < 2000.0,
            "{what}: the last operation at {last} ms: {calls:?}"
        );
    }
}

#[test]
fn a_history_of_failed_operations_checks_inconclusive_and_says_why() {
    let dir = scratch("history");
    let path = dir.join("failed.json");
    // Two clients hammering one key, every operation without a reply.
    let events: Vec<Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "client": 1 + i % 2, "call": 1000 + i, "ret": null,
                "op": "set", "key": 0, "value": (1u64 << 32) + i,
            })
        })
        .collect();
    let history = serde_json::json!({
        "keys": ["k"], "start": 0, "truncated": false, "events": events,
    });
    std::fs::write(&path, history.to_string()).unwrap();
    let output = mapchaos(&["check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("0 total, at most 0 ops overlapping on one key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("INCONCLUSIVE: no operation has a known outcome"),
        "{stdout}"
    );

    // No event at all: no key was checked.
    let empty = dir.join("empty.json");
    std::fs::write(
        &empty,
        r#"{"keys": ["k"], "start": 0, "truncated": false, "events": []}"#,
    )
    .unwrap();
    let output = mapchaos(&["check", empty.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("INCONCLUSIVE: "), "{stdout}");
}
