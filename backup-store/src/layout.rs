//! Where backups live in the bucket: [`Layout`].

use std::str::FromStr;

use object_store::path::Path;

use crate::manifest::{validate_file_name, BackupIdentifier, FileKind};
use crate::BackupStoreError;

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The name of the manifest object in a backup folder.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";

/// The in-bucket layout of backups below a base path:
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    base: Path,
}

impl Layout {
    /// The layout below `base_path` as configured: leading and trailing `/`
    /// are ignored, and the rest must be a valid object path.
    pub(crate) fn parse(base_path: Option<&str>) -> Result<Self> {
        Ok(Self {
            base: parse_base_path(base_path)?,
        })
    }

    /// The layout below `base_path` split on `/`; empty segments are ignored
    /// and characters that are not allowed in object paths are
    /// percent-encoded.
    pub(crate) fn from_segments(base_path: Option<String>) -> Self {
        Self {
            base: base_path.map(Path::from).unwrap_or_default(),
        }
    }

    /// The base prefix of all backups, or `None` for the root of the store.
    pub(crate) fn base_path(&self) -> Option<&str> {
        let base: &str = self.base.as_ref();
        (!base.is_empty()).then_some(base)
    }

    /// The prefix of all backups of a partition.
    pub(crate) fn partition_prefix(&self, partition_id: u32) -> Path {
        self.base.child(format!("{partition_id:05}"))
    }

    /// The prefix of all node folders of a checkpoint of a partition.
    pub(crate) fn checkpoint_prefix(&self, partition_id: u32, checkpoint_id: u64) -> Path {
        self.partition_prefix(partition_id)
            .child(format!("{checkpoint_id:020}"))
    }

    /// The folder of one backup.
    pub(crate) fn backup_prefix(&self, id: &BackupIdentifier) -> Path {
        self.checkpoint_prefix(id.partition_id, id.checkpoint_id)
            .child(format!("{:05}", id.node_id))
    }

    /// The path of a backup's manifest.
    pub(crate) fn manifest_path(&self, id: &BackupIdentifier) -> Path {
        self.backup_prefix(id).child(MANIFEST_FILE_NAME)
    }

    /// The path of a backed-up file; fails if `name` is not a valid file name.
    pub(crate) fn file_path(
        &self,
        id: &BackupIdentifier,
        kind: FileKind,
        name: &str,
    ) -> Result<Path> {
        validate_file_name(name)?;
        Ok(self.backup_prefix(id).child(kind.folder()).child(name))
    }

    /// The base prefix as a listing prefix (`None` for the root).
    pub(crate) fn base_option(&self) -> Option<&Path> {
        self.base_path().map(|_| &self.base)
    }
}

/// Parses a zero-padded id folder name; only ASCII digits are accepted.
pub(crate) fn parse_padded_id<T: FromStr>(name: &str) -> Option<T> {
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
        option: "BackupStoreOptions.base_path",
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
}
