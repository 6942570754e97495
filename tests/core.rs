//! Core integration tests: the real croupier binary, real providers on loopback, raw HTTP/1.1.
//!
//! Each case is a function taking the driver name; `on_both_drivers!` turns it into two tests,
//! `<case>::io_uring` and `<case>::legacy`, so every behaviour is checked on both event loops.
//! Run one driver with `cargo test --test core legacy`.

#[macro_use]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Behaviour, Conn, Croupier, Provider, Response, chunked_encoding, first_difference, fnv1a64,
    free_port, get, loopback, pattern, provider_pairs, providers_of, request, run_to_exit, upload,
};
use serde_json::{Value, json};

on_both_drivers!(
    announce_then_fresh_connections_succeed,
    traffic_reaches_every_provider,
    leave_stops_traffic,
    lease_expiry_stops_traffic,
    errors_have_json_bodies,
    big_bodies_pass_byte_exact,
    thousand_requests_on_one_connection,
    provider_stopped_under_load_fails_no_request,
    malformed_announce_changes_nothing,
    bodiless_responses_keep_connection_usable,
    http10_client_gets_its_answer,
    control_paths_never_forwarded,
    sigterm_exits_zero,
    sigint_with_idle_client_exits_zero,
    help_mentions_every_option,
    bad_command_line_exits_2,
    port_in_use_exits_1,
);

/// The topic most tests route to.
const TOPIC: &str = "billing";

/// A lease long enough to outlive any test, so only leases a test shortens on purpose expire.
const LEASE_S: u64 = 30;

/// The issue's bound for a provider with `ttl: 1` to stop getting traffic and leave the list.
const LEASE_EXPIRY_BOUND_MS: u64 = 3_000;

/// How long to wait for croupier to exit after a signal, or for a command-line run to end.
const EXIT_TIMEOUT_MS: u64 = 10_000;

/// The size of the big-body tests.
const BIG_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How long the client keeps sending while a provider is stopped under it.
const UNDER_LOAD_RUN_MS: u64 = 2_000;

/// When, into that run, the provider is stopped.
const UNDER_LOAD_STOP_AFTER_MS: u64 = 600;

fn announce_ok(croupier: &Croupier, topic: &str, port: u16, ttl_s: u64) -> Value {
    let (status, reply) = croupier.announce(topic, port, ttl_s);
    assert_eq!(status, 200, "announce {topic} on port {port}: {reply}");
    assert_eq!(reply["result"], "ok", "announce {topic} on port {port}: {reply}");
    reply
}

fn echo_body(provider: &Provider) -> String {
    format!("provider {}", provider.port())
}

/// `n` GETs to `topic` on fresh connections (so both cores take some); each must be a 200.
fn send_fresh(addr: SocketAddr, topic: &str, n: usize, label: &str) {
    for i in 0..n {
        let response = get(addr, &format!("/{label}/{i}"), topic);
        assert_eq!(response.status, 200, "{label} request {i}: {}", response.summary());
    }
}

fn assert_json_error(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.summary());
    let body = response.json();
    assert_eq!(body["result"], "error", "{what}: {body}");
    assert_eq!(body["status"], status, "{what}: status line and JSON disagree: {body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "{what}: no reason in {body}");
}

/// Case 1. The 200 of an announce means every core knows the provider: 20 connections opened
/// right after it (spread over both cores' listeners by SO_REUSEPORT) all reach it.
fn announce_then_fresh_connections_succeed(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);

    let reply = announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);

    // All connections exist before the first request, so none waits on another's timing.
    let mut conns: Vec<Conn> = (0..20).map(|_| Conn::open(croupier.addr())).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        let response =
            conn.roundtrip("GET", &format!("/fresh/{i}"), &[("croupier-topic", TOPIC)], b"");
        assert_eq!(response.status, 200, "connection {i}: {}", response.summary());
        assert_eq!(response.body_text(), echo_body(&provider), "connection {i}");
    }
    assert_eq!(provider.count(), 20);

    // The reply's fields as the contract writes them; `lease_s` is whole seconds, so 30.0
    // would break a client that decodes it into an integer.
    assert_eq!(reply["topic"], TOPIC, "{reply}");
    assert_eq!(reply["provider"], loopback(provider.port()), "{reply}");
    assert_eq!(reply["providers"], 1, "{reply}");
    assert!(reply["lease_s"].is_u64(), "lease_s is not an integer: {reply}");
    assert_eq!(reply["lease_s"], LEASE_S, "{reply}");
}

