//! The command line, and the settings every core reads.
//!
//! Every option can also come from an environment variable `CROUPIER_<NAME>`,
//! so a container can be configured without a wrapper script. Limits carry
//! their unit in their name; each default says why it is what it is.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::http1::head::HeadLimits;
use crate::router::cidr::Cidr;

/// Which io driver each core's runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll.
    Legacy,
}

/// What `croupier <COMMAND>` runs instead of the proxy.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Announce a provider to croupier on an interval, and leave on exit.
    Announce(crate::sidecar::AnnounceArgs),
}

/// A thread-per-core HTTP/1.1 proxy that routes requests by their
/// `croupier-topic` header to providers that announce themselves.
#[derive(Clone, Debug, Parser)]
// `args_conflicts_with_subcommands`: `croupier 8000` runs the proxy as before, and a
// subcommand takes none of the proxy's options.
#[command(
    name = "croupier",
    version,
    about,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TCP port to listen on.
    #[arg(default_value_t = 8000, env = "CROUPIER_PORT")]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "CROUPIER_HOST")]
    pub host: IpAddr,

    /// Worker threads, one runtime each, pinned to CPUs in turn [default: the CPUs available].
    #[arg(long, env = "CROUPIER_CORES", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cores: Option<u16>,

    /// The io driver: io_uring, epoll ("legacy"), or io_uring falling back to epoll.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto, env = "CROUPIER_DRIVER")]
    pub driver: DriverChoice,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG overrides.
    #[arg(long, default_value = "info", env = "CROUPIER_LOG_LEVEL")]
    pub log_level: String,

    /// Require `Authorization: Bearer <TOKEN>` on announce and leave.
    #[arg(long, env = "CROUPIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Only accept providers whose address lies in one of these networks (repeatable),
    /// e.g. 10.0.0.0/8. Without it, any address but unspecified, multicast, broadcast and
    /// link-local ones.
    #[arg(
        long = "allow-provider",
        value_name = "CIDR",
        env = "CROUPIER_ALLOW_PROVIDER",
        value_delimiter = ','
    )]
    pub allow_provider: Vec<Cidr>,

    /// Largest request body in bytes; larger ones get 413 [default: unlimited].
    #[arg(long, env = "CROUPIER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,

    /// Longest request line in bytes (414 past it).
    #[arg(long, default_value_t = 8 * 1024, env = "CROUPIER_REQUEST_LINE_BYTES_MAX")]
    pub request_line_bytes_max: usize,

    /// Largest request or response head in bytes (431 past it).
    #[arg(long, default_value_t = 32 * 1024, env = "CROUPIER_HEADER_BYTES_MAX")]
    pub header_bytes_max: usize,

    /// Time from a request's first byte to the end of its head, in ms (408 past it).
    #[arg(long, default_value_t = 10_000, env = "CROUPIER_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: u64,

    /// How long an idle client keep-alive connection is kept, in ms.
    #[arg(long, default_value_t = 60_000, env = "CROUPIER_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: u64,

    /// Time allowed to connect to a provider, in ms.
    #[arg(long, default_value_t = 2_000, env = "CROUPIER_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: u64,

    /// Time a provider has to start its response, and between reads of it, in ms (504 past it).
    #[arg(long, default_value_t = 30_000, env = "CROUPIER_RESPONSE_TIMEOUT_MS")]
    pub response_timeout_ms: u64,

    /// How long data croupier sent may stay unacknowledged (a peer that stopped
    /// reading, or vanished) before the connection is dropped, in ms. Kept by the kernel
    /// (TCP_USER_TIMEOUT), so it costs nothing per write; 60 s as nginx's send_timeout.
    #[arg(long, default_value_t = 60_000, env = "CROUPIER_SEND_TIMEOUT_MS")]
    pub send_timeout_ms: u64,

    /// How long an idle pooled connection to a provider is kept, in ms. Shorter than the
    /// keep-alive timeouts of common servers (5 s in Node.js), so croupier closes first
    /// and rarely writes into a connection the provider is closing.
    #[arg(long, default_value_t = 4_000, env = "CROUPIER_POOL_IDLE_TIMEOUT_MS")]
    pub pool_idle_timeout_ms: u64,

    /// Most open client connections for the whole process, split evenly over the cores.
    #[arg(long, default_value_t = 65_536, env = "CROUPIER_MAX_CONNECTIONS")]
    pub max_connections: usize,

    /// Extra attempts on other providers after a connect failure (so 2 means 3 tries).
    #[arg(long, default_value_t = 2, env = "CROUPIER_RETRIES")]
    pub retries: u32,

    /// Most requests in flight to one provider from one core; a provider at its limit is
    /// skipped, and when every provider is, the client gets 503 with Retry-After at once
    /// [default: unlimited].
    #[arg(long, env = "CROUPIER_MAX_INFLIGHT_PER_PROVIDER")]
    pub max_inflight_per_provider: Option<u32>,

    /// Write one line per request to this file, or to standard output with `-`
    /// [default: no access log].
    #[arg(long, value_name = "PATH|-", env = "CROUPIER_ACCESS_LOG")]
    pub access_log: Option<crate::metrics::access_log::Destination>,

    /// Do not add X-Forwarded-For, X-Forwarded-Proto and Via to forwarded requests.
    #[arg(long, env = "CROUPIER_NO_FORWARDED_HEADERS")]
    pub no_forwarded_headers: bool,

    /// On SIGTERM or SIGINT, how long in-flight requests get to finish before croupier
    /// exits anyway, in ms. A second signal exits at once.
    #[arg(long, default_value_t = 10_000, env = "CROUPIER_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: u64,

    /// Most topics the table holds (507 past it).
    #[arg(long, default_value_t = 4_096, env = "CROUPIER_TOPICS_MAX")]
    pub topics_max: usize,

    /// Most providers one topic holds (507 past it).
    #[arg(long, default_value_t = 1_024, env = "CROUPIER_PROVIDERS_PER_TOPIC_MAX")]
    pub providers_per_topic_max: usize,
}

impl Config {
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            request_line_bytes_max: self.request_line_bytes_max,
            header_bytes_max: self.header_bytes_max,
        }
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_idle_timeout_ms)
    }
}
