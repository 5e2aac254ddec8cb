//! Bounded single-producer/single-consumer FIFO: the IPI queue between one
//! source CPU and one target CPU (DragonFly's `lwkt_ipiq`).
//!
//! Protocol (indices grow without bound and wrap modulo the capacity):
//!
//! 1. The producer alone writes `tail`; the consumer alone writes `head`.
//! 2. Push: read `head` (Acquire) to learn the free room, write the slot,
//!    then publish it by storing `tail + 1` (Release).
//! 3. Pop: read `tail` (Acquire) to learn what is published, move the value
//!    out of the slot, then free it by storing `head + 1` (Release).
//! 4. `len` may be read by anyone; it is exact for the producer's and the
//!    consumer's own view and a snapshot for others.
//! 5. Each side keeps a private copy of the other side's index and reads
//!    the shared one only when its copy says the ring is full (producer)
//!    or empty (consumer), so the steady state moves fewer cache lines.
//!
//! A slot is owned by the producer from the moment the consumer's Release
//! of `head` passes it until the producer's Release of `tail` covers it, and
//! by the consumer in between: the Acquire/Release pairs make each hand-off
//! a happens-before edge, so no slot is read and written at once.

// `pub` so the loom tests (tests/loom_*.rs) can reach it through
// `lwkt::__loom`; the crate itself uses it as crate-private.
#![allow(unreachable_pub, dead_code)]

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// A bounded SPSC queue of `T`.
pub struct Ring<T> {
    /// Next slot to read (written by the consumer only), and the
    /// consumer's copy of `tail`.
    head: CachePadded<(AtomicUsize, UnsafeCell<usize>)>,
    /// Next slot to write (written by the producer only), and the
    /// producer's copy of `head`.
    tail: CachePadded<(AtomicUsize, UnsafeCell<usize>)>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: values of T move from the producer's thread to the consumer's, so
// T: Send is required and enough; slots are never shared between the two
// (see the protocol in the module header), and each private index copy is
// touched by one side only.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; the producer and consumer use `&Ring` from two threads,
// and each slot is accessed by one side at a time.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// Makes a ring holding up to `capacity` values (a power of two).
    pub fn new(capacity: usize) -> Ring<T> {
        assert!(
            capacity.is_power_of_two() && capacity >= 2,
            "ring capacity must be a power of two >= 2, got {capacity}"
        );
        let slots = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Ring {
            head: CachePadded::new((AtomicUsize::new(0), UnsafeCell::new(0))),
            tail: CachePadded::new((AtomicUsize::new(0), UnsafeCell::new(0))),
            slots,
            mask: capacity - 1,
        }
    }

    /// How many values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// How many values are queued (a snapshot unless called by the
    /// producer or the consumer).
    #[inline]
    pub fn len(&self) -> usize {
        let tail = self.tail.0.load(Ordering::Acquire);
        let head = self.head.0.load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    /// The producer's view of how many values are queued: exact or an
    /// overestimate (never less than the truth), refreshed from the
    /// consumer's index when it looks more than half full.
    ///
    /// # Safety
    /// Producer only (same contract as [`push`](Self::push)).
    #[inline]
    pub unsafe fn producer_len(&self) -> usize {
        let tail = self.tail.0.load(Ordering::Relaxed);
        // SAFETY: the producer's private copy; only the producer (the
        // caller, per the contract) touches it.
        let cached = self.tail.1.with_mut(|p| unsafe { *p });
        let n = tail.wrapping_sub(cached);
        if n <= self.capacity() / 2 {
            return n;
        }
        let head = self.head.0.load(Ordering::Acquire);
        // SAFETY: as above.
        self.tail.1.with_mut(|p| unsafe { *p = head });
        tail.wrapping_sub(head)
    }

    /// Whether the ring is empty (a snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `v`, or gives it back when the ring is full.
    ///
    /// # Safety
    /// Only one thread may act as producer at a time: no two `push` calls
    /// on the same ring may run concurrently.
    #[inline]
    pub unsafe fn push(&self, v: T) -> Result<(), T> {
        let tail = self.tail.0.load(Ordering::Relaxed);
        // SAFETY: the producer's private copy of head; only the producer
        // (the caller, per the contract) touches it.
        let mut head = self.tail.1.with_mut(|p| unsafe { *p });
        if tail.wrapping_sub(head) > self.mask {
            head = self.head.0.load(Ordering::Acquire);
            // SAFETY: as above.
            self.tail.1.with_mut(|p| unsafe { *p = head });
            if tail.wrapping_sub(head) > self.mask {
                return Err(v);
            }
        }
        self.slots[tail & self.mask].with_mut(|p| {
            // SAFETY: the slot is free (head has passed it, Acquire above)
            // and only this producer writes slots (caller's contract).
            unsafe { (*p).write(v) };
        });
        self.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Removes the oldest value.
    ///
    /// # Safety
    /// Only one thread may act as consumer at a time: no two `pop` calls on
    /// the same ring may run concurrently.
    #[inline]
    pub unsafe fn pop(&self) -> Option<T> {
        let head = self.head.0.load(Ordering::Relaxed);
        // SAFETY: the consumer's private copy of tail; only the consumer
        // (the caller, per the contract) touches it.
        let mut tail = self.head.1.with_mut(|p| unsafe { *p });
        if head == tail {
            tail = self.tail.0.load(Ordering::Acquire);
            // SAFETY: as above.
            self.head.1.with_mut(|p| unsafe { *p = tail });
            if head == tail {
                return None;
            }
        }
        let v = self.slots[head & self.mask].with_mut(|p| {
            // SAFETY: the slot was published by the producer's Release of
            // tail (Acquire above) and only this consumer reads it; it is
            // read exactly once before head moves past it.
            unsafe { (*p).assume_init_read() }
        });
        self.head.0.store(head.wrapping_add(1), Ordering::Release);
        Some(v)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no producer or consumer is left, so draining here is
        // the only access.
        // SAFETY: exclusive access (see above).
        while unsafe { self.pop() }.is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn smoke() {
        let r = Ring::new(4);
        // SAFETY: single-threaded test: one producer, one consumer.
        unsafe {
            for i in 0..4 {
                r.push(i).unwrap();
            }
            assert_eq!(r.push(9), Err(9), "a full ring refuses");
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                assert_eq!(r.pop(), Some(i));
            }
            assert_eq!(r.pop(), None);
        }
    }

    #[test]
    fn drop_runs_destructors_of_queued_values() {
        let v = Arc::new(());
        let r = Ring::new(8);
        // SAFETY: single-threaded.
        unsafe {
            r.push(v.clone()).unwrap();
            r.push(v.clone()).unwrap();
        }
        assert_eq!(Arc::strong_count(&v), 3);
        drop(r);
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn two_threads_fifo_order() {
        let r = Arc::new(Ring::new(16));
        let n = 200_000u64;
        let p = {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let mut v = i;
                    // SAFETY: this thread is the only producer.
                    while let Err(back) = unsafe { r.push(v) } {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut expect = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while expect < n {
            // SAFETY: this thread is the only consumer.
            if let Some(v) = unsafe { r.pop() } {
                assert_eq!(v, expect, "FIFO order broken");
                expect += 1;
            } else {
                assert!(std::time::Instant::now() < deadline, "ring stalled");
                std::hint::spin_loop();
            }
        }
        p.join().unwrap();
    }
}
