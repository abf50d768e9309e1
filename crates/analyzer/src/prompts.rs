//! Analysis 5: long system prompts and shared prefixes repeated across requests (provider
//! prompt caching, or trimming where the model has no cached price), and near-duplicate
//! prompts (templating plus caching).

use cognitude_catalog::ModelInfo;

use crate::record::PREFIX_BYTES;
use crate::report::{
    Action, Confidence, Details, Kind, MapStats, Recommendation, per_million, usd,
};
use crate::sketch::{HeavyMap, hash64};
use crate::{Ctx, Finish, Record, Seen, Settings, stable_id};

/// How long a provider keeps an unused prompt prefix cached (OpenAI and Anthropic: about five
/// minutes). A request after a longer gap writes the cache again.
const PROVIDER_CACHE_MICROS: i64 = 5 * 60 * 1_000_000;
/// Where the model has no cached-input price, the saving assumed from trimming the repeated
/// part: a quarter of it.
const TRIM_SHARE: i128 = 4;
/// Prompts of a prefix group within this share of the longest are near-duplicates.
const NEAR_DUPLICATE_SPREAD: u64 = 10;

#[derive(Debug)]
pub(crate) struct PromptAnalysis {
    system: HeavyMap<Group>,
    prefix: HeavyMap<Group>,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    key: u64,
    org: u32,
    model: u16,
    requests: u64,
    reads: u64,
    writes: u64,
    read_tokens: u64,
    write_tokens: u64,
    repeated_tokens: u64,
    already_cached: u64,
    last: Option<i64>,
    min_chars: u64,
    max_chars: u64,
}

impl Group {
    fn new(key: u64, org: u32, model: u16) -> Group {
        Group {
            key,
            org,
            model,
            requests: 0,
            reads: 0,
            writes: 0,
            read_tokens: 0,
            write_tokens: 0,
            repeated_tokens: 0,
            already_cached: 0,
            last: None,
            min_chars: u64::MAX,
            max_chars: 0,
        }
    }

    fn add(&mut self, r: &Record<'_>, repeated: u64) {
        let t = r.created_at;
        let chars = u64::try_from(r.prompt_chars).unwrap_or(0);
        self.requests += 1;
        self.repeated_tokens += repeated;
        self.min_chars = self.min_chars.min(chars);
        self.max_chars = self.max_chars.max(chars);
        let fresh = self
            .last
            .is_none_or(|l| t.abs_diff(l) > PROVIDER_CACHE_MICROS.unsigned_abs());
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        let uncached = repeated.saturating_sub(r.cached_prompt_tokens());
        if uncached == 0 {
            self.already_cached += 1;
        } else if fresh {
            self.writes += 1;
            self.write_tokens += uncached;
        } else {
            self.reads += 1;
            self.read_tokens += uncached;
        }
    }

    /// The observed saving of provider prompt caching on `m`: reads at the cached price, minus
    /// the extra a cache write costs over plain input.
    fn caching_saving(&self, m: &ModelInfo) -> i128 {
        let p = &m.prices;
        (p.input - p.cached_input).times(self.read_tokens).pico()
            - (p.cache_write - p.input).times(self.write_tokens).pico()
    }

    fn near_duplicates(&self) -> bool {
        self.max_chars - self.min_chars.min(self.max_chars)
            <= self.max_chars / NEAR_DUPLICATE_SPREAD
    }
}

impl PromptAnalysis {
    pub fn new(settings: &Settings) -> PromptAnalysis {
        PromptAnalysis {
            system: HeavyMap::new(settings.group_cap),
            prefix: HeavyMap::new(settings.group_cap),
        }
    }

