//! The thread API: the running thread's handle ([`CurThread`]), spawning
//! ([`ThreadBuilder`]), joining ([`JoinHandle`]) and sleep/wakeup.
//!
//! Every operation that can switch the calling thread away takes
//! `&mut CurThread`; that is what will let the compiler keep references to
//! token-protected data from living across a switch.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corosensei::Coroutine;

use crate::error::{Error, Panicked, SleepError};
use crate::priority::Priority;
use crate::runtime::{wakeup_addr, Handle, Shared};
use crate::sched::cpu::{current_cpu, Cpu, IpiMsg};
use crate::sched::td::{tdf, Ctl, PacketCtl, TdPtr, Wake, Yld};
use crate::stack::{Stack, MIN_STACK_SIZE};

/// A thread's identity, unique within its runtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ThreadId(u64);

impl ThreadId {
    pub(crate) fn from_raw(v: u64) -> ThreadId {
        ThreadId(v)
    }

    /// The raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "td{}.{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// The running lwkt thread (`curthread`). A thread receives
/// `&mut CurThread` as its argument; it cannot be sent to another thread or
/// stored beyond the call.
pub struct CurThread {
    td: TdPtr,
    _not_send: PhantomData<*mut ()>,
}

impl fmt::Debug for CurThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurThread")
            .field("id", &self.id())
            .field("cpu", &self.cpu())
            .field("name", &self.name())
            .field("priority", &self.priority())
            .finish()
    }
}

/// Options for [`CurThread::sleep`] (the seed's `tsleep` flags).
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Sleep {
    timeout: Option<Duration>,
    interruptible: bool,
    wmesg: &'static str,
}

impl Default for Sleep {
    fn default() -> Self {
        Sleep {
            timeout: None,
            interruptible: false,
            wmesg: "sleep",
        }
    }
}

impl Sleep {
    /// Give up after `d` with [`SleepError::TimedOut`].
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Let [`JoinHandle::interrupt`] end the sleep with
    /// [`SleepError::Interrupted`] (`PCATCH`).
    pub fn interruptible(mut self) -> Self {
        self.interruptible = true;
        self
    }

    /// The wait message shown for the sleeping thread.
    pub fn wmesg(mut self, m: &'static str) -> Self {
        self.wmesg = m;
        self
    }
}

#[inline]
fn chan_addr<C: ?Sized>(chan: &C) -> usize {
    chan as *const C as *const () as usize
}

impl CurThread {
    #[inline]
    pub(crate) fn td_ptr(&self) -> TdPtr {
        self.td
    }

    #[inline]
    pub(crate) fn cpu_ref(&self) -> &Cpu {
        // SAFETY: a thread's `cpu` always points at the live Cpu that owns
        // it, which outlives every thread it runs.
        unsafe { &*self.td.td().cpu.get() }
    }

