//! Cost-saving recommendations from the usage ledger.
//!
//! `cognitude-analyzer` reads ledger records one at a time ([`Record`], borrowed, so a caller
//! streaming rows allocates nothing per record) and, with the model [`Catalog`] for prices and
//! the [`Router`] for tiers, quality bars and the cost-mode choice, produces a [`Report`]:
//! [`Recommendation`]s ranked by estimated monthly saving, each with a stable id, a plain
//! explanation, the arithmetic behind its saving ([`Basis`]), a [`Confidence`] and the concrete
//! [`Action`].
//!
//! Pure: no I/O, no clock, no database. Memory is bounded whatever the number of records (see
//! [Memory](#memory)), so ten million records fit.
//!
//! ```
//! use cognitude_analyzer::{Analyzer, Record};
//! use cognitude_catalog::Catalog;
//! use cognitude_router::{Policy, Router};
//!
//! let catalog = Catalog::builtin();
//! let router = Router::new(Policy::default());
//! let mut analyzer = Analyzer::new(&catalog, &router);
//! for i in 0..3i64 {
//!     let id = format!("req-{i}");
//!     analyzer.observe(&Record {
//!         request_id: &id,
//!         org_id: "org_1",
//!         created_at: 1_700_000_000_000_000 + i * 60_000_000,
//!         model_used: Some("gpt-4o-mini"),
//!         status: 200,
//!         prompt_tokens: 100,
//!         completion_tokens: 20,
//!         cost_pico: 27_000_000,
//!         cache_status: Some("off"),
//!         request_hash: "same-request",
//!         prefix_hash: "p",
//!         ..Record::default()
//!     });
//! }
//! let report = analyzer.finish();
//! // Three repeats are far too little evidence for anything.
//! assert!(report.recommendations.is_empty());
//! assert_eq!(report.stats.records, 3);
//! ```
//!
//! # The analyses
//!
//! 1. **Cache** ([`Kind::Cache`]): per organization, a response cache is simulated at TTLs from
//!    one minute to seven days (entries expire a TTL after they are stored; hits do not renew
//!    them). A repeat of a stored successful answer that was paid for because the cache was
//!    `off`, `bypass`ed or `miss`ed counts its cost. The suggested TTL is the shortest that
//!    catches at least 90% of what the longest catches.
//! 2. **Model downgrade** ([`Kind::ModelDowngrade`]): successful, unrouted requests the router
//!    scored `simple` or `medium` (`route_tier`, or `route_score` under the policy's
//!    thresholds; neither means unclassified, no claim) answered by a premium model (quality
//!    at least the policy's complex bar) are re-priced, at their real token counts, on the
//!    model cost mode would have chosen for the tier. One recommendation per organization and
//!    model pair, with example request ids.
//! 3. **`max_tokens`** ([`Kind::MaxTokens`]): per organization and model, the completion-token
//!    distribution (p50/p95/p99 and the share that reached the limit) against the limits
//!    requested. Suggested limit: p99 × 1.25 rounded up to a multiple of 64, offered only when
//!    it is at most half the median requested limit and fewer than 1% of completions hit the
//!    limit. It saves no billed money (tokens are billed as used); what it frees is reserved
//!    tokens-per-minute headroom and worst-case cost, reported in [`Details::MaxTokens`], and
//!    these recommendations rank after every billed saving.
//! 4. **Smart routing** ([`Kind::SmartRouting`]): every classified, unrouted request of an
//!    organization re-priced on the cost-mode choice for its tier, savings and extra costs
//!    netted. The downgrades listed for the same organization are subtracted (they are part of
//!    what routing would deliver), so the list never counts a saving twice. Organizations
//!    already routing get [`Report::routing_realised`] instead: the sum of `route_saving_pico`.
//! 5. **Prompt patterns**: a system prompt of at least 1,024 tokens repeated across requests of
//!    one organization and model ([`Kind::PromptCaching`]), or long prompts sharing the 1,024
//!    bytes the ledger's `prefix_hash` covers, is re-priced with the provider's prompt cache:
//!    reads at `cached_input`, a write (at `cache_write`) whenever the prefix was unused for
//!    five minutes. Prefix groups whose prompts are all within 10% of the same length and
//!    mostly distinct are near-duplicates ([`Kind::PromptTemplate`]): templating plus caching.
//!    Exact repeats (counted by the cache analysis) and tokens the provider already served
//!    from its cache are left out.
//!
//! The cost-mode choice follows [`Selector`](cognitude_router::Selector) in
//! [`Mode::Cost`](cognitude_router::Mode::Cost): among the models the policy allows whose
//! quality reaches the tier's bar and whose context and output limits fit, the cheapest for the
//! request's input tokens and the router's expected output ([`expected_output_tokens`]), ties
//! to higher quality then id. In addition the alternative must offer the tools, JSON and vision
//! support of the model it replaces, since the ledger does not say which the request used.
//! (`Selector::select` takes a [`Classification`](cognitude_router::Classification), which
//! only the classifier can build from text; the ledger keeps the tier, not the text.)
//!
//! # Minimum evidence
//!
//! Nothing is recommended on too little evidence. The defaults ([`Settings::default`]):
//!
//! | Analysis | Minimum |
//! |---|---|
//! | every billed saving | $1.00 a month ([`Settings::min_monthly_saving`]) |
//! | cache | 20 repeats caught at the suggested TTL, counted as observed (before scaling up a sample) |
//! | model downgrade | 30 requests for the organization and model pair |
//! | `max_tokens` | 100 requests with a limit for the organization and model; suggestion ≤ half the median limit; limit hit by < 1%; worst case reduced by ≥ $1.00 a month |
//! | smart routing | 100 classified requests on fixed models; $1.00 a month beyond the listed downgrades |
//! | prompt patterns | 30 requests sharing the system prompt or prefix; a repeated part of ≥ 1,024 tokens for system prompts (the providers' minimum) and prompts of ≥ 4,096 characters for prefixes |
//! | every window | savings scale from at least one day, so a short sample is never multiplied up more than 30 times |
//!
//! Confidence is `high` at ten times the minimum evidence, `medium` at three times, `low`
//! below; capped at `medium` for downgrades and routing (quality on the cheaper model is the
//! router's judgement, not measured) and for system prompts (token counts estimated from
//! characters), and `low` for shared prefixes (only the first 1,024 bytes are known to match).
//!
//! # Memory
//!
//! - Request fingerprints (for the cache analysis) live in a map of at most
//!   [`Settings::fingerprint_cap`] entries (default 262,144, about 70 bytes each). When it
//!   fills, entries idle for longer than the longest TTL go first; then the map keeps only
//!   fingerprints whose hash has its low `s` bits zero, raising `s` until it fits (distinct
//!   sampling). Savings are summed over sampled fingerprints only and multiplied by 2^`s`.
//! - System-prompt and prefix groups live in maps of at most [`Settings::group_cap`] entries
//!   each (default 65,536). When one fills, the groups with the fewest requests are evicted;
//!   a group seen again starts from zero, so surviving counts are lower bounds.
//! - Model pairs, organization–model `max_tokens` histograms (4 KiB each) and organizations
//!   are capped at [`Settings::max_groups`] (default 16,384); records of groups beyond it
//!   are skipped by that analysis.
//!
//! [`Report::stats`] gives every map's length, peak and cap.
//!
//! # Order
//!
//! Records should arrive in ascending `created_at` (the cache simulation replays time). A
//! record earlier than one already seen is counted in [`Stats::out_of_order`] and compared by
//! absolute time difference.

