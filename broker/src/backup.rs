//! The backup service of a broker: uploads partition backups to the backup store, answers status,
//! list and delete, and fails what a previous run of this node left unfinished.
//!
//! Shape: `BackupService::new(options, store, metrics)` gives the service and a cheap
//! [`BackupHandle`]; `run(cancel)` is the actor loop. Partitions hand jobs over a bounded
//! channel; each job becomes a task; file uploads of all jobs share one semaphore
//! (`maxConcurrentUploads`), so many large segments never open more connections than
//! configured. Starts, uploaded files and final statuses are counted into the shared
//! [`BackupMetrics`] given to `new`.
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
//!
//! Store errors are permanent or transient ([`BackupStoreError::is_permanent`], the one
//! classification): a permanent one (the manifest exists already or was changed by another
//! writer, …) ends the backup FAILED at once, and its FAILED status is kept in memory when the
//! store cannot take it; a transient one is retried with capped backoff until the final manifest
//! lands, however long the store is down, while the status answers FAILED from memory (a
//! COMPLETED manifest that cannot land within [`COMPLETED_MANIFEST_BUDGET`] turns FAILED).
//!
//! Backup ids: after a restore the store may hold backups of ids above the restored checkpoint
//! (of the history the restore left). [`BackupHandle::check_backup_id`] refuses such an id at
//! the trigger: every broker learns the highest backup id in the store over all partitions of
//! the cluster once (one listing per partition, at start-up or at the first trigger), so a new
//! backup never shares an id with one of another history.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use futures::{StreamExt, TryStreamExt};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, BackupStoreError, Chunking,
    FileEntry, FileKind, Manifest, ManifestEncryption, PartitionKeys, PoolIndex, PoolKeys,
    PoolUpload, PooledFile, PooledUpload, PrefixTrust, Throttle, LIST_CONCURRENCY,
};
use tokio::sync::{mpsc, OwnedMutexGuard, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::metrics::{BackupMetrics, InProgressGuard};
use crate::partition::ReservationGuard;
use crate::pool::{previous_key, PartitionPool, Pools, SnapshotBase};
use crate::protocol::{BackupDescription, BackupState, PartitionBackupStatus};
use crate::record::CheckpointKind;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub node_id: u32,
    pub uploads_concurrent_max: usize,
    /// 0 means unlimited.
    pub upload_rate_limit_bytes_per_second: u64,
    pub queue_capacity: usize,
    /// Fixed part of the deadline of every store call (a manifest write, a file upload): a
    /// backend that hangs ends the backup FAILED instead of leaving it IN_PROGRESS.
    pub store_call_timeout: Duration,
    /// Where the backups run: the broker's [`crate::background::runtime`], whose threads have a
    /// lower CPU priority than the partitions' (so a backup takes spare capacity); `None`: the
    /// caller's runtime (tests with paused time).
    pub runtime: Option<tokio::runtime::Handle>,
}

