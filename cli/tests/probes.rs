//! `mapchaos run` with steady-state probes against real local HTTP servers
//! (a tiny application whose health the test scripts, a fake Prometheus)
//! and, where it matters whether a storm ran, a real redis-server: a
//! passing probe keeps the verdict, a failed `before` probe means no storm
//! (exit 8), a failed `stopOnFailure` probe stops the storm early (exit 7),
//! and a probe failing on a map that held fails the run (exit 7).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    common::scratch("probes", name)
}

fn manifest(dir: &Path, spec: &str) -> PathBuf {
    common::manifest(dir, "probed", spec)
}

/// `mapchaos run FILE ARGS --quiet --output json`.
fn run_json(file: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["run", file.to_str().unwrap(), "--quiet", "--output", "json"];
    all.extend_from_slice(args);
    let output: Output = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(&all)
        .output()
        .expect("run mapchaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    (output.status.code(), report, stderr)
}

/// An HTTP server on a thread of its own: `/healthz` answers 200 "ok" for
/// the first `healthy_calls` calls, then 503; `/api/v1/query` answers as a
/// Prometheus whose `mapchaos_demo_surprises_total` is `surprises`.
struct App {
    addr: SocketAddr,
    calls: Arc<AtomicU32>,
}

impl App {
    fn start(healthy_calls: u32, surprises: &'static str) -> App {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let health = move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < healthy_calls {
                            (StatusCode::OK, "ok")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "down")
                        }
                    }
                };
                let query = move || async move {
                    serde_json::json!({"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {"kind": "lost_cart"}, "value": [1.0, surprises]}]}})
                    .to_string()
                };
                let router = Router::new()
                    .route("/healthz", get(health))
                    .route("/api/v1/query", get(query));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
        });
        App {
            addr: rx.recv().unwrap(),
            calls,
        }
    }

    fn health(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    fn prometheus(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A throwaway `redis-server`, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let server = Redis { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Commands the server processed, from `INFO stats`.
    fn commands(&self) -> u64 {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "INFO", "stats"])
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_commands_processed in INFO stats")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const STORM: &str = "storm: {workers: 2, keys: {count: 200}}\n";

#[test]
fn a_healthy_continuous_probe_keeps_a_passing_verdict() {
    let app = App::start(u32::MAX, "0");
    let dir = scratch("healthy");
    let file = manifest(
        &dir,
        &format!(
            "duration: 2s\n{STORM}probes:\n  - name: health\n    interval: 1s\n    http: {{url: '{}', bodyMatch: ok}}\n",
            app.health()
        ),
    );
    let (code, report, stderr) = run_json(&file, &[]);
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    assert_eq!(report["verdict"], "Pass");
    assert_eq!(report["mapVerdict"], "Pass");
    let probe = &report["probes"][0];
    assert_eq!(probe["name"], "health");
    assert_eq!(probe["phase"], "Passed");
    assert_eq!(probe["successPercent"], 100);
    let attempts = probe["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "before, during and after: {probe}");
    assert_eq!(u64::from(app.calls.load(Ordering::SeqCst)), attempts);
}

#[test]
fn a_failed_before_probe_runs_no_storm_and_exits_8() {
    let app = App::start(0, "0");
    let dir = scratch("before");
    let redis = Redis::start(&dir);
    let file = manifest(
        &dir,
        &format!(
            "duration: 2s\n{STORM}probes:\n  - name: health\n    mode: before\n    failureThreshold: 2\n    interval: 1s\n    http: {{url: '{}'}}\n",
            app.health()
        ),
    );
    let before = redis.commands();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (code, report, stderr) = run_json(&file, &["--target", &url]);
    assert_eq!(code, Some(8), "{report}\n{stderr}");
    assert_eq!(report["verdict"], "Fail");
    assert_eq!(report["probes"][0]["phase"], "Failed");
    assert_eq!(
        report["probes"][0]["attempts"], 2,
        "tried up to failureThreshold times"
    );
    assert!(report.get("ops").is_none(), "no storm report: {report}");
    assert!(stderr.contains("no storm ran"), "{stderr}");
    assert!(
        report["verdictReason"]
            .as_str()
            .unwrap()
            .contains("probe health failed before the storm"),
        "{report}"
    );
    // What the server saw: at most the connection check, never a storm.
    let seen = redis.commands() - before;
    assert!(seen < 10, "the server processed {seen} commands");
}

#[test]
fn a_failed_stop_on_failure_probe_stops_the_storm_early_and_exits_7() {
    // Healthy for the before attempt and the first during one, then down.
    let app = App::start(2, "0");
    let dir = scratch("stop");
    let file = manifest(
        &dir,
        &format!(
            "duration: 60s\n{STORM}probes:\n  - name: health\n    interval: 1s\n    stopOnFailure: true\n    http: {{url: '{}'}}\n",
            app.health()
        ),
    );
    let started = Instant::now();
    let (code, report, stderr) = run_json(&file, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a 60 s storm stopped early"
    );
    assert_eq!(code, Some(7), "{report}\n{stderr}");
    assert!(
        report["elapsedMillis"].as_u64().unwrap() < 10_000,
        "{}",
        report["elapsedMillis"]
    );
    let why = report["stopReason"]["abortCondition"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("probe health failed"),
        "{}",
        report["stopReason"]
    );
    assert_eq!(report["verdict"], "Fail");
    assert_eq!(report["probes"][0]["phase"], "Failed");
    assert!(
        stderr.contains("probe health failed during the storm"),
        "{stderr}"
    );
}

#[test]
fn a_prometheus_probe_fails_a_run_the_map_alone_passes() {
    let app = App::start(u32::MAX, "3");
    let dir = scratch("prometheus");
    let file = manifest(
        &dir,
        &format!(
            "duration: 2s\n{STORM}probes:\n  - name: no-surprises\n    mode: after\n    prometheus:\n      url: '{}'\n      query: sum(mapchaos_demo_surprises_total)\n      comparison: {{op: '==', value: 0}}\n",
            app.prometheus()
        ),
    );
    let (code, report, stderr) = run_json(&file, &[]);
    assert_eq!(code, Some(7), "{report}\n{stderr}");
    assert_eq!(report["mapVerdict"], "Pass", "the map held");
    assert_eq!(report["verdict"], "Fail", "the application did not");
    assert_eq!(
        report["probes"][0]["message"],
        "after: {kind=lost_cart} = 3, not == 0 (1 sample(s))"
    );
    let reason = report["verdictReason"].as_str().unwrap();
    assert!(
        reason.starts_with("the map held, but probe(s) no-surprises failed"),
        "{reason}"
    );
}

#[test]
fn the_text_report_lists_the_probes_before_its_verdict_line() {
    let app = App::start(u32::MAX, "3");
    let dir = scratch("text");
    let file = manifest(
        &dir,
        &format!(
            "duration: 1s\n{STORM}probes:\n  - name: no-surprises\n    mode: after\n    prometheus:\n      url: '{}'\n      query: x\n      comparison: {{op: '<', value: 1}}\n",
            app.prometheus()
        ),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("FAIL: the map held, but probe(s) no-surprises failed"),
        "{text}"
    );
    assert!(text.contains("steady-state probes"), "{text}");
    assert!(
        text.contains("no-surprises") && text.contains("Failed"),
        "{text}"
    );
}
