//! Processes and LWPs: NetBSD's light-weight process lifecycle
//! (`kern_lwp.c`) on top of the LWKT core.
//!
//! A [`Proc`] groups LWPs. Each LWP is an lwkt thread that runs with a hook
//! attached, and whose control block (what [`ThreadRef`]s refer to) lives
//! in the LWP's own structure, so an LWP is one allocation, recycled
//! within its process. The core knows nothing of processes; it only sets a thread's
//! UPCALL flag when asked ([`ThreadRef`]'s upcall request, one bit the
//! thread tests after every switch) and keeps the [`LwpCtl`] block up to
//! date on every switch of a thread that asked for one. Everything else
//! (states, suspension, stops, signals, exit, waiting, reaping, keys) lives
//! here, under one lock per process (NetBSD's `p_lock`), which is never
//! held across a switch.
//!
//! # States
//!
//! [`LwpState`]: a new LWP is `Idl` until its thread exists, then `Run`
//! (shown as `OnProc` while on a CPU and `Sleep` while asleep or parked),
//! or `Suspended` / `Stop` when asked, and `Zomb` once it exited, until it
//! is collected by [`Proc::wait`] (or at once, when detached).
//!
//! # Switch points
//!
//! Suspension, stops and exit requests take effect at the LWP's next
//! switch point: any call that can switch it out (`yield_now`,
//! `maybe_yield`, `sleep`, `park`, `join`, a token acquisition that
//! blocked, `migrate`, and this module's own waits). An interruptible
//! sleep is kicked out first (it returns `Interrupted`). Code that never
//! reaches a switch point is never stopped: threads are cooperative.
//! A stopped or suspended LWP is parked, so it holds no tokens (they were
//! released when it switched out) and re-acquires them when continued:
//! what it read under a token before must be checked again.
//!
//! # Signals
//!
//! No handlers: a signal is a bit in a pending set of the LWP or of the
//! process. While any is pending, interruptible sleeps (and `wait`) of the
//! LWPs concerned return interrupted; code polls with
//! [`CurThread::sigpending`] and takes one with [`CurThread::sigtake`].
//! `SIGKILL`, `SIGSTOP` and `SIGCONT` are never pending: they kill, stop
//! and continue the process at once.
//!
//! # Exit and cancellation
//!
//! [`CurThread::lwp_exit`] unwinds the LWP's stack (destructors run, token
//! guards release their tokens), runs its [`Key`] destructors, and leaves
//! a zombie. [`Proc::exit`] and [`ProcHandle::kill`] make every LWP unwind
//! at its next switch point, parked and suspended ones included. When the
//! last LWP has exited the process is over: its [`ExitStatus`] is `0` unless
//! an exit status was given, it was killed, or an LWP panicked (a panic in
//! an LWP ends the whole process, as a crash would).
//!
//! # Deadlock detection in `wait`
//!
//! NetBSD's rules (the target waits for us; every other live LWP waits;
//! the process is exiting), plus wait cycles of any length, which the
//! seed's comment admits it misses: a specific wait follows the chain of
//! "waiting for" links from its target and fails with `EDEADLK` if it comes
//! back to the caller. It costs one map lookup per link, under the process
//! lock, on each pass of a wait (the chain is at most the number of LWPs).
//!
//! A detached target counts as no candidate: `ESRCH`, as in the seed
//! (newer NetBSD returns `EINVAL` there).
//!
//! "Every other live LWP waits" counts undetached LWPs on both sides. The
//! seed compares running + zombie - detached LWPs with *all* waiters, so a
//! detached LWP that waits (NetBSD allows it) counts as a waiter but not
//! as live: its wait for a running LWP, or another LWP's wait beside it,
//! was a false `EDEADLK`. Here a detached waiter is not counted.

mod error;
mod key;
mod signal;

pub use error::LwpError;
pub use key::Key;
pub use signal::{SigSet, Signal};

use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use parking_lot::{Condvar, Mutex as PMutex, MutexGuard as PMutexGuard};

use crate::error::SleepError;
use crate::priority::Priority;
use crate::sched::core::with_current;
use std::ptr::NonNull;

use crate::sched::ctl::{Ctl, CtlOwner, SwitchCtl};
use crate::sched::machine::Machine;
use crate::sched::td::tdf;
use crate::thread::cur::Upcall;
use crate::thread::join::Payload;
use crate::thread::spawn::{Keeper, PlannedSpawn, SpawnFrom};
use crate::thread::{CurThread, Handle, Sleep, ThreadBuilder, ThreadId, ThreadRef};
use key::Slot;

/// Process ids come from one counter for the whole program (never reused).
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// A process id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Pid(u32);

impl Pid {
    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An LWP id, unique within its process (the first LWP is 1; never
/// reused in the process).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Lid(u32);

impl Lid {
    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The LWP numbered `n` (`None` for 0, which no LWP has).
    pub fn new(n: u32) -> Option<Lid> {
        (n != 0).then_some(Lid(n))
    }
}

impl fmt::Display for Lid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An LWP's state (NetBSD's `l_stat`; [`netbsd`](LwpState::netbsd) gives
/// the numbers).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum LwpState {
    /// Created, its thread not started yet (`LSIDL`).
    Idl = 1,
    /// Runnable (`LSRUN`).
    Run = 2,
    /// Asleep or parked (`LSSLEEP`).
    Sleep = 3,
    /// Stopped with its process (`LSSTOP`).
    Stop = 4,
    /// Exited, not collected yet (`LSZOMB`).
    Zomb = 5,
    /// On a CPU now (`LSONPROC`).
    OnProc = 7,
    /// Suspended by `suspend` (`LSSUSPENDED`).
    Suspended = 8,
}

impl LwpState {
    /// NetBSD's number for the state.
    pub fn netbsd(self) -> u8 {
        self as u8
    }

    /// The short name `ps` shows.
    pub fn name(self) -> &'static str {
        match self {
            LwpState::Idl => "IDL",
            LwpState::Run => "RUN",
            LwpState::Sleep => "SLEEP",
            LwpState::Stop => "STOP",
            LwpState::Zomb => "ZOMB",
            LwpState::OnProc => "ONPROC",
            LwpState::Suspended => "SUSPENDED",
        }
    }
}

impl fmt::Display for LwpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Creation flags (`lwp_create`'s `LWP_SUSPENDED`, `LWP_DETACHED`).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct LwpFlags(u32);

impl LwpFlags {
    /// No flag.
    pub const NONE: LwpFlags = LwpFlags(0);
    /// Start suspended (`LWP_SUSPENDED`): it runs after [`Proc::resume`].
    pub const SUSPENDED: LwpFlags = LwpFlags(0x80);
    /// Start detached (`LWP_DETACHED`): nobody waits for it; it is reaped
    /// when it exits.
    pub const DETACHED: LwpFlags = LwpFlags(0x40);

    /// Whether every flag of `o` is set.
    pub fn contains(self, o: LwpFlags) -> bool {
        self.0 & o.0 == o.0
    }

    /// NetBSD's bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for LwpFlags {
    type Output = LwpFlags;
    fn bitor(self, o: LwpFlags) -> LwpFlags {
        LwpFlags(self.0 | o.0)
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitStatus {
    /// Its last LWP exited (status 0), or an LWP called [`Proc::exit`].
    Exited(i32),
    /// Killed ([`ProcHandle::kill`], or `SIGKILL`).
    Killed(Signal),
    /// An LWP panicked; the other LWPs were made to exit.
    Panicked {
        /// The LWP that panicked.
        lid: Lid,
        /// The panic's message.
        message: String,
    },
    /// The runtime shut down under it (its LWPs were cancelled).
    Cancelled,
}

/// Options for a new LWP ([`Proc::create_lwp`]).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct LwpBuilder {
    flags: LwpFlags,
    cpu: Option<usize>,
    priority: Option<Priority>,
    name: Option<String>,
}

impl LwpBuilder {
    /// Default options: not suspended, not detached, the creator's CPU,
    /// default priority.
    pub fn new() -> LwpBuilder {
        LwpBuilder::default()
    }

    /// `LWP_SUSPENDED` and/or `LWP_DETACHED`.
    pub fn flags(mut self, f: LwpFlags) -> Self {
        self.flags = f;
        self
    }

    /// The CPU to run on.
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// The priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }

    /// The thread's name (shown in `ps`).
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = Some(n.into());
        self
    }

    /// Whether the thread would go on `td`'s own CPU.
    fn thread_builder_cpu_is_here(&self, td: &CurThread) -> bool {
        self.cpu.map_or(true, |c| c == td.cpu())
    }

    fn thread_builder(&self) -> ThreadBuilder {
        let mut b = ThreadBuilder::new();
        if let Some(c) = self.cpu {
            b = b.cpu(c);
        }
        if let Some(p) = self.priority {
            b = b.priority(p);
        }
        if let Some(n) = &self.name {
            b = b.name(n.clone());
        }
        b
    }
}

/// One line of [`Proc::lwps`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LwpInfo {
    /// The process.
    pub pid: Pid,
    /// The LWP.
    pub lid: Lid,
    /// Its thread, once started.
    pub tid: Option<ThreadId>,
    /// Its state.
    pub state: LwpState,
    /// Whether it is detached.
    pub detached: bool,
    /// The CPU it runs on, while `OnProc`.
    pub cpu: Option<usize>,
    /// Its exit value, once a zombie.
    pub exit_value: Option<i32>,
}

impl fmt::Display for LwpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>5} {:>4} {:<9} {}",
            self.pid,
            self.lid,
            self.state,
            if self.detached { "detached" } else { "" }
        )
    }
}

// ---------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------

/// A process: everything under `st` is NetBSD's `p_lock` territory.
struct ProcInner {
    pid: u32,
    handle: Handle,
    st: PMutex<ProcState>,
    /// `join_blocking` waits here.
    done_cv: Condvar,
    /// Wait channel of `wait` (any address would do; these are stable).
    wait_chan: u8,
    /// Wait channel of `ProcHandle::join`.
    done_chan: u8,
}

