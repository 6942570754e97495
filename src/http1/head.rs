//! Parsing request and response heads in place.
//!
//! httparse does the tokenising without copying; the checks it leaves to its
//! caller (see `shared/NOTES.md`: bare LF, repeated lengths, the Host rule)
//! are made here, so that a head either parses into one unambiguous meaning
//! or is refused.

use super::framing::{self, BodyLength};
use super::{HeadError, Version};

/// Most header lines one head may carry. nginx and HAProxy both allow about
/// this many; a legitimate backend-to-backend request rarely carries 30.
pub const HEADERS_MAX: usize = 100;

/// Size limits for reading one head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Longest request line, in bytes, before the request is a 414.
    pub request_line_bytes_max: usize,
    /// Largest head (request line, header lines and the empty line), in bytes,
    /// before the request is a 431.
    pub header_bytes_max: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        // 8 KiB of request line and 32 KiB of head match what the large
        // proxies accept by default, so croupier refuses nothing they pass.
        HeadLimits { request_line_bytes_max: 8 * 1024, header_bytes_max: 32 * 1024 }
    }
}

/// A parsed request head; every slice borrows the read buffer.
#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    pub target: &'b str,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, including its closing empty line.
    pub len: usize,
    pub body: BodyLength,
    /// Whether the client wants the connection kept after this exchange
    /// (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// Value of the `croupier-topic` header.
    pub topic: Option<&'b [u8]>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// `croupier-timeout-ms`: the client's deadline for the whole request.
    pub timeout_ms: Option<u64>,
    /// The protocol asked for with `Upgrade` (and `Connection: upgrade`,
    /// RFC 9110 §7.8), in an HTTP/1.1 request.
    pub upgrade: Option<&'b [u8]>,
}

impl RequestHead<'_, '_> {
    /// RFC 9110 §9.2.2: methods whose repetition has the same effect as one.
    pub fn is_idempotent(&self) -> bool {
        matches!(self.method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A parsed response head; every slice borrows the read buffer.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub status: u16,
    pub reason: &'b str,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    pub len: usize,
    pub body: BodyLength,
    /// Whether the provider keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet and still within the
/// limits, so the caller should read more.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'b, 'h>>, HeadError> {
    check_request_line_length(buf, limits)?;
    let mut request = httparse::Request::new(headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.header_bytes_max {
                return Err(HeadError::HeadTooLarge { limit_bytes: limits.header_bytes_max });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: HEADERS_MAX });
        }
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(error) => return Err(syntax_error(error)),
    };
    if len > limits.header_bytes_max {
        return Err(HeadError::HeadTooLarge { limit_bytes: limits.header_bytes_max });
    }
    let head = &buf[..len];
    check_line_ends(head)?;

    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        unreachable!("a complete request head has a method, a target and a version");
    };
    let version = version_of(minor);
    let headers: &'h [httparse::Header<'b>] = request.headers;

    // CONNECT asks for a tunnel to an authority, which is not what a topic
    // router offers; every other token is forwarded for the provider to judge.
    if method == "CONNECT" {
        return Err(HeadError::UnsupportedMethod);
    }
    // RFC 9112 §3.2: origin-form, absolute-form, or `*` (for OPTIONS only).
    let target_ok = target.starts_with('/')
        || (target == "*" && method == "OPTIONS")
        || target.starts_with("http://")
        || target.starts_with("https://");
    if !target_ok {
        return Err(HeadError::InvalidTarget);
    }

    let framing = framing::framing_headers(head, headers)?;
    if framing.chunked && version == Version::Http10 {
        return Err(HeadError::TransferEncodingInHttp10);
    }

    let mut hosts = 0usize;
    let mut topic = None;
    let mut expect_continue = false;
    let mut timeout_ms = None;
    let mut upgrade = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if header.name.eq_ignore_ascii_case(crate::TOPIC_HEADER) {
            topic = Some(header.value);
        } else if header.name.eq_ignore_ascii_case("expect") {
            expect_continue |= header.value.eq_ignore_ascii_case(b"100-continue");
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(header.value);
        } else if header.name.eq_ignore_ascii_case(crate::TIMEOUT_HEADER) {
            let ms = std::str::from_utf8(header.value).ok().and_then(|v| v.parse::<u64>().ok());
            timeout_ms = Some(ms.filter(|&ms| ms > 0).ok_or(HeadError::InvalidTimeout)?);
        }
    }
    match (version, hosts) {
        (_, 2..) => return Err(HeadError::DuplicateHost),
        (Version::Http11, 0) => return Err(HeadError::MissingHost),
        _ => {}
    }

    Ok(Some(RequestHead {
        method,
        target,
        version,
        headers,
        len,
        body: framing::request_body(framing),
        keep_alive: wants_keep_alive(version, headers),
        topic,
        expect_continue,
        timeout_ms,
        upgrade: upgrade.filter(|_| {
            version == Version::Http11
                && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        }),
    }))
}

