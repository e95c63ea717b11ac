//! The ledger state of one partition and the deterministic processor that changes it.
//!
//! Invariant: the state depends only on the records before it in the log. `apply` reads nothing
//! but its arguments (no clock, no randomness, no I/O), so replaying the same log on any machine
//! gives the same state, and the same outcomes.
//!
//! Invariant (conservation): `held_total` = Σ balances + Σ outbox amounts, and it never exceeds
//! 2^64-1: a deposit or credit that would take it over is refused. So a refund (an outbox amount
//! going back to its sender) always fits in the sender's balance, and a refused credit can always
//! end its transfer without creating or losing money.
//!
//! Invariant (bounded state): `transfers` holds every unfinished transfer plus at most
//! [`FINISHED_TRANSFERS_RETAINED`] finished ones (the idempotency window of `transferId`);
//! `credited` holds, per source partition, only the credits the source may still re-send
//! (those at or above the source's `finished_below`). Both are pruned by `apply`, from what the
//! log says, so pruning is as deterministic as the rest.

use std::collections::BTreeMap;

use crate::record::{Command, Outcome, Rejection};
use crate::routing::partition_for_account;

/// How many finished transfers a partition remembers by `transferId`, newest first: a client that
/// repeats a transfer request with the same id within this window gets the first answer instead
/// of a second transfer. A constant, not a setting: the state must depend only on the log.
pub const FINISHED_TRANSFERS_RETAINED: usize = 100_000;

/// A transfer this partition debited, kept to make `transferId` idempotent.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TransferEntry {
    pub from: String,
    pub to: String,
    pub amount: u64,
    /// The log position of the `Transfer` record: the transfer's name across partitions.
    pub position: u64,
    /// Set when the target refused the credit and the sender was refunded.
    pub failure_reason: Option<String>,
}

/// The source side of a cross-partition transfer: debited here, not yet acknowledged by the
/// target. Re-sent until acknowledged or refused, also after a restart or a restore.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OutgoingTransfer {
    pub transfer_id: String,
    pub from: String,
    pub to_partition: u32,
    pub to: String,
    pub amount: u64,
}

/// The at-most-once guard of the credits from one source partition.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct CreditedFrom {
    /// Credits from below this source position are finished at the source: a message about one
    /// is an old re-send, answered as a duplicate without applying it.
    pub finished_below: u64,
    /// Credits answered here at or above `finished_below`, by source position.
    pub positions: BTreeMap<u64, CreditRecord>,
}

/// How a credit was answered. A refusal is remembered as well as an application: a re-send of a
/// refused credit must be refused again even when the balance would now allow it, because the
/// source may already have refunded the sender.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CreditRecord {
    Applied { amount: u64 },
    Refused,
}

#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LedgerState {
    pub partition_id: u32,
    pub partitions_count: u32,
    /// Position of the last record applied; 0 before any.
    pub processed_position: u64,
    pub accounts: BTreeMap<String, u64>,
    /// Σ balances + Σ outbox amounts (see the conservation invariant).
    pub held_total: u64,
    /// Transfers debited here, by transfer id.
    pub transfers: BTreeMap<String, TransferEntry>,
    /// Finished transfers in the order they were debited (position → transfer id): what is
    /// forgotten first when more than [`FINISHED_TRANSFERS_RETAINED`] are finished.
    pub finished: BTreeMap<u64, String>,
    /// Outgoing cross-partition transfers awaiting the target's answer, by source position.
    pub outbox: BTreeMap<u64, OutgoingTransfer>,
    /// Credits applied here, per source partition: the at-most-once guard.
    pub credited: BTreeMap<u32, CreditedFrom>,
    /// 0 while no checkpoint was taken.
    pub latest_checkpoint_id: u64,
    pub latest_checkpoint_position: u64,
}

/// A partition's totals as its state knows them (the wire has its own type,
/// `sluice_protocol::wire::PartitionSummary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSummary {
    pub partition_id: u32,
    pub accounts: u64,
    pub balance_total: u128,
    /// Sum of the outbox: debited here, not yet credited elsewhere (as far as this partition knows).
    pub in_flight: u128,
    pub outbox_entries: u64,
    pub processed_position: u64,
    pub latest_checkpoint_id: u64,
    pub latest_checkpoint_position: u64,
}

