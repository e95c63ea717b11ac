//! A partition and the backup service together, on an in-memory object store wrapped with fault
//! injection: a checkpoint leads to a COMPLETED backup holding the snapshot and segments; an
//! injected upload failure ends FAILED with a reason; the next backup succeeds; a restart marks
//! every unfinished backup of the node FAILED.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sluice_backup_store::conformance::{Intercept, Intercepted, StoreFuture};
use sluice_backup_store::object_store::memory::InMemory;
use sluice_backup_store::object_store::path::Path;
use sluice_backup_store::object_store::{
    GetOptions, GetResult, MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result as StoreResult,
};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, FileEntry, FileKind, Manifest,
    ObjectId,
};
use sluice_broker::backup::{BackupHandle, BackupOptions, BackupService};
use sluice_broker::metrics::BackupMetrics;
use sluice_broker::partition::{PartitionHandle, PartitionOptions, PartitionService};
use sluice_broker::protocol::{BackupState, PartitionBackupStatus};
use sluice_broker::record::{Command, Outcome};
use tokio_util::sync::CancellationToken;

/// Fault injection around an in-memory store: while `fail_segments` is set every write of a
/// data object (a pool object: segment pieces and snapshot chunks) fails; while `hang_segments` is set it never answers; `delay_ms` slows down
/// every write.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    fail_segments: AtomicBool,
    hang_segments: AtomicBool,
    delay_ms: AtomicU64,
    /// Manifests read so far.
    manifest_reads: AtomicU64,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    async fn check(&self, location: &Path) -> StoreResult<()> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let segment = location.as_ref().contains("/pool/");
        if segment && self.hang_segments.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if segment && self.fail_segments.load(Ordering::SeqCst) {
            return Err(sluice_backup_store::object_store::Error::Generic {
                store: "faulty",
                source: "injected upload failure".into(),
            });
        }
        Ok(())
    }
}

impl Intercept for Faulty {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn get_opts<'a>(
        &'a self,
        location: &'a Path,
        options: GetOptions,
    ) -> StoreFuture<'a, GetResult> {
        if location.as_ref().ends_with("manifest.json") {
            self.manifest_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(location, options)
    }

    fn put_opts<'a>(
        &'a self,
        location: &'a Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'a, PutResult> {
        Box::pin(async move {
            self.check(location).await?;
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        Box::pin(async move {
            self.check(location).await?;
            self.inner.put_multipart_opts(location, opts).await
        })
    }
}

struct Fixture {
    faulty: Arc<Intercepted<Faulty>>,
    store: BackupStore,
    backups: BackupHandle,
    partition: PartitionHandle,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

fn start() -> Fixture {
    start_with(Duration::from_millis(100))
}

/// A partition snapshotting every `snapshot_period` and its backup service.
fn start_with(snapshot_period: Duration) -> Fixture {
    let faulty = Arc::new(Intercepted(Faulty {
        inner: Arc::new(InMemory::new()),
        fail_segments: AtomicBool::new(false),
        hang_segments: AtomicBool::new(false),
        delay_ms: AtomicU64::new(0),
        manifest_reads: AtomicU64::new(0),
    }));
    let store = BackupStore::from_object_store(faulty.clone(), None);
    let (service, backups) = BackupService::new(
        BackupOptions {
            node_id: 0,
            uploads_concurrent_max: 2,
            upload_rate_limit_bytes_per_second: 0,
            queue_capacity: 8,
            store_call_timeout: Duration::from_secs(2),
            runtime: None,
        },
        store.clone(),
        BackupMetrics::new(),
    );
    let dir = tempfile::tempdir().unwrap();
    let options = PartitionOptions {
        partition_id: 1,
        partitions_count: 1,
        node_id: 0,
        directory: dir.path().join("partition-00001"),
        segment_bytes_max: 4096,
        snapshot_period,
        request_queue_capacity: 64,
        batch_commands_max: 256,
    };
    let (partition_service, partition) =
        PartitionService::new(options, Some(backups.clone())).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(service.run(cancel.clone()));
    tokio::spawn(partition_service.run(cancel.clone()));
    Fixture {
        faulty,
        store,
        backups,
        partition,
        cancel,
        _dir: dir,
    }
}

async fn deposits(partition: &PartitionHandle, round: u64) {
    let commands = (0..300)
        .map(|i| Command::Deposit {
            account: format!("account-{i}"),
            amount: round * 1000 + i + 1,
        })
        .collect();
    let outcomes = partition.execute(commands).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Balance { .. })),
        "{outcomes:?}"
    );
}

