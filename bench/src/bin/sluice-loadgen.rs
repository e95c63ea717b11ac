//! `sluice-loadgen`: ledger load against any Sluice gateway, with a live progress line and a
//! summary of throughput and latency percentiles. See BENCHMARKS.md.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use sluice_bench::args::Args;
use sluice_bench::loadgen::{self, LoadConfig};

const USAGE: &str = "usage: sluice-loadgen [options]

Sends deposits, withdrawals and transfers (same- and cross-partition) through POST /v1/commands of
a Sluice gateway, prints a live progress line and, at the end, throughput and latency percentiles
per command (a command's latency is its request's round trip; in open-loop mode counted from when
the request was due). Every account first gets a large deposit; at the end the ledger total is
checked against the run's deposits and withdrawals (assumes no other writer; --no-ledger-check).
Exits 1 when a command failed or the ledger does not add up.

options:
  --url URL                    gateway client API (default http://127.0.0.1:8080)
  --rate N                     commands per second, open loop; 0 = closed loop, as fast as
                               --concurrency allows (default 0)
  --duration D                 e.g. 30s, 2m (default 30s)
  --accounts N                 number of accounts (default 1000)
  --cross-partition-ratio F    share of commands that are cross-partition transfers (default 0.2)
  --transfer-ratio F           share of commands that are same-partition transfers (default 0.2)
  --withdraw-ratio F           share of withdrawals (default 0.1); the rest are deposits
  --batch N                    commands per request, 1..=10000 (default 100)
  --concurrency N              requests in flight (default 8; open loop: at most that many)
  --account-prefix P           account ids are P-0, P-1, ... (default lg)
  --seed N                     random seed (default 1)
  --no-ledger-check            skip the ledger check
  --quiet                      no progress line
  -h, --help                   this text";

fn config(args: &Args) -> Result<LoadConfig> {
    let defaults = LoadConfig::default();
    let config = LoadConfig {
        url: args.string("url").unwrap_or(&defaults.url).to_string(),
        rate: args.get("rate", defaults.rate)?,
        duration: args.duration("duration", defaults.duration)?,
        accounts: args.get("accounts", defaults.accounts)?,
        cross_partition_ratio: args
            .ratio("cross-partition-ratio", defaults.cross_partition_ratio)?,
        transfer_ratio: args.ratio("transfer-ratio", defaults.transfer_ratio)?,
        withdraw_ratio: args.ratio("withdraw-ratio", defaults.withdraw_ratio)?,
        batch: args.get("batch", defaults.batch)?,
        concurrency: args.get("concurrency", defaults.concurrency)?,
        account_prefix: args
            .string("account-prefix")
            .unwrap_or(&defaults.account_prefix)
            .to_string(),
        seed: args.get("seed", defaults.seed)?,
        check_ledger: !args.flag("no-ledger-check"),
        progress: (!args.flag("quiet")).then(|| "sluice-loadgen".to_string()),
    };
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match Args::parse(
        &raw,
        &["no-ledger-check", "quiet"],
        &[
            "url",
            "rate",
            "duration",
            "accounts",
            "cross-partition-ratio",
            "transfer-ratio",
            "withdraw-ratio",
            "batch",
            "concurrency",
            "account-prefix",
            "seed",
        ],
    )
    .and_then(|args| config(&args))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice-loadgen: {error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let run = tokio::select! {
        run = loadgen::run(config) => run,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nsluice-loadgen: interrupted");
            return ExitCode::from(130);
        }
    };
    match run {
        Ok(mut report) => {
            print!("{}", report.summary());
            match report.problem() {
                None => ExitCode::SUCCESS,
                Some(problem) => {
                    eprintln!("sluice-loadgen: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("sluice-loadgen: {error:#}");
            // Give a slow terminal the last line.
            tokio::time::sleep(Duration::from_millis(10)).await;
            ExitCode::FAILURE
        }
    }
}
