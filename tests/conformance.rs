//! Conformance of croupier's strict HTTP/1.1 handling: raw bytes to the real binary, with a
//! provider behind it that records every byte it receives.
//!
//! A request croupier refuses must get the refusal's status with a JSON error body, the
//! connection closed after it, and not one byte at the provider. A request croupier accepts
//! must reach the provider exactly once, in the canonical form croupier writes (see
//! `src/http1/encode.rs`): the request line, the end-to-end headers in received order with
//! their names as sent and white space trimmed, croupier's own framing header, the
//! forwarding headers unless `--no-forwarded-headers`, the empty line, and the body.
//!
//! Most cases run croupier with `--no-forwarded-headers`, so the expected bytes are the ones
//! sent minus what croupier must drop; one test checks the forwarding headers.
//!
//! Each case is a function taking the driver name; `on_both_drivers!` turns it into
//! `<case>::io_uring` and `<case>::legacy`, as in `tests/core.rs`.

#[macro_use]
mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::recording::{Answer, RecordingProvider};
use common::{Conn, Croupier, Response, providers_of, request, try_request};
use serde_json::{Value, json};

on_both_drivers!(
    content_length_rules,
    transfer_encoding_rules,
    chunked_body_forwarded_as_received,
    chunked_framing_errors,
    head_syntax_errors,
    host_rules,
    bodies_without_length_headers,
    head_size_limits,
    max_body_bytes_with_length,
    max_body_bytes_chunked,
    pipelined_requests_answered_in_order,
    provider_responses_are_checked,
    hop_by_hop_headers_dropped,
    forwarding_headers_appended,
    control_plane_token,
    control_plane_refusals,
    header_timeout_gets_408,
    slowloris_does_not_starve_clients,
    max_connections_refuses_extra,
);

/// The topic every test routes to.
const TOPIC: &str = "conformance";

/// A lease longer than any test.
const LEASE_S: u64 = 60;

/// How long to wait for bytes croupier might still be sending to the provider before
/// counting them. croupier forwards before it answers, so by the time the client has the
/// answer only the provider's reader thread can lag behind; this covers it.
const SETTLE_MS: u64 = 100;

/// The pause between the valid and the bad part of a bad chunked body, so the valid part
/// can travel on to the provider first.
const CHUNK_PAUSE_MS: u64 = 30;

/// The last chunk and the empty line that end a chunked body: a provider that saw these after
/// a refused chunked request saw a complete request.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// croupier's default request line limit, in bytes (414 past it).
const REQUEST_LINE_BYTES_MAX: usize = 8 * 1024;

/// croupier's default head limit, in bytes (431 past it).
const HEADER_BYTES_MAX: usize = 32 * 1024;

/// croupier's header line limit (431 past it).
const HEADERS_MAX: usize = 100;

/// `--max-body-bytes` of the body-limit tests.
const MAX_BODY_BYTES: usize = 1_000;

/// `--header-timeout-ms` of the 408 test, and how long its answer may take at most.
const SHORT_HEADER_TIMEOUT_MS: u64 = 500;
const SHORT_HEADER_TIMEOUT_BOUND_MS: u64 = 5_000;

/// `--header-timeout-ms` of the slowloris test.
const SLOW_HEADER_TIMEOUT_MS: u64 = 2_000;

/// Slowloris connections, and the pause between two bytes on each.
const SLOW_CONNECTIONS: usize = 500;
const DRIP_INTERVAL_MS: u64 = 300;

/// How long after its first byte a slowloris connection may stay open: the header timeout
/// and generous slack for a shared 2-core machine.
const DRIP_CLOSE_BOUND_MS: u64 = SLOW_HEADER_TIMEOUT_MS + 2_500;

/// The slowloris run ends after this long whatever happened.
const DRIP_RUN_MS_MAX: u64 = 6_000;

/// The pause between two requests of the well-behaved client during the slowloris run.
const NORMAL_CLIENT_PAUSE_MS: u64 = 100;

/// `--max-connections` of the connection-limit test, and how many it opens.
const CONNECTIONS_MAX: usize = 4;
const CONNECTIONS_OPENED: usize = 10;

/// How long a connection over the limit may take to be closed.
const REFUSED_CLOSE_WAIT_MS: u64 = 1_500;

/// How long croupier may take to notice closed connections and accept new ones again.
const RECOVERY_WAIT_MS: u64 = 3_000;

/// How long croupier may take to close an upstream connection it must not reuse.
const UPSTREAM_CLOSE_WAIT_MS: u64 = 2_000;

/// croupier with a recording provider announced for [`TOPIC`].
struct Rig {
    croupier: Croupier,
    provider: RecordingProvider,
}

impl Rig {
    fn start(driver: &str, args: &[&str]) -> Rig {
        let provider = RecordingProvider::start();
        let croupier = Croupier::start(driver, args);
        announce_ok(&croupier, TOPIC, provider.port());
        Rig { croupier, provider }
    }

    /// The usual rig: no forwarding headers, so expected bytes stay short.
    fn strict(driver: &str) -> Rig {
        Rig::start(driver, &["--no-forwarded-headers"])
    }

    fn addr(&self) -> SocketAddr {
        self.croupier.addr()
    }
}

fn announce_ok(croupier: &Croupier, topic: &str, port: u16) {
    let (status, reply) = croupier.announce(topic, port, LEASE_S);
    assert_eq!(status, 200, "announce {topic} on port {port}: {reply}");
}

/// A request: `start` line, `Host`, `croupier-topic`, then `fields` (each line ending in
/// CRLF), the empty line and `body`. Since croupier keeps `Host` and `croupier-topic` where
/// they were, the same shape describes what it forwards.
fn message(start: &str, fields: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("{start}\r\nHost: croupier.test\r\ncroupier-topic: {TOPIC}\r\n").into_bytes();
    bytes.extend_from_slice(fields);
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Bytes for assertion messages, with CR, LF and other controls escaped.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]);
    let more = if bytes.len() > 600 { " ..." } else { "" };
    format!("{text:?}{more} ({} bytes)", bytes.len())
}

