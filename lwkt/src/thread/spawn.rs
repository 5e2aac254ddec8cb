//! Spawning (`lwkt_create`): [`ThreadBuilder`], and the body every lwkt
//! thread's coroutine runs.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use corosensei::Coroutine;

use super::cur::CurThread;
use super::cur::Upcall;
use super::handle::Handle;
use super::join::{JoinHandle, Packet, Payload};
use crate::error::Error;
use crate::priority::Priority;
use crate::sched::core::{alloc_tid_global, with_current, Core};
use crate::sched::ctl::{Ctl, CtlOwner};
use crate::sched::machine::{Machine, Msg};
use crate::sched::td::{tdf, TdPtr, Yld};
use crate::stack::{validate_stack_size, Stack};
use crate::sync::atomic::Ordering;
use crate::sync::Arc;

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

/// What a validated builder resolved to.
struct Plan {
    stack_size: usize,
    pri: u8,
    intthread: bool,
}

impl ThreadBuilder {
    /// A builder with the defaults: the spawning thread's CPU, priority
    /// `KERN_DAEMON`, the runtime's stack size.
    pub fn new() -> Self {
        Self::default()
    }

    /// The thread's name (shown in listings and in a stack overflow
    /// report).
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
    /// that thread is in a critical section, or this one waits for
    /// tokens).
    pub fn interrupt(mut self) -> Self {
        self.interrupt = true;
        self
    }

    /// Stack size in bytes (between [`MIN_STACK_SIZE`] and
    /// [`MAX_STACK_SIZE`]; default: the runtime's).
    ///
    /// [`MIN_STACK_SIZE`]: crate::MIN_STACK_SIZE
    /// [`MAX_STACK_SIZE`]: crate::MAX_STACK_SIZE
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    fn plan(&self, m: &Machine) -> Result<Plan, Error> {
        if let Some(c) = self.cpu {
            if c >= m.ncpus() {
                return Err(Error::InvalidCpu {
                    cpu: c,
                    ncpus: m.ncpus(),
                });
            }
        }
        let stack_size = match self.stack_size {
            Some(s) => validate_stack_size(s)?,
            // Invariant: the runtime's size was validated and rounded by
            // `Builder::build` (and never changes).
            None => m.config.stack_size,
        };
        let mut pri = self.priority.unwrap_or_default();
        if self.interrupt && pri < Priority::INT_SUPPORT {
            pri = Priority::INT_SUPPORT;
        }
        Ok(Plan {
            stack_size,
            pri: pri.get(),
            intthread: self.interrupt,
        })
    }

    /// Spawns from inside the runtime. Placing the thread on another CPU
    /// sends the creation there as a message; the stack is mapped here, so
    /// an allocation failure is returned to the caller.
    ///
    /// # Errors
    /// [`Error::InvalidCpu`], [`Error::StackTooSmall`],
    /// [`Error::StackTooLarge`], or [`Error::StackAlloc`] when no stack
    /// can be mapped.
    #[doc(alias = "lwkt_create")]
    pub fn spawn<F, T>(self, td: &mut CurThread, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_joinable(SpawnFrom::Thread(td), f, true)
    }

    /// Spawns from outside the runtime through a [`Handle`] (on the chosen
    /// CPU, or the next in round-robin order).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), and [`Error::Shutdown`] when the runtime
    /// is shutting down.
    pub fn spawn_from<F, T>(self, handle: &Handle, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_joinable(SpawnFrom::Handle(handle), f, false)
    }

    /// Every public spawn: a join packet holds the control block.
    #[inline(always)]
    fn spawn_joinable<F, T>(
        self,
        from: SpawnFrom<'_>,
        f: F,
        preempt: bool,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        let planned = self.plan_spawn(&from)?;
        let packet = Packet::new(from.machine().clone(), planned.tid, planned.target);
        let h = JoinHandle {
            packet: packet.clone(),
        };
        planned.launch(from, packet, move |td, _| f(td), preempt)?;
        Ok(h)
    }

