//! Building the `object_store` client of each [`StoreKind`]: credentials,
//! per-request timeout, retries, the per-broker request limit, and the hints
//! that turn a failed reachability check into a message naming the option to
//! fix. Messages name [`BackupStoreOptions`] fields (`StoreKind::S3.bucket`),
//! never the configuration keys of a caller, which may add its own.

use std::path::{Path as LocalPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::limit::LimitStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::error::error_chain;
use crate::options::{BackupStoreOptions, S3Encryption, StoreKind, RETRIES_MAX, RETRY_TIMEOUT};
use crate::BackupStoreError;

type Result<T, E = BackupStoreError> = std::result::Result<T, E>;

/// The connect phase's time limit (object_store's default), capped by the
/// request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The retries of requests: bounded in count ([`RETRIES_MAX`]) and time
/// ([`RETRY_TIMEOUT`]).
///
/// The backoff is object_store's "exponential backoff with decorrelated
/// jitter" (`object_store::client::backoff`, checked in 0.12.5): the first wait
/// is `init_backoff`, each next one is drawn uniformly at random between
/// `init_backoff` and `base` × the previous wait, capped at `max_backoff`. So
/// retries of many clients that failed together spread out. Retried: 5xx, 429,
/// 408, connection errors, and timeouts of idempotent requests (plain puts,
/// gets, heads, lists, deletes; not conditional puts, whose outcome the
/// manifest writer checks by reading back). A request gives up after
/// `RETRIES_MAX` retries or once `RETRY_TIMEOUT` has passed since its first
/// attempt, so it fails after at most about `RETRY_TIMEOUT + max_backoff +
/// api_call_timeout`.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: RETRIES_MAX,
        retry_timeout: RETRY_TIMEOUT,
    }
}

/// A remote store built twice from one builder: with the full retry policy for every operation,
/// and with [`probe_retry_config`] for fast reachability checks.
fn store_and_probe<S>(
    build: impl Fn(RetryConfig) -> object_store::Result<S>,
    build_error: impl Fn(object_store::Error) -> BackupStoreError,
) -> Result<(S, S)> {
    let probe = build(probe_retry_config()).map_err(&build_error)?;
    let store = build(retry_config()).map_err(&build_error)?;
    Ok((store, probe))
}

/// Few retries for the reachability check, so that start-up fails fast.
fn probe_retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(15),
        ..retry_config()
    }
}

/// What to tell the operator when the reachability check fails, by cause.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hints {
    /// The bucket or container does not exist.
    pub(crate) missing: String,
    /// No connection to the endpoint.
    pub(crate) connect: String,
    /// Credentials missing, wrong or without access.
    pub(crate) credentials: String,
}

impl Hints {
    fn generic() -> Self {
        Self {
            missing: "the store location does not exist".to_string(),
            connect: "the store cannot be reached".to_string(),
            credentials: "access to the store was denied".to_string(),
        }
    }

