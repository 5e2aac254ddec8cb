//! Network I/O that parks threads: `wait_fd` and `lwkt::net`, over
//! loopback. Every test is bounded in time.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use lwkt::{CurThread, Interest, Runtime, Sleep, ThreadBuilder};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Echoes everything on `s` until EOF.
fn echo(td: &mut CurThread, s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(td, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(td, &buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn smoke() {
    bounded(30, "net smoke", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let srv = td.spawn(move |td| {
                let (s, _) = l.accept(td).unwrap();
                echo(td, s);
            });
            let c = TcpStream::connect(td, addr).unwrap();
            c.set_nodelay(true).unwrap();
            assert!(c.nodelay().unwrap());
            c.write_all(td, b"hello").unwrap();
            let mut got = [0u8; 5];
            c.io(td).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"hello");
            c.shutdown(Shutdown::Write).unwrap();
            srv.join(td).unwrap();
        });
    });
}

#[test]
fn partial_reads_and_writes_move_every_byte() {
    bounded(60, "partial reads and writes", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            // 8 MiB: far more than the socket buffers, so write_all must
            // park for room many times while the reader drains slowly.
            let data: Arc<Vec<u8>> =
                Arc::new((0..8u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect());
            let d = data.clone();
            let reader = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let (s, _) = l.accept(td).unwrap();
                    let mut got = Vec::with_capacity(d.len());
                    let mut buf = [0u8; 1000]; // odd size: partial reads
                    let mut reads = 0u32;
                    loop {
                        let n = s.read(td, &mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        reads += 1;
                        got.extend_from_slice(&buf[..n]);
                        if reads % 64 == 0 {
                            td.yield_now();
                        }
                    }
                    assert!(got == *d, "received bytes differ from those sent");
                    got.len()
                })
                .unwrap();
            let c = TcpStream::connect(td, addr).unwrap();
            // Uneven writes, each possibly partial.
            let mut off = 0;
            let mut step = 1;
            while off < data.len() {
                let end = (off + step).min(data.len());
                let n = c.write(td, &data[off..end]).unwrap();
                assert!(n >= 1 && n <= end - off);
                off += n;
                step = step * 3 % 1_000_003 + 1;
            }
            c.shutdown(Shutdown::Write).unwrap();
            assert_eq!(reader.join(td).unwrap(), data.len());
            let st = rt_stats(td);
            assert!(
                st.io_waits > 0,
                "nothing ever waited: the test did not exercise parking"
            );
        });
    });
}

fn rt_stats(td: &mut CurThread) -> lwkt::CpuStats {
    td.handle().stats().total
}

#[test]
fn read_timeout_parks_only_the_thread() {
    bounded(30, "read timeout", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (_s, _) = l.accept(td).unwrap();
            // Another thread on the same (only) CPU keeps running while the
            // reader waits.
            let ticks = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (t2, s2) = (ticks.clone(), stop.clone());
            let ticker = td.spawn(move |td| {
                while !s2.load(Ordering::Relaxed) {
                    t2.fetch_add(1, Ordering::Relaxed);
                    let _ = td.sleep_for(Duration::from_millis(2));
                }
            });
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            assert_eq!(c.read_timeout(), Some(Duration::from_millis(100)));
            let t0 = Instant::now();
            let mut buf = [0u8; 8];
            let e = c.read(td, &mut buf).unwrap_err();
            let el = t0.elapsed();
            assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
            assert!(el >= Duration::from_millis(100), "timed out early: {el:?}");
            assert!(
                ticks.load(Ordering::Relaxed) >= 5,
                "the CPU was blocked during the read"
            );
            stop.store(true, Ordering::Relaxed);
            ticker.join(td).unwrap();
            assert_eq!(
                c.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        });
    });
}

