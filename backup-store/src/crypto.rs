//! Client-side encryption of backups: what the bucket's owner sees is ciphertext under keys only
//! the cluster's operators hold, and every manifest and object is authenticated.
//!
//! # Keys, and what each protects
//!
//! ```text
//! key-encryption key (KEK, configured by id: 32 bytes from a file or a variable,
//! │                   or Argon2id(passphrase, salt) with the salt in the manifest)
//! ├── wrap key = BLAKE3-derive("sluice 2026-12 keyset wrap", KEK)
//! │   └── wraps the partition's keyset (AES-256-GCM, random 96-bit nonce,
//! │       AAD = keyset id | key id | cluster name), stored in each manifest that uses it
//! └── MAC key  = BLAKE3-derive("sluice 2026-12 manifest mac", KEK)
//!     └── manifestMac: keyed BLAKE3 of the manifest's canonical JSON (all of it:
//!         id, status, files, pieces, cluster name, key id, wrapped keyset)
//!
//! keyset (per partition, random, [`PoolKeys`]; it outlives KEK rotations)
//! ├── name key: an object's name is keyed BLAKE3(name key, plaintext), so names
//! │   reveal nothing about content and equal content still deduplicates
//! └── data key: object key = BLAKE3-derive("sluice 2026-12 object key",
//!     data key | object id | 32-byte random salt of the object); the object's
//!     payload is AES-256-GCM in the STREAM construction (`aead::stream`, 32-bit
//!     big-endian counter and a last-chunk flag), 64 KiB chunks, each
//!     authenticated with AAD = envelope header | object id
//! ```
//!
//! So a flipped byte, a truncated or reordered object, an object of another backup,
//! partition or cluster swapped in, each fails authentication; a changed, moved or foreign
//! manifest fails its MAC, its location check or its cluster name. Rekeying re-wraps
//! keysets under a new KEK and re-MACs manifests; no object changes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::manifest::ManifestError;
use crate::pool::ObjectId;
use crate::BackupStoreError;

/// The cipher of encrypted objects, as manifests name it.
pub const OBJECT_CIPHER: &str = "AES-256-GCM-STREAM-64K";
/// The plaintext bytes of one authenticated chunk of an object's payload.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The tag each chunk carries.
pub const TAG_BYTES: usize = 16;
/// The random salt at the start of an encrypted payload.
pub const OBJECT_SALT_BYTES: usize = 32;

const WRAP_CONTEXT: &str = "sluice 2026-12 keyset wrap";
const MAC_CONTEXT: &str = "sluice 2026-12 manifest mac";
const OBJECT_CONTEXT: &str = "sluice 2026-12 object key";
const MAC_PREFIX: &str = "blake3:";
const WRAP_NONCE_BYTES: usize = 12;
/// A wrapped keyset: nonce, the name and data keys, the tag.
const WRAPPED_BYTES: usize = WRAP_NONCE_BYTES + 64 + TAG_BYTES;

/// The Argon2id cost of new passphrase wraps (OWASP's second recommended setting).
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_PARALLELISM: u32 = 1;
/// What a manifest may ask of a passphrase derivation: its cost is a value read from the
/// bucket, so it is bounded before use.
const ARGON2_MEMORY_KIB_MAX: u32 = 1024 * 1024;
const ARGON2_ITERATIONS_MAX: u32 = 16;
const ARGON2_PARALLELISM_MAX: u32 = 16;

/// Derived KEKs and opened keysets kept per store; beyond these counts the caches start over
/// (bounded memory; a miss only costs a derivation).
const DERIVED_KEYS_MAX: usize = 64;
const OPENED_KEYSETS_MAX: usize = 4096;

/// One key-encryption key: its id and its material (never printed: `Debug` shows the id).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEncryptionKey {
    id: String,
    material: KeyMaterial,
}

#[derive(Clone, PartialEq, Eq)]
enum KeyMaterial {
    Key(Zeroizing<[u8; 32]>),
    Passphrase(Zeroizing<String>),
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.material {
            KeyMaterial::Key(_) => "key",
            KeyMaterial::Passphrase(_) => "passphrase",
        };
        write!(f, "KeyEncryptionKey({} {kind}, <redacted>)", self.id)
    }
}

