//! `GET /actuator/prometheus`: two brokers and a gateway on a filesystem store. No backup yet →
//! zero completed; backup 1 → one completed partition backup per partition, bytes and files
//! uploaded, last completed id 1; a stopped broker is left out (brokers up 1), not an error; node 1
//! restored from backup 1 and restarted → its restore metrics appear.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_tests::*;

const PARTITIONS: u32 = 3;

/// The exposition text and its content type.
async fn scrape(mgmt: &str) -> (String, String) {
    let url = format!("{mgmt}/actuator/prometheus");
    let response = http_client()
        .get(&url)
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
    (text, content_type)
}

/// Sample lines: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|e| panic!("value of {line:?}: {e}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

/// The sum of `name` over every node (series `name{node="…"}` plus `extra` labels).
fn sum_over_nodes(samples: &BTreeMap<String, f64>, name: &str, extra: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with(&format!("{name}{{node=\""))
                && series.ends_with(&format!("\"{extra}}}"))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every metric is described exactly once, whatever the number of brokers.
fn assert_described_once(text: &str) {
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let mut helps: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            *types.entry(rest.split(' ').next().unwrap()).or_default() += 1;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            *helps.entry(rest.split(' ').next().unwrap()).or_default() += 1;
        }
    }
    for name in [
        "sluice_gateway_brokers_up",
        "sluice_backups_total",
        "sluice_backups_in_progress",
        "sluice_backup_uploaded_bytes_total",
        "sluice_backup_uploaded_files_total",
        "sluice_backup_duration_seconds",
        "sluice_backup_last_completed_id",
        "sluice_backup_last_completed_timestamp_seconds",
        "sluice_restore_backup_id",
        "sluice_restore_bytes",
        "sluice_restore_files",
        "sluice_restore_duration_seconds",
        "sluice_restore_timestamp_seconds",
    ] {
        assert_eq!(types.get(name), Some(&1), "# TYPE of {name}:\n{text}");
        assert_eq!(helps.get(name), Some(&1), "# HELP of {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_shows_backups_and_restores() {
    let spec = ClusterSpec::new(2, PARTITIONS).with_filesystem_store();
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();

    // Nothing backed up yet.
    let (text, content_type) = scrape(&ep.mgmt).await;
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content type {content_type:?}"
    );
    assert_described_once(&text);
    let before = samples(&text);
    assert_eq!(value(&before, "sluice_gateway_brokers_up"), 2.0, "{text}");
    for node in 0..2 {
        assert_eq!(
            value(
                &before,
                &format!("sluice_backups_total{{node=\"{node}\",status=\"completed\"}}")
            ),
            0.0,
            "{text}"
        );
        assert_eq!(
            value(
                &before,
                &format!("sluice_backups_total{{node=\"{node}\",status=\"failed\"}}")
            ),
            0.0,
            "{text}"
        );
    }
    assert!(
        !text.contains("sluice_backup_last_completed_id{")
            && !text.contains("sluice_restore_backup_id{"),
        "no backup and no restore yet:\n{text}"
    );

    // Backup 1 of some data.
    let deposits: Vec<(String, u64)> = (0..300).map(|i| (format!("m-{i:03}"), i + 1)).collect();
    deposit_all(&ep.api, &deposits).await;
    let total: u64 = deposits.iter().map(|(_, a)| a).sum();
    let (status, body) = take_backup(&ep.mgmt, "1").await;
    assert_eq!(status, 200, "POST backup 1: {body}\n{}", cluster.logs());
    poll_backup(&ep.mgmt, 1, "COMPLETED", Duration::from_secs(60)).await;

    let (text, _) = scrape(&ep.mgmt).await;
    assert_described_once(&text);
    let after = samples(&text);
    assert_eq!(value(&after, "sluice_gateway_brokers_up"), 2.0, "{text}");
    assert_eq!(
        sum_over_nodes(&after, "sluice_backups_total", ",status=\"completed\""),
        f64::from(PARTITIONS),
        "one completed partition backup per partition:\n{text}"
    );
    // Partitions 1 and 3 live on node 0, partition 2 on node 1.
    for (node, hosted) in [(0, 2.0), (1, 1.0)] {
        let labels = format!("{{node=\"{node}\"}}");
        assert_eq!(
            value(
                &after,
                &format!("sluice_backups_total{{node=\"{node}\",status=\"completed\"}}")
            ),
            hosted,
            "{text}"
        );
        assert_eq!(
            value(
                &after,
                &format!("sluice_backups_total{{node=\"{node}\",status=\"failed\"}}")
            ),
            0.0,
            "{text}"
        );
        assert_eq!(
            value(&after, &format!("sluice_backups_in_progress{labels}")),
            0.0,
            "{text}"
        );
        assert!(
            value(
                &after,
                &format!("sluice_backup_uploaded_bytes_total{labels}")
            ) > 0.0,
            "{text}"
        );
        assert!(
            value(
                &after,
                &format!("sluice_backup_uploaded_files_total{labels}")
            ) >= hosted,
            "{text}"
        );
        assert_eq!(
            value(&after, &format!("sluice_backup_last_completed_id{labels}")),
            1.0,
            "{text}"
        );
        let timestamp = value(
            &after,
            &format!("sluice_backup_last_completed_timestamp_seconds{labels}"),
        );
        assert!(timestamp > 1.6e9, "a Unix time in seconds: {timestamp}");
        assert_eq!(
            value(
                &after,
                &format!("sluice_backup_duration_seconds_count{labels}")
            ),
            hosted,
            "{text}"
        );
        assert_eq!(
            value(
                &after,
                &format!("sluice_backup_duration_seconds_bucket{{node=\"{node}\",le=\"+Inf\"}}")
            ),
            hosted,
            "{text}"
        );
    }

    // A stopped broker is left out and counted down; the endpoint still answers.
    cluster.brokers[1].stop_ok();
    let (text, _) = scrape(&ep.mgmt).await;
    assert_described_once(&text);
    let one_down = samples(&text);
    assert_eq!(value(&one_down, "sluice_gateway_brokers_up"), 1.0, "{text}");
    assert!(
        !text.contains("node=\"1\""),
        "the stopped broker has no series:\n{text}"
    );
    assert_eq!(
        value(
            &one_down,
            "sluice_backups_total{node=\"0\",status=\"completed\"}"
        ),
        2.0,
        "{text}"
    );

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
    let (text, _) = scrape(&ep.mgmt).await;
    assert_described_once(&text);
    let restored = samples(&text);
    assert_eq!(value(&restored, "sluice_gateway_brokers_up"), 2.0, "{text}");
    let node1 = "{node=\"1\"}";
    assert_eq!(
        value(&restored, &format!("sluice_restore_backup_id{node1}")),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&restored, &format!("sluice_restore_files{node1}")),
        report["files"].as_u64().unwrap() as f64,
        "{text}"
    );
    assert_eq!(
        value(&restored, &format!("sluice_restore_bytes{node1}")),
        report["bytes"].as_u64().unwrap() as f64,
        "{text}"
    );
    assert_eq!(
        value(
            &restored,
            &format!("sluice_restore_duration_seconds{node1}")
        ),
        report["durationMs"].as_u64().unwrap() as f64 / 1000.0,
        "{text}"
    );
    assert!(
        value(
            &restored,
            &format!("sluice_restore_timestamp_seconds{node1}")
        ) > 1.6e9,
        "{text}"
    );
    assert!(
        !text.contains("sluice_restore_backup_id{node=\"0\"}"),
        "node 0 was not restored:\n{text}"
    );
    // Counters start again with the process; node 0's are untouched.
    assert_eq!(
        value(
            &restored,
            "sluice_backups_total{node=\"1\",status=\"completed\"}"
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(
            &restored,
            "sluice_backups_total{node=\"0\",status=\"completed\"}"
        ),
        2.0,
        "{text}"
    );

    cluster.stop();
}
