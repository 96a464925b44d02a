//! `mapchaos run --target PRIMARY --reads REPLICA` against Debian's
//! redis-server: a primary and a `replicaof` replica whose replication
//! stream arrives late (a relay holds it back), as an application reading
//! from a replica sees it. Reads on the lagging replica fail the storm with
//! stale-read witnesses naming it and a non-zero delete-visibility lag;
//! reads on the primary pass with none; restores write the primary only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::RedisServer;
use serde_json::Value;

/// How late the replica gets every write.
const LAG: Duration = Duration::from_millis(200);

fn scratch(name: &str) -> PathBuf {
    common::scratch("split-reads", name)
}

fn primary() -> RedisServer {
    RedisServer::start_with(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ])
}

/// Hot keys, many deletes and reads: a lagging replica shows deletes late.
fn storm(dir: &Path, keys: &str) -> PathBuf {
    common::manifest(
        dir,
        "split",
        &format!(
            "duration: 2s\nstorm:\n  workers: 4\n  mix: {{del: 35, get: 45, set: 20}}\n  keys: {keys}\n"
        ),
    )
}

fn mapchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(args)
        .env_remove("MAPCHAOS_TARGET_PASSWORD")
        .output()
        .expect("run mapchaos")
}

fn run_json(file: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec![
        "run",
        file.to_str().unwrap(),
        "--output",
        "json",
        "--seed",
        "21",
    ];
    all.extend_from_slice(args);
    let output = mapchaos(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    (output.status.code(), report, stderr)
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

#[test]
fn reads_on_a_lagging_replica_fail_with_stale_reads_naming_it_and_a_lag_figure() {
    let dir = scratch("lagging");
    let primary = primary();
    let (replica, _link) = primary.lagging_replica(LAG);
    let file = storm(&dir, "{count: 32, prefix: \"split:\"}");
    let (code, report, stderr) = run_json(
        &file,
        &["--target", &primary.url(), "--reads", &replica.url()],
    );
    assert_eq!(code, Some(1), "{report:#}\n{stderr}");
    assert_eq!(report["verdict"], "Fail");
    // Every SET and DEL went to the primary: the read-only replica refused none.
    assert_eq!(u(&report["errors"]), 0, "{report:#}");
    assert!(
        u(&report["check"]["anomalies"]["stale_read"]) > 0,
        "{report:#}"
    );
    let named = format!("read endpoint {}", replica.url());
    let witness = report["check"]["witnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "stale_read")
        .unwrap_or_else(|| panic!("a stale_read witness: {report:#}"));
    assert!(
        witness["explanation"].as_str().unwrap().contains(&named),
        "{witness:#}"
    );
    let endpoints = report["readEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["endpoint"], replica.url());
    assert_eq!(endpoints[0]["workers"], serde_json::json!([1, 2, 3, 4]));
    let lag = &endpoints[0]["deleteVisibility"];
    assert!(u(&lag["deletes"]) > 0, "{lag}");
    assert!(u(&lag["readLate"]) > 0, "{lag}");
    // The replica is LAG behind: the latest late read comes well after the DEL.
    assert!(u(&lag["maxMicros"]) >= 50_000, "{lag}");
    assert!(u(&lag["maxMicros"]) >= u(&lag["p99Micros"]));

    // The text report has the figure too.
    let text = mapchaos(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--target",
        &primary.url(),
        "--reads",
        &replica.url(),
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("delete visibility"), "{stdout}");
    assert!(stdout.contains(&replica.url()), "{stdout}");
}

#[test]
fn reads_on_the_primary_pass_with_no_late_read() {
    let dir = scratch("primary");
    let primary = primary();
    let file = storm(&dir, "{count: 32, prefix: \"split:\"}");
    let (code, report, stderr) = run_json(
        &file,
        &["--target", &primary.url(), "--reads", &primary.url()],
    );
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(report["verdict"], "Pass");
    let lag = &report["readEndpoints"][0]["deleteVisibility"];
    assert!(u(&lag["deletes"]) > 0, "{lag}");
    assert_eq!(u(&lag["readLate"]), 0, "{lag}");
    assert_eq!(u(&lag["maxMicros"]), 0, "{lag}");
}

#[test]
fn a_restore_with_split_reads_writes_the_primary_only() {
    let dir = scratch("restore");
    let primary = primary();
    let (replica, _link) = primary.lagging_replica(Duration::from_millis(20));
    for i in 0..40 {
        primary.cli(&["set", &format!("app:{i}"), &format!("original-{i}")]);
    }
    let file = storm(
        &dir,
        "{source: existing, pattern: \"app:*\", count: 40}\n  restore: true",
    );
    let (code, report, stderr) = run_json(
        &file,
        &["--target", &primary.url(), "--reads", &replica.url()],
    );
    // Other clients may write existing keys: a pass, a fail or inconclusive, never an error.
    assert!(
        matches!(code, Some(0 | 1 | 3)),
        "{code:?} {report:#}\n{stderr}"
    );
    assert_eq!(u(&report["errors"]), 0, "{report:#}");
    assert!(stderr.contains("restore: "), "{stderr}");
    for i in 0..40 {
        assert_eq!(
            primary.cli(&["get", &format!("app:{i}")]).trim(),
            format!("original-{i}"),
            "app:{i} is back on the primary"
        );
    }
}

#[test]
fn more_read_endpoints_than_workers_is_bad_input() {
    let dir = scratch("too-many");
    let file = storm(&dir, "{count: 8, prefix: \"split:\"}");
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut args = vec!["run", file.to_str().unwrap(), "--target", &url];
    for _ in 0..5 {
        args.extend(["--reads", &url]);
    }
    let output = mapchaos(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--reads gives 5 read endpoints"),
        "{stderr}"
    );

    // A read endpoint that does not answer is named.
    let primary = primary();
    let (code, _, stderr) = {
        let output = mapchaos(&[
            "run",
            file.to_str().unwrap(),
            "--target",
            &primary.url(),
            "--reads",
            &url,
        ]);
        (
            output.status.code(),
            (),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach --reads {url}"))
            && stderr.contains(&format!("node 127.0.0.1:{port} unreachable")),
        "{stderr}"
    );
}
