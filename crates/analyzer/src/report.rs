//! What the analyzer returns: recommendations with their arithmetic, serializable as JSON.

use std::collections::BTreeMap;
use std::fmt;

use cognitude_catalog::{Money, PICO_PER_USD};
use serde::Serialize;

/// The analysis of a stream of ledger records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The period the savings were observed over and scaled from.
    pub window: Window,
    /// Ranked by estimated monthly saving, largest first; deduplicated (see the crate docs).
    pub recommendations: Vec<Recommendation>,
    /// For organizations already routing: what routing saved against their baseline.
    pub routing_realised: Vec<RealisedRouting>,
    /// How much was read and how full the bounded structures got.
    pub stats: Stats,
}

/// The observation window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Unix microseconds of the first and last record seen (or as given to
    /// [`Analyzer::with_window`](crate::Analyzer::with_window)).
    pub start_micros: i64,
    pub end_micros: i64,
    /// The length savings are scaled from: the window, but never under one day.
    pub days: f64,
}

/// One thing to change, what it saves, and why we think so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Stable across runs for the same finding: the kind and what it is about, hashed.
    pub id: String,
    pub kind: Kind,
    pub org_id: String,
    pub title: String,
    /// Plain language: what was seen and why the change saves money.
    pub explanation: String,
    /// Billed saving over 30 days, estimated from the window (zero for `max_tokens`, which
    /// frees headroom and worst-case cost instead; see [`Details::MaxTokens`]).
    pub monthly_saving: Money,
    pub confidence: Confidence,
    /// The arithmetic behind `monthly_saving`.
    pub basis: Basis,
    /// The concrete change.
    pub action: Action,
    /// Figures particular to the kind.
    pub details: Details,
}

/// The five analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Identical requests repeated while the response cache was off, bypassed or missed.
    Cache,
    /// Simple or medium requests sent to a premium model.
    ModelDowngrade,
    /// `max_tokens` far above what completions use.
    MaxTokens,
    /// Fixed-model traffic that cost-mode routing would have sent cheaper.
    SmartRouting,
    /// Long system prompts or shared prefixes repeated across requests.
    PromptCaching,
    /// Near-duplicate prompts that differ in a few slots.
    PromptTemplate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cache => "cache",
            Kind::ModelDowngrade => "model_downgrade",
            Kind::MaxTokens => "max_tokens",
            Kind::SmartRouting => "smart_routing",
            Kind::PromptCaching => "prompt_caching",
            Kind::PromptTemplate => "prompt_template",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much the estimate can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// The arithmetic: `monthly = observed × 30 / window_days`, with what `observed` was made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Basis {
    /// The requests the saving was computed on (the evidence).
    pub requests: u64,
    /// The saving in the window (already divided by `sample_rate`).
    pub observed_saving: Money,
    pub window_days: f64,
    /// 30 / `window_days`.
    pub monthly_factor: f64,
    /// The share of fingerprints tracked: 1 unless the traffic was large enough to sample.
    pub sample_rate: f64,
    /// The prices used, per million tokens.
    pub prices: Vec<PriceUsed>,
    /// Named counts and token totals the formula uses.
    pub figures: BTreeMap<&'static str, f64>,
    /// The same arithmetic for a person.
    pub formula: String,
}

/// A model's prices as the arithmetic used them, in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceUsed {
    pub model: String,
    pub input: Money,
    pub cached_input: Money,
    pub cache_write: Money,
    pub output: Money,
}

