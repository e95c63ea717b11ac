//! The load generator: ledger commands through `POST /v1/commands` of any gateway, closed loop (as
//! fast as `concurrency` requests in flight allow) or open loop at a fixed rate, with a mix of
//! deposits, withdrawals, same-partition and cross-partition transfers.
//!
//! Latency is per command: every command of a request has the request's round trip. In open-loop
//! mode it is measured from the moment the request was *scheduled*, so a stalled server is not
//! hidden by the generator waiting for it (no coordinated omission).
//!
//! Before measuring, every account gets a large deposit, so transfers and withdrawals never run
//! short; after measuring, unless disabled, the ledger is checked: once every cross-partition
//! transfer has landed (`inFlight` 0), the total must have moved by exactly the deposits minus the
//! withdrawals of this run (it assumes no other writer meanwhile).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sluice_broker::routing::partition_for_account;
use tokio::sync::Semaphore;

use crate::stats::{ms, opt_ms, thousands, Samples};

/// What every account is given before the run.
pub const SEED_AMOUNT: u64 = 1_000_000_000_000;
/// Lines per seeding request.
const SEED_BATCH: usize = 5_000;
/// How long the ledger check waits for cross-partition transfers to land.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the gateway's client API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Commands per second; 0 means closed loop (as fast as the server answers).
    pub rate: u64,
    pub duration: Duration,
    pub accounts: u32,
    /// Fraction of all commands that are transfers between accounts of different partitions.
    pub cross_partition_ratio: f64,
    /// Fraction of all commands that are transfers within one partition.
    pub transfer_ratio: f64,
    /// Fraction of all commands that are withdrawals; the rest are deposits.
    pub withdraw_ratio: f64,
    /// Commands per `/v1/commands` request (1..=10,000).
    pub batch: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Account ids are `<prefix>-<n>`.
    pub account_prefix: String,
    pub seed: u64,
    pub check_ledger: bool,
    /// Label of the progress line; `None` prints no progress.
    pub progress: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080".into(),
            rate: 0,
            duration: Duration::from_secs(30),
            accounts: 1000,
            cross_partition_ratio: 0.2,
            transfer_ratio: 0.2,
            withdraw_ratio: 0.1,
            batch: 100,
            concurrency: 8,
            account_prefix: "lg".into(),
            seed: 1,
            check_ledger: true,
            progress: Some("load".into()),
        }
    }
}

impl LoadConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=10_000).contains(&self.batch) {
            bail!("batch must be 1..=10000 commands, got {}", self.batch);
        }
        if self.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        if self.accounts < 2 {
            bail!("at least 2 accounts are needed, got {}", self.accounts);
        }
        let sum = self.cross_partition_ratio + self.transfer_ratio + self.withdraw_ratio;
        if sum > 1.0 + 1e-9 {
            bail!("cross-partition + transfer + withdraw ratios add up to {sum:.3} > 1");
        }
        if self.duration.is_zero() {
            bail!("duration must be positive");
        }
        Ok(())
    }
}

/// The ledger before and after a run.
#[derive(Debug, Clone)]
pub struct LedgerCheck {
    pub total_before: u64,
    pub total_after: u64,
    pub expected_after: u64,
    pub drained_in: Duration,
}

impl LedgerCheck {
    pub fn conserved(&self) -> bool {
        self.total_after == self.expected_after
    }
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub config: LoadConfig,
    pub partitions: u32,
    pub elapsed: Duration,
    pub requests: u64,
    /// Commands answered with code 200.
    pub ok: u64,
    /// Commands answered otherwise, or lost with their request (code 0).
    pub errors: u64,
    pub codes: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
    pub latency: Samples,
    /// Successful commands by kind: deposits, withdrawals, same-partition and cross-partition
    /// transfers.
    pub by_kind: [u64; 4],
    pub deposited: u64,
    pub withdrawn: u64,
    pub ledger: Option<LedgerCheck>,
}

