//! Snapshots of a partition's ledger state.
//!
//! # On-disk layout
//! `<partition dir>/snapshots/<processed position, 20 digits>/` holding
//! - `state.rkyv`: the [`LedgerState`] serialized with rkyv;
//! - `snapshot.json`: [`SnapshotMeta`], with the size and CRC32C of `state.rkyv`.
//!
//! The snapshot id is the directory name. A snapshot is written into `<id>.tmp/`, fsynced, then
//! renamed into place, so a directory without the `.tmp` suffix is always complete. Files are
//! immutable once renamed: a backup uploads them while the partition keeps going.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, BrokerError, Result};
use crate::state::LedgerState;

pub const STATE_FILE: &str = "state.rkyv";
pub const META_FILE: &str = "snapshot.json";
const TMP_SUFFIX: &str = ".tmp";

/// The layout of `state.rkyv`. Version 2: transfers keyed by their debit's position, the credit
/// guard per source partition, `held_total` (hardening of transfers). Version 1 states cannot be
/// decoded by this release and are refused by version, never decoded as something else.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    pub format_version: u32,
    pub snapshot_id: String,
    pub processed_position: u64,
    pub state_bytes: u64,
    pub state_checksum: String,
}

/// A snapshot on disk, valid when it was listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub meta: SnapshotMeta,
    pub dir: PathBuf,
}

impl SnapshotRef {
    /// The files of the snapshot, as a backup uploads them: (name, path).
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        [STATE_FILE, META_FILE]
            .iter()
            .map(|name| (name.to_string(), self.dir.join(name)))
            .collect()
    }
}

pub fn snapshot_id(processed_position: u64) -> String {
    format!("{processed_position:020}")
}

fn checksum(bytes: &[u8]) -> String {
    format!("crc32c:{:08x}", crc32c::crc32c(bytes))
}