/// Sends `bytes` on a fresh connection and reads one response.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Conn, Result<Response, String>) {
    let mut conn = Conn::open(addr);
    // croupier may refuse a big request and close before reading all of it; what it
    // answered is what the test checks, so a failed write is only reported.
    let sent = conn.try_send(bytes);
    let response = conn.try_read_response("GET").map_err(|e| format!("{e} (write: {sent:?})"));
    (conn, response)
}

/// The status line says `status` and the body is `{"result":"error","status":N,...}`,
/// naming `limit` when one is given.
fn assert_error_body(response: &Response, status: u16, limit: Option<&str>, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.summary());
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", response.summary()));
    assert_eq!(body["result"], "error", "{what}: {body}");
    assert_eq!(body["status"], status, "{what}: {body}");
    if let Some(limit) = limit {
        assert_eq!(body["limit"], limit, "{what}: the body does not name the limit: {body}");
    }
}

/// How many bytes each upstream connection had carried at some moment.
struct Mark(Vec<usize>);

fn mark(provider: &RecordingProvider) -> Mark {
    Mark(provider.connections().iter().map(|c| c.raw.len()).collect())
}

/// Every byte the provider received since `mark`, connection after connection.
fn bytes_since(provider: &RecordingProvider, mark: &Mark) -> Vec<u8> {
    let connections = provider.connections();
    let mut bytes = Vec::new();
    for (i, connection) in connections.iter().enumerate() {
        let from = mark.0.get(i).copied().unwrap_or(0);
        bytes.extend_from_slice(&connection.raw[from..]);
    }
    bytes
}

fn settle() {
    thread::sleep(Duration::from_millis(SETTLE_MS));
}

/// A refused request: `status` and a JSON error body, the connection closed, nothing at the
/// provider.
fn assert_rejected(rig: &Rig, what: &str, sent: &[u8], status: u16, limit: Option<&str>) {
    let before = mark(&rig.provider);
    let (mut conn, response) = exchange(rig.addr(), sent);
    let response = response.unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_error_body(&response, status, limit, what);
    assert!(conn.is_closed(), "{what}: croupier kept the connection open after its {status}");
    settle();
    let leaked = bytes_since(&rig.provider, &before);
    assert!(leaked.is_empty(), "{what}: the provider received {}", shown(&leaked));
}

/// An accepted request: a 200 from the provider, and exactly one request there whose bytes
/// are `want`, with nothing else around it.
fn assert_forwarded(rig: &Rig, what: &str, sent: &[u8], want: &[u8]) {
    let before = mark(&rig.provider);
    let requests_before = rig.provider.requests().len();
    let (_conn, response) = exchange(rig.addr(), sent);
    let response = response.unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_eq!(response.status, 200, "{what}: {}", response.summary());

    let requests = rig.provider.requests();
    let new = &requests[requests_before..];
    assert_eq!(new.len(), 1, "{what}: {} requests reached the provider", new.len());
    assert_eq!(response.body_text(), new[0].target, "{what}: the answer is not the provider's");
    assert!(
        new[0].raw == want,
        "{what}: forwarded\n  {}\nwant\n  {}",
        shown(&new[0].raw),
        shown(want)
    );
    settle();
    let received = bytes_since(&rig.provider, &before);
    assert!(
        received == want,
        "{what}: the provider received more than the request: {}",
        shown(&received)
    );
}

