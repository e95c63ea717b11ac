//! The restore library on real backups: partitions run by the broker's own partition and backup
//! services into an in-memory store, then restored (or verified) with the code `sluice-restore`
//! and `sluice backup verify` run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_backup_store::conformance::{Intercept, Intercepted, StoreFuture};
use sluice_backup_store::object_store::memory::InMemory;
use sluice_backup_store::object_store::path::Path as StorePath;
use sluice_backup_store::object_store::{GetOptions, GetResult, ObjectStore, PutPayload};
use sluice_backup_store::{BackupIdentifier, BackupStore, FileEntry, FileKind, Manifest};
use sluice_broker::backup::{BackupHandle, BackupOptions, BackupService};
use sluice_broker::error::BrokerError;
use sluice_broker::metrics::BackupMetrics;
use sluice_broker::partition::{
    partition_directory, PartitionHandle, PartitionOptions, PartitionService,
};
use sluice_broker::protocol::BackupState;
use sluice_broker::record::{Command, Outcome};
use sluice_broker::service::refuse_unfinished_restore;
use sluice_config::BrokerConfig;
use sluice_restore::{
    restore_node, verify_backup, FailureKind, InstallStep, NoProgress, Progress, RestoreError,
    RestoreOptions, FILES_CONCURRENT_MAX, RESTORE_MARKER_FILE,
};
use tokio_util::sync::CancellationToken;

/// Two partitions (of nodes 0 and 1) backed up into one in-memory store.
struct Source {
    store: BackupStore,
    partitions: Vec<(PartitionHandle, BackupHandle)>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const PARTITIONS: u32 = 2;

/// `restore_node` with the default options and no progress output.
async fn restore_plainly(
    store: &BackupStore,
    config: &BrokerConfig,
    backup_id: u64,
) -> Result<sluice_restore::Restored, RestoreError> {
    restore_node(
        store,
        config,
        backup_id,
        &RestoreOptions::default(),
        &mut NoProgress,
    )
    .await
}

fn source() -> Source {
    source_with(Duration::from_millis(50))
}

/// [`source`] with partitions that take a snapshot every `snapshot_period`.
fn source_with(snapshot_period: Duration) -> Source {
    let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let mut partitions = Vec::new();
    for partition_id in 1..=PARTITIONS {
        let (service, backups) = BackupService::new(
            BackupOptions {
                node_id: partition_id - 1,
                uploads_concurrent_max: 2,
                upload_rate_limit_bytes_per_second: 0,
                queue_capacity: 8,
                store_call_timeout: Duration::from_secs(5),
                runtime: None,
            },
            store.clone(),
            BackupMetrics::new(),
        );
        let options = PartitionOptions {
            partition_id,
            partitions_count: PARTITIONS,
            node_id: partition_id - 1,
            directory: partition_directory(dir.path(), partition_id),
            segment_bytes_max: 4096,
            snapshot_period,
            request_queue_capacity: 64,
            batch_commands_max: 256,
        };
        let (partition_service, partition) =
            PartitionService::new(options, Some(backups.clone())).unwrap();
        tokio::spawn(service.run(cancel.clone()));
        tokio::spawn(partition_service.run(cancel.clone()));
        partitions.push((partition, backups));
    }
    Source {
        store,
        partitions,
        cancel,
        _dir: dir,
    }
}

impl Source {
    async fn deposits(&self, round: u64) {
        for (partition, _) in &self.partitions {
            let commands = (0..100)
                .map(|i| Command::Deposit {
                    account: format!("account-{i}"),
                    amount: round * 1000 + i + 1,
                })
                .collect();
            partition.execute(commands).await.unwrap();
        }
    }

