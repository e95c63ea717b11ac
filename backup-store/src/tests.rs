use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::manifest::{
    compression_name, format_checksum, parse_checksum, validate_file_name, FILE_NAME_LEN_MAX,
    MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_COMPRESSED, ZSTD_COMPRESSION,
};
use crate::options::DEFAULT_API_CALL_TIMEOUT;
use crate::upload::MULTIPART_PART_BYTES;

fn open(kind: StoreKind, base_path: Option<&str>) -> BackupStore {
    BackupStore::open(BackupStoreOptions::new(kind, base_path.map(str::to_string))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    conformance::conformance(open(StoreKind::InMemory, None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory_with_base_path() {
    conformance::conformance(open(StoreKind::InMemory, Some("/cluster-a/backups/"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_filesystem() {
    let root = tempfile::tempdir().unwrap();
    let store = open(
        StoreKind::Filesystem {
            root: root.path().join("not-yet-created"),
        },
        Some("backups"),
    );
    assert!(root.path().join("not-yet-created").is_dir());
    store.check_reachable().await.unwrap();
    conformance::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_filesystem_without_base_path() {
    let root = tempfile::tempdir().unwrap();
    conformance::conformance(open(
        StoreKind::Filesystem {
            root: root.path().to_path_buf(),
        },
        None,
    ))
    .await;
}

#[tokio::test]
async fn throttle_limits_rate() {
    let throttle = Throttle::new(4 * 1024 * 1024);
    let started = Instant::now();
    for _ in 0..2 {
        throttle.acquire(1024 * 1024).await;
    }
    // Shared between clones: the second MiB is paid by a clone.
    let clone = throttle.clone();
    for _ in 0..2 {
        clone.acquire(512 * 1024).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "3 MiB at 4 MiB/s took only {elapsed:?}"
    );
}

#[tokio::test]
async fn throttled_upload_of_2_mib_at_4_mib_per_second_takes_at_least_400_ms() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("segment.log");
    std::fs::write(&local, vec![7u8; 2 * 1024 * 1024]).unwrap();
    let store = open(StoreKind::InMemory, None);
    let throttle = Throttle::new(4 * 1024 * 1024);
    let started = Instant::now();
    let entry = store
        .upload_file(
            &BackupIdentifier::new(1, 1, 1),
            FileKind::Segment,
            "segment.log",
            &local,
            2 * 1024 * 1024,
            Some(&throttle),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "took only {elapsed:?}"
    );
    assert_eq!(entry.size_bytes, 2 * 1024 * 1024);
}

#[tokio::test]
async fn zero_rate_throttle_is_unlimited() {
    let throttle = Throttle::new(0);
    let started = Instant::now();
    throttle.acquire(u64::MAX).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn manifest_json_format() {
    let id = BackupIdentifier::new(1, 42, 2);
    let manifest = Manifest::in_progress(
        id,
        BackupDescriptor {
            snapshot_id: None,
            checkpoint_position: 7,
            number_of_partitions: 3,
            broker_version: "1.2.3".to_string(),
            request: None,
        },
    )
    .complete(vec![FileEntry {
        name: "1.log".to_string(),
        kind: FileKind::Segment,
        size_bytes: 5,
        checksum: "crc32c:0000abcd".to_string(),
        compression: None,
        stored_bytes: 5,
        pieces: None,
    }]);
    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "formatVersion": 1,
            "id": {"partitionId": 1, "checkpointId": 42, "nodeId": 2},
            "descriptor": {
                "snapshotId": null,
                "checkpointPosition": 7,
                "numberOfPartitions": 3,
                "brokerVersion": "1.2.3"
            },
            "status": "COMPLETED",
            "files": [{"name": "1.log", "kind": "SEGMENT", "sizeBytes": 5, "checksum": "crc32c:0000abcd", "storedBytes": 5}],
            "failureReason": null,
            "createdAt": manifest.created_at,
            "lastUpdatedAt": manifest.last_updated_at,
        })
    );
    assert_eq!(
        serde_json::from_value::<Manifest>(json).unwrap(),
        manifest.clone()
    );
    assert!(humantime::parse_rfc3339(&manifest.created_at).is_ok());
    assert!(humantime::parse_rfc3339(&manifest.last_updated_at).is_ok());
    assert_eq!(
        serde_json::to_value(BackupStatus::InProgress).unwrap(),
        "IN_PROGRESS"
    );
    assert_eq!(
        serde_json::to_value(FileKind::Snapshot).unwrap(),
        "SNAPSHOT"
    );

    let failed = manifest.fail("boom");
    assert_eq!(failed.status, BackupStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("boom"));
    assert!(failed.validate().is_ok());
    let mut bad = failed.clone();
    bad.format_version = 5;
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("formatVersion=5"));
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("use a newer release"));
}

#[test]
fn compressed_entries_need_format_version_2() {
    let id = BackupIdentifier::new(1, 42, 2);
    let descriptor = BackupDescriptor {
        snapshot_id: None,
        checkpoint_position: 7,
        number_of_partitions: 3,
        broker_version: "1.2.3".to_string(),
        request: None,
    };
    let entry = FileEntry {
        name: "1.log".to_string(),
        kind: FileKind::Segment,
        size_bytes: 5000,
        checksum: "crc32c:0000abcd".to_string(),
        compression: Some(ZSTD_COMPRESSION.to_string()),
        stored_bytes: 120,
        pieces: None,
    };
    let manifest = Manifest::in_progress(id, descriptor).complete(vec![entry.clone()]);
    assert_eq!(manifest.format_version, MANIFEST_FORMAT_VERSION_COMPRESSED);
    manifest.validate().unwrap();
    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(
        json["files"][0],
        serde_json::json!({"name": "1.log", "kind": "SEGMENT", "sizeBytes": 5000,
            "checksum": "crc32c:0000abcd", "compression": "zstd", "storedBytes": 120})
    );
    assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), manifest);
    let mut old = manifest.clone();
    old.format_version = MANIFEST_FORMAT_VERSION;
    assert!(old
        .validate()
        .unwrap_err()
        .to_string()
        .contains("compressed"));
    let mut unknown = manifest;
    unknown.files[0].compression = Some("brotli".to_string());
    assert!(unknown
        .validate()
        .unwrap_err()
        .to_string()
        .contains("brotli"));
}

#[test]
fn file_names_and_checksums() {
    for ok in ["1.log", "CURRENT", "000001.sst", "a-b_c.D", "..."] {
        assert!(validate_file_name(ok).is_ok(), "{ok}");
    }
    let long = "x".repeat(FILE_NAME_LEN_MAX + 1);
    for bad in ["", ".", "..", "a/b", "/a", "a b", "ü", long.as_str()] {
        assert!(validate_file_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_checksum(0xab), "crc32c:000000ab");
    assert_eq!(parse_checksum("crc32c:000000ab"), Some(0xab));
    assert_eq!(parse_checksum("crc32c:000000AB"), None);
    assert_eq!(parse_checksum("crc32:000000ab"), None);
    assert_eq!(parse_checksum("crc32c:00ab"), None);
}

#[tokio::test]
async fn requests_share_one_limit_across_clones() {
    let store = BackupStore::open(BackupStoreOptions {
        connections_concurrent_max: 1,
        ..BackupStoreOptions::default()
    })
    .unwrap();
    assert!(
        store
            .object_store()
            .to_string()
            .starts_with("LimitStore(1,"),
        "{}",
        store.object_store()
    );
    let path = object_store::path::Path::from("x");
    store
        .object_store()
        .put(&path, object_store::PutPayload::from_static(b"data"))
        .await
        .unwrap();
    // An unfinished download holds the only permit ...
    let download = store.object_store().get(&path).await.unwrap();
    let clone = store.clone();
    let blocked =
        tokio::time::timeout(Duration::from_millis(200), clone.object_store().head(&path)).await;
    assert!(blocked.is_err(), "a second request must wait for the first");
    // ... until it is done.
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"data");
    clone.object_store().head(&path).await.unwrap();

    let error = BackupStore::open(BackupStoreOptions {
        connections_concurrent_max: 0,
        ..BackupStoreOptions::default()
    })
    .unwrap_err();
    assert!(matches!(error, BackupStoreError::Config { .. }), "{error}");
}

/// Uploads `count` files of `len` bytes each (different random bytes) at once
/// to `store`, then downloads and compares them.
async fn concurrent_round_trips(store: &BackupStore, count: usize, len: usize) {
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let id = BackupIdentifier::new(1, 1, 0);
    let mut files = Vec::new();
    for i in 0..count {
        let mut data = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut data);
        let path = dir.path().join(format!("local-{i}"));
        std::fs::write(&path, &data).unwrap();
        files.push((format!("{i:020}.log"), path, data));
    }
    let uploads = files.iter().map(|(name, path, _)| {
        let store = store.clone();
        async move {
            store
                .upload_file(&id, FileKind::Segment, name, path, len as u64, None)
                .await
        }
    });
    let entries = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::try_join_all(uploads),
    )
    .await
    .expect("uploads sharing few buffers must not wait for each other forever")
    .unwrap();
    for (entry, (name, _, data)) in entries.iter().zip(&files) {
        let destination = dir.path().join("down").join(name);
        let manifest = Manifest::in_progress(
            id,
            BackupDescriptor {
                snapshot_id: None,
                checkpoint_position: 1,
                number_of_partitions: 1,
                broker_version: "test".to_string(),
                request: None,
            },
        );
        store
            .download_file(&manifest, entry, &destination)
            .await
            .unwrap();
        assert!(
            std::fs::read(&destination).unwrap() == *data,
            "{name} differs"
        );
    }
    store.delete_backup(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_share_one_bounded_set_of_buffers() {
    let root = tempfile::tempdir().unwrap();
    let store = BackupStore::open(BackupStoreOptions {
        upload_memory_limit_bytes: 2 * MULTIPART_PART_BYTES as u64 + 1,
        ..BackupStoreOptions::new(
            StoreKind::Filesystem {
                root: root.path().to_path_buf(),
            },
            None,
        )
    })
    .unwrap();
    assert_eq!(
        store.upload_memory_limit_bytes(),
        2 * MULTIPART_PART_BYTES as u64
    );
    // Six uploads of 2.5 parts each, at once, with two buffers among them.
    concurrent_round_trips(&store, 6, 5 * MULTIPART_PART_BYTES / 2).await;
    assert_eq!(
        store.buffers.allocated(),
        2,
        "uploads allocate buffers up to the budget and reuse them"
    );
    assert_eq!(store.buffers.available(), 2, "every buffer came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_payloads_gets_copies_and_never_pins_buffers() {
    // The in-memory store keeps the bytes of every put and part: without
    // copies, stored objects would hold the one buffer and uploads would hang.
    let store = BackupStore::open(BackupStoreOptions {
        upload_memory_limit_bytes: MULTIPART_PART_BYTES as u64,
        ..BackupStoreOptions::default()
    })
    .unwrap();
    concurrent_round_trips(&store, 3, 2 * MULTIPART_PART_BYTES + 1).await;
    concurrent_round_trips(&store, 4, 1000).await;
    assert_eq!(store.buffers.available(), 1);
}

#[test]
fn options_have_production_defaults() {
    let options = BackupStoreOptions::new(StoreKind::InMemory, Some("b".to_string()));
    assert_eq!(options.api_call_timeout, DEFAULT_API_CALL_TIMEOUT);
    assert_eq!(options.api_call_timeout, Duration::from_secs(30));
    assert_eq!(options.connections_concurrent_max, 32);
    assert_eq!(options.compression, Compression::None);
    assert_eq!(options.upload_memory_limit_bytes, 64 * 1024 * 1024);
    assert_eq!(BackupStoreOptions::default().kind, StoreKind::InMemory);
    assert_eq!(compression_name(Compression::Zstd), Some("zstd"));
    assert_eq!(compression_name(Compression::None), None);
}

fn gcs(host: Option<&str>, credentials: Option<std::path::PathBuf>) -> StoreKind {
    StoreKind::Gcs {
        bucket: "sluice-gcs".to_string(),
        host: host.map(str::to_string),
        credentials,
    }
}

fn azure(key: Option<&str>, sas: Option<&str>, endpoint: Option<&str>) -> StoreKind {
    StoreKind::Azure {
        account: "devstoreaccount1".to_string(),
        container: "sluice".to_string(),
        access_key: key.map(str::to_string),
        sas_token: sas.map(str::to_string),
        endpoint: endpoint.map(str::to_string),
    }
}

#[test]
fn gcs_and_azure_open_without_requests_and_never_print_secrets() {
    let store = open(gcs(Some("http://127.0.0.1:4443"), None), Some("/gcs/"));
    assert_eq!(store.base_path(), Some("gcs"));
    assert!(format!("{store:?}").contains("sluice-gcs"));

    // Azurite's well-known development key.
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let kind = azure(
        Some(key),
        None,
        Some("http://127.0.0.1:10000/devstoreaccount1"),
    );
    let debug = format!("{kind:?}");
    assert!(!debug.contains(key), "{debug}");
    let store = open(kind, None);
    assert!(!format!("{store:?}").contains(key));
    let kind = azure(None, Some("sv=2024&sig=very-secret-signature"), None);
    assert!(!format!("{kind:?}").contains("very-secret-signature"));
    open(kind, None);
}

#[test]
fn gcs_and_azure_configuration_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let error = BackupStore::open(BackupStoreOptions::new(
        gcs(None, Some(dir.path().join("missing.json"))),
        None,
    ))
    .unwrap_err();
    assert!(matches!(error, BackupStoreError::Config { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("option=StoreKind::Gcs.credentials"),
        "{error}"
    );
    let error =
        BackupStore::open(BackupStoreOptions::new(gcs(Some("localhost"), None), None)).unwrap_err();
    assert!(
        error.to_string().contains("option=StoreKind::Gcs.host"),
        "{error}"
    );
    let error = BackupStore::open(BackupStoreOptions::new(
        azure(Some("a2V5"), Some("sv=1&sig=2"), None),
        None,
    ))
    .unwrap_err();
    assert!(error.to_string().contains("mutually exclusive"), "{error}");
    let error = BackupStore::open(BackupStoreOptions::new(
        azure(Some("not base64!"), None, None),
        None,
    ))
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("option=StoreKind::Azure.access_key"),
        "{error}"
    );
    assert!(!error.to_string().contains("not base64!"), "{error}");
    let mut kind = azure(None, None, None);
    if let StoreKind::Azure { container, .. } = &mut kind {
        container.clear();
    }
    let error = BackupStore::open(BackupStoreOptions::new(kind, None)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("option=StoreKind::Azure.container"),
        "{error}"
    );
}

#[tokio::test]
async fn unreachable_gcs_and_azure_name_the_endpoint() {
    for (kind, key) in [
        (
            gcs(Some("http://127.0.0.1:1"), None),
            "(StoreKind::Gcs.host)",
        ),
        (
            azure(
                Some("a2V5"),
                None,
                Some("http://127.0.0.1:1/devstoreaccount1"),
            ),
            "(StoreKind::Azure.endpoint, StoreKind::Azure.account)",
        ),
    ] {
        let store = open(kind, None);
        let error = store.check_reachable().await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("cannot connect to http://127.0.0.1:1"),
            "{message}"
        );
        assert!(message.contains(key), "{message}");
        assert!(!message.contains("broker."), "{message}");
    }
}

fn s3(endpoint: Option<&str>, force_path_style: bool) -> StoreKind {
    StoreKind::S3 {
        bucket: "sluice-backups".to_string(),
        endpoint: endpoint.map(str::to_string),
        region: "eu-west-1".to_string(),
        access_key: Some("AKIAEXAMPLE".to_string()),
        secret_key: Some("very-secret-key".to_string()),
        force_path_style,
        allow_http: false,
        server_side_encryption: S3Encryption::default(),
    }
}

#[test]
fn s3_options_never_print_the_secret() {
    let kind = s3(Some("http://localhost:9000"), true);
    let debug = format!("{kind:?}");
    assert!(!debug.contains("very-secret-key"), "{debug}");
    assert!(debug.contains("sluice-backups"), "{debug}");
    let store = open(kind, Some("base"));
    let debug = format!("{store:?}");
    assert!(!debug.contains("very-secret-key"), "{debug}");
    assert_eq!(store.base_path(), Some("base"));
}

#[test]
fn s3_encryption_is_checked_and_never_prints_the_customer_key() {
    let key = "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=";
    let with = |encryption: S3Encryption| {
        let mut kind = s3(Some("http://localhost:9000"), true);
        if let StoreKind::S3 {
            server_side_encryption,
            ..
        } = &mut kind
        {
            *server_side_encryption = encryption;
        }
        kind
    };
    let kind = with(S3Encryption::Customer {
        key_base64: key.to_string(),
    });
    let debug = format!("{kind:?}");
    assert!(!debug.contains(key), "{debug}");
    assert!(debug.contains("Customer"), "{debug}");
    let store = open(kind, None);
    let debug = format!("{store:?}");
    assert!(!debug.contains(key), "{debug}");
    assert!(
        store.description().contains("sse=SSE-C"),
        "{}",
        store.description()
    );
    let store = open(
        with(S3Encryption::Kms {
            key_id: "alias/sluice".to_string(),
            bucket_key: Some(true),
        }),
        None,
    );
    assert!(
        store.description().contains("sse=SSE-KMS"),
        "{}",
        store.description()
    );

    // (encryption, reason fragment, text that must not appear)
    let cases = [
        (
            S3Encryption::Kms {
                key_id: " ".to_string(),
                bucket_key: None,
            },
            "KMS key id of SSE-KMS is empty",
            None,
        ),
        (
            S3Encryption::DsseKms {
                key_id: String::new(),
            },
            "KMS key id of DSSE-KMS is empty",
            None,
        ),
        (
            S3Encryption::Customer {
                key_base64: String::new(),
            },
            "decodes to 0 bytes",
            None,
        ),
        (
            // Base64 of 16 bytes: an AES-128 key.
            S3Encryption::Customer {
                key_base64: "eHh4eHh4eHh4eHh4eHh4eA==".to_string(),
            },
            "decodes to 16 bytes",
            Some("eHh4eHh4eHh4eHh4eHh4eA=="),
        ),
        (
            S3Encryption::Customer {
                key_base64: "not-base64!-secret-key".to_string(),
            },
            "is not base64",
            Some("secret-key"),
        ),
    ];
    for (encryption, fragment, hidden) in cases {
        let error = BackupStore::open(BackupStoreOptions::new(with(encryption), None)).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(
                error,
                BackupStoreError::Config {
                    option: "StoreKind::S3.server_side_encryption",
                    ..
                }
            ),
            "{message}"
        );
        assert!(message.contains(fragment), "{message}");
        if let Some(hidden) = hidden {
            assert!(!message.contains(hidden), "{message}");
            assert!(!format!("{error:?}").contains(hidden), "{error:?}");
        }
    }
}

#[test]
fn invalid_options_are_config_errors() {
    let error = BackupStore::open(BackupStoreOptions::new(
        StoreKind::InMemory,
        Some("a/../b".to_string()),
    ))
    .unwrap_err();
    assert!(matches!(error, BackupStoreError::Config { .. }), "{error}");
    let mut kind = s3(None, false);
    if let StoreKind::S3 { bucket, .. } = &mut kind {
        bucket.clear();
    }
    let error = BackupStore::open(BackupStoreOptions::new(kind, None)).unwrap_err();
    assert!(
        matches!(
            error,
            BackupStoreError::Config {
                option: "StoreKind::S3.bucket",
                ..
            }
        ),
        "{error}"
    );
    let error = BackupStore::open(BackupStoreOptions::new(
        s3(Some("localhost:9000"), true),
        None,
    ))
    .unwrap_err();
    assert!(error.to_string().contains("http://"), "{error}");
    assert!(
        error.to_string().contains("option=StoreKind::S3.endpoint"),
        "{error}"
    );
}

/// Every refusal of options names the option to fix, in the store's own
/// terms (its callers may add their configuration key for it).
#[test]
fn config_errors_name_the_option_never_a_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut empty_s3 = s3(None, false);
    if let StoreKind::S3 { bucket, .. } = &mut empty_s3 {
        bucket.clear();
    }
    let mut empty_gcs = gcs(None, None);
    if let StoreKind::Gcs { bucket, .. } = &mut empty_gcs {
        bucket.clear();
    }
    let mut empty_account = azure(None, None, None);
    if let StoreKind::Azure { account, .. } = &mut empty_account {
        account.clear();
    }
    let cases = [
        (
            BackupStoreOptions::new(StoreKind::InMemory, Some("a//b".to_string())),
            "BackupStoreOptions.base_path",
        ),
        (
            BackupStoreOptions {
                api_call_timeout: Duration::ZERO,
                ..BackupStoreOptions::default()
            },
            "BackupStoreOptions.api_call_timeout",
        ),
        (
            BackupStoreOptions {
                connections_concurrent_max: 0,
                ..BackupStoreOptions::default()
            },
            "BackupStoreOptions.connections_concurrent_max",
        ),
        (
            BackupStoreOptions::new(
                StoreKind::Filesystem {
                    root: std::path::PathBuf::new(),
                },
                None,
            ),
            "StoreKind::Filesystem.root",
        ),
        (
            BackupStoreOptions::new(empty_s3, None),
            "StoreKind::S3.bucket",
        ),
        (
            BackupStoreOptions::new(s3(Some("s3.example.com"), false), None),
            "StoreKind::S3.endpoint",
        ),
        (
            BackupStoreOptions::new(empty_gcs, None),
            "StoreKind::Gcs.bucket",
        ),
        (
            BackupStoreOptions::new(
                gcs(Some("http://h"), Some(dir.path().join("missing.json"))),
                None,
            ),
            "StoreKind::Gcs.credentials",
        ),
        (
            BackupStoreOptions::new(empty_account, None),
            "StoreKind::Azure.account",
        ),
        (
            BackupStoreOptions::new(azure(None, None, Some("127.0.0.1:10000")), None),
            "StoreKind::Azure.endpoint",
        ),
    ];
    for (options, expected) in cases {
        let error = BackupStore::open(options).unwrap_err();
        let message = error.to_string();
        match &error {
            BackupStoreError::Config { option, .. } => assert_eq!(*option, expected, "{message}"),
            other => panic!("not a Config error: {other}"),
        }
        assert!(message.contains(&format!("option={expected}")), "{message}");
        assert!(!message.contains("broker."), "{message}");
    }
}

