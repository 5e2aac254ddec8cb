//! The runtime's sleep-bucket masks: per bucket, which CPUs may have
//! sleepers there (see `sleepq.rs` for the interlock they take part in).
//! No dependency but the sync shim, so the loom model `tests/loom_sleep.rs`
//! checks this very code.

// `pub` so the loom models can reach it through `lwkt::__loom`; the crate
// itself uses it as crate-private.
#![allow(unreachable_pub)]

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, Ordering};

/// Buckets (a power of two, as the seed's `TABLESIZE`).
pub const NBUCKETS: usize = 1024;
/// Mask words per bucket: enough for `MAX_CPUS` (256) CPUs.
const MASK_WORDS: usize = 4;

/// Maps a wait channel address to its bucket (Fibonacci hashing).
#[inline]
pub fn bucket_of(chan: usize) -> usize {
    let h = (chan as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - NBUCKETS.trailing_zeros())) as usize
}

/// Per bucket, the CPUs that may have sleepers there. Each bucket's words
/// have a cache line of their own: CPUs sleeping on different channels do
/// not bounce each other's lines.
pub struct SleepMasks {
    buckets: Box<[CachePadded<[AtomicU64; MASK_WORDS]>]>,
    ncpus: usize,
}

impl SleepMasks {
    /// Empty masks for a runtime of `ncpus` CPUs (at most 256).
    pub fn new(ncpus: usize) -> SleepMasks {
        assert!(ncpus <= MASK_WORDS * 64);
        SleepMasks {
            buckets: (0..NBUCKETS)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            ncpus,
        }
    }

    /// Publishes `cpu` in `bucket` (its own bit: only `cpu` clears it, so a
    /// set bit it reads stays set). SeqCst: the sleeper's half of the
    /// interlock.
    #[inline]
    pub fn set(&self, bucket: usize, cpu: usize) {
        let w = &self.buckets[bucket][cpu / 64];
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) == 0 {
            w.fetch_or(1 << (cpu % 64), Ordering::SeqCst);
        }
    }

    /// Withdraws `cpu` from `bucket` (called by `cpu` itself).
    #[inline]
    pub fn clear(&self, bucket: usize, cpu: usize) {
        let w = &self.buckets[bucket][cpu / 64];
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) != 0 {
            w.fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
        }
    }

    /// Whether `cpu` may have sleepers in `bucket`.
    #[inline]
    pub fn has(&self, bucket: usize, cpu: usize) -> bool {
        self.buckets[bucket][cpu / 64].load(Ordering::SeqCst) & (1 << (cpu % 64)) != 0
    }

    /// Calls `f` for every CPU that may have sleepers in `bucket`.
    #[inline]
    pub fn for_each(&self, bucket: usize, mut f: impl FnMut(usize)) {
        let masks = &self.buckets[bucket];
        if self.ncpus <= 64 {
            // One word holds every CPU's bit (the usual case): no loop
            // over words.
            let mut bits = masks[0].load(Ordering::SeqCst);
            while bits != 0 {
                f(bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
            return;
        }
        let words = self.ncpus.div_ceil(64);
        for (w, word) in masks[..words].iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                f(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// The first CPU after `from`, cyclically and stopping before `stop`,
    /// that may have sleepers in `bucket` (with `stop == from`, every CPU
    /// but `from`). A bit scan over the mask words, not a walk over CPUs.
    pub fn next_after(&self, bucket: usize, from: usize, stop: usize) -> Option<usize> {
        let n = self.ncpus;
        // The cyclic range holds `len` CPUs starting at `a`.
        let len = (stop + n - from - 1) % n;
        let a = (from + 1) % n;
        let first_leg = (a + len).min(n);
        self.first_in(bucket, a, first_leg)
            .or_else(|| self.first_in(bucket, 0, (a + len).saturating_sub(n)))
    }

    /// The first CPU that may have sleepers in `bucket`.
    pub fn first(&self, bucket: usize) -> Option<usize> {
        self.first_in(bucket, 0, self.ncpus)
    }

    /// The first CPU in `lo..hi` whose bit is set in `bucket`.
    fn first_in(&self, bucket: usize, lo: usize, hi: usize) -> Option<usize> {
        let mut c = lo;
        while c < hi {
            let w = c / 64;
            let bits = self.buckets[bucket][w].load(Ordering::SeqCst) >> (c % 64);
            if bits != 0 {
                let hit = c + bits.trailing_zeros() as usize;
                return (hit < hi).then_some(hit);
            }
            c = (w + 1) * 64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::atomic::Ordering;

    fn brute(m: &SleepMasks, b: usize, from: usize, stop: usize) -> Option<usize> {
        let n = m.ncpus;
        let mut c = (from + 1) % n;
        while c != stop {
            if m.has(b, c) {
                return Some(c);
            }
            c = (c + 1) % n;
        }
        None
    }

    #[test]
    fn next_after_matches_a_linear_scan() {
        for n in [1usize, 2, 3, 63, 64, 65, 130, 200, 256] {
            let m = SleepMasks::new(n);
            let mut seed = 0x1234_5678_9abc_def1u64 ^ n as u64;
            for _ in 0..200 {
                for w in m.buckets[7].iter() {
                    w.store(0, Ordering::Relaxed);
                }
                for _ in 0..(seed % 5) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    m.set(7, (seed % n as u64) as usize);
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let from = (seed % n as u64) as usize;
                let stop = ((seed >> 20) % n as u64) as usize;
                for stop in [stop, from] {
                    assert_eq!(
                        m.next_after(7, from, stop),
                        brute(&m, 7, from, stop),
                        "n={n} from={from} stop={stop}"
                    );
                }
            }
        }
    }
}