    /// Checkpoint `id` on the given partitions, waiting until each backup is COMPLETED.
    async fn backup(&self, id: u64, partitions: &[u32]) {
        for partition_id in partitions {
            let (partition, backups) = &self.partitions[*partition_id as usize - 1];
            let outcomes = partition
                .execute(vec![Command::checkpoint(id)])
                .await
                .unwrap();
            assert!(
                matches!(outcomes.as_slice(), [Outcome::CheckpointCreated { .. }]),
                "{outcomes:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let status = backups.status(*partition_id, id).await.unwrap();
                if status.status == BackupState::Completed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "backup {id} never completed: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn manifest(&self, partition_id: u32, id: u64) -> Manifest {
        self.store
            .read_manifest(&BackupIdentifier::new(partition_id, id, partition_id - 1))
            .await
            .unwrap()
            .unwrap()
    }

    /// Replaces a manifest in the store with `json` as is (no checks).
    async fn put_manifest(&self, id: &BackupIdentifier, json: Vec<u8>) {
        self.store
            .object_store()
            .put(&self.store.manifest_path(id), PutPayload::from(json))
            .await
            .unwrap();
    }
}

/// Backups 1 (both partitions, with a snapshot), 2 (only partition 1).
async fn backed_up() -> Source {
    let source = source();
    source.deposits(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // a snapshot is taken
    source.deposits(2).await;
    source.backup(1, &[1, 2]).await;
    source.deposits(3).await;
    source.backup(2, &[1]).await;
    let manifest = source.manifest(1, 1).await;
    assert!(manifest.descriptor.snapshot_id.is_some(), "{manifest:?}");
    source
}

fn config(data_dir: &Path, node_id: u32, cluster_size: u32) -> BrokerConfig {
    let env = [
        (
            "SLUICE_BROKER_DATA_DIRECTORY",
            data_dir.display().to_string(),
        ),
        ("SLUICE_BROKER_CLUSTER_NODEID", node_id.to_string()),
        (
            "SLUICE_BROKER_CLUSTER_CLUSTERSIZE",
            cluster_size.to_string(),
        ),
        (
            "SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT",
            PARTITIONS.to_string(),
        ),
    ];
    sluice_config::load_from(None, env.map(|(k, v)| (k.to_string(), v)))
        .unwrap()
        .broker
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => return vec!["<absent>".to_string()],
    };
    names.sort();
    names
}

/// A node restored from backup 1 whole: both partitions and the report installed, no marker
/// left (the broker starts), and each partition recovers to the checkpoint.
fn assert_node_restored(data: &Path, config: &BrokerConfig, context: &str) {
    assert_eq!(
        entries(data),
        vec!["partition-00001", "partition-00002", "restore-report.json"],
        "{context}"
    );
    refuse_unfinished_restore(data).unwrap();
    recovers_to(config, 1, 1);
    recovers_to(config, 2, 1);
}

/// The broker's recovery of an installed partition lands on the backup's checkpoint.
fn recovers_to(config: &BrokerConfig, partition_id: u32, backup_id: u64) {
    let (service, _) = PartitionService::new(
        PartitionOptions {
            partition_id,
            partitions_count: PARTITIONS,
            node_id: config.cluster.node_id,
            directory: partition_directory(&config.data.directory, partition_id),
            segment_bytes_max: config.data.log_segment_size_bytes,
            snapshot_period: config.data.snapshot_period,
            request_queue_capacity: 1,
            batch_commands_max: 1,
        },
        None,
    )
    .unwrap();
    assert_eq!(service.latest_checkpoint().map(|c| c.0), Some(backup_id));
    assert!(service.summary().accounts > 0);
    assert_eq!(
        service.replayed_records(),
        0,
        "partition {partition_id}: the restore's snapshot at the checkpoint leaves nothing to replay"
    );
}

/// Verifies backup `id` with a scratch directory next to a fresh data directory (verify must
/// leave nothing behind), then restores node 0 of a one-node cluster into that data directory.
async fn verify_then_restore(source: &Source, id: u64) -> (tempfile::TempDir, BrokerConfig) {
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let config = config(&data, 0, 1);
    verify_backup(
        &source.store,
        &config,
        id,
        Some(target.path()),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(
        entries(target.path()),
        Vec::<String>::new(),
        "verify leaves nothing behind"
    );
    let restored = restore_plainly(&source.store, &config, id).await.unwrap();
    assert_eq!(restored.partitions.len(), PARTITIONS as usize);
    (target, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_restored_and_its_backup_verified() {
    let source = backed_up().await;
    let (_target, config) = verify_then_restore(&source, 1).await;
    assert_node_restored(&config.data.directory, &config, "a restore");
}

/// Item 15: node 0 hosts only partition 1, but a backup whose partition 2 is FAILED or missing
/// is refused before anything is written, naming the partition.
/// The restore replays the log once: each restored partition holds one snapshot, at its
/// checkpoint, and the log from the segment of the checkpoint record on, so the broker starts
/// without replaying (and without reading) the backed-up log, however long it was. The
/// partitions never take a snapshot of their own, so the backup is their whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_partition_starts_from_a_snapshot_at_its_checkpoint() {
    let source = source_with(Duration::from_secs(3600));
    for round in 1..=3 {
        source.deposits(round).await;
    }
    source.backup(1, &[1, 2]).await;
    let (_target, config) = verify_then_restore(&source, 1).await;
    for partition_id in 1..=PARTITIONS {
        let manifest = source.manifest(partition_id, 1).await;
        let segments_backed_up = manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Segment)
            .count();
        assert!(
            segments_backed_up > 1 && manifest.descriptor.snapshot_id.is_none(),
            "partition {partition_id}: the backup is a log of several segments: {manifest:?}"
        );
        let directory = partition_directory(&config.data.directory, partition_id);
        let snapshots: Vec<u64> = sluice_broker::snapshot::list(&directory.join("snapshots"))
            .unwrap()
            .iter()
            .map(|s| s.meta.processed_position)
            .collect();
        assert_eq!(
            snapshots,
            vec![manifest.descriptor.checkpoint_position],
            "partition {partition_id}: one snapshot, at the checkpoint"
        );
        assert_eq!(
            entries(&directory.join("log")).len(),
            1,
            "partition {partition_id}: only the segment of the checkpoint record is left"
        );
    }
    recovers_to(&config, 1, 1);
    recovers_to(&config, 2, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_any_partition_not_completed_is_refused_before_writing() {
    let source = backed_up().await;
    // Backup 3: partition 1 COMPLETED, partition 2 FAILED.
    source.backup(3, &[1]).await;
    let failed = Manifest::in_progress(
        BackupIdentifier::new(2, 3, 1),
        source.manifest(2, 1).await.descriptor,
    )
    .fail("disk on fire");
    source.store.write_manifest(&failed).await.unwrap();

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let config = config(&data, 0, 2);
    for (backup_id, expected) in [
        (2, "partition 2 does not exist"),
        (3, "partition 2 is FAILED on node 1 (disk on fire)"),
    ] {
        let error = restore_plainly(&source.store, &config, backup_id)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RestoreError::NotRestorable { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(expected), "{error}");
        assert!(!error.to_string().contains("partition 1 "), "{error}");
        assert_eq!(entries(&data), vec!["<absent>"], "nothing written");
        let error = verify_backup(
            &source.store,
            &config,
            backup_id,
            Some(target.path()),
            &mut NoProgress,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(error.kind(), FailureKind::Missing);
    }
}

/// Item 1: a manifest whose snapshotId is an absolute path (as an older release would have
/// read it, without a checksum) is refused naming the field and the value; nothing is written
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_id_that_is_a_path_is_refused_and_nothing_is_written_there() {
    let source = backed_up().await;
    let target = tempfile::tempdir().unwrap();
    let escape = target.path().join("escape");
    let manifest = source.manifest(1, 1).await;
    let mut json = serde_json::to_value(&manifest).unwrap();
    json["descriptor"]["snapshotId"] = serde_json::json!(escape.display().to_string());
    source
        .put_manifest(&manifest.id, serde_json::to_vec(&json).unwrap())
        .await;

    let data = target.path().join("data");
    let config = config(&data, 0, 1);
    let error = restore_plainly(&source.store, &config, 1)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "field=descriptor.snapshotId value={:?}",
            escape.display().to_string()
        )),
        "{text}"
    );
    assert!(
        !escape.exists(),
        "nothing is created at the manifest's path"
    );
    assert_eq!(entries(&data), vec!["<absent>"]);
    let error = verify_backup(
        &source.store,
        &config,
        1,
        Some(target.path()),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), FailureKind::Corrupt, "{error}");
    assert!(!escape.exists());
}

/// Item 13: a snapshot whose bytes match the manifest (re-uploaded with a fresh checksum) but
/// does not load is refused by verify exactly as by restore: verify runs the restore's checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_what_restore_refuses() {
    let source = backed_up().await;
    let mut manifest = source.manifest(1, 1).await;
    let scratch = tempfile::tempdir().unwrap();
    let position = manifest
        .files
        .iter()
        .position(|f| f.kind == FileKind::Snapshot && f.name == "state.rkyv")
        .unwrap();
    let entry = manifest.files[position].clone();
    let local = scratch.path().join("state.rkyv");
    source
        .store
        .download_file(&manifest, &entry, &local)
        .await
        .unwrap();
    let mut bytes = std::fs::read(&local).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&local, &bytes).unwrap();
    manifest.files[position] = source
        .store
        .upload_file(
            &manifest.id,
            FileKind::Snapshot,
            "state.rkyv",
            &local,
            bytes.len() as u64,
            None,
        )
        .await
        .unwrap();
    source
        .put_manifest(&manifest.id, manifest.to_stored_json().unwrap())
        .await;

