//! The broker process: partitions of this node, the backup service and the internal API, wired
//! together. `BrokerService::new(config)` → `run(cancel)` (the service shape, ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_backup_store::{
    BackupStore, BackupStoreOptions, EncryptionOptions, KeyEncryptionKey, S3Encryption, StoreKind,
};
use sluice_config::{
    BackupConfig, BackupStoreKind, BrokerConfig, ClusterConfig, EncryptionConfig, S3SseConfig,
    S3SseMode, StoreRequestConfig,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::archive::{ArchiveOptions, ArchiveProgress, Archiver};
use crate::backup::{BackupHandle, BackupOptions, BackupService};
use crate::client::BrokerClient;
use crate::error::{BrokerError, Result};
use crate::metrics::{BackupMetrics, BrokerRegistry, RestoreReport};
use crate::outbox::{OutboxOptions, OutboxSender};
use crate::partition::{partition_directory, PartitionHandle, PartitionOptions, PartitionService};
use crate::protocol::Topology;
use crate::routing::partitions_for_node;
use crate::transport::{self, ClusterTransport};

/// How long in-flight internal requests may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A store's options with the request settings of its section (timeout, connections, compression).
fn with_requests(options: BackupStoreOptions, requests: &StoreRequestConfig) -> BackupStoreOptions {
    BackupStoreOptions {
        api_call_timeout: requests.api_call_timeout,
        connections_concurrent_max: requests.connections_concurrent_max,
        compression: requests.compression,
        ..options
    }
}

/// `broker.data.backup.s3.sse*` as the backup store takes it. A key the mode needs but that is
/// missing (the configuration was not validated) becomes an empty value, which
/// [`BackupStore::open`] refuses; keys the mode does not use are not passed on.
fn s3_encryption(sse: &S3SseConfig) -> S3Encryption {
    let key_id = || sse.kms_key_id.clone().unwrap_or_default();
    match sse.mode {
        S3SseMode::None => S3Encryption::BucketDefault,
        S3SseMode::Aes256 => S3Encryption::S3Managed,
        S3SseMode::Kms => S3Encryption::Kms {
            key_id: key_id(),
            bucket_key: sse.bucket_key,
        },
        S3SseMode::DsseKms => S3Encryption::DsseKms { key_id: key_id() },
        S3SseMode::Customer => S3Encryption::Customer {
            key_base64: sse
                .customer_key
                .as_ref()
                .map(|k| k.expose().to_string())
                .unwrap_or_default(),
        },
    }
}

/// The backup store settings of the configuration, as the backup store takes them; `None` when
/// no store is configured. A required setting that is missing (the configuration was not
/// validated) becomes an empty value, which [`BackupStore::open`] refuses naming the key.
pub fn store_options(config: &BackupConfig) -> Option<BackupStoreOptions> {
    let options = match config.store {
        BackupStoreKind::None => None,
        BackupStoreKind::Filesystem => Some(BackupStoreOptions::new(
            StoreKind::Filesystem {
                root: config.filesystem.base_path.clone().unwrap_or_default(),
            },
            None,
        )),
        BackupStoreKind::S3 => {
            let s3 = &config.s3;
            Some(with_requests(
                BackupStoreOptions::new(
                    StoreKind::S3 {
                        bucket: s3.bucket_name.clone().unwrap_or_default(),
                        endpoint: s3.endpoint.clone(),
                        region: s3.region.clone(),
                        access_key: s3.access_key.clone(),
                        secret_key: s3.secret_key.as_ref().map(|s| s.expose().to_string()),
                        force_path_style: s3.force_path_style_access,
                        allow_http: s3
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://")),
                        server_side_encryption: s3_encryption(&s3.sse),
                    },
                    s3.base_path.clone(),
                ),
                &s3.requests,
            ))
        }
        BackupStoreKind::Gcs => {
            let gcs = &config.gcs;
            Some(with_requests(
                BackupStoreOptions::new(
                    StoreKind::Gcs {
                        bucket: gcs.bucket_name.clone().unwrap_or_default(),
                        host: gcs.host.clone(),
                        credentials: gcs.credentials.clone(),
                    },
                    gcs.base_path.clone(),
                ),
                &gcs.requests,
            ))
        }
        BackupStoreKind::Azure => {
            let azure = &config.azure;
            Some(with_requests(
                BackupStoreOptions::new(
                    StoreKind::Azure {
                        account: azure.account.clone().unwrap_or_default(),
                        container: azure.container.clone().unwrap_or_default(),
                        access_key: azure.key.as_ref().map(|k| k.expose().to_string()),
                        sas_token: azure.sas_token.as_ref().map(|t| t.expose().to_string()),
                        endpoint: azure.endpoint.clone(),
                    },
                    azure.base_path.clone(),
                ),
                &azure.requests,
            ))
        }
    }?;
    Some(BackupStoreOptions {
        upload_memory_limit_bytes: config.upload_memory_limit_bytes,
        ..options
    })
}

/// The client-side encryption the configuration asks for, its keys loaded (from their files or
/// variables); `None` when no key is configured (backups are written plain and encrypted ones
/// cannot be read).
pub fn encryption_options(
    config: &EncryptionConfig,
    cluster_name: &str,
) -> std::result::Result<Option<EncryptionOptions>, sluice_backup_store::BackupStoreError> {
    if config.keys.is_empty() {
        return Ok(None);
    }
    let keys = config
        .keys
        .iter()
        .map(KeyEncryptionKey::load)
        .collect::<std::result::Result<_, _>>()?;
    Ok(Some(EncryptionOptions {
        cluster_name: cluster_name.to_string(),
        primary: config.primary_key.clone(),
        keys,
    }))
}

/// Opens the configured backup store and checks that it answers: a store that cannot be
/// reached, or whose bucket or container does not exist, is refused with a message naming the
/// setting to fix.
pub async fn open_store(
    config: &BackupConfig,
    cluster: &ClusterConfig,
) -> Result<Option<BackupStore>> {
    let Some(mut options) = store_options(config) else {
        return Ok(None);
    };
    options.encryption = encryption_options(&config.encryption, &cluster.cluster_name)?;
    let store = BackupStore::open(options)?;
    store.check_reachable().await?;
    tracing::info!(
        store = store.description(),
        base_path = store.base_path().unwrap_or("/"),
        compression = ?store.compression(),
        encryption_primary_key = store.primary_key_id().unwrap_or("none"),
        upload_memory_limit_bytes = store.upload_memory_limit_bytes(),
        "backup store reachable"
    );
    Ok(Some(store))
}

/// The file the restore tool writes (fsynced) into the data directory before it moves the first
/// partition into place and removes after the last one: while it exists the directory may hold
/// only some partitions of the backup, so the broker refuses to start.
pub const RESTORE_MARKER_FILE: &str = "restore-unfinished.json";

/// Refuses a data directory that an unfinished restore left behind (see [`RESTORE_MARKER_FILE`]).
pub fn refuse_unfinished_restore(data_directory: &std::path::Path) -> Result<()> {
    let marker = data_directory.join(RESTORE_MARKER_FILE);
    match std::fs::symlink_metadata(&marker) {
        Ok(_) => Err(BrokerError::UnfinishedRestore { marker }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BrokerError::Io {
            path: marker,
            operation: "look for an unfinished restore",
            source,
        }),
    }
}

/// The broker process. It takes no requests of its own (the API serves its parts), so it has no
/// handle: `BrokerService::new(config)` → `run(cancel)`.
pub struct BrokerService {
    config: BrokerConfig,
}

impl BrokerService {
    pub fn new(config: BrokerConfig) -> BrokerService {
        BrokerService { config }
    }

    /// Starts every part (backup service, partitions, outbox senders), serves the internal API
    /// until `cancel`, then stops the parts in order.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let config = &self.config;
        let cluster = &config.cluster;
        refuse_unfinished_restore(&config.data.directory)?;
        let store = open_store(&config.data.backup, &config.cluster).await?;
        let metrics = BackupMetrics::new();
        let restore = read_restore_report(&config.data.directory);
        let (backup_service, backups) = match store {
            Some(store) => {
                let (service, handle) =
                    BackupService::new(backup_options(config), store, metrics.clone());
                (Some(service), Some(handle))
            }
            None => (None, None),
        };
        let hosted = partitions_for_node(
            cluster.node_id,
            cluster.cluster_size,
            cluster.partitions_count,
        );
        let registry = Arc::new(BrokerRegistry::new(
            cluster.node_id,
            &metrics,
            restore.as_ref(),
        ));
        let mut partitions = recover_partitions(config, &hosted, &backups).await?;
        for (service, _) in &mut partitions {
            service.set_metrics(registry.partition(service.partition_id()));
        }
        let archivers = match &backups {
            Some(backups) if config.data.backup.continuous => {
                archivers(config, backups, &registry, &mut partitions)
            }
            _ => Vec::new(),
        };
        let listening = Listening::bind(config).await?;
        let management = Management::bind(config)?;

        let mut stages = Stages::default();
        let mut archives = BTreeMap::new();
        for (archiver, progress) in archivers {
            archives.insert(progress.0, progress.1);
            let runtime = crate::background::runtime();
            stages.archivers.spawn(|cancel| async move {
                // On the background runtime: reading, hashing and sending at the lower priority.
                if let Err(error) = runtime.spawn(archiver.run(cancel)).await {
                    tracing::error!(%error, "an archiver stopped abnormally");
                }
            });
        }
        let brokers = broker_clients(config, &listening.transport);
        for (_, handle) in &partitions {
            let options = OutboxOptions {
                cluster_size: cluster.cluster_size,
                ..OutboxOptions::default()
            };
            let sender = OutboxSender::new(options, handle.clone(), brokers.clone());
            stages.senders.spawn(|cancel| sender.run(cancel));
        }
        if let Some(service) = backup_service {
            stages.backups.spawn(|cancel| service.run(cancel));
        }
        if let Some(backups) = &backups {
            learn_stored_backup_ids(backups, cluster.partitions_count).await;
        }
        let mut handles = BTreeMap::new();
        for (service, handle) in partitions {
            if let Some(backups) = &backups {
                fail_unfinished_in_background(backups, &service, cluster.partitions_count);
            }
            handles.insert(service.partition_id(), handle);
            stages.partitions.spawn(|cancel| service.run(cancel));
        }

        let state = Arc::new(ApiState {
            topology: topology(config, hosted.clone()),
            partitions: handles,
            backups,
            metrics,
            restore,
            archives,
        });
        tracing::info!(node = cluster.node_id, address = %listening.address, partitions = ?hosted,
            management = %management.address,
            backup_store = config.data.backup.store.as_str(),
            tls = listening.tls.is_some(), cluster_token = cluster.token.is_some(), "broker ready");
        let router = transport::with_cluster_token(api::router(state), cluster.token.as_ref());
        let router = registry.requests().layer(router);
        let tls = listening.tls.clone();
        let (served, managed) = tokio::join!(
            async {
                let served = listening.serve(router, cancel.clone()).await;
                // One port stopped (an error): stop the other too.
                cancel.cancel();
                served
            },
            async {
                let managed = management
                    .serve(registry.clone(), tls, cancel.clone())
                    .await;
                cancel.cancel();
                managed
            }
        );
        stages.stop().await;
        served.and(managed)
    }
}

