//! `sluice-bench`: the whole benchmark, phase by phase, on one cluster and one Garage.
//!
//! The cluster: two brokers and a gateway on loopback, two partitions (partition 1 on node 0,
//! partition 2 on node 1), S3 backups to a single-node Garage, 64MB log segments. Partition 1 is
//! grown to the requested state size with deposits to 128-character account ids; a snapshot is
//! taken right after the accounts exist (snapshot period 1s), then the brokers are restarted with a
//! 1h period, so the log written afterwards stays in segments and every backup uploads the
//! snapshot plus all of it.
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
//!    of the same files;
//! 8. a standalone node by itself under the same load.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sluice_backup_store::{
    BackupStatus, BackupStore, BackupStoreOptions, FileKind, Manifest, StoreKind,
};
use sluice_broker::routing::{node_for_partition, partition_for_account};
use sluice_tests::{ClusterSpec, Endpoints, Env, Garage, Proc};

use crate::external::{self, Aws};
use crate::loadgen::{self, LoadConfig, LoadReport, Rng};
use crate::report::{Met, Row};
use crate::stats::{mb_per_s, ms, opt_ms, secs, size, thousands, Samples};
use crate::sys::{self, RssSampler};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const CLUSTER_SIZE: u32 = 2;
const PARTITIONS: u32 = 2;
/// The partition grown to the state size.
const BIG: u32 = 1;
/// Accounts of the fill (128-character ids, all on partition [`BIG`]).
const FILL_ACCOUNTS: usize = 10_000;
/// Commands per fill request (the gateway's maximum).
const FILL_BATCH: usize = 10_000;
/// Fill requests in flight.
const FILL_SENDERS: usize = 3;
const BACKUP_POLL: Duration = Duration::from_millis(50);
const RSS_POLL: Duration = Duration::from_millis(10);
/// Log segment size of the cluster unless `--segment-mb` says otherwise.
pub const DEFAULT_SEGMENT_MIB: u64 = 64;
/// Status answers in a row with a server error (e.g. a broker timing out behind the gateway)
/// after which a backup wait gives up.
const MAX_SERVER_ERRORS: u32 = 3;
/// Trigger-latency samples taken even when the time budget is spent.
const MIN_TRIGGER_SAMPLES: usize = 5;

/// Targets of the issue: reported, never failed on.
const TARGET_UPLOAD_RATIO: f64 = 1.5;
const TARGET_RESTORE_RATIO: f64 = 1.5;
const TARGET_IMPACT_RATIO: f64 = 0.95;
const TARGET_TRIGGER_P99: Duration = Duration::from_millis(100);
const TARGET_RSS_GROWTH: u64 = 128 * MIB;
/// The restore tool holds a few download ranges and one decoder per file: its peak must not
/// depend on the size of the backup.
const TARGET_RESTORE_RSS: u64 = 128 * MIB;

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
        }
    }

    /// A generous bound for moving `bytes` (5 MB/s plus two minutes).
    fn timeout_for(&self, bytes: u64) -> Duration {
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
    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("sluice-bench: {text}");
        self.notes.push(text);
    }
}

/// One progress line: rewritten in place on a terminal, printed every `every` calls otherwise.
struct Progress {
    tty: bool,
    calls: u64,
    every: u64,
}

