//! The ledger state of one partition and the deterministic processor that changes it.
//!
//! Invariant: the state depends only on the records before it in the log. `apply` reads nothing
//! but its arguments (no clock, no randomness, no I/O), so replaying the same log on any machine
//! gives the same state, and the same outcomes.

use std::collections::BTreeMap;

use crate::record::{Command, Outcome, Rejection};
use crate::routing::partition_for_account;

/// A completed transfer, kept to make `transferId` idempotent.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TransferEntry {
    pub from: String,
    pub to: String,
    pub amount: u64,
}

/// The source side of a cross-partition transfer: debited here, not yet acknowledged by the
/// target. Re-sent until acknowledged, also after a restart or a restore.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OutgoingTransfer {
    pub to_partition: u32,
    pub to: String,
    pub amount: u64,
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
    pub transfers: BTreeMap<String, TransferEntry>,
    /// Outgoing cross-partition transfers awaiting the target's acknowledgement, by transfer id.
    pub outbox: BTreeMap<String, OutgoingTransfer>,
    /// Credits applied here, by transfer id (with the amount): the at-most-once guard.
    pub credited: BTreeMap<String, u64>,
    /// 0 while no checkpoint was taken.
    pub latest_checkpoint_id: u64,
    pub latest_checkpoint_position: u64,
}

/// What a summary query answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
        match self.process(position, command) {
            Ok(outcome) => outcome,
            Err(rejection) => Outcome::Rejected { rejection },
        }
    }

    fn process(&mut self, position: u64, command: &Command) -> Result<Outcome, Rejection> {
        match command {
            Command::Deposit { account, amount } => {
                self.owns(account)?;
                positive(*amount)?;
                let balance = self.accounts.get(account).copied().unwrap_or(0);
                let balance =
                    balance
                        .checked_add(*amount)
                        .ok_or_else(|| Rejection::BalanceOverflow {
                            account: account.clone(),
                        })?;
                self.accounts.insert(account.clone(), balance);
                Ok(Outcome::Balance {
                    account: account.clone(),
                    balance,
                })
            }
            Command::Withdraw { account, amount } => {
                self.owns(account)?;
                positive(*amount)?;
                let balance = self.debit(account, *amount)?;
                Ok(Outcome::Balance {
                    account: account.clone(),
                    balance,
                })
            }
            Command::Transfer {
                transfer_id,
                from,
                to,
                amount,
            } => {
                self.owns(from)?;
                positive(*amount)?;
                if from == to {
                    return Err(Rejection::InvalidCommand {
                        reason: "from and to must be different accounts".into(),
                    });
                }
                if let Some(done) = self.transfers.get(transfer_id) {
                    if !(done.from == *from && done.to == *to && done.amount == *amount) {
                        return Err(Rejection::TransferIdReused {
                            transfer_id: transfer_id.clone(),
                        });
                    }
                    let transfer_id = transfer_id.clone();
                    return Ok(if self.outbox.contains_key(&transfer_id) {
                        Outcome::TransferPending { transfer_id }
                    } else {
                        Outcome::TransferCompleted { transfer_id }
                    });
                }
                let to_partition = partition_for_account(to, self.partitions_count);
                if to_partition != self.partition_id {
                    // Debit here; the credit travels to the target as an inter-partition command.
                    self.debit(from, *amount)?;
                    self.outbox.insert(
                        transfer_id.clone(),
                        OutgoingTransfer {
                            to_partition,
                            to: to.clone(),
                            amount: *amount,
                        },
                    );
                    self.transfers.insert(
                        transfer_id.clone(),
                        TransferEntry {
                            from: from.clone(),
                            to: to.clone(),
                            amount: *amount,
                        },
                    );
                    return Ok(Outcome::TransferPending {
                        transfer_id: transfer_id.clone(),
                    });
                }
                let to_balance = self.accounts.get(to).copied().unwrap_or(0);
                let to_balance =
                    to_balance
                        .checked_add(*amount)
                        .ok_or_else(|| Rejection::BalanceOverflow {
                            account: to.clone(),
                        })?;
                self.debit(from, *amount)?;
                self.accounts.insert(to.clone(), to_balance);
                self.transfers.insert(
                    transfer_id.clone(),
                    TransferEntry {
                        from: from.clone(),
                        to: to.clone(),
                        amount: *amount,
                    },
                );
                Ok(Outcome::TransferCompleted {
                    transfer_id: transfer_id.clone(),
                })
            }
            Command::Credit {
                transfer_id,
                to,
                amount,
                ..
            } => {
                self.owns(to)?;
                if self.credited.contains_key(transfer_id) {
                    return Ok(Outcome::Credited {
                        transfer_id: transfer_id.clone(),
                        duplicate: true,
                    });
                }
                let balance = self.accounts.get(to).copied().unwrap_or(0);
                let balance =
                    balance
                        .checked_add(*amount)
                        .ok_or_else(|| Rejection::BalanceOverflow {
                            account: to.clone(),
                        })?;
                self.accounts.insert(to.clone(), balance);
                self.credited.insert(transfer_id.clone(), *amount);
                Ok(Outcome::Credited {
                    transfer_id: transfer_id.clone(),
                    duplicate: false,
                })
            }
            Command::CreditAck { transfer_id } => {
                // Idempotent: an acknowledgement may arrive twice (re-sent credits).
                self.outbox.remove(transfer_id);
                Ok(Outcome::CreditAcked {
                    transfer_id: transfer_id.clone(),
                })
            }
            Command::Checkpoint { checkpoint_id } => {
                if *checkpoint_id == self.latest_checkpoint_id && *checkpoint_id > 0 {
                    return Ok(Outcome::CheckpointExists {
                        checkpoint_id: *checkpoint_id,
                    });
                }
                if *checkpoint_id <= self.latest_checkpoint_id {
                    return Err(Rejection::CheckpointNotNewer {
                        requested: *checkpoint_id,
                        latest: self.latest_checkpoint_id,
                    });
                }
                self.latest_checkpoint_id = *checkpoint_id;
                self.latest_checkpoint_position = position;
                Ok(Outcome::CheckpointCreated {
                    checkpoint_id: *checkpoint_id,
                    position,
                })
            }
        }
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
                Command::Checkpoint { checkpoint_id: 5 },
                Outcome::CheckpointCreated {
                    checkpoint_id: 5,
                    position: 11,
                },
            ),
            (
                Command::Checkpoint { checkpoint_id: 5 },
                Outcome::CheckpointExists { checkpoint_id: 5 },
            ),
            (
                Command::Checkpoint { checkpoint_id: 3 },
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
        let credit = Command::Credit {
            transfer_id: "t2".into(),
            from_partition: 1,
            to: remote.clone(),
            amount: 1,
        };
        assert_eq!(
            target.apply(1, &credit),
            Outcome::Credited {
                transfer_id: "t2".into(),
                duplicate: false
            }
        );
        assert_eq!(
            target.apply(2, &credit),
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
}
