//! The broker's background runtime: where backups run, on threads of a lower CPU priority than
//! the partitions' (nice +10), so that reading, hashing, compressing, encrypting and sending a
//! backup takes the capacity the partitions leave, not theirs. Its own worker and blocking
//! threads: a backup's `spawn_blocking` work (hashing, sealing) lands on them too.
//!
//! One per process, never shut down: the backup store's HTTP connections may be opened on it
//! and used from the main runtime (status reads), so it lives as long as the process.

use std::sync::OnceLock;

/// The nice value the background threads add to the process's (Linux: per thread).
pub const NICE_INCREMENT: i32 = 10;
/// Worker threads of the runtime: uploads wait on the network mostly; the CPU-heavy parts are
/// blocking tasks, bounded by the uploads in flight.
const WORKER_THREADS: usize = 2;

/// The handle of the background runtime, started on first use.
pub fn runtime() -> tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("sluice-background")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .expect("the background runtime starts")
        })
        .handle()
        .clone()
}

/// Lowers the calling thread's CPU priority by [`NICE_INCREMENT`]. Best effort: a failure is
/// logged, the thread runs on at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to the thread (its id as `who`).
        // SAFETY: gettid and getpriority/setpriority take plain integers and touch no memory.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, current + NICE_INCREMENT)
        };
        if result != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(),
                "could not lower the priority of a background thread; backups run at the partitions' priority");
        }
    }
}

/// The nice value of the calling thread (Linux).
#[cfg(all(test, target_os = "linux"))]
fn thread_nice() -> i32 {
    // SAFETY: as above.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Work on the background runtime, async and blocking, runs NICE_INCREMENT below the
    /// caller's priority (a higher nice value); the caller's thread is untouched.
    #[test]
    fn background_threads_run_at_a_lower_priority() {
        let caller = thread_nice();
        let handle = runtime();
        let (worker, blocking) = std::thread::spawn(move || {
            handle.block_on(async {
                let worker = tokio::spawn(async { thread_nice() }).await.unwrap();
                let blocking = tokio::task::spawn_blocking(thread_nice).await.unwrap();
                (worker, blocking)
            })
        })
        .join()
        .unwrap();
        let expected = (caller + NICE_INCREMENT).min(19);
        assert_eq!(worker, expected, "worker thread");
        assert_eq!(blocking, expected, "blocking thread");
        assert_eq!(thread_nice(), caller, "the caller keeps its priority");
    }
}
