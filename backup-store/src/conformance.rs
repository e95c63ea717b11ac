//! A conformance suite for [`BackupStore`], run by this crate against the
//! in-memory and file-system stores and usable by other crates against a real
//! S3 server:
//!
//! ```no_run
//! # async fn example(store: sluice_backup_store::BackupStore) {
//! sluice_backup_store::conformance::conformance(store).await;
//! # }
//! ```
//!
//! The suite panics on the first failed check. It uses partitions 1 to 8 and 30
//! below the store's base path, which must not hold backups of these
//! partitions (use a fresh base path per run); it deletes everything it wrote.
//! It also writes below `<base path>/conformance-nested/`.
//!
//! Besides the plain store it checks, on the same object store, zstd
//! compression (through [`BackupStore::with_compression`]), conditional
//! manifest writes (through a second [`BackupStore`] that plays another
//! writer), and that an upload to a store that truncates what it is given is
//! detected (through a truncating wrapper).
//!
//! Wrappers for fault injection (here, in the broker's and the end-to-end
//! tests) implement [`Intercept`]: only the calls they change, while
//! [`Intercepted`] forwards every other call to the wrapped store.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::Path as LocalPath;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::RngCore;

use crate::codec::ZSTD_LEVEL;
use crate::manifest::{
    format_checksum, MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_COMPRESSED, ZSTD_COMPRESSION,
};
use crate::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, BackupStoreError, Compression,
    FileEntry, FileKind, Manifest, Throttle,
};

const MIB: usize = 1024 * 1024;

/// The partitions the suite uses.
const PARTITIONS: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 30];

/// The folder below the base path used to check base-path isolation.
const NESTED: &str = "conformance-nested";

/// Runs every check against `store`; panics on the first failure.
pub async fn conformance(store: BackupStore) {
    let scratch = tempfile::tempdir().expect("create a scratch directory");
    let dir = scratch.path();
    for partition in PARTITIONS {
        let checkpoints = store.list_checkpoints(partition).await.unwrap();
        assert!(
            checkpoints.is_empty(),
            "the conformance suite needs a store without backups of partition {partition} \
             (found checkpoints {checkpoints:?}); use a fresh base path"
        );
    }

    manifest_round_trip(&store).await;
    absent_manifest(&store).await;
    upload_download_round_trip(&store, dir).await;
    prefix_upload(&store, dir).await;
    short_file(&store, dir).await;
    invalid_file_names(&store, dir).await;
    corrupt_detection(&store, dir).await;
    throttled_upload(&store, dir).await;
    listing(&store).await;
    delete_backup_resumably(&store, dir).await;
    delete_more_than_one_batch(&store).await;
    base_path_respected(&store, dir).await;
    conditional_manifest_writes(&store).await;
    compression_round_trip(&store, dir).await;
    compressed_corruption_detected(&store, dir).await;
    truncating_store_detected(&store, dir).await;

    for partition in PARTITIONS {
        assert_eq!(
            store.list_checkpoints(partition).await.unwrap(),
            Vec::<u64>::new(),
            "the suite must leave partition {partition} empty"
        );
    }
}

/// A manifest of backup `id` with no files: what a download of a per-file entry reads it by.
fn plain(id: BackupIdentifier) -> Manifest {
    Manifest::in_progress(id, descriptor(1))
}

