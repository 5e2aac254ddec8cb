//! The handoff (`Core::handoff`): a join of the next thread in line, and a
//! preemption, run the target on the caller's own stack. These tests pin
//! its invariants (nesting one level deep; the target taken off the run
//! queue; the caller on no queue) and that it changes no order the
//! scheduler would have chosen.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bounded;
use lwkt::{CurThread, Priority, Runtime, ThreadBuilder};

type Log = Arc<Mutex<Vec<&'static str>>>;

fn log(l: &Log, s: &'static str) {
    l.lock().unwrap().push(s);
}

fn rt1() -> Runtime {
    Runtime::builder().cpus(1).build().unwrap()
}

/// A chain of joins: each thread spawns the next and joins it, so each
/// join could hand off. Only the first level may (a thread running by
/// handoff never hands off); the others must wait the ordinary way. Some
/// links yield and sleep on the way, so handed-off threads switch out to
/// their hander mid-run.
#[test]
fn nested_joins_hand_off_one_level_and_finish() {
    fn link(td: &mut CurThread, depth: u32) -> u32 {
        if depth == 0 {
            return 0;
        }
        if depth % 2 == 0 {
            td.yield_now();
        }
        let h = td.spawn(move |td| link(td, depth - 1));
        if depth % 3 == 0 {
            td.sleep_for(Duration::from_micros(100)).unwrap();
        }
        h.join(td).unwrap() + 1
    }
    bounded(30, "nested joins", || {
        let rt = rt1();
        for _ in 0..200 {
            assert_eq!(rt.block_on(|td| link(td, 6)), 6);
        }
    });
}

/// A thread running by handoff (the join target) schedules an interrupt
/// thread: it cannot hand off again, so it is preempted the ordinary way,
/// back to its hander, which must then let the interrupt thread run before
/// anything else.
#[test]
fn preemption_inside_a_handoff_goes_through_the_hander() {
    bounded(30, "preempt in handoff", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let l2 = l.clone();
            let irq = ThreadBuilder::new()
                .interrupt()
                .priority(Priority::INT_MED)
                .spawn(td, move |td| {
                    td.park();
                    log(&l2, "irq");
                })
                .unwrap();
            // The interrupt thread ran at once (preempting us) and parked.
            let r = irq.thread();
            let l3 = l.clone();
            let child = td.spawn(move |_| {
                log(&l3, "child:schedule");
                r.schedule(); // preempts the child, which runs by handoff
                log(&l3, "child:after");
                7
            });
            log(&l, "main:join");
            let v = child.join(td).unwrap();
            log(&l, "main:joined");
            irq.join(td).unwrap();
            assert_eq!(v, 7);
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(
            order,
            [
                "main:join",
                "child:schedule",
                "irq",
                "child:after",
                "main:joined"
            ],
            "the interrupt thread runs first, then the child, then its joiner"
        );
    });
}

/// A join that hands off and finds its thread done goes behind the peers
/// of its priority that were waiting, as if it had slept and been woken:
/// the handoff saves switches, it does not jump the queue.
#[test]
fn a_joiner_goes_behind_waiting_peers_after_a_handoff() {
    bounded(30, "joiner order", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let (lc, lp) = (l.clone(), l.clone());
            let child = td.spawn(move |_| log(&lc, "child")); // first in line
            let peer = td.spawn(move |_| log(&lp, "peer")); // behind it
            child.join(td).unwrap();
            log(&l, "main");
            peer.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order, ["child", "peer", "main"]);
    });
}

/// A handoff never runs a thread out of turn: when another thread is
/// ahead of the join target, the joiner does not run the target itself.
#[test]
fn no_handoff_to_a_thread_that_is_not_first_in_line() {
    bounded(30, "not first", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let (la, lb) = (l.clone(), l.clone());
            let first = ThreadBuilder::new()
                .priority(Priority::SOFT_NORM) // higher than the target
                .spawn(td, move |td| {
                    td.yield_now();
                    log(&la, "high")
                })
                .unwrap();
            let target = td.spawn(move |_| log(&lb, "target"));
            target.join(td).unwrap();
            first.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order, ["high", "target"]);
    });
}

/// The shape ps shows: a thread that handed off is on its CPU with another
/// thread on top of it (reported like a preempted one), and a count of the
/// threads of a CPU while handoffs nest and unwind stays exact.
#[test]
fn ps_shows_the_hander_and_counts_stay_exact() {
    bounded(30, "ps during handoff", || {
        let rt = rt1();
        rt.block_on(|td| {
            let seen = Arc::new(AtomicUsize::new(0));
            let s2 = seen.clone();
            let child = td.spawn(move |td| {
                let me = td.id();
                let list = lwkt::ThreadInfo::collect(td);
                let mine = list.iter().find(|i| i.id == me).expect("listed");
                assert_eq!(mine.state, lwkt::ThreadState::Running);
                s2.store(list.len(), Ordering::SeqCst);
            });
            let main_id = td.id();
            child.join(td).unwrap();
            assert!(seen.load(Ordering::SeqCst) >= 2);
            let after = lwkt::ThreadInfo::collect(td);
            let me = after.iter().find(|i| i.id == main_id).unwrap();
            assert_eq!(me.state, lwkt::ThreadState::Running);
        });
        // The main thread publishes its result just before it retires, so
        // its own exit may still be in flight here; the child's is not.
        let t0 = std::time::Instant::now();
        while rt.stats().total.threads_alive != 0 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(5),
                "thread count never reached zero: {}",
                rt.stats().total.threads_alive
            );
            std::thread::yield_now();
        }
    });
}

