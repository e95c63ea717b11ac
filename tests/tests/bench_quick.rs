//! `sluice-bench --quick --no-build` end to end (Garage, a 2-broker cluster, awscli baselines
//! when `aws` is installed): it must exit 0 and print every row of its table. Only that the
//! harness runs is checked, never a timing.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{bin, describe};

/// Quick mode takes about a minute on 2 cores; a hung phase fails within its own bound (at most
/// about 2.5 minutes), so this is only a last resort.
const BENCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `sluice-bench` with the test's environment (PATH finds `garage`, `aws`, `python3`),
/// killing it after [`BENCH_TIMEOUT`].
fn run_bench(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(bin("sluice-bench"));
    let home = std::env::var("HOME").unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_default();
    command
        .args(args)
        .env("PATH", format!("{path}:{home}/.cargo/bin"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"));
    let mut child = command.spawn().expect("run sluice-bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sluice-bench") {
            break status;
        }
        if started.elapsed() > BENCH_TIMEOUT {
            // SIGKILL leaves its children (Garage, brokers) behind; SIGTERM lets it stop them.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice-bench --quick did not finish within {BENCH_TIMEOUT:?}\n---- stdout ----\n{}\n---- stderr ----\n{}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                sluice_tests::tail(&err_path, 80)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

#[test]
fn quick_benchmark_runs_and_prints_the_table() {
    let output = run_bench(&["--quick", "--no-build"]);
    assert!(
        output.status.success(),
        "sluice-bench --quick failed:\n{}",
        describe(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| #"))
        .unwrap_or_else(|| panic!("no table header:\n{}", describe(&output)));
    for column in ["metric", "Sluice", "baseline", "ratio", "target", "met"] {
        assert!(header.contains(column), "column {column} missing: {header}");
    }
    let ids: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #") && !l.starts_with("| -"))
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .collect();
    assert_eq!(
        ids,
        [
            "1a", "1b", "1c", "2", "2b", "3a", "3b", "3c", "4a", "4b", "5", "5b", "6", "7a", "7b",
            "7c", "7d", "8a", "8b", "8c", "8d", "9a", "9b"
        ],
        "the table's rows:\n{}",
        describe(&output)
    );
    // Ratios are numbers, never NaN or infinite.
    for line in stdout.lines().filter(|l| l.starts_with("| ")) {
        let ratio = line.split('|').nth(5).map(str::trim).unwrap_or_default();
        assert!(!ratio.contains("NaN") && !ratio.contains("inf"), "{line}");
    }
    assert!(
        stdout.contains("command: sluice-bench --quick --no-build"),
        "{stdout}"
    );
}
