//! `token_block_while_held`: as `token_contended`, but one critical section
//! in 16 sleeps 50 µs while holding the lock. An lwkt thread's tokens are
//! released while it sleeps (and re-acquired before `sleep_for` returns),
//! so the others keep going; a mutex (`std::thread::sleep`) or a tokio
//! guard (`tokio::time::sleep(..).await`) keeps everyone else out. The
//! figure is the total number of increments per second. The driver is in
//! [`super::contention`].
//!
//! The `_drop_guard` rows give the peers lwkt's semantics: the critical
//! section drops its guard around the sleep, locks again afterwards and
//! re-checks the value it read, as a careful mutex user would.

use std::time::Duration;

use super::contention::{self, Load, Placement, TokioLock};
use super::{Bench, Better, Impl};
use crate::harness::{Ctx, RunResult};

pub static BENCH: Bench = Bench {
    name: "token_block_while_held",
    unit: "ops/s",
    better: Better::Higher,
    about: "as token_contended, but 1 critical section in 16 sleeps 50 us holding the lock \
            (the _drop_guard rows unlock around the sleep, as an lwkt token is released)",
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
        Impl {
            name: "parking_lot_drop_guard",
            run: parking_lot_drop_guard,
        },
        Impl {
            name: "std_mutex_drop_guard",
            run: std_mutex_drop_guard,
        },
        Impl {
            name: "tokio_drop_guard",
            run: tokio_drop_guard,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

fn lwkt(ctx: &Ctx) -> RunResult {
    contention::lwkt(ctx, Load::SleepWhileHeld)
}

fn parking_lot(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(
        ctx,
        Load::SleepWhileHeld,
        Placement::Unpinned,
    )
}

fn std_mutex(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(ctx, Load::SleepWhileHeld, Placement::Unpinned)
}

fn tokio_mutex(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::SleepWhileHeld, TokioLock::Tokio)
}

fn parking_lot_drop_guard(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(
        ctx,
        Load::SleepGuardDropped,
        Placement::Unpinned,
    )
}

fn std_mutex_drop_guard(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(
        ctx,
        Load::SleepGuardDropped,
        Placement::Unpinned,
    )
}

/// tokio with the lock a tokio user picks when no guard lives across an
/// `.await`: `std::sync::Mutex` (tokio's own advice), and
/// `tokio::time::sleep` for the sleep.
fn tokio_drop_guard(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::SleepGuardDropped, TokioLock::Std)
}
