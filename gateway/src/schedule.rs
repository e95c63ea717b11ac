//! Scheduled backups and markers with retention, built into the gateway (no external cron).
//!
//! Shape: `BackupScheduler::new(options, cluster, ids)` gives the scheduler and a cheap
//! [`ScheduleHandle`] that `GET /actuator/backups/schedule` reads; `run(cancel)` runs it. Each run
//! takes a checkpoint of its kind (a backup, or a marker of continuous backups) whose id is the
//! current time in epoch milliseconds, then applies retention to checkpoints of that kind. The
//! gateway's two schedulers draw their ids from one [`IdClock`], so they never reuse an id;
//! across gateway restarts and between several gateways, ids stay increasing because they are
//! the wall clock and a broker refuses an id not above its latest (the losing trigger answers
//! 409 and the next run takes a later one).
//!
//! Retention ([`Retention::to_delete`]) deletes only what it may: never a backup IN_PROGRESS
//! (on any partition), never the newest COMPLETED one; it keeps the last `keepLast` backups and/or
//! those younger than `keepWithin`, and deletes the others: COMPLETED, FAILED and partial ones
//! (DOES_NOT_EXIST: only some partitions hold them, e.g. a half-finished deletion or a
//! trigger that reached only some partitions), and logs every backup it removes.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_ledger::record::CheckpointKind;
use sluice_protocol::wire::BackupState;
use tokio_util::sync::CancellationToken;

use crate::actuator::{self, BackupResponse};
use crate::cluster::Cluster;
use crate::error::GatewayError;

/// When backups are taken.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `Duration` from the gateway's start.
    Interval(Duration),
    /// A cron expression (5 fields, minute first, UTC), e.g. `0 */6 * * *`.
    Cron(Box<croner::Cron>, String),
}

impl Schedule {
    /// Parses `15m`-style intervals or cron expressions.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        if let Ok(interval) = humantime::parse_duration(text) {
            if interval < Duration::from_secs(1) {
                return Err(ScheduleError::IntervalTooShort {
                    text: text.to_string(),
                });
            }
            return Ok(Schedule::Interval(interval));
        }
        croner::Cron::from_str(text)
            .map(|cron| Schedule::Cron(Box::new(cron), text.to_string()))
            .map_err(|source| ScheduleError::Unparsable {
                text: text.to_string(),
                source,
            })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> SystemTime {
        match self {
            Schedule::Interval(interval) => after + *interval,
            Schedule::Cron(cron, _) => {
                let after: chrono::DateTime<chrono::Utc> = after.into();
                cron.find_next_occurrence(&after, false).map_or_else(
                    |_| SystemTime::now() + Duration::from_secs(365 * 24 * 3600),
                    SystemTime::from,
                )
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Interval(interval) => {
                format!("every {}", humantime::format_duration(*interval))
            }
            Schedule::Cron(_, text) => format!("cron {text}"),
        }
    }
}

/// Why [`Schedule::parse`] refused a schedule; its text becomes the `reason` of the
/// configuration error naming `gateway.backup.schedule`.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("interval {text:?} is shorter than 1s")]
    IntervalTooShort { text: String },
    #[error("{text:?} is neither a duration (e.g. 15m) nor a cron expression (e.g. \"0 */6 * * *\"): {source}")]
    Unparsable {
        text: String,
        source: croner::errors::CronError,
    },
}

/// What retention keeps; nothing set means nothing is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    #[schema(minimum = 1)]
    pub keep_last: Option<usize>,
    /// A duration, e.g. `7days`.
    #[serde(with = "humantime_option")]
    #[schema(value_type = Option<String>)]
    pub keep_within: Option<Duration>,
}

mod humantime_option {
    pub fn serialize<S: serde::Serializer>(
        value: &Option<std::time::Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
            None => serializer.serialize_none(),
        }
    }
}

/// A backup as retention sees it: id, kind, aggregated status, and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupAge {
    pub id: u64,
    pub kind: CheckpointKind,
    pub status: BackupState,
    pub created_at: Option<SystemTime>,
}

impl BackupAge {
    pub fn from_response(backup: &BackupResponse) -> BackupAge {
        let created_at = backup
            .partitions
            .iter()
            .filter_map(|p| p.created_at.as_deref())
            .filter_map(|t| humantime::parse_rfc3339_weak(t).ok())
            .min();
        // A partition still uploading keeps the whole backup from retention, whatever the
        // aggregate says (a partial backup aggregates to DOES_NOT_EXIST).
        let status = if backup
            .partitions
            .iter()
            .any(|p| p.status == BackupState::InProgress)
        {
            BackupState::InProgress
        } else {
            backup.status
        };
        BackupAge {
            id: backup.backup_id,
            kind: backup.kind,
            status,
            created_at,
        }
    }
}