fn descriptor(position: u64) -> BackupDescriptor {
    BackupDescriptor {
        snapshot_id: Some(format!("{position:020}")),
        checkpoint_position: position,
        number_of_partitions: 3,
        broker_version: "0.1.0-conformance".to_string(),
        request: None,
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

async fn write_local(dir: &LocalPath, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    tokio::fs::write(&path, data)
        .await
        .expect("write a local file");
    path
}

async fn read_raw(store: &BackupStore, path: &Path) -> Bytes {
    store
        .object_store()
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .bytes()
        .await
        .unwrap()
}

async fn raw_listing(store: &BackupStore, prefix: &Path) -> Vec<String> {
    let mut paths: Vec<String> = store
        .object_store()
        .list(Some(prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    paths
}

async fn manifest_round_trip(store: &BackupStore) {
    let id = BackupIdentifier::new(1, 7, 0);
    let manifest = Manifest::in_progress(id, descriptor(100));
    assert_eq!(manifest.status, BackupStatus::InProgress);
    assert_eq!(manifest.format_version, 1);
    store.write_manifest(&manifest).await.unwrap();
    assert_eq!(
        store.read_manifest(&id).await.unwrap(),
        Some(manifest.clone())
    );

    let files = vec![
        FileEntry {
            name: "1.log".to_string(),
            kind: FileKind::Segment,
            size_bytes: 10,
            checksum: format_checksum(0xdead_beef),
            compression: None,
            stored_bytes: 10,
            pieces: None,
        },
        FileEntry {
            name: "CURRENT".to_string(),
            kind: FileKind::Snapshot,
            size_bytes: 0,
            checksum: format_checksum(0),
            compression: None,
            stored_bytes: 0,
            pieces: None,
        },
    ];
    let completed = manifest.clone().complete(files);
    assert_eq!(completed.status, BackupStatus::Completed);
    assert_eq!(completed.format_version, MANIFEST_FORMAT_VERSION);
    store.write_manifest(&completed).await.unwrap();
    assert_eq!(
        store.read_manifest(&id).await.unwrap(),
        Some(completed.clone())
    );
    // Writing the same final manifest again is accepted (a retried write).
    store.write_manifest(&completed).await.unwrap();

    // Another backup of the same checkpoint fails.
    let failed_id = BackupIdentifier::new(1, 7, 2);
    let failed_first = Manifest::in_progress(failed_id, descriptor(100));
    store.write_manifest(&failed_first).await.unwrap();
    let failed = failed_first.fail("disk on fire");
    store.write_manifest(&failed).await.unwrap();
    let read = store.read_manifest(&failed_id).await.unwrap().unwrap();
    assert_eq!(read.status, BackupStatus::Failed);
    assert_eq!(read.failure_reason.as_deref(), Some("disk on fire"));

    // The JSON format is part of the contract.
    let json: serde_json::Value =
        serde_json::from_slice(&read_raw(store, &store.manifest_path(&failed_id)).await).unwrap();
    assert_eq!(json["formatVersion"], 1);
    assert_eq!(json["id"]["partitionId"], 1);
    assert_eq!(json["id"]["checkpointId"], 7);
    assert_eq!(json["id"]["nodeId"], 2);
    assert_eq!(json["status"], "FAILED");
    assert_eq!(json["failureReason"], "disk on fire");
    assert_eq!(json["descriptor"]["checkpointPosition"], 100);
    let json: serde_json::Value =
        serde_json::from_slice(&read_raw(store, &store.manifest_path(&id)).await).unwrap();
    assert_eq!(json["files"][0]["sizeBytes"], 10);
    assert_eq!(json["files"][0]["storedBytes"], 10);
    assert!(json["files"][0].get("compression").is_none(), "{json}");

    // Invariants are asserted before writing; nothing is written.
    let mut bad = completed.clone();
    bad.failure_reason = Some("oops".to_string());
    let error = store.write_manifest(&bad).await.unwrap_err();
    assert!(
        matches!(error, BackupStoreError::InvalidManifest { .. }),
        "{error}"
    );
    let mut bad = failed.clone();
    bad.failure_reason = None;
    let error = store.write_manifest(&bad).await.unwrap_err();
    assert!(
        matches!(error, BackupStoreError::InvalidManifest { .. }),
        "{error}"
    );
    let mut bad = completed.clone();
    bad.files[0].name = "../escape".to_string();
    assert!(store.write_manifest(&bad).await.is_err());
    let mut bad = completed.clone();
    bad.files[0].stored_bytes = 3;
    let error = store.write_manifest(&bad).await.unwrap_err();
    assert!(error.to_string().contains("storedBytes=3"), "{error}");
    let mut bad = completed.clone();
    bad.files[0].compression = Some("lz4".to_string());
    let error = store.write_manifest(&bad).await.unwrap_err();
    assert!(error.to_string().contains("lz4"), "{error}");
    assert_eq!(
        store.read_manifest(&id).await.unwrap().unwrap().status,
        BackupStatus::Completed
    );
    // A final status is final: writing another manifest over it is refused.
    let error = store
        .write_manifest(&manifest.clone().fail("too late"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackupStoreError::BackupExists { .. }),
        "{error}"
    );
    assert_eq!(
        store.read_manifest(&id).await.unwrap(),
        Some(completed.clone())
    );

    // Corrupt JSON: an error naming the object path.
    let path = store.manifest_path(&id);
    store
        .object_store()
        .put(&path, PutPayload::from_static(b"{ not json"))
        .await
        .unwrap();
    let error = store.read_manifest(&id).await.unwrap_err();
    assert!(
        matches!(&error, BackupStoreError::InvalidManifest { path: p, .. } if *p == path.to_string()),
        "{error}"
    );
    assert!(error.to_string().contains(path.as_ref()), "{error}");

    // A manifest at the location of another backup is rejected.
    let other = BackupIdentifier::new(1, 7, 1);
    let json = serde_json::to_vec(&completed).unwrap();
    store
        .object_store()
        .put(&store.manifest_path(&other), PutPayload::from(json))
        .await
        .unwrap();
    let error = store.read_manifest(&other).await.unwrap_err();
    assert!(
        matches!(error, BackupStoreError::InvalidManifest { .. }),
        "{error}"
    );

    assert_eq!(store.delete_backup(&id).await.unwrap(), 1);
    assert_eq!(store.delete_backup(&other).await.unwrap(), 1);
    assert_eq!(store.delete_backup(&failed_id).await.unwrap(), 1);
    assert_eq!(store.read_manifest(&id).await.unwrap(), None);

    // A manifest of the format before compression existed (no storedBytes)
    // still reads: uncompressed, stored_bytes = size_bytes.
    let old = serde_json::json!({
        "formatVersion": 1,
        "id": {"partitionId": 1, "checkpointId": 7, "nodeId": 0},
        "descriptor": {
            "snapshotId": null,
            "checkpointPosition": 100,
            "numberOfPartitions": 3,
            "brokerVersion": "0.1.0"
        },
        "status": "COMPLETED",
        "files": [{"name": "1.log", "kind": "SEGMENT", "sizeBytes": 10, "checksum": "crc32c:deadbeef"}],
        "failureReason": null,
        "createdAt": "2024-05-01T12:00:00.000Z",
        "lastUpdatedAt": "2024-05-01T12:00:01.000Z"
    });
    store
        .object_store()
        .put(
            &store.manifest_path(&id),
            PutPayload::from(serde_json::to_vec(&old).unwrap()),
        )
        .await
        .unwrap();
    let read = store.read_manifest(&id).await.unwrap().unwrap();
    assert_eq!(read.files[0].compression, None);
    assert_eq!(read.files[0].stored_bytes, 10);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 1);
}

async fn absent_manifest(store: &BackupStore) {
    let id = BackupIdentifier::new(1, 999, 3);
    assert_eq!(store.read_manifest(&id).await.unwrap(), None);
    assert_eq!(store.find_manifests(1, 999).await.unwrap(), vec![]);
    assert_eq!(store.list_manifests(1).await.unwrap(), vec![]);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 0);
}

async fn upload_download_round_trip(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 1, 0);
    let cases: [(&str, FileKind, usize); 4] = [
        ("big.log", FileKind::Segment, 20 * MIB), // multipart
        ("small-file_1.sst", FileKind::Snapshot, 1000),
        ("EMPTY", FileKind::Snapshot, 0),
        ("exact.log", FileKind::Segment, 8 * MIB), // largest single put
    ];
    let mut entries = Vec::new();
    for (name, kind, len) in cases {
        let data = random_bytes(len);
        let local = write_local(dir, &format!("up-{name}"), &data).await;
        let entry = store
            .upload_file(&id, kind, name, &local, len as u64, None)
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
        assert_eq!(
            entry,
            FileEntry {
                name: name.to_string(),
                kind,
                size_bytes: len as u64,
                checksum: format!("crc32c:{:08x}", crc32c::crc32c(&data)),
                compression: None,
                stored_bytes: len as u64,
                pieces: None,
            }
        );
        let path = store.file_path(&id, kind, name).unwrap();
        let meta = store.object_store().head(&path).await.unwrap();
        assert_eq!(meta.size, len as u64, "object size of {name}");

        let destination = dir.join("down").join(name);
        store
            .download_file(&plain(id), &entry, &destination)
            .await
            .unwrap_or_else(|e| panic!("download {name}: {e}"));
        let downloaded = tokio::fs::read(&destination).await.unwrap();
        assert!(downloaded == data, "downloaded {name} differs");
        // Downloading again over an existing file is refused and leaves it as it was.
        let error = store
            .download_file(&plain(id), &entry, &destination)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, BackupStoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{error}"
        );
        assert!(tokio::fs::read(&destination).await.unwrap() == data);
        entries.push(entry);
    }
    let prefix = store.backup_prefix(&id);
    let mut expected: Vec<String> = vec![
        format!("{prefix}/segments/big.log"),
        format!("{prefix}/snapshot/small-file_1.sst"),
        format!("{prefix}/snapshot/EMPTY"),
        format!("{prefix}/segments/exact.log"),
    ];
    expected.sort();
    assert_eq!(raw_listing(store, &prefix).await, expected);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 4);
}