mod cache;
mod max_tokens;
mod prompts;
mod record;
mod report;
mod routing;
mod sketch;

use std::collections::{BTreeMap, HashMap};

use cognitude_catalog::{Catalog, ModelInfo, Money, PICO_PER_USD, TokenUsage};
use cognitude_router::{Router, Tier, expected_output_tokens};

pub use record::{PREFIX_BYTES, Record};
pub use report::{
    Action, Basis, Confidence, Details, Kind, MapStats, ModelShare, PriceUsed, RealisedRouting,
    Recommendation, Report, Stats, Window,
};

/// Thresholds and capacities. [`Settings::default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Below this estimated monthly saving nothing is recommended.
    pub min_monthly_saving: Money,
    pub min_cache_repeats: u64,
    pub min_downgrade_requests: u64,
    pub min_max_tokens_requests: u64,
    pub min_routing_requests: u64,
    pub min_prompt_requests: u64,
    /// The shortest repeated prompt part the providers cache, in tokens.
    pub min_cached_prefix_tokens: u64,
    /// Prompts shorter than this (characters) are not analysed for shared prefixes.
    pub min_prefix_prompt_chars: u64,
    /// A model at least this good counts as premium; `None`: the policy's complex bar.
    pub premium_quality: Option<u32>,
    pub fingerprint_cap: usize,
    pub group_cap: usize,
    pub max_groups: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_monthly_saving: Money::from_pico(PICO_PER_USD),
            min_cache_repeats: 20,
            min_downgrade_requests: 30,
            min_max_tokens_requests: 100,
            min_routing_requests: 100,
            min_prompt_requests: 30,
            min_cached_prefix_tokens: 1024,
            min_prefix_prompt_chars: 4096,
            premium_quality: None,
            fingerprint_cap: 1 << 18,
            group_cap: 1 << 16,
            max_groups: 1 << 14,
        }
    }
}

