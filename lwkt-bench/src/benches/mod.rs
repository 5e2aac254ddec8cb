//! The benchmark registry. To add a benchmark, write a module with one run
//! function per implementation, describe it with a [`Bench`] constant, and
//! list that constant in [`ALL`].

use std::time::Duration;

use crate::harness::{Ctx, RunResult};

mod contention;
mod cross_cpu_pingpong;
pub mod http_plaintext;
mod idle_cpu;
mod kv_service;
mod lwp_create_wait;
mod lwp_suspend_resume;
mod max_threads;
mod migrate_roundtrip;
mod preempt_latency;
mod scaling;
pub mod server;
mod sleeping_thread_rss;
mod spawn_join;
mod tcp_echo_c10k;
mod token_block_while_held;
mod token_contended;
pub mod token_study;
mod token_study_report;
mod token_uncontended;
mod trace_overhead;
mod yield_pingpong;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One implementation of a benchmark.
#[derive(Debug)]
pub struct Impl {
    /// Stable name: `lwkt`, `lwkt_shared`, `corosensei`, `may`, `tokio`,
    /// `tokio_2rt`, `std_thread`, `std_thread_spin`, `spin_floor`,
    /// `parking_lot`, `std_mutex`, `tokio_mutex`, `tokio_std_mutex`, and
    /// the `_pinned` / `_drop_guard` variants of the mutex rows; the LWP
    /// benches name their lwkt rows `lwkt_lwp` and `lwkt_spawn_join`.
    pub name: &'static str,
    /// Runs the measurement in the current process and returns its figure.
    pub run: fn(&Ctx) -> RunResult,
}

/// One benchmark: a name, a unit and the implementations compared.
#[derive(Debug)]
pub struct Bench {
    /// Stable name used on the command line and in the JSON.
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// One-line description for the human table.
    pub about: &'static str,
    /// `lwkt` (or an `lwkt_` row) first; the others are the peers lwkt is
    /// compared with.
    pub impls: &'static [Impl],
    /// How long one implementation's child process may run before it is
    /// killed and reported as failed.
    pub timeout: Duration,
    /// Implementations shown for reference but left out of the "best"
    /// verdict, because they do not do the benchmark's work (a machine
    /// floor, or a same-worker hand-off in a cross-CPU benchmark). Their
    /// notes say why; the table marks them.
    pub unranked: &'static [&'static str],
}

impl Bench {
    pub fn find_impl(&self, name: &str) -> Option<&'static Impl> {
        self.impls.iter().find(|i| i.name == name)
    }
}

/// Every benchmark, in the order the suite runs them.
pub static ALL: &[&Bench] = &[
    &yield_pingpong::BENCH,
    &spawn_join::BENCH,
    &cross_cpu_pingpong::BENCH,
    &sleeping_thread_rss::BENCH,
    &max_threads::BENCH,
    &idle_cpu::BENCH,
    &token_uncontended::BENCH,
    &token_contended::BENCH,
    &token_block_while_held::BENCH,
    &preempt_latency::BENCH,
    &migrate_roundtrip::BENCH,
    &scaling::BENCH,
    &kv_service::BENCH,
    &http_plaintext::BENCH,
    &tcp_echo_c10k::BENCH,
    &lwp_create_wait::BENCH,
    &lwp_suspend_resume::BENCH,
    &trace_overhead::BENCH,
    &token_study::BENCH,
];

/// A figure held against another benchmark's figure from the same run:
/// the human output prints it after the tables when both were measured.
#[derive(Debug)]
pub struct Comparison {
    /// The benchmark and implementation judged.
    pub bench: &'static str,
    pub imp: &'static str,
    /// The reference figure (same unit).
    pub base_bench: &'static str,
    pub base_imp: &'static str,
    /// Target: `bench` may be at most this many times `base_bench`
    /// (for ns/op; a lower figure is better).
    pub max_ratio: f64,
}

