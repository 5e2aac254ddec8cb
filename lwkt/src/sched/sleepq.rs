//! Per-CPU sleep queues hashed by wait channel (DragonFly's `slpque`).
//!
//! A CPU keeps its own sleepers; the runtime keeps, per bucket, a mask of
//! the CPUs that may have sleepers there, so a wakeup signals only those
//! CPUs. A CPU sets its bit when it queues a sleeper in a bucket (if it is
//! not already set) and clears it when a wakeup visit finds nobody there.

use std::cell::Cell;
use std::ptr;

use super::td::{tdf, TdPtr, Thread};

/// Buckets per CPU (a power of two, as the seed's `TABLESIZE`).
pub(crate) const NBUCKETS: usize = 1024;

/// Maps a wait channel address to its bucket (Fibonacci hashing).
#[inline]
pub(crate) fn bucket_of(chan: usize) -> usize {
    let h = (chan as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - NBUCKETS.trailing_zeros())) as usize
}

pub(crate) struct SleepQueues {
    heads: Box<[Cell<*mut Thread>]>,
}

impl SleepQueues {
    pub(crate) fn new() -> SleepQueues {
        SleepQueues {
            heads: (0..NBUCKETS).map(|_| Cell::new(ptr::null_mut())).collect(),
        }
    }

    /// Registers `t` on `chan`; returns true when the bucket was empty
    /// (the caller then sets its CPU's bit in the bucket mask).
    pub(crate) fn insert(&self, t: TdPtr, chan: usize) -> bool {
        let td = t.td();
        debug_assert!(!td.has(tdf::TSLEEPQ));
        let b = bucket_of(chan);
        let head = self.heads[b].get();
        td.sq_prev.set(ptr::null_mut());
        td.sq_next.set(head);
        if let Some(h) = TdPtr::from_raw(head) {
            h.td().sq_prev.set(t.as_ptr());
        }
        self.heads[b].set(t.as_ptr());
        td.wchan.set(chan);
        td.set(tdf::TSLEEPQ);
        head.is_null()
    }

    /// Unregisters `t` from its channel.
    pub(crate) fn remove(&self, t: TdPtr) {
        let td = t.td();
        debug_assert!(td.has(tdf::TSLEEPQ));
        let b = bucket_of(td.wchan.get());
        let (next, prev) = (td.sq_next.get(), td.sq_prev.get());
        match TdPtr::from_raw(prev) {
            Some(p) => p.td().sq_next.set(next),
            None => self.heads[b].set(next),
        }
        if let Some(n) = TdPtr::from_raw(next) {
            n.td().sq_prev.set(prev);
        }
        td.sq_next.set(ptr::null_mut());
        td.sq_prev.set(ptr::null_mut());
        td.clear(tdf::TSLEEPQ);
    }

    /// Removes the threads registered on `chan` (at most one when `one`),
    /// passing each to `f`. Returns whether the bucket is now empty.
    pub(crate) fn take(&self, chan: usize, one: bool, mut f: impl FnMut(TdPtr)) -> bool {
        let b = bucket_of(chan);
        let mut cur = self.heads[b].get();
        while let Some(t) = TdPtr::from_raw(cur) {
            cur = t.td().sq_next.get();
            if t.td().wchan.get() == chan {
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
