//! The sidecar-injection mutating admission webhook: `mutate` (pure) decides
//! the JSON patch that adds the mapchaos sidecar to a Pod being created, and
//! `serve` answers the API server's `AdmissionReview`s on `POST /mutate`
//! over HTTPS, with the MapChaos admission webhooks (`crate::admission`) on
//! the same server.
//!
//! Which pods are sent here is the MutatingWebhookConfiguration's business
//! (the chart's: pods labelled `mapchaos.io/inject: "true"`, and pods in
//! namespaces so labelled). The handler injects every Pod CREATE it is sent,
//! except a pod that already has a container named [`SIDECAR_CONTAINER`]
//! (so it never injects twice) and a pod that opts out with
//! `mapchaos.io/inject: "false"` (annotation or label).
//!
//! The webhook never blocks a pod on its own failure: an AdmissionReview it
//! cannot read or a patch it cannot build is answered "allowed, no patch" and
//! logged, as `failurePolicy: Ignore` does on the API server's side.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, body::Bytes};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::admission::{self, AdmissionState};
use crate::error::Error;
use crate::observe::{SIDECAR_CONTAINER, SIDECAR_LABEL};

/// The label (on a pod or a namespace) that asks for injection, and the
/// annotation or label value `"false"` on a pod that refuses it.
pub const INJECT: &str = "mapchaos.io/inject";
/// The annotation the webhook leaves on the pods it injected.
pub const INJECTED: &str = "mapchaos.io/injected";
/// The sidecar's HTTP port: the storm API, `/metrics`, `/healthz`, `/readyz`.
pub const SIDECAR_HTTP_PORT: i32 = 9464;
/// The name of that port (the chart's PodMonitor scrapes it by name).
pub const SIDECAR_HTTP_PORT_NAME: &str = "mapchaos-http";
/// The user every mapchaos image runs as (distroless `nonroot`).
pub const SIDECAR_USER: i64 = 65532;
/// The environment variable the sidecar reads the operator's public key from.
pub const PUBLIC_KEY_ENV: &str = "MAPCHAOS_OPERATOR_PUBLIC_KEY";
/// The environment variables the sidecar learns its pod from (the downward
/// API), and the pod fields they come from: storm requests are signed for
/// one pod, and its sidecar refuses any signed for another.
pub const POD_IDENTITY_ENV: [(&str, &str); 3] = [
    ("MAPCHAOS_POD_NAMESPACE", "metadata.namespace"),
    ("MAPCHAOS_POD_NAME", "metadata.name"),
    ("MAPCHAOS_POD_UID", "metadata.uid"),
];
/// The path the API server calls.
pub const MUTATE_PATH: &str = "/mutate";
/// A client that has not finished the TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// AdmissionReviews of pods near etcd's 1.5 MiB object limit fit.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What the injected container is made of.
#[derive(Debug, Clone)]
pub struct SidecarTemplate {
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; the cluster's default when unset.
    pub image_pull_policy: Option<String>,
    pub resources: ResourceRequirements,
    /// The operator's Ed25519 public key, 64 hex characters.
    pub operator_public_key: String,
}

/// How the webhook server runs.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// PEM certificate chain, leaf first (`tls.crt` of a TLS Secret).
    pub cert_file: PathBuf,
    /// PEM private key (`tls.key`).
    pub key_file: PathBuf,
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub resources: ResourceRequirements,
}

/// Why a pod is left alone, or `None` when it gets the sidecar.
pub fn skip_reason(pod: &Pod) -> Option<&'static str> {
    let Some(spec) = &pod.spec else {
        return Some("the pod has no spec");
    };
    if spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|container| container.name == SIDECAR_CONTAINER)
    {
        return Some("already has a mapchaos-sidecar container");
    }
    let says_false = |map: &Option<std::collections::BTreeMap<String, String>>| {
        map.as_ref()
            .and_then(|map| map.get(INJECT))
            .is_some_and(|value| value == "false")
    };
    if says_false(&pod.metadata.annotations) || says_false(&pod.metadata.labels) {
        return Some("opted out with mapchaos.io/inject: \"false\"");
    }
    None
}

/// The JSON patch that injects the sidecar into `pod`, or `None` when it must
/// be left alone (see [`skip_reason`]).
pub fn mutate(pod: &Pod, sidecar: &SidecarTemplate) -> Option<Patch> {
    if skip_reason(pod).is_some() {
        return None;
    }
    let container = serde_json::to_value(sidecar_container(sidecar)).ok()?;
    Some(Patch(vec![
        add(&["spec", "containers", "-"], container),
        add_to_map(
            pod.metadata.labels.is_some(),
            "labels",
            SIDECAR_LABEL,
            "true",
        ),
        add_to_map(
            pod.metadata.annotations.is_some(),
            "annotations",
            INJECTED,
            "true",
        ),
    ]))
}

