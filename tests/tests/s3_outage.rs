//! The S3 server goes away in the middle of an upload: the backup ends FAILED with a reason, never
//! IN_PROGRESS, the broker keeps processing, and once the server is back a later backup completes.
//! Two outages on a real Garage: frozen (SIGSTOP: connections hang, the hardest case for a
//! client) and killed (SIGKILL: connections refused).

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_backup_store::{BackupIdentifier, BackupStatus};
use sluice_tests::*;

/// Roughly 2.5 MB of log at 256 KiB/s: an upload of about ten seconds, long enough to interrupt.
const ACCOUNTS: usize = 25_000;
const UPLOAD_RATE: &str = "256KB";

/// Waits until backup `id` is IN_PROGRESS (its manifest is in the bucket), then two more seconds,
/// so that the outage hits the middle of the upload; panics if it completed meanwhile.
async fn wait_mid_upload(mgmt: &str, id: u64, logs: impl Fn() -> String) {
    poll_backup(mgmt, id, "IN_PROGRESS", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = backup_status(mgmt, id).await;
    assert_eq!(
        body["status"],
        "IN_PROGRESS",
        "backup {id} must still be uploading for this test (too little data?)\n{}",
        logs()
    );
}

/// Polls until backup `id` is FAILED; panics if it completes or stays IN_PROGRESS past `timeout`.
/// Returns the answer and how long it took.
async fn wait_failed(mgmt: &str, id: u64, timeout: Duration) -> (Value, Duration) {
    let started = Instant::now();
    let body = poll_backup(mgmt, id, "FAILED", timeout).await;
    (body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_outage_mid_upload_fails_the_backup_and_a_later_one_succeeds() {
    let garage = Garage::start();
    let store = garage.store(None);
    let spec = ClusterSpec::new(1, 1)
        .with_env(&garage.env())
        .with("SLUICE_BROKER_DATA_BACKUP_UPLOADRATELIMIT", UPLOAD_RATE)
        .with("SLUICE_BROKER_DATA_BACKUP_MAXCONCURRENTUPLOADS", "1")
        .with("SLUICE_BROKER_DATA_BACKUP_S3_APICALLTIMEOUT", "1s")
        // Snapshots would shorten what a backup uploads, and so would compression (the log's
        // JSON shrinks about 9x).
        .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", "1h")
        .with("SLUICE_BROKER_DATA_BACKUP_S3_COMPRESSION", "NONE");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    let logs = || cluster_logs(&spec);

    let deposits: Vec<(String, u64)> = (0..ACCOUNTS)
        .map(|i| (format!("account-{i:06}"), i as u64 + 1))
        .collect();
    deposit_all(&ep.api, &deposits).await;
    let mut total: u64 = deposits.iter().map(|(_, a)| a).sum();
    eprintln!(
        "log of partition 1: {} bytes",
        dir_size(&spec.brokers[0].data_dir)
    );

    // Outage 1: Garage frozen mid-upload.
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}\n{}", logs());
    wait_mid_upload(&ep.mgmt, 1, &logs).await;
    garage.pause();
    let (failed, took) = wait_failed(&ep.mgmt, 1, Duration::from_secs(180)).await;
    let reason = failed["failureReason"].as_str().unwrap_or_default();
    eprintln!("backup 1 FAILED after {took:?} of a frozen S3 server: {reason}");
    assert!(
        reason.contains("partition 1") && reason.len() > 20,
        "the reason names the partition and the cause: {failed}"
    );
    // The broker kept processing during the outage.
    assert_eq!(deposit(&ep.api, "during-outage", 7).await, 7);
    total += 7;
    garage.resume();

    // Back: the FAILED manifest lands in the bucket (bounded retries), and backup 2 completes.
    let (status, body) = take_backup(&ep.mgmt, "2").await;
    assert_eq!(status, 200, "POST backup 2: {body}\n{}", logs());
    poll_backup(&ep.mgmt, 2, "COMPLETED", Duration::from_secs(120)).await;
    let id1 = BackupIdentifier {
        partition_id: 1,
        checkpoint_id: 1,
        node_id: 0,
    };
    let started = Instant::now();
    loop {
        match store.read_manifest(&id1).await {
            Ok(Some(manifest)) if manifest.status == BackupStatus::Failed => {
                let stored = manifest.failure_reason.unwrap_or_default();
                assert!(!stored.is_empty(), "FAILED manifest without a reason");
                break;
            }
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "manifest of backup 1 never became FAILED: {other:?}\n{}",
                    logs()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    // Outage 2: Garage killed mid-upload; connections are refused from then on.
    deposit_all(&ep.api, &deposits).await;
    total += deposits.iter().map(|(_, a)| a).sum::<u64>();
    let (status, body) = take_backup(&ep.mgmt, "3").await;
    assert_eq!(status, 200, "POST backup 3: {body}\n{}", logs());
    wait_mid_upload(&ep.mgmt, 3, &logs).await;
    garage.kill();
    let (failed, took) = wait_failed(&ep.mgmt, 3, Duration::from_secs(180)).await;
    eprintln!(
        "backup 3 FAILED after {took:?} of a killed S3 server: {}",
        failed["failureReason"]
    );
    assert_eq!(deposit(&ep.api, "after-outage", 5).await, 5);
    total += 5;
    assert_eq!(ledger_total(&ep.api).await, total, "{}", logs());
    cluster.stop();
}

fn cluster_logs(spec: &ClusterSpec) -> String {
    let mut text = String::new();
    for node in ["node-0/broker.log", "gateway/gateway.log"] {
        text.push_str(&format!(
            "---- {node} ----\n{}\n",
            tail(&spec.root().join(node), 30)
        ));
    }
    text
}
