//! Storm lifecycles end to end in one process: the reconciler, run again and
//! again as the controller would, against an in-memory API server and real
//! sidecars (signed HTTP on loopback, real engines) until the run is final.
//!
//! These use the in-memory API of `fake_cluster` rather than tower-test
//! scripts: over many reconciles the number and order of requests (Events,
//! status writes, lease renewals) depends on how far the storms have got, so
//! each scenario states outcomes — the status the API server holds, the
//! Events, and what each sidecar saw and holds — instead of a request script.
//! Reconciles come every 100 ms (the controller's own requeue is 10 s; only
//! the cadence differs), and time past a lease is the operator's clock moved
//! forward, never a sleep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use mapchaos_api::resource::{ExperimentPhase, FINALIZER, TargetPhase, TargetStatus};
use mapchaos_api::storm::{DEFAULT_LEASE, StormPhase};
use mapchaos_api::{MapChaos, MapChaosStatus, Verdict};
use mapchaos_sidecar::engine::{
    Clock, LaggingEngine, MapEngine, Pattern, SetOptions, ShardedEngine,
};
use serde_json::{Value, json};

use super::fake_cluster::{FakeApi, LoopbackSidecar, RecordedEvent, sidecar_pod, sidecars};
use crate::controller::{Context, reconcile_at};
use crate::fixtures;
use crate::kill_switch::KillSwitch;
use crate::metrics::Metrics;
use crate::plan::PENDING_POLL;
use crate::storm_client::StormClient;

const NAMESPACE: &str = "shop";
const NAME: &str = "storm";
/// The longest a scenario waits for a phase of a run.
const PATIENCE: Duration = Duration::from_secs(8);

pub(super) fn sharded() -> Arc<dyn MapEngine> {
    Arc::new(ShardedEngine::new(4, Clock::System))
}

/// The broken engine: reads from a snapshot refreshed every 5 ms.
fn lagging() -> Arc<dyn MapEngine> {
    LaggingEngine::new(sharded(), Duration::from_millis(5))
}

/// A storm on every `app=cart` pod: 2 workers on 500 keys.
fn storm(duration: &str) -> Value {
    json!({"duration": duration, "storm": {"workers": 2, "keys": {"count": 500}}})
}

/// One experiment, its pods `cart-{i}` (one per sidecar) and one operator.
pub(super) struct Scenario {
    pub(super) api: FakeApi,
    pub(super) sidecars: Vec<LoopbackSidecar>,
    port: u16,
    ctx: Arc<Context>,
    /// How far the operator's clock runs ahead of the wall clock.
    skew: Duration,
}

impl Scenario {
    /// The experiment as `kubectl apply` creates it (no finalizer yet), on
    /// sidecars at 127.`net`.0.x, one per engine.
    pub(super) async fn start(net: u8, engines: Vec<Arc<dyn MapEngine>>, spec: Value) -> Self {
        let (port, sidecars) = sidecars(
            net,
            engines,
            &fixtures::signer().public_key_hex(),
            sidecar_pod,
        )
        .await;
        let api = FakeApi::default();
        api.set_pods(
            sidecars
                .iter()
                .enumerate()
                .map(|(i, sidecar)| fixtures::pod_at(&format!("cart-{i}"), &sidecar.ip))
                .collect(),
        );
        let mut experiment = fixtures::experiment(spec);
        experiment.metadata.finalizers = None;
        api.put_experiment(experiment);
        let ctx = operator(&api, port, false);
        Scenario {
            api,
            sidecars,
            port,
            ctx,
            skew: Duration::ZERO,
        }
    }

    /// A new operator process: its own client, Event cache and metrics;
    /// all it knows is what the API server holds.
    fn restart(&mut self, kill_switch: bool) {
        self.ctx = operator(&self.api, self.port, kill_switch);
    }

    fn experiment(&self) -> Option<MapChaos> {
        self.api.experiment(NAMESPACE, NAME)
    }

    pub(super) fn status(&self) -> MapChaosStatus {
        self.experiment()
            .expect("the experiment exists")
            .status
            .unwrap_or_default()
    }

