//! Model checks the token word protocol (exclusive, shared, try, release,
//! the exclusive-request bit, downgrade, only the holder writing an
//! exclusive word) with loom over every interleaving
//! of 2-3 threads. Run with `RUSTFLAGS="--cfg loom" cargo test -p lwkt
//! --release --test loom_token`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use lwkt::__loom::{Try, Word, EXCLREQ, EXCLUSIVE};

/// Thread identities are 4-aligned addresses; any such nonzero value works.
const fn id(n: usize) -> usize {
    n * 8
}

/// Spins (yielding to the model) until `f` acquires.
fn until(f: impl Fn() -> Try) {
    while f() != Try::Acquired {
        thread::yield_now();
    }
}

#[test]
fn exclusive_holders_exclude_each_other() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let ths: Vec<_> = (1..=2usize)
            .map(id)
            .map(|me| {
                let (w, inside) = (w.clone(), inside.clone());
                thread::spawn(move || {
                    until(|| w.try_exclusive(me, true));
                    assert_eq!(
                        inside.fetch_add(1, Ordering::Relaxed),
                        0,
                        "two exclusive holders"
                    );
                    inside.fetch_sub(1, Ordering::Relaxed);
                    w.release_exclusive();
                })
            })
            .collect();
        for t in ths {
            t.join().unwrap();
        }
        assert_eq!(w.count.load(Ordering::Relaxed) & !EXCLREQ, 0);
    });
}

#[test]
fn shared_and_exclusive_never_overlap() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        let readers = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(AtomicUsize::new(0));
        let r = {
            let (w, readers, writer) = (w.clone(), readers.clone(), writer.clone());
            thread::spawn(move || {
                until(|| w.try_shared(id(1), false));
                readers.fetch_add(1, Ordering::Relaxed);
                assert_eq!(writer.load(Ordering::Relaxed), 0, "shared during exclusive");
                readers.fetch_sub(1, Ordering::Relaxed);
                w.release_shared();
            })
        };
        until(|| w.try_exclusive(id(2), true));
        writer.store(1, Ordering::Relaxed);
        assert_eq!(
            readers.load(Ordering::Relaxed),
            0,
            "exclusive during shared"
        );
        writer.store(0, Ordering::Relaxed);
        w.release_exclusive();
        r.join().unwrap();
        assert_eq!(w.count.load(Ordering::Relaxed) & !EXCLREQ, 0);
    });
}

#[test]
fn try_never_sets_the_request_bit_and_recursion_is_detected() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        assert_eq!(w.try_exclusive(id(1), false), Try::Acquired);
        assert_eq!(w.try_exclusive(id(1), false), Try::Recursive);
        assert_eq!(w.try_shared(id(1), true), Try::Recursive);
        let other = {
            let w = w.clone();
            thread::spawn(move || (w.try_exclusive(id(2), false), w.try_shared(id(2), false)))
        };
        let (x, s) = other.join().unwrap();
        assert_eq!(x, Try::Busy);
        assert_eq!(s, Try::Busy);
        assert_eq!(
            w.count.load(Ordering::Relaxed),
            id(1) | EXCLUSIVE,
            "a try must not set EXCLREQ"
        );
        w.release_exclusive();
    });
}

#[test]
fn exclusive_request_holds_back_new_single_token_shared_requests() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        // Thread 1 holds it shared.
        assert_eq!(w.try_shared(id(1), true), Try::Acquired);
        // Thread 2 asks exclusively, blocking: the request bit goes up.
        assert_eq!(w.try_exclusive(id(2), true), Try::Busy);
        assert_ne!(w.count.load(Ordering::Relaxed) & EXCLREQ, 0);
        let late = {
            let w = w.clone();
            // A new shared requester that honours the bit stays out; one
            // that may ignore it (holds other tokens) gets in.
            thread::spawn(move || (w.try_shared(id(3), true), w.try_shared(id(4), false)))
        };
        let (honouring, ignoring) = late.join().unwrap();
        assert_eq!(honouring, Try::Busy);
        assert_eq!(ignoring, Try::Acquired);
        let releaser = {
            let w = w.clone();
            thread::spawn(move || {
                w.release_shared();
                w.release_shared();
            })
        };
        until(|| w.try_exclusive(id(2), true));
        releaser.join().unwrap();
        assert_eq!(
            w.count.load(Ordering::Relaxed),
            id(2) | EXCLUSIVE,
            "acquisition clears EXCLREQ"
        );
        w.release_exclusive();
    });
}

