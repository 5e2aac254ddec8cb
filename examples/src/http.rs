//! A minimal HTTP/1.1 "Hello, World!" plaintext responder (TechEmpower's
//! plaintext test): keep-alive and pipelining, parsing with `httparse`,
//! responses built into one reused buffer and written once per batch of
//! pipelined requests. Generic over `Read + Write`, so the same code serves
//! an lwkt stream (through [`lwkt::net::TcpStream::io`]) and a std stream.
//!
//! [`serve`] runs the lwkt server of `examples/http_hello.rs`: one
//! `SO_REUSEPORT` listener per CPU, a thread per connection on the CPU that
//! accepted it.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use lwkt::net::TcpListener;
use lwkt::{Runtime, ThreadBuilder};

/// The body every request gets.
pub const BODY: &[u8] = b"Hello, World!";
/// The most bytes one request's head may take.
const MAX_HEAD: usize = 16 * 1024;
/// Initial read buffer size.
const READ_BUF: usize = 4096;

/// `Date:` header values, refreshed once a second.
struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl DateCache {
    fn new() -> DateCache {
        let mut d = DateCache {
            secs: u64::MAX,
            text: [0; 29],
        };
        d.refresh();
        d
    }

    fn refresh(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now != self.secs {
            self.secs = now;
            self.text = http_date(now);
        }
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for `secs` since the
/// epoch.
pub fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let mut out = [0u8; 29];
    let mut w = &mut out[..];
    let _ = write!(
        w,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        std::str::from_utf8(DAYS[(days % 7) as usize]).unwrap_or("???"),
        d,
        std::str::from_utf8(MONTHS[(mo - 1) as usize]).unwrap_or("???"),
        y,
        h,
        m,
        s
    );
    out
}

fn respond(out: &mut Vec<u8>, date: &[u8; 29], path: Option<&str>) {
    match path {
        Some("/plaintext") | Some("/") => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nServer: lwkt\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: ",
            );
            out.extend_from_slice(date);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(BODY);
        }
        _ => {
            out.extend_from_slice(
                b"HTTP/1.1 404 Not Found\r\nServer: lwkt\r\nContent-Length: 0\r\nDate: ",
            );
            out.extend_from_slice(date);
            out.extend_from_slice(b"\r\n\r\n");
        }
    }
}

/// Serves one connection until the peer closes it: every complete request
/// in the read buffer is answered, the answers go out in one write, then
/// the next read. A malformed request gets `400` and the connection
/// closes; request bodies are not supported (`400` too).
///
/// # Errors
/// The stream's.
pub fn serve_connection<S: Read + Write>(s: &mut S) -> io::Result<()> {
    let mut rbuf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(READ_BUF);
    let mut date = DateCache::new();
    loop {
        date.refresh();
        loop {
            // Left uninitialized: httparse fills what it parses (and
            // nothing reads the rest), sparing a 512-byte fill per request.
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 16];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(&rbuf[start..end], &mut headers) {
                Ok(httparse::Status::Complete(n)) => {
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("content-length") && h.value != b"0"
                            || h.name.eq_ignore_ascii_case("transfer-encoding")
                    });
                    if has_body {
                        return bad_request(s, &mut out);
                    }
                    respond(&mut out, &date.text, req.path);
                    start += n;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return bad_request(s, &mut out),
            }
        }
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == rbuf.len() {
            // A partial request at the end of a full buffer: move it to
            // the front, growing the buffer for a long head.
            rbuf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == rbuf.len() {
                if rbuf.len() >= MAX_HEAD {
                    return bad_request(s, &mut out);
                }
                rbuf.resize(rbuf.len() * 2, 0);
            }
        }
        let n = s.read(&mut rbuf[end..])?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}

fn bad_request<S: Write>(s: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(
        b"HTTP/1.1 400 Bad Request\r\nServer: lwkt\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    s.write_all(out)
}

/// Runs the lwkt server on `addr` with `cpus` CPUs until the process
/// ends: a `SO_REUSEPORT` listener and an acceptor thread per CPU, a
/// thread per connection. Calls `ready` with the bound address once every
/// listener is up.
///
/// # Errors
/// When the runtime cannot start or the address cannot be bound.
pub fn serve(
    addr: SocketAddr,
    cpus: usize,
    ready: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rt = Runtime::builder().cpus(cpus).build()?;
    rt.block_on(
        move |td| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let first = TcpListener::builder().reuse_port(true).bind(addr)?;
            let bound = first.local_addr()?;
            let mut listeners = vec![first];
            for _ in 1..cpus {
                listeners.push(TcpListener::builder().reuse_port(true).bind(bound)?);
            }
            let mut acceptors = Vec::new();
            for (cpu, l) in listeners.into_iter().enumerate() {
                acceptors.push(
                    ThreadBuilder::new()
                        .name(format!("accept{cpu}"))
                        .cpu(cpu)
                        .spawn(td, move |td| loop {
                            match l.accept(td) {
                                Ok((s, _)) => {
                                    let _ = s.set_nodelay(true);
                                    let _ = td.spawn(move |td| {
                                        let _ = serve_connection(&mut s.io(td));
                                    });
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
                                // Out of fds, or a connection reset before it
                                // was accepted: keep serving the others.
                                Err(_) => td.yield_now(),
                            }
                        })?,
                );
            }
            ready(bound);
            for a in acceptors {
                let _ = a.join(td);
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_formats_known_instants() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(1_709_210_096), b"Thu, 29 Feb 2024 12:34:56 GMT");
    }

    /// A scripted stream: reads come from `input` in the given chunks,
    /// writes are collected.
    struct Script {
        chunks: Vec<Vec<u8>>,
        out: Vec<u8>,
    }
    impl Read for Script {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.chunks.is_empty() {
                return Ok(0);
            }
            let c = &mut self.chunks[0];
            let n = c.len().min(b.len());
            b[..n].copy_from_slice(&c[..n]);
            c.drain(..n);
            if c.is_empty() {
                self.chunks.remove(0);
            }
            Ok(n)
        }
    }
    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pipelined_requests_split_across_reads_each_get_an_answer() {
        let req = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
        let all: Vec<u8> = req.iter().copied().cycle().take(req.len() * 16).collect();
        // Split at awkward places, one of them inside a request line.
        let chunks = vec![all[..7].to_vec(), all[7..300].to_vec(), all[300..].to_vec()];
        let mut s = Script {
            chunks,
            out: Vec::new(),
        };
        serve_connection(&mut s).unwrap();
        let text = String::from_utf8(s.out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 16);
        assert_eq!(text.matches("Hello, World!").count(), 16);
    }

    #[test]
    fn a_request_with_a_body_gets_400_and_one_without_gets_200() {
        let mut s = Script {
            chunks: vec![
                b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            ],
            out: Vec::new(),
        };
        serve_connection(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&s.out).starts_with("HTTP/1.1 400"));
        let mut s = Script {
            chunks: vec![b"GET /nope HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec()],
            out: Vec::new(),
        };
        serve_connection(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&s.out).starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_malformed_request_gets_400_and_a_long_head_is_refused() {
        let mut s = Script {
            chunks: vec![b"GARBAGE\x01\r\n\r\n".to_vec()],
            out: Vec::new(),
        };
        serve_connection(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&s.out).starts_with("HTTP/1.1 400"));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 40_000));
        let mut s = Script {
            chunks: vec![long],
            out: Vec::new(),
        };
        serve_connection(&mut s).unwrap();
        assert!(String::from_utf8_lossy(&s.out).starts_with("HTTP/1.1 400"));
    }
}
