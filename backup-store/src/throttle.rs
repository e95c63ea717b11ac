//! A token-bucket rate limiter for upload bandwidth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A token-bucket rate limiter in bytes per second, shared by all clones
/// (and so by all uploads that are given one of them).
///
/// The bucket starts empty and holds at most 100 ms worth of tokens, so
/// transferring `n` bytes takes at least about `n / rate` seconds, with
/// only a small burst after an idle period. A request larger than the bucket
/// is granted by going into debt, which later requests pay off.
///
/// A rate of `0` disables throttling.
#[derive(Debug, Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bytes_per_second: u64,
    capacity: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Available tokens; negative while in debt.
    tokens: f64,
    last_refill: Instant,
}

impl Throttle {
    /// A limiter allowing `bytes_per_second` (0 = unlimited).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second as f64;
        Self {
            inner: Arc::new(Inner {
                bytes_per_second,
                capacity: (rate / 10.0).max(1.0),
                state: Mutex::new(State {
                    tokens: 0.0,
                    last_refill: Instant::now(),
                }),
            }),
        }
    }

    /// The configured rate (0 = unlimited).
    pub fn bytes_per_second(&self) -> u64 {
        self.inner.bytes_per_second
    }

    /// Waits until `bytes` may be transferred.
    pub async fn acquire(&self, bytes: u64) {
        let rate = self.inner.bytes_per_second;
        if rate == 0 || bytes == 0 {
            return;
        }
        let wait = {
            let mut state = self
                .inner
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let elapsed = now.duration_since(state.last_refill).as_secs_f64();
            state.tokens = (state.tokens + elapsed * rate as f64).min(self.inner.capacity);
            state.last_refill = now;
            state.tokens -= bytes as f64;
            if state.tokens < 0.0 {
                Duration::from_secs_f64(-state.tokens / rate as f64)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
