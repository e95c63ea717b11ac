//! The restore of a backup, as a library: `sluice-restore` installs it into a node's data
//! directory and `sluice backup verify` runs the very same checks into a scratch directory, so
//! that a backup that verifies is one that restores.
//!
//! - [`choose_manifests`]: one rule for which manifest speaks for a partition, and the check,
//!   before anything is written, that every partition of the backup (1 to `partitionsCount`) is
//!   COMPLETED and was taken with the configured partition count.
//! - [`stage_partition`]: downloads a partition's files into a new directory (only there: every
//!   name is checked against its grammar, every file is created new), cuts the log after the
//!   checkpoint record (which must carry the backup id), loads the snapshot and recovers the
//!   partition with the broker's own code, which must land on the checkpoint, then takes the
//!   broker's snapshot there (so the broker that starts on it replays nothing).
//! - [`verify_backup`]: every partition staged into a temporary directory, deleted afterwards.
//! - [`restore_node`]: this node's partitions staged under `<data dir>/.sluice-restore-<uuid>/`,
//!   fsynced, then installed under a marker ([`RESTORE_MARKER_FILE`], fsynced before the first
//!   rename, removed after the last) that the broker refuses to start with and that a rerun of
//!   the restore cleans up.
//! - [`progress::Printer`]: the one printer of their progress (a bar, or a line a file).

pub mod progress;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_backup_store::{
    download_memory_bytes_max, validate_snapshot_id, BackupStatus, BackupStore, BackupStoreError,
    FileEntry, FileKind, Manifest, ObjectId, SkippedManifest,
};
use sluice_broker::error::BrokerError;
use sluice_broker::metrics::RestoreReport;
use sluice_broker::partition::{partition_directory, PartitionOptions, PartitionService};
use sluice_broker::record::{CheckpointKind, Command};
use sluice_broker::routing::{node_for_partition, partitions_for_node};
pub use sluice_broker::service::RESTORE_MARKER_FILE;
use sluice_config::{BrokerConfig, ClusterConfig};

/// The prefix of the staging directory of a restore inside the data directory.
pub const STAGING_PREFIX: &str = ".sluice-restore-";

/// Files of one partition downloaded at once.
pub const FILES_CONCURRENT_MAX: usize = 4;

/// Partitions staged at once, so that one partition's recovery (a replay of its log, blocking)
/// overlaps the other's downloads.
pub const PARTITIONS_CONCURRENT_MAX: usize = 2;

/// The memory all downloads of one restore or verification in flight hold together, whatever
/// the size of the backup: each file holds its [`download_memory_bytes_max`] of it while it
/// downloads (a file that needs more than all of it holds all of it, alone). The count of files
/// alone would not bound it: `FILES_CONCURRENT_MAX` (4) x `PARTITIONS_CONCURRENT_MAX` (2) files,
/// each with 4 pooled objects in flight (backup-store's `RANGES_CONCURRENT_MAX`) of at most
/// 4 MiB (`PIECE_BYTES_MAX`), are 4 x 2 x 4 x 4 MiB = 128 MiB of plaintext, but each object is
/// held sealed and opened at once (x 2 = 256 MiB), and a file of the format before the pool
/// holds 4 ranges of 8 MiB and, compressed, 17 MiB of decoder. With this budget: 4 large pooled
/// files at once (4 x 32 MiB) or any number of small ones up to the file counts.
pub const DOWNLOAD_MEMORY_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// Everything that can make a restore or a verification fail.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Listing or reading the manifests of a partition failed.
    #[error(
        "cannot read backup {backup_id} of partition {partition} from the backup store: {cause}"
    )]
    Store {
        backup_id: u64,
        partition: u32,
        /// Not a `source`: the message holds its text already (a printed chain would repeat it).
        cause: Box<BackupStoreError>,
    },
    /// A file of the backup could not be downloaded intact.
    #[error("partition {partition}: file {name} of backup {backup_id} is bad: {cause}")]
    File {
        backup_id: u64,
        partition: u32,
        name: String,
        cause: Box<BackupStoreError>,
    },
    /// An object of the partition's pool, which the backup (and maybe others) needs, is
    /// missing or damaged.
    #[error("partition {partition}: file {name} of backup {backup_id} is bad: {cause}; pool object {object} is needed by backups {needed_by} (of partition {partition}), which cannot be restored either: delete them (sluice backup delete <id>) and take a new backup", needed_by = join_ids(.needed_by))]
    PoolObject {
        backup_id: u64,
        partition: u32,
        name: String,
        object: ObjectId,
        /// Every backup of the partition whose manifest references the object.
        needed_by: Vec<u64>,
        cause: Box<BackupStoreError>,
    },
    /// Some partition of the backup is missing or not COMPLETED.
    #[error("backup {backup_id} cannot be restored: {problems}; only a backup whose every partition (1 to {partitions_count}) is COMPLETED can be restored: choose another backup id (sluice backup list)")]
    NotRestorable {
        backup_id: u64,
        partitions_count: u32,
        problems: String,
        /// Whether a partition is not restorable because its manifests are damaged (not just
        /// missing or unfinished).
        damaged: bool,
    },
    /// A plain backup where encryption keys are configured: nothing proves who wrote it.
    #[error("backup {backup_id} is not encrypted (partition {partition}), and encryption keys are configured: nothing proves that a plain backup was written by this cluster, as anyone who can write to the bucket can write one. If it was taken before encryption was turned on, run again with --allow-unencrypted")]
    Unencrypted { backup_id: u64, partition: u32 },
    /// The backup was taken with another partition count than configured.
    #[error("backup {backup_id} was taken with partitionsCount={backup} (partition {partition}) but broker.cluster.partitionsCount={configured}; restore with the partition count of the backup")]
    PartitionCount {
        backup_id: u64,
        partition: u32,
        backup: u32,
        configured: u32,
    },
    /// The backup's data does not hold what its manifest promises.
    #[error(
        "partition {partition}: backup {backup_id} is damaged: {reason}; choose another backup"
    )]
    Damaged {
        backup_id: u64,
        partition: u32,
        reason: String,
    },
    /// The staged partition does not recover with the broker's code.
    #[error("partition {partition}: the restored data of backup {backup_id} does not recover: {cause}; the backup is damaged: choose another backup")]
    Recovery {
        backup_id: u64,
        partition: u32,
        cause: Box<BrokerError>,
    },
    /// The data directory holds something other than an unfinished restore's leftovers.
    #[error("the data directory {dir} is not empty (it holds {entries}); restore only into an empty directory: move its contents away or point broker.data.directory (SLUICE_BROKER_DATA_DIRECTORY) elsewhere", dir = .dir.display())]
    NotEmpty { dir: PathBuf, entries: String },
    /// The marker of an unfinished restore cannot be used to clean up after it.
    #[error("the marker of an unfinished restore {path} cannot be used: {reason}; it was not written by this restore tool: check the data directory by hand", path = .path.display())]
    BadMarker { path: PathBuf, reason: String },
    /// A local file or directory could not be created, written, synced, renamed or removed.
    #[error("local file I/O failed: path={path} operation={operation} error={source}", path = .path.display())]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    /// No checkpoint at or before the asked time can be restored on every partition.
    #[error("no checkpoint requested at or before {at} is COMPLETED on every partition (1 to {partitions_count}); the oldest checkpoint after it is {oldest}: `sluice backup restore-points` shows what can be restored", oldest = .oldest.as_deref().unwrap_or("none"))]
    NoRestorePoint {
        at: String,
        partitions_count: u32,
        oldest: Option<String>,
    },
    /// Listing the checkpoints of a partition failed.
    #[error("cannot list the checkpoints of partition {partition} in the backup store: {cause}")]
    Listing {
        partition: u32,
        cause: Box<BackupStoreError>,
    },
    /// The recovery check's blocking task died.
    #[error("the recovery check of partition {partition} panicked: {reason}")]
    Panicked { partition: u32, reason: String },
}

