//! The table of every configuration key: its documented camelCase spelling,
//! its environment variable, its default and a one-line description.

/// Documentation of one configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted key in its documented camelCase spelling, e.g. `broker.cluster.nodeId`.
    pub key: &'static str,
    /// Environment variable overriding the key, e.g. `SLUICE_BROKER_CLUSTER_NODEID`.
    pub env: &'static str,
    /// Default value as a string; an empty string means "unset" (or an empty list).
    pub default: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Whether the value is a secret that must never be printed.
    pub secret: bool,
}

const fn key(
    key: &'static str,
    env: &'static str,
    default: &'static str,
    description: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        env,
        default,
        description,
        secret: false,
    }
}

const fn secret(
    key: &'static str,
    env: &'static str,
    default: &'static str,
    description: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        env,
        default,
        description,
        secret: true,
    }
}

/// Every configuration key, in documentation order.
pub const KEYS: &[KeyDoc] = &[
    key(
        "broker.cluster.nodeId",
        "SLUICE_BROKER_CLUSTER_NODEID",
        "0",
        "Id of this broker, 0-based; must be less than `clusterSize`.",
    ),
    key(
        "broker.cluster.clusterSize",
        "SLUICE_BROKER_CLUSTER_CLUSTERSIZE",
        "1",
        "Number of brokers in the cluster (1..=64).",
    ),
    key(
        "broker.cluster.partitionsCount",
        "SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT",
        "3",
        "Number of partitions (1..=1024).",
    ),
    key(
        "broker.cluster.replicationFactor",
        "SLUICE_BROKER_CLUSTER_REPLICATIONFACTOR",
        "1",
        "Replicas per partition; only 1 is supported for now.",
    ),
    key(
        "broker.cluster.clusterName",
        "SLUICE_BROKER_CLUSTER_CLUSTERNAME",
        "sluice",
        "Name of the cluster (1 to 64 of `A-Za-z0-9._-`), the same on every broker; recorded in every encrypted \
         backup, and restore and verify refuse an encrypted backup of another name. Give each cluster that shares \
         a backup key its own name.",
    ),
    key(
        "broker.cluster.brokers",
        "SLUICE_BROKER_CLUSTER_BROKERS",
        "",
        "Comma-separated `host:port` addresses of all brokers in node-id order (entry i is node i); \
         must list exactly `clusterSize` entries. When empty and `clusterSize` is 1, defaults to this \
         broker's `broker.network.host:port` (0.0.0.0 becomes 127.0.0.1).",
    ),
    secret(
        "broker.cluster.token",
        "SLUICE_BROKER_CLUSTER_TOKEN",
        "",
        "Shared cluster token: every request to a broker's internal API needs `Authorization: Bearer <token>` (401 otherwise), \
         and brokers send it to each other; set the same value on every broker and the gateway. Required when \
         `broker.network.host` is not a loopback address, unless `broker.network.insecure` is true. Never printed.",
    ),
    key(
        "broker.cluster.ca",
        "SLUICE_BROKER_CLUSTER_CA",
        "",
        "PEM file with the CA certificate(s) that the brokers' internal certificates are checked against; when set, brokers \
         call each other over HTTPS only. Required when `broker.network.tls.certificate` is set.",
    ),
    key(
        "broker.network.host",
        "SLUICE_BROKER_NETWORK_HOST",
        "127.0.0.1",
        "Address the broker listens on.",
    ),
    key(
        "broker.network.port",
        "SLUICE_BROKER_NETWORK_PORT",
        "26501",
        "Port the broker listens on (1..=65535).",
    ),
    key(
        "broker.network.managementPort",
        "SLUICE_BROKER_NETWORK_MANAGEMENTPORT",
        "9700",
        "Port of the broker's management endpoint, on `broker.network.host`: `GET /metrics` (Prometheus text format, \
         no token needed; HTTPS when `broker.network.tls.*` is set) (1..=65535); must differ from `broker.network.port`.",
    ),
    key(
        "broker.network.insecure",
        "SLUICE_BROKER_NETWORK_INSECURE",
        "false",
        "Allows listening on a non-loopback `broker.network.host` without `broker.cluster.token`: anyone who reaches the port \
         can then move money and delete backups. Only for networks where nothing else can reach the brokers.",
    ),
    key(
        "broker.network.tls.certificate",
        "SLUICE_BROKER_NETWORK_TLS_CERTIFICATE",
        "",
        "PEM file with the certificate chain of this broker's internal API; when set (with `key`) the port serves HTTPS only.",
    ),
    key(
        "broker.network.tls.key",
        "SLUICE_BROKER_NETWORK_TLS_KEY",
        "",
        "PEM file with the private key of `broker.network.tls.certificate`; set both or neither.",
    ),
    key(
        "broker.data.directory",
        "SLUICE_BROKER_DATA_DIRECTORY",
        "data",
        "Directory holding the partition logs and snapshots.",
    ),
    key(
        "broker.data.logSegmentSize",
        "SLUICE_BROKER_DATA_LOGSEGMENTSIZE",
        "64MB",
        "Maximum size of one log segment file, 4KB..=2GB (KB/MB/GB are powers of 1024).",
    ),
    key(
        "broker.data.snapshotPeriod",
        "SLUICE_BROKER_DATA_SNAPSHOTPERIOD",
        "5m",
        "How often each partition takes a snapshot, e.g. `30s`, `5m`, `1h 30m` or plain milliseconds; at least 100ms.",
    ),
    key(
        "broker.data.backup.store",
        "SLUICE_BROKER_DATA_BACKUP_STORE",
        "NONE",
        "Where backups are written: `NONE` (backups disabled), `FILESYSTEM`, `S3`, `GCS` or `AZURE` (case-insensitive).",
    ),
    key(
        "broker.data.backup.filesystem.basePath",
        "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH",
        "",
        "Directory receiving the backups; required when `store` is `FILESYSTEM`.",
    ),
    key(
        "broker.data.backup.s3.bucketName",
        "SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME",
        "",
        "Bucket receiving the backups; required when `store` is `S3`.",
    ),
    key(
        "broker.data.backup.s3.endpoint",
        "SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT",
        "",
        "Endpoint URL starting with `http://` or `https://`, for S3-compatible stores (e.g. MinIO); unset means AWS.",
    ),
    key(
        "broker.data.backup.s3.region",
        "SLUICE_BROKER_DATA_BACKUP_S3_REGION",
        "us-east-1",
        "Region of the bucket.",
    ),
    secret(
        "broker.data.backup.s3.accessKey",
        "SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY",
        "",
        "Access key id; set together with `secretKey`, or leave both unset. Never printed.",
    ),
    secret(
        "broker.data.backup.s3.secretKey",
        "SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY",
        "",
        "Secret access key; set together with `accessKey`, or leave both unset. Never printed.",
    ),
    key(
        "broker.data.backup.s3.basePath",
        "SLUICE_BROKER_DATA_BACKUP_S3_BASEPATH",
        "",
        "Prefix inside the bucket under which backups are written; leading and trailing `/` are removed.",
    ),
    key(
        "broker.data.backup.s3.forcePathStyleAccess",
        "SLUICE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS",
        "false",
        "Use path-style URLs (`endpoint/bucket/key`) instead of virtual-hosted style; usually needed for MinIO. `true` or `false`.",
    ),
    key(
        "broker.data.backup.s3.apiCallTimeout",
        "SLUICE_BROKER_DATA_BACKUP_S3_APICALLTIMEOUT",
        "30s",
        "Time limit of one request to the store (each retry has its own); at least 100ms. Failed requests are retried with \
         randomized exponential backoff, at most 8 times and not after 2 minutes.",
    ),
    key(
        "broker.data.backup.s3.maxConcurrentConnections",
        "SLUICE_BROKER_DATA_BACKUP_S3_MAXCONCURRENTCONNECTIONS",
        "32",
        "Maximum number of requests to the store in flight at once for this broker, shared by all partitions (1..=1024).",
    ),
    key(
        "broker.data.backup.s3.compression",
        "SLUICE_BROKER_DATA_BACKUP_S3_COMPRESSION",
        "ZSTD",
        "Compression of uploaded backup files: `ZSTD` or `NONE` (case-insensitive); recorded per object (or file) of the backup, \
         so backups of either kind can be restored whatever this is set to. ZSTD (level 1) sends fewer bytes for little CPU: \
         the first backup to S3 in BENCHMARKS.md ran 1.86x `aws s3 cp` with it, 1.30x without.",
    ),
    key(
        "broker.data.backup.s3.sse",
        "SLUICE_BROKER_DATA_BACKUP_S3_SSE",
        "NONE",
        "Server-side encryption asked of S3 for every object Sluice writes (case-insensitive): `NONE` (none asked; the \
         bucket's default encryption applies), `AES256` (SSE-S3, keys managed by S3), `KMS` (SSE-KMS with `sseKmsKeyId`), \
         `DSSE_KMS` (dual-layer SSE-KMS with `sseKmsKeyId`) or `CUSTOMER` (SSE-C with `sseCustomerKey`: every read needs \
         the same key). Changing it does not re-encrypt existing backups; see README, Server-side encryption.",
    ),
    key(
        "broker.data.backup.s3.sseKmsKeyId",
        "SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID",
        "",
        "The KMS key (key id, key ARN or alias ARN) of `sse` `KMS` or `DSSE_KMS`; required with them, refused with any other `sse`.",
    ),
    key(
        "broker.data.backup.s3.sseBucketKey",
        "SLUICE_BROKER_DATA_BACKUP_S3_SSEBUCKETKEY",
        "",
        "`true` or `false`: whether SSE-KMS uses an S3 Bucket Key (fewer KMS requests); unset keeps the bucket's setting. \
         Only with `sse` `KMS` (S3 has no Bucket Keys for DSSE-KMS).",
    ),
    secret(
        "broker.data.backup.s3.sseCustomerKey",
        "SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY",
        "",
        "The SSE-C key: base64 (standard alphabet, `=` padding) of exactly 32 bytes, e.g. from `openssl rand -base64 32`; \
         required with `sse` `CUSTOMER`, refused otherwise. The broker, the restore tool and the CLI all need the same key \
         to read the backups; a lost key loses them. Never printed.",
    ),
    key(
        "broker.data.backup.gcs.bucketName",
        "SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME",
        "",
        "Google Cloud Storage bucket receiving the backups; required when `store` is `GCS`.",
    ),
    key(
        "broker.data.backup.gcs.basePath",
        "SLUICE_BROKER_DATA_BACKUP_GCS_BASEPATH",
        "",
        "Prefix inside the bucket under which backups are written; leading and trailing `/` are removed.",
    ),
    key(
        "broker.data.backup.gcs.host",
        "SLUICE_BROKER_DATA_BACKUP_GCS_HOST",
        "",
        "URL of the GCS API starting with `http://` or `https://`, for emulators; unset means Google. Without \
         `credentials`, requests to it are not authenticated.",
    ),
    key(
        "broker.data.backup.gcs.credentials",
        "SLUICE_BROKER_DATA_BACKUP_GCS_CREDENTIALS",
        "",
        "Path of a service-account JSON key file; unset means application default credentials \
         (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, then the metadata server).",
    ),
    key(
        "broker.data.backup.gcs.apiCallTimeout",
        "SLUICE_BROKER_DATA_BACKUP_GCS_APICALLTIMEOUT",
        "30s",
        "Time limit of one request to the store (each retry has its own); at least 100ms; as `s3.apiCallTimeout`.",
    ),
    key(
        "broker.data.backup.gcs.maxConcurrentConnections",
        "SLUICE_BROKER_DATA_BACKUP_GCS_MAXCONCURRENTCONNECTIONS",
        "32",
        "Maximum number of requests to the store in flight at once for this broker (1..=1024); as `s3.maxConcurrentConnections`.",
    ),
    key(
        "broker.data.backup.gcs.compression",
        "SLUICE_BROKER_DATA_BACKUP_GCS_COMPRESSION",
        "ZSTD",
        "Compression of uploaded backup files: `NONE` or `ZSTD`; as `s3.compression`.",
    ),
    key(
        "broker.data.backup.azure.account",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT",
        "",
        "Azure storage account name; required when `store` is `AZURE`.",
    ),
    secret(
        "broker.data.backup.azure.key",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_KEY",
        "",
        "Storage account access key; not together with `sasToken`. When both are unset the Azure credential chain is \
         used (`AZURE_*` variables, workload identity, managed identity). Never printed.",
    ),
    secret(
        "broker.data.backup.azure.sasToken",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_SASTOKEN",
        "",
        "Shared access signature (the query string, with or without the leading `?`); not together with `key`. Never printed.",
    ),
    key(
        "broker.data.backup.azure.container",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER",
        "",
        "Blob container receiving the backups; required when `store` is `AZURE`.",
    ),
    key(
        "broker.data.backup.azure.endpoint",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT",
        "",
        "Blob service URL starting with `http://` or `https://` (e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`); \
         unset means `https://<account>.blob.core.windows.net`.",
    ),
    key(
        "broker.data.backup.azure.basePath",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_BASEPATH",
        "",
        "Prefix inside the container under which backups are written; leading and trailing `/` are removed.",
    ),
    key(
        "broker.data.backup.azure.apiCallTimeout",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_APICALLTIMEOUT",
        "30s",
        "Time limit of one request to the store (each retry has its own); at least 100ms; as `s3.apiCallTimeout`.",
    ),
    key(
        "broker.data.backup.azure.maxConcurrentConnections",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_MAXCONCURRENTCONNECTIONS",
        "32",
        "Maximum number of requests to the store in flight at once for this broker (1..=1024); as `s3.maxConcurrentConnections`.",
    ),
    key(
        "broker.data.backup.azure.compression",
        "SLUICE_BROKER_DATA_BACKUP_AZURE_COMPRESSION",
        "ZSTD",
        "Compression of uploaded backup files: `NONE` or `ZSTD`; as `s3.compression`.",
    ),
    key(
        "broker.data.backup.maxConcurrentUploads",
        "SLUICE_BROKER_DATA_BACKUP_MAXCONCURRENTUPLOADS",
        "4",
        "Maximum number of backup files uploaded at the same time (1..=64).",
    ),
    key(
        "broker.data.backup.uploadRateLimit",
        "SLUICE_BROKER_DATA_BACKUP_UPLOADRATELIMIT",
        "0",
        "Maximum backup upload rate per second, as a size (e.g. `50MB`, `50MB/s`); 0 means unlimited.",
    ),
    key(
        "broker.data.backup.continuous",
        "SLUICE_BROKER_DATA_BACKUP_CONTINUOUS",
        "false",
        "Continuous backups: `true` uploads every sealed log segment to the backup pool as it seals, in the background (the rate limit and          upload slots of backups apply); the next checkpoint then references it. Compaction keeps the log not archived yet, up to `continuousLagLimit`.",
    ),
    key(
        "broker.data.backup.continuousLagLimit",
        "SLUICE_BROKER_DATA_BACKUP_CONTINUOUSLAGLIMIT",
        "4GB",
        "With `continuous`: the most log not archived yet that compaction keeps per partition, as a size between `1MB` and `1TB`; past it          compaction deletes as without archiving and `sluice_archive_segments_dropped_total` counts what was never archived (restore points are not affected).",
    ),
    key(
        "broker.data.backup.uploadMemoryLimit",
        "SLUICE_BROKER_DATA_BACKUP_UPLOADMEMORYLIMIT",
        "64MB",
        "Memory for the buffers of backup uploads, shared by every upload of the broker (all partitions), as a size between `8MB` (one 8 MiB part) and `4GB`; \
         uploads wait for a free buffer, so backups never hold more than this in upload buffers, whatever the file sizes.",
    ),
    key(
        "broker.data.backup.encryption.primaryKey",
        "SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_PRIMARYKEY",
        "",
        "Id of the key new backups are encrypted under (one of `encryption.keys`); empty: new backups are not \
         encrypted. Each pool object is encrypted (AES-256-GCM in 64 KiB chunks) under its partition's data key, \
         which this key wraps; every manifest carries a MAC under a key derived from it.",
    ),
    key(
        "broker.data.backup.encryption.keys",
        "SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_KEYS",
        "",
        "Comma-separated `<id>=<source>` key-encryption keys that backups may be under, the primary and any older \
         ones (restore, verify and `sluice backup rekey` accept any). A source is `file:<path>` or \
         `env:<VARIABLE>` holding 64 hex digits (`sluice backup keygen` makes one), or `passphrase-file:<path>` \
         or `passphrase-env:<VARIABLE>` holding a passphrase (stretched with Argon2id). The value names where a \
         key is, never the key.",
    ),
    key(
        "gateway.cluster.brokers",
        "SLUICE_GATEWAY_CLUSTER_BROKERS",
        "",
        "Comma-separated `host:port` addresses of the brokers in node-id order; when empty, `broker.cluster.brokers` is used.",
    ),
    secret(
        "gateway.cluster.token",
        "SLUICE_GATEWAY_CLUSTER_TOKEN",
        "",
        "The cluster token the gateway sends to the brokers; when empty, `broker.cluster.token` is used. Never printed.",
    ),
    key(
        "gateway.cluster.ca",
        "SLUICE_GATEWAY_CLUSTER_CA",
        "",
        "PEM file with the CA certificate(s) of the brokers' internal certificates; when set, the gateway calls the brokers \
         over HTTPS. When empty, `broker.cluster.ca` is used.",
    ),
    key(
        "gateway.cluster.requestTimeout",
        "SLUICE_GATEWAY_CLUSTER_REQUESTTIMEOUT",
        "15s",
        "How long the gateway waits for a broker's answer; at least 100ms.",
    ),
    key(
        "gateway.network.host",
        "SLUICE_GATEWAY_NETWORK_HOST",
        "127.0.0.1",
        "Address the gateway's client API listens on.",
    ),
    key(
        "gateway.network.port",
        "SLUICE_GATEWAY_NETWORK_PORT",
        "8080",
        "Port the gateway's client API listens on (1..=65535).",
    ),
    key(
        "gateway.management.host",
        "SLUICE_GATEWAY_MANAGEMENT_HOST",
        "127.0.0.1",
        "Address the gateway's management endpoint listens on.",
    ),
    key(
        "gateway.management.port",
        "SLUICE_GATEWAY_MANAGEMENT_PORT",
        "9600",
        "Port the gateway's management endpoint listens on (1..=65535); must differ from `gateway.network.port` on the same host.",
    ),
    secret(
        "gateway.network.token",
        "SLUICE_GATEWAY_NETWORK_TOKEN",
        "",
        "When set, every client API request needs `Authorization: Bearer <token>` (401 otherwise). Never printed.",
    ),
    secret(
        "gateway.management.token",
        "SLUICE_GATEWAY_MANAGEMENT_TOKEN",
        "",
        "When set, every actuator request needs `Authorization: Bearer <token>` (401 otherwise); the `sluice` CLI sends it with `--token`. Never printed.",
    ),
    key(
        "gateway.tls.certificate",
        "SLUICE_GATEWAY_TLS_CERTIFICATE",
        "",
        "PEM file with the certificate chain; when set (with `key`) both gateway ports serve HTTPS only.",
    ),
    key(
        "gateway.tls.key",
        "SLUICE_GATEWAY_TLS_KEY",
        "",
        "PEM file with the private key of `certificate`; set both or neither.",
    ),
    key(
        "gateway.backup.schedule",
        "SLUICE_GATEWAY_BACKUP_SCHEDULE",
        "",
        "Scheduled backups: an interval (`1h`, `15m`, at least 1s) or a cron expression (`0 */6 * * *`, 5 or 6 fields, UTC); ids are epoch milliseconds. Empty disables them.",
    ),
    key(
        "gateway.backup.retention.keepLast",
        "SLUICE_GATEWAY_BACKUP_RETENTION_KEEPLAST",
        "0",
        "Retention after each scheduled backup: keep at most this many newest backups (0 = no count limit). The newest COMPLETED backup is always kept.",
    ),
    key(
        "gateway.backup.retention.keepWithin",
        "SLUICE_GATEWAY_BACKUP_RETENTION_KEEPWITHIN",
        "",
        "Retention: also keep every backup younger than this (e.g. `7d`, `36h`); empty = no age rule. With both rules a backup is kept if either keeps it.",
    ),
    key(
        "gateway.backup.checkpointInterval",
        "SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL",
        "",
        "Continuous backups: a restore point (a marker checkpoint, a consistent cut of every partition) at this interval (e.g. `10s`, at least 1s); each uploads only the log written since the previous one. Ids are epoch milliseconds, shared with scheduled backups. Empty disables them.",
    ),
    key(
        "gateway.backup.retention.markersKeepWithin",
        "SLUICE_GATEWAY_BACKUP_RETENTION_MARKERSKEEPWITHIN",
        "24h",
        "Retention of markers: every marker younger than this is kept, older ones are deleted (checked at most once a minute, the newest COMPLETED marker always kept); backups are kept by `keepLast`/`keepWithin` alone.",
    ),
];

