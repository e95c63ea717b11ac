//! Uploads into and downloads from a partition's pool (see the `pool` module).
//!
//! An upload cuts the file into pieces (fixed pieces of
//! [`PIECE_BYTES_MAX`] for log segments, content-defined chunks for
//! snapshots), hashes each one, and sends only those the pool does not hold,
//! each as one `put` of its envelope. A file that grew since an earlier
//! backup (the active log segment) keeps that backup's pieces for its first
//! bytes and cuts new ones only for the rest, so no byte is sent twice.
//!
//! Memory per file upload: the piece being read, one waiting for the
//! uploader and one being sealed (at most [`PIECE_BYTES_MAX`] each), plus the
//! envelopes in flight, each in a buffer of the store's one upload pool
//! (at most [`PARTS_CONCURRENT_MAX`] per file).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path as LocalPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::PutPayload;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use crate::crypto::PoolKeys;
use crate::download::{VerifiedFile, RANGES_CONCURRENT_MAX};
use crate::manifest::{
    format_checksum, parse_checksum, validate_file_name, BackupIdentifier, FileEntry, FileKind,
    PoolUpload,
};
use crate::pool::{
    open_envelope, seal, ObjectId, PieceEntry, PoolIndex, PIECE_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES_AVG, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MIN,
};
use crate::upload::PARTS_CONCURRENT_MAX;
use crate::{BackupStore, BackupStoreError, Throttle};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// How a file is cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Pieces of [`PIECE_BYTES_MAX`] from where the known prefix ends: for
    /// append-only files (log segments), whose old bytes never move.
    Fixed,
    /// Content-defined chunks (FastCDC, 256 KiB to 4 MiB, about 1 MiB): for
    /// files rewritten whole (snapshots), whose unchanged stretches then
    /// keep their chunks.
    ContentDefined,
}

/// Whether the pieces of an earlier entry are known to hold the file's
/// first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixTrust {
    /// This process cut them from this very file, which only grew since:
    /// they are reused without reading the file.
    Trusted,
    /// They come from a manifest (e.g. after a restart, when the log may
    /// have been restored or truncated since): each is reused only if the
    /// file's bytes hash to it.
    Check,
}

/// One file to upload into a partition's pool.
#[derive(Debug, Clone, Copy)]
pub struct PooledUpload<'a> {
    pub partition_id: u32,
    pub kind: FileKind,
    pub name: &'a str,
    pub local_path: &'a LocalPath,
    /// Only this prefix of the file is uploaded (the active segment grows).
    pub length: u64,
    pub chunking: Chunking,
    /// An earlier backup's entry of the same file, whose pieces may hold the
    /// file's first bytes (of the same keyset: pieces of another keyset never
    /// match, as their names are other hashes).
    pub previous: Option<(&'a FileEntry, PrefixTrust)>,
    /// The partition's keyset when the backup is encrypted: pieces are named
    /// by its keyed hash and encrypted under its data key.
    pub keys: Option<&'a Arc<PoolKeys>>,
}

/// An uploaded pooled file: its manifest entry and what was sent new.
#[derive(Debug, Clone)]
pub struct PooledFile {
    pub entry: FileEntry,
    pub uploaded: PoolUpload,
}

/// A piece read from the file: its bytes, id and CRC32C.
struct Cut {
    data: Vec<u8>,
    id: ObjectId,
    crc: u32,
}

impl Cut {
    fn new(data: Vec<u8>, keys: Option<&PoolKeys>) -> Self {
        Self {
            id: ObjectId::named(keys, &data),
            crc: crc32c::crc32c(&data),
            data,
        }
    }
}

/// Where the upload of a file starts: the pieces kept, their CRC32C, the
/// offset after them, and the earlier pieces to check from there.
struct Start {
    pieces: Vec<PieceEntry>,
    crc: u32,
    offset: u64,
    to_check: Vec<PieceEntry>,
}

