//! The model catalog and exact money.
//!
//! A [`Catalog`] lists chat models: their provider, prices (per million tokens, with optional
//! tiers above a prompt size), context window, maximum output, capabilities, and the quality and
//! speed figures the router ranks them by. The built-in catalog is a TOML data file shipped with
//! the crate (`models.toml`); users add models and override any field with [`ModelPatch`].
//!
//! Pure: no I/O, no clock, no async. Prices are [`Money`], integer picodollars, so every cost is
//! exact.
//!
//! ```
//! use cognitude_catalog::{Catalog, TokenUsage};
//!
//! let catalog = Catalog::builtin();
//! let model = catalog.get("gpt-4o-mini").unwrap();
//! // 1,000 prompt tokens (200 of them from the provider's prompt cache) and 500 completion tokens.
//! let usage = TokenUsage { input: 800, cached_input: 200, output: 500, ..TokenUsage::default() };
//! assert_eq!(model.cost(&usage).to_string(), "0.000435");
//! ```

mod money;

use std::collections::HashMap;

use serde::Deserialize;

pub use money::{Money, PICO_PER_USD, ParseMoneyError};

/// The catalog shipped with Cognitude.
pub const BUILTIN_TOML: &str = include_str!("../models.toml");

/// Errors from loading or patching a catalog.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("catalog is not valid TOML: {0}")]
    Toml(String),
    #[error("model '{model}': field '{field}': {message}")]
    Field {
        model: String,
        field: String,
        message: String,
    },
    #[error("model '{0}' is listed twice")]
    Duplicate(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a model can do beyond plain text chat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub vision: bool,
    pub json: bool,
    pub reasoning: bool,
}

impl Capabilities {
    /// Whether `self` has every capability `required` asks for.
    pub fn covers(&self, required: &Capabilities) -> bool {
        (!required.tools || self.tools)
            && (!required.vision || self.vision)
            && (!required.json || self.json)
            && (!required.reasoning || self.reasoning)
    }

    /// Every capability either asks for.
    pub fn union(&self, other: &Capabilities) -> Capabilities {
        Capabilities {
            tools: self.tools || other.tools,
            vision: self.vision || other.vision,
            json: self.json || other.json,
            reasoning: self.reasoning || other.reasoning,
        }
    }

    fn from_names(model: &str, names: &[String]) -> Result<Capabilities> {
        let mut c = Capabilities::default();
        for n in names {
            match n.as_str() {
                "tools" => c.tools = true,
                "vision" => c.vision = true,
                "json" => c.json = true,
                "reasoning" => c.reasoning = true,
                other => {
                    return Err(Error::Field {
                        model: model.to_owned(),
                        field: "capabilities".into(),
                        message: format!(
                            "unknown capability '{other}' (expected tools, vision, json, reasoning)"
                        ),
                    });
                }
            }
        }
        Ok(c)
    }
}

/// Prices per token, in picodollars (a price per million tokens divided by 10⁶).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub input: Money,
    pub output: Money,
    pub cached_input: Money,
    pub cache_write: Money,
}

/// Prices that apply when the prompt is larger than `above_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub prices: Prices,
}

/// Normalised token usage of one call, whatever the provider's own format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens billed at the input price (not from a cache).
    pub input: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_input: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic bills these higher).
    pub cache_write: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Of `output`, the reasoning tokens (for reporting; already billed in `output`).
    pub reasoning: u64,
}

impl TokenUsage {
    /// Every prompt token, however billed.
    pub fn prompt_total(&self) -> u64 {
        self.input + self.cached_input + self.cache_write
    }
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub provider: String,
    pub prices: Prices,
    pub price_tiers: Vec<PriceTier>,
    pub context_window: u64,
    pub max_output: u64,
    pub capabilities: Capabilities,
    /// 0–100; higher is better. See `models.toml` for the source.
    pub quality: u32,
    /// Typical time to first token, in milliseconds.
    pub latency_ms: u32,
    /// Typical output speed, in tokens per second.
    pub tokens_per_second: u32,
}

impl ModelInfo {
    /// The prices in force for a prompt of `prompt_tokens` tokens.
    pub fn prices_for(&self, prompt_tokens: u64) -> &Prices {
        self.price_tiers
            .iter()
            .filter(|t| prompt_tokens > t.above_input_tokens)
            .max_by_key(|t| t.above_input_tokens)
            .map_or(&self.prices, |t| &t.prices)
    }

    /// The exact cost of one call.
    pub fn cost(&self, usage: &TokenUsage) -> Money {
        let p = self.prices_for(usage.prompt_total());
        p.input.times(usage.input)
            + p.cached_input.times(usage.cached_input)
            + p.cache_write.times(usage.cache_write)
            + p.output.times(usage.output)
    }
}

/// A set of models, looked up by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: Vec<ModelInfo>,
    index: HashMap<String, usize>,
}

