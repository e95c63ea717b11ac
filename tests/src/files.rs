//! Directory trees: fingerprints (to tell "unchanged"), sizes, searches and copies.

use std::fs;
use std::path::{Path, PathBuf};

/// One entry of a [`dir_fingerprint`]: relative path, size and CRC32C of the content (directories
/// have size 0, checksum 0 and a trailing `/`).
pub type FingerprintEntry = (String, u64, u32);

/// Every file and directory below `path`, sorted, with sizes and checksums; `None` when `path`
/// does not exist. Two equal fingerprints mean "unchanged".
pub fn dir_fingerprint(path: &Path) -> Option<Vec<FingerprintEntry>> {
    if fs::symlink_metadata(path).is_err() {
        return None;
    }
    let mut entries = Vec::new();
    walk(path, path, &mut entries);
    entries.sort();
    Some(entries)
}

fn walk(root: &Path, dir: &Path, entries: &mut Vec<FingerprintEntry>) {
    let listing = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in listing {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("below the root")
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            entries.push((format!("{relative}/"), 0, 0));
            walk(root, &path, entries);
        } else {
            let content = fs::read(&path).unwrap_or_default();
            entries.push((relative, meta.len(), crc32c::crc32c(&content)));
        }
    }
}

/// Total size of the regular files below `path` (0 when absent).
pub fn dir_size(path: &Path) -> u64 {
    dir_fingerprint(path)
        .unwrap_or_default()
        .iter()
        .map(|(_, size, _)| size)
        .sum()
}

/// Every regular file below `path` whose relative path satisfies `filter`, sorted.
pub fn find_files(path: &Path, filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    dir_fingerprint(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|(relative, _, _)| !relative.ends_with('/') && filter(relative))
        .map(|(relative, _, _)| path.join(relative))
        .collect()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("list {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}
