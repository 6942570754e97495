//! `croupier announce`: the provider sidecar.
//!
//! It lets a server that knows nothing about croupier join a topic without a code change: run
//! it beside the server and it renews the server's lease on every croupier it was given,
//! `--every-ms` apart, with `POST /_croupier/announce`. On SIGTERM or SIGINT it sends
//! `POST /_croupier/leave` to each, so traffic stops at once rather than when the lease runs
//! out, and exits 0.
//!
//! The sidecar is not on the request path, so it is plain blocking std: a fresh connection per
//! control request, with connect, read and write timeouts. Each round talks to every croupier
//! at once, one scoped thread each, so a croupier that hangs delays its own renewal and no
//! other. Between rounds the main thread waits in `sigtimedwait` on the blocked stop signals
//! ([`crate::runtime::signals`]): that one call is both the interval and a prompt exit, with no
//! flag to poll.
//!
//! Logs (stderr): info when it starts and stops, and when a croupier takes an announce again
//! after failures; warn for each failed announce or leave (it keeps going); debug for a routine
//! renewal.
//!
//! TODO: it announces whether or not anything listens on `--port`; a check that the provider
//! is up before each announce is missing.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tracing::{debug, error, info, warn};

use crate::control::announce::{TOPIC_BYTES_MAX, TTL_MAX_S, WEIGHT_MAX, is_token, parse_announce};
use crate::runtime::signals::{self, StopSignals};

/// Connecting to a croupier. One on the same network accepts in well under this; a croupier
/// that does not is treated as down for this round.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Each read and write of a control request. croupier answers an announce only once every core
/// has applied it, which is quick but not instant on a busy machine.
pub const IO_TIMEOUT_MS: u64 = 2_000;

/// Shortest interval between announces, so a typo (`--every-ms 1`) cannot flood a croupier.
pub const EVERY_MS_MIN: u64 = 10;

/// Largest reply read from a croupier. Control replies are a line of JSON; anything longer is
/// not croupier talking.
const REPLY_BYTES_MAX: usize = 16 * 1024;

/// Header lines read in a reply; croupier sends about five.
const REPLY_HEADERS_MAX: usize = 32;

/// Characters of a refusal's reason kept for the log line.
const REASON_CHARS_MAX: usize = 200;

/// Announce a provider to croupier on an interval, and leave on exit.
///
/// Every option can also come from an environment variable: `CROUPIER_SIDECAR_<NAME>`, or
/// `CROUPIER_TOKEN` for the token.
#[derive(clap::Args, Debug, Clone)]
pub struct AnnounceArgs {
    /// Topic the provider serves (an HTTP token of at most 255 bytes).
    #[arg(long, env = "CROUPIER_SIDECAR_TOPIC", value_parser = parse_topic)]
    pub topic: String,

    /// Port the provider listens on.
    #[arg(long, env = "CROUPIER_SIDECAR_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Address croupier should send traffic to: an IP address or a DNS name
    /// [default: the address the announce comes from, as croupier sees it].
    #[arg(long, env = "CROUPIER_SIDECAR_HOST", value_parser = parse_host)]
    pub host: Option<String>,

