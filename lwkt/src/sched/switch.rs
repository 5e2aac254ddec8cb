//! The switch path (`lwkt_switch`): every way a thread stops running, and
//! every way the next one is chosen and started, is in this file.
//!
//! Execution model: each CPU is one OS thread running [`Core::run`] on its
//! native stack; threads are coroutines on their own stacks. The loop
//! resumes the threads; the one exception is the handoff (below). A thread
//! that stops running (yield, sleep, park, token wait, preemption,
//! migration) records where it goes next, releases its tokens (unless
//! preempted) and suspends back to the loop; the loop looks at its messages
//! and timers, picks the next thread, acquires that thread's tokens, and
//! resumes it:
//!
//! ```text
//!  thread A (A's stack)            CPU loop (native stack)          thread B
//!  yield_now / sleep / park /      loop {
//!  get_token blocks / preempted:     look at the attention word
//!    set A's next state                (IPIs, shutdown)
//!    release A's tokens              fire due timers
//!    suspend ───────────────────▶    B = pick()  (tokens acquired)
//!                                    resume(B) ───────────────────▶ B goes on
//!                                    ◀─────────────── B suspends or returns
//!                                    B exited? B migrating? hand it off
//!                                  }
//! ```
//!
//! Every switch is thread → loop → thread, and any thread can be picked
//! next, whoever ran before. The cost is two stack switches per thread
//! switch. The handoff ([`Core::handoff`]) saves them where a thread would
//! stop only to let the very next thread in line run — a join of that
//! thread, a preemption, a yield with exactly one peer runnable
//! ([`Core::after_yield_handoff`]): it runs that thread on its own stack,
//! one level deep at most, under invariants written next to it that keep
//! any coroutine from being resumed while it runs, and in the order the
//! loop would have chosen. Hot paths stay short: a yield is a
//! queue append and a suspend on one side, a queue pop and a resume on the
//! other, both inlined so that each side's return lands in the frame that
//! made the matching call (the CPU's return-address predictor then stays
//! in step across the switch; a return through a frame made before the
//! switch mispredicts).
//!
//! Preemption (`lwkt_preempt`): making a higher-priority interrupt thread
//! runnable on this CPU, from a running thread outside a critical section,
//! runs it at once by handoff when it is first in line; otherwise (or when
//! its run made something of higher priority runnable) it puts the running
//! thread back at the head of its priority level *keeping its tokens*
//! (PREEMPTED) and switches to the loop, which then runs the
//! highest-priority thread. The preempted thread needs no token
//! acquisition to run again, and resumes before its equal-priority peers.
//! Preemption happens only at calls that make a thread runnable (wakeup,
//! schedule, spawn, the end of a critical section), never asynchronously;
//! those calls do not take `&mut CurThread`, so a token data borrow may be
//! live across them, which is why the preempted thread keeps its tokens.

use std::time::Instant;

use crossbeam_utils::Backoff;

use super::core::Core;
use super::machine::Msg;
use super::td::{tdf, TdPtr, Thread};
use crate::ipi::SendWait;
use crate::tokref::TokenReacquire;
use crate::trace::trace_event;

/// While timers are armed, a busy CPU looks at the clock once every this
/// many scheduling passes (reading it costs more than a switch).
const TIMER_POLL: u32 = 64;

impl Core {
    // ---------------------------------------------------------------
    // The CPU loop
    // ---------------------------------------------------------------

    /// Runs this CPU until the runtime shuts down, then cancels whatever
    /// threads remain. Called once, on the CPU's own OS thread.
    pub(crate) fn run(&self) {
        self.enter();
        self.remote().mailbox.set_owner();
        let mut poll = true;
        loop {
            // Right after idle() drained the FIFOs, the attention bits the
            // senders set are still in their caches: clearing them now
            // would cost a cache-line transfer before the woken thread
            // runs. They are cleared on the next pass instead.
            if std::mem::replace(&mut poll, true) {
                self.poll_attention();
            }
            if self.stop.get() {
                break;
            }
            if self.timers_due_soon() {
                self.expire_timers();
                self.poll_io_now();
            }
            match self.pick() {
                Some(t) => {
                    self.token_waits.set(0);
                    self.run_thread(t);
                }
                None if self.runq.is_empty() => {
                    if self.io_waiters.get() != 0 && self.poll_io_now() != 0 {
                        continue;
                    }
                    if !self.timers.is_empty() {
                        self.expire_timers();
                        if !self.runq.is_empty() {
                            continue;
                        }
                    }
                    poll = !self.idle();
                }
                None => self.token_wait(),
            }
        }
        // The last switch-out the loop kept, before the threads unwind.
        self.trace.flush();
        self.cancel_all();
        self.leave();
    }