#[derive(Default)]
struct ProcState {
    /// The process id (for the trace).
    pid: u32,
    lwps: LwpTable,
    next_lid: u32,
    /// LWPs not yet zombies (IDL included).
    nlive: usize,
    /// LWPs in our RUN state (running, runnable or asleep), or IDL (about
    /// to run): NetBSD's `p_nrlwps`.
    nrun: usize,
    /// Zombies not collected yet (`p_nzlwps`).
    nzomb: usize,
    /// Detached LWPs not freed yet (`p_ndlwps`).
    ndetached: usize,
    /// Undetached LWPs in `wait` (`p_nlwpwait`, less detached waiters),
    /// less those whose wait another LWP's change has ended
    /// (`LwpRec::wait_over`). Invariant: exactly the undetached waiters
    /// that only some LWP's exit can make return (barring signals,
    /// suspends and stops, as in NetBSD), so the "every other live LWP is
    /// waiting" check can trust it. Detached waiters are left out because
    /// the check's supply side (`nrun + nzomb - ndetached`) leaves them
    /// out: NetBSD counts them on one side only, so a detached LWP's wait
    /// for a running one was a false `EDEADLK` there.
    nwait: usize,
    /// LWPs in `wait` that may be asleep on `wait_chan`: counted, under
    /// this lock, by a waiter that found nothing to collect *after* it
    /// took the sleep interlock, until it leaves `wait`. Invariant: a
    /// waiter only sleeps after such a look, so a change made under this
    /// lock that finds `nsleep == 0` needs no wakeup (any later sleeper
    /// looks after the change); one that finds it non-zero wakes the
    /// channel, and the interlock keeps the wakeup from being lost. This
    /// spares the common wait, which collects its target without ever
    /// sleeping, and every exit the sleep-queue scan of a wakeup.
    nsleep: usize,
    /// Set once an exit (or kill, or panic) was asked for: the status.
    exit_req: Option<ExitStatus>,
    /// SIGSTOP in effect.
    stopping: bool,
    /// Process-directed pending signals.
    sigpend: SigSet,
    /// Set when the last LWP exited.
    status: Option<ExitStatus>,
    /// The structure of the last LWP freed while nobody else referred to
    /// it (no thread, no `LwpRef`, no `LwpCtl`: its reference count was
    /// 1), kept for the next `create` instead of a free and an
    /// allocation. Invariant: when set, this is the only reference (only
    /// `free_at` sets it, after that test; only `new_lwp` takes it out),
    /// so its reuse is unobservable and needs no second test. It refers
    /// to the process (`Lwp::proc`): dropped when the process ends, so the
    /// cycle does not outlive it.
    spare: Option<Arc<Lwp>>,
}

/// A process's LWP records, by lid. Lids only grow, so appending keeps the
/// table sorted: lookups are a binary search, creation a push, and scans go
/// in lid order. Freeing shifts the records after it (cheap next to the
/// rest of an exit for the process sizes this is built for; NetBSD's seed
/// keeps a plain list it scans linearly).
#[derive(Default)]
struct LwpTable {
    v: Vec<(u32, LwpRec)>,
}

impl LwpTable {
    fn pos(&self, lid: u32) -> Option<usize> {
        // The newest LWP (the usual one to look up: it was just created,
        // it exits, it is collected) is last, and the first LWP (often the
        // creator) first: both checked before the search.
        let n = self.v.len();
        if n > 0 && self.v[n - 1].0 == lid {
            return Some(n - 1);
        }
        if n > 0 && self.v[0].0 == lid {
            return Some(0);
        }
        self.v.binary_search_by_key(&lid, |e| e.0).ok()
    }
    fn get(&self, lid: &u32) -> Option<&LwpRec> {
        self.pos(*lid).map(|i| &self.v[i].1)
    }
    fn get_mut(&mut self, lid: &u32) -> Option<&mut LwpRec> {
        self.pos(*lid).map(|i| &mut self.v[i].1)
    }
    /// Adds a record; `lid` must be above every lid in the table.
    fn insert(&mut self, lid: u32, rec: LwpRec) {
        debug_assert!(self.v.last().map_or(true, |e| e.0 < lid));
        self.v.push((lid, rec));
    }
    fn len(&self) -> usize {
        self.v.len()
    }
    fn iter(&self) -> impl Iterator<Item = (&u32, &LwpRec)> {
        self.v.iter().map(|(l, r)| (l, r))
    }
    fn values(&self) -> impl Iterator<Item = &LwpRec> {
        self.v.iter().map(|(_, r)| r)
    }
}

impl std::ops::Index<&u32> for LwpTable {
    type Output = LwpRec;
    fn index(&self, lid: &u32) -> &LwpRec {
        self.get(lid).expect("lwkt: LWP record missing")
    }
}

impl IntoIterator for LwpTable {
    type Item = (u32, LwpRec);
    type IntoIter = std::vec::IntoIter<(u32, LwpRec)>;
    fn into_iter(self) -> Self::IntoIter {
        self.v.into_iter()
    }
}

impl LwpRec {
    /// A new LWP's record: no waits, no signals.
    fn new(
        lwp: Arc<Lwp>,
        state: LwpState,
        detached: bool,
        suspend_req: bool,
        has_thread: bool,
    ) -> LwpRec {
        LwpRec {
            lwp,
            state,
            detached,
            suspend_req,
            waiter: 0,
            waiting: false,
            wait_over: false,
            waitingfor: 0,
            sigpend: SigSet::EMPTY,
            has_thread,
        }
    }

    /// A reference to the LWP's thread, while it has one.
    fn thread(&self) -> Option<ThreadRef> {
        self.has_thread
            .then(|| ThreadRef::from_packet(self.lwp.clone() as Arc<dyn CtlOwner>))
    }

    /// The LWP's thread id, while it has a thread (0: none).
    fn tid(&self) -> u64 {
        if self.has_thread {
            self.lwp.tctl.tid
        } else {
            0
        }
    }

    /// The state as shown to users: our RUN split into ONPROC (on a CPU
    /// now, per the `lwpctl` block) and SLEEP (its last switch-out was a
    /// sleep or park); with the CPU while ONPROC.
    fn shown_state(&self) -> (LwpState, Option<usize>) {
        let ctl = &self.lwp.ctl;
        let cpu = ctl.cpu.load(Ordering::Acquire);
        match self.state {
            LwpState::Run if cpu >= 0 => (LwpState::OnProc, Some(cpu as usize)),
            LwpState::Run if ctl.blocked.load(Ordering::Relaxed) => (LwpState::Sleep, None),
            s => (s, None),
        }
    }
}

struct LwpRec {
    lwp: Arc<Lwp>,
    /// Idl, Run, Stop, Suspended or Zomb (Run covers OnProc and Sleep).
    state: LwpState,
    detached: bool,
    /// `LW_WSUSPEND`.
    suspend_req: bool,
    /// The first LWP waiting for this one specifically (0: none).
    waiter: u32,
    /// In `wait`...
    waiting: bool,
    /// ...but that wait was ended by another LWP's change (its target
    /// detached or collected by another, or no candidate left), and it
    /// has not looked since: not counted in `nwait` (see there). The
    /// waiter counts itself again when it looks (`try_collect`), and the
    /// look decides afresh (a new LWP may have become a candidate).
    wait_over: bool,
    /// ...for this LWP (0: any).
    waitingfor: u32,
    sigpend: SigSet,
    /// Whether the LWP's thread exists and requests reach it by upcall
    /// (set once its spawn is done, cleared when it exits). Its control
    /// block is `lwp.tctl`.
    has_thread: bool,
}

/// An LWP: what others may hold on to ([`LwpRef`]), and the hook its own
/// thread carries (the core's [`Upcall`]). One allocation per LWP.
pub(crate) struct Lwp {
    lid: u32,
    proc: Arc<ProcInner>,
    /// The control block of the LWP's thread (the core's `Ctl`, which a
    /// join packet holds for other threads): [`ThreadRef`]s to the thread
    /// hold this structure. Filled in for each spawn
    /// (`ProcState::new_lwp`).
    tctl: Ctl,
    /// Set when runtime shutdown cancelled the thread (`CtlOwner::cancel`).
    cancelled: AtomicBool,
    /// The `lwpctl` block the switch path updates.
    ctl: SwitchCtl,
    /// A level: interruptible sleeps of this LWP fail while set (a pending
    /// signal, a suspend, stop or exit request). Written under the
    /// process lock.
    intr: AtomicBool,
    /// The exit value, valid once `exited` is set.
    exit_value: AtomicI32,
    exited: AtomicBool,
    reaped: AtomicBool,
    /// Set once the LWP is exiting: no more stops, no more exit unwinds.
    /// Only its own thread writes it.
    exiting: AtomicBool,
    /// LWP-specific data, by key id. Only the LWP itself touches it
    /// (every `Key` method takes its `CurThread`), so the mutex is never
    /// contended.
    specific: Mutex<Vec<Option<Box<dyn Slot>>>>,
    /// Whether anything was ever stored in `specific` (its own thread
    /// writes it; spares exiting LWPs that never used a key the lock).
    has_specific: AtomicBool,
    /// The lid and thread id of the LWP this one created last (0: none).
    /// Only a hint for `wait`, which gives that thread its turn at once
    /// when it is the next to run here: written and read by this LWP's
    /// own thread (Relaxed); a stale value costs nothing (`run_if_next`
    /// checks the run queue, and thread ids are never reused).
    child_lid: AtomicU32,
    child_tid: AtomicU64,
}

/// The payload an exiting LWP unwinds with.
struct LwpExit(i32);

impl ProcInner {
    /// `p_lock`. A `parking_lot` mutex: no poisoning to track on every
    /// lock and unlock (nothing under the lock calls user code or
    /// panics on purpose), and a spin before parking fits its short
    /// critical sections.
    #[inline]
    fn lock(&self) -> PMutexGuard<'_, ProcState> {
        self.st.lock()
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// A thread that could not be created (bad CPU or stack size, no
    /// stack, runtime shut down).
    #[cold]
    fn create_error(&self, e: crate::Error) -> LwpError {
        LwpError::Create {
            pid: self.pid,
            why: e.to_string(),
        }
    }

    /// Lets LWPs in `wait` look again.
    fn wake_waiters(&self) {
        self.handle.wakeup(&self.wait_chan);
    }
}

impl ProcState {
    /// Moves an LWP to `new`, keeping the counts.
    fn set_state(&mut self, lid: u32, new: LwpState) {
        let i = self.lwps.pos(lid).expect("lwkt: LWP record missing");
        self.set_state_at(i, new);
    }

    /// [`set_state`](Self::set_state) of the record at index `i`.
    fn set_state_at(&mut self, i: usize, new: LwpState) {
        let (lid, rec) = &mut self.lwps.v[i];
        let lid = *lid;
        let old = rec.state;
        if old == new {
            return;
        }
        rec.state = new;
        // An LWP being created counts as running: it is about to run, and
        // may exit and be collected.
        let runs = |s| matches!(s, LwpState::Run | LwpState::Idl);
        if runs(old) {
            self.nrun -= 1;
        }
        if runs(new) {
            self.nrun += 1;
        }
        if new == LwpState::Zomb {
            self.nzomb += 1;
            self.nlive -= 1;
        }
        crate::thread::trace::lwp_state(self.pid, lid, rec.tid(), new.netbsd());
    }

