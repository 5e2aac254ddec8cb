//! Tokens and the scheduler: the thread's held-token array, blocking
//! acquisition, release at switch-out and re-acquisition before a thread
//! runs (`lwkt_getalltokens` / `lwkt_relalltokens`).
//!
//! Re-acquisition protocol, per candidate thread in run-queue order:
//! 1. If the token that blocked the thread last time still looks busy (a
//!    plain load), skip the thread: no atomic read-modify-write, no
//!    tokens taken only to be given back. This answers both costs the
//!    2010 thread names (N-1 wasted acquisitions; the scheduler hammering
//!    the same held token for every waiter on every pass).
//! 2. Otherwise acquire every pending primary reference, the blocking one
//!    first, then in held order; after `spin_loops` failed passes of this
//!    thread, in address order instead, so contention cannot livelock.
//! 3. On a failure release what this pass took (counted as wasted),
//!    remember the failing token, bump its collision count and show its
//!    name as the thread's wait message; try the next runnable thread.

use std::ptr;

use super::mode;
use super::word::Try;
use super::{RawToken, MAX_TOKENS};
use crate::sched::cpu::Cpu;
use crate::sched::td::{TdPtr, Thread, TokRef};
use crate::thread::CurThread;

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

/// Whether this CPU is in its window (the seed's `token_window_shift`):
/// windows rotate among CPUs, and inside its window a CPU's shared
/// requests ignore EXCLREQ, so shared holders on every CPU make progress.
#[inline]
fn in_window(cpu: &Cpu) -> bool {
    let n = cpu.shared.ncpus() as u64;
    (tsc() >> cpu.shared.config.token_window_shift) % n == cpu.id as u64
}

/// Number of primary references a thread has (what the EXCLREQ rule
/// counts: priority for exclusive requesters is only safe against shared
/// requesters that hold nothing else).
fn primaries(td: &Thread) -> u32 {
    let mut used = td.tok_used.get();
    let mut n = 0;
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let m = td.toks[i].get().mode & !mode::PENDING;
        if m == mode::EXCL || m == mode::SHARED {
            n += 1;
        }
    }
    n
}

impl CurThread {
    /// The identity a token records for its exclusive holder.
    #[inline]
    pub(crate) fn identity(&self) -> usize {
        self.td_ptr().as_ptr() as usize
    }

    /// Fast path of an acquisition: a free token (exclusive: not even a
    /// stale request bit; shared: no holder or request in the way) taken
    /// with one compare-and-swap. None: use the full path.
    #[inline]
    pub(crate) fn token_fast(&mut self, raw: &RawToken, exclusive: bool) -> Option<u8> {
        let t = self.td_ptr();
        let td = t.td();
        let used = td.tok_used.get();
        if used == u32::MAX {
            return None; // the full path reports it
        }
        let (got, m) = if exclusive {
            (raw.word.try_free_exclusive(t.as_ptr() as usize), mode::EXCL)
        } else {
            (raw.word.try_shared_fast(), mode::SHARED)
        };
        if !got {
            return None;
        }
        let slot = (!used).trailing_zeros() as usize;
        // A loop that takes the same token again finds its slot already
        // filled: skip the stores (a locked instruction waits for pending
        // stores, so fewer stores make the release cheaper).
        let old = td.toks[slot].get();
        if !ptr::eq(old.tok, raw) || old.mode != m {
            td.toks[slot].set(TokRef { tok: raw, mode: m });
        }
        td.tok_used.set(used | (1 << slot));
        Some(slot as u8)
    }

