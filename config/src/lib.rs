//! Typed, layered configuration of Sluice.
//!
//! # Layers
//!
//! Every setting is a dotted key such as `broker.cluster.nodeId` (see [`KEYS`] for the full
//! list, with defaults and descriptions). Its value is taken from, in increasing precedence:
//!
//! 1. the built-in default;
//! 2. the YAML file: the path in the environment variable `SLUICE_CONFIG` when it is set (the
//!    file must then exist), otherwise `config/application.yaml` relative to the current
//!    directory when that file exists (otherwise no file is read). Keys are nested mappings
//!    (`broker:` / `cluster:` / `nodeId: 1`) or dotted (`broker.cluster.nodeId: 1`), matched
//!    case-insensitively; lists of scalars are equivalent to comma-separated strings; `null`
//!    (or an empty value) leaves the default in place;
//! 3. environment variables.
//!
//! # The environment rule
//!
//! There is exactly one rule: `SLUICE_` + the upper-cased dotted key with every dot replaced by
//! `_`. Keys never contain separators of their own, so camelCase words are simply glued:
//!
//! | key | environment variable |
//! |---|---|
//! | `broker.cluster.nodeId` | `SLUICE_BROKER_CLUSTER_NODEID` |
//! | `broker.data.backup.s3.bucketName` | `SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME` |
//!
//! Variable names are matched exactly against this table (so they must be upper-case).
//! `SLUICE_CONFIG` names the YAML file and is not a key. Any other `SLUICE_*` variable that
//! names no key is an error ([`ConfigError::UnknownKey`]), as is an unknown key in the YAML
//! file: a mistyped setting must not be silently ignored.
//!
//! # Values
//!
//! Every value is parsed from its string form; a bad value is reported as
//! [`ConfigError::Invalid`] naming the key (in its documented spelling), the value (secrets are
//! shown as `<redacted>`) and the reason. For optional keys (no default) an empty value means
//! "unset".
//!
//! * Sizes are integers with an optional, case-insensitive unit: `B`, `KB`/`KiB`, `MB`/`MiB`,
//!   `GB`/`GiB`. Following the Spring/Zeebe convention `KB`, `MB` and `GB` are *binary* units
//!   (`64MB` = 64 × 1024² bytes). A plain number is a number of bytes. See [`parse_size`].
//! * Durations use [`humantime`] syntax (`30s`, `5m`, `1h 30m`, `250ms`); a plain integer is a
//!   number of milliseconds. See [`parse_duration`].
//! * Booleans are `true` or `false`, case-insensitively.
//! * Address lists are comma-separated `host:port` entries (IPv6 hosts in brackets).
//!
//! After parsing, an empty `broker.cluster.brokers` with `clusterSize` 1 becomes this broker's
//! own `host:port` (`0.0.0.0` replaced by `127.0.0.1`), and an empty `gateway.cluster.brokers`
//! becomes a copy of `broker.cluster.brokers`. Cross-field rules are checked by
//! [`SluiceConfig::validate_broker`] and [`SluiceConfig::validate_gateway`], which each process
//! calls for its own role.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod keys;
mod load;
mod values;

#[cfg(test)]
mod tests;

pub use keys::{
    env_var_name, find_env, find_key, is_secret, keys_markdown, KeyDoc, CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE, ENV_PREFIX, KEYS,
};
pub use load::{load, load_from};
pub use values::{
    parse_address, parse_address_list, parse_bool, parse_duration, parse_key_id, parse_key_list,
    parse_port, parse_rate, parse_size, parse_uint, ValueError,
};

/// The whole configuration of a Sluice process (broker and gateway sections).
#[derive(Debug, Clone, PartialEq)]
pub struct SluiceConfig {
    pub broker: BrokerConfig,
    pub gateway: GatewayConfig,
}

/// `broker.*`
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub cluster: ClusterConfig,
    pub network: NetworkConfig,
    /// `broker.network.managementPort`: the port of `GET /metrics`, on `network.host`.
    pub management_port: u16,
    /// `broker.network.tls.*`: HTTPS on the internal port when set.
    pub tls: Option<TlsConfig>,
    /// `broker.network.insecure`: a non-loopback host without a cluster token is allowed.
    pub insecure: bool,
    pub data: DataConfig,
}

