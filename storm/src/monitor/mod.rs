//! The application's writes over the network (`--target`), for a restore
//! that must never revert them: a `MONITOR` connection opened before the
//! storm prepares its keys, in which every command the server runs shows up
//! with its client's address. The storm's own connections register their
//! address (`CLIENT INFO`) before sending anything, so every other line is
//! the application's; its writes to stormed keys are noted on the storm's
//! [`AppTraffic`] like the sidecar's front end notes them.
//!
//! A restore needs a consistent cut of those writes, and the feed lags the
//! commands. A mark — `ECHO` of a token only the storm knows, sent on one of
//! its own connections — shows where the server is: once the feed reaches
//! it, every command that ran before it has been noted. The restore cuts
//! with a mark before deciding a batch, then, after `WATCH`ing and reading
//! the batch, sends a second mark: a key the application wrote between the
//! two holds the application's last write (the workers had stopped), and one
//! it writes later aborts the `EXEC`.

pub(crate) mod effects;
mod line;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app_traffic::{AppLog, AppTap, AppTraffic};
use crate::client::RespClient;
use crate::glob::Glob;
use crate::restore::AppWrite;
use crate::workload::decode_value;
use effects::Effect;

/// Why the application's writes cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WatchError(pub String);

/// The longest a mark may take to come through the feed before the watch
/// counts as lost.
const MIN_MARK_WAIT: Duration = Duration::from_secs(10);

/// A running watch of the application's writes. Its [`AppTap`] is what the
/// runner attaches a storm to.
pub struct WriteWatch {
    inner: Arc<WatchInner>,
    stream: Stream,
    reader: Option<JoinHandle<()>>,
    /// The connection cut marks go out on.
    marks: Mutex<RespClient>,
}

/// What the feed's reader and the storm's connections share.
pub(crate) struct WatchInner {
    /// The database the storm's connections use.
    db: i64,
    /// Marks are `ECHO <token>c<n>` (a cut) or `ECHO <token>t<n>`.
    token: Vec<u8>,
    next_mark: AtomicU64,
    /// The storm's connections, by the address the server prints.
    storm: RwLock<HashSet<Vec<u8>>>,
    state: Mutex<State>,
    seen: Condvar,
    mark_wait: Duration,
}

#[derive(Default)]
struct State {
    /// Marks the feed reached and nobody took yet.
    seen: HashSet<u64>,
    /// Why the feed stopped telling the application's writes, once it did.
    lost: Option<String>,
    attached: Option<Attached>,
    /// Stormed keys the application wrote since the last cut.
    since_cut: HashSet<Vec<u8>>,
    /// Every key written (a flush, SWAPDB) since the last cut.
    all_since_cut: bool,
    /// Application lines that wrote a stormed key, for the record.
    app_writes: u64,
}

struct Attached {
    traffic: Arc<AppTraffic>,
    log: AppLog,
    glob: Glob,
}

impl Attached {
    fn stormed(&self, key: &[u8]) -> bool {
        if self.traffic.is_running() {
            self.traffic.is_stormed(key)
        } else {
            self.glob.matches(key)
        }
    }
}

/// The feed's socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One simple-string or error reply, as a line without its end.
fn reply_line(reader: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("no reply: {e}"))?;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

