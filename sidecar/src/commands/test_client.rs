//! A client session against a real engine on a manual clock, for the command tests.

use super::*;
use crate::engine::{Clock, ShardedEngine};

pub(crate) const START: Millis = 1_700_000_000_000;

/// One client session against a real engine on a manual clock.
pub(crate) struct Client {
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<SidecarMetrics>,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) session: Session,
}

impl Client {
    pub(crate) fn new() -> Self {
        Self::with(4, ServerConfig::default())
    }

    /// On an engine of `shards` shards.
    pub(crate) fn with_shards(shards: usize) -> Self {
        Self::with(shards, ServerConfig::default())
    }

    /// With `client-query-buffer-limit` at `bytes`.
    pub(crate) fn with_query_limit(bytes: usize) -> Self {
        let mut config = ServerConfig::default();
        config.limits.max_query_bytes = bytes;
        Self::with(4, config)
    }

    fn with(shards: usize, config: ServerConfig) -> Self {
        let clock = Clock::manual(START);
        let engine = Arc::new(ShardedEngine::new(shards, clock.clone()));
        let metrics = Arc::new(SidecarMetrics::new());
        let stats = Arc::new(ServerStats::new());
        let dispatcher = Arc::new(Dispatcher::new(
            engine,
            metrics.clone(),
            stats.clone(),
            config,
        ));
        Self::connect(clock, metrics, stats, dispatcher)
    }

    /// Another connection to the same server.
    pub(crate) fn other(&self) -> Self {
        Self::connect(
            self.clock.clone(),
            self.metrics.clone(),
            self.stats.clone(),
            self.dispatcher.clone(),
        )
    }

    fn connect(
        clock: Clock,
        metrics: Arc<SidecarMetrics>,
        stats: Arc<ServerStats>,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let id = stats.register_client(peer, "127.0.0.1:6379".parse().unwrap());
        let session = Session::new(id, peer);
        Client {
            clock,
            metrics,
            stats,
            dispatcher,
            session,
        }
    }

    /// Run a command given as separate arguments; the raw reply.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> String {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let mut out = BytesMut::new();
        self.dispatcher.execute(&mut self.session, &args, &mut out);
        String::from_utf8(out.to_vec()).expect("test replies are UTF-8")
    }

    /// Run a command written with spaces between the arguments.
    pub(crate) fn run(&mut self, line: &str) -> String {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&args)
    }
}

pub(crate) fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}
