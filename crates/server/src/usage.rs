//! One ledger record per request: the [`Recorder`] is created when a request passes
//! authentication and records exactly once, however the request ends (an answer, an error, a
//! stream that finished, failed or was cut, or a client that went away mid-request).

use std::time::Instant;

use cognitude_cache::CanonicalRequest;
use cognitude_catalog::{ModelInfo, Money};
use cognitude_protocol::{ChatRequest, Role, Usage};
use cognitude_store::{Ledger, UsageRecord};
use sha2::{Digest, Sha256};

use crate::routing::Routed;

/// Who made the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: String,
    pub key_id: Option<String>,
}

/// Builds and, once, records a request's ledger entry.
#[derive(Debug)]
pub(crate) struct Recorder {
    ledger: Ledger,
    rec: Option<UsageRecord>,
    started: Instant,
    store_prompts: bool,
    /// For a routed request, the baseline model its real cost is compared with.
    baseline: Option<ModelInfo>,
}

impl Recorder {
    pub fn new(
        ledger: Ledger,
        caller: &Caller,
        request_id: &str,
        endpoint: &str,
        started: Instant,
        store_prompts: bool,
    ) -> Recorder {
        let created_at = cognitude_store::now_micros();
        let rec = UsageRecord {
            id: cognitude_store::keys::time_ordered_id("rec", created_at, fastrand::u128(..)),
            request_id: request_id.to_owned(),
            org_id: caller.org_id.clone(),
            api_key_id: caller.key_id.clone(),
            created_at,
            endpoint: endpoint.to_owned(),
            ..UsageRecord::default()
        };
        Recorder {
            ledger,
            rec: Some(rec),
            started,
            store_prompts,
            baseline: None,
        }
    }

    /// The record being built (a throwaway one if it was already recorded).
    pub fn rec(&mut self) -> &mut UsageRecord {
        self.rec.get_or_insert_with(UsageRecord::default)
    }

    /// Fills what the request itself says: model, parameters and the prompt fingerprints.
    pub fn request(&mut self, req: &ChatRequest, canonical: Option<&CanonicalRequest>) {
        let store_prompts = self.store_prompts;
        let fp = fingerprint_with(req, canonical);
        let r = self.rec();
        r.model_requested = truncate(&req.model, 200);
        r.stream = req.is_stream();
        r.max_tokens = req.max_output_tokens().map(i64::from);
        r.temperature = req.temperature;
        r.request_hash = fp.request_hash;
        r.system_hash = fp.system_hash;
        r.system_len = fp.system_len;
        r.prefix_hash = fp.prefix_hash;
        r.prompt_chars = fp.prompt_chars;
        r.prompt_tokens_est = fp.prompt_tokens_est;
        if store_prompts {
            r.prompt_text = serde_json::to_string(&req.messages).ok();
        }
    }

    /// The request's complexity, recorded for every request (the analyzer reads it).
    pub fn classified(&mut self, score: f64, tier: &str) {
        let r = self.rec();
        r.route_score = Some(score);
        r.route_tier = Some(tier.to_owned());
    }

    /// The request was routed: how, and against which baseline its saving is measured.
    pub fn routed(&mut self, routed: &Routed) {
        self.classified(routed.score, routed.tier);
        let r = self.rec();
        r.routed = true;
        r.route_mode = Some(routed.mode.as_str().to_owned());
        r.baseline_model = routed.baseline.as_ref().map(|b| b.id.clone());
        self.baseline.clone_from(&routed.baseline);
    }

    /// A cache hit paid nothing upstream: it records the cache's saving, not a routing one.
    pub fn no_route_saving(&mut self) {
        self.baseline = None;
    }

    /// Fills who answered and what it used and cost.
    pub fn answered(
        &mut self,
        model: &str,
        provider: &str,
        usage: Option<&Usage>,
        estimated: bool,
        cost: Option<Money>,
    ) {
        let r = self.rec();
        r.model_used = Some(model.to_owned());
        r.provider = Some(provider.to_owned());
        if let Some(u) = usage {
            r.prompt_tokens = clamp_i64(u.prompt_tokens);
            r.cached_prompt_tokens = clamp_i64(u.cached_tokens());
            r.completion_tokens = clamp_i64(u.completion_tokens);
            r.reasoning_tokens = clamp_i64(u.reasoning_tokens());
        }
        r.tokens_estimated = estimated;
        r.cost_pico = cost.map_or(0, |c| i64::try_from(c.pico()).unwrap_or(i64::MAX));
        // The real saving of a routed call: what the baseline would have cost for the same
        // usage, minus what the chosen model cost.
        if let (Some(b), Some(u), Some(c)) = (self.baseline.take(), usage, cost) {
            let saving = b.cost(&crate::chat::token_usage(u)) - c;
            self.rec().route_saving_pico = i64::try_from(saving.pico()).ok();
        }
    }

