//! A Redis Cluster's slot map: which primary serves each of the 16384 hash
//! slots, read from `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS` (older
//! servers), patched by `MOVED` replies, and the hash slot of a key (CRC16
//! XMODEM of its hash tag, as the cluster specification defines it).

use redis::Value;

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// No primary serves the slot.
const UNSERVED: u16 = u16::MAX;

/// The hash slot of `key`: CRC16 of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % SLOTS as u16
}

/// The hash tag of `key`, when it has one: keys sharing it share a slot.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// Which primary serves each slot. Primaries are `host:port` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// An index into `primaries` per slot, or [`UNSERVED`].
    owner: Vec<u16>,
    primaries: Vec<String>,
}

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            owner: vec![UNSERVED; SLOTS],
            primaries: Vec::new(),
        }
    }

    /// The primaries, in the order the server listed them.
    pub fn primaries(&self) -> &[String] {
        &self.primaries
    }

    /// The primary serving `slot`, if any.
    pub fn node_for(&self, slot: u16) -> Option<&str> {
        match self.owner.get(usize::from(slot)) {
            Some(&i) if i != UNSERVED => Some(&self.primaries[usize::from(i)]),
            _ => None,
        }
    }

    /// How many slots `node` serves.
    pub fn slots_of(&self, node: &str) -> u64 {
        let Some(i) = self.primaries.iter().position(|p| p == node) else {
            return 0;
        };
        self.owner.iter().filter(|&&o| usize::from(o) == i).count() as u64
    }

    /// `start-end` ranges `node` serves, for messages.
    pub fn ranges_of(&self, node: &str) -> String {
        let Some(i) = self.primaries.iter().position(|p| p == node) else {
            return "no slots".into();
        };
        let mut ranges = Vec::new();
        let mut start = None;
        for slot in 0..=SLOTS {
            let mine = slot < SLOTS && usize::from(self.owner[slot]) == i;
            match (mine, start) {
                (true, None) => start = Some(slot),
                (false, Some(s)) => {
                    ranges.push(if s == slot - 1 {
                        s.to_string()
                    } else {
                        format!("{s}-{}", slot - 1)
                    });
                    start = None;
                }
                _ => {}
            }
        }
        if ranges.is_empty() {
            "no slots".into()
        } else {
            format!("slots {}", ranges.join(","))
        }
    }

    /// After `MOVED slot node`: `node` serves `slot` now.
    pub fn moved(&mut self, slot: u16, node: &str) {
        let i = match self.primaries.iter().position(|p| p == node) {
            Some(i) => i,
            None => {
                self.primaries.push(node.to_owned());
                self.primaries.len() - 1
            }
        };
        if let Some(owner) = self.owner.get_mut(usize::from(slot)) {
            *owner = i as u16;
        }
    }

    fn assign(&mut self, start: i64, end: i64, node: String) -> Result<(), String> {
        if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
            return Err(format!(
                "slot range {start}-{end} is outside 0-{}",
                SLOTS - 1
            ));
        }
        let i = match self.primaries.iter().position(|p| *p == node) {
            Some(i) => i,
            None => {
                if self.primaries.len() >= usize::from(UNSERVED) {
                    return Err("more primaries than slots".into());
                }
                self.primaries.push(node);
                self.primaries.len() - 1
            }
        };
        for slot in start..=end {
            self.owner[slot as usize] = i as u16;
        }
        Ok(())
    }

    /// From a `CLUSTER SHARDS` reply (RESP2 flat maps or RESP3 maps). A
    /// node's address is its `endpoint` (its `ip` when that is `?` or empty,
    /// `seed_host` when both are); the port is `tls-port` when `tls`.
    pub fn from_shards(reply: &Value, seed_host: &str, tls: bool) -> Result<SlotMap, String> {
        let Value::Array(shards) = reply else {
            return Err(format!("CLUSTER SHARDS: not an array: {reply:?}"));
        };
        let mut map = SlotMap::empty();
        for shard in shards {
            let shard = fields(shard).ok_or("CLUSTER SHARDS: a shard is not a map")?;
            let slots = field(&shard, "slots")
                .and_then(integers)
                .ok_or("CLUSTER SHARDS: a shard has no slots list")?;
            let nodes = match field(&shard, "nodes") {
                Some(Value::Array(nodes)) => nodes,
                _ => return Err("CLUSTER SHARDS: a shard has no nodes list".into()),
            };
            let primary = nodes
                .iter()
                .filter_map(fields)
                .find(|node| field(node, "role").and_then(text).as_deref() == Some("master"));
            let Some(primary) = primary else {
                if slots.is_empty() {
                    continue;
                }
                return Err("CLUSTER SHARDS: a shard serving slots has no primary".into());
            };
            if slots.is_empty() {
                continue;
            }
            let host = ["endpoint", "ip"]
                .iter()
                .filter_map(|name| field(&primary, name).and_then(text))
                .find(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| seed_host.to_owned());
            let port_field = if tls { "tls-port" } else { "port" };
            let port = field(&primary, port_field)
                .and_then(integer)
                .ok_or_else(|| format!("CLUSTER SHARDS: a primary has no {port_field}"))?;
            let node = address(&host, port);
            if slots.len() % 2 != 0 {
                return Err("CLUSTER SHARDS: slots is not a list of ranges".into());
            }
            for range in slots.chunks(2) {
                map.assign(range[0], range[1], node.clone())?;
            }
        }
        map.check()?;
        Ok(map)
    }

    /// From a `CLUSTER SLOTS` reply: `[start, end, [host, port, id…], replicas…]`
    /// per range; an empty host is the node asked (`seed_host`).
    pub fn from_slots(reply: &Value, seed_host: &str) -> Result<SlotMap, String> {
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS: not an array: {reply:?}"));
        };
        let mut map = SlotMap::empty();
        for range in ranges {
            let Value::Array(parts) = range else {
                return Err("CLUSTER SLOTS: a range is not an array".into());
            };
            let (Some(start), Some(end), Some(Value::Array(primary))) = (
                parts.first().and_then(integer),
                parts.get(1).and_then(integer),
                parts.get(2),
            ) else {
                return Err(format!("CLUSTER SLOTS: a malformed range: {range:?}"));
            };
            let host = primary.first().and_then(text).unwrap_or_default();
            let host = if host.is_empty() || host == "?" {
                seed_host.to_owned()
            } else {
                host
            };
            let port = primary
                .get(1)
                .and_then(integer)
                .ok_or("CLUSTER SLOTS: a primary has no port")?;
            map.assign(start, end, address(&host, port))?;
        }
        map.check()?;
        Ok(map)
    }

    fn check(&self) -> Result<(), String> {
        if self.primaries.is_empty() {
            return Err("no slot is assigned to any primary".into());
        }
        Ok(())
    }
}