    /// The first half of a spawn: validates the builder and picks the
    /// thread's id and CPU. An upper layer whose own structure holds the
    /// thread's control block (the LWP layer) fills that block in with
    /// these ([`PlannedSpawn::tid`], [`PlannedSpawn::cpu`]), then calls
    /// [`PlannedSpawn::launch`].
    ///
    /// # Errors
    /// [`Error::InvalidCpu`], [`Error::StackTooSmall`],
    /// [`Error::StackTooLarge`], and [`Error::Shutdown`] for a spawn
    /// through a handle of a runtime that is shutting down.
    #[inline(always)]
    pub(crate) fn plan_spawn(self, from: &SpawnFrom<'_>) -> Result<PlannedSpawn, Error> {
        let m = from.machine();
        if let SpawnFrom::Handle(_) = from {
            if m.is_shutdown() {
                return Err(Error::Shutdown);
            }
        }
        let plan = self.plan(m)?;
        let (target, tid) = match from {
            SpawnFrom::Thread(td) => {
                let core = td.core();
                (self.cpu.unwrap_or(core.id), core.alloc_tid())
            }
            SpawnFrom::Handle(_) => (self.cpu.unwrap_or_else(|| m.pick_cpu()), alloc_tid_global()),
        };
        Ok(PlannedSpawn {
            plan,
            name: self.name.map(String::into_boxed_str),
            tid,
            target,
        })
    }
}

/// Where a spawn is made from: a thread of the runtime, or a [`Handle`]
/// (outside the runtime, or in another one).
pub(crate) enum SpawnFrom<'a> {
    Thread(&'a CurThread),
    Handle(&'a Handle),
}

impl SpawnFrom<'_> {
    /// The runtime the new thread belongs to.
    #[inline]
    pub(crate) fn machine(&self) -> &Arc<Machine> {
        match self {
            SpawnFrom::Thread(td) => &td.core().machine,
            SpawnFrom::Handle(h) => &h.machine,
        }
    }
}

/// A validated spawn with its thread id and CPU chosen
/// ([`ThreadBuilder::plan_spawn`]).
pub(crate) struct PlannedSpawn {
    plan: Plan,
    name: Option<Box<str>>,
    tid: u64,
    target: usize,
}

impl PlannedSpawn {
    /// The new thread's id.
    pub(crate) fn tid(&self) -> u64 {
        self.tid
    }

    /// The CPU that will own the new thread.
    pub(crate) fn cpu(&self) -> usize {
        self.target
    }

    /// Creates the thread, whose coroutine holds `keeper` for as long as
    /// it runs, and makes it runnable. On the caller's own CPU it is only
    /// queued; with `preempt`, an interrupt thread made runnable there
    /// preempts the caller now, else that is left for the caller's
    /// [`CurThread::preempt_point`]. On another CPU (or through a handle)
    /// the creation travels there as a message, and the thread may run at
    /// once.
    ///
    /// # Errors
    /// [`Error::StackAlloc`] when no stack can be mapped, and
    /// [`Error::Shutdown`] for a spawn through a handle of a runtime that
    /// is shutting down. The keeper is dropped then (never run).
    ///
    /// # Panics
    /// When the keeper's control block was not filled in for this spawn
    /// (its thread id, CPU or runtime differ): a bug in the caller.
    #[inline(always)]
    pub(crate) fn launch<K, F>(
        self,
        from: SpawnFrom<'_>,
        keeper: K,
        f: F,
        preempt: bool,
    ) -> Result<(), Error>
    where
        K: Keeper,
        F: FnOnce(&mut CurThread, &K) -> K::Out + Send + 'static,
    {
        let ctl = keeper.ctl();
        let filled_in = || {
            ctl.tid == self.tid
                && ctl.cpu.load(Ordering::Relaxed) == self.target
                && ctl.td.load(Ordering::Relaxed).is_null()
                && ctl.is_of(from.machine())
        };
        if K::FILLED_IN_HERE {
            debug_assert!(filled_in());
        } else {
            assert!(
                filled_in(),
                "lwkt: a spawn's control block was not filled in for it (thread {})",
                self.tid
            );
        }
        let PlannedSpawn {
            plan:
                Plan {
                    stack_size,
                    pri,
                    intthread,
                },
            name,
            tid,
            target,
        } = self;
        match from {
            SpawnFrom::Thread(td) => {
                let core = td.core();
                if target == core.id {
                    let (t, stack) = core.new_thread_here(stack_size, tid, pri, intthread, name)?;
                    start(core, t, stack, f, keeper);
                    // Making an interrupt thread runnable here may preempt
                    // us now.
                    if preempt {
                        core.preempt_check();
                    }
                } else {
                    let stack = core.alloc_stack(stack_size)?;
                    let pending = Unstarted::new(keeper);
                    core.send(
                        target,
                        Msg::Call(Box::new(move |c: &Core| {
                            create_thread(c, stack, tid, pri, intthread, name, f, pending.take())
                        })),
                    );
                }
            }
            SpawnFrom::Handle(h) => {
                let m = &h.machine;
                let stack = Stack::new(stack_size)?;
                let pending = Unstarted::new(keeper);
                let msg = Msg::Call(Box::new(move |c: &Core| {
                    create_thread(c, stack, tid, pri, intthread, name, f, pending.take())
                }));
                let inside = with_current(|c| std::ptr::eq(&*c.machine, &**m)) == Some(true);
                if inside {
                    with_current(|c| c.send(target, msg));
                } else {
                    m.send_external(target, msg)?;
                }
            }
        }
        Ok(())
    }
}

