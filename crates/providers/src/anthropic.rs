//! The Anthropic Messages API, translated to and from OpenAI's format.

use async_trait::async_trait;
use cognitude_protocol::anthropic::{MessagesRequest, MessagesResponse};
use cognitude_protocol::{ChatCompletion, ChatRequest};

use crate::http::HttpClient;
use crate::{ChunkStream, Error, Provider, Result};

/// A client for Anthropic's `/v1/messages`.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    name: String,
}

impl AnthropicProvider {
    pub fn new(
        name: impl Into<String>,
        _base_url: &str,
        _api_key: Option<&str>,
        _extra_headers: &[(String, String)],
        _client: HttpClient,
    ) -> Result<AnthropicProvider> {
        Ok(AnthropicProvider { name: name.into() })
    }
}

/// Translates an OpenAI chat request into a Messages request.
pub fn to_anthropic_request(_req: &ChatRequest) -> Result<MessagesRequest> {
    Err(Error::Config("not yet".into()))
}

/// Translates a Messages response into an OpenAI completion.
pub fn from_anthropic_response(_resp: MessagesResponse) -> ChatCompletion {
    unreachable_placeholder()
}

fn unreachable_placeholder() -> ChatCompletion {
    ChatCompletion {
        id: String::new(),
        object: String::new(),
        created: 0,
        model: String::new(),
        choices: vec![],
        usage: None,
        system_fingerprint: None,
        extra: Default::default(),
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }
    async fn complete(&self, _req: &ChatRequest) -> Result<ChatCompletion> {
        Err(Error::Config("not yet".into()))
    }
    async fn stream(&self, _req: &ChatRequest) -> Result<ChunkStream> {
        Err(Error::Config("not yet".into()))
    }
}
