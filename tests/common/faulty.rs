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

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::SockRef;

use super::Recorded;
use super::provider::read_request;
use super::wire::{self, Wire};

/// Live connections one provider serves at once; more are closed on accept, so a leak in
/// croupier's pool shows as failures rather than as threads without end.
pub const CONNECTIONS_MAX: usize = 256;

/// Requests one connection serves before the provider closes it, so no loop is unbounded.
const REQUESTS_PER_CONNECTION_MAX: usize = 100_000;

/// How long an idle connection is kept before the provider closes it; longer than any test.
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How long a write may block before the provider gives up on the connection.
const WRITE_TIMEOUT_MS: u64 = 10_000;

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
    /// A second handle on each live connection, so `stop` can cut them.
    live: Mutex<HashMap<u64, TcpStream>>,
    stopping: AtomicBool,
    next_id: AtomicU64,
}

pub struct FaultyProvider {
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
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
            live: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("faulty-{port}"))
            .spawn(move || accept_loop(listener, for_thread))?;
        Ok(FaultyProvider { shared, accept_thread: Some(accept_thread) })
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
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };

        // The accept thread blocks in accept; a connect of our own wakes it to see the flag.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.shared.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        accept_thread.join().expect("faulty provider accept thread panicked");

        for (_, stream) in self.shared.live.lock().unwrap().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultyProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };

        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut live = shared.live.lock().unwrap();
            if live.len() >= CONNECTIONS_MAX {
                continue;
            }
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            live.insert(id, handle);
        }
        let for_thread = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("faulty-{}-conn-{id}", shared.port))
            .spawn(move || {
                serve(stream, &for_thread);
                // Dropping the second handle closes the socket for good: with SO_LINGER 0
                // set, that close is what sends the RST.
                for_thread.live.lock().unwrap().remove(&id);
            });
        if spawned.is_err() {
            shared.live.lock().unwrap().remove(&id);
        }
    }
    // Returning drops the listener: from here on connects are refused.
}

/// Serves one connection until the peer closes, the fault ends it, or framing breaks.
fn serve(stream: TcpStream, shared: &Shared) {
    let setup = stream
        .set_read_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))
        .and_then(|_| stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS))))
        .and_then(|_| stream.set_nodelay(true));
    if setup.is_err() {
        return;
    }
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
