//! The lower half of serializing tokens (`lwkt_token.c`): the token state
//! the scheduler handles ([`RawToken`]) and a thread's held-token array
//! ([`TokRefs`], DragonFly's `td_toks_array` of `lwkt_tokref`s), with the
//! passes the scheduler runs on it: release everything at switch-out
//! (`lwkt_relalltokens`) and acquire everything before the thread runs
//! again (`lwkt_getalltokens`).
//!
//! This layer knows nothing of threads, CPUs or guards; the scheduler
//! embeds a [`TokRefs`] in each thread and passes in what the passes need
//! (the thread's identity, the CPU's [`Policy`], its counters).
//!
//! # Where token state lives, and why it never dangles
//!
//! A `Token<T>` keeps its data inline but its [`RawToken`] (the word and
//! its counters) in a separate heap allocation made on first use, reached
//! through a pointer. Held-token arrays point at the `RawToken`, never at
//! the `Token`. A `Token` can therefore be moved freely, and when one is
//! dropped while some thread still refers to its state (a guard leaked
//! with `mem::forget`), [`RawToken::retire`] leaks the state instead of
//! freeing it: no path leads to a write into freed memory.
//!
//! A reference is always visible in the state it points at, in one of two
//! places:
//! * **held**: the word counts it (exclusive holder or shared count; a
//!   recursive reference rides on its thread's exclusive hold);
//! * **pending** (released at switch-out, or waiting to be acquired):
//!   `RawToken::pending` counts it.
//!
//! Transitions keep it visible throughout: a release first counts the
//! reference pending, then releases the word (Release); a re-acquisition
//! first takes the word (Acquire), then uncounts it. `retire` seals the
//! word (only possible when nothing holds it; Acquire) and then reads
//! `pending`: a sealed word cannot be taken, so a zero seen there stays
//! zero. Checked by the loom model `tests/loom_token.rs`.
//!
//! # Re-acquisition protocol (per candidate thread, in run-queue order)
//!
//! 1. If the token that blocked the thread last time still looks busy (a
//!    plain load), skip the thread: no atomic read-modify-write, no tokens
//!    taken only to be given back. This answers both costs the 2010 thread
//!    names (N-1 wasted acquisitions; the scheduler hammering the same
//!    held token for every waiter on every pass).
//! 2. Otherwise acquire every pending reference, the blocking one first,
//!    then in held order; after `spin_loops` failed passes of this thread,
//!    in address order instead, so contention cannot livelock.
//! 3. On a failure release what this pass took (counted as wasted),
//!    remember the failing token, bump its collision count; the caller
//!    shows its name as the thread's wait message and tries the next
//!    runnable thread.
//!
//! [`TokenReacquire::Seed`] selects the 2010 seed's protocol instead, for
//! comparison ([`TokRefs::acquire_all_seed`]): no look first, every
//! pending reference tried in held order, and address order for every
//! thread once the CPU's scan has failed `spin_loops` times in a row.

// `pub` parts are exported to the loom models through `lwkt::__loom`; the
// crate itself uses them as crate-private.
#![allow(unreachable_pub)]
#![cfg_attr(loom, allow(dead_code))]

pub(crate) mod word;

use std::cell::Cell;
use std::ptr;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use word::{Try, Word};

/// Most token references one thread may hold at once (`LWKT_MAXTOKENS`).
pub const MAX_TOKENS: usize = 32;

/// The part of a token the scheduler handles (`struct lwkt_token` minus
/// the data): heap-allocated on first use and never moved, so held-token
/// arrays can point at it.
#[repr(align(64))]
pub struct RawToken {
    /// The token word (`t_count` with the holder folded in).
    pub word: Word,
    /// References that point here but are not counted in `word`: released
    /// at a switch-out, or waiting for their first acquisition.
    pending: AtomicUsize,
    /// Failed acquisitions (`t_collisions`).
    collisions: AtomicU64,
    /// The token's name (`t_desc`), shown as a waiter's wait message.
    pub name: &'static str,
}

