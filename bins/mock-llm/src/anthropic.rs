//! The Anthropic Messages side: header checks, reading a request, and writing responses, named
//! stream events and error bodies the way Anthropic's API writes them.

use bytes::Bytes;
use cognitude_protocol::anthropic::{
    BlockDelta, ContentBlock, ErrorDetail, MessageDeltaBody, MessagesRequest, MessagesResponse,
    StreamEvent, SystemPrompt, Usage,
};
use cognitude_protocol::{Extra, sse};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::reply::{Call, Finish, Prompt, Reply};
use crate::server::encode;
use crate::stream::Script;

/// The id of every mock `tool_use` block.
pub(crate) const TOOL_USE_ID: &str = "toolu_mock_1";

/// Checks the headers Anthropic's API requires, failing as it does.
pub(crate) fn check_headers(headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let key = headers.get("x-api-key").map(|v| v.as_bytes());
    if key.is_none_or(<[u8]>::is_empty) {
        return Err((StatusCode::UNAUTHORIZED, "x-api-key header is required"));
    }
    if !headers.contains_key("anthropic-version") {
        return Err((
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        ));
    }
    Ok(())
}

/// The format-neutral view of a Messages request.
pub(crate) fn call(req: &MessagesRequest) -> Call {
    let user_text = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.text())
        .unwrap_or_default();
    Call {
        model: req.model.clone(),
        stream: req.stream.unwrap_or(false),
        include_usage: false,
        prompt: Prompt {
            texts: req
                .system
                .iter()
                .map(SystemPrompt::text)
                .chain(req.messages.iter().map(|m| m.content.text()))
                .collect(),
            user_text,
            max_tokens: Some(req.max_tokens),
            first_tool: req.tools.iter().flatten().next().map(|t| t.name.clone()),
        },
    }
}

/// The response to a non-streaming request.
pub(crate) fn response(reply: &Reply, model: &str, seq: u64) -> MessagesResponse {
    let block = match &reply.tool {
        Some(name) => tool_use(name, json!({"location": "Paris"})),
        None => ContentBlock::text(reply.text()),
    };
    MessagesResponse {
        content: vec![block],
        stop_reason: Some(stop_reason(reply.finish).to_owned()),
        usage: usage(reply.prompt_tokens, reply.completion_tokens),
        ..message(model, seq)
    }
}

