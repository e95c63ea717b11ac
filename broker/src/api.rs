//! The broker's internal HTTP API, served on `broker.network.host:port` (see [`crate::protocol`]).
//! Errors map to HTTP here, in one exhaustive match ([`error_response`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::archive::{ArchiveProgress, LAG_DEGRADED_AFTER};
use crate::backup::BackupHandle;
use crate::error::BrokerError;
use crate::metrics::{BackupMetrics, RestoreReport};
use crate::partition::PartitionHandle;
use crate::protocol::{
    AccountBalance, BrokerBackup, BrokerMetrics, CheckpointCreated, CheckpointQuery,
    DeliverRequest, DeliverResponse, ErrorBody, ErrorKind, ExecuteRequest, ExecuteResponse,
    Topology, TransferStatus, API_PREFIX,
};
use crate::record::{
    CheckpointRequest, Command, Delivery, Outcome, Rejection, CHECKPOINT_ID_MAX,
    REQUESTED_AT_MS_MAX,
};
use crate::routing::{validate_account, InvalidAccount};
use sluice_protocol::ProtocolError;

/// Commands accepted in one execute request.
pub const EXECUTE_COMMANDS_MAX: usize = 10_000;

pub struct ApiState {
    pub topology: Topology,
    pub partitions: BTreeMap<u32, PartitionHandle>,
    pub backups: Option<BackupHandle>,
    /// Counted by the backup service (all zero without a backup store).
    pub metrics: Arc<BackupMetrics>,
    /// The restore report found in the data directory at start-up.
    pub restore: Option<RestoreReport>,
    /// With continuous backups: how far each partition's archiver is (health says DEGRADED
    /// when one lags).
    pub archives: BTreeMap<u32, Arc<ArchiveProgress>>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let routes = Router::new()
        .route("/topology", get(topology))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/partitions/{partition}/commands", post(execute))
        .route("/partitions/{partition}/accounts/{account}", get(balance))
        .route("/partitions/{partition}/summary", get(summary))
        .route("/partitions/{partition}/checkpoints/{id}", post(checkpoint))
        .route("/partitions/{partition}/deliveries", post(deliver))
        .route("/partitions/{partition}/transfers/{id}", get(transfer))
        .route("/backups", get(list_backups))
        .route("/backups/{id}", get(backup_status).delete(delete_backup));
    let router = Router::new()
        .nest(API_PREFIX, routes)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX));
    crate::rejection::json_error_bodies(
        router,
        Some(REQUEST_BODY_BYTES_MAX),
        crate::rejection::broker_error_body,
    )
}

/// Upper bound of one request body (an execute or deliver batch).
pub const REQUEST_BODY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A broker error as an HTTP response. Exhaustive on purpose: a new error must choose its status.
pub struct ApiError(BrokerError);

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = error_response(&self.0);
        let latest = match &self.0 {
            BrokerError::BackupIdTaken {
                stored_backup_id, ..
            } => Some(*stored_backup_id),
            _ => None,
        };
        let body = ErrorBody {
            kind,
            message: self.0.to_string(),
            latest,
        };
        (status, Json(body)).into_response()
    }
}

