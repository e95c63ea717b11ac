//! One partition: its log, its ledger state, its snapshots, and the actor that owns them.
//!
//! # On-disk layout
//! `<data directory>/partition-<id, 5 digits>/log/` (see [`crate::log`]) and `.../snapshots/`
//! (see [`crate::snapshot`]).
//!
//! # The actor
//! `PartitionService::new` recovers (newest valid snapshot, then replay of the log after it);
//! `PartitionService::run` is the only writer of the log and the state. Requests arrive on a
//! bounded channel through the cheap, cloneable [`PartitionHandle`]. Each loop turn takes a batch
//! (capped by count), appends every command, fsyncs once (group commit), then applies them in log
//! order and replies. Nothing is acknowledged before it is durable.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sluice_backup_store::{BackupDescriptor, BackupIdentifier, FileKind};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::archive::ArchiveHandle;
use crate::backup::{BackupFailure, BackupHandle, BackupJob, BaseChoice, FileToUpload};
use crate::error::{io_err, BrokerError, Result};
use crate::log::{Appended, Log};
use crate::metrics::PartitionMetrics;
use crate::pool::SnapshotBase;
use crate::protocol::{DeliverResponse, TransferState, TransferStatus};
use crate::record::{delivery_records, CheckpointRequest, Command, Delivery, Outcome};
use crate::snapshot::{self, SnapshotRef};
use crate::state::{LedgerState, PartitionSummary, TransferProgress};

#[derive(Debug, Clone)]
pub struct PartitionOptions {
    pub partition_id: u32,
    pub partitions_count: u32,
    pub node_id: u32,
    /// `<data directory>/partition-<id>`.
    pub directory: PathBuf,
    pub segment_bytes_max: u64,
    pub snapshot_period: Duration,
    pub request_queue_capacity: usize,
    /// Upper bound of commands appended under one fsync.
    pub batch_commands_max: usize,
}

/// The directory of a partition inside a node's data directory.
pub fn partition_directory(data_directory: &std::path::Path, partition_id: u32) -> PathBuf {
    data_directory.join(format!("partition-{partition_id:05}"))
}

/// What a running backup keeps from being deleted: its snapshot and every record from
/// `from_position` on.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub from_position: u64,
    pub snapshot_id: Option<String>,
}

/// Reservations of one partition by checkpoint id, shared with the backup tasks that release them.
pub type Reservations = Arc<DashMap<u64, Reserved>>;

/// Removes its reservation when dropped, whatever way the backup ends.
pub struct ReservationGuard {
    reservations: Reservations,
    checkpoint_id: u64,
}

impl ReservationGuard {
    /// Reserves nothing itself: removes `checkpoint_id` from `reservations` when dropped (for a
    /// job whose reservation was made elsewhere, e.g. tests of the backup service).
    pub fn new(reservations: Reservations, checkpoint_id: u64) -> Self {
        ReservationGuard {
            reservations,
            checkpoint_id,
        }
    }
}

impl Drop for ReservationGuard {
    fn drop(&mut self) {
        self.reservations.remove(&self.checkpoint_id);
    }
}

