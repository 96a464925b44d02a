//! The act step against a real sidecar on loopback and a scripted API server.

use std::time::Duration;

use mapchaos_api::MapChaosStatus;
use mapchaos_api::storm::StormRequest;
use serde_json::json;

use super::*;
use crate::fixtures::{self, OTHER_KEY_HEX};
use crate::plan::Endpoint;
use crate::signing_key::StormSigner;

fn start(id: &str) -> Action {
    let request: StormRequest = serde_json::from_value(json!({
        "storm": {"workers": 2},
        "check": {"maxOps": 20000},
        "duration": "1s",
        "seed": 7,
        "lease": "30s",
    }))
    .unwrap();
    Action::StartStorm {
        endpoint: Endpoint {
            namespace: "shop".into(),
            pod: "cart-0".into(),
            uid: "uid-cart-0".into(),
            ip: "127.0.0.1".into(),
        },
        id: id.into(),
        request: Box::new(request),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_the_sidecar_refuses_becomes_a_warning_event() {
    // The sidecar trusts another operator's key, so it answers 401.
    let stranger = StormSigner::parse(OTHER_KEY_HEX).unwrap();
    let (port, storms) = fixtures::sidecar(&stranger).await;
    let (ctx, mut server) = fixtures::context(port, false);
    let mut experiment = fixtures::experiment(json!({}));
    experiment.status = Some(MapChaosStatus::default());
    let plan = Plan {
        status: MapChaosStatus::default(),
        actions: vec![start("refused-1")],
        requeue: None,
        probe_needs: Default::default(),
    };
    let api: Api<MapChaos> = Api::namespaced(ctx.client.clone(), "shop");
    let acting = {
        let ctx = ctx.clone();
        let experiment = experiment.clone();
        tokio::spawn(
            async move { act(&api, &ctx.storms, &ctx.recorder(), &experiment, &plan).await },
        )
    };
    let event = server.event().await;
    assert_eq!(event["reason"], STORM_REFUSED);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["related"]["kind"], "Pod", "{event}");
    let note = event["note"].as_str().unwrap();
    assert!(note.starts_with("shop/cart-0: "), "{note}");
    assert!(note.contains("401"), "{note}");
    tokio::time::timeout(Duration::from_secs(10), acting)
        .await
        .unwrap()
        .unwrap()
        .expect("a refused storm is not a reconcile error");
    drop(ctx);
    server.done().await;
    assert!(storms.status("refused-1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sidecar_is_left_to_the_next_observation() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (ctx, server) = fixtures::context(port, false);
    let mut experiment = fixtures::experiment(json!({}));
    experiment.status = Some(MapChaosStatus::default());
    let plan = Plan {
        status: MapChaosStatus::default(),
        actions: vec![
            start("lost-1"),
            Action::StopStorm {
                endpoint: Endpoint {
                    namespace: "shop".into(),
                    pod: "cart-1".into(),
                    uid: "uid-cart-1".into(),
                    ip: "127.0.0.1".into(),
                },
                id: "lost-2".into(),
            },
        ],
        requeue: None,
        probe_needs: Default::default(),
    };
    let api: Api<MapChaos> = Api::namespaced(ctx.client.clone(), "shop");
    act(&api, &ctx.storms, &ctx.recorder(), &experiment, &plan)
        .await
        .expect("no API call and no error");
    drop((api, ctx));
    server.done().await;
}

#[test]
fn long_event_notes_are_cut_on_a_character_boundary() {
    let text = "é".repeat(600);
    let cut = truncate(&text, 1000);
    assert_eq!(cut.len(), 1000);
    assert_eq!(truncate("short", 1000), "short");
    assert_eq!(truncate("aé", 2), "a");
}

#[test]
fn a_merge_patch_deletes_what_the_new_status_drops() {
    let old = json!({"phase": "Aborted", "run": 1, "summary": {"ops": 5, "exposures": {"del_del": 3},
        "latency": {"p50": 1}, "p99": "1ms"}, "targets": [{"pod": "a"}]});
    let new =
        json!({"phase": "Running", "run": 2, "summary": {"ops": 0}, "targets": [{"pod": "b"}]});
    let patch = merge_patch(&old, &new);
    assert_eq!(
        patch,
        json!({"phase": "Running", "run": 2, "targets": [{"pod": "b"}],
            "summary": {"ops": 0, "exposures": null, "latency": null, "p99": null}})
    );
    assert_eq!(
        merge_patch(&Value::Null, &new),
        new,
        "no status yet: all of it"
    );
    assert_eq!(merge_patch(&new, &new), json!({}), "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_names_who_created_and_last_updated_the_experiment() {
    let (ctx, mut server) = fixtures::context(1, false);
    let mut experiment = fixtures::experiment(json!({}));
    experiment.metadata.annotations = Some(
        [
            (CREATED_BY_ANNOTATION.to_owned(), "alice".to_owned()),
            (UPDATED_BY_ANNOTATION.to_owned(), "bob".to_owned()),
        ]
        .into(),
    );
    experiment.status = Some(MapChaosStatus::default());
    let event = |reason, message: &str| {
        Action::Event(Event {
            kind: EventKind::Normal,
            reason,
            message: message.into(),
            pod: None,
        })
    };
    let plan = Plan {
        status: MapChaosStatus::default(),
        actions: vec![
            event("RunStarted", "run 1: storming shop/cart-0"),
            event("RunFinished", "run 1 Completed"),
        ],
        requeue: None,
        probe_needs: Default::default(),
    };
    let api: Api<MapChaos> = Api::namespaced(ctx.client.clone(), "shop");
    let acting = {
        let ctx = ctx.clone();
        tokio::spawn(
            async move { act(&api, &ctx.storms, &ctx.recorder(), &experiment, &plan).await },
        )
    };
    for want in [
        "run 1: storming shop/cart-0 (created by alice, updated by bob)",
        "run 1 Completed (created by alice, updated by bob)",
    ] {
        let event = server.event().await;
        assert_eq!(event["note"], want, "{event}");
    }
    tokio::time::timeout(Duration::from_secs(10), acting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(ctx);
    server.done().await;
}

#[test]
fn the_attribution_names_the_creator_once_when_they_also_updated_it() {
    let mut experiment = fixtures::experiment(json!({}));
    assert_eq!(attribution(&experiment), "");
    experiment.metadata.annotations =
        Some([(CREATED_BY_ANNOTATION.to_owned(), "alice".to_owned())].into());
    assert_eq!(attribution(&experiment), " (created by alice)");
    experiment
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(UPDATED_BY_ANNOTATION.into(), "alice".into());
    assert_eq!(attribution(&experiment), " (created by alice)");
}
