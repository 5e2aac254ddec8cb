//! `http_plaintext`: TechEmpower's plaintext test on one server CPU,
//! driven by `wrk`, the load generator TechEmpower uses.
//!
//! Each implementation's run starts its server as a separate process
//! (`lwkt-bench __serve http_plaintext IMPL PORT`) pinned to one core, and
//! runs `wrk -t1` pinned to another core (both cores from this process's
//! affinity mask; on a one-core machine they share it and the note says
//! so). The same for every server:
//!
//! * `lwkt`: `examples/http_hello`'s server (`lwkt_examples::http`): a
//!   1-CPU runtime, a thread per connection, `httparse`, one reused
//!   response buffer, one write per batch of pipelined requests.
//! * `may_minihttp`: may's own HTTP server, configured as its TechEmpower
//!   entry is (`set_workers(1)` for one core, 4 KiB coroutine stacks).
//! * `tokio_hyper`: hyper 1.x `http1` with `hyper-util`'s `TokioIo`, as
//!   hyper's examples serve, `pipeline_flush(true)` as hyper's TechEmpower
//!   entry sets it, on a `current_thread` runtime: with one core, a
//!   multi-thread runtime would add a blocking-pool hand-off and a second
//!   thread competing for the same core, and hyper's TechEmpower entry
//!   runs one current-thread runtime per core for that reason.
//! * `std_thread`: an OS thread per connection with blocking std sockets
//!   and the same parsing and response code as `lwkt`.
//!
//! Every server answers `GET /plaintext` with `Hello, World!`, a
//! `Content-Type`, `Server` and `Date` header. wrk runs with HTTP
//! pipelining of depth 16 through a small Lua script (TechEmpower's
//! method), and without; at 64, 256 and 1,024 connections; each point
//! bounded to a fixed time (wrk `-d`) and a per-request timeout, after one
//! warm-up run. The server's CPU use (from `/proc/PID/stat`) is reported
//! beside every figure, so a run limited by the generator (server well
//! below 100 %) shows as one.
//!
//! Rows: bench `http_plaintext` (requests/s pipelined at 256 connections,
//! `cpu_ns` = server CPU time per request) and bench `http_plaintext_p99`
//! (wrk's p99 latency in µs at the same point); every other point in the
//! notes.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Bench, Better, Impl};
use crate::harness::{allowed_cpus, Ctx, Measurement, RunResult, Sample};

pub static BENCH: Bench = Bench {
    name: "http_plaintext",
    unit: "req/s",
    better: Better::Higher,
    about: "HTTP plaintext (wrk, pipelined 16, 256 connections, server on 1 core)",
    impls: &[
        Impl {
            name: "lwkt",
            run: lwkt,
        },
        Impl {
            name: "may_minihttp",
            run: may_minihttp,
        },
        Impl {
            name: "tokio_hyper",
            run: tokio_hyper,
        },
        Impl {
            name: "std_thread",
            run: std_thread,
        },
    ],
    timeout: Duration::from_secs(120),
    unranked: &[],
};

/// The subcommand that runs a server (hidden; used by this benchmark).
pub const SERVE: &str = "__serve";

/// Pipelining depth (TechEmpower's).
const DEPTH: u32 = 16;
/// Connection counts measured; the headline is [`HEADLINE`].
const CONNS: [u32; 3] = [64, 256, 1024];
const HEADLINE: u32 = 256;

/// TechEmpower's pipelining script: `depth` requests per write; its
/// `done` hook prints the p50 and p99 in µs on a line of its own.
const PIPELINE_LUA: &str = "init = function(args)
  local r = {}
  local depth = tonumber(args[1]) or 1
  for i = 1, depth do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
done = function(summary, latency, requests)
  io.write(string.format(\"LWKT-LATENCY p50 %d p99 %d max %d\\n\",
    latency:percentile(50), latency:percentile(99), latency.max))
end
";

/// Whether `wrk` can be run; the reason when not.
pub fn wrk_available() -> Result<(), String> {
    match Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "wrk not found ({e}); install it with `apt-get install -y wrk` (Debian/Ubuntu)"
        )),
    }
}

fn lwkt(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "lwkt",
        "lwkt_examples::http (http_hello): 1-CPU runtime, thread per connection",
    )
}

fn may_minihttp(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "may_minihttp",
        "may_minihttp 0.1: may with 1 worker, 4 KiB stacks",
    )
}

fn tokio_hyper(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "tokio_hyper",
        "hyper 1 http1 + hyper-util TokioIo, pipeline_flush, current_thread runtime",
    )
}

