//! One pod's worker: sets up its sandbox, runs init containers in order and then the app
//! containers, writes the pod's status back whenever it changes, and on deletion stops the
//! containers within the grace period, tears the sandbox down and removes the pod object.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::Context;
use crate::container::{self, InPod, Outcome, PodState, Slot, pod_key, publish};
use crate::env::PodFields;
use crate::error::Error;
use crate::network::PodNetwork;
use crate::sandbox::{self, Sandbox};
use crate::status::{self, ContainerRuntime, PodFacts};
use crate::volumes;

/// Why a pod's containers were asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopCause {
    /// `metadata.deletionTimestamp` was set: stop gracefully, then delete the object.
    Deleted,
    /// The object vanished (force delete): stop quickly, nothing left to update.
    Gone,
    /// The agent is shutting down: stop quickly, leave the object alone.
    Shutdown,
}

/// Runs `pod` until it is deleted (or the agent shuts down).
pub async fn run(
    ctx: Arc<Context>,
    updates: watch::Receiver<Arc<Pod>>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let pod = updates.borrow().clone();
    let key = pod_key(&pod);
    let (stop_tx, stop_rx) = watch::channel::<Option<Duration>>(None);
    let stop_watch = tokio::spawn(stop_when_asked(updates.clone(), gone, shutdown, stop_tx));
    // A finished pod has nothing to run; one already being deleted (seen again after our
    // own final write, or after an agent restart) only needs its object removed.
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if !terminal && pod.metadata.deletion_timestamp.is_none() {
        if let Err(e) = run_pod(&ctx, pod.clone(), updates.clone(), stop_rx).await {
            warn!(pod = %key, error = %format!("{e:#}"), "pod worker failed");
        }
    } else {
        drop(stop_rx);
    }
    let cause = stop_watch.await.unwrap_or(StopCause::Shutdown);
    if cause == StopCause::Deleted {
        let latest = updates.borrow().clone();
        delete_object(&ctx, &latest).await;
    }
    info!(pod = %key, ?cause, "pod finished");
}

async fn run_pod(
    ctx: &Arc<Context>,
    pod: Arc<Pod>,
    updates: watch::Receiver<Arc<Pod>>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> anyhow::Result<()> {
    let key = pod_key(&pod);
    let spec = pod.spec.clone().context("pod has no spec")?;
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let facts = PodFacts {
        pod_ip: None,
        host_ip: ctx.node_ip.to_string(),
        start_time: Some(start_time),
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                ContainerRuntime::init_pending(&c.name, c.image.as_deref().unwrap_or_default())
            })
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
                    ContainerRuntime::init_pending(&c.name, image)
                } else {
                    ContainerRuntime::creating(&c.name, image)
                }
            })
            .collect(),
    };
    let state = Arc::new(PodState::new(facts));
    let writer_done = CancellationToken::new();
    let writer = tokio::spawn(write_status(
        ctx.clone(),
        updates.clone(),
        state.clone(),
        writer_done.clone(),
    ));
    state.changed.notify_one();

    let dir = pod_dir(ctx, &pod);
    let sandbox = loop {
        match create_sandbox(ctx, &pod, &dir).await {
            Ok(s) => break Some(s),
            Err(e) => {
                warn!(pod = %key, error = %e, "sandbox not ready yet");
                publish(
                    ctx,
                    &pod,
                    EventType::Warning,
                    e.event_reason(),
                    &e.to_string(),
                )
                .await;
                state.update_pod(|f| {
                    for c in f.containers.iter_mut().chain(f.init_containers.iter_mut()) {
                        if let status::RunState::Waiting { message, .. } = &mut c.state {
                            *message = Some(e.to_string());
                        }
                    }
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => break None,
                }
            }
        }
    };

    if let Some((sandbox, fields)) = sandbox {
        info!(pod = %key, ip = %sandbox.network.ip, netns = %sandbox.network.netns, "sandbox ready");
        state.update_pod(|f| f.pod_ip = Some(sandbox.network.ip.to_string()));
        let in_pod = InPod {
            pod: pod.clone(),
            fields,
            sandbox_pid: sandbox.pause_pid,
            log_dir: dir.join("logs"),
        };
        run_containers(ctx, &in_pod, &state, &stop).await;
        // Everything has stopped or completed; the kubelet kills a finished pod's sandbox too.
        let offset = sandbox.network.offset;
        sandbox.destroy().await;
        ctx.pool.lock().expect("address pool lock").release(offset);
    }
    writer_done.cancel();
    let _ = writer.await;
    // A completed pod stays until it is deleted.
    while stop.borrow().is_none() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Init containers one after another, then all app containers together.
async fn run_containers(
    ctx: &Arc<Context>,
    in_pod: &InPod,
    state: &Arc<PodState>,
    stop: &watch::Receiver<Option<Duration>>,
) {
    let spec = in_pod.pod.spec.clone().unwrap_or_default();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let outcome = container::run(
            ctx.clone(),
            in_pod.clone(),
            c.clone(),
            Slot::Init(i),
            state.clone(),
            stop.clone(),
        )
        .await;
        if outcome != Outcome::Exited(0) {
            debug!(pod = %pod_key(&in_pod.pod), container = %c.name, ?outcome, "init did not complete");
            return;
        }
    }
    state.update_pod(|f| {
        for c in &mut f.containers {
            *c = ContainerRuntime::creating(&c.name, &c.image);
        }
    });
    let mut runners = JoinSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        runners.spawn(container::run(
            ctx.clone(),
            in_pod.clone(),
            c.clone(),
            Slot::App(i),
            state.clone(),
            stop.clone(),
        ));
    }
    while runners.join_next().await.is_some() {}
}