#[tokio::test]
async fn unreachable_s3_endpoint_is_reported_quickly() {
    // Nothing listens on port 1.
    let store = open(s3(Some("http://127.0.0.1:1"), true), None);
    let started = Instant::now();
    let error = store.check_reachable().await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, BackupStoreError::Unreachable { .. }),
        "{message}"
    );
    assert!(message.contains("sluice-backups"), "{message}");
    assert!(!message.contains("very-secret-key"), "{message}");
    assert!(
        message.contains("cannot connect to http://127.0.0.1:1 (StoreKind::S3.endpoint)"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("{message}");
}

#[tokio::test]
async fn reachable_in_memory() {
    open(StoreKind::InMemory, Some("x"))
        .check_reachable()
        .await
        .unwrap();
}

/// A store whose multipart parts never answer while `hang` is set.
#[derive(Debug)]
struct HangingParts {
    inner: Arc<dyn object_store::ObjectStore>,
    hang: Arc<AtomicBool>,
    /// Multipart uploads aborted.
    aborted: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Display for HangingParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HangingParts({})", self.inner)
    }
}

#[derive(Debug)]
struct HangingUpload {
    inner: Box<dyn object_store::MultipartUpload>,
    hang: Arc<AtomicBool>,
    aborted: Arc<std::sync::atomic::AtomicUsize>,
}

