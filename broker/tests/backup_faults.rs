//! The backup service against a store that fails: transient outages of 20 minutes (paused time)
//! are outlasted, with the status FAILED from memory until the final manifest lands; permanent
//! errors (a manifest of another history) end a backup FAILED at once and for good; a backup id
//! the store holds is refused at the trigger; an unreadable snapshot file fails the backup.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::StreamExt;
use sluice_backup_store::conformance::{delete_each, Intercept, Intercepted, StoreFuture};
use sluice_backup_store::object_store::memory::InMemory;
use sluice_backup_store::object_store::path::Path;
use sluice_backup_store::object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result as StoreResult,
};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, FileKind, Manifest,
    MANIFEST_FILE_NAME,
};
use sluice_broker::api::{self, ApiState};
use sluice_broker::backup::{
    BackupHandle, BackupJob, BackupOptions, BackupService, FileToUpload, COMPLETED_MANIFEST_BUDGET,
    STORE_RETRY_DELAY_MAX,
};
use sluice_broker::client::{BrokerClient, ClientError};
use sluice_broker::metrics::BackupMetrics;
use sluice_broker::partition::{PartitionOptions, PartitionService, ReservationGuard};
use sluice_broker::protocol::{BackupState, ErrorKind, Topology};
use sluice_broker::record::{Command, Outcome};
use sluice_broker::BrokerError;
use tokio_util::sync::CancellationToken;

/// Which calls an outage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every call: reads, listings, writes, deletes.
    Everything,
    /// Every write but the creation of an object (`PutMode::Create`): the IN_PROGRESS manifest
    /// lands, data uploads and manifest updates fail.
    WritesButCreates,
    /// Conditional updates (`PutMode::Update`) only: the final manifest of a backup.
    Updates,
}

/// An in-memory store with an outage: the calls of `scope` fail until `until` (tokio time);
/// while `hold_manifests` is set manifest writes wait.
#[derive(Debug)]
struct Outage {
    inner: Arc<dyn ObjectStore>,
    outage: Mutex<Option<(tokio::time::Instant, Scope)>>,
    hold_manifests: AtomicBool,
    manifest_puts: AtomicUsize,
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Outage({})", self.inner)
    }
}

impl Outage {
    fn start(&self, duration: Duration, scope: Scope) {
        *self.outage.lock().unwrap() = Some((tokio::time::Instant::now() + duration, scope));
    }

