//! A CPU's poller: file-descriptor readiness, owned by the CPU that waits
//! on it (the scheduler's half of network I/O; `net/` builds sockets on
//! it). Owner-only, like the rest of [`Core`].
//!
//! Execution model: a thread that must wait for an fd (`wait_fd`) records
//! itself in its CPU's table of waiters, arms the fd in that CPU's epoll
//! instance, and sleeps like an interruptible `tsleep` (so a timeout, an
//! interrupt or runtime shutdown ends the wait the same way). The CPU looks
//! at its epoll instance itself: without blocking every `TIMER_POLL`
//! passes of its loop (`switch.rs`, the same countdown as its timers)
//! while threads wait on fds, whenever its run queue empties,
//! and blocking (with its next timer's deadline) instead of its futex when
//! it has nothing to run. An IPI wakes a CPU blocked there through the
//! eventfd its mailbox writes (see `ipi::Mailbox::notify`). No other OS
//! thread takes part: a ready fd wakes its thread on the thread's own CPU.
//!
//! * **Lazy.** A CPU creates its poller at its first `wait_fd`; until then
//!   it parks on its futex exactly as before, and its loop pays one load
//!   and branch per pass for the check.
//! * **Sockets of [`crate::net`]: persistent, edge-triggered
//!   registrations** ([`Registration`]). The first wait on a socket
//!   registers it once, on the waiting thread's CPU (its *home*), with
//!   `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`, in the CPU's persistent
//!   set: an epoll instance of its own, nested in the main one, so that a
//!   one-shot wait on the same socket (a `connect`'s, a user's `wait_fd`)
//!   can neither fail its ADD with `EEXIST` nor rewrite it with a MOD. A
//!   busy CPU with no one-shot waiter looks at the persistent set alone
//!   (one `epoll_wait`); a parked CPU blocks in the main set, which
//!   reports the persistent one as readable. The epoll data word names
//!   a slot of that CPU's poller (index and generation, never the fd
//!   number, so a closed-and-reused fd number cannot alias it). The slot
//!   holds a readiness cache and the waiters. On the home CPU a wait is:
//!   the operation said `WouldBlock` (or the cache said it would), clear
//!   the cache for the interest, add the entry, sleep; no syscall. An edge
//!   sets the cache and wakes the waiters it satisfies. No edge is lost
//!   between the failed operation and the sleep: only this CPU fetches its
//!   events, and it cannot do so while the thread runs, so any edge after
//!   the operation is still in the kernel's ready list and is fetched
//!   after the entry exists. A short stream read clears the cache too
//!   (`net::short_read`), sparing the next read's `EAGAIN`: later data
//!   raises a new edge. A wait on any other CPU (a thread that migrated, a
//!   socket handed to a thread elsewhere, a socket that outlived its
//!   home's runtime) takes the one-shot path below on that CPU, which does
//!   not depend on the persistent registration. The socket's `Drop`
//!   deletes the registration (from any OS thread, through the shared
//!   half of the poller, [`PollShared`]) while its fd is still open, and
//!   queues the slot for its home to free at its next poll.
//! * **Any other fd (`wait_fd`): one-shot, level-triggered
//!   registrations.** Arming an fd is one
//!   `epoll_ctl` (MOD, or ADD the first time on this CPU) with
//!   `EPOLLONESHOT` and the union of its waiters' interests; an event
//!   disarms it, and waiters it did not satisfy re-arm it. So an fd is
//!   armed on a CPU only while a thread of that CPU waits on it: a thread
//!   that stops waiting (woken, timed out, interrupted, cancelled) removes
//!   its own entry, and deletes the registration when nobody else waits,
//!   unless an event just disarmed it. A thread that migrates afterwards
//!   leaves at most a disarmed entry behind, which never fires and goes
//!   when the fd closes. This path stays for fds lwkt does not own: a
//!   persistent registration must be deleted before its fd closes, and
//!   only the owner of the fd knows when that is.
//! * **Waiters** are named by thread pointer and sleep sequence number, as
//!   timer entries are; an entry lives only while its thread is inside
//!   `wait_fd` (a drop guard removes it, also when the stack unwinds at
//!   shutdown), so the pointer is always to a live thread of this CPU.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use rustix::io::Errno;

use super::core::Core;
use super::td::{tdf, TdPtr, Thread, Wake};
use crate::sync::atomic::Ordering;

