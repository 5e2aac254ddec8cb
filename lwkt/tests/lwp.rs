//! The LWP layer: NetBSD's lifecycle on top of the core. Every test runs
//! under `common::bounded`, so a hang fails with a message.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, yield_until};
use lwkt::lwp::{
    ExitStatus, Key, Lid, LwpBuilder, LwpCpu, LwpError, LwpFlags, LwpState, Proc, Signal,
};
use lwkt::{CurThread, Runtime, Sleep, Token};

fn rt(n: usize) -> Runtime {
    Runtime::builder().cpus(n).build().unwrap()
}

/// Runs `f` as the first LWP of a new process on a fresh runtime and
/// returns the process's status.
#[must_use = "assert the status: a panic inside the LWP shows only there"]
fn in_proc(cpus: usize, f: impl FnOnce(&mut CurThread) -> i32 + Send + 'static) -> ExitStatus {
    let rt = rt(cpus);
    let h = Proc::spawn_from(&rt.handle(), f).unwrap();
    h.join_blocking()
}

/// [`in_proc`] for a body that must end the process normally: fails the
/// test with the status otherwise (a panic inside the LWP shows only
/// there).
fn in_proc_ok(cpus: usize, f: impl FnOnce(&mut CurThread) -> i32 + Send + 'static) {
    let st = in_proc(cpus, f);
    assert_eq!(
        st,
        ExitStatus::Exited(0),
        "the process did not end normally"
    );
}

/// An LWP that yields until told to stop.
fn spinner(stop: Arc<AtomicBool>) -> impl FnOnce(&mut CurThread) -> i32 + Send + 'static {
    move |td| {
        while !stop.load(Ordering::Acquire) {
            td.yield_now();
        }
        0
    }
}

#[test]
fn first_lwp_exit_ends_process_with_status_zero() {
    let st = bounded(30, "first lwp", || {
        in_proc(2, |td| {
            assert_eq!(td.lid().unwrap().get(), 1);
            assert!(td.proc().is_some());
            7
        })
    });
    assert_eq!(st, ExitStatus::Exited(0));
}

#[test]
fn wait_collects_exit_values_specific_and_any() {
    let st = bounded(30, "wait", || {
        in_proc(2, |td| {
            let p = td.proc().unwrap();
            let a = p.create_lwp(td, LwpBuilder::new().cpu(1), |_| 11).unwrap();
            let b = p
                .create_lwp(td, LwpBuilder::new(), |td| {
                    td.yield_now();
                    22
                })
                .unwrap();
            assert_eq!(p.wait(td, Some(a)).unwrap(), (a, 11));
            assert_eq!(p.wait(td, None).unwrap(), (b, 22));
            assert_eq!(p.wait(td, None).unwrap_err().errno(), LwpError::ESRCH);
            0
        })
    });
    assert_eq!(st, ExitStatus::Exited(0));
}

/// The NetBSD error matrix (REFERENCE.md, "NetBSD LWPs"): one row per
/// rule, each run as the first LWP of a fresh process, with the errno it
/// must give. (The "process is exiting" rule of `wait` needs an exit in
/// flight: `wait_while_exiting_is_edeadlk`.)
#[test]
fn netbsd_error_matrix() {
    type Row = (
        &'static str,
        i32,
        fn(&mut CurThread) -> Result<(), LwpError>,
    );
    fn ok<T>(r: Result<T, LwpError>) -> Result<(), LwpError> {
        r.map(drop)
    }
    let rows: Vec<Row> = vec![
        ("wait for itself", LwpError::EDEADLK, |td| {
            let p = td.proc().unwrap();
            let me = td.lid().unwrap();
            ok(p.wait(td, Some(me)))
        }),
        (
            "wait for a target that waits for us",
            LwpError::EDEADLK,
            |td| {
                let p = td.proc().unwrap();
                let me = td.lid().unwrap();
                // A bystander keeps running, so the "everyone waits" count
                // cannot be what catches it.
                let stop = Arc::new(AtomicBool::new(false));
                p.create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop.clone()))
                    .unwrap();
                let p2 = p.clone();
                let t = p
                    .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                        // Waits for lid 1; interrupted below once the test is done.
                        let _ = p2.wait(td, Some(me));
                        0
                    })
                    .unwrap();
                // Until the target is waiting for us (it sleeps in wait).
                yield_until(td, "the target to wait", || {
                    p.state(t) == Some(LwpState::Sleep)
                });
                let r = p.wait(td, Some(t));
                p.signal_lwp(t, Signal::USR1).unwrap();
                stop.store(true, Ordering::Release);
                ok(r)
            },
        ),
        ("wait cycle t1 -> t2 -> t3 -> t1", LwpError::EDEADLK, |td| {
            let p = td.proc().unwrap();
            let me = td.lid().unwrap();
            // t2 waits for t3 (created suspended so its lid is known
            // first), t3 waits for t1 (us); then we wait for t2. A
            // bystander keeps running: only the cycle rule can catch it
            // (the seed's direct check and its count both miss it).
            let stop = Arc::new(AtomicBool::new(false));
            p.create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop.clone()))
                .unwrap();
            let p3 = p.clone();
            let t3 = p
                .create_lwp(
                    td,
                    LwpBuilder::new().flags(LwpFlags::SUSPENDED),
                    move |td| {
                        let _ = p3.wait(td, Some(me));
                        0
                    },
                )
                .unwrap();
            let p2 = p.clone();
            let t2 = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    let _ = p2.wait(td, Some(t3));
                    0
                })
                .unwrap();
            p.resume(t3).unwrap();
            yield_until(td, "t2 and t3 to wait", || {
                p.state(t2) == Some(LwpState::Sleep) && p.state(t3) == Some(LwpState::Sleep)
            });
            let r = p.wait(td, Some(t2));
            p.signal(Signal::USR1);
            stop.store(true, Ordering::Release);
            ok(r)
        }),
        ("every other live LWP is waiting", LwpError::EDEADLK, |td| {
            let p = td.proc().unwrap();
            let p2 = p.clone();
            let t = p
                .create_lwp(td, LwpBuilder::new(), move |td| {
                    let _ = p2.wait(td, None);
                    0
                })
                .unwrap();
            yield_until(td, "the other to wait", || {
                p.state(t) == Some(LwpState::Sleep)
            });
            // The other waits for anyone; if we wait for it too, nobody is
            // left to exit.
            let r = p.wait(td, Some(t));
            p.signal(Signal::USR1);
            ok(r)
        }),
        ("wait with nothing to collect", LwpError::ESRCH, |td| {
            let p = td.proc().unwrap();
            ok(p.wait(td, None))
        }),
        (
            "wait for an LWP that does not exist",
            LwpError::ESRCH,
            |td| {
                let p = td.proc().unwrap();
                ok(p.wait(td, Lid::new(99)))
            },
        ),
        ("wait for a detached LWP", LwpError::ESRCH, |td| {
            let p = td.proc().unwrap();
            let t = p
                .create_lwp(td, LwpBuilder::new().flags(LwpFlags::DETACHED), |_| 0)
                .unwrap();
            ok(p.wait(td, Some(t)))
        }),
        ("wait interrupted by a signal", LwpError::EINTR, |td| {
            let p = td.proc().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let t = p
                .create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop.clone()))
                .unwrap();
            let me = td.lid().unwrap();
            let p2 = p.clone();
            p.create_lwp(
                td,
                LwpBuilder::new().cpu(1).flags(LwpFlags::DETACHED),
                move |td| {
                    td.sleep_for(Duration::from_millis(20)).unwrap();
                    p2.signal_lwp(me, Signal::USR1).unwrap();
                    0
                },
            )
            .unwrap();
            let r = p.wait(td, Some(t));
            assert_eq!(td.sigtake(), Some(Signal::USR1));
            stop.store(true, Ordering::Release);
            p.wait(td, Some(t)).unwrap();
            ok(r)
        }),
        (
            "suspend an LWP that does not exist",
            LwpError::ESRCH,
            |td| {
                let p = td.proc().unwrap();
                p.suspend(td, Lid::new(42).unwrap())
            },
        ),
        ("suspend a zombie", LwpError::EINTR, |td| {
            let p = td.proc().unwrap();
            let t = p.create_lwp(td, LwpBuilder::new(), |_| 0).unwrap();
            yield_until(td, "the zombie", || p.state(t) == Some(LwpState::Zomb));
            let r = p.suspend(td, t);
            p.wait(td, Some(t)).unwrap();
            r
        }),
        (
            "suspend yourself as the only running LWP",
            LwpError::EDEADLK,
            |td| {
                let p = td.proc().unwrap();
                let me = td.lid().unwrap();
                p.suspend(td, me)
            },
        ),
        (
            "continue an LWP that does not exist",
            LwpError::ESRCH,
            |td| {
                let p = td.proc().unwrap();
                p.resume(Lid::new(7).unwrap())
            },
        ),
        ("detach an LWP that does not exist", LwpError::ESRCH, |td| {
            let p = td.proc().unwrap();
            p.detach(Lid::new(7).unwrap())
        }),
        ("detach twice", LwpError::EINVAL, |td| {
            let p = td.proc().unwrap();
            let t = p
                .create_lwp(td, LwpBuilder::new().flags(LwpFlags::DETACHED), |_| 0)
                .unwrap();
            p.detach(t)
        }),
    ];
    for (name, errno, f) in rows {
        let got = bounded(30, name, move || {
            let out = Arc::new(Mutex::new(None));
            let o2 = out.clone();
            let st = in_proc(2, move |td| {
                *o2.lock().unwrap() = Some(f(td));
                0
            });
            let r = out.lock().unwrap().take();
            (st, r)
        });
        match got {
            (_, Some(Err(e))) => {
                assert_eq!(e.errno(), errno, "{name}: got {e}");
                assert!(e.to_string().contains("process"), "{name}: message {e}");
            }
            other => panic!("{name}: expected errno {errno}, got {other:?}"),
        }
    }
}

