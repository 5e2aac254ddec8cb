//! Critical sections, preemption, explicit scheduling and migration.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::{Error, Priority, Runtime, ThreadBuilder, ThreadInfo, ThreadState, Token};

type Log = Arc<Mutex<Vec<&'static str>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(l: &Log, e: &'static str) {
    l.lock().unwrap().push(e);
}

fn events(l: &Log) -> Vec<&'static str> {
    l.lock().unwrap().clone()
}

#[test]
fn smoke() {
    bounded(30, "crit smoke", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            assert_eq!(td.crit_count(), 0);
            let a = td.crit_enter();
            let b = td.crit_enter();
            assert_eq!(td.crit_count(), 2);
            drop(b);
            assert_eq!(td.crit_count(), 1);
            // Blocking inside a critical section is allowed.
            td.sleep_for(Duration::from_millis(1)).unwrap();
            drop(a);
            assert_eq!(td.crit_count(), 0);
        });
    });
}

/// An interrupt thread on CPU 0 that logs "irq" each time it is scheduled,
/// then parks. Returns its reference once it parked the first time.
fn irq_thread(td: &mut lwkt::CurThread, l: &Log, pri: Priority) -> lwkt::JoinHandle<()> {
    let l2 = l.clone();
    let h = ThreadBuilder::new()
        .interrupt()
        .priority(pri)
        .name("irq")
        .spawn(td, move |td| loop {
            td.park();
            push(&l2, "irq");
        })
        .unwrap();
    // Spawning it preempted us; it ran to its first park before spawn returned.
    h
}

#[test]
fn interrupt_thread_runs_before_schedule_returns() {
    bounded(30, "preempt on schedule", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let h = irq_thread(td, &l2, Priority::INT_MED);
            let r = h.thread();
            push(&l2, "before");
            r.schedule();
            push(&l2, "after");
            // Spawning an interrupt thread also preempts at once.
            let l3 = l2.clone();
            push(&l2, "spawn-before");
            let _s = ThreadBuilder::new()
                .interrupt()
                .spawn(td, move |_| push(&l3, "spawned"))
                .unwrap();
            push(&l2, "spawn-after");
        });
        assert_eq!(
            events(&l),
            [
                "before",
                "irq",
                "after",
                "spawn-before",
                "spawned",
                "spawn-after"
            ]
        );
        assert!(rt.stats().total.preempt_hits >= 3, "{:?}", rt.stats().total);
    });
}

#[test]
fn wakeup_of_a_sleeping_interrupt_thread_preempts() {
    bounded(30, "preempt on wakeup", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let chan = Arc::new(AtomicUsize::new(0));
            let (c, l3) = (chan.clone(), l2.clone());
            let _h = ThreadBuilder::new()
                .interrupt()
                .spawn(td, move |td| {
                    td.sleep(&*c, lwkt::Sleep::default()).unwrap();
                    push(&l3, "irq-woke");
                })
                .unwrap();
            push(&l2, "before");
            lwkt::wakeup(&*chan);
            push(&l2, "after");
        });
        assert_eq!(events(&l), ["before", "irq-woke", "after"]);
    });
}

#[test]
fn critical_section_defers_preemption_until_it_ends() {
    bounded(30, "crit defers", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let h = irq_thread(td, &l2, Priority::INT_HIGH);
            let r = h.thread();
            let outer = td.crit_enter();
            let inner = td.crit_enter();
            push(&l2, "before");
            r.schedule();
            push(&l2, "after");
            drop(inner);
            push(&l2, "inner-ended");
            drop(outer); // the deferred preemption runs here
            push(&l2, "outer-ended");
        });
        assert_eq!(
            events(&l),
            ["before", "after", "inner-ended", "irq", "outer-ended"]
        );
        assert!(rt.stats().total.preempt_misses >= 1);
    });
}

