//! `lwkt-bench`: measures lwkt against the thread and task runtimes Rust
//! developers use today.
//!
//! ```text
//! cargo run --release -p lwkt-bench                      # whole suite, human table
//! cargo run --release -p lwkt-bench -- --json            # JSON only on stdout
//! cargo run --release -p lwkt-bench -- --json spawn_join idle_cpu
//! cargo run --release -p lwkt-bench -- --list
//! cargo run --release -p lwkt-bench -- --quick --impls lwkt,tokio
//! cargo run --release -p lwkt-bench -- --report out    # + out/index.html
//! cargo run --release -p lwkt-bench -- --trace t.json yield_pingpong  # + lwkt trace
//! ```
//!
//! Human output: the machine (cores, CPU model, kernel, date), then one
//! table per benchmark (per bench name, for the rows of a multi-row
//! benchmark): each implementation's figure in the benchmark's unit, the
//! figure divided by lwkt's (`÷ lwkt`), how it stands against lwkt in words
//! (`2.50x slower`), which implementation is best, and the notes.
//! `--report DIR` also writes `DIR/index.html`, a self-contained page with
//! one SVG bar chart (drawn with `plotters`) and the table per benchmark,
//! and `DIR/results.json`, the JSON below; it combines with `--json` and
//! with benchmark selection.
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
//! left out) or the report could not be written, 2 on a usage error such
//! as an unknown benchmark name or a report directory that cannot be
//! created.
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
//! * `kv_service` (application-shaped): a 64-shard in-memory key-value
//!   store served to 1,000 and then 10,000 closed-loop clients; each
//!   request locks a shard, looks a key up and updates it, and 1 in 16
//!   waits 50 µs with the shard logically held (lwkt `td.sleep_for` holding
//!   the token guard; the peers drop their `std::sync::Mutex` guard, wait,
//!   re-lock and re-check). `lwkt` (thread per client), `tokio` (task per
//!   client, `tokio::time::sleep`), `may` (coroutine per client), and
//!   `std_thread` (OS thread per client). One run per implementation gives
//!   two rows: bench `kv_service` (req/s at 10,000 clients, higher is
//!   better) and bench `kv_service_p99` (p99 latency in µs at 10,000
//!   clients, lower is better); the 1,000-client figures and the p50s are
//!   in the notes. Details in `benches/kv_service.rs` and the README.
//! * `http_plaintext` (req/s, higher is better): TechEmpower's plaintext
//!   test driven by `wrk` (installed from the distribution's packages; the
//!   bench says it skipped, and why, without it). Each server runs in its
//!   own process (`lwkt-bench __serve http_plaintext IMPL PORT CORE`)
//!   pinned to one core, `wrk -t1` pinned to another: `lwkt`
//!   (`examples/http_hello`'s server), `may_minihttp`, `tokio_hyper`
//!   (hyper 1 + hyper-util on a current_thread runtime), `std_thread`.
//!   Pipelined 16 deep and not, at 64, 256 and 1,024 connections, with the
//!   server's CPU use beside each figure. Rows: `http_plaintext`
//!   (requests/s pipelined at 256 connections, `cpu_ns` = server CPU per
//!   request) and `http_plaintext_p99` (µs); the other points in the
//!   notes. Details in `benches/http_plaintext.rs`.
//! * `tcp_echo_c10k` (round trips/s, higher is better): 10,000 TCP
//!   connections on one server core (`lwkt` thread per connection, `tokio`
//!   task per connection), each sending 32 bytes and waiting for the echo
//!   in turn; rows `tcp_echo_c10k`, `tcp_echo_c10k_rss` (server KiB per
//!   connection) and `tcp_echo_c10k_p99` (µs).
//! * `lwp_create_wait` (ns/op, lower is better): create an LWP whose body
//!   returns a value at once, wait for it and collect the value. Its rows
//!   are named after what they measure, not `lwkt`: `lwkt_lwp` (1 cpu;
//!   inside LWP 1 of one process, `Proc::create_lwp` on the same CPU +
//!   `Proc::wait(Some(lid))`), `lwkt_spawn_join` (1 cpu; the bare core's
//!   `CurThread::spawn` + `join` with the same body: the work without the
//!   LWP layer), `std_thread` (`std::thread::spawn` + `join`, a pthread:
//!   what NetBSD LWPs back; default stack, unpinned). The human output
//!   holds `lwkt_lwp` against `lwkt_spawn_join` of the same run (target:
//!   at most 1.5x).
//! * `lwp_suspend_resume` (ns/op per round trip, lower is better, with
//!   `cpu_ns`): a controller LWP on CPU 0 suspends a worker LWP of its
//!   process on CPU 1 (which loops bumping a counter and calling
//!   `yield_now`), polls `Proc::state` until it is `Suspended`, resumes it
//!   and polls the counter until it moves again. Both sides spin, so
//!   `cpu_ns` is about twice the wall time. `lwkt_lwp` only.
//! * `trace_overhead` (lwkt only; lower is better): what lwkt's event trace
//!   costs while it records, from repetitions alternating trace off and on
//!   on one runtime. One run (registry impl `lwkt`; `--impls lwkt` selects
//!   it) gives rows of bench `trace_overhead` with impls `ns_per_event` (ns:
//!   `yield_pingpong`'s loop,
//!   (wall on - wall off) / events recorded; target at most 15),
//!   `yield_slowdown` (x: that loop's wall on / off; target at most 2),
//!   `cross_cpu_slowdown` (x: `cross_cpu_pingpong`'s loop, on / off; with
//!   2 cores or more). A
//!   repetition that overflows the trace buffers fails the run.
//!
//! `--trace FILE` (one benchmark only) runs the first selected `lwkt*`
//! implementation with every lwkt runtime it builds traced
//! (`lwkt::Trace::record_new_runtimes`) and writes the traces to FILE as
//! Chrome trace-event JSON, one pair of processes per runtime; that row's
//! note says its figure includes the cost of recording.
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
mod report;
mod table;

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};

