//! Bounded single-producer/single-consumer FIFO: the IPI queue between one
//! source CPU and one target CPU (DragonFly's `lwkt_ipiq`).
//!
//! Protocol (positions grow without bound and wrap modulo the capacity;
//! slot `i` serves positions `i`, `i + capacity`, ...):
//!
//! 1. The producer alone writes `tail` and the slots' values and sequence
//!    words; the consumer alone writes `head`.
//! 2. Push at position `t`: make sure the slot is free (`t - head` below
//!    the capacity, with `head` read Acquire when the producer's cached
//!    copy says full), write the value, then publish it by storing `t + 1`
//!    into `tail` and then into the slot's sequence word (both Release).
//! 3. Pop at position `h`: the slot holds a value exactly when its
//!    sequence word reads `h + 1` (Acquire); move the value out, then free
//!    the slot by storing `h + 1` into `head` (Release).
//! 4. `len` may be read by anyone; it is exact for the producer's and the
//!    consumer's own view and a snapshot for others.
//!
//! The consumer learns that a value arrived from the slot itself, so a
//! message costs it one cache-line transfer (the slot's), not two (an
//! index, then the slot). A slot's sequence word only grows, and it cannot
//! reach `h + 1 + capacity` before the consumer has passed `h`, so reading
//! `h + 1` means the value of position `h` and nothing else.
//!
//! A slot is owned by the producer from the moment the consumer's Release
//! of `head` passes it until the producer's Release of its sequence word,
//! and by the consumer in between: the Acquire/Release pairs make each
//! hand-off a happens-before edge, so no slot is read and written at once.

// `pub` so the loom tests (tests/loom_*.rs) can reach it through
// `lwkt::__loom`; the crate itself uses it as crate-private.
#![allow(unreachable_pub, dead_code)]

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::UnsafeCell;

/// One place in the ring: the value and the position it was published
/// for, plus one (0: never used).
struct Slot<T> {
    seq: AtomicUsize,
    val: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded SPSC queue of `T`.
pub struct Ring<T> {
    /// Next position to read (written by the consumer only).
    head: CachePadded<AtomicUsize>,
    /// Next position to write (written by the producer only), and the
    /// producer's copy of `head`.
    tail: CachePadded<(AtomicUsize, UnsafeCell<usize>)>,
    slots: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: values of T move from the producer's thread to the consumer's, so
// T: Send is required and enough; slots are never shared between the two
// (see the protocol in the module header), and the private index copy is
// touched by the producer only.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; the producer and consumer use `&Ring` from two threads,
// and each slot's value is accessed by one side at a time.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// Makes a ring holding up to `capacity` values (a power of two).
    pub fn new(capacity: usize) -> Ring<T> {
        assert!(
            capacity.is_power_of_two() && capacity >= 2,
            "ring capacity must be a power of two >= 2, got {capacity}"
        );
        let slots = (0..capacity)
            .map(|_| Slot {
                seq: AtomicUsize::new(0),
                val: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ring {
            head: CachePadded::new(AtomicUsize::new(0)),
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
        let head = self.head.load(Ordering::Acquire);
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
        let head = self.head.load(Ordering::Acquire);
        // SAFETY: as above.
        self.tail.1.with_mut(|p| unsafe { *p = head });
        tail.wrapping_sub(head)
    }

    /// Whether the ring is empty (a snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The consumer's check for a value: reads only the next slot's
    /// sequence word, the line the value itself is in.
    ///
    /// # Safety
    /// Consumer only (same contract as [`pop`](Self::pop)).
    #[inline]
    pub unsafe fn ready(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        self.slots[head & self.mask].seq.load(Ordering::Acquire) == head.wrapping_add(1)
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
            head = self.head.load(Ordering::Acquire);
            // SAFETY: as above.
            self.tail.1.with_mut(|p| unsafe { *p = head });
            if tail.wrapping_sub(head) > self.mask {
                return Err(v);
            }
        }
        let slot = &self.slots[tail & self.mask];
        slot.val.with_mut(|p| {
            // SAFETY: the slot is free (head has passed its previous
            // position, Acquire above) and only this producer writes
            // slots (caller's contract).
            unsafe { (*p).write(v) };
        });
        // `tail` first: a consumer that has seen the value (through the
        // sequence word's Release) then also sees `tail` past it, so `len`
        // never reads a `tail` behind `head`. Only `len` reads `tail`
        // across threads, so its line stays with the producer.
        self.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        slot.seq.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Removes the oldest value, if any.
    ///
    /// # Safety
    /// Only one thread may act as consumer at a time: no two `pop` calls
    /// on the same ring may run concurrently.
    #[inline]
    pub unsafe fn pop(&self) -> Option<T> {
        let head = self.head.load(Ordering::Relaxed);
        let slot = &self.slots[head & self.mask];
        if slot.seq.load(Ordering::Acquire) != head.wrapping_add(1) {
            return None;
        }
        let v = slot.val.with_mut(|p| {
            // SAFETY: the slot was published for this position by the
            // producer's Release of its sequence word (Acquire above) and
            // only this consumer reads it; it is read exactly once before
            // head moves past it.
            unsafe { (*p).assume_init_read() }
        });
        self.head.store(head.wrapping_add(1), Ordering::Release);
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
                assert!(r.ready());
                assert_eq!(r.pop(), Some(i));
            }
            assert!(!r.ready());
            assert_eq!(r.pop(), None);
            // Around the end of the slots again: stale sequence words from
            // the first lap must not read as new values.
            for i in 10..13 {
                r.push(i).unwrap();
            }
            for i in 10..13 {
                assert_eq!(r.pop(), Some(i));
            }
            assert!(!r.ready());
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
