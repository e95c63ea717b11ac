//! The single error type of the backup store.

use std::path::PathBuf;

/// Everything that can go wrong in the backup store.
///
/// Every message carries `key=value` context and, where it helps, says what to
/// do about it. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BackupStoreError {
    /// A configured key-encryption key could not be loaded (the message never holds key material).
    #[error("backup encryption key {key_id} cannot be loaded from {source_name}: {reason}; fix broker.data.backup.encryption.keys (SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_KEYS) or the key it names")]
    KeyUnavailable {
        key_id: String,
        source_name: String,
        reason: String,
    },

    /// A local file could not be read, written or synced.
    #[error("local file I/O failed: path={path} error={source}; check that the path exists, the disk is not full and the process may access it", path = .path.display())]
    Io {
        /// The local file (or directory) concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An object store request failed.
    #[error("object store {operation} failed: path={path} error={source}; check that the bucket exists, the endpoint, region and credentials are right and the store is reachable (objects written with SSE-C need the same customer key, StoreKind::S3.server_side_encryption)")]
    ObjectStore {
        /// The request, e.g. `put`, `get`, `list`, `delete`.
        operation: &'static str,
        /// The object path (or prefix) in the bucket.
        path: String,
        /// The underlying error.
        source: object_store::Error,
    },

    /// The object store could not be reached at all (see [`crate::BackupStore::check_reachable`]).
    #[error(
        "backup store is not reachable: {hint}: store={store} prefix={prefix} reason={reason}"
    )]
    Unreachable {
        /// What is most likely wrong and which setting to fix, e.g. `bucket
        /// sluice does not exist (StoreKind::S3.bucket); create it or correct
        /// the setting`.
        hint: String,
        /// A description of the store (never credentials), e.g. `S3(bucket=my-bucket …)`.
        store: String,
        /// The base prefix that was listed.
        prefix: String,
        /// The full chain of causes, e.g. `... Connection refused`.
        reason: String,
        /// The underlying error (boxed to keep the error type small).
        source: Box<object_store::Error>,
    },

    /// An object that a manifest refers to does not exist.
    #[error("backup object is missing: path={path}; the backup is incomplete or was partially deleted; take a new backup")]
    MissingObject {
        /// The object path in the bucket.
        path: String,
    },

    /// An object's content does not match its manifest entry.
    #[error("backup object is corrupt: path={path} expected={expected} actual={actual}; the backup is damaged; take a new backup")]
    Corrupt {
        /// The object path in the bucket.
        path: String,
        /// What the manifest says (size or checksum).
        expected: String,
        /// What was downloaded.
        actual: String,
    },

    /// The first manifest of a backup could not be created because a manifest
    /// for the same backup id exists already (conditional create).
    #[error("a backup with this id already exists for partition={partition} checkpoint={checkpoint} node={node}: path={path} status={status}; another broker with the same node id, or an earlier run, wrote it; it was left unchanged; take a backup with a new id")]
    BackupExists {
        /// The partition of the backup.
        partition: u32,
        /// The checkpoint (backup) id.
        checkpoint: u64,
        /// The node that takes the backup.
        node: u32,
        /// The manifest object path in the bucket.
        path: String,
        /// The status of the existing manifest, or `unreadable`.
        status: String,
    },

    /// A manifest changed (or disappeared) since this store last wrote or read
    /// it (conditional update).
    #[error("backup manifest was changed by another writer: path={path} id={id} expected_status={expected} stored_status={stored}; two writers worked on this backup (e.g. two brokers with the same node id), or it was deleted meanwhile; it was left unchanged; take a new backup")]
    Conflict {
        /// The manifest object path in the bucket.
        path: String,
        /// The backup, as `partition=… checkpoint=… node=…`.
        id: String,
        /// The status this store tried to write.
        expected: String,
        /// The status found in the store, or `absent`/`unreadable`.
        stored: String,
    },

    /// Compressing a file for upload failed.
    #[error("compression failed: path={path} error={reason}")]
    Compression {
        /// The object path in the bucket.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// A manifest cannot be parsed or violates an invariant.
    #[error("invalid backup manifest: path={path} reason={reason}; the backup cannot be used; delete it and take a new backup")]
    InvalidManifest {
        /// The manifest object path in the bucket.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A backup file name is not a single path segment of `[A-Za-z0-9._-]`.
    #[error("invalid backup file name: name={name:?}; names must be 1 to 255 characters of [A-Za-z0-9._-], not \".\" or \"..\"")]
    InvalidFileName {
        /// The rejected name.
        name: String,
    },

    /// A value of a manifest that becomes a path (or part of one) breaks its grammar.
    #[error("invalid value in a backup manifest: field={field} value={value:?}; expected {grammar}; the manifest is damaged or was not written by Sluice: delete the backup and take a new one")]
    InvalidField {
        /// The JSON field, e.g. `descriptor.snapshotId`.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// What the value must look like.
        grammar: &'static str,
    },

    /// The store options are invalid or the store cannot be built from them.
    #[error("invalid backup store options: option={option} reason={reason}")]
    Config {
        /// The option to fix, as a field of [`crate::BackupStoreOptions`],
        /// e.g. `StoreKind::S3.bucket` or `BackupStoreOptions.base_path`; a
        /// caller that reads the options from its configuration can name its
        /// own key for it.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A local file is shorter than the length that should be uploaded from it.
    #[error("local file is shorter than the length to back up: path={path} expected={expected} actual={actual}; the file was truncated or the requested length is wrong", path = .path.display())]
    ShortFile {
        /// The local file.
        path: PathBuf,
        /// The number of bytes that should have been uploaded.
        expected: u64,
        /// The number of bytes the file actually has.
        actual: u64,
    },

    /// A collection of a partition's pool found a manifest it cannot read:
    /// what that manifest references is unknown, so nothing was deleted.
    #[error("the backup pool of partition={partition_id} was not collected: manifest={manifest} cannot be read ({reason}); nothing was deleted; delete that backup (or repair its manifest), then delete or retain again to free the pool")]
    PoolCollectionRefused {
        /// The partition whose pool was to be collected.
        partition_id: u32,
        /// The manifest that could not be read.
        manifest: String,
        /// Why.
        reason: String,
    },
}

impl BackupStoreError {
    pub(crate) fn object_store(
        operation: &'static str,
        path: impl ToString,
        source: object_store::Error,
    ) -> Self {
        Self::ObjectStore {
            operation,
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether retrying the same call cannot succeed: the store refused it
    /// for what it is (a manifest that exists or changed, an invalid
    /// manifest, name or configuration, a local file that is short, data
    /// that did not survive the upload), not for a state it may leave
    /// (unreachable, overloaded, throttled, timed out, a full disk, denied
    /// credentials that may be refreshed). The one classification every
    /// retry loop of a backup follows: permanent errors end it at once.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::BackupExists { .. }
            | Self::Conflict { .. }
            | Self::InvalidManifest { .. }
            | Self::InvalidFileName { .. }
            | Self::InvalidField { .. }
            | Self::Config { .. }
            | Self::ShortFile { .. }
            | Self::Compression { .. }
            | Self::Corrupt { .. }
            | Self::PoolCollectionRefused { .. }
            | Self::KeyUnavailable { .. } => true,
            // Local I/O includes the file system store's own writes and syncs: a full disk
            // may be freed.
            Self::Io { .. } | Self::MissingObject { .. } | Self::Unreachable { .. } => false,
            Self::ObjectStore { source, .. } => matches!(
                source,
                object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
        }
    }

    /// The pool object this error is about (missing or damaged), if it is about one.
    pub fn pool_object(&self) -> Option<crate::ObjectId> {
        let (Self::MissingObject { path } | Self::Corrupt { path, .. }) = self else {
            return None;
        };
        let mut segments = path.rsplit('/');
        let name = segments.next()?;
        let _fanout = segments.next()?;
        (segments.next()? == crate::POOL_FOLDER)
            .then(|| crate::ObjectId::parse(name))
            .flatten()
    }

    /// Whether this error means that an object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::MissingObject { .. }
                | Self::ObjectStore {
                    source: object_store::Error::NotFound { .. },
                    ..
                }
        )
    }
}

/// Renders an error with all its causes, skipping causes whose text is already
/// contained in the previous one (many errors repeat their source).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut rendered = error.to_string();
    let mut last = rendered.clone();
    let mut current = error.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !text.is_empty() && !last.contains(&text) {
            rendered.push_str(": ");
            rendered.push_str(&text);
        }
        last = text;
        current = cause.source();
    }
    rendered
}
