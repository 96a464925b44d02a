//! Test fixtures: a scripted Kubernetes API server (tower-test's mock, as
//! kube-rs/controller-rs uses it), a real sidecar control API on loopback,
//! and the experiments and pods the scenarios start from.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
use kube::Client;
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::events::Reporter;
use mapchaos_api::MapChaos;
use mapchaos_api::resource::FINALIZER;
use mapchaos_sidecar::control_api::{Verifier, router};
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::storms::Storms;
use serde_json::{Value, json};

use crate::controller::Context;
use crate::kill_switch::KillSwitch;
use crate::metrics::Metrics;
use crate::observe::SIDECAR_CONTAINER;
use crate::plan::Endpoint;
use crate::signing_key::StormSigner;
use crate::storm_client::StormClient;

pub const UID: &str = "5b0f6a2e-1111-4c8e-9c1e-2f9d3b7a0c44";
pub const KEY_HEX: &str = "5c5e02bd42bf7e23effceeafacab694269bbe87e15c80ac852cffae8052b0127";
pub const OTHER_KEY_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
/// Where the experiment lives in the API.
pub const EXPERIMENT_PATH: &str = "/apis/mapchaos.io/v1alpha1/namespaces/shop/mapchaos/storm";

pub fn signer() -> StormSigner {
    StormSigner::parse(KEY_HEX).unwrap()
}

/// The pod [`sidecar`] is: [`pod`]`("cart-0")`, on 127.0.0.1.
pub fn local_target() -> Endpoint {
    Endpoint {
        namespace: "shop".into(),
        pod: "cart-0".into(),
        uid: "uid-cart-0".into(),
        ip: "127.0.0.1".into(),
    }
}

/// A real sidecar control API on a loopback port, trusting `trusted`: the
/// sidecar of [`local_target`].
pub async fn sidecar(trusted: &StormSigner) -> (u16, Arc<Storms>) {
    let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(4, Clock::System));
    let storms = Storms::new(engine, Arc::new(SidecarMetrics::new()));
    let verifier = Verifier::new(
        Some(&trusted.public_key_hex()),
        Some(local_target().identity()),
    )
    .unwrap();
    let app = router(storms.clone(), verifier);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, storms)
}

/// An experiment storming every `app=cart` pod in `shop` for 30s, with the
/// finalizer on.
pub fn experiment(spec: Value) -> MapChaos {
    let mut base = json!({
        "selector": {"labelSelectors": {"app": "cart"}},
        "mode": "all",
        "duration": "30s",
        "storm": {"workers": 2},
        "check": {"maxOps": 20000},
    });
    json_merge(&mut base, spec);
    let mut experiment = MapChaos::new("storm", serde_json::from_value(base).unwrap());
    experiment.metadata = ObjectMeta {
        name: Some("storm".into()),
        namespace: Some("shop".into()),
        uid: Some(UID.into()),
        generation: Some(1),
        resource_version: Some("100".into()),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    experiment
}

fn json_merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                json_merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A Running, Ready `app=cart` pod with the sidecar, reachable on loopback.
pub fn pod(name: &str) -> Pod {
    pod_at(name, "127.0.0.1")
}

/// [`pod`] with its own IP (a loopback address its sidecar listens on).
pub fn pod_at(name: &str, ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_owned(), "cart".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: ["app", SIDECAR_CONTAINER]
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
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

/// A context on a scripted API server, with storms sent to `sidecar_port`.
pub fn context(sidecar_port: u16, kill_switch: bool) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        StormClient::new(signer()).with_port(sidecar_port),
        Reporter {
            controller: "mapchaos-operator".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::new()),
        KillSwitch::fixed(kill_switch),
    );
    (Arc::new(ctx), ApiServer(handle))
}

/// One request the operator made.
pub struct Seen {
    pub method: http::Method,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// The API server's side: each scenario answers the requests it expects,
/// in order.
pub struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Take the next request and answer `status` with `answer(request)`.
    pub async fn answer(
        &mut self,
        status: StatusCode,
        answer: impl FnOnce(&Seen) -> Value,
    ) -> Seen {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the operator made no further request")
            .expect("the client is gone");
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("the operator sends JSON")
        };
        let seen = Seen {
            method,
            uri,
            content_type,
            body,
        };
        let response = serde_json::to_vec(&answer(&seen)).unwrap();
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(response))
                .unwrap(),
        );
        seen
    }

    /// Answer the pod list of `shop` with `pods`.
    pub async fn pods(&mut self, pods: &[Pod]) {
        let seen = self
            .answer(
                StatusCode::OK,
                |_| json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
            )
            .await;
        assert_eq!(seen.method, http::Method::GET);
        assert!(
            seen.uri.starts_with("/api/v1/namespaces/shop/pods"),
            "{}",
            seen.uri
        );
    }

    /// Accept an Event and return it.
    pub async fn event(&mut self) -> Value {
        let seen = self
            .answer(StatusCode::CREATED, |seen| seen.body.clone())
            .await;
        assert_eq!(seen.method, http::Method::POST);
        assert!(
            seen.uri
                .starts_with("/apis/events.k8s.io/v1/namespaces/shop/events"),
            "{}",
            seen.uri
        );
        seen.body
    }

    /// Accept a status patch of `experiment` and return the request.
    pub async fn status_patch(&mut self, experiment: &MapChaos) -> Seen {
        let experiment = experiment.clone();
        self.answer(StatusCode::OK, move |seen| {
            let mut patched = serde_json::to_value(&experiment).unwrap();
            patched["status"] = seen.body["status"].clone();
            patched
        })
        .await
    }

    /// Accept a patch of the experiment's metadata and return the request.
    pub async fn metadata_patch(&mut self, experiment: &MapChaos) -> Seen {
        let experiment = serde_json::to_value(experiment).unwrap();
        self.answer(StatusCode::OK, move |_| experiment).await
    }

    /// The operator made no other request (its client is dropped by then).
    pub async fn done(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the client was not dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
