//! The manifest protocol of [`BackupStore`]: conditional manifest writes (one
//! writer per backup), manifest reads capped at [`MANIFEST_SIZE_BYTES_MAX`],
//! and the listings of checkpoints and manifests, which skip and report a
//! manifest that cannot be used.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, PutMode, PutOptions, PutPayload, UpdateVersion};
use tracing::{debug, warn};

use crate::layout::parse_padded_id;
use crate::manifest::{
    BackupIdentifier, BackupStatus, Manifest, ManifestError, StoredManifest, MANIFEST_MAC_FIELD,
    MANIFEST_SIZE_BYTES_MAX,
};
use crate::{BackupStore, BackupStoreError};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// A manifest that a listing skipped because it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedManifest {
    /// The backup whose folder holds it.
    pub id: BackupIdentifier,
    /// The manifest object path.
    pub path: String,
    /// Why it cannot be used (damaged, too large, newer format, …).
    pub reason: String,
}

/// What a listing of manifests found: the usable manifests, sorted by id,
/// and the skipped ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestListing {
    /// The manifests that were read and are valid.
    pub manifests: Vec<Manifest>,
    /// The manifests that exist but cannot be used.
    pub skipped: Vec<SkippedManifest>,
}

/// What [`BackupStore::rekey_manifest`] did with one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rekeyed {
    /// Its keyset was under `from`; it is now under the primary key, with a new MAC.
    Rewrapped { from: String },
    /// It is under the primary key already.
    AlreadyPrimary,
    /// A plain backup: nothing to rekey.
    Plain,
    /// Still `IN_PROGRESS`: its writer will finish it (under its own primary); not touched.
    InProgress,
}

/// The maximum number of concurrent requests of listing operations.
pub const LIST_CONCURRENCY: usize = 16;

