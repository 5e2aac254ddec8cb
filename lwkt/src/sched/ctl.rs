//! A thread's control block: the part of a thread that handles held by
//! other threads (`JoinHandle`, `ThreadRef`: DragonFly's `lwkt_hold`) may
//! look at. It lives in the thread's join packet, which is reference
//! counted, so it outlives the thread structure (which is recycled).
//!
//! Everything here is either immutable or atomic. The one pointer to the
//! thread structure, `td`, is followed only by the CPU that owns the
//! thread (`cpu`), on its own OS thread: to anyone else it is an opaque
//! word.

use super::machine::Machine;
use super::td::Thread;
use crate::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use crate::sync::Arc;

/// See the module header.
pub(crate) struct Ctl {
    /// The thread's id (unique in the process, never reused).
    pub(crate) tid: u64,
    /// The runtime the thread belongs to: handles are checked against the
    /// caller's runtime before anything else is looked at.
    pub(crate) machine: Arc<Machine>,
    /// The CPU that owns the thread. Changes on migration: set to the new
    /// CPU before the hand-off message is sent.
    pub(crate) cpu: AtomicUsize,
    /// The thread structure, or null once the thread exited. Read and
    /// followed only on the owning CPU.
    pub(crate) td: AtomicPtr<Thread>,
    /// Set while the thread is in flight between CPUs.
    pub(crate) migrating: AtomicBool,
    /// A pending interrupt request (`ThreadRef::interrupt`).
    pub(crate) interrupt: AtomicBool,
    /// The thread of this runtime waiting in `join` for this one, while it
    /// waits, else null. Set and cleared by the joiner on its own CPU
    /// (`joiner_cpu`); followed only there (see `Core::wake_joiner`).
    pub(crate) joiner: AtomicPtr<Thread>,
    /// The CPU of the joiner (set with `joiner`, left set afterwards).
    pub(crate) joiner_cpu: AtomicUsize,
}

impl Ctl {
    pub(crate) fn new(machine: Arc<Machine>, tid: u64, cpu: usize) -> Ctl {
        Ctl {
            tid,
            machine,
            cpu: AtomicUsize::new(cpu),
            td: AtomicPtr::new(std::ptr::null_mut()),
            migrating: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
            joiner: AtomicPtr::new(std::ptr::null_mut()),
            joiner_cpu: AtomicUsize::new(usize::MAX),
        }
    }

    /// Makes a control block no reference is left to (`&mut`) new again
    /// for thread `tid` on `cpu` of the same runtime, as `new` would,
    /// without touching the runtime's reference count (Relaxed stores: the
    /// `&mut` already excludes every other access).
    pub(crate) fn renew(&mut self, tid: u64, cpu: usize) {
        // Every field named, so that a new one cannot be forgotten here;
        // the runtime stays the same.
        let Ctl {
            tid: t,
            machine: _,
            cpu: c,
            td,
            migrating,
            interrupt,
            joiner,
            joiner_cpu,
        } = self;
        *t = tid;
        c.store(cpu, Ordering::Relaxed);
        td.store(std::ptr::null_mut(), Ordering::Relaxed);
        migrating.store(false, Ordering::Relaxed);
        interrupt.store(false, Ordering::Relaxed);
        joiner.store(std::ptr::null_mut(), Ordering::Relaxed);
        joiner_cpu.store(usize::MAX, Ordering::Relaxed);
    }

    /// Whether the thread belongs to the runtime of `m`.
    #[inline]
    pub(crate) fn is_of(&self, m: &Machine) -> bool {
        std::ptr::eq(&*self.machine, m)
    }
}

/// What the scheduler needs from a thread's join packet without knowing
/// the thread's result type.
pub(crate) trait CtlOwner: Send + Sync {
    /// The control block.
    fn ctl(&self) -> &Ctl;
    /// Whether the thread's result (or cancellation) is published.
    fn finished(&self) -> bool;
    /// Marks the thread as cancelled by runtime shutdown and wakes its
    /// joiners. `started`: whether the thread ever ran (then its stack is
    /// unwound next; else its function is dropped without running).
    fn cancel(&self, started: bool);
}

/// A block the switch path keeps up to date for a thread that asks for it
/// (NetBSD's `lwpctl`, offered to the LWP layer): written only by the CPU
/// that runs the thread, readable by anyone without a lock.
///
/// `cpu` is the CPU the thread runs on, or [`SwitchCtl::NONE`] while it is
/// switched out, or [`SwitchCtl::EXITED`] once it is gone. `pctr` is
/// bumped every time the thread is switched out. `blocked` says whether the
/// last switch-out was a sleep or a park (rather than a yield or a
/// preemption).
#[derive(Debug)]
pub(crate) struct SwitchCtl {
    pub(crate) cpu: AtomicI32,
    pub(crate) pctr: AtomicU32,
    pub(crate) blocked: AtomicBool,
}

impl SwitchCtl {
    /// Not on a CPU.
    pub(crate) const NONE: i32 = -1;
    /// The thread has exited.
    pub(crate) const EXITED: i32 = -2;

    pub(crate) fn new() -> SwitchCtl {
        SwitchCtl {
            cpu: AtomicI32::new(Self::NONE),
            pctr: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
        }
    }

    /// The thread is switched in on `cpu`.
    #[cold]
    pub(crate) fn switched_in(&self, cpu: usize) {
        self.cpu.store(cpu as i32, Ordering::Release);
    }

    /// The thread is switched out; `blocked` as above. Only the CPU that
    /// runs the thread writes, so a load and a store bump the counter (no
    /// read-modify-write).
    #[cold]
    pub(crate) fn switched_out(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
        self.pctr.store(
            self.pctr.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        self.cpu.store(Self::NONE, Ordering::Release);
    }
}
