//! The token word protocol (`lwkt_token.c`'s `_lwkt_trytokref` and
//! `_lwkt_reltokref`), on two atomics so loom can check it.
//!
//! `count` bit table (DragonFly's `t_count`):
//!
//! | bits  | name      | meaning                                          |
//! |-------|-----------|--------------------------------------------------|
//! | 0     | EXCLUSIVE | held exclusively; `owner` names the holder       |
//! | 1     | EXCLREQ   | a blocked exclusive requester wants priority     |
//! | 2..   | count     | shared holders, in units of `INCR` (4)           |
//!
//! Invariants: EXCLUSIVE and a nonzero shared count never stay set together
//! (a shared acquirer that finds EXCLUSIVE after its increment backs out);
//! `owner` is nonzero only while EXCLUSIVE is set, and is written only by
//! the holder, so a thread comparing `owner` with itself gets a stable
//! answer (the seed's "oref cannot race if it happens to be ours").
//!
//! Orderings: a successful acquisition is Acquire and a release is
//! Release, so the protected data's accesses are ordered between holders.

// `pub` so the loom tests can reach it through `lwkt::__loom`.
#![allow(unreachable_pub, dead_code)]

use crate::sync::{AtomicUsize, Ordering};

/// Held exclusively.
pub const EXCLUSIVE: usize = 1 << 0;
/// An exclusive requester is waiting; new single-token shared requesters
/// hold back.
pub const EXCLREQ: usize = 1 << 1;
/// One shared holder.
pub const INCR: usize = 1 << 2;
/// The shared-count bits.
pub const COUNTMASK: usize = !(EXCLUSIVE | EXCLREQ);

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
    pub count: AtomicUsize,
    /// The exclusive holder (a nonzero thread identity), or 0.
    pub owner: AtomicUsize,
}

impl Word {
    #[cfg(not(loom))]
    pub const fn new() -> Word {
        Word {
            count: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Word {
        Word {
            count: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
        }
    }

    /// Tries to take the token exclusively for thread `me` (nonzero). When
    /// it is busy and `set_req`, sets EXCLREQ (a blocking request).
    #[inline]
    pub fn try_exclusive(&self, me: usize, set_req: bool) -> Try {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c & !EXCLREQ == 0 {
                // Free (perhaps with a stale request bit, which a
                // successful acquisition clears).
                match self.count.compare_exchange_weak(
                    c,
                    EXCLUSIVE,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.owner.store(me, Ordering::Relaxed);
                        return Try::Acquired;
                    }
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
            }
            if c & EXCLUSIVE != 0 && self.owner.load(Ordering::Relaxed) == me {
                return Try::Recursive;
            }
            if set_req && c & EXCLREQ == 0 {
                self.count.fetch_or(EXCLREQ, Ordering::Relaxed);
            }
            return Try::Busy;
        }
    }

    /// Tries to take the token shared for thread `me`. `honor_req`: hold
    /// back while an exclusive requester waits (only safe when the caller
    /// holds no other token, per the seed).
    #[inline]
    pub fn try_shared(&self, me: usize, honor_req: bool) -> Try {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c & EXCLUSIVE == 0 && (c & EXCLREQ == 0 || !honor_req) {
                let prev = self.count.fetch_add(INCR, Ordering::Acquire);
                if prev & EXCLUSIVE == 0 {
                    return Try::Acquired;
                }
                // An exclusive holder got in between: back out, retry.
                c = self.count.fetch_sub(INCR, Ordering::Relaxed) - INCR;
                continue;
            }
            if c & EXCLUSIVE != 0 && self.owner.load(Ordering::Relaxed) == me {
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

    /// Releases an exclusive hold.
    #[inline]
    pub fn release_exclusive(&self) {
        self.owner.store(0, Ordering::Relaxed);
        let prev = self.count.fetch_and(!EXCLUSIVE, Ordering::Release);
        debug_assert!(
            prev & EXCLUSIVE != 0,
            "releasing a token not held exclusively"
        );
    }

    /// Releases one shared hold.
    #[inline]
    pub fn release_shared(&self) {
        let prev = self.count.fetch_sub(INCR, Ordering::Release);
        debug_assert!(prev & COUNTMASK != 0, "releasing a token not held shared");
    }

    /// Turns our exclusive hold into `n` shared holds (n >= 1) in one step,
    /// so no exclusive requester can slip in between.
    pub fn downgrade(&self, n: usize) {
        self.owner.store(0, Ordering::Relaxed);
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            debug_assert!(c & EXCLUSIVE != 0);
            let new = (c & !EXCLUSIVE) + n * INCR;
            match self
                .count
                .compare_exchange_weak(c, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => c = now,
            }
        }
    }

    /// Shared holders now (a snapshot).
    pub fn shared_count(&self) -> usize {
        (self.count.load(Ordering::Relaxed) & COUNTMASK) / INCR
    }

    /// Whether held exclusively now (a snapshot).
    pub fn is_exclusive(&self) -> bool {
        self.count.load(Ordering::Relaxed) & EXCLUSIVE != 0
    }
}
