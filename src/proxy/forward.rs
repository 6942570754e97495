//! Forwarding one request to a provider and streaming the answer back.
//!
//! [`forward`] picks providers and decides about retries; [`exchange`] runs
//! one attempt on one upstream connection. An attempt that fails before
//! anything irrevocable happened (the request is still whole in the client's
//! buffer, and no byte went to the client) can be tried again; every other
//! failure is final for this request.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::buffer::{Inbound, ReadError};
use super::connection::{Conn, Next, RequestInfo, respond_error};
use super::relay::{self, ChunkedOut, RelayError};
use crate::error::ProxyError;
use crate::http1::encode::{self, ClientFraming};
use crate::http1::head::{HEADERS_MAX, parse_response};
use crate::http1::{BodyLength, Version};
use crate::router::table::Choice;
use crate::runtime::worker::Worker;
use crate::upstream;

/// A request ready to go upstream.
pub struct ForwardRequest {
    pub info: RequestInfo,
    pub topic: Rc<str>,
    /// The canonical head to send, kept for retries.
    pub head: Vec<u8>,
}

/// How one attempt went wrong.
enum Failure {
    /// Nothing irrevocable happened: the whole request is still in the
    /// client's buffer and nothing reached the client. `reached` says the
    /// provider may have seen the request (it was written, then the
    /// connection died without an answer).
    Unsent { error: ProxyError, reached: bool },
    /// Answer the client with this error; the request cannot be retried.
    Respond(ProxyError),
    /// The client connection is past saving (bytes of a response already
    /// went out, or the client itself broke off): close it.
    Abort,
}

/// The end of a successful exchange.
struct Done {
    client_keep_alive: bool,
    upstream_reusable: bool,
}

pub async fn forward(conn: &mut Conn, worker: &Worker, mut request: ForwardRequest) -> Next {
    let info = request.info;
    let tries_max = worker.config.retries as usize + 1;
    let held = conn.inbound.data().len() - info.head_len;
    // A request whose body is in the buffer already can be sent again as is.
    let replayable = match info.body {
        BodyLength::Empty => true,
        BodyLength::Fixed(length) => held as u64 >= length,
        BodyLength::Chunked | BodyLength::UntilClose => false,
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut stale_redials = 0u32;
    let mut response = Inbound::default();

    enum Outcome {
        Done { client_keep_alive: bool },
        Failed(ProxyError),
        Aborted,
    }
    let outcome = loop {
        let now = Instant::now();
        let choice = worker
            .table
            .borrow_mut()
            .choose(request.topic.as_bytes(), &tried, now);
        let provider = match choice {
            Choice::Provider(provider) => provider,
            Choice::NoProvider => break Outcome::Failed(no_provider(&request.topic)),
            Choice::Exhausted => break Outcome::Failed(all_failed(&request.topic, tried.len())),
        };

        let pooled = worker.pool.borrow_mut().take(provider, now);
        let reused = pooled.is_some();
        let mut upstream = match pooled {
            Some(stream) => stream,
            None => match upstream::connect(provider, worker.config.connect_timeout()).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%provider, %error, "connect failed");
                    worker.provider_failed(&request.topic, provider);
                    tried.push(provider);
                    if tried.len() >= tries_max {
                        break Outcome::Failed(all_failed(&request.topic, tried.len()));
                    }
                    continue;
                }
            },
        };

        worker.request_started(&request.topic, provider);
        let result = exchange(
            conn,
            worker,
            &mut upstream,
            &mut request,
            &mut response,
            replayable,
        )
        .await;
        worker.request_finished(&request.topic, provider, result.is_ok());

        match result {
            Ok(done) => {
                if done.upstream_reusable {
                    worker
                        .pool
                        .borrow_mut()
                        .put(provider, upstream, Instant::now());
                }
                break Outcome::Done {
                    client_keep_alive: done.client_keep_alive,
                };
            }
            Err(Failure::Unsent { error, reached }) => {
                drop(upstream);
                if reused && stale_redials == 0 {
                    // The provider closed this pooled connection while it was
                    // idle. Its other idle ones are suspect too: redial once.
                    worker.pool.borrow_mut().forget(provider);
                    stale_redials += 1;
                    continue;
                }
                if reached && !info.idempotent {
                    // RFC 9110 §9.2.2: the provider may have acted on it.
                    break Outcome::Failed(error);
                }
                worker.provider_failed(&request.topic, provider);
                tried.push(provider);
                if tried.len() >= tries_max {
                    break Outcome::Failed(error);
                }
            }
            Err(Failure::Respond(error)) => break Outcome::Failed(error),
            Err(Failure::Abort) => break Outcome::Aborted,
        }
    };
    response.release_or_drop(&worker.bufs);
    worker.bufs.put(std::mem::take(&mut request.head));

    match outcome {
        Outcome::Done {
            client_keep_alive: true,
        } => Next::KeepAlive,
        Outcome::Done {
            client_keep_alive: false,
        }
        | Outcome::Aborted => Next::Close,
        Outcome::Failed(error) => {
            // The request is still in the buffer only when it was replayable.
            let keep = replayable && info.keep_alive;
            if keep {
                conn.inbound.consume(info.head_len + info.body_len_held());
            }
            respond_error(conn, worker, &error, keep).await
        }
    }
}

