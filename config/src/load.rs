//! Layering: defaults, then the YAML file, then `SLUICE_*` environment variables; then
//! parsing of every key into [`SluiceConfig`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use config::ValueKind;

use crate::keys::{
    find_env, find_key, is_key_prefix, CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX, KEYS,
};
use crate::values::{
    connect_address, duration_at_least_100ms, duration_at_least_1s, non_empty, optional,
    parse_address_list, parse_bool, parse_key_id, parse_key_list, parse_port, parse_rate,
    parse_uint, size_in, sse_customer_key, uint_in, ValueError,
};
use crate::{
    AzureBackupConfig, BackupCompression, BackupConfig, BackupStoreKind, BrokerConfig,
    ClusterConfig, ConfigError, DataConfig, EncryptionConfig, FilesystemBackupConfig,
    GatewayBackupConfig, GatewayClusterConfig, GatewayConfig, GcsBackupConfig, ManagementConfig,
    NetworkConfig, S3BackupConfig, S3SseConfig, S3SseMode, Secret, SluiceConfig,
    StoreRequestConfig, TlsConfig,
};

/// Loads the configuration of this process: defaults, then the YAML file named by
/// `SLUICE_CONFIG` (which must exist) or else `config/application.yaml` in the current
/// directory when it exists, then the `SLUICE_*` environment variables.
///
/// Only parses and checks each key on its own; call [`SluiceConfig::validate_broker`] or
/// [`SluiceConfig::validate_gateway`] for the cross-field rules of the process's role.
pub fn load() -> Result<SluiceConfig, ConfigError> {
    let file = resolve_file(
        std::env::var_os(CONFIG_FILE_ENV),
        Path::new(DEFAULT_CONFIG_FILE),
    )?;
    let env = process_env()?;
    load_from(file.as_deref(), env)
}

/// Like [`load`], with the file given explicitly (`None` = no file; a path that does not
/// exist is an error) and the environment given explicitly (only `SLUICE_*` entries are
/// considered; `SLUICE_CONFIG` is ignored).
pub fn load_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<SluiceConfig, ConfigError> {
    let mut raw = Raw::defaults();
    if let Some(path) = file {
        for (key, value) in read_file(path)? {
            raw.set(key, value);
        }
    }
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_FILE_ENV)
        .collect();
    env.sort();
    for (name, value) in env {
        let Some(doc) = find_env(&name) else {
            return Err(ConfigError::UnknownKey {
                origin: format!("environment variable {name}"),
                key: name,
            });
        };
        raw.set(doc.key, value);
    }
    let mut config = raw.into_config()?;
    fill_derived(&mut config);
    Ok(config)
}

/// Which YAML file to read, given the value of `SLUICE_CONFIG` and the default path.
pub(crate) fn resolve_file(
    var: Option<OsString>,
    default: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match var {
        Some(value) => {
            let path = PathBuf::from(value);
            if path.as_os_str().is_empty() {
                return Err(ConfigError::File {
                    path,
                    reason: format!(
                        "environment variable {CONFIG_FILE_ENV} is set to an empty string; unset it or name a YAML file"
                    ),
                });
            }
            if !path.exists() {
                return Err(ConfigError::File {
                    path,
                    reason: format!(
                        "file not found (named by environment variable {CONFIG_FILE_ENV})"
                    ),
                });
            }
            Ok(Some(path))
        }
        None => Ok(default.exists().then(|| default.to_path_buf())),
    }
}

/// The process's `SLUICE_*` variables (except `SLUICE_CONFIG`), without panicking on
/// non-UTF-8 names or values.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with(ENV_PREFIX) || name == CONFIG_FILE_ENV {
            continue;
        }
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) => {
                return Err(match find_env(&name) {
                    Some(doc) => ConfigError::invalid(
                        doc.key,
                        "<not UTF-8>",
                        format!("the value of environment variable {name} is not valid UTF-8"),
                    ),
                    None => ConfigError::UnknownKey {
                        origin: format!("environment variable {name}"),
                        key: name,
                    },
                })
            }
        }
    }
    Ok(out)
}

/// One flattened YAML entry.
enum Leaf {
    /// `null`, an empty value or an empty mapping: leaves the default in place.
    Nil,
    Scalar(String),
    /// A list containing mappings, lists or nulls.
    NotScalar,
}