    pub fn observe(&mut self, ctx: &Ctx<'_>, seen: &Seen, r: &Record<'_>) {
        // Exact repeats belong to the response cache; free answers (cache hits) never reached
        // the provider.
        if !r.succeeded() || r.cost_pico <= 0 || seen.repeat {
            return;
        }
        let Some(model) = seen.model else { return };
        let Some(m) = ctx.model(model) else { return };
        let settings = &ctx.settings;
        let system_tokens = match r.system_hash {
            Some(_) if r.system_len > 0 => r.tokens_of_chars(r.system_len.unsigned_abs()),
            _ => 0,
        };
        if let Some(hash) = r
            .system_hash
            .filter(|_| system_tokens >= settings.min_cached_prefix_tokens)
        {
            let key = hash64(&[r.org_id.as_bytes(), m.id.as_bytes(), hash.as_bytes()]);
            let g = self
                .system
                .entry(key, || Group::new(key, seen.org, model), |g| g.requests);
            g.add(r, system_tokens);
        } else if r.prompt_chars.unsigned_abs() >= settings.min_prefix_prompt_chars
            && !r.prefix_hash.is_empty()
        {
            let key = hash64(&[
                r.org_id.as_bytes(),
                m.id.as_bytes(),
                r.prefix_hash.as_bytes(),
            ]);
            let shared = r.tokens_of_chars(PREFIX_BYTES);
            let g = self
                .prefix
                .entry(key, || Group::new(key, seen.org, model), |g| g.requests);
            g.add(r, shared);
        }
    }

    pub fn system_stats(&self) -> MapStats {
        heavy_stats(&self.system)
    }

    pub fn prefix_stats(&self) -> MapStats {
        heavy_stats(&self.prefix)
    }

    pub fn finish(&self, fin: &Finish<'_, '_>, below: &mut u64) -> Vec<Recommendation> {
        let mut out = Vec::new();
        for (groups, system) in [(&self.system, true), (&self.prefix, false)] {
            for g in groups.values() {
                match recommend(fin, g, system) {
                    Some(r) => out.push(r),
                    None if g.requests > 1 => *below += 1,
                    None => {}
                }
            }
        }
        out
    }
}

fn heavy_stats<V>(m: &HeavyMap<V>) -> MapStats {
    MapStats {
        len: m.len(),
        peak: m.peak(),
        cap: m.cap(),
        sample_shift: 0,
        evicted: m.evicted(),
    }
}

