//! One core's replica of the provider table, and the choice of a provider.
//!
//! Each core owns its replica outright (no lock, no shared counter), and the
//! control plane sends every core the same changes in the same order, so the
//! replicas agree on membership. What each core learns by itself (latency,
//! requests in flight) stays on that core: it describes the load this core
//! puts on a provider, which is what this core's choices should react to.
//!
//! # Choosing
//!
//! Power of two choices: pick two eligible providers at random and take the
//! cheaper. The cost is a peak-sensitive moving average of the provider's
//! latency (it jumps up at once on a slow answer and decays slowly, so a
//! provider that turns slow is avoided at once), times the requests in
//! flight plus one, divided by the announced weight. Two random samples give
//! nearly the balance of comparing every provider, in O(1) per request.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// foldhash, not std's SipHash: these maps are looked up several times per
// request, where SipHash was a tenth of croupier's own instructions; the
// hasher is still seeded per process.
use foldhash::HashMap;

/// A limit of requests in flight to one provider, over all cores.
///
/// The one piece of state the cores share on the request path, and only for
/// providers that have a limit: a limit the operator set for the provider as
/// a whole cannot be kept by cores that do not know of each other's
/// requests. Cores without limited providers never touch one.
#[derive(Clone, Debug)]
pub struct InflightLimit {
    pub max: u32,
    pub count: Arc<AtomicU32>,
}

impl InflightLimit {
    pub fn new(max: u32) -> Self {
        InflightLimit { max, count: Arc::new(AtomicU32::new(0)) }
    }

    fn is_full(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= self.max
    }

    /// Takes one place, if one is free.
    fn try_reserve(&self) -> bool {
        let take = |count: u32| (count < self.max).then_some(count + 1);
        self.count.fetch_update(Ordering::AcqRel, Ordering::Relaxed, take).is_ok()
    }

    pub fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A change to the table, as broadcast by the control plane to every core.
/// Topic names travel as `Box<str>` (the message crosses threads); each core
/// interns its own copy.
#[derive(Clone, Debug)]
pub enum TableChange {
    /// Add a provider, or renew one that is there (its counters and latency
    /// survive a renewal).
    Upsert { topic: Box<str>, provider: SocketAddr, weight: f64, limit: Option<InflightLimit> },
    /// Remove a provider (leave or lease expiry).
    Remove { topic: Box<str>, provider: SocketAddr },
    /// Stop sending new requests to a provider; those in flight finish.
    Drain { topic: Box<str>, provider: SocketAddr },
    /// Stop sending to a provider until `until` (it failed on some core);
    /// after that it gets one trial request at a time until one succeeds.
    Eject { topic: Box<str>, provider: SocketAddr, until: Instant },
}

/// Latency a provider is assumed to have before it answered anything on
/// this core, when its topic has no other provider to compare with.
const NEUTRAL_LATENCY_NS: f64 = 1_000_000.0;

/// How fast the latency average forgets: the weight of an old sample falls
/// to 1/e after this long.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// One provider as this core sees it.
#[derive(Debug)]
pub struct Provider {
    pub addr: SocketAddr,
    /// Announced share of traffic, relative to its topic's other providers.
    pub weight: f64,
    /// Limit of requests in flight, shared by the cores.
    pub limit: Option<InflightLimit>,
    /// Not chosen before this instant (ejected after a failure).
    pub down_until: Option<Instant>,
    /// Ejected and not yet proven healthy again: one trial at a time.
    pub half_open: bool,
    /// Leaving: no new requests.
    pub draining: bool,
    /// Requests this core sent to it.
    pub requests: u64,
    /// Requests this core has in flight to it.
    pub inflight: u32,
    /// Peak-sensitive moving average of its latency, in nanoseconds.
    latency_ns: f64,
    latency_at: Option<Instant>,
}

impl Provider {
    /// The provider's cost now. The latency average also decays while
    /// nothing is observed, so a provider that stopped getting requests
    /// (because it was slow once, or lost a tie) grows cheaper with time
    /// and is tried again, instead of being starved for good.
    ///
    /// A provider this core has not heard from yet costs nothing while it has
    /// no request in flight, so it gets one request at once and its cost is
    /// known from then on; while that first request is out it costs the
    /// neutral estimate, so it is not flooded before anyone knows its speed.
    fn cost(&self, now: Instant) -> f64 {
        let latency = match self.latency_at {
            Some(at) => {
                let idle = now.saturating_duration_since(at).as_secs_f64();
                self.latency_ns * (-idle / LATENCY_DECAY.as_secs_f64()).exp()
            }
            None if self.inflight == 0 => 0.0,
            None => self.latency_ns,
        };
        latency * f64::from(self.inflight + 1) / self.weight
    }

