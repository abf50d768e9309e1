//! The Anthropic Messages API, translated to and from OpenAI's format.
//!
//! Requests are translated field by field rather than forwarded: the Messages API rejects
//! fields it does not know, so OpenAI-only parameters are dropped and only the few parameters
//! Anthropic itself defines (`top_k`, `thinking`, `metadata`, `service_tier`) pass through from
//! a request's extra fields. A request that cannot be expressed in the Messages API fails with
//! a 400 [`Error::Status`], so the client learns that its input was the problem.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cognitude_protocol::anthropic::{
    self as wire, Content, ContentBlock, Message, MessagesRequest, MessagesResponse, StreamEvent,
    SystemPrompt, ToolDef,
};
use cognitude_protocol::openai::{
    ChunkChoice, ContentPart, Delta, FunctionCall, FunctionCallDelta, PromptTokensDetails,
    ToolCall, ToolCallDelta,
};
use cognitude_protocol::sse::{SseDecoder, SseEvent};
use cognitude_protocol::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, Choice, Extra, MessageContent, Role, Usage,
};
use serde_json::{Value, json};

use crate::http::{Endpoint, HttpClient, MAX_RESPONSE_BYTES, UpstreamResponse};
use crate::{ChunkSource, ChunkStream, Error, Provider, Result};

/// The API version this translation is written against.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API; OpenAI clients often leave it out.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Request fields the Messages API defines that OpenAI's does not, passed through from `extra`.
const PASSTHROUGH_FIELDS: [&str; 2] = ["thinking", "service_tier"];

/// A client for Anthropic's `/v1/messages`.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    name: String,
    endpoint: Endpoint,
    client: HttpClient,
}

impl AnthropicProvider {
    /// `base_url` ends in `/v1` for Anthropic itself (`https://api.anthropic.com/v1`); requests
    /// go to `{base_url}/messages`. `api_key`, when given, is sent as `x-api-key`;
    /// `extra_headers` are sent on every request and may override the defaults (an
    /// `anthropic-beta` flag, another `anthropic-version`).
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Option<&str>,
        extra_headers: &[(String, String)],
        client: HttpClient,
    ) -> Result<AnthropicProvider> {
        let endpoint = Endpoint::new(
            base_url,
            "messages",
            &[("anthropic-version", ANTHROPIC_VERSION)],
            api_key.map(|k| ("x-api-key", k.to_owned())),
            extra_headers,
        )?;
        Ok(AnthropicProvider {
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
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let mut body = to_anthropic_request(req)?;
        body.stream = None;
        let body = serde_json::to_vec(&body).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut resp = self.post(body).await?;
        let bytes = resp.read_all(MAX_RESPONSE_BYTES).await?;
        let resp: MessagesResponse = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("message is not valid JSON: {e}")))?;
        Ok(from_anthropic_response(resp))
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        let mut body = to_anthropic_request(req)?;
        // Anthropic streams always end with usage, so nothing like `include_usage` is needed.
        body.stream = Some(true);
        let body = serde_json::to_vec(&body).map_err(|e| Error::Protocol(e.to_string()))?;
        let resp = self.post(body).await?;
        Ok(Box::new(AnthropicStream {
            resp,
            events: EventChunks::default(),
            done: false,
        }))
    }
}

