//! # lwkt
//!
//! DragonFly BSD's light-weight kernel threads in user space: one
//! self-contained scheduler per CPU, stackful cooperative threads with
//! fixed priorities, sleep/wakeup on any address, and IPIs between CPUs.
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
#![warn(missing_docs, unreachable_pub, unsafe_op_in_unsafe_fn)]

#[cfg(not(loom))]
mod affinity;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod priority;
#[cfg(not(loom))]
mod ps;
mod ring;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod sched;
#[cfg(not(loom))]
mod stack;
#[cfg(not(loom))]
mod stats;
mod sync;
#[cfg(not(loom))]
mod thread;
#[cfg(not(loom))]
mod thread_ref;
#[cfg(not(loom))]
mod token;
#[cfg(loom)]
#[path = "token/word.rs"]
mod token_word;

#[cfg(not(loom))]
pub use error::{Error, Panicked, SleepError, StackAllocCause};
#[cfg(not(loom))]
pub use priority::Priority;
#[cfg(not(loom))]
pub use ps::{ThreadInfo, ThreadState};
#[cfg(not(loom))]
pub use runtime::{
    Builder, Handle, Runtime, DEFAULT_HZ, DEFAULT_TOKEN_BACKOFF_MAX, DEFAULT_TOKEN_SPIN_LOOPS,
    DEFAULT_TOKEN_WINDOW_SHIFT, IPIQ_SIZE, MAX_CPUS,
};
#[cfg(not(loom))]
pub use stack::{
    current_map_count, max_map_count, stack_guard_kind, DEFAULT_STACK_SIZE, MIN_STACK_SIZE,
};
#[cfg(not(loom))]
pub use stats::{CpuStats, Stats};
#[cfg(not(loom))]
pub use thread::{wakeup, wakeup_one, CurThread, JoinHandle, Sleep, ThreadBuilder, ThreadId};
#[cfg(not(loom))]
pub use thread_ref::{CritSection, ThreadRef};
#[cfg(not(loom))]
pub use token::{
    pool_token, SharedTokenGuard, Token, TokenGuard, TokenMut, TokenRef, MAX_TOKENS, POOL_TOKENS,
};

/// Lock-free building blocks, exposed only to the loom model tests.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::ring::Ring;
    pub use crate::token_word::{Try, Word, EXCLREQ, EXCLUSIVE, INCR};
}
