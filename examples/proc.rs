//! Processes and LWPs: a process with worker LWPs on both CPUs, one of
//! them suspended and continued, the workers collected with `wait(None)`,
//! a detached LWP, an LWP-specific key with a destructor, then a second
//! process whose LWPs sleep interruptibly: one is sent a signal, then the
//! process is killed.
//!
//! `cargo run --release -p lwkt-examples --example proc`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwkt::lwp::{ExitStatus, Key, Lid, LwpBuilder, LwpError, LwpFlags, LwpState, Proc, Signal};
use lwkt::{CurThread, Runtime, Sleep};

/// Each worker keeps a scratch buffer under this key; the destructor runs
/// when the worker exits.
static SCRATCH: Key<Vec<u64>> = Key::with_destructor(release_scratch);

fn release_scratch(buf: Vec<u64>) {
    println!(
        "    key destructor: freeing a scratch buffer of {} values",
        buf.len()
    );
}

/// The channel the second process's LWPs sleep on (nobody wakes it).
static NAP: u8 = 0;

/// Signals the second process's LWPs have taken.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Prints when dropped: shows that a killed LWP's stack unwinds.
struct Unwound(String);

impl Drop for Unwound {
    fn drop(&mut self) {
        println!("    {} unwound", self.0);
    }
}

/// Where `td` runs, as "pid.lid".
fn me(td: &CurThread) -> String {
    match (td.proc(), td.lid()) {
        (Some(p), Some(l)) => format!("{}.{l}", p.pid()),
        _ => "?".into(),
    }
}

/// Yields until `done()` holds.
fn spin_until(td: &mut CurThread, mut done: impl FnMut() -> bool) {
    while !done() {
        td.yield_now();
    }
}

/// The first process: workers, a suspend/continue, a detached LWP, and
/// `wait(None)` until nothing is left to collect. Returns its exit value.
fn workers(td: &mut CurThread) -> i32 {
    let proc = td.proc().expect("the first LWP has a process");
    println!("process {} starts on cpu {}", proc.pid(), td.cpu());

    // Four workers, two per CPU: each sums a range, keeping its inputs in
    // a key, and returns the sum modulo 1000 as its exit value.
    for i in 0..4u64 {
        let lid = proc
            .create_lwp(
                td,
                LwpBuilder::new()
                    .cpu((i % 2) as usize)
                    .name(format!("worker{i}")),
                move |td| {
                    let inputs: Vec<u64> = (0..100 * (i + 1)).collect();
                    let sum: u64 = inputs.iter().sum();
                    SCRATCH.set(td, inputs);
                    td.yield_now();
                    println!("  worker {} on cpu {}: sum {sum}", me(td), td.cpu());
                    (sum % 1000) as i32
                },
            )
            .expect("create a worker");
        println!("  created worker lwp {lid} for cpu {}", i % 2);
    }

    // A running LWP on CPU 1 to suspend and continue: it counts while it
    // runs, and reaches a switch point (yield_now) on every count.
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    let counter = proc
        .create_lwp(td, LwpBuilder::new().cpu(1).name("counter"), move |td| {
            while !s.load(Ordering::Relaxed) {
                c.fetch_add(1, Ordering::Relaxed);
                td.yield_now();
            }
            0
        })
        .expect("create the counter");
    spin_until(td, || count.load(Ordering::Relaxed) > 0);
    proc.suspend(td, counter).expect("suspend the counter");
    spin_until(td, || proc.state(counter) == Some(LwpState::Suspended));
    let frozen = count.load(Ordering::Relaxed);
    td.sleep_for(Duration::from_millis(5)).expect("plain sleep");
    println!(
        "  counter lwp {counter} is {}: count {frozen}, still {} 5 ms later",
        proc.state(counter).expect("not collected"),
        count.load(Ordering::Relaxed)
    );
    proc.resume(counter).expect("continue the counter");
    spin_until(td, || count.load(Ordering::Relaxed) > frozen);
    println!(
        "  counter lwp {counter} continued: counting again ({})",
        count.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);

    // A detached LWP: nobody may wait for it; it is freed when it exits.
    let detached = proc
        .create_lwp(
            td,
            LwpBuilder::new().flags(LwpFlags::DETACHED).name("detached"),
            |td| {
                println!("  detached lwp {} ran", me(td));
                0
            },
        )
        .expect("create the detached LWP");
    match proc.wait(td, Some(detached)) {
        Err(e) => println!("  wait for detached lwp {detached}: {e}"),
        Ok(r) => panic!("waited for a detached LWP: {r:?}"),
    }

    // Collect every LWP that can be collected, in the order they exit.
    loop {
        match proc.wait(td, None) {
            Ok((lid, v)) => println!("  wait(None): lwp {lid} exited with {v}"),
            Err(e @ LwpError::NoSuchLwp { .. }) => {
                println!("  wait(None): nothing left ({})", e.name());
                break;
            }
            Err(e) => panic!("wait(None): {e}"),
        }
    }
    0
}

/// An LWP of the second process: sleeps interruptibly, reporting what
/// interrupts it, until the process is killed.
fn sleeper(td: &mut CurThread) -> i32 {
    let _guard = Unwound(format!("lwp {}", me(td)));
    loop {
        match td.sleep(&NAP, Sleep::default().interruptible().wmesg("nap")) {
            Ok(()) => {}
            Err(e) => {
                println!("    lwp {}: sleep ended: {e}", me(td));
                while let Some(sig) = td.sigtake() {
                    println!("    lwp {} took {sig}", me(td));
                    TAKEN.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let t0 = Instant::now();
    let rt = Runtime::builder().cpus(2).build()?;
    rt.block_on(
        |td| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let p = Proc::spawn(td, workers)?;
            let status = p.join(td)?;
            println!("process {} ended: {status:?}", p.pid());
            if status != ExitStatus::Exited(0) {
                return Err(format!("process {} ended with {status:?}", p.pid()).into());
            }

            // The second process: three LWPs asleep, one per CPU plus the
            // first one.
            let q = Proc::spawn(td, |td| {
                let proc = td.proc().expect("the first LWP has a process");
                for cpu in 0..2 {
                    proc.create_lwp(td, LwpBuilder::new().cpu(cpu).name("sleeper"), sleeper)
                        .expect("create a sleeper");
                }
                sleeper(td)
            })?;
            let asleep = |q: &Proc| {
                let l = q.lwps();
                l.len() == 3 && l.iter().all(|i| i.state == LwpState::Sleep)
            };
            spin_until(td, || asleep(q.proc()));
            println!("process {}:", q.pid());
            for info in q.proc().lwps() {
                println!("  {info}");
            }
            let two = Lid::new(2).expect("2 is a lid");
            println!("  sending SIGUSR1 to lwp {two}");
            q.proc().signal_lwp(two, Signal::USR1)?;
            spin_until(td, || {
                TAKEN.load(Ordering::Relaxed) == 1 && asleep(q.proc())
            });
            println!("  killing process {}", q.pid());
            q.kill();
            let status = q.join(td)?;
            println!("process {} ended: {status:?}", q.pid());
            if status != ExitStatus::Killed(Signal::KILL) {
                return Err(format!("process {} ended with {status:?}", q.pid()).into());
            }
            Ok(())
        },
    )?;
    println!("done in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
