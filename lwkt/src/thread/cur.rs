//! [`CurThread`]: the running thread's handle (`curthread`), through which
//! a thread yields, sleeps, parks, spawns and migrates.
//!
//! Every operation that can switch the calling thread away takes
//! `&mut CurThread`; that is what keeps references to token-protected
//! data (which borrow the `CurThread`) from living across a switch.
//! Token acquisition (`get_token` and friends) is added to `CurThread` by
//! the `token` module, one layer up.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::handle::Handle;
use super::join::JoinHandle;
use super::spawn::ThreadBuilder;
use super::thread_ref::{CritSection, ThreadRef};
use crate::error::{Error, SleepError};
use crate::priority::Priority;
use crate::sched::core::Core;
use crate::sched::td::{tdf, TdPtr, Thread};

/// A thread's identity: unique in the process, never reused (not even by
/// another runtime), so it identifies one thread for as long as the
/// process lives.
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
        write!(f, "td{}", self.0)
    }
}

/// The running lwkt thread (`curthread`). A thread receives
/// `&mut CurThread` as its argument; it cannot be sent to another thread or
/// stored beyond the call.
///
/// ```compile_fail,E0277
/// fn f(td: &mut lwkt::CurThread) {
///     let p: *mut lwkt::CurThread = td;
///     fn send<S: Send>(_: S) {}
///     send(unsafe { &mut *p }); // CurThread is not Send
/// }
/// ```
pub struct CurThread {
    t: TdPtr,
    /// What an upper layer (the LWP layer) attached to this thread: run at
    /// switch points when the thread's UPCALL flag is set. Invariant: set
    /// only by the thread's spawn (`Keeper::upcall`), pointing into the
    /// keeper its coroutine holds for its whole run; the coroutine lets go
    /// of the keeper only after its last use of this `CurThread`, so the
    /// pointer is valid wherever a `CurThread` can be reached.
    upcall: Option<NonNull<dyn Upcall>>,
    _not_send: PhantomData<*mut ()>,
}

/// The hook an upper layer (the LWP layer) attaches to a thread it runs.
/// The core only sets the thread's UPCALL flag on request
/// ([`ThreadRef::upcall`]); the thread itself calls the hook, on its own
/// stack, at its next switch point.
pub(crate) trait Upcall: Send + Sync + 'static {
    /// Called at a switch point after UPCALL was seen (and cleared): the
    /// thread may stop here (park until continued), or unwind (exit).
    fn at_switch_point(&self, td: &mut CurThread);
    /// Whether an interruptible sleep must fail at once (a level, such as
    /// a pending signal, not an edge).
    fn interrupts_sleep(&self) -> bool;
    /// For the upper layer to find its own type again.
    fn as_any(&self) -> &dyn Any;
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

    /// Let [`ThreadRef::interrupt`] end the sleep with
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
pub(crate) fn chan_addr<C: ?Sized>(chan: &C) -> usize {
    chan as *const C as *const () as usize
}

impl CurThread {
    /// The handle of the thread `t`, which is about to run its function,
    /// with the upper layer's hook its keeper attaches (see the field).
    pub(crate) fn new(t: TdPtr, upcall: Option<NonNull<dyn Upcall>>) -> CurThread {
        CurThread {
            t,
            upcall,
            _not_send: PhantomData,
        }
    }

    /// The upper layer's hook, if one is attached.
    #[inline]
    pub(crate) fn upcall(&self) -> Option<&dyn Upcall> {
        // SAFETY: valid while this CurThread exists (the field's invariant).
        self.upcall.map(|u| unsafe { &*u.as_ptr() })
    }

    /// A switch point: after anything that may have switched the thread
    /// out, one test of a flag the switch just touched. Only a thread an
    /// upper layer sent a request to takes the branch.
    #[inline(always)]
    pub(crate) fn switch_point(&mut self) {
        if self.thread().flags.get() & tdf::UPCALL != 0 {
            self.run_upcall();
        }
    }

