//! `sluice-restore <backupId>`: rebuilds this node's data directory from a backup.
//!
//! Run on every node with that node's broker configuration. It restores every partition the node
//! hosts (the same round-robin rule as the broker). It refuses a data directory that is not empty
//! (`lost+found` aside), a backup that is missing, not COMPLETED or taken with another partition
//! count, and any file whose size or checksum differs from the manifest.
//!
//! Nothing is half-written: files are downloaded into `<data dir>/.sluice-restore-<uuid>/`, each
//! partition is verified there by the broker's own recovery (snapshot loaded, log replayed up to
//! the checkpoint record, which must carry the backup id), and only then moved into place. On any
//! failure the data directory is left as it was found (absent if it was absent).
//!
//! With the partitions it publishes `<data dir>/restore-report.json` (backup id, files, bytes,
//! duration, finish time), written and fsynced in the staging directory first and moved into
//! place last; the broker reads it at start-up and exposes it as restore metrics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use sluice_backup_store::{BackupStatus, BackupStore, FileKind, Manifest};
use sluice_broker::metrics::RestoreReport;
use sluice_broker::partition::{partition_directory, PartitionOptions, PartitionService};
use sluice_broker::record::Command;
use sluice_broker::routing::partitions_for_node;
use sluice_config::{BrokerConfig, SluiceConfig};

const USAGE: &str = "usage: sluice-restore <backupId> | sluice-restore --backup-id <backupId>

Restores every partition this node hosts from backup <backupId> into broker.data.directory.
Configure it exactly like the broker of this node (SLUICE_* variables, SLUICE_CONFIG or
config/application.yaml). The data directory must be empty or absent.";

fn parse_args() -> Result<u64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let raw = match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        [id] if !id.starts_with("--") => id.clone(),
        [flag, id] if flag == "--backup-id" => id.clone(),
        [single] if single.starts_with("--backup-id=") => {
            single["--backup-id=".len()..].to_string()
        }
        _ => bail!("expected exactly one backup id\n\n{USAGE}"),
    };
    let id: u64 = raw
        .parse()
        .ok()
        .filter(|id| *id > 0 && *id <= i64::MAX as u64)
        .ok_or_else(|| {
            anyhow!(
                "backupId must be a positive 64-bit integer (1 to {}), got {raw:?}",
                i64::MAX
            )
        })?;
    Ok(id)
}

/// Entries of `dir` other than `lost+found`; `None` when `dir` does not exist.
fn existing_entries(dir: &Path) -> Result<Option<Vec<String>>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                let name = entry
                    .with_context(|| format!("cannot list the data directory {}", dir.display()))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name != "lost+found" {
                    names.push(name);
                }
            }
            names.sort();
            Ok(Some(names))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => {
            Err(error).with_context(|| format!("cannot read the data directory {}", dir.display()))
        }
    }
}

