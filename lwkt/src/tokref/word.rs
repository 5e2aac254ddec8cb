//! The token word protocol (`lwkt_token.c`'s `_lwkt_trytokref` and
//! `_lwkt_reltokref`), on one atomic word so loom can check it.
//!
//! `count` bit table (DragonFly's `t_count`, with `t_ref` folded in):
//!
//! | bits  | name      | meaning                                          |
//! |-------|-----------|--------------------------------------------------|
//! | 0     | EXCLUSIVE | held exclusively                                 |
//! | 1     | EXCLREQ   | a blocked exclusive requester wants priority     |
//! | 2..   | payload   | EXCLUSIVE set: the holder's identity (a thread   |
//! |       |           | address, 4-aligned, so its low bits are free);   |
//! |       |           | clear: the shared holders, in units of `INCR`    |
//!
//! One more value, [`DEAD`] (EXCLUSIVE with identity 4, which no thread
//! has: identities are structure addresses, far above the first page),
//! marks a token being torn down: every acquisition sees it busy. See
//! [`Word::try_seal`].
//!
//! The identity is unique among *live* threads: a thread's references
//! are all released before it exits, so the word never names a thread
//! that is gone, and a recycled structure address cannot be mistaken for
//! its former owner here. (Guards and other long-lived records use the
//! thread's never-reused id instead.)
//!
//! Keeping the holder in the same word as the state means an acquisition
//! or a release is one atomic instruction, with no second store that the
//! locked instruction would have to wait for.
//!
//! Shared acquisitions use compare-and-swap (never a blind add), so the
//! payload always means exactly one thing. A thread comparing the payload
//! with its own identity gets a stable answer: only it can make the word
//! name it.
//!
//! Orderings: a successful acquisition is Acquire and a release is
//! Release, so the protected data's accesses are ordered between holders.

// `pub` so the loom tests can reach it through `lwkt::__loom`.
#![allow(unreachable_pub, dead_code)]

use crate::sync::atomic::{AtomicUsize, Ordering};

/// Held exclusively.
pub const EXCLUSIVE: usize = 1 << 0;
/// An exclusive requester is waiting; new single-token shared requesters
/// hold back.
pub const EXCLREQ: usize = 1 << 1;
/// One shared holder.
pub const INCR: usize = 1 << 2;
/// The payload bits (holder identity or shared count).
pub const PAYLOAD: usize = !(EXCLUSIVE | EXCLREQ);
/// A token being torn down (see [`Word::try_seal`]): looks exclusively
/// held by an identity no thread has.
pub const DEAD: usize = EXCLUSIVE | INCR;

/// What a try found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Try {
    /// Acquired: the word now counts us.
    Acquired,
    /// We already hold it exclusively: nested use, the word is untouched.
    Recursive,
    /// Held by someone else.
    Busy,
}

/// The atomic part of a token.
#[derive(Debug)]
pub struct Word {
    /// The word itself (see the bit table in the module header).
    pub count: AtomicUsize,
}

#[inline]
fn held_by(c: usize, me: usize) -> bool {
    c & EXCLUSIVE != 0 && c & PAYLOAD == me
}

impl Word {
    /// A free token's word.
    #[cfg(not(loom))]
    pub const fn new() -> Word {
        Word {
            count: AtomicUsize::new(0),
        }
    }

    /// A free token's word.
    #[cfg(loom)]
    pub fn new() -> Word {
        Word {
            count: AtomicUsize::new(0),
        }
    }

