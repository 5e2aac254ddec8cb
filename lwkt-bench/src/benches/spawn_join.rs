//! `spawn_join`: from inside the runtime, spawn a thread that does nothing
//! and join it, over and over; the figure is ns per spawn+join.

use std::time::{Duration, Instant};

use super::{may_go, may_stack_note, Bench, Better, Impl};
use crate::harness::{ns_per_op_spread, Ctx, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "spawn_join",
    unit: "ns/op",
    better: Better::Lower,
    about: "spawn a trivial thread from inside the runtime and join it",
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
    let ns = rt.block_on(move |td| {
        ns_per_op_spread(&ctx, |n| {
            let start = Instant::now();
            for _ in 0..n {
                let h = td.spawn(|_td| std::hint::black_box(()));
                if h.join(td).is_err() {
                    panic!("trivial thread panicked");
                }
            }
            start.elapsed()
        })
    });
    Ok(Sample::with_spread(
        ns,
        format!(
            "1 cpu, default {} KiB stack",
            lwkt::DEFAULT_STACK_SIZE / 1024
        ),
    ))
}

fn may(ctx: &Ctx) -> RunResult {
    may::config().set_workers(1);
    let ns = ns_per_op_spread(ctx, |n| {
        may_go(move || {
            let start = Instant::now();
            for _ in 0..n {
                let h = may_go(|| std::hint::black_box(()));
                if h.join().is_err() {
                    panic!("trivial coroutine panicked");
                }
            }
            start.elapsed()
        })
        .join()
        .expect("may coroutine panicked")
    });
    Ok(Sample::with_spread(
        ns,
        format!("1 worker; {}", may_stack_note()),
    ))
}

fn tokio(ctx: &Ctx) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ns = ns_per_op_spread(ctx, |n| {
        rt.block_on(async move {
            let start = Instant::now();
            for _ in 0..n {
                tokio::spawn(async { std::hint::black_box(()) })
                    .await
                    .expect("trivial task panicked");
            }
            start.elapsed()
        })
    });
    Ok(Sample::with_spread(ns, "current_thread runtime"))
}

fn std_thread(ctx: &Ctx) -> RunResult {
    let ns = ns_per_op_spread(ctx, |n| {
        let start = Instant::now();
        for _ in 0..n {
            std::thread::spawn(|| std::hint::black_box(()))
                .join()
                .expect("trivial thread panicked");
        }
        start.elapsed()
    });
    Ok(Sample::with_spread(ns, "std::thread::spawn + join"))
}
