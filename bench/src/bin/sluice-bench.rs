//! `sluice-bench [--state-gb N] [--quick]`: builds the release binaries, starts Garage and a real
//! cluster on loopback, measures, and prints one table. See BENCHMARKS.md.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use futures::FutureExt;
use sluice_bench::args::Args;
use sluice_bench::report;
use sluice_bench::run::{run, BenchConfig, Report};
use sluice_bench::sys;

const USAGE: &str = "usage: sluice-bench [--state-gb N] [--quick] [options]

Builds the release binaries, starts Garage (S3) and a 2-broker Sluice cluster on loopback, and
prints one table: backup and restore throughput against awscli and cp, impact of back-to-back
backups on the running cluster, trigger latency at small and large state, broker memory during
a backup, and the throughput of a standalone node. Targets are reported, never failed on; the exit
status is non-zero only when Sluice (or the harness) fails.

options:
  --state-gb N          size of the grown partition, GiB (default 1)
  --quick               CI mode: ~50 MiB of state, 3 s load phases (whole run < 2 min)
  --load-seconds S      length of each load phase (default 20, quick 3)
  --trigger-samples K   triggers per trigger-latency figure (default 20, quick 10); each waits
                        for the previous backup, and they stop after 120 s (quick 20 s), at
                        least 5
  --concurrency N       requests in flight of the closed-loop load (default 8)
  --batch N             commands per /v1/commands request of the load (default 100)
  --segment-mb N        log segment size of the cluster, MiB (default 64, 4..=2048): large
                        segments make a backup a few big files instead of many small ones
  --only continuous     only rows 9a and 9b (continuous backups), after growing the state
  --no-build            do not run `cargo build --release --workspace --bins` first
  -h, --help            this text";

fn config(args: &Args) -> Result<BenchConfig> {
    let mut config = if args.flag("quick") {
        if args.string("state-gb").is_some() {
            bail!("--quick and --state-gb exclude each other");
        }
        BenchConfig::quick()
    } else {
        let gib: f64 = args.get("state-gb", 1.0)?;
        if !(0.02..=64.0).contains(&gib) {
            bail!("--state-gb must be between 0.02 and 64, got {gib}");
        }
        BenchConfig::full(gib)
    };
    if let Some(seconds) = args.string("load-seconds") {
        let seconds: f64 = seconds
            .parse()
            .with_context(|| format!("invalid --load-seconds {seconds:?}"))?;
        if seconds <= 0.0 {
            bail!("--load-seconds must be positive");
        }
        config.load_duration = Duration::from_secs_f64(seconds);
    }
    config.trigger_samples = args.get("trigger-samples", config.trigger_samples)?;
    if config.trigger_samples == 0 {
        bail!("--trigger-samples must be at least 1");
    }
    config.load.concurrency = args.get("concurrency", config.load.concurrency)?;
    config.load.batch = args.get("batch", config.load.batch)?;
    config.load.validate()?;
    match args.string("only") {
        None => {}
        Some("continuous") => config.only_continuous = true,
        Some(other) => bail!("--only takes `continuous` (rows 9a and 9b), got {other:?}"),
    }
    config.segment_mib = args.get("segment-mb", config.segment_mib)?;
    if !(4..=2048).contains(&config.segment_mib) {
        bail!(
            "--segment-mb must be between 4 and 2048, got {}",
            config.segment_mib
        );
    }
    Ok(config)
}

/// `cargo build --release --workspace --bins` in the workspace, output shown.
fn build() -> Result<()> {
    eprintln!("sluice-bench: ---- cargo build --release --workspace --bins");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--workspace", "--bins"])
            .current_dir(sluice_tests::workspace_root())
            .status()
            .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release --workspace --bins failed ({status})");
    }
    Ok(())
}

fn print(report: &Report, command: &str, started: SystemTime, elapsed: Duration) {
    println!();
    println!(
        "Sluice benchmark, {} (UTC), {:.0} s",
        humantime::format_rfc3339_seconds(started),
        elapsed.as_secs_f64()
    );
    println!("command: {command}");
    println!("machine: {}", sys::machine());
    println!();
    print!("{}", report::table(&report.rows));
    println!();
    println!(
        "Rates are data bytes per second (MB = 10^6 B) over wall time; sizes in MiB/GiB. Targets are reported, never failed on."
    );
    for note in &report.notes {
        println!("- {note}");
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let parsed = Args::parse(
        &raw,
        &["quick", "no-build"],
        &[
            "state-gb",
            "load-seconds",
            "trigger-samples",
            "concurrency",
            "batch",
            "segment-mb",
            "only",
        ],
    )
    .and_then(|args| Ok((config(&args)?, args.flag("no-build"))));
    let (config, no_build) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("sluice-bench: {error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let command = format!("sluice-bench {}", raw.join(" ")).trim().to_string();
    if !no_build {
        if let Err(error) = build() {
            eprintln!("sluice-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    let mut report = Report::default();
    // Everything started by the run (processes, Garage, temporary directories) is dropped with
    // the run's future: when it ends, panics, or on Ctrl-C / SIGTERM.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = AssertUnwindSafe(run(config, &mut report)).catch_unwind() => match result {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(std::string::ToString::to_string))
                        .unwrap_or_else(|| "a panic".into());
                    Err(anyhow::anyhow!("the harness panicked: {message}"))
                }
            },
            _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted; everything started was stopped")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    print(&report, &command, started, clock.elapsed());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nsluice-bench: FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}