#[deny(clippy::missing_trait_methods)]
impl object_store::MultipartUpload for HangingUpload {
    fn put_part(&mut self, data: object_store::PutPayload) -> object_store::UploadPart {
        if self.hang.load(Ordering::SeqCst) {
            // Holds the payload (and so its buffer) until the part is dropped.
            return Box::pin(async move {
                let _payload = data;
                std::future::pending().await
            });
        }
        self.inner.put_part(data)
    }

    fn complete<'a, 'b>(&'a mut self) -> conformance::StoreFuture<'b, object_store::PutResult>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.complete()
    }

    fn abort<'a, 'b>(&'a mut self) -> conformance::StoreFuture<'b, ()>
    where
        'a: 'b,
        Self: 'b,
    {
        self.aborted.fetch_add(1, Ordering::SeqCst);
        self.inner.abort()
    }
}

impl conformance::Intercept for HangingParts {
    fn inner(&self) -> &Arc<dyn object_store::ObjectStore> {
        &self.inner
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> conformance::StoreFuture<'a, Box<dyn object_store::MultipartUpload>> {
        Box::pin(async move {
            let inner = self.inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(HangingUpload {
                inner,
                hang: self.hang.clone(),
                aborted: self.aborted.clone(),
            }) as Box<dyn object_store::MultipartUpload>)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_on_a_hanging_store_gives_its_buffers_back() {
    let root = tempfile::tempdir().unwrap();
    let hang = Arc::new(AtomicBool::new(true));
    let local: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root.path()).unwrap());
    let mut store = BackupStore::from_object_store(
        Arc::new(conformance::Intercepted(HangingParts {
            inner: local,
            hang: hang.clone(),
            aborted: Arc::default(),
        })),
        None,
    );
    // The file system keeps nothing it is given: send the buffers themselves, as a broker on a
    // real store does, so that a leaked buffer would show.
    store.copies_payloads = false;
    let count = store.buffers.count();

    let dir = tempfile::tempdir().unwrap();
    let len = (count + 3) * MULTIPART_PART_BYTES;
    let path = dir.path().join("big.log");
    std::fs::write(&path, vec![7u8; len]).unwrap();
    let id = BackupIdentifier::new(1, 1, 0);
    let upload = store.upload_file(&id, FileKind::Segment, "big.log", &path, len as u64, None);
    // The deadline a broker puts on every upload ends it.
    let abandoned = tokio::time::timeout(Duration::from_millis(500), upload).await;
    assert!(abandoned.is_err(), "parts hang: the upload cannot finish");

    // Every buffer comes back once the abandoned parts are dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.buffers.available() < count {
        assert!(
            Instant::now() < deadline,
            "buffers leaked: {} of {count} available",
            store.buffers.available()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the next upload has them all.
    hang.store(false, Ordering::SeqCst);
    let entry = store
        .upload_file(&id, FileKind::Segment, "big.log", &path, len as u64, None)
        .await
        .unwrap();
    assert_eq!(entry.size_bytes, len as u64);
    assert_eq!(store.buffers.available(), count);
}

/// Every file under `root`, as paths relative to it.
fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found
}

/// An upload abandoned without an error of its own (its future dropped: a deadline, a sibling
/// upload's failure, a cancelled backup) aborts its multipart upload: no parts stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_aborts_its_multipart_upload() {
    let root = tempfile::tempdir().unwrap();
    let aborted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let local: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root.path()).unwrap());
    let store = BackupStore::from_object_store(
        Arc::new(conformance::Intercepted(HangingParts {
            inner: local,
            hang: Arc::new(AtomicBool::new(true)),
            aborted: aborted.clone(),
        })),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let len = 3 * MULTIPART_PART_BYTES;
    let path = dir.path().join("big.log");
    std::fs::write(&path, vec![7u8; len]).unwrap();
    let id = BackupIdentifier::new(1, 1, 0);
    let upload = store.upload_file(&id, FileKind::Segment, "big.log", &path, len as u64, None);
    // The deadline a broker puts on every upload.
    let abandoned = tokio::time::timeout(Duration::from_millis(300), upload).await;
    assert!(abandoned.is_err(), "parts hang: the upload cannot finish");

    let deadline = Instant::now() + Duration::from_secs(5);
    while aborted.load(Ordering::SeqCst) == 0 || !files_under(root.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the abandoned multipart upload was not aborted: aborts={} files={:?}",
            aborted.load(Ordering::SeqCst),
            files_under(root.path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(aborted.load(Ordering::SeqCst), 1);
}

/// Counts the deletions that reach a store, bulk and single.
#[derive(Debug, Default)]
struct DeleteCounts {
    bulk_calls: std::sync::atomic::AtomicUsize,
    single_calls: std::sync::atomic::AtomicUsize,
}

/// The store a wrapper wraps: counts how deletions reach it.
#[derive(Debug)]
struct CountingDeletes {
    inner: Arc<dyn object_store::ObjectStore>,
    counts: Arc<DeleteCounts>,
}

impl std::fmt::Display for CountingDeletes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CountingDeletes({})", self.inner)
    }
}