async fn prefix_upload(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 2, 0);
    for (name, file_len, length) in [
        ("prefix-big.log", 20 * MIB, 9 * MIB + 3),
        ("prefix-small.log", 5000, 1000),
        ("prefix-none.log", 10, 0),
    ] {
        let data = random_bytes(file_len);
        let local = write_local(dir, name, &data).await;
        let entry = store
            .upload_file(&id, FileKind::Segment, name, &local, length as u64, None)
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
        assert_eq!(entry.size_bytes, length as u64);
        assert_eq!(
            entry.checksum,
            format_checksum(crc32c::crc32c(&data[..length]))
        );
        let destination = dir.join(format!("down-{name}"));
        store
            .download_file(&plain(id), &entry, &destination)
            .await
            .unwrap();
        let downloaded = tokio::fs::read(&destination).await.unwrap();
        assert!(downloaded == data[..length], "prefix of {name} differs");
    }
    assert_eq!(store.delete_backup(&id).await.unwrap(), 3);
}

async fn short_file(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 3, 0);
    let local = write_local(dir, "short.log", &random_bytes(1000)).await;
    let error = store
        .upload_file(&id, FileKind::Segment, "short.log", &local, 1001, None)
        .await
        .unwrap_err();
    match &error {
        BackupStoreError::ShortFile {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, &local);
            assert_eq!((*expected, *actual), (1001, 1000));
        }
        other => panic!("expected ShortFile, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&local.display().to_string())
            && message.contains("1001")
            && message.contains("1000"),
        "{message}"
    );
    let path = store
        .file_path(&id, FileKind::Segment, "short.log")
        .unwrap();
    assert!(matches!(
        store.object_store().head(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));

    let missing = dir.join("does-not-exist.log");
    let error = store
        .upload_file(&id, FileKind::Segment, "x.log", &missing, 1, None)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupStoreError::Io { .. }), "{error}");
    assert!(error.to_string().contains("does-not-exist.log"), "{error}");
}

async fn invalid_file_names(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 4, 0);
    let local = write_local(dir, "names.log", b"abc").await;
    for name in ["", ".", "..", "../x", "a/b", "a b", "snap\u{e9}", "x\\y"] {
        let error = store
            .upload_file(&id, FileKind::Snapshot, name, &local, 3, None)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BackupStoreError::InvalidFileName { .. }),
            "name {name:?}: {error}"
        );
    }
    assert_eq!(store.list_checkpoints(2).await.unwrap(), Vec::<u64>::new());
}

async fn corrupt_detection(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 5, 0);
    let data = random_bytes(4096);
    let local = write_local(dir, "victim.sst", &data).await;
    let entry = store
        .upload_file(&id, FileKind::Snapshot, "victim.sst", &local, 4096, None)
        .await
        .unwrap();
    let path = store
        .file_path(&id, FileKind::Snapshot, "victim.sst")
        .unwrap();
    let destination = dir.join("restored").join("victim.sst");

    let mut flipped = data.clone();
    flipped[1234] ^= 0x01;
    for (what, replacement) in [
        ("same size, other bytes", flipped),
        ("shorter", data[..4000].to_vec()),
        ("longer", [data.as_slice(), b"tail"].concat()),
    ] {
        store
            .object_store()
            .put(&path, PutPayload::from(replacement))
            .await
            .unwrap();
        let error = store
            .download_file(&plain(id), &entry, &destination)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, BackupStoreError::Corrupt { path: p, .. } if *p == path.to_string()),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("take a new backup"), "{error}");
        assert!(
            !destination.exists(),
            "{what}: the partial download must be removed"
        );
    }

    // A wrong checksum in the entry is detected as well.
    store
        .object_store()
        .put(&path, PutPayload::from(data.clone()))
        .await
        .unwrap();
    let mut wrong = entry.clone();
    wrong.checksum = format_checksum(crc32c::crc32c(&data) ^ 1);
    let error = store
        .download_file(&plain(id), &wrong, &destination)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupStoreError::Corrupt { .. }), "{error}");
    assert!(!destination.exists());
    store
        .download_file(&plain(id), &entry, &destination)
        .await
        .unwrap();
    assert_eq!(tokio::fs::read(&destination).await.unwrap(), data);

    // A missing object.
    store.object_store().delete(&path).await.unwrap();
    let other_destination = dir.join("restored").join("missing.sst");
    let error = store
        .download_file(&plain(id), &entry, &other_destination)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BackupStoreError::MissingObject { path: p } if *p == path.to_string()),
        "{error}"
    );
    assert!(error.is_not_found());
    assert!(!other_destination.exists());
    assert_eq!(store.delete_backup(&id).await.unwrap(), 0);
}

async fn throttled_upload(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(2, 6, 0);
    let data = random_bytes(2 * MIB);
    let local = write_local(dir, "throttled.log", &data).await;
    let throttle = Throttle::new(8 * MIB as u64);
    let started = std::time::Instant::now();
    let entry = store
        .upload_file(
            &id,
            FileKind::Segment,
            "throttled.log",
            &local,
            data.len() as u64,
            Some(&throttle),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed.as_secs_f64() >= 0.2,
        "2 MiB at 8 MiB/s took only {elapsed:?}"
    );
    assert_eq!(entry.checksum, format_checksum(crc32c::crc32c(&data)));
    assert_eq!(store.delete_backup(&id).await.unwrap(), 1);
}