pub fn error_response(error: &BrokerError) -> (StatusCode, ErrorKind) {
    match error {
        BrokerError::InvalidRequest(_)
        | BrokerError::Protocol(ProtocolError::InvalidBackupId { .. }) => {
            (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
        }
        BrokerError::UnknownPartition { .. } => {
            (StatusCode::NOT_FOUND, ErrorKind::UnknownPartition)
        }
        BrokerError::AccountNotFound { .. } => (StatusCode::NOT_FOUND, ErrorKind::AccountNotFound),
        BrokerError::TransferNotFound { .. } => {
            (StatusCode::NOT_FOUND, ErrorKind::TransferNotFound)
        }
        BrokerError::BackupStoreNotConfigured => {
            (StatusCode::BAD_REQUEST, ErrorKind::BackupStoreNotConfigured)
        }
        BrokerError::BackupInProgress { .. } => (StatusCode::CONFLICT, ErrorKind::BackupInProgress),
        BrokerError::BackupIdTaken { .. } => (StatusCode::CONFLICT, ErrorKind::BackupExists),
        BrokerError::BackupStore(_) | BrokerError::BackupStoreTimeout { .. } => {
            (StatusCode::BAD_GATEWAY, ErrorKind::BackupStore)
        }
        BrokerError::PartitionUnavailable { .. } | BrokerError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unavailable)
        }
        BrokerError::Io { .. }
        | BrokerError::Bind { .. }
        | BrokerError::Protocol(ProtocolError::Tls { .. })
        | BrokerError::CorruptLog { .. }
        | BrokerError::CorruptRecord { .. }
        | BrokerError::UnexpectedLogFile { .. }
        | BrokerError::LogSegmentsDisjoint { .. }
        | BrokerError::LogStartsAfterSnapshot { .. }
        | BrokerError::LogEndsBeforeSnapshot { .. }
        | BrokerError::RecordNotInLog { .. }
        | BrokerError::CorruptSnapshot { .. }
        | BrokerError::PartitionLayoutChanged { .. }
        | BrokerError::UnfinishedRestore { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal)
        }
    }
}

/// How long a status or list request may wait for the backup store: shorter than the gateway's
/// default request timeout, so that a hanging store is reported as the store's fault (502), not
/// as a silent broker (504).
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(10);

async fn store_deadline<T>(
    operation: &'static str,
    work: impl std::future::Future<Output = crate::Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(STORE_READ_TIMEOUT, work).await {
        Ok(result) => result.map_err(ApiError),
        Err(_) => Err(ApiError(BrokerError::BackupStoreTimeout {
            operation,
            timeout_ms: STORE_READ_TIMEOUT.as_millis() as u64,
        })),
    }
}

fn partition(state: &ApiState, partition_id: u32) -> Result<&PartitionHandle, ApiError> {
    state.partitions.get(&partition_id).ok_or_else(|| {
        ApiError(BrokerError::UnknownPartition {
            partition_id,
            hosted: state.partitions.keys().copied().collect(),
        })
    })
}

fn backups(state: &ApiState) -> Result<&BackupHandle, ApiError> {
    state
        .backups
        .as_ref()
        .ok_or(ApiError(BrokerError::BackupStoreNotConfigured))
}

async fn topology(State(state): State<Arc<ApiState>>) -> Json<Topology> {
    Json(state.topology.clone())
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Json<BrokerMetrics> {
    Json(
        state
            .metrics
            .snapshot(state.topology.node_id, state.restore.as_ref()),
    )
}

async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let down: Vec<u32> = state
        .partitions
        .values()
        .filter(|p| !p.is_running())
        .map(super::partition::PartitionHandle::partition_id)
        .collect();
    let lagging: Vec<u32> = state
        .archives
        .iter()
        .filter(|(_, progress)| progress.lag().1 > LAG_DEGRADED_AFTER)
        .map(|(partition_id, _)| *partition_id)
        .collect();
    if down.is_empty() && lagging.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"status": "UP"}))).into_response()
    } else if down.is_empty() {
        let reason = format!(
            "continuous backups lag: a sealed log segment of partitions {lagging:?} has waited more than {}s              for its upload (processing goes on; see sluice_archive_lag_seconds and the broker's log for the store's error)",
            LAG_DEGRADED_AFTER.as_secs()
        );
        let body =
            serde_json::json!({"status": "DEGRADED", "reason": reason, "archiveLagging": lagging});
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "DOWN", "partitionsDown": down})),
        )
            .into_response()
    }
}

fn validate_command(command: &Command) -> Result<(), RequestRefusal> {
    match command {
        Command::Deposit { account, .. } | Command::Withdraw { account, .. } => {
            Ok(validate_account(account)?)
        }
        Command::Transfer {
            transfer_id,
            from,
            to,
            ..
        } => {
            validate_account(from)?;
            validate_account(to)?;
            validate_transfer_id(transfer_id)
        }
        Command::Checkpoint { .. } => Err(RequestRefusal::CheckpointCommand),
        Command::Credit { .. } | Command::CreditAck { .. } | Command::CreditRefused { .. } => {
            Err(RequestRefusal::InterPartitionCommand)
        }
    }
}

