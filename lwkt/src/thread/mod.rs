//! The thread API: the running thread's handle ([`CurThread`]), spawning
//! ([`ThreadBuilder`]), joining ([`JoinHandle`]), explicit scheduling
//! ([`ThreadRef`], [`CritSection`]), the runtime handle ([`Handle`]) and
//! the free wakeup functions, the `ps`-like listing, and the event trace's
//! controls ([`Trace`]).
//!
//! Layering: built on `sched`; nothing below imports it. Tokens (one layer
//! up) add `get_token` and friends to [`CurThread`].

pub(crate) mod cur;
pub(crate) mod handle;
pub(crate) mod join;
pub(crate) mod packet;
pub(crate) mod ps;
pub(crate) mod spawn;
pub(crate) mod thread_ref;
pub(crate) mod trace;

pub use cur::{CurThread, Sleep, ThreadId};
pub use handle::{wakeup, wakeup_one, Handle};
pub use join::JoinHandle;
pub use ps::{ThreadInfo, ThreadState};
pub use spawn::ThreadBuilder;
pub use thread_ref::{CritSection, ThreadRef};
pub use trace::Trace;
