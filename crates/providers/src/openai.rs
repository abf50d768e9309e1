//! Any OpenAI-compatible chat completions API.

use async_trait::async_trait;
use cognitude_protocol::openai::StreamOptions;
use cognitude_protocol::sse::SseDecoder;
use cognitude_protocol::{ChatChunk, ChatCompletion, ChatRequest};

use crate::http::{Endpoint, HttpClient, MAX_RESPONSE_BYTES, UpstreamResponse};
use crate::{ChunkSource, ChunkStream, Error, Provider, Result};

/// A client for an OpenAI-compatible `/chat/completions` endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    name: String,
    endpoint: Endpoint,
    client: HttpClient,
}

impl OpenAiProvider {
    /// `base_url` is what the OpenAI SDKs call `base_url` (it ends in `/v1` for OpenAI itself);
    /// requests go to `{base_url}/chat/completions`. `api_key`, when given, is sent as a bearer
    /// token; `extra_headers` are sent on every request (OpenRouter's `HTTP-Referer`, …).
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Option<&str>,
        extra_headers: &[(String, String)],
        client: HttpClient,
    ) -> Result<OpenAiProvider> {
        let endpoint = Endpoint::new(
            base_url,
            "chat/completions",
            &[],
            api_key.map(|k| ("authorization", format!("Bearer {k}"))),
            extra_headers,
        )?;
        Ok(OpenAiProvider {
            name: name.into(),
            endpoint,
            client,
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<UpstreamResponse> {
        self.endpoint.post(&self.client, body).await
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        // Most requests carry no stream fields: they are sent as they are, without a copy.
        let body = if req.stream.is_none() && req.stream_options.is_none() {
            serde_json::to_vec(req)
        } else {
            let mut req = req.clone();
            req.stream = None;
            req.stream_options = None;
            serde_json::to_vec(&req)
        }
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let mut resp = self.post(body).await?;
        let bytes = resp.read_all(MAX_RESPONSE_BYTES).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("completion is not valid JSON: {e}")))
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        let mut req = req.clone();
        req.stream = Some(true);
        // Always ask for usage, so every stream's cost is known; the server decides whether the
        // client sees the usage chunk.
        let mut opts = req.stream_options.take().unwrap_or_default();
        opts.include_usage = Some(true);
        req.stream_options = Some(StreamOptions {
            include_usage: opts.include_usage,
            extra: opts.extra,
        });
        let body = serde_json::to_vec(&req).map_err(|e| Error::Protocol(e.to_string()))?;
        let resp = self.post(body).await?;
        Ok(Box::new(OpenAiStream {
            resp,
            decoder: SseDecoder::default(),
            done: false,
            saw_finish: false,
        }))
    }
}

/// Chunks decoded from an OpenAI SSE response.
struct OpenAiStream {
    resp: UpstreamResponse,
    decoder: SseDecoder,
    done: bool,
    saw_finish: bool,
}

#[async_trait]
impl ChunkSource for OpenAiStream {
    async fn next_chunk(&mut self) -> Result<Option<ChatChunk>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(ev) = self.decoder.next_event() {
                if ev.is_done() {
                    self.done = true;
                    return Ok(None);
                }
                let value: serde_json::Value = serde_json::from_str(&ev.data)
                    .map_err(|e| Error::Protocol(format!("stream chunk is not valid JSON: {e}")))?;
                if let Some(err) = value.get("error") {
                    let message = err
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("upstream stream error")
                        .to_owned();
                    return Err(Error::Status {
                        status: 502,
                        message,
                        retry_after: None,
                    });
                }
                let chunk: ChatChunk = serde_json::from_value(value).map_err(|e| {
                    Error::Protocol(format!("stream chunk has an unexpected shape: {e}"))
                })?;
                if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                    self.saw_finish = true;
                }
                return Ok(Some(chunk));
            }
            match self.resp.next_bytes().await? {
                Some(bytes) => self
                    .decoder
                    .push(&bytes)
                    .map_err(|e| Error::Protocol(e.to_string()))?,
                None => {
                    self.done = true;
                    // Some servers end without `[DONE]`; a stream that never finished was cut.
                    if self.saw_finish {
                        return Ok(None);
                    }
                    return Err(Error::Protocol("stream ended before it finished".into()));
                }
            }
        }
    }
}
