//! The gateway process: the client API and the actuator API, each on its own port.

use std::sync::Arc;
use std::time::Duration;

use sluice_config::GatewayConfig;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::error::GatewayError;

pub struct GatewayService {
    brokers: Vec<String>,
    request_timeout: Duration,
    client_address: String,
    management_address: String,
}

impl GatewayService {
    pub fn new(config: &GatewayConfig) -> GatewayService {
        GatewayService {
            brokers: config.cluster.brokers.clone(),
            request_timeout: config.cluster.request_timeout,
            client_address: format!("{}:{}", config.network.host, config.network.port),
            management_address: format!("{}:{}", config.management.host, config.management.port),
        }
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<(), GatewayError> {
        let cluster = Arc::new(Cluster::new(&self.brokers, self.request_timeout));
        let bind = |address: String| async move {
            tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|source| GatewayError::Bind { address, source })
        };
        let client_listener = bind(self.client_address.clone()).await?;
        let management_listener = bind(self.management_address.clone()).await?;
        tracing::info!(client = %self.client_address, management = %self.management_address,
            brokers = ?self.brokers, "gateway ready");
        let client = axum::serve(client_listener, crate::client_api::router(cluster.clone()))
            .with_graceful_shutdown(cancel.clone().cancelled_owned());
        let management = axum::serve(management_listener, crate::actuator::router(cluster))
            .with_graceful_shutdown(cancel.clone().cancelled_owned());
        let (client, management) = tokio::join!(client, management);
        client.map_err(|source| GatewayError::Bind {
            address: self.client_address,
            source,
        })?;
        management.map_err(|source| GatewayError::Bind {
            address: self.management_address,
            source,
        })?;
        Ok(())
    }
}
