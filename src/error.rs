//! The one error type of the request path, and how it reaches the client.
//!
//! Every failure knows which side caused it (the client, a provider, or
//! croupier itself), so logs and metrics can tell a misbehaving client from
//! a broken provider, and it carries the status the client gets. The JSON
//! body is the same shape everywhere: `{"result": "error", "status": N,
//! "reason": "...", "limit": "..."}`, with `limit` naming the limit that was
//! hit when one was.

use std::borrow::Cow;

use crate::http1::HeadError;
use crate::http1::chunked::ChunkError;

/// Who is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Provider,
    Croupier,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyError {
    pub status: u16,
    pub side: Side,
    pub reason: Cow<'static, str>,
    /// The limit that tripped, by its option name.
    pub limit: Option<&'static str>,
    /// Seconds to tell the client to wait (`Retry-After`), for overload.
    pub retry_after_s: Option<u32>,
}

impl ProxyError {
    pub fn client(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            status,
            side: Side::Client,
            reason: reason.into(),
            limit: None,
            retry_after_s: None,
        }
    }

    pub fn provider(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            status,
            side: Side::Provider,
            reason: reason.into(),
            limit: None,
            retry_after_s: None,
        }
    }

    pub fn croupier(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            status,
            side: Side::Croupier,
            reason: reason.into(),
            limit: None,
            retry_after_s: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn with_limit(mut self, limit: &'static str) -> Self {
        self.limit = Some(limit);
        self
    }

    /// A request head the client got wrong.
    pub fn from_request_head(error: HeadError) -> Self {
        let mut e = ProxyError::client(error.status(), error.reason());
        e.limit = error.limit_name();
        e
    }

    /// A response head a provider got wrong: the client gets a 502, never the
    /// ambiguous response.
    pub fn from_response_head(error: HeadError) -> Self {
        ProxyError::provider(502, format!("provider sent an invalid response: {}", error.reason()))
    }

    pub fn from_request_chunk(error: ChunkError) -> Self {
        ProxyError::client(400, format!("invalid chunked body: {}", error.reason()))
    }

    pub fn from_response_chunk(error: ChunkError) -> Self {
        ProxyError::provider(
            502,
            format!("provider sent an invalid chunked body: {}", error.reason()),
        )
    }

    /// The JSON body the client gets.
    pub fn body(&self) -> String {
        let mut value = serde_json::json!({
            "result": "error",
            "status": self.status,
            "reason": self.reason,
        });
        if let Some(limit) = self.limit {
            value["limit"] = limit.into();
        }
        value.to_string()
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}): {}", self.status, self.side, self.reason)
    }
}

impl std::error::Error for ProxyError {}