#[test]
fn wait_while_exiting_is_edeadlk() {
    let got = bounded(30, "exiting wait", || {
        let got = Arc::new(Mutex::new(None));
        let g2 = got.clone();
        let st = in_proc(2, move |td| {
            let p = td.proc().unwrap();
            let p2 = p.clone();
            let started = Arc::new(AtomicBool::new(false));
            let s2 = started.clone();
            let done = Arc::new(AtomicBool::new(false));
            let d2 = done.clone();
            let me = td.lid().unwrap();
            p.create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                s2.store(true, Ordering::Release);
                while !p2.is_exiting() {
                    std::hint::spin_loop();
                }
                // Waits for LWP 1, which is alive (spinning below, with no
                // switch point) while the exit is in flight.
                *g2.lock().unwrap() = Some(p2.wait(td, Some(me)).map(drop));
                d2.store(true, Ordering::Release);
                0
            })
            .unwrap();
            yield_until(td, "the other LWP to start", || {
                started.load(Ordering::Acquire)
            });
            p.kill();
            while !done.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            td.yield_now();
            unreachable!("killed at the switch point");
        });
        let r = got.lock().unwrap().take();
        (st, r)
    });
    assert_eq!(got.0, ExitStatus::Killed(Signal::KILL));
    assert_eq!(got.1.unwrap().unwrap_err().errno(), LwpError::EDEADLK);
}

#[test]
fn non_lwp_callers_get_eperm_for_wait() {
    bounded(30, "eperm", || {
        let rt = rt(1);
        let h = Proc::spawn_from(&rt.handle(), |td| {
            td.sleep_for(Duration::from_millis(50)).ok();
            0
        })
        .unwrap();
        let p = h.proc().clone();
        rt.block_on(move |td| {
            assert_eq!(p.wait(td, None).unwrap_err().errno(), LwpError::EPERM);
            assert!(td.lid().is_none() && td.proc().is_none() && td.lwpctl().is_none());
        });
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
    });
}

#[test]
fn any_wait_skips_lwps_with_a_specific_waiter() {
    bounded(30, "skip", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let g = go.clone();
            let target = p
                .create_lwp(td, LwpBuilder::new(), move |td| {
                    while !g.load(Ordering::Acquire) {
                        td.yield_now();
                    }
                    5
                })
                .unwrap();
            let p2 = p.clone();
            let named = Arc::new(Mutex::new(None));
            let n2 = named.clone();
            let w = p
                .create_lwp(td, LwpBuilder::new(), move |td| {
                    *n2.lock().unwrap() = Some(p2.wait(td, Some(target)));
                    0
                })
                .unwrap();
            yield_until(td, "the named waiter", || {
                p.state(w) == Some(LwpState::Sleep)
            });
            // Our any-wait must leave `target` to its named waiter and
            // collect the named waiter itself instead.
            go.store(true, Ordering::Release);
            let (l, _) = p.wait(td, None).unwrap();
            assert_eq!(l, w);
            assert_eq!(named.lock().unwrap().take().unwrap().unwrap(), (target, 5));
            0
        })
    });
}

static SHARED: Token<u64> = Token::new("lwp-shared", 0);

fn suspend_with_token(cpu_of_holder: usize) {
    let st = bounded(30, "suspend with token", move || {
        in_proc(2, move |td| {
            let p = td.proc().unwrap();
            let seen = Arc::new(Mutex::new(None));
            let s2 = seen.clone();
            let holding = Arc::new(AtomicBool::new(false));
            let h2 = holding.clone();
            let a = p
                .create_lwp(td, LwpBuilder::new().cpu(cpu_of_holder), move |td| {
                    let g = td.get_token(&SHARED);
                    *g.get(td) = 1;
                    h2.store(true, Ordering::Release);
                    // Holds the token across yields until suspended (the
                    // suspension happens at one of these switch points).
                    let mut before = *g.get(td);
                    while before == 1 {
                        td.yield_now();
                        before = *g.get(td);
                    }
                    *s2.lock().unwrap() = Some(before);
                    0
                })
                .unwrap();
            yield_until(td, "the holder", || holding.load(Ordering::Acquire));
            p.suspend(td, a).unwrap();
            yield_until(td, "the suspension", || {
                p.state(a) == Some(LwpState::Suspended)
            });
            // The suspended LWP holds no token: we get it at once.
            {
                let g = td
                    .try_token(&SHARED)
                    .expect("a suspended LWP holds no tokens");
                *g.get(td) = 2;
            }
            p.resume(a).unwrap();
            p.wait(td, Some(a)).unwrap();
            assert_eq!(
                seen.lock().unwrap().take(),
                Some(2),
                "the change made while suspended"
            );
            0
        })
    });
    assert_eq!(st, ExitStatus::Exited(0));
}

#[test]
fn suspended_lwp_holds_no_token_same_cpu() {
    suspend_with_token(0);
}

#[test]
fn suspended_lwp_holds_no_token_across_cpus() {
    suspend_with_token(1);
}

