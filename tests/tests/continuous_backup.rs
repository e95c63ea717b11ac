//! Continuous backups and point-in-time restore, end to end on Garage: two brokers, three
//! partitions, a marker every second (`gateway.backup.checkpointInterval`) under a
//! cross-partition transfer load, between two full backups. `bin/restore --to <time>` on every
//! node lands on the newest marker at or before that time, the same on both nodes; the restored
//! state is that cut (a deposit acknowledged before the marker is there, one acknowledged after
//! it is not), and once the outboxes drain the balances add up to exactly the money deposited
//! before it. With the store frozen, processing goes on, health says DEGRADED and the ranges
//! show the break; with it back, health is UP again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_tests::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A full backup whose id is the time (as the scheduler's are: above every marker so far).
async fn full_backup(mgmt: &str) -> u64 {
    let id = now_ms();
    let (status, body) = take_backup(mgmt, &id.to_string()).await;
    assert_eq!(status, 200, "POST backup {id}: {body}");
    poll_backup(mgmt, id, "COMPLETED", Duration::from_secs(60)).await;
    id
}

/// Polls the restore points until the newest cluster-wide one was requested after `after_ms`.
async fn restore_point_after(mgmt: &str, after_ms: u64) -> (u64, String, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, points) = get(&format!("{mgmt}/actuator/backups/restore-points")).await;
        assert_eq!(status, 200, "restore points: {points}");
        let newest = &points["newest"];
        if let (Some(id), Some(at)) = (newest["id"].as_u64(), newest["requestedAt"].as_str()) {
            let at_ms = humantime::parse_rfc3339(at)
                .expect("requestedAt is RFC 3339")
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as u64;
            if at_ms > after_ms {
                assert_eq!(newest["kind"], "MARKER", "{points}");
                return (id, at.to_string(), points);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no restore point after {after_ms} within 30 s: {points}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_a_time_lands_on_the_newest_marker_before_it() {
    let garage = Garage::start();
    let spec = ClusterSpec::new(2, 3)
        .with_env(&garage.env())
        .with_gateway("SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL", "1s");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    let accounts: Vec<String> = (0..30).map(|i| format!("pitr-{i:02}")).collect();
    let funding: Vec<(String, u64)> = accounts.iter().map(|a| (a.clone(), 10_000)).collect();
    deposit_all(&ep.api, &funding).await;
    let funded: u64 = funding.iter().map(|(_, amount)| amount).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(transfer_load(
        ep.api.clone(),
        accounts.clone(),
        stop.clone(),
    ));

    let first_backup = full_backup(&ep.mgmt).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    deposit(&ep.api, "before-marker", 1_000).await;
    let before_acknowledged = now_ms();
    // Every partition holds this marker COMPLETED, and its checkpoint was requested after the
    // first deposit was acknowledged: the deposit is inside the cut.
    let (marker, marker_at, _) = restore_point_after(&ep.mgmt, before_acknowledged).await;
    deposit(&ep.api, "after-marker", 2_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_backup = full_backup(&ep.mgmt).await;
    stop.store(true, Ordering::SeqCst);
    let stats = load.await.expect("the transfer load failed");
    assert!(
        stats.completed + stats.pending > 200,
        "too little transfer traffic to test anything: {stats:?}"
    );

    // The restore points: one unbroken cluster range from before the first backup to the
    // second, markers between them.
    let (status, points) = get(&format!("{}/actuator/backups/restore-points", ep.mgmt)).await;
    assert_eq!(status, 200, "{points}");
    let ranges = points["cluster"]["ranges"].as_array().expect("ranges");
    assert!(
        ranges.iter().any(|range| {
            range["first"]["id"].as_u64() <= Some(first_backup)
                && range["last"]["id"].as_u64() >= Some(second_backup)
                && range["count"].as_u64() >= Some(4)
        }),
        "no unbroken cluster range from {first_backup} to {second_backup}: {points}"
    );
    assert_eq!(
        points["cluster"]["breaks"].as_array().map(Vec::len),
        Some(0),
        "{points}"
    );
    // The backups list shows the two backups, not the markers.
    let (_, listed) = get(&format!("{}/actuator/backups", ep.mgmt)).await;
    let listed: Vec<u64> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["backupId"].as_u64())
        .collect();
    assert_eq!(listed, vec![second_backup, first_backup]);

    cluster.stop();
    drop(cluster);
    for broker in &spec.brokers {
        std::fs::remove_dir_all(&broker.data_dir).expect("wipe the data directory");
    }

    // Half way between the marker and the deposit after it cannot be placed exactly; the
    // marker's own time is the latest moment the cut is known to hold.
    for broker in &spec.brokers {
        let output = spec.restore(broker.node_id, &Env::new(), &["--to", &marker_at]);
        assert!(
            output.status.success(),
            "restore --to {marker_at} on node {}:\n{}",
            broker.node_id,
            describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!(
                "restore point for --to {marker_at}: checkpoint {marker} (MARKER"
            )),
            "node {} must land on marker {marker}:\n{}",
            broker.node_id,
            describe(&output)
        );
    }

    let mut cluster = spec.start().await;
    assert_eq!(balance(&ep.api, "before-marker").await, Some(1_000));
    assert_eq!(
        balance(&ep.api, "after-marker").await,
        None,
        "a deposit acknowledged after the marker survived the restore to it"
    );
    let ledger = drained_ledger(&ep.api, "restored to the marker").await;
    assert_eq!(
        balance_sum(&ledger),
        funded + 1_000,
        "the restored cut must hold exactly the money deposited before it: {ledger}\n{}",
        cluster.logs()
    );
    // The store stops answering: processing goes on, health says DEGRADED once the newest
    // restore point is three intervals old, and the ranges show the break; once the store is
    // back, markers complete again and health is UP.
    let healthy = |want: &'static str| {
        let mgmt = ep.mgmt.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let (_, health) = get(&format!("{mgmt}/actuator/health")).await;
                if health["status"] == want {
                    return health;
                }
                assert!(Instant::now() < deadline, "health never {want}: {health}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    healthy("UP").await;
    garage.pause();
    let degraded = healthy("DEGRADED").await;
    assert!(
        degraded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("continuous backups lag")),
        "{degraded}"
    );
    deposit(&ep.api, "while-the-store-is-down", 5).await;
    garage.resume();
    healthy("UP").await;
    let (_, points) = get(&format!("{}/actuator/backups/restore-points", ep.mgmt)).await;
    assert!(
        points["cluster"]["breaks"]
            .as_array()
            .is_some_and(|breaks| !breaks.is_empty()),
        "markers lost while the store was down must show as a break: {points}"
    );
    cluster.stop();
    drop(cluster);

    // A time before every restore point is refused, naming the oldest one.
    let output = spec.restore(0, &Env::new(), &["--to", "2020-01-01T00:00:00Z"]);
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no checkpoint requested at or before 2020-01-01T00:00:00.000Z"),
        "{}",
        describe(&output)
    );
}