/// Streams ledger records into recommendations: build it, [`observe`](Analyzer::observe)
/// every record, then [`finish`](Analyzer::finish).
#[derive(Debug)]
pub struct Analyzer<'c> {
    ctx: Ctx<'c>,
    orgs: Interner,
    first: Option<i64>,
    last: Option<i64>,
    window: Option<(i64, i64)>,
    stats: Counters,
    cache: cache::CacheAnalysis,
    routing: routing::RoutingAnalysis,
    max_tokens: max_tokens::MaxTokensAnalysis,
    prompts: prompts::PromptAnalysis,
}

#[derive(Debug, Default)]
struct Counters {
    records: u64,
    out_of_order: u64,
    unknown_model: u64,
}

impl<'c> Analyzer<'c> {
    /// An analyzer with the default [`Settings`].
    pub fn new(catalog: &'c Catalog, router: &'c Router) -> Analyzer<'c> {
        Analyzer::with_settings(catalog, router, Settings::default())
    }

    pub fn with_settings(
        catalog: &'c Catalog,
        router: &'c Router,
        settings: Settings,
    ) -> Analyzer<'c> {
        let ctx = Ctx::new(catalog, router, settings);
        Analyzer {
            cache: cache::CacheAnalysis::new(&ctx.settings),
            routing: routing::RoutingAnalysis::default(),
            max_tokens: max_tokens::MaxTokensAnalysis::default(),
            prompts: prompts::PromptAnalysis::new(&ctx.settings),
            ctx,
            orgs: Interner::default(),
            first: None,
            last: None,
            window: None,
            stats: Counters::default(),
        }
    }

    /// Scales savings from this window (Unix microseconds) instead of the span of the records,
    /// e.g. the period the caller queried. Still never under one day.
    #[must_use]
    pub fn with_window(mut self, start_micros: i64, end_micros: i64) -> Analyzer<'c> {
        self.window = Some((start_micros.min(end_micros), start_micros.max(end_micros)));
        self
    }

    /// Reads one record. Constant work and no allocation except the first time an
    /// organization, group or fingerprint is seen.
    pub fn observe(&mut self, r: &Record<'_>) {
        self.stats.records += 1;
        if self.last.is_some_and(|l| r.created_at < l) {
            self.stats.out_of_order += 1;
        }
        self.first = Some(self.first.map_or(r.created_at, |f| f.min(r.created_at)));
        self.last = Some(self.last.map_or(r.created_at, |l| l.max(r.created_at)));
        let Some(org) = self.orgs.intern(r.org_id, self.ctx.settings.max_groups) else {
            return;
        };
        let model = r.model_used.and_then(|m| self.ctx.model_index(m));
        if r.model_used.is_some() && model.is_none() {
            self.stats.unknown_model += 1;
        }
        let repeat = self.cache.observe(&self.ctx, org, r);
        let seen = Seen { org, model, repeat };
        self.routing.observe(&self.ctx, &seen, r);
        self.max_tokens.observe(&self.ctx, &seen, r);
        self.prompts.observe(&self.ctx, &seen, r);
    }

    /// Reads every record of an iterator.
    pub fn observe_all<'r>(&mut self, records: impl IntoIterator<Item = Record<'r>>) {
        for r in records {
            self.observe(&r);
        }
    }

    /// How full the bounded structures are now.
    pub fn memory(&self) -> Stats {
        self.stats(0)
    }

    /// The recommendations, ranked and deduplicated.
    pub fn finish(self) -> Report {
        let (start, end) = self
            .window
            .unwrap_or((self.first.unwrap_or(0), self.last.unwrap_or(0)));
        let window_micros = (end - start).max(DAY_MICROS);
        let fin = Finish {
            ctx: &self.ctx,
            orgs: &self.orgs.names,
            window_micros,
        };
        let mut below = 0u64;
        let mut recs = Vec::new();
        recs.extend(self.cache.finish(&fin, &mut below));
        let downgrades = self.routing.finish_downgrades(&fin, &mut below);
        let routing = self.routing.finish_routing(&fin, &downgrades, &mut below);
        recs.extend(downgrades);
        recs.extend(routing);
        recs.extend(self.max_tokens.finish(&fin, &mut below));
        recs.extend(self.prompts.finish(&fin, &mut below));
        let mut seen = std::collections::HashSet::new();
        recs.retain(|r| seen.insert(r.id.clone()));
        recs.sort_by(|a, b| {
            b.monthly_saving
                .cmp(&a.monthly_saving)
                .then_with(|| secondary(b).cmp(&secondary(a)))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut stats = self.stats(below);
        stats.below_threshold = below;
        Report {
            window: Window {
                start_micros: start,
                end_micros: end,
                days: window_micros as f64 / DAY_MICROS as f64,
            },
            recommendations: recs,
            routing_realised: self.routing.realised(&fin),
            stats,
        }
    }

    fn stats(&self, below_threshold: u64) -> Stats {
        Stats {
            records: self.stats.records,
            out_of_order: self.stats.out_of_order,
            unknown_model: self.stats.unknown_model,
            fingerprints: self.cache.map_stats(),
            system_prompts: self.prompts.system_stats(),
            prefixes: self.prompts.prefix_stats(),
            groups: MapStats {
                len: self.routing.groups() + self.max_tokens.groups(),
                peak: self.routing.groups() + self.max_tokens.groups(),
                cap: self.ctx.settings.max_groups * 2,
                sample_shift: 0,
                evicted: 0,
            },
            below_threshold,
        }
    }

    /// The model cost mode would choose for a request of `tier` with `input_tokens` and an
    /// optional `max_tokens`, among those offering at least the capabilities of `replacing`.
    /// `None` when no model qualifies.
    pub fn cost_mode_choice(
        &self,
        tier: Tier,
        input_tokens: u64,
        max_tokens: Option<u64>,
        replacing: Option<&ModelInfo>,
    ) -> Option<&'c ModelInfo> {
        self.ctx
            .choose(tier, input_tokens, max_tokens, replacing)
            .and_then(|i| self.ctx.models.get(i as usize).copied())
    }
}

