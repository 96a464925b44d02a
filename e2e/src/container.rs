//! One container's life in a pod: resolve its image and env, run it as a process in the
//! pod's namespaces, probe it, restart it per restartPolicy with crash back-off, and stop it
//! gracefully (SIGTERM, grace period, SIGKILL) when asked.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::Context;
use crate::env::{self, EnvSources, Environment, PodFields};
use crate::error::Error;
use crate::host;
use crate::image;
use crate::probe::{self, ProbeTarget, Timing, Tracker};
use crate::restart;
use crate::status::{ContainerRuntime, PodFacts, RunState, Terminated};
use crate::volumes;

/// What the pod worker and its containers share: the runtime facts the status is computed
/// from, and a wake-up for the status writer whenever they change.
#[derive(Debug, Default)]
pub struct PodState {
    facts: Mutex<PodFacts>,
    pub changed: Notify,
}

/// Which container of the pod a runner owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Init(usize),
    App(usize),
}

impl PodState {
    pub fn new(facts: PodFacts) -> Self {
        Self {
            facts: Mutex::new(facts),
            changed: Notify::new(),
        }
    }

    pub fn snapshot(&self) -> PodFacts {
        self.facts.lock().expect("pod state lock").clone()
    }

    pub fn update_pod(&self, f: impl FnOnce(&mut PodFacts)) {
        f(&mut self.facts.lock().expect("pod state lock"));
        self.changed.notify_one();
    }

    fn update(&self, slot: Slot, f: impl FnOnce(&mut ContainerRuntime)) {
        self.update_pod(|facts| {
            let c = match slot {
                Slot::Init(i) => facts.init_containers.get_mut(i),
                Slot::App(i) => facts.containers.get_mut(i),
            };
            if let Some(c) = c {
                f(c);
            }
        });
    }

    fn container(&self, slot: Slot) -> Option<ContainerRuntime> {
        let facts = self.facts.lock().expect("pod state lock");
        match slot {
            Slot::Init(i) => facts.init_containers.get(i).cloned(),
            Slot::App(i) => facts.containers.get(i).cloned(),
        }
    }
}

/// The sandbox facts a container needs to run in it.
#[derive(Clone, Debug)]
pub struct InPod {
    pub pod: Arc<Pod>,
    pub fields: PodFields,
    pub sandbox_pid: u32,
    pub log_dir: PathBuf,
}

/// How a runner ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to completion and will not be restarted (exit code of the last run).
    Exited(i32),
    /// Stopped on request.
    Stopped,
}