/// `broker.cluster.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: u32,
    pub cluster_size: u32,
    pub partitions_count: u32,
    pub replication_factor: u32,
    /// `host:port` of every broker, in node-id order.
    pub brokers: Vec<String>,
    /// `broker.cluster.token`: the shared secret of the internal API.
    pub token: Option<Secret>,
    /// `broker.cluster.ca`: the CA of the brokers' internal certificates (HTTPS between brokers).
    pub ca: Option<PathBuf>,
    /// `broker.cluster.clusterName`: recorded in every encrypted backup, whose restore refuses a
    /// backup of another name.
    pub cluster_name: String,
}

/// `broker.network.*` and `gateway.network.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub host: String,
    pub port: u16,
}

/// `broker.data.*`
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    pub directory: PathBuf,
    /// `broker.data.logSegmentSize`, in bytes.
    pub log_segment_size_bytes: u64,
    pub snapshot_period: Duration,
    pub backup: BackupConfig,
}

/// `broker.data.backup.*`
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    pub store: BackupStoreKind,
    pub filesystem: FilesystemBackupConfig,
    pub s3: S3BackupConfig,
    pub gcs: GcsBackupConfig,
    pub azure: AzureBackupConfig,
    pub uploads_concurrent_max: usize,
    /// `broker.data.backup.uploadRateLimit` in bytes per second; 0 = unlimited.
    pub upload_rate_limit_bytes_per_second: u64,
    /// `broker.data.backup.uploadMemoryLimit`, in bytes.
    pub upload_memory_limit_bytes: u64,
    /// `broker.data.backup.encryption.*`
    pub encryption: EncryptionConfig,
    /// `broker.data.backup.continuous`: sealed log segments are archived as they seal.
    pub continuous: bool,
    /// `broker.data.backup.continuousLagLimit`, in bytes: past this much log not archived,
    /// compaction no longer waits for the archiver.
    pub continuous_lag_bytes_max: u64,
}

/// `broker.data.backup.encryption.*`: client-side encryption of backups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionConfig {
    /// `primaryKey`: the id of the key new backups are encrypted under; `None`: new backups are
    /// not encrypted.
    pub primary_key: Option<String>,
    /// `keys`: every key-encryption key the broker, restore and verify may use, by id (new
    /// backups use the primary, reading accepts any).
    pub keys: Vec<EncryptionKeySpec>,
}

/// One key-encryption key: its id and where its material is (never the material itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKeySpec {
    /// 1 to 64 characters of `[A-Za-z0-9._-]`; recorded in the manifests it protects.
    pub id: String,
    pub source: KeySource,
}

/// Where a key-encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the key as 64 hex digits (`sluice backup keygen` writes one).
    File(PathBuf),
    /// An environment variable holding the key as 64 hex digits.
    Env(String),
    /// A file holding a passphrase, stretched with Argon2id.
    PassphraseFile(PathBuf),
    /// An environment variable holding a passphrase, stretched with Argon2id.
    PassphraseEnv(String),
}

/// `broker.data.backup.store`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStoreKind {
    None,
    Filesystem,
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

impl BackupStoreKind {
    /// The documented spelling: `NONE`, `FILESYSTEM`, `S3`, `GCS` or `AZURE`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStoreKind::None => "NONE",
            BackupStoreKind::Filesystem => "FILESYSTEM",
            BackupStoreKind::S3 => "S3",
            BackupStoreKind::Gcs => "GCS",
            BackupStoreKind::Azure => "AZURE",
        }
    }
}

impl fmt::Display for BackupStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupStoreKind {
    type Err = ValueError;

    /// Parses `NONE`, `FILESYSTEM`, `S3`, `GCS` or `AZURE`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NONE" => Ok(BackupStoreKind::None),
            "FILESYSTEM" => Ok(BackupStoreKind::Filesystem),
            "S3" => Ok(BackupStoreKind::S3),
            "GCS" => Ok(BackupStoreKind::Gcs),
            "AZURE" => Ok(BackupStoreKind::Azure),
            _ => Err(ValueError::NotABackupStore),
        }
    }
}

