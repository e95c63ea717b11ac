//! The backup manifest: the JSON document that describes one backup of one
//! partition taken by one node, and whose status is the commit point of the
//! backup.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use sluice_ledger::record::{CheckpointRequest, REQUESTED_AT_MS_MAX};

use crate::crypto::{Keyring, ManifestEncryption};
use crate::pool::PieceEntry;
use crate::{BackupStoreError, Compression};

/// The manifest format version written for backups without compressed files;
/// every release reads it.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The manifest format version written when a file of the backup is
/// compressed (see [`FileEntry::compression`]). Releases that understand only
/// version 1 refuse it ("use a newer release") instead of reporting the
/// compressed objects as corrupt.
pub(crate) const MANIFEST_FORMAT_VERSION_COMPRESSED: u32 = 2;

/// The manifest format version written when a file of the backup is kept in
/// the partition's pool of content-addressed objects (see
/// [`FileEntry::pieces`] and the `pool` module). Releases that understand
/// only versions 1 and 2 refuse it ("use a newer release").
pub(crate) const MANIFEST_FORMAT_VERSION_POOLED: u32 = 3;

/// The manifest format version of an encrypted backup (see
/// [`Manifest::encryption`] and the `crypto` module): its pool objects are
/// encrypted and named by a keyed hash, and the manifest carries
/// [`MANIFEST_MAC_FIELD`]. Releases that understand only versions 1 to 3
/// refuse it ("use a newer release"). The newest version this crate
/// understands.
pub(crate) const MANIFEST_FORMAT_VERSION_ENCRYPTED: u32 = 4;

/// The value of [`FileEntry::compression`] for zstd-compressed files.
pub(crate) const ZSTD_COMPRESSION: &str = "zstd";

/// The value recorded in [`FileEntry::compression`] for a file uploaded with
/// `compression` (the manifest's spelling, not the configuration's `ZSTD`).
pub(crate) fn compression_name(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::None => None,
        Compression::Zstd => Some(ZSTD_COMPRESSION),
    }
}

/// The longest file name accepted by [`validate_file_name`].
pub(crate) const FILE_NAME_LEN_MAX: usize = 255;

/// The number of ASCII digits of a snapshot id: the broker names a snapshot
/// by its processed position, zero-padded to 20 digits (`u64::MAX` has 20).
pub(crate) const SNAPSHOT_ID_LEN: usize = 20;

/// The JSON key of the manifest's own checksum (see [`Manifest::to_stored_json`]).
pub(crate) const MANIFEST_CHECKSUM_FIELD: &str = "manifestChecksum";

/// The JSON key of an encrypted manifest's MAC (see [`Manifest::to_stored_json`]).
pub(crate) const MANIFEST_MAC_FIELD: &str = "manifestMac";

/// The largest manifest read or written. A file entry takes about 200 bytes
/// of JSON, so 8 MiB holds about 40,000 files: a 5 TiB partition of 128 MiB
/// segments. A manifest never needs more, and a reader must not load an
/// object of any size that happens to sit where a manifest belongs.
pub const MANIFEST_SIZE_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Identifies one backup: the backup of partition `partition_id` at checkpoint
/// `checkpoint_id`, taken by node `node_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupIdentifier {
    /// The partition that was backed up.
    pub partition_id: u32,
    /// The checkpoint (backup) id, shared by all partitions of one backup.
    pub checkpoint_id: u64,
    /// The node that took the backup.
    pub node_id: u32,
}

impl BackupIdentifier {
    /// Creates an identifier.
    pub fn new(partition_id: u32, checkpoint_id: u64, node_id: u32) -> Self {
        Self {
            partition_id,
            checkpoint_id,
            node_id,
        }
    }
}

impl fmt::Display for BackupIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition={} checkpoint={} node={}",
            self.partition_id, self.checkpoint_id, self.node_id
        )
    }
}

/// The status of a backup. Serialized as `IN_PROGRESS`, `COMPLETED`, `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupStatus {
    /// Files are being uploaded; the backup must not be used.
    InProgress,
    /// Every file listed in the manifest was uploaded; the backup can be restored.
    Completed,
    /// The backup failed; `failure_reason` says why.
    Failed,
}

impl fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        })
    }
}

/// What was backed up, as known when the backup started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDescriptor {
    /// The id of the snapshot included in the backup, if any.
    pub snapshot_id: Option<String>,
    /// The log position of the checkpoint record.
    pub checkpoint_position: u64,
    /// The number of partitions of the cluster when the backup was taken.
    pub number_of_partitions: u32,
    /// The version of the broker that took the backup.
    pub broker_version: String,
    /// What the coordinator asked of the checkpoint (its kind, when it asked): the checkpoint
    /// record's own. Absent where the partition created the checkpoint by propagation (the
    /// partitions that had it from the coordinator say it) and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<CheckpointRequest>,
}

/// The kind of a backed-up file. Serialized as `SNAPSHOT`, `SEGMENT`; stored
/// under `snapshot/` and `segments/` respectively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileKind {
    /// A file of the state snapshot.
    Snapshot,
    /// A log segment (possibly only a prefix of it).
    Segment,
}

impl FileKind {
    /// The folder of this kind of file inside a backup.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Segment => "segments",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Snapshot => "SNAPSHOT",
            Self::Segment => "SEGMENT",
        })
    }
}

