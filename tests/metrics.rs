//! `GET /_croupier/metrics` against known traffic: the real croupier, real providers, and the
//! exposition read by a real Prometheus text-format parser (`openmetrics-parser`, whose
//! Prometheus grammar rejects malformed lines, samples outside their family, repeated
//! families, histograms without `+Inf` or whose buckets are not cumulative).
//!
//! - `counts_match_known_traffic`: 300 forwarded requests over fresh and keep-alive
//!   connections, some with bodies, plus 7 without `croupier-topic` and 5 to an unknown topic;
//!   every counter is checked to the unit.
//! - `gauges_follow_requests_in_flight`: 3 requests held by a slow provider show up as 3 in
//!   flight, then as none.
//! - `control_events_are_counted`: announces, leaves and a lease expiry.
//! - `exposition_is_well_formed`: the content type, HELP and TYPE of every family, and a check
//!   that the parser does refuse a broken copy, so its acceptance means something.
//!
//! Values that the harness's own traffic also moves (the start-up health check, the scrapes)
//! are compared as deltas between two scrapes. What croupier counts, from its source:
//!
//! - a forwarded request is counted under its topic once it ended (`proxy/forward.rs`), with
//!   the received bytes being the raw head as the client sent it plus the body bytes croupier
//!   wrote upstream (for a chunked body, its chunked framing as received);
//! - a request croupier answers itself (control plane, 400 without topic, 503 for a topic it
//!   does not know) is counted under topic `""` by status class (`Worker::count_status`);
//! - a scrape's own 200 is counted after its snapshot was taken, so it shows in the next one.
//!
//! Run one driver with `cargo test --test metrics legacy`.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Behaviour, Conn, Croupier, Provider, Response, chunked_encoding, loopback, pattern};
use common::{request, request_bytes};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{
    HistogramValue, MetricFamily, MetricsExposition, PrometheusType, PrometheusValue,
};

on_both_drivers!(
    counts_match_known_traffic,
    gauges_follow_requests_in_flight,
    control_events_are_counted,
    exposition_is_well_formed,
);

/// The content type of the Prometheus text format, version 0.0.4.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A lease long enough to outlive any test.
const LEASE_S: u64 = 30;

/// How long the slow provider of the gauge test holds each request.
const SLOW_PROVIDER_MS: u64 = 1_000;

/// How long a test polls the metrics for a value it expects to appear (in-flight requests,
/// in-flight back at zero). Generous: the machine is shared.
const SETTLE_TIMEOUT_MS: u64 = 5_000;

/// The issue's bound for a `ttl: 1` lease to run out and be counted.
const LEASE_EXPIRY_BOUND_MS: u64 = 3_000;

/// Pause between a head and its body in the split-write requests, so croupier most likely
/// reads the head alone and streams the body (the path that is not replayable).
const SPLIT_PAUSE_MS: u64 = 5;

/// Pause between two scrapes of a polling loop.
const POLL_MS: u64 = 20;

/// Every family croupier documents, with its type.
const FAMILIES: [(&str, PrometheusType); 16] = [
    ("croupier_requests_total", PrometheusType::Counter),
    ("croupier_received_bytes_total", PrometheusType::Counter),
    ("croupier_sent_bytes_total", PrometheusType::Counter),
    ("croupier_retries_total", PrometheusType::Counter),
    ("croupier_ejections_total", PrometheusType::Counter),
    ("croupier_control_events_total", PrometheusType::Counter),
    ("croupier_connections_accepted_total", PrometheusType::Counter),
    ("croupier_connections_closed_total", PrometheusType::Counter),
    ("croupier_connections_refused_total", PrometheusType::Counter),
    ("croupier_rejected_requests_total", PrometheusType::Counter),
    ("croupier_open_connections", PrometheusType::Gauge),
    ("croupier_pooled_connections", PrometheusType::Gauge),
    ("croupier_provider_inflight", PrometheusType::Gauge),
    ("croupier_live_providers", PrometheusType::Gauge),
    ("croupier_request_duration_seconds", PrometheusType::Histogram),
    ("croupier_upstream_connect_seconds", PrometheusType::Histogram),
];

type Family = MetricFamily<PrometheusType, PrometheusValue>;

