//! The OpenAI chat completions side: reading a request, and writing completions, stream chunks,
//! the models list and error bodies the way OpenAI's API writes them.

use bytes::Bytes;
use cognitude_protocol::openai::{
    ChunkChoice, CompletionTokensDetails, Delta, FunctionCall, FunctionCallDelta,
    PromptTokensDetails, ToolCall, ToolCallDelta,
};
use cognitude_protocol::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, Choice, ErrorBody, Extra, MessageContent,
    ModelList, ModelObject, Role, Usage, sse,
};
use http::StatusCode;
use serde_json::{Value, json};

use crate::reply::{Call, Finish, Prompt, Reply};
use crate::server::encode;
use crate::stream::Script;

/// The id of every mock tool call.
pub(crate) const TOOL_CALL_ID: &str = "call_mock_1";

const FINGERPRINT: &str = "fp_mock";

/// The models `GET /v1/models` lists, with their owners.
const MODELS: [(&str, &str); 4] = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("mock-1", "mock-llm"),
];

/// The format-neutral view of a chat completions request.
pub(crate) fn call(req: &ChatRequest) -> Call {
    let user_text = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(ChatMessage::text_content)
        .unwrap_or_default();
    Call {
        model: req.model.clone(),
        stream: req.is_stream(),
        include_usage: req.wants_stream_usage(),
        prompt: Prompt {
            texts: req.messages.iter().map(ChatMessage::text_content).collect(),
            user_text,
            max_tokens: req.max_output_tokens(),
            first_tool: req
                .tools
                .iter()
                .flatten()
                .find_map(|t| t.function.as_ref().map(|f| f.name.clone())),
        },
    }
}

/// A `chat.completion` for a non-streaming request.
pub(crate) fn completion(reply: &Reply, model: &str, seq: u64, created: u64) -> ChatCompletion {
    let (content, tool_calls) = match &reply.tool {
        Some(name) => (
            None,
            Some(vec![ToolCall {
                id: TOOL_CALL_ID.to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: reply.text(),
                },
                extra: Extra::new(),
            }]),
        ),
        None => (Some(MessageContent::Text(reply.text())), None),
    };
    let mut message = ChatMessage {
        role: Role::Assistant,
        content,
        name: None,
        tool_calls,
        tool_call_id: None,
        extra: Extra::new(),
    };
    message.extra.insert("refusal".to_owned(), Value::Null);
    message.extra.insert("annotations".to_owned(), json!([]));
    ChatCompletion {
        id: id(seq),
        object: "chat.completion".to_owned(),
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(reply.finish).to_owned()),
            logprobs: None,
            extra: null_logprobs(),
        }],
        usage: Some(usage(reply)),
        system_fingerprint: Some(FINGERPRINT.to_owned()),
        extra: service_tier(),
    }
}

/// The events of a stream: a role chunk, one chunk per piece, a finish chunk, the usage chunk
/// when asked for, and `[DONE]`.
pub(crate) fn script(
    reply: &Reply,
    model: &str,
    seq: u64,
    created: u64,
    include_usage: bool,
) -> Script {
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
        let mut extra = service_tier();
        if include_usage && usage.is_none() {
            // OpenAI writes `"usage": null` on every chunk but the last once usage is requested.
            extra.insert("usage".to_owned(), Value::Null);
        }
        let chunk = ChatChunk {
            id: id(seq),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: model.to_owned(),
            choices,
            usage,
            system_fingerprint: Some(FINGERPRINT.to_owned()),
            extra,
        };
        sse::encode_data(&encode(&chunk))
    };
    let choice = |delta: Delta, finish: Option<Finish>| ChunkChoice {
        index: 0,
        delta,
        finish_reason: finish.map(|f| finish_reason(f).to_owned()),
        logprobs: None,
        extra: null_logprobs(),
    };

    let mut first = Delta {
        role: Some(Role::Assistant),
        ..Delta::default()
    };
    match &reply.tool {
        Some(name) => {
            first.tool_calls = Some(vec![ToolCallDelta {
                index: 0,
                id: Some(TOOL_CALL_ID.to_owned()),
                kind: Some("function".to_owned()),
                function: Some(FunctionCallDelta {
                    name: Some(name.clone()),
                    arguments: Some(String::new()),
                }),
            }]);
        }
        None => {
            first.content = Some(String::new());
            first.extra.insert("refusal".to_owned(), Value::Null);
        }
    }
    let head = vec![chunk(vec![choice(first, None)], None)];

    let content = reply
        .pieces
        .iter()
        .map(|piece| {
            let mut delta = Delta::default();
            if reply.tool.is_some() {
                delta.tool_calls = Some(vec![ToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(piece.clone()),
                    }),
                }]);
            } else {
                delta.content = Some(piece.clone());
            }
            chunk(vec![choice(delta, None)], None)
        })
        .collect();

    let mut tail = vec![chunk(
        vec![choice(Delta::default(), Some(reply.finish))],
        None,
    )];
    if include_usage {
        tail.push(chunk(Vec::new(), Some(usage(reply))));
    }
    tail.push(sse::done());
    Script {
        head,
        content,
        malformed: Bytes::from_static(b"data: {not json\n\n"),
        tail,
    }
}

