//! The records the store keeps.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::{api_keys, organizations, usage_records};

/// An organization: the tenant every key, record, cache entry and limit belongs to.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = organizations)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// Unix microseconds.
    pub created_at: i64,
}

/// An API key as listed: never the secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// The public part of the key, shown to identify it (`cgk_1a2b3c4d5e6f`).
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key row with its hash, for verification inside the crate.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct KeyRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> ApiKey {
        ApiKey {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// One request in the ledger. Money is integer picodollars; times are Unix microseconds
/// (`created_at`) or milliseconds (latencies). Prompt fingerprints are hashes and lengths only:
/// the text itself is stored only when configured.
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, Deserialize, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = usage_records)]
pub struct UsageRecord {
    /// Server-generated and unique: the ledger's idempotency key. (`request_id` comes from the
    /// client and may repeat.)
    pub id: String,
    pub request_id: String,
    pub org_id: String,
    pub api_key_id: Option<String>,
    pub created_at: i64,
    pub endpoint: String,
    pub model_requested: String,
    pub model_used: Option<String>,
    pub provider: Option<String>,
    pub status: i32,
    pub error_type: Option<String>,
    pub prompt_tokens: i64,
    pub cached_prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    /// The upstream reported no usage; the tokens were counted by a tokenizer or estimated.
    pub tokens_estimated: bool,
    pub cost_pico: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub stream: bool,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub cache_status: Option<String>,
    pub cache_saved_pico: i64,
    pub routed: bool,
    pub route_score: Option<f64>,
    pub route_tier: Option<String>,
    pub route_mode: Option<String>,
    pub baseline_model: Option<String>,
    pub route_saving_pico: Option<i64>,
    pub request_hash: String,
    pub system_hash: Option<String>,
    pub system_len: i64,
    pub prefix_hash: String,
    pub prompt_chars: i64,
    pub prompt_tokens_est: i64,
    pub prompt_text: Option<String>,
    pub completion_text: Option<String>,
}

/// A page of ledger records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePage {
    pub records: Vec<UsageRecord>,
    /// Pass back as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}
