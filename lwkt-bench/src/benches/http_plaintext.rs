//! `http_plaintext`: TechEmpower's plaintext test on one server CPU,
//! driven by `wrk`, the load generator TechEmpower uses.
//!
//! Each implementation's run starts its server as a separate process
//! (`lwkt-bench __serve http_plaintext IMPL PORT CORE`, see `server.rs`)
//! pinned to one core, and
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
//! (p99 latency in µs at the same point); every other point in the
//! notes. Latencies are the ones wrk measured (one sample per pipelined
//! batch), read from its histogram by the script's `done` hook with wrk's
//! coordinated-omission correction undone: that correction assumes one
//! request per sample and, under pipelining, breaks wrk's percentiles (see
//! [`wrk_script`]).

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{ready, Server};
use super::{Bench, Better, Impl};
use crate::harness::{Ctx, Measurement, RunResult, Sample};

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

/// Pipelining depth (TechEmpower's).
const DEPTH: u32 = 16;
/// Connection counts measured; the headline is [`HEADLINE`].
const CONNS: [u32; 3] = [64, 256, 1024];
const HEADLINE: u32 = 256;

/// TechEmpower's pipelining script for a run at `conns` connections with
/// `depth` requests per write. Its `done` hook prints the
/// p50, p99 and max latency in µs on a line of its own, computed from the
/// latencies wrk measured.
///
/// Why not wrk's own percentiles: after a run, wrk 4.1 (`stats_correct`
/// in its `wrk.c`) adds synthetic samples for coordinated omission,
/// spaced by the run's mean interval per connection *per request*, while
/// it times pipelined requests *per batch*; the synthetic samples land
/// below the measured minimum, where its percentile walk (which starts at
/// the minimum) never counts them, so above a few hundred thousand
/// requests/s it prints a p99 of 0 or one below its own p50. The hook
/// reads wrk's histogram through LuaJIT's FFI, checks the layout against
/// the `min` and `max` wrk reports, undoes that correction exactly (it is
/// deterministic: every bucket from twice the interval up added its count
/// to the buckets one, two, ... intervals below it, down to one
/// interval), and walks the measured samples: one per pipelined batch,
/// one per request without pipelining. Where the FFI or the layout check
/// fails it prints wrk's own figures, marked `wrk`.
fn wrk_script(conns: u32, depth: u32) -> String {
    // `init` runs in each wrk thread's Lua state and `done` in another, so
    // the run's shape is written into the script rather than passed as
    // arguments.
    format!(
        "local CONNS = {conns}
local DEPTH = {depth}
init = function(args)
  local r = {{}}
  for i = 1, DEPTH do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
local function measured(summary, latency)
  local ok, ffi = pcall(require, \"ffi\")
  if not ok then return nil end
  -- wrk's `stats`: count, limit, min, max, then one count per microsecond.
  local s = ffi.cast(\"uint64_t **\", latency)[0]
  local lo, hi, limit = tonumber(s[2]), tonumber(s[3]), tonumber(s[1])
  if lo ~= latency.min or hi ~= latency.max or hi >= limit then return nil end
  local h = {{}}
  for v = 0, hi do h[v] = tonumber(s[4 + v]) end
  local per = math.floor(summary.requests / CONNS)
  local e = per > 0 and math.floor(summary.duration / per) or 0
  if e > 0 then
    for v = hi, 2 * e, -1 do
      local c = h[v]
      if c > 0 then
        local m = v - e
        while m > e do h[m] = h[m] - c; m = m - e end
      end
    end
  end
  local n = 0
  for v = 0, hi do
    if h[v] < 0 then return nil end
    n = n + h[v]
  end
  -- One sample per completed batch: never more than the responses.
  if n == 0 or n * DEPTH > summary.requests then return nil end
  local function pct(p)
    local rank = math.floor(p / 100 * n + 1)
    local t = 0
    for v = lo, hi do
      t = t + h[v]
      if t >= rank then return v end
    end
    return hi
  end
  return pct(50), pct(99), hi, n
end
done = function(summary, latency, requests)
  local p50, p99, max, n = measured(summary, latency)
  if p50 then
    io.write(string.format(\"LWKT-LATENCY raw p50 %d p99 %d max %d n %d\\n\", p50, p99, max, n))
  else
    io.write(string.format(\"LWKT-LATENCY wrk p50 %d p99 %d max %d\\n\",
      latency:percentile(50), latency:percentile(99), latency.max))
  end
end
"
    )
}

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
    /// Whether p50 and p99 are the measured latencies (see [`wrk_script`])
    /// rather than wrk's corrected table.
    measured: bool,
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
            "{} conns: {:.0} req/s, p50 {:.0} us{}, p99 {}, server CPU {:.0}% ({:.0} ns/req){}",
            self.conns,
            self.rps,
            self.p50_us,
            if self.measured {
                ""
            } else {
                " (wrk's corrected figures)"
            },
            if self.p99_is_max {
                format!(
                    "n/a (wrk printed 0; max {:.0} us, an upper bound)",
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

/// What one wrk run printed.
#[derive(Debug, PartialEq)]
struct WrkOut {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Socket errors (connect, read, write, timeout).
    errors: u64,
    /// The largest latency (µs; 0 when the script did not print it).
    max_us: f64,
    /// Whether the percentiles are the measured ones from the script's
    /// hook (see [`wrk_script`]) rather than wrk's corrected table.
    measured: bool,
}

/// Reads requests/s, latencies and errors from wrk's output; the script
/// hook's line is preferred over wrk's table.
fn parse_wrk(out: &str) -> Result<WrkOut, String> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut hook = None;
    let mut max = None;
    let mut errors = 0;
    for l in out.lines() {
        let t = l.trim();
        if let Some(v) = t.strip_prefix("LWKT-LATENCY ") {
            // "raw p50 A p99 B max M n N" or "wrk p50 A p99 B max M".
            let f: Vec<&str> = v.split_whitespace().collect();
            if let [kind, "p50", a, "p99", b, "max", m, ..] = f.as_slice() {
                if let (Ok(a), Ok(b), Ok(m)) = (a.parse::<f64>(), b.parse::<f64>(), m.parse()) {
                    max = Some(m);
                    // wrk's own figures can be a stray 0 below the p50.
                    if b > 0.0 && b >= a {
                        hook = Some((a, b, *kind == "raw"));
                    }
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
    let mut measured = false;
    if let Some((a, b, raw)) = hook {
        (p50, p99, measured) = (Some(a), Some(b), raw);
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50_us), Some(p99_us)) => Ok(WrkOut {
            rps,
            p50_us,
            p99_us,
            errors,
            max_us: max.unwrap_or(0.0),
            measured,
        }),
        _ => Err(format!("cannot read wrk's output:\n{out}")),
    }
}

fn measure(ctx: &Ctx, imp: &str, setup: &str) -> RunResult {
    wrk_available()?;
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let lua = |conns: u32, depth: u32| {
        std::env::temp_dir().join(format!(
            "lwkt-bench-pipeline-{}-{conns}-{depth}.lua",
            std::process::id()
        ))
    };

    let server = Server::start(BENCH.name, imp)?;
    let (pid, addr) = (server.pid(), server.addr);
    let (server_cpu, wrk_cpu, shared) = (server.server_cpu, server.client_cpu, server.shared());
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("server not reachable: {e}"))?;
    let url = format!("http://{addr}/plaintext");
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
        let script = lua(conns, depth);
        std::fs::write(&script, wrk_script(conns, depth))
            .map_err(|e| format!("writing {}: {e}", script.display()))?;
        cmd.arg("-s").arg(&script).arg(&url);
        let t0 = cpu_ticks(pid)?;
        let w0 = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running wrk: {e}"))?;
        let wall = w0.elapsed();
        let _ = std::fs::remove_file(&script);
        let t1 = cpu_ticks(pid)?;
        if !out.status.success() {
            return Err(format!(
                "wrk failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let w = parse_wrk(&text)?;
        let rps = w.rps;
        let cpu_s = (t1 - t0) as f64 / clk_tck();
        let requests = rps * f64::from(secs);
        Ok(Point {
            conns,
            pipelined,
            rps,
            p50_us: w.p50_us,
            p99_us: w.p99_us,
            max_us: w.max_us,
            measured: w.measured,
            p99_is_max: false,
            cpu_pct: 100.0 * cpu_s / wall.as_secs_f64(),
            cpu_ns: if requests > 0.0 {
                cpu_s * 1e9 / requests
            } else {
                f64::NAN
            },
            errors: w.errors,
        })
    };
    // Warm-up: connections, caches, the servers' buffers.
    run(HEADLINE, true, 1)?;
    let conns: &[u32] = if ctx.quick { &[HEADLINE] } else { &CONNS };
    let mut points = Vec::new();
    for &pipelined in &[true, false] {
        for &c in conns {
            // The script's hook gives the measured percentiles; where it
            // cannot read wrk's histogram it prints wrk's own, whose p99
            // can be 0 or below its p50 (see `wrk_script`): run such a
            // point again (at most three more times) rather than report it.
            let mut p = run(c, pipelined, secs)?;
            for _ in 0..3 {
                if p.p99_ok() {
                    break;
                }
                p = run(c, pipelined, secs)?;
            }
            if !p.p99_ok() && p.max_us > 0.0 {
                // Still no usable p99: report wrk's max latency instead, an
                // upper bound on the p99, and say so.
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
                "p99 latency pipelined at {HEADLINE} connections, per pipelined batch as wrk \
                 times it{}, p50 {:.0} us, server CPU {:.0}%",
                if head.p99_is_max {
                    "; wrk gave no usable percentiles, so this is its MAX latency, an upper \
                     bound on the p99"
                } else if head.measured {
                    ", from the latencies wrk measured (its coordinated-omission correction \
                     undone: it assumes one request per timed sample)"
                } else {
                    ", wrk's own corrected percentiles (the hook could not read or check its histogram)"
                },
                head.p50_us,
                head.cpu_pct
            )),
            ..Measurement::default()
        },
    ]))
}

// ---------------------------------------------------------------------
// The servers (run in their own process by `server::serve_main`)
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
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.rps, 808713.39);
        assert!((w.p50_us - 2490.0).abs() < 1e-6);
        assert!((w.p99_us - 17290.0).abs() < 1e-6);
        assert_eq!(w.errors, 5);
        assert!(!w.measured);
        // The hook's measured figures win over the table.
        let raw = format!("{out}LWKT-LATENCY raw p50 2400 p99 17000 max 31000 n 155582\n");
        let r = parse_wrk(&raw).unwrap();
        assert_eq!(
            (r.p50_us, r.p99_us, r.max_us, r.measured),
            (2400.0, 17000.0, 31000.0, true)
        );
        // wrk's own figures from the hook win too, but are not "measured".
        let wrk = format!("{out}LWKT-LATENCY wrk p50 2400 p99 17000 max 31000\n");
        let k = parse_wrk(&wrk).unwrap();
        assert_eq!((k.p99_us, k.measured), (17000.0, false));
        // A zero p99 from the hook is ignored in favour of the table; its
        // max is kept.
        let zero = format!("{out}LWKT-LATENCY wrk p50 2400 p99 0 max 31000\n");
        let z = parse_wrk(&zero).unwrap();
        assert!((z.p99_us - 17290.0).abs() < 1e-6);
        assert_eq!((z.max_us, z.measured), (31000.0, false));
        assert_eq!(parse_dur_us("456.00us"), Some(456.0));
        assert_eq!(parse_dur_us("1.50s"), Some(1.5e6));
        assert!(parse_wrk("garbage").is_err());
    }
}
