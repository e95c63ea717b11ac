//! `GET /actuator/backups/restore-points`: what can be restored, per partition and for the
//! cluster, as contiguous ranges of restorable checkpoints (backups and markers) and the breaks
//! between them with their reasons.
//!
//! A checkpoint is a restore point of a partition when that partition's backup of it is
//! COMPLETED, and of the cluster when every partition's is (the checkpoint propagation rule
//! makes it a consistent cut). Ranges follow checkpoint ids in order: a checkpoint that is not
//! restorable breaks the range it falls in, and is listed with why (its failure reason, no
//! manifest because the broker did not take it, or still uploading). [`restore_points`] is a
//! pure function of the aggregated list, tested as data.
//!
//! A range also breaks where there is no checkpoint at all for longer than two marker intervals
//! before a marker (a gap: the gateway was down, or markers were skipped and left nothing in the
//! store): so no range claims a continuity it does not have.

use std::time::Duration;

use serde::Serialize;
use sluice_ledger::record::CheckpointKind;
use sluice_protocol::wire::BackupState;
use utoipa::ToSchema;

use crate::actuator::BackupResponse;

/// At most this many ranges and breaks are shown per partition and for the cluster: the
/// newest ones (a long outage of markers every few seconds would otherwise list thousands).
pub const SHOWN_MAX: usize = 100;

/// One checkpoint as a restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    #[schema(value_type = crate::openapi::BackupIdSchema)]
    pub id: u64,
    /// `BACKUP` or `MARKER`.
    #[schema(value_type = String)]
    pub kind: CheckpointKind,
    /// When the gateway asked for it (RFC 3339); null for backups of earlier releases.
    #[schema(format = DateTime)]
    pub requested_at: Option<String>,
}

/// Checkpoints `first` to `last` (by id), all restorable, with no unrestorable one between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRange {
    pub first: RestorePoint,
    pub last: RestorePoint,
    /// Restore points in the range.
    pub count: usize,
}

/// A checkpoint that is not restorable, or a gap without checkpoints, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RangeBreak {
    /// The checkpoint that is not restorable; for a gap, the first checkpoint after it.
    pub checkpoint: RestorePoint,
    /// Its status; null for a gap.
    pub status: Option<BackupState>,
    /// For a gap: when the checkpoint before it was requested.
    #[schema(format = DateTime)]
    pub gap_since: Option<String>,
    pub reason: String,
}

/// The ranges and breaks of one partition, or of the cluster (`partitionId` null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ranges {
    pub partition_id: Option<u32>,
    /// Oldest first; the newest [`SHOWN_MAX`].
    pub ranges: Vec<RestoreRange>,
    /// Oldest first; the newest [`SHOWN_MAX`].
    pub breaks: Vec<RangeBreak>,
    /// Ranges and breaks older than those shown.
    pub omitted: usize,
}

/// The answer of `GET /actuator/backups/restore-points`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoints {
    /// The newest checkpoint every partition can restore: what `bin/restore --to now` picks.
    pub newest: Option<RestorePoint>,
    pub cluster: Ranges,
    pub partitions: Vec<Ranges>,
}

/// The restore points of `backups` (every checkpoint of every kind, any order); with markers
/// every `marker_interval`, a marker more than two intervals after the checkpoint before it
/// breaks the range.
pub fn restore_points(
    backups: &[BackupResponse],
    partitions_count: u32,
    marker_interval: Option<Duration>,
) -> RestorePoints {
    let mut sorted: Vec<&BackupResponse> = backups.iter().collect();
    sorted.sort_by_key(|b| b.backup_id);
    let gap_ms_max = marker_interval.map(|interval| 2 * interval.as_millis());
    let cluster = ranges_of(
        None,
        gap_ms_max,
        sorted.iter().map(|b| (*b, cluster_state(b))),
    );
    let partitions = (1..=partitions_count)
        .map(|partition_id| {
            ranges_of(
                Some(partition_id),
                gap_ms_max,
                sorted
                    .iter()
                    .map(|b| (*b, partition_state(b, partition_id))),
            )
        })
        .collect();
    RestorePoints {
        newest: cluster.ranges.last().map(|range| range.last.clone()),
        cluster,
        partitions,
    }
}

fn point(backup: &BackupResponse) -> RestorePoint {
    RestorePoint {
        id: backup.backup_id,
        kind: backup.kind,
        requested_at: backup.requested_at.clone(),
    }
}

/// Restorable (`Ok`), or the state and reason that keep the cluster from restoring it.
fn cluster_state(backup: &BackupResponse) -> Result<(), (BackupState, String)> {
    if backup.status == BackupState::Completed {
        return Ok(());
    }
    let reasons: Vec<String> = backup
        .partitions
        .iter()
        .filter(|p| p.status != BackupState::Completed)
        .map(|p| {
            format!(
                "partition {}: {}",
                p.partition_id,
                reason_of(p.status, p.failure_reason.as_deref())
            )
        })
        .collect();
    Err((backup.status, reasons.join("; ")))
}