/// Events fetched per `epoll_wait`.
const EVENTS: usize = 256;

/// The epoll data word of the mailbox's eventfd (fds are never negative).
const WAKER: u64 = u64::MAX;

/// The epoll data word of the persistent set, nested in the main one.
const PSET: u64 = u64::MAX - 1;

/// Set in the epoll data word of a persistent registration (the rest:
/// generation << 32 | slot index); one-shot entries carry the fd number,
/// which is below 2^31.
const PERSIST: u64 = 1 << 62;

/// [`Registration::home`]: no CPU registered the fd yet.
const HOME_NONE: u64 = 0;
/// [`Registration::home`]: registering failed; every wait uses the one-shot
/// path (which reports the error).
const HOME_FAILED: u64 = u64::MAX;

/// Poller ids (never 0 nor [`HOME_FAILED`]; never reused in a process).
static NEXT_POLLER: AtomicU64 = AtomicU64::new(1);

/// What a thread waits for in [`CurThread::wait_fd`].
///
/// [`CurThread::wait_fd`]: crate::CurThread::wait_fd
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Interest(u8);

impl Interest {
    /// The fd has data to read (or the peer closed, or an error).
    pub const READABLE: Interest = Interest(ready::READ);
    /// The fd can take data (or an error).
    pub const WRITABLE: Interest = Interest(ready::WRITE);
    /// Either.
    pub const BOTH: Interest = Interest(ready::READ | ready::WRITE);

    /// Whether readability is asked for.
    pub fn is_readable(self) -> bool {
        self.0 & ready::READ != 0
    }

    /// Whether writability is asked for.
    pub fn is_writable(self) -> bool {
        self.0 & ready::WRITE != 0
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, o: Interest) -> Interest {
        Interest(self.0 | o.0)
    }
}

/// Readiness bits, as [`Ready`] carries them.
mod ready {
    pub(super) const READ: u8 = 1 << 0;
    pub(super) const WRITE: u8 = 1 << 1;
    /// Hang-up (both directions closed).
    pub(super) const HUP: u8 = 1 << 2;
    /// An error is pending on the fd (`SO_ERROR` for sockets).
    pub(super) const ERROR: u8 = 1 << 3;
    /// The peer shut down its writing half.
    pub(super) const READ_CLOSED: u8 = 1 << 4;
    /// Set on every entry an event woke (so an event with no known bit
    /// still counts as fired).
    pub(super) const FIRED: u8 = 1 << 7;
}

/// What [`CurThread::wait_fd`] found. Empty when the wait ended without an
/// event (a raw `schedule` of the thread): readiness is a hint; retry the
/// operation and wait again on `WouldBlock`.
///
/// [`CurThread::wait_fd`]: crate::CurThread::wait_fd
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Ready(u8);

impl Ready {
    /// Reading will not block (data, end of file, or an error).
    pub fn is_readable(self) -> bool {
        self.0 & (ready::READ | ready::HUP | ready::ERROR | ready::READ_CLOSED) != 0
    }

    /// Writing will not block (room, or an error).
    pub fn is_writable(self) -> bool {
        self.0 & (ready::WRITE | ready::HUP | ready::ERROR) != 0
    }

    /// The fd hung up (`EPOLLHUP`).
    pub fn is_hup(self) -> bool {
        self.0 & ready::HUP != 0
    }

    /// An error is pending (`EPOLLERR`).
    pub fn is_error(self) -> bool {
        self.0 & ready::ERROR != 0
    }

    /// The peer closed its writing half (`EPOLLRDHUP`).
    pub fn is_read_closed(self) -> bool {
        self.0 & ready::READ_CLOSED != 0
    }

