//! The RESP server end to end on loopback: a real Redis client library
//! (redis-rs) and raw sockets against `serve` with the real engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mapchaos_sidecar::engine::{MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::resp::Limits;
use mapchaos_sidecar::server::{ServerConfig, serve};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::with_defaults());
        let metrics = Arc::new(SidecarMetrics::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            engine,
            metrics.clone(),
            config,
            shutdown.clone(),
        ));
        Server {
            addr,
            metrics,
            shutdown,
            task,
        }
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        tokio::time::timeout(PATIENCE, client.get_multiplexed_async_connection())
            .await
            .expect("connects in time")
            .expect("connects")
    }

    async fn raw(&self) -> Raw {
        Raw(TcpStream::connect(self.addr).await.expect("connect"))
    }

    /// Wait until the connected-clients gauge reads `n`.
    async fn wait_for_clients(&self, n: i64) {
        tokio::time::timeout(PATIENCE, async {
            while self.metrics.connected_clients.get() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("connected clients never reached {n}"));
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task did not panic")
            .expect("serve returns Ok");
    }
}

struct Raw(TcpStream);

impl Raw {
    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.expect("write");
    }

    /// Read exactly `n` bytes.
    async fn read_exact(&mut self, n: usize) -> String {
        let mut buf = vec![0; n];
        tokio::time::timeout(PATIENCE, self.0.read_exact(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        String::from_utf8(buf).unwrap()
    }

    /// Read until the server closes the connection.
    async fn read_to_end(&mut self) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(PATIENCE, self.0.read_to_end(&mut buf))
            .await
            .expect("the server closes in time")
            .expect("read");
        String::from_utf8(buf).unwrap()
    }
}