    /// One reconcile of the experiment as the API server holds it now.
    pub(super) async fn reconcile(&self) -> Action {
        let experiment = Arc::new(self.experiment().expect("the experiment exists"));
        let now = Timestamp::now().checked_add(self.skew).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile_at(experiment, self.ctx.clone(), now),
        )
        .await
        .expect("the reconcile finished")
        .expect("the reconcile succeeded")
    }

    /// Reconcile every 100 ms until `done` holds for the status, checking
    /// `invariant` on every status on the way.
    pub(super) async fn reconcile_until(
        &self,
        what: &str,
        done: impl Fn(&MapChaosStatus) -> bool,
        invariant: impl Fn(&MapChaosStatus),
    ) -> MapChaosStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.reconcile().await;
            let status = self.status();
            invariant(&status);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in {PATIENCE:?}; status {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Through the finalizer to the storms confirmed running.
    pub(super) async fn until_running(&self) -> MapChaosStatus {
        self.reconcile().await;
        assert_eq!(
            self.experiment().unwrap().finalizers(),
            [FINALIZER],
            "the finalizer goes on first"
        );
        self.reconcile_until(
            "every storm running",
            |s| !s.targets.is_empty() && s.targets.iter().all(|t| t.phase == TargetPhase::Running),
            |_| {},
        )
        .await
    }

    pub(super) async fn until_finished(&self) -> MapChaosStatus {
        self.reconcile_until("the run finished", |s| s.finished_at.is_some(), |_| {})
            .await
    }

    /// The Events published with this reason, repeats (kube's recorder
    /// patches a series) included: one per publish.
    pub(super) fn events(&self, reason: &str) -> Vec<RecordedEvent> {
        self.api
            .events()
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    }

    /// The sidecar of `target` (pods are `cart-{index}`).
    fn sidecar_of(&self, target: &TargetStatus) -> &LoopbackSidecar {
        self.sidecars
            .iter()
            .find(|sidecar| sidecar.ip == target.ip)
            .expect("a sidecar at the target's IP")
    }

    /// Wait (off the runtime) until every sidecar's storm has ended.
    pub(super) async fn sidecars_idle(&self) {
        for sidecar in &self.sidecars {
            let storms = sidecar.storms.clone();
            let idle =
                tokio::task::spawn_blocking(move || storms.wait_idle(Duration::from_secs(10)))
                    .await
                    .unwrap();
            assert!(idle, "the storm on {} ended", sidecar.ip);
        }
    }
}

fn operator(api: &FakeApi, port: u16, kill_switch: bool) -> Arc<Context> {
    Arc::new(Context::new(
        api.client(),
        StormClient::new(fixtures::signer()).with_port(port),
        Reporter {
            controller: "mapchaos-operator".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::new()),
        KillSwitch::fixed(kill_switch),
    ))
}

fn target<'s>(status: &'s MapChaosStatus, pod: &str) -> &'s TargetStatus {
    status
        .targets
        .iter()
        .find(|t| t.pod == pod)
        .unwrap_or_else(|| panic!("no target {pod}: {:?}", status.targets))
}

