//! What a thread that only calls `maybe_yield` must still let happen on
//! its CPU: its timers fire, its sockets are served, messages from other
//! CPUs are carried out, and an upper layer's requests (LWP suspend) reach
//! it at its switch points. (Higher-priority threads and clock ticks:
//! `runtime.rs`, `maybe_yield_switches_for_higher_priority_and_on_clock_ticks`.)
//!
//! The fast path of `maybe_yield` skips each of these unless its own test
//! says so; these tests fail when one of those tests is dropped. They count
//! calls, never time: the clock runs at 1 Hz, so a tick (whose slow path
//! would serve everything at once) almost never falls inside the counted
//! calls.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bounded, yield_until};
use lwkt::lwp::{ExitStatus, LwpBuilder, LwpState, Proc};
use lwkt::net::TcpStream;
use lwkt::{CurThread, Priority, Runtime, Sleep, ThreadBuilder};

/// `TIMER_POLL` in `sched/switch.rs`: a busy CPU looks at its timers and
/// polled fds at least once every this many `maybe_yield` calls.
const TIMER_POLL: u64 = 64;

/// Spins for `d` without any scheduling call.
fn spin_for(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Calls `maybe_yield` until `done`, returning how many calls it took;
/// panics past `limit` calls.
fn maybe_yield_until(td: &mut CurThread, done: &AtomicBool, limit: u64, what: &str) -> u64 {
    let mut calls = 0;
    while !done.load(Ordering::Acquire) {
        td.maybe_yield();
        calls += 1;
        assert!(
            calls <= limit,
            "{what}: still not done after {calls} maybe_yield calls"
        );
    }
    calls
}

/// A due timer on a CPU whose running thread only calls `maybe_yield`
/// fires within `TIMER_POLL` calls, and its sleeper (of higher priority)
/// runs.
#[test]
fn a_busy_thread_calling_maybe_yield_lets_due_timers_fire() {
    bounded(30, "timer while maybe_yield", || {
        let rt = Runtime::builder().cpus(1).hz(1).build().unwrap();
        rt.block_on(|td| {
            let (armed, woke) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let (a, w) = (armed.clone(), woke.clone());
            let sleeper = ThreadBuilder::new()
                .priority(Priority::SOFT_NORM)
                .spawn(td, move |td| {
                    a.store(true, Ordering::Release);
                    td.sleep_for(Duration::from_millis(1)).unwrap();
                    w.store(true, Ordering::Release);
                })
                .unwrap();
            // The sleeper runs (it has the higher priority) and sleeps.
            while !armed.load(Ordering::Acquire) {
                td.yield_now();
            }
            // Its timer is due well before the counted calls.
            spin_for(Duration::from_millis(20));
            let calls = maybe_yield_until(td, &woke, TIMER_POLL, "the due timer");
            assert!(calls >= 1);
            sleeper.join(td).unwrap();
        });
    });
}

/// Data arriving for a reader on a CPU whose running thread only calls
/// `maybe_yield` wakes the reader within `TIMER_POLL` calls.
#[test]
fn a_busy_thread_calling_maybe_yield_lets_sockets_be_served() {
    bounded(30, "socket while maybe_yield", || {
        let rt = Runtime::builder().cpus(1).hz(1).build().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let (go, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (g, wr) = (go.clone(), written.clone());
        let writer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            while !g.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            s.write_all(b"data").unwrap();
            wr.store(true, Ordering::Release);
            s
        });
        rt.block_on(move |td| {
            let c = TcpStream::connect(td, addr).unwrap();
            let (reading, got) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let (r, gt) = (reading.clone(), got.clone());
            let reader = ThreadBuilder::new()
                .priority(Priority::SOFT_NORM)
                .spawn(td, move |td| {
                    r.store(true, Ordering::Release);
                    let mut b = [0u8; 4];
                    c.io(td).read_exact(&mut b).unwrap();
                    assert_eq!(&b, b"data");
                    gt.store(true, Ordering::Release);
                })
                .unwrap();
            // The reader runs (higher priority) and blocks in its read.
            while !reading.load(Ordering::Acquire) {
                td.yield_now();
            }
            go.store(true, Ordering::Release);
            while !written.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            // Loopback delivery is done long before the counted calls.
            spin_for(Duration::from_millis(20));
            maybe_yield_until(td, &got, TIMER_POLL, "the socket read");
            reader.join(td).unwrap();
        });
        drop(writer.join().unwrap());
    });
}

