//! Classification: from a request to a complexity score, a tier and the signals behind them.

use std::fmt;
use std::str::FromStr;

use cognitude_catalog::Capabilities;

use crate::error::{Error, Result};
use crate::lexicon::Cue;
use crate::request::{Request, Role};
use crate::scan::{self, Depth, Stats};

/// How demanding a request is, in three steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Tier {
    /// A small, cheap model answers as well as a strong one.
    Simple,
    /// A mid-range model is needed for a good answer.
    Medium,
    /// Small models often fail where strong ones succeed.
    Complex,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Simple, Tier::Medium, Tier::Complex];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Simple => "simple",
            Tier::Medium => "medium",
            Tier::Complex => "complex",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Tier> {
        match s {
            "simple" => Ok(Tier::Simple),
            "medium" => Ok(Tier::Medium),
            "complex" => Ok(Tier::Complex),
            other => Err(Error::UnknownTier(other.to_owned())),
        }
    }
}

/// Score boundaries between the tiers: a score below `medium` is simple, one at or above
/// `complex` is complex. Valid when `0 < medium < complex < 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawThresholds"))]
pub struct Thresholds {
    medium: f64,
    complex: f64,
}

/// Thresholds as written in a configuration file, before validation.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    medium: f64,
    complex: f64,
}

#[cfg(feature = "serde")]
impl TryFrom<RawThresholds> for Thresholds {
    type Error = Error;

    fn try_from(raw: RawThresholds) -> Result<Thresholds> {
        Thresholds::new(raw.medium, raw.complex)
    }
}

impl Thresholds {
    /// The defaults, chosen on the labelled set (see docs/router.md).
    pub const DEFAULT: Thresholds = Thresholds {
        medium: 0.20,
        complex: 0.47,
    };

    pub fn new(medium: f64, complex: f64) -> Result<Thresholds> {
        if !medium.is_finite() || !complex.is_finite() {
            return Err(Error::InvalidThresholds(format!(
                "thresholds must be numbers (medium {medium}, complex {complex})"
            )));
        }
        if !(medium > 0.0 && medium < complex && complex < 1.0) {
            return Err(Error::InvalidThresholds(format!(
                "need 0 < medium < complex < 1 (medium {medium}, complex {complex})"
            )));
        }
        Ok(Thresholds { medium, complex })
    }

    pub fn medium(&self) -> f64 {
        self.medium
    }

    pub fn complex(&self) -> f64 {
        self.complex
    }

    /// The tier of a score.
    pub fn tier(&self, score: f64) -> Tier {
        if score >= self.complex {
            Tier::Complex
        } else if score >= self.medium {
            Tier::Medium
        } else {
            Tier::Simple
        }
    }
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds::DEFAULT
    }
}

/// What a signal measures. See docs/router.md for each one's formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum SignalKind {
    /// Estimated tokens of the latest user turn, with diminishing returns.
    Length,
    /// Code given or asked for: fenced blocks, code-shaped lines, code operators, identifiers.
    Code,
    /// Mathematical notation: operators between operands, variables, math symbols, LaTeX.
    Math,
    /// Distinct numbers: quantities to compute with.
    Numbers,
    /// Separate requirements: enumerated and bulleted items, questions.
    Constraints,
    /// Structured data given or asked for: table rows, CSV, JSON keys, format names.
    Data,
    /// Reasoning asked for: statements followed by a question, words such as why or justify.
    Reasoning,
    /// Mathematical and programming vocabulary.
    Vocabulary,
    /// Conversation depth, earlier context, and a short follow-up that leans on a hard turn.
    Conversation,
    /// A system prompt's length and its rules.
    System,
    /// A large requested output: `max_tokens`, or a request to write, explain, describe or plan.
    Output,
    /// Tools offered to the model.
    Tools,
    /// JSON output requested.
    Json,
    /// Images in the input.
    Vision,
}