    /// An LWP's exit with a status for the whole process (a panic, or
    /// cancellation): the first such request wins. Returns the threads of
    /// the other live LWPs, to kick, when this one started the exit.
    #[cold]
    fn start_exit(&mut self, why: ExitStatus, lid: u32) -> Option<Vec<(ThreadRef, bool)>> {
        if self.exit_req.is_some() {
            return None;
        }
        self.exit_req = Some(why);
        self.refresh_all();
        Some(self.threads(lid))
    }

    /// The last LWP exited: the process is over, and so are its zombies.
    #[cold]
    fn finish(&mut self) {
        self.status = Some(self.exit_req.clone().unwrap_or(ExitStatus::Exited(0)));
        for (_, rec) in std::mem::take(&mut self.lwps) {
            rec.lwp.reaped.store(true, Ordering::Release);
        }
        // The spare refers to the process: let go of it with the rest.
        self.spare = None;
        self.nzomb = 0;
        self.ndetached = 0;
    }

    /// The first step of both ways to create an LWP, under the lock:
    /// refuses when the process has exited, or is exiting and the caller
    /// is no LWP of it; takes the next lid and an LWP structure. Returns
    /// it and whether the new LWP must start suspended because its
    /// creator is being suspended or the process exits.
    #[inline]
    fn begin_create(
        &mut self,
        p: &Arc<ProcInner>,
        creator: Option<u32>,
        spawn: (&PlannedSpawn, &Arc<Machine>),
    ) -> Result<(Arc<Lwp>, bool), LwpError> {
        if self.status.is_some() || (self.exit_req.is_some() && creator.is_none()) {
            return Err(LwpError::Invalid {
                pid: p.pid,
                lid: 0,
                why: "the process has exited or is exiting",
            });
        }
        let creator_stopping = creator
            .and_then(|c| self.lwps.get(&c))
            .is_some_and(|r| r.suspend_req)
            || self.exit_req.is_some();
        let lid = self.next_lid;
        self.next_lid += 1;
        Ok((self.new_lwp(p, lid, spawn), creator_stopping))
    }

    /// Enters a new LWP's record in state `state` (IDL or later) and
    /// counts it.
    #[inline]
    fn enter(&mut self, rec: LwpRec) {
        self.refresh(&rec);
        // IDL counts as running (see `set_state`).
        if matches!(rec.state, LwpState::Idl | LwpState::Run) {
            self.nrun += 1;
        }
        if rec.detached {
            self.ndetached += 1;
        }
        self.nlive += 1;
        self.lwps.insert(rec.lwp.lid, rec);
    }

    /// Undoes [`enter`](Self::enter) of an LWP whose thread could not be
    /// created. Its record is still `Idl`, unless the failure was a
    /// creation message the shutting-down runtime dropped: the keeper's
    /// `never_ran` then made it a cancelled zombie already (or freed it,
    /// detached), and the zombie goes now, as nobody was told its lid.
    #[cold]
    fn unenter(&mut self, lid: u32) {
        let Some(i) = self.lwps.pos(lid) else {
            return;
        };
        if self.lwps.v[i].1.state == LwpState::Zomb {
            self.free_at(i);
            self.end_over_waits();
            return;
        }
        let (_, rec) = self.lwps.v.remove(i);
        debug_assert_eq!(rec.state, LwpState::Idl);
        if matches!(rec.state, LwpState::Idl | LwpState::Run) {
            self.nrun -= 1;
        }
        if rec.detached {
            self.ndetached -= 1;
        }
        self.nlive -= 1;
    }

    /// A new LWP structure, its thread's control block filled in for
    /// `spawn`: the spare one when there is one (see `spare`), else a
    /// fresh allocation.
    #[inline]
    fn new_lwp(
        &mut self,
        p: &Arc<ProcInner>,
        lid: u32,
        (spawn, machine): (&PlannedSpawn, &Arc<Machine>),
    ) -> Arc<Lwp> {
        if let Some(spare) = self.spare.take() {
            debug_assert!(Arc::strong_count(&spare) == 1 && Arc::weak_count(&spare) == 0);
            // SAFETY: `spare` is the only reference to this structure (the
            // invariant of `ProcState::spare`, checked by `free_at` when it
            // kept it; nobody can have cloned it since, as only this
            // function takes it out): this is `Arc::get_mut`'s exclusive
            // access, until it is handed out below. The pointer comes from
            // `Arc::as_ptr`, which keeps the allocation's write permission.
            let l = unsafe { &mut *Arc::as_ptr(&spare).cast_mut() };
            l.reset(lid);
            if l.tctl.is_of(machine) {
                l.tctl.renew(spawn.tid(), spawn.cpu());
            } else {
                l.tctl = Ctl::new(machine.clone(), spawn.tid(), spawn.cpu());
            }
            return spare;
        }
        let ctl = Ctl::new(machine.clone(), spawn.tid(), spawn.cpu());
        Arc::new(Lwp::new(lid, p.clone(), ctl))
    }

    /// Recomputes every LWP's interrupt level.
    fn refresh_all(&self) {
        for rec in self.lwps.values() {
            self.refresh(rec);
        }
    }

    fn refresh(&self, rec: &LwpRec) {
        let on = rec.state != LwpState::Zomb
            && (rec.suspend_req
                || self.exit_req.is_some()
                || self.stopping
                || !rec.sigpend.is_empty()
                || !self.sigpend.is_empty());
        rec.lwp.intr.store(on, Ordering::Release);
    }

    /// Frees a zombie's record (collected or detached); returns its exit
    /// value. Every caller then calls `end_over_waits` (waits for it, or
    /// for any LWP when it was the last candidate, are over); not done
    /// here, where it costs the common path a spill of the record.
    fn free(&mut self, lid: u32) -> i32 {
        let i = self.lwps.pos(lid).expect("lwkt: LWP record missing");
        self.free_at(i)
    }

    /// [`free`](Self::free) of the record at index `i`.
    #[inline]
    fn free_at(&mut self, i: usize) -> i32 {
        // Read in place; only the structure's reference moves out below
        // (moving the whole record through the stack cost more than the
        // rest of this function).
        let rec = &self.lwps.v[i].1;
        debug_assert_eq!(rec.state, LwpState::Zomb);
        let detached = rec.detached;
        let lwp = &rec.lwp;
        lwp.reaped.store(true, Ordering::Release);
        // Stored by the exiting thread before its exit took the lock.
        let v = lwp.exit_value.load(Ordering::Relaxed);
        // `Arc::get_mut`'s test without its compare-and-swap on the weak
        // count (which only guards against a `Weak` being upgraded
        // meanwhile): no `Weak<Lwp>` is ever made, so a strong count of 1
        // means this is the only reference, and with the record holding it
        // nobody can make another. The fence below pairs with the Release
        // decrement of the last other holder's drop, as `get_mut`'s
        // Acquire does.
        let keep =
            self.status.is_none() && Arc::strong_count(lwp) == 1 && Arc::weak_count(lwp) == 0;
        let lwp = if i + 1 == self.lwps.v.len() {
            self.lwps.v.pop().expect("index checked").1.lwp
        } else {
            self.lwps.v.remove(i).1.lwp
        };
        self.nzomb -= 1;
        if detached {
            self.ndetached -= 1;
        }
        if keep {
            std::sync::atomic::fence(Ordering::Acquire);
            // Nobody else refers to it: keep it for the next create.
            self.spare = Some(lwp);
        }
        v
    }

    /// The threads of live LWPs other than `except`, with whether each is
    /// parked in a stop (Suspended or Stop).
    fn threads(&self, except: u32) -> Vec<(ThreadRef, bool)> {
        self.lwps
            .iter()
            .filter(|(l, r)| **l != except && r.state != LwpState::Zomb)
            .filter_map(|(_, r)| {
                let parked = matches!(r.state, LwpState::Suspended | LwpState::Stop);
                r.thread().map(|t| (t, parked))
            })
            .collect()
    }

    /// Undoes a wait's bookkeeping (`lwp_wait1`'s exit path); `slept`:
    /// the wait counted itself in `nsleep`; `collected`: the wait freed
    /// its target (no record left to unmark).
    fn leave_wait(&mut self, me: u32, want: u32, slept: bool, collected: bool) {
        if want != 0 && !collected {
            if let Some(r) = self.lwps.get_mut(&want) {
                if r.waiter == me {
                    r.waiter = 0;
                }
            }
        }
        if slept {
            self.nsleep -= 1;
        }
        let r = self
            .lwps
            .get_mut(&me)
            .expect("lwkt: live LWP without a record");
        r.waiting = false;
        r.waitingfor = 0;
        if !std::mem::take(&mut r.wait_over) && !r.detached {
            self.nwait -= 1;
        }
    }

    /// Whether the next look of waiter `w` (waiting for `want`, 0: any)
    /// will end its wait without any LWP exiting: its target is gone or
    /// detached (`ESRCH`) or waits for it (`EDEADLK`), or, for a wait for
    /// any LWP, no undetached LWP is left but itself (`ESRCH`).
    fn wait_is_over(&self, w: u32, want: u32) -> bool {
        if want != 0 {
            self.lwps
                .get(&want)
                .map_or(true, |t| t.detached || (t.waiting && t.waitingfor == w))
        } else {
            !self.lwps.iter().any(|(&l2, r)| l2 != w && !r.detached)
        }
    }

    /// After a change that can end other LWPs' waits without an exit (a
    /// detach, a record freed): takes every waiter whose wait it ended
    /// out of `nwait` (see `LwpRec::wait_over`), so that `nwait` stays
    /// exact before those waiters run again. Callers wake the wait
    /// channel (they already do for the change itself). Costs nothing
    /// while nobody waits.
    #[inline]
    fn end_over_waits(&mut self) {
        if self.nwait != 0 {
            self.end_over_waits_scan();
        }
    }

    /// The scan of [`end_over_waits`](Self::end_over_waits), out of line.
    #[cold]
    #[inline(never)]
    fn end_over_waits_scan(&mut self) {
        for i in 0..self.lwps.v.len() {
            let (w, r) = &self.lwps.v[i];
            if r.waiting && !r.wait_over && !r.detached && self.wait_is_over(*w, r.waitingfor) {
                self.lwps.v[i].1.wait_over = true;
                self.nwait -= 1;
            }
        }
    }

    /// Whether following "waiting for" links from `from` comes back to
    /// `me` (a wait cycle of any length).
    fn cycle(&self, from: u32, me: u32) -> bool {
        let mut cur = from;
        for _ in 0..=self.lwps.len() {
            let Some(r) = self.lwps.get(&cur) else {
                return false;
            };
            if !r.waiting || r.waitingfor == 0 {
                return false;
            }
            if r.waitingfor == me {
                return true;
            }
            cur = r.waitingfor;
        }
        false
    }
}

