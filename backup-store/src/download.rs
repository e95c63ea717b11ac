//! Verified downloads: ranged requests pinned to one object version, streaming
//! decompression, size and CRC32C checked against the manifest entry, the
//! destination created new and removed on any mismatch.

use std::path::Path as LocalPath;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use crate::codec::{Decompressor, DECODED_BYTES_PER_STEP_MAX, SCRATCH_BYTES, ZSTD_WINDOW_LOG_MAX};
use crate::manifest::{
    format_checksum, parse_checksum, validate_file_name, BackupIdentifier, FileEntry, Manifest,
    ZSTD_COMPRESSION,
};
use crate::{BackupStore, BackupStoreError};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// Downloads fetch objects in ranges of this size, each one request (so that
/// each is bounded by the per-request timeout, whatever the object's size).
pub(crate) const DOWNLOAD_RANGE_BYTES: u64 = 8 * 1024 * 1024;

/// The maximum number of ranges of one download in flight at once.
pub(crate) const RANGES_CONCURRENT_MAX: usize = 4;

/// The most bytes a [`BackupStore::download_file`] of `entry` holds in memory at once, so that
/// a caller running several downloads can keep them all under one budget. For a pooled file:
/// its `RANGES_CONCURRENT_MAX` largest pieces, each with its stored bytes, its decrypted
/// payload (at most as large; none for a plain object, counted anyway) and its plaintext, all
/// held while the envelope is opened. Otherwise: `RANGES_CONCURRENT_MAX` ranges of
/// `DOWNLOAD_RANGE_BYTES` (or the whole object when smaller) and, when compressed, the
/// decoder's largest window, its scratch buffer and the output of one step.
pub fn download_memory_bytes_max(entry: &FileEntry) -> u64 {
    if let Some(pieces) = &entry.pieces {
        let mut each: Vec<u64> = pieces
            .iter()
            .map(|p| (2 * p.stored_bytes).saturating_add(p.size_bytes))
            .collect();
        each.sort_unstable_by(|a, b| b.cmp(a));
        return each
            .iter()
            .take(RANGES_CONCURRENT_MAX)
            .fold(0, |sum, bytes| sum.saturating_add(*bytes));
    }
    let ranges = entry
        .stored_bytes
        .min(RANGES_CONCURRENT_MAX as u64 * DOWNLOAD_RANGE_BYTES);
    let decoding = if entry.compression.is_some() {
        (1u64 << ZSTD_WINDOW_LOG_MAX) + SCRATCH_BYTES as u64 + DECODED_BYTES_PER_STEP_MAX as u64
    } else {
        0
    };
    ranges + decoding
}