#[test]
fn connect_timeout_when_the_backlog_is_full() {
    bounded(60, "connect timeout", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            // Backlog 0 and never accepting: once the accept queue is
            // full the kernel drops further SYNs, so connects hang.
            let l = TcpListener::builder().backlog(0).bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let mut kept = Vec::new();
            let mut timed_out = 0;
            for _ in 0..8 {
                let t0 = Instant::now();
                match TcpStream::connect_timeout(td, &addr, Duration::from_millis(150)) {
                    Ok(s) => kept.push(s),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                        assert!(t0.elapsed() >= Duration::from_millis(150));
                        timed_out += 1;
                    }
                }
            }
            assert!(
                timed_out > 0,
                "no connect timed out ({} connected)",
                kept.len()
            );
            drop(l);
        });
    });
}

#[test]
fn connect_refused_is_an_error_not_a_hang() {
    bounded(30, "connect refused", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let addr = {
                let l = std::net::TcpListener::bind(loopback()).unwrap();
                l.local_addr().unwrap()
            };
            let e = TcpStream::connect(td, addr).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        });
    });
}

#[test]
fn peer_reset_and_eof_come_back_as_errors() {
    bounded(30, "reset and eof", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            // EOF: the peer shuts down its writing half while we wait.
            let c = TcpStream::connect(td, addr).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let h = td.spawn(move |td| {
                let _ = td.sleep_for(Duration::from_millis(30));
                s.shutdown(Shutdown::Write).unwrap();
                s
            });
            let mut buf = [0u8; 16];
            assert_eq!(c.read(td, &mut buf).unwrap(), 0, "EOF must read 0");
            drop(h.join(td).unwrap());
            // Reset: the peer closes with SO_LINGER 0 while we wait.
            let c = TcpStream::connect(td, addr).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let h = td.spawn(move |td| {
                let _ = td.sleep_for(Duration::from_millis(30));
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(s);
            });
            let e = c.read(td, &mut buf).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
            h.join(td).unwrap();
            // Writing to a reset connection fails too (never hangs).
            let mut failed = false;
            for _ in 0..100 {
                if c.write(td, &[0u8; 1024]).is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "writes to a reset connection kept succeeding");
        });
    });
}

#[test]
fn many_connections_across_cpus() {
    bounded(120, "many connections", || {
        let cpus = 4;
        let rt = Runtime::builder().cpus(cpus).build().unwrap();
        rt.block_on(move |td| {
            // One SO_REUSEPORT listener per CPU, each with its acceptor.
            let first = TcpListener::builder()
                .reuse_port(true)
                .bind(loopback())
                .unwrap();
            let addr = first.local_addr().unwrap();
            let mut listeners = vec![first];
            for _ in 1..cpus {
                listeners.push(TcpListener::builder().reuse_port(true).bind(addr).unwrap());
            }
            let served = Arc::new(AtomicUsize::new(0));
            let mut acceptors = Vec::new();
            for (cpu, l) in listeners.into_iter().enumerate() {
                let served = served.clone();
                acceptors.push(
                    ThreadBuilder::new()
                        .cpu(cpu)
                        .spawn(td, move |td| {
                            l.set_accept_timeout(Some(Duration::from_millis(300)))
                                .unwrap();
                            while let Ok((s, _)) = l.accept(td) {
                                let served = served.clone();
                                let _ = td.spawn(move |td| {
                                    echo(td, s);
                                    served.fetch_add(1, Ordering::Relaxed);
                                });
                            }
                        })
                        .unwrap(),
                );
            }
            let conns = 400;
            let rounds = 20;
            let mut clients = Vec::new();
            for i in 0..conns {
                clients.push(
                    ThreadBuilder::new()
                        .cpu(i % cpus)
                        .spawn(td, move |td| {
                            let c = TcpStream::connect(td, addr).unwrap();
                            let mut buf = [0u8; 64];
                            for r in 0..rounds {
                                let msg = format!("{i}:{r}");
                                c.write_all(td, msg.as_bytes()).unwrap();
                                c.io(td).read_exact(&mut buf[..msg.len()]).unwrap();
                                assert_eq!(&buf[..msg.len()], msg.as_bytes());
                            }
                            c.shutdown(Shutdown::Write).unwrap();
                            let n = c.read(td, &mut buf).unwrap();
                            assert_eq!(n, 0);
                        })
                        .unwrap(),
                );
            }
            for c in clients {
                c.join(td).unwrap();
            }
            for a in acceptors {
                a.join(td).unwrap();
            }
            assert_eq!(served.load(Ordering::Relaxed), conns);
        });
        let st = rt.stats();
        let busy = st.per_cpu.iter().filter(|c| c.io_waits > 0).count();
        assert!(busy >= 2, "I/O waits happened on only {busy} CPU(s)");
    });
}

