//! The `mapchaos sidecar` binary's two ports under attack: real `curl`
//! requests (GET, POST, PUT with bodies of Redis commands) sent to the RESP
//! port run nothing and are dropped; HTTP clients over the connection cap,
//! half-sent, trickling or idle, are refused or cut by their timeouts and
//! never take the RESP port's descriptors, nor RESP clients the HTTP port's.
//! `curl` comes from Debian (scripts/test.sh installs it).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Sidecar;

/// One RESP command as an array; the reply's first line.
fn resp(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut frame = format!("*{}\r\n", args.len());
    for arg in args {
        frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(frame.as_bytes()).unwrap();
    read_reply(stream)
}

/// A reply: its first line, and a bulk string's data line after it.
fn read_reply(stream: &mut TcpStream) -> String {
    let mut line = read_line(stream);
    if line.starts_with('$') && line != "$-1" {
        line.push('\n');
        line.push_str(&read_line(stream));
    }
    line
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).expect("read a reply") == 1 {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// The value of one series on the sidecar's /metrics.
fn metric(sidecar: &Sidecar, series: &str) -> f64 {
    let (status, body) = common::http_get(sidecar.http_port, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Whether the server closed `stream` (EOF or reset) within `within`;
/// bytes it sent first (an error reply, a 503) are skipped.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (Debian's curl; scripts/test.sh installs it)")
}

#[test]
fn curl_requests_to_the_resp_port_run_nothing_and_are_dropped() {
    let sidecar = Sidecar::start(&[]);
    let mut app = connect(sidecar.resp_port);
    assert_eq!(resp(&mut app, &["SET", "app:1", "v1"]), "+OK");
    assert_eq!(resp(&mut app, &["SET", "app:2", "v2"]), "+OK");
    let url = format!("http://127.0.0.1:{}/", sidecar.resp_port);
    let attacks: [&[&str]; 5] = [
        // The example seen: a POST whose body is Redis commands.
        &[
            "-X",
            "POST",
            "--data-binary",
            "FLUSHALL\r\nSET app:1 hacked\r\n",
        ],
        &["-X", "GET", "--data-binary", "FLUSHALL\r\n"],
        &[
            "-X",
            "PUT",
            "--data-binary",
            "SET app:2 hacked\r\nDEL app:1\r\n",
        ],
        &["-H", "X-Cmd: FLUSHALL", "-X", "DELETE"],
        &[],
    ];
    for args in attacks {
        let output = curl(&[args, &[url.as_str()]].concat());
        assert!(
            !output.status.success() && output.stdout.is_empty(),
            "curl {args:?} got an answer: {output:?}"
        );
    }
    // A raw connection whose first line is a header, then a command.
    let mut raw = connect(sidecar.resp_port);
    raw.write_all(b"Host: 127.0.0.1:6379\r\nFLUSHALL\r\n")
        .unwrap();
    assert!(closed_within(&mut raw, Duration::from_secs(5)));
    // Redis's own check, for a RESP array too.
    let mut array = connect(sidecar.resp_port);
    array.write_all(b"*2\r\n$4\r\npost\r\n$1\r\n/\r\n").unwrap();
    assert!(closed_within(&mut array, Duration::from_secs(5)));

    // Nothing ran: the keys are intact, and a key named like a path still
    // works for a real client.
    assert_eq!(resp(&mut app, &["DBSIZE"]), ":2");
    assert_eq!(resp(&mut app, &["GET", "app:1"]), "$2\nv1");
    assert_eq!(resp(&mut app, &["GET", "app:2"]), "$2\nv2");
    assert_eq!(resp(&mut app, &["SET", "/users/1", "x"]), "+OK");
    assert_eq!(resp(&mut app, &["GET", "/users/1"]), "$1\nx");
    assert_eq!(
        metric(
            &sidecar,
            "mapchaos_rejected_connections_total{reason=\"cross_protocol\"}"
        ),
        7.0
    );
}

#[test]
fn http_clients_over_the_cap_cannot_starve_the_resp_port_and_time_out() {
    let sidecar = Sidecar::start_with_open_files(
        256,
        &[
            "--http-max-connections",
            "16",
            "--http-header-timeout-secs",
            "2",
            "--http-idle-timeout-secs",
            "30",
        ],
    );
    // Far more half-sent requests than the cap (and than the descriptors
    // the process has left): headers begun, never finished.
    let mut held = Vec::new();
    for _ in 0..600 {
        let mut stream = connect(sidecar.http_port);
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n");
        held.push(stream);
    }
    // The RESP port still accepts and answers.
    let mut app = connect(sidecar.resp_port);
    assert_eq!(resp(&mut app, &["PING"]), "+PONG");
    // The HTTP port answers again once the header timeout cut the slow ones.
    let started = Instant::now();
    let mut probes_refused = 0.0;
    let healthy = loop {
        let mut probe = connect(sidecar.http_port);
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = probe.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            break true;
        }
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
        probes_refused += 1.0;
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(healthy, "/healthz answered within 15 s");
    // Every half-sent connection was closed by the server.
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(5)));
    }
    let refused = metric(
        &sidecar,
        "mapchaos_http_dropped_connections_total{reason=\"max_connections\"}",
    );
    let cut = metric(
        &sidecar,
        "mapchaos_http_dropped_connections_total{reason=\"header_timeout\"}",
    );
    // Each half-sent request was refused at once or held (16 at a time)
    // until its header timeout.
    assert!(cut >= 16.0, "cut {cut}");
    assert_eq!(
        refused + cut,
        600.0 + probes_refused,
        "refused {refused}, cut {cut}"
    );
    assert_eq!(resp(&mut app, &["PING"]), "+PONG");
}

