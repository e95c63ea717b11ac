//! `sluice-standalone`: one broker with the embedded gateway, for trying Sluice out.
//!
//! Configured like every binary; run from the repository root it reads `config/application.yaml`,
//! which keeps data under `data/broker` and backups under `data/backups`.

use anyhow::Context;
use sluice_broker::service::BrokerService;
use sluice_config::BackupStoreKind;
use sluice_gateway::service::GatewayService;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_broker::init_tracing();
    let config = sluice_config::load().context("cannot start standalone Sluice")?;
    config
        .validate_broker()
        .context("cannot start standalone Sluice")?;
    config
        .validate_gateway()
        .context("cannot start standalone Sluice")?;
    if config.broker.data.backup.store == BackupStoreKind::Filesystem {
        tracing::warn!(
            base_path = ?config.broker.data.backup.filesystem.base_path,
            "backups go to a directory on the same disk as the data: fine for trying Sluice out, not a backup; use S3 in production"
        );
    }
    let gateway_service =
        GatewayService::new(&config.gateway).context("cannot start standalone Sluice")?;
    let cancel = CancellationToken::new();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        sluice_broker::shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal_cancel.cancel();
    });
    let broker = BrokerService::new(config.broker.clone()).run(cancel.clone());
    let gateway = gateway_service.run(cancel.clone());
    let (broker, gateway) = tokio::join!(
        async {
            let result = broker.await;
            cancel.cancel();
            result
        },
        async {
            let result = gateway.await;
            cancel.cancel();
            result
        }
    );
    broker.context("the broker stopped with an error")?;
    gateway.context("the gateway stopped with an error")?;
    Ok(())
}
