//! `sluice-gateway`: the client API and the actuator API in front of the brokers.

use anyhow::Context;
use sluice_gateway::service::GatewayService;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_protocol::process::init_tracing();
    let config = sluice_config::load().context("cannot start the gateway")?;
    config
        .validate_gateway()
        .context("cannot start the gateway")?;
    let service = GatewayService::new(&config.gateway).context("cannot start the gateway")?;
    let cancel = CancellationToken::new();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        sluice_protocol::process::shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal_cancel.cancel();
    });
    service
        .run(cancel)
        .await
        .context("the gateway stopped with an error")
}
