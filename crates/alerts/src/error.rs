//! The crate's error.

/// What went wrong in the alerts crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (unavailable, a query error, a conflict).
    #[error(transparent)]
    Store(#[from] cognitude_store::Error),
    /// Input from a user (a rule, a channel, a schedule) is not valid; `field` names it.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The organization has no such rule or channel.
    #[error("{0} not found")]
    NotFound(String),
    /// A message could not be delivered.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// The operator's configuration is not valid.
    #[error("alerts configuration: {0}")]
    Config(String),
    /// A time computation left the representable range.
    #[error("time out of range: {0}")]
    Time(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl From<jiff::Error> for Error {
    fn from(e: jiff::Error) -> Error {
        Error::Time(e.to_string())
    }
}
