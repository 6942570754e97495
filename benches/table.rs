//! Benchmarks of one core's provider table: the choice made for every
//! request, and the changes the control plane applies (a renewal every few
//! seconds per provider, a newcomer now and then).
//!
//! Run with `cargo bench --bench table` (add `-- --quick` for a rough
//! number in a few seconds).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use croupier::router::table::{Table, TableChange};

const TOPIC: &str = "billing";

/// Topic sizes: a pair, a large service, and far more than any one topic is
/// expected to have, to show how the costs grow.
const PROVIDER_COUNTS: [usize; 3] = [2, 100, 10_000];

/// Table size for the control-plane changes.
const APPLY_PROVIDERS: usize = 10_000;

/// Newcomers added per timed batch before they are removed again (untimed),
/// so the table stays at [`APPLY_PROVIDERS`] however long criterion runs.
const NEWCOMER_BATCH: usize = 64;

/// The `index`th provider: distinct addresses for up to 2^24 providers.
fn provider(index: usize) -> SocketAddr {
    let [_, b, c, d] = (index as u32).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, b, c, d), 8000))
}

fn upsert(index: usize) -> TableChange {
    TableChange::Upsert { topic: TOPIC.into(), provider: provider(index), weight: 1.0, limit: None }
}

/// A table with `count` providers of one topic that have all answered
/// requests already (so each has a latency, as in a table that is serving),
/// every other one ejected if `half_ejected`.
fn table_with(count: usize, half_ejected: bool, now: Instant) -> Table {
    let mut table = Table::new();
    for index in 0..count {
        table.apply(&upsert(index));
        if let Some(p) = table.provider_mut(TOPIC, provider(index)) {
            p.observe(Duration::from_micros(400 + (index % 200) as u64), now);
        }
        if half_ejected && index % 2 == 1 {
            table.apply(&TableChange::Eject {
                topic: TOPIC.into(),
                provider: provider(index),
                until: now + Duration::from_secs(3600),
            });
        }
    }
    table
}

fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("choose");
    let now = Instant::now();
    for half_ejected in [false, true] {
        let name = if half_ejected { "half_ejected" } else { "all_live" };
        for count in PROVIDER_COUNTS {
            let mut table = table_with(count, half_ejected, now);
            group.bench_with_input(BenchmarkId::new(name, count), &count, |b, _| {
                b.iter(|| black_box(table.choose(black_box(TOPIC.as_bytes()), &[], now)));
            });
        }
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    let now = Instant::now();
    let mut table = table_with(APPLY_PROVIDERS, false, now);

    // A renewal of a provider in the middle of the list.
    let renewal = upsert(APPLY_PROVIDERS / 2);
    group.bench_function(BenchmarkId::new("renewal", APPLY_PROVIDERS), |b| {
        b.iter(|| table.apply(black_box(&renewal)));
    });

    let newcomers: Vec<TableChange> =
        (0..NEWCOMER_BATCH).map(|i| upsert(APPLY_PROVIDERS + i)).collect();
    let removals: Vec<TableChange> = (0..NEWCOMER_BATCH)
        .map(|i| TableChange::Remove {
            topic: TOPIC.into(),
            provider: provider(APPLY_PROVIDERS + i),
        })
        .collect();
    group.bench_function(BenchmarkId::new("newcomer", APPLY_PROVIDERS), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = left.min(NEWCOMER_BATCH);
                let start = Instant::now();
                for change in &newcomers[..batch] {
                    table.apply(black_box(change));
                }
                timed += start.elapsed();
                for change in &removals[..batch] {
                    table.apply(change);
                }
                left -= batch;
            }
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, choose, apply);
criterion_main!(benches);
