//! Fixed-memory latency distribution. Up to [`EXACT`] samples are kept as they are, so small
//! sets give exact percentiles; past that, samples are counted in log-linear buckets (64 per
//! power of two, HDR-style), and a percentile is its bucket's midpoint, clamped to the samples'
//! range: within 0.8 % of the true sample. Count, sum, min and max are always exact. Memory
//! does not grow with samples (≤ 30 KiB per distribution, 2 KiB while it holds few).
use serde::Serialize;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `SUB` have a bucket each; every power of two from there up has `SUB`.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB as usize;
/// Samples kept exactly before the buckets take over.
pub const EXACT: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// The samples while there are at most `EXACT` of them; empty once bucketed.
    exact: Vec<u64>,
    /// Per bucket counts, allocated once there are more than `EXACT` samples.
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = v.ilog2(); // ≥ SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (u64::from(exp - SUB_BITS + 1) * SUB + sub) as usize
}

/// The values of bucket `b`: `[low, low + width)`.
fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < SUB {
        return (b, 1);
    }
    let exp = (b / SUB) as u32 + SUB_BITS - 1;
    let sub = b % SUB;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB + sub) << (exp - SUB_BITS), width)
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
        if self.count == 0 {
            self.min = v;
        }
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.counts.is_empty() {
            if self.exact.len() < EXACT {
                self.exact.push(v);
                return;
            }
            // Too many to keep: into buckets from here on.
            self.counts = vec![0; BUCKETS];
            for x in std::mem::take(&mut self.exact) {
                self.counts[bucket(x)] += 1;
            }
        }
        self.counts[bucket(v)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> u64 {
        self.sum.min(u128::from(u64::MAX)) as u64
    }

    /// Nearest-rank percentile: the sample itself while samples are kept exactly, else its
    /// bucket's midpoint (within 0.8 %), never outside the samples' range.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        if self.counts.is_empty() {
            let mut sorted = self.exact.clone();
            sorted.sort_unstable();
            return sorted[(rank as usize).min(sorted.len()) - 1];
        }
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_range(b);
                return (low + width / 2).clamp(self.min, self.max);
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
    fn buckets_are_monotonic_and_narrow() {
        let mut prev = 0;
        for v in (0..200_000u64).chain([1 << 40, (1 << 40) + 12_345, u64::MAX / 2, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= prev && b < BUCKETS, "{v}: bucket {b}");
            prev = b;
            let (low, width) = bucket_range(b);
            assert!(
                low <= v && v - low < width,
                "{v} outside its bucket {low}+{width}"
            );
            assert!(
                width == 1 || width <= low / SUB,
                "{v}: bucket {low}+{width} too wide"
            );
        }
    }

    #[test]
    fn percentiles_are_exact_for_few_samples_and_within_a_percent_for_many() {
        // Two different sets whose p90 fell in one bucket before (both showed "5242.9µs").
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for i in 0..100u64 {
            a.record(4_200_000 + i * 10_000);
            b.record(4_300_000 + i * 9_000);
        }
        assert_eq!(a.percentile(90.0), 4_200_000 + 89 * 10_000, "exact");
        assert_eq!(b.percentile(90.0), 4_300_000 + 89 * 9_000, "exact");
        // Many samples: within 1 % of the true nearest-rank value.
        let mut h = Histogram::default();
        let mut values = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = 1_000 + state % 50_000_000;
            values.push(v);
            h.record(v);
        }
        values.sort_unstable();
        for p in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9] {
            let want = values[(p / 100.0 * values.len() as f64).ceil() as usize - 1] as f64;
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.01, "p{p}: {got} vs {want}");
        }
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        assert_eq!(s.max_ns, *values.last().unwrap());
        assert_eq!(Histogram::default().summary(), Distribution::default());
    }
}
