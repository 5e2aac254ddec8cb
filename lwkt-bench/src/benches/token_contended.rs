//! `token_contended`: on every CPU, 8 threads increment one counter under
//! one lock for a fixed wall time; the figure is the total number of
//! increments per second. The driver is in [`super::contention`].
//!
//! Only the running lwkt thread of each CPU can contend, so lwkt's load is
//! one contender per CPU; the `_pinned` rows give the mutexes that shape
//! (one OS thread pinned to each CPU), their strongest setup. tokio gets
//! both its own `tokio::sync::Mutex` and `std::sync::Mutex`, which tokio
//! advises for critical sections without `.await`.

use std::time::Duration;

use super::contention::{self, Load, Placement, TokioLock};
use super::{Bench, Better, Impl};
use crate::harness::{Ctx, RunResult};

pub static BENCH: Bench = Bench {
    name: "token_contended",
    unit: "ops/s",
    better: Better::Higher,
    about: "8 threads per CPU (one pinned per CPU in the _pinned rows) increment one counter \
            under one lock, increments per second",
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
            name: "parking_lot_pinned",
            run: parking_lot_pinned,
        },
        Impl {
            name: "std_mutex_pinned",
            run: std_mutex_pinned,
        },
        Impl {
            name: "tokio_std_mutex",
            run: tokio_std_mutex,
        },
    ],
    timeout: Duration::from_secs(60),
    unranked: &[],
};

fn lwkt(ctx: &Ctx) -> RunResult {
    contention::lwkt(ctx, Load::Plain)
}

fn parking_lot(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(ctx, Load::Plain, Placement::Unpinned)
}

fn std_mutex(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(ctx, Load::Plain, Placement::Unpinned)
}

fn tokio_mutex(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::Plain, TokioLock::Tokio)
}

fn parking_lot_pinned(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(ctx, Load::Plain, Placement::PinnedOnePerCpu)
}

fn std_mutex_pinned(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(ctx, Load::Plain, Placement::PinnedOnePerCpu)
}

fn tokio_std_mutex(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::Plain, TokioLock::Std)
}