impl Lwp {
    fn new(lid: u32, proc: Arc<ProcInner>, tctl: Ctl) -> Lwp {
        Lwp {
            lid,
            proc,
            tctl,
            cancelled: AtomicBool::new(false),
            ctl: SwitchCtl::new(),
            intr: AtomicBool::new(false),
            exit_value: AtomicI32::new(0),
            exited: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            specific: Mutex::new(Vec::new()),
            has_specific: AtomicBool::new(false),
            child_lid: AtomicU32::new(0),
            child_tid: AtomicU64::new(0),
        }
    }

    /// Makes a freed LWP's structure (of the same process) new again, as
    /// `new(lid, proc, _)` would, but for the thread's control block, which
    /// the caller fills in: reused only through `&mut`, i.e. when nobody
    /// else can see it (see `ProcState::spare`).
    fn reset(&mut self, lid: u32) {
        // Every field named, so that a new one cannot be forgotten here;
        // the process stays the same.
        let Lwp {
            lid: l,
            proc: _,
            tctl: _,
            cancelled,
            ctl,
            intr,
            exit_value,
            exited,
            reaped,
            exiting,
            specific,
            has_specific,
            child_lid,
            child_tid,
        } = self;
        *l = lid;
        *cancelled.get_mut() = false;
        *ctl = SwitchCtl::new();
        *intr.get_mut() = false;
        *exit_value.get_mut() = 0;
        *exited.get_mut() = false;
        *reaped.get_mut() = false;
        *exiting.get_mut() = false;
        if std::mem::take(has_specific.get_mut()) {
            *specific = Mutex::new(Vec::new());
        }
        *child_lid.get_mut() = 0;
        *child_tid.get_mut() = 0;
    }

    fn specific(&self) -> MutexGuard<'_, Vec<Option<Box<dyn Slot>>>> {
        self.specific.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn specific_replace(
        &self,
        id: usize,
        v: Option<Box<dyn Slot>>,
    ) -> Option<Box<dyn Slot>> {
        let mut s = self.specific();
        if s.len() <= id {
            // Nothing stored under this key: removing is a no-op.
            v.as_ref()?;
            s.resize_with(id + 1, || None);
            self.has_specific.store(true, Ordering::Relaxed);
        }
        std::mem::replace(&mut s[id], v)
    }

    pub(crate) fn specific_with<R>(
        &self,
        id: usize,
        f: impl FnOnce(Option<&mut dyn Slot>) -> R,
    ) -> R {
        let mut s = self.specific();
        match s.get_mut(id).and_then(|x| x.as_mut()) {
            Some(b) => f(Some(&mut **b)),
            None => f(None),
        }
    }

    /// Runs the key destructors (one round: see `key.rs` for why no
    /// value can be set meanwhile).
    fn run_destructors(&self) {
        if !self.has_specific.load(Ordering::Relaxed) {
            return;
        }
        let taken = std::mem::take(&mut *self.specific());
        for s in taken.into_iter().flatten() {
            s.destroy();
        }
    }

    /// The stop loop (`lwp_userret`): unwinds if the process is exiting,
    /// parks while suspended or stopped, returns when neither.
    fn stop_point(&self, td: &mut CurThread) {
        if self.exiting.load(Ordering::Relaxed) {
            return;
        }
        let p = &*self.proc;
        let lid = self.lid;
        loop {
            let mut st = p.lock();
            if st.exit_req.is_some() {
                drop(st);
                // Unwind as a running thread: with its tokens held, as the
                // code it unwinds through expects.
                td.reacquire_tokens();
                resume_unwind(Box::new(LwpExit(0)));
            }
            let stopping = st.stopping;
            let rec = st.lwps.get(&lid).expect("lwkt: live LWP without a record");
            let new = if rec.suspend_req {
                LwpState::Suspended
            } else if stopping {
                LwpState::Stop
            } else {
                LwpState::Run
            };
            if new != LwpState::Run {
                // Stopped implies holding no token: let go before anyone
                // can see the new state.
                td.release_tokens_early();
            }
            let changed = rec.state != new;
            st.set_state(lid, new);
            let waiters = changed && st.nsleep > 0;
            drop(st);
            if waiters {
                p.wake_waiters();
            }
            if new == LwpState::Run {
                td.reacquire_tokens();
                return;
            }
            td.park_raw();
            if td.thread().has(tdf::CANCEL) {
                td.reacquire_tokens();
                return; // the runtime is shutting down: it unwinds us
            }
        }
    }
}

impl Upcall for Lwp {
    fn at_switch_point(&self, td: &mut CurThread) {
        self.stop_point(td);
    }

    fn interrupts_sleep(&self) -> bool {
        !self.exiting.load(Ordering::Relaxed) && self.intr.load(Ordering::Acquire)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The LWP's structure is its thread's control block: [`ThreadRef`]s to
/// the thread keep it alive.
impl CtlOwner for Lwp {
    fn ctl(&self) -> &Ctl {
        &self.tctl
    }

    fn finished(&self) -> bool {
        self.exited.load(Ordering::Acquire) || self.cancelled.load(Ordering::Acquire)
    }

    /// A thread that ran is unwound next, and its keeper accounts for the
    /// LWP then (`Keeper::unwound`); one that never ran is accounted for
    /// here, or its process would never end.
    fn cancel(&self, started: bool) {
        self.cancelled.store(true, Ordering::Release);
        if !started {
            self.exiting.store(true, Ordering::Relaxed);
            lwp_exited(&self.proc, self, 0, Some(ExitStatus::Cancelled));
            self.ctl.cpu.store(SwitchCtl::EXITED, Ordering::Release);
        }
    }
}

/// An LWP's thread holds its LWP for as long as it runs (the only
/// reference the thread needs: it is the control block and the upcall),
/// and does the LWP's exit bookkeeping when its body ends.
impl Keeper for Arc<Lwp> {
    type Out = i32;

    fn owner(&self) -> NonNull<dyn CtlOwner> {
        NonNull::from(&**self as &dyn CtlOwner)
    }

    fn ctl(&self) -> &Ctl {
        &self.tctl
    }

    fn upcall(&self) -> Option<NonNull<dyn Upcall>> {
        Some(NonNull::from(&**self as &dyn Upcall))
    }

    /// The end of `lwp_exit`: the exit value (a return, or an unwind with
    /// [`LwpExit`]) or the panic, key destructors, then the zombie.
    #[inline]
    fn complete(&self, td: &mut CurThread, r: Result<i32, Payload>) {
        let ctx: &Lwp = self;
        ctx.exiting.store(true, Ordering::Relaxed);
        let (value, why) = match r {
            Ok(v) => (v, None),
            Err(e) => match e.downcast::<LwpExit>() {
                Ok(x) => (x.0, None),
                Err(e) => (
                    0,
                    Some(ExitStatus::Panicked {
                        lid: Lid(ctx.lid),
                        message: panic_message(&*e),
                    }),
                ),
            },
        };
        // Destructors run while the LWP is still alive (not a zombie yet);
        // a panic in one ends the process like any LWP panic.
        let d = if ctx.has_specific.load(Ordering::Relaxed) {
            catch_unwind(AssertUnwindSafe(|| ctx.run_destructors()))
        } else {
            Ok(())
        };
        let why = match (why, d) {
            (Some(w), _) => Some(w),
            (None, Err(e)) if e.downcast_ref::<LwpExit>().is_none() => Some(ExitStatus::Panicked {
                lid: Lid(ctx.lid),
                message: panic_message(&*e),
            }),
            _ => None,
        };
        lwp_exited(&ctx.proc, ctx, value, why);
        finish_ctl(td, ctx);
    }

    /// The runtime is shutting down and unwinds the LWP's stack: account
    /// for the LWP and let the unwinding go on.
    fn unwound(&self, td: &mut CurThread) {
        self.exiting.store(true, Ordering::Relaxed);
        lwp_exited(&self.proc, self, 0, Some(ExitStatus::Cancelled));
        finish_ctl(td, self);
    }

    /// A spawn on another CPU whose message the shutdown dropped: the
    /// LWP is accounted for as cancelled.
    fn never_ran(self) {
        self.cancel(false);
    }
}

/// The running LWP's context, if the calling thread is an LWP.
pub(crate) fn current_ctx(td: &CurThread) -> Option<&Lwp> {
    let u = td.upcall()?;
    debug_assert!(u.as_any().is::<Lwp>());
    // SAFETY: `Lwp` is the only implementor of the crate-private `Upcall`
    // trait, and the only keeper that attaches one is `Arc<Lwp>`, so a
    // thread's upcall is always an `Lwp`: the data pointer of the trait
    // object is one (the `Any` check above confirms it in debug builds).
    // This is what `downcast_ref` does after its two dynamic calls.
    Some(unsafe { &*(u as *const dyn Upcall).cast::<Lwp>() })
}

/// [`current_ctx`] as a new reference.
fn current_arc(td: &CurThread) -> Option<Arc<Lwp>> {
    let ctx: *const Lwp = current_ctx(td)?;
    // SAFETY: an LWP's structure lives in the `Arc<Lwp>` allocation its
    // thread's keeper holds for the thread's whole run (see `Keeper for
    // Arc<Lwp>`), and `ctx` is its data pointer (`current_ctx`): taking
    // one more strong reference to it is what `Arc::clone` does.
    unsafe {
        Arc::increment_strong_count(ctx);
        Some(Arc::from_raw(ctx))
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// The start of every LWP's thread, before its function: the `lwpctl`
/// block and the trace tag, and the requests made before the creator
/// registered the thread (the creator forwards later ones: see `create`).
/// The function's value or unwind goes to the keeper's `complete`.
#[inline]
fn lwp_body<F>(td: &mut CurThread, ctx: &Lwp, f: F) -> i32
where
    F: FnOnce(&mut CurThread) -> i32,
{
    {
        let th = td.thread();
        th.swctl.set(&ctx.ctl);
        th.set(tdf::SWCTL);
        th.lwp_tag.set((ctx.proc.pid, ctx.lid));
    }
    ctx.ctl.switched_in(td.cpu());
    if ctx.intr.load(Ordering::Acquire) {
        ctx.stop_point(td);
    }
    f(td)
}

fn finish_ctl(td: &mut CurThread, lwp: &Lwp) {
    td.thread().clear(tdf::SWCTL | tdf::UPCALL);
    lwp.ctl.cpu.store(SwitchCtl::EXITED, Ordering::Release);
}

/// An LWP's exit bookkeeping (the end of `lwp_exit`): zombie (or freed at
/// once when detached); the process ends with its last LWP.
#[inline]
fn lwp_exited(p: &Arc<ProcInner>, lwp: &Lwp, value: i32, why: Option<ExitStatus>) {
    lwp.exit_value.store(value, Ordering::Relaxed);
    lwp.exited.store(true, Ordering::Release);
    let mut st = p.lock();
    let others = why.and_then(|w| st.start_exit(w, lwp.lid));
    if let Some(i) = st.lwps.pos(lwp.lid) {
        let rec = &mut st.lwps.v[i].1;
        rec.has_thread = false;
        rec.suspend_req = false;
        rec.sigpend = SigSet::EMPTY;
        let detached = rec.detached;
        st.set_state_at(i, LwpState::Zomb);
        if detached {
            st.free_at(i);
            st.end_over_waits();
        }
    }
    let finished = st.nlive == 0 && st.status.is_none();
    if finished {
        st.finish();
    }
    let waiters = st.nsleep > 0;
    drop(st);
    if let Some(others) = others {
        kick_exit(others);
    }
    if waiters {
        p.wake_waiters();
    }
    if finished {
        p.done_cv.notify_all();
        p.handle.wakeup(&p.done_chan);
    }
}

/// Makes every thread in `threads` look at its requests now: kicked out
/// of interruptible sleeps, and scheduled (out of stops, suspensions and
/// plain parks), so that an exit request unwinds it.
fn kick_exit(threads: Vec<(ThreadRef, bool)>) {
    for (t, _) in threads {
        t.upcall(true);
        t.schedule();
    }
}

// ---------------------------------------------------------------------
// The public handles
// ---------------------------------------------------------------------

/// A process: a group of LWPs. Cheap to clone; usable from its own LWPs,
/// other lwkt threads and plain OS threads alike (operations that act on
/// the caller, such as [`wait`](Proc::wait) or suspending oneself with
/// [`suspend`](Proc::suspend), need the caller to be one of its LWPs).
#[derive(Clone)]
pub struct Proc {
    inner: Arc<ProcInner>,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc").field("pid", &self.pid()).finish()
    }
}

/// A process seen from outside: wait for its exit status, stop, continue,
/// signal or kill it. Also gives the [`Proc`] itself.
#[derive(Clone, Debug)]
pub struct ProcHandle {
    proc: Proc,
}

/// A reference to an LWP (`lwp_addref`; dropping it is `lwp_delref`): its
/// state, exit value and `lwpctl` block stay readable after it exited and
/// was collected, until the last reference is dropped.
#[derive(Clone)]
#[doc(alias = "lwp_addref")]
pub struct LwpRef {
    lwp: Arc<Lwp>,
}

impl fmt::Debug for LwpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LwpRef")
            .field("pid", &self.lwp.proc.pid)
            .field("lid", &self.lwp.lid)
            .finish()
    }
}

/// An LWP's `lwpctl` block, readable by anyone without a lock: the CPU it
/// runs on and how many times it was switched out. Code can tell whether
/// it was switched out inside a region (restartable-sequence style) by
/// comparing [`switches`](LwpCtl::switches) before and after.
#[derive(Clone)]
pub struct LwpCtl {
    lwp: Arc<Lwp>,
}

/// Where an LWP is, per its `lwpctl` block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LwpCpu {
    /// On this CPU now.
    On(usize),
    /// Not on a CPU (`LWPCTL_CPU_NONE`).
    None,
    /// Exited (`LWPCTL_CPU_EXITED`).
    Exited,
}

