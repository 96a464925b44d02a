//! The MapChaos admission webhooks, served next to sidecar injection:
//! `POST /mapchaos/validate` decides whether the requesting user may storm
//! every namespace a MapChaos reaches, and `POST /mapchaos/mutate` stamps who
//! created and who last changed it.
//!
//! Validation, for a CREATE and for an UPDATE that changes the spec, labels
//! or annotations: one SubjectAccessReview per reachable namespace
//! ([`reachable_namespaces`]) asking whether the requesting user (name,
//! groups, uid, extra, as the AdmissionReview gives them) may `create` (or,
//! for an UPDATE, `update`) `mapchaos.io/mapchaos` there, so a tenant storms
//! only namespaces it could have created the experiment in. When the spec is
//! written (CREATE, or an UPDATE that changes it) every such namespace must
//! also pass the [`Guardrails`] (opt-in label, protection, the ban on
//! existing keys). Finalizer-only updates (the operator's own, `mapchaos
//! release`) and updates of an experiment being deleted are let through, so
//! an experiment can always be let go of.
//!
//! Everything that can go wrong fails closed: an AdmissionReview the handler
//! cannot read, a SubjectAccessReview or Namespace read that fails, all deny.
//! `decide` and `stamp` are pure; the HTTP handling asks the API server
//! through [`Cluster`], so it is tested without one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use futures::future::BoxFuture;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, Resource};
use mapchaos_api::MapChaos;
use mapchaos_api::resource::{CREATED_BY_ANNOTATION, UPDATED_BY_ANNOTATION};
use mapchaos_api::spec::MapChaosSpec;
use serde_json::Value;

use crate::policy::{Guardrails, NamespaceFacts};

/// Where the API server sends MapChaos CREATEs and UPDATEs to be judged.
pub const VALIDATE_PATH: &str = "/mapchaos/validate";
/// Where it sends them to be stamped with who wrote them.
pub const STAMP_PATH: &str = "/mapchaos/mutate";
/// A MapChaos reaching more namespaces than this is refused: each costs a
/// SubjectAccessReview within the API server's webhook timeout.
pub const MAX_NAMESPACES: usize = 64;
/// SubjectAccessReviews and Namespace reads in flight for one request.
const QUESTIONS_IN_FLIGHT: usize = 16;
/// AdmissionReviews of objects near etcd's 1.5 MiB limit fit.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Every namespace a MapChaos can reach: `selector.namespaces` and the keys
/// of `selector.pods` (both, whichever the selector uses), or its own
/// namespace when neither is set. Sorted, without repeats.
pub fn reachable_namespaces(spec: &MapChaosSpec, own_namespace: &str) -> Vec<String> {
    let selector = &spec.selector;
    let mut namespaces: Vec<String> = selector
        .namespaces
        .iter()
        .chain(selector.pods.keys())
        .cloned()
        .collect();
    if namespaces.is_empty() {
        namespaces.push(own_namespace.to_owned());
    }
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// The verb a request is authorised as: the operation's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Update,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
        }
    }
}

/// What must be checked for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub verb: Verb,
    pub user: UserInfo,
    /// [`reachable_namespaces`] of the new object.
    pub namespaces: Vec<String>,
    /// The spec is being written: the namespaces must pass the guardrails.
    pub check_policy: bool,
    pub spec: MapChaosSpec,
}

/// Whether a request is checked, and if not, why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Check(Box<Review>),
    Pass(&'static str),
}

/// Whether an update changes what is stormed or when: the spec, the labels,
/// or the annotations other than the two stamps (a pause annotation starts
/// and stops storms). Finalizers, status and the stamps do not count.
pub fn changes_experiment(old: &MapChaos, new: &MapChaos) -> bool {
    let annotations = |experiment: &MapChaos| {
        experiment
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(key, _)| *key != CREATED_BY_ANNOTATION && *key != UPDATED_BY_ANNOTATION)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<BTreeMap<String, String>>()
    };
    let labels = |experiment: &MapChaos| experiment.metadata.labels.clone().unwrap_or_default();
    old.spec != new.spec || labels(old) != labels(new) || annotations(old) != annotations(new)
}

