//! An in-process provider that answers deterministically without a network: the embedded
//! default when no provider key is configured, and a stand-in for demos.

use std::collections::VecDeque;

use async_trait::async_trait;
use cognitude_protocol::openai::{ChunkChoice, Delta};
use cognitude_protocol::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, Choice, Extra, Role, Usage,
};

use crate::{ChunkSource, ChunkStream, Provider, Result};

/// Answers every request with a fixed sentence that quotes the last user message.
#[derive(Debug, Clone)]
pub struct MockProvider {
    name: String,
}

impl MockProvider {
    pub fn new(name: impl Into<String>) -> MockProvider {
        MockProvider { name: name.into() }
    }
}

/// The deterministic answer to a request.
fn answer(req: &ChatRequest) -> String {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(ChatMessage::text_content)
        .unwrap_or_default();
    let quoted: String = last_user.chars().take(200).collect();
    format!(
        "This is Cognitude's built-in mock provider (model {}). You said: {quoted}",
        req.model
    )
}

/// A rough token count (four bytes a token), enough for a mock's usage figures.
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

fn usage_for(req: &ChatRequest, completion: &str) -> Usage {
    let prompt: u64 = req
        .messages
        .iter()
        .map(|m| estimate_tokens(&m.text_content()) + 4)
        .sum();
    let completion = estimate_tokens(completion);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    }
}

fn id_for(req: &ChatRequest) -> String {
    // Deterministic per request text, so demos are repeatable.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in &req.messages {
        for b in m.text_content().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("chatcmpl-mock-{h:016x}")
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let text = answer(req);
        let usage = usage_for(req, &text);
        Ok(ChatCompletion {
            id: id_for(req),
            object: "chat.completion".into(),
            created: 0,
            model: req.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ChatMessage::text(Role::Assistant, text),
                finish_reason: Some("stop".into()),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(usage),
            system_fingerprint: None,
            extra: Extra::new(),
        })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        let text = answer(req);
        let usage = usage_for(req, &text);
        let id = id_for(req);
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: req.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let choice = |delta: Delta, finish: Option<&str>| ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_owned),
            logprobs: None,
            extra: Extra::new(),
        };
        let mut chunks = VecDeque::new();
        chunks.push_back(chunk(
            vec![choice(
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            )],
            None,
        ));
        for word in text.split_inclusive(' ') {
            chunks.push_back(chunk(
                vec![choice(
                    Delta {
                        content: Some(word.to_owned()),
                        ..Delta::default()
                    },
                    None,
                )],
                None,
            ));
        }
        chunks.push_back(chunk(vec![choice(Delta::default(), Some("stop"))], None));
        chunks.push_back(chunk(Vec::new(), Some(usage)));
        Ok(Box::new(MockStream { chunks }))
    }
}

struct MockStream {
    chunks: VecDeque<ChatChunk>,
}

#[async_trait]
impl ChunkSource for MockStream {
    async fn next_chunk(&mut self) -> Result<Option<ChatChunk>> {
        Ok(self.chunks.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognitude_protocol::{StreamAssembler, parse_json};

    #[tokio::test]
    async fn stream_assembles_to_the_complete_answer() {
        let p = MockProvider::new("mock");
        let req: ChatRequest =
            parse_json(br#"{"model":"m","messages":[{"role":"user","content":"ping pong"}]}"#)
                .unwrap();
        let full = p.complete(&req).await.unwrap();
        let mut s = p.stream(&req).await.unwrap();
        let mut a = StreamAssembler::new();
        while let Some(c) = s.next_chunk().await.unwrap() {
            a.push(&c);
        }
        let assembled = a.finish();
        assert_eq!(
            assembled.choices[0].message.text_content(),
            full.choices[0].message.text_content()
        );
        assert_eq!(assembled.usage, full.usage);
        assert!(full.choices[0].message.text_content().contains("ping pong"));
    }
}