#[test]
fn no_preemption_of_equal_or_higher_priority_or_by_non_interrupt_threads() {
    bounded(30, "no preempt", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let h = irq_thread(td, &l2, Priority::INT_MED);
            let r = h.thread();
            td.set_priority(Priority::INT_MED); // equal
            push(&l2, "eq-before");
            r.schedule();
            push(&l2, "eq-after");
            td.yield_now(); // now it runs
            td.set_priority(Priority::INT_HIGH); // higher
            push(&l2, "hi-before");
            r.schedule();
            push(&l2, "hi-after");
            td.set_priority(Priority::KERN_DAEMON);
            td.yield_now();
            // A higher-priority thread that is not interrupt class.
            let l3 = l2.clone();
            push(&l2, "plain-before");
            let p = ThreadBuilder::new()
                .priority(Priority::SOFT_TIMER)
                .spawn(td, move |_| push(&l3, "plain"))
                .unwrap();
            push(&l2, "plain-after");
            p.join(td).unwrap();
        });
        assert_eq!(
            events(&l),
            [
                "eq-before",
                "eq-after",
                "irq",
                "hi-before",
                "hi-after",
                "irq",
                "plain-before",
                "plain-after",
                "plain"
            ]
        );
    });
}

#[test]
fn preempted_thread_keeps_its_token_and_the_preemptor_waits_for_it() {
    static T: Token<Vec<&'static str>> = Token::new("preempt-token", Vec::new());
    bounded(30, "preempt + token", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let g = td.get_token(&T);
            g.get(td).push("main");
            let l3 = l2.clone();
            push(&l2, "spawn");
            let h = ThreadBuilder::new()
                .interrupt()
                .spawn(td, move |td| {
                    push(&l3, "irq-start");
                    let g = td.get_token(&T); // held by the preempted thread
                    push(&l3, "irq-got-token");
                    g.get(td).push("irq");
                })
                .unwrap();
            // The interrupt thread ran, found the token busy and came back to
            // us; we still hold the token and our data is untouched.
            push(&l2, "main-continues");
            assert!(T.is_held_exclusive());
            assert_eq!(*g.get(td), ["main"]);
            drop(g);
            h.join(td).unwrap();
            let g = td.get_token(&T);
            assert_eq!(*g.get(td), ["main", "irq"]);
        });
        assert_eq!(
            events(&l),
            ["spawn", "irq-start", "main-continues", "irq-got-token"]
        );
    });
}

#[test]
fn an_interrupt_thread_holding_tokens_does_not_preempt() {
    static T: Token<()> = Token::new("held-by-irq", ());
    bounded(30, "preempt miss with tokens", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = log();
        let l2 = l.clone();
        rt.block_on(move |td| {
            let l3 = l2.clone();
            let h = ThreadBuilder::new()
                .interrupt()
                .spawn(td, move |td| {
                    let _g = td.get_token(&T);
                    td.park(); // parked holding T (released while parked)
                    push(&l3, "irq");
                })
                .unwrap();
            let misses = td.handle().stats().total.preempt_misses;
            push(&l2, "before");
            h.thread().schedule();
            push(&l2, "after");
            assert!(td.handle().stats().total.preempt_misses > misses);
            h.join(td).unwrap();
        });
        assert_eq!(events(&l), ["before", "after", "irq"]);
    });
}

