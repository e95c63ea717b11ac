//! Two brokers and a gateway backed by Garage (S3): take a backup, keep writing, lose both data
//! directories, restore every node from the backup, and find exactly the state at the backup.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

const ACCOUNTS: usize = 1_000;

fn account(i: usize) -> String {
    format!("acct-{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_and_restore_a_two_node_cluster() {
    let garage = Garage::start();
    let spec = ClusterSpec::new(2, 3).with_env(&garage.env());
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    // Deposits into 1,000 accounts, amounts varying per account and per round, in several rounds
    // with a pause so that snapshots are taken and the log has several segments.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..8u64 {
        let deposits: Vec<(String, u64)> = (0..ACCOUNTS)
            .map(|i| (account(i), (i as u64 % 97 + 1) * (round + 1) + i as u64))
            .filter(|(_, amount)| *amount > 0)
            .collect();
        deposit_all(&ep.api, &deposits).await;
        for (account, amount) in deposits {
            *expected.entry(account).or_default() += amount;
        }
        if round == 3 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    let total_at_backup: u64 = expected.values().sum();
    assert_eq!(
        ledger_total(&ep.api).await,
        total_at_backup,
        "ledger before the backup\n{}",
        cluster.logs()
    );

    // Backup 1.
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}\n{}", cluster.logs());
    assert_eq!(body, serde_json::json!({"id": 1}));
    let completed = poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;
    assert_eq!(completed["backupId"], 1, "{completed}");
    let partitions = completed["partitions"]
        .as_array()
        .expect("partitions array");
    assert_eq!(partitions.len(), 3, "{completed}");
    for (index, partition) in partitions.iter().enumerate() {
        let partition_id = partition["partitionId"].as_u64().expect("partitionId");
        assert_eq!(partition_id, index as u64 + 1, "{completed}");
        assert_eq!(partition["status"], "COMPLETED", "{completed}");
        let description = &partition["description"];
        assert!(
            description["checkpointPosition"].as_u64().unwrap_or(0) > 0,
            "partition {partition_id} has no checkpoint position: {completed}"
        );
        assert_eq!(
            description["brokerId"].as_u64(),
            Some((partition_id - 1) % 2),
            "partition {partition_id} must be on node (p-1)%2: {completed}"
        );
    }

    // Rounds were paused for longer than the snapshot period: the backup has a snapshot.
    assert!(
        partitions
            .iter()
            .any(|p| p["description"]["snapshotId"].is_string()),
        "no partition backup holds a snapshot (snapshotPeriod 1s): {completed}"
    );

    // Later writes: to existing accounts and to new ones. None may survive the restore.
    let later: Vec<(String, u64)> = (0..ACCOUNTS).map(|i| (account(i), 7)).collect();
    deposit_all(&ep.api, &later).await;
    let new_accounts: Vec<String> = (0..50).map(|i| format!("late-{i:02}")).collect();
    deposit_all(
        &ep.api,
        &new_accounts
            .iter()
            .map(|a| (a.clone(), 11))
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(
        balance(&ep.api, &account(0)).await,
        Some(expected[&account(0)] + 7)
    );
    assert_eq!(balance(&ep.api, &new_accounts[0]).await, Some(11));

    // Lose everything.
    cluster.stop();
    drop(cluster);
    for broker in &spec.brokers {
        std::fs::remove_dir_all(&broker.data_dir)
            .unwrap_or_else(|e| panic!("remove {}: {e}", broker.data_dir.display()));
    }

    // Restore every node.
    for broker in &spec.brokers {
        let output = spec.restore(broker.node_id, &Env::new(), &["1"]);
        assert!(
            output.status.success(),
            "restore of node {}:\n{}",
            broker.node_id,
            describe(&output)
        );
        let hosted = (1..=3u32).filter(|p| (p - 1) % 2 == broker.node_id).count();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            hosted,
            "one line per restored partition:\n{}",
            describe(&output)
        );
        assert!(
            broker.data_dir.is_dir(),
            "node {} has no data directory after restore",
            broker.node_id
        );
    }

    // Start again: exactly the state at the backup.
    let mut cluster = spec.start().await;
    let accounts: Vec<String> = expected.keys().cloned().collect();
    let found = balances(&ep.api, &accounts).await;
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(account, balance)| found[*account] != Some(**balance))
        .take(10)
        .map(|(account, balance)| {
            format!("{account}: expected {balance}, found {:?}", found[account])
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "balances differ from the backup (first 10): {wrong:#?}\n{}",
        cluster.logs()
    );
    for account in &new_accounts {
        assert_eq!(
            balance(&ep.api, account).await,
            None,
            "{account} was created after the backup"
        );
    }
    assert_eq!(
        ledger_total(&ep.api).await,
        total_at_backup,
        "ledger total after the restore"
    );

    // Backup ids keep increasing across the restore.
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 409, "POST backup 1 again: {body}");
    let text = message(&body);
    assert!(
        text.contains("latest") && mentions_number(&text, 1),
        "the refusal must name the latest id 1: {text}"
    );

    let (status, body) = take_backup(&ep.mgmt, "2").await;
    assert_eq!(status, 200, "POST backup 2: {body}\n{}", cluster.logs());
    assert_eq!(body, serde_json::json!({"id": 2}));
    poll_backup(&ep.mgmt, 2, "COMPLETED", Duration::from_secs(60)).await;

    let (status, list) = get(&format!("{}/actuator/backups", ep.mgmt)).await;
    assert_eq!(status, 200, "GET /actuator/backups: {list}");
    let entries = list
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {list}"));
    let ids: Vec<Value> = entries.iter().map(|b| b["backupId"].clone()).collect();
    assert_eq!(
        ids,
        vec![serde_json::json!(2), serde_json::json!(1)],
        "{list}"
    );
    for entry in entries {
        assert_eq!(entry["status"], "COMPLETED", "{list}");
    }

    // An id prefix filters the list; a prefix that is not digits is refused.
    let (status, list) = get(&format!("{}/actuator/backups?prefix=2", ep.mgmt)).await;
    assert_eq!(status, 200, "GET /actuator/backups?prefix=2: {list}");
    let ids: Vec<Value> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["backupId"].clone())
        .collect();
    assert_eq!(ids, vec![serde_json::json!(2)], "{list}");
    let (status, body) = get(&format!("{}/actuator/backups?prefix=x", ep.mgmt)).await;
    assert_eq!(status, 400, "GET /actuator/backups?prefix=x: {body}");
    assert!(message(&body).contains("prefix"), "{body}");

    cluster.stop();
}
