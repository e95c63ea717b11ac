//! `sluice-bench`: the whole benchmark, phase by phase, on one cluster and one Garage.
//!
//! The cluster: two brokers and a gateway on loopback, two partitions (partition 1 on node 0,
//! partition 2 on node 1), S3 backups to a single-node Garage, 64MB log segments. Partition 1 is
//! grown to the requested state size with deposits to 128-character account ids; a snapshot is
//! taken right after the accounts exist (snapshot period 1s), then the brokers are restarted with a
//! 1h period, so the log written afterwards stays in segments and every backup holds the
//! snapshot plus all of it (and uploads what the pool does not hold yet).
//!
//! Phases, in order (each figure next to its baseline, measured on the same data in this run):
//! 1. trigger latency at the small state (~10 MiB): K triggers, each on a quiet cluster (the
//!    previous backup COMPLETED first);
//! 2. fill to N GiB;
//! 3. backup to S3 (POST → COMPLETED) with the broker's RSS sampled, then `aws s3 cp` of the same
//!    files (hard links) to the same bucket;
//! 4. `bin/restore` of that backup for node 0, then `aws s3 cp` download of the same objects;
//! 5. impact: the same load with no backup and during back-to-back backups, closed loop (max
//!    throughput and its p99), then open loop at half the lower of the two closed-loop
//!    throughputs, a rate both sustain, so its p99 is latency and not a growing queue;
//! 6. trigger latency at N GiB: as at the small state (up to K triggers, each waiting for the
//!    previous backup, within a time budget);
//! 7. filesystem store: the brokers restart with a FILESYSTEM store; backup, then `cp -r` + `sync`
//!    of the same files; restore of node 0 from it, then `cp -r` + `sync` of the partition's
//!    folder of the store;
//! 8. the pool (see [`crate::pool`]): after the full backup of 3, ten backups each after 1% of
//!    the accounts changed (run right after 4); a backup every 10 s under load (after 5); the
//!    1% change with a new snapshot between two backups, on a fresh filesystem store (after 7);
//! 9. encryption: a full backup and its restore to a fresh S3 prefix, plain then encrypted (see
//!    [`crate::encryption`]);
//! 10. continuous backups (after the pool's 10 s phase, see [`crate::continuous`]): the load
//!     without markers, then with the gateway writing a marker every 10 s, and the age of the
//!     newest restore point meanwhile;
//! 11. a standalone node by itself under the same load.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sluice_backup_store::{BackupStore, BackupStoreOptions};
use sluice_tests::{Cluster, ClusterSpec, Endpoints, Garage};

use crate::backups::{self, back_to_back, trigger, wait_completed, BackToBack};
use crate::external::Aws;
use crate::fill;
use crate::loadgen::{self, LoadConfig, LoadReport};
use crate::phases::{memory_rows, trigger_rows};
use crate::report::Row;
use crate::stats::{mb_per_s, opt_ms, secs, size, thousands, Samples};
use crate::sys::{self, RssSampler};

pub(crate) const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
pub(crate) const CLUSTER_SIZE: u32 = 2;
pub(crate) const PARTITIONS: u32 = 2;
/// The partition grown to the state size.
pub(crate) const BIG: u32 = 1;
pub(crate) const BACKUP_POLL: Duration = Duration::from_millis(50);
pub(crate) const RSS_POLL: Duration = Duration::from_millis(10);
/// Log segment size of the cluster unless `--segment-mb` says otherwise.
pub const DEFAULT_SEGMENT_MIB: u64 = 64;
/// Trigger-latency samples taken even when the time budget is spent.
const TRIGGER_SAMPLES_MIN: usize = 5;
/// The binaries the benchmark starts.
const BINARIES: [&str; 4] = [
    "sluice-broker",
    "sluice-gateway",
    "sluice-restore",
    "sluice-standalone",
];

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Size of partition [`BIG`] (log segments + snapshot) for the large-state figures.
    pub state_bytes: u64,
    /// Size for the small-state trigger latency.
    pub small_state_bytes: u64,
    pub quick: bool,
    /// Length of each load phase.
    pub load_duration: Duration,
    /// Triggers per trigger-latency measurement.
    pub trigger_samples: usize,
    /// Time after which a trigger-latency measurement stops taking samples (each sample waits
    /// for a whole backup of the state).
    pub trigger_budget: Duration,
    /// The load of the impact and standalone phases (its URL is set per phase).
    pub load: LoadConfig,
    /// Log segment size of the cluster, MiB: with large segments a backup is a few big files
    /// (memory must not grow with file size), with small ones many files.
    pub segment_mib: u64,
    /// Only the phase of continuous backups (rows 9a and 9b), after growing the state: a
    /// run of a few minutes to work on that figure.
    pub only_continuous: bool,
}