/// `broker.data.backup.<store>.compression`: how backup files are compressed before upload.
///
/// The one compression enum of the workspace: the backup store takes it as it is
/// (`sluice_backup_store::Compression` is this type), so there is no mapping between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupCompression {
    /// Files are stored as they are.
    #[default]
    None,
    /// Files are compressed with zstd (streaming, per file).
    Zstd,
}

impl BackupCompression {
    /// The documented spelling: `NONE` or `ZSTD`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupCompression::None => "NONE",
            BackupCompression::Zstd => "ZSTD",
        }
    }
}

impl fmt::Display for BackupCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupCompression {
    type Err = ValueError;

    /// Parses `NONE` or `ZSTD`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NONE" => Ok(BackupCompression::None),
            "ZSTD" => Ok(BackupCompression::Zstd),
            _ => Err(ValueError::NotACompression),
        }
    }
}

/// `broker.data.backup.filesystem.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemBackupConfig {
    pub base_path: Option<PathBuf>,
}

/// `broker.data.backup.s3.*`. Its `Debug` output redacts both `access_key` and `secret_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3BackupConfig {
    pub bucket_name: Option<String>,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// Without leading or trailing `/`; `None` when empty.
    pub base_path: Option<String>,
    pub force_path_style_access: bool,
    /// `s3.apiCallTimeout`, `s3.maxConcurrentConnections`, `s3.compression`.
    pub requests: StoreRequestConfig,
    /// `s3.sse`, `s3.sseKmsKeyId`, `s3.sseBucketKey`, `s3.sseCustomerKey`.
    pub sse: S3SseConfig,
}

/// `broker.data.backup.s3.sse*`: the server-side encryption asked of S3 for every object
/// written. Each key is parsed on its own; [`SluiceConfig::validate_broker`] checks that the
/// keys `mode` needs are set and the others are not. `Debug` redacts `customer_key`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3SseConfig {
    pub mode: S3SseMode,
    /// `s3.sseKmsKeyId`: for `KMS` and `DSSE_KMS` only.
    pub kms_key_id: Option<String>,
    /// `s3.sseBucketKey`: `None` keeps the bucket's setting; for `KMS` only.
    pub bucket_key: Option<bool>,
    /// `s3.sseCustomerKey`: base64 of exactly 32 bytes (checked at load); for `CUSTOMER` only.
    pub customer_key: Option<Secret>,
}

/// `broker.data.backup.s3.sse`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3SseMode {
    /// Nothing is asked: the bucket's default encryption applies.
    #[default]
    None,
    /// SSE-S3: S3 encrypts with keys it manages.
    Aes256,
    /// SSE-KMS with `kms_key_id`.
    Kms,
    /// DSSE-KMS (two layers) with `kms_key_id`.
    DsseKms,
    /// SSE-C with `customer_key`, which every request for an object must carry.
    Customer,
}

impl S3SseMode {
    /// The documented spelling: `NONE`, `AES256`, `KMS`, `DSSE_KMS` or `CUSTOMER`.
    pub fn as_str(self) -> &'static str {
        match self {
            S3SseMode::None => "NONE",
            S3SseMode::Aes256 => "AES256",
            S3SseMode::Kms => "KMS",
            S3SseMode::DsseKms => "DSSE_KMS",
            S3SseMode::Customer => "CUSTOMER",
        }
    }
}

impl fmt::Display for S3SseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for S3SseMode {
    type Err = ValueError;

    /// Parses `NONE`, `AES256`, `KMS`, `DSSE_KMS` or `CUSTOMER`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NONE" => Ok(S3SseMode::None),
            "AES256" => Ok(S3SseMode::Aes256),
            "KMS" => Ok(S3SseMode::Kms),
            "DSSE_KMS" => Ok(S3SseMode::DsseKms),
            "CUSTOMER" => Ok(S3SseMode::Customer),
            _ => Err(ValueError::NotAnSseMode),
        }
    }
}

