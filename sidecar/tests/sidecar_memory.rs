//! The sidecar's own memory, on the whole service run in-process (RESP and
//! HTTP listeners, housekeeping): finished storms stay within their byte
//! budget, and the RSS follows the map down after a mass delete, as a real
//! `redis-server`'s does. Each test is its own process under nextest, so the
//! process's RSS is this sidecar's.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ed25519_dalek::SigningKey;
use mapchaos_api::signing::{PodIdentity, hex};
use mapchaos_sidecar::SidecarArgs;
use mapchaos_sidecar::memory::resident_bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const KEY: [u8; 32] = [5; 32];
const MB: u64 = 1 << 20;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SidecarArgs,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sidecar service, as `mapchaos sidecar` runs it, on free ports.
struct Sidecar {
    resp: u16,
    http: u16,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Sidecar {
    fn start(extra: &[&str]) -> Sidecar {
        let (resp, http) = (free_port(), free_port());
        let public = hex(SigningKey::from_bytes(&KEY).verifying_key().as_bytes());
        let mut argv = vec![
            "sidecar".to_owned(),
            format!("--resp-addr=127.0.0.1:{resp}"),
            format!("--http-addr=127.0.0.1:{http}"),
            format!("--operator-public-key={public}"),
            "--pod-namespace=test".to_owned(),
            "--pod-name=sidecar".to_owned(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args = Cli::parse_from(argv).args;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        runtime.spawn(mapchaos_sidecar::run(args, shutdown.clone()));
        let sidecar = Sidecar {
            resp,
            http,
            shutdown,
            _runtime: runtime,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", http)).is_ok()
                && TcpStream::connect(("127.0.0.1", resp)).is_ok()
            {
                return sidecar;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the sidecar did not start listening");
    }

    /// A signed HTTP call: (status, body).
    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_call(self.http, method, path, body)
    }

    fn metric(&self, line_start: &str) -> u64 {
        let (_, text) = self.call("GET", "/metrics", "");
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {line_start} in /metrics")) as u64
    }

    fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let (status, body) = self.call("GET", &format!("/v1/storms/{id}"), "");
            assert_eq!(status, 200, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            if ["Completed", "Aborted", "Failed"].contains(&body["phase"].as_str().unwrap()) {
                return body;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("storm {id} did not finish");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn http_call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let pod = PodIdentity::new("test", "sidecar", "");
    let headers = common::signed_now(&KEY, &pod, (method, path, body));
    common::http_request(port, method, path, &headers, body)
}

fn rss() -> u64 {
    resident_bytes().expect("this test reads /proc/self/status")
}

/// A storm that records a large history quickly.
fn history_storm(seed: u64) -> String {
    json!({
        "storm": {"workers": 2, "pipeline": 32, "keys": {"count": 5000, "prefix": format!("mem{seed}:")},
                  "mix": {"get": 50, "set": 40, "del": 10}},
        // A bounded record, so each history is about the same size however
        // fast this machine runs the storm.
        "check": {"maxOps": 30000},
        "duration": "1500ms",
        "seed": seed,
        "lease": "60s",
    })
    .to_string()
}

#[test]
fn six_storms_stay_within_the_finished_storms_budget_and_the_rss_follows() {
    let budget = 3 * MB;
    let sidecar = Sidecar::start(&[&format!("--finished-storms-max-bytes={budget}")]);
    let baseline = rss();
    let mut total_history = 0;
    let mut peak = 0;
    for seed in 1..=6 {
        let id = format!("mem-{seed}");
        let (status, body) = sidecar.call("PUT", &format!("/v1/storms/{id}"), &history_storm(seed));
        assert_eq!(status, 201, "{body}");
        let done = sidecar.wait_final(&id);
        assert_eq!(done["phase"], "Completed", "{done}");
        let (status, history) = sidecar.call("GET", &format!("/v1/storms/{id}/history"), "");
        if status == 200 {
            total_history += history.len() as u64;
        }
        let held = sidecar.metric("mapchaos_finished_storms_bytes ");
        assert!(
            held <= budget,
            "storm {seed}: {held} bytes held, budget {budget}"
        );
        peak = peak.max(rss());
    }
    assert!(
        total_history > 2 * budget,
        "the storms must outgrow the budget for this test to mean anything: {total_history}"
    );
    // The oldest went first, and saying so.
    let (status, body) = sidecar.call("GET", "/v1/storms/mem-1/history", "");
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("dropped for memory"), "{body}");
    assert!(body.contains("--finished-storms-max-bytes"), "{body}");
    let (status, _) = sidecar.call("GET", "/v1/storms/mem-6", "");
    assert_eq!(status, 200, "the newest storm's report is kept");
    let (status, _) = sidecar.call("GET", "/v1/storms/mem-6/history", "");
    assert_eq!(status, 200, "and its history, which fits");

    // Give housekeeping a few seconds to hand back what the storms freed.
    std::thread::sleep(Duration::from_secs(3));
    let after = rss();
    eprintln!(
        "baseline {} MB, peak {} MB, after {} MB, histories {} MB, budget {} MB",
        baseline / MB,
        peak / MB,
        after / MB,
        total_history / MB,
        budget / MB
    );
    // Generous: the budget, the map's keys, the runtime's arenas, the test's
    // own allocations. Without the budget the histories alone are over it.
    let bound = budget + 64 * MB;
    assert!(
        after.saturating_sub(baseline) < bound,
        "RSS grew by {} MB over six storms (bound {} MB)",
        after.saturating_sub(baseline) / MB,
        bound / MB
    );
}

/// A throwaway `redis-server` on a free port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian's redis-server; scripts/test.sh installs it)",
            );
        let server = RedisServer { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipelining RESP connection that keeps no replies.
struct Resp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let writer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        Resp { writer, reader }
    }

    /// Send `commands` in one write and read one simple reply line each.
    fn pipeline(&mut self, commands: &[Vec<&[u8]>]) {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.writer.write_all(&out).unwrap();
        let mut line = String::new();
        for _ in commands {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            assert!(
                line.starts_with('+') || line.starts_with(':'),
                "unexpected reply {line:?}"
            );
        }
    }

    /// About `megabytes` of 1 KiB values under `prefix`.
    fn load(&mut self, prefix: &str, megabytes: usize) -> Vec<Vec<u8>> {
        let value = vec![b'v'; 1000];
        let keys: Vec<Vec<u8>> = (0..megabytes * 1024)
            .map(|i| format!("{prefix}{i}").into_bytes())
            .collect();
        for batch in keys.chunks(500) {
            let commands: Vec<Vec<&[u8]>> =
                batch.iter().map(|k| vec![&b"SET"[..], k, &value]).collect();
            self.pipeline(&commands);
        }
        keys
    }
}

/// Poll `rss` for up to `within` until it is below `target`; the last value.
fn settle(rss: impl Fn() -> u64, target: u64, within: Duration) -> (u64, Duration) {
    let started = Instant::now();
    loop {
        let now = rss();
        if now < target || started.elapsed() >= within {
            return (now, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Load ~100 MB, delete it all with `delete`, and check the RSS comes back
/// to near where it started within a few seconds, in the sidecar and in
/// redis-server alike.
fn rss_returns_after(delete: fn(&mut Resp, &[Vec<u8>])) {
    let sidecar = Sidecar::start(&[]);
    let redis = RedisServer::start();
    for (name, port, rss) in [
        (
            "sidecar",
            sidecar.resp,
            Box::new(rss) as Box<dyn Fn() -> u64>,
        ),
        ("redis-server", redis.port, Box::new(|| redis.rss())),
    ] {
        let mut client = Resp::connect(port);
        let before = rss();
        let keys = client.load("bulk:", 100);
        let loaded = rss();
        assert!(
            loaded > before + 80 * MB,
            "{name}: loading 100 MB took RSS from {} to {} MB",
            before / MB,
            loaded / MB
        );
        delete(&mut client, &keys);
        drop(keys);
        let grown = loaded - before;
        let (after, took) = settle(&rss, before + grown / 5, Duration::from_secs(5));
        eprintln!(
            "{name}: {} MB -> {} MB loaded -> {} MB {:.1}s after the delete",
            before / MB,
            loaded / MB,
            after / MB,
            took.as_secs_f64()
        );
        if name == "sidecar" {
            assert!(
                after < before + grown / 5,
                "the sidecar kept {} of {} MB for 5 s after the delete",
                (after.saturating_sub(before)) / MB,
                grown / MB
            );
        }
    }
}

#[test]
fn rss_returns_to_near_baseline_within_seconds_after_flushall() {
    rss_returns_after(|client, _| client.pipeline(&[vec![&b"FLUSHALL"[..]]]));
}

#[test]
fn rss_returns_to_near_baseline_within_seconds_after_a_mass_del() {
    rss_returns_after(|client, keys| {
        for batch in keys.chunks(500) {
            let mut del: Vec<&[u8]> = vec![b"DEL"];
            del.extend(batch.iter().map(|k| &k[..]));
            client.pipeline(&[del]);
        }
    });
}
