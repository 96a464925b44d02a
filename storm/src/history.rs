//! The history of a storm: one event per completed or timed-out operation,
//! recorded per worker without locks, merged at the end, and stored as JSON
//! for `mapchaos check`.
//!
//! The file format is one JSON object:
//! `{"keys": [...], "start": ns, "truncated": bool, "events": [...]}`.
//! A key is a JSON string when its bytes are UTF-8 and `{"hex": "6b6579"}`
//! otherwise, so binary keys survive without base64. An event is
//! `{"client": 3, "call": ns, "ret": ns | null, "op": "get", "key": 0, "read": 17 | null}`
//! (`set` carries `value`, `del` carries `removed`, `exists` carries `present`,
//! `scan` carries `found`, the key ids it returned); `ret: null` is an
//! operation that errored or timed out.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A storm worker; every operation of one client is issued sequentially.
pub type ClientId = u32;

/// A key, as an index into the history's key table.
pub type KeyId = u32;

/// A value a SET wrote: unique in the history (client id + that client's
/// sequence number), so each read points at exactly one write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueId(pub u64);

impl ValueId {
    /// What a read records when the bytes it got are not a value any storm
    /// SET could have written (a phantom, unless a SET of it exists).
    pub const UNWRITTEN: ValueId = ValueId(u64::MAX);

    /// The `seq`-th value written by `client`.
    pub fn new(client: ClientId, seq: u32) -> ValueId {
        ValueId((u64::from(client) << 32) | u64::from(seq))
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == ValueId::UNWRITTEN {
            f.write_str("<a value no SET wrote>")
        } else {
            write!(f, "c{}#{}", self.0 >> 32, self.0 & u64::from(u32::MAX))
        }
    }
}

/// An operation and what it returned. For an event whose `ret` is
/// [`Event::NO_RETURN`] the output fields are meaningless and ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// GET: the value read, or `None` for nil.
    Get {
        /// The key read.
        key: KeyId,
        /// The value it returned; `None` is nil.
        read: Option<ValueId>,
    },
    /// SET of a value unique in the history.
    Set {
        /// The key written.
        key: KeyId,
        /// The value written.
        value: ValueId,
    },
    /// DEL of one key.
    Del {
        /// The key deleted.
        key: KeyId,
        /// Whether it returned 1 (removed something) rather than 0.
        removed: bool,
    },
    /// EXISTS of one key.
    Exists {
        /// The key asked about.
        key: KeyId,
        /// Whether it returned 1.
        present: bool,
    },
    /// One full SCAN iteration (first call to last return) over the storm's
    /// keyspace, which is every key of the history's key table.
    Scan {
        /// The key ids it returned, duplicates included.
        found: Box<[KeyId]>,
    },
}

/// A SCAN's result costs the record budget one operation per this many keys
/// it returned (on top of its own), so `check.maxOps` bounds the memory a
/// history holds whatever the mix.
pub const SCAN_KEYS_PER_OP: usize = 16;

impl Op {
    /// How much of the record budget recording this takes: one, and for a
    /// SCAN one more per [`SCAN_KEYS_PER_OP`] keys returned.
    pub fn record_weight(&self) -> usize {
        match self {
            Op::Scan { found } => 1 + found.len() / SCAN_KEYS_PER_OP,
            _ => 1,
        }
    }

    /// The key of a single-key operation; `None` for a SCAN.
    pub fn key(&self) -> Option<KeyId> {
        match *self {
            Op::Get { key, .. } | Op::Set { key, .. } | Op::Del { key, .. } => Some(key),
            Op::Exists { key, .. } => Some(key),
            Op::Scan { .. } => None,
        }
    }
}

/// One operation as one client saw it, on one monotonic clock (nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The worker that issued it.
    pub client: ClientId,
    /// When it was sent.
    pub call: u64,
    /// When its reply arrived, or [`Event::NO_RETURN`].
    #[serde(with = "ret_or_null")]
    pub ret: u64,
    /// What it was and what it returned.
    #[serde(flatten)]
    pub op: Op,
}

