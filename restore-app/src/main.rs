//! `sluice-restore <backupId>`: rebuilds this node's data directory from a backup.
//!
//! Run on every node with that node's broker configuration. It restores every partition the node
//! hosts (the same round-robin rule as the broker). It refuses a data directory that is not empty
//! (`lost+found` and the leftovers of an unfinished restore aside), a backup that is missing or of
//! which any partition of the cluster is not COMPLETED or was taken with another partition count,
//! and any file whose size or checksum differs from the manifest.
//!
//! Nothing is half-written: files are downloaded into `<data dir>/.sluice-restore-<uuid>/`, each
//! partition is verified there by the broker's own recovery (snapshot loaded, log replayed up to
//! the checkpoint record, which must carry the backup id), fsynced, and only then moved into
//! place, under a marker (`restore-unfinished.json`) that the broker refuses to start with and
//! that a rerun of this tool cleans up. On any failure the data directory is left as it was
//! found (absent if it was absent). The logic is the `sluice_restore` library, which
//! `sluice backup verify` runs as well.
//!
//! With the partitions it publishes `<data dir>/restore-report.json` (backup id, files, bytes,
//! duration, finish time), written and fsynced in the staging directory first and moved into
//! place last; the broker reads it at start-up and exposes it as restore metrics.

use anyhow::{anyhow, bail, Context, Result};
use sluice_backup_store::FileKind;
use sluice_broker::backup_id::BackupId;
use sluice_config::SluiceConfig;
use sluice_restore::progress::Printer;
use sluice_restore::RestoreOptions;
use std::process::ExitCode;

const USAGE: &str = "usage: sluice-restore [--allow-unencrypted] <backupId> | sluice-restore [--allow-unencrypted] --backup-id <backupId>
       sluice-restore [--allow-unencrypted] --to <time>

Restores every partition this node hosts from backup <backupId> into broker.data.directory.
<backupId> is the id of a backup or of a marker (a restore point of continuous backups).
--to <time> (RFC 3339, e.g. 2026-12-01T18:30:00Z or 2026-12-01T19:30:00+01:00) restores the
newest checkpoint requested at or before that time that every partition can restore (the same
on every node, so run it with the same time everywhere); it prints the id it chose.
Configure it exactly like the broker of this node (SLUICE_* variables, SLUICE_CONFIG or
config/application.yaml). The data directory must be empty or absent.

--allow-unencrypted  restore a plain backup although encryption keys are configured (one taken
                     before encryption was turned on)";

/// The command line: what to restore and whether a plain backup may be restored.
struct Args {
    target: Target,
    allow_unencrypted: bool,
}

/// A checkpoint by id, or the newest restorable one at or before a time.
enum Target {
    Id(u64),
    /// Milliseconds since the Unix epoch, and the time as given.
    At(u64, String),
}

fn parse_args() -> Result<Args> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let allow_unencrypted = args.iter().any(|a| a == "--allow-unencrypted");
    args.retain(|a| a != "--allow-unencrypted");
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
        [flag, time] if flag == "--to" => {
            return Ok(Args {
                target: parse_time(time)?,
                allow_unencrypted,
            })
        }
        _ => bail!("expected exactly one backup id, or --to <time>\n\n{USAGE}"),
    };
    let id: BackupId = raw.parse()?;
    Ok(Args {
        target: Target::Id(id.get()),
        allow_unencrypted,
    })
}

/// An RFC 3339 time with its offset, after the Unix epoch.
fn parse_time(text: &str) -> Result<Target> {
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        anyhow!("--to {text:?} is not an RFC 3339 time ({e}); write it like 2026-12-01T18:30:00Z or 2026-12-01T19:30:00+01:00")
    })?;
    let ms = u64::try_from(time.timestamp_millis())
        .map_err(|_| anyhow!("--to {text:?} is before 1970; no checkpoint is that old"))?;
    Ok(Target::At(ms, text.trim().to_string()))
}

async fn restore(config: SluiceConfig, args: Args) -> Result<Vec<String>> {
    let broker = config.broker;
    let store = sluice_broker::service::open_store(&broker.data.backup, &broker.cluster)
        .await
        .context("cannot open the backup store (broker.data.backup.*)")?
        .ok_or_else(|| {
            anyhow!("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) and its settings as on the broker")
        })?;
    let store = if args.allow_unencrypted {
        store.allowing_plain_restore()
    } else {
        store
    };
    let mut lines = Vec::new();
    let backup_id = match args.target {
        Target::Id(id) => id,
        Target::At(at_ms, text) => {
            let point = sluice_restore::restore_point_at(&store, &broker.cluster, at_ms).await?;
            lines.push(format!(
                "restore point for --to {text}: checkpoint {} ({}, requested at {}), the newest at or before it that every partition can restore",
                point.checkpoint_id,
                point.kind.as_str(),
                sluice_restore::rfc3339_of_millis(point.at_ms)
            ));
            point.checkpoint_id
        }
    };
    let mut progress = Printer::new("restored");
    let restored = sluice_restore::restore_node(
        &store,
        &broker,
        backup_id,
        &RestoreOptions::default(),
        &mut progress,
    )
    .await?;
    if !restored.cleaned_up.is_empty() {
        lines.push(format!(
            "removed what an unfinished restore had left in the data directory: {}",
            restored.cleaned_up.join(", ")
        ));
    }
    for skipped in &restored.skipped {
        lines.push(format!(
            "skipped an unusable manifest of partition {} (node {}): {}: {}",
            skipped.id.partition_id, skipped.id.node_id, skipped.path, skipped.reason
        ));
    }
    for partition in restored.partitions {
        let bytes: u64 = partition.manifest.files.iter().map(|f| f.size_bytes).sum();
        let segments = partition
            .manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Segment)
            .count();
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
    Ok(lines)
}

#[tokio::main]
async fn main() -> ExitCode {
    sluice_broker::init_tracing();
    let outcome = async {
        let args = parse_args()?;
        let config = sluice_config::load().context("invalid configuration")?;
        config.validate_broker().context("invalid configuration")?;
        restore(config, args).await
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