    /// Milliseconds between two announces; keep it well under the lease.
    #[arg(
        long,
        default_value_t = 3_000,
        env = "CROUPIER_SIDECAR_EVERY_MS",
        value_parser = clap::value_parser!(u64).range(EVERY_MS_MIN..)
    )]
    pub every_ms: u64,

    /// Lease asked for in each announce, in seconds: how long croupier keeps the provider if
    /// the sidecar dies without leaving.
    #[arg(
        long,
        default_value_t = 10,
        env = "CROUPIER_SIDECAR_TTL_S",
        value_parser = clap::value_parser!(u64).range(1..=TTL_MAX_S)
    )]
    pub ttl_s: u64,

    /// Send `Authorization: Bearer <TOKEN>`, for a croupier started with `--token`.
    #[arg(long, env = "CROUPIER_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<String>,

    /// The provider's share of the topic's traffic, relative to the others [default: 1].
    #[arg(long, env = "CROUPIER_SIDECAR_WEIGHT", value_parser = parse_weight)]
    pub weight: Option<f64>,

    /// Most requests in flight to the provider; croupier skips it at the limit
    /// [default: unlimited].
    #[arg(
        long,
        env = "CROUPIER_SIDECAR_MAX_INFLIGHT",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_inflight: Option<u32>,

    /// Croupier to announce to, as http://HOST:PORT (several may be given; in the environment
    /// variable, separated by commas).
    #[arg(
        value_name = "URL",
        required = true,
        env = "CROUPIER_SIDECAR_URLS",
        value_delimiter = ',',
        value_parser = CroupierUrl::parse
    )]
    pub croupiers: Vec<CroupierUrl>,
}

impl AnnounceArgs {
    /// The announce body. Without `--host` the body names none, so croupier takes the
    /// announcing connection's peer address.
    fn announce_body(&self) -> String {
        let mut body = self.provider_fields();
        body.insert("ttl".into(), self.ttl_s.into());
        if let Some(weight) = self.weight {
            body.insert("weight".into(), weight.into());
        }
        if let Some(max_inflight) = self.max_inflight {
            body.insert("max_inflight".into(), max_inflight.into());
        }
        Value::Object(body).to_string()
    }

    /// The leave body: the same provider as the announce names.
    fn leave_body(&self) -> String {
        Value::Object(self.provider_fields()).to_string()
    }

    /// `topic`, `host` (when given) and `port`: what names a provider to croupier.
    fn provider_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("topic".into(), self.topic.clone().into());
        if let Some(host) = &self.host {
            fields.insert("host".into(), host.clone().into());
        }
        fields.insert("port".into(), self.port.into());
        fields
    }
}

/// Announces until a stop signal, then leaves every croupier. Exits 0 after a signal, 1 if the
/// signals cannot be set up.
pub fn run(args: AnnounceArgs) -> ExitCode {
    // Blocking again is harmless when main already did; doing it here keeps this function
    // usable on its own. It must happen before the first round starts threads.
    let signals = match signals::block() {
        Ok(signals) => signals,
        Err(error) => {
            error!(%error, "cannot set up signal handling");
            return ExitCode::from(1);
        }
    };

    let urls: Vec<&str> = args.croupiers.iter().map(|c| c.url.as_str()).collect();
    info!(
        topic = %args.topic,
        host = args.host.as_deref().unwrap_or("(the announcing address)"),
        port = args.port,
        croupiers = %urls.join(","),
        every_ms = args.every_ms,
        ttl_s = args.ttl_s,
        "announcing a provider"
    );
    if args.every_ms >= args.ttl_s.saturating_mul(1000) {
        warn!(
            every_ms = args.every_ms,
            ttl_s = args.ttl_s,
            "announces are not more frequent than the lease; it will lapse between them"
        );
    }

    let token = args.token.as_deref();
    let announce_body = args.announce_body();
    let mut targets: Vec<Target> = args.croupiers.iter().cloned().map(Target::new).collect();
    let every = Duration::from_millis(args.every_ms);
    let signal = loop {
        let round_started = Instant::now();
        on_every_target(&mut targets, |target| target.announce(&announce_body, token));
        if let Some(signal) = wait_until(&signals, round_started + every) {
            break signal;
        }
    };

    info!(signal, "stopping: leaving every croupier");
    let leave_body = args.leave_body();
    on_every_target(&mut targets, |target| target.leave(&leave_body, token));
    info!("stopped");
    ExitCode::SUCCESS
}

