//! IPIs: messages between CPUs (`lwkt_ipiq.c`).
//!
//! Execution model: each CPU is one OS thread; another CPU's state changes
//! only when that CPU processes a message sent to it. This module owns the
//! transport and knows nothing of what the messages mean (the scheduler
//! instantiates it with its own message type).
//!
//! * **FIFOs.** Each ordered pair (source, target) has its own
//!   single-producer/single-consumer FIFO ([`ring::Ring`]), allocated by
//!   the source the first time it sends to that target and owned by the
//!   target's [`Mailbox`]. A runtime of N CPUs that only ever talks to
//!   neighbours allocates O(N) FIFOs, not N².
//! * **Attention word.** A target learns which FIFOs have work from one
//!   word per CPU: bit 0 ([`attn::KICK`]) asks it to look at the runtime's
//!   state (shutdown), bit 1 ([`attn::EXT`]) flags the queue of senders
//!   outside the runtime, and bits 2..64 flag groups of sources. With up to
//!   62 CPUs each source has its own bit; above that, `ceil(N / 62)`
//!   consecutive sources share a bit and the target looks at each FIFO of
//!   the group. Either way a message costs its sender exactly one atomic
//!   read-modify-write on the target's line.
//! * **Parking protocol** (no lost wakeup): an idle owner stores
//!   `parked = true`, re-reads `attention` with a read-modify-write, and
//!   parks only if it is still zero. A sender publishes its message, sets
//!   its attention bit (an RMW), then swaps `parked` to false and unparks
//!   the OS thread if it was true. The two RMWs on `attention` are ordered;
//!   whichever comes second reads from the first and, through its
//!   acquire/release, sees the other side's write. Checked by the loom
//!   model `tests/loom_mailbox.rs`.
//! * **Send path** ([`Outbox::send`]): when a FIFO is more than half full
//!   the sender processes its own incoming messages while it waits for
//!   room, so two CPUs flooding each other cannot deadlock; the upper half
//!   of every FIFO is headroom for messages sent by handlers.
//! * **Idle watching** ([`Inbox`]): an idle CPU polls the next slot of the
//!   FIFOs of the sources that sent to it most recently, as well as its
//!   attention word, so a reply is seen one cache-line transfer sooner. The
//!   number watched is bounded (a builder setting), whatever the CPU count.

// `pub` parts are exported to the loom models through `lwkt::__loom`; the
// crate itself uses them as crate-private.
#![allow(unreachable_pub)]
#![cfg_attr(loom, allow(dead_code))]

pub(crate) mod ring;

use std::cell::Cell;
use std::collections::VecDeque;
use std::ptr;

use crossbeam_utils::Backoff;

use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use crate::sync::thread::Thread;
use crate::sync::{lock, Mutex};
use ring::Ring;

/// Bits of a CPU's attention word.
///
/// | bit   | name | set by                       | meaning                    |
/// |-------|------|------------------------------|----------------------------|
/// | 0     | KICK | the runtime (drop)           | look at the runtime's state|
/// | 1     | EXT  | senders outside the runtime  | the external queue has work|
/// | 2..64 | SRC  | CPU senders                  | a FIFO of source group     |
/// |       |      |                              | `bit - 2` has work         |
///
/// Senders only set bits; the owner clears them all at once (`swap(0)`)
/// before looking at the queues they flag, so a message published after
/// the swap leaves its bit set for the next look.
pub mod attn {
    /// The runtime wants the CPU to look at its state (shutdown).
    pub const KICK: u64 = 1 << 0;
    /// The external queue has messages.
    pub const EXT: u64 = 1 << 1;
    /// The first source-group bit.
    pub const SRC_SHIFT: u32 = 2;
    /// How many source-group bits the word has.
    pub const GROUPS: usize = 62;
}

/// How many consecutive source CPUs share one attention bit in a runtime
/// of `ncpus` CPUs.
pub(crate) fn group_size(ncpus: usize) -> usize {
    ncpus.div_ceil(attn::GROUPS).max(1)
}

