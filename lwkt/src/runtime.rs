//! The runtime: its configuration, the CPUs' OS threads, the scheduler
//! clock, the IPI fabric and the wakeup routing between CPUs.
//!
//! Shutdown protocol (`Drop for Runtime`):
//! 1. set `shutdown`; unpark every CPU and the clock thread;
//! 2. each CPU leaves its loop at the next scheduling point and unwinds
//!    every thread it still owns, so their destructors run;
//! 3. the OS threads are joined; queued IPIs left in the rings and
//!    external queues are dropped (a spawn that never ran drops its
//!    closure); the runtime leaves the global registry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle as OsJoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::ring::Ring;
use crate::sched::cpu::{attn, current_cpu, Cpu, CpuShared, IpiMsg};
use crate::sched::sleepq::{bucket_of, NBUCKETS};
use crate::stack::{round_stack_size, DEFAULT_STACK_SIZE, MIN_STACK_SIZE};
use crate::stats::{CpuStats, Stats};
use crate::thread::{CurThread, JoinHandle, ThreadBuilder};

/// The most CPUs a runtime may have (the IPI fabric is one FIFO per
/// ordered pair of CPUs; DragonFly's `MAXCPU` is 256 too).
pub const MAX_CPUS: usize = 256;
/// Entries per IPI FIFO. DragonFly uses 256 with 3-word entries; ours are
/// 3 words too. A power of two.
pub const IPIQ_SIZE: usize = 128;
/// Default scheduler clock frequency, as the seed's `hz`.
pub const DEFAULT_HZ: u32 = 100;

/// Validated runtime settings.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cpus: usize,
    pub(crate) stack_size: usize,
    pub(crate) hz: u32,
    pub(crate) pin: bool,
    pub(crate) token_backoff_max: usize,
    pub(crate) token_spin_loops: u32,
    pub(crate) token_window_shift: u32,
}

/// Cap of the exponential backoff a contended exclusive token request
/// spins through before blocking (`token_backoff_max`, the seed's 4096).
pub const DEFAULT_TOKEN_BACKOFF_MAX: usize = 4096;
/// Failed re-acquisition passes of one thread before the scheduler takes
/// its tokens in address order (`lwkt_spin_loops`, the seed's 10).
pub const DEFAULT_TOKEN_SPIN_LOOPS: u32 = 10;
/// Width of each CPU's window, in cycle-counter bits, during which its
/// shared token requests ignore a waiting exclusive request
/// (`token_window_shift`, the seed's 8).
pub const DEFAULT_TOKEN_WINDOW_SHIFT: u32 = 8;

/// State shared by every CPU of one runtime.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) cpus: Box<[CachePadded<CpuShared>]>,
    /// `rings[src * ncpus + dst]`: the IPI FIFO from `src` to `dst`.
    rings: Box<[Ring<IpiMsg>]>,
    /// Per sleep bucket, a mask of CPUs that may have sleepers there:
    /// `sleep_masks[bucket * mask_words + word]`.
    sleep_masks: Box<[AtomicU64]>,
    mask_words: usize,
    pub(crate) shutdown: AtomicBool,
    /// Whether the clock thread parked because every CPU was idle.
    clock_parked: CachePadded<AtomicBool>,
    clock_thread: std::sync::OnceLock<std::thread::Thread>,
    /// Sequence for thread ids made outside the runtime.
    ext_tid: AtomicU64,
    /// Round-robin CPU choice for spawns from outside.
    next_cpu: AtomicUsize,
    /// IPI counters of senders outside the runtime.
    pub(crate) ext_stats: crate::stats::Counters,
}

impl Shared {
    #[inline]
    pub(crate) fn ncpus(&self) -> usize {
        self.config.cpus
    }

    #[inline]
    pub(crate) fn ring(&self, src: usize, dst: usize) -> &Ring<IpiMsg> {
        &self.rings[src * self.ncpus() + dst]
    }

    /// Tells `dst` that `src`'s FIFO to it has work, and unparks it if
    /// needed (`lwkt_send_ipiq` signalling).
    #[inline]
    pub(crate) fn signal(&self, src: usize, dst: usize) {
        let cs = &self.cpus[dst];
        if self.ncpus() <= attn::DIRECT_MAX {
            cs.attention
                .fetch_or(1 << (attn::SRC_SHIFT + src as u32), Ordering::SeqCst);
        } else {
            let w = src / 64;
            let old = cs.pending[w].fetch_or(1 << (src % 64), Ordering::SeqCst);
            if old == 0 {
                cs.attention
                    .fetch_or(1 << (attn::SRC_SHIFT + w as u32), Ordering::SeqCst);
            }
        }
        let stats = &self.cpus[src].stats;
        if cs.notify() {
            stats.ipis_sent.bump();
        } else {
            stats.ipis_avoided.bump();
        }
    }

