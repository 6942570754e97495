//! Fuzzes the announce and leave body parsers.
//!
//! The bodies come from anyone who can reach the control port, so no input
//! may panic. What is accepted must also be safe to use later: a topic and a
//! host name end up in header values and log lines, so they must be within
//! their limits and made of the characters the parser promises; a lease
//! must be within its limit.

#![no_main]

use std::net::SocketAddr;

use croupier::control::HostSpec;
use croupier::control::announce::{
    HOST_BYTES_MAX, TOPIC_BYTES_MAX, TTL_MAX_S, is_token, parse_announce, parse_leave,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let peer: SocketAddr = "192.0.2.7:5555".parse().expect("a literal address");

    if let Ok(announce) = parse_announce(body, peer) {
        check_fields(&announce.topic, &announce.host, announce.port);
        assert!(announce.ttl.as_secs_f64() <= TTL_MAX_S as f64, "{:?}", announce.ttl);
    }
    if let Ok(leave) = parse_leave(body, peer) {
        check_fields(&leave.topic, &leave.host, leave.port);
    }
});

fn check_fields(topic: &str, host: &HostSpec, port: u16) {
    assert!(topic.len() <= TOPIC_BYTES_MAX && is_token(topic.as_bytes()), "{topic:?}");
    assert_ne!(port, 0);
    if let HostSpec::Name(name) = host {
        let name_ok = !name.is_empty()
            && name.len() <= HOST_BYTES_MAX
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        assert!(name_ok, "{name:?}");
    }
}
