//! Message framing: how long a body is, per RFC 9112 §6.
//!
//! This is the one place where croupier decides where a message ends. A proxy
//! that reads a length one way while the next hop reads it another way lets an
//! attacker hide a second request inside the first (request smuggling), so the
//! rules here are stricter than the RFC strictly requires: every message that
//! could be read two ways is refused, and the connection it came on is closed.
//!
//! The functions take the header lines httparse produced and look only at
//! `Content-Length` and `Transfer-Encoding`; everything else about a head is
//! checked in [`super::head`].

use super::HeadError;

/// How the body of one message is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all: the next byte on the connection starts the next message.
    Empty,
    /// Exactly this many bytes follow the head.
    Fixed(u64),
    /// The chunked transfer coding (RFC 9112 §7.1) delimits the body.
    Chunked,
    /// The body runs until the sender closes the connection (responses only,
    /// RFC 9112 §6.3 rule 8).
    UntilClose,
}

/// What the framing headers of one head said, before the message kind
/// (request or response, status code, method) turns it into a [`BodyLength`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramingHeaders {
    /// The one agreed value of every `Content-Length` field, if any was sent.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` was present (its only allowed value is `chunked`).
    pub chunked: bool,
}

/// Reads the framing headers of a head, refusing every ambiguous form.
///
/// RFC 9112 §6.2 and §6.3 rule 5: `Content-Length` is `1*DIGIT`. A field that
/// repeats, or holds a comma list, is only acceptable when every value is the
/// same; then it stands for that one value. Anything else (a sign, hex, blank,
/// inner space, an overflow of u64) is invalid, and an invalid length is a 400
/// and a close.
///
/// RFC 9112 §6.1 and §6.3 rule 4: croupier implements only `chunked`, and a
/// transfer coding list that does not end in `chunked` cannot be framed. We go
/// further and accept exactly one coding, `chunked`, in exactly one field line:
/// `gzip, chunked` would ask croupier to forward a coding it does not
/// understand, and `chunked, chunked` is a classic desynchronisation vector.
///
/// RFC 9112 §6.1: a message with both `Content-Length` and `Transfer-Encoding`
/// may be rejected, and a server that processes it must close the connection
/// afterwards. croupier rejects it.
///
/// `head` is the buffer the headers were parsed from: httparse trims trailing
/// white space off values, and the raw bytes are needed to see it.
pub fn framing_headers(
    head: &[u8],
    headers: &[httparse::Header<'_>],
) -> Result<FramingHeaders, HeadError> {
    let mut framing = FramingHeaders::default();
    let mut transfer_encoding_lines = 0usize;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            for value in header.value.split(|&b| b == b',') {
                let length = parse_content_length(trim_ows(value))?;
                match framing.content_length {
                    Some(seen) if seen != length => return Err(HeadError::ConflictingLength),
                    _ => framing.content_length = Some(length),
                }
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding_lines += 1;
            if transfer_encoding_lines > 1 {
                return Err(HeadError::UnsupportedTransferCoding);
            }
            // Exactly `chunked`, with no white space around it: a value such as
            // `chunked\t` is read as chunked by some servers and as unknown by
            // others, which is precisely the disagreement smuggling needs.
            if !header.value.eq_ignore_ascii_case(b"chunked")
                || value_has_trailing_ows(head, header)
            {
                return Err(HeadError::UnsupportedTransferCoding);
            }
            framing.chunked = true;
        }
    }
    if framing.chunked && framing.content_length.is_some() {
        return Err(HeadError::LengthAndChunked);
    }
    Ok(framing)
}

/// RFC 9112 §6.3 rules 6 and 7 for requests: chunked, else the length, else no
/// body. A request is never delimited by closing the connection.
pub fn request_body(framing: FramingHeaders) -> BodyLength {
    if framing.chunked {
        BodyLength::Chunked
    } else {
        match framing.content_length {
            Some(0) | None => BodyLength::Empty,
            Some(length) => BodyLength::Fixed(length),
        }
    }
}

/// RFC 9112 §6.3 rules 1 to 8 for responses.
///
/// Rules 1 and 2: a response to HEAD, any 1xx, 204 and 304 have no body,
/// whatever their headers say. Rule 2 also covers a 2xx answer to CONNECT,
/// which croupier never forwards. Then chunked, then the length, and last the
/// close-delimited body of rule 8.
pub fn response_body(status: u16, request_was_head: bool, framing: FramingHeaders) -> BodyLength {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return BodyLength::Empty;
    }
    if framing.chunked {
        return BodyLength::Chunked;
    }
    match framing.content_length {
        Some(0) => BodyLength::Empty,
        Some(length) => BodyLength::Fixed(length),
        None => BodyLength::UntilClose,
    }
}