impl BackupOptions {
    /// Deadline of one file upload: the fixed part plus the time the file needs at a floor rate
    /// (a quarter of its share of the rate limit, or 256 KiB/s without one).
    pub fn upload_deadline(&self, len_bytes: u64) -> Duration {
        let concurrency = self.uploads_concurrent_max.max(1) as u64;
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
    /// The file's entry when the pool holds all of it already (the base's snapshot files, which
    /// may be gone from the disk): referenced, nothing is read or sent.
    pub pooled: Option<FileEntry>,
}

impl FileToUpload {
    fn already_pooled(entry: FileEntry) -> Self {
        Self {
            kind: entry.kind,
            name: entry.name.clone(),
            path: PathBuf::new(),
            len_bytes: entry.size_bytes,
            pooled: Some(entry),
        }
    }
}

pub struct BackupJob {
    pub id: BackupIdentifier,
    pub descriptor: BackupDescriptor,
    pub files: Vec<FileToUpload>,
    /// Released when the job ends, whatever way.
    pub reservation: ReservationGuard,
    /// Set when the backup cannot be taken (e.g. a snapshot file cannot be read): it ends FAILED
    /// with this reason, uploading nothing.
    pub failure: Option<BackupFailure>,
    /// Set when the partition chose to build on the snapshot of its previous backup (see
    /// [`SnapshotBase`]): `descriptor.snapshotId` names it and `files` holds the segments from
    /// it, plus the partition's own newest snapshot (`local_snapshot`) to fall back on when the
    /// pool no longer holds the base.
    pub base: Option<BaseChoice>,
}

/// The partition's choice of [`SnapshotBase`] for one backup, and its fallback.
#[derive(Debug, Clone)]
pub struct BaseChoice {
    pub base: SnapshotBase,
    /// The partition's newest snapshot: id and processed position.
    pub local_snapshot: (String, u64),
}

/// Why a partition backup failed. Kept as a value while the backup runs; its text becomes the
/// failure reason where the FAILED status is recorded (in memory and in the manifest).
#[derive(Debug, thiserror::Error)]
pub enum BackupFailure {
    #[error("cannot read snapshot file {path}: {source}; check the disk and the file permissions of the data directory, then take a new backup")]
    SnapshotUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the IN_PROGRESS manifest timed out after {timeout:?}; is the backup store reachable?")]
    ManifestTimeout { timeout: Duration },
    #[error("upload of {name} ({len_bytes} bytes) did not finish within {deadline:?}; is the backup store reachable?")]
    UploadTimeout {
        name: String,
        len_bytes: u64,
        deadline: Duration,
    },
    #[error("another backup of partition {partition_id} held its backup pool for {waited:?} (it is still finishing, or the store is down); take a new backup once it is done")]
    PoolBusy { partition_id: u32, waited: Duration },
    #[error("listing the backup pool timed out after {timeout:?}; is the backup store reachable?")]
    PoolListingTimeout { timeout: Duration },
    #[error(transparent)]
    Store(#[from] BackupStoreError),
}

/// What the uploads of a backup produced: its files (pooled) and what went to the pool new.
#[derive(Debug)]
struct Uploaded {
    files: Vec<FileEntry>,
    pool_upload: PoolUpload,
    /// The encryption block of the final manifest (`None`: a plain backup).
    encryption: Option<ManifestEncryption>,
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

/// What this broker knows of the backup ids in the store (see [`BackupHandle::check_backup_id`]).
#[derive(Debug, Default)]
struct StoredIds {
    /// The highest backup id in the store over every partition of the cluster, once learned.
    highest: Option<u64>,
    /// Ids of the backups this broker started (they are in the store too, and are this history's).
    started: BTreeSet<u64>,
}

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
    stored_ids: Arc<Mutex<StoredIds>>,
    /// The statuses of COMPLETED backups read from the store, by (partition, checkpoint): a
    /// COMPLETED manifest never changes its status, so a listing reads only the manifests of
    /// checkpoints it has not seen COMPLETED (markers every few seconds make thousands). Holds
    /// only ids the newest listing of their partition showed, and forgets a deleted one first.
    completed: Arc<Mutex<HashMap<(u32, u64), PartitionBackupStatus>>>,
    node_id: u32,
    /// What the service's backup tasks share (the store, the running and failed backups, the
    /// metrics, the pools), and with them the archiver's uploads (see
    /// [`BackupHandle::archive_segment`]): the same permits and rate limit.
    context: JobContext,
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
    rx: mpsc::Receiver<Queued>,
    context: JobContext,
}

/// The longest a backup waits for its partition's pool lock (held by the partition's previous
/// backup until its final manifest landed, or by a collection): longer than a COMPLETED manifest
/// may take to land, so only a store that is down for that long fails the next backup.
const POOL_LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

const SHUTDOWN_MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a COMPLETED manifest is retried before the backup counts as FAILED (whose manifest
/// is then retried until it lands): a backup does not stay IN_PROGRESS while the store is down.
pub const COMPLETED_MANIFEST_BUDGET: Duration = Duration::from_secs(15 * 60);
/// The first delay between attempts to write a final manifest (or to fail a restart's
/// leftovers, or to learn the store's backup ids); doubled after every failure up to
/// [`STORE_RETRY_DELAY_MAX`].
const STORE_RETRY_DELAY_MIN: Duration = Duration::from_millis(200);
/// The longest delay between two attempts: bounds the rate at which a store that is down is
/// asked, for as long as it is down.
pub const STORE_RETRY_DELAY_MAX: Duration = Duration::from_secs(30);
/// How every store call of the backup service is retried: for as long as the store is down.
pub const STORE_RETRY: RetryPolicy =
    RetryPolicy::exponential(STORE_RETRY_DELAY_MIN, STORE_RETRY_DELAY_MAX);
/// Manifests read at the same time when listing backups.
const LIST_MANIFEST_READS: usize = 16;

impl BackupService {
    /// The actor and its handle (the service shape, ARCHITECTURE.md); statuses are counted into
    /// `metrics`, which the API that serves them shares.
    pub fn new(
        options: BackupOptions,
        store: BackupStore,
        metrics: Arc<BackupMetrics>,
    ) -> (BackupService, BackupHandle) {
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let running: RunningMap = Arc::new(DashMap::new());
        let failed: RunningMap = Arc::new(DashMap::new());
        let pools = Pools::new(store.clone(), metrics.clone());
        let throttle = (options.upload_rate_limit_bytes_per_second > 0)
            .then(|| Throttle::new(options.upload_rate_limit_bytes_per_second));
        let context = JobContext {
            store: store.clone(),
            uploads: Arc::new(Semaphore::new(options.uploads_concurrent_max.max(1))),
            throttle,
            options: options.clone(),
            running,
            failed,
            metrics,
            pools,
        };
        let handle = BackupHandle {
            tx,
            stored_ids: Arc::default(),
            completed: Arc::default(),
            node_id: options.node_id,
            context: context.clone(),
        };
        (
            BackupService {
                options,
                rx,
                context,
            },
            handle,
        )
    }

    fn job_context(&self) -> JobContext {
        self.context.clone()
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                queued = self.rx.recv() => {
                    let Some(queued) = queued else { break };
                    let job = execute(self.job_context(), queued);
                    match &self.options.runtime {
                        Some(runtime) => tasks.spawn_on(job, runtime),
                        None => tasks.spawn(job),
                    };
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Shutdown: nothing new is accepted; queued and running backups end FAILED, explicitly.
        self.rx.close();
        let unfinished: Vec<Running> = self
            .context
            .running
            .iter()
            .map(|r| r.value().clone())
            .collect();
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
            let write = mark_failed(
                &self.context.store,
                &running.id,
                &running.descriptor,
                &reason,
            );
            match tokio::time::timeout(SHUTDOWN_MANIFEST_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not mark an interrupted backup FAILED; the next start will");
                }
                Err(_) => tracing::warn!(
                    "timed out marking an interrupted backup FAILED; the next start will"
                ),
            }
        }
        self.context.running.clear();
        tracing::info!("backup service stopped");
    }
}

/// What every backup task shares with the service.
#[derive(Clone)]
struct JobContext {
    store: BackupStore,
    /// One permit per file upload in flight, over all jobs.
    uploads: Arc<Semaphore>,
    throttle: Option<Throttle>,
    options: BackupOptions,
    /// The running backups.
    running: RunningMap,
    /// Backups that ended FAILED whose FAILED manifest the store does not hold and may never
    /// hold (a permanent store error: the manifest exists from another history, or another
    /// writer changed it), or does not hold yet (a restart's leftovers while the store is down):
    /// status answers FAILED from here, never what the store says.
    failed: RunningMap,
    metrics: Arc<BackupMetrics>,
    pools: Pools,
}

/// Runs one partition backup to COMPLETED or FAILED.
async fn execute(context: JobContext, queued: Queued) {
    let Queued {
        job:
            BackupJob {
                id,
                descriptor,
                files,
                reservation,
                failure,
                base,
            },
        running: _running,
        in_progress,
    } = queued;
    let manifest = Manifest::in_progress(id, descriptor);
    if let Some(mut entry) = context.running.get_mut(&running_key(&id)) {
        entry.created_at = Some(manifest.created_at.clone());
    }
    let mut ending = Ending {
        context: &context,
        manifest,
        started: std::time::Instant::now(),
        in_progress: Some(in_progress),
        pool: None,
    };
    let result = match failure {
        Some(failure) => Err(failure),
        None => match context.pools.lock(id.partition_id, POOL_LOCK_WAIT).await {
            Some(pool) => {
                let pool = ending.pool.insert(pool);
                let files = choose_base(&context, pool, &mut ending.manifest, base, files).await;
                upload(&context, pool, &ending.manifest, files).await
            }
            None => Err(BackupFailure::PoolBusy {
                partition_id: id.partition_id,
                waited: POOL_LOCK_WAIT,
            }),
        },
    };
    drop(reservation);
    let final_manifest = ending.final_manifest(result);
    ending.land(final_manifest).await;
}

fn running_key(id: &BackupIdentifier) -> (u32, u64) {
    (id.partition_id, id.checkpoint_id)
}

/// Settles the snapshot the backup holds before its IN_PROGRESS manifest is written: the base the
/// partition chose when the pool holds it whole (its entries join the files, already uploaded),
/// else the partition's own newest snapshot (the descriptor then names it, and the segments
/// before it are not needed).
async fn choose_base(
    context: &JobContext,
    pool: &mut PartitionPool,
    manifest: &mut Manifest,
    base: Option<BaseChoice>,
    mut files: Vec<FileToUpload>,
) -> Vec<FileToUpload> {
    let Some(BaseChoice {
        base,
        local_snapshot: (local_id, local_position),
    }) = base
    else {
        return files;
    };
    let partition_id = manifest.id.partition_id;
    let call_timeout = context.options.store_call_timeout;
    let index = tokio::time::timeout(call_timeout, pool.index(&context.store, partition_id)).await;
    let entries = match index {
        Ok(Ok(index)) => pool.snapshot_entries(&base.snapshot_id, &index),
        _ => None,
    };
    match entries {
        Some(entries) => {
            files.retain(|f| f.kind != FileKind::Snapshot);
            files.extend(entries.into_iter().map(FileToUpload::already_pooled));
        }
        None => {
            tracing::info!(partition = partition_id, base = %base.snapshot_id,
                "the pool no longer holds the previous backup's snapshot; this backup uploads the newest one");
            manifest.descriptor.snapshot_id = Some(local_id);
            retain_segments_from(&mut files, local_position + 1);
        }
    }
    if let Some(mut running) = context.running.get_mut(&running_key(&manifest.id)) {
        running.descriptor = manifest.descriptor.clone();
    }
    files
}

/// Drops the segments that hold only records below `from_position` (names are first positions).
fn retain_segments_from(files: &mut Vec<FileToUpload>, from_position: u64) {
    let firsts: Vec<u64> = files
        .iter()
        .filter(|f| f.kind == FileKind::Segment)
        .filter_map(|f| crate::log::parse_segment_file_name(&f.name))
        .collect();
    files.retain(|f| {
        let Some(first) =
            crate::log::parse_segment_file_name(&f.name).filter(|_| f.kind == FileKind::Segment)
        else {
            return true;
        };
        // The next segment's first position: this one ends right before it.
        match firsts.iter().find(|next| **next > first) {
            Some(next) => *next > from_position,
            None => true,
        }
    });
}

/// Writes the IN_PROGRESS `manifest`, then uploads `files` into the partition's pool (whose
/// lock the caller holds), at most `maxConcurrentUploads` at a time.
async fn upload(
    context: &JobContext,
    pool: &mut PartitionPool,
    manifest: &Manifest,
    files: Vec<FileToUpload>,
) -> Result<Uploaded, BackupFailure> {
    let call_timeout = context.options.store_call_timeout;
    tokio::time::timeout(call_timeout, context.store.write_manifest(manifest))
        .await
        .map_err(|_| BackupFailure::ManifestTimeout {
            timeout: call_timeout,
        })??;
    let partition_id = manifest.id.partition_id;
    let (index, keys) = open_pool(context, pool, partition_id).await?;
    let job = PoolJob {
        context,
        pool,
        index: &index,
        keys: keys.as_ref().map(|k| &k.keys),
        partition_id,
        snapshot_id: manifest.descriptor.snapshot_id.as_deref(),
    };
    let pooled: Vec<PooledFile> = futures::stream::iter(files)
        .map(|file| job.upload_file(file))
        .buffered(context.options.uploads_concurrent_max.max(1))
        .try_collect()
        .await?;
    let mut pool_upload = PoolUpload::default();
    for file in &pooled {
        pool_upload.objects += file.uploaded.objects;
        pool_upload.stored_bytes += file.uploaded.stored_bytes;
    }
    Ok(Uploaded {
        files: pooled.into_iter().map(|file| file.entry).collect(),
        pool_upload,
        encryption: keys.map(|k| k.encryption),
    })
}

/// The partition's pool ready for uploads: its index, the newest backup's entries (seeded after
/// a start) and the keys its objects are encrypted under.
async fn open_pool(
    context: &JobContext,
    pool: &mut PartitionPool,
    partition_id: u32,
) -> Result<(PoolIndex, Option<PartitionKeys>), BackupFailure> {
    let call_timeout = context.options.store_call_timeout;
    let listing_timeout = BackupFailure::PoolListingTimeout {
        timeout: call_timeout,
    };
    let index = tokio::time::timeout(call_timeout, pool.index(&context.store, partition_id))
        .await
        .map_err(|_| listing_timeout)??;
    if tokio::time::timeout(call_timeout, pool.seed(&context.store, partition_id))
        .await
        .is_err()
    {
        tracing::warn!(
            partition = partition_id,
            "reading the newest backup timed out; this backup cuts its files anew"
        );
    }
    // With a primary key configured a backup is encrypted or fails: never plain instead.
    let keys = tokio::time::timeout(call_timeout, pool.keys(&context.store, partition_id))
        .await
        .map_err(|_| BackupFailure::PoolListingTimeout {
            timeout: call_timeout,
        })??;
    Ok((index, keys))
}

/// What every file upload of one backup shares.
struct PoolJob<'a> {
    context: &'a JobContext,
    pool: &'a PartitionPool,
    index: &'a PoolIndex,
    keys: Option<&'a Arc<PoolKeys>>,
    partition_id: u32,
    snapshot_id: Option<&'a str>,
}

impl PoolJob<'_> {
    /// Uploads one file into the pool under an upload permit, within its deadline, building on
    /// the previous backup's entry of the same file.
    async fn upload_file(&self, file: FileToUpload) -> Result<PooledFile, BackupFailure> {
        let context = self.context;
        if let Some(entry) = file.pooled {
            return Ok(PooledFile {
                entry,
                uploaded: PoolUpload::default(),
            });
        }
        let deadline = context.options.upload_deadline(file.len_bytes);
        let _permit = context
            .uploads
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let previous = self
            .pool
            .previous(&previous_key(file.kind, self.snapshot_id, &file.name));
        let request = PooledUpload {
            partition_id: self.partition_id,
            kind: file.kind,
            name: &file.name,
            local_path: &file.path,
            length: file.len_bytes,
            chunking: match file.kind {
                FileKind::Snapshot => Chunking::ContentDefined,
                FileKind::Segment => Chunking::Fixed,
            },
            previous,
            keys: self.keys,
        };
        let upload = context
            .store
            .upload_pooled(request, self.index, context.throttle.as_ref());
        match tokio::time::timeout(deadline, upload).await {
            Ok(Ok(pooled)) => {
                context.metrics.file_uploaded(pooled.uploaded.stored_bytes);
                Ok(pooled)
            }
            Ok(Err(error)) => Err(BackupFailure::Store(error)),
            Err(_) => Err(BackupFailure::UploadTimeout {
                name: file.name,
                len_bytes: file.len_bytes,
                deadline,
            }),
        }
    }
}