fn condition<'s>(status: &'s MapChaosStatus, kind: &str) -> (&'s str, &'s str, &'s str) {
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no condition {kind}"));
    (
        condition.status.as_str(),
        condition.reason.as_str(),
        condition.message.as_str(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_storm_on_two_pods_completes_with_a_passing_verdict() {
    let scenario = Scenario::start(21, vec![sharded(), sharded()], storm("1s")).await;
    assert_eq!(scenario.reconcile().await, Action::await_change());
    assert!(
        scenario.sidecars.iter().all(|s| s.calls().is_empty()),
        "no storm call before the finalizer is on"
    );
    assert_eq!(scenario.reconcile().await, Action::requeue(PENDING_POLL));
    let status = scenario.until_finished().await;
    assert_eq!(
        scenario.reconcile().await,
        Action::await_change(),
        "a finished run is not polled"
    );

    assert_eq!(status.phase, ExperimentPhase::Completed);
    assert_eq!(status.run, 1);
    assert_eq!(status.targets.len(), 2);
    for target in &status.targets {
        assert_eq!(target.phase, TargetPhase::Completed, "{target:?}");
        assert_eq!(target.verdict, Some(Verdict::Pass), "{target:?}");
        assert!(target.ops > 0, "{target:?}");
        assert_eq!(target.anomalies, 0, "{target:?}");
        assert!(target.latency.is_some(), "{target:?}");
        assert!(target.report_secret.is_some(), "{target:?}");
        // What the sidecar saw: one storm, started once, with this id.
        let sidecar = scenario.sidecar_of(target);
        assert_eq!(sidecar.storms_started(), [target.storm_id.as_str()]);
        let report = sidecar
            .storms
            .status(&target.storm_id)
            .and_then(|s| s.report)
            .expect("the sidecar kept the report");
        assert_eq!(
            report.ops, target.ops,
            "the status carries the sidecar's count"
        );
    }
    let summary = status.summary.as_ref().expect("a summary");
    assert_eq!(summary.verdict, Some(Verdict::Pass));
    assert_eq!(
        summary.ops,
        status.targets.iter().map(|t| t.ops).sum::<u64>()
    );
    assert_eq!((summary.targets, summary.finished), (2, 2));
    assert_eq!(condition(&status, "AllInjected").0, "True");
    assert_eq!(condition(&status, "AllRecovered").0, "True");

    assert_eq!(scenario.events("RunStarted").len(), 1);
    assert_eq!(scenario.events("StormStarted").len(), 2);
    let completed = scenario.events("StormCompleted");
    assert_eq!(completed.len(), 2);
    assert!(
        completed.iter().all(|e| e.type_ == "Normal"),
        "{completed:?}"
    );
    let finished = scenario.events("RunFinished");
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (finished[0].type_.as_str(), finished[0].repeat),
        ("Normal", false)
    );
    assert!(
        finished[0].note.contains("verdict Pass"),
        "{:?}",
        finished[0]
    );
    assert!(
        scenario.api.events().iter().all(|e| e.type_ == "Normal"),
        "{:?}",
        scenario.api.events()
    );
    assert!(
        scenario.api.unexpected().is_empty(),
        "{:?}",
        scenario.api.unexpected()
    );
}

// kube's `Recorder` keys its Event series by type, reason, object and
// related object, not by note: each target's Events name their pod as the
// related object, or the second pod's would be folded into the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_gets_its_own_storm_events() {
    let scenario = Scenario::start(27, vec![sharded(), sharded()], storm("1s")).await;
    scenario.until_running().await;
    scenario.until_finished().await;
    for reason in ["StormStarted", "StormCompleted"] {
        let events = scenario.events(reason);
        for pod in ["shop/cart-0:", "shop/cart-1:"] {
            assert!(
                events.iter().any(|e| e.note.starts_with(pod)),
                "no {reason} for {pod} {events:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_map_fails_the_run_with_its_anomalies_and_a_warning() {
    let scenario = Scenario::start(22, vec![lagging(), sharded()], storm("1s")).await;
    scenario.until_running().await;
    let status = scenario.until_finished().await;

    let broken = target(&status, "cart-0");
    assert!(broken.anomalies > 0, "{broken:?}");
    assert!(!broken.anomaly_kinds.is_empty(), "{broken:?}");
    assert_eq!(broken.verdict, Some(Verdict::Fail));
    let sound = target(&status, "cart-1");
    assert_eq!((sound.anomalies, sound.verdict), (0, Some(Verdict::Pass)));
    let summary = status.summary.as_ref().unwrap();
    assert_eq!(summary.verdict, Some(Verdict::Fail));
    assert_eq!(summary.total_anomalies, broken.anomalies);

    let warnings: Vec<RecordedEvent> = scenario
        .api
        .events()
        .into_iter()
        .filter(|e| e.type_ == "Warning")
        .collect();
    assert!(
        warnings
            .iter()
            .any(|e| e.reason == "StormCompleted" && e.note.starts_with("shop/cart-0:")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|e| e.reason == "RunFinished" && e.note.contains("verdict Fail")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|e| e.note.contains("cart-1")),
        "the sound map is not blamed: {warnings:?}"
    );

    // Each target's report is in a Secret the status names, owned by the
    // experiment: the broken map's page fails and draws its witnesses.
    let experiment = scenario.api.experiment("shop", "storm").unwrap();
    let broken_page = report_page(&scenario, &experiment, broken);
    assert!(broken_page.contains(r#"<span class="word">FAIL</span>"#));
    assert!(broken_page.contains(r#"<section class="card witness""#));
    assert!(broken_page.contains(&format!("storm {}", broken.storm_id)));
    let sound_page = report_page(&scenario, &experiment, sound);
    assert!(sound_page.contains(r#"<span class="word">PASS</span>"#));
    assert!(!sound_page.contains(r#"<section class="card witness""#));
    assert_eq!(scenario.api.secrets().len(), 2);
    assert!(
        scenario.api.unexpected().is_empty(),
        "{:?}",
        scenario.api.unexpected()
    );
}

/// The page in `target`'s report Secret, after checking the Secret is the
/// one the status names, labelled and owned by `experiment`.
fn report_page(scenario: &Scenario, experiment: &MapChaos, target: &TargetStatus) -> String {
    let name = target
        .report_secret
        .as_deref()
        .unwrap_or_else(|| panic!("the status names the report's Secret: {target:?}"));
    let secret = scenario
        .api
        .secrets()
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name}"));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(
        labels[crate::reports::EXPERIMENT_UID_LABEL],
        experiment.uid().unwrap()
    );
    assert_eq!(labels[crate::reports::EXPERIMENT_LABEL], "storm");
    assert_eq!(labels[crate::reports::RUN_LABEL], target.run.to_string());
    assert_eq!(labels[crate::reports::TARGET_LABEL], target.pod);
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("MapChaos", "storm", experiment.uid().unwrap().as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let data = &secret.data.as_ref().unwrap()[crate::reports::DATA_KEY].0;
    assert!(data.len() <= crate::reports::MAX_COMPRESSED_BYTES);
    String::from_utf8(crate::reports::gunzip(data, 64 << 20).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_gone_mid_storm_is_unreachable_only_after_the_lease() {
    let mut scenario = Scenario::start(23, vec![sharded(), sharded()], storm("2s")).await;
    scenario.until_running().await;
    scenario.sidecars[1].stop().await;

    let status = scenario
        .reconcile_until(
            "the reachable storm completed",
            |s| target(s, "cart-0").phase == TargetPhase::Completed,
            |s| {
                let cut_off = target(s, "cart-1");
                assert_eq!(
                    cut_off.phase,
                    TargetPhase::Running,
                    "within the lease the storm may still run: {cut_off:?}"
                );
            },
        )
        .await;
    let cut_off = target(&status, "cart-1");
    assert!(
        cut_off.message.contains("not answering"),
        "{}",
        cut_off.message
    );
    assert_eq!(status.phase, ExperimentPhase::Running);
    assert!(scenario.events("SidecarUnreachable").is_empty());

    scenario.skew = DEFAULT_LEASE.0 + Duration::from_secs(5);
    scenario.reconcile().await;
    let status = scenario.status();
    let cut_off = target(&status, "cart-1");
    assert_eq!(cut_off.phase, TargetPhase::Unreachable, "{cut_off:?}");
    assert!(cut_off.message.contains("30s"), "{}", cut_off.message);
    let unreachable = scenario.events("SidecarUnreachable");
    assert_eq!(unreachable.len(), 1);
    assert_eq!(unreachable[0].type_, "Warning");
    assert!(
        unreachable[0].note.starts_with("shop/cart-1"),
        "{unreachable:?}"
    );
    assert_eq!(target(&status, "cart-0").phase, TargetPhase::Completed);
    assert!(status.finished_at.is_some());
    assert_eq!(status.phase, ExperimentPhase::Completed);
    let (recovered, why, message) = condition(&status, "AllRecovered");
    assert_eq!((recovered, why), ("False", "RecoveryUnconfirmed"));
    assert!(message.contains("shop/cart-1"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_mid_storm_is_lost_and_the_other_completes() {
    let scenario = Scenario::start(24, vec![sharded(), sharded()], storm("2s")).await;
    scenario.until_running().await;
    scenario.api.delete_pod("cart-1");
    let calls_before = scenario.sidecars[1].calls().len();

    scenario.reconcile().await;
    let calls = scenario.sidecars[1].calls();
    assert!(
        calls[calls_before..].iter().all(|c| c.method == "GET"),
        "a deleted pod's storm is no longer renewed: {calls:?}"
    );
    let calls_lost = calls.len();
    let status = scenario.status();
    let lost = target(&status, "cart-1");
    assert_eq!(lost.phase, TargetPhase::PodGone, "{lost:?}");
    assert_eq!(lost.message, "the pod was deleted");
    let events = scenario.events("TargetLost");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_, "Warning");
    assert!(events[0].note.starts_with("shop/cart-1"), "{events:?}");

    let status = scenario.until_finished().await;
    assert_eq!(target(&status, "cart-0").phase, TargetPhase::Completed);
    assert_eq!(target(&status, "cart-1").phase, TargetPhase::PodGone);
    assert_eq!(status.phase, ExperimentPhase::Completed);
    assert_eq!(
        scenario.sidecars[1].calls().len(),
        calls_lost,
        "a lost target's sidecar is not asked again"
    );
    assert_eq!(scenario.events("TargetLost").len(), 1, "reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_continues_the_run_without_a_second_storm() {
    let mut scenario = Scenario::start(25, vec![sharded(), sharded()], storm("2s")).await;
    scenario.reconcile().await;
    scenario.reconcile().await;
    let started = scenario.status();
    assert_eq!(started.run, 1);
    assert!(
        started
            .targets
            .iter()
            .all(|t| t.phase == TargetPhase::Pending),
        "the storms were sent but not yet confirmed: {:?}",
        started.targets
    );

    // Restarted between sending the storms and seeing them run...
    scenario.restart(false);
    scenario
        .reconcile_until(
            "every storm running",
            |s| s.targets.iter().all(|t| t.phase == TargetPhase::Running),
            |_| {},
        )
        .await;
    // ...and again while they run.
    scenario.restart(false);
    let status = scenario.until_finished().await;

    assert_eq!(status.run, 1);
    assert_eq!(status.phase, ExperimentPhase::Completed);
    assert_eq!(scenario.events("RunStarted").len(), 1);
    for (before, after) in started.targets.iter().zip(&status.targets) {
        assert_eq!(
            before.storm_id, after.storm_id,
            "the same storms throughout"
        );
        assert_eq!(after.phase, TargetPhase::Completed);
        let sidecar = scenario.sidecar_of(after);
        assert_eq!(
            sidecar.storms_started(),
            [after.storm_id.as_str()],
            "exactly one storm started on {}",
            sidecar.ip
        );
        let calls = sidecar.calls();
        assert!(
            calls
                .iter()
                .all(|c| c.path == format!("/v1/storms/{}", after.storm_id)
                    || c.path == format!("/v1/storms/{}/report", after.storm_id)),
            "no other storm was asked for (its report is read once it finished): {calls:?}"
        );
        assert!(
            calls.iter().any(|c| c.method == "PUT" && c.status == 200),
            "the new operator renewed the running storm: {calls:?}"
        );
        assert_eq!(
            sidecar.storms.status(&after.storm_id).unwrap().phase,
            StormPhase::Completed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_experiment_mid_storm_restores_the_keys_and_releases_it() {
    let engine = sharded();
    let originals: Vec<(Bytes, Bytes)> = (0..300)
        .map(|i| {
            (
                Bytes::from(format!("session:{i}")),
                Bytes::from(format!("user-{i}")),
            )
        })
        .collect();
    for (key, value) in &originals {
        engine.set(key.clone(), value.clone(), SetOptions::default());
    }
    let spec = json!({
        "duration": "30s",
        "storm": {
            "workers": 2,
            "mix": {"del": 60, "get": 30, "set": 10},
            "keys": {"source": "existing", "pattern": "session:*"},
            "restore": true,
        },
    });
    let scenario = Scenario::start(26, vec![engine.clone()], spec).await;
    let running = scenario.until_running().await;
    let id = running.targets[0].storm_id.clone();
    let sessions = Pattern::new(b"session:*");
    let deadline = Instant::now() + PATIENCE;
    while engine.keys(&sessions).len() == originals.len() {
        assert!(Instant::now() < deadline, "the storm deleted no key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    scenario.api.delete_experiment(NAMESPACE, NAME);
    assert_eq!(scenario.reconcile().await, Action::await_change());
    assert!(
        scenario.experiment().is_none(),
        "the finalizer came off, so the experiment is gone"
    );
    let deleting = scenario.events("Deleting");
    assert_eq!(deleting.len(), 1, "{:?}", scenario.api.events());
    let calls = scenario.sidecars[0].calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == "DELETE" && c.path == format!("/v1/storms/{id}")),
        "{calls:?}"
    );

    scenario.sidecars_idle().await;
    let stopped = scenario.sidecars[0].storms.status(&id).unwrap();
    assert_eq!(stopped.phase, StormPhase::Aborted, "{}", stopped.message);
    assert!(stopped.message.contains("DELETE"), "{}", stopped.message);
    let report = stopped.report.unwrap();
    assert!(report.restored_keys > 0, "{report:?}");
    for (key, value) in &originals {
        assert_eq!(
            engine.get(key).as_ref(),
            Some(value),
            "{} is back with its value",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(engine.keys(&sessions).len(), originals.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_resumes_as_a_new_run_but_the_kill_switch_aborts_for_good() {
    let mut scenario = Scenario::start(28, vec![sharded(), sharded()], storm("30s")).await;
    let first = scenario.until_running().await;
    let first_ids: Vec<String> = first.targets.iter().map(|t| t.storm_id.clone()).collect();

    scenario.api.edit_experiment(NAMESPACE, NAME, |e| {
        e.spec.paused = true;
        e.metadata.generation = Some(2);
    });
    let paused = scenario
        .reconcile_until(
            "the storms stopped",
            |s| s.targets.iter().all(|t| t.phase.is_final()),
            |s| assert_eq!(s.phase, ExperimentPhase::Paused, "{s:#?}"),
        )
        .await;
    assert_eq!(paused.run, 1);
    assert!(paused.interrupted, "a spec pause interrupts the run");
    assert!(
        paused
            .targets
            .iter()
            .all(|t| t.phase == TargetPhase::Aborted),
        "{:?}",
        paused.targets
    );
    assert_eq!(condition(&paused, "Paused").0, "True");
    assert_eq!(scenario.events("Paused").len(), 1);
    for target in &first.targets {
        let (sidecar, id) = (scenario.sidecar_of(target), &target.storm_id);
        let stopped = sidecar.storms.status(id).expect("the first storm");
        assert_eq!(stopped.phase, StormPhase::Aborted, "{}", stopped.message);
        assert!(
            sidecar
                .calls()
                .iter()
                .any(|c| c.method == "DELETE" && c.path.ends_with(id.as_str())),
            "the pause stopped the storm with a DELETE"
        );
    }
    scenario.sidecars_idle().await;

    scenario.api.edit_experiment(NAMESPACE, NAME, |e| {
        e.spec.paused = false;
        e.metadata.generation = Some(3);
    });
    let resumed = scenario
        .reconcile_until(
            "a new run running",
            |s| s.run == 2 && s.targets.iter().all(|t| t.phase == TargetPhase::Running),
            |_| {},
        )
        .await;
    assert_eq!(resumed.phase, ExperimentPhase::Running);
    assert!(!resumed.interrupted);
    assert_eq!(scenario.events("Resumed").len(), 1);
    let run_started = scenario.events("RunStarted");
    assert_eq!(run_started.len(), 2);
    assert!(
        run_started.iter().any(|e| e
            .note
            .starts_with("run 2 (resuming the run the pause stopped)")),
        "run 2's own Event, not a repeat of run 1's: {run_started:?}"
    );
    for target in &resumed.targets {
        assert!(
            !first_ids.contains(&target.storm_id),
            "run 2 has its own storm ids: {}",
            target.storm_id
        );
        let started = scenario.sidecar_of(target).storms_started();
        assert_eq!(started.len(), 2, "{started:?}");
        assert_eq!(started[1], target.storm_id);
    }

    // The kill switch: the run is aborted and stays so when it goes off.
    scenario.restart(true);
    let killed = scenario
        .reconcile_until(
            "the kill switch stopped the storms",
            |s| s.targets.iter().all(|t| t.phase.is_final()),
            |_| {},
        )
        .await;
    assert_eq!(killed.run, 2);
    assert_eq!(killed.phase, ExperimentPhase::Aborted, "{killed:#?}");
    assert!(
        !killed.interrupted,
        "the kill switch does not ask for a rerun"
    );
    let (_, why, _) = condition(&killed, "Paused");
    assert_eq!(why, "KillSwitch");
    scenario.sidecars_idle().await;

    scenario.restart(false);
    for _ in 0..3 {
        scenario.reconcile().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = scenario.status();
    assert_eq!((after.run, after.phase), (2, ExperimentPhase::Aborted));
    for sidecar in &scenario.sidecars {
        assert_eq!(
            sidecar.storms_started().len(),
            2,
            "no storm after the kill switch went off"
        );
    }
}