/// A broker killed (SIGKILL) while markers flow, then restarted: markers resume and complete on
/// its partitions, the first one after the restart uploads only what is new (the pool's pieces
/// of the log before the kill are reused, not sent again), and the restore points show the
/// downtime as a break, never as part of a range.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_while_archiving_resumes_and_breaks_the_range() {
    let garage = Garage::start();
    let spec = ClusterSpec::new(2, 2)
        .with_env(&garage.env())
        .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", "1h")
        .with_gateway("SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL", "1s");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    // Log on both partitions (node 1 hosts partition 2), then a marker holds all of it.
    let prefix = "y".repeat(100);
    for round in 0..4 {
        let deposits: Vec<(String, u64)> = (0..3_000)
            .map(|i| (format!("{prefix}-{round}-{i:04}"), 1 + i as u64 % 7))
            .collect();
        deposit_all(&ep.api, &deposits).await;
    }
    let (before_kill, _, _) = restore_point_after(&ep.mgmt, now_ms()).await;

    cluster.brokers[1].kill();
    let killed_at = now_ms();
    // The gateway goes on asking for markers; node 0's partition takes them alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.brokers[1].restart();
    cluster.brokers[1]
        .wait_ready(&spec.brokers[1].health_url())
        .await;
    let restarted_at = now_ms();
    deposit(&ep.api, "after-the-restart", 3).await;
    let (after_restart, _, points) = restore_point_after(&ep.mgmt, restarted_at).await;

    // No range spans the downtime: every range ends before the kill or starts after it.
    let ranges = points["cluster"]["ranges"].as_array().expect("ranges");
    let requested = |point: &Value| {
        humantime::parse_rfc3339(point["requestedAt"].as_str().expect("requestedAt"))
            .expect("RFC 3339")
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    };
    for range in ranges {
        let (first, last) = (requested(&range["first"]), requested(&range["last"]));
        assert!(
            last < killed_at + 1_000 || first > killed_at,
            "range {range} spans the downtime (killed at {killed_at} ms): {points}"
        );
    }
    assert!(
        points["cluster"]["breaks"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "the downtime must show as a break: {points}"
    );

    // Partition 2's first marker after the restart references the log from before the kill and
    // uploaded only what was new.
    let store = garage.store(None);
    let manifests = store
        .find_manifests(2, after_restart)
        .await
        .expect("manifests of partition 2");
    let manifest = manifests
        .iter()
        .find(|m| m.status == sluice_backup_store::BackupStatus::Completed)
        .unwrap_or_else(|| panic!("partition 2 has no COMPLETED manifest of {after_restart}"));
    let before = store
        .find_manifests(2, before_kill)
        .await
        .expect("manifests of partition 2");
    let referenced_before = before
        .first()
        .map_or(0, sluice_backup_store::Manifest::referenced_bytes);
    assert!(
        referenced_before > 20_000,
        "too little log before the kill to tell: {referenced_before} bytes"
    );
    assert!(
        manifest.uploaded_bytes() * 2 < manifest.referenced_bytes(),
        "the marker after the restart uploaded {} of the {} bytes it references: the pool's pieces were sent again",
        manifest.uploaded_bytes(),
        manifest.referenced_bytes()
    );
    cluster.stop();
}

