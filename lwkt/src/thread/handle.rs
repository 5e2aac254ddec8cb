//! [`Handle`] (a runtime seen from anywhere), the process-wide list of
//! live runtimes, and the free functions [`wakeup`] / [`wakeup_one`],
//! which reach every runtime.
//!
//! The list is read without a lock or an allocation (an `arc-swap`
//! snapshot): a wakeup from a plain OS thread costs a snapshot load plus
//! one mask read per runtime. Runtimes are added and removed (rarely) by
//! copying the list.

use std::fmt;

use arc_swap::ArcSwapOption;

use super::cur::{chan_addr, CurThread};
use super::join::JoinHandle;
use super::spawn::ThreadBuilder;
use crate::error::Error;
use crate::sched::core::with_current;
use crate::sched::machine::Machine;
use crate::sched::synch;
use crate::stats::{CpuStats, Stats};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Arc;

/// Every live runtime of the process.
static RUNTIMES: ArcSwapOption<Vec<Arc<Machine>>> = ArcSwapOption::const_empty();
/// How many runtimes are live (lets the common single-runtime case skip
/// the list).
static RUNTIME_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Adds a runtime to the process-wide list.
pub(crate) fn register(m: &Arc<Machine>) {
    RUNTIMES.rcu(|cur| {
        let mut v: Vec<Arc<Machine>> = cur.as_deref().cloned().unwrap_or_default();
        v.push(m.clone());
        Some(Arc::new(v))
    });
    RUNTIME_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Removes a runtime from the process-wide list.
pub(crate) fn unregister(m: &Arc<Machine>) {
    RUNTIMES.rcu(|cur| {
        let v: Vec<Arc<Machine>> = cur
            .as_deref()
            .map(|v| v.iter().filter(|x| !Arc::ptr_eq(x, m)).cloned().collect())
            .unwrap_or_default();
        Some(Arc::new(v))
    });
    RUNTIME_COUNT.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes sleepers on `chan` in every runtime (the free functions, and a
/// join packet whose joiner sits in another runtime). From inside a
/// runtime its own CPUs are reached directly; a local interrupt thread
/// woken this way preempts the caller once every runtime was told.
pub(crate) fn wakeup_every_runtime(chan: usize, one: bool) {
    // One look at this OS thread's CPU for the common case (the caller's
    // runtime is the only one): wake there, then preempt.
    let own = with_current(|core| {
        synch::wakeup(&core.machine, Some(core), chan, one);
        if RUNTIME_COUNT.load(Ordering::SeqCst) > 1 {
            return Some(Arc::as_ptr(&core.machine));
        }
        core.preempt_check();
        None
    });
    // `Some(None)`: done. `Some(Some(m))`: the other runtimes are left,
    // then the preemption. `None`: not on a CPU; every runtime is left.
    let own = match own {
        Some(None) => return,
        Some(Some(m)) => Some(m),
        None => None,
    };
    let list = RUNTIMES.load();
    for m in list.iter().flat_map(|v| v.iter()) {
        if Some(Arc::as_ptr(m)) != own {
            synch::wakeup(m, None, chan, one);
        }
    }
    if own.is_some() {
        with_current(|core| core.preempt_check());
    }
}

/// Wakes every thread sleeping on `chan`, on every CPU of every runtime
/// (`wakeup`). Callable from lwkt threads and plain OS threads alike. When
/// it makes a higher-priority interrupt thread runnable on the caller's
/// own CPU, that thread runs before this returns (preemption).
pub fn wakeup<C: ?Sized>(chan: &C) {
    wakeup_every_runtime(chan_addr(chan), false);
}

/// Wakes one thread sleeping on `chan` (`wakeup_one`): the request travels
/// from CPU to CPU until one has a sleeper. With several runtimes, one
/// thread per runtime. Preempts like [`wakeup`].
pub fn wakeup_one<C: ?Sized>(chan: &C) {
    wakeup_every_runtime(chan_addr(chan), true);
}

/// A cloneable, `Send + Sync` handle to a runtime, for use from plain OS
/// threads (and from threads of other runtimes): spawn threads, wake
/// sleepers, read counters.
#[derive(Clone)]
pub struct Handle {
    pub(crate) machine: Arc<Machine>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("cpus", &self.machine.ncpus())
            .finish()
    }
}

impl Handle {
    pub(crate) fn new(machine: Arc<Machine>) -> Handle {
        Handle { machine }
    }

    /// Spawns a thread on the next CPU in round-robin order.
    ///
    /// # Errors
    /// As [`ThreadBuilder::spawn_from`].
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new().spawn_from(self, f)
    }

    /// Wakes every thread of *this runtime* sleeping on `chan`. Same
    /// semantics as [`wakeup`] otherwise: from a thread of this runtime it
    /// preempts for a local interrupt thread it made runnable. Use
    /// [`wakeup`] to reach every runtime.
    pub fn wakeup<C: ?Sized>(&self, chan: &C) {
        self.wakeup_here(chan_addr(chan), false);
    }

    /// Wakes one thread of *this runtime* sleeping on `chan` (see
    /// [`Handle::wakeup`]).
    pub fn wakeup_one<C: ?Sized>(&self, chan: &C) {
        self.wakeup_here(chan_addr(chan), true);
    }

    fn wakeup_here(&self, chan: usize, one: bool) {
        let m = &self.machine;
        let inside = with_current(|core| {
            if !std::ptr::eq(&*core.machine, &**m) {
                return false;
            }
            synch::wakeup(m, Some(core), chan, one);
            core.preempt_check();
            true
        });
        if inside != Some(true) {
            synch::wakeup(m, None, chan, one);
        }
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.machine.ncpus()
    }

    /// The counters, per CPU and summed. IPIs sent from outside the
    /// runtime count in the total only.
    pub fn stats(&self) -> Stats {
        let per_cpu: Vec<CpuStats> = self
            .machine
            .cpus
            .iter()
            .map(|c| c.stats.snapshot())
            .collect();
        let ext = self.machine.ext_stats.snapshot();
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