/// Where a transfer debited here stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferProgress {
    /// The credit is on its way to the target.
    Pending,
    Completed,
    /// The target refused the credit; the sender was refunded.
    Failed {
        reason: String,
    },
}

impl LedgerState {
    pub fn new(partition_id: u32, partitions_count: u32) -> LedgerState {
        LedgerState {
            partition_id,
            partitions_count,
            ..LedgerState::default()
        }
    }

    pub fn summary(&self) -> PartitionSummary {
        PartitionSummary {
            partition_id: self.partition_id,
            accounts: self.accounts.len() as u64,
            balance_total: self.accounts.values().map(|b| u128::from(*b)).sum(),
            in_flight: self.outbox.values().map(|o| u128::from(o.amount)).sum(),
            outbox_entries: self.outbox.len() as u64,
            processed_position: self.processed_position,
            latest_checkpoint_id: self.latest_checkpoint_id,
            latest_checkpoint_position: self.latest_checkpoint_position,
        }
    }

    /// The transfer `transfer_id` as this partition (its source) knows it, if it still does.
    pub fn transfer(&self, transfer_id: &str) -> Option<(&TransferEntry, TransferProgress)> {
        let entry = self.transfers.get(transfer_id)?;
        let progress = match (
            &entry.failure_reason,
            self.outbox.contains_key(&entry.position),
        ) {
            (Some(reason), _) => TransferProgress::Failed {
                reason: reason.clone(),
            },
            (None, true) => TransferProgress::Pending,
            (None, false) => TransferProgress::Completed,
        };
        Some((entry, progress))
    }

    /// The credits to (re-)send for the oldest `limit` outbox entries, as (target partition,
    /// command). Each credit carries, as `finished_below`, the lowest source position of this
    /// partition's unfinished transfers to that target: every one below it was answered.
    pub fn outbox_credits(&self, limit: usize) -> Vec<(u32, Command)> {
        let mut lowest_unfinished: BTreeMap<u32, u64> = BTreeMap::new();
        self.outbox
            .iter()
            .take(limit)
            .map(|(position, entry)| {
                // The outbox is in position order, so the first entry seen for a target is its
                // lowest unfinished one.
                let finished_below = *lowest_unfinished
                    .entry(entry.to_partition)
                    .or_insert(*position);
                (
                    entry.to_partition,
                    Command::Credit {
                        transfer_id: entry.transfer_id.clone(),
                        from_partition: self.partition_id,
                        source_position: *position,
                        finished_below,
                        to: entry.to.clone(),
                        amount: entry.amount,
                    },
                )
            })
            .collect()
    }

    fn owns(&self, account: &str) -> Result<(), Rejection> {
        let partition = partition_for_account(account, self.partitions_count);
        if partition == self.partition_id {
            Ok(())
        } else {
            Err(Rejection::WrongPartition {
                account: account.to_string(),
                partition: self.partition_id,
            })
        }
    }

    /// Applies the record at `position`. Positions must arrive in order, each exactly once.
    pub fn apply(&mut self, position: u64, command: &Command) -> Outcome {
        assert!(
            position > self.processed_position,
            "record position {position} applied after {}",
            self.processed_position
        );
        self.processed_position = position;
        let outcome = match self.process(position, command) {
            Ok(outcome) => outcome,
            Err(rejection) => Outcome::Rejected { rejection },
        };
        debug_assert_eq!(
            u128::from(self.held_total),
            self.summary().balance_total + self.summary().in_flight,
            "held_total must be the sum of balances and outbox"
        );
        outcome
    }

    /// One record, by kind; each kind's rules are in its own method.
    fn process(&mut self, position: u64, command: &Command) -> Result<Outcome, Rejection> {
        match command {
            Command::Deposit { account, amount } => self.deposit(account, *amount),
            Command::Withdraw { account, amount } => self.withdraw(account, *amount),
            Command::Transfer {
                transfer_id,
                from,
                to,
                amount,
            } => self.transfer_out(position, transfer_id, from, to, *amount),
            Command::Credit {
                transfer_id,
                from_partition,
                source_position,
                finished_below,
                to,
                amount,
            } => self.credit_in(
                transfer_id,
                *from_partition,
                *source_position,
                *finished_below,
                to,
                *amount,
            ),
            Command::CreditAck {
                transfer_id,
                source_position,
            } => Ok(self.credit_acked(transfer_id, *source_position)),
            Command::CreditRefused {
                transfer_id,
                source_position,
                reason,
            } => Ok(self.credit_refused(transfer_id, *source_position, reason)),
            Command::Checkpoint { checkpoint_id, .. } => self.checkpoint(position, *checkpoint_id),
        }
    }