    /// Sends from outside the runtime (a plain OS thread, or a thread of
    /// another runtime).
    pub(crate) fn send_external(&self, dst: usize, m: IpiMsg) -> Result<(), Error> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let cs = &self.cpus[dst];
        cs.ext
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(m);
        cs.attention.fetch_or(attn::EXT, Ordering::SeqCst);
        if cs.notify() {
            self.ext_stats.ipis_sent.bump_shared();
        } else {
            self.ext_stats.ipis_avoided.bump_shared();
        }
        Ok(())
    }

    pub(crate) fn set_sleeper_bit(&self, bucket: usize, cpu: usize) {
        let w = &self.sleep_masks[bucket * self.mask_words + cpu / 64];
        // Only `cpu` itself clears its bit, so a set bit stays set.
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) == 0 {
            w.fetch_or(1 << (cpu % 64), Ordering::SeqCst);
        }
    }

    pub(crate) fn clear_sleeper_bit(&self, bucket: usize, cpu: usize) {
        let w = &self.sleep_masks[bucket * self.mask_words + cpu / 64];
        if w.load(Ordering::Relaxed) & (1 << (cpu % 64)) != 0 {
            w.fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
        }
    }

    fn has_sleeper_bit(&self, bucket: usize, cpu: usize) -> bool {
        self.sleep_masks[bucket * self.mask_words + cpu / 64].load(Ordering::SeqCst)
            & (1 << (cpu % 64))
            != 0
    }

    /// The next CPU after `from` (cyclically, stopping before `stop`) that
    /// may have sleepers in `chan`'s bucket.
    pub(crate) fn next_sleeper_cpu(&self, chan: usize, from: usize, stop: usize) -> Option<usize> {
        let b = bucket_of(chan);
        let n = self.ncpus();
        let mut c = (from + 1) % n;
        while c != stop {
            if self.has_sleeper_bit(b, c) {
                return Some(c);
            }
            c = (c + 1) % n;
        }
        None
    }

    /// Routes a wakeup to the CPUs with sleepers in `chan`'s bucket
    /// (`wakeup` / `wakeup_one`). `from` is the calling CPU when the caller
    /// runs on one of this runtime's CPUs.
    pub(crate) fn wakeup(&self, from: Option<&Cpu>, chan: usize, one: bool) {
        // Pairs with the SeqCst RMW a sleeper makes when it registers: the
        // caller's change to the condition is ordered before our read of
        // the mask (see sleep_interlock).
        std::sync::atomic::fence(Ordering::SeqCst);
        self.wakeup_ordered(from, chan, one)
    }

    /// `wakeup` for callers that already ordered their condition change
    /// before this call with a SeqCst read-modify-write.
    pub(crate) fn wakeup_ordered(&self, from: Option<&Cpu>, chan: usize, one: bool) {
        let b = bucket_of(chan);
        let n = self.ncpus();
        if one {
            match from {
                Some(cpu) => {
                    if self.has_sleeper_bit(b, cpu.id) && cpu.wakeup_local(chan, true) {
                        return;
                    }
                    if let Some(next) = self.next_sleeper_cpu(chan, cpu.id, cpu.id) {
                        cpu.send(next, IpiMsg::WakeupOne { chan, stop: cpu.id });
                    }
                }
                None => {
                    let first = (0..n).find(|&c| self.has_sleeper_bit(b, c));
                    if let Some(c) = first {
                        let _ = self.send_external(c, IpiMsg::WakeupOne { chan, stop: c });
                    }
                }
            }
            return;
        }
        for w in 0..self.mask_words {
            let mut bits = self.sleep_masks[b * self.mask_words + w].load(Ordering::SeqCst);
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                match from {
                    Some(cpu) if cpu.id == c => {
                        cpu.wakeup_local(chan, false);
                    }
                    Some(cpu) => cpu.send(c, IpiMsg::Wakeup { chan }),
                    None => {
                        let _ = self.send_external(c, IpiMsg::Wakeup { chan });
                    }
                }
            }
        }
    }

    /// Called by a CPU leaving park: restart the clock if it stopped.
    pub(crate) fn wake_clock(&self) {
        if self.clock_parked.load(Ordering::SeqCst)
            && self.clock_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = self.clock_thread.get() {
                t.unpark();
            }
        }
    }

    pub(crate) fn alloc_ext_tid(&self) -> u64 {
        (self.ext_tid.fetch_add(1, Ordering::Relaxed) << 16) | 0xFFFF
    }

    pub(crate) fn pick_cpu(&self) -> usize {
        self.next_cpu.fetch_add(1, Ordering::Relaxed) % self.ncpus()
    }
}

