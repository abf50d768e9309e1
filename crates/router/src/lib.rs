//! Prompt-complexity classification and model selection.
//!
//! `cognitude-router` decides which model should answer a chat request. It scores how
//! demanding the request is — how likely a cheap model is to fall short where a strong one
//! succeeds — and picks a model from a [`Catalog`](cognitude_catalog::Catalog) by cost, latency
//! or quality within the caller's constraints.
//!
//! - [`Classifier::classify`] turns a [`Request`] (borrowed messages, system prompt,
//!   `max_tokens`, tool/JSON/image flags) into a [`Classification`]: a score in [0, 1], a
//!   [`Tier`] from configurable [`Thresholds`], the estimated input tokens, and the
//!   [`Signal`]s that produced the score, each with its contribution. It reads structure —
//!   code, mathematical notation, numbers, enumerated requirements, tables and JSON, questions
//!   after premises, conversation depth — in any script, plus a small multilingual vocabulary.
//!   It allocates nothing and takes well under a microsecond for a typical prompt.
//! - [`Selector::select`] picks the model: in [`Mode::Cost`] the cheapest whose quality meets
//!   the tier's bar, in [`Mode::Latency`] the fastest that meets it, in [`Mode::Quality`] the
//!   best; every candidate comes with this request's estimated cost and latency.
//! - [`Router`] applies an organization's [`Policy`]: rules checked before the classifier,
//!   a default mode, allowed models and providers, and a baseline to measure savings against.
//!
//! Pure: no I/O, no clock, no async runtime, no global state. The same input always gives
//! the same output. The `serde` feature derives serialization for the results and
//! deserialization (validated, unknown fields refused) for the policy.
//!
//! ```
//! use cognitude_catalog::Catalog;
//! use cognitude_router::{Classifier, Message, Mode, Request, Selector, Tier};
//!
//! let messages = [Message::user(
//!     "Find every integer n such that n^2 + 3n + 2 is divisible by 7, and prove you found them all.",
//! )];
//! let request = Request::new(&messages).with_max_tokens(1000);
//!
//! let classification = Classifier::default().classify(&request);
//! assert!(classification.tier >= Tier::Medium);
//! for signal in classification.top_signals() {
//!     println!("{}: +{:.2}", signal.kind, signal.contribution);
//! }
//!
//! let catalog = Catalog::builtin();
//! let selection = Selector::new(Mode::Cost).select(&catalog, &classification)?;
//! println!("{} — {}", selection.model.id, selection.reason);
//! assert!(selection.model.quality >= 74);
//! # Ok::<(), cognitude_router::Error>(())
//! ```

mod classify;
mod error;
mod lexicon;
mod policy;
mod request;
mod scan;
mod select;

pub use classify::{Classification, Classifier, Signal, SignalKind, Thresholds, Tier};
pub use error::{Error, Rejections, Result};
pub use policy::{Baseline, Condition, Decision, Policy, RouteRequest, Router, Rule};
pub use request::{Content, Message, Request, Role};
pub use select::{
    Candidate, Constraints, EXPECTED_OUTPUT_TOKENS, Mode, QualityBars, Selection, Selector,
    estimate, expected_output_tokens,
};

/// Estimated tokens of a text, as the classifier counts them (script-aware, no allocation).
pub fn estimate_tokens(text: &str) -> u64 {
    scan::scan(&Content::Text(text), scan::Depth::Tokens).tokens()
}
