//! `lwkt-bench`: measures lwkt against the thread and task runtimes Rust
//! developers use today.
//!
//! ```text
//! cargo run --release -p lwkt-bench                      # whole suite, human table
//! cargo run --release -p lwkt-bench -- --json            # JSON only on stdout
//! cargo run --release -p lwkt-bench -- --json spawn_join idle_cpu
//! cargo run --release -p lwkt-bench -- --list
//! cargo run --release -p lwkt-bench -- --quick --impls lwkt,tokio
//! ```
//!
//! JSON output: `{"results":[{"bench":..,"impl":..,"value":..,"unit":..}, ..]}`;
//! a result may carry a `"note"` string (configuration used, limits met).
//! A figure taken over repetitions also carries `"min"`, `"median"` and
//! `"max"` (same unit as `value`, which is the median); a row that measured
//! CPU time carries `"cpu_ns"`: process CPU ns (all threads, user + system)
//! per operation (per round trip for `cross_cpu_pingpong`, per increment
//! for the `ops/s` benches). Fields a row did not measure are absent.
//! Each (benchmark, implementation) gives one row named after them, except
//! `scaling`, whose one run gives several rows, each with its own `bench`,
//! `impl` and `unit` (listed below).
//! Progress and failures go to stderr. Exit status: 0 when every selected
//! implementation produced a figure, 1 when some failed (their results are
//! left out), 2 on a usage error such as an unknown benchmark name.
//!
//! # Benchmarks
//!
//! * `yield_pingpong` (ns/op, lower is better): two threads on one CPU yield
//!   to each other; wall time / total yield calls, i.e. ns per hand-off.
//!   `lwkt` (1 cpu; an lwkt yield is one thread switch made of two stack
//!   switches, thread -> CPU loop -> thread, as its note says),
//!   `corosensei` (a raw `Coroutine` resume + suspend round trip, halved:
//!   ns per stack switch, the floor for any stack-switching runtime),
//!   `may` (1 worker), `tokio` (current_thread runtime, two tasks calling
//!   `yield_now`), `std_thread` (two OS threads pinned to one CPU calling
//!   `sched_yield`).
//! * `spawn_join` (ns/op, lower is better): from inside the runtime, spawn a
//!   thread that does nothing and join it. `lwkt`, `may`, `tokio`
//!   (current_thread, spawn + await the `JoinHandle`), `std_thread`.
//! * `cross_cpu_pingpong` (ns/op per round trip, lower is better): a thread
//!   on CPU 0 wakes one on CPU 1, which wakes it back. Every row also gives
//!   `cpu_ns`, the process CPU time per round trip (`getrusage` around the
//!   timed region, both sides). `lwkt` (2 cpus, shared `AtomicU64`
//!   sequence, `lwkt::wakeup` / `sleep_interlock` + `sleep`; an idle CPU
//!   polls for `lwkt::DEFAULT_IDLE_SPIN`, 50 µs, before parking), `may` (2
//!   workers, `may::sync::mpsc`), `tokio` (multi_thread, 2 workers, two
//!   `Notify`s), `tokio_2rt` (two current_thread runtimes on OS threads
//!   pinned to CPUs 0 and 1: tokio really crossing CPUs), `std_thread`
//!   (threads pinned to CPUs 0 and 1, `park`/`unpark`),
//!   `std_thread_spin` (the same pinned threads with lwkt's idle policy:
//!   poll up to 50 µs, then park), `spin_floor` (the same pinned threads
//!   spinning on the sequence, never sleeping: the machine's floor). may
//!   and tokio choose where a woken task runs and here run both sides on
//!   one worker, so their rows are same-thread hand-offs; lwkt ranks
//!   against `tokio_2rt`, `std_thread` and `std_thread_spin`.
//! * `sleeping_thread_rss` (KiB/thread, lower is better): RSS growth from
//!   `/proc/self/statm` per sleeping thread, 20,000 threads (2,000 OS
//!   threads for `std_thread`), all asleep on one channel. `lwkt` (default
//!   stack), `may` (its default stack, reported in the note), `tokio` (tasks
//!   awaiting a `Notify`), `std_thread` (threads blocked on a `Condvar`).
//! * `max_threads` (threads, higher is better): lwkt threads asleep at once
//!   at the default stack size, spawned with `ThreadBuilder` until it fails
//!   or 1,000,000 is reached; the note gives `vm.max_map_count`, the
//!   mappings in use, how guard pages are made, and the error met. `lwkt`
//!   only.
//! * `idle_cpu` (ms of CPU per wall second, lower is better): process CPU
//!   time (`getrusage`) over ~1 s while 100 threads sleep on a channel
//!   nobody signals. `lwkt`, `tokio`.
//! * `token_uncontended` (ns/op, lower is better): one thread takes a lock,
//!   increments the `u64` it guards and releases it. `lwkt` (1 cpu,
//!   `get_token`), `lwkt_shared` (`get_token_shared`, reading),
//!   `parking_lot` (`parking_lot::Mutex`), `std_mutex` (`std::sync::Mutex`).
//! * `token_contended` (ops/s, higher is better): on every CPU
//!   (`available_parallelism`), 8 workers increment one counter under one
//!   lock for a fixed wall time (300 ms per repetition, 40 ms with
//!   `--quick`); total increments per second, with `cpu_ns` per increment.
//!   `lwkt` (one thread per CPU × 8, one `Token<u64>`, `maybe_yield` after
//!   each release; only the running thread of each CPU contends, so in
//!   effect one contender per CPU), `parking_lot` and `std_mutex` (8
//!   unpinned OS threads per CPU), `parking_lot_pinned` and
//!   `std_mutex_pinned` (one OS thread pinned to each CPU: the mutexes'
//!   strongest setup), `tokio_mutex` (multi_thread runtime, one worker per
//!   CPU, 8 tasks per CPU, `tokio::sync::Mutex`), `tokio_std_mutex` (the
//!   same tasks with `std::sync::Mutex`, tokio's advice for sections
//!   without `.await`, and `consume_budget().await` after each release).
//!   lwkt's note gives its token counters per increment (blocks, scheduler
//!   failures, wasted acquisitions, skips).
//! * `token_block_while_held` (ops/s, higher is better): as
//!   `token_contended`, but one critical section in 16 sleeps 50 µs holding
//!   the lock: lwkt `td.sleep_for` with the guard alive (the token is
//!   released while asleep and re-acquired before it returns), the mutex
//!   peers `std::thread::sleep`, tokio `tokio::time::sleep(..).await`
//!   holding the guard. The `_drop_guard` rows (`parking_lot_drop_guard`,
//!   `std_mutex_drop_guard`, `tokio_drop_guard` with `std::sync::Mutex` and
//!   `tokio::time::sleep`) give the peers lwkt's semantics: drop the guard,
//!   sleep, lock again and re-check the value read. Notes give the sleeps
//!   made, their average real length, and how often the re-check found the
//!   counter moved.
//!
//! * `preempt_latency` (ns/op, lower is better): a thread on a 1-CPU
//!   runtime calls `schedule()` on a parked interrupt-class thread
//!   (`ThreadBuilder::interrupt`, `INT_MED`) of its own CPU, which preempts
//!   it; the figure is the time from just before `schedule()` to the
//!   interrupt thread's first instruction after `park()` returns, read
//!   with `lfence; rdtsc` (calibrated against `Instant`; `Instant` off
//!   x86_64). The note gives the full round trip per `schedule()` from a
//!   tight loop, and `preempt_hits` against the number of calls. `lwkt`
//!   only. The human output holds it against lwkt's `yield_pingpong` of
//!   the same run (target: at most 2x).
//! * `migrate_roundtrip` (ns/op per round trip, lower is better): one
//!   thread of a 2-CPU runtime migrates itself 0 -> 1 -> 0
//!   (`CurThread::migrate`), checking `td.cpu()` after each migration; the
//!   note gives migrations, switches and IPIs per round trip. `lwkt` only.
//! * `scaling` (`lwkt` only; lower is better throughout): lwkt's per-op
//!   costs by CPU count N, for N = 1, 2, 4, 8, … below the cores
//!   (`available_parallelism`), the core count itself, and one
//!   oversubscribed point `max(2 × cores, 4)` so that code for more CPUs
//!   than cores runs on small machines too; each N gets a fresh runtime.
//!   One run prints these rows (its registry impl is `lwkt`; `--impls lwkt`
//!   selects it):
//!   - bench `scaling_wakeup`, impl `lwkt_c<N>` (ns/op): a baton goes round
//!     a ring of `max(N, 2)` threads, thread j on CPU j % N, each hop
//!     storing into the next thread's own `AtomicU64` and `lwkt::wakeup`ing
//!     it (`sleep_interlock` + `sleep` on the other side); wall / hops. A
//!     ring rather than N/2 ping-pong pairs: one baton in flight makes a
//!     hop one wakeup's latency, with the other CPUs idle, and walks every
//!     CPU of the runtime, so costs that grow with N show along the rows
//!     instead of how many pairs the machine can run at once (at the
//!     oversubscribed point, the OS scheduler). N = 1: two threads on CPU 0,
//!     a same-CPU wakeup plus a switch; N = 2: half a `cross_cpu_pingpong`
//!     round trip.
//!   - bench `scaling_token`, impl `lwkt_c<N>` (ns/op): one thread per CPU
//!     increments one `Token<u64>` (`get_token`, `maybe_yield` after each
//!     release) for a fixed wall time (150 ms, 20 ms with `--quick`; median
//!     of the repetitions); wall ns per increment (wall / total
//!     increments), increments/s in the note. The counter must equal the
//!     increments made, or the run fails. N = 1 is the uncontended baseline.
//!   - bench `runtime_build_256`, impl `lwkt` (ms): median wall time of
//!     `Runtime::builder().cpus(256).build()` over the repetitions, each
//!     runtime dropped and the heap trimmed (`malloc_trim`) before the next
//!     build; the note gives the median drop time and the first build's.
//!   - bench `runtime_rss_256`, impl `lwkt` (MiB): RSS growth
//!     (`/proc/self/statm`) of the process holding one `cpus(256)` runtime,
//!     50 ms after `build()` returned, measured first in the child; the
//!     note gives the absolute RSS.
//!
//!   Every `scaling_*` row's note states N, the cores, and "oversubscribed"
//!   or "not oversubscribed", plus the IPI, park and switch counters (wakeup)
//!   or token counters and per-worker spread (token) per operation.
//!
//! # Method
//!
//! Every (benchmark, implementation) pair runs in a fresh child process
//! (`lwkt-bench __child BENCH IMPL`), so runtimes that start OS threads are
//! torn down with the process, RSS figures are not polluted by a previous
//! runtime, process-global configuration (may's worker count) is set before
//! first use, and a peer that aborts or hangs (may aborts when mmap fails)
//! cannot take the suite down: a failed child is reported on stderr and its
//! result left out. Timed benchmarks calibrate the iteration count to
//! ~150 ms per repetition (20 ms with `--quick`), warm up, and report the
//! median of 7 repetitions (3 with `--quick`), with the fastest and slowest
//! repetition beside it (`min`, `max`). Single observations
//! (`sleeping_thread_rss`, `max_threads`, `idle_cpu`, `runtime_rss_256`)
//! report no spread. A child prints its result as
//! one JSON line: one measurement, or an array of them for a multi-row
//! benchmark.

