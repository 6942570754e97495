//! One client connection: read a head, decide what it is, answer it, repeat.
//!
//! An idle connection holds no buffer: it waits for readiness first and takes
//! a buffer from the core's pool only once bytes are there, so thousands of
//! idle keep-alive clients cost little memory.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::buffer::{Inbound, ReadError};
use super::forward::{self, ForwardRequest};
use crate::control::endpoints::{self, ControlRequest};
use crate::error::{ProxyError, Side};
use crate::http1::encode::{self, ForwardHeaders};
use crate::http1::head::{HEADERS_MAX, RequestHead, parse_request};
use crate::http1::{BodyLength, Version};
use crate::metrics::access_log::Entry;
use crate::runtime::drain::{COARSE_MIN, unless};
use crate::runtime::worker::Worker;

/// Paths under this prefix are croupier's own and never forwarded.
pub const CONTROL_PREFIX: &str = "/_croupier";

/// What to do with the connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// A client connection's state that outlives one request.
pub struct Conn {
    pub client: TcpStream,
    pub peer: SocketAddr,
    pub inbound: Inbound,
}

impl Conn {
    pub fn new(client: TcpStream, peer: SocketAddr) -> Self {
        Conn { client, peer, inbound: Inbound::default() }
    }

    /// Disjoint borrows for relaying the client's body.
    pub fn parts(&mut self) -> (&mut TcpStream, &mut Inbound) {
        (&mut self.client, &mut self.inbound)
    }
}

/// What the rest of the request path needs of a parsed head, once the
/// borrow of the read buffer ends.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo {
    pub head_len: usize,
    pub body: BodyLength,
    pub version: Version,
    pub keep_alive: bool,
    pub is_head: bool,
    pub idempotent: bool,
    pub expect_continue: bool,
    /// `croupier-timeout-ms`: the client's deadline for the whole request.
    pub timeout_ms: Option<u64>,
    /// The client asked to upgrade the connection (WebSocket, say).
    pub upgrade: bool,
}

impl RequestInfo {
    fn of(head: &RequestHead<'_, '_>) -> Self {
        RequestInfo {
            head_len: head.len,
            body: head.body,
            version: head.version,
            keep_alive: head.keep_alive,
            is_head: head.is_head(),
            idempotent: head.is_idempotent(),
            expect_continue: head.expect_continue,
            timeout_ms: head.timeout_ms,
            upgrade: head.upgrade.is_some(),
        }
    }

    /// Body bytes that sit in the buffer behind the head, for a request
    /// whose body was read whole.
    pub fn body_len_held(&self) -> usize {
        match self.body {
            BodyLength::Fixed(length) => length as usize,
            _ => 0,
        }
    }
}

/// The parts of a refused request its access log line shows.
struct Logged {
    topic: Box<str>,
    method: Box<str>,
    target: Box<str>,
}

/// What a complete head asks for.
enum Dispatch {
    /// Refused: answer and close, the connection cannot be trusted further.
    Reject(ProxyError),
    /// Answered by croupier with an error, the connection possibly kept.
    Refuse(RequestInfo, ProxyError, Option<Logged>),
    Control(ControlRequest),
    Forward(ForwardRequest),
}

/// Serves a client connection until it closes.
///
/// This future is what an idle connection costs, so it is kept small: the
/// request's state lives in a box that exists only while a request does,
/// and the body is an `async move` block over the arguments rather than an
/// `async fn`, which would hold `conn` twice (as the argument and as the
/// local it moves into).
// The manual form is the point: see above.
#[allow(clippy::manual_async_fn)]
pub fn serve(mut conn: Conn, worker: Rc<Worker>) -> impl Future<Output = ()> {
    async move {
        serve_connection(&mut conn, &worker).await;
        conn.inbound.release_or_drop(&worker.bufs);
        // Closed before it is counted as closed, so a drain that waits for
        // the count waits for the socket too.
        drop(conn);
        worker.connection_closed();
    }
}