/// Rule: RFC 9112 §6.1–6.3. CL with TE, and a Content-Length that is not `1*DIGIT`, that
/// overflows, or that repeats with different values, is a 400 and a close. Repeated equal
/// values stand for the one value.
fn content_length_rules(driver: &str) {
    let rig = Rig::strict(driver);
    let post = "POST /length HTTP/1.1";
    let chunked_hello = b"5\r\nhello\r\n0\r\n\r\n";
    let rejected: &[(&str, &[u8], &[u8])] = &[
        ("CL then TE", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", chunked_hello),
        ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", chunked_hello),
        ("CL +5", b"Content-Length: +5\r\n", b"hello"),
        ("CL -1", b"Content-Length: -1\r\n", b"hello"),
        ("CL 0x5", b"Content-Length: 0x5\r\n", b"hello"),
        ("CL ' 5 6'", b"Content-Length:  5 6\r\n", b"hello"),
        ("CL empty", b"Content-Length: \r\n", b"hello"),
        ("CL empty, no space", b"Content-Length:\r\n", b"hello"),
        ("CL overflowing u64", b"Content-Length: 18446744073709551616\r\n", b"hello"),
        ("CL 5 and 6 on two lines", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello"),
        ("CL '5, 6'", b"Content-Length: 5, 6\r\n", b"hello"),
    ];
    for (what, fields, body) in rejected {
        assert_rejected(&rig, what, &message(post, fields, body), 400, None);
    }

    let want = message(post, b"content-length: 5\r\n", b"hello");
    let equal: &[(&str, &[u8])] = &[
        ("CL 5 on two lines", b"Content-Length: 5\r\ncontent-length: 5\r\n"),
        ("CL '5, 5'", b"Content-Length: 5, 5\r\n"),
    ];
    for (what, fields) in equal {
        assert_forwarded(&rig, what, &message(post, fields, b"hello"), &want);
    }
}

/// Rule: RFC 9112 §6.1 and §6.3 item 4. croupier frames only a single `chunked`; any other
/// Transfer-Encoding is a 501 and a close. HTTP/1.0 has no transfer codings: 400.
fn transfer_encoding_rules(driver: &str) {
    let rig = Rig::strict(driver);
    let post = "POST /coding HTTP/1.1";
    let body = b"5\r\nhello\r\n0\r\n\r\n";
    let unsupported: &[(&str, &[u8])] = &[
        ("TE gzip, chunked", b"Transfer-Encoding: gzip, chunked\r\n"),
        ("TE chunked, chunked", b"Transfer-Encoding: chunked, chunked\r\n"),
        ("TE chunked + tab", b"Transfer-Encoding: chunked\t\r\n"),
        ("TE identity", b"Transfer-Encoding: identity\r\n"),
        ("two TE lines", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    ];
    for (what, fields) in unsupported {
        assert_rejected(&rig, what, &message(post, fields, body), 501, None);
    }

    let old = message("POST /coding HTTP/1.0", b"Transfer-Encoding: chunked\r\n", body);
    assert_rejected(&rig, "HTTP/1.0 with TE", &old, 400, None);
}

/// A valid chunked body (extension, trailer) sent in pieces reaches the provider byte for
/// byte, behind a `transfer-encoding: chunked` that croupier writes itself.
fn chunked_body_forwarded_as_received(driver: &str) {
    let rig = Rig::strict(driver);
    let body: &[u8] = b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\n";
    let sent = message("POST /chunked HTTP/1.1", b"Transfer-Encoding: chunked\r\n", body);
    let want = message("POST /chunked HTTP/1.1", b"transfer-encoding: chunked\r\n", body);

    // Three writes, split inside the head, a size line and the trailer, so croupier has to
    // carry the decoder's state across reads.
    let mut conn = Conn::open(rig.addr());
    let cuts = [sent.len() - body.len() - 10, sent.len() - 30, sent.len()];
    let mut from = 0;
    for cut in cuts {
        conn.send(&sent[from..cut]);
        from = cut;
        thread::sleep(Duration::from_millis(50));
    }
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{}", response.summary());
    let requests = rig.provider.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].raw == want,
        "forwarded\n  {}\nwant\n  {}",
        shown(&requests[0].raw),
        shown(&want)
    );
}

/// Rule: RFC 9112 §7.1, read strictly. A chunk size with no digits, more than 16 hex digits,
/// a `0x` or a sign, an extension over 4 KiB, a missing CRLF after the size line or after the
/// data, or a bare LF anywhere in the framing: 400 and a close.
///
/// The head of such a request was valid, and croupier streams bodies: it may have opened a
/// provider connection and sent the head and the chunks before the bad one before it found
/// the bad one, and it cannot take them back. So the provider may see the start of the
/// request; what it must never see is a complete request (the last chunk and the empty line),
/// and what it saw must be the start of the canonical form, not anything else.
fn chunked_framing_errors(driver: &str) {
    let rig = Rig::strict(driver);
    let long_extension = concat(&[b"5;", &[b'e'; 5_000], b"\r\nworld\r\n0\r\n\r\n"]);
    let cases: &[(&str, &[u8])] = &[
        ("first size line without digits", b"\r\nhello\r\n0\r\n\r\n"),
        ("size line without digits", b"\r\nworld\r\n0\r\n\r\n"),
        ("size line of only an extension", b";ext\r\nworld\r\n0\r\n\r\n"),
        ("17 hex digits", b"00000000000000005\r\nworld\r\n0\r\n\r\n"),
        ("0x prefix", b"0x5\r\nworld\r\n0\r\n\r\n"),
        ("plus sign", b"+5\r\nworld\r\n0\r\n\r\n"),
        ("minus sign", b"-5\r\nworld\r\n0\r\n\r\n"),
        ("extension over 4 KiB", &long_extension),
        ("CR without LF after the size", b"5\rworld\r\n0\r\n\r\n"),
        ("data where the size line's CRLF belongs", b"5world\r\n0\r\n\r\n"),
        ("data not followed by CRLF", b"5\r\nworldX\r\n0\r\n\r\n"),
        ("last chunk right after the data", b"5\r\nworld0\r\n\r\n"),
        ("bare LF after the size", b"5\nworld\r\n0\r\n\r\n"),
        ("bare LF after an extension", b"5;a=b\nworld\r\n0\r\n\r\n"),
        ("bare LF after the data", b"5\r\nworld\n0\r\n\r\n"),
        ("bare LF after the last chunk", b"0\n\r\n"),
        ("bare LF ending a trailer", b"0\r\nx-sum: 1\n\r\n"),
        ("bare LF as the final line", b"0\r\n\n"),
    ];
    for (what, tail) in cases {
        // All but the first case start with a valid chunk, so the bad framing comes after
        // data croupier could already have forwarded.
        let valid: &[u8] = if what.starts_with("first") { b"" } else { b"5\r\nhello\r\n" };
        assert_chunked_rejected(&rig, what, valid, tail);
    }
}

/// Sends the head and `valid`, pauses so croupier can forward them, then sends `bad`, and
/// checks the refusal.
fn assert_chunked_rejected(rig: &Rig, what: &str, valid: &[u8], bad: &[u8]) {
    let start = "POST /bad-chunks HTTP/1.1";
    let body = concat(&[valid, bad]);
    let sent = message(start, b"Transfer-Encoding: chunked\r\n", &body);
    let canonical = message(start, b"transfer-encoding: chunked\r\n", &body);
    let before = mark(&rig.provider);
    let requests_before = rig.provider.requests().len();

    let mut conn = Conn::open(rig.addr());
    let (first, second) = sent.split_at(sent.len() - bad.len());
    conn.send(first);
    thread::sleep(Duration::from_millis(CHUNK_PAUSE_MS));
    // croupier may answer and close before it has read all of a long bad line.
    let written = conn.try_send(second);
    let response = conn
        .try_read_response("POST")
        .unwrap_or_else(|e| panic!("{what}: no response: {e} (write: {written:?})"));
    assert_error_body(&response, 400, None, what);
    assert!(conn.is_closed(), "{what}: croupier kept the connection open after its 400");

    settle();
    let received = bytes_since(&rig.provider, &before);
    let complete = rig.provider.requests().len() - requests_before;
    for (i, connection) in rig.provider.connections().iter().enumerate() {
        if connection.raw.len() > before.0.get(i).copied().unwrap_or(0) {
            let wait = Duration::from_millis(UPSTREAM_CLOSE_WAIT_MS);
            assert!(
                rig.provider.wait_closed_by_peer(i, wait),
                "{what}: croupier kept the upstream connection that carried part of the request"
            );
        }
    }
    assert_eq!(
        complete,
        0,
        "{what}: the provider received a complete request: {}",
        shown(&received)
    );
    assert!(
        find_bytes(&received, LAST_CHUNK).is_none(),
        "{what}: the provider received the end of the body: {}",
        shown(&received)
    );
    assert!(
        canonical.starts_with(&received),
        "{what}: the provider received bytes that are not the start of the request: {}",
        shown(&received)
    );
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rule: RFC 9112 §5 and §2.2. obs-fold, white space between name and colon, bytes that are
/// not tchar in a name, NUL or CR in a value, and a bare LF in the head: 400, a close, and
/// nothing at the provider.
fn head_syntax_errors(driver: &str) {
    let rig = Rig::strict(driver);
    let get = "GET /syntax HTTP/1.1";
    let fields: &[(&str, &[u8])] = &[
        ("obs-fold with a space", b"X-A: b\r\n c\r\n"),
        ("obs-fold with a tab", b"X-A: b\r\n\tc\r\n"),
        ("space before the colon", b"X-A : b\r\n"),
        ("tab before the colon", b"X-A\t: b\r\n"),
        ("parenthesis in a name", b"X(A): b\r\n"),
        ("@ in a name", b"X@A: b\r\n"),
        ("slash in a name", b"X/A: b\r\n"),
        ("brace in a name", b"X{A}: b\r\n"),
        ("DEL in a name", b"X\x7fA: b\r\n"),
        ("non-ASCII in a name", b"X\xc3\xa9: b\r\n"),
        ("NUL in a value", b"X-A: a\x00b\r\n"),
        ("CR in a value", b"X-A: a\rb\r\n"),
        ("bare LF ending a header line", b"X-A: b\n"),
    ];
    for (what, fields) in fields {
        assert_rejected(&rig, what, &message(get, fields, b""), 400, None);
    }

    let whole: &[(&str, &[u8])] = &[
        (
            "bare LF after the request line",
            b"GET /syntax HTTP/1.1\nHost: croupier.test\r\ncroupier-topic: conformance\r\n\r\n",
        ),
        (
            "bare LF ending the head",
            b"GET /syntax HTTP/1.1\r\nHost: croupier.test\r\ncroupier-topic: conformance\n\n",
        ),
        (
            "name without colon",
            b"GET /syntax HTTP/1.1\r\nHost: croupier.test\r\ncroupier-topic: conformance\r\n\
              X-A\r\n\r\n",
        ),
    ];
    for (what, sent) in whole {
        assert_rejected(&rig, what, sent, 400, None);
    }
}

/// Rule: RFC 9112 §3.2. An HTTP/1.1 request needs exactly one Host. An HTTP/1.0 request
/// without one is forwarded with an empty Host, since croupier speaks 1.1 upstream.
fn host_rules(driver: &str) {
    let rig = Rig::strict(driver);
    let topic = format!("croupier-topic: {TOPIC}\r\n");
    let missing = format!("GET /host HTTP/1.1\r\n{topic}\r\n");
    assert_rejected(&rig, "HTTP/1.1 without Host", missing.as_bytes(), 400, None);
    let two = format!("GET /host HTTP/1.1\r\nHost: a.test\r\n{topic}Host: b.test\r\n\r\n");
    assert_rejected(&rig, "two Host lines", two.as_bytes(), 400, None);

    let old = format!("GET /old HTTP/1.0\r\n{topic}\r\n");
    let want = format!("GET /old HTTP/1.1\r\n{topic}host: \r\n\r\n");
    assert_forwarded(&rig, "HTTP/1.0 without Host", old.as_bytes(), want.as_bytes());
}

/// Rule: RFC 9112 §6.3 item 7. A request with neither length header has no body; a GET with
/// a Content-Length has one and it is forwarded. A POST without a body gets an explicit
/// `content-length: 0` (croupier's choice, `encode.rs`: some servers wait for a body
/// otherwise).
fn bodies_without_length_headers(driver: &str) {
    let rig = Rig::strict(driver);
    let get = message("GET /plain HTTP/1.1", b"", b"");
    assert_forwarded(&rig, "GET without length", &get, &get);

    let with_body = message("GET /with-body HTTP/1.1", b"Content-Length: 5\r\n", b"hello");
    let want = message("GET /with-body HTTP/1.1", b"content-length: 5\r\n", b"hello");
    assert_forwarded(&rig, "GET with a body", &with_body, &want);

    let post = message("POST /empty HTTP/1.1", b"", b"");
    let want = message("POST /empty HTTP/1.1", b"content-length: 0\r\n", b"");
    assert_forwarded(&rig, "POST without length", &post, &want);
}

/// Limits: a request line over 8 KiB is a 414, a head over 32 KiB or more than 100 header
/// lines a 431, each naming its limit. Exactly at each limit is accepted.
fn head_size_limits(driver: &str) {
    let rig = Rig::strict(driver);

    let line_at = |len: usize| {
        let path = "a".repeat(len - "GET / HTTP/1.1".len());
        format!("GET /{path} HTTP/1.1")
    };
    let at_limit = message(&line_at(REQUEST_LINE_BYTES_MAX), b"", b"");
    assert_forwarded(&rig, "request line at the limit", &at_limit, &at_limit);
    let over = message(&line_at(REQUEST_LINE_BYTES_MAX + 1), b"", b"");
    let limit = Some("request_line_bytes_max");
    assert_rejected(&rig, "request line over the limit", &over, 414, limit);
    let far_over = message(&line_at(REQUEST_LINE_BYTES_MAX + 900), b"", b"");
    assert_rejected(&rig, "request line far over the limit", &far_over, 414, limit);

    // A head of exactly `len` bytes: one padding header makes up the size.
    let head_of = |len: usize| {
        let bare = message("GET /big HTTP/1.1", b"x-pad: \r\n", b"").len();
        let pad = "p".repeat(len - bare);
        message("GET /big HTTP/1.1", format!("x-pad: {pad}\r\n").as_bytes(), b"")
    };
    let at_limit = head_of(HEADER_BYTES_MAX);
    assert_forwarded(&rig, "head at the limit", &at_limit, &at_limit);
    let limit = Some("header_bytes_max");
    let over = head_of(HEADER_BYTES_MAX + 1);
    assert_rejected(&rig, "head over the limit", &over, 431, limit);
    let many_lines: String = (0..40).map(|i| format!("x-{i}: {}\r\n", "v".repeat(1_000))).collect();
    let over = message("GET /big HTTP/1.1", many_lines.as_bytes(), b"");
    assert_rejected(&rig, "40 KiB head", &over, 431, limit);

    // Host and croupier-topic count among the lines.
    let lines = |n: usize| -> String { (2..n).map(|i| format!("x-{i}: v\r\n")).collect() };
    let at_limit = message("GET /many HTTP/1.1", lines(HEADERS_MAX).as_bytes(), b"");
    assert_forwarded(&rig, "100 header lines", &at_limit, &at_limit);
    let over = message("GET /many HTTP/1.1", lines(HEADERS_MAX + 1).as_bytes(), b"");
    assert_rejected(&rig, "101 header lines", &over, 431, Some("headers_max"));
}

/// Limit: a body with a Content-Length over `--max-body-bytes` is a 413 naming the limit,
/// and the provider gets nothing; a body at the limit is forwarded.
fn max_body_bytes_with_length(driver: &str) {
    let max = MAX_BODY_BYTES.to_string();
    let rig = Rig::start(driver, &["--no-forwarded-headers", "--max-body-bytes", &max]);
    let post = "POST /upload HTTP/1.1";

    let over = vec![b'o'; 2 * MAX_BODY_BYTES];
    let sent = message(post, format!("Content-Length: {}\r\n", over.len()).as_bytes(), &over);
    assert_rejected(&rig, "2000-byte body", &sent, 413, Some("max_body_bytes"));

    let at = vec![b'a'; MAX_BODY_BYTES];
    let length = format!("{MAX_BODY_BYTES}\r\n");
    let sent = message(post, format!("Content-Length: {length}").as_bytes(), &at);
    let want = message(post, format!("content-length: {length}").as_bytes(), &at);
    assert_forwarded(&rig, "body at the limit", &sent, &want);
}

/// Limit: a chunked body larger than `--max-body-bytes` is a 413 too. croupier learns the
/// size only while streaming, so the provider may have seen the start of it, as with bad
/// chunks; it must not see a complete request.
fn max_body_bytes_chunked(driver: &str) {
    let max = MAX_BODY_BYTES.to_string();
    let rig = Rig::start(driver, &["--no-forwarded-headers", "--max-body-bytes", &max]);
    let chunk = concat(&[b"3e8\r\n", &[b'c'; MAX_BODY_BYTES], b"\r\n"]);
    let body = concat(&[&chunk, &chunk, LAST_CHUNK]);
    let sent = message("POST /upload HTTP/1.1", b"Transfer-Encoding: chunked\r\n", &body);
    let requests_before = rig.provider.requests().len();

    let (mut conn, response) = exchange(rig.addr(), &sent);
    let what = "2000-byte chunked body";
    let response = response.unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_error_body(&response, 413, Some("max_body_bytes"), what);
    assert!(conn.is_closed(), "{what}: croupier kept the connection open");
    settle();
    let complete = rig.provider.requests().len() - requests_before;
    assert_eq!(complete, 0, "{what}: the provider received the whole request");
}

/// Two complete requests in one write are both forwarded, in order, each with its own
/// framing, and answered in order.
fn pipelined_requests_answered_in_order(driver: &str) {
    let rig = Rig::strict(driver);
    let first = message("POST /first HTTP/1.1", b"Content-Length: 5\r\n", b"hello");
    let second = message("GET /second HTTP/1.1", b"", b"");
    let mut conn = Conn::open(rig.addr());
    conn.send(&concat(&[&first, &second]));

    for target in ["/first", "/second"] {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{target}: {}", response.summary());
        assert_eq!(response.body_text(), target, "answers out of order");
    }
    let requests = rig.provider.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let want_first = message("POST /first HTTP/1.1", b"content-length: 5\r\n", b"hello");
    assert!(requests[0].raw == want_first, "first: {}", shown(&requests[0].raw));
    assert!(requests[1].raw == second, "second: {}", shown(&requests[1].raw));
}

/// What the client may see when a provider's response is broken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Broken {
    /// The head is refused before any byte went to the client: a 502.
    Head,
    /// The body is refused; croupier may have sent the head already, so either a 502 or a
    /// response cut short and the connection closed.
    Body,
}

/// Rule: RFC 9112 §6, applied to providers too. A response with CL and TE, a bad
/// Content-Length or bad chunk framing never reaches the client as if it were whole, and the
/// upstream connection that carried it is closed, not pooled: the next request goes on a
/// new one.
fn provider_responses_are_checked(driver: &str) {
    let croupier = Croupier::start(driver, &["--no-forwarded-headers"]);
    let cases: &[(&str, &[u8], Broken)] = &[
        (
            "CL and TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
            Broken::Head,
        ),
        ("CL 5x", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", Broken::Head),
        (
            "CL 5 and 6",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            Broken::Head,
        ),
        (
            "TE gzip, chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            Broken::Head,
        ),
        (
            "bad first chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            Broken::Body,
        ),
        (
            "bad chunk size mid-body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0x5\r\nworld\r\n0\r\n\r\n",
            Broken::Body,
        ),
    ];
    for (i, (what, answer, broken)) in cases.iter().enumerate() {
        check_broken_response(&croupier, &format!("broken-{i}"), what, answer, *broken);
    }
}

fn check_broken_response(
    croupier: &Croupier,
    topic: &str,
    what: &str,
    answer: &[u8],
    broken: Broken,
) {
    let provider = RecordingProvider::with_answers(vec![
        Answer::Target,
        Answer::Raw(answer.to_vec()),
        Answer::Target,
    ]);
    announce_ok(croupier, topic, provider.port());
    let headers = [("croupier-topic", topic)];

    // A first exchange leaves a pooled connection; the broken answer comes on it.
    let mut conn = Conn::open(croupier.addr());
    let primed = conn.roundtrip("GET", "/prime", &headers, b"");
    assert_eq!(primed.status, 200, "{what}: {}", primed.summary());
    let got = conn.try_roundtrip("GET", "/broken", &headers, b"");
    assert_eq!(
        provider.accepted(),
        1,
        "{what}: croupier did not reuse its pooled connection, so reuse cannot be tested"
    );
    match (broken, got) {
        (_, Ok(response)) if response.status == 502 => {
            assert_error_body(&response, 502, None, what);
        }
        (Broken::Body, Err(_)) => {
            assert!(conn.is_closed(), "{what}: the cut response left the connection open");
        }
        (_, got) => panic!("{what}: the client got {got:?}, want a 502"),
    }

    assert!(
        provider.wait_closed_by_peer(0, Duration::from_millis(UPSTREAM_CLOSE_WAIT_MS)),
        "{what}: croupier kept the upstream connection that carried the broken response"
    );
    let after = match conn.try_roundtrip("GET", "/after", &headers, b"") {
        Ok(response) => response,
        Err(_) => Conn::open(croupier.addr()).roundtrip("GET", "/after", &headers, b""),
    };
    assert_eq!(after.status, 200, "{what}: next request: {}", after.summary());
    assert_eq!(after.body_text(), "/after", "{what}");
    let requests = provider.requests();
    let last = requests.last().expect("the provider recorded requests");
    assert_ne!(
        last.connection, 0,
        "{what}: the next request went on the connection of the broken response"
    );
    assert_eq!(requests.len(), 3, "{what}: {requests:?}");
}

/// Rule: RFC 9110 §7.6.1. Connection and every header it names, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade and Content-Length are dropped
/// (croupier writes its own framing), and so is `croupier-timeout-ms`; `croupier-topic` and
/// the rest are kept in order, names as sent, values trimmed.
fn hop_by_hop_headers_dropped(driver: &str) {
    let rig = Rig::strict(driver);
    let sent = message(
        "POST /hop HTTP/1.1",
        b"Connection: keep-alive, x-SECRET\r\n\
          X-Secret: hidden\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: x-sum\r\n\
          Upgrade: websocket\r\n\
          croupier-timeout-ms: 5000\r\n\
          X-Mixed-CASE:   padded value \t\r\n\
          Accept: */*\r\n\
          Content-Length: 5\r\n",
        b"hello",
    );
    let want = message(
        "POST /hop HTTP/1.1",
        b"X-Mixed-CASE: padded value\r\nAccept: */*\r\ncontent-length: 5\r\n",
        b"hello",
    );
    assert_forwarded(&rig, "hop-by-hop headers", &sent, &want);
}

/// Without `--no-forwarded-headers`, croupier appends the client to X-Forwarded-For and
/// itself to Via, and sets X-Forwarded-Proto, after its framing header.
fn forwarding_headers_appended(driver: &str) {
    let rig = Rig::start(driver, &[]);
    let sent = message(
        "GET /fwd HTTP/1.1",
        b"X-Forwarded-For: 203.0.113.7\r\nVia: 1.0 edge\r\nX-Forwarded-Proto: https\r\n\
          Accept: */*\r\n",
        b"",
    );
    let want = message(
        "GET /fwd HTTP/1.1",
        b"Accept: */*\r\nx-forwarded-for: 203.0.113.7, 127.0.0.1\r\n\
          x-forwarded-proto: http\r\nvia: 1.0 edge, 1.1 croupier\r\n",
        b"",
    );
    assert_forwarded(&rig, "with earlier hops", &sent, &want);

    let sent = message("POST /fwd HTTP/1.1", b"Content-Length: 5\r\n", b"hello");
    let want = message(
        "POST /fwd HTTP/1.1",
        b"content-length: 5\r\nx-forwarded-for: 127.0.0.1\r\n\
          x-forwarded-proto: http\r\nvia: 1.1 croupier\r\n",
        b"hello",
    );
    assert_forwarded(&rig, "first hop", &sent, &want);
}

fn announce_body(topic: &str, host: &str, port: u16) -> String {
    json!({"topic": topic, "host": host, "port": port, "ttl": LEASE_S}).to_string()
}

fn post_control(addr: SocketAddr, path: &str, authorization: Option<&str>, body: &str) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    request(addr, "POST", path, &headers, body.as_bytes())
}

/// `--token`: announce and leave need `Authorization: Bearer <token>` (401 otherwise); the
/// providers list stays open.
fn control_plane_token(driver: &str) {
    let provider = RecordingProvider::start();
    let croupier = Croupier::start(driver, &["--token", "s3cret"]);
    let addr = croupier.addr();
    let body = announce_body(TOPIC, "127.0.0.1", provider.port());
    let announce = "/_croupier/announce";

    let refused = [
        ("no Authorization", None),
        ("wrong token", Some("Bearer wrong")),
        ("token without Bearer", Some("s3cret")),
    ];
    for (what, authorization) in refused {
        let response = post_control(addr, announce, authorization, &body);
        assert_error_body(&response, 401, None, what);
        let listed = providers_of(&croupier.providers(), TOPIC);
        assert!(listed.is_empty(), "{what}: the announce took effect: {listed:?}");
    }

    let response = post_control(addr, announce, Some("Bearer s3cret"), &body);
    assert_eq!(response.status, 200, "right token: {}", response.summary());
    assert_eq!(response.json()["result"], "ok", "{}", response.summary());

    let listing = request(addr, "GET", "/_croupier/providers", &[], b"");
    assert_eq!(listing.status, 200, "providers: {}", listing.summary());
    assert_eq!(providers_of(&listing.json(), TOPIC), vec![common::loopback(provider.port())]);

    let leave = json!({"topic": TOPIC, "host": "127.0.0.1", "port": provider.port()});
    let response = post_control(addr, "/_croupier/leave", None, &leave.to_string());
    assert_error_body(&response, 401, None, "leave without token");
    assert_eq!(providers_of(&croupier.providers(), TOPIC).len(), 1);
}

/// Announce is POST only (405); unspecified, multicast and link-local hosts are refused
/// (403), and with `--allow-provider` so is any host outside the networks given.
fn control_plane_refusals(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    let response = request(addr, "GET", "/_croupier/announce", &[], b"");
    assert_error_body(&response, 405, None, "GET announce");

    for host in ["169.254.169.254", "0.0.0.0", "224.0.0.1"] {
        let (status, reply) = croupier.announce_raw(&announce_body(TOPIC, host, 8008));
        assert_eq!(status, 403, "{host}: {reply}");
        assert_eq!(reply["result"], "error", "{host}: {reply}");
        assert_eq!(reply["status"], 403, "{host}: {reply}");
    }
    let listed = providers_of(&croupier.providers(), TOPIC);
    assert!(listed.is_empty(), "refused hosts were listed: {listed:?}");

    let narrowed = Croupier::start(driver, &["--allow-provider", "10.0.0.0/8"]);
    let (status, reply) = narrowed.announce_raw(&announce_body(TOPIC, "127.0.0.1", 8008));
    assert_eq!(status, 403, "127.0.0.1 outside 10.0.0.0/8: {reply}");
    assert_eq!(reply["status"], 403, "{reply}");
    let (status, reply) = narrowed.announce_raw(&announce_body(TOPIC, "10.1.2.3", 8008));
    assert_eq!(status, 200, "10.1.2.3 inside 10.0.0.0/8: {reply}");
}

/// Limit: a client that sends half a head and stops gets a 408 naming the header timeout,
/// and the connection closed, within a generous bound.
fn header_timeout_gets_408(driver: &str) {
    let timeout = SHORT_HEADER_TIMEOUT_MS.to_string();
    let rig = Rig::start(driver, &["--no-forwarded-headers", "--header-timeout-ms", &timeout]);
    let mut conn = Conn::open(rig.addr());
    let started = Instant::now();
    conn.send(b"GET /half HTTP/1.1\r\nHost: croupier.test\r\n");

    let response =
        conn.try_read_response("GET").unwrap_or_else(|e| panic!("no 408 after half a head: {e}"));
    let elapsed = started.elapsed();
    assert_error_body(&response, 408, Some("header_timeout_ms"), "half a head");
    assert!(
        elapsed < Duration::from_millis(SHORT_HEADER_TIMEOUT_BOUND_MS),
        "the 408 took {elapsed:?}"
    );
    assert!(conn.is_closed(), "the connection stayed open after the 408");
    assert_eq!(rig.provider.total_bytes(), 0, "the provider received bytes");
}

/// Raises this process's soft descriptor limit to `wanted` if it is lower, as far as the hard
/// limit allows; croupier, spawned afterwards, inherits it.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `limit`, a live local of the right type.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur >= wanted as libc::rlim_t {
        return;
    }
    limit.rlim_cur = (wanted as libc::rlim_t).min(limit.rlim_max);
    // SAFETY: setrlimit only reads `limit`, a live local of the right type.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    assert!(
        limit.rlim_cur >= wanted as libc::rlim_t,
        "the hard descriptor limit {} is below the {wanted} this test needs",
        limit.rlim_max
    );
}

