//! The backup store of Sluice: the in-bucket layout of backups, the manifest
//! (the commit point of a backup), streaming uploads of local files and
//! verified downloads, on top of [`object_store`]: the local file system, S3
//! (and S3-compatible stores), Google Cloud Storage and Azure Blob Storage.
//!
//! This is the only crate of the workspace that talks to the object store;
//! see [`BackupStore`] for the layout, the conditional manifest writes and
//! their guarantees per backend.

mod backend;
mod buffers;
mod codec;
mod delete;
mod download;
mod error;
mod layout;
mod manifest;
mod manifest_io;
mod options;
mod store;
mod throttle;
mod upload;

/// The conformance suite and the forwarding wrapper of fault-injection
/// stores; test code, behind the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use codec::{MAX_DECODED_PER_STEP, ZSTD_LEVEL, ZSTD_WINDOW_LOG, ZSTD_WINDOW_LOG_MAX};
pub use download::{DOWNLOAD_RANGE_BYTES, MAX_CONCURRENT_RANGES};
pub use error::BackupStoreError;
pub use layout::MANIFEST_FILE_NAME;
pub use manifest::{
    canonical_json, format_checksum, now_rfc3339, parse_checksum, validate_file_name,
    validate_snapshot_id, BackupDescriptor, BackupIdentifier, BackupStatus, FileEntry, FileKind,
    Manifest, MANIFEST_CHECKSUM_FIELD, MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_COMPRESSED,
    MANIFEST_SIZE_BYTES_MAX, MAX_FILE_NAME_LEN, SNAPSHOT_ID_LEN, ZSTD_COMPRESSION,
};
pub use manifest_io::{ManifestListing, SkippedManifest, LIST_CONCURRENCY};
pub use options::{
    BackupStoreOptions, Compression, StoreKind, DEFAULT_API_CALL_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_CONNECTIONS, DEFAULT_UPLOAD_MEMORY_LIMIT_BYTES, MAX_RETRIES,
    RETRY_TIMEOUT,
};
pub use store::BackupStore;
pub use throttle::Throttle;
pub use upload::{
    MAX_CONCURRENT_PARTS, MULTIPART_PART_BYTES, SINGLE_PUT_MAX_BYTES, THROTTLED_READ_BYTES,
};

/// The `object_store` crate this crate is built on, for tests and
/// fault-injection wrappers passed to [`BackupStore::from_object_store`].
pub use object_store;

#[cfg(test)]
mod tests;