impl BackupStore {
    /// Writes the manifest of `manifest.id`, after checking its invariants
    /// (see [`Manifest::validate`]), so that two writers of the same backup
    /// cannot both win:
    ///
    /// - **Create.** When this store holds no version of the manifest (the
    ///   first write of a backup, or a `FAILED` manifest for a backup whose
    ///   upload never began), the manifest is created only if none exists;
    ///   otherwise [`BackupStoreError::BackupExists`], and the existing one is
    ///   left alone.
    /// - **Update.** When this store wrote the manifest `IN_PROGRESS`, or read
    ///   it `IN_PROGRESS` ([`Self::read_manifest`], [`Self::list_manifests`],
    ///   …), it is replaced only if it is still the version written or read;
    ///   otherwise (changed or deleted meanwhile) [`BackupStoreError::Conflict`].
    ///
    /// So the status moves `IN_PROGRESS` → `COMPLETED` | `FAILED` once:
    /// `COMPLETED` and `FAILED` are final, a manifest written over them is
    /// refused. A write whose earlier attempt landed although it reported an
    /// error or was cancelled (a lost answer) is recognized by reading the
    /// manifest back: if it is exactly the manifest being written, the write
    /// succeeds; and a final manifest whose `IN_PROGRESS` predecessor's create
    /// answer was lost (the stored manifest is `IN_PROGRESS` with the same
    /// `createdAt` and descriptor, so the same writer's) updates it.
    ///
    /// # Guarantees per backend
    ///
    /// The create and update are conditional puts (`PutMode::Create`,
    /// `PutMode::Update`) where the store enforces them; before each one the
    /// manifest is also looked at (`head`), which catches a second writer that
    /// comes after the first on every store, but not one racing it.
    ///
    /// | store | create | update |
    /// |---|---|---|
    /// | in-memory | atomic | atomic |
    /// | file system | atomic (hard link) | checked, then replaced (object_store has no conditional update on files: a writer between the check and the rename wins) |
    /// | S3 (AWS, MinIO, R2, …) | atomic (`If-None-Match: *`) | atomic (`If-Match: <etag>`) |
    /// | Garage 2.5 (S3 API) | checked only: Garage ignores `If-None-Match` on `PutObject` (verified) | checked only: Garage ignores `If-Match` |
    /// | GCS | atomic (`ifGenerationMatch=0`) | atomic (generation match) |
    /// | fake-gcs-server 1.54 (GCS emulator) | checked only: ignores generation preconditions (verified) | checked only |
    /// | Azure Blob Storage, Azurite | atomic (`If-None-Match: *`) | atomic (`If-Match: <etag>`) (Azurite 3.35: verified by `tests/tests/azure_conformance.rs`) |
    ///
    /// A store answering `NotImplemented`/`NotSupported` to a conditional put
    /// gets a plain put after the check.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.manifest_path(&manifest.id);
        manifest
            .validate()
            .map_err(|reason| BackupStoreError::InvalidManifest {
                path: path.to_string(),
                reason: reason.to_string(),
            })?;
        let json: Bytes = manifest
            .to_stored_json_with(self.keyring.as_deref())
            .map_err(|reason| BackupStoreError::InvalidManifest {
                path: path.to_string(),
                reason: reason.to_string(),
            })?
            .into();
        let tracked = self.tracked_version(&path);
        let version = match tracked {
            Some(version) => self.update_manifest(&path, manifest, json, version).await?,
            None => self.create_manifest(&path, manifest, json).await?,
        };
        self.make_durable(&path).await?;
        if manifest.status == BackupStatus::InProgress {
            self.track_version(&path, version);
        } else {
            self.forget_version(&path);
        }
        debug!(%path, id = %manifest.id, status = %manifest.status, "wrote backup manifest");
        Ok(())
    }

    async fn create_manifest(
        &self,
        path: &Path,
        manifest: &Manifest,
        json: Bytes,
    ) -> Result<UpdateVersion> {
        // Stores that ignore `If-None-Match` (Garage) would overwrite: look first.
        if self.head_optional(path).await?.is_some() {
            return self.settle_existing(path, manifest, json).await;
        }
        let options = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(path, PutPayload::from(json.clone()), options)
            .await
        {
            Ok(result) => Ok(result.into()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.settle_existing(path, manifest, json).await
            }
            Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                self.put_unconditionally(path, json).await
            }
            Err(e) => Err(BackupStoreError::object_store("put", path, e)),
        }
    }

    async fn update_manifest(
        &self,
        path: &Path,
        manifest: &Manifest,
        json: Bytes,
        version: UpdateVersion,
    ) -> Result<UpdateVersion> {
        // Stores without conditional updates (files) or that ignore `If-Match`
        // (Garage) would overwrite: compare first.
        match self.head_optional(path).await? {
            None => return Err(self.conflict(path, manifest, "absent")),
            Some(meta) if !same_version(&version, &meta) => {
                return self
                    .settle_manifest(path, manifest, ManifestWrite::Update)
                    .await
            }
            Some(_) => {}
        }
        let options = PutOptions::from(PutMode::Update(version));
        match self
            .store
            .put_opts(path, PutPayload::from(json.clone()), options)
            .await
        {
            Ok(result) => Ok(result.into()),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => {
                self.settle_manifest(path, manifest, ManifestWrite::Update)
                    .await
            }
            Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                self.put_unconditionally(path, json).await
            }
            Err(e) => Err(BackupStoreError::object_store("put", path, e)),
        }
    }

    /// A create found a manifest: it is this very manifest (a retried write),
    /// or the `IN_PROGRESS` manifest this one finishes (same `createdAt` and
    /// descriptor: this writer's own create, whose answer was lost, e.g. to a
    /// timeout), which is then updated; anything else is refused.
    async fn settle_existing(
        &self,
        path: &Path,
        manifest: &Manifest,
        json: Bytes,
    ) -> Result<UpdateVersion> {
        match self
            .settle_manifest(path, manifest, ManifestWrite::Create)
            .await
        {
            Err(BackupStoreError::BackupExists { .. })
                if manifest.status != BackupStatus::InProgress =>
            {
                let Some((stored, version)) = self.stored_manifest(path).await? else {
                    return Err(self.conflict(path, manifest, "absent"));
                };
                let own = stored.as_ref().is_some_and(|stored| {
                    stored.status == BackupStatus::InProgress
                        && stored.id == manifest.id
                        && stored.created_at == manifest.created_at
                        && stored.descriptor == manifest.descriptor
                });
                if own {
                    self.update_manifest(path, manifest, json, version).await
                } else {
                    self.settle_manifest(path, manifest, ManifestWrite::Create)
                        .await
                }
            }
            other => other,
        }
    }

    /// The stored manifest (`None` inside if unreadable) and its version;
    /// `None` if absent.
    pub(crate) async fn stored_manifest(
        &self,
        path: &Path,
    ) -> Result<Option<(Option<Manifest>, UpdateVersion)>> {
        Ok(self
            .get_manifest_bytes(path)
            .await?
            .map(|(bytes, meta)| match bytes {
                Ok(bytes) => (Manifest::from_stored_json(&bytes).ok(), version_of(&meta)),
                Err(_) => (None, version_of(&meta)),
            }))
    }

    /// The bytes of the manifest object at `path` and its metadata; `None` if
    /// it does not exist. The bytes are an error (the reason) when the object
    /// is larger than [`MANIFEST_SIZE_BYTES_MAX`]: it is not read beyond that.
    async fn get_manifest_bytes(
        &self,
        path: &Path,
    ) -> Result<Option<(Result<Vec<u8>, ManifestError>, ObjectMeta)>> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(BackupStoreError::object_store("get", path, e)),
        };
        let meta = result.meta.clone();
        if meta.size > MANIFEST_SIZE_BYTES_MAX {
            let too_large = ManifestError::TooLargeToRead {
                size_bytes: meta.size,
            };
            return Ok(Some((Err(too_large), meta)));
        }
        // The stream is capped as well: a store may send more than it announced.
        let mut stream = result.into_stream();
        let mut bytes = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BackupStoreError::object_store("get", path, e))?;
            if (bytes.len() + chunk.len()) as u64 > MANIFEST_SIZE_BYTES_MAX {
                let too_large = ManifestError::TooLargeStream {
                    size_bytes: (bytes.len() + chunk.len()) as u64,
                };
                return Ok(Some((Err(too_large), meta)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((Ok(bytes), meta)))
    }

    pub(crate) async fn put_unconditionally(
        &self,
        path: &Path,
        json: Bytes,
    ) -> Result<UpdateVersion> {
        self.store
            .put(path, PutPayload::from(json))
            .await
            .map(UpdateVersion::from)
            .map_err(|e| BackupStoreError::object_store("put", path, e))
    }

    /// After a conditional write was refused: succeeds if the stored manifest
    /// is exactly `manifest` (an earlier attempt of this write landed), fails
    /// with `BackupExists` (a create) or `Conflict` otherwise.
    async fn settle_manifest(
        &self,
        path: &Path,
        manifest: &Manifest,
        write: ManifestWrite,
    ) -> Result<UpdateVersion> {
        let stored = self.stored_manifest(path).await?;
        let status = match &stored {
            Some((Some(stored), version)) if stored == manifest => return Ok(version.clone()),
            Some((Some(stored), _)) => stored.status.to_string(),
            Some((None, _)) => "unreadable".to_string(),
            None => "absent".to_string(),
        };
        if write == ManifestWrite::Create && stored.is_some() {
            Err(BackupStoreError::BackupExists {
                partition: manifest.id.partition_id,
                checkpoint: manifest.id.checkpoint_id,
                node: manifest.id.node_id,
                path: path.to_string(),
                status,
            })
        } else {
            Err(self.conflict(path, manifest, &status))
        }
    }

    fn conflict(&self, path: &Path, manifest: &Manifest, stored: &str) -> BackupStoreError {
        BackupStoreError::Conflict {
            path: path.to_string(),
            id: manifest.id.to_string(),
            expected: manifest.status.to_string(),
            stored: stored.to_string(),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<Path, UpdateVersion>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-wraps the keyset of backup `id`'s encrypted manifest under the primary key and
    /// re-MACs it, after the manifest authenticated under its own key; no object changes. The
    /// write is conditional on the version read (where the store supports it; else checked
    /// first), so a manifest that changed meanwhile is refused ([`BackupStoreError::Conflict`]),
    /// never overwritten. A manifest that cannot be read fails with
    /// [`BackupStoreError::InvalidManifest`] (e.g. its key is not configured).
    pub async fn rekey_manifest(&self, id: &BackupIdentifier) -> Result<Rekeyed> {
        let path = self.manifest_path(id);
        let invalid = |reason: ManifestError| BackupStoreError::InvalidManifest {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let Some((bytes, meta)) = self.get_manifest_bytes(&path).await? else {
            return Err(BackupStoreError::MissingObject {
                path: path.to_string(),
            });
        };
        let stored = Manifest::parse_stored(&bytes.map_err(invalid)?).map_err(invalid)?;
        self.authenticate(&stored).map_err(invalid)?;
        let mut manifest = stored.manifest;
        manifest.validate().map_err(invalid)?;
        let (Some(encryption), Some(keyring)) = (&manifest.encryption, &self.keyring) else {
            return Ok(Rekeyed::Plain);
        };
        let primary = keyring
            .primary()
            .ok_or_else(|| invalid(ManifestError::NoPrimaryKey))?;
        if manifest.status == BackupStatus::InProgress {
            return Ok(Rekeyed::InProgress);
        }
        if encryption.key_id == primary {
            return Ok(Rekeyed::AlreadyPrimary);
        }
        let from = encryption.key_id.clone();
        let keys = keyring.open(encryption).map_err(invalid)?;
        manifest.encryption = Some(keyring.wrap(&keys).map_err(invalid)?);
        let json: Bytes = manifest
            .to_stored_json_with(Some(keyring))
            .map_err(invalid)?
            .into();
        let version = version_of(&meta);
        match self.head_optional(&path).await? {
            Some(now) if same_version(&version, &now) => {}
            _ => return Err(self.conflict(&path, &manifest, "changed meanwhile")),
        }
        let options = PutOptions::from(PutMode::Update(version));
        match self
            .store
            .put_opts(&path, PutPayload::from(json.clone()), options)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                self.put_unconditionally(&path, json).await?;
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                return Err(self.conflict(&path, &manifest, "changed meanwhile"));
            }
            Err(e) => return Err(BackupStoreError::object_store("put", &path, e)),
        }
        self.make_durable(&path).await?;
        Ok(Rekeyed::Rewrapped { from })
    }

    /// An encrypted manifest's MAC and cluster, checked before anything of it is used; a plain
    /// one must carry no MAC.
    fn authenticate(&self, stored: &StoredManifest) -> Result<(), ManifestError> {
        match (&stored.manifest.encryption, &self.keyring) {
            (None, _) if stored.mac.is_some() => Err(ManifestError::Encryption {
                field: "(absent)",
                reason: format!("the manifest carries {MANIFEST_MAC_FIELD} but no encryption block: it was changed after it was written"),
            }),
            (None, _) => Ok(()),
            (Some(encryption), None) => Err(ManifestError::KeyNotConfigured {
                key_id: encryption.key_id.clone(),
            }),
            (Some(encryption), Some(keyring)) => {
                keyring.authenticate(encryption, stored.mac.as_deref(), &stored.canonical)
            }
        }
    }

    fn tracked_version(&self, path: &Path) -> Option<UpdateVersion> {
        self.versions().get(path).cloned()
    }

    fn track_version(&self, path: &Path, version: UpdateVersion) {
        self.versions().insert(path.clone(), version);
    }

    pub(crate) fn forget_version(&self, path: &Path) {
        self.versions().remove(path);
    }

    /// Reads the manifest of a backup; `None` if it does not exist.
    ///
    /// Fails with [`BackupStoreError::InvalidManifest`] (naming the object
    /// path) if it is larger than [`MANIFEST_SIZE_BYTES_MAX`], is not valid
    /// JSON, fails its own checksum (damaged; see
    /// [`Manifest::from_stored_json`]), violates an invariant (including the
    /// grammar of every value that becomes a path, see [`Manifest::validate`]),
    /// or describes another backup than its location says.
    ///
    /// Reading an `IN_PROGRESS` manifest remembers its version (unless this
    /// store already holds one), so that [`Self::write_manifest`] later
    /// replaces only what was read; reading a final one forgets it. Only
    /// `IN_PROGRESS` manifests are remembered, so the memory this takes is
    /// bounded by the backups in progress.
    pub async fn read_manifest(&self, id: &BackupIdentifier) -> Result<Option<Manifest>> {
        let path = self.manifest_path(id);
        let Some((bytes, meta)) = self.get_manifest_bytes(&path).await? else {
            return Ok(None);
        };
        let invalid = |reason: String| BackupStoreError::InvalidManifest {
            path: path.to_string(),
            reason,
        };
        let invalid_manifest = |reason: ManifestError| invalid(reason.to_string());
        let stored =
            Manifest::parse_stored(&bytes.map_err(invalid_manifest)?).map_err(invalid_manifest)?;
        self.authenticate(&stored).map_err(invalid_manifest)?;
        let manifest = stored.manifest;
        manifest.validate().map_err(invalid_manifest)?;
        if manifest.id != *id {
            return Err(invalid(format!(
                "the manifest describes another backup ({}) than its location ({id})",
                manifest.id
            )));
        }
        if manifest.status == BackupStatus::InProgress {
            self.versions()
                .entry(path)
                .or_insert_with(|| version_of(&meta));
        } else {
            self.forget_version(&path);
        }
        Ok(Some(manifest))
    }

    /// The checkpoint ids that have any object under the partition's prefix,
    /// ascending. Folders whose name is not a number are ignored.
    pub async fn list_checkpoints(&self, partition_id: u32) -> Result<Vec<u64>> {
        let prefix = self.partition_prefix(partition_id);
        let mut ids: Vec<u64> = self.child_ids(&prefix).await?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// The manifests of all node folders of a checkpoint of a partition,
    /// sorted by node id. Node folders without a manifest are skipped, and so
    /// are manifests that cannot be used (damaged, too large, of a newer
    /// format: [`BackupStoreError::InvalidManifest`]), each logged as a
    /// warning; see [`Self::find_manifests_reporting`] to get them. Failing
    /// requests still fail the call.
    pub async fn find_manifests(
        &self,
        partition_id: u32,
        checkpoint_id: u64,
    ) -> Result<Vec<Manifest>> {
        Ok(self
            .find_manifests_reporting(partition_id, checkpoint_id)
            .await?
            .manifests)
    }

    /// [`Self::find_manifests`] with the skipped manifests and why.
    pub async fn find_manifests_reporting(
        &self,
        partition_id: u32,
        checkpoint_id: u64,
    ) -> Result<ManifestListing> {
        let ids = self.node_backups(partition_id, checkpoint_id).await?;
        self.read_manifests(ids).await
    }

    /// Every manifest of a partition, sorted by checkpoint id then node id,
    /// skipping (and logging) those that cannot be used as
    /// [`Self::find_manifests`] does. Listings and reads run with at most
    /// [`LIST_CONCURRENCY`] concurrent requests each.
    pub async fn list_manifests(&self, partition_id: u32) -> Result<Vec<Manifest>> {
        Ok(self.list_manifests_reporting(partition_id).await?.manifests)
    }

    /// [`Self::list_manifests`] with the skipped manifests and why.
    pub async fn list_manifests_reporting(&self, partition_id: u32) -> Result<ManifestListing> {
        let checkpoints = self.list_checkpoints(partition_id).await?;
        let ids: Vec<Vec<BackupIdentifier>> = futures::stream::iter(checkpoints)
            .map(|checkpoint_id| self.node_backups(partition_id, checkpoint_id))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        self.read_manifests(ids.into_iter().flatten().collect())
            .await
    }

    /// The numeric names of the folders directly under `prefix`.
    pub(crate) async fn child_ids<T: FromStr>(&self, prefix: &Path) -> Result<Vec<T>> {
        let listing = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| BackupStoreError::object_store("list", prefix, e))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|folder| folder.filename().and_then(parse_padded_id))
            .collect())
    }

    async fn node_backups(
        &self,
        partition_id: u32,
        checkpoint_id: u64,
    ) -> Result<Vec<BackupIdentifier>> {
        let prefix = self.checkpoint_prefix(partition_id, checkpoint_id);
        let nodes: Vec<u32> = self.child_ids(&prefix).await?;
        Ok(nodes
            .into_iter()
            .map(|node_id| BackupIdentifier::new(partition_id, checkpoint_id, node_id))
            .collect())
    }

    /// Reads the manifests of `ids`; one that cannot be used is skipped and
    /// reported, so that one bad manifest (another node's, a newer release's)
    /// does not hide the others.
    async fn read_manifests(&self, ids: Vec<BackupIdentifier>) -> Result<ManifestListing> {
        let read: Vec<(BackupIdentifier, Result<Option<Manifest>>)> = futures::stream::iter(ids)
            .map(|id| async move { (id, self.read_manifest(&id).await) })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut listing = ManifestListing::default();
        for (id, result) in read {
            match result {
                Ok(Some(manifest)) => listing.manifests.push(manifest),
                Ok(None) => {}
                Err(BackupStoreError::InvalidManifest { path, reason }) => {
                    warn!(%id, %path, %reason, "skipping a backup manifest that cannot be used");
                    listing.skipped.push(SkippedManifest { id, path, reason });
                }
                Err(error) => return Err(error),
            }
        }
        listing.manifests.sort_by_key(|m| m.id);
        listing.skipped.sort_by_key(|s| s.id);
        Ok(listing)
    }
}

