//! Per-organization routing policy and the router that applies it.

#[cfg(feature = "serde")]
use cognitude_catalog::Capabilities;
use cognitude_catalog::{Catalog, ModelInfo, Money};

use crate::classify::{Classification, Classifier, Thresholds};
use crate::error::{Error, Result};
use crate::request::{Request, Role};
use crate::select::{
    Candidate, Constraints, Mode, QualityBars, Selection, Selector, estimate,
    expected_output_tokens,
};

/// How one organization's requests are routed.
///
/// With the `serde` feature it reads from configuration (unknown fields are refused):
///
/// ```toml
/// mode = "cost"                       # default mode: cost | latency | quality
/// thresholds = { medium = 0.3, complex = 0.6 }
/// quality_bars = { simple = 55, medium = 74, complex = 85 }
/// allowed_models = []                 # empty: every catalog model
/// allowed_providers = ["openai", "anthropic"]
/// required_capabilities = []          # tools, vision, json, reasoning
/// price_ceiling = "0.05"              # USD per request, estimated
/// baseline = "gpt-5"                  # savings are measured against it
///
/// [[rules]]                           # checked in order, before the classifier
/// metadata = { field = "team", equals = "legal" }
/// model = "claude-opus-4-6"
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawPolicy"))]
pub struct Policy {
    /// The mode used when a request does not name one.
    pub mode: Mode,
    pub thresholds: Thresholds,
    pub bars: QualityBars,
    pub constraints: Constraints,
    /// The model the organization would use without routing; savings are measured against it.
    pub baseline: Option<String>,
    /// Checked in order before the classifier; the first match decides the model.
    pub rules: Vec<Rule>,
}

/// When a request matches `when`, it goes to `model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub when: Condition,
    pub model: String,
}

/// What a rule matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The latest user message or the system prompt contains this text (ASCII letters
    /// compared without case).
    PromptContains(String),
    /// A request metadata field has exactly this value.
    Metadata { field: String, equals: String },
    /// The model the client asked for matches this pattern; `*` matches any run of characters.
    RequestedModel(String),
}

impl Condition {
    pub fn matches(&self, input: &RouteRequest<'_>) -> bool {
        match self {
            Condition::PromptContains(needle) => {
                let req = &input.request;
                let in_turn = req.last_user().is_some_and(|m| {
                    m.content
                        .parts()
                        .any(|p| contains_ignore_ascii_case(p, needle))
                });
                in_turn
                    || req
                        .system
                        .is_some_and(|s| contains_ignore_ascii_case(s, needle))
                    || req
                        .messages
                        .iter()
                        .filter(|m| m.role == Role::System)
                        .any(|m| {
                            m.content
                                .parts()
                                .any(|p| contains_ignore_ascii_case(p, needle))
                        })
            }
            Condition::Metadata { field, equals } => input
                .metadata
                .iter()
                .any(|(k, v)| *k == field.as_str() && *v == equals.as_str()),
            Condition::RequestedModel(pattern) => {
                input.requested_model.is_some_and(|m| glob(pattern, m))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Condition::PromptContains(s) => format!("prompt contains \"{s}\""),
            Condition::Metadata { field, equals } => format!("metadata {field} = \"{equals}\""),
            Condition::RequestedModel(p) => format!("requested model matches \"{p}\""),
        }
    }
}

/// A request with what a policy may look at besides the conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteRequest<'a> {
    pub request: Request<'a>,
    /// Overrides the policy's default mode.
    pub mode: Option<Mode>,
    /// The model the client named, if any (for rules).
    pub requested_model: Option<&'a str>,
    /// Request metadata as key/value pairs (for rules).
    pub metadata: &'a [(&'a str, &'a str)],
}

impl<'a> RouteRequest<'a> {
    pub const fn new(request: Request<'a>) -> RouteRequest<'a> {
        RouteRequest {
            request,
            mode: None,
            requested_model: None,
            metadata: &[],
        }
    }

    #[must_use]
    pub const fn with_mode(mut self, mode: Mode) -> RouteRequest<'a> {
        self.mode = Some(mode);
        self
    }

