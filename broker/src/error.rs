//! The one error type of the broker library. HTTP mapping lives in one place: `api::error_status`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("i/o error: path={path} operation={operation}: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    #[error("corrupt log: path={path} offset={offset}: {reason}; the log is damaged before its tail, restore this node from a backup")]
    CorruptLog {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("corrupt snapshot: path={path}: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown partition: partition={partition_id}; this node hosts {hosted:?}")]
    UnknownPartition { partition_id: u32, hosted: Vec<u32> },
    #[error("account not found: account={account}")]
    AccountNotFound { account: String },
    #[error("transfer not found: transferId={transfer_id}")]
    TransferNotFound { transfer_id: String },
    #[error("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) to FILESYSTEM or S3")]
    BackupStoreNotConfigured,
    #[error("backup is in progress: backupId={backup_id}; wait until it is COMPLETED or FAILED")]
    BackupInProgress { backup_id: u64 },
    #[error("backup id must be greater than the latest backup id in the backup store: backupId={backup_id} stored={stored_backup_id}; the store already holds backup {stored_backup_id} (e.g. of the history before a restore of an older backup); use an id greater than {stored_backup_id}")]
    BackupIdTaken {
        backup_id: u64,
        stored_backup_id: u64,
    },
    #[error("backup not found: backupId={backup_id}")]
    BackupNotFound { backup_id: u64 },
    #[error("backup store error: {0}")]
    BackupStore(#[from] sluice_backup_store::BackupStoreError),
    #[error("backup store did not answer in time: operation={operation} timeout_ms={timeout_ms}; is the backup store reachable?")]
    BackupStoreTimeout {
        operation: &'static str,
        timeout_ms: u64,
    },
    #[error("partition unavailable: partition={partition_id}: {reason}")]
    PartitionUnavailable { partition_id: u32, reason: String },
    #[error("cannot listen: address={address}: {source}; is another process using the port? set broker.network.port (SLUICE_BROKER_NETWORK_PORT)")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("a restore of this node did not finish: marker={marker}; the data directory may hold only some of the backup's partitions, so the broker does not start; rerun sluice-restore with the same backup id and configuration: it removes what the unfinished restore installed and restores again", marker = .marker.display())]
    UnfinishedRestore { marker: PathBuf },
    #[error("broker is shutting down")]
    ShuttingDown,
    #[error("backupId must be a positive 64-bit integer (1 to 9223372036854775807), got {raw:?}: {reason}")]
    InvalidBackupId { raw: String, reason: &'static str },
    #[error("TLS setting {key}: path={}: {reason}; point {key} at a readable PEM file", path.display())]
    Tls {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Wraps an `io::Error` with the path and the operation that failed.
pub(crate) fn io_err(
    path: impl Into<PathBuf>,
    operation: &'static str,
) -> impl FnOnce(std::io::Error) -> BrokerError {
    let path = path.into();
    move |source| BrokerError::Io {
        path,
        operation,
        source,
    }
}
