//! Running the `mapchaos` binary as a service in a test: started on
//! ephemeral ports, its bound addresses read from its JSON log, stopped with
//! SIGTERM or killed on drop; and the scratch directories and manifests the
//! `mapchaos run` suites write.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running `mapchaos` service, killed on drop.
pub struct Service {
    pub child: Child,
    /// The log line it announced itself with.
    pub announced: Value,
    /// Every log line so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Service {
    /// Start `mapchaos ARGS --log-format json` and wait (up to 20 s) for the
    /// JSON log line whose message is `announcement`; stderr keeps being
    /// drained so the process never blocks on a full pipe.
    pub fn start(args: &[&str], announcement: &'static str) -> Service {
        Self::start_command(
            Command::new(env!("CARGO_BIN_EXE_mapchaos")),
            args,
            announcement,
        )
    }

    /// [`Service::start`] with `command` standing for the binary (a shell
    /// that sets limits first, say).
    pub fn start_command(
        mut command: Command,
        args: &[&str],
        announcement: &'static str,
    ) -> Service {
        let mut child = command
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mapchaos");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if !sent
                    && let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == announcement
                {
                    let _ = tx.send(event);
                    sent = true;
                }
            }
        });
        let announced = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("mapchaos {args:?} logs {announcement:?} within 20 s"));
        Service {
            child,
            announced,
            log,
        }
    }

    /// The port of the address the announcement names under `field`.
    pub fn port(&self, field: &str) -> u16 {
        let addr = self.announced[field].as_str().unwrap_or_default();
        addr.rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no address in {field}: {}", self.announced))
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        send_sigterm(&self.child);
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(20));
        std::mem::forget(self);
        status
    }

    /// The JSON log lines whose message is `message`, so far.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == message)
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `mapchaos sidecar` on ephemeral ports.
pub struct Sidecar {
    pub service: Service,
    pub resp_port: u16,
    pub http_port: u16,
}

impl Sidecar {
    pub fn start(extra: &[&str]) -> Sidecar {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_mapchaos")), extra)
    }

    /// A sidecar whose open-file limit is `limit` (soft and hard).
    pub fn start_with_open_files(limit: u32, extra: &[&str]) -> Sidecar {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_mapchaos"),
        ]);
        Self::start_command(shell, extra)
    }

    fn start_command(command: Command, extra: &[&str]) -> Sidecar {
        let mut args = vec![
            "sidecar",
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let service = Service::start_command(command, &args, "mapchaos sidecar listening");
        Sidecar {
            resp_port: service.port("resp"),
            http_port: service.port("http"),
            service,
        }
    }

    pub fn terminate(self) -> std::process::ExitStatus {
        self.service.terminate()
    }
}

pub fn send_sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.1, one request): status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the HTTP response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    (status, body.to_owned())
}

/// A loopback port nothing listens on: bound, then released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A throwaway `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server with extra `--name value` config options on its command
    /// line (`["--cluster-enabled", "yes", "--dir", dir]`).
    pub fn start_with(config: &[&str]) -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian's redis-server; scripts/test.sh installs it)",
            );
        // Owned at once, so it is killed and reaped however this ends.
        let server = RedisServer { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `signal` (`TERM`, `INT`, `HUP`) to `child`.
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// An empty scratch directory for test `name` of suite `suite`.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapchaos-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir/storm.yaml`: a MapChaos named `name` whose `spec:` is `spec`
/// (indented by two spaces).
pub fn manifest(dir: &Path, name: &str, spec: &str) -> PathBuf {
    let path = dir.join("storm.yaml");
    let mut text = format!(
        "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {{name: {name}}}\nspec:\n"
    );
    for line in spec.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}
