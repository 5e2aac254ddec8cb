//! A CPU's owner-only state (`struct globaldata`), and the lifecycle of
//! its threads: creation, exit, recycling and cancellation at shutdown.
//!
//! Who may touch what: a [`Core`] is created on its CPU's OS thread and
//! lives on that thread's stack for the life of the runtime. It is `!Send`
//! and `!Sync` (it is made of `Cell`s), so a `&Core` cannot leave that OS
//! thread, and the only ways to get one are from inside the CPU's loop, from
//! a running thread's `CurThread` (whose thread runs on this OS thread), or
//! through [`with_current`] on this OS thread. Other OS threads reach a
//! CPU only through its [`Remote`] (atomics: the mailbox and counters), and
//! every change they want is made by this CPU itself when it processes
//! their message.
//!
//! The switch path is in `switch.rs`, sleep and wakeup in `synch.rs`,
//! explicit scheduling and migration in `ops.rs`; they are all methods of
//! `Core` because they all act on the owner-only state defined here.
//!
//! [`Remote`]: super::machine::Remote

use std::cell::{Cell, OnceCell, RefCell};
use std::ptr::{self, NonNull};

use super::ctl::CtlOwner;
use super::machine::{Machine, Msg, Remote};
use super::ops::ThreadOp;
use super::poll::Poller;
use super::runq::RunQueue;
use super::sleepq::SleepQueues;
use super::td::{tdf, Coro, TdPtr, Thread};
use super::timers::Timers;
use crate::ipi::{Inbox, Outbox};
use crate::stack::Stack;
use crate::stats::Counters;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::Arc;
use crate::tokref::{Policy, TokenStats};
use crate::trace::{trace_event, CoreTrace};

/// How many exited threads' structures a CPU keeps for reuse.
const THREAD_CACHE: usize = 1024;
/// How many default-size stacks a CPU keeps for reuse.
const STACK_CACHE: usize = 256;
/// Thread ids a CPU takes from the process-wide counter at a time.
const TID_BLOCK: u64 = 1024;

/// The process-wide source of thread ids: ids are never reused, in any
/// runtime, so an id is an identity for the life of the process.
static NEXT_TID: AtomicU64 = AtomicU64::new(1);

/// A fresh thread id for a thread created outside any CPU (`Handle`).
pub(crate) fn alloc_tid_global() -> u64 {
    NEXT_TID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// The CPU whose OS thread this is, while its loop runs. Const-
    /// initialised without a destructor: also readable from the overflow
    /// signal handler.
    static CURRENT: Cell<*const Core> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with this OS thread's CPU, if it is one (`mycpu`). The borrow
/// cannot escape `f`.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    let p = CURRENT.with(Cell::get);
    // SAFETY: the pointer is set by `Core::enter` for exactly the time the
    // Core lives on this OS thread (its loop, or the teardown stand-in)
    // and reset before the Core is gone; `f`'s borrow ends before this
    // returns, which is before either.
    unsafe { p.as_ref() }.map(f)
}