/// One attempt: the request to `upstream`, the response to the client.
async fn exchange(
    conn: &mut Conn,
    worker: &Worker,
    upstream: &mut TcpStream,
    request: &mut ForwardRequest,
    response: &mut Inbound,
    replayable: bool,
) -> Result<Done, Failure> {
    let info = request.info;
    let config = &worker.config;
    let unsent = |reason: &str| Failure::Unsent {
        error: ProxyError::provider(502, format!("provider connection failed: {reason}")),
        reached: false,
    };

    let (result, head) = upstream.write_all(std::mem::take(&mut request.head)).await;
    request.head = head;
    if result.is_err() {
        return Err(unsent("write failed"));
    }

    // The body. A replayable one is written from the buffer and left there
    // until the exchange is over; any other is consumed as it streams.
    match info.body {
        BodyLength::Empty | BodyLength::UntilClose => {}
        BodyLength::Fixed(length) if replayable => {
            let written = conn
                .inbound
                .write_range(upstream, info.head_len, length as usize)
                .await;
            if written.is_err() {
                return Err(unsent("write failed"));
            }
        }
        body => {
            if info.expect_continue {
                // TODO: wait for the provider's `100 Continue` before sending
                // the body, so a refusal saves the upload.
            }
            conn.inbound.consume(info.head_len);
            let timeout = config.header_timeout();
            let relayed = match body {
                BodyLength::Fixed(length) => {
                    let (client, inbound, canceller) = conn.parts();
                    relay::fixed(client, upstream, inbound, length, timeout, canceller).await
                }
                _ => {
                    let (client, inbound, canceller) = conn.parts();
                    relay::chunked(
                        client,
                        upstream,
                        inbound,
                        ChunkedOut::AsReceived,
                        timeout,
                        canceller,
                    )
                    .await
                }
            };
            match relayed {
                Ok(()) => {}
                Err(RelayError::Chunk(error)) => {
                    return Err(Failure::Respond(ProxyError::from_request_chunk(error)));
                }
                Err(RelayError::Sink(_)) => {
                    return Err(Failure::Respond(ProxyError::provider(
                        502,
                        "provider closed the connection while receiving the body",
                    )));
                }
                Err(_) => return Err(Failure::Abort),
            }
        }
    }

    // The response head, after any interim (1xx) responses.
    response.ensure_buffer(&worker.bufs);
    let capacity_max = worker.limits.header_bytes_max + 1024;
    let timeout = config.response_timeout();
    let mut interim_sent = false;
    loop {
        let read = response
            .read_more(upstream, capacity_max, timeout, &mut conn.canceller)
            .await;
        match read {
            Ok(0) | Err(ReadError::Io(_)) if response.is_empty() && !interim_sent => {
                let reached = true;
                let error =
                    ProxyError::provider(502, "provider closed the connection without a response");
                return Err(if replayable {
                    Failure::Unsent { error, reached }
                } else {
                    Failure::Respond(error)
                });
            }
            Ok(0) | Err(ReadError::Io(_)) => {
                return Err(if interim_sent {
                    Failure::Abort
                } else {
                    Failure::Respond(ProxyError::provider(502, "provider response cut short"))
                });
            }
            Err(ReadError::TimedOut) => {
                let reason = format!(
                    "provider did not answer within response_timeout_ms ({})",
                    config.response_timeout_ms
                );
                let error = ProxyError::provider(504, reason).with_limit("response_timeout_ms");
                return Err(if interim_sent {
                    Failure::Abort
                } else {
                    Failure::Respond(error)
                });
            }
            Ok(_) => {}
        }

        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let parsed = parse_response(response.data(), &mut headers, info.is_head, &worker.limits);
        let head = match parsed {
            Ok(Some(head)) => head,
            Ok(None) => continue,
            Err(error) => {
                let error = ProxyError::from_response_head(error);
                return Err(if interim_sent {
                    Failure::Abort
                } else {
                    Failure::Respond(error)
                });
            }
        };

        if (100..200).contains(&head.status) {
            if head.status == 101 {
                // croupier does not forward Upgrade, so no provider should
                // switch protocols; one that does cannot be relayed.
                return Err(Failure::Respond(ProxyError::provider(
                    502,
                    "provider switched protocols, which croupier does not tunnel yet",
                )));
            }
            // RFC 9110 §15.2: interim responses go to HTTP/1.1 clients only.
            let len = head.len;
            if info.version == Version::Http11 {
                let mut out = worker.bufs.take();
                encode::interim_head(&head, &mut out);
                let (result, out) = conn.client.write_all(out).await;
                worker.bufs.put(out);
                if result.is_err() {
                    return Err(Failure::Abort);
                }
                interim_sent = true;
            }
            response.consume(len);
            continue;
        }

        // The final response head.
        let dechunk = head.body == BodyLength::Chunked && info.version == Version::Http10;
        let client_keep_alive = info.keep_alive && head.body != BodyLength::UntilClose && !dechunk;
        let framing = if dechunk {
            ClientFraming::UntilClose
        } else {
            ClientFraming::AsReceived
        };
        let mut out = worker.bufs.take();
        encode::response_head(&head, framing, info.version, client_keep_alive, &mut out);
        let (body, len, upstream_keep_alive, status) =
            (head.body, head.len, head.keep_alive, head.status);
        response.consume(len);
        let (result, out) = conn.client.write_all(out).await;
        worker.bufs.put(out);
        if result.is_err() {
            return Err(Failure::Abort);
        }
        if replayable {
            conn.inbound.consume(info.head_len + info.body_len_held());
        }
        worker.count_status(status);

        let relayed = match body {
            BodyLength::Empty => Ok(()),
            BodyLength::Fixed(length) => {
                relay::fixed(
                    upstream,
                    &mut conn.client,
                    response,
                    length,
                    timeout,
                    &mut conn.canceller,
                )
                .await
            }
            BodyLength::Chunked => {
                let out = if dechunk {
                    ChunkedOut::Decoded
                } else {
                    ChunkedOut::AsReceived
                };
                relay::chunked(
                    upstream,
                    &mut conn.client,
                    response,
                    out,
                    timeout,
                    &mut conn.canceller,
                )
                .await
            }
            BodyLength::UntilClose => {
                relay::until_close(
                    upstream,
                    &mut conn.client,
                    response,
                    timeout,
                    &mut conn.canceller,
                )
                .await
            }
        };
        if let Err(error) = relayed {
            tracing::debug!(?error, "response body relay failed");
            return Err(Failure::Abort);
        }
        // Bytes past the end of the response mean the provider's framing and
        // ours disagree: that connection cannot be trusted again.
        let upstream_reusable = upstream_keep_alive && response.is_empty();
        return Ok(Done {
            client_keep_alive,
            upstream_reusable,
        });
    }
}

fn no_provider(topic: &str) -> ProxyError {
    ProxyError::croupier(503, format!("no live provider for topic {topic}"))
}

fn all_failed(topic: &str, tries: usize) -> ProxyError {
    ProxyError::provider(
        502,
        format!("no provider of topic {topic} could be reached ({tries} tried)"),
    )
}
