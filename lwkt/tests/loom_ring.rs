//! Model checks the IPI FIFO (single producer, single consumer) with loom:
//! every interleaving of a producer and a consumer thread, FIFO order, no
//! value lost or duplicated, and a full ring refusing instead of
//! overwriting. Run with `RUSTFLAGS="--cfg loom" cargo test -p lwkt --test
//! loom_ring --release`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;

use lwkt::__loom::Ring;

#[test]
fn spsc_fifo_no_loss_under_all_interleavings() {
    loom::model(|| {
        let r = Arc::new(Ring::new(2));
        let p = {
            let r = r.clone();
            thread::spawn(move || {
                for i in 0..3u32 {
                    let mut v = i;
                    loop {
                        // SAFETY: this is the only producer thread.
                        match unsafe { r.push(v) } {
                            Ok(()) => break,
                            Err(back) => {
                                v = back;
                                thread::yield_now();
                            }
                        }
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 3 {
            // SAFETY: the model's main thread is the only consumer.
            match unsafe { r.pop() } {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        p.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
        // SAFETY: single consumer.
        assert!(unsafe { r.pop() }.is_none());
    });
}

#[test]
fn full_ring_refuses_and_len_is_bounded() {
    loom::model(|| {
        let r = Arc::new(Ring::new(2));
        let c = {
            let r = r.clone();
            thread::spawn(move || {
                // SAFETY: the only consumer.
                let a = unsafe { r.pop() };
                assert!(r.len() <= 2);
                a
            })
        };
        let mut accepted = 0;
        for i in 0..3u32 {
            // SAFETY: the only producer.
            if unsafe { r.push(i) }.is_ok() {
                accepted += 1;
            }
        }
        let popped = c.join().unwrap();
        // Either the consumer freed a slot in time (3 accepted) or not (2).
        let left = r.len();
        assert_eq!(accepted, left + usize::from(popped.is_some()));
        assert!((2..=3).contains(&accepted));
        if let Some(v) = popped {
            assert_eq!(v, 0, "FIFO: the first value comes out first");
        }
    });
}

#[test]
fn ready_means_pop_succeeds() {
    loom::model(|| {
        let r = Arc::new(Ring::new(2));
        let p = {
            let r = r.clone();
            thread::spawn(move || {
                for i in 0..3u32 {
                    // SAFETY: the only producer; the consumer below frees
                    // slots, so retry until there is room.
                    while unsafe { r.push(i) }.is_err() {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 3 {
            // SAFETY: the model's main thread is the only consumer.
            if unsafe { r.ready() } {
                // SAFETY: as above.
                let v = unsafe { r.pop() };
                assert!(v.is_some(), "ready() said a value was there");
                got.push(v.unwrap());
                assert!(r.len() <= 2, "len {} beyond capacity", r.len());
            } else {
                thread::yield_now();
            }
        }
        p.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
    });
}
