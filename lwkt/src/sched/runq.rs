//! The per-CPU run queue (`gd_tdrunq`): one FIFO per priority level plus a
//! bitmap of the non-empty levels, so enqueue, dequeue and "highest
//! runnable priority" are O(1). Owner-only: touched by its CPU's OS thread.
//!
//! Every thread linked here is owned by this CPU and stays allocated while
//! linked (see `td.rs`); that is the contract the `unsafe` blocks below
//! rely on.

use std::cell::Cell;
use std::ptr;

use super::td::{tdf, TdPtr, Thread};
use crate::priority::Priority;

pub(crate) struct RunQueue {
    /// Bit `p` set when level `p` has a thread.
    bitmap: Cell<u32>,
    heads: [Cell<*mut Thread>; Priority::LEVELS],
    tails: [Cell<*mut Thread>; Priority::LEVELS],
}

/// The thread behind a pointer found in the queue.
#[inline]
fn td<'a>(t: TdPtr) -> &'a Thread {
    // SAFETY: the queue holds only threads owned by this CPU, which leave
    // it before they are freed (module header); callers pass threads they
    // are linking in or found linked.
    unsafe { t.td() }
}

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        RunQueue {
            bitmap: Cell::new(0),
            heads: std::array::from_fn(|_| Cell::new(ptr::null_mut())),
            tails: std::array::from_fn(|_| Cell::new(ptr::null_mut())),
        }
    }

    /// The highest priority with a runnable thread.
    #[inline]
    pub(crate) fn highest(&self) -> Option<u8> {
        top(self.bitmap.get())
    }

    /// Whether a thread of priority `pri` or higher is runnable.
    #[inline]
    pub(crate) fn has_at_least(&self, pri: u8) -> bool {
        (u64::from(self.bitmap.get()) >> pri) != 0
    }

    /// Whether a thread of priority strictly above `pri` is runnable.
    #[inline]
    pub(crate) fn has_above(&self, pri: u8) -> bool {
        (u64::from(self.bitmap.get()) >> (pri + 1)) != 0
    }

    /// Bit `p` set when level `p` has a thread (for tests that combine it
    /// with a mask, such as a thread's [`PriCell::above`]).
    ///
    /// [`PriCell::above`]: super::td::PriCell::above
    #[inline(always)]
    pub(crate) fn bitmap(&self) -> u32 {
        self.bitmap.get()
    }

    /// Whether no thread is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.bitmap.get() == 0
    }

    /// The thread the scheduler tries first: the head of the highest level.
    #[inline]
    pub(crate) fn first(&self) -> Option<TdPtr> {
        let p = top(self.bitmap.get())?;
        TdPtr::from_raw(self.heads[p as usize].get())
    }

    /// The head of level `pri`, if that level has a thread.
    #[inline]
    pub(crate) fn head_at(&self, pri: u8) -> Option<TdPtr> {
        TdPtr::from_raw(self.heads[pri as usize].get())
    }

    /// The one runnable thread of priority `pri` or higher, when there is
    /// exactly one (the yield handoff's condition, see `switch.rs`).
    #[inline]
    pub(crate) fn sole_at_least(&self, pri: u8) -> Option<TdPtr> {
        let above = u64::from(self.bitmap.get()) >> pri;
        if !above.is_power_of_two() {
            return None;
        }
        let p = pri as usize + above.trailing_zeros() as usize;
        let h = self.heads[p].get();
        if h == self.tails[p].get() {
            TdPtr::from_raw(h)
        } else {
            None
        }
    }

    /// The thread after `t` in scan order: the next in its level, then the
    /// head of the next lower non-empty level.
    #[inline]
    pub(crate) fn next(&self, t: TdPtr) -> Option<TdPtr> {
        let d = td(t);
        if let Some(n) = TdPtr::from_raw(d.rq_next.get()) {
            return Some(n);
        }
        let below = self.bitmap.get() & ((1u32 << d.pri.get()) - 1);
        top(below).and_then(|p| TdPtr::from_raw(self.heads[p as usize].get()))
    }

    /// Appends at the tail of its level (`_lwkt_enqueue`) and sets RUNQ.
    #[inline]
    pub(crate) fn push_back(&self, t: TdPtr) {
        let d = td(t);
        debug_assert!(!d.has(tdf::RUNQ | tdf::SLEEPING | tdf::PARKED));
        let p = d.pri.get() as usize;
        let tail = self.tails[p].get();
        d.rq_next.set(ptr::null_mut());
        d.rq_prev.set(tail);
        match TdPtr::from_raw(tail) {
            Some(tl) => td(tl).rq_next.set(t.as_ptr()),
            None => self.heads[p].set(t.as_ptr()),
        }
        self.tails[p].set(t.as_ptr());
        self.bitmap.set(self.bitmap.get() | (1 << p));
        d.set(tdf::RUNQ);
    }

    /// Inserts at the head of its level (a preempted thread resumes before
    /// its peers) and sets RUNQ.
    pub(crate) fn push_front(&self, t: TdPtr) {
        let d = td(t);
        debug_assert!(!d.has(tdf::RUNQ | tdf::SLEEPING | tdf::PARKED));
        let p = d.pri.get() as usize;
        let head = self.heads[p].get();
        d.rq_prev.set(ptr::null_mut());
        d.rq_next.set(head);
        match TdPtr::from_raw(head) {
            Some(h) => td(h).rq_prev.set(t.as_ptr()),
            None => self.tails[p].set(t.as_ptr()),
        }
        self.heads[p].set(t.as_ptr());
        self.bitmap.set(self.bitmap.get() | (1 << p));
        d.set(tdf::RUNQ);
    }

    /// Unlinks a queued thread (`_lwkt_dequeue`) and clears RUNQ.
    #[inline]
    pub(crate) fn remove(&self, t: TdPtr) {
        self.unlink(t);
        td(t).clear(tdf::RUNQ);
    }

    /// Unlinks a queued thread, leaving its flags to the caller (who
    /// clears RUNQ in the same store that sets its next state).
    #[inline]
    pub(crate) fn unlink(&self, t: TdPtr) {
        let d = td(t);
        debug_assert!(d.has(tdf::RUNQ));
        let p = d.pri.get() as usize;
        let (next, prev) = (d.rq_next.get(), d.rq_prev.get());
        match TdPtr::from_raw(prev) {
            Some(pv) => td(pv).rq_next.set(next),
            None => self.heads[p].set(next),
        }
        match TdPtr::from_raw(next) {
            Some(nx) => td(nx).rq_prev.set(prev),
            None => self.tails[p].set(prev),
        }
        if next.is_null() && prev.is_null() {
            self.bitmap.set(self.bitmap.get() & !(1 << p));
        }
    }
}

/// The highest set bit of a level bitmap.
#[inline]
fn top(b: u32) -> Option<u8> {
    if b == 0 {
        None
    } else {
        Some(31 - b.leading_zeros() as u8)
    }
}