impl fmt::Debug for S3BackupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BackupConfig")
            .field("bucket_name", &self.bucket_name)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| REDACTED_MARK),
            )
            .field("secret_key", &self.secret_key)
            .field("base_path", &self.base_path)
            .field("force_path_style_access", &self.force_path_style_access)
            .field("requests", &self.requests)
            .field("sse", &self.sse)
            .finish()
    }
}

/// `broker.data.backup.gcs.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsBackupConfig {
    pub bucket_name: Option<String>,
    /// Without leading or trailing `/`; `None` when empty.
    pub base_path: Option<String>,
    /// URL of the GCS API (emulators); `None` means Google's.
    pub host: Option<String>,
    /// Path of a service-account JSON key file; `None` means application default credentials.
    pub credentials: Option<PathBuf>,
    /// `gcs.apiCallTimeout`, `gcs.maxConcurrentConnections`, `gcs.compression`.
    pub requests: StoreRequestConfig,
}

/// The request settings every remote store has (`<store>.apiCallTimeout`,
/// `<store>.maxConcurrentConnections`, `<store>.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRequestConfig {
    pub api_call_timeout: Duration,
    pub connections_concurrent_max: usize,
    pub compression: BackupCompression,
}

/// `broker.data.backup.azure.*`. `key` and `sas_token` are [`Secret`]s: `Debug` redacts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureBackupConfig {
    pub account: Option<String>,
    /// The storage account access key; exclusive with `sas_token`.
    pub key: Option<Secret>,
    /// A shared access signature (query string); exclusive with `key`.
    pub sas_token: Option<Secret>,
    pub container: Option<String>,
    /// Blob service URL; `None` means `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Without leading or trailing `/`; `None` when empty.
    pub base_path: Option<String>,
    /// `azure.apiCallTimeout`, `azure.maxConcurrentConnections`, `azure.compression`.
    pub requests: StoreRequestConfig,
}

/// Placeholder printed instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Prints `<redacted>` without quotes in `Debug` output.
struct RedactedMark;
const REDACTED_MARK: RedactedMark = RedactedMark;

impl fmt::Debug for RedactedMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A secret string: `Debug` and `Display` print `<redacted>`; use [`Secret::expose`] to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `gateway.*`
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub cluster: GatewayClusterConfig,
    pub network: NetworkConfig,
    pub management: ManagementConfig,
    /// `gateway.network.token`: the bearer token of the client API, if any.
    pub client_token: Option<Secret>,
    /// `gateway.tls.*`: HTTPS on both ports when set.
    pub tls: Option<TlsConfig>,
    /// `gateway.backup.*`
    pub backup: GatewayBackupConfig,
}

/// `gateway.tls.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// `gateway.backup.*`: scheduled backups and their retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayBackupConfig {
    /// The schedule text as configured (an interval or a cron expression); `None` = disabled.
    /// The gateway parses it at start-up and refuses an invalid one naming the key.
    pub schedule: Option<String>,
    /// Keep at most this many newest backups; `None` = no count rule.
    pub keep_last: Option<usize>,
    /// Keep every backup younger than this; `None` = no age rule.
    pub keep_within: Option<Duration>,
    /// `gateway.backup.checkpointInterval`: a marker checkpoint this often; `None` = off.
    pub checkpoint_interval: Option<Duration>,
    /// `gateway.backup.retention.markersKeepWithin`: markers older than this are deleted.
    pub markers_keep_within: Duration,
}

/// `gateway.cluster.*`
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayClusterConfig {
    /// `host:port` of every broker, in node-id order (defaults to `broker.cluster.brokers`).
    pub brokers: Vec<String>,
    pub request_timeout: Duration,
    /// `gateway.cluster.token` (defaults to `broker.cluster.token`).
    pub token: Option<Secret>,
    /// `gateway.cluster.ca` (defaults to `broker.cluster.ca`): HTTPS to the brokers when set.
    pub ca: Option<PathBuf>,
}

/// `gateway.management.*`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementConfig {
    pub host: String,
    pub port: u16,
    /// `gateway.management.token`: the bearer token of the actuator API, if any.
    pub token: Option<Secret>,
}