async fn serve_connection(conn: &mut Conn, worker: &Rc<Worker>) {
    let _ = conn.client.set_nodelay(true);
    // A client that stops reading a response would otherwise hold this
    // task, and the provider connection behind it, for ever.
    let _ = crate::upstream::set_send_timeout(&conn.client, worker.config.send_timeout());
    loop {
        if conn.inbound.is_empty() {
            // Idle: give the buffer back and wait for bytes without one.
            conn.inbound.release(&worker.bufs);
            // The sweep's clock is up to a second behind, which only a long
            // timeout can ignore.
            let idle = worker.config.idle_timeout();
            let from = if idle >= COARSE_MIN { worker.drain.coarse_now() } else { Instant::now() };
            let deadline = from + idle;
            match unless(worker.drain.until(deadline), conn.client.readable(false)).await {
                Ok(Ok(())) => {}
                // Gone, idle past the timeout, or the core is draining.
                _ => break,
            }
        }
        conn.inbound.ensure_buffer(&worker.bufs);
        // Boxed: the request's state machine (forwarding, retries, relays)
        // is several KiB, and an idle connection should not carry it.
        let next = Box::pin(serve_request(conn, worker)).await;
        if next == Next::Close || worker.drain.is_raised() {
            break;
        }
    }
}

async fn serve_request(conn: &mut Conn, worker: &Worker) -> Next {
    let header_timeout = worker.config.header_timeout();
    // Set at the first read: most heads arrive whole in one, and then no
    // clock is read for them at all.
    let mut deadline: Option<Instant> = None;
    let capacity_max = worker.limits.header_bytes_max + 1024;
    let dispatch = loop {
        if !conn.inbound.is_empty()
            && let Some(dispatch) = plan(conn, worker)
        {
            break dispatch;
        }
        let left = match deadline {
            None => {
                deadline = Some(Instant::now() + header_timeout);
                header_timeout
            }
            Some(at) => at.saturating_duration_since(Instant::now()),
        };
        let (client, inbound) = conn.parts();
        match inbound.read_more(client, capacity_max, left).await {
            Ok(0) | Err(ReadError::Io(_)) => return Next::Close,
            Ok(_) => {}
            Err(ReadError::TimedOut) => {
                let reason = format!(
                    "request head not received within header_timeout_ms ({})",
                    worker.config.header_timeout_ms
                );
                let error = ProxyError::client(408, reason).with_limit("header_timeout_ms");
                return respond_error(conn, worker, &error, false).await;
            }
        }
    };

    match dispatch {
        Dispatch::Reject(error) => respond_error(conn, worker, &error, false).await,
        Dispatch::Refuse(info, error, logged) => {
            if let (Some(log), Some(logged)) = (&worker.access_log, &logged) {
                log.write(&Entry {
                    client: conn.peer,
                    topic: &logged.topic,
                    provider: None,
                    method: &logged.method,
                    target: &logged.target,
                    status: error.status,
                    received_bytes: info.head_len as u64,
                    sent_bytes: 0,
                    duration: Duration::ZERO,
                    retries: 0,
                });
            }
            // Without a body the request is whole and the connection can go
            // on; with one, croupier would have to read and drop it first.
            let keep = info.keep_alive && info.body == BodyLength::Empty;
            if keep {
                conn.inbound.consume(info.head_len);
            }
            respond_error(conn, worker, &error, keep).await
        }
        Dispatch::Control(request) => endpoints::handle(conn, worker, request).await,
        Dispatch::Forward(request) => forward::forward(conn, worker, request).await,
    }
}

