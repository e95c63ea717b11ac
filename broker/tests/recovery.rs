//! Partition recovery from what a crash, an operator or a disk can leave behind: snapshots that
//! are ahead of the log, and snapshots that are corrupt where a new one would be written.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_broker::log::Log;
use sluice_broker::partition::{PartitionOptions, PartitionService};
use sluice_broker::record::{Command, Outcome};
use sluice_broker::snapshot::{self, STATE_FILE};
use sluice_broker::state::LedgerState;
use sluice_broker::BrokerError;
use tokio_util::sync::CancellationToken;

fn deposit(position: u64) -> Command {
    Command::Deposit {
        account: format!("account-{}", position % 7),
        amount: position,
    }
}

/// Writes records `1..=records` (deposits) into the log of `partition_dir`.
fn write_log(partition_dir: &Path, records: u64, segment_bytes_max: u64) {
    let mut log = Log::open(&partition_dir.join("log"), segment_bytes_max).unwrap();
    for position in 1..=records {
        assert_eq!(
            log.append(&deposit(position).encode()).unwrap().position,
            position
        );
    }
    log.flush().unwrap();
}

/// The state after processing records `1..=position`.
fn state_at(position: u64) -> LedgerState {
    let mut state = LedgerState::new(1, 1);
    for p in 1..=position {
        state.apply(p, &deposit(p));
    }
    state
}

fn options(
    partition_dir: &Path,
    segment_bytes_max: u64,
    snapshot_period: Duration,
) -> PartitionOptions {
    PartitionOptions {
        partition_id: 1,
        partitions_count: 1,
        node_id: 0,
        directory: partition_dir.to_path_buf(),
        segment_bytes_max,
        snapshot_period,
        request_queue_capacity: 16,
        batch_commands_max: 64,
    }
}

/// A snapshot beyond the end of the log (segments deleted or truncated by hand, a disk that lost
/// the tail) used to be accepted: the first append then got a position the state had already
/// processed and the partition panicked. Open refuses instead, naming what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_its_snapshot_refuses_to_open() {
    // (case, records in the log, snapshot position)
    let cases = [
        ("every segment deleted", 0, 10),
        ("log truncated", 5, 10),
        ("log one record short", 9, 10),
    ];
    for (name, records, snapshot_position) in cases {
        let dir = tempfile::tempdir().unwrap();
        let partition_dir = dir.path().join("partition-00001");
        write_log(&partition_dir, records, 1 << 20);
        snapshot::write(
            &partition_dir.join("snapshots"),
            &state_at(snapshot_position),
        )
        .unwrap();
        let Err(error) = PartitionService::new(
            options(&partition_dir, 1 << 20, Duration::from_secs(3600)),
            None,
        ) else {
            panic!("{name}: opened a log that ends at {records} under a snapshot at {snapshot_position}")
        };
        assert!(
            matches!(error, BrokerError::LogEndsBeforeSnapshot { .. }),
            "{name}: {error}"
        );
        let message = error.to_string();
        for expected in [
            "partition 1".to_string(),
            format!(
                "snapshot {} is at position {snapshot_position}",
                snapshot::snapshot_id(snapshot_position)
            ),
            format!("the log ends at position {records}"),
            "restore this node from a backup".to_string(),
        ] {
            assert!(
                message.contains(&expected),
                "{name}: {message:?} lacks {expected:?}"
            );
        }
    }
}

/// The control case: a log that reaches the snapshot opens and takes the next position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_through_its_snapshot_opens_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let partition_dir = dir.path().join("partition-00001");
    write_log(&partition_dir, 10, 1 << 20);
    snapshot::write(&partition_dir.join("snapshots"), &state_at(10)).unwrap();
    let (service, handle) = PartitionService::new(
        options(&partition_dir, 1 << 20, Duration::from_secs(3600)),
        None,
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(service.run(cancel.clone()));
    let outcomes = handle
        .execute(vec![Command::Deposit {
            account: "z".into(),
            amount: 3,
        }])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Balance {
            account: "z".into(),
            balance: 3
        }]
    );
    cancel.cancel();
    task.await.unwrap();
}

