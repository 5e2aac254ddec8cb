//! Serializing tokens: semantics, misuse, and behaviour under contention.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::{pool_token, CurThread, Priority, Runtime, ThreadBuilder, Token};

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().cpus(cpus).build().unwrap()
}

#[test]
fn smoke() {
    static T: Token<u64> = Token::new("smoke", 0);
    bounded(30, "token smoke", || {
        rt(1).block_on(|td| {
            assert_eq!(T.name(), "smoke");
            let g = td.get_token(&T);
            *g.get(td) += 1;
            assert_eq!(td.token_count(&T), 1);
            // Recursive exclusive, then shared inside exclusive.
            {
                let g2 = td.get_token(&T);
                *g2.get(td) += 1;
                let s = td.get_token_shared(&T);
                assert_eq!(*s.get(td), 2);
                assert_eq!(td.token_count(&T), 3);
            }
            assert_eq!(td.token_count(&T), 1);
            assert!(T.is_held_exclusive());
            drop(g);
            assert!(!T.is_held_exclusive());
            assert_eq!(td.tokens_held(), 0);
            let s1 = td.get_token_shared(&T);
            let s2 = td.get_token_shared(&T);
            assert_eq!(T.shared_holders(), 2);
            assert_eq!(*s1.get(td) + *s2.get(td), 4);
        });
    });
}

#[test]
fn guards_release_in_any_order() {
    static A: Token<u32> = Token::new("a", 0);
    static B: Token<u32> = Token::new("b", 0);
    bounded(30, "release order", || {
        rt(1).block_on(|td| {
            let a = td.get_token(&A);
            let b = td.get_token(&B);
            let a2 = td.get_token(&A); // nested
            let s = td.get_token_shared(&A); // nested shared
            drop(a); // primary first: a2 keeps A exclusive
            assert!(A.is_held_exclusive());
            td.yield_now(); // released and re-acquired across the switch
            drop(a2); // only the nested shared one is left: downgrade
            assert!(!A.is_held_exclusive());
            assert_eq!(A.shared_holders(), 1);
            assert_eq!(*s.get(td), 0);
            td.yield_now();
            assert_eq!(A.shared_holders(), 1);
            drop(b);
            drop(s);
            assert_eq!(A.shared_holders(), 0);
            assert!(!B.is_held_exclusive());
        });
    });
}

#[test]
fn exclusive_after_shared_panics_with_livelock_message() {
    static T: Token<()> = Token::new("sx", ());
    bounded(30, "s/x livelock", || {
        let rt = rt(1);
        let e = rt.block_on(|td| {
            td.spawn(|td| {
                let _s = td.get_token_shared(&T);
                let _x = td.get_token(&T);
            })
            .join(td)
            .unwrap_err()
        });
        assert!(e.message().contains("livelock"), "{e}");
        assert!(e.message().contains("sx"), "{e}");
        // The panic released the shared hold.
        assert_eq!(T.shared_holders(), 0);
    });
}

#[test]
fn more_than_32_tokens_panics_clearly() {
    bounded(30, "too many tokens", || {
        let rt = rt(1);
        let e = rt.block_on(|td| {
            td.spawn(|td| {
                let toks: Vec<&'static Token<()>> = (0..33)
                    .map(|_| &*Box::leak(Box::new(Token::new("many", ()))))
                    .collect();
                let mut gs = Vec::new();
                for t in toks {
                    gs.push(td.get_token(t));
                }
            })
            .join(td)
            .unwrap_err()
        });
        assert!(e.message().contains("more than 32 token"), "{e}");
    });
}

/// Two live references through recursively taken guards do not compile
/// (the `compile_fail,E0499`/`E0502` doctests in `token/mod.rs` pin that);
/// sequential borrows through each guard work, and the data stays consistent
/// as the guards are released in any order.
#[test]
fn recursive_guards_give_sequential_borrows_and_release_in_any_order() {
    static T: Token<u32> = Token::new("alias", 0);
    bounded(30, "recursive borrows", || {
        let rt = rt(1);
        rt.block_on(|td| {
            let a = td.get_token(&T);
            let b = td.get_token(&T);
            *a.get(td) += 1;
            *b.get(td) += 1;
            assert_eq!(*a.get(td), 2);
            let s = td.get_token_shared(&T);
            assert_eq!(*s.get(td), 2);
            drop(a); // the primary goes first: b keeps it exclusive
            assert!(T.is_held_exclusive());
            *b.get(td) += 1;
            drop(b); // only the nested shared use is left: downgraded
            assert!(!T.is_held_exclusive());
            assert_eq!(T.shared_holders(), 1);
            assert_eq!(*s.get(td), 3);
            drop(s);
            assert_eq!(T.shared_holders(), 0);
            assert_eq!(td.tokens_held(), 0);
        });
    });
}