    /// No event ended the wait.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

fn ready_of(f: epoll::EventFlags) -> u8 {
    use epoll::EventFlags as E;
    let mut r = ready::FIRED;
    if f.intersects(E::IN | E::PRI | E::RDNORM) {
        r |= ready::READ;
    }
    if f.intersects(E::OUT | E::WRNORM) {
        r |= ready::WRITE;
    }
    if f.contains(E::HUP) {
        r |= ready::HUP;
    }
    if f.contains(E::ERR) {
        r |= ready::ERROR;
    }
    if f.contains(E::RDHUP) {
        r |= ready::READ_CLOSED;
    }
    r
}

/// Whether readiness `r` satisfies a waiter for `interest`.
fn satisfies(r: u8, interest: u8) -> bool {
    let rd = r & (ready::READ | ready::READ_CLOSED) != 0;
    let wr = r & ready::WRITE != 0;
    r & (ready::HUP | ready::ERROR) != 0
        || (rd && interest & ready::READ != 0)
        || (wr && interest & ready::WRITE != 0)
}

fn flags_of(interest: u8) -> epoll::EventFlags {
    use epoll::EventFlags as E;
    let mut f = E::ONESHOT;
    if interest & ready::READ != 0 {
        f |= E::IN | E::RDHUP;
    }
    if interest & ready::WRITE != 0 {
        f |= E::OUT;
    }
    f
}

/// One thread waiting on one fd.
struct Waiter {
    td: TdPtr,
    /// The sleep it waits in (`Thread::sleep_seq`).
    seq: u64,
    /// [`ready`] READ / WRITE bits.
    interest: u8,
    /// Readiness an event delivered; 0 until then.
    got: u8,
}

impl Waiter {
    /// Wakes the waiter with readiness `r` if `r` is what it waits for
    /// (and no event did yet). Returns whether it woke a thread.
    fn offer(&mut self, core: &Core, r: u8) -> bool {
        if self.got != 0 || !satisfies(r, self.interest) {
            return false;
        }
        self.got = r;
        // SAFETY: an entry exists only while its thread is inside a wait
        // on this CPU (module header), so it is alive and owned here.
        let td = unsafe { self.td.td() };
        if td.has(tdf::SLEEPING) && td.sleep_seq.get() == self.seq {
            core.wake(self.td, Wake::Wakeup);
            true
        } else {
            false
        }
    }
}

/// A CPU's knowledge of one fd number (one-shot path).
#[derive(Default)]
struct FdSlot {
    /// Whether the fd is (believed to be) in this CPU's epoll set. A stale
    /// belief (the fd was closed and its number reused) is corrected by
    /// the ADD/MOD fallbacks in [`Poller::arm`].
    registered: bool,
    /// Threads of this CPU waiting on it.
    waiters: Vec<Waiter>,
}

impl FdSlot {
    /// The union of the interests of waiters no event has satisfied yet.
    fn pending(&self) -> u8 {
        self.waiters
            .iter()
            .filter(|w| w.got == 0)
            .fold(0, |a, w| a | w.interest)
    }
}

/// A persistent registration's state on its home CPU (owner-only).
#[derive(Default)]
struct RegSlot {
    /// Bumped when the slot is freed, so a late event for the previous
    /// owner (already fetched when its socket was dropped) is ignored.
    gen: u32,
    /// In use by a live [`Registration`].
    used: bool,
    /// The readiness cache: [`ready`] bits the edge events set; a thread
    /// of this CPU clears READ / WRITE when the operation said (or
    /// implied) `WouldBlock`.
    ready: u8,
    /// Threads of this CPU waiting on it.
    waiters: Vec<Waiter>,
}

/// The part of a poller other OS threads touch: the epoll instance (a
/// socket dropped anywhere deletes its registration) and the slots dropped
/// sockets gave back. Shared by the poller and every [`Registration`]
/// homed on it, so the epoll fd outlives both.
pub(crate) struct PollShared {
    /// Unique in the process (compared with [`Registration::home`]).
    id: u64,
    /// The main set: the waker, the persistent set, one-shot entries.
    epoll: OwnedFd,
    /// The persistent set: sockets' edge registrations only, so that a
    /// one-shot `wait_fd` on a socket (ADD, or MOD after `EEXIST`) can
    /// never rewrite its persistent registration, nor a disarmed one-shot
    /// entry (left by `connect`'s wait) make the persistent ADD fail.
    pset: OwnedFd,
    /// Keys (`gen << 32 | index`) of slots whose sockets were dropped.
    released: Mutex<Vec<u64>>,
    /// Whether `released` may hold keys (skips the lock when not).
    any_released: AtomicBool,
}

/// See the module header. Lives in [`Core::poller`] from the CPU's first
/// `wait_fd` until the CPU stops.
pub(crate) struct Poller {
    shared: Arc<PollShared>,
    /// One-shot waits, by fd number.
    fds: RefCell<Vec<FdSlot>>,
    /// Persistent registrations, by slot index.
    regs: RefCell<Vec<RegSlot>>,
    /// Free indices of `regs`.
    free: RefCell<Vec<u32>>,
    /// Threads of this CPU in a one-shot wait (the main set needs a look
    /// without blocking only when some are).
    oneshot_waiters: std::cell::Cell<u32>,
    /// `epoll_wait`'s buffer (main set).
    events: RefCell<Vec<epoll::Event>>,
    /// `epoll_wait`'s buffer (persistent set).
    pevents: RefCell<Vec<epoll::Event>>,
}

/// The fd behind a raw number taken from a waiter entry.
///
/// # Safety
/// A thread waiting on `fd` (an entry in its slot) holds a borrow of it
/// for the whole time its entry exists (`wait_fd` takes `impl AsFd` and
/// removes the entry before returning or unwinding), so the number names
/// an open fd while any entry does.
unsafe fn borrowed<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: per the contract above.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The key of slot `idx` in generation `gen`, as its epoll data word
/// carries it (without [`PERSIST`]).
fn reg_key(idx: u32, gen: u32) -> u64 {
    (u64::from(gen & 0x3fff_ffff) << 32) | u64::from(idx)
}

impl Poller {
    fn new(core: &Core) -> io::Result<Poller> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &ep,
            &efd,
            epoll::EventData::new_u64(WAKER),
            epoll::EventFlags::IN,
        )?;
        let pset = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &ep,
            &pset,
            epoll::EventData::new_u64(PSET),
            epoll::EventFlags::IN,
        )?;
        // Published last, once nothing can fail: from now on wakes write
        // the eventfd, so this CPU must park in this poller. Only this CPU
        // creates its poller, once (a CPU that failed to keep one never
        // got here), so no waker was set before.
        if core.remote().mailbox.set_waker(efd).is_err() {
            panic!("lwkt: CPU {} created a second poller", core.id);
        }
        Ok(Poller {
            shared: Arc::new(PollShared {
                id: NEXT_POLLER.fetch_add(1, Ordering::Relaxed),
                epoll: ep,
                pset,
                released: Mutex::new(Vec::new()),
                any_released: AtomicBool::new(false),
            }),
            fds: RefCell::new(Vec::new()),
            regs: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            oneshot_waiters: std::cell::Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
            pevents: RefCell::new(Vec::with_capacity(EVENTS)),
        })
    }

    /// Arms `fd` in this CPU's epoll set for `interest` (one-shot).
    fn arm(&self, slot: &mut FdSlot, fd: BorrowedFd<'_>, interest: u8) -> io::Result<()> {
        let data = epoll::EventData::new_u64(fd.as_raw_fd() as u64);
        let flags = flags_of(interest);
        let ep = &self.shared.epoll;
        if slot.registered {
            match epoll::modify(ep, fd, data, flags) {
                Err(Errno::NOENT) => epoll::add(ep, fd, data, flags)?,
                r => r?,
            }
        } else {
            match epoll::add(ep, fd, data, flags) {
                Err(Errno::EXIST) => epoll::modify(ep, fd, data, flags)?,
                r => r?,
            }
        }
        slot.registered = true;
        Ok(())
    }

    /// Frees the slots of dropped sockets.
    fn reap_released(&self) {
        if !self.shared.any_released.swap(false, Ordering::Acquire) {
            return;
        }
        let keys = std::mem::take(
            &mut *self
                .shared
                .released
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut regs = self.regs.borrow_mut();
        let mut free = self.free.borrow_mut();
        for k in keys {
            let idx = (k & 0xffff_ffff) as u32;
            let Some(slot) = regs.get_mut(idx as usize) else {
                continue;
            };
            // A socket is dropped only when no wait borrows it, so no
            // waiter is left; a slot that still has one stays (leaked)
            // rather than be handed to another socket.
            if slot.used && reg_key(idx, slot.gen) == k && slot.waiters.is_empty() {
                slot.used = false;
                slot.ready = 0;
                slot.gen = slot.gen.wrapping_add(1) & 0x3fff_ffff;
                free.push(idx);
            }
        }
    }

    /// Fetches ready events and wakes their threads; blocks up to
    /// `timeout` (None: until an event or a wake). Returns how many
    /// threads it woke. Without blocking and with no one-shot waiter, it
    /// looks at the persistent set alone (one syscall); otherwise at the
    /// main set, and at the persistent set when the main one says it has
    /// events.
    fn poll(&self, core: &Core, timeout: Option<Duration>) -> usize {
        self.reap_released();
        core.stats().io_polls.bump();
        if timeout == Some(Duration::ZERO) && self.oneshot_waiters.get() == 0 {
            return self.poll_pset(core);
        }
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos().into(),
        });
        let mut evs = self.events.borrow_mut();
        evs.clear();
        match epoll::wait(
            &self.shared.epoll,
            rustix::buffer::spare_capacity(&mut *evs),
            ts.as_ref(),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => panic!("lwkt: epoll_wait failed on CPU {}: {e}", core.id),
        }
        let mut woke = 0;
        for ev in evs.iter() {
            let (flags, data) = (ev.flags, ev.data.u64());
            match data {
                WAKER => {
                    if let Some(w) = core.remote().mailbox.waker() {
                        let mut b = [0u8; 8];
                        let _ = rustix::io::read(w, &mut b);
                    }
                }
                PSET => woke += self.poll_pset(core),
                _ => woke += self.fire(core, data as RawFd, ready_of(flags)),
            }
        }
        woke
    }

    /// Fetches the persistent set's events without blocking.
    fn poll_pset(&self, core: &Core) -> usize {
        let mut evs = self.pevents.borrow_mut();
        evs.clear();
        match epoll::wait(
            &self.shared.pset,
            rustix::buffer::spare_capacity(&mut *evs),
            Some(&Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => panic!("lwkt: epoll_wait failed on CPU {}: {e}", core.id),
        }
        let mut woke = 0;
        for ev in evs.iter() {
            woke += self.fire_reg(core, ev.data.u64() & !PERSIST, ready_of(ev.flags));
        }
        woke
    }

    /// An edge event `r` for the registration `key`: records the
    /// readiness and wakes the waiters it satisfies.
    fn fire_reg(&self, core: &Core, key: u64, r: u8) -> usize {
        let mut regs = self.regs.borrow_mut();
        let idx = (key & 0xffff_ffff) as usize;
        let Some(slot) = regs.get_mut(idx) else {
            return 0;
        };
        if !slot.used || reg_key(idx as u32, slot.gen) != key {
            // The socket was dropped after this event was fetched.
            return 0;
        }
        slot.ready |= r & !ready::FIRED;
        let mut woke = 0;
        for w in slot.waiters.iter_mut() {
            woke += usize::from(w.offer(core, r));
        }
        woke
    }

    /// An event `r` for `fd`: wakes the waiters it satisfies, re-arms for
    /// the others.
    fn fire(&self, core: &Core, fd: RawFd, r: u8) -> usize {
        let mut fds = self.fds.borrow_mut();
        let Some(slot) = fds.get_mut(fd as usize) else {
            return 0;
        };
        let mut woke = 0;
        for w in slot.waiters.iter_mut() {
            woke += usize::from(w.offer(core, r));
        }
        let left = slot.pending();
        if left != 0 {
            // SAFETY: a waiter still waits, so the fd is open (see
            // `borrowed`).
            let bfd = unsafe { borrowed(fd) };
            if self.arm(slot, bfd, left).is_err() {
                // Cannot re-arm (the fd went bad under its waiters): wake
                // them all; their next try reports the fd's error.
                for w in slot.waiters.iter_mut() {
                    woke += usize::from(w.offer(core, ready::FIRED | ready::ERROR));
                }
            }
        }
        woke
    }
}

