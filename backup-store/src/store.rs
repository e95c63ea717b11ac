//! [`BackupStore`]: the in-bucket layout, manifests, streaming uploads and
//! verified downloads on top of `object_store`.

use std::fmt;
use std::path::{Path as LocalPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, PutPayloadMut, RetryConfig, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::error::error_chain;
use crate::manifest::{
    format_checksum, parse_checksum, validate_file_name, BackupIdentifier, FileEntry, FileKind,
    Manifest,
};
use crate::{BackupStoreError, Throttle};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The name of the manifest object in a backup folder.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";

/// Files up to this size are uploaded with a single `put`; larger ones with a
/// multipart upload.
pub const SINGLE_PUT_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The part size of multipart uploads.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// The maximum number of parts of one multipart upload in flight at once.
pub const MAX_CONCURRENT_PARTS: usize = 4;

/// The read size when uploads are throttled, for smooth progress at low rates.
pub const THROTTLED_READ_BYTES: usize = 1024 * 1024;

/// The maximum number of concurrent requests of listing operations.
pub const LIST_CONCURRENCY: usize = 16;

/// How to open a [`BackupStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStoreOptions {
    /// Which object store to use.
    pub kind: StoreKind,
    /// An optional prefix inside the store (e.g. `cluster-a/backups`) under
    /// which all backups live. Leading and trailing `/` are ignored.
    pub base_path: Option<String>,
}

/// The kind of object store backing a [`BackupStore`].
///
/// `Debug` redacts the secret key.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// A process-local in-memory store (tests, development).
    InMemory,
    /// A directory of the local file system; created if missing.
    Filesystem {
        /// The root directory of the store.
        root: PathBuf,
    },
    /// An S3-compatible object store.
    S3 {
        /// The bucket; must exist.
        bucket: String,
        /// A custom endpoint (MinIO, LocalStack, …), e.g. `http://localhost:9000`.
        endpoint: Option<String>,
        /// The region; an empty string keeps the region from the environment
        /// (`AWS_REGION`, default `us-east-1`).
        region: String,
        /// The access key; when absent the AWS credential chain is used
        /// (environment, web identity, instance metadata, …).
        access_key: Option<String>,
        /// The secret key; when absent the AWS credential chain is used.
        secret_key: Option<String>,
        /// Path-style requests (`endpoint/bucket/key`, needed by MinIO) instead of
        /// virtual-hosted style (`bucket.endpoint/key`).
        force_path_style: bool,
        /// Whether plain HTTP is allowed. It is allowed as well whenever the
        /// endpoint starts with `http://`.
        allow_http: bool,
    },
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InMemory => f.write_str("InMemory"),
            Self::Filesystem { root } => f.debug_struct("Filesystem").field("root", root).finish(),
            Self::S3 {
                bucket,
                endpoint,
                region,
                access_key,
                secret_key,
                force_path_style,
                allow_http,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key", access_key)
                .field("secret_key", &secret_key.as_ref().map(|_| "<redacted>"))
                .field("force_path_style", force_path_style)
                .field("allow_http", allow_http)
                .finish(),
        }
    }
}

/// The backup store: the only place that knows the object store, the layout of
/// backups in it and the manifest format.
///
/// # Layout
///
/// ```text
/// [<basePath>/]<partitionId:05>/<checkpointId:020>/<nodeId:05>/manifest.json
/// [<basePath>/]<partitionId:05>/<checkpointId:020>/<nodeId:05>/snapshot/<file name>
/// [<basePath>/]<partitionId:05>/<checkpointId:020>/<nodeId:05>/segments/<file name>
/// ```
///
/// e.g. `backups/00001/00000000000000000042/00000/manifest.json`. Ids are
/// zero-padded so that lexicographic listings sort numerically. File names are
/// single path segments of `[A-Za-z0-9._-]`.
///
/// # Invariant: the manifest is the commit point
///
/// A backup is written data objects first, manifest status last: the manifest
/// is written `IN_PROGRESS` when the backup starts, then the snapshot and
/// segment objects are uploaded, and only then is the manifest rewritten as
/// `COMPLETED` (listing every file with its size and CRC32C) or `FAILED`.
/// A backup is restorable if and only if its manifest says `COMPLETED`; a
/// crash at any point leaves at worst an `IN_PROGRESS` manifest or orphaned
/// data objects, never a `COMPLETED` manifest pointing at missing data.
/// Deletion runs in the opposite order (manifest first, see
/// [`BackupStore::delete_backup`]), so a half-deleted backup is never seen as
/// complete.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    /// The same store with few retries, for fast reachability checks.
    probe: Arc<dyn ObjectStore>,
    base: Path,
    description: Arc<str>,
}