/// The container the webhook adds.
pub fn sidecar_container(sidecar: &SidecarTemplate) -> Container {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(SIDECAR_HTTP_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(sidecar.image.clone()),
        image_pull_policy: sidecar.image_pull_policy.clone(),
        args: Some(vec![
            "sidecar".to_owned(),
            "--http-addr".to_owned(),
            format!("0.0.0.0:{SIDECAR_HTTP_PORT}"),
        ]),
        env: Some(
            std::iter::once(EnvVar {
                name: PUBLIC_KEY_ENV.to_owned(),
                value: Some(sidecar.operator_public_key.clone()),
                ..EnvVar::default()
            })
            .chain(POD_IDENTITY_ENV.iter().map(|(name, field)| EnvVar {
                name: (*name).to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".to_owned()),
                        field_path: (*field).to_owned(),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }))
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(SIDECAR_HTTP_PORT_NAME.to_owned()),
            container_port: SIDECAR_HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(sidecar.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_USER),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// `add` of one entry to `metadata.<map>`, creating the map when the pod has
/// none (a JSON patch cannot add a member to a missing object).
fn add_to_map(exists: bool, map: &str, key: &str, value: &str) -> PatchOperation {
    if exists {
        add(&["metadata", map, key], Value::from(value))
    } else {
        add(&["metadata", map], serde_json::json!({ key: value }))
    }
}

/// The answer to one AdmissionReview body: always `allowed`; with the
/// injection patch when the request is a Pod CREATE that [`mutate`] patches.
/// `Err` only when the body names no request to answer.
pub fn review(
    body: &[u8],
    sidecar: &SidecarTemplate,
) -> Result<AdmissionReview<DynamicObject>, String> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let uid = raw
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .ok_or("not an AdmissionReview: no request.uid")?
        .to_owned();
    let request: AdmissionRequest<Pod> = match serde_json::from_value::<AdmissionReview<Pod>>(
        raw.clone(),
    )
    .map_err(|e| e.to_string())
    .and_then(|review| review.try_into().map_err(|e| format!("{e}")))
    {
        Ok(request) => request,
        Err(reason) => {
            tracing::warn!(%uid, %reason, "cannot read the AdmissionReview; admitting without a sidecar");
            return Ok(allowed_without_request(&raw, uid));
        }
    };
    let response = AdmissionResponse::from(&request);
    let pod = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => pod,
        _ => return Ok(response.into_review()),
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    if let Some(reason) = skip_reason(pod) {
        tracing::debug!(%uid, %namespace, pod = %name, reason, "not injected");
        return Ok(response.into_review());
    }
    let Some(patch) = mutate(pod, sidecar) else {
        tracing::warn!(%uid, %namespace, pod = %name, "cannot build the sidecar patch; admitting without a sidecar");
        return Ok(response.into_review());
    };
    match response.clone().with_patch(patch) {
        Ok(patched) => {
            tracing::info!(%uid, %namespace, pod = %name, dry_run = request.dry_run, "sidecar injected");
            Ok(patched.into_review())
        }
        Err(error) => {
            tracing::warn!(%uid, %namespace, pod = %name, %error, "cannot serialise the sidecar patch; admitting without a sidecar");
            Ok(response.into_review())
        }
    }
}

/// "Allowed" for a request whose object could not be read.
fn allowed_without_request(raw: &Value, uid: String) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid;
    response.allowed = true;
    response.result = Default::default();
    if let Some(api_version) = raw.get("apiVersion").and_then(Value::as_str) {
        response.types.api_version = api_version.to_owned();
    }
    response.into_review()
}

/// `POST /mutate`.
pub fn router(sidecar: Arc<SidecarTemplate>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(sidecar)
}

async fn mutate_handler(State(sidecar): State<Arc<SidecarTemplate>>, body: Bytes) -> Response {
    match review(&body, &sidecar) {
        Ok(review) => Json(wire(review)).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "bad admission request");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

/// The review as the API server reads it. kube serialises the patch bytes as
/// a JSON array of numbers (kube-rs/kube#1781); the API documents a base64
/// string, as Go writes a `[]byte`, so the patch is re-encoded as one.
pub fn wire(review: AdmissionReview<DynamicObject>) -> Value {
    let patch = review
        .response
        .as_ref()
        .and_then(|response| response.patch.clone());
    let mut value = serde_json::to_value(review).unwrap_or(Value::Null);
    if let (Some(patch), Some(response)) = (patch, value.get_mut("response")) {
        response["patch"] = serde_json::to_value(ByteString(patch)).unwrap_or(Value::Null);
    }
    value
}

/// The server's TLS settings from a PEM certificate chain and key.
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, Error> {
    let tls_error = |path: &Path, reason: String| Error::WebhookTls {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(cert_file, "no PEM certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| tls_error(key_file, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(cert_file, format!("does not match the key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Read the certificate, bind `config.addr` and serve `POST /mutate` and the
/// MapChaos admission paths over HTTPS until `shutdown`.
/// `operator_public_key` goes into every sidecar.
pub async fn serve(
    config: &WebhookConfig,
    operator_public_key: String,
    admission: Arc<AdmissionState>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let tls = tls_config(&config.cert_file, &config.key_file)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| Error::WebhookServe {
            addr: config.addr,
            source,
        })?;
    let sidecar = Arc::new(SidecarTemplate {
        image: config.image.clone(),
        image_pull_policy: config.image_pull_policy.clone(),
        resources: config.resources.clone(),
        operator_public_key,
    });
    Ok(tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        router(sidecar).merge(admission::router(admission)),
        shutdown,
    )))
}

/// Each connection's TLS handshake and HTTP/1.1 exchange on its own task, so
/// a slow client delays nobody.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%error, "webhook accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %error, "webhook connection");
            }
        });
    }
}

#[cfg(test)]
mod tests;
