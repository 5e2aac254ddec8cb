//! The guard page under every thread stack: an overflow faults instead of
//! running into the neighbouring memory (often another thread's stack),
//! and the fault is reported with the lwkt thread's name and CPU.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use lwkt::{Runtime, MIN_STACK_SIZE};

mod common;
use common::bounded;

const CHILD: &str = "LWKT_STACK_GUARD_CHILD";
/// Exit code of a child whose recursion ran past the guard unharmed.
const RAN_PAST_GUARD: i32 = 42;

/// Recurses until the stack is exhausted. `top` is an address near the top
/// of the stack; running more than the stack plus two pages below it
/// without a fault means the guard is missing.
#[inline(never)]
fn recurse(top: usize, depth: u64) -> u64 {
    let frame = [depth; 32];
    let here = std::hint::black_box(&frame) as *const _ as usize;
    if top.saturating_sub(here) > MIN_STACK_SIZE + 2 * 4096 {
        std::process::exit(RAN_PAST_GUARD);
    }
    std::hint::black_box(recurse(top, depth + 1)) + frame[depth as usize % 32]
}

#[test]
fn stack_overflow_faults_on_the_guard_page() {
    bounded(60, "stack guard", stack_overflow_body);
}

fn stack_overflow_body() {
    if std::env::var_os(CHILD).is_some() {
        let rt = Runtime::builder()
            .cpus(1)
            .stack_size(MIN_STACK_SIZE)
            .build()
            .unwrap();
        rt.block_on(|td| {
            // A neighbour stack mapped right below ours, so that a missing
            // guard would let the recursion run on into mapped memory.
            let h = td.spawn(|td| td.park());
            let top = 0u8;
            let top = &top as *const u8 as usize;
            let n = recurse(top, 0);
            drop(h);
            n
        });
        unreachable!("the recursion returned");
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "stack_overflow_faults_on_the_guard_page",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child test process");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(RAN_PAST_GUARD),
        "the recursion ran past the stack without faulting: no guard page ({})",
        lwkt::stack_guard_kind()
    );
    // The fault on the guard page is reported (the thread's name, id and
    // CPU) and the process aborts, as std does for its own threads.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "the child should abort after the overflow report; status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("lwkt thread 'main'")
            && stderr.contains("on CPU 0")
            && stderr.contains("has overflowed its stack"),
        "the overflow report names the thread and its CPU; stderr: {stderr}"
    );
}

#[test]
fn stacks_cost_at_most_two_mappings_each() {
    bounded(
        60,
        "stack mappings",
        stacks_cost_at_most_two_mappings_each_body,
    );
}

fn stacks_cost_at_most_two_mappings_each_body() {
    let rt = Runtime::builder().cpus(1).build().unwrap();
    let before = lwkt::current_map_count().expect("/proc/self/maps readable");
    let grew = rt.block_on(move |td| {
        let hs: Vec<_> = (0..2000).map(|_| td.spawn(|td| td.park())).collect();
        // Let them all run and park, so each schedule() below ends a park.
        td.yield_now();
        let after = lwkt::current_map_count().unwrap();
        for h in &hs {
            h.thread().schedule();
        }
        for h in hs {
            h.join(td).unwrap();
        }
        after.saturating_sub(before)
    });
    let kind = lwkt::stack_guard_kind();
    if kind.starts_with("guard marker") {
        assert!(
            grew <= 2000 / 2,
            "2000 stacks with guard markers added {grew} mappings ({kind})"
        );
    } else {
        assert!(
            grew <= 2 * 2000 + 16,
            "2000 stacks added {grew} mappings ({kind})"
        );
    }
}
