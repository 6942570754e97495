//! croupier: a thread-per-core HTTP/1.1 proxy on io_uring that routes each
//! request by its `croupier-topic` header to one live provider of that topic.
//!
//! # Design
//!
//! - **Thread per core, shared nothing.** [`runtime`] starts one monoio
//!   runtime per core, pinned to a CPU, each with its own SO_REUSEPORT
//!   socket from [`listener`]. A request is served start to finish on the
//!   core that accepted it, touching only that core's state.
//! - **Replicated provider table.** Each core holds a replica of the table
//!   ([`router::table`]). The [`control`] plane orders every change
//!   (announce, leave, expiry, ejection) and broadcasts it to all cores; an
//!   announce is answered once every core has applied it.
//! - **Strict HTTP/1.** [`http1`] parses heads in place with httparse, makes
//!   every framing decision (RFC 9112) in one module, and writes forwarded
//!   heads canonically. A message that could be read two ways is refused.
//! - **No copies of bodies.** [`proxy`] moves owned buffers from the read to
//!   the write; [`upstream`] keeps a per-core pool of provider connections.
//! - **Per-core counters.** [`metrics`] are plain cells summed on read.
//! - **A sidecar for the rest.** [`sidecar`] is `croupier announce`, which
//!   announces a server that cannot announce itself, and leaves on exit.

pub mod config;
pub mod control;
pub mod error;
pub mod http1;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod runtime;
pub mod sidecar;
pub mod upstream;

/// The request header that names the topic a request is for.
pub const TOPIC_HEADER: &str = "croupier-topic";

/// The request header that sets a deadline, in milliseconds, for the whole
/// request including retries. croupier's own; never forwarded.
pub const TIMEOUT_HEADER: &str = "croupier-timeout-ms";
