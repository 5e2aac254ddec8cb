//! The thread structure (`struct thread`), owned by its CPU.
//!
//! Every field is touched only by the OS thread of the CPU the thread
//! belongs to (the scheduler context or a thread running on that CPU), so
//! plain `Cell`s suffice. Pointers to a `Thread` live only in that CPU's run
//! queue, sleep queue, timer heap and all-threads list; a thread leaves all
//! of them before its structure is recycled.

use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize};
use std::sync::Arc;

use corosensei::{Coroutine, Yielder};

use super::cpu::Cpu;
use crate::runtime::Shared;
use crate::stack::Stack;
use crate::token::{RawToken, MAX_TOKENS};

/// The coroutine type of every lwkt thread: resumed with `()`, suspends
/// with `()`, returns `()`. Why a thread switched out is recorded in its
/// flags, not passed through the switch.
pub(crate) type Coro = Coroutine<(), (), (), Stack>;
/// The handle a thread uses to switch back to its CPU's scheduler.
pub(crate) type Yld = Yielder<(), ()>;

/// Thread flag bits (`td_flags`). Owned by the thread's CPU.
///
/// | bit | name     | meaning                                              |
/// |-----|----------|------------------------------------------------------|
/// | 0   | RUNQ     | on its CPU's run queue                               |
/// | 1   | TSLEEPQ  | registered on a wait channel in a sleep queue        |
/// | 2   | SLEEPING | switched out in `sleep`, waiting for wakeup/timeout  |
/// | 3   | SINTR    | the current sleep is interruptible                   |
/// | 4   | WOKEN    | a wakeup took the interlocked registration before    |
/// |     |          | the thread reached `sleep`                           |
/// | 5   | CANCEL   | the runtime is shutting down: the stack is unwinding |
/// | 6   | RUNNING  | on the CPU right now                                 |
/// | 7   | EXITED   | finished; kept only until timer entries drain        |
/// | 8   | PARKED   | descheduled (`park`, `deschedule`): runs again only  |
/// |     |          | after an explicit `schedule`                         |
/// | 9   | PERMIT   | a `schedule` arrived while it was not descheduled:   |
/// |     |          | its next `park` returns at once                      |
/// | 10  | DESCHED  | `deschedule` arrived while it ran: park at the next  |
/// |     |          | switch instead of re-queueing                        |
/// | 11  | MIGRATING| switching out to move to `migrate_to`                |
/// | 12  | PREEMPTED| on the CPU, but an interrupt thread runs nested on   |
/// |     |          | top of it (`lwkt_preempt`)                           |
/// | 13  | INTTHREAD| interrupt class: may preempt                         |
/// | 14  | NESTED   | resumed by another thread (preemption, direct join,  |
/// |     |          | a yielding thread running its peers), not by the     |
/// |     |          | scheduler: switching out returns to that thread      |
///
/// Invariants: RUNQ, SLEEPING, RUNNING and PARKED are mutually exclusive;
/// SINTR implies SLEEPING; WOKEN implies !TSLEEPQ; PREEMPTED implies
/// !RUNNING.
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
    pub(crate) const NESTED: u32 = 1 << 14;
}

/// Why the last sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    Wakeup,
    Timeout,
    Interrupt,
}

/// The part of a thread others may hold on to (`lwkt_hold`): its id,
/// where it lives, and a pointer to its structure that only the owning
/// CPU may follow. Lives inside the thread's join packet.
pub(crate) struct Ctl {
    pub(crate) tid: u64,
    /// The CPU that owns the thread (changes on migration; set to the new
    /// CPU before the hand-off message is sent).
    pub(crate) cpu: AtomicUsize,
    /// The thread structure, or null once it exited. Read and followed only
    /// on the owning CPU.
    pub(crate) td: AtomicPtr<Thread>,
    /// Set while the thread is in flight between CPUs.
    pub(crate) migrating: AtomicBool,
    /// A pending interrupt request (`JoinHandle::interrupt`).
    pub(crate) interrupt: AtomicBool,
    pub(crate) shared: Arc<Shared>,
}

impl Ctl {
    pub(crate) fn new(shared: Arc<Shared>, tid: u64, cpu: usize) -> Ctl {
        Ctl {
            tid,
            cpu: AtomicUsize::new(cpu),
            td: AtomicPtr::new(ptr::null_mut()),
            migrating: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
            shared,
        }
    }
}

/// What a thread's CPU needs from its join packet without knowing `T`.
pub(crate) trait PacketCtl: Send + Sync {
    /// The shared control block.
    fn ctl(&self) -> &Ctl;
    /// Whether the thread's result (or cancellation) is published.
    fn finished(&self) -> bool;
    /// Marks the thread as cancelled by runtime shutdown.
    fn cancel(&self);
}