/// Case 2. With 3 providers, 60 requests leave none of them idle.
fn traffic_reaches_every_provider(driver: &str) {
    let providers: Vec<Provider> = (0..3).map(|_| Provider::start(Behaviour::Echo)).collect();
    let croupier = Croupier::start(driver, &[]);
    for (i, provider) in providers.iter().enumerate() {
        let reply = announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
        assert_eq!(reply["providers"], i + 1, "{reply}");
    }

    let bodies: Vec<String> = providers.iter().map(echo_body).collect();
    for i in 0..60 {
        let response = get(croupier.addr(), &format!("/spread/{i}"), TOPIC);
        assert_eq!(response.status, 200, "request {i}: {}", response.summary());
        assert!(bodies.contains(&response.body_text()), "request {i}: {}", response.summary());
    }

    let counts: Vec<usize> = providers.iter().map(Provider::count).collect();
    assert!(counts.iter().all(|&n| n > 0), "some provider got nothing: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 60, "{counts:?}");
}

/// Case 3a. A provider that leaves gets no more traffic, at once, and leaves the list.
fn leave_stops_traffic(driver: &str) {
    let leaving = Provider::start(Behaviour::Echo);
    let staying = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, TOPIC, leaving.port(), LEASE_S);
    announce_ok(&croupier, TOPIC, staying.port(), LEASE_S);

    // Both must have had traffic, or "no more traffic" below would prove nothing.
    send_fresh(addr, TOPIC, 20, "before-leave");
    let counts = (leaving.count(), staying.count());
    assert!(counts.0 > 0 && counts.1 > 0, "round robin skipped a provider: {counts:?}");

    let (status, reply) = croupier.leave(TOPIC, leaving.port());
    assert_eq!(status, 200, "leave: {reply}");
    assert_eq!(reply["result"], "ok", "leave: {reply}");
    assert_eq!(reply["provider"], loopback(leaving.port()), "leave: {reply}");
    assert_eq!(reply["providers"], 1, "leave: {reply}");
    let listed = providers_of(&croupier.providers(), TOPIC);
    assert_eq!(listed, vec![loopback(staying.port())], "after leave");

    let left_count = leaving.count();
    send_fresh(addr, TOPIC, 20, "after-leave");
    assert_eq!(leaving.count(), left_count, "a provider that left still got traffic");

    let (status, reply) = croupier.leave(TOPIC, leaving.port());
    assert_eq!(status, 404, "leaving twice: {reply}");
}