mod benches;
mod harness;

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};

use benches::{Bench, Better};
use harness::{Ctx, Measurement};

#[derive(Parser, Debug)]
#[command(
    name = "lwkt-bench",
    version,
    about = "Benchmarks lwkt against corosensei, may, tokio, std threads and mutexes"
)]
struct Cli {
    /// Print only JSON on stdout: {"results":[{"bench","impl","value","unit"}, ..]}
    #[arg(long)]
    json: bool,
    /// Print the benchmark names, one per line, and exit
    #[arg(long)]
    list: bool,
    /// Shorter repetitions and smaller caps (smoke test)
    #[arg(long)]
    quick: bool,
    /// Run only these implementations (comma-separated, e.g. lwkt,tokio)
    #[arg(long, value_delimiter = ',', value_name = "IMPL")]
    impls: Vec<String>,
    /// Benchmarks to run (default: all)
    #[arg(value_name = "BENCH")]
    benches: Vec<String>,
}

/// Arguments of the hidden `__child` mode: run one implementation of one
/// benchmark in this process and print its measurement as one JSON line.
#[derive(Parser, Debug)]
#[command(name = "lwkt-bench __child")]
struct ChildCli {
    bench: String,
    #[arg(value_name = "IMPL")]
    imp: String,
    #[arg(long)]
    quick: bool,
}

