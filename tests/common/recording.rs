//! A provider that records the exact bytes croupier sends it, connection by connection.
//!
//! [`super::Provider`] parses what it gets and keeps the head of each complete request; the
//! conformance tests need more: every byte that reached the provider, including a head or a
//! half-sent chunked body that never became a complete request, and which upstream
//! connection carried what (to tell a reused connection from a fresh one). This provider does
//! no strict parsing of its own. It appends every read to its connection's record, and only
//! to know when to answer it looks for complete requests (head, then a `Content-Length` or
//! chunked body) in what has not been answered yet.
//!
//! Each complete request gets the next [`Answer`] of the list it was started with (the last
//! one repeats), so a test can make the second request of a run get a broken response.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::wire;

/// How long a connection's reader blocks before it looks at the stop flag again.
const READ_TICK_MS: u64 = 100;

/// How long a silent connection is kept before the provider gives up on it; longer than any
/// test, so it only ends a connection croupier forgot.
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How long a write of an answer may block.
const WRITE_TIMEOUT_MS: u64 = 10_000;

/// How much one `read` call asks the kernel for.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Connections one provider records; more are closed on accept, so a leak shows as a failure
/// rather than as threads without end.
pub const CONNECTIONS_MAX: usize = 256;

/// What the provider sends back for one complete request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200 OK` with `Content-Length` and the request target as the body, so a test can tell
    /// which request an answer belongs to.
    Target,
    /// These bytes, exactly (a broken response, typically).
    Raw(Vec<u8>),
}

/// One complete request as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Index of the upstream connection that carried it, in order of accept.
    pub connection: usize,
    /// The request target from its request line.
    pub target: String,
    /// The bytes of the request, head and body, exactly as received.
    pub raw: Vec<u8>,
}

/// Everything one upstream connection carried.
#[derive(Clone, Debug, Default)]
pub struct ConnectionRecord {
    /// Every byte received, in order.
    pub raw: Vec<u8>,
    /// Bytes of `raw` that belong to requests already answered.
    pub answered_bytes: usize,
    /// croupier closed its side (the provider read end of file, or a reset).
    pub closed_by_peer: bool,
}

#[derive(Default)]
struct State {
    connections: Vec<ConnectionRecord>,
    requests: Vec<RecordedRequest>,
    /// Second handles on the live sockets, so `Drop` can cut them.
    live: Vec<(usize, TcpStream)>,
    readers: Vec<JoinHandle<()>>,
}

struct Shared {
    port: u16,
    answers: Vec<Answer>,
    state: Mutex<State>,
    stopping: AtomicBool,
}

pub struct RecordingProvider {
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl RecordingProvider {
    /// A provider that answers every request with [`Answer::Target`].
    pub fn start() -> RecordingProvider {
        RecordingProvider::with_answers(vec![Answer::Target])
    }

    /// A provider whose n-th complete request (counted over all connections) gets
    /// `answers[n]`, the last answer repeating.
    pub fn with_answers(answers: Vec<Answer>) -> RecordingProvider {
        assert!(!answers.is_empty(), "a provider needs at least one answer");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a provider port");
        let port = listener.local_addr().expect("provider address").port();
        let shared = Arc::new(Shared {
            port,
            answers,
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("recording-{port}"))
            .spawn(move || accept_loop(listener, for_thread))
            .expect("spawn the recording provider's accept thread");
        RecordingProvider { shared, accept_thread: Some(accept_thread) }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Every complete request so far, in order of completion.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// What each upstream connection carried, in order of accept.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.shared.state.lock().unwrap().connections.clone()
    }

    /// How many connections croupier opened to this provider.
    pub fn accepted(&self) -> usize {
        self.shared.state.lock().unwrap().connections.len()
    }

    /// Bytes received over all connections.
    pub fn total_bytes(&self) -> usize {
        let state = self.shared.state.lock().unwrap();
        state.connections.iter().map(|c| c.raw.len()).sum()
    }

    /// Waits up to `timeout` for connection `index` to be closed by croupier.
    pub fn wait_closed_by_peer(&self, index: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let closed = self
                .shared
                .state
                .lock()
                .unwrap()
                .connections
                .get(index)
                .is_some_and(|c| c.closed_by_peer);
            if closed || Instant::now() >= deadline {
                return closed;
            }
            thread::sleep(Duration::from_millis(super::POLL_INTERVAL_MS));
        }
    }
}

impl Drop for RecordingProvider {
    fn drop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        // The accept thread blocks in accept; a connect of our own wakes it to see the flag.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.shared.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        let _ = accept_thread.join();

