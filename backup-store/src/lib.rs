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
mod crypto;
mod delete;
mod download;
mod error;
mod layout;
mod manifest;
mod manifest_io;
mod options;
mod pool;
mod pool_transfer;
mod store;
mod throttle;
mod upload;

// The conformance suite and the forwarding wrapper of fault-injection stores:
// test code, behind the `testing` feature (never in a production build).
#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use crypto::{
    generate_key_hex, EncryptionOptions, KeyEncryptionKey, ManifestEncryption, PartitionKeys,
    PassphraseKdf, PoolKeys, OBJECT_CIPHER,
};
pub use download::download_memory_bytes_max;
pub use error::BackupStoreError;
pub use layout::MANIFEST_FILE_NAME;
pub use manifest::{
    validate_snapshot_id, BackupDescriptor, BackupIdentifier, BackupStatus, FileEntry, FileKind,
    Manifest, ManifestError, PoolUpload, MANIFEST_SIZE_BYTES_MAX,
};
pub use manifest_io::{ManifestListing, Rekeyed, SkippedManifest, LIST_CONCURRENCY};
pub use options::{BackupStoreOptions, Compression, S3Encryption, StoreKind};
pub use pool::{
    ObjectId, PieceEntry, PoolCollection, PoolIndex, PoolTotals, ENVELOPE_HEADER_BYTES,
    PIECE_BYTES_MAX, POOL_FOLDER,
};
pub use pool_transfer::{Chunking, PooledFile, PooledUpload, PrefixTrust};
pub use store::BackupStore;
pub use throttle::Throttle;

/// The `object_store` crate this crate is built on, for tests and
/// fault-injection wrappers passed to [`BackupStore::from_object_store`].
pub use object_store;

#[cfg(test)]
mod tests;