/// Writes a snapshot of `state` under `snapshots_dir` and returns it.
///
/// A snapshot already in place at the same position is adopted only if it verifies in full
/// (metadata, size, CRC32C, decoding, position): what this returns becomes the partition's newest
/// snapshot, and compaction then deletes older snapshots and the segments before it. One that
/// does not verify (recovery skipped it, so the state was replayed from an older one) is
/// removed and written anew.
pub fn write(snapshots_dir: &Path, state: &LedgerState) -> Result<SnapshotRef> {
    let id = snapshot_id(state.processed_position);
    let final_dir = snapshots_dir.join(&id);
    if final_dir.exists() {
        match read(&final_dir).and_then(|existing| load(&existing).map(|_| existing)) {
            Ok(existing) => return Ok(existing),
            Err(error) => {
                tracing::warn!(%error, path = %final_dir.display(),
                    "an existing snapshot does not verify: writing it anew");
                fs::remove_dir_all(&final_dir)
                    .map_err(io_err(&final_dir, "remove corrupt snapshot"))?;
                sync_dir(snapshots_dir)?;
            }
        }
    }
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(state).map_err(|error| {
        BrokerError::CorruptSnapshot {
            path: final_dir.clone(),
            reason: format!("cannot serialize the state: {error}"),
        }
    })?;
    let meta = SnapshotMeta {
        format_version: SNAPSHOT_FORMAT_VERSION,
        snapshot_id: id.clone(),
        processed_position: state.processed_position,
        state_bytes: bytes.len() as u64,
        state_checksum: checksum(&bytes),
    };
    let tmp_dir = snapshots_dir.join(format!("{id}{TMP_SUFFIX}"));
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir).map_err(io_err(&tmp_dir, "remove stale snapshot"))?;
    }
    fs::create_dir_all(&tmp_dir).map_err(io_err(&tmp_dir, "create snapshot directory"))?;
    write_synced(&tmp_dir.join(STATE_FILE), &bytes)?;
    let meta_json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
    write_synced(&tmp_dir.join(META_FILE), &meta_json)?;
    sync_dir(&tmp_dir)?;
    fs::rename(&tmp_dir, &final_dir).map_err(io_err(&final_dir, "rename snapshot into place"))?;
    sync_dir(snapshots_dir)?;
    Ok(SnapshotRef {
        meta,
        dir: final_dir,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(io_err(path, "create file"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path, "write file"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Reads and validates the metadata of the snapshot in `dir` (not the state itself).
pub fn read(dir: &Path) -> Result<SnapshotRef> {
    let meta_path = dir.join(META_FILE);
    let bytes = fs::read(&meta_path).map_err(io_err(&meta_path, "read snapshot metadata"))?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&bytes).map_err(|error| BrokerError::CorruptSnapshot {
            path: meta_path.clone(),
            reason: format!("invalid metadata: {error}"),
        })?;
    if meta.format_version != SNAPSHOT_FORMAT_VERSION {
        return Err(BrokerError::CorruptSnapshot {
            path: meta_path,
            reason: format!(
                "snapshot formatVersion={} is not the formatVersion={SNAPSHOT_FORMAT_VERSION} of this release; \
                 read it with the release that wrote it",
                meta.format_version
            ),
        });
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() != Some(meta.snapshot_id.as_str())
        || meta.snapshot_id != snapshot_id(meta.processed_position)
    {
        return Err(BrokerError::CorruptSnapshot {
            path: meta_path,
            reason: format!(
                "snapshot id {} does not match its directory or position",
                meta.snapshot_id
            ),
        });
    }
    Ok(SnapshotRef {
        meta,
        dir: dir.to_path_buf(),
    })
}

/// Loads the state of a snapshot, verifying size and checksum.
pub fn load(snapshot: &SnapshotRef) -> Result<LedgerState> {
    let path = snapshot.dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io_err(&path, "read snapshot state"))?;
    let corrupt = |reason: String| BrokerError::CorruptSnapshot {
        path: path.clone(),
        reason,
    };
    if bytes.len() as u64 != snapshot.meta.state_bytes {
        return Err(corrupt(format!(
            "size {} differs from the recorded {}",
            bytes.len(),
            snapshot.meta.state_bytes
        )));
    }
    let actual = checksum(&bytes);
    if actual != snapshot.meta.state_checksum {
        return Err(corrupt(format!(
            "checksum {actual} differs from the recorded {}",
            snapshot.meta.state_checksum
        )));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(&bytes);
    let state = rkyv::from_bytes::<LedgerState, rkyv::rancor::Error>(&aligned)
        .map_err(|error| corrupt(format!("cannot decode the state: {error}")))?;
    if state.processed_position != snapshot.meta.processed_position {
        return Err(corrupt(format!(
            "state is at position {} but the metadata says {}",
            state.processed_position, snapshot.meta.processed_position
        )));
    }
    Ok(state)
}

/// Lists complete snapshots, newest first; removes leftovers of interrupted writes.
pub fn list(snapshots_dir: &Path) -> Result<Vec<SnapshotRef>> {
    if !snapshots_dir.exists() {
        return Ok(Vec::new());
    }
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(snapshots_dir).map_err(io_err(snapshots_dir, "list snapshots"))? {
        let entry = entry.map_err(io_err(snapshots_dir, "list snapshots"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_err(&path, "remove interrupted snapshot"))?;
            continue;
        }
        match read(&entry.path()) {
            Ok(snapshot) => snapshots.push(snapshot),
            Err(error) => tracing::warn!(%error, "skipping invalid snapshot"),
        }
    }
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.meta.processed_position));
    Ok(snapshots)
}

/// Deletes a snapshot directory.
pub fn delete(snapshot: &SnapshotRef) -> Result<()> {
    fs::remove_dir_all(&snapshot.dir).map_err(io_err(&snapshot.dir, "delete snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Command;

    #[test]
    fn write_list_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = LedgerState::new(1, 1);
        state.apply(
            1,
            &Command::Deposit {
                account: "a".into(),
                amount: 5,
            },
        );
        state.apply(2, &Command::checkpoint(9));
        let first = write(dir.path(), &state).unwrap();
        state.apply(
            3,
            &Command::Deposit {
                account: "b".into(),
                amount: 7,
            },
        );
        let second = write(dir.path(), &state).unwrap();
        fs::create_dir(dir.path().join("00000000000000000099.tmp")).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![second.clone(), first]);
        assert!(!dir.path().join("00000000000000000099.tmp").exists());
        assert_eq!(load(&second).unwrap(), state);
    }

    /// A snapshot directory in the way of a new snapshot at the same position, damaged in each
    /// of these ways, is rewritten: what `write` returns loads and holds `state`.
    #[test]
    fn a_corrupt_snapshot_in_the_way_is_rewritten() {
        type Damage = fn(&Path);
        let flip_first_byte: Damage = |dir| {
            let path = dir.join(STATE_FILE);
            let mut bytes = fs::read(&path).unwrap();
            bytes[0] ^= 0x55;
            fs::write(&path, bytes).unwrap();
        };
        let truncate_state: Damage = |dir| {
            let path = dir.join(STATE_FILE);
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        };
        let remove_state: Damage = |dir| fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let garble_meta: Damage = |dir| fs::write(dir.join(META_FILE), b"{not json").unwrap();
        let remove_meta: Damage = |dir| fs::remove_file(dir.join(META_FILE)).unwrap();
        // Size and CRC match the garbage, so only decoding can tell.
        let consistent_garbage: Damage = |dir| {
            let garbage = vec![0xa5u8; 64];
            fs::write(dir.join(STATE_FILE), &garbage).unwrap();
            let meta_path = dir.join(META_FILE);
            let mut meta: SnapshotMeta =
                serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
            meta.state_bytes = garbage.len() as u64;
            meta.state_checksum = checksum(&garbage);
            fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        };
        let cases: [(&str, Damage); 6] = [
            ("a flipped byte in the state", flip_first_byte),
            ("a truncated state", truncate_state),
            ("a missing state", remove_state),
            ("garbled metadata", garble_meta),
            ("missing metadata", remove_meta),
            ("garbage with matching size and CRC", consistent_garbage),
        ];
        let mut state = LedgerState::new(1, 1);
        state.apply(
            1,
            &Command::Deposit {
                account: "a".into(),
                amount: 5,
            },
        );
        for (name, damage) in cases {
            let dir = tempfile::tempdir().unwrap();
            let first = write(dir.path(), &state).unwrap();
            damage(&first.dir);
            let again = write(dir.path(), &state).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(again.dir, first.dir, "{name}");
            assert_eq!(load(&again).expect(name), state, "{name}");
            assert_eq!(list(dir.path()).unwrap(), vec![again], "{name}");
        }
        // An intact one is adopted as it is.
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), &state).unwrap();
        assert_eq!(write(dir.path(), &state).unwrap(), first);
    }

    #[test]
    fn corrupt_state_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = LedgerState::new(1, 1);
        state.apply(
            1,
            &Command::Deposit {
                account: "a".into(),
                amount: 5,
            },
        );
        let snapshot = write(dir.path(), &state).unwrap();
        let path = snapshot.dir.join(STATE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0x55;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            load(&snapshot),
            Err(BrokerError::CorruptSnapshot { .. })
        ));
    }
}
