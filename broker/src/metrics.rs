//! The broker's metrics, served in the Prometheus text format on its own management port
//! (`broker.network.managementPort`, `GET /metrics`): Prometheus scrapes every broker itself.
//!
//! [`BrokerRegistry`] is the broker's registry: the process metrics, the build and node
//! ([`BROKER_INFO`]), the backups ([`BackupMetrics`]), the restore the data directory came from
//! ([`RestoreReport`]), each partition's processing, log and snapshots ([`PartitionMetrics`]) and
//! the internal API's request latency. Everything counts since this broker process started.
//!
//! [`BackupMetrics`] is shared (as an `Arc`) by the backup service, which counts partition
//! backups as they start, upload files and finish, and the registry, which shows them;
//! [`BackupMetrics::snapshot`] reads them as the wire's `BrokerMetrics` (the tests use it).
//!
//! [`RestoreReport`] is the small JSON file (`<data dir>/restore-report.json`) the restore tool
//! publishes with the partitions it restored; the broker reads it once at start-up. The broker
//! only ever opens `partition-<id>` directories of its data directory, so the file is harmless.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Metric};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use serde::{Deserialize, Serialize};
use sluice_backup_store::{PoolCollection, PoolTotals};
use sluice_protocol::metrics::{process_registry, RequestMetrics};

use crate::log::SegmentInfo;
use crate::protocol::{self, HistogramBucket, LastCompletedBackup, RestoreMetrics};

/// Upper bounds (seconds) of the buckets of the partition backup duration histogram; `+Inf` is
/// implied.
pub const BACKUP_DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Upper bounds (seconds) of the log flush (write + fdatasync) histogram: an SSD answers in
/// tens of microseconds, a loaded disk in tens of milliseconds, a failing one in seconds.
pub const FLUSH_DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds (seconds) of the snapshot duration histogram (encode, write, fsync, rename).
pub const SNAPSHOT_DURATION_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The name of the restore report in the data directory.
pub const RESTORE_REPORT_FILE: &str = "restore-report.json";

/// The info metric naming this broker's node id and version (value 1): node ids are not target
/// labels, so a query joins on it instead of every series carrying `node`.
pub const BROKER_INFO: &str = "sluice_broker_info";

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("a valid histogram definition")
}

/// A gauge without labels that is absent until it is first set (a vector with no label names
/// has no series until one is asked for).
fn absent_gauge(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &[]).expect("a valid gauge definition")
}

fn register(registry: &Registry, collector: impl Collector + 'static) {
    registry
        .register(Box::new(collector))
        .expect("every broker metric is registered once, under a name of its own");
}

/// Counters and gauges of this broker's partition backups.
#[derive(Debug)]
pub struct BackupMetrics {
    /// `sluice_backups_total{status}`, with the children of its two statuses.
    backups: IntCounterVec,
    completed: IntCounter,
    failed: IntCounter,
    skipped: IntCounter,
    in_progress: IntGauge,
    uploaded_bytes: IntCounter,
    uploaded_files: IntCounter,
    duration: Histogram,
    last_completed_id: GaugeVec,
    last_completed_timestamp: GaugeVec,
    /// Per partition: what its newest completed backup references and uploaded new, and its pool.
    last_referenced_bytes: IntGaugeVec,
    last_uploaded_bytes: IntGaugeVec,
    pool_bytes: IntGaugeVec,
    pool_objects: IntGaugeVec,
    pool_collected_bytes: IntCounter,
    /// Highest backup id with a completed partition backup, and when (ms since the epoch).
    last_completed: Mutex<Option<(u64, u64)>>,
}

/// A gauge per partition (label `partition`).
fn partition_gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["partition"]).expect("a valid gauge definition")
}

