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
