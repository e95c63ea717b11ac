//! Continuous archiving of the log (`broker.data.backup.continuous`), end to end on Garage with
//! the real binaries: one broker, one partition, 256 KiB segments, a snapshot every second.
//! - Sealed segments reach the pool with no checkpoint taken, and the next backup references
//!   them instead of sending them.
//! - The store frozen: processing goes on, compaction keeps what is not archived, the broker's
//!   and the gateway's health say DEGRADED; past `continuousLagLimit` compaction deletes
//!   anyway, counted as dropped, and the disk stays bounded. The store back: health is UP.
//! - The broker killed while a segment uploads, then restarted: archiving resumes, the
//!   segments archived before the kill are not sent again, and the pool gains only the
//!   segments that were waiting.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_protocol::metrics::parse_text;
use sluice_tests::*;

const SEGMENT_BYTES: u64 = 256 << 10;
const LAG_LIMIT_BYTES: u64 = 2 << 20;

async fn scrape(url: &str) -> BTreeMap<String, f64> {
    let text = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_default();
    parse_text(&text)
        .unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"))
        .into_iter()
        .collect()
}

/// The value of `family{partition="1"}` on the broker's metrics page.
async fn metric(url: &str, family: &str) -> u64 {
    let series = format!("{family}{{partition=\"1\"}}");
    let samples = scrape(url).await;
    *samples
        .get(&series)
        .unwrap_or_else(|| panic!("no series {series} at {url}")) as u64
}

