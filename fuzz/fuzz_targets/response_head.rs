//! Fuzzes the response head parser and the encoder that rewrites a
//! provider's head for the client.
//!
//! The first input byte picks the context a response is read and written
//! in (was the request a HEAD, does the client speak HTTP/1.0, does croupier
//! keep the client connection, is a chunked body forwarded as chunked); the
//! rest is the provider's head. Any input may be refused; none may panic. A
//! head that parses is encoded, and the result must:
//!
//! - be one complete head that croupier's parser reads back (in the same
//!   context) with the same status, reason and body length, except that a
//!   chunked body sent to a client as close-delimited reads as such;
//! - end every line in CRLF;
//! - carry no hop-by-hop header of the provider's, only the framing and
//!   `Connection` lines croupier writes itself, and say `close` exactly
//!   when croupier means to close;
//! - keep every end-to-end header, in order, with its value.
//!
//! A 1xx head is also run through the interim encoder, which must give a
//! head that reads back with the same status. Every proper prefix of an
//! accepted head must read as incomplete.

#![no_main]

use croupier::http1::encode::{self, ClientFraming};
use croupier::http1::head::{
    HEADERS_MAX, HeadLimits, ResponseHead, connection_tokens, parse_response,
};
use croupier::http1::{BodyLength, Version};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{HOP_BY_HOP, check_line_ends, is_one_of};

/// Lines the encoder may add to an accepted head: one framing line and one
/// `Connection` line. As for requests (see the `request_head` target), a head
/// at croupier's limits can come out over them; that is reported as a bug,
/// and the re-parse allows for this growth and no more meanwhile.
const GROWTH_LINES_MAX: usize = 2;

/// Bytes the encoder may add: a space after each colon, and the two lines of
/// [`GROWTH_LINES_MAX`] with their longest values.
const GROWTH_BYTES_MAX: usize = HEADERS_MAX + 128;

/// What the first input byte chose.
#[derive(Clone, Copy, Debug)]
struct Context {
    request_was_head: bool,
    client_version: Version,
    keep_client: bool,
    framing: ClientFraming,
}

impl Context {
    fn from_byte(byte: u8) -> Context {
        Context {
            request_was_head: byte & 1 != 0,
            client_version: if byte & 2 != 0 { Version::Http10 } else { Version::Http11 },
            keep_client: byte & 4 != 0,
            framing: if byte & 8 != 0 {
                ClientFraming::UntilClose
            } else {
                ClientFraming::AsReceived
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let context = Context::from_byte(flags);
    let limits = HeadLimits::default();
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let Ok(Some(head)) = parse_response(raw, &mut headers, context.request_was_head, &limits)
    else {
        return;
    };
    assert!(head.len <= raw.len(), "head longer than its input");
    check_prefixes_are_partial(&raw[..head.len], context, &limits);

    // parse_response refuses a status outside 100 to 599 (this target found
    // `050` getting through and coming out as an unreadable `50`).
    assert!((100..=599).contains(&head.status), "status {} accepted", head.status);

    // As the proxy does: a client connection outlives a response only if
    // the body's end can be told without closing it.
    let close_delimited = head.body == BodyLength::UntilClose
        || (head.body == BodyLength::Chunked && context.framing == ClientFraming::UntilClose);
    let keep_alive = context.keep_client && !close_delimited;
    let mut out = Vec::new();
    encode::response_head(&head, context.framing, context.client_version, keep_alive, &mut out);
    check_line_ends(&out);
    check_encoded(&head, &out, context, keep_alive, &limits);

    // A 1xx goes to the client through the interim encoder instead.
    if (100..200).contains(&head.status) {
        let mut interim = Vec::new();
        encode::interim_head(&head, &mut interim);
        check_line_ends(&interim);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX + GROWTH_LINES_MAX];
        let roomier =
            HeadLimits { header_bytes_max: limits.header_bytes_max + GROWTH_BYTES_MAX, ..limits };
        let again = parse_response(&interim, &mut headers, context.request_was_head, &roomier);
        match again {
            Ok(Some(again)) => {
                assert_eq!((again.status, again.len), (head.status, interim.len()));
                assert_eq!(again.body, BodyLength::Empty);
            }
            other => panic!("encoded interim head does not parse again: {other:?}"),
        }
    }
});

fn check_prefixes_are_partial(head: &[u8], context: Context, limits: &HeadLimits) {
    for cut in [head.len() - 1, head.len() / 2] {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let prefix = parse_response(&head[..cut], &mut headers, context.request_was_head, limits);
        assert!(
            matches!(prefix, Ok(None)),
            "a prefix of {cut} bytes of an accepted head gave {prefix:?}"
        );
    }
}

fn check_encoded(
    head: &ResponseHead<'_, '_>,
    out: &[u8],
    context: Context,
    keep_alive: bool,
    limits: &HeadLimits,
) {
    let roomier =
        HeadLimits { header_bytes_max: limits.header_bytes_max + GROWTH_BYTES_MAX, ..*limits };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX + GROWTH_LINES_MAX];
    let again = match parse_response(out, &mut headers, context.request_was_head, &roomier) {
        Ok(Some(again)) => again,
        other => {
            panic!("encoded head does not parse again: {other:?}\n{}", String::from_utf8_lossy(out))
        }
    };
    assert_eq!(again.len, out.len(), "encoded head is not exactly one head");
    assert_eq!(again.status, head.status);
    assert_eq!(again.reason, head.reason);
    let expected_body = match (head.body, context.framing) {
        (BodyLength::Chunked, ClientFraming::UntilClose) => BodyLength::UntilClose,
        (body, _) => body,
    };
    assert_eq!(again.body, expected_body, "body length changed");
    assert_eq!(again.keep_alive, keep_alive, "connection persistence changed");

    // The provider's Connection header is gone, so croupier's own tokens are
    // the only ones left; `close` and `keep-alive` are connection options,
    // not header names (RFC 9110 reserves the field name `Close`).
    let named: Vec<&[u8]> = connection_tokens(head.headers).collect();
    let is_named = |name: &str| named.iter().any(|t| t.eq_ignore_ascii_case(name.as_bytes()));
    let mut connection_lines = 0usize;
    let mut framing_lines = 0usize;
    for header in again.headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            connection_lines += 1;
            let expected: &[u8] = if !keep_alive { b"close" } else { b"keep-alive" };
            assert_eq!(header.value, expected, "unexpected connection line");
            continue;
        }
        let framing = is_one_of(name, &["content-length", "transfer-encoding"]);
        framing_lines += usize::from(framing);
        assert!(
            framing || !(is_one_of(name, HOP_BY_HOP) || is_named(name)),
            "hop-by-hop header {name:?} forwarded"
        );
    }
    let expected_connection_lines =
        usize::from(!keep_alive || context.client_version == Version::Http10);
    assert_eq!(connection_lines, expected_connection_lines);
    // A body with no content (HEAD, 204, 304, `Content-Length: 0`) keeps the
    // provider's length lines, which tell the client the entity's size.
    if head.body != BodyLength::Empty {
        assert!(framing_lines <= 1, "{framing_lines} framing lines");
    }

    let kept = head.headers.iter().filter(|h| !(is_one_of(h.name, HOP_BY_HOP) || is_named(h.name)));
    let mut written = again.headers.iter();
    for original in kept {
        let found = written.by_ref().any(|h| h.name == original.name && h.value == original.value);
        assert!(found, "end-to-end header {:?} lost", original.name);
    }
}
