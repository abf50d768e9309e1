use std::fmt;

/// Errors of classification settings, selection and policies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The catalog given to selection has no models at all.
    #[error("the model catalog is empty")]
    EmptyCatalog,
    /// Every model of the catalog was ruled out; the counts say why.
    #[error("no model satisfies the constraints ({0})")]
    NoModel(Rejections),
    #[error("invalid thresholds: {0}")]
    InvalidThresholds(String),
    #[error("invalid quality bars: {0}")]
    InvalidQualityBars(String),
    /// A model named by a policy (baseline, rule, allowed list) is not in the catalog.
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("unknown mode '{0}' (expected cost, latency or quality)")]
    UnknownMode(String),
    #[error("unknown tier '{0}' (expected simple, medium or complex)")]
    UnknownTier(String),
    #[error("invalid rule {index}: {message}")]
    InvalidRule { index: usize, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the models of a catalog were ruled out, one count per first reason met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rejections {
    pub considered: usize,
    /// Not in the allowed models or providers.
    pub not_allowed: usize,
    /// Lacks tools, vision or JSON output that the request needs, or a required capability.
    pub missing_capability: usize,
    /// The prompt plus `max_tokens` exceeds the context window, or `max_tokens` the model's
    /// maximum output.
    pub too_small: usize,
    /// The request's estimated cost is above the price ceiling.
    pub over_price: usize,
}

impl fmt::Display for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "of {} models: {} not allowed, {} missing a capability, {} too small for the request, {} over the price ceiling",
            self.considered,
            self.not_allowed,
            self.missing_capability,
            self.too_small,
            self.over_price
        )
    }
}
