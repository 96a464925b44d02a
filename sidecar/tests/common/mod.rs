//! What the sidecar test suites share: the judgement that a storm on a correct
//! map came out clean, a runtime with a loopback listener to serve on, a
//! throwaway `redis-server` to compare with, and storm API requests signed
//! as the operator signs them.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use mapchaos_api::Verdict;
use mapchaos_api::signing::{
    NONCE_HEADER, PodIdentity, SIGNATURE_HEADER, SignedRequest, TARGET_HEADER, TARGET_UID_HEADER,
    TIMESTAMP_HEADER, hex, new_nonce,
};
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

/// Seconds since the epoch, as the signature's timestamp counts them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The header lines (each ending in CRLF) that sign `method path body` with
/// `key` for the sidecar of pod `target`, at `timestamp` with `nonce`.
pub fn signature_headers(
    key: &[u8; 32],
    target: &PodIdentity,
    request: (&str, &str, &str),
    timestamp: u64,
    nonce: &str,
) -> String {
    let (method, path, body) = request;
    let message = SignedRequest {
        method,
        path,
        body: body.as_bytes(),
        timestamp,
        nonce,
        target,
    }
    .message();
    let signature = SigningKey::from_bytes(key).sign(&message);
    let mut headers = format!(
        "{TIMESTAMP_HEADER}: {timestamp}\r\n{SIGNATURE_HEADER}: {}\r\n\
         {NONCE_HEADER}: {nonce}\r\n{TARGET_HEADER}: {}\r\n",
        hex(&signature.to_bytes()),
        target.target(),
    );
    if !target.uid.is_empty() {
        headers.push_str(&format!("{TARGET_UID_HEADER}: {}\r\n", target.uid));
    }
    headers
}

/// [`signature_headers`] now, with a fresh nonce.
pub fn signed_now(key: &[u8; 32], target: &PodIdentity, request: (&str, &str, &str)) -> String {
    signature_headers(key, target, request, unix_now(), &new_nonce())
}

/// One HTTP/1.1 request to `127.0.0.1:port` with these extra header lines:
/// (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response);
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