impl LwpCtl {
    /// NetBSD's `LWPCTL_CPU_NONE`.
    pub const CPU_NONE: i32 = SwitchCtl::NONE;
    /// NetBSD's `LWPCTL_CPU_EXITED`.
    pub const CPU_EXITED: i32 = SwitchCtl::EXITED;

    /// The CPU field as NetBSD has it (`lc_curcpu`): a CPU number, or
    /// [`CPU_NONE`](Self::CPU_NONE), or [`CPU_EXITED`](Self::CPU_EXITED).
    pub fn raw_cpu(&self) -> i32 {
        self.lwp.ctl.cpu.load(Ordering::Acquire)
    }

    /// The CPU field, decoded.
    pub fn cpu(&self) -> LwpCpu {
        match self.raw_cpu() {
            c if c >= 0 => LwpCpu::On(c as usize),
            SwitchCtl::EXITED => LwpCpu::Exited,
            _ => LwpCpu::None,
        }
    }

    /// How many times the LWP was switched out (`lc_pctr`), wrapping.
    pub fn switches(&self) -> u32 {
        self.lwp.ctl.pctr.load(Ordering::Acquire)
    }
}

impl fmt::Debug for LwpCtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LwpCtl")
            .field("cpu", &self.cpu())
            .field("switches", &self.switches())
            .finish()
    }
}

/// Options for a new process ([`Proc::builder`]): those of its first LWP.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ProcBuilder {
    first: LwpBuilder,
}

impl ProcBuilder {
    /// The first LWP's options (its flags are ignored: a first LWP is
    /// neither suspended nor detached).
    pub fn lwp(mut self, b: LwpBuilder) -> Self {
        self.first = b;
        self
    }

    /// Starts the process from an lwkt thread, with `f` as its first LWP
    /// (lid 1).
    ///
    /// # Errors
    /// [`LwpError::Create`] when the thread cannot be created.
    pub fn spawn<F>(self, td: &mut CurThread, f: F) -> Result<ProcHandle, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        let p = Proc::new(td.handle());
        p.create(Via::Td(td), self.first.flags(LwpFlags::NONE), f)?;
        Ok(ProcHandle { proc: p })
    }

    /// Starts the process from outside the runtime (or from anywhere)
    /// through a [`Handle`].
    ///
    /// # Errors
    /// [`LwpError::Create`] when the thread cannot be created (or the
    /// runtime is shutting down).
    pub fn spawn_from<F>(self, h: &Handle, f: F) -> Result<ProcHandle, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        let p = Proc::new(h.clone());
        p.create(Via::Handle(h), self.first.flags(LwpFlags::NONE), f)?;
        Ok(ProcHandle { proc: p })
    }
}

