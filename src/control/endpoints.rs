//! The HTTP side of the control plane: `/_croupier/...` on every core.
//!
//! These handlers run on the core that accepted the connection. Reads are
//! answered from the sequencer's registry; changes go to the sequencer and
//! are answered once every core has applied them.

use monoio::io::AsyncWriteRentExt;

use super::announce::{parse_announce, parse_leave};
use super::{ControlMsg, Reply};
use crate::error::ProxyError;
use crate::http1::BodyLength;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::encode;
use crate::http1::head::RequestHead;
use crate::proxy::buffer::ReadError;
use crate::proxy::connection::{Conn, Next, RequestInfo, respond_error};
use crate::runtime::worker::Worker;

/// Largest control request body, in bytes. An announce is under 200 bytes;
/// the bound keeps a client from making croupier buffer a large upload.
pub const CONTROL_BODY_BYTES_MAX: usize = 64 * 1024;

/// The live dashboard, one self-contained page.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// A request for one of croupier's own paths.
pub struct ControlRequest {
    info: RequestInfo,
    method: String,
    /// The path, without query.
    path: String,
    authorization: Option<Vec<u8>>,
}

impl ControlRequest {
    pub fn of(head: &RequestHead<'_, '_>, info: RequestInfo) -> Self {
        let target = match head.target.find("://") {
            Some(at) => head.target[at + 3..].find('/').map_or("/", |s| &head.target[at + 3 + s..]),
            None => head.target,
        };
        let path = target.split('?').next().unwrap_or(target).trim_end_matches('/');
        let authorization = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value.to_vec());
        ControlRequest {
            info,
            method: head.method.to_string(),
            path: path.to_string(),
            authorization,
        }
    }
}

pub async fn handle(conn: &mut Conn, worker: &Worker, request: ControlRequest) -> Next {
    let info = request.info;
    conn.inbound.consume(info.head_len);
    let body = match read_body(conn, worker, info.body).await {
        Ok(body) => body,
        Err(Some(error)) => return respond_error(conn, worker, &error, false).await,
        Err(None) => return Next::Close,
    };

    let reply = route(conn, worker, &request, &body).await;
    let keep = info.keep_alive;
    let mut out = worker.bufs.take_head();
    let allow: &[(&str, &str)] = match reply.status {
        405 if is_mutation(&request.path) => &[("allow", "POST")],
        405 => &[("allow", "GET, HEAD")],
        401 => &[("www-authenticate", "Bearer")],
        _ => &[],
    };
    let content_type = match (reply.status, request.path.as_str()) {
        (200, "/_croupier") => "text/html; charset=utf-8",
        (200, "/_croupier/metrics") => "text/plain; version=0.0.4; charset=utf-8",
        _ => "application/json",
    };
    encode::local_response(
        reply.status,
        allow,
        content_type,
        reply.body.as_bytes(),
        keep,
        &mut out,
    );
    if info.is_head {
        out.truncate(out.len() - reply.body.len());
    }
    worker.count_status(reply.status);
    let (result, out) = conn.client.write_all(out).await;
    worker.bufs.put(out);
    if result.is_ok() && keep { Next::KeepAlive } else { Next::Close }
}