    /// Folds one observed latency into the average. A sample above the
    /// average replaces it outright (the "peak"); lower ones pull it down
    /// with a weight that grows with the time since the last sample.
    pub fn observe(&mut self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let elapsed = self.latency_at.map_or(LATENCY_DECAY, |at| now.saturating_duration_since(at));
        self.latency_at = Some(now);
        if sample > self.latency_ns {
            self.latency_ns = sample;
        } else {
            let keep = (-elapsed.as_secs_f64() / LATENCY_DECAY.as_secs_f64()).exp();
            self.latency_ns = self.latency_ns * keep + sample * (1.0 - keep);
        }
    }

    fn at_limit(&self) -> bool {
        self.limit.as_ref().is_some_and(InflightLimit::is_full)
    }
}

/// A topic and its providers.
#[derive(Debug)]
pub struct Topic {
    pub name: Rc<str>,
    pub providers: Vec<Provider>,
    /// Where each provider sits in `providers`: the request path finds its
    /// provider again by address twice per request, and a topic may hold
    /// thousands.
    index: HashMap<SocketAddr, usize>,
}

impl Topic {
    fn new(name: &str) -> Self {
        Topic { name: Rc::from(name), providers: Vec::new(), index: HashMap::default() }
    }

    fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut Provider> {
        let index = *self.index.get(&addr)?;
        Some(&mut self.providers[index])
    }

    fn remove(&mut self, addr: SocketAddr) {
        let Some(index) = self.index.remove(&addr) else { return };
        self.providers.swap_remove(index);
        if let Some(moved) = self.providers.get(index) {
            self.index.insert(moved.addr, index);
        }
    }
}

/// Random picks tried, two at a time, before the choice falls back to
/// looking at every provider. With half of a topic ejected, all of them miss
/// once in 65,536 choices, so choosing stays O(1) however large the topic.
const RANDOM_PICKS: usize = 16;

/// Providers whose latency a newcomer's starting estimate is averaged over.
const NEWCOMER_SAMPLE: usize = 16;

/// What [`Table::choose`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The topic has no provider at all (never announced, all left, or all
    /// draining).
    NoProvider,
    /// Every provider was tried already for this request.
    Exhausted,
    /// Every provider is at its limit of requests in flight.
    Saturated,
    Provider(SocketAddr),
}

