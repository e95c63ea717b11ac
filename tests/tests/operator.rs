//! Operator features on a real cluster: scheduled backups with retention over several intervals,
//! bearer tokens on both ports over TLS (with the `sluice` CLI and `--ca`), and start-up errors
//! for a bad schedule or TLS setting.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_with_retention_over_several_intervals() {
    let spec = ClusterSpec::new(1, 2)
        .with_filesystem_store()
        .with_gateway("SLUICE_GATEWAY_BACKUP_SCHEDULE", "2s")
        .with_gateway("SLUICE_GATEWAY_BACKUP_RETENTION_KEEPLAST", "2");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    deposit(&ep.api, "alice", 10).await;

    let (status, schedule) = get(&format!("{}/actuator/backups/schedule", ep.mgmt)).await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule["enabled"], true, "{schedule}");
    assert_eq!(schedule["schedule"], "every 2s", "{schedule}");
    assert_eq!(schedule["retention"]["keepLast"], 2, "{schedule}");
    assert!(schedule["nextRunAt"].is_string(), "{schedule}");

    // Watch at least five runs; collect what each run took and what retention deleted.
    let started_ms = epoch_ms();
    let mut taken = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let started = Instant::now();
    while taken.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "fewer than 5 scheduled runs in 60 s: taken {taken:?}\n{}",
            cluster.logs()
        );
        let (_, schedule) = get(&format!("{}/actuator/backups/schedule", ep.mgmt)).await;
        if let Some(run) = schedule["lastRun"].as_object() {
            assert_eq!(run["result"], "TRIGGERED", "{schedule}\n{}", cluster.logs());
            assert!(run["retentionError"].is_null(), "{schedule}");
            taken.insert(run["backupId"].as_u64().expect("backupId"));
            for id in run["deleted"].as_array().expect("deleted") {
                deleted.insert(id.as_u64().expect("deleted id"));
            }
        }
        // Keep the cluster busy: backups are online.
        deposit(&ep.api, "alice", 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Ids are epoch milliseconds of the run, increasing.
    for id in &taken {
        assert!(
            *id >= started_ms - 5_000 && *id <= epoch_ms(),
            "id {id} is not a recent epoch-millisecond time"
        );
    }
    assert!(
        !deleted.is_empty(),
        "retention deleted nothing after {} runs",
        taken.len()
    );

    // What is left: at most keepLast finished backups plus any still running, the newest
    // COMPLETED among them; nothing retention deleted.
    let (status, list) = get(&format!("{}/actuator/backups", ep.mgmt)).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("list").clone();
    let ids: Vec<u64> = list
        .iter()
        .map(|b| b["backupId"].as_u64().unwrap())
        .collect();
    for id in &deleted {
        assert!(
            !ids.contains(id),
            "deleted backup {id} still listed: {ids:?}"
        );
    }
    let finished = list.iter().filter(|b| b["status"] != "IN_PROGRESS").count();
    assert!(
        finished <= 3,
        "keepLast=2 (+ the newest COMPLETED) but {finished} finished backups remain: {ids:?}"
    );
    assert!(
        list.iter().any(|b| b["status"] == "COMPLETED"),
        "the newest COMPLETED backup is always kept: {list:?}"
    );
    let gateway_log = std::fs::read_to_string(cluster.gateway.log_path()).unwrap_or_default();
    for id in &deleted {
        assert!(
            gateway_log.contains(&id.to_string()),
            "retention logs what it removed (backup {id})"
        );
    }
    cluster.stop();
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const MANAGEMENT_TOKEN: &str = "mgmt-9c1f2e-secret";
const CLIENT_TOKEN: &str = "client-77ab10-secret";

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("HTTPS request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_tls_with_the_cli() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let path = |name: &str| certs.path().join(name).to_str().unwrap().to_string();
    let spec = ClusterSpec::new(1, 2)
        .with_filesystem_store()
        .with_gateway("SLUICE_GATEWAY_MANAGEMENT_TOKEN", MANAGEMENT_TOKEN)
        .with_gateway("SLUICE_GATEWAY_NETWORK_TOKEN", CLIENT_TOKEN)
        .with_gateway("SLUICE_GATEWAY_TLS_CERTIFICATE", &path("server.pem"))
        .with_gateway("SLUICE_GATEWAY_TLS_KEY", &path("server.key"));
    let broker = spec.start_broker(0).await;
    let gateway_dir = spec.root().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let mut gateway = Proc::spawn(
        "gateway",
        "sluice-gateway",
        spec.gateway_env(),
        &gateway_dir,
        &gateway_dir.join("gateway.log"),
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).unwrap())
        .unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mgmt = format!("https://127.0.0.1:{}", spec.management_port);
    let api = format!("https://127.0.0.1:{}", spec.gateway_port);

    // Ready: health over TLS with the token.
    let started = Instant::now();
    loop {
        if let Some(status) = gateway.exited() {
            panic!("gateway exited with {status}\n{}", gateway.log_tail());
        }
        let answer = https
            .get(format!("{mgmt}/actuator/health"))
            .bearer_auth(MANAGEMENT_TOKEN)
            .send()
            .await;
        if matches!(&answer, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gateway not ready over TLS: {answer:?}\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Actuator: 401 without or with a wrong token, naming the key, never the secret.
    for token in [None, Some("wrong"), Some(CLIENT_TOKEN)] {
        let mut request = https.get(format!("{mgmt}/actuator/backups"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        let text = body.to_string();
        assert!(text.contains("gateway.management.token"), "{text}");
        assert!(
            !text.contains(MANAGEMENT_TOKEN) && !text.contains(CLIENT_TOKEN),
            "{text}"
        );
    }
    let (status, body) = send(
        https
            .get(format!("{mgmt}/actuator/backups"))
            .bearer_auth(MANAGEMENT_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Client API: its own token.
    let deposit_url = format!("{api}/v1/accounts/alice/deposit");
    let (status, body) = send(
        https
            .post(&deposit_url)
            .json(&serde_json::json!({"amount": 5})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("gateway.network.token"), "{body}");
    let (status, body) = send(
        https
            .post(&deposit_url)
            .bearer_auth(MANAGEMENT_TOKEN)
            .json(&serde_json::json!({"amount": 5})),
    )
    .await;
    assert_eq!(
        status, 401,
        "the actuator token does not open the client API: {body}"
    );
    let (status, body) = send(
        https
            .post(&deposit_url)
            .bearer_auth(CLIENT_TOKEN)
            .json(&serde_json::json!({"amount": 5})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["balance"], 5, "{body}");

    // Plain HTTP to a TLS port gets no answer.
    let plain = http_client()
        .get(format!(
            "http://127.0.0.1:{}/actuator/health",
            spec.management_port
        ))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().unwrap().status() != 200,
        "plain HTTP must not be served: {plain:?}"
    );

    // The CLI: --ca and --token.
    let cwd = spec.root().to_path_buf();
    let remote: Env = [("SLUICE_ADDRESS".to_string(), mgmt.clone())]
        .into_iter()
        .collect();
    let sluice = |args: &[&str]| run_program_in(&bin("sluice"), &remote, &cwd, args);
    let ca_path = path("ca.pem");
    let taken = sluice(&[
        "backup",
        "take",
        "1",
        "--wait",
        "--token",
        MANAGEMENT_TOKEN,
        "--ca",
        &ca_path,
    ]);
    assert!(
        taken.status.success(),
        "take over TLS:\n{}",
        describe(&taken)
    );
    assert!(
        String::from_utf8_lossy(&taken.stdout).contains("COMPLETED"),
        "{}",
        describe(&taken)
    );
    let no_token = sluice(&["backup", "list", "--ca", &ca_path]);
    assert!(!no_token.status.success(), "{}", describe(&no_token));
    assert!(
        String::from_utf8_lossy(&no_token.stderr).contains("401"),
        "{}",
        describe(&no_token)
    );
    let no_ca = sluice(&["backup", "list", "--token", MANAGEMENT_TOKEN]);
    assert_eq!(
        no_ca.status.code(),
        Some(5),
        "an untrusted certificate is unreachable (exit 5):\n{}",
        describe(&no_ca)
    );

    // Secrets never reach the logs.
    gateway.stop_ok();
    let mut broker = broker;
    broker.stop_ok();
    let log = std::fs::read_to_string(gateway_dir.join("gateway.log")).unwrap_or_default();
    assert!(
        !log.contains(MANAGEMENT_TOKEN) && !log.contains(CLIENT_TOKEN),
        "a token appears in the gateway log"
    );
}

#[test]
fn bad_schedule_and_tls_settings_are_refused_naming_the_key() {
    let spec = ClusterSpec::new(1, 1);
    let cwd = spec.root().to_path_buf();
    let cases: &[(&str, &str, &str)] = &[
        (
            "SLUICE_GATEWAY_BACKUP_SCHEDULE",
            "every tuesday",
            "gateway.backup.schedule",
        ),
        (
            "SLUICE_GATEWAY_BACKUP_SCHEDULE",
            "10ms",
            "gateway.backup.schedule",
        ),
        (
            "SLUICE_GATEWAY_BACKUP_RETENTION_KEEPLAST",
            "-1",
            "gateway.backup.retention.keepLast",
        ),
        (
            "SLUICE_GATEWAY_TLS_CERTIFICATE",
            "/nonexistent/cert.pem",
            "gateway.tls",
        ),
    ];
    for (key, value, named) in cases {
        let mut env = spec.gateway_env();
        env.insert(key.to_string(), value.to_string());
        let output = run_program_in(&bin("sluice-gateway"), &env, &cwd, &[]);
        assert!(!output.status.success(), "{key}={value} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named),
            "{key}={value}: the error names {named}:\n{}",
            describe(&output)
        );
    }
}
