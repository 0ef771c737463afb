//! `Stats`: what the collector did, and a histogram of its pauses.

use std::time::Duration;

/// Sub-buckets per power of two: a reported percentile is within 1/8 of the true pause.
const SUB: usize = 8;
/// Powers of two covered: pauses up to 2^40 ns (18 minutes); longer ones land in the last.
const POWERS: usize = 41;

/// A histogram of pause lengths: log-linear buckets, fixed size, exact count, sum and max.
#[derive(Clone)]
pub(crate) struct Pauses {
    buckets: [u64; POWERS * SUB],
    count: u64,
    total_ns: u128,
    max_ns: u64,
}

impl Pauses {
    pub(crate) const fn new() -> Pauses {
        Pauses { buckets: [0; POWERS * SUB], count: 0, total_ns: 0, max_ns: 0 }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let power = 63 - ns.leading_zeros() as usize; // 2^power <= ns
        let sub = ((ns >> (power - 3)) & (SUB as u64 - 1)) as usize;
        ((power - 2) * SUB + sub).min(POWERS * SUB - 1)
    }

    /// The largest pause that falls in bucket `b`.
    fn bucket_top(b: usize) -> u64 {
        if b < SUB {
            return b as u64;
        }
        let power = b / SUB + 2;
        let sub = (b % SUB) as u64;
        ((SUB as u64 + sub + 1) << (power - 3)) - 1
    }

    pub(crate) fn record(&mut self, pause: Duration) {
        let ns = pause.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[Self::bucket(ns)] += 1;
        self.count += 1;
        self.total_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The pause that `q` (0..=1) of all pauses are no longer than, rounded up to its bucket.
    fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(Self::bucket_top(b).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    pub(crate) fn summary(&self) -> PauseStats {
        PauseStats {
            count: self.count,
            total: Duration::from_nanos(self.total_ns.min(u64::MAX as u128) as u64),
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: Duration::from_nanos(self.max_ns),
        }
    }
}

/// Pause times: every stretch of collector work that the program waited for (a whole
/// collection, or one slice of an incremental one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PauseStats {
    pub count: u64,
    pub total: Duration,
    /// Median pause (rounded up by at most 1/8).
    pub p50: Duration,
    /// 99th-percentile pause (rounded up by at most 1/8).
    pub p99: Duration,
    /// Longest pause (exact).
    pub max: Duration,
}

/// The collector's figures for the calling thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Completed collections (full or incremental).
    pub collections: u64,
    /// Objects allocated and not yet swept (live ones, and garbage the sweep has not reached).
    pub objects: usize,
    /// Their bytes, headers included.
    pub bytes: usize,
    /// Objects found reachable by the last collection.
    pub live_objects: usize,
    /// Their bytes, headers included.
    pub live_bytes: usize,
    /// Memory the heap holds from mallard: pages, spare pages and large objects.
    pub heap_bytes: usize,
    /// Whether an incremental collection is marking right now.
    pub marking: bool,
    pub pauses: PauseStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for ns in (0..if cfg!(miri) { 2_000 } else { 100_000u64 }).chain([1 << 20, (1 << 30) + 12345, u64::MAX / 2]) {
            let b = Pauses::bucket(ns);
            assert!(b >= last || ns > 100_000);
            last = b;
            let top = Pauses::bucket_top(b);
            assert!(top >= ns || b == POWERS * SUB - 1, "{ns} in bucket {b} with top {top}");
            assert!(top <= ns + ns / 8, "{ns}: top {top} too loose");
        }
    }

    #[test]
    fn quantiles() {
        let mut p = Pauses::new();
        for i in 1..=100u64 {
            p.record(Duration::from_micros(i));
        }
        let s = p.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_micros(100));
        let p50 = s.p50.as_nanos() as f64;
        assert!((50_000.0..=50_000.0 * 1.125).contains(&p50), "{s:?}");
        let p99 = s.p99.as_nanos() as f64;
        assert!((99_000.0..=100_000.0).contains(&p99), "{s:?}");
        assert_eq!(s.total, Duration::from_micros(5050));
    }
}