async fn checkpoint(partition: &PartitionHandle, id: u64) -> u64 {
    match partition
        .execute(vec![Command::checkpoint(id)])
        .await
        .unwrap()
        .as_slice()
    {
        [Outcome::CheckpointCreated {
            checkpoint_id,
            position,
        }] if *checkpoint_id == id => *position,
        other => panic!("checkpoint {id} not created: {other:?}"),
    }
}

async fn wait_for(backups: &BackupHandle, id: u64, want: BackupState) -> PartitionBackupStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = backups.status(1, id).await.unwrap();
        if status.status == want {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "backup {id} never reached {want:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_become_backups_and_failures_are_reported() {
    let fixture = start();
    deposits(&fixture.partition, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a snapshot is taken
    deposits(&fixture.partition, 2).await;
    let position = checkpoint(&fixture.partition, 1).await;

    let status = wait_for(&fixture.backups, 1, BackupState::Completed).await;
    let description = status.description.expect("a completed backup is described");
    assert_eq!(description.checkpoint_position, position);
    let snapshot_id = description
        .snapshot_id
        .expect("a snapshot was taken before the checkpoint");
    assert!(snapshot_id.parse::<u64>().unwrap() < position);
    let manifest = fixture
        .store
        .read_manifest(&BackupIdentifier {
            partition_id: 1,
            checkpoint_id: 1,
            node_id: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.status, BackupStatus::Completed);
    assert_eq!(
        manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Snapshot)
            .count(),
        2
    );
    assert!(manifest.files.iter().any(|f| f.kind == FileKind::Segment));
    let metrics = fixture.backups.metrics().snapshot(0, None);
    assert_eq!(
        (
            metrics.backups_completed,
            metrics.backups_failed,
            metrics.backups_in_progress
        ),
        (1, 0, 0)
    );
    assert_eq!(metrics.uploaded_files, manifest.files.len() as u64);
    assert_eq!(
        metrics.uploaded_bytes,
        manifest.files.iter().map(|f| f.stored_bytes).sum::<u64>()
    );
    assert_eq!(metrics.backup_duration.count, 1);
    assert_eq!(metrics.last_completed.map(|l| l.backup_id), Some(1));

    // A failing store: the backup ends FAILED with the cause, the partition keeps processing.
    fixture.faulty.fail_segments.store(true, Ordering::SeqCst);
    deposits(&fixture.partition, 3).await;
    checkpoint(&fixture.partition, 2).await;
    let failed = wait_for(&fixture.backups, 2, BackupState::Failed).await;
    let reason = failed.failure_reason.expect("a failed backup has a reason");
    assert!(reason.contains("injected upload failure"), "{reason}");
    let metrics = fixture.backups.metrics().snapshot(0, None);
    assert_eq!((metrics.backups_completed, metrics.backups_failed), (1, 1));
    assert_eq!(metrics.last_completed.map(|l| l.backup_id), Some(1));
    deposits(&fixture.partition, 4).await;

    // The store recovers: the next id succeeds.
    fixture.faulty.fail_segments.store(false, Ordering::SeqCst);
    checkpoint(&fixture.partition, 3).await;
    wait_for(&fixture.backups, 3, BackupState::Completed).await;
    let listed: Vec<(u64, BackupState)> = fixture
        .backups
        .list(1, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.backup_id, s.status))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1, BackupState::Completed),
            (2, BackupState::Failed),
            (3, BackupState::Completed)
        ]
    );
    // An id prefix reads only the matching backups.
    let filtered: Vec<u64> = fixture
        .backups
        .list(1, Some("3"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.backup_id)
        .collect();
    assert_eq!(filtered, vec![3]);

    // A slow store: the backup still completes.
    fixture.faulty.delay_ms.store(50, Ordering::SeqCst);
    deposits(&fixture.partition, 5).await;
    checkpoint(&fixture.partition, 4).await;
    wait_for(&fixture.backups, 4, BackupState::Completed).await;
    fixture.faulty.delay_ms.store(0, Ordering::SeqCst);

    // A store that never answers: the upload deadline ends the backup FAILED, never stuck.
    fixture.faulty.hang_segments.store(true, Ordering::SeqCst);
    deposits(&fixture.partition, 6).await;
    checkpoint(&fixture.partition, 5).await;
    let hung = wait_for(&fixture.backups, 5, BackupState::Failed).await;
    let reason = hung.failure_reason.expect("a reason");
    assert!(reason.contains("did not finish within"), "{reason}");
    fixture.faulty.hang_segments.store(false, Ordering::SeqCst);
    let stored = fixture
        .store
        .read_manifest(&BackupIdentifier {
            partition_id: 1,
            checkpoint_id: 5,
            node_id: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        BackupStatus::Failed,
        "the FAILED manifest landed"
    );
    checkpoint(&fixture.partition, 6).await;
    wait_for(&fixture.backups, 6, BackupState::Completed).await;
    let metrics = fixture.backups.metrics().snapshot(0, None);
    assert_eq!(
        (
            metrics.backups_completed,
            metrics.backups_failed,
            metrics.backups_in_progress
        ),
        (4, 2, 0),
        "backups 1, 3, 4, 6 completed; 2 and 5 failed"
    );
    assert_eq!(metrics.last_completed.map(|l| l.backup_id), Some(6));

    // Delete removes one backup and leaves the others.
    assert!(fixture.backups.delete(1, 2).await.unwrap() > 0);
    assert_eq!(
        fixture.backups.status(1, 2).await.unwrap().status,
        BackupState::DoesNotExist
    );
    assert_eq!(
        fixture.backups.status(1, 3).await.unwrap().status,
        BackupState::Completed
    );
    fixture.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_every_unfinished_backup_of_this_node() {
    let fixture = start();
    let descriptor = BackupDescriptor {
        snapshot_id: None,
        checkpoint_position: 7,
        number_of_partitions: 1,
        broker_version: "test".into(),
        request: None,
    };
    let id = |checkpoint_id, node_id| BackupIdentifier {
        partition_id: 1,
        checkpoint_id,
        node_id,
    };
    for manifest in [
        Manifest::in_progress(id(1, 0), descriptor.clone()),
        Manifest::in_progress(id(2, 0), descriptor.clone()),
        Manifest::in_progress(id(3, 0), descriptor.clone()).complete(Vec::new()),
        Manifest::in_progress(id(4, 1), descriptor.clone()),
    ] {
        fixture.store.write_manifest(&manifest).await.unwrap();
    }
    // This node recovered checkpoint 5, whose upload never started.
    fixture.backups.fail_unfinished(1, Some((5, 42)), 1).await;

    let status = |checkpoint_id, node_id| {
        let store = fixture.store.clone();
        async move {
            store
                .read_manifest(&id(checkpoint_id, node_id))
                .await
                .unwrap()
                .map(|m| m.status)
        }
    };
    assert_eq!(status(1, 0).await, Some(BackupStatus::Failed));
    assert_eq!(status(2, 0).await, Some(BackupStatus::Failed));
    assert_eq!(
        status(3, 0).await,
        Some(BackupStatus::Completed),
        "finished backups stay"
    );
    assert_eq!(
        status(4, 1).await,
        Some(BackupStatus::InProgress),
        "another node's backup is not ours"
    );
    let latest = fixture
        .store
        .read_manifest(&id(5, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.status, BackupStatus::Failed);
    assert_eq!(latest.descriptor.checkpoint_position, 42);
    assert!(latest.failure_reason.unwrap().contains("before the upload"));
    fixture.cancel.cancel();
}

/// Status and list choose among the manifests several nodes wrote for one checkpoint by the one
/// rule (`Manifest::choose`, this broker, node 0, hosting the partition): what restore restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_answer_the_manifest_restore_would_choose() {
    let fixture = start();
    let descriptor = BackupDescriptor {
        snapshot_id: None,
        checkpoint_position: 7,
        number_of_partitions: 1,
        broker_version: "test".into(),
        request: None,
    };
    let older = "2024-05-01T12:00:01.000Z";
    let newer = "2024-05-01T12:00:02.000Z";
    let manifest = |checkpoint_id, node_id, status: BackupStatus, updated: &str| {
        let manifest = Manifest::in_progress(
            BackupIdentifier::new(1, checkpoint_id, node_id),
            descriptor.clone(),
        );
        let manifest = match status {
            BackupStatus::InProgress => manifest,
            BackupStatus::Completed => manifest.complete(Vec::new()),
            BackupStatus::Failed => manifest.fail("another node failed"),
        };
        Manifest {
            last_updated_at: updated.to_string(),
            ..manifest
        }
    };
    // (checkpoint, its manifests as (node, status, updated), the state and node answered)
    let cases = [
        (
            10,
            vec![
                (0, BackupStatus::Completed, older),
                (1, BackupStatus::Failed, newer),
            ],
            (BackupState::Completed, 0),
        ),
        (
            11,
            vec![
                (0, BackupStatus::Completed, older),
                (1, BackupStatus::Completed, newer),
            ],
            (BackupState::Completed, 0),
        ),
        (
            12,
            vec![
                (1, BackupStatus::Completed, older),
                (0, BackupStatus::Failed, newer),
            ],
            (BackupState::Completed, 1),
        ),
        (
            13,
            vec![
                (0, BackupStatus::InProgress, older),
                (1, BackupStatus::Failed, newer),
            ],
            (BackupState::Failed, 1),
        ),
    ];
    for (checkpoint_id, manifests, _) in &cases {
        for (node_id, status, updated) in manifests {
            let manifest = manifest(*checkpoint_id, *node_id, *status, updated);
            fixture.store.write_manifest(&manifest).await.unwrap();
        }
    }
    let answered = |status: &PartitionBackupStatus| {
        (
            status.status,
            status
                .description
                .as_ref()
                .expect("a description")
                .broker_id,
        )
    };
    let listed = fixture.backups.list(1, None).await.unwrap();
    assert_eq!(listed.len(), cases.len(), "{listed:?}");
    for ((checkpoint_id, _, expected), listed) in cases.iter().zip(&listed) {
        assert_eq!(listed.backup_id, *checkpoint_id);
        let status = fixture.backups.status(1, *checkpoint_id).await.unwrap();
        assert_eq!(answered(&status), *expected, "status of {checkpoint_id}");
        assert_eq!(answered(listed), *expected, "list entry of {checkpoint_id}");
    }
    fixture.cancel.cancel();
}

/// A transfer debited after the source's checkpoint 7 reaches the target before the gateway's
/// checkpoint 7 does: the target writes checkpoint 7 first, so its backup 7, restored, holds no
/// credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_after_the_source_checkpoint_is_not_in_the_target_backup() {
    let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
    let (service, backups) = BackupService::new(
        BackupOptions {
            node_id: 0,
            uploads_concurrent_max: 2,
            upload_rate_limit_bytes_per_second: 0,
            queue_capacity: 8,
            store_call_timeout: Duration::from_secs(30),
            runtime: None,
        },
        store.clone(),
        BackupMetrics::new(),
    );
    let cancel = CancellationToken::new();
    tokio::spawn(service.run(cancel.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = |partition_id: u32| PartitionOptions {
        partition_id,
        partitions_count: 2,
        node_id: 0,
        directory: dir.path().join(format!("partition-{partition_id:05}")),
        segment_bytes_max: 1 << 20,
        snapshot_period: Duration::from_secs(3600),
        request_queue_capacity: 16,
        batch_commands_max: 64,
    };
    let (source_service, source) =
        PartitionService::new(options(1), Some(backups.clone())).unwrap();
    let (target_service, target) =
        PartitionService::new(options(2), Some(backups.clone())).unwrap();
    tokio::spawn(source_service.run(cancel.clone()));
    tokio::spawn(target_service.run(cancel.clone()));
    let on = |p: u32| {
        (0..)
            .map(|i| format!("acct-{i}"))
            .find(|a| sluice_broker::routing::partition_for_account(a, 2) == p)
            .unwrap()
    };
    let (alice, bob) = (on(1), on(2));

    source
        .execute(vec![Command::Deposit {
            account: alice.clone(),
            amount: 100,
        }])
        .await
        .unwrap();
    checkpoint(&source, 7).await;
    let outcome = source
        .execute(vec![Command::Transfer {
            transfer_id: "t-1".into(),
            from: alice,
            to: bob.clone(),
            amount: 40,
        }])
        .await
        .unwrap();
    assert!(
        matches!(outcome.as_slice(), [Outcome::TransferPending { .. }]),
        "{outcome:?}"
    );
    // What the outbox sender sends: the credit with the source's latest checkpoint id.
    let batch = source.outbox(10).await.unwrap();
    assert_eq!(batch.latest_checkpoint_id, 7);
    let (to_partition, credit) = batch.credits[0].clone();
    assert_eq!(to_partition, 2);
    let delivered = target
        .deliver(vec![sluice_broker::record::Delivery {
            command: credit,
            checkpoint_id: batch.latest_checkpoint_id,
        }])
        .await
        .unwrap();
    assert_eq!(
        delivered.latest_checkpoint_id, 7,
        "the target created checkpoint 7 first"
    );
    assert_eq!(target.balance(bob.clone()).await.unwrap(), Some(40));
    // The gateway's checkpoint 7 arrives late: a no-op that counts as success.
    let late = target.execute(vec![Command::checkpoint(7)]).await.unwrap();
    assert_eq!(late, vec![Outcome::CheckpointExists { checkpoint_id: 7 }]);

    // The target's backup 7 completes; restored, it holds the state before the credit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let manifest = loop {
        let found = store.find_manifests(2, 7).await.unwrap();
        if let Some(m) = found
            .into_iter()
            .find(|m| m.status == BackupStatus::Completed)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "target backup 7 never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let restored = tempfile::tempdir().unwrap();
    let log_dir = restored.path().join("log");
    for file in &manifest.files {
        assert_eq!(file.kind, FileKind::Segment, "no snapshot was taken");
        store
            .download_file(&manifest, file, &log_dir.join(&file.name))
            .await
            .unwrap();
    }
    sluice_broker::log::truncate_after(&log_dir, manifest.descriptor.checkpoint_position).unwrap();
    let mut restored_options = options(2);
    restored_options.directory = restored.path().to_path_buf();
    let (recovered, _handle) = PartitionService::new(restored_options, None).unwrap();
    assert_eq!(
        recovered.latest_checkpoint(),
        Some((7, manifest.descriptor.checkpoint_position))
    );
    let summary = recovered.summary();
    assert_eq!(
        (summary.accounts, summary.balance_total),
        (0, 0),
        "the credit must not be in backup 7"
    );
    cancel.cancel();
}

/// The pool: a backup sends only what no earlier backup of the partition sent (sealed segments
/// are referenced, the active segment keeps the pieces of the bytes sent before, only new bytes
/// and a new snapshot go up), and deleting a backup frees exactly the objects no other backup
/// needs, while the remaining backup stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_share_the_pool_and_a_delete_frees_only_what_nothing_else_needs() {
    // No snapshot between the backups: both hold the log from the start.
    let fixture = start_with(Duration::from_secs(3600));
    let id = |checkpoint_id| BackupIdentifier {
        partition_id: 1,
        checkpoint_id,
        node_id: 0,
    };
    deposits(&fixture.partition, 1).await;
    checkpoint(&fixture.partition, 1).await;
    wait_for(&fixture.backups, 1, BackupState::Completed).await;
    deposits(&fixture.partition, 2).await;
    checkpoint(&fixture.partition, 2).await;
    wait_for(&fixture.backups, 2, BackupState::Completed).await;
    let first = fixture.store.read_manifest(&id(1)).await.unwrap().unwrap();
    let second = fixture.store.read_manifest(&id(2)).await.unwrap().unwrap();
    let pieces = |manifest: &Manifest| -> BTreeSet<ObjectId> {
        manifest.pieces().map(|p| p.object).collect()
    };

    // Every segment of backup 1 that backup 2 holds starts with backup 1's pieces of it.
    let segments_of = |manifest: &Manifest| -> BTreeMap<String, FileEntry> {
        manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Segment)
            .map(|f| (f.name.clone(), f.clone()))
            .collect()
    };
    let (before, after) = (segments_of(&first), segments_of(&second));
    let shared: Vec<&String> = before.keys().filter(|n| after.contains_key(*n)).collect();
    assert!(
        !shared.is_empty(),
        "the backups share segments: {before:?} {after:?}"
    );
    for name in shared {
        let old = before[name].pieces.as_ref().unwrap();
        let new = after[name].pieces.as_ref().unwrap();
        assert_eq!(
            &new[..old.len()],
            &old[..],
            "segment {name} kept its pieces"
        );
    }
    // What backup 2 uploaded is exactly what backup 1 did not hold.
    let new_objects = pieces(&second).difference(&pieces(&first)).count() as u64;
    let uploaded = second
        .pool_upload
        .expect("a pooled backup says what it uploaded");
    assert_eq!(uploaded.objects, new_objects);
    let referenced: u64 = second.files.iter().map(|f| f.stored_bytes).sum();
    assert!(
        uploaded.stored_bytes < referenced,
        "backup 2 uploaded {uploaded:?} of {referenced} referenced bytes"
    );
    // The metrics say the same, and the pool's size.
    let registry = prometheus::Registry::new();
    fixture.backups.metrics().register(&registry);
    let text = sluice_protocol::metrics::encode(&registry);
    let pool_bytes: u64 = pool_sizes(&fixture.store).await.values().sum();
    for (metric, value) in [
        ("sluice_backup_last_referenced_bytes", referenced),
        ("sluice_backup_last_uploaded_bytes", uploaded.stored_bytes),
        ("sluice_backup_pool_bytes", pool_bytes),
    ] {
        let line = format!("{metric}{{partition=\"1\"}} {value}");
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    // Deleting backup 1 frees what only it referenced; backup 2 stays whole.
    fixture.backups.delete(1, 1).await.unwrap();
    fixture.backups.pools().collections_settled(1).await;
    let held = pool_objects(&fixture.store).await;
    assert_eq!(
        held,
        pieces(&second),
        "the pool holds exactly what backup 2 needs"
    );
    let scratch = tempfile::tempdir().unwrap();
    for (n, entry) in second.files.iter().enumerate() {
        fixture
            .store
            .download_file(&second, entry, &scratch.path().join(n.to_string()))
            .await
            .unwrap();
    }
    fixture.backups.delete(1, 2).await.unwrap();
    fixture.backups.pools().collections_settled(1).await;
    assert!(
        pool_objects(&fixture.store).await.is_empty(),
        "nothing is left"
    );
    fixture.cancel.cancel();
}

async fn pool_sizes(store: &BackupStore) -> BTreeMap<ObjectId, u64> {
    let metas: Vec<_> = store
        .object_store()
        .list(Some(&store.pool_prefix(1)))
        .try_collect()
        .await
        .unwrap();
    metas
        .iter()
        .filter_map(|m| Some((ObjectId::parse(m.location.filename()?)?, m.size)))
        .collect()
}

async fn pool_objects(store: &BackupStore) -> BTreeSet<ObjectId> {
    pool_sizes(store).await.into_keys().collect()
}

/// A snapshot taken between two backups does not make the second upload it: the pool holds the
/// first backup's snapshot, and the log since it is the delta (1% of the accounts changed costs
/// their records, not a new snapshot). The backup still holds all it needs on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_after_a_new_snapshot_builds_on_the_pooled_one() {
    let fixture = start();
    let id = |checkpoint_id| BackupIdentifier {
        partition_id: 1,
        checkpoint_id,
        node_id: 0,
    };
    deposits(&fixture.partition, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a snapshot is taken
    checkpoint(&fixture.partition, 1).await;
    wait_for(&fixture.backups, 1, BackupState::Completed).await;
    let first = fixture.store.read_manifest(&id(1)).await.unwrap().unwrap();
    let base = first
        .descriptor
        .snapshot_id
        .clone()
        .expect("backup 1 has a snapshot");

    // 1% of the accounts change; a newer snapshot is taken before the next backup.
    let changes = (0..3)
        .map(|i| Command::Deposit {
            account: format!("account-{i}"),
            amount: 1,
        })
        .collect();
    fixture.partition.execute(changes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    checkpoint(&fixture.partition, 2).await;
    let status = wait_for(&fixture.backups, 2, BackupState::Completed).await;
    assert_eq!(
        status.description.unwrap().snapshot_id.as_deref(),
        Some(base.as_str()),
        "backup 2 is built on backup 1's snapshot"
    );
    let second = fixture.store.read_manifest(&id(2)).await.unwrap().unwrap();
    let snapshot_files = |m: &Manifest| -> Vec<FileEntry> {
        m.files
            .iter()
            .filter(|f| f.kind == FileKind::Snapshot)
            .cloned()
            .collect()
    };
    let mut before = snapshot_files(&first);
    let mut after = snapshot_files(&second);
    before.sort_by(|a, b| a.name.cmp(&b.name));
    after.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(before, after, "the same snapshot objects");
    let uploaded = second.pool_upload.unwrap();
    let log_bytes: u64 = second
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Segment)
        .map(|f| f.stored_bytes)
        .sum();
    assert!(
        uploaded.stored_bytes <= log_bytes,
        "only log pieces went up: {uploaded:?}, log {log_bytes}"
    );
    // Whole on its own: after backup 1 is deleted, every file of backup 2 downloads.
    fixture.backups.delete(1, 1).await.unwrap();
    fixture.backups.pools().collections_settled(1).await;
    let scratch = tempfile::tempdir().unwrap();
    for (n, entry) in second.files.iter().enumerate() {
        fixture
            .store
            .download_file(&second, entry, &scratch.path().join(n.to_string()))
            .await
            .unwrap();
    }
    fixture.cancel.cancel();
}

/// A listing reads a COMPLETED manifest once; later listings answer it from memory (markers
/// every few seconds make thousands of checkpoints), a delete forgets it, and a backup that is
/// not COMPLETED is read again each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_each_completed_manifest_once() {
    let f = start();
    for id in 1..=3 {
        deposits(&f.partition, id).await;
        checkpoint(&f.partition, id).await;
        wait_for(&f.backups, id, BackupState::Completed).await;
    }
    let reads = || f.faulty.0.manifest_reads.load(Ordering::SeqCst);
    let listed = |statuses: Vec<PartitionBackupStatus>| -> Vec<(u64, BackupState)> {
        statuses.iter().map(|s| (s.backup_id, s.status)).collect()
    };
    let all_completed = vec![
        (1, BackupState::Completed),
        (2, BackupState::Completed),
        (3, BackupState::Completed),
    ];
    assert_eq!(
        listed(f.backups.list(1, None).await.unwrap()),
        all_completed
    );
    let after_first = reads();
    assert_eq!(
        listed(f.backups.list(1, None).await.unwrap()),
        all_completed
    );
    assert_eq!(
        reads(),
        after_first,
        "a second listing read manifests again"
    );

    f.backups.delete(1, 2).await.unwrap();
    assert_eq!(
        listed(f.backups.list(1, None).await.unwrap()),
        vec![(1, BackupState::Completed), (3, BackupState::Completed)]
    );

    // A FAILED backup is read on every listing: only COMPLETED never changes.
    f.faulty.0.fail_segments.store(true, Ordering::SeqCst);
    deposits(&f.partition, 4).await;
    checkpoint(&f.partition, 4).await;
    wait_for(&f.backups, 4, BackupState::Failed).await;
    f.faulty.0.fail_segments.store(false, Ordering::SeqCst);
    let statuses = listed(f.backups.list(1, None).await.unwrap());
    assert_eq!(statuses.last(), Some(&(4, BackupState::Failed)));
    let before = reads();
    f.backups.list(1, None).await.unwrap();
    assert_eq!(
        reads(),
        before + 1,
        "only the FAILED manifest is read again"
    );
    f.cancel.cancel();
}

/// A marker that comes while the partition's previous backup is still uploading is skipped, not
/// queued (no reservation held, no manifest: DOES_NOT_EXIST), and processing goes on; the next
/// marker after the upload ended is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_is_skipped_while_the_previous_backup_uploads() {
    use sluice_broker::record::{CheckpointKind, CheckpointRequest};
    let f = start();
    let marker = |checkpoint_id| Command::Checkpoint {
        checkpoint_id,
        request: Some(CheckpointRequest {
            kind: CheckpointKind::Marker,
            requested_at_ms: 1_000 + checkpoint_id,
        }),
    };
    deposits(&f.partition, 1).await;
    f.faulty.0.delay_ms.store(300, Ordering::SeqCst);
    f.partition.execute(vec![marker(1)]).await.unwrap();
    deposits(&f.partition, 2).await;
    f.partition.execute(vec![marker(2)]).await.unwrap();
    // Processing went on while both were asked.
    deposits(&f.partition, 3).await;
    let first = wait_for(&f.backups, 1, BackupState::Completed).await;
    assert_eq!(
        first.description.as_ref().and_then(|d| d.kind),
        Some(CheckpointKind::Marker)
    );
    assert_eq!(
        f.backups.status(1, 2).await.unwrap().status,
        BackupState::DoesNotExist,
        "the marker asked while the first uploaded must have been skipped"
    );
    f.faulty.0.delay_ms.store(0, Ordering::SeqCst);
    f.partition.execute(vec![marker(3)]).await.unwrap();
    let third = wait_for(&f.backups, 3, BackupState::Completed).await;
    assert_eq!(
        third.description.as_ref().and_then(|d| d.requested_at_ms),
        Some(1_003)
    );
    f.cancel.cancel();
}
