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
//! keep them alive (`Arc`). The buffer's string table (wait messages of
//! switch events, [`RingBuf::intern`]) and thread names are behind
//! mutexes, taken by the writer only off the hot path (a sleep, park or
//! token-wait switch; a spawn) and by the exporter. The switch-out the
//! CPU loop keeps for its next switch-in is owner-only state in
//! [`CoreTrace`].
//!
//! Policy: keep the first events of a capture, drop (and count) the rest.
//! For a "what happened since I pressed start" capture this keeps the
//! start; a flight recorder that keeps the last events would need readers
//! to stop the writers first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{clock, kind};

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
    /// The wait messages switch events name by number ([`intern`]).
    ///
    /// [`intern`]: Self::intern
    strings: Mutex<Strings>,
}

/// A capture's string table: number `n` (from 1) is `list[n - 1]`.
#[derive(Default)]
struct Strings {
    list: Vec<&'static str>,
    /// (address, length) -> number.
    index: HashMap<(usize, usize), u32>,
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
            strings: Mutex::new(Strings::default()),
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

    /// Appends one event, or counts it dropped when the buffer is full.
    /// Only the owning CPU's OS thread calls this: plain loads and stores,
    /// no read-modify-write.
    #[inline]
    pub(crate) fn push(&self, w: [u64; WORDS]) {
        let i = self.len.load(Ordering::Relaxed);
        let Some(slot) = self.words.get(i * WORDS..(i + 1) * WORDS) else {
            let d = self.dropped.load(Ordering::Relaxed);
            self.dropped.store(d + 1, Ordering::Relaxed);
            return;
        };
        for (s, v) in slot.iter().zip(w) {
            s.store(v, Ordering::Relaxed);
        }
        self.len.store(i + 1, Ordering::Release);
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

    /// The number of `s` in this capture's string table (0 for the empty
    /// string), adding it at its first use. Off the hot path: only a
    /// switch that carries a wait message (sleep, park, token wait) names
    /// one.
    #[inline]
    pub(crate) fn intern(&self, s: &'static str) -> u32 {
        if s.is_empty() {
            0
        } else {
            self.intern_slow(s)
        }
    }

    /// [`intern`](Self::intern) of a non-empty string: looks it up, or
    /// adds it, under the table's mutex.
    #[cold]
    #[inline(never)]
    fn intern_slow(&self, s: &'static str) -> u32 {
        let mut t = self.strings.lock().unwrap_or_else(|e| e.into_inner());
        let Strings { list, index } = &mut *t;
        *index
            .entry((s.as_ptr() as usize, s.len()))
            .or_insert_with(|| {
                list.push(s);
                u32::try_from(list.len()).unwrap_or(u32::MAX)
            })
    }

    /// The string table ([`intern`](Self::intern)): number `n` is
    /// element `n - 1`.
    pub(crate) fn strings(&self) -> Vec<&'static str> {
        let t = self.strings.lock().unwrap_or_else(|e| e.into_inner());
        t.list.clone()
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
    /// The switch-out the loop keeps for the next switch-in ([`stash`]):
    /// the thread that stopped (0: none kept)...
    ///
    /// [`stash`]: Self::stash
    pend_from: Cell<u64>,
    /// ...and the `sub` and `aux` bits of its event (reason, wait
    /// message number), in place in word 1.
    pend_bits: Cell<u64>,
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
            pend_from: Cell::new(0),
            pend_bits: Cell::new(0),
        }
    }

    /// Whether events are recorded: the one branch an event site pays.
    #[inline(always)]
    pub(crate) fn on(&self) -> bool {
        !self.ring.get().is_null()
    }

    /// Starts recording into `ring` (replacing any previous buffer, into
    /// which a kept switch-out is written out first), after committing its
    /// memory ([`RingBuf::prefault`]).
    pub(crate) fn enable(&self, ring: Arc<RingBuf>) {
        ring.prefault();
        // A switch-out kept for the previous buffer belongs to it.
        self.flush();
        self.ring.set(Arc::as_ptr(&ring));
        *self.keep.borrow_mut() = Some(ring);
        self.flows.set(0);
    }

    /// Stops recording (writing out a kept switch-out first); the buffer
    /// stays with its other owners.
    pub(crate) fn disable(&self) {
        self.flush();
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

    /// Records one event (see the `trace` module header for the fields),
    /// after the kept switch-out, if any, with the same timestamp.
    #[inline]
    pub(crate) fn emit(&self, kind: u8, sub: u8, cpu: u16, aux: u32, tid: u64, arg: u64) {
        if let Some(r) = self.ring() {
            let ts = clock::now();
            self.flush_at(r, ts);
            r.push([ts, word1(kind, sub, cpu, aux), tid, arg]);
        }
    }

    /// Records an event whose payload is a string.
    #[inline]
    pub(crate) fn emit_str(&self, kind: u8, sub: u8, cpu: u16, tid: u64, s: &'static str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.emit(kind, sub, cpu, len, tid, s.as_ptr() as u64);
    }

    /// Records a switch whose both sides are known now (a handoff and its
    /// end, a capture's first switch-in): `from` stops (0: none) for
    /// `why`, with wait message `wmesg`; `to` starts (0: none). Out of
    /// line: the inlined switch sites call it only for a handoff.
    #[inline(never)]
    pub(crate) fn switch(&self, from: u64, to: u64, why: u8, wmesg: &'static str, flags: u16) {
        if let Some(r) = self.ring() {
            let aux = r.intern(wmesg);
            self.emit(kind::SWITCH, why, flags, aux, to, from);
        }
    }

    /// The loop's switch-out: thread `from` stopped for `why` (wait
    /// message `wmesg`) and went back to the loop. Kept, without reading
    /// the clock, for the switch-in that follows ([`switch_in`]); anything
    /// else recorded first writes it out on its own (see the `trace`
    /// module header).
    ///
    /// [`switch_in`]: Self::switch_in
    #[inline]
    pub(crate) fn stash(&self, from: u64, why: u8, wmesg: &'static str) {
        if let Some(r) = self.ring() {
            // A kept switch-out is always taken before the next one: the
            // loop runs one thread at a time.
            debug_assert_eq!(self.pend_from.get(), 0, "two switch-outs kept");
            let aux = r.intern(wmesg);
            self.pend_bits.set(word1(0, why, 0, aux));
            self.pend_from.set(from);
        }
    }

    /// The loop starts thread `to`: one event for the switch, with the
    /// kept switch-out (if any) as the thread that stopped.
    #[inline]
    pub(crate) fn switch_in(&self, to: u64) {
        if let Some(r) = self.ring() {
            let from = self.pend_from.replace(0);
            let w1 = u64::from(kind::SWITCH) | self.pend_bits.replace(0);
            r.push([clock::now(), w1, to, from]);
        }
    }

    /// Writes out the kept switch-out, if any, as a switch back to the
    /// loop, now: the CPU is about to idle, wait, or stop recording.
    #[inline]
    pub(crate) fn flush(&self) {
        if self.pend_from.get() != 0 {
            if let Some(r) = self.ring() {
                self.flush_at(r, clock::now());
            }
        }
    }

    /// [`flush`](Self::flush) at time `ts`.
    #[inline]
    fn flush_at(&self, r: &RingBuf, ts: u64) {
        let from = self.pend_from.get();
        if from != 0 {
            self.pend_from.set(0);
            let w1 = u64::from(kind::SWITCH) | self.pend_bits.replace(0);
            r.push([ts, w1, 0, from]);
        }
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

/// Word 1 of an event (see the `trace` module header).
#[inline(always)]
fn word1(kind: u8, sub: u8, cpu: u16, aux: u32) -> u64 {
    u64::from(kind) | u64::from(sub) << 8 | u64::from(cpu) << 16 | u64::from(aux) << 32
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

    /// A kept switch-out joins the next switch-in (one event, one clock
    /// reading), or is written out on its own, first, at the time of
    /// whatever else is recorded before; stopping writes it out too.
    #[test]
    fn kept_switch_out() {
        let t = CoreTrace::new();
        t.stash(5, 1, "ball"); // off: nothing kept
        let r = RingBuf::new(16);
        t.enable(r.clone());
        t.switch_in(1);
        t.stash(1, 0, "");
        t.switch_in(2);
        t.stash(2, 1, "ball");
        t.emit(kind::SLEEP, 0, 0, 0, 3, 0xbeef);
        t.stash(3, 5, "park");
        t.flush();
        t.switch_in(4);
        t.stash(4, 2, "ball");
        t.disable();
        let (ev, _) = r.read();
        let w1 = |why: u64, s: u64| u64::from(kind::SWITCH) | why << 8 | s << 32;
        let body: Vec<[u64; 3]> = ev.iter().map(|e| [e[1], e[2], e[3]]).collect();
        assert_eq!(
            body,
            [
                [w1(0, 0), 1, 0],
                [w1(0, 0), 2, 1],
                [w1(1, 1), 0, 2],
                [u64::from(kind::SLEEP), 3, 0xbeef],
                [w1(5, 2), 0, 3],
                [w1(0, 0), 4, 0],
                [w1(2, 1), 0, 4],
            ]
        );
        assert_eq!(ev[2][0], ev[3][0], "written out at the next event's time");
        assert!(
            ev.windows(2).all(|w| w[0][0] <= w[1][0]),
            "time goes forward"
        );
        assert_eq!(r.strings(), ["ball", "park"]);
        assert_eq!(r.intern(""), 0);
        assert_eq!(r.intern("park"), 2);
    }
}