#[derive(Debug)]
pub struct Table {
    topics: HashMap<Box<[u8]>, Topic>,
    /// For the random picks.
    rng: Rng,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // Each core gets its own seed, so cores do not pick in lockstep.
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Table { topics: HashMap::default(), rng: Rng(Cell::new(seed | 1)) }
    }

    /// The interned name of a topic, for requests that need it again later
    /// (retries), without hashing bytes from the client's buffer each time.
    pub fn topic_name(&self, topic: &[u8]) -> Option<Rc<str>> {
        self.topics.get(topic).map(|t| t.name.clone())
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// Picks a provider of `topic` for a request that already tried the
    /// providers in `tried`. A provider with a limit of requests in flight
    /// has a place reserved for the request when it is chosen; the caller
    /// gives it back with [`InflightLimit::release`].
    ///
    /// When every untried provider is ejected, the one whose ejection ends
    /// first is chosen anyway: failing open beats answering 503 to everyone
    /// when the failure detection was wrong.
    pub fn choose(&mut self, topic: &[u8], tried: &[SocketAddr], now: Instant) -> Choice {
        let rng = &self.rng;
        let first = rng.next();
        let Some(topic) = self.topics.get_mut(topic) else {
            return Choice::NoProvider;
        };
        let providers = &topic.providers;
        let count = providers.len();
        let eligible = |p: &Provider| {
            let ejected = p.down_until.is_some_and(|until| until > now);
            // A half-open provider takes one trial request at a time.
            let on_trial = p.half_open && p.inflight > 0;
            !(p.draining || ejected || on_trial || p.at_limit() || tried.contains(&p.addr))
        };

        // Two random picks; the common case ends with the first pair. A pair
        // that is all ineligible (ejected, at its limit) is drawn again, a
        // few times, before every provider is looked at.
        let pairs = if count > 2 { RANDOM_PICKS / 2 } else { 1 };
        for pair in 0..pairs {
            if count == 0 {
                break;
            }
            let a = if pair == 0 { first } else { rng.next() };
            let a = (a % count as u64) as usize;
            let mut b = (rng.next() % count as u64) as usize;
            if count > 1 && b == a {
                b = (b + 1) % count;
            }
            let pick = match (eligible(&providers[a]), eligible(&providers[b])) {
                (true, true) if providers[b].cost(now) < providers[a].cost(now) => Some(b),
                (true, _) => Some(a),
                (false, true) => Some(b),
                (false, false) => None,
            };
            if let Some(index) = pick {
                return reserve(&providers[index]);
            }
        }

        // Every pick was ineligible: look at every provider, starting at a
        // random one so the fallback does not favour the first.
        let start = if count > 0 { (first as usize) % count } else { 0 };
        let mut best: Option<usize> = None;
        let mut soonest: Option<(usize, Instant)> = None;
        let mut saturated = false;
        for step in 0..count {
            let index = (start + step) % count;
            let p = &providers[index];
            if eligible(p) {
                if best.is_none_or(|b| p.cost(now) < providers[b].cost(now)) {
                    best = Some(index);
                }
            } else if !p.draining && !tried.contains(&p.addr) {
                match p.down_until {
                    Some(until) if until > now => {
                        if soonest.is_none_or(|(_, best_until)| until < best_until) {
                            soonest = Some((index, until));
                        }
                    }
                    _ => saturated = true,
                }
            }
        }
        match (best, soonest) {
            (Some(index), _) => reserve(&providers[index]),
            (None, _) if saturated => Choice::Saturated,
            (None, Some((index, _))) => reserve(&providers[index]),
            (None, None) if providers.iter().all(|p| p.draining) => Choice::NoProvider,
            (None, None) => Choice::Exhausted,
        }
    }

    pub fn provider_mut(&mut self, topic: &str, addr: SocketAddr) -> Option<&mut Provider> {
        self.topics.get_mut(topic.as_bytes())?.get_mut(addr)
    }

    /// Applies one change from the control plane.
    pub fn apply(&mut self, change: &TableChange) {
        match change {
            TableChange::Upsert { topic, provider, weight, limit } => {
                let entry = self
                    .topics
                    .entry(Box::from(topic.as_bytes()))
                    .or_insert_with(|| Topic::new(topic));
                if let Some(existing) = entry.get_mut(*provider) {
                    // A renewal: an ejection stands until it runs out; a
                    // provider that announces again is no longer leaving.
                    existing.weight = *weight;
                    existing.limit = limit.clone();
                    existing.draining = false;
                    return;
                }
                // A newcomer starts at its topic's average latency, so it is
                // neither flooded (as at zero) nor starved.
                // A sample of the others is as good as all of them, and keeps
                // an announce O(1) in a large topic.
                let (sum, known) = entry
                    .providers
                    .iter()
                    .take(NEWCOMER_SAMPLE)
                    .filter(|p| p.latency_at.is_some())
                    .fold((0.0, 0u32), |(sum, n), p| (sum + p.latency_ns, n + 1));
                let latency_ns =
                    if known == 0 { NEUTRAL_LATENCY_NS } else { sum / f64::from(known) };
                entry.index.insert(*provider, entry.providers.len());
                entry.providers.push(Provider {
                    addr: *provider,
                    weight: *weight,
                    limit: limit.clone(),
                    down_until: None,
                    half_open: false,
                    draining: false,
                    requests: 0,
                    inflight: 0,
                    latency_ns,
                    latency_at: None,
                });
            }
            TableChange::Remove { topic, provider } => {
                if let Some(entry) = self.topics.get_mut(topic.as_bytes()) {
                    entry.remove(*provider);
                    if entry.providers.is_empty() {
                        self.topics.remove(topic.as_bytes());
                    }
                }
            }
            TableChange::Drain { topic, provider } => {
                if let Some(p) = self.provider_mut(topic, *provider) {
                    p.draining = true;
                }
            }
            TableChange::Eject { topic, provider, until } => {
                if let Some(p) = self.provider_mut(topic, *provider) {
                    p.down_until = Some(*until);
                    p.half_open = true;
                }
            }
        }
    }
}

/// xorshift64: cheap, and its quality hardly matters for choosing between
/// two providers. In a cell, so it can be drawn from while a topic of the
/// same table is borrowed.
#[derive(Debug)]
struct Rng(Cell<u64>);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }
}

