#![allow(dead_code)]
//! Shared test helpers.

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own OS thread and fails the test with a message if it
/// does not finish within `secs` (so a hang fails instead of stalling CI).
/// A panic inside `f` is re-raised here.
pub fn bounded<R: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name(format!("bounded:{what}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(());
            r
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => match h.join().unwrap() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(_) => panic!("{what}: did not finish within {secs} s (hang or lost wakeup)"),
    }
}
