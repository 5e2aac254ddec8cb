//! The event trace's controls ([`Trace`]): start and stop a capture on
//! every CPU of a runtime, read it, export it.
//!
//! Start/stop protocol (each CPU's switch is owner-only, so only the CPU
//! itself may flip it):
//! 1. the controller takes the runtime's control lock (one start or stop
//!    at a time);
//! 2. start: it allocates one fresh buffer per CPU and sends each CPU a
//!    message that points the CPU's switch at its buffer; stop: a message
//!    that clears the switch;
//! 3. it waits until every CPU has answered (an outside caller parks; a
//!    thread of the runtime sleeps), so that when `start` returns every
//!    CPU records, and when `stop` returns none does.
//!
//! Reading never needs the CPUs to stop: a buffer's published events are
//! never written again (see `trace::ring`), so [`Trace::data`] may read a
//! capture that is still running.

use std::sync::atomic::AtomicBool;

use super::cur::{CurThread, Sleep};
use super::handle::Handle;
use crate::error::Error;
use crate::sched::core::{with_current, Core};
use crate::sched::machine::{Machine, Msg};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{lock, Arc, Mutex};
use crate::trace::{Session, TraceData};

/// Whether runtimes built from now on start with a capture running and
/// hand it over when they shut down (`Trace::record_new_runtimes`).
static RECORD_NEW: AtomicBool = AtomicBool::new(false);
/// Captures of runtimes that shut down while `RECORD_NEW` was set.
static RECORDED: std::sync::Mutex<Vec<TraceData>> = std::sync::Mutex::new(Vec::new());
/// The most captures `RECORDED` keeps (the oldest go first).
const RECORDED_MAX: usize = 16;

/// The event trace of one runtime: [`Runtime::trace`](crate::Runtime::trace)
/// or [`Handle::trace`].
///
/// A capture records, per CPU, every switch (with its reason: yield,
/// sleep, token-blocked, preempt, park, migrate, exit), sleep and wakeup
/// (channel, waking CPU), token block / collision / acquisition (token
/// name), IPI sent and received (kind), spawn, migration and
/// interrupt-thread preemption, into fixed-size buffers
/// ([`Builder::trace_events`](crate::Builder::trace_events) events per
/// CPU; when one is full its later events are dropped and counted). Off, it
/// costs each event site one predictable branch.
///
/// ```
/// let rt = lwkt::Runtime::builder().cpus(2).build()?;
/// let trace = rt.trace();
/// trace.start()?;
/// rt.block_on(|td| td.yield_now());
/// let data = trace.stop();
/// assert!(data.events() > 0);
/// let json = data.to_chrome_json(); // or data.write_perfetto("trace.json")
/// assert!(json.starts_with(b"{"));
/// # Ok::<(), lwkt::Error>(())
/// ```
#[doc(alias = "ktr")]
#[derive(Clone)]
pub struct Trace {
    machine: Arc<Machine>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("running", &self.is_running())
            .finish()
    }
}

/// Answers from the CPUs to one start or stop.
struct Acks {
    left: AtomicUsize,
    os_waiter: Mutex<Option<std::thread::Thread>>,
}

impl Acks {
    fn answer(self: &Arc<Self>, core: &Core) {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            crate::sched::synch::wakeup(
                &core.machine,
                Some(core),
                Arc::as_ptr(self) as usize,
                false,
            );
            if let Some(t) = lock(&self.os_waiter).take() {
                t.unpark();
            }
        }
    }
}

impl Trace {
    pub(crate) fn new(machine: Arc<Machine>) -> Trace {
        Trace { machine }
    }

    /// Whether a capture is running.
    pub fn is_running(&self) -> bool {
        self.machine
            .trace
            .session()
            .as_ref()
            .is_some_and(|s| s.end.is_none())
    }

    /// Starts a new capture on every CPU, discarding the previous one (a
    /// running capture is replaced; after a shutdown the last capture is
    /// kept and this fails). Returns once every CPU records (each CPU
    /// answers at its next scheduling point, like a `ps` request). From
    /// a plain OS thread; from a thread of the runtime use
    /// [`start_in`](Self::start_in).
    ///
    /// # Errors
    /// [`Error::Shutdown`] when the runtime is shutting down.
    ///
    /// # Panics
    /// When called from a thread of this runtime (it would block its CPU).
    pub fn start(&self) -> Result<(), Error> {
        self.outside("start");
        let _busy = lock_busy(&self.machine);
        self.start_locked(None)
    }