impl Event {
    /// The `ret` of an operation that errored or timed out: it may or may not
    /// have taken effect, at any instant after its call, and its output is
    /// unknown (Jepsen's `:info`).
    pub const NO_RETURN: u64 = u64::MAX;

    /// Whether the operation's effect and output are unknown.
    pub fn is_info(&self) -> bool {
        self.ret == Event::NO_RETURN
    }
}

mod ret_or_null {
    use super::{Deserialize, Deserializer, Event, Serializer};

    pub(super) fn serialize<S: Serializer>(ret: &u64, s: S) -> Result<S::Ok, S::Error> {
        if *ret == Event::NO_RETURN {
            s.serialize_none()
        } else {
            s.serialize_some(ret)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.unwrap_or(Event::NO_RETURN))
    }
}

/// The bound on how many operations a storm records (`check.maxOps`), shared
/// by its workers; a SCAN takes more of it the more keys it returned (see
/// [`Op::record_weight`]).
///
/// When it runs out, recording stops at a cut instant: every operation called
/// before the cut is kept (all workers still record those, so the bound may be
/// overshot by about one in-flight operation per worker), none called at or
/// after it, and kept operations still running at the cut become unknown
/// (`ret` = [`Event::NO_RETURN`]). Such a prefix is linearizable whenever the
/// whole storm was: operations after the cut can only have taken effect after
/// every kept completed operation returned.
#[derive(Debug)]
pub struct RecordBudget {
    remaining: AtomicUsize,
    cut: AtomicU64,
}

/// The most slots a recorder takes from the shared budget at a time, so the
/// shared counter is touched about once per this many operations. Near the
/// end it takes less (a 64th of what is left), so slots held idle by one
/// worker never starve the others into an early cut.
const RESERVE_CHUNK: usize = 256;

fn reservation(left: usize) -> usize {
    (left / 64).clamp(1, RESERVE_CHUNK).min(left)
}

impl RecordBudget {
    /// A budget of `max_ops` recorded operations.
    pub fn new(max_ops: usize) -> Arc<RecordBudget> {
        Arc::new(RecordBudget {
            remaining: AtomicUsize::new(max_ops),
            cut: AtomicU64::new(u64::MAX),
        })
    }

    /// The cut instant, once the budget has run out.
    pub fn cut(&self) -> Option<u64> {
        let cut = self.cut.load(Ordering::Acquire);
        (cut != u64::MAX).then_some(cut)
    }

    fn reserve(&self) -> usize {
        let before = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - reservation(left))
            });
        before.map_or(0, reservation)
    }
}

/// One worker's recording buffer: a plain `Vec` push per operation, no lock.
#[derive(Debug)]
pub struct Recorder {
    client: ClientId,
    budget: Arc<RecordBudget>,
    reserved: usize,
    stopped: bool,
    events: Vec<Event>,
}

impl Recorder {
    /// A recorder for `client`, drawing on the storm's shared `budget`.
    pub fn new(client: ClientId, budget: Arc<RecordBudget>) -> Recorder {
        Recorder {
            client,
            budget,
            reserved: 0,
            stopped: false,
            events: Vec::new(),
        }
    }

    /// Records one operation; `ret` is [`Event::NO_RETURN`] when it errored
    /// or timed out. Operations must be recorded in the order this client
    /// issued them.
    pub fn record(&mut self, call: u64, ret: u64, op: Op) {
        if self.stopped {
            return;
        }
        if call >= self.budget.cut.load(Ordering::Acquire) {
            self.stopped = true;
            return;
        }
        let mut needed = op.record_weight();
        while needed > 0 {
            if self.reserved == 0 {
                self.reserved = self.budget.reserve();
            }
            if self.reserved == 0 {
                match self.budget.cut.compare_exchange(
                    u64::MAX,
                    call,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.stopped = true;
                        return;
                    }
                    // Another worker cut after this call: the prefix must keep it.
                    Err(cut) if call < cut => break,
                    Err(_) => {
                        self.stopped = true;
                        return;
                    }
                }
            }
            let taken = needed.min(self.reserved);
            self.reserved -= taken;
            needed -= taken;
        }
        self.events.push(Event {
            client: self.client,
            call,
            ret,
            op,
        });
    }

    /// How many operations this recorder holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A whole storm's history: the key table (the storm's keyspace, which is
