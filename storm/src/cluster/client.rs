//! One storm worker's connection to a Redis Cluster: a RESP connection per
//! primary, each batch split by slot owner and pipelined per node, `MOVED`
//! (patch the slot map, read it again, resend) and `ASK` (`ASKING` and the
//! command on the node named, once) followed; SCAN as the union of one SCAN
//! per primary; the restore as one compare-and-set per slot on its primary
//! (a transaction in a cluster must stay in one slot).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use super::slots::{self, SlotMap, slot_of};
use super::{NodeCounters, Shared};
use crate::client::{ClientError, MapClient, Request, RespClient, Response, decode};
use crate::restore::{Applied, RestoreItem};

/// Redirects one request may follow before it counts as failed.
const MAX_REDIRECTS: usize = 5;
/// Bits of a storm SCAN cursor that carry the node's own cursor; the bits
/// above carry the index of the primary being scanned.
const NODE_CURSOR_BITS: u32 = 56;
const NODE_CURSOR_MASK: u64 = (1 << NODE_CURSOR_BITS) - 1;

/// A redirect parsed from an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// `MOVED slot host:port`: the slot lives there now.
    Moved { slot: u16, node: String },
    /// `ASK slot host:port`: this once, ask there (after `ASKING`).
    Ask { node: String },
}

/// The redirect an error reply asks for, if it is one.
pub(crate) fn redirect(error: &redis::ServerError) -> Option<Redirect> {
    let code = error.code();
    if code != "MOVED" && code != "ASK" {
        return None;
    }
    let mut parts = error.details()?.split_ascii_whitespace();
    let slot: u16 = parts.next()?.parse().ok()?;
    let node = parts.next()?;
    if usize::from(slot) >= slots::SLOTS || !node.contains(':') {
        return None;
    }
    // `MOVED 3999 :6380` (an unknown endpoint) means the node that replied.
    let node = node.to_owned();
    Some(if code == "MOVED" {
        Redirect::Moved { slot, node }
    } else {
        Redirect::Ask { node }
    })
}

/// Where one request goes this round.
#[derive(Clone)]
enum Route {
    /// To its slot's primary by the slot map.
    Slot,
    /// To this node, after `ASKING`.
    Ask(String),
}

/// The state of one storm SCAN over every primary.
struct ScanState {
    nodes: Vec<String>,
    /// Each primary's own slots (`CLUSTER NODES`) when the SCAN started.
    settled: Option<Vec<String>>,
}

pub(crate) struct ClusterClient {
    shared: Arc<Shared>,
    version: u64,
    map: Arc<SlotMap>,
    nodes: HashMap<String, RespClient>,
    counts: BTreeMap<String, NodeCounters>,
    scan: Option<ScanState>,
}

impl ClusterClient {
    pub(crate) fn new(shared: Arc<Shared>) -> ClusterClient {
        let (version, map) = shared.map();
        ClusterClient {
            shared,
            version,
            map,
            nodes: HashMap::new(),
            counts: BTreeMap::new(),
            scan: None,
        }
    }

    /// Take a newer slot map another connection read.
    fn sync_map(&mut self) {
        let (version, map) = self.shared.map();
        if version != self.version {
            self.version = version;
            self.map = map;
        }
    }

    /// This worker's connection to `node`, opened on first use (registered
    /// with that node's write watch, when there is one).
    fn node(&mut self, node: &str) -> Result<&mut RespClient, ClientError> {
        if !self.nodes.contains_key(node) {
            let watch = self.shared.watches().and_then(|w| w.inner_for(node));
            let client = RespClient::connect_watched(
                &self.shared.node_url(node),
                self.shared.timeout(),
                watch,
            )
            .map_err(|e| ClientError::Connection(format!("Redis Cluster node {node}: {e}")))?;
            self.nodes.insert(node.to_owned(), client);
        }
        Ok(self.nodes.get_mut(node).expect("just inserted"))
    }

    fn counts(&mut self, node: &str) -> &mut NodeCounters {
        if !self.counts.contains_key(node) {
            self.counts.insert(node.to_owned(), NodeCounters::default());
        }
        self.counts.get_mut(node).expect("just inserted")
    }

