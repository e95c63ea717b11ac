//! The gateway process: the client API and the actuator API, each on its own port (HTTPS on both
//! when `gateway.tls.*` is set), each with its optional bearer token, and the backup scheduler
//! when `gateway.backup.schedule` is set.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sluice_config::{ConfigError, GatewayConfig};
use sluice_protocol::transport::{self, ClusterTransport};
use sluice_protocol::ProtocolError;
use tokio_util::sync::CancellationToken;

use crate::auth::{require_token, RequiredToken};
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::schedule::{
    BackupScheduler, IdClock, Retention, Schedule, ScheduleHandle, ScheduleOptions,
    MARKER_RETENTION_PERIOD,
};
use sluice_ledger::record::CheckpointKind;

/// How long in-flight requests may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct GatewayService {
    config: GatewayConfig,
    schedule: Option<ScheduleOptions>,
    /// Continuous backups: a marker every `gateway.backup.checkpointInterval`.
    markers: Option<ScheduleOptions>,
}

impl GatewayService {
    /// Checks what only the gateway can check (the schedule's syntax) and refuses an invalid
    /// value naming its key.
    pub fn new(config: &GatewayConfig) -> Result<GatewayService, GatewayError> {
        let backup = &config.backup;
        let schedule = match &backup.schedule {
            None => None,
            Some(text) => Some(ScheduleOptions {
                schedule: Schedule::parse(text).map_err(|reason| {
                    ConfigError::invalid("gateway.backup.schedule", text, reason.to_string())
                })?,
                kind: CheckpointKind::Backup,
                retention: Retention {
                    keep_last: backup.keep_last,
                    keep_within: backup.keep_within,
                },
                retention_period: Duration::ZERO,
            }),
        };
        let markers = backup.checkpoint_interval.map(|interval| ScheduleOptions {
            schedule: Schedule::Interval(interval),
            kind: CheckpointKind::Marker,
            retention: Retention {
                keep_last: None,
                keep_within: Some(backup.markers_keep_within),
            },
            retention_period: MARKER_RETENTION_PERIOD,
        });
        if schedule.is_none() && (backup.keep_last.is_some() || backup.keep_within.is_some()) {
            tracing::warn!("gateway.backup.retention is set but gateway.backup.schedule is not: retention only runs after scheduled backups");
        }
        Ok(GatewayService {
            config: config.clone(),
            schedule,
            markers,
        })
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<(), GatewayError> {
        let config = &self.config;
        let transport = ClusterTransport::new(
            config.cluster.token.clone(),
            config.cluster.ca.as_deref(),
            "gateway.cluster.ca",
        )
        .map_err(tls_error)?;
        let cluster = Arc::new(Cluster::new(
            &config.cluster.brokers,
            config.cluster.request_timeout,
            transport,
        ));
        let ids = IdClock::default();
        let (scheduler, mut schedule_handle) = match self.schedule.clone() {
            Some(options) => {
                let (scheduler, handle) =
                    BackupScheduler::new(options, cluster.clone(), ids.clone());
                (Some(scheduler), handle)
            }
            None => (None, ScheduleHandle::default()),
        };
        let marker_scheduler = self.markers.clone().map(|options| {
            let (scheduler, handle) = BackupScheduler::new(options, cluster.clone(), ids.clone());
            schedule_handle = schedule_handle.clone().with_markers(&handle);
            scheduler
        });
        let client_address = format!("{}:{}", config.network.host, config.network.port);
        let management_address = format!("{}:{}", config.management.host, config.management.port);

        let metrics = GatewayMetrics::new();
        let client_router = metrics.requests().layer(with_token(
            crate::client_api::router(cluster.clone()),
            config.client_token.as_ref(),
            "gateway.network.token",
        ));
        let management_router = metrics.requests().layer(with_token(
            crate::actuator::router(cluster.clone(), schedule_handle.clone()),
            config.management.token.as_ref(),
            "gateway.management.token",
        ));
        let management_router = management_router.layer(axum::Extension(metrics));

        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(
                transport::rustls_config(tls, "gateway.tls.certificate")
                    .await
                    .map_err(tls_error)?,
            ),
        };
        let client_listener = bind(&client_address)?;
        let management_listener = bind(&management_address)?;
        tracing::info!(client = %client_address, management = %management_address,
            brokers = ?config.cluster.brokers, tls = tls.is_some(),
            client_token = config.client_token.is_some(),
            management_token = config.management.token.is_some(),
            schedule = self.schedule.as_ref().map(|s| s.schedule.describe()),
            "gateway ready");

        let scheduler = scheduler.map(|scheduler| tokio::spawn(scheduler.run(cancel.clone())));
        let marker_scheduler =
            marker_scheduler.map(|scheduler| tokio::spawn(scheduler.run(cancel.clone())));
        let client = serve(
            client_listener,
            client_router,
            tls.clone(),
            cancel.clone(),
            &client_address,
        );
        let management = serve(
            management_listener,
            management_router,
            tls,
            cancel.clone(),
            &management_address,
        );
        let (client, management) = tokio::join!(client, management);
        // Both servers end only on cancellation (or an error): stop the scheduler too.
        cancel.cancel();
        if let Some(scheduler) = marker_scheduler {
            let _ = scheduler.await;
        }
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        client?;
        management?;
        Ok(())
    }
}

fn with_token(router: Router, token: Option<&sluice_config::Secret>, key: &'static str) -> Router {
    match token {
        None => router,
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            RequiredToken {
                token: Arc::new(token.clone()),
                key,
            },
            require_token,
        )),
    }
}

fn bind(address: &str) -> Result<std::net::TcpListener, GatewayError> {
    transport::bind(address).map_err(|source| GatewayError::Bind {
        address: address.to_string(),
        source,
    })
}

/// A TLS setting that cannot be loaded, as the configuration error it is.
fn tls_error(error: ProtocolError) -> GatewayError {
    match error {
        ProtocolError::Tls { key, path, reason } => GatewayError::Config(ConfigError::invalid(
            key,
            &path.display().to_string(),
            reason,
        )),
        other => GatewayError::Internal(other.to_string()),
    }
}

/// Serves `router` on `listener` until `cancel`, then lets in-flight requests finish for at
/// most [`SHUTDOWN_GRACE`].
async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    cancel: CancellationToken,
    address: &str,
) -> Result<(), GatewayError> {
    transport::serve(listener, router, tls, cancel, SHUTDOWN_GRACE)
        .await
        .map_err(|source| GatewayError::Bind {
            address: address.to_string(),
            source,
        })
}
