//! A cluster in one process, for scenarios that span many reconciles: an
//! in-memory Kubernetes API that answers the few calls the controller makes
//! (pod lists, Events, MapChaos finalizer and status patches, report
//! Secrets listed by label, created and deleted) from state the
//! scenario edits, and map-service sidecars (the real signed control API and
//! engine) on distinct loopback addresses sharing one port, as pods share
//! the sidecar's port on their own IPs. Shared by the controller's scenario
//! tests and the operator benchmark, so it uses nothing of the operator.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use mapchaos_api::signing::PodIdentity;
use mapchaos_api::{MapChaos, MapChaosStatus};
use mapchaos_sidecar::control_api::{Verifier, router};
use mapchaos_sidecar::engine::MapEngine;
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::storms::Storms;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// An Event the operator recorded (created, or patched as a repeat).
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub type_: String,
    pub reason: String,
    pub note: String,
    /// A repeat of an earlier Event (kube's recorder patches its series).
    pub repeat: bool,
}

#[derive(Default)]
struct ApiState {
    experiments: BTreeMap<(String, String), MapChaos>,
    pods: Vec<Pod>,
    events: Vec<RecordedEvent>,
    /// Secrets as JSON, by (namespace, name).
    secrets: BTreeMap<(String, String), Value>,
    unexpected: Vec<String>,
    version: u64,
}

impl ApiState {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

/// The API server's state, shared by every client made from it.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<ApiState>>,
}

impl FakeApi {
    /// A client whose requests this API answers, as a separate operator
    /// process would have its own. The answering task ends when the client
    /// (and all its clones) is dropped.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                let body = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, answer) = answer(&mut state.lock(), &method, &path, &query, body);
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
        });
        Client::new(service, "default")
    }

    /// Create (or replace) an experiment.
    pub fn put_experiment(&self, mut experiment: MapChaos) {
        let mut state = self.state.lock();
        experiment.metadata.resource_version = Some(state.next_version());
        let key = key_of(&experiment);
        state.experiments.insert(key, experiment);
    }

    /// The experiment as the API server holds it now.
    pub fn experiment(&self, namespace: &str, name: &str) -> Option<MapChaos> {
        self.state
            .lock()
            .experiments
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Change an experiment as a user would (a new resourceVersion).
    pub fn edit_experiment(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut MapChaos)) {
        let mut state = self.state.lock();
        let version = state.next_version();
        let experiment = state
            .experiments
            .get_mut(&(namespace.to_owned(), name.to_owned()))
            .expect("the experiment exists");
        edit(experiment);
        experiment.metadata.resource_version = Some(version);
    }

    /// `kubectl delete`: gone at once without finalizers, else marked.
    pub fn delete_experiment(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut state = self.state.lock();
        let version = state.next_version();
        let Some(experiment) = state.experiments.get_mut(&key) else {
            return;
        };
        if experiment
            .metadata
            .finalizers
            .iter()
            .flatten()
            .next()
            .is_none()
        {
            state.experiments.remove(&key);
            return;
        }
        experiment
            .metadata
            .deletion_timestamp
            .get_or_insert_with(|| Time(jiff::Timestamp::now()));
        experiment.metadata.resource_version = Some(version);
    }

    pub fn set_pods(&self, pods: Vec<Pod>) {
        self.state.lock().pods = pods;
    }

    /// Remove the pod named `name` (in any namespace).
    pub fn delete_pod(&self, name: &str) {
        self.state
            .lock()
            .pods
            .retain(|pod| pod.metadata.name.as_deref() != Some(name));
    }

    pub fn events(&self) -> Vec<RecordedEvent> {
        self.state.lock().events.clone()
    }

    /// The Secrets there are, as JSON.
    pub fn secrets(&self) -> Vec<Value> {
        self.state.lock().secrets.values().cloned().collect()
    }

    /// Requests this API does not serve, as "METHOD path".
    pub fn unexpected(&self) -> Vec<String> {
        self.state.lock().unexpected.clone()
    }
}

fn key_of(experiment: &MapChaos) -> (String, String) {
    (
        experiment.metadata.namespace.clone().unwrap_or_default(),
        experiment.metadata.name.clone().unwrap_or_default(),
    )
}

fn failure(status: StatusCode, message: impl Into<String>) -> (StatusCode, Value) {
    let reason = match status {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        _ => "Invalid",
    };
    (
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message.into(), "reason": reason, "code": status.as_u16()}),
    )
}