    /// After a `MOVED`: patch this connection's map at once, and read the
    /// whole map again (not more often than the shared limit).
    fn moved(&mut self, slot: u16, node: &str) {
        if self.shared.due_for_read() {
            let shared = self.shared.clone();
            if let Ok(client) = self.node(node)
                && shared.read_map(client).is_ok()
            {
                self.sync_map();
            }
        }
        if self.map.node_for(slot) != Some(node) {
            Arc::make_mut(&mut self.map).moved(slot, node);
        }
    }

    fn flush_counts(&mut self) {
        self.shared.count(&self.counts);
        self.counts.clear();
    }

    /// Send `batch` (request indices with their routes) to `node` in one
    /// pipeline; answers go to `out`, redirected requests to `next`.
    fn send(
        &mut self,
        node: &str,
        batch: &[(usize, Route)],
        requests: &[Request<'_>],
        out: &mut [Option<Result<Response, ClientError>>],
        next: &mut Vec<(usize, Route)>,
    ) {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for (i, route) in batch {
            if let Route::Ask(_) = route {
                pipeline.cmd("ASKING");
            }
            match requests[*i] {
                Request::Get(key) => pipeline.cmd("GET").arg(key),
                Request::Set(key, value) => pipeline.cmd("SET").arg(key).arg(value),
                Request::Del(key) => pipeline.cmd("DEL").arg(key),
                Request::Exists(key) => pipeline.cmd("EXISTS").arg(key),
                Request::Pttl(key) => pipeline.cmd("PTTL").arg(key),
            };
        }
        let expected = batch.len()
            + batch
                .iter()
                .filter(|(_, r)| matches!(r, Route::Ask(_)))
                .count();
        let result = self.node(node).and_then(|client| {
            let connection = client.connection()?;
            pipeline
                .query::<Vec<Value>>(connection)
                .map_err(|e| ClientError::Connection(format!("Redis Cluster node {node}: {e}")))
        });
        let values = match result {
            Ok(values) if values.len() == expected => values,
            failed => {
                let error = match failed {
                    Err(error) => error,
                    Ok(values) => ClientError::Connection(format!(
                        "Redis Cluster node {node}: {} replies to {expected} pipelined requests",
                        values.len()
                    )),
                };
                if let Some(client) = self.nodes.get_mut(node) {
                    client.reset();
                }
                self.counts(node).errors += batch.len() as u64;
                for (i, _) in batch {
                    out[*i] = Some(Err(error.clone()));
                }
                return;
            }
        };
        let mut values = values.into_iter();
        for (i, route) in batch {
            if let Route::Ask(_) = route {
                // ASKING's own reply; an error there shows in the command's.
                values.next();
            }
            let value = values.next().expect("one reply per command");
            if let Value::ServerError(error) = &value
                && let Some(redirect) = redirect(error)
            {
                match redirect {
                    Redirect::Moved { slot, node: to } => {
                        self.counts(node).moved += 1;
                        let to = if to.starts_with(':') {
                            node_with_port(node, &to)
                        } else {
                            to
                        };
                        self.moved(slot, &to);
                        next.push((*i, Route::Slot));
                    }
                    Redirect::Ask { node: to } => {
                        self.counts(node).ask += 1;
                        let to = if to.starts_with(':') {
                            node_with_port(node, &to)
                        } else {
                            to
                        };
                        next.push((*i, Route::Ask(to)));
                    }
                }
                continue;
            }
            let decoded = decode(&requests[*i], value);
            let counts = self.counts(node);
            counts.ops += 1;
            if decoded.is_err() {
                counts.errors += 1;
            }
            out[*i] = Some(decoded);
        }
    }

    /// Each primary's own slots and migrations, in `nodes` order.
    fn own_slots(&mut self, nodes: &[String]) -> Result<Vec<String>, ClientError> {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let client = self.node(node)?;
            let connection = client.connection()?;
            let text: String = match redis::cmd("CLUSTER").arg("NODES").query(connection) {
                Ok(text) => text,
                Err(e) => {
                    client.reset();
                    return Err(ClientError::Connection(format!(
                        "Redis Cluster node {node}: CLUSTER NODES: {e}"
                    )));
                }
            };
            out.push(
                slots::own_slots(&text).ok_or_else(|| ClientError::UnexpectedReply {
                    command: "CLUSTER NODES",
                    reply: format!("no myself line from {node}"),
                })?,
            );
        }
        Ok(out)
    }
}