impl Default for BackupMetrics {
    fn default() -> Self {
        let backups = IntCounterVec::new(
            Opts::new(
                "sluice_backups_total",
                "Partition backups finished on the broker since it started, by final status (skipped: a marker not taken because the partition's previous backup was still uploading).",
            ),
            &["status"],
        )
        .expect("a valid counter definition");
        let int_counter = |name: &str, help: &str| {
            IntCounter::new(name, help).expect("a valid counter definition")
        };
        BackupMetrics {
            completed: backups.with_label_values(&["completed"]),
            failed: backups.with_label_values(&["failed"]),
            skipped: backups.with_label_values(&["skipped"]),
            backups,
            in_progress: IntGauge::new(
                "sluice_backups_in_progress",
                "Partition backups accepted by the broker and not finished yet.",
            )
            .expect("a valid gauge definition"),
            uploaded_bytes: int_counter(
                "sluice_backup_uploaded_bytes_total",
                "Bytes uploaded new to the backup store (as stored, after compression); what the pool held already is not sent and not counted.",
            ),
            uploaded_files: int_counter(
                "sluice_backup_uploaded_files_total",
                "Backup files put in the store, new or referenced in the pool.",
            ),
            last_referenced_bytes: partition_gauge(
                "sluice_backup_last_referenced_bytes",
                "Stored bytes the partition's newest completed backup references (what it needs in the store).",
            ),
            last_uploaded_bytes: partition_gauge(
                "sluice_backup_last_uploaded_bytes",
                "Stored bytes the partition's newest completed backup uploaded new (the rest was in the pool).",
            ),
            pool_bytes: partition_gauge(
                "sluice_backup_pool_bytes",
                "Stored bytes of the partition's pool, shared by all its backups (as of its last backup or collection).",
            ),
            pool_objects: partition_gauge(
                "sluice_backup_pool_objects",
                "Objects of the partition's pool (as of its last backup or collection).",
            ),
            pool_collected_bytes: int_counter(
                "sluice_backup_pool_collected_bytes_total",
                "Stored bytes that collections deleted from the pools: objects no backup referenced any more.",
            ),
            duration: histogram(
                "sluice_backup_duration_seconds",
                "Duration of completed partition backups, from the start of the upload to the COMPLETED manifest.",
                &BACKUP_DURATION_BUCKETS_SECONDS,
            ),
            last_completed_id: absent_gauge(
                "sluice_backup_last_completed_id",
                "Highest backup id of which a partition backup completed on the broker since it started.",
            ),
            last_completed_timestamp: absent_gauge(
                "sluice_backup_last_completed_timestamp_seconds",
                "When that partition backup completed, seconds since the Unix epoch.",
            ),
            last_completed: Mutex::new(None),
        }
    }
}

/// Counts one partition backup as in progress until dropped (also when its task is aborted).
#[derive(Debug)]
pub struct InProgressGuard {
    metrics: Arc<BackupMetrics>,
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        // Paired with the increment of `started`: never below zero.
        self.metrics.in_progress.dec();
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl BackupMetrics {
    pub fn new() -> Arc<BackupMetrics> {
        Arc::new(BackupMetrics::default())
    }

    /// Shows these metrics in `registry`.
    pub fn register(&self, registry: &Registry) {
        register(registry, self.backups.clone());
        register(registry, self.in_progress.clone());
        register(registry, self.uploaded_bytes.clone());
        register(registry, self.uploaded_files.clone());
        register(registry, self.duration.clone());
        register(registry, self.last_completed_id.clone());
        register(registry, self.last_completed_timestamp.clone());
        register(registry, self.last_referenced_bytes.clone());
        register(registry, self.last_uploaded_bytes.clone());
        register(registry, self.pool_bytes.clone());
        register(registry, self.pool_objects.clone());
        register(registry, self.pool_collected_bytes.clone());
    }

    /// The partition's newest backup completed, referencing `referenced_bytes` of which it
    /// uploaded `uploaded_bytes`; its pool now holds `pool`.
    pub fn pooled_backup_completed(
        &self,
        partition_id: u32,
        referenced_bytes: u64,
        uploaded_bytes: u64,
        pool: PoolTotals,
    ) {
        let partition = partition_id.to_string();
        let set = |gauge: &IntGaugeVec, value: u64| {
            gauge
                .with_label_values(&[partition.as_str()])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.last_referenced_bytes, referenced_bytes);
        set(&self.last_uploaded_bytes, uploaded_bytes);
        self.pool_is(partition_id, pool);
    }

    /// A collection of the partition's pool ended with `collection`.
    pub fn pool_collected(&self, partition_id: u32, collection: &PoolCollection) {
        self.pool_collected_bytes
            .inc_by(collection.deleted.stored_bytes);
        self.pool_is(partition_id, collection.kept);
    }

    fn pool_is(&self, partition_id: u32, pool: PoolTotals) {
        let partition = partition_id.to_string();
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.pool_bytes
            .with_label_values(&[partition.as_str()])
            .set(clamp(pool.stored_bytes));
        self.pool_objects
            .with_label_values(&[partition.as_str()])
            .set(clamp(pool.objects));
    }

    /// A partition backup was accepted: in progress until the guard is dropped.
    pub fn started(self: &Arc<Self>) -> InProgressGuard {
        self.in_progress.inc();
        InProgressGuard {
            metrics: self.clone(),
        }
    }

    /// One file of a partition backup is in the store (`bytes` as stored).
    pub fn file_uploaded(&self, bytes: u64) {
        self.uploaded_files.inc();
        self.uploaded_bytes.inc_by(bytes);
    }

    /// A partition backup of `backup_id` ended COMPLETED after `elapsed`.
    pub fn backup_completed(&self, backup_id: u64, elapsed: Duration) {
        self.completed.inc();
        self.duration.observe(elapsed.as_secs_f64());
        let mut last = self
            .last_completed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|(id, _)| backup_id >= id) {
            let millis = now_millis();
            *last = Some((backup_id, millis));
            // Under the lock, so that the two gauges always name the same backup.
            self.last_completed_id
                .with_label_values::<&str>(&[])
                .set(backup_id as f64);
            self.last_completed_timestamp
                .with_label_values::<&str>(&[])
                .set(millis as f64 / 1e3);
        }
    }