// -------------------------------------------------------------------
// The yield handoff: a thread that yields while exactly one peer of its
// priority or above is runnable runs that peer on its own stack (see
// `Core::after_yield_handoff`). It must change no order the loop would
// have chosen.
// -------------------------------------------------------------------

/// Two threads yielding to each other alternate strictly: the one running
/// by handoff sees the hander as runnable and switches back to it at each
/// yield (it must not run all its rounds in a row).
#[test]
fn yield_pingpong_alternates_strictly() {
    bounded(30, "yield alternation", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let lb = l.clone();
            let b = td.spawn(move |td| {
                for _ in 0..500 {
                    log(&lb, "b");
                    td.yield_now();
                }
            });
            for _ in 0..500 {
                log(&l, "a");
                td.yield_now();
            }
            b.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order.len(), 1000);
        for (i, s) in order.iter().enumerate() {
            let want = if i % 2 == 0 { "a" } else { "b" };
            assert_eq!(*s, want, "entry {i} of {order:?}");
        }
    });
}

/// The order of the plain loop, with a third thread made runnable while
/// the handed-off thread runs: it came after the hander's yield, so the
/// hander goes first; once three are runnable no handoff applies.
#[test]
fn a_thread_made_runnable_during_a_yield_handoff_waits_its_turn() {
    bounded(30, "third thread", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let lb = l.clone();
            let b = td.spawn(move |td| {
                let mut c = None;
                for s in ["b0", "b1", "b2"] {
                    log(&lb, s);
                    if s == "b1" {
                        let lc = lb.clone();
                        c = Some(td.spawn(move |_| log(&lc, "c")));
                    }
                    td.yield_now();
                }
                c.unwrap().join(td).unwrap();
            });
            for s in ["a0", "a1", "a2"] {
                log(&l, s);
                td.yield_now();
            }
            b.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "c", "b2"]);
    });
}

/// A thread of higher priority made runnable during a yield handoff runs
/// before the hander, which then runs before the handed-off thread.
#[test]
fn a_higher_priority_thread_made_runnable_during_a_yield_handoff_runs_first() {
    bounded(30, "higher priority", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let lb = l.clone();
            let b = td.spawn(move |td| {
                log(&lb, "b0");
                let lh = lb.clone();
                let h = ThreadBuilder::new()
                    .priority(Priority::SOFT_NORM)
                    .spawn(td, move |_| log(&lh, "high"))
                    .unwrap();
                td.yield_now();
                log(&lb, "b1");
                h.join(td).unwrap();
            });
            log(&l, "a0");
            td.yield_now();
            log(&l, "a1");
            b.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order, ["a0", "b0", "high", "a1", "b1"]);
    });
}

/// The handed-off thread is preempted by an interrupt thread: the
/// interrupt thread runs, then the preempted thread (it resumes before its
/// peers), then the hander.
#[test]
fn a_thread_preempted_during_a_yield_handoff_resumes_before_the_hander() {
    bounded(30, "preempted in yield handoff", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let l2 = l.clone();
            let irq = ThreadBuilder::new()
                .interrupt()
                .priority(Priority::INT_MED)
                .spawn(td, move |td| {
                    td.park();
                    log(&l2, "irq");
                })
                .unwrap();
            let r = irq.thread();
            let lb = l.clone();
            let b = td.spawn(move |td| {
                log(&lb, "b:schedule");
                r.schedule(); // preempts b, which runs by handoff
                log(&lb, "b:after");
                td.yield_now();
                log(&lb, "b:end");
            });
            log(&l, "a:yield");
            td.yield_now();
            log(&l, "a:back");
            b.join(td).unwrap();
            irq.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(
            order,
            ["a:yield", "b:schedule", "irq", "b:after", "a:back", "b:end"]
        );
    });
}

/// A handed-off thread that never yields but calls `maybe_yield` gives the
/// CPU back at the next scheduler tick: the hander counts as a runnable
/// peer of equal priority.
#[test]
fn maybe_yield_in_a_yield_handoff_sees_the_hander() {
    bounded(30, "maybe_yield sees hander", || {
        let rt = rt1();
        rt.block_on(|td| {
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let f2 = flag.clone();
            let b = td.spawn(move |td| {
                while !f2.load(Ordering::SeqCst) {
                    td.maybe_yield();
                }
            });
            td.yield_now(); // runs b by handoff; b spins until we run again
            flag.store(true, Ordering::SeqCst);
            b.join(td).unwrap();
        });
    });
}

/// A `deschedule` of the hander that arrives while it hands off parks it
/// when the handed-off thread switches out: it does not go on running.
#[test]
fn a_hander_descheduled_during_a_yield_handoff_parks() {
    bounded(30, "deschedule hander", || {
        let rt = rt1();
        let order = rt.block_on(|td| {
            let l: Log = Arc::default();
            let lb = l.clone();
            let me = td.thread_ref();
            let b = td.spawn(move |td| {
                me.deschedule();
                log(&lb, "b0");
                td.yield_now();
                log(&lb, "b1");
                me.schedule();
            });
            td.yield_now();
            log(&l, "a1");
            b.join(td).unwrap();
            let v = l.lock().unwrap().clone();
            v
        });
        assert_eq!(order, ["b0", "b1", "a1"]);
    });
}