/// What a thread's coroutine holds for as long as it runs: the owner of
/// the thread's control block ([`Ctl`]), and what becomes of the body's
/// outcome. A join packet (`Arc<Packet<T>>`) for every public spawn; an
/// upper layer's own structure (the LWP layer's LWP) for a spawn through
/// [`PlannedSpawn::launch`], which then is the thread's upcall too, so a
/// thread of that layer needs no second allocation, and no reference of
/// its own to that structure.
///
/// [`Ctl`]: crate::sched::ctl::Ctl
pub(crate) trait Keeper: Send + Sized + 'static {
    /// The body's value.
    type Out: Send + 'static;

    /// Whether this module built the control block for the spawn itself
    /// (a join packet), so [`PlannedSpawn::launch`] checks it only in
    /// debug builds; another keeper's is always checked.
    const FILLED_IN_HERE: bool = false;

    /// The control block's owner. Invariant: points into the allocation
    /// `self` keeps alive (so it stays valid for as long as `self` is
    /// held), and is the same on every call.
    fn owner(&self) -> NonNull<dyn CtlOwner>;

    /// The control block (`owner`'s, without the dynamic call).
    fn ctl(&self) -> &Ctl;

    /// The upper layer's hook to attach to the thread for its whole run
    /// (see [`CurThread::upcall`]). Same invariant as `owner`.
    fn upcall(&self) -> Option<NonNull<dyn Upcall>> {
        None
    }

    /// The body returned or panicked (this is not a shutdown unwind); the
    /// references of forgotten token guards are dropped already.
    fn complete(&self, td: &mut CurThread, r: Result<Self::Out, Payload>);

    /// Runtime shutdown unwinds the thread (its CPU already called the
    /// owner's [`CtlOwner::cancel`]); called before the unwind goes on.
    fn unwound(&self, _td: &mut CurThread) {}

    /// The thread was never created: its creation message was dropped
    /// (the runtime shut down first).
    fn never_ran(self);
}

impl<T: Send + 'static> Keeper for Arc<Packet<T>> {
    type Out = T;
    const FILLED_IN_HERE: bool = true;

    #[inline(always)]
    fn owner(&self) -> NonNull<dyn CtlOwner> {
        NonNull::from(&**self as &dyn CtlOwner)
    }

    #[inline(always)]
    fn ctl(&self) -> &Ctl {
        &self.ctl
    }

    #[inline(always)]
    fn complete(&self, _td: &mut CurThread, r: Result<T, Payload>) {
        Packet::complete(self, r);
    }

    fn never_ran(self) {
        self.cancel(false);
    }
}

/// Owns a spawn's keeper while the spawn is in flight (a message to
/// another CPU): if the message is dropped without running (the runtime
/// shut down first), the keeper hears of it, so joiners get an answer.
struct Unstarted<K: Keeper>(Option<K>);

impl<K: Keeper> Unstarted<K> {
    fn new(k: K) -> Unstarted<K> {
        Unstarted(Some(k))
    }