/// A partition backup whose uploads ended: what it takes to make its final status land.
struct Ending<'a> {
    context: &'a JobContext,
    /// The IN_PROGRESS manifest the final one is made of.
    manifest: Manifest,
    started: std::time::Instant,
    /// Counted as in progress until the final status is known (or the task is aborted).
    in_progress: Option<InProgressGuard>,
    /// The partition's pool lock, held until the final manifest landed: until then a
    /// collection must not see this backup's objects as unreferenced.
    pool: Option<OwnedMutexGuard<PartitionPool>>,
}

impl Ending<'_> {
    /// The COMPLETED manifest of the uploaded files, or the FAILED one of the reason
    /// (then FAILED in memory at once).
    fn final_manifest(&mut self, result: Result<Uploaded, BackupFailure>) -> Manifest {
        let id = self.manifest.id;
        match result {
            Ok(Uploaded {
                files,
                pool_upload,
                encryption,
            }) => {
                let bytes: u64 = files.iter().map(|e| e.size_bytes).sum();
                tracing::info!(
                    partition = id.partition_id,
                    backup = id.checkpoint_id,
                    files = files.len(),
                    bytes,
                    uploaded_objects = pool_upload.objects,
                    uploaded_bytes = pool_upload.stored_bytes,
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "backup completed"
                );
                let manifest = self.manifest.clone();
                match encryption {
                    Some(encryption) => manifest.encrypted(encryption),
                    None => manifest,
                }
                .complete_with(files, Some(pool_upload))
            }
            Err(error) => {
                tracing::error!(partition = id.partition_id, backup = id.checkpoint_id, %error, "backup failed");
                let reason = format!("upload failed: {error}");
                self.fail_in_memory(&reason);
                self.manifest.clone().fail(reason)
            }
        }
    }

    /// Marks the backup FAILED in memory: counted, and answered FAILED from the next line on.
    fn fail_in_memory(&mut self, reason: &str) {
        self.context.metrics.backup_failed();
        self.in_progress.take();
        if let Some(mut entry) = self
            .context
            .running
            .get_mut(&running_key(&self.manifest.id))
        {
            entry.failure = Some(reason.to_string());
        }
    }

    /// Writes `final_manifest` until it lands. The final status is the commit point and must
    /// land, or the backup would look IN_PROGRESS in the store: transient errors are retried
    /// with capped backoff for as long as the store is down (until then this broker answers
    /// the status from memory); a permanent error ends the attempts at once, and the FAILED
    /// status stays in memory.
    async fn land(mut self, final_manifest: Manifest) {
        let id = self.manifest.id;
        let landed = self.land_until_done(final_manifest).await;
        // The pool lock goes with `self`: the next backup builds on this one's entries, and
        // whatever objects no manifest references (this one failed) are collected.
        match (self.pool.take(), landed) {
            (Some(mut pool), Some(completed)) => {
                let snapshot_id = completed.descriptor.snapshot_id.as_deref();
                pool.remember(&completed.files, snapshot_id, PrefixTrust::Trusted);
                self.context.pools.completed(&completed);
                self.context.metrics.pooled_backup_completed(
                    id.partition_id,
                    completed.referenced_bytes(),
                    completed.uploaded_bytes(),
                    pool.totals(),
                );
            }
            (Some(pool), None) => {
                drop(pool);
                self.context.pools.request_collection(id.partition_id);
            }
            (None, _) => {}
        }
    }

    /// Writes `final_manifest` until it lands (see [`Self::land`]); the manifest if it is the
    /// COMPLETED one that landed.
    async fn land_until_done(&mut self, mut final_manifest: Manifest) -> Option<Manifest> {
        let id = self.manifest.id;
        let call_timeout = self.context.options.store_call_timeout;
        let mut backoff = STORE_RETRY.start();
        loop {
            let attempt = backoff.failures() + 1;
            let completed = final_manifest.status == BackupStatus::Completed;
            let write = self.context.store.write_manifest(&final_manifest);
            match tokio::time::timeout(call_timeout, write).await {
                Ok(Ok(())) => {
                    if completed {
                        let metrics = &self.context.metrics;
                        metrics.backup_completed(id.checkpoint_id, self.started.elapsed());
                        return Some(final_manifest);
                    }
                    return None;
                }
                Ok(Err(error)) if error.is_permanent() => {
                    self.refused(&final_manifest, error).await;
                    return None;
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
            if completed && backoff.elapsed() >= COMPLETED_MANIFEST_BUDGET {
                final_manifest = self.out_of_budget();
            }
            backoff.wait().await;
        }
    }

    /// The store refused `final_manifest` for good: the backup stays FAILED in memory (unless
    /// an earlier attempt of the COMPLETED manifest landed after all).
    async fn refused(&mut self, final_manifest: &Manifest, error: BackupStoreError) {
        let id = self.manifest.id;
        let completed = final_manifest.status == BackupStatus::Completed;
        let call_timeout = self.context.options.store_call_timeout;
        if !completed && landed_completed(&self.context.store, &self.manifest, call_timeout).await {
            tracing::warn!(partition = id.partition_id, backup = id.checkpoint_id,
                "an earlier attempt of the COMPLETED manifest landed after all: the backup is COMPLETED");
            return;
        }
        let reason = match &final_manifest.failure_reason {
            Some(reason) => format!("{reason}; the store cannot record this status: {error}"),
            None => format!("the COMPLETED manifest cannot be written: {error}"),
        };
        tracing::error!(partition = id.partition_id, backup = id.checkpoint_id, %error,
            "the store refused the final manifest; the backup stays FAILED in memory");
        if completed {
            self.fail_in_memory(&reason);
        }
        self.context.failed.insert(
            running_key(&id),
            Running {
                id,
                descriptor: self.manifest.descriptor.clone(),
                failure: Some(reason),
                created_at: Some(self.manifest.created_at.clone()),
            },
        );
    }

    /// The COMPLETED manifest did not land within [`COMPLETED_MANIFEST_BUDGET`]: the backup
    /// turns FAILED, and its FAILED manifest is what is retried from now on.
    fn out_of_budget(&mut self) -> Manifest {
        let id = self.manifest.id;
        let reason = format!(
            "the COMPLETED manifest could not be written within {}; is the backup store reachable? take a new backup",
            humantime::format_duration(COMPLETED_MANIFEST_BUDGET)
        );
        tracing::error!(partition = id.partition_id, backup = id.checkpoint_id, %reason, "backup failed");
        self.fail_in_memory(&reason);
        self.manifest.clone().fail(reason)
    }
}

/// Whether the store holds `in_progress` as COMPLETED (an attempt whose answer was lost landed).
async fn landed_completed(store: &BackupStore, in_progress: &Manifest, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, store.read_manifest(&in_progress.id)).await {
        Ok(Ok(Some(stored))) => {
            stored.status == BackupStatus::Completed
                && stored.created_at == in_progress.created_at
                && stored.descriptor == in_progress.descriptor
        }
        _ => false,
    }
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
        status: wire_state(manifest.status),
        description: Some(BackupDescription {
            snapshot_id: manifest.descriptor.snapshot_id.clone(),
            checkpoint_position: manifest.descriptor.checkpoint_position,
            broker_id: manifest.id.node_id,
            broker_version: manifest.descriptor.broker_version.clone(),
            kind: manifest.descriptor.request.map(|r| r.kind),
            requested_at_ms: manifest.descriptor.request.map(|r| r.requested_at_ms),
        }),
        failure_reason: manifest.failure_reason.clone(),
        created_at: Some(manifest.created_at.clone()),
        last_updated_at: Some(manifest.last_updated_at.clone()),
    }
}