/// what a SCAN covers) and every recorded event, sorted by call.
///
/// Every key starts absent: a storm that pre-populates keys records those SETs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    keys: Vec<Vec<u8>>,
    start: u64,
    truncated: bool,
    events: Vec<Event>,
}

impl History {
    /// A history from its parts, checked for the rules the checker relies
    /// on: known key ids, distinct keys, `call <= ret`, and SET values unique
    /// and never [`ValueId::UNWRITTEN`]. `start` is the storm's start instant,
    /// the origin of witness times.
    pub fn new(
        keys: Vec<Vec<u8>>,
        start: u64,
        truncated: bool,
        mut events: Vec<Event>,
    ) -> Result<History, Error> {
        if u32::try_from(keys.len()).is_err() {
            return Err(Error::InvalidHistory("more than 2^32 keys".into()));
        }
        let mut distinct = HashSet::with_capacity(keys.len());
        if let Some(dup) = keys.iter().find(|k| !distinct.insert(k.as_slice())) {
            return Err(Error::InvalidHistory(format!(
                "key {} appears twice in the key table",
                dup.escape_ascii()
            )));
        }
        let known = |key: KeyId| (key as usize) < keys.len();
        let mut written = HashSet::new();
        for (i, event) in events.iter().enumerate() {
            if event.call > event.ret {
                return Err(Error::InvalidHistory(format!(
                    "event {i} returns before its call"
                )));
            }
            match &event.op {
                Op::Scan { found } => {
                    if let Some(key) = found.iter().find(|&&k| !known(k)) {
                        return Err(Error::InvalidHistory(format!(
                            "event {i}: SCAN found unknown key id {key}"
                        )));
                    }
                }
                op => {
                    let key = op.key().unwrap_or_default();
                    if !known(key) {
                        return Err(Error::InvalidHistory(format!(
                            "event {i}: unknown key id {key}"
                        )));
                    }
                }
            }
            if let Op::Set { value, .. } = event.op
                && (value == ValueId::UNWRITTEN || !written.insert(value))
            {
                return Err(Error::InvalidHistory(format!(
                    "event {i}: SET value {value} is not unique in the history"
                )));
            }
        }
        events.sort_by_key(|e| (e.call, e.client));
        Ok(History {
            keys,
            start,
            truncated,
            events,
        })
    }

    /// Merges the workers' recorders after a storm, cutting at the budget's
    /// cut instant if it ran out (see [`RecordBudget`]).
    pub fn from_recorders(
        keys: Vec<Vec<u8>>,
        start: u64,
        budget: &RecordBudget,
        recorders: impl IntoIterator<Item = Recorder>,
    ) -> Result<History, Error> {
        let recorders: Vec<Recorder> = recorders.into_iter().collect();
        let mut events = Vec::with_capacity(recorders.iter().map(Recorder::len).sum());
        for recorder in recorders {
            events.extend(recorder.events);
        }
        let cut = budget.cut();
        if let Some(cut) = cut {
            events.retain(|e| e.call < cut);
            for event in &mut events {
                if event.ret >= cut {
                    event.ret = Event::NO_RETURN;
                }
            }
        }
        History::new(keys, start, cut.is_some(), events)
    }

    /// The key table; a `KeyId` indexes it.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The events, sorted by call.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The storm's start instant (ns), the origin of witness times.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Whether recording stopped at its bound, so this is only a prefix.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// A key printable for people: UTF-8 as is (control characters escaped),
    /// other bytes as `\xNN`.
    pub fn printable_key(&self, key: KeyId) -> String {
        let bytes = &self.keys[key as usize];
        match std::str::from_utf8(bytes) {
            Ok(text) => text.escape_debug().to_string(),
            Err(_) => bytes.escape_ascii().to_string(),
        }
    }