#[test]
fn park_is_ended_only_by_schedule_and_a_prior_schedule_is_remembered() {
    bounded(30, "park", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let runs = Arc::new(AtomicUsize::new(0));
            let r = runs.clone();
            let h = ThreadBuilder::new()
                .cpu(1)
                .name("parker")
                .spawn(td, move |td| {
                    td.park();
                    r.fetch_add(1, Ordering::SeqCst);
                    td.park();
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let tr = h.thread();
            let wait_state = |td: &mut lwkt::CurThread, want: ThreadState| {
                let t0 = Instant::now();
                loop {
                    let l = ThreadInfo::collect(td);
                    if l.iter()
                        .any(|i| i.name.as_deref() == Some("parker") && i.state == want)
                    {
                        return;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "never reached {want:?}: {l:?}"
                    );
                    td.sleep_for(Duration::from_millis(1)).unwrap();
                }
            };
            wait_state(td, ThreadState::Parked);
            // Wakeups and interrupts do not end a park.
            lwkt::wakeup(&*runs);
            tr.interrupt();
            td.sleep_for(Duration::from_millis(20)).unwrap();
            assert_eq!(runs.load(Ordering::SeqCst), 0);
            tr.schedule(); // from CPU 0, by IPI
            let t0 = Instant::now();
            while runs.load(Ordering::SeqCst) < 1 {
                assert!(t0.elapsed() < Duration::from_secs(10));
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            tr.schedule();
            h.join(td).unwrap();
            assert_eq!(runs.load(Ordering::SeqCst), 2);

            // A schedule() that arrives while the thread runs is a permit.
            let me = td.thread_ref();
            me.schedule();
            td.park(); // returns at once
            assert!(!tr.is_alive());
            tr.schedule(); // on an exited thread: nothing happens
        });
    });
}

#[test]
fn deschedule_and_schedule_from_another_cpu() {
    bounded(30, "deschedule", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let count = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (c, s) = (count.clone(), stop.clone());
            let w = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    while !s.load(Ordering::SeqCst) {
                        c.fetch_add(1, Ordering::SeqCst);
                        td.yield_now();
                    }
                })
                .unwrap();
            let r = w.thread();
            while count.load(Ordering::SeqCst) < 1000 {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            r.deschedule();
            td.sleep_for(Duration::from_millis(10)).unwrap();
            let a = count.load(Ordering::SeqCst);
            td.sleep_for(Duration::from_millis(30)).unwrap();
            let b = count.load(Ordering::SeqCst);
            assert_eq!(a, b, "a descheduled thread kept running");
            r.set_priority(Priority::KERN_USER);
            r.schedule();
            let t0 = Instant::now();
            while count.load(Ordering::SeqCst) == b {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "schedule() did not restart it"
                );
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            w.join(td).unwrap();
        });
    });
}

#[test]
fn migrate_moves_the_thread_and_validates_the_cpu() {
    bounded(30, "migrate", || {
        let rt = Runtime::builder().cpus(3).build().unwrap();
        rt.block_on(|td| {
            let h = td.spawn(|td| {
                let mut seen = vec![td.cpu()];
                for c in [1, 2, 0, 2] {
                    // SAFETY: nothing but Send values live across the call.
                    unsafe { td.migrate(c) }.unwrap();
                    seen.push(td.cpu());
                }
                // SAFETY: as above.
                let e = unsafe { td.migrate(9) }.unwrap_err();
                assert!(matches!(e, Error::InvalidCpu { cpu: 9, ncpus: 3 }));
                seen
            });
            assert_eq!(h.join(td).unwrap(), [0, 1, 2, 0, 2]);
        });
        assert!(rt.stats().total.migrations >= 4);
    });
}

#[derive(Default)]
struct Checked {
    owner: AtomicU64,
    value: AtomicU64,
}

