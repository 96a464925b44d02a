//! Signals delivered to the real binary in every phase: `mapchaos run` stops
//! preparing (reading existing keys, preloading), storming (the rate
//! limiter's sleeps too) or checking within a second, restores what the
//! storm took, prints the partial report and exits 128 + the signal; a
//! signal during the restore never cuts it short, and only a third forces
//! the exit (status 6, saying what was left). `mapchaos sidecar` getting
//! SIGTERM mid-storm stops it, restores, then exits.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{RedisServer, send_signal};
use redis::Commands;

/// The bound on stopping a phase: generous for a loaded debug build, real.
const PROMPT: Duration = Duration::from_secs(1);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapchaos-signals-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn manifest(name: &str, spec: &str) -> PathBuf {
    let path = scratch(name).join("storm.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {{name: {name}}}\nspec:\n{spec}"),
    )
    .unwrap();
    path
}

/// A running `mapchaos run`, its stderr lines arriving on a channel.
struct Run {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Run {
    fn start(manifest: &PathBuf, extra: &[&str]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
            .arg("run")
            .arg(manifest)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mapchaos run");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Run {
            child,
            lines,
            stderr: Vec::new(),
            stdout,
        }
    }

    /// Wait for a stderr line starting with `prefix`; when it came.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let found = line.starts_with(prefix);
                    self.stderr.push(line);
                    if found {
                        return at;
                    }
                }
                Err(_) => panic!(
                    "no stderr line {prefix:?} within {timeout:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    fn signal(&self, signal: &str) -> Instant {
        send_signal(&self.child, signal);
        Instant::now()
    }

    /// Wait for the exit (at most `timeout`): status, stdout, all of stderr.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Instant, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "mapchaos run did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let exited = Instant::now();
        let stdout = self.stdout.join().unwrap();
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(line);
        }
        (status, exited, stdout, self.stderr.join("\n"))
    }
}

fn connect(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// `count` keys `prefix{i}` = `orig-{i}`, every third with a 600 s TTL.
fn seed(redis: &RedisServer, prefix: &str, count: usize) {
    let mut connection = connect(redis);
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(format!("orig-{i}"));
            if i % 3 == 0 {
                pipe.arg("EX").arg(600);
            }
            pipe.ignore();
        }
        pipe.query::<()>(&mut connection).unwrap();
    }
}

