//! `sleeping_thread_rss`: spawn many threads that all go to sleep on one
//! channel; the figure is (RSS once all are asleep − RSS before spawning) /
//! thread count, in KiB, from `/proc/self/statm`. Each implementation runs
//! in its own child process so runtimes cannot pollute each other's RSS.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{lwkt_sleep_until, may_go, may_stack_note, Bench, Better, Impl};
use crate::harness::{rss_kib, wait_until, Ctx, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "sleeping_thread_rss",
    unit: "KiB/thread",
    better: Better::Lower,
    about: "RSS per sleeping thread (20,000 threads; 2,000 for std_thread)",
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
    timeout: Duration::from_secs(120),
    unranked: &[],
};

/// Threads (or tasks / coroutines) put to sleep.
const THREADS: usize = 20_000;
/// OS threads are far heavier; fewer keep the run short and within limits.
const STD_THREADS: usize = 2_000;
/// Pause after the last thread announced itself, so it is really asleep.
const SETTLE: Duration = Duration::from_millis(20);
/// Give up if the threads do not all get to sleep in this time.
const LIMIT: Duration = Duration::from_secs(60);

fn per_thread(before: u64, after: u64, n: usize) -> f64 {
    after.saturating_sub(before) as f64 / n as f64
}

/// A `Vec` of `n` empty slots whose pages are already resident, so filling
/// it does not count towards the measured growth.
fn slots<T>(n: usize) -> Vec<Option<T>> {
    (0..n).map(|_| None).collect()
}

struct LwktShared {
    go: AtomicBool,
    asleep: AtomicUsize,
}

fn lwkt(_ctx: &Ctx) -> RunResult {
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let v = rt.block_on(|td| {
        let shared = Arc::new(LwktShared {
            go: AtomicBool::new(false),
            asleep: AtomicUsize::new(0),
        });
        let mut handles = slots(THREADS);
        let before = rss_kib();
        for slot in handles.iter_mut() {
            let sh = shared.clone();
            *slot = Some(td.spawn(move |td| {
                sh.asleep.fetch_add(1, Ordering::AcqRel);
                lwkt_sleep_until(td, &sh.go, "rss", || sh.go.load(Ordering::Acquire));
            }));
        }
        while shared.asleep.load(Ordering::Acquire) < THREADS {
            td.yield_now();
        }
        let _ = td.sleep_for(SETTLE);
        let after = rss_kib();
        shared.go.store(true, Ordering::Release);
        lwkt::wakeup(&shared.go);
        let mut panicked = 0;
        for h in handles.into_iter().flatten() {
            panicked += usize::from(h.join(td).is_err());
        }
        (per_thread(before, after, THREADS), panicked)
    });
    match v {
        (kib, 0) => Ok(Sample::with_note(
            kib,
            format!(
                "{THREADS} threads, 1 cpu, default {} KiB stack; RSS +{:.1} MiB in all",
                lwkt::DEFAULT_STACK_SIZE / 1024,
                kib * THREADS as f64 / 1024.0
            ),
        )),
        (_, p) => Err(format!("{p} sleeping threads panicked")),
    }
}

fn may(_ctx: &Ctx) -> RunResult {
    may::config().set_workers(1);
    // Start the scheduler (and its worker) before taking the baseline.
    may_go(|| ())
        .join()
        .map_err(|_| "warm-up coroutine panicked")?;
    let flag = Arc::new(may::sync::SyncFlag::new());
    let asleep = Arc::new(AtomicUsize::new(0));
    let mut handles = slots(THREADS);
    let before = rss_kib();
    for slot in handles.iter_mut() {
        let (flag, asleep) = (flag.clone(), asleep.clone());
        *slot = Some(may_go(move || {
            asleep.fetch_add(1, Ordering::AcqRel);
            flag.wait();
        }));
    }
    let waited = wait_until(LIMIT, || asleep.load(Ordering::Acquire) >= THREADS);
    std::thread::sleep(SETTLE);
    let after = rss_kib();
    flag.fire();
    waited?;
    for h in handles.into_iter().flatten() {
        h.join().map_err(|_| "sleeping coroutine panicked")?;
    }
    let kib = per_thread(before, after, THREADS);
    Ok(Sample::with_note(
        kib,
        format!(
            "{THREADS} coroutines on a may::sync::SyncFlag, 1 worker; {}",
            may_stack_note()
        ),
    ))
}

fn tokio(_ctx: &Ctx) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let kib = rt.block_on(async {
        let notify = Arc::new(tokio::sync::Notify::new());
        let asleep = Arc::new(AtomicUsize::new(0));
        let mut handles = slots(THREADS);
        let before = rss_kib();
        for slot in handles.iter_mut() {
            let (notify, asleep) = (notify.clone(), asleep.clone());
            *slot = Some(tokio::spawn(async move {
                // Register with the Notify before counting, so once every
                // task has counted, notify_waiters() reaches all of them.
                let mut notified = std::pin::pin!(notify.notified());
                notified.as_mut().enable();
                asleep.fetch_add(1, Ordering::AcqRel);
                notified.await;
            }));
        }
        while asleep.load(Ordering::Acquire) < THREADS {
            tokio::task::yield_now().await;
        }
        let after = rss_kib();
        notify.notify_waiters();
        for h in handles.into_iter().flatten() {
            h.await.expect("sleeping task panicked");
        }
        per_thread(before, after, THREADS)
    });
    Ok(Sample::with_note(
        kib,
        format!("{THREADS} tasks awaiting one tokio::sync::Notify, current_thread runtime"),
    ))
}

fn std_thread(_ctx: &Ctx) -> RunResult {
    // Spawn and join one thread first so one-time setup is in the baseline.
    std::thread::spawn(|| ())
        .join()
        .map_err(|_| "warm-up thread panicked")?;
    let shared = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
    let mut handles = slots(STD_THREADS);
    let before = rss_kib();
    let mut spawn_err = None;
    for slot in handles.iter_mut() {
        let sh = shared.clone();
        match std::thread::Builder::new().spawn(move || {
            let (m, cv) = &*sh;
            let mut g = m.lock().expect("poisoned");
            g.0 += 1;
            while !g.1 {
                g = cv.wait(g).expect("poisoned");
            }
        }) {
            Ok(h) => *slot = Some(h),
            Err(e) => {
                spawn_err = Some(e.to_string());
                break;
            }
        }
    }
    let spawned = handles.iter().flatten().count();
    let (m, cv) = &*shared;
    let waited = wait_until(LIMIT, || m.lock().expect("poisoned").0 >= spawned);
    std::thread::sleep(SETTLE);
    let after = rss_kib();
    m.lock().expect("poisoned").1 = true;
    cv.notify_all();
    for h in handles.into_iter().flatten() {
        h.join().map_err(|_| "sleeping thread panicked")?;
    }
    waited?;
    if let Some(e) = spawn_err {
        return Err(format!("spawn failed after {spawned} threads: {e}"));
    }
    let stack = std::env::var("RUST_MIN_STACK").unwrap_or_else(|_| "2 MiB (std default)".into());
    Ok(Sample::with_note(
        per_thread(before, after, STD_THREADS),
        format!("{STD_THREADS} OS threads waiting on a Condvar; stack {stack}"),
    ))
}