/// Translates an OpenAI chat request into a Messages request (`stream` left unset).
///
/// Input the Messages API cannot express (`n` above 1, invalid tool-call arguments, an
/// unsupported content part or tool type) is an [`Error::Status`] with status 400.
pub fn to_anthropic_request(req: &ChatRequest) -> Result<MessagesRequest> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad_request(
            "n greater than 1 is not supported by Anthropic models",
        ));
    }
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(text);
                }
            }
            Role::User => turns.push("user", user_blocks(m, i)?),
            Role::Assistant => turns.push("assistant", assistant_blocks(m, i)?),
            Role::Tool => {
                let mut block = ContentBlock::new("tool_result");
                block.tool_use_id.clone_from(&m.tool_call_id);
                block.content = Some(Value::String(m.text_content()));
                turns.push("user", vec![block]);
            }
            Role::Function => {
                return Err(bad_request(&format!(
                    "messages[{i}]: the deprecated 'function' role is not supported; \
                     use 'tool' messages"
                )));
            }
        }
    }

    let tools = match &req.tools {
        Some(tools) if !tools.is_empty() => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool_def(t, i))
                .collect::<Result<Vec<_>>>()?,
        ),
        _ => None,
    };
    let mut tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?;
    if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) && tools.is_some() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }

    let mut metadata = req.extra.get("metadata").filter(|m| m.is_object()).cloned();
    if let Some(user) = &req.user {
        let m = metadata.get_or_insert_with(|| json!({}));
        if m.get("user_id").is_none() {
            m["user_id"] = Value::String(user.clone());
        }
    }

    let top_k = match req.extra.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| bad_request("top_k must be a non-negative integer"))?,
        ),
    };
    let mut extra = Extra::new();
    for field in PASSTHROUGH_FIELDS {
        if let Some(v) = req.extra.get(field) {
            extra.insert(field.to_owned(), v.clone());
        }
    }

    Ok(MessagesRequest {
        model: req.model.clone(),
        messages: turns.finish(),
        max_tokens: req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| SystemPrompt::Text(system.join("\n\n"))),
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.to_vec())
            .filter(|s| !s.is_empty()),
        // OpenAI allows 0..=2, Anthropic 0..=1.
        temperature: req.temperature.map(|t| t.min(1.0)),
        top_p: req.top_p,
        top_k,
        stream: None,
        tools,
        tool_choice,
        metadata,
        extra,
    })
}

