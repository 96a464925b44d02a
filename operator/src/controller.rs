//! The MapChaos controller: `reconcile` runs observe → plan → act for one
//! experiment; `run` wires the watches (MapChaos, Pods, the kill switch),
//! the metrics server and leader election around it.
//!
//! The MapChaos watch is filtered to changes of generation, annotations,
//! finalizers and deletion: the operator's own status writes (which move
//! `lastSeen` on every poll) do not trigger it, the planner's requeue does.
//! Pod changes that matter to target selection requeue every experiment
//! whose namespaces include the pod's. On SIGTERM the controller stops
//! without touching running storms: they stop by themselves when their
//! lease is not renewed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
#[cfg(test)]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use mapchaos_api::MapChaos;
use mapchaos_api::resource::FINALIZER;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::admission::AdmissionState;
use crate::config::Config;
use crate::error::Error;
use crate::kill_switch::KillSwitch;
use crate::metrics::{Metrics, ServerState};
use crate::plan::{self, Observation, Plan};
use crate::policy::{Guardrails, RunGuard};
use crate::probe_client::{self, HttpProber, ProbeRunner};
use crate::probes::{self, ProbeResults};
use crate::signing_key::StormSigner;
use crate::storm_client::StormClient;
use crate::{act, leader, metrics, observe, report_store, reports, webhook};
use mapchaos_api::probe::ProbeStage;

/// The first retry after a failed reconcile; doubled per failure in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often to look again while the kill switch's state is unknown.
const KILL_SWITCH_UNKNOWN_RETRY: Duration = Duration::from_secs(5);
/// Experiments reconciled at once.
const CONCURRENCY: u16 = 8;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub storms: StormClient,
    /// Who records the Events. Each reconcile records through a recorder
    /// of its own: kube's `Recorder` folds an Event into an earlier one of
    /// the same type and reason for six minutes, keeping the first message
    /// only, and run 2's "RunStarted" must not read as run 1's.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub kill_switch: KillSwitch,
    /// Where storms may go and how big a run may be; `None` checks nothing
    /// (and reads no Namespace).
    pub guardrails: Option<Guardrails>,
    /// The MapChaos caches, for what other experiments storm right now.
    pub stores: RwLock<Vec<Store<MapChaos>>>,
    /// Makes the steady-state probes' calls.
    pub probes: Arc<dyn ProbeRunner>,
    /// Failed reconciles in a row, by experiment, for the backoff.
    failures: Mutex<HashMap<ObjectRef<MapChaos>, u32>>,
}

impl Context {
    /// A recorder for one reconcile's Events (see [`Context::reporter`]).
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    pub fn new(
        client: Client,
        storms: StormClient,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        kill_switch: KillSwitch,
    ) -> Self {
        Context {
            reporter,
            client,
            storms,
            metrics,
            kill_switch,
            guardrails: None,
            stores: RwLock::default(),
            probes: Arc::new(HttpProber::new()),
            failures: Mutex::default(),
        }
    }

    /// The same context, enforcing `guardrails` when runs start.
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Self {
        self.guardrails = Some(guardrails);
        self
    }

    /// The same context, probing through `probes` (tests script them).
    pub fn with_probes(mut self, probes: Arc<dyn ProbeRunner>) -> Self {
        self.probes = probes;
        self
    }

    /// Unfinished targets of every experiment but `experiment`, by
    /// namespace, as the caches show them.
    pub fn stormed_elsewhere(&self, experiment: &MapChaos) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for store in self.stores.read().iter() {
            for other in store.state() {
                if other.metadata.uid == experiment.metadata.uid {
                    continue;
                }
                let targets = other.status.iter().flat_map(|s| &s.targets);
                for target in targets.filter(|t| !t.phase.is_final()) {
                    *counts.entry(target.namespace.clone()).or_default() += 1;
                }
            }
        }
        counts
    }
}

/// Observe, plan and act for one experiment.
pub async fn reconcile(experiment: Arc<MapChaos>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_at(experiment, ctx, Timestamp::now()).await
}

