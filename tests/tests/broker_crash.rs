//! A broker killed (SIGKILL) while it uploads a backup: after the restart the backup is FAILED
//! with a reason, stays FAILED, and the next backup completes.

use std::time::{Duration, Instant};

use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_interrupted_by_a_crash_is_failed_after_the_restart() {
    let garage = Garage::start();
    // No snapshot (and so no compaction) during the test: the backup uploads the whole log, at
    // 256KB/s, which takes several seconds.
    let spec = ClusterSpec::new(1, 3)
        .with_env(&garage.env())
        .with("SLUICE_BROKER_DATA_BACKUP_UPLOADRATELIMIT", "256KB")
        .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", "1h")
        .with("SLUICE_BROKER_DATA_LOGSEGMENTSIZE", "512KB");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    // About 2-3 MB of log: many deposits to accounts with long ids.
    let prefix = "x".repeat(110);
    let data_dir = spec.brokers[0].data_dir.clone();
    let mut rounds = 0;
    while dir_size(&data_dir) < 2_500_000 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "the log did not grow to 2.5 MB: {} bytes",
            dir_size(&data_dir)
        );
        let deposits: Vec<(String, u64)> = (0..5_000)
            .map(|i| (format!("{prefix}-{rounds:02}-{i:05}"), (i % 13 + 1) as u64))
            .collect();
        deposit_all(&ep.api, &deposits).await;
    }
    let log_bytes = dir_size(&data_dir);

    // Backup 1; kill the broker as soon as the upload is under way.
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}\n{}", cluster.logs());
    let started = Instant::now();
    loop {
        let (status, body) = backup_status(&ep.mgmt, 1).await;
        assert_eq!(status, 200, "GET backup 1: {body}");
        match body["status"].as_str() {
            Some("IN_PROGRESS") => break,
            Some("COMPLETED" | "FAILED") => panic!(
                "backup 1 ended before the broker could be killed ({log_bytes} bytes of log at 256KB/s): {body}\n{}",
                cluster.logs()
            ),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "backup 1 never IN_PROGRESS: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.brokers[0].kill();

    // Restart on the same data directory; the gateway stays up.
    cluster.brokers[0].restart();
    cluster.brokers[0]
        .wait_ready(&spec.brokers[0].health_url())
        .await;

    let failed = poll_backup(&ep.mgmt, 1, "FAILED", Duration::from_secs(30)).await;
    let reason = failed["failureReason"].as_str().unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "a FAILED backup needs a failureReason: {failed}"
    );
    // It stays FAILED.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = backup_status(&ep.mgmt, 1).await;
        assert_eq!(status, 200, "GET backup 1: {body}");
        assert_eq!(
            body["status"], "FAILED",
            "backup 1 must stay FAILED after the restart: {body}"
        );
    }
    let (status, list) = get(&format!("{}/actuator/backups", ep.mgmt)).await;
    assert_eq!(status, 200, "GET /actuator/backups: {list}");
    let listed = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["backupId"] == 1))
        .unwrap_or_else(|| panic!("backup 1 is not listed: {list}"));
    assert_eq!(listed["status"], "FAILED", "{list}");

    // The next backup completes.
    let (status, body) = take_backup(&ep.mgmt, "2").await;
    assert_eq!(status, 200, "POST backup 2: {body}\n{}", cluster.logs());
    let completed = poll_backup(&ep.mgmt, 2, "COMPLETED", Duration::from_secs(120)).await;
    assert_eq!(
        completed["partitions"].as_array().map(Vec::len),
        Some(3),
        "{completed}"
    );

    cluster.stop();
}