/// A socket's persistent, edge-triggered registration (what the
/// [`crate::net`] types hold; `wait_fd` on other fds stays one-shot).
///
/// Registered lazily, by the first wait, on the CPU of the waiting thread
/// (its *home*), with `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET` and a
/// key that names a slot of that CPU's poller (index and generation,
/// never the fd number). From then on, a wait on the home CPU costs no
/// syscall: the edge events set the slot's readiness cache and wake its
/// waiters. A wait on any other CPU (a thread that migrated, a socket
/// handed to another CPU) takes the one-shot path there, which is
/// independent of this registration.
///
/// Invariants:
/// * `home` goes from [`HOME_NONE`] to one poller's id (or
///   [`HOME_FAILED`]) once; `key` and `shared` are written by the home
///   CPU right after, before any thread of it can read them (only threads
///   of the home CPU read them, and the registering thread does not
///   switch in between).
/// * The owning socket declares this field before its fd, so `Drop` runs
///   while the fd is still open: it deletes the epoll entry and gives the
///   slot back. No event can be lost to a reused fd number (keys are
///   slots, not fds), and a late event for a freed slot fails the
///   generation check.
pub(crate) struct Registration {
    fd: RawFd,
    home: AtomicU64,
    key: AtomicU64,
    shared: OnceLock<Arc<PollShared>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("fd", &self.fd)
            .field("home", &self.home.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration for `fd`, which the caller owns and keeps open for
    /// longer than this value (declared after it in the same struct).
    pub(crate) fn new(fd: BorrowedFd<'_>) -> Registration {
        Registration {
            fd: fd.as_raw_fd(),
            home: AtomicU64::new(HOME_NONE),
            key: AtomicU64::new(0),
            shared: OnceLock::new(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(sh) = self.shared.get() else {
            return;
        };
        // SAFETY: the socket that owns the fd declares this registration
        // before the fd, so the fd is still open here (type invariant).
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = epoll::delete(&sh.pset, fd);
        sh.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.key.load(Ordering::Relaxed));
        sh.any_released.store(true, Ordering::Release);
    }
}

/// A waiter's place: an fd number (one-shot) or a registration slot.
#[derive(Clone, Copy)]
enum Place {
    Fd(RawFd),
    Reg(u64),
}

/// Removes a waiter's entry when a wait ends, whichever way (a drop
/// guard: at shutdown the thread's stack unwinds through here).
struct Entry<'a> {
    core: &'a Core,
    place: Place,
    td: TdPtr,
    seq: u64,
}

impl Entry<'_> {
    /// Takes this wait's entry out of `waiters`, if it is there.
    fn take_from(&self, waiters: &mut Vec<Waiter>) -> Option<Waiter> {
        let i = waiters
            .iter()
            .position(|w| w.td == self.td && w.seq == self.seq)?;
        Some(waiters.swap_remove(i))
    }