impl Retention {
    pub fn is_enabled(&self) -> bool {
        self.keep_last.is_some() || self.keep_within.is_some()
    }

    /// The ids of kind `kind` that retention deletes from `backups` at `now` (the others are
    /// another rule's).
    pub fn to_delete(
        &self,
        kind: CheckpointKind,
        backups: &[BackupAge],
        now: SystemTime,
    ) -> Vec<u64> {
        if !self.is_enabled() {
            return Vec::new();
        }
        let mut sorted: Vec<&BackupAge> = backups.iter().filter(|b| b.kind == kind).collect();
        sorted.sort_by_key(|b| std::cmp::Reverse(b.id));
        let newest_completed = sorted
            .iter()
            .find(|b| b.status == BackupState::Completed)
            .map(|b| b.id);
        sorted
            .iter()
            .enumerate()
            .filter(|(rank, backup)| {
                let deletable = matches!(
                    backup.status,
                    BackupState::Completed | BackupState::Failed | BackupState::DoesNotExist
                );
                let in_last = self.keep_last.is_some_and(|k| *rank < k);
                let young = self.keep_within.is_some_and(|window| {
                    // Unknown age: young (never delete on a guess).
                    backup.created_at.is_none_or(|created| {
                        now.duration_since(created).unwrap_or_default() <= window
                    })
                });
                deletable && Some(backup.id) != newest_completed && !in_last && !young
            })
            .map(|(_, backup)| backup.id)
            .collect()
    }
}

/// What `GET /actuator/backups/schedule` shows.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Schedule)]
pub struct ScheduleStatus {
    pub enabled: bool,
    /// `BACKUP` or `MARKER`; null when no schedule is set.
    #[schema(value_type = Option<String>)]
    pub kind: Option<CheckpointKind>,
    /// E.g. `every 1h` or `cron 0 */6 * * *`.
    pub schedule: Option<String>,
    pub retention: Retention,
    #[schema(format = DateTime)]
    pub next_run_at: Option<String>,
    pub last_run: Option<LastRun>,
    /// The newest of this scheduler's checkpoints seen COMPLETED on every partition (markers:
    /// the oldest one not finished yet is asked about at every tick until it ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_completed: Option<CompletedCheckpoint>,
    /// The markers of continuous backups (`gateway.backup.checkpointInterval`), when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub markers: Option<Box<ScheduleStatus>>,
    /// The interval of an interval schedule.
    #[serde(skip)]
    pub interval: Option<Duration>,
    /// When the scheduler started.
    #[serde(skip)]
    pub started_at: Option<SystemTime>,
}

/// A checkpoint of the scheduler's known to be a restore point of the whole cluster.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletedCheckpoint {
    #[schema(value_type = crate::openapi::BackupIdSchema)]
    pub backup_id: u64,
    #[schema(format = DateTime)]
    pub requested_at: String,
    /// `requested_at` as a time, for the lag (the wire shows the text).
    #[serde(skip)]
    pub requested: SystemTime,
}

/// How far continuous backups lag: the markers' restore points are older than
/// [`LAG_INTERVALS_DEGRADED`] intervals.
pub const LAG_INTERVALS_DEGRADED: u32 = 3;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    #[schema(value_type = crate::openapi::BackupIdSchema)]
    pub backup_id: u64,
    #[schema(format = DateTime)]
    pub at: String,
    /// `TRIGGERED` or `FAILED`.
    #[schema(value_type = crate::openapi::RunResult)]
    pub result: String,
    pub message: Option<String>,
    /// Backups deleted by retention after this run.
    #[schema(value_type = Vec<crate::openapi::BackupIdSchema>)]
    pub deleted: Vec<u64>,
    pub retention_error: Option<String>,
}

#[derive(Clone, Default)]
pub struct ScheduleHandle {
    status: Arc<Mutex<ScheduleStatus>>,
    markers: Option<Arc<Mutex<ScheduleStatus>>>,
}

impl ScheduleHandle {
    pub fn status(&self) -> ScheduleStatus {
        let mut status = self.status.lock().expect("schedule status lock").clone();
        status.markers = self
            .markers
            .as_ref()
            .map(|markers| Box::new(markers.lock().expect("schedule status lock").clone()));
        status
    }