fn partition_state(
    backup: &BackupResponse,
    partition_id: u32,
) -> Result<(), (BackupState, String)> {
    let status = backup
        .partitions
        .iter()
        .find(|p| p.partition_id == partition_id);
    match status {
        Some(p) if p.status == BackupState::Completed => Ok(()),
        Some(p) => Err((p.status, reason_of(p.status, p.failure_reason.as_deref()))),
        None => Err((
            BackupState::DoesNotExist,
            reason_of(BackupState::DoesNotExist, None),
        )),
    }
}

fn reason_of(status: BackupState, failure_reason: Option<&str>) -> String {
    match status {
        BackupState::Completed => "restorable".to_string(),
        BackupState::InProgress => "still uploading".to_string(),
        BackupState::Failed => failure_reason.unwrap_or("failed, no reason recorded").to_string(),
        BackupState::DoesNotExist => "no backup of this checkpoint: its broker did not take it (down or unreachable when it was asked), or it was deleted".to_string(),
    }
}

fn ranges_of<'a>(
    partition_id: Option<u32>,
    gap_ms_max: Option<u128>,
    checkpoints: impl Iterator<Item = (&'a BackupResponse, Result<(), (BackupState, String)>)>,
) -> Ranges {
    let mut ranges: Vec<RestoreRange> = Vec::new();
    let mut breaks = Vec::new();
    let mut open = false;
    let mut previous: Option<&BackupResponse> = None;
    for (backup, state) in checkpoints {
        let checkpoint = point(backup);
        if let Some(gap) = gap_before(previous, backup, gap_ms_max) {
            breaks.push(RangeBreak {
                checkpoint: checkpoint.clone(),
                status: None,
                gap_since: previous.and_then(|p| p.requested_at.clone()),
                reason: gap,
            });
            open = false;
        }
        previous = Some(backup);
        match state {
            Ok(()) if open => {
                let range = ranges.last_mut().expect("an open range exists");
                range.last = checkpoint;
                range.count += 1;
            }
            Ok(()) => {
                ranges.push(RestoreRange {
                    first: checkpoint.clone(),
                    last: checkpoint,
                    count: 1,
                });
                open = true;
            }
            Err((status, reason)) => {
                breaks.push(RangeBreak {
                    checkpoint,
                    status: Some(status),
                    gap_since: None,
                    reason,
                });
                open = false;
            }
        }
    }
    let omitted = ranges.len().saturating_sub(SHOWN_MAX) + breaks.len().saturating_sub(SHOWN_MAX);
    Ranges {
        partition_id,
        ranges: newest(ranges),
        breaks: newest(breaks),
        omitted,
    }
}

/// Why there is a gap before marker `next`: no checkpoint for more than `gap_ms_max` since the
/// one before it.
fn gap_before(
    previous: Option<&BackupResponse>,
    next: &BackupResponse,
    gap_ms_max: Option<u128>,
) -> Option<String> {
    let gap_ms_max = gap_ms_max?;
    let since = previous?.requested_at_ms?;
    let until = next.requested_at_ms?;
    let gap_ms = u128::from(until.saturating_sub(since));
    (next.kind == CheckpointKind::Marker && gap_ms > gap_ms_max).then(|| {
        format!(
            "no checkpoint for {} before this marker (markers come every {}): the gateway was down, or markers were skipped while the store was slow or unreachable",
            humantime::format_duration(Duration::from_secs((gap_ms / 1000) as u64)),
            humantime::format_duration(Duration::from_millis((gap_ms_max / 2) as u64))
        )
    })
}