impl fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupStore")
            .field("store", &self.description)
            .field("base_path", &self.base_path())
            .finish()
    }
}

impl BackupStore {
    /// Opens the store described by `options`.
    ///
    /// - `Filesystem`: the root directory is created if missing.
    /// - `S3`: settings from the environment (`AWS_*`, including the credential
    ///   chain) are read first; explicit options override them. Without
    ///   `force_path_style`, requests are virtual-hosted style; a custom endpoint
    ///   then gets the bucket prepended to its host unless it already starts
    ///   with `<bucket>.`. No request is made; use [`Self::check_reachable`].
    pub fn open(options: BackupStoreOptions) -> Result<Self> {
        let base = parse_base_path(options.base_path.as_deref())?;
        let (store, probe, description): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, String) =
            match options.kind {
                StoreKind::InMemory => {
                    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                    (store.clone(), store, "InMemory".to_string())
                }
                StoreKind::Filesystem { root } => {
                    std::fs::create_dir_all(&root)
                        .map_err(|source| BackupStoreError::io(&root, source))?;
                    let fs = LocalFileSystem::new_with_prefix(&root)
                        .map_err(|e| BackupStoreError::Config {
                            reason: format!(
                                "cannot use directory as backup store: root={} error={}",
                                root.display(),
                                error_chain(&e)
                            ),
                        })?
                        .with_automatic_cleanup(true);
                    let store: Arc<dyn ObjectStore> = Arc::new(fs);
                    let description = format!("Filesystem(root={})", root.display());
                    (store.clone(), store, description)
                }
                StoreKind::S3 {
                    bucket,
                    endpoint,
                    region,
                    access_key,
                    secret_key,
                    force_path_style,
                    allow_http,
                } => {
                    let bucket = bucket.trim().to_string();
                    if bucket.is_empty() {
                        return Err(BackupStoreError::Config {
                            reason: "the S3 bucket name is empty; set the bucket".to_string(),
                        });
                    }
                    let allow_http = allow_http
                        || endpoint
                            .as_deref()
                            .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("http://"));
                    let mut builder = AmazonS3Builder::from_env()
                        .with_bucket_name(&bucket)
                        .with_virtual_hosted_style_request(!force_path_style)
                        .with_allow_http(allow_http);
                    if !region.trim().is_empty() {
                        builder = builder.with_region(region.trim());
                    }
                    let mut endpoint_description = String::from("default");
                    if let Some(endpoint) = endpoint.as_deref().map(str::trim) {
                        if !endpoint.is_empty() {
                            let endpoint = if force_path_style {
                                check_endpoint(endpoint)?;
                                endpoint.to_string()
                            } else {
                                virtual_hosted_endpoint(endpoint, &bucket)?
                            };
                            endpoint_description = endpoint.clone();
                            builder = builder.with_endpoint(endpoint);
                        }
                    }
                    if let Some(access_key) = access_key {
                        builder = builder.with_access_key_id(access_key);
                    }
                    if let Some(secret_key) = secret_key {
                        builder = builder.with_secret_access_key(secret_key);
                    }
                    let probe_builder = builder.clone().with_retry(RetryConfig {
                        max_retries: 1,
                        retry_timeout: Duration::from_secs(15),
                        ..RetryConfig::default()
                    });
                    let build_error = |e: object_store::Error| {
                        BackupStoreError::Config {
                        reason: format!(
                            "cannot build the S3 client: bucket={bucket} endpoint={endpoint_description} error={}",
                            error_chain(&e)
                        ),
                    }
                    };
                    let store = builder.build().map_err(build_error)?;
                    let probe = probe_builder.build().map_err(build_error)?;
                    let description = format!(
                        "S3(bucket={bucket} endpoint={endpoint_description} path_style={force_path_style})"
                    );
                    (Arc::new(store), Arc::new(probe), description)
                }
            };
        Ok(Self {
            store,
            probe,
            base,
            description: description.into(),
        })
    }

    /// Wraps an existing object store (tests, fault-injection wrappers).
    ///
    /// `base_path` is split on `/`; empty segments are ignored and characters
    /// that are not allowed in object paths are percent-encoded.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, base_path: Option<String>) -> Self {
        let base = base_path.map(Path::from).unwrap_or_default();
        let description = store.to_string();
        Self {
            probe: store.clone(),
            store,
            base,
            description: description.into(),
        }
    }

    /// The underlying object store (for tests and tools; backups should only
    /// be accessed through this type).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The base prefix of all backups, or `None` for the root of the store.
    pub fn base_path(&self) -> Option<&str> {
        let base: &str = self.base.as_ref();
        (!base.is_empty()).then_some(base)
    }

    /// The prefix of all backups of a partition.
    pub fn partition_prefix(&self, partition_id: u32) -> Path {
        self.base.child(format!("{partition_id:05}"))
    }

    /// The prefix of all node folders of a checkpoint of a partition.
    pub fn checkpoint_prefix(&self, partition_id: u32, checkpoint_id: u64) -> Path {
        self.partition_prefix(partition_id)
            .child(format!("{checkpoint_id:020}"))
    }

    /// The folder of one backup.
    pub fn backup_prefix(&self, id: &BackupIdentifier) -> Path {
        self.checkpoint_prefix(id.partition_id, id.checkpoint_id)
            .child(format!("{:05}", id.node_id))
    }

    /// The path of a backup's manifest.
    pub fn manifest_path(&self, id: &BackupIdentifier) -> Path {
        self.backup_prefix(id).child(MANIFEST_FILE_NAME)
    }

    /// The path of a backed-up file; fails if `name` is not a valid file name.
    pub fn file_path(&self, id: &BackupIdentifier, kind: FileKind, name: &str) -> Result<Path> {
        validate_file_name(name)?;
        Ok(self.backup_prefix(id).child(kind.folder()).child(name))
    }

    /// Checks that the store answers a list request on the base prefix. The
    /// error says what failed (bucket missing, connection refused, access
    /// denied, …). For S3 this uses few retries so that it fails fast.
    pub async fn check_reachable(&self) -> Result<()> {
        match self.probe.list_with_delimiter(self.base_option()).await {
            Ok(_) => Ok(()),
            Err(source) => Err(BackupStoreError::Unreachable {
                store: self.description.to_string(),
                prefix: self.base_path().unwrap_or("/").to_string(),
                reason: error_chain(&source),
                source: Box::new(source),
            }),
        }
    }

    /// Writes (creates or replaces) the manifest of `manifest.id`, after
    /// checking its invariants (see [`Manifest::validate`]).
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.manifest_path(&manifest.id);
        manifest
            .validate()
            .map_err(|reason| BackupStoreError::InvalidManifest {
                path: path.to_string(),
                reason,
            })?;
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| BackupStoreError::InvalidManifest {
                path: path.to_string(),
                reason: format!("cannot serialize: {e}"),
            })?;
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| BackupStoreError::object_store("put", &path, e))?;
        debug!(%path, id = %manifest.id, status = %manifest.status, "wrote backup manifest");
        Ok(())
    }

    /// Reads the manifest of a backup; `None` if it does not exist.
    ///
    /// Fails with [`BackupStoreError::InvalidManifest`] (naming the object
    /// path) if it is not valid JSON, violates an invariant, or describes
    /// another backup than its location says.
    pub async fn read_manifest(&self, id: &BackupIdentifier) -> Result<Option<Manifest>> {
        let path = self.manifest_path(id);
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(BackupStoreError::object_store("get", &path, e)),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|e| BackupStoreError::object_store("get", &path, e))?;
        let invalid = |reason: String| BackupStoreError::InvalidManifest {
            path: path.to_string(),
            reason,
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not a valid manifest JSON document: {e}")))?;
        manifest.validate().map_err(invalid)?;
        if manifest.id != *id {
            return Err(invalid(format!(
                "the manifest describes another backup ({}) than its location ({id})",
                manifest.id
            )));
        }
        Ok(Some(manifest))
    }

    /// Uploads the first `length` bytes of `local_path` as file `name` of
    /// `kind` of backup `id`, streaming: the file is never loaded in memory.
    ///
    /// The file may be longer than `length` and may still grow (an
    /// append-only log segment): only the prefix is uploaded. Files of up to
    /// [`SINGLE_PUT_MAX_BYTES`] are uploaded with one `put`, larger ones with a
    /// multipart upload of [`MULTIPART_PART_BYTES`] parts, at most
    /// [`MAX_CONCURRENT_PARTS`] in flight; a failed multipart upload is
    /// aborted. With a `throttle`, reads are [`THROTTLED_READ_BYTES`] and each
    /// one waits for the throttle.
    pub async fn upload_file(
        &self,
        id: &BackupIdentifier,
        kind: FileKind,
        name: &str,
        local_path: &LocalPath,
        length: u64,
        throttle: Option<&Throttle>,
    ) -> Result<FileEntry> {
        let path = self.file_path(id, kind, name)?;
        let file = tokio::fs::File::open(local_path)
            .await
            .map_err(|e| BackupStoreError::io(local_path, e))?;
        let actual = file
            .metadata()
            .await
            .map_err(|e| BackupStoreError::io(local_path, e))?
            .len();
        if actual < length {
            return Err(BackupStoreError::ShortFile {
                path: local_path.to_path_buf(),
                expected: length,
                actual,
            });
        }
        let read_size = if throttle.is_some() {
            THROTTLED_READ_BYTES
        } else {
            MULTIPART_PART_BYTES
        };
        let mut reader = ChunkReader {
            file,
            local_path,
            length,
            read: 0,
            read_size,
            throttle,
            crc: 0,
        };

        if length <= SINGLE_PUT_MAX_BYTES {
            let mut payload = PutPayloadMut::new();
            while let Some(chunk) = reader.next_chunk().await? {
                payload.push(chunk);
            }
            self.store
                .put(&path, payload.freeze())
                .await
                .map_err(|e| BackupStoreError::object_store("put", &path, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| BackupStoreError::object_store("put_multipart", &path, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
            match feed_multipart(&mut reader, &mut writer, &path).await {
                Ok(()) => {
                    writer.finish().await.map_err(|e| {
                        BackupStoreError::object_store("complete_multipart", &path, e)
                    })?;
                }
                Err(error) => {
                    if let Err(abort_error) = writer.abort().await {
                        warn!(%path, error = %abort_error, "cannot abort multipart upload; parts may be left behind (an S3 lifecycle rule for incomplete multipart uploads cleans them up)");
                    }
                    return Err(error);
                }
            }
        }

        let entry = FileEntry {
            name: name.to_string(),
            kind,
            size_bytes: length,
            checksum: format_checksum(reader.crc),
        };
        debug!(%path, size = length, checksum = %entry.checksum, "uploaded backup file");
        Ok(entry)
    }

    /// Downloads a backed-up file to `destination` (created or truncated; its
    /// parent directories are created), streaming, verifying size and CRC32C,
    /// and fsyncing the file at the end.
    ///
    /// A size or checksum mismatch gives [`BackupStoreError::Corrupt`], a
    /// missing object [`BackupStoreError::MissingObject`]; on any error after
    /// the destination was created, it is removed.
    pub async fn download_file(
        &self,
        id: &BackupIdentifier,
        entry: &FileEntry,
        destination: &LocalPath,
    ) -> Result<()> {
        let path = self.file_path(id, entry.kind, &entry.name)?;
        let expected_crc =
            parse_checksum(&entry.checksum).ok_or_else(|| BackupStoreError::InvalidManifest {
                path: self.manifest_path(id).to_string(),
                reason: format!(
                    "invalid checksum: name={} checksum={:?} (expected crc32c:<8 lowercase hex digits>)",
                    entry.name, entry.checksum
                ),
            })?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupStoreError::MissingObject {
                    path: path.to_string(),
                })
            }
            Err(e) => return Err(BackupStoreError::object_store("get", &path, e)),
        };
        if let Some(parent) = destination.parent() {
            if !parent.as_os_str().is_empty() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| BackupStoreError::io(parent, e))?;
            }
        }
        let mut file = tokio::fs::File::create(destination)
            .await
            .map_err(|e| BackupStoreError::io(destination, e))?;

        let outcome = async {
            let mut stream = result.into_stream();
            let mut crc = 0u32;
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| match e {
                    object_store::Error::NotFound { .. } => BackupStoreError::MissingObject {
                        path: path.to_string(),
                    },
                    e => BackupStoreError::object_store("get", &path, e),
                })?;
                size += chunk.len() as u64;
                if size > entry.size_bytes {
                    return Err(BackupStoreError::Corrupt {
                        path: path.to_string(),
                        expected: format!("{} bytes", entry.size_bytes),
                        actual: format!("more than {} bytes", entry.size_bytes),
                    });
                }
                crc = crc32c::crc32c_append(crc, &chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| BackupStoreError::io(destination, e))?;
            }
            if size != entry.size_bytes {
                return Err(BackupStoreError::Corrupt {
                    path: path.to_string(),
                    expected: format!("{} bytes", entry.size_bytes),
                    actual: format!("{size} bytes"),
                });
            }
            if crc != expected_crc {
                return Err(BackupStoreError::Corrupt {
                    path: path.to_string(),
                    expected: entry.checksum.clone(),
                    actual: format_checksum(crc),
                });
            }
            file.flush()
                .await
                .map_err(|e| BackupStoreError::io(destination, e))?;
            file.sync_all()
                .await
                .map_err(|e| BackupStoreError::io(destination, e))?;
            Ok(())
        }
        .await;

        if let Err(error) = outcome {
            drop(file);
            if let Err(remove_error) = tokio::fs::remove_file(destination).await {
                if remove_error.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %destination.display(), error = %remove_error, "cannot remove partially downloaded file");
                }
            }
            return Err(error);
        }
        debug!(%path, destination = %destination.display(), size = entry.size_bytes, "downloaded backup file");
        Ok(())
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
    /// sorted by node id. Node folders without a manifest are skipped.
    pub async fn find_manifests(
        &self,
        partition_id: u32,
        checkpoint_id: u64,
    ) -> Result<Vec<Manifest>> {
        let ids = self.node_backups(partition_id, checkpoint_id).await?;
        self.read_manifests(ids).await
    }

    /// Every manifest of a partition, sorted by checkpoint id then node id.
    /// Listings and reads run with at most [`LIST_CONCURRENCY`] concurrent
    /// requests each.
    pub async fn list_manifests(&self, partition_id: u32) -> Result<Vec<Manifest>> {
        let checkpoints = self.list_checkpoints(partition_id).await?;
        let ids: Vec<Vec<BackupIdentifier>> = futures::stream::iter(checkpoints)
            .map(|checkpoint_id| self.node_backups(partition_id, checkpoint_id))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        self.read_manifests(ids.into_iter().flatten().collect())
            .await
    }

    /// Deletes a backup: its manifest first (so that a half-deleted backup is
    /// never seen as complete), then every other object under its prefix.
    /// Returns the number of objects deleted; deleting an absent backup
    /// returns 0.
    pub async fn delete_backup(&self, id: &BackupIdentifier) -> Result<usize> {
        let manifest_path = self.manifest_path(id);
        let mut deleted = 0;
        let manifest_exists = match self.store.head(&manifest_path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(BackupStoreError::object_store("head", &manifest_path, e)),
        };
        match self.store.delete(&manifest_path).await {
            Ok(()) => {
                if manifest_exists {
                    deleted += 1;
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(BackupStoreError::object_store("delete", &manifest_path, e)),
        }

        let prefix = self.backup_prefix(id);
        let locations: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| BackupStoreError::object_store("list", &prefix, e))?;
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
        debug!(%prefix, deleted, "deleted backup");
        Ok(deleted)
    }

    fn base_option(&self) -> Option<&Path> {
        self.base_path().map(|_| &self.base)
    }

    /// The numeric names of the folders directly under `prefix`.
    async fn child_ids<T: FromStr>(&self, prefix: &Path) -> Result<Vec<T>> {
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

    async fn read_manifests(&self, ids: Vec<BackupIdentifier>) -> Result<Vec<Manifest>> {
        let manifests: Vec<Option<Manifest>> = futures::stream::iter(ids)
            .map(|id| async move { self.read_manifest(&id).await })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut manifests: Vec<Manifest> = manifests.into_iter().flatten().collect();
        manifests.sort_by_key(|m| m.id);
        Ok(manifests)
    }
}

/// Reads the prefix of a local file chunk by chunk, computing its CRC32C.
struct ChunkReader<'a> {
    file: tokio::fs::File,
    local_path: &'a LocalPath,
    length: u64,
    read: u64,
    read_size: usize,
    throttle: Option<&'a Throttle>,
    crc: u32,
}

