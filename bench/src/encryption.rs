//! The cost of client-side encryption (rows 8a to 8d): full backups of the grown state to fresh
//! prefixes, plain and encrypted in the order plain, encrypted, encrypted, plain (so that a
//! drift of the machine or of the store over the phase, which fills as it goes, cancels out),
//! after one backup that is not counted (the first after the restart was the slowest, whatever
//! its kind), each after a `sync` (no write-back of an earlier step competes with it) and, when the bench
//! runs as root, with the page cache dropped (each starts from the same cache), then a restore of
//! each in the same order, all in one phase on the same data: the ratio is
//! encryption's cost, not the moment's noise or the pool's savings. Once on S3 (Garage; 8a, 8b)
//! and once on a FILESYSTEM store (8c, 8d). Garage stores blocks by content hash: a plain
//! backup's objects that an earlier backup (of another prefix) already holds are not written to
//! its disk again, which encrypted objects (random salts, keyed names) never are; the
//! filesystem store writes every object, so 8c/8d measure encryption's own cost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::external;
use crate::report::Row;
use crate::run::{phase, Bench, Report, BIG};
use crate::stats::{mb_per_s, secs, size};

/// Target of the issue: reported, never failed on.
const ENCRYPTED_RATIO_TARGET: f64 = 0.95;
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
const ENCRYPTION_PREFIX: &str = "SLUICE_BROKER_DATA_BACKUP_ENCRYPTION_";
const BASE_PATH: &str = "SLUICE_BROKER_DATA_BACKUP_S3_BASEPATH";

