//! The machine: resident memory of a process, sizes of directories, a description of the host.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in bytes.
/// Drops the kernel's clean page cache (`/proc/sys/vm/drop_caches`, after a `sync`), so that the
/// next step starts from the same cache state as the one it is compared with: a file system
/// store's backups ran at two speeds (about 7 s or 4.5 s for 2.1 GiB, plain or encrypted alike)
/// by what the cache held. Whether it could (root only).
pub fn drop_page_cache() -> bool {
    fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The CPU time (user + system) process `pid` has used, from `/proc/<pid>/stat` (clock ticks of
/// 10 ms, the kernel's `USER_HZ` of 100 on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub fn rss(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS")
}

/// Polls `VmRSS` of a process on a thread of its own, keeping the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, u64)>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            let mut samples = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = rss(pid) {
                    peak = peak.max(rss);
                    samples += 1;
                }
                std::thread::sleep(every);
            }
            (peak, samples)
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the peak RSS in bytes and the number of samples.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Total size of the regular files below `path` (0 when absent), without reading them.
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(std::result::Result::ok)
            .map(|e| tree_size(&e.path()))
            .sum()
    })
}

/// One line describing the host: CPUs, memory, kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = proc_meminfo_gib().map_or("? GiB".into(), |g| format!("{g:.0} GiB"));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} CPU ({model}), {memory} RAM, Linux {kernel}")
}

fn proc_meminfo_gib() -> Option<f64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 0);
        let sampler = RssSampler::start(std::process::id(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        let (peak, samples) = sampler.finish();
        assert!(peak > 0 && samples > 0);
    }

    #[test]
    fn sizes_trees() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/x"), [0u8; 100]).unwrap();
        fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(tree_size(dir.path()), 123);
        assert_eq!(tree_size(&dir.path().join("absent")), 0);
    }
}