    fn deposit(&mut self, account: &str, amount: u64) -> Result<Outcome, Rejection> {
        self.owns(account)?;
        positive(amount)?;
        let balance = self.receive(account, amount)?;
        Ok(Outcome::Balance {
            account: account.to_string(),
            balance,
        })
    }

    fn withdraw(&mut self, account: &str, amount: u64) -> Result<Outcome, Rejection> {
        self.owns(account)?;
        positive(amount)?;
        let balance = self.debit(account, amount)?;
        self.held_total -= amount;
        Ok(Outcome::Balance {
            account: account.to_string(),
            balance,
        })
    }

    /// The target side of a transfer: credits `to` once per source position (a re-sent credit
    /// is answered as a duplicate, a refused one is refused again).
    fn credit_in(
        &mut self,
        transfer_id: &str,
        from_partition: u32,
        source_position: u64,
        finished_below: u64,
        to: &str,
        amount: u64,
    ) -> Result<Outcome, Rejection> {
        self.owns(to)?;
        if from_partition == 0
            || from_partition > self.partitions_count
            || from_partition == self.partition_id
        {
            return Err(Rejection::InvalidCommand {
                reason: format!(
                    "a credit from partition {from_partition} cannot reach partition {}",
                    self.partition_id
                ),
            });
        }
        positive(amount)?;
        let guard = self.credited.entry(from_partition).or_default();
        if finished_below > guard.finished_below {
            guard.finished_below = finished_below;
            guard.positions = guard.positions.split_off(&finished_below);
        }
        if source_position < guard.finished_below {
            return Ok(Outcome::Credited {
                transfer_id: transfer_id.to_string(),
                duplicate: true,
            });
        }
        match guard.positions.get(&source_position) {
            Some(CreditRecord::Applied { .. }) => {
                return Ok(Outcome::Credited {
                    transfer_id: transfer_id.to_string(),
                    duplicate: true,
                })
            }
            Some(CreditRecord::Refused) => {
                return Err(Rejection::BalanceOverflow {
                    account: to.to_string(),
                })
            }
            None => {}
        }
        let received = self.receive(to, amount);
        let record = match received {
            Ok(_) => CreditRecord::Applied { amount },
            Err(_) => CreditRecord::Refused,
        };
        self.credited
            .entry(from_partition)
            .or_default()
            .positions
            .insert(source_position, record);
        received?;
        Ok(Outcome::Credited {
            transfer_id: transfer_id.to_string(),
            duplicate: false,
        })
    }

    fn credit_acked(&mut self, transfer_id: &str, source_position: u64) -> Outcome {
        // Idempotent: an acknowledgement may arrive twice (re-sent credits).
        if let Some(entry) = self.take_outgoing(transfer_id, source_position) {
            self.held_total -= entry.amount;
            self.finish(source_position, transfer_id, None);
        }
        Outcome::CreditAcked {
            transfer_id: transfer_id.to_string(),
        }
    }

    fn credit_refused(&mut self, transfer_id: &str, source_position: u64, reason: &str) -> Outcome {
        // Idempotent too: only an entry still in the outbox is refunded, once.
        if let Some(entry) = self.take_outgoing(transfer_id, source_position) {
            // Fits: the amount was part of held_total, which stays the same.
            let balance = self.accounts.entry(entry.from.clone()).or_insert(0);
            *balance += entry.amount;
            self.finish(source_position, transfer_id, Some(reason.to_string()));
        }
        Outcome::TransferRefunded {
            transfer_id: transfer_id.to_string(),
        }
    }

    fn checkpoint(&mut self, position: u64, checkpoint_id: u64) -> Result<Outcome, Rejection> {
        if checkpoint_id == self.latest_checkpoint_id && checkpoint_id > 0 {
            return Ok(Outcome::CheckpointExists { checkpoint_id });
        }
        if checkpoint_id <= self.latest_checkpoint_id {
            return Err(Rejection::CheckpointNotNewer {
                requested: checkpoint_id,
                latest: self.latest_checkpoint_id,
            });
        }
        self.latest_checkpoint_id = checkpoint_id;
        self.latest_checkpoint_position = position;
        Ok(Outcome::CheckpointCreated {
            checkpoint_id,
            position,
        })
    }

