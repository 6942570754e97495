//! The sequencer: the one thread that owns the leases and orders changes.
//!
//! It loops over one inbox. Requests from the cores (announce, leave, a
//! provider failure) change the registry, and each change is numbered and
//! sent to every core. The cores acknowledge each change once applied; when
//! the last acknowledgement of a change arrives, the request that caused it
//! gets its reply. Between messages the sequencer wakes for the next lease to
//! run out, and removes it the same way.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Announce, ControlMsg, CoreMsg, HostSpec, ProviderStats, Reply};
use crate::metrics::CoreSnapshot;
use crate::metrics::exposition::{self, ControlCounters};
use crate::router::cidr::{self, Cidr};
use crate::router::table::{InflightLimit, TableChange};

/// First ejection of a provider, then doubling with each consecutive one.
pub const EJECT_BASE: Duration = Duration::from_secs(1);
/// Longest ejection: a provider that keeps failing is still retried this often.
pub const EJECT_MAX: Duration = Duration::from_secs(30);

/// Limits and policies the sequencer enforces.
#[derive(Clone, Debug)]
pub struct Policy {
    pub allow_provider: Vec<Cidr>,
    /// `--max-inflight-per-provider`.
    pub max_inflight_per_provider: Option<u32>,
    pub topics_max: usize,
    pub providers_per_topic_max: usize,
}

/// Handle to send requests to the sequencer.
pub type ControlSender = flume::Sender<ControlMsg>;

struct Lease {
    expires: Instant,
    ttl: Duration,
    /// Consecutive ejections; the back-off doubles with each.
    ejections: u32,
    down_until: Option<Instant>,
    /// Left with `drain`: no new requests; removed when the lease ends.
    draining: bool,
    /// Its limit of requests in flight; the counter is shared by the cores
    /// and kept across renewals.
    limit: Option<InflightLimit>,
}

/// A reply waiting for every core to acknowledge a change.
struct Pending {
    acks_left: usize,
    reply: Option<(flume::Sender<Reply>, Reply)>,
}

/// A providers report being gathered from the cores.
struct Gathering {
    answers_left: usize,
    rows: Vec<ProviderStats>,
    /// For a scrape: every core's metrics.
    metrics: Option<Vec<CoreSnapshot>>,
    reply: flume::Sender<Reply>,
}

struct Sequencer {
    policy: Policy,
    cores: Vec<flume::Sender<CoreMsg>>,
    leases: HashMap<String, HashMap<SocketAddr, Lease>>,
    /// Lease deadlines; an entry is stale when its lease was renewed since.
    expiries: BinaryHeap<Reverse<(Instant, String, SocketAddr)>>,
    next_seq: u64,
    pending: HashMap<u64, Pending>,
    gathering: HashMap<u64, Gathering>,
    counters: ControlCounters,
}

/// Starts the sequencer thread. `cores` are the inboxes of the cores, which
/// it broadcasts to; it returns when every sender of its inbox is gone.
pub fn spawn(
    policy: Policy,
    inbox: flume::Receiver<ControlMsg>,
    cores: Vec<flume::Sender<CoreMsg>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("croupier-control".into()).spawn(move || {
        let mut sequencer = Sequencer {
            policy,
            cores,
            leases: HashMap::new(),
            expiries: BinaryHeap::new(),
            next_seq: 0,
            pending: HashMap::new(),
            gathering: HashMap::new(),
            counters: ControlCounters::default(),
        };
        sequencer.run(inbox);
    })
}

impl Sequencer {
    fn run(&mut self, inbox: flume::Receiver<ControlMsg>) {
        loop {
            self.expire(Instant::now());
            let message = match self.expiries.peek() {
                Some(Reverse((deadline, _, _))) => match inbox.recv_deadline(*deadline) {
                    Ok(message) => message,
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    Err(flume::RecvTimeoutError::Disconnected) => return,
                },
                None => match inbox.recv() {
                    Ok(message) => message,
                    Err(flume::RecvError::Disconnected) => return,
                },
            };
            self.handle(message);
        }
    }

