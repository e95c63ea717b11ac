//! The pool: each partition's backups share one set of immutable,
//! content-addressed objects, so that a backup uploads only what no earlier
//! backup of the partition uploaded.
//!
//! # Layout
//!
//! ```text
//! [<basePath>/]<partitionId:05>/pool/<id[0..2]>/<id>
//! ```
//!
//! `<id>` is the [`ObjectId`]: the BLAKE3 hash of the object's plaintext (for
//! an encrypted backup, keyed BLAKE3 under the partition's name key, so names
//! reveal nothing of the content), as 64 lowercase hex digits; the two-digit folder keeps directories of the
//! file system store small. A pooled backup's manifest lists, per file, the
//! objects ([`PieceEntry`]) whose plaintexts concatenated are the file; it
//! is restorable alone (no earlier manifest is read), and the manifest stays
//! the commit point: objects first, the COMPLETED manifest last.
//!
//! # Object format (the envelope)
//!
//! ```text
//! "SLPO" | version: u8 = 1 | codec: u8 (0 none, 1 zstd) | cipher: u8 | 0u8 |
//! plaintext length: u64 little endian | payload
//! ```
//!
//! 16 bytes of header, then the payload: the plaintext, or its zstd frame
//! when that is smaller. With cipher 0 the payload is stored as it is; with
//! cipher 1 (`AES-256-GCM-STREAM-64K`, see the `crypto` module) it is a
//! 32-byte salt followed by the payload in authenticated 64 KiB chunks, each
//! bound to the header and the object's name. Every download checks the
//! envelope, decrypts and authenticates, decodes at most the plaintext length
//! it announces (which must be the manifest's), and hashes the plaintext
//! against the object's name: a damaged or swapped object is named, never
//! restored.
//!
//! # Invariants
//!
//! - Nothing is uploaded twice: a piece whose id the partition's
//!   [`PoolIndex`] holds is referenced, not sent.
//! - An object is deleted only when no manifest of the partition references
//!   it, whatever that manifest's status, and its writer does not hold it for
//!   a manifest to come ([`BackupStore::collect_pool`]);
//!   a collection that cannot read every manifest deletes nothing. The broker
//!   that owns the partition is the pool's one writer and serializes its
//!   collections with its own uploads.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::{debug, info};

use crate::crypto::{encrypted_len, PoolKeys};
use crate::manifest::{BackupIdentifier, Manifest};
use crate::{BackupStore, BackupStoreError, Compression};

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The name of the pool's folder under a partition's prefix.
pub const POOL_FOLDER: &str = "pool";

/// The largest plaintext of one object: log segments are cut into pieces of
/// this size, snapshot chunks never exceed it. Small enough that a piece is
/// one `put` from one upload buffer, large enough that a GiB is 256 objects.
pub const PIECE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The content-defined chunking of snapshot files (FastCDC): boundaries
/// follow the content, so an unchanged stretch of a new snapshot is the same
/// chunk as in the old one, wherever it moved.
pub(crate) const SNAPSHOT_CHUNK_BYTES_MIN: u32 = 256 * 1024;
pub(crate) const SNAPSHOT_CHUNK_BYTES_AVG: u32 = 1024 * 1024;
pub(crate) const SNAPSHOT_CHUNK_BYTES_MAX: u32 = PIECE_BYTES_MAX as u32;

const ENVELOPE_MAGIC: &[u8; 4] = b"SLPO";
const ENVELOPE_VERSION: u8 = 1;
/// The size of the envelope's header.
pub const ENVELOPE_HEADER_BYTES: u64 = 16;
const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const CIPHER_NONE: u8 = 0;
const CIPHER_AES_GCM_STREAM: u8 = 1;
/// zstd level of pool objects: level 1 compresses Sluice's JSON log about as
/// well as level 3 (3.9x) at nearly twice the speed (NOTES.md).
const ZSTD_LEVEL: i32 = 1;