#[test]
fn suspend_kicks_an_interruptible_sleeper_and_resume_is_noop_otherwise() {
    bounded(30, "kick", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let out = Arc::new(Mutex::new(None));
            let o2 = out.clone();
            let chan = Arc::new(0u8);
            let c2 = chan.clone();
            let t = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    let r = td.sleep(&*c2, Sleep::default().interruptible());
                    *o2.lock().unwrap() = Some(r);
                    0
                })
                .unwrap();
            yield_until(td, "the sleeper", || p.state(t) == Some(LwpState::Sleep));
            p.suspend(td, t).unwrap();
            yield_until(td, "the suspension", || {
                p.state(t) == Some(LwpState::Suspended)
            });
            assert!(
                out.lock().unwrap().is_none(),
                "stops before returning from its sleep"
            );
            p.resume(t).unwrap();
            p.resume(t).unwrap(); // no-op
            p.wait(td, Some(t)).unwrap();
            assert_eq!(
                out.lock().unwrap().take(),
                Some(Err(lwkt::SleepError::Interrupted))
            );
            0
        })
    });
}

#[test]
fn created_suspended_runs_only_after_resume() {
    bounded(30, "created suspended", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let ran = Arc::new(AtomicBool::new(false));
            let r2 = ran.clone();
            let t = p
                .create_lwp(
                    td,
                    LwpBuilder::new().cpu(1).flags(LwpFlags::SUSPENDED),
                    move |_| {
                        r2.store(true, Ordering::Release);
                        3
                    },
                )
                .unwrap();
            assert_eq!(p.state(t), Some(LwpState::Suspended));
            td.sleep_for(Duration::from_millis(20)).unwrap();
            assert!(!ran.load(Ordering::Acquire));
            p.resume(t).unwrap();
            assert_eq!(p.wait(td, Some(t)).unwrap(), (t, 3));
            assert!(ran.load(Ordering::Acquire));
            0
        })
    });
}

#[test]
fn detach_frees_a_zombie_at_once() {
    bounded(30, "detach zombie", || {
        in_proc_ok(1, |td| {
            let p = td.proc().unwrap();
            let t = p.create_lwp(td, LwpBuilder::new(), |_| 1).unwrap();
            let r = p.lwp_ref(t).unwrap();
            yield_until(td, "zombie", || p.state(t) == Some(LwpState::Zomb));
            p.detach(t).unwrap();
            assert_eq!(p.state(t), None);
            assert!(r.is_freed());
            // The reference still reads the exited LWP.
            assert_eq!((r.state(), r.exit_value()), (LwpState::Zomb, Some(1)));
            assert_eq!(r.ctl().cpu(), LwpCpu::Exited);
            0
        })
    });
}

struct Dropped(Arc<AtomicUsize>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn kill_unwinds_every_lwp_whatever_it_waits_in() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let st = bounded(30, "kill", move || {
        let rt = rt(2);
        let ready = Arc::new(AtomicBool::new(false));
        let r2 = ready.clone();
        let h = Proc::spawn_from(&rt.handle(), move |td| {
            let p = td.proc().unwrap();
            let mk = |d: &Arc<AtomicUsize>| Dropped(d.clone());
            // A sleeper (interruptible), a parked one, a suspended one, a
            // yielder, and a token holder; each owns a value with a Drop.
            let v = mk(&d);
            p.create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                let _v = v;
                loop {
                    let _ = td.sleep(&0u8, Sleep::default().interruptible());
                }
            })
            .unwrap();
            let v = mk(&d);
            p.create_lwp(td, LwpBuilder::new(), move |td| {
                let _v = v;
                loop {
                    td.park();
                }
            })
            .unwrap();
            let v = mk(&d);
            let s = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    let _v = v;
                    loop {
                        td.yield_now();
                    }
                })
                .unwrap();
            p.suspend(td, s).unwrap();
            let v = mk(&d);
            p.create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                let _v = v;
                let g = td.get_token(&SHARED);
                loop {
                    *g.get(td) += 1;
                    td.yield_now();
                }
            })
            .unwrap();
            let v = mk(&d);
            let _v = v;
            r2.store(true, Ordering::Release);
            loop {
                td.yield_now();
            }
        })
        .unwrap();
        // Kill once every LWP exists (not after a fixed delay, which a
        // loaded machine can outlast).
        let t = Instant::now();
        while !ready.load(Ordering::Acquire) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the LWPs were not created"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10));
        h.kill();
        let st = h.join_blocking();
        let t = Instant::now();
        while rt.stats().total.threads_alive != 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        (st, rt.stats().total.threads_alive)
    });
    assert_eq!(st.0, ExitStatus::Killed(Signal::KILL));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        5,
        "every LWP's stack was unwound"
    );
    assert_eq!(st.1, 0, "no thread left");
}

#[test]
fn exit_status_from_proc_exit_and_first_wins() {
    let st = bounded(30, "exit", || {
        in_proc(2, |td| {
            let p = td.proc().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            p.create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop))
                .unwrap();
            p.exit(td, 3);
        })
    });
    assert_eq!(st, ExitStatus::Exited(3));
}

#[test]
fn a_panicking_lwp_ends_the_process() {
    let st = bounded(30, "panic", || {
        in_proc(2, |td| {
            let p = td.proc().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            p.create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop))
                .unwrap();
            p.create_lwp(td, LwpBuilder::new(), |_| panic!("lwp boom"))
                .unwrap();
            loop {
                td.yield_now();
            }
        })
    });
    match st {
        ExitStatus::Panicked { lid, message } => {
            assert_eq!((lid.get(), message.as_str()), (3, "lwp boom"));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn stop_and_cont_a_whole_process() {
    bounded(30, "stop/cont", || {
        let rt = rt(2);
        let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        let c = counts.clone();
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        let h = Proc::spawn_from(&rt.handle(), move |td| {
            let p = td.proc().unwrap();
            for i in 0..3 {
                let c = c.clone();
                let q = q.clone();
                p.create_lwp(td, LwpBuilder::new().cpu(i % 2), move |td| {
                    while !q.load(Ordering::Acquire) {
                        c[i].fetch_add(1, Ordering::Relaxed);
                        td.yield_now();
                    }
                    0
                })
                .unwrap();
            }
            // The first LWP sleeps (uninterruptibly) until told.
            while !q.load(Ordering::Acquire) {
                let _ = td.sleep_for(Duration::from_millis(5));
            }
            for _ in 0..3 {
                p.wait(td, None).unwrap();
            }
            0
        })
        .unwrap();
        let p = h.proc().clone();
        let wait_for = |what: &str, f: &dyn Fn() -> bool| {
            let t = Instant::now();
            while !f() {
                assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait_for("workers running", &|| {
            counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
        });
        // Suspend worker 2 before the stop: it must stay suspended after cont.
        let workers: Vec<Lid> = p
            .lwps()
            .iter()
            .map(|i| i.lid)
            .filter(|l| l.get() > 1)
            .collect();
        h.stop();
        wait_for("every worker stopped", &|| {
            p.lwps()
                .iter()
                .filter(|i| i.lid.get() > 1)
                .all(|i| i.state == LwpState::Stop)
        });
        let frozen: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        std::thread::sleep(Duration::from_millis(20));
        let later: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(frozen, later, "a stopped LWP does not run");
        h.cont();
        wait_for("progress after cont", &|| {
            counts
                .iter()
                .zip(&later)
                .all(|(c, f)| c.load(Ordering::Relaxed) > *f)
        });
        assert_eq!(workers.len(), 3);
        quit.store(true, Ordering::Release);
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
    });
}

#[test]
fn a_suspended_lwp_stays_suspended_across_stop_and_cont() {
    bounded(30, "suspend+stop", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let t = p
                .create_lwp(td, LwpBuilder::new().cpu(1), spinner(stop.clone()))
                .unwrap();
            p.suspend(td, t).unwrap();
            yield_until(td, "suspended", || p.state(t) == Some(LwpState::Suspended));
            let q = p.clone();
            let ctl = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    q.stop();
                    q.cont();
                    td.yield_now();
                    0
                })
                .unwrap();
            // We are stopped too at our next switch point, and continued.
            p.wait(td, Some(ctl)).unwrap();
            assert_eq!(p.state(t), Some(LwpState::Suspended));
            stop.store(true, Ordering::Release);
            p.resume(t).unwrap();
            p.wait(td, Some(t)).unwrap();
            0
        })
    });
}