impl LoadReport {
    /// Successful commands per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn p(&mut self, q: f64) -> Option<Duration> {
        self.latency.quantile(q)
    }

    /// What went wrong, if anything: command errors or a ledger that does not add up.
    pub fn problem(&self) -> Option<String> {
        if self.errors > 0 {
            return Some(format!(
                "{} of {} commands failed (codes {:?}); first: {}",
                self.errors,
                self.ok + self.errors,
                self.codes,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(ledger) = &self.ledger {
            if !ledger.conserved() {
                return Some(format!(
                    "the ledger does not add up: total {} before, {} after, expected {} (deposits {} - withdrawals {})",
                    ledger.total_before, ledger.total_after, ledger.expected_after, self.deposited, self.withdrawn
                ));
            }
        }
        None
    }

    /// A multi-line human summary.
    pub fn summary(&mut self) -> String {
        let c = &self.config;
        let mode = if c.rate == 0 {
            "closed loop".to_string()
        } else {
            format!("open loop at {} commands/s", thousands(c.rate))
        };
        let [deposits, withdrawals, local, cross] = self.by_kind;
        let mut out = format!(
            "{:.1} s against {}: {} partition(s), {} accounts, batch {}, concurrency {}, {}\n",
            self.elapsed.as_secs_f64(),
            c.url,
            self.partitions,
            c.accounts,
            c.batch,
            c.concurrency,
            mode
        );
        out += &format!(
            "commands: {} ok ({} deposits, {} withdrawals, {} same-partition transfers, {} cross-partition transfers), {} errors\n",
            thousands(self.ok),
            thousands(deposits),
            thousands(withdrawals),
            thousands(local),
            thousands(cross),
            thousands(self.errors)
        );
        out += &format!(
            "throughput: {} commands/s ({} requests/s)\n",
            thousands(self.throughput() as u64),
            thousands((self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)) as u64)
        );
        let (p50, p90, p99, p999) = (self.p(0.5), self.p(0.9), self.p(0.99), self.p(0.999));
        out += &format!(
            "latency per command: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            opt_ms(p50),
            opt_ms(p90),
            opt_ms(p99),
            opt_ms(p999),
            opt_ms(self.latency.max())
        );
        match &self.ledger {
            Some(ledger) if ledger.conserved() => {
                out += &format!(
                    "ledger: total {} -> {} = deposits - withdrawals (in-flight transfers landed within {})\n",
                    ledger.total_before,
                    ledger.total_after,
                    ms(ledger.drained_in)
                );
            }
            Some(ledger) => {
                out += &format!(
                    "ledger: DOES NOT ADD UP: total {} -> {}, expected {}\n",
                    ledger.total_before, ledger.total_after, ledger.expected_after
                );
            }
            None => out += "ledger: not checked\n",
        }
        if let Some(error) = &self.first_error {
            out += &format!("first error: {error}\n");
        }
        out
    }
}

/// xorshift64*: deterministic, fast, good enough to pick accounts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The accounts of a run, grouped by partition.
#[derive(Debug, Clone)]
struct Accounts {
    all: Vec<String>,
    /// Index into `all` of the accounts of each non-empty partition.
    by_partition: Vec<Vec<usize>>,
    /// For each account, its index in `by_partition`.
    group_of: Vec<usize>,
}

impl Accounts {
    fn new(prefix: &str, count: u32, partitions: u32) -> Accounts {
        let all: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (index, account) in all.iter().enumerate() {
            groups
                .entry(partition_for_account(account, partitions))
                .or_default()
                .push(index);
        }
        let by_partition: Vec<Vec<usize>> = groups.into_values().collect();
        let mut group_of = vec![0; all.len()];
        for (group, members) in by_partition.iter().enumerate() {
            for index in members {
                group_of[*index] = group;
            }
        }
        Accounts {
            all,
            by_partition,
            group_of,
        }
    }
}

/// What a command line is, for the bookkeeping of its answer.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Deposit(u64),
    Withdraw(u64),
    LocalTransfer,
    CrossTransfer,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Deposit(_) => 0,
            Kind::Withdraw(_) => 1,
            Kind::LocalTransfer => 2,
            Kind::CrossTransfer => 3,
        }
    }
}

