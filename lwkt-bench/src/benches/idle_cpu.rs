//! `idle_cpu`: CPU time the process burns per wall second while every thread
//! sleeps (100 threads on a channel nobody signals, spread over 2 CPUs /
//! workers); measured with `getrusage(RUSAGE_SELF)`, in ms per s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, Bench, Better, Impl};
use crate::harness::{process_cpu_time, Ctx, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "idle_cpu",
    unit: "ms/s",
    better: Better::Lower,
    about: "CPU time per wall second while 100 threads sleep",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "tokio",
            run: tokio,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

const SLEEPERS: usize = 100;
const CPUS: usize = 2;
/// Pause between the last sleeper going to sleep and the window opening.
const SETTLE: Duration = Duration::from_millis(200);

fn ms_per_s(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() * 1000.0 / wall.as_secs_f64()
}

struct Shared {
    go: AtomicBool,
    asleep: AtomicUsize,
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let window = ctx.idle_window();
    let rt = lwkt::Runtime::builder()
        .cpus(CPUS)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let (v, panicked) = rt.block_on(move |td| {
        let shared = Arc::new(Shared {
            go: AtomicBool::new(false),
            asleep: AtomicUsize::new(0),
        });
        let handles: Vec<_> = (0..SLEEPERS)
            .map(|i| {
                let sh = shared.clone();
                lwkt::ThreadBuilder::new()
                    .cpu(i % CPUS)
                    .spawn(td, move |td| {
                        sh.asleep.fetch_add(1, Ordering::AcqRel);
                        lwkt_sleep_until(td, &sh.go, "idle", || sh.go.load(Ordering::Acquire));
                    })
                    .expect("spawn sleeper")
            })
            .collect();
        while shared.asleep.load(Ordering::Acquire) < SLEEPERS {
            let _ = td.sleep_for(Duration::from_millis(1));
        }
        let _ = td.sleep_for(SETTLE);
        // The measuring thread itself sleeps through the window.
        let (cpu0, wall0) = (process_cpu_time(), Instant::now());
        let _ = td.sleep_for(window);
        let (cpu1, wall1) = (process_cpu_time(), Instant::now());
        shared.go.store(true, Ordering::Release);
        lwkt::wakeup(&shared.go);
        let mut panicked = 0usize;
        for h in handles {
            panicked += usize::from(h.join(td).is_err());
        }
        (ms_per_s(cpu1 - cpu0, wall1 - wall0), panicked)
    });
    if panicked > 0 {
        return Err(format!("{panicked} sleepers panicked"));
    }
    Ok(Sample::with_note(
        v,
        format!(
            "{SLEEPERS} threads asleep on one channel, {CPUS} cpus, hz {} (default)",
            lwkt::DEFAULT_HZ
        ),
    ))
}

fn tokio(ctx: &Ctx) -> RunResult {
    let window = ctx.idle_window();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CPUS)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let v = rt.block_on(async move {
        let notify = Arc::new(tokio::sync::Notify::new());
        let asleep = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..SLEEPERS)
            .map(|_| {
                let (notify, asleep) = (notify.clone(), asleep.clone());
                tokio::spawn(async move {
                    let mut notified = std::pin::pin!(notify.notified());
                    notified.as_mut().enable();
                    asleep.fetch_add(1, Ordering::AcqRel);
                    notified.await;
                })
            })
            .collect();
        while asleep.load(Ordering::Acquire) < SLEEPERS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let (cpu0, wall0) = (process_cpu_time(), Instant::now());
        tokio::time::sleep(window).await;
        let (cpu1, wall1) = (process_cpu_time(), Instant::now());
        notify.notify_waiters();
        for h in handles {
            h.await.expect("sleeper panicked");
        }
        ms_per_s(cpu1 - cpu0, wall1 - wall0)
    });
    Ok(Sample::with_note(
        v,
        format!("{SLEEPERS} tasks awaiting one Notify, multi_thread runtime, {CPUS} workers, enable_all"),
    ))
}