/// The wire state of a manifest status: the one conversion between the two. They are not one
/// enum because the wire adds `DOES_NOT_EXIST`, which no manifest can say; and it is no `From`
/// impl because neither crate may depend on the other (the gateway links the protocol but no
/// object store; the store knows no wire types), so it lives here, where both are seen.
pub fn wire_state(status: BackupStatus) -> BackupState {
    match status {
        BackupStatus::InProgress => BackupState::InProgress,
        BackupStatus::Completed => BackupState::Completed,
        BackupStatus::Failed => BackupState::Failed,
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
            kind: running.descriptor.request.map(|r| r.kind),
            requested_at_ms: running.descriptor.request.map(|r| r.requested_at_ms),
        }),
        failure_reason: running.failure.clone(),
        created_at: running.created_at.clone(),
        last_updated_at: running.created_at.clone(),
    }
}

impl BackupHandle {
    /// Uploads the sealed segment `file` into its partition's pool ahead of the checkpoint that
    /// will list it (continuous backups, `crate::archive`), under the partition's pool lock and
    /// the backups' upload permits and rate limit. The pool then holds its entry: the next
    /// backup references its pieces without reading the file, and collections keep them.
    pub async fn archive_segment(
        &self,
        partition_id: u32,
        file: FileToUpload,
    ) -> Result<PooledFile, BackupFailure> {
        let context = &self.context;
        let mut pool = self
            .context
            .pools
            .lock(partition_id, POOL_LOCK_WAIT)
            .await
            .ok_or(BackupFailure::PoolBusy {
                partition_id,
                waited: POOL_LOCK_WAIT,
            })?;
        let (index, keys) = open_pool(context, &mut pool, partition_id).await?;
        let job = PoolJob {
            context,
            pool: &pool,
            index: &index,
            keys: keys.as_ref().map(|k| &k.keys),
            partition_id,
            snapshot_id: None,
        };
        let pooled = job.upload_file(file).await?;
        pool.archived(pooled.entry.clone(), PrefixTrust::Trusted);
        Ok(pooled)
    }

