//! The driver shared by `token_contended` and `token_block_while_held`:
//! [`THREADS_PER_CPU`] workers per CPU increment one `u64` under one lock
//! until a stop flag goes up; the figure is the total number of increments
//! per second of wall time.
//!
//! Each repetition starts every worker at one instant (a little after they
//! are spawned) and an OS timer thread raises the stop flag a fixed window
//! later; workers check the flag between critical sections. The wall time
//! is from the first worker's start to the last worker's finish, so
//! critical sections that overrun the window are counted and timed too.
//! The counter's final value is checked against the workers' own counts.
//! One untimed warm-up repetition, then the median of [`Ctx::reps`].
//!
//! Every row also reports `cpu_ns`: the process CPU time (all threads,
//! user + system) per increment, from the workers' common start until the
//! last of them was joined, median over the timed repetitions; the
//! `min`/`median`/`max` fields give the spread of the increments per
//! second.
//!
//! With [`Load::SleepWhileHeld`], every [`SLEEP_EVERY`]th critical section
//! of each worker sleeps [`HOLD_SLEEP`] while holding the lock. An lwkt
//! thread releases its tokens while asleep (and gets them back before
//! `sleep_for` returns); a mutex or tokio guard keeps everyone else out.
//! [`Load::SleepGuardDropped`] gives the mutex peers lwkt's semantics, as a
//! careful user writes them: drop the guard, sleep, lock again and
//! re-check the value read before the sleep. lwkt's sleeping section makes
//! the same re-check, and every row's note says how often the counter had
//! moved meanwhile (it can only move if the lock was really free).
//!
//! The OS-thread peers run either [`THREADS_PER_CPU`] unpinned threads per
//! CPU, like lwkt's thread count, or ([`Placement::PinnedOnePerCpu`]) one
//! thread pinned to each CPU: the strongest setup for a mutex, with no
//! lock-holder preemption, and the shape lwkt's load really has (only the
//! running thread of each lwkt CPU contends, and `maybe_yield` switches
//! only at the scheduler tick).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    allowed_cpus, ncpus, pin_current_thread, process_cpu_time, Ctx, RunResult, Sample, Spread,
};

/// Workers per CPU (lwkt threads, OS threads or tokio tasks).
pub const THREADS_PER_CPU: usize = 8;
/// With [`Load::SleepWhileHeld`], one critical section in this many sleeps.
pub const SLEEP_EVERY: u64 = 16;
/// How long such a critical section sleeps.
pub const HOLD_SLEEP: Duration = Duration::from_micros(50);
/// Time between the start of a repetition and the workers' common start,
/// so that they are all spawned and waiting.
const LEAD: Duration = Duration::from_millis(10);

/// A value alone on its cache lines (128 bytes: adjacent-line prefetchers
/// pair 64-byte lines), so the lock every worker hammers shares no line
/// with the stop flag they all poll, whatever the allocator's placement.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Lone<T>(T);

impl<T> std::ops::Deref for Lone<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What each critical section does besides the increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Nothing: increment and release.
    Plain,
    /// Every [`SLEEP_EVERY`]th one sleeps [`HOLD_SLEEP`] holding the lock
    /// (an lwkt token is released while its holder sleeps; a mutex is not).
    SleepWhileHeld,
    /// Every [`SLEEP_EVERY`]th one drops its guard, sleeps [`HOLD_SLEEP`],
    /// locks again and re-checks the value it read: a mutex user's way to
    /// get what an lwkt token does on its own.
    SleepGuardDropped,
}

impl Load {
    /// Whether a worker's critical section number `op` (from 1) sleeps.
    #[inline]
    fn sleeps_at(self, op: u64) -> bool {
        self != Load::Plain && op % SLEEP_EVERY == 0
    }
}

/// How the OS-thread peers place their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// [`THREADS_PER_CPU`] threads per CPU, left to the OS scheduler.
    Unpinned,
    /// One thread per CPU, each pinned to its own CPU.
    PinnedOnePerCpu,
}

/// Wall time of one repetition: 300 ms (40 ms with `--quick`).
fn window(ctx: &Ctx) -> Duration {
    ctx.target() * 2
}

