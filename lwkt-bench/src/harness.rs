//! Measurement plumbing shared by every benchmark: the result record, the
//! timing loop (calibrate, warm up, repeat, take the median), and the small
//! OS probes (RSS, process CPU time, CPU pinning, kernel limits).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One figure: what `--json` prints, one per (bench, impl).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub bench: String,
    #[serde(rename = "impl")]
    pub imp: String,
    pub value: f64,
    pub unit: String,
    /// Extra context (limits met, configuration used); absent when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What an implementation's run function hands back: usually one figure
/// for its (bench, impl) row; a multi-row benchmark (`scaling`) hands back
/// several rows instead, built with [`Sample::rows`].
#[derive(Debug, Clone)]
pub struct Sample {
    pub value: f64,
    pub note: Option<String>,
    /// When set, the rows this run produced, each naming its own bench,
    /// impl and unit; they replace the single (bench, impl, `value`) row,
    /// and `value` and `note` are unused.
    pub rows: Option<Vec<Measurement>>,
}

impl Sample {
    pub fn with_note(value: f64, note: impl Into<String>) -> Self {
        Sample {
            value,
            note: Some(note.into()),
            rows: None,
        }
    }

    /// A run that measured several things, each its own row.
    pub fn rows(rows: Vec<Measurement>) -> Self {
        Sample {
            value: f64::NAN,
            note: None,
            rows: Some(rows),
        }
    }

    /// The rows to report: [`Sample::rows`] as given, or the one row
    /// `bench`/`imp` with `unit`.
    pub fn into_rows(self, bench: &str, imp: &str, unit: &str) -> Vec<Measurement> {
        self.rows.unwrap_or_else(|| {
            vec![Measurement {
                bench: bench.into(),
                imp: imp.into(),
                value: self.value,
                unit: unit.into(),
                note: self.note,
            }]
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
pub fn ns_per_op(ctx: &Ctx, mut run: impl FnMut(u64) -> Duration) -> f64 {
    let target = ctx.target().as_secs_f64();
    let mut n: u64 = 8;
    loop {
        let d = run(n).as_secs_f64();
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
    let mut per_op: Vec<f64> = (0..ctx.reps())
        .map(|_| run(n).as_nanos() as f64 / n as f64)
        .collect();
    median(&mut per_op)
}

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