    /// This thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId(self.td.td().id.get())
    }

    /// The CPU this thread runs on.
    pub fn cpu(&self) -> usize {
        self.cpu_ref().id
    }

    /// How many CPUs the runtime has.
    pub fn ncpus(&self) -> usize {
        self.cpu_ref().shared.ncpus()
    }

    /// The thread's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.td.td().name()
    }

    /// The thread's priority.
    pub fn priority(&self) -> Priority {
        Priority::new(self.td.td().pri.get()).expect("thread priority in range")
    }

    /// Changes this thread's priority (`lwkt_setpri_self`). Lowering it
    /// below a runnable thread's does not switch by itself; the next
    /// `maybe_yield` or `yield_now` does.
    #[doc(alias = "lwkt_setpri_self")]
    pub fn set_priority(&mut self, p: Priority) {
        self.td.td().pri.set(p.get());
    }

    /// A handle to this thread's runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.cpu_ref().shared.clone(),
        }
    }

    #[inline]
    fn cancelled(&self) -> bool {
        self.td.td().has(tdf::CANCEL)
    }

    /// Switches back to the scheduler (the bottom of `lwkt_switch`).
    /// A join whose target is runnable on this CPU runs it right away, on
    /// the joiner's behalf (work-first, as a preemption would): two
    /// switches instead of a trip through the scheduler and the sleep
    /// queues. Only when nothing of higher priority waits, the target
    /// holds no tokens and the joiner is not in a critical section; the
    /// joiner keeps its own tokens meanwhile. If the target blocks, the
    /// joiner goes on to wait normally.
    fn join_directly(&mut self, ctl: &Ctl) {
        let cpu = self.cpu_ref();
        if ctl.cpu.load(Ordering::Relaxed) != cpu.id
            || ctl.migrating.load(Ordering::Relaxed)
            || self.td.td().crit.get() != 0
            || cpu.stopping()
            || self.cancelled()
        {
            return;
        }
        let Some(b) = TdPtr::from_raw(ctl.td.load(Ordering::Acquire)) else {
            return;
        };
        let btd = b.td();
        if !btd.has(tdf::RUNQ) || btd.tok_used.get() != 0 || cpu.runq.has_above(btd.pri.get()) {
            return;
        }
        cpu.run_nested(self.td, b);
    }

    /// Switches out without re-queueing (the caller arranged where the
    /// thread goes next).
    pub(crate) fn switch_out_raw(&mut self) {
        self.switch_out();
    }

    #[inline(always)]
    fn switch_out(&mut self) {
        if self.td.td().tok_used.get() != 0 {
            // Every switch-away releases all tokens; the scheduler takes
            // them again before this thread runs.
            self.release_tokens();
        }
        self.suspend_raw();
    }

    /// The switch itself, for a thread that holds no tokens.
    #[inline(always)]
    fn suspend_raw(&mut self) {
        let y: *const Yld = self.td.td().yielder.get();
        // SAFETY: the yielder lives on this thread's own stack for as long
        // as the coroutine runs, and we are running on that stack now.
        unsafe { (*y).suspend(()) };
    }

    /// Out of line: keeps the inlined switch paths small.
    #[inline(never)]
    fn release_tokens(&mut self) {
        self.cpu_ref().tokens_release_all(self.td);
    }

    /// Lets every runnable thread of equal or higher priority on this CPU
    /// run first, then returns. Never switches to a lower-priority thread;
    /// returns at once when nothing else is runnable.
    ///
    /// The common case, a thread run by a yielding peer (see below) handing
    /// the CPU back, is inlined into the caller, switch included: the
    /// switch then returns straight into the caller's frame, which keeps
    /// the CPU's return-address predictor in step with the two stacks. A
    /// yield reached through extra call levels mispredicts each of them on
    /// the way out, which costs more than the rest of the yield together.
    #[inline(always)]
    pub fn yield_now(&mut self) {
        let cpu = self.cpu_ref();
        let td = self.td.td();
        let f = td.flags.get();
        if f & (tdf::NESTED | tdf::CANCEL | tdf::DESCHED) == tdf::NESTED
            && td.tok_used.get() == 0
            && cpu.runq.highest().is_some_and(|h| h >= td.pri.get())
        {
            // Resumed by a yielding (or preempted) thread, and a peer is
            // due: queue and switch back to it (requeue_and_switch's
            // nested case). IPIs and timers are left to that thread, which
            // checks for them as soon as we are back.
            td.flags.set(f & !tdf::RUNNING);
            cpu.runq.push_back(self.td);
            self.suspend_raw();
            return;
        }
        if cpu.quiet() && f & (tdf::CANCEL | tdf::DESCHED) == 0 {
            // Nothing pending on this CPU: only the run queue matters.
            if cpu.runq.highest().is_some_and(|h| h >= td.pri.get()) {
                self.requeue_and_switch();
            }
            return;
        }
        self.yield_slow();
    }

    #[cold]
    #[inline(never)]
    fn yield_slow(&mut self) {
        let cpu = self.cpu_ref();
        cpu.poll_attention();
        cpu.expire_timers();
        if self.cancelled() {
            return;
        }
        cpu.preempt_check();
        let td = self.td.td();
        let pri = td.pri.get();
        if cpu.runq.highest().is_some_and(|h| h >= pri)
            || td.has(tdf::DESCHED)
            || self.shutdown_requested()
        {
            self.requeue_and_switch();
        }
    }

    /// Switches only if a reschedule is wanted: a higher-priority thread is
    /// runnable, IPIs are waiting, or the scheduler clock ticked while
    /// equal-priority peers wait (`lwkt_yield`). Otherwise it costs a few
    /// loads, so it can sit in a tight loop.
    #[doc(alias = "lwkt_yield")]
    #[inline]
    pub fn maybe_yield(&mut self) {
        let cpu = self.cpu_ref();
        let a = cpu.cs().attention.load(Ordering::Relaxed);
        if a == 0 && !cpu.runq.has_above(self.td.td().pri.get()) {
            return;
        }
        self.maybe_yield_slow();
    }

    #[cold]
    fn maybe_yield_slow(&mut self) {
        let cpu = self.cpu_ref();
        let tick = cpu.poll_attention();
        cpu.expire_timers();
        cpu.preempt_check();
        if self.cancelled() {
            return;
        }
        let pri = self.td.td().pri.get();
        match cpu.runq.highest() {
            Some(h) if h > pri || (tick && h == pri) => self.requeue_and_switch(),
            _ if self.td.td().has(tdf::DESCHED) || self.shutdown_requested() => {
                self.requeue_and_switch()
            }
            _ => {}
        }
    }

    /// The runtime is being dropped: switch out so the CPU can unwind its
    /// threads (this thread included).
    #[cold]
    fn shutdown_requested(&self) -> bool {
        self.cpu_ref().stopping()
    }

    /// Waits for pending tokens: stays runnable, and the scheduler runs
    /// this thread again only once it has acquired all its tokens.
    pub(crate) fn block_for_tokens(&mut self) {
        self.requeue_and_switch();
    }

    #[inline(never)]
    fn requeue_and_switch(&mut self) {
        let cpu = self.cpu_ref();
        let td = self.td.td();
        let f = td.flags.get() & !tdf::RUNNING;
        if f & tdf::DESCHED != 0 {
            // A deschedule() arrived while we ran: park instead.
            td.flags.set((f & !tdf::DESCHED) | tdf::PARKED);
            self.switch_out();
            return;
        }
        if f & tdf::NESTED != 0 || td.crit.get() != 0 || cpu.stopping() {
            // Resumed by another thread: go back to it.
            td.flags.set(f);
            cpu.make_runnable(self.td);
            self.switch_out();
        } else if td.tok_used.get() == 0 && cpu.quiet() {
            td.flags.set(f | tdf::PREEMPTED);
            self.run_peers_in_line();
        } else {
            // The running thread is never a preemption candidate of its
            // own CPU, so a plain enqueue does what make_runnable would.
            td.flags.set(f | tdf::PREEMPTED);
            cpu.runq.push_back(self.td);
            self.run_peers_until_our_turn();
        }
    }

    /// `run_peers_until_our_turn` for the common case (no tokens, nothing
    /// pending on the CPU), without queueing this thread: it takes a place
    /// in line instead and runs the threads ahead of that place. The
    /// outcome is the same as queueing, minus an enqueue and a dequeue per
    /// yield. Anything unusual (a peer that needs tokens, an IPI, a timer)
    /// links the thread at its place and goes on the general way.
    fn run_peers_in_line(&mut self) {
        let me = self.td;
        let cpu = self.cpu_ref();
        let ticket = cpu.runq.ticket();
        loop {
            let pri = me.td().pri.get();
            // Set on every pass: a peer may change our priority.
            cpu.runq.line_up(pri);
            match cpu.runq.first() {
                Some(b) if cpu.runq.ahead_of(b, pri, ticket) => {
                    if b.td().tok_used.get() != 0 {
                        break;
                    }
                    cpu.runq.remove(b);
                    let res = cpu.run_nested_core(me, b);
                    cpu.after_switch(b, res);
                    if !cpu.quiet() {
                        break;
                    }
                }
                _ => {
                    cpu.runq.leave_line();
                    self.our_turn();
                    return;
                }
            }
        }
        cpu.runq.leave_line();
        cpu.runq.insert_at(me, ticket);
        self.run_peers_until_our_turn();
    }

    /// A yielding thread's turn came (it is off the run queue): run on, or
    /// park if a `deschedule` arrived meanwhile.
    #[inline]
    fn our_turn(&mut self) {
        let td = self.td.td();
        let f = td.flags.get() & !tdf::PREEMPTED;
        if f & tdf::DESCHED != 0 {
            td.flags.set((f & !tdf::DESCHED) | tdf::PARKED);
            self.switch_out();
        } else {
            td.flags.set(f | tdf::RUNNING);
        }
    }

    /// The switch-out half of a yield, done on this thread's own stack
    /// instead of the scheduler's: release our tokens, then run the
    /// threads ahead of us in the run queue, each nested on top of us and
    /// returning here when it switches out, until the scan reaches us
    /// again (with our tokens re-acquired). Same order and token rules as
    /// the scheduler's scan, one context switch per thread instead of two.
    /// When no queued thread can get its tokens, falls back to the
    /// scheduler.
    fn run_peers_until_our_turn(&mut self) {
        let me = self.td;
        let cpu = self.cpu_ref();
        if me.td().tok_used.get() != 0 {
            cpu.tokens_release_all(me);
        }
        // `me` is queued and PREEMPTED (not RUNNING) while its peers run.
        loop {
            match cpu.pick() {
                Some(t) if t == me => {
                    self.our_turn();
                    return;
                }
                Some(t) => {
                    let res = cpu.run_nested_core(me, t);
                    cpu.after_switch(t, res);
                }
                None => break,
            }
            if !cpu.quiet() {
                cpu.poll_attention();
                cpu.expire_timers();
                if cpu.stopping() {
                    break;
                }
            }
        }
        // Still queued: let the scheduler take over.
        me.td().clear(tdf::PREEMPTED);
        self.switch_out();
    }

    /// Raw deschedule of the current thread (`lwkt_deschedule_self` +
    /// `lwkt_switch`): it runs again only after an explicit
    /// [`ThreadRef::schedule`](crate::ThreadRef::schedule). Like
    /// `std::thread::park`, a `schedule` that arrived while the thread was
    /// running is remembered and makes this return at once. Wakeups on wait
    /// channels do not end a park.
    ///
    /// Inlined, switch included, for the reason given at
    /// [`yield_now`](Self::yield_now): an interrupt thread parked here
    /// resumes straight into its loop.
    #[doc(alias = "lwkt_deschedule_self")]
    #[inline(always)]
    pub fn park(&mut self) {
        let td = self.td.td();
        if td.has(tdf::PERMIT) {
            td.clear(tdf::PERMIT);
            return;
        }
        if self.cancelled() {
            return;
        }
        td.clear(tdf::RUNNING | tdf::DESCHED);
        td.set(tdf::PARKED);
        td.wmesg.set("park");
        self.switch_out();
    }

    /// Registers this thread on `chan` without sleeping yet
    /// (`tsleep_interlock`). Check the condition after this call, then call
    /// [`sleep`](Self::sleep) on the same channel: a wakeup that arrives in
    /// between is not lost (the sleep returns at once).
    #[doc(alias = "tsleep_interlock")]
    pub fn sleep_interlock<C: ?Sized>(&mut self, chan: &C) {
        self.sleep_register(chan_addr(chan));
        // Order the registration before the caller's reads of its
        // condition (pairs with the fence in `wakeup`).
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// The registration part of `sleep_interlock`, without the fence: for
    /// callers whose condition is a SeqCst read-modify-write, which orders
    /// it already (join).
    fn sleep_register(&mut self, a: usize) {
        let td = self.td.td();
        let cpu = self.cpu_ref();
        if td.has(tdf::TSLEEPQ) {
            cpu.sleepq.remove(self.td);
        }
        td.clear(tdf::WOKEN);
        cpu.sleepq_insert(self.td, a);
    }

    /// Withdraws an interlocked registration made by
    /// [`sleep_interlock`](Self::sleep_interlock) when the caller decides
    /// not to sleep after all (`tsleep_remove`).
    #[doc(alias = "tsleep_remove")]
    pub fn sleep_remove(&mut self) {
        let td = self.td.td();
        if td.has(tdf::TSLEEPQ) {
            self.cpu_ref().sleepq.remove(self.td);
        }
        td.clear(tdf::WOKEN);
    }

    /// Sleeps on the wait channel `chan` (any address) until a
    /// [`wakeup`]/[`wakeup_one`] on it, the timeout, or (when
    /// interruptible) an interrupt (`tsleep`). Tokens the thread holds are
    /// released while it sleeps and re-acquired before it returns.
    ///
    /// Wakeups may be spurious; re-check the condition in a loop.
    #[doc(alias = "tsleep")]
    pub fn sleep<C: ?Sized>(&mut self, chan: &C, opts: Sleep) -> Result<(), SleepError> {
        let a = chan_addr(chan);
        let t = self.td;
        let td = t.td();
        let cpu = self.cpu_ref();
        if self.cancelled() {
            return Err(SleepError::Interrupted);
        }
        if opts.interruptible
            && td
                .ctl()
                .is_some_and(|c| c.interrupt.swap(false, Ordering::AcqRel))
        {
            self.sleep_remove();
            return Err(SleepError::Interrupted);
        }
        let registered = td.has(tdf::TSLEEPQ) && td.wchan.get() == a;
        if !registered {
            if td.has(tdf::WOKEN) && td.wchan.get() == a {
                // Woken between sleep_interlock and here.
                td.clear(tdf::WOKEN);
                return Ok(());
            }
            if td.has(tdf::TSLEEPQ) {
                cpu.sleepq.remove(t);
            }
            cpu.sleepq_insert(t, a);
        }
        td.clear(tdf::WOKEN | tdf::RUNNING);
        td.wmesg.set(opts.wmesg);
        td.set(tdf::SLEEPING);
        if opts.interruptible {
            td.set(tdf::SINTR);
        }
        td.sleep_seq.set(td.sleep_seq.get() + 1);
        if let Some(d) = opts.timeout {
            cpu.arm_timer(t, Instant::now() + d);
        }
        self.switch_out();
        let td = self.td.td();
        // Any timer still armed for this sleep is now stale.
        td.sleep_seq.set(td.sleep_seq.get() + 1);
        if td.has(tdf::CANCEL) {
            return Err(SleepError::Interrupted);
        }
        match td.wake.get() {
            Wake::Wakeup => Ok(()),
            Wake::Timeout => Err(SleepError::TimedOut),
            Wake::Interrupt => Err(SleepError::Interrupted),
        }
    }

    /// Sleeps on `chan` until `cond()` holds: checks it, registers with the
    /// interlock, checks again, sleeps, and repeats after every wakeup, so
    /// a wakeup that comes between a check and the sleep is never lost and
    /// spurious wakeups are absorbed. Returns at once if `cond()` already
    /// holds; an error from the sleep (timeout, interrupt) ends the wait.
    ///
    /// ```
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use std::sync::Arc;
    /// # let rt = lwkt::Runtime::builder().cpus(2).build()?;
    /// rt.block_on(|td| {
    ///     let flag = Arc::new(AtomicBool::new(false));
    ///     let f = flag.clone();
    ///     let h = lwkt::ThreadBuilder::new().cpu(1).spawn(td, move |td| {
    ///         td.sleep_until(&*f, lwkt::Sleep::default(), || f.load(Ordering::Acquire))
    ///     }).unwrap();
    ///     flag.store(true, Ordering::Release);
    ///     lwkt::wakeup(&*flag);
    ///     assert!(h.join(td).unwrap().is_ok());
    /// });
    /// # Ok::<(), lwkt::Error>(())
    /// ```
    pub fn sleep_until<C: ?Sized>(
        &mut self,
        chan: &C,
        opts: Sleep,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), SleepError> {
        while !cond() {
            self.sleep_interlock(chan);
            if cond() {
                self.sleep_remove();
                break;
            }
            self.sleep(chan, opts)?;
        }
        Ok(())
    }

    /// Sleeps for `d` (a sleep on a private channel with a timeout).
    pub fn sleep_for(&mut self, d: Duration) {
        let chan = 0u8;
        let deadline = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= deadline || self.cancelled() {
                return;
            }
            let _ = self.sleep(
                &chan,
                Sleep::default().timeout(deadline - now).wmesg("sleep_for"),
            );
        }
    }

    /// Spawns a thread on this CPU at the default priority.
    ///
    /// # Panics
    /// When no stack can be mapped; use [`ThreadBuilder::spawn`] to get the
    /// error instead.
    pub fn spawn<F, T>(&mut self, f: F) -> JoinHandle<T>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new()
            .spawn(self, f)
            .unwrap_or_else(|e| panic!("lwkt: spawn failed: {e}"))
    }
}

