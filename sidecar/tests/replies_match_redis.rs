//! The sidecar answers like Debian's `redis-server` 7, byte for byte: each
//! scenario sends the same bytes to a throwaway `redis-server` and to the
//! sidecar (in process, real engine) and compares the raw replies, error
//! texts included. Scenarios run pipelined (one write) and, where no reply is
//! switched off, one command at a time.
//!
//! Normalised, explicitly: client ids and addresses (`$ID_B`, `$ADDR_A`, …)
//! are each server's own. Left out because they must differ: `SELECT`/`COPY
//! … DB n` for n in 1..16 (the sidecar has one database), `COMMAND COUNT`,
//! `COMMAND DOCS` and `COMMAND INFO` past its first six fields (the sidecar
//! has fewer commands and no ACL categories or key specifications),
//! `KEYS`/`SCAN` over several keys (order is the hash table's), relative
//! TTLs below a second.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{RedisServer, runtime_with_listener};
use mapchaos_sidecar::engine::{MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

/// The sidecar on a loopback port, served until dropped.
struct Sidecar {
    port: u16,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Sidecar {
    fn start() -> Sidecar {
        let (runtime, listener, port) = runtime_with_listener(2);
        let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::with_defaults());
        let shutdown = CancellationToken::new();
        runtime.spawn(serve(
            listener,
            engine,
            Arc::new(SidecarMetrics::new()),
            ServerConfig::default(),
            shutdown.clone(),
        ));
        Sidecar {
            port,
            shutdown,
            _runtime: runtime,
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One command line: arguments split on spaces, `""` for an empty one.
fn encode(line: &str) -> Vec<u8> {
    let args: Vec<&str> = line
        .split(' ')
        .map(|arg| if arg == "\"\"" { "" } else { arg })
        .collect();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Where the RESP2 reply starting at `at` ends, if it is complete.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after = line + 2;
    let number = || -> i64 {
        std::str::from_utf8(&buf[at + 1..line])
            .unwrap()
            .parse()
            .unwrap()
    };
    match buf[at] {
        b'+' | b'-' | b':' => Some(after),
        b'$' => match number() {
            n if n < 0 => Some(after),
            n => {
                let end = after + n as usize + 2;
                (buf.len() >= end).then_some(end)
            }
        },
        b'*' => {
            let mut end = after;
            for _ in 0..number().max(0) {
                end = reply_end(buf, end)?;
            }
            Some(end)
        }
        other => panic!("not a RESP2 reply: {:?}", other as char),
    }
}

/// A raw connection that reads whole replies.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Conn {
            stream,
            buffer: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0; 16 * 1024];
        let read = self.stream.read(&mut chunk).expect("reply in time");
        self.buffer.extend_from_slice(&chunk[..read]);
        read
    }

    /// The next `n` replies, raw.
    fn replies(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut end = 0;
            let mut complete = 0;
            while complete < n {
                match reply_end(&self.buffer, end) {
                    Some(next) => {
                        end = next;
                        complete += 1;
                    }
                    None => break,
                }
            }
            if complete == n {
                return self.buffer.drain(..end).collect();
            }
            assert!(Instant::now() < deadline, "{n} replies in time");
            assert!(self.fill() > 0, "connection closed before {n} replies");
        }
    }

    /// Replies up to and including the one equal to `last`.
    fn replies_through(&mut self, last: &[u8]) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let reply = self.replies(1);
            all.extend_from_slice(&reply);
            if reply == last {
                return all;
            }
        }
    }

    /// Whether the server closed the connection (within the patience).
    fn closed(&mut self) -> bool {
        let mut chunk = [0; 64];
        matches!(self.stream.read(&mut chunk), Ok(0) | Err(_))
    }

    fn client_id(&mut self) -> String {
        self.send(&encode("CLIENT ID"));
        let reply = String::from_utf8(self.replies(1)).unwrap();
        reply.trim_start_matches(':').trim_end().to_string()
    }
}

