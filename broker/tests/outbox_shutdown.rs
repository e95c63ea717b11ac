//! The outbox sender stops when it is cancelled, also while a round waits on a target broker
//! that does not answer: shutdown never waits for a peer (ARCHITECTURE.md, service shape).

use std::time::Duration;

use sluice_broker::client::BrokerClient;
use sluice_broker::outbox::{OutboxOptions, OutboxSender};
use sluice_broker::partition::{PartitionOptions, PartitionService};
use sluice_broker::record::{Command, Outcome};
use sluice_broker::routing::partition_for_account;
use sluice_broker::transport::ClusterTransport;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 2;

/// The first account `prefix-<n>` that lives on `partition`.
fn account_on(partition: u32, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|account| partition_for_account(account, PARTITIONS) == partition)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sender_stops_while_its_target_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (partition, handle) = PartitionService::new(
        PartitionOptions {
            partition_id: 1,
            partitions_count: PARTITIONS,
            node_id: 0,
            directory: dir.path().join("partition-00001"),
            segment_bytes_max: 1 << 20,
            snapshot_period: Duration::from_secs(3600),
            request_queue_capacity: 16,
            batch_commands_max: 64,
        },
        None,
    )
    .unwrap();
    let partition_cancel = CancellationToken::new();
    let partition_task = tokio::spawn(partition.run(partition_cancel.clone()));
    let (from, to) = (account_on(1, "from"), account_on(2, "to"));
    let outcomes = handle
        .execute(vec![
            Command::Deposit {
                account: from.clone(),
                amount: 10,
            },
            Command::Transfer {
                transfer_id: "t-1".into(),
                from,
                to,
                amount: 3,
            },
        ])
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[1], Outcome::TransferPending { .. }),
        "{outcomes:?}"
    );

    // The target broker accepts the delivery and never answers; the client would wait an hour.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = target.local_addr().unwrap().to_string();
    let (delivering, delivery_seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut connection, _) = target.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = connection.read(&mut request).await;
        let _ = delivering.send(());
        // Holds the connection open, silent, until the test ends.
        std::future::pending::<()>().await;
    });
    let transport = ClusterTransport::new(None, None, "broker.cluster.ca").unwrap();
    let client = BrokerClient::new(transport, address, Duration::from_secs(3600));
    let sender = OutboxSender::new(
        OutboxOptions {
            cluster_size: 1,
            ..OutboxOptions::default()
        },
        handle.clone(),
        vec![client],
    );
    let cancel = CancellationToken::new();
    let sender_task = tokio::spawn(sender.run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(30), delivery_seen)
        .await
        .expect("the sender sends the credit")
        .unwrap();

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), sender_task)
        .await
        .expect("the sender stops at once, not when the target answers")
        .unwrap();
    // The credit was never acknowledged: it is still in the outbox, to be sent after a restart.
    assert_eq!(handle.summary().await.unwrap().outbox_entries, 1);
    partition_cancel.cancel();
    partition_task.await.unwrap();
}