impl BackupStore {
    /// Downloads a backed-up file of `manifest` to `destination`, which must not exist (it
    /// is created new, never truncated; its missing parent directories are
    /// created), streaming, and fsyncs it at the end.
    ///
    /// The object's size must be the entry's `stored_bytes`; it is fetched in
    /// ranges of `DOWNLOAD_RANGE_BYTES` (at most `RANGES_CONCURRENT_MAX` in
    /// flight, each one request bounded by the request timeout, all pinned to
    /// the object version seen first), decompressed while streaming when the
    /// entry says so, and the result must have the entry's `size_bytes` and
    /// CRC32C. Decompression stops as soon as the output exceeds `size_bytes`.
    ///
    /// A size, checksum or decompression mismatch gives
    /// [`BackupStoreError::Corrupt`], a missing object
    /// [`BackupStoreError::MissingObject`], an existing destination
    /// [`BackupStoreError::Io`] (`AlreadyExists`, left untouched); on any
    /// error after this call created the destination, it is removed.
    pub async fn download_file(
        &self,
        manifest: &Manifest,
        entry: &FileEntry,
        destination: &LocalPath,
    ) -> Result<()> {
        let id = &manifest.id;
        if let Some(pieces) = &entry.pieces {
            validate_file_name(&entry.name)?;
            let keys = self.keys_of(manifest)?;
            return self
                .download_pooled(id, entry, pieces, keys.as_ref(), destination)
                .await;
        }
        let path = self.file_path(id, entry.kind, &entry.name)?;
        let (expected_crc, compressed) = self.stored_format(id, entry)?;
        let Some(meta) = self.head_optional(&path).await? else {
            return Err(BackupStoreError::MissingObject {
                path: path.to_string(),
            });
        };
        if meta.size != entry.stored_bytes {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{} bytes in the store", entry.stored_bytes),
                actual: format!("{} bytes", meta.size),
            });
        }
        let mut output = VerifiedFile::create(destination, &path, entry.size_bytes).await?;

        let outcome = async {
            self.write_object(&path, &meta, compressed, &mut output)
                .await?;
            output.finish(&entry.checksum, expected_crc).await
        }
        .await;

        if let Err(error) = outcome {
            output.discard().await;
            return Err(error);
        }
        debug!(%path, destination = %destination.display(), size = entry.size_bytes, stored = entry.stored_bytes, "downloaded backup file");
        Ok(())
    }

    /// The expected CRC32C of an unpooled file and whether it is stored zstd-compressed; an
    /// entry this release cannot read is an invalid manifest.
    fn stored_format(&self, id: &BackupIdentifier, entry: &FileEntry) -> Result<(u32, bool)> {
        let invalid_entry = |reason: String| BackupStoreError::InvalidManifest {
            path: self.manifest_path(id).to_string(),
            reason,
        };
        let expected_crc = parse_checksum(&entry.checksum).ok_or_else(|| {
            invalid_entry(format!(
                "invalid checksum: name={} checksum={:?} (expected crc32c:<8 lowercase hex digits>)",
                entry.name, entry.checksum
            ))
        })?;
        let compressed = match entry.compression.as_deref() {
            None => false,
            Some(ZSTD_COMPRESSION) => true,
            Some(other) => {
                return Err(invalid_entry(format!(
                    "unsupported compression={other:?} of file name={}",
                    entry.name
                )))
            }
        };
        Ok((expected_crc, compressed))
    }

    /// Writes the object at `path` (as `meta` describes it) into `output` in ranges,
    /// decompressing on the way when it is `compressed`.
    async fn write_object(
        &self,
        path: &Path,
        meta: &ObjectMeta,
        compressed: bool,
        output: &mut VerifiedFile<'_>,
    ) -> Result<()> {
        let corrupt_stream = |e: std::io::Error| BackupStoreError::Corrupt {
            path: path.to_string(),
            expected: "a zstd-compressed object".to_string(),
            actual: format!("undecodable data ({e})"),
        };
        let mut decompressor = if compressed {
            Some(
                Decompressor::new().map_err(|e| BackupStoreError::Compression {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let size = meta.size;
        let ranges = (0..size)
            .step_by(DOWNLOAD_RANGE_BYTES as usize)
            .map(|start| start..(start + DOWNLOAD_RANGE_BYTES).min(size));
        let mut chunks = futures::stream::iter(ranges)
            .map(|range| self.get_range(path, range, meta.e_tag.clone()))
            .buffered(RANGES_CONCURRENT_MAX);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            match decompressor.as_mut() {
                None => output.write(&chunk).await?,
                Some(decompressor) => {
                    let mut start = 0;
                    loop {
                        let decoded = decompressor
                            .step(chunk.clone(), start)
                            .await
                            .map_err(corrupt_stream)?;
                        for piece in &decoded.pieces {
                            output.write(piece).await?;
                        }
                        start = decoded.consumed;
                        if !decoded.more {
                            break;
                        }
                    }
                }
            }
        }
        if decompressor.is_some_and(|d| !d.frame_complete()) {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: "a complete zstd frame".to_string(),
                actual: "the compressed data ends inside the frame".to_string(),
            });
        }
        Ok(())
    }

    /// One range of an object, which must not have changed since `e_tag`.
    async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
        e_tag: Option<String>,
    ) -> Result<Bytes> {
        let expected = range.end - range.start;
        let start = range.start;
        let options = GetOptions {
            if_match: e_tag,
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let error = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => BackupStoreError::MissingObject {
                path: path.to_string(),
            },
            object_store::Error::Precondition { .. } => BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: "an object that does not change".to_string(),
                actual: "the object was replaced during the download".to_string(),
            },
            e => BackupStoreError::object_store("get", path, e),
        };
        let bytes = self
            .store
            .get_opts(path, options)
            .await
            .map_err(error)?
            .bytes()
            .await
            .map_err(error)?;
        if bytes.len() as u64 != expected {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{expected} bytes at offset {start}"),
                actual: format!("{} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }
}

/// The destination of a download: counts and checksums what is written.
pub(crate) struct VerifiedFile<'a> {
    file: tokio::fs::File,
    destination: &'a LocalPath,
    path: &'a Path,
    expected_size: u64,
    size: u64,
    crc: u32,
}

