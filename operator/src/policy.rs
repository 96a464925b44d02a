//! Where storms may go and how big a run may be: the namespace opt-in label,
//! the protected namespaces, the per-namespace ban on `keys.source:
//! existing`, and the blast-radius caps. Pure rules, applied twice: by the
//! admission webhook when a MapChaos is written (a clear rejection) and by
//! the planner whenever a run starts (a condition and an Event), so a
//! namespace that loses its label after admission gets no new storms.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use mapchaos_api::resource::TargetStatus;
use mapchaos_api::spec::{KeySource, MapChaosSpec};

use crate::selector::CandidatePod;

/// The namespace label that allows storms there, and its value.
pub const STORMS_LABEL: &str = "mapchaos.io/storms";
pub const STORMS_ALLOWED: &str = "allowed";
/// The namespace annotation that keeps storms to their own synthetic keys
/// there, and its value.
pub const EXISTING_KEYS_ANNOTATION: &str = "mapchaos.io/existing-keys";
pub const EXISTING_KEYS_FORBIDDEN: &str = "forbidden";
/// Never stormed, whatever their labels say (with the operator's own).
pub const ALWAYS_PROTECTED: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The operator's guardrail settings (the chart's `guardrails.*` values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// A namespace is stormed only when labelled `mapchaos.io/storms: allowed`.
    pub require_namespace_label: bool,
    /// More namespaces never stormed, besides [`ALWAYS_PROTECTED`].
    pub protected_namespaces: BTreeSet<String>,
    /// The operator's own namespace: never stormed.
    pub operator_namespace: Option<String>,
    /// At most this many targets in one run.
    pub max_targets: Option<u32>,
    /// At most this percentage of a namespace's sidecar pods stormed at once,
    /// across all experiments.
    pub max_namespace_share_percent: Option<u32>,
}

/// What the rules look at of one Namespace object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl NamespaceFacts {
    pub fn of(namespace: &Namespace) -> Self {
        NamespaceFacts {
            labels: namespace.metadata.labels.clone().unwrap_or_default(),
            annotations: namespace.metadata.annotations.clone().unwrap_or_default(),
        }
    }
}

impl Guardrails {
    /// Why `namespace` is protected, if it is.
    pub fn protection(&self, namespace: &str) -> Option<&'static str> {
        if ALWAYS_PROTECTED.contains(&namespace) {
            Some("a Kubernetes system namespace")
        } else if self.operator_namespace.as_deref() == Some(namespace) {
            Some("the mapchaos operator's own namespace")
        } else if self.protected_namespaces.contains(namespace) {
            Some("listed in the chart's guardrails.protectedNamespaces")
        } else {
            None
        }
    }

    /// Why storms of `spec` may not go to `namespace` (`facts` is `None`
    /// when it does not exist), or `None` when they may.
    pub fn namespace_refusal(
        &self,
        namespace: &str,
        facts: Option<&NamespaceFacts>,
        spec: &MapChaosSpec,
    ) -> Option<String> {
        if let Some(why) = self.protection(namespace) {
            return Some(format!(
                "namespace {namespace} is protected ({why}) and is never stormed"
            ));
        }
        let Some(facts) = facts else {
            return Some(format!("namespace {namespace} does not exist"));
        };
        if self.require_namespace_label
            && facts.labels.get(STORMS_LABEL).map(String::as_str) != Some(STORMS_ALLOWED)
        {
            return Some(format!(
                "namespace {namespace} does not allow storms: it lacks the label \
                 {STORMS_LABEL}={STORMS_ALLOWED} (kubectl label namespace {namespace} \
                 {STORMS_LABEL}={STORMS_ALLOWED})"
            ));
        }
        if spec.storm.keys.source == KeySource::Existing
            && facts
                .annotations
                .get(EXISTING_KEYS_ANNOTATION)
                .map(String::as_str)
                == Some(EXISTING_KEYS_FORBIDDEN)
        {
            return Some(format!(
                "namespace {namespace} forbids storms on the application's keys (annotation \
                 {EXISTING_KEYS_ANNOTATION}: {EXISTING_KEYS_FORBIDDEN}); use keys.source: synthetic \
                 there"
            ));
        }
        None
    }

    /// The planner's view for one experiment: which of its namespaces are
    /// refused and why, with what other experiments storm right now.
    pub fn run_guard(
        &self,
        spec: &MapChaosSpec,
        namespaces: &BTreeMap<String, Option<NamespaceFacts>>,
        stormed_elsewhere: BTreeMap<String, u32>,
    ) -> RunGuard {
        RunGuard {
            refused_namespaces: namespaces
                .iter()
                .filter_map(|(name, facts)| {
                    self.namespace_refusal(name, facts.as_ref(), spec)
                        .map(|why| (name.clone(), why))
                })
                .collect(),
            max_targets: self.max_targets,
            max_namespace_share_percent: self.max_namespace_share_percent,
            stormed_elsewhere,
        }
    }
}

