//! `kv_service`: an application-shaped benchmark. A sharded in-memory
//! key-value store is served to many concurrent clients; the figures are
//! the requests completed per second and the request latency percentiles.
//!
//! # The workload (identical in every implementation)
//!
//! * The store: [`SHARDS`] shards, each a `HashMap<u64, u64>` (with a
//!   splitmix64 finaliser as its hash) behind one lock: an
//!   `lwkt::Token` for lwkt, a `std::sync::Mutex` for the peers. Each
//!   shard sits alone on its cache lines. Every one of the [`KEYS`] keys is
//!   present (value 0) before the clients start, so no request allocates;
//!   key `k` lives in shard `k % SHARDS`.
//! * A client is a thread (or task, or coroutine) that issues requests
//!   back to back (a closed loop). Each request draws a key uniformly from
//!   a per-client splitmix64 stream (started at a scrambled point derived
//!   from the client's number, so the run is deterministic per client),
//!   locks the key's shard, looks the value up, and stores the value plus
//!   one.
//! * One request in [`IO_EVERY`] (decided by the same random draw) waits
//!   [`IO_WAIT`] between the lookup and the update with the shard
//!   *logically* held, as if it wrote the value through to storage. In
//!   every implementation that wait has lwkt's token semantics: the shard
//!   is not locked while the client waits (an lwkt token is released while
//!   its holder sleeps and re-acquired before `sleep_for` returns; the
//!   peers drop their guard, wait, and lock again), so after the wait the
//!   client re-reads the value and applies its increment to what is there
//!   now. A value that changed during the wait counts as a *stale*
//!   re-check. After every point the values in the store must add up to
//!   the number of requests completed, or the run fails.
//! * Latency: from the request's issue to its completion. In a closed loop
//!   the next request is issued the moment the previous one completes, so
//!   one clock read per request marks both; the latencies of the requests
//!   completed inside the measurement window go into a log-linear
//!   histogram (16 sub-buckets per power of two, so a reported percentile
//!   is within about 3% of the exact one). Percentiles are nearest-rank.
//! * A point: spawn the clients (they start issuing at once, except OS
//!   threads, which wait until all are spawned so that they do not starve
//!   the spawning thread), let them run a warm-up, then count the requests
//!   that complete during the window ([`Plan`]); throughput is those
//!   requests over the window's wall time. The process CPU time used
//!   during the window, per request, is in the notes: it compares the
//!   implementations' efficiency even when other work shares the machine.
//!   Clients stop at the first completion after the window. Points run at
//!   1,000 and 10,000 clients ([`CLIENTS`]), each with a fresh store, in
//!   one child process per implementation.
//!
//! # The implementations
//!
//! * `lwkt`: `cpus(n)`, n = the available cores; one lwkt thread per
//!   client, spread round-robin over the CPUs (64 KiB stacks, the
//!   default); the wait is `td.sleep_for` holding the shard's token guard.
//! * `tokio`: multi-thread runtime with n workers; one task per client;
//!   the short sections under a `std::sync::Mutex` (tokio's advice for
//!   sections without `.await`); the wait is `tokio::time::sleep`, guard
//!   dropped first. tokio's timer wheel has 1 ms resolution, so that wait
//!   lasts about 1 ms, not 50 µs; the note gives the measured wait.
//! * `may`: n workers; one coroutine per client; `std::sync::Mutex` for
//!   the short sections (never held across a yield, so a contended lock
//!   blocks a worker only for another worker's short section); the wait is
//!   `may::coroutine::sleep`, guard dropped first.
//! * `std_thread`: one OS thread per client (64 KiB stacks, unpinned),
//!   `std::sync::Mutex`; the wait is `std::thread::sleep`, guard dropped
//!   first. 10,000 OS threads need about 20,000 memory mappings (stack and
//!   guard) and as many kernel tasks; a spawn that fails ends the run with
//!   the OS error rather than silently measuring fewer clients.
//!
//! One run of each implementation emits two rows ([`Sample::rows`]):
//! `kv_service` (req/s at 10,000 clients, higher is better) and
//! `kv_service_p99` (p99 latency in µs at 10,000 clients, lower is
//! better). The 1,000-client figures and the p50s are in the notes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{may_go, Bench, Better, Impl};
use crate::harness::{ncpus, process_cpu_time, Ctx, Measurement, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "kv_service",
    unit: "req/s",
    better: Better::Higher,
    about: "sharded KV store, closed-loop clients, 1 request in 16 waits 50 us with its \
            shard logically held; rows kv_service (req/s at 10,000 clients, higher is better) \
            and kv_service_p99 (p99 us at 10,000 clients, lower is better)",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "tokio",
            run: tokio,
        },
        Impl {
            name: "may",
            run: may,
        },
        Impl {
            name: "std_thread",
            run: std_thread,
        },
    ],
    // A full run of one implementation takes about 5 s on 2 cores (two
    // points of 0.5 s warm-up + 1.5 s window, plus spawning and joining
    // 10,000 clients); the limit leaves room for a loaded machine.
    timeout: Duration::from_secs(120),
    unranked: &[],
};