async fn listing(store: &BackupStore) {
    // Partition 3: unordered and large checkpoint ids, several nodes, and a
    // checkpoint with data but no manifest.
    let mut written = Vec::new();
    for (checkpoint, node) in [
        (100, 0),
        (5, 0),
        (10, 2),
        (10, 0),
        (u64::MAX, 0),
        (10, 1),
        (2, 0),
    ] {
        let manifest = Manifest::in_progress(
            BackupIdentifier::new(3, checkpoint, node),
            descriptor(checkpoint / 2),
        );
        store.write_manifest(&manifest).await.unwrap();
        written.push(manifest);
    }
    let orphan = BackupIdentifier::new(3, 7, 0);
    store
        .object_store()
        .put(
            &store
                .file_path(&orphan, FileKind::Segment, "1.log")
                .unwrap(),
            PutPayload::from_static(b"data"),
        )
        .await
        .unwrap();
    // Partition 4: more checkpoints than the listing concurrency.
    for checkpoint in (1..=20u64).rev() {
        let manifest = Manifest::in_progress(
            BackupIdentifier::new(4, checkpoint, 1),
            descriptor(checkpoint),
        )
        .complete(vec![]);
        store.write_manifest(&manifest).await.unwrap();
    }
    // Partition 30 must not be confused with partition 3.
    store
        .write_manifest(&Manifest::in_progress(
            BackupIdentifier::new(30, 11, 0),
            descriptor(1),
        ))
        .await
        .unwrap();

    assert_eq!(
        store.list_checkpoints(3).await.unwrap(),
        vec![2, 5, 7, 10, 100, u64::MAX]
    );
    assert_eq!(
        store.list_checkpoints(4).await.unwrap(),
        (1..=20).collect::<Vec<u64>>()
    );
    assert_eq!(store.list_checkpoints(30).await.unwrap(), vec![11]);
    assert_eq!(store.list_checkpoints(5).await.unwrap(), Vec::<u64>::new());

    let found = store.find_manifests(3, 10).await.unwrap();
    let ids: Vec<u32> = found.iter().map(|m| m.id.node_id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    for manifest in &found {
        assert!(written.contains(manifest));
    }
    assert_eq!(store.find_manifests(3, 7).await.unwrap(), vec![]);
    assert_eq!(store.find_manifests(3, 11).await.unwrap(), vec![]);
    assert_eq!(store.find_manifests(3, u64::MAX).await.unwrap().len(), 1);

    let all = store.list_manifests(3).await.unwrap();
    let ids: Vec<(u64, u32)> = all
        .iter()
        .map(|m| (m.id.checkpoint_id, m.id.node_id))
        .collect();
    assert_eq!(
        ids,
        vec![
            (2, 0),
            (5, 0),
            (10, 0),
            (10, 1),
            (10, 2),
            (100, 0),
            (u64::MAX, 0)
        ]
    );
    for manifest in &all {
        assert!(written.contains(manifest));
    }
    let all = store.list_manifests(4).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.id.checkpoint_id).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u64>>()
    );
    assert!(all.iter().all(|m| m.status == BackupStatus::Completed));

    for manifest in &written {
        assert_eq!(store.delete_backup(&manifest.id).await.unwrap(), 1);
    }
    assert_eq!(store.delete_backup(&orphan).await.unwrap(), 1);
    for checkpoint in 1..=20 {
        store
            .delete_backup(&BackupIdentifier::new(4, checkpoint, 1))
            .await
            .unwrap();
    }
    store
        .delete_backup(&BackupIdentifier::new(30, 11, 0))
        .await
        .unwrap();
}

async fn write_backup(store: &BackupStore, dir: &LocalPath, id: BackupIdentifier) -> Manifest {
    let manifest = Manifest::in_progress(id, descriptor(id.checkpoint_id));
    store.write_manifest(&manifest).await.unwrap();
    let mut files = Vec::new();
    for (kind, name) in [
        (FileKind::Snapshot, "CURRENT"),
        (FileKind::Snapshot, "000001.sst"),
        (FileKind::Segment, "1.log"),
        (FileKind::Segment, "2.log"),
    ] {
        let local = write_local(dir, &format!("backup-{name}"), &random_bytes(100)).await;
        files.push(
            store
                .upload_file(&id, kind, name, &local, 100, None)
                .await
                .unwrap(),
        );
    }
    let manifest = manifest.complete(files);
    store.write_manifest(&manifest).await.unwrap();
    manifest
}

/// A backup of more files than one delete request takes (S3 deletes at most
/// 1,000 keys a request) and one listing page holds (1,000 keys) is deleted
/// whole.
async fn delete_more_than_one_batch(store: &BackupStore) {
    const FILES: usize = 1_100;
    let id = BackupIdentifier::new(5, 10, 0);
    store
        .write_manifest(&Manifest::in_progress(id, descriptor(10)))
        .await
        .unwrap();
    let writes = (0..FILES).map(|i| {
        let path = store
            .file_path(&id, FileKind::Segment, &format!("{i:020}.log"))
            .unwrap();
        async move {
            store
                .object_store()
                .put(&path, PutPayload::from_static(b"segment"))
                .await
                .unwrap_or_else(|e| panic!("put {path}: {e}"));
        }
    });
    futures::stream::iter(writes)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let prefix = store.backup_prefix(&id);
    assert_eq!(raw_listing(store, &prefix).await.len(), FILES + 1);
    assert_eq!(store.delete_backup(&id).await.unwrap(), FILES + 1);
    assert_eq!(raw_listing(store, &prefix).await, Vec::<String>::new());
    assert_eq!(store.read_manifest(&id).await.unwrap(), None);
}

async fn delete_backup_resumably(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(5, 8, 0);
    let neighbour = BackupIdentifier::new(5, 8, 1);
    let other_checkpoint = BackupIdentifier::new(5, 9, 0);
    write_backup(store, dir, id).await;
    let neighbour_manifest = write_backup(store, dir, neighbour).await;
    write_backup(store, dir, other_checkpoint).await;

    let recorder = Arc::new(Intercepted(DeleteRecorder::new(
        store.object_store().clone(),
    )));
    let recording =
        BackupStore::from_object_store(recorder.clone(), store.base_path().map(str::to_string));
    assert_eq!(recording.delete_backup(&id).await.unwrap(), 5);
    let deleted = recorder.deleted();
    assert_eq!(deleted.len(), 5, "{deleted:?}");
    assert_eq!(
        deleted.last(),
        Some(&store.manifest_path(&id)),
        "the manifest must be deleted last: {deleted:?}"
    );
    assert_eq!(
        raw_listing(store, &store.backup_prefix(&id)).await,
        Vec::<String>::new()
    );
    assert_eq!(store.read_manifest(&id).await.unwrap(), None);
    assert_eq!(
        store.find_manifests(5, 8).await.unwrap(),
        vec![neighbour_manifest.clone()]
    );
    assert_eq!(store.list_checkpoints(5).await.unwrap(), vec![8, 9]);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 0);

    // A deletion that fails half-way leaves the backup FAILED (never COMPLETED, never
    // unreachable), and deleting it again finishes the job.
    recorder.fail_data_deletes(true);
    let error = recording.delete_backup(&neighbour).await.unwrap_err();
    assert!(
        matches!(error, BackupStoreError::ObjectStore { .. }),
        "{error}"
    );
    let half_deleted = store.read_manifest(&neighbour).await.unwrap().unwrap();
    assert_eq!(half_deleted.status, BackupStatus::Failed);
    assert!(
        half_deleted
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("being deleted"),
        "{half_deleted:?}"
    );
    assert_eq!(half_deleted.files, neighbour_manifest.files);
    assert_eq!(
        raw_listing(store, &store.backup_prefix(&neighbour))
            .await
            .len(),
        5
    );
    recorder.fail_data_deletes(false);
    assert_eq!(recording.delete_backup(&neighbour).await.unwrap(), 5);
    assert_eq!(store.find_manifests(5, 8).await.unwrap(), vec![]);
    assert_eq!(store.list_checkpoints(5).await.unwrap(), vec![9]);
    assert_eq!(store.delete_backup(&neighbour).await.unwrap(), 0);

    // Data objects whose manifest is gone (left by an older release's half-way deletion) are
    // still found and deleted.
    let orphaned = BackupIdentifier::new(5, 9, 4);
    write_backup(store, dir, orphaned).await;
    store
        .object_store()
        .delete(&store.manifest_path(&orphaned))
        .await
        .unwrap();
    assert_eq!(store.delete_checkpoint(5, 9).await.unwrap(), 4 + 5);
    assert_eq!(store.list_checkpoints(5).await.unwrap(), Vec::<u64>::new());
}

