//! Continuous backups (rows 9a and 9b): closed-loop load with continuous backups on (the brokers
//! archive every sealed segment as it seals, `broker.data.backup.continuous`, and the gateway
//! writes a marker every 10 s, 1 s in quick mode, `gateway.backup.checkpointInterval`), against
//! the same load with both off run right before it; and the age of the newest cluster-wide restore point during the
//! load with markers, sampled every 500 ms from `GET /actuator/backups/restore-points` (the time
//! since the newest checkpoint COMPLETED on every partition was requested), from the first
//! marker that completed (or, if none does, from two intervals into the phase, with the age
//! counted from then).
//!
//! The cluster restarts with continuous backups on for the phase and off after it; marker ids
//! are epoch milliseconds, so the bench's own ids continue above them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::report::{Met, Row};
use crate::run::{phase, Bench, Report};
use crate::stats::{thousands, Samples};

const INTERVAL_KEY: &str = "SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL";
const CONTINUOUS_KEY: &str = "SLUICE_BROKER_DATA_BACKUP_CONTINUOUS";
/// How long the brokers may take to recover at a restart of the phase.
const RESTART_TIMEOUT: Duration = Duration::from_secs(600);
/// Targets of the issue: reported, never failed on.
const THROUGHPUT_RATIO_TARGET: f64 = 0.95;
const AGE_INTERVALS_TARGET: u32 = 2;
const AGE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Bench {
    /// Rows 9a and 9b (see the module doc).
    pub(crate) async fn continuous_backups(&mut self, report: &mut Report) -> Result<()> {
        let interval = self.periodic_interval();
        let api = self.ep.api.clone();
        phase("continuous: load without continuous backups");
        let without = self
            .load(
                self.load_config("no continuous backups, closed loop", &api),
                report,
            )
            .await?;
        phase("continuous: load with sealed segments archived and a marker every interval");
        self.restart_continuous(Some(interval)).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample_ages(
            self.client.clone(),
            self.ep.mgmt.clone(),
            now_ms() + 2 * interval.as_millis() as u64,
            stop.clone(),
        ));
        let with = self
            .load(
                self.load_config(
                    "segments archived, a marker every interval, closed loop",
                    &api,
                ),
                report,
            )
            .await;
        stop.store(true, Ordering::Relaxed);
        let (mut ages, markers) = sampler
            .await
            .context("the restore point sampler panicked")??;
        self.restart_continuous(None).await?;
        self.next_id = self.next_id.max(now_ms() + 1);
        let with = with?;
        let ratio = with.throughput() / without.throughput();
        let every = humantime::format_duration(interval);
        report.rows.push(
            Row::new(
                "9a",
                format!("throughput with continuous backups: segments archived, a marker every {every} ({markers} restore points)"),
            )
            .sluice(format!("{} cmd/s", thousands(with.throughput() as u64)))
            .baseline(format!(
                "off: {} cmd/s",
                thousands(without.throughput() as u64)
            ))
            .ratio(Some(ratio))
            .target(
                format!(">= {THROUGHPUT_RATIO_TARGET:.2}x"),
                Met::from_bool(ratio >= THROUGHPUT_RATIO_TARGET),
            ),
        );
        let target = interval * AGE_INTERVALS_TARGET;
        let p99 = ages.quantile(0.99);
        report.rows.push(
            Row::new(
                "9b",
                format!(
                    "age of the newest cluster-wide restore point, p99 ({} samples)",
                    ages.len()
                ),
            )
            .sluice(p99.map_or_else(|| "none".to_string(), |age| format!("{age:.2?}")))
            .baseline(format!("checkpointInterval: {every}"))
            .ratio(p99.map(|age| age.as_secs_f64() / interval.as_secs_f64()))
            .target(
                format!("<= {AGE_INTERVALS_TARGET} x interval"),
                Met::from_bool(p99.is_some_and(|age| age <= target)),
            ),
        );
        Ok(())
    }

    /// Restarts the cluster with continuous backups on (segments archived by the brokers, a
    /// marker every `interval` from the gateway) or off.
    async fn restart_continuous(&mut self, interval: Option<Duration>) -> Result<()> {
        match interval {
            Some(interval) => {
                let every = format!("{}ms", interval.as_millis());
                self.spec
                    .gateway_common
                    .insert(INTERVAL_KEY.to_string(), every);
                self.spec
                    .broker_common
                    .insert(CONTINUOUS_KEY.to_string(), "true".to_string());
            }
            None => {
                self.spec.gateway_common.remove(INTERVAL_KEY);
                self.spec.broker_common.remove(CONTINUOUS_KEY);
            }
        }
        self.restart(RESTART_TIMEOUT).await?;
        Ok(())
    }
}

/// The age of the newest cluster-wide restore point every [`AGE_SAMPLE_EVERY`], from the first
/// completed marker (at the latest from `from_ms`) until `stop`, and how many restore points
/// were seen meanwhile.
async fn sample_ages(
    client: reqwest::Client,
    mgmt: String,
    from_ms: u64,
    stop: Arc<AtomicBool>,
) -> Result<(Samples, usize)> {
    let mut ages = Samples::new();
    let mut seen = std::collections::BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let points: serde_json::Value = client
            .get(format!("{mgmt}/actuator/backups/restore-points"))
            .send()
            .await
            .context("GET /actuator/backups/restore-points")?
            .error_for_status()
            .context("GET /actuator/backups/restore-points")?
            .json()
            .await
            .context("restore points are JSON")?;
        let newest = &points["newest"];
        let requested_ms = newest["requestedAt"]
            .as_str()
            .and_then(|at| humantime::parse_rfc3339(at).ok())
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|at| at.as_millis() as u64);
        let now = now_ms();
        let running = newest["kind"] == "MARKER";
        if running || now >= from_ms {
            // No restore point at all counts as old as the phase.
            let age_ms = now.saturating_sub(requested_ms.unwrap_or(from_ms));
            ages.record(Duration::from_millis(age_ms), 1);
        }
        if let Some(id) = newest["id"].as_u64() {
            seen.insert(id);
        }
        tokio::time::sleep(AGE_SAMPLE_EVERY.saturating_sub(started.elapsed())).await;
    }
    Ok((ages, seen.len()))
}