/// Where a backup of the phase goes: an S3 prefix, or a directory of its own with a FILESYSTEM
/// store; and the key file when encrypted.
struct Target {
    base_path: String,
    filesystem: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl Bench {
    /// Rows 8a to 8d (see the module doc). Leaves the brokers running on the last prefix; the
    /// settings are back to the bench's own for the next restart (the next phase restarts).
    pub(crate) async fn encryption_cost(&mut self, report: &mut Report) -> Result<()> {
        let key_file = self.spec.root().join("bench-backup.key");
        std::fs::write(&key_file, sluice_backup_store::generate_key_hex().as_str())?;
        let saved = self.spec.broker_common.clone();
        for (store, rows) in [("S3", ["8a", "8b"]), ("FILESYSTEM", ["8c", "8d"])] {
            phase(&format!("encryption on {store}: full backups plain, encrypted, encrypted, plain, to fresh prefixes; then restores"));
            let filesystem =
                (store == "FILESYSTEM").then(|| self.spec.root().join("bench-encryption-fs"));
            let target = |name: &str, encrypted: bool| Target {
                base_path: name.to_string(),
                filesystem: filesystem.as_ref().map(|root| root.join(name)),
                key_file: encrypted.then(|| key_file.clone()),
            };
            // Not counted: the first backup after the phase's restart ran slower than any other
            // (8.8 s against 4.8 to 5.0 s for the next three of 2.1 GiB on the filesystem
            // store, with the page cache dropped before each), whichever kind came first.
            let warm_up = target("bench-warm-up", false);
            let state_bytes = crate::sys::tree_size(&self.partition_dir(BIG));
            self.full_backup(&warm_up, &saved, state_bytes).await?;
            let order = [
                target("bench-plain-1", false),
                target("bench-encrypted-1", true),
                target("bench-encrypted-2", true),
                target("bench-plain-2", false),
            ];
            self.compare(store, rows, &order, &saved, report).await?;
            self.spec.broker_common = saved.clone();
            if let Some(root) = &filesystem {
                let _ = std::fs::remove_dir_all(root);
            }
        }
        Ok(())
    }

    /// The four backups of `order` and two restores on one kind of store: its two rows.
    async fn compare(
        &mut self,
        store: &str,
        rows: [&str; 2],
        order: &[Target; 4],
        saved: &sluice_tests::Env,
        report: &mut Report,
    ) -> Result<()> {
        let state_bytes = crate::sys::tree_size(&self.partition_dir(BIG));
        let mut ids = Vec::new();
        let (mut plain, mut encrypted) = (Duration::ZERO, Duration::ZERO);
        let mut each = Vec::new();
        let (mut plain_cpu, mut encrypted_cpu) = (Duration::ZERO, Duration::ZERO);
        for target in order {
            let (id, took, cpu) = self.full_backup(target, saved, state_bytes).await?;
            each.push(format!("{} (broker CPU {})", secs(took), secs(cpu)));
            match target.key_file {
                Some(_) => encrypted_cpu += cpu,
                None => plain_cpu += cpu,
            }
            match target.key_file {
                Some(_) => encrypted += took,
                None => plain += took,
            }
            ids.push(id);
        }
        // Restores in the same order as the backups (plain, encrypted, encrypted, plain), each
        // of its own backup: drift cancels out as for the backups.
        let (mut plain_restore, mut encrypted_restore) = (Duration::ZERO, Duration::ZERO);
        for (target, id) in order.iter().zip(&ids) {
            let took = self.restore_from(target, saved, *id, state_bytes).await?;
            match target.key_file {
                Some(_) => encrypted_restore += took,
                None => plain_restore += took,
            }
        }
        report.note(format!(
            "encryption on {store}: two full backups each of {}, plain {} / encrypted {}, broker 0 CPU plain {} / encrypted {} (in the order plain, encrypted, encrypted, plain, each after a sync{}: {}); two restores each of partition {BIG} (same order) plain {} / encrypted {} (AES-256-GCM, 64 KiB chunks; each prefix fresh)",
            size(state_bytes),
            secs(plain),
            secs(encrypted),
            secs(plain_cpu),
            secs(encrypted_cpu),
            if crate::sys::drop_page_cache() {
                " and with the page cache dropped"
            } else {
                " (the page cache could not be dropped: not root)"
            },
            each.join(", "),
            secs(plain_restore),
            secs(encrypted_restore),
        ));
        let ratio = |plain: Duration, encrypted: Duration| {
            plain.as_secs_f64() / encrypted.as_secs_f64().max(1e-9)
        };
        report.rows.push(
            Row::new(
                rows[0],
                format!("backup to {store} encrypted, 2 x {}", size(state_bytes)),
            )
            .sluice(format!(
                "{:.0} MB/s ({})",
                mb_per_s(2 * state_bytes, encrypted),
                secs(encrypted)
            ))
            .against_minimum(
                Ok((format!("plain: {}", secs(plain)), ratio(plain, encrypted))),
                ENCRYPTED_RATIO_TARGET,
            ),
        );
        report.rows.push(
            Row::new(
                rows[1],
                format!("restore from {store} encrypted (bin/restore, verified)"),
            )
            .sluice(secs(encrypted_restore))
            .against_minimum(
                Ok((
                    format!("plain: {}", secs(plain_restore)),
                    ratio(plain_restore, encrypted_restore),
                )),
                ENCRYPTED_RATIO_TARGET,
            ),
        );
        Ok(())
    }

    /// Points the brokers' (and the restore tool's) settings, `saved` otherwise, at `target`.
    fn use_target(&mut self, target: &Target, saved: &sluice_tests::Env) {
        self.spec.broker_common = saved.clone();
        match &target.filesystem {
            None => {
                self.spec
                    .broker_common
                    .insert(BASE_PATH.into(), target.base_path.clone());
            }
            Some(root) => self.use_filesystem_store(root),
        }
        let common = &mut self.spec.broker_common;
        if let Some(key_file) = &target.key_file {
            common.insert(
                format!("{ENCRYPTION_PREFIX}KEYS"),
                format!("bench=file:{}", key_file.display()),
            );
            common.insert(format!("{ENCRYPTION_PREFIX}PRIMARYKEY"), "bench".into());
        }
    }

    /// Restarts the brokers on `target` and takes a backup there (all of it is new), after a
    /// `sync`: its id, how long it took and the CPU time broker 0 (partition 1's) spent meanwhile.
    async fn full_backup(
        &mut self,
        target: &Target,
        saved: &sluice_tests::Env,
        state_bytes: u64,
    ) -> Result<(u64, Duration, Duration)> {
        self.use_target(target, saved);
        let timeout = self.config.timeout_for(state_bytes);
        self.restart(timeout).await?;
        external::sync(self.spec.root(), SYNC_TIMEOUT).await?;
        crate::sys::drop_page_cache();
        let id = self.next_id();
        let pid = self.broker_pid(0)?;
        let cpu_before = crate::sys::cpu_time(pid).unwrap_or_default();
        let (_, took) = self.backup(id, timeout).await?;
        let cpu = crate::sys::cpu_time(pid)
            .unwrap_or_default()
            .saturating_sub(cpu_before);
        Ok((id, took, cpu))
    }

    /// `bin/restore` of node 0 from backup `id` on `target`, after a `sync`.
    async fn restore_from(
        &mut self,
        target: &Target,
        saved: &sluice_tests::Env,
        id: u64,
        state_bytes: u64,
    ) -> Result<Duration> {
        self.use_target(target, saved);
        external::sync(self.spec.root(), SYNC_TIMEOUT).await?;
        crate::sys::drop_page_cache();
        let restore_dir = self
            .spec
            .root()
            .join(format!("restore-{}", target.base_path));
        let (took, _, _) = self.run_restore_tool(id, &restore_dir, state_bytes).await?;
        std::fs::remove_dir_all(&restore_dir)?;
        Ok(took)
    }
}
