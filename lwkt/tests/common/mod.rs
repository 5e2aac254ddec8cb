#![allow(dead_code)]
//! Shared test helpers.

pub mod browser;
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

/// Yields until `cond` holds (or panics after 10 s, naming `what`), for a
/// test that waits, on an lwkt thread, for another thread to get somewhere.
pub fn yield_until(td: &mut lwkt::CurThread, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        td.yield_now();
    }
}

// -------------------------------------------------------------------
// Child processes: a test that can crash, hang or leave threads spinning
// re-runs itself in a child process (this test binary, `--exact NAME`),
// so the parent fails with a message and nothing is left behind.
// -------------------------------------------------------------------

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// Environment variable naming the test a child process is to run as the
/// child (its value is the test's name).
pub const CHILD_ENV: &str = "LWKT_TEST_CHILD";

/// Whether this process is the child run for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// What a child process did.
#[derive(Debug)]
pub struct ChildOutput {
    /// The test it ran.
    pub test: String,
    /// Its exit status (after the kill, when it timed out).
    pub status: Option<ExitStatus>,
    /// Whether it was killed for running past the timeout.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let from = v.len().saturating_sub(lines);
    v[from..].join("\n")
}

impl ChildOutput {
    /// Exited normally with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// The signal that killed it, if any (not counting our own kill).
    pub fn signal(&self) -> Option<i32> {
        if self.timed_out {
            return None;
        }
        self.status.and_then(|s| s.signal())
    }

    /// Whether the child actually ran the test (a misspelt name runs none
    /// and exits 0).
    pub fn ran_the_test(&self) -> bool {
        self.stdout.contains("running 1 test")
    }

    /// A one-paragraph account for assertion messages.
    pub fn describe(&self) -> String {
        let how = if self.timed_out {
            format!("did not finish within {:?}: killed", self.elapsed)
        } else {
            match self.status {
                Some(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => format!("exited with status {c} after {:?}", self.elapsed),
                    (None, Some(sig)) => format!(
                        "was killed by signal {sig} ({}) after {:?}",
                        signal_name(sig),
                        self.elapsed
                    ),
                    _ => format!("ended with {s:?}"),
                },
                None => "has no exit status".into(),
            }
        };
        format!(
            "child `{}` {how}\n--- child stderr (tail) ---\n{}\n--- child stdout (tail) ---\n{}\n---",
            self.test,
            tail(&self.stderr, 40),
            tail(&self.stdout, 15)
        )
    }

    /// Fails the test unless the child ran its test and exited 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.ran_the_test(),
            "the child ran no test (is the name `{}` right?)\n{}",
            self.test,
            self.describe()
        );
        assert!(self.success(), "{}", self.describe());
    }
}

/// Re-runs this test binary with `--exact test --nocapture`, `CHILD_ENV`
/// set to `test` and the extra `env`, and collects what it did. A child
/// still running after `timeout` is killed (`timed_out`).
pub fn run_child(test: &str, env: &[(&str, &str)], timeout: Duration) -> ChildOutput {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start the child test process");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    ChildOutput {
        test: test.to_string(),
        status,
        timed_out,
        elapsed,
        stdout,
        stderr,
    }
}

/// Runs `body` in a child process (this test re-run as `test`) and fails
/// unless it passes within `secs` seconds. In the child, runs `body`.
#[track_caller]
pub fn in_child(test: &str, secs: u64, body: impl FnOnce()) {
    if is_child(test) {
        body();
        return;
    }
    run_child(test, &[], Duration::from_secs(secs)).assert_success();
}
