//! Continuous archiving of a partition's log (`broker.data.backup.continuous`): every sealed
//! segment is uploaded into the partition's pool as it seals, in the background, so that the log
//! reaches the store as it is written instead of in bursts at checkpoints, and the next
//! checkpoint's backup (a marker every `checkpointInterval`, or a backup) references the
//! segment without reading or sending it. The active segment's new bytes are archived by each
//! checkpoint's backup, which sends only what no earlier one sent (see `crate::pool`).
//!
//! Shape: `Archiver::new(options, backups, metrics)` gives the actor and the [`ArchiveHandle`]
//! its partition keeps; `run(cancel)` is the loop. The partition publishes its sealed segments
//! on a watch channel (the newest list replaces the older: nothing queues); the archiver uploads
//! them oldest first, one at a time, through [`BackupHandle::archive_segment`] (the partition's
//! pool lock, the backups' upload permits and rate limit, on the background runtime), and
//! retries a failed upload with the one retry policy for as long as the store fails.
//!
//! # Layout (on disk)
//!
//! ```text
//! <data>/partition-<id:05>/archive/<segment file name>.json
//! ```
//!
//! One record per archived segment still on disk: its pool entry (the pieces the pool holds for
//! it), at most [`RECORD_BYTES_MAX`]. Written after the segment's pieces landed (temporary file,
//! then rename), removed when the segment leaves the disk.
//!
//! # Invariants
//!
//! - Compaction never deletes a sealed segment that is not archived yet
//!   ([`ArchiveHandle::archived_through`]), unless the sealed segments not archived yet pass
//!   `continuousLagLimit` bytes: the partition then compacts as it would without archiving, and
//!   the archiver counts the segments that left before it archived them
//!   (`sluice_archive_segments_dropped_total`) and goes on with the others. Restore points do
//!   not depend on it: each checkpoint's backup uploads whatever of its log the pool lacks; what
//!   a drop loses is the archive of log that no restore point needs. Processing never waits for
//!   the archiver, and the disk holds at most `continuousLagLimit` more log than without it.
//! - Nothing is uploaded twice across restarts. After a start the records are given back to the
//!   pool (each piece checked against the local bytes when the segment is archived again), and
//!   the partition's collections are held until that first pass is done: one before it would
//!   free the pieces of segments archived but not yet listed by a manifest, and the pass would
//!   send them again.
//! - Bounded: one upload at a time per partition; the state is one entry per sealed segment on
//!   disk; records are read with a size limit and checked against the pool's rules and the
//!   segment they name before use.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_backup_store::{FileEntry, FileKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupHandle, FileToUpload, STORE_RETRY};
use crate::log::{parse_segment_file_name, segment_file_name, SegmentInfo};
use crate::metrics::PartitionMetrics;

/// The folder of the archive records in a partition's directory.
pub const ARCHIVE_FOLDER: &str = "archive";
const RECORD_SUFFIX: &str = ".json";
/// The largest archive record read: far above what a segment's pieces take (a 64 MiB segment
/// archived by markers every second is a few thousand pieces of about 150 bytes each).
pub const RECORD_BYTES_MAX: u64 = 16 << 20;
/// How long a sealed segment may wait for its upload before the broker's health answers
/// DEGRADED.
pub const LAG_DEGRADED_AFTER: Duration = Duration::from_secs(30);
/// How often the lag gauges are refreshed while an upload runs or waits.
const LAG_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub partition_id: u32,
    /// The partition's directory: the records are in its [`ARCHIVE_FOLDER`].
    pub directory: PathBuf,
    /// `broker.data.backup.continuousLagLimit`: past this many bytes of sealed segments not
    /// archived, compaction no longer waits for the archiver.
    pub lag_bytes_max: u64,
}

/// A sealed segment as its partition published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub first_position: u64,
    pub last_position: u64,
    pub path: PathBuf,
    pub len_bytes: u64,
}

impl SealedSegment {
    fn name(&self) -> String {
        segment_file_name(self.first_position)
    }
}

