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

/// A throwaway `redis-server` (or `valkey-server`) on a free port, killed
/// on drop: plain, with a password or ACL users, TLS, or a replica.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// Extra `redis-cli` arguments it needs (`--tls ...`, `--user`/`--pass`).
    cli_args: Vec<String>,
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A `redis-server` given extra configuration (`--requirepass x`,
    /// `--replicaof host port`, ...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::launch("redis-server", &free_port().to_string(), extra, false)
    }

    /// Another server binary of the same command line (`valkey-server`).
    pub fn start_program(program: &str, extra: &[&str]) -> RedisServer {
        Self::launch(program, &free_port().to_string(), extra, false)
    }

    /// A `redis-server` serving TLS only, with `certs`' server certificate;
    /// clients may show a certificate (`--tls-auth-clients optional`).
    pub fn start_tls(certs: &TestCerts, extra: &[&str]) -> RedisServer {
        let port = free_port().to_string();
        let mut args = vec![
            "--tls-port".to_owned(),
            port.clone(),
            "--tls-cert-file".to_owned(),
            certs.path("server.pem"),
            "--tls-key-file".to_owned(),
            certs.path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            certs.path("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "optional".to_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Self::launch("redis-server", "0", &args, true);
        server.port = port.parse().unwrap();
        server.cli_args = vec![
            "--tls".into(),
            "--cacert".into(),
            certs.path("ca.pem"),
            "--cert".into(),
            certs.path("client.pem"),
            "--key".into(),
            certs.path("client.key"),
        ];
        server.wait_listening();
        server
    }

    fn launch(program: &str, port: &str, extra: &[&str], tls: bool) -> RedisServer {
        let child = Command::new(program)
            .args(["--port", port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{program} is installed (Debian's redis-server, or valkey from \
                     scripts/test.sh): {e}"
                )
            });
        // Owned at once, so it is killed and reaped however this ends.
        let mut server = RedisServer {
            child,
            port: port.parse().unwrap_or(0),
            cli_args: Vec::new(),
            tls,
        };
        if !tls {
            server.wait_listening();
        }
        server
    }

    fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server on port {} exited: {status}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not start on port {}", self.port);
    }

    /// `redis-cli` arguments to log in as `user` with `password`.
    pub fn login(mut self, user: &str, password: &str) -> RedisServer {
        self.cli_args.extend([
            "--user".into(),
            user.into(),
            "--pass".into(),
            password.into(),
            "--no-auth-warning".into(),
        ]);
        self
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli ARGS` against it: its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(args)
            .output()
            .expect("redis-cli is installed (Debian's redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Start a replica of this server (`replicaof`, diskless sync) with
    /// `extra` configuration, and wait until it is in sync.
    pub fn replica(&self, extra: &[&str]) -> RedisServer {
        Self::replica_of(self.port, extra)
    }

    /// A replica of this server whose replication stream arrives `delay`
    /// late (through a [`DelayedLink`]): a replica lagging for real.
    pub fn lagging_replica(&self, delay: Duration) -> (RedisServer, DelayedLink) {
        let link = DelayedLink::start(self.port, delay);
        (Self::replica_of(link.port, &[]), link)
    }

    fn replica_of(primary: u16, extra: &[&str]) -> RedisServer {
        let port = primary.to_string();
        let mut args = vec![
            "--replicaof",
            "127.0.0.1",
            &port,
            "--repl-diskless-load",
            "swapdb",
        ];
        args.extend_from_slice(extra);
        let replica = Self::start_with(&args);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !replica
            .cli(&["info", "replication"])
            .contains("master_link_status:up")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica on port {} never synced",
                replica.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to `127.0.0.1:upstream` that holds back everything the
/// upstream sends by a fixed delay (what the other side sends passes at
/// once). Between a primary and its replica, replication lags by `delay`.
pub struct DelayedLink {
    pub port: u16,
}

impl DelayedLink {
    pub fn start(upstream: u16, delay: Duration) -> DelayedLink {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for downstream in listener.incoming() {
                let Ok(downstream) = downstream else { return };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = downstream.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (mut up_read, mut up_write) = (upstream.try_clone().unwrap(), upstream);
                let (mut down_read, mut down_write) = (downstream.try_clone().unwrap(), downstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut down_read, &mut up_write);
                });
                let (tx, rx) = mpsc::channel::<(std::time::Instant, Vec<u8>)>();
                std::thread::spawn(move || {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(n) = up_read.read(&mut buffer) {
                        if n == 0
                            || tx
                                .send((std::time::Instant::now(), buffer[..n].to_vec()))
                                .is_err()
                        {
                            return;
                        }
                    }
                });
                std::thread::spawn(move || {
                    for (read_at, bytes) in rx {
                        let due = read_at + delay;
                        let now = std::time::Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if down_write.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DelayedLink { port }
    }
}

/// A CA, a server certificate it signs (for `127.0.0.1` only, not `localhost`), a
/// client certificate it signs, and a second CA that signs neither, made
/// with `openssl` in `dir`.
pub struct TestCerts {
    pub dir: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path) -> TestCerts {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is installed (Debian's openssl; scripts/test.sh installs it)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=mapchaos test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
            ),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        TestCerts {
            dir: dir.to_owned(),
        }
    }

    /// The path of one of its files (`ca.pem`, `other-ca.pem`, `server.pem`,
    /// `server.key`, `client.pem`, `client.key`).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
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
