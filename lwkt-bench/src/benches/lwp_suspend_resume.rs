//! `lwp_suspend_resume`: the round trip of suspending a running LWP on
//! another CPU and continuing it; the figure is wall ns per round trip,
//! with `cpu_ns` (process CPU ns per round trip) beside it.
//!
//! One process on a 2-CPU runtime: a worker LWP on CPU 1 loops bumping a
//! counter and calling `yield_now` (so it is always running, and reaches a
//! switch point every iteration); the controller, LWP 1 on CPU 0, calls
//! `Proc::suspend`, polls `Proc::state` until the worker is `Suspended`
//! (it parks at its next switch point), calls `Proc::resume`, and polls the
//! counter until the worker has made progress again. Both sides spin (the
//! worker yields to nobody, the controller polls), so `cpu_ns` is about
//! two CPUs' worth of the wall time: it shows the polling's price rather
//! than hides it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lwkt::lwp::{Lid, LwpBuilder, LwpState, Proc};

use super::{Bench, Better, Impl};
use crate::harness::{ncpus, time_per_op, Ctx, PerOp, RunResult, Sample, Stopwatch};

pub static BENCH: Bench = Bench {
    name: "lwp_suspend_resume",
    unit: "ns/op",
    better: Better::Lower,
    about: "suspend a running LWP on another CPU, see it suspended, resume it, see it run \
            (cpu_ns: process CPU ns per round trip)",
    impls: &[Impl {
        name: "lwkt_lwp",
        run: lwkt_lwp,
    }],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

/// Polls `done` with a short pause between looks, so the poller does not
/// hammer the cache line (or the process lock) the other CPU needs.
fn poll(mut done: impl FnMut() -> bool) {
    while !done() {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

/// One measured batch: `n` round trips against the worker `lid`.
fn round_trips(
    td: &mut lwkt::CurThread,
    proc: &Proc,
    lid: Lid,
    progress: &AtomicU64,
    n: u64,
) -> crate::harness::Timing {
    let watch = Stopwatch::start();
    for _ in 0..n {
        proc.suspend(td, lid).expect("suspend");
        poll(|| proc.state(lid) == Some(LwpState::Suspended));
        let seen = progress.load(Ordering::Acquire);
        proc.resume(lid).expect("resume");
        poll(|| progress.load(Ordering::Acquire) != seen);
    }
    watch.stop()
}

fn lwkt_lwp(ctx: &Ctx) -> RunResult {
    if ncpus() < 2 {
        return Err("needs at least 2 CPUs".into());
    }
    let ctx = *ctx;
    let rt = lwkt::Runtime::builder()
        .cpus(2)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let out: Arc<OnceLock<(PerOp, u64)>> = Arc::new(OnceLock::new());
    let out2 = out.clone();
    let status = rt.block_on(move |td| {
        let p = Proc::builder()
            .lwp(LwpBuilder::new().cpu(0).name("controller"))
            .spawn(td, move |td| {
                let proc = td.proc().expect("the first LWP has a process");
                let progress = Arc::new(AtomicU64::new(0));
                let stop = Arc::new(AtomicBool::new(false));
                let (wp, ws) = (progress.clone(), stop.clone());
                let lid = proc
                    .create_lwp(td, LwpBuilder::new().cpu(1).name("worker"), move |td| {
                        assert_eq!(td.cpu(), 1, "worker not on cpu 1");
                        while !ws.load(Ordering::Relaxed) {
                            wp.fetch_add(1, Ordering::Release);
                            td.yield_now();
                        }
                        0
                    })
                    .expect("create worker");
                // Let the worker start running before the first suspend.
                poll(|| progress.load(Ordering::Acquire) > 0);
                let mut trips = 0u64;
                let per = time_per_op(&ctx, |n| {
                    trips += n;
                    round_trips(td, &proc, lid, &progress, n)
                });
                let _ = out2.set((per, trips));
                stop.store(true, Ordering::Relaxed);
                let (_, v) = proc.wait(td, Some(lid)).expect("wait for worker");
                v
            })
            .expect("spawn process");
        p.join(td).expect("join process")
    });
    if status != lwkt::lwp::ExitStatus::Exited(0) {
        return Err(format!("measuring process ended with {status:?}"));
    }
    let (per, trips) = *out.get().ok_or("no figure from the controller LWP")?;
    Ok(Sample::with_spread(
        per.wall,
        format!(
            "2 cpus; controller LWP on cpu 0, worker LWP on cpu 1 looping yield_now; \
             suspend + poll state until SUSPENDED + resume + poll until the worker \
             counts again; both sides spin, so cpu_ns is about 2x wall; {trips} round trips"
        ),
    )
    .cpu_ns(per.cpu.median))
}
