//! `token_block_while_held`: as `token_contended`, but one critical section
//! in 16 sleeps 50 µs while holding the lock. An lwkt thread's tokens are
//! released while it sleeps (and re-acquired before `sleep_for` returns),
//! so the others keep going; a mutex (`std::thread::sleep`) or a tokio
//! guard (`tokio::time::sleep(..).await`) keeps everyone else out. The
//! figure is the total number of increments per second. The driver is in
//! [`super::contention`].

use std::time::Duration;

use super::contention::{self, Load};
use super::{Bench, Better, Impl};
use crate::harness::{Ctx, RunResult};

pub static BENCH: Bench = Bench {
    name: "token_block_while_held",
    unit: "ops/s",
    better: Better::Higher,
    about: "as token_contended, but 1 critical section in 16 sleeps 50 us holding the lock",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "parking_lot",
            run: parking_lot,
        },
        Impl {
            name: "std_mutex",
            run: std_mutex,
        },
        Impl {
            name: "tokio_mutex",
            run: tokio_mutex,
        },
    ],
    timeout: Duration::from_secs(60),
};

fn lwkt(ctx: &Ctx) -> RunResult {
    contention::lwkt(ctx, Load::SleepWhileHeld)
}

fn parking_lot(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(ctx, Load::SleepWhileHeld)
}

fn std_mutex(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(ctx, Load::SleepWhileHeld)
}

fn tokio_mutex(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::SleepWhileHeld)
}
