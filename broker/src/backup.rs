//! The backup service of a broker: uploads partition backups to the backup store, answers status,
//! list and delete, and fails what a previous run of this node left unfinished.
//!
//! Shape: `BackupService::new(store, options)` gives the service and a cheap [`BackupHandle`];
//! `run(cancel)` is the actor loop. Partitions hand jobs over a bounded channel; each job becomes a
//! task; file uploads of all jobs share one semaphore (`maxConcurrentUploads`), so many large
//! segments never open more connections than configured. Starts, uploaded files and final
//! statuses are counted into a shared [`BackupMetrics`] (`BackupService::with_metrics`).
//!
//! Lifecycle of one partition backup (the manifest is the commit point):
//! 1. the job is registered as running (status answers IN_PROGRESS from here on);
//! 2. manifest written IN_PROGRESS;
//! 3. every file uploaded, streamed, with its CRC32C;
//! 4. manifest written COMPLETED with the file list, or FAILED with the reason.
//!
//! A backup is never left IN_PROGRESS: on shutdown running uploads are aborted and marked FAILED;
//! after a crash, [`BackupHandle::fail_unfinished`] marks FAILED every IN_PROGRESS manifest of this
//! node up to the latest recovered checkpoint, and writes a FAILED manifest for a latest checkpoint
//! whose upload never started.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::{StreamExt, TryStreamExt};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, FileEntry, FileKind, Manifest,
    Throttle,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::metrics::{BackupMetrics, InProgressGuard};
use crate::partition::ReservationGuard;
use crate::protocol::{BackupDescription, BackupState, PartitionBackupStatus};

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub node_id: u32,
    pub max_concurrent_uploads: usize,
    /// 0 means unlimited.
    pub upload_rate_limit_bytes_per_second: u64,
    pub queue_capacity: usize,
    /// Fixed part of the deadline of every store call (a manifest write, a file upload): a
    /// backend that hangs ends the backup FAILED instead of leaving it IN_PROGRESS.
    pub store_call_timeout: Duration,
}

impl BackupOptions {
    /// Deadline of one file upload: the fixed part plus the time the file needs at a floor rate
    /// (a quarter of its share of the rate limit, or 256 KiB/s without one).
    pub fn upload_deadline(&self, len_bytes: u64) -> Duration {
        let concurrency = self.max_concurrent_uploads.max(1) as u64;
        let floor_bytes_per_second = if self.upload_rate_limit_bytes_per_second > 0 {
            (self.upload_rate_limit_bytes_per_second / (4 * concurrency)).max(1)
        } else {
            256 * 1024
        };
        self.store_call_timeout
            + Duration::from_secs_f64(len_bytes as f64 / floor_bytes_per_second as f64)
    }
}

#[derive(Debug, Clone)]
pub struct FileToUpload {
    pub kind: FileKind,
    pub name: String,
    pub path: PathBuf,
    /// Only this prefix of the file is uploaded (the active segment keeps growing).
    pub len_bytes: u64,
}

pub struct BackupJob {
    pub id: BackupIdentifier,
    pub descriptor: BackupDescriptor,
    pub files: Vec<FileToUpload>,
    /// Released when the job ends, whatever way.
    pub reservation: ReservationGuard,
}

#[derive(Debug, Clone)]
struct Running {
    id: BackupIdentifier,
    descriptor: BackupDescriptor,
    /// Set when the backup failed but its FAILED manifest has not landed yet (the store may be
    /// down): status answers FAILED from here.
    failure: Option<String>,
    /// `createdAt` of the IN_PROGRESS manifest, once it is built.
    created_at: Option<String>,
}

type RunningMap = Arc<DashMap<(u32, u64), Running>>;

/// Removes the job from the running map when the task ends or is aborted.
struct RunningGuard {
    running: RunningMap,
    key: (u32, u64),
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.remove(&self.key);
    }
}

#[derive(Clone)]
pub struct BackupHandle {
    tx: mpsc::Sender<Queued>,
    store: BackupStore,
    running: RunningMap,
    node_id: u32,
    metrics: Arc<BackupMetrics>,
}

