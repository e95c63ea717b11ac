//! Backup and restore metrics of a broker, served as a [`BrokerMetrics`] snapshot on
//! `GET /internal/v1/metrics` and rendered in the Prometheus text format by the gateway
//! (`GET /actuator/prometheus`).
//!
//! [`BackupMetrics`] is a set of atomics shared (as an `Arc`) by the backup service and the API:
//! the service counts partition backups as they start, upload files and finish; the API takes a
//! snapshot. Everything counts since this broker process started.
//!
//! [`RestoreReport`] is the small JSON file (`<data dir>/restore-report.json`) the restore tool
//! publishes with the partitions it restored; the broker reads it once at start-up. The broker
//! only ever opens `partition-<id>` directories of its data directory, so the file is harmless.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::protocol::{
    BrokerMetrics, Histogram, HistogramBucket, LastCompletedBackup, RestoreMetrics,
};

/// Upper bounds (seconds) of the buckets of the partition backup duration histogram; `+Inf` is
/// implied.
pub const BACKUP_DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The name of the restore report in the data directory.
pub const RESTORE_REPORT_FILE: &str = "restore-report.json";

/// Counters and gauges of this broker's partition backups.
#[derive(Debug, Default)]
pub struct BackupMetrics {
    completed: AtomicU64,
    failed: AtomicU64,
    in_progress: AtomicU64,
    uploaded_bytes: AtomicU64,
    uploaded_files: AtomicU64,
    /// Per bucket (not cumulative); observations above the last bound only count in `count`.
    duration_buckets: [AtomicU64; BACKUP_DURATION_BUCKETS_SECONDS.len()],
    duration_sum_micros: AtomicU64,
    duration_count: AtomicU64,
    /// Highest backup id with a completed partition backup, and when (ms since the epoch).
    last_completed: Mutex<Option<(u64, u64)>>,
}

/// Counts one partition backup as in progress until dropped (also when its task is aborted).
#[derive(Debug)]
pub struct InProgressGuard {
    metrics: Arc<BackupMetrics>,
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        // Never below zero, whatever the order of events.
        let _ = self
            .metrics
            .in_progress
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl BackupMetrics {
    pub fn new() -> Arc<BackupMetrics> {
        Arc::new(BackupMetrics::default())
    }

    /// A partition backup was accepted: in progress until the guard is dropped.
    pub fn started(self: &Arc<Self>) -> InProgressGuard {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgressGuard {
            metrics: self.clone(),
        }
    }

    /// One file of a partition backup is in the store (`bytes` as stored).
    pub fn file_uploaded(&self, bytes: u64) {
        self.uploaded_files.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A partition backup of `backup_id` ended COMPLETED after `elapsed`.
    pub fn backup_completed(&self, backup_id: u64, elapsed: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BACKUP_DURATION_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
        {
            self.duration_buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last_completed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|(id, _)| backup_id >= id) {
            *last = Some((backup_id, now_millis()));
        }
    }

    /// A partition backup ended FAILED.
    pub fn backup_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values, with this node's id and the restore report it started from.
    pub fn snapshot(&self, node_id: u32, restore: Option<&RestoreReport>) -> BrokerMetrics {
        let mut cumulative = 0;
        let buckets = BACKUP_DURATION_BUCKETS_SECONDS
            .iter()
            .zip(&self.duration_buckets)
            .map(|(le, count)| {
                cumulative += count.load(Ordering::Relaxed);
                HistogramBucket {
                    le: *le,
                    count: cumulative,
                }
            })
            .collect();
        let last = *self
            .last_completed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        BrokerMetrics {
            node_id,
            backups_completed: self.completed.load(Ordering::Relaxed),
            backups_failed: self.failed.load(Ordering::Relaxed),
            backups_in_progress: self.in_progress.load(Ordering::Relaxed),
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            uploaded_files: self.uploaded_files.load(Ordering::Relaxed),
            backup_duration: Histogram {
                buckets,
                sum: self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
                // At least the last bucket's count, should a snapshot race an observation.
                count: self.duration_count.load(Ordering::Relaxed).max(cumulative),
            },
            last_completed: last.map(|(backup_id, millis)| LastCompletedBackup {
                backup_id,
                timestamp_seconds: millis as f64 / 1e3,
            }),
            restore: restore.and_then(RestoreReport::metrics),
        }
    }
}

/// What the restore tool restored into a data directory: written by `sluice-restore` next to
/// the partitions it publishes, read by the broker at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub backup_id: u64,
    pub node_id: u32,
    /// Partitions restored.
    pub partitions: Vec<u32>,
    /// Files downloaded and verified.
    pub files: u64,
    /// Bytes of those files (as restored, uncompressed).
    pub bytes: u64,
    /// From the start of the restore until everything was verified, just before publishing.
    pub duration_ms: u64,
    /// RFC 3339 (UTC) time at which the restore finished.
    pub finished_at: String,
}

impl RestoreReport {
    /// `<data dir>/restore-report.json`.
    pub fn path(data_directory: &Path) -> PathBuf {
        data_directory.join(RESTORE_REPORT_FILE)
    }

