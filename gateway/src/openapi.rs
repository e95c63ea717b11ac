//! The OpenAPI description of both ports, served at `/actuator/openapi.json`. It is made from the
//! code: each route is registered together with its handler's `#[utoipa::path]` annotation
//! (`client_api::routes`, `actuator::routes`) and the answer types derive `ToSchema`, so a route
//! cannot be served undescribed. `gateway/openapi.json` is the same document checked in for
//! readers; a test fails when it differs from what the code makes.
//!
//! The types here describe what the handlers read by hand (bodies are parsed field by field for
//! precise error messages) and the value rules several schemas share.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};

use crate::client_api::BATCH_COMMANDS_MAX;
use crate::error::ErrorMessage;

/// An account id: 1 to 128 of `A-Z a-z 0-9 _ . -` (`sluice_ledger::routing::validate_account`).
pub struct AccountId;

impl PartialSchema for AccountId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9_.-]{1,128}$"))
            .min_length(Some(1))
            .max_length(Some(128))
            .into()
    }
}

impl ToSchema for AccountId {
    fn name() -> Cow<'static, str> {
        "AccountId".into()
    }
}

/// A backup id (`sluice_protocol::backup_id::BackupId`): a positive 63-bit integer.
pub struct BackupIdSchema;

impl PartialSchema for BackupIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .into()
    }
}

impl ToSchema for BackupIdSchema {
    fn name() -> Cow<'static, str> {
        "BackupId".into()
    }
}

/// What a scheduled run did.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunResult {
    Triggered,
    Failed,
}

/// The body of a deposit or a withdrawal.
#[derive(ToSchema)]
pub struct Amount {
    #[schema(minimum = 1, maximum = 18446744073709551615u64)]
    pub amount: u64,
}

/// The body of `POST /v1/transfers`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TransferRequest {
    #[schema(value_type = AccountId)]
    pub from: String,
    #[schema(value_type = AccountId)]
    pub to: String,
    #[schema(minimum = 1, maximum = 18446744073709551615u64)]
    pub amount: u64,
    /// Makes the transfer idempotent; generated when absent.
    #[schema(format = "uuid", nullable = false)]
    pub transfer_id: Option<String>,
}

/// The body of `POST /v1/commands`: one command a line, at most `BATCH_COMMANDS_MAX`.
pub struct Batch;

impl PartialSchema for Batch {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(BatchCommand::schema())
            .max_items(Some(BATCH_COMMANDS_MAX))
            .into()
    }
}

impl ToSchema for Batch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((BatchCommand::name().into(), BatchCommand::schema()));
    }
}

/// One line of a `POST /v1/commands` batch.
#[derive(ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BatchCommand {
    Deposit {
        #[schema(value_type = AccountId)]
        account: String,
        #[schema(minimum = 1, maximum = 18446744073709551615u64)]
        amount: u64,
    },
    Withdraw {
        #[schema(value_type = AccountId)]
        account: String,
        #[schema(minimum = 1, maximum = 18446744073709551615u64)]
        amount: u64,
    },
    Transfer {
        #[schema(value_type = AccountId)]
        from: String,
        #[schema(value_type = AccountId)]
        to: String,
        #[schema(minimum = 1, maximum = 18446744073709551615u64)]
        amount: u64,
        #[serde(rename = "transferId")]
        #[schema(format = "uuid", nullable = false)]
        transfer_id: Option<String>,
    },
}

/// The answers of an operation that asks brokers (`GatewayError::status`).
#[derive(IntoResponses)]
pub enum BrokerErrors {
    /// a broker is unreachable or its backup store failed; the message names which
    #[response(status = 502)]
    Unreachable(ErrorMessage),
    /// a partition is unavailable (starting or shutting down)
    #[response(status = 503)]
    Unavailable(ErrorMessage),
    /// a broker did not answer in time
    #[response(status = 504)]
    Timeout(ErrorMessage),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice gateway",
        description = "Client API (gateway.network.port, default 8080: /v1/...) and actuator API \
                       (gateway.management.port, default 9600: /actuator/...). Errors are \
                       `{\"message\": \"...\"}`. When gateway.network.token or \
                       gateway.management.token is set, the port needs `Authorization: Bearer <token>`.",
    ),
    servers(
        (url = "http://127.0.0.1:8080", description = "client API"),
        (url = "http://127.0.0.1:9600", description = "actuator API"),
    ),
    tags((name = "client"), (name = "actuator")),
    // The token of each port is optional (`gateway.network.token`, `gateway.management.token`).
    security((), ("bearer" = [])),
)]
struct Base;

/// The name of the bearer token scheme in the document.
const BEARER: &str = "bearer";

/// The description of both ports, from their routes.
pub fn document() -> Document {
    let mut document = Base::openapi();
    document.merge(crate::client_api::routes().into_openapi());
    let (cluster_routes, schedule_routes) = crate::actuator::routes();
    document.merge(cluster_routes.into_openapi());
    document.merge(schedule_routes.into_openapi());
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    // Both ports sit behind `auth::require_token` when their token is set: any operation can
    // answer 401.
    let unauthorized = <UnauthorizedAnswer as IntoResponses>::responses()
        .remove("401")
        .expect("the 401 answer");
    for item in document.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation
                .responses
                .responses
                .entry("401".to_string())
                .or_insert_with(|| unauthorized.clone());
        }
    }
    document
}

