//! Streaming uploads of local files: part buffers of the store's one pool,
//! a single `put` or a multipart upload with bounded parts in flight (always
//! aborted when abandoned), optional zstd compression and throttling.

use std::path::Path as LocalPath;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::buffers::{PartBuffer, UploadBuffers};
use crate::codec::Compressor;
use crate::manifest::{compression_name, format_checksum, BackupIdentifier, FileEntry, FileKind};
use crate::{BackupStore, BackupStoreError, Compression, Throttle};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The part size of multipart uploads, and the size of a part buffer: an
/// upload that ends up at most this size is done with a single `put`, a
/// larger one with a multipart upload.
pub(crate) const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// The maximum number of parts of one multipart upload in flight at once.
pub(crate) const PARTS_CONCURRENT_MAX: usize = 4;

/// The read size when uploads are throttled or compressed, for smooth
/// progress at low rates and bounded compression steps.
pub(crate) const THROTTLED_READ_BYTES: usize = 1024 * 1024;

impl BackupStore {
    /// Uploads the first `length` bytes of `local_path` as file `name` of
    /// `kind` of backup `id`, streaming: the file is never loaded in memory.
    ///
    /// The file may be longer than `length` and may still grow (an
    /// append-only log segment): only the prefix is uploaded. With
    /// [`Compression::Zstd`] the bytes are compressed while they stream (one
    /// zstd frame; see the `codec` module for why in blocking tasks). What is
    /// sent goes with one `put` while it fits in one part buffer
    /// (`MULTIPART_PART_BYTES`), else as a multipart upload of
    /// `MULTIPART_PART_BYTES` parts, at most `PARTS_CONCURRENT_MAX` in
    /// flight; a failed multipart upload is aborted. With a `throttle`, every
    /// piece sent waits for it (so the rate limits bytes sent, compressed or
    /// not).
    ///
    /// Memory: every byte to send waits in a part buffer of the store's one
    /// pool ([`BackupStoreOptions::upload_memory_limit_bytes`](crate::BackupStoreOptions::upload_memory_limit_bytes)), taken before
    /// the file is read into it and given back when the request that sent it
    /// is over. So all uploads of a store together hold at most that much,
    /// whatever the size and number of files; compression adds one read chunk
    /// (`THROTTLED_READ_BYTES`) and the zstd context per upload.
    ///
    /// Afterwards the object's size in the store is compared with what was
    /// sent: a store that kept less (or more) gives [`BackupStoreError::Corrupt`].
    /// The entry's `size_bytes` and `checksum` (CRC32C) are those of the
    /// original bytes; `stored_bytes` is the object's size.
    pub async fn upload_file(
        &self,
        id: &BackupIdentifier,
        kind: FileKind,
        name: &str,
        local_path: &LocalPath,
        length: u64,
        throttle: Option<&Throttle>,
    ) -> Result<FileEntry> {
        let path = self.file_path(id, kind, name)?;
        let file = open_prefix(local_path, length).await?;
        let compression = self.compression;
        let read_size = if throttle.is_some() || compression != Compression::None {
            THROTTLED_READ_BYTES
        } else {
            MULTIPART_PART_BYTES
        };
        let mut reader = ChunkReader {
            file,
            local_path,
            length,
            read: 0,
            read_size,
            crc: 0,
        };
        let mut upload = Upload {
            store: &self.store,
            path: &path,
            throttle,
            buffers: &self.buffers,
            copies_payloads: self.copies_payloads,
            filling: None,
            multipart: None,
            sent: 0,
        };
        let streamed = send(&mut upload, &mut reader, compression, length).await;
        if let Err(error) = streamed {
            upload.abort().await;
            return Err(error);
        }
        let stored_bytes = upload.finish().await?;

        // A store that truncates (or pads) what it was given is caught here,
        // not at restore time.
        self.check_stored_size(&path, stored_bytes).await?;

        // Before the manifest that lists it can say COMPLETED.
        self.make_durable(&path).await?;

        let entry = FileEntry {
            name: name.to_string(),
            kind,
            size_bytes: length,
            checksum: format_checksum(reader.crc),
            compression: compression_name(compression).map(str::to_string),
            stored_bytes,
            pieces: None,
        };
        debug!(%path, size = length, stored = stored_bytes, checksum = %entry.checksum, "uploaded backup file");
        Ok(entry)
    }
}

/// Opens the local file whose first `length` bytes are uploaded; a shorter file gives
/// [`BackupStoreError::ShortFile`].
async fn open_prefix(local_path: &LocalPath, length: u64) -> Result<tokio::fs::File> {
    let file = tokio::fs::File::open(local_path)
        .await
        .map_err(|e| BackupStoreError::io(local_path, e))?;
    let actual = file
        .metadata()
        .await
        .map_err(|e| BackupStoreError::io(local_path, e))?
        .len();
    if actual < length {
        return Err(BackupStoreError::ShortFile {
            path: local_path.to_path_buf(),
            expected: length,
            actual,
        });
    }
    Ok(file)
}

