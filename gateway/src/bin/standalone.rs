//! `sluice-standalone`: one broker with the embedded gateway, for trying Sluice out.
//!
//! Unless the environment says otherwise it uses a filesystem backup store under
//! `data/backups` (`SLUICE_BROKER_DATA_BACKUP_STORE`, `SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH`).

use anyhow::Context;
use sluice_broker::service::BrokerService;
use sluice_config::BackupStoreKind;
use sluice_gateway::service::GatewayService;
use tokio_util::sync::CancellationToken;

const STANDALONE_DEFAULTS: &[(&str, &str)] = &[
    ("SLUICE_BROKER_DATA_BACKUP_STORE", "FILESYSTEM"),
    ("SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH", "data/backups"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_broker::init_tracing();
    let file = std::env::var_os("SLUICE_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let default = std::path::PathBuf::from("config/application.yaml");
            default.exists().then_some(default)
        });
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    for (key, value) in STANDALONE_DEFAULTS {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.to_string(), value.to_string()));
        }
    }
    let config = sluice_config::load_from(file.as_deref(), env).context("cannot start standalone Sluice")?;
    config.validate_broker().context("cannot start standalone Sluice")?;
    config.validate_gateway().context("cannot start standalone Sluice")?;
    if config.broker.data.backup.store == BackupStoreKind::Filesystem {
        tracing::warn!(
            base_path = ?config.broker.data.backup.filesystem.base_path,
            "backups go to a directory on the same disk as the data: fine for trying Sluice out, not a backup; use S3 in production"
        );
    }
    let cancel = CancellationToken::new();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        sluice_broker::shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal_cancel.cancel();
    });
    let broker = BrokerService::new(config.broker.clone()).run(cancel.clone());
    let gateway = GatewayService::new(&config.gateway).run(cancel.clone());
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
