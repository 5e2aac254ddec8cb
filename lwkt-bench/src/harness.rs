//! Measurement plumbing shared by every benchmark: the result record, the
//! timing loop (calibrate, warm up, repeat, take the median), and the small
//! OS probes (RSS, process CPU time, CPU pinning, kernel limits).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One figure: what `--json` prints, one per (bench, impl).
///
/// `value` is the figure itself (for a timing benchmark, the median over
/// its repetitions). `min`, `median` and `max` give the spread over those
/// repetitions, in the same unit as `value`; benchmarks whose figure is
/// not a set of repetitions (one RSS reading, one observation window)
/// leave them out. `cpu_ns` is the CPU time the whole process (every
/// thread, user + system) consumed per operation, in nanoseconds; for a
/// time unit that is per the row's own operation, for a rate (`ops/s`) it
/// is per operation counted, and the row's note says so.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurement {
    /// The benchmark's name (for a multi-row benchmark, the row's own).
    pub bench: String,
    /// The implementation's name.
    #[serde(rename = "impl")]
    pub imp: String,
    /// The figure, in `unit`.
    pub value: f64,
    /// Fewest `unit` over the repetitions; absent when not repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Median over the repetitions (equal to `value` where `value` is a
    /// median); absent when not repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    /// Most `unit` over the repetitions; absent when not repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Process CPU nanoseconds (all threads, user + system) per operation
    /// of the row; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<f64>,
    /// The unit of `value`, `min`, `median` and `max`.
    pub unit: String,
    /// Extra context (limits met, configuration used); absent when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Measurement {
    /// Sets `value` to the spread's median and records its minimum,
    /// median and maximum.
    #[must_use]
    pub fn with_spread(mut self, s: Spread) -> Self {
        self.value = s.median;
        self.min = Some(s.min);
        self.median = Some(s.median);
        self.max = Some(s.max);
        self
    }
}

/// The spread of one figure over its timed repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The smallest repetition's figure.
    pub min: f64,
    /// The median repetition's figure (the mean of the two middle ones
    /// for an even count).
    pub median: f64,
    /// The largest repetition's figure.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs` (which it sorts). Panics when `xs` is empty.
    pub fn of(xs: &mut [f64]) -> Spread {
        let median = median(xs);
        Spread {
            min: xs[0],
            median,
            max: xs[xs.len() - 1],
        }
    }

    /// Every figure multiplied by `k` (> 0), e.g. to turn a per-round-trip
    /// spread into a per-half one.
    #[must_use]
    pub fn scaled(self, k: f64) -> Spread {
        Spread {
            min: self.min * k,
            median: self.median * k,
            max: self.max * k,
        }
    }
}

/// What an implementation's run function hands back: usually one figure
/// for its (bench, impl) row; a multi-row benchmark (`scaling`) hands back
/// several rows instead, built with [`Sample::rows`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// The figure.
    pub value: f64,
    /// Extra context for the row.
    pub note: Option<String>,
    /// The spread over the repetitions, when the figure is their median.
    pub spread: Option<Spread>,
    /// Process CPU nanoseconds per operation, when measured.
    pub cpu_ns: Option<f64>,
    /// When set, the rows this run produced, each naming its own bench,
    /// impl and unit; they replace the single (bench, impl, `value`) row,
    /// and the other fields are unused.
    pub rows: Option<Vec<Measurement>>,
}

impl Sample {
    /// A figure with a note and no spread (a single observation).
    pub fn with_note(value: f64, note: impl Into<String>) -> Self {
        Sample {
            value,
            note: Some(note.into()),
            spread: None,
            cpu_ns: None,
            rows: None,
        }
    }

    /// A figure that is the median of repetitions: `value` is the
    /// spread's median, and the row reports its min, median and max.
    pub fn with_spread(spread: Spread, note: impl Into<String>) -> Self {
        Sample {
            spread: Some(spread),
            ..Sample::with_note(spread.median, note)
        }
    }

