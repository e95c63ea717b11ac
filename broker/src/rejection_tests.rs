//! The broker API's framework rejections answer an error body (the middleware lives in
//! `sluice_protocol::rejection`; these tests need the broker's router).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use tower::ServiceExt;

use crate::api::{router, ApiState, REQUEST_BODY_BYTES_MAX};
use crate::metrics::BackupMetrics;
use crate::protocol::{ErrorBody, ErrorKind, Topology, API_PREFIX};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Request, StatusCode};
use sluice_protocol::rejection::*;

/// (method, path after the API prefix, content type, body, status, kind, message text)
type Case<'a> = (
    Method,
    &'a str,
    &'a str,
    &'a [u8],
    StatusCode,
    ErrorKind,
    &'a str,
);

/// What axum rejects by itself on the broker's internal API answers an `ErrorBody` the
/// broker client can read, like the broker's own errors (unknown partition, here).
#[tokio::test]
async fn framework_rejections_answer_an_error_body() {
    let api = router(Arc::new(ApiState {
        topology: Topology {
            node_id: 0,
            cluster_size: 1,
            partitions_count: 1,
            partitions: vec![],
            broker_version: crate::BROKER_VERSION.to_string(),
            backup_store: "NONE".into(),
        },
        partitions: BTreeMap::new(),
        backups: None,
        metrics: BackupMetrics::new(),
        restore: None,
        archives: BTreeMap::new(),
    }));
    let too_large = vec![b' '; REQUEST_BODY_BYTES_MAX + 1];
    let commands = br#"{"commands": []}"#;
    let cases: Vec<Case> = vec![
        (
            Method::DELETE,
            "/topology",
            "",
            b"",
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            "method DELETE is not allowed on /internal/v1/topology; allowed: GET",
        ),
        (
            Method::GET,
            "/nope",
            "",
            b"",
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            "GET /internal/v1/nope failed: Not Found",
        ),
        (
            Method::GET,
            "/partitions/x/summary",
            "",
            b"",
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            "GET /internal/v1/partitions/x/summary: ",
        ),
        (
            Method::POST,
            "/partitions/1/commands",
            "text/plain",
            commands,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::InvalidRequest,
            "Content-Type",
        ),
        (
            Method::POST,
            "/partitions/1/commands",
            "application/json",
            b"{not json",
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            "JSON",
        ),
        (
            Method::POST,
            "/partitions/1/commands",
            "application/json",
            br#"{"x": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::InvalidRequest,
            "commands",
        ),
        (
            Method::POST,
            "/partitions/1/commands",
            "application/json",
            &too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidRequest,
            "limit of 33554432 bytes",
        ),
        (
            Method::GET,
            "/partitions/7/summary",
            "",
            b"",
            StatusCode::NOT_FOUND,
            ErrorKind::UnknownPartition,
            "unknown partition: partition=7",
        ),
    ];
    for (method, path, content_type, body, status, kind, expected) in cases {
        let name = format!("{method} {path}");
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"));
        if !content_type.is_empty() {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(body.to_vec())).unwrap();
        let response = api.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        assert!(
            is_json(response.headers()),
            "{name}: {:?}",
            response.headers()
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!("{name}: {error}: {:?}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(body.kind, kind, "{name}: {body:?}");
        assert!(
            body.message.contains(expected),
            "{name}: {:?} lacks {expected:?}",
            body.message
        );
    }
}