/// The name of a pool object: the BLAKE3 hash of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    /// The id of `plaintext` in a plain pool.
    pub fn of(plaintext: &[u8]) -> Self {
        Self(*blake3::hash(plaintext).as_bytes())
    }

    /// The id of `plaintext` in a pool of `keys` (keyed), or a plain one.
    pub fn named(keys: Option<&PoolKeys>, plaintext: &[u8]) -> Self {
        match keys {
            Some(keys) => keys.object_id(plaintext),
            None => Self::of(plaintext),
        }
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex digits (the only spelling written).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid pool object id {text:?}: expected 64 lowercase hex digits"
            ))
        })
    }
}

/// One piece of a pooled file: the pool object holding its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PieceEntry {
    /// The object, named by the hash of these bytes.
    pub object: ObjectId,
    /// The number of bytes of the file in this piece (the plaintext).
    pub size_bytes: u64,
    /// The size of the object in the store (its envelope).
    pub stored_bytes: u64,
}

impl PieceEntry {
    /// The sizes a piece can have: 1 to [`PIECE_BYTES_MAX`] bytes, stored in
    /// more than the header (and, `encrypted`, a salt and a tag) and at most
    /// header plus plaintext plus what encryption adds (a payload is
    /// compressed only when that makes it smaller).
    pub(crate) fn validate(&self, encrypted: bool) -> Result<(), String> {
        if !(1..=PIECE_BYTES_MAX).contains(&self.size_bytes) {
            return Err(format!(
                "object={} sizeBytes={} is outside 1..={PIECE_BYTES_MAX}",
                self.object, self.size_bytes
            ));
        }
        let (min, max) = stored_bytes_range(self.size_bytes, encrypted);
        if !(min..=max).contains(&self.stored_bytes) {
            return Err(format!(
                "object={} storedBytes={} is impossible for sizeBytes={} (expected {min}..={max})",
                self.object, self.stored_bytes, self.size_bytes,
            ));
        }
        Ok(())
    }
}

/// The stored sizes an object of `size_bytes` of plaintext can have.
fn stored_bytes_range(size_bytes: u64, encrypted: bool) -> (u64, u64) {
    if encrypted {
        let size = usize::try_from(size_bytes).unwrap_or(usize::MAX);
        (
            ENVELOPE_HEADER_BYTES + encrypted_len(1) as u64,
            ENVELOPE_HEADER_BYTES + encrypted_len(size) as u64,
        )
    } else {
        (
            ENVELOPE_HEADER_BYTES + 1,
            ENVELOPE_HEADER_BYTES + size_bytes,
        )
    }
}

/// The envelope of `plaintext`, object `id`: zstd-compressed when
/// `compression` asks for it and that is smaller, else the plaintext itself;
/// encrypted under `keys` when given.
pub(crate) fn seal(
    plaintext: &[u8],
    id: &ObjectId,
    compression: Compression,
    keys: Option<&PoolKeys>,
) -> std::io::Result<Vec<u8>> {
    let compressed = match compression {
        Compression::None => None,
        Compression::Zstd => Some(zstd::bulk::compress(plaintext, ZSTD_LEVEL)?),
    }
    .filter(|c| c.len() < plaintext.len());
    let (codec, payload) = match &compressed {
        Some(c) => (CODEC_ZSTD, c.as_slice()),
        None => (CODEC_NONE, plaintext),
    };
    let cipher = if keys.is_some() {
        CIPHER_AES_GCM_STREAM
    } else {
        CIPHER_NONE
    };
    let mut sealed =
        Vec::with_capacity(ENVELOPE_HEADER_BYTES as usize + encrypted_len(payload.len()));
    sealed.extend_from_slice(ENVELOPE_MAGIC);
    sealed.extend_from_slice(&[ENVELOPE_VERSION, codec, cipher, 0]);
    sealed.extend_from_slice(&(plaintext.len() as u64).to_le_bytes());
    match keys {
        Some(keys) => {
            let aad = envelope_aad(&sealed, id);
            keys.encrypt_into(id, &aad, payload, &mut sealed);
        }
        None => sealed.extend_from_slice(payload),
    }
    Ok(sealed)
}