/// One scrape: the text as served and what the parser made of it.
struct Scrape {
    text: String,
    parsed: MetricsExposition<PrometheusType, PrometheusValue>,
}

impl Scrape {
    /// `GET /_croupier/metrics` on a fresh connection; anything but a 200 in the text format
    /// that the parser accepts fails the test.
    fn take(addr: SocketAddr) -> Scrape {
        let response = request(addr, "GET", "/_croupier/metrics", &[], b"");
        assert_eq!(response.status, 200, "metrics: {}", response.summary());
        assert_eq!(
            response.header("content-type"),
            Some(EXPOSITION_CONTENT_TYPE),
            "metrics: {}",
            response.summary()
        );
        Scrape::parse(response.body_text())
    }

    fn parse(text: String) -> Scrape {
        match parse_prometheus(&text) {
            Ok(parsed) => Scrape { text, parsed },
            Err(error) => panic!("the exposition does not parse ({error:?}):\n{text}"),
        }
    }

    fn family(&self, name: &str) -> &Family {
        self.parsed
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in the exposition:\n{}", self.text))
    }

    /// Every sample of family `name` with its labels (for a histogram, without `le`).
    fn samples(&self, name: &str) -> Vec<(BTreeMap<String, String>, &PrometheusValue)> {
        self.family(name)
            .iter_samples()
            .map(|sample| {
                let labels = sample
                    .get_labelset()
                    .expect("a parsed sample belongs to its family")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (labels, &sample.value)
            })
            .collect()
    }

    /// The value of the counter or gauge `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found = self.samples(name).into_iter().find(|(have, _)| *have == wanted)?;
        Some(match found.1 {
            PrometheusValue::Counter(counter) => counter.value.as_f64(),
            PrometheusValue::Gauge(number) | PrometheusValue::Unknown(number) => number.as_f64(),
            other => panic!("{name}{labels:?} is not a single number: {other:?}"),
        })
    }

    /// Like [`Scrape::value`], as a count: a series that is absent counts 0 (croupier leaves
    /// out status classes and in-flight rows that are 0).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let value = self.value(name, labels).unwrap_or(0.0);
        assert!(
            value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53),
            "{name}{labels:?} = {value} is not a count:\n{}",
            self.text
        );
        value as u64
    }

    /// The histogram `name` whose labels (other than `le`) are exactly `labels`.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> &HistogramValue {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found = self.samples(name).into_iter().find(|(have, _)| *have == wanted);
        match found {
            Some((_, PrometheusValue::Histogram(histogram))) => histogram,
            other => panic!("no histogram {name}{labels:?} ({other:?}):\n{}", self.text),
        }
    }

    /// The label values of `label` over the samples of family `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples(name)
            .into_iter()
            .filter_map(|(labels, _)| labels.get(label).cloned())
            .collect()
    }

    /// Sum of the gauge `name` over the samples whose label `label` is `value`.
    fn sum_where(&self, name: &str, label: &str, value: &str) -> u64 {
        self.samples(name)
            .into_iter()
            .filter(|(labels, _)| labels.get(label).map(String::as_str) == Some(value))
            .map(|(labels, _)| {
                let pairs: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.count(name, &pairs)
            })
            .sum()
    }
}

/// `after - before` of a counter, which must not go down.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    let (old, new) = (before.count(name, labels), after.count(name, labels));
    assert!(new >= old, "counter {name}{labels:?} went down from {old} to {new}");
    new - old
}

/// Checks a histogram's shape: buckets in increasing order of bound and non-decreasing
/// counts, ending in `+Inf`, whose count is the histogram's count.
fn assert_histogram_shape(histogram: &HistogramValue, what: &str) {
    let bounds: Vec<f64> = histogram.buckets.iter().map(|b| b.upper_bound).collect();
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{what}: bounds out of order: {bounds:?}");
    assert_eq!(bounds.last(), Some(&f64::INFINITY), "{what}: no +Inf bucket last: {bounds:?}");
    let counts: Vec<f64> = histogram.buckets.iter().map(|b| b.count.as_f64()).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{what}: not cumulative: {counts:?}");
    let count = histogram.count.unwrap_or_else(|| panic!("{what}: no _count"));
    assert_eq!(counts.last().copied(), Some(count as f64), "{what}: +Inf bucket != _count");
    assert!(histogram.sum.is_some(), "{what}: no _sum");
}

