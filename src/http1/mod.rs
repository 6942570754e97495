//! The HTTP/1 codec: reading heads in place, deciding message framing, the
//! chunked coding, and writing canonical heads.
//!
//! Nothing here does I/O. The proxy hands these functions the bytes it read and
//! gets back parsed heads that borrow them, framing decisions, and encoded
//! heads to write. Keeping the protocol rules free of sockets is what lets them
//! be unit-tested and fuzzed exactly as they run.

pub mod chunked;
pub mod encode;
pub mod framing;
pub mod head;

pub use framing::BodyLength;

/// HTTP/1 minor version of a message; croupier speaks 1.0 and 1.1 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Why a head was refused. Each one maps to the status code the peer gets and
/// a short reason for the JSON body; every one of them closes the connection,
/// because after a head we could not read we no longer know where the next
/// message starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// httparse refused the syntax; the text says which part.
    Syntax(&'static str),
    /// A line ended in LF without CR (RFC 9112 §2.2 lets a server accept it;
    /// croupier does not, so no later hop can see a different line split).
    BareLf,
    /// `Content-Length` was not `1*DIGIT` or overflowed.
    InvalidLength,
    /// `Content-Length` appeared with different values.
    ConflictingLength,
    /// Both `Content-Length` and `Transfer-Encoding` were sent.
    LengthAndChunked,
    /// `Transfer-Encoding` other than exactly one `chunked`.
    UnsupportedTransferCoding,
    /// HTTP/1.0 does not have transfer codings (RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// HTTP/1.1 requests need exactly one Host (RFC 9112 §3.2).
    MissingHost,
    DuplicateHost,
    /// The request target is not origin-form, absolute-form or `*`.
    InvalidTarget,
    /// CONNECT tunnels are not something croupier offers.
    UnsupportedMethod,
    /// Only HTTP/1.0 and HTTP/1.1 are spoken.
    UnsupportedVersion,
    /// `croupier-timeout-ms` was not a positive whole number.
    InvalidTimeout,
    /// The request line is longer than the limit.
    RequestLineTooLong {
        limit_bytes: usize,
    },
    /// The whole head is larger than the limit.
    HeadTooLarge {
        limit_bytes: usize,
    },
    /// More header lines than the limit.
    TooManyHeaders {
        limit: usize,
    },
}

impl HeadError {
    /// The status a client gets for a request head refused for this reason.
    pub fn status(self) -> u16 {
        match self {
            HeadError::UnsupportedTransferCoding | HeadError::UnsupportedMethod => 501,
            HeadError::UnsupportedVersion => 505,
            HeadError::RequestLineTooLong { .. } => 414,
            HeadError::HeadTooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
            _ => 400,
        }
    }

    /// A short, lowercase reason for logs and JSON bodies.
    pub fn reason(self) -> String {
        match self {
            HeadError::Syntax(what) => format!("malformed head: {what}"),
            HeadError::BareLf => "line ends in LF without CR".into(),
            HeadError::InvalidLength => "invalid content-length".into(),
            HeadError::ConflictingLength => "conflicting content-length values".into(),
            HeadError::LengthAndChunked => {
                "both content-length and transfer-encoding present".into()
            }
            HeadError::UnsupportedTransferCoding => {
                "unsupported transfer-encoding: only a single `chunked` is accepted".into()
            }
            HeadError::TransferEncodingInHttp10 => {
                "transfer-encoding in an HTTP/1.0 message".into()
            }
            HeadError::MissingHost => "HTTP/1.1 request without host".into(),
            HeadError::DuplicateHost => "more than one host header".into(),
            HeadError::InvalidTarget => "invalid request target".into(),
            HeadError::UnsupportedMethod => "method not supported by croupier".into(),
            HeadError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported".into(),
            HeadError::InvalidTimeout => {
                "croupier-timeout-ms must be a positive number of milliseconds".into()
            }
            HeadError::RequestLineTooLong { limit_bytes } => {
                format!("request line longer than {limit_bytes} bytes")
            }
            HeadError::HeadTooLarge { limit_bytes } => {
                format!("header block larger than {limit_bytes} bytes")
            }
            HeadError::TooManyHeaders { limit } => format!("more than {limit} header fields"),
        }
    }

    /// The name of the limit that tripped, for the JSON body and metrics.
    pub fn limit_name(self) -> Option<&'static str> {
        match self {
            HeadError::RequestLineTooLong { .. } => Some("request_line_bytes_max"),
            HeadError::HeadTooLarge { .. } => Some("header_bytes_max"),
            HeadError::TooManyHeaders { .. } => Some("headers_max"),
            _ => None,
        }
    }
}