/// One uploaded file of a backup.
///
/// `size_bytes` and `checksum` always describe the original content of the
/// file (what a restore writes to disk); `stored_bytes` is the size of the
/// object in the store, which differs from `size_bytes` only when the file is
/// compressed. Manifests written before compression existed have neither
/// `compression` nor `storedBytes`; they read as uncompressed with
/// `stored_bytes == size_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "FileEntryWire")]
pub struct FileEntry {
    /// The file name: a single path segment of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Snapshot file or log segment.
    pub kind: FileKind,
    /// The number of bytes of the original file that were backed up.
    pub size_bytes: u64,
    /// `crc32c:<8 lowercase hex digits>` of the original (uncompressed) bytes.
    pub checksum: String,
    /// How the object is compressed: `None` (stored as is) or
    /// `ZSTD_COMPRESSION`. Omitted from the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The size of the object in the store; equals `size_bytes` when the file
    /// is not compressed. For a pooled file, the sum of its pieces'
    /// `stored_bytes`.
    pub stored_bytes: u64,
    /// A pooled file (format version 3): the objects of the partition's pool
    /// whose contents, concatenated in this order, are the file's
    /// `size_bytes` bytes; the file then has no object of its own under the
    /// backup's folder and `compression` is `None` (each object says in its
    /// envelope how it is compressed). `None` for files stored as one object
    /// of the backup (versions 1 and 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<PieceEntry>>,
}

/// The JSON form of a [`FileEntry`] as read: `storedBytes` defaults to
/// `sizeBytes` for manifests written before it existed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileEntryWire {
    name: String,
    kind: FileKind,
    size_bytes: u64,
    checksum: String,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    stored_bytes: Option<u64>,
    #[serde(default)]
    pieces: Option<Vec<PieceEntry>>,
}

impl From<FileEntryWire> for FileEntry {
    fn from(wire: FileEntryWire) -> Self {
        Self {
            stored_bytes: wire.stored_bytes.unwrap_or(wire.size_bytes),
            name: wire.name,
            kind: wire.kind,
            size_bytes: wire.size_bytes,
            checksum: wire.checksum,
            compression: wire.compression,
            pieces: wire.pieces,
        }
    }
}

impl FileEntry {
    /// Whether the stored object is compressed.
    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }

    /// Whether the file is kept in the partition's pool (see [`Self::pieces`]).
    pub fn is_pooled(&self) -> bool {
        self.pieces.is_some()
    }
}

/// The lowest manifest format version that can describe `files` (encrypted or not).
fn required_format_version(files: &[FileEntry], encrypted: bool) -> u32 {
    if encrypted {
        MANIFEST_FORMAT_VERSION_ENCRYPTED
    } else if files.iter().any(FileEntry::is_pooled) {
        MANIFEST_FORMAT_VERSION_POOLED
    } else if files.iter().any(FileEntry::is_compressed) {
        MANIFEST_FORMAT_VERSION_COMPRESSED
    } else {
        MANIFEST_FORMAT_VERSION
    }
}

/// The manifest of one backup (see [`crate::BackupStore`] for where it lives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `MANIFEST_FORMAT_VERSION`, or `MANIFEST_FORMAT_VERSION_COMPRESSED`
    /// when a file is compressed.
    pub format_version: u32,
    /// Which backup this is.
    pub id: BackupIdentifier,
    /// What was backed up.
    pub descriptor: BackupDescriptor,
    /// The commit point: only a `COMPLETED` backup can be restored.
    pub status: BackupStatus,
    /// The uploaded files (complete only when `status` is `COMPLETED`).
    pub files: Vec<FileEntry>,
    /// Why the backup failed; set if and only if `status` is `FAILED`.
    pub failure_reason: Option<String>,
    /// When the backup started (RFC 3339, milliseconds, UTC).
    pub created_at: String,
    /// When the manifest was last changed (RFC 3339, milliseconds, UTC).
    pub last_updated_at: String,
    /// What this backup added to the partition's pool (format version 3);
    /// what it references is in `files`. Omitted by older releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_upload: Option<PoolUpload>,
    /// Set for an encrypted backup (format version 4): its cluster, its key
    /// id and its partition's keyset, wrapped. Such a manifest is stored with
    /// [`MANIFEST_MAC_FIELD`] and read only once its MAC verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ManifestEncryption>,
}

/// A stored manifest as parsed, before it is authenticated: the manifest,
/// its MAC if it carries one, and the canonical bytes the MAC covers.
#[derive(Debug)]
pub(crate) struct StoredManifest {
    pub manifest: Manifest,
    pub mac: Option<String>,
    pub canonical: Vec<u8>,
}
/// The objects a pooled backup uploaded new to its partition's pool: the
/// rest of what it references was there already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUpload {
    /// The number of objects uploaded.
    pub objects: u64,
    /// Their size in the store (envelopes, compressed where they are).
    pub stored_bytes: u64,
}