    /// How old the newest restore point of the markers is at `now` (since the markers' scheduler
    /// started, while none completed yet), with the markers' interval; `None` when markers are off.
    pub fn restore_point_age(&self, now: SystemTime) -> Option<(Duration, Duration)> {
        let markers = self.markers.as_ref()?.lock().expect("schedule status lock");
        let since = match &markers.newest_completed {
            Some(newest) => newest.requested,
            None => markers.started_at?,
        };
        Some((
            now.duration_since(since).unwrap_or_default(),
            markers.interval?,
        ))
    }

    /// Why continuous backups are degraded at `now`: the newest restore point is older than
    /// [`LAG_INTERVALS_DEGRADED`] intervals. Processing is never held back for it.
    pub fn markers_lag(&self, now: SystemTime) -> Option<String> {
        let (age, interval) = self.restore_point_age(now)?;
        (age > interval * LAG_INTERVALS_DEGRADED).then(|| {
            format!(
                "continuous backups lag: the newest restore point is {} old, more than {LAG_INTERVALS_DEGRADED} x checkpointInterval ({}); markers fail or the store is slow: see GET /actuator/backups/restore-points",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(interval)
            )
        })
    }

    /// The interval of the markers of continuous backups, when they are on.
    pub fn marker_interval(&self) -> Option<Duration> {
        self.markers
            .as_ref()?
            .lock()
            .expect("schedule status lock")
            .interval
    }

    /// This handle, also showing the markers' scheduler of `markers`.
    pub fn with_markers(mut self, markers: &ScheduleHandle) -> ScheduleHandle {
        self.markers = Some(markers.status.clone());
        self
    }

    fn update(&self, change: impl FnOnce(&mut ScheduleStatus)) {
        change(&mut self.status.lock().expect("schedule status lock"));
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub schedule: Schedule,
    /// What each run takes: backups, or markers (continuous backups).
    pub kind: CheckpointKind,
    pub retention: Retention,
    /// The shortest time between two retention runs: every run for backups; for markers,
    /// taken every few seconds, [`MARKER_RETENTION_PERIOD`] (each run lists every checkpoint).
    pub retention_period: Duration,
}

/// How often markers' retention runs at most.
pub const MARKER_RETENTION_PERIOD: Duration = Duration::from_secs(60);

/// The ids of one gateway's checkpoints: epoch milliseconds, strictly increasing even when the
/// clock steps back or two schedulers fire in the same millisecond.
#[derive(Debug, Clone, Default)]
pub struct IdClock {
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl IdClock {
    pub fn next(&self, now: SystemTime) -> u64 {
        let now_ms = epoch_millis(now);
        let previous = self
            .last
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |last| Some(now_ms.max(last + 1)),
            )
            .expect("the update always returns Some");
        now_ms.max(previous + 1)
    }
}

pub struct BackupScheduler {
    options: ScheduleOptions,
    cluster: Arc<Cluster>,
    ids: IdClock,
    handle: ScheduleHandle,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

pub(crate) fn epoch_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl BackupScheduler {
    /// The scheduler and the handle that shows its status (the service shape, ARCHITECTURE.md).
    /// A gateway without a schedule shows `ScheduleHandle::default()`: not enabled.
    pub fn new(
        options: ScheduleOptions,
        cluster: Arc<Cluster>,
        ids: IdClock,
    ) -> (BackupScheduler, ScheduleHandle) {
        let handle = ScheduleHandle::default();
        handle.update(|status| {
            status.enabled = true;
            status.kind = Some(options.kind);
            status.schedule = Some(options.schedule.describe());
            status.retention = options.retention.clone();
            status.interval = match options.schedule {
                Schedule::Interval(interval) => Some(interval),
                Schedule::Cron(..) => None,
            };
            status.started_at = Some(SystemTime::now());
        });
        let scheduler = BackupScheduler {
            options,
            cluster,
            ids,
            handle: handle.clone(),
        };
        (scheduler, handle)
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut retained_at: Option<SystemTime> = None;
        // The oldest of this scheduler's markers not known to be finished, checked at each run
        // until it is (markers only): one status read per broker and run.
        let mut unfinished: Option<(u64, SystemTime)> = None;
        let mut next = self.options.schedule.next_after(SystemTime::now());
        loop {
            self.handle
                .update(|status| status.next_run_at = Some(rfc3339(next)));
            let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = SystemTime::now();
            let id = self.ids.next(now);
            let retain = retained_at.is_none_or(|at| {
                now.duration_since(at).unwrap_or_default() >= self.options.retention_period
            });
            if retain {
                retained_at = Some(now);
            }
            // Cancellation first, also while the brokers are asked (up to the request timeout
            // each): shutdown never waits for a broker. A backup cut short is one that failed
            // on some partitions, which retention deletes like any partial backup.
            let last_run = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                last_run = async {
                    if let Some((marker, requested)) = unfinished {
                        if self.note_if_finished(marker, requested).await {
                            unfinished = None;
                        }
                    }
                    self.take_and_retain(id, now, retain).await
                } => last_run,
            };
            if self.options.kind == CheckpointKind::Marker
                && last_run.result == "TRIGGERED"
                && unfinished.is_none()
            {
                unfinished = Some((id, now));
            }
            self.handle
                .update(|status| status.last_run = Some(last_run));
            next = self
                .options
                .schedule
                .next_after(SystemTime::now().max(next));
        }
    }

