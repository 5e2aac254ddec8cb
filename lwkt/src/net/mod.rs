//! Sockets whose blocking calls park the calling lwkt thread, not its CPU
//! (`lwkt::net`).
//!
//! The types mirror `std::net`'s (and `std::os::unix::net`'s) names; each
//! call that can block takes `td: &mut CurThread`, tries the operation on
//! a non-blocking socket, and on `WouldBlock` waits in
//! [`CurThread::wait_fd`] (which is interruptible, honours the socket's
//! timeout, and ends with `Interrupted` when the runtime shuts down).
//! Because those calls take `&mut CurThread`, a reference to
//! token-protected data cannot be held across them:
//!
//! ```compile_fail,E0499
//! fn f(td: &mut lwkt::CurThread, s: &lwkt::net::TcpStream, tok: &lwkt::Token<u32>) {
//!     let g = td.get_token(tok);
//!     let n = g.get(td);           // borrows td until its last use
//!     let mut buf = [0u8; 4];
//!     let _ = s.read(td, &mut buf); // error: td is borrowed by `n`
//!     *n += 1;
//! }
//! ```
//!
//! For code written against `std::io::Read` / `Write` (`httparse`-based
//! parsers, `rustls`, `BufReader`...), [`TcpStream::io`] binds a stream to
//! the running thread for as long as the adapter lives.
//!
//! Every socket works on any CPU of any runtime: a thread may accept on
//! one CPU and hand the stream to a thread on another, or migrate with it.
//! Each socket is registered once, edge-triggered, on the CPU of the first
//! thread that waits on it (its home; see `sched/poll.rs`), and keeps a
//! readiness cache there: a wait on the home CPU costs no syscall beyond
//! the operation that said `WouldBlock`, and a short stream read spares
//! the next read's `EAGAIN`. A wait on another CPU (the thread migrated,
//! or the socket was handed over) arms a one-shot registration on that
//! CPU for the length of the wait, as [`CurThread::wait_fd`] does for any
//! fd. Dropping a socket deletes its registration before its fd closes.

mod tcp;
mod udp;
mod unix;

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use tcp::{TcpListener, TcpListenerBuilder, TcpStream, DEFAULT_BACKLOG};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use crate::sched::poll::{Interest, Registration};
use crate::thread::CurThread;

/// A binding of a stream to the running thread, so that it implements
/// `std::io::Read` and `Write` (made by [`TcpStream::io`] or
/// [`UnixStream::io`]). Each read or write parks the thread when it would
/// block, with the stream's timeouts.
pub struct Io<'a, S> {
    td: &'a mut CurThread,
    s: &'a S,
}

impl<S> std::fmt::Debug for Io<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

impl<'a, S> Io<'a, S> {
    pub(crate) fn new(td: &'a mut CurThread, s: &'a S) -> Io<'a, S> {
        Io { td, s }
    }

    /// The running thread, for calls in between (spawns, tokens).
    pub fn thread(&mut self) -> &mut CurThread {
        self.td
    }
}

/// A socket's per-call timeouts, in nanoseconds (0: none), as `std::net`
/// stores them in the kernel: set with `&self`, read by every call.
#[derive(Default, Debug)]
pub(crate) struct Timeouts {
    read: AtomicU64,
    write: AtomicU64,
}

fn encode(d: Option<Duration>) -> io::Result<u64> {
    match d {
        None => Ok(0),
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        Some(d) => Ok(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    }
}

fn decode(v: u64) -> Option<Duration> {
    (v != 0).then(|| Duration::from_nanos(v))
}

impl Timeouts {
    pub(crate) fn set_read(&self, d: Option<Duration>) -> io::Result<()> {
        self.read.store(encode(d)?, Ordering::Relaxed);
        Ok(())
    }
    pub(crate) fn set_write(&self, d: Option<Duration>) -> io::Result<()> {
        self.write.store(encode(d)?, Ordering::Relaxed);
        Ok(())
    }
    pub(crate) fn read(&self) -> Option<Duration> {
        decode(self.read.load(Ordering::Relaxed))
    }
    pub(crate) fn write(&self) -> Option<Duration> {
        decode(self.write.load(Ordering::Relaxed))
    }
}

pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "lwkt::net: operation timed out")
}

