//! Load and ledger checks shared by the tests that run transfers under backups: a
//! deterministic transfer load and the drained ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{commands, get};

/// xorshift64*: deterministic, dependency-free randomness for the load.
pub struct Random(u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Default)]
pub struct LoadStats {
    pub batches: u64,
    pub completed: u64,
    pub pending: u64,
    pub refused: u64,
}

/// Batches of 100 transfers between random `accounts` (mostly cross-partition) until `stop`:
/// money moves, its total stays.
pub async fn transfer_load(api: String, accounts: Vec<String>, stop: Arc<AtomicBool>) -> LoadStats {
    let mut random = Random(0x5eed_cafe_f00d_d00d);
    let mut stats = LoadStats::default();
    while !stop.load(Ordering::SeqCst) {
        let lines: Vec<Value> = (0..100)
            .map(|_| {
                let from = random.below(accounts.len() as u64) as usize;
                let to = (from + 1 + random.below(accounts.len() as u64 - 1) as usize) % accounts.len();
                json!({"type": "transfer", "from": accounts[from], "to": accounts[to], "amount": 1 + random.below(40)})
            })
            .collect();
        for result in commands(&api, &lines).await {
            match (result["code"].as_u64(), result["status"].as_str()) {
                (Some(200), Some("COMPLETED")) => stats.completed += 1,
                (Some(200), Some("PENDING")) => stats.pending += 1,
                (Some(409), _) => stats.refused += 1,
                _ => panic!("unexpected transfer result {result}"),
            }
        }
        stats.batches += 1;
    }
    stats
}

/// Polls the ledger until no partition has money in flight; returns the ledger.
pub async fn drained_ledger(api: &str, context: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, ledger) = get(&format!("{api}/v1/ledger")).await;
        assert_eq!(status, 200, "{context}: GET /v1/ledger: {ledger}");
        let partitions = ledger["partitions"].as_array().expect("partitions");
        if partitions.iter().all(|p| p["inFlight"] == 0) {
            return ledger;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: outboxes never drained: {ledger}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of every partition's balances in a `GET /v1/ledger` answer.
pub fn balance_sum(ledger: &Value) -> u64 {
    ledger["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["balanceTotal"].as_u64().expect("balanceTotal"))
        .sum()
}
