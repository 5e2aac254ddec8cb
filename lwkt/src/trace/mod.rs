//! The per-CPU event trace (DragonFly's KTR, in spirit): fixed-size binary
//! events in per-CPU buffers, exported as a timeline Perfetto opens.
//!
//! Execution model: each CPU writes events only into its own buffer, from
//! its own OS thread, with plain stores (no atomic read-modify-write);
//! anyone may read a buffer at any time, because a slot is written once and
//! never again (a full buffer drops new events and counts them, it does not
//! overwrite old ones). This layer knows nothing of threads or CPUs beyond
//! the numbers it is given; the scheduler calls it at its event sites.
//!
//! * [`ring`]: the buffer ([`RingBuf`]) and a CPU's owner-only switch
//!   ([`CoreTrace`]): the one predictable branch every event site pays
//!   when tracing is off.
//! * [`clock`]: the timestamp (the cycle counter on x86_64, calibrated
//!   against `Instant` at both ends of a capture).
//! * [`export`]: decoding the buffers into a [`TraceData`] and writing it
//!   as Chrome trace-event JSON.
//!
//! # Event encoding
//!
//! Every event is four 64-bit words:
//!
//! | word | bits   | field | meaning                                        |
//! |------|--------|-------|------------------------------------------------|
//! | 0    | 0..64  | ts    | [`clock::now`] when it happened                |
//! | 1    | 0..8   | kind  | one of [`kind`]                                |
//! | 1    | 8..16  | sub   | reason ([`reason`]), IPI kind ([`ipi`]), wake  |
//! |      |        |       | cause ([`wake`])                               |
//! | 1    | 16..32 | cpu   | the other CPU (target, source, waker); a       |
//! |      |        |       | switch's flags ([`swf`])                       |
//! | 1    | 32..64 | aux   | flow id, a string's length, or (a switch) its  |
//! |      |        |       | wait message's number in the CPU's string      |
//! |      |        |       | table                                          |
//! | 2    | 0..64  | tid   | the thread concerned (0: none, the CPU loop)   |
//! | 3    | 0..64  | arg   | wait channel, other thread, or a string's      |
//! |      |        |       | address                                        |
//!
//! A string (a token name, a wait message) is always a `&'static str`,
//! stored as address + length and turned back into one only by the
//! exporter; a switch, whose words are all taken, names its wait message
//! by number instead ([`RingBuf::intern`]: a per-capture table, filled
//! only on the switches that carry one: sleep, park, token wait).
//!
//! # One event per switch
//!
//! A switch is one [`kind::SWITCH`] event, with one clock reading: the
//! thread that stopped (`arg`), why (`sub`), and the thread that starts
//! (`tid`). The CPU loop learns the thread it starts only after the
//! one that stopped has come back to it, so the loop's switch-out is kept
//! (no clock read, [`CoreTrace::stash`]) and recorded with the switch-in
//! that follows; its time is the switch-in's, which puts the loop's pass
//! between the two (tens of nanoseconds) in the stopped thread's slice.
//! A kept switch-out is written out on its own (`tid` 0, "back to the
//! loop") at the time of anything else the CPU records first, before the
//! CPU idles or waits for a token, when the loop ends, and when the
//! capture stops: a stretch the CPU spent in the loop without running
//! a thread is never attributed to the thread that ran before it, beyond
//! the loop work that records nothing (a due-timer pass with nothing due,
//! a poll of the fds that woke nobody). A capture read while it runs
//! (`Trace::data`) lacks the switch-out a CPU still keeps: its last
//! thread shows as running to the end of the capture.

pub(crate) mod clock;
pub(crate) mod export;
pub(crate) mod ring;

pub use export::TraceData;
pub(crate) use ring::{CoreTrace, RingBuf};

/// Default events per CPU buffer (32 bytes each: 2 MiB per CPU, committed
/// when a capture starts).
pub const DEFAULT_TRACE_EVENTS: usize = 1 << 16;
/// The most events a CPU buffer may hold (128 MiB per CPU).
pub const MAX_TRACE_EVENTS: usize = 1 << 22;
/// The fewest events a CPU buffer may hold.
pub const MIN_TRACE_EVENTS: usize = 16;

