//! The reconciler's first step: what the cluster and the sidecars say now.
//! Pods are listed fresh from the API server in the experiment's namespaces
//! (a cache that had not synced would make running targets look deleted),
//! and the current run's storms are asked about concurrently, a bounded
//! number at a time.
//!
//! A pod carries the mapchaos sidecar when one of its containers (or a
//! native-sidecar init container) is named [`SIDECAR_CONTAINER`], or when it
//! is labelled [`SIDECAR_LABEL`]`: "true"` (the label the chart's PodMonitor
//! selects sidecars by).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use mapchaos_api::MapChaos;

use crate::error::Error;
use crate::plan::{self, StormObservation};
use crate::policy::NamespaceFacts;
use crate::probe_client::ProbeRunner;
use crate::probes;
use crate::selector::CandidatePod;
use crate::storm_client::StormClient;
use mapchaos_api::probe::ProbeAttempt;

/// The name of the sidecar's container in a target pod.
pub const SIDECAR_CONTAINER: &str = "mapchaos-sidecar";
/// The label that declares a pod's sidecar, whatever its container's name.
pub const SIDECAR_LABEL: &str = "mapchaos.io/sidecar";
/// Storm GETs in flight at once for one experiment.
pub const STORM_GETS_IN_FLIGHT: usize = 16;

/// What the planner needs of one Pod.
pub fn candidate(pod: &Pod) -> CandidatePod {
    let metadata = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let labelled = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SIDECAR_LABEL))
        .is_some_and(|value| value == "true");
    let has_sidecar = labelled
        || spec.is_some_and(|spec| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .any(|c| c.name == SIDECAR_CONTAINER)
        });
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    CandidatePod {
        name: metadata.name.clone().unwrap_or_default(),
        namespace: metadata.namespace.clone().unwrap_or_default(),
        uid: metadata.uid.clone().unwrap_or_default(),
        labels: metadata.labels.clone().unwrap_or_default(),
        annotations: metadata.annotations.clone().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        ready,
        terminating: metadata.deletion_timestamp.is_some(),
        has_sidecar,
        pod_ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        creation: metadata.creation_timestamp.clone(),
    }
}

/// Every pod in the namespaces the experiment looks at.
pub async fn pods(client: &Client, experiment: &MapChaos) -> Result<Vec<CandidatePod>, Error> {
    let mut pods = Vec::new();
    for namespace in plan::namespaces_to_observe(experiment) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let list = api.list(&ListParams::default()).await?;
        pods.extend(list.items.iter().map(candidate));
    }
    Ok(pods)
}

/// The Namespace objects storms may go to (`None`: it does not exist), for
/// the guardrails' checks when a run starts.
pub async fn namespaces(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, Option<NamespaceFacts>>, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut facts = BTreeMap::new();
    for name in names {
        let namespace = api.get_opt(name).await?;
        facts.insert(name.clone(), namespace.as_ref().map(NamespaceFacts::of));
    }
    Ok(facts)
}

/// The current run's unfinished storms, by id.
pub async fn storms(
    storm_client: &StormClient,
    experiment: &MapChaos,
) -> BTreeMap<String, StormObservation> {
    let calls: Vec<_> = plan::storms_to_observe(experiment)
        .into_iter()
        .map(|(endpoint, id)| async move {
            let observation = storm_client.observe(&endpoint, &id).await;
            (id, observation)
        })
        .collect();
    futures::stream::iter(calls)
        .buffer_unordered(STORM_GETS_IN_FLIGHT)
        .collect()
        .await
}

/// One attempt of every `during` probe due now, by (run, probe name),
/// made concurrently.
pub async fn during_probes(
    runner: &dyn ProbeRunner,
    experiment: &MapChaos,
    now: jiff::Timestamp,
) -> BTreeMap<(u32, String), ProbeAttempt> {
    let calls = probes::during_due(experiment, now)
        .into_iter()
        .map(|(run, probe)| async move {
            let attempt = runner.attempt(&probe).await;
            ((run, probe.name), attempt)
        });
    futures::future::join_all(calls).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(containers: &[&str], ready: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("cart-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|name| Container {
                        name: (*name).into(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.1.2.3".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn a_pod_with_the_sidecar_container_is_a_candidate() {
        let with = candidate(&pod(&["app", SIDECAR_CONTAINER], "True"));
        assert!(with.has_sidecar && with.ready);
        assert_eq!(with.pod_ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(crate::selector::ineligible(&with), None);

        let without = candidate(&pod(&["app"], "False"));
        assert!(!without.has_sidecar && !without.ready);
        assert_eq!(
            crate::selector::ineligible(&without),
            Some("not Ready"),
            "readiness is checked before the sidecar"
        );
    }

    #[test]
    fn the_sidecar_label_counts_whatever_the_container_is_named() {
        let mut labelled = pod(&["app", "map"], "True");
        labelled.metadata.labels = Some([(SIDECAR_LABEL.to_owned(), "true".to_owned())].into());
        assert!(candidate(&labelled).has_sidecar);
        labelled.metadata.labels = Some([(SIDECAR_LABEL.to_owned(), "no".to_owned())].into());
        assert!(!candidate(&labelled).has_sidecar);
    }

    #[test]
    fn a_native_sidecar_init_container_counts() {
        let mut native = pod(&["app"], "True");
        native.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: SIDECAR_CONTAINER.into(),
            restart_policy: Some("Always".into()),
            ..Container::default()
        }]);
        assert!(candidate(&native).has_sidecar);
    }
}