enum Via<'a> {
    Td(&'a mut CurThread),
    Handle(&'a Handle),
}

impl Proc {
    /// Options for a new process.
    pub fn builder() -> ProcBuilder {
        ProcBuilder::default()
    }

    /// Starts a process from an lwkt thread with default options.
    ///
    /// # Errors
    /// As [`ProcBuilder::spawn`].
    pub fn spawn<F>(td: &mut CurThread, f: F) -> Result<ProcHandle, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        Proc::builder().spawn(td, f)
    }

    /// Starts a process through a [`Handle`] with default options.
    ///
    /// # Errors
    /// As [`ProcBuilder::spawn_from`].
    pub fn spawn_from<F>(h: &Handle, f: F) -> Result<ProcHandle, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        Proc::builder().spawn_from(h, f)
    }

    fn new(handle: Handle) -> Proc {
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        Proc {
            inner: Arc::new(ProcInner {
                pid,
                handle,
                st: PMutex::new(ProcState {
                    pid,
                    next_lid: 1,
                    ..ProcState::default()
                }),
                done_cv: Condvar::new(),
                wait_chan: 0,
                done_chan: 0,
            }),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid(self.inner.pid)
    }

    fn err_srch(&self, lid: u32) -> LwpError {
        LwpError::NoSuchLwp {
            pid: self.inner.pid(),
            lid,
        }
    }

    /// The caller's lid, if it is an LWP of this process.
    fn my_lid(&self, td: &CurThread) -> Option<u32> {
        self.my_ctx(td).map(|c| c.lid)
    }

    /// The caller's LWP, if it is one of this process.
    fn my_ctx<'t>(&self, td: &'t CurThread) -> Option<&'t Lwp> {
        let ctx = current_ctx(td)?;
        Arc::ptr_eq(&ctx.proc, &self.inner).then_some(ctx)
    }

    /// Creates an LWP in this process (`lwp_create`), running `f`; its
    /// return value is its exit value. It starts `Idl`, then `Run`, or
    /// `Suspended` with [`LwpFlags::SUSPENDED`] (also when the creator, an
    /// LWP of this process, is being suspended or the process is exiting),
    /// or `Stop` while the process is stopped.
    ///
    /// # Errors
    /// [`LwpError::Invalid`] when the process has ended (or is exiting and
    /// the caller is not one of its LWPs); [`LwpError::Create`] when the
    /// thread cannot be created (bad CPU, no stack).
    #[doc(alias = "lwp_create")]
    pub fn create_lwp<F>(&self, td: &mut CurThread, b: LwpBuilder, f: F) -> Result<Lid, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        self.create(Via::Td(td), b, f)
    }

    /// [`create_lwp`](Self::create_lwp) from outside the runtime, through
    /// the process's runtime handle.
    ///
    /// # Errors
    /// As `create_lwp`.
    pub fn create_lwp_from<F>(&self, b: LwpBuilder, f: F) -> Result<Lid, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        let h = self.inner.handle.clone();
        self.create(Via::Handle(&h), b, f)
    }

    fn create<F>(&self, via: Via<'_>, b: LwpBuilder, f: F) -> Result<Lid, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        let p = &self.inner;
        // The creator's structure, if it is an LWP of this process, and
        // whether the new thread goes on the caller's own CPU.
        let (creator_ctx, here) = match &via {
            Via::Td(td) => (
                self.my_ctx(td).map(|c| c as *const Lwp),
                b.thread_builder_cpu_is_here(td),
            ),
            Via::Handle(_) => (None, false),
        };
        // SAFETY: the running LWP's structure is kept alive by its own
        // thread's keeper for the thread's whole run (see `Keeper for
        // Arc<Lwp>`), and this is that thread, running.
        let creator_ctx = creator_ctx.map(|c| unsafe { &*c });
        let creator = creator_ctx.map(|c| c.lid);
        if here {
            let Via::Td(td) = via else {
                unreachable!("only a spawn from a thread is `here`")
            };
            return self.create_here(td, b, f, creator_ctx);
        }
        let from = match &via {
            Via::Td(td) => SpawnFrom::Thread(td),
            Via::Handle(h) => SpawnFrom::Handle(h),
        };
        let planned = b
            .thread_builder()
            .plan_spawn(&from)
            .map_err(|e| p.create_error(e))?;
        let lwp = {
            let mut st = p.lock();
            let (lwp, creator_stopping) =
                st.begin_create(p, creator, (&planned, from.machine()))?;
            st.enter(LwpRec::new(
                lwp.clone(),
                LwpState::Idl,
                b.flags.contains(LwpFlags::DETACHED),
                b.flags.contains(LwpFlags::SUSPENDED) || creator_stopping,
                false,
            ));
            crate::thread::trace::lwp_state(p.pid, lwp.lid, 0, LwpState::Idl.netbsd());
            lwp
        };
        let lid = lwp.lid;
        // Never spawn under the lock: a new interrupt-priority thread
        // would run at once and take it.
        let body = move |td: &mut CurThread, l: &Arc<Lwp>| lwp_body(td, l, f);
        if let Err(e) = planned.launch(from, lwp, body, false) {
            p.lock().unenter(lid);
            return Err(p.create_error(e));
        }
        let mut st = p.lock();
        let stopping = st.stopping;
        let mut forward = None;
        if let Some(i) = st.lwps.pos(lid) {
            let rec = &mut st.lwps.v[i].1;
            if rec.state != LwpState::Zomb {
                rec.has_thread = true;
            }
            // From here on requests reach the thread by upcall. One made
            // since the insert above (the level is set) may have missed
            // it: forward it now (the thread may have passed its first
            // stop point already).
            if rec.lwp.intr.load(Ordering::Acquire) {
                forward = rec.thread();
            }
            if rec.state == LwpState::Idl {
                let new = if rec.suspend_req {
                    LwpState::Suspended
                } else if stopping {
                    LwpState::Stop
                } else {
                    LwpState::Run
                };
                st.set_state_at(i, new);
            }
        }
        let waiters = st.nsleep > 0;
        drop(st);
        if let Some(t) = forward {
            t.upcall(true);
        }
        if waiters {
            p.wake_waiters();
        }
        Ok(Lid(lid))
    }

    /// `create` of an LWP on the caller's own CPU, in one critical
    /// section: the thread is spawned under the process lock without
    /// preemption (`launch` with `preempt` off), which only queues it (it
    /// cannot run, and the caller cannot be switched out, before the lock
    /// is dropped), so the record is entered complete (thread and first
    /// state) and no request can come between the record and its thread.
    /// Invariant this relies on: nothing in a same-CPU launch without
    /// preemption switches or runs user code; the preemption it may make
    /// due runs after the lock is dropped. The price: the spawn (a cached
    /// stack, or a fresh mapping) lengthens the critical section other
    /// CPUs' LWPs of the process may wait on.
    fn create_here<F>(
        &self,
        td: &mut CurThread,
        b: LwpBuilder,
        f: F,
        creator_ctx: Option<&Lwp>,
    ) -> Result<Lid, LwpError>
    where
        F: FnOnce(&mut CurThread) -> i32 + Send + 'static,
    {
        let p = &self.inner;
        let creator = creator_ctx.map(|c| c.lid);
        let from = SpawnFrom::Thread(td);
        let planned = b
            .thread_builder()
            .plan_spawn(&from)
            .map_err(|e| p.create_error(e))?;
        let tid = planned.tid();
        let mut st = p.lock();
        let (lwp, creator_stopping) = st.begin_create(p, creator, (&planned, from.machine()))?;
        let lid = lwp.lid;
        let body = move |td: &mut CurThread, l: &Arc<Lwp>| lwp_body(td, l, f);
        if let Err(e) = planned.launch(from, lwp.clone(), body, false) {
            // Nothing entered; the lid stays unused.
            drop(st);
            return Err(p.create_error(e));
        }
        if let Some(c) = creator_ctx {
            // The hint `wait` uses (see `Lwp::child_lid`).
            c.child_lid.store(lid, Ordering::Relaxed);
            c.child_tid.store(tid, Ordering::Relaxed);
        }
        let detached = b.flags.contains(LwpFlags::DETACHED);
        let suspend_req = b.flags.contains(LwpFlags::SUSPENDED) || creator_stopping;
        // IDL, then at once the state `create` would give it next.
        let state = if suspend_req {
            LwpState::Suspended
        } else if st.stopping {
            LwpState::Stop
        } else {
            LwpState::Run
        };
        st.enter(LwpRec::new(lwp, state, detached, suspend_req, true));
        // The creator's own CPU, at hand (no thread-local lookup).
        let core = td.core();
        crate::trace::trace_event!(core, tr_lwp_state(p.pid, lid, 0, LwpState::Idl.netbsd()));
        crate::trace::trace_event!(core, tr_lwp_state(p.pid, lid, tid, state.netbsd()));
        let waiters = st.nsleep > 0;
        drop(st);
        td.preempt_point();
        if waiters {
            p.wake_waiters();
        }
        Ok(Lid(lid))
    }

    /// Waits for an LWP of this process to exit and collects it
    /// (`lwp_wait`): `Some(lid)` for that one, `None` for any (skipping
    /// LWPs another LWP waits for specifically). Returns its lid and exit
    /// value. Interruptible: a pending signal ends it.
    ///
    /// A token data borrow cannot be held across it (it takes the
    /// `CurThread`):
    ///
    /// ```compile_fail,E0499
    /// static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
    /// fn f(td: &mut lwkt::CurThread, p: &lwkt::lwp::Proc) {
    ///     let g = td.get_token(&T);
    ///     let v = g.get(td);
    ///     let _ = p.wait(td, None);
    ///     *v += 1;
    /// }
    /// ```
    ///
    /// # Errors
    /// - [`LwpError::NotInProcess`]: the caller is not an LWP of this
    ///   process;
    /// - [`LwpError::Deadlock`]: the target waits for the caller (or is the
    ///   caller), the wait would close a cycle, every other live LWP is
    ///   waiting, or the process is exiting;
    /// - [`LwpError::NoSuchLwp`]: no candidate (a detached target counts as
    ///   none);
    /// - [`LwpError::Interrupted`]: a signal is pending, or the runtime is
    ///   shutting down.
    #[doc(alias = "lwp_wait")]
    pub fn wait(&self, td: &mut CurThread, lid: Option<Lid>) -> Result<(Lid, i32), LwpError> {
        let p = &self.inner;
        let Some(ctx) = self.my_ctx(td) else {
            return Err(LwpError::NotInProcess { pid: p.pid });
        };
        let me = ctx.lid;
        let want = lid.map_or(0, |l| l.0);
        // Waiting for the LWP we just created, which is usually queued
        // right behind us and only needs a turn to finish: when it is the
        // very next to run here, give it that turn now, by handoff (one
        // turn only: it cannot keep us off the CPU, and we stay an
        // ordinary thread that requests and signals reach at the switch
        // point that follows). Running it before we announce the wait is
        // no different from having been switched out just before `wait`.
        if want != 0 && ctx.child_lid.load(Ordering::Relaxed) == want {
            let tid = ThreadId::from_raw(ctx.child_tid.load(Ordering::Relaxed));
            td.run_if_next(tid);
        }
        {
            let mut st = p.lock();
            if want != 0 && want != me {
                // The target already a zombie: collect it at once. This is
                // what the full pass below decides in that case (a zombie
                // waits for nobody, so no deadlock; a detached target is
                // no candidate, left to it), minus announcing a wait that
                // would be undone in the same critical section.
                if let Some(i) = st.lwps.pos(want) {
                    let rec = &st.lwps.v[i].1;
                    if rec.state == LwpState::Zomb && !rec.detached {
                        debug_assert!(!rec.waiting);
                        let v = st.free_at(i);
                        st.end_over_waits();
                        // Other waiters for it must look again (ESRCH).
                        let others = st.nsleep > 0;
                        drop(st);
                        if others {
                            p.wake_waiters();
                        }
                        return Ok((Lid(want), v));
                    }
                }
            }
            // Announce ourselves and look once, under the same lock.
            let r = st
                .lwps
                .get_mut(&me)
                .expect("lwkt: live LWP without a record");
            r.waiting = true;
            r.waitingfor = want;
            if !r.detached {
                st.nwait += 1;
            }
            if let Some(r) = self.try_collect(&mut st, me, want) {
                return self.wait_done(st, me, want, false, r);
            }
        }
        // Undone on every way out below, unwinding included (an exit
        // request can unwind the LWP from inside a switch point here).
        let mut leave = WaitGuard {
            p,
            me,
            want,
            armed: true,
            slept: false,
        };
        // A new LWP on this CPU is usually queued behind us and only needs
        // a turn to finish: give it one before paying for a sleep.
        td.yield_now();
        let mut interlocked = false;
        loop {
            if interlocked {
                td.sleep_interlock(&p.wait_chan);
            }
            let mut st = p.lock();
            if let Some(r) = self.try_collect(&mut st, me, want) {
                leave.armed = false;
                let out = self.wait_done(st, me, want, leave.slept, r);
                if interlocked {
                    td.sleep_remove();
                }
                return out;
            }
            if interlocked && !leave.slept {
                // From now on we may be asleep: changes must wake us (see
                // `ProcState::nsleep`).
                st.nsleep += 1;
                leave.slept = true;
            }
            drop(st);
            if !interlocked {
                // Look again with the interlock before sleeping.
                interlocked = true;
                continue;
            }
            match td.sleep(
                &p.wait_chan,
                Sleep::default().interruptible().wmesg("lwpwait"),
            ) {
                Ok(()) | Err(SleepError::TimedOut) => {}
                Err(_) => {
                    if td.thread().has(tdf::CANCEL) {
                        return Err(LwpError::Interrupted {
                            pid: p.pid,
                            lid: want,
                            why: "the runtime is shutting down",
                        });
                    }
                    let st = p.lock();
                    let mine = st.lwps.get(&me).map_or(SigSet::EMPTY, |r| r.sigpend);
                    if !mine.union(st.sigpend).is_empty() {
                        return Err(LwpError::Interrupted {
                            pid: p.pid,
                            lid: want,
                            why: "wait interrupted by a signal",
                        });
                    }
                    // Kicked for a suspend or a stop, and continued since:
                    // wait on.
                }
            }
        }
    }

    /// Ends a wait that is over: undoes its bookkeeping under the lock it
    /// was decided under, and lets the other waiters look again (a target
    /// they wanted may be gone).
    fn wait_done(
        &self,
        mut st: PMutexGuard<'_, ProcState>,
        me: u32,
        want: u32,
        slept: bool,
        r: Result<(Lid, i32), LwpError>,
    ) -> Result<(Lid, i32), LwpError> {
        let collected = matches!(r, Ok((l, _)) if l.0 == want);
        st.leave_wait(me, want, slept, collected);
        let others = st.nsleep > 0;
        drop(st);
        if others {
            self.inner.wake_waiters();
        }
        r
    }

    /// One pass of `lwp_wait1`'s scan, under the lock: `Some` when the
    /// wait is over.
    fn try_collect(
        &self,
        st: &mut ProcState,
        me: u32,
        want: u32,
    ) -> Option<Result<(Lid, i32), LwpError>> {
        let pid = self.inner.pid;
        let deadlock = |why| {
            Some(Err(LwpError::Deadlock {
                pid,
                lid: want,
                why,
            }))
        };
        // Counted in `nwait` again for this look, if another LWP's change
        // had taken us out (see `LwpRec::wait_over`).
        if let Some(i) = st.lwps.pos(me) {
            let r = &mut st.lwps.v[i].1;
            if std::mem::take(&mut r.wait_over) && !r.detached {
                st.nwait += 1;
            }
        }
        let mut nfound = 0;
        let mut found = None;
        for (i, (l2, rec)) in st.lwps.v.iter_mut().enumerate() {
            let l2 = *l2;
            if want != 0 && l2 == want && rec.waiting && rec.waitingfor == me {
                return deadlock(if l2 == me {
                    "an LWP cannot wait for itself"
                } else {
                    "the target is waiting for the caller"
                });
            }
            if l2 == me || rec.detached {
                continue;
            }
            if want != 0 {
                if l2 != want {
                    continue;
                }
                if rec.waiter == 0 {
                    rec.waiter = me;
                }
            } else if rec.waiter != 0 {
                // Another LWP waits for it by name: leave it to that one.
                nfound += 1;
                continue;
            }
            nfound += 1;
            if rec.state == LwpState::Zomb {
                found = Some((i, l2));
                break;
            }
        }
        if let Some((i, l2)) = found {
            let v = st.free_at(i);
            st.end_over_waits();
            return Some(Ok((Lid(l2), v)));
        }
        if nfound == 0 {
            return Some(Err(LwpError::NoSuchLwp { pid, lid: want }));
        }
        if st.exit_req.is_some() {
            return deadlock("the process is exiting");
        }
        if want != 0 && st.cycle(want, me) {
            return deadlock("the wait would close a cycle of waiting LWPs");
        }
        let live = (st.nrun + st.nzomb) as i64 - st.ndetached as i64;
        // Exact: waiters whose wait another LWP ended are not counted (see
        // `ProcState::nwait`).
        if live <= st.nwait as i64 {
            return deadlock("every other live LWP is waiting");
        }
        None
    }

    /// Suspends an LWP (`lwp_suspend`): a running one stops at its next
    /// switch point, an interruptible sleeper is kicked out of its sleep
    /// first. Suspending the caller itself suspends it here, until
    /// [`resume`](Self::resume)d by another.
    ///
    /// ```compile_fail,E0499
    /// static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
    /// fn f(td: &mut lwkt::CurThread, p: &lwkt::lwp::Proc) {
    ///     let g = td.get_token(&T);
    ///     let v = g.get(td);
    ///     let me = td.lid().unwrap();
    ///     let _ = p.suspend(td, me);
    ///     *v += 1;
    /// }
    /// ```
    ///
    /// # Errors
    /// - [`LwpError::NoSuchLwp`]: no such LWP;
    /// - [`LwpError::Interrupted`]: the target is not started yet (`Idl`)
    ///   or is a zombie ("what Solaris does", says NetBSD);
    /// - [`LwpError::Deadlock`]: the caller suspends itself while it is the
    ///   only running LWP, or the caller's process is exiting.
    #[doc(alias = "lwp_suspend")]
    pub fn suspend(&self, td: &mut CurThread, lid: Lid) -> Result<(), LwpError> {
        let p = &self.inner;
        let me = self.my_lid(td);
        let mut st = p.lock();
        let deadlock = |why| LwpError::Deadlock {
            pid: p.pid,
            lid: lid.0,
            why,
        };
        if me.is_some() && st.exit_req.is_some() {
            return Err(deadlock("the caller's process is exiting"));
        }
        let nrun = st.nrun;
        let Some(rec) = st.lwps.get_mut(&lid.0) else {
            return Err(self.err_srch(lid.0));
        };
        if me == Some(lid.0) {
            if nrun <= 1 {
                return Err(deadlock("suspending the only running LWP"));
            }
            rec.suspend_req = true;
            let rec = &st.lwps[&lid.0];
            st.refresh(rec);
            drop(st);
            self.self_stop(td);
            return Ok(());
        }
        match rec.state {
            LwpState::Idl | LwpState::Zomb => {
                return Err(LwpError::Interrupted {
                    pid: p.pid,
                    lid: lid.0,
                    why: "the LWP is not started yet or has exited",
                })
            }
            LwpState::Suspended => return Ok(()),
            LwpState::Stop => {
                rec.suspend_req = true;
                st.set_state(lid.0, LwpState::Suspended);
                let rec = &st.lwps[&lid.0];
                st.refresh(rec);
                return Ok(());
            }
            _ => {}
        }
        rec.suspend_req = true;
        let t = rec.thread();
        let rec = &st.lwps[&lid.0];
        st.refresh(rec);
        drop(st);
        if let Some(t) = t {
            t.upcall(true);
        }
        Ok(())
    }

    /// The caller stops at once (a self-suspend): its own switch point.
    fn self_stop(&self, td: &mut CurThread) {
        td.run_upcall_now();
    }
}

