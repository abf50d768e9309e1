//! The HTTP client shared by the providers: pooled, HTTP/1.1 and HTTP/2, rustls with ring, and
//! the four timeouts (connect, first byte, idle between chunks, total).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::{Error, Result, TimeoutPhase};

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// Between two pieces of a response body (stream chunks).
    pub idle: Duration,
    /// For the whole call, body included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// A pooled HTTP client for upstream calls.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeouts: Timeouts,
}

impl HttpClient {
    /// Builds a client. TLS uses rustls with the ring provider and the Mozilla root set, so it
    /// does not depend on a process-wide crypto provider or the system's certificates.
    pub fn new(timeouts: Timeouts) -> Result<HttpClient> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls_ring_provider())
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(HttpClient { client, timeouts })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends a request and waits for the response headers (first-byte timeout).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<UpstreamResponse> {
        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let first_byte = self.timeouts.first_byte.min(self.timeouts.total);
        match tokio::time::timeout(first_byte, self.client.request(req)).await {
            Err(_) => Err(Error::Timeout(TimeoutPhase::FirstByte)),
            Ok(Err(e)) => Err(classify_client_error(&e, started, self.timeouts.connect)),
            Ok(Ok(resp)) => Ok(UpstreamResponse {
                response: resp,
                deadline,
                idle: self.timeouts.idle,
            }),
        }
    }
}

fn rustls_ring_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

fn classify_client_error(
    e: &hyper_util::client::legacy::Error,
    started: Instant,
    connect_timeout: Duration,
) -> Error {
    let text = error_chain(e);
    if e.is_connect() {
        if started.elapsed() >= connect_timeout || text.contains("timed out") {
            return Error::Timeout(TimeoutPhase::Connect);
        }
        return Error::Connect(text);
    }
    Error::Connect(text)
}

/// The error and its sources, joined: hyper's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Response headers received; the body is read under the idle and total timeouts.
#[derive(Debug)]
pub struct UpstreamResponse {
    response: Response<Incoming>,
    deadline: Instant,
    idle: Duration,
}

impl UpstreamResponse {
    pub fn status(&self) -> http::StatusCode {
        self.response.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The next piece of the body, `None` at its end.
    pub async fn next_bytes(&mut self) -> Result<Option<Bytes>> {
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Err(Error::Timeout(TimeoutPhase::Total));
            }
            let wait = self.idle.min(self.deadline - now);
            let frame = match tokio::time::timeout(wait, self.response.body_mut().frame()).await {
                Err(_) if Instant::now() >= self.deadline => {
                    return Err(Error::Timeout(TimeoutPhase::Total));
                }
                Err(_) => return Err(Error::Timeout(TimeoutPhase::Idle)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(Error::Protocol(format!(
                        "response body broke off: {}",
                        error_chain(&e)
                    )));
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Ok(Some(data));
            }
        }
    }

    /// The whole body, at most `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes> {
        let mut out = Vec::new();
        while let Some(b) = self.next_bytes().await? {
            if out.len() + b.len() > limit {
                return Err(Error::Protocol(format!(
                    "response body larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&b);
        }
        Ok(Bytes::from(out))
    }

    /// Turns a non-success response into an [`Error::Status`] with the upstream's message.
    pub async fn into_status_error(mut self) -> Error {
        let status = self.status().as_u16();
        let retry_after = crate::parse_retry_after(self.headers());
        let body = self.read_all(64 * 1024).await.unwrap_or_default();
        Error::Status {
            status,
            message: upstream_error_message(&body),
            retry_after,
        }
    }
}

/// Where a provider posts its requests: the URL and the headers every request carries.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Parsed once: every request reuses it.
    pub(crate) uri: http::Uri,
    pub(crate) headers: HeaderMap,
}

impl Endpoint {
    /// `{base_url}/{path}` with a JSON content type, the provider's own `fixed` headers, the API
    /// key under `key_header` (formatted by `key_value`, marked sensitive), and the user's
    /// `extra` headers, which may override the others.
    pub fn new(
        base_url: &str,
        path: &str,
        fixed: &[(&'static str, &'static str)],
        key: Option<(&'static str, String)>,
        extra: &[(String, String)],
    ) -> Result<Endpoint> {
        use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in fixed {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        if let Some((name, value)) = key {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| Error::Config("API key contains invalid characters".into()))?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), v);
        }
        for (k, v) in extra {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::Config(format!("invalid header name '{k}'")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::Config(format!("invalid value for header '{k}'")))?;
            headers.insert(name, value);
        }
        let url = format!("{}/{path}", base_url.trim_end_matches('/'));
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| Error::Config(format!("invalid base URL '{base_url}': {e}")))?;
        Ok(Endpoint { uri, headers })
    }

    /// Posts a JSON body; a non-success status becomes an [`Error::Status`].
    pub async fn post(&self, client: &HttpClient, body: Vec<u8>) -> Result<UpstreamResponse> {
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Config(e.to_string()))?;
        *req.headers_mut() = self.headers.clone();
        let resp = client.send(req).await?;
        if !resp.status().is_success() {
            return Err(resp.into_status_error().await);
        }
        Ok(resp)
    }
}

/// The `message` of an OpenAI or Anthropic error body, or a short prefix of the raw body.
pub(crate) fn upstream_error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(m) = v
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .or_else(|| v.get("message").and_then(|m| m.as_str()))
    {
        return m.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

/// The size limit for a non-streaming upstream response body.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