/// A CPU blocked in its poller must be woken by an IPI (its eventfd), not
/// only by fd events: thread A waits on a silent socket (so the CPU has a
/// poller and parks in it), thread B sleeps on a channel, and a plain OS
/// thread wakes B.
#[test]
fn an_ipi_wakes_a_cpu_idle_in_its_poller() {
    bounded(30, "ipi wakes poller", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let h = rt.handle();
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            f.store(true, Ordering::SeqCst);
            lwkt::wakeup(&*f);
        });
        rt.block_on(move |td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let a = td.spawn(move |td| {
                let mut b = [0u8; 1];
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.read(td, &mut b)
            });
            td.sleep_until(&*flag, Sleep::default(), || flag.load(Ordering::SeqCst))
                .unwrap();
            c.write_all(td, b"x").unwrap();
            assert_eq!(a.join(td).unwrap().unwrap(), 1);
        });
        waker.join().unwrap();
        let st = h.stats().total;
        assert!(st.parks > 0, "the CPU never parked");
        assert!(st.io_polls > 0, "the CPU never looked at its poller");
    });
}

/// Data arriving while the CPU is parked in its poller wakes the reader.
#[test]
fn a_socket_wakes_its_thread_while_the_cpu_is_idle() {
    bounded(30, "socket wakes idle cpu", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = l.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(150));
            s.write_all(b"late").unwrap();
            s
        });
        let parks_before = rt.stats().total.parks;
        let got = rt.block_on(move |td| {
            let c = TcpStream::connect(td, addr).unwrap();
            let mut buf = [0u8; 4];
            c.io(td).read_exact(&mut buf).unwrap();
            buf
        });
        assert_eq!(&got, b"late");
        assert!(
            rt.stats().total.parks > parks_before,
            "the CPU did not idle"
        );
        drop(writer.join().unwrap());
    });
}

#[test]
fn runtime_drop_cancels_threads_blocked_in_accept_and_read() {
    bounded(30, "drop with blocked io", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dr = dropped.clone();
        let peer = rt.block_on(move |td| {
            let dropped = dr;
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let c = TcpStream::connect(td, addr).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let d = Count(dropped.clone());
            let _ = ThreadBuilder::new()
                .cpu(0)
                .spawn(td, move |td| {
                    let _d = d;
                    let r = l.accept(td);
                    panic!(
                        "accept returned during shutdown instead of unwinding: {:?}",
                        r.map(|_| ())
                    );
                })
                .unwrap();
            let d = Count(dropped.clone());
            let _ = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let _d = d;
                    let mut b = [0u8; 1];
                    let r = s.read(td, &mut b);
                    panic!("read returned during shutdown instead of unwinding: {r:?}");
                })
                .unwrap();
            // Let both block.
            td.sleep_for(Duration::from_millis(50)).unwrap();
            c
        });
        drop(rt);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "blocked threads were not unwound"
        );
        drop(peer);
    });
}

