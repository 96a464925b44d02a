//! The application's writes to a Redis Cluster, for a restore that must not
//! revert them: one `MONITOR` feed per primary (a write lands on its slot's
//! primary, so each feed sees that node's share), the storm's connections to
//! a node registered with that node's feed. A cut is a mark through every
//! feed; the watch is lost when any feed is.

use std::sync::Arc;

use super::Shared;
use crate::app_traffic::{AppTap, AppTraffic};
use crate::monitor::{WatchError, WatchInner, WriteWatch};

/// Each primary's feed, by `host:port`, for the storm's connections.
pub(crate) struct NodeWatches {
    by_node: Vec<(String, Arc<WatchInner>)>,
}

impl NodeWatches {
    pub(crate) fn inner_for(&self, node: &str) -> Option<Arc<WatchInner>> {
        self.by_node
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, w)| w.clone())
    }
}

/// A write watch over every primary of a cluster.
pub struct ClusterWatch {
    watches: Vec<(String, WriteWatch)>,
    nodes: Arc<NodeWatches>,
}

impl ClusterWatch {
    pub(crate) fn open(shared: &Shared) -> Result<ClusterWatch, WatchError> {
        let mut watches = Vec::new();
        for node in shared.map().1.primaries() {
            let watch = WriteWatch::open(&shared.node_url(node), shared.timeout())
                .map_err(|e| WatchError(format!("Redis Cluster node {node}: {}", e.0)))?;
            watches.push((node.clone(), watch));
        }
        let nodes = Arc::new(NodeWatches {
            by_node: watches
                .iter()
                .map(|(n, w)| (n.clone(), w.inner().clone()))
                .collect(),
        });
        Ok(ClusterWatch { watches, nodes })
    }

    pub(crate) fn nodes(&self) -> Arc<NodeWatches> {
        self.nodes.clone()
    }

    /// Application lines that wrote a stormed key so far, over all primaries.
    pub fn app_writes_seen(&self) -> u64 {
        self.watches.iter().map(|(_, w)| w.app_writes_seen()).sum()
    }
}

/// Cut every feed in turn, then run `f`.
fn quiesce_all(watches: &[(String, WriteWatch)], f: &mut dyn FnMut()) {
    match watches.split_first() {
        None => f(),
        Some(((_, first), rest)) => first.quiesce(&mut || quiesce_all(rest, f)),
    }
}

impl AppTap for ClusterWatch {
    fn attach(&self, traffic: Arc<AppTraffic>) {
        for (_, watch) in &self.watches {
            watch.attach(traffic.clone());
        }
    }

    fn detach(&self) {
        for (_, watch) in &self.watches {
            watch.detach();
        }
    }

    fn quiesce(&self, f: &mut dyn FnMut()) {
        quiesce_all(&self.watches, f);
    }

    fn lost(&self) -> Option<String> {
        self.watches
            .iter()
            .find_map(|(node, w)| w.lost().map(|lost| format!("on {node}: {lost}")))
    }

    fn times_commands(&self) -> bool {
        false
    }

    fn restore_guarantee(&self) -> &'static str {
        "MONITOR on every primary: every application write to the stormed keys seen; each batch decided at a mark in every feed, then per slot WATCHed, read and written in MULTI/EXEC on its primary, a key the application wrote since left as it is"
    }
}