/// What the planner checks before a run starts. The default refuses
/// nothing (no guardrails configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunGuard {
    /// Namespaces no new storm may start in, with the reason.
    pub refused_namespaces: BTreeMap<String, String>,
    pub max_targets: Option<u32>,
    pub max_namespace_share_percent: Option<u32>,
    /// Unfinished targets of the other experiments, by namespace.
    pub stormed_elsewhere: BTreeMap<String, u32>,
}

impl RunGuard {
    /// Why a run of `chosen` must not start, or `None` when it may. `pods`
    /// are the observed pods (for each namespace's sidecar pods), `own` the
    /// experiment's targets (its unfinished ones still storm).
    pub fn run_refusal(
        &self,
        chosen: &[&CandidatePod],
        pods: &[CandidatePod],
        own: &[TargetStatus],
    ) -> Option<String> {
        if let Some(max) = self.max_targets
            && chosen.len() as u64 > u64::from(max)
        {
            return Some(format!(
                "the run would storm {} pods, over the cap of {max} per experiment \
                 (guardrails.maxTargetsPerExperiment)",
                chosen.len()
            ));
        }
        let share = self.max_namespace_share_percent?;
        let mut new: BTreeMap<&str, u64> = BTreeMap::new();
        for pod in chosen {
            *new.entry(pod.namespace.as_str()).or_default() += 1;
        }
        for (namespace, count) in new {
            let sidecars = pods
                .iter()
                .filter(|p| p.namespace == namespace && p.has_sidecar && !p.terminating)
                .count() as u64;
            let busy = own
                .iter()
                .filter(|t| !t.phase.is_final() && t.namespace == namespace)
                .count() as u64
                + u64::from(self.stormed_elsewhere.get(namespace).copied().unwrap_or(0));
            let stormed = busy + count;
            if stormed * 100 > u64::from(share) * sidecars {
                return Some(format!(
                    "the run would have {stormed} of the {sidecars} sidecar pods in namespace \
                     {namespace} stormed at once ({busy} already by running storms), over the cap \
                     of {share}% (guardrails.maxNamespaceSharePercent)"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use mapchaos_api::resource::TargetPhase;

    use super::*;

    fn spec(source: KeySource) -> MapChaosSpec {
        let mut spec: MapChaosSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.storm.keys.source = source;
        spec
    }

    fn guardrails() -> Guardrails {
        Guardrails {
            require_namespace_label: true,
            protected_namespaces: ["payments".to_owned()].into(),
            operator_namespace: Some("mapchaos-system".into()),
            max_targets: Some(3),
            max_namespace_share_percent: Some(50),
        }
    }

    fn labelled() -> NamespaceFacts {
        NamespaceFacts {
            labels: [(STORMS_LABEL.to_owned(), STORMS_ALLOWED.to_owned())].into(),
            ..NamespaceFacts::default()
        }
    }

    #[test]
    fn a_labelled_namespace_may_be_stormed() {
        let facts = labelled();
        assert_eq!(
            guardrails().namespace_refusal("team-a", Some(&facts), &spec(KeySource::Synthetic)),
            None
        );
    }

    #[test]
    fn a_namespace_without_the_label_or_with_another_value_is_refused_naming_the_label() {
        for labels in [
            BTreeMap::new(),
            [(STORMS_LABEL.to_owned(), "yes".to_owned())].into(),
        ] {
            let facts = NamespaceFacts {
                labels,
                ..NamespaceFacts::default()
            };
            let why = guardrails()
                .namespace_refusal("team-b", Some(&facts), &spec(KeySource::Synthetic))
                .unwrap();
            assert!(why.contains("team-b"), "{why}");
            assert!(why.contains("mapchaos.io/storms=allowed"), "{why}");
        }
    }

    #[test]
    fn the_label_requirement_can_be_turned_off() {
        let off = Guardrails {
            require_namespace_label: false,
            ..guardrails()
        };
        let facts = NamespaceFacts::default();
        assert_eq!(
            off.namespace_refusal("team-b", Some(&facts), &spec(KeySource::Synthetic)),
            None
        );
        // Protection does not depend on the label requirement.
        assert!(
            off.namespace_refusal("kube-system", Some(&facts), &spec(KeySource::Synthetic))
                .is_some()
        );
    }

    #[test]
    fn protected_namespaces_are_refused_even_when_labelled() {
        let facts = labelled();
        for namespace in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "mapchaos-system",
            "payments",
        ] {
            let why = guardrails()
                .namespace_refusal(namespace, Some(&facts), &spec(KeySource::Synthetic))
                .unwrap_or_else(|| panic!("{namespace} must be protected"));
            assert!(why.contains("protected"), "{why}");
            assert!(why.contains(namespace), "{why}");
        }
    }

    #[test]
    fn a_missing_namespace_is_refused() {
        let why = guardrails()
            .namespace_refusal("ghost", None, &spec(KeySource::Synthetic))
            .unwrap();
        assert!(
            why.contains("ghost") && why.contains("does not exist"),
            "{why}"
        );
    }

    #[test]
    fn existing_keys_are_refused_only_where_the_annotation_forbids_them() {
        let mut facts = labelled();
        let rules = guardrails();
        assert_eq!(
            rules.namespace_refusal("team-a", Some(&facts), &spec(KeySource::Existing)),
            None
        );
        facts.annotations.insert(
            EXISTING_KEYS_ANNOTATION.into(),
            EXISTING_KEYS_FORBIDDEN.into(),
        );
        let why = rules
            .namespace_refusal("team-a", Some(&facts), &spec(KeySource::Existing))
            .unwrap();
        assert!(why.contains(EXISTING_KEYS_ANNOTATION), "{why}");
        assert_eq!(
            rules.namespace_refusal("team-a", Some(&facts), &spec(KeySource::Synthetic)),
            None,
            "synthetic keys are still allowed there"
        );
    }

    #[test]
    fn the_run_guard_lists_each_refused_namespace_with_its_reason() {
        let namespaces = BTreeMap::from([
            ("team-a".to_owned(), Some(labelled())),
            ("team-b".to_owned(), Some(NamespaceFacts::default())),
            ("kube-system".to_owned(), Some(labelled())),
        ]);
        let guard =
            guardrails().run_guard(&spec(KeySource::Synthetic), &namespaces, BTreeMap::new());
        assert_eq!(
            guard.refused_namespaces.keys().collect::<Vec<_>>(),
            ["kube-system", "team-b"]
        );
    }

    fn pod(namespace: &str, name: &str) -> CandidatePod {
        CandidatePod {
            name: name.into(),
            namespace: namespace.into(),
            has_sidecar: true,
            ..CandidatePod::default()
        }
    }

    #[test]
    fn a_run_over_the_target_cap_is_refused_and_one_at_the_cap_is_not() {
        let pods: Vec<CandidatePod> = (0..8).map(|i| pod("a", &format!("p{i}"))).collect();
        let guard = RunGuard {
            max_targets: Some(3),
            ..RunGuard::default()
        };
        let three: Vec<&CandidatePod> = pods.iter().take(3).collect();
        assert_eq!(guard.run_refusal(&three, &pods, &[]), None);
        let four: Vec<&CandidatePod> = pods.iter().take(4).collect();
        let why = guard.run_refusal(&four, &pods, &[]).unwrap();
        assert!(why.contains("4 pods") && why.contains("cap of 3"), "{why}");
    }

    #[test]
    fn the_namespace_share_counts_other_experiments_and_own_running_targets() {
        let pods: Vec<CandidatePod> = (0..4).map(|i| pod("a", &format!("p{i}"))).collect();
        let guard = RunGuard {
            max_namespace_share_percent: Some(50),
            ..RunGuard::default()
        };
        let two: Vec<&CandidatePod> = pods.iter().take(2).collect();
        assert_eq!(guard.run_refusal(&two, &pods, &[]), None, "2 of 4 is 50%");
        let three: Vec<&CandidatePod> = pods.iter().take(3).collect();
        assert!(guard.run_refusal(&three, &pods, &[]).is_some());

        let one: Vec<&CandidatePod> = pods.iter().take(1).collect();
        let busy = RunGuard {
            stormed_elsewhere: [("a".to_owned(), 2)].into(),
            ..guard.clone()
        };
        let why = busy.run_refusal(&one, &pods, &[]).unwrap();
        assert!(
            why.contains("3 of the 4") && why.contains("namespace a"),
            "{why}"
        );
        // Another namespace's storms do not count here.
        let elsewhere = RunGuard {
            stormed_elsewhere: [("b".to_owned(), 4)].into(),
            ..guard.clone()
        };
        assert_eq!(elsewhere.run_refusal(&two, &pods, &[]), None);

        let own_running = [
            TargetStatus {
                namespace: "a".into(),
                pod: "p3".into(),
                phase: TargetPhase::Running,
                ..TargetStatus::default()
            },
            TargetStatus {
                namespace: "a".into(),
                pod: "p2".into(),
                phase: TargetPhase::Completed,
                ..TargetStatus::default()
            },
        ];
        assert!(guard.run_refusal(&two, &pods, &own_running).is_some());
        assert_eq!(guard.run_refusal(&one, &pods, &own_running), None);
    }

    #[test]
    fn pods_without_a_sidecar_do_not_count_towards_the_share() {
        let mut pods: Vec<CandidatePod> = (0..2).map(|i| pod("a", &format!("p{i}"))).collect();
        pods.extend((0..6).map(|i| CandidatePod {
            has_sidecar: false,
            ..pod("a", &format!("plain{i}"))
        }));
        let guard = RunGuard {
            max_namespace_share_percent: Some(50),
            ..RunGuard::default()
        };
        let two: Vec<&CandidatePod> = pods.iter().take(2).collect();
        assert!(guard.run_refusal(&two, &pods, &[]).is_some());
    }

    #[test]
    fn without_caps_any_run_may_start() {
        let pods: Vec<CandidatePod> = (0..50).map(|i| pod("a", &format!("p{i}"))).collect();
        let all: Vec<&CandidatePod> = pods.iter().collect();
        assert_eq!(RunGuard::default().run_refusal(&all, &pods, &[]), None);
    }
}