#[test]
fn migration_under_load_with_tokens_held_and_sleeps_10k_migrations() {
    static TOKS: [Token<Checked>; 2] = [
        Token::new(
            "mig0",
            Checked {
                owner: AtomicU64::new(0),
                value: AtomicU64::new(0),
            },
        ),
        Token::new(
            "mig1",
            Checked {
                owner: AtomicU64::new(0),
                value: AtomicU64::new(0),
            },
        ),
    ];
    bounded(120, "migration under load", || {
        let rt = Runtime::builder().cpus(3).build().unwrap();
        let per = 1_300u64;
        rt.block_on(move |td| {
            let n = td.ncpus();
            let hs: Vec<_> = (0..8u64)
                .map(|i| {
                    ThreadBuilder::new()
                        .cpu((i as usize) % n)
                        .spawn(td, move |td| {
                            let me = i + 1;
                            let mut g = td.get_token(&TOKS[(i % 2) as usize]);
                            for k in 0..per {
                                {
                                    let d = g.get(td);
                                    assert_eq!(
                                        d.owner.swap(me, Ordering::SeqCst),
                                        0,
                                        "token exclusion broken"
                                    );
                                    d.value.fetch_add(1, Ordering::Relaxed);
                                    assert_eq!(d.owner.swap(0, Ordering::SeqCst), me);
                                }
                                let next = (td.cpu() + 1 + (k as usize % 2)) % n;
                                // SAFETY: only Send values (the guard's
                                // token reference, integers) live across it.
                                unsafe { td.migrate(next) }.unwrap();
                                assert_eq!(td.cpu(), next);
                                if k % 16 == 0 {
                                    td.sleep_for(Duration::from_micros(50)).unwrap();
                                }
                                if k % 7 == 0 {
                                    drop(g);
                                    td.yield_now();
                                    g = td.get_token(&TOKS[((i + k) % 2) as usize]);
                                }
                            }
                        })
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join(td).unwrap();
            }
        });
        let s = rt.stats().total;
        assert!(s.migrations >= 8 * per, "{s:?}");
    });
}

#[test]
fn pull_a_parked_thread_to_this_cpu() {
    bounded(30, "pull", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let h = ThreadBuilder::new()
                .cpu(1)
                .name("pulled")
                .spawn(td, |td| {
                    td.park();
                    td.cpu()
                })
                .unwrap();
            let r = h.thread();
            // Not parked yet, or parked: retry until the pull is accepted.
            let t0 = Instant::now();
            loop {
                // SAFETY: the pulled thread holds only Send values.
                match unsafe { r.pull(td) } {
                    Ok(()) => break,
                    Err(Error::NotDescheduled) => {
                        assert!(t0.elapsed() < Duration::from_secs(10));
                        td.sleep_for(Duration::from_millis(1)).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            while r.cpu() != 0 {
                td.yield_now();
            }
            r.schedule();
            assert_eq!(
                h.join(td).unwrap(),
                0,
                "the pulled thread ran on the puller's CPU"
            );
            // SAFETY: as above.
            assert!(matches!(unsafe { r.pull(td) }, Err(Error::NoSuchThread)));
            // A sleeping thread is not descheduled: it sleeps until told
            // (not for a fixed time, which a loaded machine can outlast).
            let done = Arc::new(AtomicUsize::new(0));
            let d2 = done.clone();
            let busy = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    d2.store(1, Ordering::SeqCst);
                    td.sleep_until(&*d2, lwkt::Sleep::default(), || {
                        d2.load(Ordering::SeqCst) == 2
                    })
                })
                .unwrap();
            while done.load(Ordering::SeqCst) != 1 {
                td.sleep_for(Duration::from_millis(1)).unwrap();
            }
            // SAFETY: as above.
            assert!(matches!(
                unsafe { busy.thread().pull(td) },
                Err(Error::NotDescheduled)
            ));
            done.store(2, Ordering::SeqCst);
            lwkt::wakeup(&*done);
            busy.join(td).unwrap().unwrap();
        });
    });
}

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_cancels_parked_and_migrating_threads() {
    bounded(60, "shutdown with parked/migrating", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let d = drops.clone();
        rt.block_on(move |td| {
            for i in 0..20 {
                let g = DropCount(d.clone());
                let _ = ThreadBuilder::new()
                    .cpu(i % 2)
                    .spawn(td, move |td| {
                        let _g = g;
                        if i % 2 == 0 {
                            td.park();
                        } else {
                            loop {
                                // SAFETY: only Send values live across it.
                                unsafe { td.migrate(1 - td.cpu()) }.unwrap();
                            }
                        }
                    })
                    .unwrap();
            }
            td.sleep_for(Duration::from_millis(20)).unwrap();
        });
        drop(rt);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            20,
            "every thread's destructors ran"
        );
    });
}