    /// Removes the entry; returns the readiness its event delivered (0:
    /// none). On the one-shot path, deletes the fd's registration when no
    /// event disarmed it and nobody else waits on it here.
    fn remove(&self) -> u8 {
        let Some(p) = self.core.poller.get() else {
            return 0;
        };
        let w = match self.place {
            Place::Reg(key) => {
                let mut regs = p.regs.borrow_mut();
                let Some(slot) = regs.get_mut((key & 0xffff_ffff) as usize) else {
                    return 0;
                };
                let Some(w) = self.take_from(&mut slot.waiters) else {
                    return 0;
                };
                w
            }
            Place::Fd(fd) => {
                let mut fds = p.fds.borrow_mut();
                let Some(slot) = fds.get_mut(fd as usize) else {
                    return 0;
                };
                let Some(w) = self.take_from(&mut slot.waiters) else {
                    return 0;
                };
                p.oneshot_waiters
                    .set(p.oneshot_waiters.get().saturating_sub(1));
                if w.got == 0 && slot.pending() == 0 && slot.registered {
                    // Still armed for us alone: disarm, so nothing fires
                    // for a waiter that left (it may migrate, or close the
                    // fd).
                    // SAFETY: our own wait still borrows the fd (this runs
                    // before `wait_fd` returns or finishes unwinding).
                    let bfd = unsafe { borrowed(fd) };
                    let _ = epoll::delete(&p.shared.epoll, bfd);
                    slot.registered = false;
                }
                w
            }
        };
        self.core
            .io_waiters
            .set(self.core.io_waiters.get().saturating_sub(1));
        w.got
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The error of a wait that the runtime's shutdown ended.
fn shutting_down() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "lwkt: the runtime is shutting down",
    )
}