// -------------------------------------------------------------------
// Join packets
// -------------------------------------------------------------------

/// Packet state bits.
///
/// | bit | name      | meaning                                         |
/// |-----|-----------|-------------------------------------------------|
/// | 0   | DONE      | the result slot is written (or cancelled)       |
/// | 1   | WAITING   | an lwkt joiner may sleep on the packet          |
/// | 2   | OS_WAITER | an OS thread waits in `join_blocking`           |
/// | 3   | CANCELLED | the thread was unwound by runtime shutdown      |
mod pk {
    pub(super) const DONE: u8 = 1 << 0;
    pub(super) const WAITING: u8 = 1 << 1;
    pub(super) const OS_WAITER: u8 = 1 << 2;
    pub(super) const CANCELLED: u8 = 1 << 3;
}

pub(crate) struct Packet<T> {
    ctl: Ctl,
    state: AtomicU8,
    /// Written once by the thread before DONE is published (Release);
    /// read once by the joiner after seeing DONE (Acquire).
    result: UnsafeCell<Option<Result<T, Panicked>>>,
    os_waiter: Mutex<Option<std::thread::Thread>>,
}

// SAFETY: the result slot is handed from the thread to the joiner through
// the DONE bit's Release/Acquire; T: Send is required to move it.
unsafe impl<T: Send> Sync for Packet<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Packet<T> {}