    #[must_use]
    pub const fn with_requested_model(mut self, model: &'a str) -> RouteRequest<'a> {
        self.requested_model = Some(model);
        self
    }

    #[must_use]
    pub const fn with_metadata(mut self, metadata: &'a [(&'a str, &'a str)]) -> RouteRequest<'a> {
        self.metadata = metadata;
        self
    }
}

/// The baseline model's estimate for the same request, and what routing saved against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline<'c> {
    pub model: &'c ModelInfo,
    pub cost: Money,
    /// Baseline cost minus the chosen model's cost (negative when routing cost more).
    pub saving: Money,
}

/// A routing decision: the classification, the selection, and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'c> {
    pub classification: Classification,
    pub selection: Selection<'c>,
    /// The index of the policy rule that decided the model, if one matched.
    pub rule: Option<usize>,
    pub baseline: Option<Baseline<'c>>,
}

/// Applies a [`Policy`]: rules first, then classification and selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router {
    policy: Policy,
    classifier: Classifier,
}

impl Router {
    pub fn new(policy: Policy) -> Router {
        Router {
            classifier: Classifier::new(policy.thresholds),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn classify(&self, request: &Request<'_>) -> Classification {
        self.classifier.classify(request)
    }

    /// Routes one request over `catalog`.
    pub fn route<'c>(
        &self,
        catalog: &'c Catalog,
        input: &RouteRequest<'_>,
    ) -> Result<Decision<'c>> {
        if catalog.is_empty() {
            return Err(Error::EmptyCatalog);
        }
        let classification = self.classifier.classify(&input.request);
        let mode = input.mode.unwrap_or(self.policy.mode);
        let matched = self
            .policy
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.when.matches(input));
        let selection = match matched {
            Some((index, rule)) => {
                let model = catalog
                    .get(&rule.model)
                    .ok_or_else(|| Error::UnknownModel(rule.model.clone()))?;
                let out = expected_output_tokens(classification.tier, classification.max_tokens);
                let (cost, latency_ms) = estimate(model, classification.input_tokens, out);
                Selection {
                    model,
                    mode,
                    tier: classification.tier,
                    bar: 0,
                    cost,
                    latency_ms,
                    output_tokens: out,
                    candidates: vec![Candidate {
                        model,
                        cost,
                        latency_ms,
                        meets_bar: true,
                    }],
                    reason: format!(
                        "policy rule {} ({}): {}",
                        index + 1,
                        rule.when.describe(),
                        model.id
                    ),
                }
            }
            None => Selector {
                mode,
                constraints: self.policy.constraints.clone(),
                bars: self.policy.bars,
            }
            .select(catalog, &classification)?,
        };
        let baseline = match &self.policy.baseline {
            Some(id) => {
                let model = catalog
                    .get(id)
                    .ok_or_else(|| Error::UnknownModel(id.clone()))?;
                let (cost, _) =
                    estimate(model, classification.input_tokens, selection.output_tokens);
                Some(Baseline {
                    model,
                    cost,
                    saving: cost - selection.cost,
                })
            }
            None => None,
        };
        Ok(Decision {
            classification,
            selection,
            rule: matched.map(|(i, _)| i),
            baseline,
        })
    }
}