    fn handle(&mut self, message: ControlMsg) {
        match message {
            ControlMsg::Announce { announce, reply } => match self.announce(announce) {
                Ok((change, answer)) => {
                    self.counters.announces += 1;
                    self.broadcast(change, Some((reply, answer)));
                }
                Err(answer) => {
                    let _ = reply.send(answer);
                }
            },
            ControlMsg::Leave { topic, host, port, drain, reply } => {
                match self.leave(&topic, &host, port, drain) {
                    Ok((change, answer)) => {
                        self.counters.leaves += 1;
                        self.broadcast(change, Some((reply, answer)));
                    }
                    Err(answer) => {
                        let _ = reply.send(answer);
                    }
                }
            }
            ControlMsg::Providers { reply } => self.gather(reply),
            ControlMsg::Failed { topic, provider } => self.eject(topic, provider),
            ControlMsg::Recovered { topic, provider } => {
                if let Some(lease) = self.lease_mut(&topic, provider) {
                    lease.ejections = 0;
                    lease.down_until = None;
                }
            }
            ControlMsg::Applied { seq } => self.acknowledge(seq),
            ControlMsg::Stats { seq, rows } => self.collect(seq, rows, None),
            ControlMsg::Scrape { reply } => self.scrape(reply),
            ControlMsg::Metrics { seq, snapshot } => self.collect(seq, Vec::new(), Some(*snapshot)),
        }
    }

    fn announce(&mut self, announce: Announce) -> Result<(TableChange, Reply), Reply> {
        let provider = resolve(&announce.host, announce.port)?;
        if let Some(reason) = cidr::refusal(provider.ip(), &self.policy.allow_provider) {
            return Err(Reply::error(403, &format!("provider refused: {reason}"), Some("host")));
        }
        let topics = self.leases.len();
        let providers = self.leases.get(&announce.topic).map_or(0, HashMap::len);
        let known_topic = self.leases.contains_key(&announce.topic);
        if !known_topic && topics >= self.policy.topics_max {
            let reason = format!("topic table full: topics_max is {}", self.policy.topics_max);
            return Err(Reply::error(507, &reason, Some("topic")));
        }
        let known = self.leases.get(&announce.topic).is_some_and(|t| t.contains_key(&provider));
        if !known && providers >= self.policy.providers_per_topic_max {
            let reason = format!(
                "topic full: providers_per_topic_max is {}",
                self.policy.providers_per_topic_max
            );
            return Err(Reply::error(507, &reason, Some("topic")));
        }

        let expires = Instant::now() + announce.ttl;
        let lease =
            self.leases.entry(announce.topic.clone()).or_default().entry(provider).or_insert(
                Lease {
                    expires,
                    ttl: announce.ttl,
                    ejections: 0,
                    down_until: None,
                    draining: false,
                    limit: None,
                },
            );
        lease.expires = expires;
        lease.ttl = announce.ttl;
        lease.draining = false;
        let max = match (announce.max_inflight, self.policy.max_inflight_per_provider) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        lease.limit = match (max, lease.limit.take()) {
            (Some(max), Some(old)) => Some(InflightLimit { max, count: old.count }),
            (Some(max), None) => Some(InflightLimit::new(max)),
            (None, _) => None,
        };
        let limit = lease.limit.clone();
        self.expiries.push(Reverse((expires, announce.topic.clone(), provider)));

        let count = self.leases[&announce.topic].len();
        let answer = Reply::json(
            200,
            &json!({
                "result": "ok",
                "topic": announce.topic,
                "provider": provider.to_string(),
                "lease_s": seconds(announce.ttl),
                "providers": count,
                "new": !known,
            }),
        );
        let change = TableChange::Upsert {
            topic: announce.topic.into(),
            provider,
            weight: announce.weight,
            limit,
        };
        Ok((change, answer))
    }