    let data = scratch.path().join("data");
    let config = config(&data, 0, 1);
    let verified = verify_backup(
        &source.store,
        &config,
        1,
        Some(scratch.path()),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    let restored = restore_plainly(&source.store, &config, 1)
        .await
        .unwrap_err();
    for error in [&verified, &restored] {
        assert!(
            error
                .to_string()
                .contains("partition 1: backup 1 is damaged: the snapshot does not load"),
            "{error}"
        );
        assert_eq!(error.kind(), FailureKind::Corrupt);
    }
    assert_eq!(entries(&data), vec!["<absent>"]);
}

/// Item 11: a damaged manifest of another node next to the one restore uses is skipped and
/// reported, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_of_another_node_is_skipped_and_reported() {
    let source = backed_up().await;
    let other = BackupIdentifier::new(1, 1, 7);
    source.put_manifest(&other, b"{ damaged".to_vec()).await;
    let target = tempfile::tempdir().unwrap();
    let config = config(&target.path().join("data"), 0, 1);
    let restored = restore_plainly(&source.store, &config, 1).await.unwrap();
    assert_eq!(restored.skipped.len(), 1);
    assert_eq!(restored.skipped[0].id, other);
    assert!(restored.skipped[0]
        .reason
        .contains("not a valid manifest JSON document"));
}

/// Item 5: a restore that dies between any two installation steps leaves a marker the broker
/// refuses to start with (once anything may be installed), and a rerun cleans up and restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_between_steps_is_refused_by_the_broker_and_finished_by_a_rerun() {
    let source = Arc::new(backed_up().await);
    let steps = [
        InstallStep::Staged,
        InstallStep::MarkerWritten,
        InstallStep::PartitionInstalled(1),
        InstallStep::PartitionInstalled(2),
        InstallStep::ReportInstalled,
    ];
    for crash_at in steps {
        let target = tempfile::tempdir().unwrap();
        let data: PathBuf = target.path().join("data");
        let config = config(&data, 0, 1);
        let options = RestoreOptions {
            step_hook: Some(Arc::new(move |step| {
                if step == crash_at {
                    panic!("killed after {step:?}");
                }
            })),
            ..RestoreOptions::default()
        };
        let crashed = {
            let source = source.clone();
            let config = config.clone();
            tokio::spawn(async move {
                restore_node(&source.store, &config, 1, &options, &mut NoProgress).await
            })
            .await
        };
        assert!(crashed.unwrap_err().is_panic(), "{crash_at:?}");

        let left = entries(&data);
        if crash_at == InstallStep::Staged {
            assert!(!left.iter().any(|e| e == RESTORE_MARKER_FILE), "{left:?}");
            assert!(
                !left.iter().any(|e| e.starts_with("partition-")),
                "nothing installed: {left:?}"
            );
        } else {
            assert!(
                left.iter().any(|e| e == RESTORE_MARKER_FILE),
                "{crash_at:?}: {left:?}"
            );
            let error = refuse_unfinished_restore(&data).unwrap_err();
            assert!(
                matches!(error, BrokerError::UnfinishedRestore { .. }),
                "{error}"
            );
            assert!(
                error.to_string().contains("rerun sluice-restore"),
                "{error}"
            );
        }
        if crash_at == InstallStep::PartitionInstalled(1) {
            // The half-installed node of the issue: partition 1 in place, partition 2 not.
            assert!(left.contains(&"partition-00001".to_string()), "{left:?}");
            assert!(!left.contains(&"partition-00002".to_string()), "{left:?}");
        }

        let rerun = restore_plainly(&source.store, &config, 1)
            .await
            .unwrap_or_else(|e| panic!("rerun after a crash at {crash_at:?}: {e}"));
        assert!(!rerun.cleaned_up.is_empty(), "{crash_at:?}");
        assert_node_restored(&data, &config, &format!("{crash_at:?}"));
    }
}

