//! The broker's side of the backup pools: the broker that owns a partition is the one writer of
//! that partition's pool (`sluice_backup_store::pool`), and [`Pools`] is how it stays one.
//!
//! Every partition has one [`PartitionPool`] behind an async mutex, the partition's pool lock.
//! A backup of the partition holds it from before its first upload until its COMPLETED manifest
//! landed (or it failed), and a collection holds it while it runs; so a collection never sees an
//! object that an unfinished upload will reference, and two backups of one partition never race
//! on what the pool holds. What the lock guards:
//! - the pool's index (what objects exist, loaded by one listing the first time it is needed);
//! - the entries of the newest backup of the partition, so that the next backup keeps their
//!   pieces: a sealed segment is referenced without being read, the active segment keeps the
//!   pieces of the bytes an earlier backup sent, an unchanged snapshot costs nothing. Entries
//!   this process made are trusted; entries read from a manifest after a start are reused only
//!   where the local bytes hash to them (the log may have been restored since).
//!
//! - the entries of the sealed segments the archiver uploaded (continuous backups, see
//!   `crate::archive`): no manifest lists them until the next checkpoint's does, so a
//!   collection keeps their pieces ([`PartitionPool::held_objects`]), and the next backup
//!   references them as it references the previous backup's.
//!
//! Collections run in tasks of their own, asked for by whatever may have left objects that no
//! manifest references: a delete (the manifest went), a failed backup (its objects were never
//! listed), a start (a crash mid-upload). At most one is pending per partition; each is bounded
//! by [`COLLECTION_TIMEOUT`]. While the archiver of a partition has not yet taken back what it
//! archived before a restart, the partition's collections are held ([`Pools::hold_collections`]):
//! a collection then would free the pieces it is about to reference again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sluice_backup_store::{
    BackupStatus, BackupStore, BackupStoreError, FileEntry, FileKind, Manifest, ObjectId,
    PartitionKeys, PoolIndex, PoolTotals, PrefixTrust,
};

use crate::metrics::BackupMetrics;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The longest a collection of one pool may take (listings, manifest reads, deletes).
pub const COLLECTION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How many of the newest checkpoints of a partition are read, after a start, to find the
/// backup whose entries the next one builds on.
const SEED_CHECKPOINTS_MAX: usize = 8;

/// What one partition's pool lock guards (see the module doc).
#[derive(Debug, Default)]
pub struct PartitionPool {
    index: Option<PoolIndex>,
    /// The newest backup's entries by (kind, key): a segment's key is its name, a snapshot
    /// file's is `<snapshot id>/<name>` (snapshots of different ids share file names).
    previous: HashMap<(FileKind, String), (FileEntry, PrefixTrust)>,
    /// Whether `previous` was seeded from the store after this process started.
    seeded: bool,
    /// The keyset this process encrypts the partition's backups under (`Some(None)`: plain),
    /// chosen once: the one of the newest encrypted backup the configured keys open, so
    /// objects keep their names across restarts and key rotations.
    keys: Option<Option<PartitionKeys>>,
    /// The sealed segments the archiver uploaded, by name (bounded: the segments on disk);
    /// `Check` for those taken back from the archiver's records after a start, until uploaded
    /// (checked) again.
    archived: HashMap<String, (FileEntry, PrefixTrust)>,
}

/// The key of a file in [`PartitionPool::previous`].
pub fn previous_key(kind: FileKind, snapshot_id: Option<&str>, name: &str) -> (FileKind, String) {
    match (kind, snapshot_id) {
        (FileKind::Snapshot, Some(snapshot_id)) => (kind, format!("{snapshot_id}/{name}")),
        _ => (kind, name.to_string()),
    }
}

impl PartitionPool {
    /// The pool's index, loaded by one listing the first time.
    pub async fn index(
        &mut self,
        store: &BackupStore,
        partition_id: u32,
    ) -> Result<PoolIndex, BackupStoreError> {
        if self.index.is_none() {
            self.index = Some(store.load_pool_index(partition_id).await?);
        }
        Ok(self.index.clone().expect("loaded above"))
    }

