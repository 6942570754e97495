//! `Expect: 100-continue` through the real croupier.
//!
//! croupier forwards the head with the expectation and lets the provider
//! decide: a `100 Continue` goes to the client, which then sends the body; a
//! final answer goes to the client and the body is never forwarded; a
//! provider that says nothing for a second gets the body anyway, as curl
//! does it.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Croupier, read_head};

const BODY: &[u8] = b"hello";

/// Longest any step of these tests waits for the other side.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client in these tests waits for `100 Continue` before it sends
/// the body anyway: longer than croupier's own one-second wait.
const CLIENT_CONTINUE_WAIT: Duration = Duration::from_millis(2500);

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Continue,
    Silent,
    Refuse,
}

/// A provider that answers one request with an expectation as `verdict`
/// says, and reports the body bytes it received.
fn provider(verdict: Verdict) -> (u16, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (body_tx, body_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        let head = read_head(&mut stream);
        assert!(head.to_ascii_lowercase().contains("expect: 100-continue\r\n"), "{head}");
        let mut body = vec![0u8; BODY.len()];
        match verdict {
            Verdict::Continue | Verdict::Silent => {
                if verdict == Verdict::Continue {
                    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
                }
                stream.read_exact(&mut body).unwrap();
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                stream.write_all(answer.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
                let _ = body_tx.send(body);
            }
            Verdict::Refuse => {
                stream
                    .write_all(b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n")
                    .unwrap();
                // Whatever arrives now is a body croupier should have held.
                stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = body_tx.send(got);
            }
        }
    });
    (port, body_rx)
}

/// Sends a POST with the expectation and returns the first head croupier
/// answers with, or `None` if it said nothing within `wait`.
fn post_expecting(croupier: &Croupier, wait: Duration) -> (TcpStream, Option<String>) {
    let mut client = TcpStream::connect(croupier.addr()).unwrap();
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\ncroupier-topic: up\r\n\
              Expect: 100-continue\r\ncontent-length: 5\r\n\r\n",
        )
        .unwrap();
    client.set_read_timeout(Some(wait)).unwrap();
    let mut first = [0u8; 1];
    let head = match client.read(&mut first) {
        Ok(1) => {
            client.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
            let rest = read_head(&mut client);
            Some(format!("{}{rest}", first[0] as char))
        }
        _ => None,
    };
    client.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    (client, head)
}

fn read_body(client: &mut TcpStream) -> Vec<u8> {
    let mut body = vec![0u8; BODY.len()];
    client.read_exact(&mut body).unwrap();
    body
}

fn continue_reaches_the_client(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let (port, received) = provider(Verdict::Continue);
    croupier.announce("up", port, 60);

    let (mut client, head) = post_expecting(&croupier, STEP_TIMEOUT);
    let head = head.expect("croupier passed on the 100 Continue");
    assert!(head.starts_with("HTTP/1.1 100 "), "{head}");
    client.write_all(BODY).unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(read_body(&mut client), BODY);
    assert_eq!(received.recv_timeout(STEP_TIMEOUT).unwrap(), BODY);
}

fn a_silent_provider_gets_the_body_after_the_wait(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let (port, received) = provider(Verdict::Silent);
    croupier.announce("up", port, 60);

    let asked = Instant::now();
    let (mut client, head) = post_expecting(&croupier, CLIENT_CONTINUE_WAIT);
    assert!(head.is_none(), "croupier answered a silent provider's request: {head:?}");
    // The client gives up waiting, as curl does, and sends the body.
    client.write_all(BODY).unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(read_body(&mut client), BODY);
    assert_eq!(received.recv_timeout(STEP_TIMEOUT).unwrap(), BODY);
    assert!(asked.elapsed() < STEP_TIMEOUT);
}

fn a_refusal_keeps_the_body_from_the_provider(driver: &str) {
    let croupier = Croupier::start(driver, &[]);
    let (port, received) = provider(Verdict::Refuse);
    croupier.announce("up", port, 60);

    let (mut client, head) = post_expecting(&croupier, STEP_TIMEOUT);
    let head = head.expect("croupier passed on the refusal");
    assert!(head.starts_with("HTTP/1.1 417 "), "{head}");
    // The body the client may still send cannot be told from a next
    // request, so croupier closes after the answer.
    assert!(head.to_ascii_lowercase().contains("connection: close\r\n"), "{head}");
    let _ = client.write_all(BODY);
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty(), "bytes after the refusal: {rest:?}");
    assert_eq!(received.recv_timeout(STEP_TIMEOUT).unwrap(), b"", "the body reached the provider");
}

on_both_drivers!(
    continue_reaches_the_client,
    a_silent_provider_gets_the_body_after_the_wait,
    a_refusal_keeps_the_body_from_the_provider
);
