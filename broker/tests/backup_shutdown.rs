//! The backup service drains on shutdown (ARCHITECTURE.md, service shape): a backup still
//! uploading ends FAILED in the store, and one handed over after shutdown is refused FAILED;
//! neither is left IN_PROGRESS.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sluice_backup_store::conformance::{Intercept, Intercepted, StoreFuture};
use sluice_backup_store::object_store::memory::InMemory;
use sluice_backup_store::object_store::path::Path;
use sluice_backup_store::object_store::{ObjectStore, PutOptions, PutPayload, PutResult};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, FileKind, MANIFEST_FILE_NAME,
};
use sluice_broker::backup::{BackupJob, BackupOptions, BackupService, FileToUpload};
use sluice_broker::metrics::BackupMetrics;
use sluice_broker::partition::ReservationGuard;
use sluice_broker::protocol::BackupState;
use tokio_util::sync::CancellationToken;

/// An in-memory store whose manifest writes wait while `hold` is set.
#[derive(Debug)]
struct Held {
    inner: Arc<dyn ObjectStore>,
    hold: AtomicBool,
    manifest_puts: AtomicUsize,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Held({})", self.inner)
    }
}

impl Intercept for Held {
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
                while self.hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            self.inner.put_opts(location, payload, opts).await
        })
    }
}

fn job(dir: &std::path::Path, checkpoint_id: u64) -> BackupJob {
    let name = format!("{checkpoint_id:020}.log");
    let path = dir.join(&name);
    std::fs::write(&path, [7u8; 100]).unwrap();
    BackupJob {
        id: BackupIdentifier::new(1, checkpoint_id, 0),
        descriptor: BackupDescriptor {
            snapshot_id: None,
            checkpoint_position: checkpoint_id * 10,
            number_of_partitions: 1,
            broker_version: "test".into(),
            request: None,
        },
        files: vec![FileToUpload {
            kind: FileKind::Segment,
            name,
            path,
            len_bytes: 100,
            pooled: None,
        }],
        reservation: ReservationGuard::new(Arc::new(DashMap::new()), checkpoint_id),
        failure: None,
        base: None,
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_the_running_backup_and_refuses_new_ones() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let held = Arc::new(Intercepted(Held {
        inner: inner.clone(),
        hold: AtomicBool::new(true),
        manifest_puts: AtomicUsize::new(0),
    }));
    let raw = BackupStore::from_object_store(inner, None);
    let (service, backups) = BackupService::new(
        BackupOptions {
            node_id: 0,
            uploads_concurrent_max: 2,
            upload_rate_limit_bytes_per_second: 0,
            queue_capacity: 8,
            store_call_timeout: Duration::from_secs(600),
            runtime: None,
        },
        BackupStore::from_object_store(held.clone(), None),
        BackupMetrics::new(),
    );
    let cancel = CancellationToken::new();
    let service = tokio::spawn(service.run(cancel.clone()));
    let dir = tempfile::tempdir().unwrap();

    // Backup 1 is running: its IN_PROGRESS manifest write waits in the store.
    backups.start(job(dir.path(), 1)).await;
    while held.manifest_puts.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        backups.status(1, 1).await.unwrap().status,
        BackupState::InProgress
    );

    cancel.cancel();
    // The store answers again while the service marks the interrupted backup FAILED.
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.hold.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("the backup service stops")
        .unwrap();
    let manifest = raw
        .read_manifest(&BackupIdentifier::new(1, 1, 0))
        .await
        .unwrap()
        .expect("the interrupted backup has a manifest");
    assert_eq!(manifest.status, BackupStatus::Failed);
    let reason = manifest.failure_reason.unwrap_or_default();
    assert!(
        reason.contains("shut down while the backup was uploading"),
        "{reason}"
    );

    // After shutdown a backup is refused, FAILED in the store, never left IN_PROGRESS.
    backups.start(job(dir.path(), 2)).await;
    let manifest = raw
        .read_manifest(&BackupIdentifier::new(1, 2, 0))
        .await
        .unwrap()
        .expect("the refused backup has a manifest");
    assert_eq!(manifest.status, BackupStatus::Failed);
    let reason = manifest.failure_reason.unwrap_or_default();
    assert!(reason.contains("shutting down"), "{reason}");
}