/// The restore report the restore tool left in the data directory, if any (it feeds the restore
/// metrics; one that cannot be read only costs those).
fn read_restore_report(data_directory: &std::path::Path) -> Option<RestoreReport> {
    let report = match RestoreReport::read(data_directory) {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(%error, "ignoring the restore report: no restore metrics");
            None
        }
    };
    if let Some(report) = &report {
        tracing::info!(
            backup = report.backup_id,
            finished_at = %report.finished_at,
            "the data directory was restored from a backup"
        );
    }
    report
}

fn backup_options(config: &BrokerConfig) -> BackupOptions {
    BackupOptions {
        node_id: config.cluster.node_id,
        uploads_concurrent_max: config.data.backup.uploads_concurrent_max,
        upload_rate_limit_bytes_per_second: config.data.backup.upload_rate_limit_bytes_per_second,
        queue_capacity: 256,
        store_call_timeout: Duration::from_secs(120),
        runtime: Some(crate::background::runtime()),
    }
}

/// The archivers of the hosted partitions (continuous backups), each partition given its
/// handle; each partition's collections are held until its archiver's first pass (see
/// `crate::archive`), so this runs before anything may ask for a collection.
fn archivers(
    config: &BrokerConfig,
    backups: &BackupHandle,
    registry: &BrokerRegistry,
    partitions: &mut [(PartitionService, PartitionHandle)],
) -> Vec<(Archiver, (u32, Arc<ArchiveProgress>))> {
    let mut archivers = Vec::with_capacity(partitions.len());
    for (service, _) in partitions {
        let partition_id = service.partition_id();
        backups.pools().hold_collections(partition_id);
        let options = ArchiveOptions {
            partition_id,
            directory: partition_directory(&config.data.directory, partition_id),
            lag_bytes_max: config.data.backup.continuous_lag_bytes_max,
        };
        let (archiver, handle) =
            Archiver::new(options, backups.clone(), registry.partition(partition_id));
        let progress = handle.progress();
        service.set_archive(handle);
        archivers.push((archiver, (partition_id, progress)));
    }
    archivers
}