/// Shards in the store.
pub const SHARDS: usize = 64;
/// Keys in the store (a power of two).
pub const KEYS: u64 = 1 << 16;
/// One request in this many waits [`IO_WAIT`] with its shard logically
/// held.
pub const IO_EVERY: u64 = 16;
/// The simulated I/O.
pub const IO_WAIT: Duration = Duration::from_micros(50);
/// The client counts measured; the last is the one the JSON rows report.
pub const CLIENTS: [usize; 2] = [1_000, 10_000];
/// Stack of a client OS thread (`std_thread`); lwkt's default is the same.
const CLIENT_STACK: usize = 64 * 1024;

// -------------------------------------------------------------------
// The store
// -------------------------------------------------------------------

/// Hashes a `u64` key with the splitmix64 finaliser: every output bit
/// depends on every input bit, so keys that share their low bits (all
/// keys of one shard do) still spread over the table.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The splitmix64 output function.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One shard's data.
pub type Map = HashMap<u64, u64, BuildHasherDefault<KeyHasher>>;

/// A value alone on its cache lines (two, for the adjacent-line
/// prefetcher), so shards do not share lines.
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// The maps of a fresh store: every key present with value 0.
fn fresh_maps() -> Vec<Map> {
    let mut maps: Vec<Map> = (0..SHARDS)
        .map(|_| Map::with_capacity_and_hasher(KEYS as usize / SHARDS, Default::default()))
        .collect();
    for k in 0..KEYS {
        maps[shard_of(k)].insert(k, 0);
    }
    maps
}

/// The shard key `k` lives in.
#[inline]
fn shard_of(k: u64) -> usize {
    (k % SHARDS as u64) as usize
}

/// Checks that the store's values add up to the requests completed.
fn check_total(maps: impl IntoIterator<Item = Map>, requests: u64) -> Result<(), String> {
    let sum: u64 = maps.into_iter().flat_map(|m| m.into_values()).sum();
    if sum == requests {
        Ok(())
    } else {
        Err(format!(
            "lost or extra updates: the store's values add up to {sum}, clients completed \
             {requests} requests"
        ))
    }
}

/// One request as drawn by a client.
#[derive(Debug, Clone, Copy)]
struct Req {
    key: u64,
    /// Whether it waits [`IO_WAIT`] with the shard logically held.
    io: bool,
}

/// A client's request stream: splitmix64, started at a point of its
/// 2^64-long sequence derived from the client's number (a scrambled
/// start, so that two clients' streams are not one stream shifted by a
/// few steps).
struct Rng(u64);

impl Rng {
    fn new(client: usize) -> Rng {
        Rng(mix((client as u64).wrapping_add(0x6A09_E667_F3BC_C909)))
    }

    #[inline]
    fn draw(&mut self) -> Req {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let r = mix(self.0);
        Req {
            key: r & (KEYS - 1),
            // The top four bits are zero for 1 draw in 16.
            io: r >> (64 - IO_EVERY.trailing_zeros()) == 0,
        }
    }
}

/// The request on a `std::sync::Mutex` shard, for the OS-thread and
/// coroutine peers: lock, look up, update; an I/O request drops the guard
/// for the `wait`, locks again and applies its increment to the value
/// there now. Returns the wait's length (I/O requests) and whether the
/// value changed during it.
#[inline]
fn request_blocking(shard: &Mutex<Map>, req: Req, wait: impl FnOnce()) -> (Option<Duration>, bool) {
    let mut m = shard.lock().expect("shard poisoned");
    let v = *m.get(&req.key).expect("every key is present");
    if !req.io {
        *m.get_mut(&req.key).expect("every key is present") = v + 1;
        return (None, false);
    }
    drop(m);
    let t = Instant::now();
    wait();
    let waited = t.elapsed();
    let mut m = shard.lock().expect("shard poisoned");
    let cur = m.get_mut(&req.key).expect("every key is present");
    let stale = *cur != v;
    *cur += 1;
    (Some(waited), stale)
}