/// Builds one request body of `batch` commands.
fn build_batch(config: &LoadConfig, accounts: &Accounts, rng: &mut Rng) -> (String, Vec<Kind>) {
    let mut body = String::with_capacity(config.batch * 80);
    let mut kinds = Vec::with_capacity(config.batch);
    let multi = accounts.by_partition.len() > 1;
    for _ in 0..config.batch {
        let r = rng.unit();
        let from = rng.below(accounts.all.len());
        let group = accounts.group_of[from];
        let mut kind = if r < config.cross_partition_ratio && multi {
            Kind::CrossTransfer
        } else if r < config.cross_partition_ratio + config.transfer_ratio
            && accounts.by_partition[group].len() > 1
        {
            Kind::LocalTransfer
        } else if r < config.cross_partition_ratio + config.transfer_ratio + config.withdraw_ratio {
            Kind::Withdraw(1)
        } else {
            Kind::Deposit(1 + rng.below(100) as u64)
        };
        // Without a second partition (or partner), a transfer becomes a same-partition one or a
        // deposit: the mix stays as close as the topology allows.
        if r < config.cross_partition_ratio && !multi {
            kind = if accounts.by_partition[group].len() > 1 {
                Kind::LocalTransfer
            } else {
                Kind::Deposit(1)
            };
        }
        let from_name = &accounts.all[from];
        match kind {
            Kind::Deposit(amount) => body.push_str(&format!(
                "{{\"type\":\"deposit\",\"account\":\"{from_name}\",\"amount\":{amount}}}\n"
            )),
            Kind::Withdraw(amount) => body.push_str(&format!(
                "{{\"type\":\"withdraw\",\"account\":\"{from_name}\",\"amount\":{amount}}}\n"
            )),
            Kind::LocalTransfer | Kind::CrossTransfer => {
                let members = &accounts.by_partition[group];
                let to = if matches!(kind, Kind::LocalTransfer) {
                    // Another account of the same partition.
                    let mut to = members[rng.below(members.len())];
                    while to == from {
                        to = members[rng.below(members.len())];
                    }
                    to
                } else {
                    let mut other = rng.below(accounts.by_partition.len());
                    while other == group {
                        other = rng.below(accounts.by_partition.len());
                    }
                    let members = &accounts.by_partition[other];
                    members[rng.below(members.len())]
                };
                body.push_str(&format!(
                    "{{\"type\":\"transfer\",\"from\":\"{from_name}\",\"to\":\"{}\",\"amount\":1}}\n",
                    accounts.all[to]
                ));
            }
        }
        kinds.push(kind);
    }
    (body, kinds)
}

/// The `code` of a result line. Keys of result objects are written sorted, and account ids
/// cannot contain quotes, so the first `"code":` is the result's own.
pub fn result_code(line: &str) -> Option<u16> {
    let start = line.find("\"code\":")? + 7;
    let digits: String = line[start..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Shared between the request tasks and the progress line.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
    window: Mutex<Samples>,
}

/// What one request task accumulates.
#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: u64,
    codes: BTreeMap<u16, u64>,
    first_error: Option<String>,
    latency: Samples,
    by_kind: [u64; 4],
    deposited: u64,
    withdrawn: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.errors += other.errors;
        for (code, count) in other.codes {
            *self.codes.entry(code).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.extend(&other.latency);
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            *mine += theirs;
        }
        self.deposited += other.deposited;
        self.withdrawn += other.withdrawn;
    }

    fn error(&mut self, code: u16, count: u64, message: String) {
        self.errors += count;
        *self.codes.entry(code).or_default() += count;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

/// Sends one request and books its answer; `since` is when it was scheduled (or sent).
async fn send(
    client: &reqwest::Client,
    url: &str,
    body: String,
    kinds: &[Kind],
    since: Instant,
    tally: &mut Tally,
    live: &Live,
) {
    tally.requests += 1;
    let answer = async {
        let response = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    }
    .await;
    let latency = since.elapsed();
    let count = kinds.len() as u64;
    let (ok_before, errors_before) = (tally.ok, tally.errors);
    match answer {
        Err(error) => tally.error(0, count, format!("request failed: {error}")),
        Ok((status, text)) if status != 200 => tally.error(
            status,
            count,
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        ),
        Ok((_, text)) => {
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            for kind in kinds {
                match lines.next().map(|line| (result_code(line), line)) {
                    Some((Some(200), _)) => {
                        tally.ok += 1;
                        *tally.codes.entry(200).or_default() += 1;
                        tally.by_kind[kind.index()] += 1;
                        match kind {
                            Kind::Deposit(amount) => tally.deposited += amount,
                            Kind::Withdraw(amount) => tally.withdrawn += amount,
                            Kind::LocalTransfer | Kind::CrossTransfer => {}
                        }
                    }
                    Some((code, line)) => tally.error(
                        code.unwrap_or(0),
                        1,
                        format!("result {}", line.chars().take(300).collect::<String>()),
                    ),
                    None => tally.error(0, 1, "fewer result lines than commands".into()),
                }
            }
        }
    }
    tally.latency.record(latency, count);
    live.ok.fetch_add(tally.ok - ok_before, Ordering::Relaxed);
    live.errors
        .fetch_add(tally.errors - errors_before, Ordering::Relaxed);
    live.window
        .lock()
        .expect("window lock")
        .record(latency, count);
}

pub fn http_client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(concurrency.max(1) + 4)
        .build()
        .expect("build an HTTP client")
}

