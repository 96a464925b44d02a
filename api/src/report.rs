//! The race checker's verdict on one history: how hard the storm raced
//! (exposures), what went wrong (anomalies with witnesses) and how sure the
//! checker is (per-key verdict counts and the overall verdict).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pair of truly concurrent operations on one key, at least one of them a
/// DEL or a SET. The snake_case names are the `kind` label values of
/// `mapchaos_race_exposures_total`, so they never change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ExposureKind {
    /// Two DELs of the same key overlapped.
    DelDel,
    /// A DEL overlapped a SET of the same key.
    DelSet,
    /// A DEL overlapped a read (GET or EXISTS) of the same key.
    DelGet,
    /// A DEL overlapped a full SCAN iteration of the keyspace holding the key.
    DelScan,
    /// Two SETs of the same key overlapped.
    SetSet,
    /// A SET overlapped a read (GET or EXISTS) of the same key.
    SetGet,
}

impl ExposureKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [ExposureKind; 6] = [
        ExposureKind::DelDel,
        ExposureKind::DelSet,
        ExposureKind::DelGet,
        ExposureKind::DelScan,
        ExposureKind::SetSet,
        ExposureKind::SetGet,
    ];

    /// The metric label value (same as the serialised name).
    pub fn as_str(self) -> &'static str {
        match self {
            ExposureKind::DelDel => "del_del",
            ExposureKind::DelSet => "del_set",
            ExposureKind::DelGet => "del_get",
            ExposureKind::DelScan => "del_scan",
            ExposureKind::SetSet => "set_set",
            ExposureKind::SetGet => "set_get",
        }
    }
}

impl fmt::Display for ExposureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the checker proved went wrong. Every kind is also `nonlinearizable`;
/// the named kinds are found by cheap detectors with short witnesses, and
/// `nonlinearizable` is what the full search reports when no named detector
/// fired. The snake_case names are the `kind` label values of
/// `mapchaos_anomalies_total`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// No order of the key's operations respects real time and the register model.
    Nonlinearizable,
    /// A read after an acknowledged DEL returned a value written before that DEL.
    StaleRead,
    /// A read saw the key absent, and a later read saw an older value again.
    Resurrection,
    /// A DEL reported removing a key that must have been absent, or reported
    /// nothing removed from a key that must have been present.
    LostDelete,
    /// A read after an acknowledged SET, with no other write that could come
    /// between them, did not see that SET's value.
    LostWrite,
    /// A read returned a value that no SET of that key wrote.
    PhantomRead,
    /// A full SCAN missed a key that was present from its first call to its last return.
    ScanMiss,
    /// A full SCAN returned a key that was absent from its first call to its last return.
    ScanPhantom,
}

impl AnomalyKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::Nonlinearizable,
        AnomalyKind::StaleRead,
        AnomalyKind::Resurrection,
        AnomalyKind::LostDelete,
        AnomalyKind::LostWrite,
        AnomalyKind::PhantomRead,
        AnomalyKind::ScanMiss,
        AnomalyKind::ScanPhantom,
    ];

    /// The metric label value (same as the serialised name).
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Nonlinearizable => "nonlinearizable",
            AnomalyKind::StaleRead => "stale_read",
            AnomalyKind::Resurrection => "resurrection",
            AnomalyKind::LostDelete => "lost_delete",
            AnomalyKind::LostWrite => "lost_write",
            AnomalyKind::PhantomRead => "phantom_read",
            AnomalyKind::ScanMiss => "scan_miss",
            AnomalyKind::ScanPhantom => "scan_phantom",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the keys of a history were judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVerdictCounts {
    /// Keys whose operations were proven explainable by a sequential register.
    pub ok: u64,
    /// Keys with at least one anomaly.
    pub illegal: u64,
    /// Keys whose search ran out of its time budget: neither proven ok nor illegal.
    pub unknown: u64,
}