/// The `GET /v1/models` body.
pub(crate) fn models() -> ModelList {
    ModelList {
        object: "list".to_owned(),
        data: MODELS
            .iter()
            .map(|(id, owner)| ModelObject {
                id: (*id).to_owned(),
                object: "model".to_owned(),
                // Fixed, so the list is the same on every run.
                created: 1_700_000_000,
                owned_by: (*owner).to_owned(),
            })
            .collect(),
    }
}

/// An error body with the `type` (and `code`) OpenAI uses for `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> ErrorBody {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    let body = ErrorBody::new(kind, message);
    match code {
        Some(code) => body.with_code(code),
        None => body,
    }
}

fn id(seq: u64) -> String {
    format!("chatcmpl-mock-{seq}")
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCall => "tool_calls",
    }
}

fn usage(reply: &Reply) -> Usage {
    let mut prompt_extra = Extra::new();
    prompt_extra.insert("audio_tokens".to_owned(), json!(0));
    let mut completion_extra = Extra::new();
    for field in [
        "audio_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
    ] {
        completion_extra.insert(field.to_owned(), json!(0));
    }
    Usage {
        prompt_tokens: reply.prompt_tokens,
        completion_tokens: reply.completion_tokens,
        total_tokens: reply.prompt_tokens + reply.completion_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(0),
            extra: prompt_extra,
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(0),
            extra: completion_extra,
        }),
        extra: Extra::new(),
    }
}

/// `"logprobs": null`: OpenAI writes it on every choice, while the wire type leaves out a `None`.
fn null_logprobs() -> Extra {
    let mut extra = Extra::new();
    extra.insert("logprobs".to_owned(), Value::Null);
    extra
}

fn service_tier() -> Extra {
    let mut extra = Extra::new();
    extra.insert("service_tier".to_owned(), json!("default"));
    extra
}

#[cfg(test)]
mod tests {
    use cognitude_protocol::StreamAssembler;
    use cognitude_protocol::sse::SseDecoder;

    use super::*;
    use crate::directive::Directive;
    use crate::reply::reply;

    fn request(json: Value) -> ChatRequest {
        serde_json::from_value(json).unwrap()
    }

    fn chunks(script: &Script) -> Vec<String> {
        let mut decoder = SseDecoder::default();
        for frame in script
            .head
            .iter()
            .chain(&script.content)
            .chain(&script.tail)
        {
            decoder.push(frame).unwrap();
        }
        std::iter::from_fn(|| decoder.next_event().map(|e| e.data)).collect()
    }

    #[test]
    fn a_streamed_answer_assembles_to_the_non_streamed_one() {
        let req = request(json!({"model":"m","max_tokens":4,"stream":true,
            "messages":[{"role":"system","content":"be brief"},
                        {"role":"user","content":"count for me"}]}));
        let call = call(&req);
        let d = Directive {
            words: Some(9),
            ..Directive::default()
        };
        let r = reply(None, &d, &call.prompt);
        let whole = completion(&r, "m", 7, 1);
        let events = chunks(&script(&r, "m", 7, 1, true));
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let mut assembler = StreamAssembler::new();
        for e in &events[..events.len() - 1] {
            assembler.push(&serde_json::from_str(e).unwrap());
        }
        let assembled = assembler.finish();
        assert_eq!(assembled.id, "chatcmpl-mock-7");
        assert_eq!(
            assembled.choices[0].message.text_content(),
            whole.choices[0].message.text_content()
        );
        assert_eq!(whole.choices[0].message.text_content(), "w1 w2 w3 w4");
        assert_eq!(
            assembled.choices[0].finish_reason.as_deref(),
            Some("length")
        );
        assert_eq!(assembled.usage, whole.usage);
    }

    #[test]
    fn tool_calls_stream_as_argument_pieces() {
        let req = request(
            json!({"model":"m","messages":[{"role":"user","content":"weather?"}],
            "tools":[{"type":"function","function":{"name":"get_weather"}}]}),
        );
        let d = Directive {
            tool_call: Some(true),
            ..Directive::default()
        };
        let r = reply(None, &d, &call(&req).prompt);
        let whole = serde_json::to_value(completion(&r, "m", 1, 1)).unwrap();
        assert_eq!(whole["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        let events = chunks(&script(&r, "m", 1, 1, false));
        // role + call header, three argument pieces, finish, [DONE]
        assert_eq!(events.len(), 6);
        let mut assembler = StreamAssembler::new();
        for e in &events[..5] {
            assembler.push(&serde_json::from_str(e).unwrap());
        }
        let call = &assembler.finish().choices[0]
            .message
            .tool_calls
            .clone()
            .unwrap()[0];
        assert_eq!(call.id, TOOL_CALL_ID);
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, crate::reply::TOOL_ARGUMENTS);
    }

    #[test]
    fn error_types_follow_the_status() {
        let kind = |s: u16| error(StatusCode::from_u16(s).unwrap(), "x").error.kind;
        assert_eq!(kind(500), "server_error");
        assert_eq!(kind(503), "server_error");
        assert_eq!(kind(400), "invalid_request_error");
        assert_eq!(kind(429), "requests");
    }
}