impl BenchConfig {
    pub fn full(state_gib: f64) -> BenchConfig {
        BenchConfig {
            state_bytes: (state_gib * GIB as f64) as u64,
            small_state_bytes: 10 * MIB,
            quick: false,
            load_duration: Duration::from_secs(20),
            trigger_samples: 20,
            trigger_budget: Duration::from_secs(120),
            load: LoadConfig::default(),
            segment_mib: DEFAULT_SEGMENT_MIB,
            only_continuous: false,
        }
    }

    pub fn quick() -> BenchConfig {
        BenchConfig {
            state_bytes: 50 * MIB,
            small_state_bytes: 10 * MIB,
            quick: true,
            load_duration: Duration::from_secs(3),
            trigger_samples: 10,
            trigger_budget: Duration::from_secs(20),
            load: LoadConfig::default(),
            segment_mib: DEFAULT_SEGMENT_MIB,
            only_continuous: false,
        }
    }

    /// A generous bound for moving `bytes` (5 MB/s plus two minutes).
    pub(crate) fn timeout_for(&self, bytes: u64) -> Duration {
        Duration::from_secs(120) + Duration::from_secs_f64(bytes as f64 / 5e6)
    }
}

/// What the benchmark found: the table rows and the notes under it.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("sluice-bench: {text}");
        self.notes.push(text);
    }
}

/// Runs the benchmark; rows and notes land in `report` as they are measured, so a failure
/// still shows what was measured before it. The phases and their order are those of the module
/// documentation; each phase adds its rows and notes.
pub async fn run(config: BenchConfig, report: &mut Report) -> Result<()> {
    check_binaries()?;
    let mut bench = Bench::start(config, report).await?;
    bench.seed().await?;
    if bench.config.only_continuous {
        bench.grow(report).await?;
        bench.continuous_backups(report).await?;
        bench.stop();
        return Ok(());
    }
    let mut small = bench.small_state_triggers(report).await?;
    bench.grow(report).await?;
    let backup = bench.backup_to_s3(report).await?;
    let restore = bench.restore_node_0(&backup, report).await?;
    bench.pool_rounds(&backup.described, report).await?;
    bench.impact(report).await?;
    bench.periodic_backups_impact(report).await?;
    bench.continuous_backups(report).await?;
    let mut large = bench.large_state_triggers(report).await?;
    report.rows.extend(trigger_rows(&mut large, &mut small));
    memory_rows(&backup, &restore, report);
    bench.encryption_cost(report).await?;
    bench.filesystem_backup(large.state_bytes, report).await?;
    bench.pool_after_new_snapshot(report).await?;
    bench.stop();
    bench.standalone(report).await
}