async fn create_sandbox(
    ctx: &Arc<Context>,
    pod: &Pod,
    dir: &std::path::Path,
) -> Result<(Sandbox, PodFields), Error> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    for sub in ["logs", "volumes", "etc"] {
        tokio::fs::create_dir_all(dir.join(sub))
            .await
            .map_err(|e| Error::Sandbox(format!("creating {}: {e}", dir.display())))?;
    }
    let previous_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok());
    let (ip, offset) = {
        let mut pool = ctx.pool.lock().expect("address pool lock");
        // A pod's IP never changes in Kubernetes, even when the agent restarts under it.
        previous_ip
            .and_then(|ip| pool.claim(ip).map(|offset| (ip, offset)))
            .or_else(|| pool.allocate())
            .ok_or_else(|| Error::Sandbox("pod address range exhausted".to_owned()))?
    };
    let network = PodNetwork::new(&uid, ip, offset);
    let release = |ctx: &Context| ctx.pool.lock().expect("address pool lock").release(offset);
    if let Err(e) = network.create(&ctx.bridge, &ctx.cidr).await {
        release(ctx);
        return Err(Error::Sandbox(format!("pod network: {e:#}")));
    }
    let fields = PodFields {
        pod_ip: ip.to_string(),
        host_ip: ctx.node_ip.to_string(),
        node_name: ctx.node_name.clone(),
        node_cpu_cores: ctx.resources.cpu_cores,
        node_memory_bytes: ctx.resources.memory_bytes,
    };
    let prepared = async {
        let volumes = volumes::prepare(&ctx.client, pod, &fields, &dir.join("volumes")).await?;
        let etc = dir.join("etc");
        write_etc(&etc, &name, &ip.to_string()).await?;
        let mounts = sandbox::plan_mounts(pod, &volumes, &etc)?;
        Sandbox::start(
            network.clone(),
            &name,
            &mounts,
            &ctx.state_dir.join("mountpoints"),
            &dir.join("logs").join("sandbox.log"),
        )
        .await
    };
    match prepared.await {
        Ok(sandbox) => Ok((sandbox, fields)),
        Err(e) => {
            network.delete().await;
            release(ctx);
            Err(e)
        }
    }
}

/// The pod's own /etc/hosts and /etc/hostname, as the kubelet writes them.
async fn write_etc(etc: &std::path::Path, name: &str, ip: &str) -> Result<(), Error> {
    let hosts = format!(
        "# Kubernetes-managed hosts file (mapchaos-node).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
    );
    let fail = |e: std::io::Error| Error::Sandbox(format!("writing pod /etc files: {e}"));
    tokio::fs::write(etc.join("hosts"), hosts)
        .await
        .map_err(fail)?;
    tokio::fs::write(etc.join("hostname"), format!("{name}\n"))
        .await
        .map_err(fail)?;
    Ok(())
}