impl conformance::Intercept for CountingDeletes {
    fn inner(&self) -> &Arc<dyn object_store::ObjectStore> {
        &self.inner
    }

    fn delete<'a>(
        &'a self,
        location: &'a object_store::path::Path,
    ) -> conformance::StoreFuture<'a, ()> {
        self.counts.single_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(location)
    }

    fn delete_stream<'a>(
        &'a self,
        locations: futures::stream::BoxStream<'a, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'a, object_store::Result<object_store::path::Path>> {
        self.counts.bulk_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }
}

/// A wrapper that changes nothing.
#[derive(Debug)]
struct Passthrough {
    inner: Arc<dyn object_store::ObjectStore>,
}

impl std::fmt::Display for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passthrough({})", self.inner)
    }
}

impl conformance::Intercept for Passthrough {
    fn inner(&self) -> &Arc<dyn object_store::ObjectStore> {
        &self.inner
    }
}

/// A wrapped S3 or Azure store keeps its bulk deletes: the wrapper forwards
/// `delete_stream` instead of turning it into one `delete` per object.
#[tokio::test]
async fn a_wrapper_forwards_bulk_deletes_to_the_wrapped_store() {
    let counts = Arc::new(DeleteCounts::default());
    let wrapped: Arc<dyn object_store::ObjectStore> =
        Arc::new(conformance::Intercepted(CountingDeletes {
            inner: Arc::new(object_store::memory::InMemory::new()),
            counts: counts.clone(),
        }));
    let store = BackupStore::from_object_store(
        Arc::new(conformance::Intercepted(Passthrough { inner: wrapped })),
        None,
    );
    let id = BackupIdentifier::new(1, 5, 0);
    let descriptor = BackupDescriptor {
        snapshot_id: Some("00000000000000000010".to_string()),
        checkpoint_position: 10,
        number_of_partitions: 1,
        broker_version: "test".to_string(),
        request: None,
    };
    store
        .write_manifest(&Manifest::in_progress(id, descriptor))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.log", "b.log", "c.log"] {
        let local = dir.path().join(name);
        std::fs::write(&local, name).unwrap();
        store
            .upload_file(&id, FileKind::Segment, name, &local, 5, None)
            .await
            .unwrap();
    }

    assert_eq!(store.delete_backup(&id).await.unwrap(), 4);
    assert_eq!(
        counts.bulk_calls.load(Ordering::SeqCst),
        1,
        "the data objects go in one bulk deletion"
    );
    assert_eq!(
        counts.single_calls.load(Ordering::SeqCst),
        1,
        "only the manifest is deleted on its own"
    );
}

