//! Explicit scheduling: references to other threads ([`ThreadRef`]),
//! critical sections ([`CritSection`]) and migration.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Error;
use crate::priority::Priority;
use crate::sched::cpu::{current_cpu, IpiMsg};
use crate::sched::ops::{OpKind, Reply, ThreadOp};
use crate::sched::td::{tdf, PacketCtl, TdPtr};
use crate::thread::{CurThread, Sleep, ThreadId};

/// A reference to a thread that keeps its control block alive
/// (`lwkt_hold`; dropping it is `lwkt_rele`). It can outlive the thread:
/// operations on an exited thread do nothing. `Send + Sync + Clone`.
///
/// Every operation is carried out by the CPU that owns the thread; from
/// another CPU (or from outside the runtime) it travels there by IPI and
/// takes effect shortly after the call returns.
#[derive(Clone)]
pub struct ThreadRef {
    p: Arc<dyn PacketCtl>,
}

impl fmt::Debug for ThreadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadRef")
            .field("id", &self.id())
            .field("cpu", &self.cpu())
            .finish()
    }
}

impl ThreadRef {
    pub(crate) fn from_packet(p: Arc<dyn PacketCtl>) -> ThreadRef {
        ThreadRef { p }
    }

    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId::from_raw(self.p.ctl().tid)
    }

    /// The CPU that owns the thread now (a snapshot: it may migrate).
    pub fn cpu(&self) -> usize {
        self.p.ctl().cpu.load(Ordering::Acquire)
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
    pub fn schedule(&self) {
        self.op(OpKind::Schedule);
    }

    /// Takes the thread off its run queue until the next
    /// [`schedule`](Self::schedule) (`lwkt_deschedule`). A running thread
    /// parks at its next switch instead of being re-queued; a sleeping one
    /// is unaffected.
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

    /// Interrupts the thread's current or next interruptible sleep.
    pub fn interrupt(&self) {
        self.p.ctl().interrupt.store(true, Ordering::Release);
        self.op(OpKind::Interrupt);
    }

    fn op(&self, kind: OpKind) {
        let ctl = self.p.ctl();
        let owner = ctl.cpu.load(Ordering::Acquire);
        match current_cpu() {
            Some(cpu) if Arc::ptr_eq(&cpu.shared, &ctl.shared) => {
                if owner == cpu.id && !ctl.migrating.load(Ordering::Acquire) {
                    // Local: no message, no allocation.
                    if let Some(t) = TdPtr::from_raw(ctl.td.load(Ordering::Acquire)) {
                        match kind {
                            OpKind::Schedule => cpu.schedule_local(t),
                            other => cpu.thread_op(Box::new(ThreadOp {
                                p: self.p.clone(),
                                kind: other,
                            })),
                        }
                        cpu.preempt_check();
                    }
                } else {
                    cpu.send(
                        owner,
                        IpiMsg::Thread(Box::new(ThreadOp {
                            p: self.p.clone(),
                            kind,
                        })),
                    );
                }
            }
            _ => {
                let _ = ctl.shared.send_external(
                    owner,
                    IpiMsg::Thread(Box::new(ThreadOp {
                        p: self.p.clone(),
                        kind,
                    })),
                );
            }
        }
    }

    /// Pulls a descheduled thread to the calling thread's CPU: the owning
    /// CPU gives it away and this CPU acquires it (`lwkt_giveaway` /
    /// `lwkt_acquire`). It stays descheduled there until scheduled. Waits
    /// (sleeping) for the owner's answer.
    ///
    /// # Errors
    /// [`Error::NotDescheduled`] if the thread is running, runnable or
    /// sleeping; [`Error::NoSuchThread`] if it has exited.
    ///
    /// # Safety
    /// The pulled thread's stack moves to another OS thread, so every value
    /// live on it must be `Send` (see [`CurThread::migrate`]); the caller
    /// vouches for the thread it pulls.
    #[doc(alias = "lwkt_giveaway")]
    #[doc(alias = "lwkt_acquire")]
    pub unsafe fn pull(&self, td: &mut CurThread) -> Result<(), Error> {
        let reply = Reply::new();
        let to = td.cpu();
        let op = Box::new(ThreadOp {
            p: self.p.clone(),
            kind: OpKind::GiveAway {
                to,
                reply: reply.clone(),
            },
        });
        let owner = self.p.ctl().cpu.load(Ordering::Acquire);
        {
            let cpu = td.cpu_ref();
            if owner == cpu.id {
                cpu.thread_op(op);
            } else {
                cpu.send(owner, IpiMsg::Thread(op));
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
/// thread is not preempted and IPIs to its CPU wait. Sections nest. Leaving
/// the outermost one runs what was deferred — pending IPIs and a pending
/// preemption — but never switches the thread away (a wanted reschedule
/// waits for the next `maybe_yield`), so borrows of token data stay valid
/// across the end of a section.
///
/// Blocking inside a critical section is allowed; the count belongs to the
/// thread, so other threads run normally meanwhile.
#[must_use = "the critical section ends when the guard is dropped"]
pub struct CritSection {
    td: TdPtr,
    _not_send: PhantomData<*mut ()>,
}

impl fmt::Debug for CritSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CritSection").finish_non_exhaustive()
    }
}

impl Drop for CritSection {
    fn drop(&mut self) {
        let td = self.td.td();
        let n = td.crit.get();
        if n == 0 {
            if std::thread::panicking() {
                return;
            }
            panic!("lwkt: critical section count underflow");
        }
        td.crit.set(n - 1);
        if n == 1 {
            if let Some(cpu) = current_cpu() {
                if cpu.current() == Some(self.td) {
                    cpu.crit_exit_deferred();
                }
            }
        }
    }
}

impl CurThread {
    /// Enters a critical section (`crit_enter`); it ends when the returned
    /// guard is dropped (`crit_exit`).
    pub fn crit_enter(&self) -> CritSection {
        let td = self.td_ptr().td();
        td.crit.set(td.crit.get() + 1);
        CritSection {
            td: self.td_ptr(),
            _not_send: PhantomData,
        }
    }

    /// Critical section depth (0 outside any).
    pub fn crit_count(&self) -> u32 {
        self.td_ptr().td().crit.get()
    }

    /// A reference to this thread, for others to schedule it.
    pub fn thread_ref(&self) -> ThreadRef {
        ThreadRef {
            p: self
                .td_ptr()
                .td()
                .packet_arc()
                .expect("every lwkt thread has a control block"),
        }
    }

    /// Moves this thread to CPU `cpu` (`lwkt_setcpu_self`). The thread is
    /// fully switched out here (releasing its tokens) before the new CPU
    /// queues it; it returns running on `cpu` with its tokens re-acquired
    /// there. Timeouts and interlocked sleep registrations do not follow:
    /// a pending `sleep_interlock` turns into a spurious wakeup.
    ///
    /// # Errors
    /// [`Error::InvalidCpu`] if the runtime has no such CPU.
    ///
    /// # Safety
    /// The thread's whole stack moves to another OS thread. Every value
    /// live on it across this call must therefore be `Send`: in particular
    /// no reference into thread-local storage (`thread_local!`, which
    /// belongs to the old CPU's OS thread), no `Rc` shared with other
    /// threads of the old CPU, and no guard of an OS-level lock that must
    /// be released by the OS thread that took it (std's `MutexGuard`). Token
    /// guards are fine: tokens are released and re-acquired by design.
    #[doc(alias = "lwkt_setcpu_self")]
    #[doc(alias = "lwkt_migratecpu")]
    pub unsafe fn migrate(&mut self, cpu: usize) -> Result<(), Error> {
        let n = self.ncpus();
        if cpu >= n {
            return Err(Error::InvalidCpu { cpu, ncpus: n });
        }
        if cpu == self.cpu() || self.td_ptr().td().has(tdf::CANCEL) {
            return Ok(());
        }
        let td = self.td_ptr().td();
        td.migrate_to.set(cpu);
        td.clear(tdf::RUNNING);
        td.set(tdf::MIGRATING);
        td.wmesg.set("migrate");
        self.switch_out_raw();
        Ok(())
    }
}
