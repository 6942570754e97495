//! A minimal blocking HTTP/1.1 client over a raw `TcpStream`: the test's downstream side.
//!
//! It writes whatever bytes a test gives it and reads responses with the framing rules of
//! RFC 9112 §6.3, so a test sees exactly what croupier sent and nothing is smoothed over.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::wire::{self, Wire};

/// How long a connect to croupier may take before the test gives up on it.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How long any single read may wait: generous, so a loaded machine does not fail a test, and
/// finite, so a croupier that never answers fails it instead of hanging it.
pub const READ_TIMEOUT_MS: u64 = 10_000;

/// How long a write may block; a 10 MiB upload is written in many such writes.
pub const WRITE_TIMEOUT_MS: u64 = 10_000;

/// How long `is_closed` waits for the peer's FIN before deciding the connection is open.
pub const CLOSE_WAIT_MS: u64 = 2_000;

/// One response as it arrived.
#[derive(Clone, Debug)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`, from the status line.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        wire::lossy(&self.body)
    }

    /// The body as JSON; a body that is not JSON fails the test, naming what came instead.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("expected a JSON body ({e}), got: {}", self.summary());
        })
    }

    /// Status, headers and the start of the body, for assertion messages.
    pub fn summary(&self) -> String {
        let shown = &self.body[..self.body.len().min(300)];
        format!(
            "{} {} {:?} body ({} bytes): {:?}",
            self.version,
            self.status,
            self.headers,
            self.body.len(),
            wire::lossy(shown)
        )
    }
}

/// One client connection to croupier.
pub struct Conn {
    wire: Wire,
}

impl Conn {
    /// Connects to `addr`; a failure fails the test.
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr, Duration::from_millis(READ_TIMEOUT_MS))
            .unwrap_or_else(|e| panic!("connect to croupier at {addr}: {e}"))
    }

    /// Connects to `addr` with the given read timeout.
    pub fn try_open(addr: SocketAddr, read_timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { wire: Wire::new(stream) })
    }

    /// A second handle on the socket, so one thread can write a big body while another reads.
    pub fn writer(&self) -> TcpStream {
        self.wire.stream.try_clone().expect("clone the client socket")
    }

    /// Writes `bytes`; a failure fails the test.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("send to croupier: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)
    }

    /// Reads the response to a request that was not HEAD; a failure fails the test.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to("GET")
    }

    /// Reads the response to a request of `method`: a HEAD response has no body whatever its
    /// headers say (RFC 9112 §6.3 item 1), so the client must know which request it sent.
    pub fn read_response_to(&mut self, method: &str) -> Response {
        self.try_read_response(method)
            .unwrap_or_else(|e| panic!("read a response to {method} from croupier: {e}"))
    }

    pub fn try_read_response(&mut self, method: &str) -> io::Result<Response> {
        loop {
            let Some(raw) = self.wire.read_head()? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "croupier closed the connection before a response",
                ));
            };
            let (status_line, headers) = wire::parse_head(&raw)?;
            let (version, status) = parse_status_line(&status_line)?;

            // Interim responses (100 Continue, 103 Early Hints) come before the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }

            // RFC 9112 §6.3: the first rule that applies decides where the body ends.
            let body = if method.eq_ignore_ascii_case("HEAD")
                || (100..200).contains(&status)
                || status == 204
                || status == 304
            {
                Vec::new()
            } else if wire::is_chunked(&headers) {
                self.wire.read_chunked()?
            } else if let Some(n) = wire::content_length(&headers)? {
                self.wire.read_exact_vec(n)?
            } else {
                self.wire.read_to_close()?
            };
            return Ok(Response { version, status, headers, body });
        }
    }

    /// Sends one request built by [`request_bytes`] and reads its response.
    pub fn roundtrip(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&request_bytes(method, path, headers, body));
        self.read_response_to(method)
    }

    pub fn try_roundtrip(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.try_send(&request_bytes(method, path, headers, body))?;
        self.try_read_response(method)
    }

    /// Whether the peer has closed: a read returns end of file (or a reset) within
    /// [`CLOSE_WAIT_MS`]. Bytes that arrive instead are kept for the next response.
    pub fn is_closed(&mut self) -> bool {
        if !self.wire.buffered().is_empty() {
            return false;
        }
        let stream = &self.wire.stream;
        let old_timeout = stream.read_timeout().ok().flatten();
        stream.set_read_timeout(Some(Duration::from_millis(CLOSE_WAIT_MS))).ok();
        let closed = match self.wire.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        };
        self.wire.stream.set_read_timeout(old_timeout).ok();
        closed
    }
}

fn parse_status_line(line: &str) -> io::Result<(String, u16)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") {
        return Err(bad());
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((version.to_string(), code.parse().map_err(|_| bad())?))
}

/// The bytes of an HTTP/1.1 request. `Host` is added unless given, and `Content-Length` is
/// added for a non-empty body (or a POST/PUT) unless the test gave its own framing headers.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !given("host") {
        head.push_str("host: croupier.test\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let framed = given("content-length") || given("transfer-encoding");
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");

    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection; any failure fails the test.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    Conn::open(addr).roundtrip(method, path, headers, body)
}

/// One request on a fresh connection, returning failures to the caller.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    Conn::try_open(addr, Duration::from_millis(READ_TIMEOUT_MS))?
        .try_roundtrip(method, path, headers, body)
}

/// `GET path` with a `croupier-topic` header on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, topic: &str) -> Response {
    request(addr, "GET", path, &[("croupier-topic", topic)], b"")
}