async fn base_path_respected(store: &BackupStore, dir: &LocalPath) {
    let id = BackupIdentifier::new(6, 42, 3);
    let base = store
        .base_path()
        .map(|b| format!("{b}/"))
        .unwrap_or_default();
    let manifest = Manifest::in_progress(id, descriptor(1));
    store.write_manifest(&manifest).await.unwrap();
    let local = write_local(dir, "base.log", b"0123456789").await;
    store
        .upload_file(&id, FileKind::Segment, "1.log", &local, 10, None)
        .await
        .unwrap();
    let expected_backup = format!("{base}00006/00000000000000000042/00003");
    assert_eq!(store.backup_prefix(&id).as_ref(), expected_backup);
    assert_eq!(
        raw_listing(store, &Path::from(format!("{base}00006"))).await,
        vec![
            format!("{expected_backup}/manifest.json"),
            format!("{expected_backup}/segments/1.log"),
        ]
    );

    // A store with a nested base path sees only its own backups.
    let nested_base = format!("{base}{NESTED}");
    let nested =
        BackupStore::from_object_store(store.object_store().clone(), Some(nested_base.clone()));
    assert_eq!(nested.base_path(), Some(nested_base.as_str()));
    assert_eq!(nested.read_manifest(&id).await.unwrap(), None);
    assert_eq!(nested.list_checkpoints(6).await.unwrap(), Vec::<u64>::new());
    let nested_manifest = Manifest::in_progress(id, descriptor(2));
    nested.write_manifest(&nested_manifest).await.unwrap();
    assert_eq!(
        raw_listing(store, &Path::from(nested_base.as_str())).await,
        vec![format!(
            "{nested_base}/00006/00000000000000000042/00003/manifest.json"
        )]
    );
    assert_eq!(
        nested.read_manifest(&id).await.unwrap(),
        Some(nested_manifest)
    );
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(manifest));
    assert_eq!(store.list_checkpoints(6).await.unwrap(), vec![42]);

    assert_eq!(nested.delete_backup(&id).await.unwrap(), 1);
    assert_eq!(store.list_manifests(6).await.unwrap().len(), 1);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 2);
    assert_eq!(
        raw_listing(store, &Path::from(nested_base.as_str())).await,
        Vec::<String>::new()
    );
}

/// Another writer of the same backups: a second store on the same objects,
/// with its own memory of manifest versions.
fn other_writer(store: &BackupStore) -> BackupStore {
    BackupStore::from_object_store(
        store.object_store().clone(),
        store.base_path().map(str::to_string),
    )
}

async fn conditional_manifest_writes(store: &BackupStore) {
    let other = other_writer(store);

    // Only the first IN_PROGRESS manifest of a backup id is created.
    let id = BackupIdentifier::new(7, 1, 0);
    let first = Manifest::in_progress(id, descriptor(10));
    store.write_manifest(&first).await.unwrap();
    let mut second = Manifest::in_progress(id, descriptor(11));
    second.created_at = "2000-01-01T00:00:00.000Z".to_string();
    let error = other.write_manifest(&second).await.unwrap_err();
    assert!(
        matches!(error, BackupStoreError::BackupExists { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message
            .contains("a backup with this id already exists for partition=7 checkpoint=1 node=0"),
        "{message}"
    );
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(first.clone()));
    // A writer that did not create it cannot finish it either.
    let error = other
        .write_manifest(&second.clone().fail("not mine"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackupStoreError::BackupExists { .. }),
        "{error}"
    );
    // The creator may repeat its write (a retry after a lost answer).
    store.write_manifest(&first).await.unwrap();

    // A writer that read the IN_PROGRESS manifest may replace that version
    // only: once the creator completed it, the stale FAILED write is refused.
    let read = other.read_manifest(&id).await.unwrap().unwrap();
    assert_eq!(read, first);
    let completed = first.clone().complete(vec![]);
    store.write_manifest(&completed).await.unwrap();
    let error = other
        .write_manifest(&read.fail("restarted"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackupStoreError::Conflict { .. } | BackupStoreError::BackupExists { .. }
        ),
        "{error}"
    );
    assert_eq!(
        store.read_manifest(&id).await.unwrap(),
        Some(completed.clone())
    );

    // The other way round: the reader fails it first, the creator's COMPLETED
    // is refused and the FAILED manifest stays.
    let id = BackupIdentifier::new(7, 2, 0);
    let first = Manifest::in_progress(id, descriptor(20));
    store.write_manifest(&first).await.unwrap();
    let read = other.read_manifest(&id).await.unwrap().unwrap();
    let failed = read.fail("broker restarted");
    other.write_manifest(&failed).await.unwrap();
    let error = store
        .write_manifest(&first.clone().complete(vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            BackupStoreError::Conflict { stored, .. } if stored == "FAILED"
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("changed by another writer"),
        "{error}"
    );
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(failed));

    // A write that landed although its answer was lost is recognized.
    let id = BackupIdentifier::new(7, 3, 0);
    let first = Manifest::in_progress(id, descriptor(30));
    store.write_manifest(&first).await.unwrap();
    let completed = first.clone().complete(vec![]);
    store
        .object_store()
        .put(
            &store.manifest_path(&id),
            PutPayload::from(serde_json::to_vec_pretty(&completed).unwrap()),
        )
        .await
        .unwrap();
    store.write_manifest(&completed).await.unwrap();
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(completed));

    // A writer whose create answer was lost (here: a fresh store without its
    // version) still finishes its own manifest (same createdAt and descriptor).
    let id = BackupIdentifier::new(7, 5, 0);
    let first = Manifest::in_progress(id, descriptor(50));
    store.write_manifest(&first).await.unwrap();
    let failed = first.fail("upload failed");
    other_writer(store).write_manifest(&failed).await.unwrap();
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(failed));

    // A backup deleted while in progress is not resurrected by its final write.
    let id = BackupIdentifier::new(7, 4, 0);
    let first = Manifest::in_progress(id, descriptor(40));
    store.write_manifest(&first).await.unwrap();
    assert_eq!(other.delete_backup(&id).await.unwrap(), 1);
    let error = store
        .write_manifest(&first.complete(vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BackupStoreError::Conflict { stored, .. } if stored == "absent"),
        "{error}"
    );
    assert_eq!(store.read_manifest(&id).await.unwrap(), None);

    for checkpoint in 1..=5 {
        store
            .delete_backup(&BackupIdentifier::new(7, checkpoint, 0))
            .await
            .unwrap();
    }
    assert_eq!(store.list_checkpoints(7).await.unwrap(), Vec::<u64>::new());
}