impl RawToken {
    /// A fresh state for a token named `name`, leaked into a raw pointer
    /// (the owning `Token` frees it through [`retire`](Self::retire)).
    pub fn alloc(name: &'static str) -> *mut RawToken {
        Box::into_raw(Box::new(RawToken {
            word: Word::new(),
            pending: AtomicUsize::new(0),
            collisions: AtomicU64::new(0),
            name,
        }))
    }

    /// Counts one failed acquisition.
    #[inline]
    pub fn collide(&self) {
        self.collisions.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed acquisitions so far.
    pub fn collisions(&self) -> u64 {
        self.collisions.load(Ordering::Relaxed)
    }

    /// References waiting in some thread's array (a snapshot).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a reference as pending (before its hold is released).
    #[inline]
    pub fn add_pending(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a pending reference (after it was acquired, or dropped).
    #[inline]
    pub fn sub_pending(&self) {
        let prev = self.pending.fetch_sub(1, Ordering::Release);
        debug_assert!(prev > 0, "token '{}': pending count underflow", self.name);
    }

    /// The owning token is going away: frees the state when no reference
    /// points at it any more and returns true; otherwise (a guard was
    /// leaked and its thread still refers to it) leaves it allocated,
    /// unsealed and usable by that thread, and returns false.
    ///
    /// # Safety
    /// `p` came from [`alloc`](Self::alloc), and no new reference can be
    /// made through the owning token any more (the caller has it by value
    /// or by `&mut`). After a `true` return `p` is dangling.
    pub unsafe fn retire(p: *mut RawToken) -> bool {
        // SAFETY: `p` is live (from alloc, not yet freed: the caller's
        // contract), and only this call may free it.
        if !unsafe { &*p }.try_retire() {
            return false;
        }
        // SAFETY: sealed with no pending reference: no reference exists
        // (module header), none can be made (caller's contract), so this
        // is the last access; `p` came from Box::into_raw in alloc.
        drop(unsafe { Box::from_raw(p) });
        true
    }

    /// The decision of [`retire`](Self::retire): seals the word and
    /// returns true when no reference points here (the state may then be
    /// freed: it stays sealed, so nothing can take it); otherwise leaves
    /// it as it was and returns false.
    pub fn try_retire(&self) -> bool {
        let Some(prev) = self.word.try_seal() else {
            return false; // held right now by a leaked reference
        };
        if self.pending.load(Ordering::Acquire) != 0 {
            self.word.unseal(prev);
            return false; // a leaked reference waits to re-acquire it
        }
        true
    }
}

/// How a reference holds its token.
pub mod mode {
    /// Primary exclusive hold: the word counts it.
    pub const EXCL: u8 = 1;
    /// Primary shared hold: the word counts it.
    pub const SHARED: u8 = 2;
    /// Nested exclusive use under the thread's own exclusive hold.
    pub const REC_EXCL: u8 = 3;
    /// Nested shared use under the thread's own exclusive hold.
    pub const REC_SHARED: u8 = 4;
    /// Flag on a primary: not held right now (released at switch-out, or
    /// still to be acquired); counted in the token's `pending`.
    pub const PENDING: u8 = 0x80;
}

/// One token reference held by a thread (`struct lwkt_tokref`).
#[derive(Clone, Copy)]
pub(crate) struct TokRef {
    /// The token's state; valid while this reference is live (see the
    /// module header).
    tok: *const RawToken,
    /// See [`mode`].
    mode: u8,
}

const EMPTY: TokRef = TokRef {
    tok: ptr::null(),
    mode: 0,
};

/// How the scheduler re-acquires the tokens of a thread it is about to
/// run (`lwkt_getalltokens`); set with `Builder::token_reacquire`.
///
/// Both keep every token guarantee (exclusion while running, recursion,
/// holds across sleeps and yields, no deadlock); they differ in what a
/// contended pass costs. [`Seed`](Self::Seed) exists to measure that
/// difference (`lwkt-bench token_study`); use the default otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenReacquire {
    /// This crate's protocol (the default): the token that blocked the
    /// thread last is looked at first with a plain load and, while it is
    /// busy, the thread is skipped without any atomic read-modify-write;
    /// otherwise that token is tried first, then the rest in held order;
    /// a thread whose own passes failed `token_spin_loops` times in a row
    /// takes its tokens in address order.
    #[default]
    Lwkt,
    /// The 2010 seed's protocol, as a comparison mode: every pass tries
    /// every pending token of the thread in the order it took them,
    /// releasing those it got when one fails (the "N-1 wasted"
    /// acquisitions), with no look first (every waiting thread's tokens
    /// are tried again on every scan); once the CPU's scan of its run
    /// queue has found nothing runnable `token_spin_loops` times in a row,
    /// every thread's tokens are taken in address order (the seed's
    /// `_lwkt_getalltokens_sorted`). The later seed's exponential-backoff
    /// spin on the last token inside the scheduler is not part of it (the
    /// 2010 thread's scheduler does not spin there, and neither does
    /// [`Lwkt`](Self::Lwkt)).
    Seed,
}

/// What the scheduler's token passes need from the CPU running them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Which re-acquisition protocol the scheduler runs.
    pub(crate) reacquire: TokenReacquire,
    /// Cap of a contended exclusive request's exponential backoff
    /// (`token_backoff_max`).
    pub(crate) backoff_max: u32,
    /// Failed passes before address order (`lwkt_spin_loops`).
    pub(crate) spin_loops: u32,
    /// This CPU and the CPU count, for the TSC windows.
    pub(crate) cpu: u32,
    pub(crate) ncpus: u32,
    /// Window width in cycle-counter bits (`token_window_shift`).
    pub(crate) window_shift: u32,
}

