//! The control plane: announces, leaves, lease expiry and ejections.
//!
//! One thread, the sequencer ([`plane`]), owns the authoritative registry of
//! leases. Every change goes through it, gets a place in one total order, and
//! is broadcast to every core in that order, so the per-core replicas never
//! disagree about what happened first. Requests that change the table are
//! answered only when every core has applied the change: a client that saw
//! the `200` of an announce finds the provider on whichever core its next
//! connection lands.
//!
//! The sequencer is not on the request path; the cores never wait for it
//! while forwarding.

pub mod announce;
pub mod endpoints;
pub mod plane;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::router::table::TableChange;

/// What a control request gets back: a status and a JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply { status, body: value.to_string() }
    }

    /// The error shape every croupier error uses.
    pub fn error(status: u16, reason: &str, field: Option<&str>) -> Reply {
        let mut value =
            serde_json::json!({ "result": "error", "status": status, "reason": reason });
        if let Some(field) = field {
            value["field"] = field.into();
        }
        Reply::json(status, &value)
    }
}

/// A validated announce, before its host is resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Announce {
    pub topic: String,
    /// The announced host, or the announcing connection's peer address.
    pub host: HostSpec,
    pub port: u16,
    pub ttl: Duration,
    /// Share of traffic relative to the topic's other providers.
    pub weight: f64,
    /// Most requests in flight to it, per core.
    pub max_inflight: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSpec {
    Ip(IpAddr),
    /// A name, resolved once by the sequencer (resolution may block, which a
    /// core must never do).
    Name(String),
}

/// Messages to the sequencer.
#[derive(Debug)]
pub enum ControlMsg {
    Announce {
        announce: Announce,
        reply: flume::Sender<Reply>,
    },
    /// With `drain`, the provider only stops getting new requests; it is
    /// removed when its lease ends.
    Leave {
        topic: String,
        host: HostSpec,
        port: u16,
        drain: bool,
        reply: flume::Sender<Reply>,
    },
    /// Every core's view of every provider, for `GET /_croupier/providers`.
    Providers {
        reply: flume::Sender<Reply>,
    },
    /// A core failed to reach this provider.
    Failed {
        topic: Box<str>,
        provider: SocketAddr,
    },
    /// A core reached a provider that had been ejected: its back-off resets.
    Recovered {
        topic: Box<str>,
        provider: SocketAddr,
    },
    /// A core applied change `seq`.
    Applied {
        seq: u64,
    },
    /// Every core's counters, rendered for `GET /_croupier/metrics`.
    Scrape {
        reply: flume::Sender<Reply>,
    },
    /// A core's metrics, answering scrape `seq`.
    Metrics {
        seq: u64,
        snapshot: Box<crate::metrics::CoreSnapshot>,
    },
    /// A core's counters, answering report `seq`.
    Stats {
        seq: u64,
        rows: Vec<ProviderStats>,
    },
}

/// One core's counters for one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderStats {
    pub topic: Box<str>,
    pub provider: SocketAddr,
    pub requests: u64,
    pub inflight: u32,
}

/// Messages from the sequencer to each core.
#[derive(Debug)]
pub enum CoreMsg {
    Apply {
        seq: u64,
        change: TableChange,
    },
    Report {
        seq: u64,
    },
    Metrics {
        seq: u64,
    },
    /// Stop accepting, finish what is in flight, close idle connections
    /// (sent by the main thread on SIGTERM or SIGINT).
    Drain,
}
