//! Sleep queues hashed by wait channel (DragonFly's `slpque`).
//!
//! Each CPU keeps its own sleepers ([`SleepQueues`], owner-only). The
//! runtime keeps, per bucket, a mask of the CPUs that may have sleepers
//! there ([`SleepMasks`], shared), so a wakeup signals only those CPUs. A
//! CPU sets its bit when it queues a sleeper in a bucket (if it is not
//! already set) and clears it only when a wakeup visit finds nobody there:
//! a stale bit costs one wasted message, while clearing and setting it on
//! every sleep would bounce the mask's line between CPUs.
//!
//! Interlock (no lost wakeup): a sleeper registers (queues itself and sets
//! its bit with a SeqCst read-modify-write, or finds it already set by its
//! own CPU) before it re-checks its condition; a waker changes the
//! condition, issues a SeqCst fence (or a SeqCst RMW), then reads the
//! mask. In the SeqCst order one of them sees the other: either the
//! sleeper sees the new condition, or the waker sees the bit and sends a
//! wakeup that finds the registration. Checked by `tests/loom_sleep.rs`.

use std::cell::Cell;
use std::ptr;

use crossbeam_utils::CachePadded;

use super::td::{tdf, TdPtr, Thread};
use crate::sync::atomic::{AtomicU64, Ordering};

/// Buckets (a power of two, as the seed's `TABLESIZE`).
pub(crate) const NBUCKETS: usize = 1024;
/// Mask words per bucket: enough for `MAX_CPUS` (256) CPUs.
const MASK_WORDS: usize = 4;

/// Maps a wait channel address to its bucket (Fibonacci hashing).
#[inline]
pub(crate) fn bucket_of(chan: usize) -> usize {
    let h = (chan as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - NBUCKETS.trailing_zeros())) as usize
}

/// Per bucket, the CPUs that may have sleepers there. Each bucket's words
/// have a cache line of their own: CPUs sleeping on different channels do
/// not bounce each other's lines.
pub(crate) struct SleepMasks {
    buckets: Box<[CachePadded<[AtomicU64; MASK_WORDS]>]>,
    ncpus: usize,
}

impl SleepMasks {
    pub(crate) fn new(ncpus: usize) -> SleepMasks {
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
    pub(crate) fn set(&self, bucket: usize, cpu: usize) {
        let w = &self.buckets[bucket][cpu / 64];
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) == 0 {
            w.fetch_or(1 << (cpu % 64), Ordering::SeqCst);
        }
    }

    /// Withdraws `cpu` from `bucket` (called by `cpu` itself).
    #[inline]
    pub(crate) fn clear(&self, bucket: usize, cpu: usize) {
        let w = &self.buckets[bucket][cpu / 64];
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) != 0 {
            w.fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
        }
    }

    /// Whether `cpu` may have sleepers in `bucket`.
    #[inline]
    pub(crate) fn has(&self, bucket: usize, cpu: usize) -> bool {
        self.buckets[bucket][cpu / 64].load(Ordering::SeqCst) & (1 << (cpu % 64)) != 0
    }

    /// Calls `f` for every CPU that may have sleepers in `bucket`.
    #[inline]
    pub(crate) fn for_each(&self, bucket: usize, mut f: impl FnMut(usize)) {
        let words = self.ncpus.div_ceil(64);
        for (w, word) in self.buckets[bucket][..words].iter().enumerate() {
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
    pub(crate) fn next_after(&self, bucket: usize, from: usize, stop: usize) -> Option<usize> {
        let n = self.ncpus;
        // The cyclic range holds `len` CPUs starting at `a`.
        let len = (stop + n - from - 1) % n;
        let a = (from + 1) % n;
        let first_leg = (a + len).min(n);
        self.first_in(bucket, a, first_leg)
            .or_else(|| self.first_in(bucket, 0, (a + len).saturating_sub(n)))
    }

    /// The first CPU that may have sleepers in `bucket`.
    pub(crate) fn first(&self, bucket: usize) -> Option<usize> {
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

/// One CPU's sleep queues. Owner-only.
pub(crate) struct SleepQueues {
    heads: Box<[Cell<*mut Thread>]>,
}

/// The thread behind a pointer found in (or being linked into) the queues.
#[inline]
fn td<'a>(t: TdPtr) -> &'a Thread {
    // SAFETY: the queues hold only threads owned by this CPU, which leave
    // them before being freed; callers pass threads they are linking in
    // or found linked.
    unsafe { t.td() }
}

impl SleepQueues {
    pub(crate) fn new() -> SleepQueues {
        SleepQueues {
            heads: (0..NBUCKETS).map(|_| Cell::new(ptr::null_mut())).collect(),
        }
    }

    /// Registers `t` on `chan`; returns true when the bucket was empty
    /// (the caller then publishes its CPU in the bucket mask).
    pub(crate) fn insert(&self, t: TdPtr, chan: usize) -> bool {
        let d = td(t);
        debug_assert!(!d.has(tdf::TSLEEPQ));
        let b = bucket_of(chan);
        let head = self.heads[b].get();
        d.sq_prev.set(ptr::null_mut());
        d.sq_next.set(head);
        if let Some(h) = TdPtr::from_raw(head) {
            td(h).sq_prev.set(t.as_ptr());
        }
        self.heads[b].set(t.as_ptr());
        d.wchan.set(chan);
        d.set(tdf::TSLEEPQ);
        head.is_null()
    }

    /// Unregisters `t` from its channel.
    pub(crate) fn remove(&self, t: TdPtr) {
        let d = td(t);
        debug_assert!(d.has(tdf::TSLEEPQ));
        let b = bucket_of(d.wchan.get());
        let (next, prev) = (d.sq_next.get(), d.sq_prev.get());
        match TdPtr::from_raw(prev) {
            Some(p) => td(p).sq_next.set(next),
            None => self.heads[b].set(next),
        }
        if let Some(n) = TdPtr::from_raw(next) {
            td(n).sq_prev.set(prev);
        }
        d.sq_next.set(ptr::null_mut());
        d.sq_prev.set(ptr::null_mut());
        d.clear(tdf::TSLEEPQ);
    }

    /// Removes the threads registered on `chan` (at most one when `one`),
    /// passing each to `f`. Returns whether the bucket is now empty.
    pub(crate) fn take(&self, chan: usize, one: bool, mut f: impl FnMut(TdPtr)) -> bool {
        let b = bucket_of(chan);
        let mut cur = self.heads[b].get();
        while let Some(t) = TdPtr::from_raw(cur) {
            cur = td(t).sq_next.get();
            if td(t).wchan.get() == chan {
                self.remove(t);
                f(t);
                if one {
                    break;
                }
            }
        }
        self.heads[b].get().is_null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
