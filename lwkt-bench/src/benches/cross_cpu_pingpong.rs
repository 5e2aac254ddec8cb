//! `cross_cpu_pingpong`: a thread on CPU 0 wakes a thread on CPU 1, which
//! wakes it back; the figure is wall ns per round trip (two wakeups), and
//! every row carries `cpu_ns`: the CPU time the whole process (both sides,
//! every runtime thread, user + system) consumed per round trip, read with
//! `getrusage(RUSAGE_SELF)` at the start and end of the timed region.
//!
//! Wall time alone would flatter a runtime that spins: lwkt's idle CPU
//! polls its FIFOs for [`lwkt::DEFAULT_IDLE_SPIN`] before it parks, while
//! `std_thread` and `tokio_2rt` park on a futex at once. `cpu_ns` shows
//! that price, and `std_thread_spin` gives plain OS threads the same
//! spin-then-park policy and budget, so the policy and the runtime can be
//! told apart.
//!
//! The real cross-CPU rows are `lwkt`, `tokio_2rt`, `std_thread`,
//! `std_thread_spin` (and `spin_floor`, the hardware's floor). Work-stealing
//! runtimes (`may`, `tokio`) decide themselves where a woken task runs and
//! here run both sides on one worker: those rows are same-thread hand-offs,
//! kept for reference, and their notes say how often the two sides were
//! seen on the same OS thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, may_go, Bench, Better, Impl};
use crate::harness::{
    allowed_cpus, gettid, ncpus, pin_current_thread, same_thread_note, time_per_op, Ctx, PerOp,
    RunResult, Sample, Stopwatch,
};

pub static BENCH: Bench = Bench {
    name: "cross_cpu_pingpong",
    unit: "ns/op",
    better: Better::Lower,
    about: "CPU 0 wakes CPU 1 which wakes CPU 0, wall ns per round trip (cpu_ns: process CPU \
            ns per round trip)",
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
            name: "std_thread_spin",
            run: std_thread_spin,
        },
        Impl {
            name: "spin_floor",
            run: spin_floor,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &["tokio", "may", "spin_floor"],
};

/// Sample which OS thread each side runs on every `SAMPLE_EVERY` rounds.
const SAMPLE_EVERY: u64 = 1024;

/// Same-worker rows: tell the reader which rows lwkt ranks against.
const SAME_WORKER: &str = "a same-worker hand-off, not a cross-CPU round trip: rank lwkt \
                           against tokio_2rt, std_thread and std_thread_spin";

/// The two CPUs the pinned OS-thread rows use: the first two this process
/// may run on.
fn two_cpus() -> Result<[usize; 2], String> {
    match allowed_cpus().as_slice() {
        [a, b, ..] if ncpus() >= 2 => Ok([*a, *b]),
        _ => Err("needs at least 2 CPUs".into()),
    }
}

fn need_two_cpus() -> Result<(), String> {
    two_cpus().map(|_| ())
}

