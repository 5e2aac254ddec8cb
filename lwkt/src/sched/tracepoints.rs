//! The scheduler's trace event sites: what each records (the buffer and
//! the encoding are in `crate::trace`). Every site is one line,
//! `trace_event!(self, tr_…(…))`, which tests the CPU's owner-only switch
//! and calls one of these methods only while tracing is on. Each runs on
//! the CPU's own OS thread.
//!
//! The methods are out of line (`#[cold]`), except the two of the switch
//! itself, [`Core::tr_switch_in`] and [`Core::tr_switch_out`], which every
//! yield runs: inlined behind the site's branch, their recording costs
//! about 5 ns per yield against about 10 for the same work behind two
//! out-of-line calls (the calls around the coroutine switch, not the work
//! in them, made most of the difference: `trace_overhead`, measured
//! on an AMD EPYC). They are `#[cold]` as well, so that the inlined
//! recording is laid out away from the loop and the off path falls
//! through the site's one load, test and branch as at the other sites.

use super::core::Core;
use super::machine::Msg;
use super::td::{tdf, Thread, Wake};
use crate::trace::{ipi, kind, reason, swf, wake, RingBuf, NO_CPU};

impl Msg {
    /// IPI kind, wait channel and flow id, for the trace.
    fn trace_info(&self) -> (u8, u64, u32) {
        match self {
            Msg::Wakeup { chan, flow } => (ipi::WAKEUP, *chan as u64, *flow),
            Msg::WakeupOne { chan, flow, .. } => (ipi::WAKEUP_ONE, *chan as u64, *flow),
            Msg::Call(_) => (ipi::CALL, 0, 0),
            Msg::Thread(_) => (ipi::THREAD, 0, 0),
            Msg::Adopt(_) => (ipi::ADOPT, 0, 0),
            Msg::JoinDone(_) => (ipi::JOIN_DONE, 0, 0),
        }
    }
}

/// Clears the "IPI being carried out" context when dropped (see
/// [`Core::tr_msg_scope`]).
pub(crate) struct MsgScope<'a>(&'a Core);

impl Drop for MsgScope<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.trace.cur_flow.set(0);
        self.0.trace.cur_src.set(NO_CPU);
    }
}

impl Core {
    fn cur_tid(&self) -> u64 {
        // SAFETY: the running thread is alive while it runs.
        self.current().map_or(0, |t| unsafe { t.td() }.tid.get())
    }

    /// Starts recording into `ring` (a trace capture begins): notes the
    /// names of this CPU's threads and, when called from a running thread,
    /// marks that thread as running.
    #[cold]
    pub(crate) fn tr_enable(&self, ring: std::sync::Arc<RingBuf>) {
        self.for_each_thread(|td| {
            if let Some(n) = td.name() {
                ring.note_name(td.tid.get(), n);
            }
        });
        self.trace.enable(ring);
        let tid = self.cur_tid();
        if tid != 0 {
            self.trace.switch(0, tid, 0, "", swf::SYNTHETIC);
        }
    }

    /// `td` is about to run: the loop resumed it (`back` null), which
    /// records the switch with the switch-out it kept; or `back` hands off
    /// to it.
    ///
    /// Inlined, unlike the other sites (see the module header).
    #[cold]
    #[inline(always)]
    pub(crate) fn tr_switch_in(&self, td: &Thread, back: *mut Thread) {
        // SAFETY: a non-null `back` is the thread handing off, alive and
        // on this CPU (see `Core::handoff`).
        match unsafe { back.as_ref() } {
            None => self.trace.switch_in(td.tid.get()),
            // A yield handoff is recorded as the yield it stands for: `b`
            // is runnable, not waiting under `td` (the export then shows
            // two plain switches).
            Some(b) if self.yield_waiting.get() != 0 => {
                self.trace
                    .switch(b.tid.get(), td.tid.get(), reason::YIELD, "", 0)
            }
            Some(b) => self
                .trace
                .switch(b.tid.get(), td.tid.get(), reason::HANDOFF, "", 0),
        }
    }

    /// `td` switched out with flags `f` (RUNNING already cleared);
    /// `exited` when its function returned. Back to the loop (`back`
    /// null): kept for the loop's next switch-in (no clock read); back
    /// to `back`, which had handed off to it: recorded now, as the switch
    /// that resumes `back`.
    ///
    /// Inlined, unlike the other sites (see the module header).
    #[cold]
    #[inline(always)]
    pub(crate) fn tr_switch_out(&self, td: &Thread, f: u32, exited: bool, back: *mut Thread) {
        let r = if exited {
            reason::EXIT
        } else if f & tdf::MIGRATING != 0 {
            reason::MIGRATE
        } else if f & tdf::PREEMPTED != 0 {
            reason::PREEMPT
        } else if f & tdf::SLEEPING != 0 {
            reason::SLEEP
        } else if f & tdf::PARKED != 0 {
            reason::PARK
        } else if td.trace_tokwait.get() {
            reason::TOKEN
        } else {
            reason::YIELD
        };
        let wmesg = match r {
            reason::SLEEP | reason::PARK | reason::TOKEN => td.wmesg.get(),
            _ => "",
        };
        // SAFETY: a non-null `back` is the thread that handed off to `td`,
        // alive and on this CPU, running again from here on.
        match unsafe { back.as_ref() } {
            None => self.trace.stash(td.tid.get(), r, wmesg),
            Some(b) => self
                .trace
                .switch(td.tid.get(), b.tid.get(), r, wmesg, swf::RESUME),
        }
    }