/// One step of a scenario: commands for connection A or B, or a pause.
enum Step<'a> {
    A(&'a str),
    B(&'a str),
    Sleep(u64),
}

fn steps(script: &str) -> Vec<Step<'_>> {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            if let Some(rest) = line.strip_prefix("B: ") {
                Step::B(rest)
            } else if let Some(ms) = line.strip_prefix("SLEEP ") {
                Step::Sleep(ms.parse().unwrap())
            } else {
                Step::A(line)
            }
        })
        .collect()
}

/// Both servers, and a way to run a script on each.
struct Pair {
    redis: RedisServer,
    sidecar: Sidecar,
}

/// How a script's commands are sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Each run of A's (or B's) lines in one write.
    Pipelined,
    /// One command, then its reply.
    OneByOne,
}

const END: &str = "ECHO end-of-script";

impl Pair {
    fn start() -> Pair {
        Pair {
            redis: RedisServer::start(),
            sidecar: Sidecar::start(),
        }
    }

    /// The transcript of `script` on the server at `port`: every reply of
    /// connection A, in order, with B's replies after a `B>` marker.
    fn transcript(port: u16, script: &str, mode: Mode) -> String {
        let mut a = Conn::open(port);
        let mut b: Option<Conn> = None;
        a.send(&encode("FLUSHALL"));
        assert_eq!(a.replies(1), b"+OK\r\n");
        let steps = steps(script);
        let mut out = Vec::new();
        let mut i = 0;
        while i < steps.len() {
            match &steps[i] {
                Step::Sleep(ms) => {
                    std::thread::sleep(Duration::from_millis(*ms));
                    i += 1;
                }
                Step::B(_) => {
                    let b = b.get_or_insert_with(|| Conn::open(port));
                    let mut lines = Vec::new();
                    while let Some(Step::B(line)) = steps.get(i) {
                        lines.push(*line);
                        i += 1;
                    }
                    out.extend_from_slice(b"B>");
                    out.extend(send_lines(b, &lines, mode));
                }
                Step::A(_) => {
                    let mut lines = Vec::new();
                    while let Some(Step::A(line)) = steps.get(i) {
                        lines.push(*line);
                        i += 1;
                    }
                    out.extend(send_lines(&mut a, &lines, mode));
                }
            }
        }
        // RESET answers even with replies off, and leaves any MULTI.
        a.send(&[encode("RESET"), encode(END)].concat());
        out.extend(a.replies_through(b"$13\r\nend-of-script\r\n"));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Run `script` on both servers in `mode` and insist on the same replies.
    fn same(&self, name: &str, script: &str, mode: Mode) {
        let redis = Pair::transcript(self.redis.port, script, mode);
        let sidecar = Pair::transcript(self.sidecar.port, script, mode);
        assert_eq!(
            sidecar, redis,
            "{name} ({mode:?}): the sidecar (left) answered unlike redis-server (right)"
        );
    }

    fn same_both_ways(&self, name: &str, script: &str) {
        self.same(name, script, Mode::Pipelined);
        if !script.contains("CLIENT REPLY") {
            self.same(name, script, Mode::OneByOne);
        }
    }
}

/// Send `lines` and read their replies (with replies possibly switched off,
/// only what comes before the script's end).
fn send_lines(conn: &mut Conn, lines: &[&str], mode: Mode) -> Vec<u8> {
    let suppressing = lines.iter().any(|line| line.contains("CLIENT REPLY"));
    match mode {
        Mode::Pipelined if suppressing => {
            // Replies cannot be counted: end on an answered marker instead.
            let mut bytes: Vec<u8> = lines.iter().flat_map(|line| encode(line)).collect();
            bytes.extend(encode("CLIENT REPLY ON"));
            bytes.extend(encode("ECHO end-of-lines"));
            conn.send(&bytes);
            conn.replies_through(b"$12\r\nend-of-lines\r\n")
        }
        Mode::Pipelined => {
            let bytes: Vec<u8> = lines.iter().flat_map(|line| encode(line)).collect();
            conn.send(&bytes);
            conn.replies(lines.len())
        }
        Mode::OneByOne => lines
            .iter()
            .flat_map(|line| {
                conn.send(&encode(line));
                conn.replies(1)
            })
            .collect(),
    }
}

#[test]
fn transactions_answer_like_redis() {
    let pair = Pair::start();
    let scenarios = [
        (
            "queued replies and EXEC's array",
            "MULTI\nSET a 1\nINCR a\nGET a\nGET nope\nEXEC\nGET a",
        ),
        (
            "a queueing error aborts EXEC",
            "SET k v\nMULTI\nSET a 1\nNOSUCH x y\nGET a b\nEXEC\nGET a\nEXEC",
        ),
        (
            "wrong arity while queueing",
            "MULTI\nSET a\nEXEC\nMULTI\nGETEX\nSET b 1\nEXEC\nEXISTS b",
        ),
        (
            "EXEC with arguments inside MULTI",
            "MULTI\nSET a 1\nEXEC x\nGET a\nDISCARD",
        ),
        (
            "errors inside EXEC answer in place",
            "SET s text\nMULTI\nINCR s\nSET t 1\nEXPIRE t ten\nGETEX t FOO\nSET u 1 EX 0\n\
             RENAME nope x\nAPPEND t more\nEXEC\nGET t\nEXISTS u",
        ),
        (
            "nested MULTI and WATCH inside MULTI",
            "MULTI\nMULTI\nWATCH k\nSET k v\nEXEC\nEXEC\nDISCARD\nGET k",
        ),
        ("DISCARD", "MULTI\nSET k v\nDISCARD\nGET k\nDISCARD"),
        (
            "wrong arity of the transaction commands",
            "MULTI x\nDISCARD x\nWATCH\nUNWATCH x\nEXEC x\nMULTI\nMULTI x\nEXEC\n\
             MULTI\nDISCARD x\nWATCH\nEXEC",
        ),
        ("an empty transaction", "MULTI\nEXEC"),
        (
            "UNWATCH and PING queued",
            "WATCH k\nMULTI\nUNWATCH\nPING\nPING hi\nEXEC",
        ),
        (
            "RESET inside MULTI",
            "CLIENT SETNAME foo\nWATCH a\nMULTI\nSET a 3\nRESET\nGET a\nEXEC\nCLIENT GETNAME",
        ),
        (
            "a whole-keyspace transaction",
            "SET a 1\nMULTI\nDBSIZE\nSCAN 0\nRANDOMKEY\nKEYS *\nFLUSHALL\nDBSIZE\nEXEC",
        ),
        (
            "the new string commands inside a transaction",
            "MULTI\nSETNX a 1\nSETNX a 2\nGETSET a 3\nAPPEND a 4\nSTRLEN a\nGETDEL a\n\
             SETEX b 100 v\nTTL b\nGETEX b PERSIST\nTTL b\nRENAME b c\nCOPY c d\n\
             TOUCH c d e\nEXEC",
        ),
        (
            "WATCH: another client's write aborts",
            "SET k 1\nWATCH k\nB: SET k 2\nMULTI\nSET k mine\nEXEC\nGET k",
        ),
        (
            "WATCH: the client's own write aborts",
            "SET k 1\nWATCH k\nINCR k\nMULTI\nSET k mine\nEXEC\nGET k",
        ),
        (
            "WATCH: a write of the same value aborts",
            "SET k v\nWATCH k\nB: SET k v\nMULTI\nPING\nEXEC",
        ),
        (
            "WATCH: a delete aborts",
            "SET k 1\nWATCH k\nB: DEL k\nMULTI\nSET x 1\nEXEC\nEXISTS x",
        ),
        (
            "WATCH: creating a missing key aborts",
            "WATCH k\nB: SET k 1\nMULTI\nSET x 1\nEXEC",
        ),
        (
            "WATCH: a TTL change aborts",
            "SET k 1\nWATCH k\nB: EXPIRE k 100\nMULTI\nPING\nEXEC\n\
             WATCH k\nB: PERSIST k\nMULTI\nPING\nEXEC",
        ),
        (
            "WATCH: an expiry aborts",
            "SET k 1 PX 100\nWATCH k\nSLEEP 300\nMULTI\nSET x 1\nEXEC\nEXISTS x",
        ),
        (
            "WATCH: FLUSHALL aborts for a key that existed",
            "SET k 1\nWATCH k\nB: FLUSHALL\nMULTI\nSET x 1\nEXEC",
        ),
        (
            "WATCH: FLUSHALL does not abort for a key that did not exist",
            "WATCH nope\nB: FLUSHALL\nMULTI\nSET x 1\nEXEC",
        ),
        (
            "WATCH: reads and refused writes do not abort",
            "SET k 1\nWATCH k nope\nB: SET k x NX\nB: DEL nope\nB: EXPIRE nope 10\n\
             B: GET k\nB: GETEX k\nB: TOUCH k\nB: SET nope v XX\nMULTI\nSET k mine\nEXEC\nGET k",
        ),
        (
            "WATCH: RENAME changes both keys",
            "SET a 1\nWATCH b\nB: RENAME a b\nMULTI\nPING\nEXEC\n\
             SET c 1\nWATCH c\nB: RENAME c d\nMULTI\nPING\nEXEC",
        ),
        (
            "WATCH: another client's transaction aborts",
            "WATCH k\nB: MULTI\nB: SET k z\nB: EXEC\nMULTI\nGET k\nEXEC",
        ),
        (
            "WATCH ends with EXEC, DISCARD and UNWATCH",
            "WATCH k\nMULTI\nEXEC\nB: SET k 2\nMULTI\nSET k 3\nEXEC\n\
             WATCH k\nMULTI\nDISCARD\nB: SET k 4\nMULTI\nSET k 5\nEXEC\n\
             WATCH k\nUNWATCH\nB: SET k 6\nMULTI\nSET k 7\nEXEC\nGET k",
        ),
        (
            "WATCH of several keys, one changed",
            "MSET a 1 b 2\nWATCH a b c\nWATCH a\nB: INCR b\nMULTI\nGET a\nEXEC",
        ),
    ];
    for (name, script) in scenarios {
        pair.same_both_ways(name, script);
    }
}

#[test]
fn string_and_key_commands_answer_like_redis() {
    let pair = Pair::start();
    let scenarios = [
        (
            "GETDEL",
            "GETDEL\nGETDEL a b\nGETDEL nope\nSET a 1\nGETDEL a\nGETDEL a\nEXISTS a",
        ),
        (
            "GETEX",
            "SET a 1 EX 100\nGETEX a\nTTL a\nGETEX a PERSIST\nTTL a\nGETEX a EX 50\nTTL a\n\
             GETEX a PX 5000000\nTTL a\nGETEX a EXAT 99999999999\nPEXPIRETIME a\n\
             GETEX a PXAT 99999999999999\nPEXPIRETIME a\nGETEX a EX 0\nGETEX a EX -1\n\
             GETEX a EX abc\nGETEX a EX 10 PX 10\nGETEX a EX\nGETEX a FOO\n\
             GETEX a PERSIST EX 10\nGETEX a EX 10 PERSIST\nGETEX a EX 10 EX 20\nTTL a\n\
             GETEX a EX 9223372036854775807\nGETEX a PX 9223372036854775807\n\
             GETEX a PXAT 1\nEXISTS a\nGETEX nope EX 10\nGETEX nope FOO\nGETEX",
        ),
        (
            "SETNX, SETEX, PSETEX, GETSET",
            "SETNX b 1\nSETNX b 2\nGET b\nSETNX b\nSETEX c 10 v\nTTL c\nSETEX c 0 v\n\
             SETEX c -5 v\nSETEX c abc v\nSETEX c 9223372036854775807 v\nSETEX c 10\n\
             PSETEX d 100000 v\nTTL d\nPSETEX d 0 v\nPSETEX d 9223372036854775807 v\n\
             GETSET d new\nTTL d\nGETSET nope x\nGETSET\nGET nope",
        ),
        (
            "APPEND and STRLEN",
            "APPEND e hello\nAPPEND e world\nGET e\nSTRLEN e\nSTRLEN nope\nAPPEND\nSTRLEN\n\
             SET t 1 EX 100\nAPPEND t 2\nTTL t\nAPPEND \"\" \"\"\nEXISTS \"\"\nSTRLEN \"\"",
        ),
        (
            "RENAME and RENAMENX",
            "RENAME a b\nSET a 1 EX 100\nRENAME a b\nTTL b\nEXISTS a\nRENAME b b\n\
             RENAME nope nope\nRENAMENX b b\nSET c 2\nRENAMENX b c\nRENAMENX b d\n\
             RENAMENX nope d\nRENAME\nRENAME a\nRENAMENX a b c\nSET p 1\nRENAME p d\nTTL d\nGET d",
        ),
        (
            "TOUCH, EXPIRETIME, PEXPIRETIME",
            "TOUCH\nSET d 1\nTOUCH d d nope\nEXPIRETIME d\nPEXPIRETIME nope\nEXPIRETIME nope\n\
             PEXPIREAT d 33177600000123\nEXPIRETIME d\nPEXPIRETIME d\nPEXPIREAT d 33177600000500\n\
             EXPIRETIME d\nEXPIRETIME\nPEXPIRETIME a b",
        ),
        (
            "COPY",
            "COPY\nCOPY c\nSET c 2\nCOPY c e\nGET e\nCOPY c e\nCOPY c e REPLACE\n\
             COPY c e replace replace\nCOPY c e DB 0\nCOPY c e DB x\nCOPY c e DB\nCOPY c e FOO\n\
             COPY c c\nCOPY nope e\nPEXPIREAT c 33177600000123\nCOPY c f\nPEXPIRETIME f\n\
             COPY c e DB 0 REPLACE\nCOPY c e DB -1 REPLACE\nCOPY c e DB 16\n\
             COPY c e DB 99999999999\nCOPY nope nope",
        ),
        (
            "RANDOMKEY",
            "RANDOMKEY\nRANDOMKEY x\nSET only 1\nRANDOMKEY\nDEL only\nRANDOMKEY",
        ),
        (
            "SET and its options",
            "SET k v NX XX\nSET k v EX 10 PX 10\nSET k v KEEPTTL EX 10\nSET k v EX\n\
             SET k v EX 0\nSET k v PX -5\nSET k v EX ten\nSET k v GET\nSET k w GET\n\
             SET k x NX GET\nSET k y XX GET\nGET k",
        ),
    ];
    for (name, script) in scenarios {
        pair.same_both_ways(name, script);
    }
}

#[test]
fn odd_scan_cursors_answer_like_redis() {
    let pair = Pair::start();
    let cursors = [
        "-1",
        "x",
        "\"\"",
        "1.5",
        "+1",
        "+",
        "-",
        "01",
        "00",
        "-0",
        "18446744073709551615",
        "18446744073709551616",
        "-18446744073709551615",
        "-18446744073709551616",
        "9223372036854775808",
        "99999999999999999999999",
        "12345",
        "0x10",
        "1e3",
    ];
    let empty: String = cursors.iter().map(|c| format!("SCAN {c}\n")).collect();
    pair.same_both_ways("odd cursors on an empty keyspace", &empty);
    let one_key: String = ["0", "\"\"", "-0", "00", "+0"]
        .iter()
        .map(|c| format!("SCAN {c}\nSCAN {c} MATCH k*\nSCAN {c} COUNT 1000 TYPE string\n"))
        .collect();
    pair.same_both_ways(
        "cursors meaning 0 over one key",
        &format!("SET k v\n{one_key}"),
    );
    pair.same_both_ways(
        "SCAN option errors",
        "SCAN\nSCAN 0 COUNT -1\nSCAN 0 COUNT 0\nSCAN 0 COUNT x\nSCAN 0 MATCH\nSCAN 0 TYPE\n\
         SCAN 0 FOO bar\nSCAN 0 COUNT 9223372036854775807\nSCAN x COUNT x",
    );
}

#[test]
fn client_reply_and_no_evict_answer_like_redis() {
    let pair = Pair::start();
    pair.same(
        "CLIENT REPLY",
        "CLIENT REPLY OFF\nSET a 1\nGET a\nNOSUCH\nCLIENT REPLY ON\nGET a\n\
         CLIENT REPLY SKIP\nGET a\nGET a\nCLIENT REPLY maybe\nCLIENT REPLY\n\
         CLIENT REPLY SKIP\nCLIENT REPLY ON\nPING\nCLIENT REPLY OFF\nCLIENT REPLY SKIP\n\
         PING\nCLIENT REPLY ON\nPING\nMULTI\nCLIENT REPLY OFF\nSET b 2\nEXEC\nCLIENT REPLY ON",
        Mode::Pipelined,
    );
    pair.same_both_ways(
        "CLIENT NO-EVICT",
        "CLIENT NO-EVICT on\nCLIENT NO-EVICT OFF\nCLIENT NO-EVICT maybe\nCLIENT NO-EVICT\n\
         CLIENT NO-EVICT on off",
    );
}

#[test]
fn client_kill_filters_and_errors_answer_like_redis() {
    // Fresh servers with one connection each: nothing else can match.
    let pair = Pair::start();
    pair.same_both_ways(
        "CLIENT KILL",
        "CLIENT KILL\nCLIENT KILL 1.2.3.4:5\nCLIENT KILL ID 999\nCLIENT KILL ID abc\n\
         CLIENT KILL ID 0\nCLIENT KILL ID -1\nCLIENT KILL FOO bar\nCLIENT KILL ADDR 1.2.3.4:5\n\
         CLIENT KILL LADDR 1.2.3.4:5\nCLIENT KILL USER default SKIPME yes\n\
         CLIENT KILL USER nobody\nCLIENT KILL TYPE normal SKIPME yes\nCLIENT KILL TYPE foo\n\
         CLIENT KILL TYPE pubsub SKIPME no\nCLIENT KILL SKIPME maybe\nCLIENT KILL SKIPME yes\n\
         CLIENT KILL MAXAGE 100\nCLIENT KILL ID\nCLIENT KILL ID 1 ADDR\nPING",
    );
}

/// What killing another client and oneself looks like on the server at
/// `port`: the replies, and which connections were closed.
fn kill_transcript(port: u16) -> String {
    let mut out = String::new();
    let mut a = Conn::open(port);
    let mut b = Conn::open(port);
    // Normalised: each server's own id and addresses.
    let b_id = b.client_id();
    a.send(&encode(&format!("CLIENT KILL ID {b_id} SKIPME yes")));
    out += &String::from_utf8(a.replies(1)).unwrap();
    out += &format!("b closed: {}\n", b.closed());
    let mut c = Conn::open(port);
    c.send(&encode("PING"));
    c.replies(1);
    let c_addr = c.stream.local_addr().unwrap();
    let laddr = c.stream.peer_addr().unwrap();
    a.send(&encode(&format!("CLIENT KILL ADDR {c_addr} LADDR {laddr}")));
    out += &String::from_utf8(a.replies(1)).unwrap();
    out += &format!("c closed: {}\n", c.closed());
    let mut d = Conn::open(port);
    d.send(&encode("PING"));
    d.replies(1);
    let d_addr = d.stream.local_addr().unwrap();
    a.send(&encode(&format!("CLIENT KILL {d_addr}")));
    out += &String::from_utf8(a.replies(1)).unwrap();
    out += &format!("d closed: {}\n", d.closed());
    // The old form kills the caller too, after answering.
    let a_addr = a.stream.local_addr().unwrap();
    a.send(&encode(&format!("CLIENT KILL {a_addr}")));
    out += &String::from_utf8(a.replies(1)).unwrap();
    out += &format!("a closed: {}\n", a.closed());
    let mut e = Conn::open(port);
    let e_id = e.client_id();
    e.send(&encode(&format!("CLIENT KILL ID {e_id} SKIPME no")));
    out += &String::from_utf8(e.replies(1)).unwrap();
    out += &format!("e closed: {}\n", e.closed());
    out
}

#[test]
fn client_kill_closes_connections_like_redis() {
    let pair = Pair::start();
    let redis = kill_transcript(pair.redis.port);
    let sidecar = kill_transcript(pair.sidecar.port);
    assert_eq!(sidecar, redis);
    assert!(redis.contains("b closed: true") && redis.contains("e closed: true"));
}

/// A parsed RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Value>>),
}