#[test]
fn wait_fd_on_a_pipe_written_by_an_os_thread() {
    bounded(30, "wait_fd pipe", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let (mut r, mut w) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.write_all(b"ping").unwrap();
            w
        });
        let r = rt.block_on(move |td| {
            let t0 = Instant::now();
            let ready = td
                .wait_fd(&r, Interest::READABLE, Some(Duration::from_secs(10)))
                .unwrap();
            assert!(ready.is_readable(), "{ready:?}");
            assert!(t0.elapsed() >= Duration::from_millis(90));
            let mut b = [0u8; 4];
            r.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ping");
            // Nothing more to read: the wait times out.
            let e = td
                .wait_fd(&r, Interest::READABLE, Some(Duration::from_millis(30)))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TimedOut);
            r
        });
        let w = writer.join().unwrap();
        // The write end of an empty pipe is writable at once; the read end
        // reports the hang-up once the writer is gone.
        rt.block_on(move |td| {
            let ready = td.wait_fd(&w, Interest::WRITABLE, None).unwrap();
            assert!(ready.is_writable());
            drop(w);
            let ready = td.wait_fd(&r, Interest::READABLE, None).unwrap();
            assert!(ready.is_hup() && ready.is_readable(), "{ready:?}");
        });
    });
}

#[test]
fn wait_fd_is_interruptible() {
    bounded(30, "wait_fd interrupt", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let (r, _w) = std::io::pipe().unwrap();
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    td.wait_fd(&r, Interest::READABLE, None).map(|_| ())
                })
                .unwrap();
            td.sleep_for(Duration::from_millis(50)).unwrap();
            h.interrupt();
            let e = h.join(td).unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Interrupted);
        });
    });
}

#[test]
fn wait_fd_rejects_a_regular_file() {
    bounded(30, "wait_fd regular file", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        rt.block_on(move |td| {
            let e = td
                .wait_fd(&f, Interest::READABLE, Some(Duration::from_millis(10)))
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc_eperm()), "{e}");
        });
    });
}

fn libc_eperm() -> i32 {
    1
}

/// A reader and a writer of the same socket on the same CPU: one-shot
/// registrations must serve both.
#[test]
fn reader_and_writer_share_a_socket() {
    bounded(60, "split stream", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let srv = td.spawn(move |td| {
                let (s, _) = l.accept(td).unwrap();
                echo(td, s);
            });
            let c = Arc::new(TcpStream::connect(td, addr).unwrap());
            let total = 4usize << 20;
            let c2 = c.clone();
            let writer = td.spawn(move |td| {
                let chunk = vec![7u8; 65536];
                let mut sent = 0;
                while sent < total {
                    c2.write_all(td, &chunk).unwrap();
                    sent += chunk.len();
                }
                c2.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = 0;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = c.read(td, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|&b| b == 7));
                got += n;
            }
            assert_eq!(got, total);
            writer.join(td).unwrap();
            srv.join(td).unwrap();
        });
    });
}

/// The inode of the open file `fd` (a socket's `socket:[ino]`).
fn inode_of(fd: i32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .ino()
}

/// How many epoll instances of this process have the file with inode
/// `ino` in their interest list (from `/proc/self/fdinfo`; matched by
/// inode, so another test's fd with the same number does not count).
fn epoll_sets_watching(ino: u64) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_epoll = std::fs::read_link(e.path())
            .map(|l| l.to_string_lossy().contains("eventpoll"))
            .unwrap_or(false);
        if !is_epoll {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let watches = info.lines().any(|l| {
            l.starts_with("tfd:")
                && l.split_whitespace()
                    .find_map(|w| w.strip_prefix("ino:"))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    == Some(ino)
        });
        n += usize::from(watches);
    }
    n
}