impl KeyEncryptionKey {
    /// A key of 32 bytes.
    pub fn from_bytes(id: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            id: id.into(),
            material: KeyMaterial::Key(Zeroizing::new(key)),
        }
    }

    /// A passphrase, stretched with Argon2id when used.
    pub fn from_passphrase(id: impl Into<String>, passphrase: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            material: KeyMaterial::Passphrase(Zeroizing::new(passphrase.into())),
        }
    }

    /// Loads the key a configuration names (`broker.data.backup.encryption.keys`). Errors name
    /// the key id and the source, never what was read.
    pub fn load(spec: &sluice_config::EncryptionKeySpec) -> Result<Self, BackupStoreError> {
        use sluice_config::KeySource;
        let unavailable = |source: String, reason: String| BackupStoreError::KeyUnavailable {
            key_id: spec.id.clone(),
            source_name: source,
            reason,
        };
        let source = match &spec.source {
            KeySource::File(path) | KeySource::PassphraseFile(path) => {
                format!("file {}", path.display())
            }
            KeySource::Env(name) | KeySource::PassphraseEnv(name) => format!("variable {name}"),
        };
        let text = match &spec.source {
            KeySource::File(path) | KeySource::PassphraseFile(path) => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| unavailable(source.clone(), e.to_string()))?;
                if meta.len() > 64 * 1024 {
                    return Err(unavailable(
                        source,
                        format!(
                            "{} bytes is too large for a key or passphrase file (at most 64 KiB)",
                            meta.len()
                        ),
                    ));
                }
                Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| unavailable(source.clone(), e.to_string()))?,
                )
            }
            KeySource::Env(name) | KeySource::PassphraseEnv(name) => Zeroizing::new(
                std::env::var(name).map_err(|e| unavailable(source.clone(), e.to_string()))?,
            ),
        };
        match &spec.source {
            KeySource::File(_) | KeySource::Env(_) => {
                let key = parse_key_hex(text.trim()).ok_or_else(|| {
                    unavailable(
                        source,
                        "does not hold a key: expected exactly 64 hex digits (make one with `sluice backup keygen`)"
                            .to_string(),
                    )
                })?;
                Ok(Self::from_bytes(spec.id.clone(), *key))
            }
            KeySource::PassphraseFile(_) | KeySource::PassphraseEnv(_) => {
                let passphrase = text.trim_end_matches(['\r', '\n']);
                if passphrase.chars().count() < 12 {
                    return Err(unavailable(
                        source,
                        "the passphrase is shorter than 12 characters: choose a longer one"
                            .to_string(),
                    ));
                }
                Ok(Self::from_passphrase(spec.id.clone(), passphrase))
            }
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// 64 hex digits as 32 bytes.
fn parse_key_hex(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, key.as_mut_slice()).ok()?;
    Some(key)
}

/// A new random key, as `sluice backup keygen` prints it: 64 lowercase hex digits.
pub fn generate_key_hex() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
    Zeroizing::new(hex::encode(key.as_slice()))
}

/// How a store encrypts: the cluster's name, the primary key of new backups, every key it may
/// read with. Part of [`crate::BackupStoreOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionOptions {
    /// `broker.cluster.clusterName`: recorded in every encrypted manifest and checked on read.
    pub cluster_name: String,
    /// The id of the key new backups are encrypted under; `None`: they are not encrypted.
    pub primary: Option<String>,
    pub keys: Vec<KeyEncryptionKey>,
}

/// The encryption block of a manifest: who wrote it and the partition's keyset, wrapped.
/// Every field is covered by the manifest's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestEncryption {
    /// The cipher of the backup's pool objects: [`OBJECT_CIPHER`].
    pub cipher: String,
    /// The cluster that wrote the backup (`broker.cluster.clusterName`).
    pub cluster_name: String,
    /// The key-encryption key that wraps the keyset and keys the MAC.
    pub key_id: String,
    /// The keyset's id: 32 hex digits.
    pub keyset_id: String,
    /// How a passphrase key was stretched; absent for a key of 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<PassphraseKdf>,
    /// The keyset wrapped under the key: hex of nonce, ciphertext and tag.
    pub wrapped_keys: String,
}

