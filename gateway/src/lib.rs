//! The Sluice gateway: the client API (accounts, transfers, ledger, command batches) and the
//! actuator API (backups, health). It holds no state of its own beyond the routing table it
//! learns from the brokers.

pub mod actuator;
pub mod auth;
pub mod client_api;
pub mod cluster;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod rejection;
pub mod restore_points;
pub mod schedule;
pub mod service;

pub use error::GatewayError;
