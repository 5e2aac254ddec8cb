//! `preempt_latency`: a thread schedules a parked interrupt-class thread
//! on its own CPU; `schedule()` preempts the caller and runs the interrupt
//! thread before it returns. The figure is the time from just before the
//! `schedule()` call to the interrupt thread's first instruction after its
//! `park()` returns.
//!
//! The caller stores a timestamp ([`TickClock`]: `lfence; rdtsc` on x86_64)
//! in a shared cell and calls `schedule()`; the interrupt thread reads the
//! clock as soon as `park()` returns and adds the difference up. Both run
//! on the same CPU, so on the same OS thread. The note adds the full round
//! trip per `schedule()` call (schedule + preempt + park back to the
//! caller), timed over a tight loop without timestamps, and checks the
//! runtime's `preempt_hits` counter against the number of `schedule()`
//! calls, so the figure is known to come from real preemptions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bench, Better, Impl};
use crate::harness::{ns_per_op, Ctx, RunResult, Sample, Spread, TickClock};

pub static BENCH: Bench = Bench {
    name: "preempt_latency",
    unit: "ns/op",
    better: Better::Lower,
    about: "schedule() of an interrupt thread on the same CPU until its first instruction, ns",
    impls: &[Impl {
        name: "lwkt",
        run: lwkt,
    }],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

/// State shared by the scheduling thread and the interrupt thread. Both
/// run on one CPU (one OS thread), so relaxed atomics and plain
/// load-then-store updates are exact; atomics only make it `Sync`.
#[derive(Default)]
struct Shared {
    /// Timestamp taken just before `schedule()`.
    t0: AtomicU64,
    /// Whether the interrupt thread should time its wake-ups.
    timing: AtomicBool,
    /// Tells the interrupt thread to return.
    stop: AtomicBool,
    /// Times the interrupt thread came back from `park()`.
    runs: AtomicU64,
    /// Sum, count and minimum of the timed latencies, in ticks.
    sum: AtomicU64,
    count: AtomicU64,
    min: AtomicU64,
}

impl Shared {
    fn bump(a: &AtomicU64, by: u64) {
        a.store(a.load(Relaxed) + by, Relaxed);
    }

    fn reset_timing(&self) {
        self.sum.store(0, Relaxed);
        self.count.store(0, Relaxed);
    }
}

/// The interrupt thread: park, and on every return read the clock first.
fn interrupt_thread(td: &mut lwkt::CurThread, s: &Shared, clock: &TickClock) {
    loop {
        td.park();
        let t1 = clock.now();
        if s.stop.load(Relaxed) {
            return;
        }
        Shared::bump(&s.runs, 1);
        if s.timing.load(Relaxed) {
            let d = t1.wrapping_sub(s.t0.load(Relaxed));
            Shared::bump(&s.sum, d);
            Shared::bump(&s.count, 1);
            if d < s.min.load(Relaxed) {
                s.min.store(d, Relaxed);
            }
        }
    }
}

struct Outcome {
    latency_ns: Spread,
    min_ns: f64,
    round_trip_ns: f64,
    schedules: u64,
    runs: u64,
    timed: u64,
    preempt_hits: u64,
    preempt_misses: u64,
    preempt_weird: u64,
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let clock = TickClock::calibrate(if ctx.quick {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(50)
    });
    let clock_ns = clock.overhead_ns();
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let o = rt.block_on(move |td| -> Result<Outcome, String> {
        let s = Arc::new(Shared {
            min: AtomicU64::new(u64::MAX),
            ..Shared::default()
        });
        let s2 = s.clone();
        // Spawning an interrupt thread on our CPU runs it at once, up to
        // its first park().
        let h = lwkt::ThreadBuilder::new()
            .name("preempt")
            .interrupt()
            .priority(lwkt::Priority::INT_MED)
            .spawn(td, move |td| interrupt_thread(td, &s2, &clock))
            .map_err(|e| format!("spawn interrupt thread: {e}"))?;
        let r = h.thread();
        let handle = td.handle();
        let before = handle.stats().total;
        let runs_before = s.runs.load(Relaxed);
        let mut schedules = 0u64;

        // The whole round trip, no timestamps.
        let round_trip_ns = ns_per_op(&ctx, |n| {
            schedules += n;
            let start = Instant::now();
            for _ in 0..n {
                r.schedule();
            }
            start.elapsed()
        });

        // The latency: as many calls per repetition as fill about one
        // repetition of the round-trip loop; one untimed warm-up first.
        let n = (ctx.target().as_nanos() as f64 / round_trip_ns.max(1.0)).clamp(1e3, 1e8) as u64;
        s.timing.store(true, Relaxed);
        let mut per_rep = Vec::with_capacity(ctx.reps());
        let mut timed = 0u64;
        for rep in 0..=ctx.reps() {
            s.reset_timing();
            for _ in 0..n {
                s.t0.store(clock.now(), Relaxed);
                r.schedule();
            }
            schedules += n;
            let count = s.count.load(Relaxed);
            if rep > 0 && count > 0 {
                timed += count;
                per_rep.push(clock.ns(s.sum.load(Relaxed)) / count as f64);
            }
        }
        s.timing.store(false, Relaxed);

        let after = handle.stats().total;
        let runs = s.runs.load(Relaxed) - runs_before;
        s.stop.store(true, Relaxed);
        r.schedule();
        h.join(td)
            .map_err(|p| format!("interrupt thread panicked: {p}"))?;
        if per_rep.is_empty() {
            return Err(format!(
                "the interrupt thread never ran after {schedules} schedule() calls \
                 ({} preempt hits, {} misses)",
                after.preempt_hits - before.preempt_hits,
                after.preempt_misses - before.preempt_misses
            ));
        }
        Ok(Outcome {
            latency_ns: Spread::of(&mut per_rep),
            min_ns: clock.ns(s.min.load(Relaxed)),
            round_trip_ns,
            schedules,
            runs,
            timed,
            preempt_hits: after.preempt_hits - before.preempt_hits,
            preempt_misses: after.preempt_misses - before.preempt_misses,
            preempt_weird: after.preempt_weird - before.preempt_weird,
        })
    })?;
    let check = if o.preempt_hits == o.schedules && o.runs == o.schedules {
        format!(
            "preempt_hits {} = schedule() calls {} (every call preempted)",
            o.preempt_hits, o.schedules
        )
    } else {
        format!(
            "MISMATCH: preempt_hits {} vs schedule() calls {} ({} interrupt-thread runs, \
             {} preempt misses, {} weird)",
            o.preempt_hits, o.schedules, o.runs, o.preempt_misses, o.preempt_weird
        )
    };
    Ok(Sample::with_spread(
        o.latency_ns,
        format!(
            "1 cpu, interrupt thread at INT_MED; median of per-repetition means over {} \
             timed calls, fastest {:.0} ns; clock {}, back-to-back reads {:.1} ns apart (bounds the clock's own share); \
             full round trip per schedule() (preempt + park back) {:.1} ns; {check}",
            o.timed,
            o.min_ns,
            clock.describe(),
            clock_ns,
            o.round_trip_ns
        ),
    ))
}