/// What kind of failure a [`RestoreError`] is, for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A file or manifest of the backup is damaged.
    Corrupt,
    /// The backup, a partition of it, or a file is missing or not COMPLETED.
    Missing,
    /// The backup store did not answer.
    Unreachable,
    /// Anything else (configuration, local disk).
    Other,
}

impl RestoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        let of_store = |source: &BackupStoreError| match source {
            BackupStoreError::Corrupt { .. }
            | BackupStoreError::InvalidManifest { .. }
            | BackupStoreError::InvalidField { .. }
            | BackupStoreError::InvalidFileName { .. } => FailureKind::Corrupt,
            error if error.is_not_found() => FailureKind::Missing,
            BackupStoreError::Io { .. } => FailureKind::Other,
            _ => FailureKind::Unreachable,
        };
        match self {
            Self::Store { cause, .. }
            | Self::File { cause, .. }
            | Self::PoolObject { cause, .. }
            | Self::Listing { cause, .. } => of_store(cause),
            Self::NotRestorable { damaged: true, .. } => FailureKind::Corrupt,
            Self::NotRestorable { .. } | Self::NoRestorePoint { .. } => FailureKind::Missing,
            Self::Damaged { .. } | Self::Recovery { .. } => FailureKind::Corrupt,
            Self::PartitionCount { .. }
            | Self::Unencrypted { .. }
            | Self::NotEmpty { .. }
            | Self::BadMarker { .. }
            | Self::Io { .. }
            | Self::Panicked { .. } => FailureKind::Other,
        }
    }
}

type Result<T, E = RestoreError> = std::result::Result<T, E>;

fn io_error(path: &Path, operation: &'static str) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io {
        path,
        operation,
        source,
    }
}