// -------------------------------------------------------------------
// Phases and per-client records
// -------------------------------------------------------------------

/// Warm-up: requests complete but are not counted.
const WARMUP: u32 = 0;
/// Requests that complete now are counted and their latency recorded.
const MEASURE: u32 = 1;
/// Clients leave at their next completion.
const STOP: u32 = 2;

/// Warm-up and window lengths of one point.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub warmup: Duration,
    pub window: Duration,
}

impl Plan {
    pub fn new(ctx: &Ctx) -> Plan {
        if ctx.quick {
            Plan {
                warmup: Duration::from_millis(100),
                window: Duration::from_millis(300),
            }
        } else {
            Plan {
                warmup: Duration::from_millis(500),
                window: Duration::from_millis(1500),
            }
        }
    }
}

/// The phase every client reads after each request, alone on its lines.
struct Phase(Padded<AtomicU32>);

impl Phase {
    fn new() -> Arc<Phase> {
        Arc::new(Phase(Padded(AtomicU32::new(WARMUP))))
    }

    #[inline]
    fn get(&self) -> u32 {
        self.0 .0.load(Ordering::Relaxed)
    }

    fn set(&self, p: u32) {
        self.0 .0.store(p, Ordering::Relaxed);
    }
}

/// What the controller saw of the window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Wall time from the store of [`MEASURE`] to the store of [`STOP`].
    wall: Duration,
    /// CPU time (user + system) the whole process used meanwhile.
    cpu: Duration,
}

/// Starts the OS thread that runs a point's schedule once every client
/// is spawned: warm-up, then the window.
fn start_controller(
    phase: Arc<Phase>,
    plan: Plan,
) -> Result<std::thread::JoinHandle<Window>, String> {
    std::thread::Builder::new()
        .name("kv-controller".into())
        .spawn(move || {
            std::thread::sleep(plan.warmup);
            let (t0, c0) = (Instant::now(), process_cpu_time());
            phase.set(MEASURE);
            std::thread::sleep(plan.window);
            phase.set(STOP);
            Window {
                wall: t0.elapsed(),
                cpu: process_cpu_time().saturating_sub(c0),
            }
        })
        .map_err(|e| format!("cannot start the controller thread: {e}"))
}

/// A point's schedule, started once its clients are spawned.
struct Schedule {
    controller: Option<std::thread::JoinHandle<Window>>,
    error: Option<String>,
}

impl Schedule {
    /// Starts the controller. When spawning the clients failed (`failed`
    /// says why) or the controller cannot start, the clients already
    /// running are told to stop at once, so that they can be joined.
    fn start(phase: &Arc<Phase>, plan: Plan, failed: Option<String>) -> Schedule {
        let started = match failed {
            None => start_controller(phase.clone(), plan),
            Some(e) => Err(e),
        };
        match started {
            Ok(h) => Schedule {
                controller: Some(h),
                error: None,
            },
            Err(e) => {
                phase.set(STOP);
                Schedule {
                    controller: None,
                    error: Some(e),
                }
            }
        }
    }

    /// The window, once the clients are joined; or why there was none.
    fn finish(self) -> Result<Window, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.controller
            .ok_or("no controller")?
            .join()
            .map_err(|_| "controller thread panicked".into())
    }
}

/// What one client did.
#[derive(Debug, Clone)]
struct Tally {
    /// Latencies (ns) of the requests completed inside the window.
    hist: Histogram,
    /// Requests completed at any time (the store check counts them all).
    requests: u64,
    /// Of the requests in the window: those that waited, their total wait,
    /// and those whose value changed during the wait.
    ios: u64,
    io_wait: Duration,
    stale: u64,
}

/// A client's clock and tally: call [`Recorder::complete`] after each
/// request.
struct Recorder {
    phase: Arc<Phase>,
    last: Instant,
    tally: Tally,
}

impl Recorder {
    fn new(phase: Arc<Phase>) -> Recorder {
        Recorder {
            phase,
            last: Instant::now(),
            tally: Tally {
                hist: Histogram::new(),
                requests: 0,
                ios: 0,
                io_wait: Duration::ZERO,
                stale: 0,
            },
        }
    }

