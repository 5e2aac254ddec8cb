//! The runtime: its configuration ([`Builder`]), starting the CPUs' OS
//! threads and the scheduler clock, and shutdown ([`Runtime`]).
//!
//! Shutdown protocol (`Drop for Runtime`):
//! 1. set `shutdown` and flag every CPU (the KICK attention bit), which
//!    also wakes parked CPUs and the clock;
//! 2. each CPU leaves its loop at the next scheduling point and unwinds
//!    every thread it still owns, so their destructors run and their
//!    joiners are answered;
//! 3. the OS threads are joined; messages nobody processed (threads in
//!    flight between CPUs, remote spawns) are taken over by a stand-in CPU
//!    on the dropping thread, which cancels those threads the same way;
//! 4. the runtime leaves the process-wide list.
//!
//! Dropped from one of its own threads, the runtime cannot wait for
//! itself: steps 2-4 then run on a helper OS thread, and the drop panics
//! to say so.

use std::thread::JoinHandle as OsJoinHandle;
use std::time::Duration;

use crate::error::Error;
use crate::sched::core::{with_current, Core};
use crate::sched::machine::{Config, Machine, MAX_CPUS};
use crate::stack::{validate_stack_size, DEFAULT_STACK_SIZE};
use crate::stats::Stats;
use crate::sync::Arc;
use crate::thread::handle::{register, unregister};
use crate::thread::{CurThread, Handle, ThreadBuilder, Trace};
use crate::tokref::TokenReacquire;
use crate::trace::{DEFAULT_TRACE_EVENTS, MAX_TRACE_EVENTS, MIN_TRACE_EVENTS};

/// Default entries per IPI FIFO (a power of two). DragonFly uses 256.
pub const IPIQ_SIZE: usize = 128;
/// Default scheduler clock frequency, as the seed's `hz`.
pub const DEFAULT_HZ: u32 = 100;
/// Cap of the exponential backoff a contended exclusive token request
/// spins through before blocking (`token_backoff_max`, the seed's 4096).
pub const DEFAULT_TOKEN_BACKOFF_MAX: u32 = 4096;
/// The largest `token_backoff_max` accepted (about a millisecond of
/// spinning per contended request).
pub const MAX_TOKEN_BACKOFF: u32 = 1 << 20;
/// Failed re-acquisition passes of one thread before the scheduler takes
/// its tokens in address order (`lwkt_spin_loops`, the seed's 10).
pub const DEFAULT_TOKEN_SPIN_LOOPS: u32 = 10;
/// Width of each CPU's window, in cycle-counter bits, during which its
/// shared token requests ignore a waiting exclusive request
/// (`token_window_shift`, the seed's 8).
pub const DEFAULT_TOKEN_WINDOW_SHIFT: u32 = 8;
/// How long an idle CPU polls for work before parking its OS thread: long
/// enough to catch a partner CPU's reply in a ping-pong, short enough that
/// an idle runtime costs next to nothing.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(50);
/// How many recent senders an idle CPU watches directly (their FIFOs' next
/// slots) besides its attention word.
pub const DEFAULT_IDLE_WATCH: usize = 8;

/// Configures and starts a [`Runtime`]. Every setting is checked by
/// [`build`](Self::build), which names the first one out of range.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    cpus: Option<usize>,
    stack_size: usize,
    hz: u32,
    pin: Option<bool>,
    token_backoff_max: usize,
    token_spin_loops: u32,
    token_window_shift: u32,
    token_reacquire: TokenReacquire,
    idle_spin: Duration,
    ipi_fifo_size: usize,
    idle_watch: usize,
    trace_events: usize,
    trace: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cpus: None,
            stack_size: DEFAULT_STACK_SIZE,
            hz: DEFAULT_HZ,
            pin: None,
            token_backoff_max: DEFAULT_TOKEN_BACKOFF_MAX as usize,
            token_spin_loops: DEFAULT_TOKEN_SPIN_LOOPS,
            token_window_shift: DEFAULT_TOKEN_WINDOW_SHIFT,
            token_reacquire: TokenReacquire::Lwkt,
            idle_spin: DEFAULT_IDLE_SPIN,
            ipi_fifo_size: IPIQ_SIZE,
            idle_watch: DEFAULT_IDLE_WATCH,
            trace_events: DEFAULT_TRACE_EVENTS,
            trace: false,
        }
    }
}