thread_local! {
    static STASH: std::cell::RefCell<Option<lwkt::TokenGuard<'static, u32>>> =
        const { std::cell::RefCell::new(None) };
}

#[test]
fn a_guard_smuggled_to_another_thread_cannot_reach_the_data() {
    static T: Token<u32> = Token::new("smuggled", 0);
    bounded(30, "wrong thread", || {
        let rt = rt(1);
        rt.block_on(|td| {
            // Thread A stashes its guard in the CPU's OS-thread-local storage;
            // thread B on the same CPU takes it out.
            let a = td.spawn(|td| {
                let g = td.get_token(&T);
                STASH.with(|s| *s.borrow_mut() = Some(g));
                td.sleep_for(Duration::from_millis(20)).unwrap();
            });
            td.yield_now();
            let b = td.spawn(|td| {
                let g = STASH
                    .with(|s| s.borrow_mut().take())
                    .expect("stashed guard");
                *g.get(td) += 1;
            });
            let e = b.join(td).unwrap_err();
            assert!(
                e.message().contains("belong to the thread that took them"),
                "{e}"
            );
            a.join(td).unwrap();
        });
        assert!(
            !T.is_held_exclusive(),
            "the owner's exit released the token"
        );
    });
}

#[test]
fn try_token_does_not_block() {
    static T: Token<u32> = Token::new("try", 0);
    bounded(30, "try", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let held = Arc::new(AtomicBool::new(false));
            let release = Arc::new(AtomicBool::new(false));
            let (h2, r2) = (held.clone(), release.clone());
            let holder = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let _g = td.get_token(&T);
                    h2.store(true, Ordering::SeqCst);
                    while !r2.load(Ordering::SeqCst) {
                        std::hint::spin_loop(); // hold it while running
                    }
                })
                .unwrap();
            while !held.load(Ordering::SeqCst) {
                td.yield_now();
            }
            let before = T.collisions();
            assert!(td.try_token(&T).is_none());
            assert!(td.try_token_shared(&T).is_none());
            assert!(T.collisions() > before);
            release.store(true, Ordering::SeqCst);
            holder.join(td).unwrap();
            let g = td.try_token(&T).expect("free now");
            assert!(td.try_token(&T).is_some(), "recursive try succeeds");
            drop(g);
            let s = td.try_token_shared(&T).expect("free");
            assert!(td.try_token_shared(&T).is_some());
            drop(s);
        });
    });
}

/// Overlap checker kept inside the protected data: exclusive holders mark
/// `writer`, shared holders count themselves in `readers`.
#[derive(Default)]
struct Checked {
    writer: AtomicU64,
    readers: AtomicU64,
    value: AtomicU64,
}