impl Catalog {
    /// The catalog shipped in `models.toml`.
    pub fn builtin() -> Catalog {
        // The shipped file is checked by a unit test; should it ever fail to parse, an empty
        // catalog is safer than a panic in a library.
        Catalog::from_toml(BUILTIN_TOML).unwrap_or_default()
    }

    /// Parses a catalog file (`[[model]]` tables).
    pub fn from_toml(text: &str) -> Result<Catalog> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            model: Vec<ModelPatch>,
        }
        let file: File = toml::from_str(text).map_err(|e| Error::Toml(e.to_string()))?;
        let mut c = Catalog::default();
        for m in file.model {
            if c.index.contains_key(&m.id) {
                return Err(Error::Duplicate(m.id));
            }
            c.apply(m)?;
        }
        Ok(c)
    }

    /// Adds a model, or overrides the given fields of an existing one.
    pub fn apply(&mut self, patch: ModelPatch) -> Result<()> {
        match self.index.get(&patch.id) {
            Some(&i) => {
                let updated = patch.apply_to(self.models[i].clone())?;
                self.models[i] = updated;
            }
            None => {
                let m = patch.into_new()?;
                self.index.insert(m.id.clone(), self.models.len());
                self.models.push(m);
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&ModelInfo> {
        self.index.get(id).map(|&i| &self.models[i])
    }

    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// A model as written in TOML: every field but `id` optional, so the same shape adds a model
/// (then provider, prices and limits are required) or overrides fields of a known one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    pub id: String,
    pub provider: Option<String>,
    /// USD per million input tokens.
    pub input: Option<Money>,
    /// USD per million output tokens.
    pub output: Option<Money>,
    /// USD per million prompt tokens read from the provider's cache (default: `input`).
    pub cached_input: Option<Money>,
    /// USD per million prompt tokens written to the provider's cache (default: `input`).
    pub cache_write: Option<Money>,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub capabilities: Option<Vec<String>>,
    pub quality: Option<u32>,
    pub latency_ms: Option<u32>,
    pub tokens_per_second: Option<u32>,
    pub price_tiers: Option<Vec<TierPatch>>,
}

/// A price tier as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPatch {
    pub above_input_tokens: u64,
    pub input: Money,
    pub output: Money,
    pub cached_input: Option<Money>,
    pub cache_write: Option<Money>,
}

impl ModelPatch {
    fn field_err(&self, field: &str, message: &str) -> Error {
        Error::Field {
            model: self.id.clone(),
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    fn per_token(&self, field: &str, per_million: Money) -> Result<Money> {
        if per_million.pico() < 0 {
            return Err(self.field_err(field, "must not be negative"));
        }
        if per_million.pico() % 1_000_000 != 0 {
            return Err(self.field_err(
                field,
                "a price per million tokens may have at most 6 decimal places",
            ));
        }
        Ok(Money::from_pico(per_million.pico() / 1_000_000))
    }

    fn required<T: Copy>(&self, field: &str, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| self.field_err(field, "is required for a model not in the catalog"))
    }

    fn into_new(self) -> Result<ModelInfo> {
        if self.id.trim().is_empty() {
            return Err(self.field_err("id", "must not be empty"));
        }
        let provider = self.provider.clone().ok_or_else(|| {
            self.field_err("provider", "is required for a model not in the catalog")
        })?;
        let input = self.required("input", self.input)?;
        let output = self.required("output", self.output)?;
        let input_pt = self.per_token("input", input)?;
        let base = ModelInfo {
            id: self.id.clone(),
            provider,
            prices: Prices {
                input: input_pt,
                output: self.per_token("output", output)?,
                cached_input: input_pt,
                cache_write: input_pt,
            },
            price_tiers: Vec::new(),
            context_window: self.required("context_window", self.context_window)?,
            max_output: self.required("max_output", self.max_output)?,
            capabilities: Capabilities::default(),
            quality: 50,
            latency_ms: 1000,
            tokens_per_second: 50,
        };
        self.apply_to(base)
    }

    fn apply_to(self, mut m: ModelInfo) -> Result<ModelInfo> {
        if let Some(p) = &self.provider {
            m.provider.clone_from(p);
        }
        if let Some(v) = self.input {
            let old_input = m.prices.input;
            m.prices.input = self.per_token("input", v)?;
            // Cache prices that defaulted to the input price follow it.
            if m.prices.cached_input == old_input {
                m.prices.cached_input = m.prices.input;
            }
            if m.prices.cache_write == old_input {
                m.prices.cache_write = m.prices.input;
            }
        }
        if let Some(v) = self.output {
            m.prices.output = self.per_token("output", v)?;
        }
        if let Some(v) = self.cached_input {
            m.prices.cached_input = self.per_token("cached_input", v)?;
        }
        if let Some(v) = self.cache_write {
            m.prices.cache_write = self.per_token("cache_write", v)?;
        }
        if let Some(v) = self.context_window {
            if v == 0 {
                return Err(self.field_err("context_window", "must be positive"));
            }
            m.context_window = v;
        }
        if let Some(v) = self.max_output {
            if v == 0 {
                return Err(self.field_err("max_output", "must be positive"));
            }
            m.max_output = v;
        }
        if let Some(names) = &self.capabilities {
            m.capabilities = Capabilities::from_names(&self.id, names)?;
        }
        if let Some(q) = self.quality {
            if q > 100 {
                return Err(self.field_err("quality", "must be between 0 and 100"));
            }
            m.quality = q;
        }
        if let Some(v) = self.latency_ms {
            m.latency_ms = v;
        }
        if let Some(v) = self.tokens_per_second {
            if v == 0 {
                return Err(self.field_err("tokens_per_second", "must be positive"));
            }
            m.tokens_per_second = v;
        }
        if let Some(tiers) = &self.price_tiers {
            let mut out = Vec::with_capacity(tiers.len());
            for t in tiers {
                let input = self.per_token("price_tiers.input", t.input)?;
                out.push(PriceTier {
                    above_input_tokens: t.above_input_tokens,
                    prices: Prices {
                        input,
                        output: self.per_token("price_tiers.output", t.output)?,
                        cached_input: match t.cached_input {
                            Some(c) => self.per_token("price_tiers.cached_input", c)?,
                            None => input,
                        },
                        cache_write: match t.cache_write {
                            Some(c) => self.per_token("price_tiers.cache_write", c)?,
                            None => input,
                        },
                    },
                });
            }
            m.price_tiers = out;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn builtin_catalog_parses_and_is_broad() {
        let c = Catalog::from_toml(BUILTIN_TOML).unwrap();
        assert!(c.len() >= 15, "{}", c.len());
        for provider in [
            "openai",
            "anthropic",
            "google",
            "mistral",
            "deepseek",
            "groq",
        ] {
            assert!(
                c.models().iter().any(|m| m.provider == provider),
                "no model from {provider}"
            );
        }
        for m in c.models() {
            assert!(m.prices.output.pico() > 0, "{}", m.id);
            assert!(m.quality > 0 && m.quality <= 100, "{}", m.id);
            assert!(m.max_output <= m.context_window, "{}", m.id);
        }
    }

    #[test]
    fn cost_of_openai_usage_with_cache_and_reasoning() {
        let c = Catalog::builtin();
        let gpt5 = c.get("gpt-5").unwrap();
        // 10,000 prompt tokens of which 4,000 cached; 2,000 completion tokens (reasoning included).
        let u = TokenUsage {
            input: 6_000,
            cached_input: 4_000,
            output: 2_000,
            reasoning: 1_500,
            ..TokenUsage::default()
        };
        // 6000×1.25/1M + 4000×0.125/1M + 2000×10/1M = 0.0075 + 0.0005 + 0.02
        assert_eq!(gpt5.cost(&u), usd("0.028"));
    }

    #[test]
    fn cost_of_anthropic_usage_with_cache_write() {
        let c = Catalog::builtin();
        let m = c.get("claude-sonnet-4-5").unwrap();
        let u = TokenUsage {
            input: 100,
            cached_input: 1_000,
            cache_write: 2_000,
            output: 50,
            reasoning: 0,
        };
        // 100×3 + 1000×0.3 + 2000×3.75 + 50×15, per million.
        assert_eq!(m.cost(&u), usd("0.00885"));
    }

    #[test]
    fn tier_above_prompt_size_applies() {
        let c = Catalog::builtin();
        let m = c.get("gemini-2.5-pro").unwrap();
        let small = TokenUsage {
            input: 200_000,
            output: 0,
            ..TokenUsage::default()
        };
        let large = TokenUsage {
            input: 200_001,
            ..small
        };
        assert_eq!(m.cost(&small), usd("0.25"));
        assert_eq!(m.cost(&large), usd("0.5000025"));
    }

    #[test]
    fn patch_overrides_and_adds() {
        let mut c = Catalog::builtin();
        c.apply(ModelPatch {
            id: "gpt-4o-mini".into(),
            input: Some(usd("0.2")),
            ..ModelPatch::default()
        })
        .unwrap();
        let m = c.get("gpt-4o-mini").unwrap();
        assert_eq!(m.prices.input, Money::from_pico(200_000));
        assert_eq!(m.prices.cached_input, Money::from_pico(75_000));

        let err = c
            .apply(ModelPatch {
                id: "my-model".into(),
                provider: Some("ollama".into()),
                ..ModelPatch::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("'input'"), "{err}");

        let err = c
            .apply(ModelPatch {
                id: "gpt-4o".into(),
                input: Some(usd("0.0000001")),
                ..ModelPatch::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("6 decimal"), "{err}");
    }

    #[test]
    fn unknown_capability_and_field_are_errors() {
        let bad = r#"
            [[model]]
            id = "x"
            provider = "p"
            input = 1
            output = 1
            context_window = 10
            max_output = 10
            capabilities = ["telepathy"]
        "#;
        assert!(matches!(Catalog::from_toml(bad), Err(Error::Field { .. })));
        let bad = "[[model]]\nid = \"x\"\ncolour = 1\n";
        assert!(matches!(Catalog::from_toml(bad), Err(Error::Toml(_))));
    }
}