/// The document as served (and checked in).
pub fn document_json() -> String {
    let mut document = serde_json::to_value(document()).expect("an OpenAPI document serializes");
    spell_unsigned_formats(&mut document);
    let mut json = serde_json::to_string_pretty(&document).expect("JSON serializes");
    json.push('\n');
    json
}

/// utoipa 5 spells the formats of unsigned integers `u-int64`, `u-int32` (the kebab case of its
/// `KnownFormat::UInt64`); the usual spelling is `uint64`, `uint32`.
fn spell_unsigned_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    serde_json::Value::String(format) if key == "format" => {
                        if let Some(bits) = format.strip_prefix("u-int") {
                            *format = format!("uint{bits}");
                        }
                    }
                    _ => spell_unsigned_formats(value),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(spell_unsigned_formats),
        _ => {}
    }
}

// Only its description is used.
#[allow(dead_code)]
#[derive(IntoResponses)]
enum UnauthorizedAnswer {
    /// the port requires a bearer token and none or a wrong one was sent
    #[response(status = 401)]
    Unauthorized(ErrorMessage),
}

fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{Method, StatusCode};
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::cluster::Cluster;
    use crate::schedule::ScheduleHandle;

    /// A cluster of one broker that is not running: handlers answer without a broker's help.
    fn unreachable_cluster() -> Arc<Cluster> {
        Arc::new(Cluster::new(
            &["127.0.0.1:1".to_string()],
            Duration::from_millis(200),
            sluice_protocol::transport::ClusterTransport::new(None, None, "gateway.cluster.ca")
                .unwrap(),
        ))
    }

    /// The paths a router serves, read from its `Debug` form (axum lists routes nowhere else):
    /// every quoted string that starts with `/` in its path router (the fallback router that
    /// follows holds the catch-all paths of the fallback).
    fn served_paths(router: &Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let (path_router, _fallback) = debug
            .split_once("fallback_router")
            .expect("a Router's Debug form names its fallback_router");
        path_router
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|text| text.starts_with('/'))
            .map(str::to_string)
            .collect()
    }

    /// `/a/{b}/c` with every parameter set to `1` (a valid account and backup id; an invalid
    /// transfer id, answered 400, which is not what the test looks for).
    fn concrete(path: &str) -> String {
        path.split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every route either router serves is described, and every described operation is
    /// served: paths compared with what axum holds, methods by asking each path with each one
    /// (405 means not served).
    #[tokio::test]
    async fn the_document_describes_every_route_and_nothing_else() {
        let cluster = unreachable_cluster();
        let document = document();
        let described: BTreeMap<String, BTreeSet<Method>> = document
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    (Method::GET, item.get.is_some()),
                    (Method::POST, item.post.is_some()),
                    (Method::PUT, item.put.is_some()),
                    (Method::DELETE, item.delete.is_some()),
                    (Method::PATCH, item.patch.is_some()),
                ];
                let methods = methods
                    .into_iter()
                    .filter(|(_, present)| *present)
                    .map(|(method, _)| method)
                    .collect();
                (path.clone(), methods)
            })
            .collect();
        let ports = [
            (
                crate::client_api::routed(cluster.clone()),
                crate::client_api::router(cluster.clone()),
            ),
            (
                crate::actuator::routed(cluster.clone(), ScheduleHandle::default()),
                crate::actuator::router(cluster.clone(), ScheduleHandle::default()),
            ),
        ];
        let mut served = BTreeSet::new();
        for (routed, router) in &ports {
            let paths = served_paths(routed);
            assert!(!paths.is_empty(), "no path found in {routed:?}");
            for path in paths {
                let described_methods = described
                    .get(&path)
                    .unwrap_or_else(|| panic!("{path} is served but not described"));
                for method in [
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::PATCH,
                ] {
                    let request = Request::builder()
                        .method(method.clone())
                        .uri(concrete(&path))
                        .body(Body::empty())
                        .unwrap();
                    let status = router.clone().oneshot(request).await.unwrap().status();
                    let is_served = status != StatusCode::METHOD_NOT_ALLOWED;
                    assert_eq!(
                        is_served,
                        described_methods.contains(&method),
                        "{method} {path}: answered {status}, described methods {described_methods:?}"
                    );
                    assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
                }
                served.insert(path);
            }
        }
        let described_paths: BTreeSet<String> = described.into_keys().collect();
        assert_eq!(served, described_paths, "described but not served");
    }

    /// `/actuator/openapi.json` serves the document the code makes.
    #[tokio::test]
    async fn the_actuator_serves_the_document() {
        let router = crate::actuator::router(unreachable_cluster(), ScheduleHandle::default());
        let request = Request::builder()
            .uri("/actuator/openapi.json")
            .body(Body::empty())
            .unwrap();
        let answer = router.oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&body), document_json());
    }

    /// `gateway/openapi.json` is what the code makes; `UPDATE_OPENAPI=1 cargo test -p
    /// sluice-gateway openapi` rewrites it after a change of the API.
    #[test]
    fn the_checked_in_document_is_the_one_the_code_makes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let made = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &made).expect("write gateway/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == made,
            "{} differs from the description the code makes; rewrite it with \
             `UPDATE_OPENAPI=1 cargo test -p sluice-gateway openapi` and commit it",
            path.display()
        );
    }
}