impl Checked {
    fn enter_excl(&self, me: u64) {
        let w = self.writer.swap(me, Ordering::SeqCst);
        assert_eq!(w, 0, "two exclusive holders at once");
        assert_eq!(
            self.readers.load(Ordering::SeqCst),
            0,
            "exclusive with shared holders"
        );
    }
    fn exit_excl(&self, me: u64) {
        assert_eq!(
            self.writer.swap(0, Ordering::SeqCst),
            me,
            "writer changed under us"
        );
    }
    fn enter_shared(&self) {
        self.readers.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            self.writer.load(Ordering::SeqCst),
            0,
            "shared with an exclusive holder"
        );
    }
    fn exit_shared(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A token named `name` around a fresh overlap checker.
const fn checked(name: &'static str) -> Token<Checked> {
    Token::new(
        name,
        Checked {
            writer: AtomicU64::new(0),
            readers: AtomicU64::new(0),
            value: AtomicU64::new(0),
        },
    )
}

static S0: Token<Checked> = checked("s0");
static S1: Token<Checked> = checked("s1");
static S2: Token<Checked> = checked("s2");

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// One critical section over a random subset of the three tokens, with
/// random recursion, shared/exclusive modes, and sometimes a sleep or a
/// yield while holding (which releases everything until we run again).
fn random_section(td: &mut CurThread, rng: &mut u64, me: u64, acq: &AtomicU64) {
    let toks = [&S0, &S1, &S2];
    let r = xorshift(rng);
    let first = (r % 3) as usize;
    let second = ((r >> 8) % 3) as usize;
    let shared_first = r & (1 << 16) != 0;
    let block = (r >> 20) % 32;
    if shared_first {
        let g = td.get_token_shared(toks[first]);
        acq.fetch_add(1, Ordering::Relaxed);
        {
            let d = g.get(td);
            d.enter_shared();
            std::hint::black_box(d.value.load(Ordering::Relaxed));
            d.exit_shared();
        }
        if block == 0 {
            td.yield_now();
        }
        // Another token, exclusively (different from `first` to avoid the s/x rule).
        let other = if second == first {
            (first + 1) % 3
        } else {
            second
        };
        let x = td.get_token(toks[other]);
        acq.fetch_add(1, Ordering::Relaxed);
        {
            let d = x.get(td);
            d.enter_excl(me);
            d.value.fetch_add(1, Ordering::Relaxed);
            d.exit_excl(me);
        }
        let d = g.get(td);
        d.enter_shared();
        d.exit_shared();
    } else {
        let g = td.get_token(toks[first]);
        acq.fetch_add(1, Ordering::Relaxed);
        {
            let d = g.get(td);
            d.enter_excl(me);
            d.value.fetch_add(1, Ordering::Relaxed);
            d.exit_excl(me);
        }
        if block == 1 {
            td.sleep_for(Duration::from_micros(20)).unwrap();
        } else if block == 2 {
            td.yield_now();
        }
        // Recursion (exclusive or shared) and a second token.
        if r & (1 << 17) != 0 {
            let g2 = td.get_token(toks[first]);
            acq.fetch_add(1, Ordering::Relaxed);
            let d = g2.get(td);
            d.enter_excl(me);
            d.exit_excl(me);
        } else {
            let s = td.get_token_shared(toks[first]);
            acq.fetch_add(1, Ordering::Relaxed);
            let d = s.get(td);
            d.enter_shared();
            d.exit_shared();
        }
        let y = td.get_token(toks[second]);
        acq.fetch_add(1, Ordering::Relaxed);
        {
            let d = y.get(td);
            d.enter_excl(me);
            d.exit_excl(me);
        }
        if block == 3 {
            td.yield_now();
            let d = y.get(td);
            d.enter_excl(me);
            d.exit_excl(me);
        }
    }
}

#[test]
fn stress_every_cpu_8_threads_3_tokens_a_million_acquisitions() {
    bounded(240, "token stress", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let acq = Arc::new(AtomicU64::new(0));
        let a = acq.clone();
        rt.block_on(move |td| {
            let n = td.ncpus();
            let target = 1_000_000u64;
            let mut hs = Vec::new();
            for c in 0..n {
                for k in 0..8u64 {
                    let a = a.clone();
                    hs.push(
                        ThreadBuilder::new()
                            .cpu(c)
                            .spawn(td, move |td| {
                                let me = (c as u64) << 8 | k | 1 << 32;
                                let mut rng = 0x9E37_79B9 ^ me.wrapping_mul(0x2545_F491_4F6C_DD1D);
                                while a.load(Ordering::Relaxed) < target {
                                    random_section(td, &mut rng, me, &a);
                                    td.maybe_yield();
                                }
                            })
                            .unwrap(),
                    );
                }
            }
            for h in hs {
                h.join(td).unwrap();
            }
        });
        assert!(acq.load(Ordering::SeqCst) >= 1_000_000);
        let s = rt.stats().total;
        assert!(
            s.token_blocks > 0 || s.token_attempts > 0,
            "no contention seen: {s:?}"
        );
    });
}

