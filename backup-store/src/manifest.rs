//! The backup manifest: the JSON document that describes one backup of one
//! partition taken by one node, and whose status is the commit point of the
//! backup.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::BackupStoreError;

/// The manifest format version written for backups without compressed files;
/// every release reads it.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The manifest format version written when a file of the backup is
/// compressed (see [`FileEntry::compression`]). Releases that understand only
/// version 1 refuse it ("use a newer release") instead of reporting the
/// compressed objects as corrupt. The newest version this crate understands.
pub const MANIFEST_FORMAT_VERSION_COMPRESSED: u32 = 2;

/// The value of [`FileEntry::compression`] for zstd-compressed files.
pub const ZSTD_COMPRESSION: &str = "zstd";

/// The longest file name accepted by [`validate_file_name`].
pub const MAX_FILE_NAME_LEN: usize = 255;

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
    /// [`ZSTD_COMPRESSION`]. Omitted from the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The size of the object in the store; equals `size_bytes` when the file
    /// is not compressed.
    pub stored_bytes: u64,
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
        }
    }
}

impl FileEntry {
    /// Whether the stored object is compressed.
    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }
}

/// The lowest manifest format version that can describe `files`.
fn required_format_version(files: &[FileEntry]) -> u32 {
    if files.iter().any(FileEntry::is_compressed) {
        MANIFEST_FORMAT_VERSION_COMPRESSED
    } else {
        MANIFEST_FORMAT_VERSION
    }
}

/// The manifest of one backup (see [`crate::BackupStore`] for where it lives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`], or [`MANIFEST_FORMAT_VERSION_COMPRESSED`]
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
}

/// The current time as RFC 3339 with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn now_rfc3339() -> String {
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
        }
    }

    /// This manifest as `COMPLETED` with the given files (the format version
    /// becomes [`MANIFEST_FORMAT_VERSION_COMPRESSED`] if one is compressed).
    pub fn complete(self, files: Vec<FileEntry>) -> Self {
        Self {
            format_version: self.format_version.max(required_format_version(&files)),
            status: BackupStatus::Completed,
            files,
            failure_reason: None,
            last_updated_at: now_rfc3339(),
            ..self
        }
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

    /// Checks the invariants of a manifest; returns the violated one.
    ///
    /// - the format version is [`MANIFEST_FORMAT_VERSION`] or
    ///   [`MANIFEST_FORMAT_VERSION_COMPRESSED`], and the latter if a file is
    ///   compressed;
    /// - `COMPLETED` ⇒ no `failure_reason`; `FAILED` ⇒ `failure_reason` set;
    ///   `IN_PROGRESS` ⇒ no `failure_reason`;
    /// - every file name is valid and appears at most once per kind;
    /// - every checksum has the form `crc32c:<8 lowercase hex digits>`;
    /// - every compression is absent or [`ZSTD_COMPRESSION`]; an uncompressed
    ///   file has `stored_bytes == size_bytes`.
    pub fn validate(&self) -> Result<(), String> {
        if !(MANIFEST_FORMAT_VERSION..=MANIFEST_FORMAT_VERSION_COMPRESSED)
            .contains(&self.format_version)
        {
            return Err(format!(
                "unsupported formatVersion={} (this version understands {} to {}); use a newer release to read this backup",
                self.format_version, MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_COMPRESSED
            ));
        }

        match (self.status, &self.failure_reason) {
            (BackupStatus::Failed, None) => {
                return Err("status=FAILED requires a failureReason".to_string())
            }
            (BackupStatus::Completed | BackupStatus::InProgress, Some(reason)) => {
                return Err(format!(
                    "status={} must not have a failureReason (failureReason={reason:?})",
                    self.status
                ))
            }
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        for file in &self.files {
            validate_file_name(&file.name).map_err(|e| e.to_string())?;
            if !seen.insert((file.kind, file.name.as_str())) {
                return Err(format!(
                    "duplicate file entry: kind={} name={}",
                    file.kind, file.name
                ));
            }
            if parse_checksum(&file.checksum).is_none() {
                return Err(format!(
                    "invalid checksum: name={} checksum={:?} (expected crc32c:<8 lowercase hex digits>)",
                    file.name, file.checksum
                ));
            }
            match file.compression.as_deref() {
                None if file.stored_bytes != file.size_bytes => {
                    return Err(format!(
                        "uncompressed file with storedBytes={} different from sizeBytes={}: name={}",
                        file.stored_bytes, file.size_bytes, file.name
                    ))
                }
                None | Some(ZSTD_COMPRESSION) => {}
                Some(other) => {
                    return Err(format!(
                        "unsupported compression={other:?} of file name={} (this version understands {ZSTD_COMPRESSION:?}); use a newer release to read this backup",
                        file.name
                    ))
                }
            }
        }
        let required = required_format_version(&self.files);
        if self.format_version < required {
            return Err(format!(
                "formatVersion={} cannot describe compressed files (formatVersion={required} is needed)",
                self.format_version
            ));
        }
        Ok(())
    }
}

/// Checks that `name` can be used as a backup file name: 1 to
/// [`MAX_FILE_NAME_LEN`] characters of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn validate_file_name(name: &str) -> Result<(), BackupStoreError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_FILE_NAME_LEN
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

/// Formats a CRC32C as stored in [`FileEntry::checksum`].
pub fn format_checksum(crc: u32) -> String {
    format!("crc32c:{crc:08x}")
}

/// Parses a [`FileEntry::checksum`]; `None` unless it is `crc32c:<8 lowercase hex digits>`.
pub fn parse_checksum(checksum: &str) -> Option<u32> {
    let hex = checksum.strip_prefix("crc32c:")?;
    if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}