/// Why the configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or breaks a rule. `key` is the documented camelCase key;
    /// `value` is `<redacted>` for secret keys.
    #[error(
        "invalid configuration: key={key} value={} reason={reason} (set {} or {key} in the YAML file)",
        display_value(.key, .value),
        env_var_name(.key)
    )]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    /// A `SLUICE_*` environment variable or a YAML key that names no configuration key.
    /// For the environment `key` is the variable's name and `origin` is
    /// `environment variable SLUICE_X`; for the file `key` is the dotted key as written and
    /// `origin` is `file <path>`.
    #[error(
        "unknown configuration key {key} (from {origin}){} Valid keys are listed in config/KEYS.md",
        suggestion_text(.key)
    )]
    UnknownKey { key: String, origin: String },
    /// The YAML file cannot be found, read or parsed.
    #[error("configuration file {}: {reason}", .path.display())]
    File { path: PathBuf, reason: String },
}

impl ConfigError {
    /// Builds [`ConfigError::Invalid`], redacting the value of secret keys.
    pub fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        let value = if is_secret(key) {
            REDACTED.to_string()
        } else {
            value.to_string()
        };
        ConfigError::Invalid {
            key: key.to_string(),
            value,
            reason: reason.into(),
        }
    }

    /// The key concerned by an `Invalid` or `UnknownKey` error.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::UnknownKey { key, .. } => Some(key),
            ConfigError::File { .. } => None,
        }
    }
}

fn display_value(key: &str, value: &str) -> String {
    if is_secret(key) || value == REDACTED {
        REDACTED.to_string()
    } else {
        format!("{value:?}")
    }
}

fn suggestion_text(key: &str) -> String {
    keys::suggestion(key).map_or_else(|| ".".to_string(), |s| format!("; did you mean {s}?"))
}

impl SluiceConfig {
    /// Cross-field rules for a broker process: `nodeId < clusterSize`; `brokers` lists exactly
    /// `clusterSize` addresses; the selected backup store has its required settings
    /// (FILESYSTEM: `basePath`; S3 and GCS: `bucketName`; AZURE: `account` and `container`);
    /// S3 `accessKey` and `secretKey` are both set or both unset; Azure `key` and `sasToken` are
    /// not both set; a non-loopback `broker.network.host` has a `broker.cluster.token` (or
    /// `broker.network.insecure`); the management port differs from the internal one; internal
    /// TLS comes with the CA that peers are checked against, and every PEM file exists; the
    /// `s3.sse*` keys that `s3.sse` needs are set and no other. Secret values never appear in the errors.
    pub fn validate_broker(&self) -> Result<(), ConfigError> {
        self.validate_broker_network()?;
        validate_cluster(&self.broker.cluster)?;
        let backup = &self.broker.data.backup;
        validate_backup_store_settings(backup)?;
        if backup.continuous && backup.store == BackupStoreKind::None {
            return Err(ConfigError::invalid(
                "broker.data.backup.continuous",
                "true",
                "archives the log to the backup store, but broker.data.backup.store is NONE: set a store                  (FILESYSTEM, S3, GCS or AZURE) or turn continuous off",
            ));
        }
        validate_backup_credentials(backup)?;
        validate_s3_sse(&backup.s3.sse)
    }

