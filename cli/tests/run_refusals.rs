//! `mapchaos run` refuses bad input before any work starts: every field that
//! sizes memory or time is held to its limit (the memory budget, or a fixed
//! bound), a manifest the cluster would refuse is refused here too, and the
//! flags (`--target`, `--history`, `--seed`, `--request-timeout`) are checked
//! first. Each refusal is exit 2 with a message naming the field and the
//! limit, and comes fast: nothing was preloaded or stormed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapchaos-refuse-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small storm whose `storm:` block is `storm`, with `extra` spec lines.
fn manifest(dir: &Path, storm: &str, extra: &str) -> PathBuf {
    let path = dir.join("storm.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {{name: m}}\n\
             spec:\n  duration: 1s\n  storm:\n    workers: 2\n    \
             mix: {{del: 40, get: 40, set: 20}}\n{storm}{extra}"
        ),
    )
    .unwrap();
    path
}

fn run(file: &Path, flags: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .arg("run")
        .arg(file)
        .args(["--quiet"])
        .args(flags)
        .output()
        .expect("run mapchaos");
    (output, started.elapsed())
}

/// Runs and expects exit 2, fast, with every one of `needles` in stderr.
fn refused(name: &str, storm: &str, extra: &str, flags: &[&str], needles: &[&str]) -> String {
    let dir = scratch(name);
    let file = manifest(&dir, storm, extra);
    let (output, took) = run(&file, flags);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    assert!(
        took < Duration::from_secs(10),
        "refused only after {took:?}: it did work first"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    stderr
}

const KEYS: &str = "    keys: {count: 100, prefix: \"refuse:\"}\n";

#[test]
fn a_billion_keys_are_refused_before_any_preload() {
    refused(
        "billion",
        "    keys: {count: 1000000000, prefix: \"refuse:\"}\n",
        "",
        &["--memory-budget", "2GiB"],
        &[
            "spec.storm.keys.count: 1000000000 is over the limit of ",
            "over the memory budget of 2 GiB (--memory-budget)",
        ],
    );
}

#[test]
fn a_keyspace_over_the_default_budget_is_refused_too() {
    // No flag, no spec field: the machine's budget applies.
    refused(
        "default-budget",
        "    keys: {count: 4000000000, prefix: \"refuse:\"}\n",
        "",
        &[],
        &["spec.storm.keys.count: 4000000000 is over the limit of "],
    );
}

#[test]
fn big_values_are_refused_by_the_budget() {
    refused(
        "value-size",
        "    keys: {count: 100000, prefix: \"refuse:\", valueSize: 1048576}\n",
        "",
        &["--memory-budget", "1GiB"],
        &["spec.storm.keys.valueSize: 1048576 is over the limit of "],
    );
}

#[test]
fn a_long_prefix_is_refused() {
    let prefix = "p".repeat(2000);
    refused(
        "prefix",
        &format!("    keys: {{count: 100, prefix: \"{prefix}\"}}\n"),
        "",
        &[],
        &["spec.storm.keys.prefix: is 2000 bytes, over the limit of 1024 bytes"],
    );
}

#[test]
fn many_workers_are_refused_by_the_budget() {
    refused(
        "workers",
        KEYS,
        "",
        &["--workers", "1024", "--memory-budget", "1GiB"],
        &["spec.storm.workers: 1024 is over the limit of "],
    );
}

#[test]
fn a_deep_pipeline_of_big_values_is_refused_by_the_budget() {
    refused(
        "pipeline",
        "    pipeline: 1024\n    keys: {count: 10, prefix: \"refuse:\", valueSize: 1048576}\n",
        "",
        &["--memory-budget", "1GiB"],
        &["spec.storm.pipeline: 1024 is over the limit of "],
    );
}

#[test]
fn a_long_history_is_refused_by_the_budget() {
    refused(
        "max-ops",
        KEYS,
        "  check: {maxOps: 1000000000}\n",
        &["--memory-budget", "1GiB"],
        &["spec.check.maxOps: 1000000000 is over the limit of "],
    );
}

#[test]
fn a_rate_that_records_too_much_over_its_duration_is_refused() {
    refused(
        "rate",
        &format!("    rate: 5000000\n{KEYS}"),
        "  check: {maxOps: 100000000000}\n",
        &["--memory-budget", "1GiB", "--duration", "10m"],
        &["spec.storm.rate: 5000000 is over the limit of "],
    );
    refused(
        "rate-max",
        &format!("    rate: 1000000000\n{KEYS}"),
        "",
        &[],
        &["spec.storm.rate: 1000000000 is over the limit of 100000000 ops/s"],
    );
}

#[test]
fn the_spec_memory_budget_holds_when_no_flag_is_given() {
    refused(
        "spec-budget",
        &format!("    memoryBudget: 64Mi\n{KEYS}"),
        "",
        &[],
        &["over the memory budget of 64 MiB (spec.storm.memoryBudget)"],
    );
}

#[test]
fn a_search_budget_over_an_hour_is_refused() {
    refused(
        "timeout-per-key",
        KEYS,
        "  check: {timeoutPerKey: 2h}\n",
        &[],
        &["spec.check.timeoutPerKey: 2h is over the limit of 1h"],
    );
}

#[test]
fn a_manifest_over_the_size_limit_is_refused() {
    let padding = format!("# {}\n", "x".repeat(5 << 20));
    refused(
        "file-size",
        KEYS,
        &padding,
        &[],
        &["over the limit of 4194304 bytes for a manifest"],
    );
}

#[test]
fn another_api_version_or_no_spec_is_refused() {
    let dir = scratch("api-version");
    let file = dir.join("v1.yaml");
    std::fs::write(
        &file,
        "apiVersion: mapchaos.io/v1\nkind: MapChaos\nmetadata: {name: m}\nspec: {duration: 1s}\n",
    )
    .unwrap();
    let (output, _) = run(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mapchaos reads only mapchaos.io/v1alpha1"),
        "{stderr}"
    );

    std::fs::write(
        &file,
        "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {name: m}\n",
    )
    .unwrap();
    let (output, _) = run(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no spec"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_the_cluster_refuses_is_refused_locally() {
    refused(
        "schedule",
        KEYS,
        "  schedule: \"every monday\"\n",
        &[],
        &["spec.schedule: \"every monday\" is not a cron schedule"],
    );
    refused(
        "percent",
        KEYS,
        "  selector: {labelSelectors: {app: cart}}\n  mode: fixed-percent\n  value: \"150\"\n",
        &[],
        &["spec.value: \"150\" is not a percentage from 1 to 100"],
    );
    refused(
        "history-limit",
        KEYS,
        "  historyLimit: 1000\n",
        &[],
        &["spec.historyLimit: 1000 is out of range"],
    );
}

#[test]
fn a_malformed_target_is_refused_before_connecting() {
    for target in ["localhost:6379", "redis://127.0.0.1:notaport", "http://x"] {
        refused(
            "target",
            KEYS,
            "",
            &["--target", target],
            &["--target", "is not a Redis URL"],
        );
    }
}

#[test]
fn an_unwritable_history_path_is_refused_before_the_storm() {
    let dir = scratch("history-path");
    let missing = dir.join("no/such/dir/history.json");
    refused(
        "history-missing",
        KEYS,
        "",
        &["--history", missing.to_str().unwrap()],
        &["--history", "cannot create it"],
    );
    refused(
        "history-dir",
        KEYS,
        "",
        &["--history", dir.to_str().unwrap()],
        &["--history", "is a directory"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn time_flags_are_bounded() {
    refused(
        "request-timeout",
        KEYS,
        "",
        &["--request-timeout", "0s"],
        &["--request-timeout must be at least 1ms"],
    );
    refused(
        "request-timeout-long",
        KEYS,
        "",
        &["--request-timeout", "2h"],
        &["--request-timeout", "over the limit of 10m"],
    );
}

#[test]
fn a_seed_over_what_a_manifest_carries_is_refused() {
    refused(
        "seed-flag",
        KEYS,
        "",
        &["--seed", "9007199254740992"],
        &["--seed", "9007199254740992"],
    );
    refused(
        "seed-spec",
        KEYS,
        "  seed: 18446744073709551615\n",
        &[],
        &["spec.seed: 18446744073709551615 is over the limit of 9007199254740991"],
    );
}

#[test]
fn a_seed_a_report_prints_runs_again_from_a_cluster_manifest() {
    let dir = scratch("seed-round-trip");
    let file = manifest(&dir, KEYS, "");
    let (output, _) = run(&file, &["--output", "json"]);
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let seed = report["seed"].as_u64().expect("the report's seed");
    assert!(seed < (1 << 53), "{seed} cannot travel in JSON");

    // The same seed in a manifest the cluster accepts, and in a local run.
    let text = format!(
        "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {{name: again}}\n\
         spec:\n  selector: {{labelSelectors: {{app: cart}}}}\n  seed: {seed}\n  duration: 1s\n  \
         storm:\n    workers: 2\n    mix: {{del: 40, get: 40, set: 20}}\n{KEYS}"
    );
    let spec: mapchaos_api::MapChaos = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(spec.spec.seed, Some(seed));
    assert_eq!(spec.spec.validate(), Ok(()));
    let again = dir.join("again.yaml");
    std::fs::write(&again, &text).unwrap();
    let (output, _) = run(&again, &["--output", "json"]);
    let replay: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(replay["seed"].as_u64(), Some(seed));

    // The CRD's schema takes it: its maximum is the validator's.
    let crd = mapchaos_api::resource::crd_yaml();
    assert!(
        crd.contains("maximum: 9007199254740991.0"),
        "the CRD bounds spec.seed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
