//! What the cache stores: a complete response and what it cost, and its encoding for the
//! backends that keep bytes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cognitude_protocol::ChatCompletion;
use serde::{Deserialize, Serialize};

use crate::{CacheKey, Error, Result};

/// A complete, successful upstream response with the facts a hit reports.
///
/// Immutable once made: its JSON for clients ([`CachedResponse::completion_json`]) and its stored
/// size ([`CachedResponse::encoded_len`]) are encoded at most once and then shared by the
/// response to the client that caused the upstream call, the policy's size check, the memory
/// tier's weigher and every memory hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// The response exactly as the upstream sent it (or as its stream assembled).
    completion: ChatCompletion,
    /// The model that answered (after routing and fallbacks).
    model: String,
    /// The provider that answered.
    provider: String,
    /// What the original call cost, in picodollars: what each hit saves.
    cost_picodollars: i64,
    /// When the upstream answered, in milliseconds since the Unix epoch.
    created_unix_ms: u64,
    #[serde(skip)]
    encoded: Encoded,
}

impl CachedResponse {
    /// A response that was produced now.
    pub fn new(
        completion: ChatCompletion,
        model: impl Into<String>,
        provider: impl Into<String>,
        cost_picodollars: i64,
    ) -> CachedResponse {
        CachedResponse {
            completion,
            model: model.into(),
            provider: provider.into(),
            cost_picodollars,
            created_unix_ms: unix_ms(SystemTime::now()),
            encoded: Encoded::default(),
        }
    }

    /// The response exactly as the upstream sent it (or as its stream assembled).
    pub fn completion(&self) -> &ChatCompletion {
        &self.completion
    }

    /// The model that answered (after routing and fallbacks).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The provider that answered.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// What the original call cost, in picodollars: what each hit saves.
    pub fn cost_picodollars(&self) -> i64 {
        self.cost_picodollars
    }

    /// When the upstream answered, in milliseconds since the Unix epoch.
    pub fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// The completion as JSON, the body a client receives; encoded on the first call and shared
    /// (a reference-counted buffer) after that.
    pub fn completion_json(&self) -> Bytes {
        self.encoded
            .completion
            .get_or_init(|| {
                // The protocol types always serialize: their maps have string keys.
                Bytes::from(serde_json::to_vec(&self.completion).unwrap_or_default())
            })
            .clone()
    }

    /// The size of the stored JSON, which the memory tier's byte bound and the policy's entry
    /// size limit count. Worked out once, from [`CachedResponse::completion_json`] and the
    /// length of the other fields' JSON, without building the whole JSON.
    pub fn encoded_len(&self) -> usize {
        *self.encoded.len.get_or_init(|| {
            // The same fields in the same order with the completion left out: serde_json writes
            // a field's value in place, so the whole is this minus `null` plus the completion.
            let shape = Shape {
                completion: (),
                model: &self.model,
                provider: &self.provider,
                cost_picodollars: self.cost_picodollars,
                created_unix_ms: self.created_unix_ms,
            };
            let mut counter = ByteCounter(0);
            // Writing into a counter cannot fail and the fields always serialize.
            let _ = serde_json::to_writer(&mut counter, &shape);
            counter.0 - "null".len() + self.completion_json().len()
        })
    }
}

/// [`CachedResponse`]'s fields with the completion left out; kept in the same order.
#[derive(Serialize)]
struct Shape<'a> {
    completion: (),
    model: &'a str,
    provider: &'a str,
    cost_picodollars: i64,
    created_unix_ms: u64,
}

/// What [`CachedResponse`] has encoded of itself. A cache of its other fields, which cannot
/// change: equal whatever it holds.
#[derive(Clone, Default)]
struct Encoded {
    completion: OnceLock<Bytes>,
    len: OnceLock<usize>,
}

impl PartialEq for Encoded {
    fn eq(&self, _: &Encoded) -> bool {
        true
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("completion_bytes", &self.completion.get().map(Bytes::len))
            .field("len", &self.len.get())
            .finish()
    }
}

/// A stored response as a backend returns it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub response: Arc<CachedResponse>,
    /// When the entry stops being served.
    pub expires_at: SystemTime,
}

impl Entry {
    /// How long the entry is still served; zero once expired.
    pub fn ttl_left(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON the byte-oriented backends (Redis, PostgreSQL) store: the response plus the owner and
/// key it was stored under, checked again on every read, and its expiry so a hit in a slow tier
/// fills the fast ones with the time it has left.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u8,
    org: &'a str,
    key: String,
    expires_unix_ms: u64,
    response: &'a CachedResponse,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u8,
    org: String,
    key: String,
    expires_unix_ms: u64,
    response: CachedResponse,
}

const ENVELOPE_VERSION: u8 = 1;

pub(crate) fn encode_envelope(
    key: &CacheKey,
    response: &CachedResponse,
    expires_at: SystemTime,
) -> Result<Vec<u8>> {
    serde_json::to_vec(&EnvelopeOut {
        v: ENVELOPE_VERSION,
        org: key.org(),
        key: key.hex(),
        expires_unix_ms: unix_ms(expires_at),
        response,
    })
    .map_err(Error::Encode)
}

/// Why stored bytes were not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Unreadable or from another format version.
    Corrupt(String),
    /// Stored for another organization or key: never served.
    Foreign,
    Expired,
}

