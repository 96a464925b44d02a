//! How a storm worker talks to a map: one trait, implemented in-process by the
//! sidecar's engine and here over RESP for any Redis-protocol server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::monitor::{WatchError, WatchInner, WriteWatch};
use crate::restore::{Applied, RestoreItem};

/// One single-key request. Keys and values are borrowed: the worker owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Get(&'a [u8]),
    Set(&'a [u8], &'a [u8]),
    Del(&'a [u8]),
    Exists(&'a [u8]),
    /// `PTTL`: the remaining time to live in milliseconds.
    Pttl(&'a [u8]),
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `GET`: the value, or nil.
    Value(Option<Bytes>),
    /// `SET`: acknowledged.
    Ok,
    /// `DEL`/`EXISTS`: the integer reply.
    Count(u64),
    /// `PTTL`: milliseconds left, -1 without a TTL, -2 for a missing key.
    Ttl(i64),
}

/// Why a request got no answer. The operation may or may not have taken
/// effect (the history records it as such).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error reply.
    #[error("server error: {0}")]
    Server(String),
    /// No reply in time, or the connection broke; the connection is reset.
    #[error("connection: {0}")]
    Connection(String),
    /// The reply had an unexpected shape for the command.
    #[error("unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        command: &'static str,
        reply: String,
    },
}

/// A connection to the map under test. Each storm worker owns one.
pub trait MapClient: Send {
    /// Run `requests` in order (pipelined where the transport can) and push one
    /// result per request onto `responses`.
    fn execute(
        &mut self,
        requests: &[Request<'_>],
        responses: &mut Vec<Result<Response, ClientError>>,
    );

    /// One `SCAN cursor MATCH pattern COUNT count` step.
    fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), ClientError>;

    /// For each item, atomically with respect to every other client: when
    /// the key holds what is wanted, nothing; when it is absent or holds a
    /// storm value, make it hold what is wanted; when it holds anything else
    /// (a write by someone else), nothing. One result per item onto `applied`.
    fn restore(
        &mut self,
        items: &[RestoreItem<'_>],
        applied: &mut Vec<Result<Applied, ClientError>>,
    );

    /// What [`MapClient::restore`] can promise, in a sentence for reports.
    fn restore_guarantee(&self) -> &'static str;

    /// Whether other clients' writes to the map go unseen by a restore
    /// through this client alone (over the network without a write watch).
    fn unwatched(&self) -> bool {
        false
    }
}

/// A map served over RESP (the sidecar, redis-server, anything compatible),
/// through the `redis` client crate.
pub struct RespClient {
    client: redis::Client,
    connection: Option<redis::Connection>,
    timeout: Duration,
    /// Whether the server runs WATCH/MULTI/EXEC; `None` until a restore asks.
    pub(crate) transactions: Option<bool>,
    /// The watch of the application's writes this connection registers with.
    pub(crate) watch: Option<Arc<WatchInner>>,
}

impl RespClient {
    /// Connect to `url` (`redis://host:port`). Requests that get no reply
    /// within `timeout` fail (and the connection is re-opened on next use).
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::connect_watched(url, timeout, None)
    }

    /// [`RespClient::connect`], every connection registered with `watch` as
    /// one of the storm's before its first command.
    pub(crate) fn connect_watched(
        url: &str,
        timeout: Duration,
        watch: Option<Arc<WatchInner>>,
    ) -> Result<Self, ClientError> {
        let client = redis::Client::open(url)
            .map_err(|e| ClientError::Connection(format!("invalid target {url:?}: {e}")))?;
        let mut this = RespClient {
            client,
            connection: None,
            timeout,
            transactions: None,
            watch,
        };
        this.connection()?;
        Ok(this)
    }

    pub(crate) fn connection(&mut self) -> Result<&mut redis::Connection, ClientError> {
        if self.connection.is_none() {
            let connection = self
                .client
                .get_connection_with_timeout(self.timeout)
                .map_err(|e| ClientError::Connection(e.to_string()))?;
            connection
                .set_read_timeout(Some(self.timeout))
                .and_then(|()| connection.set_write_timeout(Some(self.timeout)))
                .map_err(|e| ClientError::Connection(e.to_string()))?;
            let mut connection = connection;
            if let Some(watch) = &self.watch {
                // Before anything else is sent on it: its writes must never
                // be taken for the application's.
                watch.register(client_address(&mut connection)?);
            }
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("just connected"))
    }

