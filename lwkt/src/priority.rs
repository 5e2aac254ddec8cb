//! Thread priorities, DragonFly's `td_pri` values: 0..=31, higher runs
//! first, equal priorities round-robin.

use std::fmt;

/// A fixed thread priority. Higher values run first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The idle thread (`TDPRI_IDLE_THREAD`).
    pub const IDLE_THREAD: Priority = Priority(0);
    /// Idle-time work (`TDPRI_IDLE_WORK`).
    pub const IDLE_WORK: Priority = Priority(1);
    /// The user scheduler helper (`TDPRI_USER_SCHEDULER`).
    pub const USER_SCHEDULER: Priority = Priority(2);
    /// Idle-class user work (`TDPRI_USER_IDLE`).
    pub const USER_IDLE: Priority = Priority(4);
    /// Normal user work (`TDPRI_USER_NORM`).
    pub const USER_NORM: Priority = Priority(6);
    /// Real-time user work (`TDPRI_USER_REAL`).
    pub const USER_REAL: Priority = Priority(8);
    /// Low-priority kernel scheduling (`TDPRI_KERN_LPSCHED`).
    pub const KERN_LPSCHED: Priority = Priority(9);
    /// Kernel work on behalf of a user (`TDPRI_KERN_USER`).
    pub const KERN_USER: Priority = Priority(10);
    /// Kernel daemons; the default for new threads (`TDPRI_KERN_DAEMON`).
    pub const KERN_DAEMON: Priority = Priority(12);
    /// Normal software interrupts (`TDPRI_SOFT_NORM`).
    pub const SOFT_NORM: Priority = Priority(14);
    /// Software timers (`TDPRI_SOFT_TIMER`).
    pub const SOFT_TIMER: Priority = Priority(16);
    /// Interrupt support threads; the lowest interrupt class
    /// (`TDPRI_INT_SUPPORT`).
    pub const INT_SUPPORT: Priority = Priority(20);
    /// Low interrupt level (`TDPRI_INT_LOW`).
    pub const INT_LOW: Priority = Priority(27);
    /// Medium interrupt level (`TDPRI_INT_MED`).
    pub const INT_MED: Priority = Priority(28);
    /// High interrupt level (`TDPRI_INT_HIGH`).
    pub const INT_HIGH: Priority = Priority(29);
    /// The highest priority (`TDPRI_MAX`).
    pub const MAX: Priority = Priority(31);

    /// Number of distinct levels.
    pub const LEVELS: usize = 32;

    /// A priority from its numeric level, or `None` above 31.
    pub const fn new(level: u8) -> Option<Priority> {
        if level <= 31 {
            Some(Priority(level))
        } else {
            None
        }
    }

    /// The numeric level, 0..=31.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether this is an interrupt-class priority (`INT_SUPPORT` or above).
    pub const fn is_interrupt(self) -> bool {
        self.0 >= Self::INT_SUPPORT.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::KERN_DAEMON
    }
}

impl fmt::Debug for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Priority({})", self.0)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke() {
        assert_eq!(Priority::default(), Priority::KERN_DAEMON);
        assert!(Priority::INT_HIGH > Priority::KERN_DAEMON);
        assert_eq!(Priority::new(32), None);
        assert_eq!(Priority::new(31), Some(Priority::MAX));
        assert!(Priority::INT_SUPPORT.is_interrupt());
        assert!(!Priority::SOFT_TIMER.is_interrupt());
    }
}