/// Retention of restore points, end to end: markers every second kept for 5 s, a backup kept by
/// its own rule. Once the markers' retention ran (at start, then at most once a minute), the
/// markers of the first half minute are gone, the backup is not, and the pool holds exactly the
/// objects the remaining manifests reference: what the deleted markers alone needed is freed,
/// nothing a remaining one needs is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markers_past_their_retention_are_deleted_and_what_only_they_held_is_freed() {
    let garage = Garage::start();
    let spec = ClusterSpec::new(1, 1)
        .with_env(&garage.env())
        .with_gateway("SLUICE_GATEWAY_BACKUP_CHECKPOINTINTERVAL", "1s")
        .with_gateway("SLUICE_GATEWAY_BACKUP_RETENTION_MARKERSKEEPWITHIN", "5s");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    let started_ms = now_ms();
    let backup = full_backup(&ep.mgmt).await;

    // Log and snapshots change while markers come: each new snapshot a marker takes (the
    // snapshot period is 1 s) leaves older objects that only older markers reference.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut round = 0u64;
    let markers = loop {
        let deposits: Vec<(String, u64)> = (0..500)
            .map(|i| (format!("retained-{round:04}-{i:03}"), 1 + i % 5))
            .collect();
        deposit_all(&ep.api, &deposits).await;
        round += 1;
        let (status, listed) = get(&format!("{}/actuator/backups?kind=MARKER", ep.mgmt)).await;
        assert_eq!(status, 200, "{listed}");
        let markers: Vec<u64> = listed
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|b| b["backupId"].as_u64())
            .collect();
        if markers
            .iter()
            .min()
            .is_some_and(|oldest| *oldest > started_ms + 30_000)
        {
            break markers;
        }
        assert!(
            Instant::now() < deadline,
            "the markers of the first 30 s were never deleted: {markers:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!markers.is_empty(), "the newest markers are kept");
    let (status, kept) = backup_status(&ep.mgmt, backup).await;
    assert_eq!(status, 200, "the backup is kept by its own rule: {kept}");
    assert_eq!(kept["status"], "COMPLETED", "{kept}");
    // No more markers; the broker's collections after the deletes settle (an upload in flight
    // meanwhile has objects no manifest lists yet, so poll until the two agree).
    cluster.gateway.stop_ok();
    let store = garage.store(None);
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        let manifests = store.list_manifests(1).await.expect("manifests");
        let referenced: std::collections::BTreeSet<_> = manifests
            .iter()
            .flat_map(sluice_backup_store::Manifest::pieces)
            .map(|piece| piece.object)
            .collect();
        let pool = store.load_pool_index(1).await.expect("the pool");
        let missing: Vec<_> = referenced
            .iter()
            .filter(|object| pool.stored_bytes(object).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "remaining checkpoints reference objects the pool no longer holds: {missing:?}"
        );
        let held = pool.totals().objects;
        if held == referenced.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "the pool holds {held} objects, the {} remaining manifests reference {}: what only deleted markers held was not freed\n{}",
            manifests.len(),
            referenced.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And the deleted markers did hold objects of their own (else exactness proves nothing).
    let metrics = http_client()
        .get(spec.broker_metrics_url(0))
        .send()
        .await
        .expect("broker metrics")
        .text()
        .await
        .expect("metrics text");
    let collected: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sluice_backup_pool_collected_bytes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("sluice_backup_pool_collected_bytes_total");
    assert!(collected > 0.0, "deleting markers freed nothing");
    for broker in &mut cluster.brokers {
        broker.stop_ok();
    }
}
