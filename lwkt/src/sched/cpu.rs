//! One self-contained scheduler per CPU (`struct globaldata` plus the
//! `lwkt_switch` loop).
//!
//! Execution model: each CPU is one OS thread running [`Cpu::run_loop`] on
//! its native stack. Threads are coroutines on their own stacks; a thread
//! switches out by suspending back to the loop, which picks the next one.
//! Everything in [`Cpu`] is owned by that OS thread; other CPUs reach it
//! only through [`CpuShared`] (the IPI queues, the attention word and the
//! parking flag), and every change they want is made by this CPU itself
//! when it processes their IPI.
//!
//! Parking protocol (no lost wakeup): the CPU stores `parked = true`
//! (SeqCst), re-reads `attention`, and parks only if it is still zero. A
//! sender first publishes its message and sets `attention` (SeqCst RMW),
//! then swaps `parked` to false and unparks the OS thread if it was true.
//! Whichever side goes second sees the other's write.

use std::cell::{Cell, UnsafeCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_utils::{Backoff, CachePadded};

use super::ops::{Adopt, ThreadOp};
use super::runq::RunQueue;
use super::sleepq::{bucket_of, SleepQueues};
use super::td::{tdf, TdPtr, Thread, Wake};
use crate::runtime::Shared;
use crate::stack::Stack;
use crate::stats::Counters;

/// Bits of [`CpuShared::attention`].
///
/// | bit   | name | set by                      | meaning                    |
/// |-------|------|-----------------------------|----------------------------|
/// | 0     | TICK | the runtime's clock thread  | a scheduler tick passed    |
/// | 1     | EXT  | senders outside the runtime | the external queue has work|
/// | 2..64 | SRC  | CPU senders                 | with at most `DIRECT_MAX`  |
/// |       |      |                             | CPUs: the FIFO from CPU    |
/// |       |      |                             | `bit-2` has work; with     |
/// |       |      |                             | more: `pending[bit-2]` is  |
/// |       |      |                             | nonzero (two levels)       |
pub(crate) mod attn {
    pub(crate) const TICK: u64 = 1 << 0;
    pub(crate) const EXT: u64 = 1 << 1;
    pub(crate) const SRC_SHIFT: u32 = 2;
    /// Up to this many CPUs, each source has its own attention bit: one
    /// atomic per IPI instead of two.
    pub(crate) const DIRECT_MAX: usize = 62;
    /// Words of source bits one attention word can summarise.
    pub(crate) const MAX_WORDS: usize = 62;
}

/// Up to this many CPUs, an idle CPU watches its incoming FIFOs directly
/// as well as its attention word (one load per source per poll).
const IDLE_WATCH_RINGS_MAX: usize = 8;

/// A message from one CPU (or an outside thread) to another.
pub(crate) enum IpiMsg {
    /// Wake every sleeper on `chan` on the target CPU.
    Wakeup { chan: usize },
    /// Wake one sleeper on `chan`; if the target has none, pass the request
    /// on to the next CPU with sleepers in that bucket, stopping before
    /// `stop` (the CPU where the request began).
    WakeupOne { chan: usize, stop: usize },
    /// Run a function on the target CPU (remote thread creation).
    Call(Box<dyn FnOnce(&Cpu) + Send>),
    /// A request about one thread (schedule, deschedule, priority,
    /// interrupt, give away), carried out on the CPU that owns it.
    Thread(Box<ThreadOp>),
    /// A thread handed over by another CPU (migration).
    Adopt(Adopt),
}

/// The part of a CPU other threads may touch. `attention` and `parked`
/// share the first cache line (the whole struct is cache-line aligned in
/// `Shared::cpus`): a sender sets one and then reads the other, so one
/// line transfer serves both.
#[repr(C)]
pub(crate) struct CpuShared {
    /// Work flags, see [`attn`]. Any thread sets bits; the owner clears.
    pub(crate) attention: AtomicU64,
    /// True while the owner is (about to be) parked. Owner sets; the first
    /// sender to see it true clears it and unparks the OS thread.
    pub(crate) parked: AtomicBool,
    /// One bit per source CPU with queued IPIs. Senders set; owner clears.
    pub(crate) pending: Box<[AtomicU64]>,
    /// The OS thread, for unparking. Set once at start.
    pub(crate) os_thread: OnceLock<std::thread::Thread>,
    /// Messages from outside the runtime. Senders lock; owner drains.
    pub(crate) ext: Mutex<VecDeque<IpiMsg>>,
    /// Counters, written by the owner (and by outside senders for IPIs).
    pub(crate) stats: CachePadded<Counters>,
}

impl CpuShared {
    pub(crate) fn new(mask_words: usize) -> CpuShared {
        CpuShared {
            attention: AtomicU64::new(0),
            pending: (0..mask_words).map(|_| AtomicU64::new(0)).collect(),
            parked: AtomicBool::new(false),
            os_thread: OnceLock::new(),
            ext: Mutex::new(VecDeque::new()),
            stats: CachePadded::new(Counters::default()),
        }
    }

    /// Wakes the owner if it is parked. Returns whether a signal was sent.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.os_thread.get() {
                t.unpark();
            }
            true
        } else {
            false
        }
    }
}

