//! The actuator API (`gateway.management.port`, default 9600): backups and health. The JSON field
//! names are a contract operators script against: keep them exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use sluice_ledger::record::{CheckpointKind, CheckpointRequest};
use sluice_protocol::backup_id::BackupId;
use sluice_protocol::client::ClientError;
use sluice_protocol::wire::{
    BackupDescription, BackupState, BrokerBackup, ErrorKind, PartitionBackupStatus,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::client_api::not_found;
use crate::cluster::Cluster;
use crate::error::{ErrorMessage, GatewayError};
use crate::openapi::{BackupIdSchema, BrokerErrors};
use crate::restore_points::RestorePoints;
use crate::schedule::{ScheduleHandle, ScheduleStatus};

/// The actuator's routes, each with its OpenAPI operation (`#[utoipa::path]`): a route is added
/// here with its description or not at all. Two parts, as the schedule has a state of its own.
pub fn routes() -> (OpenApiRouter<Arc<Cluster>>, OpenApiRouter<ScheduleHandle>) {
    let cluster_routes = OpenApiRouter::new()
        .routes(routes!(list_backups))
        .routes(routes!(restore_points))
        .routes(routes!(take_backup, backup_status, delete_backup))
        .routes(routes!(health))
        .routes(routes!(prometheus))
        .routes(routes!(openapi));
    let schedule_routes = OpenApiRouter::new().routes(routes!(schedule_status));
    (cluster_routes, schedule_routes)
}

pub fn router(cluster: Arc<Cluster>, schedule: ScheduleHandle) -> Router {
    // No actuator endpoint reads a body, so no body limit to name.
    crate::rejection::json_error_bodies(routed(cluster, schedule), None)
}

/// The router before its error bodies are rewritten (its `Debug` form still lists its paths).
pub(crate) fn routed(cluster: Arc<Cluster>, schedule: ScheduleHandle) -> Router {
    let (cluster_routes, schedule_routes) = routes();
    // A static segment wins over `{id}`, so `/actuator/backups/schedule` is never read as an id.
    let (schedule_routes, _) = schedule_routes.split_for_parts();
    let (cluster_routes, _) = cluster_routes.split_for_parts();
    cluster_routes
        .fallback(not_found)
        .with_state(cluster)
        .layer(axum::Extension(schedule.clone()))
        .merge(schedule_routes.with_state(schedule))
}

#[utoipa::path(
    get,
    path = "/actuator/prometheus",
    tag = "actuator",
    summary = "The gateway's own metrics in the Prometheus text format (each broker serves its own on its management port)",
    responses((status = 200, body = String, content_type = "text/plain", description = "metrics")),
)]
/// The gateway's own metrics; the registry comes as an extension of the management router
/// (`service.rs`), so the router's shape stays that of the other actuator routes.
async fn prometheus(
    State(cluster): State<Arc<Cluster>>,
    axum::Extension(metrics): axum::Extension<Arc<crate::metrics::GatewayMetrics>>,
    axum::Extension(schedule): axum::Extension<ScheduleHandle>,
) -> Response {
    metrics.scrape(&cluster, &schedule).await
}

#[utoipa::path(
    get,
    path = "/actuator/backups/schedule",
    tag = "actuator",
    summary = "The backup schedule: next run, last result",
    responses((status = 200, body = ScheduleStatus, description = "the schedule")),
)]
async fn schedule_status(State(schedule): State<ScheduleHandle>) -> Json<ScheduleStatus> {
    Json(schedule.status())
}

/// The OpenAPI description of both ports, made from the routes' annotations once.
static OPENAPI_DOCUMENT: LazyLock<String> = LazyLock::new(crate::openapi::document_json);

// The description of the client and actuator APIs (`crate::openapi::document`); a test runs it
// against the live gateway so the two cannot drift.
#[utoipa::path(
    get,
    path = "/actuator/openapi.json",
    tag = "actuator",
    summary = "This document",
    responses((status = 200, body = Object, description = "the OpenAPI description")),
)]
async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT.as_str(),
    )
}