/// What the archiver tells its partition (compaction) and the broker's health answer.
#[derive(Debug, Default)]
pub struct ArchiveProgress {
    /// Every sealed segment whose records are all at or below this position is archived (or
    /// was dropped past the lag limit); 0: none yet.
    archived_through: AtomicU64,
    /// Bytes of sealed segments not archived, and since when the oldest of them waits.
    lag: Mutex<(u64, Option<Instant>)>,
}

impl ArchiveProgress {
    /// The bytes of sealed segments waiting for their upload, and how long the oldest waits.
    pub fn lag(&self) -> (u64, Duration) {
        let (bytes, since) = *self
            .lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (bytes, since.map(|t| t.elapsed()).unwrap_or_default())
    }
}

/// What a partition keeps of its archiver: where it publishes its sealed segments and reads
/// how far they are archived. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveHandle {
    sealed: Arc<watch::Sender<Vec<SealedSegment>>>,
    progress: Arc<ArchiveProgress>,
    lag_bytes_max: u64,
}

impl ArchiveHandle {
    /// Publishes the log's sealed segments (all but the active one) when they changed: called
    /// after every append and compaction, it compares the ends of the list only (segments are
    /// sealed at the end and deleted at the start, never changed).
    pub fn log_is(&self, segments: &[SegmentInfo]) {
        let sealed = &segments[..segments.len().saturating_sub(1)];
        let ends = |firsts: &mut dyn DoubleEndedIterator<Item = u64>, len: usize| {
            (len, firsts.next(), firsts.next_back())
        };
        let sealed_ends = ends(&mut sealed.iter().map(|s| s.first_position), sealed.len());
        self.sealed.send_if_modified(|published| {
            let published_ends = ends(
                &mut published.iter().map(|s| s.first_position),
                published.len(),
            );
            if published_ends == sealed_ends {
                return false;
            }
            *published = sealed
                .iter()
                .map(|s| SealedSegment {
                    first_position: s.first_position,
                    // A sealed segment holds at least one record (an empty one is never rolled).
                    last_position: s.last_position.unwrap_or(s.first_position),
                    path: s.path.clone(),
                    len_bytes: s.len_bytes,
                })
                .collect();
            true
        });
    }

    /// Every sealed segment whose records are all at or below this position is archived.
    pub fn archived_through(&self) -> u64 {
        self.progress.archived_through.load(Ordering::Acquire)
    }

    /// See [`ArchiveOptions::lag_bytes_max`].
    pub fn lag_bytes_max(&self) -> u64 {
        self.lag_bytes_max
    }

    pub fn progress(&self) -> Arc<ArchiveProgress> {
        self.progress.clone()
    }
}

/// One sealed segment the archiver knows of.
#[derive(Debug)]
struct Known {
    segment: SealedSegment,
    /// When the archiver first saw it sealed.
    seen: Instant,
    archived: bool,
}

pub struct Archiver {
    options: ArchiveOptions,
    backups: BackupHandle,
    metrics: PartitionMetrics,
    sealed: watch::Receiver<Vec<SealedSegment>>,
    progress: Arc<ArchiveProgress>,
    /// The sealed segments on disk by first position, as last published.
    known: BTreeMap<u64, Known>,
}