/// Anything in the data directory that is not an unfinished restore's is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_with_other_content_is_refused() {
    let source = backed_up().await;
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    std::fs::create_dir_all(data.join("partition-00001")).unwrap();
    std::fs::write(data.join(RESTORE_MARKER_FILE), br#"{"backupId":1,"staging":".sluice-restore-00000000-0000-0000-0000-000000000000","installs":["restore-report.json"]}"#).unwrap();
    let config = config(&data, 0, 1);
    let error = restore_plainly(&source.store, &config, 1)
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::NotEmpty { .. }), "{error}");
    assert!(error.to_string().contains("partition-00001"), "{error}");
    assert!(data.join("partition-00001").is_dir(), "left as found");

    std::fs::write(
        data.join(RESTORE_MARKER_FILE),
        br#"{"backupId":1,"staging":"../../etc","installs":[]}"#,
    )
    .unwrap();
    let error = restore_plainly(&source.store, &config, 1)
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::BadMarker { .. }), "{error}");
}

/// A backup that builds on the snapshot of the one before (a newer snapshot was taken between
/// them) restores to its own checkpoint: its manifest lists the older snapshot and the log since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_built_on_an_earlier_snapshot_restores_to_its_checkpoint() {
    let source = source();
    source.deposits(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // a snapshot is taken
    source.backup(1, &[1, 2]).await;
    // A few accounts change (the log since the base stays within the base's size).
    for (partition, _) in &source.partitions {
        let change = vec![Command::Deposit {
            account: "account-7".to_string(),
            amount: 5,
        }];
        partition.execute(change).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // a newer snapshot is taken
    source.backup(2, &[1, 2]).await;
    for partition_id in 1..=PARTITIONS {
        let (first, second) = (
            source.manifest(partition_id, 1).await,
            source.manifest(partition_id, 2).await,
        );
        assert_eq!(
            first.descriptor.snapshot_id, second.descriptor.snapshot_id,
            "partition {partition_id}: backup 2 builds on backup 1's snapshot"
        );
    }
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let config = config(&data, 0, 1);
    restore_plainly(&source.store, &config, 2).await.unwrap();
    recovers_to(&config, 1, 2);
    recovers_to(&config, 2, 2);
}

/// Backups written before the pool (one object per file under the backup's folder, manifest
/// format 1 or 2) stay verifiable and restorable: backup 1 is rewritten in that format and the
/// pool emptied, so nothing of the pool can be what restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_of_the_formats_before_the_pool_stay_restorable() {
    let source = backed_up().await;
    let scratch = tempfile::tempdir().unwrap();
    for partition_id in 1..=PARTITIONS {
        let manifest = source.manifest(partition_id, 1).await;
        let mut legacy = Vec::new();
        for (n, entry) in manifest.files.iter().enumerate() {
            let local = scratch.path().join(format!("{partition_id}-{n}"));
            source
                .store
                .download_file(&manifest, entry, &local)
                .await
                .unwrap();
            let uploaded = source
                .store
                .upload_file(
                    &manifest.id,
                    entry.kind,
                    &entry.name,
                    &local,
                    entry.size_bytes,
                    None,
                )
                .await
                .unwrap();
            assert!(!uploaded.is_pooled());
            legacy.push(uploaded);
        }
        let rewritten =
            Manifest::in_progress(manifest.id, manifest.descriptor.clone()).complete(legacy);
        assert!(rewritten.format_version < 3, "{}", rewritten.format_version);
        source
            .put_manifest(&manifest.id, rewritten.to_stored_json().unwrap())
            .await;
        let pool = source.store.pool_prefix(partition_id);
        let objects: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
            source.store.object_store().list(Some(&pool)),
        )
        .await
        .unwrap();
        for object in objects {
            source
                .store
                .object_store()
                .delete(&object.location)
                .await
                .unwrap();
        }
    }
    let (_target, config) = verify_then_restore(&source, 1).await;
    assert_node_restored(
        &config.data.directory,
        &config,
        "a restore of the older format",
    );
}

