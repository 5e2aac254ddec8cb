//! A CPU's sleep timeouts: a min-heap of deadlines. Owner-only.
//!
//! An entry names a thread and the sleep it was armed for (`sleep_seq`):
//! when the sleep ends early the entry is left in the heap and recognised
//! as stale when it fires, so ending a sleep costs nothing here. An entry
//! keeps its thread's structure allocated (`Thread::timer_refs`) until it
//! fires or the thread leaves the CPU.

use std::cell::{Cell, UnsafeCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::td::TdPtr;

/// A heap entry: wake `td` at `when` if it is still in the sleep numbered
/// `seq`.
pub(crate) struct Timer {
    pub(crate) when: Instant,
    pub(crate) seq: u64,
    pub(crate) td: TdPtr,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        self.when == o.when && self.seq == o.seq
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // Earliest deadline first in a max-heap.
        o.when.cmp(&self.when).then(o.seq.cmp(&self.seq))
    }
}

/// See the module header.
pub(crate) struct Timers {
    heap: UnsafeCell<BinaryHeap<Timer>>,
    /// Entries in the heap (read on hot paths without touching the heap).
    len: Cell<usize>,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            heap: UnsafeCell::new(BinaryHeap::new()),
            len: Cell::new(0),
        }
    }

    /// Whether no entry is armed (a hot-path check).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// Runs `f` on the heap. `f` must not call back into this `Timers`.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut BinaryHeap<Timer>) -> R) -> R {
        // SAFETY: the heap is owner-only (module header) and this is the
        // only place a reference to it is made; `f` cannot reach `self`
        // again (private closures below), so the borrow is unique.
        let r = f(unsafe { &mut *self.heap.get() });
        // SAFETY: as above; the previous borrow has ended.
        self.len.set(unsafe { &*self.heap.get() }.len());
        r
    }

    /// Arms an entry.
    pub(crate) fn push(&self, t: Timer) {
        self.with(|h| h.push(t));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        self.with(|h| h.peek().map(|t| t.when))
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<Timer> {
        self.with(|h| match h.peek() {
            Some(t) if t.when <= now => h.pop(),
            _ => None,
        })
    }

    /// Removes every entry naming `t`; returns how many.
    pub(crate) fn remove_thread(&self, t: TdPtr) -> usize {
        self.with(|h| {
            let before = h.len();
            h.retain(|e| e.td != t);
            before - h.len()
        })
    }

    /// Removes every entry.
    pub(crate) fn take_all(&self) -> Vec<Timer> {
        self.with(|h| std::mem::take(h).into_vec())
    }
}
