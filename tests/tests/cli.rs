//! The `sluice` command line against a real broker and gateway (filesystem store): take --wait,
//! status, list, inspect, verify (ok, corrupt, missing, unreachable), delete, with exit codes.

use sluice_tests::*;

fn sluice(env: &Env, cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    run_program_in(&bin("sluice"), env, cwd, args)
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backup_command_works_end_to_end() {
    let spec = ClusterSpec::new(1, 3).with_filesystem_store();
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    deposit(&ep.api, "alice", 100).await;
    deposit(&ep.api, "bob", 50).await;
    let cwd = spec.root().to_path_buf();
    let remote: Env = [("SLUICE_ADDRESS".to_string(), ep.mgmt.clone())]
        .into_iter()
        .collect();
    let store = spec.broker_env(0);

    let taken = sluice(&remote, &cwd, &["backup", "take", "1", "--wait"]);
    assert!(taken.status.success(), "take --wait:\n{}", describe(&taken));
    assert!(stdout(&taken).contains("COMPLETED"), "{}", describe(&taken));

    let status = sluice(&remote, &cwd, &["backup", "status", "1", "--json"]);
    assert!(status.status.success(), "{}", describe(&status));
    let json: serde_json::Value =
        serde_json::from_str(stdout(&status).trim()).expect("status --json is JSON");
    assert_eq!(json["status"], "COMPLETED", "{json}");

    let again = sluice(&remote, &cwd, &["backup", "take", "1"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "taking id 1 twice fails:\n{}",
        describe(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("409"),
        "{}",
        describe(&again)
    );

    let taken = sluice(&remote, &cwd, &["backup", "take", "2", "--wait"]);
    assert!(taken.status.success(), "{}", describe(&taken));
    let list = sluice(&remote, &cwd, &["backup", "list"]);
    assert!(list.status.success(), "{}", describe(&list));
    let ids: Vec<String> = stdout(&list)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ids, vec!["2", "1"], "newest first:\n{}", describe(&list));

    let inspect = sluice(&store, &cwd, &["backup", "inspect", "1"]);
    assert!(inspect.status.success(), "{}", describe(&inspect));
    let text = stdout(&inspect);
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        rows.len(),
        3,
        "one row per partition:\n{}",
        describe(&inspect)
    );
    assert!(
        rows.iter().all(|r| r.contains("COMPLETED")),
        "{}",
        describe(&inspect)
    );

    let verified = sluice(&store, &cwd, &["backup", "verify", "1"]);
    assert!(verified.status.success(), "{}", describe(&verified));
    assert!(
        stdout(&verified).starts_with("verified"),
        "{}",
        describe(&verified)
    );

    let missing = sluice(&store, &cwd, &["backup", "verify", "77"]);
    assert_eq!(
        missing.status.code(),
        Some(4),
        "an unknown backup is 'missing':\n{}",
        describe(&missing)
    );

    // Backup 2 shares the pool with backup 1: it uploaded only what changed.
    let inspect = sluice(&store, &cwd, &["backup", "inspect", "2", "--json"]);
    assert!(inspect.status.success(), "{}", describe(&inspect));
    let json: serde_json::Value =
        serde_json::from_str(stdout(&inspect).trim()).expect("inspect --json is JSON");
    for partition in json.as_array().expect("one entry per partition") {
        let usage = &partition["storeUsage"];
        let (referenced, uploaded) = (
            usage["referencedBytes"].as_u64().unwrap(),
            usage["uploadedBytes"].as_u64().unwrap(),
        );
        assert!(
            uploaded < referenced && referenced <= usage["poolBytes"].as_u64().unwrap(),
            "backup 2 re-uploaded what backup 1 holds: {partition}"
        );
    }

    // Damage a pool object that backups 1 and 2 both need (the first piece of partition 1's
    // first segment): verify names the object and both backups, exit code 3.
    let manifest = |id: u64| -> serde_json::Value {
        let path = spec
            .backup_path()
            .join(format!("00001/{id:020}/00000/manifest.json"));
        serde_json::from_slice(&std::fs::read(&path).expect("read manifest")).expect("JSON")
    };
    let first_piece = |manifest: &serde_json::Value| -> String {
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "SEGMENT")
            .expect("a segment")["pieces"][0]["object"]
            .as_str()
            .expect("a pooled segment")
            .to_string()
    };
    let object = first_piece(&manifest(2));
    assert_eq!(
        object,
        first_piece(&manifest(1)),
        "backup 2 reuses backup 1's piece"
    );
    let victim = spec
        .backup_path()
        .join(format!("00001/pool/{}/{object}", &object[..2]));
    let mut bytes = std::fs::read(&victim).expect("read pool object");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&victim, bytes).expect("write pool object");
    let corrupt = sluice(&store, &cwd, &["backup", "verify", "2"]);
    assert_eq!(corrupt.status.code(), Some(3), "{}", describe(&corrupt));
    let stderr = String::from_utf8_lossy(&corrupt.stderr);
    assert!(
        stderr.contains(&object) && stderr.contains("needed by backups 1, 2"),
        "names the bad object {object} and both backups that need it:\n{}",
        describe(&corrupt)
    );

    let deleted = sluice(&remote, &cwd, &["backup", "delete", "2"]);
    assert!(deleted.status.success(), "{}", describe(&deleted));
    let list = sluice(&remote, &cwd, &["backup", "list", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(stdout(&list).trim()).expect("list --json is JSON");
    let ids: Vec<u64> = json
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["backupId"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![1], "{json}");

    cluster.stop();
    let unreachable = sluice(&remote, &cwd, &["backup", "list"]);
    assert_eq!(
        unreachable.status.code(),
        Some(5),
        "{}",
        describe(&unreachable)
    );
    let usage = sluice(&remote, &cwd, &["backup", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&usage));
}