/// The named events of a stream: `message_start`, `content_block_start`, `ping`, one
/// `content_block_delta` per piece, `content_block_stop`, `message_delta`, `message_stop`.
pub(crate) fn script(reply: &Reply, model: &str, seq: u64) -> Script {
    let event = |e: StreamEvent| sse::encode_named(e.name(), &encode(&e));
    let start = MessagesResponse {
        usage: usage(reply.prompt_tokens, 1),
        ..message(model, seq)
    };
    let first_block = match &reply.tool {
        Some(name) => tool_use(name, json!({})),
        None => ContentBlock::text(""),
    };
    let head = vec![
        event(StreamEvent::MessageStart { message: start }),
        event(StreamEvent::ContentBlockStart {
            index: 0,
            content_block: first_block,
        }),
        event(StreamEvent::Ping),
    ];
    let content = reply
        .pieces
        .iter()
        .map(|piece| {
            let delta = if reply.tool.is_some() {
                BlockDelta {
                    kind: "input_json_delta".to_owned(),
                    text: None,
                    partial_json: Some(piece.clone()),
                    extra: Extra::new(),
                }
            } else {
                BlockDelta {
                    kind: "text_delta".to_owned(),
                    text: Some(piece.clone()),
                    partial_json: None,
                    extra: Extra::new(),
                }
            };
            event(StreamEvent::ContentBlockDelta { index: 0, delta })
        })
        .collect();
    let tail = vec![
        event(StreamEvent::ContentBlockStop { index: 0 }),
        event(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop_reason(reply.finish).to_owned()),
                stop_sequence: None,
            },
            // Cumulative, as the current API reports it: input tokens are repeated here.
            usage: Some(usage(reply.prompt_tokens, reply.completion_tokens)),
        }),
        event(StreamEvent::MessageStop),
    ];
    Script {
        head,
        content,
        malformed: Bytes::from_static(b"event: content_block_delta\ndata: {not json\n\n"),
        tail,
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}` with the error type Anthropic uses for
/// `status`. The stream's `error` event has exactly the shape of this body.
pub(crate) fn error(status: StatusCode, message: &str) -> StreamEvent {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    StreamEvent::Error {
        error: ErrorDetail {
            kind: kind.to_owned(),
            message: message.to_owned(),
        },
    }
}

/// A message with no content yet.
fn message(model: &str, seq: u64) -> MessagesResponse {
    MessagesResponse {
        id: format!("msg_mock_{seq}"),
        kind: "message".to_owned(),
        role: "assistant".to_owned(),
        model: model.to_owned(),
        content: Vec::new(),
        stop_reason: None,
        stop_sequence: None,
        usage: Usage::default(),
        extra: Extra::new(),
    }
}

fn tool_use(name: &str, input: serde_json::Value) -> ContentBlock {
    let mut block = ContentBlock::new("tool_use");
    block.id = Some(TOOL_USE_ID.to_owned());
    block.name = Some(name.to_owned());
    block.input = Some(input);
    block
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCall => "tool_use",
    }
}

fn usage(input_tokens: u64, output_tokens: u64) -> Usage {
    Usage {
        input_tokens,
        output_tokens,
        cache_creation_input_tokens: Some(0),
        cache_read_input_tokens: Some(0),
        extra: Extra::new(),
    }
}

#[cfg(test)]
mod tests {
    use cognitude_protocol::sse::SseDecoder;
    use serde_json::Value;

    use super::*;
    use crate::directive::Directive;
    use crate::reply::reply;

    fn request(json: Value) -> MessagesRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn system_prompt_counts_as_a_message() {
        let req = request(json!({"model":"c","max_tokens":100,"system":"be brief",
            "messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}));
        let call = call(&req);
        assert_eq!(call.prompt.texts, ["be brief", "hi there"]);
        assert_eq!(call.prompt.user_text, "hi there");
        assert_eq!(call.prompt.max_tokens, Some(100));
        assert!(!call.stream);
    }

    #[test]
    fn stream_events_come_in_anthropic_order() {
        let req = request(json!({"model":"c","max_tokens":2,"stream":true,
            "messages":[{"role":"user","content":"hi"}]}));
        let d = Directive {
            words: Some(5),
            ..Directive::default()
        };
        let r = reply(None, &d, &call(&req).prompt);
        let s = script(&r, "c", 3);
        let mut decoder = SseDecoder::default();
        for frame in s.head.iter().chain(&s.content).chain(&s.tail) {
            decoder.push(frame).unwrap();
        }
        let events: Vec<_> = std::iter::from_fn(|| decoder.next_event()).collect();
        let names: Vec<_> = events.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let parsed: Vec<StreamEvent> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        match &parsed[6] {
            StreamEvent::MessageDelta { delta, usage } => {
                assert_eq!(delta.stop_reason.as_deref(), Some("max_tokens"));
                assert_eq!(usage.as_ref().map(|u| u.output_tokens), Some(2));
            }
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn missing_headers_fail_like_anthropic() {
        let mut headers = HeaderMap::new();
        assert_eq!(check_headers(&headers).unwrap_err().0, 401);
        headers.insert("x-api-key", http::HeaderValue::from_static("k"));
        assert_eq!(check_headers(&headers).unwrap_err().0, 400);
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
        assert!(check_headers(&headers).is_ok());
        let body = serde_json::to_value(error(StatusCode::UNAUTHORIZED, "no key")).unwrap();
        assert_eq!(
            body,
            json!({"type":"error","error":{"type":"authentication_error","message":"no key"}})
        );
    }
}