    /// Adds the process CPU time per operation, in nanoseconds.
    #[must_use]
    pub fn cpu_ns(mut self, cpu_ns: f64) -> Self {
        self.cpu_ns = Some(cpu_ns);
        self
    }

    /// A run that measured several things, each its own row.
    pub fn rows(rows: Vec<Measurement>) -> Self {
        Sample {
            value: f64::NAN,
            note: None,
            spread: None,
            cpu_ns: None,
            rows: Some(rows),
        }
    }

    /// The rows to report: [`Sample::rows`] as given, or the one row
    /// `bench`/`imp` with `unit`.
    pub fn into_rows(self, bench: &str, imp: &str, unit: &str) -> Vec<Measurement> {
        self.rows.unwrap_or_else(|| {
            let m = Measurement {
                bench: bench.into(),
                imp: imp.into(),
                value: self.value,
                min: self.spread.map(|s| s.min),
                median: self.spread.map(|s| s.median),
                max: self.spread.map(|s| s.max),
                cpu_ns: self.cpu_ns,
                unit: unit.into(),
                note: self.note,
            };
            vec![m]
        })
    }
}

pub type RunResult = Result<Sample, String>;

/// Knobs every run function receives.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Shorter repetitions and smaller caps (for smoke tests).
    pub quick: bool,
}

impl Ctx {
    /// Wall time one timed repetition should take.
    pub fn target(&self) -> Duration {
        if self.quick {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(150)
        }
    }

    /// Timed repetitions whose median is reported.
    pub fn reps(&self) -> usize {
        if self.quick {
            3
        } else {
            7
        }
    }

    /// Length of the idle-CPU observation window.
    pub fn idle_window(&self) -> Duration {
        if self.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(1)
        }
    }
}

/// Times `run(n)` (which performs `n` operations and returns the wall time
/// they took) and returns the median nanoseconds per operation.
///
/// `n` is first calibrated upwards until one call lasts about
/// [`Ctx::target`]; the calibration calls double as warm-up. Then
/// [`Ctx::reps`] timed calls are made at that `n`.
pub fn ns_per_op(ctx: &Ctx, run: impl FnMut(u64) -> Duration) -> f64 {
    ns_per_op_spread(ctx, run).median
}

/// As [`ns_per_op`], but returns the fastest, median and slowest
/// repetition's nanoseconds per operation.
pub fn ns_per_op_spread(ctx: &Ctx, run: impl FnMut(u64) -> Duration) -> Spread {
    let (n, walls) = repeat_calibrated(ctx, run, |d| *d);
    let mut per_op: Vec<f64> = walls
        .iter()
        .map(|d| d.as_nanos() as f64 / n as f64)
        .collect();
    Spread::of(&mut per_op)
}

/// What one call of a [`time_per_op`] closure measured over its timed
/// region: the wall time and the process CPU time (every thread, user +
/// system) that passed in it. Take it with a [`Stopwatch`].
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wall time of the timed region.
    pub wall: Duration,
    /// Process CPU time consumed during the timed region.
    pub cpu: Duration,
}

/// Reads the wall clock and the process CPU clock together, so a timed
/// region can report both (see [`Timing`]). Any thread of the process may
/// start and stop it: the CPU clock is the whole process's.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    /// Starts timing now.
    pub fn start() -> Stopwatch {
        let cpu = process_cpu_time();
        Stopwatch {
            wall: Instant::now(),
            cpu,
        }
    }

    /// Wall and process CPU time since [`Stopwatch::start`].
    pub fn stop(&self) -> Timing {
        let wall = self.wall.elapsed();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        Timing { wall, cpu }
    }
}

/// Wall and CPU cost per operation from [`time_per_op`].
#[derive(Debug, Clone, Copy)]
pub struct PerOp {
    /// Wall nanoseconds per operation over the timed repetitions.
    pub wall: Spread,
    /// Process CPU nanoseconds per operation over the same repetitions.
    pub cpu: Spread,
}

