//! The live introspection page against a runtime with busy threads: open
//! the printed URL in a browser to watch the counters move, the thread
//! table (two yield loops, a token holder and a thread contending for its
//! token, a sleeper) and the token table, and to download a trace.
//!
//! `cargo run --release -p lwkt-examples --example observe [--secs N]`
//!
//! Runs until Ctrl-C, or for N seconds. The page listens on 127.0.0.1
//! only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwkt::{Runtime, Sleep, ThreadBuilder, Token};

static COUNTER: Token<u64> = Token::new("observe-counter", 0);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut secs = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => {
                let n = args.next().ok_or("--secs needs a number")?;
                secs = Some(n.parse::<u64>().map_err(|e| format!("--secs {n}: {e}"))?);
            }
            other => {
                return Err(
                    format!("unknown argument {other:?} (usage: observe [--secs N])").into(),
                )
            }
        }
    }
    let rt = Runtime::builder().cpus(2).build()?;
    let h = rt.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for cpu in 0..rt.cpus() {
        let s = stop.clone();
        threads.push(
            ThreadBuilder::new()
                .name(format!("spinner-{cpu}"))
                .cpu(cpu)
                .spawn_from(&h, move |td| {
                    while !s.load(Ordering::Relaxed) {
                        // Yield often, with pauses, so the CPUs are not
                        // pegged and the page stays responsive.
                        for _ in 0..1000 {
                            td.yield_now();
                        }
                        let _ = td.sleep_for(Duration::from_millis(1));
                    }
                })?,
        );
    }
    for (name, cpu, hold) in [("token-holder", 0, 10), ("token-contender", 1, 1)] {
        let s = stop.clone();
        threads.push(
            ThreadBuilder::new()
                .name(name)
                .cpu(cpu)
                .spawn_from(&h, move |td| {
                    while !s.load(Ordering::Relaxed) {
                        let g = td.get_token(&COUNTER);
                        *g.get(td) += 1;
                        // Sleeping with the token held: it is released while this
                        // thread sleeps and re-acquired before it runs again.
                        let _ = td.sleep_for(Duration::from_millis(hold));
                        drop(g);
                        td.yield_now();
                    }
                })?,
        );
    }
    let s = stop.clone();
    threads.push(
        ThreadBuilder::new()
            .name("sleeper")
            .cpu(1)
            .spawn_from(&h, move |td| {
                while !s.load(Ordering::Relaxed) {
                    let _ = td.sleep(
                        &*s,
                        Sleep::default()
                            .wmesg("napping")
                            .timeout(Duration::from_millis(500)),
                    );
                }
            })?,
    );

    let page = rt.serve_introspection("127.0.0.1:0".parse()?)?;
    println!("observe: open {} (Ctrl-C to quit)", page.url());
    match secs {
        Some(n) => std::thread::sleep(Duration::from_secs(n)),
        None => loop {
            std::thread::park();
        },
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join_blocking()?;
    }
    page.stop();
    Ok(())
}
