//! CPU-bound "Python" threads: the pi-digit spigot (Gibbons' unbounded spigot) on big
//! integers, one spigot step per work unit with an eval-breaker check between units.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use num_bigint::BigInt;
use num_traits::{One, ToPrimitive, Zero};

use crate::gil::{Gil, ThreadCtx};
use crate::truth::ReleaseReason;

/// Digits per run of the spigot before it restarts (keeps a work unit's cost bounded: the
/// integers grow with every digit).
const DIGITS_PER_RUN: u32 = 300;

/// Gibbons' streaming spigot for pi. Each [`PiSpigot::step`] is one small work unit.
pub struct PiSpigot {
    q: BigInt,
    r: BigInt,
    t: BigInt,
    k: BigInt,
    n: BigInt,
    l: BigInt,
}

impl Default for PiSpigot {
    fn default() -> Self {
        PiSpigot {
            q: BigInt::one(),
            r: BigInt::zero(),
            t: BigInt::one(),
            k: BigInt::one(),
            n: BigInt::from(3),
            l: BigInt::from(3),
        }
    }
}

impl PiSpigot {
    /// Advances one step; returns a digit when one is produced.
    pub fn step(&mut self) -> Option<u8> {
        let four = BigInt::from(4);
        if &four * &self.q + &self.r - &self.t < &self.n * &self.t {
            let digit = self.n.to_u8().unwrap_or(0);
            let ten = BigInt::from(10);
            let new_r = &ten * (&self.r - &self.n * &self.t);
            let new_n = (&ten * (BigInt::from(3) * &self.q + &self.r)) / &self.t - &ten * &self.n;
            self.q *= &ten;
            self.r = new_r;
            self.n = new_n;
            Some(digit)
        } else {
            let two = BigInt::from(2);
            let seven = BigInt::from(7);
            let new_r = (&two * &self.q + &self.r) * &self.l;
            let new_n =
                (&self.q * (&seven * &self.k + &two) + &self.r * &self.l) / (&self.t * &self.l);
            self.q *= &self.k;
            self.t *= &self.l;
            self.l += &two;
            self.k += BigInt::one();
            self.r = new_r;
            self.n = new_n;
            None
        }
    }
}

/// Runs a spinner until `stop`: holds the lock, computes, checks in between units.
/// Counts digits in `iterations`.
pub fn run(gil: &dyn Gil, me: &mut ThreadCtx, stop: &AtomicBool, iterations: &AtomicU64) {
    gil.take(me);
    let mut spigot = PiSpigot::default();
    let mut digits = 0u32;
    while !stop.load(Relaxed) {
        if spigot.step().is_some() {
            iterations.fetch_add(1, Relaxed);
            digits += 1;
            if digits == DIGITS_PER_RUN {
                spigot = PiSpigot::default();
                digits = 0;
            }
        }
        gil.checkpoint(me);
    }
    gil.release(me, ReleaseReason::Exit);
}

#[cfg(test)]
mod tests {
    use super::PiSpigot;

    #[test]
    fn spigot_produces_pi() {
        let mut s = PiSpigot::default();
        let digits: Vec<u8> = std::iter::from_fn(|| Some(s.step()))
            .flatten()
            .take(15)
            .collect();
        assert_eq!(digits, vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]);
    }
}