/// A store whose reads of pool objects each take `hold` (so that downloads in flight together
/// overlap), counting how many are in flight at once, per partition and in all.
#[derive(Debug)]
struct Overlaps {
    inner: Arc<dyn ObjectStore>,
    hold: Duration,
    in_flight: std::sync::Mutex<InFlight>,
}

#[derive(Debug, Default)]
struct InFlight {
    /// Reads in flight now, by partition.
    now: std::collections::BTreeMap<u32, usize>,
    /// The most reads in flight at once of one partition.
    partition_max: usize,
    /// The most reads in flight at once in all.
    total_max: usize,
    /// The most partitions with reads in flight at once.
    partitions_max: usize,
}

impl std::fmt::Display for Overlaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Overlaps({})", self.inner)
    }
}

impl Overlaps {
    fn store(source: &Source, hold: Duration) -> (BackupStore, Arc<Intercepted<Overlaps>>) {
        let overlaps = Arc::new(Intercepted(Overlaps {
            inner: source.store.object_store().clone(),
            hold,
            in_flight: std::sync::Mutex::new(InFlight::default()),
        }));
        let store = BackupStore::from_object_store(overlaps.clone(), None);
        (store, overlaps)
    }

    fn count(&self, partition: u32, started: bool) {
        let mut in_flight = self.in_flight.lock().unwrap();
        let now = in_flight.now.entry(partition).or_default();
        if started {
            *now += 1;
        } else {
            *now -= 1;
        }
        let partition_now = *now;
        in_flight.now.retain(|_, n| *n > 0);
        let total: usize = in_flight.now.values().sum();
        let partitions = in_flight.now.len();
        in_flight.partition_max = in_flight.partition_max.max(partition_now);
        in_flight.total_max = in_flight.total_max.max(total);
        in_flight.partitions_max = in_flight.partitions_max.max(partitions);
    }

