//! Reading manifests that cannot be used: damaged (the manifest's own checksum), too large, of a
//! newer format, or holding a value that would become a path outside its place. Each is refused
//! naming why when it is the one asked for, and skipped (reported) by listings, so that one bad
//! manifest does not break a whole partition.

use std::sync::Arc;

use sluice_backup_store::object_store::memory::InMemory;
use sluice_backup_store::object_store::{ObjectStore, PutPayload};
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStore, BackupStoreError, FileEntry, FileKind,
    Manifest, MANIFEST_SIZE_BYTES_MAX,
};

fn completed(id: BackupIdentifier) -> Manifest {
    Manifest::in_progress(
        id,
        BackupDescriptor {
            snapshot_id: Some("00000000000000000006".to_string()),
            checkpoint_position: 9,
            number_of_partitions: 3,
            broker_version: "0.1.0-test".to_string(),
            request: None,
        },
    )
    .complete(vec![FileEntry {
        name: "00000000000000000001.log".to_string(),
        kind: FileKind::Segment,
        size_bytes: 5,
        checksum: "crc32c:0000abcd".to_string(),
        compression: None,
        stored_bytes: 5,
        pieces: None,
    }])
}

async fn put_raw(store: &BackupStore, id: &BackupIdentifier, bytes: Vec<u8>) {
    store
        .object_store()
        .put(&store.manifest_path(id), PutPayload::from(bytes))
        .await
        .unwrap();
}

async fn raw(store: &BackupStore, id: &BackupIdentifier) -> String {
    let bytes = store
        .object_store()
        .get(&store.manifest_path(id))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// One way to spoil a stored manifest: (what, the spoiled manifest bytes, the refusal names this).
type Spoil = (&'static str, fn(String) -> Vec<u8>, &'static str);

const SPOILS: &[Spoil] = &[
    (
        "a damaged value (still valid JSON)",
        |json| {
            json.replacen("\"checkpointPosition\": 9", "\"checkpointPosition\": 8", 1)
                .into_bytes()
        },
        "the manifest is damaged: manifestChecksum=",
    ),
    (
        "truncated",
        |json| json.as_bytes()[..json.len() / 2].to_vec(),
        "not a valid manifest JSON document",
    ),
    (
        "a newer format",
        |json| {
            let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
            value.as_object_mut().unwrap().remove("manifestChecksum");
            value["formatVersion"] = serde_json::json!(99);
            serde_json::to_vec(&value).unwrap()
        },
        "unsupported formatVersion=99",
    ),
    (
        "an absolute snapshot id (written without a checksum, as by an older release)",
        |json| {
            let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
            value.as_object_mut().unwrap().remove("manifestChecksum");
            value["descriptor"]["snapshotId"] = serde_json::json!("/tmp/sluice-escape");
            serde_json::to_vec(&value).unwrap()
        },
        "field=descriptor.snapshotId value=\"/tmp/sluice-escape\"",
    ),
    (
        "larger than the cap",
        |json| {
            let mut bytes = json.into_bytes();
            bytes.resize(MANIFEST_SIZE_BYTES_MAX as usize + 1, b' ');
            bytes
        },
        "more than the limit of 8388608 bytes",
    ),
];

#[tokio::test]
async fn a_bad_manifest_is_refused_when_asked_for_and_skipped_by_listings() {
    for (what, spoil, expected) in SPOILS {
        let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
        let good = BackupIdentifier::new(2, 7, 0);
        let bad = BackupIdentifier::new(2, 7, 1);
        let older = BackupIdentifier::new(2, 5, 1);
        for id in [good, bad, older] {
            store.write_manifest(&completed(id)).await.unwrap();
        }
        let json = raw(&store, &bad).await;
        put_raw(&store, &bad, spoil(json)).await;

        let error = store.read_manifest(&bad).await.unwrap_err();
        assert!(
            matches!(error, BackupStoreError::InvalidManifest { .. }),
            "{what}: {error}"
        );
        assert!(error.to_string().contains(expected), "{what}: {error}");
        assert!(
            error
                .to_string()
                .contains(store.manifest_path(&bad).as_ref()),
            "{what}: {error}"
        );

        let found = store.find_manifests(2, 7).await.unwrap();
        assert_eq!(
            found.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![good],
            "{what}"
        );
        let reported = store.find_manifests_reporting(2, 7).await.unwrap();
        assert_eq!(reported.manifests, found, "{what}");
        assert_eq!(reported.skipped.len(), 1, "{what}");
        assert_eq!(reported.skipped[0].id, bad, "{what}");
        assert!(
            reported.skipped[0].reason.contains(expected),
            "{what}: {:?}",
            reported.skipped
        );

        let all = store.list_manifests_reporting(2).await.unwrap();
        assert_eq!(
            all.manifests.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![older, good],
            "{what}"
        );
        assert_eq!(
            all.skipped.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![bad],
            "{what}"
        );
        assert_eq!(
            store.list_manifests(2).await.unwrap(),
            all.manifests,
            "{what}"
        );
    }
}

#[tokio::test]
async fn manifests_are_written_with_a_checksum_and_older_ones_without_still_read() {
    let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
    let id = BackupIdentifier::new(1, 3, 0);
    let manifest = completed(id);
    store.write_manifest(&manifest).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&raw(&store, &id).await).unwrap();
    assert!(
        json["manifestChecksum"]
            .as_str()
            .is_some_and(|c| c.starts_with("crc32c:")),
        "{json}"
    );
    assert_eq!(
        store.read_manifest(&id).await.unwrap(),
        Some(manifest.clone())
    );

    let legacy = BackupIdentifier::new(1, 4, 0);
    let old = Manifest {
        id: legacy,
        ..manifest
    };
    put_raw(&store, &legacy, serde_json::to_vec_pretty(&old).unwrap()).await;
    assert_eq!(store.read_manifest(&legacy).await.unwrap(), Some(old));
}
