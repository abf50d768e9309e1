//! Cache keys: SHA-256 over the organization and the canonical form of a request.

use std::fmt;
use std::sync::Arc;

use cognitude_protocol::ChatRequest;
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Request fields that do not change what the model answers: a streamed and a non-streamed
/// request share an entry, and `user` is only an end-user label for abuse tracking.
const IGNORED_FIELDS: [&str; 3] = ["stream", "stream_options", "user"];

/// Bumped when the canonical form changes, so old entries stop matching instead of being misread.
const KEY_DOMAIN: &[u8] = b"cognitude-cache/v1\n";

/// Identifies one cached response: the organization that owns it and a SHA-256 digest of the
/// organization and the canonical request.
///
/// The organization is part of the digest *and* kept beside it, and every backend stores it with
/// the entry and compares it on read, so an organization can never be served another's entry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    org: Arc<str>,
    digest: [u8; 32],
}

impl CacheKey {
    /// The key of `request` for `org`.
    ///
    /// Covers the model, the messages and every other field, unknown ones included, except
    /// `stream`, `stream_options` and `user`. Object keys are sorted at every depth, numbers are
    /// compared by value (`1` and `1.0` are the same) and top-level `null`s count as absent.
    pub fn for_request(org: &str, request: &ChatRequest) -> Result<CacheKey> {
        Ok(CanonicalRequest::of(request)?.key(org))
    }

    /// A key from a digest computed earlier (for example one shown by [`CacheKey::hex`]).
    pub fn from_digest(org: &str, digest: [u8; 32]) -> CacheKey {
        CacheKey {
            org: Arc::from(org),
            digest,
        }
    }

    /// Parses the 64 hex digits of [`CacheKey::hex`].
    pub fn from_hex(org: &str, hex_digest: &str) -> Option<CacheKey> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).ok()?;
        Some(CacheKey::from_digest(org, digest))
    }

    /// The organization that owns the entry.
    pub fn org(&self) -> &str {
        &self.org
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The digest as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.digest)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({}/{})", self.org, self.hex())
    }
}

/// The canonical form of a request, the bytes a cache key hashes: the request as JSON without
/// the ignored fields, keys sorted. Computed once for both of its uses: the organization's
/// cache key ([`CanonicalRequest::key`], equal to [`CacheKey::for_request`]) and the
/// organization-free fingerprint ([`CanonicalRequest::fingerprint`]).
#[derive(Clone, PartialEq, Eq)]
pub struct CanonicalRequest(Vec<u8>);

impl CanonicalRequest {
    pub fn of(request: &ChatRequest) -> Result<CanonicalRequest> {
        canonical_request(request).map(CanonicalRequest)
    }

    /// The cache key of this request for `org`.
    pub fn key(&self, org: &str) -> CacheKey {
        let mut hasher = Sha256::new();
        hasher.update(KEY_DOMAIN);
        // Length-prefixed so no organization id can run into the request bytes.
        hasher.update((org.len() as u64).to_le_bytes());
        hasher.update(org.as_bytes());
        hasher.update(&self.0);
        CacheKey {
            org: Arc::from(org),
            digest: hasher.finalize().into(),
        }
    }

    /// SHA-256 of the canonical form, without an organization: the same requests as
    /// [`CacheKey::for_request`] considers equal share it. The ledger keeps it to find repeats.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.0).into()
    }
}

impl fmt::Debug for CanonicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The canonical form holds the prompt: only its size is shown.
        write!(f, "CanonicalRequest({} bytes)", self.0.len())
    }
}

