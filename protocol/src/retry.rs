//! The one retry policy of Sluice: capped exponential backoff, optionally within a time budget.
//!
//! Every loop that waits before trying again (final backup manifests, a restart's leftovers,
//! learning the store's backup ids, the outbox sender, the gateway waiting for a transfer) takes
//! its delays from a [`Backoff`] made by a [`RetryPolicy`], so the doubling, the cap and the
//! budget are written once. No jitter: the loops that retry against a shared store are one per
//! partition backup and already spread by when their backups started.

use std::time::Duration;

use tokio::time::Instant;

/// How a loop waits between attempts: the first delay is `delay_min`, each next one doubles, up
/// to `delay_max`; with a budget, no delay is handed out once the budget has passed since the
/// backoff started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// How long, from [`RetryPolicy::start`], delays are handed out; `None`: for ever.
    pub budget: Option<Duration>,
}

impl RetryPolicy {
    /// Doubling delays from `delay_min` up to `delay_max`, for ever.
    pub const fn exponential(delay_min: Duration, delay_max: Duration) -> RetryPolicy {
        RetryPolicy {
            delay_min,
            delay_max,
            budget: None,
        }
    }

    /// The same delays, handed out only until `budget` has passed since the start.
    pub const fn within(self, budget: Duration) -> RetryPolicy {
        RetryPolicy {
            budget: Some(budget),
            ..self
        }
    }

    /// A fresh backoff: its clock (tokio's, so paused time applies) starts now.
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: *self,
            next: self.delay_min,
            failures: 0,
            started: Instant::now(),
        }
    }
}

/// The state of one retry loop (see [`RetryPolicy`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    next: Duration,
    failures: u64,
    started: Instant,
}

impl Backoff {
    /// The delay to wait before the next attempt, counting one more failure; `None` once the
    /// budget has passed (the caller stops retrying).
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.policy.budget.is_some_and(|b| self.elapsed() >= b) {
            return None;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.policy.delay_max);
        self.failures += 1;
        Some(delay)
    }

    /// Sleeps the next delay. `false` (at once) when the budget has passed.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }

    /// After a success: the next failure waits `delay_min` again. The budget keeps its start.
    pub fn reset(&mut self) {
        self.next = self.policy.delay_min;
        self.failures = 0;
    }

    /// Delays handed out since the start or the last reset: the number of the attempt that just
    /// failed, once [`Backoff::next_delay`] was called for it.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Time since [`RetryPolicy::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// (policy, delays expected from a fresh backoff).
    #[test]
    fn delays_double_up_to_the_cap() {
        let cases = [
            (
                RetryPolicy::exponential(200 * MS, 1000 * MS),
                vec![200, 400, 800, 1000, 1000, 1000],
            ),
            (
                RetryPolicy::exponential(2 * MS, 100 * MS),
                vec![2, 4, 8, 16, 32, 64, 100, 100],
            ),
            (RetryPolicy::exponential(50 * MS, 50 * MS), vec![50, 50, 50]),
        ];
        for (policy, expected) in cases {
            let mut backoff = policy.start();
            let delays: Vec<u128> = (0..expected.len())
                .map(|_| backoff.next_delay().unwrap().as_millis())
                .collect();
            assert_eq!(delays, expected, "{policy:?}");
            assert_eq!(backoff.failures(), expected.len() as u64);
            backoff.reset();
            assert_eq!(
                backoff.next_delay(),
                Some(policy.delay_min),
                "{policy:?} after reset"
            );
            assert_eq!(backoff.failures(), 1);
        }
    }

    /// A budget ends the delays once it has passed, on tokio's (paused) clock; a reset does not
    /// restart it.
    #[tokio::test(start_paused = true)]
    async fn a_budget_ends_the_retries() {
        let mut backoff = RetryPolicy::exponential(10 * MS, 40 * MS)
            .within(100 * MS)
            .start();
        let mut slept = Vec::new();
        while backoff.wait().await {
            slept.push(backoff.elapsed().as_millis());
            if slept.len() == 2 {
                backoff.reset();
            }
        }
        // Delays 10, 20, reset, 10, 20, 40: the last one starts at 60, within the budget, and
        // ends at 100, where the budget is spent.
        assert_eq!(slept, vec![10, 30, 40, 60, 100]);
        assert_eq!(backoff.next_delay(), None);
    }
}
