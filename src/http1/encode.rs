//! Writing heads canonically.
//!
//! croupier never forwards the raw bytes of a head it received. It writes a new
//! one from what it parsed: one request or status line, one `name: value` line
//! per end-to-end header in the order received, then the framing headers
//! croupier itself decided on, then the empty line. Whatever quirks a peer's
//! bytes had (odd white space, a leading empty line, hop-by-hop headers) stop
//! here.

use std::io::Write;
use std::net::IpAddr;

use super::head::{RequestHead, ResponseHead, connection_tokens};
use super::{BodyLength, Version};

/// Headers that describe one connection rather than the message, which a
/// proxy must not forward (RFC 9110 §7.6.1), plus the framing headers that
/// croupier rewrites itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request headers that are croupier's own instructions, never forwarded.
/// (`croupier-topic` is not one of them: providers may want to see it.)
const CROUPIER_ONLY: &[&str] = &["croupier-timeout-ms"];

/// How the forwarded request should be decorated.
#[derive(Clone, Copy, Debug)]
pub struct ForwardHeaders {
    /// Add `X-Forwarded-For`, `X-Forwarded-Proto` and `Via`.
    pub enabled: bool,
    /// The client's address, for `X-Forwarded-For`.
    pub client_ip: IpAddr,
}

/// Writes the request head croupier sends to a provider. It always speaks
/// HTTP/1.1 upstream, with a keep-alive connection.
pub fn request_head(head: &RequestHead<'_, '_>, forward: &ForwardHeaders, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let hop = HopByHop::of(head.headers);
    let mut host_seen = false;
    let mut forwarded_for: Option<&[u8]> = None;
    let mut via: Option<&[u8]> = None;
    for header in head.headers {
        let name = header.name;
        if hop.contains(name) || is_one_of(name, CROUPIER_ONLY) {
            continue;
        }
        if forward.enabled {
            // These three are rewritten below, folding in what came before.
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                forwarded_for = Some(header.value);
                continue;
            }
            if name.eq_ignore_ascii_case("via") {
                via = Some(header.value);
                continue;
            }
            if name.eq_ignore_ascii_case("x-forwarded-proto") {
                continue;
            }
        }
        host_seen |= name.eq_ignore_ascii_case("host");
        header_line(out, name.as_bytes(), header.value);
    }
    if !host_seen {
        // HTTP/1.1 requires Host; for a target without an authority (an
        // HTTP/1.0 client sent none) RFC 9112 §3.2 says to send it empty.
        out.extend_from_slice(b"host: \r\n");
    }

    match head.body {
        BodyLength::Fixed(length) => length_line(out, length),
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A body-carrying method with an empty body says so; some servers
        // wait for a body otherwise.
        BodyLength::Empty if matches!(head.method, "POST" | "PUT" | "PATCH") => length_line(out, 0),
        BodyLength::Empty | BodyLength::UntilClose => {}
    }

    if let Some(protocol) = head.upgrade {
        // Upgrade is hop-by-hop, so it was dropped above; croupier asks the
        // provider for it itself, and tunnels once the provider agrees.
        out.extend_from_slice(b"connection: upgrade\r\n");
        header_line(out, b"upgrade", protocol);
    }
    if forward.enabled {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(previous) = forwarded_for {
            out.extend_from_slice(previous);
            out.extend_from_slice(b", ");
        }
        push_ip(out, forward.client_ip);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        out.extend_from_slice(b"via: ");
        if let Some(previous) = via {
            out.extend_from_slice(previous);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"1.1 croupier\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How croupier frames the response body it sends to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFraming {
    /// As the provider framed it (length or chunked).
    AsReceived,
    /// Without framing headers; the body ends when croupier closes the
    /// connection (an HTTP/1.0 client cannot read chunked, RFC 9112 §7.1).
    UntilClose,
}

/// Writes the response head croupier sends to the client.
pub fn response_head(
    head: &ResponseHead<'_, '_>,
    framing: ClientFraming,
    client_version: Version,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    status_line_start(out, head.status);
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let hop = HopByHop::of(head.headers);
    for header in head.headers {
        let name = header.name;
        let keep_length =
            head.body == BodyLength::Empty && name.eq_ignore_ascii_case("content-length");
        if hop.contains(name) && !keep_length {
            continue;
        }
        header_line(out, name.as_bytes(), header.value);
    }
    match (head.body, framing) {
        (BodyLength::Fixed(length), _) => length_line(out, length),
        (BodyLength::Chunked, ClientFraming::AsReceived) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a provider's `101 Switching Protocols` for the client, with the
/// `Connection` and `Upgrade` headers that make it one.
pub fn switching_head(head: &ResponseHead<'_, '_>, out: &mut Vec<u8>) {
    let _ = write!(out, "HTTP/1.1 101 ");
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let hop = HopByHop::of(head.headers);
    for header in head.headers {
        if header.name.eq_ignore_ascii_case("upgrade") {
            header_line(out, b"upgrade", header.value);
        } else if !hop.contains(header.name) {
            header_line(out, header.name.as_bytes(), header.value);
        }
    }
    out.extend_from_slice(b"connection: upgrade\r\n\r\n");
}

/// Writes an interim (1xx) response such as `100 Continue` for the client.
pub fn interim_head(head: &ResponseHead<'_, '_>, out: &mut Vec<u8>) {
    status_line_start(out, head.status);
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let hop = HopByHop::of(head.headers);
    for header in head.headers {
        if !hop.contains(header.name) {
            header_line(out, header.name.as_bytes(), header.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response croupier answers itself (errors and the control
/// plane): a JSON body with its length.
pub fn local_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    let _ = write!(out, "content-type: {content_type}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in extra_headers {
        header_line(out, name.as_bytes(), value.as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn length_line(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 200 `, up to the reason phrase.
fn status_line_start(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
}

/// An address as `X-Forwarded-For` shows it. IPv4, which nearly every
/// request has, without the formatting machinery: it was most of the cost
/// of writing a forwarded head.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|candidate| name.eq_ignore_ascii_case(candidate))
}

/// Which headers of one head are hop-by-hop: those of the fixed list, and
/// those a `Connection` header names.
///
/// Worked out once per head. Most heads have no `Connection` header, or one
/// that says only `keep-alive` or `close`; only when it names more are the
/// names looked for, instead of once for every header line.
struct HopByHop<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
    names_more: bool,
}

impl<'h, 'b> HopByHop<'h, 'b> {
    fn of(headers: &'h [httparse::Header<'b>]) -> Self {
        let names_more = connection_tokens(headers).any(|token| {
            !token.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP.iter().any(|fixed| token.eq_ignore_ascii_case(fixed.as_bytes()))
        });
        HopByHop { headers, names_more }
    }

    fn contains(&self, name: &str) -> bool {
        is_one_of(name, HOP_BY_HOP)
            || (self.names_more
                && connection_tokens(self.headers)
                    .any(|token| token.eq_ignore_ascii_case(name.as_bytes())))
    }
}

/// The reason phrase croupier writes for the statuses it produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::{HEADERS_MAX, HeadLimits, parse_request, parse_response};

    fn forwarded(raw: &[u8], enabled: bool) -> String {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let head = parse_request(raw, &mut headers, &HeadLimits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        let forward = ForwardHeaders { enabled, client_ip: "10.1.2.3".parse().unwrap() };
        request_head(&head, &forward, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads_are_rewritten_canonically() {
        let raw = b"POST /x HTTP/1.1\r\nHost:  a  \r\nConnection: keep-alive, x-secret\r\n\
            x-secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\ncroupier-topic: t\r\n\
            croupier-timeout-ms: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            forwarded(raw, false),
            "POST /x HTTP/1.1\r\nHost: a\r\ncroupier-topic: t\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn forwarding_headers_fold_in_earlier_hops() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nVia: 1.0 edge\r\n\
            X-Forwarded-Proto: https\r\n\r\n";
        assert_eq!(
            forwarded(raw, true),
            "GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 1.1.1.1, 10.1.2.3\r\n\
             x-forwarded-proto: http\r\nvia: 1.0 edge, 1.1 croupier\r\n\r\n"
        );
    }

    #[test]
    fn http10_without_host_gets_one() {
        let out = forwarded(b"GET / HTTP/1.0\r\n\r\n", false);
        assert_eq!(out, "GET / HTTP/1.1\r\nhost: \r\n\r\n");
    }

    #[test]
    fn response_heads_keep_head_lengths() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\nX-A: b\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let head =
            parse_response(raw, &mut headers, true, &HeadLimits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        response_head(&head, ClientFraming::AsReceived, Version::Http11, true, &mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: b\r\n\r\n");
    }

    #[test]
    fn addresses_and_numbers_are_written_as_display_would() {
        for ip in ["0.0.0.0", "1.2.3.4", "10.0.200.255", "255.255.255.255", "::1", "fe80::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        let mut out = Vec::new();
        status_line_start(&mut out, 204);
        length_line(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"HTTP/1.1 204 content-length: 18446744073709551615\r\n");
    }

    #[test]
    fn connection_named_headers_are_dropped_only_when_named() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret\r\n\
            X-Secret: 1\r\nX-Kept: 2\r\n\r\n";
        let out = forwarded(raw, false);
        assert!(!out.to_ascii_lowercase().contains("x-secret"), "{out}");
        assert!(out.contains("X-Kept: 2"), "{out}");
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Secret: 1\r\n\r\n";
        assert!(forwarded(raw, false).contains("X-Secret: 1"));
    }
}
