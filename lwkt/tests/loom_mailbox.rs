//! Model checks a CPU's mailbox: the parking protocol (an idle CPU parks
//! only when no message is flagged, and a sender wakes it when it has
//! announced parking), the attention bits, and the lazily allocated FIFO,
//! over every interleaving. Run with `RUSTFLAGS="--cfg loom" cargo test -p
//! lwkt --release --test loom_mailbox`.
//!
//! How parking is modelled: a sender wakes the owner exactly when its
//! `notify` swaps `parked` from true to false (it then unparks the OS
//! thread). The model's owner, once it has announced parking, waits for
//! precisely that: until `parked` reads false. A lost wakeup (no sender
//! ever clears the flag) leaves it spinning forever, which loom reports.
//! loom's own `park`/`unpark` are not used: it does not keep std's unpark
//! token across every state a thread can be in (tokio-rs/loom#249 and the
//! open PR #418), which shows here as false deadlocks.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use lwkt::__loom::{attn, Mailbox, Outbox, SendWait};

/// Runs `f` under loom with at most `n` preemptions per execution (as
/// tokio's models do): the three-thread models with spin loops explode
/// otherwise. Bugs of this protocol need at most two preemptions.
fn model_bounded(n: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(n);
    b.check(f);
}

/// Waits until `n` senders have finished before the owner joins them (a
/// sender's wake-up of an owner that has moved on must not reach it while
/// it waits in `join`: tokio-rs/loom#249).
fn wait_done(done: &AtomicUsize, n: usize) {
    while done.load(Ordering::Acquire) < n {
        thread::yield_now();
    }
}

/// A sender that never has to wait (the FIFO is big enough here).
struct NoWait;

impl SendWait for NoWait {
    fn poll_incoming(&self) {}
    fn abandon(&self) -> bool {
        false
    }
    fn nested(&self) -> bool {
        false
    }
}

/// The owner's idle loop, as `Core::idle` runs it: look at the attention
/// word, drain what it flags, and park only through prepare/finish.
fn owner_receives(mb: &Mailbox<u32>, want: usize) -> Vec<(usize, u32)> {
    let mut got = Vec::new();
    while got.len() < want {
        let a = mb.take_attention();
        if a & attn::EXT != 0 {
            got.extend(mb.take_external().into_iter().map(|m| (usize::MAX, m)));
        }
        mb.drain_groups(a, |src, m| got.push((src, m)));
        if got.len() >= want {
            break;
        }
        if mb.prepare_park() {
            // "park": until a sender's notify clears the flag.
            while mb.is_parked() {
                thread::yield_now();
            }
            mb.finish_park();
        }
    }
    got
}

#[test]
fn a_message_always_wakes_a_parking_cpu() {
    loom::model(|| {
        let mb: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(2, 4));
        let done = Arc::new(AtomicUsize::new(0));
        let sender = {
            let (mb, done) = (mb.clone(), done.clone());
            thread::spawn(move || {
                let out: Outbox<u32> = Outbox::new(2);
                out.send(1, &mb, 0, 7, &NoWait).unwrap();
                done.fetch_add(1, Ordering::Release);
            })
        };
        let got = owner_receives(&mb, 1);
        assert_eq!(got, vec![(1, 7)]);
        wait_done(&done, 1);
        sender.join().unwrap();
    });
}

#[test]
fn external_and_cpu_senders_both_arrive() {
    model_bounded(3, || {
        let mb: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(2, 4));
        let done = Arc::new(AtomicUsize::new(0));
        let cpu = {
            let (mb, done) = (mb.clone(), done.clone());
            thread::spawn(move || {
                let out: Outbox<u32> = Outbox::new(2);
                out.send(1, &mb, 0, 1, &NoWait).unwrap();
                done.fetch_add(1, Ordering::Release);
            })
        };
        let ext = {
            let (mb, done) = (mb.clone(), done.clone());
            thread::spawn(move || {
                mb.post_external(2);
                done.fetch_add(1, Ordering::Release);
            })
        };
        let mut got = owner_receives(&mb, 2);
        got.sort();
        assert_eq!(got, vec![(1, 1), (usize::MAX, 2)]);
        wait_done(&done, 2);
        cpu.join().unwrap();
        ext.join().unwrap();
    });
}

#[test]
fn grouped_sources_share_a_bit_without_losing_messages() {
    // 126 CPUs: sources 0, 1 and 2 share one attention bit.
    model_bounded(3, || {
        let mb: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(126, 4));
        assert_eq!(mb.src_bit(0), mb.src_bit(1));
        let done = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = [0usize, 1]
            .into_iter()
            .map(|src| {
                let (mb, done) = (mb.clone(), done.clone());
                thread::spawn(move || {
                    let out: Outbox<u32> = Outbox::new(126);
                    out.send(src, &mb, 5, src as u32 + 10, &NoWait).unwrap();
                    done.fetch_add(1, Ordering::Release);
                })
            })
            .collect();
        let mut got = owner_receives(&mb, 2);
        got.sort();
        assert_eq!(got, vec![(0, 10), (1, 11)]);
        wait_done(&done, 2);
        for s in senders {
            s.join().unwrap();
        }
    });
}