/// Recovers every hosted partition from disk (blocking I/O, off the async threads), in order.
async fn recover_partitions(
    config: &BrokerConfig,
    hosted: &[u32],
    backups: &Option<BackupHandle>,
) -> Result<Vec<(PartitionService, PartitionHandle)>> {
    let mut partitions = Vec::with_capacity(hosted.len());
    for &partition_id in hosted {
        let options = PartitionOptions {
            partition_id,
            partitions_count: config.cluster.partitions_count,
            node_id: config.cluster.node_id,
            directory: partition_directory(&config.data.directory, partition_id),
            segment_bytes_max: config.data.log_segment_size_bytes,
            snapshot_period: config.data.snapshot_period,
            request_queue_capacity: 1024,
            batch_commands_max: 8192,
        };
        let backups = backups.clone();
        let partition =
            tokio::task::spawn_blocking(move || PartitionService::new(options, backups))
                .await
                .expect("partition recovery panicked")?;
        partitions.push(partition);
    }
    Ok(partitions)
}

/// The internal API's port, bound, with its TLS settings and the transport to the other brokers.
struct Listening {
    address: String,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    transport: ClusterTransport,
}

impl Listening {
    async fn bind(config: &BrokerConfig) -> Result<Listening> {
        let address = format!("{}:{}", config.network.host, config.network.port);
        let tls = match &config.tls {
            Some(tls) => {
                Some(transport::rustls_config(tls, "broker.network.tls.certificate").await?)
            }
            None => None,
        };
        let transport = ClusterTransport::new(
            config.cluster.token.clone(),
            config.cluster.ca.as_deref(),
            "broker.cluster.ca",
        )?;
        let listener = transport::bind(&address).map_err(|source| BrokerError::Bind {
            address: address.clone(),
            source,
        })?;
        Ok(Listening {
            address,
            listener,
            tls,
            transport,
        })
    }

