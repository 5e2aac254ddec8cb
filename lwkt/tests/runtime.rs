//! Runtime core: building, spawning, joining, priorities, yielding,
//! panics, shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bounded;
use lwkt::{Error, Priority, Runtime, ThreadBuilder};

#[test]
fn smoke() {
    bounded(30, "smoke", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        assert_eq!(rt.cpus(), 2);
        assert_eq!(rt.block_on(|td| td.cpu()), 0);
        // The runtime is reusable across block_on calls.
        assert_eq!(rt.block_on(|_| 7), 7);
    });
}

#[test]
fn builder_rejects_bad_config_with_clear_errors() {
    let e = Runtime::builder().cpus(0).build().unwrap_err();
    assert!(matches!(e, Error::NoCpus));
    assert!(e.to_string().contains("at least one CPU"), "{e}");

    let e = Runtime::builder().stack_size(1024).build().unwrap_err();
    assert!(
        matches!(
            e,
            Error::StackTooSmall {
                requested: 1024,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("below the minimum"), "{e}");

    let e = Runtime::builder().hz(0).build().unwrap_err();
    assert!(matches!(e, Error::InvalidHz(0)), "{e}");

    let e = Runtime::builder()
        .cpus(lwkt::MAX_CPUS + 1)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::TooManyCpus { .. }), "{e}");
}

#[test]
fn more_cpus_than_cores_is_allowed() {
    bounded(30, "oversubscribed", || {
        let rt = Runtime::builder().cpus(8).build().unwrap();
        let sum = rt.block_on(|td| {
            let hs: Vec<_> = (0..8)
                .map(|c| {
                    ThreadBuilder::new()
                        .cpu(c)
                        .spawn(td, |td| td.cpu())
                        .unwrap()
                })
                .collect();
            hs.into_iter().map(|h| h.join(td).unwrap()).sum::<usize>()
        });
        assert_eq!(sum, (0..8).sum::<usize>());
    });
}

#[test]
fn spawn_on_every_cpu_and_join_from_another_cpu() {
    bounded(30, "spawn on every cpu", || {
        let rt = Runtime::builder().cpus(4).build().unwrap();
        rt.block_on(|td| {
            // Threads on every CPU, each joined by a joiner on a different CPU.
            let n = td.ncpus();
            let mut joiners = Vec::new();
            for c in 0..n {
                let worker = ThreadBuilder::new()
                    .cpu(c)
                    .name(format!("w{c}"))
                    .spawn(td, move |td| {
                        assert_eq!(td.name(), Some(format!("w{c}").as_str()));
                        td.sleep_for(Duration::from_millis(2)).unwrap();
                        (td.cpu(), td.id())
                    })
                    .unwrap();
                let other = (c + 1) % n;
                joiners.push(
                    ThreadBuilder::new()
                        .cpu(other)
                        .spawn(td, move |td| {
                            let (ran_on, _id) = worker.join(td).unwrap();
                            (ran_on, td.cpu())
                        })
                        .unwrap(),
                );
            }
            for (c, j) in joiners.into_iter().enumerate() {
                let (ran_on, joined_on) = j.join(td).unwrap();
                assert_eq!(ran_on, c);
                assert_eq!(joined_on, (c + 1) % n);
                assert_ne!(ran_on, joined_on);
            }
        });
    });
}

#[test]
fn invalid_cpu_is_an_error() {
    let rt = Runtime::builder().cpus(2).build().unwrap();
    let e = rt.block_on(|td| ThreadBuilder::new().cpu(5).spawn(td, |_| ()).unwrap_err());
    assert!(matches!(e, Error::InvalidCpu { cpu: 5, ncpus: 2 }), "{e}");
}

/// Records the order in which threads run.
fn log() -> Arc<Mutex<Vec<&'static str>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[test]
fn higher_priority_runs_first() {
    bounded(30, "priority order", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let order = log();
        let o = order.clone();
        rt.block_on(move |td| {
            td.set_priority(Priority::MAX);
            let mut hs = Vec::new();
            for (p, name) in [
                (Priority::USER_NORM, "user"),
                (Priority::INT_HIGH, "int"),
                (Priority::KERN_DAEMON, "daemon"),
                (Priority::SOFT_TIMER, "soft"),
            ] {
                let o = o.clone();
                hs.push(
                    ThreadBuilder::new()
                        .priority(p)
                        .spawn(td, move |td| {
                            assert_eq!(td.priority(), p);
                            o.lock().unwrap().push(name)
                        })
                        .unwrap(),
                );
            }
            // Drop below all of them: they run, highest first.
            td.set_priority(Priority::IDLE_WORK);
            td.yield_now();
            for h in hs {
                h.join(td).unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), ["int", "soft", "daemon", "user"]);
    });
}

