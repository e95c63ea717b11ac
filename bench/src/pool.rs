//! The pool's figures (rows 7a to 7d): what a backup costs once an earlier one is in the store.
//!
//! - 7a/7b: after the full backup of phase 3, ten rounds of "1% of partition [`BIG`]'s accounts
//!   change, then a backup" on the same cluster (no snapshot between: the 1 h period). 7a is what
//!   the first such backup uploaded against what the full backup references; 7b the store bytes
//!   the ten backups hold together (every object they reference, once) against the full backup.
//! - 7c: closed-loop load with a backup every 10 s (1 s in quick mode) against the same load
//!   without backups, run right after it.
//! - 7d: the same 1% change when a new snapshot is taken between the two backups (the brokers
//!   restart with a 1 s snapshot period on a fresh filesystem store, so the partition is mostly
//!   its snapshot): the second backup builds on the pooled snapshot and carries the log since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_backup_store::{BackupStore, BackupStoreOptions, Manifest, ObjectId, StoreKind};

use crate::backups::{describe_backup, trigger, wait_completed, Described};
use crate::fill::send_commands;
use crate::report::{Met, Row};
use crate::run::{phase, Bench, Report, BIG};
use crate::stats::{size, thousands};

/// Rounds of 7b.
const ROUNDS: usize = 10;
/// The share of the accounts one round changes.
const CHANGED_SHARE: f64 = 0.01;
/// Targets of the issue: reported, never failed on.
const UPLOADED_SHARE_TARGET: f64 = 0.02;
const HELD_RATIO_TARGET: f64 = 1.2;
const PERIODIC_RATIO_TARGET: f64 = 0.9;

/// What a backup references and uploaded new, over all partitions.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    referenced_bytes: u64,
    uploaded_bytes: u64,
}

fn cost(described: &Described) -> Cost {
    let mut cost = Cost::default();
    for manifest in &described.manifests {
        cost.referenced_bytes += manifest.referenced_bytes();
        cost.uploaded_bytes += manifest.uploaded_bytes();
    }
    cost
}

/// The stored bytes of every object (or per-backup file) the manifests reference, each once.
fn held_bytes<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> u64 {
    let mut objects: HashMap<(u32, ObjectId), u64> = HashMap::new();
    let mut files = 0;
    for manifest in manifests {
        for file in &manifest.files {
            match &file.pieces {
                Some(pieces) => {
                    for piece in pieces {
                        objects
                            .insert((manifest.id.partition_id, piece.object), piece.stored_bytes);
                    }
                }
                None => files += file.stored_bytes,
            }
        }
    }
    files + objects.values().sum::<u64>()
}

fn share(part: u64, whole: u64) -> f64 {
    part as f64 / whole.max(1) as f64
}

impl Bench {
    /// Changes [`CHANGED_SHARE`] of partition [`BIG`]'s accounts (a deposit of 1 each, a
    /// different set each `round`).
    async fn change_accounts(&self, round: usize) -> Result<()> {
        let accounts = &self.fill_accounts;
        let count = ((accounts.len() as f64 * CHANGED_SHARE) as usize).max(1);
        let body: String = (0..count)
            .map(|i| {
                let account = &accounts[(round * 7919 + i * 97) % accounts.len()];
                format!("{{\"type\":\"deposit\",\"account\":\"{account}\",\"amount\":1}}\n")
            })
            .collect();
        send_commands(&self.client, &self.ep.api, body)
            .await
            .map(|_| ())
            .map_err(|e| self.with_logs(e))
    }

    /// A backup on the running cluster, as `store` describes it once COMPLETED.
    async fn described_backup(&mut self, store: &BackupStore) -> Result<Described> {
        let id = self.next_id();
        self.backup(id, self.config.timeout_for(self.config.state_bytes))
            .await?;
        describe_backup(store, id).await
    }