/// The longest refusal reason a `CreditRefused` delivery may carry.
pub const REFUSAL_REASON_BYTES_MAX: usize = 1024;

/// Why a command or a delivery is refused before it reaches the log; its text becomes the
/// `invalid request` body (400).
#[derive(Debug, thiserror::Error)]
enum RequestRefusal {
    #[error(transparent)]
    Account(#[from] InvalidAccount),
    #[error("checkpoints are created through the checkpoints endpoint")]
    CheckpointCommand,
    #[error("inter-partition commands go through the deliveries endpoint")]
    InterPartitionCommand,
    #[error("transferId must be 1 to 128 characters, got {bytes}")]
    TransferIdLength { bytes: usize },
    #[error("checkpoint id must be 1 to {CHECKPOINT_ID_MAX}, got {checkpoint_id}")]
    CheckpointId { checkpoint_id: u64 },
    #[error("requestedAtMs must be at most {REQUESTED_AT_MS_MAX} (the end of year 9999), got {requested_at_ms}")]
    RequestedAt { requested_at_ms: u64 },
    #[error("a checkpoint's kind and requestedAtMs are given together or not at all")]
    CheckpointRequestHalf,
    #[error(
        "fromPartition must be another partition of 1 to {partitions_count}, got {from_partition}"
    )]
    FromPartition {
        from_partition: u32,
        partitions_count: u32,
    },
    #[error("amount must be a positive integer")]
    Amount,
    #[error("sourcePosition must be positive and at least finishedBelow, got sourcePosition={source_position} finishedBelow={finished_below}")]
    SourcePositionBelowFinished {
        source_position: u64,
        finished_below: u64,
    },
    #[error("sourcePosition must be positive")]
    SourcePositionZero,
    #[error("reason must be at most {REFUSAL_REASON_BYTES_MAX} bytes, got {bytes}")]
    ReasonLength { bytes: usize },
    #[error("{command:?} is not an inter-partition command")]
    NotInterPartition { command: Box<Command> },
}

/// Transfer ids: 1 to 128 characters (the gateway sends UUIDs).
fn validate_transfer_id(transfer_id: &str) -> Result<(), RequestRefusal> {
    if transfer_id.is_empty() || transfer_id.len() > 128 {
        return Err(RequestRefusal::TransferIdLength {
            bytes: transfer_id.len(),
        });
    }
    Ok(())
}

/// Checkpoint ids follow the public rule of backup ids: 1 to [`CHECKPOINT_ID_MAX`]. A larger
/// one would stop every later backup (ids must grow) and spread through credits.
/// The request a checkpoint trigger's query says: both fields or neither, a time that prints.
fn checkpoint_request(query: CheckpointQuery) -> Result<Option<CheckpointRequest>, RequestRefusal> {
    match (query.kind, query.requested_at_ms) {
        (None, None) => Ok(None),
        (Some(kind), Some(requested_at_ms)) if requested_at_ms <= REQUESTED_AT_MS_MAX => {
            Ok(Some(CheckpointRequest {
                kind,
                requested_at_ms,
            }))
        }
        (Some(_), Some(requested_at_ms)) => Err(RequestRefusal::RequestedAt { requested_at_ms }),
        _ => Err(RequestRefusal::CheckpointRequestHalf),
    }
}

fn validate_checkpoint_id(checkpoint_id: u64) -> Result<(), RequestRefusal> {
    if checkpoint_id == 0 || checkpoint_id > CHECKPOINT_ID_MAX {
        return Err(RequestRefusal::CheckpointId { checkpoint_id });
    }
    Ok(())
}

