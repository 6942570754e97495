//! A streaming, validating decoder for the chunked transfer coding.
//!
//! croupier forwards a chunked body as it arrived, byte for byte, but only the
//! bytes this decoder has walked over and accepted, and it stops exactly at the
//! end of the message so that whatever follows is read as the next message.
//! The decoder never copies: it tells the caller how many bytes of framing and
//! of data lie at the front of its input, and the caller moves the buffers.
//!
//! The grammar (RFC 9112 §7.1), with croupier's stricter reading:
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG        ; at most 16 digits, no sign, no "0x"
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! - A size line needs at least one digit. httparse's `parse_chunk_size`
//!   reads an empty line as size 0, which would end a body early for us and
//!   not for the next hop; this decoder refuses it.
//! - Every line ends in CRLF; a bare LF anywhere is an error.
//! - Extensions are skipped, not interpreted, and bounded.
//! - The trailer section is bounded.

/// Longest chunk extension, in bytes, on one size line. Nobody uses
/// extensions in practice; the bound stops a peer streaming an endless line.
pub const CHUNK_EXT_BYTES_MAX: usize = 4 * 1024;

/// Largest trailer section, in bytes. Trailers are rare and small (a checksum,
/// a status); the head limit would be far more than they need.
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;

/// At most 16 hex digits: exactly what fits in a u64, so a size never
/// overflows.
const SIZE_DIGITS_MAX: u8 = 16;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line with no hex digit at its start.
    MissingSize,
    /// More than 16 hex digits.
    SizeTooLong,
    /// A byte that cannot follow the size (a sign, an `x`, a control byte).
    InvalidSize,
    /// An extension longer than [`CHUNK_EXT_BYTES_MAX`].
    ExtensionTooLong,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BadLineEnd,
    /// The CRLF after a chunk's data was missing.
    MissingDataEnd,
    /// The trailer section exceeded [`TRAILER_BYTES_MAX`].
    TrailersTooLarge,
    /// A byte not allowed in a trailer field line.
    InvalidTrailer,
}

impl ChunkError {
    pub fn reason(self) -> &'static str {
        match self {
            ChunkError::MissingSize => "chunk size line without digits",
            ChunkError::SizeTooLong => "chunk size longer than 16 hex digits",
            ChunkError::InvalidSize => "invalid byte in chunk size",
            ChunkError::ExtensionTooLong => "chunk extension longer than 4096 bytes",
            ChunkError::BadLineEnd => "chunked framing line not ended by CRLF",
            ChunkError::MissingDataEnd => "chunk data not followed by CRLF",
            ChunkError::TrailersTooLarge => "trailer section larger than 16384 bytes",
            ChunkError::InvalidTrailer => "invalid byte in trailer section",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a size line; `digits` read so far.
    Size {
        digits: u8,
        size: u64,
    },
    /// Inside the extension of a size line; `bytes` of it read so far.
    Extension {
        size: u64,
        bytes: usize,
    },
    /// Read the CR that ends a size line.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    /// After chunk data, expecting its CR and then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerLineStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Read the CR of a trailer field line.
    TrailerLf,
    /// Read the CR of the final empty line.
    FinalLf,
    /// The whole body has been read.
    Done,
}

/// What lies at the front of the input given to [`ChunkedDecoder::decode`]:
/// first `framing` bytes of size lines, CRLFs and trailers, then `data` bytes
/// of chunk data. `done` says the body ended after these bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub framing: usize,
    pub data: usize,
    pub done: bool,
}

impl Step {
    /// Bytes of input this step accounts for.
    pub fn consumed(&self) -> usize {
        self.framing + self.data
    }
}