/// Takes a place at a limited provider; another core may have taken the
/// last one since the choice looked.
fn reserve(provider: &Provider) -> Choice {
    match &provider.limit {
        Some(limit) if !limit.try_reserve() => Choice::Saturated,
        _ => Choice::Provider(provider.addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn upsert(table: &mut Table, port: u16) {
        table.apply(&TableChange::Upsert {
            topic: "t".into(),
            provider: addr(port),
            weight: 1.0,
            limit: None,
        });
    }

    fn counts(table: &mut Table, n: usize) -> HashMap<SocketAddr, usize> {
        let now = Instant::now();
        let mut counts = HashMap::default();
        for _ in 0..n {
            if let Choice::Provider(p) = table.choose(b"t", &[], now) {
                *counts.entry(p).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn equal_providers_share_traffic() {
        let mut table = Table::new();
        for port in 1..=3 {
            upsert(&mut table, port);
        }
        let counts = counts(&mut table, 3000);
        for port in 1..=3 {
            let share = counts[&addr(port)];
            assert!((700..1300).contains(&share), "{counts:?}");
        }
        assert_eq!(table.choose(b"other", &[], Instant::now()), Choice::NoProvider);
    }

    #[test]
    fn slow_and_busy_providers_get_less() {
        let mut table = Table::new();
        for port in 1..=3 {
            upsert(&mut table, port);
        }
        let now = Instant::now();
        for port in 1..=2 {
            table.provider_mut("t", addr(port)).unwrap().observe(Duration::from_millis(1), now);
        }
        table.provider_mut("t", addr(3)).unwrap().observe(Duration::from_millis(21), now);
        let counts = counts(&mut table, 3000);
        assert!(counts.get(&addr(3)).copied().unwrap_or(0) < 300, "{counts:?}");
    }

    #[test]
    fn weights_shape_the_share() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        table.apply(&TableChange::Upsert {
            topic: "t".into(),
            provider: addr(2),
            weight: 3.0,
            limit: None,
        });
        // Two providers: both are always the two picks, so the cheaper wins;
        // with in-flight counts the weight decides how much load tips it.
        let now = Instant::now();
        table.provider_mut("t", addr(1)).unwrap().inflight = 1;
        table.provider_mut("t", addr(2)).unwrap().inflight = 2;
        assert_eq!(table.choose(b"t", &[], now), Choice::Provider(addr(2)));
    }

    #[test]
    fn limits_saturate_and_are_shared() {
        let limit = InflightLimit::new(2);
        let mut tables = [Table::new(), Table::new()];
        for table in &mut tables {
            table.apply(&TableChange::Upsert {
                topic: "t".into(),
                provider: addr(1),
                weight: 1.0,
                limit: Some(limit.clone()),
            });
        }
        let now = Instant::now();
        // Two places over both cores, not two each.
        assert_eq!(tables[0].choose(b"t", &[], now), Choice::Provider(addr(1)));
        assert_eq!(tables[1].choose(b"t", &[], now), Choice::Provider(addr(1)));
        assert_eq!(tables[0].choose(b"t", &[], now), Choice::Saturated);
        assert_eq!(tables[1].choose(b"t", &[], now), Choice::Saturated);
        limit.release();
        assert_eq!(tables[0].choose(b"t", &[], now), Choice::Provider(addr(1)));
    }

    #[test]
    fn ejected_providers_are_skipped_but_fail_open() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        upsert(&mut table, 2);
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        table.apply(&TableChange::Eject { topic: "t".into(), provider: addr(1), until: later });
        for _ in 0..20 {
            assert_eq!(table.choose(b"t", &[], now), Choice::Provider(addr(2)));
        }
        assert_eq!(table.choose(b"t", &[addr(2)], now), Choice::Provider(addr(1)));
        assert_eq!(table.choose(b"t", &[addr(1), addr(2)], now), Choice::Exhausted);
        // After the ejection: half-open, one trial at a time.
        table.provider_mut("t", addr(2)).unwrap().draining = true;
        assert_eq!(table.choose(b"t", &[], later), Choice::Provider(addr(1)));
        table.provider_mut("t", addr(1)).unwrap().inflight = 1;
        assert_eq!(table.choose(b"t", &[], later), Choice::Saturated);
    }

    #[test]
    fn renewal_keeps_counters_and_remove_drops_empty_topics() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        table.provider_mut("t", addr(1)).unwrap().requests = 7;
        upsert(&mut table, 1);
        assert_eq!(table.provider_mut("t", addr(1)).unwrap().requests, 7);
        table.apply(&TableChange::Drain { topic: "t".into(), provider: addr(1) });
        assert_eq!(table.choose(b"t", &[], Instant::now()), Choice::NoProvider);
        table.apply(&TableChange::Remove { topic: "t".into(), provider: addr(1) });
        assert!(table.topic_name(b"t").is_none());
    }

    #[test]
    fn latency_average_is_peak_sensitive() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        let p = table.provider_mut("t", addr(1)).unwrap();
        let now = Instant::now();
        p.observe(Duration::from_millis(50), now);
        assert_eq!(p.latency_ns, 50_000_000.0);
        p.observe(Duration::from_millis(1), now + Duration::from_secs(1));
        assert!(p.latency_ns > 40_000_000.0 && p.latency_ns < 50_000_000.0);
    }
}
