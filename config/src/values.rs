//! Parsers turning configuration strings into typed values. Each returns the
//! reason of a failure as a [`ValueError`]; the caller attaches key and value
//! ([`crate::ConfigError::Invalid`]).

use std::path::PathBuf;
use std::time::Duration;

/// Why a configuration value does not parse or breaks its rule; the `reason` of
/// [`crate::ConfigError::Invalid`], which names the key and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("not a non-negative integer")]
    NotANumber,
    #[error("not a non-negative integer that fits in 64 bits")]
    NumberTooLarge,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: u64, max: u64 },
    #[error("not a valid port")]
    PortTooLarge,
    #[error("not a valid port (an integer between 1 and 65535)")]
    NotAPort,
    #[error("not a size (an integer with an optional unit B, KB, MB or GB, e.g. \"64MB\"; got {text:?})")]
    NotASize { text: String },
    #[error("size too large")]
    SizeTooLarge,
    /// `bounds` as the key documents them, e.g. `8MB and 4GB`.
    #[error("must be between {bounds}")]
    SizeOutOfRange { bounds: &'static str },
    #[error("duration too large")]
    DurationTooLarge,
    #[error("not a duration (e.g. \"30s\", \"5m\", \"1h 30m\" or milliseconds): {source}")]
    NotADuration { source: humantime::DurationError },
    #[error("must be at least 100ms")]
    DurationTooShort,
    #[error("must be at least 1s")]
    DurationBelowOneSecond,
    #[error("not a boolean (true or false)")]
    NotABool,
    #[error("must not be empty")]
    Empty,
    #[error("{address:?} is not a host:port address")]
    AddressWithoutPort { address: String },
    #[error("{address:?} is not a host:port address (empty host)")]
    AddressHostEmpty { address: String },
    #[error(
        "{address:?} is not a host:port address (IPv6 hosts must be in brackets, e.g. [::1]:26501)"
    )]
    AddressIpv6Unbracketed { address: String },
    #[error("{address:?} is not a host:port address (space in host)")]
    AddressHostSpace { address: String },
    #[error("{address:?} has an invalid port (expected 1..=65535)")]
    AddressPort { address: String },
    #[error("entry {index} of the comma-separated list is empty")]
    ListEntryEmpty { index: usize },
    #[error("must be a URL starting with http:// or https://")]
    NotAUrl,
    #[error("only replicationFactor=1 is supported for now")]
    ReplicationFactor,
    #[error("not a backup store (NONE, FILESYSTEM, S3, GCS or AZURE)")]
    NotABackupStore,
    #[error("not a compression (NONE or ZSTD)")]
    NotACompression,
    #[error("{id:?} is not a key id: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    KeyId { id: String },
    #[error("entry {index} of the comma-separated list ({entry:?}) is not <key id>=<source>, e.g. k1=file:/etc/sluice/backup.key")]
    KeyEntry { index: usize, entry: String },
    #[error("key {id}: {source_text:?} is not a key source: file:<path> or env:<VARIABLE> (64 hex digits: a key), passphrase-file:<path> or passphrase-env:<VARIABLE> (a passphrase, stretched with Argon2id)")]
    KeySource { id: String, source_text: String },
    #[error("key id {id} is listed twice")]
    KeyIdDuplicate { id: String },
    #[error("not a server-side encryption (NONE, AES256, KMS, DSSE_KMS or CUSTOMER)")]
    NotAnSseMode,
    /// The value is never quoted: it is a key.
    #[error(
        "is not base64 (standard alphabet A-Z a-z 0-9 + /, with = padding, no spaces or line breaks); \
         an SSE-C key is the base64 of 32 bytes, e.g. from `openssl rand -base64 32`"
    )]
    NotBase64,
    #[error(
        "decodes to {bytes} bytes; an SSE-C key is exactly 32 bytes (256 bits), 44 base64 characters, \
         e.g. from `openssl rand -base64 32`"
    )]
    KeyLength { bytes: usize },
}

/// Parses a key id: 1 to 64 characters of `[A-Za-z0-9._-]` (it is printed, logged and stored in
/// manifests, never the key itself).
pub fn parse_key_id(s: &str) -> Result<String, ValueError> {
    let id = s.trim();
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(id.to_string())
    } else {
        Err(ValueError::KeyId { id: id.to_string() })
    }
}

/// Parses `broker.data.backup.encryption.keys`: comma-separated `<id>=<source>` entries, each
/// id once. The sources name where a key is; no key material is ever part of the value.
pub fn parse_key_list(s: &str) -> Result<Vec<crate::EncryptionKeySpec>, ValueError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut specs: Vec<crate::EncryptionKeySpec> = Vec::new();
    for (index, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(ValueError::ListEntryEmpty { index });
        }
        let Some((id, source_text)) = entry.split_once('=') else {
            return Err(ValueError::KeyEntry {
                index,
                entry: entry.to_string(),
            });
        };
        let id = parse_key_id(id)?;
        let source = parse_key_source(source_text.trim()).ok_or_else(|| ValueError::KeySource {
            id: id.clone(),
            source_text: source_text.trim().to_string(),
        })?;
        if specs.iter().any(|spec| spec.id == id) {
            return Err(ValueError::KeyIdDuplicate { id });
        }
        specs.push(crate::EncryptionKeySpec { id, source });
    }
    Ok(specs)
}