    /// A partition backup ended FAILED.
    pub fn backup_failed(&self) {
        self.failed.inc();
    }

    pub fn marker_skipped(&self) {
        self.skipped.inc();
    }

    /// The current values, with this node's id and the restore report it started from.
    pub fn snapshot(
        &self,
        node_id: u32,
        restore: Option<&RestoreReport>,
    ) -> protocol::BrokerMetrics {
        let histogram = self.duration.metric();
        let histogram = histogram.get_histogram();
        let buckets = histogram
            .get_bucket()
            .iter()
            .map(|bucket| HistogramBucket {
                le: bucket.upper_bound(),
                count: bucket.cumulative_count(),
            })
            .collect();
        let last = *self
            .last_completed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        protocol::BrokerMetrics {
            node_id,
            backups_completed: self.completed.get(),
            backups_failed: self.failed.get(),
            backups_in_progress: self.in_progress.get().max(0) as u64,
            uploaded_bytes: self.uploaded_bytes.get(),
            uploaded_files: self.uploaded_files.get(),
            backup_duration: protocol::Histogram {
                buckets,
                sum: histogram.get_sample_sum(),
                count: histogram.get_sample_count(),
            },
            last_completed: last.map(|(backup_id, millis)| LastCompletedBackup {
                backup_id,
                timestamp_seconds: millis as f64 / 1e3,
            }),
            restore: restore.and_then(RestoreReport::metrics),
        }
    }
}

/// The per-partition metric families of a broker, labelled `partition`.
#[derive(Debug, Clone)]
struct PartitionFamilies {
    records_processed: IntCounterVec,
    records_refused: IntCounterVec,
    processed_position: IntGaugeVec,
    log_bytes: IntGaugeVec,
    log_segments: IntGaugeVec,
    flush_duration: HistogramVec,
    snapshot_duration: HistogramVec,
    snapshot_size: IntGaugeVec,
    archive_lag_bytes: IntGaugeVec,
    archive_lag_seconds: IntGaugeVec,
    archive_uploaded_bytes: IntCounterVec,
    archive_segments_archived: IntCounterVec,
    archive_segments_dropped: IntCounterVec,
}