/// The row: wall spread, CPU per round trip, note.
fn sample(p: PerOp, note: impl Into<String>) -> Sample {
    Sample::with_spread(p.wall, note).cpu_ns(p.cpu.median)
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
    let (p, trips) = rt.block_on(move |td| {
        let mut trips = 0u64;
        let p = time_per_op(&ctx, |n| {
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
                    let watch = Stopwatch::start();
                    for i in 0..n {
                        seq.store(2 * i + 1, Ordering::Release);
                        lwkt::wakeup(&*seq);
                        lwkt_wait_for(td, &seq, 2 * i + 2);
                    }
                    watch.stop()
                })
                .expect("spawn ping");
            let d = ping.join(td);
            let p = pong.join(td);
            assert!(p.is_ok(), "pong panicked");
            d.unwrap_or_else(|_| panic!("ping panicked"))
        });
        (p, trips)
    });
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / trips.max(1) as f64;
    Ok(sample(
        p,
        format!(
            "2 cpus; AtomicU64 sequence + wakeup / sleep_interlock + sleep; an idle CPU polls \
             its FIFOs for up to {} µs (DEFAULT_IDLE_SPIN) before parking, and cpu_ns counts \
             that polling; per round trip: {:.2} IPIs sent (to a parked CPU), {:.2} avoided, \
             {:.2} CPU parks",
            lwkt::DEFAULT_IDLE_SPIN.as_micros(),
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
    let p = time_per_op(ctx, |n| {
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
            let watch = Stopwatch::start();
            for i in 0..n {
                if i % SAMPLE_EVERY == 0 {
                    tids.push((i, gettid()));
                }
                to_pong.send(i).expect("pong hung up");
                from_pong.recv().expect("pong hung up");
            }
            (watch.stop(), tids)
        });
        let (d, a) = ping.join().expect("ping panicked");
        let b = pong.join().expect("pong panicked");
        let (s, t) = compare_tids(&a, &b);
        same += s;
        total += t;
        d
    });
    Ok(sample(
        p,
        format!(
            "2 workers, may::sync::mpsc channels; {}; {SAME_WORKER}",
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
    let p = time_per_op(ctx, |n| {
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
                let watch = Stopwatch::start();
                for i in 0..n {
                    if i % SAMPLE_EVERY == 0 {
                        tids.push((i, gettid()));
                    }
                    ping_n.notify_one();
                    pong_n.notified().await;
                }
                (watch.stop(), tids)
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
    Ok(sample(
        p,
        format!(
            "multi_thread runtime, 2 workers, two tasks, tokio::sync::Notify; {}; {SAME_WORKER}",
            same_thread_note(same, total)
        ),
    ))
}

/// tokio really crossing CPUs: `tokio` above lets both tasks share one
/// worker, so its figure is a same-thread hand-off. Here each side is a
/// current_thread runtime on its own OS thread, pinned to CPUs 0 and 1,
/// and they wake each other through `tokio::sync::Notify`.
fn tokio_2rt(ctx: &Ctx) -> RunResult {
    let cpus = two_cpus()?;
    let mut pinned_note = String::new();
    let p = time_per_op(ctx, |n| {
        let ping_n = Arc::new(tokio::sync::Notify::new());
        let pong_n = Arc::new(tokio::sync::Notify::new());
        let side = |me: usize, mine: Arc<tokio::sync::Notify>, other: Arc<tokio::sync::Notify>| {
            std::thread::spawn(move || {
                let pinned = pin_current_thread(cpus[me]);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("tokio current_thread runtime");
                let d = rt.block_on(async move {
                    let watch = Stopwatch::start();
                    for _ in 0..n {
                        if me == 0 {
                            other.notify_one();
                            mine.notified().await;
                        } else {
                            mine.notified().await;
                            other.notify_one();
                        }
                    }
                    watch.stop()
                });
                (d, pinned)
            })
        };
        let pong = side(1, ping_n.clone(), pong_n.clone());
        let ping = side(0, pong_n, ping_n);
        let (d, p0) = ping.join().expect("ping panicked");
        let (_, p1) = pong.join().expect("pong panicked");
        pinned_note = match (p0, p1) {
            (Ok(()), Ok(())) => format!("pinned to CPUs {} and {}", cpus[0], cpus[1]),
            (a, b) => format!("pinning: {a:?} / {b:?}"),
        };
        d
    });
    Ok(sample(
        p,
        format!(
            "two current_thread runtimes on two OS threads ({pinned_note}), tokio::sync::Notify; \
             a real cross-CPU round trip, unlike `tokio`; an idle runtime parks its thread on a \
             futex at once"
        ),
    ))
}

/// Two OS threads pinned to CPUs 0 and 1, sleeping in `park` between
/// turns (futex).
fn std_thread(ctx: &Ctx) -> RunResult {
    pinned_pair(
        ctx,
        Wait::Park,
        "AtomicU64 sequence + park/unpark (futex): a waiting side parks at once",
    )
}

/// lwkt's idle policy on plain OS threads: the waiting side polls the
/// sequence for up to [`lwkt::DEFAULT_IDLE_SPIN`] (one pause per poll, the
/// clock read every 64 polls, as lwkt's idle loop does), then parks; the
/// other side always `unpark`s, which costs no system call while the
/// waiter is still polling (std's parker only makes the futex call for a
/// parked thread).
fn std_thread_spin(ctx: &Ctx) -> RunResult {
    let spin = lwkt::DEFAULT_IDLE_SPIN;
    pinned_pair(
        ctx,
        Wait::SpinThenPark(spin),
        &format!(
            "AtomicU64 sequence; a waiting side polls for up to {} µs (lwkt's \
             DEFAULT_IDLE_SPIN, the same policy and budget as lwkt's idle CPU), then parks \
             (futex); the other side always calls unpark, a system call only for a parked \
             thread",
            spin.as_micros()
        ),
    )
}

/// The hardware floor: two OS threads pinned to CPUs 0 and 1 pass one
/// `AtomicU64` back and forth, spinning instead of sleeping, to show how
/// much of every other figure is the machine's own cache-line transfers.
/// Rows whose waiting side also spins (`std_thread_spin`) land next to it
/// and can come out a little under it: it is the floor's order of
/// magnitude, not a bound to the nanosecond.
fn spin_floor(ctx: &Ctx) -> RunResult {
    pinned_pair(
        ctx,
        Wait::Spin,
        "spinning on one AtomicU64, never sleeping: the machine's floor for a cross-CPU \
         round trip, give or take the few ns by which std_thread_spin can beat it (cpu_ns: \
         two CPUs busy throughout)",
    )
}

/// How a side of [`pinned_pair`] waits for its turn.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// `park` at once (woken by `unpark`).
    Park,
    /// Poll for up to this long, then `park`.
    SpinThenPark(Duration),
    /// Poll forever.
    Spin,
}

/// Polls between clock reads while spinning with a budget (lwkt's idle
/// loop reads the clock as often).
const POLLS_PER_CLOCK_READ: u32 = 64;

impl Wait {
    /// Waits until `seq` holds `want`.
    #[inline]
    fn until(self, seq: &AtomicU64, want: u64) {
        let budget = match self {
            Wait::Park => Duration::ZERO,
            Wait::SpinThenPark(d) => d,
            Wait::Spin => {
                // Bounded: a lost update fails the run instead of hanging.
                let mut spins = 0u64;
                while seq.load(Ordering::Acquire) != want {
                    std::hint::spin_loop();
                    spins += 1;
                    assert!(spins < 1 << 34, "peer never answered");
                }
                return;
            }
        };
        if !budget.is_zero() {
            let start = Instant::now();
            let mut polls = 0u32;
            loop {
                if seq.load(Ordering::Acquire) == want {
                    return;
                }
                polls = polls.wrapping_add(1);
                if polls % POLLS_PER_CLOCK_READ == 0 && start.elapsed() >= budget {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        while seq.load(Ordering::Acquire) != want {
            std::thread::park();
        }
    }

    /// Whether the other side may be parked and must be unparked.
    fn parks(self) -> bool {
        !matches!(self, Wait::Spin)
    }
}

/// Two OS threads pinned to the first two CPUs passing a sequence number
/// back and forth: side 0 posts odd numbers, side 1 answers with even ones,
/// each waiting as `wait` says. `what` completes the note.
fn pinned_pair(ctx: &Ctx, wait: Wait, what: &str) -> RunResult {
    let cpus = two_cpus()?;
    let mut err = None;
    let p = time_per_op(ctx, |n| {
        let seq = Arc::new(AtomicU64::new(0));
        let handles: Arc<[OnceLock<Thread>; 2]> = Arc::new([OnceLock::new(), OnceLock::new()]);
        let barrier = Arc::new(Barrier::new(2));
        let side = |me: usize| {
            let (seq, handles, barrier) = (seq.clone(), handles.clone(), barrier.clone());
            std::thread::spawn(move || {
                let pinned = pin_current_thread(cpus[me]);
                let _ = handles[me].set(std::thread::current());
                barrier.wait();
                let other = handles[1 - me].get().expect("peer registered").clone();
                let watch = Stopwatch::start();
                for i in 0..n {
                    if me == 0 {
                        seq.store(2 * i + 1, Ordering::Release);
                        if wait.parks() {
                            other.unpark();
                        }
                    }
                    wait.until(&seq, if me == 0 { 2 * i + 2 } else { 2 * i + 1 });
                    if me == 1 {
                        seq.store(2 * i + 2, Ordering::Release);
                        if wait.parks() {
                            other.unpark();
                        }
                    }
                }
                (watch.stop(), pinned)
            })
        };
        let pong = side(1);
        let ping = side(0);
        let (t, p0) = ping.join().expect("ping panicked");
        let (_, p1) = pong.join().expect("pong panicked");
        if let Err(e) = p0.and(p1) {
            err = Some(e);
        }
        t
    });
    match err {
        Some(e) => Err(e),
        None => Ok(sample(
            p,
            format!(
                "two OS threads pinned to CPUs {} and {}, {what}",
                cpus[0], cpus[1]
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter that outlasts its spin budget parks, and the unpark that
    /// follows the store wakes it: no lost wakeup.
    #[test]
    fn spin_then_park_wakes_after_the_budget() {
        for wait in [
            Wait::Park,
            Wait::SpinThenPark(Duration::from_micros(50)),
            Wait::Spin,
        ] {
            let seq = Arc::new(AtomicU64::new(0));
            let s2 = seq.clone();
            let waiter = std::thread::spawn(move || wait.until(&s2, 1));
            // Well past the 50 µs budget: the waiter has parked by now
            // (or, for `Spin`, is still polling).
            std::thread::sleep(Duration::from_millis(5));
            seq.store(1, Ordering::Release);
            waiter.thread().unpark();
            waiter.join().unwrap();
        }
        // Already there: returns at once without parking.
        Wait::SpinThenPark(Duration::from_micros(50)).until(&AtomicU64::new(3), 3);
        assert!(Wait::Park.parks() && !Wait::Spin.parks());
    }
}
