//! `token_study`: the token contention study the 2010 seed asked for
//! (`economopoulos-2010-token-scalability.txt`): the seed's re-acquisition
//! algorithm ([`TokenReacquire::Seed`]) against this crate's
//! ([`TokenReacquire::Lwkt`]), on the same workloads, with two OS-thread
//! baselines (one big `parking_lot::Mutex`; one `parking_lot` lock per
//! token, taken in address order).
//!
//! # The workload
//!
//! `cpus × M` threads (lwkt: `M` on each CPU; OS threads: the `j`-th pinned
//! to allowed CPU `j mod cpus mod cores`) each repeat one operation for a
//! fixed wall window: take `N` tokens, increment each token's counter,
//! then according to the hold pattern nothing, a yield, or a 20 µs sleep
//! while holding them, increment again, release, and yield (lwkt threads
//! are cooperative: the yield lets the CPU's other `M - 1` threads take
//! their turn). Token choice:
//! * `hot`: `N - 1` tokens drawn uniformly from a pool of 64, then one hot
//!   token every operation takes, last (the held order in which the
//!   seed's algorithm wastes the most);
//! * `zipf`: `N` distinct tokens drawn from the pool of 64 with Zipf
//!   weights (s = 1), in the drawn order.
//!
//! In the `shared` points every other token but the last is taken shared
//! (lwkt: `get_token_shared`; per-token baseline: a read lock of a
//! `parking_lot::RwLock`; the big mutex has no shared mode).
//!
//! A mutex is held across a yield or a sleep; a token is released while
//! its holder is switched out and re-acquired before it runs again (what
//! the scheduler's re-acquisition pass does, and what this study
//! measures). The baselines therefore do the same work with their own,
//! stricter, semantics.
//!
//! # Figures per point and policy
//!
//! throughput (operations/s), wasted acquisitions per operation (tokens
//! the scheduler took and gave back because a later one failed), atomic
//! read-modify-writes on token words made by the scheduler's passes per
//! operation, re-polls per switch (token-word checks made by the
//! scheduler's passes per thread switched in), p50/p99 block-to-run time
//! (from a contended `get_token` or the yield inside the critical section
//! until the thread runs again holding its tokens; a lock's contended
//! `lock()` for the baselines), fairness (max/min operations per thread),
//! and process CPU time per operation.
//!
//! # Output
//!
//! JSON rows for the headline point (M = 16, N = 4, exclusive, hot token,
//! yield while held, all cores; median of [`headline_reps`] alternating
//! runs): `token_study_wasted`, `token_study_throughput`,
//! `token_study_fairness`, impls `seed` and `lwkt`. The whole sweep goes
//! to `DIR/token-contention.md` (+ SVGs in `DIR/token-contention/`) when
//! `--report DIR` is given (the parent passes DIR in
//! [`REPORT_DIR_ENV`]); see `docs/token-contention.md`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use lwkt::{CurThread, Runtime, ThreadBuilder, Token, TokenReacquire};

use super::{Bench, Better, Impl};
use crate::harness::{
    allowed_cpus, ncpus, pin_current_thread, Ctx, Measurement, RunResult, Sample, Spread,
    Stopwatch, TickClock,
};

pub static BENCH: Bench = Bench {
    name: "token_study",
    unit: "wasted/op",
    better: Better::Lower,
    about: "the 2010 seed's token re-acquisition against lwkt's at M=16 threads per CPU, \
            N=4 tokens, yield while held, one hot token, all cores (rows token_study_wasted, \
            token_study_throughput, token_study_fairness; impls seed, lwkt); --report DIR \
            writes the whole sweep to DIR/token-contention.md",
    impls: &[Impl {
        name: "lwkt",
        run: study,
    }],
    // The default sweep takes about 3 minutes on 2 cores.
    timeout: Duration::from_secs(900),
    unranked: &[],
};

/// Environment variable through which the parent passes `--report DIR`
/// to the child running the study.
pub const REPORT_DIR_ENV: &str = "LWKT_BENCH_REPORT_DIR";

/// Tokens in the pool the cold and Zipf choices draw from.
const POOL: usize = 64;
/// Sleep inside the critical section of the `sleep` hold pattern.
const SLEEP_HELD: Duration = Duration::from_micros(20);
/// Per-thread cap on kept latency samples.
const MAX_SAMPLES: usize = 1 << 20;

/// What a thread does while it holds its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    None,
    Yield,
    Sleep,
}

impl Hold {
    /// Short name, for labels and file names.
    pub fn name(self) -> &'static str {
        match self {
            Hold::None => "none",
            Hold::Yield => "yield",
            Hold::Sleep => "sleep",
        }
    }

    /// Name for prose.
    pub fn name_long(self) -> &'static str {
        match self {
            Hold::None => "nothing",
            Hold::Yield => "yield",
            Hold::Sleep => "sleep 20 µs",
        }
    }
}