impl PartitionFamilies {
    fn new() -> PartitionFamilies {
        let label = &["partition"];
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), label).expect("a valid counter definition")
        };
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), label).expect("a valid gauge definition")
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                label,
            )
            .expect("a valid histogram definition")
        };
        PartitionFamilies {
            records_processed: counter(
                "sluice_partition_records_processed_total",
                "Records the partition appended and processed since the broker started (refused ones included; replay at recovery not).",
            ),
            records_refused: counter(
                "sluice_partition_records_refused_total",
                "Records the processor refused (short of funds, credit refused, bad checkpoint, ...); they stay in the log.",
            ),
            processed_position: gauge(
                "sluice_partition_processed_position",
                "Position of the last record the partition processed.",
            ),
            log_bytes: gauge(
                "sluice_partition_log_bytes",
                "Bytes of the partition's log segments on disk (after compaction).",
            ),
            log_segments: gauge(
                "sluice_partition_log_segments",
                "Log segment files of the partition.",
            ),
            flush_duration: histogram(
                "sluice_partition_log_flush_duration_seconds",
                "Duration of a log flush: writing a batch of records and fdatasync (group commit).",
                &FLUSH_DURATION_BUCKETS_SECONDS,
            ),
            snapshot_duration: histogram(
                "sluice_partition_snapshot_duration_seconds",
                "Duration of taking a snapshot of the partition's state (encode, write, fsync, rename).",
                &SNAPSHOT_DURATION_BUCKETS_SECONDS,
            ),
            snapshot_size: gauge(
                "sluice_partition_snapshot_size_bytes",
                "Size of the state file of the partition's newest snapshot taken by this broker process.",
            ),
            archive_lag_bytes: gauge(
                "sluice_archive_lag_bytes",
                "Continuous backups: bytes of sealed log segments not archived yet (0 when archiving is off).",
            ),
            archive_lag_seconds: gauge(
                "sluice_archive_lag_seconds",
                "Continuous backups: how long the oldest sealed segment not archived yet has waited (0: none waits).",
            ),
            archive_uploaded_bytes: counter(
                "sluice_archive_uploaded_bytes_total",
                "Continuous backups: bytes the archiver sent to the pool (stored size; pieces the pool held already are not sent).",
            ),
            archive_segments_archived: counter(
                "sluice_archive_segments_archived_total",
                "Continuous backups: sealed log segments archived to the pool.",
            ),
            archive_segments_dropped: counter(
                "sluice_archive_segments_dropped_total",
                "Continuous backups: sealed segments compacted before they were archived, because the lag passed continuousLagLimit.",
            ),
        }
    }

    fn register(&self, registry: &Registry) {
        register(registry, self.records_processed.clone());
        register(registry, self.records_refused.clone());
        register(registry, self.processed_position.clone());
        register(registry, self.log_bytes.clone());
        register(registry, self.log_segments.clone());
        register(registry, self.flush_duration.clone());
        register(registry, self.snapshot_duration.clone());
        register(registry, self.snapshot_size.clone());
        register(registry, self.archive_lag_bytes.clone());
        register(registry, self.archive_lag_seconds.clone());
        register(registry, self.archive_uploaded_bytes.clone());
        register(registry, self.archive_segments_archived.clone());
        register(registry, self.archive_segments_dropped.clone());
    }

    fn partition(&self, partition_id: u32) -> PartitionMetrics {
        let label = partition_id.to_string();
        let label = &[label.as_str()];
        PartitionMetrics {
            records_processed: self.records_processed.with_label_values(label),
            records_refused: self.records_refused.with_label_values(label),
            processed_position: self.processed_position.with_label_values(label),
            log_bytes: self.log_bytes.with_label_values(label),
            log_segments: self.log_segments.with_label_values(label),
            flush_duration: self.flush_duration.with_label_values(label),
            snapshot_duration: self.snapshot_duration.with_label_values(label),
            snapshot_size: self.snapshot_size.with_label_values(label),
            archive_lag_bytes: self.archive_lag_bytes.with_label_values(label),
            archive_lag_seconds: self.archive_lag_seconds.with_label_values(label),
            archive_uploaded_bytes: self.archive_uploaded_bytes.with_label_values(label),
            archive_segments_archived: self.archive_segments_archived.with_label_values(label),
            archive_segments_dropped: self.archive_segments_dropped.with_label_values(label),
        }
    }
}

