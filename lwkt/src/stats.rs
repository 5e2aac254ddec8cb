//! Scheduler counters (the seed's `lwkt.*` sysctls), per CPU.

use std::sync::atomic::{AtomicU64, Ordering};

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