    /// `ECHO text`, for a mark in the write watch's feed.
    pub(crate) fn echo(&mut self, text: &[u8]) -> Result<(), ClientError> {
        let reply: Result<Vec<u8>, ClientError> = self.connection().and_then(|c| {
            redis::cmd("ECHO")
                .arg(text)
                .query(c)
                .map_err(|e| ClientError::Connection(e.to_string()))
        });
        match reply {
            Ok(echoed) if echoed == text => Ok(()),
            Ok(other) => Err(ClientError::UnexpectedReply {
                command: "ECHO",
                reply: String::from_utf8_lossy(&other).into_owned(),
            }),
            Err(error) => {
                self.reset();
                Err(error)
            }
        }
    }

    /// After a transport error the stream may hold late replies: drop it.
    pub(crate) fn reset(&mut self) {
        self.connection = None;
    }
}

/// This connection's address as the server prints it in `MONITOR`
/// (`CLIENT INFO`'s `addr`, or `CLIENT LIST ID`'s before Redis 6.2).
fn client_address(connection: &mut redis::Connection) -> Result<Vec<u8>, ClientError> {
    let field = |info: &str| {
        info.split_ascii_whitespace()
            .find_map(|f| f.strip_prefix("addr="))
            .map(|a| a.as_bytes().to_vec())
    };
    let info: Result<String, _> = redis::cmd("CLIENT").arg("INFO").query(connection);
    if let Some(address) = info.ok().as_deref().and_then(field) {
        return Ok(address);
    }
    let listed: Result<String, redis::RedisError> = redis::cmd("CLIENT")
        .arg("ID")
        .query::<i64>(connection)
        .and_then(|id| {
            redis::cmd("CLIENT")
                .arg("LIST")
                .arg("ID")
                .arg(id)
                .query(connection)
        });
    match listed {
        Ok(list) => match field(&list) {
            Some(address) => Ok(address),
            None => Err(ClientError::UnexpectedReply {
                command: "CLIENT LIST",
                reply: list,
            }),
        },
        Err(error) => Err(ClientError::Connection(format!(
            "cannot learn this connection's address for the write watch (CLIENT INFO, CLIENT LIST ID): {error}"
        ))),
    }
}

pub(crate) fn decode(request: &Request<'_>, value: redis::Value) -> Result<Response, ClientError> {
    use redis::Value;
    let unexpected = |command, value: Value| ClientError::UnexpectedReply {
        command,
        reply: format!("{value:?}"),
    };
    match (request, value) {
        (_, Value::ServerError(error)) => Err(ClientError::Server(error.to_string())),
        (Request::Get(_), Value::Nil) => Ok(Response::Value(None)),
        (Request::Get(_), Value::BulkString(bytes)) => {
            Ok(Response::Value(Some(Bytes::from(bytes))))
        }
        (Request::Get(_), other) => Err(unexpected("GET", other)),
        (Request::Set(..), Value::Okay) => Ok(Response::Ok),
        (Request::Set(..), Value::SimpleString(s)) if s == "OK" => Ok(Response::Ok),
        (Request::Set(..), other) => Err(unexpected("SET", other)),
        (Request::Del(_) | Request::Exists(_), Value::Int(n)) if n >= 0 => {
            Ok(Response::Count(n as u64))
        }
        (Request::Del(_), other) => Err(unexpected("DEL", other)),
        (Request::Exists(_), other) => Err(unexpected("EXISTS", other)),
        (Request::Pttl(_), Value::Int(n)) => Ok(Response::Ttl(n)),
        (Request::Pttl(_), other) => Err(unexpected("PTTL", other)),
    }
}

