//! Model checks the join packet's state protocol: a joiner records where
//! it waits, announces itself with a SeqCst RMW, and sleeps only if the
//! thread had not finished; the thread writes its result, publishes DONE
//! with a SeqCst RMW, and wakes the joiner whose announcement it saw. The
//! joiner must always get the result (a lost wakeup is a deadlock; a
//! result read too early is a causality violation). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p lwkt --release --test loom_join`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use lwkt::__loom::{pk, PacketState};

struct Packet {
    state: PacketState,
    result: UnsafeCell<Option<u32>>,
    /// The joiner's record (`Ctl::joiner`): which waiter to wake.
    joiner: AtomicUsize,
    woken: AtomicBool,
}

// SAFETY: the result cell is handed over through DONE (the protocol under
// test); loom checks every access to it.
unsafe impl Sync for Packet {}

#[test]
fn joiner_always_gets_the_result() {
    loom::model(|| {
        let p = Arc::new(Packet {
            state: PacketState::new(),
            result: UnsafeCell::new(None),
            joiner: AtomicUsize::new(0),
            woken: AtomicBool::new(false),
        });
        let joiner = {
            let p = p.clone();
            thread::spawn(move || {
                if !p.state.is_done() {
                    p.joiner.store(42, Ordering::Relaxed);
                    if !p.state.announce(pk::WAITING) {
                        while !p.woken.load(Ordering::Acquire) && !p.state.is_done() {
                            thread::park();
                        }
                    }
                }
                assert!(p.state.is_done());
                // SAFETY: DONE seen with Acquire (is_done).
                p.result.with(|r| unsafe { *r })
            })
        };
        // The thread: result, then DONE, then wake a joiner it saw.
        // SAFETY: written before DONE; no reader before DONE.
        p.result.with_mut(|r| unsafe { *r = Some(7) });
        let prev = p.state.publish(pk::DONE);
        if prev & pk::WAITING != 0 {
            assert_eq!(
                p.joiner.load(Ordering::Relaxed),
                42,
                "the joiner's record is visible once its announcement is"
            );
            p.woken.store(true, Ordering::Release);
            joiner.thread().unpark();
        }
        assert_eq!(joiner.join().unwrap(), Some(7));
    });
}

#[test]
fn os_waiter_and_cancel_race() {
    // join_blocking announcing OS_WAITER against a cancellation: whoever
    // comes second sees the other.
    loom::model(|| {
        let st = Arc::new(PacketState::new());
        let waiter = {
            let st = st.clone();
            thread::spawn(move || {
                if !st.announce(pk::OS_WAITER) {
                    while !st.is_done() {
                        thread::park();
                    }
                }
            })
        };
        let prev = st.publish(pk::DONE | pk::CANCELLED);
        if prev & pk::OS_WAITER != 0 {
            waiter.thread().unpark();
        }
        waiter.join().unwrap();
    });
}
