//! The thread structure (`struct thread`), owned by one CPU at a time.
//!
//! Every field is touched only by the OS thread of the CPU that owns the
//! thread (its scheduler loop, or the thread itself while it runs there),
//! so plain `Cell`s suffice. Pointers to a `Thread` live only in that CPU's
//! run queue, sleep queues, timer heap, all-threads list and preemption
//! slot, and in the thread's control block (`Ctl::td`, followed only by the
//! owning CPU). A thread leaves all of them before its structure is
//! recycled, except timer entries, which keep it allocated until they fire
//! (`timer_refs`).
//!
//! Identity: a structure is recycled for later threads, so its address is
//! never an identity outside the token word (see `tokref::word`).
//! `tid` is: unique in the process for as long as it runs.

use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};

use corosensei::{Coroutine, Yielder};

use super::core::Core;
use super::ctl::{Ctl, CtlOwner, SwitchCtl};
use crate::stack::Stack;
use crate::tokref::TokRefs;

/// The coroutine type of every lwkt thread: resumed with `()`, suspends
/// with `()`, returns `()`. Why a thread switched out is recorded in its
/// flags, not passed through the switch.
pub(crate) type Coro = Coroutine<(), (), (), Stack>;
/// The handle a thread uses to switch back to its CPU's loop.
pub(crate) type Yld = Yielder<(), ()>;

/// Thread flag bits (`td_flags`). Owned by the thread's CPU.
///
/// | bit | name      | meaning                                             |
/// |-----|-----------|-----------------------------------------------------|
/// | 0   | RUNQ      | on its CPU's run queue                              |
/// | 1   | TSLEEPQ   | registered on a wait channel in a sleep queue       |
/// | 2   | SLEEPING  | switched out in `sleep`, waiting for wakeup/timeout |
/// | 3   | SINTR     | the current sleep is interruptible                  |
/// | 4   | WOKEN     | a wakeup took the interlocked registration before   |
/// |     |           | the thread reached `sleep`                          |
/// | 5   | CANCEL    | the runtime is shutting down: the stack unwinds     |
/// | 6   | RUNNING   | on the CPU right now                                |
/// | 7   | EXITED    | finished; kept only until timer entries drain       |
/// | 8   | PARKED    | descheduled (`park`, `deschedule`): runs again only |
/// |     |           | after an explicit `schedule`                        |
/// | 9   | PERMIT    | a `schedule` arrived while it was not descheduled:  |
/// |     |           | its next `park` returns at once                     |
/// | 10  | DESCHED   | `deschedule` arrived while it ran: park at the next |
/// |     |           | switch instead of re-queueing                       |
/// | 11  | MIGRATING | switching out to move to `migrate_to`               |
/// | 12  | PREEMPTED | queued at the head of its level after an interrupt  |
/// |     |           | thread preempted it; it kept its tokens (they are   |
/// |     |           | held, not pending) and resumes where it stopped     |
/// | 13  | INTTHREAD | interrupt class: may preempt                        |
/// | 14  | UNWINDING | the runtime is unwinding its stack (shutdown)       |
/// | 15  | HANDOFF   | on the CPU, but the thread it handed off to runs on |
/// |     |           | top of it (`Core::handoff`); on no queue            |
/// | 16  | UPCALL    | an upper layer (LWPs) asked the thread to look at   |
/// |     |           | its requests at its next switch point (see          |
/// |     |           | `thread::cur`); set only by the owning CPU          |
/// | 17  | SWCTL     | `swctl` points at a switch-visibility block the     |
/// |     |           | switch path keeps up to date (the LWP `lwpctl`)     |
///
/// Invariants: at most one of RUNQ, SLEEPING, RUNNING, PARKED, HANDOFF (a thread
/// that is switching out may have the next state set while its CPU's loop
/// has yet to clear RUNNING); SINTR implies SLEEPING; WOKEN implies
/// !TSLEEPQ; PREEMPTED implies RUNQ and that every token reference is
/// held.
pub(crate) mod tdf {
    pub(crate) const RUNQ: u32 = 1 << 0;
    pub(crate) const TSLEEPQ: u32 = 1 << 1;
    pub(crate) const SLEEPING: u32 = 1 << 2;
    pub(crate) const SINTR: u32 = 1 << 3;
    pub(crate) const WOKEN: u32 = 1 << 4;
    pub(crate) const CANCEL: u32 = 1 << 5;
    pub(crate) const RUNNING: u32 = 1 << 6;
    pub(crate) const EXITED: u32 = 1 << 7;
    pub(crate) const PARKED: u32 = 1 << 8;
    pub(crate) const PERMIT: u32 = 1 << 9;
    pub(crate) const DESCHED: u32 = 1 << 10;
    pub(crate) const MIGRATING: u32 = 1 << 11;
    pub(crate) const PREEMPTED: u32 = 1 << 12;
    pub(crate) const INTTHREAD: u32 = 1 << 13;
    pub(crate) const UNWINDING: u32 = 1 << 14;
    pub(crate) const HANDOFF: u32 = 1 << 15;
    pub(crate) const UPCALL: u32 = 1 << 16;
    pub(crate) const SWCTL: u32 = 1 << 17;
}