/// Translates a Messages response into an OpenAI completion.
///
/// Text blocks are concatenated into the content (null when the answer is only tool calls),
/// `tool_use` blocks become tool calls, and thinking blocks are left out.
pub fn from_anthropic_response(resp: MessagesResponse) -> ChatCompletion {
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block.kind.as_str() {
            "text" => {
                text.push_str(block.text.as_deref().unwrap_or_default());
                has_text = true;
            }
            "tool_use" => tool_calls.push(ToolCall {
                id: block.id.unwrap_or_default(),
                kind: "function".into(),
                function: FunctionCall {
                    name: block.name.unwrap_or_default(),
                    arguments: tool_arguments(block.input.as_ref()),
                },
                extra: Extra::new(),
            }),
            _ => {}
        }
    }
    let content = (has_text || tool_calls.is_empty()).then_some(MessageContent::Text(text));
    ChatCompletion {
        id: resp.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message: ChatMessage {
                role: Role::Assistant,
                content,
                name: None,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                tool_call_id: None,
                extra: Extra::new(),
            },
            finish_reason: Some(finish_reason(resp.stop_reason.as_deref()).to_owned()),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(openai_usage(&resp.usage)),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// Turns the events of a Messages stream into OpenAI chunks.
///
/// Pure: feed it events in order with [`push`](Self::push). The first chunk carries the role,
/// `message_delta` yields the chunk with the finish reason, and `message_stop` yields a last
/// chunk with no choices and the whole usage, after which [`is_finished`](Self::is_finished)
/// is true.
#[derive(Debug, Default)]
pub struct AnthropicStreamTranslator {
    started: bool,
    finished: bool,
    sent_finish: bool,
    id: String,
    model: String,
    created: u64,
    usage: wire::Usage,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_index: HashMap<u32, u32>,
}

impl AnthropicStreamTranslator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `message_stop` has been seen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The chunks one event translates to (often none). An `error` event is an
    /// [`Error::Status`]: 529 for `overloaded_error`, 502 otherwise.
    pub fn push(&mut self, ev: StreamEvent) -> Result<Vec<ChatChunk>> {
        if let StreamEvent::Error { error } = ev {
            let status = if error.kind == "overloaded_error" {
                529
            } else {
                502
            };
            return Err(Error::Status {
                status,
                message: error.message,
                retry_after: None,
            });
        }
        if let StreamEvent::MessageStart { message } = ev {
            self.started = true;
            self.id = message.id;
            self.model = message.model;
            self.created = unix_now();
            self.usage = message.usage;
            return Ok(vec![self.delta(Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..Delta::default()
            })]);
        }
        if !self.started && !matches!(ev, StreamEvent::Ping) {
            return Err(Error::Protocol(format!(
                "stream sent '{}' before message_start",
                ev.name()
            )));
        }
        let chunks = match ev {
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block.kind.as_str() {
                "tool_use" => {
                    let tool = self.tool_index.len() as u32;
                    self.tool_index.insert(index, tool);
                    vec![self.tool_delta(ToolCallDelta {
                        index: tool,
                        id: content_block.id,
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: content_block.name,
                            arguments: Some(String::new()),
                        }),
                    })]
                }
                "text" => match content_block.text {
                    Some(t) if !t.is_empty() => vec![self.text(t)],
                    _ => vec![],
                },
                _ => vec![],
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta.kind.as_str() {
                "text_delta" => match delta.text {
                    Some(t) if !t.is_empty() => vec![self.text(t)],
                    _ => vec![],
                },
                "input_json_delta" => match (self.tool_index.get(&index), delta.partial_json) {
                    (Some(&tool), Some(json)) if !json.is_empty() => {
                        vec![self.tool_delta(ToolCallDelta {
                            index: tool,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(json),
                            }),
                        })]
                    }
                    _ => vec![],
                },
                // Thinking, signatures, citations: OpenAI's format has no place for them.
                _ => vec![],
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.record_usage(u);
                }
                match delta.stop_reason {
                    Some(reason) => vec![self.finish(finish_reason(Some(&reason)))],
                    None => vec![],
                }
            }
            StreamEvent::MessageStop => {
                let mut out = Vec::new();
                if !self.sent_finish {
                    out.push(self.finish("stop"));
                }
                self.finished = true;
                out.push(ChatChunk {
                    choices: Vec::new(),
                    usage: Some(openai_usage(&self.usage)),
                    ..self.chunk(Delta::default(), None)
                });
                out
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping => vec![],
            // Answered before this match.
            StreamEvent::MessageStart { .. } | StreamEvent::Error { .. } => vec![],
        };
        Ok(chunks)
    }

    /// `message_delta` usage is cumulative. Output tokens are always there; input and cache
    /// counts only when they changed during the turn (server tools), so absent ones are kept.
    fn record_usage(&mut self, u: wire::Usage) {
        self.usage.output_tokens = u.output_tokens;
        if u.input_tokens > 0 {
            self.usage.input_tokens = u.input_tokens;
        }
        if u.cache_read_input_tokens.is_some() {
            self.usage.cache_read_input_tokens = u.cache_read_input_tokens;
        }
        if u.cache_creation_input_tokens.is_some() {
            self.usage.cache_creation_input_tokens = u.cache_creation_input_tokens;
        }
    }

    fn text(&self, text: String) -> ChatChunk {
        self.delta(Delta {
            content: Some(text),
            ..Delta::default()
        })
    }

    fn tool_delta(&self, call: ToolCallDelta) -> ChatChunk {
        self.delta(Delta {
            tool_calls: Some(vec![call]),
            ..Delta::default()
        })
    }

    fn finish(&mut self, reason: &str) -> ChatChunk {
        self.sent_finish = true;
        self.chunk(Delta::default(), Some(reason))
    }

    fn delta(&self, delta: Delta) -> ChatChunk {
        self.chunk(delta, None)
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

/// A Messages SSE response read as OpenAI chunks.
struct AnthropicStream {
    resp: UpstreamResponse,
    events: EventChunks,
    done: bool,
}

#[async_trait]
impl ChunkSource for AnthropicStream {
    async fn next_chunk(&mut self) -> Result<Option<ChatChunk>> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.events.next_chunk() {
                Ok(Some(chunk)) => return Ok(Some(chunk)),
                Ok(None) if self.events.is_finished() => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
            let read = match self.resp.next_bytes().await {
                Ok(Some(bytes)) => self.events.push_bytes(&bytes),
                Ok(None) => Err(Error::Protocol("stream ended before it finished".into())),
                Err(e) => Err(e),
            };
            if let Err(e) = read {
                self.done = true;
                return Err(e);
            }
        }
    }
}

/// Bytes of a Messages SSE body in, OpenAI chunks out; no I/O.
#[derive(Debug, Default)]
struct EventChunks {
    decoder: SseDecoder,
    translator: AnthropicStreamTranslator,
    pending: VecDeque<ChatChunk>,
}