    fn leave(
        &mut self,
        topic: &str,
        host: &HostSpec,
        port: u16,
        drain: bool,
    ) -> Result<(TableChange, Reply), Reply> {
        let provider = resolve(host, port)?;
        let Some(lease) = self.lease_mut(topic, provider) else {
            let reason = format!("{provider} is not a provider of {topic}");
            return Err(Reply::error(404, &reason, None));
        };
        let mut answer =
            json!({ "result": "ok", "topic": topic, "provider": provider.to_string() });
        if drain {
            lease.draining = true;
            answer["state"] = "draining".into();
            return Ok((
                TableChange::Drain { topic: topic.into(), provider },
                Reply::json(200, &answer),
            ));
        }
        let providers = self.leases.get_mut(topic).expect("the lease was just found");
        providers.remove(&provider);
        let count = providers.len();
        if count == 0 {
            self.leases.remove(topic);
        }
        answer["providers"] = count.into();
        Ok((TableChange::Remove { topic: topic.into(), provider }, Reply::json(200, &answer)))
    }

    fn eject(&mut self, topic: Box<str>, provider: SocketAddr) {
        let now = Instant::now();
        let Some(lease) = self.lease_mut(&topic, provider) else {
            return;
        };
        // Several cores may report the same outage; one ejection covers them.
        if lease.down_until.is_some_and(|until| until > now) {
            return;
        }
        let backoff = EJECT_BASE.saturating_mul(1 << lease.ejections.min(5)).min(EJECT_MAX);
        lease.ejections += 1;
        let until = now + backoff;
        lease.down_until = Some(until);
        tracing::warn!(topic = &*topic, %provider, backoff_ms = backoff.as_millis() as u64,
            "provider ejected after a failure");
        self.counters.ejections += 1;
        self.broadcast(TableChange::Eject { topic, provider, until }, None);
    }

