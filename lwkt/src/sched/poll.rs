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
//! * **One-shot, level-triggered registrations.** Arming an fd is one
//!   `epoll_ctl` (MOD, or ADD the first time on this CPU) with
//!   `EPOLLONESHOT` and the union of its waiters' interests; an event
//!   disarms it, and waiters it did not satisfy re-arm it. So an fd is
//!   armed on a CPU only while a thread of that CPU waits on it: a thread
//!   that stops waiting (woken, timed out, interrupted, cancelled) removes
//!   its own entry, and deletes the registration when nobody else waits,
//!   unless an event just disarmed it. A thread that migrates afterwards
//!   leaves at most a disarmed entry behind, which never fires and goes
//!   when the fd closes.
//! * **Waiters** are named by thread pointer and sleep sequence number, as
//!   timer entries are; an entry lives only while its thread is inside
//!   `wait_fd` (a drop guard removes it, also when the stack unwinds at
//!   shutdown), so the pointer is always to a live thread of this CPU.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
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

/// A CPU's knowledge of one fd number.
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

/// See the module header. Lives in [`Core::poller`] from the CPU's first
/// `wait_fd` until the CPU stops.
pub(crate) struct Poller {
    epoll: OwnedFd,
    /// By fd number.
    fds: RefCell<Vec<FdSlot>>,
    /// `epoll_wait`'s buffer.
    events: RefCell<Vec<epoll::Event>>,
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
        // Published last, once nothing can fail: from now on wakes write
        // the eventfd, so this CPU must park in this poller. Only this CPU
        // creates its poller, once (a CPU that failed to keep one never
        // got here), so no waker was set before.
        if core.remote().mailbox.set_waker(efd).is_err() {
            panic!("lwkt: CPU {} created a second poller", core.id);
        }
        Ok(Poller {
            epoll: ep,
            fds: RefCell::new(Vec::new()),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
        })
    }

    /// Arms `fd` in this CPU's epoll set for `interest` (one-shot).
    fn arm(&self, slot: &mut FdSlot, fd: BorrowedFd<'_>, interest: u8) -> io::Result<()> {
        let data = epoll::EventData::new_u64(fd.as_raw_fd() as u64);
        let flags = flags_of(interest);
        if slot.registered {
            match epoll::modify(&self.epoll, fd, data, flags) {
                Err(Errno::NOENT) => epoll::add(&self.epoll, fd, data, flags)?,
                r => r?,
            }
        } else {
            match epoll::add(&self.epoll, fd, data, flags) {
                Err(Errno::EXIST) => epoll::modify(&self.epoll, fd, data, flags)?,
                r => r?,
            }
        }
        slot.registered = true;
        Ok(())
    }

    /// Fetches ready events and wakes their threads; blocks up to
    /// `timeout` (None: until an event or a wake). Returns how many
    /// threads it woke.
    fn poll(&self, core: &Core, timeout: Option<Duration>) -> usize {
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos().into(),
        });
        let mut evs = self.events.borrow_mut();
        evs.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut *evs),
            ts.as_ref(),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => panic!("lwkt: epoll_wait failed on CPU {}: {e}", core.id),
        }
        core.stats().io_polls.bump();
        let mut woke = 0;
        for ev in evs.iter() {
            let (flags, data) = (ev.flags, ev.data.u64());
            if data == WAKER {
                if let Some(w) = core.remote().mailbox.waker() {
                    let mut b = [0u8; 8];
                    let _ = rustix::io::read(w, &mut b);
                }
                continue;
            }
            woke += self.fire(core, data as RawFd, ready_of(flags));
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
            if w.got != 0 || !satisfies(r, w.interest) {
                continue;
            }
            w.got = r;
            // SAFETY: an entry exists only while its thread is inside
            // `wait_fd` on this CPU (module header), so it is alive and
            // owned here.
            let td = unsafe { w.td.td() };
            if td.has(tdf::SLEEPING) && td.sleep_seq.get() == w.seq {
                core.wake(w.td, Wake::Wakeup);
                woke += 1;
            }
        }
        let left = slot.pending();
        if left != 0 {
            // SAFETY: a waiter still waits, so the fd is open (see
            // `borrowed`).
            let bfd = unsafe { borrowed(fd) };
            if self.arm(slot, bfd, left).is_err() {
                // Cannot re-arm (the fd went bad under its waiters): wake
                // them all; their next try reports the fd's error.
                for w in slot.waiters.iter_mut().filter(|w| w.got == 0) {
                    w.got = ready::FIRED | ready::ERROR;
                    // SAFETY: as above.
                    let td = unsafe { w.td.td() };
                    if td.has(tdf::SLEEPING) && td.sleep_seq.get() == w.seq {
                        core.wake(w.td, Wake::Wakeup);
                        woke += 1;
                    }
                }
            }
        }
        woke
    }
}

/// Removes a waiter's entry when `wait_fd` ends, whichever way (a drop
/// guard: at shutdown the thread's stack unwinds through here).
struct Entry<'a> {
    core: &'a Core,
    fd: RawFd,
    td: TdPtr,
    seq: u64,
}

impl Entry<'_> {
    /// Removes the entry; returns the readiness its event delivered (0:
    /// none). Deletes the fd's registration when no event disarmed it and
    /// nobody else waits on it here.
    fn remove(&self) -> u8 {
        let Some(p) = self.core.poller.get() else {
            return 0;
        };
        let mut fds = p.fds.borrow_mut();
        let Some(slot) = fds.get_mut(self.fd as usize) else {
            return 0;
        };
        let Some(i) = slot
            .waiters
            .iter()
            .position(|w| w.td == self.td && w.seq == self.seq)
        else {
            return 0;
        };
        let w = slot.waiters.swap_remove(i);
        self.core
            .io_waiters
            .set(self.core.io_waiters.get().saturating_sub(1));
        if w.got == 0 && slot.pending() == 0 && slot.registered {
            // Still armed for us alone: disarm, so nothing fires for a
            // waiter that left (it may migrate, or close the fd).
            // SAFETY: our own wait still borrows the fd (this runs before
            // `wait_fd` returns or finishes unwinding).
            let bfd = unsafe { borrowed(self.fd) };
            let _ = epoll::delete(&p.epoll, bfd);
            slot.registered = false;
        }
        w.got
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.remove();
    }
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
        if td.has(tdf::CANCEL) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "lwkt: the runtime is shutting down",
            ));
        }
        // A load first: the swap (a locked instruction) only when an
        // interrupt is pending.
        if td.ctl().is_some_and(|c| {
            c.interrupt.load(Ordering::Relaxed) && c.interrupt.swap(false, Ordering::AcqRel)
        }) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "lwkt: wait_fd interrupted",
            ));
        }
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
        self.io_waiters.set(self.io_waiters.get() + 1);
        let entry = Entry {
            core: self,
            fd: raw,
            td: t,
            seq,
        };
        td.wmesg
            .set(if interest.is_writable() && !interest.is_readable() {
                "fdwrite"
            } else {
                "fdread"
            });
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
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "lwkt: the runtime is shutting down",
            ));
        }
        match td.wake.get() {
            Wake::Wakeup => Ok(Ready(got)),
            Wake::Timeout => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "lwkt: wait_fd timed out",
            )),
            Wake::Interrupt => Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "lwkt: wait_fd interrupted",
            )),
        }
    }
}