/// Backup ids as every Sluice tool parses them (`sluice_protocol::backup_id::BackupId`).
pub fn parse_backup_id(raw: &str) -> Result<u64, GatewayError> {
    raw.parse::<BackupId>()
        .map(BackupId::get)
        .map_err(|error| GatewayError::InvalidRequest(error.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Backup)]
pub struct BackupResponse {
    #[schema(value_type = BackupIdSchema)]
    pub backup_id: u64,
    /// `BACKUP`, or `MARKER` for a restore point of continuous backups: what the partitions
    /// that had the checkpoint from the gateway say (`BACKUP` when none says).
    #[schema(value_type = String)]
    pub kind: CheckpointKind,
    /// When the gateway asked for the checkpoint (RFC 3339): the restore point's time, as the
    /// partitions that had it from the gateway say; null for backups of earlier releases.
    #[schema(format = DateTime)]
    pub requested_at: Option<String>,
    #[serde(skip)]
    pub requested_at_ms: Option<u64>,
    pub status: BackupState,
    pub failure_reason: Option<String>,
    pub partitions: Vec<PartitionBackupStatus>,
}

#[cfg(test)]
impl BackupResponse {
    /// The same checkpoint as the gateway asked it with `kind` at `requested_at`.
    pub(crate) fn with_kind(mut self, kind: CheckpointKind, requested_at_ms: Option<u64>) -> Self {
        self.kind = kind;
        self.requested_at = requested_at_ms.map(sluice_protocol::wire::rfc3339_of_millis);
        self.requested_at_ms = requested_at_ms;
        self
    }
}

/// The answer to taking a backup.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupTaken {
    #[schema(value_type = BackupIdSchema)]
    pub id: u64,
}

/// Aggregates partition statuses: FAILED if any failed; else DOES_NOT_EXIST if any has none; else
/// IN_PROGRESS if any runs; else COMPLETED. Partitions nobody reported count as DOES_NOT_EXIST.
pub fn aggregate(
    backup_id: u64,
    partitions_count: u32,
    reported: Vec<PartitionBackupStatus>,
) -> BackupResponse {
    let mut by_partition: BTreeMap<u32, PartitionBackupStatus> =
        reported.into_iter().map(|s| (s.partition_id, s)).collect();
    let partitions: Vec<PartitionBackupStatus> = (1..=partitions_count)
        .map(|p| {
            by_partition
                .remove(&p)
                .unwrap_or_else(|| PartitionBackupStatus::does_not_exist(p, backup_id))
        })
        .collect();
    let failed: Vec<String> = partitions
        .iter()
        .filter(|p| p.status == BackupState::Failed)
        .map(|p| {
            format!(
                "partition {}: {}",
                p.partition_id,
                p.failure_reason.as_deref().unwrap_or("no reason recorded")
            )
        })
        .collect();
    let any = |state| partitions.iter().any(|p| p.status == state);
    let status = if !failed.is_empty() {
        BackupState::Failed
    } else if any(BackupState::DoesNotExist) {
        BackupState::DoesNotExist
    } else if any(BackupState::InProgress) {
        BackupState::InProgress
    } else {
        BackupState::Completed
    };
    let request = partitions
        .iter()
        .find_map(|p| p.description.as_ref().and_then(BackupDescription::request));
    let requested_at_ms = request.map(|r| r.requested_at_ms);
    BackupResponse {
        backup_id,
        kind: request.map_or(CheckpointKind::Backup, |r| r.kind),
        requested_at: requested_at_ms.map(sluice_protocol::wire::rfc3339_of_millis),
        requested_at_ms,
        status,
        failure_reason: (!failed.is_empty()).then(|| failed.join("; ")),
        partitions,
    }
}

#[utoipa::path(
    post,
    path = "/actuator/backups/{backupId}",
    tag = "actuator",
    summary = "Take a backup: returns once every partition holds the checkpoint",
    params(("backupId" = BackupIdSchema, Path)),
    responses(
        (status = 200, body = BackupTaken, description = "every partition created the checkpoint; the upload goes on in the background"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 409, body = ErrorMessage, description = "the id is not greater than the latest checkpoint (the message names it)"),
        BrokerErrors,
    ),
)]
async fn take_backup(
    State(cluster): State<Arc<Cluster>>,
    Path(raw): Path<String>,
) -> Result<Json<BackupTaken>, GatewayError> {
    let id = parse_backup_id(&raw)?;
    take(
        &cluster,
        id,
        CheckpointKind::Backup,
        std::time::SystemTime::now(),
    )
    .await?;
    Ok(Json(BackupTaken { id }))
}

