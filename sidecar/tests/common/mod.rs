//! What the sidecar test suites share: the judgement that a storm on a correct
//! map came out clean, a runtime with a loopback listener to serve on, and a
//! throwaway `redis-server` to compare with.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mapchaos_api::Verdict;
use mapchaos_storm::runner::StormOutcome;

/// A correct map: checked, no anomaly, not failed, no storm operation failed.
pub fn assert_clean(outcome: &StormOutcome, what: &str) {
    let check = outcome.report.check.as_ref().expect("history was checked");
    assert_eq!(
        check.total_anomalies(),
        0,
        "{what}: a correct map was reported anomalous:\n{}",
        mapchaos_storm::report::render(&outcome.report)
    );
    assert_ne!(outcome.report.verdict, Verdict::Fail, "{what}");
    assert_eq!(outcome.report.errors, 0, "{what}: storm operations failed");
}

/// A multi-threaded runtime with `workers` threads and a listener on an
/// ephemeral loopback port (returned with it), for a server under test.
pub fn runtime_with_listener(
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (runtime, listener, port)
}

/// A throwaway `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (Debian's redis-server; scripts/test.sh installs it)",
            );
        // Owned before waiting, so a server that never answers is still killed.
        let server = RedisServer { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
