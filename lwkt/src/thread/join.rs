//! Join packets and [`JoinHandle`]: where a thread leaves its result, and
//! how joiners wait for it (see `packet.rs` for the state protocol).

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;

use super::cur::{CurThread, Sleep, ThreadId};
use super::packet::{pk, PacketState};
use super::thread_ref::ThreadRef;
use crate::error::Panicked;
use crate::sched::core::with_current;
use crate::sched::ctl::{Ctl, CtlOwner};
use crate::sched::machine::{Machine, Msg};
use crate::sched::td::Thread as LwktThread;
use crate::sync::atomic::Ordering;
use crate::sync::thread::Thread;
use crate::sync::{lock, Arc, Mutex};

/// A panic payload, kept as thrown.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// Where a thread leaves its result; shared by the thread and its handles.
pub(crate) struct Packet<T> {
    pub(crate) ctl: Ctl,
    state: PacketState,
    /// Written once by the thread before DONE is published (Release);
    /// taken once by the joiner after seeing DONE (Acquire).
    result: UnsafeCell<Option<Result<T, Payload>>>,
    /// The OS thread waiting in `join_blocking`, if any.
    os_waiter: Mutex<Option<Thread>>,
}

// SAFETY: the result slot is handed from the thread to the joiner through
// the DONE bit's Release/Acquire (written strictly before, read strictly
// after); T: Send is required to move it, and the payload is Send.
unsafe impl<T: Send> Sync for Packet<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Packet<T> {}

impl<T> Packet<T> {
    pub(crate) fn new(machine: Arc<Machine>, tid: u64, cpu: usize) -> Arc<Packet<T>> {
        Arc::new(Packet {
            ctl: Ctl::new(machine, tid, cpu),
            state: PacketState::new(),
            result: UnsafeCell::new(None),
            os_waiter: Mutex::new(None),
        })
    }

    /// The packet's address: the wait channel its joiners sleep on.
    fn chan(&self) -> usize {
        self as *const Self as usize
    }

    /// Publishes the thread's result (called once, by the thread).
    pub(crate) fn complete(self: &Arc<Self>, r: Result<T, Payload>)
    where
        T: Send + 'static,
    {
        // SAFETY: only the thread writes the slot, once, before DONE; no
        // joiner reads it before seeing DONE.
        unsafe { *self.result.get() = Some(r) };
        let prev = self.state.publish(pk::DONE);
        // The common case (nobody announced a wait: the joiner had not
        // come yet, or ran this thread by handoff) costs this one test.
        if prev & (pk::DONE | pk::WAITING | pk::XWAITING | pk::OS_WAITER) != 0 {
            self.wake_waiters(prev, Some(&|| self.clone() as Arc<dyn CtlOwner>));
        }
    }

    /// Sets `bits` (DONE, perhaps CANCELLED) and wakes the waiters it
    /// finds (see [`wake_waiters`](Self::wake_waiters)).
    fn publish(&self, bits: u8, me: Option<&dyn Fn() -> Arc<dyn CtlOwner>>) {
        let prev = self.state.publish(bits);
        self.wake_waiters(prev, me);
    }

    /// After DONE was published over `prev` (the bits set before): wakes
    /// the waiters whose bits `prev` holds; nothing when `prev` already
    /// held DONE (a cancel after completion: the first publication woke
    /// them). `me`, when given, lets a joiner on another CPU be told by
    /// message; without it (cancellation at shutdown, where every joiner of
    /// this runtime is being cancelled too) such a joiner is left to its
    /// own CPU's cancellation.
    #[inline(never)]
    fn wake_waiters(&self, prev: u8, me: Option<&dyn Fn() -> Arc<dyn CtlOwner>>) {
        if prev & pk::DONE != 0 {
            return; // already published (a cancel after completion)
        }
        if prev & pk::WAITING != 0 {
            // A joiner of this runtime waits directly (`join_here`). The
            // SeqCst RMW above read its announcement, so its record is
            // visible.
            let ctl = &self.ctl;
            let cpu = ctl.joiner_cpu.load(Ordering::Relaxed);
            let m = &ctl.machine;
            let done_here = with_current(|core| {
                if !ctl.is_of(&core.machine) {
                    return false;
                }
                if core.id == cpu {
                    core.wake_joiner(ctl);
                } else if let Some(me) = me {
                    core.send(cpu, Msg::JoinDone(me()));
                }
                true
            });
            if done_here != Some(true) {
                if let Some(me) = me {
                    let _ = m.send_external(cpu, Msg::JoinDone(me()));
                }
            }
        }
        let chan = self.chan();
        if prev & pk::XWAITING != 0 {
            super::handle::wakeup_every_runtime(chan, false);
        }
        if prev & pk::OS_WAITER != 0 {
            if let Some(t) = lock(&self.os_waiter).as_ref() {
                t.unpark();
            }
        }
    }