fn announce_ok(croupier: &Croupier, topic: &str, port: u16, ttl_s: u64) {
    let (status, reply) = croupier.announce(topic, port, ttl_s);
    assert_eq!(status, 200, "announce {topic} on port {port}: {reply}");
}

/// The bytes of a response as croupier wrote them, rebuilt from what the client parsed.
///
/// croupier writes a forwarded response head canonically (`http1/encode.rs`): the status
/// line with the provider's reason phrase, one `name: value` line per header in order, the
/// empty line. The test provider's reason phrase for a 200 is `OK`, and its header values
/// carry no white space for the client's parser to trim. So the rebuilt length is the exact
/// count of bytes on the wire for the 200s of these tests.
fn wire_len(response: &Response) -> u64 {
    assert_eq!(response.status, 200, "only 200s are rebuilt: {}", response.summary());
    let status_line = format!("{} {} OK\r\n", response.version, response.status).len();
    let headers: usize = response.headers.iter().map(|(n, v)| n.len() + 2 + v.len() + 2).sum();
    (status_line + headers + 2 + response.body.len()) as u64
}

/// The client side of case 1: what it sent and got per topic, and how many connections it
/// opened.
struct Traffic {
    addr: SocketAddr,
    connections: u64,
    /// Per topic: bytes of the requests the client sent (heads and bodies as written).
    client_sent: BTreeMap<&'static str, u64>,
    /// Per topic: bytes of the responses the client got, as [`wire_len`] rebuilds them.
    client_received: BTreeMap<&'static str, u64>,
    /// Per topic: requests that a provider answered.
    forwarded: BTreeMap<&'static str, u64>,
}

/// How a request's body is sent.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// `Content-Length`, written with the head.
    Fixed(usize),
    /// `Content-Length`, the head written first and the body after a pause.
    Split(usize),
    /// `Transfer-Encoding: chunked`, in chunks of varied sizes.
    Chunked(usize),
}

impl Traffic {
    fn open(&mut self) -> Conn {
        self.connections += 1;
        Conn::open(self.addr)
    }

    /// One request to `topic` on `conn`, which must be answered 200 by a provider.
    fn forward(&mut self, conn: &mut Conn, topic: &'static str, path: &str, body: Body) {
        let topic_header = ("croupier-topic", topic);
        let (head_and_body, data_len, split_at) = match body {
            Body::None => (request_bytes("GET", path, &[topic_header], b""), 0, None),
            Body::Fixed(len) => {
                (request_bytes("POST", path, &[topic_header], &pattern(len)), len, None)
            }
            Body::Split(len) => {
                let bytes = request_bytes("PUT", path, &[topic_header], &pattern(len));
                let head_len = bytes.len() - len;
                (bytes, len, Some(head_len))
            }
            Body::Chunked(len) => {
                let headers = [topic_header, ("transfer-encoding", "chunked")];
                let encoded = chunked_encoding(&pattern(len));
                (request_bytes("POST", path, &headers, &encoded), len, None)
            }
        };
        match split_at {
            Some(at) => {
                conn.send(&head_and_body[..at]);
                thread::sleep(Duration::from_millis(SPLIT_PAUSE_MS));
                conn.send(&head_and_body[at..]);
            }
            None => conn.send(&head_and_body),
        }
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{topic} {path} ({body:?}): {}", response.summary());
        if data_len > 0 {
            let len = response.header("x-body-len").unwrap_or_default();
            assert_eq!(len, data_len.to_string(), "{topic} {path}: {}", response.summary());
        }
        *self.client_sent.entry(topic).or_default() += head_and_body.len() as u64;
        *self.client_received.entry(topic).or_default() += wire_len(&response);
        *self.forwarded.entry(topic).or_default() += 1;
    }

    /// One request croupier answers itself with `status`; `topic` is `None` for no header.
    fn refused(&mut self, conn: &mut Conn, topic: Option<&str>, status: u16) {
        let headers: Vec<(&str, &str)> = topic.map(|t| ("croupier-topic", t)).into_iter().collect();
        let response = conn.roundtrip("GET", "/refused", &headers, b"");
        assert_eq!(response.status, status, "topic {topic:?}: {}", response.summary());
    }

