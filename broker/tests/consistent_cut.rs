//! A seeded simulation of the processor and the routing layer: random interleavings of deposits,
//! transfers (same- and cross-partition), checkpoints taken by a "gateway" that reaches the
//! partitions one by one, and inter-partition messages that are delayed, reordered, lost and
//! re-sent. For every checkpoint every partition created, the cut (each partition's state at its
//! checkpoint record) must be consistent:
//! - every credit in a target's cut has its debit in the source's cut;
//! - Σ balances + Σ outbox entries whose credit is not in the target's cut = Σ deposits in the cut;
//! - restoring the cut and draining the outboxes (re-send, at-most-once credits, acks) ends with
//!   Σ balances = Σ deposits in the cut and empty outboxes: money neither created nor lost.
//!
//! Clients misbehave too: transfer ids are reused (by the same source and by other sources), and
//! partitions are filled close to 2^64-1 so that their targets refuse credits (refunded at the
//! source). Conservation must hold through all of it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_broker::record::{answer_for_credit, delivery_records, Command, Delivery, Outcome};
use sluice_broker::routing::partition_for_account;
use sluice_broker::state::{CreditRecord, LedgerState};

struct Partition {
    state: LedgerState,
    /// Deposits applied so far (the money that entered through this partition).
    deposited: u128,
    /// State and deposits at each checkpoint record this partition created.
    cuts: BTreeMap<u64, (LedgerState, u128)>,
}

impl Partition {
    fn apply(&mut self, command: &Command) -> Outcome {
        let position = self.state.processed_position + 1;
        let outcome = self.state.apply(position, command);
        match &outcome {
            Outcome::Balance { .. } if matches!(command, Command::Deposit { .. }) => {
                if let Command::Deposit { amount, .. } = command {
                    self.deposited += u128::from(*amount);
                }
            }
            Outcome::CheckpointCreated { checkpoint_id, .. } => {
                self.cuts
                    .insert(*checkpoint_id, (self.state.clone(), self.deposited));
            }
            _ => {}
        }
        outcome
    }

    /// Receives inter-partition messages: the carried checkpoint first where this one is behind.
    fn deliver(&mut self, delivery: Delivery) -> Vec<Outcome> {
        let mut latest = self.state.latest_checkpoint_id;
        let mut answers = Vec::new();
        for (command, answers_message) in delivery_records(&mut latest, vec![delivery]) {
            let outcome = self.apply(&command);
            if answers_message {
                answers.push(outcome);
            }
        }
        answers
    }
}

/// A message on the wire: to `target`, from `source`.
struct Message {
    target: u32,
    delivery: Delivery,
}

fn accounts(partitions_count: u32) -> Vec<String> {
    (0..6 * partitions_count)
        .map(|i| format!("acct-{i}"))
        .collect()
}

/// Sends every outbox entry of `source` (as the outbox sender does), carrying the latest
/// checkpoint id read at the same moment.
fn send_outbox(partitions: &BTreeMap<u32, Partition>, source: u32, wire: &mut Vec<Message>) {
    let state = &partitions[&source].state;
    for (target, credit) in state.outbox_credits(usize::MAX) {
        wire.push(Message {
            target,
            delivery: Delivery {
                command: credit,
                checkpoint_id: state.latest_checkpoint_id,
            },
        });
    }
}

/// What the runs saw, so that a test can show the simulation exercised what it claims.
#[derive(Default)]
struct Seen {
    cuts_checked: usize,
    refunds: usize,
}

/// Delivers one message; a credit is answered with an acknowledgement or a refusal.
fn deliver(
    partitions: &mut BTreeMap<u32, Partition>,
    message: Message,
    wire: &mut Vec<Message>,
    seen: &mut Seen,
) {
    let credit = message.delivery.command.clone();
    let source = match &credit {
        Command::Credit { from_partition, .. } => Some(*from_partition),
        _ => None,
    };
    let target = partitions.get_mut(&message.target).unwrap();
    let outcomes = target.deliver(message.delivery);
    for outcome in outcomes {
        if matches!(outcome, Outcome::TransferRefunded { .. }) {
            seen.refunds += 1;
        }
        if let (Some(answer), Some(source)) = (answer_for_credit(&credit, outcome), source) {
            wire.push(Message {
                target: source,
                delivery: Delivery {
                    command: answer,
                    checkpoint_id: target.state.latest_checkpoint_id,
                },
            });
        }
    }
}