    /// Who may reach the broker's ports and how: the token off loopback, two distinct ports,
    /// internal TLS with its CA, every PEM file readable.
    fn validate_broker_network(&self) -> Result<(), ConfigError> {
        let cluster = &self.broker.cluster;
        let host = &self.broker.network.host;
        if cluster.token.is_none() && !self.broker.insecure && !values::is_loopback_host(host) {
            return Err(ConfigError::invalid(
                "broker.cluster.token",
                "",
                format!(
                    "is required when broker.network.host={host} is not a loopback address: anyone who reaches the port \
                     could move money and delete backups. Set the same token on every broker and the gateway, or set \
                     broker.network.insecure=true if nothing else can reach the brokers"
                ),
            ));
        }
        let network = &self.broker.network;
        if self.broker.management_port == network.port {
            return Err(ConfigError::invalid(
                "broker.network.managementPort",
                &self.broker.management_port.to_string(),
                format!(
                    "must differ from broker.network.port={} (both listen on {})",
                    network.port, network.host
                ),
            ));
        }
        if self.broker.tls.is_some() && cluster.ca.is_none() {
            return Err(ConfigError::invalid(
                "broker.cluster.ca",
                "",
                "is required when broker.network.tls.certificate is set: brokers then call each other over HTTPS \
                 and check each other's certificates against this CA",
            ));
        }
        let mut pem_files = vec![];
        if let Some(tls) = &self.broker.tls {
            pem_files.push(("broker.network.tls.certificate", &tls.certificate));
            pem_files.push(("broker.network.tls.key", &tls.key));
        }
        if let Some(ca) = &cluster.ca {
            pem_files.push(("broker.cluster.ca", ca));
        }
        readable_files(&pem_files)?;
        Ok(())
    }

    /// Cross-field rules for a gateway process: at least one broker address; the client API
    /// and the management endpoint do not share a port on the same (or a wildcard) host.
    pub fn validate_gateway(&self) -> Result<(), ConfigError> {
        let gateway = &self.gateway;
        if gateway.cluster.brokers.is_empty() {
            return Err(ConfigError::invalid(
                "gateway.cluster.brokers",
                "",
                "at least one broker address is required (set gateway.cluster.brokers or broker.cluster.brokers)",
            ));
        }
        let (net, mgmt) = (&gateway.network, &gateway.management);
        let same_host = net.host.eq_ignore_ascii_case(&mgmt.host)
            || values::is_wildcard_host(&net.host)
            || values::is_wildcard_host(&mgmt.host);
        if same_host && net.port == mgmt.port {
            return Err(ConfigError::invalid(
                "gateway.management.port",
                &mgmt.port.to_string(),
                format!(
                    "must differ from gateway.network.port={} (both listen on {})",
                    net.port, mgmt.host
                ),
            ));
        }
        let mut pem_files = vec![];
        if let Some(tls) = &gateway.tls {
            pem_files.push(("gateway.tls.certificate", &tls.certificate));
            pem_files.push(("gateway.tls.key", &tls.key));
        }
        if let Some(ca) = &gateway.cluster.ca {
            pem_files.push(("gateway.cluster.ca", ca));
        }
        readable_files(&pem_files)
    }
}

/// `nodeId < clusterSize`, and `brokers` lists exactly `clusterSize` addresses.
fn validate_cluster(cluster: &ClusterConfig) -> Result<(), ConfigError> {
    if cluster.node_id >= cluster.cluster_size {
        return Err(ConfigError::invalid(
            "broker.cluster.nodeId",
            &cluster.node_id.to_string(),
            format!(
                "nodeId={} must be less than clusterSize={} (node ids are 0-based)",
                cluster.node_id, cluster.cluster_size
            ),
        ));
    }
    if cluster.brokers.len() != cluster.cluster_size as usize {
        return Err(ConfigError::invalid(
            "broker.cluster.brokers",
            &cluster.brokers.join(","),
            format!(
                "brokers must list clusterSize={} addresses in node-id order, got {}",
                cluster.cluster_size,
                cluster.brokers.len()
            ),
        ));
    }
    Ok(())
}