fn parse(buf: &[u8], at: usize) -> (Value, usize) {
    let line = at + buf[at..].windows(2).position(|w| w == b"\r\n").unwrap();
    let text = String::from_utf8_lossy(&buf[at + 1..line]).into_owned();
    let after = line + 2;
    match buf[at] {
        b'+' => (Value::Simple(text), after),
        b'-' => (Value::Error(text), after),
        b':' => (Value::Integer(text.parse().unwrap()), after),
        b'$' => match text.parse::<i64>().unwrap() {
            n if n < 0 => (Value::Bulk(None), after),
            n => {
                let end = after + n as usize;
                let body = String::from_utf8_lossy(&buf[after..end]).into_owned();
                (Value::Bulk(Some(body)), end + 2)
            }
        },
        _ => match text.parse::<i64>().unwrap() {
            n if n < 0 => (Value::Array(None), after),
            n => {
                let mut items = Vec::new();
                let mut next = after;
                for _ in 0..n {
                    let (item, end) = parse(buf, next);
                    items.push(item);
                    next = end;
                }
                (Value::Array(Some(items)), next)
            }
        },
    }
}

fn command_info(conn: &mut Conn, name: &str) -> Value {
    conn.send(&encode(&format!("COMMAND INFO {name}")));
    let (value, _) = parse(&conn.replies(1), 0);
    match value {
        Value::Array(Some(mut entries)) if entries.len() == 1 => entries.remove(0),
        other => panic!("COMMAND INFO {name}: {other:?}"),
    }
}

