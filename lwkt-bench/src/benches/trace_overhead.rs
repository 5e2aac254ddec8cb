//! `trace_overhead`: what lwkt's event trace costs when it records. Its one
//! run (registry impl `lwkt`) gives three rows, each measured on one
//! runtime by alternating repetitions with the trace off and on
//! (`Trace::start` / `stop` between them), so both see the same machine
//! state (`cross_cpu_slowdown` needs 2 cores):
//!
//! * `ns_per_event` (ns): `yield_pingpong`'s loop (two threads on one CPU
//!   yielding to each other); (time on - time off) / events recorded. A
//!   yield records one event (the switch: the thread that stops, why, the
//!   thread that starts; one clock reading).
//! * `yield_slowdown` (x): that loop's time on / time off.
//! * `cross_cpu_slowdown` (x): `cross_cpu_pingpong`'s loop (a thread on
//!   CPU 0 and one on CPU 1 waking each other through a shared sequence)
//!   time on / time off; each round trip records about a dozen events
//!   (IPI send and receipt, wakeup, sleep, switches) on the two CPUs.
//!
//! Every repetition fits the buffers (`Builder::trace_events`); a
//! repetition that dropped events fails the run rather than report a
//! figure for less work. The cost with the trace compiled in but off is
//! what `yield_pingpong` itself measures (one predictable branch per event
//! site).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, Bench, Better, Impl};
use crate::harness::{ncpus, Ctx, Measurement, RunResult, Sample, Spread};

pub static BENCH: Bench = Bench {
    name: "trace_overhead",
    unit: "ns",
    better: Better::Lower,
    about: "lwkt's event trace recording: ns per event, and the slowdown of the ping-pongs",
    // One run gives the rows `ns_per_event`, `yield_slowdown` and
    // `cross_cpu_slowdown` (see the module header).
    impls: &[Impl {
        name: "lwkt",
        run: lwkt,
    }],
    timeout: Duration::from_secs(120),
    unranked: &[],
};

fn lwkt(ctx: &Ctx) -> RunResult {
    let mut rows = yield_rows(ctx)?;
    if ncpus() >= 2 {
        rows.push(cross_cpu_slowdown(ctx)?);
    }
    Ok(Sample::rows(rows))
}

/// Events per CPU buffer: room for a whole repetition.
const EVENTS: usize = 1 << 21;

/// One repetition off and one on, `reps` times, alternating.
struct Pairs {
    /// (wall off, wall on, events recorded on).
    runs: Vec<(Duration, Duration, usize)>,
}

fn pairs(
    ctx: &Ctx,
    rt: &lwkt::Runtime,
    mut run: impl FnMut(&lwkt::Runtime) -> Duration,
) -> Result<Pairs, String> {
    let trace = rt.trace();
    // Warm up both ways.
    run(rt);
    trace.start().map_err(|e| format!("trace start: {e}"))?;
    run(rt);
    trace.stop();
    let mut runs = Vec::new();
    for _ in 0..ctx.reps() {
        let off = run(rt);
        trace.start().map_err(|e| format!("trace start: {e}"))?;
        let on = run(rt);
        let data = trace.stop();
        if data.dropped() > 0 {
            return Err(format!(
                "a repetition dropped {} events ({} kept per CPU): the figure would be for less \
                 work",
                data.dropped(),
                data.capacity_per_cpu()
            ));
        }
        runs.push((off, on, data.events()));
    }
    Ok(Pairs { runs })
}

fn yield_runtime() -> Result<lwkt::Runtime, String> {
    lwkt::Runtime::builder()
        .cpus(1)
        .trace_events(EVENTS)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))
}

/// Yields per repetition (each side half).
fn yields(ctx: &Ctx) -> u64 {
    if ctx.quick {
        100_000
    } else {
        400_000
    }
}