#[test]
fn yield_now_round_robins_equal_priority() {
    bounded(30, "round robin", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let order = log();
        let o = order.clone();
        rt.block_on(move |td| {
            let hs: Vec<_> = ["a", "b", "c"]
                .into_iter()
                .map(|name| {
                    let o = o.clone();
                    td.spawn(move |td| {
                        for _ in 0..3 {
                            o.lock().unwrap().push(name);
                            td.yield_now();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
        });
        assert_eq!(
            *order.lock().unwrap(),
            ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
        );
    });
}

/// A yielding thread keeps its place in line while its peers run on its
/// behalf: a thread they make runnable meanwhile queues behind it.
#[test]
fn yield_order_holds_for_threads_queued_while_yielding() {
    bounded(30, "yield order", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let order = log();
        let o = order.clone();
        rt.block_on(move |td| {
            let oa = o.clone();
            let a = td.spawn(move |td| {
                oa.lock().unwrap().push("a1");
                let oc = oa.clone();
                // c is queued while m stands in line: it must run after m.
                drop(td.spawn(move |td| {
                    oc.lock().unwrap().push("c1");
                    td.yield_now();
                    oc.lock().unwrap().push("c2");
                }));
                td.yield_now();
                oa.lock().unwrap().push("a2");
            });
            o.lock().unwrap().push("m1");
            td.yield_now();
            o.lock().unwrap().push("m2");
            td.yield_now();
            o.lock().unwrap().push("m3");
            a.join(td).unwrap();
            td.yield_now();
            o.lock().unwrap().push("m4");
        });
        assert_eq!(
            *order.lock().unwrap(),
            ["m1", "a1", "m2", "c1", "a2", "m3", "c2", "m4"]
        );
    });
}

/// Two threads: each yield hands the CPU to the other, although the
/// yielding one runs its peer itself and is never linked on the run queue.
#[test]
fn yield_alternates_between_two_threads() {
    bounded(30, "yield two", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let order = log();
        let o = order.clone();
        rt.block_on(move |td| {
            let oa = o.clone();
            let a = td.spawn(move |td| {
                for name in ["a1", "a2", "a3"] {
                    oa.lock().unwrap().push(name);
                    td.yield_now();
                }
            });
            for name in ["m1", "m2", "m3"] {
                o.lock().unwrap().push(name);
                td.yield_now();
            }
            a.join(td).unwrap();
        });
        assert_eq!(*order.lock().unwrap(), ["m1", "a1", "m2", "a2", "m3", "a3"]);
    });
}

/// A deschedule that arrives while a thread yields (its peers running on
/// its behalf) parks it when its turn comes, until a schedule.
#[test]
fn deschedule_during_a_yield_parks_at_the_turn() {
    bounded(30, "deschedule in yield", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let order = log();
        let o = order.clone();
        rt.block_on(move |td| {
            let me = td.thread_ref();
            let ob = o.clone();
            let b = td.spawn(move |td| {
                ob.lock().unwrap().push("b1");
                me.deschedule();
                // Back to m, whose turn it is: it parks instead of running.
                td.yield_now();
                ob.lock().unwrap().push("b2");
                me.schedule();
            });
            o.lock().unwrap().push("m1");
            td.yield_now();
            o.lock().unwrap().push("m2");
            b.join(td).unwrap();
        });
        assert_eq!(*order.lock().unwrap(), ["m1", "b1", "b2", "m2"]);
    });
}

#[test]
fn yield_now_never_runs_lower_priority() {
    bounded(30, "yield lower", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        rt.block_on(move |td| {
            let h = ThreadBuilder::new()
                .priority(Priority::USER_NORM)
                .spawn(td, move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            for _ in 0..100 {
                td.yield_now();
                td.maybe_yield();
            }
            assert_eq!(
                ran.load(Ordering::SeqCst),
                0,
                "a lower-priority thread ran on yield"
            );
            h.join(td).unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        });
    });
}

#[test]
fn maybe_yield_switches_for_higher_priority_and_on_clock_ticks() {
    bounded(30, "maybe_yield", || {
        // A 50 ms tick: long enough that no tick passes between this
        // thread's switch-in and its first maybe_yield below, even under
        // valgrind; short enough to keep the test quick.
        let rt = Runtime::builder().cpus(1).hz(20).build().unwrap();
        rt.block_on(|td| {
            // A higher-priority thread became runnable: maybe_yield runs it.
            let flag = Arc::new(AtomicUsize::new(0));
            let f = flag.clone();
            let h = ThreadBuilder::new()
                .priority(Priority::SOFT_NORM)
                .spawn(td, move |_| f.store(1, Ordering::SeqCst))
                .unwrap();
            td.maybe_yield();
            assert_eq!(flag.load(Ordering::SeqCst), 1);
            h.join(td).unwrap();

            // An equal-priority peer: maybe_yield switches only once the
            // clock ticks, so a busy loop calling it lets the peer run.
            let f = flag.clone();
            let peer = td.spawn(move |_| f.store(2, Ordering::SeqCst));
            let start = std::time::Instant::now();
            let mut calls = 0u64;
            while flag.load(Ordering::SeqCst) != 2 {
                td.maybe_yield();
                calls += 1;
                assert!(start.elapsed() < Duration::from_secs(10), "peer never ran");
            }
            assert!(
                calls > 1,
                "maybe_yield switched without a tick or higher priority"
            );
            peer.join(td).unwrap();
        });
    });
}

#[test]
fn panic_is_isolated_and_message_kept() {
    bounded(30, "panic isolation", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let h = td.spawn(|_| -> u32 { panic!("boom {}", 42) });
            let e = h.join(td).unwrap_err();
            assert_eq!(e.message(), "boom 42");
            assert!(e.to_string().contains("boom 42"));
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, |_| -> () { panic!("static str") })
                .unwrap();
            assert_eq!(h.join(td).unwrap_err().message(), "static str");
            // The CPUs go on.
            let h = ThreadBuilder::new().cpu(1).spawn(td, |_| 5).unwrap();
            assert_eq!(h.join(td).unwrap(), 5);
        });
    });
}

