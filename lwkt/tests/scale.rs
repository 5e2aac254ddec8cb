//! The big-CPU code paths, run oversubscribed on a small machine for
//! correctness (not speed): runtimes of 64 and 200 CPUs doing cross-CPU
//! wakeups, `wakeup_one` across CPUs, migration, and token contention.
//! Above 62 CPUs several source CPUs share one attention bit, so the
//! 200-CPU runs exercise the grouped IPI path.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::{Runtime, Sleep, ThreadBuilder, Token};

fn runtime(cpus: usize) -> Runtime {
    Runtime::builder()
        .cpus(cpus)
        .idle_spin(Duration::from_micros(5))
        .build()
        .unwrap()
}

/// A baton passed around a ring of one thread per CPU: every hop is a
/// wakeup of the next CPU's thread (an IPI), and no hop may be lost.
fn ring(cpus: usize, rounds: u64) {
    let rt = runtime(cpus);
    let hops = rt.block_on(move |td| {
        let baton = Arc::new(AtomicU64::new(0));
        let total = rounds * cpus as u64;
        let hs: Vec<_> = (0..cpus)
            .map(|c| {
                let b = baton.clone();
                ThreadBuilder::new()
                    .cpu(c)
                    .spawn(td, move |td| {
                        let mut mine = c as u64;
                        let mut seen = 0u64;
                        while mine < total {
                            td.sleep_until(
                                &*b,
                                Sleep::default().timeout(Duration::from_secs(20)),
                                || b.load(Ordering::Acquire) == mine,
                            )
                            .expect("a hop was lost: the sleep timed out");
                            assert_eq!(td.cpu(), c);
                            seen += 1;
                            b.store(mine + 1, Ordering::Release);
                            lwkt::wakeup(&*b);
                            mine += cpus as u64;
                        }
                        seen
                    })
                    .unwrap()
            })
            .collect();
        hs.into_iter().map(|h| h.join(td).unwrap()).sum::<u64>()
    });
    assert_eq!(hops, rounds * cpus as u64);
}

#[test]
fn wakeup_ring_across_64_cpus() {
    bounded(120, "64-cpu ring", || ring(64, 20));
}

#[test]
fn wakeup_ring_across_200_cpus() {
    bounded(120, "200-cpu ring", || ring(200, 10));
}

/// `wakeup_one` walks the CPUs with sleepers on the channel (a bit scan
/// over the bucket mask) and wakes exactly one sleeper per call.
#[test]
fn wakeup_one_reaches_sleepers_on_distant_cpus_one_at_a_time() {
    bounded(120, "wakeup_one across 200 cpus", || {
        let rt = runtime(200);
        let woken = rt.block_on(|td| {
            let chan = Arc::new(AtomicUsize::new(0));
            let woken = Arc::new(AtomicUsize::new(0));
            let asleep = Arc::new(AtomicUsize::new(0));
            // Sleepers on far-apart CPUs, in several mask words.
            let cpus = [3usize, 63, 64, 127, 128, 150, 199];
            let hs: Vec<_> = cpus
                .iter()
                .map(|&c| {
                    let (ch, w, a) = (chan.clone(), woken.clone(), asleep.clone());
                    ThreadBuilder::new()
                        .cpu(c)
                        .spawn(td, move |td| {
                            td.sleep_interlock(&*ch);
                            a.fetch_add(1, Ordering::SeqCst);
                            td.sleep(&*ch, Sleep::default().timeout(Duration::from_secs(30)))
                                .expect("every sleeper is woken by wakeup_one");
                            w.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap()
                })
                .collect();
            let t0 = Instant::now();
            while asleep.load(Ordering::SeqCst) < cpus.len() {
                assert!(t0.elapsed() < Duration::from_secs(60));
                let _ = td.sleep_for(Duration::from_millis(1));
            }
            for i in 1..=cpus.len() {
                lwkt::wakeup_one(&*chan);
                let t0 = Instant::now();
                while woken.load(Ordering::SeqCst) < i {
                    assert!(
                        t0.elapsed() < Duration::from_secs(30),
                        "wakeup_one #{i} was lost"
                    );
                    let _ = td.sleep_for(Duration::from_millis(1));
                }
                let _ = td.sleep_for(Duration::from_millis(5));
                assert_eq!(
                    woken.load(Ordering::SeqCst),
                    i,
                    "wakeup_one woke more than one"
                );
            }
            for h in hs {
                h.join(td).unwrap();
            }
            woken.load(Ordering::SeqCst)
        });
        assert_eq!(woken, 7);
    });
}

/// Threads hop between random CPUs of a 200-CPU runtime while holding a
/// token: each lands on the CPU it asked for, and the token's counter
/// shows every increment.
#[test]
fn migration_and_token_contention_across_200_cpus() {
    static TOK: Token<u64> = Token::new("scale", 0);
    bounded(120, "migration on 200 cpus", || {
        let rt = runtime(200);
        let n_threads = 16u64;
        let hops = 50u64;
        let total = rt.block_on(move |td| {
            let hs: Vec<_> = (0..n_threads)
                .map(|i| {
                    ThreadBuilder::new()
                        .cpu((i as usize * 13) % 200)
                        .spawn(td, move |td| {
                            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                            let g = td.get_token(&TOK);
                            for _ in 0..hops {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let to = (x % 200) as usize;
                                *g.get(td) += 1;
                                // SAFETY: nothing thread-bound is live here.
                                unsafe { td.migrate(to).unwrap() };
                                assert_eq!(td.cpu(), to, "migrated to the wrong CPU");
                                *g.get(td) += 1;
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
            let g = td.get_token(&TOK);
            *g.get(td)
        });
        assert_eq!(total, n_threads * hops * 2);
    });
}

/// One thread per CPU increments one token: exclusion holds across 64
/// CPUs and the count is exact.
#[test]
fn token_contention_across_64_cpus() {
    static TOK: Token<u64> = Token::new("scale64", 0);
    bounded(120, "tokens on 64 cpus", || {
        let rt = runtime(64);
        let per = 2_000u64;
        let total = rt.block_on(move |td| {
            let hs: Vec<_> = (0..64)
                .map(|c| {
                    ThreadBuilder::new()
                        .cpu(c)
                        .spawn(td, move |td| {
                            for _ in 0..per {
                                let g = td.get_token(&TOK);
                                let v = g.get(td);
                                let before = *v;
                                std::hint::spin_loop();
                                *v = before + 1;
                                drop(g);
                                td.maybe_yield();
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
            let g = td.get_token(&TOK);
            *g.get(td)
        });
        assert_eq!(total, 64 * per);
    });
}
