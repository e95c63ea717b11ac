//! The phases of `sluice-bench` (see [`crate::run`]): each measures on the running [`Bench`],
//! adds its notes and rows to the [`Report`], and returns what later rows need.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_tests::{Env, Proc};

use crate::backups::{describe_backup, local_files, BackToBack, Described};
use crate::external;
use crate::fill::send_commands;
use crate::loadgen::{LoadConfig, LoadReport};
use crate::report::{Met, Row};
use crate::run::{phase, Bench, Report, BIG, MIB, RSS_POLL};
use crate::stats::{mb_per_s, ms, opt_ms, secs, size, thousands, Samples};
use crate::sys::{self, RssSampler};

/// Targets of the issue: reported, never failed on.
const UPLOAD_RATIO_TARGET: f64 = 1.5;
const RESTORE_RATIO_TARGET: f64 = 1.5;
const IMPACT_RATIO_TARGET: f64 = 0.95;
const TRIGGER_P99_TARGET: Duration = Duration::from_millis(100);
const RSS_GROWTH_BYTES_TARGET: u64 = 128 * MIB;
/// The restore tool holds a few download ranges and one decoder per file: its peak must not
/// depend on the size of the backup.
const RESTORE_RSS_BYTES_TARGET: u64 = 128 * MIB;
/// How long the first snapshot of the seeded state may take.
const FIRST_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of the `sync` runs of the baselines.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// A trigger-latency series at one state size.
pub struct TriggerLatency {
    /// Size of partition [`BIG`] when measured.
    pub state_bytes: u64,
    pub triggers: Samples,
}

/// The S3 backup of phase 3 and broker 0's memory during it.
pub struct S3Backup {
    pub id: u64,
    pub described: Described,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_samples: u64,
    /// VmHWM of broker 0 (its whole lifetime).
    pub hwm: u64,
}

/// The restore of phase 4.
pub struct RestoreRun {
    pub bytes: u64,
    pub rss_peak: u64,
}

/// A load with and without back-to-back backups.
struct Impact {
    without: LoadReport,
    with: LoadReport,
    backups: BackToBack,
    rss_growth: u64,
}

impl Bench {
    /// Starts the cluster, deposits 1 to every fill account, waits for the first snapshot of
    /// that state (1 s period), then restarts the brokers with a 1 h period, so that every later
    /// record stays in the log.
    pub(crate) async fn seed(&mut self) -> Result<()> {
        phase("seeding accounts, first snapshot");
        self.restart(Duration::from_secs(60)).await?;
        let seed: String = self
            .fill_accounts
            .iter()
            .map(|a| format!("{{\"type\":\"deposit\",\"account\":\"{a}\",\"amount\":1}}\n"))
            .collect();
        send_commands(&self.client, &self.ep.api, seed)
            .await
            .map_err(|e| self.with_logs(e))?;
        self.wait_first_snapshot().await?;
        self.spec
            .broker_common
            .insert("SLUICE_BROKER_DATA_SNAPSHOTPERIOD".into(), "1h".into());
        self.restart(Duration::from_secs(60)).await?;
        Ok(())
    }