    /// The running thread `td` goes to sleep on `chan`.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_sleep(&self, td: &Thread, chan: usize) {
        self.trace
            .emit(kind::SLEEP, 0, NO_CPU, 0, td.tid.get(), chan as u64);
    }

    /// A sleeping (or parked) thread was made runnable. The IPI being
    /// carried out, if any, is where the wakeup came from.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_wakeup(&self, td: &Thread, why: u8, chan: usize) {
        let src = self.trace.cur_src.get();
        let from = if src == NO_CPU { self.id as u16 } else { src };
        self.trace.emit(
            kind::WAKEUP,
            why,
            from,
            self.trace.cur_flow.get(),
            td.tid.get(),
            chan as u64,
        );
    }

    /// As [`tr_wakeup`](Self::tr_wakeup), for `Core::wake`'s causes.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_wake(&self, td: &Thread, why: Wake) {
        let w = match why {
            Wake::Wakeup => wake::SCHEDULE,
            Wake::Timeout => wake::TIMEOUT,
            Wake::Interrupt => wake::INTERRUPT,
        };
        self.tr_wakeup(td, w, td.wchan.get());
    }

    /// The running thread `td` blocks on the token named by its wait
    /// message.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_tok_block(&self, td: &Thread) {
        td.trace_tokwait.set(true);
        self.trace
            .emit_str(kind::TOK_BLOCK, 0, NO_CPU, td.tid.get(), td.wmesg.get());
    }

    /// The scheduler could not take token `name` for `td`.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_tok_collide(&self, td: &Thread, name: &'static str) {
        self.trace
            .emit_str(kind::TOK_COLLIDE, 0, NO_CPU, td.tid.get(), name);
    }

    /// The scheduler took `td`'s tokens: recorded when `td` had blocked on
    /// one (its wait message names it).
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_tok_acquire(&self, td: &Thread) {
        if td.trace_tokwait.replace(false) {
            self.trace
                .emit_str(kind::TOK_ACQUIRE, 0, NO_CPU, td.tid.get(), td.wmesg.get());
        }
    }

    /// `m` is being sent to CPU `dst`.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_ipi_send(&self, dst: usize, m: &Msg) {
        let (k, chan, flow) = m.trace_info();
        self.trace
            .emit(kind::IPI_SEND, k, dst as u16, flow, self.cur_tid(), chan);
    }

    /// `m` (from CPU `src`, or from outside) is being carried out.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_ipi_recv(&self, src: Option<usize>, m: &Msg) {
        let (k, chan, flow) = m.trace_info();
        let src = src.map_or(NO_CPU, |s| s as u16);
        self.trace.cur_flow.set(flow);
        self.trace.cur_src.set(src);
        self.trace
            .emit(kind::IPI_RECV, k, src, flow, self.cur_tid(), chan);
    }

    /// Records the receipt of `m` and makes it the context of the wakeups
    /// it causes, until the returned scope ends (one line at the top of
    /// `handle_msg`).
    #[inline(always)]
    pub(crate) fn tr_msg_scope(&self, src: Option<usize>, m: &Msg) -> MsgScope<'_> {
        trace_event!(self, tr_ipi_recv(src, m));
        MsgScope(self)
    }

    /// A flow id for a wakeup IPI this CPU sends (0 while tracing is off).
    #[inline(always)]
    pub(crate) fn tr_flow(&self) -> u32 {
        self.trace.next_flow(self.id)
    }

    /// Thread `td` was created on this CPU.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_spawn(&self, td: &Thread) {
        if let (Some(r), Some(n)) = (self.trace.ring(), td.name()) {
            r.note_name(td.tid.get(), n);
        }
        self.trace
            .emit(kind::SPAWN, 0, NO_CPU, 0, td.tid.get(), self.cur_tid());
    }

    /// Thread `td` is handed to CPU `to`.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_migrate_out(&self, td: &Thread, to: usize) {
        self.trace
            .emit(kind::MIGRATE_OUT, 0, to as u16, 0, td.tid.get(), 0);
    }

    /// Thread `td` arrived from another CPU (`runnable`: queued at once).
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_migrate_in(&self, td: &Thread, runnable: bool) {
        if let (Some(r), Some(n)) = (self.trace.ring(), td.name()) {
            r.note_name(td.tid.get(), n);
        }
        self.trace.emit(
            kind::MIGRATE_IN,
            u8::from(runnable),
            NO_CPU,
            0,
            td.tid.get(),
            0,
        );
    }

    /// Interrupt thread `b` preempts the running thread `a`.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_preempt(&self, a: &Thread, b: &Thread) {
        self.trace
            .emit(kind::PREEMPT, 0, NO_CPU, 0, a.tid.get(), b.tid.get());
    }

    /// An LWP of process `pid` changed to state `state` (NetBSD's
    /// number), recorded on the CPU that made the change.
    #[cold]
    #[inline(never)]
    pub(crate) fn tr_lwp_state(&self, pid: u32, lid: u32, tid: u64, state: u8) {
        self.trace
            .emit(kind::LWP_STATE, state, NO_CPU, pid, tid, u64::from(lid));
    }
}

use crate::trace::trace_event;
