//! [`BackupStore`]: the in-bucket layout, manifests, streaming uploads and
//! verified downloads on top of `object_store`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path as LocalPath, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::backend::{self, Hints, LocalFiles};
use crate::buffers::{PartBuffer, UploadBuffers};
use crate::codec::{Compressor, Decompressor};
use crate::error::error_chain;
use crate::manifest::{
    format_checksum, parse_checksum, validate_file_name, BackupIdentifier, BackupStatus, FileEntry,
    FileKind, Manifest, MANIFEST_SIZE_BYTES_MAX, ZSTD_COMPRESSION,
};
use crate::{BackupStoreError, Throttle};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The name of the manifest object in a backup folder.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";

/// Uploads that end up at most this size are done with a single `put`;
/// larger ones with a multipart upload. What fits in one part buffer.
pub const SINGLE_PUT_MAX_BYTES: u64 = MULTIPART_PART_BYTES as u64;

/// The part size of multipart uploads.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// The maximum number of parts of one multipart upload in flight at once.
pub const MAX_CONCURRENT_PARTS: usize = 4;

/// The read size when uploads are throttled or compressed, for smooth
/// progress at low rates and bounded compression steps.
pub const THROTTLED_READ_BYTES: usize = 1024 * 1024;

/// Downloads fetch objects in ranges of this size, each one request (so that
/// each is bounded by the per-request timeout, whatever the object's size).
pub const DOWNLOAD_RANGE_BYTES: u64 = 8 * 1024 * 1024;

/// The maximum number of ranges of one download in flight at once.
pub const MAX_CONCURRENT_RANGES: usize = 4;

/// The maximum number of concurrent requests of listing operations.
pub const LIST_CONCURRENCY: usize = 16;

/// The default memory budget of all uploads of a store together
/// ([`BackupStoreOptions::upload_memory_limit_bytes`]): 8 part buffers.
pub const DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The default time limit of one request to a remote store.
pub const DEFAULT_API_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default number of requests in flight at once per [`BackupStore`].
pub const DEFAULT_MAX_CONCURRENT_CONNECTIONS: usize = 32;

/// The maximum number of retries of one request to a remote store.
pub const MAX_RETRIES: usize = 8;

/// No request to a remote store is retried once this long has passed since
/// its first attempt.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(120);

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

/// How backup files are compressed before upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as they are.
    #[default]
    None,
    /// zstd, streaming, one frame per file (see the `codec` module docs).
    Zstd,
}

impl Compression {
    /// The value recorded in [`FileEntry::compression`].
    pub fn manifest_name(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Zstd => Some(ZSTD_COMPRESSION),
        }
    }
}

/// How to open a [`BackupStore`].
///
/// Build one with [`BackupStoreOptions::new`] (or struct update syntax from
/// [`BackupStoreOptions::default`]) to get the defaults of the tuning fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStoreOptions {
    /// Which object store to use.
    pub kind: StoreKind,
    /// An optional prefix inside the store (e.g. `cluster-a/backups`) under
    /// which all backups live. Leading and trailing `/` are ignored.
    pub base_path: Option<String>,
    /// The time limit of one request (each retry has its own); remote stores
    /// only. Default [`DEFAULT_API_CALL_TIMEOUT`].
    pub api_call_timeout: Duration,
    /// The maximum number of requests in flight at once, shared by every
    /// clone of the store (so by every partition of a broker). Default
    /// [`DEFAULT_MAX_CONCURRENT_CONNECTIONS`].
    pub max_concurrent_connections: usize,
    /// How uploaded files are compressed. Default [`Compression::None`].
    /// Downloads follow what each file's manifest entry says.
    pub compression: Compression,
    /// The memory for upload buffers, shared by every clone of the store:
    /// `upload_memory_limit_bytes / MULTIPART_PART_BYTES` part buffers (at
    /// least one). Default [`DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES`]. See
    /// [`BackupStore::upload_file`].
    pub upload_memory_limit_bytes: u64,
}

impl BackupStoreOptions {
    /// Options for `kind` below `base_path`, with the default tuning.
    pub fn new(kind: StoreKind, base_path: Option<String>) -> Self {
        Self {
            kind,
            base_path,
            api_call_timeout: DEFAULT_API_CALL_TIMEOUT,
            max_concurrent_connections: DEFAULT_MAX_CONCURRENT_CONNECTIONS,
            compression: Compression::None,
            upload_memory_limit_bytes: DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES,
        }
    }
}