    /// Whether checkpoint `id` is finished (one status read per broker); recorded as the newest
    /// completed if every partition holds it COMPLETED.
    async fn note_if_finished(&self, id: u64, requested: SystemTime) -> bool {
        match actuator::collect_status(&self.cluster, id).await {
            Ok(status) if status.status == BackupState::Completed => {
                self.handle.update(|s| {
                    s.newest_completed = Some(CompletedCheckpoint {
                        backup_id: id,
                        requested_at: rfc3339(requested),
                        requested,
                    });
                });
                true
            }
            Ok(status) if status.status == BackupState::InProgress => false,
            Ok(status) => {
                tracing::debug!(checkpoint = id, status = ?status.status, "marker did not complete");
                true
            }
            Err(error) => {
                tracing::debug!(checkpoint = id, %error, "marker status unknown");
                false
            }
        }
    }

    /// Takes checkpoint `id`, then applies retention if `retain`: what `lastRun` shows.
    async fn take_and_retain(&self, id: u64, now: SystemTime, retain: bool) -> LastRun {
        let kind = self.options.kind;
        let taken = actuator::take(&self.cluster, id, kind, now).await;
        let (result, message) = match &taken {
            // A marker every few seconds: its successes are not worth a line each.
            Ok(()) if kind == CheckpointKind::Marker => ("TRIGGERED", None),
            Ok(()) => {
                tracing::info!(backup = id, "scheduled backup taken");
                ("TRIGGERED", None)
            }
            Err(error) => {
                tracing::warn!(checkpoint = id, kind = kind.as_str(), %error, "scheduled checkpoint failed");
                ("FAILED", Some(error.to_string()))
            }
        };
        let (deleted, retention_error) = if retain {
            match self.apply_retention(now).await {
                Ok(deleted) => (deleted, None),
                Err(error) => {
                    tracing::warn!(%error, "retention could not run");
                    (Vec::new(), Some(error.to_string()))
                }
            }
        } else {
            (Vec::new(), None)
        };
        LastRun {
            backup_id: id,
            at: rfc3339(now),
            result: result.to_string(),
            message,
            deleted,
            retention_error,
        }
    }