/// Parses the head in the buffer and decides what it asks for; `None` while
/// the head is incomplete.
fn plan(conn: &mut Conn, worker: &Worker) -> Option<Dispatch> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let head = match parse_request(conn.inbound.data(), &mut headers, &worker.limits) {
        Ok(None) => return None,
        Ok(Some(head)) => head,
        Err(error) => return Some(Dispatch::Reject(ProxyError::from_request_head(error))),
    };
    let mut info = RequestInfo::of(&head);
    // A draining core answers what it has and then closes, saying so.
    info.keep_alive &= !worker.drain.is_raised();

    if is_control_path(head.target) {
        return Some(Dispatch::Control(ControlRequest::of(&head, info)));
    }

    // What a refusal's access log line needs, kept only when there is a log.
    let logged = || {
        worker.access_log.as_ref().map(|_| Logged {
            topic: String::from_utf8_lossy(head.topic.unwrap_or_default()).into(),
            method: head.method.into(),
            target: head.target.into(),
        })
    };
    let Some(topic) = head.topic else {
        let error = ProxyError::client(400, "missing croupier-topic header");
        return Some(Dispatch::Refuse(info, error, logged()));
    };
    if let (Some(max), BodyLength::Fixed(length)) = (worker.config.max_body_bytes, head.body)
        && length > max
    {
        let reason = format!("request body larger than max_body_bytes ({max})");
        let error = ProxyError::client(413, reason).with_limit("max_body_bytes");
        return Some(Dispatch::Reject(error));
    }
    let Some(topic) = worker.table.borrow().topic_name(topic) else {
        let shown = String::from_utf8_lossy(&topic[..topic.len().min(255)]).into_owned();
        let error = ProxyError::croupier(503, format!("no live provider for topic {shown}"));
        return Some(Dispatch::Refuse(info, error, logged()));
    };

    let mut out = worker.bufs.take_head();
    let forward =
        ForwardHeaders { enabled: !worker.config.no_forwarded_headers, client_ip: conn.peer.ip() };
    encode::request_head(&head, &forward, &mut out);
    let logged = worker.access_log.as_ref().map(|_| (head.method.into(), head.target.into()));
    Some(Dispatch::Forward(ForwardRequest { info, topic, head: out, logged }))
}

/// Whether a request target names one of croupier's own paths, in origin
/// form or absolute form.
fn is_control_path(target: &str) -> bool {
    let path = match target.find("://") {
        Some(scheme_end) => {
            let rest = &target[scheme_end + 3..];
            rest.find('/').map_or("", |slash| &rest[slash..])
        }
        None => target,
    };
    path == CONTROL_PREFIX
        || path.strip_prefix(CONTROL_PREFIX).is_some_and(|rest| rest.starts_with(['/', '?']))
}

/// Answers the client with a croupier error.
pub async fn respond_error(
    conn: &mut Conn,
    worker: &Worker,
    error: &ProxyError,
    keep: bool,
) -> Next {
    worker.count_status(error.status);
    if error.side == Side::Client {
        worker.metrics.rejected(error.limit.unwrap_or("invalid_request"));
    }
    write_error(conn, worker, error, keep).await
}

/// Answers the client with a croupier error that is counted elsewhere (a
/// forwarded request's outcome is counted under its topic).
pub async fn write_error(conn: &mut Conn, worker: &Worker, error: &ProxyError, keep: bool) -> Next {
    // Log policy: a request that failed for good because of a provider is
    // an error, once; a client's mistake or croupier's own refusal (no
    // provider, overload) is the client's to see, at debug.
    if error.side == Side::Provider {
        tracing::error!(peer = %conn.peer, status = error.status, reason = %error.reason,
            "request failed");
    } else {
        tracing::debug!(peer = %conn.peer, status = error.status, side = ?error.side,
            reason = %error.reason, "request refused");
    }
    let retry_after = error.retry_after_s.map(|s| s.to_string());
    let extra: &[(&str, &str)] = match &retry_after {
        Some(seconds) => &[("retry-after", seconds.as_str())],
        None => &[],
    };
    respond(conn, worker, error.status, extra, error.body().as_bytes(), keep).await
}

/// Writes a complete local response.
pub async fn respond(
    conn: &mut Conn,
    worker: &Worker,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep: bool,
) -> Next {
    let mut out = worker.bufs.take_head();
    encode::local_response(status, extra_headers, "application/json", body, keep, &mut out);
    let (result, out) = conn.client.write_all(out).await;
    worker.bufs.put(out);
    match (result, keep) {
        (Ok(_), true) => Next::KeepAlive,
        _ => Next::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::is_control_path;

    #[test]
    fn control_paths() {
        for path in ["/_croupier", "/_croupier/announce", "/_croupier?x", "http://h/_croupier/x"] {
            assert!(is_control_path(path), "{path}");
        }
        for path in ["/", "/_croupierx", "/api/_croupier/", "http://h/x"] {
            assert!(!is_control_path(path), "{path}");
        }
    }
}
