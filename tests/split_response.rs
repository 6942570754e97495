//! Responses whose head and body arrive in separate writes, through the real
//! croupier: a small body that croupier waits for, so head and body leave in
//! one write, must still arrive whole, and a provider that dies before the
//! body is complete must give the client a clean 502.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{Croupier, read_head};

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between the head and the body, long enough that they arrive as
/// separate reads.
const GAP: Duration = Duration::from_millis(50);

/// A provider that answers `requests` requests on one connection, each with
/// the head, a pause, half the body, a pause and the rest; with `die`, it
/// closes after the first half of the first body instead.
fn split_provider(requests: usize, die: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        for i in 0..requests {
            read_head(&mut stream);
            let body = format!("body number {i:04}");
            let (first, second) = body.as_bytes().split_at(body.len() / 2);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).unwrap();
            thread::sleep(GAP);
            stream.write_all(first).unwrap();
            if die {
                return;
            }
            thread::sleep(GAP);
            stream.write_all(second).unwrap();
        }
    });
    port
}

fn get(client: &mut TcpStream) -> (String, Vec<u8>) {
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\ncroupier-topic: split\r\n\r\n").unwrap();
    let head = read_head(client);
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).unwrap();
    (head, body)
}

fn split_bodies_arrive_whole(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    croupier.announce("split", split_provider(3, false), 60);
    let mut client = TcpStream::connect(croupier.addr()).unwrap();
    client.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    for i in 0..3 {
        let (head, body) = get(&mut client);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(body, format!("body number {i:04}").as_bytes());
    }
}

fn a_body_cut_short_is_a_502(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    croupier.announce("split", split_provider(1, true), 60);
    let mut client = TcpStream::connect(croupier.addr()).unwrap();
    client.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let (head, body) = get(&mut client);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("cut short"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

on_both_drivers!(split_bodies_arrive_whole, a_body_cut_short_is_a_502);
