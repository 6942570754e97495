//! One attempt at a request on one upstream connection: send the request,
//! wait for the provider's verdict on `Expect: 100-continue`, read the
//! response head (passing interim responses on), stream the response back.

use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::buffer::{Inbound, ReadError};
use super::connection::{Conn, RequestInfo};
use super::relay::{self, ChunkedOut, RelayError};
use super::tunnel;
use crate::error::ProxyError;
use crate::http1::encode::{self, ClientFraming};
use crate::http1::head::{HEADERS_MAX, parse_response};
use crate::http1::{BodyLength, Version};
use crate::runtime::worker::Worker;

/// How long croupier waits for a provider's `100 Continue` before sending
/// the body anyway (RFC 9110 §10.1.1 lets a client stop waiting; an HTTP/1.0
/// provider never sends it). One second, as curl waits.
pub const EXPECT_CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// How one attempt went wrong.
pub enum Failure {
    /// Nothing irrevocable happened: the whole request is still in the
    /// client's buffer and nothing reached the client. `reached` says the
    /// provider may have seen the request (it was written, then the
    /// connection died without an answer).
    Unsent { error: ProxyError, reached: bool },
    /// Answer the client with this error; the request cannot be retried.
    Respond(ProxyError),
    /// The client connection is past saving (bytes of a response already
    /// went out, or the client itself broke off): close it.
    Abort,
}

/// The end of a successful exchange.
pub struct Done {
    pub client_keep_alive: bool,
    pub upstream_reusable: bool,
    pub status: u16,
    /// When the final response head was in: the provider's latency, for
    /// balancing, ends here (a long body says nothing about its speed).
    pub head_at: Instant,
    /// Bytes of the response head written to the client.
    pub head_bytes: u64,
}

/// When the request as a whole must be answered, and the limit that set it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: Instant,
    /// `croupier-timeout-ms` from the client, or `response_timeout_ms`.
    pub limit: &'static str,
    pub limit_ms: u64,
    /// Longest silence allowed between two reads of the response.
    pub per_read: Duration,
    /// The client set the deadline; without one, `at` is far enough that
    /// only the per-read timeout binds.
    pub from_client: bool,
}

impl Deadline {
    /// Time left for the next read: the per-read timeout, cut short by the
    /// request's deadline.
    pub fn next_read(&self) -> Duration {
        if !self.from_client {
            return self.per_read;
        }
        self.per_read.min(self.at.saturating_duration_since(Instant::now()))
    }

    pub fn error(&self) -> ProxyError {
        let reason =
            format!("provider did not answer within {} ({} ms)", self.limit, self.limit_ms);
        ProxyError::provider(504, reason).with_limit(self.limit)
    }
}

/// A final response head, already rewritten for the client.
struct FinalHead {
    out: Vec<u8>,
    status: u16,
    body: BodyLength,
    dechunk: bool,
    client_keep_alive: bool,
    upstream_keep_alive: bool,
}

enum HeadEvent {
    /// The provider said `100 Continue` (or kept silent long enough).
    Continue,
    Final(FinalHead),
    /// The provider agreed to the client's upgrade: the `101` head for the
    /// client.
    Switch(Vec<u8>),
}

