//! `scaling`: how lwkt's per-operation costs change with the number of
//! CPUs, and what a very large runtime costs to start. One run produces
//! several rows (see [`Sample::rows`]):
//!
//! * `scaling_wakeup` / `lwkt_cN` (ns/op): cross-CPU wakeup on an N-CPU
//!   runtime. A baton goes round a ring of `max(N, 2)` threads, thread `j`
//!   on CPU `j % N`; each hop stores the hop number in the next thread's
//!   own cache-padded `AtomicU64` and `lwkt::wakeup`s it, and the next
//!   thread sleeps on that word (`sleep_interlock` + `sleep`) until the
//!   number arrives. ns per hop = wall / hops. One baton is in flight, so
//!   a hop is one wakeup's latency while every other CPU idles, and every
//!   (sender, receiver) CPU pair of the ring is used in turn: a cost that
//!   grows with the CPU count (sleep masks, attention words, idle polling,
//!   FIFO placement) shows as growth along the rows, not blurred by how
//!   many pairs the machine can run at once (which, at the oversubscribed
//!   point, would measure the OS scheduler). With N = 1 the two threads
//!   share CPU 0: a same-CPU wakeup plus a switch; with N = 2 a hop is
//!   half a `cross_cpu_pingpong` round trip.
//! * `scaling_token` / `lwkt_cN` (ns/op): one thread per CPU increments
//!   one `Token<u64>` (`get_token`, increment, release, `maybe_yield`) for
//!   a fixed wall time; wall ns per successful increment (wall / total
//!   increments), with increments per second in the note. The counter's
//!   final value must equal the increments counted, or the run fails. With
//!   N = 1 there is no contention: the uncontended baseline.
//! * `runtime_build_256` / `lwkt` (ms): `Runtime::builder().cpus(256)
//!   .build()`, median of [`Ctx::reps`] builds, each dropped before the
//!   next and the heap then trimmed (glibc `malloc_trim`), so every build
//!   faults its memory in as the first one in a process does rather than
//!   reusing the pages its predecessor left in the allocator; the note
//!   gives the median drop time and the first (cold) build's time.
//! * `runtime_rss_256` / `lwkt` (MiB): RSS growth (`/proc/self/statm`) of
//!   this process holding one `cpus(256)` runtime, 50 ms after `build()`
//!   returned; measured first, in the fresh child process, so no earlier
//!   runtime's freed memory is reused. The note gives the absolute RSS.
//!
//! N runs over 1, 2, 4, 8, … below the cores (`available_parallelism`),
//! the core count itself, and one oversubscribed point, `max(2 × cores,
//! 4)`, so code paths for more CPUs than cores run on small machines too.
//! Every per-CPU-count row's note gives N, the cores and whether the point
//! is oversubscribed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lwkt_sleep_until, Bench, Better, Impl};
use crate::harness::{
    median, ncpus, ns_per_op_spread, rss_kib, Ctx, Measurement, RunResult, Sample, Spread,
};

pub static BENCH: Bench = Bench {
    name: "scaling",
    // Each row carries its own unit; most are ns/op.
    unit: "ns/op",
    better: Better::Lower,
    about: "lwkt by CPU count: cross-CPU wakeup and contended-token ns/op (rows \
            scaling_wakeup, scaling_token, impl lwkt_cN); build time (ms) and RSS (MiB) \
            of a cpus(256) runtime",
    impls: &[Impl {
        name: "lwkt",
        run: lwkt,
    }],
    // A full run takes ~10 s on 2 cores (~1 s with --quick); the generous
    // limit leaves room for oversubscribed points on a busy machine, whose
    // hops wait for the OS scheduler, and for the 256-CPU builds, which
    // start and join hundreds of OS threads each.
    timeout: Duration::from_secs(240),
    unranked: &[],
};

/// CPUs of the runtime whose build time and RSS are measured.
const BIG_CPUS: usize = 256;
/// Pause after building the big runtime before reading RSS, so its CPU
/// OS threads have started and gone idle.
const RSS_SETTLE: Duration = Duration::from_millis(50);
/// Time between scheduling a token repetition and its workers' common
/// start, so that they are all spawned and waiting.
const LEAD: Duration = Duration::from_millis(10);

/// The CPU counts measured on a machine with `cores` cores: powers of two
/// below it, `cores` itself, then `max(2 × cores, 4)` (oversubscribed).
pub fn cpu_counts(cores: usize) -> Vec<usize> {
    let cores = cores.clamp(1, lwkt::MAX_CPUS / 2);
    let mut v = Vec::new();
    let mut c = 1;
    while c < cores {
        v.push(c);
        c *= 2;
    }
    v.push(cores);
    v.push((2 * cores).max(4));
    v
}

