//! The token word protocol (`lwkt_token.c`'s `_lwkt_trytokref` and
//! `_lwkt_reltokref`), on one atomic word so loom can check it.
//!
//! `count` bit table (DragonFly's `t_count`, with `t_ref` folded in):
//!
//! | bits  | name      | meaning                                          |
//! |-------|-----------|--------------------------------------------------|
//! | 0     | EXCLUSIVE | held exclusively                                 |
//! | 1     | EXCLREQ   | a blocked exclusive requester wants priority     |
//! |       |           | over new shared requesters (set only on a word   |
//! |       |           | held shared; see "Who writes the word")          |
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
//! # Who writes the word
//!
//! **While the word says EXCLUSIVE (a holder, or [`DEAD`]), only that
//! holder writes it.** Every other writer is a compare-and-swap that
//! expects a word without EXCLUSIVE: acquisitions expect a free or shared
//! word, and a blocking exclusive request sets EXCLREQ only on a word held
//! shared ([`Word::try_exclusive`]). A compare-and-swap that fails writes
//! nothing. Shared releases need a shared hold, which cannot coexist with
//! an exclusive one.
//!
//! So an exclusive release, a downgrade and [`Word::unseal`] are plain
//! stores: no concurrent change can be lost, and the uncontended get +
//! release costs one locked instruction, not two. This is where the
//! protocol departs from the seed, which sets TOK_EXCLREQ on an
//! exclusively held token too (and so must release with an atomic
//! clear). What that costs here: an exclusive requester blocked behind an
//! exclusive holder records no request, so when the holder releases, a
//! new shared requester may take the token before it. Its next failed
//! pass then finds the token held shared and sets the bit, after which new
//! shared requesters hold back until it has had the token: starvation is
//! still bounded, one shared round later. (The bit was already a hint:
//! every exclusive acquisition clears it, as in the seed.)
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

    /// Tries to take the token exclusively for `me`. When it is held
    /// shared and `set_req`, sets EXCLREQ (a blocking request); a word held
    /// exclusively is never written (module header).
    #[inline]
    pub fn try_exclusive(&self, me: usize, set_req: bool) -> Try {
        self.try_exclusive_counted(me, set_req, &mut 0)
    }

    /// [`try_exclusive`](Self::try_exclusive), adding to `rmw` every
    /// atomic read-modify-write it makes on the word (compare-and-swaps,
    /// failed ones included, the request bit's among them). With a
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
            if set_req && c & (EXCLUSIVE | EXCLREQ) == 0 {
                // Held shared: record the request. A compare-and-swap
                // expecting this shared word, so a word that has become
                // exclusive meanwhile is left alone (its holder releases
                // it with a plain store).
                *rmw += 1;
                match self.count.compare_exchange_weak(
                    c,
                    c | EXCLREQ,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Try::Busy,
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
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

    /// Releases an exclusive hold: a plain store of the free word
    /// (Release), since nobody else writes a word held exclusively (module
    /// header), and no request bit is set on one.
    #[inline]
    pub fn release_exclusive(&self) {
        debug_assert!(
            self.count.load(Ordering::Relaxed) & !PAYLOAD == EXCLUSIVE,
            "releasing a token not held exclusively (or with a request bit on an exclusive word)"
        );
        self.count.store(0, Ordering::Release);
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
    /// so no exclusive requester can slip in between: one store, as the
    /// word held exclusively is ours alone to write (module header).
    pub fn downgrade(&self, n: usize) {
        debug_assert!(n >= 1 && self.count.load(Ordering::Relaxed) & !PAYLOAD == EXCLUSIVE);
        self.count.store(n * INCR, Ordering::Release);
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
    /// returned (a plain store: a sealed word looks held exclusively, so
    /// only the sealer writes it).
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const A: usize = 8;
    const B: usize = 16;

    /// The ownership rule in the module header, step by step: requests
    /// and tries leave a word held exclusively untouched, so the holder's
    /// plain-store release loses nothing; a request on a word held shared
    /// is recorded and honoured, and the next exclusive acquisition clears
    /// it.
    #[test]
    fn only_the_holder_writes_an_exclusive_word() {
        let w = Word::new();
        assert!(w.try_free_exclusive(A));
        for _ in 0..3 {
            assert_eq!(w.try_exclusive(B, true), Try::Busy);
            assert_eq!(w.try_shared(B, true), Try::Busy);
            assert_eq!(w.try_shared(B, false), Try::Busy);
            assert!(!w.try_shared_fast());
            assert!(!w.try_free_exclusive(B));
            assert_eq!(w.try_seal(), None);
        }
        assert_eq!(w.count.load(Ordering::Relaxed), A | EXCLUSIVE);
        w.release_exclusive();
        assert_eq!(w.count.load(Ordering::Relaxed), 0);

        // Held shared: a blocking exclusive request is recorded...
        assert_eq!(w.try_shared(A, true), Try::Acquired);
        assert_eq!(w.try_exclusive(B, true), Try::Busy);
        assert_eq!(w.count.load(Ordering::Relaxed), INCR | EXCLREQ);
        // ...new single-token shared requesters hold back...
        assert_eq!(w.try_shared(B, true), Try::Busy);
        w.release_shared();
        // ...and the requester's acquisition clears the bit.
        assert_eq!(w.try_exclusive(B, true), Try::Acquired);
        assert_eq!(w.count.load(Ordering::Relaxed), B | EXCLUSIVE);
        w.downgrade(2);
        assert_eq!(w.count.load(Ordering::Relaxed), 2 * INCR);
        w.release_shared();
        w.release_shared();
        assert_eq!(w.count.load(Ordering::Relaxed), 0);

        // A sealed word looks held exclusively: nobody else writes it.
        let prev = w.try_seal().expect("free");
        assert_eq!(w.try_exclusive(A, true), Try::Busy);
        assert_eq!(w.count.load(Ordering::Relaxed), DEAD);
        w.unseal(prev);
        assert_eq!(w.count.load(Ordering::Relaxed), 0);
    }
}
