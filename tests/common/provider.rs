//! A real HTTP/1.1 provider on a loopback ephemeral port: the test's upstream side.
//!
//! It runs one thread per accepted connection, keeps connections alive as HTTP/1.1 says,
//! reads `Content-Length` and chunked request bodies, records every request it gets (the head
//! byte for byte, as croupier sent it) and answers according to its [`Behaviour`].

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::server::Server;
use super::wire::{self, Wire};
use super::{fnv1a64, pattern_byte};

/// Requests one connection serves before the provider closes it, so no loop is unbounded.
const REQUESTS_PER_CONNECTION_MAX: usize = 100_000;

/// Largest chunk a `ChunkedDownload` sends; sizes vary from 1 byte up to this.
const DOWNLOAD_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// How a provider answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with body `provider <port>`. A request with a body gets `x-body-len` and
    /// `x-body-sum` (FNV-1a 64, hex) so big uploads can be checked without echoing them.
    /// A target `/status/204` or `/status/304` gets that status with no body (the 304 with a
    /// `Content-Length`, as RFC 9110 §8.6 allows, to catch a proxy that waits for it).
    Echo,
    /// 200, `Transfer-Encoding: chunked`, this many bytes of [`super::pattern`] in chunks of
    /// varied sizes between 1 byte and 64 KiB.
    ChunkedDownload(usize),
    /// Sleeps this many milliseconds, then answers as `Echo`.
    Sleep(u64),
    /// Reads the request, records it, and closes the connection without a byte of response.
    CloseWithoutResponse,
}

/// One request as the provider received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// The head exactly as received, up to and including the empty line.
    pub raw_head: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }
}

struct Shared {
    port: u16,
    behaviour: Behaviour,
    requests: Mutex<Vec<Recorded>>,
    /// Set by `stop`: requests read after it get no answer.
    stopping: AtomicBool,
}

pub struct Provider {
    shared: Arc<Shared>,
    server: Server,
}

impl Provider {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start(behaviour: Behaviour) -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a provider port");
        let port = listener.local_addr().expect("provider address").port();
        let shared = Arc::new(Shared {
            port,
            behaviour,
            requests: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let server = Server::start(listener, "provider", move |stream| serve(stream, &for_thread))
            .expect("start the provider's accept thread");
        Provider { shared, server }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Every request received so far, in order of completion.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Stops like a killed process: the listener is closed, so new connects are refused, and
    /// every live connection is shut down. Recorded requests stay readable.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.server.stop();
    }
}

/// Serves one connection until the peer closes, a request says close, or framing breaks.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut wire = Wire::new(stream);

    for _ in 0..REQUESTS_PER_CONNECTION_MAX {
        let Ok(Some(request)) = read_request(&mut wire) else {
            return;
        };
        // What the answer needs, taken before the request moves into the record. It is
        // recorded before answering, so a test that has its response also sees the record.
        let asked = Asked {
            method: request.method.clone(),
            target: request.target.clone(),
            body_sum: (!request.body.is_empty())
                .then(|| (request.body.len(), fnv1a64(&request.body))),
            keep_alive: wants_keep_alive(&request),
        };
        shared.requests.lock().unwrap().push(request);

        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let answered = match &shared.behaviour {
            Behaviour::Echo => echo(&mut wire.stream, shared.port, &asked),
            Behaviour::Sleep(ms) => {
                thread::sleep(Duration::from_millis(*ms));
                echo(&mut wire.stream, shared.port, &asked)
            }
            Behaviour::ChunkedDownload(n) => chunked_download(&mut wire.stream, *n, &asked),
            Behaviour::CloseWithoutResponse => return,
        };
        if answered.is_err() || !asked.keep_alive {
            let _ = wire.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// The parts of a request its answer depends on.
struct Asked {
    method: String,
    target: String,
    /// Length and FNV-1a 64 of the body, if there was one.
    body_sum: Option<(usize, u64)>,
    keep_alive: bool,
}

impl Asked {
    fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
}

/// Reads one request; `Ok(None)` when the peer closed between requests.
/// Shared with the other test providers.
pub(super) fn read_request(wire: &mut Wire) -> std::io::Result<Option<Recorded>> {
    let Some(raw_head) = wire.read_head()? else {
        return Ok(None);
    };
    let (request_line, headers) = wire::parse_head(&raw_head)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad request line {request_line:?}"),
        ));
    };

    // RFC 9112 §6.3: chunked wins over Content-Length; neither means no body in a request.
    let body = if wire::is_chunked(&headers) {
        wire.read_chunked()?
    } else if let Some(n) = wire::content_length(&headers)? {
        wire.read_exact_vec(n)?
    } else {
        Vec::new()
    };
    Ok(Some(Recorded {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body,
        raw_head,
    }))
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless `close` is sent; HTTP/1.0 only with `keep-alive`.
fn wants_keep_alive(request: &Recorded) -> bool {
    if wire::has_token(&request.headers, "connection", "close") {
        return false;
    }
    request.version == "HTTP/1.1" || wire::has_token(&request.headers, "connection", "keep-alive")
}

fn connection_header(keep_alive: bool) -> &'static str {
    if keep_alive { "" } else { "connection: close\r\n" }
}

fn echo(stream: &mut TcpStream, port: u16, asked: &Asked) -> std::io::Result<()> {
    let body = format!("provider {port}");
    let connection = connection_header(asked.keep_alive);
    let head = match asked.target.as_str() {
        "/status/204" => {
            format!("HTTP/1.1 204 No Content\r\nx-provider-port: {port}\r\n{connection}\r\n")
        }
        "/status/304" => format!(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: {}\r\n\
             x-provider-port: {port}\r\n{connection}\r\n",
            body.len()
        ),
        _ => {
            let sums = asked
                .body_sum
                .map(|(len, sum)| format!("x-body-len: {len}\r\nx-body-sum: {sum:016x}\r\n"))
                .unwrap_or_default();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 x-provider-port: {port}\r\n{sums}{connection}\r\n",
                body.len()
            )
        }
    };

    // One write for head and body, so a small answer is one segment.
    let mut bytes = head.into_bytes();
    let has_body = !matches!(asked.target.as_str(), "/status/204" | "/status/304");
    if has_body && !asked.is_head() {
        bytes.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&bytes)
}

fn chunked_download(
    stream: &mut TcpStream,
    total_bytes: usize,
    asked: &Asked,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
         transfer-encoding: chunked\r\n{}\r\n",
        connection_header(asked.keep_alive)
    );
    stream.write_all(head.as_bytes())?;
    if asked.is_head() {
        return Ok(());
    }

    // Sizes from a fixed sequence, so chunk boundaries fall at odd, repeatable places.
    let mut sent = 0;
    let mut index: usize = 0;
    while sent < total_bytes {
        let size =
            (1 + index.wrapping_mul(7919) % DOWNLOAD_CHUNK_BYTES_MAX).min(total_bytes - sent);
        let mut chunk = format!("{size:x}\r\n").into_bytes();
        chunk.extend((sent..sent + size).map(pattern_byte));
        chunk.extend_from_slice(b"\r\n");
        stream.write_all(&chunk)?;
        sent += size;
        index += 1;
    }
    stream.write_all(b"0\r\n\r\n")
}