fn recommend(fin: &Finish<'_, '_>, g: &Group, system: bool) -> Option<Recommendation> {
    let settings = &fin.ctx.settings;
    if g.requests < settings.min_prompt_requests {
        return None;
    }
    let m = fin.ctx.model(g.model)?;
    let p = &m.prices;
    let caching = p.cached_input < p.input;
    let observed = if caching {
        g.caching_saving(m)
    } else {
        p.input.times(g.read_tokens + g.write_tokens).pico() / TRIM_SHARE
    };
    let monthly = fin.monthly(observed);
    if monthly < settings.min_monthly_saving {
        return None;
    }
    let org_id = fin.org(g.org);
    let model_id = m.id.as_str();
    let template = !system && g.near_duplicates() && caching;
    let kind = if template {
        Kind::PromptTemplate
    } else {
        Kind::PromptCaching
    };
    let pattern = if system {
        "system_prompt"
    } else {
        "shared_prefix"
    };
    let mean_tokens = g.repeated_tokens / g.requests.max(1);
    let what = if system {
        format!("the same system prompt of about {mean_tokens} tokens")
    } else {
        format!("the same first {PREFIX_BYTES} bytes (about {mean_tokens} tokens)")
    };
    let formula = if caching {
        format!(
            "{} cache reads × their {} uncached repeated tokens × ({} − {}) per million − {} cache writes × their {} tokens × ({} − {}) per million",
            g.reads,
            g.read_tokens,
            usd(per_million(p.input)),
            usd(per_million(p.cached_input)),
            g.writes,
            g.write_tokens,
            usd(per_million(p.cache_write)),
            usd(per_million(p.input)),
        )
    } else {
        format!(
            "{} repeated tokens × {} per million ÷ {TRIM_SHARE} (trimming a quarter of the repeated part)",
            g.read_tokens + g.write_tokens,
            usd(per_million(p.input)),
        )
    };
    let (title, explanation, action) = if template {
        (
            format!("Template near-duplicate prompts to {model_id} and cache the fixed part"),
            format!(
                "{} requests to {model_id} start with {what} and are all {}–{} characters long: the same prompt with a few slots filled in. Put the fixed instructions first and the slots last, so the provider's prompt cache serves the fixed part at the cached price.",
                g.requests, g.min_chars, g.max_chars
            ),
            Action {
                summary: "Build these prompts from one template with the variable slots at the end."
                    .to_owned(),
                config: None,
                code: Some(
                    "messages = [system(TEMPLATE_INSTRUCTIONS), user(fill(slots))]  # fixed part first, byte-identical"
                        .to_owned(),
                ),
            },
        )
    } else if caching {
        (
            format!("Use {model_id}'s prompt cache for a repeated {pattern_text}", pattern_text = pattern.replace('_', " ")),
            format!(
                "{} requests to {model_id} sent {what}. The provider caches a repeated prefix of at least {} tokens and bills it at {} instead of {} per million tokens; {} of these requests would have read it from the cache.",
                g.requests,
                settings.min_cached_prefix_tokens,
                usd(per_million(p.cached_input)),
                usd(per_million(p.input)),
                g.reads
            ),
            Action {
                summary: "Keep the repeated part byte-identical at the very start of the prompt (no timestamps or ids in it) so the provider's prompt cache applies."
                    .to_owned(),
                config: None,
                code: Some(if m.provider == "anthropic" {
                    "add \"cache_control\": {\"type\": \"ephemeral\"} to the last block of the repeated part".to_owned()
                } else {
                    "move per-request values out of the system prompt into the last user message".to_owned()
                }),
            },
        )
    } else {
        (
            format!("Trim the repeated {} sent to {model_id}", pattern.replace('_', " ")),
            format!(
                "{} requests to {model_id} sent {what}, and {model_id} has no discounted price for cached prompt tokens. Every token trimmed from it is saved on every request; the estimate assumes a quarter can go.",
                g.requests
            ),
            Action {
                summary: "Shorten the repeated part, or move this traffic to a model with prompt caching."
                    .to_owned(),
                config: None,
                code: None,
            },
        )
    };
    let cap = if system && caching {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let key_hex = format!("{:016x}", g.key);
    Some(Recommendation {
        id: stable_id(kind, &[org_id, model_id, pattern, &key_hex]),
        kind,
        org_id: org_id.to_owned(),
        title: format!("{title}: save {} a month", usd(monthly)),
        explanation,
        monthly_saving: monthly,
        confidence: fin.confidence(g.requests, settings.min_prompt_requests, cap),
        basis: fin.basis(
            g.requests,
            observed,
            1.0,
            fin.prices(g.model).into_iter().collect(),
            &[
                ("requests", g.requests as f64),
                ("cache_reads", g.reads as f64),
                ("cache_writes", g.writes as f64),
                ("read_tokens", g.read_tokens as f64),
                ("write_tokens", g.write_tokens as f64),
                ("already_cached", g.already_cached as f64),
                ("repeated_tokens_mean", mean_tokens as f64),
            ],
            formula,
        ),
        action,
        details: if template {
            Details::PromptTemplate {
                model: model_id.to_owned(),
                distinct_prompts: g.requests,
                min_prompt_chars: g.min_chars,
                max_prompt_chars: g.max_chars,
                repeated_tokens: mean_tokens,
                cache_reads: g.reads,
                cache_writes: g.writes,
            }
        } else {
            Details::PromptCaching {
                model: model_id.to_owned(),
                pattern,
                repeated_tokens: mean_tokens,
                cache_reads: g.reads,
                cache_writes: g.writes,
                already_cached: g.already_cached,
            }
        },
    })
}