    /// Removes every lease that ran out by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _, _))) = self.expiries.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, topic, provider))) = self.expiries.pop() else {
                break;
            };
            let current = self.leases.get(&topic).and_then(|t| t.get(&provider));
            if current.is_none_or(|lease| lease.expires != deadline) {
                continue; // renewed or gone since this entry was pushed
            }
            let providers = self.leases.get_mut(&topic).expect("lease was just found");
            providers.remove(&provider);
            if providers.is_empty() {
                self.leases.remove(&topic);
            }
            tracing::debug!(topic, %provider, "lease expired");
            self.counters.expiries += 1;
            self.broadcast(TableChange::Remove { topic: topic.into(), provider }, None);
        }
    }

    fn broadcast(&mut self, change: TableChange, reply: Option<(flume::Sender<Reply>, Reply)>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for core in &self.cores {
            let _ = core.send(CoreMsg::Apply { seq, change: change.clone() });
        }
        self.pending.insert(seq, Pending { acks_left: self.cores.len(), reply });
    }

    fn acknowledge(&mut self, seq: u64) {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return;
        };
        pending.acks_left -= 1;
        if pending.acks_left == 0 {
            let pending = self.pending.remove(&seq).expect("entry was just found");
            if let Some((sender, reply)) = pending.reply {
                let _ = sender.send(reply);
            }
        }
    }

    /// Asks every core for its provider counters, for `GET /_croupier/providers`.
    fn gather(&mut self, reply: flume::Sender<Reply>) {
        self.ask_cores(|seq| CoreMsg::Report { seq }, None, reply);
    }

    /// Asks every core for its metrics, for `GET /_croupier/metrics`.
    fn scrape(&mut self, reply: flume::Sender<Reply>) {
        self.ask_cores(|seq| CoreMsg::Metrics { seq }, Some(Vec::new()), reply);
    }

    fn ask_cores(
        &mut self,
        question: impl Fn(u64) -> CoreMsg,
        metrics: Option<Vec<CoreSnapshot>>,
        reply: flume::Sender<Reply>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for core in &self.cores {
            let _ = core.send(question(seq));
        }
        let answers_left = self.cores.len();
        self.gathering.insert(seq, Gathering { answers_left, rows: Vec::new(), metrics, reply });
    }

    fn collect(&mut self, seq: u64, rows: Vec<ProviderStats>, snapshot: Option<CoreSnapshot>) {
        let Some(gathering) = self.gathering.get_mut(&seq) else {
            return;
        };
        gathering.rows.extend(rows);
        if let (Some(all), Some(snapshot)) = (gathering.metrics.as_mut(), snapshot) {
            all.push(snapshot);
        }
        gathering.answers_left -= 1;
        if gathering.answers_left > 0 {
            return;
        }
        let gathering = self.gathering.remove(&seq).expect("entry was just found");
        let reply = match &gathering.metrics {
            Some(cores) => {
                let now = Instant::now();
                let mut control = self.counters.clone();
                let mut names: Vec<&String> = self.leases.keys().collect();
                names.sort();
                for name in names {
                    let live = self.leases[name]
                        .values()
                        .filter(|l| !l.draining && l.down_until.is_none_or(|until| until <= now))
                        .count();
                    control.live_providers.push((name.clone(), live as u64));
                }
                Reply { status: 200, body: exposition::render(cores, &control) }
            }
            None => self.providers_report(&gathering.rows),
        };
        let _ = gathering.reply.send(reply);
    }

    /// The body of `GET /_croupier/providers`: leases from the registry,
    /// counters summed over the cores.
    fn providers_report(&self, rows: &[ProviderStats]) -> Reply {
        let now = Instant::now();
        let mut totals: HashMap<(&str, SocketAddr), (u64, u32)> = HashMap::new();
        for row in rows {
            let total = totals.entry((&row.topic, row.provider)).or_default();
            total.0 += row.requests;
            total.1 += row.inflight;
        }
        let mut topics = serde_json::Map::new();
        let mut names: Vec<&String> = self.leases.keys().collect();
        names.sort();
        for name in names {
            let mut providers: Vec<_> = self.leases[name].iter().collect();
            providers.sort_by_key(|(addr, _)| **addr);
            let list: Vec<_> = providers
                .into_iter()
                .map(|(addr, lease)| {
                    let (requests, inflight) =
                        totals.get(&(name.as_str(), *addr)).copied().unwrap_or_default();
                    let ejected = lease.down_until.is_some_and(|until| until > now);
                    json!({
                        "provider": addr.to_string(),
                        "lease_left_ms": lease.expires.saturating_duration_since(now).as_millis() as u64,
                        "ttl_s": seconds(lease.ttl),
                        "requests": requests,
                        "inflight": inflight,
                        "state": if lease.draining {
                            "draining"
                        } else if ejected {
                            "ejected"
                        } else {
                            "live"
                        },
                    })
                })
                .collect();
            topics.insert(name.clone(), list.into());
        }
        Reply::json(200, &json!({ "topics": topics }))
    }

    fn lease_mut(&mut self, topic: &str, provider: SocketAddr) -> Option<&mut Lease> {
        self.leases.get_mut(topic)?.get_mut(&provider)
    }
}

/// A duration in seconds for JSON: whole seconds as an integer, the rare
/// fractional lease as a float.
fn seconds(duration: Duration) -> serde_json::Value {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().into()
    } else {
        duration.as_secs_f64().into()
    }
}

/// Turns an announced host into an address, once, at announce time.
fn resolve(host: &HostSpec, port: u16) -> Result<SocketAddr, Reply> {
    match host {
        HostSpec::Ip(ip) => Ok(SocketAddr::new(*ip, port)),
        HostSpec::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| Reply::error(400, &format!("cannot resolve host {name}"), Some("host"))),
    }
}
