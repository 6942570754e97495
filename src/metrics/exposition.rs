//! The Prometheus text exposition format (version 0.0.4) of croupier's
//! counters, summed over the cores.
//!
//! Written here rather than with a metrics crate because the counters live
//! in per-core cells and are only added up at scrape time; a crate's
//! registry would want shared atomic counters on the request path, which is
//! what the per-core design avoids. The format is small: `# HELP`, `# TYPE`,
//! then one `name{labels} value` line per series.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{BUCKETS_S, CoreSnapshot, Histogram, TopicCounters};

/// What the control plane itself counts.
#[derive(Clone, Debug, Default)]
pub struct ControlCounters {
    pub announces: u64,
    pub leaves: u64,
    pub expiries: u64,
    pub ejections: u64,
    /// Live (not ejected, not draining) providers per topic.
    pub live_providers: Vec<(String, u64)>,
}

const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Renders every metric.
pub fn render(cores: &[CoreSnapshot], control: &ControlCounters) -> String {
    let mut topics: BTreeMap<&str, TopicCounters> = BTreeMap::new();
    for core in cores {
        for (name, counters) in &core.topics {
            let total = topics.entry(name).or_default();
            for (sum, add) in total.responses.iter_mut().zip(counters.responses) {
                *sum += add;
            }
            total.received_bytes += counters.received_bytes;
            total.sent_bytes += counters.sent_bytes;
            total.retries += counters.retries;
            total.latency.merge(&counters.latency);
        }
    }
    let sum = |f: fn(&CoreSnapshot) -> u64| cores.iter().map(f).sum::<u64>();
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "croupier_requests_total",
        "counter",
        "Responses sent to clients, by topic and status class.",
    );
    for (topic, counters) in &topics {
        classes(&mut out, topic, &counters.responses);
    }
    let mut untopical = [0u64; 6];
    for core in cores {
        for (sum, add) in untopical.iter_mut().zip(core.untopical.responses) {
            *sum += add;
        }
    }
    classes(&mut out, "", &untopical);

    header(
        &mut out,
        "croupier_received_bytes_total",
        "counter",
        "Bytes received from clients, by topic.",
    );
    for (topic, counters) in &topics {
        line(
            &mut out,
            "croupier_received_bytes_total",
            &[("topic", topic)],
            counters.received_bytes,
        );
    }
    header(&mut out, "croupier_sent_bytes_total", "counter", "Bytes sent to clients, by topic.");
    for (topic, counters) in &topics {
        line(&mut out, "croupier_sent_bytes_total", &[("topic", topic)], counters.sent_bytes);
    }
    header(
        &mut out,
        "croupier_retries_total",
        "counter",
        "Requests sent again to another provider, by topic.",
    );
    for (topic, counters) in &topics {
        line(&mut out, "croupier_retries_total", &[("topic", topic)], counters.retries);
    }

    header(&mut out, "croupier_ejections_total", "counter", "Providers ejected after a failure.");
    line(&mut out, "croupier_ejections_total", &[], control.ejections);
    header(
        &mut out,
        "croupier_control_events_total",
        "counter",
        "Announces, leaves and lease expiries.",
    );
    line(&mut out, "croupier_control_events_total", &[("event", "announce")], control.announces);
    line(&mut out, "croupier_control_events_total", &[("event", "leave")], control.leaves);
    line(&mut out, "croupier_control_events_total", &[("event", "expiry")], control.expiries);

    let connections = [
        (
            "croupier_connections_accepted_total",
            "Client connections accepted.",
            sum(|c| c.connections_accepted),
        ),
        (
            "croupier_connections_closed_total",
            "Client connections closed.",
            sum(|c| c.connections_closed),
        ),
        (
            "croupier_connections_refused_total",
            "Client connections closed at once at the --max-connections limit.",
            sum(|c| c.connections_refused),
        ),
    ];
    for (name, help, value) in connections {
        header(&mut out, name, "counter", help);
        line(&mut out, name, &[], value);
    }

    header(
        &mut out,
        "croupier_rejected_requests_total",
        "counter",
        "Requests refused before forwarding, by reason.",
    );
    let mut rejected: BTreeMap<&str, u64> = BTreeMap::new();
    for core in cores {
        for (reason, count) in &core.rejected {
            *rejected.entry(reason).or_default() += count;
        }
    }
    for (reason, count) in rejected {
        line(&mut out, "croupier_rejected_requests_total", &[("reason", reason)], count);
    }

    header(&mut out, "croupier_open_connections", "gauge", "Client connections open now.");
    line(&mut out, "croupier_open_connections", &[], sum(|c| c.open_connections));
    header(
        &mut out,
        "croupier_pooled_connections",
        "gauge",
        "Idle provider connections in the pools.",
    );
    line(&mut out, "croupier_pooled_connections", &[], sum(|c| c.pooled_connections));
    header(&mut out, "croupier_provider_inflight", "gauge", "Requests in flight, by provider.");
    let mut inflight: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for core in cores {
        for (topic, provider, count) in &core.inflight {
            *inflight.entry((topic, provider)).or_default() += count;
        }
    }
    for ((topic, provider), count) in inflight {
        line(
            &mut out,
            "croupier_provider_inflight",
            &[("topic", topic), ("provider", provider)],
            count,
        );
    }
    header(&mut out, "croupier_live_providers", "gauge", "Providers that get traffic, by topic.");
    for (topic, count) in &control.live_providers {
        line(&mut out, "croupier_live_providers", &[("topic", topic)], *count);
    }

    let name = "croupier_request_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "From the end of the request head to the end of the response.",
    );
    for (topic, counters) in &topics {
        histogram(&mut out, name, &[("topic", topic)], &counters.latency);
    }
    let mut connect = Histogram::default();
    for core in cores {
        connect.merge(&core.connect);
    }
    let name = "croupier_upstream_connect_seconds";
    header(&mut out, name, "histogram", "Time to connect to a provider.");
    histogram(&mut out, name, &[], &connect);
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn classes(out: &mut String, topic: &str, responses: &[u64; 6]) {
    for (class, count) in CLASSES.iter().zip(responses) {
        if *count > 0 {
            line(out, "croupier_requests_total", &[("topic", topic), ("class", class)], *count);
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
    let mut cumulative = 0;
    for (le, count) in BUCKETS_S.iter().zip(histogram.counts) {
        cumulative += count;
        let le = le.to_string();
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        line(out, &format!("{name}_bucket"), &with_le, cumulative);
    }
    let mut with_le = labels.to_vec();
    with_le.push(("le", "+Inf"));
    line(out, &format!("{name}_bucket"), &with_le, histogram.count);
    let _ = writeln!(out, "{name}_sum{} {}", label_set(labels), histogram.sum_s);
    line(out, &format!("{name}_count"), labels, histogram.count);
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let _ = writeln!(out, "{name}{} {value}", label_set(labels));
}

/// `{a="x",b="y"}` with values escaped as the format requires.
fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut set = String::from("{");
    for (index, (name, value)) in labels.iter().enumerate() {
        if index > 0 {
            set.push(',');
        }
        let _ = write!(set, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => set.push_str("\\\\"),
                '"' => set.push_str("\\\""),
                '\n' => set.push_str("\\n"),
                c => set.push(c),
            }
        }
        set.push('"');
    }
    set.push('}');
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sums_cores_and_renders_histograms() {
        let mut a = CoreSnapshot::default();
        let mut counters = TopicCounters::default();
        counters.responses[2] = 3;
        counters.latency.observe(Duration::from_millis(2));
        a.topics.push(("billing".into(), counters.clone()));
        let mut b = CoreSnapshot::default();
        b.topics.push(("billing".into(), counters));
        let text = render(&[a, b], &ControlCounters::default());
        assert!(
            text.contains("croupier_requests_total{topic=\"billing\",class=\"2xx\"} 6\n"),
            "{text}"
        );
        assert!(text.contains(
            "croupier_request_duration_seconds_bucket{topic=\"billing\",le=\"0.001\"} 0\n"
        ));
        assert!(text.contains(
            "croupier_request_duration_seconds_bucket{topic=\"billing\",le=\"0.0025\"} 2\n"
        ));
        assert!(text.contains("croupier_request_duration_seconds_count{topic=\"billing\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_set(&[("a", "x\"y\\z")]), "{a=\"x\\\"y\\\\z\"}");
    }
}