/// What to check for `request` (pure).
pub fn scope(request: &AdmissionRequest<MapChaos>) -> Result<Scope, String> {
    let verb = match request.operation {
        Operation::Create => Verb::Create,
        Operation::Update => Verb::Update,
        Operation::Delete | Operation::Connect => return Ok(Scope::Pass("not a write")),
    };
    let object = request
        .object
        .as_ref()
        .ok_or("the AdmissionReview carries no object")?;
    let mut check_policy = true;
    if verb == Verb::Update {
        let old = request
            .old_object
            .as_ref()
            .ok_or("the AdmissionReview of an update carries no oldObject")?;
        if object.metadata.deletion_timestamp.is_some() {
            return Ok(Scope::Pass("being deleted: nothing more is stormed"));
        }
        if !changes_experiment(old, object) {
            return Ok(Scope::Pass(
                "no change to the spec, labels or annotations (finalizers or stamps only)",
            ));
        }
        check_policy = old.spec != object.spec;
    }
    let own = request
        .namespace
        .as_deref()
        .or(object.metadata.namespace.as_deref())
        .ok_or("the request names no namespace")?;
    Ok(Scope::Check(Box::new(Review {
        verb,
        user: request.user_info.clone(),
        namespaces: reachable_namespaces(&object.spec, own),
        check_policy,
        spec: object.spec.clone(),
    })))
}

/// The SubjectAccessReview asking whether `user` may `verb` MapChaos in
/// `namespace`: the CRD's group and plural, no name (the question is about
/// the namespace, not one object).
pub fn access_review(user: &UserInfo, verb: Verb, namespace: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.as_str().to_owned()),
                group: Some(MapChaos::group(&()).into_owned()),
                resource: Some(MapChaos::plural(&()).into_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The API server's answer to one SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Not allowed; the authorizer's reason, if it gave one.
    Denied(String),
    /// The question could not be asked or answered.
    Unknown(String),
}

impl From<SubjectAccessReviewStatus> for Access {
    fn from(status: SubjectAccessReviewStatus) -> Self {
        if status.allowed && status.denied != Some(true) {
            Access::Allowed
        } else if let Some(error) = status.evaluation_error.filter(|e| !e.is_empty())
            && status.reason.as_deref().is_none_or(str::is_empty)
        {
            Access::Unknown(error)
        } else {
            Access::Denied(status.reason.unwrap_or_default())
        }
    }
}

/// What the API server said, by namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answers {
    pub access: BTreeMap<String, Access>,
    /// The Namespace objects (`Ok(None)`: it does not exist); asked only
    /// when the guardrails are checked.
    pub namespaces: BTreeMap<String, Result<Option<NamespaceFacts>, String>>,
}

/// The user as messages name them.
pub fn user_name(user: &UserInfo) -> &str {
    user.username
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("(unknown user)")
}

/// Allow, or deny with a message naming the user, the verb and the first
/// namespace that fails (pure).
pub fn decide(review: &Review, answers: &Answers, guardrails: &Guardrails) -> Result<(), String> {
    let user = user_name(&review.user);
    let verb = review.verb.as_str();
    if review.namespaces.len() > MAX_NAMESPACES {
        return Err(format!(
            "this MapChaos reaches {} namespaces; at most {MAX_NAMESPACES} are allowed \
             (spec.selector.namespaces and spec.selector.pods)",
            review.namespaces.len()
        ));
    }
    let resource = format!("{}/{}", MapChaos::group(&()), MapChaos::plural(&()));
    for namespace in &review.namespaces {
        match answers.access.get(namespace) {
            Some(Access::Allowed) => {}
            Some(Access::Denied(reason)) => {
                let reason = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                return Err(format!(
                    "user \"{user}\" may not {verb} {resource} in namespace \"{namespace}\", which \
                     this MapChaos's selector reaches{reason}"
                ));
            }
            Some(Access::Unknown(error)) => {
                return Err(format!(
                    "cannot check whether user \"{user}\" may {verb} {resource} in namespace \
                     \"{namespace}\" (refused, to be safe): {error}"
                ));
            }
            None => {
                return Err(format!(
                    "no answer whether user \"{user}\" may {verb} {resource} in namespace \
                     \"{namespace}\" (refused, to be safe)"
                ));
            }
        }
    }
    if !review.check_policy {
        return Ok(());
    }
    for namespace in &review.namespaces {
        let facts = match answers.namespaces.get(namespace) {
            Some(Ok(facts)) => facts.as_ref(),
            Some(Err(error)) => {
                return Err(format!(
                    "cannot read namespace \"{namespace}\" to check the guardrails (refused, to be \
                     safe): {error}"
                ));
            }
            None => {
                return Err(format!(
                    "namespace \"{namespace}\" was not read (refused, to be safe)"
                ));
            }
        };
        if let Some(why) = guardrails.namespace_refusal(namespace, facts, &review.spec) {
            return Err(format!("this MapChaos may not storm there: {why}"));
        }
    }
    Ok(())
}

