//! Moving a body from one socket to the other.
//!
//! Each loop reads into the one buffer of the direction and writes the same
//! buffer out: the bytes are never copied in user space. A body of any size
//! streams through one buffer, so a 1 GiB upload costs 16 KiB of memory.

use std::io;
use std::time::Duration;

use monoio::net::TcpStream;

use super::buffer::{BUF_BYTES, Inbound, ReadError};
use crate::http1::chunked::{ChunkError, ChunkedDecoder};

/// Why a relay stopped before the end of the body.
#[derive(Debug)]
pub enum RelayError {
    /// The sending side closed the connection mid-body.
    SourceClosed,
    /// The sending side went silent for longer than the timeout.
    SourceTimedOut,
    Source(io::Error),
    /// Writing to the receiving side failed.
    Sink(io::Error),
    /// The chunked framing was invalid.
    Chunk(ChunkError),
    /// A chunked body carried more data than its limit.
    TooLarge,
}

/// How a chunked body leaves croupier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedOut {
    /// Byte for byte as received, once validated.
    AsReceived,
    /// Data only, for a receiver that cannot read chunked (HTTP/1.0).
    Decoded,
}

/// Relays exactly `length` bytes: those already in `inbound` first, then
/// reads that never ask for more than what is left of the body.
pub async fn fixed(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    inbound: &mut Inbound,
    length: u64,
    timeout: Duration,
) -> Result<(), RelayError> {
    let mut left = length;
    let buffered = (inbound.data().len() as u64).min(left) as usize;
    inbound.write_front(dst, buffered).await.map_err(RelayError::Sink)?;
    left -= buffered as u64;
    while left > 0 {
        let n = read(inbound.read_at_most(src, left, timeout).await)?;
        inbound.write_front(dst, n).await.map_err(RelayError::Sink)?;
        left -= n as u64;
    }
    Ok(())
}

/// Relays a chunked body up to and including its last CRLF; bytes after it
/// stay in `inbound` as the start of the next message. A body with more than
/// `data_max` bytes of data is cut off there.
#[allow(clippy::too_many_arguments, reason = "both sockets, the buffer and the limits")]
pub async fn chunked(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    inbound: &mut Inbound,
    out: ChunkedOut,
    data_max: Option<u64>,
    timeout: Duration,
) -> Result<(), RelayError> {
    let mut decoder = ChunkedDecoder::new();
    let mut data_total = 0u64;
    let mut count = |data: usize| {
        data_total += data as u64;
        match data_max {
            Some(max) if data_total > max => Err(RelayError::TooLarge),
            _ => Ok(()),
        }
    };
    loop {
        match out {
            ChunkedOut::AsReceived => {
                let data = inbound.data();
                let mut walked = 0;
                let mut done = false;
                while walked < data.len() && !done {
                    let step = decoder.decode(&data[walked..]).map_err(RelayError::Chunk)?;
                    count(step.data)?;
                    walked += step.consumed();
                    done = step.done;
                }
                inbound.write_front(dst, walked).await.map_err(RelayError::Sink)?;
                if done {
                    return Ok(());
                }
            }
            ChunkedOut::Decoded => {
                while !inbound.is_empty() {
                    let step = decoder.decode(inbound.data()).map_err(RelayError::Chunk)?;
                    count(step.data)?;
                    inbound.consume(step.framing);
                    inbound.write_front(dst, step.data).await.map_err(RelayError::Sink)?;
                    if step.done {
                        return Ok(());
                    }
                }
            }
        }
        debug_assert!(inbound.is_empty());
        read(inbound.read_more(src, BUF_BYTES, timeout).await)?;
    }
}

/// Relays until the sender closes: the close-delimited body of RFC 9112
/// §6.3 rule 8.
pub async fn until_close(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    inbound: &mut Inbound,
    timeout: Duration,
) -> Result<(), RelayError> {
    loop {
        let buffered = inbound.data().len();
        inbound.write_front(dst, buffered).await.map_err(RelayError::Sink)?;
        match inbound.read_more(src, BUF_BYTES, timeout).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(ReadError::TimedOut) => return Err(RelayError::SourceTimedOut),
            Err(ReadError::Io(error)) => return Err(RelayError::Source(error)),
        }
    }
}

/// A read in the middle of a body: end of stream is an error there.
fn read(result: Result<usize, ReadError>) -> Result<usize, RelayError> {
    match result {
        Ok(0) => Err(RelayError::SourceClosed),
        Ok(n) => Ok(n),
        Err(ReadError::TimedOut) => Err(RelayError::SourceTimedOut),
        Err(ReadError::Io(error)) => Err(RelayError::Source(error)),
    }
}