/// The selected backup store has its required settings.
fn validate_backup_store_settings(backup: &BackupConfig) -> Result<(), ConfigError> {
    match backup.store {
        BackupStoreKind::Filesystem if backup.filesystem.base_path.is_none() => {
            return Err(ConfigError::invalid(
                "broker.data.backup.filesystem.basePath",
                "",
                "required when broker.data.backup.store=FILESYSTEM",
            ));
        }
        BackupStoreKind::S3 if backup.s3.bucket_name.is_none() => {
            return Err(ConfigError::invalid(
                "broker.data.backup.s3.bucketName",
                "",
                "required when broker.data.backup.store=S3",
            ));
        }
        BackupStoreKind::Gcs if backup.gcs.bucket_name.is_none() => {
            return Err(ConfigError::invalid(
                "broker.data.backup.gcs.bucketName",
                "",
                "required when broker.data.backup.store=GCS",
            ));
        }
        BackupStoreKind::Azure if backup.azure.account.is_none() => {
            return Err(ConfigError::invalid(
                "broker.data.backup.azure.account",
                "",
                "required when broker.data.backup.store=AZURE",
            ));
        }
        BackupStoreKind::Azure if backup.azure.container.is_none() => {
            return Err(ConfigError::invalid(
                "broker.data.backup.azure.container",
                "",
                "required when broker.data.backup.store=AZURE",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// S3 `accessKey` and `secretKey` both set or both unset; Azure `key` and `sasToken` not both.
fn validate_backup_credentials(backup: &BackupConfig) -> Result<(), ConfigError> {
    match (&backup.s3.access_key, &backup.s3.secret_key) {
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "broker.data.backup.s3.secretKey",
                "",
                "accessKey and secretKey must be set together (accessKey is set, secretKey is not)",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "broker.data.backup.s3.accessKey",
                "",
                "accessKey and secretKey must be set together (secretKey is set, accessKey is not)",
            ))
        }
        _ => {}
    }
    if backup.azure.key.is_some() && backup.azure.sas_token.is_some() {
        return Err(ConfigError::invalid(
            "broker.data.backup.azure.sasToken",
            REDACTED,
            "key and sasToken are mutually exclusive: set one of them, or neither to use the Azure credential chain",
        ));
    }
    Ok(())
}

/// The `s3.sse*` keys that `s3.sse` needs are set, and the others are not: a key that would be
/// ignored is refused, as it says the operator meant another mode.
fn validate_s3_sse(sse: &S3SseConfig) -> Result<(), ConfigError> {
    let mode = sse.mode;
    let kms = matches!(mode, S3SseMode::Kms | S3SseMode::DsseKms);
    match (&sse.kms_key_id, kms) {
        (None, true) => {
            return Err(ConfigError::invalid(
                "broker.data.backup.s3.sseKmsKeyId",
                "",
                format!("is required when broker.data.backup.s3.sse={mode}: set the KMS key id or ARN"),
            ))
        }
        (Some(id), false) => {
            return Err(ConfigError::invalid(
                "broker.data.backup.s3.sseKmsKeyId",
                id,
                format!(
                    "is only used with broker.data.backup.s3.sse=KMS or DSSE_KMS, not sse={mode}; remove it or set sse"
                ),
            ))
        }
        _ => {}
    }
    if let (Some(enabled), false) = (sse.bucket_key, mode == S3SseMode::Kms) {
        return Err(ConfigError::invalid(
            "broker.data.backup.s3.sseBucketKey",
            &enabled.to_string(),
            format!(
                "is only used with broker.data.backup.s3.sse=KMS, not sse={mode} (S3 has Bucket Keys for SSE-KMS only); \
                 remove it or set sse=KMS"
            ),
        ));
    }
    match (&sse.customer_key, mode == S3SseMode::Customer) {
        (None, true) => Err(ConfigError::invalid(
            "broker.data.backup.s3.sseCustomerKey",
            "",
            "is required when broker.data.backup.s3.sse=CUSTOMER: set the base64 of a 32-byte key \
             (e.g. from `openssl rand -base64 32`), the same on every broker, the restore tool and the CLI",
        )),
        (Some(_), false) => Err(ConfigError::invalid(
            "broker.data.backup.s3.sseCustomerKey",
            REDACTED,
            format!(
                "is only used with broker.data.backup.s3.sse=CUSTOMER, not sse={mode}; remove it or set sse=CUSTOMER"
            ),
        )),
        _ => Ok(()),
    }
}

/// Each path is a file, or the error names its key.
fn readable_files(files: &[(&str, &PathBuf)]) -> Result<(), ConfigError> {
    for (key, path) in files {
        if !path.is_file() {
            return Err(ConfigError::invalid(
                key,
                &path.display().to_string(),
                "is not a readable file (a PEM file is expected)",
            ));
        }
    }
    Ok(())
}
