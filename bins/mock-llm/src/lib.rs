//! A real HTTP server that stands in for LLM providers in tests, benches and demos. It speaks
//! the OpenAI chat completions API (`POST /v1/chat/completions`, streaming included) and the
//! Anthropic Messages API (`POST /v1/messages`), lists models at `GET /v1/models`, and reports
//! what it has seen at `GET /_mock/stats` and through [`Stats`].
//!
//! Answers are deterministic: the configured answer, or one chosen by the request, or a sentence
//! quoting the last user message, with usage computed from the text. Latency is set per server
//! ([`MockConfig`]), and faults per request by a directive: a JSON object written as
//! `@mock{…}` in the last user message, or sent in the `x-mock` header. Its fields:
//!
//! | field | effect |
//! |---|---|
//! | `status` | answer with this HTTP status and an error body in the API's format |
//! | `retry_after` | with `status`: the `retry-after` header, in seconds (and `retry-after-ms`) |
//! | `times` | apply the fault to the first `times` requests only, counted per `key` (or per identical directive) |
//! | `key` | counted in [`Stats::requests_for_key`]; scopes `times` |
//! | `models` | apply the fault only to requests for one of these models |
//! | `delay_ms` | wait this long before the response headers |
//! | `chunk_delay_ms` | wait this long before each stream chunk (instead of `per_token`) |
//! | `cut_after` | end a stream abruptly after this many content chunks: no finish, no `[DONE]` |
//! | `malformed_at` | send `data: {not json` in place of the content chunk with this index |
//! | `answer` | the answer text |
//! | `words` | answer `w1 w2 … wN` |
//! | `tool_call` | when the request declares tools, call the first one |
//!
//! The fault is `status`, `delay_ms`, `chunk_delay_ms`, `cut_after` and `malformed_at`;
//! `models` and `times` gate all of it, never the choice of answer.
//!
//! ```
//! use cognitude_mock_llm::{MockConfig, MockServer};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = MockServer::start(MockConfig::default()).await?;
//! assert!(server.base_url().ends_with("/v1"));
//!
//! let body = r#"{"model":"m","messages":[{"role":"user","content":"Hi @mock{\"status\":503}"}]}"#;
//! let mut tcp = tokio::net::TcpStream::connect(server.addr()).await?;
//! let request = format!(
//!     "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
//!      content-length: {}\r\nconnection: close\r\n\r\n{body}",
//!     body.len()
//! );
//! tcp.write_all(request.as_bytes()).await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//!
//! assert!(response.starts_with("HTTP/1.1 503"));
//! assert!(response.contains("mock-llm injected status 503"));
//! assert_eq!(server.stats().requests(), 1);
//! server.shutdown();
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod directive;
mod openai;
mod reply;
mod server;
mod stats;
mod stream;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use stats::Stats;

/// Server-wide behaviour; per-request behaviour comes from directives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockConfig {
    /// Fixed delay before the response headers of every completion.
    pub latency: Duration,
    /// Delay between stream chunks; a non-streaming answer waits this long per output token.
    pub per_token: Duration,
    /// The answer to every request; when `None` the request chooses (see the crate docs).
    pub answer: Option<String>,
}

/// A mock server running on a task of the current runtime. Dropping it (or calling
/// [`shutdown`](MockServer::shutdown)) stops it and closes its connections.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Binds `127.0.0.1` on a free port and starts serving.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn({
            let stats = stats.clone();
            async move {
                // `serve` runs until this task is aborted; it has no error to report.
                let _ = serve(listener, config, stats).await;
            }
        });
        Ok(MockServer { addr, stats, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI SDK-style base URL, `http://127.0.0.1:PORT/v1`. Chat completions are at
    /// `{base_url}/chat/completions`, Anthropic Messages at `{base_url}/messages`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server's counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops the server and closes its connections.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the mock on `listener` until this future is dropped (for example by aborting the
/// task running it), recording into `stats`. Connections close when it is dropped.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let state = Arc::new(server::State { config, stats });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connections live in this set, so dropping the server drops them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Stream chunks are small and must leave as soon as they are written. A
                    // socket that refuses the option still works, only slower.
                    let _ = tcp.set_nodelay(true);
                    let state = state.clone();
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(server::handle(&state, req).await) }
                    });
                    let connection = builder
                        .serve_connection(TokioIo::new(tcp), service)
                        .into_owned();
                    connections.spawn(async move {
                        // Clients that hang up mid-request are routine for a mock (and cut
                        // streams end this way on purpose): nothing to report.
                        let _ = connection.await;
                    });
                }
                // Running out of file descriptors and the like is temporary: wait, don't stop.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