/// Why the last sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    Wakeup,
    Timeout,
    Interrupt,
}

/// The word behind `td_flags`: a `Cell<u32>` whose stores are always four
/// bytes wide.
///
/// Left alone, the compiler turns `flags | RUNQ` into a one-byte
/// read-modify-write. The next four-byte load of the word (often on the
/// other side of a context switch, a few instructions later) then cannot
/// be served from the store buffer and waits for the store to retire: a
/// store-forwarding stall, which measured about a third of a same-CPU
/// yield. A volatile store keeps every write whole.
pub(crate) struct Flags(Cell<u32>);

impl Flags {
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.0.get()
    }

    #[inline]
    pub(crate) fn set(&self, v: u32) {
        // SAFETY: the pointer comes from a live Cell, which is !Sync: only
        // this OS thread can access it, and no reference into it exists
        // (Cell never hands one out).
        unsafe { self.0.as_ptr().write_volatile(v) }
    }
}

/// A thread's priority and, kept with it, the run-queue bitmap bits of
/// the levels strictly above it (`maybe_yield`'s "something more urgent is
/// runnable" test is then one AND with the bitmap, no shift).
///
/// Invariant: `above == !((2 << pri) - 1)` truncated to 32 bits, i.e. bit
/// `p` set exactly for `pri < p <= 31`. Both change only in
/// [`set`](Self::set), the one writer.
#[repr(C)]
pub(crate) struct PriCell {
    pri: Cell<u8>,
    above: Cell<u32>,
}

impl PriCell {
    pub(crate) fn new(p: u8) -> PriCell {
        PriCell {
            pri: Cell::new(p),
            above: Cell::new(above_mask(p)),
        }
    }

    /// The priority.
    #[inline(always)]
    pub(crate) fn get(&self) -> u8 {
        self.pri.get()
    }

    /// Sets the priority and the bits above it (the invariant above).
    /// Nothing to write when the priority stays (the common case of a
    /// reused thread structure given the same priority at spawn): by the
    /// invariant, `above` is right already.
    #[inline]
    pub(crate) fn set(&self, p: u8) {
        if self.pri.get() != p {
            self.pri.set(p);
            self.above.set(above_mask(p));
        }
    }

    /// Run-queue bitmap bits of the levels strictly above the priority.
    #[inline(always)]
    pub(crate) fn above(&self) -> u32 {
        self.above.get()
    }
}

/// Bit `q` set for every level `q` in `p < q <= 31` (priorities are
/// 0..=31; the mask on the shift only keeps a debug build from panicking
/// on anything else, and costs nothing on x86, whose shifts mask so).
#[inline]
fn above_mask(p: u8) -> u32 {
    debug_assert!(usize::from(p) < crate::priority::Priority::LEVELS);
    !1u32 << (p & 31)
}