impl SignalKind {
    /// Every signal, in the order [`Classification::signals`] lists them.
    pub const ALL: [SignalKind; SIGNALS] = [
        SignalKind::Length,
        SignalKind::Code,
        SignalKind::Math,
        SignalKind::Numbers,
        SignalKind::Constraints,
        SignalKind::Data,
        SignalKind::Reasoning,
        SignalKind::Vocabulary,
        SignalKind::Conversation,
        SignalKind::System,
        SignalKind::Output,
        SignalKind::Tools,
        SignalKind::Json,
        SignalKind::Vision,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Length => "length",
            SignalKind::Code => "code",
            SignalKind::Math => "math",
            SignalKind::Numbers => "numbers",
            SignalKind::Constraints => "constraints",
            SignalKind::Data => "data",
            SignalKind::Reasoning => "reasoning",
            SignalKind::Vocabulary => "vocabulary",
            SignalKind::Conversation => "conversation",
            SignalKind::System => "system",
            SignalKind::Output => "output",
            SignalKind::Tools => "tools",
            SignalKind::Json => "json",
            SignalKind::Vision => "vision",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const SIGNALS: usize = 14;

/// One signal's measurement and its share of the score.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Signal {
    #[cfg_attr(feature = "serde", serde(rename = "signal"))]
    pub kind: SignalKind,
    /// What was measured (tokens, a count, a weighted count; see [`SignalKind`]).
    pub value: f64,
    /// Points added to the raw sum the score is made from.
    pub points: f64,
    /// This signal's share of the score: the contributions add up to the score.
    pub contribution: f64,
}

/// The result of classifying a request.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Classification {
    /// Complexity in [0, 1]: higher means a cheap model is more likely to fall short.
    pub score: f64,
    pub tier: Tier,
    /// Estimated tokens of the whole input (every message, the system prompt, per-message
    /// overhead).
    pub input_tokens: u64,
    /// The caller's output limit, carried for model selection.
    pub max_tokens: Option<u64>,
    /// What the request needs from a model (tools, vision, JSON).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub needs: Capabilities,
    signals: [Signal; SIGNALS],
}

impl Classification {
    /// Every signal in [`SignalKind::ALL`] order, including those that added nothing.
    pub fn signals(&self) -> &[Signal] {
        &self.signals
    }

    /// The signals that moved the score, largest contribution first.
    pub fn top_signals(&self) -> impl Iterator<Item = &Signal> {
        let mut order: [usize; SIGNALS] = std::array::from_fn(|i| i);
        order.sort_by(|&a, &b| {
            self.signals[b]
                .contribution
                .total_cmp(&self.signals[a].contribution)
        });
        order
            .into_iter()
            .map(move |i| &self.signals[i])
            .filter(|s| s.contribution > 0.0)
    }

    pub fn signal(&self, kind: SignalKind) -> &Signal {
        // `ALL` lists every kind once, in the order of the array.
        let i = SignalKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.signals[i]
    }
}

/// Scores requests. Cheap to build and to copy; holds only the thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Classifier {
    thresholds: Thresholds,
}

/// Per-message overhead of the chat formats, in tokens.
const MESSAGE_OVERHEAD: u64 = 4;

