//! The upstream side: connections to providers.
//!
//! Each core dials and pools its own connections ([`pool`]); a connection is
//! never shared between cores, so nothing on this path needs a lock.

pub mod pool;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::TcpStream;

/// Dials a provider, giving up after `timeout`; data sent on the connection
/// may stay unacknowledged for `send_timeout` before the kernel drops it.
pub async fn connect(
    provider: SocketAddr,
    timeout: Duration,
    send_timeout: Duration,
) -> io::Result<TcpStream> {
    // Dropping a connect that has not finished is safe: no data is at stake.
    // The timer is boxed: inline, its 640 bytes (128-byte aligned) would be
    // part of every request's future, though most requests find a pooled
    // connection and never dial.
    let timed = monoio::time::timeout(timeout, TcpStream::connect_addr(provider));
    let stream = match Box::pin(timed).await {
        Ok(result) => result?,
        Err(_) => {
            let message = format!("connect timed out after {} ms", timeout.as_millis());
            return Err(io::Error::new(io::ErrorKind::TimedOut, message));
        }
    };
    // Heads and small bodies go out in one write each; Nagle would hold them.
    stream.set_nodelay(true)?;
    set_send_timeout(&stream, send_timeout)?;
    Ok(stream)
}

/// Sets TCP_USER_TIMEOUT: how long sent data may stay unacknowledged (the
/// peer stopped reading, or is gone) before the kernel drops the connection.
/// It also bounds zero-window probing, so a peer that reads nothing at all is
/// dropped too, with no timer in croupier and no cost per write.
pub fn set_send_timeout(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow;
    // the option call neither closes nor keeps it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).set_tcp_user_timeout(Some(timeout))
}