/// The token word's ownership rule on real hardware: exclusive holders
/// release with a plain store, downgrades are plain stores, and blocked
/// exclusive requests set the request bit on words held shared only. Two
/// threads per CPU on both CPUs mix exclusive sections, downgrades
/// (exclusive, then nested shared, then the exclusive guard dropped
/// first) and shared sections, some yielding while they hold; every
/// section checks that no exclusive holder overlaps another holder.
#[test]
fn exclusive_releases_and_downgrades_race_with_requests_across_cpus() {
    static S3: Token<Checked> = checked("s3");
    bounded(120, "downgrade race", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        rt.block_on(move |td| {
            let target = 2_000_000u64;
            let mut hs = Vec::new();
            for c in 0..2usize {
                for k in 0..2u64 {
                    let d = d.clone();
                    hs.push(
                        ThreadBuilder::new()
                            .cpu(c)
                            .spawn(td, move |td| {
                                let me = (c as u64) << 8 | k | 1 << 40;
                                let mut rng = 0x2545_F491 ^ me.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                                while d.load(Ordering::Relaxed) < target {
                                    let r = xorshift(&mut rng);
                                    match r % 4 {
                                        0 | 1 => {
                                            let g = td.get_token(&S3);
                                            let x = g.get(td);
                                            x.enter_excl(me);
                                            x.value.fetch_add(1, Ordering::Relaxed);
                                            x.exit_excl(me);
                                        }
                                        2 => {
                                            let g = td.get_token(&S3);
                                            {
                                                let x = g.get(td);
                                                x.enter_excl(me);
                                                x.value.fetch_add(1, Ordering::Relaxed);
                                                x.exit_excl(me);
                                            }
                                            let s = td.get_token_shared(&S3);
                                            drop(g); // downgrade: a plain store
                                            s.get(td).enter_shared();
                                            if r & 0x100 != 0 {
                                                s.get(td).exit_shared();
                                                td.yield_now(); // released, re-taken shared
                                                s.get(td).enter_shared();
                                            }
                                            s.get(td).exit_shared();
                                        }
                                        _ => {
                                            let s = td.get_token_shared(&S3);
                                            s.get(td).enter_shared();
                                            std::hint::black_box(
                                                s.get(td).value.load(Ordering::Relaxed),
                                            );
                                            s.get(td).exit_shared();
                                        }
                                    }
                                    d.fetch_add(1, Ordering::Relaxed);
                                    td.maybe_yield();
                                }
                            })
                            .unwrap(),
                    );
                }
            }
            for h in hs {
                h.join(td).unwrap();
            }
            assert!(!S3.is_held_exclusive());
            assert_eq!(S3.shared_holders(), 0);
            // Nothing left behind: the token is free for an exclusive taker
            // without a wait.
            assert!(td.try_token(&S3).is_some());
        });
        assert!(done.load(Ordering::SeqCst) >= 2_000_000);
        assert!(S3.collisions() > 0, "no contention seen on the token");
    });
}

#[test]
fn ab_ba_with_sleeps_between_completes() {
    static A: Token<u32> = Token::new("A", 0);
    static B: Token<u32> = Token::new("B", 0);
    bounded(60, "AB/BA", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let mut hs = Vec::new();
            for i in 0..8usize {
                hs.push(
                    ThreadBuilder::new()
                        .cpu(i % 2)
                        .spawn(td, move |td| {
                            for _ in 0..200 {
                                let (first, second) = if i % 2 == 0 { (&A, &B) } else { (&B, &A) };
                                let g1 = td.get_token(first);
                                *g1.get(td) += 1;
                                td.sleep_for(Duration::from_micros(10)).unwrap();
                                let g2 = td.get_token(second);
                                *g2.get(td) += 1;
                                *g1.get(td) += 1;
                            }
                        })
                        .unwrap(),
                );
            }
            for h in hs {
                h.join(td).unwrap();
            }
            let a = td.get_token(&A);
            let b = td.get_token(&B);
            let total = *a.get(td) + *b.get(td);
            assert_eq!(total, 8 * 200 * 3);
        });
    });
}

#[test]
fn token_held_across_sleep_is_released_and_changes_are_seen() {
    static T: Token<Vec<&'static str>> = Token::new("held-across-sleep", Vec::new());
    bounded(30, "held across sleep", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let chan = Arc::new(AtomicUsize::new(0));
            let c = chan.clone();
            let g = td.get_token(&T);
            g.get(td).push("holder");
            let other = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    // Blocks until the holder sleeps, then changes the data.
                    let g = td.get_token(&T);
                    g.get(td).push("other");
                    c.store(1, Ordering::SeqCst);
                    lwkt::wakeup(&*c);
                })
                .unwrap();
            while chan.load(Ordering::SeqCst) == 0 {
                td.sleep_interlock(&*chan);
                if chan.load(Ordering::SeqCst) != 0 {
                    td.sleep_remove();
                    break;
                }
                td.sleep(&*chan, lwkt::Sleep::default()).unwrap();
            }
            // Awake and holding T again: the other thread's change is visible.
            assert_eq!(*g.get(td), ["holder", "other"]);
            other.join(td).unwrap();
        });
    });
}

