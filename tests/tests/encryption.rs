//! Encrypted backups end to end on Garage (S3), with the real binaries: what lies in the bucket
//! is ciphertext; a flipped byte, a truncated object, an object swapped between backups, a
//! replayed or edited manifest, a manifest of another cluster and a missing key are each found
//! by `verify` and refused by `restore` before a byte is written; key rotation (rekey from A to
//! B, remove A) keeps every backup restorable.

use std::time::Duration;

use sluice_backup_store::object_store::{path::Path as ObjectPath, ObjectStore, PutPayload};
use sluice_tests::*;

fn sluice(env: &Env, cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    run_program_in(&bin("sluice"), env, cwd, args)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn keys_env(keys: &str, primary: &str) -> Env {
    [
        ("SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_KEYS", keys),
        ("SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_PRIMARYKEY", primary),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn get(store: &dyn ObjectStore, path: &str) -> Vec<u8> {
    let path = ObjectPath::from(path);
    store
        .get(&path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn put(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) {
    store
        .put(&ObjectPath::from(path), PutPayload::from(bytes))
        .await
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
}

fn manifest_path(partition: u32, backup: u64) -> String {
    format!("{partition:05}/{backup:020}/00000/manifest.json")
}

fn object_path(partition: u32, object: &str) -> String {
    format!("{partition:05}/pool/{}/{object}", &object[..2])
}

/// The pool objects of a manifest, in order.
fn objects(manifest: &serde_json::Value) -> Vec<String> {
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["pieces"].as_array().unwrap().clone())
        .map(|p| p["object"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_backups_are_opaque_authenticated_and_survive_key_rotation() {
    let garage = Garage::start();
    let root = tempfile::tempdir().unwrap();
    let cwd = root.path();
    let (key_a, key_b) = (cwd.join("a.key"), cwd.join("b.key"));
    for key in [&key_a, &key_b] {
        let made = sluice(
            &Env::new(),
            cwd,
            &["backup", "keygen", "--out", key.to_str().unwrap()],
        );
        assert!(made.status.success(), "keygen: {}", describe(&made));
    }
    let spec_a = format!("A=file:{}", key_a.display());
    let spec_b = format!("B=file:{}", key_b.display());
    let under_a = keys_env(&spec_a, "A");
    let spec = ClusterSpec::new(1, 2)
        .with_env(&garage.env())
        .with_env(&under_a);
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    deposit(&ep.api, "alice", 100).await;
    deposit(&ep.api, "bob", 50).await;
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "{body}");
    poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;
    deposit(&ep.api, "alice", 7).await;
    let (status, body) = take_backup(&ep.mgmt, "2").await;
    assert_eq!(status, 200, "{body}");
    poll_backup(&ep.mgmt, 2, "COMPLETED", Duration::from_secs(60)).await;
    let store_env: Env = {
        let mut env = spec.broker_env(0);
        env.extend(under_a.clone());
        env
    };

    // The bucket holds ciphertext: encrypted manifests with a MAC, objects with cipher 1 and no
    // account name in them.
    let raw = garage.store(None).object_store().clone();
    for partition in 1..=2u32 {
        for backup in [1, 2] {
            let manifest: serde_json::Value =
                serde_json::from_slice(&get(raw.as_ref(), &manifest_path(partition, backup)).await)
                    .unwrap();
            for object in objects(&manifest) {
                let bytes = get(raw.as_ref(), &object_path(partition, &object)).await;
                assert_eq!(&bytes[..4], b"SLPO");
                assert_eq!(bytes[6], 1, "cipher byte of {object}");
                for plaintext in [b"alice".as_slice(), b"deposit", b"checkpoint"] {
                    assert!(
                        !bytes.windows(plaintext.len()).any(|w| w == plaintext),
                        "{object} holds plaintext"
                    );
                }
            }
        }
    }
    let partition = 1;
    let manifest_2: serde_json::Value =
        serde_json::from_slice(&get(raw.as_ref(), &manifest_path(partition, 2)).await).unwrap();
    assert_eq!(manifest_2["formatVersion"], 4, "{manifest_2}");
    assert_eq!(manifest_2["encryption"]["keyId"], "A", "{manifest_2}");
    assert!(manifest_2["manifestMac"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    let objects_2 = objects(&manifest_2);
    assert!(!objects_2.is_empty());
    let inspect = sluice(&store_env, cwd, &["backup", "inspect", "2"]);
    assert!(inspect.status.success(), "{}", describe(&inspect));
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("key=A"),
        "{}",
        describe(&inspect)
    );
    let verified = sluice(&store_env, cwd, &["backup", "verify", "2"]);
    assert!(verified.status.success(), "{}", describe(&verified));

    // Each tampering is found by verify (non-zero, naming what failed) and refused by restore
    // before anything is written; the bucket is put back after each.
    let manifest_1_bytes = get(raw.as_ref(), &manifest_path(partition, 1)).await;
    let manifest_2_bytes = get(raw.as_ref(), &manifest_path(partition, 2)).await;
    let victim = object_path(partition, &objects_2[0]);
    let original = get(raw.as_ref(), &victim).await;
    let objects_1 = objects(&serde_json::from_slice(&manifest_1_bytes).unwrap());
    let other = objects_1
        .iter()
        .chain(&objects_2)
        .find(|o| **o != objects_2[0])
        .expect("another object")
        .clone();
    let other_bytes = get(raw.as_ref(), &object_path(partition, &other)).await;
    let edited_manifest = {
        let mut value: serde_json::Value = serde_json::from_slice(&manifest_2_bytes).unwrap();
        value["createdAt"] = serde_json::json!("2020-01-01T00:00:00.000Z");
        // Without a checksum the manifest reads as one of an old release: only the MAC is left.
        value.as_object_mut().unwrap().remove("manifestChecksum");
        serde_json::to_vec(&value).unwrap()
    };
    let flipped = {
        let mut bytes = original.clone();
        bytes[40] ^= 1;
        bytes
    };
    let truncated = original[..original.len() - 7].to_vec();
    let cases: Vec<(&str, String, Vec<u8>, Env, &str)> = vec![
        (
            "flipped ciphertext byte",
            victim.clone(),
            flipped,
            Env::new(),
            "does not authenticate",
        ),
        (
            "truncated object",
            victim.clone(),
            truncated,
            Env::new(),
            "bytes",
        ),
        (
            "object of another backup swapped in",
            victim.clone(),
            other_bytes,
            Env::new(),
            "bad",
        ),
        (
            "older manifest replayed",
            manifest_path(partition, 2),
            manifest_1_bytes.clone(),
            Env::new(),
            "describes another backup",
        ),
        (
            "edited manifest",
            manifest_path(partition, 2),
            edited_manifest,
            Env::new(),
            "does not verify under key id A",
        ),
        (
            "manifest of another cluster",
            manifest_path(partition, 2),
            manifest_2_bytes.clone(),
            [(
                "SLUICE_BROKER_CLUSTER_CLUSTERNAME".to_string(),
                "other-cluster".to_string(),
            )]
            .into_iter()
            .collect(),
            "written by cluster",
        ),
        (
            "key not configured",
            manifest_path(partition, 2),
            manifest_2_bytes.clone(),
            keys_env(&spec_b, "B"),
            "key id A, which is not configured",
        ),
    ];
    cluster.stop();
    let data_dir = spec.brokers[0].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).unwrap();
    for (name, path, bytes, overrides, expected) in cases {
        let restore_to = if path == victim {
            original.clone()
        } else {
            manifest_2_bytes.clone()
        };
        put(raw.as_ref(), &path, bytes).await;
        let mut env = store_env.clone();
        env.extend(overrides.clone());
        let verify = sluice(&env, cwd, &["backup", "verify", "2"]);
        assert!(
            !verify.status.success(),
            "{name}: verify passed:\n{}",
            describe(&verify)
        );
        assert!(
            stderr(&verify).contains(expected),
            "{name}: expected {expected:?}:\n{}",
            describe(&verify)
        );
        let restored = spec.restore(0, &overrides, &["2"]);
        assert!(
            !restored.status.success(),
            "{name}: restore passed:\n{}",
            describe(&restored)
        );
        assert!(
            !data_dir.exists(),
            "{name}: restore wrote into the data directory"
        );
        put(raw.as_ref(), &path, restore_to).await;
    }

    // Rotation: rekey every backup from A to B (A and B configured, B primary), then verify and
    // restore with B alone.
    let both = keys_env(&format!("{spec_a},{spec_b}"), "B");
    let mut env = spec.broker_env(0);
    env.extend(both);
    let rekeyed = sluice(&env, cwd, &["backup", "rekey"]);
    assert!(rekeyed.status.success(), "rekey: {}", describe(&rekeyed));
    assert!(
        String::from_utf8_lossy(&rekeyed.stdout).contains("4 rekeyed"),
        "{}",
        describe(&rekeyed)
    );
    assert_eq!(
        get(raw.as_ref(), &victim).await,
        original,
        "rekey changed no object"
    );
    let only_b = keys_env(&spec_b, "B");
    let mut env = spec.broker_env(0);
    env.extend(only_b.clone());
    for id in ["1", "2"] {
        let verified = sluice(&env, cwd, &["backup", "verify", id]);
        assert!(
            verified.status.success(),
            "verify {id} under B: {}",
            describe(&verified)
        );
    }
    let restored = spec.restore(0, &only_b, &["2"]);
    assert!(
        restored.status.success(),
        "restore under B: {}",
        describe(&restored)
    );
    let spec = spec.with_env(&only_b);
    let cluster = spec.start().await;
    assert_eq!(
        balance(&ep.api, "alice").await,
        Some(107),
        "{}",
        cluster.logs()
    );
    assert_eq!(balance(&ep.api, "bob").await, Some(50));
}