    #[cold]
    #[inline(never)]
    fn run_upcall(&mut self) {
        self.thread().clear(tdf::UPCALL);
        self.run_upcall_now();
    }

    /// Calls the upper layer's hook now, if one is attached (a switch
    /// point the upper layer makes itself, such as a self-suspend).
    pub(crate) fn run_upcall_now(&mut self) {
        if let Some(u) = self.upcall {
            // SAFETY: valid while this CurThread exists (the field's
            // invariant), which the call's `&mut self` outlives.
            unsafe { u.as_ref() }.at_switch_point(self);
        }
    }

    /// `park` without a switch point (for the upper layer's own stop loop).
    pub(crate) fn park_raw(&mut self) {
        self.core().park_cur(self.thread());
    }

    /// Releases the thread's tokens now, before it publishes that it is
    /// stopping (so "stopped" implies "holds no token"). The thread must
    /// not touch token data until [`reacquire_tokens`](Self::reacquire_tokens):
    /// only the upper layer's stop loop, which has no guard in hand, calls
    /// this, and it always ends with `reacquire_tokens`.
    pub(crate) fn release_tokens_early(&mut self) {
        let td = self.thread();
        if !td.toks.is_empty() {
            td.toks.release_all();
        }
    }

    /// Gets back every token released by
    /// [`release_tokens_early`](Self::release_tokens_early) (a park that
    /// returned at once, on a permit, never went through the scheduler,
    /// which re-acquires them otherwise): waits for them like a blocked
    /// acquisition.
    pub(crate) fn reacquire_tokens(&mut self) {
        let td = self.thread();
        if !td.toks.is_empty() && !td.toks.all_held() {
            self.core().block_for_tokens(self.t, td);
        }
    }

    /// Whether the upper layer wants interruptible sleeps to fail now.
    #[inline]
    fn sleep_interrupted_by_upcall(&self) -> bool {
        self.upcall().is_some_and(|u| u.interrupts_sleep())
    }

    #[inline]
    pub(crate) fn td_ptr(&self) -> TdPtr {
        self.t
    }

    /// The running thread's structure.
    #[inline]
    pub(crate) fn thread(&self) -> &Thread {
        // SAFETY: a CurThread exists only on its own thread's stack, while
        // that thread runs (or unwinds); the structure is recycled only
        // after the thread's coroutine finished, which is after every
        // borrow of this CurThread ended.
        unsafe { self.t.td() }
    }

    /// The CPU the running thread is on.
    #[inline]
    pub(crate) fn core(&self) -> &Core {
        // SAFETY: a thread's `core` always points at the live Core that
        // owns it (updated on the new CPU when it migrates, before it runs
        // there), and a Core outlives every run of its threads. The borrow
        // is tied to `&self`; a migration needs `&mut self`, so no borrow
        // from before it survives it.
        unsafe { &*self.thread().core.get() }
    }