/// The newest snapshot is corrupt; recovery skips it, loads the older one and replays to the
/// same position. The next periodic snapshot lands on the corrupt one's directory: it must be
/// rewritten, not adopted, since compaction then deletes the older snapshot and the segments
/// before the new one. Before, the partition could not be opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_in_the_way_is_rewritten_before_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let partition_dir = dir.path().join("partition-00001");
    let snapshots_dir = partition_dir.join("snapshots");
    let segment_bytes_max = 200;
    write_log(&partition_dir, 20, segment_bytes_max);
    let older = snapshot::write(&snapshots_dir, &state_at(10)).unwrap();
    let newest = snapshot::write(&snapshots_dir, &state_at(20)).unwrap();
    let state_path = newest.dir.join(STATE_FILE);
    let mut bytes = std::fs::read(&state_path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&state_path, bytes).unwrap();

    let open = || {
        PartitionService::new(
            options(&partition_dir, segment_bytes_max, Duration::from_millis(20)),
            None,
        )
    };
    let (service, _handle) = open().unwrap();
    assert_eq!(service.summary(), state_at(20).summary());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(service.run(cancel.clone()));
    // Compaction removes the older snapshot once the snapshot at 20 is in place.
    let deadline = Instant::now() + Duration::from_secs(20);
    while older.dir.exists() {
        assert!(Instant::now() < deadline, "no snapshot was taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    task.await.unwrap();

    snapshot::load(&snapshot::read(&newest.dir).unwrap()).expect("the snapshot at 20 loads");
    let (reopened, _handle) = open().expect("the partition opens again");
    assert_eq!(reopened.summary(), state_at(20).summary());
}

/// What the broker finds on disk when a partition cannot be opened, each named by its own error
/// with the fields that are known (no placeholder offsets): (case, how the partition directory
/// is damaged, the expected error and message parts).
#[test]
fn an_unopenable_partition_names_what_is_wrong() {
    type Damage = fn(&Path) -> Box<dyn Fn(&BrokerError) -> bool>;
    let cases: [(&str, Damage, &[&str]); 5] = [
        (
            "a record whose frame is valid but whose payload is not a command",
            |partition_dir| {
                write_log(partition_dir, 2, 1 << 20);
                let mut log = Log::open(&partition_dir.join("log"), 1 << 20).unwrap();
                log.append(b"not a command").unwrap();
                log.flush().unwrap();
                let offset: u64 = (1..=2).map(|p| 16 + deposit(p).encode().len() as u64).sum();
                let segment = partition_dir.join("log").join(format!("{:020}.log", 1));
                Box::new(move |error| {
                    matches!(error, BrokerError::CorruptRecord { path, offset: o, position: 3, .. }
                        if *path == segment && *o == offset)
                })
            },
            &[
                "position=3",
                "not a JSON command",
                "restore this node from a backup",
            ],
        ),
        (
            "a snapshot of another partitions count",
            |partition_dir| {
                write_log(partition_dir, 1, 1 << 20);
                let mut state = LedgerState::new(1, 4);
                state.apply(1, &deposit(1));
                snapshot::write(&partition_dir.join("snapshots"), &state).unwrap();
                Box::new(|error| {
                    matches!(
                        error,
                        BrokerError::PartitionLayoutChanged {
                            stored_partitions_count: 4,
                            configured_partitions_count: 1,
                            ..
                        }
                    )
                })
            },
            &[
                "partition 1 of 4",
                "partition 1 of 1",
                "broker.cluster.partitionsCount",
                "set it back to 4",
            ],
        ),
        (
            "a log compacted past the (missing) snapshot",
            |partition_dir| {
                write_log(partition_dir, 20, 200);
                let mut log = Log::open(&partition_dir.join("log"), 200).unwrap();
                assert!(log.compact(10).unwrap() > 0);
                let first = log.first_position();
                Box::new(move |error| {
                    matches!(error, BrokerError::LogStartsAfterSnapshot { log_first_position, snapshot_position: 0, .. }
                        if *log_first_position == first)
                })
            },
            &["records are missing", "restore this node from a backup"],
        ),
        (
            "a segment deleted from the middle of the log",
            |partition_dir| {
                write_log(partition_dir, 20, 200);
                let mut segments: Vec<_> = std::fs::read_dir(partition_dir.join("log"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                segments.sort();
                assert!(segments.len() >= 3, "{segments:?}");
                std::fs::remove_file(&segments[1]).unwrap();
                let after = segments[2].clone();
                Box::new(move |error| {
                    matches!(error, BrokerError::LogSegmentsDisjoint { path, first_position, expected_position }
                        if *path == after && first_position > expected_position)
                })
            },
            &["do not join", "restore this node from a backup"],
        ),
        (
            "a stray file in the log directory",
            |partition_dir| {
                write_log(partition_dir, 1, 1 << 20);
                let stray = partition_dir.join("log").join("notes.txt");
                std::fs::write(&stray, "hello").unwrap();
                Box::new(
                    move |error| matches!(error, BrokerError::UnexpectedLogFile { path } if *path == stray),
                )
            },
            &["notes.txt", "<20 digits>.log"],
        ),
    ];
    for (name, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let partition_dir = dir.path().join("partition-00001");
        let is_expected = damage(&partition_dir);
        let Err(error) = PartitionService::new(
            options(&partition_dir, 1 << 20, Duration::from_secs(3600)),
            None,
        ) else {
            panic!("{name}: opened")
        };
        assert!(is_expected(&error), "{name}: {error:?}");
        let message = error.to_string();
        for part in expected {
            assert!(message.contains(part), "{name}: {message:?} lacks {part:?}");
        }
    }
}