/// The JSON patch that records who wrote the object (pure): on CREATE,
/// `created-by` is the requesting user and `updated-by` is removed; on an
/// UPDATE, `created-by` keeps the old object's value (or is removed when it
/// had none), and `updated-by` becomes the user when [`changes_experiment`],
/// else keeps the old value. Whatever the user wrote there is overwritten.
/// `None` when the object already says exactly that.
pub fn stamp(request: &AdmissionRequest<MapChaos>) -> Option<Patch> {
    let object = request.object.as_ref()?;
    let user = user_name(&request.user_info).to_owned();
    let old_value = |key: &str| {
        request
            .old_object
            .as_ref()
            .and_then(|old| old.metadata.annotations.as_ref())
            .and_then(|annotations| annotations.get(key))
            .cloned()
    };
    let (created_by, updated_by) = match request.operation {
        Operation::Create => (Some(user), None),
        Operation::Update => {
            let old = request.old_object.as_ref()?;
            let changed =
                object.metadata.deletion_timestamp.is_none() && changes_experiment(old, object);
            (
                old_value(CREATED_BY_ANNOTATION),
                if changed {
                    Some(user)
                } else {
                    old_value(UPDATED_BY_ANNOTATION)
                },
            )
        }
        Operation::Delete | Operation::Connect => return None,
    };
    let current = object.metadata.annotations.as_ref();
    let wanted = [
        (CREATED_BY_ANNOTATION, created_by),
        (UPDATED_BY_ANNOTATION, updated_by),
    ];
    let Some(current) = current else {
        let added: serde_json::Map<String, Value> = wanted
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), Value::String(value?))))
            .collect();
        return (!added.is_empty()).then(|| {
            Patch(vec![PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations"]),
                value: Value::Object(added),
            })])
        });
    };
    let ops: Vec<PatchOperation> = wanted
        .into_iter()
        .filter_map(|(key, value)| {
            let path = PointerBuf::from_tokens(["metadata", "annotations", key]);
            match (current.get(key), value) {
                (Some(have), Some(want)) if *have == want => None,
                (_, Some(want)) => Some(PatchOperation::Add(AddOperation {
                    path,
                    value: Value::String(want),
                })),
                (Some(_), None) => Some(PatchOperation::Remove(RemoveOperation { path })),
                (None, None) => None,
            }
        })
        .collect();
    (!ops.is_empty()).then_some(Patch(ops))
}

/// The questions the validating webhook asks the API server.
pub trait Cluster: Send + Sync {
    /// Create a SubjectAccessReview and return its answer.
    fn review_access(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>>;
    /// Read a Namespace; `Ok(None)` when it does not exist.
    fn namespace(&self, name: String) -> BoxFuture<'_, Result<Option<NamespaceFacts>, String>>;
}

impl Cluster for Client {
    fn review_access(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.clone());
            let answered = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("SubjectAccessReview: {e}"))?;
            answered
                .status
                .ok_or_else(|| "SubjectAccessReview: no status in the answer".to_owned())
        })
    }

    fn namespace(&self, name: String) -> BoxFuture<'_, Result<Option<NamespaceFacts>, String>> {
        Box::pin(async move {
            let api: Api<Namespace> = Api::all(self.clone());
            api.get_opt(&name)
                .await
                .map(|namespace| namespace.as_ref().map(NamespaceFacts::of))
                .map_err(|e| format!("reading the Namespace: {e}"))
        })
    }
}

/// Ask everything [`decide`] needs for `review`, a bounded number at once.
pub async fn ask(cluster: &dyn Cluster, review: &Review) -> Answers {
    if review.namespaces.len() > MAX_NAMESPACES {
        return Answers::default();
    }
    // Owned names: futures borrowing from a closure's argument do not meet
    // the `Send` bound a handler's future needs.
    let questions: Vec<_> = review
        .namespaces
        .iter()
        .cloned()
        .map(|namespace| {
            let question = access_review(&review.user, review.verb, &namespace);
            async move {
                let answer = match cluster.review_access(question).await {
                    Ok(status) => Access::from(status),
                    Err(error) => Access::Unknown(error),
                };
                (namespace, answer)
            }
        })
        .collect();
    let access = futures::stream::iter(questions)
        .buffer_unordered(QUESTIONS_IN_FLIGHT)
        .collect()
        .await;
    let namespaces = if review.check_policy {
        let reads: Vec<_> = review
            .namespaces
            .iter()
            .cloned()
            .map(|namespace| async move {
                let facts = cluster.namespace(namespace.clone()).await;
                (namespace, facts)
            })
            .collect();
        futures::stream::iter(reads)
            .buffer_unordered(QUESTIONS_IN_FLIGHT)
            .collect()
            .await
    } else {
        BTreeMap::new()
    };
    Answers { access, namespaces }
}