    /// This thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId(self.thread().tid.get())
    }

    /// The CPU this thread runs on.
    pub fn cpu(&self) -> usize {
        self.core().id
    }

    /// How many CPUs the runtime has.
    pub fn ncpus(&self) -> usize {
        self.core().machine.ncpus()
    }

    /// The thread's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.thread().name()
    }

    /// The thread's priority.
    pub fn priority(&self) -> Priority {
        Priority::new(self.thread().pri.get()).expect("thread priority in range")
    }

    /// Changes this thread's priority (`lwkt_setpri_self`). Lowering it
    /// below a runnable thread's does not switch by itself; the next
    /// `maybe_yield` or `yield_now` does.
    #[doc(alias = "lwkt_setpri_self")]
    pub fn set_priority(&mut self, p: Priority) {
        self.thread().pri.set(p.get());
    }

    /// A handle to this thread's runtime.
    pub fn handle(&self) -> Handle {
        Handle::new(self.core().machine.clone())
    }

    /// Whether the runtime is unwinding this thread (shutdown).
    #[inline]
    pub(crate) fn cancelled(&self) -> bool {
        self.thread().has(tdf::CANCEL)
    }

    /// Lets every runnable thread of equal or higher priority on this CPU
    /// run first, then returns. Never switches to a lower-priority thread
    /// (one exception, from DragonFly: a thread an interrupt thread
    /// preempted is resumed before its equal-priority peers, since it never
    /// gave up its turn). Returns at once when nothing else is runnable.
    #[inline(always)]
    pub fn yield_now(&mut self) {
        self.core().yield_cur(self.t, self.thread());
        self.switch_point();
    }

    /// Gives thread `tid` its turn now if it is the very next thread
    /// this CPU would run (first in its run queue): it runs right here by
    /// handoff (see `Core::handoff`), as `JoinHandle::join` does, until it
    /// switches out for any reason (exit, yield, sleep). Then, as after a
    /// yield, the caller goes behind the peers of its priority that were
    /// waiting, and passes a switch point. Returns false, doing nothing,
    /// when `tid` is not that thread (on another CPU, not queued, not
    /// first, or gone): the caller then decides whether to yield.
    ///
    /// For upper layers that wait for a thread they just made runnable
    /// (the LWP layer's `wait`): one switch each way instead of two, and
    /// never more than one turn of that thread, so a thread that yields or
    /// sleeps cannot keep the caller off its CPU. Thread ids are never
    /// reused, so a stale id only makes this return false.
    pub(crate) fn run_if_next(&mut self, tid: ThreadId) -> bool {
        let core = self.core();
        let Some(b) = core.runq.first() else {
            return false;
        };
        // SAFETY: `b` is queued on this CPU: alive, and owned by this CPU.
        if unsafe { b.td() }.tid.get() != tid.as_u64() {
            return false;
        }
        if !core.handoff(self.t, self.thread(), b) {
            return false;
        }
        if core.runq.has_at_least(self.thread().pri.get()) {
            self.core().yield_cur(self.t, self.thread());
        }
        self.switch_point();
        true
    }

    /// Runs a preemption made due meanwhile (see `PlannedSpawn::launch`
    /// without `preempt`), if one is.
    #[inline]
    pub(crate) fn preempt_point(&mut self) {
        self.core().preempt_check();
    }

    /// Switches only if a reschedule is wanted: a higher-priority thread is
    /// runnable, messages from other CPUs wait, or the scheduler clock
    /// ticked while equal-priority peers wait (`lwkt_yield`). Otherwise it
    /// costs a few loads, so it can sit in a tight loop.
    #[doc(alias = "lwkt_yield")]
    #[inline]
    pub fn maybe_yield(&mut self) {
        // The switch point runs whenever a slow path ran; the fast path
        // is never taken while UPCALL is set on this thread (invariant
        // (5) of `Core::maybe_yield_cur`).
        if self.core().maybe_yield_cur(self.t, self.thread()) {
            self.switch_point();
        }
    }

    /// Raw deschedule of the current thread (`lwkt_deschedule_self` +
    /// `lwkt_switch`): it runs again only after an explicit
    /// [`ThreadRef::schedule`]. Like `std::thread::park`, a `schedule` that
    /// arrived while the thread was running is remembered and makes this
    /// return at once. Wakeups on wait channels do not end a park; runtime
    /// shutdown does.
    #[doc(alias = "lwkt_deschedule_self")]
    #[inline]
    pub fn park(&mut self) {
        self.core().park_cur(self.thread());
        self.switch_point();
    }

    /// Registers this thread on `chan` without sleeping yet
    /// (`tsleep_interlock`). Check the condition after this call, then call
    /// [`sleep`](Self::sleep) on the same channel: a wakeup that arrives in
    /// between is not lost (the sleep returns at once).
    #[doc(alias = "tsleep_interlock")]
    pub fn sleep_interlock<C: ?Sized>(&mut self, chan: &C) {
        self.core()
            .sleep_interlock_cur(self.t, self.thread(), chan_addr(chan));
    }

    /// The registration part of `sleep_interlock`, without the fence: for
    /// callers whose condition is a SeqCst read-modify-write, which orders
    /// it already (join).
    pub(crate) fn sleep_register(&mut self, chan: usize) {
        self.core().sleep_register(self.t, self.thread(), chan);
    }

    /// Withdraws an interlocked registration made by
    /// [`sleep_interlock`](Self::sleep_interlock) when the caller decides
    /// not to sleep after all (`tsleep_remove`).
    #[doc(alias = "tsleep_remove")]
    pub fn sleep_remove(&mut self) {
        self.core().sleep_remove_cur(self.t, self.thread());
    }

    /// Sleeps on the wait channel `chan` (any address) until a
    /// [`wakeup`](crate::wakeup) or [`wakeup_one`](crate::wakeup_one) on
    /// it, the timeout, or (when interruptible) an interrupt (`tsleep`).
    /// Tokens the thread holds are released while it sleeps and
    /// re-acquired before it returns.
    ///
    /// Wakeups may be spurious; re-check the condition in a loop, or use
    /// [`sleep_until`](Self::sleep_until).
    ///
    /// # Errors
    /// [`SleepError::TimedOut`] when the timeout passed first;
    /// [`SleepError::Interrupted`] when an interruptible sleep was
    /// interrupted, or the runtime is shutting down.
    #[doc(alias = "tsleep")]
    pub fn sleep<C: ?Sized>(&mut self, chan: &C, opts: Sleep) -> Result<(), SleepError> {
        if opts.interruptible && self.sleep_interrupted_by_upcall() {
            self.sleep_remove();
            self.switch_point();
            return Err(SleepError::Interrupted);
        }
        let r = self.core().sleep_cur(
            self.t,
            self.thread(),
            chan_addr(chan),
            opts.timeout,
            opts.interruptible,
            opts.wmesg,
        );
        self.switch_point();
        r
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
    ///
    /// # Errors
    /// As [`sleep`](Self::sleep). A timeout applies to each sleep, not to
    /// the whole wait.
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
    ///
    /// # Errors
    /// [`SleepError::Interrupted`] when the runtime is shutting down
    /// before `d` has passed.
    pub fn sleep_for(&mut self, d: Duration) -> Result<(), SleepError> {
        let chan = 0u8;
        let deadline = Instant::now().checked_add(d);
        loop {
            if self.cancelled() {
                return Err(SleepError::Interrupted);
            }
            let left = match deadline {
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return Ok(());
                    }
                    Some(dl - now)
                }
                None => None, // beyond the clock's range: forever
            };
            let mut opts = Sleep::default().wmesg("sleep_for");
            if let Some(l) = left {
                opts = opts.timeout(l);
            }
            match self.sleep(&chan, opts) {
                Err(SleepError::Interrupted) => return Err(SleepError::Interrupted),
                _ => continue,
            }
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

    /// Enters a critical section (`crit_enter`); it ends when the returned
    /// guard is dropped (`crit_exit`).
    pub fn crit_enter(&self) -> CritSection {
        let td = self.thread();
        td.crit.set(td.crit.get() + 1);
        CritSection::new(td.tid.get())
    }

    /// Critical section depth (0 outside any).
    pub fn crit_count(&self) -> u32 {
        self.thread().crit.get()
    }

    /// A reference to this thread, for others to schedule it.
    pub fn thread_ref(&self) -> ThreadRef {
        ThreadRef::from_packet(
            self.thread()
                .packet_arc()
                .expect("every lwkt thread has a control block"),
        )
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
    /// be released by the OS thread that took it (std's `MutexGuard`).
    /// Token guards are fine: tokens are released and re-acquired by
    /// design.
    #[doc(alias = "lwkt_setcpu_self")]
    #[doc(alias = "lwkt_migratecpu")]
    pub unsafe fn migrate(&mut self, cpu: usize) -> Result<(), Error> {
        let n = self.ncpus();
        if cpu >= n {
            return Err(Error::InvalidCpu { cpu, ncpus: n });
        }
        if cpu == self.cpu() || self.cancelled() {
            return Ok(());
        }
        self.core().migrate_cur(self.thread(), cpu);
        self.switch_point();
        Ok(())
    }

    /// Parks this thread until `fd` is ready for `interest`, `timeout`
    /// passes, or the thread is interrupted; the CPU runs other threads
    /// meanwhile, or blocks in its poller when it has none to run. Works
    /// for any fd epoll accepts (sockets, pipes, eventfds, terminals...),
    /// from this crate or any other. Each wait arms a one-shot
    /// registration on this CPU (one `epoll_ctl`), since lwkt cannot know
    /// when a foreign fd closes; the sockets of [`crate::net`], which own
    /// their fds, keep a persistent edge-triggered registration instead
    /// and wait without that syscall.
    ///
    /// Readiness is level-triggered and may be stale by the time the
    /// thread runs: try the operation on a non-blocking fd, and wait again
    /// when it says `WouldBlock`. Tokens the thread holds are released
    /// while it waits and re-acquired before this returns, as in any
    /// sleep.
    ///
    /// # Errors
    /// `TimedOut` when `timeout` passed first; `Interrupted` after
    /// [`ThreadRef::interrupt`] or when the runtime is shutting down; the
    /// OS's error when the fd cannot be polled (a regular file: `EPERM`).
    ///
    /// # Panics
    /// When `interest` is empty.
    #[doc(alias = "select")]
    #[doc(alias = "poll")]
    pub fn wait_fd(
        &mut self,
        fd: impl std::os::fd::AsFd,
        interest: crate::sched::poll::Interest,
        timeout: Option<Duration>,
    ) -> std::io::Result<crate::sched::poll::Ready> {
        self.io_wait(|core, t, td| core.wait_fd_cur(t, td, fd.as_fd(), interest, timeout))
    }

    /// [`wait_fd`](Self::wait_fd) on a socket of [`crate::net`], through
    /// its persistent registration (see `sched/poll.rs`): the caller's
    /// operation said `WouldBlock`, or [`io_maybe_ready`](Self::io_maybe_ready)
    /// said it would.
    pub(crate) fn wait_reg(
        &mut self,
        reg: &crate::sched::poll::Registration,
        fd: std::os::fd::BorrowedFd<'_>,
        interest: crate::sched::poll::Interest,
        timeout: Option<Duration>,
    ) -> std::io::Result<crate::sched::poll::Ready> {
        self.io_wait(|core, t, td| core.wait_reg_cur(t, td, reg, fd, interest, timeout))
    }

    /// An fd wait (`wait`: the core's half) as an interruptible `sleep`:
    /// a pending LWP signal, stop or kill ends it before it starts, and
    /// the switch point after it lets the upper layer act (park for a
    /// stop, unwind for a kill).
    #[inline]
    fn io_wait(
        &mut self,
        wait: impl FnOnce(&Core, TdPtr, &Thread) -> std::io::Result<crate::sched::poll::Ready>,
    ) -> std::io::Result<crate::sched::poll::Ready> {
        if self.sleep_interrupted_by_upcall() {
            self.switch_point();
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "lwkt: wait_fd interrupted",
            ));
        }
        let r = wait(self.core(), self.t, self.thread());
        self.switch_point();
        r
    }

    /// Whether an operation for `interest` on `reg`'s socket is worth
    /// trying (false: the readiness cache on this CPU says it would
    /// block).
    #[inline]
    pub(crate) fn io_maybe_ready(
        &self,
        reg: &crate::sched::poll::Registration,
        interest: crate::sched::poll::Interest,
    ) -> bool {
        self.core().reg_maybe_ready(reg, interest)
    }

    /// Records that `interest` on `reg`'s socket is exhausted (a short
    /// stream read), where this CPU keeps its readiness cache.
    #[inline]
    pub(crate) fn io_clear(
        &self,
        reg: &crate::sched::poll::Registration,
        interest: crate::sched::poll::Interest,
    ) {
        self.core().reg_clear(reg, interest);
    }
}
