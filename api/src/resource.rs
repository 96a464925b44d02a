//! The `MapChaos` resource's status: the phase, the conditions, every
//! target's storm and the run's summary, as the operator writes them and
//! `kubectl get/describe mapchaos` shows them. The resource type itself is
//! derived on `MapChaosSpec` (`crate::spec`); `crd()` is the generated CRD.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::audit::DeleteJournalSummary;
use crate::report::Verdict;
use crate::spec::MapChaos;
use crate::storm::StormPhase;

/// The finalizer the operator puts on a MapChaos before it starts any storm,
/// so a deleted experiment always stops its storms first.
pub const FINALIZER: &str = "mapchaos.io/storms";
/// The largest seed: 2^53-1, the largest integer every JSON parser (and
/// `kubectl`) keeps exact.
pub const MAX_SEED: u64 = (1 << 53) - 1;
/// Annotation that pauses an experiment like `spec.paused` when set to "true".
pub const PAUSE_ANNOTATION: &str = "mapchaos.io/pause";
/// Annotation the operator's admission webhook sets to the user who created
/// the MapChaos; a value written by anyone else is overwritten.
pub const CREATED_BY_ANNOTATION: &str = "mapchaos.io/created-by";
/// Annotation the webhook sets to the user of the last update that changed
/// the spec, labels or annotations.
pub const UPDATED_BY_ANNOTATION: &str = "mapchaos.io/updated-by";

/// The generated CustomResourceDefinition (what `mapchaos crd` prints and
/// `crds/` holds).
pub fn crd() -> CustomResourceDefinition {
    MapChaos::crd()
}

/// Where an experiment is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExperimentPhase {
    /// Waiting: for the spec to become valid, or for pods to select.
    #[default]
    Pending,
    /// Storms are running on the targets.
    Running,
    /// Every target's storm ended; at least one ran to its duration and none
    /// was aborted.
    Completed,
    /// The spec is invalid, or no target's storm could run.
    Failed,
    /// A storm was stopped early: an abort condition, a pause, or deletion.
    Aborted,
    /// Paused (`spec.paused`, the pause annotation or the operator's kill
    /// switch): running storms were stopped and no new ones start.
    Paused,
}

/// Where one target's storm is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetPhase {
    /// Chosen; the storm is not yet confirmed by the sidecar.
    #[default]
    Pending,
    /// The sidecar runs the storm (preparing, storming, checking or restoring).
    Running,
    /// The storm ran to its duration; its report is final.
    Completed,
    /// The storm stopped early; its report covers what ran.
    Aborted,
    /// The storm could not run, or the sidecar lost it.
    Failed,
    /// The pod was deleted or replaced.
    PodGone,
    /// The sidecar stopped answering for longer than the storm's lease, so
    /// the storm has stopped itself, but its result is unknown.
    Unreachable,
    /// Selected by a `dryRun` experiment; nothing was stormed.
    DryRun,
}

impl TargetPhase {
    /// Whether nothing more will happen to this target in its run.
    pub fn is_final(self) -> bool {
        !matches!(self, TargetPhase::Pending | TargetPhase::Running)
    }

    /// The `state` label value of `mapchaos_targets` (bounded, stable).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetPhase::Pending => "pending",
            TargetPhase::Running => "running",
            TargetPhase::Completed => "completed",
            TargetPhase::Aborted => "aborted",
            TargetPhase::Failed => "failed",
            TargetPhase::PodGone => "pod_gone",
            TargetPhase::Unreachable => "unreachable",
            TargetPhase::DryRun => "dry_run",
        }
    }
}