    /// Records a completed request (its wait, if it waited, and whether
    /// the re-check found the value changed). The completion is the next
    /// request's issue. Returns false when the client should stop.
    #[inline]
    fn complete(&mut self, waited: Option<Duration>, stale: bool) -> bool {
        let now = Instant::now();
        let ns = now.duration_since(self.last).as_nanos() as u64;
        self.last = now;
        self.tally.requests += 1;
        match self.phase.get() {
            MEASURE => {
                self.tally.hist.record(ns);
                if let Some(w) = waited {
                    self.tally.ios += 1;
                    self.tally.io_wait += w;
                    self.tally.stale += u64::from(stale);
                }
                true
            }
            STOP => false,
            _ => true,
        }
    }
}

/// The figures of one point (one client count).
#[derive(Debug, Clone)]
struct Point {
    clients: usize,
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Requests counted in the window.
    measured: u64,
    /// Process CPU time per request in the window, in µs.
    cpu_us: f64,
    ios: u64,
    mean_wait_us: f64,
    stale: u64,
    /// Implementation-specific counters.
    extra: String,
}

impl Point {
    /// Sums the clients' tallies.
    fn from_tallies(
        clients: usize,
        tallies: &[Tally],
        window: Window,
        extra: String,
    ) -> Result<Point, String> {
        let mut hist = Histogram::new();
        let (mut ios, mut stale, mut wait) = (0u64, 0u64, Duration::ZERO);
        for t in tallies {
            hist.merge(&t.hist);
            ios += t.ios;
            stale += t.stale;
            wait += t.io_wait;
        }
        let measured = hist.count();
        if measured == 0 {
            return Err(format!(
                "{clients} clients: no request completed in the window"
            ));
        }
        let us = |q: f64| hist.percentile(q).unwrap_or(f64::NAN) / 1e3;
        Ok(Point {
            clients,
            rate: measured as f64 / window.wall.as_secs_f64(),
            cpu_us: window.cpu.as_secs_f64() * 1e6 / measured as f64,
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: us(1.0),
            measured,
            ios,
            mean_wait_us: if ios == 0 {
                0.0
            } else {
                wait.as_secs_f64() * 1e6 / ios as f64
            },
            stale,
            extra,
        })
    }

    /// One line for the notes.
    fn describe(&self) -> String {
        format!(
            "{} clients: {:.0} req/s, p50 {:.2} us, p99 {:.1} us, p99.9 {:.1} us, max {:.0} us \
             ({} requests in the window, {:.3} us of process CPU time per request, {} waited, \
             mean wait {:.1} us, {} stale re-checks{})",
            self.clients,
            self.rate,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.measured,
            self.cpu_us,
            self.ios,
            self.mean_wait_us,
            self.stale,
            self.extra,
        )
    }
}

/// The two rows of one implementation's run, from its points (the last is
/// the 10,000-client one) and a description of its setup.
fn rows(imp: &str, setup: &str, points: &[Point], plan: Plan) -> Result<Sample, String> {
    let last = points.last().ok_or("no points measured")?;
    let all: Vec<String> = points.iter().map(Point::describe).collect();
    let latencies: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{} clients: p50 {:.2} us, p99 {:.1} us, p99.9 {:.1} us, {:.0} req/s",
                p.clients, p.p50_us, p.p99_us, p.p999_us, p.rate
            )
        })
        .collect();
    Ok(Sample::rows(vec![
        Measurement {
            bench: "kv_service".into(),
            imp: imp.into(),
            value: last.rate,
            unit: "req/s".into(),
            note: Some(format!(
                "requests/s at {} clients; {setup}; {}; {SHARDS} shards, {KEYS} keys \
                 (uniform), 1 request in {IO_EVERY} waits {} us with the shard logically held \
                 (released during the wait, value re-checked after); warm-up {} ms, window {} ms \
                 per point",
                last.clients,
                all.join("; "),
                IO_WAIT.as_micros(),
                plan.warmup.as_millis(),
                plan.window.as_millis(),
            )),
            // Process CPU time per request at this point (all threads).
            cpu_ns: Some(last.cpu_us * 1e3),
            ..Measurement::default()
        },
        Measurement {
            bench: "kv_service_p99".into(),
            imp: imp.into(),
            value: last.p99_us,
            unit: "us".into(),
            note: Some(format!(
                "p99 request latency (issue to completion) at {} clients; {} (setup in the \
                 kv_service/{imp} note)",
                last.clients,
                latencies.join("; "),
            )),
            ..Measurement::default()
        },
    ]))
}

