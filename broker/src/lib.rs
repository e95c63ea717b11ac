//! The Sluice broker: per partition a segmented log, a deterministic ledger processor and its
//! snapshots; checkpoints and the asynchronous backup of each partition; the internal HTTP API
//! the gateway talks to. See ARCHITECTURE.md for the invariants.

pub mod api;
pub mod backup;
pub mod backup_id;
pub mod client;
pub mod error;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod partition;
pub mod protocol;
pub mod rejection;
pub mod retry;
pub mod service;
pub mod snapshot;
pub mod transport;

pub use error::{BrokerError, Result};
/// The deterministic ledger (records, state, routing) lives in its own crate, `sluice-ledger`,
/// so that nothing non-deterministic can be linked into it; re-exported under the old paths.
pub use sluice_ledger::{record, routing, state};

/// Written into every backup manifest.
pub const BROKER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the tracing subscriber used by every Sluice binary: `RUST_LOG` or `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
