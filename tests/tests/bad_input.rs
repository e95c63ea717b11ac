//! Bad requests are refused with a clear status and message; the restore tool refuses what it
//! cannot restore and leaves the data directory exactly as it found it.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

/// One broker with a filesystem backup store, and a gateway.
async fn single_node() -> (ClusterSpec, Cluster) {
    let spec = ClusterSpec::new(1, 3).with_filesystem_store();
    let cluster = spec.start().await;
    (spec, cluster)
}

fn assert_400_with_message(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 400, "{what}: expected 400, got {status}: {body}");
    message(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused() {
    let (spec, mut cluster) = single_node().await;
    let ep = spec.endpoints();

    for id in ["0", "-1", "abc", "99999999999999999999"] {
        let (status, body) = take_backup(&ep.mgmt, id).await;
        assert_400_with_message(&format!("POST backup {id}"), status, &body);
        let (status, body) = get(&format!("{}/actuator/backups/{id}", ep.mgmt)).await;
        assert_400_with_message(&format!("GET backup {id}"), status, &body);
    }

    let deposit_url = format!("{}/v1/accounts/alice/deposit", ep.api);
    for (what, body) in [
        ("amount 0", r#"{"amount": 0}"#),
        ("amount -5", r#"{"amount": -5}"#),
        ("amount \"x\"", r#"{"amount": "x"}"#),
        ("amount missing", r#"{}"#),
        ("invalid JSON", r#"{"amount": "#),
    ] {
        let (status, answer) = post(&deposit_url, Some(body)).await;
        assert_400_with_message(&format!("deposit with {what}"), status, &answer);
    }
    let long = "a".repeat(129);
    for account in ["a%20b", long.as_str()] {
        let (status, answer) = post(
            &format!("{}/v1/accounts/{account}/deposit", ep.api),
            Some(r#"{"amount": 5}"#),
        )
        .await;
        assert_400_with_message(&format!("deposit to account {account:?}"), status, &answer);
    }
    // Nothing was created by the refused deposits.
    assert_eq!(balance(&ep.api, "alice").await, None);

    assert_eq!(deposit(&ep.api, "shorty", 10).await, 10);
    let (status, body) = post(
        &format!("{}/v1/accounts/shorty/withdraw", ep.api),
        Some(r#"{"amount": 11}"#),
    )
    .await;
    assert_eq!(status, 409, "withdraw more than the balance: {body}");
    message(&body);
    assert_eq!(
        balance(&ep.api, "shorty").await,
        Some(10),
        "a refused withdrawal changes nothing"
    );

    let (status, body) = get(&format!("{}/v1/accounts/nobody-here", ep.api)).await;
    assert_eq!(status, 404, "unknown account: {body}");

    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_without_a_store_is_refused() {
    let spec = ClusterSpec::new(1, 3).with("SLUICE_BROKER_DATA_BACKUP_STORE", "NONE");
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 400, "POST backup without a store: {body}");
    let text = message(&body);
    assert!(
        text.to_lowercase().contains("store"),
        "the message must mention the backup store: {text}"
    );
    cluster.stop();
}

/// Runs a restore that must fail: non-zero exit, `hint` in stderr, data directory unchanged.
fn assert_refused(spec: &ClusterSpec, overrides: &Env, args: &[&str], data_dir: &Path, hint: &str) {
    let before = dir_fingerprint(data_dir);
    let output = spec.restore(0, overrides, args);
    assert!(
        !output.status.success(),
        "restore {args:?} must fail:\n{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains(&hint.to_lowercase()),
        "restore {args:?}: stderr must contain {hint:?}:\n{}",
        describe(&output)
    );
    assert_eq!(
        dir_fingerprint(data_dir),
        before,
        "restore {args:?} changed the data directory {}",
        data_dir.display()
    );
}

fn data_dir_override(dir: &Path) -> Env {
    let mut env = Env::new();
    env.insert(
        "SLUICE_BROKER_DATA_DIRECTORY".into(),
        dir.to_str().expect("UTF-8 path").to_string(),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_what_it_cannot_restore() {
    let (spec, mut cluster) = single_node().await;
    let ep = spec.endpoints();
    let deposits: Vec<(String, u64)> = (0..3_000)
        .map(|i| (format!("user-{i}"), i as u64 + 1))
        .collect();
    deposit_all(&ep.api, &deposits).await;
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}");
    poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;
    cluster.stop();

    let scratch = spec.root().join("restores");
    fs::create_dir_all(&scratch).unwrap();

    // A data directory that is not empty.
    let busy = scratch.join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("keep.txt"), b"precious").unwrap();
    assert_refused(&spec, &data_dir_override(&busy), &["1"], &busy, "not empty");

    // The broker's own data directory is not empty either.
    let own = spec.brokers[0].data_dir.clone();
    assert_refused(&spec, &Env::new(), &["1"], &own, "not empty");

    // An unknown backup id, into an absent and into an existing empty directory.
    let absent = scratch.join("absent");
    assert_refused(
        &spec,
        &data_dir_override(&absent),
        &["424242"],
        &absent,
        "does not exist",
    );
    assert!(
        !absent.exists(),
        "a refused restore must not create the data directory"
    );
    let empty = scratch.join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert_refused(
        &spec,
        &data_dir_override(&empty),
        &["--backup-id", "424242"],
        &empty,
        "does not exist",
    );

    // Another partition count than the backup's.
    for count in ["2", "4"] {
        let mut overrides = data_dir_override(&absent);
        overrides.insert("SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT".into(), count.into());
        assert_refused(&spec, &overrides, &["1"], &absent, "partitionsCount");
    }

    // An invalid backup id.
    assert_refused(
        &spec,
        &data_dir_override(&absent),
        &["0"],
        &absent,
        "backup",
    );

    // A corrupted pool object (the largest: a piece of a segment), in a copy of the store: the
    // directory must stay absent.
    let corrupt_store = scratch.join("corrupt-backups");
    copy_dir(&spec.backup_path(), &corrupt_store);
    let segments = find_files(&corrupt_store, |p| p.contains("/pool/"));
    assert!(
        !segments.is_empty(),
        "the backup holds no pool object: {:?}",
        dir_fingerprint(&corrupt_store)
    );
    let victim = segments
        .iter()
        .max_by_key(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .unwrap()
        .clone();
    let mut bytes = fs::read(&victim).unwrap();
    assert!(
        bytes.len() > 64,
        "segment {} is too small to corrupt",
        victim.display()
    );
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xA5;
    }
    fs::write(&victim, &bytes).unwrap();
    let mut overrides = data_dir_override(&absent);
    overrides.insert(
        "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH".into(),
        corrupt_store.to_str().unwrap().to_string(),
    );
    assert_refused(&spec, &overrides, &["1"], &absent, "corrupt");
    assert!(
        !absent.exists(),
        "a failed restore must leave an absent data directory absent"
    );
    // Same with an existing empty directory: it stays, empty.
    assert_refused(
        &spec,
        &{
            let mut o = overrides.clone();
            o.extend(data_dir_override(&empty));
            o
        },
        &["1"],
        &empty,
        "corrupt",
    );

    // An existing empty directory is fine.
    let output = spec.restore(0, &data_dir_override(&empty), &["1"]);
    assert!(
        output.status.success(),
        "restore into an empty directory:\n{}",
        describe(&output)
    );
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(
        lines,
        3,
        "one line per restored partition:\n{}",
        describe(&output)
    );
    assert_ne!(
        dir_fingerprint(&empty),
        Some(vec![]),
        "the restore wrote nothing"
    );

    // A directory holding only lost+found counts as empty; lost+found is kept.
    let mounted = scratch.join("mounted");
    fs::create_dir_all(mounted.join("lost+found")).unwrap();
    let output = spec.restore(0, &data_dir_override(&mounted), &["1"]);
    assert!(
        output.status.success(),
        "restore into a directory with lost+found:\n{}",
        describe(&output)
    );
    assert!(
        mounted.join("lost+found").is_dir(),
        "lost+found must be kept"
    );
    assert!(dir_size(&mounted) > 0, "the restore wrote nothing");

    // The restored directory holds the backed-up state.
    let mut overrides = data_dir_override(&empty);
    overrides.insert("SLUICE_BROKER_DATA_BACKUP_STORE".into(), "NONE".into());
    let check = ClusterSpec::new(1, 3);
    let mut env = check.broker_env(0);
    env.extend(overrides);
    let dir = check.root().join("node-0");
    fs::create_dir_all(&dir).unwrap();
    let mut broker = Proc::spawn(
        "restored broker",
        "sluice-broker",
        env,
        &dir,
        &dir.join("broker.log"),
    );
    broker.wait_ready(&check.brokers[0].health_url()).await;
    let mut gateway = check.start_gateway().await;
    let api = check.endpoints().api;
    let expected_total: u64 = deposits.iter().map(|(_, amount)| amount).sum();
    assert_eq!(ledger_total(&api).await, expected_total, "restored ledger");
    assert_eq!(balance(&api, "user-41").await, Some(42));
    gateway.stop_ok();
    broker.stop_ok();
}