/// What the operator has observed of a MapChaos.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapChaosStatus {
    /// Where the experiment is: Pending, Running, Completed, Failed, Aborted
    /// or Paused.
    #[serde(default)]
    pub phase: ExperimentPhase,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The seed target choice and the workload use: `spec.seed`, or one
    /// derived from the resource's uid. Give it as `spec.seed` to repeat the
    /// experiment exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The current run's number, from 1; part of every storm id, so a retried
    /// or restarted reconcile never starts a second storm for the same run.
    #[serde(default)]
    pub run: u32,
    /// When the current run chose its targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When every target of the current run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Valid, Selected, AllInjected, AllRecovered and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every target of the current run and its storm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
    /// The current run's results across targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The runs, oldest first: those still going (phase Running) and the
    /// last `spec.historyLimit` finished ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// The last time `spec.schedule` fired and was dealt with (run or
    /// skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When `spec.schedule` fires next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last run was stopped by a pause (`spec.paused` or the pause
    /// annotation, not the kill switch); lifting the pause starts a new run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Who created the experiment (the `mapchaos.io/created-by` annotation
    /// the admission webhook stamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who last changed it (`mapchaos.io/updated-by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// One target pod and its storm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's uid, so a replacement pod with the same name is told apart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    /// The pod IP the sidecar's storm API was reached on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The run this target belongs to (runs overlap only with
    /// `concurrencyPolicy: Allow`).
    #[serde(default)]
    pub run: u32,
    /// The storm's id on the sidecar.
    pub storm_id: String,
    /// Where the target's storm is.
    #[serde(default)]
    pub phase: TargetPhase,
    /// The phase the sidecar last reported for the storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_phase: Option<StormPhase>,
    /// Operations completed.
    #[serde(default)]
    pub ops: u64,
    /// Operations that failed.
    #[serde(default)]
    pub errors: u64,
    /// Truly concurrent operation pairs the checker found.
    #[serde(default)]
    pub exposures: u64,
    /// Keys on which the checker proved an anomaly (a key with several
    /// kinds counts once; `anomalyKinds` counts it under each).
    #[serde(default)]
    pub anomalies: u64,
    /// The exposures by kind (kinds with none left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposure_kinds: BTreeMap<String, u64>,
    /// The anomalies by kind (kinds with none left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomaly_kinds: BTreeMap<String, u64>,
    /// Storm latency in microseconds, once the report is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyMicros>,
    /// The target's verdict, once its report is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The first anomaly's kind, key and witness sentence (cut at
    /// 512 bytes), so `kubectl describe` tells what broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_anomaly: Option<String>,
    /// Why the target earned its verdict, in the report's words (cut at
    /// 512 bytes): what an `Inconclusive` failed to prove, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict_reason: Option<String>,
    /// The Secret in the experiment's namespace that holds this target's
    /// HTML report (gzip, key `report.html.gz`), once the operator
    /// collected it; `mapchaos report mc/NAME` reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_secret: Option<String>,
    /// What became of the existing keys the storm deleted (the sidecar's
    /// delete journal; the keys themselves at `GET /v1/storms/{id}/audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<DeleteJournalSummary>,
    /// When the sidecar last answered about this storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// What is happening, or what went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Latency percentiles in microseconds; across targets each is the worst
/// target's (percentiles of different pods cannot be merged exactly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyMicros {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest operation.
    pub max: u64,
}

/// A run's results across its targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Targets in the run.
    pub targets: u32,
    /// Targets whose storm the sidecar confirmed.
    pub injected: u32,
    /// Targets whose storm has ended.
    pub finished: u32,
    /// Operations completed on every target.
    pub ops: u64,
    /// Failed operations on every target.
    pub errors: u64,
    /// Race exposures by kind (`del_del`, `del_set`, ...), over the final reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposures: BTreeMap<String, u64>,
    /// Anomalies by kind (`stale_read`, `lost_delete`, ...), over the final reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomalies: BTreeMap<String, u64>,
    /// All exposures.
    pub total_exposures: u64,
    /// Keys with anomalies, over every target (a key with several kinds
    /// counts once; `anomalies` counts it under each kind).
    pub total_anomalies: u64,
    /// Storm latency over the final reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyMicros>,
    /// Existing keys the storms deleted and what became of them, over every
    /// target that reported a delete journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<DeleteJournalSummary>,
    /// The worst p99 as a Go duration, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<String>,
    /// Fail if any target failed the check or any steady-state probe
    /// failed, Aborted if an abort condition stopped any target's storm,
    /// Pass if every finished target and every probe passed, Inconclusive
    /// otherwise; absent until the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// One run, in `status.runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's number.
    pub run: u32,
    /// When it chose its targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When its last target finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Running while its storms go, then how it ended.
    pub phase: ExperimentPhase,
    /// Targets stormed.
    pub targets: u32,
    /// Keys with anomalies found.
    pub anomalies: u64,
    /// Its verdict: the map's, failed by any probe that failed, and a
    /// pass only when every probe passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Each steady-state probe's results in this run (`spec.probes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<crate::probe::ProbeStatus>,
}

