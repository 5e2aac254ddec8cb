//! State shared by every CPU of one runtime: its configuration, each CPU's
//! remote-visible part ([`Remote`]), the sleep-bucket masks, the shutdown
//! flag and the scheduler clock. Everything here is immutable after
//! creation or atomic; a CPU's owner-only state is its [`Core`].
//!
//! Scheduler clock (`hardclock` → `lwkt_schedulerclock`): one OS thread
//! bumps a single epoch word every 1/hz while some CPU is busy. Each CPU
//! compares it with the epoch it last saw when a thread calls
//! `maybe_yield`, and rotates equal-priority peers itself: one write per
//! tick for the whole runtime, however many CPUs it has, instead of one
//! per busy CPU. The clock parks while every CPU is parked.
//!
//! [`Core`]: super::core::Core

use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::core::Core;
use super::ctl::CtlOwner;
use super::ops::{Adopt, ThreadOp};
use super::sleepq::SleepMasks;
use crate::error::Error;
use crate::ipi::{attn, Mailbox};
use crate::stats::Counters;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::thread::Thread;
use crate::sync::Arc;

/// The most CPUs a runtime may have (DragonFly's `MAXCPU` is 256 too).
pub const MAX_CPUS: usize = 256;

/// Validated runtime settings (see `Builder` for each one's meaning and
/// default).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) cpus: usize,
    /// Invariant: passed through `validate_stack_size` (in bounds, whole
    /// pages); spawns that ask for no size use it as is.
    pub(crate) stack_size: usize,
    pub(crate) hz: u32,
    pub(crate) pin: bool,
    pub(crate) token_backoff_max: u32,
    pub(crate) token_spin_loops: u32,
    pub(crate) token_window_shift: u32,
    pub(crate) token_reacquire: crate::tokref::TokenReacquire,
    pub(crate) idle_spin: Duration,
    pub(crate) ipi_fifo_size: usize,
    pub(crate) idle_watch: usize,
    pub(crate) trace_events: usize,
    pub(crate) trace_at_start: bool,
    pub(crate) trace_record_at_drop: bool,
}

/// A message to a CPU (an IPI). Carried out by the target on its own OS
/// thread.
pub(crate) enum Msg {
    /// Wake every sleeper on `chan` on the target CPU. `flow`: the trace's
    /// id for this IPI (0 when tracing is off).
    Wakeup { chan: usize, flow: u32 },
    /// Wake one sleeper on `chan`; if the target has none, pass the request
    /// on to the next CPU with sleepers in that bucket, stopping before
    /// `stop` (the CPU where the request began).
    WakeupOne { chan: usize, stop: usize, flow: u32 },
    /// Run a function on the target CPU (remote thread creation, `ps`).
    Call(Box<dyn FnOnce(&Core) + Send>),
    /// A request about one thread (schedule, deschedule, priority,
    /// interrupt, give away), carried out on the CPU that owns it.
    Thread(Box<ThreadOp>),
    /// A thread handed over by another CPU (migration).
    Adopt(Adopt),
    /// The thread of this packet finished: wake its joiner, which waits on
    /// the target CPU (see `Core::wake_joiner`). The Arc keeps the control
    /// block alive in flight.
    JoinDone(Arc<dyn CtlOwner>),
}

/// The part of a CPU that other OS threads may touch: its mailbox and its
/// counters. One per CPU, cache-line padded, in [`Machine::cpus`].
pub(crate) struct Remote {
    /// Attention word, parking flag, incoming FIFOs (see `ipi`).
    pub(crate) mailbox: Mailbox<Msg>,
    /// The CPU's counters: written by the CPU (plain stores), read by
    /// anyone (`Runtime::stats`).
    pub(crate) stats: CachePadded<Counters>,
}

