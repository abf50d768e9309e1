//! Turns a stored completion back into the chunks of a live stream.

use cognitude_protocol::openai::{FunctionCallDelta, ToolCallDelta};
use cognitude_protocol::{ChatChunk, ChatCompletion, ChunkChoice, Delta, Extra};

/// How a cached completion is replayed as a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// Send the final usage chunk (the client set `stream_options.include_usage`).
    pub include_usage: bool,
    /// Characters of content or tool-call arguments per chunk.
    pub piece_chars: usize,
}

impl ReplayOptions {
    pub fn new(include_usage: bool) -> ReplayOptions {
        ReplayOptions {
            include_usage,
            piece_chars: 16,
        }
    }
}

/// The chunk sequence a live stream of `completion` would have sent, choice by choice: a role
/// chunk, the content in pieces, each tool call (id, type and name first, then its arguments in
/// pieces), a chunk with the finish reason, and at the end the usage chunk when asked for.
///
/// Assembling the chunks (as [`cognitude_protocol::StreamAssembler`] or a client SDK does) gives
/// the original message back. Fields a stream carries elsewhere are moved where streams carry
/// them: the completion's unknown fields onto every chunk, the message's (such as `refusal`) onto
/// the role chunk, a choice's `logprobs` onto its first content chunk, a choice's unknown fields
/// onto its finish chunk. The caller writes each chunk as an SSE `data:` event and ends with
/// `data: [DONE]`.
pub fn replay(completion: &ChatCompletion, options: ReplayOptions) -> Vec<ChatChunk> {
    let piece = options.piece_chars.max(1);
    let chunk = |choice: ChunkChoice| ChatChunk {
        id: completion.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: completion.created,
        model: completion.model.clone(),
        choices: vec![choice],
        usage: None,
        system_fingerprint: completion.system_fingerprint.clone(),
        extra: completion.extra.clone(),
    };
    let choice = |index: u32, delta: Delta| ChunkChoice {
        index,
        delta,
        finish_reason: None,
        logprobs: None,
        extra: Extra::new(),
    };

    let mut out = Vec::new();
    for c in &completion.choices {
        let msg = &c.message;
        let mut logprobs = c.logprobs.clone();
        out.push(chunk(choice(
            c.index,
            Delta {
                role: Some(msg.role),
                extra: msg.extra.clone(),
                ..Delta::default()
            },
        )));
        if let Some(content) = &msg.content {
            let text = content.text();
            for p in pieces(&text, piece) {
                let mut ch = choice(
                    c.index,
                    Delta {
                        content: Some(p.to_owned()),
                        ..Delta::default()
                    },
                );
                ch.logprobs = logprobs.take();
                out.push(chunk(ch));
            }
        }
        for (ti, call) in msg.tool_calls.iter().flatten().enumerate() {
            let ti = u32::try_from(ti).unwrap_or(u32::MAX);
            for (pi, args) in pieces(&call.function.arguments, piece)
                .into_iter()
                .enumerate()
            {
                let first = pi == 0;
                let delta = ToolCallDelta {
                    index: ti,
                    id: first.then(|| call.id.clone()),
                    kind: first.then(|| call.kind.clone()),
                    function: Some(FunctionCallDelta {
                        name: first.then(|| call.function.name.clone()),
                        arguments: Some(args.to_owned()),
                    }),
                };
                out.push(chunk(choice(
                    c.index,
                    Delta {
                        tool_calls: Some(vec![delta]),
                        ..Delta::default()
                    },
                )));
            }
        }
        let mut last = choice(c.index, Delta::default());
        last.finish_reason.clone_from(&c.finish_reason);
        last.logprobs = logprobs.take();
        last.extra.clone_from(&c.extra);
        out.push(chunk(last));
    }
    if options.include_usage
        && let Some(usage) = &completion.usage
    {
        let mut ch = chunk(choice(0, Delta::default()));
        ch.choices.clear();
        ch.usage = Some(usage.clone());
        out.push(ch);
    }
    out
}