impl Archiver {
    /// The archiver of one partition and the handle its partition keeps. The caller holds the
    /// partition's collections (`Pools::hold_collections`) before anything may ask for one; the
    /// archiver releases them after its first pass.
    pub fn new(
        options: ArchiveOptions,
        backups: BackupHandle,
        metrics: PartitionMetrics,
    ) -> (Archiver, ArchiveHandle) {
        let (sender, sealed) = watch::channel(Vec::new());
        let progress = Arc::new(ArchiveProgress::default());
        let handle = ArchiveHandle {
            sealed: Arc::new(sender),
            progress: progress.clone(),
            lag_bytes_max: options.lag_bytes_max,
        };
        let archiver = Archiver {
            options,
            backups,
            metrics,
            sealed,
            progress,
            known: BTreeMap::new(),
        };
        (archiver, handle)
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let partition_id = self.options.partition_id;
        self.take_sealed();
        self.take_back_records().await;
        let mut first_pass_done = false;
        let mut backoff = STORE_RETRY.start();
        let mut retry_at: Option<Instant> = None;
        let mut refresh = tokio::time::interval(LAG_REFRESH);
        loop {
            self.take_sealed();
            self.publish_progress();
            let next = self.next_unarchived();
            if next.is_none() && !first_pass_done {
                first_pass_done = true;
                self.backups.pools().release_collections(partition_id);
            }
            let ready = retry_at.is_none_or(|at| Instant::now() >= at);
            if let (Some(segment), true) = (next, ready) {
                let backups = self.backups.clone();
                let file = FileToUpload {
                    kind: FileKind::Segment,
                    name: segment.name(),
                    path: segment.path.clone(),
                    len_bytes: segment.len_bytes,
                    pooled: None,
                };
                let archive = backups.archive_segment(partition_id, file);
                tokio::pin!(archive);
                let result = loop {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        result = &mut archive => break result,
                        _ = refresh.tick() => {
                            // Segments sealed meanwhile count in the lag from when they sealed.
                            self.take_sealed();
                            self.publish_progress();
                        }
                    }
                };
                match result {
                    Ok(pooled) => {
                        self.take_sealed();
                        if let Some(known) = self.known.get_mut(&segment.first_position) {
                            known.archived = true;
                            self.write_record(&pooled.entry).await;
                        } else {
                            // Compacted while it uploaded (past the lag limit): no record, and
                            // the pool forgets it.
                            self.forget_in_pool();
                        }
                        self.metrics.segment_archived(pooled.uploaded.stored_bytes);
                        backoff.reset();
                        retry_at = None;
                    }
                    Err(error) => {
                        let delay = backoff.next_delay().unwrap_or(STORE_RETRY.delay_max);
                        tracing::warn!(partition = partition_id, segment = %segment.name(), %error,
                            retry_in_ms = delay.as_millis() as u64,
                            "could not archive a sealed log segment; retrying (processing goes on)");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = self.sealed.changed() => if changed.is_err() { return },
                _ = refresh.tick() => {}
            }
        }
    }

    /// Brings `known` in line with the newest published list: new segments are waiting from
    /// now, those gone are forgotten (with their records), counted as dropped if not archived.
    fn take_sealed(&mut self) {
        let sealed = self.sealed.borrow_and_update().clone();
        let on_disk: HashSet<u64> = sealed.iter().map(|s| s.first_position).collect();
        let mut dropped = 0;
        let mut gone = Vec::new();
        self.known.retain(|first, known| {
            if on_disk.contains(first) {
                return true;
            }
            dropped += u64::from(!known.archived);
            gone.push(known.segment.name());
            false
        });
        if dropped > 0 {
            tracing::warn!(partition = self.options.partition_id, dropped,
                lag_limit_bytes = self.options.lag_bytes_max,
                "sealed log segments were compacted before they were archived: archiving lagged past \
                 broker.data.backup.continuousLagLimit (restore points are not affected; raise the limit \
                 or the upload rate to keep the whole log archived)");
            self.metrics.segments_dropped(dropped);
        }
        for name in &gone {
            remove_record(&self.records_dir(), name);
        }
        let now = Instant::now();
        for segment in sealed {
            self.known.entry(segment.first_position).or_insert(Known {
                segment,
                seen: now,
                archived: false,
            });
        }
        if !gone.is_empty() {
            self.forget_in_pool();
        }
    }

    /// Makes the pool forget the archived segments that left the disk (in a task: the pool
    /// lock may be held by a backup for a while).
    fn forget_in_pool(&self) {
        let names: HashSet<String> = self.known.values().map(|k| k.segment.name()).collect();
        let pools = self.backups.pools().clone();
        let partition_id = self.options.partition_id;
        tokio::spawn(async move {
            let pool = pools.slot_pool(partition_id);
            pool.lock()
                .await
                .retain_archived(|name| names.contains(name));
        });
    }

    /// The oldest sealed segment not archived yet.
    fn next_unarchived(&self) -> Option<SealedSegment> {
        self.known
            .values()
            .find(|k| !k.archived)
            .map(|k| k.segment.clone())
    }

    /// Publishes how far the log is archived (for compaction) and the lag (gauges, health).
    fn publish_progress(&self) {
        let first_unarchived = self.known.values().find(|k| !k.archived);
        let through = match first_unarchived {
            Some(known) => known.segment.first_position.saturating_sub(1),
            None => self
                .known
                .values()
                .next_back()
                .map_or(0, |k| k.segment.last_position),
        };
        self.progress
            .archived_through
            .fetch_max(through, Ordering::AcqRel);
        let waiting: Vec<&Known> = self.known.values().filter(|k| !k.archived).collect();
        let lag_bytes: u64 = waiting.iter().map(|k| k.segment.len_bytes).sum();
        let since = waiting.iter().map(|k| k.seen).min();
        *self
            .progress
            .lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (lag_bytes, since);
        self.metrics
            .archive_lag_is(lag_bytes, since.map(|t| t.elapsed()).unwrap_or_default());
    }

    fn records_dir(&self) -> PathBuf {
        self.options.directory.join(ARCHIVE_FOLDER)
    }

    /// After a start: gives the pool the records of the segments still on disk (to be checked
    /// when archived again) and removes the others.
    async fn take_back_records(&mut self) {
        let dir = self.records_dir();
        let on_disk: HashSet<String> = self.known.values().map(|k| k.segment.name()).collect();
        let encrypted = self.backups.store().primary_key_id().is_some();
        let partition_id = self.options.partition_id;
        let read = {
            let on_disk = on_disk.clone();
            tokio::task::spawn_blocking(move || read_records(&dir, &on_disk, encrypted))
        };
        let recorded = match read.await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(partition = partition_id, %error, "reading the archive records failed; archiving starts anew");
                Vec::new()
            }
        };
        if !recorded.is_empty() {
            tracing::info!(
                partition = partition_id,
                records = recorded.len(),
                "archiving resumes from its records"
            );
        }
        self.backups
            .archived_segments_are(partition_id, recorded, |name| on_disk.contains(name))
            .await;
    }

    /// Writes the record of an archived segment. A record that cannot be written costs only a
    /// second upload of the segment after a restart (no fsync either, for the same reason).
    async fn write_record(&self, entry: &FileEntry) {
        let dir = self.records_dir();
        let entry = entry.clone();
        let written = tokio::task::spawn_blocking(move || write_record(&dir, &entry)).await;
        if let Ok(Err(error)) | Err(error) = written.map_err(std::io::Error::other) {
            tracing::warn!(partition = self.options.partition_id, %error,
                "could not write an archive record; after a restart the segment is archived again");
        }
    }
}

