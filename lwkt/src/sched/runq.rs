//! The per-CPU run queue: one FIFO per priority level plus a bitmap of the
//! non-empty levels, so enqueue, dequeue and "highest runnable priority"
//! are O(1). Touched only by the owning CPU.

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
        let b = self.bitmap.get();
        if b == 0 {
            None
        } else {
            Some(31 - b.leading_zeros() as u8)
        }
    }

    /// Whether no thread is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.bitmap.get() == 0
    }

    /// The thread `pick` would try first: the head of the highest level.
    #[inline]
    pub(crate) fn first(&self) -> Option<TdPtr> {
        let p = self.highest()?;
        TdPtr::from_raw(self.heads[p as usize].get())
    }

    /// The thread after `t` in scan order: the next in its level, then the
    /// head of the next lower non-empty level.
    #[inline]
    pub(crate) fn next(&self, t: TdPtr) -> Option<TdPtr> {
        let td = t.td();
        if let Some(n) = TdPtr::from_raw(td.rq_next.get()) {
            return Some(n);
        }
        let p = td.pri.get() as u32;
        let below = self.bitmap.get() & ((1u32 << p) - 1);
        if below == 0 {
            return None;
        }
        TdPtr::from_raw(self.heads[(31 - below.leading_zeros()) as usize].get())
    }

    /// Whether a thread of priority strictly above `pri` is runnable.
    #[inline]
    pub(crate) fn has_above(&self, pri: u8) -> bool {
        (u64::from(self.bitmap.get()) >> (pri + 1)) != 0
    }

    /// Appends at the tail of its level (`_lwkt_enqueue`).
    #[inline]
    pub(crate) fn push_back(&self, t: TdPtr) {
        let td = t.td();
        debug_assert!(!td.has(tdf::RUNQ | tdf::RUNNING | tdf::SLEEPING));
        let p = td.pri.get() as usize;
        let tail = self.tails[p].get();
        td.rq_next.set(ptr::null_mut());
        td.rq_prev.set(tail);
        if tail.is_null() {
            self.heads[p].set(t.as_ptr());
        } else {
            TdPtr::from_raw(tail).unwrap().td().rq_next.set(t.as_ptr());
        }
        self.tails[p].set(t.as_ptr());
        self.bitmap.set(self.bitmap.get() | (1 << p));
        td.set(tdf::RUNQ);
    }

    /// Unlinks a queued thread (`_lwkt_dequeue`).
    #[inline]
    pub(crate) fn remove(&self, t: TdPtr) {
        let td = t.td();
        debug_assert!(td.has(tdf::RUNQ));
        let p = td.pri.get() as usize;
        let (next, prev) = (td.rq_next.get(), td.rq_prev.get());
        match TdPtr::from_raw(prev) {
            Some(pv) => pv.td().rq_next.set(next),
            None => self.heads[p].set(next),
        }
        match TdPtr::from_raw(next) {
            Some(nx) => nx.td().rq_prev.set(prev),
            None => self.tails[p].set(prev),
        }
        if self.heads[p].get().is_null() {
            self.bitmap.set(self.bitmap.get() & !(1 << p));
        }
        td.rq_next.set(ptr::null_mut());
        td.rq_prev.set(ptr::null_mut());
        td.clear(tdf::RUNQ);
    }
}