/// Case 3b. A provider whose `ttl: 1` lease runs out stops getting traffic, and leaves the
/// providers list, within the issue's bound.
fn lease_expiry_stops_traffic(driver: &str) {
    let staying = Provider::start(Behaviour::Echo);
    let expiring = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, TOPIC, staying.port(), LEASE_S);

    // The short lease must carry traffic before it runs out, or the check proves nothing.
    announce_ok(&croupier, TOPIC, expiring.port(), 1);
    let announced = Instant::now();
    for i in 0..40 {
        if expiring.count() > 0 {
            break;
        }
        let response = get(addr, &format!("/lease/{i}"), TOPIC);
        assert_eq!(response.status, 200, "lease request {i}: {}", response.summary());
    }
    assert!(expiring.count() > 0, "the short-lease provider got no traffic in 40 requests");

    let deadline = announced + Duration::from_millis(LEASE_EXPIRY_BOUND_MS);
    loop {
        let document = croupier.providers();
        if !providers_of(&document, TOPIC).contains(&loopback(expiring.port())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ttl 1 lease still listed {LEASE_EXPIRY_BOUND_MS} ms after announce: {document}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    let expired_count = expiring.count();
    send_fresh(addr, TOPIC, 20, "after-expiry");
    let late = expiring.count() - expired_count;
    assert_eq!(late, 0, "a provider whose lease ran out got {late} more requests");
    let listed = providers_of(&croupier.providers(), TOPIC);
    assert_eq!(listed, vec![loopback(staying.port())], "after expiry");
}

/// Case 4. Data-plane errors carry a JSON body whose `status` is the status line's.
fn errors_have_json_bodies(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();

    let no_topic = request(addr, "GET", "/", &[], b"");
    assert_json_error(&no_topic, 400, "no croupier-topic header");

    let unknown = get(addr, "/", "no-such-topic");
    assert_json_error(&unknown, 503, "unknown topic");

    // Nothing listens on this port, so every connect is refused.
    let dead_port = free_port();
    announce_ok(&croupier, "dead", dead_port, LEASE_S);
    let unreachable = get(addr, "/", "dead");
    assert_json_error(&unreachable, 502, "provider port with no listener");
}

fn assert_upload_intact(
    response: &Response,
    written: std::io::Result<()>,
    want: &[u8],
    what: &str,
) {
    assert_eq!(response.status, 200, "{what}: {}", response.summary());
    written.unwrap_or_else(|e| panic!("{what}: writing the body failed: {e}"));
    let want_len = want.len().to_string();
    let want_sum = format!("{:016x}", fnv1a64(want));
    assert_eq!(response.header("x-body-len"), Some(want_len.as_str()), "{what}: provider's length");
    assert_eq!(
        response.header("x-body-sum"),
        Some(want_sum.as_str()),
        "{what}: provider's checksum"
    );
}

/// Case 5. 10 MiB up (with Content-Length, then chunked) and 10 MiB down (chunked) arrive
/// byte for byte.
fn big_bodies_pass_byte_exact(driver: &str) {
    let echo = Provider::start(Behaviour::Echo);
    let download = Provider::start(Behaviour::ChunkedDownload(BIG_BODY_BYTES));
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, "upload", echo.port(), LEASE_S);
    announce_ok(&croupier, "download", download.port(), LEASE_S);
    let body = pattern(BIG_BODY_BYTES);

    let mut sized = format!(
        "POST /upload/sized HTTP/1.1\r\nhost: croupier.test\r\ncroupier-topic: upload\r\n\
         content-length: {BIG_BODY_BYTES}\r\n\r\n"
    )
    .into_bytes();
    sized.extend_from_slice(&body);
    let (response, written) = upload(addr, sized);
    assert_upload_intact(&response, written, &body, "Content-Length upload");

    let mut chunked = b"POST /upload/chunked HTTP/1.1\r\nhost: croupier.test\r\n\
        croupier-topic: upload\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec();
    chunked.extend_from_slice(&chunked_encoding(&body));
    let (response, written) = upload(addr, chunked);
    assert_upload_intact(&response, written, &body, "chunked upload");

    let response = get(addr, "/download", "download");
    assert_eq!(
        response.status,
        200,
        "download: {}",
        response.header("content-length").unwrap_or("-")
    );
    if let Some(at) = first_difference(&response.body, &body) {
        panic!(
            "download differs at byte {at}: got {} bytes, want {}",
            response.body.len(),
            body.len()
        );
    }
}

/// Case 6. One keep-alive connection carries 1,000 requests in a row.
fn thousand_requests_on_one_connection(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);

    let mut conn = Conn::open(croupier.addr());
    for i in 0..1_000 {
        let response =
            conn.roundtrip("GET", &format!("/keep/{i}"), &[("croupier-topic", TOPIC)], b"");
        assert_eq!(response.status, 200, "request {i}: {}", response.summary());
        assert_eq!(response.body_text(), echo_body(&provider), "request {i}");
    }
    assert_eq!(provider.count(), 1_000);
}