impl Default for BackupStoreOptions {
    /// An in-memory store with the default tuning.
    fn default() -> Self {
        Self::new(StoreKind::InMemory, None)
    }
}

/// The kind of object store backing a [`BackupStore`].
///
/// `Debug` redacts every secret (S3 secret key, Azure key and SAS token).
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
    /// Google Cloud Storage.
    Gcs {
        /// The bucket; must exist.
        bucket: String,
        /// The URL of the GCS API, for emulators (e.g. `http://127.0.0.1:4443`);
        /// `None` means Google's. Without `credentials`, requests to it carry
        /// no OAuth token.
        host: Option<String>,
        /// A service-account JSON key file; when absent the application
        /// default credentials are used (`GOOGLE_*` variables,
        /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, the metadata server).
        credentials: Option<PathBuf>,
    },
    /// Azure Blob Storage.
    Azure {
        /// The storage account.
        account: String,
        /// The container; must exist.
        container: String,
        /// The account access key; exclusive with `sas_token`. When both are
        /// absent the Azure credential chain is used (`AZURE_*` variables,
        /// workload identity, managed identity).
        access_key: Option<String>,
        /// A shared access signature (query string, `?` optional).
        sas_token: Option<String>,
        /// The blob service URL, e.g. Azurite's
        /// `http://127.0.0.1:10000/devstoreaccount1`; `None` means
        /// `https://<account>.blob.core.windows.net`. Plain HTTP is allowed
        /// when it starts with `http://`.
        endpoint: Option<String>,
    },
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
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
                .field("secret_key", &redacted(secret_key))
                .field("force_path_style", force_path_style)
                .field("allow_http", allow_http)
                .finish(),
            Self::Gcs {
                bucket,
                host,
                credentials,
            } => f
                .debug_struct("Gcs")
                .field("bucket", bucket)
                .field("host", host)
                .field("credentials", credentials)
                .finish(),
            Self::Azure {
                account,
                container,
                access_key,
                sas_token,
                endpoint,
            } => f
                .debug_struct("Azure")
                .field("account", account)
                .field("container", container)
                .field("access_key", &redacted(access_key))
                .field("sas_token", &redacted(sas_token))
                .field("endpoint", endpoint)
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
/// Deletion first marks the manifest `FAILED`, then deletes the data, and
/// the manifest last (see [`BackupStore::delete_backup`]): a half-deleted
/// backup is never seen as complete, and stays listed until it is gone.
///
/// # One writer per backup: conditional manifest writes
///
/// See [`BackupStore::write_manifest`]: the first manifest of a backup is
/// created only if none exists, and later ones replace only the version this
/// store wrote or read, so two writers of the same backup id (e.g. two brokers
/// started with the same node id) cannot both win.
///
/// # Requests
///
/// Every clone shares one limit of requests in flight
/// ([`BackupStoreOptions::max_concurrent_connections`], an
/// `object_store::limit::LimitStore`), so all partitions of a broker share it.
/// Remote stores time out each request after
/// [`BackupStoreOptions::api_call_timeout`] and retry failed ones with
/// randomized exponential backoff, at most [`MAX_RETRIES`] times and not after
/// [`RETRY_TIMEOUT`].
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    /// The same store with few retries, for fast reachability checks.
    probe: Arc<dyn ObjectStore>,
    base: Path,
    description: Arc<str>,
    hints: Arc<Hints>,
    compression: Compression,
    /// The part buffers of every upload (the memory bound of uploads).
    pub(crate) buffers: Arc<UploadBuffers>,
    /// The store may keep the very bytes it is given after the request (the
    /// in-memory store does, and a wrapped store might): uploads then send
    /// copies, so that a stored object never pins a buffer of the pool.
    pub(crate) copies_payloads: bool,
    /// The file system store's objects as files, synced after every write.
    local: Option<Arc<LocalFiles>>,
    /// The version of each `IN_PROGRESS` manifest this store wrote or read,
    /// by manifest path (see [`BackupStore::write_manifest`]).
    versions: Arc<Mutex<HashMap<Path, UpdateVersion>>>,
}