    async fn apply_retention(&self, now: SystemTime) -> Result<Vec<u64>, GatewayError> {
        if !self.options.retention.is_enabled() {
            return Ok(Vec::new());
        }
        let backups = actuator::list(&self.cluster, None).await?;
        let ages: Vec<BackupAge> = backups.iter().map(BackupAge::from_response).collect();
        let mut deleted = Vec::new();
        for id in self
            .options
            .retention
            .to_delete(self.options.kind, &ages, now)
        {
            match actuator::delete(&self.cluster, id).await {
                Ok(()) => {
                    tracing::info!(
                        checkpoint = id,
                        kind = self.options.kind.as_str(),
                        "retention deleted"
                    );
                    deleted.push(id);
                }
                Err(error) => {
                    tracing::warn!(checkpoint = id, %error, "retention could not delete");
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackupState::*;

    fn at(seconds_ago: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(10_000 - seconds_ago))
    }

    fn backups(list: &[(u64, BackupState, u64)]) -> Vec<BackupAge> {
        list.iter()
            .map(|(id, status, age)| BackupAge {
                id: *id,
                kind: CheckpointKind::Backup,
                status: *status,
                created_at: at(*age),
            })
            .collect()
    }

    #[test]
    fn retention_deletes_only_what_it_may() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let keep_last = |k| Retention {
            keep_last: Some(k),
            keep_within: None,
        };
        let within = |s| Retention {
            keep_last: None,
            keep_within: Some(Duration::from_secs(s)),
        };
        // (retention, backups (id, status, age seconds), expected deletions)
        let cases: Vec<(Retention, Vec<BackupAge>, Vec<u64>)> = vec![
            (
                Retention::default(),
                backups(&[(1, Completed, 900), (2, Completed, 10)]),
                vec![],
            ),
            (
                keep_last(2),
                backups(&[(1, Completed, 900), (2, Completed, 500), (3, Completed, 10)]),
                vec![1],
            ),
            // IN_PROGRESS is never deleted, and it counts among the last K.
            (
                keep_last(1),
                backups(&[(1, Completed, 900), (2, InProgress, 10)]),
                vec![],
            ),
            (
                keep_last(1),
                backups(&[(1, Completed, 900), (2, Failed, 500), (3, InProgress, 10)]),
                vec![2],
            ),
            // The newest COMPLETED always stays, even when only failures are newer.
            (
                keep_last(1),
                backups(&[(1, Completed, 900), (2, Failed, 500), (3, Failed, 10)]),
                vec![2],
            ),
            (
                within(600),
                backups(&[(1, Completed, 900), (2, Completed, 500), (3, Failed, 700)]),
                vec![1, 3],
            ),
            // Partial backups (only some partitions hold them) older than the window go too;
            // younger ones stay.
            (
                within(600),
                backups(&[
                    (1, DoesNotExist, 900),
                    (2, Completed, 800),
                    (3, DoesNotExist, 100),
                    (4, Completed, 10),
                ]),
                vec![1, 2],
            ),
            (
                keep_last(1),
                backups(&[(1, DoesNotExist, 900), (2, Failed, 800), (3, Completed, 10)]),
                vec![1, 2],
            ),
            // Partial or not, IN_PROGRESS and the newest COMPLETED stay.
            (
                within(60),
                backups(&[
                    (1, Completed, 900),
                    (2, DoesNotExist, 800),
                    (3, InProgress, 700),
                ]),
                vec![2],
            ),
            // Both: keep what either rule keeps.
            (
                Retention {
                    keep_last: Some(1),
                    keep_within: Some(Duration::from_secs(600)),
                },
                backups(&[(1, Completed, 900), (2, Completed, 500), (3, Completed, 10)]),
                vec![1],
            ),
            // Unknown age counts as young.
            (
                within(60),
                vec![
                    BackupAge {
                        id: 1,
                        kind: CheckpointKind::Backup,
                        status: Completed,
                        created_at: None,
                    },
                    BackupAge {
                        id: 2,
                        kind: CheckpointKind::Backup,
                        status: Completed,
                        created_at: at(5),
                    },
                ],
                vec![],
            ),
        ];
        for (index, (retention, backups, expected)) in cases.into_iter().enumerate() {
            let mut deleted = retention.to_delete(CheckpointKind::Backup, &backups, now);
            deleted.sort();
            assert_eq!(deleted, expected, "case {index}: {retention:?}");
        }
    }

    #[test]
    fn schedules_parse_intervals_and_cron() {
        assert!(
            matches!(Schedule::parse("15m"), Ok(Schedule::Interval(d)) if d == Duration::from_secs(900))
        );
        let cron = Schedule::parse("0 */6 * * *").expect("cron parses");
        let start = UNIX_EPOCH + Duration::from_secs(3600); // 01:00 UTC
        let next = cron.next_after(start);
        assert_eq!(next.duration_since(UNIX_EPOCH).unwrap().as_secs(), 6 * 3600);
        assert!(Schedule::parse("every tuesday").is_err());
        assert!(Schedule::parse("100ms").is_err());
    }

    #[test]
    fn a_backup_with_a_partition_in_progress_is_in_progress_for_retention() {
        use sluice_protocol::wire::PartitionBackupStatus;
        let partition = |partition_id, status| PartitionBackupStatus {
            status,
            created_at: Some("1970-01-01T00:00:00Z".to_string()),
            ..PartitionBackupStatus::does_not_exist(partition_id, 5)
        };
        let response = actuator::aggregate(
            5,
            3,
            vec![partition(1, InProgress), partition(2, Completed)],
        );
        assert_eq!(
            response.status, DoesNotExist,
            "partial: partition 3 has none"
        );
        let age = BackupAge::from_response(&response);
        assert_eq!(age.status, InProgress);
        let retention = Retention {
            keep_last: None,
            keep_within: Some(Duration::from_secs(1)),
        };
        assert_eq!(
            retention.to_delete(CheckpointKind::Backup, &[age], SystemTime::now()),
            Vec::<u64>::new()
        );
    }

    /// Each rule deletes checkpoints of its own kind only: markers past `markersKeepWithin` go
    /// (the newest COMPLETED marker stays), backups are the backup rule's, whatever their age.
    #[test]
    fn retention_keeps_to_its_kind() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let mut checkpoints = backups(&[(1, Completed, 9000), (4, Completed, 5000)]);
        checkpoints.extend(
            [
                (2, Completed, 8000),
                (3, Failed, 6000),
                (5, Completed, 4000),
                (6, Completed, 30),
                (7, InProgress, 9000),
            ]
            .map(|(id, status, age)| BackupAge {
                id,
                kind: CheckpointKind::Marker,
                status,
                created_at: at(age),
            }),
        );
        let markers = Retention {
            keep_last: None,
            keep_within: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            markers.to_delete(CheckpointKind::Marker, &checkpoints, now),
            vec![5, 3, 2]
        );
        let backups_rule = Retention {
            keep_last: Some(1),
            keep_within: None,
        };
        assert_eq!(
            backups_rule.to_delete(CheckpointKind::Backup, &checkpoints, now),
            vec![1]
        );
    }

    /// Continuous backups are degraded when the newest restore point is older than three
    /// intervals (or none completed three intervals after the markers started).
    #[test]
    fn markers_lag_past_three_intervals() {
        let markers = ScheduleHandle::default();
        let started = UNIX_EPOCH + Duration::from_secs(1_000);
        markers.update(|s| {
            s.interval = Some(Duration::from_secs(10));
            s.started_at = Some(started);
        });
        let handle = ScheduleHandle::default().with_markers(&markers);
        let at = |seconds| started + Duration::from_secs(seconds);
        assert_eq!(handle.markers_lag(at(30)), None);
        let lag = handle
            .markers_lag(at(31))
            .expect("no restore point after 31 s");
        assert!(
            lag.contains("31s old, more than 3 x checkpointInterval (10s)"),
            "{lag}"
        );
        markers.update(|s| {
            s.newest_completed = Some(CompletedCheckpoint {
                backup_id: 1,
                requested_at: rfc3339(at(25)),
                requested: at(25),
            });
        });
        assert_eq!(handle.markers_lag(at(40)), None);
        assert!(handle.markers_lag(at(56)).is_some());
        assert_eq!(
            ScheduleHandle::default().markers_lag(at(10_000)),
            None,
            "markers off"
        );
    }

    #[test]
    fn checkpoint_ids_increase_whatever_the_clock_does() {
        let ids = IdClock::default();
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(ids.next(at(1_000)), 1_000);
        assert_eq!(ids.next(at(1_000)), 1_001, "same millisecond");
        assert_eq!(ids.next(at(500)), 1_002, "clock stepped back");
        assert_eq!(ids.clone().next(at(5_000)), 5_000, "clones share the clock");
        assert_eq!(ids.next(at(4_000)), 5_001);
    }

    /// The scheduler stops when it is cancelled, also while it waits on a broker that does not
    /// answer (the gateway's shutdown never waits for a broker); its handle shows it enabled.
    #[tokio::test]
    async fn the_scheduler_stops_while_a_broker_does_not_answer() {
        use tokio::io::AsyncReadExt;
        let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = broker.local_addr().unwrap().to_string();
        let (asked, broker_asked) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut connection, _) = broker.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = connection.read(&mut request).await;
            let _ = asked.send(());
            // Holds the connection open, silent, until the test ends.
            std::future::pending::<()>().await;
        });
        let transport = sluice_protocol::transport::ClusterTransport::new(None, None, "ca")
            .expect("a plain HTTP transport");
        let cluster = Arc::new(Cluster::new(
            &[address],
            Duration::from_secs(3600),
            transport,
        ));
        let options = ScheduleOptions {
            schedule: Schedule::Interval(Duration::from_secs(1)),
            kind: CheckpointKind::Backup,
            retention: Retention::default(),
            retention_period: Duration::ZERO,
        };
        let (scheduler, handle) = BackupScheduler::new(options, cluster, IdClock::default());
        assert!(handle.status().enabled);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(cancel.clone()));
        tokio::time::timeout(Duration::from_secs(30), broker_asked)
            .await
            .expect("the scheduler asks the broker")
            .unwrap();

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the scheduler stops at once, not when the broker answers")
            .unwrap();
        assert!(handle.status().last_run.is_none(), "the run was cut short");
    }
}