    /// The hint for a failed reachability check.
    pub(crate) fn for_error(&self, error: &object_store::Error) -> String {
        let text = error_chain(error);
        // object_store hides its HTTP error kind behind private types; look for
        // it, for the I/O error underneath, and for reqwest/hyper's wording.
        let mut http_kind = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = cause {
            if let Some(http) = current.downcast_ref::<HttpError>() {
                http_kind = http_kind.or(Some(http.kind()));
            }
            if let Some(io) = current.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                match io.kind() {
                    ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected
                    | AddrNotAvailable | HostUnreachable | NetworkUnreachable => {
                        http_kind = http_kind.or(Some(HttpErrorKind::Connect));
                    }
                    TimedOut => http_kind = http_kind.or(Some(HttpErrorKind::Timeout)),
                    _ => {}
                }
            }
            cause = current.source();
        }
        if http_kind.is_none() {
            if [
                "(Connect)",
                "tcp connect error",
                "dns error",
                "Connection refused",
            ]
            .iter()
            .any(|needle| text.contains(needle))
            {
                http_kind = Some(HttpErrorKind::Connect);
            } else if text.contains("timed out") || text.contains("(Timeout)") {
                http_kind = Some(HttpErrorKind::Timeout);
            }
        }
        let credentials_source = text.contains("169.254.169.254")
            || text.contains("metadata")
            || text.contains("credential")
            || text.contains("Credential");
        let missing = matches!(error, object_store::Error::NotFound { .. })
            || [
                "NoSuchBucket",
                "ContainerNotFound",
                "status code: 404",
                "bucket does not exist",
            ]
            .iter()
            .any(|needle| text.contains(needle));
        let denied = matches!(
            error,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "status code: 401",
            "status code: 403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthenticationFailed",
            "AuthorizationFailure",
        ]
        .iter()
        .any(|needle| text.contains(needle));
        if missing {
            self.missing.clone()
        } else if denied {
            self.credentials.clone()
        } else if matches!(
            http_kind,
            Some(HttpErrorKind::Connect | HttpErrorKind::Timeout)
        ) && credentials_source
        {
            format!("{} (no credentials could be obtained)", self.credentials)
        } else if matches!(http_kind, Some(HttpErrorKind::Connect)) {
            self.connect.clone()
        } else if matches!(http_kind, Some(HttpErrorKind::Timeout)) {
            format!("{} (the request timed out)", self.connect)
        } else {
            "the store answered with an unexpected error (see reason)".to_string()
        }
    }
}

/// The clients of one store.
pub(crate) struct Backend {
    /// The client for every operation, behind the per-broker request limit.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// A client with few retries for the reachability check.
    pub(crate) probe: Arc<dyn ObjectStore>,
    /// A description without credentials, e.g. `S3(bucket=… endpoint=…)`.
    pub(crate) description: String,
    pub(crate) hints: Hints,
    /// The file system store, to make objects durable (it does not fsync by itself).
    pub(crate) local: Option<LocalFiles>,
}

/// The objects of a file system store as local files, to fsync them:
/// `LocalFileSystem` renames a finished object into place but never syncs it,
/// so without this a COMPLETED manifest could survive a crash that the files
/// it lists did not.
#[derive(Debug)]
pub(crate) struct LocalFiles {
    store: LocalFileSystem,
    /// The canonical root: directories are synced up to it.
    root: PathBuf,
    /// Directories whose own entry (in their parent) this store has made durable, with their
    /// inode: a new object in one needs only its directory synced, not every level up to the
    /// root (a pool puts hundreds of objects into the same few directories). A directory that
    /// was removed and made anew has another inode and is synced again.
    durable_dirs: std::sync::Mutex<std::collections::HashMap<PathBuf, u64>>,
}

impl LocalFiles {
    fn new(store: LocalFileSystem, root: PathBuf) -> Self {
        Self {
            store,
            root,
            durable_dirs: std::sync::Mutex::default(),
        }
    }

    /// Syncs the object at `location`, its directory, and every directory above it up to the
    /// root whose entry is not durable yet (new backups create several levels of directories).
    pub(crate) async fn sync(self: &Arc<Self>, location: &Path) -> Result<(), BackupStoreError> {
        let file = self
            .store
            .path_to_filesystem(location)
            .map_err(|e| BackupStoreError::object_store("sync", location, e))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sync_blocking(&file))
            .await
            .map_err(|e| BackupStoreError::io(&self.root, std::io::Error::other(e)))?
    }

    fn sync_blocking(&self, file: &std::path::Path) -> Result<(), BackupStoreError> {
        use std::os::unix::fs::MetadataExt;
        let sync = |path: &std::path::Path| {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|source| BackupStoreError::io(path, source))
        };
        sync(file)?;
        // The file's entry in its directory.
        let Some(mut dir) = file.parent().filter(|d| d.starts_with(&self.root)) else {
            return Ok(());
        };
        sync(dir)?;
        // Each directory's entry in its parent, up to the first one known durable.
        while let Some(parent) = dir.parent().filter(|p| p.starts_with(&self.root)) {
            let inode = std::fs::metadata(dir)
                .map_err(|source| BackupStoreError::io(dir, source))?
                .ino();
            let known = {
                let durable = self
                    .durable_dirs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                durable.get(dir) == Some(&inode)
            };
            if known {
                break;
            }
            sync(parent)?;
            self.durable_dirs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(dir.to_path_buf(), inode);
            dir = parent;
        }
        Ok(())
    }
}