#[test]
fn block_on_panic_propagates_to_caller() {
    let rt = Runtime::builder().cpus(1).build().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|_| -> () { panic!("main thread failed") })
    }));
    // The payload comes back as thrown: a `&str` for a literal message,
    // a `String` for a formatted one.
    let p = r.unwrap_err();
    let msg = p.downcast_ref::<&str>().copied().unwrap();
    assert!(msg.contains("main thread failed"), "{msg}");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|_| -> () { panic!("failed with {}", std::hint::black_box(42)) })
    }));
    let p = r.unwrap_err();
    assert_eq!(p.downcast_ref::<String>().unwrap(), "failed with 42");
    // And the runtime still works.
    assert_eq!(rt.block_on(|_| 1), 1);
}

struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_runtime_cancels_sleepers_and_runs_destructors() {
    bounded(30, "drop with sleepers", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let asleep = Arc::new(AtomicUsize::new(0));
        let ran_unstarted = Arc::new(AtomicUsize::new(0));
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let (d, a, r) = (drops.clone(), asleep.clone(), ran_unstarted.clone());
        let n = rt.block_on(move |td| {
            let mut n = 0;
            for c in 0..2 {
                for _ in 0..50 {
                    let guard = DropCounter(d.clone());
                    let a = a.clone();
                    // Detached threads sleeping forever, each with a value on its stack.
                    let _ = ThreadBuilder::new()
                        .cpu(c)
                        .spawn(td, move |td| {
                            let _g = guard;
                            let chan = 0u8;
                            a.fetch_add(1, Ordering::SeqCst);
                            loop {
                                let _ = td.sleep(&chan, lwkt::Sleep::default());
                            }
                        })
                        .unwrap();
                    n += 1;
                }
            }
            while a.load(Ordering::SeqCst) < 100 {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            // CPU 1: a high-priority thread that only polls maybe_yield,
            // and behind it threads that never get to start.
            let _ = ThreadBuilder::new()
                .cpu(1)
                .priority(Priority::INT_HIGH)
                .spawn(td, |td| loop {
                    td.maybe_yield();
                    std::hint::spin_loop();
                })
                .unwrap();
            for _ in 0..10 {
                let guard = DropCounter(d.clone());
                let r = r.clone();
                let _ = ThreadBuilder::new()
                    .cpu(1)
                    .spawn(td, move |_| {
                        r.fetch_add(1, Ordering::SeqCst);
                        drop(guard)
                    })
                    .unwrap();
            }
            n + 10
        });
        let alive = rt.stats().total.threads_alive;
        assert!(
            alive >= 100,
            "expected the sleepers alive, stats say {alive}"
        );
        drop(rt);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            n,
            "every thread's destructors ran"
        );
        assert_eq!(
            ran_unstarted.load(Ordering::SeqCst),
            0,
            "cancelled threads must not start"
        );
    });
}

