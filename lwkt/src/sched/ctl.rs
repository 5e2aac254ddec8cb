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
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize};
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
    /// joiners.
    fn cancel(&self);
}