/// What every client of a store shares: the per-broker request limit and the
/// timeouts, as object_store's configuration values.
struct Requests {
    limit: usize,
    timeout: String,
    connect_timeout: String,
}

impl Requests {
    fn of(options: &BackupStoreOptions) -> Result<Self> {
        if options.api_call_timeout.is_zero() {
            return Err(BackupStoreError::Config {
                option: "BackupStoreOptions.api_call_timeout",
                reason: "the request timeout is zero; set a positive duration".to_string(),
            });
        }
        if options.connections_concurrent_max == 0 {
            return Err(BackupStoreError::Config {
                option: "BackupStoreOptions.connections_concurrent_max",
                reason: "the request limit is zero; allow at least 1 request in flight".to_string(),
            });
        }
        Ok(Requests {
            limit: options.connections_concurrent_max,
            timeout: humantime::format_duration(options.api_call_timeout).to_string(),
            connect_timeout: humantime::format_duration(
                CONNECT_TIMEOUT.min(options.api_call_timeout),
            )
            .to_string(),
        })
    }
}

/// Builds the clients of `options.kind`.
pub(crate) fn build(options: &BackupStoreOptions) -> Result<Backend> {
    let requests = Requests::of(options)?;
    match &options.kind {
        StoreKind::InMemory => Ok(in_memory(requests.limit)),
        StoreKind::Filesystem { root } => filesystem(root, requests.limit),
        StoreKind::S3 {
            bucket,
            endpoint,
            region,
            access_key,
            secret_key,
            force_path_style,
            allow_http,
            server_side_encryption,
        } => {
            let bucket = required(
                bucket,
                "StoreKind::S3.bucket",
                "the S3 bucket name is empty; set the bucket",
            )?;
            let allow_http = *allow_http
                || endpoint
                    .as_deref()
                    .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("http://"));
            let style = S3Style {
                path: *force_path_style,
                http_allowed: allow_http,
            };
            let builder = s3_encryption(
                s3_credentials(access_key.as_deref(), secret_key.as_deref()),
                server_side_encryption,
            )?;
            s3(
                builder,
                &bucket,
                endpoint.as_deref(),
                region,
                style,
                server_side_encryption.name(),
                &requests,
            )
        }
        StoreKind::Gcs {
            bucket,
            host,
            credentials,
        } => {
            let bucket = required(
                bucket,
                "StoreKind::Gcs.bucket",
                "the GCS bucket name is empty; set the bucket",
            )?;
            let host = host.as_deref().map(str::trim).filter(|h| !h.is_empty());
            if let Some(host) = host {
                check_endpoint(host, "StoreKind::Gcs.host")?;
            }
            let builder = gcs_credentials(host, credentials.as_deref())?;
            gcs(builder, &bucket, host, &requests)
        }
        StoreKind::Azure {
            account,
            container,
            access_key,
            sas_token,
            endpoint,
        } => {
            let account = required(
                account,
                "StoreKind::Azure.account",
                "the Azure storage account is empty; set it",
            )?;
            let container = required(
                container,
                "StoreKind::Azure.container",
                "the Azure container is empty; set it",
            )?;
            let builder = azure_credentials(access_key.as_deref(), sas_token.as_deref())?;
            let endpoint = endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty());
            azure(builder, &account, &container, endpoint, &requests)
        }
    }
}

