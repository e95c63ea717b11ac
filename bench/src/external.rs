//! The baselines' tools (`aws s3 cp`, `cp -r`, `sync`) and timed runs of external programs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_tests::S3Settings;
use tempfile::TempDir;
use tokio::process::Command;

/// Runs `command` to completion within `timeout` and returns its wall time; fails (naming
/// `what`, with the tail of its output) when it cannot start, exits non-zero, or runs too long.
/// The child is killed if this future is dropped (Ctrl-C).
pub async fn timed(command: Command, timeout: Duration, what: &str) -> Result<Duration> {
    Ok(timed_output(command, timeout, what).await?.0)
}

/// [`timed`], also returning the standard output.
pub async fn timed_output(
    command: Command,
    timeout: Duration,
    what: &str,
) -> Result<(Duration, String)> {
    let (elapsed, output, _) = run(command, timeout, what, None).await?;
    Ok((elapsed, output))
}

/// [`timed_output`], also returning the peak resident memory (`VmRSS`) of the process, sampled
/// every `rss_poll`.
pub async fn timed_output_with_peak_rss(
    command: Command,
    timeout: Duration,
    what: &str,
    rss_poll: Duration,
) -> Result<(Duration, String, u64)> {
    run(command, timeout, what, Some(rss_poll)).await
}

async fn run(
    mut command: Command,
    timeout: Duration,
    what: &str,
    rss_poll: Option<Duration>,
) -> Result<(Duration, String, u64)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let sampler = rss_poll
        .zip(child.id())
        .map(|(every, pid)| crate::sys::RssSampler::start(pid, every));
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let elapsed = started.elapsed();
    let (rss_peak, _) = sampler
        .map(super::sys::RssSampler::finish)
        .unwrap_or_default();
    let output = match output {
        Ok(output) => output.with_context(|| format!("waiting for {what}"))?,
        Err(_) => bail!("{what} did not finish within {timeout:?} (killed)"),
    };
    if !output.status.success() {
        bail!(
            "{what} exited with {}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        );
    }
    Ok((
        elapsed,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        rss_peak,
    ))
}

/// The last 40 lines of an output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `cp -r FROM TO` then `sync`: the time a plain copy takes to be durable.
pub async fn cp_and_sync(from: &Path, to: &Path, timeout: Duration) -> Result<Duration> {
    let mut cp = Command::new("cp");
    cp.arg("-r").arg(from).arg(to);
    let copy = timed(cp, timeout, "cp -r").await?;
    let flush = sync(to, timeout).await?;
    Ok(copy + flush)
}

/// `sync -f PATH`: flushes the file system holding `path` (what `sync` does for it, without
/// waiting for other file systems).
pub async fn sync(path: &Path, timeout: Duration) -> Result<Duration> {
    let mut command = Command::new("sync");
    command.arg("-f").arg(path);
    timed(command, timeout, "sync").await
}

/// The AWS CLI (`awscli`) against the Garage of this run, path-style, region `garage`, with the
/// same key as the brokers and nothing from the user's AWS configuration.
pub struct Aws {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    config: TempDir,
    pub version: String,
}

impl Aws {
    /// `None` (with the reason) when `aws` is not installed.
    pub async fn find(s3: &S3Settings) -> std::result::Result<Aws, String> {
        let output = Command::new("aws")
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                format!(
                    "`aws` is not installed ({e}); install it with `python3 -m pip install awscli`"
                )
            })?;
        if !output.status.success() {
            return Err(format!("`aws --version` exited with {}", output.status));
        }
        // awscli v1 prints its version on stderr, v2 on stdout.
        let version = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .split_whitespace()
        .next()
        .unwrap_or("aws")
        .to_string();
        let config = tempfile::Builder::new()
            .prefix("sluice-bench-aws-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let file = format!(
            "[default]\nregion = {}\ns3 =\n  addressing_style = path\n",
            s3.region
        );
        std::fs::write(config.path().join("config"), file)
            .map_err(|e| format!("cannot write the aws config: {e}"))?;
        Ok(Aws {
            endpoint: s3.endpoint.clone(),
            access_key: s3.access_key.clone(),
            secret_key: s3.secret_key.clone(),
            region: s3.region.clone(),
            config,
            version,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("aws");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command
            .env("AWS_CONFIG_FILE", self.config.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.config.path().join("absent-credentials"),
            )
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", &self.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("--endpoint-url")
            .arg(&self.endpoint);
        command
    }

    /// `aws s3 cp --recursive FROM TO` (either side may be `s3://bucket/prefix/`), timed.
    pub async fn cp_recursive(&self, from: &str, to: &str, timeout: Duration) -> Result<Duration> {
        let mut command = self.command();
        command
            .args(["s3", "cp", "--recursive", "--only-show-errors"])
            .arg(from)
            .arg(to);
        timed(
            command,
            timeout,
            &format!("aws s3 cp --recursive {from} {to}"),
        )
        .await
    }
}

/// A directory of hard links to `files` (relative name → source path): the same bytes as the
/// originals, laid out as the benchmark wants to copy them.
pub fn link_tree(root: &Path, files: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (relative, source) in files {
        let target = root.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::hard_link(source, &target)
            .with_context(|| format!("cannot link {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}
