//! Sleep and wakeup: channels, interlock, timeouts, wakeup_one, interrupts,
//! cross-CPU and from plain OS threads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::{CurThread, Runtime, Sleep, SleepError, ThreadBuilder};

/// Waits until `pred()` holds, sleeping on `chan` with the interlock, so a
/// wakeup between the check and the sleep is never lost. No timeout: a
/// lost wakeup hangs and the bounded() watchdog fails the test.
fn wait_until(td: &mut CurThread, chan: &AtomicU64, pred: impl Fn(u64) -> bool) {
    loop {
        if pred(chan.load(Ordering::SeqCst)) {
            return;
        }
        td.sleep_interlock(chan);
        if pred(chan.load(Ordering::SeqCst)) {
            td.sleep_remove();
            return;
        }
        td.sleep(chan, Sleep::default().wmesg("pingpong")).unwrap();
    }
}

#[test]
fn smoke() {
    bounded(30, "sleep smoke", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let flag = Arc::new(AtomicU64::new(0));
            let f = flag.clone();
            let h = td.spawn(move |td| {
                wait_until(td, &f, |v| v == 1);
                7
            });
            td.yield_now(); // let it go to sleep
            flag.store(1, Ordering::SeqCst);
            lwkt::wakeup(&*flag);
            assert_eq!(h.join(td).unwrap(), 7);
        });
    });
}

#[test]
fn cross_cpu_pingpong_100k_cycles_no_lost_wakeups() {
    const CYCLES: u64 = 100_000;
    bounded(120, "cross-cpu pingpong", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let seq = Arc::new(AtomicU64::new(0));
            let s = seq.clone();
            let b = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    for i in 0..CYCLES {
                        wait_until(td, &s, |v| v == 2 * i + 1);
                        s.store(2 * i + 2, Ordering::SeqCst);
                        lwkt::wakeup(&*s);
                    }
                })
                .unwrap();
            for i in 0..CYCLES {
                wait_until(td, &seq, |v| v == 2 * i);
                seq.store(2 * i + 1, Ordering::SeqCst);
                lwkt::wakeup(&*seq);
            }
            b.join(td).unwrap();
            assert_eq!(seq.load(Ordering::SeqCst), 2 * CYCLES);
        });
        let s = rt.stats();
        assert!(
            s.per_cpu[0].ipis_processed > 0 && s.per_cpu[1].ipis_processed > 0,
            "{s:?}"
        );
    });
}

#[test]
fn wakeup_racing_the_interlocked_sleep_is_not_lost() {
    // The waker fires at every possible moment relative to the sleeper's
    // interlock/check/sleep sequence; a lost wakeup hangs (watchdog).
    bounded(120, "interlock race", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            const ROUNDS: u64 = 20_000;
            let seq = Arc::new(AtomicU64::new(0));
            let s = seq.clone();
            let waker = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let mut spin = 0u32;
                    for i in 1..=ROUNDS {
                        // Vary the delay so the wakeup lands before, between
                        // and after the sleeper's interlock and sleep.
                        spin = (spin * 7 + 3) % 200;
                        for _ in 0..spin {
                            std::hint::spin_loop();
                        }
                        s.store(i, Ordering::SeqCst);
                        lwkt::wakeup(&*s);
                        wait_until(td, &s, |v| v == i + ROUNDS * 10);
                    }
                })
                .unwrap();
            for i in 1..=ROUNDS {
                wait_until(td, &seq, |v| v == i);
                seq.store(i + ROUNDS * 10, Ordering::SeqCst);
                lwkt::wakeup(&*seq);
            }
            waker.join(td).unwrap();
        });
    });
}

#[test]
fn interlocked_wakeup_before_sleep_returns_immediately() {
    bounded(30, "interlock same cpu", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let chan = 5u32;
            td.sleep_interlock(&chan);
            lwkt::wakeup(&chan); // arrives between interlock and sleep
            let t0 = Instant::now();
            td.sleep(&chan, Sleep::default().timeout(Duration::from_secs(5)))
                .unwrap();
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "the early wakeup was lost"
            );
        });
    });
}

#[test]
fn timeouts_return_timed_out() {
    bounded(30, "timeouts", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let chan = 0u8;
            let t0 = Instant::now();
            let r = td.sleep(&chan, Sleep::default().timeout(Duration::from_millis(20)));
            let el = t0.elapsed();
            assert_eq!(r, Err(SleepError::TimedOut));
            assert!(el >= Duration::from_millis(20), "woke early: {el:?}");
            assert!(el < Duration::from_secs(5), "woke very late: {el:?}");

            // Many threads with staggered timeouts on both CPUs all time out,
            // none sooner than asked.
            let hs: Vec<_> = (0..40u64)
                .map(|i| {
                    ThreadBuilder::new()
                        .cpu((i % 2) as usize)
                        .spawn(td, move |td| {
                            let c = 0u8;
                            let d = Duration::from_millis(1 + i % 7);
                            let t0 = Instant::now();
                            let r = td.sleep(&c, Sleep::default().timeout(d));
                            (r, t0.elapsed() >= d)
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                let (r, late_enough) = h.join(td).unwrap();
                assert_eq!(r, Err(SleepError::TimedOut));
                assert!(late_enough);
            }

            // A wakeup before the timeout wins, and the stale timer does
            // not disturb a later sleep.
            let flag = Arc::new(AtomicU64::new(0));
            let f = flag.clone();
            let h = td.spawn(move |td| {
                let r1 = td.sleep(&*f, Sleep::default().timeout(Duration::from_millis(30)));
                let t0 = Instant::now();
                let c = 1u8;
                let r2 = td.sleep(&c, Sleep::default().timeout(Duration::from_millis(60)));
                (r1, r2, t0.elapsed())
            });
            td.yield_now();
            lwkt::wakeup(&*flag);
            let (r1, r2, el) = h.join(td).unwrap();
            assert_eq!(r1, Ok(()));
            assert_eq!(r2, Err(SleepError::TimedOut));
            assert!(
                el >= Duration::from_millis(60),
                "stale timer cut the second sleep short: {el:?}"
            );

            let t0 = Instant::now();
            td.sleep_for(Duration::from_millis(15)).unwrap();
            assert!(t0.elapsed() >= Duration::from_millis(15));
        });
    });
}

