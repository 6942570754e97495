//! Providers that misbehave on purpose, for the resilience tests.
//!
//! [`super::Provider`] is a well-behaved server. A [`FaultyProvider`] does what a sick one
//! does: it resets connections after reading a request, or holds each request for a while. It
//! counts how many requests it holds at once (the throttling tests assert the most it ever
//! held), and it can be started on a port the test names, so a provider that was stopped can
//! come back at the same address.
//!
//! Like [`super::Provider`], it runs one thread per connection and records every request,
//! before acting on it, so a test that has its response also sees the record.

use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socket2::SockRef;

use super::Recorded;
use super::provider::read_request;
use super::server::Server;
use super::wire::{self, Wire};

/// Requests one connection serves before the provider closes it, so no loop is unbounded.
const REQUESTS_PER_CONNECTION_MAX: usize = 100_000;

/// What a faulty provider does with each request it reads.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Holds the request this many milliseconds, then answers `200` with body
    /// `provider <port>` (0 makes a plain, healthy provider).
    Answer { delay_ms: u64 },
    /// Reads the whole request, records it, then resets the connection (an RST, through
    /// `SO_LINGER` 0) without sending a byte: a crash after the request was taken.
    ResetAfterRequest,
}

struct Shared {
    port: u16,
    fault: Fault,
    requests: Mutex<Vec<Recorded>>,
    /// Requests read and not yet answered.
    inflight: AtomicUsize,
    /// The most `inflight` ever was.
    inflight_max: AtomicUsize,
    /// Set by `stop`: a connection ends after the request it is on.
    stopping: AtomicBool,
}

pub struct FaultyProvider {
    shared: Arc<Shared>,
    server: Server,
}

impl FaultyProvider {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start(fault: Fault) -> FaultyProvider {
        FaultyProvider::start_on(0, fault).expect("bind a faulty provider port")
    }

    /// Binds 127.0.0.1:`port` (0 for any) and starts serving. Binding a port another provider
    /// just gave up can fail while the old sockets linger, so the error is the caller's.
    pub fn start_on(port: u16, fault: Fault) -> io::Result<FaultyProvider> {
        // std sets SO_REUSEADDR on Unix, so connections of a stopped provider in TIME_WAIT
        // do not keep its port from being bound again.
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            port,
            fault,
            requests: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            inflight_max: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let server = Server::start(listener, "faulty", move |stream| serve(stream, &for_thread))?;
        Ok(FaultyProvider { shared, server })
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Every request read so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Requests read and not yet answered, now.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    /// The most requests this provider ever held at once.
    pub fn inflight_max(&self) -> usize {
        self.shared.inflight_max.load(Ordering::SeqCst)
    }

    /// Stops like a killed process: the listener is closed, so new connects are refused, and
    /// every live connection is shut down. Recorded requests stay readable.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.server.stop();
    }
}

/// Serves one connection until the peer closes, the fault ends it, or framing breaks.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut wire = Wire::new(stream);

    for _ in 0..REQUESTS_PER_CONNECTION_MAX {
        let Ok(Some(request)) = read_request(&mut wire) else {
            return;
        };
        let close = wire::has_token(&request.headers, "connection", "close");

        // Counted as held from the moment it is read, so a test polling `inflight` knows
        // the request arrived.
        let held = shared.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.inflight_max.fetch_max(held, Ordering::SeqCst);
        shared.requests.lock().unwrap().push(request);

        let answered = match shared.fault {
            Fault::Answer { delay_ms } => {
                thread::sleep(Duration::from_millis(delay_ms));
                answer(&mut wire.stream, shared.port, close)
            }
            Fault::ResetAfterRequest => {
                // The RST goes out when the last handle on the socket closes.
                let _ = SockRef::from(&wire.stream).set_linger(Some(Duration::ZERO));
                Err(io::Error::other("reset on purpose"))
            }
        };
        shared.inflight.fetch_sub(1, Ordering::SeqCst);
        if answered.is_err() || close || shared.stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn answer(stream: &mut TcpStream, port: u16, close: bool) -> io::Result<()> {
    let body = format!("provider {port}");
    let connection = if close { "connection: close\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         x-provider-port: {port}\r\n{connection}\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}