    /// Serves `router` until `cancel`, then lets in-flight requests finish for at most
    /// [`SHUTDOWN_GRACE`].
    async fn serve(self, router: axum::Router, cancel: CancellationToken) -> Result<()> {
        transport::serve(self.listener, router, self.tls, cancel, SHUTDOWN_GRACE)
            .await
            .map_err(|source| BrokerError::Bind {
                address: self.address,
                source,
            })
    }
}

/// The management port (`broker.network.managementPort`): `GET /metrics`, no token (the metrics
/// are counts, not money; Prometheus should not hold the cluster token), over the internal
/// port's TLS when it has one.
struct Management {
    address: String,
    listener: std::net::TcpListener,
}

impl Management {
    fn bind(config: &BrokerConfig) -> Result<Management> {
        let address = format!("{}:{}", config.network.host, config.management_port);
        let listener = transport::bind(&address).map_err(|source| BrokerError::Bind {
            address: address.clone(),
            source,
        })?;
        Ok(Management { address, listener })
    }

    async fn serve(
        self,
        registry: Arc<BrokerRegistry>,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
        cancel: CancellationToken,
    ) -> Result<()> {
        transport::serve(
            self.listener,
            management_router(registry),
            tls,
            cancel,
            SHUTDOWN_GRACE,
        )
        .await
        .map_err(|source| BrokerError::Bind {
            address: self.address,
            source,
        })
    }
}

