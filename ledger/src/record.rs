//! Commands as they are written in the log, and the outcomes of processing them.
//!
//! The payload of a log record is the JSON encoding of [`Command`]: readable with standard tools
//! when an operator has to look into a log, and small enough for a ledger. The framing around it
//! (length, position, CRC32C) is binary, see [`crate::log`].

use serde::{Deserialize, Serialize};

/// The largest checkpoint (backup) id: ids are positive 64-bit signed integers, as in Zeebe.
pub const CHECKPOINT_ID_MAX: u64 = i64::MAX as u64;

/// One command of the ledger, in the order the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Command {
    Deposit {
        account: String,
        amount: u64,
    },
    Withdraw {
        account: String,
        amount: u64,
    },
    #[serde(rename_all = "camelCase")]
    Transfer {
        transfer_id: String,
        from: String,
        to: String,
        amount: u64,
    },
    #[serde(rename_all = "camelCase")]
    Checkpoint {
        checkpoint_id: u64,
        /// What the coordinator asked for and when, as it said so (the processor reads no
        /// clock). Absent in a checkpoint that a partition created by propagation (it knows only
        /// the carried id) and in records of earlier releases.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<CheckpointRequest>,
    },
    /// Inter-partition: the target side of a cross-partition transfer. Applied at most once per
    /// `(from_partition, source_position)`: the position of the transfer's debit in the source's
    /// log names the transfer for ever, whatever its `transfer_id` (which clients may reuse).
    #[serde(rename_all = "camelCase")]
    Credit {
        transfer_id: String,
        from_partition: u32,
        /// The log position of the `Transfer` record that debited the source.
        source_position: u64,
        /// Every transfer from `from_partition` to this partition whose source position is below
        /// this one is finished (acknowledged or refunded) and is never sent again, so the target
        /// may forget it: what bounds the target's at-most-once guard.
        finished_below: u64,
        to: String,
        amount: u64,
    },
    /// Inter-partition: the target applied the credit; the source drops its outbox entry.
    #[serde(rename_all = "camelCase")]
    CreditAck {
        transfer_id: String,
        source_position: u64,
    },
    /// Inter-partition: the target refused the credit for good (e.g. it would take the target
    /// partition's funds over 2^64-1); the source refunds the sender and the transfer FAILED.
    #[serde(rename_all = "camelCase")]
    CreditRefused {
        transfer_id: String,
        source_position: u64,
        reason: String,
    },
}

/// What a checkpoint is for. Serialized as `BACKUP`, `MARKER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointKind {
    /// Asked for by an operator or the backup schedule: listed as a backup.
    Backup,
    /// Written at `gateway.backup.checkpointInterval` by continuous backups: a restore point
    /// between backups, listed only among the restore points.
    Marker,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Backup => "BACKUP",
            CheckpointKind::Marker => "MARKER",
        }
    }
}

/// The latest `requested_at_ms` a checkpoint may carry: the end of year 9999 UTC, so that every
/// one prints as an RFC 3339 time.
pub const REQUESTED_AT_MS_MAX: u64 = 253_402_300_799_999;

/// What the coordinator (the gateway) says of a checkpoint it asks for: its kind and the time
/// of the request in milliseconds since the Unix epoch (at most [`REQUESTED_AT_MS_MAX`]). It
/// is the same for every partition of the checkpoint: the restore point's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRequest {
    pub kind: CheckpointKind,
    pub requested_at_ms: u64,
}

impl Command {
    /// A CHECKPOINT record of `checkpoint_id` that says nothing of its request (as propagation
    /// writes it).
    pub fn checkpoint(checkpoint_id: u64) -> Command {
        Command::Checkpoint {
            checkpoint_id,
            request: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Command always serializes")
    }

    pub fn decode(payload: &[u8]) -> Result<Command, DecodeError> {
        serde_json::from_slice(payload).map_err(|source| DecodeError {
            payload_bytes: payload.len(),
            source,
        })
    }
}

/// A log payload that is not a [`Command`] (the framing around it was valid).
#[derive(Debug, thiserror::Error)]
#[error("payload of {payload_bytes} bytes is not a JSON command: {source}")]
pub struct DecodeError {
    pub payload_bytes: usize,
    #[source]
    pub source: serde_json::Error,
}

/// An inter-partition command (`Credit` or `CreditAck`) with the sender's latest checkpoint id
/// at the time it was sent: the carrier of the consistent cut (see ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub command: Command,
    pub checkpoint_id: u64,
}