/// Waits for a stop signal until `deadline`. A signal that arrived during a round that ran
/// past the deadline is still seen: `wait_for` is called at least once, with no wait left.
fn wait_until(signals: &StopSignals, deadline: Instant) -> Option<i32> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(signal) = signals.wait_for(left) {
            return Some(signal);
        }
        // `wait_for` also returns early when another signal interrupts it.
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Runs `job` on every target at once and returns when all are done. Each target gets a scoped
/// thread, so a slow croupier costs the round at most its own timeouts, not the sum of all.
fn on_every_target(targets: &mut [Target], job: impl Fn(&mut Target) + Sync) {
    if let [only] = targets {
        return job(only);
    }
    let job = &job;
    thread::scope(|scope| {
        for target in targets.iter_mut() {
            let url = target.croupier.url.clone();
            let spawned = thread::Builder::new()
                .name("announce".into())
                .spawn_scoped(scope, move || job(target));
            if let Err(error) = spawned {
                warn!(croupier = %url, %error, "cannot start a thread; skipping this round");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// One croupier

/// One croupier from the command line, as `http://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CroupierUrl {
    /// As given, for the logs.
    pub url: String,
    /// `HOST:PORT`, for the `Host` header and for connecting. A name is resolved at each
    /// connect, so a croupier that moves to a new address is followed.
    pub authority: String,
}

impl CroupierUrl {
    /// Parses `http://HOST[:PORT][/]`; the port defaults to 80. Only plain http: croupier
    /// speaks no TLS.
    pub fn parse(url: &str) -> Result<CroupierUrl, String> {
        let authority = url
            .strip_prefix("http://")
            .ok_or("expected http://HOST:PORT (croupier speaks plain http)")?;
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err("expected http://HOST:PORT, with no path or user".into());
        }

        // A port follows the last colon, except inside a bracketed IPv6 address.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (authority, None),
        };
        if host.is_empty() || host == "[]" {
            return Err("the URL names no host".into());
        }
        let port = match port {
            Some(port) => port.parse::<u16>().map_err(|_| format!("bad port {port:?}"))?,
            None => 80,
        };
        Ok(CroupierUrl { url: url.to_string(), authority: format!("{host}:{port}") })
    }
}

/// A croupier and how announcing to it has gone lately.
struct Target {
    croupier: CroupierUrl,
    standing: Standing,
}

impl Target {
    fn new(croupier: CroupierUrl) -> Target {
        Target { croupier, standing: Standing::default() }
    }

    fn announce(&mut self, body: &str, token: Option<&str>) {
        let croupier = &self.croupier.url;
        match post(&self.croupier, "/_croupier/announce", token, body) {
            Ok(_) => match self.standing.succeeded(Instant::now()) {
                None => debug!(%croupier, "announced"),
                Some(Recovery { failures, failing_for }) => info!(
                    %croupier,
                    failures,
                    failing_for_ms = failing_for.as_millis() as u64,
                    "announced again after failures"
                ),
            },
            Err(failure) => {
                let failures = self.standing.failed(Instant::now());
                warn!(%croupier, failures, error = %failure, "announce failed; will retry");
            }
        }
    }

    fn leave(&self, body: &str, token: Option<&str>) {
        let croupier = &self.croupier.url;
        match post(&self.croupier, "/_croupier/leave", token, body) {
            Ok(_) => info!(%croupier, "left"),
            // The lease ran out already, or no announce ever got through: nothing to undo.
            Err(Failure::Refused { status: 404, .. }) => {
                info!(%croupier, "croupier no longer knew this provider")
            }
            Err(failure) => {
                warn!(%croupier, error = %failure, "leave failed; the lease will run out instead")
            }
        }
    }
}

/// Consecutive announce failures to one croupier, so that a recovery is logged once rather
/// than every renewal being logged.
#[derive(Debug, Default)]
struct Standing {
    /// How many announces in a row failed, and when the first of them did.
    failing: Option<(u32, Instant)>,
}

/// The end of a run of failed announces.
#[derive(Debug, PartialEq, Eq)]
struct Recovery {
    failures: u32,
    /// From the first failure of the run to the success that ended it.
    failing_for: Duration,
}

impl Standing {
    /// Records a taken announce; a recovery if the ones before it failed.
    fn succeeded(&mut self, now: Instant) -> Option<Recovery> {
        let (failures, since) = self.failing.take()?;
        Some(Recovery { failures, failing_for: now.saturating_duration_since(since) })
    }

    /// Records a failed announce; returns how many failed in a row now.
    fn failed(&mut self, now: Instant) -> u32 {
        let (failures, _) = self.failing.get_or_insert((0, now));
        *failures += 1;
        *failures
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to croupier

/// Why a control request did not get a 200.
#[derive(Debug)]
enum Failure {
    /// The name did not resolve, or no address accepted the connection.
    Connect(io::Error),
    /// A read or write waited past `IO_TIMEOUT_MS`.
    Timeout,
    /// The connection broke mid-exchange.
    Exchange(io::Error),
    /// What came back was not an HTTP/1.1 reply the sidecar can read.
    BadReply(String),
    /// croupier answered with another status; `reason` is from its JSON body.
    Refused { status: u16, reason: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "cannot connect: {error}"),
            Failure::Timeout => write!(f, "no reply within {IO_TIMEOUT_MS} ms"),
            Failure::Exchange(error) => write!(f, "connection broke: {error}"),
            Failure::BadReply(what) => write!(f, "unreadable reply: {what}"),
            Failure::Refused { status, reason } => {
                write!(f, "croupier answered {status}: {reason}")
            }
        }
    }
}

impl From<io::Error> for Failure {
    /// An error on an open connection. A timed-out read shows as EAGAIN, whose message would
    /// puzzle a reader of the logs, hence its own variant.
    fn from(error: io::Error) -> Failure {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Exchange(error),
        }
    }
}

/// A croupier's reply.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    body: String,
}

