//! Fuzzes the request head parser and the encoder that rewrites what it
//! parsed for the provider.
//!
//! Any input may be refused; none may panic. A head that parses is encoded
//! (with and without the forwarding headers) and the result must:
//!
//! - be one complete head that croupier's own parser reads back with the
//!   same method, target and body length, so the next hop frames the message
//!   exactly as croupier did (see [`GROWTH_LINES_MAX`] for the one allowance);
//! - end every line in CRLF (no bare LF, no bare CR);
//! - carry no hop-by-hop header: none of the fixed list, none named by the
//!   client's `Connection`, except the framing and forwarding lines croupier
//!   writes itself;
//! - keep every end-to-end header of the client, in order, with its value.
//!
//! The parser must also read every proper prefix of an accepted head as
//! "not complete yet", since the proxy parses a head as it trickles in.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use croupier::http1::BodyLength;
use croupier::http1::encode::{self, ForwardHeaders};
use croupier::http1::head::{
    HEADERS_MAX, HeadLimits, RequestHead, connection_tokens, parse_request,
};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{HOP_BY_HOP, check_line_ends, is_one_of};

/// croupier's own request instructions, which stop at croupier.
const CROUPIER_ONLY: &[&str] = &["croupier-timeout-ms"];

/// Headers croupier replaces with its own line when forwarding is on.
const FORWARDING: &[&str] = &["x-forwarded-for", "x-forwarded-proto", "via"];

/// Lines the encoder may add to an accepted head: an empty Host, one framing
/// line, and the three forwarding lines.
///
/// A head at `HEADERS_MAX` lines or near `header_bytes_max` therefore comes
/// out over croupier's own limits, and a croupier (or an HAProxy, whose
/// default is 101 lines) as the next hop refuses it. That is reported to the
/// lead as a croupier bug; until it is decided, the re-parse allows for that
/// growth and no more, so the target goes on looking for other faults. The
/// request line gets no allowance: the encoder never lengthens it.
const GROWTH_LINES_MAX: usize = 5;

/// Bytes the encoder may add: a space after each colon (one per line at
/// most), the lines of [`GROWTH_LINES_MAX`] with the longest values croupier
/// writes (a u64 length, an IPv6 client address), and separators.
const GROWTH_BYTES_MAX: usize = HEADERS_MAX + 256;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits::default();
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let Ok(Some(head)) = parse_request(data, &mut headers, &limits) else {
        return;
    };
    assert!(head.len <= data.len(), "head longer than its input");
    check_prefixes_are_partial(&data[..head.len], &limits);

    for enabled in [false, true] {
        let forward =
            ForwardHeaders { enabled, client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)) };
        let mut out = Vec::new();
        encode::request_head(&head, &forward, &mut out);
        check_line_ends(&out);
        check_encoded(&head, &out, enabled, &limits);
    }
});

/// A head that parses complete must read as incomplete one byte short of
/// its end and half way through, not as an error.
fn check_prefixes_are_partial(head: &[u8], limits: &HeadLimits) {
    for cut in [head.len() - 1, head.len() / 2] {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let prefix = parse_request(&head[..cut], &mut headers, limits);
        assert!(
            matches!(prefix, Ok(None)),
            "a prefix of {cut} bytes of an accepted head gave {prefix:?}"
        );
    }
}

fn check_encoded(head: &RequestHead<'_, '_>, out: &[u8], enabled: bool, limits: &HeadLimits) {
    let roomier =
        HeadLimits { header_bytes_max: limits.header_bytes_max + GROWTH_BYTES_MAX, ..*limits };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX + GROWTH_LINES_MAX];
    let again = match parse_request(out, &mut headers, &roomier) {
        Ok(Some(again)) => again,
        other => {
            panic!("encoded head does not parse again: {other:?}\n{}", String::from_utf8_lossy(out))
        }
    };
    assert_eq!(again.len, out.len(), "encoded head is not exactly one head");
    assert_eq!(again.method, head.method);
    assert_eq!(again.target, head.target);
    assert_eq!(again.body, head.body, "body length changed");
    assert_eq!(again.upgrade, head.upgrade, "upgrade changed");

    // Names the client's Connection header made hop-by-hop. croupier may
    // still write a line of that name itself: framing, an empty Host when
    // the client's was dropped, and its forwarding headers.
    let named: Vec<&[u8]> = connection_tokens(head.headers).collect();
    let is_named = |name: &str| named.iter().any(|t| t.eq_ignore_ascii_case(name.as_bytes()));
    let mut framing_lines = 0usize;
    for header in again.headers {
        let name = header.name;
        // An upgrade croupier forwards as its own `connection: upgrade` and
        // `upgrade: <protocol>` lines.
        let upgrade_line = head.upgrade.is_some()
            && ((name.eq_ignore_ascii_case("upgrade") && Some(header.value) == head.upgrade)
                || (name.eq_ignore_ascii_case("connection")
                    && header.value.eq_ignore_ascii_case(b"upgrade")));
        let croupiers_own = is_one_of(name, &["content-length", "transfer-encoding"])
            || (name.eq_ignore_ascii_case("host") && header.value.is_empty())
            || (enabled && is_one_of(name, FORWARDING))
            || upgrade_line;
        if is_one_of(name, &["content-length", "transfer-encoding"]) {
            framing_lines += 1;
        }
        assert!(
            croupiers_own || !(is_one_of(name, HOP_BY_HOP) || is_named(name)),
            "hop-by-hop header {name:?} forwarded"
        );
        assert!(!is_one_of(name, CROUPIER_ONLY), "{name:?} forwarded");
    }
    assert!(framing_lines <= 1, "{framing_lines} framing lines");
    let expected_framing = match head.body {
        BodyLength::Fixed(_) | BodyLength::Chunked => 1,
        BodyLength::Empty | BodyLength::UntilClose => framing_lines,
    };
    assert_eq!(framing_lines, expected_framing, "framing line missing");

    // Every end-to-end header survives, in order, with its value.
    let kept = head.headers.iter().filter(|h| {
        !(is_one_of(h.name, HOP_BY_HOP)
            || is_one_of(h.name, CROUPIER_ONLY)
            || is_named(h.name)
            || (enabled && is_one_of(h.name, FORWARDING)))
    });
    let mut written = again.headers.iter();
    for original in kept {
        let found = written.by_ref().any(|h| h.name == original.name && h.value == original.value);
        assert!(found, "end-to-end header {:?} lost", original.name);
    }
}
