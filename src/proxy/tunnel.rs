//! Tunnelling an upgraded connection (WebSocket and the like).
//!
//! Once a provider answered `101 Switching Protocols` to a request that asked
//! for an upgrade, the connection no longer carries HTTP: croupier copies
//! bytes both ways until both sides are done. Not one byte of the upgraded
//! protocol goes through before the `101`: bytes the client sent early wait
//! in its buffer until then.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::buffer::{BufPool, Inbound};

/// Copies bytes between `client` and `upstream` until both directions have
/// ended. `from_client` and `from_upstream` hold bytes already read from each
/// side, which go first.
pub async fn run(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    from_client: &mut Inbound,
    from_upstream: &mut Inbound,
    bufs: &BufPool,
) -> io::Result<()> {
    let pending = from_upstream.data().len();
    from_upstream.write_front(client, pending).await?;
    let pending = from_client.data().len();
    from_client.write_front(upstream, pending).await?;

    // Each direction reads one socket and writes the other at the same
    // time as the opposite direction; a duplicate descriptor of each socket
    // lets the two copies own their halves.
    let mut client_writer = twin(client)?;
    let mut upstream_writer = twin(upstream)?;
    let up = copy(client, &mut upstream_writer, bufs.take());
    let down = copy(upstream, &mut client_writer, bufs.take());
    let (up, down) = monoio::join!(up, down);
    bufs.put(up.1);
    bufs.put(down.1);
    up.0.and(down.0)
}

/// A second `TcpStream` on the same socket.
fn twin(stream: &TcpStream) -> io::Result<TcpStream> {
    // SAFETY: dup returns a new descriptor for the same open socket, or -1;
    // on success the new descriptor is owned by nothing else, so the std
    // stream may take it over and close it when dropped.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is a fresh, owned socket descriptor.
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    TcpStream::from_std(std)
}

/// Copies until `from` ends, then ends the writing side of `to`, so the peer
/// sees the close as a half-close and can still answer.
async fn copy(
    from: &mut TcpStream,
    to: &mut TcpStream,
    mut buf: Vec<u8>,
) -> (io::Result<()>, Vec<u8>) {
    loop {
        buf.clear();
        let (read, returned) = from.read(buf).await;
        buf = returned;
        match read {
            Ok(0) => return (to.shutdown().await, buf),
            Ok(_) => {}
            Err(error) => {
                let _ = to.shutdown().await;
                return (Err(error), buf);
            }
        }
        let (written, returned) = to.write_all(buf).await;
        buf = returned;
        if let Err(error) = written {
            return (Err(error), buf);
        }
    }
}