/// What one partition's actor counts: cheap handles to its series (atomics inside).
#[derive(Debug, Clone)]
pub struct PartitionMetrics {
    records_processed: IntCounter,
    records_refused: IntCounter,
    processed_position: IntGauge,
    log_bytes: IntGauge,
    log_segments: IntGauge,
    flush_duration: Histogram,
    snapshot_duration: Histogram,
    snapshot_size: IntGauge,
    archive_lag_bytes: IntGauge,
    archive_lag_seconds: IntGauge,
    archive_uploaded_bytes: IntCounter,
    archive_segments_archived: IntCounter,
    archive_segments_dropped: IntCounter,
}

impl PartitionMetrics {
    /// Metrics of `partition_id` that no registry shows (a partition opened outside a broker
    /// service: the restore tool, tests).
    pub fn unregistered(partition_id: u32) -> PartitionMetrics {
        PartitionFamilies::new().partition(partition_id)
    }

    /// One record was processed at `position`; `refused` when the processor refused it.
    pub fn record_processed(&self, position: u64, refused: bool) {
        self.records_processed.inc();
        if refused {
            self.records_refused.inc();
        }
        self.processed_position.set(position as i64);
    }

    /// The log flushed a batch in `elapsed`.
    pub fn log_flushed(&self, elapsed: Duration) {
        self.flush_duration.observe(elapsed.as_secs_f64());
    }

    /// The log's segments now (after an append, a roll or a compaction).
    pub fn log_is(&self, segments: &[SegmentInfo]) {
        let bytes: u64 = segments.iter().map(|s| s.len_bytes).sum();
        self.log_bytes.set(bytes as i64);
        self.log_segments.set(segments.len() as i64);
    }

    /// A snapshot of `size_bytes` (its state file) was taken in `elapsed`.
    pub fn snapshot_taken(&self, elapsed: Duration, size_bytes: u64) {
        self.snapshot_duration.observe(elapsed.as_secs_f64());
        self.snapshot_size.set(size_bytes as i64);
    }

    /// The archiver's lag now.
    pub fn archive_lag_is(&self, lag_bytes: u64, lag: Duration) {
        self.archive_lag_bytes.set(lag_bytes as i64);
        self.archive_lag_seconds.set(lag.as_secs() as i64);
    }

    /// The archiver archived a segment, sending `uploaded_bytes` of it.
    pub fn segment_archived(&self, uploaded_bytes: u64) {
        self.archive_uploaded_bytes.inc_by(uploaded_bytes);
        self.archive_segments_archived.inc();
    }

    /// `count` sealed segments left the disk before they were archived.
    pub fn segments_dropped(&self, count: u64) {
        self.archive_segments_dropped.inc_by(count);
    }
}

/// The registry of a broker's `/metrics` endpoint and what fills it.
pub struct BrokerRegistry {
    registry: Registry,
    partitions: PartitionFamilies,
    requests: RequestMetrics,
}

impl BrokerRegistry {
    /// The registry of node `node_id`: process metrics, [`BROKER_INFO`], `backups`, the restore
    /// metrics of `restore` (none without a report), the per-partition families (series appear
    /// as [`BrokerRegistry::partition`] hands them out) and the internal API's request latency.
    pub fn new(
        node_id: u32,
        backups: &BackupMetrics,
        restore: Option<&RestoreReport>,
    ) -> BrokerRegistry {
        let registry = process_registry();
        let info = IntGaugeVec::new(
            Opts::new(
                BROKER_INFO,
                "This broker's node id and version (value 1; join on it for the node of a target).",
            ),
            &["node", "version"],
        )
        .expect("a valid gauge definition");
        info.with_label_values(&[node_id.to_string().as_str(), crate::BROKER_VERSION])
            .set(1);
        register(&registry, info);
        backups.register(&registry);
        if let Some(restore) = restore.and_then(RestoreReport::metrics) {
            register_restore(&registry, &restore);
        }
        let partitions = PartitionFamilies::new();
        partitions.register(&registry);
        let requests = RequestMetrics::register(
            &registry,
            "sluice_broker_request_duration_seconds",
            "Duration of the broker's internal API requests, by method, route and status.",
        );
        BrokerRegistry {
            registry,
            partitions,
            requests,
        }
    }

    /// The series of `partition_id`, shown by this registry.
    pub fn partition(&self, partition_id: u32) -> PartitionMetrics {
        self.partitions.partition(partition_id)
    }

