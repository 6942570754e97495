//! What the head targets check in the same way.

/// Headers about one connection (RFC 9110 §7.6.1), plus the framing headers
/// croupier rewrites: none of them may leave croupier as it received them.
///
/// Written out here rather than taken from `croupier::http1::encode`, so the
/// targets check the encoder against the RFC's list, not against itself.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Every LF is preceded by CR and every CR followed by LF.
pub fn check_line_ends(out: &[u8]) {
    for (at, &byte) in out.iter().enumerate() {
        match byte {
            b'\n' => assert!(at > 0 && out[at - 1] == b'\r', "bare LF at {at}"),
            b'\r' => assert!(out.get(at + 1) == Some(&b'\n'), "bare CR at {at}"),
            _ => {}
        }
    }
}

pub fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|candidate| name.eq_ignore_ascii_case(candidate))
}