impl Policy {
    /// Whether this CPU is in its window (the seed's `token_window_shift`):
    /// windows rotate among CPUs, and inside its window a CPU's shared
    /// requests ignore EXCLREQ, so shared holders on every CPU progress.
    #[inline]
    fn in_window(&self) -> bool {
        (tsc() >> self.window_shift) % u64::from(self.ncpus) == u64::from(self.cpu)
    }
}

/// Reads a cheap cycle counter for the seed's TSC windowing.
#[inline]
fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static T0: OnceLock<Instant> = OnceLock::new();
        T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Counters the passes bump (the CPU's, owner-written).
pub(crate) trait TokenStats {
    /// A scheduler pass tried to acquire a thread's tokens.
    fn attempt(&self);
    /// The pass failed.
    fn failure(&self);
    /// A token taken by a failed pass was given back.
    fn wasted(&self);
    /// A pass ran in address order.
    fn ordered(&self);
    /// A thread was skipped because its blocking token still looked busy.
    fn skip(&self);
    /// A pass made `checks` token-word checks (plain-load looks and
    /// acquisition tries) and `rmws` atomic read-modify-writes on token
    /// words (tries and the releases of a failed pass).
    fn words(&self, checks: u32, rmws: u32);
}

/// The outcome of a thread-side acquisition attempt.
pub(crate) enum Got {
    /// Held now, in this slot.
    Held(u8),
    /// Busy, and the caller did not want to wait.
    Busy,
    /// Busy; recorded pending in this slot: the thread must switch out and
    /// will run again only once the scheduler acquired it.
    MustBlock(u8),
}

/// A thread's held-token array (`td_toks_array`). Owner-only: touched by
/// the thread while it runs and by its CPU's scheduler while it does not.
/// `repr(C)`: the mask every switch tests comes first (see `Thread`).
#[repr(C)]
pub(crate) struct TokRefs {
    /// Bit `i` set when `refs[i]` is live.
    used: Cell<u32>,
    /// Consecutive failed passes (address order from `spin_loops` on).
    fails: Cell<u32>,
    /// The token whose acquisition failed last, or null.
    blocked: Cell<*const RawToken>,
    /// The references themselves; slot `i` means something only while bit
    /// `i` of `used` is set.
    refs: [Cell<TokRef>; MAX_TOKENS],
}

impl TokRefs {
    pub(crate) fn new() -> TokRefs {
        TokRefs {
            refs: std::array::from_fn(|_| Cell::new(EMPTY)),
            used: Cell::new(0),
            blocked: Cell::new(ptr::null()),
            fails: Cell::new(0),
        }
    }

    /// Whether no reference is live.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.used.get() == 0
    }

    /// How many references are live.
    pub(crate) fn count(&self) -> usize {
        self.used.get().count_ones() as usize
    }

    /// The token that blocked the thread last, if any (for `ps`).
    pub(crate) fn blocked_name(&self) -> Option<&'static str> {
        let b = self.blocked.get();
        // SAFETY: `blocked` is only ever set to a live reference's token,
        // and cleared before that reference goes (`release_slot`).
        (!b.is_null()).then(|| unsafe { (*b).name })
    }

    /// How many live references point at `raw`.
    pub(crate) fn count_of(&self, raw: *const RawToken) -> usize {
        self.iter().filter(|(_, r)| ptr::eq(r.tok, raw)).count()
    }

    fn iter(&self) -> impl Iterator<Item = (usize, TokRef)> + '_ {
        let mut used = self.used.get();
        std::iter::from_fn(move || {
            if used == 0 {
                return None;
            }
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            Some((i, self.refs[i].get()))
        })
    }

    /// Number of primary references (what the EXCLREQ rule counts:
    /// priority for exclusive requesters is only safe against shared
    /// requesters that hold nothing else).
    fn primaries(&self) -> usize {
        self.iter()
            .filter(|(_, r)| matches!(r.mode & !mode::PENDING, mode::EXCL | mode::SHARED))
            .count()
    }

    fn holds_shared(&self, raw: *const RawToken) -> bool {
        self.iter()
            .any(|(_, r)| ptr::eq(r.tok, raw) && r.mode & !mode::PENDING == mode::SHARED)
    }

    #[inline]
    fn fill(&self, used: u32, raw: *const RawToken, m: u8) -> u8 {
        let slot = (!used).trailing_zeros() as usize;
        // A loop that takes the same token again finds its slot already
        // filled: skip the store (a locked instruction waits for pending
        // stores, so fewer stores make the release cheaper). Measured:
        // storing always saves 2 instructions but costs 0.12 ns per
        // uncontended get + drop (4.14 vs 4.01 ns, AMD EPYC).
        let old = self.refs[slot].get();
        if !ptr::eq(old.tok, raw) || old.mode != m {
            self.refs[slot].set(TokRef { tok: raw, mode: m });
        }
        self.used.set(used | (1 << slot));
        slot as u8
    }

    // -----------------------------------------------------------------
    // Thread side: acquisition and release by guards
    // -----------------------------------------------------------------

    /// Fast path of an acquisition: a free token (exclusive: not even a
    /// stale request bit; shared: no holder or request in the way) taken
    /// with one compare-and-swap. `None`: use [`acquire`](Self::acquire).
    #[inline]
    pub(crate) fn acquire_fast(&self, raw: &RawToken, exclusive: bool, me: usize) -> Option<u8> {
        let used = self.used.get();
        if used == u32::MAX {
            return None; // the full path reports it
        }
        let got = if exclusive {
            raw.word.try_free_exclusive(me)
        } else {
            raw.word.try_shared_fast()
        };
        got.then(|| self.fill(used, raw, if exclusive { mode::EXCL } else { mode::SHARED }))
    }

    /// The full acquisition: recursion, the seed's spin, and (when `block`)
    /// recording a pending reference the scheduler will acquire.
    ///
    /// # Panics
    /// When the thread would hold more than [`MAX_TOKENS`] references, and
    /// when a blocking exclusive request meets the thread's own shared hold
    /// (it would wait for itself forever: the seed's s/x livelock).
    #[track_caller]
    pub(crate) fn acquire(
        &self,
        raw: &RawToken,
        exclusive: bool,
        block: bool,
        me: usize,
        policy: &Policy,
    ) -> Got {
        let used = self.used.get();
        if used == u32::MAX {
            panic!(
                "lwkt: thread would hold more than {MAX_TOKENS} token references \
                 (LWKT_MAXTOKENS) when taking '{}'",
                raw.name
            );
        }
        let tried = if exclusive {
            // The request bit is set only when we are about to block (and
            // then only on a token held shared: see `word`).
            raw.word.try_exclusive(me, false)
        } else {
            let honor = block && self.primaries() == 0 && !policy.in_window();
            raw.word.try_shared(me, honor)
        };
        let (primary, nested) = if exclusive {
            (mode::EXCL, mode::REC_EXCL)
        } else {
            (mode::SHARED, mode::REC_SHARED)
        };
        match tried {
            Try::Acquired => Got::Held(self.fill(used, raw, primary)),
            Try::Recursive => Got::Held(self.fill(used, raw, nested)),
            Try::Busy => {
                if exclusive && self.holds_shared(raw) {
                    if !block {
                        // lwkt_trytoken simply fails here.
                        raw.collide();
                        return Got::Busy;
                    }
                    panic!(
                        "lwkt: token '{}': exclusive acquisition while this thread holds it \
                         shared would livelock (it would wait for itself); take it exclusively \
                         first",
                        raw.name
                    );
                }
                if !block {
                    raw.collide();
                    return Got::Busy;
                }
                if spin(raw, exclusive, me, self.primaries(), policy) {
                    return Got::Held(self.fill(used, raw, primary));
                }
                raw.collide();
                raw.add_pending();
                let slot = self.fill(used, raw, primary | mode::PENDING);
                self.blocked.set(raw);
                Got::MustBlock(slot)
            }
        }
    }

    /// A guard is dropped: release its reference (any order). When the
    /// primary exclusive reference goes while nested ones remain, the
    /// token stays the thread's: exclusively if a nested exclusive one
    /// remains, else downgraded to shared holds, one per remaining
    /// reference.
    ///
    /// # Panics
    /// If the slot is not live (a guard released twice).
    pub(crate) fn release_slot(&self, slot: u8) {
        let slot = slot as usize;
        let used = self.used.get();
        assert!(used & (1 << slot) != 0, "lwkt: token guard released twice");
        let r = self.refs[slot].get();
        self.used.set(used & !(1 << slot));
        // SAFETY: the reference was live until the line above, so its token
        // state is allocated (module header); this is its last use here.
        let tok = unsafe { &*r.tok };
        if ptr::eq(self.blocked.get(), r.tok) && self.count_of(r.tok) == 0 {
            self.blocked.set(ptr::null());
        }
        if r.mode & mode::PENDING != 0 {
            tok.sub_pending(); // not held (only while shutdown unwinds)
            return;
        }
        match r.mode {
            mode::SHARED => tok.word.release_shared(),
            mode::EXCL => {
                let mut nested_excl = None;
                let mut nested_shared = 0u32;
                for (i, o) in self.iter() {
                    if ptr::eq(o.tok, r.tok) {
                        match o.mode {
                            mode::REC_EXCL => {
                                nested_excl.get_or_insert(i);
                            }
                            mode::REC_SHARED => nested_shared |= 1 << i,
                            _ => {}
                        }
                    }
                }
                if let Some(i) = nested_excl {
                    self.refs[i].set(TokRef {
                        tok: r.tok,
                        mode: mode::EXCL,
                    });
                } else if nested_shared != 0 {
                    tok.word.downgrade(nested_shared.count_ones() as usize);
                    let mut s = nested_shared;
                    while s != 0 {
                        let i = s.trailing_zeros() as usize;
                        s &= s - 1;
                        self.refs[i].set(TokRef {
                            tok: r.tok,
                            mode: mode::SHARED,
                        });
                    }
                } else {
                    tok.word.release_exclusive();
                }
            }
            _ => {} // nested: the word does not count it
        }
    }

    /// Releases the thread's only reference when it is a primary held now
    /// (the common guard drop): one atomic, no scan. Returns false when
    /// the general [`release_slot`](Self::release_slot) is needed.
    #[inline]
    pub(crate) fn release_only(&self, slot: u8) -> bool {
        if self.used.get() != 1 << slot {
            return false;
        }
        let r = self.refs[slot as usize].get();
        // SAFETY: the reference is live (its bit is set), so its token
        // state is allocated (module header).
        let tok = unsafe { &*r.tok };
        match r.mode {
            mode::EXCL => tok.word.release_exclusive(),
            mode::SHARED => tok.word.release_shared(),
            _ => return false,
        }
        self.used.set(0);
        true
    }

    /// Drops every reference (a thread that exits or is cancelled, with
    /// guards forgotten or left by unwinding). Nested references go first
    /// so none outlives its primary.
    pub(crate) fn drop_all(&self) {
        while self.used.get() != 0 {
            let pick = self
                .iter()
                .find(|(_, r)| matches!(r.mode & !mode::PENDING, mode::REC_EXCL | mode::REC_SHARED))
                .map_or(self.used.get().trailing_zeros() as usize, |(i, _)| i);
            self.release_slot(pick as u8);
        }
        self.blocked.set(ptr::null());
        self.fails.set(0);
    }

    // -----------------------------------------------------------------
    // Scheduler side
    // -----------------------------------------------------------------

    /// Releases every primary hold (`lwkt_relalltokens`), marking them
    /// pending for re-acquisition. Called as the thread switches out.
    pub(crate) fn release_all(&self) {
        for (i, mut r) in self.iter() {
            if r.mode & mode::PENDING != 0 {
                continue;
            }
            // SAFETY: live reference, so its token state is allocated.
            let tok = unsafe { &*r.tok };
            match r.mode {
                mode::EXCL => {
                    tok.add_pending();
                    tok.word.release_exclusive();
                }
                mode::SHARED => {
                    tok.add_pending();
                    tok.word.release_shared();
                }
                _ => continue, // nested: rides on the primary
            }
            r.mode |= mode::PENDING;
            self.refs[i].set(r);
        }
    }

    /// Acquires every pending reference or none (`lwkt_getalltokens`).
    /// `me` is the thread's identity. On failure the blocking token's name
    /// is returned, to show as the thread's wait message.
    pub(crate) fn acquire_all(
        &self,
        me: usize,
        policy: &Policy,
        st: &impl TokenStats,
    ) -> Result<(), &'static str> {
        // Step 1: a cheap look at the token that blocked us last time.
        let blocked = self.blocked.get();
        if !blocked.is_null() {
            // SAFETY: `blocked` points at a live reference's token.
            let b = unsafe { &*blocked };
            let excl = self
                .iter()
                .any(|(_, r)| ptr::eq(r.tok, blocked) && r.mode & !mode::PENDING == mode::EXCL);
            if !b.word.looks_free(excl) {
                st.skip();
                st.words(1, 0);
                return Err(b.name);
            }
        }
        st.attempt();
        // Step 2: the pending references, in acquisition order.
        let mut order = [0u8; MAX_TOKENS];
        let order = self.pending_in_held_order(&mut order);
        if self.fails.get() >= policy.spin_loops {
            st.ordered();
            order.sort_unstable_by_key(|&i| self.refs[i as usize].get().tok as usize);
        } else if let Some(pos) = order
            .iter()
            .position(|&i| ptr::eq(self.refs[i as usize].get().tok, blocked))
        {
            // The blocking token first: if it fails, nothing was wasted.
            order[..=pos].rotate_right(1);
        }
        self.take_in_order(order, me, policy, st, u32::from(!blocked.is_null()))
    }

    /// The 2010 seed's `lwkt_getalltokens` ([`TokenReacquire::Seed`]):
    /// every pending reference tried in held order, or in address order
    /// when `sorted` (the CPU's scan failed `spin_loops` times in a row:
    /// `_lwkt_getalltokens_sorted`); no look at the last blocking token
    /// first. All or none, like [`acquire_all`](Self::acquire_all).
    #[doc(alias = "lwkt_getalltokens")]
    #[doc(alias = "_lwkt_getalltokens_sorted")]
    pub(crate) fn acquire_all_seed(
        &self,
        me: usize,
        policy: &Policy,
        sorted: bool,
        st: &impl TokenStats,
    ) -> Result<(), &'static str> {
        st.attempt();
        let mut order = [0u8; MAX_TOKENS];
        let order = self.pending_in_held_order(&mut order);
        if sorted {
            st.ordered();
            // Stable, as the seed's insertion sort: references to one
            // token keep their held order.
            order.sort_by_key(|&i| self.refs[i as usize].get().tok as usize);
        }
        self.take_in_order(order, me, policy, st, 0)
    }

    /// The slots of the pending references, in held order (slots fill
    /// lowest first, so slot order is the order they were taken in while
    /// guards drop in reverse).
    fn pending_in_held_order<'a>(&self, buf: &'a mut [u8; MAX_TOKENS]) -> &'a mut [u8] {
        let mut n = 0;
        for (i, r) in self.iter() {
            if r.mode & mode::PENDING != 0 {
                buf[n] = i as u8;
                n += 1;
            }
        }
        &mut buf[..n]
    }

    /// Tries the references of `order` in turn; on the first failure gives
    /// back what it took (each counted wasted) and returns the failing
    /// token's name; on success marks them all held. `checks`: token-word
    /// looks already made by the caller's pass (counted with this pass's
    /// tries).
    #[inline]
    fn take_in_order(
        &self,
        order: &[u8],
        me: usize,
        policy: &Policy,
        st: &impl TokenStats,
        checks: u32,
    ) -> Result<(), &'static str> {
        let honor = self.primaries() == 1 && !policy.in_window();
        let mut rmws = 0u32;
        for k in 0..order.len() {
            let r = self.refs[order[k] as usize].get();
            // SAFETY: live reference, so its token state is allocated.
            let tok = unsafe { &*r.tok };
            let got = match r.mode & !mode::PENDING {
                mode::EXCL => tok.word.try_exclusive_counted(me, true, &mut rmws),
                _ => tok.word.try_shared_counted(me, honor, &mut rmws),
            };
            if got != Try::Acquired {
                debug_assert_ne!(got, Try::Recursive, "a switched-out thread owns nothing");
                // Step 3: give back what this pass took (still counted
                // pending: only a complete pass uncounts).
                for &j in &order[..k] {
                    let rj = self.refs[j as usize].get();
                    // SAFETY: live reference.
                    let tj = unsafe { &*rj.tok };
                    match rj.mode & !mode::PENDING {
                        mode::EXCL => tj.word.release_exclusive(),
                        _ => tj.word.release_shared(),
                    }
                    st.wasted();
                }
                st.words(checks + k as u32 + 1, rmws + k as u32);
                tok.collide();
                self.blocked.set(r.tok);
                self.fails.set(self.fails.get().saturating_add(1));
                st.failure();
                return Err(tok.name);
            }
        }
        st.words(checks + order.len() as u32, rmws);
        for &i in order {
            let mut r = self.refs[i as usize].get();
            r.mode &= !mode::PENDING;
            self.refs[i as usize].set(r);
            // SAFETY: live reference (held again now).
            unsafe { &*r.tok }.sub_pending();
        }
        self.blocked.set(ptr::null());
        self.fails.set(0);
        Ok(())
    }

    /// Whether every reference is held right now (none pending).
    pub(crate) fn all_held(&self) -> bool {
        self.iter().all(|(_, r)| r.mode & mode::PENDING == 0)
    }
}

/// The seed's contended-acquisition spin (`_lwkt_trytokref_spin`):
/// exponential backoff for exclusive requests, TSC windowing for shared
/// ones. Returns whether the token was acquired.
fn spin(raw: &RawToken, exclusive: bool, me: usize, primaries: usize, policy: &Policy) -> bool {
    if exclusive {
        let max = policy.backoff_max;
        let mut exp: u32 = 0;
        while exp < 6 + max {
            exp = (exp + 1) * 3 / 2;
            if !policy.in_window() {
                for _ in 0..exp {
                    std::hint::spin_loop();
                }
            }
            // While spinning, do not (re)set the request bit: the holder
            // clears it on every re-acquisition, and setting it again each
            // time would add a read-modify-write to the contended line per
            // operation. It is set once we block, where starvation could
            // actually happen.
            if raw.word.try_exclusive(me, false) == Try::Acquired {
                return true;
            }
        }
        // About to block: announce the exclusive request.
        raw.word.try_exclusive(me, true) == Try::Acquired
    } else {
        let honor = primaries == 0 && !policy.in_window();
        raw.word.try_shared(me, honor) == Try::Acquired
    }
}