/// Reads the YAML file into (canonical key, string value) pairs.
pub(crate) fn read_file(path: &Path) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        return Err(file_error("file not found".to_string()));
    }
    let table = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| config::Source::collect(&c))
        .map_err(|e| file_error(e.to_string()))?;
    let mut leaves = Vec::new();
    flatten("", table, &mut leaves);
    leaves.sort_by(|a, b| a.0.cmp(&b.0));

    let origin = format!("file {}", path.display());
    let mut seen: HashMap<&'static str, String> = HashMap::new();
    let mut out = Vec::new();
    for (written, leaf) in leaves {
        let Some(doc) = find_key(&written) else {
            if matches!(leaf, Leaf::Nil) && is_key_prefix(&written) {
                continue; // e.g. an `s3:` section whose keys are all commented out
            }
            return Err(ConfigError::UnknownKey {
                key: written,
                origin,
            });
        };
        match leaf {
            Leaf::Nil => {}
            Leaf::NotScalar => {
                return Err(ConfigError::invalid(
                    doc.key,
                    "<list of mappings or lists>",
                    "expected a value or a list of plain values",
                ))
            }
            Leaf::Scalar(value) => {
                if let Some(previous) = seen.insert(doc.key, written.clone()) {
                    return Err(file_error(format!(
                        "key {} is given twice, as {previous} and as {written} (keys are case-insensitive)",
                        doc.key
                    )));
                }
                out.push((doc.key, value));
            }
        }
    }
    Ok(out)
}

/// Flattens nested mappings into dotted keys, spelled as written.
fn flatten(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<(String, Leaf)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        let leaf = match v.kind {
            ValueKind::Table(t) if t.is_empty() => Leaf::Nil,
            ValueKind::Table(t) => {
                flatten(&path, t, out);
                continue;
            }
            ValueKind::Array(items) => items
                .into_iter()
                .map(|item| scalar(item.kind))
                .collect::<Option<Vec<String>>>()
                .map_or(Leaf::NotScalar, |parts| Leaf::Scalar(parts.join(","))),
            kind => scalar(kind).map_or(Leaf::Nil, Leaf::Scalar),
        };
        out.push((path, leaf));
    }
}

fn scalar(kind: ValueKind) -> Option<String> {
    match kind {
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::I64(n) => Some(n.to_string()),
        ValueKind::I128(n) => Some(n.to_string()),
        ValueKind::U64(n) => Some(n.to_string()),
        ValueKind::U128(n) => Some(n.to_string()),
        ValueKind::Float(f) => Some(f.to_string()),
        ValueKind::String(s) => Some(s),
        ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => None,
    }
}