impl Builder {
    /// Number of CPUs (scheduler OS threads), 1 to [`MAX_CPUS`]. Default:
    /// the available parallelism. More CPUs than cores is allowed.
    pub fn cpus(mut self, n: usize) -> Self {
        self.cpus = Some(n);
        self
    }

    /// Default stack size for new threads, in bytes (default 64 KiB,
    /// between [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE) and
    /// [`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE)). Stacks are committed
    /// lazily: untouched pages cost no memory.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Scheduler clock frequency, 1 to 10,000 (default 100, as the seed's
    /// `hz`): how often `maybe_yield` rotates equal-priority threads.
    pub fn hz(mut self, hz: u32) -> Self {
        self.hz = hz;
        self
    }

    /// Whether to pin each CPU's OS thread to a core (round-robin over the
    /// cores the process may use; where the OS refuses, the thread runs
    /// unpinned). Default: pin when the runtime has no more CPUs than
    /// usable cores; an oversubscribed runtime runs unpinned, so the OS can
    /// spread its CPUs over idle cores.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = Some(pin);
        self
    }

    /// How long a contended exclusive token request spins before it
    /// blocks (default [`DEFAULT_TOKEN_BACKOFF_MAX`]; 0 blocks at once; at
    /// most [`MAX_TOKEN_BACKOFF`]).
    pub fn token_backoff_max(mut self, n: usize) -> Self {
        self.token_backoff_max = n;
        self
    }

    /// Failed passes before the scheduler acquires a thread's tokens in
    /// address order (default [`DEFAULT_TOKEN_SPIN_LOOPS`]; 0: always in
    /// address order).
    pub fn token_spin_loops(mut self, n: u32) -> Self {
        self.token_spin_loops = n;
        self
    }

    /// Width of each CPU's shared-request window in cycle-counter bits
    /// (default [`DEFAULT_TOKEN_WINDOW_SHIFT`]; at most 40).
    pub fn token_window_shift(mut self, bits: u32) -> Self {
        self.token_window_shift = bits;
        self
    }

    /// How the scheduler re-acquires a switched-out thread's tokens
    /// before running it again (default [`TokenReacquire::Lwkt`]).
    /// [`TokenReacquire::Seed`] is the 2010 seed's algorithm, kept as a
    /// comparison mode for measuring what the default saves (see
    /// `lwkt-bench token_study` and `docs/token-contention.md`); both keep
    /// every token guarantee.
    pub fn token_reacquire(mut self, how: TokenReacquire) -> Self {
        self.token_reacquire = how;
        self
    }

    /// How long an idle CPU polls for work before parking its OS thread
    /// (default [`DEFAULT_IDLE_SPIN`]; zero parks at once; at most one
    /// second). Longer answers a partner CPU sooner and costs CPU time
    /// while idle.
    pub fn idle_spin(mut self, d: Duration) -> Self {
        self.idle_spin = d;
        self
    }

    /// Entries per IPI FIFO, one FIFO per ordered pair of CPUs that talk
    /// (allocated on first use; default [`IPIQ_SIZE`]; a power of two from
    /// 4 to 65,536).
    pub fn ipi_fifo_size(mut self, n: usize) -> Self {
        self.ipi_fifo_size = n;
        self
    }

    /// How many of its most recent senders an idle CPU watches directly,
    /// besides its attention word (default [`DEFAULT_IDLE_WATCH`]; 0 to
    /// 64): a watched sender's message is seen one cache-line transfer
    /// sooner. The same at any CPU count.
    pub fn idle_watch(mut self, n: usize) -> Self {
        self.idle_watch = n;
        self
    }

    /// Events each CPU's trace buffer holds per capture (default
    /// [`DEFAULT_TRACE_EVENTS`], from [`MIN_TRACE_EVENTS`] to
    /// [`MAX_TRACE_EVENTS`]; 32 bytes each, allocated and committed by
    /// each CPU when a capture starts, so that recording takes no page
    /// fault). A full buffer drops
    /// later events and counts them ([`TraceData::dropped`]).
    ///
    /// [`TraceData::dropped`]: crate::TraceData::dropped
    pub fn trace_events(mut self, n: usize) -> Self {
        self.trace_events = n;
        self
    }

    /// Start the runtime with an event-trace capture running (default
    /// off), so that it records from the first switch; stop and read it
    /// with [`Runtime::trace`].
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    fn config(&self) -> Result<Config, Error> {
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
        let stack_size = validate_stack_size(self.stack_size)?;
        if self.hz == 0 || self.hz > 10_000 {
            return Err(Error::InvalidHz(self.hz));
        }
        let invalid = |setting, value: u64, valid| Error::InvalidSetting {
            setting,
            value,
            valid,
        };
        if self.token_backoff_max > MAX_TOKEN_BACKOFF as usize {
            return Err(invalid(
                "token_backoff_max",
                self.token_backoff_max as u64,
                "at most 1048576 (MAX_TOKEN_BACKOFF)",
            ));
        }
        if self.token_window_shift > 40 {
            return Err(invalid(
                "token_window_shift",
                u64::from(self.token_window_shift),
                "at most 40",
            ));
        }
        if self.idle_spin > Duration::from_secs(1) {
            return Err(invalid(
                "idle_spin",
                self.idle_spin.as_micros().min(u128::from(u64::MAX)) as u64,
                "at most 1 s (the value is in microseconds)",
            ));
        }
        if !self.ipi_fifo_size.is_power_of_two() || !(4..=65536).contains(&self.ipi_fifo_size) {
            return Err(invalid(
                "ipi_fifo_size",
                self.ipi_fifo_size as u64,
                "a power of two from 4 to 65536",
            ));
        }
        if self.idle_watch > 64 {
            return Err(invalid("idle_watch", self.idle_watch as u64, "at most 64"));
        }
        if !(MIN_TRACE_EVENTS..=MAX_TRACE_EVENTS).contains(&self.trace_events) {
            return Err(invalid(
                "trace_events",
                self.trace_events as u64,
                "from 16 (MIN_TRACE_EVENTS) to 4194304 (MAX_TRACE_EVENTS)",
            ));
        }
        let record = Trace::recording_new_runtimes();
        let pin = self
            .pin
            .unwrap_or_else(|| cpus <= crate::affinity::allowed_cores().len().max(1));
        Ok(Config {
            cpus,
            stack_size,
            hz: self.hz,
            pin,
            token_backoff_max: self.token_backoff_max as u32,
            token_spin_loops: self.token_spin_loops,
            token_window_shift: self.token_window_shift,
            token_reacquire: self.token_reacquire,
            idle_spin: self.idle_spin,
            ipi_fifo_size: self.ipi_fifo_size,
            idle_watch: self.idle_watch,
            trace_events: self.trace_events,
            trace_at_start: self.trace || record,
            trace_record_at_drop: record,
        })
    }

    /// Checks every setting and starts the CPUs.
    ///
    /// # Errors
    /// The first setting out of range ([`Error::NoCpus`],
    /// [`Error::TooManyCpus`], [`Error::StackTooSmall`],
    /// [`Error::StackTooLarge`], [`Error::InvalidHz`],
    /// [`Error::InvalidSetting`]), or [`Error::OsThread`] when an OS thread
    /// cannot be started.
    pub fn build(self) -> Result<Runtime, Error> {
        Runtime::start(self.config()?)
    }
}