    fn fresh(&mut self, topic: &'static str, path: &str, body: Body) {
        let mut conn = self.open();
        self.forward(&mut conn, topic, path, body);
    }

    fn fresh_refused(&mut self, topic: Option<&str>, status: u16) {
        let mut conn = self.open();
        self.refused(&mut conn, topic, status);
    }
}

/// Case 1. Known traffic, counted to the unit.
///
/// The fresh connections land on both cores' listeners (SO_REUSEPORT hashes each one), so
/// the sums cover both cores' cells; that 60-odd fresh connections all hash to one core is
/// out of the question.
fn counts_match_known_traffic(driver: &str) {
    let (a1, a2, b1) = (
        Provider::start(Behaviour::Echo),
        Provider::start(Behaviour::Echo),
        Provider::start(Behaviour::Echo),
    );
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, "a", a1.port(), LEASE_S);
    announce_ok(&croupier, "a", a2.port(), LEASE_S);
    announce_ok(&croupier, "b", b1.port(), LEASE_S);

    let before = Scrape::take(addr);
    // The three announces and at least one health check were 200s of croupier's own.
    assert!(before.count("croupier_requests_total", &[("topic", ""), ("class", "2xx")]) >= 4);
    assert_eq!(before.value("croupier_requests_total", &[("topic", "a"), ("class", "2xx")]), None);

    let mut traffic = Traffic {
        addr,
        connections: 0,
        client_sent: BTreeMap::new(),
        client_received: BTreeMap::new(),
        forwarded: BTreeMap::new(),
    };

    // Fresh connections, one request each, alternating topics: 30 to a, 40 to b.
    for i in 0..40 {
        if i < 30 {
            traffic.fresh("a", &format!("/a/fresh/{i}"), Body::None);
        }
        traffic.fresh("b", &format!("/b/fresh/{i}"), Body::None);
    }

    // Keep-alive connections, 50 requests each to a, with every kind of body; the refusals
    // ride on them too, since a refused request without a body keeps its connection.
    let mut keep_alive: Vec<Conn> = (0..3).map(|_| traffic.open()).collect();
    for i in 0..50 {
        for (c, conn) in keep_alive.iter_mut().enumerate() {
            let n = i * 3 + c;
            let body = match n % 5 {
                0 => Body::Fixed(1 + n * 97 % 4_000),
                1 => Body::Chunked(1 + n * 53 % 5_000),
                2 if n % 3 == 0 => Body::Split(100 + n),
                _ => Body::None,
            };
            traffic.forward(conn, "a", &format!("/a/keep/{c}/{i}"), body);
        }
        if i % 10 == 0 {
            // 5 times each: 4 without topic and 3 to an unknown topic on kept connections.
            if i < 40 {
                traffic.refused(&mut keep_alive[0], None, 400);
            }
            if i < 30 {
                traffic.refused(&mut keep_alive[1], Some("nosuch"), 503);
            }
        }
    }

    // 20 fresh connections with a 1000-byte body to a, one keep-alive connection with 60 to
    // b, and the rest of the refusals on fresh connections.
    for i in 0..20 {
        traffic.fresh("a", &format!("/a/upload/{i}"), Body::Fixed(1_000));
    }
    let mut conn = traffic.open();
    for i in 0..60 {
        let body = if i % 4 == 0 { Body::Fixed(10 + i) } else { Body::None };
        traffic.forward(&mut conn, "b", &format!("/b/keep/{i}"), body);
    }
    for _ in 0..3 {
        traffic.fresh_refused(None, 400);
    }
    for _ in 0..2 {
        traffic.fresh_refused(Some("nosuch"), 503);
    }
    assert_eq!(traffic.forwarded["a"], 200, "the test's own arithmetic");
    assert_eq!(traffic.forwarded["b"], 100, "the test's own arithmetic");

    let after = Scrape::take(addr);
    let requests = "croupier_requests_total";

    // Forwarded requests, under their topic, all 2xx.
    for (topic, sent) in [("a", 200), ("b", 100)] {
        assert_eq!(after.count(requests, &[("topic", topic), ("class", "2xx")]), sent, "{topic}");
        for class in ["other", "1xx", "3xx", "4xx", "5xx"] {
            let labels = [("topic", topic), ("class", class)];
            assert_eq!(after.value(requests, &labels), None, "{topic} {class}:\n{}", after.text);
        }
    }

    // croupier's own answers, under topic "": the first scrape's 200 (counted after its
    // snapshot), the 7 400s and the 5 503s; nothing else happened between the scrapes.
    let own = |class| [("topic", ""), ("class", class)];
    assert_eq!(delta(&before, &after, requests, &own("2xx")), 1, "the first scrape's 200");
    assert_eq!(delta(&before, &after, requests, &own("4xx")), 7, "400 without croupier-topic");
    assert_eq!(delta(&before, &after, requests, &own("5xx")), 5, "503 for an unknown topic");
    let reason = [("reason", "invalid_request")];
    let rejected = delta(&before, &after, "croupier_rejected_requests_total", &reason);
    assert_eq!(rejected, 7, "requests refused as the client's fault");

    // An unknown topic gets no series of its own: a client must not be able to make croupier
    // grow one per made-up name.
    let topics = after.label_values(requests, "topic");
    let expected: BTreeSet<String> = ["", "a", "b"].iter().map(|t| t.to_string()).collect();
    assert_eq!(topics, expected, "topics of croupier_requests_total");

    // Bytes: exactly what the client sent and what came back to it.
    for topic in ["a", "b"] {
        let labels = [("topic", topic)];
        let received = after.count("croupier_received_bytes_total", &labels);
        assert_eq!(received, traffic.client_sent[topic], "bytes received from clients for {topic}");
        let sent = after.count("croupier_sent_bytes_total", &labels);
        assert!(sent > 0, "no bytes sent for {topic}");
        assert_eq!(sent, traffic.client_received[topic], "bytes sent to clients for {topic}");
        assert_eq!(after.count("croupier_retries_total", &labels), 0, "retries for {topic}");
    }

    // Latency: one observation per forwarded request.
    let name = "croupier_request_duration_seconds";
    for (topic, sent) in [("a", 200), ("b", 100)] {
        let histogram = after.histogram(name, &[("topic", topic)]);
        assert_histogram_shape(histogram, &format!("{name} {topic}"));
        assert_eq!(histogram.count, Some(sent), "{name}_count {topic}");
        let inf = histogram.buckets.last().map(|b| b.count.as_f64());
        assert_eq!(inf, Some(sent as f64), "{name}_bucket{{le=\"+Inf\"}} {topic}");
        let sum = histogram.sum.map(|s| s.as_f64()).unwrap_or_default();
        assert!(sum > 0.0, "{name}_sum {topic} = {sum}");
    }
    let connect = after.histogram("croupier_upstream_connect_seconds", &[]);
    assert_histogram_shape(connect, "croupier_upstream_connect_seconds");
    let dials = connect.count.unwrap_or_default();
    assert!((2..=300).contains(&dials), "connects to providers: {dials}");

    // Connections: ours, plus the second scrape's own (the first was counted before).
    let accepted = delta(&before, &after, "croupier_connections_accepted_total", &[]);
    assert_eq!(accepted, traffic.connections + 1, "connections accepted");
    assert_eq!(delta(&before, &after, "croupier_connections_refused_total", &[]), 0);
    assert_connection_books_balance(&after);

    drop(keep_alive);
}