impl Policy {
    /// Checks the policy against a catalog: every model it names exists, rules are usable,
    /// and a rule's model is among the allowed ones. Run it when configuration is loaded.
    pub fn validate(&self, catalog: &Catalog) -> Result<()> {
        if catalog.is_empty() {
            return Err(Error::EmptyCatalog);
        }
        for id in self.constraints.allowed_models.iter().chain(&self.baseline) {
            if catalog.get(id).is_none() {
                return Err(Error::UnknownModel(id.clone()));
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(model) = catalog.get(&rule.model) else {
                return Err(Error::UnknownModel(rule.model.clone()));
            };
            if !self.constraints.allowed_models.is_empty()
                && !self.constraints.allowed_models.contains(&rule.model)
            {
                return Err(Error::InvalidRule {
                    index,
                    message: format!("model '{}' is not in allowed_models", model.id),
                });
            }
            let empty = match &rule.when {
                Condition::PromptContains(s) | Condition::RequestedModel(s) => s.is_empty(),
                Condition::Metadata { field, .. } => field.is_empty(),
            };
            if empty {
                return Err(Error::InvalidRule {
                    index,
                    message: "the condition is empty".into(),
                });
            }
        }
        Ok(())
    }
}

/// `haystack` contains `needle`, ASCII letters compared without case.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Glob match where `*` stands for any run of characters (no other wildcards).
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        // No `*`: an exact match.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default)]
    quality_bars: QualityBars,
    #[serde(default)]
    allowed_models: Vec<String>,
    #[serde(default)]
    allowed_providers: Vec<String>,
    #[serde(default)]
    required_capabilities: Vec<String>,
    #[serde(default)]
    price_ceiling: Option<Money>,
    #[serde(default)]
    baseline: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    model: String,
    #[serde(default)]
    prompt_contains: Option<String>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    requested_model: Option<String>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    field: String,
    equals: String,
}

#[cfg(feature = "serde")]
impl TryFrom<RawPolicy> for Policy {
    type Error = Error;

