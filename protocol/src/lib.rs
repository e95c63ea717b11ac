//! What the Sluice processes share to talk to each other, and nothing of the broker's storage:
//! the internal API's wire types ([`wire`]), its client ([`client`]), how HTTP is authenticated
//! and served ([`transport`]), JSON error bodies for framework rejections ([`rejection`]), the
//! backup id grammar ([`backup_id`]), the one retry policy ([`retry`]), process start-up
//! ([`process`]) and what every Prometheus endpoint shares ([`metrics`]). The gateway depends on
//! this crate and the ledger, not on the broker.

pub mod backup_id;
pub mod client;
mod error;
pub mod metrics;
pub mod process;
pub mod rejection;
pub mod retry;
pub mod transport;
pub mod wire;

pub use error::ProtocolError;