    /// Rows 7a and 7b (see the module doc), after `full`, the first full backup to S3.
    pub(crate) async fn pool_rounds(
        &mut self,
        full: &Described,
        report: &mut Report,
    ) -> Result<()> {
        phase("pool: 1% of the accounts change between backups");
        let full_cost = cost(full);
        let s3 = self.s3.clone();
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            self.change_accounts(round).await?;
            rounds.push(self.described_backup(&s3).await?);
        }
        let uploaded: Vec<u64> = rounds.iter().map(|r| cost(r).uploaded_bytes).collect();
        let held = held_bytes(rounds.iter().flat_map(|r| &r.manifests));
        report.note(format!(
            "pool: full backup {} references {}; each of {ROUNDS} backups after {:.0}% of the accounts changed uploaded {} (the log written since the last backup: no snapshot was taken between)",
            full.manifests[0].id.checkpoint_id,
            size(full_cost.referenced_bytes),
            CHANGED_SHARE * 100.0,
            uploaded.iter().map(|b| size(*b)).collect::<Vec<_>>().join(", ")
        ));
        let first = share(uploaded[0], full_cost.referenced_bytes);
        report.rows.push(
            Row::new(
                "7a",
                "bytes uploaded by a backup after 1% of the accounts changed",
            )
            .sluice(size(uploaded[0]))
            .baseline(format!("full backup: {}", size(full_cost.referenced_bytes)))
            .ratio_text(format!("{:.2}%", first * 100.0))
            .target(
                format!("<= {:.0}%", UPLOADED_SHARE_TARGET * 100.0),
                Met::from_bool(first <= UPLOADED_SHARE_TARGET),
            ),
        );
        let held_ratio = share(held, full_cost.referenced_bytes);
        report.rows.push(
            Row::new("7b", format!("store bytes held by {ROUNDS} such backups"))
                .sluice(size(held))
                .baseline(format!(
                    "one full backup: {}",
                    size(full_cost.referenced_bytes)
                ))
                .ratio(Some(held_ratio))
                .target(
                    format!("<= {HELD_RATIO_TARGET:.1}x"),
                    Met::from_bool(held_ratio <= HELD_RATIO_TARGET),
                ),
        );
        Ok(())
    }

    /// Row 7c: closed-loop load without backups, then the same load with a backup every
    /// `interval` (each waited for before the next is due).
    pub(crate) async fn periodic_backups_impact(&mut self, report: &mut Report) -> Result<()> {
        let interval = self.periodic_interval();
        let api = self.ep.api.clone();
        phase("pool: load without backups");
        let without = self
            .load(self.load_config("no backup, closed loop", &api), report)
            .await?;
        phase("pool: load with a backup every interval");
        let stop = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn(periodic(
            self.client.clone(),
            self.ep.mgmt.clone(),
            self.next_id,
            interval,
            stop.clone(),
            self.config.timeout_for(self.config.state_bytes),
        ));
        let with = self
            .load(
                self.load_config("a backup every interval, closed loop", &api),
                report,
            )
            .await;
        stop.store(true, Ordering::Relaxed);
        let (taken, next_id) = driver
            .await
            .context("the periodic backup driver panicked")?
            .map_err(|e| self.with_logs(e.context("periodic backups")))?;
        self.next_id = next_id;
        let with = with?;
        let ratio = with.throughput() / without.throughput();
        report.rows.push(
            Row::new(
                "7c",
                format!(
                    "throughput with a backup every {} ({taken} backups)",
                    humantime::format_duration(interval)
                ),
            )
            .sluice(format!("{} cmd/s", thousands(with.throughput() as u64)))
            .baseline(format!(
                "no backup: {} cmd/s",
                thousands(without.throughput() as u64)
            ))
            .ratio(Some(ratio))
            .target(
                format!(">= {PERIODIC_RATIO_TARGET:.1}x"),
                Met::from_bool(ratio >= PERIODIC_RATIO_TARGET),
            ),
        );
        Ok(())
    }

    /// Row 7d (see the module doc). Restarts the brokers on a fresh filesystem store with a 1 s
    /// snapshot period; the log since the last snapshot is compacted away, so the partition is
    /// mostly its snapshot.
    pub(crate) async fn pool_after_new_snapshot(&mut self, report: &mut Report) -> Result<()> {
        phase("pool: 1% of the accounts change and a snapshot is taken between backups");
        let root = self.spec.root().join("fs-pool-backups");
        self.use_filesystem_store(&root);
        self.spec
            .broker_common
            .insert("SLUICE_BROKER_DATA_SNAPSHOTPERIOD".into(), "1s".into());
        self.restart(self.config.timeout_for(self.config.state_bytes))
            .await?;
        let store = BackupStore::open(BackupStoreOptions::new(
            StoreKind::Filesystem { root: root.clone() },
            None,
        ))?;
        // A snapshot of the recovered state, and compaction of the log before it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let first = self.described_backup(&store).await?;
        self.change_accounts(ROUNDS).await?;
        tokio::time::sleep(Duration::from_secs(3)).await; // a newer snapshot is taken
        let second = self.described_backup(&store).await?;
        let (first_cost, second_cost) = (cost(&first), cost(&second));
        let snapshot_of = |d: &Described| {
            d.manifests
                .iter()
                .find(|m| m.id.partition_id == BIG)
                .and_then(|m| m.descriptor.snapshot_id.clone())
                .unwrap_or_default()
        };
        report.note(format!(
            "pool after a new snapshot: backup {} ({} referenced, snapshot {}) then 1% of the accounts changed, a snapshot was taken, and backup {} uploaded {} of the {} it references (snapshot {}: {})",
            first.manifests[0].id.checkpoint_id,
            size(first_cost.referenced_bytes),
            snapshot_of(&first),
            second.manifests[0].id.checkpoint_id,
            size(second_cost.uploaded_bytes),
            size(second_cost.referenced_bytes),
            snapshot_of(&second),
            if snapshot_of(&first) == snapshot_of(&second) {
                "built on the pooled snapshot, the log since it is the delta"
            } else {
                "a new snapshot was uploaded"
            }
        ));
        let ratio = share(second_cost.uploaded_bytes, first_cost.referenced_bytes);
        report.rows.push(
            Row::new(
                "7d",
                "bytes uploaded after 1% of the accounts changed and a snapshot was taken",
            )
            .sluice(size(second_cost.uploaded_bytes))
            .baseline(format!(
                "full backup: {}",
                size(first_cost.referenced_bytes)
            ))
            .ratio_text(format!("{:.2}%", ratio * 100.0))
            .target(
                format!("<= {:.0}%", UPLOADED_SHARE_TARGET * 100.0),
                Met::from_bool(ratio <= UPLOADED_SHARE_TARGET),
            ),
        );
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}

/// A backup every `interval` until `stop`, each waited for; how many and the next id.
async fn periodic(
    client: reqwest::Client,
    mgmt: String,
    first_id: u64,
    interval: Duration,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<(usize, u64)> {
    let mut next_id = first_id;
    let mut taken = 0;
    let mut due = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < due {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        due += interval;
        trigger(&client, &mgmt, next_id).await?;
        wait_completed(&client, &mgmt, next_id, timeout, Duration::from_millis(100)).await?;
        next_id += 1;
        taken += 1;
    }
    Ok((taken, next_id))
}
