//! One core's replica of the provider table.
//!
//! Each core owns its replica outright (no lock, no shared counter), and the
//! control plane sends every core the same changes in the same order, so the
//! replicas agree. Per-provider counters (requests sent, in flight) are this
//! core's own; the control plane sums them when someone asks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// A change to the table, as broadcast by the control plane to every core.
/// Topic names travel as `Box<str>` (the message crosses threads); each core
/// interns its own copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Add a provider, or renew one that is there (its counters survive).
    Upsert {
        topic: Box<str>,
        provider: SocketAddr,
    },
    /// Remove a provider (leave or lease expiry).
    Remove {
        topic: Box<str>,
        provider: SocketAddr,
    },
    /// Stop sending to a provider until `until` (it failed on some core).
    Eject {
        topic: Box<str>,
        provider: SocketAddr,
        until: Instant,
    },
}

/// One provider as this core sees it.
#[derive(Debug)]
pub struct Provider {
    pub addr: SocketAddr,
    /// Not chosen before this instant (ejected after a failure).
    pub down_until: Option<Instant>,
    /// Requests this core sent to it.
    pub requests: u64,
    /// Requests this core has in flight to it.
    pub inflight: u32,
}

/// A topic and its providers.
#[derive(Debug)]
pub struct Topic {
    pub name: Rc<str>,
    pub providers: Vec<Provider>,
    /// Where the round robin continues.
    cursor: usize,
}

/// What [`Table::choose`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The topic has no provider at all (never announced, or all left).
    NoProvider,
    /// Every provider was tried already for this request.
    Exhausted,
    Provider(SocketAddr),
}

#[derive(Debug, Default)]
pub struct Table {
    topics: HashMap<Box<[u8]>, Topic>,
}

impl Table {
    pub fn new() -> Self {
        Table::default()
    }

    /// The interned name of a topic, for requests that need it again later
    /// (retries), without hashing bytes from the client's buffer each time.
    pub fn topic_name(&self, topic: &[u8]) -> Option<Rc<str>> {
        self.topics.get(topic).map(|t| t.name.clone())
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// Picks a provider of `topic` by round robin, skipping ejected ones and
    /// those in `tried`. When every untried provider is ejected, the one
    /// whose ejection ends first is chosen anyway: failing open beats
    /// answering 503 to everyone when the failure detection was wrong.
    pub fn choose(&mut self, topic: &[u8], tried: &[SocketAddr], now: Instant) -> Choice {
        let Some(topic) = self.topics.get_mut(topic) else {
            return Choice::NoProvider;
        };
        let count = topic.providers.len();
        if count == 0 {
            return Choice::NoProvider;
        }
        let mut soonest: Option<(usize, Instant)> = None;
        for step in 0..count {
            let index = (topic.cursor + step) % count;
            let provider = &topic.providers[index];
            if tried.contains(&provider.addr) {
                continue;
            }
            match provider.down_until {
                Some(until) if until > now => {
                    if soonest.is_none_or(|(_, best)| until < best) {
                        soonest = Some((index, until));
                    }
                }
                _ => {
                    topic.cursor = index + 1;
                    return Choice::Provider(provider.addr);
                }
            }
        }
        match soonest {
            Some((index, _)) => Choice::Provider(topic.providers[index].addr),
            None => Choice::Exhausted,
        }
    }

    pub fn provider_mut(&mut self, topic: &str, addr: SocketAddr) -> Option<&mut Provider> {
        let topic = self.topics.get_mut(topic.as_bytes())?;
        topic.providers.iter_mut().find(|p| p.addr == addr)
    }

    /// Applies one change from the control plane.
    pub fn apply(&mut self, change: &TableChange) {
        match change {
            TableChange::Upsert { topic, provider } => {
                let entry = self
                    .topics
                    .entry(Box::from(topic.as_bytes()))
                    .or_insert_with(|| Topic {
                        name: Rc::from(&**topic),
                        providers: Vec::new(),
                        cursor: 0,
                    });
                match entry.providers.iter_mut().find(|p| p.addr == *provider) {
                    // A renewal: a provider that announces again is alive,
                    // but an ejection stands until it runs out.
                    Some(_) => {}
                    None => entry.providers.push(Provider {
                        addr: *provider,
                        down_until: None,
                        requests: 0,
                        inflight: 0,
                    }),
                }
            }
            TableChange::Remove { topic, provider } => {
                if let Some(entry) = self.topics.get_mut(topic.as_bytes()) {
                    entry.providers.retain(|p| p.addr != *provider);
                    if entry.providers.is_empty() {
                        self.topics.remove(topic.as_bytes());
                    }
                }
            }
            TableChange::Eject {
                topic,
                provider,
                until,
            } => {
                if let Some(p) = self.provider_mut(topic, *provider) {
                    p.down_until = Some(*until);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn upsert(table: &mut Table, port: u16) {
        table.apply(&TableChange::Upsert {
            topic: "t".into(),
            provider: addr(port),
        });
    }

    #[test]
    fn round_robin_over_providers() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        upsert(&mut table, 2);
        upsert(&mut table, 1);
        let now = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| table.choose(b"t", &[], now)).collect();
        assert_eq!(
            picks,
            [addr(1), addr(2), addr(1), addr(2)]
                .map(Choice::Provider)
                .to_vec()
        );
        assert_eq!(table.choose(b"other", &[], now), Choice::NoProvider);
    }

    #[test]
    fn ejected_providers_are_skipped_but_fail_open() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        upsert(&mut table, 2);
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        table.apply(&TableChange::Eject {
            topic: "t".into(),
            provider: addr(1),
            until: later,
        });
        for _ in 0..3 {
            assert_eq!(table.choose(b"t", &[], now), Choice::Provider(addr(2)));
        }
        assert_eq!(
            table.choose(b"t", &[addr(2)], now),
            Choice::Provider(addr(1))
        );
        assert_eq!(
            table.choose(b"t", &[addr(1), addr(2)], now),
            Choice::Exhausted
        );
        assert_eq!(table.choose(b"t", &[], later), Choice::Provider(addr(1)));
    }

    #[test]
    fn renewal_keeps_counters_and_remove_drops_empty_topics() {
        let mut table = Table::new();
        upsert(&mut table, 1);
        table.provider_mut("t", addr(1)).unwrap().requests = 7;
        upsert(&mut table, 1);
        assert_eq!(table.provider_mut("t", addr(1)).unwrap().requests, 7);
        table.apply(&TableChange::Remove {
            topic: "t".into(),
            provider: addr(1),
        });
        assert!(table.topic_name(b"t").is_none());
    }
}