/// The current time as RFC 3339 with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Manifest {
    /// A new `IN_PROGRESS` manifest without files.
    pub fn in_progress(id: BackupIdentifier, descriptor: BackupDescriptor) -> Self {
        let now = now_rfc3339();
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            id,
            descriptor,
            status: BackupStatus::InProgress,
            files: Vec::new(),
            failure_reason: None,
            created_at: now.clone(),
            last_updated_at: now,
            pool_upload: None,
            encryption: None,
        }
    }

    /// This manifest, encrypted as `encryption` says (its files then must be
    /// pooled objects of that keyset).
    pub fn encrypted(self, encryption: ManifestEncryption) -> Self {
        Self {
            format_version: self.format_version.max(MANIFEST_FORMAT_VERSION_ENCRYPTED),
            encryption: Some(encryption),
            ..self
        }
    }

    /// This manifest as `COMPLETED` with the given files (the format version
    /// becomes `MANIFEST_FORMAT_VERSION_COMPRESSED` if one is compressed).
    pub fn complete(self, files: Vec<FileEntry>) -> Self {
        self.complete_with(files, None)
    }

    /// [`Self::complete`] of a pooled backup that uploaded `pool_upload`.
    pub fn complete_with(self, files: Vec<FileEntry>, pool_upload: Option<PoolUpload>) -> Self {
        Self {
            pool_upload,
            format_version: self
                .format_version
                .max(required_format_version(&files, self.encryption.is_some())),
            status: BackupStatus::Completed,
            files,
            failure_reason: None,
            last_updated_at: now_rfc3339(),
            ..self
        }
    }

    /// Every pool object the manifest's files reference (a piece per occurrence; none for
    /// files of the formats before the pool).
    pub fn pieces(&self) -> impl Iterator<Item = &PieceEntry> {
        self.files
            .iter()
            .flat_map(|file| file.pieces.iter().flatten())
    }

    /// The stored bytes this backup needs in the store: its pieces (or per-backup files).
    pub fn referenced_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.stored_bytes).sum()
    }

    /// The stored bytes this backup uploaded new: what its manifest records for a pooled backup,
    /// everything it references for an older one (which shares nothing).
    pub fn uploaded_bytes(&self) -> u64 {
        self.pool_upload
            .map_or_else(|| self.referenced_bytes(), |upload| upload.stored_bytes)
    }

    /// This manifest as `FAILED` for the given reason. The files uploaded so
    /// far are kept so that they can be found and deleted.
    pub fn fail(self, reason: impl Into<String>) -> Self {
        Self {
            status: BackupStatus::Failed,
            failure_reason: Some(reason.into()),
            last_updated_at: now_rfc3339(),
            ..self
        }
    }

    /// The one rule for which of the manifests of one partition and checkpoint (one per node
    /// that wrote one: the partition moved between nodes, e.g. after a restore with another
    /// cluster size) speaks for it. `hosting_node` is the node that hosts the partition now.
    ///
    /// 1. A COMPLETED manifest before any other: a backup that can be restored is what the
    ///    partition's backup *is*; a FAILED or IN_PROGRESS manifest another node left must not
    ///    hide it. So status and list say COMPLETED exactly when restore would restore it.
    /// 2. Among the COMPLETED ones, the hosting node's: it restores the partition, and its
    ///    manifest holds the log its own broker wrote.
    /// 3. Then the most recently updated (`lastUpdatedAt`; one that does not parse counts as
    ///    oldest): for manifests that are not COMPLETED, the newest says best what went on last
    ///    (FAILED after IN_PROGRESS), which is what status, list and inspect show.
    /// 4. Then the lowest node id, so the choice never depends on listing order.
    ///
    /// The broker (status, list), the restore library (restore, verify) and the CLI (inspect)
    /// all choose with it. `None` only for no manifests.
    pub fn choose(manifests: &[Manifest], hosting_node: u32) -> Option<&Manifest> {
        manifests.iter().min_by_key(|m| {
            let completed = m.status == BackupStatus::Completed;
            let updated = humantime::parse_rfc3339_weak(&m.last_updated_at).ok();
            (
                std::cmp::Reverse(completed),
                std::cmp::Reverse(completed && m.id.node_id == hosting_node),
                std::cmp::Reverse(updated),
                m.id.node_id,
            )
        })
    }

    /// The JSON document stored for this manifest: its fields (pretty
    /// printed) plus `MANIFEST_CHECKSUM_FIELD`, `crc32c:<8 hex digits>` of
    /// the manifest's canonical bytes without that field (see
    /// `canonical_json`). Fails if the document would exceed
    /// [`MANIFEST_SIZE_BYTES_MAX`], and for an encrypted manifest, whose MAC
    /// needs its key (the store writes those, [`crate::BackupStore::write_manifest`]).
    pub fn to_stored_json(&self) -> Result<Vec<u8>, ManifestError> {
        self.to_stored_json_with(None)
    }

    /// [`Self::to_stored_json`]; an encrypted manifest also gets
    /// `MANIFEST_MAC_FIELD`, the MAC under `keyring`'s key of its canonical
    /// bytes without the checksum and the MAC (the checksum then covers the MAC).
    pub(crate) fn to_stored_json_with(
        &self,
        keyring: Option<&Keyring>,
    ) -> Result<Vec<u8>, ManifestError> {
        let mut value =
            serde_json::to_value(self).map_err(|source| ManifestError::Serialize { source })?;
        let mac = match &self.encryption {
            None => None,
            Some(encryption) => {
                let keyring = keyring.ok_or_else(|| ManifestError::KeyNotConfigured {
                    key_id: encryption.key_id.clone(),
                })?;
                Some(keyring.mac(encryption, &canonical_json(&value))?)
            }
        };
        let serde_json::Value::Object(fields) = &mut value else {
            return Err(ManifestError::SerializedNotAnObject);
        };
        if let Some(mac) = mac {
            fields.insert(
                MANIFEST_MAC_FIELD.to_string(),
                serde_json::Value::String(mac),
            );
        }
        let checksum = format_checksum(crc32c::crc32c(&canonical_json(&value)));
        let serde_json::Value::Object(fields) = &mut value else {
            return Err(ManifestError::SerializedNotAnObject);
        };
        fields.insert(
            MANIFEST_CHECKSUM_FIELD.to_string(),
            serde_json::Value::String(checksum),
        );
        let json = serde_json::to_vec_pretty(&value)
            .map_err(|source| ManifestError::Serialize { source })?;
        if json.len() as u64 > MANIFEST_SIZE_BYTES_MAX {
            return Err(ManifestError::TooLargeToWrite {
                size_bytes: json.len(),
                files: self.files.len(),
            });
        }
        Ok(json)
    }

    /// Parses a stored manifest document and checks its own checksum
    /// (`MANIFEST_CHECKSUM_FIELD`): a mismatch means the manifest was
    /// damaged after it was written and is reported as such. A document
    /// without the field was written before manifests had checksums and is
    /// read as before (structure and [`Self::validate`] only), so that
    /// backups taken by older releases stay restorable. Does not validate,
    /// and does not authenticate an encrypted manifest (the store does).
    pub fn from_stored_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        Ok(Self::parse_stored(bytes)?.manifest)
    }

    /// [`Self::from_stored_json`] with the MAC and the bytes it covers.
    pub(crate) fn parse_stored(bytes: &[u8]) -> Result<StoredManifest, ManifestError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse { source })?;
        let stored = match &mut value {
            serde_json::Value::Object(fields) => fields.remove(MANIFEST_CHECKSUM_FIELD),
            _ => return Err(ManifestError::ParsedNotAnObject),
        };
        if let Some(stored) = stored {
            let actual = format_checksum(crc32c::crc32c(&canonical_json(&value)));
            let matches = stored.as_str().is_some_and(|s| s == actual);
            if !matches {
                return Err(ManifestError::Damaged { stored, actual });
            }
        }
        let mac = match &mut value {
            serde_json::Value::Object(fields) => fields.remove(MANIFEST_MAC_FIELD),
            _ => return Err(ManifestError::ParsedNotAnObject),
        };
        let mac = match mac {
            None => None,
            Some(serde_json::Value::String(mac)) => Some(mac),
            Some(_) => return Err(ManifestError::MacMissing),
        };
        let canonical = canonical_json(&value);
        let manifest =
            serde_json::from_value(value).map_err(|source| ManifestError::Parse { source })?;
        Ok(StoredManifest {
            manifest,
            mac,
            canonical,
        })
    }

    /// Checks the invariants of a manifest; returns the violated one.
    ///
    /// - the format version is `MANIFEST_FORMAT_VERSION` or
    ///   `MANIFEST_FORMAT_VERSION_COMPRESSED`, and the latter if a file is
    ///   compressed;
    /// - `COMPLETED` ⇒ no `failure_reason`; `FAILED` ⇒ `failure_reason` set;
    ///   `IN_PROGRESS` ⇒ no `failure_reason`;
    /// - every file name is valid and appears at most once per kind;
    /// - every checksum has the form `crc32c:<8 lowercase hex digits>`;
    /// - every compression is absent or `ZSTD_COMPRESSION`; an uncompressed
    ///   file has `stored_bytes == size_bytes`;
    /// - `descriptor.snapshotId` is absent or `SNAPSHOT_ID_LEN` ASCII
    ///   digits, and present if a snapshot file is listed.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !(MANIFEST_FORMAT_VERSION..=MANIFEST_FORMAT_VERSION_ENCRYPTED)
            .contains(&self.format_version)
        {
            return Err(ManifestError::UnsupportedFormatVersion {
                format_version: self.format_version,
            });
        }

        match (self.status, &self.failure_reason) {
            (BackupStatus::Failed, None) => return Err(ManifestError::FailedWithoutReason),
            (BackupStatus::Completed | BackupStatus::InProgress, Some(reason)) => {
                return Err(ManifestError::UnexpectedFailureReason {
                    status: self.status,
                    reason: reason.clone(),
                })
            }
            _ => {}
        }
        // Values that become local paths on restore are held to their exact
        // grammar here, so that no reader ever joins an unchecked one.
        if let Some(snapshot_id) = &self.descriptor.snapshot_id {
            validate_snapshot_id(snapshot_id)
                .map_err(|source| ManifestError::SnapshotId(Box::new(source)))?;
        }
        if let Some(request) = &self.descriptor.request {
            if request.requested_at_ms > REQUESTED_AT_MS_MAX {
                return Err(ManifestError::RequestedAt {
                    requested_at_ms: request.requested_at_ms,
                });
            }
        }
        if let Some(encryption) = &self.encryption {
            encryption.validate()?;
        }
        let encrypted = self.encryption.is_some();
        let mut seen = std::collections::HashSet::new();
        for (index, file) in self.files.iter().enumerate() {
            validate_file_name(&file.name).map_err(|source| ManifestError::FileName {
                index,
                source: Box::new(source),
            })?;
            if file.kind == FileKind::Snapshot && self.descriptor.snapshot_id.is_none() {
                return Err(ManifestError::SnapshotFileWithoutSnapshotId {
                    index,
                    name: file.name.clone(),
                });
            }
            if !seen.insert((file.kind, file.name.as_str())) {
                return Err(ManifestError::DuplicateFile {
                    kind: file.kind,
                    name: file.name.clone(),
                });
            }
            if parse_checksum(&file.checksum).is_none() {
                return Err(ManifestError::InvalidChecksum {
                    name: file.name.clone(),
                    checksum: file.checksum.clone(),
                });
            }
            if let Some(pieces) = &file.pieces {
                validate_pieces(index, file, pieces, encrypted)?;
                continue;
            }
            if encrypted {
                return Err(ManifestError::EncryptedNotPooled {
                    index,
                    name: file.name.clone(),
                });
            }
            match file.compression.as_deref() {
                None if file.stored_bytes != file.size_bytes => {
                    return Err(ManifestError::UncompressedSizeMismatch {
                        name: file.name.clone(),
                        size_bytes: file.size_bytes,
                        stored_bytes: file.stored_bytes,
                    })
                }
                None | Some(ZSTD_COMPRESSION) => {}
                Some(other) => {
                    return Err(ManifestError::UnsupportedCompression {
                        name: file.name.clone(),
                        compression: other.to_string(),
                    })
                }
            }
        }
        let required = required_format_version(&self.files, encrypted);
        if self.format_version < required {
            return Err(ManifestError::FormatVersionTooLow {
                format_version: self.format_version,
                required,
            });
        }
        Ok(())
    }
}