impl WriteWatch {
    /// Open the feed on the server at `url` and prove it shows the storm's
    /// commands (a mark sent on another connection must come through).
    pub fn open(url: &str, timeout: Duration) -> Result<WriteWatch, WatchError> {
        let client = redis::Client::open(url)
            .map_err(|e| WatchError(format!("invalid target {url:?}: {e}")))?;
        let info = client.get_connection_info();
        let connect_error = |e: std::io::Error| WatchError(format!("cannot connect: {e}"));
        let stream = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(connect_error)?
                    .collect();
                let mut last = None;
                let mut stream = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let stream = match (stream, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(connect_error(e)),
                    (None, None) => return Err(WatchError(format!("{host} has no address"))),
                };
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }
            redis::ConnectionAddr::Unix(path) => {
                Stream::Unix(UnixStream::connect(path).map_err(connect_error)?)
            }
            _ => {
                return Err(WatchError(
                    "the write watch reads MONITOR over plain TCP or a unix socket, not TLS".into(),
                ));
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(connect_error)?;
        let mut writer = stream.try_clone().map_err(connect_error)?;
        let mut reader =
            BufReader::with_capacity(1 << 20, stream.try_clone().map_err(connect_error)?);
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let auth = match settings.username() {
                Some(user) => command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => command(&[b"AUTH", password.as_bytes()]),
            };
            writer.write_all(&auth).map_err(connect_error)?;
            let reply = reply_line(&mut reader).map_err(WatchError)?;
            if reply != b"+OK" {
                return Err(WatchError(format!(
                    "AUTH on the watch connection: {}",
                    String::from_utf8_lossy(&reply)
                )));
            }
        }
        writer
            .write_all(&command(&[b"MONITOR"]))
            .map_err(connect_error)?;
        let reply = reply_line(&mut reader).map_err(WatchError)?;
        if reply != b"+OK" {
            return Err(WatchError(format!(
                "the server refused MONITOR: {}",
                String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(&reply))
            )));
        }
        stream.set_read_timeout(None).map_err(connect_error)?;

        // Unguessable enough that no application ECHO is taken for a mark
        // (a mark must also come from one of the storm's connections).
        let nonce = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(Instant::now())
        };
        let inner = Arc::new(WatchInner {
            db: settings.db(),
            token: format!("mapchaos-watch-mark:{nonce:016x}:").into_bytes(),
            next_mark: AtomicU64::new(1),
            storm: RwLock::default(),
            state: Mutex::default(),
            seen: Condvar::new(),
            mark_wait: MIN_MARK_WAIT.max(timeout * 2),
        });
        let reader = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("write-watch".into())
                .spawn(move || inner.read(reader))
                .map_err(|e| WatchError(format!("cannot start the watch: {e}")))?
        };
        let marks = RespClient::connect_watched(url, timeout, Some(inner.clone()))
            .map_err(|e| WatchError(e.to_string()));
        let watch = WriteWatch {
            inner,
            stream,
            reader: Some(reader),
            marks: Mutex::new(marks?),
        };
        watch.sync(false).map_err(|e| {
            WatchError(format!(
                "MONITOR answered, but the storm's own commands did not come through it: {e}"
            ))
        })?;
        Ok(watch)
    }

    pub(crate) fn inner(&self) -> &Arc<WatchInner> {
        &self.inner
    }

    /// Wait until every command the server ran so far has been noted; with
    /// `cut`, start a new "written since" set at that point.
    fn sync(&self, cut: bool) -> Result<(), String> {
        let (n, text) = self.inner.new_mark(cut);
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = marks.echo(&text) {
            let reason = format!("a mark could not be sent: {error}");
            self.inner.lose(reason.clone());
            return Err(reason);
        }
        drop(marks);
        self.inner.await_mark(n)
    }

    /// Application lines that wrote a stormed key so far.
    pub fn app_writes_seen(&self) -> u64 {
        self.inner.lock().app_writes
    }
}