/// Each core counts a connection accepted, then either refused or open until it is closed,
/// and a scrape copies a core's cells between two of its tasks: so in any one scrape,
/// accepted = closed + open + refused.
fn assert_connection_books_balance(scrape: &Scrape) {
    let accepted = scrape.count("croupier_connections_accepted_total", &[]);
    let closed = scrape.count("croupier_connections_closed_total", &[]);
    let open = scrape.count("croupier_open_connections", &[]);
    let refused = scrape.count("croupier_connections_refused_total", &[]);
    assert_eq!(
        accepted,
        closed + open + refused,
        "accepted {accepted} != closed {closed} + open {open} + refused {refused}"
    );
    assert!(open >= 1, "the scrape's own connection is open");
}

/// Case 2. Requests held by a slow provider are in flight, per provider, then are not.
fn gauges_follow_requests_in_flight(driver: &str) {
    let slow = Provider::start(Behaviour::Sleep(SLOW_PROVIDER_MS));
    let idle = [Provider::start(Behaviour::Echo), Provider::start(Behaviour::Echo)];
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, "slow", slow.port(), LEASE_S);
    for provider in &idle {
        announce_ok(&croupier, "idle", provider.port(), LEASE_S);
    }

    let clients: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                conn.roundtrip("GET", &format!("/held/{i}"), &[("croupier-topic", "slow")], b"")
            })
        })
        .collect();

    // Poll until all three are in flight; each is held a whole second, so they overlap.
    let inflight = "croupier_provider_inflight";
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    let mut seen = Vec::new();
    let held = loop {
        let scrape = Scrape::take(addr);
        let sum = scrape.sum_where(inflight, "topic", "slow");
        seen.push(sum);
        if sum == 3 {
            break scrape;
        }
        assert!(Instant::now() < deadline, "in flight never reached 3; saw {seen:?}");
        thread::sleep(Duration::from_millis(POLL_MS));
    };
    let providers = held.label_values(inflight, "provider");
    let expected: BTreeSet<String> = [loopback(slow.port())].into_iter().collect();
    assert_eq!(providers, expected, "in-flight rows:\n{}", held.text);
    assert_eq!(held.label_values(inflight, "topic"), ["slow".to_string()].into());
    let live = "croupier_live_providers";
    assert_eq!(held.value(live, &[("topic", "slow")]), Some(1.0), "{}", held.text);
    assert_eq!(held.value(live, &[("topic", "idle")]), Some(2.0), "{}", held.text);
    assert_eq!(held.label_values(live, "topic").len(), 2, "{}", held.text);
    let open = held.count("croupier_open_connections", &[]);
    assert!(open >= 4, "3 held clients and the scrape, but {open} open connections");

    for client in clients {
        let response = client.join().expect("client thread panicked");
        assert_eq!(response.status, 200, "held request: {}", response.summary());
    }

    // The provider's slot is freed once the answer is relayed, which the client may see a
    // moment before croupier's bookkeeping: poll briefly.
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    loop {
        let scrape = Scrape::take(addr);
        let sum = scrape.sum_where(inflight, "topic", "slow");
        if sum == 0 {
            assert_eq!(scrape.value(live, &[("topic", "slow")]), Some(1.0), "{}", scrape.text);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {sum} in flight after the answers:\n{}",
            scrape.text
        );
        thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Case 3. Announces, leaves and expiries, counted once each; refused ones not at all.
fn control_events_are_counted(driver: &str) {
    let providers: Vec<Provider> = (0..4).map(|_| Provider::start(Behaviour::Echo)).collect();
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    let events = "croupier_control_events_total";
    let event = |name| [("event", name)];

    let before = Scrape::take(addr);
    for provider in &providers[..3] {
        announce_ok(&croupier, "events", provider.port(), LEASE_S);
    }
    let (status, reply) = croupier.leave("events", providers[1].port());
    assert_eq!(status, 200, "leave: {reply}");

    // A leave of a provider that is not there and a malformed announce change nothing.
    let (status, reply) = croupier.leave("events", providers[3].port());
    assert_eq!(status, 404, "leave of an unknown provider: {reply}");
    let (status, reply) = croupier.announce_raw(r#"{"topic":"events","port":"not a port"}"#);
    assert_eq!(status, 400, "malformed announce: {reply}");

    let after = Scrape::take(addr);
    assert_eq!(delta(&before, &after, events, &event("announce")), 3, "announces");
    assert_eq!(delta(&before, &after, events, &event("leave")), 1, "leaves");
    assert_eq!(delta(&before, &after, events, &event("expiry")), 0, "expiries");
    let live = after.value("croupier_live_providers", &[("topic", "events")]);
    assert_eq!(live, Some(2.0), "{}", after.text);

    // Each control request is one of croupier's own answers: the first scrape, 3 announces
    // and the leave were 200s, the failed leave and announce 4xx.
    let own = |class| [("topic", ""), ("class", class)];
    let requests = "croupier_requests_total";
    assert_eq!(delta(&before, &after, requests, &own("2xx")), 5, "own 200s");
    assert_eq!(delta(&before, &after, requests, &own("4xx")), 2, "own 4xx");

    // A one-second lease runs out and is counted once, within the bound.
    announce_ok(&croupier, "short", providers[3].port(), 1);
    let announced = Instant::now();
    let expired = loop {
        let scrape = Scrape::take(addr);
        if delta(&after, &scrape, events, &event("expiry")) > 0 {
            break scrape;
        }
        let waited_ms = announced.elapsed().as_millis();
        assert!(
            waited_ms < u128::from(LEASE_EXPIRY_BOUND_MS),
            "no expiry counted {waited_ms} ms after a ttl 1 announce:\n{}",
            scrape.text
        );
        thread::sleep(Duration::from_millis(POLL_MS));
    };
    assert_eq!(delta(&after, &expired, events, &event("expiry")), 1, "expiries");
    assert_eq!(delta(&after, &expired, events, &event("announce")), 1, "announces");
    assert_eq!(delta(&after, &expired, events, &event("leave")), 0, "leaves");
    let live = "croupier_live_providers";
    assert_eq!(expired.value(live, &[("topic", "short")]), None, "{}", expired.text);
    assert_eq!(expired.value(live, &[("topic", "events")]), Some(2.0), "{}", expired.text);
}

/// Case 4. The whole exposition is valid text format, every family documented and typed.
fn exposition_is_well_formed(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, "shape", provider.port(), LEASE_S);

    // Traffic enough that the labelled families have rows: a forwarded request, a refusal.
    let response = request(addr, "GET", "/x", &[("croupier-topic", "shape")], b"");
    assert_eq!(response.status, 200, "{}", response.summary());
    let response = request(addr, "GET", "/x", &[], b"");
    assert_eq!(response.status, 400, "{}", response.summary());

    // `Scrape::take` checks the status, the content type and that the parser accepts it all.
    let scrape = Scrape::take(addr);
    assert!(scrape.text.ends_with('\n'), "the last line is not ended:\n{}", scrape.text);
    assert!(!scrape.text.contains('\r'), "CR in the exposition:\n{}", scrape.text);

    // Every family croupier documents, with HELP and the right TYPE; and no other.
    for (name, kind) in FAMILIES {
        let family = scrape.family(name);
        assert_eq!(family.family_type, kind, "TYPE of {name}");
        assert!(!family.help.trim().is_empty(), "no HELP for {name}:\n{}", scrape.text);
    }
    let names: BTreeSet<&str> = scrape.parsed.families.keys().map(String::as_str).collect();
    let documented: BTreeSet<&str> = FAMILIES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, documented, "families in the exposition");

    // The parser groups samples under the HELP and TYPE before them, so a sample of another
    // name there would have failed it; this also checks each line by hand, so a family
    // written twice or a sample line in the wrong place is named.
    let mut documented_here = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in scrape.text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(documented_here.insert(name), "HELP for {name} twice");
            current = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert_eq!(Some(name), current, "TYPE line {line:?} not after its HELP");
        } else {
            let series = line.split(['{', ' ']).next().unwrap_or_default();
            let family = current.unwrap_or_else(|| panic!("sample before any HELP: {line:?}"));
            let suffix = series.strip_prefix(family).unwrap_or("?");
            assert!(
                ["", "_bucket", "_sum", "_count"].contains(&suffix),
                "sample {line:?} under family {family}"
            );
        }
    }

    // Check the parser is no rubber stamp: broken copies of this very text are refused.
    let broken = [
        (
            "a value that is no number",
            "croupier_ejections_total 0\n",
            "croupier_ejections_total x\n",
        ),
        (
            "a sample outside its family",
            "croupier_ejections_total 0\n",
            "croupier_ejections_total 0\ncroupier_stray 1\n",
        ),
        (
            "a histogram that is not cumulative",
            "croupier_request_duration_seconds_bucket{topic=\"shape\",le=\"+Inf\"} 1\n",
            "croupier_request_duration_seconds_bucket{topic=\"shape\",le=\"+Inf\"} 0\n",
        ),
    ];
    for (what, from, to) in broken {
        assert!(scrape.text.contains(from), "{what}: no {from:?} to change in:\n{}", scrape.text);
        let text = scrape.text.replacen(from, to, 1);
        assert!(parse_prometheus(&text).is_err(), "the parser accepted {what}");
    }
    let doubled = format!("{}{}", scrape.text, scrape.text);
    assert!(parse_prometheus(&doubled).is_err(), "the parser accepted every family twice");
}