/// Every field of an inter-partition message addressed to `partition_id`, with the rules of the
/// public API where there is one: a bad message is refused (400) before it reaches the log, so
/// it can never stop the partition.
fn validate_delivery(
    delivery: &Delivery,
    partition_id: u32,
    partitions_count: u32,
) -> Result<(), RequestRefusal> {
    if delivery.checkpoint_id != 0 {
        validate_checkpoint_id(delivery.checkpoint_id)?;
    }
    match &delivery.command {
        Command::Credit {
            transfer_id,
            from_partition,
            source_position,
            finished_below,
            to,
            amount,
        } => {
            validate_transfer_id(transfer_id)?;
            validate_account(to)?;
            if *from_partition == 0
                || *from_partition > partitions_count
                || *from_partition == partition_id
            {
                return Err(RequestRefusal::FromPartition {
                    from_partition: *from_partition,
                    partitions_count,
                });
            }
            if *amount == 0 {
                return Err(RequestRefusal::Amount);
            }
            if *source_position == 0 || finished_below > source_position {
                return Err(RequestRefusal::SourcePositionBelowFinished {
                    source_position: *source_position,
                    finished_below: *finished_below,
                });
            }
            Ok(())
        }
        Command::CreditAck {
            transfer_id,
            source_position,
        }
        | Command::CreditRefused {
            transfer_id,
            source_position,
            ..
        } => {
            validate_transfer_id(transfer_id)?;
            if *source_position == 0 {
                return Err(RequestRefusal::SourcePositionZero);
            }
            if let Command::CreditRefused { reason, .. } = &delivery.command {
                if reason.len() > REFUSAL_REASON_BYTES_MAX {
                    return Err(RequestRefusal::ReasonLength {
                        bytes: reason.len(),
                    });
                }
            }
            Ok(())
        }
        other => Err(RequestRefusal::NotInterPartition {
            command: Box::new(other.clone()),
        }),
    }
}

async fn execute(
    State(state): State<Arc<ApiState>>,
    Path(partition_id): Path<u32>,
    Json(request): Json<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let handle = partition(&state, partition_id)?;
    if request.commands.len() > EXECUTE_COMMANDS_MAX {
        return Err(ApiError(BrokerError::InvalidRequest(format!(
            "{} commands in one request; at most {EXECUTE_COMMANDS_MAX}",
            request.commands.len()
        ))));
    }
    for (index, command) in request.commands.iter().enumerate() {
        validate_command(command)
            .map_err(|reason| BrokerError::InvalidRequest(format!("command {index}: {reason}")))?;
    }
    let outcomes = handle.execute(request.commands).await?;
    Ok(Json(ExecuteResponse { outcomes }))
}

async fn balance(
    State(state): State<Arc<ApiState>>,
    Path((partition_id, account)): Path<(u32, String)>,
) -> Result<Json<AccountBalance>, ApiError> {
    let handle = partition(&state, partition_id)?;
    match handle.balance(account.clone()).await? {
        Some(balance) => Ok(Json(AccountBalance { account, balance })),
        None => Err(ApiError(BrokerError::AccountNotFound { account })),
    }
}

async fn summary(
    State(state): State<Arc<ApiState>>,
    Path(partition_id): Path<u32>,
) -> Result<Response, ApiError> {
    let handle = partition(&state, partition_id)?;
    Ok(Json(wire_summary(handle.summary().await?)).into_response())
}

/// The one conversion of the ledger's summary to the wire's (the broker is the one crate that
/// sees both): field by field, so a change of either shows here.
pub fn wire_summary(summary: crate::state::PartitionSummary) -> crate::protocol::PartitionSummary {
    let crate::state::PartitionSummary {
        partition_id,
        accounts,
        balance_total,
        in_flight,
        outbox_entries,
        processed_position,
        latest_checkpoint_id,
        latest_checkpoint_position,
    } = summary;
    crate::protocol::PartitionSummary {
        partition_id,
        accounts,
        balance_total,
        in_flight,
        outbox_entries,
        processed_position,
        latest_checkpoint_id,
        latest_checkpoint_position,
    }
}