impl EventChunks {
    fn push_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.decoder
            .push(bytes)
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    /// The next chunk the buffered bytes make, `None` when more bytes are needed (or the
    /// message is finished).
    fn next_chunk(&mut self) -> Result<Option<ChatChunk>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Ok(Some(chunk));
            }
            if self.translator.is_finished() {
                return Ok(None);
            }
            let Some(ev) = self.decoder.next_event() else {
                return Ok(None);
            };
            if let Some(ev) = parse_event(&ev)? {
                self.pending.extend(self.translator.push(ev)?);
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.translator.is_finished() && self.pending.is_empty()
    }
}

/// Event types [`StreamEvent`] models. Anthropic may add others; those are skipped, as its
/// documentation asks of clients.
const KNOWN_EVENTS: [&str; 8] = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

fn parse_event(ev: &SseEvent) -> Result<Option<StreamEvent>> {
    let value: Value = serde_json::from_str(&ev.data)
        .map_err(|e| Error::Protocol(format!("stream event is not valid JSON: {e}")))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !KNOWN_EVENTS.contains(&kind.as_str()) {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("'{kind}' event has an unexpected shape: {e}")))
}

/// Consecutive turns of one role, merged as the Messages API requires alternating roles.
#[derive(Default)]
struct Turns {
    turns: Vec<(&'static str, Vec<ContentBlock>)>,
}

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<ContentBlock>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    fn finish(self) -> Vec<Message> {
        self.turns
            .into_iter()
            .map(|(role, mut blocks)| {
                // Tool results must open a user turn; text that followed them moves after.
                blocks.sort_by_key(|b| b.kind != "tool_result");
                let content = match blocks.as_slice() {
                    [only] if only.kind == "text" && only.extra.is_empty() => {
                        Content::Text(only.text.clone().unwrap_or_default())
                    }
                    _ => Content::Blocks(blocks),
                };
                Message {
                    role: role.to_owned(),
                    content,
                }
            })
            .collect()
    }
}

fn user_blocks(m: &ChatMessage, i: usize) -> Result<Vec<ContentBlock>> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(text_block(t).into_iter().collect()),
        Some(MessageContent::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                out.extend(part_block(p, i, j)?);
            }
            Ok(out)
        }
    }
}

fn assistant_blocks(m: &ChatMessage, i: usize) -> Result<Vec<ContentBlock>> {
    let mut out = user_blocks(m, i)?;
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        if call.kind != "function" {
            return Err(bad_request(&format!(
                "messages[{i}].tool_calls[{j}]: tool calls of type '{}' are not supported",
                call.kind
            )));
        }
        let input = if call.function.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.function.arguments).map_err(|e| {
                bad_request(&format!(
                    "messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e}"
                ))
            })?
        };
        let mut block = ContentBlock::new("tool_use");
        block.id = Some(call.id.clone());
        block.name = Some(call.function.name.clone());
        block.input = Some(input);
        out.push(block);
    }
    Ok(out)
}

/// A text block, or nothing for empty text (the Messages API rejects empty text blocks).
fn text_block(text: &str) -> Option<ContentBlock> {
    (!text.is_empty()).then(|| ContentBlock::text(text))
}

fn part_block(p: &ContentPart, i: usize, j: usize) -> Result<Option<ContentBlock>> {
    let mut block = match p.kind.as_str() {
        "text" => text_block(p.text.as_deref().unwrap_or_default()),
        "refusal" => text_block(
            p.extra
                .get("refusal")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        "image_url" => {
            let url = p
                .image_url
                .as_ref()
                .map(|u| u.url.as_str())
                .ok_or_else(|| {
                    bad_request(&format!("messages[{i}].content[{j}].image_url is required"))
                })?;
            let mut block = ContentBlock::new("image");
            block.source = Some(image_source(url).map_err(|why| {
                bad_request(&format!("messages[{i}].content[{j}].image_url: {why}"))
            })?);
            Some(block)
        }
        other => {
            return Err(bad_request(&format!(
                "messages[{i}].content[{j}]: content parts of type '{other}' are not supported \
                 by Anthropic models"
            )));
        }
    };
    // Prompt-caching breakpoints are the one part extra Anthropic understands.
    if let (Some(b), Some(cc)) = (block.as_mut(), p.extra.get("cache_control")) {
        b.extra.insert("cache_control".into(), cc.clone());
    }
    Ok(block)
}

/// An image block's `source`: base64 data from a `data:` URL, or an http(s) URL.
fn image_source(url: &str) -> std::result::Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("a data URL needs a ',' before its data")?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or("only base64 data URLs are supported")?;
        let media_type = media_type.split(';').next().unwrap_or_default();
        if media_type.is_empty() {
            return Err("the data URL has no media type".into());
        }
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err("must be an http(s) URL or a base64 data URL".into())
}

