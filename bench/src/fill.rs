//! The fill: deposits to 128-character accounts of partition [`BIG`] through `/v1/commands` until
//! the partition holds the wanted number of bytes.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_broker::routing::partition_for_account;

use crate::loadgen::{self, Rng};
use crate::run::{BIG, PARTITIONS};
use crate::stats::{mb_per_s, size, thousands};
use crate::sys;

/// Accounts of the fill (128-character ids, all on partition [`BIG`]).
const FILL_ACCOUNTS: usize = 10_000;
/// Commands per fill request (the gateway's maximum).
const FILL_BATCH: usize = 10_000;
/// Fill requests in flight.
const FILL_SENDERS: usize = 3;

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

/// 128-character account ids on partition [`BIG`], pseudo-random so the data is not trivially
/// compressible.
pub fn fill_accounts() -> Vec<String> {
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

/// What a fill did.
pub struct Filled {
    /// How much the partition grew.
    pub grown_bytes: u64,
    /// Deposits sent.
    pub commands: u64,
    pub elapsed: Duration,
}

/// Deposits to `accounts` through the gateway at `api`, [`FILL_SENDERS`] requests in flight,
/// until `dir` (the partition's directory) holds `target_bytes`; `None` when it already does.
/// The first failed request stops the fill and is the error.
pub async fn fill(
    client: &reqwest::Client,
    api: &str,
    accounts: &[String],
    dir: &Path,
    target_bytes: u64,
) -> Result<Option<Filled>> {
    let initial = sys::tree_size(dir);
    if initial >= target_bytes {
        return Ok(None);
    }
    let mut senders = Senders::start(client, api, fill_bodies(accounts, 4));
    let started = Instant::now();
    watch_growth(dir, initial, target_bytes, &senders).await;
    let commands = senders.finish().await?;
    let elapsed = started.elapsed();
    Ok(Some(Filled {
        grown_bytes: sys::tree_size(dir) - initial,
        commands,
        elapsed,
    }))
}

/// Shows the growth of `dir` until it holds `target_bytes` or the senders stopped (on a
/// failure); then tells the senders to stop.
async fn watch_growth(dir: &Path, initial: u64, target_bytes: u64, senders: &Senders) {
    let started = Instant::now();
    let mut progress = Progress::new(25);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sys::tree_size(dir);
        let rate = mb_per_s(now.saturating_sub(initial), started.elapsed());
        progress.show(&format!(
            "[fill] {} / {}  {rate:.1} MB/s of log  {} commands",
            size(now),
            size(target_bytes),
            thousands(senders.sent.load(Ordering::Relaxed))
        ));
        if now >= target_bytes || senders.stop.load(Ordering::Relaxed) {
            senders.stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    progress.done();
}

/// The tasks sending fill requests, each cycling through the bodies until told to stop.
struct Senders {
    stop: Arc<AtomicBool>,
    /// Commands answered so far.
    sent: Arc<AtomicU64>,
    /// The first failure; it also sets `stop`.
    failure: Arc<Mutex<Option<anyhow::Error>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Senders {
    fn start(client: &reqwest::Client, api: &str, bodies: Vec<Arc<String>>) -> Senders {
        let mut senders = Senders {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            failure: Arc::new(Mutex::new(None)),
            tasks: tokio::task::JoinSet::new(),
        };
        for sender in 0..FILL_SENDERS {
            let (client, api, bodies, stop, sent, failure) = (
                client.clone(),
                api.to_string(),
                bodies.clone(),
                senders.stop.clone(),
                senders.sent.clone(),
                senders.failure.clone(),
            );
            senders.tasks.spawn(async move {
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
        senders
    }

    /// Stops the senders, waits for them, and returns the commands sent or the first failure.
    async fn finish(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        if let Some(error) = self.failure.lock().expect("lock").take() {
            return Err(error);
        }
        Ok(self.sent.load(Ordering::Relaxed))
    }
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
pub async fn send_commands(client: &reqwest::Client, api: &str, body: String) -> Result<u64> {
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
