//! Signals: numbers 1 to 63, kept as a pending set per LWP and per
//! process. There are no handlers: a pending signal makes interruptible
//! sleeps (and `wait`) return interrupted until the LWP takes it with
//! [`CurThread::sigtake`](crate::CurThread::sigtake). `KILL`, `STOP` and
//! `CONT` are never pending: they act at once on the whole process.

use std::fmt;

/// A signal number, 1 to 63 (NetBSD's numbering for the named ones).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(u8);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(1);
    /// `SIGINT`.
    pub const INT: Signal = Signal(2);
    /// `SIGKILL`: ends the process (every LWP unwinds at its next switch
    /// point).
    pub const KILL: Signal = Signal(9);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(30);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(31);
    /// `SIGTERM`.
    pub const TERM: Signal = Signal(15);
    /// `SIGSTOP`: stops every LWP at its next switch point.
    pub const STOP: Signal = Signal(17);
    /// `SIGCONT`: continues a stopped process.
    pub const CONT: Signal = Signal(19);

    /// The signal numbered `n`, if `n` is 1 to 63.
    pub const fn new(n: u8) -> Option<Signal> {
        if n >= 1 && n <= 63 {
            Some(Signal(n))
        } else {
            None
        }
    }

    /// The number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Signal::HUP => "SIGHUP",
            Signal::INT => "SIGINT",
            Signal::KILL => "SIGKILL",
            Signal::TERM => "SIGTERM",
            Signal::STOP => "SIGSTOP",
            Signal::CONT => "SIGCONT",
            Signal::USR1 => "SIGUSR1",
            Signal::USR2 => "SIGUSR2",
            _ => return write!(f, "signal {}", self.0),
        };
        f.write_str(name)
    }
}

/// A set of signals.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SigSet(u64);

impl SigSet {
    /// The empty set.
    pub const EMPTY: SigSet = SigSet(0);

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `s` is in the set.
    pub const fn contains(self, s: Signal) -> bool {
        self.0 & (1 << s.0) != 0
    }

    /// Adds `s`.
    pub fn insert(&mut self, s: Signal) {
        self.0 |= 1 << s.0;
    }

    /// Removes `s`; returns whether it was there.
    pub fn remove(&mut self, s: Signal) -> bool {
        let had = self.contains(s);
        self.0 &= !(1 << s.0);
        had
    }

    /// The lowest-numbered signal in the set.
    pub fn first(self) -> Option<Signal> {
        (self.0 != 0).then(|| Signal(self.0.trailing_zeros() as u8))
    }

    /// The union of two sets.
    pub const fn union(self, o: SigSet) -> SigSet {
        SigSet(self.0 | o.0)
    }

    /// The signals in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Signal> {
        (1..64u8)
            .filter(move |n| self.0 & (1 << n) != 0)
            .map(Signal)
    }
}

impl fmt::Debug for SigSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Signal> for SigSet {
    fn from_iter<I: IntoIterator<Item = Signal>>(it: I) -> SigSet {
        let mut s = SigSet::EMPTY;
        for x in it {
            s.insert(x);
        }
        s
    }
}