    /// The first runnable thread, highest priority first, whose tokens can
    /// all be acquired (the candidate scan of `lwkt_switch`). Threads that
    /// cannot get their tokens keep their place in the queue; their wait
    /// message becomes the token's name.
    #[inline]
    pub(crate) fn pick(&self) -> Option<TdPtr> {
        let mut cur = self.runq.first();
        while let Some(t) = cur {
            // SAFETY: linked in this CPU's run queue, so alive.
            let td = unsafe { t.td() };
            // A preempted thread kept its tokens: nothing to acquire.
            if td.toks.is_empty() || td.has(tdf::PREEMPTED) || self.acquire_tokens(td) {
                // RUNQ stays set: run_thread clears it in the store that
                // sets RUNNING (one store, no read-modify-write to wait
                // for).
                self.runq.unlink(t);
                return Some(t);
            }
            cur = self.runq.next(t);
        }
        None
    }

    /// Acquires every token `td` waits for, or none (`lwkt_getalltokens`).
    #[inline(never)]
    fn acquire_tokens(&self, td: &Thread) -> bool {
        match self.acquire_all(td) {
            Ok(()) => {
                trace_event!(self, tr_tok_acquire(td));
                true
            }
            Err(name) => {
                td.wmesg.set(name);
                trace_event!(self, tr_tok_collide(td, name));
                false
            }
        }
    }

    /// Acquires every token `td` waits for, spinning with backoff: only
    /// at shutdown, when the loop no longer picks threads (a thread unwinds
    /// or runs its destructors with its tokens held, as its code expects).
    /// Other CPUs release theirs as they cancel.
    #[cold]
    pub(crate) fn acquire_tokens_at_shutdown(&self, td: &Thread) {
        let backoff = Backoff::new();
        while self.acquire_all(td).is_err() {
            backoff.snooze();
        }
    }

