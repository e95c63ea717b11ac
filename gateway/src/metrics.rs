//! `GET /actuator/prometheus`: the backup and restore metrics of every broker, merged into one
//! Prometheus text exposition (format 0.0.4). Each metric's `# HELP` and `# TYPE` appear once,
//! followed by one series per broker labelled `node="<nodeId>"` (sorted by node id). A broker
//! that does not answer within [`BROKER_TIMEOUT`] is left out, which `sluice_gateway_brokers_up`
//! shows; it never fails the whole answer.
//!
//! Hand-written on purpose: the format is a few lines of text, and the values are snapshots the
//! brokers already computed, so a metrics crate (registry, collectors) would add nothing.

use std::fmt::Write;
use std::time::Duration;

use futures::future::join_all;
use sluice_protocol::wire::BrokerMetrics;

use crate::cluster::Cluster;

/// How long a scrape waits for one broker (below Prometheus' default scrape timeout of 10 s).
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks every broker for its metrics, concurrently, and renders those that answered.
pub async fn render(cluster: &Cluster) -> String {
    let answers = join_all(cluster.brokers().iter().map(|broker| async move {
        match tokio::time::timeout(BROKER_TIMEOUT, broker.metrics()).await {
            Ok(Ok(metrics)) => Some(metrics),
            Ok(Err(error)) => {
                tracing::debug!(broker = broker.address(), %error, "no metrics from broker");
                None
            }
            Err(_) => {
                tracing::debug!(
                    broker = broker.address(),
                    "no metrics from broker within {BROKER_TIMEOUT:?}"
                );
                None
            }
        }
    }))
    .await;
    let brokers: Vec<BrokerMetrics> = answers.into_iter().flatten().collect();
    render_text(&brokers)
}

/// The exposition of the metrics of the brokers that answered.
pub fn render_text(brokers: &[BrokerMetrics]) -> String {
    let mut brokers: Vec<&BrokerMetrics> = brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut out = String::new();

    header(
        &mut out,
        "sluice_gateway_brokers_up",
        "gauge",
        "Brokers that answered this scrape.",
    );
    sample(
        &mut out,
        "sluice_gateway_brokers_up",
        "",
        brokers.len() as f64,
    );

    header(
        &mut out,
        "sluice_backups_total",
        "counter",
        "Partition backups finished on the broker since it started, by final status.",
    );
    for b in &brokers {
        for (status, value) in [
            ("completed", b.backups_completed),
            ("failed", b.backups_failed),
        ] {
            let labels = format!("node=\"{}\",status=\"{status}\"", b.node_id);
            sample(&mut out, "sluice_backups_total", &labels, value as f64);
        }
    }

    simple(&mut out, &brokers, &COUNTS);

    let name = "sluice_backup_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Duration of completed partition backups, from the start of the upload to the COMPLETED manifest.",
    );
    for b in &brokers {
        let histogram = &b.backup_duration;
        for bucket in &histogram.buckets {
            let labels = format!("{},le=\"{}\"", node(b), float(bucket.le));
            sample(
                &mut out,
                &format!("{name}_bucket"),
                &labels,
                bucket.count as f64,
            );
        }
        let labels = format!("{},le=\"+Inf\"", node(b));
        sample(
            &mut out,
            &format!("{name}_bucket"),
            &labels,
            histogram.count as f64,
        );
        sample(&mut out, &format!("{name}_sum"), &node(b), histogram.sum);
        sample(
            &mut out,
            &format!("{name}_count"),
            &node(b),
            histogram.count as f64,
        );
    }

    simple(&mut out, &brokers, &LAST_COMPLETED_AND_RESTORE);
    out
}

/// A metric with at most one sample per broker, labelled by node only (none when `value` is
/// `None`).
struct Simple {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&BrokerMetrics) -> Option<f64>,
}

const COUNTS: [Simple; 3] = [
    Simple {
        name: "sluice_backups_in_progress",
        kind: "gauge",
        help: "Partition backups accepted by the broker and not finished yet.",
        value: |b| Some(b.backups_in_progress as f64),
    },
    Simple {
        name: "sluice_backup_uploaded_bytes_total",
        kind: "counter",
        help: "Bytes of backup files uploaded to the backup store (as stored, after compression).",
        value: |b| Some(b.uploaded_bytes as f64),
    },
    Simple {
        name: "sluice_backup_uploaded_files_total",
        kind: "counter",
        help: "Backup files uploaded to the backup store.",
        value: |b| Some(b.uploaded_files as f64),
    },
];

