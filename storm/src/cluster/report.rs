//! What a storm of a Redis Cluster did on each node: the per-node counts a
//! user reads to see that every primary was stormed, and the redirects the
//! client followed.

use serde::Serialize;

/// A Redis Cluster target, node by node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// Every primary the storm reached, in the slot map's order.
    pub nodes: Vec<NodeReport>,
    /// `MOVED` replies followed: the command was sent again to the node
    /// named, and the slot map was read again.
    pub moved: u64,
    /// `ASK` replies followed: `ASKING` and the command, once, on the node
    /// named (a slot in migration).
    pub ask: u64,
    /// Times the slot map was read (`CLUSTER SHARDS`/`CLUSTER SLOTS`).
    pub slot_map_reads: u64,
    /// Full SCANs during which a slot moved or was migrating: a union of
    /// per-node SCANs then promises nothing, so they were recorded with no
    /// outcome (and counted as errors).
    pub scans_unsettled: u64,
}

/// One primary of a Redis Cluster target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// `host:port`.
    pub node: String,
    /// Slots it served when the storm ended.
    pub slots: u64,
    /// Stormed keys whose slot it served when the storm ended.
    pub keys: u64,
    /// Storm commands it answered (preparation and restore included).
    pub ops: u64,
    /// Commands sent to it that got an error reply or no reply.
    pub errors: u64,
    /// `MOVED` replies it sent.
    pub moved: u64,
    /// `ASK` replies it sent.
    pub ask: u64,
    /// SCAN pages it answered.
    pub scan_pages: u64,
    /// Race exposures on the keys it served (the checker's count, by key),
    /// when the history was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposures: Option<u64>,
}

/// The nodes as a table, for the text report.
pub fn render(report: &ClusterReport) -> String {
    let mut out = format!(
        "Redis Cluster: {} primaries; redirects followed: {} MOVED, {} ASK; slot map reads: {}",
        report.nodes.len(),
        report.moved,
        report.ask,
        report.slot_map_reads
    );
    if report.scans_unsettled > 0 {
        out.push_str(&format!(
            "; {} SCANs ran while slots moved (no outcome)",
            report.scans_unsettled
        ));
    }
    out.push('\n');
    let width = report
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "  {:<width$} {:>6} {:>8} {:>10} {:>7} {:>6} {:>6} {:>10} {:>10}\n",
        "node", "slots", "keys", "ops", "errors", "moved", "ask", "scan pages", "exposures"
    ));
    for node in &report.nodes {
        let exposures = node
            .exposures
            .map_or_else(|| "-".to_owned(), |e| e.to_string());
        out.push_str(&format!(
            "  {:<width$} {:>6} {:>8} {:>10} {:>7} {:>6} {:>6} {:>10} {:>10}\n",
            node.node,
            node.slots,
            node.keys,
            node.ops,
            node.errors,
            node.moved,
            node.ask,
            node.scan_pages,
            exposures
        ));
    }
    out
}