/// The management port's routes: `GET /metrics`, the registry in the Prometheus text format.
pub fn management_router(registry: Arc<BrokerRegistry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { sluice_protocol::metrics::scrape_response(registry.registry()) }
        }),
    )
}

fn topology(config: &BrokerConfig, hosted: Vec<u32>) -> Topology {
    Topology {
        node_id: config.cluster.node_id,
        cluster_size: config.cluster.cluster_size,
        partitions_count: config.cluster.partitions_count,
        partitions: hosted,
        broker_version: crate::BROKER_VERSION.to_string(),
        backup_store: config.data.backup.store.as_str().to_string(),
    }
}

/// One client per broker of the cluster, in node-id order (the outbox senders' targets).
fn broker_clients(config: &BrokerConfig, transport: &ClusterTransport) -> Vec<BrokerClient> {
    config
        .cluster
        .brokers
        .iter()
        .map(|address| {
            BrokerClient::new(transport.clone(), address.clone(), Duration::from_secs(10))
        })
        .collect()
}

/// Learns the highest backup id in the store before the API serves a trigger (see
/// `BackupHandle::check_backup_id`), so that what is learned predates this run's backups; a
/// store that does not answer in time is learned in the background (and by the first trigger,
/// if still unknown).
async fn learn_stored_backup_ids(backups: &BackupHandle, partitions_count: u32) {
    let learn = backups.learn_stored_backup_ids(partitions_count);
    match tokio::time::timeout(Duration::from_secs(30), learn).await {
        Ok(Ok(highest)) => tracing::info!(highest, "learned the highest backup id in the store"),
        _ => {
            let backups = backups.clone();
            tokio::spawn(async move {
                backups
                    .learn_stored_backup_ids_until_done(partitions_count)
                    .await;
            });
        }
    }
}

/// Marks FAILED, in the background, what a previous run of this node left unfinished for the
/// partition up to its recovered latest checkpoint.
fn fail_unfinished_in_background(
    backups: &BackupHandle,
    partition: &PartitionService,
    partitions_count: u32,
) {
    let backups = backups.clone();
    let partition_id = partition.partition_id();
    let latest = partition.latest_checkpoint();
    tokio::spawn(async move {
        backups
            .fail_unfinished(partition_id, latest, partitions_count)
            .await;
    });
}

/// Tasks that are stopped together: one token cancels them all, and [`Stage::stop`] waits for
/// each (each drains before it returns).
#[derive(Default)]
struct Stage {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stage {
    fn spawn<F>(&mut self, run: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(run(self.cancel.clone())));
    }

