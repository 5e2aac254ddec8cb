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
//! With [`Load::SleepWhileHeld`], every [`SLEEP_EVERY`]th critical section
//! of each worker sleeps [`HOLD_SLEEP`] while holding the lock. An lwkt
//! thread releases its tokens while asleep (and gets them back before
//! `sleep_for` returns); a mutex or tokio guard keeps everyone else out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{median, ncpus, Ctx, RunResult, Sample};

/// Workers per CPU (lwkt threads, OS threads or tokio tasks).
pub const THREADS_PER_CPU: usize = 8;
/// With [`Load::SleepWhileHeld`], one critical section in this many sleeps.
pub const SLEEP_EVERY: u64 = 16;
/// How long such a critical section sleeps.
pub const HOLD_SLEEP: Duration = Duration::from_micros(50);
/// Time between the start of a repetition and the workers' common start,
/// so that they are all spawned and waiting.
const LEAD: Duration = Duration::from_millis(10);

/// What each critical section does besides the increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Nothing: increment and release.
    Plain,
    /// Every [`SLEEP_EVERY`]th one sleeps [`HOLD_SLEEP`] holding the lock.
    SleepWhileHeld,
}

impl Load {
    /// Whether a worker's critical section number `op` (from 1) sleeps.
    #[inline]
    fn sleeps_at(self, op: u64) -> bool {
        self == Load::SleepWhileHeld && op % SLEEP_EVERY == 0
    }
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
            start: now,
            end: now,
        }
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
    stop: Arc<AtomicBool>,
}

