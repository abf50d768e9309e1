//! The analyzer's view of one ledger row.

/// One request of the usage ledger, borrowed from wherever the caller holds the row.
///
/// The columns of the `usage_records` table (types included) that some analysis reads: the
/// key, endpoint, provider, requested and baseline models, routing mode, latencies and stored
/// texts are left out, so a store reads fewer columns and a row converts without allocating.
/// Money is integer picodollars; `created_at` is Unix microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Record<'a> {
    /// The client's request id: shown as an example, never the prompt text.
    pub request_id: &'a str,
    pub org_id: &'a str,
    /// Unix microseconds.
    pub created_at: i64,
    /// The catalog model that answered (`None` when no upstream answered).
    pub model_used: Option<&'a str>,
    /// The HTTP status returned to the client.
    pub status: i32,
    pub prompt_tokens: i64,
    /// Of `prompt_tokens`, those read from the provider's prompt cache.
    pub cached_prompt_tokens: i64,
    pub completion_tokens: i64,
    /// What the organization paid, in picodollars (0 for a response-cache hit).
    pub cost_pico: i64,
    pub max_tokens: Option<i64>,
    /// `hit-memory`, `hit-redis`, `hit-postgres`, `coalesced`, `miss`, `bypass` or `off`;
    /// `None` when the request never reached the cache.
    pub cache_status: Option<&'a str>,
    /// Whether the router chose the model.
    pub routed: bool,
    /// The classifier's complexity score in [0, 1].
    pub route_score: Option<f64>,
    /// `simple`, `medium` or `complex`.
    pub route_tier: Option<&'a str>,
    /// What routing saved against the baseline, in picodollars.
    pub route_saving_pico: Option<i64>,
    /// Hex SHA-256 of the canonical request: identical requests share it.
    pub request_hash: &'a str,
    /// Hash of the system prompt, when there is one.
    pub system_hash: Option<&'a str>,
    /// Characters of the system prompt.
    pub system_len: i64,
    /// Hash of the first 1,024 bytes of the conversation (`role:text` lines).
    pub prefix_hash: &'a str,
    /// Characters of every message's text.
    pub prompt_chars: i64,
}

/// Bytes of the conversation the ledger's `prefix_hash` covers (see the server's
/// `usage::fingerprint`).
pub const PREFIX_BYTES: u64 = 1024;

impl Record<'_> {
    /// A 2xx answer: the only kind a cache stores or a cheaper model could have replaced.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn prompt_tokens(&self) -> u64 {
        u64::try_from(self.prompt_tokens).unwrap_or(0)
    }

    pub(crate) fn cached_prompt_tokens(&self) -> u64 {
        u64::try_from(self.cached_prompt_tokens).unwrap_or(0)
    }

    pub(crate) fn completion_tokens(&self) -> u64 {
        u64::try_from(self.completion_tokens).unwrap_or(0)
    }

    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.max_tokens.and_then(|m| u64::try_from(m).ok())
    }

    pub(crate) fn cost(&self) -> i128 {
        i128::from(self.cost_pico.max(0))
    }

    /// Estimated tokens of the first `chars` characters of the prompt, from this request's own
    /// ratio of tokens to characters (about four characters a token when it has none).
    pub(crate) fn tokens_of_chars(&self, chars: u64) -> u64 {
        let total_chars = u64::try_from(self.prompt_chars).unwrap_or(0);
        let tokens = self.prompt_tokens();
        let est = if total_chars > 0 && tokens > 0 {
            (u128::from(chars) * u128::from(tokens) / u128::from(total_chars)) as u64
        } else {
            chars.div_ceil(4)
        };
        if tokens > 0 { est.min(tokens) } else { est }
    }
}
