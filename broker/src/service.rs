//! The broker process: partitions of this node, the backup service and the internal API, wired
//! together. `BrokerService::new(config)` → `run(cancel)`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_config::{BackupConfig, BackupStoreKind, BrokerConfig, StoreRequestConfig};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::backup::{BackupOptions, BackupService};
use crate::client::BrokerClient;
use crate::error::{BrokerError, Result};
use crate::metrics::{BackupMetrics, RestoreReport};
use crate::outbox::{OutboxOptions, OutboxSender};
use crate::partition::{partition_directory, PartitionOptions, PartitionService};
use crate::protocol::Topology;
use crate::routing::partitions_for_node;
use crate::transport::{self, ClusterTransport};

/// How long in-flight internal requests may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A store's options with the request settings of its section (timeout, connections, compression).
fn with_requests(options: BackupStoreOptions, requests: &StoreRequestConfig) -> BackupStoreOptions {
    BackupStoreOptions {
        api_call_timeout: requests.api_call_timeout,
        max_concurrent_connections: requests.max_concurrent_connections,
        compression: requests.compression,
        ..options
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

/// Opens the configured backup store and checks that it answers: a store that cannot be
/// reached, or whose bucket or container does not exist, is refused with a message naming the
/// setting to fix.
pub async fn open_store(config: &BackupConfig) -> Result<Option<BackupStore>> {
    let Some(options) = store_options(config) else {
        return Ok(None);
    };
    let store = BackupStore::open(options)?;
    store.check_reachable().await?;
    tracing::info!(
        store = store.description(),
        base_path = store.base_path().unwrap_or("/"),
        compression = ?store.compression(),
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

pub struct BrokerService {
    config: BrokerConfig,
}

impl BrokerService {
    pub fn new(config: BrokerConfig) -> BrokerService {
        BrokerService { config }
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let config = self.config;
        let cluster = &config.cluster;
        refuse_unfinished_restore(&config.data.directory)?;
        let store = open_store(&config.data.backup).await?;
        let metrics = BackupMetrics::new();
        let restore = match RestoreReport::read(&config.data.directory) {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "ignoring the restore report: no restore metrics");
                None
            }
        };
        if let Some(report) = &restore {
            tracing::info!(
                backup = report.backup_id,
                finished_at = %report.finished_at,
                "the data directory was restored from a backup"
            );
        }
        let (backup_service, backup_handle) = match store {
            Some(store) => {
                let (service, handle) = BackupService::with_metrics(
                    store,
                    BackupOptions {
                        node_id: cluster.node_id,
                        max_concurrent_uploads: config.data.backup.max_concurrent_uploads,
                        upload_rate_limit_bytes_per_second: config
                            .data
                            .backup
                            .upload_rate_limit_bytes_per_second,
                        queue_capacity: 256,
                        store_call_timeout: Duration::from_secs(120),
                    },
                    metrics.clone(),
                );
                (Some(service), Some(handle))
            }
            None => (None, None),
        };

        let hosted = partitions_for_node(
            cluster.node_id,
            cluster.cluster_size,
            cluster.partitions_count,
        );
        let mut services = Vec::new();
        let mut handles = BTreeMap::new();
        for partition_id in &hosted {
            let options = PartitionOptions {
                partition_id: *partition_id,
                partitions_count: cluster.partitions_count,
                node_id: cluster.node_id,
                directory: partition_directory(&config.data.directory, *partition_id),
                segment_bytes_max: config.data.log_segment_size_bytes,
                snapshot_period: config.data.snapshot_period,
                request_queue_capacity: 1024,
                batch_commands_max: 8192,
            };
            let backups = backup_handle.clone();
            let (service, handle) =
                tokio::task::spawn_blocking(move || PartitionService::open(options, backups))
                    .await
                    .expect("partition recovery panicked")?;
            services.push(service);
            handles.insert(*partition_id, handle);
        }

        let address = format!("{}:{}", config.network.host, config.network.port);
        let tls = match &config.tls {
            Some(tls) => {
                Some(transport::rustls_config(tls, "broker.network.tls.certificate").await?)
            }
            None => None,
        };
        let transport = ClusterTransport::new(
            cluster.token.clone(),
            cluster.ca.as_deref(),
            "broker.cluster.ca",
        )?;
        let listener = transport::bind(&address).map_err(|source| BrokerError::Bind {
            address: address.clone(),
            source,
        })?;

        let backup_cancel = CancellationToken::new();
        let partitions_cancel = CancellationToken::new();
        let senders_cancel = CancellationToken::new();
        let brokers: Vec<BrokerClient> = cluster
            .brokers
            .iter()
            .map(|address| {
                BrokerClient::new(transport.clone(), address.clone(), Duration::from_secs(10))
            })
            .collect();
        let mut sender_tasks = Vec::new();
        for handle in handles.values() {
            let sender = OutboxSender::new(
                OutboxOptions {
                    cluster_size: cluster.cluster_size,
                    ..OutboxOptions::default()
                },
                handle.clone(),
                brokers.clone(),
            );
            sender_tasks.push(tokio::spawn(sender.run(senders_cancel.clone())));
        }
        let backup_task =
            backup_service.map(|service| tokio::spawn(service.run(backup_cancel.clone())));
        if let Some(backups) = &backup_handle {
            // Before the API serves a trigger (see `BackupHandle::check_backup_id`), so that
            // what is learned predates this run's backups; a store that does not answer in time
            // is learned in the background (and by the first trigger, if still unknown).
            let partitions_count = cluster.partitions_count;
            let learn = backups.learn_stored_backup_ids(partitions_count);
            match tokio::time::timeout(Duration::from_secs(30), learn).await {
                Ok(Ok(highest)) => {
                    tracing::info!(highest, "learned the highest backup id in the store")
                }
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
        let mut partition_tasks = Vec::new();
        for service in services {
            if let Some(backups) = &backup_handle {
                let backups = backups.clone();
                let partition_id = service.partition_id();
                let latest = service.latest_checkpoint();
                let partitions_count = cluster.partitions_count;
                tokio::spawn(async move {
                    backups
                        .fail_unfinished(partition_id, latest, partitions_count)
                        .await;
                });
            }
            partition_tasks.push(tokio::spawn(service.run(partitions_cancel.clone())));
        }

        let state = Arc::new(ApiState {
            topology: Topology {
                node_id: cluster.node_id,
                cluster_size: cluster.cluster_size,
                partitions_count: cluster.partitions_count,
                partitions: hosted.clone(),
                broker_version: crate::BROKER_VERSION.to_string(),
                backup_store: config.data.backup.store.as_str().to_string(),
            },
            partitions: handles,
            backups: backup_handle,
            metrics,
            restore,
        });
        tracing::info!(node = cluster.node_id, %address, partitions = ?hosted,
            backup_store = config.data.backup.store.as_str(),
            tls = tls.is_some(), cluster_token = cluster.token.is_some(), "broker ready");
        let router = transport::with_cluster_token(api::router(state), cluster.token.as_ref());
        let served = transport::serve(listener, router, tls, cancel.clone(), SHUTDOWN_GRACE).await;

        // Shutdown in order: the API is closed; senders stop; partitions drain; then backups end.
        senders_cancel.cancel();
        for task in sender_tasks {
            let _ = task.await;
        }
        partitions_cancel.cancel();
        for task in partition_tasks {
            let _ = task.await;
        }
        backup_cancel.cancel();
        if let Some(task) = backup_task {
            let _ = task.await;
        }
        served.map_err(|source| BrokerError::Bind { address, source })
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
            assert_eq!(options.max_concurrent_connections, 5, "{store}");
            assert_eq!(options.compression, BackupCompression::Zstd, "{store}");
        }
    }
}
