//! Model checks the sleep interlock (`tsleep_interlock` / `wakeup`): a
//! sleeper registers in the bucket mask (the real `SleepMasks` code), then
//! fences and re-checks its condition; a waker changes the condition,
//! fences, then reads the mask. Whatever the interleaving, either the
//! sleeper sees the new condition or the waker sees the registration and
//! delivers a wakeup. A lost wakeup shows as a deadlock. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p lwkt --release --test loom_sleep`.
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use lwkt::__loom::{bucket_of, SleepMasks};

const CPU: usize = 1;

fn model(bit_already_set: bool) {
    loom::model(move || {
        let masks = Arc::new(SleepMasks::new(2));
        let cond = Arc::new(AtomicBool::new(false));
        let woken = Arc::new(AtomicBool::new(false));
        let chan = 0x1000usize;
        let b = bucket_of(chan);
        if bit_already_set {
            // The CPU kept its bit from an earlier sleep (bits are cleared
            // lazily): registration then makes no read-modify-write.
            masks.set(b, CPU);
        }
        let sleeper = {
            let (masks, cond, woken) = (masks.clone(), cond.clone(), woken.clone());
            thread::spawn(move || {
                // sleep_interlock: register, then order it before the check.
                masks.set(b, CPU);
                fence(Ordering::SeqCst);
                if cond.load(Ordering::Relaxed) {
                    return; // sleep_remove: the condition already holds
                }
                // sleep: wait for a delivered wakeup.
                while !woken.load(Ordering::Acquire) {
                    thread::park();
                }
            })
        };
        // wakeup: change the condition, fence, read the mask, deliver.
        cond.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut targets = Vec::new();
        masks.for_each(b, |c| targets.push(c));
        if targets.contains(&CPU) {
            woken.store(true, Ordering::Release);
            sleeper.thread().unpark();
        }
        sleeper.join().unwrap();
    });
}

#[test]
fn interlocked_sleep_never_misses_a_wakeup() {
    model(false);
}

#[test]
fn interlocked_sleep_never_misses_a_wakeup_with_a_stale_bit() {
    model(true);
}