/// What `COMMAND INFO` says of a command that clients route and check by:
/// name, arity, flags, first key, last key, key step.
fn command_shape(info: &Value) -> Option<Vec<Value>> {
    match info {
        Value::Array(Some(fields)) => Some(fields[..6].to_vec()),
        _ => None,
    }
}

#[test]
fn command_info_tells_what_redis_does_of_every_command() {
    // ACL categories, tips and key specifications are not modelled (the
    // fields after the sixth); arity, flags and key positions must be
    // Redis's, for every command and subcommand the sidecar has.
    let pair = Pair::start();
    let mut sidecar = Conn::open(pair.sidecar.port);
    let mut redis = Conn::open(pair.redis.port);
    sidecar.send(&encode("COMMAND"));
    let (Value::Array(Some(all)), _) = parse(&sidecar.replies(1), 0) else {
        panic!("COMMAND answers an array");
    };
    let mut names = Vec::new();
    for info in &all {
        let Value::Array(Some(fields)) = info else {
            panic!("{info:?}")
        };
        let Value::Bulk(Some(name)) = &fields[0] else {
            panic!("{info:?}")
        };
        names.push(name.clone());
        if let Value::Array(Some(subcommands)) = &fields[9] {
            for sub in subcommands {
                let Value::Array(Some(sub)) = sub else {
                    panic!("{sub:?}")
                };
                let Value::Bulk(Some(sub)) = &sub[0] else {
                    panic!("{sub:?}")
                };
                names.push(sub.clone());
            }
        }
    }
    assert!(names.len() > 60, "{names:?}");
    pair.same_both_ways(
        "COMMAND's errors and unknown names",
        "COMMAND INFO nosuch\nCOMMAND INFO nosuch client|nosuch get|x\nCOMMAND COUNT x\n\
         COMMAND DOCS nosuch\nCOMMAND FOO\nCOMMAND LIST FILTERBY\nCOMMAND LIST x\n\
         COMMAND LIST FILTERBY FOO x\nCOMMAND LIST FILTERBY PATTERN getd*\n\
         COMMAND LIST FILTERBY MODULE nosuch\nCLIENT FOO\nCLIENT",
    );
    let mut differences = Vec::new();
    for name in &names {
        let ours = command_shape(&command_info(&mut sidecar, name));
        let theirs = command_shape(&command_info(&mut redis, name));
        if name == "client|setinfo" {
            // Redis 7.2's, which clients send on connect; 7.0 does not know it.
            assert_eq!(theirs, None);
            continue;
        }
        if ours != theirs {
            differences.push(format!("{name}: ours {ours:?}, redis {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "COMMAND INFO differs:\n{}",
        differences.join("\n")
    );
}