fn yield_loop(rt: &lwkt::Runtime, n: u64) -> Duration {
    let half = n / 2;
    rt.block_on(move |td| {
        let start = Instant::now();
        let other = td.spawn(move |td| {
            for _ in 0..half {
                td.yield_now();
            }
        });
        for _ in 0..half {
            td.yield_now();
        }
        other.join(td).expect("yielding thread panicked");
        start.elapsed()
    })
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn row(imp: &str, unit: &str, s: Spread, note: String) -> Measurement {
    Measurement {
        bench: BENCH.name.into(),
        imp: imp.into(),
        unit: unit.into(),
        note: Some(note),
        ..Measurement::default()
    }
    .with_spread(s)
}

/// `ns_per_event` and `yield_slowdown`, from the same repetitions.
fn yield_rows(ctx: &Ctx) -> Result<Vec<Measurement>, String> {
    let rt = yield_runtime()?;
    let n = yields(ctx);
    let p = pairs(ctx, &rt, |rt| yield_loop(rt, n))?;
    let mut per: Vec<f64> = p
        .runs
        .iter()
        .map(|&(off, on, ev)| (ns(on) - ns(off)) / ev.max(1) as f64)
        .collect();
    let mut ratio: Vec<f64> = p
        .runs
        .iter()
        .map(|&(off, on, _)| ns(on) / ns(off))
        .collect();
    let med = |f: fn(&(Duration, Duration, usize)) -> Duration| {
        let mut v: Vec<f64> = p.runs.iter().map(|r| ns(f(r)) / n as f64).collect();
        Spread::of(&mut v).median
    };
    let (on, off) = (med(|r| r.1), med(|r| r.0));
    let events = p.runs[0].2 as f64 / n as f64;
    Ok(vec![
        row(
            "ns_per_event",
            "ns",
            Spread::of(&mut per),
            format!(
                "yield_pingpong's loop (1 cpu, {n} yields per repetition, {events:.2} events \
                 recorded per yield): (wall with tracing on - wall off) / events, per pair of \
                 alternating repetitions; {on:.1} vs {off:.1} ns/yield (medians); target <= 15 \
                 ns per event"
            ),
        ),
        row(
            "yield_slowdown",
            "x",
            Spread::of(&mut ratio),
            format!(
                "yield_pingpong's loop (1 cpu, {n} yields per repetition), wall with every \
                 event recorded / wall with the trace off, per pair of alternating \
                 repetitions: {on:.1} vs {off:.1} ns/yield (medians); target <= 2x"
            ),
        ),
    ])
}

fn cross_cpu_slowdown(ctx: &Ctx) -> Result<Measurement, String> {
    let rt = lwkt::Runtime::builder()
        .cpus(2)
        .trace_events(EVENTS)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let n: u64 = if ctx.quick { 5_000 } else { 20_000 };
    let p = pairs(ctx, &rt, |rt| pingpong(rt, n))?;
    let mut ratio: Vec<f64> = p
        .runs
        .iter()
        .map(|&(off, on, _)| ns(on) / ns(off))
        .collect();
    let (off, on): (Vec<f64>, Vec<f64>) = p
        .runs
        .iter()
        .map(|r| (ns(r.0) / n as f64, ns(r.1) / n as f64))
        .unzip();
    let events = p.runs.iter().map(|r| r.2).sum::<usize>() as f64 / p.runs.len() as f64;
    let s = Spread::of(&mut ratio);
    Ok(row(
        "cross_cpu_slowdown",
        "x",
        s,
        format!(
            "cross_cpu_pingpong's loop (2 cpus, {n} round trips per repetition), wall on / \
             wall off, alternating repetitions: {:.0} vs {:.0} ns per round trip (means); \
             {:.1} events recorded per round trip",
            on.iter().sum::<f64>() / on.len() as f64,
            off.iter().sum::<f64>() / off.len() as f64,
            events / n as f64,
        ),
    ))
}

/// `n` round trips between a thread on CPU 0 and one on CPU 1.
fn pingpong(rt: &lwkt::Runtime, n: u64) -> Duration {
    rt.block_on(move |td| {
        let seq = Arc::new(AtomicU64::new(0));
        let pong_seq = seq.clone();
        let pong = lwkt::ThreadBuilder::new()
            .name("pong")
            .cpu(1)
            .spawn(td, move |td| {
                for i in 0..n {
                    lwkt_sleep_until(td, &*pong_seq, "pingpong", || {
                        pong_seq.load(Ordering::Acquire) == 2 * i + 1
                    });
                    pong_seq.store(2 * i + 2, Ordering::Release);
                    lwkt::wakeup(&*pong_seq);
                }
            })
            .expect("spawn pong");
        let ping = lwkt::ThreadBuilder::new()
            .name("ping")
            .cpu(0)
            .spawn(td, move |td| {
                let start = Instant::now();
                for i in 0..n {
                    seq.store(2 * i + 1, Ordering::Release);
                    lwkt::wakeup(&*seq);
                    lwkt_sleep_until(td, &*seq, "pingpong", || {
                        seq.load(Ordering::Acquire) == 2 * i + 2
                    });
                }
                start.elapsed()
            })
            .expect("spawn ping");
        let d = ping.join(td).expect("ping panicked");
        pong.join(td).expect("pong panicked");
        d
    })
}