/// One token reference held by a thread (`struct lwkt_tokref`).
#[derive(Clone, Copy)]
pub(crate) struct TokRef {
    pub(crate) tok: *const RawToken,
    /// See `token::mode`.
    pub(crate) mode: u8,
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

pub(crate) struct Thread {
    pub(crate) flags: Flags,
    pub(crate) pri: Cell<u8>,
    pub(crate) id: Cell<u64>,
    pub(crate) cpu: Cell<*const Cpu>,
    /// Set at creation, before any reference to it is handed out.
    pub(crate) name: UnsafeCell<Option<Box<str>>>,
    /// Run queue links.
    pub(crate) rq_next: Cell<*mut Thread>,
    pub(crate) rq_prev: Cell<*mut Thread>,
    /// Place in line in the run queue (see `RunQueue::ticket`).
    pub(crate) rq_seq: Cell<u64>,
    /// Sleep queue links.
    pub(crate) sq_next: Cell<*mut Thread>,
    pub(crate) sq_prev: Cell<*mut Thread>,
    /// All-threads list links (per CPU).
    pub(crate) all_next: Cell<*mut Thread>,
    pub(crate) all_prev: Cell<*mut Thread>,
    /// Wait channel (an address) while TSLEEPQ.
    pub(crate) wchan: Cell<usize>,
    /// Wait message shown while sleeping.
    pub(crate) wmesg: Cell<&'static str>,
    /// Bumped at every sleep; timer entries carry the value they were armed
    /// for, so stale ones are recognised.
    pub(crate) sleep_seq: Cell<u64>,
    pub(crate) wake: Cell<Wake>,
    /// Timer heap entries that still point at this structure.
    pub(crate) timer_refs: Cell<u32>,
    pub(crate) stack_size: Cell<usize>,
    /// The thread's coroutine; touched only by the scheduler context.
    pub(crate) coro: UnsafeCell<Option<Coro>>,
    /// Valid while the coroutine runs or is suspended.
    pub(crate) yielder: Cell<*const Yld>,
    /// The thread's join packet, not owned: the thread's own closure owns
    /// a reference for as long as the thread exists, and clears this (and
    /// `Ctl::td`) before that reference is dropped. Saves an atomic
    /// increment and decrement per thread.
    pub(crate) packet: Cell<Option<NonNull<dyn PacketCtl>>>,
    /// Held token references (`td_toks_array`); slot `i` is live when bit
    /// `i` of `tok_used` is set.
    pub(crate) toks: [Cell<TokRef>; MAX_TOKENS],
    pub(crate) tok_used: Cell<u32>,
    /// The token whose acquisition failed last, or null.
    pub(crate) tok_blocked: Cell<*const RawToken>,
    /// Consecutive failed re-acquisition passes (switches to address
    /// order at the runtime's `token_spin_loops`).
    pub(crate) tok_fails: Cell<u32>,
    /// Critical section depth (`td_critcount`).
    pub(crate) crit: Cell<u32>,
    /// Target CPU while MIGRATING.
    pub(crate) migrate_to: Cell<usize>,
}

impl Thread {
    pub(crate) fn new() -> Box<Thread> {
        Box::new(Thread {
            flags: Flags(Cell::new(0)),
            pri: Cell::new(0),
            id: Cell::new(0),
            cpu: Cell::new(ptr::null()),
            name: UnsafeCell::new(None),
            rq_next: Cell::new(ptr::null_mut()),
            rq_prev: Cell::new(ptr::null_mut()),
            rq_seq: Cell::new(0),
            sq_next: Cell::new(ptr::null_mut()),
            sq_prev: Cell::new(ptr::null_mut()),
            all_next: Cell::new(ptr::null_mut()),
            all_prev: Cell::new(ptr::null_mut()),
            wchan: Cell::new(0),
            wmesg: Cell::new(""),
            sleep_seq: Cell::new(0),
            wake: Cell::new(Wake::Wakeup),
            timer_refs: Cell::new(0),
            stack_size: Cell::new(0),
            coro: UnsafeCell::new(None),
            yielder: Cell::new(ptr::null()),
            packet: Cell::new(None),
            toks: std::array::from_fn(|_| {
                Cell::new(TokRef {
                    tok: ptr::null(),
                    mode: 0,
                })
            }),
            tok_used: Cell::new(0),
            tok_blocked: Cell::new(ptr::null()),
            tok_fails: Cell::new(0),
            crit: Cell::new(0),
            migrate_to: Cell::new(0),
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

    /// The shared control block, if the thread has one.
    pub(crate) fn ctl(&self) -> Option<&Ctl> {
        self.packet().map(|p| p.ctl())
    }

    /// A new reference to the thread's packet (for `ThreadRef`).
    pub(crate) fn packet_arc(&self) -> Option<Arc<dyn PacketCtl>> {
        let p = self.packet.get()?;
        // SAFETY: the pointer is the data pointer of a live
        // `Arc<Packet<T>>` (see `packet`), unsized to `dyn PacketCtl`, which
        // is what `Arc::from_raw` accepts; the increment makes the new Arc
        // an owner of its own.
        unsafe {
            Arc::increment_strong_count(p.as_ptr() as *const dyn PacketCtl);
            Some(Arc::from_raw(p.as_ptr() as *const dyn PacketCtl))
        }
    }

    pub(crate) fn packet(&self) -> Option<&dyn PacketCtl> {
        // SAFETY: while the field is set, the thread's closure holds an Arc
        // to the packet (see the field's comment), so it is alive.
        self.packet.get().map(|p| unsafe { &*p.as_ptr() })
    }

    pub(crate) fn name(&self) -> Option<&str> {
        // SAFETY: the name is written only at creation, before any
        // reference to it exists (see the field's comment).
        unsafe { (*self.name.get()).as_deref() }
    }
}

/// A pointer to a thread owned by the current CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TdPtr(pub(crate) NonNull<Thread>);

impl TdPtr {
    #[inline]
    pub(crate) fn from_raw(p: *mut Thread) -> Option<TdPtr> {
        NonNull::new(p).map(TdPtr)
    }

    #[inline]
    pub(crate) fn as_ptr(self) -> *mut Thread {
        self.0.as_ptr()
    }

    /// The thread behind the pointer.
    #[inline]
    pub(crate) fn td<'a>(self) -> &'a Thread {
        // SAFETY: a TdPtr is only made from a live thread of the current
        // CPU and stored only in that CPU's queues and lists, which the
        // thread leaves before its structure is freed (module header); all
        // access is from that CPU's OS thread and goes through Cells.
        unsafe { self.0.as_ref() }
    }
}