/// Fails, saying how to build them, unless every binary the benchmark starts is there.
fn check_binaries() -> Result<()> {
    for name in BINARIES {
        let path = sluice_tests::bin_dir().join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace --bins` (`cargo run --release -p sluice-bench` does)",
                path.display()
            );
        }
    }
    Ok(())
}

pub(crate) fn phase(name: &str) {
    eprintln!("sluice-bench: ---- {name}");
}

/// The state of a run: Garage, the cluster's settings and processes, the clients.
pub(crate) struct Bench {
    pub(crate) config: BenchConfig,
    // Field order is drop order: processes first, then their directories, then Garage.
    pub(crate) cluster: Option<Cluster>,
    pub(crate) spec: ClusterSpec,
    garage: Option<Garage>,
    pub(crate) ep: Endpoints,
    pub(crate) client: reqwest::Client,
    /// The backup store on Garage, to read what backups wrote.
    pub(crate) s3: BackupStore,
    pub(crate) bucket: String,
    /// The baseline tool, or why there is none.
    pub(crate) aws: std::result::Result<Aws, String>,
    pub(crate) next_id: u64,
    pub(crate) fill_accounts: Vec<String>,
}

impl Bench {
    /// Starts Garage, finds the baseline tool, and sets up (without starting) the cluster: 2
    /// brokers, 2 partitions, S3 on Garage, the configured segment size, a 1 s snapshot period.
    async fn start(config: BenchConfig, report: &mut Report) -> Result<Bench> {
        phase("starting Garage");
        let garage = tokio::task::spawn_blocking(Garage::start)
            .await
            .map_err(|e| anyhow!("starting Garage failed: {e}"))?;
        let s3_settings = garage.s3();
        let s3 = BackupStore::open(BackupStoreOptions::new(s3_settings.store_kind(), None))?;
        let aws = Aws::find(&s3_settings).await;
        match &aws {
            Ok(aws) => report.note(format!("baseline tool: {} (default settings)", aws.version)),
            Err(why) => report.note(format!("no S3 baselines: {why}")),
        }
        let spec = ClusterSpec::new(CLUSTER_SIZE, PARTITIONS)
            .with_env(&garage.env())
            .with(
                "SLUICE_BROKER_DATA_LOGSEGMENTSIZE",
                &format!("{}MB", config.segment_mib),
            )
            .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", "1s");
        report.note(format!(
            "cluster: {CLUSTER_SIZE} brokers + gateway, {PARTITIONS} partitions (partition {BIG} grown, on node 0), {}MB segments, S3 store on Garage; data under {}",
            config.segment_mib,
            spec.root().display()
        ));
        Ok(Bench {
            config,
            cluster: None,
            ep: spec.endpoints(),
            spec,
            garage: Some(garage),
            client: loadgen::http_client(16),
            s3,
            bucket: s3_settings.bucket,
            aws,
            next_id: 1,
            fill_accounts: fill::fill_accounts(),
        })
    }

    /// Stops the cluster (each process must exit successfully) and Garage.
    fn stop(&mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
        }
        drop(self.garage.take());
    }

    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("the cluster runs")
    }

    pub(crate) fn broker_pid(&self, node: usize) -> Result<u32> {
        self.cluster()
            .brokers
            .get(node)
            .and_then(sluice_tests::Proc::pid)
            .ok_or_else(|| anyhow!("broker {node} does not run"))
    }

    pub(crate) fn partition_dir(&self, partition: u32) -> PathBuf {
        backups::partition_dir(&self.spec, partition)
    }

    /// The interval of the periodic phases (a backup, or a marker, every interval under load):
    /// 10 s, or 1 s in quick mode.
    pub(crate) fn periodic_interval(&self) -> Duration {
        if self.config.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds the cluster's log tails to an error, after its own message (which stays first).
    pub(crate) fn with_logs(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.cluster {
            Some(cluster) => anyhow!("{error:#}\n---- cluster logs ----\n{}", cluster.logs()),
            None => error,
        }
    }

    /// Stops the cluster if it runs and starts it with the spec's current settings, giving each
    /// broker up to `timeout` (recovery may replay a long log); returns how long the start took.
    pub(crate) async fn restart(&mut self, timeout: Duration) -> Result<Duration> {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
        }
        let started = Instant::now();
        self.cluster = Some(self.spec.start_within(timeout).await);
        Ok(started.elapsed())
    }

    /// Deposits to the fill accounts until partition [`BIG`] holds `target` bytes.
    pub(crate) async fn fill(&self, target: u64, report: &mut Report) -> Result<()> {
        let filled = fill::fill(
            &self.client,
            &self.ep.api,
            &self.fill_accounts,
            &self.partition_dir(BIG),
            target,
        )
        .await
        .map_err(|e| self.with_logs(e.context("filling the partition")))?;
        let Some(filled) = filled else {
            return Ok(());
        };
        let fill::Filled {
            grown_bytes: grown,
            commands,
            elapsed,
        } = filled;
        report.note(format!(
            "fill to {}: {} of log in {} ({:.1} MB/s, {} deposits/s through /v1/commands, {} B per record)",
            size(target),
            size(grown),
            secs(elapsed),
            mb_per_s(grown, elapsed),
            thousands((commands as f64 / elapsed.as_secs_f64()) as u64),
            grown / commands.max(1)
        ));
        Ok(())
    }

    /// One backup on a cluster that runs: trigger, wait until COMPLETED (for at most
    /// `timeout`). Returns how long the POST took and how long until COMPLETED.
    pub(crate) async fn backup(&self, id: u64, timeout: Duration) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        let latency = trigger(&self.client, &self.ep.mgmt, id)
            .await
            .map_err(|e| self.with_logs(e))?;
        wait_completed(&self.client, &self.ep.mgmt, id, timeout, BACKUP_POLL)
            .await
            .map_err(|e| self.with_logs(e))?;
        Ok((latency, started.elapsed()))
    }

    /// Up to `k` triggers, each on a quiet cluster: trigger, record how long the POST took, wait
    /// until that backup is COMPLETED (not counted), then the next. Stops early, after at least
    /// [`TRIGGER_SAMPLES_MIN`], once `budget` is spent (each backup uploads the whole state).
    /// Returns the trigger latencies and how long the backups took.
    pub(crate) async fn trigger_series(
        &mut self,
        k: usize,
        budget: Duration,
    ) -> Result<(Samples, Samples)> {
        let started = Instant::now();
        let state = sys::tree_size(&self.partition_dir(BIG));
        let mut triggers = Samples::new();
        let mut backups = Samples::new();
        for n in 0..k {
            if n >= TRIGGER_SAMPLES_MIN && started.elapsed() > budget {
                break;
            }
            let id = self.next_id();
            let (latency, until_completed) =
                self.backup(id, self.config.timeout_for(state)).await?;
            triggers.record(latency, 1);
            backups.record(until_completed, 1);
        }
        Ok((triggers, backups))
    }

    pub(crate) fn load_config(&self, label: &str, api: &str) -> LoadConfig {
        LoadConfig {
            url: api.to_string(),
            duration: self.config.load_duration,
            progress: Some(label.to_string()),
            ..self.config.load.clone()
        }
    }

    /// Runs `config`'s load; fails (with the cluster's logs) when it found a problem.
    pub(crate) async fn load(&self, config: LoadConfig, report: &mut Report) -> Result<LoadReport> {
        let label = config.progress.clone().unwrap_or_default();
        let mut result = loadgen::run(config).await?;
        if let Some(problem) = result.problem() {
            return Err(self.with_logs(anyhow!("load {label}: {problem}")));
        }
        report.note(format!(
            "load {label}: {} cmd/s, p50 {}, p99 {}, {} commands, ledger conserved",
            thousands(result.throughput() as u64),
            opt_ms(result.p(0.5)),
            opt_ms(result.p(0.99)),
            thousands(result.ok)
        ));
        Ok(result)
    }

    /// Load with back-to-back backups; returns the load, the backups and broker 0's RSS growth.
    pub(crate) async fn load_during_backups(
        &mut self,
        config: LoadConfig,
        report: &mut Report,
    ) -> Result<(LoadReport, BackToBack, u64)> {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_before = sys::rss(self.broker_pid(0)?).unwrap_or(0);
        let sampler = RssSampler::start(self.broker_pid(0)?, RSS_POLL);
        let driver = tokio::spawn(back_to_back(
            self.client.clone(),
            self.ep.mgmt.clone(),
            self.next_id,
            stop.clone(),
            self.config.timeout_for(self.config.state_bytes * 2),
        ));
        let load = self.load(config, report).await;
        stop.store(true, Ordering::Relaxed);
        let backups = driver
            .await
            .context("the backup driver panicked")?
            .map_err(|e| self.with_logs(e.context("back-to-back backups")))?;
        let (peak, _) = sampler.finish();
        self.next_id = backups.next_id;
        Ok((load?, backups, peak.saturating_sub(rss_before)))
    }
}
