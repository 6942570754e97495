//! The listening sockets: one per core, all on the same port.
//!
//! With SO_REUSEPORT the kernel spreads incoming connections over the cores'
//! sockets itself, so no core hands connections to another and the accept
//! path shares nothing.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per socket before refusing more.
/// Large, so a burst of `wrk` connections is not dropped at start.
pub const BACKLOG: i32 = 4096;

/// Why the listeners could not be set up.
#[derive(Debug)]
pub enum BindError {
    InUse(SocketAddr),
    Other(SocketAddr, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(addr) => write!(f, "port {} is already in use ({addr})", addr.port()),
            BindError::Other(addr, error) => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for BindError {}

/// Binds `count` listening sockets on `addr` with SO_REUSEPORT.
///
/// SO_REUSEPORT would also let this process share a port with another
/// process of the same user that set it too, silently splitting traffic with
/// it. So the port is first probed without the option, which fails if
/// anything listens there already.
pub fn bind_all(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, BindError> {
    let map = |error: io::Error| match error.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse(addr),
        _ => BindError::Other(addr, error),
    };
    drop(socket(addr, false, false).map_err(map)?);
    (0..count).map(|_| socket(addr, true, true).map(TcpListener::from).map_err(map)).collect()
}

fn socket(addr: SocketAddr, reuse_port: bool, listen: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR lets croupier restart while old connections sit in
    // TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(BACKLOG)?;
    }
    Ok(socket)
}