/// Analyses a whole iterator of records with the default settings.
pub fn analyze<'r>(
    catalog: &Catalog,
    router: &Router,
    records: impl IntoIterator<Item = Record<'r>>,
) -> Report {
    let mut a = Analyzer::new(catalog, router);
    a.observe_all(records);
    a.finish()
}

/// Ties in billed saving (all `max_tokens` recommendations) rank by the worst case they remove.
fn secondary(r: &Recommendation) -> Money {
    match &r.details {
        Details::MaxTokens {
            worst_case_monthly_reduction,
            ..
        } => *worst_case_monthly_reduction,
        _ => Money::ZERO,
    }
}

pub(crate) const DAY_MICROS: i64 = 86_400_000_000;
const MONTH_MICROS: i128 = 30 * DAY_MICROS as i128;

/// What every analysis shares: the catalog, the policy's bars, the settings.
#[derive(Debug)]
pub(crate) struct Ctx<'c> {
    pub models: Vec<&'c ModelInfo>,
    index: HashMap<&'c str, u16>,
    router: &'c Router,
    /// Per tier, the models that may serve it in cost mode (allowed, quality ≥ bar).
    eligible: [Vec<u16>; 3],
    pub premium: u32,
    pub settings: Settings,
}

impl<'c> Ctx<'c> {
    fn new(catalog: &'c Catalog, router: &'c Router, settings: Settings) -> Ctx<'c> {
        let models: Vec<&ModelInfo> = catalog.models().iter().take(u16::MAX as usize).collect();
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), i as u16))
            .collect();
        let policy = router.policy();
        let c = &policy.constraints;
        let eligible = Tier::ALL.map(|tier| {
            let bar = policy.bars.bar(tier);
            models
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    m.quality >= bar
                        && (c.allowed_models.is_empty() || c.allowed_models.contains(&m.id))
                        && (c.allowed_providers.is_empty()
                            || c.allowed_providers.contains(&m.provider))
                        && m.capabilities.covers(&c.required)
                })
                .map(|(i, _)| i as u16)
                .collect()
        });
        Ctx {
            premium: settings
                .premium_quality
                .unwrap_or_else(|| policy.bars.bar(Tier::Complex)),
            models,
            index,
            router,
            eligible,
            settings,
        }
    }

    pub fn model_index(&self, id: &str) -> Option<u16> {
        self.index.get(id).copied()
    }

    pub fn model(&self, i: u16) -> Option<&'c ModelInfo> {
        self.models.get(i as usize).copied()
    }

    /// The record's tier: `route_tier`, else `route_score` under the policy's thresholds.
    pub fn tier(&self, r: &Record<'_>) -> Option<Tier> {
        match r.route_tier {
            Some(t) => t.parse().ok(),
            None => r
                .route_score
                .filter(|s| s.is_finite())
                .map(|s| self.router.policy().thresholds.tier(s)),
        }
    }

    /// See [`Analyzer::cost_mode_choice`].
    pub fn choose(
        &self,
        tier: Tier,
        input_tokens: u64,
        max_tokens: Option<u64>,
        replacing: Option<&ModelInfo>,
    ) -> Option<u16> {
        let out = expected_output_tokens(tier, max_tokens);
        let reserved = max_tokens.unwrap_or(out);
        let ceiling = self.router.policy().constraints.price_ceiling;
        let mut best: Option<(Money, u32, &str, u16)> = None;
        for &i in &self.eligible[tier as usize] {
            let Some(m) = self.model(i) else { continue };
            if let Some(old) = replacing {
                let need = cognitude_catalog::Capabilities {
                    reasoning: false,
                    ..old.capabilities
                };
                if !m.capabilities.covers(&need) {
                    continue;
                }
            }
            if input_tokens.saturating_add(reserved) > m.context_window
                || max_tokens.is_some_and(|mt| mt > m.max_output)
            {
                continue;
            }
            // `estimate`'s cost without its latency arithmetic: the same exact product.
            let cost = m.cost(&TokenUsage {
                input: input_tokens,
                output: out,
                ..TokenUsage::default()
            });
            if ceiling.is_some_and(|c| cost > c) {
                continue;
            }
            let better = match best {
                None => true,
                Some((bc, bq, bid, _)) => {
                    (cost, std::cmp::Reverse(m.quality), m.id.as_str())
                        < (bc, std::cmp::Reverse(bq), bid)
                }
            };
            if better {
                best = Some((cost, m.quality, m.id.as_str(), i));
            }
        }
        best.map(|b| b.3)
    }

    /// What the record's tokens would have cost on model `i`: every prompt token at the input
    /// price (a different provider has none of the old prompt cache), completion at output.
    pub fn reprice(&self, i: u16, r: &Record<'_>) -> i128 {
        self.model(i).map_or(0, |m| {
            m.cost(&TokenUsage {
                input: r.prompt_tokens(),
                output: r.completion_tokens(),
                ..TokenUsage::default()
            })
            .pico()
        })
    }
}