impl<T> Packet<T> {
    fn new(shared: Arc<Shared>, tid: u64, cpu: usize) -> Arc<Packet<T>> {
        Arc::new(Packet {
            ctl: Ctl::new(shared, tid, cpu),
            state: AtomicU8::new(0),
            result: UnsafeCell::new(None),
            os_waiter: Mutex::new(None),
        })
    }

    fn complete(&self, r: Result<T, Panicked>) {
        // SAFETY: only the thread writes the slot, once, before DONE.
        unsafe { *self.result.get() = Some(r) };
        self.publish(pk::DONE);
    }

    fn publish(&self, bits: u8) {
        let prev = self.state.fetch_or(bits, Ordering::SeqCst);
        if prev & pk::WAITING != 0 {
            // The SeqCst RMW above already orders this after the joiner's
            // registration (see join): skip wakeup's fence.
            crate::runtime::wakeup_addr_ordered(self as *const Self as usize);
        }
        if prev & pk::OS_WAITER != 0 {
            if let Some(t) = self
                .os_waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t.unpark();
            }
        }
    }

    fn take(&self) -> Result<T, Panicked> {
        // SAFETY: DONE was observed with Acquire by our caller, and the
        // JoinHandle (consumed by value) is the only reader.
        let r = unsafe { (*self.result.get()).take() };
        r.unwrap_or_else(|| {
            Err(Panicked::new(
                "thread cancelled: the runtime shut down before it finished".into(),
            ))
        })
    }
}