/// What one worker did in one repetition.
#[derive(Debug, Clone, Copy)]
struct Tally {
    ops: u64,
    sleeps: u64,
    slept: Duration,
    /// Sleeps after which the re-check found the counter changed by
    /// others (so the lock was free meanwhile).
    moved: u64,
    start: Instant,
    end: Instant,
}

impl Tally {
    fn begin() -> Tally {
        let now = Instant::now();
        Tally {
            ops: 0,
            sleeps: 0,
            slept: Duration::ZERO,
            moved: 0,
            start: now,
            end: now,
        }
    }

    /// Records the re-check after a sleep: the counter read `seen` before
    /// it and `now` after it.
    fn recheck(&mut self, seen: u64, now: u64) {
        self.moved += u64::from(now != seen);
    }

    /// Records a sleep that began at `since`.
    fn slept_since(&mut self, since: Instant) {
        self.sleeps += 1;
        self.slept += since.elapsed();
    }

    fn finish(mut self) -> Tally {
        self.end = Instant::now();
        self
    }
}

/// One repetition's schedule: when the workers start, and the flag that
/// tells them to stop.
#[derive(Debug, Clone)]
struct Round {
    start_at: Instant,
    stop: Arc<Lone<AtomicBool>>,
    /// Process CPU time at `start_at`, read by the timer thread.
    cpu_at_start: Arc<Mutex<Option<Duration>>>,
}

impl Round {
    /// Schedules a repetition: workers start [`LEAD`] from now and an OS
    /// thread reads the process CPU time at that start and raises the
    /// stop flag `window` after it.
    fn schedule(window: Duration) -> Result<(Round, std::thread::JoinHandle<()>), String> {
        let start_at = Instant::now() + LEAD;
        let stop = Arc::new(Lone(AtomicBool::new(false)));
        let cpu_at_start = Arc::new(Mutex::new(None));
        let (flag, cpu0) = (stop.clone(), cpu_at_start.clone());
        let timer = std::thread::Builder::new()
            .name("stop-timer".into())
            .spawn(move || {
                sleep_until(start_at);
                *cpu0.lock().expect("cpu reading poisoned") = Some(process_cpu_time());
                let end = start_at + window;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    std::thread::sleep(end - now);
                }
                flag.store(true, Ordering::Relaxed);
            })
            .map_err(|e| format!("cannot start the timer thread: {e}"))?;
        Ok((
            Round {
                start_at,
                stop,
                cpu_at_start,
            },
            timer,
        ))
    }

    /// How long a worker should wait before it starts.
    fn until_start(&self) -> Duration {
        self.start_at.saturating_duration_since(Instant::now())
    }

    #[inline]
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Sleeps the calling OS thread until `t`.
fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        std::thread::sleep(t - now);
    }
}

/// What every repetition (the warm-up included) added up to.
#[derive(Debug)]
struct Outcome {
    /// Increments per second over the timed repetitions.
    rate: Spread,
    /// Median process CPU ns per increment over the timed repetitions.
    cpu_ns: f64,
    /// Wall time each repetition was scheduled for.
    window: Duration,
    ops: u64,
    sleeps: u64,
    slept: Duration,
    moved: u64,
    /// Fewest and most increments one worker made in the last repetition.
    last_min: u64,
    last_max: u64,
}

impl Outcome {
    /// The note text common to every implementation.
    fn note(&self, workers: &str, load: Load) -> String {
        let mut s = format!(
            "{workers}, {} ms per rep; per-worker increments in the last rep: min {}, max {}; \
             cpu_ns is process CPU ns per increment",
            self.window.as_millis(),
            self.last_min,
            self.last_max
        );
        if load != Load::Plain {
            let avg = if self.sleeps == 0 {
                0.0
            } else {
                self.slept.as_secs_f64() * 1e6 / self.sleeps as f64
            };
            let how = if load == Load::SleepWhileHeld {
                "while holding"
            } else {
                "with the guard dropped (re-locked and re-checked after)"
            };
            s.push_str(&format!(
                "; {} sleeps of {} µs {how} over {} increments in all reps \
                 (1 in {SLEEP_EVERY}), {avg:.0} µs per sleep call on average; the re-check \
                 after a sleep found the counter moved by others in {:.0}% of sleeps",
                self.sleeps,
                HOLD_SLEEP.as_micros(),
                self.ops,
                100.0 * self.moved as f64 / self.sleeps.max(1) as f64,
            ));
        }
        s
    }

