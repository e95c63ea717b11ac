//! Latency samples and their percentiles, and number formatting.

use std::time::Duration;

/// Latency samples, each weighted (a `/v1/commands` request answers all its commands at once:
/// each command of it has the request's latency).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// (latency in microseconds, weight)
    values: Vec<(u64, u64)>,
    sorted: bool,
}

impl Samples {
    pub fn new() -> Samples {
        Samples::default()
    }

    pub fn record(&mut self, latency: Duration, weight: u64) {
        if weight == 0 {
            return;
        }
        self.values.push((latency.as_micros() as u64, weight));
        self.sorted = false;
    }

    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
        self.sorted = false;
    }

    pub fn clear(&mut self) {
        self.values.clear();
        self.sorted = true;
    }

    /// The number of recorded samples (not their weight).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn total_weight(&self) -> u64 {
        self.values.iter().map(|(_, w)| w).sum()
    }

    /// The weighted `q`-quantile (0 < q <= 1): the smallest latency such that at least `q` of
    /// the total weight is at or below it. `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.values.is_empty() {
            return None;
        }
        if !self.sorted {
            self.values.sort_unstable();
            self.sorted = true;
        }
        let total = self.total_weight() as f64;
        let wanted = (q.clamp(0.0, 1.0) * total).ceil().max(1.0);
        let mut cumulative = 0u64;
        for (latency, weight) in &self.values {
            cumulative += weight;
            if cumulative as f64 >= wanted {
                return Some(Duration::from_micros(*latency));
            }
        }
        self.values.last().map(|(l, _)| Duration::from_micros(*l))
    }

    pub fn max(&self) -> Option<Duration> {
        self.values
            .iter()
            .map(|(l, _)| *l)
            .max()
            .map(Duration::from_micros)
    }

    pub fn mean(&self) -> Option<Duration> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let sum: u128 = self
            .values
            .iter()
            .map(|(l, w)| u128::from(*l) * u128::from(*w))
            .sum();
        Some(Duration::from_micros((sum / u128::from(total)) as u64))
    }
}

/// Milliseconds with a precision fitting the size (`0.42 ms`, `12.3 ms`, `1530 ms`).
pub fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub fn opt_ms(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "n/a".to_string(), ms)
}

/// Seconds, `1.23 s`.
pub fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// A byte count in GiB, MiB or, below 1 MiB (what a deduplicated backup uploads), KiB.
pub fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else if mib >= 1.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// A rate in MB/s (10^6 bytes per second).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_quantiles() {
        let mut samples = Samples::new();
        for i in 1..=100 {
            samples.record(Duration::from_millis(i), 1);
        }
        assert_eq!(samples.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(samples.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(samples.quantile(1.0), Some(Duration::from_millis(100)));
        // One heavy slow sample dominates the tail.
        let mut samples = Samples::new();
        samples.record(Duration::from_millis(1), 90);
        samples.record(Duration::from_millis(50), 10);
        assert_eq!(samples.quantile(0.9), Some(Duration::from_millis(1)));
        assert_eq!(samples.quantile(0.91), Some(Duration::from_millis(50)));
        assert_eq!(samples.total_weight(), 100);
        assert!(Samples::new().quantile(0.5).is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.50 GiB");
        assert_eq!(ms(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(ms(Duration::from_millis(250)), "250 ms");
    }
}