/// Parses a provider's response head at the start of `buf`, with the same
/// scrutiny as a request: an ambiguous response is refused, never forwarded.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    request_was_head: bool,
    limits: &HeadLimits,
) -> Result<Option<ResponseHead<'b, 'h>>, HeadError> {
    let mut response = httparse::Response::new(headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.header_bytes_max {
                return Err(HeadError::HeadTooLarge { limit_bytes: limits.header_bytes_max });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: HEADERS_MAX });
        }
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(error) => return Err(syntax_error(error)),
    };
    if len > limits.header_bytes_max {
        return Err(HeadError::HeadTooLarge { limit_bytes: limits.header_bytes_max });
    }
    let head = &buf[..len];
    check_line_ends(head)?;

    let (Some(status), Some(minor)) = (response.code, response.version) else {
        unreachable!("a complete response head has a status and a version");
    };
    // RFC 9110 §15: a status is three digits, 100 to 599. httparse reads
    // `050` as 50, which no client could read back (found by fuzzing).
    if !(100..=599).contains(&status) {
        return Err(HeadError::Syntax("status outside 100 to 599"));
    }
    let version = version_of(minor);
    let headers: &'h [httparse::Header<'b>] = response.headers;
    let framing = framing::framing_headers(head, headers)?;
    if framing.chunked && version == Version::Http10 {
        return Err(HeadError::TransferEncodingInHttp10);
    }
    let body = framing::response_body(status, request_was_head, framing);
    let keep_alive = body != BodyLength::UntilClose && wants_keep_alive(version, headers);
    Ok(Some(ResponseHead {
        status,
        reason: response.reason.unwrap_or(""),
        version,
        headers,
        len,
        body,
        keep_alive,
    }))
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless `close` is named; HTTP/1.0 only
/// when `keep-alive` is named.
fn wants_keep_alive(version: Version, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for token in connection_tokens(headers) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    }
}

/// Every token of every `Connection` header line.
pub fn connection_tokens<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(framing::trim_ows)
        .filter(|token| !token.is_empty())
}

/// A request line longer than the limit is a 414 even before the rest of the
/// head has arrived, so a client cannot make croupier buffer it.
///
/// RFC 9112 §2.2 lets a server skip empty lines before the request line (and
/// httparse does), so the measure starts after them: otherwise one CRLF in
/// front would hide a request line of any length.
fn check_request_line_length(buf: &[u8], limits: &HeadLimits) -> Result<(), HeadError> {
    let mut line = buf;
    while let [b'\r', b'\n', rest @ ..] = line {
        line = rest;
    }
    let window = &line[..line.len().min(limits.request_line_bytes_max + 2)];
    let too_long = match memchr::memchr(b'\n', window) {
        Some(end) => end > limits.request_line_bytes_max + 1,
        None => line.len() > limits.request_line_bytes_max + 1,
    };
    if too_long {
        return Err(HeadError::RequestLineTooLong { limit_bytes: limits.request_line_bytes_max });
    }
    Ok(())
}