    async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The broker's running parts, by the order in which they stop.
#[derive(Default)]
struct Stages {
    archivers: Stage,
    senders: Stage,
    partitions: Stage,
    backups: Stage,
}

impl Stages {
    /// Shutdown in order, once the API is closed: archivers stop (an upload in flight is
    /// dropped; its segment is archived again after the next start), senders stop (nothing more leaves this node),
    /// partitions drain (their queued requests are answered), then backups end (unfinished ones
    /// FAILED).
    async fn stop(self) {
        self.archivers.stop().await;
        self.senders.stop().await;
        self.partitions.stop().await;
        self.backups.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use sluice_config::BackupCompression;

    use super::*;

    /// Every remote store takes the request settings of its own section (GCS and Azure used to
    /// get the defaults whatever was configured).
    #[test]
    fn every_remote_store_gets_the_request_settings_of_its_section() {
        for store in ["S3", "GCS", "AZURE"] {
            let section = store.to_ascii_uppercase();
            let env = [
                (
                    "SLUICE_BROKER_DATA_BACKUP_STORE".to_string(),
                    store.to_string(),
                ),
                (
                    format!("SLUICE_BROKER_DATA_BACKUP_{section}_APICALLTIMEOUT"),
                    "7s".into(),
                ),
                (
                    format!("SLUICE_BROKER_DATA_BACKUP_{section}_MAXCONCURRENTCONNECTIONS"),
                    "5".into(),
                ),
                (
                    format!("SLUICE_BROKER_DATA_BACKUP_{section}_COMPRESSION"),
                    "ZSTD".into(),
                ),
            ];
            let config = sluice_config::load_from(None, env).expect("loads");
            let options = store_options(&config.broker.data.backup).expect("a remote store");
            assert_eq!(options.api_call_timeout, Duration::from_secs(7), "{store}");
            assert_eq!(options.connections_concurrent_max, 5, "{store}");
            assert_eq!(options.compression, BackupCompression::Zstd, "{store}");
        }
    }

    /// Each `s3.sse` mode reaches the S3 store with its own keys, and only those.
    #[test]
    fn the_s3_store_gets_the_server_side_encryption_of_the_configuration() {
        let key = "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=";
        let cases: &[(&[(&str, &str)], S3Encryption)] = &[
            (&[], S3Encryption::BucketDefault),
            (&[("SSE", "aes256")], S3Encryption::S3Managed),
            (
                &[("SSE", "KMS"), ("SSEKMSKEYID", "alias/sluice")],
                S3Encryption::Kms {
                    key_id: "alias/sluice".into(),
                    bucket_key: None,
                },
            ),
            (
                &[
                    ("SSE", "KMS"),
                    ("SSEKMSKEYID", "alias/sluice"),
                    ("SSEBUCKETKEY", "true"),
                ],
                S3Encryption::Kms {
                    key_id: "alias/sluice".into(),
                    bucket_key: Some(true),
                },
            ),
            (
                &[("SSE", "DSSE_KMS"), ("SSEKMSKEYID", "alias/sluice")],
                S3Encryption::DsseKms {
                    key_id: "alias/sluice".into(),
                },
            ),
            (
                &[("SSE", "CUSTOMER"), ("SSECUSTOMERKEY", key)],
                S3Encryption::Customer {
                    key_base64: key.into(),
                },
            ),
        ];
        for (settings, expected) in cases {
            let env =
                [("STORE", "S3"), ("S3_BUCKETNAME", "b")]
                    .iter()
                    .map(|(k, v)| (format!("SLUICE_BROKER_DATA_BACKUP_{k}"), v.to_string()))
                    .chain(settings.iter().map(|(k, v)| {
                        (format!("SLUICE_BROKER_DATA_BACKUP_S3_{k}"), v.to_string())
                    }));
            let config = sluice_config::load_from(None, env).expect("loads");
            config.validate_broker().expect("valid");
            let options = store_options(&config.broker.data.backup).expect("an S3 store");
            let StoreKind::S3 {
                server_side_encryption,
                ..
            } = options.kind
            else {
                panic!("not S3: {:?}", options.kind);
            };
            assert_eq!(&server_side_encryption, expected, "{settings:?}");
        }
    }
}
