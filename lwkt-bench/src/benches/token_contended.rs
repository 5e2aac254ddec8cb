//! `token_contended`: on every CPU, 8 threads increment one counter under
//! one lock for a fixed wall time; the figure is the total number of
//! increments per second. The driver is in [`super::contention`].

use std::time::Duration;

use super::contention::{self, Load};
use super::{Bench, Better, Impl};
use crate::harness::{Ctx, RunResult};

pub static BENCH: Bench = Bench {
    name: "token_contended",
    unit: "ops/s",
    better: Better::Higher,
    about: "8 threads per CPU increment one counter under one lock, increments per second",
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
    contention::lwkt(ctx, Load::Plain)
}

fn parking_lot(ctx: &Ctx) -> RunResult {
    contention::os_threads::<parking_lot::Mutex<u64>>(ctx, Load::Plain)
}

fn std_mutex(ctx: &Ctx) -> RunResult {
    contention::os_threads::<std::sync::Mutex<u64>>(ctx, Load::Plain)
}

fn tokio_mutex(ctx: &Ctx) -> RunResult {
    contention::tokio(ctx, Load::Plain)
}
