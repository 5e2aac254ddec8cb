//! # lwkt
//!
//! DragonFly BSD's light-weight kernel threads in user space: one
//! self-contained scheduler per CPU, stackful cooperative threads with
//! fixed priorities, sleep/wakeup on any address, IPIs between CPUs, and
//! serializing tokens whose rules the compiler checks.
//!
//! ```
//! let rt = lwkt::Runtime::builder().cpus(2).build()?;
//! let v = rt.block_on(|td: &mut lwkt::CurThread| {
//!     let h = lwkt::ThreadBuilder::new().cpu(1).spawn(td, |td| td.cpu() * 10)?;
//!     Ok::<_, lwkt::Error>(h.join(td).unwrap())
//! })?;
//! assert_eq!(v, 10);
//! # Ok::<(), lwkt::Error>(())
//! ```
//!
//! The layers, bottom up (each imports only the ones below it; see
//! `ARCHITECTURE.md` in the repository):
//! `sync`, `error`, `priority`, `stats` → `stack`, `ipi`, `tokref`, `trace` →
//! `sched` → `thread` → `token` → `net`, `runtime`, and `lwp` (NetBSD's LWP
//! lifecycle) on top; `introspect` (the live page) above `net` and
//! `runtime`.
#![warn(missing_docs, unreachable_pub, unsafe_op_in_unsafe_fn)]

#[cfg(not(loom))]
mod affinity;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod introspect;
mod ipi;
#[cfg(not(loom))]
pub mod lwp;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
mod priority;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod sched;
#[cfg(loom)]
#[path = "sched/sleepmask.rs"]
mod sleepmask;
#[cfg(not(loom))]
mod stack;
#[cfg(not(loom))]
mod stats;
mod sync;
#[cfg(not(loom))]
mod thread;
#[cfg(loom)]
#[path = "thread/packet.rs"]
mod thread_packet;
#[cfg(not(loom))]
mod token;
mod tokref;
#[cfg(not(loom))]
mod trace;

#[cfg(not(loom))]
pub use error::{Error, Panicked, SleepError, StackAllocCause};
#[cfg(not(loom))]
pub use introspect::Introspection;
#[cfg(not(loom))]
pub use priority::Priority;
#[cfg(not(loom))]
pub use runtime::{
    Builder, Runtime, DEFAULT_HZ, DEFAULT_IDLE_SPIN, DEFAULT_IDLE_WATCH, DEFAULT_TOKEN_BACKOFF_MAX,
    DEFAULT_TOKEN_SPIN_LOOPS, DEFAULT_TOKEN_WINDOW_SHIFT, IPIQ_SIZE, MAX_TOKEN_BACKOFF,
};
#[cfg(not(loom))]
pub use sched::machine::MAX_CPUS;
#[cfg(not(loom))]
pub use sched::poll::{Interest, Ready};
#[cfg(not(loom))]
pub use stack::{
    current_map_count, max_map_count, stack_guard_kind, DEFAULT_STACK_SIZE, MAX_STACK_SIZE,
    MIN_STACK_SIZE,
};
#[cfg(not(loom))]
pub use stats::{CpuStats, Stats};
#[cfg(not(loom))]
pub use thread::{
    wakeup, wakeup_one, CritSection, CurThread, Handle, JoinHandle, Sleep, ThreadBuilder, ThreadId,
    ThreadInfo, ThreadRef, ThreadState, Trace,
};
#[cfg(not(loom))]
pub use token::{
    pool_token, Pooled, SharedTokenGuard, Token, TokenGuard, TokenMut, TokenRef, MAX_TOKENS,
    POOL_TOKENS,
};
pub use tokref::TokenReacquire;
#[cfg(not(loom))]
pub use trace::{TraceData, DEFAULT_TRACE_EVENTS, MAX_TRACE_EVENTS, MIN_TRACE_EVENTS};

/// Lock-free building blocks, exposed only to the loom model tests.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::ipi::ring::Ring;
    pub use crate::ipi::{attn, Mailbox, Outbox, SendWait};
    pub use crate::sleepmask::{bucket_of, SleepMasks};
    pub use crate::thread_packet::{pk, PacketState};
    pub use crate::tokref::word::{Try, Word, DEAD, EXCLREQ, EXCLUSIVE, INCR};
    pub use crate::tokref::RawToken;
}