/// Creates checkpoint `id` of `kind`, requested at `requested_at`, on every partition (the
/// backups upload in the background).
pub async fn take(
    cluster: &Cluster,
    id: u64,
    kind: CheckpointKind,
    requested_at: std::time::SystemTime,
) -> Result<(), GatewayError> {
    let routing = cluster.routing().await?;
    if !routing.backup_store_configured {
        return Err(GatewayError::BackupStoreNotConfigured);
    }
    // The restore point's time: when the coordinator asked, the same in every partition's record.
    let request = CheckpointRequest {
        kind,
        requested_at_ms: crate::schedule::epoch_millis(requested_at),
    };
    let results = join_all(routing.partitions().map(|partition| {
        cluster
            .owner(&routing, partition)
            .checkpoint(partition, id, Some(request))
    }))
    .await;
    // The most telling error wins: a conflict names the id to exceed (a backup the store holds,
    // or the latest checkpoint), which is what the operator needs.
    let mut latest = None;
    let mut stored = None;
    let mut first_error = None;
    let mut created = 0;
    for result in results {
        match result {
            Ok(answer) => created += usize::from(answer.created),
            Err(ClientError::Remote { body, .. }) if body.kind == ErrorKind::CheckpointNotNewer => {
                latest = latest.max(body.latest).or(body.latest);
            }
            Err(ClientError::Remote { body, .. }) if body.kind == ErrorKind::BackupExists => {
                stored = stored.max(body.latest).or(body.latest);
            }
            Err(error) => {
                first_error.get_or_insert(GatewayError::from(error));
            }
        }
    }
    if let Some(stored) = stored.filter(|stored| latest.is_none_or(|latest| *stored >= latest)) {
        return Err(GatewayError::Conflict(format!(
            "backup id must be greater than the latest backup id in the backup store: requested={id} latest={stored}; the store already holds backup {stored} (e.g. of the history before a restore of an older backup); use an id greater than {stored}"
        )));
    }
    if let Some(latest) = latest {
        return Err(GatewayError::Conflict(format!(
            "backup id must be greater than the latest backup id: requested={id} latest={latest}; use an id greater than {latest}"
        )));
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    // Partitions may hold the checkpoint already through propagation (a transfer carried it);
    // that counts as success. Only when no partition created it now was it taken before.
    if created == 0 {
        return Err(GatewayError::Conflict(format!(
            "backup {id} was already taken: requested={id} latest={id}; use an id greater than {id}"
        )));
    }
    Ok(())
}

pub async fn collect_status(cluster: &Cluster, id: u64) -> Result<BackupResponse, GatewayError> {
    let routing = cluster.routing().await?;
    if !routing.backup_store_configured {
        return Err(GatewayError::BackupStoreNotConfigured);
    }
    let mut reported = Vec::new();
    for answer in join_all(cluster.brokers().iter().map(|b| b.backup_status(id))).await {
        reported.extend(answer?.partitions);
    }
    Ok(aggregate(id, routing.partitions_count, reported))
}

#[utoipa::path(
    get,
    path = "/actuator/backups/{backupId}",
    tag = "actuator",
    summary = "Status of a backup, aggregated over partitions",
    params(("backupId" = BackupIdSchema, Path)),
    responses(
        (status = 200, body = BackupResponse, description = "the backup (status DOES_NOT_EXIST when unknown)"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        BrokerErrors,
    ),
)]
async fn backup_status(
    State(cluster): State<Arc<Cluster>>,
    Path(raw): Path<String>,
) -> Result<Json<BackupResponse>, GatewayError> {
    let id = parse_backup_id(&raw)?;
    Ok(Json(collect_status(&cluster, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only backups whose id starts with these digits, e.g. `?prefix=10`.
    #[param(pattern = "^[0-9]{1,19}$", nullable = false)]
    prefix: Option<String>,
    /// `BACKUP` (the default), `MARKER` (the restore points of continuous backups) or `ALL`.
    #[param(pattern = "^(BACKUP|MARKER|ALL)$", nullable = false)]
    kind: Option<String>,
}

#[utoipa::path(
    get,
    path = "/actuator/backups",
    tag = "actuator",
    summary = "Every backup (or marker, `?kind=`), newest id first",
    params(ListQuery),
    responses(
        (status = 200, body = Vec<BackupResponse>, description = "the backups"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        BrokerErrors,
    ),
)]
async fn list_backups(
    State(cluster): State<Arc<Cluster>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<BackupResponse>>, GatewayError> {
    let Query(query) =
        query.map_err(|rejection| GatewayError::InvalidRequest(rejection.body_text()))?;
    if let Some(prefix) = &query.prefix {
        if prefix.is_empty() || prefix.len() > 19 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GatewayError::InvalidRequest(format!(
                "prefix must be 1 to 19 decimal digits (the start of backup ids), got {prefix:?}"
            )));
        }
    }
    let kind = match query.kind.as_deref() {
        None | Some("BACKUP") => Some(CheckpointKind::Backup),
        Some("MARKER") => Some(CheckpointKind::Marker),
        Some("ALL") => None,
        Some(other) => {
            return Err(GatewayError::InvalidRequest(format!(
                "kind must be BACKUP, MARKER or ALL, got {other:?}"
            )))
        }
    };
    let mut backups = list(&cluster, query.prefix.as_deref()).await?;
    backups.retain(|backup| kind.is_none_or(|kind| backup.kind == kind));
    Ok(Json(backups))
}

#[utoipa::path(
    get,
    path = "/actuator/backups/restore-points",
    tag = "actuator",
    summary = "What can be restored: per partition and for the cluster, the ranges of restorable checkpoints (backups and markers) and why each break",
    responses(
        (status = 200, body = RestorePoints, description = "the restore points"),
        BrokerErrors,
    ),
)]
async fn restore_points(
    State(cluster): State<Arc<Cluster>>,
    axum::Extension(schedule): axum::Extension<ScheduleHandle>,
) -> Result<Json<RestorePoints>, GatewayError> {
    let routing = cluster.routing().await?;
    let backups = list(&cluster, None).await?;
    Ok(Json(crate::restore_points::restore_points(
        &backups,
        routing.partitions_count,
        schedule.marker_interval(),
    )))
}