impl Round {
    /// Schedules a repetition: workers start [`LEAD`] from now and an OS
    /// thread raises the stop flag `window` after that.
    fn schedule(window: Duration) -> Result<(Round, std::thread::JoinHandle<()>), String> {
        let start_at = Instant::now() + LEAD;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let timer = std::thread::Builder::new()
            .name("stop-timer".into())
            .spawn(move || {
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
        Ok((Round { start_at, stop }, timer))
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

/// What every repetition (the warm-up included) added up to.
#[derive(Debug, Default)]
struct Outcome {
    /// Median increments per second over the timed repetitions.
    rate: f64,
    /// Wall time each repetition was scheduled for.
    window: Duration,
    ops: u64,
    sleeps: u64,
    slept: Duration,
    /// Fewest and most increments one worker made in the last repetition.
    last_min: u64,
    last_max: u64,
}

impl Outcome {
    /// The note text common to every implementation.
    fn note(&self, workers: &str, load: Load) -> String {
        let mut s = format!(
            "{workers}, {} ms per rep; per-worker increments in the last rep: min {}, max {}",
            self.window.as_millis(),
            self.last_min,
            self.last_max
        );
        if load == Load::SleepWhileHeld {
            let avg = if self.sleeps == 0 {
                0.0
            } else {
                self.slept.as_secs_f64() * 1e6 / self.sleeps as f64
            };
            s.push_str(&format!(
                "; {} sleeps of {} µs while holding over {} increments in all reps \
                 (1 in {SLEEP_EVERY}), {avg:.0} µs per sleep call on average",
                self.sleeps,
                HOLD_SLEEP.as_micros(),
                self.ops
            ));
        }
        s
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
    let mut out = Outcome {
        window,
        ..Outcome::default()
    };
    // Repetition 0 is the warm-up.
    for i in 0..=ctx.reps() {
        let (round, timer) = Round::schedule(window)?;
        let r = rep(&round);
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
        if i > 0 {
            rates.push(ops as f64 / wall.max(1e-9));
        }
        out.ops += ops;
        out.sleeps += tallies.iter().map(|t| t.sleeps).sum::<u64>();
        out.slept += tallies.iter().map(|t| t.slept).sum::<Duration>();
        out.last_min = tallies.iter().map(|t| t.ops).min().unwrap_or(0);
        out.last_max = tallies.iter().map(|t| t.ops).max().unwrap_or(0);
    }
    out.rate = median(&mut rates);
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
            let tok = Arc::new(lwkt::Token::new("counter", 0u64));
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
                                let s = Instant::now();
                                // Releases the token while asleep.
                                let _ = td.sleep_for(HOLD_SLEEP);
                                t.slept_since(s);
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
            Ok((tallies, tok.into_inner()))
        })
    })?;
    let after = rt.stats().total;
    let per = |a: u64, b: u64| (a - b) as f64 / out.ops.max(1) as f64;
    let mut note = out.note(
        &format!(
            "{workers} lwkt threads on {n} cpus, one Token<u64>, maybe_yield after each release"
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
    Ok(Sample::with_note(out.rate, note))
}

/// A mutex guarding a `u64`, for the OS-thread peers.
pub trait Lock: Send + Sync + 'static {
    const DESC: &'static str;
    fn new() -> Self;
    fn with(&self, f: impl FnOnce(&mut u64));
    fn into_value(self) -> u64;
}

impl Lock for parking_lot::Mutex<u64> {
    const DESC: &'static str = "parking_lot::Mutex<u64>";
    fn new() -> Self {
        parking_lot::Mutex::new(0)
    }
    fn with(&self, f: impl FnOnce(&mut u64)) {
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
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock().expect("mutex poisoned"))
    }
    fn into_value(self) -> u64 {
        self.into_inner().expect("mutex poisoned")
    }
}

/// OS threads: [`THREADS_PER_CPU`] × `ncpus`, unpinned, one `L`; a
/// sleeping critical section calls `std::thread::sleep` holding the lock.
pub fn os_threads<L: Lock>(ctx: &Ctx, load: Load) -> RunResult {
    let (n, workers) = shape();
    let out = measure(ctx, |round| {
        let m = Arc::new(L::new());
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (m, round) = (m.clone(), round.clone());
            let h = std::thread::Builder::new()
                .name(format!("worker-{k}"))
                .spawn(move || {
                    std::thread::sleep(round.until_start());
                    let mut t = Tally::begin();
                    while !round.stopped() {
                        m.with(|c| {
                            *c += 1;
                            t.ops += 1;
                            if load.sleeps_at(t.ops) {
                                let s = Instant::now();
                                std::thread::sleep(HOLD_SLEEP);
                                t.slept_since(s);
                            }
                        });
                    }
                    t.finish()
                })
                .map_err(|e| format!("spawning worker {k}: {e}"))?;
            handles.push(h);
        }
        let mut tallies = Vec::with_capacity(workers);
        for h in handles {
            tallies.push(h.join().map_err(|_| "worker panicked")?);
        }
        let m = Arc::try_unwrap(m).map_err(|_| "mutex still shared")?;
        Ok((tallies, m.into_value()))
    })?;
    let note = out.note(
        &format!(
            "{workers} OS threads ({THREADS_PER_CPU} per cpu, {n} cpus, unpinned), one {}",
            L::DESC
        ),
        load,
    );
    Ok(Sample::with_note(out.rate, note))
}

/// tokio: multi_thread runtime with `ncpus` workers, [`THREADS_PER_CPU`] ×
/// `ncpus` tasks, one `tokio::sync::Mutex<u64>`; a sleeping critical
/// section awaits `tokio::time::sleep` holding the guard.
pub fn tokio(ctx: &Ctx, load: Load) -> RunResult {
    let (n, workers) = shape();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let out = measure(ctx, |round| {
        rt.block_on(async {
            let m = Arc::new(tokio::sync::Mutex::new(0u64));
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
                                let s = Instant::now();
                                tokio::time::sleep(HOLD_SLEEP).await;
                                t.slept_since(s);
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
            Ok((tallies, m.into_inner()))
        })
    })?;
    let note = out.note(
        &format!(
            "{workers} tasks ({THREADS_PER_CPU} per worker), multi_thread runtime with {n} \
             workers, one tokio::sync::Mutex<u64>"
        ),
        load,
    );
    Ok(Sample::with_note(out.rate, note))
}
