//! Explicit scheduling and migration, carried out on the CPU that owns the
//! thread (`lwkt_schedule`, `lwkt_deschedule`, `lwkt_setpri`,
//! `lwkt_giveaway` / `lwkt_acquire`, `lwkt_setcpu_self`'s hand-off).
//!
//! A request from elsewhere travels to the owner by message. One that
//! reaches a CPU which no longer owns the thread is forwarded to the owner
//! `Ctl::cpu` names; one that reaches the new owner before the thread
//! itself is kept until the hand-off arrives.
//!
//! Migration protocol (`td.migrate(cpu)`):
//! 1. the thread marks itself MIGRATING and switches out (releasing its
//!    tokens); it is on no queue;
//! 2. the old CPU's loop drops the thread's timer entries and sleep-queue
//!    registration, unlinks it, sets `Ctl::migrating` and `Ctl::cpu = new`,
//!    and sends the thread structure in an `Adopt` message;
//! 3. the new CPU links it, clears `migrating`, carries out requests that
//!    arrived first, and makes it runnable: its tokens are acquired there
//!    before it runs.
//!
//! The thread is fully switched out on the old CPU before the new CPU can
//! see it, because the `Adopt` message is sent only after the switch.

use super::core::Core;
use super::ctl::CtlOwner;
use super::machine::Msg;
use super::td::{tdf, TdPtr, Wake};
use crate::sync::atomic::{AtomicU8, Ordering};
use crate::sync::Arc;
use crate::trace::{trace_event, wake};

/// A request about one thread.
pub(crate) struct ThreadOp {
    /// The thread's packet (keeps its control block alive).
    pub(crate) p: Arc<dyn CtlOwner>,
    pub(crate) kind: OpKind,
}

/// What a [`ThreadOp`] asks for.
pub(crate) enum OpKind {
    /// `lwkt_schedule`: make a descheduled thread runnable.
    Schedule,
    /// `lwkt_deschedule`: take it off the run queue until scheduled.
    Deschedule,
    /// `lwkt_setpri`.
    SetPriority(u8),
    /// Interrupt its interruptible sleep.
    Interrupt,
    /// An upper layer's request (the LWP layer's suspend, stop, signal,
    /// exit): mark the thread UPCALL so it looks at its requests at its
    /// next switch point, and with `kick`, end an interruptible sleep.
    Upcall { kick: bool },
    /// `lwkt_giveaway`: hand a descheduled thread to CPU `to`.
    GiveAway { to: usize, reply: Arc<Reply> },
}

/// The answer to a request made by a waiting thread.
pub(crate) struct Reply {
    /// One of the constants below.
    pub(crate) state: AtomicU8,
}

impl Reply {
    pub(crate) const PENDING: u8 = 0;
    pub(crate) const DONE: u8 = 1;
    pub(crate) const REFUSED: u8 = 2;
    pub(crate) const GONE: u8 = 3;

    pub(crate) fn new() -> Arc<Reply> {
        Arc::new(Reply {
            state: AtomicU8::new(Self::PENDING),
        })
    }

    fn answer(self: &Arc<Self>, core: &Core, v: u8) {
        self.state.store(v, Ordering::SeqCst);
        // The asker sleeps on the reply, on a CPU of this runtime.
        super::synch::wakeup(&core.machine, Some(core), Arc::as_ptr(self) as usize, false);
    }
}

/// A thread structure in flight between CPUs.
pub(crate) struct Adopt {
    pub(crate) td: TdPtr,
    pub(crate) runnable: bool,
}

// SAFETY: the thread structure is owned by exactly one CPU at a time; while
// in this message it is owned by the message (no CPU links it), and its
// coroutine's stack moves with it under `migrate`'s contract that every
// value live across the switch is Send.
unsafe impl Send for Adopt {}

impl Core {
    /// Carries out a thread request on this CPU, or forwards it.
    pub(crate) fn thread_op(&self, op: Box<ThreadOp>) {
        let ctl = op.p.ctl();
        let owner = ctl.cpu.load(Ordering::Acquire);
        if owner != self.id {
            self.send(owner, Msg::Thread(op));
            return;
        }
        if ctl.migrating.load(Ordering::Acquire) {
            // The thread is on its way here: keep the request until the
            // hand-off arrives.
            self.deferred_ops.borrow_mut().push(op);
            return;
        }
        let Some(t) = TdPtr::from_raw(ctl.td.load(Ordering::Acquire)) else {
            if let OpKind::GiveAway { reply, .. } = &op.kind {
                reply.answer(self, Reply::GONE);
            }
            return; // exited
        };
        // SAFETY: `Ctl::td` is non-null only while the thread exists, and
        // this CPU owns it (checked above, on this CPU, which is the only
        // one that changes ownership away from itself).
        let td = unsafe { t.td() };
        match op.kind {
            OpKind::Schedule => self.schedule_local(t),
            OpKind::Deschedule => {
                if td.has(tdf::RUNQ) && !td.has(tdf::PREEMPTED) {
                    self.runq.remove(t);
                    self.forget_candidate(t);
                    td.set(tdf::PARKED);
                    td.wmesg.set("park");
                } else if td.has(tdf::RUNNING | tdf::PREEMPTED | tdf::HANDOFF) {
                    // It parks at its next switch (a preempted thread is
                    // in the middle of something and keeps its tokens: it
                    // must not be parked there).
                    td.set(tdf::DESCHED);
                }
                td.clear(tdf::PERMIT);
            }
            OpKind::SetPriority(p) => self.set_priority_local(t, p),
            OpKind::Interrupt => {
                if td.has(tdf::SLEEPING) && td.has(tdf::SINTR) {
                    let ctl = op.p.ctl();
                    if ctl.interrupt.swap(false, Ordering::AcqRel) {
                        self.wake(t, Wake::Interrupt);
                    }
                }
            }
            OpKind::Upcall { kick } => self.upcall_local(t, kick),
            OpKind::GiveAway { to, reply } => {
                if td.has(tdf::PARKED) {
                    self.give_away(t, to, false);
                    reply.answer(self, Reply::DONE);
                } else {
                    reply.answer(self, Reply::REFUSED);
                }
            }
        }
    }

