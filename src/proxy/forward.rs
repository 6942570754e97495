//! Forwarding one request: choosing providers, retrying, answering failures.
//!
//! [`forward`] picks a provider and a connection and hands one attempt to
//! [`exchange`]. An attempt that fails before anything irrevocable happened
//! (the request is still whole in the client's buffer, and no byte went to
//! the client) can be tried again:
//!
//! - a connect failure is always retried on another provider;
//! - a pooled connection found dead is redialled once, since providers close
//!   idle connections and croupier cannot see that until it uses one;
//! - a connection that died after the request was written is retried only
//!   for idempotent methods (RFC 9110 §9.2.2), since the provider may have
//!   acted on it.
//!
//! Every other failure is final for the request.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::buffer::Inbound;
use super::connection::{Conn, Next, RequestInfo, write_error};
use super::exchange::{Deadline, Failure, exchange};
use crate::error::ProxyError;
use crate::http1::BodyLength;
use crate::metrics::RequestRecord;
use crate::metrics::access_log::Entry;
use crate::router::table::{Choice, InflightLimit};
use crate::runtime::worker::Worker;
use crate::upstream;

/// A request ready to go upstream.
pub struct ForwardRequest {
    pub info: RequestInfo,
    pub topic: Rc<str>,
    /// The canonical head to send, kept for retries.
    pub head: Vec<u8>,
    /// Method and target, kept only when there is an access log to write.
    pub logged: Option<(Box<str>, Box<str>)>,
}

enum Outcome {
    Done { client_keep_alive: bool, status: u16, head_bytes: u64 },
    Failed(ProxyError),
    Aborted,
}

