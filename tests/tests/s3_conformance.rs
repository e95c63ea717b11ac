//! The backup store's conformance suite against a real S3 server (Garage).

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_tests::Garage;

fn store_on(garage: &Garage, base_path: Option<String>) -> BackupStore {
    let endpoint = garage
        .setting("SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT")
        .to_string();
    BackupStore::open(BackupStoreOptions::new(
        StoreKind::S3 {
            bucket: garage
                .setting("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME")
                .to_string(),
            allow_http: endpoint.starts_with("http://"),
            endpoint: Some(endpoint),
            region: garage
                .setting("SLUICE_BROKER_DATA_BACKUP_S3_REGION")
                .to_string(),
            access_key: Some(
                garage
                    .setting("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY")
                    .to_string(),
            ),
            secret_key: Some(
                garage
                    .setting("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY")
                    .to_string(),
            ),
            force_path_style: garage.setting("SLUICE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS")
                == "true",
        },
        base_path,
    ))
    .expect("open the S3 backup store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let garage = Garage::start();
    let store = store_on(&garage, None);
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Garage is not reachable: {e}\n{}", garage.log_tail()));
    sluice_backup_store::conformance::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms_below_a_base_path() {
    let garage = Garage::start();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let store = store_on(&garage, Some(format!("/cluster-a/run-{nanos}/")));
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Garage is not reachable: {e}\n{}", garage.log_tail()));
    sluice_backup_store::conformance::conformance(store).await;
}