/// Text-like data that zstd compresses well.
fn compressible_bytes(len: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(256 * 1024 + 64);
    let mut i = 0u64;
    while block.len() < 256 * 1024 {
        block.extend_from_slice(
            format!(
                "{{\"deposit\":{{\"account\":\"acct-{}\",\"amount\":{}}}}}\n",
                i % 977,
                i * 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    block.iter().copied().cycle().take(len).collect()
}

fn zstd_store(store: &BackupStore) -> BackupStore {
    other_writer(store).with_compression(Compression::Zstd)
}

async fn compression_round_trip(store: &BackupStore, dir: &LocalPath) {
    let zstd = zstd_store(store);
    assert_eq!(zstd.compression(), Compression::Zstd);
    let id = BackupIdentifier::new(8, 1, 0);
    let manifest = Manifest::in_progress(id, descriptor(1));
    zstd.write_manifest(&manifest).await.unwrap();
    // (name, data, uploaded length)
    let text = compressible_bytes(20 * MIB + 5);
    let random = random_bytes(12 * MIB);
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("text.log", text.clone(), text.len()),
        ("random.log", random.clone(), random.len()), // multipart
        ("EMPTY", Vec::new(), 0),
        ("prefix.log", text.clone(), 3 * MIB + 1),
    ];
    let mut entries = Vec::new();
    for (name, data, length) in &cases {
        let local = write_local(dir, &format!("zstd-{name}"), data).await;
        let entry = zstd
            .upload_file(&id, FileKind::Segment, name, &local, *length as u64, None)
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
        assert_eq!(
            entry.compression.as_deref(),
            Some(ZSTD_COMPRESSION),
            "{name}"
        );
        assert_eq!(entry.size_bytes, *length as u64, "{name}");
        assert_eq!(
            entry.checksum,
            format_checksum(crc32c::crc32c(&data[..*length])),
            "{name}: the checksum is of the original bytes"
        );
        let path = store.file_path(&id, FileKind::Segment, name).unwrap();
        let meta = store.object_store().head(&path).await.unwrap();
        assert_eq!(meta.size, entry.stored_bytes, "{name}: stored size");
        let stored = read_raw(store, &path).await;
        assert_eq!(
            &stored[..4],
            &[0x28, 0xb5, 0x2f, 0xfd],
            "{name}: a zstd frame"
        );

        // Downloads follow the entry, whatever the downloading store's setting.
        for (who, downloader) in [("zstd", &zstd), ("plain", store)] {
            let destination = dir.join(format!("zstd-down-{who}")).join(name);
            downloader
                .download_file(&plain(id), &entry, &destination)
                .await
                .unwrap_or_else(|e| panic!("download {name} by the {who} store: {e}"));
            let downloaded = tokio::fs::read(&destination).await.unwrap();
            assert!(downloaded == data[..*length], "{name} differs ({who})");
        }
        entries.push(entry);
    }
    assert!(
        entries[0].stored_bytes * 4 < entries[0].size_bytes,
        "compressible data: {} stored for {} bytes",
        entries[0].stored_bytes,
        entries[0].size_bytes
    );
    assert!(
        entries[2].stored_bytes > 0,
        "an empty file is an empty frame"
    );

    // The manifest records the compression per file, in format version 2.
    let completed = manifest.complete(entries.clone());
    assert_eq!(completed.format_version, MANIFEST_FORMAT_VERSION_COMPRESSED);
    zstd.write_manifest(&completed).await.unwrap();
    assert_eq!(store.read_manifest(&id).await.unwrap(), Some(completed));
    let json: serde_json::Value =
        serde_json::from_slice(&read_raw(store, &store.manifest_path(&id)).await).unwrap();
    assert_eq!(json["formatVersion"], 2);
    assert_eq!(json["files"][0]["compression"], "zstd");
    assert_eq!(json["files"][0]["storedBytes"], entries[0].stored_bytes);

    // A plain store uploads plainly to the same backup.
    let local = write_local(dir, "plain-next-to-zstd.log", b"plain").await;
    let plain = store
        .upload_file(&id, FileKind::Snapshot, "plain", &local, 5, None)
        .await
        .unwrap();
    assert_eq!((plain.compression, plain.stored_bytes), (None, 5));

    // Throttling limits the bytes sent, which are fewer when compressed.
    let throttle = Throttle::new(4 * MIB as u64);
    let local = write_local(dir, "zstd-throttled.log", &text[..8 * MIB]).await;
    let started = std::time::Instant::now();
    let entry = zstd
        .upload_file(
            &id,
            FileKind::Segment,
            "throttled.log",
            &local,
            8 * MIB as u64,
            Some(&throttle),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let floor = entry.stored_bytes as f64 / (4 * MIB) as f64 - 0.15;
    assert!(
        elapsed.as_secs_f64() >= floor,
        "{} bytes at 4 MiB/s took only {elapsed:?}",
        entry.stored_bytes
    );

    assert_eq!(store.delete_backup(&id).await.unwrap(), 7);
}

async fn compressed_corruption_detected(store: &BackupStore, dir: &LocalPath) {
    let zstd = zstd_store(store);
    let id = BackupIdentifier::new(8, 2, 0);
    let data = compressible_bytes(3 * MIB);
    let local = write_local(dir, "zstd-victim.log", &data).await;
    let entry = zstd
        .upload_file(
            &id,
            FileKind::Segment,
            "victim.log",
            &local,
            data.len() as u64,
            None,
        )
        .await
        .unwrap();
    let path = store
        .file_path(&id, FileKind::Segment, "victim.log")
        .unwrap();
    let original = read_raw(store, &path).await.to_vec();
    let destination = dir.join("zstd-restored").join("victim.log");

    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let garbage = random_bytes(original.len());
    let bomb = zstd::bulk::compress(&vec![b'x'; 64 * MIB], ZSTD_LEVEL).unwrap();
    let half = original[..original.len() / 2].to_vec();
    let mut longer = original.clone();
    longer.extend_from_slice(&original);
    // (what, object, entry)
    let cases: Vec<(&str, Vec<u8>, FileEntry)> = vec![
        ("a flipped bit", flipped, entry.clone()),
        ("not zstd at all", garbage, entry.clone()),
        (
            "a frame that decompresses to more than the entry says",
            bomb.clone(),
            FileEntry {
                stored_bytes: bomb.len() as u64,
                ..entry.clone()
            },
        ),
        (
            "a frame cut in half",
            half.clone(),
            FileEntry {
                stored_bytes: half.len() as u64,
                ..entry.clone()
            },
        ),
        (
            "two frames",
            longer.clone(),
            FileEntry {
                stored_bytes: longer.len() as u64,
                ..entry.clone()
            },
        ),
        ("a shorter object", half, entry.clone()),
    ];
    for (what, object, entry) in cases {
        store
            .object_store()
            .put(&path, PutPayload::from(object))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let error = store
            .download_file(&plain(id), &entry, &destination)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, BackupStoreError::Corrupt { path: p, .. } if *p == path.to_string()),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("take a new backup"), "{error}");
        assert!(
            !destination.exists(),
            "{what}: the partial download must be removed"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{what}: took {:?}",
            started.elapsed()
        );
    }
    // The intact object still restores.
    store
        .object_store()
        .put(&path, PutPayload::from(original))
        .await
        .unwrap();
    store
        .download_file(&plain(id), &entry, &destination)
        .await
        .unwrap();
    assert!(tokio::fs::read(&destination).await.unwrap() == data);
    assert_eq!(store.delete_backup(&id).await.unwrap(), 1);
}

async fn truncating_store_detected(store: &BackupStore, dir: &LocalPath) {
    let truncating = BackupStore::from_object_store(
        Arc::new(Intercepted(Truncating {
            inner: store.object_store().clone(),
        })),
        store.base_path().map(str::to_string),
    );
    let id = BackupIdentifier::new(8, 3, 0);
    for (name, len) in [("small.log", 1000), ("multipart.log", 20 * MIB)] {
        let local = write_local(dir, &format!("truncated-{name}"), &random_bytes(len)).await;
        for (how, uploader) in [
            ("plain", truncating.clone()),
            (
                "zstd",
                truncating.clone().with_compression(Compression::Zstd),
            ),
        ] {
            let error = uploader
                .upload_file(&id, FileKind::Segment, name, &local, len as u64, None)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, BackupStoreError::Corrupt { .. }),
                "{name} ({how}): {error}"
            );
            assert!(
                error.to_string().contains("did not keep the upload"),
                "{name} ({how}): {error}"
            );
        }
    }
    store.delete_backup(&id).await.unwrap();
    assert_eq!(store.list_checkpoints(8).await.unwrap(), Vec::<u64>::new());
}

