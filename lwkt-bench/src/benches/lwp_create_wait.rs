//! `lwp_create_wait`: create an LWP that returns a value at once, and
//! collect it, over and over; the figure is ns per create+wait.
//!
//! Three rows do the same work (create, run a trivial body that returns a
//! value, exit, collect that value), each measured in its own child of the
//! same suite run:
//!
//! * `lwkt_lwp`: inside the first LWP of one process on a 1-CPU runtime,
//!   `Proc::create_lwp` (same CPU, default options) then
//!   `Proc::wait(Some(lid))`: the LWP layer's full lifecycle (record,
//!   hook, states, zombie, reaping) on top of an lwkt thread.
//! * `lwkt_spawn_join`: the same loop with the bare core, from a thread of
//!   a 1-CPU runtime: `CurThread::spawn` + `JoinHandle::join` (what
//!   `spawn_join`'s `lwkt` row does), so the ratio of the two rows is the
//!   LWP layer's own price. Target: `lwkt_lwp` at most 1.5x this.
//! * `std_thread`: `std::thread::spawn` + `join`, i.e. a pthread created
//!   and joined, which is what a NetBSD LWP is under a pthread program.
//!   Default 2 MiB stack (glibc caches freed stacks, so it is not
//!   re-mapped each time) and no pinning, as std users run it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lwkt::lwp::{LwpBuilder, Proc};

use super::{Bench, Better, Impl};
use crate::harness::{ns_per_op_spread, Ctx, RunResult, Sample, Spread};

pub static BENCH: Bench = Bench {
    name: "lwp_create_wait",
    unit: "ns/op",
    better: Better::Lower,
    about: "create an LWP (or thread) returning a value, wait for it and collect the value",
    impls: &[
        Impl {
            name: "lwkt_lwp",
            run: lwkt_lwp,
        },
        Impl {
            name: "lwkt_spawn_join",
            run: lwkt_spawn_join,
        },
        Impl {
            name: "std_thread",
            run: std_thread,
        },
    ],
    timeout: Duration::from_secs(60),
    // The bare core is the reference the layer's price is read against,
    // not a competitor.
    unranked: &["lwkt_spawn_join"],
};

/// The value every trivial body returns; each loop checks it came back.
const VALUE: i32 = 7;

fn runtime() -> Result<lwkt::Runtime, String> {
    lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))
}

fn lwkt_lwp(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let rt = runtime()?;
    let before = rt.stats().total;
    let out: Arc<OnceLock<(Spread, u64)>> = Arc::new(OnceLock::new());
    let out2 = out.clone();
    let status = rt.block_on(move |td| {
        let p = Proc::spawn(td, move |td| {
            let proc = td.proc().expect("the first LWP has a process");
            let mut ops = 0u64;
            let s = ns_per_op_spread(&ctx, |n| {
                ops += n;
                let start = Instant::now();
                for _ in 0..n {
                    let lid = proc
                        .create_lwp(td, LwpBuilder::new(), |_td| std::hint::black_box(VALUE))
                        .expect("create_lwp");
                    let (got, v) = proc.wait(td, Some(lid)).expect("wait");
                    assert!(got == lid && v == VALUE, "wait returned ({got}, {v})");
                }
                start.elapsed()
            });
            // Nothing left to collect: every LWP created was waited for.
            assert_eq!(proc.lwps().len(), 1, "zombies left behind");
            out2.set((s, ops)).expect("measured once");
            0
        })
        .expect("spawn process");
        p.join(td).expect("join process")
    });
    if status != lwkt::lwp::ExitStatus::Exited(0) {
        return Err(format!("measuring process ended with {status:?}"));
    }
    let (s, ops) = *out.get().ok_or("no figure from the measuring LWP")?;
    let switches = rt.stats().total.switches - before.switches;
    Ok(Sample::with_spread(
        s,
        format!(
            "1 cpu; inside LWP 1 of one process: create_lwp (same cpu, default \
             {} KiB stack) + wait(Some(lid)); {:.2} thread switches per op",
            lwkt::DEFAULT_STACK_SIZE / 1024,
            switches as f64 / ops as f64
        ),
    ))
}

fn lwkt_spawn_join(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let rt = runtime()?;
    let before = rt.stats().total;
    let (s, ops) = rt.block_on(move |td| {
        let mut ops = 0u64;
        let s = ns_per_op_spread(&ctx, |n| {
            ops += n;
            let start = Instant::now();
            for _ in 0..n {
                let h = td.spawn(|_td| std::hint::black_box(VALUE));
                let v = h.join(td).expect("trivial thread panicked");
                assert_eq!(v, VALUE);
            }
            start.elapsed()
        });
        (s, ops)
    });
    let switches = rt.stats().total.switches - before.switches;
    Ok(Sample::with_spread(
        s,
        format!(
            "1 cpu; the bare core: CurThread::spawn (default {} KiB stack) + join, \
             no LWP layer; {:.2} thread switches per op",
            lwkt::DEFAULT_STACK_SIZE / 1024,
            switches as f64 / ops as f64
        ),
    ))
}

fn std_thread(ctx: &Ctx) -> RunResult {
    let s = ns_per_op_spread(ctx, |n| {
        let start = Instant::now();
        for _ in 0..n {
            let v = std::thread::spawn(|| std::hint::black_box(VALUE))
                .join()
                .expect("trivial thread panicked");
            assert_eq!(v, VALUE);
        }
        start.elapsed()
    });
    Ok(Sample::with_spread(
        s,
        "std::thread::spawn + join (a pthread; default stack, unpinned)",
    ))
}