/// A set of per-CPU LWKT schedulers.
///
/// Dropping the runtime stops every CPU and unwinds the stacks of the
/// threads still alive, so their destructors run. A thread that never
/// reaches a scheduling point (an endless loop without `maybe_yield`)
/// keeps its CPU, and the drop, waiting.
pub struct Runtime {
    machine: Arc<Machine>,
    os_threads: Vec<OsJoinHandle<()>>,
    clock: Option<OsJoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.machine.config;
        f.debug_struct("Runtime")
            .field("cpus", &c.cpus)
            .field("stack_size", &c.stack_size)
            .field("hz", &c.hz)
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(config: Config) -> Result<Runtime, Error> {
        crate::stack::overflow::install(crate::sched::core::overflow_lookup);
        let n = config.cpus;
        let machine = Arc::new(Machine::new(config));
        let mut rt = Runtime {
            machine: machine.clone(),
            os_threads: Vec::with_capacity(n),
            clock: None,
        };
        let cores = crate::affinity::allowed_cores();
        for id in 0..n {
            let m = machine.clone();
            let core = (m.config.pin && !cores.is_empty()).then(|| cores[id % cores.len()]);
            let h = std::thread::Builder::new()
                .name(format!("lwkt-cpu{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        crate::affinity::pin_current(c);
                    }
                    crate::stack::overflow::ensure_altstack();
                    let core = Core::new(id, m);
                    if let Some(buf) = core.machine.trace.initial_buffer(id) {
                        core.tr_enable(buf);
                    }
                    core.run();
                })
                .map_err(Error::OsThread)?;
            // The owner handle, for unparking, before anyone can send: a
            // CPU that has not started yet finds its messages flagged when
            // it does.
            machine.cpus[id]
                .mailbox
                .set_owner_thread(h.thread().clone());
            rt.os_threads.push(h);
        }
        let m = machine.clone();
        let clock = std::thread::Builder::new()
            .name("lwkt-clock".into())
            .spawn(move || {
                m.set_clock_thread();
                m.clock_main()
            })
            .map_err(Error::OsThread)?;
        rt.clock = Some(clock);
        register(&machine);
        Ok(rt)
    }

    /// Runs `f` as a thread on CPU 0 and returns its value; the calling OS
    /// thread blocks meanwhile.
    ///
    /// # Panics
    /// A panic in `f` propagates to the caller with its original payload.
    /// Calling this from a thread of the same runtime panics (it would
    /// block the CPU the new thread needs).
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
        match h.join_blocking_payload() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// A handle for spawning and waking from outside the runtime.
    pub fn handle(&self) -> Handle {
        Handle::new(self.machine.clone())
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.machine.ncpus()
    }

    /// The counters, per CPU and summed.
    pub fn stats(&self) -> Stats {
        self.handle().stats()
    }

    /// The runtime's event trace: start and stop captures, read and
    /// export them (see [`Trace`]).
    pub fn trace(&self) -> Trace {
        Trace::new(self.machine.clone())
    }
}

