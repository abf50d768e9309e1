//! Wire types for the APIs Cognitude speaks: OpenAI chat completions (what clients send) and the
//! Anthropic Messages API (one of the upstreams), plus server-sent-event framing and the OpenAI
//! error body.
//!
//! Pure: no I/O, no async runtime. Every request and response type keeps unknown fields in an
//! `extra` map and writes them back, so the proxy forwards parameters it does not know yet.
//!
//! ```
//! use cognitude_protocol::{parse_json, ChatRequest};
//!
//! let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],
//!                 "reasoning_effort":"low"}"#;
//! let req: ChatRequest = parse_json(body).unwrap();
//! assert_eq!(req.messages[0].text_content(), "Hi");
//! assert_eq!(req.extra["reasoning_effort"], "low");
//!
//! let err = parse_json::<ChatRequest>(br#"{"model":"m","messages":[],"temperature":"hot"}"#)
//!     .unwrap_err();
//! assert_eq!(err.field.as_deref(), Some("temperature"));
//! ```

pub mod anthropic;
mod error;
pub mod openai;
pub mod sse;

pub use error::{ErrorBody, ErrorObject, InvalidField, JsonError, parse_json};
pub use openai::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, Choice, ChunkChoice, Delta, Extra,
    MessageContent, ModelList, ModelObject, Role, StreamAssembler, Usage,
};
