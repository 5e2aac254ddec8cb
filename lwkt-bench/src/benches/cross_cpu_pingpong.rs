//! `cross_cpu_pingpong`: a thread on CPU 0 wakes a thread on CPU 1, which
//! wakes it back; the figure is ns per round trip (two wakeups).
//!
//! Work-stealing runtimes (may, tokio) decide themselves where a woken task
//! runs and often run both sides on one worker; their notes say how often
//! the two sides were seen on the same OS thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, may_go, Bench, Better, Impl};
use crate::harness::{
    gettid, ncpus, ns_per_op, pin_current_thread, same_thread_note, Ctx, RunResult, Sample,
};

pub static BENCH: Bench = Bench {
    name: "cross_cpu_pingpong",
    unit: "ns/op",
    better: Better::Lower,
    about: "CPU 0 wakes CPU 1 which wakes CPU 0, ns per round trip",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "may",
            run: may,
        },
        Impl {
            name: "tokio",
            run: tokio,
        },
        Impl {
            name: "tokio_2rt",
            run: tokio_2rt,
        },
        Impl {
            name: "std_thread",
            run: std_thread,
        },
        Impl {
            name: "spin_floor",
            run: spin_floor,
        },
    ],
    timeout: Duration::from_secs(60),
};

/// Sample which OS thread each side runs on every `SAMPLE_EVERY` rounds.
const SAMPLE_EVERY: u64 = 1024;

fn need_two_cpus() -> Result<(), String> {
    if ncpus() < 2 {
        Err("needs at least 2 CPUs".into())
    } else {
        Ok(())
    }
}

/// Sleeps on `seq` until it holds `want`.
fn lwkt_wait_for(td: &mut lwkt::CurThread, seq: &AtomicU64, want: u64) {
    lwkt_sleep_until(td, seq, "pingpong", || seq.load(Ordering::Acquire) == want);
}

fn lwkt(ctx: &Ctx) -> RunResult {
    need_two_cpus()?;
    let ctx = *ctx;
    let rt = lwkt::Runtime::builder()
        .cpus(2)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let before = rt.stats().total;
    let (ns, trips) = rt.block_on(move |td| {
        let mut trips = 0u64;
        let ns = ns_per_op(&ctx, |n| {
            trips += n;
            let seq = Arc::new(AtomicU64::new(0));
            let pong_seq = seq.clone();
            let pong = lwkt::ThreadBuilder::new()
                .name("pong")
                .cpu(1)
                .spawn(td, move |td| {
                    assert_eq!(td.cpu(), 1, "pong not on cpu 1");
                    for i in 0..n {
                        lwkt_wait_for(td, &pong_seq, 2 * i + 1);
                        pong_seq.store(2 * i + 2, Ordering::Release);
                        lwkt::wakeup(&*pong_seq);
                    }
                })
                .expect("spawn pong");
            let ping = lwkt::ThreadBuilder::new()
                .name("ping")
                .cpu(0)
                .spawn(td, move |td| {
                    assert_eq!(td.cpu(), 0, "ping not on cpu 0");
                    let start = Instant::now();
                    for i in 0..n {
                        seq.store(2 * i + 1, Ordering::Release);
                        lwkt::wakeup(&*seq);
                        lwkt_wait_for(td, &seq, 2 * i + 2);
                    }
                    start.elapsed()
                })
                .expect("spawn ping");
            let d = ping.join(td);
            let p = pong.join(td);
            assert!(p.is_ok(), "pong panicked");
            d.unwrap_or_else(|_| panic!("ping panicked"))
        });
        (ns, trips)
    });
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / trips.max(1) as f64;
    Ok(Sample::with_note(
        ns,
        format!(
            "2 cpus; AtomicU64 sequence + wakeup / sleep_interlock + sleep; per round trip: \
             {:.2} IPIs sent (to a parked CPU), {:.2} avoided, {:.2} CPU parks",
            per(after.ipis_sent, before.ipis_sent),
            per(after.ipis_avoided, before.ipis_avoided),
            per(after.parks, before.parks),
        ),
    ))
}