/// As [`ns_per_op_spread`] for a closure that reports CPU time too: the
/// wall figures' spread and the process CPU nanoseconds per operation of
/// each timed repetition.
pub fn time_per_op(ctx: &Ctx, run: impl FnMut(u64) -> Timing) -> PerOp {
    let (n, timings) = repeat_calibrated(ctx, run, |t| t.wall);
    let per = |f: fn(&Timing) -> Duration| {
        let mut v: Vec<f64> = timings
            .iter()
            .map(|t| f(t).as_nanos() as f64 / n as f64)
            .collect();
        Spread::of(&mut v)
    };
    PerOp {
        wall: per(|t| t.wall),
        cpu: per(|t| t.cpu),
    }
}

/// The calibration and repetition loop behind [`ns_per_op`] and
/// [`time_per_op`]: grows `n` until one call of `run(n)` lasts about
/// [`Ctx::target`] of wall time (`wall` reads it off the call's result),
/// makes one untimed warm-up call at that `n`, then [`Ctx::reps`] timed
/// ones. Returns `n` and the timed calls' results.
fn repeat_calibrated<T>(
    ctx: &Ctx,
    mut run: impl FnMut(u64) -> T,
    wall: impl Fn(&T) -> Duration,
) -> (u64, Vec<T>) {
    let target = ctx.target().as_secs_f64();
    let mut n: u64 = 8;
    loop {
        let d = wall(&run(n)).as_secs_f64();
        if d >= target / 2.0 || n >= 1 << 36 {
            n = ((n as f64) * (target / d.max(1e-9))).clamp(1.0, (1u64 << 36) as f64) as u64;
            break;
        }
        let grow = if d <= 0.0 {
            16.0
        } else {
            (target / d).min(16.0)
        };
        n = ((n as f64) * grow.max(2.0)) as u64;
    }
    // One untimed warm-up at the final size, then the timed repetitions.
    run(n);
    let reps = (0..ctx.reps()).map(|_| run(n)).collect();
    (n, reps)
}

/// The median of `xs` (which it sorts): the middle element, or the mean of
/// the two middle ones for an even count. Panics when `xs` is empty.
pub fn median(xs: &mut [f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as u64
    } else {
        4096
    }
}

/// Resident set size of this process in KiB (second field of
/// `/proc/self/statm`).
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size() / 1024
}

/// `MemAvailable` from `/proc/meminfo`, in KiB.
pub fn mem_available_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `vm.max_map_count`: each mmap'd stack (plus its guard page) uses
/// mappings from this budget.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Number of memory mappings this process holds now.
pub fn map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .map(|s| s.lines().count())
}

/// User + system CPU time consumed by every thread of this process.
pub fn process_cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value for this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Pins the calling OS thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is bounds-checked by the
    // libc macro implementation (it ignores out-of-range CPUs).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` outlives the call and
    // the size passed is its real size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// The CPU numbers the calling thread may run on (its affinity mask), in
/// increasing order; `0..ncpus()` when the mask cannot be read. Call it
/// before pinning anything: threads inherit their creator's mask, and the
/// pinned benchmarks pin their k-th OS thread to the k-th CPU of this list
/// so that they work inside a restricted mask (a container's cpuset).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 means the calling thread; `set` is writable and the
    // size passed is its real size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let cpus: Vec<usize> = if rc == 0 {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `set` is a valid cpu_set_t and `c` is below
            // CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        (0..ncpus()).collect()
    } else {
        cpus
    }
}