#[test]
fn wakeup_one_wakes_exactly_one() {
    bounded(60, "wakeup_one", || {
        let rt = Runtime::builder().cpus(3).build().unwrap();
        rt.block_on(|td| {
            let chan = Arc::new(AtomicUsize::new(0)); // counts woken sleepers
            let asleep = Arc::new(AtomicUsize::new(0));
            let n = 12;
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let (c, a) = (chan.clone(), asleep.clone());
                    ThreadBuilder::new()
                        .cpu(i % 3)
                        .spawn(td, move |td| {
                            td.sleep_interlock(&*c);
                            a.fetch_add(1, Ordering::SeqCst);
                            td.sleep(&*c, Sleep::default()).unwrap();
                            c.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap()
                })
                .collect();
            while asleep.load(Ordering::SeqCst) < n {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            for expect in 1..=4 {
                lwkt::wakeup_one(&*chan);
                let t0 = Instant::now();
                while chan.load(Ordering::SeqCst) < expect {
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "wakeup_one woke nobody"
                    );
                    td.sleep_for(Duration::from_millis(1)).unwrap();
                }
                // Give any extra wakeups time to show.
                td.sleep_for(Duration::from_millis(20)).unwrap();
                assert_eq!(
                    chan.load(Ordering::SeqCst),
                    expect,
                    "wakeup_one woke more than one"
                );
            }
            lwkt::wakeup(&*chan);
            for h in hs {
                h.join(td).unwrap();
            }
            assert_eq!(chan.load(Ordering::SeqCst), n);
        });
    });
}

#[test]
fn wakeup_one_from_os_thread_reaches_a_remote_cpu() {
    bounded(30, "wakeup_one external", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let chan = Arc::new(AtomicUsize::new(0));
        let c = chan.clone();
        let h = ThreadBuilder::new()
            .cpu(1)
            .spawn_from(&rt.handle(), move |td| {
                td.sleep_interlock(&*c);
                c.store(1, Ordering::SeqCst);
                td.sleep(&*c, Sleep::default()).unwrap();
            })
            .unwrap();
        while chan.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        lwkt::wakeup_one(&*chan);
        h.join_blocking().unwrap();
    });
}

#[test]
fn plain_os_threads_wake_sleepers_on_every_cpu() {
    bounded(60, "os wakeups", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let seq = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let s = seq.clone();
                ThreadBuilder::new()
                    .cpu(i % 2)
                    .spawn_from(&rt.handle(), move |td| {
                        for round in 1..=200 {
                            wait_until(td, &s, |v| v >= round);
                        }
                    })
                    .unwrap()
            })
            .collect();
        for round in 1..=200 {
            std::thread::sleep(Duration::from_micros(50));
            seq.store(round, Ordering::SeqCst);
            if round % 2 == 0 {
                lwkt::wakeup(&*seq);
            } else {
                rt.handle().wakeup(&*seq);
            }
        }
        for h in hs {
            h.join_blocking().unwrap();
        }
    });
}

#[test]
fn interruptible_sleep_is_interrupted_and_plain_sleep_is_not() {
    bounded(30, "interrupt", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let ready = Arc::new(AtomicBool::new(false));
            let r = ready.clone();
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let c = 0u8;
                    r.store(true, Ordering::SeqCst);
                    td.sleep(&c, Sleep::default().interruptible().wmesg("intr"))
                })
                .unwrap();
            while !ready.load(Ordering::SeqCst) {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            td.sleep_for(Duration::from_millis(5)).unwrap();
            h.interrupt();
            assert_eq!(h.join(td).unwrap(), Err(SleepError::Interrupted));

            // Not interruptible: the interrupt stays pending and ends the
            // next interruptible sleep instead.
            let h = td.spawn(|td| {
                let c = 0u8;
                let first = td.sleep(&c, Sleep::default().timeout(Duration::from_millis(30)));
                let second = td.sleep(&c, Sleep::default().interruptible());
                (first, second)
            });
            td.yield_now();
            h.interrupt();
            assert_eq!(
                h.join(td).unwrap(),
                (Err(SleepError::TimedOut), Err(SleepError::Interrupted))
            );
        });
    });
}

#[test]
fn many_threads_sleep_and_all_wake() {
    bounded(60, "many sleepers", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let gate = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..5_000)
                .map(|i| {
                    let g = gate.clone();
                    ThreadBuilder::new()
                        .cpu(i % 2)
                        .spawn(td, move |td| wait_until(td, &g, |v| v == 1))
                        .unwrap()
                })
                .collect();
            td.sleep_for(Duration::from_millis(10)).unwrap();
            gate.store(1, Ordering::SeqCst);
            lwkt::wakeup(&*gate);
            for h in hs {
                h.join(td).unwrap();
            }
        });
    });
}
