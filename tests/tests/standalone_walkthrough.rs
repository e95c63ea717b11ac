//! The README walk-through: standalone Sluice with the repository's `config/application.yaml`
//! (data in `data/broker`, backups in `data/backups`, relative to the current directory), a
//! backup, lost data, `sluice-restore 1`, and the balances of the backup back.

use std::fs;
use std::time::Duration;

use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    let dir = tempfile::Builder::new()
        .prefix("sluice-walkthrough-")
        .tempdir()
        .expect("create a temporary directory");
    let cwd = dir.path();
    fs::create_dir_all(cwd.join("config")).unwrap();
    fs::copy(
        workspace_root().join("config").join("application.yaml"),
        cwd.join("config").join("application.yaml"),
    )
    .expect("copy config/application.yaml");

    // Only the ports differ from the file (tests run in parallel).
    let (api_port, mgmt_port) = (free_port(), free_port());
    let mut env = Env::new();
    env.insert("SLUICE_GATEWAY_NETWORK_PORT".into(), api_port.to_string());
    env.insert(
        "SLUICE_GATEWAY_MANAGEMENT_PORT".into(),
        mgmt_port.to_string(),
    );
    env.insert("SLUICE_BROKER_NETWORK_PORT".into(), free_port().to_string());
    env.insert(
        "SLUICE_BROKER_NETWORK_MANAGEMENTPORT".into(),
        free_port().to_string(),
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let mgmt = format!("http://127.0.0.1:{mgmt_port}");
    let health = format!("{mgmt}/actuator/health");
    let log = cwd.join("standalone.log");

    let mut standalone = Proc::spawn("standalone", "sluice-standalone", env.clone(), cwd, &log);
    standalone.wait_ready(&health).await;

    // As `curl -XPOST .../deposit -d '{"amount": 100}'` sends it (form content type).
    let answer = http_client()
        .post(format!("{api}/v1/accounts/alice/deposit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"amount": 100}"#)
        .send()
        .await
        .expect("POST deposit");
    assert_eq!(answer.status().as_u16(), 200, "curl-style deposit");
    let body: serde_json::Value = answer.json().await.expect("JSON answer");
    assert_eq!(
        body,
        serde_json::json!({"account": "alice", "balance": 100})
    );
    assert_eq!(deposit(&api, "bob", 50).await, 50);
    let (status, body) = take_backup(&mgmt, "1").await;
    assert_eq!(
        status,
        200,
        "POST backup 1: {body}\n{}",
        standalone.log_tail()
    );
    poll_backup(&mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;
    assert!(
        cwd.join("data").join("backups").is_dir(),
        "backups must be written to data/backups relative to the current directory"
    );
    assert_eq!(deposit(&api, "alice", 25).await, 125);

    standalone.stop_ok();
    let data = cwd.join("data").join("broker");
    assert!(
        data.is_dir(),
        "data must be written to data/broker relative to the current directory"
    );
    fs::remove_dir_all(&data).unwrap();

    // `./bin/restore 1` as in the README: the launcher must keep the current directory, or the
    // restore would not find data/backups nor write data/broker here.
    let restore = launcher("restore");
    let output = run_program_in(&restore, &env, cwd, &["1"]);
    assert!(
        output.status.success(),
        "{} 1:\n{}",
        restore.display(),
        describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        3,
        "one line per restored partition:\n{}",
        describe(&output)
    );
    for partition in 1..=3 {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("partition {partition} "))),
            "no line for partition {partition}:\n{}",
            describe(&output)
        );
    }
    assert!(
        data.is_dir(),
        "the restore must rebuild data/broker in the current directory"
    );

    standalone.restart();
    standalone.wait_ready(&health).await;
    assert_eq!(
        balance(&api, "alice").await,
        Some(100),
        "alice after the restore"
    );
    assert_eq!(
        balance(&api, "bob").await,
        Some(50),
        "bob after the restore"
    );
    // Backup ids only grow, also after a restore.
    let (status, body) = take_backup(&mgmt, "1").await;
    assert_eq!(status, 409, "POST backup 1 after the restore: {body}");
    let text = message(&body);
    assert!(
        text.contains("latest") && mentions_number(&text, 1),
        "the refusal must name the latest id 1: {text}"
    );
    standalone.stop_ok();
}