/// `host:port` for a redirect naming only `:port`: the replying node's host.
fn node_with_port(replying: &str, port: &str) -> String {
    let host = replying.rsplit_once(':').map_or(replying, |(h, _)| h);
    format!("{host}{port}")
}

impl MapClient for ClusterClient {
    fn execute(
        &mut self,
        requests: &[Request<'_>],
        responses: &mut Vec<Result<Response, ClientError>>,
    ) {
        self.sync_map();
        let mut out: Vec<Option<Result<Response, ClientError>>> = vec![None; requests.len()];
        let mut pending: Vec<(usize, Route)> =
            (0..requests.len()).map(|i| (i, Route::Slot)).collect();
        for _ in 0..=MAX_REDIRECTS {
            if pending.is_empty() {
                break;
            }
            // Per node, in the order the requests came: one pipeline each.
            let mut by_node: BTreeMap<String, Vec<(usize, Route)>> = BTreeMap::new();
            for (i, route) in pending.drain(..) {
                let node = match &route {
                    Route::Ask(node) => Some(node.clone()),
                    Route::Slot => self
                        .map
                        .node_for(slot_of(request_key(&requests[i])))
                        .map(str::to_owned),
                };
                match node {
                    Some(node) => by_node.entry(node).or_default().push((i, route)),
                    None => {
                        out[i] = Some(Err(ClientError::Server(format!(
                            "CLUSTERDOWN: slot {} is served by no primary",
                            slot_of(request_key(&requests[i]))
                        ))));
                    }
                }
            }
            let mut next = Vec::new();
            for (node, batch) in by_node {
                self.send(&node, &batch, requests, &mut out, &mut next);
            }
            pending = next;
        }
        for (i, _) in pending {
            out[i] = Some(Err(ClientError::Server(format!(
                "more than {MAX_REDIRECTS} MOVED/ASK redirects for one command"
            ))));
        }
        self.flush_counts();
        responses.extend(
            out.into_iter()
                .map(|r| r.unwrap_or_else(|| Err(ClientError::Connection("no reply".into())))),
        );
    }

    /// One page of the union of per-primary SCANs: the cursor's top byte is
    /// the primary, the rest that primary's cursor. A SCAN during which any
    /// primary's slots changed, or a slot was migrating, ends in an error:
    /// a key moving from a primary not yet scanned to one already scanned
    /// would be missed, so the union promises nothing then.
    fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), ClientError> {
        if cursor == 0 {
            self.sync_map();
            let nodes = self.map.primaries().to_vec();
            if nodes.len() > 255 {
                return Err(ClientError::Server(format!(
                    "a SCAN covers at most 255 primaries; this cluster has {}",
                    nodes.len()
                )));
            }
            let settled = self.own_slots(&nodes)?;
            self.scan = Some(ScanState {
                nodes,
                settled: Some(settled),
            });
        }
        let index = (cursor >> NODE_CURSOR_BITS) as usize;
        let own_cursor = cursor & NODE_CURSOR_MASK;
        let node = match &self.scan {
            Some(state) if index < state.nodes.len() => state.nodes[index].clone(),
            _ => {
                return Err(ClientError::Server(format!(
                    "SCAN cursor {cursor} belongs to no SCAN of this connection"
                )));
            }
        };
        let page = self
            .node(&node)
            .and_then(|client| client.scan_page(own_cursor, pattern, count));
        self.counts(&node).scan_pages += 1;
        let (next, keys) = match page {
            Ok(page) => page,
            Err(error) => {
                self.counts(&node).errors += 1;
                self.flush_counts();
                return Err(error);
            }
        };
        self.flush_counts();
        if next > NODE_CURSOR_MASK {
            return Err(ClientError::Server(format!(
                "Redis Cluster node {node} answered SCAN cursor {next}, beyond the {NODE_CURSOR_BITS} bits a cluster SCAN cursor carries"
            )));
        }
        if next != 0 {
            return Ok(((index as u64) << NODE_CURSOR_BITS | next, keys));
        }
        let state = self.scan.as_ref().expect("checked above");
        if index + 1 < state.nodes.len() {
            return Ok((((index + 1) as u64) << NODE_CURSOR_BITS, keys));
        }
        // The last primary is done: were the slots the same all along?
        let state = self.scan.take().expect("checked above");
        let now = self.own_slots(&state.nodes)?;
        let before = state.settled.unwrap_or_default();
        if before != now || now.iter().chain(&before).any(|s| slots::migrating(s)) {
            self.shared.scan_unsettled();
            return Err(ClientError::Server(
                "slots moved between the primaries during this SCAN: its union promises nothing"
                    .into(),
            ));
        }
        Ok((0, keys))
    }