/// Follows a restore or verification file by file ([`progress::Printer`]: a bar, log lines).
pub trait Progress: Send {
    /// Before the first download: what will be downloaded in total.
    fn start(&mut self, _files: u64, _bytes: u64) {}
    /// One file was downloaded and verified.
    fn file_done(&mut self, _partition: u32, _entry: &FileEntry) {}
    /// Every file was downloaded.
    fn finish(&mut self) {}
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What the downloads of one restore or verification share: the memory budget (in bytes, one
/// permit a byte), the progress (told of each file as it finishes, in whatever order), and the
/// cancellation of every download once one partition failed.
struct Downloads<'p> {
    budget: tokio::sync::Semaphore,
    budget_bytes: u32,
    progress: Mutex<&'p mut dyn Progress>,
    cancel: tokio_util::sync::CancellationToken,
}

impl<'p> Downloads<'p> {
    fn new(budget_bytes: u64, progress: &'p mut dyn Progress) -> Downloads<'p> {
        // A permit a byte, taken many at a time (`acquire_many` counts in u32).
        let budget_bytes = u32::try_from(budget_bytes.max(1)).unwrap_or(u32::MAX);
        Downloads {
            budget: tokio::sync::Semaphore::new(budget_bytes as usize),
            budget_bytes,
            progress: Mutex::new(progress),
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The progress, never held across an await. A printer that panicked still prints.
    fn progress(&self) -> MutexGuard<'_, &'p mut dyn Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Downloads one file of `manifest` within the budget, and tells the progress.
    async fn download(
        &self,
        store: &BackupStore,
        manifest: &Manifest,
        entry: &FileEntry,
        destination: &Path,
    ) -> Result<()> {
        let needed = u32::try_from(download_memory_bytes_max(entry))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_bytes);
        let downloaded = {
            let _held = self
                .budget
                .acquire_many(needed)
                .await
                .expect("the download budget is never closed");
            store.download_file(manifest, entry, destination).await
        };
        match downloaded {
            Ok(()) => {
                self.progress().file_done(manifest.id.partition_id, entry);
                Ok(())
            }
            Err(source) => Err(file_error(store, manifest, entry, source).await),
        }
    }

    /// Runs the staging of every chosen partition, `PARTITIONS_CONCURRENT_MAX` at a time, and
    /// returns them by partition id. The first failure cancels the downloads of the others
    /// (whose staging gives `None`) and is returned once every partition in flight stopped: a
    /// recovery in flight runs in a blocking task, which cannot be cancelled and must be over
    /// before the caller removes the directory it works in.
    async fn stage_all(
        &self,
        stagings: Vec<impl Future<Output = Result<Option<StagedPartition>>>>,
    ) -> Result<Vec<StagedPartition>> {
        // A list of futures (not started), not an iterator mapped by a closure: a closure over
        // references in the stream makes the restore's future not `Send` (rustc cannot prove the
        // closure general over the lifetimes of its arguments).
        let mut partitions =
            futures::stream::iter(stagings).buffer_unordered(PARTITIONS_CONCURRENT_MAX);
        let mut staged = Vec::new();
        let mut failure = None;
        while let Some(result) = partitions.next().await {
            match result {
                Ok(Some(partition)) => staged.push(partition),
                Ok(None) => {}
                Err(error) => {
                    self.cancel.cancel();
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        staged.sort_by_key(|p| p.partition_id);
        Ok(staged)
    }
}

/// The manifest that speaks for one partition of a backup, and the manifests of that partition
/// that were skipped because they cannot be used (damaged, newer format, …).
#[derive(Debug, Clone)]
pub struct Chosen {
    pub manifest: Manifest,
    pub skipped: Vec<SkippedManifest>,
}

/// The COMPLETED manifest that speaks for a partition hosted by `hosting_node`, if it has one:
/// the one [`Manifest::choose`] (the one rule) picks, which is COMPLETED whenever any is.
/// Restore and verify both use it.
pub fn choose_completed(manifests: &[Manifest], hosting_node: u32) -> Option<&Manifest> {
    Manifest::choose(manifests, hosting_node).filter(|m| m.status == BackupStatus::Completed)
}

/// A restore point found by time: the checkpoint's id and its time (milliseconds since the
/// Unix epoch, as the coordinator asked it, or when the backup began where no partition says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePointAt {
    pub checkpoint_id: u64,
    pub kind: CheckpointKind,
    pub at_ms: u64,
}

/// The newest checkpoint of the cluster whose time is at or before `at_ms` and that every
/// partition 1 to `partitionsCount` holds COMPLETED (so a consistent cut `restore_node` accepts):
/// the target of `bin/restore --to`. Reads the manifests of the checkpoints every partition
/// lists, newest first, until one fits; writes nothing.
pub async fn restore_point_at(
    store: &BackupStore,
    cluster: &ClusterConfig,
    at_ms: u64,
) -> Result<RestorePointAt> {
    let mut common: Option<std::collections::BTreeSet<u64>> = None;
    for partition in 1..=cluster.partitions_count {
        let ids =
            store
                .list_checkpoints(partition)
                .await
                .map_err(|cause| RestoreError::Listing {
                    partition,
                    cause: Box::new(cause),
                })?;
        let ids: std::collections::BTreeSet<u64> = ids.into_iter().collect();
        common = Some(match common {
            None => ids,
            Some(common) => common.intersection(&ids).copied().collect(),
        });
    }
    let mut oldest = None;
    for checkpoint_id in common.unwrap_or_default().into_iter().rev() {
        let Some(point) = restorable_point(store, cluster, checkpoint_id, at_ms).await? else {
            continue;
        };
        if point.at_ms <= at_ms {
            return Ok(point);
        }
        oldest = Some(point);
    }
    Err(RestoreError::NoRestorePoint {
        at: rfc3339_of_millis(at_ms),
        partitions_count: cluster.partitions_count,
        oldest: oldest.map(|p| format!("{} at {}", p.checkpoint_id, rfc3339_of_millis(p.at_ms))),
    })
}

/// Checkpoint `checkpoint_id` as a restore point, if every partition holds it COMPLETED; or,
/// as soon as a partition says it was requested after `at_ms`, that time alone (the other
/// partitions are not read: newer checkpoints cost one manifest each, not one per partition).
async fn restorable_point(
    store: &BackupStore,
    cluster: &ClusterConfig,
    checkpoint_id: u64,
    at_ms: u64,
) -> Result<Option<RestorePointAt>> {
    let mut request = None;
    let mut began_ms: Option<u64> = None;
    for partition in 1..=cluster.partitions_count {
        let manifests = store
            .find_manifests(partition, checkpoint_id)
            .await
            .map_err(|source| RestoreError::Store {
                backup_id: checkpoint_id,
                partition,
                cause: Box::new(source),
            })?;
        let hosting_node = node_for_partition(partition, cluster.cluster_size);
        let Some(manifest) = choose_completed(&manifests, hosting_node) else {
            return Ok(None);
        };
        request = request.or(manifest.descriptor.request);
        if let Some(request) = request.filter(|r| r.requested_at_ms > at_ms) {
            return Ok(Some(RestorePointAt {
                checkpoint_id,
                kind: request.kind,
                at_ms: request.requested_at_ms,
            }));
        }
        let created_ms = humantime::parse_rfc3339_weak(&manifest.created_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        began_ms = match (began_ms, created_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(match (request, began_ms) {
        (Some(request), _) => Some(RestorePointAt {
            checkpoint_id,
            kind: request.kind,
            at_ms: request.requested_at_ms,
        }),
        // A backup of an earlier release: its time is when its upload began.
        (None, Some(at_ms)) => Some(RestorePointAt {
            checkpoint_id,
            kind: CheckpointKind::Backup,
            at_ms,
        }),
        (None, None) => None,
    })
}

pub use sluice_broker::protocol::rfc3339_of_millis;

/// Chooses the manifest of every partition 1 to `partitionsCount` of backup `backup_id`, and
/// refuses, naming each, partitions that are missing or not COMPLETED, and a backup taken with
/// another partition count. Nothing is written. Manifests that cannot be used are skipped (and
/// returned) unless no usable COMPLETED one is left, then they are named in the refusal.
pub async fn choose_manifests(
    store: &BackupStore,
    cluster: &ClusterConfig,
    backup_id: u64,
) -> Result<Vec<Chosen>> {
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    let mut damaged = false;
    for partition in 1..=cluster.partitions_count {
        let listing = store
            .find_manifests_reporting(partition, backup_id)
            .await
            .map_err(|source| RestoreError::Store {
                backup_id,
                partition,
                cause: Box::new(source),
            })?;
        let hosting_node = node_for_partition(partition, cluster.cluster_size);
        match choose_completed(&listing.manifests, hosting_node) {
            Some(manifest) => {
                if manifest.encryption.is_none() && store.refuses_plain_restore() {
                    return Err(RestoreError::Unencrypted {
                        backup_id,
                        partition,
                    });
                }
                if manifest.descriptor.number_of_partitions != cluster.partitions_count {
                    return Err(RestoreError::PartitionCount {
                        backup_id,
                        partition,
                        backup: manifest.descriptor.number_of_partitions,
                        configured: cluster.partitions_count,
                    });
                }
                chosen.push(Chosen {
                    manifest: manifest.clone(),
                    skipped: listing.skipped,
                });
            }
            None => {
                let mut states: Vec<String> = listing
                    .manifests
                    .iter()
                    .map(|m| {
                        format!(
                            "{} on node {}{}",
                            m.status,
                            m.id.node_id,
                            m.failure_reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                damaged |= !listing.skipped.is_empty();
                states.extend(listing.skipped.iter().map(|s| {
                    format!(
                        "unusable on node {}: {}: {}",
                        s.id.node_id, s.path, s.reason
                    )
                }));
                problems.push(if states.is_empty() {
                    format!("partition {partition} does not exist")
                } else {
                    format!("partition {partition} is {}", states.join(", "))
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(RestoreError::NotRestorable {
            backup_id,
            partitions_count: cluster.partitions_count,
            problems: problems.join("; "),
            damaged,
        });
    }
    Ok(chosen)
}

/// A partition downloaded and verified in its staging directory.
#[derive(Debug, Clone)]
pub struct StagedPartition {
    pub partition_id: u32,
    pub manifest: Manifest,
    /// The number of accounts after recovery.
    pub accounts: u64,
    /// Where it is staged (or, after [`restore_node`], installed).
    pub directory: PathBuf,
}

/// Where a file of the backup goes inside a partition directory: `log/<segment name>` or
/// `snapshots/<snapshot id>/<snapshot file>`, each name checked against its exact grammar, so
/// that nothing lands outside `partition_dir` whatever the manifest says.
fn staged_destination(
    partition_dir: &Path,
    manifest: &Manifest,
    entry: &FileEntry,
) -> Result<PathBuf> {
    let damaged = |reason: String| RestoreError::Damaged {
        backup_id: manifest.id.checkpoint_id,
        partition: manifest.id.partition_id,
        reason,
    };
    match entry.kind {
        FileKind::Segment => {
            if sluice_broker::log::parse_segment_file_name(&entry.name).is_none() {
                return Err(damaged(format!(
                    "the manifest lists segment name={:?}, not a segment file name (<20 digits>.log)",
                    entry.name
                )));
            }
            Ok(partition_dir.join("log").join(&entry.name))
        }
        FileKind::Snapshot => {
            let Some(snapshot_id) = &manifest.descriptor.snapshot_id else {
                return Err(damaged(format!(
                    "the manifest lists snapshot file {} but descriptor.snapshotId is null",
                    entry.name
                )));
            };
            validate_snapshot_id(snapshot_id).map_err(|e| damaged(e.to_string()))?;
            let known = [
                sluice_broker::snapshot::STATE_FILE,
                sluice_broker::snapshot::META_FILE,
            ];
            if !known.contains(&entry.name.as_str()) {
                return Err(damaged(format!(
                    "the manifest lists snapshot file name={:?}, not one of {known:?}",
                    entry.name
                )));
            }
            Ok(partition_dir
                .join("snapshots")
                .join(snapshot_id)
                .join(&entry.name))
        }
    }
}

/// Downloads and verifies one partition into `partition_dir`, which must not exist (it is
/// created, its parent must exist). Checks the checkpoint record, loads the snapshot and runs
/// the broker's recovery on the staged copy, as the broker will at start-up, then ends it with
/// the broker's snapshot at the checkpoint (compacting the log before it as the broker does), so
/// that the broker starting on the partition replays nothing. The partition is recovered for
/// the node that hosts it.
pub async fn stage_partition(
    store: &BackupStore,
    config: &BrokerConfig,
    manifest: &Manifest,
    partition_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<StagedPartition> {
    let downloads = Downloads::new(DOWNLOAD_MEMORY_BYTES_MAX, progress);
    let staged = stage_with(store, config, manifest, partition_dir, &downloads).await?;
    Ok(staged.expect("only a failure of another partition cancels a staging"))
}

/// [`stage_partition`] with the downloads of the whole restore: its files `FILES_CONCURRENT_MAX`
/// at a time within the shared budget. `None` when it stopped because another partition failed
/// (`downloads.cancel`); a recovery that started runs to its end.
async fn stage_with(
    store: &BackupStore,
    config: &BrokerConfig,
    manifest: &Manifest,
    partition_dir: &Path,
    downloads: &Downloads<'_>,
) -> Result<Option<StagedPartition>> {
    if downloads.cancel.is_cancelled() {
        return Ok(None);
    }
    let partition_id = manifest.id.partition_id;
    let backup_id = manifest.id.checkpoint_id;
    let damaged = |reason: String| RestoreError::Damaged {
        backup_id,
        partition: partition_id,
        reason,
    };
    // Every destination is checked before anything is created.
    let destinations: Vec<PathBuf> = manifest
        .files
        .iter()
        .map(|entry| staged_destination(partition_dir, manifest, entry))
        .collect::<Result<_>>()?;
    std::fs::create_dir(partition_dir).map_err(io_error(partition_dir, "create"))?;
    let log_dir = partition_dir.join("log");
    std::fs::create_dir(&log_dir).map_err(io_error(&log_dir, "create"))?;
    let snapshot_dir = manifest
        .descriptor
        .snapshot_id
        .as_ref()
        .map(|id| partition_dir.join("snapshots").join(id));
    if let Some(dir) = &snapshot_dir {
        std::fs::create_dir_all(dir).map_err(io_error(dir, "create"))?;
    }
    // The first failure returns, which drops (cancels) the downloads still in flight.
    let files = async {
        let mut pending = Vec::with_capacity(destinations.len());
        for (entry, destination) in manifest.files.iter().zip(&destinations) {
            pending.push(downloads.download(store, manifest, entry, destination));
        }
        let mut files = futures::stream::iter(pending).buffer_unordered(FILES_CONCURRENT_MAX);
        while let Some(downloaded) = files.next().await {
            downloaded?;
        }
        Ok(())
    };
    tokio::select! {
        biased;
        () = downloads.cancel.cancelled() => return Ok(None),
        downloaded = files => downloaded?,
    }
    // Cut the log right after the checkpoint record, and check that record is this backup's.
    let position = manifest.descriptor.checkpoint_position;
    let payload = sluice_broker::log::truncate_after(&log_dir, position)
        .map_err(|e| damaged(format!("the log does not hold its checkpoint record: {e}")))?;
    match Command::decode(&payload) {
        Ok(Command::Checkpoint { checkpoint_id, .. }) if checkpoint_id == backup_id => {}
        other => {
            return Err(damaged(format!(
                "the record at checkpoint position {position} is {other:?}, not the checkpoint of backup {backup_id}"
            )))
        }
    }
    // The snapshot must load: recovery would silently skip one that does not.
    if let Some(dir) = &snapshot_dir {
        let snapshot = sluice_broker::snapshot::read(dir)
            .map_err(|e| damaged(format!("the snapshot does not read: {e}")))?;
        sluice_broker::snapshot::load(&snapshot)
            .map_err(|e| damaged(format!("the snapshot does not load: {e}")))?;
        if snapshot.meta.processed_position >= position {
            return Err(damaged(format!(
                "the snapshot ends at position {}, not before the checkpoint at {position}",
                snapshot.meta.processed_position
            )));
        }
    }
    // Recover the partition exactly as the broker will, and check where it lands.
    let options = PartitionOptions {
        partition_id,
        partitions_count: config.cluster.partitions_count,
        node_id: node_for_partition(partition_id, config.cluster.cluster_size),
        directory: partition_dir.to_path_buf(),
        segment_bytes_max: config.data.log_segment_size_bytes,
        snapshot_period: config.data.snapshot_period,
        request_queue_capacity: 1,
        batch_commands_max: 1,
    };
    // Recovery replays the whole log once, to verify it; the snapshot at the checkpoint that
    // ends it (the broker's own, which also compacts the log before it as the broker does) is
    // what the broker starts from, so that it replays nothing and its start does not grow
    // with the backup.
    let service = tokio::task::spawn_blocking(move || {
        let (mut service, _handle) =
            PartitionService::new(options, None).map_err(|source| RestoreError::Recovery {
                backup_id,
                partition: partition_id,
                cause: Box::new(source),
            })?;
        if service.latest_checkpoint() != Some((backup_id, position)) {
            return Err(RestoreError::Damaged {
                backup_id,
                partition: partition_id,
                reason: format!(
                    "after recovery the latest checkpoint is {:?}, expected backup {backup_id} at position {position}",
                    service.latest_checkpoint()
                ),
            });
        }
        // Writing the snapshot fails on the local disk, not on the backup's data.
        service.take_snapshot().map_err(|source| match source {
            BrokerError::Io {
                path,
                operation,
                source,
            } => RestoreError::Io {
                path,
                operation,
                source,
            },
            source => RestoreError::Recovery {
                backup_id,
                partition: partition_id,
                cause: Box::new(source),
            },
        })?;
        Ok(service)
    })
    .await
    .map_err(|e| RestoreError::Panicked {
        partition: partition_id,
        reason: e.to_string(),
    })??;
    Ok(Some(StagedPartition {
        partition_id,
        manifest: manifest.clone(),
        accounts: service.summary().accounts,
        directory: partition_dir.to_path_buf(),
    }))
}

/// The error of a file that did not download intact: for a pool object, naming the object and
/// every backup of the partition that needs it (one listing of the partition's manifests).
async fn file_error(
    store: &BackupStore,
    manifest: &Manifest,
    entry: &FileEntry,
    source: BackupStoreError,
) -> RestoreError {
    let (backup_id, partition) = (manifest.id.checkpoint_id, manifest.id.partition_id);
    let object = source.pool_object();
    let needed_by = match &object {
        Some(object) => store.backups_referencing(partition, object).await.ok(),
        None => None,
    };
    match (object, needed_by) {
        (Some(object), Some(needed_by)) => {
            let mut needed_by: Vec<u64> = needed_by.iter().map(|id| id.checkpoint_id).collect();
            needed_by.dedup();
            RestoreError::PoolObject {
                backup_id,
                partition,
                name: entry.name.clone(),
                object,
                needed_by,
                cause: Box::new(source),
            }
        }
        _ => RestoreError::File {
            backup_id,
            partition,
            name: entry.name.clone(),
            cause: Box::new(source),
        },
    }
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`verify_backup`] checked.
#[derive(Debug, Clone)]
pub struct Verified {
    pub partitions: Vec<StagedPartition>,
    pub skipped: Vec<SkippedManifest>,
    pub files: u64,
    pub bytes: u64,
}

/// Runs every check of a restore of backup `backup_id`, for every partition of the cluster, in
/// a temporary directory under `scratch` (the system's temporary directory when `None`), which
/// is deleted afterwards: when this passes, `sluice-restore` of the same backup on every node
/// passes its checks too (same manifests, same downloads, same recovery).
pub async fn verify_backup(
    store: &BackupStore,
    config: &BrokerConfig,
    backup_id: u64,
    scratch: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<Verified> {
    let chosen = choose_manifests(store, &config.cluster, backup_id).await?;
    let (files, bytes) = totals(&chosen);
    let downloads = Downloads::new(DOWNLOAD_MEMORY_BYTES_MAX, progress);
    downloads.progress().start(files, bytes);
    let temp = match scratch {
        Some(dir) => tempfile::Builder::new()
            .prefix(".sluice-verify-")
            .tempdir_in(dir),
        None => tempfile::Builder::new().prefix("sluice-verify-").tempdir(),
    }
    .map_err(io_error(
        scratch.unwrap_or(Path::new("$TMPDIR")),
        "create scratch directory",
    ))?;
    let mut stagings = Vec::with_capacity(chosen.len());
    for chosen in &chosen {
        let dir = partition_directory(temp.path(), chosen.manifest.id.partition_id);
        let downloads = &downloads;
        stagings.push(async move {
            let Some(mut staged) =
                stage_with(store, config, &chosen.manifest, &dir, downloads).await?
            else {
                return Ok(None);
            };
            // At most `PARTITIONS_CONCURRENT_MAX` partitions on disk at a time.
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir, "remove"))?;
            staged.directory = PathBuf::new();
            Ok(Some(staged))
        });
    }
    let partitions = downloads.stage_all(stagings).await?;
    let skipped = chosen.into_iter().flat_map(|c| c.skipped).collect();
    downloads.progress().finish();
    let path = temp.path().to_path_buf();
    temp.close()
        .map_err(io_error(&path, "remove scratch directory"))?;
    Ok(Verified {
        partitions,
        skipped,
        files,
        bytes,
    })
}

fn totals(chosen: &[Chosen]) -> (u64, u64) {
    let files = chosen.iter().map(|c| c.manifest.files.len() as u64).sum();
    let bytes = chosen
        .iter()
        .flat_map(|c| &c.manifest.files)
        .map(|f| f.size_bytes)
        .sum();
    (files, bytes)
}

/// The steps of installing a staged restore, for fault injection in tests: the hook runs after
/// each step, and a hook that panics stops the restore right there, as a crash would (nothing
/// after it runs, nothing is rolled back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStep {
    /// Every partition and the report are staged and fsynced.
    Staged,
    /// The marker is written and fsynced; nothing is installed yet.
    MarkerWritten,
    /// The partition was renamed into place.
    PartitionInstalled(u32),
    /// The restore report was renamed into place.
    ReportInstalled,
    /// The staging directory is gone, the marker removed and fsynced: the restore is complete.
    MarkerRemoved,
}

/// A hook called after every [`InstallStep`].
pub type StepHook = Arc<dyn Fn(InstallStep) + Send + Sync>;

/// Options of [`restore_node`].
#[derive(Clone, Default)]
pub struct RestoreOptions {
    /// Called after every installation step (tests).
    pub step_hook: Option<StepHook>,
    /// The memory budget of the downloads in flight; `None`: [`DOWNLOAD_MEMORY_BYTES_MAX`]
    /// (tests make it small).
    pub download_memory_bytes_max: Option<u64>,
}

/// What [`restore_node`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub backup_id: u64,
    /// This node's partitions, installed.
    pub partitions: Vec<StagedPartition>,
    /// Manifests of this node's partitions that were skipped as unusable.
    pub skipped: Vec<SkippedManifest>,
    /// Entries of an unfinished restore that were removed before restoring.
    pub cleaned_up: Vec<String>,
}

/// The content of [`RESTORE_MARKER_FILE`]: what an unfinished restore may have installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    backup_id: u64,
    /// The staging directory's name in the data directory.
    staging: String,
    /// The names, in the data directory, of everything the restore moves into place.
    installs: Vec<String>,
}

fn marker_tmp_name() -> String {
    format!("{RESTORE_MARKER_FILE}.tmp")
}

/// Whether `name` is a staging directory name: the prefix and a UUID.
fn is_staging_name(name: &str) -> bool {
    name.strip_prefix(STAGING_PREFIX)
        .is_some_and(|id| uuid::Uuid::try_parse(id).is_ok())
}

/// Whether `name` is something a restore installs: a partition directory or the report.
fn is_install_name(name: &str) -> bool {
    let report = RestoreReport::path(Path::new(""));
    if Some(std::ffi::OsStr::new(name)) == report.file_name() {
        return true;
    }
    name.strip_prefix("partition-").is_some_and(|digits| {
        digits.len() == 5
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits
                .parse::<u32>()
                .is_ok_and(|p| p > 0 && partition_directory(Path::new(""), p) == Path::new(name))
    })
}

fn read_marker(path: &Path) -> Result<Marker> {
    let bad = |reason: String| RestoreError::BadMarker {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let marker: Marker =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a restore marker: {e}")))?;
    if !is_staging_name(&marker.staging) {
        return Err(bad(format!(
            "staging={:?} is not a staging directory name",
            marker.staging
        )));
    }
    if let Some(name) = marker.installs.iter().find(|n| !is_install_name(n)) {
        return Err(bad(format!(
            "installs lists {name:?}, not a partition directory or the restore report"
        )));
    }
    Ok(marker)
}

/// Entries of `dir` other than `lost+found`, sorted; `None` when `dir` does not exist.
fn existing_entries(dir: &Path) -> Result<Option<Vec<String>>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                let name = entry
                    .map_err(io_error(dir, "list"))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name != "lost+found" {
                    names.push(name);
                }
            }
            names.sort();
            Ok(Some(names))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(dir, "read")(error)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync"))
}

/// Fsyncs every file and directory under `dir` and `dir` itself, so that what is renamed into
/// place is on disk before the rename is.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let entry = entry.map_err(io_error(dir, "list"))?;
        let path = entry.path();
        if entry.file_type().map_err(io_error(&path, "stat"))?.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_error(&path, "fsync"))?;
        }
    }
    sync_dir(dir)
}

fn remove_entry(path: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    result.map_err(io_error(path, "remove"))
}

/// Restores every partition this node hosts from backup `backup_id` into
/// `broker.data.directory`. Refuses a data directory that holds anything but `lost+found` and
/// the leftovers of an unfinished restore (its marker, staging directory and what its marker
/// says it installed, which are removed once every check passed). Checks every partition of the
/// backup first ([`choose_manifests`]), stages this node's ([`stage_partition`]), fsyncs them,
/// then installs them under the marker. On a failure the data directory is left as it was found
/// (without the leftovers of an unfinished restore, if there were any).
pub async fn restore_node(
    store: &BackupStore,
    config: &BrokerConfig,
    backup_id: u64,
    options: &RestoreOptions,
    progress: &mut dyn Progress,
) -> Result<Restored> {
    let started = Instant::now();
    let data_dir = config.data.directory.clone();
    let found = inspect_data_directory(&data_dir)?;

    // Every partition of the backup, not only this node's, before anything is written.
    let hosted = partitions_for_node(
        config.cluster.node_id,
        config.cluster.cluster_size,
        config.cluster.partitions_count,
    );
    let chosen: Vec<Chosen> = choose_manifests(store, &config.cluster, backup_id)
        .await?
        .into_iter()
        .filter(|c| hosted.contains(&c.manifest.id.partition_id))
        .collect();

    let cleaned_up = clean_up_unfinished(&data_dir, &found)?;
    std::fs::create_dir_all(&data_dir).map_err(io_error(&data_dir, "create"))?;
    let mut install = Install::new(&data_dir, options);
    let result = async {
        let (staged, skipped, staged_report) = install
            .stage(store, config, backup_id, &chosen, started, progress)
            .await?;
        let partitions = install.install(backup_id, staged, &staged_report)?;
        Ok(Restored {
            backup_id,
            partitions,
            skipped,
            cleaned_up,
        })
    }
    .await;
    if result.is_err() {
        install.undo(found.existed);
    }
    result
}

/// What the data directory holds before a restore: whether it exists, the marker of an
/// unfinished restore, and everything that restore left.
struct Found {
    existed: bool,
    marker: Option<Marker>,
    leftovers: BTreeSet<String>,
}

/// Reads the data directory and refuses it if it holds anything but `lost+found` and the
/// leftovers of an unfinished restore.
fn inspect_data_directory(data_dir: &Path) -> Result<Found> {
    let entries = existing_entries(data_dir)?;
    let existed = entries.is_some();
    let entries = entries.unwrap_or_default();
    let marker_path = data_dir.join(RESTORE_MARKER_FILE);
    let marker = if entries.iter().any(|e| e == RESTORE_MARKER_FILE) {
        Some(read_marker(&marker_path)?)
    } else {
        None
    };
    // What an unfinished restore left: its marker, its staging directories (never installed,
    // all of their content is the restore's) and what its marker says it installed.
    let mut leftovers: BTreeSet<String> = entries
        .iter()
        .filter(|e| is_staging_name(e) || **e == marker_tmp_name())
        .cloned()
        .collect();
    if let Some(marker) = &marker {
        leftovers.extend(marker.installs.iter().cloned());
        leftovers.insert(marker.staging.clone());
    }
    let others: Vec<&String> = entries
        .iter()
        .filter(|e| !leftovers.contains(*e) && *e != RESTORE_MARKER_FILE)
        .collect();
    if !others.is_empty() {
        return Err(RestoreError::NotEmpty {
            dir: data_dir.to_path_buf(),
            entries: others
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Found {
        existed,
        marker,
        leftovers,
    })
}

/// Cleans up after an unfinished restore: what it installed, then its marker. Returns the
/// names removed.
fn clean_up_unfinished(data_dir: &Path, found: &Found) -> Result<Vec<String>> {
    let mut cleaned_up = Vec::new();
    for name in &found.leftovers {
        let path = data_dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_entry(&path)?;
            cleaned_up.push(name.clone());
        }
    }
    if found.marker.is_some() {
        sync_dir(data_dir)?;
        remove_entry(&data_dir.join(RESTORE_MARKER_FILE))?;
        cleaned_up.push(RESTORE_MARKER_FILE.to_string());
    }
    if !cleaned_up.is_empty() {
        sync_dir(data_dir)?;
        tracing::warn!(dir = %data_dir.display(), removed = ?cleaned_up, "removed what an unfinished restore left");
    }
    Ok(cleaned_up)
}

/// One installation into the data directory: what it staged and installed so far, so that a
/// failure can take it back ([`Install::undo`]).
struct Install<'a> {
    data_dir: &'a Path,
    options: &'a RestoreOptions,
    staging_name: String,
    staging: PathBuf,
    installed: Vec<PathBuf>,
    marker_written: bool,
}

impl<'a> Install<'a> {
    fn new(data_dir: &'a Path, options: &'a RestoreOptions) -> Install<'a> {
        let staging_name = format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4());
        Install {
            data_dir,
            options,
            staging: data_dir.join(&staging_name),
            staging_name,
            installed: Vec::new(),
            marker_written: false,
        }
    }

    fn step(&self, step: InstallStep) {
        if let Some(hook) = &self.options.step_hook {
            hook(step);
        }
    }

    /// Downloads and verifies every chosen partition into the staging directory, with the
    /// restore report next to them, all fsynced. Returns the staged partitions, the skipped
    /// manifests and the staged report's path.
    async fn stage(
        &mut self,
        store: &BackupStore,
        config: &BrokerConfig,
        backup_id: u64,
        chosen: &[Chosen],
        started: Instant,
        progress: &mut dyn Progress,
    ) -> Result<(Vec<StagedPartition>, Vec<SkippedManifest>, PathBuf)> {
        let (files, bytes) = totals(chosen);
        let budget = self
            .options
            .download_memory_bytes_max
            .unwrap_or(DOWNLOAD_MEMORY_BYTES_MAX);
        let downloads = Downloads::new(budget, progress);
        downloads.progress().start(files, bytes);
        let staging = &self.staging;
        std::fs::create_dir(staging).map_err(io_error(staging, "create"))?;
        let mut stagings = Vec::with_capacity(chosen.len());
        for chosen in chosen {
            let dir = partition_directory(staging, chosen.manifest.id.partition_id);
            let downloads = &downloads;
            stagings.push(async move {
                stage_with(store, config, &chosen.manifest, &dir, downloads).await
            });
        }
        let staged = downloads.stage_all(stagings).await?;
        let skipped = chosen
            .iter()
            .flat_map(|c| c.skipped.iter().cloned())
            .collect();
        downloads.progress().finish();
        // Everything is verified: the report is staged with the partitions, published last.
        let report = RestoreReport::finished_now(
            backup_id,
            config.cluster.node_id,
            staged.iter().map(|p| p.partition_id).collect(),
            files,
            bytes,
            started.elapsed(),
        );
        let staged_report = RestoreReport::path(staging);
        report
            .write(&staged_report)
            .map_err(io_error(&staged_report, "write restore report"))?;
        sync_tree(staging)?;
        sync_dir(self.data_dir)?;
        self.step(InstallStep::Staged);
        Ok((staged, skipped, staged_report))
    }

    /// Moves the staged partitions and then the report into the data directory under the
    /// marker, then removes the staging directory and the marker.
    fn install(
        &mut self,
        backup_id: u64,
        mut staged: Vec<StagedPartition>,
        staged_report: &Path,
    ) -> Result<Vec<StagedPartition>> {
        let data_dir = self.data_dir;
        let report_target = self.write_marker(backup_id, &staged)?;
        for partition in &mut staged {
            let target = partition_directory(data_dir, partition.partition_id);
            std::fs::rename(&partition.directory, &target)
                .map_err(io_error(&target, "move the restored partition into place"))?;
            self.installed.push(target.clone());
            partition.directory = target;
            self.step(InstallStep::PartitionInstalled(partition.partition_id));
        }
        std::fs::rename(staged_report, &report_target).map_err(io_error(
            &report_target,
            "move the restore report into place",
        ))?;
        self.installed.push(report_target);
        self.step(InstallStep::ReportInstalled);
        std::fs::remove_dir_all(&self.staging).map_err(io_error(&self.staging, "remove"))?;
        sync_dir(data_dir)?;
        let marker_path = data_dir.join(RESTORE_MARKER_FILE);
        std::fs::remove_file(&marker_path)
            .map_err(io_error(&marker_path, "remove restore marker"))?;
        sync_dir(data_dir)?;
        self.step(InstallStep::MarkerRemoved);
        Ok(staged)
    }

    /// Writes the marker naming everything the installation will move into the data
    /// directory. It is durable before the first rename: a crash from here on leaves a node the
    /// broker refuses to start and a rerun of the restore cleans up. Returns the report's
    /// target path.
    fn write_marker(&mut self, backup_id: u64, staged: &[StagedPartition]) -> Result<PathBuf> {
        let data_dir = self.data_dir;
        let mut installs: Vec<String> = staged
            .iter()
            .map(|p| format!("partition-{:05}", p.partition_id))
            .collect();
        let report_target = RestoreReport::path(data_dir);
        let report_name = report_target
            .file_name()
            .expect("the report has a file name")
            .to_string_lossy()
            .into_owned();
        installs.push(report_name);
        let marker = Marker {
            backup_id,
            staging: self.staging_name.clone(),
            installs,
        };
        debug_assert!(marker.installs.iter().all(|n| is_install_name(n)));
        let marker_tmp = data_dir.join(marker_tmp_name());
        let marker_path = data_dir.join(RESTORE_MARKER_FILE);
        let json = serde_json::to_vec_pretty(&marker).expect("the marker serializes");
        std::fs::write(&marker_tmp, &json)
            .and_then(|()| std::fs::File::open(&marker_tmp)?.sync_all())
            .map_err(io_error(&marker_tmp, "write restore marker"))?;
        std::fs::rename(&marker_tmp, &marker_path)
            .map_err(io_error(&marker_path, "rename restore marker into place"))?;
        self.marker_written = true;
        sync_dir(data_dir)?;
        self.step(InstallStep::MarkerWritten);
        Ok(report_target)
    }

    /// Leaves the data directory as it was found (the marker goes last); removes it if it did
    /// not exist.
    fn undo(&self, existed: bool) {
        let data_dir = self.data_dir;
        let _ = remove_entry(&self.staging);
        for path in &self.installed {
            let _ = remove_entry(path);
        }
        if self.marker_written {
            let _ = sync_dir(data_dir);
            let _ = remove_entry(&data_dir.join(RESTORE_MARKER_FILE));
        }
        let _ = sync_dir(data_dir);
        if !existed {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
}
