//! Benchmarks of the HTTP/1 codec on the heads croupier sees most: a GET as
//! load generators and curl send it, and a provider's small JSON answer.
//!
//! Run with `cargo bench --bench parse` (add `-- --quick` for a rough
//! number in a few seconds).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use croupier::http1::encode::{self, ForwardHeaders};
use croupier::http1::head::{HEADERS_MAX, HeadLimits, parse_request, parse_response};

/// A GET with the eight header lines a typical client sends, one of them the
/// topic: what every proxied request costs at least.
const REQUEST: &[u8] = b"GET /api/v1/invoices?customer=4711&page=2 HTTP/1.1\r\n\
    Host: croupier.internal:8000\r\n\
    User-Agent: curl/8.5.0\r\n\
    Accept: */*\r\n\
    Accept-Encoding: gzip, deflate, br\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Connection: keep-alive\r\n\
    X-Request-Id: 9f2c1e5a-3b7d-4c8e-a1f0-6d2b8e4c7a91\r\n\
    croupier-topic: billing\r\n\
    \r\n";

/// A provider's answer with a small JSON body (the body is not part of the
/// head and is not parsed).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
    Content-Type: application/json\r\n\
    Content-Length: 27\r\n\
    Date: Mon, 01 Jan 2024 12:00:00 GMT\r\n\
    Server: provider/1.0\r\n\
    Cache-Control: no-store\r\n\
    Connection: keep-alive\r\n\
    \r\n\
    {\"result\":\"ok\",\"items\":[]}";

fn request_head(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("request_head");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));

    group.bench_function("parse", |b| {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        b.iter(|| {
            let head = parse_request(black_box(REQUEST), &mut headers, &limits);
            black_box(head.map(|h| h.map(|h| h.len)))
        });
    });

    // Encoding works from one parsed head; the output buffer is reused, as
    // the proxy reuses its per-core buffers.
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let head = parse_request(REQUEST, &mut headers, &limits)
        .expect("the benchmark request parses")
        .expect("the benchmark request is complete");
    for (name, enabled) in [("encode", false), ("encode_forwarded", true)] {
        let forward = ForwardHeaders { enabled, client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)) };
        let mut out = Vec::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode::request_head(black_box(&head), &forward, &mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn response_head(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("response_head");
    let head_len = RESPONSE.len() - b"{\"result\":\"ok\",\"items\":[]}".len();
    group.throughput(Throughput::Bytes(head_len as u64));
    group.bench_function("parse", |b| {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        b.iter(|| {
            let head = parse_response(black_box(RESPONSE), &mut headers, false, &limits);
            black_box(head.map(|h| h.map(|h| h.len)))
        });
    });
    group.finish();
}

criterion_group!(benches, request_head, response_head);
criterion_main!(benches);
