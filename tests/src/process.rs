//! Processes: a running Sluice binary ([`Proc`]) and bounded runs of short-lived programs.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::http::http_client;
use crate::paths::bin;
use crate::Env;

/// How long a process gets to answer its readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The last `lines` lines of a file (for failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match fs::File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(error) => return format!("<cannot read {}: {error}>", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// A command with the test environment's `SLUICE_*` and `AWS_*` variables removed (so the
/// configuration is exactly `env`), `RUST_LOG=info` unless `env` says otherwise.
pub fn clean_command(program: &Path, env: &Env, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("SLUICE_") || key.starts_with("AWS_") {
            command.env_remove(key.as_ref());
        }
    }
    command.env_remove("SLUICE_CONFIG");
    command.env("RUST_LOG", "info");
    command.envs(env);
    command.current_dir(cwd);
    command.stdin(Stdio::null());
    command
}

/// A running Sluice binary; killed (SIGKILL) when dropped.
pub struct Proc {
    name: String,
    program: PathBuf,
    env: Env,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts binary `bin_name` with `env`, in `cwd`; stdout and stderr are appended to `log`.
    pub fn spawn(name: &str, bin_name: &str, env: Env, cwd: &Path, log: &Path) -> Proc {
        let mut proc = Proc {
            name: name.to_string(),
            program: bin(bin_name),
            env,
            cwd: cwd.to_path_buf(),
            log: log.to_path_buf(),
            child: None,
        };
        proc.start();
        proc
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        if let Some(parent) = self.log.parent() {
            fs::create_dir_all(parent).expect("create the log directory");
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = clean_command(&self.program, &self.env, &self.cwd)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}",
                    self.name,
                    self.program.display()
                )
            });
        self.child = Some(child);
    }

    /// Starts the process again with the same binary, environment and directory.
    pub fn restart(&mut self) {
        self.start();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The last lines of this process's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 60)
    }

    /// Whether the process exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `url` until it answers 200, for at most [`READY_TIMEOUT`]; panics with the log tail
    /// when it does not or when the process exits.
    pub async fn wait_ready(&mut self, url: &str) {
        self.wait_ready_with(&http_client(), url).await;
    }

    /// [`Proc::wait_ready`] with a client of its own (e.g. one that trusts a test CA).
    pub async fn wait_ready_with(&mut self, client: &reqwest::Client, url: &str) {
        self.wait_ready_within(client, url, READY_TIMEOUT).await;
    }

    /// [`Proc::wait_ready_with`] for at most `timeout` (e.g. a broker that replays a long log).
    pub async fn wait_ready_within(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < timeout {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited with {status} before it was ready ({url}: {last})\n---- log tail ({}) ----\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            match client.get(url).send().await {
                Ok(response) if response.status().as_u16() == 200 => return,
                Ok(response) => {
                    let status = response.status();
                    last = format!("{status}: {}", response.text().await.unwrap_or_default());
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} was not ready within {timeout:?} ({url}: {last})\n---- log tail ({}) ----\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        );
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`] for the exit; panics (after a SIGKILL) when the
    /// process does not stop in time. Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("{} is not running", self.name);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} did not exit within {STOP_TIMEOUT:?} after SIGTERM (killed)\n---- log tail ({}) ----\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        );
    }

    /// [`Proc::stop`], asserting a successful exit.
    pub fn stop_ok(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n---- log tail ({}) ----\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sluice-restore` with `env` and `args` in `cwd` and returns its output.
pub fn run_restore_in(env: &Env, cwd: &Path, args: &[&str]) -> Output {
    let mut command = clean_command(&bin("sluice-restore"), env, cwd);
    command.args(args);
    run_bounded(command, Duration::from_secs(120), "sluice-restore")
}

/// Runs `program` (e.g. a `bin/` launcher) with exactly `env` and `args` in `cwd`, bounded to
/// two minutes, and returns its output.
pub fn run_program_in(program: &Path, env: &Env, cwd: &Path, args: &[&str]) -> Output {
    let mut command = clean_command(program, env, cwd);
    command.args(args);
    run_bounded(
        command,
        Duration::from_secs(120),
        &program.display().to_string(),
    )
}

/// Runs `sluice-restore` with `env` and `args` in a fresh temporary directory.
pub fn run_restore(env: &Env, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("create a temporary directory");
    run_restore_in(env, cwd.path(), args)
}

/// Runs a command to completion, killing it after `timeout`.
pub(crate) fn run_bounded(mut command: Command, timeout: Duration, what: &str) -> Output {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let mut child = command
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the process") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}\n---- stderr ----\n{}",
                tail(&err_path, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// Describes an output for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n---- stdout ----\n{}\n---- stderr ----\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
