//! The upstream side: connections to providers.
//!
//! Each core dials and pools its own connections ([`pool`]); a connection is
//! never shared between cores, so nothing on this path needs a lock.

pub mod pool;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;

/// Dials a provider, giving up after `timeout`.
pub async fn connect(provider: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    // Dropping a connect that has not finished is safe: no data is at stake.
    let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(provider)).await {
        Ok(result) => result?,
        Err(_) => {
            let message = format!("connect timed out after {} ms", timeout.as_millis());
            return Err(io::Error::new(io::ErrorKind::TimedOut, message));
        }
    };
    // Heads and small bodies go out in one write each; Nagle would hold them.
    stream.set_nodelay(true)?;
    Ok(stream)
}