/// A thread that waited on CPU 0 (the socket's home: its persistent
/// registration lives there) and migrated is woken on CPU 1, through a
/// one-shot registration on CPU 1 armed for the wait; then, back on CPU 0,
/// through the persistent one again. Closing the socket leaves nothing in
/// any epoll set.
#[test]
fn migration_moves_the_wait_to_the_new_cpu() {
    bounded(30, "migrate with socket", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let ino = inode_of(s.as_raw_fd());
            let s = Arc::new(s);
            let s2 = s.clone();
            let h = ThreadBuilder::new()
                .cpu(0)
                .spawn(td, move |td| {
                    s2.set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    let mut b = [0u8; 3];
                    let e = s2.read(td, &mut b).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::TimedOut);
                    // SAFETY: nothing thread-local is live across it.
                    unsafe { td.migrate(1) }.unwrap();
                    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let n = s2.read(td, &mut b).unwrap();
                    let first = (td.cpu(), b[..n].to_vec());
                    // SAFETY: as above.
                    unsafe { td.migrate(0) }.unwrap();
                    let n = s2.read(td, &mut b).unwrap();
                    (first, (td.cpu(), b[..n].to_vec()))
                })
                .unwrap();
            td.sleep_for(Duration::from_millis(100)).unwrap();
            // The thread now waits on CPU 1: the socket is in CPU 0's set
            // (its home, persistent) and in CPU 1's (one-shot, this wait).
            let sets = epoll_sets_watching(ino);
            assert_eq!(sets, 2, "the socket is registered in {sets} epoll sets");
            c.write_all(td, b"abc").unwrap();
            td.sleep_for(Duration::from_millis(100)).unwrap();
            // CPU 1's one-shot entry, disarmed by its event, may stay
            // until the socket closes; it never fires again.
            c.write_all(td, b"def").unwrap();
            let (first, second) = h.join(td).unwrap();
            assert_eq!(first, (1, b"abc".to_vec()));
            assert_eq!(second, (0, b"def".to_vec()));
            drop(s);
            assert_eq!(
                epoll_sets_watching(ino),
                0,
                "dropped socket still registered"
            );
        });
    });
}

/// Sockets closed and their fd numbers reused, over and over, on one CPU:
/// each new socket registers afresh and is woken; a dropped socket leaves
/// no registration behind (its `Drop` deletes it before the fd closes), so
/// no stale entry can answer for, or starve, the fd number's next owner.
#[test]
fn fd_reuse_after_close_never_strands_a_waiter() {
    bounded(60, "fd reuse", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let mut fds = std::collections::HashSet::new();
            for i in 0..200u32 {
                let c = TcpStream::connect(td, addr).unwrap();
                let (s, _) = l.accept(td).unwrap();
                let fd = s.as_raw_fd();
                let ino = inode_of(fd);
                fds.insert(fd);
                let s = Arc::new(s);
                let s2 = s.clone();
                // The reader parks (first wait: it registers), then is
                // woken by the write.
                let r = td.spawn(move |td| {
                    let mut b = [0u8; 4];
                    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s2.io(td).read_exact(&mut b).unwrap();
                    u32::from_le_bytes(b)
                });
                td.yield_now();
                c.write_all(td, &i.to_le_bytes()).unwrap();
                assert_eq!(r.join(td).unwrap(), i);
                assert_eq!(epoll_sets_watching(ino), 1);
                drop(s);
                assert_eq!(epoll_sets_watching(ino), 0, "round {i}: stale registration");
                // Sometimes close the client first, sometimes not, so the
                // next accept and connect land on the numbers in turn.
                if i % 2 == 0 {
                    drop(c);
                }
            }
            assert!(fds.len() < 200, "fd numbers were never reused: {fds:?}");
        });
    });
}

/// A reader and a writer of one socket parked at once on its home CPU:
/// the one edge registration serves both, each woken only by its own
/// readiness.
#[test]
fn reader_and_writer_park_on_one_socket_at_once() {
    bounded(60, "reader and writer parked", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let s = Arc::new(s);
            let (sr, sw) = (s.clone(), s.clone());
            let wrote = Arc::new(AtomicUsize::new(0));
            let w2 = wrote.clone();
            // The writer fills the send buffers (nobody reads the peer
            // yet) and parks for room.
            let writer = td.spawn(move |td| {
                let chunk = vec![1u8; 65536];
                for _ in 0..64 {
                    sw.write_all(td, &chunk).unwrap();
                    w2.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
            let reader = td.spawn(move |td| {
                let mut b = [0u8; 5];
                sr.io(td).read_exact(&mut b).unwrap();
                b
            });
            td.sleep_for(Duration::from_millis(50)).unwrap();
            let stuck = wrote.load(Ordering::SeqCst);
            assert!(stuck < 64 * 65536, "the writer never had to park");
            // Data for the reader: it wakes, the writer stays parked.
            c.write_all(td, b"hello").unwrap();
            assert_eq!(&reader.join(td).unwrap(), b"hello");
            assert_eq!(wrote.load(Ordering::SeqCst), stuck);
            // Room for the writer: drain the peer.
            let mut got = 0;
            let mut buf = vec![0u8; 65536];
            while got < 64 * 65536 {
                got += c.read(td, &mut buf).unwrap();
            }
            writer.join(td).unwrap();
        });
    });
}