/// The Argon2id derivation of a passphrase key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassphraseKdf {
    /// `argon2id`.
    pub algorithm: String,
    /// 32 hex digits.
    pub salt: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl ManifestEncryption {
    /// The grammar and bounds of every field, checked before any is used.
    pub(crate) fn validate(&self) -> Result<(), ManifestError> {
        let bad = |field: &'static str, reason: String| ManifestError::Encryption { field, reason };
        if self.cipher != OBJECT_CIPHER {
            return Err(bad(
                "cipher",
                format!(
                    "{:?} (this release knows {OBJECT_CIPHER}); use a newer release",
                    self.cipher
                ),
            ));
        }
        if sluice_config::parse_key_id(&self.key_id).as_deref() != Ok(self.key_id.as_str()) {
            return Err(bad("keyId", format!("{:?} is not a key id", self.key_id)));
        }
        if sluice_config::parse_key_id(&self.cluster_name).as_deref()
            != Ok(self.cluster_name.as_str())
        {
            return Err(bad(
                "clusterName",
                format!("{:?} is not a cluster name", self.cluster_name),
            ));
        }
        if decode_hex::<16>(&self.keyset_id).is_none() {
            return Err(bad(
                "keysetId",
                "expected 32 lowercase hex digits".to_string(),
            ));
        }
        if decode_hex::<WRAPPED_BYTES>(&self.wrapped_keys).is_none() {
            return Err(bad(
                "wrappedKeys",
                format!("expected {} lowercase hex digits", 2 * WRAPPED_BYTES),
            ));
        }
        if let Some(kdf) = &self.kdf {
            if kdf.algorithm != "argon2id" {
                return Err(bad(
                    "kdf.algorithm",
                    format!("{:?} (this release knows argon2id)", kdf.algorithm),
                ));
            }
            if decode_hex::<16>(&kdf.salt).is_none() {
                return Err(bad(
                    "kdf.salt",
                    "expected 32 lowercase hex digits".to_string(),
                ));
            }
            let bounded = (8..=ARGON2_MEMORY_KIB_MAX).contains(&kdf.memory_kib)
                && (1..=ARGON2_ITERATIONS_MAX).contains(&kdf.iterations)
                && (1..=ARGON2_PARALLELISM_MAX).contains(&kdf.parallelism);
            if !bounded {
                return Err(bad(
                    "kdf",
                    format!(
                        "memoryKib={} iterations={} parallelism={} exceed what a restore will spend \
                         (at most {ARGON2_MEMORY_KIB_MAX}, {ARGON2_ITERATIONS_MAX}, {ARGON2_PARALLELISM_MAX})",
                        kdf.memory_kib, kdf.iterations, kdf.parallelism
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Lowercase hex of exactly `N` bytes.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// A partition's keyset: the name key and the data key of its pool objects.
pub struct PoolKeys {
    id: [u8; 16],
    names: Zeroizing<[u8; 32]>,
    data: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PoolKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolKeys({}, <redacted>)", hex::encode(self.id))
    }
}

impl PoolKeys {
    pub(crate) fn generate() -> Self {
        let mut id = [0u8; 16];
        let mut names = Zeroizing::new([0u8; 32]);
        let mut data = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(names.as_mut_slice());
        rand::rngs::OsRng.fill_bytes(data.as_mut_slice());
        Self { id, names, data }
    }

    /// The keyset's id, as manifests spell it.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// The name of an object of this keyset with `plaintext`.
    pub fn object_id(&self, plaintext: &[u8]) -> ObjectId {
        ObjectId::from_bytes(*blake3::keyed_hash(&self.names, plaintext).as_bytes())
    }

    /// The key of object `id` with `salt`: its own, so nonces need only be unique within it.
    fn object_key(&self, id: &ObjectId, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut material = Zeroizing::new(Vec::with_capacity(96));
        material.extend_from_slice(self.data.as_slice());
        material.extend_from_slice(id.as_bytes());
        material.extend_from_slice(salt);
        Zeroizing::new(blake3::derive_key(OBJECT_CONTEXT, &material))
    }

    fn object_cipher(&self, id: &ObjectId, salt: &[u8]) -> LessSafeKey {
        aes_256_gcm(&self.object_key(id, salt))
    }

    /// [`Self::encrypt_into`] a new buffer.
    #[cfg(test)]
    pub(crate) fn encrypt(&self, id: &ObjectId, aad: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(encrypted_len(payload.len()));
        self.encrypt_into(id, aad, payload, &mut out);
        out
    }

    /// Appends `payload` encrypted for object `id` to `out`: a random salt, then the STREAM
    /// chunks, each authenticated with `aad` (the envelope's header and the object's id),
    /// sealing each chunk
    /// where it lands: the payload is copied once, as in a plain envelope
    /// (an intermediate buffer cost an encrypted backup a copy and a fresh
    /// allocation per object, measured as a tenth more broker CPU).
    pub(crate) fn encrypt_into(
        &self,
        id: &ObjectId,
        aad: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mut salt = [0u8; OBJECT_SALT_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let cipher = self.object_cipher(id, &salt);
        out.reserve(encrypted_len(payload.len()));
        out.extend_from_slice(&salt);
        let count = chunks_of(payload.len());
        let chunks = payload
            .chunks(CHUNK_BYTES)
            .chain(payload.is_empty().then_some(&[][..]));
        for (index, chunk) in chunks.enumerate() {
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = cipher
                .seal_in_place_separate_tag(
                    stream_nonce(index, index + 1 == count),
                    Aad::from(aad),
                    &mut out[start..],
                )
                .expect("AES-GCM seals a chunk of 64 KiB");
            out.extend_from_slice(tag.as_ref());
        }
    }

    /// The payload of object `id` from its encrypted form; the error says what failed.
    pub(crate) fn decrypt(
        &self,
        id: &ObjectId,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, String> {
        if sealed.len() < OBJECT_SALT_BYTES + TAG_BYTES {
            return Err(format!(
                "{} encrypted bytes is shorter than a salt and one chunk",
                sealed.len()
            ));
        }
        let (salt, chunks) = sealed.split_at(OBJECT_SALT_BYTES);
        let cipher = self.object_cipher(id, salt);
        let count = chunks.len().div_ceil(CHUNK_BYTES + TAG_BYTES);
        let mut out = Vec::with_capacity(chunks.len());
        for (index, chunk) in chunks.chunks(CHUNK_BYTES + TAG_BYTES).enumerate() {
            let start = out.len();
            out.extend_from_slice(chunk);
            let opened = cipher
                .open_in_place(
                    stream_nonce(index, index + 1 == count),
                    Aad::from(aad),
                    &mut out[start..],
                )
                .map_err(|_| {
                    format!(
                        "chunk {index} of {count} does not authenticate under the partition's data key \
                         (damaged, truncated, reordered, or an object of another backup, partition or cluster)"
                    )
                })?
                .len();
            out.truncate(start + opened);
        }
        Ok(out)
    }
}

/// An AES-256-GCM key (ring: hardware AES and carry-less multiplication where the CPU has them,
/// about 10 GB/s a core here, against 1.4 GB/s for the portable crates).
fn aes_256_gcm(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"))
}

/// The nonce of chunk `index` in the STREAM construction with a 32-bit big-endian counter
/// (the layout of `aead::stream::StreamBE32`): a 7-byte prefix (zero: every object has a key of
/// its own, from its salt), the counter, and a last-chunk flag, so truncating an object at a
/// chunk boundary or reordering its chunks fails authentication.
fn stream_nonce(index: usize, last: bool) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    let counter = u32::try_from(index).expect("an object has at most 2^32 chunks");
    nonce[7..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    Nonce::assume_unique_for_key(nonce)
}

/// The number of chunks of a payload of `len` bytes (an empty one is one empty chunk).
fn chunks_of(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES).max(1)
}

/// The size of a payload of `len` bytes once encrypted.
pub(crate) fn encrypted_len(len: usize) -> usize {
    OBJECT_SALT_BYTES + len + TAG_BYTES * chunks_of(len)
}

/// The two keys derived from a key-encryption key.
struct DerivedKeys {
    wrap: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl DerivedKeys {
    fn of(kek: &[u8; 32]) -> Self {
        Self {
            wrap: Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, kek)),
            mac: Zeroizing::new(blake3::derive_key(MAC_CONTEXT, kek)),
        }
    }
}

/// A derived key's cache key: the KEK's id and the salt of its passphrase derivation, if any.
type DerivedKeyId = (String, Option<String>);

/// A store's keys at run time: the configured KEKs, what was derived from them, the keysets
/// opened so far.
pub(crate) struct Keyring {
    cluster_name: String,
    primary: Option<String>,
    keys: HashMap<String, KeyMaterial>,
    derived: Mutex<HashMap<DerivedKeyId, Arc<DerivedKeys>>>,
    opened: Mutex<HashMap<String, Arc<PoolKeys>>>,
    /// The salt of this process's passphrase wraps: one Argon2id derivation per process.
    passphrase_salt: [u8; 16],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        write!(
            f,
            "Keyring(cluster={}, primary={:?}, keys={ids:?})",
            self.cluster_name, self.primary
        )
    }
}

/// A partition's keyset as a backup uses it: the keys, and the block its manifest records.
#[derive(Debug, Clone)]
pub struct PartitionKeys {
    pub keys: Arc<PoolKeys>,
    pub encryption: ManifestEncryption,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Keyring {
    pub(crate) fn new(options: &EncryptionOptions) -> Self {
        let mut passphrase_salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut passphrase_salt);
        Self {
            cluster_name: options.cluster_name.clone(),
            primary: options.primary.clone(),
            keys: options
                .keys
                .iter()
                .map(|key| (key.id.clone(), key.material.clone()))
                .collect(),
            derived: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
            passphrase_salt,
        }
    }

    pub(crate) fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    /// The keys derived from KEK `key_id` (with the manifest's passphrase derivation, if any).
    fn derived(
        &self,
        key_id: &str,
        kdf: Option<&PassphraseKdf>,
    ) -> Result<Arc<DerivedKeys>, ManifestError> {
        let cache_key = (key_id.to_string(), kdf.map(|k| k.salt.clone()));
        if let Some(found) = lock(&self.derived).get(&cache_key) {
            return Ok(found.clone());
        }
        let material = self
            .keys
            .get(key_id)
            .ok_or_else(|| ManifestError::KeyNotConfigured {
                key_id: key_id.to_string(),
            })?;
        let kek = match (material, kdf) {
            (KeyMaterial::Key(key), None) => key.clone(),
            (KeyMaterial::Passphrase(passphrase), Some(kdf)) => stretch(passphrase, kdf)?,
            (KeyMaterial::Key(_), Some(_)) | (KeyMaterial::Passphrase(_), None) => {
                return Err(ManifestError::KeyKindMismatch {
                    key_id: key_id.to_string(),
                    manifest_kind: if kdf.is_some() { "passphrase" } else { "key" },
                })
            }
        };
        let derived = Arc::new(DerivedKeys::of(&kek));
        let mut cache = lock(&self.derived);
        if cache.len() >= DERIVED_KEYS_MAX {
            cache.clear();
        }
        cache.insert(cache_key, derived.clone());
        Ok(derived)
    }

    /// The MAC of a manifest's canonical bytes under the key its encryption block names.
    pub(crate) fn mac(
        &self,
        encryption: &ManifestEncryption,
        canonical: &[u8],
    ) -> Result<String, ManifestError> {
        let derived = self.derived(&encryption.key_id, encryption.kdf.as_ref())?;
        Ok(format!(
            "{MAC_PREFIX}{}",
            blake3::keyed_hash(&derived.mac, canonical).to_hex()
        ))
    }

    /// Checks a read manifest's MAC and cluster, before anything else of it is trusted.
    pub(crate) fn authenticate(
        &self,
        encryption: &ManifestEncryption,
        mac: Option<&str>,
        canonical: &[u8],
    ) -> Result<(), ManifestError> {
        encryption.validate()?;
        let Some(mac) = mac else {
            return Err(ManifestError::MacMissing);
        };
        let expected = self.mac(encryption, canonical)?;
        let equal: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), mac.as_bytes()).into();
        if !equal {
            return Err(ManifestError::MacMismatch {
                key_id: encryption.key_id.clone(),
            });
        }
        if encryption.cluster_name != self.cluster_name {
            return Err(ManifestError::OtherCluster {
                stored: encryption.cluster_name.clone(),
                configured: self.cluster_name.clone(),
            });
        }
        Ok(())
    }

    /// The keyset an (authenticated) encryption block wraps.
    pub(crate) fn open(
        &self,
        encryption: &ManifestEncryption,
    ) -> Result<Arc<PoolKeys>, ManifestError> {
        if let Some(found) = lock(&self.opened).get(&opened_key(encryption)) {
            return Ok(found.clone());
        }
        encryption.validate()?;
        let derived = self.derived(&encryption.key_id, encryption.kdf.as_ref())?;
        let wrapped = decode_hex::<WRAPPED_BYTES>(&encryption.wrapped_keys).expect("validated");
        let (nonce, ciphertext) = wrapped.split_at(WRAP_NONCE_BYTES);
        let aad = wrap_aad(
            &encryption.keyset_id,
            &encryption.key_id,
            &encryption.cluster_name,
        );
        let mut opened = Zeroizing::new(ciphertext.to_vec());
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("a 96-bit nonce");
        let unwrapped = aes_256_gcm(&derived.wrap)
            .open_in_place(nonce, Aad::from(&aad), opened.as_mut_slice())
            .map_err(|_| ManifestError::KeysetUnwrap {
                key_id: encryption.key_id.clone(),
            })?;
        let opened = &unwrapped[..];
        let mut keys = PoolKeys {
            id: decode_hex::<16>(&encryption.keyset_id).expect("validated"),
            names: Zeroizing::new([0u8; 32]),
            data: Zeroizing::new([0u8; 32]),
        };
        keys.names.copy_from_slice(&opened[..32]);
        keys.data.copy_from_slice(&opened[32..64]);
        let keys = Arc::new(keys);
        self.remember(encryption, keys.clone());
        Ok(keys)
    }

    fn remember(&self, encryption: &ManifestEncryption, keys: Arc<PoolKeys>) {
        let mut opened = lock(&self.opened);
        if opened.len() >= OPENED_KEYSETS_MAX {
            opened.clear();
        }
        opened.insert(opened_key(encryption), keys);
    }

    /// `keys` wrapped under the primary key: the block of the manifests that use them.
    pub(crate) fn wrap(&self, keys: &Arc<PoolKeys>) -> Result<ManifestEncryption, ManifestError> {
        let key_id = self.primary.clone().ok_or(ManifestError::NoPrimaryKey)?;
        let kdf = match self.keys.get(&key_id) {
            Some(KeyMaterial::Passphrase(_)) => Some(PassphraseKdf {
                algorithm: "argon2id".to_string(),
                salt: hex::encode(self.passphrase_salt),
                memory_kib: ARGON2_MEMORY_KIB,
                iterations: ARGON2_ITERATIONS,
                parallelism: ARGON2_PARALLELISM,
            }),
            Some(KeyMaterial::Key(_)) => None,
            None => return Err(ManifestError::KeyNotConfigured { key_id }),
        };
        let derived = self.derived(&key_id, kdf.as_ref())?;
        let keyset_id = keys.id();
        let aad = wrap_aad(&keyset_id, &key_id, &self.cluster_name);
        let mut nonce = [0u8; WRAP_NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut plaintext = Zeroizing::new([0u8; 64]);
        plaintext[..32].copy_from_slice(keys.names.as_slice());
        plaintext[32..].copy_from_slice(keys.data.as_slice());
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(plaintext.as_slice());
        let tag = aes_256_gcm(&derived.wrap)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut wrapped[WRAP_NONCE_BYTES..],
            )
            .expect("AES-GCM seals 64 bytes");
        wrapped.extend_from_slice(tag.as_ref());
        let encryption = ManifestEncryption {
            cipher: OBJECT_CIPHER.to_string(),
            cluster_name: self.cluster_name.clone(),
            key_id,
            keyset_id,
            kdf,
            wrapped_keys: hex::encode(wrapped),
        };
        self.remember(&encryption, keys.clone());
        Ok(encryption)
    }

    /// The keys a backup of a partition uses, given the partition's manifests, newest first:
    /// the keyset of the newest encrypted one this keyring opens (so objects keep their names
    /// and deduplicate), re-wrapped when its key is not the primary; a new keyset when none
    /// opens. `None` when there is no primary key.
    pub(crate) fn partition_keys<'a>(
        &self,
        newest_first: impl Iterator<Item = &'a ManifestEncryption>,
    ) -> Result<Option<PartitionKeys>, ManifestError> {
        let Some(primary) = self.primary.clone() else {
            return Ok(None);
        };
        for encryption in newest_first {
            if encryption.cluster_name != self.cluster_name {
                continue;
            }
            let Ok(keys) = self.open(encryption) else {
                continue;
            };
            let encryption = if encryption.key_id == primary {
                encryption.clone()
            } else {
                self.wrap(&keys)?
            };
            return Ok(Some(PartitionKeys { keys, encryption }));
        }
        let keys = Arc::new(PoolKeys::generate());
        let encryption = self.wrap(&keys)?;
        Ok(Some(PartitionKeys { keys, encryption }))
    }
}

/// The cache key of an opened keyset: every field its unwrapping depends on, so a block that
/// differs in any of them is unwrapped (and authenticated) anew.
fn opened_key(encryption: &ManifestEncryption) -> String {
    format!(
        "{}/{}/{}/{:?}/{}",
        encryption.key_id,
        encryption.cluster_name,
        encryption.keyset_id,
        encryption.kdf.as_ref().map(|k| &k.salt),
        encryption.wrapped_keys
    )
}

fn wrap_aad(keyset_id: &str, key_id: &str, cluster_name: &str) -> Vec<u8> {
    format!("sluice keyset {keyset_id} key {key_id} cluster {cluster_name}").into_bytes()
}

/// Argon2id of a passphrase with a manifest's (validated) parameters.
fn stretch(passphrase: &str, kdf: &PassphraseKdf) -> Result<Zeroizing<[u8; 32]>, ManifestError> {
    let salt = decode_hex::<16>(&kdf.salt).ok_or_else(|| ManifestError::Encryption {
        field: "kdf.salt",
        reason: "expected 32 lowercase hex digits".to_string(),
    })?;
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| ManifestError::Encryption {
            field: "kdf",
            reason: e.to_string(),
        })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut_slice())
        .map_err(|e| ManifestError::Encryption {
            field: "kdf",
            reason: e.to_string(),
        })?;
    Ok(out)
}