/// Row name of a CPU count: `lwkt_c4`.
fn row_impl(cpus: usize) -> String {
    format!("lwkt_c{cpus}")
}

/// The note's common opening: CPU count, cores, oversubscription.
fn shape_note(cpus: usize, cores: usize) -> String {
    if cpus > cores {
        format!(
            "{cpus} cpus on {cores} cores (oversubscribed, {:.1}x)",
            cpus as f64 / cores as f64
        )
    } else {
        format!("{cpus} cpus on {cores} cores (not oversubscribed)")
    }
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let cores = ncpus();
    // First, in the fresh process: the big runtime's RSS and cold build.
    let (rss_row, cold_ms) = big_rss(cores)?;
    let build_row = big_build(ctx, cores, cold_ms)?;
    let mut wakeups = Vec::new();
    let mut tokens = Vec::new();
    for cpus in cpu_counts(cores) {
        let rt = lwkt::Runtime::builder()
            .cpus(cpus)
            .build()
            .map_err(|e| format!("lwkt runtime with {cpus} cpus: {e}"))?;
        wakeups.push(wakeup_point(ctx, &rt, cpus, cores)?);
        tokens.push(token_point(ctx, &rt, cpus, cores)?);
    }
    let mut rows = wakeups;
    rows.append(&mut tokens);
    rows.push(build_row);
    rows.push(rss_row);
    Ok(Sample::rows(rows))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `runtime_rss_256`, and how long that (first, cold) build took in ms.
fn big_rss(cores: usize) -> Result<(Measurement, f64), String> {
    let before = rss_kib();
    let t = Instant::now();
    let rt = lwkt::Runtime::builder()
        .cpus(BIG_CPUS)
        .build()
        .map_err(|e| format!("lwkt runtime with {BIG_CPUS} cpus: {e}"))?;
    let cold = ms(t.elapsed());
    std::thread::sleep(RSS_SETTLE);
    let after = rss_kib();
    drop(rt);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let growth = mib(after.saturating_sub(before));
    Ok((
        Measurement {
            bench: "runtime_rss_256".into(),
            imp: "lwkt".into(),
            value: growth,
            unit: "MiB".into(),
            note: Some(format!(
                "{}; RSS growth {} ms after build() returned; process RSS {:.1} MiB \
                 holding the runtime ({:.1} MiB before building it)",
                shape_note(BIG_CPUS, cores),
                RSS_SETTLE.as_millis(),
                mib(after),
                mib(before),
            )),
            ..Measurement::default()
        },
        cold,
    ))
}

/// `runtime_build_256`: median build time of [`Ctx::reps`] builds.
fn big_build(ctx: &Ctx, cores: usize, cold_ms: f64) -> Result<Measurement, String> {
    let mut builds = Vec::with_capacity(ctx.reps());
    let mut drops = Vec::with_capacity(ctx.reps());
    for _ in 0..ctx.reps() {
        let t = Instant::now();
        let rt = lwkt::Runtime::builder()
            .cpus(BIG_CPUS)
            .build()
            .map_err(|e| format!("lwkt runtime with {BIG_CPUS} cpus: {e}"))?;
        builds.push(ms(t.elapsed()));
        let t = Instant::now();
        drop(rt);
        drops.push(ms(t.elapsed()));
        trim_heap();
    }
    let (n, build, drop_ms) = (builds.len(), Spread::of(&mut builds), median(&mut drops));
    Ok(Measurement {
        bench: "runtime_build_256".into(),
        imp: "lwkt".into(),
        unit: "ms".into(),
        note: Some(format!(
            "{}; median of {n} builds, each dropped before the next; median drop \
             {drop_ms:.1} ms; the first (cold) build in this process, for the RSS row, \
             took {cold_ms:.1} ms",
            shape_note(BIG_CPUS, cores),
        )),
        ..Measurement::default()
    }
    .with_spread(build))
}

/// Hands the memory `free` kept back to the OS (glibc's `malloc_trim`), so
/// the next build pays for its pages again as a fresh process would,
/// instead of reusing the pages the previous, dropped runtime faulted in.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; 0 keeps no extra padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A ring slot: the last hop number sent to one thread, alone on its
/// cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// Sends the baton round a ring of `max(cpus, 2)` threads for at least
/// `hops` hops; returns the wall time of the laps and the hops made.
fn ring(td: &mut lwkt::CurThread, cpus: usize, hops: u64) -> (Duration, u64) {
    let r = cpus.max(2);
    let r64 = r as u64;
    let laps = hops.div_ceil(r64).max(1);
    let slots: Arc<Vec<Slot>> = Arc::new((0..r).map(|_| Slot::default()).collect());
    let ready = Arc::new(AtomicU64::new(0));
    let mut others = Vec::with_capacity(r - 1);
    for j in 1..r {
        let (slots, ready) = (slots.clone(), ready.clone());
        let h = lwkt::ThreadBuilder::new()
            .name("ring")
            .cpu(j % cpus)
            .spawn(td, move |td| {
                assert_eq!(td.cpu(), j % cpus, "ring thread {j} on the wrong cpu");
                ready.fetch_add(1, Ordering::AcqRel);
                lwkt::wakeup(&*ready);
                let (me, next) = (&slots[j].0, &slots[(j + 1) % r].0);
                for lap in 0..laps {
                    let hop = lap * r64 + j as u64;
                    lwkt_sleep_until(td, me, "ring", || me.load(Ordering::Acquire) >= hop);
                    next.store(hop + 1, Ordering::Release);
                    lwkt::wakeup(next);
                }
            })
            .expect("spawn ring thread");
        others.push(h);
    }
    let first = lwkt::ThreadBuilder::new()
        .name("ring0")
        .cpu(0)
        .spawn(td, move |td| {
            let want = r64 - 1;
            lwkt_sleep_until(td, &*ready, "ready", || {
                ready.load(Ordering::Acquire) == want
            });
            let (me, next) = (&slots[0].0, &slots[1].0);
            let start = Instant::now();
            for lap in 0..laps {
                next.store(lap * r64 + 1, Ordering::Release);
                lwkt::wakeup(next);
                let back = (lap + 1) * r64;
                lwkt_sleep_until(td, me, "ring", || me.load(Ordering::Acquire) >= back);
            }
            start.elapsed()
        })
        .expect("spawn ring thread 0");
    let d = first
        .join(td)
        .unwrap_or_else(|_| panic!("ring thread 0 panicked"));
    for h in others {
        assert!(h.join(td).is_ok(), "a ring thread panicked");
    }
    (d, laps * r64)
}

/// One `scaling_wakeup` row.
fn wakeup_point(
    ctx: &Ctx,
    rt: &lwkt::Runtime,
    cpus: usize,
    cores: usize,
) -> Result<Measurement, String> {
    let ctx = *ctx;
    let before = rt.stats().total;
    let (ns, hops) = rt.block_on(move |td| {
        let mut total = 0u64;
        let ns = ns_per_op_spread(&ctx, |n| {
            let (d, made) = ring(td, cpus, n);
            total += made;
            // Per hop made, scaled to the `n` hops asked for.
            d.mul_f64(n as f64 / made as f64)
        });
        (ns, total)
    });
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / hops.max(1) as f64;
    let ring_desc = if cpus == 1 {
        "ring of 2 threads on cpu 0 (same-cpu wakeup + switch)".to_string()
    } else {
        format!("ring of {cpus} threads, one per cpu")
    };
    Ok(Measurement {
        bench: "scaling_wakeup".into(),
        imp: row_impl(cpus),
        unit: "ns/op".into(),
        note: Some(format!(
            "{}; {ring_desc}, ns per hop (wakeup of the next thread); per hop: \
             {:.2} IPIs sent (to a parked CPU), {:.2} avoided, {:.2} CPU parks, \
             {:.2} switches",
            shape_note(cpus, cores),
            per(after.ipis_sent, before.ipis_sent),
            per(after.ipis_avoided, before.ipis_avoided),
            per(after.parks, before.parks),
            per(after.switches, before.switches),
        )),
        ..Measurement::default()
    }
    .with_spread(ns))
}

/// What one token worker did in one repetition.
#[derive(Debug, Clone, Copy)]
struct Tally {
    ops: u64,
    start: Instant,
    end: Instant,
}

/// One repetition of the token load: every CPU's worker increments the
/// token's counter from a common start until `window` has passed.
/// Returns the wall time and every worker's increments; fails if an
/// update was lost.
fn token_rep(
    td: &mut lwkt::CurThread,
    cpus: usize,
    window: Duration,
) -> Result<(Duration, Vec<u64>), String> {
    let tok = Arc::new(lwkt::Token::new("scaling", 0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let start_at = Instant::now() + LEAD;
    let flag = stop.clone();
    let timer = std::thread::Builder::new()
        .name("stop-timer".into())
        .spawn(move || {
            let end = start_at + window;
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left);
            }
            flag.store(true, Ordering::Relaxed);
        })
        .map_err(|e| format!("cannot start the timer thread: {e}"))?;
    let mut handles = Vec::with_capacity(cpus);
    let mut spawn_err = None;
    for cpu in 0..cpus {
        let (tok, halt) = (tok.clone(), stop.clone());
        match lwkt::ThreadBuilder::new()
            .name("token")
            .cpu(cpu)
            .spawn(td, move |td| {
                let _ = td.sleep_for(start_at.saturating_duration_since(Instant::now()));
                let start = Instant::now();
                let mut ops = 0u64;
                while !halt.load(Ordering::Relaxed) {
                    let g = td.get_token(&tok);
                    *g.get(td) += 1;
                    drop(g);
                    ops += 1;
                    td.maybe_yield();
                }
                Tally {
                    ops,
                    start,
                    end: Instant::now(),
                }
            }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_err = Some(format!("spawning the worker on cpu {cpu}: {e}"));
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    let mut tallies = Vec::with_capacity(cpus);
    for h in handles {
        tallies.push(h.join(td).map_err(|_| "token worker panicked")?);
    }
    timer.join().map_err(|_| "timer thread panicked")?;
    if let Some(e) = spawn_err {
        return Err(e);
    }
    let ops: u64 = tallies.iter().map(|t| t.ops).sum();
    let counter = Arc::try_unwrap(tok)
        .map_err(|_| "token still shared")?
        .into_inner();
    if counter != ops {
        return Err(format!(
            "{cpus} cpus: lost updates: the token's counter is {counter}, workers counted {ops}"
        ));
    }
    if ops == 0 {
        return Err(format!("{cpus} cpus: no increments in {window:?}"));
    }
    let start = tallies.iter().map(|t| t.start).min().ok_or("no workers")?;
    let end = tallies.iter().map(|t| t.end).max().ok_or("no workers")?;
    Ok((
        end.duration_since(start),
        tallies.iter().map(|t| t.ops).collect(),
    ))
}

/// One `scaling_token` row: one untimed warm-up, then the median of
/// [`Ctx::reps`] repetitions of [`Ctx::target`] each.
fn token_point(
    ctx: &Ctx,
    rt: &lwkt::Runtime,
    cpus: usize,
    cores: usize,
) -> Result<Measurement, String> {
    let ctx = *ctx;
    let window = ctx.target();
    let before = rt.stats().total;
    let (ns, total, last) = rt.block_on(move |td| -> Result<_, String> {
        let mut per_op = Vec::with_capacity(ctx.reps());
        let (mut total, mut last) = (0u64, Vec::new());
        for rep in 0..=ctx.reps() {
            let (wall, workers) = token_rep(td, cpus, window)?;
            let ops: u64 = workers.iter().sum();
            total += ops;
            if rep > 0 {
                per_op.push(wall.as_nanos() as f64 / ops as f64);
            }
            last = workers;
        }
        Ok((Spread::of(&mut per_op), total, last))
    })?;
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / total.max(1) as f64;
    let who = if cpus == 1 {
        "1 thread (uncontended baseline)".to_string()
    } else {
        format!("{cpus} threads, one per cpu")
    };
    Ok(Measurement {
        bench: "scaling_token".into(),
        imp: row_impl(cpus),
        unit: "ns/op".into(),
        note: Some(format!(
            "{}; {who} increment one Token<u64>, maybe_yield after each release; \
             wall ns per increment, {:.0} increments/s; median of {} reps of {} ms; \
             per-worker increments in the last rep: min {}, max {}; per increment: {:.4} token_blocks, {:.4} token_failures, {:.4} token_wasted, \
             {:.4} switches",
            shape_note(cpus, cores),
            1e9 / ns.median,
            ctx.reps(),
            window.as_millis(),
            last.iter().min().copied().unwrap_or(0),
            last.iter().max().copied().unwrap_or(0),
            per(after.token_blocks, before.token_blocks),
            per(after.token_failures, before.token_failures),
            per(after.token_wasted, before.token_wasted),
            per(after.switches, before.switches),
        )),
        ..Measurement::default()
    }
    .with_spread(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_cover_the_cores_and_oversubscribe() {
        assert_eq!(cpu_counts(1), [1, 4]);
        assert_eq!(cpu_counts(2), [1, 2, 4]);
        assert_eq!(cpu_counts(6), [1, 2, 4, 6, 12]);
        assert_eq!(cpu_counts(16), [1, 2, 4, 8, 16, 32]);
        assert!(cpu_counts(100_000).iter().all(|&c| c <= lwkt::MAX_CPUS));
    }

    #[test]
    fn notes_say_oversubscribed() {
        assert!(shape_note(4, 2).contains("oversubscribed, 2.0x"));
        assert!(shape_note(2, 2).contains("not oversubscribed"));
        assert_eq!(row_impl(16), "lwkt_c16");
    }
}