/// Edges that come while the thread runs (between its `EAGAIN` or short
/// read and its park): a peer on an OS thread answers every message at
/// once, thousands of times, with odd sizes so reads are short and full in
/// turn. A lost edge hangs a round and fails the bound.
#[test]
fn edges_arriving_before_the_park_are_never_lost() {
    bounded(60, "edge before park", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let addr = l.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_nodelay(true).unwrap();
                let mut b = [0u8; 64];
                loop {
                    let n = match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // Answer in two pieces: the second often arrives while
                    // the lwkt thread handles the first.
                    let (a, z) = b[..n].split_at(n / 2);
                    if c.write_all(a).is_err() || c.write_all(z).is_err() {
                        return;
                    }
                }
            });
            let (s, _) = l.accept(td).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 7];
            for i in 0..5000u32 {
                let len = 1 + (i % 13) as usize;
                let msg: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
                s.write_all(td, &msg).unwrap();
                let mut got = Vec::new();
                while got.len() < len {
                    let n = s.read(td, &mut buf).unwrap();
                    assert_ne!(n, 0, "round {i}: early EOF");
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, msg, "round {i}");
            }
            drop(s);
            peer.join().unwrap();
        });
    });
}

/// A timed-out wait on a registered socket leaves nothing behind: the
/// next wait is woken by data, and a thread that timed out while another
/// thread's data arrived later still reads it.
#[test]
fn timeouts_on_a_registered_socket() {
    bounded(30, "registered timeout", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let mut b = [0u8; 8];
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            for _ in 0..5 {
                let t0 = Instant::now();
                let e = s.read(td, &mut b).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::TimedOut);
                assert!(t0.elapsed() >= Duration::from_millis(10));
            }
            // Data that came while nobody waited is read at once.
            c.write_all(td, b"late").unwrap();
            td.sleep_for(Duration::from_millis(20)).unwrap();
            assert_eq!(s.read(td, &mut b).unwrap(), 4);
            // Then a wait that data ends well before its timeout.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let s = Arc::new(s);
            let s2 = s.clone();
            let r = td.spawn(move |td| {
                let mut b = [0u8; 8];
                let t0 = Instant::now();
                let n = s2.read(td, &mut b).unwrap();
                (n, t0.elapsed())
            });
            td.sleep_for(Duration::from_millis(20)).unwrap();
            c.write_all(td, b"x").unwrap();
            let (n, took) = r.join(td).unwrap();
            assert_eq!(n, 1);
            assert!(took < Duration::from_secs(5));
        });
    });
}

/// Runtime drop while a reader and a writer are parked on one registered
/// socket: both unwind; the socket, kept outside, is dropped after its
/// CPU's poller is gone (its registration still closes cleanly), and a
/// socket that outlived its runtime serves threads of a new one.
#[test]
fn cancellation_and_sockets_that_outlive_their_runtime() {
    bounded(30, "cancel registered", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let unwound = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let u = unwound.clone();
        let (s, c, l) = rt.block_on(move |td| {
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            let s = Arc::new(s);
            let (sr, sw) = (s.clone(), s.clone());
            let d = Count(u.clone());
            let _ = td.spawn(move |td| {
                let _d = d;
                let mut b = [0u8; 1];
                let r = sr.read(td, &mut b);
                panic!("read returned during shutdown instead of unwinding: {r:?}");
            });
            let d = Count(u.clone());
            let _ = td.spawn(move |td| {
                let _d = d;
                let chunk = vec![0u8; 65536];
                loop {
                    if let Err(e) = sw.write(td, &chunk) {
                        panic!("write returned during shutdown: {e:?}");
                    }
                }
            });
            td.sleep_for(Duration::from_millis(50)).unwrap();
            (s, c, l)
        });
        drop(rt);
        assert_eq!(
            unwound.load(Ordering::SeqCst),
            2,
            "parked threads not unwound"
        );
        // A new runtime: the old home is gone; waits take the one-shot
        // path and still work.
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(move |td| {
            let mut b = vec![0u8; 65536];
            let mut got = 0;
            let r = td.spawn(move |td| {
                let mut one = [0u8; 1];
                let n = s.read(td, &mut one).unwrap();
                (n, one[0])
            });
            // Drain what the writer left, then answer the reader.
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            while let Ok(n) = c.read(td, &mut b) {
                assert!(n > 0);
                got += n;
            }
            assert!(got > 0);
            c.write_all(td, b"z").unwrap();
            assert_eq!(r.join(td).unwrap(), (1, b'z'));
            drop(l);
        });
    });
}