/// What `observe` learned about a record before the per-analysis work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub org: u32,
    pub model: Option<u16>,
    /// An exact repeat the response cache would have served within a day (when tracked).
    pub repeat: bool,
}

/// What every analysis needs at the end.
#[derive(Debug)]
pub(crate) struct Finish<'a, 'c> {
    pub ctx: &'a Ctx<'c>,
    pub orgs: &'a [String],
    pub window_micros: i64,
}

impl Finish<'_, '_> {
    pub fn org(&self, i: u32) -> &str {
        self.orgs.get(i as usize).map_or("", String::as_str)
    }

    pub fn days(&self) -> f64 {
        self.window_micros as f64 / DAY_MICROS as f64
    }

    pub fn minutes(&self) -> f64 {
        self.window_micros as f64 / 60_000_000.0
    }

    /// An observed amount scaled to 30 days.
    pub fn monthly(&self, observed: i128) -> Money {
        Money::from_pico(
            observed.saturating_mul(MONTH_MICROS) / i128::from(self.window_micros.max(1)),
        )
    }

    pub fn confidence(&self, evidence: u64, minimum: u64, cap: Confidence) -> Confidence {
        let c = if evidence >= minimum.saturating_mul(10) {
            Confidence::High
        } else if evidence >= minimum.saturating_mul(3) {
            Confidence::Medium
        } else {
            Confidence::Low
        };
        c.min(cap)
    }

