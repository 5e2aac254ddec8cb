//! A CPU's event buffer ([`RingBuf`]) and its owner-only switch
//! ([`CoreTrace`]).
//!
//! Who touches what: a [`RingBuf`] is written only by its CPU's OS thread
//! (one writer) and read by anyone. The writer stores an event's four
//! words, then publishes it by storing the new length (Release); a reader
//! loads the length (Acquire) and reads the slots below it. A slot below
//! the published length is never written again: when the buffer is full,
//! new events are dropped and counted (`dropped`), not written over the
//! oldest, so reading needs no lock and cannot tear, whether the CPU still
//! records or not. A new capture gets new buffers; readers of the old ones
//! keep them alive (`Arc`).
//!
//! Policy: keep the first events of a capture, drop (and count) the rest.
//! For a "what happened since I pressed start" capture this keeps the
//! start; a flight recorder that keeps the last events would need readers
//! to stop the writers first.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::clock;

/// Words per event (see the module header of `trace`).
const WORDS: usize = 4;

/// One CPU's buffer for one capture. See the module header.
pub(crate) struct RingBuf {
    /// `capacity * WORDS` words.
    words: Box<[AtomicU64]>,
    /// Events written and published (the writer's own count, stored with
    /// Release after each event's words).
    len: AtomicUsize,
    /// Events dropped because the buffer was full.
    dropped: AtomicU64,
    /// Names of the threads seen by this CPU during the capture (id,
    /// name): written at spawn, adoption and capture start, read at
    /// export. Off the hot path.
    pub(crate) names: Mutex<Vec<(u64, Box<str>)>>,
}

// The buffer is made from zeroed `u64`s; an `AtomicU64` must have the same
// size and alignment for that to be sound.
const _: () = assert!(
    std::mem::size_of::<AtomicU64>() == std::mem::size_of::<u64>()
        && std::mem::align_of::<AtomicU64>() == std::mem::align_of::<u64>()
);

impl RingBuf {
    /// An empty buffer of `capacity` events. Its memory comes zeroed from
    /// the allocator (for a large buffer, untouched pages, which the
    /// owning CPU commits with [`prefault`](Self::prefault)).
    pub(crate) fn new(capacity: usize) -> Arc<RingBuf> {
        let zeroed: Box<[u64]> = vec![0u64; capacity * WORDS].into_boxed_slice();
        let raw = Box::into_raw(zeroed) as *mut [AtomicU64];
        // SAFETY: `AtomicU64` has the same size, alignment (asserted above)
        // and bit validity as `u64`, so the allocation is a valid
        // `[AtomicU64]` of the same length, and the layout `Box` frees it
        // with is the one it was allocated with.
        let words = unsafe { Box::from_raw(raw) };
        Arc::new(RingBuf {
            words,
            len: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            names: Mutex::new(Vec::new()),
        })
    }