impl<T: Send> PacketCtl for Packet<T> {
    fn ctl(&self) -> &Ctl {
        &self.ctl
    }

    fn finished(&self) -> bool {
        self.state.load(Ordering::Acquire) & pk::DONE != 0
    }

    fn cancel(&self) {
        if self.state.load(Ordering::Acquire) & pk::DONE == 0 {
            self.publish(pk::DONE | pk::CANCELLED);
        }
    }
}

/// Owns the right to collect a thread's result. Dropping it detaches the
/// thread.
#[must_use = "dropping a JoinHandle detaches the thread"]
pub struct JoinHandle<T> {
    packet: Arc<Packet<T>>,
}

impl<T: Send + 'static> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId(self.packet.ctl.tid)
    }

    /// Whether the thread has finished (or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.packet.state.load(Ordering::Acquire) & pk::DONE != 0
    }

    /// Waits for the thread to finish and returns its value, or
    /// [`Panicked`] with the panic message if it panicked.
    pub fn join(self, td: &mut CurThread) -> Result<T, Panicked> {
        let p = &*self.packet;
        if p.state.load(Ordering::Acquire) & pk::DONE == 0 {
            td.join_directly(&p.ctl);
        }
        loop {
            if p.state.load(Ordering::Acquire) & pk::DONE != 0 {
                return p.take();
            }
            // No fence needed: the SeqCst fetch_or below, paired with the
            // thread's SeqCst fetch_or of DONE, orders our registration
            // before its read of the sleeper mask.
            td.sleep_register(p as *const Packet<T> as usize);
            let prev = p.state.fetch_or(pk::WAITING, Ordering::SeqCst);
            if prev & pk::DONE != 0 {
                td.sleep_remove();
                continue;
            }
            if td.sleep(p, Sleep::default().wmesg("join")).is_err() && td.cancelled() {
                return Err(Panicked::new(
                    "join abandoned: the runtime is shutting down".into(),
                ));
            }
        }
    }

    /// Waits from a plain OS thread (blocking it) for the thread to
    /// finish. Do not call this from an lwkt thread: it would block the
    /// whole CPU; use [`join`](Self::join) there.
    pub fn join_blocking(self) -> Result<T, Panicked> {
        let p = &*self.packet;
        if current_cpu().is_some_and(|c| Arc::ptr_eq(&c.shared, &p.ctl.shared)) {
            panic!("lwkt: join_blocking called from a thread of the same runtime; use join(td)");
        }
        *p.os_waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        p.state.fetch_or(pk::OS_WAITER, Ordering::SeqCst);
        while p.state.load(Ordering::Acquire) & pk::DONE == 0 {
            std::thread::park();
        }
        p.take()
    }

    /// Asks the thread to interrupt its current or next interruptible
    /// sleep, which then returns [`SleepError::Interrupted`].
    pub fn interrupt(&self) {
        self.thread().interrupt();
    }

    /// A reference to the thread for explicit scheduling (`lwkt_hold`):
    /// it stays valid (and harmless) after the thread exits.
    pub fn thread(&self) -> crate::ThreadRef {
        crate::ThreadRef::from_packet(self.packet.clone() as Arc<dyn PacketCtl>)
    }
}

