//! The gateway's answers when brokers fail: an unreachable broker is 502 naming it, a broker that
//! never answers is 504, and health is 503 in both cases.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_502_and_health_503() {
    let spec = ClusterSpec::new(2, 3).with_filesystem_store();
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    deposit(&ep.api, "alice", 5).await;

    cluster.brokers[1].kill();
    let address = format!("127.0.0.1:{}", spec.brokers[1].port);
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 502, "POST backup with broker 1 down: {body}");
    assert!(
        message(&body).contains(&address),
        "the message names the broker {address}: {body}"
    );
    let (status, body) = get(&format!("{}/actuator/health", ep.mgmt)).await;
    assert_eq!(status, 503, "health with broker 1 down: {body}");
    let (status, body) = get(&format!("{}/actuator/backups/1", ep.mgmt)).await;
    assert_eq!(status, 502, "status with broker 1 down: {body}");
    cluster.gateway.stop_ok();
    cluster.brokers[0].stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_is_504() {
    // A peer that accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_address = silent.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
            if held.len() > 64 {
                break;
            }
        }
    });
    let spec = ClusterSpec::new(1, 1);
    let mut env = spec.gateway_env();
    env.insert(
        "SLUICE_GATEWAY_CLUSTER_BROKERS".into(),
        silent_address.to_string(),
    );
    env.insert("SLUICE_GATEWAY_CLUSTER_REQUESTTIMEOUT".into(), "1s".into());
    let dir = spec.root().join("gateway");
    std::fs::create_dir_all(&dir).expect("gateway directory");
    let mut gateway = Proc::spawn(
        "gateway",
        "sluice-gateway",
        env,
        &dir,
        &dir.join("gateway.log"),
    );
    let mgmt = spec.endpoints().mgmt;

    // The gateway listens (its health is DOWN, so wait for any answer).
    let started = Instant::now();
    loop {
        if http_client()
            .get(format!("{mgmt}/actuator/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "gateway never listened:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    let (status, body) = take_backup(&mgmt, "1").await;
    assert_eq!(
        status,
        504,
        "POST backup against a silent broker: {body}\n{}",
        gateway.log_tail()
    );
    assert!(
        message(&body).contains(&silent_address.to_string()),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the timeout is bounded"
    );
    let (status, body) = get(&format!("{mgmt}/actuator/health")).await;
    assert_eq!(status, 503, "{body}");
    gateway.stop_ok();
}