/// Waits until `family` satisfies `done`, for at most `timeout` (then fails with the logs).
async fn wait_metric(
    cluster: &Cluster,
    url: &str,
    family: &str,
    timeout: Duration,
    done: impl Fn(u64) -> bool,
) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(url, family).await;
        if done(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{family} is still {value} after {timeout:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes four segments of log and waits until at least three sealed ones are archived and
/// none waits; returns how many were archived.
async fn archive_four_segments(cluster: &Cluster, api: &str, metrics: &str) -> u64 {
    write_log(api, "a", 4 * SEGMENT_BYTES).await;
    let timeout = Duration::from_secs(30);
    let archived_total = "sluice_archive_segments_archived_total";
    let archived = wait_metric(cluster, metrics, archived_total, timeout, |n| n >= 3).await;
    wait_metric(cluster, metrics, "sluice_archive_lag_bytes", timeout, |b| {
        b == 0
    })
    .await;
    archived
}

/// Freezes the store, then writes three segments of log and waits until at least two wait
/// for their upload; returns the bytes waiting.
async fn freeze_with_segments_waiting(
    garage: &Garage,
    cluster: &Cluster,
    api: &str,
    metrics: &str,
    tag: &str,
) -> u64 {
    garage.pause();
    write_log(api, tag, 3 * SEGMENT_BYTES).await;
    let timeout = Duration::from_secs(30);
    let lag = "sluice_archive_lag_bytes";
    wait_metric(cluster, metrics, lag, timeout, |b| b >= 2 * SEGMENT_BYTES).await
}

/// Deposits enough to append about `bytes` of log (accounts of 100 characters).
async fn write_log(api: &str, tag: &str, bytes: u64) {
    let prefix = tag.repeat(100 / tag.len());
    let count = bytes / 180;
    let deposits: Vec<(String, u64)> = (0..count)
        .map(|i| (format!("{prefix}-{i:06}"), 1 + i % 7))
        .collect();
    for chunk in deposits.chunks(2_000) {
        deposit_all(api, chunk).await;
    }
}

async fn health(url: &str, want: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, health) = get(url).await;
        if health["status"] == want {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "health at {url} never {want}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One broker, one partition on `garage`, archiving, 256 KiB segments, a snapshot every
/// `snapshot_period`.
fn archiving(garage: &Garage, snapshot_period: &str) -> ClusterSpec {
    ClusterSpec::new(1, 1)
        .with_env(&garage.env())
        .with("SLUICE_BROKER_DATA_BACKUP_CONTINUOUS", "true")
        .with("SLUICE_BROKER_DATA_LOGSEGMENTSIZE", "256KB")
        .with("SLUICE_BROKER_DATA_SNAPSHOTPERIOD", snapshot_period)
}

/// The running cluster of [`archiving`] and where to look at it.
struct Archiving {
    cluster: Cluster,
    ep: Endpoints,
    metrics: String,
    broker_health: String,
    store: sluice_backup_store::BackupStore,
}

impl Archiving {
    async fn start(garage: &Garage, spec: &ClusterSpec) -> Archiving {
        Archiving {
            cluster: spec.start().await,
            ep: spec.endpoints(),
            metrics: spec.broker_metrics_url(0),
            broker_health: spec.brokers[0].health_url(),
            store: garage.store(None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_is_archived_as_it_is_written() {
    let garage = Garage::start();
    let spec = archiving(&garage, "1s").with("SLUICE_BROKER_DATA_BACKUP_CONTINUOUSLAGLIMIT", "2MB");
    let Archiving {
        mut cluster,
        ep,
        metrics,
        broker_health,
        store,
    } = Archiving::start(&garage, &spec).await;

    // Sealed segments reach the pool with no checkpoint taken.
    archive_four_segments(&cluster, &ep.api, &metrics).await;
    assert!(
        store.list_checkpoints(1).await.expect("list").is_empty(),
        "no checkpoint was asked for"
    );
    let archived = store.pool_totals(1).await.expect("pool totals");
    assert!(archived.objects >= 3, "{archived:?}");
    assert!(metric(&metrics, "sluice_archive_uploaded_bytes_total").await > 0);

    // A backup now references the archived segments without sending them.
    let (status, body) = take_backup(&ep.mgmt, "10").await;
    assert_eq!(status, 200, "{body}");
    poll_backup(&ep.mgmt, 10, "COMPLETED", Duration::from_secs(60)).await;
    let manifest = store
        .find_manifests(1, 10)
        .await
        .expect("manifest")
        .remove(0);
    let segments: u64 = manifest
        .files
        .iter()
        .filter(|f| f.kind == sluice_backup_store::FileKind::Segment)
        .map(|f| f.size_bytes)
        .sum();
    assert!(
        segments >= 3 * SEGMENT_BYTES,
        "the backup holds {segments} bytes of log"
    );
    assert!(
        manifest.uploaded_bytes() * 2 < manifest.referenced_bytes(),
        "the backup uploaded {} of the {} bytes it references: archived segments were sent again",
        manifest.uploaded_bytes(),
        manifest.referenced_bytes()
    );

    // The store frozen: processing goes on, the log not archived stays on disk, and health
    // says DEGRADED (broker and gateway).
    let lag = freeze_with_segments_waiting(&garage, &cluster, &ep.api, &metrics, "b").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // two snapshots, two compactions
    let on_disk = metric(&metrics, "sluice_partition_log_bytes").await;
    assert!(
        on_disk >= lag,
        "compaction deleted log not archived: {on_disk} bytes on disk, {lag} waiting"
    );
    let degraded = health(&broker_health, "DEGRADED", Duration::from_secs(60)).await;
    assert_eq!(
        degraded["archiveLagging"],
        serde_json::json!([1]),
        "{degraded}"
    );
    let gateway = health(
        &format!("{}/actuator/health", ep.mgmt),
        "DEGRADED",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        gateway["reason"]
            .as_str()
            .is_some_and(|r| r.contains("continuous backups lag: a sealed log segment")),
        "{gateway}"
    );

    // Past the lag limit compaction deletes anyway: counted as dropped, the disk bounded.
    write_log(&ep.api, "c", LAG_LIMIT_BYTES + 4 * SEGMENT_BYTES).await;
    wait_metric(
        &cluster,
        &metrics,
        "sluice_archive_segments_dropped_total",
        Duration::from_secs(30),
        |n| n > 0,
    )
    .await;
    let on_disk = wait_metric(
        &cluster,
        &metrics,
        "sluice_partition_log_bytes",
        Duration::from_secs(30),
        |b| b <= LAG_LIMIT_BYTES + 4 * SEGMENT_BYTES,
    )
    .await;
    assert!(on_disk > 0);
    assert_eq!(deposit(&ep.api, "while-frozen", 5).await, 5);

    // The store back: archiving catches up and health is UP.
    garage.resume();
    wait_metric(
        &cluster,
        &metrics,
        "sluice_archive_lag_bytes",
        Duration::from_secs(120),
        |b| b == 0,
    )
    .await;
    health(&broker_health, "UP", Duration::from_secs(30)).await;
    health(
        &format!("{}/actuator/health", ep.mgmt),
        "UP",
        Duration::from_secs(30),
    )
    .await;

    cluster.stop();
}

/// Killed while a segment uploads, then restarted: no snapshot (so no compaction) in the test's
/// time, and no checkpoint at all, so no manifest references the archived segments: a
/// collection at the start would free them all, and a first pass that cut them anew would send
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_while_archiving_sends_nothing_twice() {
    let garage = Garage::start();
    let spec = archiving(&garage, "1h");
    let Archiving {
        mut cluster,
        ep,
        metrics,
        broker_health,
        store,
    } = Archiving::start(&garage, &spec).await;

    let archived = archive_four_segments(&cluster, &ep.api, &metrics).await;
    let before_kill = store.pool_totals(1).await.expect("pool totals");
    assert!(before_kill.objects >= 3, "{before_kill:?}");

    let waiting = freeze_with_segments_waiting(&garage, &cluster, &ep.api, &metrics, "d").await;
    cluster.brokers[0].kill();
    garage.resume();
    cluster.brokers[0].restart();
    cluster.brokers[0].wait_ready(&broker_health).await;
    let rearchived = wait_metric(
        &cluster,
        &metrics,
        "sluice_archive_segments_archived_total",
        Duration::from_secs(120),
        |n| n >= archived + 2,
    )
    .await;
    wait_metric(
        &cluster,
        &metrics,
        "sluice_archive_lag_bytes",
        Duration::from_secs(120),
        |b| b == 0,
    )
    .await;
    let sent = metric(&metrics, "sluice_archive_uploaded_bytes_total").await;
    let after = store.pool_totals(1).await.expect("pool totals");
    // Every byte sent after the restart is an object the pool did not hold.
    let grown = after.stored_bytes - before_kill.stored_bytes;
    assert!(
        sent <= grown,
        "{rearchived} segments archived after the restart sent {sent} bytes, the pool grew by {grown}: \
         segments archived before the kill were sent again\n{}",
        cluster.logs()
    );
    // The pool gained the segments that waited (one piece each), nothing else.
    let waiting_segments = waiting.div_ceil(SEGMENT_BYTES) + 1;
    assert!(
        after.objects - before_kill.objects <= waiting_segments,
        "the pool gained {} objects for {waiting_segments} segments waiting at the kill\n{}",
        after.objects - before_kill.objects,
        cluster.logs()
    );
    assert!(
        sent > 0,
        "the segments that waited were archived after the restart"
    );
    cluster.stop();
}