/// Case 7. One of 3 providers stops (listener closed, connections cut) while a client sends
/// GETs back to back: croupier retries elsewhere and no request fails.
fn provider_stopped_under_load_fails_no_request(driver: &str) {
    let mut providers: Vec<Provider> = (0..3).map(|_| Provider::start(Behaviour::Echo)).collect();
    let croupier = Croupier::start(driver, &[]);
    for provider in &providers {
        announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
    }

    let addr = croupier.addr();
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = {
        let (done, failures) = (Arc::clone(&done), Arc::clone(&failures));
        thread::spawn(move || {
            let end = Instant::now() + Duration::from_millis(UNDER_LOAD_RUN_MS);
            let mut conn = Conn::open(addr);
            for i in 0..100_000 {
                if Instant::now() >= end {
                    break;
                }
                // A fresh connection now and then, so both cores see the stop.
                if i % 50 == 0 {
                    conn = Conn::open(addr);
                }
                let path = format!("/load/{i}");
                match conn.try_roundtrip("GET", &path, &[("croupier-topic", TOPIC)], b"") {
                    Ok(response) if response.status == 200 => {}
                    Ok(response) => {
                        failures.lock().unwrap().push(format!("{i}: {}", response.summary()))
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("{i}: {e}"));
                        conn = Conn::open(addr);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    thread::sleep(Duration::from_millis(UNDER_LOAD_STOP_AFTER_MS));
    providers[1].stop();
    let done_at_stop = done.load(Ordering::SeqCst);
    client.join().expect("client thread panicked");

    let done_total = done.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {done_total} requests failed: {:?}",
        failures.len(),
        *failures
    );
    assert!(done_at_stop > 0, "no request finished before the stop");
    assert!(done_total > done_at_stop, "no request was sent after the stop");
    let counts: Vec<usize> = providers.iter().map(Provider::count).collect();
    assert!(counts[0] > 0 && counts[2] > 0, "the live providers got no traffic: {counts:?}");
}

/// Case 8. Each malformed announce gets a 400 naming the bad field where there is one, and
/// leaves the provider table as it was.
fn malformed_announce_changes_nothing(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
    let before = provider_pairs(&croupier.providers());
    assert_eq!(before.len(), 1, "{before:?}");

    // A fresh topic, so a wrongly accepted announce shows as a new entry.
    let port = provider.port();
    let with = |topic: Value, port: Value| {
        json!({"topic": topic, "host": "127.0.0.1", "port": port, "ttl": LEASE_S}).to_string()
    };
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("bad JSON", r#"{"topic":"fresh","port":"#.to_string(), None),
        ("not an object", "[1, 2]".to_string(), None),
        ("missing topic", json!({"host": "127.0.0.1", "port": port}).to_string(), Some("topic")),
        ("missing port", json!({"topic": "fresh", "host": "127.0.0.1"}).to_string(), Some("port")),
        ("port 0", with(json!("fresh"), json!(0)), Some("port")),
        ("port 70000", with(json!("fresh"), json!(70_000)), Some("port")),
        ("port not a number", with(json!("fresh"), json!("abc")), Some("port")),
        ("empty topic", with(json!(""), json!(port)), Some("topic")),
        ("300-byte topic", with(json!("t".repeat(300)), json!(port)), Some("topic")),
        ("topic with a space", with(json!("fresh topic"), json!(port)), Some("topic")),
        ("topic with a CR", with(json!("fresh\rtopic"), json!(port)), Some("topic")),
    ];
    for (what, body, field) in cases {
        let (status, reply) = croupier.announce_raw(&body);
        assert_eq!(status, 400, "{what}: {reply}");
        assert_eq!(reply["result"], "error", "{what}: {reply}");
        assert_eq!(reply["status"], 400, "{what}: {reply}");
        if let Some(field) = field {
            assert_eq!(reply["field"], field, "{what}: {reply}");
        }
        assert_eq!(provider_pairs(&croupier.providers()), before, "{what} changed the table");
    }

    // The provider announced first still serves.
    let response = get(croupier.addr(), "/still", TOPIC);
    assert_eq!(response.status, 200, "{}", response.summary());
}

/// Case 9a. Responses that have no body (to HEAD, 204, 304 with a Content-Length) pass
/// through without one, and the connection carries the next request.
fn bodiless_responses_keep_connection_usable(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
    let topic = [("croupier-topic", TOPIC)];
    let would_be_length = echo_body(&provider).len().to_string();

    // A stray body byte would be read as the next status line and fail the test there.
    let mut conn = Conn::open(croupier.addr());
    let head = conn.roundtrip("HEAD", "/head", &topic, b"");
    assert_eq!(head.status, 200, "HEAD: {}", head.summary());
    assert_eq!(
        head.header("content-length"),
        Some(would_be_length.as_str()),
        "HEAD: {}",
        head.summary()
    );

    let no_content = conn.roundtrip("GET", "/status/204", &topic, b"");
    assert_eq!(no_content.status, 204, "204: {}", no_content.summary());

    let conditional = [("croupier-topic", TOPIC), ("if-none-match", "\"v1\"")];
    let not_modified = conn.roundtrip("GET", "/status/304", &conditional, b"");
    assert_eq!(not_modified.status, 304, "304: {}", not_modified.summary());

    let head_again = conn.roundtrip("HEAD", "/head", &topic, b"");
    assert_eq!(head_again.status, 200, "second HEAD: {}", head_again.summary());

    let after = conn.roundtrip("GET", "/after", &topic, b"");
    assert_eq!(after.status, 200, "GET after: {}", after.summary());
    assert_eq!(after.body_text(), echo_body(&provider));
    assert_eq!(provider.count(), 5);
}

/// Case 9b. An HTTP/1.0 client gets an answer it can read: no chunked coding (RFC 9112 §6.1
/// forbids it towards 1.0), and the connection closes after it (§9.3, no keep-alive asked).
fn http10_client_gets_its_answer(driver: &str) {
    let echo = Provider::start(Behaviour::Echo);
    let download = Provider::start(Behaviour::ChunkedDownload(100_000));
    let croupier = Croupier::start(driver, &[]);
    announce_ok(&croupier, TOPIC, echo.port(), LEASE_S);
    announce_ok(&croupier, "download", download.port(), LEASE_S);

    let mut conn = Conn::open(croupier.addr());
    conn.send(b"GET /old HTTP/1.0\r\nhost: croupier.test\r\ncroupier-topic: billing\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{}", response.summary());
    assert_eq!(response.body_text(), echo_body(&echo));
    assert_eq!(response.header("transfer-encoding"), None, "{}", response.summary());
    assert!(conn.is_closed(), "croupier kept an HTTP/1.0 connection open without keep-alive");

    // The provider answers chunked; croupier must turn that into something 1.0 can read.
    let mut conn = Conn::open(croupier.addr());
    conn.send(
        b"GET /old-download HTTP/1.0\r\nhost: croupier.test\r\ncroupier-topic: download\r\n\r\n",
    );
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{}", response.summary());
    assert_eq!(response.header("transfer-encoding"), None, "chunked sent to an HTTP/1.0 client");
    if let Some(at) = first_difference(&response.body, &pattern(100_000)) {
        panic!("HTTP/1.0 download differs at byte {at} ({} bytes)", response.body.len());
    }
}

/// Case 10. Paths under /_croupier/ are croupier's even with a `croupier-topic` header.
fn control_paths_never_forwarded(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &[]);
    let addr = croupier.addr();
    announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
    let topic = [("croupier-topic", TOPIC)];

    let health = request(addr, "GET", "/_croupier/health", &topic, b"");
    assert_eq!(health.status, 200, "health: {}", health.summary());
    assert_eq!(health.json()["result"], "ok");

    let listing = request(addr, "GET", "/_croupier/providers", &topic, b"");
    assert_eq!(listing.status, 200, "providers: {}", listing.summary());
    assert_eq!(providers_of(&listing.json(), TOPIC), vec![loopback(provider.port())]);

    let body = json!({"topic": TOPIC, "host": "127.0.0.1", "port": provider.port()}).to_string();
    let announce = request(addr, "POST", "/_croupier/announce", &topic, body.as_bytes());
    assert_eq!(announce.status, 200, "announce: {}", announce.summary());
    assert_eq!(announce.json()["result"], "ok");

    // Neither an unknown control path nor a query string makes it the provider's.
    for path in ["/_croupier/no-such-endpoint", "/_croupier/health?verbose=1"] {
        let response = request(addr, "GET", path, &topic, b"");
        assert_ne!(response.body_text(), echo_body(&provider), "{path} was forwarded");
    }

    let targets: Vec<String> = provider.requests().into_iter().map(|r| r.target).collect();
    assert!(targets.is_empty(), "the provider received requests: {targets:?}");
}

/// Case 11a. SIGTERM ends croupier with status 0.
fn sigterm_exits_zero(driver: &str) {
    let provider = Provider::start(Behaviour::Echo);
    let mut croupier = Croupier::start(driver, &[]);
    announce_ok(&croupier, TOPIC, provider.port(), LEASE_S);
    let response = get(croupier.addr(), "/before-stop", TOPIC);
    assert_eq!(response.status, 200, "{}", response.summary());

    croupier.signal(libc::SIGTERM);
    let status = croupier.wait_exit(Duration::from_millis(EXIT_TIMEOUT_MS));
    let code = status.and_then(|s| s.code());
    assert_eq!(code, Some(0), "exit after SIGTERM: {status:?}; log:\n{}", croupier.logs());
}

/// Case 11b. SIGINT ends croupier with status 0 even while a keep-alive client sits idle.
fn sigint_with_idle_client_exits_zero(driver: &str) {
    let mut croupier = Croupier::start(driver, &[]);
    let mut idle = Conn::open(croupier.addr());
    let response = idle.roundtrip("GET", "/_croupier/health", &[], b"");
    assert_eq!(response.status, 200, "{}", response.summary());

    croupier.signal(libc::SIGINT);
    let status = croupier.wait_exit(Duration::from_millis(EXIT_TIMEOUT_MS));
    let code = status.and_then(|s| s.code());
    assert_eq!(code, Some(0), "exit after SIGINT: {status:?}; log:\n{}", croupier.logs());
    drop(idle);
}

/// Case 12a. `--help` exits 0 and names every option.
fn help_mentions_every_option(driver: &str) {
    let run = run_to_exit(&["--driver", driver, "--help"], Duration::from_millis(EXIT_TIMEOUT_MS));
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{run:?}");
    for option in ["--host", "--cores", "--driver", "--log-level"] {
        assert!(run.stdout.contains(option), "--help does not mention {option}:\n{}", run.stdout);
    }
    assert!(
        run.stdout.to_lowercase().contains("port"),
        "--help does not mention the port:\n{}",
        run.stdout
    );
}

/// Case 12b. A bad command line exits 2 with a message, before binding anything.
fn bad_command_line_exits_2(driver: &str) {
    // Host and port are given so that a wrongly accepted line binds loopback only.
    let port = free_port().to_string();
    let loopback_only = ["--host", "127.0.0.1", "--cores", "2"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["--driver", driver, "--no-such-option", &port],
        vec!["--driver", driver, "--cores", "many", &port],
        vec!["--driver", "no-such-driver", &port],
        vec!["--driver", driver, "not-a-port"],
        vec!["--driver", driver, "70000"],
    ];
    for case in cases {
        let args: Vec<&str> = loopback_only.iter().copied().chain(case.iter().copied()).collect();
        let run = run_to_exit(&args, Duration::from_millis(EXIT_TIMEOUT_MS));
        assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{case:?}: {run:?}");
        assert!(!run.stderr.trim().is_empty(), "{case:?}: no message on stderr");
    }
}

/// Case 12c. A port another socket holds makes croupier exit 1, naming the port.
fn port_in_use_exits_1(driver: &str) {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let port = holder.local_addr().expect("held address").port().to_string();
    let args = ["--host", "127.0.0.1", "--cores", "2", "--driver", driver, &port];
    let run = run_to_exit(&args, Duration::from_millis(EXIT_TIMEOUT_MS));
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{run:?}");
    assert!(run.stderr.contains(&port), "the message does not name port {port}:\n{}", run.stderr);
    drop(holder);
}