/// Event kinds (word 1, bits 0..8).
pub(crate) mod kind {
    /// A switch (see the module header): `arg` stops running (0: the CPU
    /// loop was running), `tid` starts (0: back to the CPU loop); `sub`:
    /// why `arg` stopped ([`reason`](super::reason)); `aux`: `arg`'s wait
    /// message (its number in the CPU's string table, 0: none); `cpu`:
    /// flags ([`swf`](super::swf)).
    pub(crate) const SWITCH: u8 = 1;
    /// A thread goes to sleep. `arg`: the wait channel.
    pub(crate) const SLEEP: u8 = 3;
    /// A sleeping (or parked) thread was made runnable. `sub`:
    /// [`wake`](super::wake); `cpu`: the CPU the wakeup came from; `aux`:
    /// the flow id of the IPI that carried it (0: local); `arg`: channel.
    pub(crate) const WAKEUP: u8 = 4;
    /// A thread blocks on a token. String: the token's name.
    pub(crate) const TOK_BLOCK: u8 = 5;
    /// The scheduler failed to acquire a blocked thread's token. String:
    /// the token's name.
    pub(crate) const TOK_COLLIDE: u8 = 6;
    /// The scheduler acquired the tokens of a thread that had blocked.
    /// String: the token it had blocked on.
    pub(crate) const TOK_ACQUIRE: u8 = 7;
    /// An IPI sent. `sub`: [`ipi`](super::ipi); `cpu`: target; `aux`: flow
    /// id (0: none); `arg`: channel (wakeups); `tid`: the sending thread.
    pub(crate) const IPI_SEND: u8 = 8;
    /// An IPI carried out. `sub`: kind; `cpu`: source ([`NO_CPU`]: from
    /// outside the runtime); `aux`: flow id; `arg`: channel.
    ///
    /// [`NO_CPU`]: super::NO_CPU
    pub(crate) const IPI_RECV: u8 = 9;
    /// A thread was created. `arg`: the creating thread (0: none).
    pub(crate) const SPAWN: u8 = 10;
    /// A thread was handed to CPU `cpu` (migration, give-away).
    pub(crate) const MIGRATE_OUT: u8 = 11;
    /// A thread handed over by another CPU arrived.
    pub(crate) const MIGRATE_IN: u8 = 12;
    /// An interrupt thread (`arg`) preempted the running thread (`tid`).
    pub(crate) const PREEMPT: u8 = 13;
    /// An LWP changed state (the `lwp` layer). `sub`: NetBSD's state
    /// number; `aux`: pid; `arg`: lid; `tid`: its thread (0: none yet).
    pub(crate) const LWP_STATE: u8 = 14;
}

/// Why a thread switched out (`SWITCH`'s `sub`).
pub(crate) mod reason {
    /// `yield_now`, `maybe_yield`, a deschedule while running.
    pub(crate) const YIELD: u8 = 0;
    /// `sleep`, `join`'s wait.
    pub(crate) const SLEEP: u8 = 1;
    /// A token another thread holds.
    pub(crate) const TOKEN: u8 = 2;
    /// An interrupt thread preempted it (it keeps its tokens).
    pub(crate) const PREEMPT: u8 = 3;
    /// Its function returned.
    pub(crate) const EXIT: u8 = 4;
    /// `park`, `deschedule`.
    pub(crate) const PARK: u8 = 5;
    /// `migrate`.
    pub(crate) const MIGRATE: u8 = 6;
    /// It runs the thread that starts on its own stack and waits under
    /// it (a handoff: a join of the next thread, a preemption); it goes
    /// on when that thread stops (a switch flagged [`RESUME`]). A yield
    /// handoff is recorded as [`YIELD`] instead: the yielder is runnable
    /// meanwhile, and its slice ends there.
    ///
    /// [`RESUME`]: super::swf::RESUME
    pub(crate) const HANDOFF: u8 = 7;

    /// The reason's name in the export.
    pub(crate) fn name(r: u8) -> &'static str {
        match r {
            YIELD => "yield",
            SLEEP => "sleep",
            TOKEN => "token-blocked",
            PREEMPT => "preempt",
            EXIT => "exit",
            PARK => "park",
            MIGRATE => "migrate",
            HANDOFF => "handoff",
            _ => "unknown",
        }
    }
}

/// A switch's flags (`SWITCH`'s `cpu` field).
pub(crate) mod swf {
    /// The thread that starts was already running when the capture
    /// started (recorded when it starts; `arg` is 0).
    pub(crate) const SYNTHETIC: u16 = 1;
    /// The thread that starts had handed off to the one that stops
    /// ([`reason::HANDOFF`](super::reason::HANDOFF)) and goes on.
    pub(crate) const RESUME: u16 = 2;
}

/// IPI kinds (`IPI_SEND` / `IPI_RECV`'s `sub`).
pub(crate) mod ipi {
    /// Wake every sleeper on a channel.
    pub(crate) const WAKEUP: u8 = 0;
    /// Wake one sleeper on a channel.
    pub(crate) const WAKEUP_ONE: u8 = 1;
    /// Run a function on the target (remote spawn, `ps`, trace control).
    pub(crate) const CALL: u8 = 2;
    /// A request about one thread (schedule, priority, interrupt...).
    pub(crate) const THREAD: u8 = 3;
    /// A migrating thread.
    pub(crate) const ADOPT: u8 = 4;
    /// A joined thread finished.
    pub(crate) const JOIN_DONE: u8 = 5;