/// A slowloris connection: sends a head one byte at a time and never finishes it.
struct Dripper {
    stream: TcpStream,
    sent: usize,
    received: Vec<u8>,
    /// When croupier closed it (or answered 408), counted from the first byte.
    closed_after: Option<Duration>,
}

/// The start of the head each dripper sends; past it, the padding value grows for ever.
const DRIP_HEAD: &[u8] =
    b"GET /slow HTTP/1.1\r\nHost: croupier.test\r\ncroupier-topic: conformance\r\n\
    x-drip: ";

impl Dripper {
    fn connect(addr: SocketAddr) -> Dripper {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("slowloris connect: {e}"));
        stream.set_nonblocking(true).expect("non-blocking socket");
        Dripper { stream, sent: 0, received: Vec::new(), closed_after: None }
    }

    /// Reads what croupier sent, then sends the next byte unless croupier is done with us.
    fn step(&mut self, since_first_byte: Duration) {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return self.closed(since_first_byte),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return self.closed(since_first_byte),
            }
        }
        if find_bytes(&self.received, b"\r\n\r\n").is_some() {
            // A whole response head: croupier has answered (a 408, checked later).
            return self.closed(since_first_byte);
        }
        let byte = DRIP_HEAD.get(self.sent).copied().unwrap_or(b'a');
        match self.stream.write(&[byte]) {
            Ok(_) => self.sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => self.closed(since_first_byte),
        }
    }

    fn closed(&mut self, since_first_byte: Duration) {
        self.closed_after.get_or_insert(since_first_byte);
    }
}