/// Steps 2-4 of the shutdown protocol (module header).
fn finish_shutdown(
    machine: Arc<Machine>,
    os_threads: Vec<OsJoinHandle<()>>,
    clock: Option<OsJoinHandle<()>>,
) -> bool {
    let mut panicked = false;
    for h in os_threads {
        panicked |= h.join().is_err();
    }
    if let Some(c) = clock {
        let _ = c.join();
    }
    // Messages nobody processed: threads in flight and remote spawns are
    // cancelled on a last stand-in CPU; the rest are dropped.
    Core::new(0, machine.clone()).teardown();
    crate::thread::trace::record_at_shutdown(&machine);
    unregister(&machine);
    panicked
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let inside = with_current(|c| Arc::ptr_eq(&c.machine, &self.machine)) == Some(true);
        self.machine.begin_shutdown();
        let os_threads = std::mem::take(&mut self.os_threads);
        let clock = self.clock.take();
        let machine = self.machine.clone();
        if inside {
            // This OS thread is one of the CPUs: it cannot join itself.
            // The CPUs stop once this thread reaches a scheduling point
            // (the panic below unwinds it there); a helper finishes.
            let spawned = std::thread::Builder::new()
                .name("lwkt-reaper".into())
                .spawn(move || {
                    finish_shutdown(machine, os_threads, clock);
                });
            if !std::thread::panicking() {
                panic!(
                    "lwkt: a Runtime was dropped from one of its own threads; it cannot wait for \
                     itself to stop. It is shutting down in the background{}; drop it from a \
                     thread outside the runtime instead",
                    if spawned.is_ok() {
                        ""
                    } else {
                        " (no helper thread could be started: its OS threads are left running)"
                    }
                );
            }
            return;
        }
        if finish_shutdown(machine, os_threads, clock) && !std::thread::panicking() {
            panic!("lwkt: a CPU's scheduler panicked during shutdown");
        }
    }
}