/// `value` trimmed, or a configuration error naming `option` when that leaves nothing.
fn required(value: &str, option: &'static str, reason: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(BackupStoreError::Config {
            option,
            reason: reason.to_string(),
        });
    }
    Ok(value.to_string())
}

/// The clients of a remote store: the one for every operation behind the
/// request limit, the probe without it.
fn remote<S: ObjectStore>(
    (store, probe): (S, S),
    limit: usize,
    description: String,
    hints: Hints,
) -> Backend {
    Backend {
        local: None,
        store: Arc::new(LimitStore::new(store, limit)),
        probe: Arc::new(probe),
        description,
        hints,
    }
}

fn in_memory(limit: usize) -> Backend {
    let store: Arc<dyn ObjectStore> = Arc::new(LimitStore::new(InMemory::new(), limit));
    Backend {
        local: None,
        probe: store.clone(),
        store,
        description: "InMemory".to_string(),
        hints: Hints::generic(),
    }
}

fn filesystem(root: &LocalPath, limit: usize) -> Result<Backend> {
    let key = "StoreKind::Filesystem.root";
    if root.as_os_str().is_empty() {
        return Err(BackupStoreError::Config {
            option: key,
            reason: "the backup directory is empty; set it".to_string(),
        });
    }
    std::fs::create_dir_all(root).map_err(|source| BackupStoreError::io(root, source))?;
    let local = || {
        LocalFileSystem::new_with_prefix(root)
            .map(|fs| fs.with_automatic_cleanup(true))
            .map_err(|e| BackupStoreError::Config {
                option: key,
                reason: format!(
                    "cannot use directory as backup store: root={} error={}",
                    root.display(),
                    error_chain(&e)
                ),
            })
    };
    let canonical_root =
        std::fs::canonicalize(root).map_err(|source| BackupStoreError::io(root, source))?;
    Ok(Backend {
        store: Arc::new(LimitStore::new(local()?, limit)),
        probe: Arc::new(local()?),
        local: Some(LocalFiles::new(local()?, canonical_root)),
        description: format!("Filesystem(root={})", root.display()),
        hints: Hints {
            missing: format!("directory {} does not exist ({key})", root.display()),
            connect: format!("directory {} cannot be read ({key})", root.display()),
            credentials: format!(
                "directory {} cannot be accessed by this process ({key})",
                root.display()
            ),
        },
    })
}

/// How S3 requests address the bucket and whether they may use plain HTTP.
#[derive(Debug, Clone, Copy)]
struct S3Style {
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    path: bool,
    http_allowed: bool,
}

/// The environment (AWS_*, including the credential chain) first, explicit keys over it.
fn s3_credentials(access_key: Option<&str>, secret_key: Option<&str>) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env();
    if let Some(access_key) = access_key {
        builder = builder.with_access_key_id(access_key);
    }
    if let Some(secret_key) = secret_key {
        builder = builder.with_secret_access_key(secret_key);
    }
    builder
}

/// object_store's name of the encryption type setting (`S3EncryptionConfigKey::ServerSideEncryption`).
const SSE_TYPE_SETTING: &str = "aws_server_side_encryption";

/// The option every refusal of [`S3Encryption`] names.
const S3_ENCRYPTION_OPTION: &str = "StoreKind::S3.server_side_encryption";