fn tool_def(t: &cognitude_protocol::openai::Tool, i: usize) -> Result<ToolDef> {
    let function = match (t.kind.as_str(), &t.function) {
        ("function", Some(f)) => f,
        ("function", None) => {
            return Err(bad_request(&format!("tools[{i}].function is required")));
        }
        (other, _) => {
            return Err(bad_request(&format!(
                "tools[{i}]: tools of type '{other}' are not supported by Anthropic models"
            )));
        }
    };
    Ok(ToolDef {
        name: function.name.clone(),
        description: function.description.clone(),
        input_schema: Some(
            function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
        extra: Extra::new(),
    })
}

fn tool_choice(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => Err(bad_request(&format!(
                "tool_choice '{other}' is not one of auto, required, none"
            ))),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match choice.pointer("/function/name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "tool", "name": name})),
                None => Err(bad_request("tool_choice.function.name is required")),
            }
        }
        _ => Err(bad_request(
            "tool_choice must be auto, required, none or a function",
        )),
    }
}

/// A tool call's `arguments`: the `input` object as a JSON string.
fn tool_arguments(input: Option<&Value>) -> String {
    match input {
        Some(v) => v.to_string(),
        None => "{}".to_owned(),
    }
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic's. Anthropic's `input_tokens` leaves out cache reads and
/// writes; OpenAI's `prompt_tokens` includes them. Both cache counts are kept as extra fields
/// so cache writes can be billed at their own price.
fn openai_usage(u: &wire::Usage) -> Usage {
    let cache_read = u.cache_read_input_tokens.unwrap_or(0);
    let cache_write = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cache_read + cache_write;
    let mut extra = Extra::new();
    extra.insert("cache_creation_input_tokens".into(), cache_write.into());
    extra.insert("cache_read_input_tokens".into(), cache_read.into());
    Usage {
        prompt_tokens: prompt,
        completion_tokens: u.output_tokens,
        total_tokens: prompt + u.output_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(cache_read),
            extra: Extra::new(),
        }),
        completion_tokens_details: None,
        extra,
    }
}

