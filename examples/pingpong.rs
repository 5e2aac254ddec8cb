//! Two CPUs waking each other: a thread on CPU 0 and one on CPU 1 take
//! turns advancing a shared counter, sleeping on it in between.
//!
//! `cargo run --release -p lwkt-examples --example pingpong [ROUNDS]`

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
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let rt = Runtime::builder().cpus(2).build()?;
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
    let s = rt.stats();
    for (i, c) in s.per_cpu.iter().enumerate() {
        println!(
            "cpu{i}: switches {} ipis sent {} avoided {} processed {} parks {}",
            c.switches, c.ipis_sent, c.ipis_avoided, c.ipis_processed, c.parks
        );
    }
    Ok(())
}
