//! Counters kept per core, summed when scraped.
//!
//! Each core counts into its own plain cells: no atomics, nothing shared
//! between cores on the request path. A scrape asks every core for a
//! [`CoreSnapshot`] (a copy of its counters that can cross threads), and
//! [`exposition`] adds them up into the Prometheus text format.

pub mod access_log;
pub mod exposition;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

// foldhash, not std's SipHash: these maps are looked up several times per
// request, where SipHash was a tenth of croupier's own instructions; the
// hasher is still seeded per process.
use foldhash::HashMap;

/// Upper bounds of the latency histograms' buckets, in seconds: from 100 µs
/// (a loopback hop) to 10 s (a request near the response timeout).
pub const BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with [`BUCKETS_S`], plus the `+Inf` bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the exposition adds up).
    pub counts: [u64; BUCKETS_S.len() + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BUCKETS_S.iter().position(|&le| seconds <= le).unwrap_or(BUCKETS_S.len());
        self.counts[bucket] += 1;
        self.sum_s += seconds;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }
}

/// One topic's counters on one core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicCounters {
    /// Responses by status class: index 1 for 1xx to 5 for 5xx.
    pub responses: [u64; 6],
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub retries: u64,
    /// From the end of the request head to the end of the response.
    pub latency: Histogram,
}

/// What one finished request adds to its topic's counters.
#[derive(Clone, Copy, Debug)]
pub struct RequestRecord {
    pub status: u16,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub retries: u32,
    pub latency: Duration,
}

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    topics: RefCell<HashMap<Rc<str>, TopicCounters>>,
    /// Responses to requests that named no known topic (control plane,
    /// refusals), by status class.
    untopical: RefCell<TopicCounters>,
    pub connections_accepted: Cell<u64>,
    pub connections_closed: Cell<u64>,
    /// Connections closed at once because the core was at its share of
    /// `--max-connections`.
    pub connections_refused: Cell<u64>,
    /// Requests refused before forwarding, by the rule or limit that
    /// refused them.
    rejected: RefCell<HashMap<&'static str, u64>>,
    connect: RefCell<Histogram>,
}

/// A copy of one core's counters and gauges, sent to the scraper.
#[derive(Clone, Debug, Default)]
pub struct CoreSnapshot {
    pub topics: Vec<(Box<str>, TopicCounters)>,
    pub untopical: TopicCounters,
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub connections_refused: u64,
    pub rejected: Vec<(&'static str, u64)>,
    pub connect: Histogram,
    pub open_connections: u64,
    pub pooled_connections: u64,
    /// In flight per provider: topic, provider address, requests.
    pub inflight: Vec<(Box<str>, String, u64)>,
}

fn class(status: u16) -> usize {
    match status / 100 {
        class @ 1..=5 => class as usize,
        _ => 0,
    }
}

impl CoreMetrics {
    /// A forwarded request is finished.
    pub fn request(&self, topic: &Rc<str>, record: RequestRecord) {
        let mut topics = self.topics.borrow_mut();
        let counters = match topics.get_mut(topic) {
            Some(counters) => counters,
            None => topics.entry(topic.clone()).or_default(),
        };
        counters.responses[class(record.status)] += 1;
        counters.received_bytes += record.received_bytes;
        counters.sent_bytes += record.sent_bytes;
        counters.retries += u64::from(record.retries);
        counters.latency.observe(record.latency);
    }

    /// croupier answered a request itself (control plane or a refusal).
    pub fn local_response(&self, status: u16) {
        self.untopical.borrow_mut().responses[class(status)] += 1;
    }

    pub fn rejected(&self, reason: &'static str) {
        *self.rejected.borrow_mut().entry(reason).or_default() += 1;
    }

    pub fn connected(&self, took: Duration) {
        self.connect.borrow_mut().observe(took);
    }

    /// Copies the counters; the gauges are the caller's to fill in.
    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            topics: self
                .topics
                .borrow()
                .iter()
                .map(|(k, v)| (Box::from(&**k), v.clone()))
                .collect(),
            untopical: self.untopical.borrow().clone(),
            connections_accepted: self.connections_accepted.get(),
            connections_closed: self.connections_closed.get(),
            connections_refused: self.connections_refused.get(),
            rejected: self.rejected.borrow().iter().map(|(k, v)| (*k, *v)).collect(),
            connect: self.connect.borrow().clone(),
            ..CoreSnapshot::default()
        }
    }
}

pub fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[5], 1);
        assert_eq!(h.counts[BUCKETS_S.len()], 1);
        assert_eq!(h.count, 4);
    }
}