/// The change to make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// One imperative sentence.
    pub summary: String,
    /// A configuration snippet (TOML), when the change is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A code change in the client, when the change is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Figures particular to each kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Details {
    Cache {
        /// The shortest TTL that catches at least 90% of what the longest one would.
        suggested_ttl_secs: u64,
        /// Repeats caught at that TTL, by what the cache said at the time.
        repeats_cache_off: u64,
        repeats_bypassed: u64,
        repeats_missed: u64,
        /// Observed saving at each TTL tried, for comparison.
        saving_by_ttl: Vec<(u64, Money)>,
    },
    ModelDowngrade {
        from_model: String,
        to_model: String,
        /// Requests per tier among those counted.
        simple: u64,
        medium: u64,
        /// A few of the requests (ids only, never prompt text).
        example_request_ids: Vec<String>,
    },
    MaxTokens {
        model: String,
        /// The median `max_tokens` requested.
        requested_median: u64,
        completion_p50: u64,
        completion_p95: u64,
        completion_p99: u64,
        /// Share of requests whose completion reached the limit.
        limit_hit_rate: f64,
        suggested_max_tokens: u64,
        /// Tokens a limit-reserving rate limiter holds back per minute, on average, that the
        /// suggested value would release.
        tpm_headroom_freed: f64,
        /// The worst case (every request using its whole limit) made cheaper, over 30 days.
        worst_case_monthly_reduction: Money,
    },
    SmartRouting {
        /// Classified requests on fixed models, and how many cost mode would have moved.
        classified_requests: u64,
        moved_requests: u64,
        /// Share of the organization's successful requests that were classified.
        classified_share: f64,
        /// The saving of all classified traffic, before the model downgrades listed apart.
        total_monthly_saving: Money,
        /// Already counted in these model-downgrade recommendations.
        overlapping: Vec<String>,
        /// Per fixed model: requests and observed saving (negative: routing costs more there).
        by_model: Vec<ModelShare>,
    },
    PromptCaching {
        model: String,
        /// `system_prompt` or `shared_prefix`.
        pattern: &'static str,
        /// Tokens of the repeated part, per request (mean).
        repeated_tokens: u64,
        /// Requests that would read the provider cache, and those that would write it.
        cache_reads: u64,
        cache_writes: u64,
        /// Requests where the provider's cache already served the repeated part.
        already_cached: u64,
    },
    PromptTemplate {
        model: String,
        distinct_prompts: u64,
        min_prompt_chars: u64,
        max_prompt_chars: u64,
        repeated_tokens: u64,
        cache_reads: u64,
        cache_writes: u64,
    },
}

/// One fixed model's part in a smart-routing recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShare {
    pub model: String,
    pub requests: u64,
    pub moved: u64,
    pub observed_saving: Money,
}

/// What routing saved an organization that already routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealisedRouting {
    pub org_id: String,
    pub routed_requests: u64,
    pub observed_saving: Money,
    pub monthly_saving: Money,
}

/// Counters of the run and the fill of each bounded structure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub records: u64,
    /// Records after a later one (the cache simulation assumes ascending `created_at`).
    pub out_of_order: u64,
    /// Records whose answering model is not in the catalog (priced analyses skip them).
    pub unknown_model: u64,
    pub fingerprints: MapStats,
    pub system_prompts: MapStats,
    pub prefixes: MapStats,
    pub groups: MapStats,
    /// Candidate recommendations dropped for too little evidence or too small a saving.
    pub below_threshold: u64,
}

/// How full one bounded map got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MapStats {
    pub len: usize,
    /// The most entries it held at any time; never above `cap`.
    pub peak: usize,
    pub cap: usize,
    /// Sampling: 1 key in 2^`sample_shift` is tracked (fingerprints only).
    pub sample_shift: u32,
    /// Groups evicted to make room (heavy-hitter maps only).
    pub evicted: u64,
}

/// Money for a person: cents above a cent, every digit below.
pub(crate) fn usd(m: Money) -> String {
    if m.pico().abs() >= PICO_PER_USD / 100 {
        format!("${:.2}", m.as_usd_f64())
    } else {
        format!("${m}")
    }
}

/// A per-token price as USD per million tokens.
pub(crate) fn per_million(price: Money) -> Money {
    Money::from_pico(price.pico().saturating_mul(1_000_000))
}