/// Which tokens an operation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Hot,
    Zipf,
}

impl Choice {
    /// Short name, for labels.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Hot => "hot",
            Choice::Zipf => "zipf",
        }
    }

    /// Name for prose.
    pub fn name_long(self) -> &'static str {
        match self {
            Choice::Hot => "one hot",
            Choice::Zipf => "Zipf-skewed (64)",
        }
    }
}

/// Who serializes the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Seed,
    Lwkt,
    BigMutex,
    PerToken,
}

impl Policy {
    /// Every policy, in the order a [`Row`] holds their figures.
    pub const ALL: [Policy; 4] = [
        Policy::Seed,
        Policy::Lwkt,
        Policy::BigMutex,
        Policy::PerToken,
    ];

    /// The name used in rows and tables.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Seed => "seed",
            Policy::Lwkt => "lwkt",
            Policy::BigMutex => "big_mutex",
            Policy::PerToken => "parking_lot",
        }
    }
}

/// One sweep point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub cpus: usize,
    pub m: usize,
    pub n: usize,
    pub hold: Hold,
    pub choice: Choice,
    /// Every other token but the last taken shared.
    pub shared: bool,
}

impl Point {
    /// A one-line description.
    pub fn label(&self) -> String {
        format!(
            "cpus={} M={} N={} {} {} {}",
            self.cpus,
            self.m,
            self.n,
            if self.shared { "shared" } else { "excl" },
            self.choice.name(),
            self.hold.name()
        )
    }
}

/// What one (point, policy) run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub ops: u64,
    pub ops_per_s: f64,
    pub cpu_ns_per_op: f64,
    pub wasted_per_op: f64,
    pub rmw_per_op: f64,
    pub repolls_per_switch: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// max/min operations per thread (infinite when a thread made none).
    pub fairness: f64,
    pub min_ops: u64,
    pub max_ops: u64,
}

/// Timing knobs of one study run.
#[derive(Clone, Copy, Debug)]
struct Timing {
    warmup: Duration,
    window: Duration,
}

/// Zipf (s = 1) cumulative weights over the pool's ranks.
fn zipf_cdf() -> Vec<f64> {
    let w: Vec<f64> = (1..=POOL).map(|r| 1.0 / r as f64).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The tokens of one operation, in the order it takes them: indices into
/// a table of `1 + POOL` tokens where 0 is the hot token.
fn plan(p: &Point, rng: &mut u64, cdf: &[f64], out: &mut Vec<usize>) {
    out.clear();
    let want = match p.choice {
        Choice::Hot => p.n - 1,
        Choice::Zipf => p.n,
    };
    while out.len() < want {
        let r = xorshift(rng);
        let k = match p.choice {
            Choice::Hot => 1 + (r % POOL as u64) as usize,
            Choice::Zipf => {
                let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                1 + cdf.partition_point(|&c| c < u).min(POOL - 1)
            }
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if p.choice == Choice::Hot {
        out.push(0);
    }
}

/// Whether the `pos`-th token of an `n`-token operation is taken shared.
fn is_shared(p: &Point, pos: usize) -> bool {
    p.shared && pos + 1 < p.n && pos % 2 == 1
}

/// Dependent multiply-rotate steps of [`work`].
const WORK_STEPS: u32 = 256;

/// The work done under the tokens, twice per operation (before and after
/// the hold): [`WORK_STEPS`] dependent multiply-rotate steps, about
/// 0.3–0.5 µs on current x86 cores, so a running holder keeps a hot token
/// long enough for other CPUs' scans to find it busy.
#[inline]
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..WORK_STEPS {
        x = std::hint::black_box(x.wrapping_mul(0x2545_F491_4F6C_DD1D).rotate_left(7));
    }
    x
}

/// Phases of a run, as the workers see them.
const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What each worker hands back.
struct WorkerOut {
    samples: Vec<u32>,
    /// Increments this worker made under exclusive holds (all phases).
    increments: u64,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i])
}

fn fairness_of(counts: &[u64]) -> (f64, u64, u64) {
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let f = if min == 0 {
        f64::INFINITY
    } else {
        max as f64 / min as f64
    };
    (f, min, max)
}

