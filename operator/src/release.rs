//! `mapchaos release`: what the chart runs before `helm uninstall` removes
//! the operator. It scales the operator's Deployment to zero, waits until no
//! replica runs, then takes the operator's finalizer off every MapChaos, so
//! none is left that cannot be deleted once the operator is gone. Storms
//! still running stop at their lease (30 s) and restore by themselves; the
//! order matters, since a running operator would put the finalizer back.
//! Before all that it deletes the MapChaos admission webhook configurations:
//! with `failurePolicy: Fail` and no operator left to answer them, every
//! MapChaos write, the finalizer patches here included, would be refused.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DeleteParams;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mapchaos_api::MapChaos;
use mapchaos_api::resource::FINALIZER;
use serde_json::json;
use tokio::time::Instant;

use crate::error::Error;

/// What to release.
#[derive(Debug, Clone)]
pub struct ReleaseConfig {
    /// The operator's Deployment, as namespace and name.
    pub namespace: String,
    pub deployment: String,
    /// Where to release MapChaos; empty: every namespace.
    pub watch_namespaces: Vec<String>,
    /// How long the operator may take to stop.
    pub timeout: Duration,
    /// The MapChaos admission webhook configurations (validating and
    /// mutating of each name) to delete first.
    pub admission_webhooks: Vec<String>,
}

/// What was done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// MapChaos whose finalizer was removed.
    pub released: usize,
    /// Of those, the ones whose storms had not all finished: they stop at
    /// their lease.
    pub with_running_storms: usize,
}

pub async fn release(client: Client, config: &ReleaseConfig) -> Result<Released, Error> {
    for name in &config.admission_webhooks {
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        for deleted in [
            validating
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            mutating
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ] {
            match deleted {
                Ok(()) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        tracing::info!(%name, "deleted the MapChaos admission webhooks");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    match deployments.get_opt(&config.deployment).await? {
        Some(_) => {
            deployments
                .patch(
                    &config.deployment,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
                )
                .await?;
            tracing::info!(namespace = %config.namespace, deployment = %config.deployment, "scaled the operator to 0");
            wait_stopped(&deployments, config).await?;
        }
        None => {
            tracing::info!(namespace = %config.namespace, deployment = %config.deployment, "no operator Deployment; releasing what is left");
        }
    }

    let apis: Vec<Api<MapChaos>> = if config.watch_namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config
            .watch_namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut done = Released::default();
    for api in apis {
        for experiment in api.list(&ListParams::default()).await? {
            let finalizers = experiment.finalizers();
            if !finalizers.iter().any(|f| f == FINALIZER) {
                continue;
            }
            let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
            let namespace = experiment.namespace().unwrap_or_default();
            let name = experiment.name_any();
            // The resourceVersion makes it a compare-and-swap: a finalizer
            // someone else added meanwhile is not dropped by this write.
            let patch = json!({
                "metadata": {
                    "finalizers": rest,
                    "resourceVersion": experiment.resource_version(),
                }
            });
            Api::<MapChaos>::namespaced(client.clone(), &namespace)
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let running = experiment
                .status
                .as_ref()
                .is_some_and(|s| s.targets.iter().any(|t| !t.phase.is_final()));
            tracing::info!(%namespace, %name, storms_running = running, "released");
            done.released += 1;
            done.with_running_storms += usize::from(running);
        }
    }
    Ok(done)
}

async fn wait_stopped(deployments: &Api<Deployment>, config: &ReleaseConfig) -> Result<(), Error> {
    let deadline = Instant::now() + config.timeout;
    loop {
        let running = deployments
            .get_opt(&config.deployment)
            .await?
            .and_then(|d| d.status)
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        if running == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Release(format!(
                "{running} operator replica(s) of {}/{} still run after {:?}; not releasing \
                 finalizers a running operator would put back",
                config.namespace, config.deployment, config.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