#[test]
fn signals_interrupt_sleeps_until_taken() {
    bounded(30, "signals", || {
        in_proc_ok(1, |td| {
            let p = td.proc().unwrap();
            assert!(td.sigpending().is_empty());
            p.signal(Signal::USR1);
            let me = td.lid().unwrap();
            p.signal_lwp(me, Signal::HUP).unwrap();
            assert!(td.sigpending().contains(Signal::USR1));
            let r = td.sleep(
                &0u8,
                Sleep::default()
                    .interruptible()
                    .timeout(Duration::from_secs(5)),
            );
            assert_eq!(r, Err(lwkt::SleepError::Interrupted));
            // The LWP's own first, then the process's.
            assert_eq!(td.sigtake(), Some(Signal::HUP));
            assert_eq!(td.sigtake(), Some(Signal::USR1));
            assert_eq!(td.sigtake(), None);
            let r = td.sleep(
                &0u8,
                Sleep::default()
                    .interruptible()
                    .timeout(Duration::from_millis(5)),
            );
            assert_eq!(r, Err(lwkt::SleepError::TimedOut));
            // A non-interruptible sleep is not disturbed by a pending signal.
            p.signal(Signal::TERM);
            assert!(td.sleep_for(Duration::from_millis(5)).is_ok());
            assert_eq!(td.sigtake(), Some(Signal::TERM));
            0
        })
    });
}

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NAME: Key<String> = Key::with_destructor(|v| LOG.lock().unwrap().push(format!("dtor {v}")));
static AGAIN: Key<u32> = Key::with_destructor(|v| LOG.lock().unwrap().push(format!("again {v}")));

#[test]
fn keys_destructors_run_at_exit_in_rounds() {
    bounded(30, "keys", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let t = p
                .create_lwp(td, LwpBuilder::new().cpu(1), |td| {
                    assert_eq!(NAME.get(td), None);
                    assert_eq!(NAME.set(td, "w1".into()), None);
                    assert_eq!(NAME.set(td, "w2".into()), Some("w1".into()));
                    assert_eq!(NAME.get(td).as_deref(), Some("w2"));
                    AGAIN.set(td, 9);
                    assert_eq!(AGAIN.delete(td), Some(9));
                    td.lwp_exit(4);
                })
                .unwrap();
            assert_eq!(p.wait(td, Some(t)).unwrap(), (t, 4));
            // Our own value is separate.
            assert_eq!(NAME.get(td), None);
            0
        })
    });
    assert_eq!(*LOG.lock().unwrap(), vec!["dtor w2".to_owned()]);
}

#[test]
fn lwpctl_tracks_cpu_and_switches() {
    bounded(30, "lwpctl", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let t = p
                .create_lwp(td, LwpBuilder::new().cpu(1), |td| {
                    let c = td.lwpctl().unwrap();
                    assert_eq!(c.cpu(), LwpCpu::On(1));
                    let before = c.switches();
                    for _ in 0..10 {
                        td.sleep_for(Duration::from_micros(10)).unwrap();
                    }
                    assert!(c.switches().wrapping_sub(before) >= 10);
                    assert_eq!(c.cpu(), LwpCpu::On(1));
                    0
                })
                .unwrap();
            let r = p.lwp_ref(t).unwrap();
            p.wait(td, Some(t)).unwrap();
            assert_eq!(r.ctl().cpu(), LwpCpu::Exited);
            0
        })
    });
}

/// Yields to one peer are handoffs (the yielder runs the peer on its own
/// stack): the yielder's `lwpctl` block still counts each as a switch and
/// says it is off the CPU meanwhile.
#[test]
fn lwpctl_counts_yield_handoffs() {
    bounded(30, "lwpctl handoff", || {
        in_proc_ok(1, |td| {
            let c = td.lwpctl().unwrap();
            let ctl = c.clone();
            let peer = td.spawn(move |td| {
                for _ in 0..10 {
                    // The LWP handed off to us: it is not on a CPU.
                    assert_eq!(ctl.cpu(), LwpCpu::None);
                    td.yield_now();
                }
            });
            let before = c.switches();
            for _ in 0..10 {
                td.yield_now();
            }
            assert!(c.switches().wrapping_sub(before) >= 10, "switches");
            assert_eq!(c.cpu(), LwpCpu::On(0));
            peer.join(td).unwrap();
            0
        })
    });
}

