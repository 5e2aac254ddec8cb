//! Sleep queues hashed by wait channel (DragonFly's `slpque`).
//!
//! Each CPU keeps its own sleepers ([`SleepQueues`], owner-only). The
//! runtime keeps, per bucket, a mask of the CPUs that may have sleepers
//! there ([`SleepMasks`], shared), so a wakeup signals only those CPUs. A
//! CPU sets its bit when it queues a sleeper in a bucket (if it is not
//! already set) and clears it only when a wakeup that came by message
//! finds nobody there (a visit by one of its own threads' wakeups keeps
//! it: `Core::wakeup_own`): a stale bit costs one wasted message, while
//! clearing and setting it on every sleep would bounce the mask's line
//! between CPUs.
//!
//! Invariant: a CPU's bit is set whenever it has a sleeper registered in
//! the bucket (set at the insert that found the bucket empty, cleared only
//! by the CPU itself, on its own OS thread, after a visit found the bucket
//! empty). A set bit with no sleeper is only a hint that costs a visit.
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

pub(crate) use super::sleepmask::{bucket_of, SleepMasks, NBUCKETS};
use super::td::{tdf, TdPtr, Thread};

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
