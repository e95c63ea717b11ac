//! The deterministic ledger of Sluice: what a log record holds ([`record`]), the state a
//! partition computes from its records and the processor that computes it ([`state`]), and the
//! placement rules that are part of the on-disk contract ([`routing`]).
//!
//! Invariant: replaying the same records gives the same state and the same outcomes on any
//! machine. Enforced by structure and lint, not by prose alone: this crate links no async
//! runtime, no randomness and no I/O crate (see Cargo.toml), and `ledger/clippy.toml` refuses
//! clocks, the environment, files, processes and randomly ordered hash maps.

pub mod record;
pub mod routing;
pub mod state;
