//! Wire types of the broker's internal HTTP API (gateway → broker), JSON with camelCase fields.
//! The server is the broker's `api` module, the client [`crate::client`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use sluice_ledger::record::{CheckpointKind, CheckpointRequest, Command, Delivery, Outcome};

pub const API_PREFIX: &str = "/internal/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    pub node_id: u32,
    pub cluster_size: u32,
    pub partitions_count: u32,
    /// Partitions this node hosts.
    pub partitions: Vec<u32>,
    pub broker_version: String,
    /// `NONE`, `FILESYSTEM` or `S3`.
    pub backup_store: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverRequest {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverResponse {
    /// One per delivery, in order.
    pub outcomes: Vec<Outcome>,
    /// The receiver's latest checkpoint id after applying them: carried by the acknowledgements.
    pub latest_checkpoint_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    Pending,
    Completed,
    /// The target refused the credit; the sender was refunded (`failureReason` says why).
    Failed,
}

// The schema attributes repeat the gateway's value rules (account grammar of
// `sluice_ledger::routing::validate_account`, positive amounts), as the gateway answers this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferStatus {
    #[schema(format = "uuid")]
    pub transfer_id: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,128}$", min_length = 1, max_length = 128)]
    pub from: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,128}$", min_length = 1, max_length = 128)]
    pub to: String,
    #[schema(minimum = 1, maximum = 18446744073709551615u64)]
    pub amount: u64,
    pub status: TransferState,
    /// Why the transfer FAILED; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub account: String,
    pub balance: u64,
}

/// A partition's totals (`GET …/partitions/{p}/summary`), what the gateway sums into `/v1/ledger`.
/// The broker fills it from the ledger's `state::PartitionSummary`, a state type that is not
/// bound to this format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    pub partition_id: u32,
    pub accounts: u64,
    pub balance_total: u128,
    /// Sum of the outbox: debited here, not yet credited elsewhere (as far as this partition knows).
    pub in_flight: u128,
    pub outbox_entries: u64,
    pub processed_position: u64,
    pub latest_checkpoint_id: u64,
    pub latest_checkpoint_position: u64,
}

/// The query of `POST /internal/v1/partitions/{p}/checkpoints/{id}`: what the coordinator asks
/// of the checkpoint, both or neither (neither: a backup whose time nobody said).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckpointKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at_ms: Option<u64>,
}

impl From<CheckpointRequest> for CheckpointQuery {
    fn from(request: CheckpointRequest) -> Self {
        Self {
            kind: Some(request.kind),
            requested_at_ms: Some(request.requested_at_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointCreated {
    pub partition_id: u32,
    pub checkpoint_id: u64,
    /// `None` when the partition already held this checkpoint (`created` false).
    pub position: Option<u64>,
    /// False when the checkpoint existed already (created earlier through propagation).
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupState {
    Completed,
    InProgress,
    Failed,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDescription {
    pub snapshot_id: Option<String>,
    pub checkpoint_position: u64,
    pub broker_id: u32,
    pub broker_version: String,
    /// `BACKUP` or `MARKER` (a restore point of continuous backups); absent where this
    /// partition created the checkpoint by propagation, and in backups of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<CheckpointKind>,
    /// When the coordinator asked for the checkpoint, in milliseconds since the Unix epoch:
    /// the restore point's time (absent as `kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at_ms: Option<u64>,
}

/// The RFC 3339 form (milliseconds, UTC) of `ms` milliseconds since the Unix epoch: how
/// `requestedAtMs` is shown (at most `REQUESTED_AT_MS_MAX`, so always a four-digit year).
pub fn rfc3339_of_millis(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

impl BackupDescription {
    /// What the coordinator asked, when this partition's record says it.
    pub fn request(&self) -> Option<CheckpointRequest> {
        Some(CheckpointRequest {
            kind: self.kind?,
            requested_at_ms: self.requested_at_ms?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PartitionBackup)]
pub struct PartitionBackupStatus {
    #[schema(minimum = 1)]
    pub partition_id: u32,
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub backup_id: u64,
    pub status: BackupState,
    pub description: Option<BackupDescription>,
    pub failure_reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_updated_at: Option<String>,
}

impl PartitionBackupStatus {
    pub fn does_not_exist(partition_id: u32, backup_id: u64) -> PartitionBackupStatus {
        PartitionBackupStatus {
            partition_id,
            backup_id,
            status: BackupState::DoesNotExist,
            description: None,
            failure_reason: None,
            created_at: None,
            last_updated_at: None,
        }
    }
}

/// Statuses of one broker's partitions, grouped by backup id (the internal form; the gateway
/// reshapes it into the actuator's contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerBackup {
    pub backup_id: u64,
    pub partitions: Vec<PartitionBackupStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    InvalidRequest,
    UnknownPartition,
    AccountNotFound,
    TransferNotFound,
    BackupStoreNotConfigured,
    BackupInProgress,
    CheckpointNotNewer,
    /// The store holds a backup of an id at least the requested one (`latest` is that id).
    BackupExists,
    BackupStore,
    Unavailable,
    Internal,
    /// The request did not carry the cluster token (`broker.cluster.token`).
    Unauthorized,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    /// The latest checkpoint id, with `CHECKPOINT_NOT_NEWER`; the highest backup id in the
    /// store, with `BACKUP_EXISTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<u64>,
}

/// A broker's backup and restore metrics as JSON (`GET /metrics` of the internal API), counted
/// since the broker started. Prometheus reads the broker's management port instead (the
/// Prometheus text of the same counters and more); nothing in Sluice reads this one any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerMetrics {
    pub node_id: u32,
    /// Partition backups that ended COMPLETED (the COMPLETED manifest landed).
    pub backups_completed: u64,
    /// Partition backups that ended FAILED.
    pub backups_failed: u64,
    /// Partition backups accepted and not finished yet.
    pub backups_in_progress: u64,
    /// Bytes of backup files in the store (as stored, after compression).
    pub uploaded_bytes: u64,
    pub uploaded_files: u64,
    /// Durations of completed partition backups, seconds.
    pub backup_duration: Histogram,
    pub last_completed: Option<LastCompletedBackup>,
    /// From the restore report of the data directory, when the broker started from a restore.
    pub restore: Option<RestoreMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Cumulative counts, ascending by upper bound; `+Inf` is `count`.
    pub buckets: Vec<HistogramBucket>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistogramBucket {
    /// Upper bound (inclusive).
    pub le: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCompletedBackup {
    /// The highest backup id of which a partition backup completed on this broker.
    pub backup_id: u64,
    /// When that partition backup completed, seconds since the Unix epoch.
    pub timestamp_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreMetrics {
    pub backup_id: u64,
    pub files: u64,
    pub bytes: u64,
    pub duration_seconds: f64,
    /// When the restore finished, seconds since the Unix epoch.
    pub timestamp_seconds: f64,
}
