//! Harness of the end-to-end tests: starts the real Sluice binaries (built beforehand with
//! `cargo build --release --workspace --bins`) and a real S3 server (Garage), each in its own
//! temporary directory, on free loopback ports, and talks to them over HTTP.
//!
//! Every process is killed when its handle is dropped, also when a test panics. Every wait is
//! bounded; a failed wait panics with the tail of the process's log.

mod certs;
mod cluster;
mod emulator;
mod files;
mod garage;
mod http;
mod load;
mod paths;
mod process;

use std::collections::BTreeMap;

pub use certs::{https_client, make_certificates};
pub use cluster::{BrokerSpec, Cluster, ClusterSpec, Endpoints};
pub use emulator::Emulator;
pub use files::{copy_dir, dir_fingerprint, dir_size, find_files, FingerprintEntry};
pub use garage::{Garage, S3Settings};
pub use http::{
    backup_status, balance, balances, commands, deposit, deposit_all, get, http_client,
    ledger_total, mentions_number, message, poll_backup, post, take_backup,
};
pub use load::{balance_sum, drained_ledger, transfer_load, LoadStats};
pub use paths::{bin, bin_dir, free_port, launcher, workspace_root};
pub use process::{
    clean_command, describe, run_program_in, run_restore, run_restore_in, tail, Proc,
    READY_TIMEOUT, STOP_TIMEOUT,
};

/// Environment of a process: `SLUICE_*` settings and the like.
pub type Env = BTreeMap<String, String>;