    /// [`start`](Self::start), from a thread of the runtime: sleeps while
    /// the other CPUs answer.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when the runtime is shutting down;
    /// [`Error::ForeignRuntime`] when `td` is a thread of another runtime.
    pub fn start_in(&self, td: &mut CurThread) -> Result<(), Error> {
        self.same_runtime(td)?;
        let _busy = lock_busy_in(&self.machine, td);
        self.start_locked(Some(td))
    }

    /// Stops the capture and returns it (an empty capture when none was
    /// started). Returns once no CPU records any more. From a plain OS
    /// thread; from a thread of the runtime use [`stop_in`](Self::stop_in).
    /// After a shutdown it returns what was recorded.
    ///
    /// # Panics
    /// When called from a thread of this runtime (it would block its CPU).
    pub fn stop(&self) -> TraceData {
        self.outside("stop");
        let _busy = lock_busy(&self.machine);
        self.stop_locked(None)
    }

    /// [`stop`](Self::stop), from a thread of the runtime: sleeps while the
    /// other CPUs answer.
    ///
    /// # Errors
    /// [`Error::ForeignRuntime`] when `td` is a thread of another runtime.
    pub fn stop_in(&self, td: &mut CurThread) -> Result<TraceData, Error> {
        self.same_runtime(td)?;
        let _busy = lock_busy_in(&self.machine, td);
        Ok(self.stop_locked(Some(td)))
    }

    /// The current capture as recorded so far (it may still be running:
    /// reading does not stop or disturb the CPUs), or the last one; empty
    /// when none was started.
    pub fn data(&self) -> TraceData {
        self.machine
            .trace
            .session()
            .as_ref()
            .map(Session::data)
            .unwrap_or_default()
    }