/// `wait_fd` (one-shot) on a socket that also has its persistent
/// registration on the same CPU, and `connect`'s own one-shot wait before
/// it: neither disturbs the other (they live in different epoll sets), so
/// the socket's reads still wake on both ends afterwards.
#[test]
fn wait_fd_on_a_registered_socket_leaves_its_registration_alone() {
    bounded(30, "wait_fd on a net socket", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        rt.block_on(|td| {
            let l = TcpListener::bind(loopback()).unwrap();
            // connect() waited one-shot on this CPU for the handshake.
            let c = Arc::new(TcpStream::connect(td, l.local_addr().unwrap()).unwrap());
            let (s, _) = l.accept(td).unwrap();
            let s = Arc::new(s);
            for round in 0..3u8 {
                // Registers both sockets (first round), then parks on them.
                let (s2, c2) = (s.clone(), c.clone());
                let rs = td.spawn(move |td| {
                    let mut b = [0u8; 1];
                    s2.read(td, &mut b).unwrap();
                    b[0]
                });
                let rc = td.spawn(move |td| {
                    let mut b = [0u8; 1];
                    c2.read(td, &mut b).unwrap();
                    b[0]
                });
                td.yield_now();
                c.write_all(td, &[round]).unwrap();
                s.write_all(td, &[round + 10]).unwrap();
                assert_eq!(rs.join(td).unwrap(), round);
                assert_eq!(rc.join(td).unwrap(), round + 10);
                // One-shot waits on the same sockets, on the same CPU: a
                // timeout (arms, then deletes its entry) and a ready one.
                let e = td
                    .wait_fd(&*s, Interest::READABLE, Some(Duration::from_millis(5)))
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::TimedOut);
                let r = td.wait_fd(&*c, Interest::WRITABLE, None).unwrap();
                assert!(r.is_writable());
            }
        });
    });
}

#[test]
fn udp_round_trip_and_timeout() {
    bounded(30, "udp", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(|td| {
            let a = UdpSocket::bind(loopback()).unwrap();
            let b = UdpSocket::bind(loopback()).unwrap();
            let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let mut buf = [0u8; 64];
                    let (n, from) = b.recv_from(td, &mut buf).unwrap();
                    b.send_to(td, &buf[..n], from).unwrap();
                })
                .unwrap();
            let _ = td.sleep_for(Duration::from_millis(20));
            a.send_to(td, b"dgram", ba).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = a.recv_from(td, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"dgram");
            assert_eq!(from, ba);
            h.join(td).unwrap();
            a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            let e = a.recv_from(td, &mut buf).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TimedOut);
            let _ = aa;
        });
    });
}

