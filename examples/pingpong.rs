//! Two CPUs waking each other: a thread on CPU 0 and one on CPU 1 take
//! turns advancing a shared counter, sleeping on it in between.
//!
//! `cargo run --release -p lwkt-examples --example pingpong [ROUNDS] [--trace FILE]`
//!
//! With `--trace FILE` the whole run is traced (`Builder::trace`) and
//! written to FILE as Chrome trace-event JSON: open it at
//! <https://ui.perfetto.dev>. Use few rounds (say 1000): each CPU keeps
//! the first `lwkt::DEFAULT_TRACE_EVENTS` events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lwkt::{CurThread, Runtime, Sleep, ThreadBuilder};

/// Sleeps on `ball` until it holds `want`. The interlock registers the
/// sleep before the re-check, so the other CPU's wakeup cannot slip by.
fn wait_for(td: &mut CurThread, ball: &AtomicU64, want: u64) {
    td.sleep_until(ball, Sleep::default().wmesg("ball"), || {
        ball.load(Ordering::Acquire) == want
    })
    .expect("plain sleeps only end by wakeup");
}

fn main() -> Result<(), lwkt::Error> {
    let mut rounds = 100_000u64;
    let mut trace_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--trace" {
            trace_file = Some(args.next().expect("--trace needs a file name"));
        } else {
            rounds = a.parse().expect("ROUNDS must be a number");
        }
    }
    let rt = Runtime::builder()
        .cpus(2)
        .trace(trace_file.is_some())
        .build()?;
    let elapsed = rt.block_on(move |td| -> Result<_, lwkt::Error> {
        let ball = Arc::new(AtomicU64::new(0));
        let b = ball.clone();
        let pong = ThreadBuilder::new()
            .name("pong")
            .cpu(1)
            .spawn(td, move |td| {
                for i in 0..rounds {
                    wait_for(td, &b, 2 * i + 1);
                    b.store(2 * i + 2, Ordering::Release);
                    lwkt::wakeup(&*b);
                }
            })?;
        let t0 = Instant::now();
        for i in 0..rounds {
            wait_for(td, &ball, 2 * i);
            ball.store(2 * i + 1, Ordering::Release);
            lwkt::wakeup(&*ball);
        }
        wait_for(td, &ball, 2 * rounds);
        let el = t0.elapsed();
        pong.join(td).expect("pong panicked");
        Ok(el)
    })?;
    println!(
        "{rounds} round trips between CPU 0 and CPU 1: {:.0} ns each",
        elapsed.as_nanos() as f64 / rounds as f64
    );
    if let Some(path) = trace_file {
        let data = rt.trace().stop();
        data.write_perfetto(&path).expect("cannot write the trace");
        println!(
            "trace: {} events ({} dropped) over {:?}, written to {path}",
            data.events(),
            data.dropped(),
            data.duration()
        );
    }
    let s = rt.stats();
    for (i, c) in s.per_cpu.iter().enumerate() {
        println!(
            "cpu{i}: switches {} ipis sent {} avoided {} processed {} parks {}",
            c.switches, c.ipis_sent, c.ipis_avoided, c.ipis_processed, c.parks
        );
    }
    Ok(())
}