/// The overall verdict of a check or a storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Every key was proven ok and the storm really raced (some exposure).
    Pass,
    /// At least one anomaly was found.
    Fail,
    /// No anomaly was found, but nothing was proven either: some key is
    /// unknown, no operation with a known outcome overlapped another, or too
    /// many operations failed (over `abort.maxErrorRate`).
    Inconclusive,
    /// An abort condition (`spec.abort`) stopped the storm before its
    /// duration, and no anomaly was found in what ran: never a pass.
    Aborted,
}

impl Verdict {
    /// The word reports print and CI greps for.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Aborted => "ABORTED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// The operation of a witness entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OpName {
    /// GET key.
    Get,
    /// SET key value.
    Set,
    /// DEL key.
    Del,
    /// EXISTS key.
    Exists,
    /// A full SCAN iteration of the storm's keyspace.
    Scan,
}

impl fmt::Display for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpName::Get => "GET",
            OpName::Set => "SET",
            OpName::Del => "DEL",
            OpName::Exists => "EXISTS",
            OpName::Scan => "SCAN",
        })
    }
}

/// One operation in a witness, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WitnessOp {
    /// The storm worker (client) that issued the operation.
    pub client: u32,
    /// The operation.
    pub op: OpName,
    /// The value a SET wrote (as `c<client>#<sequence>`); absent for other operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
    /// What the client got back; absent when the operation errored or timed
    /// out, so its effect and output are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When the client sent the operation, in microseconds since the storm started.
    pub call_us: u64,
    /// When the client got the reply, in microseconds since the storm started;
    /// absent when it never did (error or timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_us: Option<u64>,
}

/// The longest prefix of a key's history the search could order legally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinearizablePrefix {
    /// How many operations the prefix orders.
    pub length: u64,
    /// Its last few operations, in the order the search placed them.
    pub tail: Vec<WitnessOp>,
    /// The key's value after the prefix (`absent` or the value).
    pub state: String,
}

/// The evidence for one anomaly, small enough for a person to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Witness {
    /// What went wrong.
    pub kind: AnomalyKind,
    /// The key, printable: UTF-8 as is, other bytes escaped as `\xNN`.
    pub key: String,
    /// The operations involved, ordered by call time.
    pub operations: Vec<WitnessOp>,
    /// The longest legal prefix the search found (only for `nonlinearizable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_prefix: Option<LinearizablePrefix>,
    /// One sentence saying what could not be explained.
    pub explanation: String,
    /// The key's operations around the anomaly, bounded, for the report's
    /// timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<crate::timeline::KeyTimeline>,
}

fn fmt_witness_op(f: &mut fmt::Formatter<'_>, op: &WitnessOp) -> fmt::Result {
    let ret = op
        .ret_us
        .map_or_else(|| "never".to_owned(), |t| format!("{t}µs"));
    let text = match &op.argument {
        Some(arg) => format!("{} {}", op.op, arg),
        None => op.op.to_string(),
    };
    let result = op.result.as_deref().unwrap_or("unknown (error or timeout)");
    writeln!(
        f,
        "    client {:<4} {:<24} -> {:<28} [{}µs .. {}]",
        op.client, text, result, op.call_us, ret
    )
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is already escaped, quotes included.
        writeln!(f, "{} on key \"{}\"", self.kind, self.key)?;
        writeln!(f, "  {}", self.explanation)?;
        writeln!(f, "  operations:")?;
        for op in &self.operations {
            fmt_witness_op(f, op)?;
        }
        if let Some(prefix) = &self.longest_prefix {
            let ends = if prefix.tail.is_empty() {
                ""
            } else {
                "; it ends with:"
            };
            writeln!(
                f,
                "  longest legal prefix: {} operations, leaving the key {}{ends}",
                prefix.length, prefix.state
            )?;
            for op in &prefix.tail {
                fmt_witness_op(f, op)?;
            }
        }
        Ok(())
    }
}

