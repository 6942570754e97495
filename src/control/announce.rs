//! Reading announce and leave bodies.
//!
//! Everything a provider announces may later reach a log line or a header,
//! so every field is checked here, before the sequencer sees it, and a bad
//! one is refused with the field's name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::{Announce, HostSpec, Reply};

/// Longest topic name, in bytes. A topic is a header value; 255 bytes is
/// far more than any service name needs and keeps table keys small.
pub const TOPIC_BYTES_MAX: usize = 255;

/// Longest host name, in bytes (the DNS limit).
pub const HOST_BYTES_MAX: usize = 253;

/// Lease when an announce names none, in seconds: long enough to survive a
/// missed renewal at the example provider's 3 s interval, short enough that a
/// dead provider is gone quickly.
pub const TTL_DEFAULT_S: u64 = 10;

/// Shortest lease, in seconds: a shorter one would expire before a renewal
/// could travel. (A lease of 1e-300 s was accepted as zero before.)
pub const TTL_MIN_S: f64 = 0.1;

/// Longest lease, in seconds (one day). A longer lease would be a static
/// configuration in disguise.
pub const TTL_MAX_S: u64 = 86_400;

/// Largest weight: a ratio of a million to one between two providers is
/// already more than balancing can express.
pub const WEIGHT_MAX: f64 = 1_000_000.0;

/// A provider named by a leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    pub topic: String,
    pub host: HostSpec,
    pub port: u16,
    /// Stop new requests but let those in flight finish.
    pub drain: bool,
}

/// Parses an announce body. `peer` is the announcing connection's address,
/// used when the body names no host.
pub fn parse_announce(body: &[u8], peer: SocketAddr) -> Result<Announce, Reply> {
    let object = parse_object(body)?;
    let topic = topic_field(&object)?;
    let host = host_field(&object, peer)?;
    let port = port_field(&object)?;
    let ttl = match object.get("ttl") {
        None | Some(Value::Null) => Duration::from_secs(TTL_DEFAULT_S),
        Some(value) => {
            let seconds = value
                .as_f64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                .filter(|s| s.is_finite() && *s >= TTL_MIN_S && *s <= TTL_MAX_S as f64)
                .ok_or_else(|| {
                    bad(&format!("ttl: seconds from {TTL_MIN_S} to {TTL_MAX_S}"), "ttl")
                })?;
            Duration::from_secs_f64(seconds)
        }
    };
    let weight = match object.get("weight") {
        None | Some(Value::Null) => 1.0,
        Some(value) => value
            .as_f64()
            .filter(|w| w.is_finite() && *w > 0.0 && *w <= WEIGHT_MAX)
            .ok_or_else(|| bad(&format!("weight: above 0 and at most {WEIGHT_MAX}"), "weight"))?,
    };
    let max_inflight = match object.get("max_inflight") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
                .map(|m| m as u32)
                .ok_or_else(|| bad("max_inflight: a whole number from 1", "max_inflight"))?,
        ),
    };
    Ok(Announce { topic, host, port, ttl, weight, max_inflight })
}

/// Parses a leave body.
pub fn parse_leave(body: &[u8], peer: SocketAddr) -> Result<Leave, Reply> {
    let object = parse_object(body)?;
    let drain = match object.get("drain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(drain)) => *drain,
        Some(_) => return Err(bad("drain must be true or false", "drain")),
    };
    Ok(Leave {
        topic: topic_field(&object)?,
        host: host_field(&object, peer)?,
        port: port_field(&object)?,
        drain,
    })
}

/// RFC 9110 §5.6.2 token characters: what may stand in a header value
/// without quoting, and so what a topic may be made of.
pub fn is_token(text: &[u8]) -> bool {
    !text.is_empty()
        && text.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad("body must be a JSON object", "body")),
        Err(error) => Err(bad(&format!("body is not valid JSON: {error}"), "body")),
    }
}