    /// The result, once DONE was seen. Taken once: the handle is consumed.
    fn take(&self) -> Result<T, Payload> {
        // SAFETY: DONE was observed with Acquire by our caller, and the
        // JoinHandle (consumed by value) is the only reader.
        let r = unsafe { (*self.result.get()).take() };
        r.unwrap_or_else(|| {
            Err(Box::new(
                "thread cancelled: the runtime shut down before it finished",
            ))
        })
    }
}

impl<T: Send + 'static> CtlOwner for Packet<T> {
    fn ctl(&self) -> &Ctl {
        &self.ctl
    }

    fn finished(&self) -> bool {
        self.state.is_done()
    }

    fn cancel(&self, _started: bool) {
        if !self.state.is_done() {
            self.publish(pk::DONE | pk::CANCELLED, None);
        }
    }
}

#[cold]
#[inline(never)]
fn joined_itself(id: ThreadId) -> ! {
    panic!(
        "lwkt: thread {id} tried to join itself; it would wait for its own exit forever (deadlock)"
    )
}

/// Clears a joiner's record in its target's control block.
struct JoinerRecord<'a>(&'a Ctl);

impl Drop for JoinerRecord<'_> {
    fn drop(&mut self) {
        self.0.joiner.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

/// Owns the right to collect a thread's result. Dropping it detaches the
/// thread.
#[must_use = "dropping a JoinHandle detaches the thread"]
pub struct JoinHandle<T> {
    pub(crate) packet: Arc<Packet<T>>,
}

impl<T: Send + 'static> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId::from_raw(self.packet.ctl.tid)
    }

    /// Whether the thread has finished (or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.packet.state.is_done()
    }

    /// Waits for the thread to finish and returns its value, or
    /// [`Panicked`] with the panic message if it panicked (or was cancelled
    /// by runtime shutdown). The caller sleeps meanwhile; the thread runs
    /// when its CPU's scheduler picks it, in priority order.
    ///
    /// The thread may belong to another runtime: the joiner then sleeps
    /// until that runtime's thread finishes.
    ///
    /// # Panics
    /// When a thread joins itself (it would wait for its own exit
    /// forever).
    ///
    /// Inlined, switches included, for the reason given at
    /// [`CurThread::yield_now`]: the joiner resumes straight into its
    /// caller's frame.
    #[inline(always)]
    pub fn join(self, td: &mut CurThread) -> Result<T, Panicked> {
        let r = self.join_payload(td);
        td.switch_point();
        r.map_err(|p| Panicked::from_payload(&*p))
    }

    #[inline(always)]
    fn join_payload(self, td: &mut CurThread) -> Result<T, Payload> {
        let p = &*self.packet;
        if p.ctl.tid == td.id().as_u64() {
            joined_itself(td.id());
        }
        if p.ctl.is_of(&td.core().machine) {
            return self.join_here(td);
        }
        self.join_foreign(td)
    }

    /// `join` of a thread of another runtime.
    #[inline(never)]
    fn join_foreign(self, td: &mut CurThread) -> Result<T, Payload> {
        let p = &*self.packet;
        // A thread of another runtime: sleep on the packet; its thread's
        // completion wakes every runtime's sleepers there.
        loop {
            if p.state.is_done() {
                return p.take();
            }
            // No fence needed: the SeqCst RMW of announce, paired with the
            // thread's SeqCst RMW of DONE, orders our registration before
            // its read of the sleep mask.
            td.sleep_register(p.chan());
            if p.state.announce(pk::XWAITING) {
                td.sleep_remove();
                continue;
            }
            if td.sleep(p, Sleep::default().wmesg("join")).is_err() && td.cancelled() {
                return Err(Box::new("join abandoned: the runtime is shutting down"));
            }
        }
    }

    /// `join` of a thread of the caller's runtime: the joiner records
    /// itself in the thread's control block and sleeps without a sleep-queue
    /// entry; the thread's completion wakes it directly (same CPU) or by a
    /// message to its CPU.
    ///
    /// First, when the thread is the next this CPU would run (first in its
    /// run queue), the joiner runs it right away on its own stack (a
    /// handoff, see `Core::handoff`), which is what sleeping would lead to,
    /// minus two switches. Otherwise, when it is queued at the joiner's
    /// priority or above, the joiner yields once: the thread runs before
    /// the joiner's next turn. Either way nothing is reordered, and if it
    /// finished by then no announcement, sleep or wakeup is needed. Only if
    /// it has not does the joiner sleep.
    #[inline(always)]
    fn join_here(&self, td: &mut CurThread) -> Result<T, Payload> {
        let p = &*self.packet;
        if p.state.is_done() {
            return p.take();
        }
        let ctl = &p.ctl;
        if let Some((t, pri)) = td.core().queued_here(ctl) {
            let core = td.core();
            if core.handoff(td.td_ptr(), td.thread(), t) {
                if p.state.is_done() {
                    // As if the joiner had slept and been woken: it goes
                    // behind the peers of its priority that were waiting.
                    if core.runq.has_at_least(td.thread().pri.get()) {
                        td.yield_now();
                    }
                    return p.take();
                }
            } else if pri >= td.thread().pri.get() {
                td.yield_now();
                if p.state.is_done() {
                    return p.take();
                }
            }
        }
        ctl.joiner_cpu.store(td.cpu(), Ordering::Relaxed);
        ctl.joiner.store(
            td.thread() as *const LwktThread as *mut LwktThread,
            Ordering::Relaxed,
        );
        // Cleared on every way out (return, or unwinding at shutdown),
        // before the thread can leave this CPU or exit.
        let _record = JoinerRecord(ctl);
        if p.state.announce(pk::WAITING) {
            return p.take();
        }
        loop {
            let r = td.core().sleep_join_cur(td.thread());
            if p.state.is_done() {
                return p.take();
            }
            if r.is_err() && td.cancelled() {
                return Err(Box::new("join abandoned: the runtime is shutting down"));
            }
        }
    }

    /// Waits from a plain OS thread (blocking it) for the thread to
    /// finish. From an lwkt thread use [`join`](Self::join): blocking
    /// there stops the whole CPU.
    ///
    /// # Panics
    /// When called from a thread of the same runtime (it would block the
    /// CPU the thread may need to finish).
    pub fn join_blocking(self) -> Result<T, Panicked> {
        self.join_blocking_payload()
            .map_err(|p| Panicked::from_payload(&*p))
    }

    /// `join_blocking` that keeps the panic payload as thrown.
    pub(crate) fn join_blocking_payload(self) -> Result<T, Payload> {
        let p = &*self.packet;
        if with_current(|c| p.ctl.is_of(&c.machine)) == Some(true) {
            panic!("lwkt: join_blocking called from a thread of the same runtime; use join(td)");
        }
        *lock(&p.os_waiter) = Some(crate::sync::thread::current());
        if !p.state.announce(pk::OS_WAITER) {
            while !p.state.is_done() {
                crate::sync::thread::park();
            }
        }
        p.take()
    }

    /// Asks the thread to interrupt its current or next interruptible
    /// sleep, which then returns
    /// [`SleepError::Interrupted`](crate::SleepError).
    pub fn interrupt(&self) {
        self.thread().interrupt();
    }

    /// A reference to the thread for explicit scheduling (`lwkt_hold`):
    /// it stays valid (and harmless) after the thread exits.
    pub fn thread(&self) -> ThreadRef {
        ThreadRef::from_packet(self.packet.clone() as Arc<dyn CtlOwner>)
    }
}