    /// Takes a completely free token exclusively with one compare-and-swap
    /// (the uncontended fast path); false when it is held, or when a
    /// request bit is set (the full path handles those). `me`: a nonzero,
    /// 4-aligned identity.
    #[inline]
    pub fn try_free_exclusive(&self, me: usize) -> bool {
        debug_assert!(me != 0 && me & !PAYLOAD == 0);
        self.count
            .compare_exchange(0, me | EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the token shared with one compare-and-swap when it is neither
    /// held exclusively nor requested exclusively (the uncontended fast
    /// path: the request-bit rule cannot matter then).
    #[inline]
    pub fn try_shared_fast(&self) -> bool {
        let c = self.count.load(Ordering::Relaxed);
        c & (EXCLUSIVE | EXCLREQ) == 0
            && self
                .count
                .compare_exchange(c, c + INCR, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Tries to take the token exclusively for `me`. When it is busy and
    /// `set_req`, sets EXCLREQ (a blocking request).
    #[inline]
    pub fn try_exclusive(&self, me: usize, set_req: bool) -> Try {
        self.try_exclusive_counted(me, set_req, &mut 0)
    }

    /// [`try_exclusive`](Self::try_exclusive), adding to `rmw` every
    /// atomic read-modify-write it makes on the word (compare-and-swaps,
    /// failed ones included, and the request bit's `fetch_or`). With a
    /// counter the caller ignores, it compiles to the uncounted version.
    #[inline]
    pub fn try_exclusive_counted(&self, me: usize, set_req: bool, rmw: &mut u32) -> Try {
        debug_assert!(me != 0 && me & !PAYLOAD == 0);
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c & !EXCLREQ == 0 {
                // Free (perhaps with a stale request bit, which a
                // successful acquisition clears).
                *rmw += 1;
                match self.count.compare_exchange_weak(
                    c,
                    me | EXCLUSIVE,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Try::Acquired,
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
            }
            if held_by(c, me) {
                return Try::Recursive;
            }
            if set_req && c & EXCLREQ == 0 {
                *rmw += 1;
                self.count.fetch_or(EXCLREQ, Ordering::Relaxed);
            }
            return Try::Busy;
        }
    }

    /// Tries to take the token shared for `me`. `honor_req`: hold back
    /// while an exclusive requester waits (only safe when the caller holds
    /// no other token, per the seed).
    #[inline]
    pub fn try_shared(&self, me: usize, honor_req: bool) -> Try {
        self.try_shared_counted(me, honor_req, &mut 0)
    }

    /// [`try_shared`](Self::try_shared), adding to `rmw` every atomic
    /// read-modify-write it makes on the word (its compare-and-swaps,
    /// failed ones included).
    #[inline]
    pub fn try_shared_counted(&self, me: usize, honor_req: bool, rmw: &mut u32) -> Try {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c & EXCLUSIVE == 0 && (c & EXCLREQ == 0 || !honor_req) {
                *rmw += 1;
                match self.count.compare_exchange_weak(
                    c,
                    c + INCR,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Try::Acquired,
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
            }
            if held_by(c, me) {
                return Try::Recursive;
            }
            return Try::Busy;
        }
    }

    /// Whether a try in this mode could succeed now (a plain load: no
    /// cache-line ownership taken). Used by the scheduler to skip threads
    /// whose blocking token is still busy.
    #[inline]
    pub fn looks_free(&self, exclusive: bool) -> bool {
        let c = self.count.load(Ordering::Relaxed);
        if exclusive {
            c & !EXCLREQ == 0
        } else {
            c & EXCLUSIVE == 0
        }
    }

    /// Whether `me` holds the token exclusively now.
    #[inline]
    pub fn is_held_by(&self, me: usize) -> bool {
        held_by(self.count.load(Ordering::Relaxed), me)
    }

    /// Releases an exclusive hold (keeping a waiter's request bit).
    #[inline]
    pub fn release_exclusive(&self) {
        let prev = self.count.fetch_and(EXCLREQ, Ordering::Release);
        debug_assert!(
            prev & EXCLUSIVE != 0,
            "releasing a token not held exclusively"
        );
    }

    /// Releases one shared hold. While we hold it shared nobody can make
    /// it exclusive, so a plain subtraction is safe.
    #[inline]
    pub fn release_shared(&self) {
        let prev = self.count.fetch_sub(INCR, Ordering::Release);
        debug_assert!(
            prev & EXCLUSIVE == 0 && prev & PAYLOAD != 0,
            "releasing a token not held shared"
        );
    }

    /// Turns our exclusive hold into `n` shared holds (n >= 1) in one step,
    /// so no exclusive requester can slip in between.
    pub fn downgrade(&self, n: usize) {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            debug_assert!(c & EXCLUSIVE != 0);
            let new = (c & EXCLREQ) + n * INCR;
            match self
                .count
                .compare_exchange_weak(c, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => c = now,
            }
        }
    }

    /// Seals a token that nobody holds (its owner is dropping it): swaps
    /// a free word (no holder; a leftover request bit allowed) for
    /// [`DEAD`], so no acquisition can succeed until [`unseal`]. Returns
    /// the previous value, or `None` when the token is held.
    ///
    /// Acquire: a holder's release (Release) that made the word free
    /// happens-before the seal, so whatever the holder did before
    /// releasing (counting a pending reference) is visible after it.
    ///
    /// [`unseal`]: Self::unseal
    pub fn try_seal(&self) -> Option<usize> {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c & !EXCLREQ != 0 {
                return None;
            }
            match self
                .count
                .compare_exchange_weak(c, DEAD, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(c),
                Err(now) => c = now,
            }
        }
    }

    /// Undoes [`try_seal`](Self::try_seal), restoring the value it
    /// returned.
    pub fn unseal(&self, prev: usize) {
        self.count.store(prev, Ordering::Release);
    }

    /// Shared holders now (a snapshot).
    pub fn shared_count(&self) -> usize {
        let c = self.count.load(Ordering::Relaxed);
        if c & EXCLUSIVE != 0 {
            0
        } else {
            (c & PAYLOAD) / INCR
        }
    }

    /// Whether held exclusively now (a snapshot).
    pub fn is_exclusive(&self) -> bool {
        self.count.load(Ordering::Relaxed) & EXCLUSIVE != 0
    }
}