/// The owner-only state of one CPU. See the module header.
pub(crate) struct Core {
    /// The CPU's number.
    pub(crate) id: usize,
    /// The runtime's shared state (kept alive by this Arc).
    pub(crate) machine: Arc<Machine>,
    /// This CPU's entry in `machine.cpus`, cached for the hot paths.
    remote: NonNull<Remote>,
    /// Runnable threads, by priority.
    pub(crate) runq: RunQueue,
    /// Sleeping (and interlock-registered) threads, by wait channel.
    pub(crate) sleepq: SleepQueues,
    /// Sleep timeouts.
    pub(crate) timers: Timers,
    /// The running thread; null while the loop itself runs.
    pub(crate) cur: Cell<*mut Thread>,
    /// A runnable interrupt thread that may preempt the running thread at
    /// the next safe point (`lwkt_preempt`'s target), or null.
    pub(crate) preempt_cand: Cell<*mut Thread>,
    /// Set once this CPU has seen the runtime's shutdown request.
    pub(crate) stop: Cell<bool>,
    /// Set while this CPU cancels its threads (shutdown).
    pub(crate) shutting_down: Cell<bool>,
    /// The scheduler clock epoch this CPU last acted on.
    pub(crate) seen_tick: Cell<u64>,
    /// Passes left before the next look at the clock while timers are
    /// armed (see `switch.rs`).
    pub(crate) timer_countdown: Cell<u32>,
    /// Set while a thread runs by handoff (`switch.rs`): nesting is one
    /// level deep.
    pub(crate) handing_off: Cell<bool>,
    /// While a thread that yielded runs another by handoff (the yield
    /// handoff, `switch.rs`): its priority plus one, else 0. It counts as
    /// runnable at that priority, as it would be had it queued.
    pub(crate) yield_waiting: Cell<u8>,
    /// Whether this CPU has run a thread yet: until then an idle CPU parks
    /// at once (no partner's reply to wait for; a freshly built runtime of
    /// many CPUs would otherwise spend its start-up spinning).
    pub(crate) has_run: Cell<bool>,
    /// Consecutive loop passes that found only token-blocked threads.
    pub(crate) token_waits: Cell<u32>,
    /// Nesting depth of message processing (bounded re-entry from `send`).
    pub(crate) ipi_depth: Cell<u32>,
    /// Outgoing FIFOs (sending side of the IPI fabric).
    pub(crate) outbox: Outbox<Msg>,
    /// Which sources to watch while idle.
    pub(crate) inbox: Inbox,
    /// Thread requests that arrived before the thread they name (it is
    /// migrating here). Kept boxed as they arrived in messages (and may be
    /// forwarded again).
    #[allow(clippy::vec_box)]
    pub(crate) deferred_ops: RefCell<Vec<Box<ThreadOp>>>,
    /// Exited threads' structures, for reuse. Boxed: queues hold raw
    /// pointers, so each structure needs a stable address of its own.
    #[allow(clippy::vec_box)]
    free_threads: RefCell<Vec<Box<Thread>>>,
    /// Default-size stacks, for reuse.
    free_stacks: RefCell<Vec<Stack>>,
    /// Head of the list of every thread this CPU owns.
    all: Cell<*mut Thread>,
    /// The block of thread ids this CPU hands out: next, end.
    tids: Cell<(u64, u64)>,
    /// Token policy for this CPU (from the runtime's settings).
    pub(crate) policy: Policy,
    /// File-descriptor readiness (`poll.rs`), created at this CPU's first
    /// `wait_fd`; until then the CPU parks on its futex.
    pub(crate) poller: OnceCell<Poller>,
    /// Threads of this CPU waiting in `wait_fd` (the loop polls only
    /// while some do).
    pub(crate) io_waiters: Cell<u32>,
    /// The event trace's switch and buffer (off unless a capture runs).
    pub(crate) trace: CoreTrace,
}

impl Core {
    /// The state of CPU `id` of `machine`. Made on that CPU's OS thread.
    pub(crate) fn new(id: usize, machine: Arc<Machine>) -> Core {
        let remote = NonNull::from(&*machine.cpus[id]);
        let c = &machine.config;
        let policy = Policy {
            reacquire: c.token_reacquire,
            backoff_max: c.token_backoff_max,
            spin_loops: c.token_spin_loops,
            cpu: id as u32,
            ncpus: c.cpus as u32,
            window_shift: c.token_window_shift,
        };
        Core {
            id,
            remote,
            runq: RunQueue::new(),
            sleepq: SleepQueues::new(),
            timers: Timers::new(),
            cur: Cell::new(ptr::null_mut()),
            preempt_cand: Cell::new(ptr::null_mut()),
            stop: Cell::new(false),
            shutting_down: Cell::new(false),
            seen_tick: Cell::new(0),
            timer_countdown: Cell::new(1),
            has_run: Cell::new(false),
            handing_off: Cell::new(false),
            yield_waiting: Cell::new(0),
            token_waits: Cell::new(0),
            ipi_depth: Cell::new(0),
            outbox: Outbox::new(c.cpus),
            inbox: Inbox::new(c.idle_watch),
            deferred_ops: RefCell::new(Vec::new()),
            free_threads: RefCell::new(Vec::new()),
            free_stacks: RefCell::new(Vec::new()),
            all: Cell::new(ptr::null_mut()),
            tids: Cell::new((0, 0)),
            policy,
            poller: OnceCell::new(),
            io_waiters: Cell::new(0),
            trace: CoreTrace::new(),
            machine,
        }
    }