    /// Acquires `raw`; returns the tokref slot, or None when `block` is
    /// false and the token is busy.
    #[track_caller]
    #[inline(never)]
    pub(crate) fn token_acquire(
        &mut self,
        raw: &RawToken,
        exclusive: bool,
        block: bool,
    ) -> Option<u8> {
        let t = self.td_ptr();
        let td = t.td();
        let me = t.as_ptr() as usize;
        let used = td.tok_used.get();
        if used == u32::MAX {
            panic!(
                "lwkt: thread would hold more than {MAX_TOKENS} token references \
                 (LWKT_MAXTOKENS) when taking '{}'",
                raw.name
            );
        }
        let slot = (!used).trailing_zeros() as usize;
        let cpu = self.cpu_ref();
        let tried = if exclusive {
            // The request bit is set only when we are about to block (see
            // token_spin).
            raw.word.try_exclusive(me, false)
        } else {
            let honor = block && primaries(td) == 0 && !in_window(cpu);
            raw.word.try_shared(me, honor)
        };
        let m = match tried {
            Try::Acquired => {
                if exclusive {
                    mode::EXCL
                } else {
                    mode::SHARED
                }
            }
            Try::Recursive => {
                if exclusive {
                    mode::REC_EXCL
                } else {
                    mode::REC_SHARED
                }
            }
            Try::Busy => {
                if exclusive && holds_shared(td, raw) {
                    panic!(
                        "lwkt: token '{}': exclusive acquisition while this thread holds it \
                         shared would livelock (it would wait for itself); take it exclusively \
                         first",
                        raw.name
                    );
                }
                if !block {
                    raw.collide();
                    return None;
                }
                if self.token_spin(raw, exclusive) {
                    if exclusive {
                        mode::EXCL
                    } else {
                        mode::SHARED
                    }
                } else {
                    // Give up the CPU: the scheduler acquires this token
                    // (and re-acquires the others) before we run again.
                    raw.collide();
                    let m = if exclusive { mode::EXCL } else { mode::SHARED };
                    td.toks[slot].set(TokRef {
                        tok: raw,
                        mode: m | mode::PENDING,
                    });
                    td.tok_used.set(used | (1 << slot));
                    td.tok_blocked.set(raw);
                    td.wmesg.set(raw.name);
                    cpu.stats().tok_blocks.bump();
                    self.block_for_tokens();
                    debug_assert_eq!(td.toks[slot].get().mode & mode::PENDING, 0);
                    return Some(slot as u8);
                }
            }
        };
        td.toks[slot].set(TokRef { tok: raw, mode: m });
        td.tok_used.set(used | (1 << slot));
        Some(slot as u8)
    }

    /// The seed's contended-acquisition spin (`_lwkt_trytokref_spin`):
    /// exponential backoff for exclusive requests, TSC windowing for shared
    /// ones. Returns whether the token was acquired.
    fn token_spin(&self, raw: &RawToken, exclusive: bool) -> bool {
        let cpu = self.cpu_ref();
        let me = self.identity();
        let td = self.td_ptr().td();
        if exclusive {
            let max = cpu.shared.config.token_backoff_max;
            let mut exp: usize = 0;
            while exp < 6 + max {
                exp = (exp + 1) * 3 / 2;
                if !in_window(cpu) {
                    for _ in 0..exp {
                        std::hint::spin_loop();
                    }
                }
                // While spinning, do not (re)set the request bit: the
                // holder clears it on every re-acquisition, and setting it
                // again each time would add a read-modify-write to the
                // contended line per operation. It is set once we block,
                // where starvation could actually happen.
                if raw.word.try_exclusive(me, false) == Try::Acquired {
                    return true;
                }
            }
            // About to block: announce the exclusive request.
            raw.word.try_exclusive(me, true) == Try::Acquired
        } else {
            let honor = primaries(td) == 0 && !in_window(cpu);
            raw.word.try_shared(me, honor) == Try::Acquired
        }
    }
}

/// Whether the thread holds `raw` as a shared primary.
fn holds_shared(td: &Thread, raw: &RawToken) -> bool {
    let mut used = td.tok_used.get();
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let r = td.toks[i].get();
        if ptr::eq(r.tok, raw) && r.mode & !mode::PENDING == mode::SHARED {
            return true;
        }
    }
    false
}

