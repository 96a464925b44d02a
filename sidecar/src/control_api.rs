//! The storm control API on the sidecar's HTTP port: `PUT/GET/DELETE
//! /v1/storms/{id}`, `GET /v1/storms/{id}/history` and the delete journal,
//! `GET /v1/storms/{id}/audit`. Mutating calls and the journal must be
//! signed by the operator's Ed25519 key (see `mapchaos_api::signing`);
//! unsigned, stale or tampered requests get 401, oversized ones 413.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ed25519_dalek::{Signature, VerifyingKey};
use mapchaos_api::signing::{
    MAX_SKEW_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER, from_hex, signed_message,
};
use mapchaos_api::storm::StormRequest;
use serde_json::json;

use crate::storms::{Missing, PutOutcome, Storms, valid_id};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who may start and stop storms.
#[derive(Clone)]
pub struct Verifier {
    key: Option<VerifyingKey>,
}

impl Verifier {
    /// Verify against the operator's public key (32 bytes, hex). `None`
    /// disables mutating calls altogether.
    pub fn from_hex(public_key: Option<&str>) -> Result<Self, String> {
        let Some(text) = public_key else {
            return Ok(Verifier { key: None });
        };
        let bytes: [u8; 32] = from_hex(text)
            .and_then(|b| b.try_into().ok())
            .ok_or("the operator public key must be 64 hex characters (an Ed25519 key)")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("the operator public key is not a valid Ed25519 key: {e}"))?;
        Ok(Verifier { key: Some(key) })
    }

    fn verify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let Some(key) = &self.key else {
            return Err(
                "storm control is disabled: the sidecar was started without \
                        --operator-public-key"
                    .into(),
            );
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("missing {name} header: requests must be signed"))
        };
        let timestamp: u64 = header(TIMESTAMP_HEADER)?
            .parse()
            .map_err(|_| format!("{TIMESTAMP_HEADER} must be Unix seconds"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now.abs_diff(timestamp) > MAX_SKEW_SECS {
            return Err(format!(
                "stale request: signed at {timestamp}, {}s from this sidecar's clock (max {MAX_SKEW_SECS}s)",
                now.abs_diff(timestamp)
            ));
        }
        let signature: [u8; 64] = from_hex(header(SIGNATURE_HEADER)?)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{SIGNATURE_HEADER} must be 128 hex characters"))?;
        key.verify_strict(
            &signed_message(method.as_str(), path, body, timestamp),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "bad signature: not signed by the operator's key, or altered".to_owned())
    }
}

struct ControlState {
    storms: Arc<Storms>,
    verifier: Verifier,
}

/// The control routes, to merge into the sidecar's HTTP router.
pub fn router(storms: Arc<Storms>, verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/v1/storms/{id}",
            get(get_storm).put(put_storm).delete(delete_storm),
        )
        .route("/v1/storms/{id}/history", get(get_history))
        .route("/v1/storms/{id}/audit", get(get_audit))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(ControlState { storms, verifier }))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// The 400 for an id that cannot be a storm's, if it cannot.
fn invalid_id(id: &str) -> Option<Response> {
    (!valid_id(id)).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "storm ids are 1-128 characters of letters, digits, '-', '_' and '.'",
        )
    })
}

async fn put_storm(
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    if let Err(message) = state.verifier.verify(&method, uri.path(), &headers, &body) {
        return error(StatusCode::UNAUTHORIZED, message);
    }
    let request: StormRequest = {
        let mut deserializer = serde_json::Deserializer::from_slice(&body);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(request) => request,
            Err(e) => {
                let path = e.path().to_string();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{path}: {}", e.into_inner()),
                );
            }
        }
    };
    let storms = state.storms.clone();
    let outcome = tokio::task::spawn_blocking(move || storms.put(&id, request)).await;
    match outcome {
        Ok(PutOutcome::Started(status)) => {
            (StatusCode::CREATED, axum::Json(status)).into_response()
        }
        Ok(PutOutcome::Existing(status)) => (StatusCode::OK, axum::Json(status)).into_response(),
        Ok(PutOutcome::Busy { running }) => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "error": format!("storm {running} is running; one storm at a time per sidecar"),
                "running": running,
            })),
        )
            .into_response(),
        Ok(PutOutcome::Invalid(invalid)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, invalid.to_string())
        }
        Err(join) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storm start failed: {join}"),
        ),
    }
}

async fn get_storm(State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    match state.storms.status(&id) {
        Some(status) => axum::Json(status).into_response(),
        None => missing(&id, state.storms.missing(&id)),
    }
}

/// The answer for a storm (or its history) that is not here to show.
fn missing(id: &str, why: Missing) -> Response {
    match why {
        Missing::Unknown => error(
            StatusCode::NOT_FOUND,
            format!("no storm {id} on this sidecar"),
        ),
        Missing::Running => error(StatusCode::CONFLICT, format!("storm {id} is still running")),
        Missing::NotRecorded => error(
            StatusCode::NOT_FOUND,
            format!("no recorded history for storm {id}"),
        ),
        Missing::NoJournal => error(
            StatusCode::NOT_FOUND,
            format!("storm {id} keeps no delete journal: it did not storm existing keys"),
        ),
        Missing::DroppedForMemory { max_bytes } => error(
            StatusCode::GONE,
            format!(
                "storm {id} finished, and this was dropped for memory: finished storms are \
                 kept within --finished-storms-max-bytes ({max_bytes} bytes), oldest first"
            ),
        ),
    }
}

async fn delete_storm(
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    if let Err(message) = state.verifier.verify(&method, uri.path(), &headers, &body) {
        return error(StatusCode::UNAUTHORIZED, message);
    }
    match state.storms.stop(&id) {
        Some(status) if status.phase.is_final() => axum::Json(status).into_response(),
        Some(status) => (StatusCode::ACCEPTED, axum::Json(status)).into_response(),
        None => missing(&id, state.storms.missing(&id)),
    }
}

async fn get_history(State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    let storms = state.storms.clone();
    let lookup = id.clone();
    match tokio::task::spawn_blocking(move || storms.history_json(&lookup)).await {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(why)) => missing(&id, why),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}

/// `GET /v1/storms/{id}/audit`: the existing keys the storm deleted and what
/// became of each. It names the application's keys, so it is signed like
/// the calls that start and stop storms.
async fn get_audit(
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    if let Err(message) = state.verifier.verify(&method, uri.path(), &headers, &body) {
        return error(StatusCode::UNAUTHORIZED, message);
    }
    match state.storms.audit(&id) {
        Ok(audit) => axum::Json(audit).into_response(),
        Err(why) => missing(&id, why),
    }
}
