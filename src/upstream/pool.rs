//! One core's pool of idle keep-alive connections to providers.
//!
//! Reusing a connection saves a handshake per request, which on loopback is
//! most of what a request costs. Connections are taken last-in first-out: the
//! most recently used one is the least likely to have been closed by the
//! provider's own idle timeout. Each idle connection is closed after
//! `idle_timeout`, which is shorter than common servers' keep-alive timeouts
//! so croupier, not the provider, is normally the side that closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

// foldhash, not std's SipHash: these maps are looked up several times per
// request, where SipHash was a tenth of croupier's own instructions; the
// hasher is still seeded per process.
use foldhash::HashMap;

use monoio::net::TcpStream;

/// Most idle connections kept per provider on one core. More than the
/// concurrency one core drives to one provider in practice; past it a
/// returned connection is closed.
pub const IDLE_PER_PROVIDER_MAX: usize = 256;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

pub struct Pool {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Self {
        Pool { idle: HashMap::default(), idle_timeout }
    }

    /// An idle connection to `provider` that has not outlived the idle
    /// timeout, if there is one.
    pub fn take(&mut self, provider: SocketAddr, now: Instant) -> Option<TcpStream> {
        let idle = self.idle.get_mut(&provider)?;
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout {
                return Some(entry.stream);
            }
            // Older than the timeout: every entry below it is older still.
            idle.clear();
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn put(&mut self, provider: SocketAddr, stream: TcpStream, now: Instant) {
        let idle = self.idle.entry(provider).or_default();
        if idle.len() < IDLE_PER_PROVIDER_MAX {
            idle.push(Idle { stream, since: now });
        }
    }

    /// Closes connections idle past the timeout, and forgets providers with
    /// none left. Called periodically so idle sockets do not linger.
    pub fn sweep(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.idle.retain(|_, idle| {
            idle.retain(|entry| now.saturating_duration_since(entry.since) < timeout);
            !idle.is_empty()
        });
    }

    /// Drops every idle connection to `provider` (it left or failed).
    pub fn forget(&mut self, provider: SocketAddr) {
        self.idle.remove(&provider);
    }

    /// Idle connections held, over all providers.
    pub fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