/// POSTs the JSON `body` to `path` on a fresh connection; anything but a 200 is a failure.
fn post(
    croupier: &CroupierUrl,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Reply, Failure> {
    let mut stream = connect(&croupier.authority).map_err(Failure::Connect)?;
    let io_timeout = Some(Duration::from_millis(IO_TIMEOUT_MS));
    stream.set_read_timeout(io_timeout)?;
    stream.set_write_timeout(io_timeout)?;

    // `Connection: close`: one request per connection, so the reply ends at the close if not
    // before, and no idle connection is left on croupier between rounds.
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        croupier.authority,
        body.len()
    );
    stream.write_all(request.as_bytes())?;

    let reply = read_reply(&mut stream)?;
    if reply.status == 200 {
        Ok(reply)
    } else {
        Err(Failure::Refused { status: reply.status, reason: reason_of(&reply.body) })
    }
}

/// Connects to the first address of `authority` that accepts.
fn connect(authority: &str) -> io::Result<TcpStream> {
    let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Reads until a whole reply is in. Each read takes at least one byte or ends the loop, and
/// the bytes are capped, so the loop is bounded.
fn read_reply(stream: &mut TcpStream) -> Result<Reply, Failure> {
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let closed = match stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                false
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        if let Some(reply) = parse_reply(&received, closed)? {
            return Ok(reply);
        }
        if received.len() > REPLY_BYTES_MAX {
            return Err(Failure::BadReply(format!("longer than {REPLY_BYTES_MAX} bytes")));
        }
    }
}

