//! The listening half every test provider shares: a thread that accepts on a
//! loopback port, one thread per connection (bounded), and a `stop` that
//! behaves like a killed process.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Most connections a test provider serves at once; more are closed on
/// accept. croupier's pool keeps a few per core, so this is only reached if
/// something leaks them, which then shows as failures, not endless threads.
pub const CONNECTIONS_MAX: usize = 256;

/// How long an idle connection is kept before the provider closes it; longer than any test.
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How long a write may block before the provider gives up on the connection.
const WRITE_TIMEOUT_MS: u64 = 10_000;

struct Live {
    port: u16,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// A second handle on every open connection, so `stop` can shut them.
    connections: Mutex<HashMap<u64, TcpStream>>,
}

/// A running accept loop.
pub struct Server {
    live: Arc<Live>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves every connection accepted on `listener` with `serve`, each on
    /// its own thread named after `name`.
    pub fn start<F>(listener: TcpListener, name: &str, serve: F) -> std::io::Result<Server>
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let port = listener.local_addr()?.port();
        let live = Arc::new(Live {
            port,
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        });
        let for_thread = Arc::clone(&live);
        let name = name.to_string();
        let accept_thread = thread::Builder::new()
            .name(format!("{name}-{port}"))
            .spawn(move || accept_loop(listener, for_thread, &name, Arc::new(serve)))?;
        Ok(Server { live, accept_thread: Some(accept_thread) })
    }

    pub fn port(&self) -> u16 {
        self.live.port
    }

    /// Stops like a killed process: the listener is closed, so new connects
    /// are refused, and every live connection is shut down.
    pub fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        // The accept thread blocks in accept; a connect of our own wakes it to see the flag.
        self.live.stopping.store(true, Ordering::SeqCst);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.live.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        accept_thread.join().expect("provider accept thread panicked");
        for (_, stream) in self.live.connections.lock().unwrap().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    live: Arc<Live>,
    name: &str,
    serve: Arc<dyn Fn(TcpStream) + Send + Sync>,
) {
    for stream in listener.incoming() {
        if live.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };

        let id = live.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut connections = live.connections.lock().unwrap();
            if connections.len() >= CONNECTIONS_MAX {
                continue;
            }
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            connections.insert(id, handle);
        }
        let (for_thread, serve) = (Arc::clone(&live), Arc::clone(&serve));
        let spawned = thread::Builder::new().name(format!("{name}-{}-conn-{id}", live.port)).spawn(
            move || {
                // Timeouts on every socket, so no provider thread can hang a test.
                let setup = stream
                    .set_read_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))
                    .and_then(|_| {
                        stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)))
                    })
                    .and_then(|_| stream.set_nodelay(true));
                if setup.is_ok() {
                    serve(stream);
                }
                // Dropping the second handle closes the socket for good (with
                // SO_LINGER 0 set, that close is what sends an RST).
                for_thread.connections.lock().unwrap().remove(&id);
            },
        );
        if spawned.is_err() {
            live.connections.lock().unwrap().remove(&id);
        }
    }
    // Returning drops the listener: from here on connects are refused.
}