/// Sends what `reader` reads into `upload`: straight from the file into part buffers, or
/// through zstd.
async fn send(
    upload: &mut Upload<'_>,
    reader: &mut ChunkReader<'_>,
    compression: Compression,
    length: u64,
) -> Result<()> {
    let path = upload.path;
    let compression_error = |e: std::io::Error| BackupStoreError::Compression {
        path: path.to_string(),
        reason: e.to_string(),
    };
    match compression {
        // Straight from the file into part buffers: no copy.
        Compression::None => {
            while reader.remaining() > 0 {
                let buffer = upload.buffer().await?;
                let n = reader.next_read_len().min(buffer.spare());
                reader.read_exact(buffer.spare_mut(n)).await?;
                buffer.commit(n);
                upload.account(n).await;
            }
        }
        Compression::Zstd => {
            let mut compressor = Compressor::new(length).map_err(compression_error)?;
            while let Some(chunk) = reader.next_chunk().await? {
                let pieces = compressor
                    .compress(chunk)
                    .await
                    .map_err(compression_error)?;
                for piece in pieces {
                    upload.write(&piece).await?;
                }
            }
            for piece in compressor.finish().await.map_err(compression_error)? {
                upload.write(&piece).await?;
            }
        }
    }
    Ok(())
}

/// Reads the prefix of a local file chunk by chunk, computing its CRC32C.
struct ChunkReader<'a> {
    file: tokio::fs::File,
    local_path: &'a LocalPath,
    length: u64,
    read: u64,
    read_size: usize,
    crc: u32,
}

impl ChunkReader<'_> {
    /// The number of bytes still to read.
    fn remaining(&self) -> u64 {
        self.length - self.read
    }

    /// The size of the next read: `read_size`, or what remains if less.
    fn next_read_len(&self) -> usize {
        self.remaining().min(self.read_size as u64) as usize
    }

    /// Fills all of `target` (at most what remains) from the file.
    async fn read_exact(&mut self, target: &mut [u8]) -> Result<()> {
        assert!(
            target.len() as u64 <= self.remaining(),
            "read beyond the uploaded prefix: len={} remaining={}",
            target.len(),
            self.remaining()
        );
        let mut filled = 0;
        while filled < target.len() {
            let n = self
                .file
                .read(&mut target[filled..])
                .await
                .map_err(|e| BackupStoreError::io(self.local_path, e))?;
            if n == 0 {
                // The file shrank after we checked its size.
                return Err(BackupStoreError::ShortFile {
                    path: self.local_path.to_path_buf(),
                    expected: self.length,
                    actual: self.read + filled as u64,
                });
            }
            filled += n;
        }
        self.read += target.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, target);
        Ok(())
    }

    /// The next chunk of at most `read_size` bytes, `None` once `length`
    /// bytes were read.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining() == 0 {
            return Ok(None);
        }
        let mut buffer = vec![0u8; self.next_read_len()];
        self.read_exact(&mut buffer).await?;
        Ok(Some(Bytes::from(buffer)))
    }
}

/// A multipart upload and its parts in flight, each a task of its own: a
/// part progresses (and gives its buffer back) while its upload waits for
/// anything, including a buffer held by another upload.
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

impl Multipart {
    /// Waits until at most `limit` parts are in flight; the first failed
    /// part is the error.
    async fn settle(&mut self, limit: usize, path: &Path) -> Result<()> {
        while self.parts.len() > limit {
            let Some(joined) = self.parts.join_next().await else {
                break;
            };
            joined
                .unwrap_or_else(|source| Err(object_store::Error::JoinError { source }))
                .map_err(|e| BackupStoreError::object_store("put_part", path, e))?;
        }
        Ok(())
    }
}

/// One streaming upload of bytes whose total is not known in advance, in
/// part buffers of the store's [`UploadBuffers`]: sent with one `put` if it
/// fits in one buffer, else as a multipart upload of full buffers (the last
/// part may be shorter), at most [`PARTS_CONCURRENT_MAX`] in flight.
struct Upload<'a> {
    store: &'a Arc<dyn ObjectStore>,
    path: &'a Path,
    throttle: Option<&'a Throttle>,
    buffers: &'a Arc<UploadBuffers>,
    /// See [`BackupStore::copies_payloads`].
    copies_payloads: bool,
    /// The buffer being filled; sent once full and more bytes come (so an
    /// upload of exactly one buffer is still a single `put`).
    filling: Option<PartBuffer>,
    /// Started by the first full buffer that is followed by more bytes.
    multipart: Option<Multipart>,
    sent: u64,
}

