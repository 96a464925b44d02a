//! The RESP server: accepts connections up to a limit, runs every complete
//! command a read brought in and writes all their replies at once (so
//! pipelining costs one write per batch), closes connections on protocol
//! errors and idle timeouts, and drains on shutdown. While a storm runs, each
//! batch of commands also feeds the storm's view of the application's traffic
//! (see `app_probe`).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::app_probe::{AppProbe, ProbeHandle};
use crate::commands::{Dispatcher, Session};
use crate::cross_protocol;
use crate::engine::MapEngine;
use crate::metrics::SidecarMetrics;
use crate::resp::{self, Limits, Parser, ProtocolError};

/// How the RESP server treats its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections beyond this are told so and closed (Redis: `maxclients`).
    pub max_clients: usize,
    pub limits: Limits,
    /// Close a connection that sent nothing for this long; `None` never does
    /// (Redis's `timeout 0`).
    pub idle_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: 10_000,
            limits: Limits::default(),
            idle_timeout: None,
        }
    }
}

/// How long connections get to finish after shutdown begins before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown begins, how long a connection keeps reading for commands
/// the client had already sent.
const DRAIN_READ_GRACE: Duration = Duration::from_millis(50);
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Replies are written early once this much is waiting, so a long pipeline of
/// large replies does not pile up in memory.
const WRITE_AT: usize = 64 * 1024;
/// Redis's text, which clients recognise.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Server-wide counters for `INFO`, and the connected clients for `CLIENT LIST`.
#[derive(Debug)]
pub struct ServerStats {
    started: Instant,
    port: AtomicU16,
    connections_received: AtomicU64,
    commands_processed: AtomicU64,
    rejected: AtomicU64,
    connected: AtomicUsize,
    next_client_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, ClientRecord>>,
}

/// What `CLIENT LIST` shows of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientRecord {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) connected_at: Instant,
    pub(crate) name: Option<Bytes>,
    pub(crate) lib_name: Option<Bytes>,
    pub(crate) lib_ver: Option<Bytes>,
    /// Cancelled by `CLIENT KILL`: the connection closes.
    pub(crate) kill: CancellationToken,
}