    /// One re-acquisition pass over `td`'s pending tokens, by the
    /// runtime's [`TokenReacquire`] protocol.
    #[inline]
    fn acquire_all(&self, td: &Thread) -> Result<(), &'static str> {
        match self.policy.reacquire {
            TokenReacquire::Lwkt => td
                .toks
                .acquire_all(td.identity(), &self.policy, self.stats()),
            TokenReacquire::Seed => td.toks.acquire_all_seed(
                td.identity(),
                &self.policy,
                // The seed's `spinning`: consecutive scans of the run
                // queue that found nothing runnable.
                self.token_waits.get() >= self.policy.spin_loops,
                self.stats(),
            ),
        }
    }

    /// Switches to `t` until it switches back (the hot path).
    #[inline]
    fn run_thread(&self, t: TdPtr) {
        self.resume_and_settle(t, std::ptr::null_mut());
    }

    /// The switch itself, for the loop and for a handoff (see
    /// [`handoff`](Self::handoff)): resumes `t`, which was just taken off
    /// the run queue, until it switches back; then makes `back` the
    /// running thread again (null: the loop) and settles `t` (an exit, a
    /// migration hand-off).
    #[inline(always)]
    fn resume_and_settle(&self, t: TdPtr, back: *mut Thread) {
        // SAFETY: just taken off this CPU's run queue; it stays on the
        // all-list until it exits, which is handled below.
        let td = unsafe { t.td() };
        self.has_run.set(true);
        let f0 = (td.flags.get() & !(tdf::RUNQ | tdf::PREEMPTED)) | tdf::RUNNING;
        td.flags.set(f0);
        // One test for both hooks, so a thread with neither pays one
        // never-taken branch, as before.
        if f0 & (tdf::SWCTL | tdf::UPCALL) != 0 {
            if f0 & tdf::SWCTL != 0 {
                // SAFETY: set while SWCTL, by the thread, which keeps the
                // block alive until it clears SWCTL on its own stack.
                unsafe { &*td.swctl.get() }.switched_in(self.id);
            }
            if f0 & tdf::UPCALL != 0 {
                // Its next maybe_yield runs its switch point.
                self.poke_maybe_yield();
            }
        }
        self.cur.set(t.as_ptr());
        // A thread's turn lasts at least until the next tick after it
        // starts (ticks that passed while others ran do not count).
        self.seen_tick.set(self.machine.tick());
        self.stats().switches.bump();
        trace_event!(self, tr_switch_in(td, back));
        // SAFETY: only the loop, or a thread handing off, resumes a
        // thread, and only one taken off the run queue, which is not
        // running and whose coroutine nobody else is resuming (see
        // `handoff`'s invariants).
        let coro = unsafe { &mut *td.coro.get() };
        let res = coro
            .as_mut()
            .expect("lwkt: a runnable thread has no coroutine")
            .resume(());
        self.cur.set(back);
        let f = td.flags.get() & !tdf::RUNNING;
        td.flags.set(f);
        if f & tdf::SWCTL != 0 {
            // SAFETY: as above (a thread that returned cleared SWCTL first).
            unsafe { &*td.swctl.get() }.switched_out(f & (tdf::SLEEPING | tdf::PARKED) != 0);
        }
        trace_event!(
            self,
            tr_switch_out(
                td,
                f,
                matches!(res, corosensei::CoroutineResult::Return(())),
                back
            )
        );
        match res {
            corosensei::CoroutineResult::Yield(()) if f & tdf::MIGRATING == 0 => {}
            corosensei::CoroutineResult::Yield(()) => self.migrate_switched_out(t),
            corosensei::CoroutineResult::Return(()) => self.thread_exited(t),
        }
    }

    /// The handoff: the running thread `a` runs the thread the loop would
    /// pick next, `b`, right now on its own stack, instead of switching to
    /// the loop and back (one switch each way instead of two). Used where
    /// a thread would otherwise stop only to let exactly that thread run:
    /// a join of the next thread, a preemption, and a yield with `b` the
    /// only peer runnable (`a` then holds no tokens, and counts as runnable
    /// while `b` runs: `yield_waiting`). When `b` switches out
    /// (for any reason), `a` settles it exactly as the loop does and goes
    /// on; `a` keeps its tokens meanwhile, as a preempted thread does.
    ///
    /// Invariants, which are why no coroutine is ever resumed while it
    /// runs (the hazard of running threads nested):
    /// 1. only a thread the loop resumed hands off; a thread running by
    ///    handoff never does (`handing_off`), so nesting is one level deep;
    /// 2. `b` is taken off the run queue first, as `pick` would take it
    ///    (the head of the highest level, needing no token), and a queued
    ///    thread's coroutine is always suspended with nobody waiting in a
    ///    resume for it;
    /// 3. `a` is on no queue while `b` runs, so neither the loop (not
    ///    running) nor `b` (which cannot hand off) can resume it.
    ///
    /// Returns false, doing nothing, when `b` is not that thread.
    #[inline]
    pub(crate) fn handoff(&self, a: TdPtr, atd: &Thread, b: TdPtr) -> bool {
        if self.handing_off.get() || self.runq.first() != Some(b) {
            return false;
        }
        // SAFETY: `b` is queued on this CPU (first in the run queue).
        let btd = unsafe { b.td() };
        if !btd.toks.is_empty() || btd.has(tdf::PREEMPTED) {
            return false;
        }
        self.runq.unlink(b);
        self.forget_candidate(b);
        self.handing_off.set(true);
        let fa = (atd.flags.get() & !tdf::RUNNING) | tdf::HANDOFF;
        atd.flags.set(fa);
        if fa & tdf::SWCTL != 0 {
            // `a` is off the CPU while `b` runs: its `lwpctl` block says so.
            // SAFETY: `a` is running (on this stack) and keeps the block
            // alive while SWCTL is set (see `resume_and_settle`).
            unsafe { &*atd.swctl.get() }.switched_out(false);
        }
        self.resume_and_settle(b, a.as_ptr());
        // Back to `a`: a switch too (the loop counts the ones it makes).
        self.stats().switches.bump();
        let fa = (atd.flags.get() & !tdf::HANDOFF) | tdf::RUNNING;
        atd.flags.set(fa);
        if fa & (tdf::SWCTL | tdf::UPCALL) != 0 {
            if fa & tdf::SWCTL != 0 {
                // SAFETY: as above.
                unsafe { &*atd.swctl.get() }.switched_in(self.id);
            }
            if fa & tdf::UPCALL != 0 {
                // Requested while `b` ran (see `resume_and_settle`).
                self.poke_maybe_yield();
            }
        }
        self.handing_off.set(false);
        true
    }

    /// Nothing to run: poll briefly, then park the OS thread until a
    /// message, the next timer or (with a poller) an fd event. Returns whether it drained the watched
    /// FIFOs itself (the attention bits are then left for the next pass).
    #[cold]
    fn idle(&self) -> bool {
        // The thread that ran last stopped before the idle stretch.
        self.trace.flush();
        let mb = &self.remote().mailbox;
        let deadline = self.timers.next_deadline();
        let start = Instant::now();
        if deadline.is_some_and(|d| d <= start) {
            return false;
        }
        // Poll first: a partner CPU's answer often comes within
        // microseconds. One pause per poll, no exponential backoff: the
        // attention word and the watched slots are only read here, so
        // polling them costs the senders nothing, and a long backoff (each
        // pause a VM-exit candidate under pause-loop detection) answers
        // late.
        let spin = if self.has_run.get() {
            self.machine.config.idle_spin
        } else {
            std::time::Duration::ZERO
        };
        let mut n = 0u32;
        loop {
            // The watched FIFOs first: a sender publishes its message
            // before it sets its attention bit, so both often become
            // visible together, and draining the FIFO then runs the woken
            // thread without first clearing the attention word (a
            // read-modify-write on a line the sender just wrote); the bit
            // is cleared on the next pass.
            if self.inbox.any_ready(mb) {
                self.with_ipi_depth(|| {
                    self.inbox
                        .drain_watched(mb, |src, m| self.handle_msg(Some(src), m))
                });
                return true;
            }
            if mb.attention() != 0 {
                return false;
            }
            n = n.wrapping_add(1);
            if n % 64 == 0 {
                // Threads waiting on fds: look at the poller too, or a
                // socket would wait out the spin.
                if self.io_waiters.get() != 0 && self.poll_io_now() != 0 {
                    return false;
                }
                let now = Instant::now();
                if now.duration_since(start) >= spin || deadline.is_some_and(|d| d <= now) {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        if !mb.prepare_park() {
            return false;
        }
        self.stats().parks.bump();
        // In the poller once this CPU has one (an IPI then writes its
        // eventfd; see `Mailbox::notify`), else on the futex.
        self.park_os(deadline);
        mb.finish_park();
        self.machine.wake_clock();
        false
    }

    /// Every runnable thread waits for a token held on another CPU: poll
    /// with backoff, then nap briefly (a release sends no message).
    #[cold]
    fn token_wait(&self) {
        self.trace.flush();
        let n = self.token_waits.get();
        self.token_waits.set(n.saturating_add(1));
        if n < 64 {
            for _ in 0..(16u32 << n.min(6)) {
                std::hint::spin_loop();
            }
            return;
        }
        let mb = &self.remote().mailbox;
        if mb.prepare_park() {
            self.stats().parks.bump();
            self.park_os(Instant::now().checked_add(std::time::Duration::from_micros(50)));
            mb.finish_park();
        }
    }

    // ---------------------------------------------------------------
    // The attention word: messages, shutdown, timers
    // ---------------------------------------------------------------

    /// Processes queued messages if any are flagged. Inside a critical
    /// section messages wait (they stay flagged and run when the section
    /// ends).
    #[inline]
    pub(crate) fn poll_attention(&self) {
        if self.remote().mailbox.attention() == 0 {
            return;
        }
        if let Some(t) = self.current() {
            // SAFETY: the running thread is alive while it runs.
            if unsafe { t.td() }.crit.get() > 0 {
                return;
            }
        }
        self.poll_attention_slow();
    }

    /// Processes messages even inside a critical section: a sender waiting
    /// for room in a FIFO must drain its own, or two CPUs could deadlock.
    #[inline]
    fn poll_attention_forced(&self) {
        if self.remote().mailbox.attention() != 0 {
            self.poll_attention_slow();
        }
    }

    #[cold]
    fn poll_attention_slow(&self) {
        let mb = &self.remote().mailbox;
        let a = mb.take_attention();
        if self.machine.is_shutdown() {
            // Runtime::drop sets `shutdown`, then the KICK bit.
            self.stop.set(true);
        }
        self.with_ipi_depth(|| {
            if a & crate::ipi::attn::EXT != 0 {
                loop {
                    let batch = mb.take_external();
                    if batch.is_empty() {
                        break;
                    }
                    for m in batch {
                        self.handle_msg(None, m);
                    }
                }
            }
            mb.drain_groups(a, |src, m| self.handle_msg(Some(src), m));
        });
    }

    fn with_ipi_depth<R>(&self, f: impl FnOnce() -> R) -> R {
        self.ipi_depth.set(self.ipi_depth.get() + 1);
        let r = f();
        self.ipi_depth.set(self.ipi_depth.get() - 1);
        r
    }

    /// Carries out one message (`lwkt_process_ipiq`'s dispatch).
    fn handle_msg(&self, src: Option<usize>, m: Msg) {
        self.stats().ipis_processed.bump();
        let _trace = self.tr_msg_scope(src, &m);
        if let Some(s) = src {
            self.inbox.note(s);
        }
        match m {
            Msg::Wakeup { chan, .. } => {
                prefetch(chan);
                self.wakeup_local(chan, false);
            }
            m => self.handle_other_msg(m),
        }
    }

    /// `handle_msg` for every kind but the plain wakeup (out of line, so
    /// that the wakeup, the cross-CPU hot path, carries no frame for the
    /// rest).
    #[inline(never)]
    fn handle_other_msg(&self, m: Msg) {
        match m {
            Msg::Wakeup { chan, .. } => {
                self.wakeup_local(chan, false);
            }
            Msg::WakeupOne { chan, stop, flow } => {
                if !self.wakeup_local(chan, true) {
                    let b = super::sleepq::bucket_of(chan);
                    if let Some(next) = self.machine.sleep.next_after(b, self.id, stop) {
                        self.send(next, Msg::WakeupOne { chan, stop, flow });
                    }
                }
            }
            Msg::Call(f) => f(self),
            Msg::Thread(op) => self.thread_op(op),
            Msg::Adopt(a) => self.adopt(a),
            Msg::JoinDone(p) => self.wake_joiner(p.ctl()),
        }
    }

    /// Sends `m` to CPU `dst` (`lwkt_send_ipiq`). To itself: carries it
    /// out directly. Dropped when the runtime is shutting down and the
    /// target's FIFO stays full.
    pub(crate) fn send(&self, dst: usize, m: Msg) {
        if dst == self.id {
            self.handle_msg(None, m);
            return;
        }
        trace_event!(self, tr_ipi_send(dst, &m));
        let mb = &self.machine.cpus[dst].mailbox;
        match self.outbox.send(self.id, mb, dst, m, self) {
            Ok(true) => self.stats().ipis_sent.bump(),
            Ok(false) => self.stats().ipis_avoided.bump(),
            Err(m) => drop(m),
        }
    }

    /// Whether armed timers, and the fds threads wait on, should be looked
    /// at on this pass: every [`TIMER_POLL`] passes while any timer is
    /// armed or any thread waits in `wait_fd`. One test for both on the
    /// hot paths (the loop, `yield_now`, `maybe_yield`); so a busy CPU,
    /// or one whose only runnable thread spins on `yield_now`, serves its
    /// sockets every [`TIMER_POLL`] passes.
    #[inline]
    fn timers_due_soon(&self) -> bool {
        if self.timers.is_empty() & (self.io_waiters.get() == 0) {
            return false;
        }
        let n = self.timer_countdown.get();
        if n > 1 {
            self.timer_countdown.set(n - 1);
            false
        } else {
            self.timer_countdown.set(TIMER_POLL);
            true
        }
    }

    /// Fires due timers (a timeout ends its sleep). Reads the clock only
    /// when a timer is armed.
    #[cold]
    pub(crate) fn expire_timers(&self) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(timer) = self.timers.pop_due(now) {
            // SAFETY: a timer entry keeps its thread's structure allocated
            // (timer_refs), even after the thread exited.
            let td = unsafe { timer.td.td() };
            td.timer_refs.set(td.timer_refs.get() - 1);
            if td.has(tdf::EXITED) {
                if td.timer_refs.get() == 0 {
                    self.free_thread(timer.td);
                }
            } else if td.sleep_seq.get() == timer.seq && td.has(tdf::SLEEPING) {
                self.wake(timer.td, super::td::Wake::Timeout);
            }
        }
    }

    /// Whether nothing asks for this CPU's attention: no message or
    /// shutdown flagged, no timer to look at, no preemption pending. Hot
    /// paths test this once instead of polling each in turn.
    #[inline]
    fn quiet(&self) -> bool {
        (self.remote().mailbox.attention() == 0)
            & self.preempt_cand.get().is_null()
            & !self.stop.get()
            & !self.timers_due_soon()
    }

    // ---------------------------------------------------------------
    // Thread side: switching out (runs on the thread's own stack)
    // ---------------------------------------------------------------

    /// The switch itself: back to the loop, until the loop resumes this
    /// thread. For the running thread `td` only.
    #[inline(always)]
    pub(crate) fn suspend(td: &Thread) {
        let y = td.yielder.get();
        // SAFETY: the yielder lives on this thread's own stack for as long
        // as the coroutine runs, and we are running on that stack now.
        unsafe { (*y).suspend(()) };
    }

    /// Releases the running thread's tokens (every switch-away does; the
    /// loop takes them again before the thread runs) and switches out.
    /// The caller has set the thread's next state.
    #[inline(always)]
    pub(crate) fn switch_out(&self, td: &Thread) {
        if !td.toks.is_empty() {
            release_tokens(td);
        }
        Self::suspend(td);
    }

    /// `yield_now`: lets every runnable thread of equal or higher priority
    /// on this CPU run first. Inlined, switch included (see the module
    /// header).
    #[inline(always)]
    pub(crate) fn yield_cur(&self, t: TdPtr, td: &Thread) {
        let f = td.flags.get();
        if self.quiet() && f & (tdf::CANCEL | tdf::DESCHED) == 0 {
            let pri = td.pri.get();
            if let Some(b) = self.runq.sole_at_least(pri) {
                if td.toks.is_empty() && self.yield_waiting.get() == 0 {
                    self.yield_waiting.set(pri + 1);
                    let ran = self.handoff(t, td, b);
                    self.yield_waiting.set(0);
                    if ran {
                        self.after_yield_handoff(t, td);
                        return;
                    }
                }
                self.runq.push_back(t);
                self.switch_out(td);
            } else if self.peers_at_least(pri) {
                self.runq.push_back(t);
                self.switch_out(td);
            }
            return;
        }
        self.yield_slow(t, td);
    }

    /// The yield handoff, second half. `a` (`t`) yielded when exactly one
    /// thread of its priority or above was runnable, `b`, and held no
    /// tokens; it ran `b` by [`handoff`](Self::handoff) instead of queueing
    /// behind it and switching to the loop, and `b` has switched out. Had
    /// `a` gone through the loop, the queue at `b`'s start would have been
    /// `[a]` at `a`'s level and above, so `a` would run next unless, while
    /// `b` ran, something of higher priority became runnable, `b` was
    /// preempted (a preempted thread resumes before its peers), or the CPU
    /// got messages, a due timer or a shutdown to look at (the loop looks
    /// first). In those cases `a` takes the place it would have had, the
    /// head of its level behind a preempted thread, and switches to the
    /// loop; otherwise it just goes on, having switched twice (a → b → a)
    /// instead of four times (a → loop → b → loop → a). Threads queued at
    /// `a`'s level while `b` ran came after `a`'s yield, so they wait.
    #[inline(always)]
    fn after_yield_handoff(&self, t: TdPtr, td: &Thread) {
        let f = td.flags.get();
        if f & tdf::CANCEL != 0 {
            return;
        }
        // `b` preempted implies a thread above `a`'s priority is queued
        // (the one that preempted it, which `b` could not hand off to), so
        // `has_above` covers that case too.
        if self.quiet() & (f & tdf::DESCHED == 0) & !self.runq.has_above(td.pri.get()) {
            return;
        }
        self.requeue_front_and_switch(t, td);
    }

    /// [`after_yield_handoff`](Self::after_yield_handoff)'s slow case: back
    /// to the head of its level, behind a preempted thread there (or
    /// parked, when a `deschedule` arrived), and to the loop.
    #[cold]
    #[inline(never)]
    fn requeue_front_and_switch(&self, t: TdPtr, td: &Thread) {
        let f = td.flags.get();
        if f & tdf::DESCHED != 0 {
            td.flags.set((f & !tdf::DESCHED) | tdf::PARKED);
            td.wmesg.set("park");
            self.switch_out(td);
            return;
        }
        let head = self.runq.head_at(td.pri.get());
        // SAFETY: a queued thread is owned by this CPU and allocated.
        match head.filter(|&h| unsafe { h.td() }.has(tdf::PREEMPTED)) {
            Some(h) => {
                self.runq.remove(h);
                self.runq.push_front(t);
                self.runq.push_front(h);
            }
            None => self.runq.push_front(t),
        }
        self.switch_out(td);
    }

    #[cold]
    #[inline(never)]
    fn yield_slow(&self, t: TdPtr, td: &Thread) {
        self.poll_attention();
        self.expire_timers();
        // A yield with nothing else runnable never reaches the loop: the
        // fds threads wait on are polled here too.
        self.poll_io_now();
        if td.has(tdf::CANCEL) {
            return;
        }
        self.preempt_check();
        if self.peers_at_least(td.pri.get()) || td.has(tdf::DESCHED) || self.stopping() {
            self.requeue_and_switch(t, td);
        }
    }

    /// Whether a thread of priority `pri` or higher is runnable besides
    /// the running one: queued, or waiting in a yield handoff for the
    /// running thread to switch out (`yield_waiting`).
    #[inline(always)]
    fn peers_at_least(&self, pri: u8) -> bool {
        self.runq.has_at_least(pri) | (self.yield_waiting.get() > pri)
    }

    /// `maybe_yield` (`lwkt_yield`): switches only if a reschedule is
    /// wanted: a higher-priority thread is runnable, messages wait, or the
    /// scheduler clock ticked while equal-priority peers wait; and every
    /// [`TIMER_POLL`] calls it looks at armed timers and waited-on fds.
    /// Otherwise a few loads, one decrement and two branches. Returns
    /// whether it took a slow path: the caller then runs its switch point
    /// (on the fast path there is none to run, see (5)).
    ///
    /// Fast-path invariant: it returns false only when (1) the attention
    /// word is 0 (no message, kick or shutdown flagged), (2) the clock's
    /// epoch equals `seen_tick` (no tick since the last look), (3) the
    /// run-queue bitmap has no level above `td`'s priority
    /// (`PriCell::above`'s invariant makes that one AND), and (4) the
    /// countdown, decremented on every call, has not reached 0. Each is
    /// exactly one condition under which the slow path could switch or
    /// serve something; (1)–(3) are ORed into one word so the common case
    /// pays one branch. (4): `timer_countdown` is between 1 and
    /// `TIMER_POLL` whenever this runs (its writers store `TIMER_POLL`,
    /// 1 as a poke, `n - 1` for an `n > 1`, or this path's `n - 1`, reset
    /// at once when it is 0), so the decrement never wraps and reaches 0
    /// once every `TIMER_POLL` calls at most: armed timers and fd waiters
    /// are served at least that often while a busy thread only calls
    /// `maybe_yield`, as before. It counts down whether or not anything is
    /// armed (one `dec` instead of testing both); at 0 with nothing armed
    /// the cold path only resets it. (5) The UPCALL flag of the running
    /// thread forces a slow path at its next call: whatever sets it on the
    /// running thread, or makes a thread that has it the running one
    /// (`upcall_local`, a switch in, the end of a handoff), pokes the
    /// countdown to 1, so (4) fails at the next call. The only other
    /// readers of the countdown (`timers_due_soon`: the loop, when no
    /// thread runs; `yield_now`, which has its own switch point) may use
    /// the poke up, but never without a switch point following. And (4)
    /// alone bounds the wait to `TIMER_POLL` calls whatever happens.
    #[inline]
    pub(crate) fn maybe_yield_cur(&self, t: TdPtr, td: &Thread) -> bool {
        let want = self.remote().mailbox.attention()
            | (self.machine.tick() ^ self.seen_tick.get())
            | u64::from(self.runq.bitmap() & td.pri.above());
        if want != 0 {
            self.maybe_yield_slow(t, td);
            return true;
        }
        let n = self.timer_countdown.get() - 1;
        self.timer_countdown.set(n);
        if n == 0 {
            self.maybe_yield_countdown(t, td);
            return true;
        }
        false
    }

    /// Makes the running thread's next `maybe_yield` take its slow path
    /// (and so run its switch point): invariant (5) of
    /// [`maybe_yield_cur`](Self::maybe_yield_cur).
    #[inline]
    pub(crate) fn poke_maybe_yield(&self) {
        self.timer_countdown.set(1);
    }

    /// [`maybe_yield_cur`](Self::maybe_yield_cur)'s countdown reached 0:
    /// start it again, and take the slow path when a timer or an fd wait
    /// is armed (it fires due timers and polls the fds).
    #[cold]
    #[inline(never)]
    fn maybe_yield_countdown(&self, t: TdPtr, td: &Thread) {
        self.timer_countdown.set(TIMER_POLL);
        if !self.timers.is_empty() || self.io_waiters.get() != 0 {
            self.maybe_yield_slow(t, td);
        }
    }

    #[cold]
    #[inline(never)]
    fn maybe_yield_slow(&self, t: TdPtr, td: &Thread) {
        self.poll_attention();
        let tick = self.machine.tick();
        let ticked = tick != self.seen_tick.get();
        self.seen_tick.set(tick);
        self.expire_timers();
        // Sockets get served at least once a tick while this thread runs.
        self.poll_io_now();
        self.preempt_check();
        if td.has(tdf::CANCEL) {
            return;
        }
        let pri = td.pri.get();
        // A thread waiting in a yield handoff has priority `yield_waiting - 1`.
        let highest = self
            .runq
            .highest()
            .max(self.yield_waiting.get().checked_sub(1));
        let wanted = match highest {
            Some(h) => h > pri || (ticked && h == pri),
            None => false,
        };
        if wanted || td.has(tdf::DESCHED) || self.stopping() {
            self.requeue_and_switch(t, td);
        }
    }

    /// Puts the running thread back in line (or parks it, when a
    /// `deschedule` arrived while it ran) and switches out.
    #[inline(never)]
    fn requeue_and_switch(&self, t: TdPtr, td: &Thread) {
        let f = td.flags.get();
        if f & tdf::DESCHED != 0 {
            td.flags.set((f & !tdf::DESCHED) | tdf::PARKED);
            td.wmesg.set("park");
        } else {
            self.runq.push_back(t);
        }
        self.switch_out(td);
    }

    /// `park` (`lwkt_deschedule_self` + `lwkt_switch`): switches out until
    /// an explicit schedule. Returns at once when a schedule arrived first
    /// (the permit) or the runtime is shutting down.
    #[inline]
    pub(crate) fn park_cur(&self, td: &Thread) {
        let f = td.flags.get();
        if f & tdf::PERMIT != 0 {
            td.flags.set(f & !tdf::PERMIT);
            return;
        }
        if f & tdf::CANCEL != 0 {
            return;
        }
        td.flags.set((f & !tdf::DESCHED) | tdf::PARKED);
        td.wmesg.set("park");
        self.switch_out(td);
    }

    /// A token acquisition must wait: the thread stays runnable, and the
    /// loop runs it again only once it has acquired all its tokens.
    pub(crate) fn block_for_tokens(&self, t: TdPtr, td: &Thread) {
        self.stats().tok_blocks.bump();
        trace_event!(self, tr_tok_block(td));
        if td.has(tdf::CANCEL) {
            // Unwinding at shutdown: the loop is not picking threads any
            // more; wait here for the holders.
            self.acquire_tokens_at_shutdown(td);
            return;
        }
        self.requeue_and_switch(t, td);
    }

    /// `migrate` (`lwkt_setcpu_self`): switches out; the loop then hands
    /// the thread to CPU `to` ([`migrate_switched_out`]), which queues it.
    ///
    /// [`migrate_switched_out`]: Self::migrate_switched_out
    pub(crate) fn migrate_cur(&self, td: &Thread, to: usize) {
        td.migrate_to.set(to);
        td.set(tdf::MIGRATING);
        td.wmesg.set("migrate");
        self.switch_out(td);
    }

    /// The loop's half of a migration: the thread is fully switched out
    /// here before the new CPU can see it.
    #[cold]
    fn migrate_switched_out(&self, t: TdPtr) {
        // SAFETY: the thread just switched out on this CPU and is on its
        // all-list.
        let td = unsafe { t.td() };
        td.clear(tdf::MIGRATING);
        if self.stopping() {
            // Shutting down: stay here and be cancelled.
            self.make_runnable(t);
        } else {
            self.give_away(t, td.migrate_to.get(), true);
        }
    }

    // ---------------------------------------------------------------
    // Making threads runnable, and preemption
    // ---------------------------------------------------------------

    /// Makes a thread that is not running, queued or sleeping runnable
    /// (`_lwkt_schedule`), noting it as a preemption candidate.
    #[inline]
    pub(crate) fn make_runnable(&self, t: TdPtr) {
        self.runq.push_back(t);
        self.note_candidate(t);
    }

    /// Notes that `t`, just made runnable, might preempt the running
    /// thread. The switch itself happens at the next safe point
    /// ([`preempt_check`](Self::preempt_check)), never in the middle of a
    /// queue operation.
    #[inline]
    pub(crate) fn note_candidate(&self, t: TdPtr) {
        // SAFETY: `t` was just queued on this CPU.
        let td = unsafe { t.td() };
        if !td.has(tdf::INTTHREAD) {
            return;
        }
        let Some(cur) = self.current() else { return };
        // SAFETY: the running thread is alive while it runs.
        if td.pri.get() <= unsafe { cur.td() }.pri.get() {
            return;
        }
        match TdPtr::from_raw(self.preempt_cand.get()) {
            // SAFETY: a candidate is queued on this CPU (forget_candidate
            // clears it when it leaves the queue).
            Some(c) if unsafe { c.td() }.pri.get() >= td.pri.get() => {}
            _ => self.preempt_cand.set(t.as_ptr()),
        }
    }

    /// Forgets `t` as a preemption candidate (it left the run queue).
    #[inline]
    pub(crate) fn forget_candidate(&self, t: TdPtr) {
        if self.preempt_cand.get() == t.as_ptr() {
            self.preempt_cand.set(std::ptr::null_mut());
        }
    }

    /// Runs a pending preemption now if it is allowed (a safe point).
    #[inline]
    pub(crate) fn preempt_check(&self) {
        if !self.preempt_cand.get().is_null() {
            self.preempt_slow();
        }
    }

    /// `lwkt_preempt`. Not `#[cold]`: for an interrupt thread this is the
    /// path that matters (`preempt_latency`).
    #[inline(never)]
    fn preempt_slow(&self) {
        let Some(b) = TdPtr::from_raw(self.preempt_cand.get()) else {
            return;
        };
        let Some(a) = self.current() else {
            // Loop context: it picks the highest priority anyway.
            self.preempt_cand.set(std::ptr::null_mut());
            return;
        };
        // SAFETY: the running thread is alive while it runs; the candidate
        // is queued on this CPU (see note_candidate).
        let (atd, btd) = unsafe { (a.td(), b.td()) };
        if atd.crit.get() > 0 {
            // Deferred to the end of the critical section.
            self.stats().preempt_misses.bump();
            return;
        }
        self.preempt_cand.set(std::ptr::null_mut());
        if !btd.has(tdf::RUNQ) || self.stopping() || self.shutting_down.get() {
            self.stats().preempt_weird.bump();
            return;
        }
        if !btd.toks.is_empty() || btd.pri.get() <= atd.pri.get() || atd.has(tdf::CANCEL) {
            // It waits for tokens (which we might hold), or is no longer
            // more urgent: it runs when the loop picks it.
            self.stats().preempt_misses.bump();
            return;
        }
        self.stats().preempt_hits.bump();
        trace_event!(self, tr_preempt(atd, btd));
        // `b` first in line: run it right here (a handoff); `a` keeps its
        // tokens and resumes when `b` switches out, unless that made a
        // thread of higher priority than `a` runnable.
        if self.handoff(a, atd, b)
            && !self.runq.has_above(atd.pri.get())
            && !self.stopping()
            && self.preempt_cand.get().is_null()
        {
            return;
        }
        // `a` keeps its tokens and goes back to the head of its level; the
        // loop runs the highest-priority thread (`b`, or one of its
        // equal-priority peers queued before it).
        self.runq.push_front(a);
        atd.set(tdf::PREEMPTED);
        Self::suspend(atd);
    }

    /// Leaving the outermost critical section: run what was deferred
    /// (messages and a preemption). Never switches the thread out for a
    /// reschedule alone, so borrows of token data stay valid.
    pub(crate) fn crit_exit_deferred(&self) {
        self.poll_attention();
        self.preempt_check();
    }
}

/// Out of line: keeps the inlined switch paths small.
#[inline(never)]
fn release_tokens(td: &Thread) {
    td.toks.release_all();
}

impl SendWait for Core {
    fn poll_incoming(&self) {
        if self.ipi_depth.get() == 0 {
            self.poll_attention_forced();
        }
    }

    fn abandon(&self) -> bool {
        self.machine.is_shutdown()
    }

    fn nested(&self) -> bool {
        self.ipi_depth.get() > 0
    }
}

/// Starts pulling the cache line at `addr` toward this CPU. A remote
/// wakeup's channel is usually the very word the woken thread checks
/// first (the `wakeup(&seq)` idiom), which the waker has just written: the
/// transfer then overlaps the sleep-queue work and the switch instead of
/// following them. Only a hint; never faults, whatever the address.
#[inline]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch has no
    // architectural effect: it never faults, even on an unmapped address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
