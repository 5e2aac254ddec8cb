//! `max_threads`: how many lwkt threads at the default stack size can be
//! asleep at once. Threads are spawned with `ThreadBuilder` until it returns
//! `Err`, the cap (1,000,000; 100,000 with `--quick`) is reached, or RSS
//! growth passes half of `MemAvailable` (a guard so the bench cannot push the
//! machine into the OOM killer); then all are woken and joined. The note
//! records `vm.max_map_count` and why spawning stopped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, Bench, Better, Impl};
use crate::harness::{
    map_count, max_map_count, mem_available_kib, rss_kib, Ctx, RunResult, Sample,
};

pub static BENCH: Bench = Bench {
    name: "max_threads",
    unit: "threads",
    better: Better::Higher,
    about: "most lwkt threads asleep at once at the default stack size",
    impls: &[Impl {
        name: "lwkt",
        run: lwkt,
    }],
    timeout: Duration::from_secs(300),
    unranked: &[],
};

const CAP: usize = 1_000_000;
const QUICK_CAP: usize = 100_000;
/// Let the new threads run to their sleep (and check the memory guard)
/// after every batch of this many spawns.
const BATCH: usize = 1024;

struct Shared {
    go: AtomicBool,
    asleep: AtomicUsize,
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let cap = if ctx.quick { QUICK_CAP } else { CAP };
    let guard_kib = mem_available_kib().map(|m| m / 2);
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let (count, stop, rss_mib, maps, spawn_time, panicked) = rt.block_on(move |td| {
        let shared = Arc::new(Shared {
            go: AtomicBool::new(false),
            asleep: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(cap);
        let before = rss_kib();
        let start = Instant::now();
        let mut stop = format!("cap of {cap} reached");
        while handles.len() < cap {
            let sh = shared.clone();
            let spawned = lwkt::ThreadBuilder::new().spawn(td, move |td| {
                sh.asleep.fetch_add(1, Ordering::AcqRel);
                lwkt_sleep_until(td, &sh.go, "max", || {
                    sh.go.load(Ordering::Acquire)
                });
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop = format!("ThreadBuilder::spawn failed: {e}");
                    break;
                }
            }
            if handles.len() % BATCH == 0 {
                while shared.asleep.load(Ordering::Acquire) < handles.len() {
                    td.yield_now();
                }
                if let Some(g) = guard_kib {
                    let grown = rss_kib().saturating_sub(before);
                    if grown > g {
                        stop = format!(
                            "stopped by the bench's memory guard: RSS grew {} MiB (> half of MemAvailable)",
                            grown / 1024
                        );
                        break;
                    }
                }
            }
        }
        while shared.asleep.load(Ordering::Acquire) < handles.len() {
            td.yield_now();
        }
        let spawn_time = start.elapsed();
        let count = handles.len();
        let rss_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
        let maps = map_count();
        shared.go.store(true, Ordering::Release);
        lwkt::wakeup(&shared.go);
        let mut panicked = 0usize;
        for h in handles {
            panicked += usize::from(h.join(td).is_err());
        }
        (count, stop, rss_mib, maps, spawn_time, panicked)
    });
    if panicked > 0 {
        return Err(format!("{panicked} sleeping threads panicked"));
    }
    let limit = max_map_count().map_or_else(|| "unknown".into(), |m| m.to_string());
    let maps = maps.map_or_else(|| "unknown".into(), |m| m.to_string());
    Ok(Sample::with_note(
        count as f64,
        format!(
            "vm.max_map_count={limit}; {stop}; {maps} mappings in use, RSS +{rss_mib:.0} MiB, \
             spawning took {:.2} s; stack guards: {}",
            spawn_time.as_secs_f64(),
            lwkt::stack_guard_kind()
        ),
    ))
}