/// The records a receiver appends for `deliveries`, in order: before a message whose carried
/// checkpoint id is greater than the receiver's latest (`latest_checkpoint`, updated here), the
/// CHECKPOINT record of that id. The flag says whether the record answers a message (`true`) or
/// is such an inserted checkpoint (`false`).
pub fn delivery_records(
    latest_checkpoint: &mut u64,
    deliveries: Vec<Delivery>,
) -> Vec<(Command, bool)> {
    let mut records = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if delivery.checkpoint_id > *latest_checkpoint {
            *latest_checkpoint = delivery.checkpoint_id;
            records.push((Command::checkpoint(delivery.checkpoint_id), false));
        }
        records.push((delivery.command, true));
    }
    records
}

/// What the source appends once the target answered `credit` with `outcome`: an acknowledgement
/// when it was applied (now or before), a refusal when the target refused it (refusals are
/// deterministic, so a re-send would be refused again). `None` when `credit` is not a credit.
/// The one rule the outbox sender and the simulation of the consistent cut share.
pub fn answer_for_credit(credit: &Command, outcome: Outcome) -> Option<Command> {
    let Command::Credit {
        transfer_id,
        source_position,
        ..
    } = credit
    else {
        return None;
    };
    match outcome {
        Outcome::Credited { .. } => Some(Command::CreditAck {
            transfer_id: transfer_id.clone(),
            source_position: *source_position,
        }),
        Outcome::Rejected { rejection } => Some(Command::CreditRefused {
            transfer_id: transfer_id.clone(),
            source_position: *source_position,
            reason: rejection.message(),
        }),
        _ => None,
    }
}

/// What processing one command produced. Deterministic: a function of the command and the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    Balance {
        account: String,
        balance: u64,
    },
    #[serde(rename_all = "camelCase")]
    TransferCompleted {
        transfer_id: String,
    },
    /// Debited; the credit travels to another partition.
    #[serde(rename_all = "camelCase")]
    TransferPending {
        transfer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    Credited {
        transfer_id: String,
        duplicate: bool,
    },
    #[serde(rename_all = "camelCase")]
    CreditAcked {
        transfer_id: String,
    },
    /// The target refused the credit: the sender got the amount back, the transfer FAILED.
    #[serde(rename_all = "camelCase")]
    TransferRefunded {
        transfer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    CheckpointCreated {
        checkpoint_id: u64,
        position: u64,
    },
    /// The partition already holds this checkpoint (created earlier, e.g. by propagation).
    #[serde(rename_all = "camelCase")]
    CheckpointExists {
        checkpoint_id: u64,
    },
    Rejected {
        rejection: Rejection,
    },
}

/// Why a command was refused. The log keeps refused commands too: refusal is part of the
/// deterministic processing, not a failure of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Rejection {
    InsufficientFunds {
        account: String,
        balance: u64,
        amount: u64,
    },
    BalanceOverflow {
        account: String,
    },
    #[serde(rename_all = "camelCase")]
    CheckpointNotNewer {
        requested: u64,
        latest: u64,
    },
    #[serde(rename_all = "camelCase")]
    TransferIdReused {
        transfer_id: String,
    },
    WrongPartition {
        account: String,
        partition: u32,
    },
    InvalidCommand {
        reason: String,
    },
}