    /// The source side of a transfer: debits `from`, then credits `to` here or puts the credit
    /// in the outbox for the target partition.
    fn transfer_out(
        &mut self,
        position: u64,
        transfer_id: &str,
        from: &str,
        to: &str,
        amount: u64,
    ) -> Result<Outcome, Rejection> {
        self.owns(from)?;
        positive(amount)?;
        if from == to {
            return Err(Rejection::InvalidCommand {
                reason: "from and to must be different accounts".into(),
            });
        }
        if let Some((done, progress)) = self.transfer(transfer_id) {
            if !(done.from == from && done.to == to && done.amount == amount) {
                return Err(Rejection::TransferIdReused {
                    transfer_id: transfer_id.to_string(),
                });
            }
            let transfer_id = transfer_id.to_string();
            return Ok(match progress {
                TransferProgress::Pending => Outcome::TransferPending { transfer_id },
                TransferProgress::Completed => Outcome::TransferCompleted { transfer_id },
                TransferProgress::Failed { .. } => Outcome::TransferRefunded { transfer_id },
            });
        }
        let to_partition = partition_for_account(to, self.partitions_count);
        if to_partition == self.partition_id {
            // Moving money inside the partition leaves held_total as it is: it always fits.
            self.debit(from, amount)?;
            *self.accounts.entry(to.to_string()).or_insert(0) += amount;
        } else {
            // Debit here; the credit travels to the target as an inter-partition command.
            self.debit(from, amount)?;
            self.outbox.insert(
                position,
                OutgoingTransfer {
                    transfer_id: transfer_id.to_string(),
                    from: from.to_string(),
                    to_partition,
                    to: to.to_string(),
                    amount,
                },
            );
        }
        self.transfers.insert(
            transfer_id.to_string(),
            TransferEntry {
                from: from.to_string(),
                to: to.to_string(),
                amount,
                position,
                failure_reason: None,
            },
        );
        let transfer_id = transfer_id.to_string();
        if to_partition == self.partition_id {
            self.finish(position, &transfer_id, None);
            Ok(Outcome::TransferCompleted { transfer_id })
        } else {
            Ok(Outcome::TransferPending { transfer_id })
        }
    }

    /// Removes the outbox entry at `position` if it is the transfer `transfer_id`.
    fn take_outgoing(&mut self, transfer_id: &str, position: u64) -> Option<OutgoingTransfer> {
        match self.outbox.get(&position) {
            Some(entry) if entry.transfer_id == transfer_id => self.outbox.remove(&position),
            _ => None,
        }
    }

    /// Records that the transfer debited at `position` finished, and forgets the oldest finished
    /// transfers beyond the idempotency window.
    fn finish(&mut self, position: u64, transfer_id: &str, failure_reason: Option<String>) {
        if let Some(entry) = self.transfers.get_mut(transfer_id) {
            if entry.position == position {
                entry.failure_reason = failure_reason;
            }
        }
        self.finished.insert(position, transfer_id.to_string());
        while self.finished.len() > FINISHED_TRANSFERS_RETAINED {
            let Some((oldest, id)) = self.finished.pop_first() else {
                break;
            };
            if self
                .transfers
                .get(&id)
                .is_some_and(|e| e.position == oldest)
            {
                self.transfers.remove(&id);
            }
        }
    }

    /// Adds money that enters the partition (a deposit or a credit) to `account`.
    fn receive(&mut self, account: &str, amount: u64) -> Result<u64, Rejection> {
        let held_total =
            self.held_total
                .checked_add(amount)
                .ok_or_else(|| Rejection::BalanceOverflow {
                    account: account.to_string(),
                })?;
        self.held_total = held_total;
        let balance = self.accounts.entry(account.to_string()).or_insert(0);
        // Cannot overflow: every balance is part of held_total.
        *balance += amount;
        Ok(*balance)
    }

    fn debit(&mut self, account: &str, amount: u64) -> Result<u64, Rejection> {
        let balance = self.accounts.get(account).copied().unwrap_or(0);
        let remaining =
            balance
                .checked_sub(amount)
                .ok_or_else(|| Rejection::InsufficientFunds {
                    account: account.to_string(),
                    balance,
                    amount,
                })?;
        // A withdrawal never creates an account: only an existing one can have funds.
        self.accounts.insert(account.to_string(), remaining);
        Ok(remaining)
    }
}