pub async fn forward(conn: &mut Conn, worker: &Worker, mut request: ForwardRequest) -> Next {
    let info = request.info;
    let config = &worker.config;
    let tries_max = config.retries as usize + 1;
    let held = conn.inbound.data().len() - info.head_len;
    // A request whose body is in the buffer already can be sent again as is.
    let replayable = match info.body {
        BodyLength::Empty => true,
        BodyLength::Fixed(length) => held as u64 >= length,
        BodyLength::Chunked | BodyLength::UntilClose => false,
    };
    // One clock read serves the request's start, its deadline, the budget
    // and the first attempt: reading the clock showed in profiles.
    let started = Instant::now();
    let deadline =
        deadline_of(info, config.response_timeout_ms, config.response_timeout(), started);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut stale_redials = 0u32;
    let mut response = Inbound::default();
    worker.retry_budget.borrow_mut().record_request(started);

    let mut last_provider = None;
    let body_written_before = conn.inbound.written();
    let mut first_attempt = true;
    let outcome = loop {
        let now = if std::mem::take(&mut first_attempt) { started } else { Instant::now() };
        if now >= deadline.at {
            break Outcome::Failed(deadline.error());
        }
        let choice = worker.table.borrow_mut().choose(request.topic.as_bytes(), &tried, now);
        let provider = match choice {
            Choice::Provider(provider) => provider,
            Choice::Saturated => break Outcome::Failed(saturated(&request.topic)),
            Choice::NoProvider => break Outcome::Failed(no_provider(&request.topic)),
            Choice::Exhausted => break Outcome::Failed(all_failed(&request.topic, tried.len())),
        };
        last_provider = Some(provider);
        let mut attempt = Attempt {
            worker,
            topic: &request.topic,
            provider,
            limit: worker.request_started(&request.topic, provider),
            latency: None,
        };

        let pooled = worker.pool.borrow_mut().take(provider, now);
        let reused = pooled.is_some();
        let mut upstream = match pooled {
            Some(stream) => stream,
            None => {
                let timeout = config.connect_timeout().min(deadline.at - now);
                match upstream::connect(provider, timeout, config.send_timeout()).await {
                    Ok(stream) => {
                        if cfg!(feature = "request-metrics") {
                            worker.metrics.connected(now.elapsed());
                        }
                        stream
                    }
                    Err(error) => {
                        drop(attempt);
                        tracing::debug!(%provider, %error, "connect failed");
                        worker.provider_failed(&request.topic, provider);
                        tried.push(provider);
                        if tried.len() >= tries_max {
                            break Outcome::Failed(all_failed(&request.topic, tried.len()));
                        }
                        continue;
                    }
                }
            }
        };

        let attempt_started = now;
        let head = &mut request.head;
        let result =
            exchange(conn, worker, &mut upstream, head, info, &mut response, replayable, deadline)
                .await;
        attempt.latency =
            result.as_ref().ok().map(|done| (done.head_at - attempt_started, done.head_at));
        drop(attempt);

        match result {
            Ok(done) => {
                if done.upstream_reusable {
                    worker.pool.borrow_mut().put(provider, upstream, done.head_at);
                }
                break Outcome::Done {
                    client_keep_alive: done.client_keep_alive,
                    status: done.status,
                    head_bytes: done.head_bytes,
                };
            }
            Err(Failure::Unsent { error, reached }) => {
                drop(upstream);
                if reused && stale_redials == 0 {
                    // The provider closed this pooled connection while it was
                    // idle; its other idle ones are suspect too.
                    worker.pool.borrow_mut().forget(provider);
                    stale_redials += 1;
                    continue;
                }
                worker.provider_failed(&request.topic, provider);
                if reached && !info.idempotent {
                    break Outcome::Failed(error);
                }
                tried.push(provider);
                // A retry after the request reached a provider costs the
                // service; connect failures above cost it nothing.
                let budget_left =
                    !reached || worker.retry_budget.borrow_mut().try_retry(Instant::now());
                if tried.len() >= tries_max || !budget_left {
                    break Outcome::Failed(error);
                }
            }
            Err(Failure::Respond(error)) => {
                if error.limit == Some("response_timeout_ms") {
                    // The provider took longer than croupier ever waits.
                    worker.provider_failed(&request.topic, provider);
                }
                break Outcome::Failed(error);
            }
            Err(Failure::Abort) => break Outcome::Aborted,
        }
    };
    let status = match &outcome {
        Outcome::Done { status, .. } => *status,
        Outcome::Failed(error) => error.status,
        // The response was cut short, or the client went away.
        Outcome::Aborted => 0,
    };
    let head_bytes = match &outcome {
        Outcome::Done { head_bytes, .. } => *head_bytes,
        _ => 0,
    };
    let record = RequestRecord {
        status,
        received_bytes: (info.head_len as u64) + conn.inbound.written() - body_written_before,
        sent_bytes: head_bytes + response.written(),
        retries: tried.len() as u32 + stale_redials,
        latency: started.elapsed(),
    };
    if cfg!(feature = "request-metrics") {
        worker.metrics.request(&request.topic, record);
    }
    if let (Some(log), Some((method, target))) = (&worker.access_log, &request.logged) {
        log.write(&Entry {
            client: conn.peer,
            topic: &request.topic,
            provider: last_provider,
            method,
            target,
            status: record.status,
            received_bytes: record.received_bytes,
            sent_bytes: record.sent_bytes,
            duration: record.latency,
            retries: record.retries,
        });
    }
    response.release_or_drop(&worker.bufs);
    worker.bufs.put(std::mem::take(&mut request.head));

    match outcome {
        Outcome::Done { client_keep_alive: true, .. } => Next::KeepAlive,
        Outcome::Done { client_keep_alive: false, .. } | Outcome::Aborted => Next::Close,
        Outcome::Failed(error) => {
            // The request is still in the buffer only when it was replayable.
            let keep = replayable && info.keep_alive;
            if keep {
                conn.inbound.consume(info.head_len + info.body_len_held());
            }
            write_error(conn, worker, &error, keep).await
        }
    }
}

/// One attempt on one provider: counted in flight from the choice to the
/// end, whichever way it ends.
struct Attempt<'a> {
    worker: &'a Worker,
    topic: &'a str,
    provider: SocketAddr,
    limit: Option<InflightLimit>,
    /// How long the provider took to answer, and when, when it did.
    latency: Option<(Duration, Instant)>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.worker.request_finished(self.topic, self.provider, self.latency);
        if let Some(limit) = &self.limit {
            limit.release();
        }
    }
}

/// The request's deadline: `croupier-timeout-ms` when the client sent it,
/// capped by the configured response timeout.
fn deadline_of(
    info: RequestInfo,
    response_timeout_ms: u64,
    per_read: Duration,
    now: Instant,
) -> Deadline {
    match info.timeout_ms {
        Some(ms) if ms < response_timeout_ms => Deadline {
            at: now + Duration::from_millis(ms),
            limit: "croupier-timeout-ms",
            limit_ms: ms,
            per_read,
            from_client: true,
        },
        _ => Deadline {
            // Without a client deadline only the per-read timeout applies;
            // the overall deadline is far enough not to bind.
            at: now + per_read.saturating_mul(4),
            limit: "response_timeout_ms",
            limit_ms: response_timeout_ms,
            per_read,
            from_client: false,
        },
    }
}

fn saturated(topic: &str) -> ProxyError {
    let reason = format!("every provider of topic {topic} is at its limit of requests in flight");
    ProxyError::croupier(503, reason).with_retry_after(1)
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
