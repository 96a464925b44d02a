//! Which pods a MapChaos selector matches (Chaos Mesh's field names and
//! meaning) and which of those can be stormed: Running, Ready, not being
//! deleted, with an IP and the mapchaos sidecar.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mapchaos_api::spec::{LabelSelectorRequirement, PodSelector};

/// What the planner needs to know about one pod, taken from the Pod object
/// by the observe step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidatePod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `status.phase` ("Running", "Pending", ...).
    pub phase: String,
    /// The pod's `Ready` condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// The pod runs the mapchaos sidecar (injected or declared).
    pub has_sidecar: bool,
    pub pod_ip: Option<String>,
    pub creation: Option<Time>,
}

/// The namespaces to list pods in: `selector.namespaces`, or the resource's
/// own; with `pods`, the namespaces it names.
pub fn namespaces(selector: &PodSelector, own_namespace: &str) -> Vec<String> {
    let mut namespaces: Vec<String> = if !selector.pods.is_empty() {
        selector.pods.keys().cloned().collect()
    } else if selector.namespaces.is_empty() {
        vec![own_namespace.to_owned()]
    } else {
        selector.namespaces.clone()
    };
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// Whether `pod` matches the selector. With `pods`, only the named pods
/// match (their namespaces come from its keys); the label, expression and
/// annotation selectors narrow either way, all of them together.
pub fn matches(selector: &PodSelector, own_namespace: &str, pod: &CandidatePod) -> bool {
    let in_scope = if selector.pods.is_empty() {
        namespaces(selector, own_namespace).contains(&pod.namespace)
    } else {
        selector
            .pods
            .get(&pod.namespace)
            .is_some_and(|names| names.contains(&pod.name))
    };
    in_scope
        && contains_all(&pod.labels, &selector.label_selectors)
        && contains_all(&pod.annotations, &selector.annotation_selectors)
        && selector
            .expression_selectors
            .iter()
            .all(|requirement| requirement_holds(requirement, &pod.labels))
}

fn contains_all(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(key, value)| have.get(key) == Some(value))
}

/// `matchExpressions` semantics; an unknown operator matches nothing (the
/// spec's validation refuses it before selection runs).
fn requirement_holds(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| requirement.values.contains(v)),
        "NotIn" => value.is_none_or(|v| !requirement.values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Why a matching pod cannot be stormed, or `None` when it can.
pub fn ineligible(pod: &CandidatePod) -> Option<&'static str> {
    if pod.terminating {
        Some("being deleted")
    } else if pod.phase != "Running" {
        Some("not Running")
    } else if !pod.ready {
        Some("not Ready")
    } else if !pod.has_sidecar {
        Some("has no mapchaos sidecar")
    } else if pod.pod_ip.as_deref().is_none_or(str::is_empty) {
        Some("has no pod IP")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> CandidatePod {
        CandidatePod {
            name: name.into(),
            namespace: namespace.into(),
            uid: format!("uid-{name}"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            phase: "Running".into(),
            ready: true,
            has_sidecar: true,
            pod_ip: Some("10.0.0.1".into()),
            ..CandidatePod::default()
        }
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| (*v).into()).collect(),
        }
    }

    #[test]
    fn namespaces_default_to_the_resources_own() {
        let mut selector = PodSelector::default();
        assert_eq!(namespaces(&selector, "shop"), ["shop"]);
        selector.namespaces = vec!["b".into(), "a".into(), "b".into()];
        assert_eq!(namespaces(&selector, "shop"), ["a", "b"]);
        selector.pods = BTreeMap::from([("c".into(), vec!["p".into()])]);
        assert_eq!(namespaces(&selector, "shop"), ["c"]);
    }

    #[test]
    fn labels_and_annotations_must_all_match_in_the_selected_namespaces() {
        let selector = PodSelector {
            label_selectors: BTreeMap::from([("app".into(), "cart".into())]),
            annotation_selectors: BTreeMap::from([("chaos".into(), "ok".into())]),
            ..PodSelector::default()
        };
        let mut cart = pod("shop", "cart-0", &[("app", "cart")]);
        assert!(!matches(&selector, "shop", &cart), "annotation missing");
        cart.annotations.insert("chaos".into(), "ok".into());
        assert!(matches(&selector, "shop", &cart));
        assert!(!matches(&selector, "other", &cart), "other namespace");
        let web = pod("shop", "web-0", &[("app", "web")]);
        assert!(!matches(&selector, "shop", &web));
    }

    #[test]
    fn expressions_follow_match_expressions() {
        let labelled = pod("ns", "a", &[("tier", "cache")]);
        let bare = pod("ns", "b", &[]);
        let cases = [
            (requirement("tier", "In", &["cache", "db"]), true, false),
            (requirement("tier", "NotIn", &["db"]), true, true),
            (requirement("tier", "NotIn", &["cache"]), false, true),
            (requirement("tier", "Exists", &[]), true, false),
            (requirement("tier", "DoesNotExist", &[]), false, true),
            (requirement("tier", "Near", &["cache"]), false, false),
        ];
        for (requirement, on_labelled, on_bare) in cases {
            let selector = PodSelector {
                expression_selectors: vec![requirement.clone()],
                ..PodSelector::default()
            };
            assert_eq!(
                matches(&selector, "ns", &labelled),
                on_labelled,
                "{requirement:?}"
            );
            assert_eq!(matches(&selector, "ns", &bare), on_bare, "{requirement:?}");
        }
    }

    #[test]
    fn pods_by_name_select_exactly_those_pods() {
        let selector = PodSelector {
            pods: BTreeMap::from([("shop".into(), vec!["cart-1".into()])]),
            ..PodSelector::default()
        };
        assert!(matches(&selector, "elsewhere", &pod("shop", "cart-1", &[])));
        assert!(!matches(&selector, "shop", &pod("shop", "cart-0", &[])));
        assert!(!matches(&selector, "shop", &pod("other", "cart-1", &[])));
    }

    #[test]
    fn only_running_ready_pods_with_the_sidecar_and_an_ip_are_eligible() {
        let good = pod("ns", "a", &[]);
        assert_eq!(ineligible(&good), None);
        type Spoil = fn(&mut CandidatePod);
        let cases: [(Spoil, &str); 5] = [
            (|p| p.terminating = true, "being deleted"),
            (|p| p.phase = "Pending".into(), "not Running"),
            (|p| p.ready = false, "not Ready"),
            (|p| p.has_sidecar = false, "has no mapchaos sidecar"),
            (|p| p.pod_ip = None, "has no pod IP"),
        ];
        for (spoil, reason) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            assert_eq!(ineligible(&bad), Some(reason));
        }
    }
}
