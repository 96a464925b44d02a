//! The reconciler's last step: carry out a [`Plan`]. Storm calls go to the
//! sidecars (signed, a bounded number at once); a storm call that fails is
//! not an error here, because the next observation shows the planner what
//! became of the storm. Then the Events, the status (server-side apply,
//! only when it changed) and, last, the finalizer.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use mapchaos_api::MapChaos;
use mapchaos_api::resource::{CREATED_BY_ANNOTATION, FINALIZER, UPDATED_BY_ANNOTATION};
use serde_json::{Value, json};

use crate::error::Error;
use crate::plan::{Action, Event, EventKind, Plan, PodRef};
use crate::storm_client::StormClient;

/// The field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "mapchaos-operator";
/// Storm calls in flight at once for one experiment.
pub const STORM_CALLS_IN_FLIGHT: usize = 16;
/// The Event reason for a storm a sidecar refused to start.
pub const STORM_REFUSED: &str = "StormRefused";

/// Carry out `plan` for `experiment`.
pub async fn act(
    api: &Api<MapChaos>,
    storms: &StormClient,
    recorder: &Recorder,
    experiment: &MapChaos,
    plan: &Plan,
) -> Result<(), Error> {
    let name = experiment.name_any();
    if plan.actions.contains(&Action::AddFinalizer) {
        // Nothing else is done before the finalizer is on: the patch
        // triggers the next reconcile, which plans with it.
        let mut finalizers = experiment.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        return patch_finalizers(api, experiment, finalizers).await;
    }

    let calls: Vec<_> = plan
        .actions
        .iter()
        .map(|action| storm_call(storms, action))
        .collect();
    let refusals: Vec<Event> = futures::stream::iter(calls)
        .buffer_unordered(STORM_CALLS_IN_FLIGHT)
        .collect::<Vec<Option<Event>>>()
        .await
        .into_iter()
        .flatten()
        .collect();

    let reference = experiment.object_ref(&());
    let attribution = attribution(experiment);
    for event in plan.events().chain(&refusals) {
        let published = recorder
            .publish(
                &KubeEvent {
                    type_: match event.kind {
                        EventKind::Normal => EventType::Normal,
                        EventKind::Warning => EventType::Warning,
                    },
                    reason: event.reason.to_owned(),
                    note: Some(truncate(&format!("{}{attribution}", event.message), 1000)),
                    action: "Reconcile".to_owned(),
                    secondary: event.pod.as_ref().map(pod_reference),
                },
                &reference,
            )
            .await;
        // An Event is news, not state: losing one must not stop the storms
        // from being tracked, so it is logged and the reconcile goes on.
        if let Err(error) = published {
            tracing::warn!(%error, reason = event.reason, experiment = %name, "cannot record an Event");
        }
    }

    let deleting = experiment.metadata.deletion_timestamp.is_some();
    if !deleting && experiment.status.as_ref() != Some(&plan.status) {
        let patch = Patch::Apply(json!({
            "apiVersion": MapChaos::api_version(&()),
            "kind": MapChaos::kind(&()),
            "status": plan.status,
        }));
        match api
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
            .await
        {
            // Server-side apply leaves a map or object whose every field it
            // removes (summary.exposures, summary.latency when a new run
            // starts) as null, which the CRD's schema then rejects
            // (kubernetes/kubernetes#103011). A merge patch of the difference
            // deletes such fields instead.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::debug!(experiment = %name, reason = %status.message, "status apply refused; writing the difference as a merge patch");
                let old = serde_json::to_value(&experiment.status).unwrap_or(Value::Null);
                let new = serde_json::to_value(&plan.status).unwrap_or(Value::Null);
                let patch = Patch::Merge(json!({ "status": merge_patch(&old, &new) }));
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                api.patch_status(&name, &params, &patch).await?;
            }
            result => {
                result?;
            }
        }
    }

    if plan.actions.contains(&Action::RemoveFinalizer) {
        let finalizers = experiment
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        patch_finalizers(api, experiment, finalizers).await?;
    }
    Ok(())
}

/// Replace `metadata.finalizers` with a merge patch that carries the
/// resourceVersion read, so another writer's change in between makes it fail
/// with a conflict (retried) instead of being overwritten.
async fn patch_finalizers(
    api: &Api<MapChaos>,
    experiment: &MapChaos,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let mut metadata = json!({ "finalizers": finalizers });
    if let Some(version) = &experiment.metadata.resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    api.patch(
        &experiment.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": metadata })),
    )
    .await?;
    Ok(())
}

/// One storm call; a refused start comes back as a Warning Event, since the
/// planner only sees that the storm never appeared.
async fn storm_call(storms: &StormClient, action: &Action) -> Option<Event> {
    match action {
        Action::StartStorm {
            endpoint,
            id,
            request,
        } => match storms.put(endpoint, id, request).await {
            Ok(_) => None,
            Err(error @ Error::StormRefused { .. }) => {
                tracing::warn!(%error, pod = %endpoint.pod, namespace = %endpoint.namespace, "the sidecar refused the storm");
                Some(Event {
                    kind: EventKind::Warning,
                    reason: STORM_REFUSED,
                    message: format!("{}/{}: {error}", endpoint.namespace, endpoint.pod),
                    pod: Some(PodRef {
                        namespace: endpoint.namespace.clone(),
                        name: endpoint.pod.clone(),
                        uid: String::new(),
                    }),
                })
            }
            Err(error) => {
                tracing::warn!(%error, pod = %endpoint.pod, namespace = %endpoint.namespace, "cannot start the storm");
                None
            }
        },
        Action::RenewLease {
            endpoint,
            id,
            request,
        } => {
            if let Err(error) = storms.put(endpoint, id, request).await {
                tracing::warn!(%error, pod = %endpoint.pod, namespace = %endpoint.namespace, "cannot renew the storm's lease");
            }
            None
        }
        Action::StopStorm { endpoint, id } => {
            // An unreachable sidecar stops the storm itself when its lease
            // runs out, so a failed stop is logged and not retried here.
            if let Err(error) = storms.delete(endpoint, id).await {
                tracing::warn!(%error, pod = %endpoint.pod, namespace = %endpoint.namespace, "cannot stop the storm; it stops at its lease");
            }
            None
        }
        Action::AddFinalizer | Action::RemoveFinalizer | Action::Event(_) => None,
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and
/// added members, `null` for removed ones, objects patched member by member,
/// anything else replaced whole.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before @ Value::Object(_)) if value.is_object() => {
                        patch.insert(key.clone(), merge_patch(before, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|key| !new.contains_key(*key)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Who the run is on, as every Event names it: " (created by alice,
/// updated by bob)", from the stamps the admission webhook wrote; "" when
/// there are none.
pub fn attribution(experiment: &MapChaos) -> String {
    let annotations = experiment.metadata.annotations.as_ref();
    let get = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .filter(|v| !v.is_empty())
    };
    match (get(CREATED_BY_ANNOTATION), get(UPDATED_BY_ANNOTATION)) {
        (Some(created), Some(updated)) if created != updated => {
            format!(" (created by {created}, updated by {updated})")
        }
        (Some(created), _) => format!(" (created by {created})"),
        (None, Some(updated)) => format!(" (updated by {updated})"),
        (None, None) => String::new(),
    }
}

fn pod_reference(pod: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
        ..ObjectReference::default()
    }
}

/// At most `max` bytes, cut on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests;