    fn maxima(&self) -> (usize, usize, usize) {
        let in_flight = self.in_flight.lock().unwrap();
        (
            in_flight.partition_max,
            in_flight.total_max,
            in_flight.partitions_max,
        )
    }
}

impl Intercept for Overlaps {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn get_opts<'a>(
        &'a self,
        location: &'a StorePath,
        options: GetOptions,
    ) -> StoreFuture<'a, GetResult> {
        Box::pin(async move {
            let mut parts = location.parts();
            let partition = parts.next().and_then(|p| p.as_ref().parse::<u32>().ok());
            let pooled = parts.next().is_some_and(|p| p.as_ref() == "pool");
            let Some(partition) = partition.filter(|_| pooled) else {
                return self.inner.get_opts(location, options).await;
            };
            self.count(partition, true);
            tokio::time::sleep(self.hold).await;
            let got = self.inner.get_opts(location, options).await;
            self.count(partition, false);
            got
        })
    }
}

/// Counts the files the progress was told of, by partition and name.
#[derive(Default)]
struct Reported(Vec<(u32, String)>);

impl Progress for Reported {
    fn file_done(&mut self, partition: u32, entry: &FileEntry) {
        self.0.push((partition, entry.name.clone()));
    }
}

/// Every file of both partitions of backup 1, as `(partition, name)`, sorted; each is one pool
/// object, so that reads in flight together are files in flight together.
async fn files_of_backup_1(source: &Source) -> Vec<(u32, String)> {
    let mut files = Vec::new();
    for partition_id in 1..=PARTITIONS {
        for entry in source.manifest(partition_id, 1).await.files {
            assert_eq!(entry.pieces.as_ref().map(Vec::len), Some(1), "{entry:?}");
            files.push((partition_id, entry.name));
        }
    }
    files.sort();
    files
}