const CHILD: &str = "__child";

#[derive(Serialize)]
struct Report<'a> {
    results: &'a [Measurement],
}

/// A child's result line: one measurement, or several from a multi-row
/// benchmark.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChildOutput {
    One(Measurement),
    Many(Vec<Measurement>),
}

/// One implementation's outcome in the parent: its rows, or why it failed.
type Outcome = Result<Vec<Measurement>, String>;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == CHILD) {
        // Drop the `__child` word and parse the rest.
        let rest = args.iter().take(1).chain(args.iter().skip(2));
        return child_main(ChildCli::parse_from(rest));
    }
    let cli = Cli::parse();
    match run_suite(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lwkt-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn child_main(cli: ChildCli) -> ExitCode {
    let ctx = Ctx { quick: cli.quick };
    let Some(bench) = benches::find(&cli.bench) else {
        eprintln!("lwkt-bench: unknown benchmark `{}`", cli.bench);
        return ExitCode::from(2);
    };
    let Some(imp) = bench.find_impl(&cli.imp) else {
        eprintln!(
            "lwkt-bench: benchmark `{}` has no implementation `{}`",
            bench.name, cli.imp
        );
        return ExitCode::from(2);
    };
    match (imp.run)(&ctx) {
        Ok(sample) => {
            let rows = sample.into_rows(bench.name, imp.name, bench.unit);
            // One row: the measurement object; several: an array of them.
            let line = match rows.as_slice() {
                [m] => serde_json::to_string(m),
                _ => serde_json::to_string(&rows),
            };
            println!("{}", line.expect("measurement serializes"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lwkt-bench: {}/{}: {e}", bench.name, imp.name);
            ExitCode::FAILURE
        }
    }
}

/// Resolves the benchmark and implementation selections, or explains what
/// was not recognised.
fn select(cli: &Cli) -> Result<Vec<&'static Bench>, String> {
    let names = || {
        benches::ALL
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let selected = if cli.benches.is_empty() {
        benches::ALL.to_vec()
    } else {
        cli.benches
            .iter()
            .map(|n| {
                benches::find(n)
                    .ok_or_else(|| format!("unknown benchmark `{n}` (known: {})", names()))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    for i in &cli.impls {
        if !benches::ALL.iter().any(|b| b.find_impl(i).is_some()) {
            let mut known: Vec<&str> = Vec::new();
            for imp in benches::ALL.iter().flat_map(|b| b.impls) {
                if !known.contains(&imp.name) {
                    known.push(imp.name);
                }
            }
            return Err(format!(
                "unknown implementation `{i}` (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(selected)
}

fn run_suite(cli: &Cli) -> Result<ExitCode, String> {
    if cli.list {
        for b in benches::ALL {
            println!("{}", b.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected = select(cli)?;
    if let Some(load) = load_average() {
        if load > 1.0 {
            eprintln!(
                "lwkt-bench: warning: 1-minute load average is {load:.2}; \
                 other work on this machine will add noise to the figures"
            );
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for bench in selected {
        let mut rows: Vec<(&str, Outcome)> = Vec::new();
        for imp in bench.impls {
            if !cli.impls.is_empty() && !cli.impls.iter().any(|i| i == imp.name) {
                continue;
            }
            eprint!("lwkt-bench: {}/{} ... ", bench.name, imp.name);
            let t = Instant::now();
            let r = run_child(&exe, bench, imp.name, cli.quick);
            match &r {
                Ok(ms) => match ms.as_slice() {
                    [m] => eprintln!("{} {} ({:.1} s)", fmt_value(m.value), m.unit, secs(t)),
                    _ => eprintln!("{} rows ({:.1} s)", ms.len(), secs(t)),
                },
                Err(e) => {
                    eprintln!("FAILED ({:.1} s)", secs(t));
                    eprintln!("lwkt-bench: {}/{} failed: {e}", bench.name, imp.name);
                    failures.push(format!("{}/{}: {e}", bench.name, imp.name));
                }
            }
            rows.push((imp.name, r));
        }
        if !cli.json && !rows.is_empty() {
            print_rows(bench, &rows);
        }
        results.extend(rows.into_iter().filter_map(|(_, r)| r.ok()).flatten());
    }
    if !cli.json {
        let lines = comparison_lines(&results);
        if !lines.is_empty() {
            println!();
            println!("cross-benchmark targets (same run):");
            for l in lines {
                println!("  {l}");
            }
        }
    }
    if cli.json {
        let out = serde_json::to_string_pretty(&Report { results: &results })
            .map_err(|e| format!("serializing results: {e}"))?;
        println!("{out}");
    }
    eprintln!(
        "lwkt-bench: {} results, {} failed, {:.1} s",
        results.len(),
        failures.len(),
        secs(started)
    );
    for f in &failures {
        eprintln!("lwkt-bench: failed: {f}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The 1-minute load average from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Runs one implementation in a child process and parses its JSON line
/// (one measurement, or an array of them).
fn run_child(exe: &std::path::Path, bench: &Bench, imp: &str, quick: bool) -> Outcome {
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD).arg(bench.name).arg(imp);
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + bench.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!("timed out after {:?}; killed", bench.timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for child: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("child exited with {status}"));
    }
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("child printed no result")?;
    match serde_json::from_str(line) {
        Ok(ChildOutput::One(m)) => Ok(vec![m]),
        Ok(ChildOutput::Many(ms)) if !ms.is_empty() => Ok(ms),
        Ok(ChildOutput::Many(_)) => Err("child printed no result".into()),
        Err(e) => Err(format!("bad child output {line:?}: {e}")),
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// "better"/"worse" wording for a unit.
fn wording(unit: &str, lwkt_better: bool) -> &'static str {
    match (unit, lwkt_better) {
        ("ns/op", true) => "faster",
        ("ns/op", false) => "slower",
        ("KiB/thread", true) => "less memory",
        ("KiB/thread", false) => "more memory",
        ("ms/s", true) => "less CPU",
        ("ms/s", false) => "more CPU",
        ("ops/s", true) => "more throughput",
        ("ops/s", false) => "less throughput",
        (_, true) => "better",
        (_, false) => "worse",
    }
}

/// lwkt's standing against one peer: the peer/lwkt ratio (lwkt/peer when
/// higher is better), so a ratio above 1 always means lwkt wins.
fn ratio_text(bench: &Bench, lwkt: f64, peer: f64) -> String {
    let ratio = match bench.better {
        Better::Lower => peer / lwkt,
        Better::Higher => lwkt / peer,
    };
    if !ratio.is_finite() || ratio <= 0.0 {
        return "n/a".into();
    }
    let (factor, better) = if ratio >= 1.0 {
        (ratio, true)
    } else {
        (1.0 / ratio, false)
    };
    format!(
        "{ratio:>7.2}  lwkt {factor:.2}x {}",
        wording(bench.unit, better)
    )
}

/// One line per [`benches::COMPARISONS`] entry whose two figures are both
/// in `results`: the ratio and whether the target is met.
fn comparison_lines(results: &[Measurement]) -> Vec<String> {
    let find = |bench: &str, imp: &str| results.iter().find(|m| m.bench == bench && m.imp == imp);
    benches::COMPARISONS
        .iter()
        .filter_map(|c| {
            let m = find(c.bench, c.imp)?;
            let base = find(c.base_bench, c.base_imp)?;
            let ratio = m.value / base.value;
            let verdict = if !ratio.is_finite() {
                "n/a"
            } else if ratio <= c.max_ratio {
                "met"
            } else {
                "MISSED"
            };
            Some(format!(
                "{}/{} {} {} = {ratio:.2}x {}/{} {} {} (target: at most {:.2}x): {verdict}",
                c.bench,
                c.imp,
                fmt_value(m.value),
                m.unit,
                c.base_bench,
                c.base_imp,
                fmt_value(base.value),
                base.unit,
                c.max_ratio,
            ))
        })
        .collect()
}

/// Prints one benchmark's outcomes: the comparison table when every
/// implementation gave one row of that benchmark, else a table of the rows
/// each run produced (a multi-row benchmark such as `scaling`).
fn print_rows(bench: &Bench, rows: &[(&str, Outcome)]) {
    let single = rows.iter().all(|(_, r)| match r {
        Ok(ms) => ms.len() == 1 && ms[0].bench == bench.name,
        Err(_) => true,
    });
    if single {
        let rows: Vec<(&str, Result<Measurement, String>)> = rows
            .iter()
            .map(|(n, r)| (*n, r.clone().map(|mut ms| ms.remove(0))))
            .collect();
        print_table(bench, &rows);
    } else {
        print_multi(bench, rows);
    }
}

/// The table of a multi-row benchmark: bench, impl, value and unit of
/// every row, then the notes. There are no peers to compare with.
fn print_multi(bench: &Bench, rows: &[(&str, Outcome)]) {
    let better = match bench.better {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    };
    println!();
    println!("{} ({better}): {}", bench.name, bench.about);
    let all: Vec<&Measurement> = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten()
        .collect();
    let w = all.iter().map(|m| m.bench.len()).max().unwrap_or(5).max(5);
    println!("  {:<w$} {:<12} {:>12}  unit", "bench", "impl", "value");
    for m in &all {
        println!(
            "  {:<w$} {:<12} {:>12}  {}",
            m.bench,
            m.imp,
            fmt_value(m.value),
            m.unit
        );
    }
    for (name, r) in rows {
        if let Err(e) = r {
            println!("  {:<w$} {name:<12} {:>12}  {e}", bench.name, "failed");
        }
    }
    for m in &all {
        if let Some(n) = &m.note {
            println!("    {}/{}: {n}", m.bench, m.imp);
        }
    }
}

fn print_table(bench: &Bench, rows: &[(&str, Result<Measurement, String>)]) {
    let better = match bench.better {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    };
    println!();
    println!("{} ({}, {better}): {}", bench.name, bench.unit, bench.about);
    let lwkt = rows
        .iter()
        .find(|(n, _)| *n == "lwkt")
        .and_then(|(_, r)| r.as_ref().ok())
        .map(|m| m.value);
    println!("  {:<12} {:>12}  {:>7}", "impl", bench.unit, "ratio");
    for (name, r) in rows {
        match r {
            Ok(m) => {
                let ratio = match lwkt {
                    Some(l) if *name != "lwkt" => ratio_text(bench, l, m.value),
                    _ => String::new(),
                };
                println!("  {name:<12} {:>12}  {ratio}", fmt_value(m.value));
            }
            Err(e) => println!("  {name:<12} {:>12}  {e}", "failed"),
        }
    }
    for (name, r) in rows {
        if let Ok(Measurement { note: Some(n), .. }) = r {
            println!("    {name}: {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Sample;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("lwkt-bench").chain(args.iter().copied()))
    }

    #[test]
    fn json_format_is_stable() {
        let mut m = Measurement {
            bench: "yield_pingpong".into(),
            imp: "lwkt".into(),
            value: 12.5,
            unit: "ns/op".into(),
            note: None,
            ..Measurement::default()
        };
        let report = serde_json::to_string(&Report {
            results: std::slice::from_ref(&m),
        })
        .unwrap();
        assert_eq!(
            report,
            r#"{"results":[{"bench":"yield_pingpong","impl":"lwkt","value":12.5,"unit":"ns/op"}]}"#
        );
        m.note = Some("limit".into());
        let line = serde_json::to_string(&m).unwrap();
        assert!(
            line.ends_with(r#""unit":"ns/op","note":"limit"}"#),
            "{line}"
        );
        let back: Measurement = serde_json::from_str(&line).unwrap();
        assert_eq!(back.note.as_deref(), Some("limit"));
    }

    #[test]
    fn child_output_is_one_row_or_several() {
        let one = r#"{"bench":"spawn_join","impl":"lwkt","value":1.5,"unit":"ns/op"}"#;
        assert!(matches!(
            serde_json::from_str(one).unwrap(),
            ChildOutput::One(m) if m.bench == "spawn_join"
        ));
        let rows = Sample::rows(vec![
            Measurement {
                bench: "runtime_build_256".into(),
                imp: "lwkt".into(),
                value: 170.0,
                unit: "ms".into(),
                note: None,
                ..Measurement::default()
            },
            Measurement {
                bench: "runtime_rss_256".into(),
                imp: "lwkt".into(),
                value: 300.0,
                unit: "MiB".into(),
                note: Some("x".into()),
                ..Measurement::default()
            },
        ])
        .into_rows("scaling", "lwkt", "ns/op");
        let line = serde_json::to_string(&rows).unwrap();
        match serde_json::from_str(&line).unwrap() {
            ChildOutput::Many(ms) => {
                assert_eq!(ms.len(), 2);
                assert_eq!(
                    (ms[1].bench.as_str(), ms[1].unit.as_str()),
                    ("runtime_rss_256", "MiB")
                );
            }
            ChildOutput::One(_) => panic!("an array parsed as one row"),
        }
        let single = Sample::with_note(2.0, "n").into_rows("spawn_join", "tokio", "ns/op");
        assert_eq!(single.len(), 1);
        assert_eq!((single[0].imp.as_str(), single[0].value), ("tokio", 2.0));
    }

    #[test]
    fn selection() {
        assert_eq!(select(&cli(&[])).unwrap().len(), benches::ALL.len());
        let two = select(&cli(&["idle_cpu", "spawn_join"])).unwrap();
        assert_eq!(
            two.iter().map(|b| b.name).collect::<Vec<_>>(),
            ["idle_cpu", "spawn_join"]
        );
        assert!(select(&cli(&["nope"])).unwrap_err().contains("nope"));
        let err = select(&cli(&["--impls", "lwkt,bogus"])).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(
            err.contains("parking_lot") && err.contains("tokio_mutex"),
            "{err}"
        );
        assert!(select(&cli(&["--impls", "lwkt_shared,std_mutex"])).is_ok());
    }

    #[test]
    fn registry_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for b in benches::ALL {
            assert!(names.insert(b.name), "duplicate bench {}", b.name);
            assert_eq!(b.impls[0].name, "lwkt", "{}: lwkt comes first", b.name);
            assert!(benches::find(b.name).is_some());
        }
    }

    #[test]
    fn comparisons_are_consistent_and_printed() {
        for c in benches::COMPARISONS {
            let (b, base) = (
                benches::find(c.bench).unwrap(),
                benches::find(c.base_bench).unwrap(),
            );
            assert!(b.find_impl(c.imp).is_some(), "{}/{}", c.bench, c.imp);
            assert!(base.find_impl(c.base_imp).is_some());
            assert_eq!(b.unit, base.unit, "{} vs {}", c.bench, c.base_bench);
            assert_eq!(b.better, Better::Lower);
        }
        let m = |bench: &str, value: f64| Measurement {
            bench: bench.into(),
            imp: "lwkt".into(),
            value,
            unit: "ns/op".into(),
            note: None,
            ..Measurement::default()
        };
        assert!(comparison_lines(&[m("preempt_latency", 30.0)]).is_empty());
        let lines = comparison_lines(&[m("yield_pingpong", 20.0), m("preempt_latency", 30.0)]);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("= 1.50x yield_pingpong/lwkt"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(": met"), "{}", lines[0]);
        let lines = comparison_lines(&[m("preempt_latency", 50.0), m("yield_pingpong", 20.0)]);
        assert!(lines[0].ends_with(": MISSED"), "{}", lines[0]);
    }

    #[test]
    fn ratios_say_who_wins() {
        let b = benches::find("spawn_join").unwrap();
        assert!(ratio_text(b, 100.0, 300.0).contains("lwkt 3.00x faster"));
        assert!(ratio_text(b, 300.0, 100.0).contains("lwkt 3.00x slower"));
        let rss = benches::find("sleeping_thread_rss").unwrap();
        assert!(ratio_text(rss, 2.0, 8.0).contains("less memory"));
        assert_eq!(ratio_text(b, 0.0, 1.0), "n/a");
        // ops/s: higher is better, so more ops/s for lwkt is a win.
        let c = benches::find("token_contended").unwrap();
        assert_eq!(c.better, Better::Higher);
        assert!(ratio_text(c, 300.0, 100.0).contains("lwkt 3.00x more throughput"));
        assert!(ratio_text(c, 100.0, 300.0).contains("lwkt 3.00x less throughput"));
    }
}
