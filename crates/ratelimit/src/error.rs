//! The crate's error type.

/// What can go wrong when checking or settling a limit.
///
/// A request over its limit is not an error: it is a [`Decision::Denied`](crate::Decision::Denied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An organization or key id the limiter cannot store safely (empty, longer than 256 bytes,
    /// or containing `{`, `}` or NUL).
    #[error("invalid rate-limit id {id:?}: {reason}")]
    InvalidId {
        /// The offending id, cut to 64 characters.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A quota value that cannot be enforced, such as zero requests per minute.
    #[error("invalid quota: {0}")]
    InvalidQuota(&'static str),
    /// A constructor's settings are unusable (such as a malformed Redis URL).
    #[error("invalid rate-limit configuration: {0}")]
    Config(String),
    /// The shared backend (Redis) could not answer: unreachable, timed out, or replied with
    /// something unexpected. [`FailoverLimiter`](crate::FailoverLimiter) turns this into its
    /// fail-open or fail-closed policy.
    #[error("rate-limit backend unavailable: {0}")]
    Unavailable(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error is the backend's fault (retrying later or elsewhere may help), as opposed
    /// to a bad id or quota from the caller.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<fred::error::Error> for Error {
    fn from(e: fred::error::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}