async fn checkpoint(
    State(state): State<Arc<ApiState>>,
    Path((partition_id, checkpoint_id)): Path<(u32, u64)>,
    Query(query): Query<CheckpointQuery>,
) -> Result<Response, ApiError> {
    let handle = partition(&state, partition_id)?;
    backups(&state)?;
    validate_checkpoint_id(checkpoint_id)
        .map_err(|reason| BrokerError::InvalidRequest(reason.to_string()))?;
    let request = checkpoint_request(query)
        .map_err(|reason| BrokerError::InvalidRequest(reason.to_string()))?;
    // A store listing at most once per broker (learned, then kept), not per trigger.
    store_deadline(
        "list the backup ids in the store",
        backups(&state)?.check_backup_id(checkpoint_id, state.topology.partitions_count),
    )
    .await?;
    let outcomes = handle
        .execute(vec![Command::Checkpoint {
            checkpoint_id,
            request,
        }])
        .await?;
    match outcomes.into_iter().next() {
        Some(Outcome::CheckpointCreated {
            checkpoint_id,
            position,
        }) => Ok(Json(CheckpointCreated {
            partition_id,
            checkpoint_id,
            position: Some(position),
            created: true,
        })
        .into_response()),
        Some(Outcome::CheckpointExists { checkpoint_id }) => Ok(Json(CheckpointCreated {
            partition_id,
            checkpoint_id,
            position: None,
            created: false,
        })
        .into_response()),
        Some(Outcome::Rejected { rejection }) => {
            let latest = match &rejection {
                Rejection::CheckpointNotNewer { latest, .. } => Some(*latest),
                _ => None,
            };
            let body = ErrorBody {
                kind: ErrorKind::CheckpointNotNewer,
                message: rejection.message(),
                latest,
            };
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        other => Err(ApiError(BrokerError::PartitionUnavailable {
            partition_id,
            reason: format!("unexpected outcome of a checkpoint: {other:?}"),
        })),
    }
}

async fn deliver(
    State(state): State<Arc<ApiState>>,
    Path(partition_id): Path<u32>,
    Json(request): Json<DeliverRequest>,
) -> Result<Json<DeliverResponse>, ApiError> {
    let handle = partition(&state, partition_id)?;
    if request.deliveries.len() > EXECUTE_COMMANDS_MAX {
        return Err(ApiError(BrokerError::InvalidRequest(format!(
            "{} deliveries in one request; at most {EXECUTE_COMMANDS_MAX}",
            request.deliveries.len()
        ))));
    }
    for (index, delivery) in request.deliveries.iter().enumerate() {
        validate_delivery(delivery, partition_id, state.topology.partitions_count)
            .map_err(|reason| BrokerError::InvalidRequest(format!("delivery {index}: {reason}")))?;
    }
    Ok(Json(handle.deliver(request.deliveries).await?))
}

async fn transfer(
    State(state): State<Arc<ApiState>>,
    Path((partition_id, transfer_id)): Path<(u32, String)>,
) -> Result<Json<TransferStatus>, ApiError> {
    let handle = partition(&state, partition_id)?;
    match handle.transfer(transfer_id.clone()).await? {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError(BrokerError::TransferNotFound { transfer_id })),
    }
}

async fn backup_status(
    State(state): State<Arc<ApiState>>,
    Path(backup_id): Path<u64>,
) -> Result<Json<BrokerBackup>, ApiError> {
    let backups = backups(&state)?;
    let partitions = store_deadline("read backup status", async {
        let mut partitions = Vec::new();
        for partition_id in state.partitions.keys() {
            partitions.push(backups.status(*partition_id, backup_id).await?);
        }
        Ok(partitions)
    })
    .await?;
    Ok(Json(BrokerBackup {
        backup_id,
        partitions,
    }))
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    prefix: Option<String>,
}

async fn list_backups(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<BrokerBackup>>, ApiError> {
    let backups = backups(&state)?;
    if let Some(prefix) = &query.prefix {
        if !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError(BrokerError::InvalidRequest(format!(
                "prefix must be decimal digits, got {prefix:?}"
            ))));
        }
    }
    let by_id = store_deadline("list backups", async {
        let mut by_id: BTreeMap<u64, Vec<_>> = BTreeMap::new();
        for partition_id in state.partitions.keys() {
            for status in backups.list(*partition_id, query.prefix.as_deref()).await? {
                by_id.entry(status.backup_id).or_default().push(status);
            }
        }
        Ok(by_id)
    })
    .await?;
    Ok(Json(
        by_id
            .into_iter()
            .rev()
            .map(|(backup_id, partitions)| BrokerBackup {
                backup_id,
                partitions,
            })
            .collect(),
    ))
}