    /// The entries of every file of snapshot `snapshot_id` that the newest backup holds, when
    /// this process made them and the pool still holds every piece; `None` otherwise (the
    /// backup then uploads the partition's own newest snapshot).
    pub fn snapshot_entries(&self, snapshot_id: &str, index: &PoolIndex) -> Option<Vec<FileEntry>> {
        let prefix = format!("{snapshot_id}/");
        let entries: Vec<FileEntry> = self
            .previous
            .iter()
            .filter(|((kind, key), (_, trust))| {
                *kind == FileKind::Snapshot
                    && key.starts_with(&prefix)
                    && *trust == PrefixTrust::Trusted
            })
            .map(|(_, (entry, _))| entry.clone())
            .collect();
        let whole = !entries.is_empty()
            && entries
                .iter()
                .flat_map(|e| e.pieces.iter().flatten())
                .all(|p| index.stored_bytes(&p.object) == Some(p.stored_bytes));
        whole.then_some(entries)
    }

    /// The keys the partition's backups are encrypted under (`None`: plain), chosen the first
    /// time from the newest manifests of the partition.
    pub async fn keys(
        &mut self,
        store: &BackupStore,
        partition_id: u32,
    ) -> Result<Option<PartitionKeys>, BackupStoreError> {
        if store.primary_key_id().is_none() {
            return Ok(None);
        }
        if self.keys.is_none() {
            let manifests = newest_manifests(store, partition_id).await?;
            self.keys = Some(store.partition_keys(&manifests).await?);
        }
        Ok(self.keys.clone().expect("chosen above"))
    }

    /// The size of the pool as its index knows it (empty before it is loaded).
    pub fn totals(&self) -> PoolTotals {
        self.index
            .as_ref()
            .map(PoolIndex::totals)
            .unwrap_or_default()
    }

    /// The newest entry of a file whose pieces an upload of it builds on: the newest backup's,
    /// or for a segment the archiver's when that one is longer.
    pub fn previous(&self, key: &(FileKind, String)) -> Option<(&FileEntry, PrefixTrust)> {
        let previous = self.previous.get(key).map(|(entry, trust)| (entry, *trust));
        let archived = match key.0 {
            FileKind::Segment => self
                .archived
                .get(&key.1)
                .map(|(entry, trust)| (entry, *trust)),
            FileKind::Snapshot => None,
        };
        match (previous, archived) {
            (Some(previous), Some(archived)) if archived.0.size_bytes > previous.0.size_bytes => {
                Some(archived)
            }
            (previous, archived) => previous.or(archived),
        }
    }

    /// Records a segment the archiver uploaded (or `Check`: one it recorded before a start).
    pub fn archived(&mut self, entry: FileEntry, trust: PrefixTrust) {
        self.archived.insert(entry.name.clone(), (entry, trust));
    }

    /// Forgets the archived segments that `keep` does not name (they left the disk).
    pub fn retain_archived(&mut self, keep: impl Fn(&str) -> bool) {
        self.archived.retain(|name, _| keep(name));
    }

    /// The pieces of the archived segments: no manifest may list them yet, a collection keeps
    /// them.
    pub fn held_objects(&self) -> HashSet<ObjectId> {
        self.archived
            .values()
            .flat_map(|(entry, _)| entry.pieces.iter().flatten())
            .map(|piece| piece.object)
            .collect()
    }

    /// After a start: the entries of the newest COMPLETED pooled backup of the partition in the
    /// store (of any node), to be checked against the local bytes before reuse. Once per process;
    /// a store that cannot be read leaves nothing to build on (the backup then cuts anew).
    pub async fn seed(&mut self, store: &BackupStore, partition_id: u32) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        match newest_completed(store, partition_id).await {
            Ok(Some(manifest)) => {
                let snapshot_id = manifest.descriptor.snapshot_id.clone();
                self.remember(&manifest.files, snapshot_id.as_deref(), PrefixTrust::Check);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(partition = partition_id, %error,
                "could not read the newest backup of the partition; this backup cuts its files anew"),
        }
    }

