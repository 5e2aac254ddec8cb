//! The join packet's state word: how a finishing thread and its joiners
//! meet without a lost wakeup. Compiled under loom too
//! (`tests/loom_join.rs`).
//!
//! | bit | name      | set by                 | meaning                       |
//! |-----|-----------|------------------------|-------------------------------|
//! | 0   | DONE      | the thread (or cancel) | the result slot is written    |
//! | 1   | WAITING   | an lwkt joiner         | it may sleep on the packet,   |
//! |     |           |                        | on a CPU of the same runtime  |
//! | 2   | XWAITING  | an lwkt joiner         | same, from another runtime    |
//! | 3   | OS_WAITER | `join_blocking`        | an OS thread may be parked    |
//! | 4   | CANCELLED | runtime shutdown       | DONE without a result         |
//!
//! Protocol: a joiner first registers where it will wait (its sleep-queue
//! entry, or its OS thread handle), then sets its bit with a SeqCst RMW;
//! if DONE was already set it does not wait. The thread writes its result,
//! then sets DONE with a SeqCst RMW and wakes whoever's bit it saw. In the
//! SeqCst order of the two RMWs one side sees the other's bit, so either
//! the joiner sees DONE or the thread sees the joiner.

// `pub` so the loom models can reach it through `lwkt::__loom`; the crate
// itself uses it as crate-private.
#![allow(unreachable_pub)]

use crate::sync::atomic::{AtomicU8, Ordering};

/// See the module header.
pub mod pk {
    /// The result slot is written (or the thread was cancelled).
    pub const DONE: u8 = 1 << 0;
    /// An lwkt joiner of the same runtime may sleep on the packet.
    pub const WAITING: u8 = 1 << 1;
    /// An lwkt joiner of another runtime may sleep on the packet.
    pub const XWAITING: u8 = 1 << 2;
    /// An OS thread may be parked in `join_blocking`.
    pub const OS_WAITER: u8 = 1 << 3;
    /// The thread was unwound by runtime shutdown (set with DONE).
    pub const CANCELLED: u8 = 1 << 4;
}

/// The state word of a join packet.
#[derive(Debug)]
pub struct PacketState(AtomicU8);

impl Default for PacketState {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketState {
    /// A fresh state: not done, nobody waiting.
    pub fn new() -> PacketState {
        PacketState(AtomicU8::new(0))
    }

    /// Whether DONE is set; Acquire, so the result written before it is
    /// visible.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) & pk::DONE != 0
    }

    /// A joiner announces that it may wait (`bit` is WAITING, XWAITING or
    /// OS_WAITER), after registering where. Returns true when DONE was
    /// already set: it must not wait then.
    #[inline]
    pub fn announce(&self, bit: u8) -> bool {
        self.0.fetch_or(bit, Ordering::SeqCst) & pk::DONE != 0
    }

    /// The thread publishes DONE (with CANCELLED for a cancellation) after
    /// writing its result. Returns the bits set before: the waiters to
    /// wake, and DONE if it was already published (then nothing changed).
    #[inline]
    pub fn publish(&self, bits: u8) -> u8 {
        self.0.fetch_or(bits, Ordering::SeqCst)
    }
}