/// Asks for `encryption` on every request that needs it. Checks what object_store
/// would only find out later (an empty KMS key id is sent as is; an SSE-C key of the
/// wrong length is refused by the server on the first write) or would report with a
/// piece of the key (base64 errors quote the bad character).
fn s3_encryption(builder: AmazonS3Builder, encryption: &S3Encryption) -> Result<AmazonS3Builder> {
    let refuse = |reason: &str| BackupStoreError::Config {
        option: S3_ENCRYPTION_OPTION,
        reason: reason.to_string(),
    };
    Ok(match encryption {
        S3Encryption::BucketDefault => builder,
        // object_store has no method for SSE-S3, and its `S3EncryptionConfigKey` is not
        // exported: the setting is named by its string.
        S3Encryption::S3Managed => builder.with_config(
            SSE_TYPE_SETTING.parse::<AmazonS3ConfigKey>().map_err(|e| {
                refuse(&format!(
                    "this object_store does not know the setting {SSE_TYPE_SETTING}: {e}"
                ))
            })?,
            "AES256",
        ),
        S3Encryption::Kms { key_id, bucket_key } => {
            if key_id.trim().is_empty() {
                return Err(refuse(
                    "the KMS key id of SSE-KMS is empty; set the key id or ARN",
                ));
            }
            let builder = builder.with_sse_kms_encryption(key_id.trim());
            match bucket_key {
                Some(enabled) => builder.with_bucket_key(*enabled),
                None => builder,
            }
        }
        S3Encryption::DsseKms { key_id } => {
            if key_id.trim().is_empty() {
                return Err(refuse(
                    "the KMS key id of DSSE-KMS is empty; set the key id or ARN",
                ));
            }
            builder.with_dsse_kms_encryption(key_id.trim())
        }
        S3Encryption::Customer { key_base64 } => {
            use base64::Engine as _;
            let key = base64::engine::general_purpose::STANDARD
                .decode(key_base64)
                .map_err(|_| {
                    refuse(
                        "the SSE-C key is not base64 (standard alphabet, with = padding); \
                         it must be the base64 of 32 bytes",
                    )
                })?;
            if key.len() != 32 {
                return Err(refuse(&format!(
                    "the SSE-C key decodes to {} bytes; it must be exactly 32 bytes (AES-256)",
                    key.len()
                )));
            }
            builder.with_ssec_encryption(key_base64)
        }
    })
}

fn s3(
    builder: AmazonS3Builder,
    bucket: &str,
    endpoint: Option<&str>,
    region: &str,
    style: S3Style,
    sse: &str,
    requests: &Requests,
) -> Result<Backend> {
    let mut builder = builder
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(!style.path)
        .with_allow_http(style.http_allowed)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            requests.timeout.as_str(),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            requests.connect_timeout.as_str(),
        );
    if !region.trim().is_empty() {
        builder = builder.with_region(region.trim());
    }
    let mut endpoint_description = String::from("default");
    if let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        let endpoint = if style.path {
            check_endpoint(endpoint, "StoreKind::S3.endpoint")?;
            endpoint.to_string()
        } else {
            virtual_hosted_endpoint(endpoint, bucket)?
        };
        endpoint_description = endpoint.clone();
        builder = builder.with_endpoint(endpoint);
    }
    let build_error = |e: object_store::Error| BackupStoreError::Config {
        option: "StoreKind::S3",
        reason: format!(
            "cannot build the S3 client: bucket={bucket} endpoint={endpoint_description} error={}",
            error_chain(&e)
        ),
    };
    let clients = store_and_probe(
        |retry| builder.clone().with_retry(retry).build(),
        build_error,
    )?;
    let connect = if endpoint_description == "default" {
        format!(
            "cannot connect to the S3 service of region {} (StoreKind::S3.region, StoreKind::S3.endpoint)",
            region.trim()
        )
    } else {
        format!("cannot connect to {endpoint_description} (StoreKind::S3.endpoint)")
    };
    let hints = Hints {
        missing: format!(
            "bucket {bucket} does not exist (StoreKind::S3.bucket); create it or correct the setting"
        ),
        connect,
        credentials: "access denied or no credentials; check StoreKind::S3.access_key and secret_key, or the AWS credential chain (AWS_* variables, web identity, instance profile), and the bucket's permissions".to_string(),
    };
    let description = format!(
        "S3(bucket={bucket} endpoint={endpoint_description} path_style={} sse={sse})",
        style.path
    );
    Ok(remote(clients, requests.limit, description, hints))
}

