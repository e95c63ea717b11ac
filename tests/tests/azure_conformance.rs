//! The backup store's conformance suite against Azure Blob Storage, emulated by Azurite
//! (`scripts/azurite-start.sh`; install it with `scripts/install-emulators.sh`). The store is
//! opened through the same code path as a real Azure account: an account, its key and a custom
//! blob endpoint.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_backup_store::object_store::{
    path::Path as ObjectPath, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_tests::Emulator;

fn start_azurite() -> Emulator {
    Emulator::start(
        "azurite-start.sh",
        "azurite.log",
        &[
            "SLUICE_BROKER_DATA_BACKUP_STORE",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_KEY",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER",
        ],
    )
}

fn store_on(azurite: &Emulator, base_path: Option<String>) -> BackupStore {
    assert_eq!(azurite.setting("SLUICE_BROKER_DATA_BACKUP_STORE"), "AZURE");
    BackupStore::open(BackupStoreOptions::new(
        StoreKind::Azure {
            account: azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT"),
            container: azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER"),
            access_key: Some(azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY")),
            sas_token: None,
            endpoint: Some(azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT")),
        },
        base_path,
    ))
    .expect("open the Azure backup store")
}

async fn conforms(base_path: Option<String>) {
    let azurite = start_azurite();
    let store = store_on(&azurite, base_path);
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Azurite is not reachable: {e}\n{}", azurite.log_tail()));
    conditional_puts_are_enforced(&store).await;
    sluice_backup_store::conformance::conformance(store).await;
}

/// The store's manifest writes are atomic on Azure only if the service enforces
/// `If-None-Match: *` and `If-Match: <etag>` on puts (the suite's second-writer checks pass
/// through the store's look-before-write either way): check that Azurite does, so that a race
/// is decided by the service as on Azure.
async fn conditional_puts_are_enforced(store: &BackupStore) {
    let objects = store.object_store();
    let path = match store.base_path() {
        Some(base) => ObjectPath::from(format!("{base}/conditional-put-probe")),
        None => ObjectPath::from("conditional-put-probe"),
    };
    let create = || PutOptions::from(PutMode::Create);
    let first = objects
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .expect("a create of an absent object succeeds");
    let error = objects
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await
        .expect_err("a create of an existing object must be refused (If-None-Match: *)");
    assert!(
        matches!(
            error,
            sluice_backup_store::object_store::Error::AlreadyExists { .. }
        ),
        "{error}"
    );
    let first = UpdateVersion::from(first);
    assert!(first.e_tag.is_some(), "Azure puts return an ETag");
    let second = objects
        .put_opts(
            &path,
            PutPayload::from_static(b"update"),
            PutOptions::from(PutMode::Update(first.clone())),
        )
        .await
        .expect("an update of the version written succeeds (If-Match)");
    let error = objects
        .put_opts(
            &path,
            PutPayload::from_static(b"stale"),
            PutOptions::from(PutMode::Update(first)),
        )
        .await
        .expect_err("an update of a replaced version must be refused (If-Match)");
    assert!(
        matches!(
            error,
            sluice_backup_store::object_store::Error::Precondition { .. }
        ),
        "{error}"
    );
    let kept = objects.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"update");
    assert_ne!(UpdateVersion::from(second).e_tag, None);
    objects.delete(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms() {
    conforms(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms_below_a_base_path() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    conforms(Some(format!("/cluster-a/run-{nanos}/"))).await;
}