/// See the module header.
pub(crate) struct Machine {
    /// The settings the runtime was built with.
    pub(crate) config: Config,
    /// Each CPU's remote-visible part, by CPU number.
    pub(crate) cpus: Box<[CachePadded<Remote>]>,
    /// Which CPUs may have sleepers in each sleep bucket.
    pub(crate) sleep: SleepMasks,
    /// Set once by `Runtime::drop`; CPUs stop at their next scheduling
    /// point after seeing it.
    pub(crate) shutdown: AtomicBool,
    /// The scheduler clock's epoch (see the module header).
    tick: CachePadded<AtomicU64>,
    /// Whether the clock thread parked because every CPU was idle.
    clock_parked: CachePadded<AtomicBool>,
    /// The clock's OS thread, for unparking. Set once.
    clock_thread: std::sync::OnceLock<Thread>,
    /// Round-robin CPU choice for spawns from outside the runtime.
    next_cpu: AtomicUsize,
    /// IPI counters of senders outside the runtime.
    pub(crate) ext_stats: Counters,
    /// The event trace's capture state (controls only; never touched on
    /// an event path).
    pub(crate) trace: crate::trace::Control,
}

impl Machine {
    pub(crate) fn new(config: Config) -> Machine {
        let n = config.cpus;
        Machine {
            cpus: (0..n)
                .map(|_| {
                    CachePadded::new(Remote {
                        mailbox: Mailbox::new(n, config.ipi_fifo_size),
                        stats: CachePadded::new(Counters::default()),
                    })
                })
                .collect(),
            sleep: SleepMasks::new(n),
            shutdown: AtomicBool::new(false),
            tick: CachePadded::new(AtomicU64::new(0)),
            clock_parked: CachePadded::new(AtomicBool::new(false)),
            clock_thread: std::sync::OnceLock::new(),
            next_cpu: AtomicUsize::new(0),
            ext_stats: Counters::default(),
            trace: crate::trace::Control::new(
                n,
                config.trace_events,
                config.trace_at_start,
                config.trace_record_at_drop,
            ),
            config,
        }
    }

    /// Number of CPUs.
    #[inline]
    pub(crate) fn ncpus(&self) -> usize {
        self.config.cpus
    }

    /// Whether the runtime is shutting down.
    #[inline]
    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// The scheduler clock's epoch now.
    #[inline]
    pub(crate) fn tick(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }

    /// Sends `m` to CPU `dst` from outside the runtime (a plain OS thread,
    /// or a thread of another runtime).
    pub(crate) fn send_external(&self, dst: usize, m: Msg) -> Result<(), Error> {
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        if self.cpus[dst].mailbox.post_external(m) {
            self.ext_stats.ipis_sent.bump_shared();
        } else {
            self.ext_stats.ipis_avoided.bump_shared();
        }
        Ok(())
    }

    /// Starts shutdown: every CPU stops at its next scheduling point.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for r in self.cpus.iter() {
            // Makes a thread polling maybe_yield() look, and switch out.
            r.mailbox.signal(attn::KICK);
        }
        self.tick.fetch_add(1, Ordering::Relaxed);
        self.wake_clock();
    }

    /// The next CPU in round-robin order, for spawns from outside.
    pub(crate) fn pick_cpu(&self) -> usize {
        self.next_cpu.fetch_add(1, Ordering::Relaxed) % self.ncpus()
    }

    /// Records the clock's OS thread (once, from that thread).
    pub(crate) fn set_clock_thread(&self) {
        let _ = self.clock_thread.set(crate::sync::thread::current());
    }

    /// Called by a CPU leaving park: restarts the clock if it stopped.
    pub(crate) fn wake_clock(&self) {
        if self.clock_parked.load(Ordering::SeqCst)
            && self.clock_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = self.clock_thread.get() {
                t.unpark();
            }
        }
    }

    /// The scheduler clock's loop (see the module header). Runs on its own
    /// OS thread until shutdown.
    pub(crate) fn clock_main(&self) {
        let period = Duration::from_secs(1) / self.config.hz;
        loop {
            crate::sync::thread::park_timeout(period);
            if self.is_shutdown() {
                return;
            }
            let busy = self.cpus.iter().any(|r| !r.mailbox.is_parked());
            if busy {
                self.tick.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.clock_parked.store(true, Ordering::SeqCst);
            let all_parked = self.cpus.iter().all(|r| r.mailbox.is_parked());
            if all_parked && !self.is_shutdown() {
                crate::sync::thread::park();
            }
            self.clock_parked.store(false, Ordering::SeqCst);
        }
    }
}