/// Counts of (same OS thread, samples) gathered from two tid logs.
fn compare_tids(a: &[(u64, i64)], b: &[(u64, i64)]) -> (usize, usize) {
    let same = a
        .iter()
        .zip(b)
        .filter(|((ia, ta), (ib, tb))| ia == ib && ta == tb)
        .count();
    (same, a.len().min(b.len()))
}

fn may(ctx: &Ctx) -> RunResult {
    need_two_cpus()?;
    may::config().set_workers(2);
    let (mut same, mut total) = (0, 0);
    let ns = ns_per_op(ctx, |n| {
        let (to_pong, from_ping) = may::sync::mpsc::channel::<u64>();
        let (to_ping, from_pong) = may::sync::mpsc::channel::<u64>();
        let pong = may_go(move || {
            let mut tids = Vec::new();
            for i in 0..n {
                let v = from_ping.recv().expect("ping hung up");
                if i % SAMPLE_EVERY == 0 {
                    tids.push((i, gettid()));
                }
                to_ping.send(v + 1).expect("ping hung up");
            }
            tids
        });
        let ping = may_go(move || {
            let mut tids = Vec::new();
            let start = Instant::now();
            for i in 0..n {
                if i % SAMPLE_EVERY == 0 {
                    tids.push((i, gettid()));
                }
                to_pong.send(i).expect("pong hung up");
                from_pong.recv().expect("pong hung up");
            }
            (start.elapsed(), tids)
        });
        let (d, a) = ping.join().expect("ping panicked");
        let b = pong.join().expect("pong panicked");
        let (s, t) = compare_tids(&a, &b);
        same += s;
        total += t;
        d
    });
    Ok(Sample::with_note(
        ns,
        format!(
            "2 workers, may::sync::mpsc channels; {}",
            same_thread_note(same, total)
        ),
    ))
}

fn tokio(ctx: &Ctx) -> RunResult {
    need_two_cpus()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let (mut same, mut total) = (0, 0);
    let ns = ns_per_op(ctx, |n| {
        let (d, a, b) = rt.block_on(async move {
            let ping_n = Arc::new(tokio::sync::Notify::new());
            let pong_n = Arc::new(tokio::sync::Notify::new());
            let (pi, po) = (ping_n.clone(), pong_n.clone());
            let pong = tokio::spawn(async move {
                let mut tids = Vec::new();
                for i in 0..n {
                    pi.notified().await;
                    if i % SAMPLE_EVERY == 0 {
                        tids.push((i, gettid()));
                    }
                    po.notify_one();
                }
                tids
            });
            let ping = tokio::spawn(async move {
                let mut tids = Vec::new();
                let start = Instant::now();
                for i in 0..n {
                    if i % SAMPLE_EVERY == 0 {
                        tids.push((i, gettid()));
                    }
                    ping_n.notify_one();
                    pong_n.notified().await;
                }
                (start.elapsed(), tids)
            });
            let (d, a) = ping.await.expect("ping panicked");
            let b = pong.await.expect("pong panicked");
            (d, a, b)
        });
        let (s, t) = compare_tids(&a, &b);
        same += s;
        total += t;
        d
    });
    Ok(Sample::with_note(
        ns,
        format!(
            "multi_thread runtime, 2 workers, two tasks, tokio::sync::Notify; {}",
            same_thread_note(same, total)
        ),
    ))
}