/// Which conditional write of a manifest was refused: a create (the manifest must not exist)
/// or an update of the version read before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestWrite {
    Create,
    Update,
}

/// The version of an object as seen by `head`/`get`.
fn version_of(meta: &ObjectMeta) -> UpdateVersion {
    UpdateVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    }
}

/// Whether `meta` is still `version` (versions first, then ETags; unknown
/// counts as the same: the conditional put decides).
fn same_version(version: &UpdateVersion, meta: &ObjectMeta) -> bool {
    match (&version.version, &meta.version) {
        (Some(a), Some(b)) => a == b,
        _ => match (&version.e_tag, &meta.e_tag) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn versions_compare_by_version_then_etag() {
        let meta = |e_tag: Option<&str>, version: Option<&str>| ObjectMeta {
            location: Path::from("x"),
            last_modified: Default::default(),
            size: 0,
            e_tag: e_tag.map(str::to_string),
            version: version.map(str::to_string),
        };
        let v = |e_tag: Option<&str>, version: Option<&str>| UpdateVersion {
            e_tag: e_tag.map(str::to_string),
            version: version.map(str::to_string),
        };
        assert!(same_version(&v(Some("a"), None), &meta(Some("a"), None)));
        assert!(!same_version(&v(Some("a"), None), &meta(Some("b"), None)));
        assert!(same_version(
            &v(Some("a"), Some("1")),
            &meta(Some("b"), Some("1"))
        ));
        assert!(!same_version(&v(None, Some("1")), &meta(None, Some("2"))));
        assert!(same_version(&v(None, None), &meta(Some("b"), None)));
    }
}