/// What every chunk of an encrypted object is bound to: its header and its name.
fn envelope_aad(header: &[u8], id: &ObjectId) -> Vec<u8> {
    let mut aad = header[..ENVELOPE_HEADER_BYTES as usize].to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// The plaintext of an envelope that must hold `piece` (of a pool of `keys`,
/// if encrypted): header, announced length, authentication, decoding (never
/// more than the piece's size) and hash all checked. The error says what is
/// wrong, for a [`BackupStoreError::Corrupt`].
pub(crate) fn open_envelope(
    sealed: &[u8],
    piece: &PieceEntry,
    keys: Option<&PoolKeys>,
) -> Result<Vec<u8>, String> {
    let header_bytes = ENVELOPE_HEADER_BYTES as usize;
    if sealed.len() < header_bytes || &sealed[..4] != ENVELOPE_MAGIC {
        return Err("not a Sluice pool object (no SLPO header)".to_string());
    }
    let (version, codec, cipher) = (sealed[4], sealed[5], sealed[6]);
    if version != ENVELOPE_VERSION {
        return Err(format!(
            "envelope version {version} (this release reads {ENVELOPE_VERSION}); use a newer release"
        ));
    }
    let announced = u64::from_le_bytes(sealed[8..16].try_into().expect("8 bytes"));
    if announced != piece.size_bytes {
        return Err(format!(
            "the envelope announces {announced} bytes, the manifest {}",
            piece.size_bytes
        ));
    }
    let decrypted;
    let payload = match (cipher, keys) {
        (CIPHER_NONE, None) => &sealed[header_bytes..],
        (CIPHER_AES_GCM_STREAM, Some(keys)) => {
            let aad = envelope_aad(sealed, &piece.object);
            decrypted = keys.decrypt(&piece.object, &aad, &sealed[header_bytes..])?;
            decrypted.as_slice()
        }
        (CIPHER_NONE, Some(_)) => {
            return Err("a plain object where the backup is encrypted (replaced)".to_string())
        }
        (CIPHER_AES_GCM_STREAM, None) => {
            return Err(
                "an encrypted object where the backup is not encrypted (replaced)".to_string(),
            )
        }
        (other, _) => return Err(format!("unknown cipher {other}; use a newer release")),
    };
    let plaintext = match codec {
        CODEC_NONE => payload.to_vec(),
        CODEC_ZSTD => zstd::bulk::decompress(payload, piece.size_bytes as usize)
            .map_err(|e| format!("undecodable zstd payload ({e})"))?,
        other => return Err(format!("unknown codec {other}; use a newer release")),
    };
    if plaintext.len() as u64 != piece.size_bytes {
        return Err(format!(
            "{} bytes decoded, {} expected",
            plaintext.len(),
            piece.size_bytes
        ));
    }
    let actual = ObjectId::named(keys, &plaintext);
    if actual != piece.object {
        return Err(format!(
            "content hashes to {actual}, not to its name (damaged or replaced)"
        ));
    }
    Ok(plaintext)
}

/// What a broker knows its partition's pool holds: object ids and their
/// stored sizes. Loaded by [`BackupStore::load_pool_index`], extended by every
/// upload, trimmed by every collection. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PoolIndex {
    objects: Arc<Mutex<HashMap<ObjectId, u64>>>,
}

impl PoolIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, u64>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored size of `id`, if the pool holds it.
    pub fn stored_bytes(&self, id: &ObjectId) -> Option<u64> {
        self.lock().get(id).copied()
    }

    pub(crate) fn insert(&self, id: ObjectId, stored_bytes: u64) {
        self.lock().insert(id, stored_bytes);
    }

    /// The number of objects and their total stored size.
    pub fn totals(&self) -> PoolTotals {
        let objects = self.lock();
        PoolTotals {
            objects: objects.len() as u64,
            stored_bytes: objects.values().sum(),
        }
    }
}

/// The size of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTotals {
    pub objects: u64,
    pub stored_bytes: u64,
}

/// What a collection of a pool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCollection {
    /// Objects left: referenced by a manifest.
    pub kept: PoolTotals,
    /// Objects deleted: referenced by none.
    pub deleted: PoolTotals,
}

impl BackupStore {
    /// The prefix of a partition's pool.
    pub fn pool_prefix(&self, partition_id: u32) -> Path {
        self.layout
            .partition_prefix(partition_id)
            .child(POOL_FOLDER)
    }