/// tokio really crossing CPUs: `tokio` above lets both tasks share one
/// worker, so its figure is a same-thread hand-off. Here each side is a
/// current_thread runtime on its own OS thread, pinned to CPUs 0 and 1,
/// and they wake each other through `tokio::sync::Notify`.
fn tokio_2rt(ctx: &Ctx) -> RunResult {
    need_two_cpus()?;
    let mut pinned_note = String::new();
    let ns = ns_per_op(ctx, |n| {
        let ping_n = Arc::new(tokio::sync::Notify::new());
        let pong_n = Arc::new(tokio::sync::Notify::new());
        let side = |me: usize, mine: Arc<tokio::sync::Notify>, other: Arc<tokio::sync::Notify>| {
            std::thread::spawn(move || {
                let pinned = pin_current_thread(me);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("tokio current_thread runtime");
                let d = rt.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..n {
                        if me == 0 {
                            other.notify_one();
                            mine.notified().await;
                        } else {
                            mine.notified().await;
                            other.notify_one();
                        }
                    }
                    start.elapsed()
                });
                (d, pinned)
            })
        };
        let pong = side(1, ping_n.clone(), pong_n.clone());
        let ping = side(0, pong_n, ping_n);
        let (d, p0) = ping.join().expect("ping panicked");
        let (_, p1) = pong.join().expect("pong panicked");
        pinned_note = match (p0, p1) {
            (Ok(()), Ok(())) => "pinned to CPUs 0 and 1".into(),
            (a, b) => format!("pinning: {a:?} / {b:?}"),
        };
        d
    });
    Ok(Sample::with_note(
        ns,
        format!(
            "two current_thread runtimes on two OS threads ({pinned_note}), tokio::sync::Notify; \
             a real cross-CPU round trip, unlike `tokio`"
        ),
    ))
}

/// Two OS threads pinned to CPUs 0 and 1, sleeping in `park` between
/// turns (futex).
fn std_thread(ctx: &Ctx) -> RunResult {
    pinned_pair(
        ctx,
        true,
        "two OS threads pinned to CPUs 0 and 1, AtomicU64 sequence + park/unpark (futex)",
    )
}

/// The hardware floor: two OS threads pinned to CPUs 0 and 1 pass one
/// `AtomicU64` back and forth, spinning instead of sleeping. Nothing that
/// wakes a thread on another CPU can beat it; it is here to show how much
/// of every other figure is the machine's own cache-line transfers.
fn spin_floor(ctx: &Ctx) -> RunResult {
    pinned_pair(
        ctx,
        false,
        "two OS threads pinned to CPUs 0 and 1 spinning on one AtomicU64, never sleeping: \
         the machine's floor for a cross-CPU round trip",
    )
}

/// Two OS threads pinned to CPUs 0 and 1 passing a sequence number back
/// and forth: side 0 posts odd numbers, side 1 answers with even ones.
/// `sleepy`: wait in `park` (woken by `unpark`) instead of spinning.
fn pinned_pair(ctx: &Ctx, sleepy: bool, note: &str) -> RunResult {
    need_two_cpus()?;
    let mut err = None;
    let ns = ns_per_op(ctx, |n| {
        let seq = Arc::new(AtomicU64::new(0));
        let handles: Arc<[OnceLock<Thread>; 2]> = Arc::new([OnceLock::new(), OnceLock::new()]);
        let barrier = Arc::new(Barrier::new(2));
        let side = |me: usize| {
            let (seq, handles, barrier) = (seq.clone(), handles.clone(), barrier.clone());
            std::thread::spawn(move || {
                let pinned = pin_current_thread(me);
                let _ = handles[me].set(std::thread::current());
                barrier.wait();
                let other = handles[1 - me].get().expect("peer registered").clone();
                let start = Instant::now();
                for i in 0..n {
                    if me == 0 {
                        seq.store(2 * i + 1, Ordering::Release);
                        if sleepy {
                            other.unpark();
                        }
                    }
                    let want = if me == 0 { 2 * i + 2 } else { 2 * i + 1 };
                    // Bounded: a lost update fails the run instead of hanging.
                    let mut spins = 0u64;
                    while seq.load(Ordering::Acquire) != want {
                        if sleepy {
                            std::thread::park();
                        } else {
                            std::hint::spin_loop();
                            spins += 1;
                            assert!(spins < 1 << 34, "peer never answered");
                        }
                    }
                    if me == 1 {
                        seq.store(2 * i + 2, Ordering::Release);
                        if sleepy {
                            other.unpark();
                        }
                    }
                }
                (start.elapsed(), pinned)
            })
        };
        let pong = side(1);
        let ping = side(0);
        let (d, p0) = ping.join().expect("ping panicked");
        let (_, p1) = pong.join().expect("pong panicked");
        if let Err(e) = p0.and(p1) {
            err = Some(e);
        }
        d
    });
    match err {
        Some(e) => Err(e),
        None => Ok(Sample::with_note(ns, note)),
    }
}