/// Runs one container until it is done for good or `stop` carries a grace period.
pub async fn run(
    ctx: Arc<Context>,
    in_pod: InPod,
    container: Container,
    slot: Slot,
    state: Arc<PodState>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Outcome {
    let pod = in_pod.pod.clone();
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_owned());
    let pod_grace = Duration::from_secs(
        spec.and_then(|s| s.termination_grace_period_seconds)
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(30),
    );
    let image_ref = container.image.clone().unwrap_or_default();
    // Back-off counters: runs that ended, and attempts that never got a process.
    let mut crashes = 0u32;
    let mut failed_starts = 0u32;
    let mut runs = 0u32;
    loop {
        if stop.borrow().is_some() {
            return Outcome::Stopped;
        }
        let prepared = prepare(&ctx, &in_pod, &container).await;
        let (argv, env, workdir, image_id) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let reason = e.reason();
                warn!(pod = %pod_key(&pod), container = %container.name, %reason, error = %e, "container cannot start");
                state.update(slot, |c| {
                    c.state = RunState::Waiting {
                        reason: reason.to_owned(),
                        message: Some(e.to_string()),
                    };
                    c.ready = false;
                });
                publish(
                    &ctx,
                    &pod,
                    EventType::Warning,
                    e.event_reason(),
                    &e.to_string(),
                )
                .await;
                failed_starts += 1;
                let mut wait = restart::delay(failed_starts + 1);
                if reason == "ErrImagePull" {
                    // Kubelet alternates ErrImagePull with ImagePullBackOff while it waits.
                    let shown = Duration::from_secs(2).min(wait);
                    if stopped_during(&mut stop, shown).await {
                        return Outcome::Stopped;
                    }
                    wait -= shown;
                    state.update(slot, |c| {
                        c.state = RunState::Waiting {
                            reason: "ImagePullBackOff".to_owned(),
                            message: Some(format!("Back-off pulling image {image_ref:?}: {e}")),
                        };
                    });
                }
                if stopped_during(&mut stop, wait).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };

        let log_path = in_pod.log_dir.join(format!("{}.log", container.name));
        let child = spawn(&in_pod, &argv, &env, &workdir, &log_path, runs);
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                state.update(slot, |c| {
                    c.state = RunState::Waiting {
                        reason: e.reason().to_owned(),
                        message: Some(e.to_string()),
                    };
                });
                failed_starts += 1;
                if stopped_during(&mut stop, restart::delay(failed_starts + 1)).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };
        failed_starts = 0;
        let pid = child.id().unwrap_or_default();
        let container_id = format!("mapchaos://{pid}");
        let started_at = Timestamp::now();
        let started_instant = Instant::now();
        let has_startup = container.startup_probe.is_some();
        let has_readiness = container.readiness_probe.is_some();
        state.update(slot, |c| {
            if runs > 0 {
                c.restart_count += 1;
            }
            c.image_id = Some(image_id.clone());
            c.state = RunState::Running {
                started_at,
                container_id: container_id.clone(),
            };
            c.started = !has_startup;
            c.ready = matches!(slot, Slot::App(_)) && !has_startup && !has_readiness;
        });
        runs += 1;
        info!(pod = %pod_key(&pod), container = %container.name, pid, ?argv, log = %log_path.display(), "container started");
        publish(
            &ctx,
            &pod,
            EventType::Normal,
            "Started",
            &format!("Started container {}", container.name),
        )
        .await;

        let probes_done = CancellationToken::new();
        let (unhealthy_tx, mut unhealthy_rx) = mpsc::channel::<String>(1);
        if matches!(slot, Slot::App(_)) {
            let target = ProbeTarget {
                pod_ip: in_pod
                    .fields
                    .pod_ip
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                sandbox_pid: in_pod.sandbox_pid,
                env: env.vars().to_vec(),
            };
            tokio::spawn(run_probes(
                ctx.clone(),
                pod.clone(),
                container.clone(),
                slot,
                state.clone(),
                target,
                unhealthy_tx,
                probes_done.clone(),
            ));
        }

        let (exit, how): (ExitStatus, &str) = tokio::select! {
            status = child.wait() => match status {
                Ok(s) => (s, "exited"),
                Err(e) => {
                    warn!(pod = %pod_key(&pod), container = %container.name, error = %e, "waiting for container failed");
                    (ExitStatus::from_raw(255 << 8), "was lost")
                }
            },
            grace = wait_stop(&mut stop) => {
                probes_done.cancel();
                publish(&ctx, &pod, EventType::Normal, "Killing", &format!("Stopping container {}", container.name)).await;
                let (status, how) = terminate(&mut child, pid, grace).await;
                let t = record_exit(&state, slot, status, started_at, &container_id);
                log_footer(&log_path, runs, &t, how);
                info!(pod = %pod_key(&pod), container = %container.name, pid, exit_code = t.exit_code, how, "container stopped");
                return Outcome::Stopped;
            }
            Some(why) = unhealthy_rx.recv() => {
                publish(&ctx, &pod, EventType::Normal, "Killing", &format!("Container {} {why}, will be restarted", container.name)).await;
                terminate(&mut child, pid, pod_grace).await
            }
        };
        probes_done.cancel();
        // Whatever the main process left behind in its process group goes with it.
        host::kill("KILL", -i64::from(pid)).await;
        let terminated = record_exit(&state, slot, exit, started_at, &container_id);
        log_footer(&log_path, runs, &terminated, how);
        info!(pod = %pod_key(&pod), container = %container.name, pid, exit_code = terminated.exit_code, "container exited");

        let again = match slot {
            Slot::Init(_) => terminated.exit_code != 0 && policy != "Never",
            Slot::App(_) => restart::should_restart(&policy, terminated.exit_code),
        };
        if !again {
            return Outcome::Exited(terminated.exit_code);
        }
        if started_instant.elapsed() >= restart::RESET_AFTER {
            crashes = 0;
        }
        crashes += 1;
        let delay = restart::delay(crashes);
        state.update(slot, |c| {
            c.last_terminated = Some(terminated.clone());
            if !delay.is_zero() {
                c.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".to_owned(),
                    message: Some(format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs(),
                        container.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.uid.as_deref().unwrap_or_default(),
                    )),
                };
            }
        });
        if !delay.is_zero() {
            publish(
                &ctx,
                &pod,
                EventType::Warning,
                "BackOff",
                "Back-off restarting failed container",
            )
            .await;
        }
        if stopped_during(&mut stop, delay).await {
            return Outcome::Stopped;
        }
    }
}

