//! Spawning (`lwkt_create`): [`ThreadBuilder`], and the body every lwkt
//! thread's coroutine runs.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use corosensei::Coroutine;

use super::cur::CurThread;
use super::handle::Handle;
use super::join::{JoinHandle, Packet, Unstarted};
use crate::error::Error;
use crate::priority::Priority;
use crate::sched::core::{alloc_tid_global, with_current, Core};
use crate::sched::ctl::CtlOwner;
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
        self.spawn_inner(td, f, true)
    }

    /// [`spawn`](Self::spawn) that never switches the caller out: a new
    /// thread on the caller's own CPU is only queued, and cannot run
    /// before the caller next switches; a preemption it makes due is left
    /// for the caller's [`CurThread::preempt_point`]. For an upper layer
    /// that registers the thread under its own lock before it may run
    /// (the LWP layer's `create`). A thread placed on another CPU may run
    /// at once, as with `spawn`.
    pub(crate) fn spawn_quiet<F, T>(self, td: &mut CurThread, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_inner(td, f, false)
    }

    #[inline(always)]
    fn spawn_inner<F, T>(
        self,
        td: &mut CurThread,
        f: F,
        preempt: bool,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce(&mut CurThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        let core = td.core();
        let plan = self.plan(&core.machine)?;
        let target = self.cpu.unwrap_or(core.id);
        let name = self.name.map(String::into_boxed_str);
        let Plan {
            stack_size,
            pri,
            intthread,
        } = plan;
        let tid = core.alloc_tid();
        if target == core.id {
            // The structure and stack first: the one step that can fail.
            let (t, stack) = core.new_thread_here(stack_size, tid, pri, intthread, name)?;
            let packet = Packet::new(core.machine.clone(), tid, target);
            let h = JoinHandle {
                packet: packet.clone(),
            };
            start(core, t, stack, f, packet);
            // Making an interrupt thread runnable here may preempt us now.
            if preempt {
                core.preempt_check();
            }
            Ok(h)
        } else {
            let stack = core.alloc_stack(stack_size)?;
            let packet = Packet::new(core.machine.clone(), tid, target);
            let h = JoinHandle {
                packet: packet.clone(),
            };
            let pending = Unstarted::new(packet);
            core.send(
                target,
                Msg::Call(Box::new(move |c: &Core| {
                    create_thread(c, stack, tid, pri, intthread, name, f, pending.take())
                })),
            );
            Ok(h)
        }
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
        let m = &handle.machine;
        if m.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let plan = self.plan(m)?;
        let target = self.cpu.unwrap_or_else(|| m.pick_cpu());
        let stack = Stack::new(plan.stack_size)?;
        let tid = alloc_tid_global();
        let packet = Packet::new(m.clone(), tid, target);
        let h = JoinHandle {
            packet: packet.clone(),
        };
        let name = self.name.map(String::into_boxed_str);
        let pending = Unstarted::new(packet);
        let Plan { pri, intthread, .. } = plan;
        let msg = Msg::Call(Box::new(move |c: &Core| {
            create_thread(c, stack, tid, pri, intthread, name, f, pending.take())
        }));
        let inside = with_current(|c| std::ptr::eq(&*c.machine, &**m)) == Some(true);
        if inside {
            with_current(|c| c.send(target, msg));
        } else {
            m.send_external(target, msg)?;
        }
        Ok(h)
    }
}

/// Builds the thread on the CPU that will own it and makes it runnable
/// (`lwkt_init_thread` + `lwkt_schedule`), for a spawn whose stack was
/// mapped elsewhere (another CPU, or outside the runtime).
#[allow(clippy::too_many_arguments)]
fn create_thread<F, T>(
    core: &Core,
    stack: Stack,
    tid: u64,
    pri: u8,
    intthread: bool,
    name: Option<Box<str>>,
    f: F,
    packet: Arc<Packet<T>>,
) where
    F: FnOnce(&mut CurThread) -> T + Send + 'static,
    T: Send + 'static,
{
    let t = core.new_thread(tid, pri, intthread, name, &stack);
    start(core, t, stack, f, packet);
}

/// Gives the new thread `t` (from `Core::new_thread` or
/// `Core::new_thread_here`) its coroutine on `stack` and makes it
/// runnable. The coroutine's body runs the function, publishes its result
/// or panic, and lets go of the packet.
#[inline(always)]
fn start<F, T>(core: &Core, t: TdPtr, stack: Stack, f: F, packet: Arc<Packet<T>>)
where
    F: FnOnce(&mut CurThread) -> T + Send + 'static,
    T: Send + 'static,
{
    let pkp: NonNull<dyn CtlOwner> = NonNull::from(&*packet as &dyn CtlOwner);
    let coro = Coroutine::with_stack(stack, move |y: &Yld, ()| {
        let pk = packet; // the thread's reference, for as long as it runs
        let mut cur = CurThread::new(t);
        cur.thread().yielder.set(y);
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut cur)));
        let td = cur.thread();
        if td.has(tdf::UNWINDING) {
            // Runtime shutdown unwinds through here: let it finish (the
            // CPU answered the joiners and cleared the packet pointers).
            if let Err(p) = r {
                resume_unwind(p);
            }
        }
        if !td.toks.is_empty() {
            // References left by forgotten guards: release them before the
            // result is published, so a joiner finds the tokens free.
            td.toks.drop_all();
        }
        pk.complete(r);
        // Let go of the packet: first the pointers others follow.
        pk.ctl().td.store(std::ptr::null_mut(), Ordering::Release);
        td.packet.set(None);
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