fn topic_field(object: &serde_json::Map<String, Value>) -> Result<String, Reply> {
    let topic = match object.get("topic") {
        Some(Value::String(topic)) => topic,
        Some(_) => return Err(bad("topic must be a string", "topic")),
        None => return Err(bad("topic is missing", "topic")),
    };
    if topic.is_empty() {
        return Err(bad("topic is empty", "topic"));
    }
    if topic.len() > TOPIC_BYTES_MAX {
        return Err(bad(&format!("topic longer than {TOPIC_BYTES_MAX} bytes"), "topic"));
    }
    if !is_token(topic.as_bytes()) {
        return Err(bad(
            "topic must be a header token (letters, digits, !#$%&'*+-.^_`|~)",
            "topic",
        ));
    }
    Ok(topic.clone())
}

fn host_field(
    object: &serde_json::Map<String, Value>,
    peer: SocketAddr,
) -> Result<HostSpec, Reply> {
    let host = match object.get("host") {
        None | Some(Value::Null) => return Ok(HostSpec::Ip(peer.ip())),
        Some(Value::String(host)) => host.trim(),
        Some(_) => return Err(bad("host must be a string", "host")),
    };
    if host.is_empty() {
        return Ok(HostSpec::Ip(peer.ip()));
    }
    // `[::1]` is how people write IPv6 next to a port; accept it bare too.
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(HostSpec::Ip(ip));
    }
    let name_ok = host.len() <= HOST_BYTES_MAX
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !name_ok {
        return Err(bad("host must be an IP address or a DNS name", "host"));
    }
    Ok(HostSpec::Name(host.to_string()))
}

fn port_field(object: &serde_json::Map<String, Value>) -> Result<u16, Reply> {
    let port = match object.get("port") {
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => text.trim().parse::<u64>().ok(),
        Some(_) => None,
        None => return Err(bad("port is missing", "port")),
    };
    port.filter(|p| (1..=65_535).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| bad("port must be a number from 1 to 65535", "port"))
}

fn bad(reason: &str, field: &str) -> Reply {
    Reply::error(400, reason, Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.7:5555".parse().unwrap()
    }

    fn field_of(body: &str) -> String {
        let reply = parse_announce(body.as_bytes(), peer()).unwrap_err();
        assert_eq!(reply.status, 400);
        let value: Value = serde_json::from_str(&reply.body).unwrap();
        value["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_full_announce_and_defaults() {
        let a =
            parse_announce(br#"{"topic":"billing","host":"10.0.0.5","port":8008,"ttl":3}"#, peer())
                .unwrap();
        assert_eq!(a.host, HostSpec::Ip("10.0.0.5".parse().unwrap()));
        assert_eq!((a.port, a.ttl), (8008, Duration::from_secs(3)));
        let a = parse_announce(br#"{"topic":"billing","port":"8008"}"#, peer()).unwrap();
        assert_eq!(a.host, HostSpec::Ip(peer().ip()));
        assert_eq!(a.ttl, Duration::from_secs(TTL_DEFAULT_S));
    }

    #[test]
    fn the_prototypes_status_message_is_an_announce() {
        let body =
            br#"{"type":"producerStatus","topic":"t","host":"localhost","port":81,"requests":4}"#;
        let a = parse_announce(body, peer()).unwrap();
        assert_eq!(a.host, HostSpec::Name("localhost".into()));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of("[1]"), "body");
        assert_eq!(field_of(r#"{"port":80}"#), "topic");
        assert_eq!(field_of(r#"{"topic":"","port":80}"#), "topic");
        assert_eq!(field_of(&format!(r#"{{"topic":"{}","port":80}}"#, "a".repeat(256))), "topic");
        assert_eq!(field_of(r#"{"topic":"a b","port":80}"#), "topic");
        assert_eq!(field_of(r#"{"topic":"a\r\nx: y","port":80}"#), "topic");
        assert_eq!(field_of(r#"{"topic":"t"}"#), "port");
        assert_eq!(field_of(r#"{"topic":"t","port":0}"#), "port");
        assert_eq!(field_of(r#"{"topic":"t","port":70000}"#), "port");
        assert_eq!(field_of(r#"{"topic":"t","port":"80x"}"#), "port");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"host":"a\r\nb"}"#), "host");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"ttl":-1}"#), "ttl");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"ttl":1e9}"#), "ttl");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"ttl":1e-300}"#), "ttl");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"weight":0}"#), "weight");
        assert_eq!(field_of(r#"{"topic":"t","port":80,"max_inflight":0}"#), "max_inflight");
    }
}