    /// The row: increments/s with their spread, CPU per increment, note.
    fn sample(&self, note: String) -> Sample {
        Sample::with_spread(self.rate, note).cpu_ns(self.cpu_ns)
    }
}

/// Runs the warm-up and the timed repetitions. `rep` runs one repetition
/// on the given schedule and returns every worker's tally and the
/// counter's final value.
fn measure(
    ctx: &Ctx,
    mut rep: impl FnMut(&Round) -> Result<(Vec<Tally>, u64), String>,
) -> Result<Outcome, String> {
    let window = window(ctx);
    let mut rates = Vec::with_capacity(ctx.reps());
    let mut cpus = Vec::with_capacity(ctx.reps());
    let mut out = Outcome {
        rate: Spread {
            min: 0.0,
            median: 0.0,
            max: 0.0,
        },
        cpu_ns: 0.0,
        window,
        ops: 0,
        sleeps: 0,
        slept: Duration::ZERO,
        moved: 0,
        last_min: 0,
        last_max: 0,
    };
    // Repetition 0 is the warm-up.
    for i in 0..=ctx.reps() {
        let (round, timer) = Round::schedule(window)?;
        let r = rep(&round);
        let cpu_end = process_cpu_time();
        // The timer raises the flag whatever happened; wait for it so no
        // thread outlives the repetition.
        timer.join().map_err(|_| "timer thread panicked")?;
        let (tallies, counter) = r?;
        let ops: u64 = tallies.iter().map(|t| t.ops).sum();
        if counter != ops {
            return Err(format!(
                "lost updates: counter is {counter}, workers counted {ops}"
            ));
        }
        let start = tallies.iter().map(|t| t.start).min().ok_or("no workers")?;
        let end = tallies.iter().map(|t| t.end).max().ok_or("no workers")?;
        let wall = end.duration_since(start).as_secs_f64();
        let cpu_start = round
            .cpu_at_start
            .lock()
            .map_err(|_| "cpu reading poisoned")?
            .ok_or("the timer thread read no CPU time")?;
        if i > 0 {
            rates.push(ops as f64 / wall.max(1e-9));
            cpus.push(cpu_end.saturating_sub(cpu_start).as_nanos() as f64 / ops.max(1) as f64);
        }
        out.ops += ops;
        out.sleeps += tallies.iter().map(|t| t.sleeps).sum::<u64>();
        out.slept += tallies.iter().map(|t| t.slept).sum::<Duration>();
        out.moved += tallies.iter().map(|t| t.moved).sum::<u64>();
        out.last_min = tallies.iter().map(|t| t.ops).min().unwrap_or(0);
        out.last_max = tallies.iter().map(|t| t.ops).max().unwrap_or(0);
    }
    out.rate = Spread::of(&mut rates);
    out.cpu_ns = Spread::of(&mut cpus).median;
    Ok(out)
}

/// Number of CPUs and workers.
fn shape() -> (usize, usize) {
    let n = ncpus();
    (n, n * THREADS_PER_CPU)
}

