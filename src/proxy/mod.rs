//! The data plane: client connections, forwarding, and body relays.
//!
//! [`connection`] reads heads and dispatches them, [`forward`] chooses
//! providers and retries, [`exchange`] runs one attempt, [`relay`] streams
//! bodies, and
//! [`buffer`] holds the owned buffers all of them pass around.

pub mod buffer;
pub mod connection;
pub mod exchange;
pub mod forward;
pub mod relay;
pub mod tunnel;