/// An object store that keeps all but the last byte of every put and of every
/// part of a multipart upload.
#[derive(Debug)]
struct Truncating {
    inner: Arc<dyn ObjectStore>,
}

fn truncated(payload: PutPayload) -> PutPayload {
    let mut bytes: Vec<u8> = Vec::with_capacity(payload.content_length());
    for chunk in &payload {
        bytes.extend_from_slice(chunk);
    }
    bytes.pop();
    PutPayload::from(bytes)
}

impl fmt::Display for Truncating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Truncating({})", self.inner)
    }
}

#[derive(Debug)]
struct TruncatingUpload {
    inner: Box<dyn MultipartUpload>,
}

#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for TruncatingUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(truncated(data))
    }

    fn complete<'a, 'b>(&'a mut self) -> StoreFuture<'b, PutResult>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.complete()
    }

    fn abort<'a, 'b>(&'a mut self) -> StoreFuture<'b, ()>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.abort()
    }
}

impl Intercept for Truncating {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn put_opts<'a>(
        &'a self,
        location: &'a Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'a, PutResult> {
        self.inner.put_opts(location, truncated(payload), opts)
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        Box::pin(async move {
            let inner = self.inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(TruncatingUpload { inner }) as Box<dyn MultipartUpload>)
        })
    }
}

/// An object store wrapper that records deletes and can fail deletes of
/// everything but manifests.
#[derive(Debug)]
struct DeleteRecorder {
    inner: Arc<dyn ObjectStore>,
    deleted: Mutex<Vec<Path>>,
    fail_data_deletes: AtomicBool,
}

impl DeleteRecorder {
    fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            deleted: Mutex::new(Vec::new()),
            fail_data_deletes: AtomicBool::new(false),
        }
    }

    fn deleted(&self) -> Vec<Path> {
        self.deleted.lock().unwrap().clone()
    }

    fn fail_data_deletes(&self, fail: bool) {
        self.fail_data_deletes.store(fail, Ordering::SeqCst);
    }
}

impl fmt::Display for DeleteRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeleteRecorder({})", self.inner)
    }
}

