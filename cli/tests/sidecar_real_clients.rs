//! The `mapchaos sidecar` binary driven by real Redis clients nobody here wrote:
//! `redis-cli` (commands, `--pipe`, `--scan`) and `redis-benchmark`. They come
//! from Debian's `redis-tools`; `.ci/run` installs it.

mod common;

use common::Sidecar;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

impl Sidecar {
    fn cli(&self, args: &[&str]) -> String {
        let output = redis_tool("redis-cli")
            .args(["-p", &self.resp_port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli {args:?} failed: {output:?}"
        );
        String::from_utf8(output.stdout)
            .expect("utf-8 reply")
            .trim_end()
            .to_owned()
    }

    fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = redis_tool("redis-cli")
            .args(["-p", &self.resp_port.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run redis-cli");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin)
            .expect("feed redis-cli");
        child.wait_with_output().expect("redis-cli finishes")
    }

    fn benchmark(&self, args: &[&str]) -> Vec<BenchRow> {
        let output = redis_tool("redis-benchmark")
            .args(["-p", &self.resp_port.to_string(), "--csv"])
            .args(args)
            .output()
            .expect("run redis-benchmark");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "redis-benchmark {args:?} failed: {output:?}"
        );
        let rows: Vec<BenchRow> = stdout.lines().skip(1).filter_map(BenchRow::parse).collect();
        assert!(
            !rows.is_empty(),
            "redis-benchmark printed no results: {stdout}"
        );
        rows
    }

    fn http_get(&self, path: &str) -> (u16, String) {
        common::http_get(self.http_port, path)
    }
}

fn redis_tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: install Debian's redis-tools (`apt-get install redis-tools`)"
    );
    Command::new(name)
}

/// One line of `redis-benchmark --csv`.
#[derive(Debug)]
struct BenchRow {
    test: String,
    rps: f64,
}

impl BenchRow {
    fn parse(line: &str) -> Option<BenchRow> {
        let fields: Vec<&str> = line.split("\",\"").map(|f| f.trim_matches('"')).collect();
        Some(BenchRow {
            test: fields.first()?.to_string(),
            rps: fields.get(1)?.parse().ok()?,
        })
    }
}

