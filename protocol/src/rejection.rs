//! Error answers with a JSON body for what axum rejects by itself. A handler's own errors are JSON
//! already; the framework answers in plain text or with no body at all: 404 for no route (where
//! a router has no fallback), 405 for a method a route does not have, 400 for a path segment that
//! does not parse, 413 for a body over the limit, 415 and 422 for a JSON body it cannot take.
//! [`json_error_bodies`] wraps a router so that each of those answers carries a message saying
//! what was wrong, in the body shape of the API (the broker's [`crate::wire::ErrorBody`],
//! the gateway's `{"message": ...}`).

use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::wire::{ErrorBody, ErrorKind};

/// Upper bound of a framework rejection's text read back; they are one short line.
const REJECTION_TEXT_BYTES_MAX: usize = 64 * 1024;

/// Turns a status and a message into the API's error answer (a JSON body).
pub type ErrorBodyFn = fn(StatusCode, String) -> Response;

#[derive(Clone, Copy)]
struct Rewrite {
    body_bytes_max: Option<usize>,
    error_body: ErrorBodyFn,
}

/// Wraps `router` so that every error answer has a JSON body: those that have none or plain text
/// get `error_body(status, message)`. `body_bytes_max` is the router's request body limit, named
/// in 413 answers.
pub fn json_error_bodies(
    router: Router,
    body_bytes_max: Option<usize>,
    error_body: ErrorBodyFn,
) -> Router {
    // Around the whole router, not `router.layer(..)`: that layers each route inside the part of
    // axum that adds the `Allow` header to a 405, which the message names.
    // The routes tell a request timing outside this wrapper which route they matched.
    let router = router.layer(axum::middleware::from_fn(
        crate::metrics::remember_matched_path,
    ));
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn_with_state(
            Rewrite {
                body_bytes_max,
                error_body,
            },
            json_errors,
        ))
}

/// Whether an answer's body is JSON, as every error answer's must be.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

async fn json_errors(State(rewrite): State<Rewrite>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, REJECTION_TEXT_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(ALLOW)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            format!("method {method} is not allowed on {path}; allowed: {allowed}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => match rewrite.body_bytes_max {
            Some(limit) => format!(
                "request body of {method} {path} is larger than the limit of {limit} bytes; send less in one request"
            ),
            None => format!("request body of {method} {path} is too large: {text}"),
        },
        _ if text.is_empty() => format!(
            "{method} {path} failed: {}",
            status.canonical_reason().unwrap_or("error")
        ),
        _ => format!("{method} {path}: {text}"),
    };
    // The body changes: its old type and length must not survive into the new answer.
    parts.headers.remove(CONTENT_TYPE);
    parts.headers.remove(CONTENT_LENGTH);
    (parts, (rewrite.error_body)(status, message)).into_response()
}

/// The broker's internal API error answer for a framework rejection: `INVALID_REQUEST` for a 4xx
/// (the request does not fit the API), `INTERNAL` otherwise.
pub fn broker_error_body(status: StatusCode, message: String) -> Response {
    let kind = if status.is_client_error() {
        ErrorKind::InvalidRequest
    } else {
        ErrorKind::Internal
    };
    let body = ErrorBody {
        kind,
        message,
        latest: None,
    };
    (status, Json(body)).into_response()
}