impl fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupStore")
            .field("store", &self.description)
            .field("base_path", &self.base_path())
            .field("compression", &self.compression)
            .field("upload_buffers", &self.buffers.count())
            .finish()
    }
}

impl BackupStore {
    /// Opens the store described by `options`. No request is made; use
    /// [`Self::check_reachable`].
    ///
    /// - `Filesystem`: the root directory is created if missing.
    /// - `S3`: settings from the environment (`AWS_*`, including the credential
    ///   chain) are read first; explicit options override them. Without
    ///   `force_path_style`, requests are virtual-hosted style; a custom endpoint
    ///   then gets the bucket prepended to its host unless it already starts
    ///   with `<bucket>.`. Conditional puts use `If-None-Match`/`If-Match`.
    /// - `Gcs`: without `host` and `credentials`, the environment (`GOOGLE_*`)
    ///   and the application default credentials; with either, only the
    ///   explicit settings.
    /// - `Azure`: without a key or SAS token, the environment (`AZURE_*`) and
    ///   the Azure credential chain; with either, only the explicit settings.
    pub fn open(options: BackupStoreOptions) -> Result<Self> {
        let base = parse_base_path(options.base_path.as_deref())?;
        let backend = backend::build(&options)?;
        Ok(Self {
            store: backend.store,
            probe: backend.probe,
            base,
            description: backend.description.into(),
            hints: Arc::new(backend.hints),
            compression: options.compression,
            buffers: UploadBuffers::new(options.upload_memory_limit_bytes, MULTIPART_PART_BYTES),
            copies_payloads: matches!(options.kind, StoreKind::InMemory),
            local: backend.local.map(Arc::new),
            versions: Arc::default(),
        })
    }