/// String value of every key after layering.
struct Raw(HashMap<&'static str, String>);

impl Raw {
    fn defaults() -> Self {
        Raw(KEYS
            .iter()
            .map(|k| (k.key, k.default.to_string()))
            .collect())
    }

    fn set(&mut self, key: &'static str, value: String) {
        self.0.insert(key, value);
    }

    fn get(&self, key: &'static str) -> &str {
        debug_assert!(self.0.contains_key(key), "unknown key {key}");
        self.0.get(key).map_or("", String::as_str)
    }

    fn parse<T>(
        &self,
        key: &'static str,
        parser: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<T, ConfigError> {
        let value = self.get(key);
        parser(value).map_err(|reason| ConfigError::invalid(key, value, reason.to_string()))
    }

    fn u32_in(&self, key: &'static str, min: u32, max: u32) -> Result<u32, ConfigError> {
        self.parse(key, |s| {
            let n = uint_in(s, min.into(), max.into())?;
            u32::try_from(n).map_err(|_| ValueError::OutOfRange {
                min: min.into(),
                max: max.into(),
            })
        })
    }

    fn port(&self, key: &'static str) -> Result<u16, ConfigError> {
        self.parse(key, parse_port)
    }

    fn host(&self, key: &'static str) -> Result<String, ConfigError> {
        self.parse(key, non_empty)
    }

    fn optional(&self, key: &'static str) -> Option<String> {
        optional(self.get(key))
    }

    /// Secrets are used verbatim (not trimmed); a blank value means unset.
    fn optional_verbatim(&self, key: &'static str) -> Option<String> {
        let value = self.get(key);
        (!value.trim().is_empty()).then(|| value.to_string())
    }

    /// An optional `http://` or `https://` URL; blank means unset.
    fn optional_url(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.parse(key, |s| {
            let Some(url) = optional(s) else {
                return Ok(None);
            };
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            match rest {
                Some(rest) if !rest.is_empty() => Ok(Some(url)),
                _ => Err(ValueError::NotAUrl),
            }
        })
    }

    /// An optional prefix inside a bucket: leading and trailing `/` removed; blank means unset.
    fn optional_base_path(&self, key: &'static str) -> Option<String> {
        self.optional(key)
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty())
    }

    /// A certificate and key pair: both set or both unset.
    fn tls(
        &self,
        certificate_key: &'static str,
        key_key: &'static str,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        match (self.optional(certificate_key), self.optional(key_key)) {
            (None, None) => Ok(None),
            (Some(certificate), Some(key)) => Ok(Some(TlsConfig {
                certificate: PathBuf::from(certificate),
                key: PathBuf::from(key),
            })),
            (Some(_), None) => Err(ConfigError::invalid(
                key_key,
                "",
                format!("is required when {certificate_key} is set"),
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                certificate_key,
                "",
                format!("is required when {key_key} is set"),
            )),
        }
    }

    fn cluster(&self) -> Result<ClusterConfig, ConfigError> {
        Ok(ClusterConfig {
            node_id: self.u32_in("broker.cluster.nodeId", 0, u32::MAX)?,
            cluster_size: self.u32_in("broker.cluster.clusterSize", 1, 64)?,
            partitions_count: self.u32_in("broker.cluster.partitionsCount", 1, 1024)?,
            replication_factor: self.parse("broker.cluster.replicationFactor", |s| {
                match parse_uint(s)? {
                    1 => Ok(1),
                    _ => Err(ValueError::ReplicationFactor),
                }
            })?,
            brokers: self.parse("broker.cluster.brokers", parse_address_list)?,
            token: self
                .optional_verbatim("broker.cluster.token")
                .map(Secret::from),
            ca: self.optional("broker.cluster.ca").map(PathBuf::from),
            cluster_name: self.parse("broker.cluster.clusterName", parse_key_id)?,
        })
    }

    fn network(&self) -> Result<NetworkConfig, ConfigError> {
        Ok(NetworkConfig {
            host: self.host("broker.network.host")?,
            port: self.port("broker.network.port")?,
        })
    }

    fn s3(&self) -> Result<S3BackupConfig, ConfigError> {
        Ok(S3BackupConfig {
            bucket_name: self.optional("broker.data.backup.s3.bucketName"),
            endpoint: self.optional_url("broker.data.backup.s3.endpoint")?,
            region: self.parse("broker.data.backup.s3.region", non_empty)?,
            access_key: self.optional_verbatim("broker.data.backup.s3.accessKey"),
            secret_key: self
                .optional_verbatim("broker.data.backup.s3.secretKey")
                .map(Secret::from),
            base_path: self.optional_base_path("broker.data.backup.s3.basePath"),
            force_path_style_access: self
                .parse("broker.data.backup.s3.forcePathStyleAccess", parse_bool)?,
            requests: self.store_requests(
                "broker.data.backup.s3.apiCallTimeout",
                "broker.data.backup.s3.maxConcurrentConnections",
                "broker.data.backup.s3.compression",
            )?,
            sse: self.s3_sse()?,
        })
    }

    /// Each `s3.sse*` key on its own; which of them `s3.sse` needs is `validate_broker`'s.
    fn s3_sse(&self) -> Result<S3SseConfig, ConfigError> {
        Ok(S3SseConfig {
            mode: self.parse("broker.data.backup.s3.sse", str::parse::<S3SseMode>)?,
            kms_key_id: self.optional("broker.data.backup.s3.sseKmsKeyId"),
            bucket_key: self.parse("broker.data.backup.s3.sseBucketKey", |s| {
                optional(s).map(|text| parse_bool(&text)).transpose()
            })?,
            // Used verbatim, as every secret: a blank value means unset.
            customer_key: self
                .parse("broker.data.backup.s3.sseCustomerKey", |s| {
                    (!s.trim().is_empty())
                        .then(|| sse_customer_key(s))
                        .transpose()
                })?
                .map(Secret::from),
        })
    }

    /// The request settings of one remote store, the same rules for each.
    fn store_requests(
        &self,
        timeout_key: &'static str,
        connections_key: &'static str,
        compression_key: &'static str,
    ) -> Result<StoreRequestConfig, ConfigError> {
        Ok(StoreRequestConfig {
            api_call_timeout: self.parse(timeout_key, duration_at_least_100ms)?,
            connections_concurrent_max: self.parse(connections_key, |s| {
                let n = uint_in(s, 1, 1024)?;
                usize::try_from(n).map_err(|_| ValueError::OutOfRange { min: 1, max: 1024 })
            })?,
            compression: self.parse(compression_key, str::parse::<BackupCompression>)?,
        })
    }

    fn gcs(&self) -> Result<GcsBackupConfig, ConfigError> {
        Ok(GcsBackupConfig {
            bucket_name: self.optional("broker.data.backup.gcs.bucketName"),
            base_path: self.optional_base_path("broker.data.backup.gcs.basePath"),
            host: self.optional_url("broker.data.backup.gcs.host")?,
            credentials: self
                .optional("broker.data.backup.gcs.credentials")
                .map(PathBuf::from),
            requests: self.store_requests(
                "broker.data.backup.gcs.apiCallTimeout",
                "broker.data.backup.gcs.maxConcurrentConnections",
                "broker.data.backup.gcs.compression",
            )?,
        })
    }

    fn azure(&self) -> Result<AzureBackupConfig, ConfigError> {
        Ok(AzureBackupConfig {
            account: self.optional("broker.data.backup.azure.account"),
            key: self
                .optional_verbatim("broker.data.backup.azure.key")
                .map(Secret::from),
            sas_token: self
                .optional_verbatim("broker.data.backup.azure.sasToken")
                .map(Secret::from),
            container: self.optional("broker.data.backup.azure.container"),
            endpoint: self.optional_url("broker.data.backup.azure.endpoint")?,
            base_path: self.optional_base_path("broker.data.backup.azure.basePath"),
            requests: self.store_requests(
                "broker.data.backup.azure.apiCallTimeout",
                "broker.data.backup.azure.maxConcurrentConnections",
                "broker.data.backup.azure.compression",
            )?,
        })
    }

    fn backup(&self) -> Result<BackupConfig, ConfigError> {
        Ok(BackupConfig {
            store: self.parse("broker.data.backup.store", str::parse::<BackupStoreKind>)?,
            filesystem: FilesystemBackupConfig {
                base_path: self
                    .optional("broker.data.backup.filesystem.basePath")
                    .map(PathBuf::from),
            },
            s3: self.s3()?,
            gcs: self.gcs()?,
            azure: self.azure()?,
            uploads_concurrent_max: self.parse("broker.data.backup.maxConcurrentUploads", |s| {
                let n = uint_in(s, 1, 64)?;
                usize::try_from(n).map_err(|_| ValueError::OutOfRange { min: 1, max: 64 })
            })?,
            upload_rate_limit_bytes_per_second: self
                .parse("broker.data.backup.uploadRateLimit", parse_rate)?,
            upload_memory_limit_bytes: self.parse("broker.data.backup.uploadMemoryLimit", |s| {
                size_in(s, 8 << 20, 4 << 30, "8MB and 4GB")
            })?,
            encryption: self.encryption()?,
            continuous: self.parse("broker.data.backup.continuous", parse_bool)?,
            continuous_lag_bytes_max: self.parse("broker.data.backup.continuousLagLimit", |s| {
                size_in(s, 1 << 20, 1 << 40, "1MB and 1TB")
            })?,
        })
    }

    fn encryption(&self) -> Result<EncryptionConfig, ConfigError> {
        let keys = self.parse("broker.data.backup.encryption.keys", parse_key_list)?;
        let primary_key = match self.optional("broker.data.backup.encryption.primaryKey") {
            None => None,
            Some(id) => Some(parse_key_id(&id).map_err(|e| {
                ConfigError::invalid(
                    "broker.data.backup.encryption.primaryKey",
                    &id,
                    e.to_string(),
                )
            })?),
        };
        if let Some(primary) = &primary_key {
            if !keys.iter().any(|spec| &spec.id == primary) {
                return Err(ConfigError::invalid(
                    "broker.data.backup.encryption.primaryKey",
                    primary,
                    format!(
                        "names no key of broker.data.backup.encryption.keys (SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_KEYS); \
                         add it there, e.g. {primary}=file:/etc/sluice/{primary}.key"
                    ),
                ));
            }
        }
        Ok(EncryptionConfig { primary_key, keys })
    }

    fn data(&self) -> Result<DataConfig, ConfigError> {
        Ok(DataConfig {
            directory: self.parse("broker.data.directory", |s| non_empty(s).map(PathBuf::from))?,
            log_segment_size_bytes: self.parse("broker.data.logSegmentSize", |s| {
                size_in(s, 4 << 10, 2 << 30, "4KB and 2GB")
            })?,
            snapshot_period: self.parse("broker.data.snapshotPeriod", duration_at_least_100ms)?,
            backup: self.backup()?,
        })
    }

    fn gateway(&self) -> Result<GatewayConfig, ConfigError> {
        Ok(GatewayConfig {
            cluster: GatewayClusterConfig {
                brokers: self.parse("gateway.cluster.brokers", parse_address_list)?,
                request_timeout: self
                    .parse("gateway.cluster.requestTimeout", duration_at_least_100ms)?,
                token: self
                    .optional_verbatim("gateway.cluster.token")
                    .map(Secret::from),
                ca: self.optional("gateway.cluster.ca").map(PathBuf::from),
            },
            network: NetworkConfig {
                host: self.host("gateway.network.host")?,
                port: self.port("gateway.network.port")?,
            },
            management: ManagementConfig {
                host: self.host("gateway.management.host")?,
                port: self.port("gateway.management.port")?,
                token: self
                    .optional_verbatim("gateway.management.token")
                    .map(Secret::from),
            },
            client_token: self
                .optional_verbatim("gateway.network.token")
                .map(Secret::from),
            tls: self.tls("gateway.tls.certificate", "gateway.tls.key")?,
            backup: GatewayBackupConfig {
                schedule: self.optional("gateway.backup.schedule"),
                keep_last: self.parse("gateway.backup.retention.keepLast", |s| {
                    let n = uint_in(s, 0, 1_000_000)?;
                    Ok((n > 0).then_some(n as usize))
                })?,
                keep_within: self.parse(
                    "gateway.backup.retention.keepWithin",
                    |s| match optional(s) {
                        None => Ok(None),
                        Some(text) => duration_at_least_100ms(&text).map(Some),
                    },
                )?,
                checkpoint_interval: self.parse("gateway.backup.checkpointInterval", |s| {
                    match optional(s) {
                        None => Ok(None),
                        Some(text) => duration_at_least_1s(&text).map(Some),
                    }
                })?,
                markers_keep_within: self.parse(
                    "gateway.backup.retention.markersKeepWithin",
                    duration_at_least_1s,
                )?,
            },
        })
    }

    /// Every section, parsed key by key.
    fn into_config(self) -> Result<SluiceConfig, ConfigError> {
        Ok(SluiceConfig {
            broker: BrokerConfig {
                cluster: self.cluster()?,
                network: self.network()?,
                management_port: self.port("broker.network.managementPort")?,
                tls: self.tls("broker.network.tls.certificate", "broker.network.tls.key")?,
                insecure: self.parse("broker.network.insecure", parse_bool)?,
                data: self.data()?,
            },
            gateway: self.gateway()?,
        })
    }
}

/// Derived defaults: a single broker's address list is its own address; the gateway uses the
/// brokers' list unless given its own.
fn fill_derived(config: &mut SluiceConfig) {
    let broker = &mut config.broker;
    if broker.cluster.brokers.is_empty() && broker.cluster.cluster_size == 1 {
        broker.cluster.brokers = vec![connect_address(&broker.network.host, broker.network.port)];
    }
    if config.gateway.cluster.token.is_none() {
        config.gateway.cluster.token = broker.cluster.token.clone();
    }
    if config.gateway.cluster.ca.is_none() {
        config.gateway.cluster.ca = broker.cluster.ca.clone();
    }
    if config.gateway.cluster.brokers.is_empty() {
        config.gateway.cluster.brokers = broker.cluster.brokers.clone();
    }
}