/// The error of a wait that an interrupt ended.
fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "lwkt: wait_fd interrupted")
}

impl Core {
    /// This CPU's poller, created on first use.
    fn poller_or_init(&self) -> io::Result<&Poller> {
        if let Some(p) = self.poller.get() {
            return Ok(p);
        }
        let p = Poller::new(self)?;
        Ok(self.poller.get_or_init(|| p))
    }

    /// Polls without blocking, if this CPU has a poller and threads wait
    /// on fds. Returns how many threads it woke.
    #[cold]
    pub(crate) fn poll_io_now(&self) -> usize {
        match self.poller.get() {
            Some(p) if self.io_waiters.get() != 0 => p.poll(self, Some(Duration::ZERO)),
            _ => 0,
        }
    }

    /// Blocks this CPU's OS thread until a wake, an fd event or
    /// `deadline`: in the poller when it has one, else on the futex. The
    /// caller has announced the park (`Mailbox::prepare_park`).
    pub(crate) fn park_os(&self, deadline: Option<Instant>) {
        match self.poller.get() {
            Some(p) => {
                p.poll(
                    self,
                    deadline.map(|d| d.saturating_duration_since(Instant::now())),
                );
            }
            None => match deadline {
                Some(d) => {
                    crate::sync::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                }
                None => crate::sync::thread::park(),
            },
        }
    }