const LAST_COMPLETED_AND_RESTORE: [Simple; 7] = [
    Simple {
        name: "sluice_backup_last_completed_id",
        kind: "gauge",
        help: "Highest backup id of which a partition backup completed on the broker since it started.",
        value: |b| b.last_completed.map(|l| l.backup_id as f64),
    },
    Simple {
        name: "sluice_backup_last_completed_timestamp_seconds",
        kind: "gauge",
        help: "When that partition backup completed, seconds since the Unix epoch.",
        value: |b| b.last_completed.map(|l| l.timestamp_seconds),
    },
    Simple {
        name: "sluice_restore_backup_id",
        kind: "gauge",
        help: "Backup the broker's data directory was restored from.",
        value: |b| b.restore.map(|r| r.backup_id as f64),
    },
    Simple {
        name: "sluice_restore_bytes",
        kind: "gauge",
        help: "Bytes downloaded and verified by that restore.",
        value: |b| b.restore.map(|r| r.bytes as f64),
    },
    Simple {
        name: "sluice_restore_files",
        kind: "gauge",
        help: "Files downloaded and verified by that restore.",
        value: |b| b.restore.map(|r| r.files as f64),
    },
    Simple {
        name: "sluice_restore_duration_seconds",
        kind: "gauge",
        help: "Duration of that restore, until everything was verified.",
        value: |b| b.restore.map(|r| r.duration_seconds),
    },
    Simple {
        name: "sluice_restore_timestamp_seconds",
        kind: "gauge",
        help: "When that restore finished, seconds since the Unix epoch.",
        value: |b| b.restore.map(|r| r.timestamp_seconds),
    },
];

fn simple(out: &mut String, brokers: &[&BrokerMetrics], metrics: &[Simple]) {
    for metric in metrics {
        header(out, metric.name, metric.kind, metric.help);
        for b in brokers {
            if let Some(value) = (metric.value)(b) {
                sample(out, metric.name, &node(b), value);
            }
        }
    }
}

fn node(b: &BrokerMetrics) -> String {
    format!("node=\"{}\"", b.node_id)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {}", float(value));
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {}", float(value));
    }
}