/// Splits `text` into pieces of at most `n` characters; one empty piece for empty text, so
/// that an empty content string still reaches the client.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    if text.is_empty() {
        return vec![""];
    }
    let mut out = Vec::with_capacity(text.len() / n + 1);
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == n {
            out.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    out.push(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use cognitude_protocol::StreamAssembler;
    use serde_json::json;

    use super::*;

    fn assemble(chunks: &[ChatChunk]) -> ChatCompletion {
        let mut a = StreamAssembler::new();
        for c in chunks {
            // Through JSON, as a client receives them.
            let wire = serde_json::to_string(c).unwrap();
            a.push(&serde_json::from_str(&wire).unwrap());
        }
        assert!(a.is_finished());
        a.finish()
    }

    fn parse(v: serde_json::Value) -> ChatCompletion {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn replay_of_text_reassembles_to_the_original() {
        let original = parse(json!({
            "id": "chatcmpl-9", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant",
                            "content": "Héllo wörld, this is a longer answer with ünïcode ✓."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
        }));
        let chunks = replay(&original, ReplayOptions::new(true));
        assert!(chunks.len() > 4, "content was split into pieces");
        assert_eq!(assemble(&chunks), original);
        assert_eq!(
            chunks[0].choices[0].delta.role,
            Some(cognitude_protocol::Role::Assistant)
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.system_fingerprint.as_deref() == Some("fp_1"))
        );
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty() && last.usage.is_some());
    }

    #[test]
    fn replay_preserves_tool_calls_across_choices() {
        let original = parse(json!({
            "id": "c2", "object": "chat.completion", "created": 5, "model": "gpt-4o",
            "choices": [
                {"index": 0, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function":
                        {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
                    {"id": "call_b", "type": "function", "function":
                        {"name": "get_time", "arguments": "{}"}}]}},
                {"index": 1, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_c", "type": "function", "function":
                        {"name": "noop", "arguments": ""}}]}}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        }));
        let chunks = replay(&original, ReplayOptions::new(true));
        assert_eq!(assemble(&chunks), original);
        // Names and ids come once, on each call's first delta.
        let named = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .filter(|t| t.id.is_some())
            .count();
        assert_eq!(named, 3);
    }

    #[test]
    fn the_usage_chunk_is_sent_only_when_asked() {
        let original = parse(json!({
            "id": "c3", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ""}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
        }));
        let without = replay(&original, ReplayOptions::new(false));
        assert!(without.iter().all(|c| c.usage.is_none()));
        let mut expected = original.clone();
        expected.usage = None;
        assert_eq!(assemble(&without), expected, "empty content survives");
        let with = replay(&original, ReplayOptions::new(true));
        assert_eq!(with.len(), without.len() + 1);
        assert_eq!(assemble(&with), original);
    }

    #[test]
    fn fields_streams_carry_elsewhere_are_moved_not_dropped() {
        let original = parse(json!({
            "id": "c4", "created": 1, "model": "m", "service_tier": "default",
            "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": 42,
                         "logprobs": {"content": []},
                         "message": {"role": "assistant", "content": "hi", "refusal": null}}]
        }));
        let chunks = replay(&original, ReplayOptions::new(false));
        assert!(chunks.iter().all(|c| c.extra["service_tier"] == "default"));
        assert!(chunks[0].choices[0].delta.extra.contains_key("refusal"));
        assert_eq!(chunks[1].choices[0].logprobs, Some(json!({"content": []})));
        let last = chunks.last().unwrap();
        assert_eq!(last.choices[0].extra["stop_reason"], 42);
        assert_eq!(last.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn pieces_split_on_character_boundaries() {
        assert_eq!(pieces("", 3), vec![""]);
        assert_eq!(pieces("abcdefg", 3), vec!["abc", "def", "g"]);
        assert_eq!(pieces("äöüß", 3), vec!["äöü", "ß"]);
        assert_eq!(pieces("abc", 3), vec!["abc"]);
    }
}