    fn try_from(raw: RawPolicy) -> Result<Policy> {
        let mut required = Capabilities::default();
        for name in &raw.required_capabilities {
            match name.as_str() {
                "tools" => required.tools = true,
                "vision" => required.vision = true,
                "json" => required.json = true,
                "reasoning" => required.reasoning = true,
                other => {
                    return Err(Error::InvalidRule {
                        index: 0,
                        message: format!(
                            "required_capabilities: unknown capability '{other}' (expected tools, vision, json, reasoning)"
                        ),
                    });
                }
            }
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, r) in raw.rules.into_iter().enumerate() {
            let when = match (r.prompt_contains, r.metadata, r.requested_model) {
                (Some(s), None, None) => Condition::PromptContains(s),
                (None, Some(m), None) => Condition::Metadata {
                    field: m.field,
                    equals: m.equals,
                },
                (None, None, Some(p)) => Condition::RequestedModel(p),
                _ => {
                    return Err(Error::InvalidRule {
                        index,
                        message: "give exactly one of prompt_contains, metadata, requested_model"
                            .into(),
                    });
                }
            };
            rules.push(Rule {
                when,
                model: r.model,
            });
        }
        Ok(Policy {
            mode: raw.mode,
            thresholds: raw.thresholds,
            bars: raw.quality_bars,
            constraints: Constraints {
                allowed_models: raw.allowed_models,
                allowed_providers: raw.allowed_providers,
                required,
                price_ceiling: raw.price_ceiling,
            },
            baseline: raw.baseline,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Tier;
    use crate::request::Message;

    fn check_glob(pattern: &str, text: &str, expected: bool) {
        assert_eq!(glob(pattern, text), expected, "{pattern} vs {text}");
    }

    #[test]
    fn globs() {
        check_glob("gpt-4o", "gpt-4o", true);
        check_glob("gpt-4o", "gpt-4o-mini", false);
        check_glob("gpt-4*", "gpt-4o-mini", true);
        check_glob("*mini", "gpt-4o-mini", true);
        check_glob("gpt*mini", "gpt-4o-mini", true);
        check_glob("gpt*mini", "gpt-4o", false);
        check_glob("*", "", true);
        check_glob("a*a", "a", false);
        check_glob("", "", true);
        check_glob("", "x", false);
    }

    #[test]
    fn contains_without_ascii_case() {
        assert!(contains_ignore_ascii_case(
            "Please review this CONTRACT",
            "contract"
        ));
        assert!(!contains_ignore_ascii_case("short", "much longer needle"));
        assert!(contains_ignore_ascii_case("Ärger ÄRGER", "ÄRGER"));
    }

    fn policy_with_rule(when: Condition, model: &str) -> Policy {
        Policy {
            rules: vec![Rule {
                when,
                model: model.into(),
            }],
            baseline: Some("gpt-5".into()),
            ..Policy::default()
        }
    }

    #[test]
    fn rules_are_checked_before_the_classifier() {
        let cat = Catalog::builtin();
        let msgs = [Message::user("hi")];
        let meta = [("team", "legal")];
        for (when, input) in [
            (
                Condition::Metadata {
                    field: "team".into(),
                    equals: "legal".into(),
                },
                RouteRequest::new(Request::new(&msgs)).with_metadata(&meta),
            ),
            (
                Condition::PromptContains("HI".into()),
                RouteRequest::new(Request::new(&msgs)),
            ),
            (
                Condition::RequestedModel("gpt-4*".into()),
                RouteRequest::new(Request::new(&msgs)).with_requested_model("gpt-4o"),
            ),
        ] {
            let router = Router::new(policy_with_rule(when, "claude-opus-4-6"));
            let d = router.route(&cat, &input).unwrap();
            assert_eq!(d.rule, Some(0));
            assert_eq!(d.selection.model.id, "claude-opus-4-6");
            assert!(
                d.selection.reason.starts_with("policy rule 1"),
                "{}",
                d.selection.reason
            );
            assert_eq!(d.classification.tier, Tier::Simple);
        }
        let router = Router::new(policy_with_rule(
            Condition::PromptContains("contract".into()),
            "claude-opus-4-6",
        ));
        let d = router
            .route(&cat, &RouteRequest::new(Request::new(&msgs)))
            .unwrap();
        assert_eq!(d.rule, None);
        assert_ne!(d.selection.model.id, "claude-opus-4-6");
    }

    #[test]
    fn saving_is_measured_against_the_baseline() {
        let cat = Catalog::builtin();
        let msgs = [Message::user("What is the capital of Portugal?")];
        let router = Router::new(Policy {
            baseline: Some("gpt-5".into()),
            ..Policy::default()
        });
        let d = router
            .route(&cat, &RouteRequest::new(Request::new(&msgs)))
            .unwrap();
        let b = d.baseline.unwrap();
        assert_eq!(b.model.id, "gpt-5");
        assert_eq!(b.saving, b.cost - d.selection.cost);
        assert!(b.saving > Money::ZERO, "{} vs {}", b.cost, d.selection.cost);
    }

    #[test]
    fn validation_names_the_problem() {
        let cat = Catalog::builtin();
        assert_eq!(Policy::default().validate(&cat), Ok(()));
        assert_eq!(
            Policy::default().validate(&Catalog::default()),
            Err(Error::EmptyCatalog)
        );
        let p = Policy {
            baseline: Some("gpt-9".into()),
            ..Policy::default()
        };
        assert_eq!(p.validate(&cat), Err(Error::UnknownModel("gpt-9".into())));
        let mut p = policy_with_rule(Condition::PromptContains("x".into()), "gpt-5");
        p.constraints.allowed_models = vec!["gpt-5-mini".into()];
        p.baseline = None;
        assert!(matches!(
            p.validate(&cat),
            Err(Error::InvalidRule { index: 0, .. })
        ));
        let p = policy_with_rule(Condition::PromptContains(String::new()), "gpt-5");
        assert!(matches!(
            p.validate(&cat),
            Err(Error::InvalidRule { index: 0, .. })
        ));
    }

    #[test]
    fn mode_of_the_request_overrides_the_policy() {
        let cat = Catalog::builtin();
        let msgs = [Message::user("Say hello in French.")];
        let router = Router::new(Policy::default());
        let base = RouteRequest::new(Request::new(&msgs));
        let cost = router.route(&cat, &base).unwrap();
        let quality = router.route(&cat, &base.with_mode(Mode::Quality)).unwrap();
        assert_eq!(cost.selection.mode, Mode::Cost);
        assert_eq!(quality.selection.mode, Mode::Quality);
        assert!(quality.selection.model.quality > cost.selection.model.quality);
    }
}
