//! TCP: [`TcpListener`] (and its builder, for `SO_REUSEPORT`) and
//! [`TcpStream`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{blocking, never, short_read, write_all, Io, Parks, Timeouts};
use crate::sched::poll::{Interest, Registration};
use crate::thread::CurThread;

/// A TCP listening socket whose `accept` parks the calling thread
/// (`std::net::TcpListener`'s counterpart).
#[derive(Debug)]
pub struct TcpListener {
    /// Declared before `inner`: dropped while the fd is still open.
    reg: Registration,
    inner: std::net::TcpListener,
    /// `accept`'s timeout in nanoseconds (0: none).
    accept_timeout: AtomicU64,
}

/// Options for a [`TcpListener`] that `bind` alone does not give: several
/// listeners on one port (`SO_REUSEPORT`, one per CPU, the kernel spreading
/// connections among them) and the backlog.
#[derive(Clone, Debug)]
#[must_use]
pub struct TcpListenerBuilder {
    reuse_port: bool,
    reuse_address: bool,
    backlog: i32,
}

/// The listen backlog [`TcpListenerBuilder`] uses unless told otherwise
/// (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 1024;

impl Default for TcpListenerBuilder {
    fn default() -> Self {
        TcpListenerBuilder {
            reuse_port: false,
            reuse_address: true,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

impl TcpListenerBuilder {
    /// Default options: `SO_REUSEADDR` on (as std sets it), no
    /// `SO_REUSEPORT`, backlog [`DEFAULT_BACKLOG`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `SO_REUSEPORT`: several sockets (of this process, with the
    /// same user) may bind the same address, and the kernel spreads
    /// incoming connections among them.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Sets `SO_REUSEADDR` (default on).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// Binds and listens on `addr`.
    ///
    /// # Errors
    /// The OS's (address in use, permission...).
    pub fn bind(self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(self.reuse_address)?;
        if self.reuse_port {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(self.backlog)?;
        Ok(TcpListener::wrap(s.into()))
    }
}

impl TcpListener {
    /// Binds a listener to the first address of `addr` that works (as
    /// `std::net::TcpListener::bind`; never blocks).
    ///
    /// # Errors
    /// The OS's, for the last address tried.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpListenerBuilder::new().bind(a) {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Options beyond `bind`: `SO_REUSEPORT`, backlog.
    pub fn builder() -> TcpListenerBuilder {
        TcpListenerBuilder::new()
    }

    /// Wraps a std listener (made non-blocking).
    ///
    /// # Errors
    /// When it cannot be made non-blocking.
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener::wrap(l))
    }

    /// A listener around the non-blocking `l`.
    fn wrap(l: std::net::TcpListener) -> TcpListener {
        TcpListener {
            reg: Registration::new(l.as_fd()),
            inner: l,
            accept_timeout: AtomicU64::new(0),
        }
    }

    /// Accepts a connection, parking the thread until one arrives (or the
    /// accept timeout passes: `TimedOut`).
    ///
    /// # Errors
    /// The OS's; `TimedOut`; `Interrupted` (thread interrupted, runtime
    /// shutting down).
    pub fn accept(&self, td: &mut CurThread) -> io::Result<(TcpStream, SocketAddr)> {
        let to = super::decode(self.accept_timeout.load(Ordering::Relaxed));
        let (s, a) = blocking(
            td,
            &self.reg,
            self.inner.as_fd(),
            Interest::READABLE,
            to,
            || self.inner.accept(),
            never,
        )?;
        Ok((TcpStream::from_std(s)?, a))
    }

    /// Sets the timeout of each [`accept`](Self::accept) (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_accept_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.accept_timeout
            .store(super::encode(d)?, Ordering::Relaxed);
        Ok(())
    }

    /// The accept timeout.
    pub fn accept_timeout(&self) -> Option<Duration> {
        super::decode(self.accept_timeout.load(Ordering::Relaxed))
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The OS's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The pending socket error (`SO_ERROR`), if any.
    ///
    /// # Errors
    /// The OS's.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }
}

super::fd_impls!(TcpListener);

/// A TCP connection whose reads, writes and connect park the calling
/// thread (`std::net::TcpStream`'s counterpart). `Sync`: one thread may
/// read while another writes.
#[derive(Debug)]
pub struct TcpStream {
    /// Declared before `inner`: dropped while the fd is still open.
    reg: Registration,
    inner: std::net::TcpStream,
    timeouts: Timeouts,
}

impl TcpStream {
    /// Connects to the first address of `addr` that accepts, parking the
    /// thread while the handshake runs. The write timeout, if any, is not
    /// used (there is no stream yet); see
    /// [`connect_timeout`](Self::connect_timeout).
    ///
    /// # Errors
    /// The OS's for the last address tried (`ConnectionRefused`...);
    /// `Interrupted`.
    pub fn connect(td: &mut CurThread, addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match Self::connect_one(td, &a, None) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        }))
    }

    /// Connects to `addr`, giving up with `TimedOut` after `timeout`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), and `TimedOut`; `InvalidInput` for
    /// a zero timeout.
    pub fn connect_timeout(
        td: &mut CurThread,
        addr: &SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        super::encode(Some(timeout))?;
        Self::connect_one(td, addr, Some(timeout))
    }

    fn connect_one(
        td: &mut CurThread,
        addr: &SocketAddr,
        timeout: Option<Duration>,
    ) -> io::Result<TcpStream> {
        let s = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        match s.connect(&SockAddr::from(*addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                match td.wait_fd(&s, Interest::WRITABLE, timeout) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(super::timed_out()),
                    Err(e) => return Err(e),
                }
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                // Writable without an error, yet not connected: report
                // what the peer lookup says (ENOTCONN).
                s.peer_addr()?;
            }
            Err(e) => return Err(e),
        }
        Ok(TcpStream::wrap(s.into()))
    }

    /// A stream around the non-blocking `s`.
    fn wrap(s: std::net::TcpStream) -> TcpStream {
        TcpStream {
            reg: Registration::new(s.as_fd()),
            inner: s,
            timeouts: Timeouts::default(),
        }
    }

    /// Wraps a std stream (made non-blocking).
    ///
    /// # Errors
    /// When it cannot be made non-blocking.
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        Ok(TcpStream::wrap(s))
    }

    /// The std stream, made blocking again.
    ///
    /// # Errors
    /// When it cannot be made blocking.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        self.inner.set_nonblocking(false)?;
        let TcpStream { reg, inner, .. } = self;
        // Deletes the epoll registration while `inner` is still open.
        drop(reg);
        Ok(inner)
    }

    /// Reads what is available (at least one byte), parking until there is
    /// some. `Ok(0)` is end of file (the peer shut down its side).
    ///
    /// # Errors
    /// The OS's (`ConnectionReset` after a peer reset...); `TimedOut`
    /// after the read timeout; `Interrupted`.
    pub fn read(&self, td: &mut CurThread, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.park_read(td, || (&self.inner).read(buf), short_read(len))
    }

    /// Reads without taking the data out of the socket.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn peek(&self, td: &mut CurThread, buf: &mut [u8]) -> io::Result<usize> {
        self.park_read(td, || self.inner.peek(buf), never)
    }

    /// Writes what fits (at least one byte), parking until there is room.
    ///
    /// # Errors
    /// The OS's (`BrokenPipe`, `ConnectionReset`...); `TimedOut` after the
    /// write timeout; `Interrupted`.
    pub fn write(&self, td: &mut CurThread, buf: &[u8]) -> io::Result<usize> {
        self.park_write(td, || (&self.inner).write(buf), never)
    }

    /// Writes all of `buf`, parking as needed (the write timeout applies to
    /// each wait).
    ///
    /// # Errors
    /// As [`write`](Self::write); `WriteZero`.
    pub fn write_all(&self, td: &mut CurThread, buf: &[u8]) -> io::Result<()> {
        write_all(|b| self.write(td, b), buf)
    }

    /// Shuts down the reading half, the writing half, or both.
    ///
    /// # Errors
    /// The OS's (`NotConnected`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// The OS's.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS's.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets the timeout of each read (None: none), as std's.
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.timeouts.set_read(d)
    }

    /// Sets the timeout of each write (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
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

    /// The peer's address.
    ///
    /// # Errors
    /// The OS's (`NotConnected`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The pending socket error (`SO_ERROR`), if any.
    ///
    /// # Errors
    /// The OS's.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Another handle to the same connection (timeouts start unset).
    ///
    /// # Errors
    /// The OS's (out of fds).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream::wrap(self.inner.try_clone()?))
    }

    /// Binds the stream to the running thread: the result implements
    /// `std::io::Read` and `Write`, parking `td` as needed.
    pub fn io<'a>(&'a self, td: &'a mut CurThread) -> Io<'a, TcpStream> {
        Io::new(td, self)
    }
}

impl super::Parks for TcpStream {
    fn parts(&self) -> (&Registration, BorrowedFd<'_>, &Timeouts) {
        (&self.reg, self.inner.as_fd(), &self.timeouts)
    }
}

super::fd_impls!(TcpStream);

super::stream_io_impls!(TcpStream);
