//! Three brokers, six partitions, Garage: a load generator runs cross-partition transfers while
//! backups 1..N are taken every fraction of a second, with a round of deposits after each backup.
//! Every other backup reaches the partitions slowly, one by one (a slow gateway), which opens the
//! window in which a credit sent after the source's checkpoint reaches a target that has not seen
//! it; without the propagation rule this test fails.
//! Then, for several backups: wipe every node, restore every node, start, wait until the outboxes
//! drained, and check that the ledger holds exactly the money deposited before that checkpoint:
//! a credit without its debit would create money, a transfer applied twice too, a lost in-flight
//! transfer would destroy it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::*;

/// Backups taken under load; `SLUICE_CHAOS_BACKUPS` raises it (the benchmark does).
fn backups_count() -> u64 {
    std::env::var("SLUICE_CHAOS_BACKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_cross_partition_load_are_consistent_cuts() {
    let garage = Garage::start();
    let spec = ClusterSpec::new(3, 6).with_env(&garage.env());
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    let accounts: Vec<String> = (0..60).map(|i| format!("chaos-{i:02}")).collect();
    let funding: Vec<(String, u64)> = accounts.iter().map(|a| (a.clone(), 10_000)).collect();
    deposit_all(&ep.api, &funding).await;
    let mut deposited: u64 = funding.iter().map(|(_, amount)| amount).sum();

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(transfer_load(
        ep.api.clone(),
        accounts.clone(),
        stop.clone(),
    ));

    // Money deposited before each checkpoint: deposits of a round are acknowledged before the next
    // backup is requested, and sent only after the previous POST returned (every partition then
    // holds that checkpoint).
    let backups = backups_count();
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for id in 1..=backups {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if id % 2 == 1 {
            let (status, body) = take_backup(&ep.mgmt, &id.to_string()).await;
            assert_eq!(status, 200, "POST backup {id}: {body}\n{}", cluster.logs());
        } else {
            // A slow gateway: the checkpoint reaches the partitions one by one, 150 ms apart,
            // through the brokers' internal API. Transfers from partitions that already hold the
            // checkpoint reach partitions that do not: the case the propagation rule exists for.
            for partition in 1..=spec.partitions_count {
                let broker = &spec.brokers[((partition - 1) % spec.brokers.len() as u32) as usize];
                let url = format!(
                    "http://127.0.0.1:{}/internal/v1/partitions/{partition}/checkpoints/{id}",
                    broker.port
                );
                let (status, body) = post(&url, None).await;
                assert_eq!(
                    status, 200,
                    "checkpoint {id} on partition {partition}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        expected.insert(id, deposited);
        let round: Vec<(String, u64)> = accounts
            .iter()
            .step_by(6)
            .map(|a| (a.clone(), id * 3 + 1))
            .collect();
        deposit_all(&ep.api, &round).await;
        deposited += round.iter().map(|(_, amount)| amount).sum::<u64>();
    }
    stop.store(true, Ordering::SeqCst);
    let stats = load.await.expect("the load generator failed");
    assert!(
        stats.pending + stats.completed > 500,
        "too little transfer traffic to test anything: {stats:?}"
    );

    for id in 1..=backups {
        poll_backup(&ep.mgmt, id, "COMPLETED", Duration::from_secs(120)).await;
    }
    // The live cluster conserves money too.
    let ledger = drained_ledger(&ep.api, "live cluster").await;
    assert_eq!(balance_sum(&ledger), deposited, "live cluster: {ledger}");
    cluster.stop();
    drop(cluster);

    let samples = [2, backups / 2, backups];
    for id in samples {
        for broker in &spec.brokers {
            if broker.data_dir.exists() {
                std::fs::remove_dir_all(&broker.data_dir).expect("wipe the data directory");
            }
        }
        for broker in &spec.brokers {
            let output = spec.restore(broker.node_id, &Env::new(), &[&id.to_string()]);
            assert!(
                output.status.success(),
                "restore {id} on node {}:\n{}",
                broker.node_id,
                describe(&output)
            );
        }
        let mut cluster = spec.start().await;
        let context = format!("restored backup {id}");
        let ledger = drained_ledger(&ep.api, &context).await;
        assert_eq!(
            balance_sum(&ledger),
            expected[&id],
            "{context}: the ledger must hold exactly the money deposited before checkpoint {id}: {ledger}\n{}",
            cluster.logs()
        );
        assert_eq!(
            ledger["total"].as_u64(),
            Some(expected[&id]),
            "{context}: {ledger}"
        );
        cluster.stop();
    }
    eprintln!("load: {stats:?}; backups: {backups}; restored: {samples:?}");
}