/// The scheduler clock (`hardclock` → `lwkt_schedulerclock`): every 1/hz it
/// flags a tick on each CPU that is running threads, so `maybe_yield`
/// rotates equal-priority peers. It parks while every CPU is parked.
fn clock_main(shared: Arc<Shared>) {
    let period = Duration::from_secs(1) / shared.config.hz;
    loop {
        std::thread::park_timeout(period);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let mut busy = false;
        for cs in shared.cpus.iter() {
            if !cs.parked.load(Ordering::Relaxed) {
                cs.attention.fetch_or(attn::TICK, Ordering::Relaxed);
                busy = true;
            }
        }
        if !busy {
            shared.clock_parked.store(true, Ordering::SeqCst);
            let all_parked = shared.cpus.iter().all(|c| c.parked.load(Ordering::SeqCst));
            if all_parked && !shared.shutdown.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.clock_parked.store(false, Ordering::SeqCst);
        }
    }
}

// -------------------------------------------------------------------
// Global registry: lets `lwkt::wakeup` called from a plain OS thread (or
// from another runtime) reach every runtime's sleepers.
// -------------------------------------------------------------------

static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static LIVE_RUNTIMES: AtomicUsize = AtomicUsize::new(0);

fn registry_add(s: &Arc<Shared>) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|w| w.strong_count() > 0);
    r.push(Arc::downgrade(s));
    LIVE_RUNTIMES.fetch_add(1, Ordering::SeqCst);
}

fn registry_remove(s: &Arc<Shared>) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(s)));
    LIVE_RUNTIMES.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes all sleepers on `chan` for a caller whose condition change was a
/// SeqCst read-modify-write (no extra fence needed).
pub(crate) fn wakeup_addr_ordered(chan: usize) {
    match current_cpu() {
        Some(cpu) if LIVE_RUNTIMES.load(Ordering::Relaxed) <= 1 => {
            cpu.shared.wakeup_ordered(Some(cpu), chan, false);
            cpu.preempt_check();
        }
        _ => wakeup_addr(chan, false),
    }
}

/// Wakeup entry point for the free functions.
pub(crate) fn wakeup_addr(chan: usize, one: bool) {
    let here = current_cpu();
    if let Some(cpu) = here {
        cpu.shared.wakeup(Some(cpu), chan, one);
        // Waking a local interrupt thread preempts the caller now.
        cpu.preempt_check();
        if LIVE_RUNTIMES.load(Ordering::SeqCst) <= 1 {
            return;
        }
    }
    let others: Vec<Arc<Shared>> = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for s in others {
        if here.is_some_and(|c| Arc::ptr_eq(&c.shared, &s)) {
            continue;
        }
        s.wakeup(None, chan, one);
    }
}

// -------------------------------------------------------------------
// Builder and Runtime
// -------------------------------------------------------------------

/// Configures and starts a [`Runtime`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    cpus: Option<usize>,
    stack_size: usize,
    hz: u32,
    pin: bool,
    token_backoff_max: usize,
    token_spin_loops: u32,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cpus: None,
            stack_size: DEFAULT_STACK_SIZE,
            hz: DEFAULT_HZ,
            pin: true,
            token_backoff_max: DEFAULT_TOKEN_BACKOFF_MAX,
            token_spin_loops: DEFAULT_TOKEN_SPIN_LOOPS,
        }
    }
}

impl Builder {
    /// Number of CPUs (scheduler OS threads). Default: the available
    /// parallelism. More CPUs than cores is allowed.
    pub fn cpus(mut self, n: usize) -> Self {
        self.cpus = Some(n);
        self
    }

    /// Default stack size for new threads, in bytes (default 64 KiB,
    /// minimum 16 KiB). Stacks are committed lazily: untouched pages cost
    /// no memory.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Scheduler clock frequency (default 100, as the seed's `hz`).
    pub fn hz(mut self, hz: u32) -> Self {
        self.hz = hz;
        self
    }