/// Explicit credentials or host replace the credential chain; otherwise the
/// environment (GOOGLE_*) and application default credentials apply.
fn gcs_credentials(
    host: Option<&str>,
    credentials: Option<&LocalPath>,
) -> Result<GoogleCloudStorageBuilder> {
    Ok(match (host, credentials) {
        (None, None) => GoogleCloudStorageBuilder::from_env(),
        (None, Some(path)) => {
            check_readable(path, "StoreKind::Gcs.credentials")?;
            GoogleCloudStorageBuilder::new().with_service_account_path(path.to_string_lossy())
        }
        (Some(host), credentials) => GoogleCloudStorageBuilder::new()
            .with_service_account_key(gcs_key_for_host(host, credentials)?),
    })
}

fn gcs(
    builder: GoogleCloudStorageBuilder,
    bucket: &str,
    host: Option<&str>,
    requests: &Requests,
) -> Result<Backend> {
    let builder = builder
        .with_bucket_name(bucket)
        .with_config(
            GoogleConfigKey::Client(ClientConfigKey::Timeout),
            requests.timeout.as_str(),
        )
        .with_config(
            GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
            requests.connect_timeout.as_str(),
        );
    let host_description = host.unwrap_or("https://storage.googleapis.com").to_string();
    let build_error = |e: object_store::Error| BackupStoreError::Config {
        option: "StoreKind::Gcs.credentials",
        reason: format!(
            "cannot build the GCS client: bucket={bucket} host={host_description} error={}",
            error_chain(&e)
        ),
    };
    let clients = store_and_probe(
        |retry| builder.clone().with_retry(retry).build(),
        build_error,
    )?;
    let hints = Hints {
        missing: format!(
            "bucket {bucket} does not exist (StoreKind::Gcs.bucket); create it or correct the setting"
        ),
        connect: format!("cannot connect to {host_description} (StoreKind::Gcs.host)"),
        credentials: "access denied or no credentials; check StoreKind::Gcs.credentials, or the application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server), and the bucket's permissions".to_string(),
    };
    let description = format!("GCS(bucket={bucket} host={host_description})");
    Ok(remote(clients, requests.limit, description, hints))
}

/// Explicit credentials replace the chain (an AZURE_STORAGE_ACCOUNT_KEY in the
/// environment would otherwise win over an explicit SAS token).
fn azure_credentials(
    access_key: Option<&str>,
    sas_token: Option<&str>,
) -> Result<MicrosoftAzureBuilder> {
    Ok(match (access_key, sas_token) {
        (Some(_), Some(_)) => {
            return Err(BackupStoreError::Config {
                option: "StoreKind::Azure.sas_token",
                reason: "an Azure access key and a SAS token are mutually exclusive (StoreKind::Azure.access_key, StoreKind::Azure.sas_token); set one of them".to_string(),
            })
        }
        (Some(key), None) => MicrosoftAzureBuilder::new().with_access_key(key),
        (None, Some(sas)) => MicrosoftAzureBuilder::new().with_config(AzureConfigKey::SasKey, sas),
        (None, None) => MicrosoftAzureBuilder::from_env(),
    })
}