async fn route(conn: &Conn, worker: &Worker, request: &ControlRequest, body: &[u8]) -> Reply {
    let method = request.method.as_str();
    match request.path.as_str() {
        "/_croupier/announce" | "/_croupier/leave" if method != "POST" => {
            Reply::error(405, "use POST", None)
        }
        "/_croupier/announce" | "/_croupier/leave" => {
            if let Some(reply) = check_token(worker, request) {
                return reply;
            }
            let (reply_tx, reply_rx) = flume::bounded(1);
            let message = if request.path.ends_with("announce") {
                match parse_announce(body, conn.peer) {
                    Ok(announce) => ControlMsg::Announce { announce, reply: reply_tx },
                    Err(reply) => return reply,
                }
            } else {
                match parse_leave(body, conn.peer) {
                    Ok(leave) => ControlMsg::Leave {
                        topic: leave.topic,
                        host: leave.host,
                        port: leave.port,
                        drain: leave.drain,
                        reply: reply_tx,
                    },
                    Err(reply) => return reply,
                }
            };
            ask(worker, message, reply_rx).await
        }
        "/_croupier/providers" | "/_croupier/health" | "/_croupier/metrics" | "/_croupier"
            if !matches!(method, "GET" | "HEAD") =>
        {
            Reply::error(405, "use GET", None)
        }
        "/_croupier/providers" => {
            let (reply_tx, reply_rx) = flume::bounded(1);
            ask(worker, ControlMsg::Providers { reply: reply_tx }, reply_rx).await
        }
        "/_croupier/health" => Reply::json(200, &serde_json::json!({ "result": "ok" })),
        "/_croupier/metrics" => {
            let (reply_tx, reply_rx) = flume::bounded(1);
            ask(worker, ControlMsg::Scrape { reply: reply_tx }, reply_rx).await
        }
        // The dashboard; the path has lost its trailing slash above.
        "/_croupier" => Reply { status: 200, body: DASHBOARD_HTML.to_string() },
        _ => Reply::error(404, "no such croupier endpoint", None),
    }
}

async fn ask(worker: &Worker, message: ControlMsg, reply: flume::Receiver<Reply>) -> Reply {
    if worker.control.send(message).is_err() {
        return Reply::error(500, "control plane stopped", None);
    }
    match reply.recv_async().await {
        Ok(reply) => reply,
        Err(_) => Reply::error(500, "control plane stopped", None),
    }
}

fn is_mutation(path: &str) -> bool {
    matches!(path, "/_croupier/announce" | "/_croupier/leave")
}

/// `--token`: announce and leave need `Authorization: Bearer <token>`.
fn check_token(worker: &Worker, request: &ControlRequest) -> Option<Reply> {
    let token = worker.config.token.as_deref()?;
    let presented = request.authorization.as_deref().and_then(|v| v.strip_prefix(b"Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented, token.as_bytes()) => None,
        _ => Some(Reply::error(401, "announce and leave need Authorization: Bearer <token>", None)),
    }
}

/// Compares without an early exit, so the time taken does not tell an
/// attacker how much of a guess was right. (The length still shows.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a control request's whole body (it is small and parsed as JSON).
/// `Err(None)` means the client went away.
async fn read_body(
    conn: &mut Conn,
    worker: &Worker,
    body: BodyLength,
) -> Result<Vec<u8>, Option<ProxyError>> {
    let too_large = || {
        let reason = format!("control request body larger than {CONTROL_BODY_BYTES_MAX} bytes");
        Some(ProxyError::client(413, reason))
    };
    let mut collected = Vec::new();
    let mut decoder = ChunkedDecoder::new();
    let mut left = match body {
        BodyLength::Empty | BodyLength::UntilClose => return Ok(collected),
        BodyLength::Fixed(length) if length > CONTROL_BODY_BYTES_MAX as u64 => {
            return Err(too_large());
        }
        BodyLength::Fixed(length) => length as usize,
        BodyLength::Chunked => usize::MAX,
    };
    let timeout = worker.config.header_timeout();
    loop {
        if body == BodyLength::Chunked {
            while !conn.inbound.is_empty() {
                let step = decoder
                    .decode(conn.inbound.data())
                    .map_err(|e| Some(ProxyError::from_request_chunk(e)))?;
                let data = &conn.inbound.data()[step.framing..step.consumed()];
                collected.extend_from_slice(data);
                conn.inbound.consume(step.consumed());
                if collected.len() > CONTROL_BODY_BYTES_MAX {
                    return Err(too_large());
                }
                if step.done {
                    return Ok(collected);
                }
            }
        } else {
            let take = left.min(conn.inbound.data().len());
            collected.extend_from_slice(&conn.inbound.data()[..take]);
            conn.inbound.consume(take);
            left -= take;
            if left == 0 {
                return Ok(collected);
            }
        }
        let (client, inbound) = conn.parts();
        match inbound.read_more(client, crate::proxy::buffer::BUF_BYTES, timeout).await {
            Ok(0) | Err(ReadError::Io(_)) => return Err(None),
            Ok(_) => {}
            Err(ReadError::TimedOut) => {
                return Err(Some(ProxyError::client(408, "control request body timed out")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