fn std_thread(ctx: &Ctx) -> RunResult {
    measure(
        ctx,
        "std_thread",
        "OS thread per connection, blocking std sockets",
    )
}

/// One wrk run's figures.
struct Point {
    conns: u32,
    pipelined: bool,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// wrk's largest latency (µs).
    max_us: f64,
    /// Whether `p99_us` is wrk's max latency standing in for a p99 its
    /// histogram could not give (an upper bound; see `measure`).
    p99_is_max: bool,
    /// Server CPU use over the run, in % of one core.
    cpu_pct: f64,
    /// Server CPU ns per request.
    cpu_ns: f64,
    errors: u64,
}

impl Point {
    /// Whether wrk's p99 is usable (see `measure`).
    fn p99_ok(&self) -> bool {
        self.p99_us > 0.0 && (self.p99_us >= self.p50_us || self.p99_is_max)
    }

    fn describe(&self) -> String {
        format!(
            "{} conns: {:.0} req/s, p50 {:.0} us, p99 {}, server CPU {:.0}% ({:.0} ns/req){}",
            self.conns,
            self.rps,
            self.p50_us,
            if self.p99_is_max {
                format!(
                    "n/a (wrk's histogram printed 0; max {:.0} us, an upper bound)",
                    self.p99_us
                )
            } else if self.p99_ok() {
                format!("{:.0} us", self.p99_us)
            } else {
                "n/a (wrk printed none)".to_string()
            },
            self.cpu_pct,
            self.cpu_ns,
            if self.errors > 0 {
                format!(", {} socket errors", self.errors)
            } else {
                String::new()
            }
        )
    }
}

/// The server process; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// CPU ticks (user + system) the process `pid` has used.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = &s[s.rfind(')').ok_or("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("bad utime")?;
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("bad stime")?;
    Ok(ut + st)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// wrk's duration text (`1.23ms`, `456.00us`, `1.2s`) in µs.
