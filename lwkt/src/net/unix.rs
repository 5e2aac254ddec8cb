//! Unix-domain streams: [`UnixListener`] and [`UnixStream`].

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{blocking, never, short_read, write_all, Io, Parks, Timeouts};
use crate::sched::poll::{Interest, Registration};
use crate::thread::CurThread;

/// How long [`UnixStream::connect`] sleeps between tries while the
/// listener's backlog is full (a non-blocking Unix connect reports that as
/// `EAGAIN` and offers no readiness to wait for).
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

/// A Unix-domain listening socket whose `accept` parks the calling thread.
#[derive(Debug)]
pub struct UnixListener {
    /// Declared before `inner`: dropped while the fd is still open.
    reg: Registration,
    inner: std::os::unix::net::UnixListener,
}

impl UnixListener {
    /// Binds to the filesystem path `path` (never blocks).
    ///
    /// # Errors
    /// The OS's (`AddrInUse` if the path exists).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let l = std::os::unix::net::UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        Ok(UnixListener {
            reg: Registration::new(l.as_fd()),
            inner: l,
        })
    }

    /// Accepts a connection, parking the thread until one arrives.
    ///
    /// # Errors
    /// The OS's; `Interrupted`.
    pub fn accept(&self, td: &mut CurThread) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, a) = blocking(
            td,
            &self.reg,
            self.inner.as_fd(),
            Interest::READABLE,
            None,
            || self.inner.accept(),
            never,
        )?;
        Ok((UnixStream::from_std(s)?, a))
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The OS's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

super::fd_impls!(UnixListener);

/// A Unix-domain stream whose reads and writes park the calling thread.
#[derive(Debug)]
pub struct UnixStream {
    /// Declared before `inner`: dropped while the fd is still open.
    reg: Registration,
    inner: std::os::unix::net::UnixStream,
    timeouts: Timeouts,
}

impl UnixStream {
    /// Connects to the listener at `path`. While its backlog is full the
    /// thread sleeps and retries (the CPU runs other threads).
    ///
    /// # Errors
    /// The OS's (`NotFound`, `ConnectionRefused`); `Interrupted`.
    pub fn connect(td: &mut CurThread, path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let addr = SockAddr::unix(path)?;
        let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        loop {
            match s.connect(&addr) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    td.wait_fd(&s, Interest::WRITABLE, None)?;
                    if let Some(e) = s.take_error()? {
                        return Err(e);
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    td.sleep_for(BACKLOG_RETRY).map_err(|_| {
                        io::Error::new(io::ErrorKind::Interrupted, "lwkt: runtime shutting down")
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        let fd: std::os::fd::OwnedFd = s.into();
        Self::from_std(fd.into())
    }

    /// A connected pair (never blocks).
    ///
    /// # Errors
    /// The OS's.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((Self::from_std(a)?, Self::from_std(b)?))
    }

    /// Wraps a std stream (made non-blocking).
    ///
    /// # Errors
    /// When it cannot be made non-blocking.
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        s.set_nonblocking(true)?;
        Ok(UnixStream {
            reg: Registration::new(s.as_fd()),
            inner: s,
            timeouts: Timeouts::default(),
        })
    }

    /// Reads what is available, parking until there is some; `Ok(0)` is
    /// end of file.
    ///
    /// # Errors
    /// The OS's; `TimedOut` after the read timeout; `Interrupted`.
    pub fn read(&self, td: &mut CurThread, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.park_read(td, || (&self.inner).read(buf), short_read(len))
    }

    /// Writes what fits, parking until there is room.
    ///
    /// # Errors
    /// The OS's; `TimedOut` after the write timeout; `Interrupted`.
    pub fn write(&self, td: &mut CurThread, buf: &[u8]) -> io::Result<usize> {
        self.park_write(td, || (&self.inner).write(buf), never)
    }

    /// Writes all of `buf`.
    ///
    /// # Errors
    /// As [`write`](Self::write); `WriteZero`.
    pub fn write_all(&self, td: &mut CurThread, buf: &[u8]) -> io::Result<()> {
        write_all(|b| self.write(td, b), buf)
    }

    /// Shuts down one half or both.
    ///
    /// # Errors
    /// The OS's.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Sets the timeout of each read (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.timeouts.set_read(d)
    }

    /// Sets the timeout of each write (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration.
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.timeouts.set_write(d)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.timeouts.read()
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.timeouts.write()
    }

    /// Binds the stream to the running thread (`std::io::Read` / `Write`).
    pub fn io<'a>(&'a self, td: &'a mut CurThread) -> Io<'a, UnixStream> {
        Io::new(td, self)
    }
}

impl super::Parks for UnixStream {
    fn parts(&self) -> (&Registration, BorrowedFd<'_>, &Timeouts) {
        (&self.reg, self.inner.as_fd(), &self.timeouts)
    }
}

super::fd_impls!(UnixStream);

super::stream_io_impls!(UnixStream);
