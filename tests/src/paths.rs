//! Where the workspace and the Sluice binaries are, and free loopback ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// The `bin/<name>` launcher of the repository when the binaries are the workspace's own
/// (`SLUICE_BIN_DIR` unset), else the binary `sluice-<name>` of [`bin_dir`] itself.
pub fn launcher(name: &str) -> PathBuf {
    let binary = bin(&format!("sluice-{name}"));
    match std::env::var_os("SLUICE_BIN_DIR") {
        Some(dir) if !dir.is_empty() => binary,
        _ => workspace_root().join("bin").join(name),
    }
}