    fn restore(
        &mut self,
        items: &[RestoreItem<'_>],
        applied: &mut Vec<Result<Applied, ClientError>>,
    ) {
        // The restore runs after the workers stopped: read the map first, so
        // no WATCH is sent to a node that no longer holds its slot.
        let shared = self.shared.clone();
        if let Some(node) = self.map.primaries().first().cloned()
            && let Ok(client) = self.node(&node)
            && shared.read_map(client).is_ok()
        {
            self.sync_map();
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_slot.entry(slot_of(item.key)).or_default().push(i);
        }
        let mut out: Vec<Option<Result<Applied, ClientError>>> = vec![None; items.len()];
        for (slot, indices) in by_slot {
            let group: Vec<RestoreItem<'_>> = indices.iter().map(|&i| items[i]).collect();
            let mut done = Vec::with_capacity(group.len());
            match self.map.node_for(slot).map(str::to_owned) {
                Some(node) => match self.node(&node) {
                    Ok(client) => {
                        crate::resp_restore::restore(client, &group, &mut done);
                        let counts = self.counts(&node);
                        counts.ops += group.len() as u64;
                        counts.errors += done.iter().filter(|r| r.is_err()).count() as u64;
                    }
                    Err(error) => done.extend(group.iter().map(|_| Err(error.clone()))),
                },
                None => done.extend(group.iter().map(|_| {
                    Err(ClientError::Server(format!(
                        "CLUSTERDOWN: slot {slot} is served by no primary"
                    )))
                })),
            }
            for (i, result) in indices.into_iter().zip(done) {
                out[i] = Some(result);
            }
        }
        self.flush_counts();
        applied.extend(
            out.into_iter()
                .map(|r| r.unwrap_or_else(|| Err(ClientError::Connection("no reply".into())))),
        );
    }

    fn restore_guarantee(&self) -> &'static str {
        match self.nodes.values().next() {
            Some(client) if client.transactions == Some(false) => {
                crate::resp_restore::guarantee(client)
            }
            _ => {
                "WATCH/MULTI/EXEC per slot on its primary: a write by another client after the storm's last write is never overwritten"
            }
        }
    }

    fn unwatched(&self) -> bool {
        self.shared.watches().is_none()
    }
}

/// The one key of a request.
fn request_key<'a>(request: &Request<'a>) -> &'a [u8] {
    match *request {
        Request::Get(key)
        | Request::Set(key, _)
        | Request::Del(key)
        | Request::Exists(key)
        | Request::Pttl(key) => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> redis::ServerError {
        let parsed = redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap();
        match parsed {
            Value::ServerError(e) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn moved_and_ask_replies_name_the_slot_and_node() {
        assert_eq!(
            redirect(&error("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect::Moved {
                slot: 3999,
                node: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            redirect(&error("ASK 3999 10.0.0.7:7000")),
            Some(Redirect::Ask {
                node: "10.0.0.7:7000".into()
            })
        );
        assert_eq!(
            redirect(&error("MOVED 12 :7005")),
            Some(Redirect::Moved {
                slot: 12,
                node: ":7005".into()
            })
        );
        assert_eq!(node_with_port("10.0.0.1:7000", ":7005"), "10.0.0.1:7005");
    }

    #[test]
    fn other_errors_and_malformed_redirects_are_not_followed() {
        assert_eq!(redirect(&error("ERR unknown command")), None);
        assert_eq!(redirect(&error("CLUSTERDOWN The cluster is down")), None);
        assert_eq!(redirect(&error("TRYAGAIN Multiple keys request")), None);
        assert_eq!(
            redirect(&error("MOVED 16384 127.0.0.1:1")),
            None,
            "slot out of range"
        );
        assert_eq!(redirect(&error("MOVED abc 127.0.0.1:1")), None);
        assert_eq!(redirect(&error("ASK 1")), None, "no node");
        assert_eq!(redirect(&error("MOVED 1 nohostport")), None);
    }
}