pub(crate) fn canonical_request(request: &ChatRequest) -> Result<Vec<u8>> {
    let mut value = serde_json::to_value(request).map_err(Error::Encode)?;
    if let Value::Object(map) = &mut value {
        for field in IGNORED_FIELDS {
            map.remove(field);
        }
        // An explicit null means "not set" for every OpenAI parameter; typed fields already drop it.
        map.retain(|_, v| !v.is_null());
    }
    let mut out = Vec::with_capacity(256);
    write_canonical(&value, &mut out);
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping is deterministic; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Integral numbers are written as integers whatever their JSON spelling (`1`, `1.0`, `1e0`),
/// so typed `f64` fields and untyped `extra` values compare by value.
fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
        if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
            // Exact: every integral f64 in this range is an i64 (and -0.0 becomes 0).
            out.extend_from_slice((f as i64).to_string().as_bytes());
        } else if f.fract() == 0.0 && (TWO_POW_63..TWO_POW_64).contains(&f) {
            out.extend_from_slice((f as u64).to_string().as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    fn key(json: &str) -> CacheKey {
        CacheKey::for_request("org_a", &req(json)).unwrap()
    }

    const BASE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#;

    /// Asserts that two request bodies get the same key (`same`) or different keys.
    fn check(a: &str, b: &str, same: bool) {
        assert_eq!(key(a) == key(b), same, "{a}\n{b}");
    }

    #[test]
    fn field_order_does_not_change_the_key() {
        check(
            r#"{"model":"m","temperature":0.5,"messages":[{"content":"Hi","role":"user"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
            r#"{"response_format":{"json_schema":{"schema":{"a":2,"b":1},"name":"x"},"type":"json_schema"},
                "messages":[{"role":"user","content":"Hi"}],"temperature":0.5,"model":"m"}"#,
            true,
        );
    }

    #[test]
    fn integral_floats_equal_integers_in_typed_and_extra_fields() {
        check(
            r#"{"model":"m","messages":[],"temperature":1}"#,
            r#"{"model":"m","messages":[],"temperature":1.0}"#,
            true,
        );
        check(
            r#"{"model":"m","messages":[],"top_k":40}"#,
            r#"{"model":"m","messages":[],"top_k":40.0}"#,
            true,
        );
        check(
            r#"{"model":"m","messages":[],"frequency_penalty":1e0}"#,
            r#"{"model":"m","messages":[],"frequency_penalty":1}"#,
            true,
        );
        check(
            r#"{"model":"m","messages":[],"presence_penalty":-0.0}"#,
            r#"{"model":"m","messages":[],"presence_penalty":0}"#,
            true,
        );
        check(
            r#"{"model":"m","messages":[],"temperature":0.7}"#,
            r#"{"model":"m","messages":[],"temperature":0.70}"#,
            true,
        );
        check(
            r#"{"model":"m","messages":[],"temperature":0.7}"#,
            r#"{"model":"m","messages":[],"temperature":0.71}"#,
            false,
        );
    }

    #[test]
    fn stream_stream_options_and_user_are_ignored() {
        check(
            BASE,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],
                "stream":true,"stream_options":{"include_usage":true},"user":"alice"}"#,
            true,
        );
        check(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":false}"#,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":true}"#,
            true,
        );
    }

    #[test]
    fn top_level_nulls_count_as_absent() {
        check(
            BASE,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],
                "temperature":null,"reasoning_effort":null}"#,
            true,
        );
    }

    #[test]
    fn every_output_changing_parameter_changes_the_key() {
        let params = [
            r#""temperature":0.2"#,
            r#""top_p":0.9"#,
            r#""max_tokens":10"#,
            r#""max_completion_tokens":10"#,
            r#""stop":"END""#,
            r#""stop":["END"]"#,
            r#""seed":7"#,
            r#""n":2"#,
            r#""tools":[{"type":"function","function":{"name":"f"}}]"#,
            r#""tool_choice":"required""#,
            r#""response_format":{"type":"json_object"}"#,
            r#""logprobs":true"#,
            r#""top_logprobs":3"#,
            r#""frequency_penalty":0.5"#,
            r#""presence_penalty":0.5"#,
            r#""logit_bias":{"50256":-100}"#,
            r#""reasoning_effort":"low""#,
            r#""parallel_tool_calls":false"#,
            r#""some_future_parameter":{"x":1}"#,
        ];
        let base = key(BASE);
        let mut seen = std::collections::HashSet::new();
        for p in params {
            let body = format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hi"}}],{p}}}"#
            );
            let k = key(&body);
            assert_ne!(k, base, "{p} must change the key");
            assert!(seen.insert(k), "{p} collides with another parameter");
        }
    }

    #[test]
    fn model_messages_and_their_order_change_the_key() {
        check(
            BASE,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
            false,
        );
        check(
            BASE,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi!"}]}"#,
            false,
        );
        check(
            BASE,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Hi"}]}"#,
            false,
        );
        check(
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"b"},{"role":"user","content":"a"}]}"#,
            false,
        );
    }

    #[test]
    fn the_org_is_part_of_the_key() {
        let r = req(BASE);
        let a = CacheKey::for_request("org_a", &r).unwrap();
        let b = CacheKey::for_request("org_b", &r).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a, b);
        // The length prefix keeps ("ab", "c…") and ("a", "bc…") apart.
        let c = CacheKey::for_request("org_", &r).unwrap();
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn canonical_form_is_sorted_compact_json() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"é\"x"}],"temperature":2.0,"z":[1.5,{"b":null,"a":true}],"user":"u"}"#,
        );
        let c = String::from_utf8(canonical_request(&r).unwrap()).unwrap();
        assert_eq!(
            c,
            r#"{"messages":[{"content":"é\"x","role":"user"}],"model":"m","temperature":2,"z":[1.5,{"a":true,"b":null}]}"#
        );
    }

    #[test]
    fn hex_round_trips() {
        let k = key(BASE);
        assert_eq!(k.hex().len(), 64);
        assert_eq!(CacheKey::from_hex("org_a", &k.hex()), Some(k.clone()));
        assert_eq!(CacheKey::from_hex("org_a", "zz"), None);
        assert_ne!(CacheKey::from_hex("org_b", &k.hex()), Some(k));
    }
}
