//! Every token whose state has been allocated, for the introspection page's
//! token table.
//!
//! A token enters the registry the first time its [`RawToken`] is allocated
//! (the cold path of `Token::raw`) and leaves it when that state is freed
//! (`Token::retire_raw`). The registry is sharded by address, each shard a
//! mutex around a set of addresses; nothing on the acquire/release path
//! touches it. The freeing of a state happens while its shard is locked,
//! and a reader dereferences an entry only while holding the same lock, so
//! a listed address is always live.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;

use crate::tokref::RawToken;

const SHARDS: usize = 16;

static SHARD: [CachePadded<Mutex<BTreeSet<usize>>>; SHARDS] =
    [const { CachePadded::new(Mutex::new(BTreeSet::new())) }; SHARDS];

fn shard(p: *const RawToken) -> MutexGuard<'static, BTreeSet<usize>> {
    // RawToken is 64-byte aligned: drop the always-zero bits first.
    let i = ((p as usize) >> 6) % SHARDS;
    SHARD[i].lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lists a freshly published state.
pub(crate) fn register(p: *const RawToken) {
    shard(p).insert(p as usize);
}

/// Retires the state at `p` (see [`RawToken::retire`]) with its shard
/// locked, so no reader can be looking at it when it is freed; unlists it
/// when it was freed. A state kept alive by a leaked guard stays listed.
///
/// # Safety
/// As for [`RawToken::retire`]; `p` was [`register`]ed.
pub(crate) unsafe fn retire(p: *mut RawToken) {
    let mut set = shard(p);
    // SAFETY: the caller's contract is retire's.
    if unsafe { RawToken::retire(p) } {
        set.remove(&(p as usize));
    }
}

/// A snapshot of one token, as listed by [`tokens`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenSnapshot {
    /// The token's name.
    pub(crate) name: &'static str,
    /// Failed acquisitions so far (`t_collisions`).
    pub(crate) collisions: u64,
    /// Held exclusively right now.
    pub(crate) exclusive: bool,
    /// Shared holds right now.
    pub(crate) shared: usize,
    /// The state's address: tells apart tokens of the same name.
    pub(crate) addr: usize,
}

/// Every listed token, by address (plain loads of each word: a snapshot).
pub(crate) fn tokens() -> Vec<TokenSnapshot> {
    let mut out = Vec::new();
    for s in &SHARD {
        let set = s.lock().unwrap_or_else(PoisonError::into_inner);
        for &a in set.iter() {
            // SAFETY: listed addresses are live while their shard is
            // locked (module header): freeing happens under this lock.
            let r = unsafe { &*(a as *const RawToken) };
            out.push(TokenSnapshot {
                name: r.name,
                collisions: r.collisions(),
                exclusive: r.word.is_exclusive(),
                shared: r.word.shared_count(),
                addr: a,
            });
        }
    }
    out.sort_by_key(|t| t.addr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn listed(name: &str) -> Vec<TokenSnapshot> {
        tokens().into_iter().filter(|t| t.name == name).collect()
    }

    #[test]
    fn tokens_are_listed_once_used_and_unlisted_when_dropped() {
        let a = Token::new("registry-test-a", 1u32);
        assert!(
            listed("registry-test-a").is_empty(),
            "not listed before first use"
        );
        let _ = a.raw();
        let l = listed("registry-test-a");
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].collisions, l[0].exclusive, l[0].shared),
            (0, false, 0)
        );
        // Moved tokens keep one entry (the state does not move).
        let b = a;
        let _ = b.raw();
        assert_eq!(listed("registry-test-a").len(), 1);
        drop(b);
        assert!(listed("registry-test-a").is_empty(), "unlisted once freed");
        let c = Token::new("registry-test-c", ());
        let _ = c.raw();
        assert_eq!(c.into_inner(), ());
        assert!(
            listed("registry-test-c").is_empty(),
            "into_inner unlists too"
        );
    }

    #[test]
    fn concurrent_create_drop_and_list() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let lister = s.spawn(|| {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for t in tokens() {
                        assert!(!t.name.is_empty());
                    }
                    rounds += 1;
                }
                rounds
            });
            let churn: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        for i in 0..2000u32 {
                            let t = Token::new("registry-test-churn", i);
                            let _ = t.raw();
                            drop(t);
                        }
                    })
                })
                .collect();
            for c in churn {
                c.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            assert!(lister.join().unwrap() > 0);
        });
        assert!(listed("registry-test-churn").is_empty());
    }
}