impl Progress {
    fn new(every: u64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            calls: 0,
            every,
        }
    }

    fn show(&mut self, line: &str) {
        self.calls += 1;
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if self.calls.is_multiple_of(self.every) {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

fn phase(name: &str) {
    eprintln!("sluice-bench: ---- {name}");
}

/// Running brokers and gateway, killed when dropped.
struct Running {
    brokers: Vec<Proc>,
    gateway: Proc,
}

impl Running {
    fn stop(mut self) {
        self.gateway.stop_ok();
        for broker in &mut self.brokers {
            broker.stop_ok();
        }
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for proc in self.brokers.iter().chain(std::iter::once(&self.gateway)) {
            text += &format!(
                "---- {} ({}) ----\n{}\n",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail()
            );
        }
        text
    }
}

/// Polls `url` until it answers 200, for at most `timeout`; fails with the log tail when the
/// process exits or the time is up.
async fn wait_healthy(proc: &mut Proc, url: &str, timeout: Duration) -> Result<()> {
    let client = loadgen::http_client(1);
    let started = Instant::now();
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited with {status} while starting\n---- log tail ----\n{}",
                proc.name(),
                proc.log_tail()
            );
        }
        if let Ok(response) = client.get(url).send().await {
            if response.status().as_u16() == 200 {
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "{} was not healthy within {timeout:?}\n---- log tail ----\n{}",
                proc.name(),
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts every broker (all at once, each may replay a long log) and then the gateway.
async fn start_cluster(spec: &ClusterSpec, timeout: Duration) -> Result<Running> {
    let mut brokers = Vec::new();
    for broker in &spec.brokers {
        let dir = spec.root().join(format!("node-{}", broker.node_id));
        std::fs::create_dir_all(&dir)?;
        brokers.push(Proc::spawn(
            &format!("broker {}", broker.node_id),
            "sluice-broker",
            spec.broker_env(broker.node_id),
            &dir,
            &dir.join("broker.log"),
        ));
    }
    for (proc, broker) in brokers.iter_mut().zip(&spec.brokers) {
        wait_healthy(proc, &broker.health_url(), timeout).await?;
    }
    let dir = spec.root().join("gateway");
    std::fs::create_dir_all(&dir)?;
    let mut gateway = Proc::spawn(
        "gateway",
        "sluice-gateway",
        spec.gateway_env(),
        &dir,
        &dir.join("gateway.log"),
    );
    wait_healthy(
        &mut gateway,
        &format!("{}/actuator/health", spec.endpoints().mgmt),
        Duration::from_secs(60),
    )
    .await?;
    Ok(Running { brokers, gateway })
}

/// `POST /actuator/backups/{id}`; its response time.
async fn trigger(client: &reqwest::Client, mgmt: &str, id: u64) -> Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{mgmt}/actuator/backups/{id}"))
        .send()
        .await
        .with_context(|| format!("POST /actuator/backups/{id}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("POST /actuator/backups/{id} answered {status}: {body}");
    }
    Ok(elapsed)
}

/// Polls `GET /actuator/backups/{id}` until COMPLETED; fails on FAILED or after `timeout`.
async fn wait_completed(
    client: &reqwest::Client,
    mgmt: &str,
    id: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<Value> {
    let started = Instant::now();
    let mut server_errors = 0;
    loop {
        let response = client
            .get(format!("{mgmt}/actuator/backups/{id}"))
            .send()
            .await
            .with_context(|| format!("GET /actuator/backups/{id}"))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match (status, body["status"].as_str()) {
            (200, Some("COMPLETED")) => return Ok(body),
            (200, Some("FAILED")) => bail!("backup {id} FAILED: {body}"),
            _ => {}
        }
        // The gateway answers 5xx when a broker does not answer within its own timeout (15 s):
        // a broker that stays unresponsive is hung, no need to wait for the whole bound.
        server_errors = if status >= 500 { server_errors + 1 } else { 0 };
        if server_errors >= MAX_SERVER_ERRORS {
            bail!(
                "GET /actuator/backups/{id} answered {status} {MAX_SERVER_ERRORS} times in a row after {}: a broker does not answer; last answer: {body}",
                secs(started.elapsed())
            );
        }
        if started.elapsed() > timeout {
            bail!("backup {id} not COMPLETED within {timeout:?}; last answer {status}: {body}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Back-to-back backups until `stop`: trigger, wait for COMPLETED, trigger the next.
struct BackToBack {
    triggers: Samples,
    durations: Vec<Duration>,
    next_id: u64,
}

async fn back_to_back(
    client: reqwest::Client,
    mgmt: String,
    first_id: u64,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<BackToBack> {
    let mut result = BackToBack {
        triggers: Samples::new(),
        durations: Vec::new(),
        next_id: first_id,
    };
    while !stop.load(Ordering::Relaxed) {
        let id = result.next_id;
        result.next_id += 1;
        let started = Instant::now();
        result
            .triggers
            .record(trigger(&client, &mgmt, id).await?, 1);
        wait_completed(&client, &mgmt, id, timeout, Duration::from_millis(100)).await?;
        result.durations.push(started.elapsed());
    }
    Ok(result)
}

/// A completed backup as the store describes it.
struct Described {
    manifests: Vec<Manifest>,
}

impl Described {
    /// Bytes of data the backup holds (original sizes).
    fn bytes(&self) -> u64 {
        self.manifests
            .iter()
            .flat_map(|m| &m.files)
            .map(|f| f.size_bytes)
            .sum()
    }

    fn bytes_of(&self, partition: u32) -> u64 {
        self.manifests
            .iter()
            .filter(|m| m.id.partition_id == partition)
            .flat_map(|m| &m.files)
            .map(|f| f.size_bytes)
            .sum()
    }

    fn files(&self) -> usize {
        self.manifests.iter().map(|m| m.files.len()).sum()
    }
}

async fn describe_backup(store: &BackupStore, id: u64) -> Result<Described> {
    let mut manifests = Vec::new();
    for partition in 1..=PARTITIONS {
        let found = store
            .find_manifests(partition, id)
            .await
            .with_context(|| format!("reading the manifests of backup {id}"))?;
        let manifest = found
            .into_iter()
            .find(|m| m.status == BackupStatus::Completed)
            .ok_or_else(|| {
                anyhow!("backup {id} has no COMPLETED manifest for partition {partition}")
            })?;
        manifests.push(manifest);
    }
    Ok(Described { manifests })
}

/// 128-character account ids on partition [`BIG`], pseudo-random so the data is not trivially
/// compressible.
fn fill_accounts() -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = Rng::new(42);
    let mut accounts = Vec::with_capacity(FILL_ACCOUNTS);
    while accounts.len() < FILL_ACCOUNTS {
        let mut id = format!("fill-{:06}-", accounts.len());
        while id.len() < 128 {
            id.push(ALPHABET[rng.below(ALPHABET.len())] as char);
        }
        if partition_for_account(&id, PARTITIONS) == BIG {
            accounts.push(id);
        }
    }
    accounts
}

/// Request bodies of the fill: every fill account once per body, in a shuffled order, with
/// varying amounts.
fn fill_bodies(accounts: &[String], count: usize) -> Vec<Arc<String>> {
    let mut rng = Rng::new(7);
    (0..count)
        .map(|_| {
            let mut order: Vec<usize> = (0..accounts.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let mut body = String::with_capacity(FILL_BATCH * 170);
            for index in order.iter().cycle().take(FILL_BATCH) {
                body.push_str(&format!(
                    "{{\"type\":\"deposit\",\"account\":\"{}\",\"amount\":{}}}\n",
                    accounts[*index],
                    1 + rng.below(1000)
                ));
            }
            Arc::new(body)
        })
        .collect()
}

/// Sends one `/v1/commands` body and checks every line answered 200; returns the line count.
async fn send_commands(client: &reqwest::Client, api: &str, body: String) -> Result<u64> {
    let lines = body.lines().count() as u64;
    let response = client
        .post(format!("{api}/v1/commands"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .context("POST /v1/commands")?;
    let status = response.status().as_u16();
    let text = response.text().await.context("POST /v1/commands")?;
    if status != 200 {
        bail!(
            "POST /v1/commands answered {status}: {}",
            text.chars().take(500).collect::<String>()
        );
    }
    let answered = text.lines().count() as u64;
    if answered != lines {
        bail!("POST /v1/commands answered {answered} lines for {lines} commands");
    }
    if let Some(bad) = text.lines().find(|l| loadgen::result_code(l) != Some(200)) {
        bail!(
            "a command failed: {}",
            bad.chars().take(500).collect::<String>()
        );
    }
    Ok(lines)
}

/// The directory of `partition` on the node hosting it.
fn partition_dir(spec: &ClusterSpec, partition: u32) -> PathBuf {
    let node = node_for_partition(partition, CLUSTER_SIZE) as usize;
    spec.brokers[node]
        .data_dir
        .join(format!("partition-{partition:05}"))
}

/// The local files of a backup, named as in the backup (`<partition>/segments/<name>`,
/// `<partition>/snapshot/<name>`): what the baselines copy.
fn local_files(spec: &ClusterSpec, described: &Described) -> Vec<(PathBuf, PathBuf)> {
    let mut files = Vec::new();
    for manifest in &described.manifests {
        let partition = manifest.id.partition_id;
        let dir = partition_dir(spec, partition);
        for entry in &manifest.files {
            let (folder, source) = match entry.kind {
                FileKind::Segment => ("segments", dir.join("log").join(&entry.name)),
                FileKind::Snapshot => (
                    "snapshot",
                    dir.join("snapshots")
                        .join(manifest.descriptor.snapshot_id.clone().unwrap_or_default())
                        .join(&entry.name),
                ),
            };
            files.push((
                PathBuf::from(format!("{partition:05}"))
                    .join(folder)
                    .join(&entry.name),
                source,
            ));
        }
    }
    files
}

struct Bench {
    config: BenchConfig,
    // Field order is drop order: processes first, then their directories, then Garage.
    cluster: Option<Running>,
    spec: ClusterSpec,
    garage: Option<Garage>,
    ep: Endpoints,
    client: reqwest::Client,
    s3: BackupStore,
    aws: std::result::Result<Aws, String>,
    next_id: u64,
    fill_accounts: Vec<String>,
}

impl Bench {
    fn cluster(&self) -> &Running {
        self.cluster.as_ref().expect("the cluster runs")
    }

    fn broker_pid(&self, node: usize) -> Result<u32> {
        self.cluster()
            .brokers
            .get(node)
            .and_then(|b| b.pid())
            .ok_or_else(|| anyhow!("broker {node} does not run"))
    }

    fn partition_dir(&self, partition: u32) -> PathBuf {
        partition_dir(&self.spec, partition)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds the cluster's log tails to an error, after its own message (which stays first).
    fn with_logs(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.cluster {
            Some(cluster) => anyhow!("{error:#}\n---- cluster logs ----\n{}", cluster.logs()),
            None => error,
        }
    }

    async fn restart(&mut self, timeout: Duration) -> Result<Duration> {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
        let started = Instant::now();
        self.cluster = Some(start_cluster(&self.spec, timeout).await?);
        Ok(started.elapsed())
    }

    /// Deposits to the fill accounts until partition [`BIG`] holds `target` bytes.
    async fn fill(&self, target: u64, report: &mut Report) -> Result<()> {
        let dir = self.partition_dir(BIG);
        let initial = sys::tree_size(&dir);
        if initial >= target {
            return Ok(());
        }
        let bodies = fill_bodies(&self.fill_accounts, 4);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::new(Mutex::new(None));
        let mut senders = tokio::task::JoinSet::new();
        for sender in 0..FILL_SENDERS {
            let (client, api, bodies, stop, sent, failure) = (
                self.client.clone(),
                self.ep.api.clone(),
                bodies.clone(),
                stop.clone(),
                sent.clone(),
                failure.clone(),
            );
            senders.spawn(async move {
                let mut k = sender;
                while !stop.load(Ordering::Relaxed) {
                    let body = bodies[k % bodies.len()].as_str().to_string();
                    k += 1;
                    match send_commands(&client, &api, body).await {
                        Ok(lines) => {
                            sent.fetch_add(lines, Ordering::Relaxed);
                        }
                        Err(error) => {
                            *failure.lock().expect("lock") = Some(error);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let started = Instant::now();
        let mut progress = Progress::new(25);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = sys::tree_size(&dir);
            let rate = mb_per_s(now.saturating_sub(initial), started.elapsed());
            progress.show(&format!(
                "[fill] {} / {}  {rate:.1} MB/s of log  {} commands",
                size(now),
                size(target),
                thousands(sent.load(Ordering::Relaxed))
            ));
            if now >= target || stop.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        while senders.join_next().await.is_some() {}
        progress.done();
        if let Some(error) = failure.lock().expect("lock").take() {
            return Err(self.with_logs(error.context("filling the partition")));
        }
        let elapsed = started.elapsed();
        let grown = sys::tree_size(&dir) - initial;
        let commands = sent.load(Ordering::Relaxed);
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

    /// Up to `k` triggers, each on a quiet cluster: trigger, record how long the POST took, wait
    /// until that backup is COMPLETED (not counted), then the next. Stops early, after at least
    /// [`MIN_TRIGGER_SAMPLES`], once `budget` is spent (each backup uploads the whole state).
    /// Returns the trigger latencies and how long the backups took.
    async fn trigger_series(&mut self, k: usize, budget: Duration) -> Result<(Samples, Samples)> {
        let started = Instant::now();
        let state = sys::tree_size(&self.partition_dir(BIG));
        let mut triggers = Samples::new();
        let mut backups = Samples::new();
        for n in 0..k {
            if n >= MIN_TRIGGER_SAMPLES && started.elapsed() > budget {
                break;
            }
            let id = self.next_id();
            let begun = Instant::now();
            let latency = trigger(&self.client, &self.ep.mgmt, id)
                .await
                .map_err(|e| self.with_logs(e))?;
            triggers.record(latency, 1);
            wait_completed(
                &self.client,
                &self.ep.mgmt,
                id,
                self.config.timeout_for(state),
                BACKUP_POLL,
            )
            .await
            .map_err(|e| self.with_logs(e))?;
            backups.record(begun.elapsed(), 1);
        }
        Ok((triggers, backups))
    }

    fn load_config(&self, label: &str, api: &str) -> LoadConfig {
        LoadConfig {
            url: api.to_string(),
            duration: self.config.load_duration,
            progress: Some(label.to_string()),
            ..self.config.load.clone()
        }
    }

    async fn load(&self, config: LoadConfig, report: &mut Report) -> Result<LoadReport> {
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

    /// Load with back-to-back backups; returns the load and the backups.
    async fn load_during_backups(
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

/// Runs the benchmark; rows and notes land in `report` as they are measured, so a failure
/// still shows what was measured before it.
pub async fn run(config: BenchConfig, report: &mut Report) -> Result<()> {
    for name in [
        "sluice-broker",
        "sluice-gateway",
        "sluice-restore",
        "sluice-standalone",
    ] {
        let path = sluice_tests::bin_dir().join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace --bins` (`cargo run --release -p sluice-bench` does)",
                path.display()
            );
        }
    }

    phase("starting Garage");
    let garage = tokio::task::spawn_blocking(Garage::start)
        .await
        .map_err(|e| anyhow!("starting Garage failed: {e}"))?;
    let setting = |key: &str| garage.setting(key).to_string();
    let endpoint = setting("SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT");
    let bucket = setting("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME");
    let s3 = BackupStore::open(BackupStoreOptions::new(
        StoreKind::S3 {
            bucket: bucket.clone(),
            endpoint: Some(endpoint.clone()),
            region: setting("SLUICE_BROKER_DATA_BACKUP_S3_REGION"),
            access_key: Some(setting("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY")),
            secret_key: Some(setting("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY")),
            force_path_style: true,
            allow_http: true,
        },
        None,
    ))?;
    let aws = Aws::find(
        &endpoint,
        &setting("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY"),
        &setting("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY"),
        &setting("SLUICE_BROKER_DATA_BACKUP_S3_REGION"),
    )
    .await;
    match &aws {
        Ok(aws) => report.note(format!("baseline tool: {} (default settings)", aws.version)),
        Err(why) => report.note(format!("no S3 baselines: {why}")),
    }

    // One spec for the whole run: 2 brokers, 2 partitions, S3 on Garage.
    let spec = ClusterSpec::new(CLUSTER_SIZE, PARTITIONS)
        .with_env(&garage.env())
        .with(
            "SLUICE_BROKER_DATA_LOGSEGMENTSIZE",
            &format!("{}MB", config.segment_mib),
        )
        .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", "1s");
    let ep = spec.endpoints();
    let mut bench = Bench {
        config: config.clone(),
        cluster: None,
        spec,
        garage: Some(garage),
        ep,
        client: loadgen::http_client(16),
        s3,
        aws,
        next_id: 1,
        fill_accounts: fill_accounts(),
    };
    report.note(format!(
        "cluster: {CLUSTER_SIZE} brokers + gateway, {PARTITIONS} partitions (partition {BIG} grown, on node 0), {}MB segments, S3 store on Garage; data under {}",
        config.segment_mib,
        bench.spec.root().display()
    ));

    phase("seeding accounts, first snapshot");
    bench.cluster = Some(start_cluster(&bench.spec, Duration::from_secs(60)).await?);
    let seed: String = bench
        .fill_accounts
        .iter()
        .map(|a| format!("{{\"type\":\"deposit\",\"account\":\"{a}\",\"amount\":1}}\n"))
        .collect();
    send_commands(&bench.client, &bench.ep.api, seed)
        .await
        .map_err(|e| bench.with_logs(e))?;
    // The 1s snapshot period takes a snapshot of the seeded state; afterwards a 1h period keeps
    // every later record in the log.
    let snapshots = bench.partition_dir(BIG).join("snapshots");
    let waited = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    loop {
        let has_snapshot = std::fs::read_dir(&snapshots)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .any(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false);
        if has_snapshot {
            break;
        }
        if waited.elapsed() > Duration::from_secs(30) {
            return Err(
                bench.with_logs(anyhow!("no snapshot in {} after 30 s", snapshots.display()))
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bench
        .spec
        .broker_common
        .insert("SLUICE_BROKER_DATA_SNAPSHOTPERIOD".into(), "1h".into());
    bench.restart(Duration::from_secs(60)).await?;

    // ---- 4 at the small state
    phase("trigger latency at the small state");
    bench.fill(config.small_state_bytes, report).await?;
    let small_size = sys::tree_size(&bench.partition_dir(BIG));
    let (mut small_triggers, mut small_backups) = bench
        .trigger_series(config.trigger_samples, config.trigger_budget)
        .await?;
    report.note(format!(
        "trigger latency at {} (partition {BIG}): {} triggers, each on a quiet cluster (the previous backup COMPLETED), p50 {}, p99 {}, max {}; backups COMPLETED after p50 {}",
        size(small_size),
        small_triggers.len(),
        opt_ms(small_triggers.quantile(0.5)),
        opt_ms(small_triggers.quantile(0.99)),
        opt_ms(small_triggers.max()),
        opt_ms(small_backups.quantile(0.5)),
    ));

    // ---- fill
    phase(&format!(
        "growing partition {BIG} to {}",
        size(config.state_bytes)
    ));
    bench.fill(config.state_bytes, report).await?;
    let state_size = sys::tree_size(&bench.partition_dir(BIG));

    // ---- 1a + 5: backup to S3, RSS
    phase("backup to S3 (Garage)");
    let pid = bench.broker_pid(0)?;
    let rss_before = sys::rss(pid).unwrap_or(0);
    let sampler = RssSampler::start(pid, RSS_POLL);
    let id = bench.next_id();
    let started = Instant::now();
    let trigger_latency = trigger(&bench.client, &bench.ep.mgmt, id)
        .await
        .map_err(|e| bench.with_logs(e))?;
    wait_completed(
        &bench.client,
        &bench.ep.mgmt,
        id,
        config.timeout_for(state_size),
        BACKUP_POLL,
    )
    .await
    .map_err(|e| bench.with_logs(e))?;
    let backup_time = started.elapsed();
    let (rss_peak, rss_samples) = sampler.finish();
    let hwm = sys::proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    let described = describe_backup(&bench.s3, id).await?;
    let backup_bytes = described.bytes();
    let backup_rate = mb_per_s(backup_bytes, backup_time);
    report.note(format!(
        "backup {id} to S3: {} in {} files ({} of partition {BIG}, snapshot {}), POST answered in {}, COMPLETED after {}",
        size(backup_bytes),
        described.files(),
        size(described.bytes_of(BIG)),
        described.manifests[0].descriptor.snapshot_id.as_deref().unwrap_or("none"),
        ms(trigger_latency),
        secs(backup_time)
    ));

    // The same files, as hard links, for the baselines.
    let upload_dir = bench.spec.root().join("baseline-upload");
    external::link_tree(&upload_dir, &local_files(&bench.spec, &described))?;
    let upload_bytes = sys::tree_size(&upload_dir);

    let upload_row = Row::new(
        "1a",
        format!("backup to S3, {} (POST -> COMPLETED)", size(backup_bytes)),
    )
    .sluice(format!("{backup_rate:.0} MB/s ({})", secs(backup_time)));
    let measured = match &bench.aws {
        Ok(aws) => {
            phase("baseline: aws s3 cp --recursive (upload)");
            let elapsed = aws
                .cp_recursive(
                    &upload_dir.to_string_lossy(),
                    &format!("s3://{bucket}/awscli-baseline/upload/"),
                    config.timeout_for(upload_bytes),
                )
                .await?;
            let rate = mb_per_s(upload_bytes, elapsed);
            Ok((
                format!("aws s3 cp: {rate:.0} MB/s ({})", secs(elapsed)),
                backup_rate / rate,
            ))
        }
        Err(_) => Err("n/a (no awscli)"),
    };
    let upload_row = upload_row.against_minimum(measured, TARGET_UPLOAD_RATIO);
    report.rows.push(upload_row);

    // ---- 2: restore
    phase("restore of node 0 (bin/restore)");
    let restore_bytes = described.bytes_of(BIG);
    let restore_dir = bench.spec.root().join("restore-node-0");
    let mut restore_env: Env = bench.spec.broker_env(0);
    restore_env.insert(
        "SLUICE_BROKER_DATA_DIRECTORY".into(),
        restore_dir.join("data").to_string_lossy().into_owned(),
    );
    let mut command = tokio::process::Command::new(sluice_tests::bin("sluice-restore"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("SLUICE_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    std::fs::create_dir_all(&restore_dir)?;
    command
        .env("RUST_LOG", "warn")
        .envs(&restore_env)
        .current_dir(&restore_dir)
        .arg(id.to_string());
    let (restore_time, restore_out, restore_rss_peak) = external::timed_output_with_peak_rss(
        command,
        config.timeout_for(restore_bytes),
        "sluice-restore",
        RSS_POLL,
    )
    .await?;
    let restore_rate = mb_per_s(restore_bytes, restore_time);
    report.note(format!(
        "restore: {} in {}, peak VmRSS {} (sampled every {}): {}",
        size(restore_bytes),
        secs(restore_time),
        size(restore_rss_peak),
        ms(RSS_POLL),
        restore_out.trim()
    ));
    std::fs::remove_dir_all(&restore_dir)?;
    let restore_row = Row::new(
        "2",
        format!(
            "restore from S3, {} (bin/restore, verified)",
            size(restore_bytes)
        ),
    )
    .sluice(format!("{restore_rate:.0} MB/s ({})", secs(restore_time)));
    let measured = match &bench.aws {
        Ok(aws) => {
            phase("baseline: aws s3 cp --recursive (download)");
            let download_dir = bench.spec.root().join("baseline-download");
            let prefix = format!("s3://{bucket}/{BIG:05}/{id:020}/00000/");
            let copy = aws
                .cp_recursive(
                    &prefix,
                    &download_dir.to_string_lossy(),
                    config.timeout_for(restore_bytes),
                )
                .await?;
            // bin/restore fsyncs every file it writes: the baseline is durable too.
            let flush = external::sync(&download_dir, Duration::from_secs(300)).await?;
            let elapsed = copy + flush;
            let downloaded = sys::tree_size(&download_dir);
            std::fs::remove_dir_all(&download_dir)?;
            let rate = mb_per_s(restore_bytes, elapsed);
            let ratio = restore_rate / rate;
            report.note(format!(
                "aws s3 cp download of {prefix}: {} of objects in {}, then `sync` in {}",
                size(downloaded),
                secs(copy),
                secs(flush)
            ));
            Ok((
                format!("aws s3 cp + sync: {rate:.0} MB/s ({})", secs(elapsed)),
                ratio,
            ))
        }
        Err(_) => Err("n/a (no awscli)"),
    };
    let restore_row = restore_row.against_minimum(measured, TARGET_RESTORE_RATIO);
    report.rows.push(restore_row);

    // ---- 3: impact
    phase("impact: load without backups");
    let api = bench.ep.api.clone();
    let mut without = bench
        .load(bench.load_config("no backup, closed loop", &api), report)
        .await?;
    phase("impact: load during back-to-back backups");
    let (mut with, backups, rss_growth_loaded) = bench
        .load_during_backups(
            bench.load_config("back-to-back backups, closed loop", &api),
            report,
        )
        .await?;
    // Open loop at a rate both sustain: half the lower closed-loop throughput. Above what the
    // cluster sustains during backups, the p99 would only say how long the phase let the queue
    // grow.
    let fixed_rate = ((without.throughput().min(with.throughput()) * 0.5) as u64).max(100);
    phase(&format!(
        "impact: fixed rate {} cmd/s without backups",
        thousands(fixed_rate)
    ));
    let mut fixed_without = bench
        .load(
            LoadConfig {
                rate: fixed_rate,
                concurrency: 256,
                ..bench.load_config("no backup, fixed rate", &api)
            },
            report,
        )
        .await?;
    phase(&format!(
        "impact: fixed rate {} cmd/s during back-to-back backups",
        thousands(fixed_rate)
    ));
    let (mut fixed_with, fixed_backups, rss_growth_fixed) = bench
        .load_during_backups(
            LoadConfig {
                rate: fixed_rate,
                concurrency: 256,
                ..bench.load_config("back-to-back backups, fixed rate", &api)
            },
            report,
        )
        .await?;
    let mut loaded_triggers = backups.triggers.clone();
    loaded_triggers.extend(&fixed_backups.triggers);
    let durations: Vec<String> = backups
        .durations
        .iter()
        .chain(&fixed_backups.durations)
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    report.note(format!(
        "back-to-back backups under load: {} completed (durations in s: {}); trigger p50 {}, p99 {}, max {}; broker 0 RSS growth up to {}",
        durations.len(),
        durations.join(", "),
        opt_ms(loaded_triggers.quantile(0.5)),
        opt_ms(loaded_triggers.quantile(0.99)),
        opt_ms(loaded_triggers.max()),
        size(rss_growth_loaded.max(rss_growth_fixed))
    ));
    let ratio = with.throughput() / without.throughput();
    report.rows.push(
        Row::new(
            "3a",
            format!(
                "throughput during back-to-back backups ({} backups)",
                backups.durations.len()
            ),
        )
        .sluice(format!("{} cmd/s", thousands(with.throughput() as u64)))
        .baseline(format!(
            "no backup: {} cmd/s",
            thousands(without.throughput() as u64)
        ))
        .ratio(Some(ratio))
        .target(
            format!(">= {TARGET_IMPACT_RATIO:.2}x"),
            Met::from_bool(ratio >= TARGET_IMPACT_RATIO),
        ),
    );
    let latency_row = |id: &str, what: String, with: &mut LoadReport, without: &mut LoadReport| {
        let (a, b) = (with.p(0.99), without.p(0.99));
        Row::new(id, what)
            .sluice(opt_ms(a))
            .baseline(format!("no backup: {}", opt_ms(b)))
            .ratio(match (a, b) {
                (Some(a), Some(b)) => Some(a.as_secs_f64() / b.as_secs_f64().max(1e-9)),
                _ => None,
            })
            .target("reported", Met::NotApplicable)
    };
    report.rows.push(latency_row(
        "3b",
        "p99 command latency during backups, closed loop".into(),
        &mut with,
        &mut without,
    ));
    report.rows.push(latency_row(
        "3c",
        format!(
            "p99 command latency during backups, {} cmd/s fixed",
            thousands(fixed_rate)
        ),
        &mut fixed_with,
        &mut fixed_without,
    ));

    // ---- 4 at the large state
    phase("trigger latency at the large state");
    let large_size = sys::tree_size(&bench.partition_dir(BIG));
    let (mut large_triggers, mut large_backups) = bench
        .trigger_series(config.trigger_samples, config.trigger_budget)
        .await?;
    report.note(format!(
        "trigger latency at {} (partition {BIG}): {} triggers, each on a quiet cluster (the previous backup COMPLETED), p50 {}, p99 {}, max {}; backups COMPLETED after p50 {}",
        size(large_size),
        large_triggers.len(),
        opt_ms(large_triggers.quantile(0.5)),
        opt_ms(large_triggers.quantile(0.99)),
        opt_ms(large_triggers.max()),
        opt_ms(large_backups.quantile(0.5)),
    ));
    let p50_ratio = match (large_triggers.quantile(0.5), small_triggers.quantile(0.5)) {
        (Some(a), Some(b)) => Some(a.as_secs_f64() / b.as_secs_f64().max(1e-9)),
        _ => None,
    };
    let (large_p99, small_p99) = (large_triggers.quantile(0.99), small_triggers.quantile(0.99));
    report.rows.push(
        Row::new(
            "4a",
            format!(
                "trigger p50, {} vs {} ({}/{} triggers)",
                size(large_size),
                size(small_size),
                large_triggers.len(),
                small_triggers.len()
            ),
        )
        .sluice(opt_ms(large_triggers.quantile(0.5)))
        .baseline(format!(
            "{}: {}",
            size(small_size),
            opt_ms(small_triggers.quantile(0.5))
        ))
        .ratio(p50_ratio)
        .target("no growth", Met::NotApplicable),
    );
    report.rows.push(
        Row::new(
            "4b",
            format!(
                "trigger p99, {} vs {} ({}/{} triggers)",
                size(large_size),
                size(small_size),
                large_triggers.len(),
                small_triggers.len()
            ),
        )
        .sluice(opt_ms(large_p99))
        .baseline(format!("{}: {}", size(small_size), opt_ms(small_p99)))
        .ratio(match (large_p99, small_p99) {
            (Some(a), Some(b)) => Some(a.as_secs_f64() / b.as_secs_f64().max(1e-9)),
            _ => None,
        })
        .target(
            format!("<= {} at both", ms(TARGET_TRIGGER_P99)),
            Met::from_bool(
                large_p99.is_some_and(|p| p <= TARGET_TRIGGER_P99)
                    && small_p99.is_some_and(|p| p <= TARGET_TRIGGER_P99),
            ),
        ),
    );

    // ---- 5: memory (measured during the S3 backup above)
    let growth = rss_peak.saturating_sub(rss_before);
    report.note(format!(
        "broker 0 memory during backup {id}: VmRSS {} before, peak {} ({} samples every {}), VmHWM {} (process lifetime)",
        size(rss_before),
        size(rss_peak),
        rss_samples,
        ms(RSS_POLL),
        size(hwm)
    ));
    report.rows.push(
        Row::new(
            "5",
            format!("broker RSS during a backup of {}", size(backup_bytes)),
        )
        .sluice(format!("peak {} (+{})", size(rss_peak), size(growth)))
        .baseline(format!("before: {}", size(rss_before)))
        .ratio(Some(rss_peak as f64 / rss_before.max(1) as f64))
        .target(
            format!("growth <= {}", size(TARGET_RSS_GROWTH)),
            Met::from_bool(growth <= TARGET_RSS_GROWTH),
        ),
    );
    report.rows.push(
        Row::new(
            "5b",
            format!("restore tool RSS, restoring {}", size(restore_bytes)),
        )
        .sluice(format!("peak {}", size(restore_rss_peak)))
        .target(
            format!("peak <= {}", size(TARGET_RESTORE_RSS)),
            Met::from_bool(restore_rss_peak <= TARGET_RESTORE_RSS),
        ),
    );

    // ---- 1b: filesystem store
    phase("backup to the filesystem store");
    let fs_root = bench.spec.root().join("fs-backups");
    bench
        .spec
        .broker_common
        .retain(|key, _| !key.starts_with("SLUICE_BROKER_DATA_BACKUP_"));
    bench.spec.broker_common.insert(
        "SLUICE_BROKER_DATA_BACKUP_STORE".into(),
        "FILESYSTEM".into(),
    );
    bench.spec.broker_common.insert(
        "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH".into(),
        fs_root.to_string_lossy().into_owned(),
    );
    let recovery = bench.restart(config.timeout_for(large_size)).await?;
    report.note(format!(
        "brokers restarted with a FILESYSTEM store: healthy after {} (recovery replays the {} log since the snapshot)",
        secs(recovery),
        size(large_size)
    ));
    external::sync(bench.spec.root(), Duration::from_secs(300)).await?;
    let id = bench.next_id();
    let started = Instant::now();
    trigger(&bench.client, &bench.ep.mgmt, id)
        .await
        .map_err(|e| bench.with_logs(e))?;
    wait_completed(
        &bench.client,
        &bench.ep.mgmt,
        id,
        config.timeout_for(large_size),
        BACKUP_POLL,
    )
    .await
    .map_err(|e| bench.with_logs(e))?;
    let fs_time = started.elapsed();
    let fs_store = BackupStore::open(BackupStoreOptions::new(
        StoreKind::Filesystem {
            root: fs_root.clone(),
        },
        None,
    ))?;
    let fs_described = describe_backup(&fs_store, id).await?;
    let fs_bytes = fs_described.bytes();
    // Is the backup durable when it says COMPLETED? What `sync` still has to write says.
    let fs_sync = external::sync(&fs_root, Duration::from_secs(300)).await?;
    let fs_rate = mb_per_s(fs_bytes, fs_time);
    let cp_source = bench.spec.root().join("baseline-fs-source");
    external::link_tree(&cp_source, &local_files(&bench.spec, &fs_described))?;
    let cp_bytes = sys::tree_size(&cp_source);
    let cp_target = bench.spec.root().join("baseline-fs-copy");
    let cp_time =
        external::cp_and_sync(&cp_source, &cp_target, config.timeout_for(cp_bytes)).await?;
    let cp_rate = mb_per_s(cp_bytes, cp_time);
    let _ = std::fs::remove_dir_all(&cp_target);
    let _ = std::fs::remove_dir_all(&fs_root);
    report.note(format!(
        "backup {id} to the filesystem: {} in {}; a `sync` right after COMPLETED took {} (what was not durable yet; the store fsyncs every object before COMPLETED); cp -r + sync of the same {}: {}",
        size(fs_bytes),
        secs(fs_time),
        secs(fs_sync),
        size(cp_bytes),
        secs(cp_time)
    ));
    let fs_ratio = fs_rate / cp_rate;
    // Keep the table in issue order: 1b right after 1a.
    report.rows.insert(
        1,
        Row::new(
            "1b",
            format!(
                "backup to filesystem, {} (POST -> COMPLETED)",
                size(fs_bytes)
            ),
        )
        .sluice(format!("{fs_rate:.0} MB/s ({})", secs(fs_time)))
        .baseline(format!(
            "cp -r + sync: {cp_rate:.0} MB/s ({})",
            secs(cp_time)
        ))
        .ratio(Some(fs_ratio))
        .target("reported", Met::NotApplicable),
    );

    if let Some(cluster) = bench.cluster.take() {
        cluster.stop();
    }
    drop(bench.garage.take());

    // ---- 6: standalone
    phase("standalone node");
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-standalone-")
        .tempdir()?;
    let (api_port, mgmt_port, broker_port) = (
        sluice_tests::free_port(),
        sluice_tests::free_port(),
        sluice_tests::free_port(),
    );
    let mut env = Env::new();
    for (key, value) in [
        (
            "SLUICE_BROKER_DATA_DIRECTORY",
            dir.path().join("data").to_string_lossy().into_owned(),
        ),
        ("SLUICE_BROKER_NETWORK_HOST", "127.0.0.1".into()),
        ("SLUICE_BROKER_NETWORK_PORT", broker_port.to_string()),
        ("SLUICE_GATEWAY_NETWORK_HOST", "127.0.0.1".into()),
        ("SLUICE_GATEWAY_NETWORK_PORT", api_port.to_string()),
        ("SLUICE_GATEWAY_MANAGEMENT_HOST", "127.0.0.1".into()),
        ("SLUICE_GATEWAY_MANAGEMENT_PORT", mgmt_port.to_string()),
    ] {
        env.insert(key.into(), value);
    }
    let mut standalone = Proc::spawn(
        "standalone",
        "sluice-standalone",
        env,
        dir.path(),
        &dir.path().join("standalone.log"),
    );
    wait_healthy(
        &mut standalone,
        &format!("http://127.0.0.1:{mgmt_port}/actuator/health"),
        Duration::from_secs(60),
    )
    .await?;
    let api = format!("http://127.0.0.1:{api_port}");
    let mut alone = bench
        .load(
            bench.load_config("standalone node, closed loop", &api),
            report,
        )
        .await?;
    standalone.stop_ok();
    report.rows.push(
        Row::new(
            "6",
            "standalone node (3 partitions), closed loop, fsync on".to_string(),
        )
        .sluice(format!(
            "{} cmd/s, p99 {}",
            thousands(alone.throughput() as u64),
            opt_ms(alone.p(0.99))
        ))
        .target("for the record", Met::NotApplicable),
    );
    Ok(())
}