/// One lwkt run (seed or lwkt protocol) of point `p`.
fn run_lwkt(
    p: &Point,
    mode: TokenReacquire,
    t: Timing,
    clock: TickClock,
) -> Result<Figures, String> {
    let rt = Runtime::builder()
        .cpus(p.cpus)
        .token_reacquire(mode)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut table: Vec<Token<u64>> = vec![Token::new("study-hot", 0)];
    table.extend((0..POOL).map(|_| Token::new("study-pool", 0)));
    let toks = Arc::new(table);
    let threads = p.cpus * p.m;
    let counts: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
        (0..threads)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let phase = Arc::new(AtomicU8::new(WARM));
    let handle = rt.handle();
    let mut hs = Vec::with_capacity(threads);
    for j in 0..threads {
        let (toks, counts, phase, p) = (toks.clone(), counts.clone(), phase.clone(), *p);
        let h = ThreadBuilder::new()
            .cpu(j % p.cpus)
            .spawn_from(&handle, move |td| {
                lwkt_worker(td, &p, j, &toks, &counts[j], &phase, clock)
            })
            .map_err(|e| format!("spawn: {e}"))?;
        hs.push(h);
    }
    std::thread::sleep(t.warmup);
    let s0 = rt.stats().total;
    let c0: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let watch = Stopwatch::start();
    phase.store(MEASURE, Ordering::SeqCst);
    std::thread::sleep(t.window);
    phase.store(STOP, Ordering::SeqCst);
    let timing = watch.stop();
    let s1 = rt.stats().total;
    let c1: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let mut samples = Vec::new();
    let mut increments = 0;
    for h in hs {
        let out = h
            .join_blocking()
            .map_err(|e| format!("worker panicked: {e}"))?;
        samples.extend(out.samples);
        increments += out.increments;
    }
    drop(rt);
    // No increment made under a token was lost: exclusion held.
    let table = Arc::try_unwrap(toks).map_err(|_| "token table still shared".to_string())?;
    let kept: u64 = table.into_iter().map(Token::into_inner).sum();
    if kept != increments {
        return Err(format!(
            "{}: {increments} increments made under tokens, {kept} kept",
            p.label()
        ));
    }
    let per: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
    let ops: u64 = per.iter().sum();
    if ops == 0 {
        return Err(format!("{}: no operation completed", p.label()));
    }
    let opsf = ops as f64;
    let (fairness, min_ops, max_ops) = fairness_of(&per);
    samples.sort_unstable();
    let switches = (s1.switches - s0.switches).max(1) as f64;
    Ok(Figures {
        ops,
        ops_per_s: opsf / timing.wall.as_secs_f64(),
        cpu_ns_per_op: timing.cpu.as_nanos() as f64 / opsf,
        wasted_per_op: (s1.token_wasted - s0.token_wasted) as f64 / opsf,
        rmw_per_op: (s1.token_rmws - s0.token_rmws) as f64 / opsf,
        repolls_per_switch: (s1.token_checks - s0.token_checks) as f64 / switches,
        p50_ns: clock.ns(percentile(&samples, 0.5) as u64),
        p99_ns: clock.ns(percentile(&samples, 0.99) as u64),
        fairness,
        min_ops,
        max_ops,
    })
}

