//! Prometheus endpoints of a real cluster: two brokers (each serving its own `GET /metrics` on
//! `broker.network.managementPort`) and a gateway (`GET /actuator/prometheus`, its own metrics)
//! on a filesystem store. Every scrape of every endpoint passes `promtool check metrics` (the
//! test fails when promtool is missing; `scripts/test.sh` installs it).
//!
//! No backup yet → zero completed; backup 1 → one completed partition backup per hosted
//! partition, bytes and files uploaded, last completed id 1; records, refusals, log, flush,
//! snapshot and request latency series per partition; a stopped broker is counted out by the
//! gateway (brokers up 1), not an error; node 1 restored from backup 1 and restarted → its restore
//! metrics appear. The standalone binary (broker and gateway in one process) serves two
//! coherent pages, no family on both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_protocol::metrics::{parse_text, promtool_check};
use sluice_tests::*;

const PARTITIONS: u32 = 3;

/// The page at `url`, answered 200 with the text format's content type, checked by promtool:
/// its text and its samples (`name{labels}` → value).
async fn scrape(client: &reqwest::Client, url: &str) -> (String, BTreeMap<String, f64>) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "GET {url}: {text}");
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "GET {url}: content type {content_type:?}"
    );
    promtool_check(&text).unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"));
    let samples = parse_text(&text)
        .unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"))
        .into_iter()
        .collect();
    (text, samples)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

/// The sum of every series that starts with `prefix` (e.g. a family and some of its labels).
fn sum_of(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// The process metrics every endpoint has.
fn assert_process_metrics(samples: &BTreeMap<String, f64>, text: &str) {
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(value(samples, name) >= 0.0, "{name}:\n{text}");
    }
    assert!(
        value(samples, "process_resident_memory_bytes") > 0.0,
        "{text}"
    );
    assert!(value(samples, "process_open_fds") > 0.0, "{text}");
}