async fn delete_backup(
    State(state): State<Arc<ApiState>>,
    Path(backup_id): Path<u64>,
) -> Result<Response, ApiError> {
    let backups = backups(&state)?;
    // Refuse before deleting anything: a backup is deleted whole or not at all.
    for partition_id in state.partitions.keys() {
        let status = backups.status(*partition_id, backup_id).await?;
        if status.status == crate::protocol::BackupState::InProgress {
            return Err(ApiError(BrokerError::BackupInProgress { backup_id }));
        }
    }
    let mut deleted = 0;
    for partition_id in state.partitions.keys() {
        deleted += backups.delete(*partition_id, backup_id).await?;
    }
    Ok(Json(serde_json::json!({"deletedObjects": deleted})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's wire format stays what gateways of this and earlier releases read: the
    /// ledger's values under the same camelCase names, u128 totals as JSON numbers.
    #[test]
    fn the_summary_goes_on_the_wire_field_by_field() {
        let state = crate::state::PartitionSummary {
            partition_id: 3,
            accounts: 4,
            balance_total: u128::from(u64::MAX) + 5,
            in_flight: 6,
            outbox_entries: 7,
            processed_position: 8,
            latest_checkpoint_id: 9,
            latest_checkpoint_position: 10,
        };
        let wire = wire_summary(state);
        let json = serde_json::to_string(&wire).unwrap();
        assert_eq!(
            json,
            r#"{"partitionId":3,"accounts":4,"balanceTotal":18446744073709551620,"inFlight":6,"outboxEntries":7,"processedPosition":8,"latestCheckpointId":9,"latestCheckpointPosition":10}"#
        );
        let read: crate::protocol::PartitionSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(read, wire);
    }

    fn credit(from_partition: u32, source_position: u64, finished_below: u64) -> Command {
        Command::Credit {
            transfer_id: "t".to_string(),
            from_partition,
            source_position,
            finished_below,
            to: "alice".to_string(),
            amount: 5,
        }
    }

    /// What a bad command or delivery is refused with: the text of the 400 body.
    #[test]
    fn refusals_say_what_is_wrong() {
        let commands = [
            (
                Command::checkpoint(1),
                "checkpoints are created through the checkpoints endpoint",
            ),
            (
                credit(1, 1, 0),
                "inter-partition commands go through the deliveries endpoint",
            ),
            (
                Command::Deposit {
                    account: "a b".to_string(),
                    amount: 1,
                },
                "account id \"a b\" contains ' '; allowed are A-Z, a-z, 0-9, '_', '.' and '-'",
            ),
            (
                Command::Transfer {
                    transfer_id: String::new(),
                    from: "a".to_string(),
                    to: "b".to_string(),
                    amount: 1,
                },
                "transferId must be 1 to 128 characters, got 0",
            ),
        ];
        for (command, expected) in commands {
            let refusal = validate_command(&command).unwrap_err();
            assert_eq!(refusal.to_string(), expected, "{command:?}");
        }
        let deliveries = [
            (credit(2, 1, 0), 0, "fromPartition must be another partition of 1 to 3, got 2"),
            (
                credit(1, 1, 2),
                0,
                "sourcePosition must be positive and at least finishedBelow, got sourcePosition=1 finishedBelow=2",
            ),
            (
                credit(1, 1, 0),
                CHECKPOINT_ID_MAX + 1,
                &format!("checkpoint id must be 1 to {CHECKPOINT_ID_MAX}, got {}", CHECKPOINT_ID_MAX + 1),
            ),
            (
                Command::CreditAck {
                    transfer_id: "t".to_string(),
                    source_position: 0,
                },
                0,
                "sourcePosition must be positive",
            ),
            (
                Command::checkpoint(1),
                0,
                "Checkpoint { checkpoint_id: 1, request: None } is not an inter-partition command",
            ),
        ];
        for (command, checkpoint_id, expected) in deliveries {
            let delivery = Delivery {
                command,
                checkpoint_id,
            };
            let refusal = validate_delivery(&delivery, 2, 3).unwrap_err();
            assert_eq!(refusal.to_string(), expected, "{delivery:?}");
        }
        assert!(validate_delivery(
            &Delivery {
                command: credit(1, 1, 0),
                checkpoint_id: 0
            },
            2,
            3
        )
        .is_ok());
    }
}