// -------------------------------------------------------------------
// Latency histogram
// -------------------------------------------------------------------

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values are clamped below `2^MAX_BITS` ns (about 18 minutes).
const MAX_BITS: u32 = 40;
const BUCKETS: usize = (MAX_BITS - SUB_BITS + 1) as usize * SUB;

/// A log-linear histogram of nanosecond values: exact below `2 * SUB`,
/// then [`SUB`] equal buckets per power of two, so a bucket is at most
/// 1/16 of its lower bound wide.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
        }
    }

    /// The bucket of `v`.
    #[inline]
    fn index(v: u64) -> usize {
        let v = v.min((1 << MAX_BITS) - 1);
        if v < SUB as u64 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // at least SUB_BITS
        let group = (e - SUB_BITS + 1) as usize;
        group * SUB + ((v >> (e - SUB_BITS)) as usize - SUB)
    }

    /// The smallest value of bucket `i`, and the bucket's width.
    fn bounds(i: usize) -> (u64, u64) {
        let (group, sub) = (i / SUB, (i % SUB) as u64);
        if group == 0 {
            (sub, 1)
        } else {
            let shift = group as u32 - 1;
            ((SUB as u64 + sub) << shift, 1 << shift)
        }
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        let c = &mut self.counts[Self::index(ns)];
        *c = c.saturating_add(1);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The nearest-rank `q`-quantile (`0 < q <= 1`): the smallest recorded
    /// value with at least `q` of the values at or below it, given as the
    /// middle of its bucket. `None` when nothing was recorded.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let (lo, width) = Self::bounds(i);
                return Some(lo as f64 + (width - 1) as f64 / 2.0);
            }
        }
        unreachable!("the rank is at most the count")
    }
}

// -------------------------------------------------------------------
// lwkt
// -------------------------------------------------------------------

fn lwkt(ctx: &Ctx) -> RunResult {
    let n = ncpus();
    let plan = Plan::new(ctx);
    let rt = lwkt::Runtime::builder()
        .cpus(n)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let mut points = Vec::new();
    for clients in CLIENTS {
        let before = rt.stats().total;
        let (tallies, window) = rt.block_on(move |td| lwkt_point(td, n, clients, plan))?;
        let after = rt.stats().total;
        let requests: u64 = tallies.iter().map(|t| t.requests).sum();
        let per = |a: u64, b: u64| (a - b) as f64 / requests.max(1) as f64;
        let extra = format!(
            "; per request over the whole point: {:.3} switches, {:.4} token_blocks, \
             {:.4} token_failures, {:.3} wakeups, {:.4} CPU parks",
            per(after.switches, before.switches),
            per(after.token_blocks, before.token_blocks),
            per(after.token_failures, before.token_failures),
            per(after.wakeups, before.wakeups),
            per(after.parks, before.parks),
        );
        points.push(Point::from_tallies(clients, &tallies, window, extra)?);
    }
    rows(
        "lwkt",
        &format!(
            "lwkt, cpus({n}); one lwkt thread per client (64 KiB stacks), round-robin over \
             the cpus; one lwkt::Token<HashMap> per shard; the wait is td.sleep_for holding the \
             guard (the token is released while asleep, re-acquired before it returns)"
        ),
        &points,
        plan,
    )
}

/// One point on the lwkt runtime; runs in `block_on`.
fn lwkt_point(
    td: &mut lwkt::CurThread,
    cpus: usize,
    clients: usize,
    plan: Plan,
) -> Result<(Vec<Tally>, Window), String> {
    let store: Arc<Vec<Padded<lwkt::Token<Map>>>> = Arc::new(
        fresh_maps()
            .into_iter()
            .map(|m| Padded(lwkt::Token::new("kv-shard", m)))
            .collect(),
    );
    let phase = Phase::new();
    let mut handles = Vec::with_capacity(clients);
    let mut failed = None;
    for c in 0..clients {
        let (store, phase) = (store.clone(), phase.clone());
        let spawned = lwkt::ThreadBuilder::new()
            .name("kv-client")
            .cpu(c % cpus)
            .spawn(td, move |td| {
                let mut rng = Rng::new(c);
                let mut rec = Recorder::new(phase);
                loop {
                    let req = rng.draw();
                    let shard = &store[shard_of(req.key)].0;
                    let g = td.get_token(shard);
                    let v = *g.get(td).get(&req.key).expect("every key is present");
                    let (waited, stale) = if req.io {
                        let t = Instant::now();
                        // The token is released while the thread sleeps and
                        // held again when sleep_for returns.
                        let _ = td.sleep_for(IO_WAIT);
                        let waited = t.elapsed();
                        let cur = g.get(td).get_mut(&req.key).expect("every key is present");
                        let stale = *cur != v;
                        *cur += 1;
                        (Some(waited), stale)
                    } else {
                        *g.get(td).get_mut(&req.key).expect("every key is present") = v + 1;
                        (None, false)
                    };
                    drop(g);
                    if !rec.complete(waited, stale) {
                        break;
                    }
                }
                rec.tally
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                failed = Some(format!("spawning lwkt client {c} of {clients}: {e}"));
                break;
            }
        }
    }
    let schedule = Schedule::start(&phase, plan, failed);
    let mut tallies = Vec::with_capacity(handles.len());
    for h in handles {
        tallies.push(h.join(td).map_err(|_| "an lwkt client panicked")?);
    }
    let window = schedule.finish()?;
    let store = Arc::try_unwrap(store).map_err(|_| "store still shared")?;
    check_total(
        store.into_iter().map(|p| p.0.into_inner()),
        tallies.iter().map(|t| t.requests).sum(),
    )?;
    Ok((tallies, window))
}