    /// The path of a pool object.
    pub fn pool_object_path(&self, partition_id: u32, id: &ObjectId) -> Path {
        let name = id.to_string();
        self.pool_prefix(partition_id)
            .child(&name[..2])
            .child(name.as_str())
    }

    /// Every object of the partition's pool, by id; objects whose path is not
    /// a pool object's (`None` id) are listed too, for the collection to
    /// remove.
    async fn list_pool(&self, partition_id: u32) -> Result<Vec<(Option<ObjectId>, Path, u64)>> {
        let prefix = self.pool_prefix(partition_id);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| {
                let id = parse_pool_path(&meta.location);
                let id = id.filter(|id| self.pool_object_path(partition_id, id) == meta.location);
                (id, meta.location, meta.size)
            })
            .try_collect()
            .await
            .map_err(|e| BackupStoreError::object_store("list", &prefix, e))
    }

    /// What the partition's pool holds (one listing).
    pub async fn load_pool_index(&self, partition_id: u32) -> Result<PoolIndex> {
        let index = PoolIndex::default();
        for (id, _, size) in self.list_pool(partition_id).await? {
            if let Some(id) = id.filter(|_| size > ENVELOPE_HEADER_BYTES) {
                index.insert(id, size);
            }
        }
        Ok(index)
    }

    /// The number and size of the partition pool's objects (one listing).
    pub async fn pool_totals(&self, partition_id: u32) -> Result<PoolTotals> {
        let mut totals = PoolTotals::default();
        for (_, _, size) in self.list_pool(partition_id).await? {
            totals.objects += 1;
            totals.stored_bytes += size;
        }
        Ok(totals)
    }

    /// The backups of the partition whose manifest references `object`.
    pub async fn backups_referencing(
        &self,
        partition_id: u32,
        object: &ObjectId,
    ) -> Result<Vec<BackupIdentifier>> {
        Ok(self
            .list_manifests(partition_id)
            .await?
            .into_iter()
            .filter(|manifest| manifest.pieces().any(|piece| piece.object == *object))
            .map(|manifest| manifest.id)
            .collect())
    }

    /// Deletes every object of the partition's pool that no manifest of the
    /// partition references (manifests of every status and node count) and
    /// that is not in `also_kept` (the pieces the writer uploaded that no
    /// manifest lists yet: a continuously archived log segment), and brings
    /// `index` in line with what is left. Refuses
    /// ([`BackupStoreError::PoolCollectionRefused`]) and deletes nothing when
    /// a manifest of the partition cannot be read: what it references is not
    /// known.
    ///
    /// Only the pool's one writer may call it, never while one of its uploads
    /// to the partition runs (an upload's objects are referenced only once
    /// its manifest lists them).
    pub async fn collect_pool(
        &self,
        partition_id: u32,
        index: &PoolIndex,
        also_kept: &HashSet<ObjectId>,
    ) -> Result<PoolCollection> {
        let listing = self.list_manifests_reporting(partition_id).await?;
        if let Some(skipped) = listing.skipped.first() {
            return Err(BackupStoreError::PoolCollectionRefused {
                partition_id,
                manifest: skipped.path.clone(),
                reason: skipped.reason.clone(),
            });
        }
        let mut referenced: HashSet<ObjectId> = listing
            .manifests
            .iter()
            .flat_map(Manifest::pieces)
            .map(|piece| piece.object)
            .collect();
        referenced.extend(also_kept.iter().copied());
        let mut collection = PoolCollection::default();
        let mut doomed = Vec::new();
        let mut objects = HashMap::new();
        for (id, path, size) in self.list_pool(partition_id).await? {
            match id.filter(|id| referenced.contains(id)) {
                Some(id) => {
                    collection.kept.objects += 1;
                    collection.kept.stored_bytes += size;
                    objects.insert(id, size);
                }
                None => {
                    collection.deleted.objects += 1;
                    collection.deleted.stored_bytes += size;
                    doomed.push(path);
                }
            }
        }
        let prefix = self.pool_prefix(partition_id);
        let mut results = self
            .store
            .delete_stream(futures::stream::iter(doomed.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BackupStoreError::object_store("delete", &prefix, e)),
            }
        }
        drop(results);
        *index.lock() = objects;
        if collection.deleted.objects > 0 {
            info!(
                partition = partition_id,
                deleted = collection.deleted.objects,
                freed_bytes = collection.deleted.stored_bytes,
                kept = collection.kept.objects,
                "collected the backup pool"
            );
        } else {
            debug!(
                partition = partition_id,
                kept = collection.kept.objects,
                "backup pool: nothing to collect"
            );
        }
        Ok(collection)
    }
}