    /// Gives the partition's pool the entries the archiver recorded before a start, to be
    /// checked against the local bytes when they are archived again, and drops the archived
    /// segments `keep` does not name.
    pub async fn archived_segments_are(
        &self,
        partition_id: u32,
        recorded: Vec<FileEntry>,
        keep: impl Fn(&str) -> bool,
    ) {
        let mut pool = self
            .context
            .pools
            .slot_pool(partition_id)
            .lock_owned()
            .await;
        for entry in recorded {
            pool.archived(entry, PrefixTrust::Check);
        }
        pool.retain_archived(keep);
    }

    pub fn store(&self) -> &BackupStore {
        &self.context.store
    }

    /// The metrics this service counts into.
    pub fn metrics(&self) -> &Arc<BackupMetrics> {
        &self.context.metrics
    }

    /// The pool locks and collections of this broker's partitions.
    pub fn pools(&self) -> &Pools {
        &self.context.pools
    }

    /// Hands a job to the service. Registers it as running first, so that a status query right
    /// after the checkpoint was acknowledged answers IN_PROGRESS, not DOES_NOT_EXIST.
    pub async fn start(&self, job: BackupJob) {
        let key = (job.id.partition_id, job.id.checkpoint_id);
        if let Some(busy) = self.marker_must_wait(&job) {
            // Markers come every few seconds: queueing them behind a slow store would hold a
            // reservation each (the log could not be compacted) and fill the queue until the
            // partition itself waited. One at a time per partition; the skipped one is no
            // restore point (no manifest: DOES_NOT_EXIST), the range shows the break.
            tracing::warn!(
                partition = key.0,
                marker = key.1,
                uploading = busy,
                "marker skipped: the partition's previous backup is still uploading (the store is slower than gateway.backup.checkpointInterval)"
            );
            self.context.metrics.marker_skipped();
            return;
        }
        self.stored_ids().started.insert(job.id.checkpoint_id);
        self.context.failed.remove(&key);
        self.context.running.insert(
            key,
            Running {
                id: job.id,
                descriptor: job.descriptor.clone(),
                failure: None,
                created_at: None,
            },
        );
        let guard = RunningGuard {
            running: self.context.running.clone(),
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
                in_progress: self.context.metrics.started(),
            })
            .await
            .is_err()
        {
            self.context.metrics.backup_failed();
            let reason = "the broker is shutting down; take a new backup";
            if let Err(error) = mark_failed(&self.context.store, &id, &descriptor, reason).await {
                tracing::warn!(%error, "could not mark a refused backup FAILED");
            }
        }
    }

    /// The checkpoint of `job`'s partition still uploading (or retrying its final manifest) when
    /// `job` is a marker: it must not start then.
    fn marker_must_wait(&self, job: &BackupJob) -> Option<u64> {
        let marker = job
            .descriptor
            .request
            .is_some_and(|request| request.kind == CheckpointKind::Marker);
        if !marker {
            return None;
        }
        self.context
            .running
            .iter()
            .map(|entry| *entry.key())
            .find(|(partition, _)| *partition == job.id.partition_id)
            .map(|(_, checkpoint)| checkpoint)
    }

    pub async fn status(&self, partition_id: u32, backup_id: u64) -> Result<PartitionBackupStatus> {
        // A backup this broker is running is answered from memory, never from the store: the
        // store may be the thing that hangs, and the status must still say what is going on.
        if let Some(running) = self.context.running.get(&(partition_id, backup_id)) {
            return Ok(status_of_running(&running));
        }
        if let Some(failed) = self.context.failed.get(&(partition_id, backup_id)) {
            return Ok(status_of_running(&failed));
        }
        let manifests = self
            .context
            .store
            .find_manifests(partition_id, backup_id)
            .await?;
        // This broker hosts the partitions it answers for.
        Ok(match Manifest::choose(&manifests, self.node_id) {
            Some(manifest) => status_from_manifest(manifest),
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
        let listed = self.context.store.list_checkpoints(partition_id).await?;
        let ids: Vec<u64> = listed
            .iter()
            .copied()
            .filter(|id| id_prefix.is_none_or(|prefix| id.to_string().starts_with(prefix)))
            .collect();
        let mut statuses: std::collections::BTreeMap<u64, PartitionBackupStatus> =
            std::collections::BTreeMap::new();
        let mut unread = Vec::new();
        {
            let mut completed = self.completed_statuses();
            let listed: HashSet<u64> = listed.into_iter().collect();
            completed
                .retain(|(partition, id), _| *partition != partition_id || listed.contains(id));
            for id in ids {
                match completed.get(&(partition_id, id)) {
                    Some(status) => {
                        statuses.insert(id, status.clone());
                    }
                    None => unread.push(id),
                }
            }
        }
        let manifests: Vec<Vec<Manifest>> = futures::stream::iter(unread)
            .map(|id| self.context.store.find_manifests(partition_id, id))
            .buffer_unordered(LIST_MANIFEST_READS)
            .try_collect()
            .await?;
        for manifest in manifests
            .iter()
            .filter_map(|manifests| Manifest::choose(manifests, self.node_id))
        {
            let status = status_from_manifest(manifest);
            if manifest.status == BackupStatus::Completed {
                self.completed_statuses()
                    .insert((partition_id, manifest.id.checkpoint_id), status.clone());
            }
            statuses.insert(manifest.id.checkpoint_id, status);
        }
        // What memory knows wins over the store: FAILED in memory, then running.
        for running in self
            .context
            .failed
            .iter()
            .chain(self.context.running.iter())
            .filter(|r| {
                r.key().0 == partition_id
                    && id_prefix.is_none_or(|prefix| r.key().1.to_string().starts_with(prefix))
            })
        {
            statuses.insert(running.key().1, status_of_running(running.value()));
        }
        Ok(statuses.into_values().collect())
    }

    /// Deletes every object of the partition's backup `backup_id`, of every node (also a
    /// folder whose manifest is gone). Refuses while it runs. Resumable and idempotent: see
    /// [`BackupStore::delete_backup`].
    pub async fn delete(&self, partition_id: u32, backup_id: u64) -> Result<usize> {
        let key = (partition_id, backup_id);
        if self.context.running.contains_key(&key) {
            return Err(BrokerError::BackupInProgress { backup_id });
        }
        let manifests = self
            .context
            .store
            .find_manifests(partition_id, backup_id)
            .await?;
        // A restart's leftover that memory already answers FAILED may be deleted.
        if !self.context.failed.contains_key(&key)
            && manifests
                .iter()
                .any(|m| m.status == BackupStatus::InProgress)
        {
            return Err(BrokerError::BackupInProgress { backup_id });
        }
        // Forgotten before the delete begins: it turns the manifest FAILED first.
        self.completed_statuses().remove(&key);
        let deleted = self
            .context
            .store
            .delete_checkpoint(partition_id, backup_id)
            .await?;
        self.context.failed.remove(&key);
        // The pool objects only this backup referenced are freed by a collection of their own.
        self.context.pools.request_collection(partition_id);
        Ok(deleted)
    }

    fn completed_statuses(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(u32, u64), PartitionBackupStatus>> {
        self.completed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stored_ids(&self) -> std::sync::MutexGuard<'_, StoredIds> {
        self.stored_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Learns the highest backup id in the store over every partition of the cluster (one
    /// listing per partition, [`LIST_CONCURRENCY`] at a time) and returns it (0: none).
    pub async fn learn_stored_backup_ids(&self, partitions_count: u32) -> Result<u64> {
        let highest: Vec<u64> = futures::stream::iter(1..=partitions_count)
            .map(|partition_id| async move {
                let ids = self.context.store.list_checkpoints(partition_id).await?;
                Ok::<_, BrokerError>(ids.last().copied().unwrap_or(0))
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let highest = highest.into_iter().max().unwrap_or(0);
        let mut known = self.stored_ids();
        let highest = known.highest.map_or(highest, |h| h.max(highest));
        known.highest = Some(highest);
        Ok(highest)
    }

    /// [`Self::learn_stored_backup_ids`] at start-up, retried with capped backoff until the
    /// store answers (a trigger before that learns on its own).
    pub async fn learn_stored_backup_ids_until_done(&self, partitions_count: u32) {
        let mut backoff = STORE_RETRY.start();
        loop {
            match self.learn_stored_backup_ids(partitions_count).await {
                Ok(highest) => {
                    tracing::info!(highest, "learned the highest backup id in the store");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not list the backups in the store; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Refuses a new backup id that is not greater than every backup id in the store (of any
    /// partition of the cluster): after a restore of an older backup, the store still holds
    /// backups of the history the restore left, and a new backup of such an id would mix two
    /// histories. Ids of backups this broker started count as its own (a checkpoint propagated
    /// before the trigger). The store is listed once (see [`Self::learn_stored_backup_ids`]);
    /// the partition's own latest checkpoint is checked by the partition.
    pub async fn check_backup_id(&self, backup_id: u64, partitions_count: u32) -> Result<()> {
        let known = self.stored_ids().highest;
        let highest = match known {
            Some(highest) => highest,
            None => self.learn_stored_backup_ids(partitions_count).await?,
        };
        if backup_id <= highest && !self.stored_ids().started.contains(&backup_id) {
            return Err(BrokerError::BackupIdTaken {
                backup_id,
                stored_backup_id: highest,
            });
        }
        Ok(())
    }

    /// After a start: marks FAILED every backup this node left IN_PROGRESS for `partition_id`
    /// (all of them, up to `latest_checkpoint`), and records a FAILED manifest for the latest
    /// checkpoint when its upload never started. Retries with capped backoff until the store
    /// answers (however long it is down); once a leftover is known, status answers it FAILED
    /// from memory until its FAILED manifest lands. A permanent error on one manifest (another
    /// writer changed it) leaves that one to the store.
    pub async fn fail_unfinished(
        &self,
        partition_id: u32,
        latest_checkpoint: Option<(u64, u64)>,
        partitions_count: u32,
    ) {
        let mut backoff = STORE_RETRY.start();
        loop {
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
                    // What an interrupted upload left in the pool is referenced by no manifest.
                    self.context.pools.request_collection(partition_id);
                    return;
                }
                Err(error) => {
                    tracing::warn!(partition = partition_id, attempt = backoff.failures() + 1, %error,
                        "could not check for interrupted backups; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Writes `manifest` (FAILED) for a restart's leftover, answered FAILED from memory until it
    /// lands. `Ok(false)`: the store refused it for good (another writer's).
    async fn fail_leftover(&self, manifest: Manifest) -> Result<bool> {
        let key = (manifest.id.partition_id, manifest.id.checkpoint_id);
        if self.context.running.contains_key(&key) {
            // This run took the id meanwhile: its own task writes the status.
            return Ok(false);
        }
        self.context.failed.insert(
            key,
            Running {
                id: manifest.id,
                descriptor: manifest.descriptor.clone(),
                failure: manifest.failure_reason.clone(),
                created_at: Some(manifest.created_at.clone()),
            },
        );
        match self.context.store.write_manifest(&manifest).await {
            Ok(()) => {
                self.context.failed.remove(&key);
                Ok(true)
            }
            Err(error) if error.is_permanent() => {
                tracing::warn!(%error, "a backup left unfinished was changed by another writer; leaving it as the store has it");
                self.context.failed.remove(&key);
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
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
        let manifests = self.context.store.list_manifests(partition_id).await?;
        for manifest in &manifests {
            // Only backups started before this run: newer ids belong to this run.
            if manifest.id.node_id == self.node_id
                && manifest.status == BackupStatus::InProgress
                && manifest.id.checkpoint_id <= latest_id
                && self
                    .fail_leftover(manifest.clone().fail(reason.clone()))
                    .await?
            {
                failed += 1;
            }
        }
        let latest: Vec<&Manifest> = manifests
            .iter()
            .filter(|m| m.id.checkpoint_id == latest_id)
            .collect();
        if latest.is_empty() {
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
                request: None,
            };
            let reason = format!(
                "broker node {} stopped before the upload of this backup started; take a new backup",
                self.node_id
            );
            if self
                .fail_leftover(Manifest::in_progress(id, descriptor).fail(reason))
                .await?
            {
                failed += 1;
            }
        }
        // This node's manifest of its latest checkpoint at another position is another
        // history's backup of the same id (its own create was refused): never answered as this
        // partition's backup.
        for foreign in latest.iter().filter(|m| {
            m.id.node_id == self.node_id && m.descriptor.checkpoint_position != latest_position
        }) {
            let key = (partition_id, latest_id);
            if !self.context.running.contains_key(&key) {
                self.context.failed.insert(
                    key,
                    Running {
                        id: foreign.id,
                        descriptor: foreign.descriptor.clone(),
                        failure: Some(format!(
                            "the store holds backup {latest_id} of another history (checkpoint position {}, this partition's is {latest_position}), e.g. from before a restore; this partition's backup {latest_id} was not taken; take a backup with an id greater than every id in the store",
                            foreign.descriptor.checkpoint_position
                        )),
                        created_at: Some(foreign.created_at.clone()),
                    },
                );
            }
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod wire_state_tests {
    use super::*;

    /// A manifest status and its wire state mean the same, so they are spelled the same
    /// (`IN_PROGRESS`, `COMPLETED`, `FAILED`); the CLI and operators read both.
    #[test]
    fn each_manifest_status_becomes_the_wire_state_of_the_same_spelling() {
        for status in [
            BackupStatus::InProgress,
            BackupStatus::Completed,
            BackupStatus::Failed,
        ] {
            let manifest = serde_json::to_value(status).expect("serializes");
            let wire = serde_json::to_value(wire_state(status)).expect("serializes");
            assert_eq!(manifest, wire, "{status}");
            assert_eq!(manifest, status.to_string(), "{status}");
        }
    }
}
