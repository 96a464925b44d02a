//! The storm control API on the sidecar's HTTP port: `PUT/GET/DELETE
//! The storm control API on the sidecar's HTTP port: `PUT/GET/DELETE
//! /v1/storms/{id}`, `GET /v1/storms/{id}/history`, the delete journal,
//! `GET /v1/storms/{id}/audit`, and the HTML report, `GET
//! /v1/storms/{id}/report` (`…/report/timelines/{n}`: at most n timelines). Every call, reads included (a report's
//! witnesses, a history and a journal name the application's keys), must be
//! signed by the operator's Ed25519 key for this pod (see `signature` and
//! `mapchaos_api::signing`): one layer checks all the routes, so a route
//! added here is covered too. Unsigned, stale, replayed, tampered or
//! misdirected requests get 401, oversized ones 413.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mapchaos_api::storm::StormRequest;
use serde_json::json;

pub use crate::signature::Verifier;
use crate::storms::{Missing, PutOutcome, Storms, valid_id};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

struct ControlState {
    storms: Arc<Storms>,
}

/// The control routes, to merge into the sidecar's HTTP router. Every one
/// of them is behind [`require_signature`].
pub fn router(storms: Arc<Storms>, verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/v1/storms/{id}",
            get(get_storm).put(put_storm).delete(delete_storm),
        )
        .route("/v1/storms/{id}/history", get(get_history))
        .route("/v1/storms/{id}/audit", get(get_audit))
        .route("/v1/storms/{id}/report", get(get_report))
        .route(
            "/v1/storms/{id}/report/timelines/{max}",
            get(get_trimmed_report),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::new(verifier),
            require_signature,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(ControlState { storms }))
}

/// Read the body (at most [`MAX_BODY_BYTES`]), check the signature over it,
/// and hand the request on with the body put back.
async fn require_signature(
    State(verifier): State<Arc<Verifier>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes, or was cut short"),
            );
        }
    };
    if let Err(refusal) = verifier.verify(&parts.method, parts.uri.path(), &parts.headers, &body) {
        return error(refusal.status, refusal.message);
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
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
    body: Bytes,
) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
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
        Missing::NoReport(message) => error(
            StatusCode::NOT_FOUND,
            format!("storm {id} failed before it ran and has no report: {message}"),
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

async fn delete_storm(State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
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
/// became of each. It names the application's keys; the signature layer
/// covers it like every other route.
async fn get_audit(State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    match state.storms.audit(&id) {
        Ok(audit) => axum::Json(audit).into_response(),
        Err(why) => missing(&id, why),
    }
}

/// `GET /v1/storms/{id}/report`: the storm's HTML report, the page
/// `mapchaos run --report` writes. It names the application's keys; the
/// signature layer covers it.
async fn get_report(State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    report(&state, id, None).await
}

/// `GET /v1/storms/{id}/report/timelines/{max}`: the report with at most
/// `max` timelines, for a reader with a size limit (the operator's Secrets).
async fn get_trimmed_report(
    State(state): State<Arc<ControlState>>,
    Path((id, max)): Path<(String, String)>,
) -> Response {
    match max.parse::<usize>() {
        Ok(max) => report(&state, id, Some(max)).await,
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            format!("timelines: {max:?} is not a count of timelines (0 or more)"),
        ),
    }
}

async fn report(state: &ControlState, id: String, max_timelines: Option<usize>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    let (storm_report, request) = match state.storms.finished_report(&id) {
        Ok(found) => found,
        Err(why) => return missing(&id, why),
    };
    // Rendering walks every witness's timeline: off the async workers.
    let page = tokio::task::spawn_blocking(move || {
        crate::report_page::render(&id, &storm_report, &request, max_timelines)
    })
    .await;
    match page {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}