fn bad_request(message: &str) -> Error {
    Error::Status {
        status: 400,
        message: message.to_owned(),
        retry_after: None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognitude_protocol::{StreamAssembler, parse_json};

    fn request(body: Value) -> ChatRequest {
        parse_json(body.to_string().as_bytes()).unwrap()
    }

    /// Translates `req` and compares the JSON Anthropic would receive.
    fn check(req: Value, expected: Value) {
        let translated = to_anthropic_request(&request(req)).unwrap();
        assert_eq!(serde_json::to_value(&translated).unwrap(), expected);
    }

    fn check_rejected(req: Value, message_part: &str) {
        match to_anthropic_request(&request(req)) {
            Err(Error::Status {
                status: 400,
                message,
                retry_after: None,
            }) => assert!(message.contains(message_part), "{message}"),
            other => unreachable!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn system_and_developer_messages_join_and_same_role_turns_merge() {
        check(
            json!({"model": "claude-sonnet-4-5", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
                {"role": "assistant", "content": "Bien."},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "Merci"}
            ]}),
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Hi"},
                        {"type": "text", "text": "How are you?"}
                    ]},
                    {"role": "assistant", "content": "Bien."},
                    {"role": "user", "content": "Merci"}
                ],
                "max_tokens": 4096,
                "system": "Be brief.\n\nAnswer in French."
            }),
        );
    }

    #[test]
    fn tools_tool_calls_and_tool_results_translate() {
        check(
            json!({"model": "m", "max_completion_tokens": 300, "max_tokens": 100,
            "parallel_tool_calls": false,
            "tools": [
                {"type": "function", "function": {"name": "get_weather",
                    "description": "Weather now",
                    "parameters": {"type": "object",
                        "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now"}}
            ],
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2",
                 "content": [{"type": "text", "text": "24C"}]},
                {"role": "user", "content": "Thanks"}
            ]}),
            json!({
                "model": "m",
                "messages": [
                    {"role": "user", "content": "Weather in Paris and Rome?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                         "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                         "input": {"city": "Rome"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                        {"type": "text", "text": "Thanks"}
                    ]}
                ],
                "max_tokens": 300,
                "tools": [
                    {"name": "get_weather", "description": "Weather now",
                     "input_schema": {"type": "object",
                        "properties": {"city": {"type": "string"}}}},
                    {"name": "now", "input_schema": {"type": "object"}}
                ],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}
            }),
        );
    }

    #[test]
    fn tool_results_open_the_user_turn_they_are_merged_into() {
        check(
            json!({"model": "m", "messages": [
                {"role": "user", "content": "Time?"},
                {"role": "assistant", "tool_calls": [{"id": "toolu_9", "type": "function",
                    "function": {"name": "now", "arguments": ""}}]},
                {"role": "user", "content": "Use UTC."},
                {"role": "tool", "tool_call_id": "toolu_9", "content": "12:00"}
            ]}),
            json!({"model": "m", "max_tokens": 4096, "messages": [
                {"role": "user", "content": "Time?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_9", "content": "12:00"},
                    {"type": "text", "text": "Use UTC."}
                ]}
            ]}),
        );
    }

    #[test]
    fn tool_choice_maps_each_openai_form() {
        let cases = [
            (json!("auto"), json!({"type": "auto"})),
            (json!("required"), json!({"type": "any"})),
            (json!("none"), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "now"}}),
                json!({"type": "tool", "name": "now"}),
            ),
        ];
        for (openai, anthropic) in cases {
            let req = request(json!({"model": "m", "tool_choice": openai,
                "tools": [{"type": "function", "function": {"name": "now"}}],
                "messages": [{"role": "user", "content": "x"}]}));
            let translated = to_anthropic_request(&req).unwrap();
            assert_eq!(translated.tool_choice, Some(anthropic), "{openai}");
        }
        check_rejected(
            json!({"model": "m", "tool_choice": "sometimes",
                "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
        );
    }

    #[test]
    fn image_parts_become_base64_or_url_sources() {
        check(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Compare these"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url",
                 "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
            ]}]}),
            json!({"model": "m", "max_tokens": 4096, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Compare these"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url",
                                             "url": "https://example.com/cat.jpg"}}
            ]}]}),
        );
        check_rejected(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]}),
            "messages[0].content[0].image_url: only base64",
        );
        check_rejected(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}]}),
            "http(s) URL",
        );
        check_rejected(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
            "'input_audio'",
        );
    }

    #[test]
    fn sampling_parameters_translate_and_openai_extras_are_dropped() {
        check(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 50, "temperature": 1.7, "top_p": 0.9, "stop": "END",
                "user": "u-42", "seed": 7, "frequency_penalty": 0.5,
                "reasoning_effort": "low", "top_k": 40,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "service_tier": "auto", "response_format": {"type": "json_object"}}),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 50, "stop_sequences": ["END"], "temperature": 1.0,
                "top_p": 0.9, "top_k": 40, "metadata": {"user_id": "u-42"},
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "service_tier": "auto"}),
        );
        let req = request(json!({"model": "m", "temperature": 0.3, "stop": ["a", "b"],
            "messages": [{"role": "user", "content": "x"}]}));
        let translated = to_anthropic_request(&req).unwrap();
        assert_eq!(translated.temperature, Some(0.3));
        assert_eq!(translated.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(
            translated.stop_sequences,
            Some(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn untranslatable_input_is_a_client_error() {
        check_rejected(
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "t", "type": "function",
                    "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[1].tool_calls[0].function.arguments is not valid JSON",
        );
        check_rejected(
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
            "n greater than 1",
        );
        check_rejected(
            json!({"model": "m", "tools": [{"type": "custom", "custom": {"name": "x"}}],
                "messages": [{"role": "user", "content": "x"}]}),
            "tools[0]",
        );
    }

    fn response(body: Value) -> ChatCompletion {
        from_anthropic_response(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn text_response_translates() {
        let done = response(
            json!({"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "content": [
                {"type": "thinking", "thinking": "Simple greeting.", "signature": "EqQB"},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": " there"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 6}}),
        );
        assert_eq!(done.id, "msg_01");
        assert_eq!(done.model, "claude-haiku-4-5");
        assert_eq!(done.object, "chat.completion");
        assert!(done.created > 0);
        let choice = &done.choices[0];
        assert_eq!(choice.message.role, Role::Assistant);
        assert_eq!(
            choice.message.content,
            Some(MessageContent::Text("Hello there".into()))
        );
        assert_eq!(choice.message.tool_calls, None);
        assert_eq!(choice.finish_reason.as_deref(), Some("length"));
        let usage = done.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (12, 6, 18)
        );
        assert_eq!(usage.cached_tokens(), 0);
    }

    #[test]
    fn tool_use_response_has_null_content_and_json_arguments() {
        let done = response(
            json!({"id": "msg_02", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                 "input": {"location": "San Francisco, CA", "unit": "celsius"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 40}}),
        );
        let choice = &done.choices[0];
        assert_eq!(choice.message.content, None);
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "toolu_01A");
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "celsius"})
        );
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_in_the_prompt() {
        let done = response(json!({"id": "msg_03", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 2095, "output_tokens": 503,
                      "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000,
                      "service_tier": "standard"}}));
        assert_eq!(done.choices[0].finish_reason.as_deref(), Some("stop"));
        let usage = done.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 2095 + 1000 + 300);
        assert_eq!(usage.completion_tokens, 503);
        assert_eq!(usage.total_tokens, 2095 + 1000 + 300 + 503);
        assert_eq!(usage.cached_tokens(), 1000);
        assert_eq!(usage.cache_write_tokens(), 300);
        assert_eq!(usage.extra["cache_read_input_tokens"], 1000);
    }

    #[test]
    fn finish_reasons_map() {
        let cases = [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "stop"),
            (None, "stop"),
        ];
        for (anthropic, openai) in cases {
            assert_eq!(finish_reason(anthropic), openai, "{anthropic:?}");
        }
    }

    /// Runs an SSE body through the stream's decoding, delivered in small pieces as the
    /// network would, and returns the chunks or the error.
    fn run_stream(events: &[Value]) -> Result<Vec<ChatChunk>> {
        let body: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect();
        let mut decoding = EventChunks::default();
        let mut chunks = Vec::new();
        for piece in body.as_bytes().chunks(7) {
            decoding.push_bytes(piece)?;
            while let Some(c) = decoding.next_chunk()? {
                chunks.push(c);
            }
        }
        if decoding.is_finished() {
            Ok(chunks)
        } else {
            Err(Error::Protocol("stream ended before it finished".into()))
        }
    }

    fn assemble(chunks: &[ChatChunk]) -> ChatCompletion {
        let mut a = StreamAssembler::new();
        for c in chunks {
            a.push(c);
        }
        let mut done = a.finish();
        assert!(done.created > 0);
        done.created = 0;
        done
    }

    fn message_start(usage: Value) -> Value {
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null,
            "usage": usage}})
    }

    fn text_stream() -> Vec<Value> {
        vec![
            message_start(
                json!({"input_tokens": 472, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 2048, "output_tokens": 2,
                "service_tier": "standard"}),
            ),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "Hello"}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": ", world!"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": 15}}),
            json!({"type": "message_stop"}),
        ]
    }

    #[test]
    fn text_stream_assembles_to_the_completion() {
        let chunks = run_stream(&text_stream()).unwrap();
        let first = &chunks[0].choices[0].delta;
        assert_eq!(first.role, Some(Role::Assistant));
        assert_eq!(first.content.as_deref(), Some(""));
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
        assert_eq!(
            serde_json::to_value(assemble(&chunks)).unwrap(),
            json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion",
                "created": 0, "model": "claude-sonnet-4-5-20250929",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello, world!"}}],
                "usage": {"prompt_tokens": 2520, "completion_tokens": 15,
                    "total_tokens": 2535, "prompt_tokens_details": {"cached_tokens": 2048},
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048}})
        );
    }

    #[test]
    fn tool_use_stream_assembles_to_the_completion() {
        let events = vec![
            message_start(json!({"input_tokens": 400, "output_tokens": 1,
                "cache_creation_input_tokens": 120, "cache_read_input_tokens": 0})),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "thinking_delta", "thinking": "The user wants weather."}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "text_delta", "text": "Let me check."}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {
                "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2,
                   "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 2,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}}),
            json!({"type": "content_block_delta", "index": 2,
                   "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {
                "type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}}),
            json!({"type": "content_block_delta", "index": 3,
                   "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                   "usage": {"output_tokens": 89}}),
            json!({"type": "message_stop"}),
        ];
        let chunks = run_stream(&events).unwrap();
        let first_call = chunks
            .iter()
            .find_map(|c| c.choices.first()?.delta.tool_calls.as_ref())
            .unwrap();
        assert_eq!(first_call[0].kind.as_deref(), Some("function"));
        assert_eq!(
            serde_json::to_value(assemble(&chunks)).unwrap(),
            json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion",
                "created": 0, "model": "claude-sonnet-4-5-20250929",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": "Let me check.",
                        "tool_calls": [
                            {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                             "function": {"name": "get_weather",
                                          "arguments": "{\"location\": \"San Francisco, CA\"}"}},
                            {"id": "toolu_02", "type": "function",
                             "function": {"name": "get_time", "arguments": "{}"}}
                        ]}}],
                "usage": {"prompt_tokens": 520, "completion_tokens": 89,
                    "total_tokens": 609, "prompt_tokens_details": {"cached_tokens": 0},
                    "cache_creation_input_tokens": 120, "cache_read_input_tokens": 0}})
        );
    }

    #[test]
    fn stream_error_event_is_an_upstream_status() {
        let mut events = text_stream();
        events.truncate(4);
        let mut overloaded = events.clone();
        overloaded.push(json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        assert_eq!(
            run_stream(&overloaded).unwrap_err(),
            Error::Status {
                status: 529,
                message: "Overloaded".into(),
                retry_after: None
            }
        );
        events.push(json!({"type": "error",
            "error": {"type": "api_error", "message": "Internal server error"}}));
        assert_eq!(
            run_stream(&events).unwrap_err(),
            Error::Status {
                status: 502,
                message: "Internal server error".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn stream_cut_before_message_stop_is_an_error() {
        let mut events = text_stream();
        events.pop();
        assert_eq!(
            run_stream(&events).unwrap_err(),
            Error::Protocol("stream ended before it finished".into())
        );
    }

    #[test]
    fn unknown_stream_events_are_skipped_and_events_before_start_rejected() {
        let mut events = text_stream();
        events.insert(
            3,
            json!({"type": "content_block_annotation", "index": 0, "note": "new"}),
        );
        let with_unknown = assemble(&run_stream(&events).unwrap());
        assert_eq!(with_unknown, assemble(&run_stream(&text_stream()).unwrap()));

        let mut t = AnthropicStreamTranslator::new();
        assert!(t.push(StreamEvent::Ping).unwrap().is_empty());
        assert!(matches!(
            t.push(StreamEvent::MessageStop),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn message_stop_without_a_stop_reason_still_finishes_the_choice() {
        let mut events = text_stream();
        events.retain(|e| e["type"] != "message_delta");
        let done = assemble(&run_stream(&events).unwrap());
        assert_eq!(done.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn provider_sends_anthropic_headers_to_the_messages_url() {
        let client = HttpClient::new(crate::Timeouts::default()).unwrap();
        let extra = [("anthropic-beta".to_owned(), "prompt-caching".to_owned())];
        let p = AnthropicProvider::new(
            "anthropic",
            "https://api.anthropic.com/v1/",
            Some("sk-ant-test"),
            &extra,
            client.clone(),
        )
        .unwrap();
        assert_eq!(
            p.endpoint.uri.to_string(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(p.endpoint.headers["x-api-key"], "sk-ant-test");
        assert!(p.endpoint.headers["x-api-key"].is_sensitive());
        assert_eq!(p.endpoint.headers["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(p.endpoint.headers["content-type"], "application/json");
        assert_eq!(p.endpoint.headers["anthropic-beta"], "prompt-caching");
        assert!(matches!(
            AnthropicProvider::new("a", "not a url", None, &[], client),
            Err(Error::Config(_))
        ));
    }
}