fn positive(amount: u64) -> Result<(), Rejection> {
    if amount == 0 {
        Err(Rejection::InvalidCommand {
            reason: "amount must be a positive integer".into(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accounts that live on partition 1 of 3.
    fn local_accounts(n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("acct-{i}"))
            .filter(|a| partition_for_account(a, 3) == 1)
            .take(n)
            .collect()
    }

    fn remote_account() -> String {
        (0..)
            .map(|i| format!("acct-{i}"))
            .find(|a| partition_for_account(a, 3) != 1)
            .unwrap()
    }

    /// Tests as data: each case applies commands in order and lists the expected outcomes.
    #[test]
    fn commands_produce_expected_outcomes() {
        let accounts = local_accounts(2);
        let (a, b) = (accounts[0].clone(), accounts[1].clone());
        let remote = remote_account();
        let balance = |account: &str, balance| Outcome::Balance {
            account: account.to_string(),
            balance,
        };
        let cases: Vec<(Command, Outcome)> = vec![
            (
                Command::Deposit {
                    account: a.clone(),
                    amount: 10,
                },
                balance(&a, 10),
            ),
            (
                Command::Withdraw {
                    account: a.clone(),
                    amount: 4,
                },
                balance(&a, 6),
            ),
            (
                Command::Withdraw {
                    account: a.clone(),
                    amount: 7,
                },
                Outcome::Rejected {
                    rejection: Rejection::InsufficientFunds {
                        account: a.clone(),
                        balance: 6,
                        amount: 7,
                    },
                },
            ),
            (
                Command::Deposit {
                    account: a.clone(),
                    amount: 0,
                },
                Outcome::Rejected {
                    rejection: Rejection::InvalidCommand {
                        reason: "amount must be a positive integer".into(),
                    },
                },
            ),
            (
                Command::Deposit {
                    account: a.clone(),
                    amount: u64::MAX,
                },
                Outcome::Rejected {
                    rejection: Rejection::BalanceOverflow { account: a.clone() },
                },
            ),
            (
                Command::Transfer {
                    transfer_id: "t1".into(),
                    from: a.clone(),
                    to: b.clone(),
                    amount: 5,
                },
                Outcome::TransferCompleted {
                    transfer_id: "t1".into(),
                },
            ),
            // Idempotent: the same transfer again changes nothing.
            (
                Command::Transfer {
                    transfer_id: "t1".into(),
                    from: a.clone(),
                    to: b.clone(),
                    amount: 5,
                },
                Outcome::TransferCompleted {
                    transfer_id: "t1".into(),
                },
            ),
            (
                Command::Transfer {
                    transfer_id: "t1".into(),
                    from: a.clone(),
                    to: b.clone(),
                    amount: 1,
                },
                Outcome::Rejected {
                    rejection: Rejection::TransferIdReused {
                        transfer_id: "t1".into(),
                    },
                },
            ),
            (
                Command::Transfer {
                    transfer_id: "t2".into(),
                    from: a.clone(),
                    to: remote.clone(),
                    amount: 1,
                },
                Outcome::TransferPending {
                    transfer_id: "t2".into(),
                },
            ),
            (
                Command::Deposit {
                    account: remote.clone(),
                    amount: 1,
                },
                Outcome::Rejected {
                    rejection: Rejection::WrongPartition {
                        account: remote.clone(),
                        partition: 1,
                    },
                },
            ),
            (
                Command::checkpoint(5),
                Outcome::CheckpointCreated {
                    checkpoint_id: 5,
                    position: 11,
                },
            ),
            (
                Command::checkpoint(5),
                Outcome::CheckpointExists { checkpoint_id: 5 },
            ),
            (
                Command::checkpoint(3),
                Outcome::Rejected {
                    rejection: Rejection::CheckpointNotNewer {
                        requested: 3,
                        latest: 5,
                    },
                },
            ),
        ];
        let mut state = LedgerState::new(1, 3);
        for (index, (command, expected)) in cases.into_iter().enumerate() {
            let outcome = state.apply(index as u64 + 1, &command);
            assert_eq!(outcome, expected, "case {index}: {command:?}");
        }
        assert_eq!(state.accounts[&a], 0);
        assert_eq!(state.accounts[&b], 5);
        assert_eq!(state.latest_checkpoint_id, 5);
        assert_eq!(state.latest_checkpoint_position, 11);
        assert_eq!(state.summary().balance_total, 5);
        assert_eq!(state.summary().in_flight, 1);
        // The target credits once per transfer id; the acknowledgement empties the outbox.
        let mut target = LedgerState::new(partition_for_account(&remote, 3), 3);
        let credits = state.outbox_credits(10);
        let [(to_partition, credit)] = credits.as_slice() else {
            panic!("one credit expected: {credits:?}")
        };
        assert_eq!(*to_partition, target.partition_id);
        assert_eq!(
            *credit,
            Command::Credit {
                transfer_id: "t2".into(),
                from_partition: 1,
                source_position: 9,
                finished_below: 9,
                to: remote.clone(),
                amount: 1,
            }
        );
        assert_eq!(
            target.apply(1, credit),
            Outcome::Credited {
                transfer_id: "t2".into(),
                duplicate: false
            }
        );
        assert_eq!(
            target.apply(2, credit),
            Outcome::Credited {
                transfer_id: "t2".into(),
                duplicate: true
            }
        );
        assert_eq!(target.accounts[&remote], 1);
        state.apply(
            14,
            &Command::CreditAck {
                transfer_id: "t2".into(),
                source_position: 9,
            },
        );
        assert_eq!(state.summary().in_flight, 0);
        assert_eq!(
            state.apply(
                15,
                &Command::Transfer {
                    transfer_id: "t2".into(),
                    from: a.clone(),
                    to: remote.clone(),
                    amount: 1
                }
            ),
            Outcome::TransferCompleted {
                transfer_id: "t2".into()
            }
        );
    }

    #[test]
    fn replay_is_deterministic() {
        let accounts = local_accounts(5);
        let commands: Vec<Command> = (0..200u64)
            .map(|i| {
                let account = accounts[(i % 5) as usize].clone();
                match i % 4 {
                    0 | 1 => Command::Deposit {
                        account,
                        amount: i + 1,
                    },
                    2 => Command::Withdraw {
                        account,
                        amount: i / 2,
                    },
                    _ => Command::Transfer {
                        transfer_id: format!("t{i}"),
                        from: account,
                        to: accounts[((i + 1) % 5) as usize].clone(),
                        amount: 3,
                    },
                }
            })
            .collect();
        let run = || {
            let mut state = LedgerState::new(1, 3);
            let outcomes: Vec<Outcome> = commands
                .iter()
                .enumerate()
                .map(|(i, c)| state.apply(i as u64 + 1, c))
                .collect();
            (state, outcomes)
        };
        assert_eq!(run(), run());
    }

    use crate::record::answer_for_credit;

    /// An account that lives on `partition` of `partitions_count`, the `n`-th such.
    fn account_on(partition: u32, partitions_count: u32, n: usize) -> String {
        (0..)
            .map(|i| format!("acct-{i}"))
            .filter(|a| partition_for_account(a, partitions_count) == partition)
            .nth(n)
            .unwrap()
    }

    /// Appends `command` at the next position of `state`.
    fn append(state: &mut LedgerState, command: &Command) -> Outcome {
        let position = state.processed_position + 1;
        state.apply(position, command)
    }

    /// Delivers the outbox of `partitions[source]` (each credit `copies` times, as re-sends do)
    /// and appends the answers at the source, as the outbox sender does.
    fn exchange(partitions: &mut [LedgerState], source: usize, copies: usize) {
        let credits = partitions[source].outbox_credits(usize::MAX);
        for (to_partition, credit) in credits {
            let target = &mut partitions[to_partition as usize - 1];
            let mut answer = None;
            for _ in 0..copies {
                answer = answer_for_credit(&credit, append(target, &credit));
            }
            append(
                &mut partitions[source],
                &answer.expect("a credit is answered"),
            );
        }
    }

    fn held(partitions: &[LedgerState]) -> u128 {
        partitions
            .iter()
            .map(|p| p.summary().balance_total + p.summary().in_flight)
            .sum()
    }

    /// Item: two different transfers that share a transferId (from two source partitions) are
    /// two credits at the target, and money is conserved.
    #[test]
    fn a_transfer_id_reused_by_two_sources_is_two_transfers() {
        let mut partitions: Vec<LedgerState> = (1..=3).map(|p| LedgerState::new(p, 3)).collect();
        let (a, b, c) = (
            account_on(1, 3, 0),
            account_on(2, 3, 0),
            account_on(3, 3, 0),
        );
        append(
            &mut partitions[0],
            &Command::Deposit {
                account: a.clone(),
                amount: 100,
            },
        );
        append(
            &mut partitions[1],
            &Command::Deposit {
                account: b.clone(),
                amount: 100,
            },
        );
        let transfer = |from: &str, amount| Command::Transfer {
            transfer_id: "X".into(),
            from: from.to_string(),
            to: c.clone(),
            amount,
        };
        append(&mut partitions[0], &transfer(&a, 10));
        append(&mut partitions[1], &transfer(&b, 30));
        exchange(&mut partitions, 0, 2);
        exchange(&mut partitions, 1, 2);
        assert_eq!(partitions[2].accounts[&c], 40);
        assert_eq!(partitions[0].accounts[&a], 90);
        assert_eq!(partitions[1].accounts[&b], 70);
        assert!(partitions.iter().all(|p| p.outbox.is_empty()));
        assert_eq!(held(&partitions), 200);
    }

    /// Item: a credit the target refuses ends the transfer: the sender is refunded once, the
    /// transfer reads FAILED with the reason, and the outbox no longer holds it.
    #[test]
    fn a_refused_credit_refunds_the_sender_once() {
        let mut partitions: Vec<LedgerState> = (1..=2).map(|p| LedgerState::new(p, 2)).collect();
        let (a, full, other) = (
            account_on(1, 2, 0),
            account_on(2, 2, 0),
            account_on(2, 2, 1),
        );
        append(
            &mut partitions[0],
            &Command::Deposit {
                account: a.clone(),
                amount: 1000,
            },
        );
        append(
            &mut partitions[1],
            &Command::Deposit {
                account: full.clone(),
                amount: u64::MAX - 5,
            },
        );
        // A thousand refused credits, then one that fits: none blocks the others.
        for i in 0..1000 {
            append(
                &mut partitions[0],
                &Command::Transfer {
                    transfer_id: format!("big-{i}"),
                    from: a.clone(),
                    to: full.clone(),
                    amount: 6 + i % 3,
                },
            );
            if i % 10 == 9 {
                exchange(&mut partitions, 0, 1);
            }
            let source = partitions[0].summary();
            assert_eq!(
                source.balance_total + source.in_flight,
                1000,
                "transfer {i}"
            );
        }
        append(
            &mut partitions[0],
            &Command::Transfer {
                transfer_id: "small".into(),
                from: a.clone(),
                to: other.clone(),
                amount: 5,
            },
        );
        exchange(&mut partitions, 0, 1);
        assert_eq!(partitions[0].accounts[&a], 995);
        assert_eq!(partitions[1].accounts[&other], 5);
        assert!(partitions[0].outbox.is_empty());
        let (_, progress) = partitions[0].transfer("big-0").unwrap();
        assert!(
            matches!(&progress, TransferProgress::Failed { reason } if reason.contains("2^64-1")),
            "{progress:?}"
        );
        // A late re-send of a refused credit stays refused, even once the target has room: the
        // sender was refunded already.
        let refused_position = partitions[0].transfers["big-0"].position;
        append(
            &mut partitions[1],
            &Command::Withdraw {
                account: full.clone(),
                amount: 1_000_000,
            },
        );
        let resent = Command::Credit {
            transfer_id: "big-0".into(),
            from_partition: 1,
            source_position: refused_position,
            finished_below: 0,
            to: full.clone(),
            amount: 6,
        };
        // (Answered as a duplicate here, since later credits told the target it is finished;
        // the simulation in broker/tests/consistent_cut.rs covers re-sends that arrive earlier.)
        assert_ne!(
            append(&mut partitions[1], &resent),
            Outcome::Credited {
                transfer_id: "big-0".into(),
                duplicate: false
            }
        );
        assert_eq!(partitions[1].accounts[&full], u64::MAX - 5 - 1_000_000);
        append(
            &mut partitions[1],
            &Command::Deposit {
                account: full.clone(),
                amount: 1_000_000,
            },
        );
        // A refusal seen again (a re-sent credit answered twice) refunds nothing more.
        let again = Command::CreditRefused {
            transfer_id: "big-0".into(),
            source_position: partitions[0].transfers["big-0"].position,
            reason: "again".into(),
        };
        append(&mut partitions[0], &again);
        assert_eq!(partitions[0].accounts[&a], 995);
        // The same request again answers the first outcome, not a second transfer.
        let repeat = Command::Transfer {
            transfer_id: "big-0".into(),
            from: a.clone(),
            to: full.clone(),
            amount: 6,
        };
        assert_eq!(
            append(&mut partitions[0], &repeat),
            Outcome::TransferRefunded {
                transfer_id: "big-0".into()
            }
        );
        assert_eq!(held(&partitions), 1000 + u128::from(u64::MAX - 5));
    }

    /// Item: the dedup state is bounded. A soak over a fixed set of accounts (same- and
    /// cross-partition transfers, every credit delivered twice): the snapshot of each partition
    /// stops growing once the idempotency window is full.
    #[test]
    fn transfer_and_credit_state_levels_off() {
        let mut partitions: Vec<LedgerState> = (1..=2).map(|p| LedgerState::new(p, 2)).collect();
        let accounts: Vec<(usize, String)> = (0..5)
            .flat_map(|n| [(0, account_on(1, 2, n)), (1, account_on(2, 2, n))])
            .collect();
        for (p, account) in &accounts {
            append(
                &mut partitions[*p],
                &Command::Deposit {
                    account: account.clone(),
                    amount: 1_000_000,
                },
            );
        }
        let snapshot_bytes =
            |state: &LedgerState| rkyv::to_bytes::<rkyv::rancor::Error>(state).unwrap().len();
        let rounds = FINISHED_TRANSFERS_RETAINED * 3;
        let mut sizes = Vec::new();
        for i in 0..rounds {
            let (p, from) = &accounts[i % accounts.len()];
            let (_, to) = &accounts[(i * 7 + 3) % accounts.len()];
            if from != to {
                append(
                    &mut partitions[*p],
                    &Command::Transfer {
                        transfer_id: format!("{i:08}-transfer"),
                        from: from.clone(),
                        to: to.clone(),
                        amount: 1,
                    },
                );
            }
            if i % 50 == 49 {
                exchange(&mut partitions, 0, 2);
                exchange(&mut partitions, 1, 2);
            }
            if (i + 1) % FINISHED_TRANSFERS_RETAINED == 0 {
                sizes.push((
                    snapshot_bytes(&partitions[0]),
                    snapshot_bytes(&partitions[1]),
                ));
            }
        }
        assert_eq!(held(&partitions), 10 * 1_000_000);
        for p in &partitions {
            assert!(p.transfers.len() <= FINISHED_TRANSFERS_RETAINED + p.outbox.len());
            for guard in p.credited.values() {
                assert!(
                    guard.positions.len() <= 100,
                    "credit guard holds {}",
                    guard.positions.len()
                );
            }
        }
        // Once the window is full (after the first third), the size stays within 1%.
        let (first, last) = (sizes[1], sizes[2]);
        for (a, b) in [(first.0, last.0), (first.1, last.1)] {
            assert!(
                b.abs_diff(a) * 100 <= a,
                "snapshot grew from {a} to {b} bytes: {sizes:?}"
            );
        }
    }

    /// A credit refused once is refused again when re-sent, even after the target made room:
    /// the source may have refunded the sender already (found by the consistent-cut simulation).
    #[test]
    fn a_refused_credit_stays_refused_when_resent() {
        let mut target = LedgerState::new(2, 2);
        let full = account_on(2, 2, 0);
        append(
            &mut target,
            &Command::Deposit {
                account: full.clone(),
                amount: u64::MAX,
            },
        );
        let credit = Command::Credit {
            transfer_id: "t".into(),
            from_partition: 1,
            source_position: 7,
            finished_below: 7,
            to: full.clone(),
            amount: 10,
        };
        let refused = Outcome::Rejected {
            rejection: Rejection::BalanceOverflow {
                account: full.clone(),
            },
        };
        assert_eq!(append(&mut target, &credit), refused);
        append(
            &mut target,
            &Command::Withdraw {
                account: full.clone(),
                amount: 100,
            },
        );
        assert_eq!(append(&mut target, &credit), refused);
        assert_eq!(target.accounts[&full], u64::MAX - 100);
    }
}