/// One lwkt thread. See the module header for who may touch it.
///
/// `repr(C)` with the fields a switch touches first, so they share the
/// structure's first two cache lines: flags, priority, run-queue links, the
/// yielder, the coroutine (its stack pointer) and the token mask. The rest
/// (the token array, sleep-queue links, names) follow.
#[repr(C)]
pub(crate) struct Thread {
    /// [`tdf`] bits.
    pub(crate) flags: Flags,
    /// Priority, 0..=31 (`td_pri`), with the run-queue bits above it.
    pub(crate) pri: PriCell,
    /// Critical section depth (`td_critcount`).
    pub(crate) crit: Cell<u32>,
    /// Run queue links: the next thread in this level...
    pub(crate) rq_next: Cell<*mut Thread>,
    /// ...and the previous one (null at the ends).
    pub(crate) rq_prev: Cell<*mut Thread>,
    /// Valid while the coroutine runs or is suspended.
    pub(crate) yielder: Cell<*const Yld>,
    /// The CPU that owns the thread (changes on migration, when the new
    /// CPU adopts it).
    pub(crate) core: Cell<*const Core>,
    /// The thread's id, unique in the process (never reused).
    pub(crate) tid: Cell<u64>,
    /// The thread's coroutine; touched only by its CPU's loop.
    pub(crate) coro: UnsafeCell<Option<Coro>>,
    /// Held token references (`td_toks_array`); its own hot fields first.
    pub(crate) toks: TokRefs,
    /// Set at creation, before any reference to it is handed out; cleared
    /// at retirement.
    pub(crate) name: UnsafeCell<Option<Box<str>>>,
    /// Sleep queue links: the next thread in this bucket...
    pub(crate) sq_next: Cell<*mut Thread>,
    /// ...and the previous one (null at the ends).
    pub(crate) sq_prev: Cell<*mut Thread>,
    /// All-threads list links (per CPU): the next thread...
    pub(crate) all_next: Cell<*mut Thread>,
    /// ...and the previous one (null at the ends).
    pub(crate) all_prev: Cell<*mut Thread>,
    /// Wait channel (an address) while TSLEEPQ.
    pub(crate) wchan: Cell<usize>,
    /// Wait message shown while sleeping, parked or waiting for a token.
    pub(crate) wmesg: Cell<&'static str>,
    /// Bumped at every sleep; timer entries carry the value they were armed
    /// for, so stale ones are recognised.
    pub(crate) sleep_seq: Cell<u64>,
    /// Why the last sleep ended.
    pub(crate) wake: Cell<Wake>,
    /// Timer heap entries that still point at this structure.
    pub(crate) timer_refs: Cell<u32>,
    /// The guard page of the thread's stack (for the overflow report).
    pub(crate) guard: Cell<(usize, usize)>,
    /// The usable size of the thread's stack.
    pub(crate) stack_size: Cell<usize>,
    /// The thread's join packet (which holds its control block), not
    /// owned: the thread's own closure owns a reference to the packet for
    /// as long as the thread exists, and clears this (and `Ctl::td`)
    /// before letting go. Saves an atomic increment and decrement per
    /// thread.
    pub(crate) packet: Cell<Option<NonNull<dyn CtlOwner>>>,
    /// Target CPU while MIGRATING.
    pub(crate) migrate_to: Cell<usize>,
    /// While SWCTL: the block the switch path updates on every switch in
    /// and out (kept alive by the thread itself, which sets and clears
    /// SWCTL on its own stack). Read only while SWCTL is set (and set
    /// before it), so a recycled structure's stale value is never used
    /// and creation does not reset it.
    pub(crate) swctl: Cell<*const SwitchCtl>,
    /// A label an upper layer gives the thread for the `ps` listing: the
    /// LWP layer's (pid, lid); (0, 0) for a plain thread.
    pub(crate) lwp_tag: Cell<(u32, u32)>,
    /// Trace only: the thread switched out blocked on a token and has not
    /// acquired it yet (touched only while tracing is on).
    pub(crate) trace_tokwait: Cell<bool>,
}

impl Thread {
    pub(crate) fn new() -> Box<Thread> {
        Box::new(Thread {
            flags: Flags(Cell::new(0)),
            pri: PriCell::new(0),
            tid: Cell::new(0),
            core: Cell::new(ptr::null()),
            name: UnsafeCell::new(None),
            rq_next: Cell::new(ptr::null_mut()),
            rq_prev: Cell::new(ptr::null_mut()),
            sq_next: Cell::new(ptr::null_mut()),
            sq_prev: Cell::new(ptr::null_mut()),
            all_next: Cell::new(ptr::null_mut()),
            all_prev: Cell::new(ptr::null_mut()),
            wchan: Cell::new(0),
            wmesg: Cell::new(""),
            sleep_seq: Cell::new(0),
            wake: Cell::new(Wake::Wakeup),
            timer_refs: Cell::new(0),
            guard: Cell::new((0, 0)),
            stack_size: Cell::new(0),
            coro: UnsafeCell::new(None),
            yielder: Cell::new(ptr::null()),
            packet: Cell::new(None),
            toks: TokRefs::new(),
            crit: Cell::new(0),
            migrate_to: Cell::new(0),
            swctl: Cell::new(ptr::null()),
            lwp_tag: Cell::new((0, 0)),
            trace_tokwait: Cell::new(false),
        })
    }