/// lwkt: `ncpus` CPUs, [`THREADS_PER_CPU`] threads on each, one
/// `Token<u64>`.
pub fn lwkt(ctx: &Ctx, load: Load) -> RunResult {
    let (n, workers) = shape();
    let ctx = *ctx;
    let rt = lwkt::Runtime::builder()
        .cpus(n)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let before = rt.stats().total;
    let out = rt.block_on(move |td| {
        measure(&ctx, |round| {
            let tok = Arc::new(Lone(lwkt::Token::new("counter", 0u64)));
            let mut handles = Vec::with_capacity(workers);
            for k in 0..workers {
                let (tok, round) = (tok.clone(), round.clone());
                let h = lwkt::ThreadBuilder::new()
                    .cpu(k % n)
                    .spawn(td, move |td| {
                        let _ = td.sleep_for(round.until_start());
                        let mut t = Tally::begin();
                        while !round.stopped() {
                            let g = td.get_token(&tok);
                            *g.get(td) += 1;
                            t.ops += 1;
                            if load.sleeps_at(t.ops) {
                                let seen = *g.get(td);
                                let s = Instant::now();
                                // Releases the token while asleep and
                                // takes it back before returning.
                                let _ = td.sleep_for(HOLD_SLEEP);
                                t.slept_since(s);
                                let now = *g.get(td);
                                t.recheck(seen, now);
                            }
                            drop(g);
                            td.maybe_yield();
                        }
                        t.finish()
                    })
                    .map_err(|e| format!("spawning worker {k}: {e}"))?;
                handles.push(h);
            }
            let mut tallies = Vec::with_capacity(workers);
            for h in handles {
                tallies.push(h.join(td).map_err(|_| "worker panicked")?);
            }
            let tok = Arc::try_unwrap(tok).map_err(|_| "token still shared")?;
            Ok((tallies, tok.0.into_inner()))
        })
    })?;
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / out.ops.max(1) as f64;
    let mut note = out.note(
        &format!(
            "{workers} lwkt threads on {n} cpus, one Token<u64>, maybe_yield after each \
             release; only the running thread of a cpu can contend and maybe_yield switches \
             at the {} Hz tick, so at most {n} contenders at a time, one per cpu (the shape \
             of the *_pinned rows)",
            lwkt::DEFAULT_HZ
        ),
        load,
    );
    note.push_str(&format!(
        "; per increment: {:.4} token_blocks, {:.4} token_failures, {:.4} token_wasted, \
         {:.4} token_skips, {:.4} token_attempts, {:.4} switches",
        per(after.token_blocks, before.token_blocks),
        per(after.token_failures, before.token_failures),
        per(after.token_wasted, before.token_wasted),
        per(after.token_skips, before.token_skips),
        per(after.token_attempts, before.token_attempts),
        per(after.switches, before.switches),
    ));
    Ok(out.sample(note))
}

/// A mutex guarding a `u64`, for the OS-thread peers.
pub trait Lock: Send + Sync + 'static {
    /// The type, for notes.
    const DESC: &'static str;
    /// A lock guarding 0.
    fn new() -> Self;
    /// Runs `f` on the value with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut u64) -> R) -> R;
    /// The final value.
    fn into_value(self) -> u64;
}

impl Lock for parking_lot::Mutex<u64> {
    const DESC: &'static str = "parking_lot::Mutex<u64>";
    fn new() -> Self {
        parking_lot::Mutex::new(0)
    }
    fn with<R>(&self, f: impl FnOnce(&mut u64) -> R) -> R {
        f(&mut self.lock())
    }
    fn into_value(self) -> u64 {
        self.into_inner()
    }
}

impl Lock for std::sync::Mutex<u64> {
    const DESC: &'static str = "std::sync::Mutex<u64>";
    fn new() -> Self {
        std::sync::Mutex::new(0)
    }
    fn with<R>(&self, f: impl FnOnce(&mut u64) -> R) -> R {
        f(&mut self.lock().expect("mutex poisoned"))
    }
    fn into_value(self) -> u64 {
        self.into_inner().expect("mutex poisoned")
    }
}