    pub fn completion_text(&mut self, text: impl FnOnce() -> String) {
        if self.store_prompts {
            self.rec().completion_text = Some(text());
        }
    }

    pub fn first_token(&mut self) {
        let ms = self.started.elapsed().as_millis();
        self.rec().ttft_ms = Some(i64::try_from(ms).unwrap_or(i64::MAX));
    }

    /// Moves the record out, to be finished elsewhere (a stream's forwarding task).
    pub fn hand_off(&mut self) -> Recorder {
        Recorder {
            ledger: self.ledger.clone(),
            rec: self.rec.take(),
            started: self.started,
            store_prompts: self.store_prompts,
            baseline: self.baseline.take(),
        }
    }

    /// Records the entry with the final status. Later calls do nothing.
    pub fn finish(&mut self, status: u16, error_type: Option<&str>) {
        let Some(mut r) = self.rec.take() else { return };
        r.status = i32::from(status);
        r.error_type = error_type.map(str::to_owned);
        r.latency_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.ledger.record(r);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The request was abandoned before it finished (the client went away while the proxy
        // waited on the upstream): it still lands in the ledger, once.
        if self.rec.is_some() {
            self.finish(499, Some("client_closed_request"));
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Hashes and lengths of a request that identify repeats without revealing text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub request_hash: String,
    pub system_hash: Option<String>,
    pub system_len: i64,
    pub prefix_hash: String,
    pub prompt_chars: i64,
    pub prompt_tokens_est: i64,
}

/// Fingerprints a request. `request_hash` is the cache's canonical request hash without the
/// organization: the model, the messages and every parameter that changes the output, with
/// object keys sorted; `stream`, `stream_options` and `user` left out.
#[cfg(test)]
pub(crate) fn fingerprint(req: &ChatRequest) -> Fingerprint {
    fingerprint_with(req, CanonicalRequest::of(req).ok().as_ref())
}

/// [`fingerprint`] with the request's canonical form already computed (the cache key needs
/// it too).
pub(crate) fn fingerprint_with(
    req: &ChatRequest,
    canonical: Option<&CanonicalRequest>,
) -> Fingerprint {
    let request_hash = canonical
        .map(|c| hex::encode(c.fingerprint()))
        .unwrap_or_default();
    // One pass over the messages, each message's text extracted once. What is hashed is the
    // same as building the strings whole: the system prompts joined by newlines, and the first
    // `PREFIX_BYTES` (cut on a character boundary) of the `role:text` lines.
    let mut system = Sha256::new();
    let mut system_parts = 0usize;
    let mut system_bytes = 0usize;
    let mut system_chars = 0usize;
    let mut prefix = String::with_capacity(PREFIX_BYTES);
    let mut prefix_done = false;
    let mut conversation_bytes = 0usize;
    let mut prompt_chars = 0usize;
    for m in &req.messages {
        let text = m.text_content();
        let chars = text.chars().count();
        prompt_chars += chars;
        if matches!(m.role, Role::System | Role::Developer) {
            if system_parts > 0 {
                system.update(b"\n");
                system_bytes += 1;
                system_chars += 1;
            }
            system.update(text.as_bytes());
            system_parts += 1;
            system_bytes += text.len();
            system_chars += chars;
        }
        let role = m.role.as_str();
        conversation_bytes += role.len() + text.len() + 2;
        for piece in [role, ":", text.as_str(), "\n"] {
            prefix_done = prefix_done || !push_bounded(&mut prefix, piece, PREFIX_BYTES);
        }
    }
    Fingerprint {
        request_hash,
        system_hash: (system_bytes > 0).then(|| hex::encode(system.finalize())),
        system_len: system_chars as i64,
        prefix_hash: hex::encode(Sha256::digest(prefix.as_bytes())),
        prompt_chars: prompt_chars as i64,
        prompt_tokens_est: (conversation_bytes as u64).div_ceil(4) as i64,
    }
}

/// Bytes of the conversation the prefix hash covers (the analyzer's `PREFIX_BYTES`).
const PREFIX_BYTES: usize = 1024;

/// Appends as much of `piece` as fits in `max` bytes, cut on a character boundary; false when
/// it did not fit whole. Appending pieces until one does not fit gives the same as appending
/// everything and cutting the whole at `max` on a character boundary.
fn push_bounded(out: &mut String, piece: &str, max: usize) -> bool {
    let room = max.saturating_sub(out.len());
    let mut end = piece.len().min(room);
    while !piece.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&piece[..end]);
    end == piece.len()
}

/// About four bytes a token: a cheap figure for fingerprints.
fn estimate_tokens_cheap(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Counts tokens where the upstream reported none: the o200k tokenizer for OpenAI-family
/// models, about four bytes a token otherwise.
pub(crate) fn count_tokens(model: &str, text: &str) -> u64 {
    let openai_family = model.starts_with("gpt-")
        || model.starts_with("o1")
        || model.starts_with("o3")
        || model.starts_with("o4")
        || model.starts_with("chatgpt");
    if openai_family {
        return tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(text)
            .len() as u64;
    }
    estimate_tokens_cheap(text)
}

/// A usage figure built from counted tokens, for streams that ended without one.
pub(crate) fn estimated_usage(model: &str, req: &ChatRequest, completion_text: &str) -> Usage {
    let prompt: u64 = req
        .messages
        .iter()
        .map(|m| count_tokens(model, &m.text_content()) + 4)
        .sum();
    let completion = count_tokens(model, completion_text);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognitude_protocol::parse_json;

    fn fp(body: &str) -> Fingerprint {
        fingerprint(&parse_json::<ChatRequest>(body.as_bytes()).unwrap())
    }

    #[test]
    fn request_hash_ignores_order_stream_and_user() {
        let a = fp(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1,"tools":[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":2}}}]}"#,
        );
        let b = fp(
            r#"{"temperature":1.0,"stream":true,"user":"u","stream_options":{"include_usage":true},"tools":[{"function":{"parameters":{"a":2,"b":1},"name":"f"},"type":"function"}],"messages":[{"content":"hi","role":"user"}],"model":"m"}"#,
        );
        assert_eq!(a.request_hash, b.request_hash);
        let c =
            fp(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        assert_ne!(a.request_hash, c.request_hash);
    }

    #[test]
    fn system_prompt_fingerprint() {
        let a = fp(
            r#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"x"}]}"#,
        );
        let b = fp(
            r#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"y"}]}"#,
        );
        assert_eq!(a.system_hash, b.system_hash);
        assert_eq!(a.system_len, 14);
        assert_ne!(a.prefix_hash, b.prefix_hash);
        assert!(
            fp(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .system_hash
                .is_none()
        );
    }

    /// The definition the single pass must match: the strings built whole.
    fn fingerprint_whole(req: &ChatRequest) -> Fingerprint {
        let system: String = req
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .map(|m| m.text_content())
            .collect::<Vec<_>>()
            .join("\n");
        let mut conversation = String::new();
        for m in &req.messages {
            conversation.push_str(m.role.as_str());
            conversation.push(':');
            conversation.push_str(&m.text_content());
            conversation.push('\n');
        }
        Fingerprint {
            request_hash: fingerprint(req).request_hash,
            system_hash: (!system.is_empty())
                .then(|| hex::encode(Sha256::digest(system.as_bytes()))),
            system_len: system.chars().count() as i64,
            prefix_hash: hex::encode(Sha256::digest(truncate(&conversation, 1024).as_bytes())),
            prompt_chars: req
                .messages
                .iter()
                .map(|m| m.text_content().chars().count() as i64)
                .sum(),
            prompt_tokens_est: estimate_tokens_cheap(&conversation) as i64,
        }
    }

    #[test]
    fn single_pass_fingerprint_equals_the_whole_string_definition() {
        let long = "é".repeat(700);
        let cases = [
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#.to_owned(),
            r#"{"model":"m","messages":[{"role":"system","content":""},{"role":"user","content":"x"}]}"#.to_owned(),
            r#"{"model":"m","messages":[{"role":"system","content":""},{"role":"developer","content":""},{"role":"user","content":""}]}"#.to_owned(),
            r#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":"b"},{"role":"developer","content":[{"type":"text","text":"c"},{"type":"text","text":"d"}]}]}"#.to_owned(),
            format!(r#"{{"model":"m","messages":[{{"role":"system","content":"{long}"}},{{"role":"user","content":"{long}"}}]}}"#),
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}},{{"role":"assistant","content":"ü{long}"}}]}}"#, "x".repeat(1019)),
        ];
        for body in &cases {
            let req = parse_json::<ChatRequest>(body.as_bytes()).unwrap();
            assert_eq!(fingerprint(&req), fingerprint_whole(&req), "{body}");
        }
    }

    #[test]
    fn tokens_are_counted_with_the_tokenizer_for_openai_models() {
        assert_eq!(count_tokens("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_tokens("claude-haiku-4-5", "hello world"), 3);
    }
}
