//! Fixed-memory latency distribution: log-linear buckets (16 per power of two, ≤ 6.25 %
//! relative error), exact count, sum and max. Memory does not grow with samples.
use serde::Serialize;

const SUB: u32 = 16;
const BUCKETS: usize = 64 * SUB as usize;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < u64::from(SUB) {
        return v as usize;
    }
    let exp = v.ilog2(); // ≥ 4
    let sub = ((v >> (exp - 4)) & (u64::from(SUB) - 1)) as u32;
    ((exp - 3) * SUB + sub) as usize
}

/// Upper bound of a bucket's values.
fn bucket_high(b: usize) -> u64 {
    let b = b as u32;
    if b < SUB {
        return u64::from(b);
    }
    let exp = b / SUB + 3;
    let sub = u64::from(b % SUB);
    ((u64::from(SUB) + sub + 1) << (exp - 4)) - 1
}

/// p50/p90/p99/max summary (ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> u64 {
        self.sum.min(u128::from(u64::MAX)) as u64
    }

    /// Nearest-rank percentile, reported as its bucket's upper bound (capped at the max).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(b).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Distribution {
        Distribution {
            count: self.count,
            mean_ns: if self.count == 0 {
                0
            } else {
                (self.sum / u128::from(self.count)) as u64
            },
            p50_ns: self.percentile(50.0),
            p90_ns: self.percentile(90.0),
            p99_ns: self.percentile(99.0),
            max_ns: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..100_000u64).chain([1 << 40, u64::MAX / 2]) {
            let b = bucket(v);
            assert!(b >= prev);
            prev = b;
            let high = bucket_high(b);
            assert!(high >= v, "{v} above its bucket bound {high}");
            assert!((high - v) as f64 <= v as f64 / 16.0 + 1.0, "{v} -> {high}");
        }
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max_ns, 10_000_000);
        for (got, want) in [
            (s.p50_ns, 5_000_000.0),
            (s.p90_ns, 9_000_000.0),
            (s.p99_ns, 9_900_000.0),
        ] {
            assert!((got as f64 - want).abs() / want < 0.07, "{got} vs {want}");
        }
        assert_eq!(Histogram::default().summary(), Distribution::default());
    }
}