    /// Writes the history as JSON (the format in this module's docs).
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }

    /// Reads a history written by [`History::to_json`], checking it as
    /// [`History::new`] does.
    pub fn from_json(text: &str) -> Result<History, Error> {
        let file: HistoryFile = serde_json::from_str(text)?;
        file.into_history()
    }
}

/// A key in the file: a string when UTF-8, hex otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum KeyText {
    Utf8(String),
    Hex { hex: String },
}

impl KeyText {
    fn encode(bytes: &[u8]) -> KeyText {
        match std::str::from_utf8(bytes) {
            Ok(text) => KeyText::Utf8(text.to_owned()),
            Err(_) => KeyText::Hex {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }

    fn decode(self) -> Result<Vec<u8>, Error> {
        match self {
            KeyText::Utf8(text) => Ok(text.into_bytes()),
            KeyText::Hex { hex } => {
                let digits = hex.as_bytes();
                if !digits.len().is_multiple_of(2) {
                    return Err(Error::InvalidHistory(format!("odd-length hex key {hex:?}")));
                }
                digits
                    .chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| Error::InvalidHistory(format!("bad hex key {hex:?}")))
                    })
                    .collect()
            }
        }
    }
}

#[derive(Serialize)]
struct HistoryFileRef<'a> {
    keys: Vec<KeyText>,
    start: u64,
    truncated: bool,
    events: &'a [Event],
}

#[derive(Deserialize)]
struct HistoryFile {
    keys: Vec<KeyText>,
    start: u64,
    #[serde(default)]
    truncated: bool,
    events: Vec<Event>,
}

impl HistoryFile {
    fn into_history(self) -> Result<History, Error> {
        let keys = self
            .keys
            .into_iter()
            .map(KeyText::decode)
            .collect::<Result<_, _>>()?;
        History::new(keys, self.start, self.truncated, self.events)
    }
}

impl Serialize for History {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HistoryFileRef {
            keys: self.keys.iter().map(|k| KeyText::encode(k)).collect(),
            start: self.start,
            truncated: self.truncated,
            events: &self.events,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<History, D::Error> {
        HistoryFile::deserialize(d)?
            .into_history()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let keys = vec![
            b"mapchaos:1".to_vec(),
            vec![0xff, 0x00, b'k'],
            "clé".as_bytes().to_vec(),
        ];
        let events = vec![
            Event {
                client: 0,
                call: 10,
                ret: 20,
                op: Op::Set {
                    key: 0,
                    value: ValueId::new(0, 1),
                },
            },
            Event {
                client: 1,
                call: 12,
                ret: 30,
                op: Op::Get {
                    key: 0,
                    read: Some(ValueId::new(0, 1)),
                },
            },
            Event {
                client: 2,
                call: 15,
                ret: Event::NO_RETURN,
                op: Op::Del {
                    key: 1,
                    removed: false,
                },
            },
            Event {
                client: 3,
                call: 16,
                ret: 40,
                op: Op::Exists {
                    key: 2,
                    present: false,
                },
            },
            Event {
                client: 4,
                call: 17,
                ret: 50,
                op: Op::Get { key: 1, read: None },
            },
            Event {
                client: 5,
                call: 18,
                ret: 90,
                op: Op::Scan {
                    found: vec![0, 0, 2].into(),
                },
            },
            Event {
                client: 6,
                call: 19,
                ret: 91,
                op: Op::Get {
                    key: 2,
                    read: Some(ValueId::UNWRITTEN),
                },
            },
        ];
        History::new(keys, 5, true, events).unwrap()
    }