impl FileEntry {
    /// Checks the rules of a pooled file (see `validate_pieces`) on an entry read from
    /// elsewhere than a manifest (the broker's archive records): `Err` says what is wrong.
    pub fn validate_pooled(&self, encrypted: bool) -> Result<(), ManifestError> {
        match &self.pieces {
            Some(pieces) => validate_pieces(0, self, pieces, encrypted),
            None => Err(ManifestError::NotPooled {
                name: self.name.clone(),
            }),
        }
    }
}

/// The rules of a pooled file: no file-level compression; at least one
/// piece unless the file is empty; every piece 1 to
/// [`crate::pool::PIECE_BYTES_MAX`] bytes with a stored size its envelope can
/// have; the pieces add up to `sizeBytes` and `storedBytes`.
fn validate_pieces(
    index: usize,
    file: &FileEntry,
    pieces: &[PieceEntry],
    encrypted: bool,
) -> Result<(), ManifestError> {
    if file.compression.is_some() {
        return Err(ManifestError::PooledAndCompressed {
            index,
            name: file.name.clone(),
        });
    }
    let mut size_bytes: u64 = 0;
    let mut stored_bytes: u64 = 0;
    for (piece_index, piece) in pieces.iter().enumerate() {
        // The piece's own rules live with the pool format and say what is wrong as text.
        piece
            .validate(encrypted)
            .map_err(|reason| ManifestError::InvalidPiece {
                index,
                name: file.name.clone(),
                piece_index,
                reason,
            })?;
        size_bytes = size_bytes.saturating_add(piece.size_bytes);
        stored_bytes = stored_bytes.saturating_add(piece.stored_bytes);
    }
    if size_bytes != file.size_bytes || stored_bytes != file.stored_bytes {
        return Err(ManifestError::PiecesSizeMismatch {
            index,
            name: file.name.clone(),
            size_bytes: file.size_bytes,
            stored_bytes: file.stored_bytes,
            pieces_size_bytes: size_bytes,
            pieces_stored_bytes: stored_bytes,
        });
    }
    Ok(())
}