#[allow(clippy::too_many_arguments, reason = "the attempt's parts are borrowed separately")]
pub async fn exchange(
    conn: &mut Conn,
    worker: &Worker,
    upstream: &mut TcpStream,
    head: &mut Vec<u8>,
    info: RequestInfo,
    response: &mut Inbound,
    replayable: bool,
    deadline: Deadline,
) -> Result<Done, Failure> {
    // A body that is whole in the buffer goes out with the head, in one
    // system call.
    let body_with_head = match info.body {
        BodyLength::Fixed(length) if replayable && length > 0 => Some(length as usize),
        _ => None,
    };
    let (result, written) = match body_with_head {
        Some(len) => {
            let head = std::mem::take(head);
            conn.inbound.write_after_head(upstream, head, info.head_len, len).await
        }
        None => {
            let (result, head) = upstream.write_all(std::mem::take(head)).await;
            (result.map(drop), head)
        }
    };
    *head = written;
    if result.is_err() {
        return Err(unsent("write failed"));
    }
    response.ensure_buffer(&worker.bufs);

    // RFC 9110 §10.1.1: with `Expect: 100-continue` the provider decides
    // whether it wants the body; croupier never sends a refused one.
    let mut early = None;
    let body_pending = info.body != BodyLength::Empty;
    if info.expect_continue && body_pending && conn.inbound.data().len() == info.head_len {
        match read_head(conn, worker, upstream, response, info, deadline, true).await? {
            HeadEvent::Continue => {}
            HeadEvent::Final(head) => early = Some(head),
            HeadEvent::Switch(_) => unreachable!("refused while waiting for 100-continue"),
        }
    }
    let body_withheld = early.is_some() && body_pending;
    if !body_withheld && body_with_head.is_none() {
        send_body(conn, worker, upstream, info, replayable).await?;
    }

    let mut head = match early {
        Some(head) => head,
        None => match read_head(conn, worker, upstream, response, info, deadline, false).await? {
            HeadEvent::Final(head) => head,
            HeadEvent::Switch(out) => {
                // Boxed: upgrades are rare, and inline their state would
                // grow every request's future.
                let switched = switch_protocols(conn, worker, upstream, info, response, out);
                return Box::pin(switched).await;
            }
            HeadEvent::Continue => unreachable!("only asked for when waiting for 100-continue"),
        },
    };
    let head_at = Instant::now();
    if body_withheld {
        // The client may still send the body croupier did not forward;
        // closing is the only way to get out of its way.
        head.client_keep_alive = false;
        head.upstream_keep_alive = false;
    }

    let head_bytes = head.out.len() as u64;
    complete_small_body(upstream, response, &head, deadline).await?;
    // A small response is usually whole in the buffer already: head and
    // body then leave in one system call.
    let whole_body = match head.body {
        BodyLength::Fixed(length) if length > 0 && response.data().len() as u64 >= length => {
            Some(length as usize)
        }
        _ => None,
    };
    let out = std::mem::take(&mut head.out);
    let (result, out) = match whole_body {
        Some(len) => response.write_after_head(&mut conn.client, out, 0, len).await,
        None => {
            let (result, out) = conn.client.write_all(out).await;
            (result.map(drop), out)
        }
    };
    worker.bufs.put(out);
    if result.is_err() {
        return Err(Failure::Abort);
    }
    if replayable {
        conn.inbound.consume(info.head_len + info.body_len_held());
    }
    match whole_body {
        Some(len) => response.consume(len),
        None => relay_response(conn, upstream, response, &head, deadline).await?,
    }
    // Bytes past the end of the response mean the provider's framing and
    // ours disagree: that connection cannot be trusted again.
    let upstream_reusable = head.upstream_keep_alive && response.is_empty();
    Ok(Done {
        client_keep_alive: head.client_keep_alive,
        upstream_reusable,
        status: head.status,
        head_at,
        head_bytes,
    })
}

/// Answers the client's upgrade with the provider's `101` and tunnels the
/// connection until both sides are done; it is never reused.
async fn switch_protocols(
    conn: &mut Conn,
    worker: &Worker,
    upstream: &mut TcpStream,
    info: RequestInfo,
    response: &mut Inbound,
    out: Vec<u8>,
) -> Result<Done, Failure> {
    let head_at = Instant::now();
    let head_bytes = out.len() as u64;
    let (result, out) = conn.client.write_all(out).await;
    worker.bufs.put(out);
    if result.is_err() {
        return Err(Failure::Abort);
    }
    conn.inbound.consume(info.head_len + info.body_len_held());
    if let Err(error) =
        tunnel::run(&mut conn.client, upstream, &mut conn.inbound, response, &worker.bufs).await
    {
        tracing::debug!(%error, "tunnel ended with an error");
    }
    Ok(Done {
        client_keep_alive: false,
        upstream_reusable: false,
        status: 101,
        head_at,
        head_bytes,
    })
}

