//! Explicit scheduling, preemption and migration on the owning CPU
//! (`lwkt_schedule`, `lwkt_deschedule`, `lwkt_setpri`, `lwkt_preempt`,
//! `lwkt_giveaway` / `lwkt_acquire`, `lwkt_setcpu_self`).
//!
//! Operations on a thread always run on the CPU that owns it: a request
//! from elsewhere travels there by IPI. A request that reaches a CPU which
//! no longer owns the thread is forwarded to the owner `Ctl::cpu` names;
//! one that reaches the new owner before the thread itself is kept until
//! the hand-off arrives.
//!
//! Migration protocol (`td.migrate(cpu)`):
//! 1. the thread marks itself MIGRATING and switches out (releasing its
//!    tokens); it is on no queue;
//! 2. the old CPU, now in its scheduler, drops the thread's timer entries
//!    and sleep-queue registration, unlinks it, sets `Ctl::migrating` and
//!    `Ctl::cpu = new`, and sends the thread structure in an Adopt IPI;
//! 3. the new CPU links it, clears `migrating`, runs deferred requests,
//!    and makes it runnable: its tokens are acquired there before it runs.
//!
//! The thread is fully switched out on the old CPU before the new CPU can
//! see it, because the Adopt message is sent only after the switch.

use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use corosensei::CoroutineResult;

use super::cpu::{Cpu, IpiMsg};
use super::td::{tdf, PacketCtl, TdPtr, Wake};

/// A request about one thread.
pub(crate) struct ThreadOp {
    pub(crate) p: Arc<dyn PacketCtl>,
    pub(crate) kind: OpKind,
}

pub(crate) enum OpKind {
    /// `lwkt_schedule`: make a descheduled thread runnable.
    Schedule,
    /// `lwkt_deschedule`: take it off the run queue until scheduled.
    Deschedule,
    /// `lwkt_setpri`.
    SetPriority(u8),
    /// Interrupt its interruptible sleep.
    Interrupt,
    /// `lwkt_giveaway`: hand a descheduled thread to CPU `to`.
    GiveAway { to: usize, reply: Arc<Reply> },
}

/// The answer to a request made by a waiting thread.
pub(crate) struct Reply {
    /// 0 pending, 1 done, 2 refused (thread not descheduled), 3 gone.
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