#[test]
fn ps_lists_pid_and_lid() {
    bounded(30, "ps", || {
        let rt = rt(1);
        let h = Proc::spawn_from(&rt.handle(), |td| {
            let _ = td.sleep(
                &1u8,
                Sleep::default()
                    .wmesg("napping")
                    .timeout(Duration::from_millis(300)),
            );
            0
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let ps = rt.handle().threads();
        let me = ps
            .iter()
            .find(|i| i.lwp.is_some())
            .expect("the LWP is listed");
        assert_eq!(me.lwp, Some((h.pid().get(), 1)));
        assert_eq!(me.wmesg, "napping");
        assert!(me.to_string().contains(&format!("{}.1", h.pid())));
        let lw = h.proc().lwps();
        assert_eq!(lw[0].state, LwpState::Sleep);
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
    });
}

#[test]
fn runtime_drop_cancels_processes() {
    let st = bounded(30, "drop", || {
        let rt = rt(2);
        let h = Proc::spawn_from(&rt.handle(), |td| loop {
            td.yield_now();
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        h.join_blocking()
    });
    assert_eq!(st, ExitStatus::Cancelled);
}

/// Dropping the runtime also ends LWPs that never ran: created, but never
/// picked (a lower priority than their spinning creator), here and on the
/// other CPU. The process still ends, cancelled, and nothing is left.
#[test]
fn runtime_drop_cancels_lwps_that_never_ran() {
    let st = bounded(30, "drop unstarted", || {
        let rt = rt(2);
        let created = Arc::new(AtomicUsize::new(0));
        let c2 = created.clone();
        let h = Proc::spawn_from(&rt.handle(), move |td| {
            let p = td.proc().unwrap();
            // CPU 1 is kept busy at a higher priority first, by a spinning
            // LWP, so that the low one sent there after it (creations from
            // one CPU arrive in order) never gets a turn.
            p.create_lwp(td, LwpBuilder::new().cpu(1), |td| loop {
                td.yield_now();
            })
            .unwrap();
            for cpu in [0, 0, 1] {
                let b = LwpBuilder::new()
                    .cpu(cpu)
                    .priority(lwkt::Priority::IDLE_WORK);
                p.create_lwp(td, b, |_| unreachable!("never picked"))
                    .unwrap();
            }
            c2.store(1, Ordering::Release);
            loop {
                td.yield_now();
            }
        })
        .unwrap();
        let start = Instant::now();
        while created.load(Ordering::Acquire) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "creator stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
        let p = h.proc().clone();
        assert_eq!(p.lwps().len(), 5);
        drop(rt);
        let st = h.join_blocking();
        assert!(p.lwps().is_empty(), "{:?}", p.lwps());
        st
    });
    assert_eq!(st, ExitStatus::Cancelled);
}

/// A small deterministic generator (xorshift64*), so a failing seed can be
/// replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Returned,
    Unwound,
}

/// Records how a worker's body ended, exactly once.
struct FateGuard {
    lid: u32,
    done: bool,
    fates: Arc<Mutex<std::collections::HashMap<u32, Fate>>>,
}
impl Drop for FateGuard {
    fn drop(&mut self) {
        let f = if self.done {
            Fate::Returned
        } else {
            Fate::Unwound
        };
        let old = self.fates.lock().unwrap().insert(self.lid, f);
        assert!(old.is_none(), "LWP {} ended twice", self.lid);
    }
}

/// Randomised stress across CPUs: create (plain, detached, suspended),
/// suspend, continue, wait(any), detach, signal, and at the end either a
/// kill from outside or an orderly wait for everyone. Every LWP is
/// accounted for exactly once: collected by `wait`, reaped as detached,
/// or killed; no thread is left (`threads_alive` back to 0).
#[test]
fn randomised_lifecycle_stress_accounts_for_every_lwp() {
    for seed in 1..=24u64 {
        bounded(60, &format!("stress seed {seed}"), move || stress_one(seed));
    }
}

fn stress_one(seed: u64) {
    let rt = rt(2);
    let fates: Arc<Mutex<std::collections::HashMap<u32, Fate>>> = Arc::default();
    let collected: Arc<Mutex<Vec<u32>>> = Arc::default();
    let detached: Arc<Mutex<Vec<u32>>> = Arc::default();
    let created: Arc<Mutex<Vec<u32>>> = Arc::default();
    let refs: Arc<Mutex<Vec<lwkt::lwp::LwpRef>>> = Arc::default();
    let r2 = refs.clone();
    let kill_at_end = seed % 2 == 0;
    let (f2, c2, d2, cr2) = (
        fates.clone(),
        collected.clone(),
        detached.clone(),
        created.clone(),
    );
    let killer_go = Arc::new(AtomicBool::new(false));
    let kg = killer_go.clone();
    let h = Proc::spawn_from(&rt.handle(), move |td| {
        let p = td.proc().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let pick = |rng: &mut Rng, v: &Mutex<Vec<u32>>| {
            let v = v.lock().unwrap();
            (!v.is_empty()).then(|| Lid::new(v[rng.below(v.len() as u64) as usize]).unwrap())
        };
        for _ in 0..60 {
            match rng.below(8) {
                0..=2 => {
                    let mut flags = LwpFlags::NONE;
                    let det = rng.below(4) == 0;
                    if det {
                        flags = flags | LwpFlags::DETACHED;
                    }
                    if rng.below(4) == 0 {
                        flags = flags | LwpFlags::SUSPENDED;
                    }
                    let iters = rng.below(20);
                    let sleepy = rng.below(2) == 0;
                    let fates = f2.clone();
                    let lid_cell = Arc::new(AtomicUsize::new(0));
                    let lc = lid_cell.clone();
                    let lid = p
                        .create_lwp(
                            td,
                            LwpBuilder::new().cpu(rng.below(2) as usize).flags(flags),
                            move |td| {
                                let mut g = FateGuard {
                                    lid: td.lid().unwrap().get(),
                                    done: false,
                                    fates,
                                };
                                for _ in 0..iters {
                                    if sleepy {
                                        let r = td.sleep(
                                            &0u8,
                                            Sleep::default()
                                                .interruptible()
                                                .timeout(Duration::from_micros(100)),
                                        );
                                        if r == Err(lwkt::SleepError::Interrupted) {
                                            while td.sigtake().is_some() {}
                                        }
                                    } else {
                                        td.yield_now();
                                    }
                                }
                                let _ = lc.load(Ordering::Relaxed);
                                g.done = true;
                                g.lid as i32
                            },
                        )
                        .unwrap();
                    lid_cell.store(lid.get() as usize, Ordering::Relaxed);
                    cr2.lock().unwrap().push(lid.get());
                    if let Ok(r) = p.lwp_ref(lid) {
                        r2.lock().unwrap().push(r);
                    }
                    if det {
                        d2.lock().unwrap().push(lid.get());
                    }
                }
                3 => {
                    if let Some(l) = pick(&mut rng, &cr2) {
                        if let Err(e) = p.suspend(td, l) {
                            assert!(
                                [LwpError::ESRCH, LwpError::EINTR].contains(&e.errno()),
                                "suspend: {e}"
                            );
                        }
                    }
                }
                4 => {
                    if let Some(l) = pick(&mut rng, &cr2) {
                        if let Err(e) = p.resume(l) {
                            assert_eq!(e.errno(), LwpError::ESRCH, "resume: {e}");
                        }
                    }
                }
                5 => {
                    if let Some(l) = pick(&mut rng, &cr2) {
                        match p.detach(l) {
                            Ok(()) => d2.lock().unwrap().push(l.get()),
                            Err(e) => assert!(
                                [LwpError::ESRCH, LwpError::EINVAL].contains(&e.errno()),
                                "detach: {e}"
                            ),
                        }
                    }
                }
                6 => {
                    if let Some(l) = pick(&mut rng, &cr2) {
                        let _ = p.signal_lwp(l, Signal::USR1);
                    }
                }
                _ => match p.wait(td, None) {
                    Ok((l, v)) => {
                        assert_eq!(v, l.get() as i32, "exit value");
                        c2.lock().unwrap().push(l.get());
                    }
                    Err(e) => {
                        assert!(
                            [LwpError::ESRCH, LwpError::EDEADLK, LwpError::EINTR]
                                .contains(&e.errno()),
                            "wait: {e}"
                        );
                        while td.sigtake().is_some() {}
                    }
                },
            }
        }
        if kill_at_end {
            kg.store(true, Ordering::Release);
            loop {
                td.yield_now();
            }
        }
        // Orderly end: continue everyone, collect everyone.
        for l in cr2.lock().unwrap().clone() {
            let _ = p.resume(Lid::new(l).unwrap());
        }
        loop {
            match p.wait(td, None) {
                Ok((l, _)) => c2.lock().unwrap().push(l.get()),
                Err(e) if e.errno() == LwpError::ESRCH => break,
                Err(e) if e.errno() == LwpError::EINTR => while td.sigtake().is_some() {},
                Err(e) => panic!("seed {seed}: final wait: {e}"),
            }
        }
        0
    })
    .unwrap();
    if kill_at_end {
        let t = Instant::now();
        while !killer_go.load(Ordering::Acquire) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "seed {seed}: controller stuck"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        h.kill();
        assert_eq!(
            h.join_blocking(),
            ExitStatus::Killed(Signal::KILL),
            "seed {seed}"
        );
    } else {
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0), "seed {seed}");
    }
    let t = Instant::now();
    while rt.stats().total.threads_alive != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "seed {seed}: threads left"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let fates = fates.lock().unwrap();
    let collected = collected.lock().unwrap();
    let detached = detached.lock().unwrap();
    let created = created.lock().unwrap();
    for &l in created.iter() {
        let fate = fates.get(&l).copied();
        let c = collected.iter().filter(|&&x| x == l).count();
        let d = detached.contains(&l);
        assert!(c <= 1, "seed {seed}: LWP {l} collected {c} times");
        assert!(
            !(c == 1 && d),
            "seed {seed}: LWP {l} collected and detached"
        );
        assert!(
            fate.is_some() || kill_at_end,
            "seed {seed}: LWP {l} never ran to its end, and nothing killed it"
        );
        if c == 1 {
            // Collected: it finished its body (nobody kills before the end).
            assert_eq!(fate, Some(Fate::Returned), "seed {seed}: LWP {l}");
        } else if !d {
            // Neither collected nor detached: only a kill may end it.
            assert!(kill_at_end, "seed {seed}: LWP {l} left uncollected");
        }
    }
    assert!(
        fates.len() <= created.len(),
        "seed {seed}: one fate per LWP"
    );
    if !kill_at_end {
        assert_eq!(
            fates.len(),
            created.len(),
            "seed {seed}: every LWP ran to its end"
        );
    }
    // Every LWP's structure, read through a reference taken at creation
    // (a detached one may already be gone by then), is freed and exited.
    for r in refs.lock().unwrap().iter() {
        assert!(r.is_freed(), "seed {seed}: LWP {} not freed", r.lid());
        assert_eq!(r.state(), LwpState::Zomb);
        assert_eq!(
            r.ctl().cpu(),
            LwpCpu::Exited,
            "seed {seed}: LWP {}",
            r.lid()
        );
    }
}

/// Two LWPs wait for the same target on different CPUs: exactly one
/// collects it, the other finds no candidate left (`ESRCH`).
#[test]
fn two_waiters_on_one_target_across_cpus() {
    for round in 0..20 {
        bounded(30, &format!("two waiters {round}"), || {
            in_proc_ok(2, |td| {
                let p = td.proc().unwrap();
                let go = Arc::new(AtomicBool::new(false));
                let g = go.clone();
                let target = p
                    .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                        while !g.load(Ordering::Acquire) {
                            td.yield_now();
                        }
                        9
                    })
                    .unwrap();
                let res = Arc::new(Mutex::new(Vec::new()));
                let mut ws = Vec::new();
                for cpu in 0..2 {
                    let (p2, r2) = (p.clone(), res.clone());
                    ws.push(
                        p.create_lwp(td, LwpBuilder::new().cpu(cpu), move |td| {
                            let r = p2.wait(td, Some(target));
                            r2.lock().unwrap().push(r.map_err(|e| e.errno()));
                            0
                        })
                        .unwrap(),
                    );
                }
                yield_until(td, "both waiters asleep", || {
                    ws.iter().all(|&w| p.state(w) == Some(LwpState::Sleep))
                });
                go.store(true, Ordering::Release);
                for w in ws {
                    p.wait(td, Some(w)).unwrap();
                }
                let mut r = res.lock().unwrap().clone();
                r.sort();
                assert_eq!(r, vec![Ok((target, 9)), Err(LwpError::ESRCH)]);
                0
            })
        });
    }
}