impl crate::BackupStore {
    /// The keyset a manifest's pool objects are encrypted under (`None` for a plain backup).
    pub(crate) fn keys_of(
        &self,
        manifest: &crate::Manifest,
    ) -> Result<Option<Arc<PoolKeys>>, BackupStoreError> {
        let Some(encryption) = &manifest.encryption else {
            return Ok(None);
        };
        let invalid = |reason: ManifestError| BackupStoreError::InvalidManifest {
            path: self.manifest_path(&manifest.id).to_string(),
            reason: reason.to_string(),
        };
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            invalid(ManifestError::KeyNotConfigured {
                key_id: encryption.key_id.clone(),
            })
        })?;
        keyring.open(encryption).map(Some).map_err(invalid)
    }

    /// The keys a new backup of a partition is encrypted under, given manifests of the
    /// partition (any order): the keyset of the newest encrypted one that opens, re-wrapped under
    /// the primary key if it is under another, or a new keyset. `None` when no primary key is
    /// configured (the backup is plain). Runs the passphrase derivation, if any, off the runtime.
    pub async fn partition_keys(
        &self,
        manifests: &[crate::Manifest],
    ) -> Result<Option<PartitionKeys>, BackupStoreError> {
        let Some(keyring) = self.keyring.clone() else {
            return Ok(None);
        };
        let mut blocks: Vec<(crate::BackupIdentifier, ManifestEncryption)> = manifests
            .iter()
            .filter_map(|m| m.encryption.clone().map(|e| (m.id, e)))
            .collect();
        blocks.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        let path = format!("the encrypted manifests in {}", self.description());
        tokio::task::spawn_blocking(move || {
            keyring.partition_keys(blocks.iter().map(|(_, encryption)| encryption))
        })
        .await
        .map_err(|e| BackupStoreError::Compression {
            path: path.clone(),
            reason: e.to_string(),
        })?
        .map_err(|reason| BackupStoreError::InvalidManifest {
            path,
            reason: reason.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(primary: &str, keys: Vec<KeyEncryptionKey>) -> EncryptionOptions {
        EncryptionOptions {
            cluster_name: "test-cluster".to_string(),
            primary: Some(primary.to_string()),
            keys,
        }
    }

    fn key(id: &str, byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(id, [byte; 32])
    }

    /// A keyset wrapped under a key opens with the same key in another process (keyring), and
    /// a MAC made under it verifies there; another key of the same id does not.
    #[test]
    fn wrapped_keysets_open_and_macs_verify_only_under_their_key() {
        let writer = Keyring::new(&options("a", vec![key("a", 1)]));
        let keys = Arc::new(PoolKeys::generate());
        let block = writer.wrap(&keys).unwrap();
        block.validate().unwrap();
        let mac = writer.mac(&block, b"canonical").unwrap();

        let reader = Keyring::new(&options("a", vec![key("a", 1)]));
        reader
            .authenticate(&block, Some(&mac), b"canonical")
            .unwrap();
        let opened = reader.open(&block).unwrap();
        assert_eq!(opened.id(), keys.id());
        assert_eq!(opened.object_id(b"x"), keys.object_id(b"x"));

        let impostor = Keyring::new(&options("a", vec![key("a", 2)]));
        let refused = impostor.authenticate(&block, Some(&mac), b"canonical");
        assert!(
            matches!(refused, Err(ManifestError::MacMismatch { .. })),
            "{refused:?}"
        );
        assert!(matches!(
            impostor.open(&block),
            Err(ManifestError::KeysetUnwrap { .. })
        ));
        let refused = reader.authenticate(&block, Some(&mac), b"canonicaL");
        assert!(
            matches!(refused, Err(ManifestError::MacMismatch { .. })),
            "{refused:?}"
        );
        assert!(matches!(
            reader.authenticate(&block, None, b"canonical"),
            Err(ManifestError::MacMissing)
        ));
        let stranger = Keyring::new(&options("b", vec![key("b", 1)]));
        assert!(matches!(
            stranger.authenticate(&block, Some(&mac), b"canonical"),
            Err(ManifestError::KeyNotConfigured { .. })
        ));
        // The wrap is bound to its key id and cluster: edited, it no longer opens.
        let moved = ManifestEncryption {
            cluster_name: "other".to_string(),
            ..block.clone()
        };
        assert!(matches!(
            reader.open(&moved),
            Err(ManifestError::KeysetUnwrap { .. })
        ));
    }

    /// A passphrase key is stretched with the salt its block records, so another process with
    /// the same passphrase opens it; a wrong passphrase does not verify.
    #[test]
    fn passphrase_keys_derive_with_the_recorded_salt() {
        let passphrase = |p: &str| KeyEncryptionKey::from_passphrase("p", p);
        let writer = Keyring::new(&options("p", vec![passphrase("correct horse battery")]));
        let keys = Arc::new(PoolKeys::generate());
        let block = writer.wrap(&keys).unwrap();
        let kdf = block
            .kdf
            .clone()
            .expect("a passphrase wrap records its derivation");
        assert_eq!(kdf.algorithm, "argon2id");
        let mac = writer.mac(&block, b"m").unwrap();
        let reader = Keyring::new(&options("p", vec![passphrase("correct horse battery")]));
        reader.authenticate(&block, Some(&mac), b"m").unwrap();
        assert_eq!(reader.open(&block).unwrap().id(), keys.id());
        let wrong = Keyring::new(&options("p", vec![passphrase("correct horse battery!")]));
        assert!(wrong.authenticate(&block, Some(&mac), b"m").is_err());
        let as_key = Keyring::new(&options("p", vec![key("p", 1)]));
        assert!(matches!(
            as_key.authenticate(&block, Some(&mac), b"m"),
            Err(ManifestError::KeyKindMismatch { .. })
        ));
    }

    /// Values read from a bucket are held to their grammar and bounds before use: a derivation
    /// that would take gigabytes or forever is refused, not run.
    #[test]
    fn encryption_blocks_are_validated_before_use() {
        let writer = Keyring::new(&options(
            "p",
            vec![KeyEncryptionKey::from_passphrase("p", "a long passphrase")],
        ));
        let block = writer.wrap(&Arc::new(PoolKeys::generate())).unwrap();
        let kdf = block.kdf.clone().unwrap();
        let cases: Vec<(&str, ManifestEncryption)> = vec![
            (
                "cipher",
                ManifestEncryption {
                    cipher: "ROT13".into(),
                    ..block.clone()
                },
            ),
            (
                "keyId",
                ManifestEncryption {
                    key_id: "../a".into(),
                    ..block.clone()
                },
            ),
            (
                "clusterName",
                ManifestEncryption {
                    cluster_name: String::new(),
                    ..block.clone()
                },
            ),
            (
                "keysetId",
                ManifestEncryption {
                    keyset_id: "ABCD".into(),
                    ..block.clone()
                },
            ),
            (
                "wrappedKeys",
                ManifestEncryption {
                    wrapped_keys: "00".into(),
                    ..block.clone()
                },
            ),
            (
                "kdf",
                ManifestEncryption {
                    kdf: Some(PassphraseKdf {
                        memory_kib: u32::MAX,
                        ..kdf.clone()
                    }),
                    ..block.clone()
                },
            ),
            (
                "kdf",
                ManifestEncryption {
                    kdf: Some(PassphraseKdf {
                        iterations: 1_000_000,
                        ..kdf.clone()
                    }),
                    ..block.clone()
                },
            ),
            (
                "kdf.algorithm",
                ManifestEncryption {
                    kdf: Some(PassphraseKdf {
                        algorithm: "md5".into(),
                        ..kdf.clone()
                    }),
                    ..block.clone()
                },
            ),
        ];
        for (field, bad) in cases {
            match bad.validate() {
                Err(ManifestError::Encryption { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    /// The object format is the STREAM construction exactly (`aead::stream::StreamBE32` over
    /// AES-256-GCM, the maintained reference): each side opens what the other sealed, for
    /// payloads of one chunk, of exact multiples of a chunk and in between.
    #[test]
    fn objects_are_the_reference_stream_construction() {
        use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
        use aes_gcm::aead::{KeyInit, Payload};
        use aes_gcm::Aes256Gcm;
        let keys = PoolKeys::generate();
        let id = ObjectId::of(b"object");
        let aad = b"header and name";
        for len in [
            1,
            100,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES,
            200_000,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = keys.encrypt(&id, aad, &payload);
            assert_eq!(sealed.len(), encrypted_len(len));
            let (salt, body) = sealed.split_at(OBJECT_SALT_BYTES);
            let key = keys.object_key(&id, salt);
            let reference = || Aes256Gcm::new(key.as_slice().into());
            let mut decryptor = DecryptorBE32::from_aead(reference(), (&[0u8; 7]).into());
            let sealed_chunks: Vec<&[u8]> = body.chunks(CHUNK_BYTES + TAG_BYTES).collect();
            let mut opened = Vec::new();
            for (index, chunk) in sealed_chunks.iter().enumerate() {
                let message = Payload { msg: chunk, aad };
                if index + 1 < sealed_chunks.len() {
                    opened.extend(decryptor.decrypt_next(message).unwrap());
                } else {
                    opened.extend(decryptor.decrypt_last(message).unwrap());
                    break;
                }
            }
            assert!(opened == payload, "len {len}: the reference opens ours");

            let mut encryptor = EncryptorBE32::from_aead(reference(), (&[0u8; 7]).into());
            let mut theirs = salt.to_vec();
            let plain_chunks: Vec<&[u8]> = payload.chunks(CHUNK_BYTES).collect();
            for (index, chunk) in plain_chunks.iter().enumerate() {
                let message = Payload { msg: chunk, aad };
                if index + 1 < plain_chunks.len() {
                    theirs.extend(encryptor.encrypt_next(message).unwrap());
                } else {
                    theirs.extend(encryptor.encrypt_last(message).unwrap());
                    break;
                }
            }
            assert_eq!(theirs, sealed, "len {len}: the same bytes");
            assert!(keys.decrypt(&id, aad, &theirs).unwrap() == payload);
        }
    }

    /// A backup keeps its partition's keyset (objects keep their names and deduplicate): the
    /// newest one that opens, re-wrapped when the primary key changed; a new one when none opens.
    #[test]
    fn partitions_keep_their_keyset_across_key_rotation() {
        let old = Keyring::new(&options("a", vec![key("a", 1)]));
        let first = old.partition_keys(std::iter::empty()).unwrap().unwrap();
        assert_eq!(first.encryption.key_id, "a");
        let again = old
            .partition_keys([&first.encryption].into_iter())
            .unwrap()
            .unwrap();
        assert_eq!(again.keys.id(), first.keys.id());
        assert_eq!(again.encryption, first.encryption, "reused as it is");

        let rotated = Keyring::new(&options("b", vec![key("a", 1), key("b", 2)]));
        let after = rotated
            .partition_keys([&first.encryption].into_iter())
            .unwrap()
            .unwrap();
        assert_eq!(after.keys.id(), first.keys.id(), "the same keyset");
        assert_eq!(
            after.encryption.key_id, "b",
            "now wrapped under the primary"
        );

        let without_a = Keyring::new(&options("b", vec![key("b", 2)]));
        let fresh = without_a
            .partition_keys([&first.encryption].into_iter())
            .unwrap()
            .unwrap();
        assert_ne!(
            fresh.keys.id(),
            first.keys.id(),
            "a keyset it cannot open is not used"
        );
    }
}