    #[inline]
    pub(crate) fn has(&self, f: u32) -> bool {
        self.flags.get() & f != 0
    }

    #[inline]
    pub(crate) fn set(&self, f: u32) {
        self.flags.set(self.flags.get() | f);
    }

    #[inline]
    pub(crate) fn clear(&self, f: u32) {
        self.flags.set(self.flags.get() & !f);
    }

    /// The thread's identity in token words: its structure's address
    /// (unique among live threads; see `tokref::word`).
    #[inline]
    pub(crate) fn identity(&self) -> usize {
        self as *const Thread as usize
    }

    /// The join packet, if the thread still has one.
    pub(crate) fn packet(&self) -> Option<&dyn CtlOwner> {
        // SAFETY: while the field is set, the thread's closure holds an Arc
        // to the packet (see the field's comment), so it is alive for as
        // long as the field stays set; the field is cleared only by the
        // thread itself or its CPU's loop, neither of which runs while a
        // borrow from `&self` is in use elsewhere on this OS thread.
        self.packet.get().map(|p| unsafe { &*p.as_ptr() })
    }

    /// The control block, if the thread still has one.
    pub(crate) fn ctl(&self) -> Option<&Ctl> {
        self.packet().map(|p| p.ctl())
    }

    /// A new reference to the thread's packet (for `ThreadRef`).
    pub(crate) fn packet_arc(&self) -> Option<crate::sync::Arc<dyn CtlOwner>> {
        let p = self.packet.get()?;
        // SAFETY: the pointer is the data pointer of a live `Arc<Packet<T>>`
        // (see `packet`), unsized to `dyn CtlOwner`, which is what
        // `Arc::from_raw` accepts; the increment makes the new Arc an owner
        // of its own.
        unsafe {
            crate::sync::Arc::increment_strong_count(p.as_ptr() as *const dyn CtlOwner);
            Some(crate::sync::Arc::from_raw(p.as_ptr() as *const dyn CtlOwner))
        }
    }

    /// The thread's name, if it has one.
    pub(crate) fn name(&self) -> Option<&str> {
        // SAFETY: the name is written only at creation, before any
        // reference to it exists, and cleared at retirement, after the
        // thread's last use (see the field's comment).
        unsafe { (*self.name.get()).as_deref() }
    }
}

/// A pointer to a thread owned by the current CPU: what the CPU's queues
/// and lists hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TdPtr(NonNull<Thread>);

impl TdPtr {
    #[inline]
    pub(crate) fn from_raw(p: *mut Thread) -> Option<TdPtr> {
        NonNull::new(p).map(TdPtr)
    }

    #[inline]
    pub(crate) fn from_box(b: Box<Thread>) -> TdPtr {
        TdPtr(NonNull::from(Box::leak(b)))
    }

    #[inline]
    pub(crate) fn as_ptr(self) -> *mut Thread {
        self.0.as_ptr()
    }

    /// The thread behind the pointer.
    ///
    /// # Safety
    /// The thread must be owned by the CPU whose OS thread calls this, and
    /// must not be freed while the returned reference is used: it must be
    /// linked in one of that CPU's queues or lists (which it leaves before
    /// being freed), be the running thread, or be kept alive by a timer
    /// entry. Every access then goes through `Cell`s on that one OS
    /// thread, so shared references do not alias a `&mut`.
    #[inline]
    pub(crate) unsafe fn td<'a>(self) -> &'a Thread {
        // SAFETY: per the contract above.
        unsafe { self.0.as_ref() }
    }

    /// Turns the pointer back into the box it was made from.
    ///
    /// # Safety
    /// The thread must be linked nowhere and referenced by no timer entry:
    /// this is the last use of the pointer.
    pub(crate) unsafe fn into_box(self) -> Box<Thread> {
        // SAFETY: made by `from_box` (Box::leak), unreferenced (contract).
        unsafe { Box::from_raw(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::PriCell;

    /// `PriCell`'s invariant: `above` has bit `q` set exactly for the
    /// levels `q` above the priority, after construction and every `set`.
    #[test]
    fn above_is_the_levels_strictly_above() {
        let c = PriCell::new(7);
        assert_eq!(c.above(), !0u32 << 8);
        for p in (0..=31u8).chain([5, 0, 31, 17]) {
            c.set(p);
            for q in 0..32u8 {
                assert_eq!(c.above() & (1 << q) != 0, q > p, "pri {p}, level {q}");
            }
            assert_eq!(c.get(), p);
        }
    }
}