/// A server that accepts connections and never answers; counts them.
async fn silent_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    (address, accepted)
}

/// The remote backends at `address`, each with credentials that need no
/// request of their own.
fn remote_kinds(address: &str) -> Vec<StoreKind> {
    vec![
        s3(Some(address), true),
        gcs(Some(address), None),
        azure(
            Some("a2V5"),
            None,
            Some(&format!("{address}/devstoreaccount1")),
        ),
    ]
}

/// `api_call_timeout` and `connections_concurrent_max` are options of every
/// remote store, not of S3 alone: a request that gets no answer ends after
/// the timeout, and no more requests than the limit are in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_remote_backend_honours_the_request_timeout_and_limit() {
    let (address, _) = silent_server().await;
    for kind in remote_kinds(&address) {
        let name = format!("{kind:?}");
        let store = BackupStore::open(BackupStoreOptions {
            api_call_timeout: Duration::from_millis(300),
            ..BackupStoreOptions::new(kind, None)
        })
        .unwrap();
        let started = Instant::now();
        // Without the timeout this waits for the default 30 s per attempt.
        let error = tokio::time::timeout(Duration::from_secs(20), store.check_reachable())
            .await
            .unwrap_or_else(|_| panic!("{name}: the request timeout is not applied"))
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: took {:?}: {error}",
            started.elapsed()
        );
    }

    for backend in 0..remote_kinds(&address).len() {
        let (address, accepted) = silent_server().await;
        let kind = remote_kinds(&address).swap_remove(backend);
        let name = format!("{kind:?}");
        let store = BackupStore::open(BackupStoreOptions {
            api_call_timeout: Duration::from_secs(30),
            connections_concurrent_max: 2,
            ..BackupStoreOptions::new(kind, None)
        })
        .unwrap();
        let requests: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let path = object_store::path::Path::from(format!("object-{i}"));
                    store.object_store().head(&path).await
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Time for the other four to connect if nothing held them back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "{name}: requests in flight beyond connections_concurrent_max"
        );
        for request in requests {
            request.abort();
        }
    }
}

