//! Benchmarks whose server runs in a process of its own (`http_plaintext`,
//! `tcp_echo_c10k`): the hidden `__serve` subcommand that runs one, and
//! the measuring side's handle on it.
//!
//! The measuring process starts `lwkt-bench __serve BENCH IMPL PORT CORE`
//! with [`Server::start`]; the child pins itself to `CORE` (every thread
//! it starts inherits the mask), serves on 127.0.0.1:PORT, prints `ready`
//! once it listens ([`ready`]) and runs until the [`Server`] is dropped,
//! which kills it. The server gets the first core of this process's
//! affinity mask and the load generator the second ([`Server::client_cpu`]);
//! with one allowed core they share it ([`Server::shared`]).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{http_plaintext, tcp_echo_c10k};
use crate::harness::{allowed_cpus, pin_current_thread};

/// The subcommand that runs a server (hidden; used by these benchmarks).
pub const SERVE: &str = "__serve";

/// A server process started by [`Server::start`]; killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// The core it is pinned to.
    pub server_cpu: usize,
    /// The core left for the load generator (the server's own when only
    /// one is allowed).
    pub client_cpu: usize,
}

impl Server {
    /// Starts `bench`'s `imp` server on a free port and waits until it
    /// says it listens.
    ///
    /// # Errors
    /// When no port is free, the process cannot start, or it exits or
    /// prints something else before `ready`.
    pub fn start(bench: &str, imp: &str) -> Result<Server, String> {
        let cpus = allowed_cpus();
        let (server_cpu, client_cpu) = match cpus.as_slice() {
            [a, b, ..] => (*a, *b),
            [a] => (*a, *a),
            [] => (0, 0),
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                SERVE,
                bench,
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
        // Owned from here, so an early return kills it.
        let server = Server {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            server_cpu,
            client_cpu,
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("server output: {e}"))?;
        if line.trim() != "ready" {
            return Err(format!("server did not start: {line:?}"));
        }
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether server and load generator share one core.
    pub fn shared(&self) -> bool {
        self.server_cpu == self.client_cpu
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tells the measuring process the server listens (the server side).
pub fn ready() {
    let mut o = std::io::stdout();
    let _ = writeln!(o, "ready");
    let _ = o.flush();
}

/// `lwkt-bench __serve BENCH IMPL PORT CORE`: the server side (see the
/// module header).
pub fn serve_main(args: &[String]) -> std::process::ExitCode {
    use std::process::ExitCode;
    let [bench, imp, port, core] = args else {
        eprintln!("usage: lwkt-bench {SERVE} BENCH IMPL PORT CORE");
        return ExitCode::from(2);
    };
    let (Ok(port), Ok(core)) = (port.parse::<u16>(), core.parse::<usize>()) else {
        eprintln!("lwkt-bench {SERVE}: PORT and CORE must be numbers");
        return ExitCode::from(2);
    };
    if let Err(e) = pin_current_thread(core) {
        eprintln!("lwkt-bench {SERVE}: {e}");
        return ExitCode::from(2);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = match bench.as_str() {
        "http_plaintext" => http_plaintext::serve(imp, addr),
        "tcp_echo_c10k" => tcp_echo_c10k::serve(imp, addr),
        _ => Err(format!("`{bench}` has no server")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lwkt-bench {SERVE} {bench} {imp}: {e}");
            ExitCode::FAILURE
        }
    }
}