/// The CRD as YAML, exactly as `crds/mapchaos.io_mapchaos.yaml` holds it.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&crd()).expect("a CRD always serialises to YAML");
    format!(
        "# Generated from the Rust types in api/ by `mapchaos crd`; do not edit.\n\
         # Regenerate: cargo run -p mapchaos -- crd > crds/mapchaos.io_mapchaos.yaml\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const CRD_FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/mapchaos.io_mapchaos.yaml"
    );

    #[test]
    fn the_crd_file_matches_the_types() {
        let on_disk = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "crds/mapchaos.io_mapchaos.yaml is out of date with the types in api/; \
             regenerate it with: cargo run -p mapchaos -- crd > crds/mapchaos.io_mapchaos.yaml"
        );
    }

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Walks every subschema, calling `check(path, schema)`.
    fn walk(
        path: &str,
        node: &Value,
        check: &mut dyn FnMut(&str, &serde_json::Map<String, Value>),
    ) {
        let Some(object) = node.as_object() else {
            return;
        };
        check(path, object);
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child, check);
            }
        }
        if let Some(items) = object.get("items") {
            walk(&format!("{path}[]"), items, check);
        }
        if let Some(values) = object.get("additionalProperties") {
            walk(&format!("{path}{{}}"), values, check);
        }
    }

    #[test]
    fn the_schema_is_structural_and_needs_no_cel() {
        walk("", &schema(), &mut |path, node| {
            for forbidden in [
                "$ref",
                "oneOf",
                "anyOf",
                "allOf",
                "not",
                "x-kubernetes-validations",
            ] {
                assert!(!node.contains_key(forbidden), "{path} has {forbidden}");
            }
            assert!(
                node.contains_key("type") || node.contains_key("x-kubernetes-int-or-string"),
                "{path} has no type"
            );
            let has_properties = node.contains_key("properties");
            let has_values = node
                .get("additionalProperties")
                .is_some_and(Value::is_object);
            assert!(
                !(has_properties && node.contains_key("additionalProperties")),
                "{path} has both properties and additionalProperties"
            );
            if node["type"] == "object" && path.starts_with(".spec") {
                assert!(has_properties || has_values, "{path} is an untyped object");
            }
        });
    }

    #[test]
    fn every_field_is_documented() {
        walk("", &schema(), &mut |path, node| {
            let is_field = !path.is_empty() && !path.ends_with("[]") && !path.ends_with('}');
            if is_field {
                assert!(
                    node.contains_key("description"),
                    "{path} has no description"
                );
            }
        });
    }

    #[test]
    fn the_crd_names_scope_and_columns_are_as_documented() {
        let crd = crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("mapchaos.mapchaos.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["mc".to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["chaos".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Phase",
                "Targets",
                "Exposures",
                "Anomalies",
                "P99",
                "Created-By",
                "Updated-By",
                "Age"
            ]
        );
        // Who created and changed it only with -o wide.
        let wide: Vec<(&str, Option<i32>, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.is_some_and(|p| p > 0))
            .map(|c| (c.name.as_str(), c.priority, c.json_path.as_str()))
            .collect();
        assert_eq!(
            wide,
            [
                ("Created-By", Some(1), ".status.createdBy"),
                ("Updated-By", Some(1), ".status.updatedBy")
            ]
        );
    }

    #[test]
    fn defaults_and_limits_reach_the_schema() {
        let schema = schema();
        let storm = &schema["properties"]["spec"]["properties"]["storm"]["properties"];
        assert_eq!(storm["workers"]["default"], 32);
        assert_eq!(storm["workers"]["minimum"], 1.0);
        assert_eq!(storm["workers"]["maximum"], 1024.0);
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["duration"]["default"], "1m");
        assert_eq!(spec["mode"]["default"], "one");
        assert_eq!(spec["value"]["pattern"], "^[0-9]+$");
    }

    #[test]
    fn a_minimal_resource_reads_with_defaults() {
        let resource: MapChaos = serde_json::from_value(serde_json::json!({
            "apiVersion": "mapchaos.io/v1alpha1",
            "kind": "MapChaos",
            "metadata": {"name": "storm", "namespace": "shop"},
            "spec": {"selector": {"labelSelectors": {"app": "cart"}}},
            "status": {"phase": "Running", "targets": [
                {"pod": "cart-0", "namespace": "shop", "stormId": "s", "phase": "PodGone"}
            ]}
        }))
        .unwrap();
        assert_eq!(resource.spec.storm.workers, 32);
        let status = resource.status.unwrap();
        assert_eq!(status.phase, ExperimentPhase::Running);
        assert_eq!(status.targets[0].phase, TargetPhase::PodGone);
        assert!(status.targets[0].phase.is_final());
    }
}