    /// Writes [`data`](Self::data) to `path` as Chrome trace-event JSON,
    /// which <https://ui.perfetto.dev> opens (see
    /// [`TraceData::write_perfetto`]).
    ///
    /// # Errors
    /// `InvalidInput` when no capture was ever started; otherwise whatever
    /// writing the file reports.
    pub fn write_perfetto(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        if self.machine.trace.session().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "lwkt: no trace captured yet: call Trace::start first",
            ));
        }
        self.data().write_perfetto(path)
    }

    /// Process-wide: every runtime built from now on (until this is called
    /// with `false`) starts with a capture running, as with
    /// [`Builder::trace`](crate::Builder::trace), and when it shuts down
    /// its capture is kept for [`take_recorded`](Self::take_recorded).
    /// For tracing code that builds its own runtimes (`lwkt-bench
    /// --trace`).
    pub fn record_new_runtimes(on: bool) {
        RECORD_NEW.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn recording_new_runtimes() -> bool {
        RECORD_NEW.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The captures of the runtimes that shut down while
    /// [`record_new_runtimes`](Self::record_new_runtimes) was on, oldest
    /// first (at most the last 16), and forgets them.
    pub fn take_recorded() -> Vec<TraceData> {
        std::mem::take(&mut *RECORDED.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn outside(&self, what: &str) {
        if with_current(|c| std::ptr::eq(&*c.machine, &*self.machine)) == Some(true) {
            panic!(
                "lwkt: Trace::{what} called from a thread of the traced runtime; use \
                 Trace::{what}_in(td)"
            );
        }
    }

    fn same_runtime(&self, td: &CurThread) -> Result<(), Error> {
        if std::ptr::eq(&*td.core().machine, &*self.machine) {
            Ok(())
        } else {
            Err(Error::ForeignRuntime)
        }
    }

    fn start_locked(&self, td: Option<&mut CurThread>) -> Result<(), Error> {
        let m = &self.machine;
        if m.is_shutdown() {
            // Keep the last capture readable.
            return Err(Error::Shutdown);
        }
        let session = Session::new(m.ncpus(), m.trace.capacity);
        let bufs = session.bufs.clone();
        *m.trace.session() = Some(session);
        let sent = self.broadcast(td, move |id| {
            let buf = bufs[id].clone();
            Box::new(move |core: &Core| core.tr_enable(buf))
        });
        if !sent {
            if let Some(s) = m.trace.session().as_mut() {
                s.end = Some(crate::trace::clock::Anchor::take());
            }
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    fn stop_locked(&self, td: Option<&mut CurThread>) -> TraceData {
        if !self.is_running() {
            return self.data();
        }
        // A failed send means shutdown: the CPUs stop recording as their
        // OS threads finish.
        let _ = self.broadcast(td, |_| Box::new(|core: &Core| core.trace.disable()));
        let mut s = self.machine.trace.session();
        match s.as_mut() {
            Some(s) => {
                s.end = Some(crate::trace::clock::Anchor::take());
                s.data()
            }
            None => TraceData::default(),
        }
    }

    /// Sends every CPU the function `make(cpu)` and waits until all have
    /// run it. Returns false when the runtime is shutting down.
    fn broadcast(
        &self,
        td: Option<&mut CurThread>,
        make: impl Fn(usize) -> Box<dyn FnOnce(&Core) + Send>,
    ) -> bool {
        let m = &self.machine;
        let n = m.ncpus();
        let acks = Arc::new(Acks {
            left: AtomicUsize::new(n),
            os_waiter: Mutex::new(Some(std::thread::current())),
        });
        let mut ok = true;
        for id in 0..n {
            let f = make(id);
            let a = acks.clone();
            let msg = Msg::Call(Box::new(move |core: &Core| {
                f(core);
                a.answer(core);
            }));
            match &td {
                Some(td) => td.core().send(id, msg),
                None => {
                    if m.send_external(id, msg).is_err() {
                        acks.left.fetch_sub(1, Ordering::SeqCst);
                        ok = false;
                    }
                }
            }
        }
        match td {
            Some(td) => {
                // An error means the runtime is shutting down.
                let r = td.sleep_until(&*acks, Sleep::default().wmesg("trace"), || {
                    acks.left.load(Ordering::SeqCst) == 0
                });
                ok &= r.is_ok();
            }
            None => {
                while acks.left.load(Ordering::SeqCst) != 0 {
                    crate::sync::thread::park_timeout(std::time::Duration::from_millis(10));
                    if m.is_shutdown() {
                        return false;
                    }
                }
            }
        }
        ok && !m.is_shutdown()
    }
}

/// The control lock, from an OS thread outside the runtime.
fn lock_busy(m: &Machine) -> std::sync::MutexGuard<'_, ()> {
    m.trace.busy.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control lock, from a thread of the runtime: yields while another
/// controller holds it (blocking the OS thread could block that very
/// controller).
fn lock_busy_in<'m>(m: &'m Machine, td: &mut CurThread) -> std::sync::MutexGuard<'m, ()> {
    loop {
        match m.trace.busy.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => td.yield_now(),
        }
    }
}

/// Called by the runtime's shutdown once its CPUs stopped: keeps the
/// capture for [`Trace::take_recorded`] when the runtime was built to.
pub(crate) fn record_at_shutdown(m: &Machine) {
    if !m.trace.record_at_drop {
        return;
    }
    let data = {
        let mut s = m.trace.session();
        let Some(s) = s.as_mut() else { return };
        if s.end.is_none() {
            s.end = Some(crate::trace::clock::Anchor::take());
        }
        s.data()
    };
    let mut v = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    if v.len() >= RECORDED_MAX {
        v.remove(0);
    }
    v.push(data);
}

impl Handle {
    /// The runtime's event trace (see [`Trace`]).
    pub fn trace(&self) -> Trace {
        Trace::new(self.machine.clone())
    }
}

/// Records an LWP state change on the calling CPU's trace, when the caller
/// is a thread of a runtime that is tracing (the `lwp` layer calls this for
/// every change; from a plain OS thread nothing is recorded).
pub(crate) fn lwp_state(pid: u32, lid: u32, tid: u64, state: u8) {
    crate::sched::core::with_current(|core| {
        crate::trace::trace_event!(core, tr_lwp_state(pid, lid, tid, state));
    });
}