pub fn pod_dir(ctx: &Context, pod: &Pod) -> PathBuf {
    ctx.state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

/// Writes the pod's status whenever the runtime facts change, skipping unchanged ones;
/// flushes once more when told to finish.
async fn write_status(
    ctx: Arc<Context>,
    updates: watch::Receiver<Arc<Pod>>,
    state: Arc<PodState>,
    done: CancellationToken,
) {
    let mut last: Option<PodStatus> = None;
    loop {
        let finishing = tokio::select! {
            _ = state.changed.notified() => false,
            _ = done.cancelled() => true,
        };
        // Let a burst of changes (several containers starting) settle into one write.
        if !finishing {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut pod = (*updates.borrow().clone()).clone();
        if let Some(prev) = &last {
            pod.status = Some(merge_previous(pod.status.take(), prev));
        }
        let status = status::compute(&pod, &state.snapshot(), Timestamp::now());
        if last.as_ref() != Some(&status) {
            match patch_status(&ctx, &pod, &status).await {
                Ok(()) => last = Some(status),
                Err(e) => {
                    warn!(pod = %pod_key(&pod), error = %format!("{e:#}"), "writing pod status failed");
                    // Retry on the next change, or shortly.
                    let state = state.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        state.changed.notify_one();
                    });
                }
            }
        }
        if finishing {
            return;
        }
    }
}

/// The watch may lag behind our own writes: for the conditions we own, what we wrote is the
/// truth (keeps transition times); others' conditions (readiness gates) come from the watch.
fn merge_previous(watched: Option<PodStatus>, written: &PodStatus) -> PodStatus {
    let mut s = watched.unwrap_or_default();
    let mut conditions: Vec<_> = s
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !status::OWN_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    conditions.extend(written.conditions.iter().flatten().cloned());
    s.conditions = Some(conditions);
    s
}

async fn patch_status(ctx: &Context, pod: &Pod, status: &PodStatus) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    // The uid makes the patch fail rather than touch a new pod that reuses the name.
    let patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching status of {}", pod_key(pod)))?;
    Ok(())
}

/// The kubelet's last word on a gracefully deleted pod: delete it with grace 0.
async fn delete_object(ctx: &Context, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api.delete(name, &params).await {
        Ok(_) => info!(pod = %pod_key(pod), "pod object deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(pod = %pod_key(pod), error = %e, "deleting pod object failed"),
    }
}

/// Watches for the reasons to stop and hands the containers their grace period.
async fn stop_when_asked(
    mut updates: watch::Receiver<Arc<Pod>>,
    gone: CancellationToken,
    shutdown: CancellationToken,
    stop: watch::Sender<Option<Duration>>,
) -> StopCause {
    const QUICK: Duration = Duration::from_secs(2);
    let cause = loop {
        if let Some(grace) = deletion_grace(&updates.borrow_and_update()) {
            let _ = stop.send(Some(grace));
            break StopCause::Deleted;
        }
        tokio::select! {
            changed = updates.changed() => if changed.is_err() {
                let _ = stop.send(Some(QUICK));
                break StopCause::Gone;
            },
            _ = gone.cancelled() => {
                let _ = stop.send(Some(QUICK));
                break StopCause::Gone;
            }
            _ = shutdown.cancelled() => {
                let _ = stop.send(Some(QUICK));
                break StopCause::Shutdown;
            }
        }
    };
    // Keep the sender alive until every receiver is gone so a late `changed()` does not
    // read a closed channel as a new request.
    stop.closed().await;
    cause
}

/// The grace period to stop a pod that is being deleted, or `None` while it is not.
fn deletion_grace(pod: &Pod) -> Option<Duration> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    #[test]
    fn deletion_uses_the_deletion_grace_period_then_the_spec() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(12),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(deletion_grace(&pod), None);
        pod.metadata = ObjectMeta {
            deletion_timestamp: Some(Time(Timestamp::now())),
            ..ObjectMeta::default()
        };
        assert_eq!(deletion_grace(&pod), Some(Duration::from_secs(12)));
        pod.metadata.deletion_grace_period_seconds = Some(3);
        assert_eq!(deletion_grace(&pod), Some(Duration::from_secs(3)));
    }
}