/// Detaching the LWP another waits for ends that wait with `ESRCH` (a
/// detached LWP is no candidate), and the detached LWP is reaped by
/// itself when it exits.
#[test]
fn detach_while_waited_for_gives_esrch() {
    bounded(30, "wait vs detach", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let g = go.clone();
            let target = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    while !g.load(Ordering::Acquire) {
                        td.yield_now();
                    }
                    0
                })
                .unwrap();
            let r = p.lwp_ref(target).unwrap();
            let out = Arc::new(Mutex::new(None));
            let (p2, o2) = (p.clone(), out.clone());
            let w = p
                .create_lwp(td, LwpBuilder::new(), move |td| {
                    *o2.lock().unwrap() = Some(p2.wait(td, Some(target)).map_err(|e| e.errno()));
                    0
                })
                .unwrap();
            yield_until(td, "the waiter", || p.state(w) == Some(LwpState::Sleep));
            p.detach(target).unwrap();
            p.wait(td, Some(w)).unwrap();
            assert_eq!(out.lock().unwrap().take(), Some(Err(LwpError::ESRCH)));
            go.store(true, Ordering::Release);
            yield_until(td, "the detached LWP reaped", || r.is_freed());
            assert_eq!(p.state(target), None);
            0
        })
    });
}

/// A new LWP starts `Stop` while its process is stopped, and `Suspended`
/// when its creator has a suspend request pending.
#[test]
fn start_state_follows_the_process_and_the_creator() {
    bounded(30, "start states", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            // Stopped process: a helper on CPU 1 stops it, creates, then
            // looks at the new LWP's state before continuing.
            let (p2, seen) = (p.clone(), Arc::new(Mutex::new(None)));
            let s2 = seen.clone();
            let h = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    p2.stop();
                    let l = p2.create_lwp(td, LwpBuilder::new(), |_| 0).unwrap();
                    *s2.lock().unwrap() = Some((l, p2.state(l)));
                    p2.cont();
                    0
                })
                .unwrap();
            p.wait(td, Some(h)).unwrap();
            let (l, st) = seen.lock().unwrap().take().unwrap();
            assert_eq!(st, Some(LwpState::Stop));
            p.wait(td, Some(l)).unwrap();

            // A creator with a suspend request pending (it has not reached
            // a switch point yet) creates its LWP suspended.
            let asked = Arc::new(AtomicBool::new(false));
            let (a2, p3, s3) = (asked.clone(), p.clone(), seen.clone());
            let c = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    while !a2.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let l = p3.create_lwp(td, LwpBuilder::new(), |_| 0).unwrap();
                    *s3.lock().unwrap() = Some((l, p3.state(l)));
                    td.yield_now(); // suspended here
                    0
                })
                .unwrap();
            yield_until(td, "the creator to run", || {
                p.state(c) == Some(LwpState::OnProc)
            });
            p.suspend(td, c).unwrap();
            asked.store(true, Ordering::Release);
            yield_until(td, "the creator suspended", || {
                p.state(c) == Some(LwpState::Suspended)
            });
            let (l, st) = seen.lock().unwrap().take().unwrap();
            assert_eq!(st, Some(LwpState::Suspended));
            p.resume(c).unwrap();
            p.resume(l).unwrap();
            p.wait(td, Some(c)).unwrap();
            p.wait(td, Some(l)).unwrap();
            0
        })
    });
}

/// LWP state changes appear in the event trace, on the CPU that made them.
#[test]
fn lwp_state_changes_are_traced() {
    bounded(30, "lwp trace", || {
        let rt = Runtime::builder().cpus(2).trace(true).build().unwrap();
        let h = Proc::spawn_from(&rt.handle(), |td| {
            let p = td.proc().unwrap();
            let t = p
                .create_lwp(td, LwpBuilder::new().flags(LwpFlags::SUSPENDED), |_| 0)
                .unwrap();
            p.resume(t).unwrap();
            p.wait(td, Some(t)).unwrap();
            0
        })
        .unwrap();
        let pid = h.pid().get();
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
        let json = rt.trace().stop().to_chrome_json();
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let events = doc
            .get("traceEvents")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_else(|| doc.as_array().cloned().unwrap());
        let states: Vec<String> = events
            .iter()
            .filter_map(|e| e.get("name")?.as_str().map(str::to_owned))
            .filter(|n| n.starts_with(&format!("lwp {pid}.2 ")))
            .collect();
        // Created (IDL), suspended at its first stop point or by its
        // creator, continued (RUN), and a zombie.
        for want in ["IDL", "SUSPENDED", "RUN", "ZOMB"] {
            assert!(
                states.iter().any(|s| s.ends_with(want)),
                "no {want} event for lwp 2 in {states:?}"
            );
        }
    });
}