    /// Makes this Core the current CPU of the calling OS thread until
    /// [`leave`](Self::leave).
    pub(crate) fn enter(&self) {
        CURRENT.with(|c| c.set(self));
    }

    /// Ends [`enter`](Self::enter).
    pub(crate) fn leave(&self) {
        CURRENT.with(|c| c.set(ptr::null()));
    }

    /// This CPU's remote-visible part.
    #[inline]
    pub(crate) fn remote(&self) -> &Remote {
        // SAFETY: points into `self.machine.cpus`, a boxed slice that
        // never moves and lives as long as the Arc this Core holds.
        unsafe { self.remote.as_ref() }
    }

    /// This CPU's counters.
    #[inline]
    pub(crate) fn stats(&self) -> &Counters {
        &self.remote().stats
    }

    /// The running thread, when called from thread context.
    #[inline]
    pub(crate) fn current(&self) -> Option<TdPtr> {
        TdPtr::from_raw(self.cur.get())
    }

    /// Whether the runtime asked this CPU to stop (seen at the last look
    /// at the attention word).
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.stop.get()
    }

    /// A new thread id (never reused in the process).
    pub(crate) fn alloc_tid(&self) -> u64 {
        let (next, end) = self.tids.get();
        if next < end {
            self.tids.set((next + 1, end));
            return next;
        }
        let base = NEXT_TID.fetch_add(TID_BLOCK, Ordering::Relaxed);
        self.tids.set((base + 1, base + TID_BLOCK));
        base
    }

    // ---------------------------------------------------------------
    // Thread creation, exit and caches
    // ---------------------------------------------------------------

    /// A stack of `size` bytes, from the caches when it is the default
    /// size: first the finished coroutine left in the structure
    /// [`new_thread`](Self::new_thread) will reuse next (see
    /// [`thread_exited`](Self::thread_exited)), then the stack cache. For
    /// a thread to be created elsewhere (a spawn on another CPU); a spawn
    /// here takes both at once ([`new_thread_here`](Self::new_thread_here)).
    pub(crate) fn alloc_stack(&self, size: usize) -> Result<Stack, crate::Error> {
        if size == self.machine.config.stack_size {
            if let Some(b) = self.free_threads.borrow().last() {
                // SAFETY: a cached structure is linked nowhere and no
                // coroutine runs on it; only this CPU touches the cache.
                if let Some(coro) = unsafe { (*b.coro.get()).take() } {
                    return Ok(coro.into_stack());
                }
            }
            if let Some(s) = self.free_stacks.borrow_mut().pop() {
                return Ok(s);
            }
        }
        Stack::new(size)
    }

    /// A thread structure (recycled when possible), initialised and linked
    /// on this CPU's all-threads list, but not runnable yet
    /// (`lwkt_alloc_thread` + `lwkt_init_thread`), for a stack mapped
    /// elsewhere (a spawn from another CPU, or from outside the runtime).
    /// The caller builds its coroutine and calls
    /// [`start_thread`](Self::start_thread).
    pub(crate) fn new_thread(
        &self,
        tid: u64,
        pri: u8,
        intthread: bool,
        name: Option<Box<str>>,
        stack: &Stack,
    ) -> TdPtr {
        let b = self.free_threads.borrow_mut().pop();
        if let Some(b) = &b {
            // Its finished coroutine, when alloc_stack did not take it
            // (usually it did: no call then).
            // SAFETY: a cached structure: only this CPU touches it, and no
            // coroutine runs on it.
            if unsafe { (*b.coro.get()).is_some() } {
                self.reap(b);
            }
        }
        self.init_thread(b, tid, pri, intthread, name, Some(stack))
    }

    /// [`new_thread`](Self::new_thread) and its stack of `size` bytes, for
    /// a spawn on this CPU: the structure comes from the cache with the
    /// finished coroutine's stack still in it when `size` is the default
    /// (the common case: one cache access, and the structure's guard and
    /// stack-size fields already describe that stack); otherwise as
    /// [`alloc_stack`](Self::alloc_stack) + `new_thread`.
    ///
    /// # Errors
    /// [`Error::StackAlloc`](crate::Error) when no stack can be mapped;
    /// nothing is created then.
    pub(crate) fn new_thread_here(
        &self,
        size: usize,
        tid: u64,
        pri: u8,
        intthread: bool,
        name: Option<Box<str>>,
    ) -> Result<(TdPtr, Stack), crate::Error> {
        let b = self.free_threads.borrow_mut().pop();
        if let Some(bx) = &b {
            if size == self.machine.config.stack_size {
                // Invariant (see `free_thread`): a cached structure that
                // still holds its finished coroutine holds a stack of the
                // default size, which its `guard` and `stack_size` fields
                // describe.
                // SAFETY: a cached structure: only this CPU touches it, and
                // no coroutine runs on it.
                if let Some(coro) = unsafe { (*bx.coro.get()).take() } {
                    let stack = coro.into_stack();
                    debug_assert_eq!(bx.guard.get(), stack.guard_range());
                    debug_assert_eq!(bx.stack_size.get(), stack.usable_size());
                    let t = self.init_thread(b, tid, pri, intthread, name, None);
                    return Ok((t, stack));
                }
            }
        }
        self.new_thread_here_slow(b, size, tid, pri, intthread, name)
    }

    /// `new_thread_here` without a cached stack at hand.
    #[inline(never)]
    fn new_thread_here_slow(
        &self,
        b: Option<Box<Thread>>,
        size: usize,
        tid: u64,
        pri: u8,
        intthread: bool,
        name: Option<Box<str>>,
    ) -> Result<(TdPtr, Stack), crate::Error> {
        if let Some(b) = &b {
            // A finished coroutine of another size: its stack goes (to the
            // stack cache if it is of the default size).
            self.reap(b);
        }
        let stack = match self.alloc_stack(size) {
            Ok(s) => s,
            Err(e) => {
                if let Some(b) = b {
                    self.free_threads.borrow_mut().push(b);
                }
                return Err(e);
            }
        };
        let t = self.init_thread(b, tid, pri, intthread, name, Some(&stack));
        Ok((t, stack))
    }

    /// The body of `new_thread`: initialises `b` (or a new structure) and
    /// links it. `stack`: the stack whose guard and size to record; `None`
    /// when the structure's fields already describe the stack (its own
    /// finished coroutine's).
    #[inline(always)]
    fn init_thread(
        &self,
        b: Option<Box<Thread>>,
        tid: u64,
        pri: u8,
        intthread: bool,
        name: Option<Box<str>>,
        stack: Option<&Stack>,
    ) -> TdPtr {
        let t = TdPtr::from_box(b.unwrap_or_else(Thread::new));
        // SAFETY: just taken from the cache (or allocated): owned by this
        // CPU and linked nowhere yet; linked on the all-list below.
        let td = unsafe { t.td() };
        td.flags.set(if intthread { tdf::INTTHREAD } else { 0 });
        td.pri.set(pri);
        td.tid.set(tid);
        td.core.set(self);
        // Invariant: a structure reaches the cache only with no timer entry
        // left (`retire`, `expire`): `timer_refs` is already 0. `swctl` is
        // read only while SWCTL is set (cleared above).
        debug_assert_eq!(td.timer_refs.get(), 0);
        td.wchan.set(0);
        td.wmesg.set("");
        td.crit.set(0);
        td.lwp_tag.set((0, 0));
        if let Some(stack) = stack {
            td.guard.set(stack.guard_range());
            td.stack_size.set(stack.usable_size());
        }
        debug_assert!(td.toks.is_empty());
        // SAFETY: no reference to the name exists (the thread is new).
        unsafe { *td.name.get() = name };
        self.link_all(t);
        self.stats().threads_spawned.bump();
        trace_event!(self, tr_spawn(td));
        t
    }

    /// Gives a new thread its coroutine and join packet and makes it
    /// runnable (the end of `lwkt_create`). A thread created while this CPU
    /// cancels its threads is cancelled too (its closure is dropped without
    /// running).
    ///
    /// Inlined into the creation site: the coroutine then goes straight
    /// into its slot (a by-value move through memory reads back words just
    /// written with narrower stores, a store-forwarding stall that measured
    /// a fifth of a spawn).
    #[inline(always)]
    pub(crate) fn start_thread(&self, t: TdPtr, coro: Coro, packet: NonNull<dyn CtlOwner>) {
        // SAFETY: `t` was just made by new_thread on this CPU and is linked
        // on its all-list.
        let td = unsafe { t.td() };
        td.packet.set(Some(packet));
        // SAFETY: the coroutine slot of a thread that has not run is touched
        // by nothing else.
        unsafe { *td.coro.get() = Some(coro) };
        if let Some(ctl) = td.ctl() {
            ctl.td.store(t.as_ptr(), Ordering::Release);
        }
        if self.shutting_down.get() {
            td.set(tdf::CANCEL);
        }
        self.make_runnable(t);
    }

    /// Links `t` on this CPU's all-threads list.
    pub(crate) fn link_all(&self, t: TdPtr) {
        // SAFETY: `t` is owned by this CPU and being linked.
        let td = unsafe { t.td() };
        let head = self.all.get();
        td.all_prev.set(ptr::null_mut());
        td.all_next.set(head);
        if let Some(h) = TdPtr::from_raw(head) {
            // SAFETY: linked on the all-list, so alive.
            unsafe { h.td() }.all_prev.set(t.as_ptr());
        }
        self.all.set(t.as_ptr());
        self.stats().threads_alive.bump();
    }

    /// Unlinks `t` from this CPU's all-threads list.
    pub(crate) fn unlink_all(&self, t: TdPtr) {
        // SAFETY: `t` is linked on the all-list, so alive.
        let td = unsafe { t.td() };
        let (next, prev) = (td.all_next.get(), td.all_prev.get());
        match TdPtr::from_raw(prev) {
            // SAFETY: linked neighbours are alive.
            Some(p) => unsafe { p.td() }.all_next.set(next),
            None => self.all.set(next),
        }
        if let Some(n) = TdPtr::from_raw(next) {
            // SAFETY: as above.
            unsafe { n.td() }.all_prev.set(prev);
        }
        self.stats().threads_alive.drop_one();
    }

    /// Calls `f` for every thread this CPU owns.
    pub(crate) fn for_each_thread(&self, mut f: impl FnMut(&Thread)) {
        let mut cur = self.all.get();
        while let Some(t) = TdPtr::from_raw(cur) {
            // SAFETY: linked on the all-list, so alive; `f` gets a shared
            // borrow and cannot unlink anything (it has no `&Core`).
            let td = unsafe { t.td() };
            f(td);
            cur = td.all_next.get();
        }
    }

    /// The thread's coroutine returned: retire the thread and recycle its
    /// structure (`lwkt_exit` / `lwkt_free_thread`).
    ///
    /// The finished coroutine stays in the structure, stack included, and
    /// is taken apart when the next spawn reuses the structure
    /// ([`alloc_stack`](Self::alloc_stack)), or when the structure leaves
    /// the cache (DragonFly, too, reaps exited threads later). Taking it
    /// apart here, right after the switch that stored its stack pointer,
    /// would read back words still in the store buffer.
    pub(crate) fn thread_exited(&self, t: TdPtr) {
        self.retire(t);
    }

    /// Unlinks a finished thread and frees or caches its structure.
    fn retire(&self, t: TdPtr) {
        // SAFETY: `t` is on this CPU's all-list until unlink_all below.
        let td = unsafe { t.td() };
        if !td.toks.is_empty() {
            td.toks.drop_all();
        }
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        if td.has(tdf::RUNQ) {
            self.runq.remove(t);
        }
        self.forget_candidate(t);
        self.unlink_all(t);
        // The packet pointer was cleared by the thread itself (or by
        // cancel_all) before its closure let go of the packet.
        td.packet.set(None);
        // SAFETY: the thread no longer runs; nothing borrows its name.
        unsafe { *td.name.get() = None };
        td.flags.set(tdf::EXITED);
        if td.timer_refs.get() == 0 {
            self.free_thread(t);
        }
    }

    /// Frees (or caches) the structure of a retired thread. A cached
    /// structure keeps its finished coroutine (see `thread_exited`) unless
    /// the coroutine's stack is not of the default size, which goes now.
    ///
    /// Invariants of the cache, which `new_thread_here` and `init_thread`
    /// rely on: a cached structure has no timer entry (`timer_refs` is 0:
    /// every caller frees only then); one that holds a coroutine holds a
    /// stack of the default size, the one its `guard` and `stack_size`
    /// fields describe (they were set for the stack its coroutine was
    /// built on, and a migrating thread takes both along).
    ///
    /// Inlined: every thread exit comes through here (from `retire`).
    #[inline(always)]
    pub(crate) fn free_thread(&self, t: TdPtr) {
        // SAFETY: retired (linked nowhere) and no timer entry refers to it.
        let b = unsafe { t.into_box() };
        let mut cache = self.free_threads.borrow_mut();
        if cache.len() >= THREAD_CACHE {
            drop(cache);
            self.reap(&b);
            return;
        }
        // SAFETY: as above: only this CPU touches the retired structure.
        if b.stack_size.get() != self.machine.config.stack_size {
            self.reap(&b);
        }
        cache.push(b);
    }

    /// Takes a retired structure's finished coroutine apart, keeping its
    /// stack in the stack cache when it is of the default size.
    fn reap(&self, b: &Thread) {
        // SAFETY: a retired structure: only this CPU touches it.
        if let Some(coro) = unsafe { (*b.coro.get()).take() } {
            let stack = coro.into_stack();
            let mut cache = self.free_stacks.borrow_mut();
            if stack.usable_size() == self.machine.config.stack_size && cache.len() < STACK_CACHE {
                cache.push(stack);
            }
        }
    }

    /// Shutdown: unwind every remaining thread's stack so destructors run,
    /// and answer their joiners.
    pub(crate) fn cancel_all(&self) {
        self.shutting_down.set(true);
        self.preempt_cand.set(ptr::null_mut());
        // Preempted threads first: they hold their tokens, which other
        // CPUs' cancelled threads may need for their destructors.
        self.cancel_where(|td| td.has(tdf::PREEMPTED));
        self.cancel_where(|_| true);
        // Drop the timer heap; free structures it kept alive.
        for timer in self.timers.take_all() {
            // SAFETY: a timer entry keeps its structure allocated.
            let td = unsafe { timer.td.td() };
            td.timer_refs.set(td.timer_refs.get() - 1);
            if td.has(tdf::EXITED) && td.timer_refs.get() == 0 {
                self.free_thread(timer.td);
            }
        }
        self.free_threads.borrow_mut().clear();
        self.free_stacks.borrow_mut().clear();
    }

    fn cancel_where(&self, pred: impl Fn(&Thread) -> bool) {
        loop {
            let mut cur = self.all.get();
            let mut victim = None;
            while let Some(t) = TdPtr::from_raw(cur) {
                // SAFETY: linked on the all-list, so alive.
                let td = unsafe { t.td() };
                if pred(td) {
                    victim = Some(t);
                    break;
                }
                cur = td.all_next.get();
            }
            let Some(t) = victim else { return };
            self.cancel_one(t);
        }
    }

    fn cancel_one(&self, t: TdPtr) {
        // SAFETY: on this CPU's all-list until retire() at the end.
        let td = unsafe { t.td() };
        td.set(tdf::CANCEL);
        if td.has(tdf::RUNQ) {
            self.runq.remove(t);
        }
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        td.clear(tdf::SLEEPING | tdf::SINTR | tdf::PARKED | tdf::PREEMPTED);
        // SAFETY: loop context; the thread is not running.
        let coro = unsafe { (*td.coro.get()).take() };
        let started = coro.as_ref().is_some_and(|c| c.started());
        if started && !td.toks.all_held() {
            // Destructors run with the thread's tokens held, as its code
            // expects.
            self.acquire_tokens_at_shutdown(td);
        }
        // Answer joiners first: unwinding may drop the last reference to
        // the packet.
        if let Some(p) = td.packet() {
            p.ctl().td.store(ptr::null_mut(), Ordering::Release);
            p.cancel(started);
        }
        if let Some(mut coro) = coro {
            self.cur.set(t.as_ptr());
            td.set(tdf::RUNNING | tdf::UNWINDING);
            // Destructors run here, on the thread's own stack.
            coro.force_unwind();
            td.clear(tdf::RUNNING);
            self.cur.set(ptr::null_mut());
        }
        td.packet.set(None);
        self.retire(t);
    }

    /// Runs on the thread dropping the runtime, after every CPU has
    /// stopped: takes over messages nobody processed (threads in flight
    /// between CPUs, remote spawns) and cancels those threads like the
    /// CPUs cancelled theirs, so their destructors run and their joiners
    /// are answered.
    pub(crate) fn teardown(&self) {
        self.enter();
        self.stop.set(true);
        self.shutting_down.set(true);
        for _ in 0..16 {
            let mut msgs = Vec::new();
            for r in self.machine.cpus.iter() {
                r.mailbox.drain_all_for_teardown(|m| msgs.push(m));
            }
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                match m {
                    Msg::Call(f) => f(self),
                    Msg::Adopt(a) => self.adopt(a),
                    // Wakeups and thread requests have nobody left to act on.
                    _ => {}
                }
            }
            self.cancel_all();
        }
        self.leave();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Structures still cached are plain boxes; stacks unmap on drop.
        debug_assert!(self.all.get().is_null(), "a CPU dropped with live threads");
    }
}