/// Image, env and working directory for one run; fetched afresh each run, as a restart
/// picks up changed ConfigMaps and Secrets.
async fn prepare(
    ctx: &Context,
    in_pod: &InPod,
    container: &Container,
) -> Result<(Vec<String>, Environment, String, String), Error> {
    let resolved = ctx
        .images
        .resolve(container.image.as_deref().unwrap_or_default())?;
    let image_id = image::image_id(resolved);
    let image = &image::staged(resolved, std::path::Path::new(image::STAGE_DIR))?;
    let pod = &in_pod.pod;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (config_maps, secrets) = env::referenced_objects(container);
    let mut sources = EnvSources::default();
    let text = |data: std::collections::BTreeMap<String, Vec<u8>>| {
        data.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    let config = |e: Error| Error::CreateContainerConfig(e.to_string());
    for name in config_maps {
        if let Some(data) = volumes::fetch_config_map(&ctx.client, namespace, &name)
            .await
            .map_err(config)?
        {
            sources.config_maps.insert(name, text(data));
        }
    }
    for name in secrets {
        if let Some(data) = volumes::fetch_secret(&ctx.client, namespace, &name)
            .await
            .map_err(config)?
        {
            sources.secrets.insert(name, text(data));
        }
    }
    let mut base = Environment::default();
    base.set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    );
    base.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    base.set("HOME", "/root".to_owned());
    for (k, v) in &image.env {
        base.set(k, v.clone());
    }
    // There is no kube-proxy, so the `kubernetes` Service's ClusterIP leads nowhere: point
    // in-cluster clients at the API server's real address instead.
    let (host, port) = (&ctx.api_host, ctx.api_port);
    base.set("KUBERNETES_SERVICE_HOST", host.clone());
    base.set("KUBERNETES_SERVICE_PORT", port.to_string());
    base.set("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string());
    base.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    base.set(
        &format!("KUBERNETES_PORT_{port}_TCP"),
        format!("tcp://{host}:{port}"),
    );
    base.set(
        &format!("KUBERNETES_PORT_{port}_TCP_PROTO"),
        "tcp".to_owned(),
    );
    base.set(
        &format!("KUBERNETES_PORT_{port}_TCP_PORT"),
        port.to_string(),
    );
    base.set(&format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone());
    let env = env::resolve(pod, container, &in_pod.fields, &sources, base)?;
    let expand = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| env.expand(s)).collect()
    };
    let argv = image::argv(image, &expand(&container.command), &expand(&container.args));
    let workdir = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_owned());
    Ok((argv, env, workdir, image_id))
}