impl Proc {
    /// Continues a suspended LWP (`lwp_continue`); a no-op unless it is
    /// suspended (or a suspend request is still on its way, which this
    /// cancels). Never blocks; callable from anywhere.
    ///
    /// # Errors
    /// [`LwpError::NoSuchLwp`] when there is no such LWP.
    #[doc(alias = "lwp_continue")]
    pub fn resume(&self, lid: Lid) -> Result<(), LwpError> {
        let p = &self.inner;
        let mut st = p.lock();
        let stopping = st.stopping;
        let Some(rec) = st.lwps.get_mut(&lid.0) else {
            return Err(self.err_srch(lid.0));
        };
        if !rec.suspend_req && rec.state != LwpState::Suspended {
            return Ok(());
        }
        rec.suspend_req = false;
        let mut wake = None;
        if rec.state == LwpState::Suspended {
            wake = rec.thread();
            let new = if stopping {
                LwpState::Stop
            } else {
                LwpState::Run
            };
            st.set_state(lid.0, new);
        }
        let rec = &st.lwps[&lid.0];
        st.refresh(rec);
        drop(st);
        if let Some(t) = wake {
            t.schedule();
            p.wake_waiters();
        }
        Ok(())
    }

    /// Detaches an LWP (`lwp_detach`): nobody may wait for it; a zombie is
    /// freed at once, a live one when it exits.
    ///
    /// # Errors
    /// [`LwpError::NoSuchLwp`] when there is no such LWP,
    /// [`LwpError::Invalid`] when it is already detached.
    #[doc(alias = "lwp_detach")]
    pub fn detach(&self, lid: Lid) -> Result<(), LwpError> {
        let p = &self.inner;
        let mut st = p.lock();
        let Some(rec) = st.lwps.get_mut(&lid.0) else {
            return Err(self.err_srch(lid.0));
        };
        if rec.detached {
            return Err(LwpError::Invalid {
                pid: p.pid,
                lid: lid.0,
                why: "the LWP is already detached",
            });
        }
        // A waiter stops counting in `nwait` (see there) as it leaves the
        // supply side of the deadlock check.
        let counted = rec.waiting && !rec.wait_over;
        rec.detached = true;
        let zombie = rec.state == LwpState::Zomb;
        st.ndetached += 1;
        if counted {
            st.nwait -= 1;
        }
        if zombie {
            st.free(lid.0);
        }
        // Waits for it are over (`ESRCH`) before their waiters run.
        st.end_over_waits();
        drop(st);
        p.wake_waiters();
        Ok(())
    }

    /// Ends the process with `status` (`exit1`): every other LWP unwinds at
    /// its next switch point (kicked out of interruptible sleeps, and out of
    /// stops, suspensions and parks), and the caller unwinds now. The
    /// first exit request wins; a later one does not change the status.
    ///
    /// A borrow of token data cannot be alive across it (not even one
    /// whose destructor would use it while the stack unwinds):
    ///
    /// ```compile_fail,E0499
    /// static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
    /// struct Use<'a>(&'a mut u32);
    /// impl Drop for Use<'_> {
    ///     fn drop(&mut self) { *self.0 += 1; }
    /// }
    /// fn f(td: &mut lwkt::CurThread, p: &lwkt::lwp::Proc) {
    ///     let g = td.get_token(&T);
    ///     let _v = Use(g.get(td));
    ///     p.exit(td, 1);
    /// }
    /// ```
    ///
    /// # Panics
    /// When the caller is not an LWP of this process.
    pub fn exit(&self, td: &mut CurThread, status: i32) -> ! {
        let me = self.my_lid(td).unwrap_or_else(|| {
            panic!(
                "lwkt: Proc::exit called from a thread that is not an LWP of process {}",
                self.inner.pid
            )
        });
        self.request_exit(ExitStatus::Exited(status), me);
        resume_unwind(Box::new(LwpExit(status)))
    }

    /// Kills the process (`SIGKILL`): every LWP unwinds at its next switch
    /// point. The status is [`ExitStatus::Killed`] unless an exit was asked
    /// for first.
    pub fn kill(&self) {
        self.request_exit(ExitStatus::Killed(Signal::KILL), 0);
    }

    fn request_exit(&self, status: ExitStatus, except: u32) {
        let p = &self.inner;
        let mut st = p.lock();
        if st.status.is_some() {
            return;
        }
        if st.exit_req.is_none() {
            st.exit_req = Some(status);
        }
        st.refresh_all();
        let others = st.threads(except);
        drop(st);
        kick_exit(others);
        p.wake_waiters();
    }

    /// Stops the process (`SIGSTOP`): every LWP goes to `Stop` at its next
    /// switch point (interruptible sleeps are kicked).
    pub fn stop(&self) {
        let p = &self.inner;
        let mut st = p.lock();
        if st.status.is_some() || st.exit_req.is_some() || st.stopping {
            return;
        }
        st.stopping = true;
        st.refresh_all();
        let ts = st.threads(0);
        drop(st);
        for (t, parked) in ts {
            if !parked {
                t.upcall(true);
            }
        }
    }

    /// Continues a stopped process (`SIGCONT`): each stopped LWP goes back
    /// to the state it would have had (a suspended one stays suspended).
    pub fn cont(&self) {
        let p = &self.inner;
        let mut st = p.lock();
        if !st.stopping {
            return;
        }
        st.stopping = false;
        let stopped: Vec<u32> = st
            .lwps
            .iter()
            .filter(|(_, r)| r.state == LwpState::Stop)
            .map(|(l, _)| *l)
            .collect();
        let mut wake = Vec::new();
        for l in stopped {
            let new = if st.lwps[&l].suspend_req {
                LwpState::Suspended
            } else {
                LwpState::Run
            };
            st.set_state(l, new);
            if new == LwpState::Run {
                wake.extend(st.lwps[&l].thread());
            }
        }
        st.refresh_all();
        drop(st);
        for t in wake {
            t.schedule();
        }
        p.wake_waiters();
    }