impl ChunkReader<'_> {
    /// The next chunk of at most `read_size` bytes, `None` once `length`
    /// bytes were read.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let remaining = self.length - self.read;
        if remaining == 0 {
            return Ok(None);
        }
        let size = remaining.min(self.read_size as u64) as usize;
        if let Some(throttle) = self.throttle {
            throttle.acquire(size as u64).await;
        }
        let mut buffer = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            let n = self
                .file
                .read(&mut buffer[filled..])
                .await
                .map_err(|e| BackupStoreError::io(self.local_path, e))?;
            if n == 0 {
                // The file shrank after we checked its size.
                return Err(BackupStoreError::ShortFile {
                    path: self.local_path.to_path_buf(),
                    expected: self.length,
                    actual: self.read + filled as u64,
                });
            }
            filled += n;
        }
        self.read += size as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buffer);
        Ok(Some(Bytes::from(buffer)))
    }
}

/// Feeds all chunks into a multipart upload and waits for every full part, so
/// that a failure can still be handled by aborting the upload.
async fn feed_multipart(
    reader: &mut ChunkReader<'_>,
    writer: &mut WriteMultipart,
    path: &Path,
) -> Result<()> {
    while let Some(chunk) = reader.next_chunk().await? {
        writer
            .wait_for_capacity(MAX_CONCURRENT_PARTS)
            .await
            .map_err(|e| BackupStoreError::object_store("put_part", path, e))?;
        writer.put(chunk);
    }
    writer
        .wait_for_capacity(0)
        .await
        .map_err(|e| BackupStoreError::object_store("put_part", path, e))
}

