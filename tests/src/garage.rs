//! Garage, the S3 server of the tests and the benchmark.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_backup_store::{BackupStore, BackupStoreOptions, S3Encryption, StoreKind};
use tempfile::TempDir;

use crate::paths::workspace_root;
use crate::process::{describe, run_bounded, tail};
use crate::Env;

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
            .map_or_else(|| panic!("garage setting {key} missing"), String::as_str)
    }

    /// The S3 settings of this Garage (endpoint, bucket, key), as the brokers get them.
    pub fn s3(&self) -> S3Settings {
        let setting = |key: &str| {
            self.setting(&format!("SLUICE_BROKER_DATA_BACKUP_S3_{key}"))
                .to_string()
        };
        S3Settings {
            endpoint: setting("ENDPOINT"),
            region: setting("REGION"),
            bucket: setting("BUCKETNAME"),
            access_key: setting("ACCESSKEY"),
            secret_key: setting("SECRETKEY"),
            force_path_style: setting("FORCEPATHSTYLEACCESS") == "true",
        }
    }

    /// A backup store on this Garage's bucket, below `base_path` when given; panics when it
    /// cannot be opened.
    pub fn store(&self, base_path: Option<String>) -> BackupStore {
        BackupStore::open(BackupStoreOptions::new(self.s3().store_kind(), base_path))
            .unwrap_or_else(|e| panic!("open the S3 backup store on Garage: {e}"))
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

/// The S3 settings of a [`Garage`] (what `scripts/garage-start.sh` printed). No `Debug`: it holds
/// the secret key.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub force_path_style: bool,
}

impl S3Settings {
    /// The backup store's description of this S3 bucket (plain HTTP when the endpoint says so).
    pub fn store_kind(&self) -> StoreKind {
        StoreKind::S3 {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: self.region.clone(),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            force_path_style: self.force_path_style,
            allow_http: self.endpoint.starts_with("http://"),
            server_side_encryption: S3Encryption::default(),
        }
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
pub(crate) fn start_script_settings(script: &str, output: &Output, keys: &[&str]) -> Env {
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