/// The checker's verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Pairs of truly concurrent operations on one key, by kind (every kind
    /// listed). Only operations whose outcome is known count: one that
    /// errored or timed out explains anything and proves nothing.
    pub exposures: BTreeMap<ExposureKind, u64>,
    /// The largest number of operations with a known outcome that overlapped
    /// on one key.
    pub max_overlap: u64,
    /// Keys on which each anomaly kind was found, by kind (every kind listed);
    /// a key with several anomalies of one kind counts once for it.
    pub anomalies: BTreeMap<AnomalyKind, u64>,
    /// The first witnesses, ordered by key.
    pub witnesses: Vec<Witness>,
    /// How the keys were judged.
    pub keys: KeyVerdictCounts,
    /// How many recorded operations the check covered.
    pub ops_checked: u64,
    /// How many of them have a known outcome (a reply was recorded); the
    /// rest errored or timed out.
    #[serde(default)]
    pub ops_known: u64,
    /// Whether recording stopped at its bound, so only a prefix of the storm was checked.
    pub truncated: bool,
    /// Keys a SCAN returned more than once (allowed by Redis; for information).
    pub scan_duplicates: u64,
    /// Pass, Fail or Inconclusive.
    pub verdict: Verdict,
}

/// Why a check proved nothing, or `None` when it proved something (a pass
/// or a failure).
fn unproven(
    exposures: &BTreeMap<ExposureKind, u64>,
    keys: &KeyVerdictCounts,
    ops_known: u64,
) -> Option<String> {
    if ops_known == 0 {
        Some(
            "no operation has a known outcome (every one errored or timed out), so nothing was \
             proven."
                .into(),
        )
    } else if keys.ok + keys.illegal + keys.unknown == 0 {
        Some("no key was checked, so nothing was proven.".into())
    } else if keys.unknown > 0 {
        Some(format!(
            "no anomaly found, but {} keys ran out of search budget (raise check.timeoutPerKey).",
            keys.unknown
        ))
    } else if exposures.values().all(|&n| n == 0) {
        Some(
            "no operations with a known outcome overlapped, so nothing was proven (more \
             workers, fewer keys, or a hotter distribution)."
                .into(),
        )
    } else {
        None
    }
}

impl CheckReport {
    /// The verdict that follows from the counts: any anomaly fails;
    /// otherwise no operation of known outcome, no checked key, an unknown
    /// key or no exposure at all proves nothing.
    pub fn verdict_from(
        exposures: &BTreeMap<ExposureKind, u64>,
        anomalies: &BTreeMap<AnomalyKind, u64>,
        keys: &KeyVerdictCounts,
        ops_known: u64,
    ) -> Verdict {
        if anomalies.values().any(|&n| n > 0) {
            Verdict::Fail
        } else if unproven(exposures, keys, ops_known).is_some() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }

    /// Why this check proved nothing (one sentence), or `None` when it
    /// proved something; anomalies aside, this is what keeps it from a pass.
    pub fn unproven_reason(&self) -> Option<String> {
        unproven(&self.exposures, &self.keys, self.ops_known)
    }

    /// Keys with at least one anomaly, whatever their kinds: a key with a
    /// stale read and a lost delete counts once (the per-kind counts in
    /// `anomalies` count it under each).
    pub fn total_anomalies(&self) -> u64 {
        // `keys.illegal` is exactly those keys; no kind can have more keys
        // than that, so the larger of the two survives a report whose key
        // counts were left out.
        let widest_kind = self.anomalies.values().copied().max().unwrap_or(0);
        self.keys.illegal.max(widest_kind)
    }