/// Parses a zero-padded id folder name; only ASCII digits are accepted.
fn parse_padded_id<T: FromStr>(name: &str) -> Option<T> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

fn parse_base_path(base_path: Option<&str>) -> Result<Path> {
    let Some(base_path) = base_path.map(|b| b.trim().trim_matches('/')) else {
        return Ok(Path::default());
    };
    if base_path.is_empty() {
        return Ok(Path::default());
    }
    Path::parse(base_path).map_err(|e| BackupStoreError::Config {
        reason: format!(
            "invalid base path: base_path={base_path:?} error={e}; use `/`-separated segments without `.`, `..` or empty segments"
        ),
    })
}

fn check_endpoint(endpoint: &str) -> Result<(&str, &str)> {
    endpoint
        .split_once("://")
        .filter(|(scheme, rest)| {
            (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                && !rest.is_empty()
        })
        .ok_or_else(|| BackupStoreError::Config {
            reason: format!(
                "invalid S3 endpoint: endpoint={endpoint:?}; it must start with http:// or https://"
            ),
        })
}

/// object_store uses a custom endpoint as-is for virtual-hosted style
/// requests, so the bucket must be part of its host.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Result<String> {
    let (scheme, rest) = check_endpoint(endpoint)?;
    if rest.starts_with(&format!("{bucket}.")) {
        Ok(endpoint.to_string())
    } else {
        Ok(format!("{scheme}://{bucket}.{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoint_prepends_bucket_once() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com", "b").unwrap(),
            "https://b.s3.example.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://b.s3.example.com", "b").unwrap(),
            "https://b.s3.example.com"
        );
        assert!(virtual_hosted_endpoint("s3.example.com", "b").is_err());
    }

    #[test]
    fn padded_ids_parse_only_digits() {
        assert_eq!(parse_padded_id::<u64>("00000000000000000042"), Some(42));
        assert_eq!(parse_padded_id::<u64>("+42"), None);
        assert_eq!(parse_padded_id::<u64>("nested"), None);
        assert_eq!(parse_padded_id::<u32>(""), None);
    }

    #[test]
    fn base_path_is_normalized_and_validated() {
        assert_eq!(parse_base_path(None).unwrap(), Path::default());
        assert_eq!(parse_base_path(Some(" / ")).unwrap(), Path::default());
        assert_eq!(parse_base_path(Some("/a/b/")).unwrap().as_ref(), "a/b");
        assert!(parse_base_path(Some("a//b")).is_err());
        assert!(parse_base_path(Some("a/../b")).is_err());
    }
}