/// An encrypted and a plain backup in one store: both written, read and downloaded by a store
/// with keys; the encrypted one refused by a store without them, naming the key; an encrypted
/// manifest edited (its checksum dropped, as an attacker would) refused by its MAC.
#[tokio::test]
async fn encrypted_and_plain_backups_share_a_store() {
    use object_store::ObjectStore as _;
    let shared = Arc::new(object_store::memory::InMemory::new());
    let encryption = EncryptionOptions {
        cluster_name: "c".to_string(),
        primary: Some("k1".to_string()),
        keys: vec![KeyEncryptionKey::from_bytes("k1", [7; 32])],
    };
    let keyed = BackupStore::from_object_store(shared.clone(), None).with_encryption(&encryption);
    let plain = BackupStore::from_object_store(shared.clone(), None);
    let dir = tempfile::tempdir().unwrap();
    let data = b"{\"deposit\":{\"account\":\"alice\",\"amount\":100}}\n".repeat(3000);
    let local = dir.path().join("00000000000000000001.log");
    std::fs::write(&local, &data).unwrap();
    let descriptor = BackupDescriptor {
        snapshot_id: None,
        checkpoint_position: 1,
        number_of_partitions: 1,
        broker_version: "test".to_string(),
        request: None,
    };
    let upload = |store: &BackupStore, keys: Option<Arc<PoolKeys>>| {
        let store = store.clone();
        let local = local.clone();
        async move {
            let index = store.load_pool_index(1).await.unwrap();
            store
                .upload_pooled(
                    PooledUpload {
                        partition_id: 1,
                        kind: FileKind::Segment,
                        name: "00000000000000000001.log",
                        local_path: &local,
                        length: std::fs::metadata(&local).unwrap().len(),
                        chunking: Chunking::Fixed,
                        previous: None,
                        keys: keys.as_ref(),
                    },
                    &index,
                    None,
                )
                .await
                .unwrap()
        }
    };
    let keys = keyed
        .partition_keys(&[])
        .await
        .unwrap()
        .expect("a primary key");
    let secret = upload(&keyed, Some(keys.keys.clone())).await;
    let encrypted_id = BackupIdentifier::new(1, 2, 0);
    let encrypted = Manifest::in_progress(encrypted_id, descriptor.clone())
        .encrypted(keys.encryption.clone())
        .complete(vec![secret.entry.clone()]);
    keyed.write_manifest(&encrypted).await.unwrap();
    let open = upload(&plain, None).await;
    let plain_id = BackupIdentifier::new(1, 1, 0);
    let plain_manifest =
        Manifest::in_progress(plain_id, descriptor).complete(vec![open.entry.clone()]);
    plain.write_manifest(&plain_manifest).await.unwrap();
    assert_ne!(
        secret.entry.pieces, open.entry.pieces,
        "encrypted pieces have keyed names"
    );

    for (id, manifest) in [(encrypted_id, &encrypted), (plain_id, &plain_manifest)] {
        let read = keyed.read_manifest(&id).await.unwrap().unwrap();
        assert_eq!(&read, manifest);
        let destination = dir.path().join(format!("restored-{}", id.checkpoint_id));
        keyed
            .download_file(&read, &read.files[0], &destination)
            .await
            .unwrap();
        assert!(std::fs::read(&destination).unwrap() == data);
    }
    assert!(plain.read_manifest(&plain_id).await.unwrap().is_some());
    let refused = plain
        .read_manifest(&encrypted_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("key id k1, which is not configured"),
        "{refused}"
    );

    let path = keyed.manifest_path(&encrypted_id);
    let stored = shared.get(&path).await.unwrap().bytes().await.unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    value["files"][0]["sizeBytes"] = serde_json::json!(1);
    value.as_object_mut().unwrap().remove("manifestChecksum");
    shared
        .put(&path, serde_json::to_vec(&value).unwrap().into())
        .await
        .unwrap();
    let refused = keyed
        .read_manifest(&encrypted_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("does not verify under key id k1"),
        "{refused}"
    );
}