impl MapClient for RespClient {
    fn execute(
        &mut self,
        requests: &[Request<'_>],
        responses: &mut Vec<Result<Response, ClientError>>,
    ) {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for request in requests {
            match *request {
                Request::Get(key) => pipeline.cmd("GET").arg(key),
                Request::Set(key, value) => pipeline.cmd("SET").arg(key).arg(value),
                Request::Del(key) => pipeline.cmd("DEL").arg(key),
                Request::Exists(key) => pipeline.cmd("EXISTS").arg(key),
                Request::Pttl(key) => pipeline.cmd("PTTL").arg(key),
            };
        }
        let result: Result<Vec<redis::Value>, ClientError> = self.connection().and_then(|c| {
            pipeline
                .query(c)
                .map_err(|e| ClientError::Connection(e.to_string()))
        });
        match result {
            Ok(values) if values.len() == requests.len() => {
                responses.extend(requests.iter().zip(values).map(|(r, v)| decode(r, v)));
            }
            Ok(values) => {
                self.reset();
                let error = ClientError::Connection(format!(
                    "{} replies to {} pipelined requests",
                    values.len(),
                    requests.len()
                ));
                responses.extend(requests.iter().map(|_| Err(error.clone())));
            }
            Err(error) => {
                self.reset();
                responses.extend(requests.iter().map(|_| Err(error.clone())));
            }
        }
    }

    fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), ClientError> {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let reply: Result<(u64, Vec<Vec<u8>>), ClientError> = self.connection().and_then(|c| {
            command
                .query(c)
                .map_err(|e| ClientError::Connection(e.to_string()))
        });
        match reply {
            Ok((next, keys)) => Ok((next, keys.into_iter().map(Bytes::from).collect())),
            Err(error) => {
                self.reset();
                Err(error)
            }
        }
    }

    fn restore(
        &mut self,
        items: &[RestoreItem<'_>],
        applied: &mut Vec<Result<Applied, ClientError>>,
    ) {
        crate::resp_restore::restore(self, items, applied);
    }

    fn restore_guarantee(&self) -> &'static str {
        crate::resp_restore::guarantee(self)
    }

    fn unwatched(&self) -> bool {
        self.watch.is_none()
    }
}

/// A storm target reached over RESP: every worker opens its own connection.
pub struct RespTarget {
    url: String,
    timeout: Duration,
    watch: Option<WriteWatch>,
}

impl RespTarget {
    /// Check the URL and that the server answers, so a typo fails before any
    /// preparation.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ClientError> {
        RespClient::connect(url, timeout)?;
        Ok(RespTarget {
            url: url.to_owned(),
            timeout,
            watch: None,
        })
    }

    /// Watch the application's writes (`MONITOR`) from now on, so a restore
    /// never reverts one; storms then see them through [`StormTarget::app_tap`].
    ///
    /// [`StormTarget::app_tap`]: crate::runner::StormTarget::app_tap
    pub fn watch_app_writes(&mut self) -> Result<(), WatchError> {
        self.watch = Some(WriteWatch::open(&self.url, self.timeout)?);
        Ok(())
    }

    /// The running watch, if any.
    pub fn write_watch(&self) -> Option<&WriteWatch> {
        self.watch.as_ref()
    }
}

impl crate::runner::StormTarget for RespTarget {
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        Ok(Box::new(RespClient::connect_watched(
            &self.url,
            self.timeout,
            self.watch.as_ref().map(|w| w.inner().clone()),
        )?))
    }

    fn app_tap(&self) -> Option<&dyn crate::app_traffic::AppTap> {
        self.watch
            .as_ref()
            .map(|w| w as &dyn crate::app_traffic::AppTap)
    }

    /// `DBSIZE` and `INFO memory`; a server that does not tell leaves fields empty.
    fn memory(&self) -> mapchaos_api::storm::MemorySnapshot {
        let mut snapshot = mapchaos_api::storm::MemorySnapshot::default();
        let Ok(mut client) = RespClient::connect(&self.url, self.timeout) else {
            return snapshot;
        };
        let Ok(connection) = client.connection() else {
            return snapshot;
        };
        if let Ok(keys) = redis::cmd("DBSIZE").query::<u64>(connection) {
            snapshot.keys = keys;
        }
        if let Ok(info) = redis::cmd("INFO").arg("memory").query::<String>(connection) {
            let field = |name: &str| {
                info.lines().find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(':')?
                        .trim()
                        .parse()
                        .ok()
                })
            };
            snapshot.live_bytes = field("used_memory");
            snapshot.held_bytes = field("mapchaos_held_bytes");
            snapshot.rss_bytes = field("used_memory_rss");
        }
        snapshot
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
