//! Explicit scheduling: references to other threads ([`ThreadRef`]) and
//! critical sections ([`CritSection`]).

use std::fmt;
use std::marker::PhantomData;

use super::cur::{CurThread, Sleep, ThreadId};
use crate::error::Error;
use crate::priority::Priority;
use crate::sched::core::with_current;
use crate::sched::ctl::{Ctl, CtlOwner};
use crate::sched::machine::Msg;
use crate::sched::ops::{OpKind, Reply, ThreadOp};
use crate::sched::td::TdPtr;
use crate::sync::atomic::Ordering;
use crate::sync::Arc;

/// A reference to a thread that keeps its control block alive
/// (`lwkt_hold`; dropping it is `lwkt_rele`). It can outlive the thread:
/// operations on an exited thread do nothing. `Send + Sync + Clone`.
///
/// Every operation is carried out by the CPU that owns the thread; from
/// another CPU (or from outside the runtime, or from another runtime) it
/// travels there as a message and takes effect shortly after the call
/// returns.
#[derive(Clone)]
pub struct ThreadRef {
    p: Arc<dyn CtlOwner>,
    /// The control block inside `p`'s allocation (saves a virtual call
    /// per operation).
    ctl: std::ptr::NonNull<Ctl>,
}

// SAFETY: `ctl` points into the allocation `p` keeps alive, and `Ctl` is
// all atomics and immutable fields (`Sync`); `p` is `Send + Sync`.
unsafe impl Send for ThreadRef {}
// SAFETY: as above.
unsafe impl Sync for ThreadRef {}

impl fmt::Debug for ThreadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadRef")
            .field("id", &self.id())
            .field("cpu", &self.cpu())
            .finish()
    }
}

impl ThreadRef {
    pub(crate) fn from_packet(p: Arc<dyn CtlOwner>) -> ThreadRef {
        let ctl = std::ptr::NonNull::from(p.ctl());
        ThreadRef { p, ctl }
    }

    /// The thread's control block.
    #[inline]
    fn ctl(&self) -> &Ctl {
        // SAFETY: points into the allocation `self.p` keeps alive for as
        // long as `self` lives.
        unsafe { self.ctl.as_ref() }
    }

    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId::from_raw(self.ctl().tid)
    }

    /// The CPU that owns the thread now (a snapshot: it may migrate).
    pub fn cpu(&self) -> usize {
        self.ctl().cpu.load(Ordering::Acquire)
    }

    /// Whether the thread has not finished yet (a snapshot): false once
    /// its function returned or panicked, or it was cancelled.
    pub fn is_alive(&self) -> bool {
        !self.p.finished()
    }

    /// Makes a descheduled thread runnable (`lwkt_schedule`): one that
    /// called [`CurThread::park`] or was [`deschedule`](Self::deschedule)d.
    /// Scheduling a higher-priority interrupt thread on the caller's own
    /// CPU runs it before this returns (preemption). On a running thread
    /// it leaves a permit its next `park` consumes; on a sleeping thread it
    /// ends the sleep early (the sleep returns `Ok`, a spurious wakeup).
    #[doc(alias = "lwkt_schedule")]
    #[inline]
    pub fn schedule(&self) {
        // The common case, a thread of this CPU: no message, no allocation.
        let ctl = self.ctl();
        let done = with_current(|core| {
            if !ctl.is_of(&core.machine)
                || ctl.cpu.load(Ordering::Acquire) != core.id
                || ctl.migrating.load(Ordering::Acquire)
            {
                return false;
            }
            if let Some(t) = TdPtr::from_raw(ctl.td.load(Ordering::Acquire)) {
                core.schedule_local(t);
                core.preempt_check();
            }
            true
        });
        if done != Some(true) {
            self.op(OpKind::Schedule);
        }
    }

    /// Takes the thread off its run queue until the next
    /// [`schedule`](Self::schedule) (`lwkt_deschedule`). A running (or
    /// preempted) thread parks at its next switch instead of being
    /// re-queued; a sleeping one is unaffected.
    #[doc(alias = "lwkt_deschedule")]
    pub fn deschedule(&self) {
        self.op(OpKind::Deschedule);
    }

    /// Changes the thread's priority (`lwkt_setpri`), re-queueing it if it
    /// is runnable.
    #[doc(alias = "lwkt_setpri")]
    pub fn set_priority(&self, p: Priority) {
        self.op(OpKind::SetPriority(p.get()));
    }

    /// Interrupts the thread's current or next interruptible sleep, which
    /// then returns [`SleepError::Interrupted`](crate::SleepError); a wait
    /// in [`CurThread::wait_fd`](crate::CurThread::wait_fd) (and so any
    /// blocking `lwkt::net` call) is one, and returns
    /// `io::ErrorKind::Interrupted`.
    pub fn interrupt(&self) {
        self.ctl().interrupt.store(true, Ordering::Release);
        self.op(OpKind::Interrupt);
    }

    /// Asks the thread to look at its upper-layer requests at its next
    /// switch point (sets UPCALL on its CPU); with `kick`, an
    /// interruptible sleep it is in ends as interrupted. Used by the LWP
    /// layer for suspend, stop, signals and exit.
    pub(crate) fn upcall(&self, kick: bool) {
        self.op(OpKind::Upcall { kick });
    }

    /// Carries out a request: on the owning CPU when that is this one,
    /// else as a message (from outside when the caller is not a thread of
    /// the thread's runtime).
    #[inline(never)]
    fn op(&self, kind: OpKind) {
        let ctl = self.ctl();
        let mine = with_current(|core| ctl.is_of(&core.machine)) == Some(true);
        let op = |kind| {
            Msg::Thread(Box::new(ThreadOp {
                p: self.p.clone(),
                kind,
            }))
        };
        if !mine {
            // An error means it is shutting down: the thread is being
            // cancelled, nothing left to do.
            let _ = ctl
                .machine
                .send_external(ctl.cpu.load(Ordering::Acquire), op(kind));
            return;
        }
        with_current(|core| {
            let owner = ctl.cpu.load(Ordering::Acquire);
            if owner == core.id && !ctl.migrating.load(Ordering::Acquire) {
                // thread_op finds an exited thread gone and does nothing.
                core.thread_op(Box::new(ThreadOp {
                    p: self.p.clone(),
                    kind,
                }));
            } else {
                core.send(owner, op(kind));
            }
            core.preempt_check();
        });
    }

    /// Pulls a descheduled thread to the calling thread's CPU: the owning
    /// CPU gives it away and this CPU acquires it (`lwkt_giveaway` /
    /// `lwkt_acquire`). It stays descheduled there until scheduled. Waits
    /// (sleeping) for the owner's answer.
    ///
    /// # Errors
    /// [`Error::ForeignRuntime`] if the thread belongs to another runtime
    /// (threads cannot move between runtimes); [`Error::NotDescheduled`]
    /// if it is running, runnable or sleeping; [`Error::NoSuchThread`] if
    /// it has exited; [`Error::Shutdown`] if the runtime shut down first.
    ///
    /// # Safety
    /// The pulled thread's stack moves to another OS thread, so every value
    /// live on it must be `Send` (see [`CurThread::migrate`]); the caller
    /// vouches for the thread it pulls.
    #[doc(alias = "lwkt_giveaway")]
    #[doc(alias = "lwkt_acquire")]
    pub unsafe fn pull(&self, td: &mut CurThread) -> Result<(), Error> {
        let ctl = self.ctl();
        if !ctl.is_of(&td.core().machine) {
            return Err(Error::ForeignRuntime);
        }
        if ctl.tid == td.id().as_u64() {
            return Err(Error::NotDescheduled); // it is running: us
        }
        let reply = Reply::new();
        let op = Box::new(ThreadOp {
            p: self.p.clone(),
            kind: OpKind::GiveAway {
                to: td.cpu(),
                reply: reply.clone(),
            },
        });
        {
            let core = td.core();
            let owner = ctl.cpu.load(Ordering::Acquire);
            if owner == core.id {
                core.thread_op(op);
            } else {
                core.send(owner, Msg::Thread(op));
            }
        }
        td.sleep_until(&*reply, Sleep::default().wmesg("pull"), || {
            reply.state.load(Ordering::SeqCst) != Reply::PENDING
        })
        .map_err(|_| Error::Shutdown)?;
        match reply.state.load(Ordering::SeqCst) {
            Reply::DONE => Ok(()),
            Reply::REFUSED => Err(Error::NotDescheduled),
            _ => Err(Error::NoSuchThread),
        }
    }
}