    /// Wraps an existing object store (tests, fault-injection wrappers),
    /// without compression and without a request limit of its own, with the
    /// default upload memory ([`DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES`]). As the
    /// store may keep the bytes it is given, uploads send copies of their
    /// buffers.
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
            hints: Arc::new(Hints {
                missing: "the store location does not exist".to_string(),
                connect: "the store cannot be reached".to_string(),
                credentials: "access to the store was denied".to_string(),
            }),
            compression: Compression::None,
            buffers: UploadBuffers::new(DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES, MULTIPART_PART_BYTES),
            copies_payloads: true,
            local: None,
            versions: Arc::default(),
        }
    }

    /// This store, compressing the files it uploads from now on as given
    /// (downloads always follow the manifest entry).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How uploaded files are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The memory all uploads of this store (and its clones) may hold at
    /// once: the number of part buffers times their size.
    pub fn upload_memory_limit_bytes(&self) -> u64 {
        (self.buffers.count() * self.buffers.buffer_bytes()) as u64
    }

    /// A description of the store without credentials, e.g. `S3(bucket=… endpoint=…)`.
    pub fn description(&self) -> &str {
        &self.description
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
    /// error ([`BackupStoreError::Unreachable`]) starts with what is most
    /// likely wrong and the setting to fix: a bucket or container that does
    /// not exist (naming it), an endpoint that refuses connections (naming
    /// it), or credentials that are missing or denied. For remote stores this
    /// uses few retries so that it fails fast.
    pub async fn check_reachable(&self) -> Result<()> {
        match self.probe.list_with_delimiter(self.base_option()).await {
            Ok(_) => Ok(()),
            Err(source) => Err(BackupStoreError::Unreachable {
                hint: self.hints.for_error(&source),
                store: self.description.to_string(),
                prefix: self.base_path().unwrap_or("/").to_string(),
                reason: error_chain(&source),
                source: Box::new(source),
            }),
        }
    }

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
                reason,
            })?;
        let json: Bytes = manifest
            .to_stored_json()
            .map_err(|reason| BackupStoreError::InvalidManifest {
                path: path.to_string(),
                reason,
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
                return self.settle_manifest(path, manifest, false).await
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
            ) => self.settle_manifest(path, manifest, false).await,
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
        match self.settle_manifest(path, manifest, true).await {
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
                    self.settle_manifest(path, manifest, true).await
                }
            }
            other => other,
        }
    }

    /// The stored manifest (`None` inside if unreadable) and its version;
    /// `None` if absent.
    async fn stored_manifest(
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
    ) -> Result<Option<(Result<Vec<u8>, String>, ObjectMeta)>> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(BackupStoreError::object_store("get", path, e)),
        };
        let meta = result.meta.clone();
        let too_large = |size: &dyn fmt::Display| {
            format!("the manifest object is {size} bytes, more than the limit of {MANIFEST_SIZE_BYTES_MAX} bytes; it is not a manifest Sluice wrote")
        };
        if meta.size > MANIFEST_SIZE_BYTES_MAX {
            return Ok(Some((Err(too_large(&meta.size)), meta)));
        }
        // The stream is capped as well: a store may send more than it announced.
        let mut stream = result.into_stream();
        let mut bytes = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BackupStoreError::object_store("get", path, e))?;
            if (bytes.len() + chunk.len()) as u64 > MANIFEST_SIZE_BYTES_MAX {
                let read = format!("at least {}", bytes.len() + chunk.len());
                return Ok(Some((Err(too_large(&read)), meta)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((Ok(bytes), meta)))
    }

    async fn put_unconditionally(&self, path: &Path, json: Bytes) -> Result<UpdateVersion> {
        self.store
            .put(path, PutPayload::from(json))
            .await
            .map(UpdateVersion::from)
            .map_err(|e| BackupStoreError::object_store("put", path, e))
    }

    /// After a conditional write was refused: succeeds if the stored manifest
    /// is exactly `manifest` (an earlier attempt of this write landed), fails
    /// with `BackupExists` (`creating`) or `Conflict` otherwise.
    async fn settle_manifest(
        &self,
        path: &Path,
        manifest: &Manifest,
        creating: bool,
    ) -> Result<UpdateVersion> {
        let stored = self.stored_manifest(path).await?;
        let status = match &stored {
            Some((Some(stored), version)) if stored == manifest => return Ok(version.clone()),
            Some((Some(stored), _)) => stored.status.to_string(),
            Some((None, _)) => "unreadable".to_string(),
            None => "absent".to_string(),
        };
        if creating && stored.is_some() {
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

    /// The metadata of an object, `None` if it does not exist.
    /// Makes the object at `path` durable where the store does not do so by
    /// itself (the file system store: fsync of the file and its directories);
    /// remote stores acknowledge a write once it is durable.
    async fn make_durable(&self, path: &Path) -> Result<()> {
        match &self.local {
            Some(local) => local.sync(path).await,
            None => Ok(()),
        }
    }

    async fn head_optional(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BackupStoreError::object_store("head", path, e)),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<Path, UpdateVersion>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tracked_version(&self, path: &Path) -> Option<UpdateVersion> {
        self.versions().get(path).cloned()
    }

    fn track_version(&self, path: &Path, version: UpdateVersion) {
        self.versions().insert(path.clone(), version);
    }

    fn forget_version(&self, path: &Path) {
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
        let manifest = Manifest::from_stored_json(&bytes.map_err(invalid)?).map_err(invalid)?;
        manifest.validate().map_err(invalid)?;
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

    /// Uploads the first `length` bytes of `local_path` as file `name` of
    /// `kind` of backup `id`, streaming: the file is never loaded in memory.
    ///
    /// The file may be longer than `length` and may still grow (an
    /// append-only log segment): only the prefix is uploaded. With
    /// [`Compression::Zstd`] the bytes are compressed while they stream (one
    /// zstd frame; see the `codec` module for why in blocking tasks). What is
    /// sent goes with one `put` while it totals at most
    /// [`SINGLE_PUT_MAX_BYTES`], else as a multipart upload of
    /// [`MULTIPART_PART_BYTES`] parts, at most [`MAX_CONCURRENT_PARTS`] in
    /// flight; a failed multipart upload is aborted. With a `throttle`, every
    /// piece sent waits for it (so the rate limits bytes sent, compressed or
    /// not).
    ///
    /// Memory: every byte to send waits in a part buffer of the store's one
    /// pool ([`BackupStoreOptions::upload_memory_limit_bytes`]), taken before
    /// the file is read into it and given back when the request that sent it
    /// is over. So all uploads of a store together hold at most that much,
    /// whatever the size and number of files; compression adds one read chunk
    /// ([`THROTTLED_READ_BYTES`]) and the zstd context per upload.
    ///
    /// Afterwards the object's size in the store is compared with what was
    /// sent: a store that kept less (or more) gives [`BackupStoreError::Corrupt`].
    /// The entry's `size_bytes` and `checksum` (CRC32C) are those of the
    /// original bytes; `stored_bytes` is the object's size.
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
        let compression = self.compression;
        let read_size = if throttle.is_some() || compression != Compression::None {
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
            crc: 0,
        };
        let compression_error = |e: std::io::Error| BackupStoreError::Compression {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let mut upload = Upload {
            store: &self.store,
            path: &path,
            throttle,
            buffers: &self.buffers,
            copies_payloads: self.copies_payloads,
            filling: None,
            multipart: None,
            sent: 0,
        };
        let streamed = async {
            match compression {
                // Straight from the file into part buffers: no copy.
                Compression::None => {
                    while reader.remaining() > 0 {
                        let buffer = upload.buffer().await?;
                        let n = reader.next_read_len().min(buffer.spare());
                        reader.read_exact(buffer.spare_mut(n)).await?;
                        buffer.commit(n);
                        upload.account(n).await;
                    }
                }
                Compression::Zstd => {
                    let mut compressor = Compressor::new(length).map_err(compression_error)?;
                    while let Some(chunk) = reader.next_chunk().await? {
                        let pieces = compressor
                            .compress(chunk)
                            .await
                            .map_err(compression_error)?;
                        for piece in pieces {
                            upload.write(&piece).await?;
                        }
                    }
                    for piece in compressor.finish().await.map_err(compression_error)? {
                        upload.write(&piece).await?;
                    }
                }
            }
            Ok::<_, BackupStoreError>(())
        }
        .await;
        if let Err(error) = streamed {
            upload.abort().await;
            return Err(error);
        }
        let stored_bytes = upload.finish().await?;

        // A store that truncates (or pads) what it was given is caught here,
        // not at restore time.
        match self.head_optional(&path).await? {
            Some(meta) if meta.size == stored_bytes => {}
            Some(meta) => {
                return Err(BackupStoreError::Corrupt {
                    path: path.to_string(),
                    expected: format!("{stored_bytes} bytes uploaded"),
                    actual: format!(
                        "{} bytes stored (the store did not keep the upload as sent)",
                        meta.size
                    ),
                })
            }
            None => {
                return Err(BackupStoreError::MissingObject {
                    path: path.to_string(),
                })
            }
        }

        // Before the manifest that lists it can say COMPLETED.
        self.make_durable(&path).await?;

        let entry = FileEntry {
            name: name.to_string(),
            kind,
            size_bytes: length,
            checksum: format_checksum(reader.crc),
            compression: compression.manifest_name().map(str::to_string),
            stored_bytes,
        };
        debug!(%path, size = length, stored = stored_bytes, checksum = %entry.checksum, "uploaded backup file");
        Ok(entry)
    }

    /// Downloads a backed-up file to `destination`, which must not exist (it
    /// is created new, never truncated; its missing parent directories are
    /// created), streaming, and fsyncs it at the end.
    ///
    /// The object's size must be the entry's `stored_bytes`; it is fetched in
    /// ranges of [`DOWNLOAD_RANGE_BYTES`] (at most [`MAX_CONCURRENT_RANGES`] in
    /// flight, each one request bounded by the request timeout, all pinned to
    /// the object version seen first), decompressed while streaming when the
    /// entry says so, and the result must have the entry's `size_bytes` and
    /// CRC32C. Decompression stops as soon as the output exceeds `size_bytes`.
    ///
    /// A size, checksum or decompression mismatch gives
    /// [`BackupStoreError::Corrupt`], a missing object
    /// [`BackupStoreError::MissingObject`], an existing destination
    /// [`BackupStoreError::Io`] (`AlreadyExists`, left untouched); on any
    /// error after this call created the destination, it is removed.
    pub async fn download_file(
        &self,
        id: &BackupIdentifier,
        entry: &FileEntry,
        destination: &LocalPath,
    ) -> Result<()> {
        let path = self.file_path(id, entry.kind, &entry.name)?;
        let invalid_entry = |reason: String| BackupStoreError::InvalidManifest {
            path: self.manifest_path(id).to_string(),
            reason,
        };
        let expected_crc = parse_checksum(&entry.checksum).ok_or_else(|| {
            invalid_entry(format!(
                "invalid checksum: name={} checksum={:?} (expected crc32c:<8 lowercase hex digits>)",
                entry.name, entry.checksum
            ))
        })?;
        let compressed = match entry.compression.as_deref() {
            None => false,
            Some(ZSTD_COMPRESSION) => true,
            Some(other) => {
                return Err(invalid_entry(format!(
                    "unsupported compression={other:?} of file name={}",
                    entry.name
                )))
            }
        };
        let meta = match self.head_optional(&path).await? {
            Some(meta) => meta,
            None => {
                return Err(BackupStoreError::MissingObject {
                    path: path.to_string(),
                })
            }
        };
        if meta.size != entry.stored_bytes {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{} bytes in the store", entry.stored_bytes),
                actual: format!("{} bytes", meta.size),
            });
        }
        if let Some(parent) = destination.parent() {
            if !parent.as_os_str().is_empty() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| BackupStoreError::io(parent, e))?;
            }
        }
        // Created new, never opened over an existing file: a download must not
        // truncate (nor, on failure, remove) anything it did not create.
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(destination)
            .await
            .map_err(|e| BackupStoreError::io(destination, e))?;
        let mut output = VerifiedFile {
            file,
            destination,
            path: &path,
            expected_size: entry.size_bytes,
            size: 0,
            crc: 0,
        };

        let outcome = async {
            let corrupt_stream = |e: std::io::Error| BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: "a zstd-compressed object".to_string(),
                actual: format!("undecodable data ({e})"),
            };
            let mut decompressor = if compressed {
                Some(
                    Decompressor::new().map_err(|e| BackupStoreError::Compression {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?,
                )
            } else {
                None
            };
            let size = meta.size;
            let ranges = (0..size)
                .step_by(DOWNLOAD_RANGE_BYTES as usize)
                .map(|start| start..(start + DOWNLOAD_RANGE_BYTES).min(size));
            let mut chunks = futures::stream::iter(ranges)
                .map(|range| self.get_range(&path, range, meta.e_tag.clone()))
                .buffered(MAX_CONCURRENT_RANGES);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                match decompressor.as_mut() {
                    None => output.write(&chunk).await?,
                    Some(decompressor) => {
                        let mut start = 0;
                        loop {
                            let decoded = decompressor
                                .step(chunk.clone(), start)
                                .await
                                .map_err(corrupt_stream)?;
                            for piece in &decoded.pieces {
                                output.write(piece).await?;
                            }
                            start = decoded.consumed;
                            if !decoded.more {
                                break;
                            }
                        }
                    }
                }
            }
            if decompressor.is_some_and(|d| !d.frame_complete()) {
                return Err(BackupStoreError::Corrupt {
                    path: path.to_string(),
                    expected: "a complete zstd frame".to_string(),
                    actual: "the compressed data ends inside the frame".to_string(),
                });
            }
            output.finish(&entry.checksum, expected_crc).await
        }
        .await;

        if let Err(error) = outcome {
            drop(output);
            if let Err(remove_error) = tokio::fs::remove_file(destination).await {
                if remove_error.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %destination.display(), error = %remove_error, "cannot remove partially downloaded file");
                }
            }
            return Err(error);
        }
        debug!(%path, destination = %destination.display(), size = entry.size_bytes, stored = entry.stored_bytes, "downloaded backup file");
        Ok(())
    }

    /// One range of an object, which must not have changed since `e_tag`.
    async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
        e_tag: Option<String>,
    ) -> Result<Bytes> {
        let expected = range.end - range.start;
        let start = range.start;
        let options = GetOptions {
            if_match: e_tag,
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let error = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => BackupStoreError::MissingObject {
                path: path.to_string(),
            },
            object_store::Error::Precondition { .. } => BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: "an object that does not change".to_string(),
                actual: "the object was replaced during the download".to_string(),
            },
            e => BackupStoreError::object_store("get", path, e),
        };
        let bytes = self
            .store
            .get_opts(path, options)
            .await
            .map_err(error)?
            .bytes()
            .await
            .map_err(error)?;
        if bytes.len() as u64 != expected {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{expected} bytes at offset {start}"),
                actual: format!("{} bytes", bytes.len()),
            });
        }
        Ok(bytes)
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