#[test]
fn redis_cli_commands_get_redis_replies() {
    let sidecar = Sidecar::start(&[]);
    assert_eq!(sidecar.cli(&["PING"]), "PONG");
    assert_eq!(sidecar.cli(&["SET", "user:1", "alice"]), "OK");
    assert_eq!(sidecar.cli(&["GET", "user:1"]), "alice");
    assert_eq!(sidecar.cli(&["SET", "user:1", "bob", "NX"]), "");
    assert_eq!(
        sidecar.cli(&["SET", "user:1", "carol", "XX", "GET"]),
        "alice"
    );
    assert_eq!(sidecar.cli(&["TYPE", "user:1"]), "string");
    assert_eq!(sidecar.cli(&["TYPE", "nobody"]), "none");
    assert_eq!(sidecar.cli(&["INCRBY", "hits", "41"]), "41");
    assert_eq!(sidecar.cli(&["INCR", "hits"]), "42");
    assert_eq!(
        sidecar.cli(&["INCR", "user:1"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(sidecar.cli(&["EXPIRE", "hits", "100"]), "1");
    let ttl: i64 = sidecar
        .cli(&["TTL", "hits"])
        .parse()
        .expect("an integer TTL");
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    assert_eq!(sidecar.cli(&["PERSIST", "hits"]), "1");
    assert_eq!(sidecar.cli(&["TTL", "hits"]), "-1");
    assert_eq!(sidecar.cli(&["TTL", "nobody"]), "-2");
    assert_eq!(sidecar.cli(&["MSET", "a", "1", "b", "2"]), "OK");
    // redis-cli prints nil as an empty line when its output is not a terminal.
    assert_eq!(sidecar.cli(&["MGET", "a", "nobody", "b"]), "1\n\n2");
    assert_eq!(sidecar.cli(&["EXISTS", "a", "b", "nobody", "a"]), "3");
    assert_eq!(sidecar.cli(&["DEL", "a", "b", "nobody"]), "2");
    assert_eq!(sidecar.cli(&["UNLINK", "user:1"]), "1");
    assert_eq!(sidecar.cli(&["DBSIZE"]), "1");
    assert_eq!(
        sidecar.cli(&["FOO", "bar"]),
        "ERR unknown command 'FOO', with args beginning with: 'bar'"
    );
    assert_eq!(
        sidecar.cli(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    let info = sidecar.cli(&["INFO"]);
    for section in ["# Server", "# Clients", "# Stats", "# Memory", "# Keyspace"] {
        assert!(info.contains(section), "INFO lacks {section}: {info}");
    }
    assert!(
        info.contains("db0:keys=1,expires=0"),
        "keyspace line: {info}"
    );
    assert_eq!(sidecar.cli(&["FLUSHALL"]), "OK");
    assert_eq!(sidecar.cli(&["DBSIZE"]), "0");
    assert!(sidecar.terminate().success());
}

#[test]
fn redis_cli_pipe_and_scan_see_every_key() {
    let sidecar = Sidecar::start(&[]);
    let mut protocol = Vec::new();
    for i in 0..20_000 {
        let key = format!("session:{i}");
        let value = format!("v{i}");
        write!(
            protocol,
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
            key.len(),
            value.len()
        )
        .unwrap();
    }
    for i in 0..500 {
        write!(protocol, "SET other:{i} x\r\n").unwrap(); // inline commands, as in a telnet session
    }
    let output = sidecar.cli_with_stdin(&["--pipe"], &protocol);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "redis-cli --pipe failed: {output:?}"
    );
    assert!(
        report.contains("errors: 0, replies: 20500"),
        "pipe report: {report}"
    );
    assert_eq!(sidecar.cli(&["DBSIZE"]), "20500");
    assert_eq!(sidecar.cli(&["GET", "session:12345"]), "v12345");

    let scanned = sidecar.cli(&["--scan", "--pattern", "session:*"]);
    let keys: BTreeSet<&str> = scanned.lines().collect();
    let expected: BTreeSet<String> = (0..20_000).map(|i| format!("session:{i}")).collect();
    assert_eq!(
        keys.len(),
        expected.len(),
        "SCAN returned {} distinct keys",
        keys.len()
    );
    assert!(expected.iter().all(|k| keys.contains(k.as_str())));

    let listed = sidecar.cli(&["KEYS", "other:1?"]);
    let listed: BTreeSet<&str> = listed.lines().collect();
    let expected: BTreeSet<String> = (10..20).map(|i| format!("other:{i}")).collect();
    assert_eq!(listed, expected.iter().map(String::as_str).collect());
    assert!(sidecar.terminate().success());
}

#[test]
fn redis_benchmark_runs_with_and_without_pipelining_and_leaves_exact_counts() {
    let sidecar = Sidecar::start(&[]);
    for pipeline in ["1", "16"] {
        let rows = sidecar.benchmark(&[
            "-c",
            "20",
            "-n",
            "20000",
            "-r",
            "1000",
            "-P",
            pipeline,
            "-t",
            "set,get,incr,mset",
        ]);
        let tests: BTreeSet<&str> = rows.iter().map(|r| r.test.as_str()).collect();
        for test in ["SET", "GET", "INCR", "MSET (10 keys)"] {
            assert!(
                tests.contains(test),
                "-P {pipeline}: no {test} row in {rows:?}"
            );
        }
        assert!(rows.iter().all(|r| r.rps > 0.0), "-P {pipeline}: {rows:?}");
        // SET and MSET wrote redis-benchmark's 3-byte payload to the keys they chose.
        let keys = sidecar.cli(&["--scan", "--pattern", "key:*"]);
        let key = keys.lines().next().expect("SET left keys behind");
        assert_eq!(
            sidecar.cli(&["GET", key]).len(),
            3,
            "the 3-byte payload of {key}"
        );

        let rows = sidecar.benchmark(&[
            "-c",
            "20",
            "-n",
            "20000",
            "-r",
            "1000",
            "-P",
            pipeline,
            "DEL",
            "key:__rand_int__",
        ]);
        assert!(rows[0].rps > 0.0, "-P {pipeline}: {rows:?}");
    }
    // Every INCR landed exactly once: the counters add up to the requests sent.
    let counters = sidecar.cli(&["--scan", "--pattern", "counter:*"]);
    let mut total = 0u64;
    for key in counters.lines() {
        total += sidecar
            .cli(&["GET", key])
            .parse::<u64>()
            .expect("an integer counter");
    }
    assert_eq!(total, 2 * 20_000, "INCR total over both runs");
    assert!(sidecar.terminate().success());
}

#[test]
fn http_serves_health_readiness_and_metrics() {
    let sidecar = Sidecar::start(&[]);
    sidecar.cli(&["SET", "k", "v"]);
    sidecar.cli(&["GET", "k"]);
    sidecar.cli(&["GET", "k"]);
    sidecar.cli(&["NOSUCHCOMMAND"]);
    assert_eq!(sidecar.http_get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(sidecar.http_get("/readyz"), (200, "ready\n".to_owned()));
    let (status, metrics) = sidecar.http_get("/metrics");
    assert_eq!(status, 200);
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
    };
    assert_eq!(
        sample(r#"mapchaos_ops_total{op="get",outcome="ok",source="client"}"#),
        2.0
    );
    assert_eq!(
        sample(r#"mapchaos_ops_total{op="set",outcome="ok",source="client"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"mapchaos_ops_total{op="unknown",outcome="error",source="client"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"mapchaos_op_duration_seconds_count{op="get",source="client"}"#),
        2.0
    );
    assert_eq!(sample("mapchaos_keys"), 1.0);
    assert!(sample(r#"mapchaos_map_memory_bytes{kind="live"}"#) > 0.0);
    assert!(sample(r#"mapchaos_map_memory_bytes{kind="rss"}"#) > 0.0);
    assert_eq!(sidecar.http_get("/nope").0, 404);
    assert!(sidecar.terminate().success());
}

#[test]
fn sigterm_lets_an_in_flight_pipeline_finish_then_exits_zero() {
    let sidecar = Sidecar::start(&[]);
    let mut client = TcpStream::connect(("127.0.0.1", sidecar.resp_port)).unwrap();
    let mut pipeline = Vec::new();
    for _ in 0..2_000 {
        pipeline.extend_from_slice(b"INCR drained\r\n");
    }
    client.write_all(&pipeline).unwrap();
    // Read the first reply so the pipeline is known to be in flight, then stop.
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, ":1\r\n");
    let port = sidecar.resp_port;
    let status = sidecar.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest.lines().count(),
        1_999,
        "every pipelined command got its reply"
    );
    assert!(rest.ends_with(":2000\r\n"));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn bad_flags_are_refused_with_a_message_naming_the_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(["sidecar", "--max-clients", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-clients"));
    let output = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(["sidecar", "--resp-addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--resp-addr"));
}