    /// [`OpKind::Upcall`] on the owning CPU: the flag is the one bit the
    /// thread side tests after every switch (no cost to threads that never
    /// get one); a kicked interruptible sleep ends as interrupted, then the
    /// thread looks at its requests.
    pub(crate) fn upcall_local(&self, t: TdPtr, kick: bool) {
        // SAFETY: called with a thread this CPU owns (thread_op checked).
        let td = unsafe { t.td() };
        td.set(tdf::UPCALL);
        if self.cur.get() == t.as_ptr() {
            // Running now (the request came from the thread itself, or by
            // a message it polled): its next maybe_yield must look.
            self.poke_maybe_yield();
        }
        if kick && td.has(tdf::SLEEPING) && td.has(tdf::SINTR) {
            self.wake(t, Wake::Interrupt);
        }
    }

    /// `lwkt_schedule` on the owning CPU.
    pub(crate) fn schedule_local(&self, t: TdPtr) {
        // SAFETY: the caller found `t` owned by this CPU.
        let td = unsafe { t.td() };
        if td.has(tdf::PARKED) {
            td.clear(tdf::PARKED);
            trace_event!(self, tr_wakeup(td, wake::SCHEDULE, 0));
            self.make_runnable(t);
        } else if td.has(tdf::SLEEPING) {
            // A raw schedule ends a sleep early: a spurious wakeup.
            self.wake(t, Wake::Wakeup);
        } else if !td.has(tdf::RUNQ) || td.has(tdf::PREEMPTED) {
            // Running (or preempted): its next park() returns at once.
            td.set(tdf::PERMIT);
            td.clear(tdf::DESCHED);
        }
    }

    /// `lwkt_setpri` on the owning CPU: re-queues a runnable thread in its
    /// new level (a preempted one at the head).
    pub(crate) fn set_priority_local(&self, t: TdPtr, p: u8) {
        // SAFETY: the caller found `t` owned by this CPU.
        let td = unsafe { t.td() };
        if td.has(tdf::RUNQ) {
            self.runq.remove(t);
            td.pri.set(p);
            if td.has(tdf::PREEMPTED) {
                self.runq.push_front(t);
            } else {
                self.make_runnable(t);
            }
        } else {
            td.pri.set(p);
        }
    }

    /// Hands `t` (switched out, on no queue) to CPU `to`
    /// (`lwkt_giveaway`). `runnable`: queue it there at once.
    pub(crate) fn give_away(&self, t: TdPtr, to: usize, runnable: bool) {
        // SAFETY: the caller found `t` switched out on this CPU.
        let td = unsafe { t.td() };
        if td.timer_refs.get() != 0 {
            self.timers.remove_thread(t);
            td.timer_refs.set(0);
        }
        if td.has(tdf::TSLEEPQ) {
            // An interlocked registration cannot follow the thread; make its
            // next sleep return at once instead of missing a wakeup.
            self.sleepq.remove(t);
            td.set(tdf::WOKEN);
        }
        self.forget_candidate(t);
        self.unlink_all(t);
        if let Some(ctl) = td.ctl() {
            ctl.migrating.store(true, Ordering::SeqCst);
            ctl.cpu.store(to, Ordering::SeqCst);
        }
        self.stats().migrations.bump();
        trace_event!(self, tr_migrate_out(td, to));
        self.send(to, Msg::Adopt(Adopt { td: t, runnable }));
    }

    /// Takes ownership of a thread handed over by another CPU
    /// (`lwkt_acquire`).
    pub(crate) fn adopt(&self, a: Adopt) {
        let t = a.td;
        // SAFETY: the message owned the structure; now this CPU does, and
        // links it on its all-list below.
        let td = unsafe { t.td() };
        td.core.set(self);
        self.link_all(t);
        if let Some(ctl) = td.ctl() {
            ctl.migrating.store(false, Ordering::SeqCst);
        }
        if self.shutting_down.get() || self.stopping() {
            td.set(tdf::CANCEL);
        }
        trace_event!(self, tr_migrate_in(td, a.runnable));
        if a.runnable {
            td.clear(tdf::PARKED);
            self.make_runnable(t);
        } else {
            td.set(tdf::PARKED);
        }
        // Requests that arrived before the thread did.
        let ops = std::mem::take(&mut *self.deferred_ops.borrow_mut());
        for op in ops {
            self.thread_op(op);
        }
    }
}