#[test]
fn shared_holders_run_concurrently() {
    static T: Token<AtomicUsize> = Token::new("shared-concurrent", AtomicUsize::new(0));
    bounded(30, "shared concurrent", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let hs: Vec<_> = (0..2)
                .map(|c| {
                    ThreadBuilder::new()
                        .cpu(c)
                        .spawn(td, |td| {
                            let g = td.get_token_shared(&T);
                            let d = g.get(td);
                            d.fetch_add(1, Ordering::SeqCst);
                            // Both must be inside at once for either to leave.
                            let t0 = Instant::now();
                            while d.load(Ordering::SeqCst) < 2 {
                                assert!(
                                    t0.elapsed() < Duration::from_secs(10),
                                    "shared holders did not overlap"
                                );
                                std::hint::spin_loop();
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
        });
    });
}

#[test]
fn exclusive_waiter_is_not_starved_by_a_stream_of_shared_holders() {
    static T: Token<u64> = Token::new("excl-vs-shared-stream", 0);
    bounded(60, "exclreq", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let stop = Arc::new(AtomicBool::new(false));
            let rounds = Arc::new(AtomicU64::new(0));
            // Shared holders on both CPUs, overlapping so the token is never
            // free if they ignored a waiting exclusive request.
            let readers: Vec<_> = (0..6)
                .map(|i| {
                    let (stop, rounds) = (stop.clone(), rounds.clone());
                    ThreadBuilder::new()
                        .cpu(i % 2)
                        .spawn(td, move |td| {
                            while !stop.load(Ordering::SeqCst) {
                                let g = td.get_token_shared(&T);
                                let _ = *g.get(td);
                                rounds.fetch_add(1, Ordering::Relaxed);
                                td.yield_now(); // releases, then re-acquires
                                drop(g);
                            }
                        })
                        .unwrap()
                })
                .collect();
            while rounds.load(Ordering::Relaxed) < 1000 {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            let before = rounds.load(Ordering::Relaxed);
            let writer = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, |td| {
                    let g = td.get_token(&T);
                    *g.get(td) = 42;
                })
                .unwrap();
            let t0 = Instant::now();
            while !writer.is_finished() {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "exclusive waiter starved"
                );
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            writer.join(td).unwrap();
            let during = rounds.load(Ordering::Relaxed) - before;
            stop.store(true, Ordering::SeqCst);
            for r in readers {
                r.join(td).unwrap();
            }
            let g = td.get_token_shared(&T);
            assert_eq!(*g.get(td), 42);
            // The stream kept going while the writer waited (it was a real stream).
            assert!(during > 0, "the shared stream stalled");
        });
    });
}

