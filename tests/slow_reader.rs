//! A client that asks for a large response and then reads nothing must not
//! hold its connection (and the provider connection behind it) for ever:
//! `--send-timeout-ms` drops it once sent data stays unacknowledged.

#[macro_use]
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Behaviour, Croupier, Provider, request};

/// `croupier_open_connections`, read with a fresh connection (which is itself
/// one of the open connections it counts).
fn open_connections(croupier: &Croupier) -> u64 {
    let response = request(croupier.addr(), "GET", "/_croupier/metrics", &[], b"");
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("croupier_open_connections "))
        .unwrap_or_else(|| panic!("no open-connections gauge:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn stalled_reader_is_dropped(driver: &str) {
    // 64 MiB is far more than the socket buffers between croupier and the
    // client can hold, so croupier's writes stall on a zero window.
    let provider = Provider::start(Behaviour::ChunkedDownload(64 * 1024 * 1024));
    let croupier = Croupier::start(driver, &["--send-timeout-ms", "1000"]);
    croupier.announce("big", provider.port(), 60);

    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&croupier.addr().into()).unwrap();
    let mut client: TcpStream = socket.into();
    client.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\ncroupier-topic: big\r\n\r\n").unwrap();

    // The stalled connection counts while croupier waits on it...
    let started = Instant::now();
    let mut seen_open = false;
    let mut dropped_after = None;
    while started.elapsed() < Duration::from_secs(20) {
        let open = open_connections(&croupier);
        if open >= 2 {
            seen_open = true;
        } else if seen_open {
            dropped_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen_open, "the stalled client's connection was never counted open");
    // ...and is dropped a little after the send timeout (the kernel's
    // zero-window probes back off, so allow generous slack).
    let after = dropped_after.expect("croupier still holds a client that reads nothing after 20 s");
    assert!(after >= Duration::from_millis(800), "dropped before the send timeout: {after:?}");
    drop(client);
}

on_both_drivers!(stalled_reader_is_dropped);