fn azure(
    builder: MicrosoftAzureBuilder,
    account: &str,
    container: &str,
    endpoint: Option<&str>,
    requests: &Requests,
) -> Result<Backend> {
    let mut builder = builder
        .with_account(account)
        .with_container_name(container)
        .with_config(
            AzureConfigKey::Client(ClientConfigKey::Timeout),
            requests.timeout.as_str(),
        )
        .with_config(
            AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
            requests.connect_timeout.as_str(),
        );
    let endpoint_description = match endpoint {
        Some(endpoint) => {
            check_endpoint(endpoint, "StoreKind::Azure.endpoint")?;
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/').to_string())
                .with_allow_http(endpoint.to_ascii_lowercase().starts_with("http://"));
            endpoint.to_string()
        }
        None => format!("https://{account}.blob.core.windows.net"),
    };
    let build_error = |e: object_store::Error| {
        BackupStoreError::Config {
        option: "StoreKind::Azure.access_key",
        reason: format!(
            "cannot build the Azure client: account={account} container={container} endpoint={endpoint_description} error={}; check StoreKind::Azure.access_key or sas_token",
            error_chain(&e)
        ),
    }
    };
    let clients = store_and_probe(
        |retry| builder.clone().with_retry(retry).build(),
        build_error,
    )?;
    let hints = Hints {
        missing: format!(
            "container {container} does not exist in account {account} (StoreKind::Azure.container); create it or correct the setting"
        ),
        connect: format!(
            "cannot connect to {endpoint_description} (StoreKind::Azure.endpoint, StoreKind::Azure.account)"
        ),
        credentials: "access denied or no credentials; check StoreKind::Azure.access_key or sas_token, or the Azure credential chain (AZURE_* variables, workload or managed identity), and the container's permissions".to_string(),
    };
    let description =
        format!("Azure(account={account} container={container} endpoint={endpoint_description})");
    Ok(remote(clients, requests.limit, description, hints))
}

/// The service-account key for a GCS API at `host` (an emulator): the given
/// credentials file with its `gcs_base_url` replaced, or, without credentials,
/// an anonymous key (`disable_oauth`).
fn gcs_key_for_host(host: &str, credentials: Option<&LocalPath>) -> Result<String> {
    let key = "StoreKind::Gcs.credentials";
    let mut document = match credentials {
        None => serde_json::json!({
            "private_key": "",
            "private_key_id": "",
            "client_email": "",
            "disable_oauth": true,
        }),
        Some(path) => {
            check_readable(path, key)?;
            let text = std::fs::read_to_string(path).map_err(|e| BackupStoreError::Config {
                option: key,
                reason: format!(
                    "cannot read the GCS credentials file: path={} error={e}",
                    path.display()
                ),
            })?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                BackupStoreError::Config {
                    option: key,
                    reason: format!(
                        "the GCS credentials file is not JSON: path={} error={e}",
                        path.display()
                    ),
                }
            })?
        }
    };
    let Some(object) = document.as_object_mut() else {
        return Err(BackupStoreError::Config {
            option: key,
            reason: "the GCS credentials file is not a JSON object".to_string(),
        });
    };
    object.insert(
        "gcs_base_url".to_string(),
        serde_json::Value::String(host.trim_end_matches('/').to_string()),
    );
    Ok(document.to_string())
}

fn check_readable(path: &LocalPath, option: &'static str) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| BackupStoreError::Config {
            option,
            reason: format!(
                "cannot read the credentials file: path={} error={e}",
                path.display()
            ),
        })
}