impl Drop for WriteWatch {
    fn drop(&mut self) {
        self.inner.lose("the watch was closed".into());
        self.stream.shutdown();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl AppTap for WriteWatch {
    fn attach(&self, traffic: Arc<AppTraffic>) {
        let glob = Glob::new(traffic.key_pattern());
        let log = AppLog::new(traffic.clone());
        let mut state = self.inner.lock();
        state.app_writes = 0;
        state.attached = Some(Attached { traffic, log, glob });
    }

    fn detach(&self) {
        let _ = self.sync(false);
        let attached = self.inner.lock().attached.take();
        drop(attached);
    }

    fn quiesce(&self, f: &mut dyn FnMut()) {
        // A lost watch is told by `lost`; the caller goes on regardless.
        let _ = self.sync(true);
        f();
    }

    fn lost(&self) -> Option<String> {
        self.inner.lost()
    }

    fn times_commands(&self) -> bool {
        false
    }

    fn restore_guarantee(&self) -> &'static str {
        "MONITOR: every application write to the stormed keys seen; each batch decided at a mark in the feed, then WATCHed, read and written in MULTI/EXEC, a key the application wrote since left as it is"
    }
}

impl WatchInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection of the storm's, by the address the server prints for it.
    pub(crate) fn register(&self, address: Vec<u8>) {
        self.storm
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address);
    }

    pub(crate) fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    fn lose(&self, reason: String) {
        let mut state = self.lock();
        if state.lost.is_none() {
            state.lost = Some(reason);
        }
        drop(state);
        self.seen.notify_all();
    }

    /// A new mark's number and the `ECHO` argument that carries it.
    pub(crate) fn new_mark(&self, cut: bool) -> (u64, Vec<u8>) {
        let n = self.next_mark.fetch_add(1, Ordering::Relaxed);
        let mut text = self.token.clone();
        text.push(if cut { b'c' } else { b't' });
        text.extend_from_slice(n.to_string().as_bytes());
        (n, text)
    }

    /// Wait for mark `n` to come through the feed.
    pub(crate) fn await_mark(&self, n: u64) -> Result<(), String> {
        let deadline = Instant::now() + self.mark_wait;
        let mut state = self.lock();
        loop {
            if state.seen.remove(&n) {
                return Ok(());
            }
            if let Some(lost) = &state.lost {
                return Err(lost.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let reason = format!(
                    "the MONITOR feed fell more than {:?} behind the server",
                    self.mark_wait
                );
                state.lost = Some(reason.clone());
                drop(state);
                self.seen.notify_all();
                return Err(reason);
            }
            state = self
                .seen
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the application wrote `key` since the last cut mark.
    pub(crate) fn written_since_cut(&self, key: &[u8]) -> bool {
        let state = self.lock();
        state.all_since_cut || state.since_cut.contains(key)
    }

    /// The reader thread: every line until the connection ends.
    fn read(&self, mut reader: BufReader<Stream>) {
        let mut line = Vec::with_capacity(512);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    self.lose("the server closed the MONITOR connection".into());
                    return;
                }
                Ok(_) if line.last() == Some(&b'\n') => {}
                Ok(_) => {
                    self.lose("the MONITOR connection ended mid-line".into());
                    return;
                }
                Err(error) => {
                    self.lose(format!("the MONITOR connection failed: {error}"));
                    return;
                }
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            match line.first() {
                Some(b'+') => {}
                _ => {
                    self.lose(format!(
                        "the MONITOR feed sent {:?}",
                        String::from_utf8_lossy(&line)
                    ));
                    return;
                }
            }
            if let Err(reason) = self.feed(&line[1..]) {
                self.lose(reason);
                return;
            }
        }
    }

    /// One line of the feed.
    fn feed(&self, line: &[u8]) -> Result<(), String> {
        let unreadable = || {
            format!(
                "unreadable MONITOR line {:?}",
                String::from_utf8_lossy(line)
            )
        };
        let header = line::header(line).ok_or_else(unreadable)?;
        let storm = self
            .storm
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(header.client);
        if storm {
            // Only a mark matters on the storm's own connections.
            if header.rest.len() > 7 && header.rest[..7].eq_ignore_ascii_case(b"\"echo\" ") {
                let args = line::arguments(header.rest).ok_or_else(unreadable)?;
                if let Some(mark) = args.get(1).and_then(|a| a.strip_prefix(&self.token[..])) {
                    self.reached(mark);
                }
            }
            return Ok(());
        }
        let args = line::arguments(header.rest).ok_or_else(unreadable)?;
        let mut found = Vec::new();
        effects::effects(&args, header.db, self.db, header.at_ms, &mut found);
        if !found.is_empty() {
            let mut state = self.lock();
            let state = &mut *state;
            if let Some(attached) = &mut state.attached {
                let mut wrote = false;
                for effect in found.drain(..) {
                    match effect {
                        Effect::Write(key, write) => {
                            if !attached.stormed(key) {
                                continue;
                            }
                            // Bytes only a storm writes, from a connection
                            // not registered: what they replace is unknown.
                            let write = match write {
                                AppWrite::Set(value) | AppWrite::SetExpiring { value, .. }
                                    if decode_value(&value).is_some() =>
                                {
                                    AppWrite::Unknown
                                }
                                other => other,
                            };
                            attached.traffic.note_write(key, write);
                            attached.log.exclude_key(key);
                            state.since_cut.insert(key.to_vec());
                            wrote = true;
                        }
                        Effect::Flush => {
                            attached.traffic.note_flush();
                            attached.log.exclude_everything();
                            state.all_since_cut = true;
                            wrote = true;
                        }
                        Effect::EverythingUnknown => {
                            attached.traffic.note_everything_unknown();
                            attached.log.exclude_everything();
                            state.all_since_cut = true;
                            wrote = true;
                        }
                    }
                }
                state.app_writes += u64::from(wrote);
            }
        }
        Ok(())
    }

    /// A mark (the text after the token) came through.
    fn reached(&self, mark: &[u8]) {
        let Some((&kind, number)) = mark.split_first() else {
            return;
        };
        let Some(n) = std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        let mut state = self.lock();
        if kind == b'c' {
            state.since_cut.clear();
            state.all_since_cut = false;
        }
        state.seen.insert(n);
        drop(state);
        self.seen.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use mapchaos_api::spec::KeySource;

    use super::*;
    use crate::history::RecordBudget;
    use crate::workload::encode_value;

    /// A watch with no connection, fed by hand, attached to a restoring
    /// storm of `app:*`; the storm's own connection is 127.0.0.1:1000.
    fn watch() -> (WatchInner, Arc<AppTraffic>) {
        let inner = WatchInner {
            db: 0,
            token: b"mark:".to_vec(),
            next_mark: AtomicU64::new(1),
            storm: RwLock::default(),
            state: Mutex::default(),
            seen: Condvar::new(),
            mark_wait: Duration::from_millis(50),
        };
        inner.register(b"127.0.0.1:1000".to_vec());
        let traffic = AppTraffic::new(
            Instant::now(),
            false,
            KeySource::Existing,
            b"app:*".to_vec(),
            RecordBudget::new(1_000),
        );
        traffic.track_writes();
        inner.lock().attached = Some(Attached {
            traffic: traffic.clone(),
            log: AppLog::new(traffic.clone()),
            glob: Glob::new(b"app:*"),
        });
        (inner, traffic)
    }

    fn written(traffic: &AppTraffic, key: &str) -> Option<AppWrite> {
        traffic.app_write(0, key.as_bytes())
    }

    fn set(value: &str) -> Option<AppWrite> {
        Some(AppWrite::Set(value.as_bytes().to_vec().into()))
    }

    #[test]
    fn the_applications_writes_are_noted_and_the_storms_are_not() {
        let (w, traffic) = watch();
        for line in [
            r#"1.0 [0 127.0.0.1:1000] "SET" "app:storm" "x""#,
            r#"1.0 [0 127.0.0.1:2000] "set" "app:a" "v\x01""#,
            r#"1.0 [0 127.0.0.1:2000] "SET" "other:b" "v""#,
            r#"1.0 [0 lua] "set" "app:c" "from-script""#,
            r#"1.0 [0 127.0.0.1:2000] "MSET" "app:d" "1" "app:e" "2""#,
            r#"1.0 [0 127.0.0.1:2000] "DEL" "app:e" "app:f""#,
            r#"1.0 [0 127.0.0.1:2000] "INCR" "app:g""#,
            r#"1.0 [3 127.0.0.1:2000] "SET" "app:h" "other-db""#,
            r#"1.0 [0 [::1]:2000] "GET" "app:i""#,
        ] {
            w.feed(line.as_bytes()).unwrap();
        }
        assert_eq!(written(&traffic, "app:storm"), None);
        assert_eq!(written(&traffic, "app:a"), set("v\x01"));
        assert_eq!(written(&traffic, "other:b"), None, "not a stormed key");
        assert_eq!(written(&traffic, "app:c"), set("from-script"));
        assert_eq!(written(&traffic, "app:d"), set("1"));
        assert_eq!(written(&traffic, "app:e"), Some(AppWrite::Deleted));
        assert_eq!(written(&traffic, "app:f"), Some(AppWrite::Deleted));
        assert_eq!(written(&traffic, "app:g"), Some(AppWrite::Unknown));
        assert_eq!(written(&traffic, "app:h"), None, "another database");
        assert_eq!(written(&traffic, "app:i"), None, "a read");
        // A flush in any database with FLUSHALL deletes every key; a later
        // write wins over it.
        w.feed(br#"2.0 [5 127.0.0.1:2000] "FLUSHALL""#).unwrap();
        w.feed(br#"2.0 [0 127.0.0.1:2000] "SET" "app:a" "after""#)
            .unwrap();
        assert_eq!(written(&traffic, "app:a"), set("after"));
        assert_eq!(written(&traffic, "app:d"), Some(AppWrite::Deleted));
        w.feed(br#"3.0 [0 127.0.0.1:2000] "SWAPDB" "0" "1""#)
            .unwrap();
        assert_eq!(written(&traffic, "app:a"), Some(AppWrite::Unknown));
        assert_eq!(w.lock().app_writes, 8);
    }

    #[test]
    fn storm_bytes_from_an_unregistered_connection_are_an_unknown_write() {
        let (w, traffic) = watch();
        let storm_value = encode_value(7, 16);
        let mut line = br#"1.0 [0 127.0.0.1:2000] "SET" "app:a" ""#.to_vec();
        for byte in &storm_value {
            line.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
        }
        line.push(b'"');
        w.feed(&line).unwrap();
        assert_eq!(written(&traffic, "app:a"), Some(AppWrite::Unknown));
    }

    #[test]
    fn marks_count_only_from_the_storms_connections_and_cuts_reset_what_was_written_since() {
        let (w, _) = watch();
        w.feed(br#"1.0 [0 127.0.0.1:2000] "SET" "app:a" "v""#)
            .unwrap();
        assert!(w.written_since_cut(b"app:a"));
        // The application echoing the token is no mark.
        let (n, text) = w.new_mark(true);
        let echo = |from: &str, text: &[u8]| {
            format!(
                r#"1.0 [0 {from}] "ECHO" "{}""#,
                String::from_utf8_lossy(text)
            )
        };
        w.feed(echo("127.0.0.1:2000", &text).as_bytes()).unwrap();
        assert!(w.await_mark(n).is_err(), "not reached: the wait times out");
        let (w, _) = watch();
        w.feed(br#"1.0 [0 127.0.0.1:2000] "SET" "app:a" "v""#)
            .unwrap();
        let (n, text) = w.new_mark(true);
        w.feed(echo("127.0.0.1:1000", &text).as_bytes()).unwrap();
        w.await_mark(n).unwrap();
        assert!(!w.written_since_cut(b"app:a"), "cut");
        w.feed(br#"1.0 [0 127.0.0.1:2000] "DEL" "app:b""#).unwrap();
        let (n, text) = w.new_mark(false);
        w.feed(echo("127.0.0.1:1000", &text).as_bytes()).unwrap();
        w.await_mark(n).unwrap();
        assert!(w.written_since_cut(b"app:b"), "a plain mark cuts nothing");
        w.feed(br#"1.0 [0 127.0.0.1:2000] "FLUSHDB""#).unwrap();
        assert!(w.written_since_cut(b"app:zzz"));
    }

    #[test]
    fn an_unreadable_line_loses_the_watch_rather_than_guess() {
        let (w, _) = watch();
        assert!(w.feed(b"1.0 no header").is_err());
        assert!(
            w.feed(br#"1.0 [0 127.0.0.1:2000] "SET" "app:a" "unterminated"#)
                .is_err()
        );
    }
}