    /// Fails when an outage of one of `scopes` is on.
    fn check(&self, scopes: &[Scope]) -> StoreResult<()> {
        match *self.outage.lock().unwrap() {
            Some((until, scope))
                if tokio::time::Instant::now() < until && scopes.contains(&scope) =>
            {
                Err(sluice_backup_store::object_store::Error::Generic {
                    store: "outage",
                    source: "injected outage".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Intercept for Outage {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn put_opts<'a>(
        &'a self,
        location: &'a Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'a, PutResult> {
        Box::pin(async move {
            if location.filename() == Some(MANIFEST_FILE_NAME) {
                self.manifest_puts.fetch_add(1, Ordering::SeqCst);
                while self.hold_manifests.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            match opts.mode {
                PutMode::Create => self.check(&[Scope::Everything])?,
                PutMode::Update(_) => {
                    self.check(&[Scope::Everything, Scope::WritesButCreates, Scope::Updates])?;
                }
                PutMode::Overwrite => self.check(&[Scope::Everything, Scope::WritesButCreates])?,
            }
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        Box::pin(async move {
            self.check(&[Scope::Everything, Scope::WritesButCreates])?;
            self.inner.put_multipart_opts(location, opts).await
        })
    }

    fn get_opts<'a>(
        &'a self,
        location: &'a Path,
        options: GetOptions,
    ) -> StoreFuture<'a, GetResult> {
        Box::pin(async move {
            self.check(&[Scope::Everything])?;
            self.inner.get_opts(location, options).await
        })
    }

    fn delete<'a>(&'a self, location: &'a Path) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check(&[Scope::Everything, Scope::WritesButCreates])?;
            self.inner.delete(location).await
        })
    }

    // Bulk deletes must meet the outage too: one delete at a time, through `delete` above.
    fn delete_stream<'a>(
        &'a self,
        locations: futures::stream::BoxStream<'a, StoreResult<Path>>,
    ) -> futures::stream::BoxStream<'a, StoreResult<Path>> {
        delete_each(self, locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, StoreResult<ObjectMeta>> {
        match self.check(&[Scope::Everything]) {
            Ok(()) => self.inner.list(prefix),
            Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
        }
    }

    fn list_with_delimiter<'a>(&'a self, prefix: Option<&'a Path>) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            self.check(&[Scope::Everything])?;
            self.inner.list_with_delimiter(prefix).await
        })
    }
}

struct Fixture {
    outage: Arc<Intercepted<Outage>>,
    /// The same objects without the outage, and with versions of its own (another writer).
    raw: BackupStore,
    backups: BackupHandle,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
}

fn start() -> Fixture {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let outage = Arc::new(Intercepted(Outage {
        inner: inner.clone(),
        outage: Mutex::new(None),
        hold_manifests: AtomicBool::new(false),
        manifest_puts: AtomicUsize::new(0),
    }));
    let store = BackupStore::from_object_store(outage.clone(), None);
    let (service, backups) = BackupService::new(
        BackupOptions {
            node_id: 0,
            uploads_concurrent_max: 2,
            upload_rate_limit_bytes_per_second: 0,
            queue_capacity: 8,
            store_call_timeout: Duration::from_secs(10),
            runtime: None,
        },
        store,
        BackupMetrics::new(),
    );
    let cancel = CancellationToken::new();
    tokio::spawn(service.run(cancel.clone()));
    Fixture {
        outage,
        raw: BackupStore::from_object_store(inner, None),
        backups,
        cancel,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn id(partition_id: u32, checkpoint_id: u64) -> BackupIdentifier {
    BackupIdentifier::new(partition_id, checkpoint_id, 0)
}

fn descriptor(checkpoint_position: u64) -> BackupDescriptor {
    BackupDescriptor {
        snapshot_id: None,
        checkpoint_position,
        number_of_partitions: 2,
        broker_version: "test".into(),
        request: None,
    }
}

impl Fixture {
    /// A job of partition 1 uploading one 100-byte segment.
    fn job(&self, checkpoint_id: u64) -> BackupJob {
        let path = self.dir.path().join(format!("{checkpoint_id:020}.log"));
        std::fs::write(&path, [7u8; 100]).unwrap();
        BackupJob {
            id: id(1, checkpoint_id),
            descriptor: descriptor(checkpoint_id * 10),
            files: vec![FileToUpload {
                kind: FileKind::Segment,
                name: format!("{checkpoint_id:020}.log"),
                path,
                len_bytes: 100,
                pooled: None,
            }],
            reservation: ReservationGuard::new(Arc::new(DashMap::new()), checkpoint_id),
            failure: None,
            base: None,
        }
    }

    async fn status(&self, checkpoint_id: u64) -> (BackupState, String) {
        let status = self.backups.status(1, checkpoint_id).await.unwrap();
        (status.status, status.failure_reason.unwrap_or_default())
    }

    async fn stored(&self, checkpoint_id: u64) -> Option<BackupStatus> {
        self.raw
            .read_manifest(&id(1, checkpoint_id))
            .await
            .unwrap()
            .map(|m| m.status)
    }

    fn counts(&self) -> (u64, u64, u64) {
        let metrics = self.backups.metrics().snapshot(0, None);
        (
            metrics.backups_completed,
            metrics.backups_failed,
            metrics.backups_in_progress,
        )
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// At most this many attempts fit in `outage` with the backoff capped at
/// [`STORE_RETRY_DELAY_MAX`] (plus the doublings up to the cap).
fn attempts_max(outage: Duration) -> usize {
    (outage.as_secs() / STORE_RETRY_DELAY_MAX.as_secs()) as usize + 12
}

#[tokio::test(start_paused = true)]
async fn a_failed_backup_stays_failed_until_its_manifest_lands_after_a_20_minute_outage() {
    let fixture = start();
    fixture.outage.start(20 * MINUTE, Scope::WritesButCreates);
    fixture.backups.start(fixture.job(1)).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (state, reason) = fixture.status(1).await;
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(reason.contains("injected outage"), "{reason}");
    assert_eq!(fixture.stored(1).await, Some(BackupStatus::InProgress));
    assert_eq!(fixture.counts(), (0, 1, 0));

    // Past the old 15 minutes of retries: still FAILED, never the store's IN_PROGRESS.
    tokio::time::sleep(16 * MINUTE).await;
    assert_eq!(fixture.status(1).await.0, BackupState::Failed);
    assert_eq!(fixture.stored(1).await, Some(BackupStatus::InProgress));

    // The store is back: the FAILED manifest lands, at a bounded rate of attempts.
    tokio::time::sleep(5 * MINUTE).await;
    assert_eq!(fixture.stored(1).await, Some(BackupStatus::Failed));
    let (state, reason) = fixture.status(1).await;
    assert_eq!(state, BackupState::Failed);
    assert!(reason.contains("injected outage"), "{reason}");
    let puts = fixture.outage.manifest_puts.load(Ordering::SeqCst);
    assert!(
        (2..=attempts_max(20 * MINUTE)).contains(&puts),
        "{puts} manifest writes"
    );
    assert_eq!(fixture.counts(), (0, 1, 0));
    fixture.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_completed_manifest_that_cannot_land_turns_failed_and_lands_after_the_outage() {
    let fixture = start();
    fixture.outage.start(20 * MINUTE, Scope::Updates);
    fixture.backups.start(fixture.job(2)).await;

    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(fixture.status(2).await.0, BackupState::InProgress);
    assert_eq!(fixture.counts(), (0, 0, 1));

    tokio::time::sleep(COMPLETED_MANIFEST_BUDGET - 10 * MINUTE + MINUTE).await;
    let (state, reason) = fixture.status(2).await;
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(reason.contains("could not be written within"), "{reason}");
    assert_eq!(fixture.stored(2).await, Some(BackupStatus::InProgress));
    assert_eq!(fixture.counts(), (0, 1, 0));

    tokio::time::sleep(5 * MINUTE).await;
    assert_eq!(fixture.stored(2).await, Some(BackupStatus::Failed));
    assert_eq!(fixture.status(2).await.0, BackupState::Failed);
    fixture.cancel.cancel();
}

/// After a restore of backup 6, the store still holds backup 7 of the old history: taking 7
/// again must never retry for minutes, and never read as the old COMPLETED backup.
#[tokio::test(start_paused = true)]
async fn a_manifest_of_another_history_fails_the_backup_at_once_and_for_good() {
    let fixture = start();
    let old = Manifest::in_progress(id(1, 7), descriptor(999)).complete(Vec::new());
    fixture.raw.write_manifest(&old).await.unwrap();
    fixture.backups.start(fixture.job(7)).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (state, reason) = fixture.status(7).await;
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(reason.contains("already exists"), "{reason}");
    assert_eq!(fixture.counts(), (0, 1, 0), "ended at once");
    let puts = fixture.outage.manifest_puts.load(Ordering::SeqCst);

    tokio::time::sleep(20 * MINUTE).await;
    assert_eq!(fixture.status(7).await.0, BackupState::Failed);
    let listed: BTreeMap<u64, BackupState> = fixture
        .backups
        .list(1, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.backup_id, s.status))
        .collect();
    assert_eq!(listed, BTreeMap::from([(7, BackupState::Failed)]));
    assert_eq!(
        fixture.outage.manifest_puts.load(Ordering::SeqCst),
        puts,
        "no retries of a permanent error"
    );
    assert_eq!(
        fixture.raw.read_manifest(&id(1, 7)).await.unwrap(),
        Some(old),
        "the other history's manifest is left alone"
    );

    // Deleting the id deletes what the store holds and forgets the failure.
    assert!(fixture.backups.delete(1, 7).await.unwrap() > 0);
    assert_eq!(fixture.status(7).await.0, BackupState::DoesNotExist);
    fixture.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_restart_outlasts_a_20_minute_outage() {
    let fixture = start();
    for checkpoint_id in [1, 2] {
        let leftover = Manifest::in_progress(id(1, checkpoint_id), descriptor(checkpoint_id * 10));
        fixture.raw.write_manifest(&leftover).await.unwrap();
    }
    fixture.outage.start(20 * MINUTE, Scope::Everything);
    let backups = fixture.backups.clone();
    let failing = tokio::spawn(async move { backups.fail_unfinished(1, Some((2, 20)), 2).await });

    tokio::time::sleep(16 * MINUTE).await;
    assert!(!failing.is_finished());
    assert_eq!(fixture.stored(1).await, Some(BackupStatus::InProgress));

    tokio::time::timeout(6 * MINUTE, failing)
        .await
        .expect("fail_unfinished ends once the store is back")
        .unwrap();
    assert_eq!(fixture.stored(1).await, Some(BackupStatus::Failed));
    assert_eq!(fixture.stored(2).await, Some(BackupStatus::Failed));
    fixture.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_restart_answers_leftovers_failed_until_their_manifests_land() {
    let fixture = start();
    let leftover = Manifest::in_progress(id(1, 3), descriptor(30));
    fixture.raw.write_manifest(&leftover).await.unwrap();
    fixture.outage.start(20 * MINUTE, Scope::Updates);
    let backups = fixture.backups.clone();
    let failing = tokio::spawn(async move { backups.fail_unfinished(1, Some((3, 30)), 2).await });

    tokio::time::sleep(MINUTE).await;
    let (state, reason) = fixture.status(3).await;
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(reason.contains("restarted"), "{reason}");
    assert_eq!(fixture.stored(3).await, Some(BackupStatus::InProgress));

    tokio::time::timeout(21 * MINUTE, failing)
        .await
        .expect("fail_unfinished ends once the store is back")
        .unwrap();
    assert_eq!(fixture.stored(3).await, Some(BackupStatus::Failed));
    assert_eq!(fixture.status(3).await.0, BackupState::Failed);
    fixture.cancel.cancel();
}

/// After a restart, this node's manifest of its latest checkpoint at another position is another
/// history's backup of that id: it is answered FAILED, never as this partition's COMPLETED backup.
#[tokio::test(start_paused = true)]
async fn a_restart_never_answers_another_historys_backup_as_its_own() {
    let fixture = start();
    let old = Manifest::in_progress(id(1, 7), descriptor(999)).complete(Vec::new());
    fixture.raw.write_manifest(&old).await.unwrap();
    fixture.backups.fail_unfinished(1, Some((7, 70)), 2).await;
    let (state, reason) = fixture.status(7).await;
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(reason.contains("another history"), "{reason}");
    assert_eq!(
        fixture.raw.read_manifest(&id(1, 7)).await.unwrap(),
        Some(old)
    );
    fixture.cancel.cancel();
}

/// The store holds backup 7 of partition 2 only (a history a restore left): no partition of
/// the cluster may take 7 or below again, whatever its own latest checkpoint.
#[tokio::test(start_paused = true)]
async fn a_backup_id_the_store_holds_for_any_partition_is_refused() {
    let fixture = start();
    for (partition_id, checkpoint_id) in [(1, 5), (2, 7)] {
        let manifest = Manifest::in_progress(id(partition_id, checkpoint_id), descriptor(1));
        fixture
            .raw
            .write_manifest(&manifest.complete(Vec::new()))
            .await
            .unwrap();
    }
    for refused in [6, 7] {
        match fixture.backups.check_backup_id(refused, 2).await {
            Err(BrokerError::BackupIdTaken {
                backup_id,
                stored_backup_id: 7,
            }) if backup_id == refused => {}
            other => panic!("backup id {refused}: {other:?}"),
        }
    }
    fixture.backups.check_backup_id(8, 2).await.unwrap();
    // A backup this broker started (a checkpoint propagated before the trigger) is its own.
    fixture.backups.start(fixture.job(7)).await;
    fixture.backups.check_backup_id(7, 2).await.unwrap();
    fixture.cancel.cancel();
}

/// Through the broker's API: the trigger answers 409 BACKUP_EXISTS naming the stored id, and
/// the partition creates no checkpoint; a greater id is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_endpoint_refuses_an_id_the_store_holds() {
    let fixture = start();
    let stored = Manifest::in_progress(id(2, 7), descriptor(1)).complete(Vec::new());
    fixture.raw.write_manifest(&stored).await.unwrap();
    let (partition_service, partition) = PartitionService::new(
        PartitionOptions {
            partition_id: 1,
            partitions_count: 2,
            node_id: 0,
            directory: fixture.dir.path().join("partition-00001"),
            segment_bytes_max: 1 << 20,
            snapshot_period: Duration::from_secs(3600),
            request_queue_capacity: 16,
            batch_commands_max: 64,
        },
        Some(fixture.backups.clone()),
    )
    .unwrap();
    tokio::spawn(partition_service.run(fixture.cancel.clone()));
    let state = Arc::new(ApiState {
        topology: Topology {
            node_id: 0,
            cluster_size: 2,
            partitions_count: 2,
            partitions: vec![1],
            broker_version: "test".into(),
            backup_store: "FILESYSTEM".into(),
        },
        partitions: BTreeMap::from([(1, partition.clone())]),
        backups: Some(fixture.backups.clone()),
        metrics: BackupMetrics::new(),
        restore: None,
        archives: BTreeMap::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let transport =
        sluice_broker::transport::ClusterTransport::new(None, None, "broker.cluster.ca").unwrap();
    let client = BrokerClient::new(transport, address, Duration::from_secs(10));

    match client.checkpoint(1, 7, None).await {
        Err(ClientError::Remote { status, body, .. }) => {
            assert_eq!(status, 409);
            assert_eq!(body.kind, ErrorKind::BackupExists);
            assert_eq!(body.latest, Some(7));
            assert!(body.message.contains("stored=7"), "{}", body.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(partition.outbox(1).await.unwrap().latest_checkpoint_id, 0);
    assert!(client.checkpoint(1, 8, None).await.unwrap().created);
    fixture.cancel.cancel();
}

/// A snapshot file whose size cannot be read when the checkpoint is processed (here: it is
/// gone, and back before the upload would open it) fails the backup naming the file and the
/// OS error, instead of uploading it as 0 bytes into a COMPLETED, unrestorable backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_snapshot_file_fails_the_backup_naming_it() {
    let fixture = start();
    let directory = fixture.dir.path().join("partition-00001");
    let (partition_service, partition) = PartitionService::new(
        PartitionOptions {
            partition_id: 1,
            partitions_count: 1,
            node_id: 0,
            directory: directory.clone(),
            segment_bytes_max: 1 << 20,
            snapshot_period: Duration::from_millis(50),
            request_queue_capacity: 16,
            batch_commands_max: 64,
        },
        Some(fixture.backups.clone()),
    )
    .unwrap();
    tokio::spawn(partition_service.run(fixture.cancel.clone()));
    let deposits = (0..50)
        .map(|i| Command::Deposit {
            account: format!("account-{i}"),
            amount: i + 1,
        })
        .collect();
    partition.execute(deposits).await.unwrap();
    // A snapshot of everything processed: no newer one is taken until the checkpoint.
    let snapshots = directory.join("snapshots");
    // Snapshots in place (not one still being written in a `.tmp` directory), newest last.
    let newest_snapshot = || {
        std::fs::read_dir(&snapshots)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .is_ok()
            })
            .max()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest_snapshot().is_none() {
        assert!(Instant::now() < deadline, "no snapshot was taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long past the period: the snapshot of the deposits is in place, and no newer one comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state_file = newest_snapshot()
        .unwrap()
        .join(sluice_broker::snapshot::STATE_FILE);
    let aside = state_file.with_extension("aside");
    std::fs::rename(&state_file, &aside).unwrap();
    fixture.outage.hold_manifests.store(true, Ordering::SeqCst);
    let outcome = partition
        .execute(vec![Command::checkpoint(1)])
        .await
        .unwrap();
    assert!(
        matches!(outcome.as_slice(), [Outcome::CheckpointCreated { .. }]),
        "{outcome:?}"
    );
    // Back before an upload opens it. (Unless the snapshot is gone already: a failed backup
    // releases its reservation, and a newer snapshot may have replaced this one.)
    let _ = std::fs::rename(&aside, &state_file);
    fixture.outage.hold_manifests.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (state, reason) = loop {
        let (state, reason) = fixture.status(1).await;
        if state != BackupState::InProgress {
            break (state, reason);
        }
        assert!(Instant::now() < deadline, "the backup never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(state, BackupState::Failed, "{reason}");
    assert!(
        reason.contains(&state_file.display().to_string()),
        "names the file: {reason}"
    );
    assert!(
        reason.contains("No such file"),
        "names the OS error: {reason}"
    );
    fixture.cancel.cancel();
}