/// The part of a CPU other OS threads may touch: its attention word, its
/// parking flag and its incoming FIFOs. Lives in the runtime's shared
/// state for the life of the runtime.
///
/// `attention` and `parked` share the first cache line: a sender sets one
/// and then reads the other, so one line transfer serves both.
#[repr(C)]
pub struct Mailbox<M> {
    /// Work flags ([`attn`]). Anyone sets bits; only the owner clears.
    attention: AtomicU64,
    /// True while the owner is (about to be) parked. The owner sets it;
    /// the first sender to see it true clears it and unparks the owner.
    parked: AtomicBool,
    /// Sources per attention bit ([`group_size`]). Fixed at creation.
    group: usize,
    /// Entries per FIFO (a power of two). Fixed at creation.
    fifo_size: usize,
    /// The owner's OS thread, for unparking. Set once when the CPU starts.
    owner: std::sync::OnceLock<Thread>,
    /// The owner's poller waker (an eventfd), set once by the owner when
    /// it creates its poller (the first `wait_fd` on that CPU). From then
    /// on the owner parks in `epoll_wait` instead of the futex, and
    /// [`notify`](Self::notify) writes this instead of unparking.
    waker: std::sync::OnceLock<std::os::fd::OwnedFd>,
    /// Incoming FIFOs by source CPU, null until that source first sends.
    /// Only source `s` stores entry `s` (once); only the owner pops from
    /// the FIFOs. Freed when the mailbox is dropped.
    incoming: Box<[AtomicPtr<Ring<M>>]>,
    /// Messages from outside the runtime (plain OS threads, other
    /// runtimes). Senders push under the lock; the owner drains.
    ext: Mutex<VecDeque<M>>,
}

// SAFETY: messages move from senders to the owner, so M: Send is required
// and enough; the FIFOs and the external queue hand each message from one
// thread to another exactly once (see ring.rs and the mutex).
unsafe impl<M: Send> Sync for Mailbox<M> {}
// SAFETY: as above.
unsafe impl<M: Send> Send for Mailbox<M> {}

impl<M> Mailbox<M> {
    /// A mailbox for one CPU of a runtime of `ncpus` CPUs, with FIFOs of
    /// `fifo_size` entries (a power of two, at least 4).
    pub fn new(ncpus: usize, fifo_size: usize) -> Mailbox<M> {
        assert!(fifo_size.is_power_of_two() && fifo_size >= 4);
        Mailbox {
            attention: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            group: group_size(ncpus),
            fifo_size,
            owner: std::sync::OnceLock::new(),
            waker: std::sync::OnceLock::new(),
            incoming: (0..ncpus)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            ext: Mutex::new(VecDeque::new()),
        }
    }

    /// Records the calling OS thread as the owner (the one to unpark),
    /// unless one was recorded already.
    pub fn set_owner(&self) {
        if self.owner.get().is_none() {
            let _ = self.owner.set(crate::sync::thread::current());
        }
    }

    /// Records `t` as the owner's OS thread (by whoever started it).
    pub(crate) fn set_owner_thread(&self, t: Thread) {
        let _ = self.owner.set(t);
    }

    /// The attention bit of source CPU `src`.
    ///
    /// Every send computes this: with one source per bit (up to
    /// [`attn::GROUPS`] CPUs, the usual case) the source's number is its
    /// group, and the division (tens of cycles on the sender's path) is
    /// skipped; `src / 1 == src`, so the result is the same either way.
    #[inline]
    pub fn src_bit(&self, src: usize) -> u64 {
        let group = if self.group == 1 {
            src
        } else {
            src / self.group
        };
        1 << (attn::SRC_SHIFT as usize + group)
    }

    // -----------------------------------------------------------------
    // Sender side (any thread)
    // -----------------------------------------------------------------

    /// Flags `bits` and wakes the owner if it is parked. Returns whether
    /// the owner had to be woken (an "IPI sent"), false when it was
    /// running or polling (an "IPI avoided").
    #[inline]
    pub fn signal(&self, bits: u64) -> bool {
        self.attention.fetch_or(bits, Ordering::SeqCst);
        self.notify()
    }