#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size { digits: 0, size: 0 }, trailer_bytes: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks the framing at the front of `input` up to the next run of data
    /// (or the end of the body, or of the input), then over as much of that
    /// data as `input` holds. Call it again on the rest of the input.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            if let State::Data { left } = self.state {
                let data = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - data as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                return Ok(Step { framing: at, data, done: false });
            }
            if self.state == State::Done {
                break;
            }
            self.state = self.framing_byte(input[at])?;
            at += 1;
        }
        Ok(Step { framing: at, data: 0, done: self.state == State::Done })
    }

    /// Advances the state machine over one byte outside chunk data.
    fn framing_byte(&mut self, byte: u8) -> Result<State, ChunkError> {
        let next = match self.state {
            State::Size { digits, size } => match hex_value(byte) {
                Some(value) if digits < SIZE_DIGITS_MAX => {
                    State::Size { digits: digits + 1, size: size << 4 | u64::from(value) }
                }
                Some(_) => return Err(ChunkError::SizeTooLong),
                None if digits == 0 => return Err(ChunkError::MissingSize),
                None => match byte {
                    b'\r' => State::SizeLf { size },
                    // RFC 9112 §7.1.1 allows white space before the `;` of an
                    // extension; the extension itself is skipped.
                    b';' | b' ' | b'\t' => State::Extension { size, bytes: 1 },
                    b'\n' => return Err(ChunkError::BadLineEnd),
                    _ => return Err(ChunkError::InvalidSize),
                },
            },
            State::Extension { size, bytes } => match byte {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkError::BadLineEnd),
                0..=8 | 10..=31 | 127 => return Err(ChunkError::InvalidSize),
                _ if bytes >= CHUNK_EXT_BYTES_MAX => return Err(ChunkError::ExtensionTooLong),
                _ => State::Extension { size, bytes: bytes + 1 },
            },
            State::SizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerLineStart,
                b'\n' => State::Data { left: size },
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::MissingDataEnd),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { digits: 0, size: 0 },
                _ => return Err(ChunkError::MissingDataEnd),
            },
            State::TrailerLineStart => match byte {
                b'\r' => State::FinalLf,
                // A trailer line starting with white space would be obs-fold.
                b'\n' | b' ' | b'\t' => return Err(ChunkError::InvalidTrailer),
                _ => self.trailer_byte(byte)?,
            },
            State::TrailerLine => match byte {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ChunkError::BadLineEnd),
                _ => self.trailer_byte(byte)?,
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerLineStart,
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::FinalLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::Data { .. } | State::Done => {
                unreachable!("decode handles data and the end before framing bytes")
            }
        };
        Ok(next)
    }

    fn trailer_byte(&mut self, byte: u8) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_BYTES_MAX {
            return Err(ChunkError::TrailersTooLarge);
        }
        if byte == 0 || byte == 127 || (byte < 32 && byte != b'\t') {
            return Err(ChunkError::InvalidTrailer);
        }
        Ok(State::TrailerLine)
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the data and
    /// how many bytes belonged to the body.
    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut offset = 0;
        while offset < input.len() && !decoder.is_done() {
            let end = (offset + piece).min(input.len());
            let mut window = &input[offset..end];
            while !window.is_empty() {
                let step = decoder.decode(window)?;
                data.extend_from_slice(&window[step.framing..step.consumed()]);
                offset += step.consumed();
                window = &window[step.consumed()..];
                if step.done {
                    return Ok((data, offset));
                }
                if step.consumed() == 0 {
                    break;
                }
            }
        }
        assert!(decoder.is_done(), "body incomplete");
        Ok((data, offset))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\nA;name=value\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for piece in 1..body.len() {
            let (data, used) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(data, b"hello0123456789");
            assert_eq!(used, end, "piece {piece}");
        }
    }

    #[test]
    fn empty_body_and_many_zeroes() {
        assert_eq!(decode_in_pieces(b"0\r\n\r\n", 64).unwrap().1, 5);
        assert_eq!(decode_in_pieces(b"000\r\n\r\n", 64).unwrap().1, 7);
    }

    #[test]
    fn refuses_what_httparse_would_accept() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\n", ChunkError::MissingSize),
            (b";x\r\n", ChunkError::MissingSize),
            (b"5;a\nhello\r\n0\r\n\r\n", ChunkError::BadLineEnd),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhelloX\r\n", ChunkError::MissingDataEnd),
            (b"0x5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"+5\r\nhello\r\n", ChunkError::MissingSize),
            (b"-5\r\n", ChunkError::MissingSize),
            (b"11111111111111111\r\n", ChunkError::SizeTooLong),
            (b"0\r\n\n", ChunkError::InvalidTrailer),
            (b"0\r\nx: y\n\r\n", ChunkError::BadLineEnd),
            (b"0\r\n\r\r", ChunkError::BadLineEnd),
            (b"0\r\n folded\r\n\r\n", ChunkError::InvalidTrailer),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_in_pieces(input, 64).unwrap_err(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn sixteen_digits_fit() {
        let mut decoder = ChunkedDecoder::new();
        let step = decoder.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(step, Step { framing: 18, data: 2, done: false });
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', CHUNK_EXT_BYTES_MAX));
        long_ext.extend_from_slice(b"\r\n");
        assert_eq!(decode_in_pieces(&long_ext, 512).unwrap_err(), ChunkError::ExtensionTooLong);
        let mut long_trailer = b"0\r\nx: ".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', TRAILER_BYTES_MAX));
        long_trailer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_in_pieces(&long_trailer, 512).unwrap_err(), ChunkError::TrailersTooLarge);
    }
}
