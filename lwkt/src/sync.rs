//! The one place the crate takes its cross-thread primitives from.
//!
//! Every atomic, `Arc`, parking call and shared cell used by a protocol
//! between OS threads is imported from here, never from `std` directly.
//! Under `--cfg loom` these are loom's model-checked versions (as tokio
//! does), so the code the model checker explores is the code that runs.
//! Owner-only state (a CPU's run queue, a thread's flags) uses plain
//! `Cell`s and is not routed through here: no other thread can see it.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) mod atomic {
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
        Ordering,
    };
}

#[cfg(not(loom))]
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
        Ordering,
    };
}

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

/// Parking of OS threads (the futex under an idle CPU and under
/// `join_blocking`).
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) mod thread {
    pub(crate) use loom::thread::{current, park, Thread};
}

/// Parking of OS threads (the futex under an idle CPU and under
/// `join_blocking`).
#[cfg(not(loom))]
pub(crate) mod thread {
    pub(crate) use std::thread::{current, park, park_timeout, Thread};
}

/// An `UnsafeCell` with loom's closure-based access API.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// An `UnsafeCell` with loom's closure-based access API.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a std mutex, ignoring poisoning: every mutex in this crate guards
/// data that stays consistent across a panic (queues of owned messages,
/// thread handles), so a panic elsewhere must not wedge the runtime.
#[cfg(not(loom))]
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks a loom mutex (loom's mutexes do not poison).
#[cfg(loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}
