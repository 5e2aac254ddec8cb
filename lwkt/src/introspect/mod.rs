//! The live introspection page ([`Runtime::serve_introspection`]): a small
//! read-only HTTP/1.1 server that runs on the runtime's own threads, over
//! [`crate::net`].
//!
//! One lwkt thread accepts; each connection gets its own lwkt thread, which
//! reads one `GET` request (at most [`MAX_REQUEST`] bytes, within
//! [`IO_TIMEOUT`]), answers it and closes (`Connection: close`). Routes:
//!
//! | path | answer |
//! |---|---|
//! | `/` | an HTML page that polls `/api/stats` every second |
//! | `/api/stats` | JSON: per-CPU counters, the thread table, the token table |
//! | `/api/trace?ms=N` | a trace capture of N ms (1 to [`MAX_TRACE_MS`]) as Chrome trace-event JSON, as a download |
//!
//! Anything else is 404, a method other than `GET` 405, a malformed or
//! oversized request 400 or 431. Nothing on the page changes a thread:
//! the one action, a trace capture, is refused (409) while another capture
//! runs, so it never replaces a capture someone else started.

mod http;
mod page;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::net::{TcpListener, TcpStream};
use crate::runtime::Runtime;
use crate::sched::core::with_current;
use crate::thread::{CurThread, JoinHandle, ThreadBuilder};

/// The largest request accepted (request line and headers), in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a connection may take to send its whole request, and how long
/// one write of the answer may wait for the client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest trace capture `/api/trace` takes, in milliseconds.
pub const MAX_TRACE_MS: u64 = 2000;
/// Connections served at once; more are answered 503 at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How often the accepting thread looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// State shared by the accepting thread and the connection threads.
pub(crate) struct Shared {
    stop: AtomicBool,
    conns: AtomicUsize,
    /// A capture for `/api/trace` is running.
    capturing: AtomicBool,
}

/// A running introspection server ([`Runtime::serve_introspection`]).
///
/// It stops when [`stop`](Self::stop) is called, when this handle is
/// dropped, or when its runtime shuts down.
#[must_use = "dropping the handle stops the server"]
pub struct Introspection {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Introspection {
    /// The address the server listens on (with the port the OS chose when
    /// the caller passed port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting connections and closes the listening socket
    /// (requests being answered finish). From a plain OS thread this waits
    /// until the socket is closed (at most about 100 ms); from a thread of
    /// a runtime it returns at once and the socket closes shortly after.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            if with_current(|_| ()).is_none() {
                // An error means the runtime shut down and unwound the
                // thread: the socket is closed either way.
                let _ = h.join_blocking();
            }
        }
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Runtime {
    /// Starts the live introspection page on `addr` (see the module
    /// [`crate::introspect`]): per-CPU counters, the thread table, the token
    /// table, trace downloads, and the same data as JSON at `/api/stats`.
    ///
    /// The page is read-only but shows thread names and lets anyone who
    /// can reach it take trace captures: pass a loopback address
    /// (`127.0.0.1:0` picks a free port) unless the network is trusted.
    ///
    /// # Errors
    /// Whatever binding the socket reports, or a failure to start the
    /// accepting thread (as `io::ErrorKind::Other`).
    pub fn serve_introspection(&self, addr: SocketAddr) -> io::Result<Introspection> {
        let listener = TcpListener::bind(addr)?;
        listener.set_accept_timeout(Some(ACCEPT_POLL))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            capturing: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = ThreadBuilder::new()
            .name("introspect-accept")
            .spawn_from(&self.handle(), move |td| accept_loop(td, listener, s))
            .map_err(|e| {
                io::Error::other(format!("lwkt: cannot start the introspection server: {e}"))
            })?;
        Ok(Introspection {
            addr,
            shared,
            accept: Some(accept),
        })
    }
}

fn accept_loop(td: &mut CurThread, listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept(td) {
            Ok((s, _)) => s,
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                continue
            }
            // A connection that failed before it was accepted (reset,
            // out of descriptors): keep serving the others, after a pause
            // so a persistent error does not spin.
            Err(_) => {
                let _ = td.sleep_for(ACCEPT_POLL);
                continue;
            }
        };
        if shared.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.conns.fetch_sub(1, Ordering::SeqCst);
            http::busy(td, &stream);
            continue;
        }
        let s = shared.clone();
        let spawned = ThreadBuilder::new()
            .name("introspect-conn")
            .spawn(td, move |td| {
                serve(td, &stream, &s);
                s.conns.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers one request on `stream` and closes it.
fn serve(td: &mut CurThread, stream: &TcpStream, shared: &Shared) {
    if stream.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let resp = match http::read_request(td, stream) {
        Ok(req) => route(td, &req, shared),
        Err(http::BadRequest::Gone) => return,
        Err(e) => http::Response::error(e.status(), e.message()),
    };
    // A client that went away mid-answer only ends this thread.
    let _ = resp.write_to(td, stream);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn route(td: &mut CurThread, req: &http::Request, shared: &Shared) -> http::Response {
    if req.method != "GET" {
        return http::Response::error(405, "only GET is served: the page is read-only")
            .header("Allow", "GET");
    }
    match req.path.as_str() {
        "/" | "/index.html" => {
            let snap = page::Snapshot::take(td);
            http::Response::ok("text/html; charset=utf-8", page::html(&snap).into_bytes())
        }
        "/api/stats" => {
            let snap = page::Snapshot::take(td);
            http::Response::ok("application/json", page::json(&snap).into_bytes())
        }
        "/api/trace" => trace(td, req, shared),
        _ => http::Response::error(404, "no such page"),
    }
}

fn trace(td: &mut CurThread, req: &http::Request, shared: &Shared) -> http::Response {
    let ms = match req.query("ms") {
        None => 200,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=MAX_TRACE_MS).contains(&n) => n,
            _ => {
                return http::Response::error(
                    400,
                    &format!("ms must be a whole number of milliseconds, 1 to {MAX_TRACE_MS}"),
                )
            }
        },
    };
    let trace = td.handle().trace();
    if shared.capturing.swap(true, Ordering::SeqCst) {
        return http::Response::error(409, "another capture from this page is running");
    }
    let resp = if trace.is_running() {
        http::Response::error(
            409,
            "a trace capture is already running in this runtime; the page does not replace it",
        )
    } else {
        match trace.start_in(td) {
            Err(e) => http::Response::error(503, &format!("cannot start a capture: {e}")),
            Ok(()) => {
                let _ = td.sleep_for(Duration::from_millis(ms));
                match trace.stop_in(td) {
                    Err(e) => http::Response::error(503, &format!("cannot stop the capture: {e}")),
                    Ok(data) => http::Response::ok("application/json", data.to_chrome_json())
                        .header(
                            "Content-Disposition",
                            "attachment; filename=\"lwkt-trace.json\"",
                        ),
                }
            }
        }
    };
    shared.capturing.store(false, Ordering::SeqCst);
    resp
}