/// One lwkt thread of the study.
fn lwkt_worker(
    td: &mut CurThread,
    p: &Point,
    j: usize,
    toks: &[Token<u64>],
    count: &AtomicU64,
    phase: &AtomicU8,
    clock: TickClock,
) -> WorkerOut {
    let cdf = zipf_cdf();
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (j as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut idx = Vec::with_capacity(p.n);
    let mut samples = Vec::new();
    let mut excl = Vec::with_capacity(p.n);
    let mut shared = Vec::with_capacity(p.n);
    let mut acc = 0u64;
    let mut increments = 0u64;
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == STOP {
            break;
        }
        let keep = ph == MEASURE && samples.len() < MAX_SAMPLES;
        plan(p, &mut rng, &cdf, &mut idx);
        for (pos, &k) in idx.iter().enumerate() {
            let tok = &toks[k];
            if is_shared(p, pos) {
                let g = match td.try_token_shared(tok) {
                    Some(g) => g,
                    None => {
                        let t0 = clock.now();
                        let g = td.get_token_shared(tok);
                        if keep {
                            samples
                                .push(clock.now().wrapping_sub(t0).min(u64::from(u32::MAX)) as u32);
                        }
                        g
                    }
                };
                acc = acc.wrapping_add(*g.get(td));
                shared.push(g);
            } else {
                let g = match td.try_token(tok) {
                    Some(g) => g,
                    None => {
                        let t0 = clock.now();
                        let g = td.get_token(tok);
                        if keep {
                            samples
                                .push(clock.now().wrapping_sub(t0).min(u64::from(u32::MAX)) as u32);
                        }
                        g
                    }
                };
                *g.get(td) += 1;
                excl.push(g);
            }
        }
        acc = acc.wrapping_add(work(acc));
        match p.hold {
            Hold::None => {}
            Hold::Yield => {
                let t0 = clock.now();
                td.yield_now();
                if keep {
                    samples.push(clock.now().wrapping_sub(t0).min(u64::from(u32::MAX)) as u32);
                }
            }
            Hold::Sleep => {
                let _ = td.sleep_for(SLEEP_HELD);
            }
        }
        acc = acc.wrapping_add(work(acc));
        for g in &excl {
            *g.get(td) += 1;
        }
        increments += 2 * excl.len() as u64;
        // Release in reverse order of acquisition.
        while let Some(g) = excl.pop() {
            drop(g);
        }
        while let Some(g) = shared.pop() {
            drop(g);
        }
        std::hint::black_box(acc);
        if ph == MEASURE {
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        td.yield_now();
    }
    WorkerOut {
        samples,
        increments,
    }
}

/// The baselines' lock table.
enum Table {
    /// One lock for everything (boxed: the counters are a large array).
    Big(Box<parking_lot::Mutex<[u64; POOL + 1]>>),
    /// One lock per token; exclusive-only points.
    Mutexes(Vec<CachePadded<parking_lot::Mutex<u64>>>),
    /// One lock per token; points with shared positions.
    RwLocks(Vec<CachePadded<parking_lot::RwLock<u64>>>),
}

enum Guard<'a> {
    M(parking_lot::MutexGuard<'a, u64>),
    W(parking_lot::RwLockWriteGuard<'a, u64>),
    R(parking_lot::RwLockReadGuard<'a, u64>),
}

/// One OS-thread baseline run of point `p`.
fn run_os(p: &Point, policy: Policy, t: Timing, clock: TickClock) -> Result<Figures, String> {
    let locks = Arc::new(match policy {
        Policy::BigMutex => Table::Big(Box::new(parking_lot::Mutex::new([0; POOL + 1]))),
        _ if p.shared => Table::RwLocks(
            (0..=POOL)
                .map(|_| CachePadded::new(parking_lot::RwLock::new(0)))
                .collect(),
        ),
        _ => Table::Mutexes(
            (0..=POOL)
                .map(|_| CachePadded::new(parking_lot::Mutex::new(0)))
                .collect(),
        ),
    });
    let cpus = allowed_cpus();
    let threads = p.cpus * p.m;
    let counts: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
        (0..threads)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let phase = Arc::new(AtomicU8::new(WARM));
    let failed = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::with_capacity(threads);
    for j in 0..threads {
        let (locks, counts, phase, p) = (locks.clone(), counts.clone(), phase.clone(), *p);
        let cpu = cpus[(j % p.cpus) % cpus.len()];
        let failed = failed.clone();
        hs.push(std::thread::spawn(move || {
            if pin_current_thread(cpu).is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            os_worker(&p, j, &locks, &counts[j], &phase, clock)
        }));
    }
    std::thread::sleep(t.warmup);
    let c0: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let watch = Stopwatch::start();
    phase.store(MEASURE, Ordering::SeqCst);
    std::thread::sleep(t.window);
    phase.store(STOP, Ordering::SeqCst);
    let timing = watch.stop();
    let c1: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let mut samples = Vec::new();
    for h in hs {
        let out = h.join().map_err(|_| "worker panicked".to_string())?;
        samples.extend(out.samples);
    }
    if failed.load(Ordering::Relaxed) {
        return Err("could not pin a worker".into());
    }
    let per: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
    let ops: u64 = per.iter().sum();
    if ops == 0 {
        return Err(format!("{}: no operation completed", p.label()));
    }
    let opsf = ops as f64;
    let (fairness, min_ops, max_ops) = fairness_of(&per);
    samples.sort_unstable();
    Ok(Figures {
        ops,
        ops_per_s: opsf / timing.wall.as_secs_f64(),
        cpu_ns_per_op: timing.cpu.as_nanos() as f64 / opsf,
        p50_ns: clock.ns(percentile(&samples, 0.5) as u64),
        p99_ns: clock.ns(percentile(&samples, 0.99) as u64),
        fairness,
        min_ops,
        max_ops,
        ..Figures::default()
    })
}

fn os_worker(
    p: &Point,
    j: usize,
    locks: &Table,
    count: &AtomicU64,
    phase: &AtomicU8,
    clock: TickClock,
) -> WorkerOut {
    let cdf = zipf_cdf();
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (j as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut idx = Vec::with_capacity(p.n);
    let mut order: Vec<(usize, bool)> = Vec::with_capacity(p.n);
    let mut samples = Vec::new();
    let mut acc = 0u64;
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == STOP {
            break;
        }
        let keep = ph == MEASURE && samples.len() < MAX_SAMPLES;
        plan(p, &mut rng, &cdf, &mut idx);
        let sample = |t0: u64, samples: &mut Vec<u32>| {
            if keep {
                samples.push(clock.now().wrapping_sub(t0).min(u64::from(u32::MAX)) as u32);
            }
        };
        let hold = |acc: u64| {
            match p.hold {
                Hold::None => {}
                Hold::Yield => std::thread::yield_now(),
                Hold::Sleep => std::thread::sleep(SLEEP_HELD),
            }
            acc
        };
        match locks {
            Table::Big(m) => {
                let mut g = match m.try_lock() {
                    Some(g) => g,
                    None => {
                        let t0 = clock.now();
                        let g = m.lock();
                        sample(t0, &mut samples);
                        g
                    }
                };
                for &k in &idx {
                    g[k] += 1;
                }
                acc = hold(acc.wrapping_add(work(acc)));
                acc = acc.wrapping_add(work(acc));
                for &k in &idx {
                    g[k] += 1;
                }
            }
            Table::Mutexes(_) | Table::RwLocks(_) => {
                // Address order (the table's order) avoids deadlock.
                order.clear();
                order.extend(
                    idx.iter()
                        .enumerate()
                        .map(|(pos, &k)| (k, is_shared(p, pos))),
                );
                order.sort_unstable();
                let mut gs: Vec<Guard<'_>> = Vec::with_capacity(p.n);
                for &(k, sh) in &order {
                    let g = match locks {
                        Table::Mutexes(v) => Guard::M(v[k].try_lock().unwrap_or_else(|| {
                            let t0 = clock.now();
                            let g = v[k].lock();
                            sample(t0, &mut samples);
                            g
                        })),
                        Table::RwLocks(v) if sh => Guard::R(v[k].try_read().unwrap_or_else(|| {
                            let t0 = clock.now();
                            let g = v[k].read();
                            sample(t0, &mut samples);
                            g
                        })),
                        Table::RwLocks(v) => Guard::W(v[k].try_write().unwrap_or_else(|| {
                            let t0 = clock.now();
                            let g = v[k].write();
                            sample(t0, &mut samples);
                            g
                        })),
                        Table::Big(_) => unreachable!("handled above"),
                    };
                    gs.push(g);
                }
                for g in gs.iter_mut() {
                    match g {
                        Guard::M(g) => **g += 1,
                        Guard::W(g) => **g += 1,
                        Guard::R(g) => acc = acc.wrapping_add(**g),
                    }
                }
                acc = hold(acc.wrapping_add(work(acc)));
                acc = acc.wrapping_add(work(acc));
                for g in gs.iter_mut() {
                    match g {
                        Guard::M(g) => **g += 1,
                        Guard::W(g) => **g += 1,
                        Guard::R(_) => {}
                    }
                }
                while let Some(g) = gs.pop() {
                    drop(g);
                }
            }
        }
        std::hint::black_box(acc);
        if ph == MEASURE {
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }
    WorkerOut {
        samples,
        increments: 0,
    }
}

/// Runs one policy at one point.
fn run_point(p: &Point, policy: Policy, t: Timing, clock: TickClock) -> Result<Figures, String> {
    match policy {
        Policy::Seed => run_lwkt(p, TokenReacquire::Seed, t, clock),
        Policy::Lwkt => run_lwkt(p, TokenReacquire::Lwkt, t, clock),
        Policy::BigMutex | Policy::PerToken => run_os(p, policy, t, clock),
    }
}

/// The CPU counts of the sweep: 1, powers of two below the cores, the
/// cores, and one oversubscribed point.
fn cpu_counts(cores: usize) -> Vec<usize> {
    let mut v = vec![1];
    let mut c = 2;
    while c < cores {
        v.push(c);
        c *= 2;
    }
    if cores > 1 {
        v.push(cores);
    }
    v.push((2 * cores).max(4));
    v.dedup();
    v
}

/// The headline point: M = 16, N = 4, exclusive, hot token, yield while
/// held, on all cores.
fn headline(cores: usize) -> Point {
    Point {
        cpus: cores,
        m: 16,
        n: 4,
        hold: Hold::Yield,
        choice: Choice::Hot,
        shared: false,
    }
}

/// Repetitions of the headline point whose median the JSON rows report.
pub fn headline_reps(ctx: &Ctx) -> usize {
    if ctx.quick {
        1
    } else {
        5
    }
}

/// The sweep: the full grid of M, N, hold and choice (exclusive) at all
/// cores, a shared slice there, and a thinner grid at the other CPU
/// counts. `--quick`: a handful of points.
fn grid(cores: usize, quick: bool) -> Vec<Point> {
    let mut v = Vec::new();
    let all = cores;
    let holds = [Hold::None, Hold::Yield, Hold::Sleep];
    let choices = [Choice::Hot, Choice::Zipf];
    if quick {
        for &hold in &holds {
            v.push(Point {
                cpus: all,
                m: 4,
                n: 4,
                hold,
                choice: Choice::Hot,
                shared: false,
            });
        }
        return v;
    }
    for &choice in &choices {
        for &hold in &holds {
            for &n in &[1, 2, 4, 8] {
                for &m in &[1, 4, 16, 64] {
                    v.push(Point {
                        cpus: all,
                        m,
                        n,
                        hold,
                        choice,
                        shared: false,
                    });
                }
            }
        }
    }
    for &choice in &choices {
        for &hold in &[Hold::None, Hold::Yield] {
            for &n in &[2, 4, 8] {
                v.push(Point {
                    cpus: all,
                    m: 16,
                    n,
                    hold,
                    choice,
                    shared: true,
                });
            }
        }
    }
    for cpus in cpu_counts(cores) {
        if cpus == all {
            continue;
        }
        for &m in &[1, 4, 16, 64] {
            for &hold in &[Hold::None, Hold::Yield] {
                v.push(Point {
                    cpus,
                    m,
                    n: 4,
                    hold,
                    choice: Choice::Hot,
                    shared: false,
                });
            }
            v.push(Point {
                cpus,
                m,
                n: 4,
                hold: Hold::Yield,
                choice: Choice::Zipf,
                shared: false,
            });
        }
    }
    v
}

/// One sweep point's results, one per policy (in [`Policy::ALL`] order):
/// for seed and lwkt the field-by-field median of [`point_reps`]
/// alternating runs, with the range of their throughputs; for the
/// baselines one run.
pub struct Row {
    pub point: Point,
    pub figs: Vec<Result<Figures, String>>,
    /// Lowest and highest throughput over the runs, per policy.
    pub tp_range: Vec<Option<(f64, f64)>>,
    /// Runs that failed (left out of the medians), with their errors.
    pub failed_runs: Vec<String>,
}

/// Runs of seed and lwkt (alternating) per sweep point.
pub fn point_reps(ctx: &Ctx) -> usize {
    if ctx.quick {
        1
    } else {
        3
    }
}

/// The field-by-field median of several runs' figures; the fewest and
/// most operations per thread come from the run whose fairness is the
/// median, so they match it.
fn median_figures(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| spread(runs.iter().map(f)).median;
    let mut by_fairness: Vec<&Figures> = runs.iter().collect();
    by_fairness.sort_by(|a, b| a.fairness.total_cmp(&b.fairness));
    let fair = by_fairness[by_fairness.len() / 2];
    let mu = |f: fn(&Figures) -> u64| {
        let mut v: Vec<u64> = runs.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    Figures {
        ops: mu(|f| f.ops),
        ops_per_s: m(|f| f.ops_per_s),
        cpu_ns_per_op: m(|f| f.cpu_ns_per_op),
        wasted_per_op: m(|f| f.wasted_per_op),
        rmw_per_op: m(|f| f.rmw_per_op),
        repolls_per_switch: m(|f| f.repolls_per_switch),
        p50_ns: m(|f| f.p50_ns),
        p99_ns: m(|f| f.p99_ns),
        fairness: fair.fairness,
        min_ops: fair.min_ops,
        max_ops: fair.max_ops,
    }
}

/// Measures every policy at `p`: seed and lwkt `reps` times each,
/// alternating, the baselines once.
fn measure_point(p: &Point, reps: usize, t: Timing, clock: TickClock) -> Row {
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); Policy::ALL.len()];
    let mut failed_runs = Vec::new();
    let mut once = |i: usize, pol: Policy| match run_point(p, pol, t, clock) {
        Ok(f) => runs[i].push(f),
        Err(e) => failed_runs.push(format!("{} run at {e}", pol.name())),
    };
    for _ in 0..reps {
        once(0, Policy::Seed);
        once(1, Policy::Lwkt);
    }
    once(2, Policy::BigMutex);
    once(3, Policy::PerToken);
    let figs = runs
        .iter()
        .map(|r| {
            if r.is_empty() {
                Err("every run failed".to_string())
            } else {
                Ok(median_figures(r))
            }
        })
        .collect();
    let tp_range = runs
        .iter()
        .map(|r| {
            (!r.is_empty()).then(|| {
                let s = spread(r.iter().map(|f| f.ops_per_s));
                (s.min, s.max)
            })
        })
        .collect();
    Row {
        point: *p,
        figs,
        tp_range,
        failed_runs,
    }
}

fn study(ctx: &Ctx) -> RunResult {
    let cores = ncpus();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let clock = TickClock::calibrate(Duration::from_millis(20));
    let t = if ctx.quick {
        Timing {
            warmup: Duration::from_millis(30),
            window: Duration::from_millis(50),
        }
    } else {
        Timing {
            warmup: Duration::from_millis(30),
            window: Duration::from_millis(100),
        }
    };
    // The headline point, repeated, seed and lwkt alternating.
    let hp = headline(cores);
    let mut seed_runs = Vec::new();
    let mut lwkt_runs = Vec::new();
    for _ in 0..headline_reps(ctx) {
        seed_runs.push(run_point(&hp, Policy::Seed, t, clock)?);
        lwkt_runs.push(run_point(&hp, Policy::Lwkt, t, clock)?);
    }
    let rows = headline_rows(&hp, &seed_runs, &lwkt_runs);

    if let Some(dir) = std::env::var_os(REPORT_DIR_ENV) {
        let points = grid(cores, ctx.quick);
        let total = points.len();
        let mut results = Vec::with_capacity(total);
        for (i, p) in points.into_iter().enumerate() {
            let row = measure_point(&p, point_reps(ctx), t, clock);
            eprintln!(
                "token_study: {}/{} {}: seed {} lwkt {}",
                i + 1,
                total,
                p.label(),
                short(&row.figs[0]),
                short(&row.figs[1])
            );
            results.push(row);
        }
        let dir = Path::new(&dir);
        super::token_study_report::write(
            dir,
            &super::token_study_report::Study {
                rows: &results,
                headline: hp,
                headline_seed: &seed_runs,
                headline_lwkt: &lwkt_runs,
                cores,
                quick: ctx.quick,
                window: t.window,
                clock: clock.describe(),
                point_reps: point_reps(ctx),
                load,
            },
        )?;
        eprintln!(
            "token_study: report written to {}",
            dir.join("token-contention.md").display()
        );
    }
    Ok(Sample::rows(rows))
}

fn short(f: &Result<Figures, String>) -> String {
    match f {
        Ok(f) => format!(
            "{} ops, {:.0} ops/s, {:.2} wasted/op, fairness {:.2}",
            f.ops, f.ops_per_s, f.wasted_per_op, f.fairness
        ),
        Err(e) => format!("failed: {e}"),
    }
}

fn spread(xs: impl Iterator<Item = f64>) -> Spread {
    let mut v: Vec<f64> = xs.collect();
    Spread::of(&mut v)
}

/// The headline's JSON rows from its repetitions.
fn headline_rows(p: &Point, seed: &[Figures], lwkt: &[Figures]) -> Vec<Measurement> {
    let mut rows = Vec::new();
    let what = p.label();
    for (imp, runs) in [("seed", seed), ("lwkt", lwkt)] {
        let w = spread(runs.iter().map(|f| f.wasted_per_op));
        let tp = spread(runs.iter().map(|f| f.ops_per_s));
        // JSON has no infinity: a run where a thread completed no
        // operation (possible in `--quick`'s short windows on a loaded
        // machine) counts that thread's operations as 1, a lower bound on
        // its max/min, and the note says how many runs did.
        let fair = spread(
            runs.iter()
                .map(|f| f.max_ops as f64 / f.min_ops.max(1) as f64),
        );
        let starved = runs.iter().filter(|f| f.min_ops == 0).count();
        let cpu = spread(runs.iter().map(|f| f.cpu_ns_per_op)).median;
        let rmw = spread(runs.iter().map(|f| f.rmw_per_op)).median;
        let polls = spread(runs.iter().map(|f| f.repolls_per_switch)).median;
        rows.push(
            Measurement {
                bench: "token_study_wasted".into(),
                imp: imp.into(),
                unit: "wasted/op".into(),
                cpu_ns: Some(cpu),
                note: Some(format!(
                    "{what}: tokens the scheduler took and gave back per completed operation; \
                     scheduler token-word RMWs/op {rmw:.2}, re-polls/switch {polls:.2}; \
                     median of {} runs",
                    runs.len()
                )),
                ..Measurement::default()
            }
            .with_spread(w),
        );
        rows.push(
            Measurement {
                bench: "token_study_throughput".into(),
                imp: imp.into(),
                unit: "ops/s".into(),
                cpu_ns: Some(cpu),
                note: Some(format!(
                    "{what}: operations per second; cpu_ns is process CPU ns per operation; \
                     median of {} runs",
                    runs.len()
                )),
                ..Measurement::default()
            }
            .with_spread(tp),
        );
        rows.push(
            Measurement {
                bench: "token_study_fairness".into(),
                imp: imp.into(),
                unit: "max/min".into(),
                note: Some(format!(
                    "{what}: most over fewest operations per thread (1 is fair); median of {} \
                     runs{}",
                    runs.len(),
                    if starved > 0 {
                        format!(
                            "; in {starved} of them a thread completed no operation (counted \
                             as 1, so the figure is a lower bound)"
                        )
                    } else {
                        String::new()
                    }
                )),
                ..Measurement::default()
            }
            .with_spread(fair),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_take_distinct_tokens_and_the_hot_one_last() {
        let cdf = zipf_cdf();
        let mut rng = 7;
        let mut out = Vec::new();
        for n in [1, 2, 4, 8] {
            for choice in [Choice::Hot, Choice::Zipf] {
                let p = Point {
                    cpus: 1,
                    m: 1,
                    n,
                    hold: Hold::None,
                    choice,
                    shared: false,
                };
                for _ in 0..1000 {
                    plan(&p, &mut rng, &cdf, &mut out);
                    assert_eq!(out.len(), n);
                    let mut s = out.clone();
                    s.sort_unstable();
                    s.dedup();
                    assert_eq!(s.len(), n, "{out:?}");
                    assert!(out.iter().all(|&k| k <= POOL));
                    match choice {
                        Choice::Hot => {
                            assert_eq!(*out.last().unwrap(), 0);
                            assert!(out[..n - 1].iter().all(|&k| k >= 1));
                        }
                        Choice::Zipf => assert!(out.iter().all(|&k| k >= 1)),
                    }
                }
            }
        }
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let cdf = zipf_cdf();
        assert!((cdf[POOL - 1] - 1.0).abs() < 1e-9);
        let p = Point {
            cpus: 1,
            m: 1,
            n: 1,
            hold: Hold::None,
            choice: Choice::Zipf,
            shared: false,
        };
        let mut hits = [0u32; POOL + 1];
        let mut rng = 99;
        let mut out = Vec::new();
        for _ in 0..100_000 {
            plan(&p, &mut rng, &cdf, &mut out);
            hits[out[0]] += 1;
        }
        // Rank 1 has weight 1/H(64) ≈ 21 %; rank 64 about 0.3 %.
        assert!(hits[1] > 18_000 && hits[1] < 24_000, "{}", hits[1]);
        assert!(hits[1] > 20 * hits[POOL], "{} {}", hits[1], hits[POOL]);
    }

    #[test]
    fn shared_positions_spare_the_last_token() {
        let p = Point {
            cpus: 1,
            m: 1,
            n: 4,
            hold: Hold::None,
            choice: Choice::Hot,
            shared: true,
        };
        let s: Vec<bool> = (0..4).map(|i| is_shared(&p, i)).collect();
        assert_eq!(s, [false, true, false, false]);
        let q = Point { shared: false, ..p };
        assert!((0..4).all(|i| !is_shared(&q, i)));
    }

    #[test]
    fn cpu_counts_cover_one_cores_and_oversubscribed() {
        assert_eq!(cpu_counts(2), [1, 2, 4]);
        assert_eq!(cpu_counts(16), [1, 2, 4, 8, 16, 32]);
        assert_eq!(cpu_counts(1), [1, 4]);
    }

    #[test]
    fn fairness_is_max_over_min() {
        assert_eq!(fairness_of(&[2, 4, 8]), (4.0, 2, 8));
        assert!(fairness_of(&[0, 3]).0.is_infinite());
    }

    /// A run where a thread completed nothing still gives a finite
    /// fairness row (JSON has no infinity), flagged as a lower bound.
    #[test]
    fn a_starved_thread_gives_a_finite_fairness_lower_bound() {
        let p = Point {
            cpus: 2,
            m: 16,
            n: 4,
            hold: Hold::Yield,
            choice: Choice::Hot,
            shared: false,
        };
        let fair = |min_ops, max_ops| Figures {
            min_ops,
            max_ops,
            fairness: fairness_of(&[min_ops, max_ops]).0,
            ..Figures::default()
        };
        let starved = [fair(0, 50), fair(0, 70), fair(10, 20)];
        let even = [fair(5, 5), fair(5, 5), fair(5, 5)];
        let rows = headline_rows(&p, &starved, &even);
        let row = |imp: &str| {
            rows.iter()
                .find(|r| r.bench == "token_study_fairness" && r.imp == imp)
                .unwrap()
        };
        let s = row("seed");
        assert_eq!(s.value, 50.0, "median of 50, 70, 2");
        assert!(s
            .note
            .as_deref()
            .unwrap()
            .contains("in 2 of them a thread completed no operation"));
        let e = row("lwkt");
        assert_eq!(e.value, 1.0);
        assert!(!e.note.as_deref().unwrap().contains("no operation"));
    }

    /// A tiny real run of each policy: operations complete, the figures
    /// are finite, and the OS baselines report no token counters.
    #[test]
    fn every_policy_runs_a_tiny_point() {
        let clock = TickClock::calibrate(Duration::from_millis(5));
        let t = Timing {
            warmup: Duration::from_millis(5),
            window: Duration::from_millis(20),
        };
        let p = Point {
            cpus: 2,
            m: 2,
            n: 2,
            hold: Hold::Yield,
            choice: Choice::Hot,
            shared: true,
        };
        for pol in Policy::ALL {
            let f = run_point(&p, pol, t, clock).unwrap();
            assert!(f.ops > 0 && f.ops_per_s.is_finite(), "{pol:?}: {f:?}");
            assert!(f.min_ops <= f.max_ops);
            if matches!(pol, Policy::BigMutex | Policy::PerToken) {
                assert_eq!(f.wasted_per_op, 0.0);
            }
        }
    }
}
