//! Upgraded connections (WebSocket and the like) through the real croupier.
//!
//! The provider here speaks just enough: it reads the request head, checks
//! that nothing of the upgraded protocol arrived before it answered, answers
//! `101`, then echoes bytes upper-cased until the client closes.

#[macro_use]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Croupier, read_head};

/// What the provider saw before it switched protocols.
struct Seen {
    head: String,
    early_bytes: usize,
}

/// A provider that answers one upgrade request and echoes upper-cased.
fn upgrade_provider(answer_101: bool) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        // Whatever arrives before the 101 is a byte of the new protocol
        // that croupier let through too early.
        thread::sleep(Duration::from_millis(200));
        stream.set_nonblocking(true).unwrap();
        let mut early = [0u8; 1024];
        let early_bytes = match stream.read(&mut early) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => panic!("{e}"),
        };
        stream.set_nonblocking(false).unwrap();
        let _ =
            seen_tx.send(Seen { head: String::from_utf8_lossy(&head).into_owned(), early_bytes });
        if answer_101 {
            stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                .unwrap();
        } else {
            stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n").unwrap();
        }
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let upper: Vec<u8> = buf[..n].to_ascii_uppercase();
                    if stream.write_all(&upper).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (port, seen_rx)
}

fn upgrade_is_tunnelled(driver: &str) {
    let croupier = Croupier::start(driver, &["--no-forwarded-headers"]);
    let (port, seen) = upgrade_provider(true);
    croupier.announce("ws", port, 60);

    let mut client = TcpStream::connect(croupier.addr()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The request and the first bytes of the new protocol in one write:
    // croupier must hold "hello" back until the provider said 101.
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: x\r\ncroupier-topic: ws\r\nConnection: Upgrade\r\n\
              Upgrade: echo\r\n\r\nhello",
        )
        .unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: upgrade\r\n"), "{head}");

    let seen = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.early_bytes, 0, "bytes of the new protocol went through before the 101");
    assert!(seen.head.contains("connection: upgrade\r\nupgrade: echo\r\n"), "{}", seen.head);

    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"HELLO");
    client.write_all(b"again").unwrap();
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"AGAIN");

    // The client's half-close reaches the provider, which closes in turn.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

fn unasked_switch_is_a_502(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let (port, _seen) = upgrade_provider(false);
    croupier.announce("ws", port, 60);
    let mut client = TcpStream::connect(croupier.addr()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\ncroupier-topic: ws\r\n\r\n").unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
}

on_both_drivers!(upgrade_is_tunnelled, unasked_switch_is_a_502);