enum Request {
    Execute {
        commands: Vec<Command>,
        reply: oneshot::Sender<Result<Vec<Outcome>>>,
    },
    Balance {
        account: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    Summary {
        reply: oneshot::Sender<PartitionSummary>,
    },
    Deliver {
        deliveries: Vec<Delivery>,
        reply: oneshot::Sender<Result<DeliverResponse>>,
    },
    Outbox {
        limit: usize,
        reply: oneshot::Sender<OutboxBatch>,
    },
    Transfer {
        transfer_id: String,
        reply: oneshot::Sender<Option<TransferStatus>>,
    },
}

/// A request of a batch, once its records are known.
enum Pending {
    Write {
        records: Vec<(Command, bool)>,
        reply: WriteReply,
    },
    Read(Request),
}

enum WriteReply {
    Execute(oneshot::Sender<Result<Vec<Outcome>>>),
    Deliver(oneshot::Sender<Result<DeliverResponse>>),
}

impl Request {
    /// The reply of a write (execute, deliver); `None` for a read, whose dropped reply tells
    /// the asker that the partition stopped.
    fn into_write_reply(self) -> Option<WriteReply> {
        match self {
            Request::Execute { reply, .. } => Some(WriteReply::Execute(reply)),
            Request::Deliver { reply, .. } => Some(WriteReply::Deliver(reply)),
            Request::Balance { .. }
            | Request::Summary { .. }
            | Request::Outbox { .. }
            | Request::Transfer { .. } => None,
        }
    }
}

impl WriteReply {
    /// Answers the writer with what processing its records gave, or with `error`. A delivery's
    /// answer carries the partition's `latest_checkpoint_id` after it (the consistent cut).
    fn send(self, result: Result<Vec<Outcome>>, latest_checkpoint_id: u64) {
        // A writer that stopped waiting is gone: nothing to answer.
        match self {
            WriteReply::Execute(reply) => {
                let _ = reply.send(result);
            }
            WriteReply::Deliver(reply) => {
                let _ = reply.send(result.map(|outcomes| DeliverResponse {
                    outcomes,
                    latest_checkpoint_id,
                }));
            }
        }
    }
}

/// Credits to (re-)send, by target partition (`LedgerState::outbox_credits`), with the source's
/// latest checkpoint id read at the same moment.
#[derive(Debug, Clone)]
pub struct OutboxBatch {
    pub credits: Vec<(u32, Command)>,
    pub latest_checkpoint_id: u64,
}

#[derive(Clone)]
pub struct PartitionHandle {
    partition_id: u32,
    tx: mpsc::Sender<Request>,
    outbox_notify: Arc<Notify>,
}

impl PartitionHandle {
    pub fn partition_id(&self) -> u32 {
        self.partition_id
    }

