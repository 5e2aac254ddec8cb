//! `yield_pingpong`: two threads on one CPU yield to each other; the figure
//! is wall time divided by the total number of yield calls, i.e. ns per
//! hand-off of the CPU from one thread to the other.
//!
//! corosensei is the floor for any stack-switching runtime: its row times a
//! bare `resume` + `suspend` round trip (two hand-offs, one stack switch
//! each) and reports half of it, ns per stack switch, the unit of the other
//! rows' per-yield figures. Here an lwkt yield is one stack switch: with
//! exactly one peer runnable, the yielding thread runs it by handoff (see
//! `lwkt/src/sched/switch.rs`); with more it would be two (thread →
//! CPU loop → next thread). The note says which, so the gap between the
//! two rows is what lwkt's scheduling costs on top of the stack switch.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use corosensei::{Coroutine, Yielder};

use super::{may_go, Bench, Better, Impl};
use crate::harness::{allowed_cpus, ns_per_op_spread, pin_current_thread, Ctx, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "yield_pingpong",
    unit: "ns/op",
    better: Better::Lower,
    about: "two threads on one CPU yielding to each other, ns per yield",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "corosensei",
            run: corosensei,
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
            name: "std_thread",
            run: std_thread,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

fn lwkt(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let before = rt.stats().total;
    let (ns, yields) = rt.block_on(move |td| {
        let mut yields = 0u64;
        let ns = ns_per_op_spread(&ctx, |n| {
            let half = n / 2;
            yields += 2 * half;
            let start = Instant::now();
            let other = td.spawn(move |td| {
                for _ in 0..half {
                    td.yield_now();
                }
            });
            for _ in 0..half {
                td.yield_now();
            }
            let ok = other.join(td).is_ok();
            let d = start.elapsed();
            assert!(ok, "yielding thread panicked");
            d
        });
        (ns, yields)
    });
    let switches = rt.stats().total.switches - before.switches;
    Ok(Sample::with_spread(
        ns,
        format!(
            "1 cpu; {:.2} thread switches per yield; each is 1 stack switch (the yield \
             handoff: with one peer runnable, the yielding thread resumes it directly and it \
             switches back at its own yield), so compare with corosensei's per-stack-switch row",
            switches as f64 / yields.max(1) as f64
        ),
    ))
}

fn corosensei(ctx: &Ctx) -> RunResult {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
        y.suspend(());
    });
    // One op: one resume + suspend round trip, i.e. two stack switches.
    let round_trip = ns_per_op_spread(ctx, |n| {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(co.resume(()));
        }
        start.elapsed()
    });
    Ok(Sample::with_spread(
        round_trip.scaled(0.5),
        format!(
            "ns per stack switch: half of a Coroutine resume + suspend round trip \
             (main -> coroutine -> main, {:.2} ns), the unit of the per-yield rows (one \
             hand-off from one context to the other); default 1 MiB stack",
            round_trip.median
        ),
    ))
}

fn may(ctx: &Ctx) -> RunResult {
    may::config().set_workers(1);
    let ns = ns_per_op_spread(ctx, |n| {
        let half = n / 2;
        may_go(move || {
            let start = Instant::now();
            let other = may_go(move || {
                for _ in 0..half {
                    may::coroutine::yield_now();
                }
            });
            for _ in 0..half {
                may::coroutine::yield_now();
            }
            let ok = other.join().is_ok();
            let d = start.elapsed();
            assert!(ok, "yielding coroutine panicked");
            d
        })
        .join()
        .expect("may coroutine panicked")
    });
    Ok(Sample::with_spread(ns, "1 worker"))
}

fn tokio(ctx: &Ctx) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ns = ns_per_op_spread(ctx, |n| {
        let half = n / 2;
        rt.block_on(async move {
            let start = Instant::now();
            let yielder = move || async move {
                for _ in 0..half {
                    tokio::task::yield_now().await;
                }
            };
            let a = tokio::spawn(yielder());
            let b = tokio::spawn(yielder());
            a.await.expect("task panicked");
            b.await.expect("task panicked");
            start.elapsed()
        })
    });
    Ok(Sample::with_spread(ns, "current_thread runtime, two tasks"))
}

fn std_thread(ctx: &Ctx) -> RunResult {
    let cpu = allowed_cpus()[0];
    let mut err = None;
    let ns = ns_per_op_spread(ctx, |n| {
        let half = n / 2;
        let barrier = Arc::new(Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let pinned = pin_current_thread(cpu);
                    barrier.wait();
                    for _ in 0..half {
                        std::thread::yield_now();
                    }
                    pinned
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for t in threads {
            if let Err(e) = t.join().expect("yielding thread panicked") {
                err = Some(e);
            }
        }
        start.elapsed()
    });
    match err {
        Some(e) => Err(e),
        None => Ok(Sample::with_spread(
            ns,
            format!("two OS threads pinned to CPU {cpu}, sched_yield"),
        )),
    }
}