// -------------------------------------------------------------------
// Peers: std::sync::Mutex shards
// -------------------------------------------------------------------

type MutexStore = Arc<Vec<Padded<Mutex<Map>>>>;

fn mutex_store() -> MutexStore {
    Arc::new(
        fresh_maps()
            .into_iter()
            .map(|m| Padded(Mutex::new(m)))
            .collect(),
    )
}

/// Ends a point of a mutex-store impl (tokio, may, std_thread): closes
/// its window, checks the store against the clients' counts, and makes
/// the point.
fn mutex_point(
    clients: usize,
    schedule: Schedule,
    store: MutexStore,
    tallies: &[Tally],
) -> Result<Point, String> {
    let window = schedule.finish()?;
    check_mutex_store(store, tallies)?;
    Point::from_tallies(clients, tallies, window, String::new())
}

/// Checks a mutex store after a point.
fn check_mutex_store(store: MutexStore, tallies: &[Tally]) -> Result<(), String> {
    let store = Arc::try_unwrap(store).map_err(|_| "store still shared")?;
    check_total(
        store
            .into_iter()
            .map(|p| p.0.into_inner().expect("shard poisoned")),
        tallies.iter().map(|t| t.requests).sum(),
    )
}

/// A blocking client's loop (OS thread or may coroutine): `wait` is the
/// simulated I/O.
fn blocking_client(store: &MutexStore, phase: Arc<Phase>, client: usize, wait: fn()) -> Tally {
    let mut rng = Rng::new(client);
    let mut rec = Recorder::new(phase);
    loop {
        let req = rng.draw();
        let (waited, stale) = request_blocking(&store[shard_of(req.key)].0, req, wait);
        if !rec.complete(waited, stale) {
            break;
        }
    }
    rec.tally
}

fn tokio(ctx: &Ctx) -> RunResult {
    let n = ncpus();
    let plan = Plan::new(ctx);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut points = Vec::new();
    for clients in CLIENTS {
        let store = mutex_store();
        let phase = Phase::new();
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (store, phase) = (store.clone(), phase.clone());
                rt.spawn(async move {
                    let mut rng = Rng::new(c);
                    let mut rec = Recorder::new(phase);
                    loop {
                        let req = rng.draw();
                        let shard = &store[shard_of(req.key)].0;
                        let v = {
                            let mut m = shard.lock().expect("shard poisoned");
                            let v = *m.get(&req.key).expect("every key is present");
                            if !req.io {
                                *m.get_mut(&req.key).expect("every key is present") = v + 1;
                            }
                            v
                        };
                        let (waited, stale) = if req.io {
                            // The guard is dropped: a std guard cannot be
                            // held across an await.
                            let t = Instant::now();
                            tokio::time::sleep(IO_WAIT).await;
                            let waited = t.elapsed();
                            let mut m = shard.lock().expect("shard poisoned");
                            let cur = m.get_mut(&req.key).expect("every key is present");
                            let stale = *cur != v;
                            *cur += 1;
                            (Some(waited), stale)
                        } else {
                            (None, false)
                        };
                        if !rec.complete(waited, stale) {
                            break;
                        }
                    }
                    rec.tally
                })
            })
            .collect();
        let schedule = Schedule::start(&phase, plan, None);
        let tallies = rt.block_on(async {
            let mut tallies = Vec::with_capacity(clients);
            for h in handles {
                tallies.push(h.await.map_err(|e| format!("client task: {e}"))?);
            }
            Ok::<_, String>(tallies)
        })?;
        points.push(mutex_point(clients, schedule, store, &tallies)?);
    }
    rows(
        "tokio",
        &format!(
            "tokio multi_thread runtime, {n} workers; one task per client; one \
             std::sync::Mutex<HashMap> per shard, locked only for the short sections; the wait \
             is tokio::time::sleep with the guard dropped (tokio's timer resolution is 1 ms, so \
             the wait lasts about 1 ms: see mean wait)"
        ),
        &points,
        plan,
    )
}