    #[test]
    fn json_round_trip_keeps_binary_keys_info_ops_and_scans() {
        let history = sample();
        let text = history.to_json().unwrap();
        assert!(text.contains(r#"{"hex":"ff006b"}"#), "{text}");
        assert!(text.contains(r#""ret":null"#), "{text}");
        assert_eq!(History::from_json(&text).unwrap(), history);
    }

    #[test]
    fn reading_rejects_duplicate_set_values_and_unknown_keys() {
        let dup = r#"{"keys":["a"],"start":0,"events":[
            {"client":0,"call":1,"ret":2,"op":"set","key":0,"value":7},
            {"client":1,"call":3,"ret":4,"op":"set","key":0,"value":7}]}"#;
        assert!(matches!(
            History::from_json(dup),
            Err(Error::InvalidHistory(_))
        ));
        let unknown = r#"{"keys":["a"],"start":0,"events":[
            {"client":0,"call":1,"ret":2,"op":"del","key":3,"removed":true}]}"#;
        assert!(matches!(
            History::from_json(unknown),
            Err(Error::InvalidHistory(_))
        ));
    }

    #[test]
    fn printable_key_escapes_binary() {
        let history = sample();
        assert_eq!(history.printable_key(0), "mapchaos:1");
        assert_eq!(history.printable_key(1), "\\xff\\x00k");
        assert_eq!(history.printable_key(2), "clé");
    }

    fn set(key: KeyId, client: ClientId, seq: u32) -> Op {
        Op::Set {
            key,
            value: ValueId::new(client, seq),
        }
    }

    #[test]
    fn recording_under_budget_keeps_everything() {
        let budget = RecordBudget::new(100);
        let mut a = Recorder::new(0, budget.clone());
        let mut b = Recorder::new(1, budget.clone());
        for i in 0..10u32 {
            a.record(u64::from(i) * 10, u64::from(i) * 10 + 5, set(0, 0, i));
            b.record(
                u64::from(i) * 10 + 1,
                u64::from(i) * 10 + 3,
                Op::Get { key: 0, read: None },
            );
        }
        let history = History::from_recorders(vec![b"k".to_vec()], 0, &budget, [a, b]).unwrap();
        assert!(!history.is_truncated());
        assert_eq!(history.events().len(), 20);
        assert!(history.events().windows(2).all(|w| w[0].call <= w[1].call));
    }

    #[test]
    fn running_out_of_budget_cuts_a_prefix_and_makes_running_ops_unknown() {
        let budget = RecordBudget::new(3);
        let mut a = Recorder::new(0, budget.clone());
        let mut b = Recorder::new(1, budget.clone());
        a.record(0, 10, set(0, 0, 0));
        a.record(11, 20, set(0, 0, 1));
        a.record(21, 30, set(0, 0, 2));
        // Over budget: the cut is this call, 31.
        a.record(31, 40, set(0, 0, 3));
        a.record(41, 50, set(0, 0, 4));
        // Called before the cut, still running at it: kept, as unknown.
        b.record(
            25,
            45,
            Op::Get {
                key: 0,
                read: Some(ValueId::new(0, 3)),
            },
        );
        // Called after the cut: dropped.
        b.record(
            46,
            60,
            Op::Del {
                key: 0,
                removed: true,
            },
        );
        assert_eq!(budget.cut(), Some(31));
        let history = History::from_recorders(vec![b"k".to_vec()], 0, &budget, [a, b]).unwrap();
        assert!(history.is_truncated());
        let calls: Vec<u64> = history.events().iter().map(|e| e.call).collect();
        assert_eq!(calls, [0, 11, 21, 25]);
        assert!(history.events()[3].is_info());
        assert!(!history.events()[2].is_info());
    }

    #[test]
    fn a_scan_takes_budget_for_the_keys_it_returned() {
        let budget = RecordBudget::new(10);
        let mut a = Recorder::new(0, budget.clone());
        let found: Box<[KeyId]> = vec![0; 4 * SCAN_KEYS_PER_OP].into();
        let scan = Op::Scan { found };
        assert_eq!(scan.record_weight(), 5);
        a.record(0, 10, scan.clone());
        a.record(11, 20, scan.clone());
        // 10 slots, both scans took 5: the third is over budget, cut there.
        a.record(21, 30, set(0, 0, 0));
        assert_eq!(budget.cut(), Some(21));
        assert_eq!(a.len(), 2);
    }
}