/// Whether `secret` matches the `labelSelector` of `query` (equality
/// terms only, as the operator writes them).
fn selected(secret: &Value, query: &str) -> bool {
    let selector = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("labelSelector="))
        .unwrap_or_default()
        .replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%2F", "/");
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        secret["metadata"]["labels"][key].as_str() == Some(value)
    })
}

fn answer(
    state: &mut ApiState,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> (StatusCode, Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["api", "v1", "namespaces", namespace, "secrets"]) => {
            let items: Vec<&Value> = state
                .secrets
                .iter()
                .filter(|((ns, _), secret)| ns == namespace && selected(secret, query))
                .map(|(_, secret)| secret)
                .collect();
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items}),
            )
        }
        (&Method::POST, ["api", "v1", "namespaces", namespace, "secrets"]) => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            let key = ((*namespace).to_owned(), name.to_owned());
            if state.secrets.contains_key(&key) {
                return failure(StatusCode::CONFLICT, format!("secret {name} exists"));
            }
            state.secrets.insert(key, body.clone());
            (StatusCode::CREATED, body)
        }
        (&Method::DELETE, ["api", "v1", "namespaces", namespace, "secrets", name]) => {
            match state
                .secrets
                .remove(&((*namespace).to_owned(), (*name).to_owned()))
            {
                Some(_) => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ),
                None => failure(StatusCode::NOT_FOUND, format!("secret {name} not found")),
            }
        }
        (&Method::GET, ["api", "v1", "namespaces", namespace, "pods"]) => {
            let items: Vec<&Pod> = state
                .pods
                .iter()
                .filter(|pod| pod.metadata.namespace.as_deref() == Some(*namespace))
                .collect();
            let version = state.version.to_string();
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList",
                       "metadata": {"resourceVersion": version}, "items": items}),
            )
        }
        (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            state.events.push(recorded(&body, false));
            (StatusCode::CREATED, body)
        }
        (&Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
            state.events.push(recorded(&body, true));
            (StatusCode::OK, body)
        }
        (
            &Method::PATCH,
            [
                "apis",
                "mapchaos.io",
                "v1alpha1",
                "namespaces",
                namespace,
                "mapchaos",
                name,
                "status",
            ],
        ) => {
            let key = ((*namespace).to_owned(), (*name).to_owned());
            let version = state.next_version();
            let Some(experiment) = state.experiments.get_mut(&key) else {
                return failure(StatusCode::NOT_FOUND, format!("mapchaos {name} not found"));
            };
            let status: MapChaosStatus = match serde_json::from_value(body["status"].clone()) {
                Ok(status) => status,
                Err(error) => {
                    return failure(StatusCode::UNPROCESSABLE_ENTITY, error.to_string());
                }
            };
            experiment.status = Some(status);
            experiment.metadata.resource_version = Some(version);
            let answer = serde_json::to_value(&*experiment).unwrap();
            (StatusCode::OK, answer)
        }
        (
            &Method::PATCH,
            [
                "apis",
                "mapchaos.io",
                "v1alpha1",
                "namespaces",
                namespace,
                "mapchaos",
                name,
            ],
        ) => {
            let key = ((*namespace).to_owned(), (*name).to_owned());
            let version = state.next_version();
            let Some(experiment) = state.experiments.get(&key) else {
                return failure(StatusCode::NOT_FOUND, format!("mapchaos {name} not found"));
            };
            let expected = &body["metadata"]["resourceVersion"];
            if !expected.is_null()
                && expected.as_str() != experiment.metadata.resource_version.as_deref()
            {
                return failure(
                    StatusCode::CONFLICT,
                    "the object has been modified; please apply your changes to the latest version",
                );
            }
            let mut document = serde_json::to_value(experiment).unwrap();
            let mut patch = body.clone();
            if let Some(metadata) = patch["metadata"].as_object_mut() {
                metadata.remove("resourceVersion");
            }
            json_patch::merge(&mut document, &patch);
            let mut patched: MapChaos = match serde_json::from_value(document) {
                Ok(patched) => patched,
                Err(error) => return failure(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
            };
            patched.metadata.resource_version = Some(version);
            let answer = serde_json::to_value(&patched).unwrap();
            let released = patched.metadata.deletion_timestamp.is_some()
                && patched
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .next()
                    .is_none();
            if released {
                state.experiments.remove(&key);
            } else {
                state.experiments.insert(key, patched);
            }
            (StatusCode::OK, answer)
        }
        _ => {
            state.unexpected.push(format!("{method} {path}"));
            failure(
                StatusCode::NOT_FOUND,
                format!("{method} {path} is not served here"),
            )
        }
    }
}