/// `host:port`, brackets around an IPv6 host.
pub fn address(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The fields of a RESP3 map or a RESP2 flat `[name, value, …]` array.
fn fields(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(k, v)| text(k).map(|k| (k, v)))
                .collect(),
        ),
        Value::Array(items) if items.len() % 2 == 0 => Some(
            items
                .chunks(2)
                .filter_map(|pair| text(&pair[0]).map(|k| (k, &pair[1])))
                .collect(),
        ),
        _ => None,
    }
}

fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn integers(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Array(items) => items.iter().map(integer).collect(),
        _ => None,
    }
}

/// What `CLUSTER NODES` says of the node answering it (its `myself` line):
/// the slots it serves and any slot it is migrating or importing, which is
/// what a SCAN of it depends on.
pub fn own_slots(nodes: &str) -> Option<String> {
    let line = nodes.lines().find(|line| {
        line.split_ascii_whitespace()
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    Some(
        line.split_ascii_whitespace()
            .skip(8)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Whether an [`own_slots`] text names a slot in migration (`[slot->-id]`
/// or `[slot-<-id]`).
pub fn migrating(own: &str) -> bool {
    own.contains("->-") || own.contains("-<-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(ip: &str, endpoint: &str, port: i64, role: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("0123"),
            bulk("port"),
            Value::Int(port),
            bulk("tls-port"),
            Value::Int(port + 1000),
            bulk("ip"),
            bulk(ip),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk("online"),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn shards_give_each_slot_its_primary_never_a_replica() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460, 16000, 16383],
                vec![
                    node("10.0.0.2", "10.0.0.2", 7001, "replica"),
                    node("10.0.0.1", "10.0.0.1", 7000, "master"),
                ],
            ),
            shard(
                &[5461, 15999],
                vec![node("10.0.0.3", "redis-b.example", 7002, "master")],
            ),
        ]);
        let map = SlotMap::from_shards(&reply, "seed", false).unwrap();
        assert_eq!(map.primaries(), ["10.0.0.1:7000", "redis-b.example:7002"]);
        assert_eq!(map.node_for(0), Some("10.0.0.1:7000"));
        assert_eq!(map.node_for(5460), Some("10.0.0.1:7000"));
        assert_eq!(map.node_for(5461), Some("redis-b.example:7002"));
        assert_eq!(map.node_for(15999), Some("redis-b.example:7002"));
        assert_eq!(map.node_for(16383), Some("10.0.0.1:7000"));
        assert_eq!(map.slots_of("10.0.0.1:7000"), 5461 + 384);
        assert_eq!(map.ranges_of("10.0.0.1:7000"), "slots 0-5460,16000-16383");
        let tls = SlotMap::from_shards(&reply, "seed", true).unwrap();
        assert_eq!(tls.node_for(0), Some("10.0.0.1:8000"));
    }

    #[test]
    fn shards_fall_back_to_the_ip_then_the_seed_host() {
        let reply = Value::Array(vec![
            shard(&[0, 99], vec![node("10.0.0.9", "?", 7000, "master")]),
            shard(&[100, 199], vec![node("", "", 7001, "master")]),
        ]);
        let map = SlotMap::from_shards(&reply, "seed.local", false).unwrap();
        assert_eq!(map.node_for(50), Some("10.0.0.9:7000"));
        assert_eq!(map.node_for(150), Some("seed.local:7001"));
        assert_eq!(map.node_for(200), None, "an unassigned slot has no node");
    }

    #[test]
    fn resp3_maps_parse_like_flat_arrays() {
        let node = Value::Map(vec![
            (bulk("port"), Value::Int(6379)),
            (bulk("ip"), bulk("::1")),
            (bulk("endpoint"), bulk("::1")),
            (bulk("role"), bulk("master")),
        ]);
        let shard = Value::Map(vec![
            (
                bulk("slots"),
                Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            ),
            (bulk("nodes"), Value::Array(vec![node])),
        ]);
        let map = SlotMap::from_shards(&Value::Array(vec![shard]), "x", false).unwrap();
        assert_eq!(map.node_for(12345), Some("[::1]:6379"));
    }

    #[test]
    fn malformed_shards_are_refused_with_the_reason() {
        let out_of_range =
            Value::Array(vec![shard(&[0, 16384], vec![node("a", "a", 1, "master")])]);
        let error = SlotMap::from_shards(&out_of_range, "x", false).unwrap_err();
        assert!(error.contains("0-16383"), "{error}");
        let odd = Value::Array(vec![shard(&[0], vec![node("a", "a", 1, "master")])]);
        assert!(SlotMap::from_shards(&odd, "x", false).is_err());
        let no_primary = Value::Array(vec![shard(&[0, 5], vec![node("a", "a", 1, "replica")])]);
        let error = SlotMap::from_shards(&no_primary, "x", false).unwrap_err();
        assert!(error.contains("no primary"), "{error}");
        assert!(SlotMap::from_shards(&Value::Array(vec![]), "x", false).is_err());
        assert!(SlotMap::from_shards(&Value::Nil, "x", false).is_err());
    }

    #[test]
    fn cluster_slots_parse_with_the_asked_node_for_an_empty_host() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                Value::Array(vec![bulk("10.1.1.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("10.1.1.2"), Value::Int(7001), bulk("id2")]),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7002), bulk("id3")]),
            ]),
        ]);
        let map = SlotMap::from_slots(&reply, "seed").unwrap();
        assert_eq!(map.node_for(8191), Some("10.1.1.1:7000"));
        assert_eq!(map.node_for(8192), Some("seed:7002"));
        assert_eq!(map.primaries().len(), 2, "replicas are not primaries");
        let bad = Value::Array(vec![Value::Array(vec![Value::Int(0)])]);
        assert!(SlotMap::from_slots(&bad, "seed").is_err());
    }

    #[test]
    fn moved_moves_one_slot_and_learns_new_nodes() {
        let reply = Value::Array(vec![shard(&[0, 16383], vec![node("a", "a", 1, "master")])]);
        let mut map = SlotMap::from_shards(&reply, "x", false).unwrap();
        map.moved(42, "b:2");
        assert_eq!(map.node_for(42), Some("b:2"));
        assert_eq!(map.node_for(41), Some("a:1"));
        assert_eq!(map.slots_of("a:1"), 16383);
        assert_eq!(map.slots_of("b:2"), 1);
        assert_eq!(map.ranges_of("b:2"), "slots 42");
    }

    #[test]
    fn slots_follow_the_spec_with_hash_tags() {
        // Values from the Redis Cluster specification and redis-cli.
        assert_eq!(slot_of(b"123456789"), 12739);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"{user1000}.followers"), slot_of(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(hash_tag(b"{user1000}.following"), Some(&b"user1000"[..]));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"plain"), None);
    }

    #[test]
    fn storm_keys_spread_over_many_slots() {
        let spec = mapchaos_api::spec::KeySpec::default();
        assert_eq!(hash_tag(spec.prefix.as_bytes()), None);
        let slots: std::collections::HashSet<u16> = (0..1000)
            .map(|i| slot_of(&crate::workload::synthetic_key(&spec.prefix, i)))
            .collect();
        assert!(
            slots.len() > 900,
            "1000 keys hit only {} slots",
            slots.len()
        );
    }

    #[test]
    fn own_slots_read_the_myself_line_and_its_migrations() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 master - 0 1426238317239 4 connected 5461-10922
67ed 127.0.0.1:30002@40002 myself,master - 0 0 2 connected 0-5460 [5461->-07c3]
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
";
        let own = own_slots(nodes).unwrap();
        assert_eq!(own, "0-5460 [5461->-07c3]");
        assert!(migrating(&own));
        let settled = own_slots("67ed 1.2.3.4:1@2 myself,master - 0 0 2 connected 0-16383\n");
        assert_eq!(settled.as_deref(), Some("0-16383"));
        assert!(!migrating("0-16383"));
        assert!(migrating("0-10 [11-<-abcd]"));
        assert_eq!(own_slots("07c3 a:1@2 master - 0 0 4 connected 1-2\n"), None);
    }
}