/// [`reconcile`] as of `now`: the planner takes time as an input, so a
/// scenario can move past a storm's lease without waiting for it.
pub(crate) async fn reconcile_at(
    experiment: Arc<MapChaos>,
    ctx: Arc<Context>,
    now: Timestamp,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_once(&experiment, &ctx, now).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(error) => error.metric_label(),
    };
    ctx.metrics.reconciled(label, started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .remove(&ObjectRef::from_obj(&*experiment));
    }
    result
}

async fn reconcile_once(
    experiment: &MapChaos,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let Some(kill_switch) = ctx.kill_switch.state() else {
        return Ok(Action::requeue(KILL_SWITCH_UNKNOWN_RETRY));
    };
    let namespace = experiment
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<MapChaos> = Api::namespaced(ctx.client.clone(), &namespace);

    // The planner looks at pods and storms only once the finalizer is on
    // and the experiment is not being deleted.
    let planning = experiment.metadata.deletion_timestamp.is_none()
        && experiment.finalizers().iter().any(|f| f == FINALIZER);
    let (pods, storms) = if planning {
        let pods = observe::pods(&ctx.client, experiment).await?;
        let storms = observe::storms(&ctx.storms, experiment).await;
        (pods, storms)
    } else {
        Default::default()
    };
    let guard = match &ctx.guardrails {
        Some(rules) if planning => {
            let reach = crate::selector::namespaces(&experiment.spec.selector, &namespace);
            let namespaces = observe::namespaces(&ctx.client, &reach).await?;
            rules.run_guard(
                &experiment.spec,
                &namespaces,
                ctx.stormed_elsewhere(experiment),
            )
        }
        _ => RunGuard::default(),
    };
    // The `during` probes due now are observed like the storms; `before`
    // and `after` probes are run when the plan asks for them, and the plan
    // is made again with their attempts (the planner is pure, so the second
    // plan differs from the first only by what the probes found).
    let mut results = ProbeResults::default();
    if planning {
        results.during = observe::during_probes(&*ctx.probes, experiment, now).await;
    }
    let plan_with = |results: &ProbeResults| {
        plan::plan(&Observation {
            experiment,
            pods: &pods,
            storms: &storms,
            now,
            kill_switch,
            guard: &guard,
            probes: results,
        })
    };
    let mut plan = plan_with(&results)?;
    for _ in 0..3 {
        let needs = plan.probe_needs.clone();
        let mut probed = false;
        if needs.before && results.before.is_none() {
            let before = probes::in_stage(&experiment.spec, ProbeStage::Before);
            results.before = Some(probe_client::stage(&*ctx.probes, &before).await);
            probed = true;
        }
        for run in needs.after {
            if let std::collections::btree_map::Entry::Vacant(slot) = results.after.entry(run) {
                let after = probes::in_stage(&experiment.spec, ProbeStage::After);
                slot.insert(probe_client::stage(&*ctx.probes, &after).await);
                probed = true;
            }
        }
        if !probed {
            break;
        }
        plan = plan_with(&results)?;
    }
    tracing::debug!(
        experiment = %experiment.name_any(),
        %namespace,
        phase = ?plan.status.phase,
        actions = plan.actions.len(),
        "planned"
    );
    if planning {
        collect_reports(ctx, experiment, &namespace, &mut plan).await;
    }
    act::act(&api, &ctx.storms, &ctx.recorder(), experiment, &plan).await?;
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// How soon to try again a report that could not be collected.
const REPORT_RETRY: Duration = Duration::from_secs(15);
/// Reports fetched at once for one experiment.
const REPORTS_IN_FLIGHT: usize = 4;

/// Keep each finished target's report in a Secret (see `reports`) and name
/// it in the status the plan will write; prune the Secrets of runs the
/// status no longer keeps. Reports are evidence, not control: a failure here
/// is logged and retried, and never stops the storms being tracked.
async fn collect_reports(ctx: &Context, experiment: &MapChaos, namespace: &str, plan: &mut Plan) {
    let name = experiment.name_any();
    let Some(uid) = experiment.uid() else {
        return;
    };
    if !reports::needs_look(experiment.status.as_ref(), &plan.status) {
        return;
    }
    let stored = match report_store::list(&ctx.client, namespace, &uid).await {
        Ok(stored) => stored,
        Err(error) => {
            tracing::warn!(%error, experiment = %name, "cannot list the report Secrets");
            return;
        }
    };
    let work = reports::plan(&plan.status, &stored);
    let mut names: BTreeSet<String> = stored
        .into_iter()
        .filter(|s| !work.prune.contains(&s.name))
        .map(|s| s.name)
        .collect();
    let calls: Vec<_> = work
        .collect
        .iter()
        .cloned()
        .map(|job| async move {
            let outcome = report_store::collect(&ctx.client, &ctx.storms, experiment, &job).await;
            (job, outcome)
        })
        .collect();
    let outcomes: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(REPORTS_IN_FLIGHT)
        .collect()
        .await;
    for (job, outcome) in outcomes {
        match outcome {
            report_store::Collected::Stored => {
                names.insert(job.secret.clone());
            }
            report_store::Collected::Gone(why) => {
                tracing::warn!(experiment = %name, storm = %job.storm_id, %why, "the storm's report cannot be collected");
            }
            report_store::Collected::Retry(why) => {
                tracing::warn!(experiment = %name, storm = %job.storm_id, %why, "cannot collect the storm's report yet");
                plan.requeue = Some(plan.requeue.map_or(REPORT_RETRY, |r| r.min(REPORT_RETRY)));
            }
        }
    }
    if let Err(error) = report_store::prune(&ctx.client, namespace, &work.prune).await {
        tracing::warn!(%error, experiment = %name, "cannot prune old report Secrets");
    }
    reports::name_secrets(&mut plan.status, &names);
}

/// Retry later, doubling the wait for every failure in a row.
pub fn error_policy(experiment: Arc<MapChaos>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock();
    let count = failures
        .entry(ObjectRef::from_obj(&*experiment))
        .or_default();
    let delay = backoff(*count);
    *count = count.saturating_add(1);
    tracing::warn!(
        experiment = %experiment.name_any(),
        namespace = experiment.namespace().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The wait after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_MAX)
}

/// What wakes an experiment: a new generation (spec), annotations (pause),
/// finalizers and deletion; not its status.
pub fn experiment_trigger(experiment: &MapChaos) -> Option<u64> {
    let metadata = &experiment.metadata;
    Some(hash(&(
        metadata.generation,
        &metadata.annotations,
        &metadata.finalizers,
        metadata.deletion_timestamp.is_some(),
    )))
}

/// What of a pod can change whether or how it is stormed.
pub fn pod_trigger(pod: &Pod) -> Option<u64> {
    let candidate = observe::candidate(pod);
    Some(hash(&(
        &candidate.uid,
        &candidate.labels,
        &candidate.annotations,
        &candidate.phase,
        candidate.ready,
        candidate.terminating,
        candidate.has_sidecar,
        &candidate.pod_ip,
    )))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The experiments that may select or target a pod in `namespace`.
pub fn experiments_in(store: &Store<MapChaos>, namespace: &str) -> Vec<ObjectRef<MapChaos>> {
    store
        .state()
        .iter()
        .filter(|experiment| {
            plan::namespaces_to_observe(experiment)
                .iter()
                .any(|n| n == namespace)
        })
        .map(|experiment| ObjectRef::from_obj(&**experiment))
        .collect()
}

/// Run the operator until `shutdown`: the metrics server at once, the
/// controllers once this replica leads (always, without leader election).
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let signer = StormSigner::from_file(&config.signing_key_file)?;
    tracing::info!(public_key = %signer.public_key_hex(), "storm signing key loaded");
    let metrics = Arc::new(Metrics::new());
    let server = ServerState::new(metrics.clone());
    let server_task = metrics::serve(config.metrics_addr, server.clone(), shutdown.clone()).await?;
    tracing::info!(addr = %config.metrics_addr, "serving /metrics, /healthz and /readyz");
    let operator_namespace = config
        .operator_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let guardrails = config.guardrails.clone().map(|mut rules| {
        rules.operator_namespace = Some(operator_namespace.clone());
        rules
    });
    if let Some(webhook) = &config.webhook {
        // Every replica admits pods and MapChaos, so admission does not wait
        // for a leader. Without guardrails configured, admission still
        // checks access and keeps out the protected namespaces.
        let admission = Arc::new(AdmissionState {
            cluster: Arc::new(client.clone()),
            guardrails: guardrails.clone().unwrap_or_else(|| Guardrails {
                operator_namespace: Some(operator_namespace.clone()),
                ..Guardrails::default()
            }),
        });
        webhook::serve(
            webhook,
            signer.public_key_hex(),
            admission,
            shutdown.clone(),
        )
        .await?;
        tracing::info!(addr = %webhook.addr, image = %webhook.image, "serving the sidecar-injection and MapChaos admission webhooks");
    }
    let leading = shutdown.child_token();
    let leadership = if config.leader_election {
        // A standby is ready: it is healthy and waiting to take over.
        server.ready.store(true, Ordering::Release);
        match leader::acquire(
            client.clone(),
            &operator_namespace,
            &config.identity,
            &shutdown,
        )
        .await?
        {
            Some(leadership) => Some(leadership),
            None => {
                let _ = server_task.await;
                return Ok(());
            }
        }
    } else {
        None
    };
    let lost = leadership
        .as_ref()
        .map(|leadership| leadership.on_loss(leading.clone()));
    server.ready.store(false, Ordering::Release);

    let kill_switch = KillSwitch::watch(client.clone(), &operator_namespace, leading.clone());
    tokio::select! {
        _ = leading.cancelled() => {}
        known = kill_switch.known() => {
            if known {
                tracing::info!(namespace = %operator_namespace, on = ?kill_switch.state(), "kill switch read");
            }
        }
    }
    let reporter = Reporter {
        controller: act::FIELD_MANAGER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let mut ctx = Context::new(
        client.clone(),
        StormClient::new(signer),
        reporter,
        metrics,
        kill_switch.clone(),
    );
    if let Some(rules) = guardrails {
        tracing::info!(?rules, "guardrails enforced when runs start");
        ctx = ctx.with_guardrails(rules);
    }
    let ctx = Arc::new(ctx);

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let (experiments, pods): (Api<MapChaos>, Api<Pod>) = match &scope {
            Some(namespace) => (
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let (store, controller) = controller(
            experiments,
            pods,
            &kill_switch,
            ctx.clone(),
            leading.clone(),
        );
        stores.push(store);
        controllers.push(controller);
    }
    *server.stores.write() = stores.clone();
    *ctx.stores.write() = stores.clone();
    let ready = server.ready.clone();
    tokio::spawn(async move {
        for store in &stores {
            // kube-runtime's DelayedInit wakes only the last task that waited, and the
            // Controller waits on this store too: ask again every second instead of
            // relying on one wake-up (else /readyz stays 503 forever).
            loop {
                match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        }
        ready.store(true, Ordering::Release);
        tracing::info!("MapChaos caches synced");
    });

    tracing::info!(namespaces = ?config.namespaces, "controller started");
    futures::future::join_all(controllers).await;
    tracing::info!("controller stopped; running storms stop at their leases");

    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    shutdown.cancel();
    let _ = server_task.await;
    match lost {
        Some(lost) if lost.load(Ordering::Acquire) => Err(Error::LeaderElection {
            lease: leader::LEASE.to_owned(),
            reason: "lost the lease while leading; stopping so a new leader takes over".into(),
        }),
        _ => Ok(()),
    }
}

/// One controller over `experiments`, its store and its run future.
fn controller(
    experiments: Api<MapChaos>,
    pods: Api<Pod>,
    kill_switch: &KillSwitch,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> (Store<MapChaos>, futures::future::BoxFuture<'static, ()>) {
    let (reader, writer) = reflector::store();
    let experiment_events = watcher(experiments, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(experiment_trigger, Default::default());
    let pod_events = watcher(pods, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects()
        .predicate_filter(pod_trigger, Default::default());
    let store = reader.clone();
    let mapper_store = reader.clone();
    let run = Controller::for_stream(experiment_events, reader)
        .watches_stream(pod_events, move |pod: Pod| {
            experiments_in(
                &mapper_store,
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            )
        })
        .reconcile_all_on(kill_switch.changes())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(experiment = %object, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .boxed();
    (store, run)
}

#[cfg(test)]
mod tests;