/// 500 connections each dripping a head byte every 300 ms do not keep a normal client from
/// its answers, and croupier closes each of them once the header timeout has passed.
fn slowloris_does_not_starve_clients(driver: &str) {
    raise_fd_limit(4 * SLOW_CONNECTIONS as u64 + 1_024);
    let timeout = SLOW_HEADER_TIMEOUT_MS.to_string();
    let rig = Rig::start(driver, &["--no-forwarded-headers", "--header-timeout-ms", &timeout]);
    let addr = rig.addr();
    let mut drippers: Vec<Dripper> =
        (0..SLOW_CONNECTIONS).map(|_| Dripper::connect(addr)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || normal_client(addr, &stop))
    };

    // One thread walks all the drippers each interval; the run is bounded in time and ticks.
    let first_byte = Instant::now();
    let ticks_max = DRIP_RUN_MS_MAX / DRIP_INTERVAL_MS + 1;
    for _ in 0..ticks_max {
        for dripper in drippers.iter_mut().filter(|d| d.closed_after.is_none()) {
            dripper.step(first_byte.elapsed());
        }
        let all_closed = drippers.iter().all(|d| d.closed_after.is_some());
        if all_closed || first_byte.elapsed() >= Duration::from_millis(DRIP_RUN_MS_MAX) {
            break;
        }
        thread::sleep(Duration::from_millis(DRIP_INTERVAL_MS));
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, failures) = client.join().expect("normal client panicked");

    assert!(failures.is_empty(), "the normal client failed: {failures:?}");
    assert!(answered > 0, "the normal client got no answer");
    let bound = Duration::from_millis(DRIP_CLOSE_BOUND_MS);
    let open = drippers.iter().filter(|d| d.closed_after.is_none_or(|t| t > bound)).count();
    assert_eq!(
        open, 0,
        "{open} of {SLOW_CONNECTIONS} slowloris connections were still open {bound:?} after \
         their first byte"
    );
    for dripper in &drippers {
        assert!(
            dripper.received.is_empty() || dripper.received.starts_with(b"HTTP/1.1 408 "),
            "a slowloris connection got {}",
            shown(&dripper.received)
        );
    }
    assert_eq!(rig.provider.requests().iter().filter(|r| r.target == "/slow").count(), 0);
}

