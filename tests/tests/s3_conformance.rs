//! The backup store's conformance suite against a real S3 server (Garage).

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_tests::Garage;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let garage = Garage::start();
    let store = garage.store(None);
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
    let store = garage.store(Some(format!("/cluster-a/run-{nanos}/")));
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Garage is not reachable: {e}\n{}", garage.log_tail()));
    sluice_backup_store::conformance::conformance(store).await;
}