    /// The keeper, for the thread about to be created.
    fn take(mut self) -> K {
        self.0.take().expect("an unstarted keeper is taken once")
    }
}

impl<K: Keeper> Drop for Unstarted<K> {
    fn drop(&mut self) {
        if let Some(k) = self.0.take() {
            k.never_ran();
        }
    }
}

/// Builds the thread on the CPU that will own it and makes it runnable
/// (`lwkt_init_thread` + `lwkt_schedule`), for a spawn whose stack was
/// mapped elsewhere (another CPU, or outside the runtime).
#[allow(clippy::too_many_arguments)]
fn create_thread<K, F>(
    core: &Core,
    stack: Stack,
    tid: u64,
    pri: u8,
    intthread: bool,
    name: Option<Box<str>>,
    f: F,
    keeper: K,
) where
    K: Keeper,
    F: FnOnce(&mut CurThread, &K) -> K::Out + Send + 'static,
{
    let t = core.new_thread(tid, pri, intthread, name, &stack);
    start(core, t, stack, f, keeper);
}

/// Gives the new thread `t` (from `Core::new_thread` or
/// `Core::new_thread_here`) its coroutine on `stack` and makes it
/// runnable. The coroutine's body runs the function, hands its result or
/// panic to the keeper, and lets go of the keeper.
#[inline(always)]
fn start<K, F>(core: &Core, t: TdPtr, stack: Stack, f: F, keeper: K)
where
    K: Keeper,
    F: FnOnce(&mut CurThread, &K) -> K::Out + Send + 'static,
{
    let pkp = keeper.owner();
    let coro = Coroutine::with_stack(stack, move |y: &Yld, ()| {
        let pk = keeper; // the thread's reference, for as long as it runs
        let mut cur = CurThread::new(t, pk.upcall());
        cur.thread().yielder.set(y);
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut cur, &pk)));
        if cur.thread().has(tdf::UNWINDING) {
            // Runtime shutdown unwinds through here: let it finish (the
            // CPU answered the joiners and cleared the packet pointers).
            pk.unwound(&mut cur);
            if let Err(p) = r {
                resume_unwind(p);
            }
        }
        let td = cur.thread();
        if !td.toks.is_empty() {
            // References left by forgotten guards: release them before the
            // result is published, so a joiner finds the tokens free.
            td.toks.drop_all();
        }
        pk.complete(&mut cur, r);
        // Let go of the keeper: first the pointers others follow.
        pk.ctl().td.store(std::ptr::null_mut(), Ordering::Release);
        cur.thread().packet.set(None);
        // Last: `cur` (and the upcall pointer it carries) is not used
        // after this.
        drop(pk);
    });
    core.start_thread(t, coro, pkp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{page_size, DEFAULT_STACK_SIZE};

    /// Thread structures and stacks are recycled together
    /// (`Core::new_thread_here` takes a cached structure with its finished
    /// coroutine's stack, and skips re-recording the guard and size):
    /// through a mix of stack sizes, every thread's recorded guard page and
    /// usable size still describe the stack it runs on.
    #[test]
    fn recycled_structures_describe_their_own_stacks() {
        let rt = crate::Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let big = 4 * DEFAULT_STACK_SIZE;
            let sizes = [None, Some(big), None, None, Some(big), Some(big), None];
            for round in 0..3 {
                for &size in &sizes {
                    let mut b = ThreadBuilder::new();
                    if let Some(s) = size {
                        b = b.stack_size(s);
                    }
                    let h = b
                        .spawn(td, |td| {
                            let local = 0u8;
                            let sp = std::hint::black_box(&local) as *const u8 as usize;
                            let th = td.thread();
                            (th.guard.get(), th.stack_size.get(), sp)
                        })
                        .unwrap();
                    let ((g0, g1), usable, sp) = h.join(td).unwrap();
                    let want = size.unwrap_or(DEFAULT_STACK_SIZE);
                    assert_eq!(usable, want, "round {round}, size {size:?}");
                    assert_eq!(g1 - g0, page_size());
                    assert!(
                        sp > g1 && sp < g1 + usable,
                        "round {round}, size {size:?}: sp {sp:#x} outside [{g1:#x}, +{usable:#x})"
                    );
                }
            }
        });
    }
}
