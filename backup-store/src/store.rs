//! [`BackupStore`], the facade of the crate: opening a store, its layout and
//! reachability. The manifest protocol, uploads, downloads and deletes are
//! `impl BackupStore` blocks of their own modules (`manifest_io`, `upload`,
//! `download`, `delete`).

use crate::crypto::{EncryptionOptions, Keyring};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, UpdateVersion};

use crate::backend::{self, Hints, LocalFiles};
use crate::buffers::UploadBuffers;
use crate::error::error_chain;
use crate::layout::Layout;
use crate::manifest::{BackupIdentifier, FileKind};
use crate::options::{
    BackupStoreOptions, Compression, StoreKind, DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES,
};
use crate::upload::MULTIPART_PART_BYTES;
use crate::BackupStoreError;

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

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
/// See the `layout` module (`Layout`) for the rules; [`Self::manifest_path`]
/// and [`Self::file_path`] give the paths.
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
/// ([`BackupStoreOptions::connections_concurrent_max`], an
/// `object_store::limit::LimitStore`), so all partitions of a broker share it.
/// Remote stores time out each request after
/// [`BackupStoreOptions::api_call_timeout`] and retry failed ones with
/// randomized exponential backoff, at most `RETRIES_MAX` (8) times and not
/// after `RETRY_TIMEOUT` (2 minutes).
#[derive(Clone)]
pub struct BackupStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The same store with few retries, for fast reachability checks.
    probe: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    description: Arc<str>,
    hints: Arc<Hints>,
    pub(crate) compression: Compression,
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
    pub(crate) versions: Arc<Mutex<HashMap<Path, UpdateVersion>>>,
    /// The keys of encrypted backups (`None`: this store reads and writes plain backups only).
    pub(crate) keyring: Option<Arc<Keyring>>,
    /// Whether restore and verify may use a plain backup although keys are configured.
    plain_restore_allowed: bool,
}

impl fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupStore")
            .field("store", &self.description)
            .field("base_path", &self.base_path())
            .field("compression", &self.compression)
            .field("keyring", &self.keyring)
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
        let layout = Layout::parse(options.base_path.as_deref())?;
        let backend = backend::build(&options)?;
        Ok(Self {
            store: backend.store,
            probe: backend.probe,
            layout,
            description: backend.description.into(),
            hints: Arc::new(backend.hints),
            compression: options.compression,
            buffers: UploadBuffers::new(options.upload_memory_limit_bytes, MULTIPART_PART_BYTES),
            copies_payloads: matches!(options.kind, StoreKind::InMemory),
            local: backend.local.map(Arc::new),
            versions: Arc::default(),
            keyring: options
                .encryption
                .as_ref()
                .map(|encryption| Arc::new(Keyring::new(encryption))),
            plain_restore_allowed: false,
        })
    }

    /// Wraps an existing object store (tests, fault-injection wrappers),
    /// without compression and without a request limit of its own, with the
    /// default upload memory (`DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES`). As the
    /// store may keep the bytes it is given, uploads send copies of their
    /// buffers.
    ///
    /// `base_path` is split on `/`; empty segments are ignored and characters
    /// that are not allowed in object paths are percent-encoded.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, base_path: Option<String>) -> Self {
        let layout = Layout::from_segments(base_path);
        let description = store.to_string();
        Self {
            probe: store.clone(),
            store,
            layout,
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
            keyring: None,
            plain_restore_allowed: false,
        }
    }

    /// This store, encrypting new backups and reading encrypted ones as `encryption` says.
    pub fn with_encryption(mut self, encryption: &EncryptionOptions) -> Self {
        self.keyring = Some(Arc::new(Keyring::new(encryption)));
        self
    }

    /// This store, letting restore and verify use plain backups although keys are configured
    /// (`--allow-unencrypted`: backups taken before encryption was turned on).
    pub fn allowing_plain_restore(mut self) -> Self {
        self.plain_restore_allowed = true;
        self
    }

    /// Whether restore and verify must refuse a plain backup: with keys configured, nothing
    /// proves that a plain manifest was written by this cluster (anyone who can write to the
    /// bucket can write one), unless the operator allowed it.
    pub fn refuses_plain_restore(&self) -> bool {
        self.keyring.is_some() && !self.plain_restore_allowed
    }

    /// The id of the key new backups are encrypted under, if they are.
    pub fn primary_key_id(&self) -> Option<&str> {
        self.keyring.as_ref().and_then(|keyring| keyring.primary())
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
        self.layout.base_path()
    }

    /// The prefix of all backups of a partition.
    pub fn partition_prefix(&self, partition_id: u32) -> Path {
        self.layout.partition_prefix(partition_id)
    }

    /// The prefix of all node folders of a checkpoint of a partition.
    pub fn checkpoint_prefix(&self, partition_id: u32, checkpoint_id: u64) -> Path {
        self.layout.checkpoint_prefix(partition_id, checkpoint_id)
    }

    /// The folder of one backup.
    pub fn backup_prefix(&self, id: &BackupIdentifier) -> Path {
        self.layout.backup_prefix(id)
    }

    /// The path of a backup's manifest.
    pub fn manifest_path(&self, id: &BackupIdentifier) -> Path {
        self.layout.manifest_path(id)
    }

    /// The path of a backed-up file; fails if `name` is not a valid file name.
    pub fn file_path(&self, id: &BackupIdentifier, kind: FileKind, name: &str) -> Result<Path> {
        self.layout.file_path(id, kind, name)
    }

    /// Checks that the store answers a list request on the base prefix. The
    /// error ([`BackupStoreError::Unreachable`]) starts with what is most
    /// likely wrong and the setting to fix: a bucket or container that does
    /// not exist (naming it), an endpoint that refuses connections (naming
    /// it), or credentials that are missing or denied. For remote stores this
    /// uses few retries so that it fails fast.
    pub async fn check_reachable(&self) -> Result<()> {
        match self
            .probe
            .list_with_delimiter(self.layout.base_option())
            .await
        {
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

    /// Makes the object at `path` durable where the store does not do so by
    /// itself (the file system store: fsync of the file and its directories);
    /// remote stores acknowledge a write once it is durable.
    pub(crate) async fn make_durable(&self, path: &Path) -> Result<()> {
        match &self.local {
            Some(local) => local.sync(path).await,
            None => Ok(()),
        }
    }

    /// Checks that the store holds `stored_bytes` at `path`, just uploaded: a store that
    /// truncates (or pads) what it was given is caught here, not at restore time.
    pub(crate) async fn check_stored_size(&self, path: &Path, stored_bytes: u64) -> Result<()> {
        match self.head_optional(path).await? {
            Some(meta) if meta.size == stored_bytes => Ok(()),
            Some(meta) => Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{stored_bytes} bytes uploaded"),
                actual: format!(
                    "{} bytes stored (the store did not keep the upload as sent)",
                    meta.size
                ),
            }),
            None => Err(BackupStoreError::MissingObject {
                path: path.to_string(),
            }),
        }
    }

    /// The metadata of an object, `None` if it does not exist.
    pub(crate) async fn head_optional(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BackupStoreError::object_store("head", path, e)),
        }
    }
}