/// The reply in `bytes` if it is complete, `None` if more is to come. `closed` says the
/// connection ended after `bytes`. The body is framed by Content-Length, or by the close
/// (RFC 9112 §6.3, rules 6 and 8); croupier never sends a chunked control reply.
fn parse_reply(bytes: &[u8], closed: bool) -> Result<Option<Reply>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; REPLY_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if closed => {
            return Err(Failure::BadReply("closed before the end of the head".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(Failure::BadReply(format!("bad head: {error}"))),
    };
    let Some(status) = response.code else {
        return Err(Failure::BadReply("no status code".into()));
    };

    let content_length =
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let length = match content_length {
        Some(header) => Some(
            std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .ok_or_else(|| Failure::BadReply("bad Content-Length".into()))?,
        ),
        None => None,
    };
    let body = &bytes[head_len..];
    let body = match length {
        Some(length) if body.len() >= length => &body[..length],
        None if closed => body,
        _ if closed => return Err(Failure::BadReply("closed before the end of the body".into())),
        _ => return Ok(None),
    };
    Ok(Some(Reply { status, body: String::from_utf8_lossy(body).into_owned() }))
}

/// The `reason` of a croupier error body, or the start of the body if it has none; control
/// characters are dropped so a reply cannot forge log lines.
fn reason_of(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let reason = parsed.as_ref().and_then(|value| value.get("reason")?.as_str()).unwrap_or(body);
    reason.chars().filter(|c| !c.is_control()).take(REASON_CHARS_MAX).collect()
}

// ---------------------------------------------------------------------------------------------
// Command-line values

fn parse_topic(topic: &str) -> Result<String, String> {
    if topic.len() <= TOPIC_BYTES_MAX && is_token(topic.as_bytes()) {
        Ok(topic.to_string())
    } else {
        Err(format!(
            "a topic is 1 to {TOPIC_BYTES_MAX} bytes of letters, digits and !#$%&'*+-.^_`|~"
        ))
    }
}

/// Checks a host by the rules croupier applies to an announce, by running croupier's own
/// announce parser on a body that names it, so the two cannot drift apart and a typo fails
/// here, once, rather than every round.
fn parse_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("give an IP address or a DNS name, or leave --host out".into());
    }
    let probe = json!({"topic": "probe", "host": host, "port": 1}).to_string();
    let any_peer = SocketAddr::from(([127, 0, 0, 1], 0));
    match parse_announce(probe.as_bytes(), any_peer) {
        Ok(_) => Ok(host.to_string()),
        Err(reply) => Err(reason_of(&reply.body)),
    }
}

fn parse_weight(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|weight| weight.is_finite() && *weight > 0.0 && *weight <= WEIGHT_MAX)
        .ok_or_else(|| format!("a weight is a number above 0 and at most {WEIGHT_MAX}"))
}

