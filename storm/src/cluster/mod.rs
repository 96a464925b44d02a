//! Redis Cluster targets: detected from the seed node (`INFO cluster`), the
//! slot map read from it, every key routed to its slot's primary, `MOVED`
//! and `ASK` followed, SCAN run on every primary, the restore and the write
//! watch run per primary. Each node is reached with the seed URL's scheme,
//! credentials and options, at the address the cluster gives for it.

mod client;
pub mod report;
pub mod slots;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mapchaos_api::storm::MemorySnapshot;

use crate::app_traffic::AppTap;
use crate::client::{ClientError, MapClient, RespClient};
use crate::history::History;
use crate::monitor::WatchError;
use report::{ClusterReport, NodeReport};
use slots::SlotMap;
pub use watch::ClusterWatch;

/// The slot map is read again at most this often after `MOVED` replies
/// (each connection patches its own copy in between).
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// A Redis Cluster, stormed through all its primaries.
pub struct ClusterTarget {
    shared: Arc<Shared>,
    watch: Option<ClusterWatch>,
}

/// What every connection of a cluster storm shares.
pub(crate) struct Shared {
    seed_url: String,
    seed_host: String,
    tls: bool,
    timeout: Duration,
    /// The slot map and its version (bumped on every read).
    map: RwLock<(u64, Arc<SlotMap>)>,
    /// When the map was last read, to keep `MOVED` storms from re-reading it
    /// on every reply.
    last_read: Mutex<Instant>,
    counters: Mutex<BTreeMap<String, NodeCounters>>,
    moved: AtomicU64,
    ask: AtomicU64,
    map_reads: AtomicU64,
    scans_unsettled: AtomicU64,
    /// The write watch's per-node taps, once watching.
    watch: RwLock<Option<Arc<watch::NodeWatches>>>,
}

/// One node's counts, summed over connections.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeCounters {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) moved: u64,
    pub(crate) ask: u64,
    pub(crate) scan_pages: u64,
}

impl NodeCounters {
    fn add(&mut self, other: &NodeCounters) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.moved += other.moved;
        self.ask += other.ask;
        self.scan_pages += other.scan_pages;
    }
}

/// `seed`'s URL with `node` (`host:port`) for its host and port: the same
/// scheme, credentials, database and options.
pub(crate) fn node_url(seed: &str, node: &str) -> String {
    let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", seed));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{userinfo}{node}{tail}")
}

/// `url` without its userinfo, so no password reaches a report.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    format!("{scheme}://{host}{tail}")
}

impl Shared {
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn node_url(&self, node: &str) -> String {
        node_url(&self.seed_url, node)
    }

    pub(crate) fn map(&self) -> (u64, Arc<SlotMap>) {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        (map.0, map.1.clone())
    }

    /// Read the slot map again through `client` (any node's connection).
    pub(crate) fn read_map(&self, client: &mut RespClient) -> Result<(), ClientError> {
        let map = read_map(client, &self.seed_host, self.tls)?;
        self.map_reads.fetch_add(1, Ordering::Relaxed);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut current = self.map.write().unwrap_or_else(|e| e.into_inner());
        *current = (current.0 + 1, Arc::new(map));
        Ok(())
    }

    /// Whether enough time passed since the last read for another.
    pub(crate) fn due_for_read(&self) -> bool {
        self.last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= REFRESH_EVERY
    }

    pub(crate) fn count(&self, counts: &BTreeMap<String, NodeCounters>) {
        if counts.is_empty() {
            return;
        }
        let mut all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (node, c) in counts {
            self.moved.fetch_add(c.moved, Ordering::Relaxed);
            self.ask.fetch_add(c.ask, Ordering::Relaxed);
            all.entry(node.clone()).or_default().add(c);
        }
    }