/// Item 15.1: a partition's files download several at a time (at most `FILES_CONCURRENT_MAX`),
/// both partitions at once, and the progress hears of every file once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_partitions_download_in_parallel_and_each_file_is_reported() {
    let source = backed_up().await;
    let files = files_of_backup_1(&source).await;
    let (store, overlaps) = Overlaps::store(&source, Duration::from_millis(100));
    let target = tempfile::tempdir().unwrap();
    let config = config(&target.path().join("data"), 0, 1);
    let mut reported = Reported::default();
    restore_node(
        &store,
        &config,
        1,
        &RestoreOptions::default(),
        &mut reported,
    )
    .await
    .unwrap();
    let (partition_max, _, partitions_max) = overlaps.maxima();
    assert!(
        (2..=FILES_CONCURRENT_MAX).contains(&partition_max),
        "files of one partition in flight at once: {partition_max}"
    );
    assert_eq!(partitions_max, 2, "partitions downloading at once");
    reported.0.sort();
    assert_eq!(reported.0, files, "each file reported once");
    assert_node_restored(&config.data.directory, &config, "a parallel restore");
}

/// Item 15.1: the memory budget holds the downloads back: with a budget smaller than any file
/// one file downloads at a time (each needs more than the budget, so takes all of it), and the
/// restore still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_budget_bounds_the_files_in_flight() {
    let source = backed_up().await;
    files_of_backup_1(&source).await;
    let (store, overlaps) = Overlaps::store(&source, Duration::from_millis(20));
    let target = tempfile::tempdir().unwrap();
    let config = config(&target.path().join("data"), 0, 1);
    let options = RestoreOptions {
        download_memory_bytes_max: Some(1),
        ..RestoreOptions::default()
    };
    restore_node(&store, &config, 1, &options, &mut NoProgress)
        .await
        .unwrap();
    let (_, total_max, _) = overlaps.maxima();
    assert_eq!(
        total_max, 1,
        "reads in flight at once within a budget of 1 byte"
    );
    assert_node_restored(
        &config.data.directory,
        &config,
        "a restore within the budget",
    );
}

/// Item 15.1: a pool object missing under parallel downloads still fails the restore with the
/// error that names it and every backup that needs it, and leaves no data directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pool_object_fails_the_parallel_restore_naming_the_backups_that_need_it() {
    let source = backed_up().await;
    let manifest = source.manifest(1, 1).await;
    let later = source.manifest(1, 2).await;
    let shared = manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Segment)
        .find_map(|f| f.pieces.as_ref()?.first().copied())
        .expect("backup 1 has a pooled segment");
    let expected: Vec<u64> = [(1, &manifest), (2, &later)]
        .into_iter()
        .filter(|(_, m)| {
            m.files
                .iter()
                .any(|f| f.pieces.as_ref().is_some_and(|ps| ps.contains(&shared)))
        })
        .map(|(id, _)| id)
        .collect();
    source
        .store
        .object_store()
        .delete(&source.store.pool_object_path(1, &shared.object))
        .await
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let config = config(&data, 0, 1);
    let error = restore_plainly(&source.store, &config, 1)
        .await
        .unwrap_err();
    match &error {
        RestoreError::PoolObject {
            backup_id: 1,
            partition: 1,
            object,
            needed_by,
            ..
        } => {
            assert_eq!(*object, shared.object, "{error}");
            assert_eq!(needed_by, &expected, "{error}");
        }
        other => panic!("not the pool object error: {other}"),
    }
    assert_eq!(error.kind(), FailureKind::Missing, "{error}");
    assert_eq!(entries(&data), vec!["<absent>"]);
}
