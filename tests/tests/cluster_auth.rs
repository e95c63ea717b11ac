//! The brokers' internal API is a cluster member's API: with `broker.cluster.token` and internal
//! TLS, money moves between brokers and backups complete, while a request without the token is
//! refused (401) and a request with it but with a bad field is refused (400) before it reaches a
//! log, so the partition stays up. A broker on a non-loopback address without a token refuses to
//! start.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_broker::routing::partition_for_account;
use sluice_tests::*;

const TOKEN: &str = "cluster-5e1f0a-secret";

/// The first `acct-<i>` that lives on `partition` of `partitions_count`.
fn account_on(partition: u32, partitions_count: u32) -> String {
    (0..)
        .map(|i| format!("acct-{i}"))
        .find(|a| partition_for_account(a, partitions_count) == partition)
        .expect("an account on every partition")
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request to a broker");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A credit for `to` on partition 1 from partition 2, with fields overridden by `patch`.
fn credit(to: &str, patch: Value) -> Value {
    let mut command = json!({
        "type": "credit",
        "transferId": "forged-1",
        "fromPartition": 2,
        "sourcePosition": 5,
        "finishedBelow": 5,
        "to": to,
        "amount": 1_000_000,
    });
    for (key, value) in patch.as_object().expect("an object") {
        command[key] = value.clone();
    }
    json!({"deliveries": [{"command": command, "checkpointId": 0}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_api_needs_the_cluster_token_and_valid_fields() {
    let certs = tempfile::tempdir().expect("temporary directory");
    make_certificates(certs.path());
    let spec = ClusterSpec::new(2, 2)
        .with_filesystem_store()
        .with("SLUICE_BROKER_CLUSTER_TOKEN", TOKEN)
        .with_gateway("SLUICE_GATEWAY_CLUSTER_TOKEN", TOKEN)
        .with_internal_tls(certs.path());
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    // Partition 1 lives on node 0, partition 2 on node 1: the credit crosses brokers.
    let (alice, bob) = (account_on(1, 2), account_on(2, 2));

    // Members talk to each other with the token, over TLS.
    deposit(&ep.api, &alice, 100).await;
    let (status, body) = post(
        &format!("{}/v1/transfers", ep.api),
        Some(&json!({"from": alice, "to": bob, "amount": 30}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "transfer: {body}\n{}", cluster.logs());
    let deadline = Instant::now() + Duration::from_secs(20);
    while balance(&ep.api, &bob).await != Some(30) {
        assert!(
            Instant::now() < deadline,
            "the credit never arrived\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "backup: {body}\n{}", cluster.logs());
    poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;

    let client = spec.broker_client();
    let node0 = spec.broker_url(0);
    let deliveries = format!("{node0}/internal/v1/partitions/1/deliveries");

    // Without the token, or with a wrong one: 401 naming the setting; nothing is credited.
    for header in [None, Some("Bearer not-the-token"), Some(TOKEN)] {
        let mut request = client.post(&deliveries).json(&credit(&alice, json!({})));
        if let Some(value) = header {
            request = request.header("Authorization", value);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 401, "{header:?}: {body}");
        assert_eq!(body["kind"], "UNAUTHORIZED", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("broker.cluster.token")),
            "{body}"
        );
    }
    for path in [
        "/internal/v1/partitions/1/checkpoints/9223372036854775807",
        "/internal/v1/backups/1",
    ] {
        let (status, body) = send(client.post(format!("{node0}{path}"))).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = send(client.delete(format!("{node0}{path}"))).await;
        assert!(status == 401 || status == 405, "{path}: {status} {body}");
    }
    // Health answers without the token (probes have none); plain HTTP reaches nothing.
    let (status, body) = send(client.get(format!("{node0}/internal/v1/health"))).await;
    assert_eq!(status, 200, "{body}");
    let plain = format!(
        "http://127.0.0.1:{}/internal/v1/health",
        spec.brokers[0].port
    );
    let answer = http_client().get(&plain).send().await;
    assert!(
        answer.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP must not be served: {answer:?}"
    );
    assert_eq!(balance(&ep.api, &alice).await, Some(70));

    // With the token, every bad field is refused with 400 naming it, before any log append.
    let huge_id = "x".repeat(5 << 20);
    let cases: Vec<(Value, &str)> = vec![
        (credit(&alice, json!({"transferId": huge_id})), "transferId"),
        (credit(&alice, json!({"transferId": ""})), "transferId"),
        (credit(&alice, json!({"fromPartition": 0})), "fromPartition"),
        (credit(&alice, json!({"fromPartition": 1})), "fromPartition"),
        (credit(&alice, json!({"fromPartition": 9})), "fromPartition"),
        (credit(&alice, json!({"amount": 0})), "amount"),
        (
            credit(&alice, json!({"sourcePosition": 0})),
            "sourcePosition",
        ),
        (credit(&alice, json!({"finishedBelow": 6})), "finishedBelow"),
        (credit(&alice, json!({"to": "bad account!"})), "account"),
        (
            json!({"deliveries": [{"command": {"type": "creditAck", "transferId": "t", "sourcePosition": 0}, "checkpointId": 0}]}),
            "sourcePosition",
        ),
        (
            json!({"deliveries": [{"command": {"type": "creditRefused", "transferId": "t", "sourcePosition": 3, "reason": "r".repeat(2000)}, "checkpointId": 0}]}),
            "reason",
        ),
        (
            json!({"deliveries": [{"command": {"type": "deposit", "account": alice, "amount": 5}, "checkpointId": 0}]}),
            "not an inter-partition command",
        ),
        (
            {
                let mut body = credit(&alice, json!({}));
                body["deliveries"][0]["checkpointId"] = json!(u64::MAX);
                body
            },
            "checkpoint id",
        ),
    ];
    for (body, names) in &cases {
        let (status, answer) = send(client.post(&deliveries).bearer_auth(TOKEN).json(body)).await;
        assert_eq!(status, 400, "{names}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(names)),
            "{names}: {answer}"
        );
    }
    let (status, answer) = send(
        client
            .post(format!(
                "{node0}/internal/v1/partitions/1/checkpoints/18446744073709551615"
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("checkpoint id")),
        "{answer}"
    );

    // The partitions are up and no money appeared.
    deposit(&ep.api, &alice, 1).await;
    assert_eq!(balance(&ep.api, &alice).await, Some(71));
    assert_eq!(ledger_total(&ep.api).await, 101);
    let (status, body) = take_backup(&ep.mgmt, "2").await;
    assert_eq!(status, 200, "a later backup id still works: {body}");
    poll_backup(&ep.mgmt, 2, "COMPLETED", Duration::from_secs(60)).await;
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_public_address_without_a_token_refuses_to_start() {
    let spec = ClusterSpec::new(1, 1);
    let dir = spec.root().join("node-0");
    std::fs::create_dir_all(&dir).expect("node directory");
    let mut env = spec.broker_env(0);
    env.insert("SLUICE_BROKER_NETWORK_HOST".into(), "0.0.0.0".into());
    let mut broker = Proc::spawn(
        "broker 0",
        "sluice-broker",
        env,
        &dir,
        &dir.join("broker.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = broker.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the broker kept running on 0.0.0.0 without a cluster token:\n{}",
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(broker.log_path()).expect("the broker's log");
    assert!(
        log.contains("broker.cluster.token") && log.contains("broker.network.insecure"),
        "the refusal names the setting and the way out:\n{log}"
    );
}