    /// Fails a wait before it starts: shutdown, or an interrupt pending.
    fn wait_precheck(&self, td: &Thread) -> io::Result<()> {
        if td.has(tdf::CANCEL) {
            return Err(shutting_down());
        }
        // A load first: the swap (a locked instruction) only when an
        // interrupt is pending.
        if td.ctl().is_some_and(|c| {
            c.interrupt.load(Ordering::Relaxed) && c.interrupt.swap(false, Ordering::AcqRel)
        }) {
            return Err(interrupted());
        }
        Ok(())
    }

    /// The sleep of a wait whose entry (`place`, sleep number `seq`) is
    /// in place: interruptible, with `timeout`; removes the entry and
    /// returns the readiness an event delivered.
    fn sleep_io(
        &self,
        t: TdPtr,
        td: &Thread,
        place: Place,
        seq: u64,
        interest: u8,
        timeout: Option<Duration>,
    ) -> io::Result<Ready> {
        self.io_waiters.set(self.io_waiters.get() + 1);
        let entry = Entry {
            core: self,
            place,
            td: t,
            seq,
        };
        td.wmesg.set(
            if interest & ready::WRITE != 0 && interest & ready::READ == 0 {
                "fdwrite"
            } else {
                "fdread"
            },
        );
        td.set(tdf::SLEEPING | tdf::SINTR);
        td.sleep_seq.set(seq);
        if let Some(when) = timeout.and_then(|d| Instant::now().checked_add(d)) {
            self.arm_timer(t, td, when);
        }
        self.stats().io_waits.bump();
        self.switch_out(td);
        // Any timer still armed for this wait is now stale.
        td.sleep_seq.set(td.sleep_seq.get() + 1);
        let got = entry.remove();
        std::mem::forget(entry);
        if td.has(tdf::CANCEL) {
            return Err(shutting_down());
        }
        match td.wake.get() {
            Wake::Wakeup => Ok(Ready(got)),
            Wake::Timeout => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "lwkt: wait_fd timed out",
            )),
            Wake::Interrupt => Err(interrupted()),
        }
    }

    /// `wait_fd`: sleeps until `fd` is ready for `interest`, the timeout
    /// passes, or an interrupt (the sleep is interruptible). The running
    /// thread's tokens are released meanwhile, as in any sleep.
    pub(crate) fn wait_fd_cur(
        &self,
        t: TdPtr,
        td: &Thread,
        fd: BorrowedFd<'_>,
        interest: Interest,
        timeout: Option<Duration>,
    ) -> io::Result<Ready> {
        self.wait_precheck(td)?;
        assert!(
            interest.0 != 0,
            "lwkt: wait_fd needs an interest (READABLE and/or WRITABLE)"
        );
        let p = self.poller_or_init()?;
        let raw = fd.as_fd().as_raw_fd();
        let idx = usize::try_from(raw).expect("lwkt: wait_fd on a negative fd");
        let seq = td.sleep_seq.get() + 1;
        {
            let mut fds = p.fds.borrow_mut();
            if fds.len() <= idx {
                fds.resize_with(idx + 1, FdSlot::default);
            }
            let slot = &mut fds[idx];
            let want = slot.pending() | interest.0;
            p.arm(slot, fd, want)?;
            slot.waiters.push(Waiter {
                td: t,
                seq,
                interest: interest.0,
                got: 0,
            });
        }
        p.oneshot_waiters.set(p.oneshot_waiters.get() + 1);
        self.sleep_io(t, td, Place::Fd(raw), seq, interest.0, timeout)
    }

    /// The home slot key of `reg` when its home is this CPU.
    #[inline]
    fn home_key(&self, reg: &Registration) -> Option<(&Poller, u64)> {
        let p = self.poller.get()?;
        (reg.home.load(Ordering::Relaxed) == p.shared.id)
            .then(|| (p, reg.key.load(Ordering::Relaxed)))
    }

    /// Whether an operation for `interest` on `reg`'s socket may succeed
    /// now: false only when the registration's home is this CPU and its
    /// readiness cache says the last try (or a short read) emptied it and
    /// no edge came since.
    #[inline]
    pub(crate) fn reg_maybe_ready(&self, reg: &Registration, interest: Interest) -> bool {
        let Some((p, key)) = self.home_key(reg) else {
            return true;
        };
        let regs = p.regs.borrow();
        match regs.get((key & 0xffff_ffff) as usize) {
            Some(slot) => satisfies(slot.ready, interest.0),
            None => true,
        }
    }

    /// Clears `interest`'s readiness in `reg`'s cache, when its home is
    /// this CPU: the operation just said (or implied, as a short stream
    /// read does) that it would block. Any later data or room brings an
    /// edge, which this CPU fetches after this point.
    #[inline]
    pub(crate) fn reg_clear(&self, reg: &Registration, interest: Interest) {
        if let Some((p, key)) = self.home_key(reg) {
            if let Some(slot) = p.regs.borrow_mut().get_mut((key & 0xffff_ffff) as usize) {
                slot.ready &= !interest.0;
            }
        }
    }

    /// Makes this CPU the home of `reg` (first wait on it anywhere).
    /// Returns false when another CPU was first or registering failed
    /// (the caller then takes the one-shot path).
    fn reg_register(&self, p: &Poller, reg: &Registration, fd: BorrowedFd<'_>) -> bool {
        let id = p.shared.id;
        if reg
            .home
            .compare_exchange(HOME_NONE, id, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let idx = {
            let mut regs = p.regs.borrow_mut();
            match p.free.borrow_mut().pop() {
                Some(i) => i,
                None => {
                    regs.push(RegSlot::default());
                    u32::try_from(regs.len() - 1).expect("lwkt: too many registrations")
                }
            }
        };
        let key = {
            let mut regs = p.regs.borrow_mut();
            let slot = &mut regs[idx as usize];
            slot.used = true;
            slot.ready = 0;
            reg_key(idx, slot.gen)
        };
        use epoll::EventFlags as E;
        let r = epoll::add(
            &p.shared.pset,
            fd,
            epoll::EventData::new_u64(PERSIST | key),
            E::IN | E::OUT | E::RDHUP | E::ET,
        );
        if r.is_err() {
            // Not pollable this way: give the slot back; every wait takes
            // the one-shot path, which reports the error.
            let mut regs = p.regs.borrow_mut();
            regs[idx as usize].used = false;
            p.free.borrow_mut().push(idx);
            reg.home.store(HOME_FAILED, Ordering::Relaxed);
            return false;
        }
        reg.key.store(key, Ordering::Relaxed);
        let _ = reg.shared.set(p.shared.clone());
        true
    }

    /// A wait on a socket's [`Registration`] after its operation said
    /// `WouldBlock` (or its cache said it would): on the registration's
    /// home CPU, clears the cache for `interest` and sleeps until an edge
    /// event satisfies it (no syscall); elsewhere, a one-shot `wait_fd`.
    /// Ends as `wait_fd` does (timeout, interrupt, shutdown).
    pub(crate) fn wait_reg_cur(
        &self,
        t: TdPtr,
        td: &Thread,
        reg: &Registration,
        fd: BorrowedFd<'_>,
        interest: Interest,
        timeout: Option<Duration>,
    ) -> io::Result<Ready> {
        self.wait_precheck(td)?;
        let p = self.poller_or_init()?;
        let home = reg.home.load(Ordering::Relaxed);
        if home != p.shared.id && !(home == HOME_NONE && self.reg_register(p, reg, fd)) {
            return self.wait_fd_cur(t, td, fd, interest, timeout);
        }
        let key = reg.key.load(Ordering::Relaxed);
        let seq = td.sleep_seq.get() + 1;
        {
            let mut regs = p.regs.borrow_mut();
            let slot = &mut regs[(key & 0xffff_ffff) as usize];
            // The operation found nothing: what the cache knew is older.
            // An edge that came after it is still in the kernel's ready
            // list (this CPU has not polled since), so it is fetched after
            // the entry below exists and wakes it.
            slot.ready &= !interest.0;
            slot.waiters.push(Waiter {
                td: t,
                seq,
                interest: interest.0,
                got: 0,
            });
        }
        self.sleep_io(t, td, Place::Reg(key), seq, interest.0, timeout)
    }
}