    /// Sends `sig` to the process. `KILL`, `STOP` and `CONT` act at once
    /// ([`kill`](Self::kill), [`stop`](Self::stop), [`cont`](Self::cont));
    /// any other signal becomes pending for the process, and every LWP's
    /// interruptible sleep is kicked.
    pub fn signal(&self, sig: Signal) {
        match sig {
            Signal::KILL => return self.kill(),
            Signal::STOP => return self.stop(),
            Signal::CONT => return self.cont(),
            _ => {}
        }
        let p = &self.inner;
        let mut st = p.lock();
        if st.status.is_some() {
            return;
        }
        st.sigpend.insert(sig);
        st.refresh_all();
        let ts = st.threads(0);
        drop(st);
        for (t, parked) in ts {
            if !parked {
                t.upcall(true);
            }
        }
    }

    /// Sends `sig` to one LWP (`_lwp_kill`). `KILL`, `STOP` and `CONT` act
    /// on the whole process, as in NetBSD.
    ///
    /// # Errors
    /// [`LwpError::NoSuchLwp`] when there is no such live LWP.
    #[doc(alias = "_lwp_kill")]
    pub fn signal_lwp(&self, lid: Lid, sig: Signal) -> Result<(), LwpError> {
        let p = &self.inner;
        let mut st = p.lock();
        let live = st
            .lwps
            .get(&lid.0)
            .is_some_and(|r| r.state != LwpState::Zomb);
        if !live {
            return Err(self.err_srch(lid.0));
        }
        if matches!(sig, Signal::KILL | Signal::STOP | Signal::CONT) {
            drop(st);
            self.signal(sig);
            return Ok(());
        }
        let rec = st.lwps.get_mut(&lid.0).expect("checked above");
        rec.sigpend.insert(sig);
        let t = rec.thread();
        let rec = &st.lwps[&lid.0];
        st.refresh(rec);
        drop(st);
        if let Some(t) = t {
            t.upcall(true);
        }
        Ok(())
    }

    /// The process's LWPs that are not freed yet, by lid.
    pub fn lwps(&self) -> Vec<LwpInfo> {
        let st = self.inner.lock();
        st.lwps
            .iter()
            .map(|(&l, r)| {
                let (state, cpu) = r.shown_state();
                LwpInfo {
                    pid: Pid(self.inner.pid),
                    lid: Lid(l),
                    tid: r.has_thread.then(|| ThreadId::from_raw(r.tid())),
                    state,
                    detached: r.detached,
                    cpu,
                    exit_value: (r.state == LwpState::Zomb)
                        .then(|| r.lwp.exit_value.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }

    /// The state of one LWP, if it is not freed.
    pub fn state(&self, lid: Lid) -> Option<LwpState> {
        self.inner
            .lock()
            .lwps
            .get(&lid.0)
            .map(|r| r.shown_state().0)
    }

    /// A reference to an LWP (`lwp_addref`).
    ///
    /// # Errors
    /// [`LwpError::NoSuchLwp`] when there is no such LWP (or it was freed).
    #[doc(alias = "lwp_addref")]
    pub fn lwp_ref(&self, lid: Lid) -> Result<LwpRef, LwpError> {
        let st = self.inner.lock();
        st.lwps
            .get(&lid.0)
            .map(|r| LwpRef { lwp: r.lwp.clone() })
            .ok_or_else(|| self.err_srch(lid.0))
    }

    /// Whether an exit (or kill) was asked for, or the process has ended.
    pub fn is_exiting(&self) -> bool {
        let st = self.inner.lock();
        st.exit_req.is_some() || st.status.is_some()
    }

    /// The process's exit status, once it has ended.
    pub fn status(&self) -> Option<ExitStatus> {
        self.inner.lock().status.clone()
    }

    /// The signals pending for the whole process.
    pub fn sigpending(&self) -> SigSet {
        self.inner.lock().sigpend
    }
}

/// Undoes a `wait`'s bookkeeping (`lwp_wait1`'s exit path).
struct WaitGuard<'a> {
    p: &'a ProcInner,
    me: u32,
    want: u32,
    armed: bool,
    /// Counted in `nsleep`.
    slept: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.p.lock();
        st.leave_wait(self.me, self.want, self.slept, false);
        let others = st.nsleep > 0;
        drop(st);
        if others {
            self.p.wake_waiters();
        }
    }
}

impl ProcHandle {
    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        self.proc.pid()
    }

    /// Waits (sleeping) from an lwkt thread for the process to end.
    ///
    /// # Errors
    /// [`LwpError::Deadlock`] when the caller is one of the process's own
    /// LWPs; [`LwpError::Interrupted`] when the runtime shuts down first.
    pub fn join(&self, td: &mut CurThread) -> Result<ExitStatus, LwpError> {
        let p = &self.proc.inner;
        if self.proc.my_lid(td).is_some() {
            return Err(LwpError::Deadlock {
                pid: p.pid,
                lid: 0,
                why: "an LWP cannot wait for its own process to end",
            });
        }
        let r = td.sleep_until(&p.done_chan, Sleep::default().wmesg("procwait"), || {
            p.lock().status.is_some()
        });
        match r {
            Ok(()) => Ok(p.lock().status.clone().expect("checked")),
            Err(_) => Err(LwpError::Interrupted {
                pid: p.pid,
                lid: 0,
                why: "the runtime is shutting down",
            }),
        }
    }

    /// Waits from a plain OS thread (blocking it) for the process to end.
    ///
    /// # Panics
    /// When called from an lwkt thread of the process's runtime (it would
    /// block a CPU the process may need); use [`join`](Self::join) there.
    pub fn join_blocking(&self) -> ExitStatus {
        let p = &self.proc.inner;
        if with_current(|_| ()).is_some() {
            panic!("lwkt: ProcHandle::join_blocking called from an lwkt thread; use join(td)");
        }
        let mut st = p.lock();
        loop {
            if let Some(s) = &st.status {
                return s.clone();
            }
            p.done_cv.wait(&mut st);
        }
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.proc.status()
    }

    /// Stops the process ([`Proc::stop`]).
    pub fn stop(&self) {
        self.proc.stop();
    }

    /// Continues the process ([`Proc::cont`]).
    pub fn cont(&self) {
        self.proc.cont();
    }

    /// Sends a signal to the process ([`Proc::signal`]).
    pub fn signal(&self, sig: Signal) {
        self.proc.signal(sig);
    }

    /// Kills the process ([`Proc::kill`]).
    pub fn kill(&self) {
        self.proc.kill();
    }
}

impl LwpRef {
    /// The LWP's id.
    pub fn lid(&self) -> Lid {
        Lid(self.lwp.lid)
    }

    /// Its process's id.
    pub fn pid(&self) -> Pid {
        Pid(self.lwp.proc.pid)
    }

    /// Its state now (`Zomb` once it exited, collected or not).
    pub fn state(&self) -> LwpState {
        if self.lwp.reaped.load(Ordering::Acquire) {
            return LwpState::Zomb;
        }
        let st = self.lwp.proc.lock();
        st.lwps
            .get(&self.lwp.lid)
            .map_or(LwpState::Zomb, |r| r.shown_state().0)
    }

    /// Its exit value, once it exited.
    pub fn exit_value(&self) -> Option<i32> {
        self.lwp
            .exited
            .load(Ordering::Acquire)
            .then(|| self.lwp.exit_value.load(Ordering::Relaxed))
    }

    /// Whether it was collected (or freed as detached, or with its
    /// process).
    pub fn is_freed(&self) -> bool {
        self.lwp.reaped.load(Ordering::Acquire)
    }

    /// Its `lwpctl` block.
    pub fn ctl(&self) -> LwpCtl {
        LwpCtl {
            lwp: self.lwp.clone(),
        }
    }

    /// How many references to the LWP exist (the process's own record and
    /// its running thread count too).
    pub fn refs(&self) -> usize {
        Arc::strong_count(&self.lwp)
    }
}

/// The LWP side of [`CurThread`].
impl CurThread {
    /// The process this thread is an LWP of, if it is one.
    pub fn proc(&self) -> Option<Proc> {
        current_ctx(self).map(|c| Proc {
            inner: c.proc.clone(),
        })
    }

    /// This LWP's id, if the thread is an LWP.
    pub fn lid(&self) -> Option<Lid> {
        current_ctx(self).map(|c| Lid(c.lid))
    }

    /// The signals pending for this LWP or its process (empty for a plain
    /// thread).
    pub fn sigpending(&self) -> SigSet {
        let Some(c) = current_ctx(self) else {
            return SigSet::EMPTY;
        };
        let st = c.proc.lock();
        let mine = st.lwps.get(&c.lid).map_or(SigSet::EMPTY, |r| r.sigpend);
        mine.union(st.sigpend)
    }

    /// Takes one pending signal: the lowest of this LWP's own, else the
    /// lowest of the process's. Interruptible sleeps work again once none
    /// is pending.
    pub fn sigtake(&mut self) -> Option<Signal> {
        let c = current_ctx(self)?;
        let mut st = c.proc.lock();
        let lid = c.lid;
        let own = st.lwps.get(&lid).and_then(|r| r.sigpend.first());
        let sig = match own {
            Some(s) => {
                st.lwps.get_mut(&lid).expect("checked").sigpend.remove(s);
                s
            }
            None => {
                let s = st.sigpend.first()?;
                st.sigpend.remove(s);
                s
            }
        };
        st.refresh_all();
        Some(sig)
    }

    /// This LWP's `lwpctl` block (`_lwp_ctl`), if the thread is an LWP.
    #[doc(alias = "_lwp_ctl")]
    pub fn lwpctl(&self) -> Option<LwpCtl> {
        let lwp = current_arc(self)?;
        Some(LwpCtl { lwp })
    }

    /// Ends this LWP (`lwp_exit`) with `value`: unwinds its stack (its
    /// destructors run and its token guards release their tokens), runs
    /// its key destructors, and leaves a zombie for [`Proc::wait`] (or
    /// none, if detached). The last LWP's exit ends the process.
    ///
    /// A borrow of token data cannot be alive across it (not even one
    /// whose destructor would use it while the stack unwinds):
    ///
    /// ```compile_fail,E0499
    /// static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
    /// struct Use<'a>(&'a mut u32);
    /// impl Drop for Use<'_> {
    ///     fn drop(&mut self) { *self.0 += 1; }
    /// }
    /// fn f(td: &mut lwkt::CurThread) {
    ///     let g = td.get_token(&T);
    ///     let _v = Use(g.get(td));
    ///     td.lwp_exit(0);
    /// }
    /// ```
    ///
    /// # Panics
    /// When the thread is not an LWP.
    pub fn lwp_exit(&mut self, value: i32) -> ! {
        if current_ctx(self).is_none() {
            panic!("lwkt: lwp_exit called from a thread that is not an LWP");
        }
        resume_unwind(Box::new(LwpExit(value)))
    }
}