#[test]
fn many_threads_many_tokens_random_orders_complete_and_ordered_fallback_engages() {
    static TOKS: [Token<u64>; 6] = [
        Token::new("m0", 0),
        Token::new("m1", 0),
        Token::new("m2", 0),
        Token::new("m3", 0),
        Token::new("m4", 0),
        Token::new("m5", 0),
    ];
    bounded(120, "random orders", || {
        let rt = Runtime::builder()
            .cpus(2)
            .token_spin_loops(1)
            .token_backoff_max(0)
            .build()
            .unwrap();
        rt.block_on(|td| {
            let hs: Vec<_> = (0..32u64)
                .map(|i| {
                    ThreadBuilder::new()
                        .cpu((i % 2) as usize)
                        .spawn(td, move |td| {
                            let mut rng = 0x1234_5678 ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                            for _ in 0..300 {
                                let r = xorshift(&mut rng);
                                let n = 2 + (r % 3) as usize;
                                let mut idx: Vec<usize> = Vec::new();
                                let mut rr = r >> 8;
                                while idx.len() < n {
                                    let k = (rr % 6) as usize;
                                    rr = rr / 6 + 7;
                                    if !idx.contains(&k) {
                                        idx.push(k);
                                    }
                                }
                                let mut gs = Vec::new();
                                for &k in &idx {
                                    gs.push(td.get_token(&TOKS[k]));
                                }
                                for g in gs.iter_mut() {
                                    *g.get(td) += 1;
                                }
                                // Hold them while running a little, sometimes yielding.
                                for _ in 0..200 {
                                    std::hint::spin_loop();
                                }
                                if r & 1 == 0 {
                                    td.yield_now();
                                }
                                assert_eq!(gs.len(), n);
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
        });
        let s = rt.stats().total;
        assert!(s.token_failures > 0, "no scheduler-level contention: {s:?}");
        assert!(
            s.token_ordered_passes > 0,
            "ordered fallback never engaged: {s:?}"
        );
    });
}

#[test]
fn panic_while_holding_tokens_releases_them() {
    static A: Token<u32> = Token::new("pa", 0);
    static B: Token<u32> = Token::new("pb", 0);
    bounded(30, "panic with tokens", || {
        let rt = rt(2);
        rt.block_on(|td| {
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, |td| {
                    let a = td.get_token(&A);
                    let _b = td.get_token_shared(&B);
                    *a.get(td) = 7;
                    // A forgotten guard must not keep the token forever either.
                    std::mem::forget(td.get_token(&A));
                    panic!("while holding");
                })
                .unwrap();
            assert!(h.join(td).unwrap_err().message().contains("while holding"));
            assert!(!A.is_held_exclusive());
            assert_eq!(B.shared_holders(), 0);
            // Others go on.
            let a = td.get_token(&A);
            assert_eq!(*a.get(td), 7);
            drop(a);
            let g = td.get_token(&B);
            drop(g);
        });
    });
}

#[test]
fn waiting_thread_shows_token_name_as_wait_message() {
    static T: Token<()> = Token::new("the-vm-token", ());
    bounded(30, "wmesg", || {
        let rt = rt(2);
        let h = rt.handle();
        let held = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (hd, rl) = (held.clone(), release.clone());
        // The holder keeps running (a switch would release the token); at a
        // higher priority, maybe_yield() only answers IPIs, never switches.
        let holder = ThreadBuilder::new()
            .cpu(0)
            .priority(Priority::SOFT_NORM)
            .spawn_from(&h, move |td| {
                let _g = td.get_token(&T);
                hd.store(true, Ordering::SeqCst);
                while !rl.load(Ordering::SeqCst) {
                    td.maybe_yield();
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        while !held.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let waiter = ThreadBuilder::new()
            .cpu(1)
            .name("waiter")
            .spawn_from(&h, |td| {
                let _g = td.get_token(&T);
                td.cpu()
            })
            .unwrap();
        let t0 = Instant::now();
        loop {
            let list = h.threads();
            if let Some(w) = list.iter().find(|i| i.name.as_deref() == Some("waiter")) {
                if w.wmesg == "the-vm-token" {
                    assert_eq!(w.state, lwkt::ThreadState::TokenWait, "{w}");
                    assert_eq!(w.cpu, 1);
                    assert_eq!(w.priority, Priority::KERN_DAEMON);
                    let hl = list
                        .iter()
                        .find(|i| i.priority == Priority::SOFT_NORM)
                        .unwrap();
                    assert_eq!(hl.state, lwkt::ThreadState::Running, "{hl}");
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "wait message never showed: {list:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        release.store(true, Ordering::SeqCst);
        holder.join_blocking().unwrap();
        assert_eq!(waiter.join_blocking().unwrap(), 1);
    });
}

#[test]
fn pool_tokens_by_address() {
    bounded(30, "pool", || {
        let objs: Vec<u64> = (0..1000).collect();
        let a = pool_token(&objs[0]);
        assert!(std::ptr::eq(a, pool_token(&objs[0])));
        let distinct: std::collections::HashSet<usize> = objs
            .iter()
            .map(|o| pool_token(o) as *const Token<()> as usize)
            .collect();
        assert!(
            distinct.len() > 900,
            "pool hashing clusters: {}",
            distinct.len()
        );
        rt(2).block_on(move |td| {
            let counter = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..4)
                .map(|i| {
                    let c = counter.clone();
                    ThreadBuilder::new()
                        .cpu(i % 2)
                        .spawn(td, move |td| {
                            for _ in 0..2000 {
                                let _g = td.get_token(pool_token(&*c));
                                // Non-atomic read-modify-write under the token.
                                let v = c.load(Ordering::Relaxed);
                                std::hint::spin_loop();
                                c.store(v + 1, Ordering::Relaxed);
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
            assert_eq!(counter.load(Ordering::SeqCst), 8000);
        });
    });
}
