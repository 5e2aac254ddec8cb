//! The per-CPU scheduler: thread structures, run queues, sleep queues and
//! the CPU loop.

pub(crate) mod cpu;
pub(crate) mod ops;
pub(crate) mod runq;
pub(crate) mod sleepq;
pub(crate) mod td;