fn check_cut(checkpoint_id: u64, cut: &BTreeMap<u32, (LedgerState, u128)>, seen: &mut Seen) {
    let deposited: u128 = cut.values().map(|(_, d)| *d).sum();
    let balances: u128 = cut.values().map(|(s, _)| s.summary().balance_total).sum();
    let mut in_flight = 0u128;
    for (source, (state, _)) in cut {
        for (position, entry) in &state.outbox {
            let guard = cut[&entry.to_partition].0.credited.get(source);
            assert!(
                guard.is_none_or(|g| *position >= g.finished_below),
                "checkpoint {checkpoint_id}: the target forgot credit {source}/{position} that the source may still send"
            );
            let applied = guard.is_some_and(|g| {
                matches!(
                    g.positions.get(position),
                    Some(CreditRecord::Applied { .. })
                )
            });
            if !applied {
                in_flight += u128::from(entry.amount);
            }
        }
        // Every credit in this cut has its debit in its source's cut: before the source's
        // checkpoint record.
        for (from, guard) in &state.credited {
            for (position, _) in guard
                .positions
                .iter()
                .filter(|(_, r)| matches!(r, CreditRecord::Applied { .. }))
            {
                assert!(
                    *position < cut[from].0.processed_position,
                    "checkpoint {checkpoint_id}: partition {source} holds credit {from}/{position} whose debit is not in the cut"
                );
            }
        }
    }
    assert_eq!(
        balances + in_flight,
        deposited,
        "checkpoint {checkpoint_id}: the cut does not conserve money"
    );

    // Restore the cut and let the outboxes drain: the total comes out exact.
    let mut restored: BTreeMap<u32, Partition> = cut
        .iter()
        .map(|(id, (state, deposited))| {
            (
                *id,
                Partition {
                    state: state.clone(),
                    deposited: *deposited,
                    cuts: BTreeMap::new(),
                },
            )
        })
        .collect();
    let mut wire = Vec::new();
    let ids: Vec<u32> = restored.keys().copied().collect();
    for source in &ids {
        send_outbox(&restored, *source, &mut wire);
    }
    while let Some(message) = wire.pop() {
        deliver(&mut restored, message, &mut wire, seen);
    }
    let balances: u128 = restored
        .values()
        .map(|p| p.state.summary().balance_total)
        .sum();
    let outbox: usize = restored.values().map(|p| p.state.outbox.len()).sum();
    assert_eq!(
        outbox, 0,
        "checkpoint {checkpoint_id}: outboxes did not drain"
    );
    assert_eq!(
        balances, deposited,
        "checkpoint {checkpoint_id}: restored cluster does not hold the deposited money"
    );
}