/// What the admission handlers share.
pub struct AdmissionState {
    pub cluster: Arc<dyn Cluster>,
    pub guardrails: Guardrails,
}

/// The envelope of an AdmissionReview body: the raw JSON and the request uid.
fn envelope(body: &[u8]) -> Result<(Value, String), String> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let uid = raw
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .ok_or("not an AdmissionReview: no request.uid")?
        .to_owned();
    Ok((raw, uid))
}

fn request_of(raw: Value) -> Result<AdmissionRequest<MapChaos>, String> {
    serde_json::from_value::<AdmissionReview<MapChaos>>(raw)
        .map_err(|e| e.to_string())
        .and_then(|review| review.try_into().map_err(|e| format!("{e}")))
}

/// A denial for a request whose object could not be read.
fn refused_unread(raw: &Value, uid: String, reason: String) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(reason);
    response.uid = uid;
    if let Some(api_version) = raw.get("apiVersion").and_then(Value::as_str) {
        response.types.api_version = api_version.to_owned();
    }
    response.into_review()
}

fn denied(response: AdmissionResponse, message: String) -> AdmissionReview<DynamicObject> {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".into();
    response.into_review()
}

/// The answer to one AdmissionReview body sent to [`VALIDATE_PATH`]. `Err`
/// only when the body names no request to answer.
pub async fn validate(
    body: &[u8],
    state: &AdmissionState,
) -> Result<AdmissionReview<DynamicObject>, String> {
    let (raw, uid) = envelope(body)?;
    let request = match request_of(raw.clone()) {
        Ok(request) => request,
        Err(reason) => {
            tracing::warn!(%uid, %reason, "cannot read the MapChaos AdmissionReview; refusing it");
            return Ok(refused_unread(
                &raw,
                uid,
                format!("cannot read the MapChaos in the admission request: {reason}"),
            ));
        }
    };
    let response = AdmissionResponse::from(&request);
    let namespace = request.namespace.clone().unwrap_or_default();
    let name = request.name.clone();
    let review = match scope(&request) {
        Ok(Scope::Check(review)) => review,
        Ok(Scope::Pass(why)) => {
            tracing::debug!(%uid, %namespace, %name, why, "MapChaos admitted unchecked");
            return Ok(response.into_review());
        }
        Err(reason) => return Ok(denied(response, reason)),
    };
    let answers = ask(state.cluster.as_ref(), &review).await;
    let user = user_name(&review.user);
    match decide(&review, &answers, &state.guardrails) {
        Ok(()) => {
            tracing::info!(%uid, %namespace, %name, user, verb = review.verb.as_str(), reaches = ?review.namespaces, "MapChaos admitted");
            Ok(response.into_review())
        }
        Err(message) => {
            tracing::info!(%uid, %namespace, %name, user, verb = review.verb.as_str(), %message, "MapChaos refused");
            Ok(denied(response, message))
        }
    }
}

/// The answer to one AdmissionReview body sent to [`STAMP_PATH`]: allowed,
/// with the [`stamp`] patch. A request that cannot be read is refused, so
/// no MapChaos is written without its stamp.
pub fn stamp_review(body: &[u8]) -> Result<AdmissionReview<DynamicObject>, String> {
    let (raw, uid) = envelope(body)?;
    let request = match request_of(raw.clone()) {
        Ok(request) => request,
        Err(reason) => {
            return Ok(refused_unread(
                &raw,
                uid,
                format!("cannot read the MapChaos in the admission request: {reason}"),
            ));
        }
    };
    let response = AdmissionResponse::from(&request);
    let Some(patch) = stamp(&request) else {
        return Ok(response.into_review());
    };
    match response.clone().with_patch(patch) {
        Ok(patched) => Ok(patched.into_review()),
        Err(error) => Ok(denied(
            response,
            format!("cannot serialise the created-by/updated-by patch: {error}"),
        )),
    }
}

/// `POST /mapchaos/validate` and `POST /mapchaos/mutate`.
pub fn router(state: Arc<AdmissionState>) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(validate_handler))
        .route(STAMP_PATH, post(stamp_handler))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn validate_handler(State(state): State<Arc<AdmissionState>>, body: Bytes) -> Response {
    match validate(&body, &state).await {
        Ok(review) => axum::Json(crate::webhook::wire(review)).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "bad MapChaos admission request");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

async fn stamp_handler(body: Bytes) -> Response {
    match stamp_review(&body) {
        Ok(review) => axum::Json(crate::webhook::wire(review)).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "bad MapChaos admission request");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests;
