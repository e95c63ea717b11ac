//! The Sluice broker: per partition a segmented log, a deterministic ledger processor and its
//! snapshots; checkpoints and the asynchronous backup of each partition; the internal HTTP API
//! the gateway talks to. See ARCHITECTURE.md for the invariants.
//!
//! `pub` is what other crates use (the restore tool, the CLI, the tests, the benchmark, this
//! crate's binaries); the rest is `pub(crate)`.

pub mod api;
pub mod archive;
pub mod background;
pub mod backup;
pub mod error;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod partition;
pub(crate) mod pool;
pub mod service;
pub mod snapshot;

pub use error::BrokerError;
pub(crate) use error::Result;
/// The deterministic ledger (records, state, routing) lives in its own crate, `sluice-ledger`,
/// so that nothing non-deterministic can be linked into it; re-exported under the old paths.
pub use sluice_ledger::{record, routing, state};
/// What the broker shares with the gateway and the CLI (wire types, client, transport, backup id
/// grammar, retry policy, error bodies) lives in `sluice-protocol`; re-exported under the old paths.
pub use sluice_protocol::process::{init_tracing, shutdown_signal};
pub use sluice_protocol::{backup_id, client, transport, wire as protocol};
pub(crate) use sluice_protocol::{rejection, retry};

#[cfg(test)]
mod rejection_tests;

/// Written into every backup manifest.
pub(crate) const BROKER_VERSION: &str = env!("CARGO_PKG_VERSION");
