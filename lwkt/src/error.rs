//! Errors returned by the runtime. A leaf module: it imports nothing from
//! the rest of the crate, so every layer can use it.

use std::fmt;
use std::io;

/// Why a runtime could not be built or a thread could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `Builder::cpus(0)`: a runtime needs at least one CPU.
    NoCpus,
    /// More CPUs than the runtime supports.
    TooManyCpus {
        /// What was asked for.
        requested: usize,
        /// The most supported.
        max: usize,
    },
    /// A stack size below the minimum.
    StackTooSmall {
        /// What was asked for, in bytes.
        requested: usize,
        /// The minimum, in bytes.
        min: usize,
    },
    /// A stack size above the maximum (`MAX_STACK_SIZE`).
    StackTooLarge {
        /// What was asked for, in bytes.
        requested: usize,
        /// The maximum, in bytes.
        max: usize,
    },
    /// A builder setting outside its valid range.
    InvalidSetting {
        /// The builder method, e.g. `"token_backoff_max"`.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The valid range, in words (e.g. `"at most 1048576"`).
        valid: &'static str,
    },
    /// `hz` must be between 1 and 10,000.
    InvalidHz(u32),
    /// A thread was placed on a CPU the runtime does not have.
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// How many CPUs the runtime has.
        ncpus: usize,
    },
    /// A priority above `Priority::MAX`.
    InvalidPriority(u8),
    /// No stack could be mapped for a new thread.
    StackAlloc {
        /// The stack size asked for, in bytes.
        size: usize,
        /// What ran out.
        cause: StackAllocCause,
        /// The operating system's error.
        os: io::Error,
    },
    /// An OS thread for a CPU could not be started.
    OsThread(io::Error),
    /// The runtime has been shut down.
    Shutdown,
    /// A thread operation needs a descheduled (parked) thread.
    NotDescheduled,
    /// The thread has exited.
    NoSuchThread,
    /// A handle or thread reference of one runtime was used from a thread
    /// of another runtime, for an operation that cannot cross runtimes.
    ForeignRuntime,
}

/// What ran out when a stack could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackAllocCause {
    /// Memory or address space.
    Memory,
    /// The kernel's limit on mappings per process (`vm.max_map_count` on
    /// Linux); each guarded stack needs one where the kernel has guard
    /// markers (Linux 6.13+), two otherwise (`lwkt::stack_guard_kind()`
    /// says which).
    MapCountLimit {
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoCpus => write!(f, "a runtime needs at least one CPU (cpus(0) was given)"),
            Error::TooManyCpus { requested, max } => {
                write!(
                    f,
                    "{requested} CPUs requested, but lwkt supports at most {max}"
                )
            }
            Error::StackTooSmall { requested, min } => write!(
                f,
                "stack size {requested} bytes is below the minimum of {min} bytes"
            ),
            Error::StackTooLarge { requested, max } => write!(
                f,
                "stack size {requested} bytes is above the maximum of {max} bytes"
            ),
            Error::InvalidSetting {
                setting,
                value,
                valid,
            } => write!(f, "invalid {setting}({value}): it must be {valid}"),
            Error::InvalidHz(hz) => write!(f, "hz must be between 1 and 10000, got {hz}"),
            Error::InvalidCpu { cpu, ncpus } => write!(
                f,
                "CPU {cpu} does not exist: the runtime has {ncpus} CPUs (0..{ncpus})"
            ),
            Error::InvalidPriority(p) => {
                write!(f, "priority {p} is out of range (0..=31)")
            }
            Error::StackAlloc { size, cause, os } => match cause {
                StackAllocCause::Memory => write!(
                    f,
                    "cannot map a {size}-byte thread stack: out of memory or address space ({os})"
                ),
                StackAllocCause::MapCountLimit { limit } => write!(
                    f,
                    "cannot map a {size}-byte thread stack: the process reached the kernel's \
                     limit of {limit} memory mappings (vm.max_map_count; each stack needs \
                     up to 2); raise it with `sysctl vm.max_map_count=N` ({os})"
                ),
            },
            Error::OsThread(e) => write!(f, "cannot start an OS thread for a CPU: {e}"),
            Error::Shutdown => write!(f, "the runtime has been shut down"),
            Error::NotDescheduled => write!(
                f,
                "the thread is not descheduled (it is running, runnable or asleep); \
                 only a parked thread can be pulled to another CPU"
            ),
            Error::NoSuchThread => write!(f, "the thread has exited"),
            Error::ForeignRuntime => write!(
                f,
                "the thread belongs to another runtime: this operation cannot cross runtimes"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::StackAlloc { os, .. } => Some(os),
            Error::OsThread(e) => Some(e),
            _ => None,
        }
    }
}

/// A thread ended by panicking; `join` returns this with the panic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// The message of a panic payload: its text when it is a string,
    /// `"Box<dyn Any>"` otherwise (as std's panic hook prints it).
    pub(crate) fn from_payload(p: &(dyn std::any::Any + Send)) -> Panicked {
        let message = if let Some(s) = p.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        Panicked { message }
    }

    /// The panic message (`"Box<dyn Any>"` when the payload was not a
    /// string).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lwkt thread panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

/// Why a sleep ended other than by a wakeup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SleepError {
    /// The timeout passed first (`EWOULDBLOCK` in the seed).
    TimedOut,
    /// An interruptible sleep was interrupted (`EINTR`), or the runtime is
    /// shutting down.
    Interrupted,
}

impl fmt::Display for SleepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SleepError::TimedOut => write!(f, "sleep timed out"),
            SleepError::Interrupted => write!(f, "sleep interrupted"),
        }
    }
}

impl std::error::Error for SleepError {}