/// Sends the request body. A replayable one is written from the client's
/// buffer and left there until the exchange is over; any other is consumed
/// as it streams.
async fn send_body(
    conn: &mut Conn,
    worker: &Worker,
    upstream: &mut TcpStream,
    info: RequestInfo,
    replayable: bool,
) -> Result<(), Failure> {
    let timeout = worker.config.header_timeout();
    let relayed = match info.body {
        BodyLength::Empty | BodyLength::UntilClose => return Ok(()),
        BodyLength::Fixed(length) if replayable => {
            let written = conn.inbound.write_range(upstream, info.head_len, length as usize).await;
            return written.map_err(|_| unsent("write failed"));
        }
        BodyLength::Fixed(length) => {
            conn.inbound.consume(info.head_len);
            let (client, inbound) = conn.parts();
            relay::fixed(client, upstream, inbound, length, timeout).await
        }
        BodyLength::Chunked => {
            conn.inbound.consume(info.head_len);
            let (client, inbound) = conn.parts();
            let (out, max) = (ChunkedOut::AsReceived, worker.config.max_body_bytes);
            relay::chunked(client, upstream, inbound, out, max, timeout).await
        }
    };
    match relayed {
        Ok(()) => Ok(()),
        Err(RelayError::Chunk(error)) => {
            Err(Failure::Respond(ProxyError::from_request_chunk(error)))
        }
        Err(RelayError::TooLarge) => {
            // The provider got part of the body; dropping the upstream
            // connection tells it the request is incomplete.
            let max = worker.config.max_body_bytes.unwrap_or_default();
            let reason = format!("request body larger than max_body_bytes ({max})");
            Err(Failure::Respond(ProxyError::client(413, reason).with_limit("max_body_bytes")))
        }
        Err(RelayError::Sink(_)) => Err(Failure::Respond(ProxyError::provider(
            502,
            "provider closed the connection while receiving the body",
        ))),
        // The client broke off its own request.
        Err(_) => Err(Failure::Abort),
    }
}

/// Reads the provider's response head. Interim responses are passed to the
/// client on the way; with `until_continue`, a `100 Continue`, or silence
/// for [`EXPECT_CONTINUE_WAIT`], ends the wait early.
async fn read_head(
    conn: &mut Conn,
    worker: &Worker,
    upstream: &mut TcpStream,
    response: &mut Inbound,
    info: RequestInfo,
    deadline: Deadline,
    until_continue: bool,
) -> Result<HeadEvent, Failure> {
    let capacity_max = worker.limits.header_bytes_max + 1024;
    let mut interim_sent = false;
    // Once anything went to the client, an error can only close it.
    let fail = |interim_sent: bool, error: ProxyError| {
        if interim_sent { Failure::Abort } else { Failure::Respond(error) }
    };
    loop {
        match examine_head(worker, response, info, until_continue) {
            Examined::Incomplete => {}
            Examined::Refused(error) => return Err(fail(interim_sent, error)),
            Examined::Switch(out) => return Ok(HeadEvent::Switch(out)),
            Examined::Final(head) => return Ok(HeadEvent::Final(head)),
            Examined::Interim { out, is_continue } => {
                if let Some(out) = out {
                    let (result, out) = conn.client.write_all(out).await;
                    worker.bufs.put(out);
                    if result.is_err() {
                        return Err(Failure::Abort);
                    }
                    interim_sent = true;
                }
                if until_continue && is_continue {
                    return Ok(HeadEvent::Continue);
                }
                continue;
            }
        }

        if until_continue && response.is_empty() {
            // Wait for the provider's verdict by readiness, not by a read:
            // giving up on a read loses it, and croupier goes on after this
            // wait. Short and rare, so a timer.
            let wait = deadline.next_read().min(EXPECT_CONTINUE_WAIT);
            let ready = monoio::time::timeout(wait, upstream.readable(false));
            match Box::pin(ready).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    let error = ProxyError::provider(502, "provider connection failed");
                    return Err(Failure::Unsent { error, reached: true });
                }
                Err(_) if Instant::now() < deadline.at => return Ok(HeadEvent::Continue),
                Err(_) => return Err(fail(interim_sent, deadline.error())),
            }
        }
        let read = response.read_more(upstream, capacity_max, deadline.next_read()).await;
        match read {
            Ok(0) | Err(ReadError::Io(_)) if response.is_empty() && !interim_sent => {
                let error =
                    ProxyError::provider(502, "provider closed the connection without a response");
                return Err(Failure::Unsent { error, reached: true });
            }
            Ok(0) | Err(ReadError::Io(_)) => {
                let error = ProxyError::provider(502, "provider response cut short");
                return Err(fail(interim_sent, error));
            }
            Err(ReadError::TimedOut) => return Err(fail(interim_sent, deadline.error())),
            Ok(_) => {}
        }
    }
}

/// What the bytes read so far of a response make of its head.
enum Examined {
    Incomplete,
    Refused(ProxyError),
    Switch(Vec<u8>),
    /// An interim response, with the head to pass to the client if any.
    Interim {
        out: Option<Vec<u8>>,
        is_continue: bool,
    },
    Final(FinalHead),
}