    fn answer(self: &Arc<Self>, v: u8) {
        self.state.store(v, Ordering::SeqCst);
        crate::wakeup(&**self);
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

impl Cpu {
    /// Carries out a thread request on this CPU, or forwards it.
    pub(crate) fn thread_op(&self, op: Box<ThreadOp>) {
        let ctl = op.p.ctl();
        let owner = ctl.cpu.load(Ordering::Acquire);
        if owner != self.id {
            self.send(owner, IpiMsg::Thread(op));
            return;
        }
        if ctl.migrating.load(Ordering::Acquire) {
            // The thread is on its way here: keep the request until the
            // hand-off arrives.
            // SAFETY: only this CPU touches its deferred list.
            unsafe { (*self.deferred_ops.get()).push(op) };
            return;
        }
        let Some(t) = TdPtr::from_raw(ctl.td.load(Ordering::Acquire)) else {
            if let OpKind::GiveAway { reply, .. } = &op.kind {
                reply.answer(Reply::GONE);
            }
            return; // exited
        };
        let td = t.td();
        match op.kind {
            OpKind::Schedule => self.schedule_local(t),
            OpKind::Deschedule => {
                if td.has(tdf::RUNQ) {
                    self.runq.remove(t);
                    self.forget_candidate(t);
                    td.set(tdf::PARKED);
                } else if td.has(tdf::RUNNING | tdf::PREEMPTED) {
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
            OpKind::GiveAway { to, reply } => {
                if td.has(tdf::PARKED) {
                    self.give_away(t, to, false);
                    reply.answer(Reply::DONE);
                } else {
                    reply.answer(Reply::REFUSED);
                }
            }
        }
    }

    /// `lwkt_schedule` on the owning CPU.
    pub(crate) fn schedule_local(&self, t: TdPtr) {
        let td = t.td();
        if td.has(tdf::PARKED) {
            td.clear(tdf::PARKED);
            self.make_runnable(t);
        } else if td.has(tdf::SLEEPING) {
            // A raw schedule ends a sleep early: a spurious wakeup.
            self.wake(t, Wake::Wakeup);
        } else if !td.has(tdf::RUNQ) {
            // Running (or preempted): its next park() returns at once.
            td.set(tdf::PERMIT);
            td.clear(tdf::DESCHED);
        }
    }

    pub(crate) fn set_priority_local(&self, t: TdPtr, p: u8) {
        let td = t.td();
        if td.has(tdf::RUNQ) {
            self.runq.remove(t);
            td.pri.set(p);
            self.make_runnable(t);
        } else {
            td.pri.set(p);
        }
    }

    /// Hands `t` (switched out, on no queue) to CPU `to`
    /// (`lwkt_giveaway`). `runnable`: queue it there at once.
    pub(crate) fn give_away(&self, t: TdPtr, to: usize, runnable: bool) {
        let td = t.td();
        if td.timer_refs.get() != 0 {
            self.drop_timers_of(t);
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
        self.send(to, IpiMsg::Adopt(Adopt { td: t, runnable }));
    }

    /// Takes ownership of a thread handed over by another CPU
    /// (`lwkt_acquire`).
    pub(crate) fn adopt(&self, a: Adopt) {
        let t = a.td;
        let td = t.td();
        td.cpu.set(self);
        self.link_all(t);
        if let Some(ctl) = td.ctl() {
            ctl.migrating.store(false, Ordering::SeqCst);
        }
        if self.shutting_down.get() {
            td.set(tdf::CANCEL);
        }
        if a.runnable {
            td.clear(tdf::PARKED);
            self.make_runnable(t);
        } else {
            td.set(tdf::PARKED);
        }
        // Requests that arrived before the thread did.
        // SAFETY: only this CPU touches its deferred list.
        let ops = std::mem::take(unsafe { &mut *self.deferred_ops.get() });
        for op in ops {
            self.thread_op(op);
        }
    }

    /// What happens after a thread switched back to whoever resumed it
    /// (the scheduler, or a thread it preempted). The common case, a plain
    /// switch-out, costs one flag test.
    #[inline]
    pub(crate) fn after_switch(&self, t: TdPtr, res: CoroutineResult<(), ()>) {
        match res {
            CoroutineResult::Yield(()) if !t.td().has(tdf::MIGRATING) => {}
            res => self.after_switch_slow(t, res),
        }
    }

    #[cold]
    #[inline(never)]
    fn after_switch_slow(&self, t: TdPtr, res: CoroutineResult<(), ()>) {
        let td = t.td();
        match res {
            CoroutineResult::Return(()) => self.thread_exited(t),
            CoroutineResult::Yield(()) => {
                if td.has(tdf::MIGRATING) {
                    td.clear(tdf::MIGRATING);
                    let to = td.migrate_to.get();
                    if self.stopping() {
                        // Shutting down: stay here and be cancelled.
                        self.make_runnable(t);
                    } else {
                        self.give_away(t, to, true);
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------
    // Preemption
    // ---------------------------------------------------------------

    /// Notes that `t`, just made runnable, might preempt the running
    /// thread. The switch itself happens at the next safe point
    /// ([`preempt_check`](Self::preempt_check)), never in the middle of a
    /// queue operation.
    #[inline]
    pub(crate) fn note_candidate(&self, t: TdPtr) {
        let td = t.td();
        if !td.has(tdf::INTTHREAD) {
            return;
        }
        let Some(cur) = self.current() else { return };
        if td.pri.get() <= cur.td().pri.get() {
            return;
        }
        match TdPtr::from_raw(self.preempt_cand.get()) {
            Some(c) if c.td().pri.get() >= td.pri.get() => {}
            _ => self.preempt_cand.set(t.as_ptr()),
        }
    }

    pub(crate) fn forget_candidate(&self, t: TdPtr) {
        if self.preempt_cand.get() == t.as_ptr() {
            self.preempt_cand.set(ptr::null_mut());
        }
    }

    /// Runs a pending preemption now if it is allowed (a safe point).
    #[inline]
    pub(crate) fn preempt_check(&self) {
        if !self.preempt_cand.get().is_null() {
            self.preempt_slow();
        }
    }

    /// Not `#[cold]`: for an interrupt thread this is the path that
    /// matters (`preempt_latency`).
    #[inline(never)]
    fn preempt_slow(&self) {
        while let Some(b) = TdPtr::from_raw(self.preempt_cand.get()) {
            let Some(a) = self.current() else {
                // Scheduler context: it picks the highest priority anyway.
                self.preempt_cand.set(ptr::null_mut());
                return;
            };
            let (atd, btd) = (a.td(), b.td());
            if atd.crit.get() > 0 {
                // Deferred to the end of the critical section.
                self.stats().preempt_misses.bump();
                return;
            }
            self.preempt_cand.set(ptr::null_mut());
            if !btd.has(tdf::RUNQ) || self.stopping() || self.shutting_down.get() {
                self.stats().preempt_weird.bump();
                continue;
            }
            if btd.tok_used.get() != 0 || btd.pri.get() <= atd.pri.get() {
                // It holds tokens (which we might hold), or is no longer
                // more urgent: it runs when the scheduler picks it.
                self.stats().preempt_misses.bump();
                continue;
            }
            self.stats().preempt_hits.bump();
            self.run_nested(a, b);
        }
    }

    /// Runs the queued thread `b` on top of the running thread `a` (on
    /// a's stack, which stays suspended under b) until b switches back:
    /// preemption, and a join that runs its target directly. `a` keeps its
    /// tokens throughout.
    pub(crate) fn run_nested(&self, a: TdPtr, b: TdPtr) {
        self.runq.remove(b);
        self.run_nested_dequeued(a, b);
    }

    /// `run_nested` for a thread already taken off the run queue (with its
    /// tokens, if any, already acquired).
    pub(crate) fn run_nested_dequeued(&self, a: TdPtr, b: TdPtr) {
        let atd = a.td();
        atd.flags
            .set((atd.flags.get() & !tdf::RUNNING) | tdf::PREEMPTED);
        let res = self.run_nested_core(a, b);
        atd.flags
            .set((atd.flags.get() & !tdf::PREEMPTED) | tdf::RUNNING);
        self.after_switch(b, res);
    }

    /// The switch itself of `run_nested_dequeued`: resumes `b` on top of
    /// `a` and returns when b switches out. The caller keeps a's flags
    /// (PREEMPTED while b runs) and calls `after_switch` for b.
    #[inline]
    pub(crate) fn run_nested_core(&self, a: TdPtr, b: TdPtr) -> CoroutineResult<(), ()> {
        let btd = b.td();
        self.forget_candidate(b);
        self.stats().switches.bump();
        btd.flags.set(btd.flags.get() | tdf::RUNNING | tdf::NESTED);
        self.cur.set(b.as_ptr());
        // SAFETY: `b` is not running (it was queued) and only the context
        // resuming a thread touches its coroutine.
        let coro = unsafe { &mut *btd.coro.get() };
        let res = coro
            .as_mut()
            .expect("runnable thread has no coroutine")
            .resume(());
        self.cur.set(a.as_ptr());
        btd.flags
            .set(btd.flags.get() & !(tdf::RUNNING | tdf::NESTED));
        res
    }

    /// Leaving the outermost critical section: run what was deferred
    /// (IPIs and a preemption). Never switches the thread out, so borrows
    /// of token data stay valid.
    pub(crate) fn crit_exit_deferred(&self) {
        self.poll_attention();
        self.preempt_check();
    }

    /// Removes `t`'s timer entries (it is leaving this CPU).
    fn drop_timers_of(&self, t: TdPtr) {
        // SAFETY: only this CPU touches its timer heap; no other borrow is
        // live across this call.
        let heap = unsafe { &mut *self.timers_ptr() };
        let before = heap.len();
        heap.retain(|e| e.td != t);
        let removed = before - heap.len();
        self.ntimers_sub(removed);
        t.td().timer_refs.set(0);
    }
}