/// Every backup (whose id starts with `prefix`), newest first, aggregated over partitions.
pub async fn list(
    cluster: &Cluster,
    prefix: Option<&str>,
) -> Result<Vec<BackupResponse>, GatewayError> {
    let routing = cluster.routing().await?;
    if !routing.backup_store_configured {
        return Err(GatewayError::BackupStoreNotConfigured);
    }
    let mut by_id: BTreeMap<u64, Vec<PartitionBackupStatus>> = BTreeMap::new();
    for answer in join_all(cluster.brokers().iter().map(|b| b.list_backups(prefix))).await {
        for BrokerBackup {
            backup_id,
            partitions,
        } in answer?
        {
            by_id.entry(backup_id).or_default().extend(partitions);
        }
    }
    Ok(by_id
        .into_iter()
        .rev()
        .map(|(id, partitions)| aggregate(id, routing.partitions_count, partitions))
        .collect())
}

#[utoipa::path(
    delete,
    path = "/actuator/backups/{backupId}",
    tag = "actuator",
    summary = "Delete a backup from the store",
    params(("backupId" = BackupIdSchema, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 404, body = ErrorMessage, description = "no such backup"),
        (status = 409, body = ErrorMessage, description = "the backup is IN_PROGRESS"),
        BrokerErrors,
    ),
)]
async fn delete_backup(
    State(cluster): State<Arc<Cluster>>,
    Path(raw): Path<String>,
) -> Result<Response, GatewayError> {
    let id = parse_backup_id(&raw)?;
    delete(&cluster, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes every object of backup `id`; refuses a running backup. Resumable: a deletion that
/// failed half-way leaves the backup FAILED, and deleting it again finishes it. An id of which
/// no partition has a manifest is still swept (data objects left without one); it is unknown
/// (404) only when nothing at all was found to delete.
pub async fn delete(cluster: &Cluster, id: u64) -> Result<(), GatewayError> {
    let status = collect_status(cluster, id).await?;
    let unknown = status
        .partitions
        .iter()
        .all(|p| p.status == BackupState::DoesNotExist);
    if status
        .partitions
        .iter()
        .any(|p| p.status == BackupState::InProgress)
    {
        return Err(GatewayError::Conflict(format!(
            "backup {id} is IN_PROGRESS; wait until it is COMPLETED or FAILED, then delete it"
        )));
    }
    let mut deleted = 0;
    for answer in join_all(cluster.brokers().iter().map(|b| b.delete_backup(id))).await {
        deleted += answer?
            .get("deletedObjects")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
    }
    if unknown && deleted == 0 {
        return Err(GatewayError::NotFound(format!(
            "backup {id} does not exist"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthState {
    Up,
    /// Everything answers, but continuous backups lag (`reason` says how): processing goes on.
    Degraded,
    Down,
}

/// The gateway's health: UP when every broker and partition answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthState,
    /// Why the gateway is DOWN though every broker is UP (the routing table cannot be learnt), or
    /// why it is DEGRADED.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    pub brokers: Vec<BrokerHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerHealth {
    pub address: String,
    pub status: HealthState,
    /// Why the broker is DOWN or DEGRADED (its archiving of the log lags).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

#[utoipa::path(
    get,
    path = "/actuator/health",
    tag = "actuator",
    summary = "UP when every broker and partition answers (DEGRADED when continuous backups lag)",
    responses(
        (status = 200, body = Health, description = "UP, or DEGRADED: the newest restore point is older than 3 checkpoint intervals, or a broker's archiving of the log lags"),
        (status = 503, body = Health, description = "DOWN: the brokers' answers say which"),
    ),
)]
async fn health(
    State(cluster): State<Arc<Cluster>>,
    axum::Extension(schedule): axum::Extension<ScheduleHandle>,
) -> (StatusCode, Json<Health>) {
    let answers = join_all(
        cluster
            .brokers()
            .iter()
            .map(sluice_protocol::client::BrokerClient::health),
    )
    .await;
    let mut brokers = Vec::new();
    for (broker, answer) in cluster.brokers().iter().zip(answers) {
        let (status, reason) = match answer {
            Ok(body) if body["status"] == "DEGRADED" => {
                let reason = body["reason"]
                    .as_str()
                    .unwrap_or("the broker says DEGRADED");
                (HealthState::Degraded, Some(reason.to_string()))
            }
            Ok(_) => (HealthState::Up, None),
            Err(error) => (HealthState::Down, Some(error.to_string())),
        };
        brokers.push(BrokerHealth {
            address: broker.address().to_string(),
            status,
            reason,
        });
    }
    let mut health = Health {
        status: HealthState::Up,
        reason: None,
        brokers,
    };
    if health.brokers.iter().any(|b| b.status == HealthState::Down) {
        health.status = HealthState::Down;
    } else if let Err(error) = cluster.routing().await {
        health.status = HealthState::Down;
        health.reason = Some(error.to_string());
    } else if let Some(lag) = schedule.markers_lag(std::time::SystemTime::now()) {
        health.status = HealthState::Degraded;
        health.reason = Some(lag);
    } else if let Some(lagging) = health
        .brokers
        .iter()
        .find(|b| b.status == HealthState::Degraded)
    {
        health.status = HealthState::Degraded;
        health.reason = Some(format!(
            "broker {}: {}",
            lagging.address,
            lagging.reason.as_deref().unwrap_or("DEGRADED")
        ));
    }
    let status = match health.status {
        HealthState::Up | HealthState::Degraded => StatusCode::OK,
        HealthState::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(health))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_are_validated() {
        for bad in [
            "0",
            "-1",
            "abc",
            "99999999999999999999",
            "",
            "1.5",
            "+3",
            "9223372036854775808",
        ] {
            let error = parse_backup_id(bad).expect_err(bad);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(parse_backup_id("1").unwrap(), 1);
        assert_eq!(
            parse_backup_id("9223372036854775807").unwrap(),
            i64::MAX as u64
        );
    }

    fn status(partition_id: u32, state: BackupState) -> PartitionBackupStatus {
        PartitionBackupStatus {
            status: state,
            failure_reason: (state == BackupState::Failed).then(|| "disk on fire".to_string()),
            ..PartitionBackupStatus::does_not_exist(partition_id, 1)
        }
    }

    #[test]
    fn aggregation_follows_the_documented_order() {
        use BackupState::*;
        let cases = [
            (vec![Completed, Completed, Completed], Completed),
            (vec![Completed, InProgress, Completed], InProgress),
            (vec![Completed, InProgress, DoesNotExist], DoesNotExist),
            (vec![Failed, InProgress, DoesNotExist], Failed),
        ];
        for (states, expected) in cases {
            let reported = states
                .iter()
                .enumerate()
                .map(|(i, s)| status(i as u32 + 1, *s))
                .collect();
            let response = aggregate(1, 3, reported);
            assert_eq!(response.status, expected, "{states:?}");
        }
        // A partition nobody reported does not exist.
        let response = aggregate(1, 3, vec![status(1, Completed), status(2, Completed)]);
        assert_eq!(response.status, DoesNotExist);
        let failed = aggregate(1, 2, vec![status(1, Failed), status(2, Completed)]);
        assert_eq!(
            failed.failure_reason.as_deref(),
            Some("partition 1: disk on fire")
        );
    }
}
