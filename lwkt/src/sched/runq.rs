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
    /// The next place in line: every enqueue takes one, so within a level
    /// `rq_seq` grows from head to tail.
    seq: Cell<u64>,
    /// Bit `p` set while a thread of priority `p` stands in line unlinked
    /// (a yielding thread running its peers; at most one per CPU). It
    /// counts for [`highest`](Self::highest) and
    /// [`has_above`](Self::has_above), so the peers it runs yield back to
    /// it exactly as if it were queued.
    lined: Cell<u32>,
}

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        RunQueue {
            bitmap: Cell::new(0),
            heads: std::array::from_fn(|_| Cell::new(ptr::null_mut())),
            tails: std::array::from_fn(|_| Cell::new(ptr::null_mut())),
            seq: Cell::new(0),
            lined: Cell::new(0),
        }
    }

    /// Takes a place in line without linking anything: a yielding thread
    /// that runs its peers itself holds one instead of being queued (see
    /// [`ahead_of`](Self::ahead_of) and [`insert_at`](Self::insert_at)).
    #[inline]
    pub(crate) fn ticket(&self) -> u64 {
        let s = self.seq.get();
        self.seq.set(s + 1);
        s
    }

    /// Whether the queued thread `t` runs before a thread of priority
    /// `pri` whose place in line is `ticket`.
    #[inline]
    pub(crate) fn ahead_of(&self, t: TdPtr, pri: u8, ticket: u64) -> bool {
        let td = t.td();
        let p = td.pri.get();
        p > pri || (p == pri && td.rq_seq.get() < ticket)
    }

    /// Links `t` at the place `ticket` holds in its level: after every
    /// thread queued before the ticket was taken, before every one queued
    /// since. Walks back from the tail (usually zero or one step).
    pub(crate) fn insert_at(&self, t: TdPtr, ticket: u64) {
        let td = t.td();
        debug_assert!(!td.has(tdf::RUNQ | tdf::RUNNING | tdf::SLEEPING));
        let p = td.pri.get() as usize;
        let mut after = self.tails[p].get();
        while let Some(a) = TdPtr::from_raw(after) {
            if a.td().rq_seq.get() < ticket {
                break;
            }
            after = a.td().rq_prev.get();
        }
        let next = match TdPtr::from_raw(after) {
            Some(a) => a.td().rq_next.get(),
            None => self.heads[p].get(),
        };
        td.rq_prev.set(after);
        td.rq_next.set(next);
        match TdPtr::from_raw(after) {
            Some(a) => a.td().rq_next.set(t.as_ptr()),
            None => self.heads[p].set(t.as_ptr()),
        }
        match TdPtr::from_raw(next) {
            Some(n) => n.td().rq_prev.set(t.as_ptr()),
            None => self.tails[p].set(t.as_ptr()),
        }
        td.rq_seq.set(ticket);
        self.bitmap.set(self.bitmap.get() | (1 << p));
        td.set(tdf::RUNQ);
    }

    /// The highest priority with a runnable thread, counting a thread
    /// standing in line.
    #[inline]
    pub(crate) fn highest(&self) -> Option<u8> {
        top(self.bitmap.get() | self.lined.get())
    }

    /// Marks the CPU's one thread standing in line unlinked (see `lined`)
    /// as being of priority `pri`; called again when its priority changes.
    #[inline]
    pub(crate) fn line_up(&self, pri: u8) {
        self.lined.set(1 << pri);
    }

    /// Ends [`line_up`](Self::line_up).
    #[inline]
    pub(crate) fn leave_line(&self) {
        self.lined.set(0);
    }

    /// Whether no thread is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.bitmap.get() == 0
    }

    /// The thread `pick` would try first: the head of the highest level.
    #[inline]
    pub(crate) fn first(&self) -> Option<TdPtr> {
        let p = top(self.bitmap.get())?;
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
        (u64::from(self.bitmap.get() | self.lined.get()) >> (pri + 1)) != 0
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
        td.rq_seq.set(self.ticket());
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

/// The highest set bit of a level bitmap.
#[inline]
fn top(b: u32) -> Option<u8> {
    if b == 0 {
        None
    } else {
        Some(31 - b.leading_zeros() as u8)
    }
}