pub(crate) fn decode_envelope(key: &CacheKey, bytes: &[u8]) -> Result<Entry, Rejected> {
    let env: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|e| Rejected::Corrupt(e.to_string()))?;
    if env.v != ENVELOPE_VERSION {
        return Err(Rejected::Corrupt(format!("format version {}", env.v)));
    }
    if env.org != key.org() || env.key != key.hex() {
        return Err(Rejected::Foreign);
    }
    let expires_at = from_unix_ms(env.expires_unix_ms);
    if expires_at <= SystemTime::now() {
        return Err(Rejected::Expired);
    }
    Ok(Entry {
        response: Arc::new(env.response),
        expires_at,
    })
}

/// Logs why stored bytes were not served; a foreign entry is a bug worth an error line.
pub(crate) fn log_rejected(backend: crate::BackendKind, key: &CacheKey, why: &Rejected) {
    match why {
        Rejected::Foreign => tracing::error!(
            %backend, org = key.org(), key = %key.hex(),
            "cache entry stored for another organization or key; not served"
        ),
        Rejected::Corrupt(reason) => tracing::warn!(
            %backend, org = key.org(), key = %key.hex(), %reason,
            "unreadable cache entry; treated as a miss"
        ),
        Rejected::Expired => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn completion(text: &str) -> ChatCompletion {
        serde_json::from_value(serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
        .unwrap()
    }

    fn key(org: &str) -> CacheKey {
        CacheKey::from_digest(org, [7; 32])
    }

    #[test]
    fn envelope_round_trips_with_its_expiry() {
        let r = CachedResponse::new(completion("hello"), "gpt-4o-mini", "openai", 1234);
        let expires = SystemTime::now() + Duration::from_secs(60);
        let bytes = encode_envelope(&key("a"), &r, expires).unwrap();
        let e = decode_envelope(&key("a"), &bytes).unwrap();
        assert_eq!(*e.response, r);
        assert_eq!(unix_ms(e.expires_at), unix_ms(expires));
        assert!(e.ttl_left() > Duration::from_secs(50));
    }

    #[test]
    fn envelope_of_another_org_or_key_is_refused() {
        let r = CachedResponse::new(completion("hello"), "m", "p", 0);
        let bytes =
            encode_envelope(&key("a"), &r, SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(
            decode_envelope(&key("b"), &bytes).unwrap_err(),
            Rejected::Foreign
        );
        let other = CacheKey::from_digest("a", [8; 32]);
        assert_eq!(
            decode_envelope(&other, &bytes).unwrap_err(),
            Rejected::Foreign
        );
    }

    #[test]
    fn expired_and_garbage_envelopes_are_refused() {
        let r = CachedResponse::new(completion("x"), "m", "p", 0);
        let bytes =
            encode_envelope(&key("a"), &r, SystemTime::now() - Duration::from_secs(1)).unwrap();
        assert_eq!(
            decode_envelope(&key("a"), &bytes).unwrap_err(),
            Rejected::Expired
        );
        assert!(matches!(
            decode_envelope(&key("a"), b"{not json"),
            Err(Rejected::Corrupt(_))
        ));
    }

    #[test]
    fn encoded_len_is_the_json_length() {
        let r = CachedResponse::new(completion("héllo \"q\" \u{1}"), "m\"1", "p\\", -5);
        assert_eq!(r.encoded_len(), serde_json::to_vec(&r).unwrap().len());
        // Asked again, and asked of a copy made after the first answer.
        assert_eq!(r.encoded_len(), serde_json::to_vec(&r).unwrap().len());
        assert_eq!(r.clone().encoded_len(), r.encoded_len());
        let fresh = CachedResponse::new(completion("x"), "m", "p", i64::MIN);
        assert_eq!(
            fresh.encoded_len(),
            serde_json::to_vec(&fresh).unwrap().len()
        );
    }

    #[test]
    fn completion_json_is_the_completion_serialized_once() {
        let r = CachedResponse::new(completion("hello"), "m", "p", 0);
        let first = r.completion_json();
        assert_eq!(first, serde_json::to_vec(r.completion()).unwrap());
        // The same buffer, not a second encoding.
        assert_eq!(r.completion_json().as_ptr(), first.as_ptr());
        // Equality and the stored JSON ignore what was encoded.
        let decoded: CachedResponse =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(decoded, r);
        assert_eq!(decoded.completion_json(), first);
    }
}
