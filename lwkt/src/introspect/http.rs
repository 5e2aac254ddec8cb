//! A minimal HTTP/1.1 request reader and response writer for the
//! introspection server: one request per connection, `GET` only, bounded
//! in size and time.

use std::io;
use std::time::Instant;

use super::{IO_TIMEOUT, MAX_REQUEST};
use crate::net::TcpStream;
use crate::thread::CurThread;

/// A parsed request line (headers are read, bounded, and ignored).
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    query: String,
}

impl Request {
    /// The value of `key` in the query string, if present.
    pub(super) fn query(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadRequest {
    /// The client closed, reset or timed out before a full request: no
    /// answer is sent.
    Gone,
    /// Not an HTTP/1.x request line.
    Malformed,
    /// Longer than [`MAX_REQUEST`] without the end of the headers.
    TooLarge,
}

impl BadRequest {
    pub(super) fn status(&self) -> u16 {
        match self {
            BadRequest::TooLarge => 431,
            _ => 400,
        }
    }

    pub(super) fn message(&self) -> &'static str {
        match self {
            BadRequest::TooLarge => "request headers too large",
            _ => "malformed request",
        }
    }
}

/// Reads one request from `s`: bytes until the blank line that ends the
/// headers, at most [`MAX_REQUEST`], all within [`IO_TIMEOUT`] (a client
/// that sends nothing, or trickles bytes, is dropped without an answer).
pub(super) fn read_request(td: &mut CurThread, s: &TcpStream) -> Result<Request, BadRequest> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = find_end(&buf) {
            break i;
        }
        if buf.len() >= MAX_REQUEST {
            return Err(BadRequest::TooLarge);
        }
        // The whole request within IO_TIMEOUT, however it trickles in.
        let left = IO_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Err(BadRequest::Gone);
        }
        let want = chunk.len().min(MAX_REQUEST - buf.len());
        match s.read(td, &mut chunk[..want]) {
            Ok(0) | Err(_) => return Err(BadRequest::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    parse(&buf[..end])
}

/// Where the headers end (the index of the blank line's start).
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

/// Parses the request line of `head` (the request up to its blank line).
fn parse(head: &[u8]) -> Result<Request, BadRequest> {
    let head = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
    let line = head.lines().next().ok_or(BadRequest::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    let token_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !token_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(BadRequest::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
    })
}

/// An answer: status, extra headers, body.
pub(super) struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(super) fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub(super) fn error(status: u16, msg: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{status} {}: {msg}\n", reason(status)).into_bytes(),
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: &str) -> Response {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// The status code.
    #[cfg(test)]
    pub(super) fn status(&self) -> u16 {
        self.status
    }

    /// Writes the whole answer (each write bounded by the stream's write
    /// timeout).
    pub(super) fn write_to(&self, td: &mut CurThread, s: &TcpStream) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        s.write_all(td, head.as_bytes())?;
        s.write_all(td, &self.body)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers 503 on a connection over the limit, without reading it (a
/// short write bounded by [`IO_TIMEOUT`]).
pub(super) fn busy(td: &mut CurThread, s: &TcpStream) {
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let _ = Response::error(503, "too many connections").write_to(td, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        let r = parse(b"GET /api/trace?ms=50&x HTTP/1.1\r\nHost: a").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/trace"));
        assert_eq!(r.query("ms"), Some("50"));
        assert_eq!(r.query("x"), Some(""));
        assert_eq!(r.query("y"), None);
        for bad in [
            &b""[..],
            b"GET",
            b"GET / HTTP/1.1 extra",
            b"get / HTTP/1.1",
            b"GET nopath HTTP/1.1",
            b"GET / SPDY/3",
            b"\xff\xfe / HTTP/1.1",
        ] {
            assert_eq!(parse(bad).err(), Some(BadRequest::Malformed), "{bad:?}");
        }
        assert_eq!(find_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
        assert_eq!(Response::error(405, "x").status(), 405);
    }
}