/// While the word is held exclusively only its holder writes it, so the
/// holder's release can be a plain store: a blocking exclusive requester
/// (spinning) and a one-shot shared try race with the holder's work and
/// release and never change the word the holder sees (shared-held words
/// alone get the request bit); the requester then gets the token.
#[test]
fn nobody_but_the_holder_writes_an_exclusive_word() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        assert_eq!(w.try_exclusive(id(1), true), Try::Acquired);
        let x = {
            let w = w.clone();
            thread::spawn(move || {
                until(|| w.try_exclusive(id(2), true));
                assert_eq!(
                    w.count.load(Ordering::Relaxed),
                    id(2) | EXCLUSIVE,
                    "someone else wrote an exclusive word"
                );
                w.release_exclusive();
            })
        };
        let s = {
            let w = w.clone();
            thread::spawn(move || {
                if w.try_shared(id(3), true) == Try::Acquired {
                    w.release_shared();
                }
            })
        };
        assert_eq!(
            w.count.load(Ordering::Relaxed),
            id(1) | EXCLUSIVE,
            "someone else wrote an exclusive word"
        );
        w.release_exclusive();
        x.join().unwrap();
        s.join().unwrap();
        assert_eq!(w.count.load(Ordering::Relaxed) & !EXCLREQ, 0);
    });
}

#[test]
fn downgrade_keeps_exclusive_requesters_out_until_release() {
    loom::model(|| {
        let w = Arc::new(Word::new());
        assert_eq!(w.try_exclusive(id(1), true), Try::Acquired);
        let done = Arc::new(AtomicUsize::new(0));
        let x = {
            let (w, done) = (w.clone(), done.clone());
            thread::spawn(move || {
                until(|| w.try_exclusive(id(2), true));
                assert_eq!(
                    done.load(Ordering::Relaxed),
                    1,
                    "got in before the shared release"
                );
                w.release_exclusive();
            })
        };
        w.downgrade(1);
        assert_eq!(w.shared_count(), 1);
        done.store(1, Ordering::Relaxed);
        w.release_shared();
        x.join().unwrap();
    });
}

/// A token's state is freed only when no reference points at it. A holder
/// (a leaked guard's reference) switches out (pending count up, word
/// released), tries to switch back in (word taken, pending count down; the
/// word may be sealed for a moment) and finally drops its reference, held
/// or still pending, while the owner of the token retires the state.
/// Whenever `try_retire` says "free", the holder must be done with it.
#[test]
fn token_state_is_retired_only_when_unreferenced() {
    use lwkt::__loom::RawToken;
    loom::model(|| {
        // The model checks the decision only; the state is never freed.
        // SAFETY: `alloc` returns a valid, initialised, owned allocation;
        // reading it out moves the value (the allocation is leaked).
        let raw = Arc::new(unsafe { std::ptr::read(RawToken::alloc("t")) });
        let live = Arc::new(loom::sync::atomic::AtomicBool::new(true));
        let me = id(1);
        assert_eq!(raw.word.try_exclusive(me, false), Try::Acquired);
        let holder = {
            let (raw, live) = (raw.clone(), live.clone());
            thread::spawn(move || {
                // Switch out: count pending, then release.
                raw.add_pending();
                raw.word.release_exclusive();
                // Switch in, if the word can be taken (not sealed) in two
                // tries.
                let mut held = false;
                for _ in 0..2 {
                    if raw.word.try_exclusive(me, false) == Try::Acquired {
                        raw.sub_pending();
                        held = true;
                        break;
                    }
                    thread::yield_now();
                }
                // Exit: the reference goes (released first if held).
                if held {
                    raw.add_pending();
                    raw.word.release_exclusive();
                }
                live.store(false, Ordering::SeqCst);
                raw.sub_pending();
            })
        };
        let mut freed = false;
        for _ in 0..2 {
            if raw.try_retire() {
                assert!(
                    !live.load(Ordering::SeqCst),
                    "the state was judged free while a reference still pointed at it"
                );
                freed = true;
                break;
            }
            thread::yield_now();
        }
        holder.join().unwrap();
        if !freed {
            assert!(raw.try_retire(), "unreferenced state must be retirable");
        }
    });
}
