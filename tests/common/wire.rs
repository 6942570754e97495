//! HTTP/1.1 framing on a blocking socket, shared by the test client and the test provider.
//!
//! Both sides of a test sit next to croupier, so this reader is strict on purpose: anything
//! croupier sends that a careful peer would reject (a bare LF, a bad chunk size, two different
//! `Content-Length` values) is an error here, and the test that met it fails with the reason.

use std::io::{self, Read};
use std::net::TcpStream;

/// Largest head (start line plus header fields) either side accepts. Far above anything a test
/// sends, so reaching it means the framing went wrong, not that a head was big.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;

/// Largest body either side buffers: several times the 10 MiB the biggest test moves.
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest chunk-size line or trailer line accepted inside a chunked body.
const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;

/// How much one `read` call asks the kernel for.
const READ_CHUNK_BYTES: usize = 64 * 1024;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A socket with a read buffer, so a head, a chunk line or a body can be taken from it whole.
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire { stream, buf: Vec::new(), start: 0 }
    }

    /// Bytes received but not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads once from the socket into the buffer; `Ok(0)` means the peer closed.
    pub fn fill(&mut self) -> io::Result<usize> {
        // Drop what was taken already, so the buffer holds only what is still wanted.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old_len = self.buf.len();
        self.buf.resize(old_len + READ_CHUNK_BYTES, 0);
        let result = self.stream.read(&mut self.buf[old_len..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old_len + n);
        result
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        debug_assert!(n <= self.buffered().len());
        let taken = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        taken
    }

    /// Reads one head, up to and including the empty line that ends it, exactly as it came.
    /// `Ok(None)` means the peer closed cleanly before the first byte of a new message.
    pub fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(at) = find(self.buffered(), b"\r\n\r\n") {
                return Ok(Some(self.take(at + 4)));
            }
            if self.buffered().len() > HEAD_BYTES_MAX {
                return Err(invalid(format!("head longer than {HEAD_BYTES_MAX} bytes")));
            }
            if self.fill()? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed inside a head ({} bytes)", self.buffered().len()),
                ));
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed after {} of {n} body bytes", self.buffered().len()),
                ));
            }
        }
        Ok(self.take(n))
    }

    /// Reads one line ended by CRLF and returns it without the CRLF.
    fn read_crlf_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = find(self.buffered(), b"\n") {
                let line = self.take(at + 1);
                if at == 0 || line[at - 1] != b'\r' {
                    return Err(invalid("line ended by a bare LF"));
                }
                return Ok(line[..at - 1].to_vec());
            }
            if self.buffered().len() > CHUNK_LINE_BYTES_MAX {
                return Err(invalid(format!("line longer than {CHUNK_LINE_BYTES_MAX} bytes")));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed in a line"));
            }
        }
    }

    /// Reads a chunked body (RFC 9112 §7.1) and returns the data with the framing removed.
    ///
    /// chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; last-chunk = 1*"0" [ chunk-ext ]
    /// CRLF; then trailer fields and the final CRLF.
    pub fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_crlf_line()?;
            let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size_text = String::from_utf8_lossy(size_text).trim_end().to_string();
            let valid = !size_text.is_empty()
                && size_text.len() <= 15
                && size_text.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(invalid(format!("bad chunk-size line {:?}", lossy(&line))));
            }
            let size = usize::from_str_radix(&size_text, 16).map_err(|e| invalid(e.to_string()))?;
            if size == 0 {
                break;
            }
            if body.len() + size > BODY_BYTES_MAX {
                return Err(invalid(format!("chunked body over {BODY_BYTES_MAX} bytes")));
            }
            body.extend_from_slice(&self.read_exact_vec(size)?);
            if self.read_exact_vec(2)? != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }

        // Trailer fields are allowed; this harness has no use for them.
        while !self.read_crlf_line()?.is_empty() {}
        Ok(body)
    }

    /// Reads until the peer closes: the framing of a response with neither length nor chunks.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buffered().len() > BODY_BYTES_MAX {
                return Err(invalid(format!("close-delimited body over {BODY_BYTES_MAX} bytes")));
            }
        }
        let n = self.buffered().len();
        Ok(self.take(n))
    }
}

/// Position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as text for messages; invalid UTF-8 shows as replacement characters.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits a raw head (ending in the empty line) into its start line and header fields.
pub fn parse_head(raw: &[u8]) -> io::Result<(String, Vec<(String, String)>)> {
    // Without the final CRLF every line, the start line included, ends in CRLF.
    let text = raw.strip_suffix(b"\r\n").ok_or_else(|| invalid("head without an end"))?;
    let mut lines = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(invalid(format!("head line not ended by CRLF {:?}", lossy(line))));
        };
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(invalid(format!("bare CR or LF inside head line {:?}", lossy(line))));
        }
        lines.push(line);
    }
    let Some((start, fields)) = lines.split_first() else {
        return Err(invalid("empty head"));
    };

    let mut headers = Vec::new();
    for line in fields {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(invalid(format!("header line without a colon {:?}", lossy(line))));
        };
        let name = lossy(&line[..colon]);
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(invalid(format!("bad header name {name:?}")));
        }
        let value = lossy(&line[colon + 1..]).trim_matches([' ', '\t']).to_string();
        headers.push((name, value));
    }
    Ok((lossy(start), headers))
}

/// The first value of header `name`, compared without case.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Whether any header `name` lists `token` (comma-separated, compared without case).
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the message is chunked: RFC 9112 §6.3 looks at the last transfer coding.
pub fn is_chunked(headers: &[(String, String)]) -> bool {
    let codings: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    codings.last().is_some_and(|c| c == "chunked")
}

/// The message's `Content-Length`, if any. Several differing values are an error (RFC 9112
/// §6.3 item 5), as is a value that is not a plain decimal number.
pub fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    let mut found: Option<usize> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("bad content-length {value:?}")));
            }
            let n: usize = part.parse().map_err(|_| invalid("content-length too big"))?;
            if found.is_some_and(|f| f != n) {
                return Err(invalid(format!("conflicting content-length values {value:?}")));
            }
            found = Some(n);
        }
    }
    if found.is_some_and(|n| n > BODY_BYTES_MAX) {
        return Err(invalid(format!("content-length over {BODY_BYTES_MAX} bytes")));
    }
    Ok(found)
}
