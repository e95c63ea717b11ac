//! SSE-C (`broker.data.backup.s3.sse=CUSTOMER`) against a real S3 server (Garage, which
//! implements SSE-C and accepts it over plain HTTP): the store passes the conformance suite
//! with a customer key, and what it wrote is readable with that key only.
//!
//! Needs only Garage, not the release binaries.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStore, BackupStoreOptions, Chunking, FileKind,
    Manifest, PooledUpload, S3Encryption, StoreKind,
};
use sluice_tests::Garage;

/// Base64 of the 32 bytes `sluice-test-sse-c-key-0123456789`.
const KEY: &str = "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=";
/// Base64 of the 32 bytes `another-sse-c-key-for-the-tests!`.
const OTHER_KEY: &str = "YW5vdGhlci1zc2UtYy1rZXktZm9yLXRoZS10ZXN0cyE=";

fn customer(key: &str) -> S3Encryption {
    S3Encryption::Customer {
        key_base64: key.to_string(),
    }
}

/// A store on Garage's bucket below `base_path`, asking for `encryption`.
fn store(garage: &Garage, base_path: &str, encryption: S3Encryption) -> BackupStore {
    let mut kind = garage.s3().store_kind();
    if let StoreKind::S3 {
        server_side_encryption,
        ..
    } = &mut kind
    {
        *server_side_encryption = encryption;
    }
    BackupStore::open(BackupStoreOptions::new(kind, Some(base_path.to_string())))
        .unwrap_or_else(|e| panic!("open the S3 backup store on Garage: {e}"))
}

fn fresh_base_path(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{nanos}")
}

/// Bytes that do not repeat (xorshift), so that no two pieces of a file are the same object.
fn bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_with_a_customer_key_conforms() {
    let garage = Garage::start();
    let store = store(&garage, &fresh_base_path("sse-c"), customer(KEY));
    assert!(store.description().contains("sse=SSE-C"), "{store:?}");
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Garage is not reachable: {e}\n{}", garage.log_tail()));
    sluice_backup_store::conformance::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_written_with_a_customer_key_are_read_with_that_key_only() {
    let garage = Garage::start();
    let base_path = fresh_base_path("sse-c-read");
    let encrypted = store(&garage, &base_path, customer(KEY));

    // A pooled backup of one segment of three pieces (4 MiB each at most), as the broker writes.
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(9 * 1024 * 1024 + 17);
    let local = dir.path().join("00000000000000000001.log");
    std::fs::write(&local, &data).unwrap();
    let id = BackupIdentifier::new(1, 5, 0);
    let manifest = Manifest::in_progress(
        id,
        BackupDescriptor {
            snapshot_id: None,
            checkpoint_position: 5,
            number_of_partitions: 1,
            broker_version: "0.1.0-sse-test".to_string(),
            request: None,
        },
    );
    encrypted.write_manifest(&manifest).await.unwrap();
    let index = encrypted.load_pool_index(1).await.unwrap();
    let file = encrypted
        .upload_pooled(
            PooledUpload {
                partition_id: 1,
                kind: FileKind::Segment,
                name: "00000000000000000001.log",
                local_path: &local,
                length: data.len() as u64,
                chunking: Chunking::Fixed,
                previous: None,
                keys: None,
            },
            &index,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("pooled upload with SSE-C: {e}\n{}", garage.log_tail()));
    let pieces = file.entry.pieces.clone().expect("a pooled entry");
    assert_eq!(pieces.len(), 3);
    let completed = manifest.complete(vec![file.entry.clone()]);
    // The conditional update (If-Match) of an SSE-C object.
    encrypted.write_manifest(&completed).await.unwrap();

    // (a) The same key reads everything back, also from a store opened anew (as the restore
    // tool does).
    let reopened = store(&garage, &base_path, customer(KEY));
    for (n, reader) in [&encrypted, &reopened].into_iter().enumerate() {
        assert_eq!(
            reader.read_manifest(&id).await.unwrap(),
            Some(completed.clone())
        );
        let destination = dir.path().join(format!("restored-{n}"));
        reader
            .download_file(&completed, &file.entry, &destination)
            .await
            .unwrap_or_else(|e| panic!("download with the key: {e}"));
        assert!(std::fs::read(&destination).unwrap() == data);
    }

    // (b) Without the key, or with another one, the objects are listed but not readable.
    let plain = store(&garage, &base_path, S3Encryption::BucketDefault);
    let wrong = store(&garage, &base_path, customer(OTHER_KEY));
    for (reader, what) in [(&plain, "no key"), (&wrong, "another key")] {
        assert_eq!(reader.list_checkpoints(1).await.unwrap(), vec![5], "{what}");
        let error = reader
            .read_manifest(&id)
            .await
            .expect_err("an SSE-C manifest is unreadable without its key");
        let message = error.to_string();
        assert!(message.contains("manifest.json"), "{what}: {message}");
        assert_sse_c_refusal(what, &message);
        let destination = dir
            .path()
            .join(format!("unreadable-{}", what.replace(' ', "-")));
        let error = reader
            .download_file(&completed, &file.entry, &destination)
            .await
            .expect_err("an SSE-C object is unreadable without its key");
        assert_sse_c_refusal(what, &error.to_string());
        assert!(!Path::new(&destination).exists(), "{what}: nothing is left");
    }

    // Deleting works with the key (the manifest is first rewritten FAILED).
    encrypted.delete_backup(&id).await.unwrap();
    assert_eq!(
        encrypted.list_checkpoints(1).await.unwrap(),
        Vec::<u64>::new()
    );
}

/// The error says the server refused the request (Garage: 400 "Object is encrypted" without
/// a key, "Invalid encryption key" with another one; AWS words it differently), names the
/// option to fix, and never carries a key.
fn assert_sse_c_refusal(what: &str, message: &str) {
    assert!(
        message.contains("400") || message.contains("Bad Request"),
        "{what}: {message}"
    );
    assert!(
        message.to_ascii_lowercase().contains("encrypt"),
        "{what}: {message}"
    );
    // What to fix, in the store's terms.
    assert!(
        message.contains("SSE-C need the same customer key"),
        "{what}: {message}"
    );
    for key in [KEY, OTHER_KEY] {
        assert!(!message.contains(key), "{what}: {message}");
    }
}