/// What is wrong with a manifest document or its content: the `reason` of
/// [`BackupStoreError::InvalidManifest`], which names the object.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot serialize: {source}")]
    Serialize { source: serde_json::Error },
    #[error("a manifest serializes to a JSON object")]
    SerializedNotAnObject,
    #[error("the manifest would take {size_bytes} bytes, more than the limit of {MANIFEST_SIZE_BYTES_MAX} bytes ({files} files)")]
    TooLargeToWrite { size_bytes: usize, files: usize },
    #[error("the manifest object is {size_bytes} bytes, more than the limit of {MANIFEST_SIZE_BYTES_MAX} bytes; it is not a manifest Sluice wrote")]
    TooLargeToRead { size_bytes: u64 },
    #[error("the manifest object is at least {size_bytes} bytes, more than the limit of {MANIFEST_SIZE_BYTES_MAX} bytes; it is not a manifest Sluice wrote")]
    TooLargeStream { size_bytes: u64 },
    #[error("not a valid manifest JSON document: {source}")]
    Parse { source: serde_json::Error },
    #[error("not a valid manifest JSON document: not an object")]
    ParsedNotAnObject,
    #[error(
        "the manifest is damaged: {MANIFEST_CHECKSUM_FIELD}={stored} but its content has {actual}"
    )]
    Damaged {
        stored: serde_json::Value,
        actual: String,
    },
    #[error("unsupported formatVersion={format_version} (this version understands {MANIFEST_FORMAT_VERSION} to {MANIFEST_FORMAT_VERSION_ENCRYPTED}); use a newer release to read this backup")]
    UnsupportedFormatVersion { format_version: u32 },
    #[error("status=FAILED requires a failureReason")]
    FailedWithoutReason,
    #[error("status={status} must not have a failureReason (failureReason={reason:?})")]
    UnexpectedFailureReason {
        status: BackupStatus,
        reason: String,
    },
    #[error("{0}")]
    SnapshotId(Box<BackupStoreError>),
    #[error("descriptor.request.requestedAtMs={requested_at_ms} is past the end of year 9999 (at most {REQUESTED_AT_MS_MAX})")]
    RequestedAt { requested_at_ms: u64 },
    #[error("files[{index}].name: {source}")]
    FileName {
        index: usize,
        source: Box<BackupStoreError>,
    },
    #[error("files[{index}] name={name} is a snapshot file but descriptor.snapshotId is null")]
    SnapshotFileWithoutSnapshotId { index: usize, name: String },
    #[error("duplicate file entry: kind={kind} name={name}")]
    DuplicateFile { kind: FileKind, name: String },
    #[error("invalid checksum: name={name} checksum={checksum:?} (expected crc32c:<8 lowercase hex digits>)")]
    InvalidChecksum { name: String, checksum: String },
    #[error("uncompressed file with storedBytes={stored_bytes} different from sizeBytes={size_bytes}: name={name}")]
    UncompressedSizeMismatch {
        name: String,
        size_bytes: u64,
        stored_bytes: u64,
    },
    #[error("unsupported compression={compression:?} of file name={name} (this version understands {ZSTD_COMPRESSION:?}); use a newer release to read this backup")]
    UnsupportedCompression { name: String, compression: String },
    #[error("formatVersion={format_version} cannot describe compressed or pooled files (formatVersion={required} is needed)")]
    FormatVersionTooLow { format_version: u32, required: u32 },
    #[error("files[{index}]: name={name} is pooled and compressed as a file; a pooled file's pieces carry their compression")]
    PooledAndCompressed { index: usize, name: String },
    #[error("name={name} has no pieces: it is not a pooled file")]
    NotPooled { name: String },
    #[error("files[{index}]: name={name} pieces[{piece_index}]: {reason}")]
    InvalidPiece {
        index: usize,
        name: String,
        piece_index: usize,
        reason: String,
    },
    #[error("files[{index}]: name={name} is not a pooled file, but an encrypted backup holds only pool objects")]
    EncryptedNotPooled { index: usize, name: String },
    #[error("encryption.{field}: {reason}")]
    Encryption { field: &'static str, reason: String },
    #[error("the backup is encrypted under key id {key_id}, which is not configured: add it to broker.data.backup.encryption.keys (SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_KEYS), e.g. {key_id}=file:/etc/sluice/{key_id}.key")]
    KeyNotConfigured { key_id: String },
    #[error("key id {key_id} is configured as the other kind (the backup was written with a {manifest_kind}): configure {key_id} as it was when the backup was taken")]
    KeyKindMismatch {
        key_id: String,
        manifest_kind: &'static str,
    },
    #[error("the manifest is encrypted but carries no valid {MANIFEST_MAC_FIELD}: it was changed after it was written; do not restore it")]
    MacMissing,
    #[error("the manifest's {MANIFEST_MAC_FIELD} does not verify under key id {key_id}: the manifest was changed, moved or forged after it was written, or {key_id} is configured with other key material than the one that wrote it; do not restore it")]
    MacMismatch { key_id: String },
    #[error("the backup was written by cluster {stored:?}, this node is configured as cluster {configured:?} (broker.cluster.clusterName, SLUICE_BROKER_CLUSTER_CLUSTERNAME): a backup of another cluster is not restored")]
    OtherCluster { stored: String, configured: String },
    #[error("key id {key_id} does not unwrap the backup's keyset although the manifest verifies: the manifest is forged")]
    KeysetUnwrap { key_id: String },
    #[error(
        "no primary key is configured (broker.data.backup.encryption.primaryKey) to encrypt with"
    )]
    NoPrimaryKey,
    #[error("files[{index}]: name={name} sizeBytes={size_bytes} storedBytes={stored_bytes} but its pieces add up to sizeBytes={pieces_size_bytes} storedBytes={pieces_stored_bytes}")]
    PiecesSizeMismatch {
        index: usize,
        name: String,
        size_bytes: u64,
        stored_bytes: u64,
        pieces_size_bytes: u64,
        pieces_stored_bytes: u64,
    },
}