/// The environment variable for a dotted key: `SLUICE_` + the upper-cased key with
/// dots replaced by `_` (`broker.data.backup.s3.bucketName` → `SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME`).
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "_"))
}

/// Prefix of every environment variable read by Sluice.
pub const ENV_PREFIX: &str = "SLUICE_";

/// Environment variable naming the YAML file; not a configuration key.
pub const CONFIG_FILE_ENV: &str = "SLUICE_CONFIG";

/// Default YAML file, relative to the current directory, read when `SLUICE_CONFIG` is unset.
pub const DEFAULT_CONFIG_FILE: &str = "config/application.yaml";

/// Finds a key by its dotted name, case-insensitively.
pub fn find_key(dotted: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.key.eq_ignore_ascii_case(dotted))
}

/// Finds a key by its environment variable (exact, upper-case match).
pub fn find_env(name: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.env == name)
}

/// Whether the value of this key must never be printed.
pub fn is_secret(key: &str) -> bool {
    find_key(key).is_some_and(|k| k.secret)
}

/// Whether `dotted` (case-insensitive) is a proper prefix of some key, e.g. `broker.data`.
pub(crate) fn is_key_prefix(dotted: &str) -> bool {
    let lower = format!("{}.", dotted.to_lowercase());
    KEYS.iter()
        .any(|k| k.key.to_lowercase().starts_with(lower.as_str()))
}

/// The closest known key (or environment variable when `name` starts with `SLUICE_`),
/// if it is close enough to be a plausible typo.
pub(crate) fn suggestion(name: &str) -> Option<&'static str> {
    let env = name.starts_with(ENV_PREFIX);
    let wanted = name.to_lowercase();
    KEYS.iter()
        .map(|k| {
            let candidate = if env { k.env } else { k.key };
            (levenshtein(&wanted, &candidate.to_lowercase()), candidate)
        })
        .filter(|(d, _)| *d > 0 && *d <= 3.max(wanted.len() / 8))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The markdown table of every key (key, environment variable, default, meaning),
/// as in `config/KEYS.md`.
pub fn keys_markdown() -> String {
    let mut out =
        String::from("| Key | Environment variable | Default | Meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        let default = match (k.default, k.key.ends_with(".brokers")) {
            ("", true) => "_(empty)_".to_string(),
            ("", false) => "_(unset)_".to_string(),
            (d, _) => format!("`{d}`"),
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            k.key,
            k.env,
            default,
            k.description.replace('|', "\\|")
        ));
    }
    out
}