fn may(ctx: &Ctx) -> RunResult {
    let n = ncpus();
    let plan = Plan::new(ctx);
    may::config().set_workers(n);
    let mut points = Vec::new();
    for clients in CLIENTS {
        let store = mutex_store();
        let phase = Phase::new();
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (store, phase) = (store.clone(), phase.clone());
                // The client touches no thread-local storage (a custom
                // hasher, std Mutex, Instant) and needs little stack.
                may_go(move || blocking_client(&store, phase, c, || may::coroutine::sleep(IO_WAIT)))
            })
            .collect();
        let schedule = Schedule::start(&phase, plan, None);
        let mut tallies = Vec::with_capacity(clients);
        for h in handles {
            tallies.push(h.join().map_err(|_| "a may client panicked")?);
        }
        points.push(mutex_point(clients, schedule, store, &tallies)?);
    }
    rows(
        "may",
        &format!(
            "may, {n} workers; one coroutine per client ({}); one std::sync::Mutex<HashMap> per \
             shard, locked only for the short sections; the wait is may::coroutine::sleep with \
             the guard dropped",
            super::may_stack_note()
        ),
        &points,
        plan,
    )
}

/// Holds OS-thread clients until every one is spawned: a running client
/// would otherwise compete with the spawning thread for the CPUs, and
/// starting 10,000 threads would take most of a minute.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().expect("gate poisoned");
        while !*open {
            open = self.cv.wait(open).expect("gate poisoned");
        }
    }

    fn open(&self) {
        *self.open.lock().expect("gate poisoned") = true;
        self.cv.notify_all();
    }
}