impl TokenStats for Counters {
    fn attempt(&self) {
        self.tok_attempts.bump();
    }
    fn failure(&self) {
        self.tok_failures.bump();
    }
    fn wasted(&self) {
        self.tok_wasted.bump();
    }
    fn ordered(&self) {
        self.tok_ordered.bump();
    }
    fn skip(&self) {
        self.tok_skips.bump();
    }
    fn words(&self, checks: u32, rmws: u32) {
        self.tok_checks.add(u64::from(checks));
        self.tok_rmws.add(u64::from(rmws));
    }
}

/// The stack overflow reporter's lookup (see `stack::overflow`): the
/// running thread of this OS thread's CPU, if `addr` lies in its guard
/// page. Called from a signal handler: reads only a const thread-local
/// and the thread structure, allocates nothing, takes no lock.
pub(crate) fn overflow_lookup(addr: usize) -> Option<crate::stack::overflow::OverflowInfo> {
    let core = CURRENT.try_with(Cell::get).ok()?;
    // SAFETY: set only while the Core lives on this OS thread (see
    // with_current); the fault interrupted code running on it.
    let core = unsafe { core.as_ref() }?;
    let t = core.current()?;
    // SAFETY: the running thread is alive while it runs, and it is what
    // faulted.
    let td = unsafe { t.td() };
    let (lo, hi) = td.guard.get();
    if addr < lo || addr >= hi {
        return None;
    }
    let mut info = crate::stack::overflow::OverflowInfo {
        name: [0; 64],
        name_len: 0,
        tid: td.tid.get(),
        cpu: core.id,
    };
    if let Some(n) = td.name() {
        let n = n.as_bytes();
        let len = n.len().min(info.name.len());
        info.name[..len].copy_from_slice(&n[..len]);
        info.name_len = len;
    }
    Some(info)
}