        let readers = {
            let mut state = self.shared.state.lock().unwrap();
            for (_, stream) in state.live.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut state.readers)
        };
        // Each reader sees the shutdown (or the flag, within a tick) and returns.
        for reader in readers {
            let _ = reader.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };

        let mut state = shared.state.lock().unwrap();
        if state.connections.len() >= CONNECTIONS_MAX {
            continue;
        }
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let index = state.connections.len();
        state.connections.push(ConnectionRecord::default());
        state.live.push((index, handle));
        let for_thread = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("recording-{}-conn-{index}", shared.port))
            .spawn(move || record(stream, index, &for_thread));
        match spawned {
            Ok(reader) => state.readers.push(reader),
            Err(_) => state.live.retain(|(i, _)| *i != index),
        }
    }
    // Returning drops the listener: from here on connects are refused.
}

/// Reads connection `index` until croupier closes it, recording every byte and answering
/// each request once it is complete.
fn record(mut stream: TcpStream, index: usize, shared: &Shared) {
    let setup = stream
        .set_read_timeout(Some(Duration::from_millis(READ_TICK_MS)))
        .and_then(|_| stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS))))
        .and_then(|_| stream.set_nodelay(true));
    if setup.is_err() {
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut last_byte_at = Instant::now();
    while !shared.stopping.load(Ordering::SeqCst)
        && last_byte_at.elapsed() < Duration::from_millis(IDLE_TIMEOUT_MS)
    {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => 0,
        };
        if n == 0 {
            shared.state.lock().unwrap().connections[index].closed_by_peer = true;
            break;
        }
        last_byte_at = Instant::now();

        // Recorded before answering, so a test that has its response also sees the record.
        let answers = take_complete_requests(shared, index, &buf[..n]);
        for answer in answers {
            if stream.write_all(&answer).is_err() {
                break;
            }
        }
    }
    shared.state.lock().unwrap().live.retain(|(i, _)| *i != index);
}

/// Appends `bytes` to connection `index` and returns the answers to every request that is
/// now complete.
fn take_complete_requests(shared: &Shared, index: usize, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut state = shared.state.lock().unwrap();
    let mut answers = Vec::new();
    state.connections[index].raw.extend_from_slice(bytes);
    loop {
        let connection = &state.connections[index];
        let pending = &connection.raw[connection.answered_bytes..];
        let Some(len) = complete_request_len(pending) else {
            break;
        };
        let raw = pending[..len].to_vec();
        state.connections[index].answered_bytes += len;

        let target = request_target(&raw);
        let nth = state.requests.len().min(shared.answers.len() - 1);
        answers.push(match &shared.answers[nth] {
            Answer::Target => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{target}",
                target.len()
            )
            .into_bytes(),
            Answer::Raw(bytes) => bytes.clone(),
        });
        state.requests.push(RecordedRequest { connection: index, target, raw });
    }
    answers
}

/// The second word of the request line.
fn request_target(raw: &[u8]) -> String {
    let line_end = wire::find(raw, b"\r\n").unwrap_or(raw.len());
    let line = wire::lossy(&raw[..line_end]);
    line.split(' ').nth(1).unwrap_or_default().to_string()
}

/// The length of the complete request at the start of `pending`, if it is all there. A head
/// that does not parse never completes: its bytes stay recorded, unanswered.
fn complete_request_len(pending: &[u8]) -> Option<usize> {
    let head_len = wire::find(pending, b"\r\n\r\n")? + 4;
    let (_, headers) = wire::parse_head(&pending[..head_len]).ok()?;
    let body_len = if wire::is_chunked(&headers) {
        chunked_body_len(&pending[head_len..])?
    } else {
        wire::content_length(&headers).ok()?.unwrap_or(0)
    };
    (pending.len() >= head_len + body_len).then_some(head_len + body_len)
}

/// The length of the chunked body (RFC 9112 §7.1) at the start of `body`, up to and including
/// the empty line after the trailers, if it is all there.
fn chunked_body_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + wire::find(&body[at..], b"\r\n")?;
        let size_text = body[at..line_end].split(|&b| b == b';').next()?;
        let size_text = std::str::from_utf8(size_text).ok()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer lines, then the empty line that ends the body.
            loop {
                let end = at + wire::find(&body[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        let data_end = at.checked_add(size)?;
        if body.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        at = data_end + 2;
    }
}