/// True when white space followed `header`'s value in the raw head before the
/// line end (httparse hands out the value without it).
fn value_has_trailing_ows(head: &[u8], header: &httparse::Header<'_>) -> bool {
    let start = header.value.as_ptr() as usize;
    let base = head.as_ptr() as usize;
    debug_assert!(start >= base && start + header.value.len() <= base + head.len());
    let end = start.wrapping_sub(base) + header.value.len();
    matches!(head.get(end), Some(b' ' | b'\t'))
}

/// `Content-Length = 1*DIGIT`, with no sign, no blank and no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() {
        return Err(HeadError::InvalidLength);
    }
    let mut length: u64 = 0;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return Err(HeadError::InvalidLength);
        }
        length = length
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(byte - b'0')))
            .ok_or(HeadError::InvalidLength)?;
    }
    Ok(length)
}

/// Strips optional white space (SP and HTAB, RFC 9110 §5.6.3) at both ends.
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(lines: &[(&str, &str)]) -> Result<FramingHeaders, HeadError> {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for (name, value) in lines {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        assert!(request.parse(raw.as_bytes()).unwrap().is_complete());
        framing_headers(raw.as_bytes(), request.headers)
    }

    #[test]
    fn plain_length_and_chunked() {
        let f = framing(&[("Content-Length", "42")]).unwrap();
        assert_eq!(request_body(f), BodyLength::Fixed(42));
        let f = framing(&[("transfer-encoding", "Chunked")]).unwrap();
        assert_eq!(request_body(f), BodyLength::Chunked);
        assert_eq!(request_body(framing(&[]).unwrap()), BodyLength::Empty);
        assert_eq!(request_body(framing(&[("content-length", "0")]).unwrap()), BodyLength::Empty);
    }

    #[test]
    fn equal_lengths_merge_and_different_ones_do_not() {
        let f = framing(&[("content-length", "5, 5"), ("Content-Length", "5")]).unwrap();
        assert_eq!(f.content_length, Some(5));
        assert_eq!(
            framing(&[("content-length", "5"), ("content-length", "6")]),
            Err(HeadError::ConflictingLength)
        );
        assert_eq!(framing(&[("content-length", "5,6")]), Err(HeadError::ConflictingLength));
    }

    #[test]
    fn malformed_lengths_are_refused() {
        for bad in ["", "+5", "-1", "0x5", "5 6", " ", "5,", "18446744073709551616", "1e3"] {
            assert_eq!(
                framing(&[("content-length", bad)]),
                Err(HeadError::InvalidLength),
                "{bad:?}"
            );
        }
        let max = framing(&[("content-length", "18446744073709551615")]).unwrap();
        assert_eq!(max.content_length, Some(u64::MAX));
    }

    #[test]
    fn only_a_single_chunked_coding_is_accepted() {
        for bad in ["gzip, chunked", "chunked, chunked", "identity", "chunked;q=1", "", "gzip"] {
            assert_eq!(
                framing(&[("transfer-encoding", bad)]),
                Err(HeadError::UnsupportedTransferCoding),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]),
            Err(HeadError::UnsupportedTransferCoding)
        );
        for bad in ["chunked\t", "chunked "] {
            assert!(framing(&[("transfer-encoding", bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_with_chunked_is_refused() {
        assert_eq!(
            framing(&[("content-length", "3"), ("transfer-encoding", "chunked")]),
            Err(HeadError::LengthAndChunked)
        );
    }

    #[test]
    fn responses_without_bodies() {
        let f = framing(&[("content-length", "10")]).unwrap();
        assert_eq!(response_body(200, true, f), BodyLength::Empty);
        assert_eq!(response_body(204, false, f), BodyLength::Empty);
        assert_eq!(response_body(304, false, f), BodyLength::Empty);
        assert_eq!(response_body(101, false, f), BodyLength::Empty);
        assert_eq!(response_body(200, false, f), BodyLength::Fixed(10));
        assert_eq!(response_body(200, false, framing(&[]).unwrap()), BodyLength::UntilClose);
    }
}
