//! How to open a [`BackupStore`](crate::BackupStore): the kind of store and its
//! credentials (`Debug` redacts every secret), the base path, and the tuning of
//! requests, compression and upload memory.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default memory budget of all uploads of a store together
/// ([`BackupStoreOptions::upload_memory_limit_bytes`]): 8 part buffers.
pub(crate) const DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The default time limit of one request to a remote store.
pub(crate) const DEFAULT_API_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default number of requests in flight at once per [`BackupStore`](crate::BackupStore).
pub(crate) const DEFAULT_CONNECTIONS_CONCURRENT_MAX: usize = 32;

/// The maximum number of retries of one request to a remote store.
pub(crate) const RETRIES_MAX: usize = 8;

/// No request to a remote store is retried once this long has passed since
/// its first attempt.
pub(crate) const RETRY_TIMEOUT: Duration = Duration::from_secs(120);

/// How backup files are compressed before upload: the configuration's enum itself
/// (`broker.data.backup.<store>.compression`), so the two cannot drift apart and
/// nothing maps one onto the other. What a file's manifest entry records for it
/// (`"zstd"`, or nothing) is the manifest format's own spelling, in `manifest.rs`.
pub use sluice_config::BackupCompression as Compression;

/// How to open a [`BackupStore`](crate::BackupStore).
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
    /// The time limit of one request (each retry has its own), of every
    /// remote store alike (S3, GCS, Azure); the local ones do not wait on a
    /// network. Default 30 s (`DEFAULT_API_CALL_TIMEOUT`).
    pub api_call_timeout: Duration,
    /// The maximum number of requests in flight at once, shared by every
    /// clone of the store (so by every partition of a broker), whatever the
    /// kind of store. Default 32 (`DEFAULT_CONNECTIONS_CONCURRENT_MAX`).
    pub connections_concurrent_max: usize,
    /// How uploaded files are compressed. Default [`Compression::None`].
    /// Downloads follow what each file's manifest entry says.
    pub compression: Compression,
    /// The memory for upload buffers, shared by every clone of the store:
    /// `upload_memory_limit_bytes / MULTIPART_PART_BYTES` part buffers (at
    /// least one). Default `DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES`. See
    /// [`BackupStore::upload_file`](crate::BackupStore::upload_file).
    pub upload_memory_limit_bytes: u64,
    /// Client-side encryption: the keys, the primary one for new backups, the cluster's name.
    /// `None`: backups are written plain and encrypted ones cannot be read.
    pub encryption: Option<crate::EncryptionOptions>,
}

impl BackupStoreOptions {
    /// Options for `kind` below `base_path`, with the default tuning.
    pub fn new(kind: StoreKind, base_path: Option<String>) -> Self {
        Self {
            kind,
            base_path,
            api_call_timeout: DEFAULT_API_CALL_TIMEOUT,
            connections_concurrent_max: DEFAULT_CONNECTIONS_CONCURRENT_MAX,
            compression: Compression::None,
            upload_memory_limit_bytes: DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES,
            encryption: None,
        }
    }
}

impl Default for BackupStoreOptions {
    /// An in-memory store with the default tuning.
    fn default() -> Self {
        Self::new(StoreKind::InMemory, None)
    }
}

/// The kind of object store backing a [`BackupStore`](crate::BackupStore).
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
        /// The server-side encryption asked for every object written (and, for
        /// SSE-C, the key every read and write carries).
        server_side_encryption: S3Encryption,
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
                server_side_encryption,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key", access_key)
                .field("secret_key", &redacted(secret_key))
                .field("force_path_style", force_path_style)
                .field("allow_http", allow_http)
                .field("server_side_encryption", server_side_encryption)
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

/// The server-side encryption S3 is asked to apply to every object a store writes
/// ([`StoreKind::S3`]`.server_side_encryption`), as object_store sends it: the
/// `x-amz-server-side-encryption*` headers on every put, and for SSE-C the key on every
/// put, get and head too (S3 keeps no copy of it).
///
/// GCS and Azure have no counterpart here: object_store 0.12 has no per-request key
/// option for them, so their objects get the bucket's or container's default encryption.
///
/// `Debug` redacts the SSE-C key.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum S3Encryption {
    /// Nothing is asked: the bucket's default encryption applies (and any
    /// `AWS_SERVER_SIDE_ENCRYPTION`-style variables object_store reads from the
    /// environment).
    #[default]
    BucketDefault,
    /// SSE-S3 (`AES256`): S3 encrypts with keys it manages.
    S3Managed,
    /// SSE-KMS (`aws:kms`) with the given KMS key.
    Kms {
        /// Key id, key ARN or alias ARN; must not be empty.
        key_id: String,
        /// Whether an S3 Bucket Key is used; `None` keeps the bucket's setting.
        bucket_key: Option<bool>,
    },
    /// DSSE-KMS (`aws:kms:dsse`), two layers of encryption, with the given KMS key.
    DsseKms {
        /// Key id, key ARN or alias ARN; must not be empty.
        key_id: String,
    },
    /// SSE-C: S3 encrypts with a key the client sends on every request; an
    /// object is unreadable without it.
    Customer {
        /// The base64 (standard alphabet, padded) of exactly 32 bytes.
        key_base64: String,
    },
}

impl S3Encryption {
    /// A short name for descriptions and logs: `bucket-default`, `SSE-S3`,
    /// `SSE-KMS`, `DSSE-KMS` or `SSE-C`; never a key.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BucketDefault => "bucket-default",
            Self::S3Managed => "SSE-S3",
            Self::Kms { .. } => "SSE-KMS",
            Self::DsseKms { .. } => "DSSE-KMS",
            Self::Customer { .. } => "SSE-C",
        }
    }
}

impl fmt::Debug for S3Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BucketDefault => f.write_str("BucketDefault"),
            Self::S3Managed => f.write_str("S3Managed"),
            Self::Kms { key_id, bucket_key } => f
                .debug_struct("Kms")
                .field("key_id", key_id)
                .field("bucket_key", bucket_key)
                .finish(),
            Self::DsseKms { key_id } => f.debug_struct("DsseKms").field("key_id", key_id).finish(),
            Self::Customer { .. } => f
                .debug_struct("Customer")
                .field("key_base64", &"<redacted>")
                .finish(),
        }
    }
}