/// OS threads and one `L`: [`THREADS_PER_CPU`] × `ncpus` unpinned, or
/// one pinned to each CPU ([`Placement`]). A sleeping critical section
/// calls `std::thread::sleep` holding the lock ([`Load::SleepWhileHeld`])
/// or between dropping it and locking it again
/// ([`Load::SleepGuardDropped`]).
pub fn os_threads<L: Lock>(ctx: &Ctx, load: Load, placement: Placement) -> RunResult {
    let (n, unpinned) = shape();
    let cpus = allowed_cpus();
    let workers = match placement {
        Placement::Unpinned => unpinned,
        Placement::PinnedOnePerCpu => n,
    };
    let out = measure(ctx, |round| {
        let m = Arc::new(Lone(L::new()));
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (m, round) = (m.clone(), round.clone());
            let pin = match placement {
                Placement::Unpinned => None,
                Placement::PinnedOnePerCpu => Some(cpus[k % cpus.len()]),
            };
            let h = std::thread::Builder::new()
                .name(format!("worker-{k}"))
                .spawn(move || -> Result<Tally, String> {
                    if let Some(cpu) = pin {
                        pin_current_thread(cpu)?;
                    }
                    std::thread::sleep(round.until_start());
                    let mut t = Tally::begin();
                    if load == Load::SleepGuardDropped {
                        while !round.stopped() {
                            let seen = m.with(|c| {
                                *c += 1;
                                *c
                            });
                            t.ops += 1;
                            if load.sleeps_at(t.ops) {
                                let s = Instant::now();
                                std::thread::sleep(HOLD_SLEEP);
                                t.slept_since(s);
                                let now = m.with(|c| *c);
                                t.recheck(seen, now);
                            }
                        }
                    } else {
                        while !round.stopped() {
                            m.with(|c| {
                                *c += 1;
                                t.ops += 1;
                                if load.sleeps_at(t.ops) {
                                    let seen = *c;
                                    let s = Instant::now();
                                    std::thread::sleep(HOLD_SLEEP);
                                    t.slept_since(s);
                                    t.recheck(seen, *c);
                                }
                            });
                        }
                    }
                    Ok(t.finish())
                })
                .map_err(|e| format!("spawning worker {k}: {e}"))?;
            handles.push(h);
        }
        let mut tallies = Vec::with_capacity(workers);
        let mut err = None;
        for h in handles {
            match h.join().map_err(|_| "worker panicked".to_string())? {
                Ok(t) => tallies.push(t),
                Err(e) => err = Some(e),
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let m = Arc::try_unwrap(m).map_err(|_| "mutex still shared")?;
        Ok((tallies, m.0.into_value()))
    })?;
    let who = match placement {
        Placement::Unpinned => {
            format!("{workers} OS threads ({THREADS_PER_CPU} per cpu, {n} cpus, unpinned)")
        }
        Placement::PinnedOnePerCpu => format!(
            "{workers} OS threads, one pinned to each of {n} cpus (no lock-holder preemption)"
        ),
    };
    Ok(out.sample(out.note(&format!("{who}, one {}", L::DESC), load)))
}

/// Which lock the tokio tasks share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokioLock {
    /// `tokio::sync::Mutex`, whose guard may be held across `.await`.
    Tokio,
    /// `std::sync::Mutex`, tokio's advice for critical sections without
    /// `.await`; its guard is never held across one.
    Std,
}