impl BackupStore {
    /// Uploads the first `length` bytes of a local file into the partition's
    /// pool (see the module doc), sending only the pieces `index` does not
    /// hold, and returns its entry (format version 3: `pieces`, the CRC32C
    /// of the whole prefix) and what was sent. `index` learns every object
    /// sent once its `put` succeeded and the store holds its full size.
    pub async fn upload_pooled(
        &self,
        upload: PooledUpload<'_>,
        index: &PoolIndex,
        throttle: Option<&Throttle>,
    ) -> Result<PooledFile> {
        validate_file_name(upload.name)?;
        let actual = tokio::fs::metadata(upload.local_path)
            .await
            .map_err(|e| BackupStoreError::io(upload.local_path, e))?
            .len();
        if actual < upload.length {
            return Err(BackupStoreError::ShortFile {
                path: upload.local_path.to_path_buf(),
                expected: upload.length,
                actual,
            });
        }
        let start = start_of(&upload, index);
        let mut sender = PieceSender {
            store: self,
            keys: upload.keys.cloned(),
            partition_id: upload.partition_id,
            index,
            throttle,
            in_flight: JoinSet::new(),
            pending: HashMap::new(),
            uploaded: PoolUpload::default(),
        };
        let mut pieces = start.pieces;
        let mut crc = start.crc;
        if start.offset < upload.length {
            let mut cuts = spawn_reader(&upload, start.offset, start.to_check);
            while let Some(cut) = cuts.recv().await {
                let cut = cut.map_err(|e| BackupStoreError::io(upload.local_path, e))?;
                crc = crc32c::crc32c_combine(crc, cut.crc, cut.data.len());
                pieces.push(sender.send(cut).await?);
            }
        }
        sender.finish().await?;
        let size_bytes: u64 = pieces.iter().map(|p| p.size_bytes).sum();
        if size_bytes != upload.length {
            // The reader stops early only when the file shrank under it.
            return Err(BackupStoreError::ShortFile {
                path: upload.local_path.to_path_buf(),
                expected: upload.length,
                actual: size_bytes,
            });
        }
        let entry = FileEntry {
            name: upload.name.to_string(),
            kind: upload.kind,
            size_bytes,
            checksum: format_checksum(crc),
            compression: None,
            stored_bytes: pieces.iter().map(|p| p.stored_bytes).sum(),
            pieces: Some(pieces),
        };
        debug!(
            name = upload.name,
            size = size_bytes,
            uploaded_objects = sender.uploaded.objects,
            uploaded_bytes = sender.uploaded.stored_bytes,
            "uploaded pooled file"
        );
        Ok(PooledFile {
            entry,
            uploaded: sender.uploaded,
        })
    }

    /// Downloads a pooled file (`entry.pieces`) to `destination`, created
    /// new: every object is fetched whole (its size must be the manifest's),
    /// its envelope opened and its plaintext hashed against its name; the
    /// file's size and CRC32C are checked at the end. At most
    /// `RANGES_CONCURRENT_MAX` objects in flight. On any error the
    /// destination is removed.
    pub(crate) async fn download_pooled(
        &self,
        id: &BackupIdentifier,
        entry: &FileEntry,
        pieces: &[PieceEntry],
        keys: Option<&Arc<PoolKeys>>,
        destination: &LocalPath,
    ) -> Result<()> {
        let expected_crc = parse_checksum(&entry.checksum).ok_or_else(|| {
            BackupStoreError::InvalidManifest {
                path: self.manifest_path(id).to_string(),
                reason: format!(
                    "invalid checksum: name={} checksum={:?} (expected crc32c:<8 lowercase hex digits>)",
                    entry.name, entry.checksum
                ),
            }
        })?;
        let label = format!("{} (pooled file of {id})", entry.name);
        let label_path = Path::from(label.as_str());
        let mut output = VerifiedFile::create(destination, &label_path, entry.size_bytes).await?;
        let outcome = async {
            let partition_id = id.partition_id;
            // Owned pieces: the futures then borrow nothing but `self` (Send across awaits).
            let mut plaintexts = futures::stream::iter(pieces.iter().copied())
                .map(|piece| async move { self.fetch_piece(partition_id, &piece, keys).await })
                .buffered(RANGES_CONCURRENT_MAX);
            while let Some(plaintext) = plaintexts.next().await {
                output.write(&plaintext?).await?;
            }
            output.finish(&entry.checksum, expected_crc).await
        }
        .await;
        if let Err(error) = outcome {
            output.discard().await;
            return Err(error);
        }
        Ok(())
    }