impl Classifier {
    pub fn new(thresholds: Thresholds) -> Classifier {
        Classifier { thresholds }
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Classifies a request. Pure, deterministic, and allocation-free.
    pub fn classify(&self, request: &Request<'_>) -> Classification {
        let messages = request.messages;
        // The turn being answered: the latest user message, or failing that the latest
        // message of any role (a request made of a system prompt alone).
        let ask_idx = messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .or_else(|| messages.iter().rposition(|m| !m.content.is_empty()));
        let prev_idx =
            ask_idx.and_then(|a| messages[..a].iter().rposition(|m| m.role == Role::User));

        let mut ask = Stats::default();
        let mut prev = Stats::default();
        let mut system = Stats::default();
        let mut context_tokens = 0u64;
        let mut input_tokens = 0u64;
        let mut user_turns = 0u32;
        for (i, m) in messages.iter().enumerate() {
            // Each branch keeps the counts where they are needed and yields only the tokens:
            // the counts are a few hundred bytes, not worth copying once more.
            let tokens = if Some(i) == ask_idx {
                ask = scan::scan(&m.content, Depth::Full);
                ask.tokens()
            } else if Some(i) == prev_idx {
                prev = scan::scan(&m.content, Depth::Brief);
                context_tokens += prev.tokens();
                prev.tokens()
            } else if m.role == Role::System {
                let s = scan::scan(&m.content, Depth::Brief);
                system.merge(&s);
                s.tokens()
            } else {
                let t = scan::scan(&m.content, Depth::Tokens).tokens();
                context_tokens += t;
                t
            };
            if m.role == Role::User {
                user_turns += 1;
            }
            input_tokens += tokens + MESSAGE_OVERHEAD;
        }
        if let Some(sys) = request.system {
            let s = scan::scan(&crate::request::Content::Text(sys), Depth::Brief);
            input_tokens += s.tokens() + MESSAGE_OVERHEAD;
            system.merge(&s);
        }

        let mut signals: [Signal; SIGNALS] = std::array::from_fn(|i| Signal {
            kind: SignalKind::ALL[i],
            value: 0.0,
            points: 0.0,
            contribution: 0.0,
        });
        let content = content_points(&ask);
        for (slot, (value, points)) in signals.iter_mut().zip(content) {
            slot.value = value;
            slot.points = points;
        }
        let ask_raw: f64 = content.iter().map(|(_, p)| p).sum();

        // Conversation: depth, the weight of earlier context, and a short follow-up that
        // continues a demanding earlier turn ("now do it for n = 10") inherits part of it.
        let mut conv = 0.0;
        if user_turns > 1 || context_tokens > 0 {
            conv += 0.03 * f64::from(user_turns.saturating_sub(1).min(10));
            conv += 0.04 * (context_tokens as f64 / 500.0).ln_1p();
            // A turn that only thanks closes the topic instead.
            let closing = ask.cue(Cue::Thanks) > 0 && ask.questions == 0;
            if prev_idx.is_some() && ask.tokens() < FOLLOW_UP_TOKENS && !closing {
                let prev_raw: f64 = content_points(&prev).iter().map(|(_, p)| p).sum();
                conv += (prev_raw - ask_raw).max(0.0);
            }
        }
        set(
            &mut signals,
            SignalKind::Conversation,
            f64::from(user_turns),
            conv,
        );

        let sys_tokens = system.tokens() as f64;
        let sys_rules = f64::from(system.enum_lines + system.bullet_lines);
        set(
            &mut signals,
            SignalKind::System,
            sys_tokens,
            0.03 * (sys_tokens / 200.0).ln_1p() + 0.10 * sat(sys_rules / 5.0),
        );
        // Requested output: an explicit large max_tokens, or a request to write, explain, plan.
        let out = request.max_tokens.unwrap_or(0) as f64;
        let produce = f64::from(ask.cue(Cue::Produce));
        set(
            &mut signals,
            SignalKind::Output,
            out,
            0.10 * sat(out / 4000.0) + W.produce * sat(produce),
        );
        set(
            &mut signals,
            SignalKind::Tools,
            flag(request.tools),
            0.12 * flag(request.tools),
        );
        set(
            &mut signals,
            SignalKind::Json,
            flag(request.json_output),
            0.06 * flag(request.json_output),
        );
        set(
            &mut signals,
            SignalKind::Vision,
            flag(request.images),
            0.15 * flag(request.images),
        );

        let raw: f64 = signals.iter().map(|s| s.points.max(0.0)).sum();
        let score = if raw > 0.0 { 1.0 - (-raw).exp() } else { 0.0 };
        for s in &mut signals {
            s.contribution = if raw > 0.0 {
                s.points.max(0.0) * score / raw
            } else {
                0.0
            };
        }
        Classification {
            score,
            tier: self.thresholds.tier(score),
            input_tokens,
            max_tokens: request.max_tokens,
            needs: Capabilities {
                tools: request.tools,
                vision: request.images,
                json: request.json_output,
                reasoning: false,
            },
            signals,
        }
    }
}

/// A latest turn shorter than this leans on the turn before it.
const FOLLOW_UP_TOKENS: u64 = 60;

/// `x / (1 + x)`: 0 at 0, ½ at 1, approaching 1.
fn sat(x: f64) -> f64 {
    x / (1.0 + x)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn set(signals: &mut [Signal; SIGNALS], kind: SignalKind, value: f64, points: f64) {
    for s in signals.iter_mut() {
        if s.kind == kind {
            s.value = value;
            s.points = points;
        }
    }
}

/// The content signals of one user turn, as (value, points) in [`SignalKind::ALL`] order;
/// the request-level signals after `Vocabulary` are zero here.
fn content_points(s: &Stats) -> [(f64, f64); SIGNALS] {
    let mut out = [(0.0, 0.0); SIGNALS];
    let tokens = s.tokens() as f64;
    // The instruction's own length counts most; a document pasted with it, much less.
    let (instruction, material) = s.instruction_and_material_tokens();
    out[0] = (
        tokens,
        W.length * sat(instruction as f64 / W.length_scale)
            + W.material * (material as f64 / 300.0).ln_1p(),
    );
    // Lists in a long text are often part of a pasted document rather than requirements:
    // past a few hundred tokens they count as a density.
    let prose = (1.0 + tokens / 400.0).sqrt().recip();

    let code = 2.0 * f64::from(s.fences)
        + f64::from(s.code_lines)
        + f64::from(s.code_ops)
        + f64::from(s.idents)
        + 0.5 * f64::from(s.ticks);
    out[1] = (code, W.code * sat(code / 4.0));

    let math = f64::from(s.math_ops) + 2.0 * f64::from(s.math_syms) + 0.5 * f64::from(s.vars);
    out[2] = (math, W.math * sat(math / 3.0));

    let numbers = f64::from(s.distinct_numbers());
    out[3] = (numbers, W.numbers * sat(numbers / 4.0));

    let sentences = s.sentences + s.questions;
    let constraints = prose * f64::from(s.enum_lines + s.bullet_lines)
        + f64::from(s.questions.saturating_sub(1))
        + 0.5 * f64::from(s.clauses)
        + 0.5 * f64::from(sentences.saturating_sub(1).min(6));
    out[4] = (constraints, W.constraints * sat(constraints / 3.0));

    let data = f64::from(s.data_rows) + f64::from(s.json_keys) + f64::from(s.cue(Cue::Format));
    out[5] = (data, W.data * sat(data / 3.0));

    let premise_question = s.questions >= 1 && s.premises >= 2;
    let reasoning = f64::from(s.cue(Cue::Reason)) + if premise_question { 2.0 } else { 0.0 };
    out[6] = (reasoning, W.reasoning * sat(reasoning / 2.0));

    let vocab = f64::from(s.cue(Cue::Math) + s.cue(Cue::Code));
    out[7] = (vocab, W.vocabulary * sat(vocab / 3.0));
    out
}

/// The weights: the most points each signal can add (its saturation level).
struct Weights {
    length: f64,
    length_scale: f64,
    material: f64,
    code: f64,
    math: f64,
    numbers: f64,
    constraints: f64,
    data: f64,
    reasoning: f64,
    vocabulary: f64,
    produce: f64,
}

const W: Weights = Weights {
    length: 0.56,
    length_scale: 50.0,
    material: 0.08,
    code: 0.35,
    math: 0.36,
    numbers: 0.3,
    constraints: 0.6,
    data: 0.25,
    reasoning: 0.30,
    vocabulary: 0.5,
    produce: 0.2,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Message;

    fn classify(text: &str) -> Classification {
        Classifier::default().classify(&Request::new(&[Message::user(text)]))
    }

    #[test]
    fn thresholds_are_validated() {
        assert!(Thresholds::new(0.3, 0.6).is_ok());
        for (m, c) in [
            (0.6, 0.3),
            (0.0, 0.5),
            (0.5, 1.0),
            (f64::NAN, 0.5),
            (0.4, 0.4),
        ] {
            assert!(
                matches!(Thresholds::new(m, c), Err(Error::InvalidThresholds(_))),
                "{m} {c}"
            );
        }
        let t = Thresholds::new(0.2, 0.7).unwrap();
        assert_eq!(t.tier(0.1), Tier::Simple);
        assert_eq!(t.tier(0.2), Tier::Medium);
        assert_eq!(t.tier(0.7), Tier::Complex);
    }

    #[test]
    fn contributions_add_up_to_the_score() {
        let c = classify("Prove that the square root of 2 is irrational. Explain each step.");
        let sum: f64 = c.signals().iter().map(|s| s.contribution).sum();
        assert!((sum - c.score).abs() < 1e-9, "{sum} vs {}", c.score);
        assert!(c.top_signals().count() >= 2);
        assert!(c.score > 0.0 && c.score < 1.0);
    }

    #[test]
    fn empty_request_scores_zero() {
        let c = Classifier::default().classify(&Request::new(&[]));
        assert_eq!(c.score, 0.0);
        assert_eq!(c.tier, Tier::Simple);
        assert_eq!(c.input_tokens, 0);
    }

    #[test]
    fn harder_prompts_score_higher() {
        let hi = classify("hi!");
        let essay = classify("Write a short poem about the sea at night.");
        let math = classify(
            "Find all integers x such that x^2 - 5x + 6 = 0 and prove there are no others.",
        );
        assert!(hi.score < essay.score, "{} {}", hi.score, essay.score);
        assert!(essay.score < math.score, "{} {}", essay.score, math.score);
    }

    #[test]
    fn follow_up_inherits_from_a_hard_turn() {
        let hard = "Implement a lock-free queue in Rust with `AtomicPtr`, explain the memory \
                    orderings, and prove it is linearizable:\n```rust\nstruct Node<T> { next: AtomicPtr<Node<T>> }\n```";
        let msgs = [
            Message::user(hard),
            Message::assistant("Here is the queue …"),
            Message::user("Now add a bounded capacity."),
        ];
        let follow = Classifier::default().classify(&Request::new(&msgs));
        let alone = classify("Now add a bounded capacity.");
        assert!(
            follow.score > alone.score + 0.2,
            "{} vs {}",
            follow.score,
            alone.score
        );
        assert!(follow.signal(SignalKind::Conversation).points > 0.0);
    }
}