/// `wait` for the LWP just created gives it its turn at once (by handoff
/// when it is next in line). A target that only yields must not keep the
/// waiter busy: the waiter goes to sleep as usual, stays visible
/// (`Sleep`) and signalable (`EINTR`), and collects the target once it
/// exits. On one CPU (the handoff) and with the target elsewhere.
fn wait_for_a_yielding_new_lwp(cpus: usize) -> ExitStatus {
    in_proc(cpus, move |td| {
        let p = td.proc().unwrap();
        let me = td.lid().unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(AtomicUsize::new(0));
        let (g, t) = (go.clone(), turns.clone());
        let signaller = {
            let p2 = p.clone();
            p.create_lwp(td, LwpBuilder::new(), move |td| {
                yield_until(td, "the waiter asleep", || {
                    p2.state(me) == Some(LwpState::Sleep)
                });
                p2.signal_lwp(me, Signal::USR1).unwrap();
                0
            })
            .unwrap()
        };
        let target = p
            .create_lwp(td, LwpBuilder::new().cpu(cpus - 1), move |td| {
                while !g.load(Ordering::Acquire) {
                    t.fetch_add(1, Ordering::Relaxed);
                    td.yield_now();
                }
                12
            })
            .unwrap();
        let r = p.wait(td, Some(target));
        assert_eq!(r.map_err(|e| e.errno()), Err(LwpError::EINTR));
        if cpus == 1 {
            // It had its turn (by handoff) before we slept.
            assert!(turns.load(Ordering::Relaxed) > 0, "the target never ran");
        }
        assert_eq!(td.sigtake(), Some(Signal::USR1));
        assert_eq!(p.wait(td, Some(signaller)).unwrap(), (signaller, 0));
        go.store(true, Ordering::Release);
        assert_eq!(p.wait(td, Some(target)).unwrap(), (target, 12));
        assert_eq!(p.lwps().len(), 1, "everything collected");
        0
    })
}

#[test]
fn wait_for_a_yielding_new_lwp_stays_visible_and_signalable() {
    for cpus in [1, 2] {
        bounded(30, &format!("yielding target, {cpus} cpus"), move || {
            assert_eq!(wait_for_a_yielding_new_lwp(cpus), ExitStatus::Exited(0));
        });
    }
}

static SEEN: Key<u32> = Key::new();

/// A collected LWP's structure is reused for a later LWP only when nothing
/// else refers to it: an `LwpRef` keeps the exited LWP's own lid, state and
/// exit value; a reused one starts afresh (no LWP-specific data, no exit
/// value, its own lid and `lwpctl` block).
#[test]
fn freed_lwp_structures_are_reused_only_when_unreferenced() {
    bounded(30, "reuse", || {
        in_proc_ok(1, |td| {
            let p = td.proc().unwrap();
            let a = p
                .create_lwp(td, LwpBuilder::new(), |td| {
                    SEEN.set(td, 1);
                    21
                })
                .unwrap();
            let ra = p.lwp_ref(a).unwrap();
            assert_eq!(p.wait(td, Some(a)).unwrap(), (a, 21));
            for round in 0..50 {
                let b = p
                    .create_lwp(td, LwpBuilder::new(), move |td| {
                        // Nothing left from an earlier LWP here.
                        assert_eq!(SEEN.get(td), None, "round {round}");
                        assert_eq!(td.lwpctl().unwrap().switches(), 0);
                        SEEN.set(td, 2);
                        round
                    })
                    .unwrap();
                let rb = (round % 2 == 0).then(|| p.lwp_ref(b).unwrap());
                if let Some(rb) = &rb {
                    assert_eq!(rb.exit_value(), None, "not run yet");
                }
                assert_eq!(p.wait(td, Some(b)).unwrap(), (b, round));
                if let Some(rb) = rb {
                    assert_eq!((rb.lid(), rb.exit_value()), (b, Some(round)));
                    assert!(rb.is_freed());
                }
                // The referenced, collected LWP is untouched.
                assert_eq!(ra.lid(), a);
                assert_eq!(ra.exit_value(), Some(21));
                assert_eq!(ra.state(), LwpState::Zomb);
                assert!(ra.is_freed());
                assert_eq!(ra.ctl().cpu(), LwpCpu::Exited);
            }
            0
        })
    });
}

/// A thread that cannot be created (here: a CPU the runtime does not
/// have) is `EAGAIN`, from inside the process and from outside, and
/// leaves no record behind: the process goes on as if nothing happened.
#[test]
fn a_failed_create_leaves_no_trace() {
    bounded(30, "failed create", || {
        let rt = rt(2);
        let h = Proc::spawn_from(&rt.handle(), |td| {
            let p = td.proc().unwrap();
            let e = p
                .create_lwp(td, LwpBuilder::new().cpu(9), |_| 1)
                .unwrap_err();
            assert!(matches!(e, LwpError::Create { .. }), "{e:?}");
            assert_eq!(e.errno(), LwpError::EAGAIN);
            assert!(e.to_string().contains("CPU 9"), "{e}");
            assert_eq!(p.lwps().len(), 1, "a record was left behind");
            let l = p.create_lwp(td, LwpBuilder::new().cpu(1), |_| 5).unwrap();
            assert_eq!(p.wait(td, Some(l)).unwrap(), (l, 5));
            assert_eq!(p.wait(td, None).unwrap_err().errno(), LwpError::ESRCH);
            0
        })
        .unwrap();
        let e = h
            .proc()
            .create_lwp_from(LwpBuilder::new().cpu(2), |_| 1)
            .unwrap_err();
        assert_eq!(e.errno(), LwpError::EAGAIN, "{e}");
        assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
    });
}

/// A collected LWP's structure is the next LWP's, and so is the control
/// block its thread's references use: through structures recycled between
/// the two CPUs, a suspend still reaches the new thread (kicking it out of
/// its sleep, on the right CPU) and a resume lets it finish.
#[test]
fn recycled_lwp_structures_reach_their_new_thread_across_cpus() {
    bounded(60, "recycled control blocks", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let chan = Arc::new(0u8);
            for round in 0..20 {
                let cpu = round % 2;
                let c2 = chan.clone();
                let t = p
                    .create_lwp(td, LwpBuilder::new().cpu(cpu), move |td| {
                        let r = td.sleep(&*c2, Sleep::default().interruptible());
                        assert_eq!(r, Err(lwkt::SleepError::Interrupted), "round {round}");
                        assert_eq!(td.cpu(), cpu, "round {round}");
                        round as i32
                    })
                    .unwrap();
                yield_until(td, "the sleeper", || p.state(t) == Some(LwpState::Sleep));
                p.suspend(td, t).unwrap();
                yield_until(td, "the suspension", || {
                    p.state(t) == Some(LwpState::Suspended)
                });
                p.resume(t).unwrap();
                assert_eq!(p.wait(td, Some(t)).unwrap(), (t, round as i32));
            }
            0
        })
    });
}

/// Where a waiter LWP leaves what its `wait` returned (errors as errno).
type WaitSlot = Arc<Mutex<Option<Result<(Lid, i32), i32>>>>;

/// Makes a spinning LWP (the target, running until `go`) and an LWP on
/// CPU 1 that waits for it by name, its result in the returned slot;
/// returns once the waiter sleeps.
fn waiter_on_cpu1(td: &mut CurThread, p: &Proc, go: &Arc<AtomicBool>) -> (Lid, Lid, WaitSlot) {
    let target = p
        .create_lwp(td, LwpBuilder::new(), spinner(go.clone()))
        .unwrap();
    let out = Arc::new(Mutex::new(None));
    let (p2, o2) = (p.clone(), out.clone());
    let w = p
        .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
            *o2.lock().unwrap() = Some(p2.wait(td, Some(target)).map_err(|e| e.errno()));
            0
        })
        .unwrap();
    yield_until(td, "the waiter asleep", || {
        p.state(w) == Some(LwpState::Sleep)
    });
    (target, w, out)
}