// -------------------------------------------------------------------
// Spawning
// -------------------------------------------------------------------

/// Configures a new thread (`lwkt_create`).
#[derive(Clone, Debug, Default)]
#[must_use = "a ThreadBuilder does nothing until spawn() is called"]
pub struct ThreadBuilder {
    name: Option<String>,
    cpu: Option<usize>,
    priority: Option<Priority>,
    stack_size: Option<usize>,
    interrupt: bool,
}

impl ThreadBuilder {
    /// A builder with the defaults: the spawning thread's CPU, priority
    /// `KERN_DAEMON`, the runtime's stack size.
    pub fn new() -> Self {
        Self::default()
    }

    /// The thread's name (shown in listings).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The CPU to run on.
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// The fixed priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }

    /// Makes an interrupt-class thread (`TDF_INTTHREAD`): its priority is
    /// raised to at least [`Priority::INT_SUPPORT`], and making it runnable
    /// on its CPU preempts a lower-priority running thread at once (unless
    /// that thread is in a critical section, or this one holds tokens).
    pub fn interrupt(mut self) -> Self {
        self.interrupt = true;
        self
    }

    /// Stack size in bytes (at least 16 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    fn check(&self, shared: &Shared) -> Result<(usize, u8), Error> {
        if let Some(c) = self.cpu {
            if c >= shared.ncpus() {
                return Err(Error::InvalidCpu {
                    cpu: c,
                    ncpus: shared.ncpus(),
                });
            }
        }
        let size = self.stack_size.unwrap_or(shared.config.stack_size);
        if size < MIN_STACK_SIZE {
            return Err(Error::StackTooSmall {
                requested: size,
                min: MIN_STACK_SIZE,
            });
        }
        let size = crate::stack::round_stack_size(size).unwrap_or(size);
        let mut pri = self.priority.unwrap_or_default();
        if self.interrupt && pri < Priority::INT_SUPPORT {
            pri = Priority::INT_SUPPORT;
        }
        // The interrupt flag rides in bit 7 of the priority byte to
        // create_thread.
        Ok((size, pri.get() | if self.interrupt { 0x80 } else { 0 }))
    }

    /// Spawns from inside the runtime. Placing the thread on another CPU
    /// sends the creation there by IPI; the stack is mapped here, so an
    /// allocation failure is returned to the caller.
    #[doc(alias = "lwkt_create")]
    pub fn spawn<F, T>(self, td: &mut CurThread, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        let cpu = td.cpu_ref();
        let shared = &cpu.shared;
        let (size, pri) = self.check(shared)?;
        let target = self.cpu.unwrap_or(cpu.id);
        let stack = cpu.alloc_stack(size)?;
        let tid = cpu.alloc_tid();
        let packet = Packet::new(shared.clone(), tid, target);
        let h = JoinHandle {
            packet: packet.clone(),
        };
        let name = self.name.map(String::into_boxed_str);
        if target == cpu.id {
            create_thread(cpu, stack, tid, pri, name, f, packet);
            // Scheduling an interrupt thread here may preempt us now.
            cpu.preempt_check();
        } else {
            cpu.send(
                target,
                IpiMsg::Call(Box::new(move |c: &Cpu| {
                    create_thread(c, stack, tid, pri, name, f, packet)
                })),
            );
        }
        Ok(h)
    }

    /// Spawns from outside the runtime through a [`Handle`] (on the chosen
    /// CPU, or the next in round-robin order).
    pub fn spawn_from<F, T>(self, handle: &Handle, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = &handle.shared;
        if shared.shutdown.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let (size, pri) = self.check(shared)?;
        let target = self.cpu.unwrap_or_else(|| shared.pick_cpu());
        let stack = Stack::new(size)?;
        let tid = shared.alloc_ext_tid();
        let packet = Packet::new(shared.clone(), tid, target);
        let h = JoinHandle {
            packet: packet.clone(),
        };
        let name = self.name.map(String::into_boxed_str);
        let msg = IpiMsg::Call(Box::new(move |c: &Cpu| {
            create_thread(c, stack, tid, pri, name, f, packet)
        }));
        match current_cpu() {
            Some(c) if Arc::ptr_eq(&c.shared, shared) => c.send(target, msg),
            _ => shared.send_external(target, msg)?,
        }
        Ok(h)
    }
}