/// Runs the non-blocking `op` until it does not say `WouldBlock`, parking
/// on the socket's registration for `interest` in between, within
/// `timeout` overall. `op` is not even tried while the registration's
/// readiness cache on this CPU says it would block; `exhausted` tells from
/// a success that the socket is now empty for `interest` (a short stream
/// read), which clears that cache and saves the next try's `EAGAIN`.
pub(crate) fn blocking<T>(
    td: &mut CurThread,
    reg: &Registration,
    fd: BorrowedFd<'_>,
    interest: Interest,
    timeout: Option<Duration>,
    mut op: impl FnMut() -> io::Result<T>,
    exhausted: impl Fn(&T) -> bool,
) -> io::Result<T> {
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    loop {
        if td.io_maybe_ready(reg, interest) {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(v) => {
                    if exhausted(&v) {
                        td.io_clear(reg, interest);
                    }
                    return Ok(v);
                }
                Err(e) => return Err(e),
            }
        }
        let left = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(timed_out());
                }
                Some(d - now)
            }
            None => None,
        };
        td.wait_reg(reg, fd, interest, left)?;
    }
}

/// A socket whose reads and writes park the thread through [`blocking`]
/// with its own registration, fd and timeouts.
pub(crate) trait Parks {
    /// The socket's registration, fd and timeouts.
    fn parts(&self) -> (&Registration, BorrowedFd<'_>, &Timeouts);

    /// `op` as a read: waits for readability, with the read timeout.
    fn park_read<T>(
        &self,
        td: &mut CurThread,
        op: impl FnMut() -> io::Result<T>,
        exhausted: impl Fn(&T) -> bool,
    ) -> io::Result<T> {
        let (reg, fd, t) = self.parts();
        blocking(td, reg, fd, Interest::READABLE, t.read(), op, exhausted)
    }

    /// `op` as a write: waits for writability, with the write timeout.
    fn park_write<T>(
        &self,
        td: &mut CurThread,
        op: impl FnMut() -> io::Result<T>,
        exhausted: impl Fn(&T) -> bool,
    ) -> io::Result<T> {
        let (reg, fd, t) = self.parts();
        blocking(td, reg, fd, Interest::WRITABLE, t.write(), op, exhausted)
    }
}

/// `AsFd` and `AsRawFd` for socket types that wrap a std socket in
/// `inner`.
macro_rules! fd_impls {
    ($t:ty) => {
        impl std::os::fd::AsFd for $t {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(&self.inner)
            }
        }

        impl std::os::fd::AsRawFd for $t {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.inner)
            }
        }
    };
}
pub(crate) use fd_impls;

/// `std::io::Read` and `Write` for [`Io`] over a stream type with
/// `read`, `write` and `write_all` methods that take the thread.
macro_rules! stream_io_impls {
    ($t:ty) => {
        impl std::io::Read for $crate::net::Io<'_, $t> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.s.read(self.td, buf)
            }
        }

        impl std::io::Write for $crate::net::Io<'_, $t> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.s.write(self.td, buf)
            }
            fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
                self.s.write_all(self.td, buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}
pub(crate) use stream_io_impls;

/// `blocking`'s `exhausted` for operations that tell nothing.
pub(crate) fn never<T>(_: &T) -> bool {
    false
}

/// `blocking`'s `exhausted` for a stream read into `len` bytes: a read
/// that filled less than the buffer (but is not end of file) took all the
/// socket had. Edge-triggered registrations rely on it the way tokio does:
/// data that arrives later raises a new edge.
pub(crate) fn short_read(len: usize) -> impl Fn(&usize) -> bool {
    move |&n| n > 0 && n < len
}

/// `write_all` over a non-blocking `write`.
pub(crate) fn write_all(
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match write(buf)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            n => buf = &buf[n..],
        }
    }
    Ok(())
}