    /// Wakes the owner if it is parked (second half of [`signal`]).
    ///
    /// Which wake to use (futex unpark, or a write to the poller's
    /// eventfd) is race-free: the owner publishes its waker (a Release
    /// store, [`set_waker`]) on its own OS thread while it runs, before
    /// any park that blocks in the poller, and announces that park with
    /// its SeqCst store of `parked`. A sender that wins the swap below
    /// reads from that store, so it sees the waker. A sender that read
    /// `parked` from a futex park made before the waker existed and only
    /// then sees the waker may write the eventfd instead of unparking:
    /// that park then ends only by its own timeout, after which the owner
    /// looks at its attention word (set before this call) anyway, and the
    /// stray eventfd count costs one early return from a later poll. A
    /// futex park without a timeout cannot end that way, so the owner
    /// cannot have gone on to create its poller while such a sender is
    /// still before its check: nothing is lost either way.
    ///
    /// [`signal`]: Self::signal
    /// [`set_waker`]: Self::set_waker
    #[inline]
    pub fn notify(&self) -> bool {
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.wake_owner();
            true
        } else {
            false
        }
    }

    #[cold]
    fn wake_owner(&self) {
        if let Some(fd) = self.waker.get() {
            // An eventfd write adds to its counter and never blocks short
            // of 2^64 - 1 pending wakes; the only failure would be a bad
            // fd, which the mailbox owns and never closes early.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        } else if let Some(t) = self.owner.get() {
            t.unpark();
        }
    }

    /// Publishes the owner's poller waker (an eventfd the owner's poller
    /// watches); from then on wakes write it. Owner only, while it runs
    /// (not parked). Gives the fd back if one was set already.
    pub(crate) fn set_waker(&self, fd: std::os::fd::OwnedFd) -> Result<(), std::os::fd::OwnedFd> {
        self.waker.set(fd)
    }

    /// The owner's poller waker, once set.
    pub(crate) fn waker(&self) -> Option<&std::os::fd::OwnedFd> {
        self.waker.get()
    }

    /// Queues a message from outside the runtime and signals the owner.
    /// Returns whether the owner had to be woken.
    pub fn post_external(&self, m: M) -> bool {
        lock(&self.ext).push_back(m);
        self.signal(attn::EXT)
    }

    // -----------------------------------------------------------------
    // Owner side
    // -----------------------------------------------------------------

    /// The attention word now (owner's cheap check; Relaxed: a stale zero
    /// only delays the look until the next check).
    #[inline]
    pub fn attention(&self) -> u64 {
        self.attention.load(Ordering::Relaxed)
    }

    /// Clears and returns the attention word. SeqCst: pairs with the
    /// senders' RMW, so a message whose bit this swap cleared is visible
    /// to the look that follows.
    #[inline]
    pub fn take_attention(&self) -> u64 {
        self.attention.swap(0, Ordering::SeqCst)
    }

    /// The messages queued from outside the runtime.
    pub fn take_external(&self) -> VecDeque<M> {
        std::mem::take(&mut *lock(&self.ext))
    }

    /// The FIFO from `src`, if `src` has ever sent here.
    #[inline]
    fn incoming(&self, src: usize) -> Option<&Ring<M>> {
        let p = self.incoming[src].load(Ordering::Acquire);
        // SAFETY: a non-null entry points at a FIFO allocated by the source
        // with Box::into_raw and published with Release (Outbox::ring); it
        // is freed only when this mailbox is dropped, which outlives the
        // returned borrow of `self`.
        unsafe { p.as_ref() }
    }

    /// Processes every message in the FIFOs of the source group(s) whose
    /// bits are set in `bits` (a value from [`take_attention`]), calling
    /// `f(src, msg)` for each. Owner only (the FIFOs' single consumer);
    /// `f` may re-enter through a nested drain on the same OS thread.
    ///
    /// [`take_attention`]: Self::take_attention
    pub fn drain_groups(&self, bits: u64, mut f: impl FnMut(usize, M)) {
        let mut groups = bits >> attn::SRC_SHIFT;
        let n = self.incoming.len();
        if self.group == 1 {
            // One source per bit (up to `attn::GROUPS` CPUs): the bit's
            // number is the source's.
            while groups != 0 {
                let src = groups.trailing_zeros() as usize;
                groups &= groups - 1;
                self.drain_from(src, &mut f);
            }
            return;
        }
        while groups != 0 {
            let g = groups.trailing_zeros() as usize;
            groups &= groups - 1;
            let first = g * self.group;
            for src in first..(first + self.group).min(n) {
                self.drain_from(src, &mut f);
            }
        }
    }

    /// Processes every message in the FIFO from `src`. Owner only.
    #[inline]
    pub(crate) fn drain_from(&self, src: usize, f: &mut impl FnMut(usize, M)) {
        if let Some(ring) = self.incoming(src) {
            // SAFETY: the owner's OS thread is the only consumer of its
            // incoming FIFOs (caller's contract); nested drains run
            // sequentially on this same thread, never concurrently.
            while let Some(m) = unsafe { ring.pop() } {
                f(src, m);
            }
        }
    }

    /// Whether the FIFO from `src` holds a message: one load of the slot
    /// the message would be in. Owner only.
    #[inline]
    pub(crate) fn ready_from(&self, src: usize) -> bool {
        // SAFETY: owner only (the single consumer), per the caller.
        self.incoming(src).is_some_and(|r| unsafe { r.ready() })
    }

    /// First half of parking: announces the owner is about to park.
    /// Returns false, and withdraws the announcement, when work arrived
    /// meanwhile; the owner must then not park.
    pub fn prepare_park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        // A read-modify-write, not a load: a sender's flag RMW and this one
        // are ordered in the attention word's modification order, so the
        // handshake holds by acquire/release alone, without relying on the
        // SeqCst total order of plain loads and stores (which loom does
        // not model). If this reads no flag, the sender's later RMW reads
        // from it and sees `parked`. Cold path: one more locked instruction
        // per park.
        if self.attention.fetch_or(0, Ordering::SeqCst) != 0 {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Second half of parking, after the owner's OS thread woke (from an
    /// unpark, a timeout or spuriously).
    pub fn finish_park(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Whether the owner is parked (or about to be): a snapshot.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// Drops every message still queued (runtime teardown, after every
    /// CPU stopped), handing each to `f`.
    pub(crate) fn drain_all_for_teardown(&self, mut f: impl FnMut(M)) {
        for m in self.take_external() {
            f(m);
        }
        for src in 0..self.incoming.len() {
            self.drain_from(src, &mut |_, m| f(m));
        }
    }
}

impl<M> Drop for Mailbox<M> {
    fn drop(&mut self) {
        for slot in self.incoming.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: allocated with Box::into_raw by its source
                // (Outbox::ring) and freed only here; `&mut self` means no
                // sender or consumer is left.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// What [`Outbox::send`] needs from the sending CPU while it waits for
/// room in a full FIFO.
pub trait SendWait {
    /// Processes this CPU's own incoming messages (even inside a critical
    /// section: waiting for room must not deadlock two CPUs).
    fn poll_incoming(&self);
    /// Whether the runtime is shutting down (the target may be gone: the
    /// message is then dropped instead of waiting forever).
    fn abandon(&self) -> bool;
    /// Whether this send is made from inside a message handler: the wait
    /// then only spins, using the FIFO's upper half as headroom.
    fn nested(&self) -> bool;
}

/// A CPU's sending side: its outgoing FIFOs by target (owner-only cache of
/// the pointers, which the targets' mailboxes own).
pub struct Outbox<M> {
    rings: Box<[Cell<*const Ring<M>>]>,
}

impl<M> Outbox<M> {
    /// An outbox of a runtime of `ncpus` CPUs, with no FIFO allocated yet.
    pub fn new(ncpus: usize) -> Outbox<M> {
        Outbox {
            rings: (0..ncpus).map(|_| Cell::new(ptr::null())).collect(),
        }
    }

    /// The FIFO from this CPU (`src`) to `dst`, allocated on first use.
    #[inline]
    fn ring<'m>(&self, src: usize, dst: &'m Mailbox<M>, dst_id: usize) -> &'m Ring<M> {
        let p = self.rings[dst_id].get();
        if !p.is_null() {
            // SAFETY: cached from `dst.incoming[src]`, which the mailbox
            // frees only when dropped; mailboxes live in the runtime's
            // shared state, which outlives every CPU's outbox (the caller
            // holds `&'m Mailbox`).
            return unsafe { &*p };
        }
        self.ring_slow(src, dst, dst_id)
    }

    #[cold]
    fn ring_slow<'m>(&self, src: usize, dst: &'m Mailbox<M>, dst_id: usize) -> &'m Ring<M> {
        let r = Box::into_raw(Box::new(Ring::new(dst.fifo_size)));
        // Release: the consumer's Acquire load of the entry sees the
        // initialised FIFO. Only this CPU (source `src`) stores entry `src`.
        dst.incoming[src].store(r, Ordering::Release);
        self.rings[dst_id].set(r);
        // SAFETY: just allocated; owned by `dst` from now on (see `ring`).
        unsafe { &*r }
    }

    /// Sends `m` from CPU `src` to CPU `dst_id` (`lwkt_send_ipiq`): queues
    /// it in their FIFO, sets `src`'s attention bit at the target and
    /// unparks it if needed. Returns whether the target had to be woken,
    /// or gives the message back when the runtime is shutting down and the
    /// FIFO stays full.
    ///
    /// When the FIFO is more than half full, processes this CPU's own
    /// incoming messages while it waits for room (see [`SendWait`]).
    ///
    /// Only the OS thread of CPU `src` may call this (the FIFO's single
    /// producer).
    pub fn send(
        &self,
        src: usize,
        dst: &Mailbox<M>,
        dst_id: usize,
        m: M,
        wait: &impl SendWait,
    ) -> Result<bool, M> {
        let ring = self.ring(src, dst, dst_id);
        let bit = dst.src_bit(src);
        // SAFETY: this CPU's OS thread is the only producer of its FIFOs
        // (the caller's contract).
        if unsafe { ring.producer_len() } > ring.capacity() / 2 && !wait.nested() {
            let backoff = Backoff::new();
            while ring.len() > ring.capacity() / 2 {
                if wait.abandon() {
                    break;
                }
                dst.signal(bit);
                wait.poll_incoming();
                backoff.snooze();
            }
        }
        let mut m = m;
        loop {
            // SAFETY: as above, single producer.
            match unsafe { ring.push(m) } {
                Ok(()) => return Ok(dst.signal(bit)),
                Err(back) => {
                    if wait.abandon() {
                        return Err(back);
                    }
                    m = back;
                    dst.signal(bit);
                    wait.poll_incoming();
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// A CPU's receiving side, owner-only: which sources to watch while idle.
pub(crate) struct Inbox {
    /// Sources that sent most recently, most recent first; `usize::MAX`
    /// marks an empty entry. Length: the runtime's `idle_watch` setting.
    ///
    /// Invariant: the filled entries form a prefix. Entries start empty,
    /// only [`note`](Inbox::note) writes them, and it shifts entries one
    /// place toward the end, stopping at the first empty one (which it
    /// fills) or at the source's old place; nothing empties an entry. So
    /// the scans below stop at the first empty entry.
    recent: Box<[Cell<usize>]>,
}

impl Inbox {
    pub(crate) fn new(watch: usize) -> Inbox {
        Inbox {
            recent: (0..watch).map(|_| Cell::new(usize::MAX)).collect(),
        }
    }

    /// Notes that `src` just sent to this CPU (moves it to the front).
    #[inline]
    pub(crate) fn note(&self, src: usize) {
        let r = &self.recent;
        if r.is_empty() || r[0].get() == src {
            return;
        }
        let mut carry = src;
        for slot in r.iter() {
            let old = slot.replace(carry);
            if old == src || old == usize::MAX {
                return;
            }
            carry = old;
        }
    }

    /// Whether a watched FIFO holds a message (owner only).
    #[inline]
    pub(crate) fn any_ready<M>(&self, mb: &Mailbox<M>) -> bool {
        for s in self.recent.iter() {
            let s = s.get();
            if s == usize::MAX {
                return false; // the rest are empty too (see `recent`)
            }
            if mb.ready_from(s) {
                return true;
            }
        }
        false
    }

    /// Drains the watched FIFOs (owner only).
    pub(crate) fn drain_watched<M>(&self, mb: &Mailbox<M>, mut f: impl FnMut(usize, M)) {
        for i in 0..self.recent.len() {
            let s = self.recent[i].get();
            if s == usize::MAX {
                return; // the rest are empty too (see `recent`)
            }
            mb.drain_from(s, &mut f);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_source_with_one_bit_each() {
        assert_eq!(group_size(1), 1);
        assert_eq!(group_size(62), 1);
        assert_eq!(group_size(63), 2);
        assert_eq!(group_size(256), 5);
        let mb: Mailbox<u32> = Mailbox::new(256, 8);
        assert_eq!(mb.src_bit(0), 1 << 2);
        assert_eq!(mb.src_bit(4), 1 << 2);
        assert_eq!(mb.src_bit(5), 1 << 3);
        assert_eq!(mb.src_bit(255), 1 << (2 + 51));
    }

    struct NoWait;
    impl SendWait for NoWait {
        fn poll_incoming(&self) {}
        fn abandon(&self) -> bool {
            true
        }
        fn nested(&self) -> bool {
            false
        }
    }

    #[test]
    fn send_allocates_lazily_and_drains_in_order() {
        let n = 200;
        let mbs: Vec<Mailbox<(usize, u32)>> = (0..n).map(|_| Mailbox::new(n, 8)).collect();
        let outs: Vec<Outbox<(usize, u32)>> = (0..n).map(|_| Outbox::new(n)).collect();
        for src in [0, 7, 199] {
            for i in 0..3 {
                outs[src].send(src, &mbs[5], 5, (src, i), &NoWait).unwrap();
            }
        }
        // Only the three senders' FIFOs exist.
        let allocated = mbs[5]
            .incoming
            .iter()
            .filter(|p| !p.load(Ordering::Relaxed).is_null())
            .count();
        assert_eq!(allocated, 3);
        let mut got = Vec::new();
        mbs[5].drain_groups(mbs[5].take_attention(), |s, m| got.push((s, m)));
        let from = |s: usize| {
            got.iter()
                .filter(|g| g.0 == s)
                .map(|g| g.1 .1)
                .collect::<Vec<_>>()
        };
        assert_eq!(from(0), vec![0, 1, 2]);
        assert_eq!(from(7), vec![0, 1, 2]);
        assert_eq!(from(199), vec![0, 1, 2]);
        assert_eq!(mbs[5].attention(), 0);
    }

    #[test]
    fn a_full_fifo_gives_the_message_back_when_abandoned() {
        let mb: Mailbox<u32> = Mailbox::new(2, 4);
        let out: Outbox<u32> = Outbox::new(2);
        for i in 0..4 {
            out.send(0, &mb, 1, i, &NoWait).unwrap();
        }
        assert_eq!(out.send(0, &mb, 1, 9, &NoWait), Err(9));
    }

    #[test]
    fn inbox_keeps_most_recent_sources_first() {
        let ib = Inbox::new(3);
        for s in [1, 2, 3, 2, 4] {
            ib.note(s);
        }
        let v: Vec<usize> = ib.recent.iter().map(Cell::get).collect();
        assert_eq!(v, vec![4, 2, 3]);
    }

    /// The idle scans stop at the first empty entry: the filled entries
    /// stay a prefix through any sequence of notes, and a message from the
    /// last watched source (behind an empty FIFO) is still seen and
    /// drained.
    #[test]
    fn inbox_scans_see_every_watched_source() {
        let n = 6;
        let mb: Mailbox<u32> = Mailbox::new(n, 8);
        let outs: Vec<Outbox<u32>> = (0..n).map(|_| Outbox::new(n)).collect();
        let ib = Inbox::new(4);
        assert!(!ib.any_ready(&mb));
        for (k, s) in [3usize, 1, 3, 2, 1, 4, 5, 2, 3].into_iter().enumerate() {
            ib.note(s);
            let v: Vec<usize> = ib.recent.iter().map(Cell::get).collect();
            let filled = v.iter().take_while(|&&x| x != usize::MAX).count();
            assert!(v[filled..].iter().all(|&x| x == usize::MAX), "{v:?}");
            // A message from the least recent watched source only.
            let last = v[filled - 1];
            outs[last].send(last, &mb, 0, k as u32, &NoWait).unwrap();
            assert!(ib.any_ready(&mb), "after note({s}): {v:?}");
            let mut got = Vec::new();
            ib.drain_watched(&mb, |src, m| got.push((src, m)));
            assert_eq!(got, vec![(last, k as u32)]);
            assert!(!ib.any_ready(&mb));
            mb.take_attention();
        }
    }
}
