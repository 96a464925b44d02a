//! The reconciler against a scripted API server and a real sidecar, one
//! scenario per test. Whole storm lifecycles, over many reconciles, are in
//! `lifecycle`, on the in-memory cluster of `fake_cluster`.

use std::time::Duration;

use http::StatusCode;
use kube::runtime::controller::Action;
use mapchaos_api::GoDuration;
use mapchaos_api::MapChaosStatus;
use mapchaos_api::resource::TargetStatus;
use mapchaos_api::resource::{ExperimentPhase, TargetPhase};
use mapchaos_api::storm::{DEFAULT_LEASE, StormPhase, StormRequest};
use serde_json::json;

use super::*;
use crate::fixtures::{self, EXPERIMENT_PATH};
use crate::plan::PENDING_POLL;

mod fake_cluster;
mod lifecycle;
mod probe_lifecycle;

async fn join(task: tokio::task::JoinHandle<Result<Action, Error>>) -> Result<Action, Error> {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("reconcile finished")
        .expect("reconcile did not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_experiment_gets_the_finalizer_before_anything_is_injected() {
    let (port, storms) = fixtures::sidecar(&fixtures::signer()).await;
    let (ctx, mut api) = fixtures::context(port, false);
    let mut experiment = fixtures::experiment(json!({}));
    experiment.metadata.finalizers = None;
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), ctx));

    let patch = api.metadata_patch(&experiment).await;
    assert_eq!(patch.method, http::Method::PATCH);
    assert!(
        patch.uri.starts_with(&format!("{EXPERIMENT_PATH}?")),
        "{}",
        patch.uri
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "100"}})
    );
    assert_eq!(join(task).await.unwrap(), Action::await_change());
    api.done().await;
    assert!(
        storms.wait_idle(Duration::ZERO),
        "no storm runs before the finalizer is on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_experiment_starts_its_storm_and_applies_its_status_server_side() {
    let (port, storms) = fixtures::sidecar(&fixtures::signer()).await;
    let (ctx, mut api) = fixtures::context(port, false);
    let experiment = fixtures::experiment(json!({}));
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), ctx.clone()));

    api.pods(&[fixtures::pod("cart-0")]).await;
    let event = api.event().await;
    assert_eq!(event["reason"], "RunStarted");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "storm");
    assert_eq!(event["reportingController"], "mapchaos-operator");
    let patch = api.status_patch(&experiment).await;
    assert_eq!(patch.method, http::Method::PATCH);
    assert_eq!(
        patch.uri,
        format!("{EXPERIMENT_PATH}/status?&force=true&fieldManager=mapchaos-operator")
    );
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(patch.body["apiVersion"], "mapchaos.io/v1alpha1");
    assert_eq!(patch.body["kind"], "MapChaos");
    let status: MapChaosStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase, ExperimentPhase::Running);
    assert_eq!(status.run, 1);
    let [target] = status.targets.as_slice() else {
        panic!("one target: {:?}", status.targets)
    };
    assert_eq!(
        (target.pod.as_str(), target.phase),
        ("cart-0", TargetPhase::Pending)
    );
    assert_eq!(
        join(task).await.unwrap(),
        Action::requeue(PENDING_POLL),
        "a storm just sent is looked at again soon"
    );
    drop(ctx);
    api.done().await;

    let running = storms
        .status(&target.storm_id)
        .expect("the sidecar runs the storm");
    assert!(!running.phase.is_final(), "{:?}", running.phase);
    storms.stop(&target.storm_id);
    assert!(storms.wait_idle(Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_a_false_valid_condition_and_a_warning_not_an_error() {
    let (port, storms) = fixtures::sidecar(&fixtures::signer()).await;
    let (ctx, mut api) = fixtures::context(port, false);
    let experiment = fixtures::experiment(json!({"storm": {"workers": 0}}));
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), ctx.clone()));

    api.pods(&[fixtures::pod("cart-0")]).await;
    let event = api.event().await;
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("spec.storm.workers"),
        "{event}"
    );
    let patch = api.status_patch(&experiment).await;
    let status: MapChaosStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase, ExperimentPhase::Failed);
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap();
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert_eq!(
        join(task).await.unwrap(),
        Action::await_change(),
        "waits for a spec change, never retried hot"
    );
    assert!(
        ctx.metrics
            .render()
            .contains("mapchaos_reconcile_total{result=\"ok\"} 1")
    );
    drop(ctx);
    api.done().await;
    assert!(storms.wait_idle(Duration::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_status_is_not_written_again() {
    let (port, _storms) = fixtures::sidecar(&fixtures::signer()).await;
    let (ctx, mut api) = fixtures::context(port, false);
    let mut experiment = fixtures::experiment(json!({"storm": {"workers": 0}}));
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), ctx.clone()));
    api.pods(&[]).await;
    api.event().await;
    let patch = api.status_patch(&experiment).await;
    join(task).await.unwrap();

    experiment.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(experiment), ctx.clone()));
    api.pods(&[]).await;
    assert_eq!(join(task).await.unwrap(), Action::await_change());
    drop(ctx);
    api.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_experiment_stops_its_storm_then_removes_the_finalizer() {
    let signer = fixtures::signer();
    let (port, storms) = fixtures::sidecar(&signer).await;
    let id = "storm-1-deleted";
    let client = StormClient::new(signer).with_port(port);
    client
        .put(&fixtures::local_target(), id, &long_storm())
        .await
        .expect("the storm starts");
    let (ctx, mut api) = fixtures::context(port, false);
    let mut experiment = fixtures::experiment(json!({}));
    experiment.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    experiment.metadata.finalizers = Some(vec!["other.io/keep".into(), FINALIZER.into()]);
    experiment.status = Some(MapChaosStatus {
        run: 1,
        targets: vec![TargetStatus {
            pod: "cart-0".into(),
            namespace: "shop".into(),
            pod_uid: "uid-cart-0".into(),
            ip: "127.0.0.1".into(),
            storm_id: id.into(),
            phase: TargetPhase::Running,
            ..TargetStatus::default()
        }],
        ..MapChaosStatus::default()
    });
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), ctx.clone()));

    let event = api.event().await;
    assert_eq!(event["reason"], "Deleting");
    let patch = api.metadata_patch(&experiment).await;
    assert_eq!(
        patch.body,
        json!({"metadata": {"finalizers": ["other.io/keep"], "resourceVersion": "100"}}),
        "only our finalizer goes, and no status is written on the way out"
    );
    assert_eq!(join(task).await.unwrap(), Action::await_change());
    drop(ctx);
    api.done().await;
    assert!(storms.wait_idle(Duration::from_secs(10)));
    assert_eq!(storms.status(id).unwrap().phase, StormPhase::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_a_running_storm_and_pauses() {
    let signer = fixtures::signer();
    let (port, storms) = fixtures::sidecar(&signer).await;
    let (ctx, mut api) = fixtures::context(port, true);
    let experiment = fixtures::experiment(json!({}));
    // Start a run with the switch off, then reconcile the result with it on.
    let (off, mut off_api) = fixtures::context(port, false);
    let task = tokio::spawn(reconcile(Arc::new(experiment.clone()), off.clone()));
    off_api.pods(&[fixtures::pod("cart-0")]).await;
    off_api.event().await;
    let patch = off_api.status_patch(&experiment).await;
    join(task).await.unwrap();
    let mut running = experiment.clone();
    running.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let id = running.status.as_ref().unwrap().targets[0].storm_id.clone();
    assert!(!storms.status(&id).unwrap().phase.is_final());

    let task = tokio::spawn(reconcile(Arc::new(running.clone()), ctx.clone()));
    api.pods(&[fixtures::pod("cart-0")]).await;
    // Paused, then StormStarted when the poll saw the storm before the stop.
    let mut reasons = Vec::new();
    let patch = loop {
        let seen = api
            .answer(StatusCode::OK, |seen| {
                if seen.uri.contains("/events") {
                    seen.body.clone()
                } else {
                    let mut patched = serde_json::to_value(&running).unwrap();
                    patched["status"] = seen.body["status"].clone();
                    patched
                }
            })
            .await;
        if !seen.uri.contains("/events") {
            break seen;
        }
        reasons.push(seen.body["reason"].as_str().unwrap().to_owned());
    };
    assert_eq!(
        reasons.first().map(String::as_str),
        Some("Paused"),
        "{reasons:?}"
    );
    assert!(patch.uri.contains("/status?"), "{}", patch.uri);
    let status: MapChaosStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase, ExperimentPhase::Paused);
    join(task).await.unwrap();
    drop((ctx, off));
    api.done().await;
    off_api.done().await;
    assert!(
        storms.wait_idle(Duration::from_secs(10)),
        "the storm was stopped"
    );
    assert_eq!(storms.status(&id).unwrap().phase, StormPhase::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_api_call_is_counted_and_retried_with_growing_waits() {
    let (ctx, mut api) = fixtures::context(1, false);
    let experiment = Arc::new(fixtures::experiment(json!({})));
    let task = tokio::spawn(reconcile(experiment.clone(), ctx.clone()));
    api.answer(StatusCode::INTERNAL_SERVER_ERROR, |_| {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad", "reason": "InternalError", "code": 500})
    })
    .await;
    let error = join(task).await.unwrap_err();
    assert_eq!(error.metric_label(), "kube_api");
    assert!(
        ctx.metrics
            .render()
            .contains("mapchaos_reconcile_total{result=\"kube_api\"} 1")
    );
    let waits: Vec<Action> = (0..3)
        .map(|_| error_policy(experiment.clone(), &error, ctx.clone()))
        .collect();
    assert_eq!(
        waits,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert_eq!(backoff(30), BACKOFF_MAX);
}

#[test]
fn a_status_write_does_not_trigger_but_spec_pause_and_deletion_do() {
    let experiment = fixtures::experiment(json!({}));
    let base = experiment_trigger(&experiment);
    let mut with_status = experiment.clone();
    with_status.status = Some(MapChaosStatus {
        run: 3,
        ..MapChaosStatus::default()
    });
    with_status.metadata.resource_version = Some("101".into());
    assert_eq!(experiment_trigger(&with_status), base);

    let mut changes = Vec::new();
    let mut spec = experiment.clone();
    spec.metadata.generation = Some(2);
    changes.push(spec);
    let mut paused = experiment.clone();
    paused.metadata.annotations =
        Some([("mapchaos.io/pause".to_owned(), "true".to_owned())].into());
    changes.push(paused);
    let mut unfinalized = experiment.clone();
    unfinalized.metadata.finalizers = None;
    changes.push(unfinalized);
    let mut deleted = experiment.clone();
    deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    changes.push(deleted);
    for changed in changes {
        assert_ne!(experiment_trigger(&changed), base, "{:?}", changed.metadata);
    }
}

#[test]
fn a_pod_change_wakes_the_experiments_that_look_at_its_namespace() {
    let (reader, mut writer) = reflector::store::<MapChaos>();
    let own = fixtures::experiment(json!({}));
    let mut elsewhere = fixtures::experiment(json!({"selector": {"namespaces": ["cache"]}}));
    elsewhere.metadata.name = Some("elsewhere".into());
    elsewhere.metadata.uid = Some("u2".into());
    for experiment in [own, elsewhere] {
        writer.apply_watcher_event(&watcher::Event::Apply(experiment));
    }
    let names = |namespace| {
        experiments_in(&reader, namespace)
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names("shop"), ["storm"]);
    assert_eq!(names("cache"), ["elsewhere"]);
    assert!(names("kube-system").is_empty());

    let pod = fixtures::pod("cart-0");
    let mut unready = pod.clone();
    unready.status.as_mut().unwrap().conditions = None;
    let mut restarted = pod.clone();
    restarted.metadata.resource_version = Some("7".into());
    assert_ne!(pod_trigger(&pod), pod_trigger(&unready));
    assert_eq!(
        pod_trigger(&pod),
        pod_trigger(&restarted),
        "no-op updates are ignored"
    );
}

fn long_storm() -> StormRequest {
    serde_json::from_value(json!({
        "storm": {"workers": 2},
        "check": {"maxOps": 20000},
        "duration": "60s",
        "seed": 7,
        "lease": GoDuration(DEFAULT_LEASE.0).to_string(),
    }))
    .unwrap()
}