/// A job on its way to the service, with the guards that keep it listed as running and counted
/// as in progress.
struct Queued {
    job: BackupJob,
    running: RunningGuard,
    in_progress: InProgressGuard,
}

pub struct BackupService {
    options: BackupOptions,
    store: BackupStore,
    rx: mpsc::Receiver<Queued>,
    running: RunningMap,
    uploads: Arc<Semaphore>,
    throttle: Option<Throttle>,
    metrics: Arc<BackupMetrics>,
}

const SHUTDOWN_MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts to write a final manifest: with the backoff capped at 30 s, about 15 minutes.
const FINAL_MANIFEST_ATTEMPTS: u32 = 36;
/// Manifests read at the same time when listing backups.
const LIST_MANIFEST_READS: usize = 16;

impl BackupService {
    pub fn new(store: BackupStore, options: BackupOptions) -> (BackupService, BackupHandle) {
        BackupService::with_metrics(store, options, BackupMetrics::new())
    }

    /// [`BackupService::new`], counting into `metrics` (shared with the API that serves them).
    pub fn with_metrics(
        store: BackupStore,
        options: BackupOptions,
        metrics: Arc<BackupMetrics>,
    ) -> (BackupService, BackupHandle) {
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let running: RunningMap = Arc::new(DashMap::new());
        let handle = BackupHandle {
            tx,
            store: store.clone(),
            running: running.clone(),
            node_id: options.node_id,
            metrics: metrics.clone(),
        };
        let throttle = (options.upload_rate_limit_bytes_per_second > 0)
            .then(|| Throttle::new(options.upload_rate_limit_bytes_per_second));
        let uploads = Arc::new(Semaphore::new(options.max_concurrent_uploads.max(1)));
        (
            BackupService {
                options,
                store,
                rx,
                running,
                uploads,
                throttle,
                metrics,
            },
            handle,
        )
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                queued = self.rx.recv() => {
                    let Some(queued) = queued else { break };
                    let store = self.store.clone();
                    let uploads = self.uploads.clone();
                    let throttle = self.throttle.clone();
                    let running = self.running.clone();
                    let metrics = self.metrics.clone();
                    tasks.spawn(execute(store, queued, uploads, throttle, self.options.clone(), running, metrics));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Shutdown: nothing new is accepted; queued and running backups end FAILED, explicitly.
        self.rx.close();
        let unfinished: Vec<Running> = self.running.iter().map(|r| r.value().clone()).collect();
        while let Ok(queued) = self.rx.try_recv() {
            drop(queued);
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        for running in unfinished {
            let reason = running.failure.clone().unwrap_or_else(|| {
                format!(
                    "broker node {} shut down while the backup was uploading; take a new backup",
                    running.id.node_id
                )
            });
            let write = mark_failed(&self.store, &running.id, &running.descriptor, &reason);
            match tokio::time::timeout(SHUTDOWN_MANIFEST_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not mark an interrupted backup FAILED; the next start will")
                }
                Err(_) => tracing::warn!(
                    "timed out marking an interrupted backup FAILED; the next start will"
                ),
            }
        }
        self.running.clear();
        tracing::info!("backup service stopped");
    }
}

/// Runs one partition backup to COMPLETED or FAILED.
async fn execute(
    store: BackupStore,
    queued: Queued,
    uploads: Arc<Semaphore>,
    throttle: Option<Throttle>,
    options: BackupOptions,
    running: RunningMap,
    metrics: Arc<BackupMetrics>,
) {
    let Queued {
        job:
            BackupJob {
                id,
                descriptor,
                files,
                reservation,
            },
        running: _running,
        in_progress,
    } = queued;
    // Counted as in progress until the final status is known (or the task is aborted).
    let mut in_progress = Some(in_progress);
    let manifest = Manifest::in_progress(id, descriptor.clone());
    if let Some(mut entry) = running.get_mut(&(id.partition_id, id.checkpoint_id)) {
        entry.created_at = Some(manifest.created_at.clone());
    }
    let started = std::time::Instant::now();
    let call_timeout = options.store_call_timeout;
    let result = async {
        tokio::time::timeout(call_timeout, store.write_manifest(&manifest))
            .await
            .map_err(|_| format!("writing the IN_PROGRESS manifest timed out after {call_timeout:?}"))?
            .map_err(|error| error.to_string())?;
        let entries: Vec<FileEntry> = futures::stream::iter(files)
            .map(|file| {
                let store = store.clone();
                let uploads = uploads.clone();
                let throttle = throttle.clone();
                let metrics = metrics.clone();
                let deadline = options.upload_deadline(file.len_bytes);
                async move {
                    let _permit = uploads
                        .acquire_owned()
                        .await
                        .expect("semaphore never closed");
                    let upload = store.upload_file(
                        &id,
                        file.kind,
                        &file.name,
                        &file.path,
                        file.len_bytes,
                        throttle.as_ref(),
                    );
                    match tokio::time::timeout(deadline, upload).await {
                        Ok(Ok(entry)) => {
                            metrics.file_uploaded(entry.stored_bytes);
                            Ok(entry)
                        }
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(_) => Err(format!(
                            "upload of {} ({} bytes) did not finish within {deadline:?}; is the backup store reachable?",
                            file.name, file.len_bytes
                        )),
                    }
                }
            })
            .buffered(options.max_concurrent_uploads.max(1))
            .try_collect()
            .await?;
        Ok::<_, String>(entries)
    }
    .await;
    drop(reservation);
    let completed = result.is_ok();
    let final_manifest = match result {
        Ok(entries) => {
            let bytes: u64 = entries.iter().map(|e| e.size_bytes).sum();
            tracing::info!(
                partition = id.partition_id,
                backup = id.checkpoint_id,
                files = entries.len(),
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "backup completed"
            );
            manifest.complete(entries)
        }
        Err(error) => {
            tracing::error!(partition = id.partition_id, backup = id.checkpoint_id, %error, "backup failed");
            let reason = format!("upload failed: {error}");
            // Counted before status answers FAILED (from the next line on).
            metrics.backup_failed();
            in_progress.take();
            if let Some(mut entry) = running.get_mut(&(id.partition_id, id.checkpoint_id)) {
                entry.failure = Some(reason.clone());
            }
            manifest.fail(reason)
        }
    };
    // The final status is the commit point and must land, or the backup would look IN_PROGRESS
    // in the store: retry with capped backoff for a bounded time (the store may be down for a
    // while); until then this broker answers the status from memory.
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=FINAL_MANIFEST_ATTEMPTS {
        let write = tokio::time::timeout(call_timeout, store.write_manifest(&final_manifest)).await;
        match write {
            Ok(Ok(())) => {
                if completed {
                    metrics.backup_completed(id.checkpoint_id, started.elapsed());
                }
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(partition = id.partition_id, backup = id.checkpoint_id, attempt, %error,
                    "could not write the final manifest; retrying");
            }
            Err(_) => {
                tracing::warn!(
                    partition = id.partition_id,
                    backup = id.checkpoint_id,
                    attempt,
                    "writing the final manifest timed out; retrying"
                );
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::error!(
        partition = id.partition_id,
        backup = id.checkpoint_id,
        "gave up writing the final manifest; the next start of this broker marks the backup FAILED"
    );
    if completed {
        metrics.backup_failed();
    }
    drop(in_progress);
}

/// Writes a FAILED manifest for `id`, keeping what an existing manifest recorded.
async fn mark_failed(
    store: &BackupStore,
    id: &BackupIdentifier,
    descriptor: &BackupDescriptor,
    reason: &str,
) -> Result<()> {
    let manifest = match store.read_manifest(id).await? {
        Some(existing) if existing.status != BackupStatus::InProgress => return Ok(()),
        Some(existing) => existing,
        None => Manifest::in_progress(*id, descriptor.clone()),
    };
    store.write_manifest(&manifest.fail(reason)).await?;
    Ok(())
}

fn status_from_manifest(manifest: &Manifest) -> PartitionBackupStatus {
    PartitionBackupStatus {
        partition_id: manifest.id.partition_id,
        backup_id: manifest.id.checkpoint_id,
        status: match manifest.status {
            BackupStatus::InProgress => BackupState::InProgress,
            BackupStatus::Completed => BackupState::Completed,
            BackupStatus::Failed => BackupState::Failed,
        },
        description: Some(BackupDescription {
            snapshot_id: manifest.descriptor.snapshot_id.clone(),
            checkpoint_position: manifest.descriptor.checkpoint_position,
            broker_id: manifest.id.node_id,
            broker_version: manifest.descriptor.broker_version.clone(),
        }),
        failure_reason: manifest.failure_reason.clone(),
        created_at: Some(manifest.created_at.clone()),
        last_updated_at: Some(manifest.last_updated_at.clone()),
    }
}

fn status_of_running(running: &Running) -> PartitionBackupStatus {
    PartitionBackupStatus {
        partition_id: running.id.partition_id,
        backup_id: running.id.checkpoint_id,
        status: if running.failure.is_some() {
            BackupState::Failed
        } else {
            BackupState::InProgress
        },
        description: Some(BackupDescription {
            snapshot_id: running.descriptor.snapshot_id.clone(),
            checkpoint_position: running.descriptor.checkpoint_position,
            broker_id: running.id.node_id,
            broker_version: running.descriptor.broker_version.clone(),
        }),
        failure_reason: running.failure.clone(),
        created_at: running.created_at.clone(),
        last_updated_at: running.created_at.clone(),
    }
}

/// Picks the manifest that speaks for a partition when several nodes wrote one (the partition
/// moved between nodes across a restore): the most recently updated.
fn newest(manifests: Vec<Manifest>) -> Option<Manifest> {
    manifests
        .into_iter()
        .max_by(|a, b| a.last_updated_at.cmp(&b.last_updated_at))
}

impl BackupHandle {
    pub fn store(&self) -> &BackupStore {
        &self.store
    }

    /// The metrics this service counts into.
    pub fn metrics(&self) -> &Arc<BackupMetrics> {
        &self.metrics
    }

    /// Hands a job to the service. Registers it as running first, so that a status query right
    /// after the checkpoint was acknowledged answers IN_PROGRESS, not DOES_NOT_EXIST.
    pub async fn start(&self, job: BackupJob) {
        let key = (job.id.partition_id, job.id.checkpoint_id);
        self.running.insert(
            key,
            Running {
                id: job.id,
                descriptor: job.descriptor.clone(),
                failure: None,
                created_at: None,
            },
        );
        let guard = RunningGuard {
            running: self.running.clone(),
            key,
        };
        let id = job.id;
        let descriptor = job.descriptor.clone();
        // The guard travels with the job: it is dropped when the job's task ends.
        if self
            .tx
            .send(Queued {
                job,
                running: guard,
                in_progress: self.metrics.started(),
            })
            .await
            .is_err()
        {
            self.metrics.backup_failed();
            let reason = "the broker is shutting down; take a new backup";
            if let Err(error) = mark_failed(&self.store, &id, &descriptor, reason).await {
                tracing::warn!(%error, "could not mark a refused backup FAILED");
            }
        }
    }

    pub async fn status(&self, partition_id: u32, backup_id: u64) -> Result<PartitionBackupStatus> {
        // A backup this broker is running is answered from memory, never from the store: the
        // store may be the thing that hangs, and the status must still say what is going on.
        if let Some(running) = self.running.get(&(partition_id, backup_id)) {
            return Ok(status_of_running(&running));
        }
        let manifests = self.store.find_manifests(partition_id, backup_id).await?;
        Ok(match newest(manifests) {
            Some(manifest) => status_from_manifest(&manifest),
            None => PartitionBackupStatus::does_not_exist(partition_id, backup_id),
        })
    }

    /// Every backup of the partition whose id starts with `id_prefix` (decimal digits; all when
    /// `None`), ascending by id. Ids come from one prefix listing; only the matching manifests
    /// are read, at most `LIST_MANIFEST_READS` at a time.
    pub async fn list(
        &self,
        partition_id: u32,
        id_prefix: Option<&str>,
    ) -> Result<Vec<PartitionBackupStatus>> {
        let ids: Vec<u64> = self
            .store
            .list_checkpoints(partition_id)
            .await?
            .into_iter()
            .filter(|id| id_prefix.is_none_or(|prefix| id.to_string().starts_with(prefix)))
            .collect();
        let manifests: Vec<Vec<Manifest>> = futures::stream::iter(ids)
            .map(|id| self.store.find_manifests(partition_id, id))
            .buffer_unordered(LIST_MANIFEST_READS)
            .try_collect()
            .await?;
        let mut statuses: std::collections::BTreeMap<u64, PartitionBackupStatus> = manifests
            .into_iter()
            .filter_map(newest)
            .map(|manifest| (manifest.id.checkpoint_id, status_from_manifest(&manifest)))
            .collect();
        for running in self.running.iter().filter(|r| {
            r.key().0 == partition_id
                && id_prefix.is_none_or(|prefix| r.key().1.to_string().starts_with(prefix))
        }) {
            statuses.insert(running.key().1, status_of_running(running.value()));
        }
        Ok(statuses.into_values().collect())
    }

    /// Deletes every object of the partition's backup `backup_id`. Refuses while it runs.
    pub async fn delete(&self, partition_id: u32, backup_id: u64) -> Result<usize> {
        if self.running.contains_key(&(partition_id, backup_id)) {
            return Err(BrokerError::BackupInProgress { backup_id });
        }
        let manifests = self.store.find_manifests(partition_id, backup_id).await?;
        if manifests
            .iter()
            .any(|m| m.status == BackupStatus::InProgress)
        {
            return Err(BrokerError::BackupInProgress { backup_id });
        }
        let mut deleted = 0;
        for manifest in manifests {
            deleted += self.store.delete_backup(&manifest.id).await?;
        }
        Ok(deleted)
    }

    /// After a start: marks FAILED every backup this node left IN_PROGRESS for `partition_id`
    /// (all of them, up to `latest_checkpoint`), and records a FAILED manifest for the latest
    /// checkpoint when its upload never started. Retries with backoff; bounded.
    pub async fn fail_unfinished(
        &self,
        partition_id: u32,
        latest_checkpoint: Option<(u64, u64)>,
        partitions_count: u32,
    ) {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=10 {
            match self
                .try_fail_unfinished(partition_id, latest_checkpoint, partitions_count)
                .await
            {
                Ok(failed) => {
                    if failed > 0 {
                        tracing::warn!(
                            partition = partition_id,
                            failed,
                            "marked backups interrupted by a broker restart as FAILED"
                        );
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(partition = partition_id, attempt, %error,
                        "could not check for interrupted backups; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::error!(
            partition = partition_id,
            "gave up checking for interrupted backups"
        );
    }

    async fn try_fail_unfinished(
        &self,
        partition_id: u32,
        latest_checkpoint: Option<(u64, u64)>,
        partitions_count: u32,
    ) -> Result<usize> {
        let Some((latest_id, latest_position)) = latest_checkpoint else {
            return Ok(0);
        };
        let reason = format!(
            "broker node {} restarted while the backup was in progress; take a new backup",
            self.node_id
        );
        let mut failed = 0;
        for manifest in self.store.list_manifests(partition_id).await? {
            // Only backups started before this run: newer ids belong to this run.
            if manifest.id.node_id == self.node_id
                && manifest.status == BackupStatus::InProgress
                && manifest.id.checkpoint_id <= latest_id
            {
                self.store
                    .write_manifest(&manifest.fail(reason.clone()))
                    .await?;
                failed += 1;
            }
        }
        if self
            .store
            .find_manifests(partition_id, latest_id)
            .await?
            .is_empty()
        {
            let id = BackupIdentifier {
                partition_id,
                checkpoint_id: latest_id,
                node_id: self.node_id,
            };
            let descriptor = BackupDescriptor {
                snapshot_id: None,
                checkpoint_position: latest_position,
                number_of_partitions: partitions_count,
                broker_version: crate::BROKER_VERSION.to_string(),
            };
            let reason = format!(
                "broker node {} stopped before the upload of this backup started; take a new backup",
                self.node_id
            );
            self.store
                .write_manifest(&Manifest::in_progress(id, descriptor).fail(reason))
                .await?;
            failed += 1;
        }
        Ok(failed)
    }
}