impl Upload<'_> {
    /// What is sent of a buffer: its bytes without a copy (the buffer goes
    /// back to the pool when the request is over), or a copy.
    fn payload(&self, buffer: PartBuffer) -> PutPayload {
        if self.copies_payloads {
            PutPayload::from(Bytes::copy_from_slice(buffer.as_ref()))
        } else {
            PutPayload::from(buffer.freeze())
        }
    }

    /// Waits for the throttle, then counts `len` bytes as sent.
    async fn account(&mut self, len: usize) {
        if let Some(throttle) = self.throttle {
            throttle.acquire(len as u64).await;
        }
        self.sent += len as u64;
    }

    /// The buffer to fill, with room for at least one byte: the one being
    /// filled, or a new one once that is full (the full one is sent first).
    async fn buffer(&mut self) -> Result<&mut PartBuffer> {
        if let Some(full) = self.filling.take_if(|buffer| buffer.is_full()) {
            self.send_part(full).await?;
        }
        if self.filling.is_none() {
            self.filling = Some(self.buffers.take().await);
        }
        Ok(self.filling.as_mut().expect("set above"))
    }

    /// Copies `bytes` into part buffers (after waiting for the throttle).
    async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.account(bytes.len()).await;
        while !bytes.is_empty() {
            let copied = self.buffer().await?.extend(bytes);
            bytes = &bytes[copied..];
        }
        Ok(())
    }

    /// Sends `part` as the next part of the multipart upload (started if
    /// needed) once fewer than [`PARTS_CONCURRENT_MAX`] are in flight.
    async fn send_part(&mut self, part: PartBuffer) -> Result<()> {
        let multipart = match &mut self.multipart {
            Some(multipart) => multipart,
            None => {
                let upload =
                    self.store.put_multipart(self.path).await.map_err(|e| {
                        BackupStoreError::object_store("put_multipart", self.path, e)
                    })?;
                self.multipart.insert(Multipart {
                    upload,
                    parts: JoinSet::new(),
                })
            }
        };
        multipart
            .settle(PARTS_CONCURRENT_MAX - 1, self.path)
            .await?;
        let payload = self.payload(part);
        let multipart = self.multipart.as_mut().expect("started above");
        let sending = multipart.upload.put_part(payload);
        multipart.parts.spawn(sending);
        Ok(())
    }

    /// Completes the upload; returns the number of bytes sent. A failed
    /// multipart upload is aborted.
    async fn finish(mut self) -> Result<u64> {
        let last = self.filling.take();
        if self.multipart.is_none() {
            let payload = last.map(|buffer| self.payload(buffer)).unwrap_or_default();
            self.store
                .put(self.path, payload)
                .await
                .map_err(|e| BackupStoreError::object_store("put", self.path, e))?;
            return Ok(self.sent);
        }
        let completed = async {
            if let Some(last) = last.filter(|buffer| !buffer.is_empty()) {
                self.send_part(last).await?;
            }
            let multipart = self.multipart.as_mut().expect("checked above");
            // Every part first, so that a failure can still abort.
            multipart.settle(0, self.path).await?;
            multipart
                .upload
                .complete()
                .await
                .map_err(|e| BackupStoreError::object_store("complete_multipart", self.path, e))
        }
        .await;
        match completed {
            Ok(_) => {
                // Completed: nothing to abort when this upload is dropped.
                self.multipart = None;
                Ok(self.sent)
            }
            Err(error) => {
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Abandons the upload: stops the parts in flight (their buffers go back
    /// to the pool) and aborts a multipart upload.
    async fn abort(mut self) {
        self.filling = None;
        if let Some(multipart) = self.multipart.take() {
            abort_multipart(multipart, self.path.clone()).await;
        }
    }
}

/// Every way an upload can be abandoned without [`Upload::abort`] (a
/// deadline, a sibling upload's failure, a cancelled backup: the future is
/// dropped) still aborts its multipart upload, so no parts are orphaned in
/// the store. Drop cannot wait, so the abort runs as a task of its own.
impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let path = self.path.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort_multipart(multipart, path));
            }
            Err(_) => {
                warn!(%path, "multipart upload dropped outside a runtime: not aborted; parts may be left behind (an S3 lifecycle rule for incomplete multipart uploads cleans them up)");
            }
        }
    }
}

/// Stops the parts in flight of `multipart`, then aborts it.
async fn abort_multipart(mut multipart: Multipart, path: Path) {
    multipart.parts.shutdown().await;
    if let Err(error) = multipart.upload.abort().await {
        warn!(%path, %error, "cannot abort multipart upload; parts may be left behind (an S3 lifecycle rule for incomplete multipart uploads cleans them up)");
    }
}