/// Reads the prefix of a local file chunk by chunk, computing its CRC32C.
struct ChunkReader<'a> {
    file: tokio::fs::File,
    local_path: &'a LocalPath,
    length: u64,
    read: u64,
    read_size: usize,
    crc: u32,
}

impl ChunkReader<'_> {
    /// The number of bytes still to read.
    fn remaining(&self) -> u64 {
        self.length - self.read
    }

    /// The size of the next read: `read_size`, or what remains if less.
    fn next_read_len(&self) -> usize {
        self.remaining().min(self.read_size as u64) as usize
    }

    /// Fills all of `target` (at most what remains) from the file.
    async fn read_exact(&mut self, target: &mut [u8]) -> Result<()> {
        assert!(
            target.len() as u64 <= self.remaining(),
            "read beyond the uploaded prefix: len={} remaining={}",
            target.len(),
            self.remaining()
        );
        let mut filled = 0;
        while filled < target.len() {
            let n = self
                .file
                .read(&mut target[filled..])
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
        self.read += target.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, target);
        Ok(())
    }

    /// The next chunk of at most `read_size` bytes, `None` once `length`
    /// bytes were read.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining() == 0 {
            return Ok(None);
        }
        let mut buffer = vec![0u8; self.next_read_len()];
        self.read_exact(&mut buffer).await?;
        Ok(Some(Bytes::from(buffer)))
    }
}