/// Checks that `snapshot_id` is a snapshot id: exactly `SNAPSHOT_ID_LEN`
/// ASCII digits, the broker's snapshot directory name.
pub fn validate_snapshot_id(snapshot_id: &str) -> Result<(), BackupStoreError> {
    if snapshot_id.len() == SNAPSHOT_ID_LEN && snapshot_id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(BackupStoreError::InvalidField {
            field: "descriptor.snapshotId",
            value: snapshot_id.to_string(),
            grammar: "exactly 20 ASCII digits",
        })
    }
}

/// Checks that `name` can be used as a backup file name: 1 to
/// [`FILE_NAME_LEN_MAX`] characters of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub(crate) fn validate_file_name(name: &str) -> Result<(), BackupStoreError> {
    let valid = !name.is_empty()
        && name.len() <= FILE_NAME_LEN_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BackupStoreError::InvalidFileName {
            name: name.to_string(),
        })
    }
}

/// The canonical bytes of a JSON value, over which the manifest checksum is
/// computed: compact, object keys sorted by their UTF-8 bytes at every level,
/// strings and numbers as `serde_json` writes them. Independent of the key
/// order of the document (and of serde_json's `preserve_order` feature), so
/// that any release computes the same bytes for the same content.
pub(crate) fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
        match value {
            serde_json::Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                out.push(b'{');
                for (index, key) in keys.into_iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).expect("strings serialize");
                    out.push(b':');
                    write(&fields[key], out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// Formats a CRC32C as stored in [`FileEntry::checksum`].
pub(crate) fn format_checksum(crc: u32) -> String {
    format!("crc32c:{crc:08x}")
}

/// Parses a [`FileEntry::checksum`]; `None` unless it is `crc32c:<8 lowercase hex digits>`.
pub(crate) fn parse_checksum(checksum: &str) -> Option<u32> {
    let hex = checksum.strip_prefix("crc32c:")?;
    if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(snapshot_id: Option<&str>, files: &[(&str, FileKind)]) -> Manifest {
        Manifest::in_progress(
            BackupIdentifier::new(1, 42, 0),
            BackupDescriptor {
                snapshot_id: snapshot_id.map(str::to_string),
                checkpoint_position: 7,
                number_of_partitions: 3,
                broker_version: "1.2.3".to_string(),
                request: None,
            },
        )
        .complete(
            files
                .iter()
                .map(|(name, kind)| FileEntry {
                    name: name.to_string(),
                    kind: *kind,
                    size_bytes: 5,
                    checksum: "crc32c:0000abcd".to_string(),
                    compression: None,
                    stored_bytes: 5,
                    pieces: None,
                })
                .collect(),
        )
    }

    /// `Manifest::choose` as data: manifest sets of one partition (node, status, lastUpdatedAt)
    /// and the node whose manifest speaks for it, with node 1 hosting the partition.
    #[test]
    fn one_rule_chooses_the_manifest_that_speaks_for_a_partition() {
        use BackupStatus::{Completed as C, Failed as F, InProgress as I};
        const HOSTING: u32 = 1;
        const T1: &str = "2024-05-01T12:00:01.000Z";
        const T2: &str = "2024-05-01T12:00:02.000Z";
        const T3: &str = "2024-05-01T12:00:03.000Z";
        // (why, manifests as (node, status, lastUpdatedAt), the chosen manifest's node)
        type Case<'a> = (&'a str, Vec<(u32, BackupStatus, &'a str)>, Option<u32>);
        let cases: Vec<Case> = vec![
            ("nothing to choose from", vec![], None),
            (
                "the only one, whatever its status",
                vec![(0, F, T1)],
                Some(0),
            ),
            ("the only one, in progress", vec![(2, I, T1)], Some(2)),
            (
                "COMPLETED before a newer FAILED",
                vec![(0, C, T1), (1, F, T3)],
                Some(0),
            ),
            (
                "COMPLETED before a newer IN_PROGRESS",
                vec![(1, I, T3), (2, C, T1)],
                Some(2),
            ),
            (
                "the hosting node's COMPLETED before a newer COMPLETED",
                vec![(0, C, T3), (1, C, T1)],
                Some(1),
            ),
            (
                "the newest COMPLETED when the hosting node has none",
                vec![(0, C, T1), (2, C, T2), (1, F, T3)],
                Some(2),
            ),
            (
                "the hosting node counts only among COMPLETED: the newest FAILED",
                vec![(1, I, T1), (0, F, T2)],
                Some(0),
            ),
            (
                "the newest of the unfinished",
                vec![(0, I, T1), (2, F, T3), (3, I, T2)],
                Some(2),
            ),
            (
                "equal times: the lowest node",
                vec![(3, C, T2), (2, C, T2)],
                Some(2),
            ),
            (
                "equal times, none hosting or completed: the lowest node",
                vec![(3, F, T2), (0, F, T2)],
                Some(0),
            ),
            // Times, not text: as text "…03Z" sorts after "…03.500Z", as times it is earlier.
            (
                "times, not strings",
                vec![
                    (0, C, "2024-05-01T12:00:03Z"),
                    (2, C, "2024-05-01T12:00:03.500Z"),
                ],
                Some(2),
            ),
            (
                "an unparseable time counts as oldest",
                vec![(0, F, "yesterday"), (2, F, T1)],
                Some(2),
            ),
        ];
        for (why, manifests, expected) in cases {
            let manifests: Vec<Manifest> = manifests
                .into_iter()
                .map(|(node, status, updated)| Manifest {
                    status,
                    failure_reason: (status == F).then(|| "failed".to_string()),
                    last_updated_at: updated.to_string(),
                    ..Manifest::in_progress(
                        BackupIdentifier::new(1, 42, node),
                        manifest(None, &[]).descriptor,
                    )
                })
                .collect();
            let chosen = Manifest::choose(&manifests, HOSTING).map(|m| m.id.node_id);
            assert_eq!(chosen, expected, "{why}: {manifests:?}");
            // The order of the listing does not matter.
            let reversed: Vec<Manifest> = manifests.iter().rev().cloned().collect();
            let chosen = Manifest::choose(&reversed, HOSTING).map(|m| m.id.node_id);
            assert_eq!(chosen, expected, "{why} (reversed)");
        }
    }

    #[test]
    fn values_that_become_paths_are_held_to_their_grammar() {
        let segment = ("00000000000000000001.log", FileKind::Segment);
        let state = ("state.rkyv", FileKind::Snapshot);
        // (snapshot id, files, the error names this, or None when valid)
        type Case<'a> = (Option<&'a str>, Vec<(&'a str, FileKind)>, Option<&'a str>);
        let cases: &[Case] = &[
            (Some("00000000000000000006"), vec![segment, state], None),
            (None, vec![segment], None),
            (Some("18446744073709551615"), vec![state], None),
            (
                Some("/tmp/sluice-escape"),
                vec![state],
                Some("field=descriptor.snapshotId value=\"/tmp/sluice-escape\""),
            ),
            (Some("../../etc"), vec![state], Some("value=\"../../etc\"")),
            (
                Some("0000000000000000006"),
                vec![],
                Some("descriptor.snapshotId"),
            ),
            (
                Some("000000000000000000061"),
                vec![],
                Some("descriptor.snapshotId"),
            ),
            (
                Some("0000000000000000006a"),
                vec![],
                Some("descriptor.snapshotId"),
            ),
            (
                Some("０0000000000000000006"),
                vec![],
                Some("descriptor.snapshotId"),
            ),
            (Some(""), vec![], Some("descriptor.snapshotId")),
            (
                Some("00000000000000000006"),
                vec![("../x", FileKind::Segment)],
                Some("files[0].name: invalid backup file name: name=\"../x\""),
            ),
            (
                Some("00000000000000000006"),
                vec![segment, ("/abs", FileKind::Snapshot)],
                Some("files[1].name"),
            ),
            (
                None,
                vec![state],
                Some(
                    "files[0] name=state.rkyv is a snapshot file but descriptor.snapshotId is null",
                ),
            ),
        ];
        for (snapshot_id, files, expected) in cases {
            let result = manifest(*snapshot_id, files).validate();
            match expected {
                None => assert!(result.is_ok(), "{snapshot_id:?} {files:?}: {result:?}"),
                Some(expected) => {
                    let error = result
                        .expect_err(&format!("{snapshot_id:?} {files:?} must be refused"))
                        .to_string();
                    assert!(
                        error.contains(expected),
                        "{error} should contain {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn stored_manifests_carry_a_checksum_that_catches_damage() {
        let manifest = manifest(
            Some("00000000000000000006"),
            &[("00000000000000000001.log", FileKind::Segment)],
        );
        let json = manifest.to_stored_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"manifestChecksum\": \"crc32c:"), "{text}");
        assert_eq!(Manifest::from_stored_json(&json).unwrap(), manifest);

        // Damage that still parses and validates: another position, another size.
        for (from, to) in [
            ("\"checkpointPosition\": 7", "\"checkpointPosition\": 8"),
            ("\"crc32c:0000abcd\"", "\"crc32c:0000abce\""),
        ] {
            assert!(text.contains(from), "{from}");
            let damaged = text.replacen(from, to, 1);
            let parsed: Manifest = serde_json::from_str(&damaged).unwrap();
            let validated = parsed.validate();
            assert!(
                validated.is_ok(),
                "the damage is otherwise invisible: {validated:?}"
            );
            let error = Manifest::from_stored_json(damaged.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("the manifest is damaged: manifestChecksum="),
                "{error}"
            );
        }
        // A checksum that is not a string is damage too.
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value[MANIFEST_CHECKSUM_FIELD] = serde_json::json!(12);
        let error = Manifest::from_stored_json(&serde_json::to_vec(&value).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("damaged"), "{error}");

        // Key order and whitespace are not content: a compact, reordered copy reads.
        let reordered = {
            let mut fields: Vec<(String, serde_json::Value)> =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
                    .unwrap()
                    .into_iter()
                    .collect();
            fields.reverse();
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
                .collect();
            format!("{{{}}}", body.join(","))
        };
        assert_eq!(
            Manifest::from_stored_json(reordered.as_bytes()).unwrap(),
            manifest
        );

        // Written before manifests had checksums: read as before.
        let legacy = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(Manifest::from_stored_json(&legacy).unwrap(), manifest);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": [{"z": 1, "a": "x\"y"}], "a": null, "c": 18446744073709551615u64});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":null,"b":[{"a":"x\"y","z":1}],"c":18446744073709551615}"#
        );
    }

    #[test]
    fn manifests_larger_than_the_cap_are_not_written() {
        let names: Vec<String> = (0..60_000).map(|i| format!("{i:020}.log")).collect();
        let files: Vec<(&str, FileKind)> = names
            .iter()
            .map(|n| (n.as_str(), FileKind::Segment))
            .collect();
        let error = manifest(None, &files)
            .to_stored_json()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("more than the limit of 8388608 bytes (60000 files)"),
            "{error}"
        );
        let files: Vec<(&str, FileKind)> = files[..10_000].to_vec();
        assert!(manifest(None, &files).to_stored_json().is_ok());
    }
}