fn parse_key_source(text: &str) -> Option<crate::KeySource> {
    use crate::KeySource;
    let (kind, value) = text.split_once(':')?;
    if value.is_empty() {
        return None;
    }
    Some(match kind {
        "file" => KeySource::File(PathBuf::from(value)),
        "env" => KeySource::Env(value.to_string()),
        "passphrase-file" => KeySource::PassphraseFile(PathBuf::from(value)),
        "passphrase-env" => KeySource::PassphraseEnv(value.to_string()),
        _ => return None,
    })
}

/// Checks an SSE-C key: the base64 (standard alphabet, padded, as object_store decodes it) of
/// exactly 32 bytes. Returns the text as given; errors never contain it.
pub(crate) fn sse_customer_key(s: &str) -> Result<String, ValueError> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ValueError::NotBase64)?;
    if key.len() != 32 {
        return Err(ValueError::KeyLength { bytes: key.len() });
    }
    Ok(s.to_string())
}

/// Parses a non-negative integer (ASCII digits only, surrounding whitespace ignored).
pub fn parse_uint(s: &str) -> Result<u64, ValueError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::NotANumber);
    }
    s.parse::<u64>().map_err(|_| ValueError::NumberTooLarge)
}

/// Parses an integer within `min..=max`.
pub(crate) fn uint_in(s: &str, min: u64, max: u64) -> Result<u64, ValueError> {
    let n = parse_uint(s)?;
    if n < min || n > max {
        return Err(ValueError::OutOfRange { min, max });
    }
    Ok(n)
}

/// Parses a TCP port, `1..=65535`.
pub fn parse_port(s: &str) -> Result<u16, ValueError> {
    let s = s.trim();
    match parse_uint(s) {
        Ok(n @ 1..=65535) => u16::try_from(n).map_err(|_| ValueError::PortTooLarge),
        _ => Err(ValueError::NotAPort),
    }
}

/// Parses a size in bytes: an integer with an optional, case-insensitive unit, optionally
/// separated by spaces: `B`; `KB`/`KiB` = 1024; `MB`/`MiB` = 1024²; `GB`/`GiB` = 1024³.
/// A plain number is a number of bytes.
///
/// Following the Spring/Zeebe convention, `KB`, `MB` and `GB` are binary units
/// (`64MB` = 64 × 1024 × 1024 bytes), exactly like `KiB`, `MiB` and `GiB`.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let err = || ValueError::NotASize {
        text: s.trim().to_string(),
    };
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(err());
    }
    let number: u64 = number.parse().map_err(|_| ValueError::SizeTooLarge)?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" => 1 << 10,
        "mb" | "mib" => 1 << 20,
        "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    number
        .checked_mul(multiplier)
        .ok_or(ValueError::SizeTooLarge)
}

/// Parses a size within `min..=max` bytes; the reason quotes the bounds as given.
pub(crate) fn size_in(
    s: &str,
    min: u64,
    max: u64,
    bounds: &'static str,
) -> Result<u64, ValueError> {
    let n = parse_size(s)?;
    if n < min || n > max {
        return Err(ValueError::SizeOutOfRange { bounds });
    }
    Ok(n)
}

/// Parses a rate in bytes per second: a size ([`parse_size`]) with an optional `/s` suffix.
pub fn parse_rate(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    parse_size(t)
}

/// Parses a duration: a plain integer is a number of milliseconds, anything else goes
/// through [`humantime::parse_duration`] (`"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| ValueError::DurationTooLarge);
    }
    humantime::parse_duration(s).map_err(|source| ValueError::NotADuration { source })
}

/// Parses a duration of at least 100ms.
pub(crate) fn duration_at_least_100ms(s: &str) -> Result<Duration, ValueError> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(ValueError::DurationTooShort);
    }
    Ok(d)
}

/// Parses a duration of at least one second.
pub(crate) fn duration_at_least_1s(s: &str) -> Result<Duration, ValueError> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(ValueError::DurationBelowOneSecond);
    }
    Ok(d)
}

/// Parses `true` or `false`, case-insensitively.
pub fn parse_bool(s: &str) -> Result<bool, ValueError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValueError::NotABool),
    }
}

pub(crate) fn non_empty(s: &str) -> Result<String, ValueError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    Ok(s.to_string())
}

/// An empty (or blank) value means "unset".
pub(crate) fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Checks one `host:port` address. IPv6 hosts must be bracketed (`[::1]:26501`).
pub fn parse_address(s: &str) -> Result<String, ValueError> {
    let s = s.trim();
    let address = || s.to_string();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(ValueError::AddressWithoutPort { address: address() });
    };
    if host.is_empty() {
        return Err(ValueError::AddressHostEmpty { address: address() });
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(ValueError::AddressIpv6Unbracketed { address: address() });
    }
    if host.chars().any(char::is_whitespace) {
        return Err(ValueError::AddressHostSpace { address: address() });
    }
    parse_port(port).map_err(|_| ValueError::AddressPort { address: address() })?;
    Ok(s.to_string())
}

/// Parses a comma-separated list of `host:port` addresses; a blank value is an empty list.
pub fn parse_address_list(s: &str) -> Result<Vec<String>, ValueError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .enumerate()
        .map(|(i, item)| {
            if item.trim().is_empty() {
                Err(ValueError::ListEntryEmpty { index: i })
            } else {
                parse_address(item)
            }
        })
        .collect()
}

/// Formats `host:port` for a listening address that other processes should connect to:
/// wildcard hosts become loopback, bare IPv6 hosts get brackets.
pub(crate) fn connect_address(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        h => h,
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether a listening host is reachable only from this machine: `localhost`, `127.0.0.0/8` or
/// `::1` (bracketed or not). Other names are not resolved: they count as reachable.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a listening host accepts connections on every interface.
pub(crate) fn is_wildcard_host(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "[::]")
}