/// A multipart upload and its parts in flight, each a task of its own: a
/// part progresses (and gives its buffer back) while its upload waits for
/// anything, including a buffer held by another upload.
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

impl Multipart {
    /// Waits until at most `limit` parts are in flight; the first failed
    /// part is the error.
    async fn settle(&mut self, limit: usize, path: &Path) -> Result<()> {
        while self.parts.len() > limit {
            let Some(joined) = self.parts.join_next().await else {
                break;
            };
            joined
                .unwrap_or_else(|source| Err(object_store::Error::JoinError { source }))
                .map_err(|e| BackupStoreError::object_store("put_part", path, e))?;
        }
        Ok(())
    }
}

/// One streaming upload of bytes whose total is not known in advance, in
/// part buffers of the store's [`UploadBuffers`]: sent with one `put` if it
/// fits in one buffer, else as a multipart upload of full buffers (the last
/// part may be shorter), at most [`MAX_CONCURRENT_PARTS`] in flight.
struct Upload<'a> {
    store: &'a Arc<dyn ObjectStore>,
    path: &'a Path,
    throttle: Option<&'a Throttle>,
    buffers: &'a Arc<UploadBuffers>,
    /// See [`BackupStore::copies_payloads`].
    copies_payloads: bool,
    /// The buffer being filled; sent once full and more bytes come (so an
    /// upload of exactly one buffer is still a single `put`).
    filling: Option<PartBuffer>,
    /// Started by the first full buffer that is followed by more bytes.
    multipart: Option<Multipart>,
    sent: u64,
}