/// A timer-heap entry: wake `td` at `when` if it is still in the sleep
/// numbered `seq`.
pub(crate) struct Timer {
    when: Instant,
    seq: u64,
    pub(crate) td: TdPtr,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        self.when == o.when && self.seq == o.seq
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // Earliest deadline first in a max-heap.
        o.when.cmp(&self.when).then(o.seq.cmp(&self.seq))
    }
}

/// How many exited threads' structures a CPU keeps for reuse.
const THREAD_CACHE: usize = 1024;
/// How many default-size stacks a CPU keeps for reuse.
const STACK_CACHE: usize = 256;
/// How long an idle CPU polls for work before parking its OS thread: long
/// enough to catch a partner CPU's reply in a ping-pong, short enough that
/// an idle runtime costs next to nothing.
const IDLE_SPIN: Duration = Duration::from_micros(50);

thread_local! {
    static CURRENT_CPU: Cell<*const Cpu> = const { Cell::new(ptr::null()) };
}

/// The CPU whose OS thread this is, if any.
#[inline]
pub(crate) fn current_cpu<'a>() -> Option<&'a Cpu> {
    let p = CURRENT_CPU.with(|c| c.get());
    // SAFETY: the pointer is set by `Cpu::run_loop` for exactly the time
    // the Cpu lives on this OS thread's stack and reset before it is gone.
    unsafe { p.as_ref() }
}

/// A CPU's private state. Lives on its OS thread's stack for the life of
/// the runtime; all of it is accessed from that OS thread only.
pub(crate) struct Cpu {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    /// This CPU's entry in `shared.cpus` (kept alive by `shared`), cached
    /// so the hot paths skip the indexing.
    cs: std::ptr::NonNull<CpuShared>,
    /// Set once this CPU has seen the runtime's shutdown request.
    stop: Cell<bool>,
    pub(crate) runq: RunQueue,
    pub(crate) sleepq: SleepQueues,
    /// The running thread; null in the scheduler context.
    pub(crate) cur: Cell<*mut Thread>,
    timers: UnsafeCell<BinaryHeap<Timer>>,
    ntimers: Cell<usize>,
    /// Boxed: queues hold raw pointers to threads, so each structure needs
    /// a stable address of its own.
    #[allow(clippy::vec_box)]
    free_threads: UnsafeCell<Vec<Box<Thread>>>,
    free_stacks: UnsafeCell<Vec<Stack>>,
    /// Head of the list of every thread this CPU owns.
    all: Cell<*mut Thread>,
    next_tid: Cell<u64>,
    /// A runnable interrupt thread that may preempt the running thread at
    /// the next safe point (`lwkt_preempt`'s target), or null.
    pub(crate) preempt_cand: Cell<*mut Thread>,
    /// Thread requests that arrived before the thread they name. Kept
    /// boxed as they arrived in IPI messages (and may be forwarded again).
    #[allow(clippy::vec_box)]
    pub(crate) deferred_ops: UnsafeCell<Vec<Box<ThreadOp>>>,
    /// Consecutive scheduler passes that found only token-blocked threads.
    token_waits: Cell<u32>,
    /// Nesting depth of `process_ipis` (bounded re-entry from `send`).
    ipi_depth: Cell<u32>,
    pub(crate) shutting_down: Cell<bool>,
}