/// A wakeup sent by another CPU to a CPU whose running thread only calls
/// `maybe_yield` is carried out at that thread's next call: the message
/// sets the target's attention word before `wakeup` returns.
#[test]
fn a_busy_thread_calling_maybe_yield_sees_messages_at_once() {
    static CHAN: u8 = 0;
    bounded(30, "ipi while maybe_yield", || {
        let rt = Runtime::builder().cpus(2).hz(1).build().unwrap();
        rt.block_on(|td| {
            let flags: [Arc<AtomicBool>; 4] = Default::default();
            let [started, ready, sent, woke] = flags.clone();
            let sleeper = ThreadBuilder::new()
                .cpu(1)
                .priority(Priority::SOFT_NORM)
                .spawn(td, move |td| {
                    started.store(true, Ordering::Release);
                    td.sleep(&CHAN, Sleep::default()).unwrap();
                    woke.store(true, Ordering::Release);
                })
                .unwrap();
            while !flags[0].load(Ordering::Acquire) {
                td.yield_now();
            }
            // Lower priority, so it starts only once the sleeper sleeps.
            let [_, _, s, w] = flags.clone();
            let busy = ThreadBuilder::new()
                .cpu(1)
                .priority(Priority::USER_NORM)
                .spawn(td, move |td| {
                    ready.store(true, Ordering::Release);
                    while !s.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    maybe_yield_until(td, &w, 2, "the remote wakeup")
                })
                .unwrap();
            while !flags[1].load(Ordering::Acquire) {
                td.yield_now();
            }
            lwkt::wakeup(&CHAN);
            sent.store(true, Ordering::Release);
            assert_eq!(busy.join(td).unwrap(), 1, "switched at the first call");
            sleeper.join(td).unwrap();
        });
    });
}

/// An LWP that only calls `maybe_yield` stops when suspended (the request
/// reaches it at `maybe_yield`'s switch point) and goes on when resumed.
#[test]
fn an_lwp_calling_only_maybe_yield_can_be_suspended() {
    let st = bounded(30, "suspend while maybe_yield", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let h = Proc::spawn_from(&rt.handle(), |td| {
            let p = td.proc().unwrap();
            let (running, stop) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let (r, s) = (running.clone(), stop.clone());
            let a = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    r.store(true, Ordering::Release);
                    while !s.load(Ordering::Acquire) {
                        td.maybe_yield();
                    }
                    0
                })
                .unwrap();
            yield_until(td, "the LWP running", || running.load(Ordering::Acquire));
            p.suspend(td, a).unwrap();
            yield_until(td, "the suspension", || {
                p.state(a) == Some(LwpState::Suspended)
            });
            p.resume(a).unwrap();
            stop.store(true, Ordering::Release);
            p.wait(td, Some(a)).unwrap();
            0
        })
        .unwrap();
        h.join_blocking()
    });
    assert_eq!(st, ExitStatus::Exited(0));
}

/// A request that reaches a thread while it is off the CPU, and that it
/// comes back from without a switch point (here: preempted inside
/// `wakeup` by an interrupt thread that suspends it), is seen at its
/// very next `maybe_yield`, not `TIMER_POLL` calls later.
#[test]
fn a_request_made_while_preempted_is_seen_at_the_next_maybe_yield() {
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    static CHAN: u8 = 0;
    let st = bounded(30, "suspend while preempted", || {
        let rt = Runtime::builder().cpus(2).hz(1).build().unwrap();
        let h = Proc::spawn_from(&rt.handle(), |td| {
            let p = td.proc().unwrap();
            let target = Arc::new(Mutex::new(None));
            let (b_ready, stop) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let after = Arc::new(AtomicU64::new(u64::MAX));
            let (tg, br) = (target.clone(), b_ready.clone());
            // B: an interrupt thread (so A's wakeup preempts A for it)
            // that sleeps until that wakeup, then suspends A.
            let pb = p.clone();
            let b = ThreadBuilder::new()
                .cpu(1)
                .priority(Priority::INT_HIGH)
                .interrupt()
                .spawn(td, move |td| {
                    br.store(true, Ordering::Release);
                    td.sleep(&CHAN, Sleep::default()).unwrap();
                    let a = tg.lock().unwrap().expect("A's lid");
                    pb.suspend(td, a).unwrap();
                })
                .unwrap();
            yield_until(td, "B to start", || b_ready.load(Ordering::Acquire));
            // A: lower priority on the same CPU, so it starts once B sleeps.
            let (s, af, tg) = (stop.clone(), after.clone(), target.clone());
            let a = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    // B needs our lid.
                    while tg.lock().unwrap().is_none() {
                        std::hint::spin_loop();
                    }
                    // Whatever started us is looked at and done with (the
                    // CPU leaves the attention bits of the messages that
                    // woke it set for one more pass), and the CPU's
                    // countdown (1 when it starts) starts again: the next
                    // calls are left to the request alone.
                    td.yield_now();
                    td.maybe_yield();
                    td.maybe_yield();
                    lwkt::wakeup(&CHAN); // B runs and suspends us in here
                    let mut n = 0;
                    while !s.load(Ordering::Acquire) {
                        td.maybe_yield();
                        af.store(n, Ordering::Release);
                        n += 1;
                    }
                    0
                })
                .unwrap();
            *target.lock().unwrap() = Some(a);
            yield_until(td, "the suspension", || {
                p.state(a) == Some(LwpState::Suspended)
            });
            assert_eq!(
                after.load(Ordering::Acquire),
                u64::MAX,
                "the suspension waited for later maybe_yield calls"
            );
            p.resume(a).unwrap();
            stop.store(true, Ordering::Release);
            p.wait(td, Some(a)).unwrap();
            b.join(td).unwrap();
            0
        })
        .unwrap();
        h.join_blocking()
    });
    assert_eq!(st, ExitStatus::Exited(0));
}
