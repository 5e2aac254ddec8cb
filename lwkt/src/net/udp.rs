//! UDP: [`UdpSocket`].

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::{never, Parks, Timeouts};
use crate::sched::poll::Registration;
use crate::thread::CurThread;

/// A UDP socket whose sends and receives park the calling thread
/// (`std::net::UdpSocket`'s counterpart).
#[derive(Debug)]
pub struct UdpSocket {
    /// Declared before `inner`: dropped while the fd is still open.
    reg: Registration,
    inner: std::net::UdpSocket,
    timeouts: Timeouts,
}

impl UdpSocket {
    /// Binds to the first address of `addr` that works (never blocks).
    ///
    /// # Errors
    /// The OS's.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        Self::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Wraps a std socket (made non-blocking).
    ///
    /// # Errors
    /// When it cannot be made non-blocking.
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        s.set_nonblocking(true)?;
        Ok(UdpSocket {
            reg: Registration::new(s.as_fd()),
            inner: s,
            timeouts: Timeouts::default(),
        })
    }

    /// Sets the default peer for [`send`](Self::send) and
    /// [`recv`](Self::recv) and filters what is received (never blocks).
    ///
    /// # Errors
    /// The OS's.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        self.inner.connect(addr)
    }

    /// Sends a datagram to `addr`, parking while the send buffer is full.
    ///
    /// # Errors
    /// The OS's; `TimedOut` after the write timeout; `Interrupted`.
    pub fn send_to(&self, td: &mut CurThread, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.park_write(td, || self.inner.send_to(buf, addr), never)
    }

    /// Receives a datagram and its sender, parking until one arrives.
    ///
    /// # Errors
    /// The OS's; `TimedOut` after the read timeout; `Interrupted`.
    pub fn recv_from(&self, td: &mut CurThread, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.park_read(td, || self.inner.recv_from(buf), never)
    }

    /// Sends to the connected peer.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to); `NotConnected`.
    pub fn send(&self, td: &mut CurThread, buf: &[u8]) -> io::Result<usize> {
        self.park_write(td, || self.inner.send(buf), never)
    }

    /// Receives from the connected peer.
    ///
    /// # Errors
    /// As [`recv_from`](Self::recv_from) (`ConnectionRefused` when an
    /// earlier send drew an ICMP port-unreachable).
    pub fn recv(&self, td: &mut CurThread, buf: &mut [u8]) -> io::Result<usize> {
        self.park_read(td, || self.inner.recv(buf), never)
    }

    /// Sets the timeout of each receive (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.timeouts.set_read(d)
    }

    /// Sets the timeout of each send (None: none).
    ///
    /// # Errors
    /// `InvalidInput` for a zero duration (as std).
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.timeouts.set_write(d)
    }

    /// The receive timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.timeouts.read()
    }

    /// The send timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.timeouts.write()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    /// The OS's (`NotConnected`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl super::Parks for UdpSocket {
    fn parts(&self) -> (&Registration, BorrowedFd<'_>, &Timeouts) {
        (&self.reg, self.inner.as_fd(), &self.timeouts)
    }
}

super::fd_impls!(UdpSocket);