impl Cpu {
    pub(crate) fn new(id: usize, shared: Arc<Shared>) -> Cpu {
        let cs = std::ptr::NonNull::from(&*shared.cpus[id]);
        Cpu {
            id,
            cs,
            stop: Cell::new(false),
            shared,
            runq: RunQueue::new(),
            sleepq: SleepQueues::new(),
            cur: Cell::new(ptr::null_mut()),
            timers: UnsafeCell::new(BinaryHeap::new()),
            ntimers: Cell::new(0),
            free_threads: UnsafeCell::new(Vec::new()),
            free_stacks: UnsafeCell::new(Vec::new()),
            all: Cell::new(ptr::null_mut()),
            next_tid: Cell::new(1),
            token_waits: Cell::new(0),
            preempt_cand: Cell::new(ptr::null_mut()),
            deferred_ops: UnsafeCell::new(Vec::new()),
            ipi_depth: Cell::new(0),
            shutting_down: Cell::new(false),
        }
    }

    #[inline]
    pub(crate) fn cs(&self) -> &CpuShared {
        // SAFETY: points into `self.shared.cpus`, a boxed slice that never
        // moves and lives as long as the Arc this Cpu holds.
        unsafe { self.cs.as_ref() }
    }

    /// Whether the runtime asked this CPU to stop (seen at the last
    /// attention poll).
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.stop.get()
    }

    /// Whether nothing asks for this CPU's attention: no IPI or tick
    /// flagged, no timer armed, no preemption pending, no stop request.
    /// Hot paths test this once instead of polling each in turn.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        (self.cs().attention.load(Ordering::Relaxed) == 0)
            & (self.ntimers.get() == 0)
            & self.preempt_cand.get().is_null()
            & !self.stop.get()
    }

    #[inline]
    pub(crate) fn stats(&self) -> &Counters {
        &self.cs().stats
    }

    /// A new thread id, unique in the runtime: a per-CPU sequence in the
    /// high bits, the CPU in the low 16.
    pub(crate) fn alloc_tid(&self) -> u64 {
        let n = self.next_tid.get();
        self.next_tid.set(n + 1);
        (n << 16) | self.id as u64
    }

    // ---------------------------------------------------------------
    // The scheduler loop
    // ---------------------------------------------------------------

    /// Runs this CPU until the runtime shuts down, then cancels whatever
    /// threads remain. Called once, on the CPU's own OS thread.
    pub(crate) fn run_loop(&self) {
        CURRENT_CPU.with(|c| c.set(self));
        let _ = self.cs().os_thread.set(std::thread::current());
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
            self.expire_timers();
            match self.pick() {
                Some(t) => {
                    self.token_waits.set(0);
                    self.run(t);
                }
                None if self.runq.is_empty() => poll = !self.idle(),
                None => self.token_wait(),
            }
        }
        self.cancel_all();
        CURRENT_CPU.with(|c| c.set(ptr::null()));
    }

    /// The first runnable thread, highest priority first, whose tokens can
    /// all be acquired (the candidate scan of `lwkt_switch`). Threads that
    /// cannot get their tokens keep their place in the queue.
    #[inline]
    pub(crate) fn pick(&self) -> Option<TdPtr> {
        let mut cur = self.runq.first();
        while let Some(t) = cur {
            if t.td().tok_used.get() == 0 || self.tokens_acquire_all(t) {
                self.runq.remove(t);
                return Some(t);
            }
            cur = self.runq.next(t);
        }
        None
    }

    /// Every runnable thread waits for a token held on another CPU: poll
    /// with backoff, then nap briefly (a release sends no signal).
    #[cold]
    fn token_wait(&self) {
        let n = self.token_waits.get();
        self.token_waits.set(n.saturating_add(1));
        if n < 64 {
            for _ in 0..(16 << n.min(6)) {
                std::hint::spin_loop();
            }
            return;
        }
        let cs = self.cs();
        cs.parked.store(true, Ordering::SeqCst);
        if cs.attention.load(Ordering::SeqCst) == 0 {
            self.stats().parks.bump();
            std::thread::park_timeout(Duration::from_micros(50));
        }
        cs.parked.store(false, Ordering::SeqCst);
    }

    /// Switches to `t` until it switches back (hot path).
    #[inline]
    fn run(&self, t: TdPtr) {
        let td = t.td();
        td.set(tdf::RUNNING);
        self.cur.set(t.as_ptr());
        self.stats().switches.bump();
        self.forget_candidate(t);
        // SAFETY: only the context resuming a thread touches `coro`, and
        // the thread is not running (we are in the scheduler context).
        let coro = unsafe { &mut *td.coro.get() };
        let res = coro
            .as_mut()
            .expect("runnable thread has no coroutine")
            .resume(());
        self.cur.set(ptr::null_mut());
        td.clear(tdf::RUNNING);
        self.after_switch(t, res);
    }

    /// Nothing to run: poll briefly, then park the OS thread until an IPI
    /// or the next timer. Returns whether it drained the incoming FIFOs
    /// itself (see `drain_incoming`).
    #[cold]
    fn idle(&self) -> bool {
        let cs = self.cs();
        let deadline = self.next_deadline();
        let start = Instant::now();
        if deadline.is_some_and(|d| d <= start) {
            return false;
        }
        // Poll first: a partner CPU's answer often comes within microseconds.
        // One pause per poll, no exponential backoff: the attention word is
        // only read here, so polling it costs the senders nothing, and a
        // backoff of 64 pauses (each a VM exit candidate under a
        // hypervisor's pause-loop detection) measured up to 1 µs late.
        let mut n = 0u32;
        let watch_rings = self.shared.ncpus() <= IDLE_WATCH_RINGS_MAX;
        loop {
            if cs.attention.load(Ordering::Acquire) != 0 {
                return false;
            }
            if watch_rings && self.incoming_ready() {
                self.drain_incoming();
                return true;
            }
            n += 1;
            if n % 64 == 0 {
                let now = Instant::now();
                if now.duration_since(start) >= IDLE_SPIN || deadline.is_some_and(|d| d <= now) {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        cs.parked.store(true, Ordering::SeqCst);
        if cs.attention.load(Ordering::SeqCst) != 0 {
            cs.parked.store(false, Ordering::SeqCst);
            return false;
        }
        self.stats().parks.bump();
        match deadline {
            Some(d) => std::thread::park_timeout(d.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
        cs.parked.store(false, Ordering::SeqCst);
        self.shared.wake_clock();
        false
    }

    // ---------------------------------------------------------------
    // IPIs
    // ---------------------------------------------------------------

    /// Processes queued IPIs and external messages. Returns whether a
    /// scheduler tick had been flagged.
    /// Inside a critical section IPIs wait (they stay flagged and run when
    /// the section ends).
    #[inline]
    pub(crate) fn poll_attention(&self) -> bool {
        let a = self.cs().attention.load(Ordering::Relaxed);
        if a == 0 {
            return false;
        }
        if let Some(t) = self.current() {
            if t.td().crit.get() > 0 {
                return false;
            }
        }
        self.poll_attention_slow()
    }

    /// Processes IPIs even inside a critical section: a sender waiting for
    /// room in a FIFO must drain its own, or two CPUs could deadlock.
    #[inline]
    fn poll_attention_forced(&self) -> bool {
        if self.cs().attention.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.poll_attention_slow()
    }

    #[cold]
    fn poll_attention_slow(&self) -> bool {
        let cs = self.cs();
        let a = cs.attention.swap(0, Ordering::SeqCst);
        if self.shared.shutdown.load(Ordering::SeqCst) {
            // Runtime::drop sets `shutdown`, then an attention bit.
            self.stop.set(true);
        }
        self.ipi_depth.set(self.ipi_depth.get() + 1);
        if a & attn::EXT != 0 {
            loop {
                let batch = std::mem::take(&mut *cs.ext.lock().unwrap_or_else(|e| e.into_inner()));
                if batch.is_empty() {
                    break;
                }
                for m in batch {
                    self.handle_ipi(m);
                }
            }
        }
        let mut bits = a >> attn::SRC_SHIFT;
        if self.shared.ncpus() <= attn::DIRECT_MAX {
            while bits != 0 {
                let s = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.drain_ring(s);
            }
        } else {
            while bits != 0 {
                let w = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let mut srcs = cs.pending[w].swap(0, Ordering::SeqCst);
                while srcs != 0 {
                    let s = w * 64 + srcs.trailing_zeros() as usize;
                    srcs &= srcs - 1;
                    self.drain_ring(s);
                }
            }
        }
        self.ipi_depth.set(self.ipi_depth.get() - 1);
        a & attn::TICK != 0
    }

    /// Whether a FIFO addressed to this CPU holds messages. Reads each
    /// FIFO's next slot, a line that stays in this CPU's cache until the
    /// source writes the message into it: polling costs the sources
    /// nothing, and the message arrives with the line.
    fn incoming_ready(&self) -> bool {
        // SAFETY: this CPU's OS thread is the only consumer of the rings
        // addressed to it.
        (0..self.shared.ncpus())
            .any(|s| s != self.id && unsafe { self.shared.ring(s, self.id).ready() })
    }

    /// Drains every FIFO addressed to this CPU without waiting for the
    /// senders' attention bits: an idle CPU sees a message as soon as it
    /// is published, one cache-line transfer earlier. The bits still
    /// arrive; clearing them later finds the FIFOs empty, which is
    /// harmless (a message is only ever published before its bit is set).
    fn drain_incoming(&self) {
        self.ipi_depth.set(self.ipi_depth.get() + 1);
        for s in 0..self.shared.ncpus() {
            if s != self.id {
                self.drain_ring(s);
            }
        }
        self.ipi_depth.set(self.ipi_depth.get() - 1);
    }

    #[inline]
    fn drain_ring(&self, src: usize) {
        let ring = self.shared.ring(src, self.id);
        // SAFETY: this CPU's OS thread is the only consumer of the rings
        // addressed to it; nested calls run sequentially on this same OS
        // thread, never concurrently.
        while let Some(m) = unsafe { ring.pop() } {
            self.handle_ipi(m);
        }
    }

    fn handle_ipi(&self, m: IpiMsg) {
        self.stats().ipis_processed.bump();
        match m {
            IpiMsg::Wakeup { chan } => {
                prefetch(chan);
                self.wakeup_local(chan, false);
            }
            IpiMsg::WakeupOne { chan, stop } => {
                if !self.wakeup_local(chan, true) {
                    if let Some(next) = self.shared.next_sleeper_cpu(chan, self.id, stop) {
                        self.send(next, IpiMsg::WakeupOne { chan, stop });
                    }
                }
            }
            IpiMsg::Call(f) => f(self),
            IpiMsg::Thread(op) => self.thread_op(op),
            IpiMsg::Adopt(a) => self.adopt(a),
        }
    }

    /// Sends `m` to CPU `target` (`lwkt_send_ipiq`). To itself: runs it
    /// directly. When the FIFO is more than half full, processes this
    /// CPU's own incoming IPIs while waiting for room, so two CPUs
    /// flooding each other cannot deadlock.
    pub(crate) fn send(&self, target: usize, m: IpiMsg) {
        if target == self.id {
            self.handle_ipi(m);
            return;
        }
        let ring = self.shared.ring(self.id, target);
        let mut m = m;
        // SAFETY: this CPU's OS thread is the only producer of its rings.
        if unsafe { ring.producer_len() } > ring.capacity() / 2 {
            self.wait_for_room(ring, target);
        }
        loop {
            // SAFETY: only this CPU's OS thread produces into the rings
            // whose source is this CPU.
            match unsafe { ring.push(m) } {
                Ok(()) => break,
                Err(back) => {
                    if self.shared.shutdown.load(Ordering::Acquire) {
                        // The target may be gone; the message is dropped
                        // (its destructor runs here).
                        drop(back);
                        return;
                    }
                    m = back;
                    self.shared.signal(self.id, target);
                    self.poll_attention_forced();
                    std::hint::spin_loop();
                }
            }
        }
        self.shared.signal(self.id, target);
    }

    #[cold]
    fn wait_for_room(&self, ring: &crate::ring::Ring<IpiMsg>, target: usize) {
        let backoff = Backoff::new();
        while ring.len() > ring.capacity() / 2 {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            self.shared.signal(self.id, target);
            // Nested waits (a handler that sends) only spin: the upper half
            // of every ring is headroom for them.
            if self.ipi_depth.get() == 0 {
                self.poll_attention_forced();
            }
            backoff.snooze();
        }
    }

    // ---------------------------------------------------------------
    // Scheduling primitives
    // ---------------------------------------------------------------

    /// Makes a thread that is not running, queued or sleeping runnable.
    #[inline]
    pub(crate) fn make_runnable(&self, t: TdPtr) {
        self.runq.push_back(t);
        self.note_candidate(t);
    }

    /// Ends a sleep of `t` (or records the wakeup if it has not reached
    /// `sleep` yet). Wait-channel wakeups, timeouts and interrupts all land
    /// here.
    pub(crate) fn wake(&self, t: TdPtr, why: Wake) {
        let td = t.td();
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        if td.has(tdf::SLEEPING) {
            td.clear(tdf::SLEEPING | tdf::SINTR);
            td.wake.set(why);
            self.stats().wakeups.bump();
            self.make_runnable(t);
        } else if why == Wake::Wakeup {
            td.set(tdf::WOKEN);
        }
    }

    /// Wakes sleepers on `chan` on this CPU. Returns whether any was found.
    pub(crate) fn wakeup_local(&self, chan: usize, one: bool) -> bool {
        let mut found = false;
        let empty = self.sleepq.take(chan, one, |t| {
            found = true;
            // take() already unlinked it from the sleep queue.
            let td = t.td();
            if td.has(tdf::SLEEPING) {
                td.clear(tdf::SLEEPING | tdf::SINTR);
                td.wake.set(Wake::Wakeup);
                self.stats().wakeups.bump();
                self.make_runnable(t);
            } else {
                td.set(tdf::WOKEN);
            }
        });
        // Clear our bit in the bucket mask only after a visit found nobody
        // (a stale bit costs one wasted IPI; clearing and re-setting it on
        // every sleep would bounce the mask's cache line between CPUs).
        if empty && !found {
            self.shared.clear_sleeper_bit(bucket_of(chan), self.id);
        }
        found
    }

    /// Registers `t` on `chan` and publishes this CPU in the bucket mask.
    pub(crate) fn sleepq_insert(&self, t: TdPtr, chan: usize) {
        if self.sleepq.insert(t, chan) {
            self.shared.set_sleeper_bit(bucket_of(chan), self.id);
        }
    }

    pub(crate) fn timers_ptr(&self) -> *mut BinaryHeap<Timer> {
        self.timers.get()
    }

    pub(crate) fn ntimers_sub(&self, n: usize) {
        self.ntimers.set(self.ntimers.get() - n);
    }

    /// Arms a timeout for the current sleep of `t`.
    pub(crate) fn arm_timer(&self, t: TdPtr, when: Instant) {
        let td = t.td();
        td.timer_refs.set(td.timer_refs.get() + 1);
        // SAFETY: the heap is touched only by this CPU, and no reference to
        // it outlives this call.
        unsafe { &mut *self.timers.get() }.push(Timer {
            when,
            seq: td.sleep_seq.get(),
            td: t,
        });
        self.ntimers.set(self.ntimers.get() + 1);
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.ntimers.get() == 0 {
            return None;
        }
        // SAFETY: see arm_timer.
        unsafe { &*self.timers.get() }.peek().map(|t| t.when)
    }

    /// Fires due timers. Cheap when none are armed.
    #[inline]
    pub(crate) fn expire_timers(&self) {
        if self.ntimers.get() != 0 {
            self.expire_timers_slow();
        }
    }

    #[cold]
    fn expire_timers_slow(&self) {
        let now = Instant::now();
        loop {
            // SAFETY: see arm_timer; the borrow ends before wake() runs.
            let timer = {
                let heap = unsafe { &mut *self.timers.get() };
                match heap.peek() {
                    Some(t) if t.when <= now => heap.pop().unwrap(),
                    _ => break,
                }
            };
            self.ntimers.set(self.ntimers.get() - 1);
            let td = timer.td.td();
            td.timer_refs.set(td.timer_refs.get() - 1);
            if td.has(tdf::EXITED) {
                if td.timer_refs.get() == 0 {
                    self.free_thread(timer.td);
                }
            } else if td.sleep_seq.get() == timer.seq && td.has(tdf::SLEEPING) {
                self.wake(timer.td, Wake::Timeout);
            }
        }
    }

    // ---------------------------------------------------------------
    // Thread creation, exit and caches
    // ---------------------------------------------------------------

    /// A stack of `size` bytes, from the cache when it is the default size.
    pub(crate) fn alloc_stack(&self, size: usize) -> Result<Stack, crate::Error> {
        if size == self.shared.config.stack_size {
            // SAFETY: the cache is touched only by this CPU; the borrow ends
            // in this statement.
            if let Some(s) = unsafe { &mut *self.free_stacks.get() }.pop() {
                return Ok(s);
            }
        }
        Stack::new(size)
    }

    /// A thread structure, recycled when possible, linked on this CPU's
    /// all-threads list.
    pub(crate) fn alloc_thread(&self) -> TdPtr {
        // SAFETY: the cache is touched only by this CPU.
        let b = unsafe { &mut *self.free_threads.get() }
            .pop()
            .unwrap_or_else(Thread::new);
        let t = TdPtr(std::ptr::NonNull::from(Box::leak(b)));
        let td = t.td();
        td.flags.set(0);
        td.cpu.set(self);
        td.timer_refs.set(0);
        td.wchan.set(0);
        td.wmesg.set("");
        td.crit.set(0);
        self.link_all(t);
        self.stats().threads_spawned.bump();
        t
    }

    /// Links `t` on this CPU's all-threads list.
    pub(crate) fn link_all(&self, t: TdPtr) {
        let td = t.td();
        let head = self.all.get();
        td.all_prev.set(ptr::null_mut());
        td.all_next.set(head);
        if let Some(h) = TdPtr::from_raw(head) {
            h.td().all_prev.set(t.as_ptr());
        }
        self.all.set(t.as_ptr());
        self.stats().threads_alive.bump();
    }

    pub(crate) fn unlink_all(&self, t: TdPtr) {
        let td = t.td();
        let (next, prev) = (td.all_next.get(), td.all_prev.get());
        match TdPtr::from_raw(prev) {
            Some(p) => p.td().all_next.set(next),
            None => self.all.set(next),
        }
        if let Some(n) = TdPtr::from_raw(next) {
            n.td().all_prev.set(prev);
        }
        self.stats().threads_alive.drop_one();
    }

    /// The thread's coroutine returned: recycle its stack and structure
    /// (`lwkt_exit` / `lwkt_free_thread`).
    pub(crate) fn thread_exited(&self, t: TdPtr) {
        let td = t.td();
        // SAFETY: the coroutine has finished; only the scheduler context
        // touches `coro`.
        let coro = unsafe { (*td.coro.get()).take() }.expect("exited thread without coroutine");
        let stack = coro.into_stack();
        if stack.usable_size() == self.shared.config.stack_size {
            // SAFETY: the cache is touched only by this CPU.
            let cache = unsafe { &mut *self.free_stacks.get() };
            if cache.len() < STACK_CACHE {
                cache.push(stack);
            }
        }
        self.retire(t);
    }

    /// Unlinks a finished thread and frees or parks its structure.
    fn retire(&self, t: TdPtr) {
        let td = t.td();
        if td.tok_used.get() != 0 {
            self.tokens_drop_all(t);
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
        unsafe {
            *td.name.get() = None;
        }
        td.flags.set(tdf::EXITED);
        if td.timer_refs.get() == 0 {
            self.free_thread(t);
        }
    }

    fn free_thread(&self, t: TdPtr) {
        // SAFETY: the structure was leaked from a Box in alloc_thread and
        // is referenced from nowhere any more (not queued, unlinked, no
        // timer entries).
        let b = unsafe { Box::from_raw(t.as_ptr()) };
        // SAFETY: the cache is touched only by this CPU.
        let cache = unsafe { &mut *self.free_threads.get() };
        if cache.len() < THREAD_CACHE {
            cache.push(b);
        }
    }

    /// Shutdown: unwind every remaining thread's stack so destructors run.
    pub(crate) fn cancel_all(&self) {
        self.shutting_down.set(true);
        self.preempt_cand.set(ptr::null_mut());
        while let Some(t) = TdPtr::from_raw(self.all.get()) {
            let td = t.td();
            td.set(tdf::CANCEL);
            if td.has(tdf::RUNQ) {
                self.runq.remove(t);
            }
            if td.has(tdf::TSLEEPQ) {
                self.sleepq.remove(t);
            }
            td.clear(tdf::SLEEPING | tdf::SINTR | tdf::PARKED);
            // SAFETY: scheduler context; the thread is not running.
            let coro = unsafe { (*td.coro.get()).take() };
            if td.tok_used.get() != 0 {
                // Destructors run with the thread's tokens held, as its
                // code expects. Other CPUs release theirs as they stop.
                let backoff = Backoff::new();
                while !self.tokens_acquire_all(t) {
                    td.tok_blocked.set(ptr::null());
                    backoff.snooze();
                }
            }
            // Answer joiners first: unwinding may drop the last reference
            // to the packet.
            if let Some(p) = td.packet() {
                p.ctl().td.store(ptr::null_mut(), Ordering::Release);
                p.cancel();
            }
            if let Some(mut coro) = coro {
                self.cur.set(t.as_ptr());
                td.set(tdf::RUNNING);
                // Destructors run here, on the thread's own stack.
                coro.force_unwind();
                td.clear(tdf::RUNNING);
                self.cur.set(ptr::null_mut());
            }
            td.packet.set(None);
            self.retire(t);
        }
        // Drop the timer heap; free structures it kept alive.
        // SAFETY: scheduler context, no other borrow.
        let heap = std::mem::take(unsafe { &mut *self.timers.get() });
        self.ntimers.set(0);
        for timer in heap {
            let td = timer.td.td();
            td.timer_refs.set(td.timer_refs.get() - 1);
            if td.has(tdf::EXITED) && td.timer_refs.get() == 0 {
                self.free_thread(timer.td);
            }
        }
        // SAFETY: as above.
        unsafe {
            (*self.free_threads.get()).clear();
            (*self.free_stacks.get()).clear();
        }
    }

    /// The running thread, when called from thread context.
    #[inline]
    pub(crate) fn current(&self) -> Option<TdPtr> {
        TdPtr::from_raw(self.cur.get())
    }

    /// Calls `f` for every thread this CPU owns.
    pub(crate) fn for_each_thread(&self, mut f: impl FnMut(&Thread)) {
        let mut cur = self.all.get();
        while let Some(t) = TdPtr::from_raw(cur) {
            f(t.td());
            cur = t.td().all_next.get();
        }
    }

    /// Runs on the thread dropping the runtime, after every CPU has
    /// stopped: takes over messages nobody processed (threads in flight
    /// between CPUs, remote spawns) and cancels those threads like the
    /// CPUs cancelled theirs, so their destructors run and their joiners
    /// are answered.
    pub(crate) fn cleanup(&self, mut take: impl FnMut() -> Vec<IpiMsg>) {
        CURRENT_CPU.with(|c| c.set(self));
        self.stop.set(true);
        self.shutting_down.set(true);
        for _ in 0..16 {
            let msgs = take();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                match m {
                    IpiMsg::Call(f) => f(self),
                    IpiMsg::Adopt(a) => self.adopt(a),
                    // Wakeups and thread requests have nobody left to act on.
                    _ => {}
                }
            }
            self.cancel_all();
        }
        CURRENT_CPU.with(|c| c.set(ptr::null()));
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