/// The families (`# TYPE` names) of a page.
fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_shows_its_own_metrics_and_passes_promtool() {
    let spec = ClusterSpec::new(2, PARTITIONS).with_filesystem_store();
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    let client = spec.broker_client();
    let gateway_page = format!("{}/actuator/prometheus", ep.mgmt);
    let broker_page = |node: u32| spec.broker_metrics_url(node);

    // Nothing backed up yet.
    let (text, gateway) = scrape(&client, &gateway_page).await;
    assert_eq!(value(&gateway, "sluice_gateway_brokers_up"), 2.0, "{text}");
    assert_process_metrics(&gateway, &text);
    assert!(
        families(&text)
            .iter()
            .all(|f| !f.starts_with("sluice_backup")
                && !f.starts_with("sluice_restore")
                && !f.starts_with("sluice_partition")),
        "the gateway shows its own metrics, the brokers theirs:\n{text}"
    );
    for node in 0..2 {
        let (text, before) = scrape(&client, &broker_page(node)).await;
        assert_process_metrics(&before, &text);
        let info = format!("sluice_broker_info{{node=\"{node}\",");
        assert_eq!(sum_of(&before, &info), 1.0, "{text}");
        for status in ["completed", "failed"] {
            let series = format!("sluice_backups_total{{status=\"{status}\"}}");
            assert_eq!(value(&before, &series), 0.0, "{text}");
        }
        assert!(
            !text.contains("\nsluice_backup_last_completed_id ")
                && !text.contains("\nsluice_restore_backup_id "),
            "no backup and no restore yet:\n{text}"
        );
    }

    // Data, one refused withdrawal, then backup 1.
    let deposits: Vec<(String, u64)> = (0..300).map(|i| (format!("m-{i:03}"), i + 1)).collect();
    deposit_all(&ep.api, &deposits).await;
    let total: u64 = deposits.iter().map(|(_, a)| a).sum();
    let (status, body) = post(
        &format!("{}/v1/accounts/m-000/withdraw", ep.api),
        Some(r#"{"amount": 1000000}"#),
    )
    .await;
    assert_eq!(status, 409, "short of funds: {body}");
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}\n{}", cluster.logs());
    poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;

    // Partitions 1 and 3 live on node 0, partition 2 on node 1.
    let mut refused = 0.0;
    for (node, hosted) in [(0, vec![1, 3]), (1, vec![2])] {
        let count = hosted.len() as f64;
        // Snapshots are taken every second once something was processed: wait for one each.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (text, after) = loop {
            let (text, after) = scrape(&client, &broker_page(node)).await;
            let snapshotted = hosted.iter().all(|p| {
                let series = format!(
                    "sluice_partition_snapshot_duration_seconds_count{{partition=\"{p}\"}}"
                );
                after.get(&series).is_some_and(|n| *n >= 1.0)
            });
            if snapshotted {
                break (text, after);
            }
            assert!(
                Instant::now() < deadline,
                "no snapshot of {hosted:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let series = |name: &str| value(&after, name);
        assert_eq!(
            series("sluice_backups_total{status=\"completed\"}"),
            count,
            "{text}"
        );
        assert_eq!(
            series("sluice_backups_total{status=\"failed\"}"),
            0.0,
            "{text}"
        );
        assert_eq!(series("sluice_backups_in_progress"), 0.0, "{text}");
        assert!(series("sluice_backup_uploaded_bytes_total") > 0.0, "{text}");
        assert!(
            series("sluice_backup_uploaded_files_total") >= count,
            "{text}"
        );
        assert_eq!(series("sluice_backup_last_completed_id"), 1.0, "{text}");
        let timestamp = series("sluice_backup_last_completed_timestamp_seconds");
        assert!(timestamp > 1.6e9, "a Unix time in seconds: {timestamp}");
        assert_eq!(
            series("sluice_backup_duration_seconds_count"),
            count,
            "{text}"
        );
        assert_eq!(
            series("sluice_backup_duration_seconds_bucket{le=\"+Inf\"}"),
            count,
            "{text}"
        );
        for p in &hosted {
            let of = |name: &str| series(&format!("{name}{{partition=\"{p}\"}}"));
            assert!(
                of("sluice_partition_records_processed_total") > 1.0,
                "{text}"
            );
            assert!(of("sluice_partition_processed_position") > 1.0, "{text}");
            assert!(of("sluice_partition_log_bytes") > 0.0, "{text}");
            assert!(of("sluice_partition_log_segments") >= 1.0, "{text}");
            assert!(
                of("sluice_partition_log_flush_duration_seconds_count") >= 1.0,
                "{text}"
            );
            assert!(of("sluice_partition_snapshot_size_bytes") > 0.0, "{text}");
            refused += of("sluice_partition_records_refused_total");
        }
        // The gateway asked each hosted partition to create checkpoint 1.
        assert!(
            sum_of(
                &after,
                "sluice_broker_request_duration_seconds_count{method=\"POST\",route=\"/internal/v1/partitions/{partition}/checkpoints/{id}\""
            ) >= count,
            "{text}"
        );
    }
    assert_eq!(refused, 1.0, "the one withdrawal short of funds");
    let (text, gateway) = scrape(&client, &gateway_page).await;
    assert_eq!(
        value(
            &gateway,
            "sluice_gateway_request_duration_seconds_count{method=\"POST\",route=\"/actuator/backups/{backupId}\",status=\"200\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        sum_of(
            &gateway,
            "sluice_gateway_request_duration_seconds_count{method=\"POST\",route=\"/v1/accounts/{account}/withdraw\""
        ) >= 1.0,
        "{text}"
    );

    // A stopped broker is counted out; the gateway's page still answers.
    cluster.brokers[1].stop_ok();
    let (text, one_down) = scrape(&client, &gateway_page).await;
    assert_eq!(value(&one_down, "sluice_gateway_brokers_up"), 1.0, "{text}");

    // Node 1 loses its data and is restored from backup 1.
    let data_dir = &spec.brokers[1].data_dir;
    std::fs::remove_dir_all(data_dir)
        .unwrap_or_else(|e| panic!("remove {}: {e}", data_dir.display()));
    let output = spec.restore(1, &Env::new(), &["1"]);
    assert!(output.status.success(), "restore:\n{}", describe(&output));
    let report_path = data_dir.join("restore-report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", report_path.display())),
    )
    .expect("the restore report is JSON");
    assert_eq!(report["backupId"], 1, "{report}");
    assert_eq!(report["nodeId"], 1, "{report}");
    assert_eq!(report["partitions"], serde_json::json!([2]), "{report}");
    assert!(report["files"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(report["bytes"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(report["finishedAt"].is_string(), "{report}");
    assert!(
        !std::fs::read_dir(data_dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".sluice-restore")),
        "the staging directory is gone"
    );

    // The restarted broker (the report next to its partitions is harmless) shows the restore.
    cluster.brokers[1].restart();
    cluster.brokers[1]
        .wait_ready(&spec.brokers[1].health_url())
        .await;
    assert_eq!(ledger_total(&ep.api).await, total, "{}", cluster.logs());
    let (text, gateway) = scrape(&client, &gateway_page).await;
    assert_eq!(value(&gateway, "sluice_gateway_brokers_up"), 2.0, "{text}");
    let (text, restored) = scrape(&client, &broker_page(1)).await;
    assert_eq!(value(&restored, "sluice_restore_backup_id"), 1.0, "{text}");
    assert_eq!(
        value(&restored, "sluice_restore_files"),
        report["files"].as_u64().unwrap() as f64,
        "{text}"
    );
    assert_eq!(
        value(&restored, "sluice_restore_bytes"),
        report["bytes"].as_u64().unwrap() as f64,
        "{text}"
    );
    assert_eq!(
        value(&restored, "sluice_restore_duration_seconds"),
        report["durationMs"].as_u64().unwrap() as f64 / 1000.0,
        "{text}"
    );
    assert!(
        value(&restored, "sluice_restore_timestamp_seconds") > 1.6e9,
        "{text}"
    );
    // Counters start again with the process; node 0's are untouched, and it was not restored.
    assert_eq!(
        value(&restored, "sluice_backups_total{status=\"completed\"}"),
        0.0,
        "{text}"
    );
    let (text, node0) = scrape(&client, &broker_page(0)).await;
    assert_eq!(
        value(&node0, "sluice_backups_total{status=\"completed\"}"),
        2.0,
        "{text}"
    );
    assert!(
        !text.contains("\nsluice_restore_backup_id "),
        "node 0 was not restored:\n{text}"
    );

    cluster.stop();
}

/// Broker and gateway in one process: two pages, each passing promtool, no family on both but
/// the process metrics (the same process, scraped as two targets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_one_coherent_page_per_endpoint() {
    let dir = tempfile::Builder::new()
        .prefix("sluice-standalone-metrics-")
        .tempdir()
        .expect("create a temporary directory");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let [api_port, mgmt_port, broker_port, broker_metrics_port] = ports;
    let env: Env = [
        ("SLUICE_BROKER_DATA_DIRECTORY", "data".to_string()),
        ("SLUICE_BROKER_NETWORK_PORT", broker_port.to_string()),
        (
            "SLUICE_BROKER_NETWORK_MANAGEMENTPORT",
            broker_metrics_port.to_string(),
        ),
        ("SLUICE_GATEWAY_NETWORK_PORT", api_port.to_string()),
        ("SLUICE_GATEWAY_MANAGEMENT_PORT", mgmt_port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut standalone = Proc::spawn(
        "standalone",
        "sluice-standalone",
        env,
        dir.path(),
        &dir.path().join("standalone.log"),
    );
    let mgmt = format!("http://127.0.0.1:{mgmt_port}");
    standalone
        .wait_ready(&format!("{mgmt}/actuator/health"))
        .await;
    deposit(&format!("http://127.0.0.1:{api_port}"), "alice", 5).await;

    let client = http_client();
    let (gateway_text, gateway) = scrape(&client, &format!("{mgmt}/actuator/prometheus")).await;
    let (broker_text, broker) = scrape(
        &client,
        &format!("http://127.0.0.1:{broker_metrics_port}/metrics"),
    )
    .await;
    assert_eq!(
        value(&gateway, "sluice_gateway_brokers_up"),
        1.0,
        "{gateway_text}"
    );
    assert_eq!(
        sum_of(&broker, "sluice_partition_records_processed_total{"),
        1.0,
        "{broker_text}"
    );
    let broker_families = families(&broker_text);
    let shared: Vec<String> = families(&gateway_text)
        .into_iter()
        .filter(|f| !f.starts_with("process_") && broker_families.contains(f))
        .collect();
    assert!(
        shared.is_empty(),
        "{shared:?} on both pages:\n{gateway_text}\n{broker_text}"
    );
    standalone.stop_ok();
}