/// tokio: multi_thread runtime with `ncpus` workers, [`THREADS_PER_CPU`] ×
/// `ncpus` tasks, one `u64` behind `lock`. With [`TokioLock::Tokio`], a
/// sleeping critical section awaits `tokio::time::sleep` holding the guard
/// ([`Load::SleepWhileHeld`]). With [`TokioLock::Std`] the guard is
/// dropped before any `.await` (a std guard cannot be held across one in a
/// spawned task), so the sleeping load is [`Load::SleepGuardDropped`], and
/// each task calls `tokio::task::coop::consume_budget` after each release:
/// without an `.await` in the loop a task would never give its worker
/// back, and that call yields only once the task's budget is spent, as
/// lwkt's `maybe_yield` switches only when a reschedule is due.
pub fn tokio(ctx: &Ctx, load: Load, lock: TokioLock) -> RunResult {
    let (n, workers) = shape();
    match (lock, load) {
        (TokioLock::Tokio, Load::SleepGuardDropped) | (TokioLock::Std, Load::SleepWhileHeld) => {
            return Err(format!("no tokio row pairs {lock:?} with {load:?}"));
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let out = measure(ctx, |round| match lock {
        TokioLock::Tokio => rt.block_on(tokio_mutex_rep(round, workers, load)),
        TokioLock::Std => rt.block_on(tokio_std_rep(round, workers, load)),
    })?;
    let desc = match lock {
        TokioLock::Tokio => "one tokio::sync::Mutex<u64>".to_string(),
        TokioLock::Std => "one std::sync::Mutex<u64> (tokio's advice when no guard has to \
                           live across an .await), guard dropped before every .await, \
                           tokio::task::coop::consume_budget().await after each release \
                           (yields once the task's budget is spent, as maybe_yield does at \
                           a tick)"
            .to_string(),
    };
    let note = out.note(
        &format!(
            "{workers} tasks ({THREADS_PER_CPU} per worker), multi_thread runtime with {n} \
             workers, {desc}"
        ),
        load,
    );
    let note = if load == Load::Plain {
        note
    } else {
        format!(
            "{note}; tokio::time::sleep has millisecond granularity, so each 50 µs sleep \
             lasts about 1 ms"
        )
    };
    Ok(out.sample(note))
}

/// One repetition of the tokio rows with a `tokio::sync::Mutex`.
async fn tokio_mutex_rep(
    round: &Round,
    workers: usize,
    load: Load,
) -> Result<(Vec<Tally>, u64), String> {
    let m = Arc::new(Lone(tokio::sync::Mutex::new(0u64)));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (m, round) = (m.clone(), round.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(round.start_at.into()).await;
                let mut t = Tally::begin();
                while !round.stopped() {
                    let mut g = m.lock().await;
                    *g += 1;
                    t.ops += 1;
                    if load.sleeps_at(t.ops) {
                        let seen = *g;
                        let s = Instant::now();
                        tokio::time::sleep(HOLD_SLEEP).await;
                        t.slept_since(s);
                        t.recheck(seen, *g);
                    }
                    drop(g);
                }
                t.finish()
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(workers);
    for h in handles {
        tallies.push(h.await.map_err(|e| format!("worker task: {e}"))?);
    }
    let m = Arc::try_unwrap(m).map_err(|_| "mutex still shared")?;
    Ok((tallies, m.0.into_inner()))
}

/// One repetition of the tokio rows with a `std::sync::Mutex`.
async fn tokio_std_rep(
    round: &Round,
    workers: usize,
    load: Load,
) -> Result<(Vec<Tally>, u64), String> {
    let m = Arc::new(Lone(std::sync::Mutex::new(0u64)));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (m, round) = (m.clone(), round.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(round.start_at.into()).await;
                let mut t = Tally::begin();
                while !round.stopped() {
                    let seen = {
                        let mut g = m.lock().expect("mutex poisoned");
                        *g += 1;
                        *g
                    };
                    t.ops += 1;
                    if load.sleeps_at(t.ops) {
                        let s = Instant::now();
                        tokio::time::sleep(HOLD_SLEEP).await;
                        t.slept_since(s);
                        let now = *m.lock().expect("mutex poisoned");
                        t.recheck(seen, now);
                    }
                    tokio::task::coop::consume_budget().await;
                }
                t.finish()
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(workers);
    for h in handles {
        tallies.push(h.await.map_err(|e| format!("worker task: {e}"))?);
    }
    let m = Arc::try_unwrap(m).map_err(|_| "mutex still shared")?;
    Ok((tallies, m.0.into_inner().expect("mutex poisoned")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_sections_sleep() {
        assert!((1..=64).all(|op| !Load::Plain.sleeps_at(op)));
        for load in [Load::SleepWhileHeld, Load::SleepGuardDropped] {
            let sleeps: Vec<u64> = (1..=64).filter(|&op| load.sleeps_at(op)).collect();
            assert_eq!(sleeps, [16, 32, 48, 64], "{load:?}");
        }
    }

    #[test]
    fn recheck_counts_moves() {
        let mut t = Tally::begin();
        t.recheck(5, 5);
        t.recheck(5, 9);
        assert_eq!(t.moved, 1);
    }

    #[test]
    fn tokio_refuses_pairs_it_has_no_row_for() {
        let ctx = Ctx { quick: true };
        let e = tokio(&ctx, Load::SleepWhileHeld, TokioLock::Std).unwrap_err();
        assert!(e.contains("no tokio row"), "{e}");
        assert!(tokio(&ctx, Load::SleepGuardDropped, TokioLock::Tokio).is_err());
    }
}