fn spawn(
    in_pod: &InPod,
    argv: &[String],
    env: &Environment,
    workdir: &str,
    log_path: &std::path::Path,
    restart: u32,
) -> Result<Child, Error> {
    use std::io::Write as _;
    let start_err = |e: std::io::Error| Error::Start(format!("starting container: {e}"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(start_err)?;
    let _ = writeln!(
        log,
        "--- mapchaos-node: run {} started at {} ---",
        restart + 1,
        Timestamp::now()
    );
    let log_err = log.try_clone().map_err(start_err)?;
    let target = in_pod.sandbox_pid.to_string();
    // `--wdns` changes directory inside the pod's mount namespace (`--wd` would resolve the
    // path before entering it); util-linux only takes its value in the `=` form.
    let wdns = format!("--wdns={workdir}");
    Command::new("nsenter")
        .args([
            "--target", &target, "--net", "--mount", "--uts", &wdns, "--",
        ])
        .args(argv)
        .env_clear()
        .envs(env.vars().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(start_err)
}

fn record_exit(
    state: &PodState,
    slot: Slot,
    status: ExitStatus,
    started_at: Timestamp,
    container_id: &str,
) -> Terminated {
    let (exit_code, signal) = status_terminated(status);
    let terminated = Terminated {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
        message: None,
        started_at,
        finished_at: Timestamp::now(),
        container_id: container_id.to_owned(),
    };
    state.update(slot, |c| {
        c.state = RunState::Terminated(terminated.clone());
        c.ready = false;
        c.started = false;
    });
    terminated
}

/// Exit code and signal as the container status reports them (128+n when killed by n).
fn status_terminated(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}

/// SIGTERM, up to `grace` for the process to go, then SIGKILL to its whole process group.
/// Says which of the two ended it.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) -> (ExitStatus, &'static str) {
    host::kill("TERM", i64::from(pid)).await;
    let ended = match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => (status, "stopped by SIGTERM"),
        _ => {
            host::kill("KILL", -i64::from(pid)).await;
            let status = child
                .wait()
                .await
                // A raw wait status of 9 reads as "killed by SIGKILL".
                .unwrap_or_else(|_| ExitStatus::from_raw(9));
            (status, "killed by SIGKILL after the grace period")
        }
    };
    host::kill("KILL", -i64::from(pid)).await;
    ended
}

/// Closes a run in the container's log, so a reader sees how each run ended.
fn log_footer(log_path: &std::path::Path, run: u32, exit: &Terminated, how: &str) {
    use std::io::Write as _;
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(log_path) {
        let _ = writeln!(
            log,
            "--- mapchaos-node: run {run} {how}: exit code {}{} at {} ---",
            exit.exit_code,
            exit.signal
                .map(|s| format!(", signal {s}"))
                .unwrap_or_default(),
            Timestamp::now()
        );
    }
}

/// Resolves with the grace period once the pod asks its containers to stop.
async fn wait_stop(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Sleeps `delay`; true when a stop was requested meanwhile.
async fn stopped_during(stop: &mut watch::Receiver<Option<Duration>>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => stop.borrow().is_some(),
        _ = wait_stop(stop) => true,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_probes(
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    container: Container,
    slot: Slot,
    state: Arc<PodState>,
    target: ProbeTarget,
    unhealthy: mpsc::Sender<String>,
    done: CancellationToken,
) {
    let work = async {
        if let Some(startup) = &container.startup_probe {
            let timing = Timing::of(startup);
            let mut tracker = Tracker::new(timing, false);
            tokio::time::sleep(timing.initial_delay).await;
            loop {
                let r = probe::attempt(startup, &container, &target, timing.timeout).await;
                match tracker.record(r.is_ok()) {
                    Some(true) => break,
                    Some(false) => {
                        let _ = unhealthy.send("failed startup probe".to_owned()).await;
                        return;
                    }
                    None => {}
                }
                tokio::time::sleep(timing.period).await;
            }
            state.update(slot, |c| {
                c.started = true;
                c.ready = container.readiness_probe.is_none();
            });
        }
        let readiness = async {
            let Some(p) = &container.readiness_probe else {
                return;
            };
            let timing = Timing::of(p);
            let mut tracker = Tracker::new(timing, false);
            tokio::time::sleep(timing.initial_delay).await;
            loop {
                let r = probe::attempt(p, &container, &target, timing.timeout).await;
                if let Err(why) = &r {
                    publish(
                        &ctx,
                        &pod,
                        EventType::Warning,
                        "Unhealthy",
                        &format!("Readiness probe failed: {why}"),
                    )
                    .await;
                }
                if let Some(ready) = tracker.record(r.is_ok()) {
                    state.update(slot, |c| c.ready = ready);
                }
                tokio::time::sleep(timing.period).await;
            }
        };
        let liveness = async {
            let Some(p) = &container.liveness_probe else {
                return;
            };
            let timing = Timing::of(p);
            let mut tracker = Tracker::new(timing, true);
            tokio::time::sleep(timing.initial_delay).await;
            loop {
                let r = probe::attempt(p, &container, &target, timing.timeout).await;
                if let Err(why) = &r {
                    publish(
                        &ctx,
                        &pod,
                        EventType::Warning,
                        "Unhealthy",
                        &format!("Liveness probe failed: {why}"),
                    )
                    .await;
                }
                if tracker.record(r.is_ok()) == Some(false) {
                    let _ = unhealthy.send("failed liveness probe".to_owned()).await;
                    return;
                }
                tokio::time::sleep(timing.period).await;
            }
        };
        tokio::join!(readiness, liveness);
    };
    tokio::select! {
        _ = work => {}
        _ = done.cancelled() => {}
    }
    // A container whose probes stopped is no longer known to be ready.
    if state
        .container(slot)
        .is_some_and(|c| !matches!(c.state, RunState::Running { .. }))
    {
        state.update(slot, |c| c.ready = false);
    }
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Records a Kubernetes Event on the pod; failures are logged, never fatal.
pub async fn publish(ctx: &Context, pod: &Pod, type_: EventType, reason: &str, note: &str) {
    use kube::Resource as _;
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pod.object_ref(&())).await {
        warn!(pod = %pod_key(pod), %reason, error = %e, "publishing event failed");
    }
}
