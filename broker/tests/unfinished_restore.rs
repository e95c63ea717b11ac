//! A data directory with the marker of an unfinished restore: the broker refuses to start,
//! saying to rerun the restore, before it opens any partition.

use sluice_broker::error::BrokerError;
use sluice_broker::service::{BrokerService, RESTORE_MARKER_FILE};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_broker_refuses_to_start_on_an_unfinished_restore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RESTORE_MARKER_FILE), b"{}").unwrap();
    let env = [(
        "SLUICE_BROKER_DATA_DIRECTORY".to_string(),
        dir.path().display().to_string(),
    )];
    let config = sluice_config::load_from(None, env).unwrap().broker;
    let error = BrokerService::new(config)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BrokerError::UnfinishedRestore { marker } if *marker == dir.path().join(RESTORE_MARKER_FILE)),
        "{error}"
    );
    assert!(
        error.to_string().contains("rerun sluice-restore"),
        "{error}"
    );
    let mut entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![RESTORE_MARKER_FILE],
        "no partition was opened"
    );
}