    /// The plaintext of one pool object, checked against `piece`.
    pub(crate) async fn fetch_piece(
        &self,
        partition_id: u32,
        piece: &PieceEntry,
        keys: Option<&Arc<PoolKeys>>,
    ) -> Result<Vec<u8>> {
        let path = self.pool_object_path(partition_id, &piece.object);
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupStoreError::MissingObject {
                    path: path.to_string(),
                })
            }
            Err(e) => return Err(BackupStoreError::object_store("get", &path, e)),
        };
        // Checked before the body is read: an object of any size must not
        // be loaded where a piece belongs.
        if got.meta.size != piece.stored_bytes {
            return Err(BackupStoreError::Corrupt {
                path: path.to_string(),
                expected: format!("{} bytes in the store", piece.stored_bytes),
                actual: format!("{} bytes", got.meta.size),
            });
        }
        let sealed = got
            .bytes()
            .await
            .map_err(|e| BackupStoreError::object_store("get", &path, e))?;
        let piece = *piece;
        let keys = keys.cloned();
        let opened =
            tokio::task::spawn_blocking(move || open_envelope(&sealed, &piece, keys.as_deref()))
                .await
                .map_err(|e| BackupStoreError::Compression {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
        opened.map_err(|reason| BackupStoreError::Corrupt {
            path: path.to_string(),
            expected: format!("object {} of {} bytes", piece.object, piece.size_bytes),
            actual: reason,
        })
    }

    /// Puts one sealed object and checks that the store holds all of it,
    /// durable before the manifest that lists it can say COMPLETED.
    async fn put_object(self, path: Path, payload: PutPayload, stored_bytes: u64) -> Result<()> {
        self.store
            .put(&path, payload)
            .await
            .map_err(|e| BackupStoreError::object_store("put", &path, e))?;
        self.check_stored_size(&path, stored_bytes).await?;
        self.make_durable(&path).await
    }
}

/// Where the upload starts, given what an earlier entry of the file offers:
/// its pieces are kept only if the pool still holds every one of them and
/// the file did not shrink below them.
fn start_of(upload: &PooledUpload<'_>, index: &PoolIndex) -> Start {
    let fresh = Start {
        pieces: Vec::new(),
        crc: 0,
        offset: 0,
        to_check: Vec::new(),
    };
    let Some((previous, trust)) = upload.previous else {
        return fresh;
    };
    let Some(pieces) = &previous.pieces else {
        return fresh;
    };
    let usable = previous.size_bytes <= upload.length
        && pieces
            .iter()
            .all(|p| index.stored_bytes(&p.object) == Some(p.stored_bytes));
    let crc = parse_checksum(&previous.checksum);
    match (usable, trust, crc) {
        (true, PrefixTrust::Trusted, Some(crc)) => Start {
            pieces: pieces.clone(),
            crc,
            offset: previous.size_bytes,
            to_check: Vec::new(),
        },
        (true, _, _) => Start {
            to_check: pieces.clone(),
            ..fresh
        },
        (false, _, _) => fresh,
    }
}

/// Reads the file from `offset` to the upload's length in a blocking task
/// and sends its pieces (bounded channel: the reader waits for the
/// uploader): first those of `to_check` whose bytes hash to them, then new
/// cuts by the upload's chunking.
fn spawn_reader(
    upload: &PooledUpload<'_>,
    offset: u64,
    to_check: Vec<PieceEntry>,
) -> mpsc::Receiver<std::io::Result<Cut>> {
    let (tx, rx) = mpsc::channel(1);
    let local_path = upload.local_path.to_path_buf();
    let (length, chunking) = (upload.length, upload.chunking);
    let keys = upload.keys.cloned();
    tokio::task::spawn_blocking(move || {
        let keys = keys.as_deref();
        if let Err(error) = read_cuts(&local_path, offset, length, chunking, &to_check, keys, &tx) {
            let _ = tx.blocking_send(Err(error));
        }
    });
    rx
}