impl<'a> VerifiedFile<'a> {
    /// Creates `destination` new (and its missing parent directories): never
    /// opened over an existing file, as a download must not truncate (nor, on
    /// failure, remove) anything it did not create. `path` names what is
    /// downloaded in errors.
    pub(crate) async fn create(
        destination: &'a LocalPath,
        path: &'a Path,
        expected_size: u64,
    ) -> Result<VerifiedFile<'a>> {
        if let Some(parent) = destination.parent() {
            if !parent.as_os_str().is_empty() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| BackupStoreError::io(parent, e))?;
            }
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(destination)
            .await
            .map_err(|e| BackupStoreError::io(destination, e))?;
        Ok(VerifiedFile {
            file,
            destination,
            path,
            expected_size,
            size: 0,
            crc: 0,
        })
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > self.expected_size {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: format!("{} bytes", self.expected_size),
                actual: format!("more than {} bytes", self.expected_size),
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))
    }

    /// Closes and removes the destination (a download that failed): only what this download
    /// created.
    pub(crate) async fn discard(self) {
        let destination = self.destination;
        drop(self.file);
        if let Err(error) = tokio::fs::remove_file(destination).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %destination.display(), %error, "cannot remove partially downloaded file");
            }
        }
    }

    /// Checks size and checksum, then flushes and fsyncs.
    pub(crate) async fn finish(&mut self, checksum: &str, expected_crc: u32) -> Result<()> {
        if self.size != self.expected_size {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: format!("{} bytes", self.expected_size),
                actual: format!("{} bytes", self.size),
            });
        }
        if self.crc != expected_crc {
            return Err(BackupStoreError::Corrupt {
                path: self.path.to_string(),
                expected: checksum.to_string(),
                actual: format_checksum(self.crc),
            });
        }
        self.file
            .flush()
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| BackupStoreError::io(self.destination, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileKind;
    use crate::pool::{ObjectId, PieceEntry, PIECE_BYTES_MAX};

    const MIB: u64 = 1024 * 1024;

    fn entry(stored_bytes: u64, compression: Option<&str>, pieces: Option<Vec<u64>>) -> FileEntry {
        FileEntry {
            kind: FileKind::Segment,
            name: "00000000000000000001.log".to_string(),
            size_bytes: stored_bytes,
            checksum: format_checksum(0),
            stored_bytes,
            compression: compression.map(str::to_string),
            pieces: pieces.map(|sizes| {
                sizes
                    .into_iter()
                    .map(|size_bytes| PieceEntry {
                        object: ObjectId::of(&[]),
                        size_bytes,
                        stored_bytes: size_bytes + 16,
                    })
                    .collect()
            }),
        }
    }

    /// The memory of one download as data: (what is downloaded, the most bytes it may hold).
    #[test]
    fn a_download_holds_at_most_its_requests_in_flight() {
        let piece = PIECE_BYTES_MAX;
        let cases = [
            // A small unpooled file: the whole object.
            (entry(1000, None, None), 1000),
            // A large one: four ranges of 8 MiB.
            (entry(1024 * MIB, None, None), 32 * MIB),
            // Compressed: plus window (8 MiB), scratch (1 MiB) and one step's output (8 MiB).
            (entry(1024 * MIB, Some(ZSTD_COMPRESSION), None), 49 * MIB),
            // Pooled: the four largest pieces, stored, decrypted and plaintext.
            (
                entry(
                    0,
                    None,
                    Some(vec![10, piece, 20, piece, piece, 30, piece, piece]),
                ),
                4 * (3 * piece + 32),
            ),
            (
                entry(0, None, Some(vec![10, 20])),
                2 * (10 + 16) + 10 + 2 * (20 + 16) + 20,
            ),
            (entry(0, None, Some(vec![])), 0),
        ];
        for (entry, expected) in cases {
            assert_eq!(download_memory_bytes_max(&entry), expected, "{entry:?}");
        }
    }
}
