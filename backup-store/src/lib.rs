//! The backup store of Sluice: the in-bucket layout of backups, the manifest
//! (the commit point of a backup), streaming uploads of local files and
//! verified downloads, on top of [`object_store`].
//!
//! This is the only crate of the workspace that talks to the object store;
//! see [`BackupStore`] for the layout and its invariants.

mod error;
mod manifest;
mod store;
mod throttle;

pub mod conformance;

pub use error::BackupStoreError;
pub use manifest::{
    format_checksum, now_rfc3339, parse_checksum, validate_file_name, BackupDescriptor,
    BackupIdentifier, BackupStatus, FileEntry, FileKind, Manifest, MANIFEST_FORMAT_VERSION,
    MAX_FILE_NAME_LEN,
};
pub use store::{
    BackupStore, BackupStoreOptions, StoreKind, LIST_CONCURRENCY, MANIFEST_FILE_NAME,
    MAX_CONCURRENT_PARTS, MULTIPART_PART_BYTES, SINGLE_PUT_MAX_BYTES, THROTTLED_READ_BYTES,
};
pub use throttle::Throttle;

/// The `object_store` crate this crate is built on, for tests and
/// fault-injection wrappers passed to [`BackupStore::from_object_store`].
pub use object_store;

#[cfg(test)]
mod tests;