fn parse_dur_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Requests/s, p50, p99, socket errors and the max latency (µs; 0 when
/// the script did not print it).
fn parse_wrk(out: &str) -> Result<(f64, f64, f64, u64, f64), String> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut lua = None;
    let mut max = None;
    let mut errors = 0;
    for l in out.lines() {
        let t = l.trim();
        if let Some(v) = t.strip_prefix("LWKT-LATENCY ") {
            // From the script's `done` hook, in µs: preferred over the
            // formatted table (see `measure` on wrk's stray zero p99).
            let f: Vec<&str> = v.split_whitespace().collect();
            if let [_, a, _, b, rest @ ..] = f.as_slice() {
                if let (Ok(a), Ok(b)) = (a.parse::<f64>(), b.parse::<f64>()) {
                    if b > 0.0 && b >= a {
                        lua = Some((a, b));
                    }
                }
                if let [_, m] = rest {
                    max = m.parse::<f64>().ok();
                }
            }
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = parse_dur_us(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_dur_us(v);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    if let Some((a, b)) = lua {
        (p50, p99) = (Some(a), Some(b));
    }
    match (rps, p50, p99) {
        (Some(r), Some(a), Some(b)) => Ok((r, a, b, errors, max.unwrap_or(0.0))),
        _ => Err(format!("cannot read wrk's output:\n{out}")),
    }
}

fn measure(ctx: &Ctx, imp: &str, setup: &str) -> RunResult {
    wrk_available()?;
    let cpus = allowed_cpus();
    let (server_cpu, wrk_cpu) = match cpus.as_slice() {
        [a, b, ..] => (*a, *b),
        [a] => (*a, *a),
        [] => (0, 0),
    };
    let shared = server_cpu == wrk_cpu;
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let lua = std::env::temp_dir().join(format!("lwkt-bench-pipeline-{}.lua", std::process::id()));
    std::fs::write(&lua, PIPELINE_LUA).map_err(|e| format!("writing {}: {e}", lua.display()))?;

    let port = free_port()?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut child = Command::new(exe)
        .args([
            SERVE,
            BENCH.name,
            imp,
            &port.to_string(),
            &server_cpu.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let server = Server(child);
    let pid = server.0.id();
    // The server prints "ready" once it listens.
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("server output: {e}"))?;
    if line.trim() != "ready" {
        return Err(format!("server did not start: {line:?}"));
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("server not reachable: {e}"))?;
    let url = format!("http://127.0.0.1:{port}/plaintext");
    let secs = if ctx.quick { 1 } else { 3 };
    let run = |conns: u32, pipelined: bool, secs: u32| -> Result<Point, String> {
        let mut cmd = if taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", &wrk_cpu.to_string(), "wrk"]);
            c
        } else {
            Command::new("wrk")
        };
        cmd.args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "2s",
            "--latency",
            "-H",
            "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7",
            "-H",
            "Connection: keep-alive",
        ]);
        // The same script both ways (depth 1: one request per write, as
        // wrk sends without a script), for its latency hook.
        let depth = if pipelined { DEPTH } else { 1 };
        cmd.arg("-s")
            .arg(&lua)
            .arg(&url)
            .args(["--", &depth.to_string()]);
        let t0 = cpu_ticks(pid)?;
        let w0 = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running wrk: {e}"))?;
        let wall = w0.elapsed();
        let t1 = cpu_ticks(pid)?;
        if !out.status.success() {
            return Err(format!(
                "wrk failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (rps, p50_us, p99_us, errors, max_us) = parse_wrk(&text)?;
        let cpu_s = (t1 - t0) as f64 / clk_tck();
        let requests = rps * f64::from(secs);
        Ok(Point {
            conns,
            pipelined,
            rps,
            p50_us,
            p99_us,
            max_us,
            p99_is_max: false,
            cpu_pct: 100.0 * cpu_s / wall.as_secs_f64(),
            cpu_ns: if requests > 0.0 {
                cpu_s * 1e9 / requests
            } else {
                f64::NAN
            },
            errors,
        })
    };
    // Warm-up: connections, caches, the servers' buffers.
    run(HEADLINE, true, 1)?;
    let conns: &[u32] = if ctx.quick { &[HEADLINE] } else { &CONNS };
    let mut points = Vec::new();
    for &pipelined in &[true, false] {
        for &c in conns {
            // wrk 4.1 now and then prints a 99th percentile of 0 (below its
            // own median) for a run it otherwise completed: run such a
            // point again (at most twice more) rather than report it.
            let mut p = run(c, pipelined, secs)?;
            for _ in 0..3 {
                if p.p99_ok() {
                    break;
                }
                p = run(c, pipelined, secs)?;
            }
            if !p.p99_ok() && p.max_us > 0.0 {
                // At over a million responses a second wrk 4.1's histogram
                // prints every percentile as 0 (its mean and max stay
                // right): report its max latency instead, an upper bound
                // on the p99, and say so.
                p.p99_us = p.max_us;
                p.p99_is_max = true;
            }
            if !p.p99_ok() && pipelined && c == HEADLINE {
                return Err(format!(
                    "wrk reported a p99 of {} us below its p50 of {} us four times \
                     at the headline point ({c} connections, pipelined), and no max",
                    p.p99_us, p.p50_us
                ));
            }
            points.push(p);
        }
    }
    drop(server);
    let _ = std::fs::remove_file(&lua);
    let head = points
        .iter()
        .find(|p| p.pipelined && p.conns == HEADLINE)
        .ok_or("no headline point")?;
    let list = |pipelined: bool| {
        points
            .iter()
            .filter(|p| p.pipelined == pipelined)
            .map(Point::describe)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let placement = if shared {
        format!("server and wrk share core {server_cpu} (only one core allowed)")
    } else if taskset {
        format!("server pinned to core {server_cpu}, wrk -t1 pinned to core {wrk_cpu}")
    } else {
        format!("server pinned to core {server_cpu}, wrk unpinned (no taskset)")
    };
    let note = format!(
        "{setup}; {placement}; {secs} s per point after a 1 s warm-up, wrk --timeout 2s; \
         pipelined (depth {DEPTH}): {}; no pipelining: {}; server CPU is its process's \
         user+system time over the run (below 100% means the generator or the network \
         path was the limit)",
        list(true),
        list(false)
    );
    Ok(Sample::rows(vec![
        Measurement {
            bench: "http_plaintext".into(),
            imp: imp.into(),
            value: head.rps,
            unit: "req/s".into(),
            cpu_ns: head.cpu_ns.is_finite().then_some(head.cpu_ns),
            note: Some(format!(
                "requests/s pipelined at {HEADLINE} connections (cpu_ns: server CPU per request); {note}"
            )),
            ..Measurement::default()
        },
        Measurement {
            bench: "http_plaintext_p99".into(),
            imp: imp.into(),
            value: head.p99_us,
            unit: "us".into(),
            note: Some(format!(
                "wrk p99 latency pipelined at {HEADLINE} connections (per pipelined batch, as \
                 wrk times it){}, p50 {:.0} us, server CPU {:.0}%",
                if head.p99_is_max {
                    "; wrk's histogram gave no percentiles at this rate, so this is its MAX \
                     latency, an upper bound on the p99"
                } else {
                    ""
                },
                head.p50_us,
                head.cpu_pct
            )),
            ..Measurement::default()
        },
    ]))
}

// ---------------------------------------------------------------------
// The servers (run in their own process by `serve_main`)
// ---------------------------------------------------------------------

/// Runs the `imp` server on `addr` until killed (see the module header).
pub fn serve(imp: &str, addr: SocketAddr) -> Result<(), String> {
    match imp {
        "lwkt" => serve_lwkt(addr),
        "may_minihttp" => serve_may(addr),
        "tokio_hyper" => serve_hyper(addr),
        "std_thread" => serve_std(addr),
        _ => Err(format!("unknown server `{imp}`")),
    }
}

fn ready() {
    let mut o = std::io::stdout();
    let _ = writeln!(o, "ready");
    let _ = o.flush();
}

fn serve_lwkt(addr: SocketAddr) -> Result<(), String> {
    lwkt_examples::http::serve(addr, 1, |_| ready()).map_err(|e| e.to_string())
}

fn serve_std(addr: SocketAddr) -> Result<(), String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
    ready();
    loop {
        let (s, _) = match l.accept() {
            Ok(c) => c,
            Err(_) => continue,
        };
        let _ = s.set_nodelay(true);
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut s = s;
                let _ = lwkt_examples::http::serve_connection(&mut s);
            })
            .map_err(|e| e.to_string())?;
    }
}

mod may_server {
    use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

    #[derive(Clone)]
    pub(super) struct Hello;

    impl HttpService for Hello {
        fn call(&mut self, _req: Request, rsp: &mut Response) -> std::io::Result<()> {
            rsp.header("Content-Type: text/plain").body("Hello, World!");
            Ok(())
        }
    }

    pub(super) struct Factory;

    impl HttpServiceFactory for Factory {
        type Service = Hello;
        fn new_service(&self, _id: usize) -> Hello {
            Hello
        }
    }
}

fn serve_may(addr: SocketAddr) -> Result<(), String> {
    use may_minihttp::HttpServiceFactory;
    may::config().set_workers(1).set_stack_size(0x1000);
    let h = may_server::Factory.start(addr).map_err(|e| e.to_string())?;
    ready();
    h.join().map_err(|_| "may server panicked".to_string())
}

fn serve_hyper(addr: SocketAddr) -> Result<(), String> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    async fn hello(
        _req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        Ok(Response::builder()
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .header(hyper::header::SERVER, "hyper")
            .body(Full::new(Bytes::from_static(b"Hello, World!")))
            .expect("static response"))
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| e.to_string())?;
        ready();
        loop {
            let (s, _) = match l.accept().await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let _ = s.set_nodelay(true);
            tokio::task::spawn(async move {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(s), service_fn(hello))
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 3s test @ http://127.0.0.1:1/plaintext
  1 threads and 256 connections
  Latency Distribution
     50%    2.49ms
     75%    5.70ms
     90%    8.77ms
     99%   17.29ms
  2489312 requests in 3.08s, 306.25MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
Requests/sec: 808713.39
";
        let (rps, p50, p99, err, _) = parse_wrk(out).unwrap();
        let with_hook = format!("{out}LWKT-LATENCY p50 2400 p99 17000\n");
        let (_, a, b, _, _) = parse_wrk(&with_hook).unwrap();
        assert_eq!((a, b), (2400.0, 17000.0));
        // A zero p99 from the hook is ignored in favour of the table.
        let zero = format!("{out}LWKT-LATENCY p50 2400 p99 0 max 31000\n");
        let z = parse_wrk(&zero).unwrap();
        assert!((z.2 - 17290.0).abs() < 1e-6);
        assert_eq!(z.4, 31000.0);
        assert_eq!(rps, 808713.39);
        assert!((p50 - 2490.0).abs() < 1e-6);
        assert!((p99 - 17290.0).abs() < 1e-6);
        assert_eq!(err, 5);
        assert_eq!(parse_dur_us("456.00us"), Some(456.0));
        assert_eq!(parse_dur_us("1.50s"), Some(1.5e6));
        assert!(parse_wrk("garbage").is_err());
    }
}
