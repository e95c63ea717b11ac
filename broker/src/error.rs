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
    #[error("corrupt log record: path={path} offset={offset} position={position}: its frame checksum matches but the payload is not a command: {source}; the log was written by another release or damaged before it was written, start the release that wrote it or restore this node from a backup")]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        position: u64,
        source: crate::record::DecodeError,
    },
    #[error("unexpected file in the log directory: path={path}; log segments are named <20 digits>.log, move any other file out of the log directory")]
    UnexpectedLogFile { path: PathBuf },
    #[error("log segments do not join: path={path} first_position={first_position} expected_position={expected_position}: the segment starts at position {first_position} but the previous segment ends before {expected_position}; a segment is missing or was copied from another log, restore this node from a backup")]
    LogSegmentsDisjoint {
        path: PathBuf,
        first_position: u64,
        expected_position: u64,
    },
    #[error("records missing from the log: path={path} log_first_position={log_first_position} snapshot_position={snapshot_position}: the log starts at position {log_first_position} but the newest loadable snapshot ends at {snapshot_position}: records are missing; restore this node from a backup")]
    LogStartsAfterSnapshot {
        path: PathBuf,
        log_first_position: u64,
        snapshot_position: u64,
    },
    #[error("log shorter than its snapshot: path={path} partition {partition_id}: the newest loadable snapshot {snapshot_id} is at position {snapshot_position} but the log ends at position {log_last_position}: records {}..={snapshot_position} are missing (segments deleted or truncated?); the partition cannot go on from that snapshot, restore this node from a backup", .log_last_position + 1)]
    LogEndsBeforeSnapshot {
        path: PathBuf,
        partition_id: u32,
        snapshot_id: String,
        snapshot_position: u64,
        log_last_position: u64,
    },
    #[error("record not in the log: path={path} position={position}: the log holds no record at position {position} (segments: {segments})")]
    RecordNotInLog {
        path: PathBuf,
        position: u64,
        /// The position ranges of the segments, `first..last` each.
        segments: String,
    },
    #[error("corrupt snapshot: path={path}: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("partition layout changed: path={path} stored_partition={stored_partition_id} stored_partitions_count={stored_partitions_count} configured_partition={configured_partition_id} configured_partitions_count={configured_partitions_count}: the data was written for partition {stored_partition_id} of {stored_partitions_count}, but this broker is configured for partition {configured_partition_id} of {configured_partitions_count}; broker.cluster.partitionsCount (SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT) must not change: set it back to {stored_partitions_count}")]
    PartitionLayoutChanged {
        path: PathBuf,
        stored_partition_id: u32,
        stored_partitions_count: u32,
        configured_partition_id: u32,
        configured_partitions_count: u32,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown partition: partition={partition_id}; this node hosts {hosted:?}")]
    UnknownPartition { partition_id: u32, hosted: Vec<u32> },
    #[error("account not found: account={account}")]
    AccountNotFound { account: String },
    #[error("transfer not found: transferId={transfer_id}")]
    TransferNotFound { transfer_id: String },
    #[error("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) to FILESYSTEM, S3, GCS or AZURE")]
    BackupStoreNotConfigured,
    #[error("backup is in progress: backupId={backup_id}; wait until it is COMPLETED or FAILED")]
    BackupInProgress { backup_id: u64 },
    #[error("backup id must be greater than the latest backup id in the backup store: backupId={backup_id} stored={stored_backup_id}; the store already holds backup {stored_backup_id} (e.g. of the history before a restore of an older backup); use an id greater than {stored_backup_id}")]
    BackupIdTaken {
        backup_id: u64,
        stored_backup_id: u64,
    },
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
    /// What the shared protocol crate refuses (backup id grammar, TLS files).
    #[error(transparent)]
    Protocol(#[from] sluice_protocol::ProtocolError),
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::BackupStoreKind;

    /// The kinds of backup store the configuration accepts, read from its own refusal
    /// ("not a backup store (NONE, FILESYSTEM, …)"), each checked to parse.
    fn configurable_stores() -> Vec<BackupStoreKind> {
        let refusal = "?".parse::<BackupStoreKind>().unwrap_err().to_string();
        let list = refusal
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map_or_else(
                || panic!("no list of stores in {refusal:?}"),
                |(list, _)| list.to_string(),
            );
        list.split([',', ' '])
            .filter(|word| !word.is_empty() && *word != "or")
            .map(|word| word.parse().unwrap_or_else(|e| panic!("{word}: {e}")))
            .filter(|kind| *kind != BackupStoreKind::None)
            .collect()
    }

    #[test]
    fn the_store_hint_names_every_backup_store() {
        let message = BrokerError::BackupStoreNotConfigured.to_string();
        let stores = configurable_stores();
        assert!(stores.len() >= 4, "{stores:?}");
        for kind in stores {
            assert!(message.contains(kind.as_str()), "{message} lacks {kind}");
        }
    }
}