    /// Whether to pin each CPU's OS thread to a core (default true; where
    /// the OS refuses, the thread runs unpinned).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// How long a contended exclusive token request spins before it
    /// blocks (default [`DEFAULT_TOKEN_BACKOFF_MAX`]; 0 blocks at once).
    pub fn token_backoff_max(mut self, n: usize) -> Self {
        self.token_backoff_max = n;
        self
    }

    /// Failed passes before the scheduler acquires a thread's tokens in
    /// address order (default [`DEFAULT_TOKEN_SPIN_LOOPS`]).
    pub fn token_spin_loops(mut self, n: u32) -> Self {
        self.token_spin_loops = n;
        self
    }

    /// Starts the CPUs.
    pub fn build(self) -> Result<Runtime, Error> {
        let cpus = self
            .cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if cpus == 0 {
            return Err(Error::NoCpus);
        }
        if cpus > MAX_CPUS {
            return Err(Error::TooManyCpus {
                requested: cpus,
                max: MAX_CPUS,
            });
        }
        if self.stack_size < MIN_STACK_SIZE {
            return Err(Error::StackTooSmall {
                requested: self.stack_size,
                min: MIN_STACK_SIZE,
            });
        }
        if self.hz == 0 || self.hz > 10_000 {
            return Err(Error::InvalidHz(self.hz));
        }
        let stack_size = round_stack_size(self.stack_size).ok_or(Error::StackTooSmall {
            requested: self.stack_size,
            min: MIN_STACK_SIZE,
        })?;
        let config = Config {
            cpus,
            stack_size,
            hz: self.hz,
            pin: self.pin,
            token_backoff_max: self.token_backoff_max,
            token_spin_loops: self.token_spin_loops,
            token_window_shift: DEFAULT_TOKEN_WINDOW_SHIFT,
        };
        Runtime::start(config)
    }
}

/// A set of per-CPU LWKT schedulers.
///
/// Dropping the runtime stops every CPU and unwinds the stacks of the
/// threads still alive, so their destructors run. A thread that never
/// reaches a scheduling point (an endless loop without `maybe_yield`)
/// keeps its CPU, and the drop, waiting.
pub struct Runtime {
    shared: Arc<Shared>,
    os_threads: Vec<OsJoinHandle<()>>,
    clock: Option<OsJoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cpus", &self.shared.config.cpus)
            .field("stack_size", &self.shared.config.stack_size)
            .field("hz", &self.shared.config.hz)
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(config: Config) -> Result<Runtime, Error> {
        let n = config.cpus;
        let mask_words = n.div_ceil(64);
        assert!(mask_words <= attn::MAX_WORDS);
        let shared = Arc::new(Shared {
            cpus: (0..n)
                .map(|_| CachePadded::new(CpuShared::new(mask_words)))
                .collect(),
            rings: (0..n * n).map(|_| Ring::new(IPIQ_SIZE)).collect(),
            sleep_masks: (0..NBUCKETS * mask_words)
                .map(|_| AtomicU64::new(0))
                .collect(),
            mask_words,
            shutdown: AtomicBool::new(false),
            clock_parked: CachePadded::new(AtomicBool::new(false)),
            clock_thread: std::sync::OnceLock::new(),
            ext_tid: AtomicU64::new(1),
            next_cpu: AtomicUsize::new(0),
            ext_stats: Default::default(),
            config,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            os_threads: Vec::with_capacity(n),
            clock: None,
        };
        let cores = crate::affinity::allowed_cores();
        for id in 0..n {
            let s = shared.clone();
            let core = if shared.config.pin && !cores.is_empty() {
                Some(cores[id % cores.len()])
            } else {
                None
            };
            let h = std::thread::Builder::new()
                .name(format!("lwkt-cpu{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        crate::affinity::pin_current(c);
                    }
                    let cpu = Cpu::new(id, s);
                    cpu.run_loop();
                })
                .map_err(Error::OsThread)?;
            // Wait until the CPU has published its OS thread handle, so
            // IPIs sent right after build() can unpark it.
            rt.os_threads.push(h);
        }
        for id in 0..n {
            while shared.cpus[id].os_thread.get().is_none() {
                std::thread::yield_now();
            }
        }
        let s = shared.clone();
        let clock = std::thread::Builder::new()
            .name("lwkt-clock".into())
            .spawn(move || {
                let _ = s.clock_thread.set(std::thread::current());
                clock_main(s)
            })
            .map_err(Error::OsThread)?;
        rt.clock = Some(clock);
        registry_add(&shared);
        Ok(rt)
    }

