//! Every error the gateway answers carries a JSON body `{"message": ...}`. Its own errors do
//! ([`crate::GatewayError`]); [`json_error_bodies`] gives the same body to what axum rejects by
//! itself (405, an undecodable path segment, a body over the limit, ...). Both routers (client API
//! and actuator) are wrapped, so no error answer slips through without a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

/// Wraps `router` so that every error answer is `{"message": ...}`; `body_bytes_max` is its
/// request body limit, named in 413 answers.
pub fn json_error_bodies(router: Router, body_bytes_max: Option<usize>) -> Router {
    sluice_protocol::rejection::json_error_bodies(router, body_bytes_max, message_body)
}

fn message_body(status: StatusCode, message: String) -> Response {
    (status, Json(crate::error::ErrorMessage { message })).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::Method;
    use tower::ServiceExt;

    use super::*;
    use crate::client_api::BATCH_BYTES_MAX;
    use crate::cluster::Cluster;
    use crate::schedule::ScheduleHandle;
    use axum::body::Body;
    use axum::extract::Request;
    use sluice_protocol::rejection::is_json;

    /// Reads a whole answer body in tests.
    async fn body_json(body: axum::body::Body) -> serde_json::Value {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!("not JSON ({error}): {:?}", String::from_utf8_lossy(&bytes))
        })
    }

    /// (router, method, uri, body, status, text the message contains)
    type Case<'a> = (&'a Router, Method, &'a str, &'a [u8], StatusCode, &'a str);

    /// Error answers of both ports, the framework's and the gateway's own: each is JSON with
    /// exactly a `message` saying what was wrong. No case reaches a broker (none is running).
    #[tokio::test]
    async fn every_error_answer_is_a_json_message() {
        // Nothing listens there: a case that reached a broker would answer 502, not what it expects.
        let cluster = Arc::new(Cluster::new(
            &["127.0.0.1:1".to_string()],
            Duration::from_millis(200),
            sluice_protocol::transport::ClusterTransport::new(None, None, "gateway.cluster.ca")
                .unwrap(),
        ));
        let client = crate::client_api::router(cluster.clone());
        let actuator = crate::actuator::router(cluster, ScheduleHandle::default());
        let too_large = vec![b' '; BATCH_BYTES_MAX + 1];
        let cases: Vec<Case> = vec![
            (
                &client,
                Method::DELETE,
                "/v1/accounts/a",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "method DELETE is not allowed on /v1/accounts/a; allowed: GET",
            ),
            (
                &client,
                Method::GET,
                "/v1/transfers",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "method GET is not allowed on /v1/transfers; allowed: POST",
            ),
            (
                &client,
                Method::PUT,
                "/v1/commands",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: POST",
            ),
            (
                &client,
                Method::GET,
                "/v1/accounts/a/deposit",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: POST",
            ),
            (
                &client,
                Method::GET,
                "/nope",
                b"",
                StatusCode::NOT_FOUND,
                "no such endpoint",
            ),
            (
                &client,
                Method::GET,
                "/v1/accounts/%FF",
                b"",
                StatusCode::BAD_REQUEST,
                "GET /v1/accounts/%FF: ",
            ),
            (
                &client,
                Method::POST,
                "/v1/transfers/%C3%28",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: GET",
            ),
            (
                &client,
                Method::GET,
                "/v1/transfers/%C3%28",
                b"",
                StatusCode::BAD_REQUEST,
                "GET /v1/transfers/%C3%28: ",
            ),
            (
                &client,
                Method::POST,
                "/v1/commands",
                &too_large,
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than the limit of 16777216 bytes",
            ),
            (
                &client,
                Method::POST,
                "/v1/accounts/a/deposit",
                &too_large,
                StatusCode::PAYLOAD_TOO_LARGE,
                "POST /v1/accounts/a/deposit is larger than",
            ),
            (
                &client,
                Method::POST,
                "/v1/accounts/a/deposit",
                b"not json",
                StatusCode::BAD_REQUEST,
                "body is not valid JSON",
            ),
            (
                &client,
                Method::GET,
                "/v1/accounts/bad%20id",
                b"",
                StatusCode::BAD_REQUEST,
                "account",
            ),
            (
                &client,
                Method::GET,
                "/v1/transfers/not-a-uuid",
                b"",
                StatusCode::BAD_REQUEST,
                "transferId must be a UUID",
            ),
            (
                &actuator,
                Method::DELETE,
                "/actuator/backups",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "method DELETE is not allowed on /actuator/backups; allowed: GET",
            ),
            (
                &actuator,
                Method::PUT,
                "/actuator/backups/1",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: ",
            ),
            (
                &actuator,
                Method::POST,
                "/actuator/backups/schedule",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: GET",
            ),
            (
                &actuator,
                Method::POST,
                "/actuator/health",
                b"",
                StatusCode::METHOD_NOT_ALLOWED,
                "allowed: GET",
            ),
            (
                &actuator,
                Method::GET,
                "/actuator/backups/%FF",
                b"",
                StatusCode::BAD_REQUEST,
                "GET /actuator/backups/%FF: ",
            ),
            (
                &actuator,
                Method::GET,
                "/actuator/backups/abc",
                b"",
                StatusCode::BAD_REQUEST,
                "backupId must be a positive 64-bit integer",
            ),
            (
                &actuator,
                Method::GET,
                "/actuator/backups?prefix=1&prefix=2",
                b"",
                StatusCode::BAD_REQUEST,
                "prefix",
            ),
            (
                &actuator,
                Method::GET,
                "/actuator/nope",
                b"",
                StatusCode::NOT_FOUND,
                "no such endpoint",
            ),
            (
                &actuator,
                Method::GET,
                "/v1/ledger",
                b"",
                StatusCode::NOT_FOUND,
                "no such endpoint",
            ),
        ];
        for (router, method, uri, body, status, expected) in cases {
            let name = format!("{method} {uri}");
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body.to_vec()))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{name}");
            assert!(
                is_json(response.headers()),
                "{name}: {:?}",
                response.headers()
            );
            let json = body_json(response.into_body()).await;
            let object = json.as_object().unwrap_or_else(|| panic!("{name}: {json}"));
            assert_eq!(object.len(), 1, "{name}: only a message: {json}");
            let message = object["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {json}"));
            assert!(
                message.contains(expected),
                "{name}: {message:?} lacks {expected:?}"
            );
        }
    }
}