/// Cross-benchmark targets.
pub static COMPARISONS: &[Comparison] = &[
    // Preempting to an interrupt thread should cost no more than twice a
    // plain cooperative switch.
    Comparison {
        bench: "preempt_latency",
        imp: "lwkt",
        base_bench: "yield_pingpong",
        base_imp: "lwkt",
        max_ratio: 2.0,
    },
    // An LWP's whole lifecycle (create, run, exit, wait) should cost at
    // most 1.5 times the bare core's spawn + join it is built on.
    Comparison {
        bench: "lwp_create_wait",
        imp: "lwkt_lwp",
        base_bench: "lwp_create_wait",
        base_imp: "lwkt_spawn_join",
        max_ratio: 1.5,
    },
];

/// Why `bench` cannot run on this machine (a missing external tool), if
/// it cannot: the suite then reports it as skipped, with the reason,
/// instead of as failed.
pub fn precondition(bench: &Bench) -> Result<(), String> {
    match bench.name {
        "http_plaintext" => http_plaintext::wrk_available(),
        _ => Ok(()),
    }
}

pub use server::serve_main;

pub fn find(name: &str) -> Option<&'static Bench> {
    ALL.iter().copied().find(|b| b.name == name)
}

/// Sleeps on `chan` until `cond()` holds, in the interlocked way that
/// cannot miss a wakeup: register, re-check, then sleep.
pub fn lwkt_sleep_until<C: ?Sized>(
    td: &mut lwkt::CurThread,
    chan: &C,
    wmesg: &'static str,
    mut cond: impl FnMut() -> bool,
) {
    while !cond() {
        td.sleep_interlock(chan);
        if cond() {
            td.sleep_remove();
            return;
        }
        // A wakeup, or a spurious return, leads back to the check.
        let _ = td.sleep(chan, lwkt::Sleep::default().wmesg(wmesg));
    }
}

/// Spawns a `may` coroutine.
///
/// `may::coroutine::spawn` is `unsafe` because a coroutine may migrate
/// between worker threads (so cached thread-local addresses can go stale)
/// and because its stack is small and overflow is not always caught.
/// Every closure this crate passes here touches no thread-local storage
/// (it uses atomics, `may::sync` primitives, `Instant` and the `gettid`
/// syscall only) and needs a few hundred bytes of stack at most.
pub fn may_go<F, T>(f: F) -> may::coroutine::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: see the function comment: the closures are TLS-free and use
    // far less stack than may's default.
    unsafe { may::coroutine::spawn(f) }
}

/// Describes may's configured default coroutine stack for notes.
pub fn may_stack_note() -> String {
    let words = may::config().get_stack_size();
    format!(
        "may default coroutine stack: {} KiB ({words:#x} words)",
        words * std::mem::size_of::<usize>() / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row the suite has ever printed is still there, with the rows
    /// added for honest comparisons (issue 10) and the LWP benches (issue
    /// 11), and no bench lists an implementation twice.
    #[test]
    fn rows_are_kept_and_added() {
        let want: &[(&str, &[&str])] = &[
            (
                "yield_pingpong",
                &["lwkt", "corosensei", "may", "tokio", "std_thread"],
            ),
            (
                "cross_cpu_pingpong",
                &[
                    "lwkt",
                    "may",
                    "tokio",
                    "tokio_2rt",
                    "std_thread",
                    "std_thread_spin",
                    "spin_floor",
                ],
            ),
            (
                "token_contended",
                &[
                    "lwkt",
                    "parking_lot",
                    "std_mutex",
                    "tokio_mutex",
                    "parking_lot_pinned",
                    "std_mutex_pinned",
                    "tokio_std_mutex",
                ],
            ),
            (
                "token_block_while_held",
                &[
                    "lwkt",
                    "parking_lot",
                    "std_mutex",
                    "tokio_mutex",
                    "parking_lot_drop_guard",
                    "std_mutex_drop_guard",
                    "tokio_drop_guard",
                ],
            ),
            (
                "lwp_create_wait",
                &["lwkt_lwp", "lwkt_spawn_join", "std_thread"],
            ),
            ("lwp_suspend_resume", &["lwkt_lwp"]),
        ];
        for (bench, impls) in want {
            let b = find(bench).unwrap_or_else(|| panic!("no bench {bench}"));
            for i in *impls {
                assert!(b.find_impl(i).is_some(), "{bench} lacks {i}");
            }
        }
        for b in ALL {
            let mut seen = std::collections::HashSet::new();
            for i in b.impls {
                assert!(seen.insert(i.name), "{} lists {} twice", b.name, i.name);
            }
        }
    }
}
