//! The LWP layer's one error type, with NetBSD's errno values.

use std::fmt;

/// Why an LWP operation failed. [`errno`](LwpError::errno) gives the
/// NetBSD error number, and `Display` names the process and the LWP.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LwpError {
    /// No such LWP in the process, or (for `wait`) no LWP that could be
    /// collected: `ESRCH`.
    NoSuchLwp {
        /// The process.
        pid: u32,
        /// The LWP asked for (0: any).
        lid: u32,
    },
    /// The operation would deadlock: `EDEADLK`.
    Deadlock {
        /// The process.
        pid: u32,
        /// The LWP the caller named (or the caller, for a self-suspend).
        lid: u32,
        /// Which rule: "the target waits for us", "a wait cycle", ...
        why: &'static str,
    },
    /// The wait was interrupted by a signal, or the target of a suspend is
    /// not started yet or already a zombie: `EINTR`.
    Interrupted {
        /// The process.
        pid: u32,
        /// The LWP concerned.
        lid: u32,
        /// What happened.
        why: &'static str,
    },
    /// An invalid request, such as detaching an LWP twice: `EINVAL`.
    Invalid {
        /// The process.
        pid: u32,
        /// The LWP concerned.
        lid: u32,
        /// What was wrong.
        why: &'static str,
    },
    /// The calling thread is not an LWP of this process (operations that
    /// act on the caller need one): `EPERM`.
    NotInProcess {
        /// The process.
        pid: u32,
    },
    /// The LWP's thread could not be created (the core's error, as text):
    /// `EAGAIN`.
    Create {
        /// The process.
        pid: u32,
        /// What the core said.
        why: String,
    },
}

impl LwpError {
    /// NetBSD's `ESRCH`.
    pub const ESRCH: i32 = 3;
    /// NetBSD's `EINTR`.
    pub const EINTR: i32 = 4;
    /// NetBSD's `EPERM`.
    pub const EPERM: i32 = 1;
    /// NetBSD's `EAGAIN`.
    pub const EAGAIN: i32 = 35;
    /// NetBSD's `EDEADLK`.
    pub const EDEADLK: i32 = 11;
    /// NetBSD's `EINVAL`.
    pub const EINVAL: i32 = 22;

    /// The NetBSD error number.
    pub fn errno(&self) -> i32 {
        match self {
            LwpError::NoSuchLwp { .. } => Self::ESRCH,
            LwpError::Deadlock { .. } => Self::EDEADLK,
            LwpError::Interrupted { .. } => Self::EINTR,
            LwpError::Invalid { .. } => Self::EINVAL,
            LwpError::NotInProcess { .. } => Self::EPERM,
            LwpError::Create { .. } => Self::EAGAIN,
        }
    }

    /// The errno's symbolic name.
    pub fn name(&self) -> &'static str {
        match self.errno() {
            Self::ESRCH => "ESRCH",
            Self::EDEADLK => "EDEADLK",
            Self::EINTR => "EINTR",
            Self::EINVAL => "EINVAL",
            Self::EPERM => "EPERM",
            _ => "EAGAIN",
        }
    }
}

impl fmt::Display for LwpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let any = |lid: u32| {
            if lid == 0 {
                "any LWP".to_owned()
            } else {
                format!("LWP {lid}")
            }
        };
        match self {
            LwpError::NoSuchLwp { pid, lid } => {
                write!(f, "process {pid}: no such LWP: {} (ESRCH)", any(*lid))
            }
            LwpError::Deadlock { pid, lid, why } => {
                write!(
                    f,
                    "process {pid}, {}: would deadlock: {why} (EDEADLK)",
                    any(*lid)
                )
            }
            LwpError::Interrupted { pid, lid, why } => {
                write!(f, "process {pid}, {}: {why} (EINTR)", any(*lid))
            }
            LwpError::Invalid { pid, lid, why } => {
                write!(f, "process {pid}, {}: {why} (EINVAL)", any(*lid))
            }
            LwpError::NotInProcess { pid } => write!(
                f,
                "process {pid}: the calling thread is not one of its LWPs (EPERM)"
            ),
            LwpError::Create { pid, why } => {
                write!(f, "process {pid}: cannot create an LWP: {why} (EAGAIN)")
            }
        }
    }
}

impl std::error::Error for LwpError {}
