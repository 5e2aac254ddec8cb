//! The LWP layer: NetBSD's lifecycle on top of the core.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwkt::lwp::{ExitStatus, Lid, LwpBuilder, LwpError, LwpFlags, LwpState, Proc, Signal};
use lwkt::{CurThread, Runtime, Sleep};

fn rt(n: usize) -> Runtime {
    Runtime::builder().cpus(n).build().unwrap()
}

#[test]
fn first_lwp_exit_ends_process_with_status_zero() {
    let rt = rt(2);
    let h = Proc::spawn_from(&rt.handle(), |td| {
        assert_eq!(td.lid().unwrap().get(), 1);
        assert!(td.proc().is_some());
        7
    })
    .unwrap();
    assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
}

#[test]
fn wait_collects_exit_values() {
    let rt = rt(2);
    let h = Proc::spawn_from(&rt.handle(), |td| {
        let p = td.proc().unwrap();
        let a = p.create_lwp(td, LwpBuilder::new().cpu(1), |_| 11).unwrap();
        let b = p
            .create_lwp(td, LwpBuilder::new(), |td| {
                td.yield_now();
                22
            })
            .unwrap();
        assert_eq!(p.wait(td, Some(a)).unwrap(), (a, 11));
        let (l, v) = p.wait(td, None).unwrap();
        assert_eq!((l, v), (b, 22));
        // Nothing left to wait for.
        assert_eq!(p.wait(td, None).unwrap_err().errno(), LwpError::ESRCH);
        0
    })
    .unwrap();
    assert_eq!(h.join_blocking(), ExitStatus::Exited(0));
    let _ = (
        Lid::new(1),
        LwpFlags::NONE,
        LwpState::Run,
        Signal::KILL,
        Sleep::default(),
        Duration::ZERO,
        AtomicU32::new(0).load(Ordering::Relaxed),
        Arc::new(0),
        None::<&mut CurThread>.is_none(),
    );
}
