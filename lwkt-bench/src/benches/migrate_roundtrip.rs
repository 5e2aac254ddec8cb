//! `migrate_roundtrip`: one thread of a 2-CPU runtime migrates itself from
//! CPU 0 to CPU 1 and back (`CurThread::migrate`, `lwkt_setcpu_self`); the
//! figure is ns per round trip, i.e. per two migrations. Each migration
//! switches the thread out, hands it to the other CPU by IPI and resumes
//! it there; `td.cpu()` is checked after every one.

use std::time::{Duration, Instant};

use super::{Bench, Better, Impl};
use crate::harness::{ncpus, ns_per_op_spread, Ctx, RunResult, Sample, Spread};

pub static BENCH: Bench = Bench {
    name: "migrate_roundtrip",
    unit: "ns/op",
    better: Better::Lower,
    about: "a thread migrates CPU 0 -> 1 -> 0, ns per round trip (two migrations)",
    impls: &[Impl {
        name: "lwkt",
        run: lwkt,
    }],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

/// Migrates the current thread to `cpu` and checks it arrived there.
fn hop(td: &mut lwkt::CurThread, cpu: usize) -> Result<(), String> {
    // SAFETY: every value live on this thread's stack across the call is
    // `Send`: the calibration state of `ns_per_op_spread` (integers,
    // `Instant`, `Vec<Duration>`), the counters and `Option<String>` captured by the
    // closure, the copied `Ctx`, and `td` itself. Nothing refers to
    // thread-local storage or holds an OS lock.
    unsafe { td.migrate(cpu) }.map_err(|e| format!("migrate to cpu {cpu}: {e}"))?;
    match td.cpu() {
        c if c == cpu => Ok(()),
        c => Err(format!("migrated to cpu {cpu} but running on cpu {c}")),
    }
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let rt = lwkt::Runtime::builder()
        .cpus(2)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let before = rt.stats().total;
    let (ns, trips) = rt.block_on(move |td| -> Result<(Spread, u64), String> {
        if td.cpu() != 0 {
            return Err(format!("block_on thread started on cpu {}", td.cpu()));
        }
        let mut trips = 0u64;
        let mut err = None;
        let ns = ns_per_op_spread(&ctx, |n| {
            let start = Instant::now();
            if err.is_none() {
                for _ in 0..n {
                    if let Err(e) = hop(td, 1).and_then(|()| hop(td, 0)) {
                        err = Some(e);
                        break;
                    }
                    trips += 1;
                }
            }
            start.elapsed()
        });
        match err {
            Some(e) => Err(e),
            None => Ok((ns, trips)),
        }
    })?;
    let after = rt.stats().total;
    let per_trip = |a: u64, b: u64| (a - b) as f64 / trips.max(1) as f64;
    Ok(Sample::with_spread(
        ns,
        format!(
            "2 cpus on {} cores; {trips} round trips, td.cpu() checked after each migration; \
             per round trip: {:.2} migrations, {:.2} context switches, {:.2} IPI messages \
             handled, {:.2} of them waking a parked CPU",
            ncpus(),
            per_trip(after.migrations, before.migrations),
            per_trip(after.switches, before.switches),
            per_trip(after.ipis_processed, before.ipis_processed),
            per_trip(after.ipis_sent, before.ipis_sent),
        ),
    ))
}