    /// Runs `f` as a thread on CPU 0 and returns its value; the calling OS
    /// thread blocks meanwhile. A panic in `f` propagates to the caller.
    pub fn block_on<F, R>(&self, f: F) -> R
    where
        F: FnOnce(&mut CurThread) -> R + Send + 'static,
        R: Send + 'static,
    {
        let h = ThreadBuilder::new()
            .name("main")
            .cpu(0)
            .spawn_from(&self.handle(), f)
            .unwrap_or_else(|e| panic!("lwkt: cannot start the main thread: {e}"));
        match h.join_blocking() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(Box::new(p.message().to_string())),
        }
    }

    /// A handle for spawning and waking from outside the runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.shared.ncpus()
    }

    /// The counters, per CPU and summed.
    pub fn stats(&self) -> Stats {
        self.handle().stats()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for cs in self.shared.cpus.iter() {
            // Makes a thread polling maybe_yield() look, and switch out.
            cs.attention.fetch_or(attn::TICK, Ordering::SeqCst);
            cs.parked.store(false, Ordering::SeqCst);
            if let Some(t) = cs.os_thread.get() {
                t.unpark();
            }
        }
        if let Some(t) = self.shared.clock_thread.get() {
            t.unpark();
        }
        let mut panicked = false;
        for h in self.os_threads.drain(..) {
            panicked |= h.join().is_err();
        }
        if let Some(c) = self.clock.take() {
            let _ = c.join();
        }
        // Messages nobody processed: threads in flight and remote spawns
        // are cancelled on a last stand-in CPU; the rest are dropped.
        let shared = self.shared.clone();
        let take = move || {
            let mut v = Vec::new();
            for cs in shared.cpus.iter() {
                v.extend(cs.ext.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
            }
            for r in shared.rings.iter() {
                // SAFETY: every CPU thread has been joined: this is the
                // only thread touching the rings now.
                while let Some(m) = unsafe { r.pop() } {
                    v.push(m);
                }
            }
            v
        };
        Cpu::new(0, self.shared.clone()).cleanup(take);
        registry_remove(&self.shared);
        if panicked && !std::thread::panicking() {
            panic!("lwkt: a CPU's scheduler panicked during shutdown");
        }
    }
}

/// A cloneable, `Send + Sync` handle to a runtime, for use from plain OS
/// threads: spawn threads, wake sleepers, read counters.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("cpus", &self.shared.ncpus())
            .finish()
    }
}

impl Handle {
    /// Spawns a thread on the next CPU in round-robin order.
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new().spawn_from(self, f)
    }

    /// Wakes every thread of this runtime sleeping on `chan`.
    pub fn wakeup<C: ?Sized>(&self, chan: &C) {
        let a = chan as *const C as *const () as usize;
        match current_cpu() {
            Some(c) if Arc::ptr_eq(&c.shared, &self.shared) => {
                self.shared.wakeup(Some(c), a, false)
            }
            _ => self.shared.wakeup(None, a, false),
        }
    }

    /// Wakes one thread of this runtime sleeping on `chan`.
    pub fn wakeup_one<C: ?Sized>(&self, chan: &C) {
        let a = chan as *const C as *const () as usize;
        match current_cpu() {
            Some(c) if Arc::ptr_eq(&c.shared, &self.shared) => self.shared.wakeup(Some(c), a, true),
            _ => self.shared.wakeup(None, a, true),
        }
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.shared.ncpus()
    }

    /// The counters, per CPU and summed. IPIs sent from outside the
    /// runtime count in the total only.
    pub fn stats(&self) -> Stats {
        let per_cpu: Vec<CpuStats> = self
            .shared
            .cpus
            .iter()
            .map(|c| c.stats.snapshot())
            .collect();
        let ext = self.shared.ext_stats.snapshot();
        let total = per_cpu
            .iter()
            .copied()
            .fold(CpuStats::default(), |a, b| a + b);
        let total = CpuStats {
            ipis_sent: total.ipis_sent + ext.ipis_sent,
            ipis_avoided: total.ipis_avoided + ext.ipis_avoided,
            ..total
        };
        Stats { per_cpu, total }
    }
}