    /// Touches every page of the buffer, so that recording never takes a
    /// page fault (a first touch costs microseconds: over a page's 128
    /// events, tens of nanoseconds each). Called by the owning CPU when
    /// it starts recording, so the pages are local to it. Writes only
    /// slots above the published length (zeros over zeros), which no
    /// reader looks at.
    pub(crate) fn prefault(&self) {
        const WORDS_PER_PAGE: usize = 4096 / std::mem::size_of::<u64>();
        let from = self.len.load(Ordering::Relaxed) * WORDS;
        for w in self.words[from..].iter().step_by(WORDS_PER_PAGE) {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Capacity in events.
    pub(crate) fn capacity(&self) -> usize {
        self.words.len() / WORDS
    }

    /// Appends one event (its words made by `make`, called only when there
    /// is room: a full buffer does not even read the clock), or counts it
    /// dropped. Only the owning CPU's OS thread calls this: plain loads and
    /// stores, no read-modify-write.
    #[inline]
    pub(crate) fn push_with(&self, make: impl FnOnce() -> [u64; WORDS]) {
        let i = self.len.load(Ordering::Relaxed);
        let Some(slot) = self.words.get(i * WORDS..(i + 1) * WORDS) else {
            let d = self.dropped.load(Ordering::Relaxed);
            self.dropped.store(d + 1, Ordering::Relaxed);
            return;
        };
        for (s, v) in slot.iter().zip(make()) {
            s.store(v, Ordering::Relaxed);
        }
        self.len.store(i + 1, Ordering::Release);
    }

    /// [`push_with`](Self::push_with) of ready-made words.
    #[cfg(test)]
    pub(crate) fn push(&self, w: [u64; WORDS]) {
        self.push_with(|| w);
    }

    /// The events published so far (their words) and the drop count.
    /// Callable from any thread at any time.
    pub(crate) fn read(&self) -> (Vec<[u64; WORDS]>, u64) {
        let n = self.len.load(Ordering::Acquire);
        let ev = self.words[..n * WORDS]
            .chunks_exact(WORDS)
            .map(|c| std::array::from_fn(|k| c[k].load(Ordering::Relaxed)))
            .collect();
        (ev, self.dropped.load(Ordering::Relaxed))
    }

    /// Records a thread's name for the export.
    pub(crate) fn note_name(&self, tid: u64, name: &str) {
        let mut v = self.names.lock().unwrap_or_else(|e| e.into_inner());
        v.push((tid, name.into()));
    }
}

/// A CPU's owner-only trace state, embedded in its `Core`. Touched only
/// on that CPU's OS thread.
pub(crate) struct CoreTrace {
    /// The buffer events go to; null while tracing is off. This is the
    /// switch every event site tests.
    ring: Cell<*const RingBuf>,
    /// Keeps `ring` allocated while it is set.
    keep: RefCell<Option<Arc<RingBuf>>>,
    /// The last flow id this CPU handed out (see [`next_flow`]).
    ///
    /// [`next_flow`]: Self::next_flow
    flows: Cell<u32>,
    /// While an IPI is carried out: its flow id (0: none)...
    pub(crate) cur_flow: Cell<u32>,
    /// ...and its source CPU (`NO_CPU`: outside the runtime, or none).
    pub(crate) cur_src: Cell<u16>,
}

impl CoreTrace {
    /// Tracing off.
    pub(crate) fn new() -> CoreTrace {
        CoreTrace {
            ring: Cell::new(std::ptr::null()),
            keep: RefCell::new(None),
            flows: Cell::new(0),
            cur_flow: Cell::new(0),
            cur_src: Cell::new(super::NO_CPU),
        }
    }

    /// Whether events are recorded: the one branch an event site pays.
    #[inline(always)]
    pub(crate) fn on(&self) -> bool {
        !self.ring.get().is_null()
    }

    /// Starts recording into `ring` (replacing any previous buffer),
    /// after committing its memory ([`RingBuf::prefault`]).
    pub(crate) fn enable(&self, ring: Arc<RingBuf>) {
        ring.prefault();
        self.ring.set(Arc::as_ptr(&ring));
        *self.keep.borrow_mut() = Some(ring);
        self.flows.set(0);
    }

    /// Stops recording; the buffer stays with its other owners.
    pub(crate) fn disable(&self) {
        self.ring.set(std::ptr::null());
        *self.keep.borrow_mut() = None;
    }

    /// The buffer, while tracing is on.
    pub(crate) fn ring(&self) -> Option<&RingBuf> {
        // SAFETY: a non-null `ring` points into the Arc held in `keep`,
        // which is replaced or cleared only together with `ring`, on this
        // OS thread; the borrow ends before either can happen (`CoreTrace`
        // is !Sync and the caller holds `&self`).
        unsafe { self.ring.get().as_ref() }
    }

    /// Records one event (see the `trace` module header for the fields).
    #[inline]
    pub(crate) fn emit(&self, kind: u8, sub: u8, cpu: u16, aux: u32, tid: u64, arg: u64) {
        if let Some(r) = self.ring() {
            let w1 =
                u64::from(kind) | u64::from(sub) << 8 | u64::from(cpu) << 16 | u64::from(aux) << 32;
            r.push_with(|| [clock::now(), w1, tid, arg]);
        }
    }

    /// Records an event whose payload is a string.
    #[inline]
    pub(crate) fn emit_str(&self, kind: u8, sub: u8, cpu: u16, tid: u64, s: &'static str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.emit(kind, sub, cpu, len, tid, s.as_ptr() as u64);
    }

    /// A fresh flow id for an IPI this CPU sends, unique in the capture:
    /// a per-CPU count in the high 24 bits, `cpu` in the low 8 (CPU
    /// numbers above 255 share low bits with others, which the count keeps
    /// apart only within one CPU: the export matches ids per source CPU).
    /// 0 while tracing is off (no flow).
    #[inline]
    pub(crate) fn next_flow(&self, cpu: usize) -> u32 {
        if !self.on() {
            return 0;
        }
        let n = self.flows.get().wrapping_add(1) & 0x00ff_ffff;
        let n = n.max(1);
        self.flows.set(n);
        n << 8 | (cpu as u32 & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_events_and_counts_the_rest() {
        let r = RingBuf::new(4);
        for i in 0..10u64 {
            r.push([i, i + 1, i + 2, i + 3]);
        }
        let (ev, dropped) = r.read();
        assert_eq!(ev.len(), 4);
        assert_eq!(dropped, 6);
        for (i, e) in ev.iter().enumerate() {
            let i = i as u64;
            assert_eq!(*e, [i, i + 1, i + 2, i + 3]);
        }
    }

    /// A reader running beside the writer sees a growing prefix of whole
    /// events, never a torn or unpublished one.
    #[test]
    fn reads_while_written() {
        let r = RingBuf::new(1 << 16);
        let w = r.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..(1u64 << 16) {
                w.push([i, !i, i.wrapping_mul(3), i ^ 0x5555]);
            }
        });
        let mut last = 0;
        while last < 1 << 16 {
            let (ev, dropped) = r.read();
            assert_eq!(dropped, 0);
            assert!(ev.len() >= last, "the prefix shrank");
            for (i, e) in ev.iter().enumerate() {
                let i = i as u64;
                assert_eq!(*e, [i, !i, i.wrapping_mul(3), i ^ 0x5555], "event {i} torn");
            }
            last = ev.len();
        }
        writer.join().unwrap();
    }

    #[test]
    fn switch_and_flow_ids() {
        let t = CoreTrace::new();
        assert!(!t.on());
        assert_eq!(t.next_flow(3), 0, "no flow while off");
        t.emit(1, 0, 0, 0, 1, 0); // dropped silently while off
        let r = RingBuf::new(16);
        t.enable(r.clone());
        assert!(t.on());
        let a = t.next_flow(3);
        let b = t.next_flow(3);
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(a & 0xff, 3);
        t.emit_str(5, 0, 0, 7, "tok");
        t.disable();
        assert!(!t.on());
        t.emit(1, 0, 0, 0, 1, 0);
        let (ev, _) = r.read();
        assert_eq!(ev.len(), 1, "only the event made while on");
        assert_eq!(ev[0][2], 7);
    }
}