    /// A report of a restore that finished now.
    pub fn finished_now(
        backup_id: u64,
        node_id: u32,
        partitions: Vec<u32>,
        files: u64,
        bytes: u64,
        duration: Duration,
    ) -> RestoreReport {
        RestoreReport {
            backup_id,
            node_id,
            partitions,
            files,
            bytes,
            duration_ms: duration.as_millis() as u64,
            finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }

    /// Writes the report to `path` and fsyncs it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(path)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()
    }

    /// The report in `data_directory`: `Ok(None)` when there is none, `Err` (a message naming
    /// the file) when it cannot be read or understood.
    pub fn read(data_directory: &Path) -> Result<Option<RestoreReport>, String> {
        let path = RestoreReport::path(data_directory);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let report: RestoreReport = serde_json::from_slice(&bytes)
            .map_err(|error| format!("{} is not a restore report: {error}", path.display()))?;
        if report.metrics().is_none() {
            return Err(format!(
                "{}: finishedAt {:?} is not an RFC 3339 time",
                path.display(),
                report.finished_at
            ));
        }
        Ok(Some(report))
    }

    /// The report as metrics; `None` when `finishedAt` is not an RFC 3339 time.
    pub fn metrics(&self) -> Option<RestoreMetrics> {
        let finished = humantime::parse_rfc3339(&self.finished_at).ok()?;
        let timestamp = finished.duration_since(UNIX_EPOCH).ok()?;
        Some(RestoreMetrics {
            backup_id: self.backup_id,
            files: self.files,
            bytes: self.bytes,
            duration_seconds: self.duration_ms as f64 / 1e3,
            timestamp_seconds: timestamp.as_millis() as f64 / 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_the_histogram_is_cumulative() {
        let metrics = BackupMetrics::new();
        let empty = metrics.snapshot(3, None);
        assert_eq!(empty.node_id, 3);
        assert_eq!(
            (
                empty.backups_completed,
                empty.backups_failed,
                empty.backups_in_progress
            ),
            (0, 0, 0)
        );
        assert!(empty.last_completed.is_none() && empty.restore.is_none());
        assert_eq!(
            empty.backup_duration.buckets.len(),
            BACKUP_DURATION_BUCKETS_SECONDS.len()
        );

        let first = metrics.started();
        let second = metrics.started();
        assert_eq!(metrics.snapshot(3, None).backups_in_progress, 2);
        metrics.file_uploaded(100);
        metrics.file_uploaded(23);
        metrics.backup_completed(7, Duration::from_millis(300));
        drop(first);
        metrics.backup_failed();
        drop(second);
        metrics.backup_completed(5, Duration::from_secs(4000));

        let snapshot = metrics.snapshot(3, None);
        assert_eq!(snapshot.backups_completed, 2);
        assert_eq!(snapshot.backups_failed, 1);
        assert_eq!(snapshot.backups_in_progress, 0);
        assert_eq!(snapshot.uploaded_bytes, 123);
        assert_eq!(snapshot.uploaded_files, 2);
        let counts: Vec<(f64, u64)> = snapshot
            .backup_duration
            .buckets
            .iter()
            .map(|b| (b.le, b.count))
            .collect();
        assert_eq!(counts[2], (0.25, 0));
        assert_eq!(counts[3], (0.5, 1));
        assert_eq!(
            *counts.last().unwrap(),
            (1800.0, 1),
            "4000 s is only in +Inf"
        );
        assert_eq!(snapshot.backup_duration.count, 2);
        assert!((snapshot.backup_duration.sum - 4000.3).abs() < 1e-6);
        // The highest id stays the last completed one, even when a lower one finishes later.
        let last = snapshot.last_completed.expect("a completed backup");
        assert_eq!(last.backup_id, 7);
        assert!(last.timestamp_seconds > 1.6e9);
    }

    #[test]
    fn a_restore_report_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RestoreReport::read(dir.path()), Ok(None));
        let report =
            RestoreReport::finished_now(4, 1, vec![2, 4], 6, 4096, Duration::from_millis(1500));
        report.write(&RestoreReport::path(dir.path())).unwrap();
        let read = RestoreReport::read(dir.path()).unwrap().expect("a report");
        assert_eq!(read, report);
        let metrics = BackupMetrics::new()
            .snapshot(1, Some(&read))
            .restore
            .expect("restore metrics");
        assert_eq!(
            (metrics.backup_id, metrics.files, metrics.bytes),
            (4, 6, 4096)
        );
        assert_eq!(metrics.duration_seconds, 1.5);
        assert!(metrics.timestamp_seconds > 1.6e9);

        std::fs::write(RestoreReport::path(dir.path()), b"{not json").unwrap();
        let error = RestoreReport::read(dir.path()).unwrap_err();
        assert!(error.contains(RESTORE_REPORT_FILE), "{error}");
    }
}