use benches::Bench;
use harness::{Ctx, Measurement};
use table::{fmt_value, Outcome};

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
    /// Also write an HTML report: DIR/index.html (a bar chart and a table
    /// per benchmark) and DIR/results.json
    #[arg(long, value_name = "DIR")]
    report: Option<std::path::PathBuf>,
    /// Also write an lwkt event trace of one benchmark run to FILE (Chrome
    /// trace-event JSON; open it at https://ui.perfetto.dev): the first
    /// selected implementation whose name starts with `lwkt` runs with
    /// every runtime it builds traced (the first events of each CPU are
    /// kept). Needs exactly one benchmark.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
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
    /// Trace every lwkt runtime the run builds and write the traces here.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
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

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == benches::server::SERVE) {
        let rest: Vec<String> = args
            .iter()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return benches::serve_main(&rest);
    }
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
    if cli.trace.is_some() {
        lwkt::Trace::record_new_runtimes(true);
    }
    match (imp.run)(&ctx) {
        Ok(sample) => {
            let mut rows = sample.into_rows(bench.name, imp.name, bench.unit);
            if let Some(path) = &cli.trace {
                if let Err(e) = write_trace(path, bench.name, imp.name) {
                    eprintln!("lwkt-bench: {}/{}: {e}", bench.name, imp.name);
                    return ExitCode::FAILURE;
                }
                for r in &mut rows {
                    let n = r.note.take().unwrap_or_default();
                    r.note = Some(format!(
                        "{n}{}measured with --trace on: includes the cost of recording",
                        if n.is_empty() { "" } else { "; " }
                    ));
                }
            }
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

/// Writes the traces of the runtimes the child's run built to `path`.
fn write_trace(path: &std::path::Path, bench: &str, imp: &str) -> Result<(), String> {
    lwkt::Trace::record_new_runtimes(false);
    let traces = lwkt::Trace::take_recorded();
    if traces.is_empty() {
        return Err("--trace: the run built no lwkt runtime, so there is no trace".into());
    }
    let json = lwkt::TraceData::chrome_json_of(&traces);
    std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "lwkt-bench: trace of {bench}/{imp}: {} runtime(s), {} events, {} dropped (when a buffer is full, the first {} events of each CPU are kept), written to {}",
        traces.len(),
        traces.iter().map(lwkt::TraceData::events).sum::<usize>(),
        traces.iter().map(lwkt::TraceData::dropped).sum::<u64>(),
        traces[0].capacity_per_cpu(),
        path.display()
    );
    Ok(())
}

/// The implementation of `bench` that `--trace` traces: the first selected
/// one whose name starts with `lwkt`.
fn traced_impl(cli: &Cli, bench: &Bench) -> Option<&'static str> {
    bench
        .impls
        .iter()
        .map(|i| i.name)
        .filter(|n| cli.impls.is_empty() || cli.impls.iter().any(|i| i == n))
        .find(|n| n.starts_with("lwkt"))
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
    let traced = match &cli.trace {
        None => None,
        Some(path) => {
            let [bench] = selected.as_slice() else {
                return Err(format!(
                    "--trace needs exactly one benchmark ({} selected)",
                    selected.len()
                ));
            };
            let imp = traced_impl(cli, bench).ok_or_else(|| {
                format!(
                    "--trace: benchmark `{}` has no selected lwkt implementation to trace",
                    bench.name
                )
            })?;
            Some((imp, path.clone()))
        }
    };
    if let Some(dir) = &cli.report {
        // Fail now, not after the run, when the report cannot be written.
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create report directory {}: {e}", dir.display()))?;
    }
    if let Some(load) = load_average() {
        if load > 1.0 {
            eprintln!(
                "lwkt-bench: warning: 1-minute load average is {load:.2}; \
                 other work on this machine will add noise to the figures"
            );
        }
    }
    let machine = report::Machine::probe();
    if !cli.json {
        println!("lwkt-bench on {}", machine.summary());
        if cli.quick {
            println!("--quick: short repetitions (a smoke test, not figures to quote)");
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut tables = Vec::new();
    for bench in selected {
        if let Err(why) = benches::precondition(bench) {
            eprintln!("lwkt-bench: {}: skipped: {why}", bench.name);
            if !cli.json {
                println!();
                println!("{}: skipped: {why}", bench.name);
            }
            continue;
        }
        let mut rows: Vec<(&str, Outcome)> = Vec::new();
        for imp in bench.impls {
            if !cli.impls.is_empty() && !cli.impls.iter().any(|i| i == imp.name) {
                continue;
            }
            eprint!("lwkt-bench: {}/{} ... ", bench.name, imp.name);
            let t = Instant::now();
            let trace = traced
                .as_ref()
                .filter(|(i, _)| *i == imp.name)
                .map(|(_, p)| p.as_path());
            let r = run_child(
                &exe,
                bench,
                imp.name,
                cli.quick,
                trace,
                cli.report.as_deref(),
            );
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
        if rows.is_empty() {
            continue;
        }
        let groups = table::groups(bench, &rows);
        if !cli.json {
            for g in &groups {
                println!();
                print!("{}", g.render());
            }
        }
        tables.extend(groups);
        results.extend(rows.into_iter().filter_map(|(_, r)| r.ok()).flatten());
    }
    let targets = comparison_lines(&results);
    if !cli.json && !targets.is_empty() {
        println!();
        println!("cross-benchmark targets (same run):");
        for l in &targets {
            println!("  {l}");
        }
    }
    let json = serde_json::to_string_pretty(&Report { results: &results })
        .map_err(|e| format!("serializing results: {e}"))?;
    if cli.json {
        println!("{json}");
    }
    let mut report_failed = false;
    if let Some(dir) = &cli.report {
        let info = report::RunInfo {
            machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            quick: cli.quick,
            targets,
        };
        match report::write(dir, &tables, &info, &json) {
            Ok(page) => eprintln!("lwkt-bench: report written to {}", page.display()),
            Err(e) => {
                eprintln!("lwkt-bench: report not written: {e}");
                report_failed = true;
            }
        }
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
    Ok(if failures.is_empty() && !report_failed {
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
/// (one measurement, or an array of them). `report`: the `--report`
/// directory, passed on to benchmarks that write pages of their own
/// (`token_study`).
fn run_child(
    exe: &std::path::Path,
    bench: &Bench,
    imp: &str,
    quick: bool,
    trace: Option<&std::path::Path>,
    report: Option<&std::path::Path>,
) -> Outcome {
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD).arg(bench.name).arg(imp);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(p) = trace {
        cmd.arg("--trace").arg(p);
    }
    if let Some(dir) = report {
        cmd.env(benches::token_study::REPORT_DIR_ENV, dir);
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
            assert!(
                b.impls[0].name == "lwkt" || b.impls[0].name.starts_with("lwkt_"),
                "{}: lwkt comes first",
                b.name
            );
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
            assert_eq!(b.better, benches::Better::Lower);
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
}