/// A critical section (`crit_enter` .. `crit_exit`): while any is held the
/// thread is not preempted and messages to its CPU wait. Sections nest.
/// Leaving the outermost one runs what was deferred — pending messages and
/// a pending preemption — but never switches the thread away for a
/// reschedule alone (a wanted reschedule waits for the next
/// `maybe_yield`), so borrows of token data stay valid across the end of a
/// section.
///
/// Blocking inside a critical section is allowed; the count belongs to the
/// thread, so other threads run normally meanwhile.
///
/// # Panics
/// Dropping the guard on another lwkt thread than the one that entered the
/// section (it is `!Send`, but thread-local storage is shared by the
/// threads of a CPU) panics, and leaves both threads' counts alone.
/// Dropped outside the runtime, it does nothing.
#[must_use = "the critical section ends when the guard is dropped"]
pub struct CritSection {
    /// The thread that entered the section.
    tid: u64,
    _not_send: PhantomData<*mut ()>,
}

impl CritSection {
    pub(crate) fn new(tid: u64) -> CritSection {
        CritSection {
            tid,
            _not_send: PhantomData,
        }
    }
}

impl fmt::Debug for CritSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CritSection")
            .field("thread", &ThreadId::from_raw(self.tid))
            .finish()
    }
}

impl Drop for CritSection {
    #[doc(alias = "crit_exit")]
    fn drop(&mut self) {
        // Outside the runtime (a guard smuggled into thread-local storage,
        // dropped when the CPU's OS thread ends): its thread is gone or
        // unreachable, and there is nothing to undo.
        let Some(outcome) = with_current(|core| {
            let Some(t) = core.current() else {
                return Err("outside any lwkt thread");
            };
            // SAFETY: the running thread is alive while it runs.
            let td = unsafe { t.td() };
            if td.tid.get() != self.tid {
                return Err("by a thread other than the one that entered it");
            }
            let n = td.crit.get();
            if n == 0 {
                return Err("more times than it was entered");
            }
            td.crit.set(n - 1);
            if n == 1 {
                core.crit_exit_deferred();
            }
            Ok(())
        }) else {
            return;
        };
        if let Err(why) = outcome {
            if !std::thread::panicking() {
                panic!(
                    "lwkt: critical section of {} left {why}",
                    ThreadId::from_raw(self.tid)
                );
            }
        }
    }
}