#[tokio::test]
async fn redis_rs_client_reads_and_writes() {
    let server = Server::start(ServerConfig::default()).await;
    let mut con = server.redis().await;

    let () = con.set("greeting", "hello").await.unwrap();
    let got: Option<String> = con.get("greeting").await.unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    let missing: Option<String> = con.get("nope").await.unwrap();
    assert_eq!(missing, None);

    let binary = vec![0u8, 13, 10, 255, 36];
    let () = con.set("bin", binary.as_slice()).await.unwrap();
    let back: Vec<u8> = con.get("bin").await.unwrap();
    assert_eq!(back, binary);

    assert_eq!(
        con.exists::<_, i64>(&["greeting", "nope", "bin"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(con.incr::<_, _, i64>("counter", 5).await.unwrap(), 5);
    assert_eq!(con.incr::<_, _, i64>("counter", 1).await.unwrap(), 6);
    let err = con.incr::<_, _, i64>("greeting", 1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("value is not an integer or out of range"),
        "{err}"
    );

    let () = con.mset(&[("m1", "a"), ("m2", "b")]).await.unwrap();
    let values: Vec<Option<String>> = con.mget(&["m1", "nope", "m2"]).await.unwrap();
    assert_eq!(values, vec![Some("a".into()), None, Some("b".into())]);

    assert!(con.expire::<_, bool>("m1", 100).await.unwrap());
    let ttl: i64 = con.ttl("m1").await.unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(con.ttl::<_, i64>("m2").await.unwrap(), -1);

    assert_eq!(con.del::<_, i64>(&["m1", "m2", "nope"]).await.unwrap(), 2);
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    server.stop().await;
}

#[tokio::test]
async fn redis_rs_scan_iteration_sees_every_key() {
    let server = Server::start(ServerConfig::default()).await;
    let mut con = server.redis().await;
    let pairs: Vec<(String, String)> = (0..300)
        .map(|i| (format!("user:{i}"), i.to_string()))
        .collect();
    let () = con.mset(&pairs).await.unwrap();
    let () = con.set("other", "x").await.unwrap();

    let mut seen = Vec::new();
    {
        let mut iter: redis::AsyncIter<'_, String> = con.scan_match("user:*").await.unwrap();
        while let Some(key) = iter.next_item().await {
            seen.push(key.unwrap());
        }
    }
    seen.sort();
    seen.dedup();
    let mut expected: Vec<String> = pairs.into_iter().map(|(k, _)| k).collect();
    expected.sort();
    assert_eq!(seen, expected);
    server.stop().await;
}

#[tokio::test]
async fn redis_rs_pipelines_get_every_reply_in_order() {
    let server = Server::start(ServerConfig::default()).await;
    let mut con = server.redis().await;
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.set(format!("p{i}"), i).ignore();
    }
    pipe.get("p42")
        .incr("p42", 1)
        .del("p0")
        .exists("p0")
        .cmd("DBSIZE");
    let (forty_two, incremented, deleted, exists, size): (i64, i64, i64, i64, i64) =
        pipe.query_async(&mut con).await.unwrap();
    assert_eq!(
        (forty_two, incremented, deleted, exists, size),
        (42, 43, 1, 0, 99)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_only_that_connection() {
    let server = Server::start(ServerConfig::default()).await;
    let mut bad = server.raw().await;
    let mut good = server.raw().await;
    good.send(b"PING\r\n").await;
    assert_eq!(good.read_exact(7).await, "+PONG\r\n");

    // A complete command first: its reply still arrives before the error.
    bad.send(b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n").await;
    assert_eq!(
        bad.read_to_end().await,
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );

    good.send(b"*2\r\n$4\r\nECHO\r\n$2\r\nok\r\n").await;
    assert_eq!(good.read_exact(8).await, "$2\r\nok\r\n");
    assert_eq!(server.metrics.protocol_errors.get(), 1);
    server.stop().await;
}

#[tokio::test]
async fn protocol_errors_use_redis_texts() {
    let server = Server::start(ServerConfig::default()).await;
    for (input, reply) in [
        (
            &b"*1\r\n:1\r\n"[..],
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"ECHO \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut raw = server.raw().await;
        raw.send(input).await;
        assert_eq!(raw.read_to_end().await, reply);
    }
    let mut raw = server.raw().await;
    raw.send(&vec![b'a'; 64 * 1024 + 1]).await;
    assert_eq!(
        raw.read_to_end().await,
        "-ERR Protocol error: too big inline request\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_overfull_query_buffer_closes_the_connection() {
    let limits = Limits {
        max_query_bytes: 1024,
        ..Limits::default()
    };
    let server = Server::start(ServerConfig {
        limits,
        ..ServerConfig::default()
    })
    .await;
    let mut raw = server.raw().await;
    // A command announcing many arguments that never completes.
    let mut input = b"*100000\r\n".to_vec();
    for _ in 0..300 {
        input.extend_from_slice(b"$1\r\nx\r\n");
    }
    raw.send(&input).await;
    let reply = raw.read_to_end().await;
    assert_eq!(
        reply,
        "-ERR Protocol error: client reached max query buffer length\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_beyond_the_limit_are_refused_with_redis_text() {
    let server = Server::start(ServerConfig {
        max_clients: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut first = server.raw().await;
    let mut second = server.raw().await;
    for raw in [&mut first, &mut second] {
        raw.send(b"PING\r\n").await;
        assert_eq!(raw.read_exact(7).await, "+PONG\r\n");
    }
    let mut third = server.raw().await;
    assert_eq!(
        third.read_to_end().await,
        "-ERR max number of clients reached\r\n"
    );
    let rejected = server
        .metrics
        .rejected_connections
        .with_label_values(&["max_clients"])
        .get();
    assert_eq!(rejected, 1);

    drop(first);
    server.wait_for_clients(1).await;
    let mut fourth = server.raw().await;
    fourth.send(b"PING\r\n").await;
    assert_eq!(fourth.read_exact(7).await, "+PONG\r\n");
    server.stop().await;
}

#[tokio::test]
async fn pipelined_commands_split_across_writes_are_all_answered() {
    let server = Server::start(ServerConfig::default()).await;
    let mut raw = server.raw().await;
    let mut stream = Vec::new();
    let mut expected = String::new();
    for i in 0..200 {
        let value = format!("v\r\n{i}");
        stream.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{value}\r\n",
                value.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        stream.extend_from_slice(b"INCR n\r\n");
        expected.push_str(&format!(
            "+OK\r\n${}\r\n{value}\r\n:{}\r\n",
            value.len(),
            i + 1
        ));
    }
    for chunk in stream.chunks(7) {
        raw.send(chunk).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(raw.read_exact(expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn quit_answers_ok_and_closes() {
    let server = Server::start(ServerConfig::default()).await;
    let mut raw = server.raw().await;
    raw.send(b"PING\r\nQUIT\r\nPING\r\n").await;
    assert_eq!(raw.read_to_end().await, "+PONG\r\n+OK\r\n");
    server.wait_for_clients(0).await;
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout() {
    let config = ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    };
    let server = Server::start(config).await;
    let mut idle = server.raw().await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        idle.read_to_end().await,
        "",
        "closed without a reply, as Redis does"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.wait_for_clients(0).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_an_in_flight_pipeline_then_closes() {
    let server = Server::start(ServerConfig::default()).await;
    let mut raw = server.raw().await;
    raw.send(b"PING\r\n").await;
    assert_eq!(raw.read_exact(7).await, "+PONG\r\n");

    let commands = 2000;
    raw.send("INCR counter\r\n".repeat(commands).as_bytes())
        .await;
    let addr = server.addr;
    server.stop().await;

    let expected: String = (1..=commands).map(|i| format!(":{i}\r\n")).collect();
    let got = raw.read_to_end().await;
    // Compared without printing 2000 replies on failure.
    assert!(
        got == expected,
        "got {} of {} reply bytes, ending {:?}",
        got.len(),
        expected.len(),
        &got[got.len().saturating_sub(20)..]
    );
    let after = TcpStream::connect(addr).await;
    assert!(after.is_err(), "the listener is closed");
}

#[tokio::test]
async fn info_and_client_gauge_track_connections() {
    let server = Server::start(ServerConfig::default()).await;
    let mut con = server.redis().await;
    server.wait_for_clients(1).await;
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(info.contains("connected_clients:1\r\n"), "{info}");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(config, vec!["save".to_string(), String::new()]);
    drop(con);
    server.wait_for_clients(0).await;
    server.stop().await;
}