/// RFC 9112 §2.2 permits a recipient to accept a bare LF as a line end;
/// croupier refuses it, since the next hop might not.
fn check_line_ends(head: &[u8]) -> Result<(), HeadError> {
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf == 0 || head[lf - 1] != b'\r' {
            return Err(HeadError::BareLf);
        }
    }
    Ok(())
}

fn version_of(minor: u8) -> Version {
    if minor == 0 { Version::Http10 } else { Version::Http11 }
}

fn syntax_error(error: httparse::Error) -> HeadError {
    HeadError::Syntax(match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line end",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders | httparse::Error::Version => "invalid head",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> Result<Option<(String, BodyLength, bool)>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let parsed = parse_request(raw, &mut headers, &HeadLimits::default())?;
        Ok(parsed.map(|h| (h.target.to_string(), h.body, h.keep_alive)))
    }

    #[test]
    fn a_plain_get() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\ncroupier-topic: billing\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let head = parse_request(raw, &mut headers, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b");
        assert_eq!(head.len, raw.len());
        assert_eq!(head.topic, Some(&b"billing"[..]));
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.keep_alive);
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert_eq!(request(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        assert_eq!(request(b"GE").unwrap(), None);
    }

    #[test]
    fn keep_alive_rules() {
        let close = request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!close.unwrap().2);
        let old = request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!old.unwrap().2);
        let old_ka = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(old_ka.unwrap().2);
    }

    #[test]
    fn bare_lf_and_host_rules() {
        assert_eq!(request(b"GET / HTTP/1.1\nHost: x\r\n\r\n"), Err(HeadError::BareLf));
        assert_eq!(request(b"GET / HTTP/1.1\r\nHost: x\n\r\n"), Err(HeadError::BareLf));
        assert_eq!(request(b"GET / HTTP/1.1\r\n\r\n"), Err(HeadError::MissingHost));
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Err(HeadError::DuplicateHost)
        );
        assert!(request(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn http10_cannot_be_chunked() {
        assert_eq!(
            request(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::TransferEncodingInHttp10)
        );
    }

    #[test]
    fn limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert!(matches!(request(long_line.as_bytes()), Err(HeadError::RequestLineTooLong { .. })));
        // Behind an empty line, too (found by reading the fuzz target).
        let hidden = format!("\r\n{long_line}");
        assert!(matches!(request(hidden.as_bytes()), Err(HeadError::RequestLineTooLong { .. })));
        // Without the line end yet, too.
        assert!(matches!(
            request(&long_line.as_bytes()[..8500]),
            Err(HeadError::RequestLineTooLong { .. })
        ));
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "b".repeat(40_000));
        assert!(matches!(request(big.as_bytes()), Err(HeadError::HeadTooLarge { .. })));
        let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..HEADERS_MAX {
            many.push_str(&format!("x-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert!(matches!(request(many.as_bytes()), Err(HeadError::TooManyHeaders { .. })));
    }

    #[test]
    fn obs_fold_space_before_colon_and_bad_targets() {
        assert!(request(b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n").is_err());
        assert!(request(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n").is_err());
        assert_eq!(request(b"GET x HTTP/1.1\r\nHost: x\r\n\r\n"), Err(HeadError::InvalidTarget));
        assert_eq!(
            request(b"CONNECT a:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HeadError::UnsupportedMethod)
        );
        assert_eq!(
            request(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            Err(HeadError::UnsupportedVersion)
        );
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let head =
            parse_response(raw, &mut headers, false, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!((head.status, head.body, head.keep_alive), (200, BodyLength::Fixed(3), true));
        let raw = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let head =
            parse_response(raw, &mut headers, false, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!((head.body, head.keep_alive), (BodyLength::UntilClose, false));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        assert_eq!(
            parse_response(raw, &mut headers, false, &HeadLimits::default()).unwrap_err(),
            HeadError::LengthAndChunked
        );
        for raw in [&b"HTTP/1.1 050 Continue\r\n\r\n"[..], b"HTTP/1.1 600 X\r\n\r\n"] {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            assert!(parse_response(raw, &mut headers, false, &HeadLimits::default()).is_err());
        }
    }
}