/// A value as Prometheus reads it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::wire::{Histogram, HistogramBucket, LastCompletedBackup, RestoreMetrics};

    fn broker(node_id: u32) -> BrokerMetrics {
        BrokerMetrics {
            node_id,
            backups_completed: 0,
            backups_failed: 0,
            backups_in_progress: 0,
            uploaded_bytes: 0,
            uploaded_files: 0,
            backup_duration: Histogram {
                buckets: vec![
                    HistogramBucket { le: 0.5, count: 0 },
                    HistogramBucket { le: 10.0, count: 0 },
                ],
                sum: 0.0,
                count: 0,
            },
            last_completed: None,
            restore: None,
        }
    }

    #[test]
    fn no_broker_answered() {
        assert_eq!(
            render_text(&[]),
            "\
# HELP sluice_gateway_brokers_up Brokers that answered this scrape.
# TYPE sluice_gateway_brokers_up gauge
sluice_gateway_brokers_up 0
# HELP sluice_backups_total Partition backups finished on the broker since it started, by final status.
# TYPE sluice_backups_total counter
# HELP sluice_backups_in_progress Partition backups accepted by the broker and not finished yet.
# TYPE sluice_backups_in_progress gauge
# HELP sluice_backup_uploaded_bytes_total Bytes of backup files uploaded to the backup store (as stored, after compression).
# TYPE sluice_backup_uploaded_bytes_total counter
# HELP sluice_backup_uploaded_files_total Backup files uploaded to the backup store.
# TYPE sluice_backup_uploaded_files_total counter
# HELP sluice_backup_duration_seconds Duration of completed partition backups, from the start of the upload to the COMPLETED manifest.
# TYPE sluice_backup_duration_seconds histogram
# HELP sluice_backup_last_completed_id Highest backup id of which a partition backup completed on the broker since it started.
# TYPE sluice_backup_last_completed_id gauge
# HELP sluice_backup_last_completed_timestamp_seconds When that partition backup completed, seconds since the Unix epoch.
# TYPE sluice_backup_last_completed_timestamp_seconds gauge
# HELP sluice_restore_backup_id Backup the broker's data directory was restored from.
# TYPE sluice_restore_backup_id gauge
# HELP sluice_restore_bytes Bytes downloaded and verified by that restore.
# TYPE sluice_restore_bytes gauge
# HELP sluice_restore_files Files downloaded and verified by that restore.
# TYPE sluice_restore_files gauge
# HELP sluice_restore_duration_seconds Duration of that restore, until everything was verified.
# TYPE sluice_restore_duration_seconds gauge
# HELP sluice_restore_timestamp_seconds When that restore finished, seconds since the Unix epoch.
# TYPE sluice_restore_timestamp_seconds gauge
"
        );
    }

    /// The sample lines (not the comments) of the exposition of `brokers`.
    fn samples(brokers: &[BrokerMetrics]) -> Vec<String> {
        render_text(brokers)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn brokers_are_merged_by_metric_and_labelled_by_node() {
        let mut busy = broker(1);
        busy.backups_completed = 2;
        busy.backups_failed = 1;
        busy.backups_in_progress = 1;
        busy.uploaded_bytes = 123_456;
        busy.uploaded_files = 9;
        busy.backup_duration = Histogram {
            buckets: vec![
                HistogramBucket { le: 0.5, count: 1 },
                HistogramBucket { le: 10.0, count: 2 },
            ],
            sum: 3.25,
            count: 2,
        };
        busy.last_completed = Some(LastCompletedBackup {
            backup_id: 7,
            timestamp_seconds: 1_700_000_000.5,
        });
        busy.restore = Some(RestoreMetrics {
            backup_id: 3,
            files: 4,
            bytes: 5000,
            duration_seconds: 1.5,
            timestamp_seconds: 1_600_000_000.0,
        });
        // Answers arrive in any order; the output is sorted by node.
        let lines = samples(&[busy, broker(0)]);
        let expected = [
            "sluice_gateway_brokers_up 2",
            "sluice_backups_total{node=\"0\",status=\"completed\"} 0",
            "sluice_backups_total{node=\"0\",status=\"failed\"} 0",
            "sluice_backups_total{node=\"1\",status=\"completed\"} 2",
            "sluice_backups_total{node=\"1\",status=\"failed\"} 1",
            "sluice_backups_in_progress{node=\"0\"} 0",
            "sluice_backups_in_progress{node=\"1\"} 1",
            "sluice_backup_uploaded_bytes_total{node=\"0\"} 0",
            "sluice_backup_uploaded_bytes_total{node=\"1\"} 123456",
            "sluice_backup_uploaded_files_total{node=\"0\"} 0",
            "sluice_backup_uploaded_files_total{node=\"1\"} 9",
            "sluice_backup_duration_seconds_bucket{node=\"0\",le=\"0.5\"} 0",
            "sluice_backup_duration_seconds_bucket{node=\"0\",le=\"10\"} 0",
            "sluice_backup_duration_seconds_bucket{node=\"0\",le=\"+Inf\"} 0",
            "sluice_backup_duration_seconds_sum{node=\"0\"} 0",
            "sluice_backup_duration_seconds_count{node=\"0\"} 0",
            "sluice_backup_duration_seconds_bucket{node=\"1\",le=\"0.5\"} 1",
            "sluice_backup_duration_seconds_bucket{node=\"1\",le=\"10\"} 2",
            "sluice_backup_duration_seconds_bucket{node=\"1\",le=\"+Inf\"} 2",
            "sluice_backup_duration_seconds_sum{node=\"1\"} 3.25",
            "sluice_backup_duration_seconds_count{node=\"1\"} 2",
            "sluice_backup_last_completed_id{node=\"1\"} 7",
            "sluice_backup_last_completed_timestamp_seconds{node=\"1\"} 1700000000.5",
            "sluice_restore_backup_id{node=\"1\"} 3",
            "sluice_restore_bytes{node=\"1\"} 5000",
            "sluice_restore_files{node=\"1\"} 4",
            "sluice_restore_duration_seconds{node=\"1\"} 1.5",
            "sluice_restore_timestamp_seconds{node=\"1\"} 1600000000",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn every_metric_is_described_once_whatever_the_number_of_brokers() {
        let text = render_text(&[broker(0), broker(1), broker(2)]);
        let mut described = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            *described.entry(name.to_string()).or_insert(0) += 1;
        }
        assert_eq!(described.len(), 13, "{text}");
        assert!(described.values().all(|n| *n == 1), "{described:?}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP ")).count(),
            13
        );
    }

    #[test]
    fn special_values_are_spelled_as_prometheus_reads_them() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.05), "0.05");
        assert_eq!(float(1800.0), "1800");
    }
}