fn record_path(dir: &Path, segment_name: &str) -> PathBuf {
    dir.join(format!("{segment_name}{RECORD_SUFFIX}"))
}

fn write_record(dir: &Path, entry: &FileEntry) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = record_path(dir, &entry.name);
    let temporary = path.with_extension("json.tmp");
    std::fs::write(
        &temporary,
        serde_json::to_vec(entry).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&temporary, &path)
}

fn remove_record(dir: &Path, segment_name: &str) {
    match std::fs::remove_file(record_path(dir, segment_name)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, segment = segment_name, "could not remove an archive record");
        }
    }
}

/// The records in `dir` of segments in `on_disk` that are valid; every other file is removed
/// (a leftover temporary file, the record of a segment gone, one that does not parse or breaks
/// the pool's rules: its segment is then archived from its bytes).
fn read_records(dir: &Path, on_disk: &HashSet<String>, encrypted: bool) -> Vec<FileEntry> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for item in entries.flatten() {
        let path = item.path();
        match read_record(&path, on_disk, encrypted) {
            Ok(entry) => records.push(entry),
            Err(reason) => {
                tracing::info!(path = %path.display(), reason, "removing an archive record");
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not remove an archive record");
                }
            }
        }
    }
    records
}

/// One record, checked: its name is a segment's that is on disk, it is at most
/// [`RECORD_BYTES_MAX`], and its entry is a pooled segment of that name.
fn read_record(
    path: &Path,
    on_disk: &HashSet<String>,
    encrypted: bool,
) -> Result<FileEntry, String> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let segment_name = file_name
        .strip_suffix(RECORD_SUFFIX)
        .filter(|name| parse_segment_file_name(name).is_some())
        .ok_or("not a record's name")?;
    if !on_disk.contains(segment_name) {
        return Err("its segment left the disk".to_string());
    }
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > RECORD_BYTES_MAX {
        return Err(format!(
            "{len} bytes, more than the limit of {RECORD_BYTES_MAX}"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let entry: FileEntry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if entry.name != segment_name || entry.kind != FileKind::Segment {
        return Err(format!("it describes {} ({:?})", entry.name, entry.kind));
    }
    entry
        .validate_pooled(encrypted)
        .map_err(|e| e.to_string())?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> FileEntry {
        FileEntry {
            name: name.to_string(),
            kind: FileKind::Segment,
            size_bytes: 0,
            checksum: "crc32c:00000000".to_string(),
            compression: None,
            stored_bytes: 0,
            pieces: Some(Vec::new()),
        }
    }

    /// Every record read back is checked before it is used, and each refusal says why (the
    /// record is then removed and its segment archived from its bytes).
    #[test]
    fn records_are_checked_when_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let segment = segment_file_name(1);
        let on_disk: HashSet<String> = [segment.clone()].into();
        let good = record_path(dir.path(), &segment);
        write_record(dir.path(), &entry(&segment)).unwrap();
        assert_eq!(read_record(&good, &on_disk, false), Ok(entry(&segment)));

        let other = segment_file_name(99);
        let record = format!("{segment}.json");
        let other_record = format!("{other}.json");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("notes.txt", b"{}".to_vec(), "not a record's name"),
            ("1.log.json", b"{}".to_vec(), "not a record's name"),
            (
                &other_record,
                serde_json::to_vec(&entry(&other)).unwrap(),
                "its segment left the disk",
            ),
            (&record, b"{\"name\":".to_vec(), "EOF"),
            (
                &record,
                serde_json::to_vec(&entry(&other)).unwrap(),
                "it describes",
            ),
            (
                &record,
                serde_json::to_vec(&FileEntry {
                    size_bytes: 5,
                    ..entry(&segment)
                })
                .unwrap(),
                "add up to",
            ),
            (
                &record,
                serde_json::to_vec(&FileEntry {
                    pieces: None,
                    ..entry(&segment)
                })
                .unwrap(),
                "not a pooled file",
            ),
        ];
        for (name, bytes, reason) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let refused = read_record(&path, &on_disk, false).expect_err(name);
            assert!(refused.contains(reason), "{name}: {refused}");
        }
        let huge = dir.path().join(format!("{segment}.json"));
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(RECORD_BYTES_MAX + 1).unwrap();
        let refused = read_record(&huge, &on_disk, false).expect_err("too large");
        assert!(refused.contains("more than the limit"), "{refused}");
    }

    /// `read_records` keeps the valid records and removes every other file of the folder.
    #[test]
    fn reading_the_records_removes_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let kept = segment_file_name(1);
        let gone = segment_file_name(50);
        write_record(dir.path(), &entry(&kept)).unwrap();
        write_record(dir.path(), &entry(&gone)).unwrap();
        std::fs::write(dir.path().join("leftover.json.tmp"), b"x").unwrap();
        let on_disk: HashSet<String> = [kept.clone()].into();
        assert_eq!(
            read_records(dir.path(), &on_disk, false),
            vec![entry(&kept)]
        );
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![format!("{kept}.json")]);
    }
}
