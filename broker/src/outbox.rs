//! The outbox sender of one partition: delivers the credits of cross-partition transfers to their
//! target partitions and feeds the acknowledgements back, until the outbox is empty.
//!
//! Shape: `OutboxSender::new(options, partition, brokers)` → `run(cancel)`; nothing sends it
//! requests, so it has no handle (ARCHITECTURE.md, service shape). Every credit carries
//! the source's latest checkpoint id read together with the outbox (after the debit), and every
//! acknowledgement carries the target's latest checkpoint id after the credit: the two halves of
//! the consistent cut (ARCHITECTURE.md). The outbox lives in the partition state, so after a
//! restart or a restore the sender simply finds it and sends again; targets apply a credit at
//! most once per (source partition, source position), and a credit they refuse is refunded.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::client::{BrokerClient, ClientError};
use crate::error::BrokerError;
use crate::partition::PartitionHandle;
use crate::record::{answer_for_credit, Delivery, Outcome};
use crate::retry::RetryPolicy;
use crate::routing::node_for_partition;

#[derive(Debug, Clone)]
pub struct OutboxOptions {
    pub cluster_size: u32,
    /// Outbox entries read and sent per round.
    pub batch_entries_max: usize,
    /// How a round that failed is retried (for ever: the outbox must drain).
    pub retry: RetryPolicy,
    /// A round also runs this often without a signal (a safety net, e.g. after a restore).
    pub idle_poll: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            cluster_size: 1,
            batch_entries_max: 1000,
            retry: RetryPolicy::exponential(Duration::from_millis(50), Duration::from_secs(5)),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Why a round of the outbox sender did not deliver everything (it is retried).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("source partition: {0}")]
    Source(#[from] BrokerError),
    #[error("target partition {target}: {source}")]
    Target { target: u32, source: ClientError },
    #[error("target partition {target} answered {outcomes} outcomes for {credits} credits")]
    Miscounted {
        target: u32,
        outcomes: usize,
        credits: usize,
    },
}

pub struct OutboxSender {
    options: OutboxOptions,
    partition: PartitionHandle,
    /// One client per broker, in node-id order.
    brokers: Vec<BrokerClient>,
}

impl OutboxSender {
    pub fn new(
        options: OutboxOptions,
        partition: PartitionHandle,
        brokers: Vec<BrokerClient>,
    ) -> OutboxSender {
        OutboxSender {
            options,
            partition,
            brokers,
        }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let notify = self.partition.outbox_notify();
        let mut backoff = self.options.retry.start();
        loop {
            // Cancellation first, also while a round waits on other brokers (up to the client
            // timeout): shutdown never waits for a peer. Dropping a round loses nothing, as
            // what it did not get acknowledged stays in the outbox and targets apply each credit
            // at most once.
            let round = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                round = self.round() => round,
            };
            let wait = match round {
                Ok(sent) if sent >= self.options.batch_entries_max => Duration::ZERO,
                Ok(_) => {
                    backoff.reset();
                    self.options.idle_poll
                }
                Err(error) => {
                    // Past a budget (if one is configured) the sender polls at the idle rate:
                    // the outbox must drain.
                    let delay = backoff.next_delay().unwrap_or(self.options.idle_poll);
                    tracing::warn!(partition = self.partition.partition_id(), %error, retry_ms = delay.as_millis() as u64,
                        "could not deliver cross-partition credits; retrying");
                    delay
                }
            };
            if wait.is_zero() {
                if cancel.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends one batch of outbox entries; returns how many were sent.
    async fn round(&self) -> Result<usize, RoundError> {
        let source = self.partition.partition_id();
        let batch = self
            .partition
            .outbox(self.options.batch_entries_max)
            .await?;
        let sent = batch.credits.len();
        if sent == 0 {
            return Ok(0);
        }
        let mut by_target: BTreeMap<u32, Vec<Delivery>> = BTreeMap::new();
        for (target, credit) in batch.credits {
            by_target.entry(target).or_default().push(Delivery {
                command: credit,
                checkpoint_id: batch.latest_checkpoint_id,
            });
        }
        let answers = join_all(by_target.into_iter().map(|(target, deliveries)| {
            let broker =
                &self.brokers[node_for_partition(target, self.options.cluster_size) as usize];
            async move {
                let answer = broker.deliver(target, deliveries.clone()).await;
                (target, deliveries, answer)
            }
        }))
        .await;
        // Acknowledgements and refusals, each carrying the target's checkpoint id after it
        // answered (the second half of the consistent cut).
        let mut acks = Vec::new();
        let mut first_error = None;
        for (target, deliveries, answer) in answers {
            match answer {
                Ok(response) if response.outcomes.len() == deliveries.len() => {
                    for (delivery, outcome) in deliveries.iter().zip(response.outcomes) {
                        if let Outcome::Rejected { rejection } = &outcome {
                            tracing::warn!(partition = source, target, reason = %rejection.message(),
                                "a credit was refused by its target; the sender is refunded and the transfer FAILED");
                        }
                        match answer_for_credit(&delivery.command, outcome) {
                            Some(command) => acks.push(Delivery {
                                command,
                                checkpoint_id: response.latest_checkpoint_id,
                            }),
                            None => tracing::error!(partition = source, target,
                                "a credit was answered with an unexpected outcome; it stays in the outbox"),
                        }
                    }
                }
                Ok(response) => {
                    first_error.get_or_insert(RoundError::Miscounted {
                        target,
                        outcomes: response.outcomes.len(),
                        credits: deliveries.len(),
                    });
                }
                Err(source) => {
                    first_error.get_or_insert(RoundError::Target { target, source });
                }
            }
        }
        if !acks.is_empty() {
            self.partition.deliver(acks).await?;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(sent),
        }
    }
}