fn std_thread(ctx: &Ctx) -> RunResult {
    let n = ncpus();
    let plan = Plan::new(ctx);
    let mut points = Vec::new();
    for clients in CLIENTS {
        let store = mutex_store();
        let phase = Phase::new();
        let gate = Arc::new(Gate::default());
        let mut handles = Vec::with_capacity(clients);
        let mut failed = None;
        for c in 0..clients {
            let (store, phase, gate) = (store.clone(), phase.clone(), gate.clone());
            let spawned = std::thread::Builder::new()
                .name("kv-client".into())
                .stack_size(CLIENT_STACK)
                .spawn(move || {
                    gate.wait();
                    blocking_client(&store, phase, c, || std::thread::sleep(IO_WAIT))
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed = Some(format!(
                        "spawning OS thread {c} of {clients}: {e} (vm.max_map_count {:?}, \
                         mappings in use {:?})",
                        crate::harness::max_map_count(),
                        crate::harness::map_count()
                    ));
                    break;
                }
            }
        }
        let schedule = Schedule::start(&phase, plan, failed);
        gate.open();
        let mut tallies = Vec::with_capacity(clients);
        for h in handles {
            tallies.push(h.join().map_err(|_| "a client thread panicked")?);
        }
        points.push(mutex_point(clients, schedule, store, &tallies)?);
    }
    rows(
        "std_thread",
        &format!(
            "one OS thread per client ({} KiB stacks, unpinned, {n} cores); one \
             std::sync::Mutex<HashMap> per shard, locked only for the short sections; the wait \
             is std::thread::sleep with the guard dropped",
            CLIENT_STACK / 1024
        ),
        &points,
        plan,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact nearest-rank quantile of `xs`.
    fn exact(xs: &mut [u64], q: f64) -> u64 {
        xs.sort_unstable();
        let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
        xs[rank - 1]
    }

    #[test]
    fn buckets_cover_every_value_once() {
        let mut last = None;
        for i in 0..BUCKETS {
            let (lo, width) = Histogram::bounds(i);
            assert!(width >= 1);
            if let Some((plo, pw)) = last {
                assert_eq!(plo + pw, lo, "bucket {i} does not follow bucket {}", i - 1);
            }
            assert_eq!(Histogram::index(lo), i, "lower bound of bucket {i}");
            assert_eq!(
                Histogram::index(lo + width - 1),
                i,
                "upper end of bucket {i}"
            );
            if lo >= 2 * SUB as u64 {
                assert!(width * SUB as u64 <= lo, "bucket {i} is too wide");
            }
            last = Some((lo, width));
        }
        // Values past the range land in the last bucket.
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_match_the_exact_ones() {
        // A latency-like mix: most values small, a tail up to seconds.
        let mut xs = Vec::new();
        let mut h = Histogram::new();
        for i in 0..100_000u64 {
            let r = mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 7);
            let v = match r % 100 {
                0..=89 => 50 + r % 400,
                90..=98 => 40_000 + r % 200_000,
                _ => 1_000_000 + r % 2_000_000_000,
            };
            xs.push(v);
            h.record(v);
        }
        assert_eq!(h.count(), xs.len() as u64);
        for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&mut xs, q) as f64;
            let got = h.percentile(q).unwrap();
            assert!(
                (got - want).abs() <= want / 32.0 + 0.5,
                "q {q}: histogram says {got}, exact {want}"
            );
        }
        // Small values are exact.
        let mut small = Histogram::new();
        for v in [3, 1, 2, 9, 30] {
            small.record(v);
        }
        assert_eq!(small.percentile(0.5), Some(3.0));
        assert_eq!(small.percentile(0.2), Some(1.0));
        assert_eq!(small.percentile(1.0), Some(30.0));
        assert_eq!(Histogram::new().percentile(0.5), None);
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for v in 0..1000 {
            a.record(v);
            b.record(v + 1000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 2000);
        let p50 = a.percentile(0.5).unwrap();
        assert!((p50 - 1000.0).abs() <= 1000.0 / 32.0, "{p50}");
    }

    #[test]
    fn request_stream_is_uniform_and_waits_one_in_sixteen() {
        let mut rng = Rng::new(0);
        let n = 160_000;
        let mut shards = vec![0u32; SHARDS];
        let mut ios = 0;
        for _ in 0..n {
            let r = rng.draw();
            assert!(r.key < KEYS);
            shards[shard_of(r.key)] += 1;
            ios += u32::from(r.io);
        }
        let per = n / SHARDS as u32;
        assert!(shards
            .iter()
            .all(|&s| s > per * 9 / 10 && s < per * 11 / 10));
        let want = n / IO_EVERY as u32;
        assert!(ios > want * 9 / 10 && ios < want * 11 / 10, "{ios} waits");
        // The same client gets the same stream; neighbouring clients' streams
        // are not one stream shifted by a few steps.
        assert_eq!(Rng::new(5).draw().key, Rng::new(5).draw().key);
        let keys = |c: usize| -> Vec<u64> {
            let mut r = Rng::new(c);
            (0..64).map(|_| r.draw().key).collect()
        };
        let (a, b) = (keys(1), keys(2));
        for shift in 0..32 {
            let same = (0..32).filter(|&i| a[i + shift] == b[i]).count();
            assert!(same < 4, "client 2 follows client 1 shifted by {shift}");
            let same = (0..32).filter(|&i| b[i + shift] == a[i]).count();
            assert!(same < 4, "client 1 follows client 2 shifted by {shift}");
        }
    }

    #[test]
    fn blocking_request_rechecks_after_the_wait() {
        let store = mutex_store();
        let shard = &store[shard_of(3)].0;
        let req = Req { key: 3, io: true };
        // Another client's update lands during the wait.
        let (waited, stale) = request_blocking(shard, req, || {
            *shard.lock().unwrap().get_mut(&3).unwrap() += 5;
        });
        assert!(waited.is_some() && stale);
        assert_eq!(shard.lock().unwrap()[&3], 6);
        let (waited, stale) =
            request_blocking(shard, Req { key: 3, io: false }, || unreachable!("no wait"));
        assert!(waited.is_none() && !stale);
        assert_eq!(shard.lock().unwrap()[&3], 7);
        let maps: Vec<Map> = Arc::try_unwrap(store)
            .ok()
            .unwrap()
            .into_iter()
            .map(|p| p.0.into_inner().unwrap())
            .collect();
        assert!(check_total(maps.clone(), 7).is_ok());
        assert!(check_total(maps, 8).unwrap_err().contains("add up to 7"));
    }
}