#[test]
fn unix_streams_with_the_std_io_adapter() {
    bounded(30, "unix", || {
        let dir = std::env::temp_dir().join(format!("lwkt-net-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let p2 = path.clone();
        rt.block_on(move |td| {
            let l = UnixListener::bind(&p2).unwrap();
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    let (s, _) = l.accept(td).unwrap();
                    let mut line = String::new();
                    BufReader::new(s.io(td)).read_line(&mut line).unwrap();
                    s.write_all(td, line.to_uppercase().as_bytes()).unwrap();
                })
                .unwrap();
            let c = UnixStream::connect(td, &p2).unwrap();
            writeln!(c.io(td), "hello unix").unwrap();
            let mut out = String::new();
            c.io(td).read_to_string(&mut out).unwrap();
            assert_eq!(out, "HELLO UNIX\n");
            h.join(td).unwrap();
            let (x, y) = UnixStream::pair().unwrap();
            x.write_all(td, b"p").unwrap();
            let mut b = [0u8; 1];
            assert_eq!(y.read(td, &mut b).unwrap(), 1);
        });
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A CPU that never runs out of work must still look at its poller: a
/// thread spinning on `yield_now` keeps the run queue non-empty, and a
/// reader on the same CPU must be woken when its data arrives.
#[test]
fn a_busy_cpu_still_serves_its_sockets() {
    bounded(30, "busy cpu serves sockets", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = l.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(b"data").unwrap();
            s
        });
        let spins = rt.block_on(move |td| {
            let c = TcpStream::connect(td, addr).unwrap();
            let done = Arc::new(AtomicBool::new(false));
            let d = done.clone();
            let spinner = td.spawn(move |td| {
                let mut n = 0u64;
                while !d.load(Ordering::Acquire) {
                    td.yield_now();
                    n += 1;
                }
                n
            });
            let mut b = [0u8; 4];
            c.io(td).read_exact(&mut b).unwrap();
            assert_eq!(&b, b"data");
            done.store(true, Ordering::Release);
            spinner.join(td).unwrap()
        });
        assert!(spins > 0);
        drop(writer.join().unwrap());
    });
}

/// LWP signals and kill reach a thread blocked in socket I/O: a signal
/// ends a blocked `read` with `Interrupted`, and `kill` unwinds an LWP
/// blocked in `accept` (its destructors run, the process exits killed).
#[test]
fn lwp_signal_and_kill_interrupt_blocked_io() {
    use lwkt::lwp::{ExitStatus, LwpBuilder, Proc, Signal};
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let status = bounded(30, "lwp signal/kill on io", move || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let h = Proc::spawn_from(&rt.handle(), move |td| {
            let p = td.proc().unwrap();
            let l = TcpListener::bind(loopback()).unwrap();
            let c = TcpStream::connect(td, l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept(td).unwrap();
            // A signal interrupts a blocked read.
            let s = Arc::new(s);
            let s2 = s.clone();
            let got = Arc::new(std::sync::Mutex::new(None));
            let g = got.clone();
            let reader = p
                .create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                    let mut b = [0u8; 1];
                    let r = s2.read(td, &mut b).map_err(|e| e.kind());
                    *g.lock().unwrap() = Some(r);
                    0
                })
                .unwrap();
            // Let it block (an LWP waiting on an fd is not shown as SLEEP
            // by the LWP layer, which only tracks its own sleeps).
            td.sleep_for(Duration::from_millis(100)).unwrap();
            p.signal_lwp(reader, Signal::USR1).unwrap();
            p.wait(td, Some(reader)).unwrap();
            assert_eq!(
                *got.lock().unwrap(),
                Some(Err(ErrorKind::Interrupted)),
                "the signal did not interrupt the read"
            );
            // Kill unwinds an LWP blocked in accept; the first LWP blocks in
            // a read itself.
            struct Count(Arc<AtomicUsize>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let v = Count(d.clone());
            p.create_lwp(td, LwpBuilder::new().cpu(1), move |td| {
                let _v = v;
                let _ = l.accept(td);
                0
            })
            .unwrap();
            let _v = Count(d.clone());
            let mut b = [0u8; 1];
            loop {
                // The peer stays open (`s`), so this blocks until the kill.
                let _ = c.read(td, &mut b);
                let _ = &s;
                td.yield_now();
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        h.kill();
        h.join_blocking()
    });
    assert_eq!(status, ExitStatus::Killed(Signal::KILL));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "blocked LWPs were not unwound"
    );
}
