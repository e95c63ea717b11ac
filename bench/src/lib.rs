//! Benchmarks of Sluice, on the real release binaries, a real Garage S3 server and a real cluster
//! on loopback, each figure printed next to a baseline measured in the same run on the same data.
//!
//! Two binaries:
//! - `sluice-bench` ([`run`]): the whole benchmark, one table (see BENCHMARKS.md);
//! - `sluice-loadgen` ([`loadgen`]): a load generator usable on its own against any gateway.
//!
//! Processes are started with the end-to-end harness of `sluice-tests` (free loopback ports,
//! temporary directories, bounded waits, every process killed when its handle is dropped, also on
//! a panic); `sluice-bench` also drops everything on Ctrl-C / SIGTERM.

pub mod args;
mod backups;
mod continuous;
mod encryption;
pub mod external;
mod fill;
pub mod loadgen;
mod phases;
mod pool;
pub mod report;
pub mod run;
pub mod stats;
pub mod sys;