    /// The internal API's request latency histogram.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// What `GET /metrics` answers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The restore the data directory came from, as gauges.
fn register_restore(registry: &Registry, restore: &RestoreMetrics) {
    let gauges = [
        (
            "sluice_restore_backup_id",
            "Backup the broker's data directory was restored from.",
            restore.backup_id as f64,
        ),
        (
            "sluice_restore_bytes",
            "Bytes downloaded and verified by that restore.",
            restore.bytes as f64,
        ),
        (
            "sluice_restore_files",
            "Files downloaded and verified by that restore.",
            restore.files as f64,
        ),
        (
            "sluice_restore_duration_seconds",
            "Duration of that restore, until everything was verified.",
            restore.duration_seconds,
        ),
        (
            "sluice_restore_timestamp_seconds",
            "When that restore finished, seconds since the Unix epoch.",
            restore.timestamp_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::new(name, help).expect("a valid gauge definition");
        gauge.set(value);
        register(registry, gauge);
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

/// Why [`RestoreReport::read`] could not use the report in the data directory (the broker logs
/// it and starts without restore metrics).
#[derive(Debug, thiserror::Error)]
pub enum RestoreReportError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a restore report: {source}", .path.display())]
    NotAReport {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: finishedAt {finished_at:?} is not an RFC 3339 time", .path.display())]
    FinishedAt { path: PathBuf, finished_at: String },
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

    /// The report in `data_directory`: `Ok(None)` when there is none, `Err` (naming the file)
    /// when it cannot be read or understood.
    pub fn read(data_directory: &Path) -> Result<Option<RestoreReport>, RestoreReportError> {
        let path = RestoreReport::path(data_directory);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RestoreReportError::Read { path, source }),
        };
        let report: RestoreReport = match serde_json::from_slice(&bytes) {
            Ok(report) => report,
            Err(source) => return Err(RestoreReportError::NotAReport { path, source }),
        };
        if report.metrics().is_none() {
            return Err(RestoreReportError::FinishedAt {
                path,
                finished_at: report.finished_at,
            });
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
    use sluice_protocol::metrics::{encode, parse_text, promtool_check};

    /// The samples of a registry's exposition, checked by the text format's parse check.
    fn samples(registry: &BrokerRegistry) -> std::collections::BTreeMap<String, f64> {
        let text = encode(registry.registry());
        parse_text(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .into_iter()
            .collect()
    }

    /// Every family, and the series an operator reads, as (series, value); `None` for a value
    /// only checked to be there.
    #[test]
    fn the_registry_shows_backups_partitions_restore_and_the_process() {
        let backups = BackupMetrics::new();
        let report = RestoreReport {
            backup_id: 4,
            node_id: 2,
            partitions: vec![3],
            files: 6,
            bytes: 4096,
            duration_ms: 1500,
            finished_at: "2024-01-02T03:04:05.678Z".into(),
        };
        let registry = BrokerRegistry::new(2, &backups, Some(&report));
        let before = samples(&registry);
        assert!(
            !before
                .keys()
                .any(|s| s.starts_with("sluice_backup_last_completed")),
            "absent until a backup completes: {before:#?}"
        );
        let in_progress = backups.started();
        backups.file_uploaded(10);
        backups.backup_completed(9, Duration::from_millis(700));
        backups.backup_failed();
        let partition = registry.partition(3);
        partition.record_processed(41, false);
        partition.record_processed(42, true);
        partition.log_flushed(Duration::from_micros(300));
        partition.log_is(&[
            SegmentInfo {
                first_position: 1,
                last_position: Some(30),
                path: "a".into(),
                len_bytes: 1000,
            },
            SegmentInfo {
                first_position: 31,
                last_position: Some(42),
                path: "b".into(),
                len_bytes: 24,
            },
        ]);
        partition.snapshot_taken(Duration::from_millis(20), 512);

        let after = samples(&registry);
        let version = crate::BROKER_VERSION;
        let info = format!("sluice_broker_info{{node=\"2\",version=\"{version}\"}}");
        let expected: Vec<(&str, Option<f64>)> = vec![
            (&info, Some(1.0)),
            (r#"sluice_backups_total{status="completed"}"#, Some(1.0)),
            (r#"sluice_backups_total{status="failed"}"#, Some(1.0)),
            ("sluice_backups_in_progress", Some(1.0)),
            ("sluice_backup_uploaded_bytes_total", Some(10.0)),
            ("sluice_backup_uploaded_files_total", Some(1.0)),
            (
                r#"sluice_backup_duration_seconds_bucket{le="0.5"}"#,
                Some(0.0),
            ),
            (
                r#"sluice_backup_duration_seconds_bucket{le="1"}"#,
                Some(1.0),
            ),
            (
                r#"sluice_backup_duration_seconds_bucket{le="+Inf"}"#,
                Some(1.0),
            ),
            ("sluice_backup_duration_seconds_count", Some(1.0)),
            ("sluice_backup_last_completed_id", Some(9.0)),
            ("sluice_backup_last_completed_timestamp_seconds", None),
            ("sluice_restore_backup_id", Some(4.0)),
            ("sluice_restore_bytes", Some(4096.0)),
            ("sluice_restore_files", Some(6.0)),
            ("sluice_restore_duration_seconds", Some(1.5)),
            ("sluice_restore_timestamp_seconds", Some(1_704_164_645.678)),
            (
                r#"sluice_partition_records_processed_total{partition="3"}"#,
                Some(2.0),
            ),
            (
                r#"sluice_partition_records_refused_total{partition="3"}"#,
                Some(1.0),
            ),
            (
                r#"sluice_partition_processed_position{partition="3"}"#,
                Some(42.0),
            ),
            (r#"sluice_partition_log_bytes{partition="3"}"#, Some(1024.0)),
            (r#"sluice_partition_log_segments{partition="3"}"#, Some(2.0)),
            (
                r#"sluice_partition_log_flush_duration_seconds_bucket{partition="3",le="0.0005"}"#,
                Some(1.0),
            ),
            (
                r#"sluice_partition_log_flush_duration_seconds_count{partition="3"}"#,
                Some(1.0),
            ),
            (
                r#"sluice_partition_snapshot_duration_seconds_count{partition="3"}"#,
                Some(1.0),
            ),
            (
                r#"sluice_partition_snapshot_size_bytes{partition="3"}"#,
                Some(512.0),
            ),
            ("process_cpu_seconds_total", None),
            ("process_resident_memory_bytes", None),
            ("process_open_fds", None),
        ];
        for (series, value) in expected {
            let got = after
                .get(series)
                .unwrap_or_else(|| panic!("no {series} in {after:#?}"));
            if let Some(value) = value {
                assert!((got - value).abs() < 1e-6, "{series}: {got} != {value}");
            }
        }
        let text = encode(registry.registry());
        promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        drop(in_progress);
        assert_eq!(samples(&registry)["sluice_backups_in_progress"], 0.0);
    }

    /// `GET /metrics` on the management router answers the text format with its content type.
    #[tokio::test]
    async fn the_management_router_serves_the_registry() {
        use tower::ServiceExt;
        let registry = Arc::new(BrokerRegistry::new(0, &BackupMetrics::new(), None));
        let response = crate::service::management_router(registry)
            .oneshot(
                axum::http::Request::get("/metrics")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            sluice_protocol::metrics::TEXT_CONTENT_TYPE
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        parse_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.contains("sluice_broker_info{"), "{text}");
    }

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
        assert_eq!(RestoreReport::read(dir.path()).unwrap(), None);
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
        let error = RestoreReport::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(RESTORE_REPORT_FILE), "{error}");
    }

    #[test]
    fn a_restore_report_without_an_rfc3339_time_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = RestoreReport::finished_now(4, 1, vec![2], 1, 1, Duration::from_millis(1));
        report.finished_at = "yesterday".to_string();
        report.write(&RestoreReport::path(dir.path())).unwrap();
        let error = RestoreReport::read(dir.path()).unwrap_err().to_string();
        assert!(
            error.ends_with(&format!(
                "{RESTORE_REPORT_FILE}: finishedAt \"yesterday\" is not an RFC 3339 time"
            )),
            "{error}"
        );
    }
}