/// Holds CPU 1 with a plain thread that has no switch point until the
/// returned flag is set; returns once it runs.
fn hog_cpu1(td: &mut CurThread) -> (Arc<AtomicBool>, lwkt::JoinHandle<()>) {
    let (hogging, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (h2, r2) = (hogging.clone(), release.clone());
    let hog = lwkt::ThreadBuilder::new()
        .cpu(1)
        .spawn(td, move |_| {
            h2.store(true, Ordering::Release);
            while !r2.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    yield_until(td, "the hog running", || hogging.load(Ordering::Acquire));
    (release, hog)
}

/// Sets `flag` from an OS thread after `d`.
fn set_after(d: Duration, flag: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(d);
        flag.store(true, Ordering::Release);
    })
}

/// The waiter of an LWP that gets detached is done waiting (its wait ends
/// with `ESRCH`) even before it runs again: an LWP that then waits for
/// that waiter is not in a deadlock. Here the first waiter cannot run for
/// a while (a plain thread holds its CPU without a switch point), so the
/// second wait looks while the first is still marked as waiting.
#[test]
fn a_wait_ended_by_detach_is_no_deadlock_before_the_waiter_runs() {
    bounded(30, "detach ends wait", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let (target, w, out) = waiter_on_cpu1(td, &p, &go);
            // Hold CPU 1 without a switch point until released.
            let (release, hog) = hog_cpu1(td);
            let timer = set_after(Duration::from_millis(200), release);
            p.detach(target).unwrap();
            // `w` is still marked as waiting; the only other live LWP is
            // detached. Not a deadlock: `w` will return.
            assert_eq!(p.wait(td, Some(w)).unwrap(), (w, 0));
            assert_eq!(out.lock().unwrap().take(), Some(Err(LwpError::ESRCH)));
            go.store(true, Ordering::Release);
            hog.join(td).unwrap();
            timer.join().unwrap();
            0
        })
    });
}

/// The same for a wait whose target another LWP collects first (a wait
/// for a zombie by name takes it, whoever else waits for it): the first
/// waiter's wait is over (`ESRCH`) before it runs again, so an LWP that
/// then waits for that waiter is not in a deadlock.
#[test]
fn a_wait_ended_by_another_collector_is_no_deadlock_before_the_waiter_runs() {
    bounded(30, "collect ends wait", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let (target, w, out) = waiter_on_cpu1(td, &p, &go);
            // Hold CPU 1 without a switch point until released.
            let (release, hog) = hog_cpu1(td);
            // The target exits (on this CPU) while its waiter cannot run.
            go.store(true, Ordering::Release);
            yield_until(td, "the target a zombie", || {
                p.state(target) == Some(LwpState::Zomb)
            });
            assert_eq!(p.wait(td, Some(target)).unwrap(), (target, 0));
            let timer = set_after(Duration::from_millis(200), release);
            // `w` is still marked as waiting, for an LWP that is gone. Not
            // a deadlock: `w` will return.
            assert_eq!(p.wait(td, Some(w)).unwrap(), (w, 0));
            assert_eq!(out.lock().unwrap().take(), Some(Err(LwpError::ESRCH)));
            hog.join(td).unwrap();
            timer.join().unwrap();
            0
        })
    });
}

/// An `LwpRef` held across its LWP's collection is then the only
/// reference to it (`refs() == 1`): the process keeps no structure a
/// reference still points at, so the next LWP gets one of its own and the
/// old reference goes on reading its own LWP (lid, exit value, freed).
#[test]
fn a_reference_held_across_collection_is_the_only_one_left() {
    bounded(30, "ref after collect", || {
        in_proc_ok(1, |td| {
            let p = td.proc().unwrap();
            let l = p.create_lwp(td, LwpBuilder::new(), |_| 5).unwrap();
            let r = p.lwp_ref(l).unwrap();
            assert_eq!(p.wait(td, Some(l)).unwrap(), (l, 5));
            assert!(r.is_freed());
            assert_eq!(r.refs(), 1);
            for v in 6..9 {
                let l2 = p.create_lwp(td, LwpBuilder::new(), move |_| v).unwrap();
                assert_eq!(p.wait(td, Some(l2)).unwrap(), (l2, v));
            }
            assert_eq!((r.lid(), r.exit_value(), r.is_freed()), (l, Some(5), true));
            assert_eq!(r.state(), LwpState::Zomb);
            assert_eq!(r.refs(), 1);
            0
        })
    });
}

/// Starts a thread on CPU 1 that sets `go` once LWP `lid` of `p` sleeps
/// (in a `wait`, in these tests); fails after 10 s.
fn release_when_asleep(
    td: &mut CurThread,
    p: &Proc,
    lid: Lid,
    go: Arc<AtomicBool>,
) -> lwkt::JoinHandle<()> {
    let p = p.clone();
    lwkt::ThreadBuilder::new()
        .cpu(1)
        .spawn(td, move |td| {
            let start = Instant::now();
            while p.state(lid) != Some(LwpState::Sleep) {
                assert!(start.elapsed() < Duration::from_secs(10), "never waited");
                td.yield_now();
            }
            go.store(true, Ordering::Release);
        })
        .unwrap()
}

/// A detached LWP may wait for others (as in NetBSD), and its wait is no
/// deadlock while a non-detached LWP can still exit. The seed's formula
/// (running + zombies - detached <= waiters) counts the detached waiter
/// among the waiters but not among the live, and said EDEADLK here.
#[test]
fn a_detached_lwp_waiting_for_a_running_one_is_no_deadlock() {
    bounded(30, "detached waiter", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let me = td.lid().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let g2 = go.clone();
            let worker = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    while !g2.load(Ordering::Acquire) {
                        td.yield_now();
                    }
                    7
                })
                .unwrap();
            p.detach(me).unwrap();
            // Let the worker go only once this LWP is asleep in its wait.
            let releaser = release_when_asleep(td, &p, me, go);
            assert_eq!(p.wait(td, None).map_err(|e| e.errno()), Ok((worker, 7)));
            releaser.join(td).unwrap();
            0
        });
    });
}

/// An LWP detached while it waits by name no longer counts as a waiter
/// against another LWP's `wait(None)`: while the awaited LWP runs, that wait
/// sleeps; when the named waiter collects it, nothing is left for the
/// other (`ESRCH`). The seed's formula counted the detached waiter on the
/// waiting side only and said `EDEADLK` at once.
#[test]
fn a_detached_waiter_does_not_count_against_another_waiter() {
    bounded(30, "two waiters, one detached", || {
        in_proc_ok(2, |td| {
            let p = td.proc().unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let worker = p
                .create_lwp(td, LwpBuilder::new().cpu(1), spinner(go.clone()))
                .unwrap();
            let p2 = p.clone();
            let named = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    assert_eq!(p2.wait(td, Some(worker)).map(|r| r.1), Ok(0));
                    0
                })
                .unwrap();
            yield_until(td, "the named waiter asleep", || {
                p.state(named) == Some(LwpState::Sleep)
            });
            // Detached while it waits: it leaves the count of waiters then.
            p.detach(named).unwrap();
            // Let the worker finish only once this LWP sleeps in its wait.
            let me = td.lid().unwrap();
            let releaser = release_when_asleep(td, &p, me, go);
            assert_eq!(
                p.wait(td, None).map_err(|e| e.errno()),
                Err(LwpError::ESRCH)
            );
            releaser.join(td).unwrap();
            0
        });
    });
}