/// Parses the response head in `response` and writes what the client gets
/// of it. A function of its own, not part of [`read_head`]: its header
/// array (3 KiB) then lives on the stack for the parse only, not in the
/// request's future across every await.
fn examine_head(
    worker: &Worker,
    response: &mut Inbound,
    info: RequestInfo,
    until_continue: bool,
) -> Examined {
    if response.is_empty() {
        return Examined::Incomplete;
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let head = match parse_response(response.data(), &mut headers, info.is_head, &worker.limits) {
        Ok(None) => return Examined::Incomplete,
        Ok(Some(head)) => head,
        Err(error) => return Examined::Refused(ProxyError::from_response_head(error)),
    };
    if head.status == 101 {
        if !info.upgrade || until_continue {
            // Switching protocols unasked leaves nothing croupier could
            // relay.
            let reason = "provider switched protocols the client did not ask for";
            return Examined::Refused(ProxyError::provider(502, reason));
        }
        let mut out = worker.bufs.take_head();
        encode::switching_head(&head, &mut out);
        response.consume(head.len);
        return Examined::Switch(out);
    }
    if (100..200).contains(&head.status) {
        // RFC 9110 §15.2: interim responses go to HTTP/1.1 clients only.
        let out = (info.version == Version::Http11).then(|| {
            let mut out = worker.bufs.take_head();
            encode::interim_head(&head, &mut out);
            out
        });
        let is_continue = head.status == 100;
        response.consume(head.len);
        return Examined::Interim { out, is_continue };
    }
    let dechunk = head.body == BodyLength::Chunked && info.version == Version::Http10;
    // A final answer while croupier waits for `100 Continue` means the body
    // stays unsent; the client may still send it, so the connection closes
    // after this response, and the head must say so.
    let client_keep_alive =
        info.keep_alive && head.body != BodyLength::UntilClose && !dechunk && !until_continue;
    let framing = if dechunk { ClientFraming::UntilClose } else { ClientFraming::AsReceived };
    let mut out = worker.bufs.take_head();
    encode::response_head(&head, framing, info.version, client_keep_alive, &mut out);
    let final_head = FinalHead {
        out,
        status: head.status,
        body: head.body,
        dechunk,
        client_keep_alive,
        upstream_keep_alive: head.keep_alive,
    };
    response.consume(head.len);
    Examined::Final(final_head)
}

/// Reads the rest of a small body that is only partly in the buffer, so that
/// head and body leave in one write and the client wakes once instead of
/// twice. Providers that write the head and the body separately (nginx with
/// sendfile, for one) make this the common case for small files. A body
/// that would not fit in the buffer as it is streams as usual.
async fn complete_small_body(
    upstream: &mut TcpStream,
    response: &mut Inbound,
    head: &FinalHead,
    deadline: Deadline,
) -> Result<(), Failure> {
    let BodyLength::Fixed(length) = head.body else { return Ok(()) };
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    let missing = length.saturating_sub(response.data().len());
    if missing == 0 || missing > response.spare() {
        return Ok(());
    }
    while response.data().len() < length {
        // The whole body fits in the spare room: no read moves or grows
        // the buffer.
        let capacity = response.capacity();
        match response.read_more(upstream, capacity, deadline.next_read()).await {
            Ok(0) | Err(ReadError::Io(_)) => {
                let error = ProxyError::provider(502, "provider response cut short");
                return Err(Failure::Respond(error));
            }
            Ok(_) => {}
            Err(ReadError::TimedOut) => return Err(Failure::Respond(deadline.error())),
        }
    }
    Ok(())
}

/// Streams the response body to the client.
async fn relay_response(
    conn: &mut Conn,
    upstream: &mut TcpStream,
    response: &mut Inbound,
    head: &FinalHead,
    deadline: Deadline,
) -> Result<(), Failure> {
    // TODO: apply the request deadline to the body too; for now each read
    // of the body has the per-read timeout only.
    let timeout = deadline.per_read;
    let client = &mut conn.client;
    let relayed = match head.body {
        BodyLength::Empty => Ok(()),
        BodyLength::Fixed(length) => {
            relay::fixed(upstream, client, response, length, timeout).await
        }
        BodyLength::Chunked => {
            let out = if head.dechunk { ChunkedOut::Decoded } else { ChunkedOut::AsReceived };
            relay::chunked(upstream, client, response, out, None, timeout).await
        }
        BodyLength::UntilClose => relay::until_close(upstream, client, response, timeout).await,
    };
    relayed.map_err(|error| {
        tracing::debug!(?error, "response body relay failed");
        Failure::Abort
    })
}

fn unsent(reason: &str) -> Failure {
    Failure::Unsent {
        error: ProxyError::provider(502, format!("provider connection failed: {reason}")),
        reached: false,
    }
}