/// Picks the manifest to restore partition `partition_id` from, refusing what cannot be restored.
async fn choose_manifest(
    store: &BackupStore,
    config: &BrokerConfig,
    partition_id: u32,
    backup_id: u64,
) -> Result<Manifest> {
    let manifests = store
        .find_manifests(partition_id, backup_id)
        .await
        .with_context(|| {
            format!(
                "cannot read backup {backup_id} of partition {partition_id} from the backup store"
            )
        })?;
    if manifests.is_empty() {
        bail!(
            "backup {backup_id} does not exist for partition {partition_id} in the configured backup store; \
             list the backups with GET /actuator/backups and check broker.data.backup.* (same settings as the broker)"
        );
    }
    let completed: Vec<Manifest> = manifests
        .iter()
        .filter(|m| m.status == BackupStatus::Completed)
        .cloned()
        .collect();
    let Some(manifest) = completed
        .iter()
        .find(|m| m.id.node_id == config.cluster.node_id)
        .or_else(|| {
            completed
                .iter()
                .max_by(|a, b| a.last_updated_at.cmp(&b.last_updated_at))
        })
        .cloned()
    else {
        let states: Vec<String> = manifests
            .iter()
            .map(|m| {
                format!(
                    "{:?}{}",
                    m.status,
                    m.failure_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        bail!(
            "backup {backup_id} of partition {partition_id} is not COMPLETED ({}); only completed backups can be restored: choose another backup id",
            states.join(", ")
        );
    };
    if manifest.descriptor.number_of_partitions != config.cluster.partitions_count {
        bail!(
            "backup {backup_id} was taken with partitionsCount={} but this node is configured with broker.cluster.partitionsCount={}; \
             restore with the partition count of the backup",
            manifest.descriptor.number_of_partitions,
            config.cluster.partitions_count
        );
    }
    Ok(manifest)
}

struct Restored {
    partition_id: u32,
    manifest: Manifest,
    accounts: u64,
    staged: PathBuf,
}

/// Downloads and verifies one partition into `staged`.
async fn stage_partition(
    store: &BackupStore,
    config: &BrokerConfig,
    manifest: Manifest,
    staged: PathBuf,
    progress: &mut Progress,
) -> Result<Restored> {
    let partition_id = manifest.id.partition_id;
    let backup_id = manifest.id.checkpoint_id;
    let log_dir = staged.join("log");
    let snapshot_dir = manifest
        .descriptor
        .snapshot_id
        .as_ref()
        .map(|id| staged.join("snapshots").join(id));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    for entry in &manifest.files {
        let destination = match (entry.kind, &snapshot_dir) {
            (FileKind::Segment, _) => log_dir.join(&entry.name),
            (FileKind::Snapshot, Some(dir)) => dir.join(&entry.name),
            (FileKind::Snapshot, None) => bail!(
                "backup {backup_id} of partition {partition_id} lists snapshot file {} but no snapshot id; the manifest is damaged: take a new backup",
                entry.name
            ),
        };
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        store
            .download_file(&manifest.id, entry, &destination)
            .await
            .with_context(|| {
                format!(
                    "cannot restore file {} of partition {partition_id}",
                    entry.name
                )
            })?;
        progress.file_done(partition_id, &entry.name, entry.size_bytes);
    }
    // Cut the log right after the checkpoint record, and check that record is this backup's.
    let position = manifest.descriptor.checkpoint_position;
    let payload = sluice_broker::log::truncate_after(&log_dir, position)
        .with_context(|| format!("partition {partition_id}: the log of backup {backup_id} does not hold its checkpoint record"))?;
    match Command::decode(&payload) {
        Ok(Command::Checkpoint { checkpoint_id }) if checkpoint_id == backup_id => {}
        other => bail!(
            "partition {partition_id}: the record at checkpoint position {position} is {other:?}, not the checkpoint of backup {backup_id}; the backup is damaged: choose another backup"
        ),
    }
    // Recover the partition exactly as the broker will, and check where it lands.
    let options = PartitionOptions {
        partition_id,
        partitions_count: config.cluster.partitions_count,
        node_id: config.cluster.node_id,
        directory: staged.clone(),
        segment_bytes_max: config.data.log_segment_size_bytes,
        snapshot_period: config.data.snapshot_period,
        request_queue_capacity: 1,
        batch_commands_max: 1,
    };
    let (service, _handle) =
        tokio::task::spawn_blocking(move || PartitionService::open(options, None))
            .await
            .context("recovery check panicked")?
            .with_context(|| {
                format!("partition {partition_id}: the restored data does not recover")
            })?;
    let summary = service.summary();
    if service.latest_checkpoint() != Some((backup_id, position)) {
        bail!(
            "partition {partition_id}: after recovery the latest checkpoint is {:?}, expected backup {backup_id} at position {position}",
            service.latest_checkpoint()
        );
    }
    Ok(Restored {
        partition_id,
        manifest,
        accounts: summary.accounts,
        staged,
    })
}

async fn restore(config: SluiceConfig, backup_id: u64) -> Result<Vec<String>> {
    let started = Instant::now();
    let broker = config.broker;
    let store = sluice_broker::service::open_store(&broker.data.backup)
        .await
        .context("cannot open the backup store (broker.data.backup.*)")?
        .ok_or_else(|| {
            anyhow!("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) and its settings as on the broker")
        })?;
    let data_dir = broker.data.directory.clone();
    let existed = match existing_entries(&data_dir)? {
        Some(entries) if !entries.is_empty() => bail!(
            "the data directory {} is not empty (it holds {}); restore only into an empty directory: move its contents away or point broker.data.directory (SLUICE_BROKER_DATA_DIRECTORY) elsewhere",
            data_dir.display(),
            entries.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ),
        Some(_) => true,
        None => false,
    };
    let hosted = partitions_for_node(
        broker.cluster.node_id,
        broker.cluster.cluster_size,
        broker.cluster.partitions_count,
    );
    // Check every partition before writing anything.
    let mut manifests = Vec::new();
    for partition_id in &hosted {
        manifests.push(choose_manifest(&store, &broker, *partition_id, backup_id).await?);
    }

    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let staging = data_dir.join(format!(".sluice-restore-{}", uuid::Uuid::new_v4()));
    let mut installed: Vec<PathBuf> = Vec::new();
    let mut progress = Progress::new(
        manifests.iter().map(|m| m.files.len() as u64).sum(),
        manifests
            .iter()
            .flat_map(|m| &m.files)
            .map(|f| f.size_bytes)
            .sum(),
    );
    let result = async {
        let mut restored = Vec::new();
        for manifest in manifests {
            let staged = partition_directory(&staging, manifest.id.partition_id);
            restored.push(stage_partition(&store, &broker, manifest, staged, &mut progress).await?);
        }
        progress.finish();
        // Everything is verified: the report is staged with the partitions, published last.
        let report = RestoreReport::finished_now(
            backup_id,
            broker.cluster.node_id,
            restored.iter().map(|p| p.partition_id).collect(),
            restored.iter().map(|p| p.manifest.files.len() as u64).sum(),
            restored
                .iter()
                .flat_map(|p| &p.manifest.files)
                .map(|f| f.size_bytes)
                .sum(),
            started.elapsed(),
        );
        let staged_report = RestoreReport::path(&staging);
        report
            .write(&staged_report)
            .with_context(|| format!("cannot write the restore report {}", staged_report.display()))?;
        let mut lines = Vec::new();
        for partition in restored {
            let target = partition_directory(&data_dir, partition.partition_id);
            std::fs::rename(&partition.staged, &target)
                .with_context(|| format!("cannot move the restored partition into {}", target.display()))?;
            installed.push(target);
            let bytes: u64 = partition.manifest.files.iter().map(|f| f.size_bytes).sum();
            let segments = partition.manifest.files.iter().filter(|f| f.kind == FileKind::Segment).count();
            lines.push(format!(
                "restored partition {} from backup {} (taken on node {}): snapshot {}, {} segment(s), {} bytes verified, checkpoint position {}, {} accounts",
                partition.partition_id,
                backup_id,
                partition.manifest.id.node_id,
                partition.manifest.descriptor.snapshot_id.as_deref().unwrap_or("none"),
                segments,
                bytes,
                partition.manifest.descriptor.checkpoint_position,
                partition.accounts,
            ));
        }
        let report_target = RestoreReport::path(&data_dir);
        std::fs::rename(&staged_report, &report_target)
            .with_context(|| format!("cannot move the restore report into {}", report_target.display()))?;
        installed.push(report_target);
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
        std::fs::File::open(&data_dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync {}", data_dir.display()))?;
        Ok::<_, anyhow::Error>(lines)
    }
    .await;
    match result {
        Ok(lines) => Ok(lines),
        Err(error) => {
            // Leave the data directory as it was found.
            let _ = std::fs::remove_dir_all(&staging);
            for path in installed {
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(path);
                } else {
                    let _ = std::fs::remove_file(path);
                }
            }
            if !existed {
                let _ = std::fs::remove_dir_all(&data_dir);
            }
            Err(error)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    sluice_broker::init_tracing();
    let outcome = async {
        let backup_id = parse_args()?;
        let config = sluice_config::load().context("invalid configuration")?;
        config.validate_broker().context("invalid configuration")?;
        restore(config, backup_id).await
    }
    .await;
    match outcome {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("restore failed: {error:#}");
            eprintln!("the data directory was left as it was found");
            ExitCode::FAILURE
        }
    }
}

/// Download progress: a bar with bytes, files, rate and ETA on a terminal; a log line a file
/// otherwise (so that logs collected from a pipe stay readable).
struct Progress {
    files_total: u64,
    bytes_total: u64,
    files_done: u64,
    bytes_done: u64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(files_total: u64, bytes_total: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(bytes_total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            files_total,
            bytes_total,
            files_done: 0,
            bytes_done: 0,
            started: Instant::now(),
            bar,
        }
    }

    fn file_done(&mut self, partition_id: u32, name: &str, bytes: u64) {
        self.files_done += 1;
        self.bytes_done += bytes;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.bytes_done);
                bar.set_message(format!(
                    "file {}/{} partition {partition_id} {name}",
                    self.files_done, self.files_total
                ));
            }
            None => {
                let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
                let rate = self.bytes_done as f64 / elapsed;
                let eta_s = if rate > 0.0 {
                    (self.bytes_total - self.bytes_done) as f64 / rate
                } else {
                    0.0
                };
                tracing::info!(
                    partition = partition_id,
                    file = name,
                    files = format!("{}/{}", self.files_done, self.files_total),
                    bytes = format!("{}/{}", self.bytes_done, self.bytes_total),
                    rate_mib_per_s = format!("{:.1}", rate / (1024.0 * 1024.0)),
                    eta_s = format!("{eta_s:.0}"),
                    "restored file"
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
