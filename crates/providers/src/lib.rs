//! Upstream LLM clients behind one trait.
//!
//! A [`Provider`] takes an OpenAI-format [`ChatRequest`] whose `model` is already the upstream's
//! own model id, and answers with an OpenAI-format [`ChatCompletion`] or a stream of
//! [`ChatChunk`]s, whatever the upstream speaks:
//! - [`OpenAiProvider`]: any OpenAI-compatible base URL (OpenAI, Groq, Mistral, DeepSeek, Together,
//!   OpenRouter, Gemini's OpenAI endpoint, Ollama, vLLM, …).
//! - [`AnthropicProvider`]: the native Messages API, translated both ways.
//! - [`MockProvider`]: in-process and deterministic, for demos and the embedded defaults.
//!
//! Errors say whether a retry or a fallback may help ([`Error::is_retryable`]) and carry the
//! upstream's `Retry-After`.
//!
//! ```
//! use cognitude_providers::{MockProvider, Provider};
//! use cognitude_protocol::{parse_json, ChatRequest};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let provider = MockProvider::new("mock");
//! let req: ChatRequest =
//!     parse_json(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
//! let completion = provider.complete(&req).await.unwrap();
//! assert!(completion.choices[0].message.text_content().contains("Hi"));
//! # });
//! ```

mod anthropic;
mod http;
mod mock;
mod openai;

use std::time::Duration;

use async_trait::async_trait;
use cognitude_protocol::{ChatChunk, ChatCompletion, ChatRequest};

pub use anthropic::{
    AnthropicProvider, AnthropicStreamTranslator, from_anthropic_response, to_anthropic_request,
};
pub use http::{HttpClient, Timeouts};
pub use mock::MockProvider;
pub use openai::OpenAiProvider;

/// Where a timeout struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
    Total,
}

impl TimeoutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Idle => "idle between stream chunks",
            TimeoutPhase::Total => "total",
        }
    }
}

/// An upstream call that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The upstream answered with a non-success status.
    #[error("upstream returned {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer in time.
    #[error("upstream timed out ({})", .0.as_str())]
    Timeout(TimeoutPhase),
    /// The connection could not be made or broke before a response.
    #[error("could not reach upstream: {0}")]
    Connect(String),
    /// The upstream sent something that is not its protocol (bad JSON, a cut stream).
    #[error("upstream sent an invalid response: {0}")]
    Protocol(String),
    /// The provider is set up wrongly (bad base URL, header value).
    #[error("provider misconfigured: {0}")]
    Config(String),
}

impl Error {
    /// Whether another attempt (a retry or a fallback model) may succeed: 5xx, 429, 408,
    /// timeouts before the first byte, and connection errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Error::Timeout(_) | Error::Connect(_) => true,
            Error::Protocol(_) | Error::Config(_) => false,
        }
    }

    /// How long the upstream asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of chunks from an upstream, in OpenAI's format.
///
/// Dropping it cancels the upstream request.
#[async_trait]
pub trait ChunkSource: Send {
    /// The next chunk, `Ok(None)` at the end of a complete stream, or an error (a cut or
    /// malformed stream, an idle timeout).
    async fn next_chunk(&mut self) -> Result<Option<ChatChunk>>;
}

/// A boxed [`ChunkSource`].
pub type ChunkStream = Box<dyn ChunkSource>;

/// An upstream LLM API.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's configured name (`openai`, `groq`, `anthropic`, …).
    fn name(&self) -> &str;

    /// A complete response. `req.model` is the upstream's model id; `req.stream` is ignored.
    async fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion>;

    /// A stream of chunks. The provider asks the upstream for usage in the stream where the
    /// protocol allows it, so the last chunk carries usage whether or not the client asked.
    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream>;
}

/// Parses a `Retry-After` header (seconds, possibly fractional; or OpenAI's `retry-after-ms`).
pub fn parse_retry_after(headers: &::http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    headers
        .get(::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_the_documented_ones() {
        let status = |s| Error::Status {
            status: s,
            message: String::new(),
            retry_after: None,
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(Error::Timeout(TimeoutPhase::FirstByte).is_retryable());
        assert!(Error::Connect("refused".into()).is_retryable());
        assert!(!Error::Protocol("bad json".into()).is_retryable());
    }

    #[test]
    fn retry_after_parses_seconds_and_ms() {
        let mut h = ::http::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = ::http::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), None);
    }
}