impl Upload<'_> {
    /// What is sent of a buffer: its bytes without a copy (the buffer goes
    /// back to the pool when the request is over), or a copy.
    fn payload(&self, buffer: PartBuffer) -> PutPayload {
        if self.copies_payloads {
            PutPayload::from(Bytes::copy_from_slice(buffer.as_ref()))
        } else {
            PutPayload::from(buffer.freeze())
        }
    }

    /// Waits for the throttle, then counts `len` bytes as sent.
    async fn account(&mut self, len: usize) {
        if let Some(throttle) = self.throttle {
            throttle.acquire(len as u64).await;
        }
        self.sent += len as u64;
    }

    /// The buffer to fill, with room for at least one byte: the one being
    /// filled, or a new one once that is full (the full one is sent first).
    async fn buffer(&mut self) -> Result<&mut PartBuffer> {
        if let Some(full) = self.filling.take_if(|buffer| buffer.is_full()) {
            self.send_part(full).await?;
        }
        if self.filling.is_none() {
            self.filling = Some(self.buffers.take().await);
        }
        Ok(self.filling.as_mut().expect("set above"))
    }

    /// Copies `bytes` into part buffers (after waiting for the throttle).
    async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.account(bytes.len()).await;
        while !bytes.is_empty() {
            let copied = self.buffer().await?.extend(bytes);
            bytes = &bytes[copied..];
        }
        Ok(())
    }

    /// Sends `part` as the next part of the multipart upload (started if
    /// needed) once fewer than [`MAX_CONCURRENT_PARTS`] are in flight.
    async fn send_part(&mut self, part: PartBuffer) -> Result<()> {
        let multipart = match &mut self.multipart {
            Some(multipart) => multipart,
            None => {
                let upload =
                    self.store.put_multipart(self.path).await.map_err(|e| {
                        BackupStoreError::object_store("put_multipart", self.path, e)
                    })?;
                self.multipart.insert(Multipart {
                    upload,
                    parts: JoinSet::new(),
                })
            }
        };
        multipart
            .settle(MAX_CONCURRENT_PARTS - 1, self.path)
            .await?;
        let payload = self.payload(part);
        let multipart = self.multipart.as_mut().expect("started above");
        let sending = multipart.upload.put_part(payload);
        multipart.parts.spawn(sending);
        Ok(())
    }

    /// Completes the upload; returns the number of bytes sent. A failed
    /// multipart upload is aborted.
    async fn finish(mut self) -> Result<u64> {
        let last = self.filling.take();
        if self.multipart.is_none() {
            let payload = last.map(|buffer| self.payload(buffer)).unwrap_or_default();
            self.store
                .put(self.path, payload)
                .await
                .map_err(|e| BackupStoreError::object_store("put", self.path, e))?;
            return Ok(self.sent);
        }
        let completed = async {
            if let Some(last) = last.filter(|buffer| !buffer.is_empty()) {
                self.send_part(last).await?;
            }
            let multipart = self.multipart.as_mut().expect("checked above");
            // Every part first, so that a failure can still abort.
            multipart.settle(0, self.path).await?;
            multipart
                .upload
                .complete()
                .await
                .map_err(|e| BackupStoreError::object_store("complete_multipart", self.path, e))
        }
        .await;
        match completed {
            Ok(_) => {
                // Completed: nothing to abort when this upload is dropped.
                self.multipart = None;
                Ok(self.sent)
            }
            Err(error) => {
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Abandons the upload: stops the parts in flight (their buffers go back
    /// to the pool) and aborts a multipart upload.
    async fn abort(mut self) {
        self.filling = None;
        if let Some(multipart) = self.multipart.take() {
            abort_multipart(multipart, self.path.clone()).await;
        }
    }
}

/// Every way an upload can be abandoned without [`Upload::abort`] (a
/// deadline, a sibling upload's failure, a cancelled backup: the future is
/// dropped) still aborts its multipart upload, so no parts are orphaned in
/// the store. Drop cannot wait, so the abort runs as a task of its own.
impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let path = self.path.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort_multipart(multipart, path));
            }
            Err(_) => {
                warn!(%path, "multipart upload dropped outside a runtime: not aborted; parts may be left behind (an S3 lifecycle rule for incomplete multipart uploads cleans them up)")
            }
        }
    }
}

/// Stops the parts in flight of `multipart`, then aborts it.
async fn abort_multipart(mut multipart: Multipart, path: Path) {
    multipart.parts.shutdown().await;
    if let Err(error) = multipart.upload.abort().await {
        warn!(%path, %error, "cannot abort multipart upload; parts may be left behind (an S3 lifecycle rule for incomplete multipart uploads cleans them up)");
    }
}

/// The destination of a download: counts and checksums what is written.
struct VerifiedFile<'a> {
    file: tokio::fs::File,
    destination: &'a LocalPath,
    path: &'a Path,
    expected_size: u64,
    size: u64,
    crc: u32,
}

impl VerifiedFile<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > self.expected_size {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: format!("{} bytes", self.expected_size),
                actual: format!("more than {} bytes", self.expected_size),
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))
    }

    /// Checks size and checksum, then flushes and fsyncs.
    async fn finish(&mut self, checksum: &str, expected_crc: u32) -> Result<()> {
        if self.size != self.expected_size {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: format!("{} bytes", self.expected_size),
                actual: format!("{} bytes", self.size),
            });
        }
        if self.crc != expected_crc {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: checksum.to_string(),
                actual: format_checksum(self.crc),
            });
        }
        self.file
            .flush()
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
