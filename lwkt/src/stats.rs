//! Scheduler counters (the seed's `lwkt.*` sysctls), per CPU.

use crate::sync::atomic::{AtomicU64, Ordering};

/// A counter written by one owner thread: a plain load and store, no
/// locked instruction on the hot path. Readers see a recent value.
#[derive(Default, Debug)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning CPU calls this.
    #[inline]
    pub(crate) fn bump(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Adds `n`. Only the owning CPU calls this.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts one (gauges). Only the owning CPU calls this.
    #[inline]
    pub(crate) fn drop_one(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Adds one from any thread (atomic RMW; off the hot path).
    #[inline]
    pub(crate) fn bump_shared(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One CPU's counters, written by that CPU (IPI send counters also by
/// outside senders, atomically).
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub(crate) switches: Counter,
    pub(crate) ipis_sent: Counter,
    pub(crate) ipis_avoided: Counter,
    pub(crate) ipis_processed: Counter,
    pub(crate) parks: Counter,
    pub(crate) wakeups: Counter,
    pub(crate) threads_alive: Counter,
    pub(crate) threads_spawned: Counter,
    pub(crate) tok_attempts: Counter,
    pub(crate) tok_failures: Counter,
    pub(crate) tok_wasted: Counter,
    pub(crate) tok_ordered: Counter,
    pub(crate) tok_skips: Counter,
    pub(crate) tok_blocks: Counter,
    pub(crate) tok_checks: Counter,
    pub(crate) tok_rmws: Counter,
    pub(crate) migrations: Counter,
    pub(crate) preempt_hits: Counter,
    pub(crate) preempt_misses: Counter,
    pub(crate) preempt_weird: Counter,
    pub(crate) io_waits: Counter,
    pub(crate) io_polls: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CpuStats {
        CpuStats {
            switches: self.switches.get(),
            ipis_sent: self.ipis_sent.get(),
            ipis_avoided: self.ipis_avoided.get(),
            ipis_processed: self.ipis_processed.get(),
            parks: self.parks.get(),
            wakeups: self.wakeups.get(),
            threads_alive: self.threads_alive.get(),
            threads_spawned: self.threads_spawned.get(),
            token_attempts: self.tok_attempts.get(),
            token_failures: self.tok_failures.get(),
            token_wasted: self.tok_wasted.get(),
            token_ordered_passes: self.tok_ordered.get(),
            token_skips: self.tok_skips.get(),
            token_blocks: self.tok_blocks.get(),
            token_checks: self.tok_checks.get(),
            token_rmws: self.tok_rmws.get(),
            migrations: self.migrations.get(),
            preempt_hits: self.preempt_hits.get(),
            preempt_misses: self.preempt_misses.get(),
            preempt_weird: self.preempt_weird.get(),
            io_waits: self.io_waits.get(),
            io_polls: self.io_polls.get(),
        }
    }
}

/// A snapshot of one CPU's counters (or their sum).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpuStats {
    /// Threads switched in.
    pub switches: u64,
    /// IPIs that had to wake a parked CPU.
    pub ipis_sent: u64,
    /// IPIs queued to a CPU that was running, so no signal was needed.
    pub ipis_avoided: u64,
    /// IPI messages handled by this CPU.
    pub ipis_processed: u64,
    /// Times this CPU parked its OS thread for lack of work.
    pub parks: u64,
    /// Sleeping threads made runnable (wakeups, timeouts, interrupts).
    pub wakeups: u64,
    /// Threads that exist on this CPU now.
    pub threads_alive: u64,
    /// Threads ever created on this CPU.
    pub threads_spawned: u64,
    /// Scheduler passes that tried to acquire all of a thread's tokens.
    pub token_attempts: u64,
    /// Of those, passes that failed on some token.
    pub token_failures: u64,
    /// Tokens acquired by the scheduler and given back because a later one
    /// failed (the 2010 thread's "N-1 wasted" cost).
    pub token_wasted: u64,
    /// Passes made in address order after repeated failures (the
    /// anti-livelock fallback).
    pub token_ordered_passes: u64,
    /// Threads skipped because the token that blocked them still looked
    /// busy (a plain load, no atomic read-modify-write).
    pub token_skips: u64,
    /// Acquisitions that spun out and switched away to wait.
    pub token_blocks: u64,
    /// Token-word checks made by the scheduler's re-acquisition passes:
    /// plain-load looks at a blocking token plus acquisition tries (the
    /// 2010 thread's "re-polls"; divide by `switches` for re-polls per
    /// switch).
    pub token_checks: u64,
    /// Atomic read-modify-writes on token words made by the scheduler's
    /// re-acquisition passes: compare-and-swaps (failed ones included),
    /// request-bit sets, and the releases of failed passes. Thread-side
    /// acquisitions and releases are not counted.
    pub token_rmws: u64,
    /// Threads this CPU handed to another CPU.
    pub migrations: u64,
    /// Interrupt threads that preempted the running thread
    /// (`preempt_hit`).
    pub preempt_hits: u64,
    /// Preemptions not done: the running thread was in a critical section,
    /// or the target held tokens or was no longer more urgent
    /// (`preempt_miss`).
    pub preempt_misses: u64,
    /// Preemption candidates that had already run or left the run queue
    /// by the time it was safe (`preempt_weird`).
    pub preempt_weird: u64,
    /// Waits for file-descriptor readiness (`wait_fd`, and socket calls
    /// that would have blocked).
    pub io_waits: u64,
    /// Looks at this CPU's poller (`epoll_wait` calls, blocking or not).
    pub io_polls: u64,
}

impl std::ops::Add for CpuStats {
    type Output = CpuStats;
    fn add(self, o: CpuStats) -> CpuStats {
        CpuStats {
            switches: self.switches + o.switches,
            ipis_sent: self.ipis_sent + o.ipis_sent,
            ipis_avoided: self.ipis_avoided + o.ipis_avoided,
            ipis_processed: self.ipis_processed + o.ipis_processed,
            parks: self.parks + o.parks,
            wakeups: self.wakeups + o.wakeups,
            threads_alive: self.threads_alive.wrapping_add(o.threads_alive),
            threads_spawned: self.threads_spawned + o.threads_spawned,
            token_attempts: self.token_attempts + o.token_attempts,
            token_failures: self.token_failures + o.token_failures,
            token_wasted: self.token_wasted + o.token_wasted,
            token_ordered_passes: self.token_ordered_passes + o.token_ordered_passes,
            token_skips: self.token_skips + o.token_skips,
            token_blocks: self.token_blocks + o.token_blocks,
            token_checks: self.token_checks + o.token_checks,
            token_rmws: self.token_rmws + o.token_rmws,
            migrations: self.migrations + o.migrations,
            preempt_hits: self.preempt_hits + o.preempt_hits,
            preempt_misses: self.preempt_misses + o.preempt_misses,
            preempt_weird: self.preempt_weird + o.preempt_weird,
            io_waits: self.io_waits + o.io_waits,
            io_polls: self.io_polls + o.io_polls,
        }
    }
}

/// Counters of a runtime: per CPU and summed (`rt.stats()`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// One entry per CPU, by CPU number.
    pub per_cpu: Vec<CpuStats>,
    /// The sum over all CPUs.
    pub total: CpuStats,
}