impl Rejection {
    pub fn message(&self) -> String {
        match self {
            Rejection::InsufficientFunds {
                account,
                balance,
                amount,
            } => format!(
                "insufficient funds: account={account} balance={balance} amount={amount}"
            ),
            Rejection::BalanceOverflow { account } => format!(
                "the money held by the partition of account={account} would exceed 2^64-1 \
                 (18446744073709551615, balances and outgoing transfers together); use a smaller amount"
            ),
            Rejection::CheckpointNotNewer { requested, latest } => format!(
                "backup id must be greater than the latest backup id: requested={requested} latest={latest}; use an id greater than {latest}"
            ),
            Rejection::TransferIdReused { transfer_id } => format!(
                "transferId={transfer_id} was already used for a different transfer; use a new transferId"
            ),
            Rejection::WrongPartition { account, partition } => {
                format!("account={account} does not belong to partition={partition}")
            }
            Rejection::InvalidCommand { reason } => format!("invalid command: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        let account = "[A-Za-z0-9_.-]{1,16}";
        prop_oneof![
            (account, any::<u64>())
                .prop_map(|(account, amount)| Command::Deposit { account, amount }),
            (account, any::<u64>())
                .prop_map(|(account, amount)| Command::Withdraw { account, amount }),
            (account, account, any::<u64>(), "[a-f0-9-]{36}").prop_map(
                |(from, to, amount, transfer_id)| {
                    Command::Transfer {
                        transfer_id,
                        from,
                        to,
                        amount,
                    }
                }
            ),
            (
                any::<u64>(),
                proptest::option::of((any::<bool>(), 0..=REQUESTED_AT_MS_MAX))
            )
                .prop_map(|(checkpoint_id, request)| Command::Checkpoint {
                    checkpoint_id,
                    request: request.map(|(marker, requested_at_ms)| CheckpointRequest {
                        kind: if marker {
                            CheckpointKind::Marker
                        } else {
                            CheckpointKind::Backup
                        },
                        requested_at_ms,
                    }),
                }),
            (
                account,
                any::<u32>(),
                any::<(u64, u64)>(),
                any::<u64>(),
                "[a-f0-9-]{36}"
            )
                .prop_map(
                    |(
                        to,
                        from_partition,
                        (source_position, finished_below),
                        amount,
                        transfer_id,
                    )| {
                        Command::Credit {
                            transfer_id,
                            from_partition,
                            source_position,
                            finished_below,
                            to,
                            amount,
                        }
                    }
                ),
            ("[a-f0-9-]{36}", any::<u64>()).prop_map(|(transfer_id, source_position)| {
                Command::CreditAck {
                    transfer_id,
                    source_position,
                }
            }),
            ("[a-f0-9-]{36}", any::<u64>(), ".{0,64}").prop_map(
                |(transfer_id, source_position, reason)| Command::CreditRefused {
                    transfer_id,
                    source_position,
                    reason,
                }
            ),
        ]
    }

    /// Payloads that are not commands are refused with a typed error that says what was read.
    #[test]
    fn bad_payloads_do_not_decode() {
        for (payload, expected) in [
            (&b""[..], "payload of 0 bytes"),
            (b"not json", "payload of 8 bytes is not a JSON command"),
            (
                br#"{"type":"teleport","account":"a"}"#,
                "unknown variant `teleport`",
            ),
            (
                br#"{"type":"deposit","account":"a"}"#,
                "missing field `amount`",
            ),
        ] {
            let error = Command::decode(payload).unwrap_err();
            assert_eq!(error.payload_bytes, payload.len());
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    /// A checkpoint record of an earlier release (no request) still decodes; one with a
    /// request is written exactly so (part of the on-disk contract), and one without stays as it
    /// was.
    #[test]
    fn checkpoint_records_carry_their_request_or_none() {
        let old = br#"{"type":"checkpoint","checkpointId":5}"#;
        assert_eq!(Command::decode(old).unwrap(), Command::checkpoint(5));
        assert_eq!(Command::checkpoint(5).encode(), old.to_vec());
        let marker = Command::Checkpoint {
            checkpoint_id: 6,
            request: Some(CheckpointRequest {
                kind: CheckpointKind::Marker,
                requested_at_ms: 1_796_151_335_138,
            }),
        };
        assert_eq!(
            String::from_utf8(marker.encode()).unwrap(),
            r#"{"type":"checkpoint","checkpointId":6,"request":{"kind":"MARKER","requestedAtMs":1796151335138}}"#
        );
    }

    proptest! {
        #[test]
        fn commands_round_trip(command in command()) {
            let decoded = Command::decode(&command.encode()).unwrap();
            prop_assert_eq!(decoded, command);
        }
    }
}