    fn unavailable(&self) -> BrokerError {
        BrokerError::PartitionUnavailable {
            partition_id: self.partition_id,
            reason: "the partition is stopped".into(),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T> {
        let (reply, response) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| self.unavailable())?;
        response.await.map_err(|_| self.unavailable())
    }

    /// Appends `commands`, waits until they are durable and processed, returns their outcomes.
    pub async fn execute(&self, commands: Vec<Command>) -> Result<Vec<Outcome>> {
        self.ask(|reply| Request::Execute { commands, reply })
            .await?
    }

    pub async fn balance(&self, account: String) -> Result<Option<u64>> {
        self.ask(|reply| Request::Balance { account, reply }).await
    }

    pub async fn summary(&self) -> Result<PartitionSummary> {
        self.ask(|reply| Request::Summary { reply }).await
    }

    /// Appends inter-partition commands (credits, acknowledgements), creating the carried
    /// checkpoint first where this partition is behind it.
    pub async fn deliver(&self, deliveries: Vec<Delivery>) -> Result<DeliverResponse> {
        self.ask(|reply| Request::Deliver { deliveries, reply })
            .await?
    }

    pub async fn outbox(&self, limit: usize) -> Result<OutboxBatch> {
        self.ask(|reply| Request::Outbox { limit, reply }).await
    }

    pub async fn transfer(&self, transfer_id: String) -> Result<Option<TransferStatus>> {
        self.ask(|reply| Request::Transfer { transfer_id, reply })
            .await
    }

    /// Signalled when the outbox gains an entry.
    pub fn outbox_notify(&self) -> Arc<Notify> {
        self.outbox_notify.clone()
    }

    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

pub struct PartitionService {
    options: PartitionOptions,
    log: Log,
    state: LedgerState,
    snapshots_dir: PathBuf,
    latest_snapshot: Option<SnapshotRef>,
    reservations: Reservations,
    backups: Option<BackupHandle>,
    /// Set with continuous backups: compaction keeps what it has not archived.
    archive: Option<ArchiveHandle>,
    rx: mpsc::Receiver<Request>,
    outbox_notify: Arc<Notify>,
    metrics: PartitionMetrics,
    /// Records applied from the log by recovery (after the snapshot it started from).
    replayed_records: u64,
}

impl PartitionService {
    /// Recovers the partition from disk and gives the actor and its handle (the service shape,
    /// ARCHITECTURE.md). Blocking I/O: call from a blocking context.
    pub fn new(
        options: PartitionOptions,
        backups: Option<BackupHandle>,
    ) -> Result<(PartitionService, PartitionHandle)> {
        let snapshots_dir = options.directory.join("snapshots");
        std::fs::create_dir_all(&snapshots_dir)
            .map_err(io_err(&snapshots_dir, "create snapshots directory"))?;
        let log = Log::open(&options.directory.join("log"), options.segment_bytes_max)?;

        let mut state = None;
        let mut latest_snapshot = None;
        for candidate in snapshot::list(&snapshots_dir)? {
            match snapshot::load(&candidate) {
                Ok(loaded) => {
                    state = Some(loaded);
                    latest_snapshot = Some(candidate);
                    break;
                }
                Err(error) => tracing::warn!(%error, "skipping a snapshot that does not load"),
            }
        }
        let mut state = state
            .unwrap_or_else(|| LedgerState::new(options.partition_id, options.partitions_count));
        if state.partition_id != options.partition_id
            || state.partitions_count != options.partitions_count
        {
            return Err(BrokerError::PartitionLayoutChanged {
                path: snapshots_dir,
                stored_partition_id: state.partition_id,
                stored_partitions_count: state.partitions_count,
                configured_partition_id: options.partition_id,
                configured_partitions_count: options.partitions_count,
            });
        }
        if log.first_position() > state.processed_position + 1 {
            return Err(BrokerError::LogStartsAfterSnapshot {
                path: options.directory.join("log"),
                log_first_position: log.first_position(),
                snapshot_position: state.processed_position,
            });
        }
        // A log that ends before the snapshot (segments deleted or truncated, a disk that lost
        // the tail) would give the next record a position the state has already processed.
        if log.next_position() <= state.processed_position {
            return Err(BrokerError::LogEndsBeforeSnapshot {
                path: options.directory.join("log"),
                partition_id: options.partition_id,
                snapshot_id: latest_snapshot
                    .as_ref()
                    .map_or_else(String::new, |s: &SnapshotRef| s.meta.snapshot_id.clone()),
                snapshot_position: state.processed_position,
                log_last_position: log.next_position() - 1,
            });
        }
        let mut replayed = 0u64;
        log.replay(state.processed_position + 1, |position, payload, at| {
            let command =
                Command::decode(payload).map_err(|source| BrokerError::CorruptRecord {
                    path: at.path.to_path_buf(),
                    offset: at.offset,
                    position,
                    source,
                })?;
            state.apply(position, &command);
            replayed += 1;
            Ok(())
        })?;
        tracing::info!(
            partition = options.partition_id,
            snapshot = latest_snapshot
                .as_ref()
                .map(|s: &SnapshotRef| s.meta.snapshot_id.clone()),
            replayed,
            processed_position = state.processed_position,
            latest_checkpoint = state.latest_checkpoint_id,
            "partition recovered"
        );
        let (tx, rx) = mpsc::channel(options.request_queue_capacity);
        let outbox_notify = Arc::new(Notify::new());
        let partition_id = options.partition_id;
        let handle = PartitionHandle {
            partition_id,
            tx,
            outbox_notify: outbox_notify.clone(),
        };
        Ok((
            PartitionService {
                options,
                log,
                state,
                snapshots_dir,
                latest_snapshot,
                reservations: Arc::new(DashMap::new()),
                backups,
                archive: None,
                rx,
                outbox_notify,
                metrics: PartitionMetrics::unregistered(partition_id),
                replayed_records: replayed,
            },
            handle,
        ))
    }

    pub fn partition_id(&self) -> u32 {
        self.options.partition_id
    }

    /// The recovered state's summary (the restore tool checks it before installing a partition).
    pub fn summary(&self) -> PartitionSummary {
        self.state.summary()
    }

    /// The latest checkpoint `(id, position)` recovered from disk, if any.
    pub fn latest_checkpoint(&self) -> Option<(u64, u64)> {
        (self.state.latest_checkpoint_id > 0).then_some((
            self.state.latest_checkpoint_id,
            self.state.latest_checkpoint_position,
        ))
    }

    /// How many log records recovery replayed after the snapshot it started from (0 when the
    /// newest snapshot holds the whole log, as after a restore).
    pub fn replayed_records(&self) -> u64 {
        self.replayed_records
    }

    /// Counts into `metrics` (a broker's registry) from now on, starting with the recovered log.
    pub fn set_metrics(&mut self, metrics: PartitionMetrics) {
        metrics.log_is(self.log.segments());
        self.metrics = metrics;
    }

    /// Archives the log as it is written (continuous backups): the archiver learns every
    /// sealed segment, and compaction waits for it (see `crate::archive`).
    pub fn set_archive(&mut self, archive: ArchiveHandle) {
        archive.log_is(self.log.segments());
        self.archive = Some(archive);
    }

    /// Tells the metrics and the archiver what the log's segments are now (after a flush that
    /// appended, a roll or a compaction).
    fn log_changed(&self) {
        self.metrics.log_is(self.log.segments());
        if let Some(archive) = &self.archive {
            archive.log_is(self.log.segments());
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut snapshot_timer = tokio::time::interval(self.options.snapshot_period);
        snapshot_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot_timer.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                request = self.rx.recv() => {
                    let Some(request) = request else { break };
                    if let Err(error) = self.handle_batch(request).await {
                        tracing::error!(partition = self.options.partition_id, %error,
                            "the partition stops: its log could not be written");
                        break;
                    }
                }
                _ = snapshot_timer.tick() => {
                    if let Err(error) = self.take_snapshot() {
                        tracing::error!(partition = self.options.partition_id, %error, "snapshot failed");
                    }
                }
            }
        }
        // Drain: fail every request still queued, explicitly.
        self.rx.close();
        let latest_checkpoint_id = self.state.latest_checkpoint_id;
        while let Ok(request) = self.rx.try_recv() {
            if let Some(reply) = request.into_write_reply() {
                reply.send(Err(BrokerError::ShuttingDown), latest_checkpoint_id);
            }
        }
        tracing::info!(partition = self.options.partition_id, "partition stopped");
    }

    /// Appends a batch of requests under one fsync, then processes and answers them in order.
    async fn handle_batch(&mut self, first: Request) -> Result<()> {
        let batch = self.collect_batch(first);
        let pending = self.records_of(batch);
        let appended = match self.append_records(&pending) {
            Ok(appended) => appended,
            Err(error) => {
                self.refuse_writes(pending, &error);
                return Err(error);
            }
        };
        let mut outbox_grew = false;
        for (item, positions) in pending.into_iter().zip(appended) {
            match item {
                Pending::Write { records, reply } => {
                    let outcomes = self
                        .apply_records(records, positions, &mut outbox_grew)
                        .await;
                    reply.send(Ok(outcomes), self.state.latest_checkpoint_id);
                }
                Pending::Read(request) => self.answer(request),
            }
        }
        if outbox_grew {
            self.outbox_notify.notify_one();
        }
        Ok(())
    }

    /// `first` and the requests queued behind it, up to `batch_commands_max` commands.
    fn collect_batch(&mut self, first: Request) -> Vec<Request> {
        let mut commands_in_batch = count_commands(&first);
        let mut batch = vec![first];
        while commands_in_batch < self.options.batch_commands_max {
            match self.rx.try_recv() {
                Ok(request) => {
                    commands_in_batch += count_commands(&request);
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// What each request appends. Deliveries may insert a CHECKPOINT record before a message
    /// (the consistent cut); `latest` follows what applying the batch will make of it.
    fn records_of(&self, batch: Vec<Request>) -> Vec<Pending> {
        let mut latest = self.state.latest_checkpoint_id;
        let mut pending = Vec::with_capacity(batch.len());
        for request in batch {
            pending.push(match request {
                Request::Execute { commands, reply } => {
                    for command in &commands {
                        if let Command::Checkpoint { checkpoint_id, .. } = command {
                            latest = latest.max(*checkpoint_id);
                        }
                    }
                    let records = commands.into_iter().map(|c| (c, true)).collect();
                    Pending::Write {
                        records,
                        reply: WriteReply::Execute(reply),
                    }
                }
                Request::Deliver { deliveries, reply } => Pending::Write {
                    records: delivery_records(&mut latest, deliveries),
                    reply: WriteReply::Deliver(reply),
                },
                read => Pending::Read(read),
            });
        }
        pending
    }

    /// Appends the records of `pending` and flushes the log once: the positions of each item's
    /// records (none for a read).
    fn append_records(&mut self, pending: &[Pending]) -> Result<Vec<Vec<Appended>>> {
        let mut appended = Vec::with_capacity(pending.len());
        for item in pending {
            let mut positions = Vec::new();
            if let Pending::Write { records, .. } = item {
                for (command, _) in records {
                    positions.push(self.log.append(&command.encode())?);
                }
            }
            appended.push(positions);
        }
        let flush_started = std::time::Instant::now();
        tokio::task::block_in_place(|| self.log.flush())?;
        if appended.iter().any(|positions| !positions.is_empty()) {
            self.metrics.log_flushed(flush_started.elapsed());
            self.log_changed();
        }
        Ok(appended)
    }

    /// Answers every write of `pending` with the partition unavailable: its log could not be
    /// written.
    fn refuse_writes(&self, pending: Vec<Pending>, error: &BrokerError) {
        let reason = error.to_string();
        for item in pending {
            if let Pending::Write { reply, .. } = item {
                let unavailable = BrokerError::PartitionUnavailable {
                    partition_id: self.options.partition_id,
                    reason: reason.clone(),
                };
                reply.send(Err(unavailable), self.state.latest_checkpoint_id);
            }
        }
    }

    /// Applies appended `records` to the state, starting the backup of a created checkpoint:
    /// the outcomes of the records that answer a request.
    async fn apply_records(
        &mut self,
        records: Vec<(Command, bool)>,
        positions: Vec<Appended>,
        outbox_grew: &mut bool,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        for ((command, answers), appended) in records.iter().zip(positions) {
            let outcome = self.state.apply(appended.position, command);
            let refused = matches!(outcome, Outcome::Rejected { .. });
            self.metrics.record_processed(appended.position, refused);
            match &outcome {
                Outcome::CheckpointCreated { checkpoint_id, .. } => {
                    let request = match command {
                        Command::Checkpoint { request, .. } => *request,
                        _ => None,
                    };
                    self.start_backup(*checkpoint_id, request, appended).await;
                }
                Outcome::TransferPending { .. } => *outbox_grew = true,
                _ => {}
            }
            if *answers {
                outcomes.push(outcome);
            }
        }
        outcomes
    }

    /// Answers a read-only request from the current state.
    fn answer(&self, request: Request) {
        match request {
            Request::Balance { account, reply } => {
                let _ = reply.send(self.state.accounts.get(&account).copied());
            }
            Request::Summary { reply } => {
                let _ = reply.send(self.state.summary());
            }
            Request::Outbox { limit, reply } => {
                let _ = reply.send(OutboxBatch {
                    credits: self.state.outbox_credits(limit),
                    latest_checkpoint_id: self.state.latest_checkpoint_id,
                });
            }
            Request::Transfer { transfer_id, reply } => {
                let status = self.state.transfer(&transfer_id).map(|(entry, progress)| {
                    let (status, failure_reason) = match progress {
                        TransferProgress::Pending => (TransferState::Pending, None),
                        TransferProgress::Completed => (TransferState::Completed, None),
                        TransferProgress::Failed { reason } => {
                            (TransferState::Failed, Some(reason))
                        }
                    };
                    TransferStatus {
                        transfer_id: transfer_id.clone(),
                        from: entry.from.clone(),
                        to: entry.to.clone(),
                        amount: entry.amount,
                        status,
                        failure_reason,
                    }
                });
                let _ = reply.send(status);
            }
            Request::Execute { .. } | Request::Deliver { .. } => {
                unreachable!("writes are appended, not answered from state")
            }
        }
    }

    /// Reserves what the backup of `checkpoint_id` needs and hands it to the backup service.
    async fn start_backup(
        &mut self,
        checkpoint_id: u64,
        request: Option<CheckpointRequest>,
        checkpoint: Appended,
    ) {
        let partition_id = self.options.partition_id;
        let Some(backups) = self.backups.clone() else {
            tracing::warn!(
                partition = partition_id,
                checkpoint_id,
                "checkpoint created but no backup store is configured: no backup is taken"
            );
            return;
        };
        // The newest snapshot is always below the checkpoint: both are made by this actor.
        let snapshot = self.latest_snapshot.clone();
        let base = self.reusable_base();
        let from_position = match (&base, &snapshot) {
            (Some(base), _) => base.position + 1,
            (None, Some(snapshot)) => snapshot.meta.processed_position + 1,
            (None, None) => 1,
        };
        self.reservations.insert(
            checkpoint_id,
            Reserved {
                from_position,
                snapshot_id: snapshot.as_ref().map(|s| s.meta.snapshot_id.clone()),
            },
        );
        let guard = ReservationGuard {
            reservations: self.reservations.clone(),
            checkpoint_id,
        };
        let mut files = Vec::new();
        // A snapshot file whose size cannot be read fails the backup naming it: uploaded as 0
        // bytes it would COMPLETE a backup that cannot be restored.
        let mut failure = None;
        if let Some(snapshot) = &snapshot {
            for (name, path) in snapshot.files() {
                match std::fs::metadata(&path) {
                    Ok(meta) => files.push(FileToUpload {
                        kind: FileKind::Snapshot,
                        name,
                        path,
                        len_bytes: meta.len(),
                        pooled: None,
                    }),
                    Err(source) => {
                        failure.get_or_insert(BackupFailure::SnapshotUnreadable { path, source });
                    }
                }
            }
        }
        for slice in self.log.slices(from_position, checkpoint) {
            files.push(FileToUpload {
                kind: FileKind::Segment,
                name: slice.name,
                path: slice.path,
                len_bytes: slice.len_bytes,
                pooled: None,
            });
        }
        let local_snapshot = snapshot
            .as_ref()
            .map(|s| (s.meta.snapshot_id.clone(), s.meta.processed_position));
        let base = base
            .zip(local_snapshot)
            .map(|(base, local_snapshot)| BaseChoice {
                base,
                local_snapshot,
            });
        let job = BackupJob {
            id: BackupIdentifier {
                partition_id,
                checkpoint_id,
                node_id: self.options.node_id,
            },
            descriptor: BackupDescriptor {
                snapshot_id: match &base {
                    Some(choice) => Some(choice.base.snapshot_id.clone()),
                    None => snapshot.map(|s| s.meta.snapshot_id),
                },
                checkpoint_position: checkpoint.position,
                number_of_partitions: self.options.partitions_count,
                broker_version: crate::BROKER_VERSION.to_string(),
                request,
            },
            files,
            reservation: guard,
            failure,
            base,
        };
        backups.start(job).await;
    }

    /// The snapshot of this partition's previous backup, when the next backup should build on
    /// it instead of on the newest snapshot (which the pool may not hold): it is older than the
    /// newest one, the log since it is still on disk, and that log up to the newest snapshot
    /// (counted in whole segments) is at most the base's size plus one segment. So a backup
    /// costs the changes since its base (the log, about what changed) rather than a whole new
    /// snapshot, a restore replays at most that much more log than from the newest snapshot, and
    /// compaction keeps at most that much more (see [`Self::compact`]); past it the next backup
    /// uploads the newest snapshot, which becomes the base.
    fn reusable_base(&self) -> Option<SnapshotBase> {
        let newest = self.latest_snapshot.as_ref()?.meta.processed_position;
        let base = self
            .backups
            .as_ref()?
            .pools()
            .base(self.options.partition_id)?;
        if base.position >= newest || base.position + 1 < self.log.first_position() {
            return None;
        }
        let extra_bytes: u64 = self
            .log
            .segments()
            .iter()
            .filter(|s| s.last_position.is_some_and(|last| last > base.position))
            .filter(|s| s.first_position <= newest)
            .map(|s| s.len_bytes)
            .sum();
        (extra_bytes <= base.size_bytes + self.options.segment_bytes_max).then_some(base)
    }

    /// Writes a snapshot if anything was processed since the last one, then deletes what it
    /// makes unnecessary, except what running backups reserved. Public for the restore tool,
    /// which ends a verified recovery with it so that the broker starting afterwards replays
    /// nothing. Blocking I/O: call from a blocking context or a multi-threaded runtime.
    pub fn take_snapshot(&mut self) -> Result<()> {
        let position = self.state.processed_position;
        if position == 0
            || self
                .latest_snapshot
                .as_ref()
                .is_some_and(|s| s.meta.processed_position >= position)
        {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let written =
            tokio::task::block_in_place(|| snapshot::write(&self.snapshots_dir, &self.state))?;
        self.metrics
            .snapshot_taken(started.elapsed(), written.meta.state_bytes);
        tracing::debug!(partition = self.options.partition_id, snapshot = %written.meta.snapshot_id, "snapshot taken");
        self.latest_snapshot = Some(written.clone());
        let compacted = self.compact();
        self.log_changed();
        compacted
    }

    /// With continuous backups: where compaction must stop to keep the sealed segments not
    /// archived yet; `None` without archiving, or when they pass the lag limit (then they go
    /// as without archiving, and the archiver counts them dropped; see `crate::archive`).
    fn unarchived_kept_from(&self) -> Option<u64> {
        let archive = self.archive.as_ref()?;
        let through = archive.archived_through();
        let segments = self.log.segments();
        let sealed = &segments[..segments.len().saturating_sub(1)];
        let unarchived_bytes: u64 = sealed
            .iter()
            .filter(|s| s.last_position.is_some_and(|last| last > through))
            .map(|s| s.len_bytes)
            .sum();
        if unarchived_bytes > archive.lag_bytes_max() {
            tracing::warn!(
                partition = self.options.partition_id,
                unarchived_bytes,
                lag_limit_bytes = archive.lag_bytes_max(),
                "compaction no longer waits for archiving: the log not archived passed broker.data.backup.continuousLagLimit"
            );
            return None;
        }
        Some(through + 1)
    }

    fn compact(&mut self) -> Result<()> {
        let Some(latest) = &self.latest_snapshot else {
            return Ok(());
        };
        let mut keep_from = latest.meta.processed_position + 1;
        // The log since the next backup's base stays while the base may be built on.
        if let Some(base) = self.reusable_base() {
            keep_from = keep_from.min(base.position + 1);
        }
        if let Some(through) = self.unarchived_kept_from() {
            keep_from = keep_from.min(through);
        }
        let mut reserved_snapshots = BTreeSet::new();
        for reserved in self.reservations.iter() {
            keep_from = keep_from.min(reserved.from_position);
            if let Some(id) = &reserved.snapshot_id {
                reserved_snapshots.insert(id.clone());
            }
        }
        let latest_id = latest.meta.snapshot_id.clone();
        tokio::task::block_in_place(|| {
            let removed = self.log.compact(keep_from)?;
            if removed > 0 {
                tracing::debug!(
                    partition = self.options.partition_id,
                    removed,
                    keep_from,
                    "log compacted"
                );
            }
            for old in snapshot::list(&self.snapshots_dir)? {
                if old.meta.snapshot_id != latest_id
                    && !reserved_snapshots.contains(&old.meta.snapshot_id)
                {
                    snapshot::delete(&old)?;
                }
            }
            Ok(())
        })
    }
}

fn count_commands(request: &Request) -> usize {
    match request {
        Request::Execute { commands, .. } => commands.len().max(1),
        Request::Deliver { deliveries, .. } => deliveries.len().max(1),
        Request::Balance { .. }
        | Request::Summary { .. }
        | Request::Outbox { .. }
        | Request::Transfer { .. } => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests still queued when the partition stops are answered explicitly: writes (execute,
    /// deliver) with `ShuttingDown`, reads by dropping their reply (the asker sees the
    /// partition unavailable). Deterministic: the requests are queued before the actor runs,
    /// and its token is already cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_are_answered_when_the_partition_stops() {
        let dir = tempfile::tempdir().unwrap();
        let options = PartitionOptions {
            partition_id: 1,
            partitions_count: 2,
            node_id: 0,
            directory: dir.path().join("partition-00001"),
            segment_bytes_max: 1 << 20,
            snapshot_period: Duration::from_secs(3600),
            request_queue_capacity: 8,
            batch_commands_max: 64,
        };
        let (service, handle) = PartitionService::new(options, None).unwrap();
        let deposit = Command::Deposit {
            account: "a".into(),
            amount: 1,
        };
        let credit = Delivery {
            command: Command::CreditAck {
                transfer_id: "t".into(),
                source_position: 1,
            },
            checkpoint_id: 0,
        };
        let execute = tokio::spawn({
            let handle = handle.clone();
            async move { handle.execute(vec![deposit]).await }
        });
        let deliver = tokio::spawn({
            let handle = handle.clone();
            async move { handle.deliver(vec![credit]).await }
        });
        let balance = tokio::spawn({
            let handle = handle.clone();
            async move { handle.balance("a".into()).await }
        });
        while handle.tx.capacity() > 8 - 3 {
            tokio::task::yield_now().await;
        }
        let cancel = CancellationToken::new();
        cancel.cancel();
        service.run(cancel).await;
        assert!(
            matches!(execute.await.unwrap(), Err(BrokerError::ShuttingDown)),
            "execute"
        );
        assert!(
            matches!(deliver.await.unwrap(), Err(BrokerError::ShuttingDown)),
            "deliver"
        );
        assert!(
            matches!(
                balance.await.unwrap(),
                Err(BrokerError::PartitionUnavailable {
                    partition_id: 1,
                    ..
                })
            ),
            "balance"
        );
    }

    /// A batch whose log cannot be written answers every write with the partition unavailable
    /// and the log's error (not the generic "stopped"), drops its reads, and stops the
    /// partition. Deterministic: the second record rolls the log onto a segment whose file
    /// name is taken by a directory, and both writes are queued before the actor runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_log_cannot_be_written_answers_every_write_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().join("partition-00001");
        let options = PartitionOptions {
            partition_id: 1,
            partitions_count: 2,
            node_id: 0,
            directory: directory.clone(),
            segment_bytes_max: 1,
            snapshot_period: Duration::from_secs(3600),
            request_queue_capacity: 8,
            batch_commands_max: 64,
        };
        let (service, handle) = PartitionService::new(options, None).unwrap();
        std::fs::create_dir(directory.join("log").join(crate::log::segment_file_name(2))).unwrap();
        let deposit = |account: &str| Command::Deposit {
            account: account.into(),
            amount: 1,
        };
        let writes: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|account| {
                let handle = handle.clone();
                let command = deposit(account);
                tokio::spawn(async move { handle.execute(vec![command]).await })
            })
            .collect();
        let balance = tokio::spawn({
            let handle = handle.clone();
            async move { handle.balance("a".into()).await }
        });
        while handle.tx.capacity() > 8 - 3 {
            tokio::task::yield_now().await;
        }
        service.run(CancellationToken::new()).await;
        for (i, write) in writes.into_iter().enumerate() {
            match write.await.unwrap() {
                Err(BrokerError::PartitionUnavailable {
                    partition_id: 1,
                    reason,
                }) => assert!(reason.contains("create segment"), "write {i}: {reason}"),
                other => panic!("write {i}: {other:?}"),
            }
        }
        match balance.await.unwrap() {
            Err(BrokerError::PartitionUnavailable { reason, .. }) => {
                assert_eq!(reason, "the partition is stopped");
            }
            other => panic!("balance: {other:?}"),
        }
    }
}