/// The id a pool object's path names (its last segment), if it is one.
fn parse_pool_path(path: &Path) -> Option<ObjectId> {
    path.filename().and_then(ObjectId::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_with(
        keys: Option<&PoolKeys>,
        plaintext: &[u8],
        compression: Compression,
    ) -> (Vec<u8>, PieceEntry) {
        let id = ObjectId::named(keys, plaintext);
        let sealed = seal(plaintext, &id, compression, keys).unwrap();
        let piece = PieceEntry {
            object: id,
            size_bytes: plaintext.len() as u64,
            stored_bytes: sealed.len() as u64,
        };
        (sealed, piece)
    }

    #[test]
    fn ids_print_and_parse_as_64_lowercase_hex_digits() {
        let id = ObjectId::of(b"sluice");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(ObjectId::parse(&text), Some(id));
        for bad in [
            "",
            &text[..63],
            &text.to_uppercase(),
            &format!("{}g", &text[..63]),
            "../../../../../../../../../../../../../../../../../../../../etc/x",
        ] {
            assert_eq!(ObjectId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn envelopes_round_trip_compressed_or_not() {
        let compressible = b"{\"deposit\":{\"account\":\"a\",\"amount\":1}}".repeat(1000);
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let keys = PoolKeys::generate();
        let large: Vec<u8> = (0..(PIECE_BYTES_MAX as u32))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let exact_chunks = vec![7u8; 3 * crate::crypto::CHUNK_BYTES];
        for plaintext in [
            compressible.as_slice(),
            random.as_slice(),
            b"x".as_slice(),
            large.as_slice(),
            exact_chunks.as_slice(),
        ] {
            for compression in [Compression::None, Compression::Zstd] {
                for keys in [None, Some(&keys)] {
                    let (sealed, piece) = sealed_with(keys, plaintext, compression);
                    piece.validate(keys.is_some()).unwrap();
                    assert_eq!(open_envelope(&sealed, &piece, keys).unwrap(), plaintext);
                }
            }
        }
        let (sealed, _) = sealed_with(None, &compressible, Compression::Zstd);
        assert!(
            sealed.len() < compressible.len() / 4,
            "compressed: {}",
            sealed.len()
        );
    }

    /// Every way an object can be wrong is named, and nothing wrong decodes.
    #[test]
    fn damaged_or_foreign_objects_are_refused() {
        let plaintext = b"balance of account a".repeat(50);
        let (sealed, piece) = sealed_with(None, &plaintext, Compression::Zstd);
        let cases: Vec<(&str, Vec<u8>, PieceEntry, &str)> = vec![
            ("no header", b"SLP".to_vec(), piece, "no SLPO header"),
            (
                "flipped payload byte",
                {
                    let mut s = sealed.clone();
                    let last = s.len() - 1;
                    s[last] ^= 1;
                    s
                },
                piece,
                "",
            ),
            (
                "other content",
                sealed_with(None, b"other", Compression::None).0,
                PieceEntry {
                    size_bytes: 5,
                    ..piece
                },
                "hashes to",
            ),
            (
                "encrypted",
                {
                    let mut s = sealed.clone();
                    s[6] = 1;
                    s
                },
                piece,
                "not encrypted",
            ),
            (
                "length lie",
                sealed.clone(),
                PieceEntry {
                    size_bytes: piece.size_bytes - 1,
                    ..piece
                },
                "announces",
            ),
        ];
        for (name, bytes, piece, expected) in cases {
            let error = open_envelope(&bytes, &piece, None).expect_err(name);
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn piece_sizes_are_held_to_what_an_envelope_can_be() {
        let piece = PieceEntry {
            object: ObjectId::of(b"x"),
            size_bytes: 100,
            stored_bytes: 116,
        };
        piece.validate(false).unwrap();
        for bad in [
            PieceEntry {
                size_bytes: 0,
                ..piece
            },
            PieceEntry {
                size_bytes: PIECE_BYTES_MAX + 1,
                stored_bytes: 20,
                ..piece
            },
            PieceEntry {
                stored_bytes: 117,
                ..piece
            },
            PieceEntry {
                stored_bytes: 16,
                ..piece
            },
        ] {
            assert!(bad.validate(false).is_err(), "{bad:?}");
        }
        // Encrypted: a salt and at least one tag on top, one tag per 64 KiB chunk at most.
        let encrypted = PieceEntry {
            stored_bytes: 16 + 32 + 100 + 16,
            ..piece
        };
        encrypted.validate(true).unwrap();
        assert!(PieceEntry {
            stored_bytes: 16 + 32 + 16,
            ..piece
        }
        .validate(true)
        .is_err());
        assert!(PieceEntry {
            stored_bytes: 16 + 32 + 100 + 17,
            ..piece
        }
        .validate(true)
        .is_err());
    }

    /// Every way an encrypted object can be wrong is refused before its content is used:
    /// flipped, truncated, reordered, from another keyset, under another name, or plain.
    #[test]
    fn tampered_encrypted_objects_are_refused() {
        let keys = PoolKeys::generate();
        let other_keys = PoolKeys::generate();
        let plaintext: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let (sealed, piece) = sealed_with(Some(&keys), &plaintext, Compression::None);
        let chunk = crate::crypto::CHUNK_BYTES + crate::crypto::TAG_BYTES;
        let body = 16 + crate::crypto::OBJECT_SALT_BYTES;
        let other_plaintext = b"another object of the same keyset".repeat(10);
        let (other_sealed, _) = sealed_with(Some(&keys), &other_plaintext, Compression::None);
        let with = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut s = sealed.clone();
            change(&mut s);
            s
        };
        let cases: Vec<(&str, Vec<u8>, Option<&PoolKeys>, &str)> = vec![
            (
                "flipped ciphertext byte",
                with(&|s| s[body + 5] ^= 1),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "flipped tag byte",
                with(&|s| {
                    let last = s.len() - 1;
                    s[last] ^= 1;
                }),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "flipped salt byte",
                with(&|s| s[16] ^= 1),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "flipped header codec",
                with(&|s| s[5] = 1),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "last chunk cut off",
                with(&|s| s.truncate(body + 2 * chunk)),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "truncated mid chunk",
                with(&|s| s.truncate(s.len() - 100)),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "chunks swapped",
                with(&|s| {
                    let (a, b) = (body, body + chunk);
                    let first: Vec<u8> = s[a..b].to_vec();
                    let second: Vec<u8> = s[b..b + chunk].to_vec();
                    s[a..b].copy_from_slice(&second);
                    s[b..b + chunk].copy_from_slice(&first);
                }),
                Some(&keys),
                "does not authenticate",
            ),
            (
                "another keyset",
                sealed.clone(),
                Some(&other_keys),
                "does not authenticate",
            ),
            (
                "another object under this name",
                other_sealed.clone(),
                Some(&keys),
                "",
            ),
            (
                "plain object",
                sealed_with(None, &plaintext, Compression::None).0,
                Some(&keys),
                "plain object",
            ),
            ("no keys", sealed.clone(), None, "not encrypted"),
        ];
        for (name, bytes, keys, expected) in cases {
            let error = open_envelope(&bytes, &piece, keys).expect_err(name);
            assert!(error.contains(expected), "{name}: {error}");
        }
        assert_eq!(
            open_envelope(&sealed, &piece, Some(&keys)).unwrap(),
            plaintext
        );
    }

    /// Names are keyed: the same content has another name in each keyset and in a plain pool,
    /// and the same name within one keyset (so it still deduplicates).
    #[test]
    fn encrypted_names_are_keyed_hashes() {
        let (a, b) = (PoolKeys::generate(), PoolKeys::generate());
        let content = b"account a: 100";
        assert_eq!(a.object_id(content), a.object_id(content));
        assert_ne!(a.object_id(content), b.object_id(content));
        assert_ne!(a.object_id(content), ObjectId::of(content));
    }
}