/// `GET /v1/ledger`: the number of partitions, the total and the money in flight.
pub async fn ledger(client: &reqwest::Client, url: &str) -> Result<(u32, u64, u64)> {
    let response = client
        .get(format!("{url}/v1/ledger"))
        .send()
        .await
        .with_context(|| format!("GET {url}/v1/ledger"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.context("ledger answer is not JSON")?;
    if status != 200 {
        bail!("GET {url}/v1/ledger answered {status}: {body}");
    }
    let partitions = body["partitions"]
        .as_array()
        .ok_or_else(|| anyhow!("no partitions in the ledger answer: {body}"))?;
    let in_flight: u64 = partitions
        .iter()
        .map(|p| p["inFlight"].as_u64().unwrap_or(0))
        .sum();
    let total = body["total"]
        .as_u64()
        .ok_or_else(|| anyhow!("no total in the ledger answer: {body}"))?;
    Ok((partitions.len() as u32, total, in_flight))
}

/// Gives every account [`SEED_AMOUNT`].
async fn seed_accounts(client: &reqwest::Client, url: &str, accounts: &Accounts) -> Result<()> {
    for chunk in accounts.all.chunks(SEED_BATCH) {
        let mut body = String::with_capacity(chunk.len() * 80);
        for account in chunk {
            body.push_str(&format!(
                "{{\"type\":\"deposit\",\"account\":\"{account}\",\"amount\":{SEED_AMOUNT}}}\n"
            ));
        }
        let response = client
            .post(format!("{url}/v1/commands"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .context("seeding the accounts")?;
        let status = response.status().as_u16();
        let text = response.text().await.context("seeding the accounts")?;
        if status != 200 {
            bail!("seeding the accounts: HTTP {status}: {text}");
        }
        if let Some(bad) = text.lines().find(|l| result_code(l) != Some(200)) {
            bail!("seeding the accounts: {bad}");
        }
    }
    Ok(())
}

/// Polls the ledger until no transfer is in flight; returns the total and how long it took.
async fn drained_total(client: &reqwest::Client, url: &str) -> Result<(u64, Duration)> {
    let started = Instant::now();
    loop {
        let (_, total, in_flight) = ledger(client, url).await?;
        if in_flight == 0 {
            return Ok((total, started.elapsed()));
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!(
                "{in_flight} still in flight {DRAIN_TIMEOUT:?} after the load stopped: cross-partition transfers do not land"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the live progress line until `done`.
async fn progress(label: String, duration: Duration, live: Arc<Live>, done: Arc<AtomicBool>) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_ok = 0u64;
    let mut last_at = started;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        ticks += 1;
        let now = Instant::now();
        let ok = live.ok.load(Ordering::Relaxed);
        let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        let p99 = {
            let mut window = live.window.lock().expect("window lock");
            let p99 = window.quantile(0.99);
            window.clear();
            p99
        };
        last_ok = ok;
        last_at = now;
        let line = format!(
            "[{label}] {:>3.0}/{:.0} s  {:>9} cmd/s  total {:>11}  p99 {:>9}  errors {}",
            started.elapsed().as_secs_f64(),
            duration.as_secs_f64(),
            thousands(rate as u64),
            thousands(ok),
            opt_ms(p99),
            live.errors.load(Ordering::Relaxed)
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if ticks.is_multiple_of(5) {
            eprintln!("{line}");
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
}

/// Runs the load described by `config` and reports it. Fails when the gateway cannot be reached
/// or the accounts cannot be seeded; command errors are counted, not fatal (see
/// [`LoadReport::problem`]).
pub async fn run(config: LoadConfig) -> Result<LoadReport> {
    config.validate()?;
    let url = config.url.trim_end_matches('/').to_string();
    let client = http_client(config.concurrency);
    let (partitions, _, _) = ledger(&client, &url)
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let accounts = Arc::new(Accounts::new(
        &config.account_prefix,
        config.accounts,
        partitions.max(1),
    ));
    seed_accounts(&client, &url, &accounts).await?;
    let total_before = if config.check_ledger {
        Some(drained_total(&client, &url).await?.0)
    } else {
        None
    };

    let live = Arc::new(Live::default());
    let done = Arc::new(AtomicBool::new(false));
    let printer = config
        .progress
        .clone()
        .map(|label| tokio::spawn(progress(label, config.duration, live.clone(), done.clone())));
    let load = Load {
        client: client.clone(),
        commands_url: format!("{url}/v1/commands"),
        accounts,
        live,
        started: Instant::now(),
    };
    let tally = if config.rate == 0 {
        load.closed_loop(&config).await?
    } else {
        load.open_loop(&config).await
    };
    let elapsed = load.started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(printer) = printer {
        let _ = printer.await;
    }

    let ledger = match total_before {
        Some(total_before) => Some(check_ledger(&client, &url, total_before, &tally).await?),
        None => None,
    };
    Ok(LoadReport {
        config,
        partitions,
        elapsed,
        requests: tally.requests,
        ok: tally.ok,
        errors: tally.errors,
        codes: tally.codes,
        first_error: tally.first_error,
        latency: tally.latency,
        by_kind: tally.by_kind,
        deposited: tally.deposited,
        withdrawn: tally.withdrawn,
        ledger,
    })
}

/// Waits until cross-partition transfers landed and compares the total with what the run
/// deposited and withdrew.
async fn check_ledger(
    client: &reqwest::Client,
    url: &str,
    total_before: u64,
    tally: &Tally,
) -> Result<LedgerCheck> {
    let (total_after, drained_in) = drained_total(client, url).await?;
    Ok(LedgerCheck {
        total_before,
        total_after,
        expected_after: total_before + tally.deposited - tally.withdrawn,
        drained_in,
    })
}

/// What every sender of a load shares.
struct Load {
    client: reqwest::Client,
    commands_url: String,
    accounts: Arc<Accounts>,
    live: Arc<Live>,
    started: Instant,
}

impl Load {
    /// `config.concurrency` workers, each sending its next request as soon as the previous one
    /// is answered, until `config.duration` is over.
    async fn closed_loop(&self, config: &LoadConfig) -> Result<Tally> {
        let deadline = self.started + config.duration;
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..config.concurrency {
            let (client, url, config, accounts, live) = (
                self.client.clone(),
                self.commands_url.clone(),
                config.clone(),
                self.accounts.clone(),
                self.live.clone(),
            );
            workers.spawn(async move {
                let mut rng = Rng::new(config.seed.wrapping_add(worker as u64 * 7919));
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let (body, kinds) = build_batch(&config, &accounts, &mut rng);
                    send(
                        &client,
                        &url,
                        body,
                        &kinds,
                        Instant::now(),
                        &mut tally,
                        &live,
                    )
                    .await;
                }
                tally
            });
        }
        let mut tally = Tally::default();
        while let Some(result) = workers.join_next().await {
            tally.merge(result.context("a load worker panicked")?);
        }
        Ok(tally)
    }

    /// One request every `batch / rate` seconds on a fixed schedule, at most
    /// `config.concurrency` in flight, until `config.duration` is over.
    async fn open_loop(&self, config: &LoadConfig) -> Tally {
        let deadline = self.started + config.duration;
        let interval = Duration::from_secs_f64(config.batch as f64 / config.rate as f64);
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let results = Arc::new(Mutex::new(Tally::default()));
        let mut rng = Rng::new(config.seed);
        let mut tasks = tokio::task::JoinSet::new();
        let mut k: u32 = 0;
        loop {
            let scheduled = self.started + interval * k;
            if scheduled >= deadline {
                break;
            }
            tokio::time::sleep_until(scheduled.into()).await;
            // Waiting for a permit delays the send, not the clock: latency counts from
            // `scheduled`.
            let permit = permits.clone().acquire_owned().await.expect("not closed");
            let (body, kinds) = build_batch(config, &self.accounts, &mut rng);
            let (client, url, live, results) = (
                self.client.clone(),
                self.commands_url.clone(),
                self.live.clone(),
                results.clone(),
            );
            tasks.spawn(async move {
                let mut tally = Tally::default();
                send(&client, &url, body, &kinds, scheduled, &mut tally, &live).await;
                results.lock().expect("results lock").merge(tally);
                drop(permit);
            });
            // Reap finished tasks as we go.
            while tasks.try_join_next().is_some() {}
            k += 1;
        }
        while tasks.join_next().await.is_some() {}
        let tally = std::mem::take(&mut *results.lock().expect("results lock"));
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_are_read() {
        assert_eq!(
            result_code(r#"{"account":"a","balance":5,"code":200}"#),
            Some(200)
        );
        assert_eq!(
            result_code(r#"{"code":409,"message":"insufficient funds"}"#),
            Some(409)
        );
        assert_eq!(result_code("garbage"), None);
    }

    #[test]
    fn batches_follow_the_mix_and_the_partitions() {
        let accounts = Accounts::new("t", 200, 3);
        assert_eq!(accounts.by_partition.len(), 3);
        let config = LoadConfig {
            batch: 10_000,
            cross_partition_ratio: 0.3,
            transfer_ratio: 0.2,
            withdraw_ratio: 0.1,
            ..LoadConfig::default()
        };
        let mut rng = Rng::new(3);
        let (body, kinds) = build_batch(&config, &accounts, &mut rng);
        assert_eq!(body.lines().count(), 10_000);
        let mut counts = [0usize; 4];
        for (line, kind) in body.lines().zip(&kinds) {
            counts[kind.index()] += 1;
            let value: Value = serde_json::from_str(line).unwrap();
            if matches!(kind, Kind::CrossTransfer | Kind::LocalTransfer) {
                let from = partition_for_account(value["from"].as_str().unwrap(), 3);
                let to = partition_for_account(value["to"].as_str().unwrap(), 3);
                assert_eq!(from != to, matches!(kind, Kind::CrossTransfer), "{line}");
                assert_ne!(value["from"], value["to"]);
            }
        }
        let share = |n: usize| n as f64 / 10_000.0;
        assert!((share(counts[3]) - 0.3).abs() < 0.03, "{counts:?}");
        assert!((share(counts[2]) - 0.2).abs() < 0.03, "{counts:?}");
        assert!((share(counts[1]) - 0.1).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn one_partition_has_no_cross_partition_transfers() {
        let accounts = Accounts::new("t", 10, 1);
        let config = LoadConfig {
            batch: 1000,
            cross_partition_ratio: 1.0,
            transfer_ratio: 0.0,
            withdraw_ratio: 0.0,
            ..LoadConfig::default()
        };
        let (_, kinds) = build_batch(&config, &accounts, &mut Rng::new(1));
        assert!(kinds.iter().all(|k| matches!(k, Kind::LocalTransfer)));
    }
}