#[test]
fn dropping_runtime_fails_pending_joins_instead_of_hanging() {
    bounded(30, "drop with OS joiner", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let h = rt
            .handle()
            .spawn(|td| {
                let c = 0u8;
                loop {
                    let _ = td.sleep(&c, lwkt::Sleep::default());
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        let e = h.join_blocking().unwrap_err();
        assert!(e.message().contains("cancelled"), "{e}");
    });
}

#[test]
fn spawn_and_join_from_plain_os_thread() {
    bounded(30, "os thread spawn", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let handle = rt.handle();
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let h = handle.clone();
                std::thread::spawn(move || {
                    h.spawn(move |td| (i, td.cpu())).unwrap().join_blocking()
                })
            })
            .collect();
        let mut cpus = std::collections::BTreeSet::new();
        for (i, h) in hs.into_iter().enumerate() {
            let (v, cpu) = h.join().unwrap().unwrap();
            assert_eq!(v, i);
            cpus.insert(cpu);
        }
        assert_eq!(
            cpus.len(),
            2,
            "round-robin spawn from outside used both CPUs"
        );
        drop(rt);
        assert!(matches!(handle.spawn(|_| ()), Err(Error::Shutdown)));
    });
}

#[test]
fn oversized_stack_is_an_err_not_a_failed_mapping() {
    bounded(30, "oversized stack", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            // 2^50 bytes: above MAX_STACK_SIZE, refused before any mapping.
            let e = ThreadBuilder::new()
                .stack_size(1 << 50)
                .spawn(td, |_| ())
                .unwrap_err();
            assert!(matches!(e, Error::StackTooLarge { .. }), "{e}");
            assert!(e.to_string().contains("above the maximum"), "{e}");
            // Still usable.
            td.spawn(|_| ()).join(td).unwrap();
        });
        let e = ThreadBuilder::new()
            .stack_size(1 << 50)
            .spawn_from(&rt.handle(), |_| ())
            .unwrap_err();
        assert!(matches!(e, Error::StackTooLarge { .. }), "{e}");
    });
}

#[test]
fn thread_structures_and_stacks_are_reused() {
    bounded(60, "reuse", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            for _ in 0..20_000 {
                td.spawn(|_| ()).join(td).unwrap();
            }
        });
        let s = rt.stats();
        assert_eq!(s.total.threads_spawned, 20_001);
        // The main thread publishes its result just before it retires.
        let t0 = std::time::Instant::now();
        while rt.stats().total.threads_alive != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "threads never retired"
            );
            std::thread::yield_now();
        }
        // 20,000 fresh stacks would be 20,000 mmap/munmap pairs; with the
        // cache the map count stays flat. Check the process did not grow.
        let maps = lwkt::current_map_count().unwrap_or(0);
        assert!(
            maps < 5_000,
            "mappings grew to {maps}: stacks are not reused"
        );
    });
}

#[test]
fn stats_count_switches_and_ipis() {
    bounded(30, "stats", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            for _ in 0..100 {
                // The short sleep guarantees a wakeup per thread (its
                // timeout), whatever the race between join and exit.
                ThreadBuilder::new()
                    .cpu(1)
                    .spawn(td, |td| td.sleep_for(Duration::from_micros(100)))
                    .unwrap()
                    .join(td)
                    .unwrap()
                    .unwrap();
            }
        });
        let s = rt.stats();
        assert_eq!(s.per_cpu.len(), 2);
        assert!(s.total.switches >= 200, "{:?}", s.total);
        assert!(s.per_cpu[1].ipis_processed >= 100, "{:?}", s.per_cpu[1]);
        assert!(
            s.total.ipis_sent + s.total.ipis_avoided >= 200,
            "{:?}",
            s.total
        );
        assert!(s.total.wakeups >= 100, "{:?}", s.total);
    });
}