/// GETs on fresh connections until told to stop: how many got a 200, and what went wrong.
fn normal_client(addr: SocketAddr, stop: &AtomicBool) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    let requests_max = DRIP_RUN_MS_MAX / NORMAL_CLIENT_PAUSE_MS + 1;
    for i in 0..requests_max {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let path = format!("/normal/{i}");
        match try_request(addr, "GET", &path, &[("croupier-topic", TOPIC)], b"") {
            Ok(response) if response.status == 200 => answered += 1,
            Ok(response) => failures.push(format!("{path}: {}", response.summary())),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
        thread::sleep(Duration::from_millis(NORMAL_CLIENT_PAUSE_MS));
    }
    (answered, failures)
}

/// `--max-connections 4` over 2 cores: of 10 idle connections, those over each core's share
/// are closed at once; the rest serve requests, and once they are closed new connections
/// are accepted again.
fn max_connections_refuses_extra(driver: &str) {
    let max = CONNECTIONS_MAX.to_string();
    let croupier = Croupier::start(driver, &["--max-connections", &max]);
    // The start-up health checks must have left croupier's count before ours arrive.
    thread::sleep(Duration::from_millis(300));

    let streams: Vec<TcpStream> = (0..CONNECTIONS_OPENED)
        .map(|_| {
            let stream = TcpStream::connect_timeout(&croupier.addr(), Duration::from_secs(5))
                .expect("connect to croupier");
            stream.set_nonblocking(true).expect("non-blocking socket");
            stream
        })
        .collect();
    let closed = wait_for_closes(&streams, Duration::from_millis(REFUSED_CLOSE_WAIT_MS));
    let open: Vec<&TcpStream> =
        streams.iter().zip(&closed).filter(|(_, c)| !**c).map(|(s, _)| s).collect();

    // Each core keeps its 2 of them, so between 2 (all on one core) and 4 stay open.
    assert!(
        (2..=CONNECTIONS_MAX).contains(&open.len()),
        "{} of {CONNECTIONS_OPENED} connections stayed open with --max-connections {max}",
        open.len()
    );
    for stream in open {
        let status = health_over(stream).unwrap_or_else(|e| panic!("a kept connection: {e}"));
        assert!(status.starts_with("HTTP/1.1 200"), "a kept connection got {status:?}");
    }

    drop(streams);
    let deadline = Instant::now() + Duration::from_millis(RECOVERY_WAIT_MS);
    loop {
        match try_request(croupier.addr(), "GET", "/_croupier/health", &[], b"") {
            Ok(response) if response.status == 200 => break,
            outcome => assert!(
                Instant::now() < deadline,
                "no new connection served {RECOVERY_WAIT_MS} ms after the idle ones closed: \
                 {outcome:?}"
            ),
        }
        thread::sleep(Duration::from_millis(common::POLL_INTERVAL_MS));
    }
}

/// Polls non-blocking `streams` for up to `wait`: which ones croupier closed.
fn wait_for_closes(streams: &[TcpStream], wait: Duration) -> Vec<bool> {
    let mut closed = vec![false; streams.len()];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        for (stream, closed) in streams.iter().zip(closed.iter_mut()) {
            let mut buf = [0u8; 64];
            if !*closed {
                *closed = match (&*stream).read(&mut buf) {
                    Ok(_) => true,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
            }
        }
        thread::sleep(Duration::from_millis(common::POLL_INTERVAL_MS));
    }
    closed
}

/// Sends a health check on `stream` and returns the status line of the answer.
fn health_over(mut stream: &TcpStream) -> io::Result<String> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /_croupier/health HTTP/1.1\r\nHost: croupier.test\r\n\r\n")?;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while find_bytes(&received, b"\r\n").is_none() && received.len() < 4096 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed before an answer"));
        }
        received.extend_from_slice(&buf[..n]);
    }
    let line_end = find_bytes(&received, b"\r\n").unwrap_or(received.len());
    Ok(String::from_utf8_lossy(&received[..line_end]).into_owned())
}