impl Cpu {
    /// Releases every primary hold of `t` (`lwkt_relalltokens`), marking
    /// them pending for re-acquisition. Called as the thread switches out.
    #[inline]
    pub(crate) fn tokens_release_all(&self, t: TdPtr) {
        let td = t.td();
        let mut used = td.tok_used.get();
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            let mut r = td.toks[i].get();
            if r.mode & mode::PENDING == 0 {
                // SAFETY: token references point at tokens that outlive the
                // guard that made them (the guard borrows the token).
                let tok = unsafe { &*r.tok };
                match r.mode {
                    mode::EXCL => tok.word.release_exclusive(),
                    mode::SHARED => tok.word.release_shared(),
                    _ => continue,
                }
                r.mode |= mode::PENDING;
                td.toks[i].set(r);
            }
        }
    }

    /// Acquires every pending primary of `t` or none (`lwkt_getalltokens`).
    pub(crate) fn tokens_acquire_all(&self, t: TdPtr) -> bool {
        let td = t.td();
        let st = self.stats();
        // Step 1: a cheap look at the token that blocked us last time.
        let blocked = td.tok_blocked.get();
        if !blocked.is_null() {
            // SAFETY: see tokens_release_all.
            let b = unsafe { &*blocked };
            let excl = td_wants_exclusive(td, blocked);
            if !b.word.looks_free(excl) {
                st.tok_skips.bump();
                return false;
            }
        }
        st.tok_attempts.bump();
        // Step 2: collect the pending primaries in acquisition order.
        let mut order = [0u8; MAX_TOKENS];
        let mut n = 0;
        let mut used = td.tok_used.get();
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            if td.toks[i].get().mode & mode::PENDING != 0 {
                order[n] = i as u8;
                n += 1;
            }
        }
        let order = &mut order[..n];
        let sorted = td.tok_fails.get() >= self.shared.config.token_spin_loops;
        if sorted {
            st.tok_ordered.bump();
            order.sort_unstable_by_key(|&i| td.toks[i as usize].get().tok as usize);
        } else if let Some(pos) = order
            .iter()
            .position(|&i| td.toks[i as usize].get().tok == blocked)
        {
            // The blocking token first: if it fails, nothing was wasted.
            order[..=pos].rotate_right(1);
        }
        let me = t.as_ptr() as usize;
        let nprim = primaries(td);
        for k in 0..order.len() {
            let r = td.toks[order[k] as usize].get();
            // SAFETY: see tokens_release_all.
            let tok = unsafe { &*r.tok };
            let got = match r.mode & !mode::PENDING {
                mode::EXCL => tok.word.try_exclusive(me, true),
                _ => tok.word.try_shared(me, nprim == 1 && !in_window(self)),
            };
            if got != Try::Acquired {
                debug_assert_ne!(got, Try::Recursive, "a switched-out thread owns nothing");
                // Step 3: give back what this pass took.
                for &j in &order[..k] {
                    let rj = td.toks[j as usize].get();
                    // SAFETY: see tokens_release_all.
                    let tj = unsafe { &*rj.tok };
                    match rj.mode & !mode::PENDING {
                        mode::EXCL => tj.word.release_exclusive(),
                        _ => tj.word.release_shared(),
                    }
                    st.tok_wasted.bump();
                }
                tok.collide();
                td.tok_blocked.set(r.tok);
                td.wmesg.set(tok.name);
                td.tok_fails.set(td.tok_fails.get().saturating_add(1));
                st.tok_failures.bump();
                return false;
            }
        }
        for &i in order.iter() {
            let mut r = td.toks[i as usize].get();
            r.mode &= !mode::PENDING;
            td.toks[i as usize].set(r);
        }
        td.tok_blocked.set(ptr::null());
        td.tok_fails.set(0);
        true
    }

    /// A guard is dropped: release its reference (any order). When the
    /// primary exclusive reference goes while nested ones remain, the
    /// token stays ours: exclusively if a nested exclusive one remains,
    /// else downgraded to shared holds, one per remaining reference.
    pub(crate) fn token_release_slot(&self, t: TdPtr, slot: usize) {
        let td = t.td();
        let used = td.tok_used.get();
        assert!(used & (1 << slot) != 0, "lwkt: token guard released twice");
        let r = td.toks[slot].get();
        td.tok_used.set(used & !(1 << slot));
        if r.mode & mode::PENDING != 0 {
            return; // not held right now (only during shutdown unwinding)
        }
        // SAFETY: see tokens_release_all.
        let tok = unsafe { &*r.tok };
        match r.mode {
            mode::SHARED => tok.word.release_shared(),
            mode::EXCL => {
                let mut rest = td.tok_used.get();
                let mut nested_excl = None;
                let mut nested_shared = 0u32;
                while rest != 0 {
                    let i = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    let o = td.toks[i].get();
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
                    td.toks[i].set(TokRef {
                        tok: r.tok,
                        mode: mode::EXCL,
                    });
                } else if nested_shared != 0 {
                    tok.word.downgrade(nested_shared.count_ones() as usize);
                    let mut s = nested_shared;
                    while s != 0 {
                        let i = s.trailing_zeros() as usize;
                        s &= s - 1;
                        td.toks[i].set(TokRef {
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

    /// Drops every reference a finished or cancelled thread still has
    /// (guards forgotten with `mem::forget`, or refs left by unwinding).
    pub(crate) fn tokens_drop_all(&self, t: TdPtr) {
        let td = t.td();
        while td.tok_used.get() != 0 {
            // Release primaries last so nested refs never outlive them.
            let used = td.tok_used.get();
            let mut pick = used.trailing_zeros() as usize;
            let mut u = used;
            while u != 0 {
                let i = u.trailing_zeros() as usize;
                u &= u - 1;
                let m = td.toks[i].get().mode & !mode::PENDING;
                if m == mode::REC_EXCL || m == mode::REC_SHARED {
                    pick = i;
                    break;
                }
            }
            self.token_release_slot(t, pick);
        }
        td.tok_blocked.set(ptr::null());
        td.tok_fails.set(0);
    }
}

fn td_wants_exclusive(td: &Thread, tok: *const RawToken) -> bool {
    let mut used = td.tok_used.get();
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let r = td.toks[i].get();
        if r.tok == tok && r.mode & !mode::PENDING == mode::EXCL {
            return true;
        }
    }
    false
}