fn recorded(event: &Value, repeat: bool) -> RecordedEvent {
    let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
    RecordedEvent {
        type_: text("type"),
        reason: text("reason"),
        note: text("note"),
        repeat,
    }
}

/// One request a sidecar answered.
#[derive(Debug, Clone)]
pub struct SidecarCall {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A sidecar's control API on its own loopback address.
pub struct LoopbackSidecar {
    pub ip: String,
    pub storms: Arc<Storms>,
    calls: Arc<Mutex<Vec<SidecarCall>>>,
    shutdown: CancellationToken,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LoopbackSidecar {
    pub fn calls(&self) -> Vec<SidecarCall> {
        self.calls.lock().clone()
    }

    /// The ids of the storms this sidecar started (PUTs it answered 201).
    pub fn storms_started(&self) -> Vec<String> {
        self.calls
            .lock()
            .iter()
            .filter(|call| call.method == "PUT" && call.status == 201)
            .map(|call| call.path.trim_start_matches("/v1/storms/").to_owned())
            .collect()
    }

    /// Stop serving (its storm, if any, runs on until its duration or
    /// lease ends, as in a sidecar cut off from the operator).
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let server = self.server.lock().take();
        if let Some(server) = server {
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the sidecar's server stops")
                .expect("the sidecar's server did not panic");
        }
    }
}

impl Drop for LoopbackSidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The address of sidecar `index` in loopback network `net`: 127.net.x.y.
fn address(net: u8, index: usize) -> Ipv4Addr {
    let host = index + 1;
    assert!(host < 250 * 250, "too many sidecars");
    Ipv4Addr::new(127, net, (host / 250) as u8, (host % 250 + 1) as u8)
}

/// The pod sidecar `index` of [`sidecars`] is: `shop/cart-{index}`, uid
/// `uid-cart-{index}` (as `fixtures::pod_at` names them).
pub fn sidecar_pod(index: usize) -> PodIdentity {
    PodIdentity::new("shop", format!("cart-{index}"), format!("uid-cart-{index}"))
}

/// One sidecar per engine, at 127.net.x.y, all on the returned port and
/// trusting the operator key `public_key_hex`; sidecar `index` is the pod
/// `pod(index)` (for example [`sidecar_pod`]).
pub async fn sidecars(
    net: u8,
    engines: Vec<Arc<dyn MapEngine>>,
    public_key_hex: &str,
    pod: impl Fn(usize) -> PodIdentity,
) -> (u16, Vec<LoopbackSidecar>) {
    let (port, listeners) = bind_all(net, engines.len());
    let mut sidecars = Vec::new();
    for (index, (engine, listener)) in engines.into_iter().zip(listeners).enumerate() {
        let verifier =
            Verifier::new(Some(public_key_hex), Some(pod(index))).expect("a valid public key");
        let storms = Storms::new(engine, Arc::new(SidecarMetrics::new()));
        let calls: Arc<Mutex<Vec<SidecarCall>>> = Arc::default();
        let log = calls.clone();
        let app = router(storms.clone(), verifier).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    let method = request.method().to_string();
                    let path = request.uri().path().to_owned();
                    let response = next.run(request).await;
                    let status = response.status().as_u16();
                    log.lock().push(SidecarCall {
                        method,
                        path,
                        status,
                    });
                    response
                }
            },
        ));
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let signal = shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await;
        });
        sidecars.push(LoopbackSidecar {
            ip: address(net, index).to_string(),
            storms,
            calls,
            shutdown,
            server: Mutex::new(Some(server)),
        });
    }
    (port, sidecars)
}

/// `count` listeners on one port, one per address; the port is the
/// kernel's pick for the first address, and every address is tried again
/// on another port when one of them has it taken.
fn bind_all(net: u8, count: usize) -> (u16, Vec<std::net::TcpListener>) {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind(SocketAddr::from((address(net, 0), 0)))
            .expect("bind a loopback address");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for index in 1..count {
            match std::net::TcpListener::bind(SocketAddr::from((address(net, index), port))) {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() == count {
            for listener in &listeners {
                listener.set_nonblocking(true).unwrap();
            }
            return (port, listeners);
        }
    }
    panic!("no port free on {count} loopback addresses of 127.{net}.0.0/16");
}