/// A bearer token goes into a header line, so it must be visible ASCII with no spaces: a CR
/// or LF would end the header early.
fn parse_token(token: &str) -> Result<String, String> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(token.to_string())
    } else {
        Err("a token is visible ASCII characters, with no spaces".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(host: Option<&str>) -> AnnounceArgs {
        AnnounceArgs {
            topic: "billing".into(),
            port: 8008,
            host: host.map(str::to_string),
            every_ms: 3_000,
            ttl_s: 10,
            token: None,
            weight: None,
            max_inflight: None,
            croupiers: vec![CroupierUrl::parse("http://127.0.0.1:8000").unwrap()],
        }
    }

    #[test]
    fn urls_name_host_and_port() {
        let authority = |url: &str| CroupierUrl::parse(url).map(|c| c.authority);
        assert_eq!(authority("http://127.0.0.1:8000").unwrap(), "127.0.0.1:8000");
        assert_eq!(authority("http://croupier.internal/").unwrap(), "croupier.internal:80");
        assert_eq!(authority("http://[::1]:8000").unwrap(), "[::1]:8000");
        assert_eq!(authority("http://[::1]").unwrap(), "[::1]:80");
        for bad in [
            "https://127.0.0.1:8000",
            "127.0.0.1:8000",
            "http://",
            "http://:8000",
            "http://host:port",
            "http://host:70000",
            "http://host:8000/path",
            "http://user@host:8000",
        ] {
            assert!(CroupierUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn bodies_omit_the_host_when_none_is_given() {
        let announce: Value = serde_json::from_str(&args(None).announce_body()).unwrap();
        assert_eq!(announce, json!({"topic": "billing", "port": 8008, "ttl": 10}));
        let leave: Value = serde_json::from_str(&args(None).leave_body()).unwrap();
        assert_eq!(leave, json!({"topic": "billing", "port": 8008}));

        let mut full = args(Some("10.0.0.5"));
        full.weight = Some(2.5);
        full.max_inflight = Some(8);
        let announce: Value = serde_json::from_str(&full.announce_body()).unwrap();
        assert_eq!(
            announce,
            json!({"topic": "billing", "host": "10.0.0.5", "port": 8008, "ttl": 10,
                   "weight": 2.5, "max_inflight": 8})
        );
        let leave: Value = serde_json::from_str(&full.leave_body()).unwrap();
        assert_eq!(leave, json!({"topic": "billing", "host": "10.0.0.5", "port": 8008}));
    }

    #[test]
    fn bodies_pass_croupiers_own_parser() {
        let peer = SocketAddr::from(([192, 0, 2, 7], 5555));
        let mut full = args(Some("10.0.0.5"));
        full.weight = Some(2.5);
        full.max_inflight = Some(8);
        let announce = parse_announce(full.announce_body().as_bytes(), peer).unwrap();
        assert_eq!(
            (announce.port, announce.ttl, announce.max_inflight),
            (8008, Duration::from_secs(10), Some(8))
        );
        assert!(parse_announce(args(None).announce_body().as_bytes(), peer).is_ok());
    }

    #[test]
    fn recovery_is_reported_once() {
        let start = Instant::now();
        let later = start + Duration::from_millis(1_500);
        let mut standing = Standing::default();
        assert_eq!(standing.succeeded(start), None);
        assert_eq!(standing.failed(start), 1);
        assert_eq!(standing.failed(later), 2);
        assert_eq!(
            standing.succeeded(later),
            Some(Recovery { failures: 2, failing_for: Duration::from_millis(1_500) })
        );
        assert_eq!(standing.succeeded(later), None);
    }

    #[test]
    fn replies_are_framed_by_length_or_close() {
        let head = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n";
        let body = r#"{"result":"error","status":401,"reason":"no token"}"#;
        let whole = format!("{head}content-length: {}\r\n\r\n{body}", body.len());

        let reply = parse_reply(whole.as_bytes(), false).unwrap().unwrap();
        assert_eq!(reply, Reply { status: 401, body: body.into() });
        assert_eq!(reason_of(&reply.body), "no token");

        // Every cut short of the end is incomplete while open and an error once closed.
        for cut in [10, head.len(), whole.len() - 1] {
            assert!(parse_reply(&whole.as_bytes()[..cut], false).unwrap().is_none(), "cut {cut}");
            assert!(parse_reply(&whole.as_bytes()[..cut], true).is_err(), "cut {cut}");
        }

        let unframed = format!("{head}\r\n{body}");
        assert!(parse_reply(unframed.as_bytes(), false).unwrap().is_none());
        let reply = parse_reply(unframed.as_bytes(), true).unwrap().unwrap();
        assert_eq!(reply.body, body);

        assert!(parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        let bad_length = format!("{head}content-length: ten\r\n\r\n");
        assert!(parse_reply(bad_length.as_bytes(), false).is_err());
    }

    #[test]
    fn reasons_cannot_forge_log_lines() {
        assert_eq!(reason_of("not json\r\nWARN forged"), "not jsonWARN forged");
        assert_eq!(reason_of(&"x".repeat(1_000)).len(), REASON_CHARS_MAX);
    }

    #[test]
    fn command_line_values_follow_croupiers_rules() {
        assert!(parse_topic("billing-v2").is_ok());
        assert!(parse_topic("has space").is_err());
        assert!(parse_topic(&"t".repeat(TOPIC_BYTES_MAX + 1)).is_err());

        for good in ["10.0.0.5", "::1", "[::1]", "provider-3.internal"] {
            assert!(parse_host(good).is_ok(), "{good}");
        }
        for bad in ["", "not a host", "bad/host", "a\"b"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }

        assert_eq!(parse_weight("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "1e9", "x"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }

        assert!(parse_token("s3cret-._~+/=").is_ok());
        for bad in ["", "with space", "cr\rlf", "l\nf"] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }
}