pub(crate) fn check_endpoint<'a>(
    endpoint: &'a str,
    option: &'static str,
) -> Result<(&'a str, &'a str)> {
    endpoint
        .split_once("://")
        .filter(|(scheme, rest)| {
            (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                && !rest.is_empty()
        })
        .ok_or_else(|| BackupStoreError::Config {
            option,
            reason: format!(
                "invalid endpoint: endpoint={endpoint:?}; it must start with http:// or https://"
            ),
        })
}

/// object_store uses a custom endpoint as-is for virtual-hosted style
/// requests, so the bucket must be part of its host.
pub(crate) fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Result<String> {
    let (scheme, rest) = check_endpoint(endpoint, "StoreKind::S3.endpoint")?;
    if rest.starts_with(&format!("{bucket}.")) {
        Ok(endpoint.to_string())
    } else {
        Ok(format!("{scheme}://{bucket}.{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoint_prepends_bucket_once() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com", "b").unwrap(),
            "https://b.s3.example.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://b.s3.example.com", "b").unwrap(),
            "https://b.s3.example.com"
        );
        assert!(virtual_hosted_endpoint("s3.example.com", "b").is_err());
    }

    /// Each [`S3Encryption`] sets exactly object_store's encryption settings of its kind,
    /// which become the `x-amz-server-side-encryption*` headers of the requests.
    #[test]
    fn s3_encryption_sets_object_stores_encryption_settings() {
        let key = "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=";
        // (encryption, [type, KMS key id, bucket key, customer key])
        let cases: [(S3Encryption, [Option<&str>; 4]); 6] = [
            (S3Encryption::BucketDefault, [None, None, None, None]),
            (S3Encryption::S3Managed, [Some("AES256"), None, None, None]),
            (
                S3Encryption::Kms {
                    key_id: " alias/sluice ".into(),
                    bucket_key: None,
                },
                [Some("aws:kms"), Some("alias/sluice"), None, None],
            ),
            (
                S3Encryption::Kms {
                    key_id: "alias/sluice".into(),
                    bucket_key: Some(false),
                },
                [Some("aws:kms"), Some("alias/sluice"), Some("false"), None],
            ),
            (
                S3Encryption::DsseKms {
                    key_id: "arn:aws:kms:eu-west-1:1:key/k".into(),
                },
                [
                    Some("aws:kms:dsse"),
                    Some("arn:aws:kms:eu-west-1:1:key/k"),
                    None,
                    None,
                ],
            ),
            (
                S3Encryption::Customer {
                    key_base64: key.into(),
                },
                [Some("sse-c"), None, None, Some(key)],
            ),
        ];
        let settings = [
            SSE_TYPE_SETTING,
            "aws_sse_kms_key_id",
            "aws_sse_bucket_key_enabled",
            "aws_sse_customer_key_base64",
        ]
        .map(|name| name.parse::<AmazonS3ConfigKey>().unwrap());
        for (encryption, expected) in cases {
            // `new`, not `from_env`: the test must not depend on AWS_* variables.
            let builder = s3_encryption(AmazonS3Builder::new(), &encryption).unwrap();
            for (setting, expected) in settings.iter().zip(expected) {
                assert_eq!(
                    builder.get_config_value(setting).as_deref(),
                    expected,
                    "{encryption:?} {setting:?}"
                );
            }
        }
    }

    #[test]
    fn gcs_emulator_key_is_anonymous_with_the_host() {
        let key: serde_json::Value =
            serde_json::from_str(&gcs_key_for_host("http://127.0.0.1:4443/", None).unwrap())
                .unwrap();
        assert_eq!(key["gcs_base_url"], "http://127.0.0.1:4443");
        assert_eq!(key["disable_oauth"], true);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sa.json");
        std::fs::write(
            &file,
            r#"{"client_email":"a@b","private_key":"k","private_key_id":"i"}"#,
        )
        .unwrap();
        let key: serde_json::Value = serde_json::from_str(
            &gcs_key_for_host("https://gcs.example.com", Some(&file)).unwrap(),
        )
        .unwrap();
        assert_eq!(key["gcs_base_url"], "https://gcs.example.com");
        assert_eq!(key["client_email"], "a@b");
        assert!(key.get("disable_oauth").is_none());

        let error = gcs_key_for_host("http://h", Some(&dir.path().join("missing.json")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("option=StoreKind::Gcs.credentials"),
            "{error}"
        );
    }

    #[test]
    fn the_backoff_is_bounded() {
        let retry = retry_config();
        assert_eq!(retry.max_retries, RETRIES_MAX);
        assert_eq!(retry.retry_timeout, RETRY_TIMEOUT);
        assert!(retry.backoff.max_backoff <= Duration::from_secs(10));
        assert!(retry.backoff.base > 1.0);
    }
}