fn read_cuts(
    local_path: &LocalPath,
    mut offset: u64,
    length: u64,
    chunking: Chunking,
    to_check: &[PieceEntry],
    keys: Option<&PoolKeys>,
    tx: &mpsc::Sender<std::io::Result<Cut>>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(local_path)?;
    file.seek(SeekFrom::Start(offset))?;
    let send = |cut: Cut| tx.blocking_send(Ok(cut)).is_ok();
    for piece in to_check {
        if offset + piece.size_bytes > length {
            break;
        }
        let mut data = vec![0u8; piece.size_bytes as usize];
        file.read_exact(&mut data)?;
        let cut = Cut::new(data, keys);
        if cut.id != piece.object {
            file.seek(SeekFrom::Start(offset))?;
            break;
        }
        offset += piece.size_bytes;
        if !send(cut) {
            return Ok(());
        }
    }
    let mut rest = (&mut file).take(length - offset);
    match chunking {
        Chunking::Fixed => loop {
            let mut data = Vec::with_capacity(PIECE_BYTES_MAX as usize);
            (&mut rest).take(PIECE_BYTES_MAX).read_to_end(&mut data)?;
            if data.is_empty() || !send(Cut::new(data, keys)) {
                return Ok(());
            }
        },
        Chunking::ContentDefined => {
            let chunks = fastcdc::v2020::StreamCDC::new(
                rest,
                SNAPSHOT_CHUNK_BYTES_MIN,
                SNAPSHOT_CHUNK_BYTES_AVG,
                SNAPSHOT_CHUNK_BYTES_MAX,
            );
            for chunk in chunks {
                let chunk = chunk.map_err(std::io::Error::other)?;
                if !send(Cut::new(chunk.data, keys)) {
                    return Ok(());
                }
            }
            Ok(())
        }
    }
}

/// Sends the pieces the pool lacks, at most [`PARTS_CONCURRENT_MAX`] puts in
/// flight, each a task of its own holding an upload buffer.
struct PieceSender<'a> {
    store: &'a BackupStore,
    keys: Option<Arc<PoolKeys>>,
    partition_id: u32,
    index: &'a PoolIndex,
    throttle: Option<&'a Throttle>,
    in_flight: JoinSet<Result<(ObjectId, u64)>>,
    /// Objects sent by this upload whose put is not known to be over.
    pending: HashMap<ObjectId, u64>,
    uploaded: PoolUpload,
}

impl PieceSender<'_> {
    /// The entry of `cut`: the object the pool (or this upload) has, or one
    /// sent now.
    async fn send(&mut self, cut: Cut) -> Result<PieceEntry> {
        let size_bytes = cut.data.len() as u64;
        let known = self
            .index
            .stored_bytes(&cut.id)
            .or_else(|| self.pending.get(&cut.id).copied());
        if let Some(stored_bytes) = known {
            return Ok(PieceEntry {
                object: cut.id,
                size_bytes,
                stored_bytes,
            });
        }
        let compression = self.store.compression;
        let path = self.store.pool_object_path(self.partition_id, &cut.id);
        let keys = self.keys.clone();
        let id = cut.id;
        let sealed =
            tokio::task::spawn_blocking(move || seal(&cut.data, &id, compression, keys.as_deref()))
                .await
                .map_err(|e| BackupStoreError::Compression {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?
                .map_err(|e| BackupStoreError::Compression {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
        let stored_bytes = sealed.len() as u64;
        if let Some(throttle) = self.throttle {
            throttle.acquire(stored_bytes).await;
        }
        self.settle(PARTS_CONCURRENT_MAX - 1).await?;
        let mut buffer = self.store.buffers.take().await;
        let copied = buffer.extend(&sealed);
        assert_eq!(
            copied,
            sealed.len(),
            "an envelope fits in one upload buffer"
        );
        let payload = if self.store.copies_payloads {
            PutPayload::from(Bytes::from(sealed))
        } else {
            drop(sealed);
            PutPayload::from(buffer.freeze())
        };
        let store = self.store.clone();
        self.in_flight.spawn(async move {
            store.put_object(path, payload, stored_bytes).await?;
            Ok((id, stored_bytes))
        });
        self.pending.insert(id, stored_bytes);
        self.uploaded.objects += 1;
        self.uploaded.stored_bytes += stored_bytes;
        Ok(PieceEntry {
            object: id,
            size_bytes,
            stored_bytes,
        })
    }

    /// Waits until at most `limit` puts are in flight; the first failed one
    /// is the error. Each finished put's object joins the index.
    async fn settle(&mut self, limit: usize) -> Result<()> {
        while self.in_flight.len() > limit {
            let Some(joined) = self.in_flight.join_next().await else {
                break;
            };
            let (id, stored_bytes) = joined.map_err(|source| {
                BackupStoreError::object_store(
                    "put",
                    self.store.pool_prefix(self.partition_id),
                    object_store::Error::JoinError { source },
                )
            })??;
            self.pending.remove(&id);
            self.index.insert(id, stored_bytes);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.settle(0).await
    }
}
