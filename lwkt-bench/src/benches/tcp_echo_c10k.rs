//! `tcp_echo_c10k`: an echo server holding 10,000 concurrent TCP
//! connections on one core, each client sending a small message and
//! waiting for its echo, in turn, over and over.
//!
//! The server runs as its own process pinned to one core
//! (`lwkt-bench __serve tcp_echo_c10k IMPL PORT CORE`, see `server.rs`):
//! `lwkt` (a 1-CPU
//! runtime, a thread per connection at the default stack size) or `tokio`
//! (a current_thread runtime, a task per connection), both with the same
//! 512-byte buffer per connection. The client side is the same for both:
//! this process, pinned to the other core, runs a current_thread tokio
//! runtime with a task per connection (10,000 closed-loop clients). The
//! server's RSS is read from `/proc/PID/status` before the clients connect
//! and once every connection has made a round trip; the difference per
//! connection is the row's RSS figure. Each run is bounded: a fixed
//! measuring window, and a timeout on every round trip.
//!
//! Rows: bench `tcp_echo_c10k` (round trips/s), `tcp_echo_c10k_rss`
//! (server KiB per connection) and `tcp_echo_c10k_p99` (µs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::server::{ready, Server};
use super::{Bench, Better, Impl};
use crate::harness::{pin_current_thread, Ctx, Measurement, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "tcp_echo_c10k",
    unit: "ops/s",
    better: Better::Higher,
    about: "TCP echo, 10,000 connections on one server core (round trips/s)",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "tokio",
            run: tokio_impl,
        },
    ],
    timeout: Duration::from_secs(120),
    unranked: &[],
};

const CONNS: usize = 10_000;
const QUICK_CONNS: usize = 1_000;
const MSG: usize = 32;
const BUF: usize = 512;

fn lwkt(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "lwkt",
        "lwkt 1-CPU runtime, thread per connection (default stack)",
    )
}

fn tokio_impl(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "tokio",
        "tokio current_thread runtime, task per connection",
    )
}

/// Raises the soft open-file limit to the hard one; returns the soft limit
/// now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: an all-zero rlimit is a valid value to be filled in.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid resource and a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: valid resource and rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    r.rlim_cur
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

fn measure(ctx: &Ctx, imp: &str, setup: &str) -> RunResult {
    let conns = if ctx.quick { QUICK_CONNS } else { CONNS };
    let limit = raise_nofile();
    if limit < conns as u64 + 64 {
        return Err(format!(
            "open-file limit {limit} is below the {conns} connections needed (raise `ulimit -n`)"
        ));
    }
    let server = Server::start(BENCH.name, imp)?;
    let (pid, addr) = (server.pid(), server.addr);
    let (server_cpu, client_cpu) = (server.server_cpu, server.client_cpu);
    std::thread::sleep(Duration::from_millis(100));
    let rss0 = rss_kib(pid)?;
    pin_current_thread(client_cpu)?;
    let window = if ctx.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (rate, p50, p99, rss1, connect_s) = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let connected = Arc::new(AtomicU64::new(0));
        let warm = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (connected, warm, measuring, stop) = (
                connected.clone(),
                warm.clone(),
                measuring.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                connected.fetch_add(1, Ordering::Relaxed);
                let msg = [7u8; MSG];
                let mut buf = [0u8; MSG];
                let mut lat = Vec::new();
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let rt = async {
                        s.write_all(&msg).await?;
                        s.read_exact(&mut buf).await
                    };
                    match tokio::time::timeout(Duration::from_secs(10), rt).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("round trip: {e}")),
                        Err(_) => return Err("round trip took over 10 s".to_string()),
                    }
                    if first {
                        first = false;
                        warm.fetch_add(1, Ordering::Relaxed);
                    }
                    if measuring.load(Ordering::Relaxed) {
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                }
                Ok::<_, String>(lat)
            }));
        }
        // Every connection made a round trip: the server holds them all.
        while warm.load(Ordering::Relaxed) < conns as u64 {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "only {} of {conns} connections made a round trip within 60 s",
                    warm.load(Ordering::Relaxed)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let connect_s = t0.elapsed().as_secs_f64();
        let rss1 = rss_kib(pid)?;
        measuring.store(true, Ordering::Relaxed);
        let w0 = Instant::now();
        tokio::time::sleep(window).await;
        measuring.store(false, Ordering::Relaxed);
        let wall = w0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| e.to_string())??);
        }
        if all.is_empty() {
            return Err("no round trip measured".into());
        }
        all.sort_unstable();
        let pct = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64 / 1e3;
        Ok((
            all.len() as f64 / wall.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            rss1,
            connect_s,
        ))
    })?;
    drop(server);
    let per_conn = rss1.saturating_sub(rss0) as f64 / conns as f64;
    let note = format!(
        "{setup}; {conns} connections, {MSG}-byte messages, {BUF}-byte buffer per connection; \
         server on core {server_cpu}, tokio current_thread client (task per connection) on core \
         {client_cpu}; {window:?} window after every connection's first round trip ({connect_s:.1} s \
         to connect); p50 {p50:.0} us, p99 {p99:.0} us; server RSS {rss0} KiB idle, {rss1} KiB \
         with {conns} connections"
    );
    Ok(Sample::rows(vec![
        Measurement {
            bench: "tcp_echo_c10k".into(),
            imp: imp.into(),
            value: rate,
            unit: "ops/s".into(),
            note: Some(format!("round trips/s; {note}")),
            ..Measurement::default()
        },
        Measurement {
            bench: "tcp_echo_c10k_rss".into(),
            imp: imp.into(),
            value: per_conn,
            unit: "KiB/conn".into(),
            note: Some(format!("server RSS growth per connection; {note}")),
            ..Measurement::default()
        },
        Measurement {
            bench: "tcp_echo_c10k_p99".into(),
            imp: imp.into(),
            value: p99,
            unit: "us".into(),
            note: Some(format!("round-trip p99; {note}")),
            ..Measurement::default()
        },
    ]))
}

/// Runs an echo server (see the module header) until killed.
pub fn serve(imp: &str, addr: SocketAddr) -> Result<(), String> {
    raise_nofile();
    match imp {
        "lwkt" => serve_lwkt(addr),
        "tokio" => serve_tokio(addr),
        _ => Err(format!("unknown server `{imp}`")),
    }
}

fn serve_lwkt(addr: SocketAddr) -> Result<(), String> {
    let rt = lwkt::Runtime::builder()
        .cpus(1)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(move |td| {
        let l = lwkt::net::TcpListener::builder()
            .backlog(4096)
            .bind(addr)
            .map_err(|e| e.to_string())?;
        ready();
        loop {
            let (s, _) = match l.accept(td) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
                Err(_) => continue,
            };
            let _ = s.set_nodelay(true);
            let _ = td.spawn(move |td| {
                let mut buf = [0u8; BUF];
                while let Ok(n) = s.read(td, &mut buf) {
                    if n == 0 || s.write_all(td, &buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    })
}

fn serve_tokio(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.set_reuseaddr(true).map_err(|e| e.to_string())?;
        sock.bind(addr).map_err(|e| e.to_string())?;
        let l = sock.listen(4096).map_err(|e| e.to_string())?;
        ready();
        loop {
            let (mut s, _) = match l.accept().await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; BUF];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