    pub fn prices(&self, i: u16) -> Option<PriceUsed> {
        self.ctx.model(i).map(|m| PriceUsed {
            model: m.id.clone(),
            input: report::per_million(m.prices.input),
            cached_input: report::per_million(m.prices.cached_input),
            cache_write: report::per_million(m.prices.cache_write),
            output: report::per_million(m.prices.output),
        })
    }

    /// The basis of a saving: the evidence, the observed amount, and the scaling.
    pub fn basis(
        &self,
        requests: u64,
        observed: i128,
        sample_rate: f64,
        prices: Vec<PriceUsed>,
        figures: &[(&'static str, f64)],
        formula: String,
    ) -> Basis {
        let days = self.days();
        Basis {
            requests,
            observed_saving: Money::from_pico(observed),
            window_days: days,
            monthly_factor: 30.0 / days,
            sample_rate,
            prices,
            figures: figures.iter().copied().collect::<BTreeMap<_, _>>(),
            formula: format!(
                "{formula}; observed {} over {days:.2} days × 30 / {days:.2} = {} a month",
                report::usd(Money::from_pico(observed)),
                report::usd(self.monthly(observed)),
            ),
        }
    }
}

/// A stable id: the kind and what the finding is about, hashed.
pub(crate) fn stable_id(kind: Kind, parts: &[&str]) -> String {
    let mut bytes: Vec<&[u8]> = vec![kind.as_str().as_bytes()];
    bytes.extend(parts.iter().map(|p| p.as_bytes()));
    format!("{}-{:016x}", kind.as_str(), sketch::hash64(&bytes))
}

/// Organization ids, numbered in order of first sight.
#[derive(Debug, Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, name: &str, cap: usize) -> Option<u32> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if self.names.len() >= cap {
            return None;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        Some(i)
    }
}