impl Intercept for DeleteRecorder {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn delete<'a>(&'a self, location: &'a Path) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let is_manifest = location.filename() == Some(crate::MANIFEST_FILE_NAME);
            if !is_manifest && self.fail_data_deletes.load(Ordering::SeqCst) {
                return Err(object_store::Error::Generic {
                    store: "DeleteRecorder",
                    source: "injected delete failure".into(),
                });
            }
            self.inner.delete(location).await?;
            self.deleted.lock().unwrap().push(location.clone());
            Ok(())
        })
    }

    /// Every deletion, also the bulk ones, goes through [`Self::delete`] to be
    /// recorded (and failed).
    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, object_store::Result<Path>>,
    ) -> BoxStream<'a, object_store::Result<Path>> {
        delete_each(self, locations)
    }

    /// Lists in reverse order, so that the manifest comes after the data
    /// objects and a deletion driven by the listing alone deletes it last.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listing = self.inner.list(prefix);
        futures::stream::once(async move {
            let mut objects: Vec<ObjectMeta> = listing.try_collect().await?;
            objects.sort_by(|a, b| b.location.cmp(&a.location));
            Ok::<_, object_store::Error>(futures::stream::iter(objects.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    /// [`Self::list`]'s order, from an offset.
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let offset = offset.clone();
        self.list(prefix)
            .try_filter(move |meta| std::future::ready(meta.location > offset))
            .boxed()
    }
}

/// The future of an [`ObjectStore`] call.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

/// A store that wraps another one, for tests and fault injection: implement
/// [`Intercept::inner`] and only the calls that change; [`Intercepted`] makes
/// it an [`ObjectStore`] that forwards every other call. (So every wrapper
/// shares one forwarding implementation, and none loses a method of the
/// store it wraps.)
///
/// Every [`ObjectStore`] method has a default here, of one of two kinds:
///
/// - **Spellings of a primitive** go through this intercept's primitive, so
///   that a wrapper sees a call however it is spelled, at no cost (no backend
///   does them better than object_store's own default): `put` → `put_opts`,
///   `put_multipart` → `put_multipart_opts`, and `get`, `get_range`, `head` →
///   `get_opts`.
/// - **Methods that backends do better** go to the inner store's own method,
///   which is what the wrapped store is chosen for: `delete_stream` (one
///   request per 1,000 objects on S3, per 256 on Azure), `list_with_offset`
///   (S3, GCS, files), `get_ranges` (files, memory), `rename` and
///   `rename_if_not_exists` (files). A wrapper that changes `delete`, `list`,
///   `get_opts` or `copy`/`copy_if_not_exists` changes these as well (e.g.
///   `delete_stream` with [`delete_each`]), or they bypass it.
pub trait Intercept: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &Arc<dyn ObjectStore>;

    fn put<'a>(&'a self, location: &'a Path, payload: PutPayload) -> StoreFuture<'a, PutResult> {
        self.put_opts(location, payload, PutOptions::default())
    }

    fn put_opts<'a>(
        &'a self,
        location: &'a Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'a, PutResult> {
        self.inner().put_opts(location, payload, opts)
    }

    fn put_multipart<'a>(
        &'a self,
        location: &'a Path,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        self.put_multipart_opts(location, PutMultipartOptions::default())
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        self.inner().put_multipart_opts(location, opts)
    }

    fn get<'a>(&'a self, location: &'a Path) -> StoreFuture<'a, GetResult> {
        self.get_opts(location, GetOptions::default())
    }

    fn get_opts<'a>(
        &'a self,
        location: &'a Path,
        options: GetOptions,
    ) -> StoreFuture<'a, GetResult> {
        self.inner().get_opts(location, options)
    }

    fn get_range<'a>(&'a self, location: &'a Path, range: Range<u64>) -> StoreFuture<'a, Bytes> {
        Box::pin(async move {
            let options = GetOptions {
                range: Some(range.into()),
                ..GetOptions::default()
            };
            self.get_opts(location, options).await?.bytes().await
        })
    }

    fn get_ranges<'a>(
        &'a self,
        location: &'a Path,
        ranges: &'a [Range<u64>],
    ) -> StoreFuture<'a, Vec<Bytes>> {
        self.inner().get_ranges(location, ranges)
    }

    fn head<'a>(&'a self, location: &'a Path) -> StoreFuture<'a, ObjectMeta> {
        Box::pin(async move {
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            Ok(self.get_opts(location, options).await?.meta)
        })
    }

    fn delete<'a>(&'a self, location: &'a Path) -> StoreFuture<'a, ()> {
        self.inner().delete(location)
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, object_store::Result<Path>>,
    ) -> BoxStream<'a, object_store::Result<Path>> {
        self.inner().delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner().list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner().list_with_offset(prefix, offset)
    }

    fn list_with_delimiter<'a>(&'a self, prefix: Option<&'a Path>) -> StoreFuture<'a, ListResult> {
        self.inner().list_with_delimiter(prefix)
    }

    fn copy<'a>(&'a self, from: &'a Path, to: &'a Path) -> StoreFuture<'a, ()> {
        self.inner().copy(from, to)
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> StoreFuture<'a, ()> {
        self.inner().rename(from, to)
    }

    fn copy_if_not_exists<'a>(&'a self, from: &'a Path, to: &'a Path) -> StoreFuture<'a, ()> {
        self.inner().copy_if_not_exists(from, to)
    }

    fn rename_if_not_exists<'a>(&'a self, from: &'a Path, to: &'a Path) -> StoreFuture<'a, ()> {
        self.inner().rename_if_not_exists(from, to)
    }
}

/// `delete_stream` through the intercept's own `delete`, one request per
/// object (at most 10 at once, as object_store's default): for a wrapper
/// that changes `delete` and so must see every deletion.
pub fn delete_each<'a, I: Intercept + ?Sized>(
    intercept: &'a I,
    locations: BoxStream<'a, object_store::Result<Path>>,
) -> BoxStream<'a, object_store::Result<Path>> {
    locations
        .map(move |location| async move {
            let location = location?;
            intercept.delete(&location).await?;
            Ok(location)
        })
        .buffered(10)
        .boxed()
}

/// An [`Intercept`] as an [`ObjectStore`]; derefs to the intercept (to reach
/// its switches and records).
#[derive(Debug)]
pub struct Intercepted<I>(pub I);

impl<I> std::ops::Deref for Intercepted<I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.0
    }
}

impl<I: Intercept> fmt::Display for Intercepted<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

// `ObjectStore` is an `async_trait`; these are its desugared signatures. Every
// method is forwarded (to the intercept, see [`Intercept`]): a provided method
// left to its default here would silently replace the wrapped store's own
// (e.g. a bulk `delete_stream` by one request per object).
#[deny(clippy::missing_trait_methods)]
impl<I: Intercept> ObjectStore for Intercepted<I> {
    fn put<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
    ) -> StoreFuture<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.put(location, payload)
    }

    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.put_opts(location, payload, opts)
    }

    fn put_multipart<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
    ) -> StoreFuture<'c, Box<dyn MultipartUpload>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.put_multipart(location)
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'c, Box<dyn MultipartUpload>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.put_multipart_opts(location, opts)
    }

    fn get<'a, 'b, 'c>(&'a self, location: &'b Path) -> StoreFuture<'c, GetResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.get(location)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> StoreFuture<'c, GetResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.get_opts(location, options)
    }

    fn get_range<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        range: Range<u64>,
    ) -> StoreFuture<'c, Bytes>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.get_range(location, range)
    }

    fn get_ranges<'a, 'b, 'c, 'd>(
        &'a self,
        location: &'b Path,
        ranges: &'c [Range<u64>],
    ) -> StoreFuture<'d, Vec<Bytes>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.0.get_ranges(location, ranges)
    }

    fn head<'a, 'b, 'c>(&'a self, location: &'b Path) -> StoreFuture<'c, ObjectMeta>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.head(location)
    }

    fn delete<'a, 'b, 'c>(&'a self, location: &'b Path) -> StoreFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.delete(location)
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, object_store::Result<Path>>,
    ) -> BoxStream<'a, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> StoreFuture<'c, ListResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.0.list_with_delimiter(prefix)
    }

    fn copy<'a, 'b, 'c, 'd>(&'a self, from: &'b Path, to: &'c Path) -> StoreFuture<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.0.copy(from, to)
    }

    fn rename<'a, 'b, 'c, 'd>(&'a self, from: &'b Path, to: &'c Path) -> StoreFuture<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.0.rename(from, to)
    }

    fn copy_if_not_exists<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> StoreFuture<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.0.copy_if_not_exists(from, to)
    }

    fn rename_if_not_exists<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> StoreFuture<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.0.rename_if_not_exists(from, to)
    }
}