    async fn wait_first_snapshot(&self) -> Result<()> {
        let snapshots = self.partition_dir(BIG).join("snapshots");
        let waited = Instant::now();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        while !has_snapshot(&snapshots) {
            if waited.elapsed() > FIRST_SNAPSHOT_TIMEOUT {
                return Err(
                    self.with_logs(anyhow!("no snapshot in {} after 30 s", snapshots.display()))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Phase 1: trigger latency at the small state.
    pub(crate) async fn small_state_triggers(
        &mut self,
        report: &mut Report,
    ) -> Result<TriggerLatency> {
        phase("trigger latency at the small state");
        self.fill(self.config.small_state_bytes, report).await?;
        self.trigger_latency(report).await
    }

    /// Phase 2: fill to the large state.
    pub(crate) async fn grow(&mut self, report: &mut Report) -> Result<()> {
        phase(&format!(
            "growing partition {BIG} to {}",
            size(self.config.state_bytes)
        ));
        self.fill(self.config.state_bytes, report).await
    }

    /// Phase 6: trigger latency at the large state.
    pub(crate) async fn large_state_triggers(
        &mut self,
        report: &mut Report,
    ) -> Result<TriggerLatency> {
        phase("trigger latency at the large state");
        self.trigger_latency(report).await
    }

    async fn trigger_latency(&mut self, report: &mut Report) -> Result<TriggerLatency> {
        let state_bytes = sys::tree_size(&self.partition_dir(BIG));
        // `backups`: how long after its POST each backup was COMPLETED (for the note).
        let (mut triggers, mut backups) = self
            .trigger_series(self.config.trigger_samples, self.config.trigger_budget)
            .await?;
        report.note(format!(
            "trigger latency at {} (partition {BIG}): {} triggers, each on a quiet cluster (the previous backup COMPLETED), p50 {}, p99 {}, max {}; backups COMPLETED after p50 {}",
            size(state_bytes),
            triggers.len(),
            opt_ms(triggers.quantile(0.5)),
            opt_ms(triggers.quantile(0.99)),
            opt_ms(triggers.max()),
            opt_ms(backups.quantile(0.5)),
        ));
        Ok(TriggerLatency {
            state_bytes,
            triggers,
        })
    }

    /// Phase 3: a backup to S3 with broker 0's RSS sampled, then `aws s3 cp` of the same files
    /// (row 1a).
    pub(crate) async fn backup_to_s3(&mut self, report: &mut Report) -> Result<S3Backup> {
        phase("backup to S3 (Garage)");
        let state_bytes = sys::tree_size(&self.partition_dir(BIG));
        let pid = self.broker_pid(0)?;
        let rss_before = sys::rss(pid).unwrap_or(0);
        let cpu_before = sys::cpu_time(pid);
        let sampler = RssSampler::start(pid, RSS_POLL);
        let id = self.next_id();
        let (trigger_latency, backup_time) = self
            .backup(id, self.config.timeout_for(state_bytes))
            .await?;
        let (rss_peak, rss_samples) = sampler.finish();
        let cpu = sys::cpu_time(pid)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let hwm = sys::proc_status_bytes(pid, "VmHWM").unwrap_or(0);
        let described = describe_backup(&self.s3, id).await?;
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
        let measured = self.upload_baseline(&described, backup_rate).await?;
        if let Some(cpu) = cpu {
            let gib = backup_bytes as f64 / (1u64 << 30) as f64;
            report.rows.push(
                Row::new(
                    "1c",
                    "broker CPU per GiB backed up to S3 (row 1a, node 0, user + system)",
                )
                .sluice(format!(
                    "{:.2} s/GiB ({} for {})",
                    cpu.as_secs_f64() / gib.max(1e-9),
                    secs(cpu),
                    size(backup_bytes)
                ))
                .target("reported", Met::NotApplicable),
            );
        }
        report.rows.push(
            Row::new(
                "1a",
                format!("backup to S3, {} (POST -> COMPLETED)", size(backup_bytes)),
            )
            .sluice(format!("{backup_rate:.0} MB/s ({})", secs(backup_time)))
            .against_minimum(measured, UPLOAD_RATIO_TARGET),
        );
        Ok(S3Backup {
            id,
            described,
            rss_before,
            rss_peak,
            rss_samples,
            hwm,
        })
    }

    /// `aws s3 cp --recursive` of the backup's files (as hard links) to the same bucket: the
    /// baseline text and Sluice's rate over it, or why there is none.
    async fn upload_baseline(
        &self,
        described: &Described,
        backup_rate: f64,
    ) -> Result<std::result::Result<(String, f64), &'static str>> {
        let upload_dir = self.spec.root().join("baseline-upload");
        external::link_tree(&upload_dir, &local_files(&self.spec, described))?;
        let upload_bytes = sys::tree_size(&upload_dir);
        let Ok(aws) = &self.aws else {
            return Ok(Err("n/a (no awscli)"));
        };
        phase("baseline: aws s3 cp --recursive (upload)");
        let elapsed = aws
            .cp_recursive(
                &upload_dir.to_string_lossy(),
                &format!("s3://{}/awscli-baseline/upload/", self.bucket),
                self.config.timeout_for(upload_bytes),
            )
            .await?;
        let rate = mb_per_s(upload_bytes, elapsed);
        Ok(Ok((
            format!("aws s3 cp: {rate:.0} MB/s ({})", secs(elapsed)),
            backup_rate / rate,
        )))
    }

    /// Phase 4: `bin/restore` of that backup for node 0, then `aws s3 cp` download of the same
    /// files (row 2).
    pub(crate) async fn restore_node_0(
        &self,
        backup: &S3Backup,
        report: &mut Report,
    ) -> Result<RestoreRun> {
        phase("restore of node 0 (bin/restore)");
        let id = backup.id;
        let restore_bytes = backup.described.bytes_of(BIG);
        let restore_dir = self.spec.root().join("restore-node-0");
        let (restore_time, restore_out, rss_peak) = self
            .run_restore_tool(id, &restore_dir, restore_bytes)
            .await?;
        let restore_rate = mb_per_s(restore_bytes, restore_time);
        report.note(format!(
            "restore: {} in {}, peak VmRSS {} (sampled every {}): {}",
            size(restore_bytes),
            secs(restore_time),
            size(rss_peak),
            ms(RSS_POLL),
            restore_out.trim()
        ));
        std::fs::remove_dir_all(&restore_dir)?;
        let measured = self
            .download_baseline(restore_bytes, restore_rate, report)
            .await?;
        report.rows.push(
            Row::new(
                "2",
                format!(
                    "restore from S3, {} (bin/restore, verified)",
                    size(restore_bytes)
                ),
            )
            .sluice(format!("{restore_rate:.0} MB/s ({})", secs(restore_time)))
            .against_minimum(measured, RESTORE_RATIO_TARGET),
        );
        Ok(RestoreRun {
            bytes: restore_bytes,
            rss_peak,
        })
    }

    /// `sluice-restore <id>` with node 0's configuration into `restore_dir`, its peak RSS
    /// sampled: wall time, standard output, peak RSS.
    pub(crate) async fn run_restore_tool(
        &self,
        id: u64,
        restore_dir: &Path,
        restore_bytes: u64,
    ) -> Result<(Duration, String, u64)> {
        let mut env: Env = self.spec.broker_env(0);
        env.insert(
            "SLUICE_BROKER_DATA_DIRECTORY".into(),
            restore_dir.join("data").to_string_lossy().into_owned(),
        );
        env.insert("RUST_LOG".into(), "warn".into());
        std::fs::create_dir_all(restore_dir)?;
        let mut command = tokio::process::Command::from(sluice_tests::clean_command(
            &sluice_tests::bin("sluice-restore"),
            &env,
            restore_dir,
        ));
        command.arg(id.to_string());
        external::timed_output_with_peak_rss(
            command,
            self.config.timeout_for(restore_bytes),
            "sluice-restore",
            RSS_POLL,
        )
        .await
    }

    /// `aws s3 cp --recursive` of node 0's files of backup `id`, then `sync` (the restore fsyncs
    /// what it writes): the baseline text and Sluice's rate over it, or why there is none. The
    /// backup's files are pool objects shared with other backups, so the baseline downloads the
    /// copy of the same files that the upload baseline (1a) put in the bucket, one object per file.
    async fn download_baseline(
        &self,
        restore_bytes: u64,
        restore_rate: f64,
        report: &mut Report,
    ) -> Result<std::result::Result<(String, f64), &'static str>> {
        let Ok(aws) = &self.aws else {
            return Ok(Err("n/a (no awscli)"));
        };
        phase("baseline: aws s3 cp --recursive (download)");
        let download_dir = self.spec.root().join("baseline-download");
        let prefix = format!("s3://{}/awscli-baseline/upload/{BIG:05}/", self.bucket);
        let copy = aws
            .cp_recursive(
                &prefix,
                &download_dir.to_string_lossy(),
                self.config.timeout_for(restore_bytes),
            )
            .await?;
        let flush = external::sync(&download_dir, SYNC_TIMEOUT).await?;
        let elapsed = copy + flush;
        let downloaded = sys::tree_size(&download_dir);
        std::fs::remove_dir_all(&download_dir)?;
        let rate = mb_per_s(restore_bytes, elapsed);
        report.note(format!(
            "aws s3 cp download of {prefix}: {} of objects in {}, then `sync` in {}",
            size(downloaded),
            secs(copy),
            secs(flush)
        ));
        Ok(Ok((
            format!("aws s3 cp + sync: {rate:.0} MB/s ({})", secs(elapsed)),
            restore_rate / rate,
        )))
    }

    /// Phase 5: the same load without and during back-to-back backups, closed loop, then at a
    /// fixed rate both sustain (rows 3a, 3b, 3c).
    pub(crate) async fn impact(&mut self, report: &mut Report) -> Result<()> {
        let api = self.ep.api.clone();
        let mut closed = self
            .impact_of_backups(
                [
                    "impact: load without backups",
                    "impact: load during back-to-back backups",
                ],
                self.load_config("no backup, closed loop", &api),
                self.load_config("back-to-back backups, closed loop", &api),
                report,
            )
            .await?;
        // Open loop at a rate both sustain: half the lower closed-loop throughput. Above what the
        // cluster sustains during backups, the p99 would only say how long the phase let the queue
        // grow.
        let fixed_rate =
            ((closed.without.throughput().min(closed.with.throughput()) * 0.5) as u64).max(100);
        let at_rate = |config: LoadConfig| LoadConfig {
            rate: fixed_rate,
            concurrency: 256,
            ..config
        };
        let rate = thousands(fixed_rate);
        let mut fixed = self
            .impact_of_backups(
                [
                    &format!("impact: fixed rate {rate} cmd/s without backups"),
                    &format!("impact: fixed rate {rate} cmd/s during back-to-back backups"),
                ],
                at_rate(self.load_config("no backup, fixed rate", &api)),
                at_rate(self.load_config("back-to-back backups, fixed rate", &api)),
                report,
            )
            .await?;
        report.note(back_to_back_note(&closed, &fixed));
        report.rows.push(throughput_row(&closed));
        report.rows.push(latency_row(
            "3b",
            "p99 command latency during backups, closed loop".into(),
            &mut closed,
        ));
        report.rows.push(latency_row(
            "3c",
            format!("p99 command latency during backups, {rate} cmd/s fixed"),
            &mut fixed,
        ));
        Ok(())
    }

    /// Load `without` backups, then the same `with` back-to-back backups, each after its phase
    /// line of `phases`.
    async fn impact_of_backups(
        &mut self,
        phases: [&str; 2],
        without: LoadConfig,
        with: LoadConfig,
        report: &mut Report,
    ) -> Result<Impact> {
        phase(phases[0]);
        let without = self.load(without, report).await?;
        phase(phases[1]);
        let (with, backups, rss_growth) = self.load_during_backups(with, report).await?;
        Ok(Impact {
            without,
            with,
            backups,
            rss_growth,
        })
    }

    /// Phase 7: the brokers restart with a FILESYSTEM store; a backup, then `cp -r` + `sync` of
    /// the same files (row 1b, placed right after 1a).
    pub(crate) async fn filesystem_backup(
        &mut self,
        state_bytes: u64,
        report: &mut Report,
    ) -> Result<()> {
        phase("backup to the filesystem store");
        let fs_root = self.spec.root().join("fs-backups");
        self.use_filesystem_store(&fs_root);
        let recovery = self.restart(self.config.timeout_for(state_bytes)).await?;
        report.note(format!(
            "brokers restarted with a FILESYSTEM store: healthy after {} (recovery replays the {} log since the snapshot)",
            secs(recovery),
            size(state_bytes)
        ));
        external::sync(self.spec.root(), SYNC_TIMEOUT).await?;
        let id = self.next_id();
        let (_, fs_time) = self
            .backup(id, self.config.timeout_for(state_bytes))
            .await?;
        let fs_store = BackupStore::open(BackupStoreOptions::new(
            StoreKind::Filesystem {
                root: fs_root.clone(),
            },
            None,
        ))?;
        let fs_described = describe_backup(&fs_store, id).await?;
        let fs_bytes = fs_described.bytes();
        // Is the backup durable when it says COMPLETED? What `sync` still has to write says.
        let fs_sync = external::sync(&fs_root, SYNC_TIMEOUT).await?;
        let (cp_bytes, cp_time) = self.copy_baseline(&fs_described).await?;
        let restore_row = self.filesystem_restore(id, &fs_root, &fs_described).await?;
        let _ = std::fs::remove_dir_all(&fs_root);
        report.note(format!(
            "backup {id} to the filesystem: {} in {}; a `sync` right after COMPLETED took {} (what was not durable yet; the store fsyncs every object before COMPLETED); cp -r + sync of the same {}: {}",
            size(fs_bytes),
            secs(fs_time),
            secs(fs_sync),
            size(cp_bytes),
            secs(cp_time)
        ));
        // Keep the table in issue order: 1b right after 1a.
        report
            .rows
            .insert(1, filesystem_row(fs_bytes, fs_time, cp_bytes, cp_time));
        report.rows.push(restore_row);
        Ok(())
    }

    /// Row 2b: `bin/restore` of node 0 from the FILESYSTEM store against `cp -r` + `sync` of the
    /// partition's folder of that store (the objects a restore reads).
    async fn filesystem_restore(
        &self,
        id: u64,
        fs_root: &Path,
        described: &Described,
    ) -> Result<Row> {
        phase("restore of node 0 from the filesystem store");
        let restore_bytes = described.bytes_of(BIG);
        let restore_dir = self.spec.root().join("restore-fs-node-0");
        let (restore_time, _, _) = self
            .run_restore_tool(id, &restore_dir, restore_bytes)
            .await?;
        std::fs::remove_dir_all(&restore_dir)?;
        let source = fs_root.join(format!("{BIG:05}"));
        let target = self.spec.root().join("baseline-fs-restore");
        let cp_time =
            external::cp_and_sync(&source, &target, self.config.timeout_for(restore_bytes)).await?;
        let cp_bytes = sys::tree_size(&target);
        let _ = std::fs::remove_dir_all(&target);
        let restore_rate = mb_per_s(restore_bytes, restore_time);
        let cp_rate = mb_per_s(cp_bytes, cp_time);
        Ok(Row::new(
            "2b",
            format!(
                "restore from the filesystem store, {} (bin/restore, verified)",
                size(restore_bytes)
            ),
        )
        .sluice(format!("{restore_rate:.0} MB/s ({})", secs(restore_time)))
        .against_minimum(
            Ok((
                format!(
                    "cp -r + sync of the store's {}: {cp_rate:.0} MB/s ({})",
                    size(cp_bytes),
                    secs(cp_time)
                ),
                restore_rate / cp_rate.max(1e-9),
            )),
            RESTORE_RATIO_TARGET,
        ))
    }

    /// Replaces the brokers' backup settings by a FILESYSTEM store at `root` (effective at the
    /// next restart).
    pub(crate) fn use_filesystem_store(&mut self, root: &Path) {
        let common = &mut self.spec.broker_common;
        common.retain(|key, _| !key.starts_with("SLUICE_BROKER_DATA_BACKUP_"));
        common.insert(
            "SLUICE_BROKER_DATA_BACKUP_STORE".into(),
            "FILESYSTEM".into(),
        );
        common.insert(
            "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH".into(),
            root.to_string_lossy().into_owned(),
        );
    }

    /// `cp -r` + `sync` of the backup's files (as hard links): bytes copied and time taken.
    async fn copy_baseline(&self, described: &Described) -> Result<(u64, Duration)> {
        let cp_source = self.spec.root().join("baseline-fs-source");
        external::link_tree(&cp_source, &local_files(&self.spec, described))?;
        let cp_bytes = sys::tree_size(&cp_source);
        let cp_target = self.spec.root().join("baseline-fs-copy");
        let cp_time =
            external::cp_and_sync(&cp_source, &cp_target, self.config.timeout_for(cp_bytes))
                .await?;
        let _ = std::fs::remove_dir_all(&cp_target);
        Ok((cp_bytes, cp_time))
    }

    /// Phase 8: a standalone node by itself under the same load (row 6).
    pub(crate) async fn standalone(&self, report: &mut Report) -> Result<()> {
        phase("standalone node");
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-standalone-")
            .tempdir()?;
        let (api_port, mgmt_port) = (sluice_tests::free_port(), sluice_tests::free_port());
        let mut standalone = Proc::spawn(
            "standalone",
            "sluice-standalone",
            standalone_env(dir.path(), api_port, mgmt_port),
            dir.path(),
            &dir.path().join("standalone.log"),
        );
        standalone
            .wait_ready(&format!("http://127.0.0.1:{mgmt_port}/actuator/health"))
            .await;
        let api = format!("http://127.0.0.1:{api_port}");
        let mut alone = self
            .load(
                self.load_config("standalone node, closed loop", &api),
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
}

/// Whether `dir` holds a finished snapshot (not a `.tmp` being written).
fn has_snapshot(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(std::result::Result::ok)
            .any(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

/// The configuration of a standalone node in `dir` on loopback.
fn standalone_env(dir: &Path, api_port: u16, mgmt_port: u16) -> Env {
    let broker_port = sluice_tests::free_port();
    [
        (
            "SLUICE_BROKER_DATA_DIRECTORY",
            dir.join("data").to_string_lossy().into_owned(),
        ),
        ("SLUICE_BROKER_NETWORK_HOST", "127.0.0.1".into()),
        ("SLUICE_BROKER_NETWORK_PORT", broker_port.to_string()),
        (
            "SLUICE_BROKER_NETWORK_MANAGEMENTPORT",
            sluice_tests::free_port().to_string(),
        ),
        ("SLUICE_GATEWAY_NETWORK_HOST", "127.0.0.1".into()),
        ("SLUICE_GATEWAY_NETWORK_PORT", api_port.to_string()),
        ("SLUICE_GATEWAY_MANAGEMENT_HOST", "127.0.0.1".into()),
        ("SLUICE_GATEWAY_MANAGEMENT_PORT", mgmt_port.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// `a / b` of two latencies, when both were measured.
fn latency_ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.as_secs_f64() / b.as_secs_f64().max(1e-9)),
        _ => None,
    }
}

/// The note on the back-to-back backups of both impact measurements.
fn back_to_back_note(closed: &Impact, fixed: &Impact) -> String {
    let mut triggers = closed.backups.triggers.clone();
    triggers.extend(&fixed.backups.triggers);
    let mut durations = Samples::new();
    for duration in closed
        .backups
        .durations
        .iter()
        .chain(&fixed.backups.durations)
    {
        durations.record(*duration, 1);
    }
    format!(
        "back-to-back backups under load: {} completed (trigger to COMPLETED: p50 {}, max {}); trigger p50 {}, p99 {}, max {}; broker 0 RSS growth up to {}",
        durations.len(),
        opt_ms(durations.quantile(0.5)),
        opt_ms(durations.max()),
        opt_ms(triggers.quantile(0.5)),
        opt_ms(triggers.quantile(0.99)),
        opt_ms(triggers.max()),
        size(closed.rss_growth.max(fixed.rss_growth))
    )
}

/// Row 3a: closed-loop throughput during back-to-back backups against none.
fn throughput_row(closed: &Impact) -> Row {
    let (with, without) = (closed.with.throughput(), closed.without.throughput());
    let ratio = with / without;
    Row::new(
        "3a",
        format!(
            "throughput during back-to-back backups ({} backups)",
            closed.backups.durations.len()
        ),
    )
    .sluice(format!("{} cmd/s", thousands(with as u64)))
    .baseline(format!("no backup: {} cmd/s", thousands(without as u64)))
    .ratio(Some(ratio))
    .target(
        format!(">= {IMPACT_RATIO_TARGET:.2}x"),
        Met::from_bool(ratio >= IMPACT_RATIO_TARGET),
    )
}

/// Rows 3b and 3c: p99 command latency during backups against none.
fn latency_row(id: &str, what: String, impact: &mut Impact) -> Row {
    let (a, b) = (impact.with.p(0.99), impact.without.p(0.99));
    Row::new(id, what)
        .sluice(opt_ms(a))
        .baseline(format!("no backup: {}", opt_ms(b)))
        .ratio(latency_ratio(a, b))
        .target("reported", Met::NotApplicable)
}

/// Rows 4a and 4b: trigger latency at the large state against the small state.
pub fn trigger_rows(large: &mut TriggerLatency, small: &mut TriggerLatency) -> [Row; 2] {
    let counts = format!("{}/{} triggers", large.triggers.len(), small.triggers.len());
    let versus = format!("{} vs {}", size(large.state_bytes), size(small.state_bytes));
    let (large_p50, small_p50) = (large.triggers.quantile(0.5), small.triggers.quantile(0.5));
    let (large_p99, small_p99) = (large.triggers.quantile(0.99), small.triggers.quantile(0.99));
    let within_target = |p: Option<Duration>| p.is_some_and(|p| p <= TRIGGER_P99_TARGET);
    [
        Row::new("4a", format!("trigger p50, {versus} ({counts})"))
            .sluice(opt_ms(large_p50))
            .baseline(format!(
                "{}: {}",
                size(small.state_bytes),
                opt_ms(small_p50)
            ))
            .ratio(latency_ratio(large_p50, small_p50))
            .target("no growth", Met::NotApplicable),
        Row::new("4b", format!("trigger p99, {versus} ({counts})"))
            .sluice(opt_ms(large_p99))
            .baseline(format!(
                "{}: {}",
                size(small.state_bytes),
                opt_ms(small_p99)
            ))
            .ratio(latency_ratio(large_p99, small_p99))
            .target(
                format!("<= {} at both", ms(TRIGGER_P99_TARGET)),
                Met::from_bool(within_target(large_p99) && within_target(small_p99)),
            ),
    ]
}

/// Rows 5 and 5b (and the note on broker 0's memory): measured during the S3 backup and the
/// restore.
pub fn memory_rows(backup: &S3Backup, restore: &RestoreRun, report: &mut Report) {
    let growth = backup.rss_peak.saturating_sub(backup.rss_before);
    report.note(format!(
        "broker 0 memory during backup {}: VmRSS {} before, peak {} ({} samples every {}), VmHWM {} (process lifetime)",
        backup.id,
        size(backup.rss_before),
        size(backup.rss_peak),
        backup.rss_samples,
        ms(RSS_POLL),
        size(backup.hwm)
    ));
    report.rows.push(
        Row::new(
            "5",
            format!(
                "broker RSS during a backup of {}",
                size(backup.described.bytes())
            ),
        )
        .sluice(format!(
            "peak {} (+{})",
            size(backup.rss_peak),
            size(growth)
        ))
        .baseline(format!("before: {}", size(backup.rss_before)))
        .ratio(Some(
            backup.rss_peak as f64 / backup.rss_before.max(1) as f64,
        ))
        .target(
            format!("growth <= {}", size(RSS_GROWTH_BYTES_TARGET)),
            Met::from_bool(growth <= RSS_GROWTH_BYTES_TARGET),
        ),
    );
    report.rows.push(
        Row::new(
            "5b",
            format!("restore tool RSS, restoring {}", size(restore.bytes)),
        )
        .sluice(format!("peak {}", size(restore.rss_peak)))
        .target(
            format!("peak <= {}", size(RESTORE_RSS_BYTES_TARGET)),
            Met::from_bool(restore.rss_peak <= RESTORE_RSS_BYTES_TARGET),
        ),
    );
}

/// Row 1b: the filesystem backup against `cp -r` + `sync` of the same files.
fn filesystem_row(fs_bytes: u64, fs_time: Duration, cp_bytes: u64, cp_time: Duration) -> Row {
    let (fs_rate, cp_rate) = (mb_per_s(fs_bytes, fs_time), mb_per_s(cp_bytes, cp_time));
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
    .ratio(Some(fs_rate / cp_rate))
    .target("reported", Met::NotApplicable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(state_bytes: u64, millis: &[u64]) -> TriggerLatency {
        let mut triggers = Samples::new();
        for m in millis {
            triggers.record(Duration::from_millis(*m), 1);
        }
        TriggerLatency {
            state_bytes,
            triggers,
        }
    }

    /// Cases of rows 4a/4b: (large ms, small ms, expected 4b met).
    #[test]
    fn trigger_rows_compare_large_with_small() {
        let cases: [(&[u64], &[u64], Met); 3] = [
            (&[10, 20], &[5, 10], Met::Yes),
            (&[10, 200], &[5, 10], Met::No),
            (&[], &[5, 10], Met::No),
        ];
        for (large, small, met) in cases {
            let mut large = series(1024 * MIB, large);
            let mut small = series(10 * MIB, small);
            let [p50, p99] = trigger_rows(&mut large, &mut small);
            assert_eq!(p50.id, "4a");
            assert_eq!(p99.id, "4b");
            assert_eq!(p99.met, met, "4b of {}", p99.sluice);
            assert!(
                p50.metric.contains("1.00 GiB vs 10.0 MiB"),
                "{}",
                p50.metric
            );
        }
    }

    #[test]
    fn latency_ratio_needs_both() {
        let ms = Duration::from_millis;
        assert_eq!(latency_ratio(Some(ms(20)), Some(ms(10))), Some(2.0));
        assert_eq!(latency_ratio(None, Some(ms(10))), None);
        assert_eq!(latency_ratio(Some(ms(10)), None), None);
    }
}