    pub(crate) fn scan_unsettled(&self) {
        self.scans_unsettled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn watches(&self) -> Option<Arc<watch::NodeWatches>> {
        self.watch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The slot map from `CLUSTER SHARDS`, or `CLUSTER SLOTS` where the server
/// has no `SHARDS` (before Redis 7).
fn read_map(client: &mut RespClient, seed_host: &str, tls: bool) -> Result<SlotMap, ClientError> {
    let connection = client.connection()?;
    let shards: Result<redis::Value, _> = redis::cmd("CLUSTER").arg("SHARDS").query(connection);
    let shards_error = match shards {
        Ok(redis::Value::ServerError(e)) => e.to_string(),
        Ok(reply) => {
            return SlotMap::from_shards(&reply, seed_host, tls).map_err(|e| {
                ClientError::UnexpectedReply {
                    command: "CLUSTER SHARDS",
                    reply: e,
                }
            });
        }
        Err(e) if e.is_io_error() || e.is_timeout() => {
            client.reset();
            return Err(ClientError::Connection(e.to_string()));
        }
        Err(e) => e.to_string(),
    };
    let connection = client.connection()?;
    match redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query::<redis::Value>(connection)
    {
        Ok(reply) => {
            SlotMap::from_slots(&reply, seed_host).map_err(|e| ClientError::UnexpectedReply {
                command: "CLUSTER SLOTS",
                reply: format!("{e} (CLUSTER SHARDS: {shards_error})"),
            })
        }
        Err(e) => {
            client.reset();
            Err(ClientError::Server(format!(
                "cannot read the slot map: CLUSTER SHARDS: {shards_error}; CLUSTER SLOTS: {e}"
            )))
        }
    }
}

/// Whether the server behind `client` runs in cluster mode.
fn cluster_enabled(client: &mut RespClient) -> Result<bool, ClientError> {
    let connection = client.connection()?;
    match redis::cmd("INFO")
        .arg("cluster")
        .query::<String>(connection)
    {
        Ok(info) => Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1")),
        Err(e) if e.is_io_error() || e.is_timeout() => {
            client.reset();
            Err(ClientError::Connection(e.to_string()))
        }
        // No INFO, or no cluster section: not a cluster.
        Err(_) => Ok(false),
    }
}

impl ClusterTarget {
    /// Connect to the seed at `url`: `Ok(None)` when it is not in cluster
    /// mode; else read the slot map and check that every primary answers
    /// (an unreachable one is named, with its slots).
    pub fn detect(url: &str, timeout: Duration) -> Result<Option<ClusterTarget>, ClientError> {
        let mut seed = RespClient::connect(url, timeout)?;
        if !cluster_enabled(&mut seed)? {
            return Ok(None);
        }
        let (seed_host, tls) = match redis::Client::open(url)
            .map_err(|e| ClientError::Connection(format!("invalid target {url:?}: {e}")))?
            .get_connection_info()
            .addr()
        {
            redis::ConnectionAddr::Tcp(host, _) => (host.clone(), false),
            redis::ConnectionAddr::TcpTls { host, .. } => (host.clone(), true),
            other => {
                return Err(ClientError::Connection(format!(
                    "a Redis Cluster is reached over TCP, not {other:?}"
                )));
            }
        };
        let map = read_map(&mut seed, &seed_host, tls)?;
        let shared = Arc::new(Shared {
            seed_url: url.to_owned(),
            seed_host,
            tls,
            timeout,
            map: RwLock::new((1, Arc::new(map.clone()))),
            last_read: Mutex::new(Instant::now()),
            counters: Mutex::default(),
            moved: AtomicU64::new(0),
            ask: AtomicU64::new(0),
            map_reads: AtomicU64::new(1),
            scans_unsettled: AtomicU64::new(0),
            watch: RwLock::new(None),
        });
        for node in map.primaries() {
            RespClient::connect(&shared.node_url(node), timeout).map_err(|e| {
                ClientError::Connection(format!(
                    "Redis Cluster node {node} ({}) is unreachable: {e}",
                    map.ranges_of(node)
                ))
            })?;
        }
        Ok(Some(ClusterTarget {
            shared,
            watch: None,
        }))
    }

    /// The primaries, as the slot map lists them now.
    pub fn primaries(&self) -> Vec<String> {
        self.shared.map().1.primaries().to_vec()
    }

    /// Watch the application's writes (`MONITOR`) on every primary, so a
    /// restore never reverts one. Fails naming the node that refused.
    pub fn watch_app_writes(&mut self) -> Result<(), WatchError> {
        let watch = ClusterWatch::open(&self.shared)?;
        *self.shared.watch.write().unwrap_or_else(|e| e.into_inner()) = Some(watch.nodes());
        self.watch = Some(watch);
        Ok(())
    }

    /// The per-node report: `keys` are the storm's key table, `history` its
    /// history when recorded (for the exposures per node).
    pub fn report(&self, keys: &[Vec<u8>], history: Option<&History>) -> ClusterReport {
        // Read afresh: slots may have moved since any worker last asked.
        let map = self
            .primaries()
            .iter()
            .find_map(|node| {
                let mut client =
                    RespClient::connect(&self.shared.node_url(node), self.shared.timeout).ok()?;
                read_map(&mut client, &self.shared.seed_host, self.shared.tls).ok()
            })
            .map_or_else(|| self.shared.map().1, Arc::new);
        let counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let key_nodes: Vec<Option<&str>> = keys
            .iter()
            .map(|k| map.node_for(slots::slot_of(k)))
            .collect();
        let exposures = history.map(crate::series::exposures_by_key);
        let mut nodes: Vec<String> = map.primaries().to_vec();
        for node in counters.keys() {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
        let nodes = nodes
            .into_iter()
            .map(|node| {
                let c = counters.get(&node).copied().unwrap_or_default();
                let mine = |k: &usize| key_nodes[*k] == Some(node.as_str());
                NodeReport {
                    slots: map.slots_of(&node),
                    keys: (0..keys.len()).filter(mine).count() as u64,
                    ops: c.ops,
                    errors: c.errors,
                    moved: c.moved,
                    ask: c.ask,
                    scan_pages: c.scan_pages,
                    exposures: exposures.as_ref().map(|e| {
                        (0..keys.len().min(e.len()))
                            .filter(mine)
                            .map(|k| e[k])
                            .sum()
                    }),
                    node,
                }
            })
            .collect();
        ClusterReport {
            nodes,
            moved: self.shared.moved.load(Ordering::Relaxed),
            ask: self.shared.ask.load(Ordering::Relaxed),
            slot_map_reads: self.shared.map_reads.load(Ordering::Relaxed),
            scans_unsettled: self.shared.scans_unsettled.load(Ordering::Relaxed),
        }
    }
}

impl crate::runner::StormTarget for ClusterTarget {
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        Ok(Box::new(client::ClusterClient::new(self.shared.clone())))
    }

    fn app_tap(&self) -> Option<&dyn AppTap> {
        self.watch.as_ref().map(|w| w as &dyn AppTap)
    }

    /// Summed over the primaries (`DBSIZE`, `INFO memory`); a node that does
    /// not answer leaves the sums out.
    fn memory(&self) -> MemorySnapshot {
        let mut total = MemorySnapshot {
            live_bytes: Some(0),
            rss_bytes: Some(0),
            ..MemorySnapshot::default()
        };
        for node in self.primaries() {
            let Ok(one) =
                crate::client::RespTarget::new(&self.shared.node_url(&node), self.shared.timeout)
            else {
                return MemorySnapshot::default();
            };
            let one = crate::runner::StormTarget::memory(&one);
            total.keys += one.keys;
            total.live_bytes = total.live_bytes.zip(one.live_bytes).map(|(a, b)| a + b);
            total.rss_bytes = total.rss_bytes.zip(one.rss_bytes).map(|(a, b)| a + b);
        }
        total
    }

    fn describe(&self) -> String {
        format!(
            "{} (Redis Cluster, {} primaries)",
            without_credentials(&self.shared.seed_url),
            self.primaries().len()
        )
    }

    fn cluster(&self) -> Option<&ClusterTarget> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_keep_the_seeds_scheme_credentials_and_options() {
        assert_eq!(
            node_url("redis://127.0.0.1:7000", "10.0.0.2:7001"),
            "redis://10.0.0.2:7001"
        );
        assert_eq!(
            node_url("rediss://user:p%40ss@seed:6379/0?insecure", "[::1]:7002"),
            "rediss://user:p%40ss@[::1]:7002/0?insecure"
        );
        assert_eq!(
            node_url("redis://:secret@seed", "n:1"),
            "redis://:secret@n:1"
        );
    }

    #[test]
    fn the_description_carries_no_password() {
        assert_eq!(
            without_credentials("rediss://user:p%40ss@seed:6379/0?x=1"),
            "rediss://seed:6379/0?x=1"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:7000"),
            "redis://127.0.0.1:7000"
        );
    }
}
