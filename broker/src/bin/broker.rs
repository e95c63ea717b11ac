//! `sluice-broker`: one broker node, configured by `config/application.yaml` / `SLUICE_CONFIG`
//! and `SLUICE_*` environment variables.

use anyhow::Context;
use sluice_broker::service::BrokerService;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_broker::init_tracing();
    let config = sluice_config::load().context("cannot start the broker")?;
    config
        .validate_broker()
        .context("cannot start the broker")?;
    let cancel = CancellationToken::new();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        sluice_broker::shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal_cancel.cancel();
    });
    BrokerService::new(config.broker)
        .run(cancel)
        .await
        .context("the broker stopped with an error")
}