#[test]
fn resp_clients_cannot_take_the_http_ports_descriptors() {
    // 256 descriptors: 16 for HTTP, 64 reserved, so --max-clients 10000
    // is lowered to 176 at start.
    let sidecar = Sidecar::start_with_open_files(256, &["--http-max-connections", "16"]);
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let mut client = connect(sidecar.resp_port);
        let reply = resp(&mut client, &["PING"]);
        match reply.as_str() {
            "+PONG" => clients.push(client),
            "-ERR max number of clients reached" => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!(clients.len(), 256 - 16 - 64, "RESP clients admitted");
    assert_eq!(refused, 400 - clients.len());
    for _ in 0..20 {
        let (status, body) = common::http_get(sidecar.http_port, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    assert_eq!(resp(&mut clients[0], &["PING"]), "+PONG");
}

#[test]
fn idle_trickling_and_slow_http_clients_are_cut_by_their_timeouts() {
    let sidecar = Sidecar::start(&[
        "--http-header-timeout-secs",
        "3",
        "--http-idle-timeout-secs",
        "2",
        "--http-request-timeout-secs",
        "2",
    ]);
    // Connected, silent: closed after the idle timeout, not before.
    let started = Instant::now();
    let mut silent = connect(sidecar.http_port);
    assert!(closed_within(&mut silent, Duration::from_secs(6)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1800), "closed after {took:?}");

    // Kept alive after a request, then silent: closed the same way.
    let mut kept = connect(sidecar.http_port);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(6)));
    assert!(idle_from.elapsed() >= Duration::from_millis(1800));

    // Headers trickled a byte every 300 ms (never idle): the header
    // timeout cuts them.
    let mut trickle = connect(sidecar.http_port);
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle().take(60) {
        if trickle.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    assert!(cut || closed_within(&mut trickle, Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut after {:?}",
        started.elapsed()
    );

    // A body trickled slower than the request timeout allows: 408.
    let mut slow = connect(sidecar.http_port);
    slow.write_all(
        b"PUT /v1/storms/slow HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        let _ = slow.write_all(b" ");
    }
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    for (reason, at_least) in [
        ("idle_timeout", 2.0),
        ("header_timeout", 1.0),
        ("request_timeout", 1.0),
    ] {
        let count = metric(
            &sidecar,
            &format!("mapchaos_http_dropped_connections_total{{reason=\"{reason}\"}}"),
        );
        assert!(count >= at_least, "{reason}: {count}");
    }
}