/// CPUs this process may run on.
pub fn ncpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kernel thread id of the calling thread (a syscall; no thread-local
/// storage, so it is safe to call from a `may` coroutine).
pub fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// Busy-free wait until `cond` holds, polling every millisecond, for use on
/// plain OS threads. Gives up after `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return Err(format!("condition not met within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// A cheap timestamp for measuring intervals shorter than a clock read
/// through `Instant` resolves well: the TSC (`lfence; rdtsc`) on x86_64,
/// calibrated against `Instant`; elsewhere nanoseconds from `Instant`.
///
/// Both ends of an interval must be read on the same OS thread (or on a
/// machine whose TSCs are synchronised, which `constant_tsc` + `nonstop_tsc`
/// hosts are).
#[derive(Debug, Clone, Copy)]
pub struct TickClock {
    ns_per_tick: f64,
    #[cfg(not(target_arch = "x86_64"))]
    base: Instant,
}

impl TickClock {
    /// Calibrates the clock over `window` (the calling OS thread sleeps).
    pub fn calibrate(window: Duration) -> TickClock {
        #[cfg(target_arch = "x86_64")]
        {
            let probe = TickClock { ns_per_tick: 1.0 };
            let (i0, t0) = (Instant::now(), probe.now());
            std::thread::sleep(window);
            let (t1, i1) = (probe.now(), Instant::now());
            let ticks = t1.wrapping_sub(t0);
            let ns = (i1 - i0).as_nanos() as f64;
            TickClock {
                ns_per_tick: if ticks > 0 { ns / ticks as f64 } else { 1.0 },
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = window;
            TickClock {
                ns_per_tick: 1.0,
                base: Instant::now(),
            }
        }
    }

    /// The current time in ticks.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // lfence: the read waits for every earlier instruction to
            // complete, so it cannot be taken before the code it follows.
            // SAFETY: `lfence` needs SSE2, which every x86_64 CPU has;
            // `rdtsc` has no preconditions (it only reads the counter).
            unsafe {
                std::arch::x86_64::_mm_lfence();
                std::arch::x86_64::_rdtsc()
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.base.elapsed().as_nanos() as u64
        }
    }

    /// Converts a tick count to nanoseconds.
    pub fn ns(&self, ticks: u64) -> f64 {
        ticks as f64 * self.ns_per_tick
    }

    /// Ticks per microsecond (the TSC rate in MHz on x86_64).
    pub fn mhz(&self) -> f64 {
        1000.0 / self.ns_per_tick
    }

    /// Mean cost of one reading, in ns: what back-to-back reads measure
    /// for an empty interval.
    pub fn overhead_ns(&self) -> f64 {
        const N: u64 = 100_000;
        let first = self.now();
        let mut last = first;
        for _ in 0..N {
            last = std::hint::black_box(self.now());
        }
        self.ns(last.wrapping_sub(first)) / N as f64
    }

    /// What the clock is, for notes.
    pub fn describe(&self) -> String {
        if cfg!(target_arch = "x86_64") {
            format!("lfence+rdtsc at {:.0} MHz", self.mhz())
        } else {
            "Instant".into()
        }
    }
}

/// Formats a "same OS thread" fraction for the cross-CPU notes.
pub fn same_thread_note(same: usize, total: usize) -> String {
    if total == 0 {
        return "placement not sampled".into();
    }
    format!(
        "both sides ran on the same OS thread in {:.0}% of sampled round trips",
        100.0 * same as f64 / total as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn ns_per_op_calibrates() {
        let ctx = Ctx { quick: true };
        let mut calls = Vec::new();
        // A fake operation that "takes" 1 µs.
        let ns = ns_per_op(&ctx, |n| {
            calls.push(n);
            Duration::from_micros(n)
        });
        assert!((ns - 1000.0).abs() < 1e-6, "{ns}");
        let last = *calls.last().unwrap();
        assert_eq!(last, 20_000, "one rep should last ~20 ms");
        assert!(calls.len() > ctx.reps());
    }

    #[test]
    fn ns_per_op_spread_orders_the_repetitions() {
        let ctx = Ctx { quick: true };
        // Each call is slower per op than the one before, so the timed
        // repetitions differ and the spread is strict.
        let mut calls = 0u32;
        let s = ns_per_op_spread(&ctx, |n| {
            calls += 1;
            Duration::from_nanos(n * (1000 + u64::from(calls)))
        });
        assert!(s.min < s.median && s.median < s.max, "{s:?}");
        // The last `reps` calls are the timed ones.
        let last = f64::from(calls);
        assert_eq!(s.max, 1000.0 + last);
        assert_eq!(s.min, 1000.0 + last - (ctx.reps() as f64 - 1.0));
        assert_eq!(ns_per_op(&ctx, |n| Duration::from_nanos(n * 7)), 7.0);
    }

    #[test]
    fn spread_of_and_scaled() {
        let s = Spread::of(&mut [5.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 5.0));
        let h = s.scaled(0.5);
        assert_eq!((h.min, h.median, h.max), (0.5, 1.25, 2.5));
    }

    #[test]
    fn time_per_op_reports_wall_and_cpu() {
        let ctx = Ctx { quick: true };
        let p = time_per_op(&ctx, |n| Timing {
            wall: Duration::from_nanos(n * 100),
            cpu: Duration::from_nanos(n * 250),
        });
        assert_eq!(
            (p.wall.min, p.wall.median, p.wall.max),
            (100.0, 100.0, 100.0)
        );
        assert_eq!(p.cpu.median, 250.0);
    }

    #[test]
    fn stopwatch_sees_cpu_time() {
        let w = Stopwatch::start();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let t = w.stop();
        assert!(t.wall >= Duration::from_millis(30), "{t:?}");
        // getrusage counts in microseconds at least; a 30 ms busy loop
        // shows up (generously bounded: the thread may be descheduled).
        assert!(t.cpu >= Duration::from_millis(1), "{t:?}");
    }

    #[test]
    fn samples_carry_spread_and_cpu_into_json() {
        let s = Spread {
            min: 1.0,
            median: 2.0,
            max: 4.0,
        };
        let rows = Sample::with_spread(s, "n")
            .cpu_ns(9.5)
            .into_rows("b", "i", "ns/op");
        let m = &rows[0];
        assert_eq!(m.value, 2.0);
        assert_eq!((m.min, m.median, m.max), (Some(1.0), Some(2.0), Some(4.0)));
        assert_eq!(m.cpu_ns, Some(9.5));
        let line = serde_json::to_string(m).unwrap();
        assert_eq!(
            line,
            r#"{"bench":"b","impl":"i","value":2.0,"min":1.0,"median":2.0,"max":4.0,"cpu_ns":9.5,"unit":"ns/op","note":"n"}"#
        );
        let back: Measurement = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (back.min, back.max, back.cpu_ns),
            (Some(1.0), Some(4.0), Some(9.5))
        );
        // A single observation has no spread and no CPU figure.
        let one = Sample::with_note(3.0, "x").into_rows("b", "i", "KiB/thread");
        let line = serde_json::to_string(&one[0]).unwrap();
        for absent in ["min", "median", "max", "cpu_ns"] {
            assert!(!line.contains(absent), "{line}");
        }
        // Older output, without the fields, still parses.
        let old: Measurement =
            serde_json::from_str(r#"{"bench":"b","impl":"i","value":1.0,"unit":"ms"}"#).unwrap();
        assert_eq!((old.min, old.cpu_ns), (None, None));
        let m = Measurement::default().with_spread(s);
        assert_eq!((m.value, m.max), (2.0, Some(4.0)));
    }

    #[test]
    fn allowed_cpus_are_sorted_and_nonempty() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }

    #[test]
    fn tick_clock_tracks_instant() {
        let c = TickClock::calibrate(Duration::from_millis(20));
        let (t0, i0) = (c.now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (t1, i1) = (c.now(), Instant::now());
        let ns = c.ns(t1 - t0);
        let want = (i1 - i0).as_nanos() as f64;
        assert!((ns - want).abs() < want * 0.1, "{ns} vs {want}");
        assert!(c.overhead_ns() > 0.0);
    }

    #[test]
    fn probes_work() {
        assert!(rss_kib() > 0);
        let _ = process_cpu_time();
        assert!(ncpus() >= 1);
        assert!(gettid() > 0);
    }
}