    /// The kind's name in the export.
    pub(crate) fn name(k: u8) -> &'static str {
        match k {
            WAKEUP => "wakeup",
            WAKEUP_ONE => "wakeup_one",
            CALL => "call",
            THREAD => "thread-op",
            ADOPT => "adopt",
            JOIN_DONE => "join-done",
            _ => "unknown",
        }
    }
}

/// What ended a sleep (`WAKEUP`'s `sub`).
pub(crate) mod wake {
    /// A wakeup on the channel.
    pub(crate) const CHANNEL: u8 = 0;
    /// The sleep's timeout.
    pub(crate) const TIMEOUT: u8 = 1;
    /// An interrupt (`ThreadRef::interrupt`).
    pub(crate) const INTERRUPT: u8 = 2;
    /// The joined thread finished.
    pub(crate) const JOIN: u8 = 3;
    /// An explicit `schedule` (a parked thread, or a sleeper woken early).
    pub(crate) const SCHEDULE: u8 = 4;

    /// The cause's name in the export.
    pub(crate) fn name(w: u8) -> &'static str {
        match w {
            CHANNEL => "wakeup",
            TIMEOUT => "timeout",
            INTERRUPT => "interrupt",
            JOIN => "join",
            SCHEDULE => "schedule",
            _ => "unknown",
        }
    }
}

/// `cpu` field value meaning "no CPU" (a sender outside the runtime, or
/// the CPU itself).
pub(crate) const NO_CPU: u16 = u16::MAX;

/// Records an event at an event site: one predictable branch on the CPU's
/// owner-only switch when tracing is off; the recording itself is out of
/// line, except at the two switch sites (see `sched/tracepoints.rs`).
/// `trace_event!(core, method(args))` calls `core.method(args)`, one of
/// the `tr_*` methods in `sched/tracepoints.rs`.
macro_rules! trace_event {
    ($core:expr, $f:ident($($a:expr),* $(,)?)) => {
        if $core.trace.on() {
            $core.$f($($a),*);
        }
    };
}
pub(crate) use trace_event;

/// A runtime's capture state (in its `Machine`): the buffers of the
/// current or last capture and when it started and ended. Touched only by
/// the trace controls ([`Trace`](crate::Trace)) and at shutdown, never on
/// an event path.
pub(crate) struct Control {
    /// Serialises controllers: held by one start or stop for its whole
    /// run (including the wait for every CPU's answer).
    pub(crate) busy: std::sync::Mutex<()>,
    /// The current (running) or last capture.
    pub(crate) session: std::sync::Mutex<Option<Session>>,
    /// Events per CPU buffer, for every capture of this runtime.
    pub(crate) capacity: usize,
    /// Hand the last capture to the process-wide list when the runtime
    /// shuts down (`Trace::record_new_runtimes`).
    pub(crate) record_at_drop: bool,
}

/// One capture.
pub(crate) struct Session {
    /// One buffer per CPU, by CPU number.
    pub(crate) bufs: Vec<std::sync::Arc<RingBuf>>,
    /// Both clocks when the capture started...
    pub(crate) start: clock::Anchor,
    /// ...and when it stopped (`None` while it runs).
    pub(crate) end: Option<clock::Anchor>,
}

impl Session {
    /// Fresh buffers for `cpus` CPUs, starting now.
    pub(crate) fn new(cpus: usize, capacity: usize) -> Session {
        Session {
            bufs: (0..cpus).map(|_| RingBuf::new(capacity)).collect(),
            start: clock::Anchor::take(),
            end: None,
        }
    }

    /// The capture as recorded so far.
    pub(crate) fn data(&self) -> TraceData {
        let end = self.end.unwrap_or_else(clock::Anchor::take);
        TraceData::collect(&self.bufs, self.start, end)
    }
}

impl Control {
    /// No capture yet; `at_start`: one starts with the runtime.
    pub(crate) fn new(cpus: usize, capacity: usize, at_start: bool, record_at_drop: bool) -> Self {
        Control {
            busy: std::sync::Mutex::new(()),
            session: std::sync::Mutex::new(at_start.then(|| Session::new(cpus, capacity))),
            capacity,
            record_at_drop,
        }
    }

    /// The session, locked (a poisoned lock is still usable: the state is
    /// replaced whole).
    pub(crate) fn session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The buffer CPU `id` records into from its start, if the runtime
    /// started with a capture running.
    pub(crate) fn initial_buffer(&self, id: usize) -> Option<std::sync::Arc<RingBuf>> {
        let s = self.session();
        s.as_ref()
            .filter(|s| s.end.is_none())
            .map(|s| s.bufs[id].clone())
    }
}