fn simulate(seed: u64, partitions_count: u32, steps: usize) -> Seen {
    let mut seen = Seen::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let accounts = accounts(partitions_count);
    let mut partitions: BTreeMap<u32, Partition> = (1..=partitions_count)
        .map(|id| {
            (
                id,
                Partition {
                    state: LedgerState::new(id, partitions_count),
                    deposited: 0,
                    cuts: BTreeMap::new(),
                },
            )
        })
        .collect();
    let mut wire: Vec<Message> = Vec::new();
    // Checkpoint commands the gateway still has to bring to partitions: (partition, id).
    let mut gateway: Vec<(u32, u64)> = Vec::new();
    let mut next_checkpoint = 1u64;
    let mut transfers = 0u64;
    for _ in 0..steps {
        match rng.gen_range(0..100) {
            0..=19 => {
                let account = &accounts[rng.gen_range(0..accounts.len())];
                let partition = partition_for_account(account, partitions_count);
                // Now and then fill the partition close to 2^64-1: credits to it get refused.
                let held = partitions[&partition].state.held_total;
                let amount = if rng.gen_range(0..40) == 0 && held < u64::MAX - 1000 {
                    u64::MAX - held - rng.gen_range(0..200)
                } else {
                    rng.gen_range(1..1000)
                };
                partitions
                    .get_mut(&partition)
                    .unwrap()
                    .apply(&Command::Deposit {
                        account: account.clone(),
                        amount,
                    });
            }
            20..=44 => {
                let from = &accounts[rng.gen_range(0..accounts.len())];
                let to = &accounts[rng.gen_range(0..accounts.len())];
                if from != to {
                    transfers += 1;
                    // A third of the requests reuse an earlier id (of any source partition).
                    let id = if rng.gen_range(0..3) == 0 {
                        rng.gen_range(1..=transfers)
                    } else {
                        transfers
                    };
                    let partition = partition_for_account(from, partitions_count);
                    partitions
                        .get_mut(&partition)
                        .unwrap()
                        .apply(&Command::Transfer {
                            transfer_id: format!("t{id}"),
                            from: from.clone(),
                            to: to.clone(),
                            amount: rng.gen_range(1..300),
                        });
                }
            }
            45..=54 => {
                let source = rng.gen_range(1..=partitions_count);
                send_outbox(&partitions, source, &mut wire);
            }
            55..=79 if !wire.is_empty() => {
                let message = wire.swap_remove(rng.gen_range(0..wire.len()));
                deliver(&mut partitions, message, &mut wire, &mut seen);
            }
            80..=84 if !wire.is_empty() => {
                // Lost on the wire: the source re-sends from its outbox later.
                wire.swap_remove(rng.gen_range(0..wire.len()));
            }
            85..=88 => {
                for partition in 1..=partitions_count {
                    gateway.push((partition, next_checkpoint));
                }
                next_checkpoint += 1;
            }
            _ if !gateway.is_empty() => {
                let (partition, checkpoint_id) =
                    gateway.swap_remove(rng.gen_range(0..gateway.len()));
                partitions
                    .get_mut(&partition)
                    .unwrap()
                    .apply(&Command::checkpoint(checkpoint_id));
            }
            _ => {}
        }
    }
    for checkpoint_id in 1..next_checkpoint {
        let cut: Option<BTreeMap<u32, (LedgerState, u128)>> = partitions
            .iter()
            .map(|(id, p)| p.cuts.get(&checkpoint_id).map(|c| (*id, c.clone())))
            .collect();
        if let Some(cut) = cut {
            check_cut(checkpoint_id, &cut, &mut seen);
            seen.cuts_checked += 1;
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_checkpoint_is_a_consistent_cut(seed in any::<u64>(), partitions_count in 2u32..6, steps in 50usize..1500) {
        simulate(seed, partitions_count, steps);
    }
}

/// The simulation checks something: across seeds, many complete cuts with transfers in flight,
/// and refused credits refunded.
#[test]
fn the_simulation_produces_complete_cuts() {
    let runs: Vec<Seen> = (0..20).map(|seed| simulate(seed, 3, 2000)).collect();
    let checked: usize = runs.iter().map(|s| s.cuts_checked).sum();
    let refunds: usize = runs.iter().map(|s| s.refunds).sum();
    assert!(checked >= 20, "only {checked} complete cuts were checked");
    assert!(
        refunds >= 20,
        "only {refunds} refused credits were refunded"
    );
}

/// Without the propagation rule the cut breaks: a credit lands in the target's cut while its
/// debit is after the source's checkpoint. This is the scenario the rule exists for.
#[test]
fn a_credit_sent_after_the_source_checkpoint_forces_the_target_checkpoint_first() {
    let partitions_count = 2;
    let accounts = accounts(partitions_count);
    let on = |p: u32| {
        accounts
            .iter()
            .find(|a| partition_for_account(a, partitions_count) == p)
            .unwrap()
            .clone()
    };
    let (alice, bob) = (on(1), on(2));
    let mut source = Partition {
        state: LedgerState::new(1, 2),
        deposited: 0,
        cuts: BTreeMap::new(),
    };
    let mut target = Partition {
        state: LedgerState::new(2, 2),
        deposited: 0,
        cuts: BTreeMap::new(),
    };
    source.apply(&Command::Deposit {
        account: alice.clone(),
        amount: 100,
    });
    source.apply(&Command::checkpoint(7));
    source.apply(&Command::Transfer {
        transfer_id: "t".into(),
        from: alice,
        to: bob.clone(),
        amount: 40,
    });
    // The credit reaches the target before the gateway's checkpoint 7 does.
    let credits = source.state.outbox_credits(10);
    let [(2, credit)] = credits.as_slice() else {
        panic!("one credit to partition 2 expected: {credits:?}")
    };
    let credit = credit.clone();
    let outcomes = target.deliver(Delivery {
        command: credit,
        checkpoint_id: source.state.latest_checkpoint_id,
    });
    assert!(matches!(
        outcomes.as_slice(),
        [Outcome::Credited {
            duplicate: false,
            ..
        }]
    ));
    // The target created checkpoint 7 before applying the credit: its cut has no credit.
    let (cut, _) = &target.cuts[&7];
    assert!(cut.credited.is_empty());
    assert_eq!(cut.accounts.get(&bob), None);
    assert!(cut.latest_checkpoint_position < target.state.processed_position);
    assert_eq!(target.state.accounts[&bob], 40);
    // The gateway's checkpoint 7 arriving later is a no-op that counts as success.
    assert_eq!(
        target.apply(&Command::checkpoint(7)),
        Outcome::CheckpointExists { checkpoint_id: 7 }
    );
}
