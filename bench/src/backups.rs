//! Backups as the benchmark drives and reads them: trigger, wait for COMPLETED, back-to-back
//! series, and what a completed backup holds (in the store and on the brokers' disks).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sluice_backup_store::{BackupStatus, BackupStore, FileKind, Manifest};
use sluice_broker::routing::node_for_partition;
use sluice_tests::ClusterSpec;

use crate::run::{CLUSTER_SIZE, PARTITIONS};
use crate::stats::{secs, Samples};

/// Status answers in a row with a server error (e.g. a broker timing out behind the gateway)
/// after which a backup wait gives up.
const SERVER_ERRORS_MAX: u32 = 3;

/// `POST /actuator/backups/{id}`; its response time.
pub async fn trigger(client: &reqwest::Client, mgmt: &str, id: u64) -> Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{mgmt}/actuator/backups/{id}"))
        .send()
        .await
        .with_context(|| format!("POST /actuator/backups/{id}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("POST /actuator/backups/{id} answered {status}: {body}");
    }
    Ok(elapsed)
}

/// Polls `GET /actuator/backups/{id}` until COMPLETED; fails on FAILED or after `timeout`.
pub async fn wait_completed(
    client: &reqwest::Client,
    mgmt: &str,
    id: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<Value> {
    let started = Instant::now();
    let mut server_errors = 0;
    loop {
        let response = client
            .get(format!("{mgmt}/actuator/backups/{id}"))
            .send()
            .await
            .with_context(|| format!("GET /actuator/backups/{id}"))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match (status, body["status"].as_str()) {
            (200, Some("COMPLETED")) => return Ok(body),
            (200, Some("FAILED")) => bail!("backup {id} FAILED: {body}"),
            _ => {}
        }
        // The gateway answers 5xx when a broker does not answer within its own timeout (15 s):
        // a broker that stays unresponsive is hung, no need to wait for the whole bound.
        server_errors = if status >= 500 { server_errors + 1 } else { 0 };
        if server_errors >= SERVER_ERRORS_MAX {
            bail!(
                "GET /actuator/backups/{id} answered {status} {SERVER_ERRORS_MAX} times in a row after {}: a broker does not answer; last answer: {body}",
                secs(started.elapsed())
            );
        }
        if started.elapsed() > timeout {
            bail!("backup {id} not COMPLETED within {timeout:?}; last answer {status}: {body}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Back-to-back backups until `stop`: trigger, wait for COMPLETED, trigger the next.
pub struct BackToBack {
    pub triggers: Samples,
    pub durations: Vec<Duration>,
    pub next_id: u64,
}

pub async fn back_to_back(
    client: reqwest::Client,
    mgmt: String,
    first_id: u64,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<BackToBack> {
    let mut result = BackToBack {
        triggers: Samples::new(),
        durations: Vec::new(),
        next_id: first_id,
    };
    while !stop.load(Ordering::Relaxed) {
        let id = result.next_id;
        result.next_id += 1;
        let started = Instant::now();
        result
            .triggers
            .record(trigger(&client, &mgmt, id).await?, 1);
        wait_completed(&client, &mgmt, id, timeout, Duration::from_millis(100)).await?;
        result.durations.push(started.elapsed());
    }
    Ok(result)
}

/// A completed backup as the store describes it.
pub struct Described {
    pub manifests: Vec<Manifest>,
}

impl Described {
    /// Bytes of data the backup holds (original sizes).
    pub fn bytes(&self) -> u64 {
        self.manifests
            .iter()
            .flat_map(|m| &m.files)
            .map(|f| f.size_bytes)
            .sum()
    }

    pub fn bytes_of(&self, partition: u32) -> u64 {
        self.manifests
            .iter()
            .filter(|m| m.id.partition_id == partition)
            .flat_map(|m| &m.files)
            .map(|f| f.size_bytes)
            .sum()
    }

    pub fn files(&self) -> usize {
        self.manifests.iter().map(|m| m.files.len()).sum()
    }
}

pub async fn describe_backup(store: &BackupStore, id: u64) -> Result<Described> {
    let mut manifests = Vec::new();
    for partition in 1..=PARTITIONS {
        let found = store
            .find_manifests(partition, id)
            .await
            .with_context(|| format!("reading the manifests of backup {id}"))?;
        let manifest = found
            .into_iter()
            .find(|m| m.status == BackupStatus::Completed)
            .ok_or_else(|| {
                anyhow!("backup {id} has no COMPLETED manifest for partition {partition}")
            })?;
        manifests.push(manifest);
    }
    Ok(Described { manifests })
}

/// The directory of `partition` on the node hosting it.
pub fn partition_dir(spec: &ClusterSpec, partition: u32) -> PathBuf {
    let node = node_for_partition(partition, CLUSTER_SIZE) as usize;
    spec.brokers[node]
        .data_dir
        .join(format!("partition-{partition:05}"))
}

/// The local files of a backup, named as in the backup (`<partition>/segments/<name>`,
/// `<partition>/snapshot/<name>`): what the baselines copy.
pub fn local_files(spec: &ClusterSpec, described: &Described) -> Vec<(PathBuf, PathBuf)> {
    let mut files = Vec::new();
    for manifest in &described.manifests {
        let partition = manifest.id.partition_id;
        let dir = partition_dir(spec, partition);
        for entry in &manifest.files {
            let (folder, source) = match entry.kind {
                FileKind::Segment => ("segments", dir.join("log").join(&entry.name)),
                FileKind::Snapshot => (
                    "snapshot",
                    dir.join("snapshots")
                        .join(manifest.descriptor.snapshot_id.clone().unwrap_or_default())
                        .join(&entry.name),
                ),
            };
            files.push((
                PathBuf::from(format!("{partition:05}"))
                    .join(folder)
                    .join(&entry.name),
                source,
            ));
        }
    }
    files
}
