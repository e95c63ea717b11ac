//! Resumable deletion of backups: the manifest is marked `FAILED` first, the
//! data objects are deleted (in bulk where the store can), the manifest last.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use tracing::debug;

use crate::manifest::{BackupIdentifier, BackupStatus};
use crate::{BackupStore, BackupStoreError};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

impl BackupStore {
    /// Deletes a backup, resumably: a deletion that fails half-way (or
    /// crashes) leaves the backup `FAILED`, never `COMPLETED` and never
    /// unreachable, and deleting it again finishes the job.
    ///
    /// 1. A manifest that is not `FAILED` yet is rewritten `FAILED` ("being
    ///    deleted"), so that from here on the backup is never seen as
    ///    restorable (a backup is restorable only while its manifest says
    ///    `COMPLETED`);
    /// 2. every other object under the backup's prefix is deleted;
    /// 3. the manifest is deleted last, so that until then the backup stays
    ///    listed (and can be deleted again) instead of leaving data objects
    ///    that nothing points at.
    ///
    /// Returns the number of objects deleted; deleting an absent backup
    /// returns 0 (idempotent), and a folder of data objects without a
    /// manifest is deleted as well.
    pub async fn delete_backup(&self, id: &BackupIdentifier) -> Result<usize> {
        let manifest_path = self.manifest_path(id);
        self.forget_version(&manifest_path);
        let manifest_exists = match self.stored_manifest(&manifest_path).await? {
            None => false,
            Some((Some(stored), _)) if stored.status != BackupStatus::Failed => {
                let marked = stored.fail(format!(
                    "the backup is being deleted (since {}); delete it again if this stays",
                    crate::manifest::now_rfc3339()
                ));
                let json = serde_json::to_vec_pretty(&marked).map_err(|e| {
                    BackupStoreError::InvalidManifest {
                        path: manifest_path.to_string(),
                        reason: format!("cannot serialize: {e}"),
                    }
                })?;
                // Unconditional: whatever the manifest said, the backup goes.
                self.put_unconditionally(&manifest_path, json.into())
                    .await?;
                self.make_durable(&manifest_path).await?;
                true
            }
            // FAILED, or unreadable: already never restorable.
            Some(_) => true,
        };

        let prefix = self.backup_prefix(id);
        let locations: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_filter(|location| std::future::ready(*location != manifest_path))
            .try_collect()
            .await
            .map_err(|e| BackupStoreError::object_store("list", &prefix, e))?;
        let mut deleted = 0;
        let mut results = self
            .store
            .delete_stream(futures::stream::iter(locations.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BackupStoreError::object_store("delete", &prefix, e)),
            }
        }
        drop(results);

        match self.store.delete(&manifest_path).await {
            Ok(()) => {
                if manifest_exists {
                    deleted += 1;
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(BackupStoreError::object_store("delete", &manifest_path, e)),
        }
        debug!(%prefix, deleted, "deleted backup");
        Ok(deleted)
    }

    /// Deletes the backups of every node of checkpoint `checkpoint_id` of a
    /// partition ([`Self::delete_backup`] for each node folder, also one
    /// whose manifest is gone). Returns the number of objects deleted.
    pub async fn delete_checkpoint(&self, partition_id: u32, checkpoint_id: u64) -> Result<usize> {
        let prefix = self.checkpoint_prefix(partition_id, checkpoint_id);
        let nodes: Vec<u32> = self.child_ids(&prefix).await?;
        let mut deleted = 0;
        for node_id in nodes {
            deleted += self
                .delete_backup(&BackupIdentifier::new(partition_id, checkpoint_id, node_id))
                .await?;
        }
        Ok(deleted)
    }
}