impl ServerStats {
    pub fn new() -> Self {
        ServerStats {
            started: Instant::now(),
            port: AtomicU16::new(0),
            connections_received: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The port the server listens on (0 before it starts).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// Connections accepted (refused ones not included, as in Redis).
    pub fn total_connections_received(&self) -> u64 {
        self.connections_received.load(Ordering::Relaxed)
    }

    /// Commands run, including those answered with an error. Connections
    /// publish their count after each batch of pipelined commands.
    pub fn total_commands_processed(&self) -> u64 {
        self.commands_processed.load(Ordering::Relaxed)
    }

    /// Connections refused because `max_clients` were connected.
    pub fn rejected_connections(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Open client connections.
    pub fn connected_clients(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn add_commands_processed(&self, commands: u64) {
        if commands > 0 {
            self.commands_processed
                .fetch_add(commands, Ordering::Relaxed);
        }
    }

    /// Count a new connection in and give it its client id.
    pub(crate) fn register_client(&self, peer: SocketAddr, local: SocketAddr) -> u64 {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        let record = ClientRecord {
            peer,
            local,
            connected_at: Instant::now(),
            name: None,
            lib_name: None,
            lib_ver: None,
            kill: CancellationToken::new(),
        };
        self.clients.lock().insert(id, record);
        id
    }

    pub(crate) fn unregister_client(&self, id: u64) {
        self.clients.lock().remove(&id);
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn client(&self, id: u64) -> Option<ClientRecord> {
        self.clients.lock().get(&id).cloned()
    }

    pub(crate) fn clients(&self) -> Vec<(u64, ClientRecord)> {
        self.clients
            .lock()
            .iter()
            .map(|(id, record)| (*id, record.clone()))
            .collect()
    }

    pub(crate) fn update_client(&self, id: u64, change: impl FnOnce(&mut ClientRecord)) {
        if let Some(record) = self.clients.lock().get_mut(&id) {
            change(record);
        }
    }
}

impl Default for ServerStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve RESP on `listener` until `shutdown` is cancelled; then stop
/// accepting, let every connection finish the commands it had sent, and return
/// once all are closed (cutting those still open after [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_stats(
        listener,
        engine,
        metrics,
        config,
        Arc::new(ServerStats::new()),
        shutdown,
    )
    .await
}

/// [`serve`], counting into `stats`, for callers that show them elsewhere.
pub async fn serve_with_stats(
    listener: TcpListener,
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_probed(listener, engine, metrics, config, stats, None, shutdown).await
}

/// [`serve`], with every connection registered with `probe`, so the storms
/// of `Storms::app_probe` see the application's traffic (its latency, and
/// with `check.includeClients` its operations on the stormed keys).
pub async fn serve_with_probe(
    listener: TcpListener,
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    config: ServerConfig,
    probe: Arc<AppProbe>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let stats = Arc::new(ServerStats::new());
    serve_probed(
        listener,
        engine,
        metrics,
        config,
        stats,
        Some(probe),
        shutdown,
    )
    .await
}

async fn serve_probed(
    listener: TcpListener,
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    probe: Option<Arc<AppProbe>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    stats.port.store(local.port(), Ordering::Relaxed);
    let dispatcher = Arc::new(Dispatcher::new(
        engine,
        metrics.clone(),
        stats.clone(),
        config.clone(),
    ));
    let rejected_max_clients = metrics
        .rejected_connections
        .with_label_values(&["max_clients"]);
    let cross_protocol = metrics
        .rejected_connections
        .with_label_values(&["cross_protocol"]);
    let mut connections = JoinSet::new();
    debug!(%local, "serving RESP");

    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished
                    && error.is_panic()
                {
                    warn!(%error, "a RESP connection task panicked");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of
                // spinning on the accept queue.
                warn!(%error, "accepting a RESP connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if stats.connected_clients() >= config.max_clients {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            rejected_max_clients.inc();
            debug!(%peer, max_clients = config.max_clients, "refusing connection: max clients reached");
            // One small write to a fresh socket cannot block; like Redis,
            // don't wait to see whether it arrives.
            let _ = stream.try_write(MAX_CLIENTS_REPLY);
            continue;
        }
        let registration = Registration::new(&stats, &metrics.connected_clients, &stream, peer);
        let connection = Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
            parser: Parser::default(),
            session: Session::new(registration.id, peer),
            dispatcher: dispatcher.clone(),
            limits: config.limits,
            protocol_errors: metrics.protocol_errors.clone(),
            cross_protocol: cross_protocol.clone(),
            probe: probe.as_ref().map(AppProbe::connect),
        };
        connections.spawn(connection.run(config.idle_timeout, shutdown.clone(), registration));
    }

    drop(listener);
    if !connections.is_empty() {
        info!(connections = connections.len(), "draining RESP connections");
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            seconds = DRAIN_TIMEOUT.as_secs(),
            "RESP connections still open after the drain timeout; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// A connection's place in the server's counts: taken at accept, given back
/// when the connection ends however it ends (a task aborted at the drain
/// timeout included).
struct Registration {
    id: u64,
    stats: Arc<ServerStats>,
    gauge: IntGauge,
}

impl Registration {
    fn new(
        stats: &Arc<ServerStats>,
        gauge: &IntGauge,
        stream: &TcpStream,
        peer: SocketAddr,
    ) -> Self {
        let local = stream.local_addr().unwrap_or(peer);
        let id = stats.register_client(peer, local);
        gauge.inc();
        Registration {
            id,
            stats: stats.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stats.unregister_client(self.id);
        self.gauge.dec();
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    ClientClosed,
    Quit,
    IdleTimeout,
    ProtocolError,
    CrossProtocol,
    Shutdown,
    Killed,
}

/// Whether to keep reading after a batch of commands.
enum Next {
    Read,
    Close(Ending),
}

/// Why a run of commands stopped before its replies are written.
enum Ready {
    /// The input holds no complete command.
    Drained,
    /// Replies are waiting past [`WRITE_AT`].
    OutputFull,
    Quit,
    ProtocolError(ProtocolError),
    /// A command looked like HTTP (see `cross_protocol`); it did not run.
    CrossProtocol(&'static str),
}

struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    parser: Parser,
    session: Session,
    dispatcher: Arc<Dispatcher>,
    limits: Limits,
    protocol_errors: IntCounter,
    /// `mapchaos_rejected_connections_total{reason="cross_protocol"}`.
    cross_protocol: IntCounter,
    probe: Option<ProbeHandle>,
}

impl Connection {
    async fn run(
        mut self,
        idle_timeout: Option<Duration>,
        shutdown: CancellationToken,
        registration: Registration,
    ) {
        let peer = self.session.peer;
        let id = registration.id;
        if let Err(error) = self.stream.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        debug!(%peer, id, "client connected");
        let ended = self.serve(idle_timeout, &shutdown).await;
        self.dispatcher.flush(&mut self.session);
        match ended {
            Ok(ending) => {
                // Send FIN after the last reply rather than a reset.
                let _ = self.stream.shutdown().await;
                debug!(%peer, id, ?ending, "client disconnected");
            }
            Err(error) => debug!(%peer, id, %error, "client connection failed"),
        }
        drop(registration);
    }

    async fn serve(
        &mut self,
        idle_timeout: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> io::Result<Ending> {
        let killed = self
            .dispatcher
            .stats()
            .client(self.session.id)
            .map(|record| record.kill)
            .unwrap_or_default();
        loop {
            self.input.reserve(READ_CHUNK);
            let read = tokio::select! {
                biased;
                _ = killed.cancelled() => return Ok(Ending::Killed),
                _ = shutdown.cancelled() => return self.drain().await,
                read = read_with_timeout(&mut self.stream, &mut self.input, idle_timeout) => read?,
            };
            match read {
                None => return Ok(Ending::IdleTimeout),
                Some(0) => return Ok(Ending::ClientClosed),
                Some(_) => {}
            }
            if let Next::Close(ending) = self.run_commands().await? {
                return Ok(ending);
            }
        }
    }

    /// Shutdown began: answer what the client had already sent (what is in
    /// the buffer and what reaches the socket within [`DRAIN_READ_GRACE`]),
    /// then close.
    async fn drain(&mut self) -> io::Result<Ending> {
        loop {
            if let Next::Close(ending) = self.run_commands().await? {
                return Ok(ending);
            }
            self.input.reserve(READ_CHUNK);
            // A non-blocking read would not do: the socket's readiness is
            // only learnt through the runtime's reactor, so bytes already in
            // the kernel could be missed.
            match read_with_timeout(&mut self.stream, &mut self.input, Some(DRAIN_READ_GRACE))
                .await?
            {
                None => return Ok(Ending::Shutdown),
                Some(0) => return Ok(Ending::ClientClosed),
                Some(_) => {}
            }
        }
    }

    /// Run every complete command in the input, then write the replies.
    async fn run_commands(&mut self) -> io::Result<Next> {
        loop {
            match self.run_ready() {
                Ready::OutputFull => self.write().await?,
                Ready::Drained => {
                    self.write().await?;
                    return Ok(Next::Read);
                }
                Ready::Quit => {
                    self.write().await?;
                    return Ok(Next::Close(Ending::Quit));
                }
                Ready::ProtocolError(error) => {
                    self.protocol_error(error);
                    self.write().await?;
                    return Ok(Next::Close(Ending::ProtocolError));
                }
                Ready::CrossProtocol(what) => {
                    // Like Redis: log, answer nothing (not even the replies
                    // of commands before it), close.
                    warn!(peer = %self.session.peer, what, "possible security attack: a command looked like HTTP (cross-protocol scripting); connection closed");
                    self.cross_protocol.inc();
                    self.output.clear();
                    return Ok(Next::Close(Ending::CrossProtocol));
                }
            }
        }
    }

    /// Run complete commands until the replies are due. Synchronous, and one
    /// section of the probe: a storm attaching or detaching waits for it.
    fn run_ready(&mut self) -> Ready {
        let mut section = self.probe.as_ref().map(ProbeHandle::enter);
        loop {
            let inline = self.parser.next_is_inline(&self.input);
            match self.parser.next_command(&mut self.input, &self.limits) {
                Ok(Some(args)) => {
                    if let Some(what) = cross_protocol::looks_like_http(&args, inline) {
                        return Ready::CrossProtocol(what);
                    }
                    let storm = section.as_mut().and_then(|s| s.storm());
                    self.dispatcher.execute_observed(
                        &mut self.session,
                        storm,
                        &args,
                        &mut self.output,
                    );
                    if self.session.quit {
                        return Ready::Quit;
                    }
                    if self.output.len() >= WRITE_AT {
                        return Ready::OutputFull;
                    }
                }
                Ok(None) => return Ready::Drained,
                Err(error) => return Ready::ProtocolError(error),
            }
        }
    }

    fn protocol_error(&mut self, error: ProtocolError) {
        warn!(peer = %self.session.peer, %error, "closing RESP connection after a protocol error");
        self.protocol_errors.inc();
        resp::write_error(&mut self.output, &format!("ERR {error}"));
    }

    async fn write(&mut self) -> io::Result<()> {
        self.dispatcher.flush(&mut self.session);
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }
}

/// One read; `None` when the idle timeout passed first.
async fn read_with_timeout(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    idle_timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    match idle_timeout {
        None => stream.read_buf(input).await.map(Some),
        Some(limit) => match tokio::time::timeout(limit, stream.read_buf(input)).await {
            Ok(read) => read.map(Some),
            Err(_) => Ok(None),
        },
    }
}
