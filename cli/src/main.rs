//! `sluice`: the operator's command line.
//!
//! - `sluice backup take|status|list|delete` talk to a gateway's actuator (`--address`).
//! - `sluice backup inspect|verify` read the backup store directly, configured like a broker
//!   (`SLUICE_*` variables, `SLUICE_CONFIG` or `config/application.yaml`): no cluster needed.
//!
//! Exit codes: 0 ok; 1 error; 2 usage; for `verify`: 3 corrupt, 4 missing or incomplete,
//! 5 store unreachable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use serde_json::Value;
use sluice_backup_store::{BackupStore, BackupStoreError, Manifest, Rekeyed};
use sluice_broker::backup_id::BackupId;
use sluice_config::BrokerConfig;
use sluice_restore::FailureKind;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Operate Sluice backups")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Backups: take, watch, list, delete (through a gateway); inspect, verify (from the store).
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(clap::Args, Clone)]
struct Remote {
    /// The gateway's management address.
    #[arg(long, env = "SLUICE_ADDRESS", default_value = "http://127.0.0.1:9600")]
    address: String,
    /// Bearer token for the actuator.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the certificate authority that signed the gateway's certificate (for an
    /// https:// address with a private CA); the system's roots are trusted as well.
    #[arg(long, env = "SLUICE_CA")]
    ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Take backup <id>; with --wait, until it is COMPLETED or FAILED.
    Take {
        #[arg(value_parser = backup_id)]
        id: String,
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 10m.
        #[arg(long, default_value = "30m", value_parser = humantime_duration)]
        timeout: Duration,
        #[command(flatten)]
        remote: Remote,
    },
    /// Status of backup <id>.
    Status {
        #[arg(value_parser = backup_id)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Every backup, newest first.
    List {
        /// Only ids that start with these digits.
        #[arg(long)]
        prefix: Option<String>,
        /// BACKUP (the default), MARKER (restore points of continuous backups) or ALL.
        #[arg(long, value_parser = ["BACKUP", "MARKER", "ALL"])]
        kind: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// What can be restored: the newest cluster-wide restore point, and per partition and for
    /// the cluster the ranges of restorable checkpoints (backups and markers) and each break.
    RestorePoints {
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete backup <id> from the store.
    Delete {
        #[arg(value_parser = backup_id)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Describe backup <id> from its manifests in the store.
    Inspect {
        #[arg(value_parser = backup_id_number)]
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Run every check a restore of backup <id> runs, for every partition, in a temporary
    /// directory: every partition COMPLETED, every file's size and checksum, the checkpoint
    /// record, the snapshot, and the broker's recovery up to the checkpoint.
    Verify {
        #[arg(value_parser = backup_id_number)]
        id: u64,
        /// Verify a plain backup although encryption keys are configured.
        #[arg(long)]
        allow_unencrypted: bool,
    },
    /// Re-wrap the keys of every encrypted backup in the store under the primary key
    /// (broker.data.backup.encryption.primaryKey) and re-MAC its manifest; no data is uploaded.
    /// Run it after the brokers moved to a new primary key, before the old key is removed.
    Rekey,
    /// Print a new random key-encryption key (64 hex digits) for
    /// broker.data.backup.encryption.keys, or write it to a new file readable by its owner only.
    Keygen {
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A backup id as every Sluice tool parses it, kept as written (it goes into a URL).
fn backup_id(text: &str) -> Result<String, String> {
    backup_id_number(text).map(|_| text.to_string())
}

fn backup_id_number(text: &str) -> Result<u64, String> {
    text.parse::<BackupId>()
        .map(BackupId::get)
        .map_err(|error| error.to_string())
}

fn humantime_duration(text: &str) -> Result<Duration, sluice_config::ValueError> {
    sluice_config::parse_duration(text)
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

/// Bad command-line input (also what clap uses).
const EXIT_USAGE: u8 = 2;
const EXIT_CORRUPT: u8 = 3;
const EXIT_MISSING: u8 = 4;
const EXIT_UNREACHABLE: u8 = 5;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Top::Backup(command) = cli.command;
    match run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(command: BackupCommand) -> Result<(), Failure> {
    match command {
        BackupCommand::Take {
            id,
            wait,
            timeout,
            remote,
        } => take(&remote, &id, wait, timeout).await,
        BackupCommand::Status { id, remote } => {
            let body = call(
                &remote,
                reqwest::Method::GET,
                &format!("/actuator/backups/{id}"),
            )
            .await?;
            print_backup(&remote, &body);
            Ok(())
        }
        BackupCommand::List {
            prefix,
            kind,
            remote,
        } => {
            let query: Vec<String> = [("prefix", prefix), ("kind", kind)]
                .into_iter()
                .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
                .collect();
            let path = if query.is_empty() {
                "/actuator/backups".to_string()
            } else {
                format!("/actuator/backups?{}", query.join("&"))
            };
            let body = call(&remote, reqwest::Method::GET, &path).await?;
            let list = body.as_array().cloned().unwrap_or_default();
            print_backup_list(&remote, &list);
            Ok(())
        }
        BackupCommand::RestorePoints { remote } => {
            let body = call(
                &remote,
                reqwest::Method::GET,
                "/actuator/backups/restore-points",
            )
            .await?;
            if remote.json {
                println!("{body}");
            } else {
                print_restore_points(&body);
            }
            Ok(())
        }
        BackupCommand::Delete { id, remote } => {
            call(
                &remote,
                reqwest::Method::DELETE,
                &format!("/actuator/backups/{id}"),
            )
            .await?;
            if remote.json {
                println!("{}", serde_json::json!({"deleted": id}));
            } else {
                println!("deleted backup {id}");
            }
            Ok(())
        }
        BackupCommand::Inspect { id, json } => inspect(id, json).await,
        BackupCommand::Verify {
            id,
            allow_unencrypted,
        } => verify(id, allow_unencrypted).await,
        BackupCommand::Rekey => rekey().await,
        BackupCommand::Keygen { out } => keygen(out.as_deref()),
    }
}

/// One actuator call; a non-2xx answer becomes an error carrying the gateway's message.
async fn call(remote: &Remote, method: reqwest::Method, path: &str) -> Result<Value, Failure> {
    let url = format!("{}{path}", remote.address.trim_end_matches('/'));
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(ca) = &remote.ca {
        let pem = std::fs::read(ca).map_err(|error| Failure {
            code: EXIT_USAGE,
            error: anyhow!("cannot read --ca {}: {error}", ca.display()),
        })?;
        let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| Failure {
            code: EXIT_USAGE,
            error: anyhow!("--ca {} is not a PEM certificate: {error}", ca.display()),
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    let client = builder.build().context("cannot build an HTTP client")?;
    let mut request = client.request(method.clone(), &url);
    if let Some(token) = &remote.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| Failure {
        code: EXIT_UNREACHABLE,
        error: anyhow!("cannot reach the gateway at {url}: {error}; check --address"),
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if !status.is_success() {
        let message = body["message"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        return Err(Failure {
            code: 1,
            error: anyhow!("{method} {url} answered {status}: {message}"),
        });
    }
    Ok(body)
}

async fn take(remote: &Remote, id: &str, wait: bool, timeout: Duration) -> Result<(), Failure> {
    call(
        remote,
        reqwest::Method::POST,
        &format!("/actuator/backups/{id}"),
    )
    .await?;
    if !wait {
        if remote.json {
            println!("{}", serde_json::json!({"id": id}));
        } else {
            println!(
                "backup {id} taken; its upload runs in the background (sluice backup status {id})"
            );
        }
        return Ok(());
    }
    let terminal = std::io::stderr().is_terminal();
    let spinner = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let body = call(
            remote,
            reqwest::Method::GET,
            &format!("/actuator/backups/{id}"),
        )
        .await?;
        let status = body["status"].as_str().unwrap_or("UNKNOWN").to_string();
        let done = body["partitions"].as_array().map_or(0, |ps| {
            ps.iter().filter(|p| p["status"] == "COMPLETED").count()
        });
        let total = body["partitions"].as_array().map_or(0, Vec::len);
        let line = format!(
            "backup {id}: {status}, {done}/{total} partitions completed, {:.0?} elapsed",
            started.elapsed()
        );
        match &spinner {
            Some(bar) => bar.set_message(line.clone()),
            None if line != last_line => eprintln!("{line}"),
            None => {}
        }
        last_line = line;
        match status.as_str() {
            "COMPLETED" => {
                if let Some(bar) = &spinner {
                    bar.finish_and_clear();
                }
                print_backup(remote, &body);
                return Ok(());
            }
            "FAILED" => {
                if let Some(bar) = &spinner {
                    bar.finish_and_clear();
                }
                print_backup(remote, &body);
                return Err(Failure {
                    code: 1,
                    error: anyhow!(
                        "backup {id} FAILED: {}",
                        body["failureReason"].as_str().unwrap_or("no reason")
                    ),
                });
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            return Err(Failure {
                code: 1,
                error: anyhow!("backup {id} is still {status} after {timeout:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One backup: the object itself with `--json`, else a table of one row.
fn print_backup(remote: &Remote, backup: &Value) {
    if remote.json {
        println!("{backup}");
    } else {
        print_backup_table(std::slice::from_ref(backup));
    }
}

/// A list of backups: a JSON array with `--json` (also of one or none), else a table.
fn print_backup_list(remote: &Remote, backups: &[Value]) {
    if remote.json {
        println!("{}", Value::Array(backups.to_vec()));
    } else {
        print_backup_table(backups);
    }
}

fn print_backup_table(backups: &[Value]) {
    println!(
        "{:<20} {:<7} {:<24} {:<15} {:>10}  FAILURE",
        "BACKUP", "KIND", "REQUESTED", "STATUS", "PARTITIONS"
    );
    for backup in backups {
        let partitions = backup["partitions"].as_array().map_or(0, Vec::len);
        println!(
            "{:<20} {:<7} {:<24} {:<15} {:>10}  {}",
            backup["backupId"].to_string(),
            backup["kind"].as_str().unwrap_or("?"),
            backup["requestedAt"].as_str().unwrap_or("-"),
            backup["status"].as_str().unwrap_or("?"),
            partitions,
            backup["failureReason"].as_str().unwrap_or("")
        );
    }
}

/// The answer of `GET /actuator/backups/restore-points` as text: the newest point, then the
/// cluster's ranges and breaks, then each partition's.
fn print_restore_points(body: &Value) {
    let point = |p: &Value| {
        format!(
            "{} ({} {})",
            p["id"],
            p["kind"].as_str().unwrap_or("?"),
            p["requestedAt"].as_str().unwrap_or("time unknown")
        )
    };
    match body.get("newest").filter(|n| !n.is_null()) {
        Some(newest) => println!("newest cluster-wide restore point: {}", point(newest)),
        None => {
            println!(
                "no cluster-wide restore point: no checkpoint is COMPLETED on every partition"
            );
        }
    }
    let sections = std::iter::once(&body["cluster"])
        .chain(body["partitions"].as_array().into_iter().flatten());
    for section in sections {
        match section["partitionId"].as_u64() {
            Some(partition) => println!("\npartition {partition}:"),
            None => println!("\ncluster (every partition):"),
        }
        for range in section["ranges"].as_array().into_iter().flatten() {
            println!(
                "  range  {} .. {}  ({} restore points)",
                point(&range["first"]),
                point(&range["last"]),
                range["count"]
            );
        }
        for gap in section["breaks"].as_array().into_iter().flatten() {
            println!(
                "  break  {}  {}: {}",
                point(&gap["checkpoint"]),
                gap["status"].as_str().unwrap_or("GAP"),
                gap["reason"].as_str().unwrap_or("")
            );
        }
        if section["omitted"].as_u64().unwrap_or(0) > 0 {
            println!(
                "  ({} older ranges and breaks not shown)",
                section["omitted"]
            );
        }
    }
}

/// The store and the broker configuration.
async fn open_store() -> Result<(BackupStore, BrokerConfig), Failure> {
    let config = sluice_config::load().context("invalid configuration")?;
    config.validate_broker().context("invalid configuration")?;
    let store = sluice_broker::service::open_store(&config.broker.data.backup, &config.broker.cluster)
        .await
        .map_err(|error| Failure {
            code: EXIT_UNREACHABLE,
            error: anyhow!("cannot open the backup store: {error}"),
        })?
        .ok_or_else(|| anyhow!("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) as on the brokers"))?;
    Ok((store, config.broker))
}

/// The manifest that speaks for each partition, by the one rule (`Manifest::choose`): the
/// COMPLETED one restore would choose, else the newest. Manifests that cannot be used (damaged,
/// tampered, of a key that is not configured) are named on stderr; `unreadable` counts them.
async fn manifests(
    store: &BackupStore,
    cluster: &sluice_config::ClusterConfig,
    id: u64,
) -> Result<(Vec<(u32, Option<Manifest>)>, usize), Failure> {
    let mut out = Vec::new();
    let mut unreadable = 0;
    for partition in 1..=cluster.partitions_count {
        let listing = store
            .find_manifests_reporting(partition, id)
            .await
            .map_err(|error| Failure {
                code: EXIT_UNREACHABLE,
                error: anyhow!("cannot read the manifests of partition {partition}: {error}"),
            })?;
        for skipped in &listing.skipped {
            eprintln!(
                "warning: partition {partition}: the manifest of node {} cannot be used: {}: {}",
                skipped.id.node_id, skipped.path, skipped.reason
            );
        }
        unreadable += listing.skipped.len();
        let hosting_node =
            sluice_broker::routing::node_for_partition(partition, cluster.cluster_size);
        let chosen = Manifest::choose(&listing.manifests, hosting_node).cloned();
        out.push((partition, chosen));
    }
    Ok((out, unreadable))
}

async fn inspect(id: u64, json: bool) -> Result<(), Failure> {
    let (store, config) = open_store().await?;
    let (found, unreadable) = manifests(&store, &config.cluster, id).await?;
    if found.iter().all(|(_, m)| m.is_none()) {
        return Err(if unreadable > 0 {
            Failure {
                code: EXIT_CORRUPT,
                error: anyhow!("backup {id} has {unreadable} manifests in the store and none can be used (see the warnings above)"),
            }
        } else {
            Failure {
                code: EXIT_MISSING,
                error: anyhow!("backup {id} does not exist in the store"),
            }
        });
    }
    let mut usages = Vec::new();
    for (partition, manifest) in &found {
        usages.push(match manifest {
            Some(m) => Some(usage(&store, *partition, m).await?),
            None => None,
        });
    }
    if json {
        let value: Vec<Value> = found
            .iter()
            .zip(&usages)
            .map(|((partition, manifest), usage)| match (manifest, usage) {
                (Some(m), Some(usage)) => {
                    let mut value = serde_json::to_value(m).expect("manifest serializes");
                    value["storeUsage"] = serde_json::to_value(usage).expect("usage serializes");
                    value
                }
                _ => serde_json::json!({"partitionId": partition, "status": "DOES_NOT_EXIST"}),
            })
            .collect();
        println!("{}", Value::Array(value));
        return Ok(());
    }
    println!(
        "{:<9} {:<12} {:<6} {:>12} {:<22} {:>6} {:>14} {:>14} {:>14} {:>14}  {:<16} CREATED",
        "PARTITION",
        "STATUS",
        "NODE",
        "CHECKPOINT",
        "SNAPSHOT",
        "FILES",
        "BYTES",
        "REFERENCED",
        "UPLOADED_NEW",
        "POOL_TOTAL",
        "ENCRYPTION"
    );
    for ((partition, manifest), usage) in found.into_iter().zip(usages) {
        match (manifest, usage) {
            (Some(m), Some(usage)) => println!(
                "{:<9} {:<12} {:<6} {:>12} {:<22} {:>6} {:>14} {:>14} {:>14} {:>14}  {:<16} {}",
                partition,
                format!("{:?}", m.status).to_uppercase(),
                m.id.node_id,
                m.descriptor.checkpoint_position,
                m.descriptor.snapshot_id.as_deref().unwrap_or("-"),
                m.files.len(),
                m.files.iter().map(|f| f.size_bytes).sum::<u64>(),
                usage.referenced_bytes,
                usage.uploaded_bytes,
                usage.pool_bytes,
                encryption_label(&m),
                m.created_at
            ),
            _ => println!("{partition:<9} DOES_NOT_EXIST"),
        }
    }
    println!(
        "REFERENCED: bytes in the store this backup needs; UPLOADED_NEW: what it added (the rest was in the pool already); POOL_TOTAL: the partition's pool now (what all its backups share); ENCRYPTION: key=<id> the key it is encrypted under, or plain"
    );
    Ok(())
}

/// `key=<id>` for an encrypted backup, `plain` otherwise.
fn encryption_label(manifest: &Manifest) -> String {
    manifest
        .encryption
        .as_ref()
        .map_or_else(|| "plain".to_string(), |e| format!("key={}", e.key_id))
}

async fn rekey() -> Result<(), Failure> {
    let (store, config) = open_store().await?;
    let Some(primary) = store.primary_key_id().map(str::to_string) else {
        return Err(anyhow!("no primary key is configured: set broker.data.backup.encryption.primaryKey (SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_PRIMARYKEY) to the new key and list it with the old ones in broker.data.backup.encryption.keys").into());
    };
    let unreachable = |partition: u32, error: BackupStoreError| Failure {
        code: EXIT_UNREACHABLE,
        error: anyhow!("cannot read the manifests of partition {partition}: {error}"),
    };
    let (mut rewrapped, mut already, mut plain, mut in_progress) = (0u64, 0u64, 0u64, 0u64);
    let mut unreadable = Vec::new();
    for partition in 1..=config.cluster.partitions_count {
        let listing = store
            .list_manifests_reporting(partition)
            .await
            .map_err(|e| unreachable(partition, e))?;
        let ids = listing.manifests.iter().map(|m| m.id);
        for id in ids.chain(listing.skipped.iter().map(|s| s.id)) {
            match store.rekey_manifest(&id).await {
                Ok(Rekeyed::Rewrapped { from }) => {
                    rewrapped += 1;
                    println!(
                        "rekeyed: backup {} partition {partition} node {}: key {from} -> {primary}",
                        id.checkpoint_id, id.node_id
                    );
                }
                Ok(Rekeyed::AlreadyPrimary) => already += 1,
                Ok(Rekeyed::Plain) => plain += 1,
                Ok(Rekeyed::InProgress) => in_progress += 1,
                Err(
                    error @ (BackupStoreError::InvalidManifest { .. }
                    | BackupStoreError::Conflict { .. }),
                ) => {
                    eprintln!(
                        "not rekeyed: backup {} partition {partition} node {}: {error}",
                        id.checkpoint_id, id.node_id
                    );
                    unreadable.push(id);
                }
                Err(error) => return Err(unreachable(partition, error)),
            }
        }
    }
    println!(
        "rekey to key {primary}: {rewrapped} rekeyed, {already} already under it, {plain} plain, {in_progress} in progress (not touched: run rekey again once they end), {} not rekeyed",
        unreadable.len()
    );
    if unreadable.is_empty() && in_progress == 0 {
        println!("every encrypted backup is under key {primary}: keys no longer listed as any backup's can be removed");
        Ok(())
    } else {
        Err(anyhow!("{} manifests were not rekeyed and {in_progress} are in progress: keep the old keys configured until a rekey reports none", unreadable.len()).into())
    }
}

fn keygen(out: Option<&std::path::Path>) -> Result<(), Failure> {
    let key = sluice_backup_store::generate_key_hex();
    let Some(path) = out else {
        println!("{}", key.as_str());
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create the key file {} (it must not exist)",
            path.display()
        )
    })?;
    std::io::Write::write_all(&mut file, format!("{}\n", key.as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the key file {}", path.display()))?;
    println!("wrote a new key to {} (mode 0600); list it as <id>=file:{} in broker.data.backup.encryption.keys", path.display(), path.display());
    Ok(())
}

/// What one partition's backup occupies in the store.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreUsage {
    /// The stored bytes of every object (or file) the backup needs.
    referenced_bytes: u64,
    /// What the backup uploaded new: for a backup of the pool format, what its manifest says;
    /// for an older one, everything (it shares nothing).
    uploaded_bytes: u64,
    /// The objects and bytes of the partition's pool (0 for a store without pooled backups).
    pool_objects: u64,
    pool_bytes: u64,
}

async fn usage(
    store: &BackupStore,
    partition: u32,
    manifest: &Manifest,
) -> Result<StoreUsage, Failure> {
    let (referenced_bytes, uploaded_bytes) =
        (manifest.referenced_bytes(), manifest.uploaded_bytes());
    let pool = store.pool_totals(partition).await.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        error: anyhow!("cannot list the backup pool of partition {partition}: {e}"),
    })?;
    Ok(StoreUsage {
        referenced_bytes,
        uploaded_bytes,
        pool_objects: pool.objects,
        pool_bytes: pool.stored_bytes,
    })
}

async fn verify(id: u64, allow_unencrypted: bool) -> Result<(), Failure> {
    let (store, config) = open_store().await?;
    let store = if allow_unencrypted {
        store.allowing_plain_restore()
    } else {
        store
    };
    let started = Instant::now();
    let mut progress = sluice_restore::progress::Printer::new("verified");
    let verified = sluice_restore::verify_backup(&store, &config, id, None, &mut progress)
        .await
        .map_err(|error| Failure {
            code: match error.kind() {
                FailureKind::Corrupt => EXIT_CORRUPT,
                FailureKind::Missing => EXIT_MISSING,
                FailureKind::Unreachable => EXIT_UNREACHABLE,
                FailureKind::Other => 1,
            },
            error: error.into(),
        })?;
    for skipped in &verified.skipped {
        eprintln!(
            "warning: skipped an unusable manifest of partition {} (node {}): {}: {}",
            skipped.id.partition_id, skipped.id.node_id, skipped.path, skipped.reason
        );
    }
    println!(
        "verified: backup {id}, {} partitions, {} files, {} bytes in {:.1?}; every partition recovers to its checkpoint",
        verified.partitions.len(),
        verified.files,
        verified.bytes,
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand takes backup ids by the one grammar (sluice_broker::backup_id): `0`, `+3`
    /// or a number past i64::MAX are usage errors, before anything is asked of a gateway or store.
    #[test]
    fn every_subcommand_parses_backup_ids_one_way() {
        for command in ["take", "status", "delete", "inspect", "verify"] {
            for bad in ["0", "+3", "1.5", "9223372036854775808", "seven"] {
                let parsed = Cli::try_parse_from(["sluice", "backup", command, bad]);
                let Err(error) = parsed else {
                    panic!("{command} {bad} was accepted")
                };
                assert!(
                    error
                        .to_string()
                        .contains("backupId must be a positive 64-bit integer"),
                    "{command} {bad}: {error}"
                );
            }
            assert!(
                Cli::try_parse_from(["sluice", "backup", command, "9223372036854775807"]).is_ok(),
                "{command}"
            );
        }
    }
}