fn newest<T>(mut items: Vec<T>) -> Vec<T> {
    let excess = items.len().saturating_sub(SHOWN_MAX);
    items.drain(..excess);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::wire::PartitionBackupStatus;
    use BackupState::*;

    /// A checkpoint of `kind` whose partitions 1, 2 have `states`.
    fn checkpoint(id: u64, kind: CheckpointKind, states: [BackupState; 2]) -> BackupResponse {
        let partitions = states
            .iter()
            .enumerate()
            .map(|(index, state)| PartitionBackupStatus {
                status: *state,
                failure_reason: (*state == Failed).then(|| "store unreachable".to_string()),
                ..PartitionBackupStatus::does_not_exist(index as u32 + 1, id)
            })
            .collect();
        crate::actuator::aggregate(id, 2, partitions).with_kind(kind, Some(id * 1000))
    }

    /// Ranges as (first id, last id, count); breaks as (id, status).
    type Shape = (Vec<(u64, u64, usize)>, Vec<(u64, BackupState)>);

    fn ids(ranges: &Ranges) -> Shape {
        (
            ranges
                .ranges
                .iter()
                .map(|r| (r.first.id, r.last.id, r.count))
                .collect(),
            ranges
                .breaks
                .iter()
                .map(|b| (b.checkpoint.id, b.status.unwrap_or(DoesNotExist)))
                .collect(),
        )
    }

    #[test]
    fn ranges_break_where_a_checkpoint_is_not_restorable() {
        use CheckpointKind::{Backup, Marker};
        let backups = vec![
            checkpoint(10, Backup, [Completed, Completed]),
            checkpoint(11, Marker, [Completed, Completed]),
            // Broker of partition 2 down: partition 1 goes on, the cluster breaks.
            checkpoint(12, Marker, [Completed, DoesNotExist]),
            checkpoint(13, Marker, [Completed, Completed]),
            checkpoint(14, Marker, [Failed, Completed]),
            checkpoint(15, Backup, [Completed, Completed]),
            checkpoint(16, Marker, [InProgress, Completed]),
        ];
        // Given in any order.
        let mut shuffled = backups;
        shuffled.reverse();
        let points = restore_points(&shuffled, 2, None);
        assert_eq!(
            ids(&points.cluster),
            (
                vec![(10, 11, 2), (13, 13, 1), (15, 15, 1)],
                vec![(12, DoesNotExist), (14, Failed), (16, InProgress)]
            )
        );
        assert_eq!(
            ids(&points.partitions[0]),
            (
                vec![(10, 13, 4), (15, 15, 1)],
                vec![(14, Failed), (16, InProgress)]
            )
        );
        assert_eq!(
            ids(&points.partitions[1]),
            (vec![(10, 11, 2), (13, 16, 4)], vec![(12, DoesNotExist)])
        );
        assert_eq!(points.newest.as_ref().map(|p| p.id), Some(15));
        assert_eq!(points.cluster.ranges[0].last.kind, Marker);
        let reason = &points.cluster.breaks[0].reason;
        assert!(
            reason.starts_with(
                "partition 2: no backup of this checkpoint: its broker did not take it"
            ),
            "{reason}"
        );
        assert_eq!(
            points.cluster.breaks[1].reason,
            "partition 1: store unreachable"
        );
        assert!(restore_points(&[], 2, None).newest.is_none());
    }

    #[test]
    fn only_the_newest_ranges_and_breaks_are_shown() {
        let backups: Vec<BackupResponse> = (1..=2 * SHOWN_MAX as u64 + 10)
            .map(|id| {
                let state = if id % 2 == 0 { Failed } else { Completed };
                checkpoint(id, CheckpointKind::Marker, [state, state])
            })
            .collect();
        let points = restore_points(&backups, 2, None);
        assert_eq!(points.cluster.ranges.len(), SHOWN_MAX);
        assert_eq!(points.cluster.breaks.len(), SHOWN_MAX);
        assert_eq!(points.cluster.omitted, 10);
        assert_eq!(
            points.cluster.ranges.last().map(|r| r.last.id),
            Some(2 * SHOWN_MAX as u64 + 9)
        );
        assert_eq!(
            points.cluster.breaks.last().map(|b| b.checkpoint.id),
            Some(2 * SHOWN_MAX as u64 + 10)
        );
    }

    /// Markers every second (requested at id seconds here): a marker more than two seconds
    /// after the checkpoint before it breaks the range, although every checkpoint the store
    /// holds is COMPLETED; a backup after a pause does not.
    #[test]
    fn a_gap_between_markers_breaks_the_range() {
        use CheckpointKind::{Backup, Marker};
        let backups = vec![
            checkpoint(1, Backup, [Completed, Completed]),
            checkpoint(2, Marker, [Completed, Completed]),
            checkpoint(3, Marker, [Completed, Completed]),
            // Markers 4 to 8 left nothing in the store.
            checkpoint(9, Marker, [Completed, Completed]),
            checkpoint(10, Marker, [Completed, Completed]),
            checkpoint(20, Backup, [Completed, Completed]),
        ];
        let points = restore_points(&backups, 2, Some(Duration::from_secs(1)));
        assert_eq!(
            ids(&points.cluster),
            (vec![(1, 3, 3), (9, 20, 3)], vec![(9, DoesNotExist)])
        );
        let gap = &points.cluster.breaks[0];
        assert_eq!(gap.status, None);
        assert_eq!(gap.gap_since.as_deref(), Some("1970-01-01T00:00:03.000Z"));
        assert!(
            gap.reason
                .starts_with("no checkpoint for 6s before this marker (markers come every 1s)"),
            "{}",
            gap.reason
        );
        assert_eq!(ids(&points.partitions[0]), ids(&points.cluster));
        // Without markers configured, time alone breaks nothing.
        assert_eq!(
            ids(&restore_points(&backups, 2, None).cluster),
            (vec![(1, 20, 6)], vec![])
        );
    }
}