    /// Remembers `files` (of a backup of `snapshot_id`) as the newest backup's entries,
    /// replacing the older ones (bounded: one backup's files).
    pub fn remember(&mut self, files: &[FileEntry], snapshot_id: Option<&str>, trust: PrefixTrust) {
        self.seeded = true;
        self.previous = files
            .iter()
            .filter(|entry| entry.is_pooled())
            .map(|entry| {
                (
                    previous_key(entry.kind, snapshot_id, &entry.name),
                    (entry.clone(), trust),
                )
            })
            .collect();
    }
}

/// The manifests of the newest [`SEED_CHECKPOINTS_MAX`] checkpoints of a partition.
async fn newest_manifests(
    store: &BackupStore,
    partition_id: u32,
) -> Result<Vec<Manifest>, BackupStoreError> {
    let checkpoints = store.list_checkpoints(partition_id).await?;
    let mut manifests = Vec::new();
    for checkpoint_id in checkpoints.iter().rev().take(SEED_CHECKPOINTS_MAX) {
        manifests.extend(store.find_manifests(partition_id, *checkpoint_id).await?);
    }
    Ok(manifests)
}

async fn newest_completed(
    store: &BackupStore,
    partition_id: u32,
) -> Result<Option<Manifest>, BackupStoreError> {
    let checkpoints = store.list_checkpoints(partition_id).await?;
    for checkpoint_id in checkpoints.iter().rev().take(SEED_CHECKPOINTS_MAX) {
        let manifests = store.find_manifests(partition_id, *checkpoint_id).await?;
        if let Some(manifest) = manifests.into_iter().find(|m| {
            m.status == BackupStatus::Completed && m.files.iter().any(FileEntry::is_pooled)
        }) {
            return Ok(Some(manifest));
        }
    }
    Ok(None)
}

/// The snapshot of the newest backup this process completed of a partition: the pool holds it,
/// so the next backup may reference it instead of uploading a newer snapshot, and carry the log
/// since it instead (the log is the snapshot's delta: it holds exactly the changes, so 1% of
/// the accounts changed costs about 1% of new bytes, wherever they are). The partition decides
/// (`PartitionService`'s base rule bounds the extra log a restore replays and the broker keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBase {
    pub snapshot_id: String,
    /// The snapshot's processed position.
    pub position: u64,
    /// The size of its files.
    pub size_bytes: u64,
}

impl SnapshotBase {
    /// The base a COMPLETED backup leaves: its snapshot, if it has one.
    fn of(manifest: &Manifest) -> Option<Self> {
        let snapshot_id = manifest.descriptor.snapshot_id.clone()?;
        let position = snapshot_id.parse().ok()?;
        let files = manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Snapshot);
        Some(Self {
            snapshot_id,
            position,
            size_bytes: files.map(|f| f.size_bytes).sum(),
        })
    }
}

/// One partition's lock, whether a collection of it is pending, and its snapshot base.
#[derive(Debug, Default)]
struct PoolSlot {
    pool: Arc<Mutex<PartitionPool>>,
    collection_pending: AtomicBool,
    base: std::sync::Mutex<Option<SnapshotBase>>,
    held: std::sync::Mutex<Held>,
}

impl PoolSlot {
    /// Whether the partition's collections are held (see [`Pools::hold_collections`]).
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the partition's collections are held, and whether one was asked for meanwhile.
#[derive(Debug, Default)]
struct Held {
    held: bool,
    wanted: bool,
}

/// The pool locks of every partition of this broker, and the collections it asks for.
#[derive(Debug, Clone)]
pub struct Pools {
    store: BackupStore,
    slots: Arc<DashMap<u32, Arc<PoolSlot>>>,
    metrics: Arc<BackupMetrics>,
}

impl Pools {
    /// The pools of `store`; collections are counted into `metrics`.
    pub fn new(store: BackupStore, metrics: Arc<BackupMetrics>) -> Self {
        Self {
            store,
            slots: Arc::default(),
            metrics,
        }
    }

    fn slot(&self, partition_id: u32) -> Arc<PoolSlot> {
        self.slots.entry(partition_id).or_default().clone()
    }

    /// The partition's snapshot base (see [`SnapshotBase`]), if a backup of this process left one.
    pub fn base(&self, partition_id: u32) -> Option<SnapshotBase> {
        let slot = self.slot(partition_id);
        let base = slot
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        base.clone()
    }