/// Every seeded key holds its original, with its TTL.
fn assert_all_back(redis: &RedisServer, prefix: &str, count: usize, what: &str) {
    let mut connection = connect(redis);
    let mut wrong = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("GET").arg(format!("{prefix}{i}"));
            pipe.cmd("PTTL").arg(format!("{prefix}{i}"));
        }
        let replies: Vec<redis::Value> = pipe.query(&mut connection).unwrap();
        for (&i, pair) in chunk.iter().zip(replies.chunks(2)) {
            let value: Option<String> = redis::from_redis_value(pair[0].clone()).unwrap();
            let ttl: i64 = redis::from_redis_value(pair[1].clone()).unwrap();
            let ttl_ok = if i % 3 == 0 { ttl > 500_000 } else { ttl == -1 };
            if value.as_deref() != Some(format!("orig-{i}").as_str()) || !ttl_ok {
                wrong.push(format!("{prefix}{i} = {value:?} (pttl {ttl})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} of {count} keys not back: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

fn dbsize(redis: &RedisServer) -> u64 {
    redis::cmd("DBSIZE").query(&mut connect(redis)).unwrap()
}

fn code_of(signal: &str) -> i32 {
    128 + match signal {
        "HUP" => 1,
        "INT" => 2,
        "TERM" => 15,
        other => panic!("{other}"),
    }
}

fn existing_storm(name: &str, prefix: &str, count: usize, duration: &str, mix: &str) -> PathBuf {
    manifest(
        name,
        &format!(
            "  duration: {duration}\n  storm:\n    workers: 4\n    pipeline: 8\n    mix: {mix}\n    \
             keys: {{source: existing, pattern: \"{prefix}*\", count: {count}}}\n    restore: true\n  \
             check: {{history: false}}\n"
        ),
    )
}

#[test]
fn each_signal_during_a_target_storm_stops_it_restores_every_key_and_reports() {
    for signal in ["INT", "TERM", "HUP"] {
        let redis = RedisServer::start();
        seed(&redis, "app:", 1000);
        let file = existing_storm(
            &format!("storm-{signal}"),
            "app:",
            1000,
            "60s",
            "{del: 60, get: 20, set: 20}",
        );
        let mut run = Run::start(&file, &["--target", &redis.url()]);
        run.wait_for("phase: storming", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(500));
        assert!(dbsize(&redis) < 1000, "{signal}: the storm deleted keys");
        let sent = run.signal(signal);
        let stopped = run.wait_for("phase: restoring", Duration::from_secs(10));
        let (status, exited, stdout, stderr) = run.finish(Duration::from_secs(30));
        assert!(
            stopped - sent < PROMPT,
            "{signal}: the storm took {:?} to stop",
            stopped - sent
        );
        assert!(
            exited - sent < PROMPT * 3,
            "{signal}: exit {:?} after the signal",
            exited - sent
        );
        assert_eq!(status.code(), Some(code_of(signal)), "{signal}: {stderr}");
        assert!(
            stdout.contains("mapchaos storm report"),
            "{signal}: {stdout}"
        );
        assert!(stdout.contains("stopped on request"), "{signal}: {stdout}");
        assert!(
            stderr.contains(&format!("stopped by SIG{signal}")),
            "{stderr}"
        );
        assert!(stderr.contains("restore: restored "), "{stderr}");
        assert_all_back(&redis, "app:", 1000, signal);
    }
}

#[test]
fn a_signal_while_reading_the_existing_keys_stops_the_preparation_at_once() {
    let redis = RedisServer::start();
    seed(&redis, "big:", 30_000);
    let file = existing_storm("prepare", "big:", 30_000, "60s", "{del: 100}");
    let mut run = Run::start(&file, &["--target", &redis.url()]);
    run.wait_for("phase: preparing", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let sent = run.signal("TERM");
    let (status, exited, stdout, stderr) = run.finish(Duration::from_secs(30));
    assert!(
        !stderr.contains("phase: storming"),
        "the preparation must still run when signalled (make the keyspace bigger): {stderr}"
    );
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stdout.contains("mapchaos storm report"), "{stdout}");
    assert!(
        stdout.contains("0 (0 ops/s)") || stdout.contains("ops      0 "),
        "{stdout}"
    );
    assert_all_back(&redis, "big:", 30_000, "nothing was stormed");
}

#[test]
fn a_signal_while_preloading_stops_the_preload_at_once() {
    let file = manifest(
        "preload",
        "  duration: 60s\n  storm:\n    workers: 2\n    keys: {count: 1000000, preload: 1.0, valueSize: 24}\n  \
         check: {history: false}\n",
    );
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = Run::start(&file, &["--metrics-addr", &addr]);
    run.wait_for("phase: preparing", Duration::from_secs(30));
    // Until the preload is writing keys (the engine's key count moves).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = std::panic::catch_unwind(|| common::http_get(port, "/metrics"))
            .ok()
            .and_then(|(_, body)| {
                body.lines()
                    .find_map(|l| l.strip_prefix("mapchaos_keys "))
                    .and_then(|n| n.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        if keys > 10_000.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the preload writes keys");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = run.signal("INT");
    let (status, exited, stdout, stderr) = run.finish(Duration::from_secs(30));
    assert!(
        !stderr.contains("phase: storming"),
        "the preload must still run when signalled: {stderr}"
    );
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stdout.contains("mapchaos storm report"), "{stdout}");
}

#[test]
fn a_signal_while_the_keyspace_is_built_stops_at_once() {
    let file = manifest(
        "keyspace",
        "  duration: 60s\n  storm:\n    workers: 2\n    keys: {count: 2000000, preload: 0.0, valueSize: 24}\n  \
         check: {history: false}\n",
    );
    let mut run = Run::start(&file, &[]);
    run.wait_for("phase: preparing", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let sent = run.signal("TERM");
    let (status, exited, _, stderr) = run.finish(Duration::from_secs(30));
    assert!(!stderr.contains("phase: storming"), "{stderr}");
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(143), "{stderr}");
}

#[test]
fn a_signal_wakes_the_rate_limiters_sleep() {
    // 4 workers at 1 op/s in all: each sleeps 4 s between operations.
    let file = manifest(
        "rate",
        "  duration: 60s\n  storm:\n    workers: 4\n    rate: 1\n    keys: {count: 100}\n",
    );
    let mut run = Run::start(&file, &[]);
    run.wait_for("phase: storming", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let sent = run.signal("HUP");
    let (status, exited, stdout, stderr) = run.finish(Duration::from_secs(30));
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(129), "{stderr}");
    assert!(stdout.contains("stopped on request"), "{stdout}");
}

#[test]
fn a_signal_during_a_long_check_cuts_it_short_and_reports_unknown_keys() {
    // Two hot keys under 32 pipelining workers: hundreds of operations
    // overlap, and the check takes seconds.
    let file = manifest(
        "check",
        "  duration: 2s\n  storm:\n    workers: 32\n    pipeline: 16\n    mix: {del: 40, get: 30, set: 30}\n    \
         keys: {count: 2}\n  check: {history: true, timeoutPerKey: 60s}\n",
    );
    let mut run = Run::start(&file, &[]);
    run.wait_for("phase: checking", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let sent = run.signal("INT");
    let (status, exited, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stdout.contains("mapchaos storm report"), "{stdout}");
    assert!(
        stdout.contains("unknown") && !stdout.contains("PASS"),
        "a check cut short proves nothing: {stdout}"
    );
}

/// A storm deleting most of 20,000 keys, so its restore takes a while.
fn restore_storm(name: &str) -> (RedisServer, Run) {
    let redis = RedisServer::start();
    seed(&redis, "r:", 20_000);
    let file = existing_storm(name, "r:", 20_000, "2s", "{del: 95, set: 5}");
    let mut run = Run::start(&file, &["--target", &redis.url()]);
    run.wait_for("phase: restoring", Duration::from_secs(60));
    (redis, run)
}

#[test]
fn signals_during_the_restore_never_cut_it_short() {
    for signals in [1, 2] {
        let (redis, run) = restore_storm(&format!("restore-{signals}"));
        run.signal("TERM");
        if signals == 2 {
            std::thread::sleep(Duration::from_millis(50));
            run.signal("TERM");
        }
        let (status, _, stdout, stderr) = run.finish(Duration::from_secs(120));
        assert_eq!(status.code(), Some(143), "{stderr}");
        assert!(stdout.contains("mapchaos storm report"), "{stdout}");
        if signals == 2 {
            assert!(stderr.contains("still restoring"), "{stderr}");
        }
        assert!(
            !stderr.contains("phase: checking") || stderr.contains("restore: "),
            "{stderr}"
        );
        assert_all_back(
            &redis,
            "r:",
            20_000,
            &format!("{signals} signals during the restore"),
        );
    }
}

#[test]
fn a_third_signal_exits_at_once_and_says_what_was_not_restored() {
    let (redis, mut run) = restore_storm("forced");
    for _ in 0..2 {
        run.signal("INT");
        std::thread::sleep(Duration::from_millis(50));
    }
    run.wait_for("SIGINT: still restoring", Duration::from_secs(10));
    let sent = run.signal("INT");
    let (status, exited, _, stderr) = run.finish(Duration::from_secs(30));
    assert!(
        exited - sent < PROMPT,
        "exit {:?} after the third signal",
        exited - sent
    );
    assert_eq!(status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("keys NOT restored"), "{stderr}");
    assert!(
        dbsize(&redis) < 20_000,
        "the restore was cut short, as the message says"
    );
}

#[test]
fn sidecar_sigterm_mid_storm_stops_it_restores_then_exits() {
    use mapchaos_api::signing::{
        NONCE_HEADER, PodIdentity, SIGNATURE_HEADER, SignedRequest, TARGET_HEADER,
        TIMESTAMP_HEADER, new_nonce,
    };
    use mapchaos_operator::signing_key::StormSigner;

    let signer = StormSigner::parse(&"07".repeat(32)).unwrap();
    let public = signer.public_key_hex();
    let sidecar = common::Sidecar::start(&[
        "--operator-public-key",
        &public,
        "--pod-namespace",
        "shop",
        "--pod-name",
        "cart-0",
    ]);
    let pod = PodIdentity::new("shop", "cart-0", "");
    let mut app = redis::Client::open(format!("redis://127.0.0.1:{}", sidecar.resp_port))
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..1000 {
        let () = app.set(format!("app:{i}"), format!("orig-{i}")).unwrap();
    }
    let body = serde_json::json!({
        "storm": {"workers": 4, "mix": {"del": 80, "get": 20},
                  "keys": {"source": "existing", "pattern": "app:*", "count": 1000}, "restore": true},
        "check": {"history": false},
        "duration": "60s", "seed": 1, "lease": "60s",
    })
    .to_string();
    let path = "/v1/storms/term";
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce = new_nonce();
    let signature = signer.sign(&SignedRequest {
        method: "PUT",
        path,
        body: body.as_bytes(),
        timestamp,
        nonce: &nonce,
        target: &pod,
    });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", sidecar.http_port)).unwrap();
    use std::io::Write as _;
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{TIMESTAMP_HEADER}: {timestamp}\r\n{SIGNATURE_HEADER}: {signature}\r\n\
         {NONCE_HEADER}: {nonce}\r\n{TARGET_HEADER}: {}\r\n\r\n{body}",
        body.len(),
        pod.target(),
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    // Until the storm has deleted keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("DBSIZE").query::<u64>(&mut app).unwrap() > 900 {
        assert!(Instant::now() < deadline, "the storm deletes keys");
        std::thread::sleep(Duration::from_millis(20));
    }
    let service = sidecar.service;
    let log = service.log.clone();
    let sent = Instant::now();
    let status = {
        let mut service = service;
        common::send_sigterm(&service.child);
        let status = common::wait_with_timeout(&mut service.child, Duration::from_secs(20));
        std::mem::forget(service);
        status
    };
    assert!(
        sent.elapsed() < PROMPT * 3,
        "exit {:?} after SIGTERM",
        sent.elapsed()
    );
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    let lines = log.lock().unwrap().clone();
    let restored: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "storm restored")
        .collect();
    assert_eq!(restored.len(), 1, "one restore logged: {lines:?}");
    let event = &restored[0];
    let field = |name: &str| {
        event[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {event}"))
    };
    assert_eq!(field("keys"), 1000, "{event}");
    assert!(
        field("restored") >= 100,
        "the keys the storm deleted came back: {event}"
    );
    assert_eq!(field("restored") + field("untouched"), 1000, "{event}");
    assert_eq!(field("failed"), 0, "{event}");
    let position = |message: &str| {
        lines
            .iter()
            .position(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|event| event["message"] == message)
            })
            .unwrap_or_else(|| panic!("{message} logged: {lines:?}"))
    };
    assert!(
        position("storm restored") < position("sidecar stopped"),
        "restored before the process stopped"
    );
}