/// Builds the thread structure and coroutine on the owning CPU and makes
/// it runnable (`lwkt_init_thread` + `lwkt_schedule`).
fn create_thread<F, T>(
    cpu: &Cpu,
    stack: Stack,
    tid: u64,
    pri: u8,
    name: Option<Box<str>>,
    f: F,
    packet: Arc<Packet<T>>,
) where
    F: FnOnce(&mut CurThread) -> T + Send + 'static,
    T: Send + 'static,
{
    let t = cpu.alloc_thread();
    let td = t.td();
    td.id.set(tid);
    td.pri.set(pri & 0x7F);
    if pri & 0x80 != 0 {
        td.set(tdf::INTTHREAD);
    }
    td.stack_size.set(stack.usable_size());
    let pkp: NonNull<dyn PacketCtl> = NonNull::from(&*packet as &dyn PacketCtl);
    packet.ctl.td.store(t.as_ptr(), Ordering::Release);
    let pk = packet; // the closure owns the thread's reference
    let coro = Coroutine::with_stack(stack, move |y: &Yld, ()| {
        t.td().yielder.set(y);
        let mut cur = CurThread {
            td: t,
            _not_send: PhantomData,
        };
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut cur)));
        if t.td().tok_used.get() != 0 && !t.td().has(tdf::CANCEL) {
            // References left by forgotten guards: release them before the
            // result is published, so a joiner finds the tokens free.
            cur.cpu_ref().tokens_drop_all(t);
        }
        match r {
            Ok(v) => pk.complete(Ok(v)),
            Err(p) => {
                if t.td().has(tdf::CANCEL) {
                    // Runtime shutdown unwinds through here: let it finish
                    // (cancel_all cleared the packet pointers already).
                    resume_unwind(p);
                }
                pk.complete(Err(Panicked::from_payload(&*p)));
            }
        }
        // Let go of the packet: first the pointers others follow.
        pk.ctl.td.store(std::ptr::null_mut(), Ordering::Release);
        t.td().packet.set(None);
        drop(pk);
    });
    td.packet.set(Some(pkp));
    // SAFETY: the structure was just allocated by this CPU and is not
    // running; nothing else refers to these slots.
    unsafe {
        *td.name.get() = name;
        *td.coro.get() = Some(coro);
    }
    if cpu.shutting_down.get() {
        // Created while the CPU cancels its threads: it will be unwound
        // (its closure dropped) without running.
        td.set(tdf::CANCEL);
    }
    cpu.make_runnable(t);
}

/// Wakes every thread sleeping on `chan`, on every CPU of every runtime
/// (`wakeup`). Callable from lwkt threads and plain OS threads alike.
pub fn wakeup<C: ?Sized>(chan: &C) {
    wakeup_addr(chan_addr(chan), false);
}

/// Wakes one thread sleeping on `chan` (`wakeup_one`). With several
/// runtimes, one thread per runtime.
pub fn wakeup_one<C: ?Sized>(chan: &C) {
    wakeup_addr(chan_addr(chan), true);
}