    /// Records what a COMPLETED backup of this process leaves as the partition's base.
    pub fn completed(&self, manifest: &Manifest) {
        let slot = self.slot(manifest.id.partition_id);
        *slot
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = SnapshotBase::of(manifest);
    }

    /// The partition's pool lock, to wait for as long as it takes.
    pub fn slot_pool(&self, partition_id: u32) -> Arc<Mutex<PartitionPool>> {
        self.slot(partition_id).pool.clone()
    }

    /// The partition's pool lock, waiting at most `timeout` for it (`None`: still held then).
    pub async fn lock(
        &self,
        partition_id: u32,
        timeout: Duration,
    ) -> Option<OwnedMutexGuard<PartitionPool>> {
        let pool = self.slot(partition_id).pool.clone();
        tokio::time::timeout(timeout, pool.lock_owned()).await.ok()
    }

    /// Holds the partition's collections until [`Self::release_collections`]: requests made
    /// meanwhile run then, as one.
    pub fn hold_collections(&self, partition_id: u32) {
        let slot = self.slot(partition_id);
        let mut held = slot.held();
        held.held = true;
    }

    /// Ends [`Self::hold_collections`], running a collection if one was asked for meanwhile.
    pub fn release_collections(&self, partition_id: u32) {
        let slot = self.slot(partition_id);
        let wanted = {
            let mut held = slot.held();
            held.held = false;
            std::mem::take(&mut held.wanted)
        };
        if wanted {
            self.request_collection(partition_id);
        }
    }

    /// Asks for a collection of the partition's pool: it runs in a task of its own once the
    /// pool lock is free, unless one is pending already (which then covers this request too),
    /// or once the collections are no longer held.
    pub fn request_collection(&self, partition_id: u32) {
        let slot = self.slot(partition_id);
        {
            let mut held = slot.held();
            if held.held {
                held.wanted = true;
                return;
            }
        }
        if slot.collection_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut pool = slot.pool.clone().lock_owned().await;
            // From here a new request must run again: this run may miss what it frees.
            slot.collection_pending.store(false, Ordering::Release);
            let collect = async {
                let index = pool.index(&store, partition_id).await?;
                let held = pool.held_objects();
                store.collect_pool(partition_id, &index, &held).await
            };
            match tokio::time::timeout(COLLECTION_TIMEOUT, collect).await {
                Ok(Ok(collection)) => metrics.pool_collected(partition_id, &collection),
                Ok(Err(error)) => tracing::warn!(partition = partition_id, %error,
                    "the backup pool was not collected; the next delete or restart tries again"),
                Err(_) => {
                    tracing::warn!(partition = partition_id,
                    "collecting the backup pool timed out; the next delete or restart tries again");
                }
            }
        });
    }

    /// Waits until no collection of the partition is pending or running (tests, shutdown).
    pub async fn collections_settled(&self, partition_id: u32) {
        let slot = self.slot(partition_id);
        loop {
            let _pool = slot.pool.lock().await;
            if !slot.collection_pending.load(Ordering::Acquire) {
                return;
            }
            drop(_pool);
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_backup_store::object_store::memory::InMemory;
    use sluice_backup_store::object_store::{ObjectStore, PutPayload};

    /// An object no manifest references, in partition 1's pool.
    async fn stray_object(store: &BackupStore) -> sluice_backup_store::object_store::path::Path {
        let path = store.pool_object_path(1, &ObjectId::of(b"stray"));
        let put = store
            .object_store()
            .put(&path, PutPayload::from_static(b"0123456789abcdefstray"));
        put.await.expect("put");
        path
    }

    /// A collection asked for while the collections are held runs only once they are released:
    /// the archiver's first pass after a start holds them (see `crate::archive`).
    #[tokio::test]
    async fn a_held_collection_runs_when_released() {
        let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
        let pools = Pools::new(store.clone(), BackupMetrics::new());
        let path = stray_object(&store).await;
        pools.hold_collections(1);
        pools.request_collection(1);
        pools.collections_settled(1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            store.object_store().head(&path).await.is_ok(),
            "collected while held"
        );
        pools.release_collections(1);
        pools.collections_settled(1).await;
        assert!(
            store.object_store().head(&path).await.is_err(),
            "not collected once released"
        );
    }
}
