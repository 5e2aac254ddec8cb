//! `token_uncontended`: one thread takes a lock, increments the `u64` it
//! protects and releases it, over and over; the figure is ns per
//! get + release. Nobody else ever wants the lock, so this is the fast
//! path: the atomic read-modify-writes on the lock word and the
//! bookkeeping around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bench, Better, Impl};
use crate::harness::{ns_per_op_spread, Ctx, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "token_uncontended",
    unit: "ns/op",
    better: Better::Lower,
    about: "one thread takes and releases an uncontended lock, ns per get+release",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "lwkt_shared",
            run: lwkt_shared,
        },
        Impl {
            name: "parking_lot",
            run: parking_lot,
        },
        Impl {
            name: "std_mutex",
            run: std_mutex,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

/// Runs `f` on a 1-CPU lwkt runtime and returns its result with the token
/// counters the runtime gathered meanwhile (all zero when every
/// acquisition took the fast path).
fn on_lwkt<R: Send + 'static>(
    f: impl FnOnce(&mut lwkt::CurThread) -> R + Send + 'static,
) -> Result<(R, String), String> {
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| format!("lwkt runtime: {e}"))?;
    let before = rt.stats().total;
    let r = rt.block_on(f);
    let after = rt.stats().total;
    let slow =
        (after.token_attempts - before.token_attempts) + (after.token_blocks - before.token_blocks);
    Ok((r, format!("slow-path token events: {slow}")))
}

fn lwkt(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let tok = Arc::new(lwkt::Token::new("bench", 0u64));
    let (ns, stats) = on_lwkt(move |td| {
        let tok = &*tok;
        ns_per_op_spread(&ctx, |n| {
            let start = Instant::now();
            for _ in 0..n {
                let g = td.get_token(tok);
                *g.get(td) += 1;
                drop(g);
            }
            start.elapsed()
        })
    })?;
    Ok(Sample::with_spread(
        ns,
        format!("1 cpu; get_token + `*guard.get(td) += 1` + drop; {stats}"),
    ))
}

fn lwkt_shared(ctx: &Ctx) -> RunResult {
    let ctx = *ctx;
    let tok = Arc::new(lwkt::Token::new("bench", 0u64));
    let (ns, stats) = on_lwkt(move |td| {
        let tok = &*tok;
        ns_per_op_spread(&ctx, |n| {
            let start = Instant::now();
            for _ in 0..n {
                let g = td.get_token_shared(tok);
                std::hint::black_box(*g.get(td));
                drop(g);
            }
            start.elapsed()
        })
    })?;
    Ok(Sample::with_spread(
        ns,
        format!("1 cpu; get_token_shared + read through guard.get(td) + drop; {stats}"),
    ))
}

fn parking_lot(ctx: &Ctx) -> RunResult {
    let m = parking_lot::Mutex::new(0u64);
    let m = std::hint::black_box(&m);
    let ns = ns_per_op_spread(ctx, |n| {
        let start = Instant::now();
        for _ in 0..n {
            *m.lock() += 1;
        }
        start.elapsed()
    });
    Ok(Sample::with_spread(
        ns,
        "parking_lot::Mutex<u64>: lock + increment + unlock, one OS thread",
    ))
}

fn std_mutex(ctx: &Ctx) -> RunResult {
    let m = std::sync::Mutex::new(0u64);
    let m = std::hint::black_box(&m);
    let ns = ns_per_op_spread(ctx, |n| {
        let start = Instant::now();
        for _ in 0..n {
            *m.lock().expect("mutex poisoned") += 1;
        }
        start.elapsed()
    });
    Ok(Sample::with_spread(
        ns,
        "std::sync::Mutex<u64>: lock + increment + unlock, one OS thread",
    ))
}