    /// Total exposures over all kinds.
    pub fn total_exposures(&self) -> u64 {
        self.exposures.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts<K: Ord + Copy>(all: &[K], hit: Option<K>) -> BTreeMap<K, u64> {
        all.iter()
            .map(|&k| (k, u64::from(Some(k) == hit)))
            .collect()
    }

    #[test]
    fn kinds_serialise_as_their_metric_labels() {
        for kind in ExposureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for kind in AnomalyKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn zero_exposures_without_anomalies_is_inconclusive() {
        let keys = KeyVerdictCounts {
            ok: 3,
            illegal: 0,
            unknown: 0,
        };
        let none = counts(&AnomalyKind::ALL, None);
        let verdict =
            CheckReport::verdict_from(&counts(&ExposureKind::ALL, None), &none, &keys, 40);
        assert_eq!(verdict, Verdict::Inconclusive);
        let raced = counts(&ExposureKind::ALL, Some(ExposureKind::DelGet));
        assert_eq!(
            CheckReport::verdict_from(&raced, &none, &keys, 40),
            Verdict::Pass
        );
    }

    #[test]
    fn an_unknown_key_is_never_a_pass_and_an_anomaly_always_fails() {
        let raced = counts(&ExposureKind::ALL, Some(ExposureKind::SetSet));
        let none = counts(&AnomalyKind::ALL, None);
        let unknown = KeyVerdictCounts {
            ok: 9,
            illegal: 0,
            unknown: 1,
        };
        assert_eq!(
            CheckReport::verdict_from(&raced, &none, &unknown, 40),
            Verdict::Inconclusive
        );
        let one = counts(&AnomalyKind::ALL, Some(AnomalyKind::StaleRead));
        assert_eq!(
            CheckReport::verdict_from(&raced, &one, &unknown, 40),
            Verdict::Fail
        );
    }

    #[test]
    fn no_known_outcome_or_no_checked_key_is_never_a_pass() {
        // Counts that would pass, but proven on nothing.
        let raced = counts(&ExposureKind::ALL, Some(ExposureKind::SetSet));
        let none = counts(&AnomalyKind::ALL, None);
        let some_keys = KeyVerdictCounts {
            ok: 4,
            illegal: 0,
            unknown: 0,
        };
        assert_eq!(
            CheckReport::verdict_from(&raced, &none, &some_keys, 0),
            Verdict::Inconclusive
        );
        let reason = unproven(&raced, &some_keys, 0).unwrap();
        assert!(
            reason.contains("no operation has a known outcome"),
            "{reason}"
        );
        let no_keys = KeyVerdictCounts::default();
        assert_eq!(
            CheckReport::verdict_from(&raced, &none, &no_keys, 12),
            Verdict::Inconclusive
        );
        let reason = unproven(&raced, &no_keys, 12).unwrap();
        assert!(reason.contains("no key was checked"), "{reason}");
        assert_eq!(unproven(&raced, &some_keys, 12), None);
    }

    #[test]
    fn the_anomaly_total_counts_keys_not_key_kind_pairs() {
        let mut report = CheckReport {
            exposures: counts(&ExposureKind::ALL, Some(ExposureKind::DelGet)),
            max_overlap: 2,
            anomalies: AnomalyKind::ALL.iter().map(|&k| (k, 0)).collect(),
            witnesses: Vec::new(),
            keys: KeyVerdictCounts {
                ok: 7,
                illegal: 2,
                unknown: 0,
            },
            ops_checked: 90,
            ops_known: 90,
            truncated: false,
            scan_duplicates: 0,
            verdict: Verdict::Fail,
        };
        // Key a: stale read and lost delete; key b: stale read only.
        report.anomalies.insert(AnomalyKind::StaleRead, 2);
        report.anomalies.insert(AnomalyKind::LostDelete, 1);
        assert_eq!(report.total_anomalies(), 2);
        // One key with three kinds is one anomalous key.
        report.keys.illegal = 1;
        report.anomalies.insert(AnomalyKind::StaleRead, 1);
        report.anomalies.insert(AnomalyKind::Resurrection, 1);
        assert_eq!(report.total_anomalies(), 1);
    }

    #[test]
    fn verdict_words_are_the_ones_reports_print() {
        let words: Vec<&str> = [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Inconclusive,
            Verdict::Aborted,
        ]
        .iter()
        .map(|v| v.word())
        .collect();
        assert_eq!(words, ["PASS", "FAIL", "INCONCLUSIVE", "ABORTED"]);
        assert_eq!(
            serde_json::to_string(&Verdict::Aborted).unwrap(),
            "\"Aborted\""
        );
    }

    #[test]
    fn report_schema_documents_every_field() {
        let schema = serde_json::to_value(schemars::schema_for!(CheckReport)).unwrap();
        let props = schema["properties"].as_object().unwrap();
        assert!(props.contains_key("maxOverlap"));
        for (name, prop) in props {
            assert!(
                prop.get("description").is_some(),
                "field {name} has no description"
            );
        }
    }
}
