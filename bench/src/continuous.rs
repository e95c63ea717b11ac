//! Continuous backups (rows 9a and 9b): closed-loop load with continuous backups on (the brokers
//! archive every sealed segment as it seals, `broker.data.backup.continuous`, and the gateway
//! writes a marker every 10 s, 1 s in quick mode, `gateway.backup.checkpointInterval`), against
//! the same load with both off, in the order off, on, on, off, each load right after a restart
//! of the cluster; the loads with them on start once the archivers caught up with the log
//! already on disk (the steady state; how long that took is a note). And the age of the newest
//! cluster-wide restore point during the loads with markers, sampled every 500 ms from
//! `GET /actuator/backups/restore-points` (the time since the newest checkpoint COMPLETED on
//! every partition was requested), from the first marker that completed (or, if none does, from
//! two intervals into the load, with the age counted from then).
//!
//! Marker ids are epoch milliseconds, so the bench's own ids continue above them; the cluster
//! ends the phase with continuous backups off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::report::{Met, Row};
use crate::run::{phase, Bench, Report};
use crate::stats::{thousands, Samples};

const INTERVAL_KEY: &str = "SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL";
const CONTINUOUS_KEY: &str = "SLUICE_BROKER_DATA_BACKUP_CONTINUOUS";
const ARCHIVED: &str = "sluice_archive_segments_archived_total";
const SENT: &str = "sluice_archive_uploaded_bytes_total";
/// How long the brokers may take to recover at a restart of the phase.
const RESTART_TIMEOUT: Duration = Duration::from_secs(600);
/// Targets of the issue: reported, never failed on.
const THROUGHPUT_RATIO_TARGET: f64 = 0.95;
const AGE_INTERVALS_TARGET: u32 = 2;
const AGE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

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
        // Off, on, on, off (each load right after a restart of the cluster, which turning
        // continuous backups on needs anyway): a drift of the machine over the phase weighs
        // on both sides alike.
        let mut off = Vec::new();
        let mut on = Vec::new();
        let mut ages = Samples::new();
        let mut markers = 0;
        for continuous in [false, true, true, false] {
            if continuous {
                let (throughput, round_ages, round_markers) =
                    self.load_with_continuous_backups(interval, report).await?;
                on.push(throughput);
                ages.extend(&round_ages);
                markers += round_markers;
            } else {
                phase("continuous: load without continuous backups");
                self.restart_continuous(None).await?;
                let config = self.load_config("no continuous backups, closed loop", &self.ep.api);
                off.push(self.load(config, report).await?.throughput());
            }
        }
        self.next_id = self.next_id.max(now_ms() + 1);
        let (with, without) = (mean(&on), mean(&off));
        let ratio = with / without;
        let every = humantime::format_duration(interval);
        report.rows.push(
            Row::new(
                "9a",
                format!("throughput with continuous backups: segments archived, a marker every {every} ({markers} restore points)"),
            )
            .sluice(format!("{} cmd/s (mean of 2)", thousands(with as u64)))
            .baseline(format!("off: {} cmd/s (mean of 2)", thousands(without as u64)))
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

    /// One load with continuous backups on, right after the restart that turns them on and
    /// the archivers' catching up: its throughput, the ages of the newest restore point
    /// sampled meanwhile, and how many restore points were seen.
    async fn load_with_continuous_backups(
        &mut self,
        interval: Duration,
        report: &mut Report,
    ) -> Result<(f64, Samples, usize)> {
        phase("continuous: load with sealed segments archived and a marker every interval");
        self.restart_continuous(Some(interval)).await?;
        // The steady state is measured: turned on, each broker first archives the log already
        // on disk (or, after a restart, checks what it archived before against its bytes).
        let caught_up = self.archives_caught_up().await?;
        report.note(format!(
            "continuous backups turned on: the brokers archived (or checked) the log already on disk in {:.1} s, before the load with them",
            caught_up.as_secs_f64()
        ));
        let archived_before = self.archive_sum(ARCHIVED).await?;
        let sent_before = self.archive_sum(SENT).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample_ages(
            self.client.clone(),
            self.ep.mgmt.clone(),
            now_ms() + 2 * interval.as_millis() as u64,
            stop.clone(),
        ));
        let label = "segments archived, a marker every interval, closed loop";
        let load = self
            .load(self.load_config(label, &self.ep.api), report)
            .await;
        stop.store(true, Ordering::Relaxed);
        let archived = self.archive_sum(ARCHIVED).await? - archived_before;
        let sent = self.archive_sum(SENT).await? - sent_before;
        report.note(format!(
            "during that load the archivers archived {archived} sealed segments, sending {:.1} MiB",
            sent / (1024.0 * 1024.0)
        ));
        let (ages, markers) = sampler
            .await
            .context("the restore point sampler panicked")??;
        Ok((load?.throughput(), ages, markers))
    }

    /// Waits until no broker has a sealed segment waiting for its upload; how long that took.
    async fn archives_caught_up(&self) -> Result<Duration> {
        let started = Instant::now();
        // The archivers publish their first lag as they start.
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            let waiting = self.archive_sum("sluice_archive_lag_bytes").await?;
            if waiting == 0.0 {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < RESTART_TIMEOUT,
                "the archivers still had {waiting} bytes waiting after {RESTART_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The sum over every broker and partition of the series of `family`.
    async fn archive_sum(&self, family: &str) -> Result<f64> {
        let mut sum = 0.0;
        for broker in &self.spec.brokers {
            let url = self.spec.broker_metrics_url(broker.node_id);
            let text = self.client.get(&url).send().await?.text().await?;
            let samples = sluice_protocol::metrics::parse_text(&text)
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            sum += samples
                .iter()
                .filter(|(series, _)| series.starts_with(&format!("{family}{{")))
                .map(|(_, value)| value)
                .sum::<f64>();
        }
        Ok(sum)
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
/// marker requested after the sampler started that completed (at the latest from `from_ms`)
/// until `stop`, and how many such restore points were seen.
async fn sample_ages(
    client: reqwest::Client,
    mgmt: String,
    from_ms: u64,
    stop: Arc<AtomicBool>,
) -> Result<(Samples, usize)> {
    let mut ages = Samples::new();
    let mut seen = std::collections::BTreeSet::new();
    // Markers of an earlier load (before the restart) are not this load's restore points.
    let load_started_ms = now_ms();
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
        let running =
            newest["kind"] == "MARKER" && requested_ms.is_some_and(|at| at >= load_started_ms);
        if running || now >= from_ms {
            // No restore point at all counts as old as the phase.
            let age_ms = now.saturating_sub(requested_ms.unwrap_or(from_ms));
            ages.record(Duration::from_millis(age_ms), 1);
        }
        if let (Some(id), true) = (newest["id"].as_u64(), running) {
            seen.insert(id);
        }
        tokio::time::sleep(AGE_SAMPLE_EVERY.saturating_sub(started.elapsed())).await;
    }
    Ok((ages, seen.len()))
}
